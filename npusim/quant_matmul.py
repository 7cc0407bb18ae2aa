"""npu_trans_quant_param, npu_quant_matmul and LinearA8W8Quant (torch_npu), bit-exact on the CPU.

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
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from npusim import _checks, formats
from npusim._kernels import quant_matmul as _k
from npusim.errors import invalid, nullptr
from npusim.plan import Plan, TensorSpec, planner

__all__ = ["npu_trans_quant_param", "npu_quant_matmul", "LinearA8W8Quant"]

OP_TQP = "npu_trans_quant_param"
OP_QMM = "npu_quant_matmul"
SUPPORTED = ("atlas-a2", "atlas-a3", "atlas-inference")
MAX_LAST_DIM = 65535

_SCALE_MASK = 0xFFFFE000          # keep sign, exponent and 10 mantissa bits ("FP19")
_SIGN_FLAG = 1 << 46              # fixpipe Sign bit: signed int8 result of REQ8
_OFFSET_SHIFT = 37                # int9 offset in bits 37..45
_RESERVED_BITS = (0xF << 32) | (1 << 36) | (~((1 << 47) - 1) & 0xFFFFFFFFFFFFFFFF)  # N shift, MCB, 47..63

_EPI = {"int32": 0, "req8": 1, "deqf16": 2, "vec_fp16": 3, "vec_bf16": 4}


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
    float32; offset: same rules. Returns int64 of the broadcast shape.
    """
    _checks.data_tensors(OP_TQP, product, scale=scale, offset=offset)
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
        if s.size != 1 and o.size != 1 and s.size != o.size:
            raise invalid(OP_TQP, "offset", f"length {o.size} does not match scale length {s.size} "
                          "(one of them may have length 1)", soc.soc)
        shape = o.shape if s.size == 1 and o.size > 1 else s.shape
    u = np.ascontiguousarray(s, dtype=np.float32).view(np.uint32).astype(np.uint64).reshape(-1)
    n = int(np.prod(shape))
    u = np.broadcast_to(u, (n,)) if u.size == 1 else u
    out = (_fp19_truncate(u) if int(round_mode) == 0 else _fp19_round(u)) | np.uint64(_SIGN_FLAG)
    if o is not None:
        off = formats.cast(np.ascontiguousarray(o, dtype=np.float32).reshape(-1), np.int32, "rint", saturate=True)
        off9 = np.clip(off.astype(np.int64), -256, 255)
        off9 = np.broadcast_to(off9, (n,)) if off9.size == 1 else off9
        out = out | ((off9.astype(np.uint64) & np.uint64(0x1FF)) << np.uint64(_OFFSET_SHIFT))
    return out.view(np.int64).reshape(shape).copy()


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


def _out_dtype_name(output_dtype, soc) -> str:
    if output_dtype is None:
        return "int8"
    try:
        dt = formats.as_dtype(output_dtype if isinstance(output_dtype, (str, np.dtype, type)) else str(output_dtype))
        name = formats.dtype_name(dt)
    except (TypeError, ValueError):
        raise invalid(OP_QMM, "output_dtype", f"is not a dtype: {output_dtype!r}", soc.soc) from None
    return name


def _dtype(a) -> str:
    return formats.dtype_name(a.dtype)


def _validate(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, product) -> _Call:
    op = OP_QMM
    soc = _checks.resolve_product(op, product, SUPPORTED)
    p = soc.soc
    inference = soc.family == "310p910"
    x1 = _checks.tensor(op, "x1", x1, soc)
    x2 = _checks.tensor(op, "x2", x2, soc)
    scale = _checks.tensor(op, "scale", scale, soc)
    offset = _checks.tensor(op, "offset", offset, soc, optional=True)
    pertoken_scale = _checks.tensor(op, "pertoken_scale", pertoken_scale, soc, optional=True)
    bias = _checks.tensor(op, "bias", bias, soc, optional=True)

    x_types = ("int8",) if inference else ("int8", "int32")
    t1 = _checks.dtype_in(op, "x1", x1, x_types, p)
    t2 = _checks.dtype_in(op, "x2", x2, x_types, p)
    if t1 != t2:
        raise invalid(op, "x2", f"dtype must equal x1's ({t1}), got {t2}", p)
    int4 = t1 == "int32"
    for name, a in (("x1", x1), ("x2", x2)):
        if not 2 <= len(a.shape) <= 6:
            raise invalid(op, name, f"must have 2 to 6 dimensions, got {len(a.shape)}", p)
        if int(np.prod(a.shape)) == 0:
            raise invalid(op, name, f"must not be empty, got shape {tuple(a.shape)}", p)
        if a.shape[-1] > MAX_LAST_DIM:
            raise invalid(op, name, f"last dimension must be <= {MAX_LAST_DIM}, got {a.shape[-1]}", p)
    if int4 and len(x2.shape) != 2:
        raise invalid(op, "x2", f"int4 (int32-packed) weights must be 2-D (k, n // 8), got {len(x2.shape)}-D", p)
    M = int(x1.shape[-2])
    K = int(x1.shape[-1]) * (8 if int4 else 1)
    N = int(x2.shape[-1]) * (8 if int4 else 1)
    if int(x2.shape[-2]) != K:
        what = f"8 * x1.shape[-1] = {K}" if int4 else f"x1.shape[-1] = {K}"
        raise invalid(op, "x2", f"shape[-2] ({x2.shape[-2]}) must equal {what}", p)
    try:
        batch = tuple(np.broadcast_shapes(tuple(x1.shape[:-2]), tuple(x2.shape[:-2])))
    except ValueError:
        raise invalid(op, "x2", f"batch dims {tuple(x2.shape[:-2])} do not broadcast with x1's "
                      f"{tuple(x1.shape[:-2])}", p) from None
    out_shape = batch + (M, N)

    out = _out_dtype_name(output_dtype, soc)
    allowed_out = ("int8", "float16") if inference else ("int8", "float16", "bfloat16", "int32")
    if out not in allowed_out:
        raise invalid(op, "output_dtype", f"must be one of {', '.join(allowed_out)}, got {out}", p)
    if int4 and out != "float16":
        raise invalid(op, "output_dtype", f"int4 (int32-packed) inputs support only float16 output, got {out}", p)

    # scale / offset / pertoken / bias: shapes
    if len(scale.shape) != 1 or scale.shape[0] not in (1, N):
        raise invalid(op, "scale", f"shape must be (1,) or (n,) = ({N},), got {tuple(scale.shape)}", p)
    if offset is not None and (len(offset.shape) != 1 or offset.shape[0] not in (1, N)):
        raise invalid(op, "offset", f"shape must be (1,) or (n,) = ({N},), got {tuple(offset.shape)}", p)
    if pertoken_scale is not None:
        if inference:
            raise invalid(op, "pertoken_scale", "is not supported on this product (must be None)", p)
        if tuple(pertoken_scale.shape) != (M,):
            raise invalid(op, "pertoken_scale", f"shape must be (m,) = ({M},), got {tuple(pertoken_scale.shape)}", p)
    if bias is not None:
        bshape = tuple(bias.shape)
        ok = bshape == (N,)
        if len(out_shape) == 3 and len(bshape) == 3:
            ok = bshape == (out_shape[0], 1, N)
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
    if out in ("int8",) or (out == "float16" and not has_pt):
        _checks.dtype_in(op, "scale", scale, ("int64", np.dtype(np.uint64), "float32"), p)
        if has_pt:
            raise invalid(op, "pertoken_scale", f"is not allowed with {out} output", p)
        if b_t is not None:
            _checks.dtype_in(op, "bias", bias, ("int32",), p)
        epi = "req8" if out == "int8" else "deqf16"
    elif out == "float16":          # fp16 with pertoken: vector epilogue
        _checks.dtype_in(op, "scale", scale, ("float32",), p)
        if b_t is not None:
            _checks.dtype_in(op, "bias", bias, ("int32", "float16", "float32"), p)
        epi = "vec_fp16"
    elif out == "bfloat16":
        _checks.dtype_in(op, "scale", scale, ("float32", "bfloat16"), p)
        if b_t is not None:
            _checks.dtype_in(op, "bias", bias, ("int32", "bfloat16", "float32"), p)
        epi = "vec_bf16"
    else:                            # int32
        _checks.dtype_in(op, "scale", scale, ("float32", "bfloat16"), p)
        if has_pt:
            raise invalid(op, "pertoken_scale", "is not allowed with int32 output", p)
        if b_t is not None:
            _checks.dtype_in(op, "bias", bias, ("int32",), p)
        epi = "int32"

    plan = _make_plan(soc, x1, x2, scale, offset, pertoken_scale, bias, M, K, N, batch, out_shape, out, epi, int4)
    arrays = {"x1": x1, "x2": x2, "scale": scale, "offset": offset, "pertoken_scale": pertoken_scale, "bias": bias}
    return _Call(soc, int4, M, K, N, batch, out_shape, out, epi, s_t, o_t, b_t, has_pt, plan, arrays)


def _make_plan(soc, x1, x2, scale, offset, pertoken, bias, M, K, N, batch, out_shape, out, epi, int4) -> Plan:
    nbatch = int(np.prod(batch)) if batch else 1
    fixpipe = epi in ("req8", "deqf16", "int32")
    # Base blocks: documented estimate after QuantBatchMatmulV3BasicTiling (ops-nn
    # matmul/quant_batch_matmul_v3/op_host/op_tiling/quant_batch_matmul_v3_basic_tiling.cpp): basic block
    # 128 x 256 (BASIC_BLOCK_SIZE = 256 * 128), baseK from K_BASE {1024 .. 32} elements; here baseK = 128 B of
    # int8 (256 int4) so that double-buffered L0A/L0B tiles fit; the long side of the output gets baseN=256.
    base_m, base_n = (128, 256) if N >= M else (256, 128)
    base_m = min(base_m, _ceil_to(M, 16))
    base_n = min(base_n, _ceil_to(N, 16))
    base_k = min(256 if int4 else 128, _ceil_to(K, 64 if int4 else 32))
    m_cnt = -(-M // base_m)
    n_cnt = -(-N // base_n)
    blocks = nbatch * m_cnt * n_cnt
    cores = soc.aic
    block_dim = min(cores, blocks)
    core_type = "aicore" if soc.core_layout == "coupled" else ("aic" if fixpipe else "mix")
    in_bytes = 0.5 if int4 else 1
    tiles = {
        "m": M, "k": K, "n": N, "batch": nbatch,
        "baseM": base_m, "baseN": base_n, "baseK": base_k,
        "mCnt": m_cnt, "nCnt": n_cnt, "kLoops": -(-K // base_k),
        "total_blocks": blocks, "blocks_per_core": -(-blocks // block_dim),
        "tail_m": M - (m_cnt - 1) * base_m, "tail_n": N - (n_cnt - 1) * base_n,
        "l0a_tile_bytes": int(base_m * base_k * in_bytes), "l0b_tile_bytes": int(base_k * base_n * in_bytes),
        "l0c_tile_bytes": base_m * base_n * 4, "double_buffer": True,
        "epilogue": epi, "epilogue_unit": "fixpipe" if fixpipe else "vector",
        "isPertoken": pertoken is not None,
        "isPerTensor": int(scale.shape[0]) == 1,
        "ub_tile_elems": 0 if fixpipe else base_m * base_n // 2,     # per AIV (two AIVs per AIC)
        "macs": nbatch * M * N * K,
    }
    # Tiling keys are not reproduced; 0 = fixpipe cube kernel, 1 = mix kernel with a vector epilogue.
    return Plan(op=OP_QMM, soc=soc, kernel="QuantBatchMatmulV3", tiling_key=0 if fixpipe else 1,
                block_dim=block_dim, core_type=core_type, tiles=tiles,
                inputs={"x1": _spec(x1), "x2": _spec(x2), "scale": _spec(scale), "offset": _spec(offset),
                        "pertoken_scale": _spec(pertoken), "bias": _spec(bias)},
                outputs={"y": TensorSpec(out_shape, out)},
                attrs={"output_dtype": out, "int4": int4},
                notes="base block sizes are an estimate after the vendor basic tiling; "
                      "block_dim = min(AIC cores, output blocks)")


def _spec(x):
    if x is None:
        return None
    return x if isinstance(x, TensorSpec) else TensorSpec(tuple(x.shape), x.dtype)


def _ceil_to(v, a):
    return -(-int(v) // a) * a


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


# --------------------------------------------------------------------------- emulator
def npu_quant_matmul(x1, x2, scale, *, offset=None, pertoken_scale=None, bias=None, output_dtype=None,
                     product: str = "atlas-a2") -> np.ndarray:
    """torch_npu.npu_quant_matmul: y = epilogue(x1 @ x2) with an exact int32 accumulator.

    x1 [..., m, k], x2 [..., k, n] int8 (or int32 holding 8 int4 each, LSB nibble first:
    x1 [m, k // 8], x2 [k, n // 8]); batch dims broadcast; 2 to 6 dims; last dims <= 65535.
    scale (1,) or (n,): int64 (npu_trans_quant_param), float32 or bfloat16; offset (1,)/(n,) float32
    (int8 output only); pertoken_scale (m,) float32; bias (n,) or (batch, 1, n).
    output_dtype: int8 (default), float16, bfloat16, int32. Kernel: QuantBatchMatmulV3 on Atlas A2/A3
    (DAV_2201); the same fixpipe arithmetic is assumed on Atlas inference (310P) (table 1 combos only).
    Epilogues (ARITHMETIC.md 4.2-4.3): see the module docstring. Documented choices:
      * float32 scale with int8/fp16 output and no pertoken: converted by npu_trans_quant_param(scale,
        offset) first (torch_npu does this on the host), so only 19 scale bits count.
      * int64 scale together with a separate offset: the A2/A3 kernel never reads the offset tensor
        (only bits 37..45 of the int64 reach the fixpipe), so it is ignored here too, with a warning.
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
    if call.epilogue in ("req8", "deqf16"):
        if call.scale_dtype == "float32":
            q = npu_trans_quant_param(scale, offset if call.epilogue == "req8" else None, product=soc)
        else:
            q = scale.astype(np.int64).view(np.uint64)
            bad = (q & np.uint64(_RESERVED_BITS)) != 0
            if np.any(bad):
                i = int(np.argmax(bad))
                raise invalid(OP_QMM, "scale", f"int64 quant parameter {int(q[i]):#x} (index {i}) sets bits "
                              "32..36 or 47..63, which npu_trans_quant_param never sets (N shift / MCB "
                              "are not modelled)", p)
            if offset is not None:
                warnings.warn("npu_quant_matmul: with an int64 scale the A2/A3 kernel reads the offset only "
                              "from bits 37..45 of the scale; the separate offset tensor is ignored "
                              "(fold it in with npu_trans_quant_param(scale, offset))", RuntimeWarning,
                              stacklevel=2)
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


def _gemm_path() -> int:
    """Id of the GEMM path to run: NPUSIM_GEMM_SIMD if set, else the fastest this build has for this CPU."""
    avail = _k.simd_paths()
    want = os.environ.get("NPUSIM_GEMM_SIMD", "") or avail[-1]
    if want not in avail:
        raise ValueError(f"NPUSIM_GEMM_SIMD={want!r}: this build and CPU offer {', '.join(avail)}")
    return _k.SIMD_PATHS.index(want)


# --------------------------------------------------------------------------- LinearA8W8Quant
class LinearA8W8Quant:
    """torch_npu.contrib.module.LinearA8W8Quant: a quantized linear layer over npu_quant_matmul.

    Holds weight [out_features, in_features] int8, scale [out_features] float32, offset
    [out_features] float32 (if offset=True), bias [out_features] int32 (if bias=True); set them as
    arrays (any dtype npu_quant_matmul accepts for that role). layer(x1, pertoken_scale=None) computes
    npu_quant_matmul(x1, weight^T, scale', offset, pertoken_scale, bias, output_dtype), where a float32
    scale is first packed with npu_trans_quant_param(scale, offset) (ARITHMETIC.md 4.6, so the
    per-channel scale is the 19-bit truncated one). As seed 003 states, x1 and weight are int8 and
    output_dtype is int8, float16 or bfloat16 (int8/float16 on Atlas inference). Deviation: the packing is skipped when the output
    goes through the vector epilogue (bf16/int32 output or pertoken_scale), where an int64 scale is
    not allowed at all; in every other case the result is identical to packing always.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, offset: bool = False,
                 pertoken_scale: bool = False, output_dtype=None, *, product: str = "atlas-a2"):
        op = "LinearA8W8Quant"
        self.in_features = _checks.int_attr(op, "in_features", in_features)
        self.out_features = _checks.int_attr(op, "out_features", out_features)
        if self.in_features <= 0 or self.out_features <= 0:
            raise invalid(op, "in_features/out_features", "must be positive")
        self.product = product
        self.output_dtype = output_dtype
        self.use_pertoken = bool(pertoken_scale)
        self.weight = np.zeros((self.out_features, self.in_features), np.int8)
        self.scale = np.ones(self.out_features, np.float32)
        self.offset = np.zeros(self.out_features, np.float32) if offset else None
        self.bias = np.zeros(self.out_features, np.int32) if bias else None

    def __call__(self, x1, pertoken_scale=None) -> np.ndarray:
        op = "LinearA8W8Quant"
        if self.use_pertoken and pertoken_scale is None:
            raise nullptr(op, "pertoken_scale", self.product)
        if not self.use_pertoken and pertoken_scale is not None:
            raise invalid(op, "pertoken_scale", "was given but the layer was built with pertoken_scale=False",
                          self.product)
        _checks.data_tensors(op, self.product, x1=x1, pertoken_scale=pertoken_scale, weight=self.weight,
                             scale=self.scale, offset=self.offset, bias=self.bias)
        soc = _checks.resolve_product(op, self.product, SUPPORTED)
        w = _checks.tensor(op, "weight", self.weight, self.product)
        if w.ndim < 2:
            raise invalid(op, "weight", f"must be [out_features, in_features], got shape {w.shape}", self.product)
        # seed 003: this module is A8W8 only (int4-packed int32 goes through npu_quant_matmul directly)
        _checks.dtype_in(op, "x1", _checks.tensor(op, "x1", x1, self.product), ("int8",), soc.soc)
        _checks.dtype_in(op, "weight", w, ("int8",), soc.soc)
        scale = _checks.tensor(op, "scale", self.scale, self.product)
        out = _out_dtype_name(self.output_dtype, soc)
        if out == "int32":   # seed 003 output_dtype: int8/float16/bfloat16 (npu_quant_matmul adds int32)
            raise invalid(op, "output_dtype", "must be int8, float16 or bfloat16 for LinearA8W8Quant, got int32",
                          soc.soc)
        folded = out in ("int8", "float16") and pertoken_scale is None and scale.dtype == np.float32
        if folded:
            scale = npu_trans_quant_param(scale.reshape(-1), self.offset, product=self.product)
        return npu_quant_matmul(x1, w.swapaxes(-1, -2), scale, offset=None if folded else self.offset,
                                pertoken_scale=pertoken_scale, bias=self.bias, output_dtype=self.output_dtype,
                                product=self.product)

    forward = __call__

    def __repr__(self) -> str:
        return (f"LinearA8W8Quant(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, offset={self.offset is not None}, "
                f"pertoken_scale={self.use_pertoken}, output_dtype={self.output_dtype})")
