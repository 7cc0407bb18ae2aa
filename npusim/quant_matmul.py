"""npu_trans_quant_param, npu_quant_matmul and LinearA8W8Quant (torch_npu), bit-exact on the CPU, with the
weight-preparation helpers npu_convert_weight_to_int4pack and npu_format_cast.

Arithmetic: shared/spec/ARITHMETIC.md section 4 (ops-nn quant/trans_quant_param_v2/op_kernel/
trans_quant_param_v2.h; matmul/quant_batch_matmul_v3/op_kernel/*; asc-devkit fixpipe models
gen_data_s322s8.py / gen_data_s322f16.py; op-plugin QuantMatmulKernelNpuOpApi.cpp).
Dtype table: torch_npu npu_quant_matmul doc (seed 003 tables 1 and 2).

The int32 accumulation is exact (kernels_pyx/quant_matmul.pyx). Which epilogue runs:
  * int8 output, or fp16 output without pertoken_scale: the cube's fixpipe (REQ8 / DEQF16) with the
    19-bit scale of an int64 quant parameter; a float32 scale is converted first with
    npu_trans_quant_param(scale, offset) as torch_npu does (truncation of 13 mantissa bits).
  * bf16 output, or fp16 output with pertoken_scale: the vector epilogue with the full fp32 (or bf16)
    scale: d = f32(acc * s); d = f32(p * d); d = f32(d + float_bias); RNE to the output type.
  * int32 output: acc + int32 bias (scale ignored).
An int32 bias is always added to the accumulator before any scaling (it lives in L0C / the bias table).

Ascend 950PR / 950DT (arch35 QuantBatchMatmulV3/V4; beyond seed 003, which lists Atlas inference, A2 and
A3): int8 x int8 only. Which path runs follows the arch35 tiling (op_host/op_tiling/arch35/
adaptive_sliding_window_tiling.cpp SetBf16Compat / HasMixVecPostProcess) and kernel
(op_kernel/arch35/qbmm_cube_on_the_fly.h), as the vendor golden tests/assets/qbmmv3_kernel_golden.py
encodes it; see _arch35_epilogue.

int4 (int32-packed) inputs take the same epilogues (the kernel templates are shared across input dtypes,
quant_batch_matmul_v3.cpp); their support matrix is in _validate and the README.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from npusim import _checks, formats
from npusim._kernels import quant_matmul as _k
from npusim.errors import ACLNN_ERR_INNER_TILING_ERROR, invalid, not_emulated, nullptr
from npusim.plan import Plan, TensorSpec, is_transposed, launched, planner, spec_of

__all__ = ["npu_trans_quant_param", "npu_quant_matmul", "LinearA8W8Quant", "npu_convert_weight_to_int4pack",
           "npu_format_cast"]

OP_TQP = "npu_trans_quant_param"
OP_QMM = "npu_quant_matmul"
SUPPORTED = ("atlas-a2", "atlas-a3", "atlas-inference", "ascend-950pr", "ascend-950dt")
MAX_LAST_DIM = 65535

_SCALE_MASK = 0xFFFFE000          # keep sign, exponent and 10 mantissa bits ("FP19")
_SIGN_FLAG = 1 << 46              # fixpipe Sign bit: signed int8 result of REQ8
_OFFSET_SHIFT = 37                # int9 offset in bits 37..45
_RESERVED_BITS = (0xF << 32) | (1 << 36) | (~((1 << 47) - 1) & 0xFFFFFFFFFFFFFFFF)  # N shift, MCB, 47..63

_EPI = {"int32": 0, "req8": 1, "deqf16": 2, "vec_fp16": 3, "vec_bf16": 4,
        "deqbf16": 4}    # arch35 fixpipe int32 -> bf16 with the 19-bit scale: the vec_bf16 arithmetic, truncated scale
_FIXPIPE_EPILOGUES = ("req8", "deqf16", "deqbf16", "int32")
# Atlas inference products: the torch_npu doc lists no pertoken_scale there; another ops-nn version takes one
# (roycarser/ops-nn-mirror@65fc48f0 matmul/quant_batch_matmul_v3/op_api/aclnn_quant_matmul_v4.cpp; hicann/ops-nn
# @5de74933, the version npusim follows, rejects it)
PERTOKEN_310P = ("is not emulated on Atlas inference products (must be None): the torch_npu doc lists none there, "
                 "but another ops-nn version accepts one with a float32 scale and float16 output "
                 "(aclnn_quant_matmul_v4.cpp CheckDtypeValidOnOnlyL0c2ubPertoken), the path vllm-ascend's 310P "
                 "W8A8 dynamic linear takes; npusim does not model that kernel")
# torch_npu's npu_quant_matmul doc (table 2, Atlas A2/A3) has a per-group int4 row: a 2-D (ceil(k / group), n) scale,
# float16 offset, (m, 1) pertoken_scale and group_sizes; npusim's kernel dequantizes per tensor or per channel only
PER_GROUP = ("per-group quantization (torch_npu's group_sizes, a 2-D (ceil(k / group), n) scale) is not emulated "
             "by npusim; it emulates a (1,) or (n,) scale")


def is_per_group_scale(shape) -> bool:
    """A scale of int4 inputs that holds a row per group of k: the per-group row of torch_npu's doc."""
    return len(shape) == 2 and int(shape[0]) > 1


# int8 x1 with an int32-packed int4 x2 on Atlas A2/A3: torch_npu's A8W4 path (op-plugin's meta and eager kernel
# is_a8w4; aclnnQuantMatmulV5's doc: x1 INT8, x2 INT32, per-group x2Scale), which npusim does not model
A8W4 = ("int8 x1 with int32-packed int4 x2 (A8W4: torch_npu calls aclnnQuantMatmulV5, per-group int4 weights) "
        "is not emulated by npusim; its quant matmul takes int8 x int8 or int4 x int4")
# x1 / x2 dtypes Ascend 950 takes through aclnnQuantMatmulV5 only (its doc: FLOAT8_E4M3FN, FLOAT8_E5M2, HIFLOAT8)
FLOAT8_INPUTS = ("float8_e4m3fn", "float8_e5m2")
# what npusim's Ascend 950 quant matmul is: calls torch_npu's 950 doc takes beyond it are not emulated
V4_ON_950 = "its Ascend 950 quant matmul is aclnnQuantMatmulV4's (int8 x1 / x2; the V4 doc's 950 table)"


# --------------------------------------------------------------------------- npu_trans_quant_param
def npu_trans_quant_param(scale, offset=None, round_mode: int = 0, *, product: str = "atlas-a2") -> np.ndarray:
    """Pack a float32 scale (and optional float32 offset) into the int64 fixpipe quant parameter.

    Follows the device kernel TransQuantParamV2 (ARITHMETIC.md 4.1):
    bits 0..31 = the fp32 scale with its 13 low mantissa bits cleared (round_mode=0, truncation) or
    rounded to 10 mantissa bits half-to-even (round_mode=1; zero/subnormal scales become +-0, inf/NaN
    are truncated, a carry past the largest exponent gives inf); bit 46 = 1 (signed int8 result);
    bits 37..45 = clamp(rint(offset), -256, 255) as two's-complement int9 (ties to even, as the device
    kernel's CAST_RINT; the host-side aclnnTransQuantParam rounds ties away from zero instead).
    A one-element scale or offset is broadcast to the other's length. scale: 1-D (t,) or 2-D (1, n)
    float32; offset: same rules, no longer than a 2-D scale (torch_npu's output then takes the scale's
    shape). Returns int64 of the broadcast shape.
    """
    _checks.data_tensors(OP_TQP, product, scale=scale, offset=offset)
    packed = _trans_quant_param(scale, offset, round_mode, product)
    launched(lambda: plan_npu_trans_quant_param(scale, offset, round_mode, product=product))
    return packed


@planner(OP_TQP, SUPPORTED)
def plan_npu_trans_quant_param(scale, offset=None, round_mode: int = 0, *, product: str = "atlas-a2") -> Plan:
    """Plan of npu_trans_quant_param: the device kernel TransQuantParamV2 on one core (ops-nn
    quant/trans_quant_param_v2; its block 0 packs every element, the others return). tiles: n (words packed)."""
    soc, s, o, shape = _trans_quant_param_checked(scale, offset, round_mode, product)
    n = math.prod(shape)
    return Plan(op=OP_TQP, soc=soc, kernel="TransQuantParamV2", tiling_key=0, block_dim=1,
                core_type="aiv" if soc.core_layout == "split" else "aicore", tiles={"n": n},
                inputs={"scale": spec_of(s), "offset": spec_of(o)}, outputs={"y": TensorSpec(shape, np.int64)},
                attrs={"round_mode": int(round_mode)}, notes="the scale packed into int64 FixPipe words on one core")


def _trans_quant_param_checked(scale, offset, round_mode, product):
    """npu_trans_quant_param's checks (arrays or TensorSpecs): (soc, scale, offset, output shape)."""
    soc = _checks.resolve_product(OP_TQP, product, SUPPORTED)
    s = _checks.tensor(OP_TQP, "scale", scale, soc)
    _checks.dtype_in(OP_TQP, "scale", s, ("float32",), soc)
    _check_param_shape(OP_TQP, "scale", s, soc)
    o = _checks.tensor(OP_TQP, "offset", offset, soc, optional=True)
    if o is not None:
        _checks.dtype_in(OP_TQP, "offset", o, ("float32",), soc)
        _check_param_shape(OP_TQP, "offset", o, soc)
    if isinstance(round_mode, (bool, np.bool_)) or not isinstance(round_mode, (int, np.integer)) \
            or int(round_mode) not in (0, 1):
        raise invalid(OP_TQP, "round_mode", f"must be 0 (truncate) or 1 (round half to even), got {round_mode!r}",
                      soc.soc)
    shape = s.shape
    if o is not None:
        if s.ndim == 2 and o.size > s.size:
            # torch_npu sizes the output as a 2-D scale (op-plugin TransQuantParamKernelNpuOpApi.cpp): no room for
            # a longer offset (its meta function, run under torch.compile, wants the scale's shape outright)
            raise invalid(OP_TQP, "offset", f"must not be longer than a 2-D scale {tuple(s.shape)}, got "
                          f"{tuple(o.shape)} (torch_npu's output takes the 2-D scale's shape)", soc.soc)
        if s.size != 1 and o.size != 1 and s.size != o.size:
            raise invalid(OP_TQP, "offset", f"length {o.size} does not match scale length {s.size} "
                          "(one of them may have length 1)", soc.soc)
        shape = o.shape if s.size == 1 and o.size > 1 else s.shape
    return soc, s, o, tuple(shape)


def _trans_quant_param(scale, offset, round_mode, product) -> np.ndarray:
    """npu_trans_quant_param's result, without telling the launch hooks (npu_quant_matmul packs a float32 scale
    with it: that TransQuantParamV2 launch is part of the quant matmul's, as op-plugin makes it)."""
    _soc, s, o, shape = _trans_quant_param_checked(scale, offset, round_mode, product)
    u = np.ascontiguousarray(s, dtype=np.float32).view(np.uint32).astype(np.uint64).reshape(-1)
    n = int(np.prod(shape))
    u = np.broadcast_to(u, (n,)) if u.size == 1 else u
    out = (_fp19_truncate(u) if int(round_mode) == 0 else _fp19_round(u)) | np.uint64(_SIGN_FLAG)
    if o is not None:
        off = _offset_field(o)
        out = out | (np.broadcast_to(off, (n,)) if off.size == 1 else off)
    return out.view(np.int64).reshape(shape).copy()


def _offset_field(o: np.ndarray) -> np.ndarray:
    """float32 offsets as bits 37..45 of the quant parameter: clamp(rint(o), -256, 255) as int9 (uint64)."""
    off = formats.cast(np.ascontiguousarray(o, dtype=np.float32).reshape(-1), np.int32, "rint", saturate=True)
    off9 = np.clip(off.astype(np.int64), -256, 255)
    return (off9.astype(np.uint64) & np.uint64(0x1FF)) << np.uint64(_OFFSET_SHIFT)


def _check_param_shape(op, name, a, soc):
    if a.ndim == 1 or (a.ndim == 2 and a.shape[0] == 1):
        if a.size == 0:
            raise invalid(op, name, "must not be empty", soc.soc)
        return
    raise invalid(op, name, f"shape must be (t,) or (1, t), got {tuple(a.shape)}", soc.soc)


def _fp19_truncate(u: np.ndarray) -> np.ndarray:
    return u & np.uint64(_SCALE_MASK)


def _fp19_round(u: np.ndarray) -> np.ndarray:
    """fp32 bit patterns rounded half-to-even to 10 mantissa bits (TransQuantParamV3 round_mode 1)."""
    sign = (u >> np.uint64(31)) & np.uint64(1)
    e = (u >> np.uint64(23)) & np.uint64(0xFF)
    m = u & np.uint64(0x7FFFFF)
    f = m >> np.uint64(13)
    half = (m >> np.uint64(12)) & np.uint64(1)
    sticky = (m & np.uint64(0xFFF)) != 0
    up = (e != 0) & (e != 255) & (half == 1) & (sticky | ((f & np.uint64(1)) == 1))
    f = f + up.astype(np.uint64)
    carry = f == np.uint64(1024)
    f = np.where(carry, np.uint64(0), f)
    e = e + carry.astype(np.uint64)                   # 254 + carry = 255: inf (f is 0)
    e = np.where(e == 0, np.uint64(0), e)
    f = np.where(e == 0, np.uint64(0), f)             # zero and subnormal scales flush to +-0
    return ((sign << np.uint64(18)) | (e << np.uint64(10)) | f) << np.uint64(13)


# --------------------------------------------------------------------------- weight preparation
OP_INT4PACK = "npu_convert_weight_to_int4pack"
INT4PACK_PRODUCTS = ("atlas-a2", "atlas-a3", "ascend-950pr", "ascend-950dt")
ACL_FORMAT_ND = 2
ACL_FORMAT_FRACTAL_NZ = 29


def npu_convert_weight_to_int4pack(weight, inner_k_tiles: int = 0, *, product: str = "atlas-a2") -> np.ndarray:
    """torch_npu.npu_convert_weight_to_int4pack: int32 holding int4 values -> int32 words of eight int4.

    weight: int32, 2-D (k, n) or (n, k) (3-D (g, ., .) for grouped weights), last dim a multiple of 8,
    values in [-8, 7]. Returns int32 with the last dim / 8: element 8j+i of a row at bits 4i..4i+3 of word
    j, which is npusim's int32 packing (formats.pack_int4). Source: ops-nn aclnn_convert_weight_to_int4_pack
    .cpp (PackToINT8: element 2i in the low nibble of byte i; the bytes read as little-endian int32) and the
    torch_npu doc (products A2/A3; the aclnn doc adds Ascend 950). inner_k_tiles is reserved and unused, as
    in torch_npu. Documented choice: values outside [-8, 7] are rejected (the doc requires the range; the
    host code would keep their low 4 bits). For npu_quant_matmul pass the packed (n, k // 8) weight
    transposed, a (k // 8, n) view, or pack the (k, n) weight.
    """
    _checks.data_tensors(OP_INT4PACK, product, weight=weight)
    soc = _checks.resolve_product(OP_INT4PACK, product, INT4PACK_PRODUCTS)
    w = _checks.tensor(OP_INT4PACK, "weight", weight, soc)
    _checks.dtype_in(OP_INT4PACK, "weight", w, ("int32",), soc.soc)
    _checks.int_attr(OP_INT4PACK, "inner_k_tiles", inner_k_tiles, soc.soc)
    if w.ndim not in (2, 3):
        raise invalid(OP_INT4PACK, "weight", f"must be 2-D (k, n) / (n, k) or 3-D, got shape {w.shape}", soc.soc)
    if w.shape[-1] % 8:
        raise invalid(OP_INT4PACK, "weight", f"last dimension must be a multiple of 8, got {w.shape[-1]}", soc.soc)
    if w.size and (w.min() < -8 or w.max() > 7):
        raise invalid(OP_INT4PACK, "weight", f"values must lie in the int4 range [-8, 7], got [{w.min()}, {w.max()}]",
                      soc.soc)
    return formats.pack_int4(w, "int32")


def npu_format_cast(x, acl_format: int):
    """torch_npu.npu_format_cast on the CPU: returns x itself.

    The NPU formats only change how a tensor is stored in device memory (FRACTAL_NZ = ACL format 29 tiles
    the last two dims for the cube), never its values, and npusim computes from values, so nothing changes
    here. acl_format must be 2 (ND) or 29 (FRACTAL_NZ), the two npu_quant_matmul takes for its weight
    (aclnn_quant_matmul_v4.cpp CheckFormat); other formats are rejected as not emulated."""
    if isinstance(acl_format, (bool, np.bool_)) or not isinstance(acl_format, (int, np.integer)):
        raise invalid("npu_format_cast", "acl_format", f"must be an ACL format code (int), got {acl_format!r}"[:300])
    if int(acl_format) not in (ACL_FORMAT_ND, ACL_FORMAT_FRACTAL_NZ):
        raise not_emulated("npu_format_cast", "acl_format", f"must be {ACL_FORMAT_ND} (ND) or {ACL_FORMAT_FRACTAL_NZ} "
                           f"(FRACTAL_NZ); other formats are not emulated by npusim, got {acl_format!r}")
    if x is None:
        raise nullptr("npu_format_cast", "x")
    return x


# --------------------------------------------------------------------------- validation + plan
@dataclass
class _Call:
    """Everything the kernel needs, decided from shapes and dtypes (plus the plan)."""
    soc: object
    int4: bool
    M: int
    K: int
    N: int
    batch: tuple
    out_shape: tuple
    out_dtype: str
    epilogue: str            # int32 | req8 | deqf16 | vec_fp16 | vec_bf16
    scale_dtype: str
    offset_dtype: str | None
    bias_dtype: str | None
    has_pertoken: bool
    plan: Plan
    arrays: dict             # x1, x2, scale, offset, pertoken_scale, bias as checked (TensorSpecs when planning)


def _out_dtype_name(output_dtype) -> str:
    """output_dtype's dtype name; for a value that names no dtype npusim knows (torch.qint8, 'fp16'), its own
    spelling, which the caller's list of the product's output dtypes then refuses by name."""
    if output_dtype is None:
        return "int8"
    try:
        dt = formats.as_dtype(output_dtype if isinstance(output_dtype, (str, np.dtype, type)) else str(output_dtype))
        return formats.dtype_name(dt)
    except (TypeError, ValueError):
        return str(output_dtype).removeprefix("torch.")[:60]


def _dtype(a) -> str:
    return formats.dtype_name(a.dtype)


def _int4_weight(x2, K: int, p: str):
    """(N, x2 as (k, n // 8) words) for an int32-packed int4 weight given as (k, n // 8), or as (k // 8, n),
    the transpose of the (n, k // 8) that npu_convert_weight_to_int4pack makes of an (n, k) weight (torch_npu
    npu_quant_matmul doc, int4 constraints). The transposed one is repacked, so both give the same bits;
    n must then be a multiple of 8 (the doc: k and n are multiples of 8). A TensorSpec keeps its shape."""
    if len(x2.shape) != 2:
        raise invalid(OP_QMM, "x2", f"int4 (int32-packed) weights must be 2-D, (k, n // 8) or (k // 8, n), "
                      f"got {len(x2.shape)}-D", p)
    rows, cols = (int(d) for d in x2.shape)
    if rows == K:
        return cols * 8, x2
    if rows * 8 != K:
        raise invalid(OP_QMM, "x2", f"shape {tuple(x2.shape)} is neither (k, n // 8) nor (k // 8, n) for "
                      f"k = 8 * x1.shape[-1] = {K}", p)
    if cols % 8:
        raise invalid(OP_QMM, "x2", f"a (k // 8, n) int4 weight needs n a multiple of 8, got n = {cols} "
                      "(torch_npu npu_quant_matmul doc: k and n are multiples of 8)", p)
    if isinstance(x2, TensorSpec):
        return cols, x2
    values = formats.unpack_int4(np.ascontiguousarray(x2.T), "int32")          # (n, k)
    return cols, formats.pack_int4(values.T, "int32")                           # (k, n // 8)


def _validate(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, product) -> _Call:
    op = OP_QMM
    soc = _checks.resolve_product(op, product, SUPPORTED)
    p = soc.soc
    inference = soc.family == "310p910"
    arch35 = soc.family == "950"
    x1 = _checks.tensor(op, "x1", x1, soc)
    x2 = _checks.tensor(op, "x2", x2, soc)
    scale = _checks.tensor(op, "scale", scale, soc)
    offset = _checks.tensor(op, "offset", offset, soc, optional=True)
    pertoken_scale = _checks.tensor(op, "pertoken_scale", pertoken_scale, soc, optional=True)
    bias = _checks.tensor(op, "bias", bias, soc, optional=True)

    if inference and _dtype(x1) == "int32":
        raise invalid(op, "x1", "int4 (int32-packed) inputs are not supported on Atlas inference products: "
                      "x1/x2 are int8 only (torch_npu npu_quant_matmul doc, table 1; aclnn_quant_matmul_v4.cpp "
                      "CheckDtypeValidOnOnlyL0c2ub)", p)
    x_types = ("int8",) if inference or arch35 else ("int8", "int32")     # 950: x1/x2 INT8 only (V4 doc)
    for name, a in (("x1", x1), ("x2", x2)):
        if arch35 and _dtype(a) in FLOAT8_INPUTS:
            raise not_emulated(op, name, f"{_dtype(a)} inputs (aclnnQuantMatmulV5, which torch_npu calls on Ascend "
                               f"950) are not emulated by npusim: {V4_ON_950}", p)
    if arch35 and _dtype(x1) == _dtype(x2) == "int32":
        raise not_emulated(op, "x1", f"int4 (int32-packed) inputs on Ascend 950 (torch_npu's doc lists them) are not "
                           f"emulated by npusim: {V4_ON_950}", p)
    t1 = _checks.dtype_in(op, "x1", x1, x_types, p)
    t2 = _checks.dtype_in(op, "x2", x2, x_types, p)
    if (t1, t2) == ("int8", "int32"):          # only A2/A3 get here with int32 (x_types)
        raise not_emulated(op, "x2", A8W4, p)
    if t1 != t2:
        raise invalid(op, "x2", f"dtype must equal x1's ({t1}), got {t2}", p)
    int4 = t1 == "int32"
    for name, a in (("x1", x1), ("x2", x2)):
        if not 2 <= len(a.shape) <= 6:
            raise invalid(op, name, f"must have 2 to 6 dimensions, got {len(a.shape)}", p)
        # 950 (V4 doc): m = 0 or n = 0 gives an empty output; every other empty tensor is rejected, on A2/A3 and
        # 310P all of them (aclnn_quant_matmul_v4.cpp CheckEmptyTensor, hicann/ops-nn@5de74933)
        empty_ok = arch35 and 0 not in a.shape[:-2] and (a.shape[-1] if name == "x1" else a.shape[-2]) != 0
        if 0 in a.shape and not empty_ok:
            raise invalid(op, name, f"must not be empty, got shape {tuple(a.shape)}"
                          + ("" if arch35 else " (aclnn_quant_matmul_v4.cpp CheckEmptyTensor)"), p)
        if a.shape[-1] > MAX_LAST_DIM:
            raise invalid(op, name, f"last dimension must be <= {MAX_LAST_DIM}, got {a.shape[-1]}", p)
    M = int(x1.shape[-2])
    K = int(x1.shape[-1]) * (8 if int4 else 1)
    x2_kn = x2                   # x2 as (k, n) (int4: (k, n // 8) words) for the kernel
    if int4:
        N, x2_kn = _int4_weight(x2, K, p)
    else:
        N = int(x2.shape[-1])
        if int(x2.shape[-2]) != K:
            raise invalid(op, "x2", f"shape[-2] ({x2.shape[-2]}) must equal x1.shape[-1] = {K}", p)
    b1, b2 = tuple(x1.shape[:-2]), tuple(x2.shape[:-2])
    try:
        batch = b1 if b1 == b2 else tuple(np.broadcast_shapes(b1, b2))
    except ValueError:
        raise invalid(op, "x2", f"batch dims {tuple(x2.shape[:-2])} do not broadcast with x1's "
                      f"{tuple(x1.shape[:-2])}", p) from None
    out_shape = batch + (M, N)

    out = _out_dtype_name(output_dtype)
    if arch35 and out == "float32":
        raise not_emulated(op, "output_dtype", f"float32 output on Ascend 950 (torch_npu's doc lists it) is not "
                           f"emulated by npusim: {V4_ON_950}", p)
    allowed_out = ("int8", "float16") if inference else ("int8", "float16", "bfloat16", "int32")
    if out not in allowed_out:
        raise invalid(op, "output_dtype", f"must be one of {', '.join(allowed_out)}, got {out}", p)
    if int4:     # A4W4 output: float16, or bfloat16 through the per-token (vector) epilogue
        if out not in ("float16", "bfloat16"):
            raise invalid(op, "output_dtype", f"int4 (int32-packed) inputs give float16 or bfloat16 output, got {out} "
                          "(aclnn_quant_matmul_v4.cpp, CheckDtypeValidOnOnlyL0c2outForA4W4)", p)
        if out == "bfloat16" and pertoken_scale is None:
            raise invalid(op, "pertoken_scale", "int4 (int32-packed) inputs with bfloat16 output need a "
                          "pertoken_scale: without one the A4W4 kernel takes only an int64 scale, which bfloat16 "
                          "output does not (aclnn_quant_matmul_v4.cpp)", p)
        if bias is not None and len(bias.shape) != 1:
            raise invalid(op, "bias", f"must be 1-D (n,) with int4 inputs, got shape {tuple(bias.shape)} "
                          "(aclnn_quant_matmul_v4.cpp, CheckShapeInt4)", p)

    # scale / offset / pertoken / bias: shapes
    if int4 and is_per_group_scale(scale.shape):     # what the NPU takes, not its shape error
        raise not_emulated(op, "scale", f"shape {tuple(scale.shape)} with int4 (int32-packed) inputs: {PER_GROUP}", p)
    # 1-D, as torch_npu's own meta check says too (Ascend/op-plugin@f299d83 _meta_registrations.py
    # quant_matmul_shape_check), though npu_trans_quant_param's doc calls its (1, n) output a matmul input
    if len(scale.shape) != 1 or scale.shape[0] not in (1, N):
        raise invalid(op, "scale", f"shape must be (1,) or (n,) = ({N},), got {tuple(scale.shape)}", p)
    if offset is not None and (len(offset.shape) != 1 or offset.shape[0] not in (1, N)):
        raise invalid(op, "offset", f"shape must be (1,) or (n,) = ({N},), got {tuple(offset.shape)}", p)
    if pertoken_scale is not None:
        if inference:
            raise not_emulated(op, "pertoken_scale", PERTOKEN_310P, p)
        if tuple(pertoken_scale.shape) != (M,):
            if arch35 and tuple(pertoken_scale.shape) == (1,):
                raise not_emulated(op, "pertoken_scale", f"shape (1,) (one scale for every row) on Ascend 950 "
                                   f"(torch_npu's doc lists it) is not emulated by npusim: {V4_ON_950}", p)
            hint = (f" (m is x1's second-last dimension; for one scale per row of a {len(x1.shape)}-D x1, flatten it to "
                    f"2-D)" if len(x1.shape) > 2 and math.prod(pertoken_scale.shape) == math.prod(x1.shape[:-1]) else "")
            raise invalid(op, "pertoken_scale", f"shape must be (m,) = ({M},), got {tuple(pertoken_scale.shape)}{hint}",
                          p)
    if bias is not None:
        bshape = tuple(bias.shape)
        ok = bshape == (N,)
        if len(out_shape) == 3 and len(bshape) == 3:
            ok = bshape == (out_shape[0], 1, N)
        if not ok and arch35 and len(out_shape) == 2 and bshape == (1, N):
            raise not_emulated(op, "bias", f"shape (1, {N}) on Ascend 950 (torch_npu's doc lists it for a 2-D output) "
                               f"is not emulated by npusim: {V4_ON_950}", p)
        if not ok:
            want = f"({N},)" + (f" or ({out_shape[0]}, 1, {N})" if len(out_shape) == 3 else "")
            raise invalid(op, "bias", f"shape must be {want}, got {bshape}", p)

    # dtype combinations (seed 003, table 1 / table 2)
    s_t = _dtype(scale)
    o_t = _dtype(offset) if offset is not None else None
    b_t = _dtype(bias) if bias is not None else None
    has_pt = pertoken_scale is not None
    if has_pt:
        _checks.dtype_in(op, "pertoken_scale", pertoken_scale, ("float32",), p)
    if o_t is not None:
        _checks.dtype_in(op, "offset", offset, ("float32",), p)
        if out != "int8":
            raise invalid(op, "offset", f"is only allowed with int8 output, got output {out}", p)
    bf16_hint = " (a bfloat16 scale needs bfloat16 or int32 output)" if s_t == "bfloat16" else ""
    if out in ("int8",) or (out == "float16" and not has_pt):
        when = "with int8 output" if out == "int8" else "with float16 output and no pertoken_scale"
        _checks.dtype_in(op, "scale", scale, ("int64", np.dtype(np.uint64), "float32"), p,
                         when + bf16_hint)
        if has_pt:
            raise invalid(op, "pertoken_scale", f"is not allowed with {out} output", p)
        if b_t is not None:
            _checks.dtype_in(op, "bias", bias, ("int32",), p, when)
        epi = "req8" if out == "int8" else "deqf16"
    elif out == "float16":          # fp16 with pertoken: vector epilogue
        when = "with float16 output and pertoken_scale"
        _checks.dtype_in(op, "scale", scale, ("float32",), p, when + bf16_hint)
        if b_t is not None:
            _checks.dtype_in(op, "bias", bias, ("int32", "float16", "float32"), p, when)
        epi = "vec_fp16"
    elif out == "bfloat16":
        fixpipe_scales = ("int64", np.dtype(np.uint64)) if arch35 else ()    # 950 V4 table: int64 -> bf16 too
        _checks.dtype_in(op, "scale", scale, ("float32", "bfloat16") + fixpipe_scales, p, "with bfloat16 output")
        if s_t in ("int64", "uint64"):
            if has_pt:
                raise invalid(op, "pertoken_scale", "is not allowed with an int64 scale", p)
            if b_t is not None:
                _checks.dtype_in(op, "bias", bias, ("int32",), p, "with an int64 scale")
            epi = "deqbf16"
        else:
            if b_t is not None:
                _checks.dtype_in(op, "bias", bias, ("int32", "bfloat16", "float32"), p, "with bfloat16 output")
            epi = _arch35_epilogue(scale, has_pt, b_t) if arch35 else "vec_bf16"
    else:                            # int32
        _checks.dtype_in(op, "scale", scale, ("float32", "bfloat16"), p, "with int32 output")
        if has_pt:
            raise invalid(op, "pertoken_scale", "is not allowed with int32 output", p)
        if b_t is not None:
            _checks.dtype_in(op, "bias", bias, ("int32",), p, "with int32 output")
        epi = "int32"

    plan = _make_plan(soc, x1, x2, scale, offset, pertoken_scale, bias, M, K, N, batch, out_shape, out, epi, int4)
    arrays = {"x1": x1, "x2": x2_kn, "scale": scale, "offset": offset, "pertoken_scale": pertoken_scale, "bias": bias}
    return _Call(soc, int4, M, K, N, batch, out_shape, out, epi, s_t, o_t, b_t, has_pt, plan, arrays)


def _make_plan(soc, x1, x2, scale, offset, pertoken, bias, M, K, N, batch, out_shape, out, epi, int4) -> Plan:
    nbatch = math.prod(batch)
    fixpipe = epi in _FIXPIPE_EPILOGUES
    arch35 = soc.family == "950"
    if arch35:
        # transposeX2 is what torch_npu passes for a transposed contiguous x2 view (is_transpose_last_two_dims)
        trans_b = is_transposed(x2)
        if M == 0 or N == 0:                                  # an empty output: one launch, no work
            base_m, base_n, base_k = 16, 16, 32
        else:
            base_m, base_n, base_k = _arch35_base_block(M, K, N, soc.aic, soc.l0a_bytes, trans_b,
                                                        batch_cores=nbatch if fixpipe else 1)
    else:
        # Base blocks: documented estimate after QuantBatchMatmulV3BasicTiling (ops-nn
        # matmul/quant_batch_matmul_v3/op_host/op_tiling/quant_batch_matmul_v3_basic_tiling.cpp): basic block
        # 128 x 256 (BASIC_BLOCK_SIZE = 256 * 128), baseK from K_BASE {1024 .. 32} elements; here baseK = 128 B
        # of int8 (256 int4) so that double-buffered L0A/L0B tiles fit; the long side of the output gets
        # baseN=256.
        base_m, base_n = (128, 256) if N >= M else (256, 128)
        base_m = min(base_m, _ceil_to(M, 16))
        base_n = min(base_n, _ceil_to(N, 16))
        base_k = min(256 if int4 else 128, _ceil_to(K, 64 if int4 else 32))
    m_cnt = -(-M // base_m)
    n_cnt = -(-N // base_n)
    blocks = nbatch * m_cnt * n_cnt
    block_dim = max(1, min(soc.aic, blocks))                 # 1: a 950 empty output still plans one launch
    core_type = "aicore" if soc.core_layout == "coupled" else ("aic" if fixpipe else "mix")
    in_bytes = 0.5 if int4 else 1
    tiles = {
        "m": M, "k": K, "n": N, "batch": nbatch,
        "baseM": base_m, "baseN": base_n, "baseK": base_k,
        "mCnt": m_cnt, "nCnt": n_cnt, "kLoops": -(-K // base_k),
        "total_blocks": blocks, "blocks_per_core": -(-blocks // block_dim),
        "tail_m": M - (m_cnt - 1) * base_m if m_cnt else 0, "tail_n": N - (n_cnt - 1) * base_n if n_cnt else 0,
        "l0a_tile_bytes": int(base_m * base_k * in_bytes), "l0b_tile_bytes": int(base_k * base_n * in_bytes),
        "l0c_tile_bytes": base_m * base_n * 4, "double_buffer": True,
        "epilogue": epi, "epilogue_unit": "fixpipe" if fixpipe else "vector",
        "isPertoken": pertoken is not None,
        "isPerTensor": int(scale.shape[0]) == 1,
        "ub_tile_elems": 0 if fixpipe else base_m * base_n // 2,     # per AIV (two AIVs per AIC)
        "macs": nbatch * M * N * K,
    }
    if arch35:
        tiles.update(transB=bool(trans_b), kernelFamily="arch35")
        kernel = "QuantBatchMatmulV3 (arch35)"
        notes = ("arch35 adaptive-sliding-window base block (base_block_calculator.cpp); block_dim = min(AIC, "
                 "blocks), the tail-round split is not modelled" + ("; empty output, no work" if not blocks else ""))
    else:
        kernel = "QuantBatchMatmulV3"
        notes = ("base block sizes are an estimate after the vendor basic tiling; "
                 "block_dim = min(AIC cores, output blocks)")
        if min(M, N) <= 256 and n_cnt * m_cnt * nbatch < soc.aic:
            notes += ("; min(m, n) <= 256 runs the closed TBE tiling, whose tiles are not published: it may spread "
                      "these blocks over more cores, so read the latency as an upper bound (README, QuantBatchMatmul "
                      "decode)")
    # Tiling keys are not reproduced; 0 = fixpipe cube kernel, 1 = mix kernel with a vector epilogue.
    return Plan(op=OP_QMM, soc=soc, kernel=kernel, tiling_key=0 if fixpipe else 1,
                block_dim=block_dim, core_type=core_type, tiles=tiles,
                inputs={"x1": spec_of(x1), "x2": spec_of(x2), "scale": spec_of(scale), "offset": spec_of(offset),
                        "pertoken_scale": spec_of(pertoken), "bias": spec_of(bias)},
                outputs={"y": _checks.out_spec(OP_QMM, "y", out_shape, out, soc.soc)},
                attrs={"output_dtype": out, "int4": int4},
                notes=notes)


def _ceil_to(v, a):
    return -(-int(v) // a) * a


# --------------------------------------------------------------------------- Ascend 950 (arch35)
def _arch35_epilogue(scale, has_pertoken: bool, bias_dtype) -> str:
    """bf16 output with a float32/bf16 scale on arch35: the pure cube kernel (fixpipe dequant with the scale's
    bits 31..13, qbmm_cube_on_the_fly.h `uint32Scale & DEQ_SCALE_MUL`) for a per-tensor scale without
    per-token scale or float bias; otherwise the mix kernel's vector epilogue with the full scale
    (SetBf16Compat: per-channel float scale, or per-tensor with an fp32/bf16 bias; per-token always)."""
    per_tensor = int(scale.shape[0]) == 1
    if per_tensor and not has_pertoken and bias_dtype in (None, "int32"):
        return "deqbf16"
    return "vec_bf16"


# base_block_calculator.cpp constants (int8: one element per byte)
_CUBE_BLOCK, _L1_ALIGN, _L2_ALIGN, _BASEK_LIMIT = 16, 32, 128, 4095


def _arch35_base_block(M: int, K: int, N: int, aic: int, l0a_bytes: int, trans_b: bool,
                       batch_cores: int = 1) -> tuple[int, int, int]:
    """(baseM, baseN, baseK) of BaseBlockCalculator::ComputeBaseBlockDefault followed by
    AdjustBaseBlockDefault (ops-nn matmul/quant_batch_matmul_v3/op_host/op_tiling/arch35/
    base_block_calculator.cpp), for int8 and transA = false: start from min(256, dim) tiles, and when
    they leave cores idle re-split M and N over the cores (keeping baseM/baseN within a factor 2).
    batch_cores: the template's GetBatchCoreCnt(), the batch for the cube (FixPipe) template
    (AdaptiveSlidingWindowCubeBasicAPITiling), 1 for the mix template (AdaptiveSlidingWindowTiling's): the
    batches count as blocks, and the M x N split gets aic // batch_cores cores."""
    base_m = _ceil_to(min(M, 256), _CUBE_BLOCK)
    base_n = _ceil_to(min(N, 256), _CUBE_BLOCK if trans_b else _L1_ALIGN)
    base_k = _ceil_to(min(128, K), 32)
    if batch_cores * -(-M // base_m) * -(-N // base_n) >= aic:
        return base_m, base_n, base_k
    cores = aic // batch_cores          # >= the M x N blocks here, so every division below is by >= 1
    m_align, n_align, k_align = _CUBE_BLOCK, (_CUBE_BLOCK if trans_b else _L2_ALIGN), _L2_ALIGN
    m_max, n_max = -(-M // m_align), -(-N // n_align)
    if m_max * n_max < cores and not trans_b:
        return base_m, base_n, base_k
    m_core, n_core = -(-M // base_m), -(-N // base_n)
    if m_max < n_max or (m_max == n_max and n_align == _CUBE_BLOCK):
        tm = _ceil_to(-(-M // m_core), m_align)
        m_core = -(-M // tm)
        n_core = cores // m_core
        tn = _ceil_to(-(-N // n_core), n_align)
    else:
        tn = _ceil_to(-(-N // n_core), n_align)
        n_core = -(-N // tn)
        m_core = cores // n_core
        tm = _ceil_to(-(-M // m_core), m_align)
    while tn >= tm * 2 and n_core < cores // 2 and tn != n_align:
        n_core *= 2
        m_core = cores // n_core
        tm, tn = _ceil_to(-(-M // m_core), m_align), _ceil_to(-(-N // n_core), n_align)
        m_core, n_core = -(-M // tm), -(-N // tn)
    while tm >= tn * 2 and m_core < cores // 2 and tm != m_align:
        m_core *= 2
        n_core = cores // m_core
        tm, tn = _ceil_to(-(-M // m_core), m_align), _ceil_to(-(-N // n_core), n_align)
        m_core, n_core = -(-M // tm), -(-N // tn)
    k_max = l0a_bytes // 2 // max(tm, tn)
    if k_max >= k_align:
        base_m, base_n = tm, tn
        base_k = min(_ceil_to(K, k_align), k_max // k_align * k_align)
        if base_k > _BASEK_LIMIT:
            base_k = _ceil_to(base_k // 2, k_align)
    return base_m, base_n, base_k


@planner(OP_QMM, SUPPORTED)
def plan_npu_quant_matmul(x1, x2, scale, *, offset=None, pertoken_scale=None, bias=None, output_dtype=None,
                          product="atlas-a2") -> Plan:
    """Plan of npu_quant_matmul (QuantBatchMatmulV3 on A2/A3, the coupled-core kernel on 310P).

    tiles keys: m, k, n, batch (output batch count); baseM/baseN/baseK (L0 tile, elements);
    mCnt/nCnt (base blocks along m/n), kLoops (baseK steps per block); total_blocks, blocks_per_core;
    tail_m/tail_n (last block sizes); l0a/l0b/l0c_tile_bytes, double_buffer; epilogue
    ('req8', 'deqf16', 'int32', 'vec_fp16', 'vec_bf16') and epilogue_unit ('fixpipe' or 'vector');
    isPertoken, isPerTensor; ub_tile_elems (vector epilogue elements per AIV pass); macs.
    block_dim = min(AIC cores, total_blocks); core_type 'aic' (fixpipe epilogue), 'mix' (vector
    epilogue on the AIVs), 'aicore' on coupled parts (310P).
    """
    return _validate(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, product).plan


def check_weight_format(plan: Plan, x2_format: str) -> None:
    """The tiling's check of a weight cast to FRACTAL_NZ (x2_format 'NZ', which the torch face knows and numpy
    arrays do not carry) against a plan: Atlas inference (310P, no L0C->GM path) runs QuantBatchMatmulV3 with x1
    as given and x2 transposed only, and its tiling refuses anything else (hicann/ops-nn
    quant_batch_matmul_v3_tiling_base.cpp AnalyzeAttrs, without supportL0c2Out). The aclnn layer transposes x1
    and an ND x2 to fit (aclnn_quant_matmul_v4.cpp TransposeAndTransDataForInputs, on 310P), but leaves an NZ x2
    as it is (vllm-ascend issue #1736). An AclnnError 561002 when the plan's x2 is not a transposed view."""
    if x2_format == "NZ" and plan.soc.family == "310p910" and not plan.inputs["x2"].transposed:
        raise invalid(OP_QMM, "x2", "on Atlas inference products an NZ (npu_format_cast(w, 29)) weight must be "
                      "passed transposed, transpose_x2 true: the [n, k] weight's .t() view (or keep the weight ND, "
                      "which the aclnn layer transposes itself); the tiling says 'This platform only support output "
                      "transpose_x1 false and transpose_x2 true, actual [false, false]'",
                      plan.soc.soc, status=ACLNN_ERR_INNER_TILING_ERROR)


# --------------------------------------------------------------------------- emulator
def npu_quant_matmul(x1, x2, scale, *, offset=None, pertoken_scale=None, bias=None, output_dtype=None,
                     product: str = "atlas-a2") -> np.ndarray:
    """torch_npu.npu_quant_matmul: y = epilogue(x1 @ x2) with an exact int32 accumulator.

    x1 [..., m, k], x2 [..., k, n] int8 (or int32 holding 8 int4 each, LSB nibble first:
    x1 [..., m, k // 8], x2 [k, n // 8] or [k // 8, n], the transpose of npu_convert_weight_to_int4pack's
    [n, k // 8]); batch dims broadcast; 2 to 6 dims; last dims <= 65535.
    int4 (A2/A3; aclnn_quant_matmul_v4.cpp A4W4 checks, torch_npu doc table 2, op-plugin
    test_npu_quant_matmul_a4w4_pertoken): float16 output without pertoken_scale (int64 / float32 scale,
    int32 bias), or float16 / bfloat16 output with pertoken_scale through the int8 vector epilogue;
    bias 1-D; no offset. README "int4 support matrix" lists the rows and their sources.
    scale (1,) or (n,): int64 (npu_trans_quant_param), float32 or bfloat16; offset (1,)/(n,) float32
    (int8 output only); pertoken_scale (m,) float32; bias (n,) or (batch, 1, n).
    output_dtype: int8 (default), float16, bfloat16, int32. Kernel: QuantBatchMatmulV3 on Atlas A2/A3
    (DAV_2201); the same fixpipe arithmetic is assumed on Atlas inference (310P) (table 1 combos only).
    Epilogues (ARITHMETIC.md 4.2-4.3): see the module docstring. Documented choices:
      * float32 scale with int8/fp16 output and no pertoken: converted by npu_trans_quant_param(scale,
        offset) first (torch_npu does this on the host), so only 19 scale bits count.
      * int64 scale together with a separate offset: the A2/A3 kernel never reads the offset tensor
        (only bits 37..45 of the int64 reach the fixpipe), so it is ignored here too, with a warning when
        it differs from those bits (torch_npu's LinearA8W8Quant passes the offset it folded in: no warning).
      * REQ8 NaN products give 0 before the offset is added (undocumented on hardware); REQ8 ties
        round half to even (vendor model np.round); DEQF16 saturates to +-65504 (vendor model clip);
        the vector epilogue's final cast is IEEE (overflow to inf).
      * float16 output without pertoken_scale takes only an int32 bias. Seed 003 table 2 (row
        "scale float32, bias int32/float16/float32/None, pertoken float32/None -> float16") reads as if a
        float bias were allowed without pertoken too, but torch_npu then folds the scale into int64 and
        the A2/A3 aclnn checker (ops-nn quant_matmul_checker.cpp, CheckL0c2outAndL0c2ubPertensorPerchannel)
        requires an int32 bias for that case, so the call fails on the NPU; it is rejected here as well.
      * uint64 scales are accepted like int64 (the aclnn checker's UINT64/INT64 list).
      * int64 scales must have bits 32..36 and 47..63 clear (npu_trans_quant_param never sets them:
        N shift / MCB are not modelled).

    Ascend 950PR / 950DT (arch35; beyond seed 003, from the aclnnQuantMatmulV4 doc's 950 table, the arch35
    kernels and the vendor golden qbmmv3_kernel_golden.py): x1/x2 int8 only; m = 0 or n = 0 gives an empty
    output. As on A2/A3, torch_npu packs a float32 scale with npu_trans_quant_param for int8/fp16 output
    without pertoken_scale (QuantMatmulKernelNpuOpApi.cpp). Paths:
      * int64 scale: fixpipe with bits 31..13 (REQ8 / DEQF16 as above, and int32 -> bf16 output, new on 950);
      * bf16 output, float32/bf16 scale of shape (1,), no pertoken_scale, no float bias: the cube kernel,
        fixpipe with the scale's 19 high bits (qbmm_cube_on_the_fly.h `& DEQ_SCALE_MUL`) -- where A2/A3 use the
        full fp32 scale;
      * per-channel float scale, pertoken_scale, or a float bias: the mix kernel's vector epilogue with the
        full scale, d = f32(f32(acc + int32 bias) * s) [* pertoken] [+ float bias], RNE to the output.
    Agreement with the golden on the vendor's test shapes: bit-exact except (1) DEQF16 saturates at +-65504
    (the fixpipe's F16 conversion has no INF/NaN mode) where the golden's astype gives inf, (2) the offset
    bits of an int64 scale apply even without an offset tensor (the fixpipe reads them; the golden adds an
    offset only when given one). npusim follows the kernel in both. Assumed: the bf16 fixpipe conversion
    rounds to nearest-even without saturating (as the golden), which only matters past 3.4e38.
    """
    _checks.data_tensors(OP_QMM, product, x1=x1, x2=x2, scale=scale, offset=offset,
                         pertoken_scale=pertoken_scale, bias=bias)
    call = _validate(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, product)
    soc, p = call.soc, call.soc.soc
    x1, x2, scale, offset, pertoken_scale, bias = (call.arrays[k] for k in
                                                   ("x1", "x2", "scale", "offset", "pertoken_scale", "bias"))
    N, M = call.N, call.M

    # quant parameters, all checked before any computing
    scale_f = np.ones(N, np.float32)
    offset9 = np.zeros(N, np.int32)
    signed = np.ones(N, np.uint8)
    if call.epilogue in ("req8", "deqf16", "deqbf16"):
        if call.scale_dtype in ("float32", "bfloat16"):      # bf16 (arch35 per-tensor): widening is exact
            q = _trans_quant_param(np.asarray(scale, np.float32), offset if call.epilogue == "req8" else None,
                                   0, soc)
        else:
            q = scale.astype(np.int64).view(np.uint64)
            bad = (q & np.uint64(_RESERVED_BITS)) != 0
            if np.any(bad):
                i = int(np.argmax(bad))
                raise invalid(OP_QMM, "scale", f"int64 quant parameter {int(q[i]):#x} (index {i}) sets bits "
                              "32..36 or 47..63, which npu_trans_quant_param never sets (N shift / MCB "
                              "are not modelled)", p)
            folded = q.reshape(-1) & np.uint64(0x1FF << _OFFSET_SHIFT)
            if offset is not None and np.any(folded != _offset_field(offset)):
                warnings.warn("npu_quant_matmul: with an int64 scale the A2/A3 kernel reads the offset only "
                              "from bits 37..45 of the scale; the separate offset tensor, which differs from "
                              "them, is ignored (fold it in with npu_trans_quant_param(scale, offset))",
                              RuntimeWarning, stacklevel=2)
        q = q.reshape(-1).view(np.uint64)
        scale_f[:] = (q & np.uint64(_SCALE_MASK)).astype(np.uint32).view(np.float32)
        if call.epilogue == "req8":
            o9 = ((q >> np.uint64(_OFFSET_SHIFT)) & np.uint64(0x1FF)).astype(np.int32)
            offset9[:] = np.where(o9 >= 256, o9 - 512, o9)
            signed[:] = ((q >> np.uint64(46)) & np.uint64(1)).astype(np.uint8)
    elif call.epilogue in ("vec_fp16", "vec_bf16"):
        scale_f[:] = scale.astype(np.float32).reshape(-1)      # bf16 widens exactly

    nbatch = int(np.prod(call.batch)) if call.batch else 1
    bias_i32 = np.zeros((1, N), np.int32)
    bias_f = np.zeros((1, N), np.float32)
    if bias is not None:
        brows = bias.reshape(-1, N)
        if call.bias_dtype == "int32":
            bias_i32 = np.ascontiguousarray(brows, dtype=np.int32)
        else:
            bias_f = np.ascontiguousarray(brows.astype(np.float32))
    pt = (np.ascontiguousarray(pertoken_scale, dtype=np.float32) if pertoken_scale is not None
          else np.zeros(1, np.float32))

    if M == 0 or N == 0:                                       # 950: empty output, nothing computed
        launched(call.plan)
        return np.empty(call.out_shape, formats.as_dtype(call.out_dtype))
    acc = _accumulate(x1, x2, call, nbatch)
    out = np.empty((nbatch, M, N), dtype=formats.as_dtype(call.out_dtype))
    dummy8 = np.empty((1, 1, 1), np.int8)
    dummy16 = np.empty((1, 1, 1), np.uint16)
    dummy32 = np.empty((1, 1, 1), np.int32)
    o8 = out if call.out_dtype == "int8" else dummy8
    o16 = out.view(np.uint16) if call.out_dtype in ("float16", "bfloat16") else dummy16
    o32 = out if call.out_dtype == "int32" else dummy32
    _k.epilogue(acc, M, N, _EPI[call.epilogue], bias_i32, call.bias_dtype == "int32", scale_f, offset9, signed,
                pt, pertoken_scale is not None, bias_f, bias is not None and call.bias_dtype != "int32",
                o8, o16, o32)
    launched(call.plan)
    return out.reshape(call.out_shape)


def _accumulate(x1, x2, call: _Call, nbatch: int) -> np.ndarray:
    """int32 [batch, M, N] = x1 @ x2 exactly. The weight x2 is not copied when it is int8 [..., K, N] with
    contiguous rows or the transposed view of contiguous [..., N, K] rows (LinearA8W8Quant, torch users).
    NPUSIM_GEMM_SIMD (read per call) forces a GEMM path: c, avx2 or avx512_vnni; default: the fastest."""
    M, K, N = call.M, call.K, call.N
    if call.int4:
        x1 = formats.unpack_int4(np.ascontiguousarray(x1), "int32")
        x2 = formats.unpack_int4(np.ascontiguousarray(x2), "int32")
    b1 = np.ascontiguousarray(x1.reshape((-1, M, K)))
    b2 = x2.reshape((-1, K, N))                   # a view for both weight layouts
    if b2.strides[1] != 1 and b2.strides[2] != 1:
        b2 = np.ascontiguousarray(b2)
    # output batch b -> input batch of x1 / x2 (broadcast dims reuse the same input matrix)
    bshape = call.batch
    ia = np.broadcast_to(np.arange(b1.shape[0]).reshape(x1.shape[:-2] or (1,)), bshape).reshape(-1) \
        if bshape else np.zeros(1, np.int64)
    ib = np.broadcast_to(np.arange(b2.shape[0]).reshape(x2.shape[:-2] or (1,)), bshape).reshape(-1) \
        if bshape else np.zeros(1, np.int64)
    acc = np.empty((nbatch, M, N), np.int32)
    _k.int8_gemm(b1, b2, np.ascontiguousarray(ia, np.int64), np.ascontiguousarray(ib, np.int64), acc,
                 _gemm_path())
    return acc


def gemm_path_name() -> str:
    """The GEMM path npu_quant_matmul runs: NPUSIM_GEMM_SIMD if set, else the fastest this build has for this
    CPU."""
    avail = _k.simd_paths()
    want = os.environ.get("NPUSIM_GEMM_SIMD", "") or avail[-1]
    if want not in avail:
        raise ValueError(f"NPUSIM_GEMM_SIMD={want!r}: this build and CPU offer {', '.join(avail)}")
    return want


def _gemm_path() -> int:
    """Id of the GEMM path to run (gemm_path_name's)."""
    return _k.SIMD_PATHS.index(gemm_path_name())


# --------------------------------------------------------------------------- LinearA8W8Quant
def linear_a8w8_quant_forward(x1, weight, scale, offset=None, pertoken_scale=None, bias=None, output_dtype=None,
                              *, product: str = "atlas-a2") -> np.ndarray:
    """The forward of torch_npu.contrib.module.LinearA8W8Quant (both faces run this).

    As torch_npu's module: a float32 scale is packed with npu_trans_quant_param(scale, offset) unless the
    output goes through the vector epilogue (pertoken_scale given, or bfloat16 output), then
    npu_quant_matmul(x1, weight^T, scale, offset=offset, pertoken_scale, bias, output_dtype) runs (the
    offset goes along with the int64 scale that already holds it, as in torch_npu; it is not read twice).
    Seed 003: x1 and weight are int8, output_dtype int8 (None), float16 or bfloat16 (not int32)."""
    _checks.data_tensors("LinearA8W8Quant", product, x1=x1, pertoken_scale=pertoken_scale, weight=weight, scale=scale,
                         offset=offset, bias=bias)
    w_t, scale = _linear_a8w8_quant_args(x1, weight, scale, offset, pertoken_scale, output_dtype, product)
    return npu_quant_matmul(x1, w_t, scale, offset=offset, pertoken_scale=pertoken_scale, bias=bias,
                            output_dtype=output_dtype, product=product)


def plan_linear_a8w8_quant(x1, weight, scale, offset=None, pertoken_scale=None, bias=None, output_dtype=None, *,
                           product: str = "atlas-a2") -> Plan:
    """The plan of LinearA8W8Quant's forward from shapes and dtypes (TensorSpecs): its quant matmul's, after the
    same checks and scale packing as linear_a8w8_quant_forward."""
    w_t, scale = _linear_a8w8_quant_args(x1, weight, scale, offset, pertoken_scale, output_dtype, product)
    return plan_npu_quant_matmul(x1, w_t, scale, offset=offset, pertoken_scale=pertoken_scale, bias=bias,
                                 output_dtype=output_dtype, product=product)


def _linear_a8w8_quant_args(x1, weight, scale, offset, pertoken_scale, output_dtype, product):
    """LinearA8W8Quant's own checks, then its quant matmul's x2 (weight^T) and scale (packed where torch_npu packs
    it): arrays, or TensorSpecs when given those."""
    op = "LinearA8W8Quant"
    soc = _checks.resolve_product(op, product, SUPPORTED)
    w = _checks.tensor(op, "weight", weight, soc)
    a1 = _checks.tensor(op, "x1", x1, soc)
    _checks.dtype_in(op, "x1", a1, ("int8",), soc.soc)
    _checks.dtype_in(op, "weight", w, ("int8",), soc.soc)
    if not 2 <= w.ndim <= 6:     # seed 003: weight (batch, n, k), 2 to 6 dimensions
        raise invalid(op, "weight", f"must have 2 to 6 dimensions ([batch..., out_features, in_features]), got "
                      f"shape {tuple(w.shape)}", soc.soc)
    if a1.ndim >= 1 and a1.shape[-1] != w.shape[-1]:
        raise invalid(op, "weight", f"in_features (shape[-1] = {w.shape[-1]}) must equal x1.shape[-1] = "
                      f"{a1.shape[-1]}", soc.soc)
    scale = _checks.tensor(op, "scale", scale, soc)
    if len(scale.shape) != 1:    # seed 003: scale 1-D (t,), t = 1 or out_features
        raise invalid(op, "scale", f"must be 1-D (t,), t = 1 or out_features, got shape {tuple(scale.shape)}",
                      soc.soc)
    out = _out_dtype_name(output_dtype)
    if out == "int32":   # seed 003 output_dtype: int8/float16/bfloat16 (npu_quant_matmul adds int32)
        raise invalid(op, "output_dtype", "must be int8, float16 or bfloat16 for LinearA8W8Quant, got int32",
                      soc.soc)
    w_t = w.T if isinstance(w, TensorSpec) else np.swapaxes(w, -1, -2)     # the last two dimensions
    if pertoken_scale is None and scale.dtype == np.float32 and out in ("int8", "float16"):
        if isinstance(scale, TensorSpec):      # the packing's checks and shape (a plan: nothing runs)
            scale = plan_npu_trans_quant_param(scale, offset, product=product).outputs["y"]
        else:       # torch_npu's module launches npu_trans_quant_param before its quant matmul
            scale = npu_trans_quant_param(scale, offset, product=product)
    return w_t, scale


class LinearA8W8Quant:
    """torch_npu.contrib.module.LinearA8W8Quant on numpy arrays (the torch module is
    npusim.torch_npu.contrib.module.LinearA8W8Quant).

    Holds weight [out_features, in_features] int8 (or [batch..., out_features, in_features], up to 6
    dimensions, seed 003; the batch broadcasts against x1's), scale [out_features] float32, offset [out_features]
    float32 (if offset=True), pertoken_scale float32 (if pertoken_scale=True; set it to the [m] per-token
    scale of the next input, as torch_npu's module keeps it as a parameter), bias [out_features] int32 (if
    bias=True); set them as arrays (any dtype npu_quant_matmul accepts for that role). layer(x1) runs
    linear_a8w8_quant_forward (see there). Extra over torch_npu: layer(x1, pertoken_scale=p) uses p for
    this call instead of the attribute.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, offset: bool = False,
                 pertoken_scale: bool = False, output_dtype=None, *, product: str = "atlas-a2"):
        op = "LinearA8W8Quant"
        self.in_features = _checks.int_attr(op, "in_features", in_features)
        self.out_features = _checks.int_attr(op, "out_features", out_features)
        for name, v in (("in_features", self.in_features), ("out_features", self.out_features)):
            if not 1 <= v <= MAX_LAST_DIM:     # k and n are the last dims of x1 and weight^T (seed 003)
                raise invalid(op, name, f"must be in [1, {MAX_LAST_DIM}] (npu_quant_matmul's limit on the last "
                              f"dimensions of x1 and x2), got {v}", str(product))
        self.product = product
        self.output_dtype = output_dtype
        self.weight = np.zeros((self.out_features, self.in_features), np.int8)
        self.scale = np.ones(self.out_features, np.float32)
        self.offset = np.zeros(self.out_features, np.float32) if offset else None
        self.pertoken_scale = np.ones(self.out_features, np.float32) if pertoken_scale else None
        self.bias = np.zeros(self.out_features, np.int32) if bias else None

    def __call__(self, x1, pertoken_scale=None) -> np.ndarray:
        if pertoken_scale is not None and self.pertoken_scale is None:
            raise invalid("LinearA8W8Quant", "pertoken_scale", "was given but the layer was built with "
                          "pertoken_scale=False", self.product)
        return linear_a8w8_quant_forward(x1, self.weight, self.scale, self.offset,
                                         self.pertoken_scale if pertoken_scale is None else pertoken_scale,
                                         self.bias, self.output_dtype, product=self.product)

    forward = __call__

    def __repr__(self) -> str:
        return (f"LinearA8W8Quant(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, offset={self.offset is not None}, "
                f"pertoken_scale={self.pertoken_scale is not None}, output_dtype={self.output_dtype})")
