"""MoeInitRoutingQuant: MoE routing (stable sort by expert) with static int8 quantization of the rows.

Two faces over one kernel:
  npusim.moe_init_routing_quant(x, row_idx, expert_idx, active_num, scale, offset, product="atlas-a2")
  npusim.aclnn.aclnnMoeInitRoutingQuantGetWorkspaceSize(...) / npusim.aclnn.aclnnMoeInitRoutingQuant(...)

Semantics and arithmetic: shared/spec/ARITHMETIC.md section 5, from hicann/ops-transformer
moe/moe_init_routing_quant (op_host/moe_init_routing_quant_tiling.cpp, op_kernel/moe_quant_sort_one_core.h,
moe_quant_src_to_dst_op.h, moe_quant_gather_out.h, moe_quant_gather_out_small_activate_row.h).
"""
from __future__ import annotations

import math

import numpy as np

from npusim import _checks, formats
from npusim._kernels import moe_init_routing_quant as _k
from npusim.aclnn import aclnn_api, get_workspace_size, run_executor
from npusim.errors import ACLNN_ERR_INNER_TILING_ERROR, invalid, nullptr
from npusim.plan import Plan, TensorSpec, launched, planner, spec_of

__all__ = ["moe_init_routing_quant"]

OP = "aclnnMoeInitRoutingQuant"
# the aclnn doc's return codes list these shape rules as tiling errors (561002), not 161002: x not 2-D, rowIdx's
# shape, activeNum < 0 and the outputs' shapes (ops-transformer docs/aclnnMoeInitRoutingQuant.md)
TILING = ACLNN_ERR_INNER_TILING_ERROR
# Seed 004 lists Atlas A2. The op definition also registers ascend910_93 and the current ops-transformer doc
# marks Atlas A3 supported (an older README said x): A3 runs A2's DAV_2201 kernel, so it is accepted too.
SUPPORTED_PRODUCTS = ("atlas-a3", "atlas-a2")
X_DTYPES = ("float16", "bfloat16", "float32")

# The sort key is float(expertIdx) (Cast int32 -> fp32): ids beyond 2^24 may not be exact.
FP32_EXACT_INT = 1 << 24
INT32_MAX = 2**31 - 1                       # row indices are int32

# Tiling constants of moe_init_routing_quant_tiling.cpp
_SORT32_ALIGN = 32
_ONE_BLOCK_BYTE = 32
_MRG_LIST_NUM = 4
_MRG_SORT_LIST_MAX = 1024
_MAX_COLS_ONE_LOOP = 16376
_ASSIST_NUM = 256
_SYSTEM_WORKSPACE = 16 * 1024 * 1024

# Parameter names of the two faces (errors name what the caller wrote).
_SNAKE = {"x": "x", "row_idx": "row_idx", "expert_idx": "expert_idx", "active_num": "active_num",
          "scale": "scale", "offset": "offset"}
_CAMEL = {"x": "x", "row_idx": "rowIdx", "expert_idx": "expertIdx", "active_num": "activeNum",
          "scale": "scale", "offset": "offset"}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _ceil_log4(x: int) -> int:
    """ceil(log4(x)) for x >= 1, exactly (the vendor computes it in floating point)."""
    e, p = 0, 1
    while p < x:
        p *= 4
        e += 1
    return e


# ---------------------------------------------------------------- validation (shapes, dtypes, attrs)

def _check_shapes(op, names, x, row_idx, expert_idx, active_num, product):
    """Shape/dtype/attribute rules of the tiling (GetShapeAttrsInfo) plus the product.
    Works on arrays and TensorSpecs alike. Returns (soc, n, k, cols, x_dtype, active_num)."""
    soc = _checks.resolve_product(op, product, SUPPORTED_PRODUCTS)
    for key, t in (("x", x), ("row_idx", row_idx), ("expert_idx", expert_idx)):
        if t is None:
            raise nullptr(op, names[key], soc.soc)
    xs, rs, es = spec_of(x), spec_of(row_idx), spec_of(expert_idx)
    x_dtype = _checks.dtype_in(op, names["x"], xs, X_DTYPES, soc.soc)
    _checks.dtype_in(op, names["row_idx"], rs, ("int32",), soc.soc)
    _checks.dtype_in(op, names["expert_idx"], es, ("int32",), soc.soc)
    if xs.ndim != 2:
        raise invalid(op, names["x"], f"must be 2-D (NUM_ROWS, H), got shape {xs.shape}", soc.soc, TILING)
    if es.ndim != 2:
        raise invalid(op, names["expert_idx"], f"must be 2-D (NUM_ROWS, K), got shape {es.shape}", soc.soc)
    if rs.shape != es.shape:
        raise invalid(op, names["row_idx"], f"shape must equal {names['expert_idx']}'s {es.shape}, got {rs.shape}",
                      soc.soc, TILING)
    if xs.shape[0] != es.shape[0]:
        raise invalid(op, names["expert_idx"], f"must have as many rows as {names['x']} ({xs.shape[0]}), "
                      f"got {es.shape[0]}", soc.soc)
    n, k = es.shape
    if n * k > INT32_MAX:
        raise invalid(op, names["expert_idx"], f"NUM_ROWS*K = {n * k} must fit in int32 (row indices are int32)",
                      soc.soc)
    active = _checks.int_attr(op, names["active_num"], active_num, soc.soc)
    if active < 0:                  # int_attr has checked the int64 range of aclnn's activeNum
        raise invalid(op, names["active_num"], f"must be >= 0, got {active}", soc.soc, TILING)
    return soc, n, k, xs.shape[1], x_dtype, active


def _check_quant_param(op, name, v, product) -> float:
    """scale/offset as the aclnn double: a finite real number (the hardware result of a non-finite one is
    undocumented)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise invalid(op, name, f"must be a real number, got {v!r}", product)
    try:
        finite = math.isfinite(float(v))
    except OverflowError:                   # a Python int beyond any double
        finite = False
    if not finite:
        raise invalid(op, name, f"must be finite, got {v!r}", product)
    return float(v)


def _quant_param(op, name, v, product) -> np.float16:
    """scale/offset: the aclnn double becomes the op's Float attribute (RNE), the kernel uses
    static_cast<half>(float) (RNE)."""
    v = _check_quant_param(op, name, v, product)
    with np.errstate(over="ignore"):
        return np.float16(np.float32(v))


def _check_data(op, names, row_idx, expert_idx, n, k, product):
    """What would make the hardware write out of range or sort wrongly: rowIdx must be a permutation
    of [0, n*k) (it indexes the expandedRowIdx scatter), expert ids must be exact in the fp32 sort key."""
    total = n * k
    r = row_idx.reshape(-1)
    if total:
        lo, hi = int(r.min()), int(r.max())
        if lo < 0 or hi >= total:
            raise invalid(op, names["row_idx"], f"values must lie in [0, NUM_ROWS*K) = [0, {total}), "
                          f"got min {lo}, max {hi}", product)
        seen = np.bincount(r, minlength=total)
        if seen.max() != 1:
            dup = int(np.flatnonzero(seen > 1)[0])
            raise invalid(op, names["row_idx"], f"must be a permutation of [0, {total}); value {dup} occurs "
                          f"{int(seen[dup])} times", product)
        e = expert_idx.reshape(-1)
        emin, emax = int(e.min()), int(e.max())
        if emin < -FP32_EXACT_INT or emax > FP32_EXACT_INT:
            bad = e.astype(np.float32).astype(np.int64) != e
            if bad.any():
                v = int(e[np.flatnonzero(bad)[0]])
                raise invalid(op, names["expert_idx"], f"value {v} is not exactly representable in fp32, the "
                              "kernel's sort key (|id| <= 2^24 always is)", product)


# ---------------------------------------------------------------- plan

def _vbs_multi_core(total: int, sort_loop_max: int, aiv: int) -> dict:
    """Tinlig4VBSMultiCoreCompute: per-core chunks of the first (Sort32) pass."""
    need = min(4 ** _ceil_log4(_cdiv(total, sort_loop_max)), aiv)
    per = total // need
    floor_per = per - per % _SORT32_ALIGN
    last = total - (need - 1) * floor_per
    ceil_per = per + _SORT32_ALIGN - per % _SORT32_ALIGN
    if last > ceil_per:
        per = ceil_per
        need = _cdiv(total, per)
    else:
        per = floor_per
    while True:
        d = {"needCoreNum": need, "perCoreElements": per}
        d["perCoreLoops"] = _cdiv(per, sort_loop_max) if per > 0 else 0
        d["perCorePerLoopElements"] = min(per, sort_loop_max)
        d["perCoreLastLoopElements"] = per - (d["perCoreLoops"] - 1) * d["perCorePerLoopElements"]
        d["lastCoreElements"] = total - (need - 1) * per
        d["lastCoreLoops"] = d["perCoreLoops"]
        d["lastCorePerLoopElements"] = (_cdiv(_cdiv(d["lastCoreElements"], max(d["lastCoreLoops"], 1)),
                                              _SORT32_ALIGN) * _SORT32_ALIGN)
        d["lastCoreLastLoopElements"] = (d["lastCoreElements"]
                                         - (d["lastCoreLoops"] - 1) * d["lastCorePerLoopElements"])
        per -= _SORT32_ALIGN
        if not (d["lastCoreLastLoopElements"] <= 0 and per > 0):
            return d


def _loop_split(rows: int, per_loop_max: int) -> tuple[int, int]:
    """(rows per loop, rows in the last loop) for `rows` processed `per_loop_max` at a time."""
    per_loop = min(rows, per_loop_max)
    if per_loop <= 0:
        return 0, 0
    return per_loop, rows - (_cdiv(rows, per_loop) - 1) * per_loop


def _gather_tiling(n: int, k: int, cols: int, active: int, aiv: int, ub: int, xsize: int) -> dict:
    """Tiling4GatherOutCompute: SPLIT_ACTIVATE_ROW when n/2 > active_num (tiling key + 2), else SPLIT_K
    (n < cores and n < k) or SPLIT_N. Rows of a split are source rows of x (N, K) or output rows (activate_row)."""
    act_rows = min(active, n) * k
    if n // 2 > active:
        split, rows, max_cols = "activate_row", act_rows, min(_MAX_COLS_ONE_LOOP // 2, cols)
        while True:
            tile_bytes = sum(_cdiv(max_cols * b, _ONE_BLOCK_BYTE) * _ONE_BLOCK_BYTE for b in (xsize, 4, 2, 1))
            per_loop_max = (ub // 2 - tile_bytes) // 4 // _ONE_BLOCK_BYTE * _ONE_BLOCK_BYTE
            if per_loop_max > 0 or max_cols <= 1:
                break
            max_cols //= 2
        k_factor, per_core_k = k, k
        per_core = _cdiv(rows, aiv)
        need = _cdiv(rows, per_core) if per_core > 0 else 0
        last_rows = rows - (need - 1) * per_core if need else 0
        rows_in_ub = 1                       # one row per UB tile (copy-in by gathered row)
    else:
        split = "k" if (n < aiv and n < k) else "n"
        max_cols, k_factor = min(_MAX_COLS_ONE_LOOP // 4, cols), k
        while True:
            per_row = 4 * k_factor + (max_cols + _ONE_BLOCK_BYTE) * (xsize + 4 + 2) + max_cols * xsize + _ONE_BLOCK_BYTE
            per_loop_max = (ub // 2 - k_factor * _ONE_BLOCK_BYTE) // per_row
            if per_loop_max > 0 or k_factor <= 1:
                break
            k_factor //= 2
        if split == "k":
            per_core_k = _cdiv(k, aiv)
            per_core = last_rows = n
            need = _cdiv(k, per_core_k) if act_rows > 0 else 0
        else:
            per_core_k = k
            per_core = _cdiv(n, aiv)
            need = _cdiv(n, per_core) if per_core > 0 else 0
            last_rows = n - (need - 1) * per_core if need else 0
        rows_in_ub = min(per_core, per_loop_max)
    g = {"split": split, "splitFlag": {"n": 0, "k": 1, "activate_row": 2}[split], "needCoreNum": need,
         "activateRows": act_rows, "perCoreRows": per_core, "lastCoreRows": last_rows,
         "perCoreK": per_core_k, "perCorePerLoopK": k_factor, "maxColsOneLoop": max_cols,
         "perLoopMaxRows": per_loop_max}
    g["perCorePerLoopRows"], g["perCoreLastLoopRows"] = _loop_split(per_core, per_loop_max)
    g["lastCorePerLoopRows"], g["lastCoreLastLoopRows"] = _loop_split(last_rows, per_loop_max)
    g["colsLoops"] = _cdiv(cols, max_cols) if max_cols else 0
    g["rowLoopsPerCore"] = _cdiv(per_core, g["perCorePerLoopRows"]) if g["perCorePerLoopRows"] else 0
    g["ub_tile_elements"] = rows_in_ub * max_cols
    g["ub_tile_bytes"] = rows_in_ub * sum(_cdiv(max_cols * b, _ONE_BLOCK_BYTE) * _ONE_BLOCK_BYTE
                                          for b in (xsize, 4, 2, 1))
    return g


@planner("moe_init_routing_quant", SUPPORTED_PRODUCTS)
def plan_moe_init_routing_quant(x, row_idx, expert_idx, active_num, scale=1.0, offset=0.0,
                                product="atlas-a2", *, _op: str = "moe_init_routing_quant",
                                _names: dict = _SNAKE) -> Plan:
    """The MoeInitRoutingQuant launch as moe_init_routing_quant_tiling.cpp makes it (shapes only).

    tiling_key: 1 one-core sort, 2 multi-core sort; +2 when n/2 > active_num (gather by activated row).
    block_dim: 1 if n*k <= 32 else the SoC's AIV count (SetBlockDim(aivNum)); core_type 'aiv'.
    tiles (vendor tiling-data names):
      coreNum, n, k, cols, totalLength; sort_mode 'one_core' | 'multi_core'; sortLoopMaxElement
        (elements one core sorts in UB: (ub - cores*32)/32, 32-aligned);
      vbs: needCoreNum, perCoreElements, perCoreLoops, perCorePerLoopElements, perCoreLastLoopElements,
        lastCoreElements, lastCoreLoops, lastCorePerLoopElements, lastCoreLastLoopElements (first sort pass);
      vms_middle_need_core_num: cores of the intermediate 4-way merge (0: none); mrgSortListMaxElement 1024;
      src_to_dst: needCoreNum, perCoreRows, perCorePerLoopRows, perCoreLastLoopRows, lastCoreRows,
        lastCorePerLoopRows, lastCoreLastLoopRows, perLoopMaxRows (the expandedRowIdx scatter);
      gather: split 'n' | 'k' | 'activate_row' (splitFlag 0/1/2), needCoreNum, activateRows, perCoreRows,
        perCorePerLoopRows, perCoreLastLoopRows, lastCoreRows, lastCorePerLoopRows, lastCoreLastLoopRows,
        perCoreK, perCorePerLoopK, maxColsOneLoop (columns per UB tile), colsLoops, rowLoopsPerCore,
        perLoopMaxRows, ub_tile_elements, ub_tile_bytes (x + fp32 + fp16 + int8 buffers of one tile);
      double_buffer: False (BUFFER_NUM = 1 in every stage); workspace_bytes (GetWorkspaceSize).
    """
    soc, n, k, cols, x_dtype, active = _check_shapes(_op, _names, x, row_idx, expert_idx, active_num, product)
    for key, v in (("scale", scale), ("offset", offset)):
        _check_quant_param(_op, _names[key], v, soc.soc)
    xsize = formats.as_dtype(x_dtype).itemsize
    total = n * k
    aiv = 1 if total <= _SORT32_ALIGN else soc.aiv
    ub = soc.tiling_ub_bytes
    sort_loop_max = (ub - aiv * _ONE_BLOCK_BYTE) // 32 // _SORT32_ALIGN * _SORT32_ALIGN
    one_core = total <= sort_loop_max
    if one_core:
        vbs = {"needCoreNum": 1, "perCoreElements": total, "perCoreLoops": 1, "perCorePerLoopElements": total,
               "perCoreLastLoopElements": total, "lastCoreElements": total, "lastCoreLoops": 1,
               "lastCorePerLoopElements": total, "lastCoreLastLoopElements": total}
    else:
        vbs = _vbs_multi_core(total, sort_loop_max, aiv)
    vms_cores = 0 if vbs["needCoreNum"] <= _MRG_LIST_NUM else _cdiv(vbs["needCoreNum"], _MRG_LIST_NUM)

    s2d_loop_max = (ub - _ASSIST_NUM * 4 - aiv * _SORT32_ALIGN) // (_SORT32_ALIGN * 2) // 2
    s2d_per = _cdiv(total, aiv)
    s2d_need = _cdiv(total, s2d_per) if s2d_per else 0
    s2d = {"needCoreNum": s2d_need, "perCoreRows": s2d_per, "lastCoreRows": total - s2d_per * (s2d_need - 1),
           "perLoopMaxRows": s2d_loop_max}
    s2d["perCorePerLoopRows"], s2d["perCoreLastLoopRows"] = _loop_split(s2d_per, s2d_loop_max)
    s2d["lastCorePerLoopRows"], s2d["lastCoreLastLoopRows"] = _loop_split(s2d["lastCoreRows"], s2d_loop_max)

    gather = _gather_tiling(n, k, cols, active, aiv, ub, xsize)
    key = (1 if one_core else 2) + (2 if gather["split"] == "activate_row" else 0)
    workspace = 4 * total * 2 * 3 + aiv * _SORT32_ALIGN * 2 + total * 4 + _SYSTEM_WORKSPACE
    rows_out = min(n, active) * k
    tiles = {"coreNum": aiv, "n": n, "k": k, "cols": cols, "totalLength": total,
             "sort_mode": "one_core" if one_core else "multi_core", "sortLoopMaxElement": sort_loop_max,
             "vbs": vbs, "vms_middle_need_core_num": vms_cores, "mrgSortListMaxElement": _MRG_SORT_LIST_MAX,
             "src_to_dst": s2d, "gather": gather, "double_buffer": False, "workspace_bytes": workspace}
    return Plan(op="moe_init_routing_quant", soc=soc, kernel="MoeInitRoutingQuant", tiling_key=key, block_dim=aiv,
                core_type="aiv", tiles=tiles,
                inputs={"x": spec_of(x), "row_idx": spec_of(row_idx), "expert_idx": spec_of(expert_idx)},
                outputs={"expanded_x": _checks.out_spec(_op, "expanded_x", (rows_out, cols), np.int8, soc.soc),
                         "expanded_row_idx": TensorSpec((total,), np.int32),
                         "expanded_expert_idx": TensorSpec((total,), np.int32)},
                attrs={"active_num": active, "scale": float(scale), "offset": float(offset)},
                notes="sort: Sort32/MrgSort (stable) on key -float(expertIdx); gather: fp16 Muls/Adds, "
                      "Cast half->int8 CAST_RINT")


# ---------------------------------------------------------------- compute

def _prepare(op, names, x, row_idx, expert_idx, active_num, scale, offset, product):
    """Validate everything (shapes, dtypes, attributes, data) and return (plan, run) where
    run(expanded_x, expanded_row_idx, expanded_expert_idx) fills the three outputs."""
    prod = str(product)
    x = _checks.tensor(op, names["x"], x, prod)
    row_idx = _checks.index_tensor(op, names["row_idx"], row_idx, prod)
    expert_idx = _checks.index_tensor(op, names["expert_idx"], expert_idx, prod)
    _checks.data_tensors(op, prod, **{names["x"]: x, names["row_idx"]: row_idx, names["expert_idx"]: expert_idx})
    plan = plan_moe_init_routing_quant(x, row_idx, expert_idx, active_num, scale, offset, product,
                                       _op=op, _names=names)
    soc = plan.soc.soc
    n, k = plan.tiles["n"], plan.tiles["k"]
    sh = _quant_param(op, names["scale"], scale, soc)
    oh = _quant_param(op, names["offset"], offset, soc)
    _check_data(op, names, row_idx, expert_idx, n, k, soc)
    x_dtype = formats.dtype_name(x.dtype)
    row_flat, expert_flat = row_idx.reshape(-1), expert_idx.reshape(-1)     # private copies
    active_rows = plan.tiles["gather"]["activateRows"]

    def run(expanded_x, expanded_row_idx, expanded_expert_idx):
        # an output may share an input's storage (aclnn face): read such an input from a copy
        x_, row_, expert_ = _checks.unshared((np.ascontiguousarray(x), row_flat, expert_flat),
                                             (expanded_x, expanded_row_idx, expanded_expert_idx))
        total = n * k
        sorted_row = np.empty(total, np.int32)
        # the gather indexes rows by expanded_row_idx: it reads the sort's own copy, never the caller's
        # output buffer, which another thread could rewrite under it
        row_of = np.empty(total, np.int32)
        if total:
            emin, emax = int(expert_.min()), int(expert_.max())
            _k.route_sort(expert_, row_, emin, emax - emin + 1, expanded_expert_idx, sorted_row, row_of)
        expanded_row_idx[...] = row_of
        if expanded_x.size == 0:
            return
        from_half = np.empty(65536, np.int8)
        from_bf16 = np.empty(65536, np.int8)
        _k.quant_tables(int(sh.view(np.uint16)), int(oh.view(np.uint16)), from_half, from_bf16)
        if x_dtype == "float32":
            _k.gather_quant(x_, from_half, row_of, active_rows, expanded_x)
        else:
            table = from_half if x_dtype == "float16" else from_bf16
            _k.gather_quant(x_.view(np.uint16), table, row_of, active_rows, expanded_x)

    return plan, run


def moe_init_routing_quant(x, row_idx, expert_idx, active_num, scale, offset, product="atlas-a2"):
    """MoE init routing with static int8 quantization, bit-exact to the Atlas A2 MoeInitRoutingQuant kernel.

    x [n, H] fp16/bf16/fp32; row_idx [n, k] int32, a permutation of [0, n*k) (usually
    arange(n*k).reshape(k, n).T); expert_idx [n, k] int32; active_num >= 0; scale, offset: numbers.
    Returns (expanded_x [min(n, active_num)*k, H] int8, expanded_row_idx [n*k] int32,
    expanded_expert_idx [n*k] int32):
      order = stable sort of expert_idx.flatten() (ties by flattened position; Sort/MrgSort tie rule);
      expanded_expert_idx = expert_idx.flat[order]; sorted_row = row_idx.flat[order];
      expanded_row_idx[sorted_row[t]] = t (full n*k, not truncated by active_num);
      expanded_x[t] = sat_int8(rint(fp16(fp16(fp16(x[sorted_row[t] % n]) * fp16(scale)) + fp16(offset)))).
    Follows moe_init_routing_quant kernel tiling keys 1-4 (all give the same result). Emulation choices
    (documented deviations, unverified on hardware): fp16 overflow in the cast from fp32/bf16, Muls and Adds
    is IEEE (inf, INF_NAN mode), inf saturates to 127/-128 and NaN converts to 0 in the int8 cast;
    scale/offset go double -> fp32 -> fp16 (the attribute is Float), non-finite ones are rejected; row_idx
    that is not a permutation of [0, n*k) and expert ids not exact in fp32 are rejected (the kernel would
    write out of range / mis-sort).
    """
    plan, run = _prepare("moe_init_routing_quant", _SNAKE, x, row_idx, expert_idx, active_num, scale, offset,
                         product)
    outs = plan.outputs
    expanded_x = np.empty(outs["expanded_x"].shape, np.int8)
    expanded_row_idx = np.empty(outs["expanded_row_idx"].shape, np.int32)
    expanded_expert_idx = np.empty(outs["expanded_expert_idx"].shape, np.int32)
    run(expanded_x, expanded_row_idx, expanded_expert_idx)
    launched(plan)
    return expanded_x, expanded_row_idx, expanded_expert_idx


@aclnn_api
def aclnnMoeInitRoutingQuantGetWorkspaceSize(x, rowIdx, expertIdx, activeNum, scale, offset, expandedXOut,
                                             expandedRowIdxOut, expandedExpertIdxOut, product="atlas-a2"):
    """Phase one of aclnnMoeInitRoutingQuant: validates inputs, attributes and the three output arrays
    (written in place by phase two) and returns (workspace_size, executor). Same arithmetic as
    npusim.moe_init_routing_quant; workspace_size is the vendor GetWorkspaceSize value."""
    return get_workspace_size(OP, lambda: _aclnn_prepare(x, rowIdx, expertIdx, activeNum, scale, offset, expandedXOut,
                                                         expandedRowIdxOut, expandedExpertIdxOut, product),
                              lambda plan: plan.tiles["workspace_bytes"],
                              dict(x=x, rowIdx=rowIdx, expertIdx=expertIdx, expandedXOut=expandedXOut,
                                   expandedRowIdxOut=expandedRowIdxOut, expandedExpertIdxOut=expandedExpertIdxOut))


def _aclnn_prepare(x, rowIdx, expertIdx, activeNum, scale, offset, expandedXOut, expandedRowIdxOut,
                   expandedExpertIdxOut, product):
    """Every check of aclnnMoeInitRoutingQuant (run in both phases); returns (plan, run)."""
    plan, run = _prepare(OP, _CAMEL, x, rowIdx, expertIdx, activeNum, scale, offset, product)
    soc = plan.soc.soc
    outs = plan.outputs
    ex = _checks.out_tensor(OP, "expandedXOut", expandedXOut, outs["expanded_x"].shape, np.int8, soc, TILING)
    er = _checks.out_tensor(OP, "expandedRowIdxOut", expandedRowIdxOut, outs["expanded_row_idx"].shape,
                            np.int32, soc, TILING)
    ee = _checks.out_tensor(OP, "expandedExpertIdxOut", expandedExpertIdxOut, outs["expanded_expert_idx"].shape,
                            np.int32, soc, TILING)
    for name, arr in (("expandedXOut", ex), ("expandedRowIdxOut", er), ("expandedExpertIdxOut", ee)):
        if not arr.flags.c_contiguous:
            raise invalid(OP, name, "must be C-contiguous (ND format)", soc)
    _checks.written_apart(OP, soc, expandedXOut=ex, expandedRowIdxOut=er, expandedExpertIdxOut=ee)
    return plan, lambda: _run_aligned(run, (ex, er, ee))


def _run_aligned(run, outs) -> None:
    """run(*outs), through aligned temporaries for misaligned outputs (the kernels store int32 through
    typed pointers), copied back afterwards."""
    work = [o if o.flags.aligned else np.empty_like(o) for o in outs]
    run(*work)
    for o, w in zip(outs, work):
        if w is not o:
            o[...] = w


@aclnn_api
def aclnnMoeInitRoutingQuant(workspace, workspaceSize, executor, stream=None):
    """Phase two of aclnnMoeInitRoutingQuant: runs the executor from phase one; returns 0."""
    return run_executor(OP, workspace, workspaceSize, executor, stream)
