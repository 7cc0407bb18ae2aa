"""The aclnn face: two-phase calls, as in CANN.

    ws_size, executor = npusim.aclnn.aclnnXxxGetWorkspaceSize(..., out tensors..., product=...)
    status = npusim.aclnn.aclnnXxx(workspace, ws_size, executor, stream=None)

Phase one checks every argument and makes the plan. Phase two (the launch) reads the arguments as
they are then, as the NPU reads device memory when its kernel runs, so it checks them all again
first (one `prepare` function per operator does both): a change between the phases gives the new
values' result, or an AclnnError with nothing written, never a kernel run on unchecked data. Index
tensors are copied when prepared (_checks.index_tensor), and the kernel reads the checked copy.
An executor runs once (as aclnn executors do by default).
Operator modules define their functions and register them with `@aclnn_api`; they are then
reachable as attributes of this module.
"""
from __future__ import annotations

from typing import Callable

from npusim.errors import ACLNN_SUCCESS, AclnnError, ACLNN_ERR_PARAM_INVALID, nullptr

_API: dict[str, Callable] = {}


class Executor:
    """What phase one hands to phase two: the plan, and `prepare`, which checks the arguments
    phase one was given (as they are when it is called) and returns (plan, run)."""

    def __init__(self, op: str, plan, prepare: Callable[[], tuple], workspace_size: int = 0):
        self.op = op
        self.plan = plan
        self._prepare = prepare
        self.workspace_size = workspace_size
        self.used = False

    def __repr__(self) -> str:
        return f"<aclnn executor {self.op} tiling_key={getattr(self.plan, 'tiling_key', None)} used={self.used}>"


def get_workspace_size(op: str, prepare: Callable[[], tuple], workspace: Callable = lambda plan: 0):
    """Phase one, shared by every operator: prepare() checks every argument and returns (plan, run)
    without running anything. Returns (workspace_size, executor); workspace(plan) gives the size."""
    plan, _ = prepare()
    size = int(workspace(plan))
    return size, Executor(op, plan, prepare, size)


def run_executor(op: str, workspace, workspace_size: int, executor: Executor, stream=None) -> int:
    """Phase two, shared by every operator: checks the executor, checks the arguments again as they
    are now (same plan as phase one, data rules on the current values), then runs. Returns ACLNN_SUCCESS."""
    if executor is None:
        raise nullptr(op, "executor")
    if not isinstance(executor, Executor) or executor.op != op:
        raise AclnnError(f"executor was not made by {op}GetWorkspaceSize", ACLNN_ERR_PARAM_INVALID,
                         op=op, param="executor")
    if executor.used:
        raise AclnnError("executor has already run (executors are single-use)", ACLNN_ERR_PARAM_INVALID,
                         op=op, param="executor")
    if workspace_size < executor.workspace_size:
        raise AclnnError(f"workspaceSize {workspace_size} is smaller than the {executor.workspace_size} "
                         "bytes phase one asked for", ACLNN_ERR_PARAM_INVALID, op=op, param="workspaceSize")
    executor.used = True                # a launch that fails its checks also uses the executor up
    plan, run = executor._prepare()
    if plan != executor.plan:
        raise AclnnError(f"{_changed(executor.plan, plan)} changed after {op}GetWorkspaceSize; call it again",
                         ACLNN_ERR_PARAM_INVALID, op=op, param="executor")
    run()
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
    return sorted(["Executor", "get_workspace_size", "run_executor", "aclnn_api"] + list(_API))
