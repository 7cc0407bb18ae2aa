"""The aclnn face: two-phase calls, as in CANN.

    ws_size, executor = npusim.aclnn.aclnnXxxGetWorkspaceSize(..., out tensors..., product=...)
    status = npusim.aclnn.aclnnXxx(workspace, ws_size, executor, stream=None)

Phase one validates everything and makes the plan; phase two runs the kernel and writes the
output arrays given in phase one. An executor runs once (as aclnn executors do by default).
Operator modules define their functions and register them with `@aclnn_api`; they are then
reachable as attributes of this module.
"""
from __future__ import annotations

from typing import Callable

from npusim.errors import ACLNN_SUCCESS, AclnnError, ACLNN_ERR_PARAM_INVALID, nullptr

_API: dict[str, Callable] = {}


class Executor:
    """What phase one hands to phase two: the plan and the bound computation."""

    def __init__(self, op: str, plan, run: Callable[[], None], workspace_size: int = 0):
        self.op = op
        self.plan = plan
        self._run = run
        self.workspace_size = workspace_size
        self.used = False

    def __repr__(self) -> str:
        return f"<aclnn executor {self.op} tiling_key={getattr(self.plan, 'tiling_key', None)} used={self.used}>"


def run_executor(op: str, workspace, workspace_size: int, executor: Executor, stream=None) -> int:
    """Phase two, shared by every operator: checks the executor and runs it. Returns ACLNN_SUCCESS."""
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
    executor.used = True
    executor._run()
    return ACLNN_SUCCESS


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
    return sorted(["Executor", "run_executor", "aclnn_api"] + list(_API))
