"""custom.indexer_compress_epilog (cann-recipes-infer, Ascend 950): per-128-element FP8 quantization of
rows of x, scattered by slot_mapping into an indexer cache and its scale cache, in place.

Two faces over one kernel (kernels_pyx/indexer_compress_epilog.pyx):
  npusim.indexer_compress_epilog(cache, scale, x, slot_mapping, *, quant_mode=1, round_scale=True, ...)
  npusim.aclnn.aclnnIndexerCompressEpilogGetWorkspaceSize(...) / aclnnIndexerCompressEpilog(...)
The plan follows op_host/indexer_compress_epilog_tiling.cpp; the arithmetic follows
op_kernel/indexer_compress_epilog_base.h (shared/spec/ARITHMETIC.md section 2).
"""
from __future__ import annotations

import math

import numpy as np

from npusim import _checks, formats
from npusim._kernels import indexer_compress_epilog as _kernel
from npusim.aclnn import aclnn_api, get_workspace_size, run_executor
from npusim.errors import invalid, not_emulated
from npusim.plan import Plan, launched, planner, spec_of

__all__ = ["indexer_compress_epilog"]

OP = "indexer_compress_epilog"
ACLNN_OP = "aclnnIndexerCompressEpilog"
PRODUCTS = ("ascend-950pr", "ascend-950dt")

QUANT_BLOCK = 128               # one scale per 128 elements of a row
MX_SCALE_RULES = {"kernel": 0, "ceil": 1}
CACHE_DTYPES = {0: ("float8_e4m3fn", "float8_e5m2"), 1: ("float8_e4m3fn", "float8_e5m2"),
                2: ("uint8",)}                     # by quant_mode; mode 2: HiFloat8 codes (npusim.formats)
X_DTYPES = ("float16", "bfloat16")
SCALE_DTYPE = {1: "float32", 0: "float8_e8m0", 2: "float32"}   # by quant_mode (mode 2: not written)
HIFLOAT8_MODE = 2

# Vendor tiling constants (op_host/indexer_compress_epilog_tiling.cpp)
_WORKSPACE_BYTES = 32
_UB_BLOCK_BYTES = 32
_DOUBLE_BUFFER = 2
# mode 2 takes the normal-quant keys (its drivers branch on quantMode inside them; the successor
# indexer_quant_cache tiling adds 1 for quantMode 1 or 2)
_TILING_KEYS = {(False, 1): 10001, (True, 1): 10011, (False, 0): 10000, (True, 0): 10010,
                (False, 2): 10001, (True, 2): 10011}


def _ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b if b else a


def _round_up(a: int, b: int) -> int:
    return _ceil_div(a, b) * b


# Parameter names in errors: the function's (and the planner's), and the aclnn call's
_SNAKE = {"cache": "indexer_compress_cache", "scale": "indexer_compress_scale", "x": "x",
          "slot_mapping": "slot_mapping", "quant_mode": "quant_mode", "round_scale": "round_scale",
          "hif8_scale": "scale", "mx_scale_rule": "mx_scale_rule"}
_CAMEL = {**_SNAKE, "cache": "indexerCompressCache", "scale": "indexerCompressScale",
          "slot_mapping": "slotMapping", "quant_mode": "quantMode", "round_scale": "roundScale"}


F32_OVERFLOW = 2.0**128 - 2.0**103     # the smallest magnitude a float32 rounds (to nearest even) to infinity


def _check_attrs(quant_mode, round_scale, mx_scale_rule, product, scale=1.0, op=OP,
                 names=_SNAKE) -> tuple[int, bool]:
    quant_mode = _checks.int_attr(op, names["quant_mode"], quant_mode, product)
    if quant_mode not in (0, 1, 2):
        raise invalid(op, names["quant_mode"], f"must be 0 (MX quant), 1 (normal quant) or 2 (hifloat8), got "
                      f"{quant_mode}", product)
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise invalid(op, names["hif8_scale"], f"must be a float (the hifloat8 multiplier of quant_mode 2), got "
                      f"{scale!r}", product)
    # the attribute is a float32: a finite value past its range (it would round to inf) is refused in every mode
    try:
        value = float(scale)
    except OverflowError:           # an integer past float64's range
        value = math.inf
    given_finite = not isinstance(scale, (float, np.floating)) or math.isfinite(scale)
    if given_finite and abs(value) >= F32_OVERFLOW:
        raise invalid(op, names["hif8_scale"], f"must fit a float32 (the attribute's type): |scale| < "
                      f"2^128 - 2^103 (about 3.4e38), got {scale!r:.40}", product)
    if not isinstance(round_scale, (bool, np.bool_)):
        raise invalid(op, names["round_scale"], f"must be a bool, got {round_scale!r}", product)
    if not isinstance(mx_scale_rule, str) or mx_scale_rule not in MX_SCALE_RULES:
        raise invalid(op, names["mx_scale_rule"], f"must be one of {sorted(MX_SCALE_RULES)}, got "
                      f"{mx_scale_rule!r}", product)
    return quant_mode, bool(round_scale)


def _check_specs(cache, scale, x, slot_mapping, quant_mode, product, op=OP, names=_SNAKE) -> dict:
    """Shape and dtype rules (shared by the planner and the emulator). Returns dtype names and sizes."""
    for key, s in (("cache", cache), ("scale", scale), ("x", x), ("slot_mapping", slot_mapping)):
        if s is None:
            _checks.tensor(op, names[key], None, product)          # raises the nullptr error
    n_cache, n_scale, n_x, n_slot = names["cache"], names["scale"], names["x"], names["slot_mapping"]
    x_dt = _checks.dtype_in(op, n_x, x, X_DTYPES, product)
    cache_dt = _checks.dtype_in(op, n_cache, cache, CACHE_DTYPES[quant_mode], product)
    want_scale = SCALE_DTYPE[quant_mode]
    got_scale = formats.dtype_name(scale.dtype)
    if got_scale != want_scale:
        raise invalid(op, n_scale, f"dtype must be {want_scale} with {names['quant_mode']}={quant_mode}, "
                      f"got {got_scale}", product)
    _checks.dtype_in(op, n_slot, slot_mapping, ("int32",), product)
    # The doc fixes d at 4096; the vendor tiling takes d from x's last dimension and the row count from
    # slot_mapping, and the kernel treats x, the cache and the scale as flat [-1, d] / [-1, d / 128] arrays
    # (cann-recipes-infer@5df82b19 indexer_compress_epilog_tiling.cpp; DeepSeek-V4's indexer calls it with
    # d = 128, a [B, S, 128] x and [blocks, 128, 1, 128] / [blocks, 128, 1, 1] caches): so does npusim
    if len(x.shape) < 2:
        raise invalid(op, n_x, f"must have at least 2 dimensions ([T, d] or [B, S, d]), got {tuple(x.shape)}", product)
    d = int(x.shape[-1])
    if d < 1:
        raise invalid(op, n_x, f"last dimension d must be positive, got {tuple(x.shape)}", product)
    if d % QUANT_BLOCK:
        raise not_emulated(op, n_x, f"last dimension d = {d} is not a multiple of {QUANT_BLOCK}: the kernel's tail "
                           "loop for a partial block differs between its published versions, and npusim does not "
                           "emulate it", product)
    if len(slot_mapping.shape) != 1:
        raise invalid(op, n_slot, f"must be 1-D [T], got shape {tuple(slot_mapping.shape)}", product)
    T = int(slot_mapping.shape[0])
    x_rows = math.prod(x.shape) // d
    cols = d // QUANT_BLOCK
    if T < x_rows:      # the kernel reads T rows: x's rows past T would be dropped without a word
        raise invalid(op, n_slot, f"must hold a slot for every row of {n_x} (-1 skips a row): {n_x} has {x_rows} "
                      f"rows of d = {d}, {n_slot} has {T} entries", product)
    # the seed's [T, d] and [T, d / 128], DeepSeek-V4's [blocks, 128, 1, 128] and [blocks, 128, 1, 1]: the last
    # dimension is a whole row (any other shape the kernel would read across rows)
    if not cache.shape or cache.shape[-1] != d:
        raise invalid(op, n_cache, f"last dimension must be d = {d} ({n_x}'s; the kernel reads the cache as "
                      f"[-1, {d}]), got shape {tuple(cache.shape)}", product)
    rows = math.prod(cache.shape) // d
    if not scale.shape or scale.shape[-1] != cols:
        raise invalid(op, n_scale, f"last dimension must be d / {QUANT_BLOCK} = {cols} (one scale per "
                      f"{QUANT_BLOCK}-element block of a row), got shape {tuple(scale.shape)}", product)
    if math.prod(scale.shape) != rows * cols:
        raise invalid(op, n_scale, f"must hold {cols} scale(s) per cache row: {rows} x {cols} = {rows * cols} "
                      f"elements ([rows of the cache, d / {QUANT_BLOCK}]), got shape {tuple(scale.shape)}", product)
    return {"T": T, "d": d, "x_rows": x_rows, "rows": rows, "x_dtype": x_dt, "cache_dtype": cache_dt}


def _tiling(bs: int, d: int, quant_mode: int, core_num: int, ub_bytes: int) -> dict:
    """IndexerCompressEpilogTiling::CalcOpTiling: rows split over the AIV cores, then as many whole
    rows per UB pass (rowFactor) as fit, with x, y and scale double-buffered."""
    scale_col = _ceil_div(d, QUANT_BLOCK)
    row_former = _ceil_div(bs, core_num)
    used_cores = min(_ceil_div(bs, row_former), core_num)
    row_tail = bs - (used_cores - 1) * row_former
    scale_bytes = 1 if quant_mode == 0 else 4
    per_block_scales = _UB_BLOCK_BYTES // scale_bytes

    x_row, y_row = _round_up(d, 16) * 2 * _DOUBLE_BUFFER, _round_up(d, 32) * 1 * _DOUBLE_BUFFER
    scale_row = _round_up(scale_col, per_block_scales) * scale_bytes * _DOUBLE_BUFFER

    def ub_need(r: int) -> tuple:
        """UB bytes of x, y, scale and the slot indices at r rows a pass."""
        return r * x_row, r * y_row, r * scale_row, _round_up(r, 8) * 4

    row_factor = min(row_former, 1)
    while row_factor <= row_former:
        if sum(ub_need(row_factor)) > ub_bytes:
            row_factor -= 1
            break
        row_factor += 1
    if row_factor > row_former:
        row_factor -= 1
    tiles = {
        "bs": bs, "d": d, "scaleCol": scale_col,
        "rowOfFormerBlock": row_former, "rowOfTailBlock": row_tail,
        "rowLoopOfFormerBlock": _ceil_div(row_former, row_factor),
        "rowLoopOfTailBlock": _ceil_div(row_tail, row_factor),
        "rowFactor": row_factor,
        "tailRowFactorOfFormerBlock": (row_former % row_factor or row_factor) if row_factor else 0,
        "tailRowFactorOfTailBlock": (row_tail % row_factor or row_factor) if row_factor else 0,
        "quantMode": quant_mode,
        "usedCoreNum": used_cores,
        "quant_block": QUANT_BLOCK,
        "double_buffer": True,
    }
    need = ub_need(row_factor)
    tiles.update(zip(("x_ub_bytes", "y_ub_bytes", "scale_ub_bytes", "index_ub_bytes"), need), ub_bytes_used=sum(need))
    return tiles


@planner(OP, PRODUCTS)
def plan_indexer_compress_epilog(indexer_compress_cache, indexer_compress_scale, x, slot_mapping, *,
                                 quant_mode=1, round_scale=True, mx_scale_rule="kernel", scale=1.0,
                                 product="ascend-950pr", _op: str = OP, _names: dict = _SNAKE) -> Plan:
    """The vendor tiling of indexer_compress_epilog for these shapes/dtypes (arrays or TensorSpecs).

    Follows op_host/indexer_compress_epilog_tiling.cpp: bs = T rows are split over all AIV cores
    (rowOfFormerBlock = ceil(T / aiv) rows per core, the last core gets rowOfTailBlock); each core
    moves rowFactor whole rows per UB pass, the largest count whose double-buffered x (2 B/elem),
    y (1 B/elem) and scale tiles plus the slot-index buffer fit in the UB, capped at rowOfFormerBlock
    (d = 4096 on the 248 KiB UB of 950: 10 rows). Tiling key: 10000 + 10 if rowFactor != 1 (multi-row
    driver) + 1 if quant_mode is 1 or 2; so single-row keys (10001 normal/hifloat8, 10000 MX) are chosen
    exactly when T <= number of AIV cores. The single- and multi-row drivers run the same arithmetic.

    tiles (vendor tiling-data names): bs, d, scaleCol, rowOfFormerBlock, rowOfTailBlock,
    rowLoopOfFormerBlock, rowLoopOfTailBlock (UB passes per core), rowFactor (rows per pass),
    tailRowFactorOfFormerBlock, tailRowFactorOfTailBlock (rows in the last pass), quantMode,
    usedCoreNum (= block_dim); ours: quant_block (128), double_buffer (True), x_ub_bytes, y_ub_bytes,
    scale_ub_bytes, index_ub_bytes and ub_bytes_used (UB bytes at rowFactor rows). Rows whose slot is
    -1 are still read from slot_mapping but neither loaded nor stored (data-dependent; not in the plan).
    """
    soc = _checks.resolve_product(_op, product, PRODUCTS)
    quant_mode, round_scale = _check_attrs(quant_mode, round_scale, mx_scale_rule, soc.soc, scale, _op, _names)
    specs = {k: spec_of(v) if v is not None else None for k, v in
             (("cache", indexer_compress_cache), ("scale", indexer_compress_scale), ("x", x),
              ("slot_mapping", slot_mapping))}
    info = _check_specs(specs["cache"], specs["scale"], specs["x"], specs["slot_mapping"], quant_mode, soc.soc,
                        _op, _names)
    tiles = _tiling(info["T"], info["d"], quant_mode, soc.aiv, soc.tiling_ub_bytes)
    if info["T"] and not tiles["rowFactor"]:      # the vendor tiling would divide by zero
        raise invalid(_op, _names["x"], f"last dimension d = {info['d']} is too large: one row of x, its fp8 values "
                      f"and scales (double-buffered) must fit in the {soc.tiling_ub_bytes}-byte UB", soc.soc)
    key = _TILING_KEYS[(tiles["rowFactor"] != 1, quant_mode)]
    return Plan(
        op=OP, soc=soc, kernel="IndexerCompressEpilog", tiling_key=key, block_dim=tiles["usedCoreNum"],
        core_type="aiv", tiles=tiles,
        inputs={"x": specs["x"], "slot_mapping": specs["slot_mapping"]},
        outputs={"indexer_compress_cache": specs["cache"], "indexer_compress_scale": specs["scale"]},
        attrs={"quant_mode": quant_mode, "round_scale": round_scale, "mx_scale_rule": mx_scale_rule,
               "scale": float(scale), "workspace_bytes": _WORKSPACE_BYTES},
        notes=("multi-row driver" if tiles["rowFactor"] != 1 else "single-row driver")
        + {0: "; MX (e8m0) scales", 1: "; fp32 scales", 2: "; hifloat8 cache, x * scale"}[quant_mode],
    )


def _in_place(op: str, name: str, a, product) -> np.ndarray:
    if a is None:
        _checks.tensor(op, name, None, product)
    if not isinstance(a, np.ndarray):
        raise invalid(op, name, f"must be a numpy array (it is updated in place), got {type(a).__name__}", product)
    if not a.flags.writeable:
        raise invalid(op, name, "must be writable (it is updated in place)", product)
    return a


def _prepare(cache, scale, x, slot_mapping, quant_mode, round_scale, mx_scale_rule, product, hif8_scale=1.0,
             op=OP, names=_SNAKE):
    """Every check, before anything is written; errors name `op` and its parameters (`names`). Returns
    (plan, bound kernel call)."""
    soc = _checks.resolve_product(op, product, PRODUCTS)
    prod = soc.soc
    _check_attrs(quant_mode, round_scale, mx_scale_rule, prod, hif8_scale, op, names)
    n_cache, n_scale, n_x, n_slot = names["cache"], names["scale"], names["x"], names["slot_mapping"]
    cache = _in_place(op, n_cache, cache, prod)
    scale = _in_place(op, n_scale, scale, prod)
    _checks.data_tensors(op, prod, **{n_x: x, n_slot: slot_mapping})
    x = _checks.tensor(op, n_x, x, prod)
    slot_mapping = _checks.tensor(op, n_slot, slot_mapping, prod)
    plan = plan_indexer_compress_epilog(cache, scale, x, slot_mapping, quant_mode=quant_mode,
                                        round_scale=round_scale, mx_scale_rule=mx_scale_rule, scale=hif8_scale,
                                        product=product, _op=op, _names=names)
    for name, a in ((n_cache, cache), (n_scale, scale), (n_x, x), (n_slot, slot_mapping)):
        if not a.flags.c_contiguous:
            raise invalid(op, name, "must be contiguous (non-contiguous tensors are not supported)", prod)
    if cache.dtype.byteorder == ">" or scale.dtype.byteorder == ">":
        raise invalid(op, n_scale, "must be in native byte order (it is updated in place)", prod)
    _checks.written_apart(op, prod, **{n_cache: cache, n_scale: scale})
    slot_mapping = _checks.index_tensor(op, n_slot, slot_mapping, prod)     # checked and read as one copy
    d, T = plan.tiles["d"], plan.tiles["bs"]
    rows, x_rows = cache.size // d, x.size // d
    if slot_mapping.size:
        lo, hi = int(slot_mapping.min()), int(slot_mapping.max())
        if lo < -1 or hi >= rows:
            bad = int(np.flatnonzero((slot_mapping < -1) | (slot_mapping >= rows))[0])
            raise invalid(op, n_slot, f"values must lie in [-1, {rows}) (rows of the cache); "
                          f"{n_slot}[{bad}] = {int(slot_mapping[bad])}", prod)
        valid = slot_mapping[slot_mapping >= 0]
        uniq, first, counts = np.unique(valid, return_index=True, return_counts=True)
        if uniq.size != valid.size:
            dup = int(uniq[counts > 1][0])
            where = np.flatnonzero(slot_mapping == dup)[:2].tolist()
            raise invalid(op, n_slot, f"valid slots must be distinct (the NPU writes duplicates in an "
                          f"undefined order); slot {dup} appears at positions {where}", prod)
        if T > x_rows and (slot_mapping[x_rows:] >= 0).any():     # its rows past x must be skipped (-1)
            bad = x_rows + int(np.flatnonzero(slot_mapping[x_rows:] >= 0)[0])
            raise invalid(op, n_slot, f"{n_slot}[{bad}] = {int(slot_mapping[bad])} is a valid slot, but {n_x} has "
                          f"only {x_rows} rows of d = {d} (the NPU would read past it); entries past {n_x}'s rows "
                          "must be -1", prod)
    is_bf16 = formats.dtype_name(x.dtype) == "bfloat16"
    fmt = 4 if formats.dtype_name(cache.dtype) == "float8_e5m2" else 3      # ascend_cast F_E5M2 / F_E4M3
    cache_raw = cache.view(np.uint8).reshape(rows, d)               # the kernel's flat [-1, d] view
    scale_raw = scale.view(np.uint8).reshape(rows, d // QUANT_BLOCK * scale.dtype.itemsize)   # rows may be 0
    n = min(T, x_rows)                                              # rows the kernel reads: slot_mapping's
    qm, rs, rule = plan.attrs["quant_mode"], plan.attrs["round_scale"], MX_SCALE_RULES[mx_scale_rule]

    def run() -> None:
        # x may share the cache's memory: it is read first
        x_raw = _checks.unshared((x,), (cache, scale))[0].view(np.uint16).reshape(x_rows, d)[:n]
        # the kernel stores fp32 scales through a float pointer: use an aligned buffer for a misaligned array
        scale_work = scale_raw if scale.flags.aligned else scale_raw.copy()
        _kernel.indexer_compress_epilog_kernel(x_raw, is_bf16, slot_mapping[:n], cache_raw, scale_work, fmt, qm, rs,
                                               rule, np.float32(hif8_scale))
        if scale_work is not scale_raw:
            scale_raw[...] = scale_work

    return plan, run


def indexer_compress_epilog(indexer_compress_cache, indexer_compress_scale, x, slot_mapping, *,
                            quant_mode=1, round_scale=True, mx_scale_rule="kernel", scale=1.0,
                            product="ascend-950pr") -> None:
    """Quantize each row of x ([T, d] fp16/bf16; the doc fixes d at 4096) in blocks of 128 and write the fp8
    values to indexer_compress_cache[slot] and the block scales to indexer_compress_scale[slot], in place, for
    every row whose slot_mapping entry is not -1 (other rows write nothing). Returns None.

    Emulates the Ascend 950 kernel IndexerCompressEpilog (cann-recipes-infer, tiling keys
    10001/10011 normal, 10000/10010 MX; ARITHMETIC.md section 2), bit for bit:

    quant_mode=1 (scale float32 [rows, d / 128]): amax = max |x| over the block with inf/NaN lanes
    excluded; scale = f32(amax * f32(1/FP8MAX)) (0 when amax == 0); q = x / scale; where q is inf or
    NaN (amax == 0, x = +-inf or NaN) q = x; y = fp8(q) round-to-nearest-even, not saturating (an inf
    x gives inf in e5m2 and NaN in e4m3fn, which has no inf).

    quant_mode=0 (MX, scale float8_e8m0 [rows, d / 128]): amax = max |x| over the block (a NaN makes it
    NaN); s = f32(max(amax, 1e-4) * f32(1/FP8MAX)); if round_scale, s becomes a power of two:
    mx_scale_rule="kernel" (default) reproduces the shipped kernel, s = 2^(floor(log2 s) + 1), whose
    "ceil" helper tests the exponent instead of the mantissa so an s that is already a power of two is
    doubled; mx_scale_rule="ceil" gives the vendor golden's (and DeepGEMM's) intended 2^ceil(log2 s)
    (a NaN/inf s is left as it is under "ceil").
    The default is the kernel because the emulator reproduces what the NPU writes; the two differ
    only where s is exactly a power of two. The e8m0 byte is the biased exponent of s (with
    round_scale=False: floor(log2 s), while the data are divided by the unrounded s, as the kernel
    does); y = fp8(clamp(x / s, -FP8MAX, FP8MAX)), RNE.

    quant_mode=2 (hifloat8 cache: uint8 HiFloat8 codes [rows, d]; beyond the doc, which lists modes 0
    and 1; DeepSeek-V4's compressor calls it): y = hif8(f32(x * scale)) with the float attribute `scale`
    (default 1.0): one fp32 multiply (Muls), then Cast CAST_ROUND with SatMode::SAT (the kernel's
    VFProcessHifp8Quant / castTraitF32toh8 in indexer_compress_epilog_base.h): ties away from zero,
    +-inf and |values| rounding past 32768 give +-32768, NaN gives code 0 (npusim.formats HiFloat8).
    No block scale is computed. The scale rows of valid slots: the vendor drivers still copy their
    (unwritten) UB scale buffer to indexer_compress_scale[slot], so the NPU writes undefined bytes there;
    npusim leaves the scale array untouched. The vendor's example test for this mode was not available
    to us; the y arithmetic is the kernel's.

    Deviations and assumptions: the NPU's Div is documented to 1 ulp; we use IEEE division, so a
    quotient within 1 ulp of an fp8 rounding boundary may differ from hardware. The vendor golden
    computes amax / FP8MAX (not amax * f32(1/FP8MAX)), has no 1e-4 floor and clips inf inputs; we follow
    the kernel. Subnormals are kept (no flush to zero). In MX mode, non-finite blocks follow the kernel's
    operations under two undocumented assumptions: the vector max propagates NaN, and a NaN quotient is
    stored as the format's positive NaN code; with round_scale and the kernel rule a NaN/inf amax then
    yields s = -0.0 (bit pattern 0x80000000) and e8m0 byte 0x00.

    Shapes as the kernel reads them: the doc fixes d at 4096, but the vendor tiling takes d from x's last
    dimension and the row count T from slot_mapping, and the kernel reads x, the cache and the scale as flat
    [-1, d], [-1, d] and [-1, d / 128] arrays; DeepSeek-V4's indexer (cann-recipes-infer) calls it with d = 128,
    x [B, S, 128], cache [blocks, 128, 1, 128] and scale [blocks, 128, 1, 1], and a slot_mapping longer than
    x's rows whose extra entries are -1. npusim takes the same: any d that is a multiple of 128 (another d runs
    a tail loop that differs between the kernel's published versions: not emulated) and whose row fits in the
    UB; row i of x for slot_mapping[i], i < T. It refuses what the kernel would misread without an error: a
    cache whose last dimension is not d or a scale whose last is not d / 128 (the seed's [T, d] and
    [T, d / 128]; rows would be read across), and a slot_mapping shorter than x's rows (rows dropped).

    Validation (all before any write; a rejected call changes nothing): product Ascend 950PR/950DT;
    x fp16/bf16 with at least 2 dimensions; slot_mapping int32 [T] with values in [-1, rows of the cache),
    no valid slot repeated (the NPU's result would be undefined) and -1 past x's rows; cache
    float8_e4m3fn/float8_e5m2 (uint8 in mode 2) of whole rows of d; scale float32 (modes 1, 2) or float8_e8m0
    (mode 0) of d / 128 per cache row; all C-contiguous, outputs writable and not overlapping themselves or
    each other (x may share their memory: it is read first). Vendor callers pass the whole cache (rows >= T),
    so any row count is accepted and slots are checked against it.
    """
    plan, run = _prepare(indexer_compress_cache, indexer_compress_scale, x, slot_mapping, quant_mode,
                         round_scale, mx_scale_rule, product, scale)
    run()
    launched(plan)


@aclnn_api
def aclnnIndexerCompressEpilogGetWorkspaceSize(indexerCompressCache, indexerCompressScale, x, slotMapping,
                                               quantMode=1, roundScale=True, scale=1.0, *,
                                               mx_scale_rule="kernel", product="ascend-950pr"):
    """Phase one of aclnnIndexerCompressEpilog (argument order of the torch binding; scale is the float
    multiplier of quantMode 2): validates everything and returns (workspace_size, executor); the vendor
    tiling asks for 32 bytes."""
    return get_workspace_size(ACLNN_OP, lambda: _prepare(indexerCompressCache, indexerCompressScale, x, slotMapping,
                                                         quantMode, roundScale, mx_scale_rule, product, scale,
                                                         ACLNN_OP, _CAMEL),
                              lambda plan: _WORKSPACE_BYTES,
                              dict(indexerCompressCache=indexerCompressCache, indexerCompressScale=indexerCompressScale,
                                   x=x, slotMapping=slotMapping))


@aclnn_api
def aclnnIndexerCompressEpilog(workspace, workspaceSize, executor, stream=None):
    """Phase two: updates the cache and scale arrays given in phase one. Returns 0."""
    return run_executor(ACLNN_OP, workspace, workspaceSize, executor, stream)
