"""DynamicQuantV2: per-token dynamic quantization (torch_npu.npu_dynamic_quant, aclnnDynamicQuantV2).

Spec: shared/seeds/000 (aclnnDynamicQuantV2 doc) and shared/spec/ARITHMETIC.md section 1. The tiling
rules (which kernel variant runs, block dim, tile sizes) follow the vendor tiling source
hicann/ops-nn quant/dynamic_quant/op_host/dynamic_quant_tiling.cpp (A2/A3) and
dynamic_quant_tiling_arch35.cpp (Ascend 950), read through the `search` tool.

Two faces over one core:
    y, scale = npusim.npu_dynamic_quant(x, smooth_scales=None, group_index=None, dst_type=np.int8, product=...)
    y, scale, offset = npusim.npu_dynamic_quant_asymmetric(...)
    ws, ex = npusim.aclnn.aclnnDynamicQuantV2GetWorkspaceSize(x, smooth, group, dstType, yOut, scaleOut,
                                                             offsetOut, product=...)
    npusim.aclnn.aclnnDynamicQuantV2(workspace, ws, ex)

hifloat8 output (dstType 34, Ascend 950 only, beyond the seed): the arch35 kernels
(op_kernel/arch35/dynamic_quant_regbase_full_load.h and siblings) divide by scale = max * f32(1/32768)
(asymmetric: range * f32(1/65536), offset constant 32768; dstTypeMax defaults to 32768 in
dynamic_quant_tiling_arch35.cpp when the V2 call passes none) and cast with castTraitF32toh8 =
{SatMode::SAT, CAST_ROUND}; the HiFloat8 cast is npusim.formats' (ties away from zero, NaN -> 0 when
saturating, per asc-devkit asc_float2hif8.md). The vendor golden (dynamic_quant_v2/tests/assets/golden.py)
casts with en_dtypes' non-saturating astype: it agrees except that a NaN quotient gives NaN (0x80) there.

Products: atlas-a3, atlas-a2, atlas-inference, atlas-training (seed 000's table) and ascend-950pr /
ascend-950dt. The seed's table does not list Ascend 950; its support comes from ARITHMETIC.md 1.0/1.3
(the aclnn layer always runs DynamicQuantV2 on the RegBase SoCs) because the issue asks for it.
Atlas 200I/500 A2 is not supported (seed).

Special values (the kernels' behaviour is undocumented; ARITHMETIC 1.1 step 8, 1.8):
* a NaN anywhere in a row makes its max (and min) NaN: scale (and offset) are NaN and y is 0
  (Cast NaN -> int gives 0; the 950 fp8 Cast is saturating, SatMode::SAT without CTRL[50], which
  gives +0 for NaN per asc-devkit's Reg-API Cast.md, so fp8 y is 0 too, as for every NaN quotient:
  inf / inf, or v / 0 + -inf in an asymmetric row of equal values). Exception, A2/A3 asymmetric: the scalar
  clamp GetMax(s, 1e-12f) is `s > 1e-12f ? s : 1e-12f` (dynamic_quant_base.h), so a NaN s (NaN
  row, or an all-+inf / all--inf row where mx - mn = inf - inf) gives scale 1e-12; offset is then
  NaN (NaN row) or -inf / +inf (127 - (+-inf)), y is 0.
* Not modelled (chunked row reductions, keys 6/8 on A2/A3): their scalar max/min start at -FLT_MAX /
  +FLT_MAX and combine chunks with `a > b ? a : b`, so an all-+inf row gives min FLT_MAX there and a
  NaN chunk is dropped when a later chunk follows; npusim uses the whole-row result of the other keys.
* all-zero rows where the kernel would compute 0*inf or 0/0 (symmetric everywhere; asymmetric on
  950): y is 0, scale is what the formula gives (0), the 950 asymmetric offset is NaN (0/0).
  A2/A3 asymmetric has no NaN there (scale clamps to 1e-12): scale 1e-12, offset 127, y 127.
* NaN scale/offset values are written as the positive quiet NaN 0x7FC00000 (sign unspecified).
* +-inf in a row: symmetric scale is inf and every y is 0 (v * 127/inf = 0, inf * 0 = NaN -> 0).
* Empty tensors: nothing is launched and the workspace is 0 on every product (the aclnn layer returns for
  an empty x before any tiling; the A2/A3/310P tilings' rowLen 0 check and the 950 EMPTY_TENSOR template
  are reached only from graph mode): zero rows give empty outputs; for rows of length 0 the torch face
  returns scale (and offset) 0, the aclnn face leaves scaleOut/offsetOut as they were.
* Integer results saturate to the output range (int8 [-128, 127], int4 [-8, 7]): e.g. a bf16 row
  whose max is below 127/FLT_MAX gives q = inf and y = +-127 / -128 (the hardware's int16/int32 ->
  half -> int8 chain saturates; ARITHMETIC "General hardware facts").
* Atlas inference / training: a row whose max is below 127/65504 (about 1.94e-3) has a factor 127/max
  beyond fp16. These chips have only the saturation overflow mode (CANN's aclrtFloatOverflowMode doc:
  "for Atlas inference products and Atlas training products, only the saturation mode is supported"; an
  inf result becomes the largest value), so half(q) is 65504 and y = round_half_away(fp16(x * 65504)):
  [1e-3, -1e-3, 5e-4] gives [66, -66, 33] with scale max/127. (IEEE's inf would give +-127 / -128.) The
  special values above (NaN, +-inf in x) follow the other chips' IEEE rules there too: how saturation
  mode treats an inf or NaN input, rather than an overflow, is not documented.
"""
from __future__ import annotations

import math

import numpy as np

from npusim import _checks, _parallel, formats
from npusim._kernels import dynamic_quant as _k
from npusim.aclnn import aclnn_api, get_workspace_size, run_executor
from npusim.errors import invalid, params_named
from npusim.plan import Plan, TensorSpec, launched, planner, spec_of

__all__ = ["npu_dynamic_quant", "npu_dynamic_quant_asymmetric"]

SYS_WORKSPACE = 16 * 1024 * 1024     # the tilings' workspace request (dynamic_quant_tiling.cpp SYS_WORKSPACE_SIZE)
SUPPORTED_PRODUCTS = ("atlas-a3", "atlas-a2", "atlas-inference", "atlas-training", "ascend-950pr", "ascend-950dt")
# the Atlas inference/training kernels are symmetric only (seed 000)
ASYMMETRIC_PRODUCTS = ("atlas-a3", "atlas-a2", "ascend-950pr", "ascend-950dt")
ACLNN_OP = "aclnnDynamicQuantV2"

# aclnn dstType enum (ge::DataType) -> output kind
ACLNN_DST_TYPES = {2: "int8", 29: "int4", 3: "int32", 34: "hifloat8", 35: "float8_e5m2", 36: "float8_e4m3fn"}
_Y_BY_FAMILY = {"a2a3": ("int8", "int4", "int32"), "310p910": ("int8",),
                "950": ("int8", "int4", "int32", "float8_e4m3fn", "float8_e5m2", "hifloat8")}
# per output: DTMAX (symmetric multiplier, asymmetric offset constant), asymmetric range, saturation range
_DST_CONST = {"int8": (127.0, 255.0, -128.0, 127.0), "int4": (7.0, 15.0, -8.0, 7.0),
              "int32": (7.0, 15.0, -8.0, 7.0), "float8_e4m3fn": (448.0, 896.0, 0.0, 0.0),
              "float8_e5m2": (57344.0, 114688.0, 0.0, 0.0),
              # V2 has no dst_type_max attribute: the arch35 tiling uses 32768 (HIFLOAT8_MAX_VALUE), the range 2x
              "hifloat8": (32768.0, 65536.0, 0.0, 0.0)}
MAX_EXPERTS = 1024

# A2/A3 tiling constants (dynamic_quant_tiling.cpp)
_RESERVED_UB = 1024
_KEY_CLASS = {100: "DynamicQuantSingleRow", 10: "DynamicQuantMultiRow", 2: "DynamicQuantDbOpt",
              3: "DynamicQuantDbOpt", 0: "DynamicQuant", 1: "DynamicQuant", 6: "DynamicQuantLargeShapeOpt",
              7: "DynamicQuantMoe", 8: "DynamicQuantMoeLargeShape"}
# 950 template quantMode values (op_kernel/arch35/dynamic_quant_struct.h)
_TPL_950 = {0: "COMMON_FULL_LOAD", 1: "COMMON_LARGE_SHAPE", 2: "MOE_FULL_LOAD", 3: "MOE_LARGE_SHAPE",
            6: "EMPTY_TENSOR", 12: "PERTEN_LARGE_MULTICORE"}


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _align(a: int, b: int) -> int:
    return _ceil(a, b) * b


# ------------------------------------------------------------------ validation
def _dst_from_torch(op, dst_type, product) -> str:
    """Canonical output kind from a torch_npu-style dst_type (dtype, type or name)."""
    if dst_type is None:
        return "int8"
    if isinstance(dst_type, str):
        key = dst_type.strip().lower().removeprefix("torch.")
        if key == "quint4x2":
            return "int32"
        if formats.is_hifloat8(key):
            return "hifloat8"
    try:
        name = formats.dtype_name(formats.as_dtype(dst_type))
    except (TypeError, ValueError):
        raise invalid(op, "dst_type", f"unknown dtype {dst_type!r}; use int8, int4, int32/'quint4x2', "
                      "float8_e4m3fn, float8_e5m2 or 'hifloat8'", product) from None
    if name not in _DST_CONST:
        raise invalid(op, "dst_type", f"must be int8, int4, int32 (packed int4, 'quint4x2'), float8_e4m3fn, "
                      f"float8_e5m2 or 'hifloat8', got {name}", product)
    return name


def _validate(op, x, smooth, group, dst, symmetric, soc):
    """Every shape/dtype rule of seed 000 and the vendor tiling; returns (R, H, x dtype name, E)."""
    prod = soc.soc
    fam = soc.family
    xdt = _checks.dtype_in(op, "x", x, ("float16",) if fam == "310p910" else ("float16", "bfloat16"), prod)
    if not 1 < x.ndim < 9:
        raise invalid(op, "x", f"must have 2 to 8 dimensions, got shape {tuple(x.shape)}", prod)
    H = int(x.shape[-1])
    R = math.prod(int(d) for d in x.shape[:-1])
    if dst not in _Y_BY_FAMILY[fam]:
        what = "int32 (8 packed int4: torch.quint4x2)" if dst == "int32" else dst
        raise invalid(op, "dst_type", f"output {what} is not supported; allowed: {', '.join(_Y_BY_FAMILY[fam])}",
                      prod)
    if dst == "int4" and H % 2:
        raise invalid(op, "x", f"last dimension must be even for int4 output, got {H}", prod)
    if dst == "int32" and H % 8:
        raise invalid(op, "x", f"last dimension must be divisible by 8 for int32 (packed int4) output, got {H}",
                      prod)
    if fam == "310p910":
        if smooth is not None:
            raise invalid(op, "smooth_scales", "must be None on this product (reserved parameter)", prod)
        if group is not None:
            raise invalid(op, "group_index", "must be None on this product (reserved parameter)", prod)
        if not symmetric:
            raise invalid(op, "offset", "asymmetric quantization is not supported on this product "
                          "(symmetric only; pass no offset)", prod)
        if H % 32:      # seed 000 states it for Atlas inference; the vendor tiling (and doc) for training too
            raise invalid(op, "x", f"last dimension must be a multiple of 32 on Atlas inference and training "
                          f"products, got {H}", prod)
    E = 0
    if group is not None and smooth is None:
        raise invalid(op, "group_index", "requires smooth_scales (one smooth row per expert)", prod)
    if smooth is not None:
        sdt = _checks.dtype_in(op, "smooth_scales", smooth, ("float16", "bfloat16"), prod)
        if sdt != xdt:
            raise invalid(op, "smooth_scales", f"dtype must equal the dtype of x ({xdt}), got {sdt}", prod)
        if group is None:
            if smooth.ndim != 1 or int(smooth.shape[0]) != H:
                raise invalid(op, "smooth_scales", f"shape must be [{H}] (the last dim of x) without group_index, "
                              f"got {tuple(smooth.shape)}", prod)
        else:
            # int32 in the doc; the aclnn layer (GROUP_INDEX_DTYPE_SUPPORT_LIST) and the tiling take int64 too
            _checks.dtype_in(op, "group_index", group, ("int32", "int64"), prod)
            if group.ndim != 1:
                raise invalid(op, "group_index", f"must be 1-D, got shape {tuple(group.shape)}", prod)
            E = int(group.shape[0])
            if not 1 <= E <= MAX_EXPERTS:
                raise invalid(op, "group_index", f"number of experts must be in [1, {MAX_EXPERTS}], got {E}", prod)
            if smooth.ndim != 2 or tuple(int(d) for d in smooth.shape) != (E, H):
                raise invalid(op, "smooth_scales", f"shape must be [{E}, {H}] (experts, last dim of x) with "
                              f"group_index, got {tuple(smooth.shape)}", prod)
    return R, H, xdt, E


def _check_group_values(op, group, R, prod):
    """group_index holds cumulative row ends (ARITHMETIC 1.5): non-decreasing, >= 0, last == rows."""
    g = group.astype(np.int64)
    if g[0] < 0 or np.any(np.diff(g) < 0):
        raise invalid(op, "group_index", "must be non-decreasing cumulative row ends starting at >= 0 "
                      f"(e.g. np.cumsum(tokens_per_expert)), got {g[:8].tolist()}...", prod)
    if g[-1] != R:
        raise invalid(op, "group_index", f"last entry must equal the number of rows of x ({R}), got {int(g[-1])}",
                      prod)


# ------------------------------------------------------------------ tiling
def _tiling_a2(soc, R, H, xdt, has_smooth, E, dst, symmetric):
    """A2/A3 tiling, dynamic_quant_tiling.cpp RunFusionKernelTiling: key 100, 10, else 0/1/2/3/6/7/8."""
    V, ub = soc.aiv, soc.tiling_ub_bytes
    t = dict(rowNum=R, rowLen=H, groupNum=E, hasSmooth=int(has_smooth or E > 0), ubSize=ub,
             innerLoopEle=0, innerLoopTimes=0, innerLoopTail=0, useDb=0)
    # key 100 (SetSpecialTilingForDs): symmetric int8, no group, rowLen in {4096, 5120, 10240}, rows in [4, 384]
    if symmetric and E == 0 and dst == "int8" and H in (4096, 5120, 10240) and 4 <= R <= 384:
        per_ub = min(16384 // H, R)
        loops = _ceil(R, per_ub)
        tmp = _ceil(loops, V)
        cores = _ceil(loops, tmp)
        tmp = _ceil(loops, cores)
        t.update(coreNum=cores, headCoreNum=cores - 1, rowPerHeadCore=tmp * per_ub,
                 rowPerTailCore=max(R - (cores - 1) * tmp * per_ub, 0),
                 multiRowNumHeadCore=per_ub, multiRowNumTailCore=per_ub, ubElements=16384)
        return 100, cores, t
    # key 10 (CalcTilingForMultiRow): symmetric, no group, 128 <= rowLen <= maxUbLen, rowLen % 8 == 0
    if symmetric and E == 0:
        max_ub = ub - _RESERVED_UB - (256 + 64 + 12 * 64 * 4)
        max_ub = max_ub // (15 if has_smooth else 11) // 64 * 64
        max_ub = min(max_ub, 255 * 64)
        if 128 <= H <= max_ub and H % 8 == 0:
            per_ub = min(max_ub // H, R)
            loops = R // per_ub if per_ub else 0
            per_core = loops // V
            if per_core < 1:
                cores = loops
                per_core = 1 if cores else 0
                cores = cores or 1
            else:
                cores = loops // per_core
            cores = min(V, cores)
            extra = R - cores * per_core * per_ub
            t.update(coreNum=cores, headCoreNum=extra % cores,
                     rowPerHeadCore=per_core * per_ub + extra // cores + 1,
                     rowPerTailCore=per_core * per_ub + extra // cores, perCoreLoop=per_core,
                     multiRowNumHeadCore=per_ub, multiRowNumTailCore=per_ub, ubElements=max_ub)
            return 10, cores, t
    # generic: one task per row, rows split over the vector cores
    cores = max(min(V, R), 1)
    head, per_head, per_tail = R % cores, _ceil(R, cores), R // cores
    a = _align(H, 16)
    if E > 0:
        per_row_db = 0
        per_row = _align(E, 8) * 4 + 17 * a
    elif has_smooth:
        per_row_db, per_row = 19 * a, 17 * a
    else:
        per_row_db, per_row = 13 * a, 11 * a
    max_use = ub - _RESERVED_UB
    avail = max_use // per_row
    use_db = True
    if avail == 0:                                      # a row does not fit: split it into chunks
        ele = max_use // 19 // 128 * 128
        t.update(innerLoopEle=ele, innerLoopTimes=H // ele, innerLoopTail=H % ele)
        avail = 1
    elif E == 0:
        if per_row_db < max_use:
            avail = max(avail, 1)
        else:
            use_db, avail = False, 1
    else:
        use_db = False
    if E > 0:
        key = 8 if t["innerLoopTimes"] > 0 else 7
    elif t["innerLoopTimes"] > 0:
        key = 6
    elif use_db:
        key = 2 if xdt == "bfloat16" else 3
    else:
        key = 0 if xdt == "bfloat16" else 1
    t.update(coreNum=cores, headCoreNum=head, rowPerHeadCore=per_head, rowPerTailCore=per_tail,
             multiRowNumHeadCore=min(255, avail, per_head), multiRowNumTailCore=min(255, avail, per_tail),
             useDb=int(use_db and key in (2, 3)), ubBytesPerRow=per_row_db if key in (2, 3) else per_row)
    return key, cores, t


def _tiling_950(soc, R, H, has_smooth, E, symmetric):
    """Ascend 950 RegBase tiling, dynamic_quant_tiling_arch35.cpp CalculateCoreNum/CalculateTilingData.

    The tiling key is a template key of (useDb, quantMode, hasSmooth, isSymmetrical); it is encoded
    here as useDb | quantMode << 1 | hasSmooth << 5 | isSymmetrical << 6 (declaration order and bit
    widths 1/4/1/1 of dynamic_quant_struct.h; the packing order is our assumption).
    PERTEN_LARGE_MULTICORE (at most V / 2 rows, each too long for 4 UBs): every row is split over V // R
    cores (dynamic_quant_regbase_perten_large_multicore.h: block b takes slice b % headCoreNum of row
    b // headCoreNum; the partial maxima meet in a workspace after a SyncAll); rowPerHeadCore /
    rowPerTailCore are then a slice's elements and multiRowNumHeadCore the slices of the longer length, as
    that kernel reads them. The slice lengths are ours (even, 16-element aligned): the tiling function that
    sets them was not read [E]."""
    V, ub = soc.aiv, soc.tiling_ub_bytes
    smooth = int(has_smooth or E > 0)
    t = dict(rowNum=R, rowLen=H, groupNum=E, hasSmooth=smooth, ubSize=ub, innerLoopEle=0, innerLoopTimes=0,
             innerLoopTail=0)
    head, per_head, per_tail = R % V, _ceil(R, V), R // V
    cores = max(min(V, R), 1)
    a = _align(H, 16)
    max_use = ub - _RESERVED_UB
    size = a * (smooth * 2 + 7 + 4)
    size_db = a * (smooth * 4 + 14 + 8)
    if size > max_use:
        use_db = 1
        if E == 0 and R <= V // 2 and size >= 4 * max_use:
            mode = 12
        else:
            mode = 3 if E else 1
        ele = (max_use - _RESERVED_UB) // (2 * (smooth * 2 + 4)) // 128 * 128
        t.update(innerLoopEle=ele, innerLoopTimes=H // ele, innerLoopTail=H % ele)
        rows_h, rows_t = min(1, per_head), min(1, per_tail)
        bytes_row = 2 * (smooth * 2 + 4) * ele
    else:
        use_db = int(size_db <= max_use)
        avail = max_use // (size_db if use_db else size)
        rows_h, rows_t = min(avail, 255, per_head), min(avail, 255, per_tail)
        mode = 2 if E else 0
        bytes_row = size_db if use_db else size
    t.update(coreNum=cores, headCoreNum=head, rowPerHeadCore=per_head, rowPerTailCore=per_tail,
             multiRowNumHeadCore=rows_h, multiRowNumTailCore=rows_t, useDb=use_db, quantMode=_TPL_950[mode],
             ubBytesPerRow=bytes_row)
    if mode == 12:              # each row's slices on cores of their own (see the docstring)
        per_token = V // R
        slice_len = _align(_ceil(H, per_token), 16)
        cores = per_token * R
        t.update(coreNum=cores, headCoreNum=per_token, multiRowNumHeadCore=per_token - 1,
                 rowPerHeadCore=slice_len, rowPerTailCore=H - (per_token - 1) * slice_len)
    key = use_db | mode << 1 | smooth << 5 | int(symmetric) << 6
    return key, cores, t


def _tiling_310p(soc, R, H):
    """Atlas inference / training (DAV_2002 / DAV_1001), dynamic_quant_tiling_310P.cpp: numCopyRow rows per
    UB pass from the UB size, block_dim = every AI Core (GetCoreNumAiv, also when rows are fewer),
    key 10000 + 100 when rows split evenly into passes and H <= 4096 (DynamicQuantAlign310p), else
    + 1000 (unaligned tail rows), + 1 when H > 4096 (columns split into 4096-element chunks).
    The vendor tiling rejects H % 32 != 0 on both products (the seed states the rule for Atlas inference,
    the ops-nn doc for both), and so does npusim."""
    cores = soc.aiv
    size_x = _align(H, 16)
    copy_rows = (soc.tiling_ub_bytes - size_x * 2 - 10240) // (size_x * 5)
    row_suit = (213 - size_x * 2 // 7) % (1 << 32)        # uint32 arithmetic (wraps for wide rows)
    row_suit -= row_suit % 8
    if copy_rows > 64 and size_x >= 512:
        copy_rows = 64
    elif copy_rows > row_suit and row_suit > 8 and size_x >= 64:
        copy_rows = row_suit
    elif copy_rows > 192 and 8 < size_x < 64:
        copy_rows = 192
    elif copy_rows > 8:
        copy_rows -= copy_rows % 8
    per_core = _ceil(R, cores)
    if copy_rows >= 8 and per_core <= 8:
        copy_rows = 8
    elif copy_rows >= _align(per_core, 8):
        copy_rows = _align(per_core, 8)
    inner = dict(innerLoopEle=0, innerLoopTimes=0, innerLoopTail=0)
    if H > 4096:
        copy_rows = 8
        inner = dict(innerLoopEle=4096, innerLoopTimes=H // 4096, innerLoopTail=H % 4096)
    copy_rows = max(copy_rows, 1)
    patches = R // copy_rows
    last_tail = R % copy_rows
    aligned = last_tail == 0 and copy_rows % 8 == 0 and H % 32 == 0 and H <= 4096
    key = 10000 + (100 if aligned else 1000) + (1 if H > 4096 else 0)
    t = dict(rowNum=R, rowLen=H, coreNum=cores, sizeX=size_x, numCopyRow=copy_rows,
             numHeadCore=patches % cores, numTailTimes=patches // cores, numHeadTimes=patches // cores + 1,
             numLastTailRow=last_tail, useDb=0, **inner)
    return key, cores, t


def _make_plan(op, x, smooth_scales, group_index, dst, symmetric, product):
    soc = _checks.resolve_product(op, product, SUPPORTED_PRODUCTS)
    x = _checks.tensor(op, "x", x, soc.soc)
    smooth = _checks.tensor(op, "smooth_scales", smooth_scales, soc.soc, optional=True)
    group = _checks.index_tensor(op, "group_index", group_index, soc.soc, optional=True)
    R, H, xdt, E = _validate(op, x, smooth, group, dst, symmetric, soc)
    fam = soc.family
    if R * H == 0:
        # an empty x: the aclnn layer (aclnn_dynamic_quant.cpp, x->IsEmpty()) returns before any tiling, with
        # workspace 0, on every product; nothing is launched
        key, cores, kernel = 0, 0, "dynamic_quant" if symmetric else "dynamic_quant_v2"
        tiles = dict(rowNum=R, rowLen=H, groupNum=E, hasSmooth=int(smooth is not None), coreNum=0)
        variant = "EmptyInput"
    elif fam == "a2a3":
        key, cores, tiles = _tiling_a2(soc, R, H, xdt, smooth is not None, E, dst, symmetric)
        kernel = "dynamic_quant" if symmetric else "dynamic_quant_v2"
        variant = _KEY_CLASS[key]
        if symmetric:
            tiles["scaleFormula"] = "m*f32(1/DTMAX)" if key in (2, 3, 10, 100) else "1/f32(DTMAX/m)"
    elif fam == "950":
        key, cores, tiles = _tiling_950(soc, R, H, smooth is not None, E, symmetric)
        kernel, variant = "dynamic_quant_v2", "DynamicQuantRegbase" + tiles["quantMode"].title().replace("_", "")
    else:
        key, cores, tiles = _tiling_310p(soc, R, H)
        kernel, variant = "dynamic_quant", {10100: "DynamicQuantAlign310P", 11000: "DynamicQuantUnalign310P",
                                            11001: "DynamicQuantUnalignLarge310P"}[key]
    tiles["variant"] = variant
    xs = spec_of(x)
    ydt = {"int4": formats.int4, "hifloat8": np.dtype(np.uint8)}[dst] if dst in ("int4", "hifloat8") \
        else formats.as_dtype(dst)
    yshape = xs.shape[:-1] + (H // 8,) if dst == "int32" else xs.shape
    # fp32 per row: for rows of 1 fp16 element these outgrow x
    outs = {"y": TensorSpec(yshape, ydt), "scale": _checks.out_spec(op, "scale", xs.shape[:-1], np.float32, soc.soc)}
    if not symmetric:
        outs["offset"] = _checks.out_spec(op, "offset", xs.shape[:-1], np.float32, soc.soc)
    # the plan names the operator it runs, whichever face called (`op`, in the errors above, may be the aclnn call)
    plan = Plan(op="npu_dynamic_quant" if symmetric else "npu_dynamic_quant_asymmetric", soc=soc, kernel=kernel,
                tiling_key=int(key), block_dim=int(cores),
                core_type="aicore" if fam == "310p910" else "aiv", tiles=tiles,
                inputs={"x": xs, "smooth_scales": spec_of(smooth), "group_index": spec_of(group)},
                outputs=outs, attrs={"dst_type": dst, "symmetric": bool(symmetric)},
                notes=f"{variant}; block_dim = rows split over {soc.aiv} "
                f"{'vector cores' if soc.core_layout == 'split' else 'cores'}" if cores else
                "empty x: the aclnn layer returns before any tiling; nothing is launched")
    return plan, (x, smooth, group, R, H, xdt, E)


@planner("npu_dynamic_quant", SUPPORTED_PRODUCTS)
def plan_npu_dynamic_quant(x, smooth_scales=None, group_index=None, dst_type=np.int8, product="atlas-a2") -> Plan:
    """Plan of npu_dynamic_quant (symmetric). tiles keys, in the vendor tiling data's terms:
    rowNum, rowLen, coreNum, headCoreNum (cores doing one extra row / the non-tail cores for key 100),
    rowPerHeadCore, rowPerTailCore, multiRowNumHeadCore/TailCore (rows per UB pass),
    innerLoopEle/innerLoopTimes/innerLoopTail (row split into UB chunks; keys 6/8, 950 large shape),
    groupNum (experts), hasSmooth, useDb (double buffering), ubSize, ubBytesPerRow or ubElements
    (UB per row / elements per UB pass), perCoreLoop (key 10), scaleFormula (A2/A3 symmetric),
    quantMode (950 template), variant (kernel class); Atlas inference / training use the vendor's own
    names: sizeX, numCopyRow (rows per UB pass), numHeadCore, numHeadTimes, numTailTimes, numLastTailRow."""
    op = "npu_dynamic_quant"
    return _make_plan(op, x, smooth_scales, group_index, _dst_from_torch(op, dst_type, str(product)),
                      True, product)[0]


@planner("npu_dynamic_quant_asymmetric", ASYMMETRIC_PRODUCTS)
def plan_npu_dynamic_quant_asymmetric(x, smooth_scales=None, group_index=None, dst_type=np.int8,
                                      product="atlas-a2") -> Plan:
    """Plan of npu_dynamic_quant_asymmetric; tiles keys as plan_npu_dynamic_quant."""
    op = "npu_dynamic_quant_asymmetric"
    return _make_plan(op, x, smooth_scales, group_index, _dst_from_torch(op, dst_type, str(product)),
                      False, product)[0]


# ------------------------------------------------------------------ execution
def _threads(n_elements: int) -> int:
    """Threads for the kernel (it sizes one row buffer per thread): one for small inputs, else
    _parallel.kernel_threads()."""
    return 1 if n_elements < (1 << 16) else _parallel.kernel_threads()


def _execute(plan: Plan, ctx, y_out, scale_out, offset_out):
    """Run the kernel for a validated plan and write the outputs (all allocated by the caller)."""
    x, smooth, group, R, H, xdt, E = ctx
    if R == 0 or H == 0:        # an empty x launches nothing (module docstring): no writes
        return
    dst, symmetric = plan.attrs["dst_type"], plan.attrs["symmetric"]
    fam = {"a2a3": 0, "950": 1, "310p910": 2}[plan.soc.family]
    dt_max, rng, lo, hi = _DST_CONST[dst]
    out_kind = {"float8_e4m3fn": 1, "float8_e5m2": 2, "hifloat8": 3}.get(dst, 0)
    x, = _checks.unshared((x,), (y_out, scale_out, offset_out))     # aclnn outputs may alias x
    x2 = np.ascontiguousarray(x).reshape(R, H).view(np.uint16)
    sm = (np.ascontiguousarray(smooth).astype(np.float32).reshape(-1, H) if smooth is not None
          else np.empty((0, max(H, 1)), np.float32))
    if E > 0:
        # 1-based row r uses the first expert e with group_index[e] >= r (dynamic_quant_moe.h GetSmoothIndex)
        experts = np.searchsorted(group.astype(np.int64), np.arange(1, R + 1), side="left").astype(np.int32)
    else:
        experts = np.empty(0, np.int32)
    direct = dst != "int32" and y_out.flags.c_contiguous          # write straight into the caller's array
    yb = y_out.view(np.uint8).reshape(R, H) if direct else np.empty((R, H), np.uint8)
    # fp32 outputs are written directly only when contiguous and aligned (typed pointers in the kernel)
    sc = (scale_out.reshape(R) if scale_out.flags.c_contiguous and scale_out.flags.aligned
          else np.empty(R, np.float32))
    of = (offset_out.reshape(R) if offset_out is not None and offset_out.flags.c_contiguous
          and offset_out.flags.aligned else np.empty(R, np.float32))
    scale_mode = 0 if plan.tiles.get("scaleFormula", "m*").startswith("m*") else 1
    _k.quant_rows(x2, xdt == "bfloat16", sm, experts, yb, sc, of, fam, bool(symmetric), scale_mode,
                  np.float32(dt_max), np.float32(1.0) / np.float32(dt_max), np.float32(rng),
                  np.float32(1.0) / np.float32(rng), out_kind, lo, hi, dst in ("int4", "int32"), _threads(R * H))
    if dst == "int32":
        in_place = y_out.flags.c_contiguous and y_out.flags.aligned
        packed = y_out.reshape(R, H // 8) if in_place else np.empty((R, H // 8), np.int32)
        _pack_nibbles(yb, packed)
        if not in_place:
            np.copyto(y_out, packed.reshape(y_out.shape))
    elif not direct:
        np.copyto(y_out, yb.reshape(y_out.shape).view(y_out.dtype))
    if not np.shares_memory(sc, scale_out):
        np.copyto(scale_out, sc.reshape(scale_out.shape))
    if offset_out is not None and not np.shares_memory(of, offset_out):
        np.copyto(offset_out, of.reshape(offset_out.shape))


def _pack_nibbles(nib: np.ndarray, words: np.ndarray, chunk_bytes: int = 1 << 20) -> None:
    """words[r] = int32 words of the nibble bytes nib[r] (element 8j+i at bits 4i..4i+3, as
    formats.pack_int4(..., "int32")), packed a block of rows at a time so that no input-sized
    temporaries are made."""
    R, H = nib.shape
    rows = max(1, chunk_bytes // max(H, 1))
    buf = np.empty((min(rows, R), H // 2), np.uint8)
    for a in range(0, R, rows):
        n = min(rows, R - a)
        np.left_shift(nib[a:a + n, 1::2], 4, out=buf[:n])
        np.bitwise_or(buf[:n], nib[a:a + n, 0::2], out=buf[:n])
        words[a:a + n] = buf[:n].view("<i4")


def _torch_face(op, x, smooth_scales, group_index, dst_type, symmetric, product):
    _checks.data_tensors(op, product, x=x, smooth_scales=smooth_scales, group_index=group_index)
    dst = _dst_from_torch(op, dst_type, str(product))
    plan, ctx = _make_plan(op, x, smooth_scales, group_index, dst, symmetric, product)
    if ctx[2] is not None:
        _check_group_values(op, ctx[2], ctx[3], plan.soc.soc)
    y = np.empty(plan.outputs["y"].shape, plan.outputs["y"].dtype)
    # zeros: rows of length 0 (Ascend 950) get no scale from the kernel; npusim returns 0, not garbage
    scale = np.zeros(plan.outputs["scale"].shape, np.float32)
    offset = None if symmetric else np.zeros(plan.outputs["offset"].shape, np.float32)
    _execute(plan, ctx, y, scale, offset)
    launched(plan)
    return (y, scale) if symmetric else (y, scale, offset)


def npu_dynamic_quant(x, smooth_scales=None, group_index=None, dst_type=np.int8, product="atlas-a2"):
    """Symmetric per-token dynamic quantization: returns (y, scale), scale float32 of shape x.shape[:-1].

    Per row v = f32(x) [* f32(smooth)], m = max|v|; which kernel runs follows the vendor tiling:
    * Atlas A2/A3 (kernel dynamic_quant, ARITHMETIC 1.1): y = rint(f32(v * f32(DTMAX/m))) with DTMAX 127
      (int8) or 7 (int4); scale = f32(m * f32(1/DTMAX)) for tiling keys 2/3/10/100, f32(1/q) for keys
      0/1/6/7/8 (every group_index call). See plan.tiling_key.
    * Ascend 950 (dynamic_quant_v2 arch35, 1.3): scale = f32(m * f32(1/DTMAX)), y = cast(f32(v / scale));
      DTMAX 448 / 57344 for float8_e4m3fn / float8_e5m2 (RNE, saturating), 32768 for hifloat8 (cast with
      CAST_ROUND, ties away from zero, saturating: a NaN quotient gives code 0). The hardware Div may differ
      by 1 ulp from the IEEE division emulated here (ARITHMETIC 1.3, 7.5).
    * Atlas inference / training (1.4): fp16 arithmetic, y = round_half_away(fp16(x * fp16(127/m))), the
      factor saturating at 65504 (these chips' only overflow mode; rows with m below 127/65504),
      scale = f32(m * f32(1/127)); fp16 x, int8 y, no smooth_scales / group_index.
    smooth_scales: [H] (same dtype as x) or, with group_index, [E, H]. group_index: int32 cumulative
    row ends (np.cumsum of rows per expert), last entry == rows of x, E <= 1024.
    dst_type: np.int8 / 'int8' (default), ml_dtypes.int4 / 'int4' (y int4, shape of x), 'int32' /
    'quint4x2' (y int32 with last dim H/8, 8 nibbles per word, element 8j+i at bits 4i..4i+3), and on
    Ascend 950 float8_e4m3fn / float8_e5m2 and 'hifloat8' (y uint8 HiFloat8 codes; decode them with
    npusim.formats.hifloat8_to_float32). Special values: see the module docstring.
    """
    return _torch_face("npu_dynamic_quant", x, smooth_scales, group_index, dst_type, True, product)


def npu_dynamic_quant_asymmetric(x, smooth_scales=None, group_index=None, dst_type=np.int8, product="atlas-a2"):
    """Asymmetric per-token dynamic quantization: returns (y, scale, offset), float32 of shape x.shape[:-1].

    * Atlas A2/A3 (kernel dynamic_quant_v2, ARITHMETIC 1.2): scale = max(f32((mx - mn) / 255), 1e-12),
      offset = f32(127 - f32(mx / scale)), y = rint(f32(f32(v * f32(1/scale)) + offset)) (int4: 15, 7).
    * Ascend 950 (1.3): scale = f32((mx - mn) * f32(1/R)) with no clamp, offset = f32(-(mx / scale) + DTMAX),
      y = cast(f32(f32(v / scale) + offset)); R/DTMAX = 255/127, 15/7, 896/448, 114688/57344, 65536/32768.
      The v / scale Div may differ by 1 ulp on hardware (emulated as IEEE).
    Not supported on Atlas inference / training (the doc: symmetric only; 310P's asymmetric code uses
    another formula, ARITHMETIC 1.4). Arguments as npu_dynamic_quant; special values in the module doc.
    """
    return _torch_face("npu_dynamic_quant_asymmetric", x, smooth_scales, group_index, dst_type, False, product)


# ------------------------------------------------------------------ aclnn face
@aclnn_api
def aclnnDynamicQuantV2GetWorkspaceSize(x, smoothScalesOptional, groupIndexOptional, dstType, yOut, scaleOut,
                                        offsetOut, product="atlas-a2"):
    """Phase one of aclnnDynamicQuantV2: validates inputs and the caller's outputs, returns
    (workspace_size, executor). dstType: 2 int8, 29 int4 (yOut ml_dtypes.int4, shape of x), 3 int32
    (yOut int32 [..., H/8]), on Ascend 950 also 35 float8_e5m2, 36 float8_e4m3fn and 34 hifloat8 (yOut
    uint8 HiFloat8 codes, shape of x). offsetOut None means
    symmetric. Same core as npu_dynamic_quant / npu_dynamic_quant_asymmetric."""
    return get_workspace_size(ACLNN_OP, lambda: _aclnn_prepare(x, smoothScalesOptional, groupIndexOptional, dstType,
                                                               yOut, scaleOut, offsetOut, product),
                              lambda plan: SYS_WORKSPACE if plan.block_dim else 0,
                              dict(x=x, smoothScalesOptional=smoothScalesOptional, groupIndexOptional=groupIndexOptional,
                                   yOut=yOut, scaleOut=scaleOut, offsetOut=offsetOut))


_ACLNN_NAMES = {"smooth_scales": "smoothScalesOptional", "group_index": "groupIndexOptional", "dst_type": "dstType",
                "y": "yOut", "scale": "scaleOut", "offset": "offsetOut"}
# names the core's rules mention that have no other sense there: the aclnn face's in its messages too
_ACLNN_RULE_NAMES = {k: _ACLNN_NAMES[k] for k in ("smooth_scales", "group_index", "dst_type")}


def _aclnn_prepare(x, smoothScalesOptional, groupIndexOptional, dstType, yOut, scaleOut, offsetOut, product):
    """Every check of aclnnDynamicQuantV2 (run in both phases); returns (plan, run)."""
    op = ACLNN_OP
    _checks.data_tensors(op, product, x=x, smoothScalesOptional=smoothScalesOptional,
                         groupIndexOptional=groupIndexOptional)
    soc = _checks.resolve_product(op, product, SUPPORTED_PRODUCTS)
    dst_code = _checks.int_attr(op, "dstType", dstType, soc.soc)
    if dst_code not in ACLNN_DST_TYPES:
        raise invalid(op, "dstType", f"must be one of {sorted(ACLNN_DST_TYPES)} (2 int8, 29 int4, 3 int32, "
                      "34 hifloat8, 35 float8_e5m2, 36 float8_e4m3fn), got " + str(dst_code), soc.soc)
    if ACLNN_DST_TYPES[dst_code] not in _Y_BY_FAMILY[soc.family]:
        raise invalid(op, "dstType", f"{dst_code} ({ACLNN_DST_TYPES[dst_code]}) is not supported on this product; "
                      f"allowed outputs: {', '.join(_Y_BY_FAMILY[soc.family])}", soc.soc)
    symmetric = offsetOut is None
    # the core's checks, with the aclnn doc's parameter names
    with params_named(_ACLNN_NAMES), params_named(_ACLNN_RULE_NAMES, in_rules=True):
        plan, ctx = _make_plan(op, x, smoothScalesOptional, groupIndexOptional, ACLNN_DST_TYPES[dst_code],
                               symmetric, product)
    y = _checks.out_tensor(op, "yOut", yOut, plan.outputs["y"].shape, plan.outputs["y"].dtype, soc.soc)
    scale = _checks.out_tensor(op, "scaleOut", scaleOut, plan.outputs["scale"].shape, np.float32, soc.soc)
    offset = None
    if not symmetric:
        offset = _checks.out_tensor(op, "offsetOut", offsetOut, plan.outputs["offset"].shape, np.float32, soc.soc)
    _checks.written_apart(op, soc.soc, yOut=y, scaleOut=scale, offsetOut=offset)
    if ctx[2] is not None:
        with params_named(_ACLNN_NAMES), params_named(_ACLNN_RULE_NAMES, in_rules=True):
            _check_group_values(op, ctx[2], ctx[3], soc.soc)
    return plan, lambda: _execute(plan, ctx, y, scale, offset)


@aclnn_api
def aclnnDynamicQuantV2(workspace, workspaceSize, executor, stream=None):
    """Phase two of aclnnDynamicQuantV2: runs the executor, fills yOut/scaleOut(/offsetOut); returns 0."""
    return run_executor(ACLNN_OP, workspace, workspaceSize, executor, stream)
