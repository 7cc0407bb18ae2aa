"""Assertions for users' own unit tests."""
from __future__ import annotations

import sys

import ml_dtypes
import numpy as np

from npusim import formats


def assert_bitexact(actual, expected, *, max_report: int = 8, err_msg: str = "") -> None:
    """Assert that two arrays have the same dtype, shape and bit pattern in every element.

    NaNs compare by bit pattern (a NaN equals only the same NaN). On mismatch the message gives
    the number of differing elements and the first few with index, both values and both bit patterns.
    torch CPU tensors (bfloat16 and float8 included) are compared as the arrays npusim.torch_npu.to_numpy
    views them as.
    """
    a = _native(_array(actual))
    e = _native(_array(expected))
    prefix = f"{err_msg}: " if err_msg else ""
    if a.dtype != e.dtype:
        raise AssertionError(f"{prefix}dtype differs: actual {formats.dtype_name(a.dtype)}, "
                             f"expected {formats.dtype_name(e.dtype)}")
    if a.shape != e.shape:
        raise AssertionError(f"{prefix}shape differs: actual {a.shape}, expected {e.shape}")
    ab = formats.bits(np.asarray(a, order="C"))         # no copy of contiguous arrays
    eb = formats.bits(np.asarray(e, order="C"))
    if a.dtype in _NIBBLE_DTYPES:        # one 4-bit value per byte: only the low four bits hold it
        ab, eb = ab & 0x0F, eb & 0x0F
    diff = ab != eb
    n = int(np.count_nonzero(diff))
    if n == 0:
        return
    width = a.dtype.itemsize * 2
    head = f"{prefix}{n} of {a.size} elements differ ({100.0 * n / max(a.size, 1):.4g}%)"
    largest = _largest_difference(a, e, diff)
    lines = [f"{head}{'; ' + largest if largest else ''}; first {min(n, max_report)}:"]
    for idx in np.argwhere(diff)[:max_report]:
        idx = tuple(int(i) for i in idx)
        lines.append(f"  at {idx}: actual {a[idx]!r} (0x{int(ab[idx]):0{width}x}), "
                     f"expected {e[idx]!r} (0x{int(eb[idx]):0{width}x})")
    raise AssertionError("\n".join(lines))


_NIBBLE_DTYPES = {np.dtype(getattr(ml_dtypes, name)) for name in ("int4", "uint4", "float4_e2m1fn")
                  if hasattr(ml_dtypes, name)}


def _largest_difference(a: np.ndarray, e: np.ndarray, diff: np.ndarray) -> str:
    """'largest finite |actual - expected| = D at (i, j)' over the differing elements where both are finite
    numbers (the values as the dtype holds them: HiFloat8 codes are uint8), and how many differing pairs are
    not; '' for booleans."""
    if a.dtype == np.bool_:
        return ""
    try:
        # signalling NaNs raise 'invalid' when widened and inf - inf does too: both are reported as not finite
        with np.errstate(invalid="ignore", over="ignore"):
            av, ev = a[diff].astype(np.float64), e[diff].astype(np.float64)
            d = np.abs(av - ev)
    except (TypeError, ValueError):
        return ""
    ok = np.isfinite(av) & np.isfinite(ev)
    others = f"{d.size - int(ok.sum())} differing pairs not both finite" if not ok.all() else ""
    if not ok.any():
        return others
    k = int(np.flatnonzero(ok)[np.argmax(d[ok])])
    where = tuple(int(i) for i in np.argwhere(diff)[k])
    return f"largest finite |actual - expected| = {d[k]:.6g} at {where}" + (f" ({others})" if others else "")


def _array(x) -> np.ndarray:
    torch = sys.modules.get("torch")        # a tensor means torch is imported already; never import it here
    if torch is not None and isinstance(x, torch.Tensor):
        from npusim.torch_npu import to_numpy
        return to_numpy(x)
    return np.asarray(x)


def _native(a: np.ndarray) -> np.ndarray:
    """Big-endian data compared by value: the same bits once in native order."""
    return a.astype(a.dtype.newbyteorder("=")) if a.dtype.byteorder == ">" else a
