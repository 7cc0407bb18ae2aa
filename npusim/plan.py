"""Plans: the tiling decision of a kernel, made from shapes and dtypes alone (no data).

The emulator records which kernel variant (tiling key) its arithmetic follows; the performance
model (perfmodel/) costs the same plan. Planners register here by operator name so that
perfmodel can find them without npusim importing perfmodel, and so do the hooks that hear of each
plan the emulator runs (perfmodel.record).
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from npusim import formats
from npusim.products import Soc


@dataclass(frozen=True, init=False, repr=False)
class TensorSpec:
    """Shape and dtype of a tensor, standing in for the data when only a plan is wanted.

    transposed: the tensor is the transpose of a contiguous one in its last two dimensions (`w.T` of a
    contiguous [n, k] weight), as torch_npu tells the kernels (is_transpose_last_two_dims); some tilings
    depend on it (the Ascend 950 quant matmul's base block). spec_of() reads it from an array's strides."""
    shape: tuple
    dtype: Any
    transposed: bool

    def __init__(self, shape, dtype, transposed=False):   # (not the dataclass one: checked values are set once)
        dtype = formats.as_dtype(dtype)
        shape = _dims(shape, dtype)
        if type(transposed) is not bool:
            raise TypeError(f"TensorSpec: transposed must be True or False, got {transposed!r}")
        if transposed and len(shape) < 2:
            raise ValueError(f"TensorSpec: transposed needs at least 2 dimensions, got shape {shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "transposed", transposed)

    def __repr__(self) -> str:
        flag = ", transposed=True" if self.transposed else ""
        return f"TensorSpec(shape={self.shape}, dtype={formats.dtype_name(self.dtype)!r}{flag})"

    @property
    def T(self) -> "TensorSpec":
        """The transpose of the last two dimensions, as a view (`a.T` of a 2-D array)."""
        return TensorSpec(self.shape[:-2] + self.shape[-2:][::-1], self.dtype, not self.transposed)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


MAX_BYTES = 2**63 - 1      # numpy's and aclnn's (int64) size limit


def _dims(shape, dtype: np.dtype) -> tuple[int, ...]:
    """A shape as numpy takes it (an integer or a sequence of integers), checked: integers only (no
    floats, strings or bools, which numpy and PyTorch refuse too), each >= 0, and the tensor's bytes
    within int64 as numpy requires, so that no plan or prediction ever works on a wrapped size."""
    if type(shape) is tuple and all(type(d) is int and d >= 0 for d in shape):      # the usual, fast case
        if math.prod(d or 1 for d in shape) * dtype.itemsize <= MAX_BYTES:
            return shape
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        if isinstance(shape, (str, bytes)):
            raise TypeError
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"TensorSpec: shape must be a sequence of integers, got {shape!r}") from None
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"TensorSpec: dimensions must be integers, got {d!r} in shape {dims!r}")
    dims = tuple(int(d) for d in dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"TensorSpec: dimensions must be >= 0, got {dims}")
    extent = math.prod(d or 1 for d in dims) * dtype.itemsize     # numpy's rule: zero dims do not excuse the rest
    if extent > MAX_BYTES:
        raise ValueError(f"TensorSpec: shape {dims} of {formats.dtype_name(dtype)} needs {extent} bytes (non-zero "
                         f"dimensions times the item size), beyond the int64 limit 2**63 - 1 (numpy and aclnn "
                         "refuse such a tensor)")
    return dims


def is_transposed(x) -> bool:
    """Whether x (an array, a torch tensor or a TensorSpec) is laid out as the transpose of a contiguous matrix
    in its last two dimensions: their strides are 1 and shape[-2] elements, the stride test of torch_npu's
    is_transpose_last_two_dims (its storage-size test is not made, so a row slice w[:3].T counts; the leading
    dimensions are not looked at; a 1x1 matrix is contiguous)."""
    if isinstance(x, TensorSpec):
        return x.transposed
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) < 2 or shape[-1] * shape[-2] <= 1:
        return False
    if callable(getattr(x, "stride", None)):             # torch: strides in elements
        strides, unit = tuple(x.stride()), 1
    elif hasattr(x, "strides"):                           # numpy: strides in bytes
        strides, unit = tuple(x.strides), x.itemsize
    else:
        return False
    return strides[-2] == unit and strides[-1] == shape[-2] * unit


def spec_of(x) -> TensorSpec | None:
    """TensorSpec of an array (or torch tensor), a TensorSpec, or None."""
    if x is None or isinstance(x, TensorSpec):
        return x
    a = x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)
    return TensorSpec(tuple(a.shape), a.dtype, is_transposed(a))


@dataclass(frozen=True)
class Plan:
    """A kernel launch as the vendor's tiling would make it.

    op: operator name; soc: the SoC; kernel: vendor kernel name; tiling_key: the key that selects
    the kernel variant; block_dim: cores launched; core_type: 'aiv', 'aic', 'mix' or 'aicore'
    (coupled parts); tiles: tile sizes and per-core work in the tiling data's own terms;
    inputs/outputs: TensorSpecs by parameter name; attrs: the attributes that shaped the plan. Tensors and
    attributes are named as the planner's parameters, so that the call can be planned again for another
    product (perfmodel.record's Recording.on).
    """
    op: str
    soc: Soc
    kernel: str
    tiling_key: int
    block_dim: int
    core_type: str
    tiles: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    notes: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["soc"] = self.soc.soc
        d["product"] = self.soc.product
        d["inputs"] = {k: (v.shape, formats.dtype_name(v.dtype)) for k, v in self.inputs.items() if v is not None}
        d["outputs"] = {k: (v.shape, formats.dtype_name(v.dtype)) for k, v in self.outputs.items() if v is not None}
        return d


PLANNERS: dict[str, Callable[..., Plan]] = {}
PRODUCTS_OF: dict[str, tuple[str, ...]] = {}     # operator -> the product ids it runs on


def planner(op: str, products: tuple[str, ...]):
    """Register `fn(product=..., **emulator_args) -> Plan` as the planner of operator `op`, which runs
    on the product ids `products` (the one list the emulator's validation and perfmodel both use)."""
    def deco(fn):
        PLANNERS[op] = fn
        PRODUCTS_OF[op] = tuple(products)
        return fn
    return deco


def make_plan(op: str, **kwargs) -> Plan:
    """The plan of operator `op` (an emulator function name) for the given shapes/dtypes."""
    import npusim  # noqa: F401  (importing the package registers every planner)
    if op not in PLANNERS:
        raise ValueError(f"no planner for operator {op!r}; known: {sorted(PLANNERS)}")
    return PLANNERS[op](**kwargs)


# -- launches: each plan the emulator runs, told to whoever listens (perfmodel.record) ------------------

_LAUNCH_HOOKS: list[tuple] = []     # (hook, missing, meta) of each launch_hook block in force
_HOOKS_LOCK = threading.Lock()
_DETAILS = threading.local()        # what a face knows of the current call that its arrays do not show


@contextmanager
def launch_hook(hook: Callable[[Plan, dict], None], missing: Callable[[str], None] | None = None,
                meta: Callable[[Plan, dict], None] | None = None):
    """Call hook(plan, details) after every kernel launch of the emulator (numpy, torch and aclnn faces, any
    thread) while the block runs. details: what the calling face knew beyond the arrays, e.g. a torch weight's
    storage format ({"x2_format": "NZ"}). missing(name): the code asked a face for an operator npusim does not
    emulate (the torch face's torch_npu.<name>, also through hasattr): whatever ran instead is no launch.
    meta(plan, details): a call made on meta tensors (device='meta'), which the torch face plans from their
    shapes and dtypes without computing anything (launched(plan, meta=True)): no launch, but what it would be."""
    entry = (hook, missing, meta)
    with _HOOKS_LOCK:
        _LAUNCH_HOOKS.append(entry)
    try:
        yield hook
    finally:
        with _HOOKS_LOCK:
            _LAUNCH_HOOKS.remove(entry)


def asked_missing(name: str) -> None:
    """Code asked for operator `name`, which npusim does not emulate; tells the hooks that listen for it."""
    for _hook, missing, _meta in list(_LAUNCH_HOOKS):
        if missing is not None:
            missing(name)


@contextmanager
def launch_details(**details):
    """The calling face's knowledge of the launches made in this block (this thread), passed to the hooks."""
    before = getattr(_DETAILS, "value", None)
    _DETAILS.value = {**(before or {}), **details}
    try:
        yield
    finally:
        _DETAILS.value = before


def launched(plan, meta: bool = False) -> None:
    """An operator ran `plan` (or a function making it: made only when a hook listens); tells the hooks.
    meta: the call was made on meta tensors, planned and not computed: the hooks' meta functions hear of it."""
    hooks = [on_meta if meta else hook for hook, _missing, on_meta in list(_LAUNCH_HOOKS)]
    hooks = [h for h in hooks if h is not None]
    if not hooks:
        return
    if callable(plan):
        plan = plan()
    details = dict(getattr(_DETAILS, "value", None) or {})
    for hook in hooks:
        hook(plan, details)
