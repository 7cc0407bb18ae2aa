"""The aclnn face: two-phase calls, as in CANN.

    ws_size, executor = npusim.aclnn.aclnnXxxGetWorkspaceSize(..., out tensors..., product=...)
    status = npusim.aclnn.aclnnXxx(workspace, ws_size, executor, stream=None)

Phase one checks every argument and makes the plan. Phase two (the launch) reads the arguments as
they are then, as the NPU reads device memory when its kernel runs, so it checks them all again
first (one `prepare` function per operator does both): a change between the phases gives the new
values' result, or an AclnnError with nothing written, never a kernel run on unchecked data. Index
tensors are copied when prepared (_checks.index_tensor), and the kernel reads the checked copy.
An executor runs once (as aclnn executors do by default), unless aclSetAclOpExecutorRepeatable marked it.
As in CANN's launch (CommonOpExecutorRun), a workspaceSize above 0 with no workspace (None, C's nullptr) is
ACLNN_ERR_PARAM_NULLPTR and uses the executor up; `workspace(size)` stands in for the device buffer a C
caller allocates (npusim never reads it).
Operator modules define their functions and register them with `@aclnn_api`; they are then
reachable as attributes of this module.
"""
from __future__ import annotations

import numbers
import threading
from typing import Callable

import numpy as np

from npusim.errors import ACLNN_SUCCESS, AclnnError, ACLNN_ERR_PARAM_INVALID, ACLNN_ERR_PARAM_NULLPTR, nullptr
from npusim.plan import launched

_API: dict[str, Callable] = {}


class Executor:
    """What phase one hands to phase two: the plan, and `prepare`, which checks the arguments
    phase one was given (as they are when it is called) and returns (plan, run)."""

    def __init__(self, op: str, plan, prepare: Callable[[], tuple], workspace_size: int = 0, tensors=None):
        self.op = op
        self.plan = plan
        self._prepare = prepare
        self.workspace_size = workspace_size
        # aclnn name -> (the array, its (shape, dtype) at phase one)
        self._tensors = {k: (v, _layout(v)) for k, v in (tensors or {}).items() if _layout(v) is not None}
        self.used = False
        self.repeatable = False         # aclSetAclOpExecutorRepeatable: runs any number of times
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<aclnn executor {self.op} tiling_key={getattr(self.plan, 'tiling_key', None)} used={self.used}>"


def _layout(a):
    """(shape, dtype) of an array argument, None for anything else (None, numbers)."""
    return (tuple(a.shape), a.dtype) if isinstance(a, np.ndarray) else None


def get_workspace_size(op: str, prepare: Callable[[], tuple], workspace: Callable = lambda plan: 0,
                       tensors: dict | None = None):
    """Phase one, shared by every operator: prepare() checks every argument and returns (plan, run)
    without running anything. Returns (workspace_size, executor); workspace(plan) gives the size.
    tensors: the call's tensor arguments by their aclnn names; phase two names the one whose shape or dtype
    changed in between (rather than the first check its new shape breaks, which may be another's)."""
    plan, _ = prepare()
    size = int(workspace(plan))
    return size, Executor(op, plan, prepare, size, tensors)


def workspace(size: int):
    """A stand-in for the device workspace of `size` bytes a C caller allocates (aclrtMalloc) for phase two:
    an uninitialised uint8 array, or None for 0 (C passes nullptr then). npusim never reads it."""
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, numbers.Integral) or size < 0:
        raise TypeError(f"workspace size must be a non-negative integer, got {size!r}"[:200])
    return np.empty(int(size), np.uint8) if size else None


def aclSetAclOpExecutorRepeatable(executor: Executor) -> int:
    """Mark an executor reusable (CANN's aclSetAclOpExecutorRepeatable): phase two may then run it again, each
    time checking the arguments as they are then. Returns ACLNN_SUCCESS."""
    if executor is None:
        raise nullptr("aclSetAclOpExecutorRepeatable", "executor")
    if not isinstance(executor, Executor):
        raise AclnnError(f"executor must be one made by an aclnn...GetWorkspaceSize, got {type(executor).__name__}",
                         ACLNN_ERR_PARAM_INVALID, op="aclSetAclOpExecutorRepeatable", param="executor")
    with executor.lock:
        if executor.used:       # CANN has destroyed a single-use executor once it ran: there is nothing to mark
            raise AclnnError("executor has already run: mark it repeatable before its first launch",
                             ACLNN_ERR_PARAM_INVALID, op="aclSetAclOpExecutorRepeatable", param="executor")
        executor.repeatable = True
    return ACLNN_SUCCESS


def run_executor(op: str, workspace, workspace_size: int, executor: Executor, stream=None) -> int:
    """Phase two, shared by every operator: checks the executor and the workspace, checks the arguments again
    as they are now (same plan as phase one, data rules on the current values), then runs. Returns
    ACLNN_SUCCESS."""
    if executor is None:
        raise nullptr(op, "executor")
    if not isinstance(executor, Executor) or executor.op != op:
        raise AclnnError(f"executor was not made by {op}GetWorkspaceSize", ACLNN_ERR_PARAM_INVALID,
                         op=op, param="executor")
    with executor.lock:                 # two threads launching one executor: only one may use it up
        if executor.used:
            raise AclnnError("executor has already run (executors are single-use unless "
                             "aclSetAclOpExecutorRepeatable marked them)", ACLNN_ERR_PARAM_INVALID,
                             op=op, param="executor")
        if (isinstance(workspace_size, (bool, np.bool_)) or not isinstance(workspace_size, numbers.Integral)
                or not 0 <= workspace_size < 2 ** 64):
            raise AclnnError(f"must be an integer in [0, 2^64) (C's uint64_t), got {workspace_size!r}"[:200],
                             ACLNN_ERR_PARAM_INVALID, op=op, param="workspaceSize")
        product = getattr(getattr(executor.plan, "soc", None), "soc", None)
        if workspace_size > 0 and workspace is None:
            executor.used = True            # CANN destroys the executor here (DeleteExecutorForError)
            raise AclnnError(f"is None (nullptr) but workspaceSize is {workspace_size}: allocate the workspace phase "
                             "one asked for (npusim.aclnn.workspace(size) stands in for it)", ACLNN_ERR_PARAM_NULLPTR,
                             op=op, param="workspace", product=product)
        if workspace_size < executor.workspace_size:
            raise AclnnError(f"workspaceSize {workspace_size} is smaller than the {executor.workspace_size} "
                             "bytes phase one asked for", ACLNN_ERR_PARAM_INVALID, op=op, param="workspaceSize",
                             product=product)
        executor.used = not executor.repeatable     # a launch that fails its checks also uses the executor up
    for name, (arr, was) in executor._tensors.items():
        if _layout(arr) != was:
            raise AclnnError(f"shape/dtype changed after {op}GetWorkspaceSize: {was[0]} {was[1]} -> "
                             f"{tuple(arr.shape)} {arr.dtype}; call {op}GetWorkspaceSize again",
                             ACLNN_ERR_PARAM_INVALID, op=op, param=name, product=product)
    plan, run = executor._prepare()
    if plan != executor.plan:
        raise AclnnError(f"{_changed(executor.plan, plan)} changed after {op}GetWorkspaceSize; call it again",
                         ACLNN_ERR_PARAM_INVALID, op=op, param="executor", product=product)
    run()
    launched(plan)
    return ACLNN_SUCCESS


def _changed(old, new) -> str:
    """Which tensor of a plan differs (shape or dtype), for the error message."""
    for group in ("inputs", "outputs"):
        a, b = getattr(old, group, {}), getattr(new, group, {})
        for name in a:
            if a[name] != b.get(name):
                was = (a[name].shape, str(a[name].dtype)) if a[name] is not None else None
                now = (b[name].shape, str(b[name].dtype)) if b.get(name) is not None else None
                return f"tensor {name!r} (shape, dtype) {was} -> {now}"
    return "a tensor's shape or dtype"


def aclnn_api(fn: Callable) -> Callable:
    """Register an aclnn function under its own name."""
    _API[fn.__name__] = fn
    return fn


def __getattr__(name: str):
    import npusim  # noqa: F401  (importing the package registers every operator)
    try:
        return _API[name]
    except KeyError:
        raise AttributeError(f"npusim.aclnn has no {name!r}; available: {sorted(_API)}") from None


def __dir__():
    import npusim  # noqa: F401
    return sorted(["Executor", "get_workspace_size", "run_executor", "aclnn_api", "workspace",
                   "aclSetAclOpExecutorRepeatable"] + list(_API))
