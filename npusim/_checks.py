"""Shared argument validation for the operator modules: one place for each rule.

Every helper raises AclnnError naming the operator, the parameter, the rule and the product.
Operators call these before any kernel runs and before anything is written.
"""
from __future__ import annotations

import numpy as np

from npusim import formats
from npusim.errors import ACLNN_ERR_PARAM_INVALID, AclnnError, invalid, nullptr
from npusim.plan import TensorSpec
from npusim.products import PRODUCTS, Soc, get_product


def _soc_name(product) -> str | None:
    """How an error names the product: its SoC, as the errors raised after resolve_product do (a product id
    checked before it, e.g. a None tensor, would otherwise be named differently); an unknown name as given."""
    if not product:
        return None
    try:
        return get_product(product).soc
    except (TypeError, ValueError):
        return str(product)


def resolve_product(op: str, product, supported: tuple[str, ...]) -> Soc:
    """The Soc for `product`, which must belong to one of the `supported` product ids."""
    try:
        soc = get_product(product)
    except (ValueError, TypeError) as exc:
        raise AclnnError(str(exc), op=op, param="product") from None
    if soc.product not in supported:
        names = ", ".join(f"{p} ({PRODUCTS[p].name})" for p in supported)
        raise invalid(op, "product", f"{PRODUCTS[soc.product].name} is not supported; supported: {names}",
                      soc.soc)
    return soc


def tensor(op: str, name: str, x, product=None, *, optional: bool = False):
    """`x` as an ndarray (lists and scalars accepted). None is a nullptr error unless optional.
    Big-endian data is converted to native order and misaligned data copied to an aligned buffer
    (the values are what matter). A TensorSpec passes through unchanged: planners check shapes
    and dtypes without data."""
    if isinstance(x, TensorSpec):
        return x
    if x is None:
        if optional:
            return None
        raise nullptr(op, name, _soc_name(product))
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise invalid(op, name, f"cannot be read as an array: {exc}", _soc_name(product)) from None
    if a.dtype == object:
        raise invalid(op, name, "must be a numeric array, got an object array", _soc_name(product))
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("="))
    if not a.flags.aligned:    # e.g. np.frombuffer at an odd offset: kernels read through typed pointers
        a = a.copy()
    return a


def data_tensors(op: str, product=None, **tensors) -> None:
    """The emulator needs values: a TensorSpec (shape and dtype only; what planners take) is an error."""
    for name, x in tensors.items():
        if isinstance(x, TensorSpec):
            raise invalid(op, name, "must be an array with data; a TensorSpec only describes shape and dtype "
                          "(npusim.make_plan and perfmodel.predict take TensorSpecs)", _soc_name(product))


def dtype_in(op: str, name: str, a: np.ndarray, allowed, product=None, when: str = "") -> str:
    """Check a.dtype is one of `allowed` (dtype names); return its canonical name. `when`: the condition under
    which these are the allowed ones, where other arguments decide it ('with float16 output'), for the message."""
    got = formats.dtype_name(a.dtype)
    if got in allowed:          # already canonical names (the usual call): nothing to convert
        return got
    allowed = tuple(formats.dtype_name(d) for d in allowed)
    if got not in allowed:
        raise invalid(op, name, f"dtype must be one of {', '.join(allowed)}{' ' + when if when else ''}, got {got}",
                      _soc_name(product))
    return got


def out_tensor(op: str, name: str, out, shape: tuple, dtype, product=None,
               shape_status: int = ACLNN_ERR_PARAM_INVALID) -> np.ndarray:
    """An in-place output: a writable, native-byte-order ndarray of exactly `shape` and `dtype` (a wrong shape
    is `shape_status`: the operator's aclnn doc may list it as a tiling error)."""
    if out is None:
        raise nullptr(op, name, _soc_name(product))
    if not isinstance(out, np.ndarray):
        raise invalid(op, name, f"must be a numpy array (it is written in place), got {type(out).__name__}",
                      _soc_name(product))
    if out.dtype.byteorder == ">":
        raise invalid(op, name, f"must be in native byte order (it is written in place), got big-endian "
                      f"{formats.dtype_name(out.dtype)}", _soc_name(product))
    want = formats.as_dtype(dtype)
    if out.dtype != want:
        raise invalid(op, name, f"dtype must be {formats.dtype_name(want)}, got {formats.dtype_name(out.dtype)}",
                      _soc_name(product))
    if tuple(out.shape) != tuple(shape):
        raise invalid(op, name, f"shape must be {tuple(shape)}, got {tuple(out.shape)}", _soc_name(product),
                      shape_status)
    if not out.flags.writeable:
        raise invalid(op, name, "must be writable (it is written in place)", _soc_name(product))
    return out


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def int_attr(op: str, name: str, v, product=None) -> int:
    """A host-side integer attribute: an int64 (aclnn attributes are int64_t; PyTorch's are int64 too).
    bools, floats, strings and values beyond int64 are rejected, never truncated or wrapped."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise invalid(op, name, f"must be an integer, got {v!r}", _soc_name(product))
    v = int(v)
    if not INT64_MIN <= v <= INT64_MAX:
        raise invalid(op, name, f"must fit in int64 [-2**63, 2**63 - 1], got {v}", _soc_name(product))
    return v


def out_spec(op: str, name: str, shape, dtype, product=None) -> TensorSpec:
    """The TensorSpec of an output a planner derives from the inputs' shapes. Inputs within int64 can
    still give an output beyond it (a matmul's M x N, moe's rows x k): that is this call's error."""
    try:
        return TensorSpec(shape, dtype)
    except ValueError:
        raise invalid(op, name, f"would have shape {tuple(shape)} of {formats.dtype_name(dtype)}, beyond the "
                      "int64 size limit", _soc_name(product)) from None


def index_tensor(op: str, name: str, x, product=None, *, optional: bool = False):
    """An index input (group_index, row_idx/expert_idx, slot_mapping) as a private C-contiguous copy.
    Its values decide where a kernel reads and writes, so they are checked on this copy and the kernel
    reads the same copy: nothing the caller (or another thread) does to its array meanwhile can reach
    the kernel unchecked. Index tensors are small next to the data they index."""
    a = tensor(op, name, x, product, optional=optional)
    return a if a is None or isinstance(a, TensorSpec) else np.array(a, order="C", copy=True)


# ------------------------------------------------------------------ arrays a call writes
def _overlaps_itself(a: np.ndarray) -> bool:
    """True when two elements of `a` share a byte (a zero stride, or strides that interleave)."""
    dims = sorted((abs(s), n) for s, n in zip(a.strides, a.shape) if n > 1)
    if not dims or a.size == 0:
        return False
    if dims[0][0] == 0:                 # a broadcast (zero-stride) dimension
        return True
    span = a.itemsize                   # bytes spanned by the dimensions seen so far
    for stride, n in dims:
        if stride < span:               # this step lands inside the smaller dimensions' span
            break
        span += stride * (n - 1)
    else:
        return False                    # nested strides (every slice, transpose, reversal): no overlap
    if sum(s * (n - 1) for s, n in dims) + a.itemsize < a.size * a.itemsize:
        return True                     # more bytes than the span holds
    offsets = np.zeros(1, np.int64)     # rare as_strided layouts: compare every element's byte offset
    for stride, n in dims:
        offsets = (offsets[:, None] + np.arange(n, dtype=np.int64) * stride).reshape(-1)
    offsets.sort()
    return bool((np.diff(offsets) < a.itemsize).any())


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b may share a byte (exact unless numpy's solver gives up: then assumed)."""
    try:
        return bool(np.shares_memory(a, b, max_work=1 << 16))
    except np.exceptions.TooHardError:
        return True


def written_apart(op: str, product=None, **written) -> None:
    """The arrays a call writes (by parameter name; None skipped) must not overlap themselves or each
    other: the result would depend on the order of the writes (PyTorch refuses such outputs too)."""
    names = [name for name, a in written.items() if a is not None]
    for i, name in enumerate(names):
        a = written[name]
        if _overlaps_itself(a):
            raise invalid(op, name, f"must not overlap itself (every element is written), got strides "
                          f"{a.strides} for shape {a.shape}: pass an array without zero or interleaved strides",
                          _soc_name(product))
        for other in names[:i]:
            if _overlap(written[other], a):
                raise invalid(op, name, f"must not overlap {other} (both are written)", _soc_name(product))


def unshared(inputs, written) -> tuple:
    """`inputs` with a private copy of each one that shares memory with an array the call writes, so
    that every input is read as it was before the call wrote anything. Call it at launch."""
    written = [w for w in written if w is not None]
    return tuple(a.copy() if a is not None and any(np.may_share_memory(a, w) for w in written) else a
                 for a in inputs)
