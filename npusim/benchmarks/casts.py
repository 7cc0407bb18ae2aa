"""Benchmark: npusim.formats.cast on 64 MiB source arrays.

numpy: the same arithmetic written with plain NumPy/ml_dtypes (saturation = np.clip before a
round-to-nearest-even astype; int8 round modes in float math + clip + astype); peer astype: the
library's own one-pass astype (ml_dtypes for bf16/fp8, numpy for fp16/int), which is RNE and
NON-saturating, so for saturating cases it is a speed yardstick, not the same arithmetic.
Data: normal values with a spread that puts a few percent of them beyond the fp8/int8 range, no NaN
(numpy's float -> int astype of NaN is undefined).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from npusim import formats
from npusim.benchmarks import Case, register

N32 = (64 << 20) // 4            # 64 MiB of fp32
N16 = (64 << 20) // 2            # 64 MiB of fp16 / bf16
BF16_MAX = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
E4M3, E5M2, BF16 = formats.float8_e4m3fn, formats.float8_e5m2, formats.bfloat16


def _normal(n, scale, dtype):
    rng = np.random.default_rng(0)
    return (rng.standard_normal(n, dtype=np.float32) * np.float32(scale)).astype(dtype)


def _fp32(scale):
    return lambda: {"x": _normal(N32, scale, np.float32)}


def _round_half_away(x):
    t = np.trunc(x)
    return np.where(np.abs(x - t) >= 0.5, t + np.sign(x), t)


def _cast_case(name, setup, dtype, round_mode, saturate, numpy_fn, peer_dtype, out_itemsize):
    def kernel(s):
        return formats.cast(s["x"], dtype, round_mode=round_mode, saturate=saturate)

    def peer(s):
        return s["x"].astype(peer_dtype)

    def nbytes():
        return N32 * 4 + N32 * out_itemsize

    register(Case(name=name, setup=setup, kernel=kernel, numpy=numpy_fn, nbytes=nbytes(),
                  peers={"astype": peer} if peer_dtype is not None else {}, group="casts"))


# fp32 -> fp16 / bf16 (saturating is the Ascend default; non-saturating = plain astype)
_cast_case("cast fp32->fp16 rint sat", _fp32(20000.0), np.float16, "rint", True,
           lambda s: np.clip(s["x"], -65504, 65504).astype(np.float16), np.float16, 2)
_cast_case("cast fp32->fp16 rint nosat", _fp32(20000.0), np.float16, "rint", False,
           lambda s: s["x"].astype(np.float16), np.float16, 2)
_cast_case("cast fp32->bf16 rint sat", _fp32(1.0), BF16, "rint", True,
           lambda s: np.clip(s["x"], -BF16_MAX, BF16_MAX).astype(BF16), BF16, 2)
_cast_case("cast fp32->bf16 rint nosat", _fp32(1.0), BF16, "rint", False,
           lambda s: s["x"].astype(BF16), BF16, 2)

# fp32 -> fp8
for _dt, _max, _nm in [(E4M3, 448.0, "e4m3fn"), (E5M2, 57344.0, "e5m2")]:
    _cast_case(f"cast fp32->{_nm} rint sat", _fp32(_max / 2.5), _dt, "rint", True,
               lambda s, _dt=_dt, _max=_max: np.clip(s["x"], -_max, _max).astype(_dt), _dt, 1)
    _cast_case(f"cast fp32->{_nm} rint nosat", _fp32(_max / 2.5), _dt, "rint", False,
               lambda s, _dt=_dt: s["x"].astype(_dt), _dt, 1)

# fp32 -> int8, saturating
_cast_case("cast fp32->int8 rint sat", _fp32(60.0), np.int8, "rint", True,
           lambda s: np.clip(np.rint(s["x"]), -128, 127).astype(np.int8), np.int8, 1)
_cast_case("cast fp32->int8 round sat", _fp32(60.0), np.int8, "round", True,
           lambda s: np.clip(_round_half_away(s["x"].astype(np.float64)), -128, 127).astype(np.int8),
           np.int8, 1)


# fp16 -> int8 (rint, saturating)
def _fp16_setup():
    return {"x": _normal(N16, 60.0, np.float16)}


register(Case(
    name="cast fp16->int8 rint sat", setup=_fp16_setup,
    kernel=lambda s: formats.cast(s["x"], np.int8),
    numpy=lambda s: np.clip(np.rint(s["x"].astype(np.float32)), -128, 127).astype(np.int8),
    nbytes=N16 * 2 + N16, peers={"astype": lambda s: s["x"].astype(np.int8)}, group="casts"))


# bf16 -> fp32 (exact widening; saturate=False keeps +-inf, like astype)
def _bf16_setup():
    return {"x": _normal(N16, 1.0, BF16)}


register(Case(
    name="cast bf16->fp32", setup=_bf16_setup,
    kernel=lambda s: formats.cast(s["x"], np.float32, saturate=False),
    numpy=lambda s: (s["x"].view(np.uint16).astype(np.uint32) << 16).view(np.float32),
    nbytes=N16 * 2 + N16 * 4, peers={"astype": lambda s: s["x"].astype(np.float32)}, group="casts"))
