"""Shared argument validation for the operator modules: one place for each rule.

Every helper raises AclnnError naming the operator, the parameter, the rule and the product.
Operators call these before any kernel runs and before anything is written.
"""
from __future__ import annotations

import numpy as np

from npusim import formats
from npusim.errors import AclnnError, invalid, nullptr
from npusim.plan import TensorSpec
from npusim.products import PRODUCTS, Soc, get_product


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
        raise nullptr(op, name, str(product) if product else None)
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise invalid(op, name, f"cannot be read as an array: {exc}", str(product) if product else None) from None
    if a.dtype == object:
        raise invalid(op, name, "must be a numeric array, got an object array", str(product) if product else None)
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
                          "(npusim.make_plan and perfmodel.predict take TensorSpecs)", str(product) if product else None)


def dtype_in(op: str, name: str, a: np.ndarray, allowed, product=None) -> str:
    """Check a.dtype is one of `allowed` (dtype names); return its canonical name."""
    got = formats.dtype_name(a.dtype)
    allowed = tuple(formats.dtype_name(d) for d in allowed)
    if got not in allowed:
        raise invalid(op, name, f"dtype must be one of {', '.join(allowed)}, got {got}",
                      str(product) if product else None)
    return got


def out_tensor(op: str, name: str, out, shape: tuple, dtype, product=None) -> np.ndarray:
    """An in-place output: a writable, native-byte-order ndarray of exactly `shape` and `dtype`."""
    prod = str(product) if product else None
    if out is None:
        raise nullptr(op, name, prod)
    if not isinstance(out, np.ndarray):
        raise invalid(op, name, f"must be a numpy array (it is written in place), got {type(out).__name__}", prod)
    if out.dtype.byteorder == ">":
        raise invalid(op, name, f"must be in native byte order (it is written in place), got big-endian "
                      f"{formats.dtype_name(out.dtype)}", prod)
    want = formats.as_dtype(dtype)
    if out.dtype != want:
        raise invalid(op, name, f"dtype must be {formats.dtype_name(want)}, got {formats.dtype_name(out.dtype)}",
                      prod)
    if tuple(out.shape) != tuple(shape):
        raise invalid(op, name, f"shape must be {tuple(shape)}, got {tuple(out.shape)}", prod)
    if not out.flags.writeable:
        raise invalid(op, name, "must be writable (it is written in place)", prod)
    return out


def int_attr(op: str, name: str, v, product=None) -> int:
    """A host-side integer attribute (bools and non-integral floats are rejected)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise invalid(op, name, f"must be an integer, got {v!r}", str(product) if product else None)
    return int(v)
