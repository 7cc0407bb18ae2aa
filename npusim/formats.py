"""Storage formats of the NPU and the Ascend Cast, on numpy arrays.

Formats: fp32, fp16, bf16, int8, int16, int32, int4 (two per byte, or eight per int32 word),
float8_e4m3fn, float8_e5m2, float8_e8m0 (biased exponent byte), and HiFloat8 (Huawei's tapered
8-bit float, stored as uint8 bit patterns: no numpy dtype exists for it). Narrow floats are ml_dtypes
arrays. Every rounding is done by the Cython helpers of kernels_pyx/ascend_cast.pxd (one generic
routine from double, and branch-free SIMD fast paths for the hot pairs, tested identical to it).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from npusim._kernels import casts as _casts

ROUND_MODES = {"rint": 0, "round": 1, "trunc": 2, "floor": 3, "ceil": 4, "odd": 5}

float8_e4m3fn = np.dtype(ml_dtypes.float8_e4m3fn)
float8_e5m2 = np.dtype(ml_dtypes.float8_e5m2)
float8_e8m0 = np.dtype(ml_dtypes.float8_e8m0fnu)
bfloat16 = np.dtype(ml_dtypes.bfloat16)
int4 = np.dtype(ml_dtypes.int4)

# kind codes shared with kernels_pyx/casts.pyx (floats: ascend_cast.pxd F_* codes)
_KIND = {
    np.dtype(np.float32): 0, np.dtype(np.float16): 1, bfloat16: 2,
    float8_e4m3fn: 3, float8_e5m2: 4, float8_e8m0: 5,
    np.dtype(np.float64): 10,
    np.dtype(np.int8): 20, np.dtype(np.int16): 21, np.dtype(np.int32): 22, np.dtype(np.int64): 23,
    np.dtype(np.uint8): 24, int4: 25, np.dtype(np.uint16): 26, np.dtype(np.uint32): 27,
}

_ALIASES = {
    "fp32": "float32", "float": "float32", "float32": "float32",
    "fp16": "float16", "half": "float16", "float16": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp64": "float64", "double": "float64", "float64": "float64",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64", "uint8": "uint8",
    "uint16": "uint16", "uint32": "uint32", "int4": "int4",
    "float8_e4m3fn": "float8_e4m3fn", "e4m3fn": "float8_e4m3fn", "e4m3": "float8_e4m3fn", "fp8_e4m3": "float8_e4m3fn",
    "float8_e5m2": "float8_e5m2", "e5m2": "float8_e5m2", "fp8_e5m2": "float8_e5m2",
    "float8_e8m0": "float8_e8m0", "float8_e8m0fnu": "float8_e8m0", "e8m0": "float8_e8m0",
}
_BY_NAME = {
    "float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": bfloat16,
    "float64": np.dtype(np.float64), "int8": np.dtype(np.int8), "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32), "int64": np.dtype(np.int64), "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16), "uint32": np.dtype(np.uint32), "int4": int4,
    "float8_e4m3fn": float8_e4m3fn, "float8_e5m2": float8_e5m2, "float8_e8m0": float8_e8m0,
}
FP8_MAX = {float8_e4m3fn: 448.0, float8_e5m2: 57344.0}

# HiFloat8 (arXiv 2409.16626): uint8 codes, named by this string wherever a dtype is expected
HIFLOAT8 = "hifloat8"
HIFLOAT8_MAX = 32768.0            # largest finite value (code 0x6E); 0x6F is +inf, 0x80 NaN, 0x00 the only zero
_HIF8_NAMES = ("hifloat8", "hif8", "torch_npu.hifloat8")
_HIF8_KIND = 6                    # ascend_cast.pxd F_HIF8


def is_hifloat8(dtype) -> bool:
    """Whether `dtype` names HiFloat8 ('hifloat8', 'hif8', 'torch_npu.hifloat8')."""
    return isinstance(dtype, str) and dtype.strip().lower() in _HIF8_NAMES


_BY_STR: dict = {}      # a dtype name as given -> its dtype (planners look names up on every call)


def as_dtype(dtype) -> np.dtype:
    """A numpy dtype from a dtype, a type, a torch dtype, or a name such as 'bf16', 'float8_e4m3fn', 'int4'."""
    if isinstance(dtype, str):
        dt = _BY_STR.get(dtype)
        if dt is not None:
            return dt
        key = dtype.strip().lower().removeprefix("torch.").removeprefix("np.")
        if key in _ALIASES:
            dt = _BY_NAME[_ALIASES[key]]
            if len(_BY_STR) < 1024:
                _BY_STR[dtype] = dt
            return dt
        raise ValueError(f"unknown dtype name {dtype!r}; known: {sorted(_ALIASES)}")
    if isinstance(dtype, np.dtype) and dtype.byteorder != ">":
        return dtype                    # the common case (an array's dtype): np.dtype(dtype) is dtype
    if type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype":
        return as_dtype(str(dtype))     # torch.bfloat16 -> 'torch.bfloat16' (torch need not be imported here)
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"not a dtype: {dtype!r}") from exc
    return dt.newbyteorder("=") if dt.byteorder == ">" else dt


_NAMES: dict = {}       # dtype -> canonical name (every check asks for names: the scan below is slow)


def dtype_name(dtype) -> str:
    """Canonical short name of a dtype ('float16', 'bfloat16', 'float8_e8m0', ...)."""
    dt = as_dtype(dtype)
    name = _NAMES.get(dt)
    if name is None:
        name = next((n for n, d in _BY_NAME.items() if d == dt), dt.name)
        if len(_NAMES) < 1024:
            _NAMES[dt] = name
    return name


def round_mode_code(round_mode: str) -> int:
    try:
        return ROUND_MODES[round_mode.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"round_mode must be one of {sorted(ROUND_MODES)}, got {round_mode!r}") from None


def cast(x, dtype, round_mode: str | None = None, saturate: bool = True) -> np.ndarray:
    """Ascend Cast of every element of `x` to `dtype`, one rounding with `round_mode`.

    round_mode: 'rint' (nearest, ties to even; the default), 'round' (nearest, ties away from zero),
    'trunc', 'floor', 'ceil', 'odd' (round to odd). saturate=True: overflow and +-inf give +-max finite
    (integers clamp); saturate=False: IEEE overflow (inf, or NaN for float8_e4m3fn which has no
    inf; directed modes that round toward zero give max finite) and integers wrap. NaN stays NaN
    in float targets (saturating casts to float8_e4m3fn / float8_e5m2 excepted: +0, as asc-devkit's
    Reg-API Cast.md gives unless CTRL[50] is set) and becomes 0 in integer targets. int4 results are ml_dtypes.int4 arrays
    (one value per byte; see pack_int4 for the packed layouts).

    dtype 'hifloat8' returns uint8 HiFloat8 codes. Its Cast offers CAST_ROUND (the default here) and
    the stochastic CAST_HYBRID, which is not emulated (its random source is undocumented); so only
    'round' is accepted. Saturating (the hardware default): overflow and +-inf give +-32768 and NaN
    gives 0; not saturating: values from 40960 up give +-inf (0x6F/0xEF), NaN gives 0x80
    (asc-devkit asc_float2hif8.md). Decode codes with hifloat8_to_float32.
    """
    src = np.asarray(x)
    if is_hifloat8(dtype):
        return _cast_hifloat8(src, round_mode, saturate)
    dst_dt = as_dtype(dtype)
    mode = round_mode_code("rint" if round_mode is None else round_mode)
    if dst_dt not in _KIND:
        raise TypeError(f"cast: unsupported target dtype {dst_dt}")
    flat = _source(src)
    out = np.empty(flat.shape, dtype=np.int8 if dst_dt == int4 else dst_dt)
    _casts.cast_buffer(flat.view(np.uint8), _KIND[flat.dtype], out.view(np.uint8), _KIND[dst_dt],
                       flat.size, mode, bool(saturate))
    if dst_dt == int4:
        out = out.astype(int4)
    return out.reshape(src.shape)


def _source(src: np.ndarray) -> np.ndarray:
    """A contiguous flat array of a dtype cast_buffer reads (bool as uint8, native byte order, int4 as int8)."""
    if src.dtype == np.bool_:
        src = src.astype(np.uint8)
    if src.dtype.byteorder == ">":
        src = src.astype(src.dtype.newbyteorder("="))
    if src.dtype not in _KIND:
        raise TypeError(f"cast: unsupported source dtype {src.dtype}")
    if src.dtype == int4:
        src = src.astype(np.int8)
    return np.ascontiguousarray(src).reshape(-1)


def _cast_hifloat8(src: np.ndarray, round_mode, saturate: bool) -> np.ndarray:
    mode = "round" if round_mode is None else str(round_mode).lower()
    if mode != "round":
        raise ValueError(f"cast to hifloat8: round_mode must be 'round' (CAST_ROUND, ties away from zero), got "
                         f"{round_mode!r}; the hardware's other hifloat8 mode, CAST_HYBRID, is stochastic and "
                         "not emulated")
    flat = _source(src)
    out = np.empty(flat.shape, dtype=np.uint8)
    _casts.cast_buffer(flat.view(np.uint8), _KIND[flat.dtype], out, _HIF8_KIND, flat.size,
                       ROUND_MODES["round"], bool(saturate))
    return out.reshape(src.shape)


_HIF8_VALUES = _casts.hifloat8_table()
_HIF8_VALUES.flags.writeable = False


def hifloat8_to_float32(codes) -> np.ndarray:
    """float32 values of HiFloat8 codes (uint8 or int8 bit patterns), exactly; 0x80 is NaN, 0x6F/0xEF +-inf."""
    c = np.asarray(codes)
    if c.dtype not in (np.uint8, np.int8):
        raise TypeError(f"hifloat8_to_float32: codes must be uint8 (or int8) bit patterns, got {c.dtype}")
    return _HIF8_VALUES[c.view(np.uint8)]


def pack_int4(values, container: str = "uint8") -> np.ndarray:
    """Pack int4 values ([-8, 7], last dim even; a multiple of 8 for 'int32') along the last axis.

    container='uint8': element 2k in the low nibble of byte k, 2k+1 in the high nibble.
    container='int32': word j holds elements 8j..8j+7, element 8j+i at bits 4i..4i+3
    (the little-endian view of the uint8 packing, as torch_npu's quint4x2 / int32 outputs).
    """
    v = np.asarray(values)
    if v.dtype == int4:
        v = v.astype(np.int8)
    if not np.issubdtype(v.dtype, np.integer):
        raise TypeError(f"pack_int4: values must be integers, got {v.dtype}")
    if v.ndim == 0:
        raise ValueError("pack_int4: values must have at least one dimension")
    if v.size and (v.min() < -8 or v.max() > 7):
        raise ValueError("pack_int4: values must lie in [-8, 7]")
    group = {"uint8": 2, "int32": 8}.get(container)
    if group is None:
        raise ValueError(f"pack_int4: container must be 'uint8' or 'int32', got {container!r}")
    if v.shape[-1] % group:
        raise ValueError(f"pack_int4: last dim {v.shape[-1]} must be a multiple of {group} for {container}")
    nib = (v.astype(np.int16) & 0xF).astype(np.uint8)
    packed = np.ascontiguousarray(nib[..., 0::2] | (nib[..., 1::2] << 4))
    if container == "int32":
        packed = packed.view("<i4").astype(np.int32)
    return packed


def unpack_int4(packed, container: str = "uint8", n: int | None = None) -> np.ndarray:
    """Inverse of pack_int4: int8 values in [-8, 7]; `n` trims the last axis to n elements."""
    p = np.asarray(packed)
    if p.dtype.byteorder == ">":
        p = p.astype(p.dtype.newbyteorder("="))
    if container == "uint8":
        if p.dtype not in (np.uint8, np.int8):
            raise TypeError(f"unpack_int4: uint8 container expects uint8/int8 data, got {p.dtype}")
        b = p.view(np.uint8)
    elif container == "int32":
        if p.dtype not in (np.int32, np.uint32):
            raise TypeError(f"unpack_int4: int32 container expects int32 data, got {p.dtype}")
        b = np.ascontiguousarray(p).astype("<i4").view(np.uint8)
    else:
        raise ValueError(f"unpack_int4: container must be 'uint8' or 'int32', got {container!r}")
    if b.ndim == 0:
        raise ValueError("unpack_int4: packed must have at least one dimension")
    lo = (b & 0xF).astype(np.int8)
    hi = (b >> 4).astype(np.int8)
    out = np.empty(b.shape[:-1] + (b.shape[-1] * 2,), dtype=np.int8)
    out[..., 0::2] = lo
    out[..., 1::2] = hi
    out = np.where(out >= 8, out - 16, out).astype(np.int8)
    if n is not None:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"unpack_int4: n must be an integer, got {n!r}")
        if not 0 <= n <= out.shape[-1]:
            raise ValueError(f"unpack_int4: n={n} is negative or exceeds the {out.shape[-1]} packed values")
        out = out[..., :n]
    return out


def bits(x) -> np.ndarray:
    """The raw bit patterns of an array as an unsigned integer array of the same itemsize."""
    a = np.asarray(x)
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])
