"""Assertions for users' own unit tests."""
from __future__ import annotations

import numpy as np

from npusim import formats


def assert_bitexact(actual, expected, *, max_report: int = 8, err_msg: str = "") -> None:
    """Assert that two arrays have the same dtype, shape and bit pattern in every element.

    NaNs compare by bit pattern (a NaN equals only the same NaN). On mismatch the message gives
    the number of differing elements and the first few with index, both values and both bit patterns.
    """
    a = np.asarray(actual)
    e = np.asarray(expected)
    prefix = f"{err_msg}: " if err_msg else ""
    if a.dtype != e.dtype:
        raise AssertionError(f"{prefix}dtype differs: actual {formats.dtype_name(a.dtype)}, "
                             f"expected {formats.dtype_name(e.dtype)}")
    if a.shape != e.shape:
        raise AssertionError(f"{prefix}shape differs: actual {a.shape}, expected {e.shape}")
    ab = formats.bits(np.ascontiguousarray(a))
    eb = formats.bits(np.ascontiguousarray(e))
    diff = ab != eb
    n = int(np.count_nonzero(diff))
    if n == 0:
        return
    width = a.dtype.itemsize * 2
    lines = [f"{prefix}{n} of {a.size} elements differ ({100.0 * n / max(a.size, 1):.4g}%); first {min(n, max_report)}:"]
    for idx in list(zip(*np.nonzero(diff)))[:max_report]:
        idx = tuple(int(i) for i in idx)
        lines.append(f"  at {idx}: actual {a[idx]!r} (0x{int(ab[idx]):0{width}x}), "
                     f"expected {e[idx]!r} (0x{int(eb[idx]):0{width}x})")
    raise AssertionError("\n".join(lines))
