"""Cost builders: a plan (or, for the generic kernels, the shapes) -> a per-tile list of transfers and
vector/cube instructions -> `Work` (uncalibrated seconds per pipe on the critical core).

The instruction lists follow the vendor kernels' steps as shared/spec/ARITHMETIC.md describes them
(one Ascend C API call per step; reductions one call per row). Tile sizes come from the plan's tiles
when the plan names them; otherwise they are derived from the shapes and the UB size (noted per builder).
"""
from __future__ import annotations

import math

from npusim import formats
from npusim.plan import TensorSpec, spec_of

from perfmodel.model import Work

# -- helpers -------------------------------------------------------------------------------------------


_DT_NAMES: dict = {}


def _dt(spec) -> str:
    """Canonical dtype name (memoised: formats.dtype_name scans every known dtype)."""
    name = _DT_NAMES.get(spec.dtype)
    if name is None:
        name = _DT_NAMES[spec.dtype] = formats.dtype_name(spec.dtype)
    return name


def _size(spec) -> int:
    """Elements of a TensorSpec (math.prod: TensorSpec.size goes through numpy, slow per call)."""
    return math.prod(spec.shape)


def _nbytes(spec) -> int:
    return math.prod(spec.shape) * spec.dtype.itemsize


def _tile(plan, names, default):
    """First of `names` present in plan.tiles (a positive number), else default."""
    tiles = getattr(plan, "tiles", None) or {}
    for n in names:
        v = tiles.get(n)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return v
    return default


def _cdiv(a, b):
    return -(-int(a) // int(b))


def _ub_rows(hw, row_ub_bytes: float, buffers: int = 2, reserve: int = 8192) -> int:
    """Rows of `row_ub_bytes` UB footprint that fit in UB with `buffers` copies (0 if not even one)."""
    return int(max(0, hw.soc.ub_bytes - reserve) // max(1.0, row_ub_bytes * buffers))


def vector_rows(hw, *, rows, cols, in_bytes, out_bytes, block_dim, rows_per_tile, tile_ops, row_ops=(),
                rows_ops=(), once_in_bytes=0.0, scalar_cycles_per_row=0.0, scatter_rows=False,
                out_row_pieces=(), double_buffer=True, core_type="aiv"):
    """Seconds per pipe on the critical core of a row-wise vector kernel.

    rows x cols elements; in_bytes/out_bytes per element streamed in/out (contiguous unless
    scatter_rows: then every output row is its own store, pieces of out_row_pieces bytes each);
    tile_ops: (op, dtype, factor) called once per tile over rows_per_tile*cols*factor elements;
    row_ops: (op, dtype) called once per row over cols elements; rows_ops: (op, dtype) once per tile
    over rows_per_tile elements. A row longer than UB is split (rows_per_tile < 1 = fraction of a row).
    """
    bd = max(1, int(block_dim))
    rows_core = _cdiv(rows, bd) if rows > 0 else 0
    # the costs depend on rows only through the critical core's share: a token sweep over 10,000 row
    # counts needs a few hundred distinct evaluations (memoised per Hardware; callers get a copy)
    key = (rows_core, cols, in_bytes, out_bytes, rows_per_tile, tuple(tile_ops), tuple(row_ops), tuple(rows_ops),
           once_in_bytes, scalar_cycles_per_row, scatter_rows, tuple(out_row_pieces))
    memo = hw.__dict__.setdefault("_vector_rows_memo", {})
    hit = memo.get(key)
    if hit is None:
        hit = _vector_rows(hw, rows_core, cols, in_bytes, out_bytes, rows_per_tile, tile_ops, row_ops, rows_ops,
                           once_in_bytes, scalar_cycles_per_row, scatter_rows, out_row_pieces)
        if len(memo) >= 100_000:
            memo.clear()
        memo[key] = hit
    return dict(hit[0]), hit[1]


def _vector_rows(hw, rows_core, cols, in_bytes, out_bytes, rows_per_tile, tile_ops, row_ops, rows_ops,
                 once_in_bytes, scalar_cycles_per_row, scatter_rows, out_row_pieces):
    rpt = rows_per_tile
    pipes = dict.fromkeys(("mte2", "mte3", "vector", "scalar"), 0.0)
    if rows_core == 0 or cols == 0:
        return pipes, 0
    if rpt >= 1:
        rpt = int(rpt)
        full, rem = divmod(rows_core, rpt)
        tile_list = [(rpt, full)] + ([(rem, 1)] if rem else [])
        n_tiles = full + (1 if rem else 0)
        chunk_elems = rpt * cols
    else:                                   # a row split into chunks of cols*rpt elements
        chunks = math.ceil(1.0 / rpt)
        tile_list = [(1, rows_core)]
        n_tiles = rows_core * chunks
        chunk_elems = math.ceil(cols / chunks)
    for r, count in tile_list:
        elems = r * cols
        for op, dt, factor in tile_ops:
            if rpt >= 1:
                pipes["vector"] += hw.vec(op, dt, elems * factor, count)
            else:
                pipes["vector"] += hw.vec(op, dt, chunk_elems * factor, count * chunks)
        for op, dt in row_ops:
            pipes["vector"] += hw.vec(op, dt, cols, count * r)
        for op, dt in rows_ops:
            pipes["vector"] += hw.vec(op, dt, r, count)
    pipes["mte2"] = hw.stream("gm_to_ub", rows_core * cols * in_bytes, chunk_elems * in_bytes) \
        + hw.dma("gm_to_ub", once_in_bytes)
    if scatter_rows:
        for piece in out_row_pieces:
            pipes["mte3"] += hw.dma("ub_to_gm", piece, rows_core)
    else:
        pipes["mte3"] = hw.stream("ub_to_gm", rows_core * cols * out_bytes, chunk_elems * out_bytes)
        for piece in out_row_pieces:        # small per-row outputs (scales) stored once per tile
            pipes["mte3"] += hw.stream("ub_to_gm", rows_core * piece, max(piece, min(rpt, rows_core) * piece))
    pipes["scalar"] = scalar_cycles_per_row * rows_core / hw.vec_hz
    return pipes, n_tiles


def _bits(dtype_name: str) -> float:
    return 0.5 if dtype_name == "int4" else formats.as_dtype(dtype_name).itemsize


# -- generic kernels -----------------------------------------------------------------------------------

def add_work(hw, x, y, *, block_dim=None, tile_bytes=32768, double_buffer=True, l2_bypass=False,
             bank_conflict_free=False):
    """z = x + y streamed through UB (the Ascend C Add sample's structure, HARDWARE.md sec. 7.1)."""
    x, y = spec_of(x), spec_of(y)
    shape = x.shape if x.shape == y.shape else __import__("numpy").broadcast_shapes(x.shape, y.shape)
    n = math.prod(shape)
    dt = _dt(x)
    isz = x.dtype.itemsize
    cores = hw.vector_cores()
    if block_dim is not None and int(block_dim) < 1:
        raise ValueError(f"add: block_dim must be >= 1, got {block_dim}")
    if int(tile_bytes) < isz:
        raise ValueError(f"add: tile_bytes must hold at least one element, got {tile_bytes}")
    bd = max(1, min(int(block_dim or cores), cores, _cdiv(max(n, 1) * isz, 256)))
    tile_elems = max(1, int(tile_bytes) // isz)
    pipes, n_tiles = vector_rows(hw, rows=_cdiv(n, tile_elems) if n else 0, cols=tile_elems, in_bytes=2 * isz,
                                 out_bytes=isz, block_dim=bd, rows_per_tile=1,
                                 tile_ops=[("add", dt, 1)], double_buffer=double_buffer)
    # vector_rows streams x and y as one 2*isz stream: re-cost as two copies per tile
    per_core = _cdiv(_cdiv(n, tile_elems), bd) if n else 0
    pipes["mte2"] = 2 * hw.dma("gm_to_ub", tile_elems * isz, per_core)
    if bank_conflict_free:
        pipes["vector"] *= hw.bank_conflict_free_factor
    nbytes = n * isz
    core_type = "aiv" if hw.soc.core_layout == "split" else "aicore"
    return Work(hw=hw, core_type=core_type, block_dim=bd, n_tiles=n_tiles, pipes=pipes,
                bytes_read=_nbytes(x) + _nbytes(y), bytes_written=nbytes, double_buffer=double_buffer,
                l2_bypass=l2_bypass, flops=n, largest_load=tile_elems * isz,
                tiles={"tile_bytes": tile_elems * isz, "tiles_per_core": n_tiles,
                       "double_buffer": int(bool(double_buffer))})


def matmul_core(hw, *, M, K, N, batch=1, dtype="float16", in_bytes=2.0, out_bytes=2.0, block_dim=None,
                tiling="best", base=None, epilogue="fixpipe", core_type="aic"):
    """Pipes of a tiled cube matmul (GM->L1 MTE2, L1->L0 MTE1, mmad, L0C->GM fixpipe).

    Base block (baseM, baseN, baseK) from the plan or the family's data file (best tiling), shrunk to
    the problem; blocks of the output are dealt round-robin to the cores (the critical core gets
    ceil(blocks / cores)). 'naive' tiling: 128x128 base blocks, one K step per GM->L1 copy.
    """
    c = hw.cube
    fm, fk, fn = hw.fractal(dtype)
    bm, bn, bk = base or (c["base_m"], c["base_n"], max(fk, int(c["base_k_bytes"] / in_bytes)))
    depth = c["l1_depth_k"]
    if tiling == "naive":
        bm, bn, depth = min(bm, 128), min(bn, 128), 1
    bm = min(bm, _cdiv(M, fm) * fm)
    bn = min(bn, _cdiv(N, fn) * fn)
    bk = min(bk, _cdiv(K, fk) * fk)
    blocks = batch * _cdiv(M, bm) * _cdiv(N, bn)
    cores = hw.soc.aic
    bd = max(1, min(int(block_dim or cores), cores, blocks))
    per_core = _cdiv(blocks, bd)
    ksteps = _cdiv(K, bk)
    a_panel, b_panel = bm * K * in_bytes, K * bn * in_bytes
    pipes = dict.fromkeys(("mte1", "mte2", "cube", "fixpipe"), 0.0)
    pipes["cube"] = per_core * ksteps * hw.mmad(bm, bk, bn, dtype)
    a_chunk, b_chunk = bm * bk * depth * in_bytes, bk * depth * bn * in_bytes
    pipes["mte2"] = per_core * (hw.stream("gm_to_l1", a_panel, a_chunk) + hw.stream("gm_to_l1", b_panel, b_chunk))
    pipes["mte1"] = per_core * ksteps * (hw.dma("l1_to_l0a", bm * bk * in_bytes)
                                         + hw.dma("l1_to_l0b", bk * bn * in_bytes))
    if epilogue == "fixpipe":
        pipes["fixpipe"] = per_core * hw.dma("l0c_to_gm", bm * bn * out_bytes)
    traffic = blocks * (a_panel + b_panel) + batch * M * N * out_bytes
    info = {"base_m": bm, "base_n": bn, "base_k": bk, "blocks": blocks, "blocks_per_core": per_core,
            "k_steps": ksteps}
    return pipes, bd, per_core * ksteps, traffic, max(a_chunk, b_chunk), info


def matmul_work(hw, a, b, *, block_dim=None, tiling="best"):
    """C[M,N] fp16 = A[M,K] @ B[K,N] (fp16/bf16) with the Ascend C matmul sample's tiling (sec. 7.2)."""
    a, b = spec_of(a), spec_of(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: a must be [M,K] and b [K,N], got {a.shape} and {b.shape}")
    dt = _dt(a)
    if dt not in ("float16", "bfloat16") or _dt(b) != dt:
        raise ValueError(f"matmul: a and b must both be float16 or bfloat16, got {dt} and {_dt(b)}")
    if tiling not in ("best", "naive"):
        raise ValueError(f"matmul: tiling must be 'best' or 'naive', got {tiling!r}")
    M, K = a.shape
    N = b.shape[1]
    if min(M, K, N) < 1:
        raise ValueError(f"matmul: M, K and N must be >= 1, got {M}, {K}, {N}")
    pipes, bd, n_tiles, traffic, largest, info = matmul_core(hw, M=M, K=K, N=N, dtype=dt, block_dim=block_dim,
                                                             tiling=tiling)
    core_type = "aic" if hw.soc.core_layout == "split" else "aicore"
    return Work(hw=hw, core_type=core_type, block_dim=bd, n_tiles=n_tiles, pipes=pipes,
                bytes_read=_nbytes(a) + _nbytes(b), bytes_written=M * N * 2, gm_traffic=traffic,
                double_buffer=True, flops=2.0 * M * N * K, largest_load=largest, tiles=info)


# -- operators (from their npusim plans) -------------------------------------------------------------

def _plan_work(plan, hw, pipes, n_tiles, *, bytes_read, bytes_written, flops, largest, tiles, core_type=None,
               gm_traffic=0.0, double_buffer=None, phases=()):
    if double_buffer is None:
        double_buffer = bool(plan.tiles.get("double_buffer", True))
    t = dict(plan.tiles)
    t.update({k: v for k, v in tiles.items() if k not in t})
    return Work(hw=hw, core_type=core_type or plan.core_type, block_dim=max(1, int(plan.block_dim)),
                n_tiles=n_tiles, pipes=pipes, bytes_read=bytes_read, bytes_written=bytes_written,
                gm_traffic=gm_traffic, double_buffer=double_buffer, flops=flops, largest_load=largest,
                tiling_key=plan.tiling_key, tiles=t, plan=plan, phases=list(phases))


def _io_bytes(plan):
    rd = sum(_nbytes(s) for s in plan.inputs.values() if s is not None)
    wr = sum(_nbytes(s) for s in plan.outputs.values() if s is not None)
    return rd, wr


def dynamic_quant_work(plan, hw, asymmetric=False):
    """DynamicQuant(V2): per-row absmax (or min/max) then scale and cast (ARITHMETIC.md sec. 1).

    Instruction lists: A2/A3 sec. 1.1/1.2 (Cast, [Mul smooth], Abs, ReduceMax, Div, Muls, Cast x3);
    310P/910 sec. 1.4 (fp16 Abs, ReduceMax, scalar 127/m, fp16 Muls, Cast); 950 sec. 1.3 (Div by scale).
    Rows per tile: plan.tiles 'rows_per_tile' (or 'ub_rows', 'multi_row_num', 'row_num_per_loop'), else
    as many rows as fit UB twice.
    """
    x = plan.inputs["x"]
    cols = x.shape[-1]
    rows = _size(x) // max(1, cols)
    dt_in = _dt(x)
    y = plan.outputs.get("y")
    out_name = _dt(y) if y is not None else "int8"
    out_b = 0.5 if out_name in ("int4", "int32") else 1.0
    if y is not None and out_name == "int32":
        out_b = 0.5                          # packed int4
    smooth = plan.inputs.get("smooth_scales")
    group = plan.inputs.get("group_index")
    fam = hw.family
    f32 = "float32"
    ub_row = cols * (x.dtype.itemsize + 4 * 2 + 1)
    rpt = _tile(plan, ("multiRowNumHeadCore", "rows_per_tile"), None)
    inner = _tile(plan, ("innerLoopEle",), None)
    if inner and inner < cols:                # row split into UB-sized chunks (key 6/8)
        rpt = inner / cols
    if rpt is None:
        fit = _ub_rows(hw, ub_row)
        rpt = max(1, min(fit, 64)) if fit >= 1 else hw.soc.ub_bytes / 2 / max(1, ub_row)
    if fam == "310p910":
        tile_ops = [("abs", "float16", 1), ("muls", "float16", 1), ("cast_f16_i8", "float16", 1)]
        row_ops = [("reduce_max", "float16")]
        rows_ops = []
        scalar = 20.0
    else:
        tile_ops = [("cast_f16_f32", dt_in if dt_in == "float16" else "float16", 1), ("abs", f32, 1)]
        if smooth is not None:
            tile_ops.append(("mul", f32, 1))
        row_ops = [("reduce_max", f32)]
        rows_ops = [("div", f32), ("muls", f32)]
        if fam == "950":
            tile_ops.append(("div", f32, 1))
        else:
            row_ops.append(("muls", f32))
        if out_name.startswith("float8"):
            tile_ops.append(("cast_f32_f8", f32, 1))
        else:
            tile_ops += [("cast_f32_i32", f32, 1), ("cast_i32_f16", "int32", 1), ("cast_f16_i8", "float16", 1)]
        scalar = 10.0
        if asymmetric:
            row_ops.append(("reduce_max", f32))          # ReduceMin: same cost class
            tile_ops.append(("adds", f32, 1))
            scalar += 40.0                                # scalar scale/offset arithmetic per row
    if group is not None:
        scalar += 10.0                                    # which expert owns the row
    once = _nbytes(smooth) if (smooth is not None and group is None) else 0.0
    in_b = x.dtype.itemsize + (smooth.dtype.itemsize if (smooth is not None and group is not None) else 0.0)
    pieces = [4.0] + ([4.0] if asymmetric else [])
    pipes, n_tiles = vector_rows(hw, rows=rows, cols=cols, in_bytes=in_b, out_bytes=out_b,
                                 block_dim=plan.block_dim, rows_per_tile=rpt, tile_ops=tile_ops, row_ops=row_ops,
                                 rows_ops=rows_ops, once_in_bytes=once, scalar_cycles_per_row=scalar,
                                 out_row_pieces=pieces)
    # the vendor tiling's useDb (keys 2/3) double-buffers; the other keys' queues do not (ARITHMETIC sec. 1.0)
    db = bool(plan.tiles.get("useDb", plan.tiles.get("double_buffer", 1)))
    rd, wr = _io_bytes(plan)
    return _plan_work(plan, hw, pipes, n_tiles, bytes_read=rd, bytes_written=wr, flops=rows * cols * 5.0,
                      largest=min(rpt, 1e9) * cols * x.dtype.itemsize, tiles={"rows_per_tile": rpt},
                      double_buffer=db)


def dynamic_quant_asym_work(plan, hw):
    return dynamic_quant_work(plan, hw, asymmetric=True)


def indexer_compress_epilog_work(plan, hw):
    """950 FP8 block quant of x rows, scattered by slot_mapping (ARITHMETIC.md sec. 2): per 128-element
    block absmax -> scale -> Div -> fp8 cast; each row is stored to its own slot (two stores per row).
    Rows per tile from plan.tiles ('rows_per_tile'...), else UB-derived. Every row is assumed valid
    (slot != -1): the plan does not know the slots."""
    x = plan.inputs["x"]
    d = x.shape[-1]
    rows = _size(x) // max(1, d)
    cache = plan.inputs.get("indexer_compress_cache") or plan.outputs.get("indexer_compress_cache")
    scale = plan.inputs.get("indexer_compress_scale") or plan.outputs.get("indexer_compress_scale")
    scale_row = (_nbytes(scale) / max(1, scale.shape[0])) if scale is not None else d / 128 * 4
    mode = plan.attrs.get("quant_mode", 1)
    f32 = "float32"
    rpt = _tile(plan, ("rowFactor", "rows_per_tile"), None)
    if rpt is None:
        rpt = max(1, min(_ub_rows(hw, d * (x.dtype.itemsize + 4 * 2 + 1)), 16))
    tile_ops = [("cast_f16_f32", "float16", 1), ("abs", f32, 1), ("block_reduce_max", f32, 1),
                ("div", f32, 1), ("cast_f32_f8", f32, 1)]
    rows_ops = [("muls", f32)] + ([("maxs", f32), ("muls", f32)] if mode == 0 else [])
    pipes, n_tiles = vector_rows(hw, rows=rows, cols=d, in_bytes=x.dtype.itemsize + 4.0 / d, out_bytes=1.0,
                                 block_dim=plan.block_dim, rows_per_tile=rpt, tile_ops=tile_ops,
                                 rows_ops=rows_ops, scalar_cycles_per_row=20.0, scatter_rows=True,
                                 out_row_pieces=(d * 1.0, scale_row))
    rd = _nbytes(x) + rows * 4
    wr = rows * (d + scale_row)
    return _plan_work(plan, hw, pipes, n_tiles, bytes_read=rd, bytes_written=wr, flops=rows * d * 4.0,
                      largest=rpt * d * x.dtype.itemsize, tiles={"rows_per_tile": rpt},
                      gm_traffic=rd + wr * (1 if cache is None else 1))


def fake_quant_work(plan, hw):
    """FakeQuantPerChannelAffineCachemask (ARITHMETIC.md sec. 3.2): per element Mul by 1/scale, Cast
    (rint) and back, Add zp, two Compares + Select for the mask, Maxs/Mins clamp, Sub zp, Mul scale,
    mask cast to bool; fp16 adds a Cast in and out. Tile elements from plan.tiles ('tile_len',
    'ub_factor', 'elems_per_tile'), else UB-derived."""
    x = plan.inputs.get("x") or plan.inputs.get("self")
    n = _size(x)
    dt = _dt(x)
    f32 = "float32"
    ops = [("mul", f32, 1), ("cast_f32_i32", f32, 2), ("add", f32, 1), ("compare", f32, 2),
           ("select", f32, 1), ("maxs", f32, 1), ("mins", f32, 1), ("sub", f32, 1), ("mul", f32, 1),
           ("cast_f16_i8", "float16", 1)]
    if dt == "float16":
        ops += [("cast_f16_f32", "float16", 1), ("cast_f32_f16", f32, 1)]
    tile = _tile(plan, ("tileLength", "tile_elems"), None)
    if tile is None:
        per_elem_ub = x.dtype.itemsize * 2 + 4 * 4 + 1 * 2
        tile = max(256, (hw.soc.ub_bytes - 8192) // per_elem_ub // 256 * 256)
    tile = int(tile)
    rows = _cdiv(n, tile) if n else 0
    pipes, n_tiles = vector_rows(hw, rows=rows, cols=tile, in_bytes=x.dtype.itemsize + 8.0 / 64,
                                 out_bytes=x.dtype.itemsize + 1.0, block_dim=plan.block_dim,
                                 rows_per_tile=1, tile_ops=ops)
    rd, wr = _io_bytes(plan)
    return _plan_work(plan, hw, pipes, n_tiles, bytes_read=rd, bytes_written=wr, flops=n * 8.0,
                      largest=tile * x.dtype.itemsize, tiles={"tile_elems": tile})


def quant_matmul_work(plan, hw):
    """npu_quant_matmul (ARITHMETIC.md sec. 4.3): int8 (or packed int4) cube matmul; dequant in the
    fixpipe (fp16/int8/int32 output without per-token scale) or in a vector epilogue on the AIVs (bf16 or
    per-token: AIC writes int32 to a workspace, AIV applies scale/pertoken/bias and casts). 310P has no
    fixpipe: L0C -> UB -> vector dequant -> GM. Base block from plan.tiles ('base_m', 'base_n', 'base_k')
    when present."""
    x1, x2 = plan.inputs["x1"], plan.inputs["x2"]
    out = next(iter(plan.outputs.values()))
    int4 = _dt(x1) == "int32" or _dt(x1) == "int4"
    dtype = "int4" if int4 else "int8"
    M, K = x1.shape[-2], x1.shape[-1] * (8 if _dt(x1) == "int32" else 1)
    N = out.shape[-1]
    batch = max(1, _size(out) // max(1, out.shape[-2] * N))
    in_b = 0.5 if int4 else 1.0
    out_b = out.dtype.itemsize
    pertoken = plan.inputs.get("pertoken_scale") is not None
    out_name = _dt(out)
    fam = hw.family
    unit = plan.tiles.get("epilogue_unit")
    if M * N == 0:      # 950 accepts m = 0 or n = 0 and returns an empty output: launch costs only
        zero = dict.fromkeys(("mte1", "mte2", "cube", "fixpipe"), 0.0)
        return _plan_work(plan, hw, zero, 0, bytes_read=0.0, bytes_written=0.0, flops=0.0, largest=0.0, tiles={})
    if fam == "310p910":
        epi = "ub"
    elif unit in ("vector", "fixpipe"):
        epi = unit
    elif out_name == "bfloat16" or pertoken:
        epi = "vector"
    else:
        epi = "fixpipe"
    base = None
    bm = _tile(plan, ("base_m", "baseM"), None)
    if bm:
        base = (int(bm), int(_tile(plan, ("base_n", "baseN"), 256)), int(_tile(plan, ("base_k", "baseK"), 128)))
    pipes, bd, n_tiles, traffic, largest, info = matmul_core(
        hw, M=M, K=K, N=N, batch=batch, dtype=dtype, in_bytes=in_b, out_bytes=out_b if epi == "fixpipe" else 4,
        block_dim=plan.block_dim, base=base, epilogue="fixpipe" if epi != "ub" else "none")
    f32 = "float32"
    if epi in ("vector", "ub"):
        # the epilogue on this core's share of the output (split parts: 2 AIV per AIC share it)
        share = _cdiv(batch * M * N, bd) / (2 if hw.soc.core_layout == "split" else 1)
        chunk = 8192
        calls = _cdiv(share, chunk)
        vec = hw.vec("cast_f32_i32", f32, chunk, calls) + hw.vec("mul", f32, chunk, calls) \
            + hw.vec("cast_f32_f16", f32, chunk, calls)
        if pertoken:
            vec += hw.vec("mul", f32, chunk, calls)
        pipes["vector"] = vec
        pipes["mte3"] = hw.stream("ub_to_gm", share * out_b, chunk * out_b)
        if epi == "vector":
            pipes["fixpipe"] = hw.stream("l0c_to_gm", _cdiv(batch * M * N, bd) * 4, info["base_m"] * info["base_n"] * 4)
            pipes["mte2"] += hw.stream("gm_to_ub", share * 4, chunk * 4)
            traffic += 2 * batch * M * N * 4
    rd, wr = _io_bytes(plan)
    core_type = "mix" if epi == "vector" else ("aicore" if hw.soc.core_layout == "coupled" else "aic")
    w = _plan_work(plan, hw, pipes, n_tiles, bytes_read=rd, bytes_written=wr, flops=2.0 * batch * M * N * K,
                   largest=largest, tiles=info, core_type=core_type, gm_traffic=traffic)
    return w


def moe_init_routing_quant_work(plan, hw):
    """MoeInitRoutingQuant (ARITHMETIC.md sec. 5): phase 1 sorts the n*k expert ids (Cast, Muls -1,
    Sort32, MrgSort passes: per-core sort then a merge of the cores' runs), phase 2 scatters the row
    indices and gathers, quantizes (fp16 Muls, Adds, Cast to int8) and stores the expanded rows."""
    x = plan.inputs["x"]
    n, H = x.shape
    eidx = plan.inputs.get("expert_idx")
    k = eidx.shape[-1] if eidx is not None else 1
    active = plan.attrs.get("active_num", n)
    nk = n * k
    out_rows = min(n, int(active)) * k
    bd = max(1, int(plan.block_dim))
    f32 = "float32"
    vbs = plan.tiles.get("vbs") if isinstance(plan.tiles.get("vbs"), dict) else {}
    sort_cores = max(1, int(vbs.get("needCoreNum", bd)))
    per_core = _cdiv(nk, sort_cores)
    passes = max(0, math.ceil(math.log(max(per_core, 32) / 32, 4)))
    sort = dict.fromkeys(("mte2", "mte3", "vector", "scalar"), 0.0)
    sort["mte2"] = hw.stream("gm_to_ub", per_core * 8, 16384)
    sort["vector"] = hw.vec("cast_f32_i32", f32, per_core) + hw.vec("muls", f32, per_core) \
        + hw.vec("sort32", f32, per_core) + passes * hw.vec("merge_sort", f32, per_core)
    sort["mte3"] = hw.stream("ub_to_gm", per_core * 8, 16384)
    merge = dict.fromkeys(("mte2", "mte3", "vector"), 0.0)
    if sort_cores > 1:
        mpasses = math.ceil(math.log(sort_cores, 4))
        merge["vector"] = mpasses * hw.vec("merge_sort", f32, nk)
        merge["mte2"] = hw.stream("gm_to_ub", nk * 8, 16384) * mpasses
        merge["mte3"] = hw.stream("ub_to_gm", nk * 8, 16384) * mpasses
    dt = _dt(x)
    tile_ops = [("muls", "float16", 1), ("adds", "float16", 1), ("cast_f16_i8", "float16", 1)]
    if dt != "float16":
        tile_ops.insert(0, ("cast_f32_f16", f32, 1))
        if dt == "bfloat16":
            tile_ops.insert(0, ("cast_f16_f32", "float16", 1))
    g = plan.tiles.get("gather") if isinstance(plan.tiles.get("gather"), dict) else {}
    isz = x.dtype.itemsize
    if g.get("split") in ("n", "k") and g.get("perCoreRows") and g.get("perCorePerLoopRows"):
        # moe_quant_gather_out.h (SPLIT_N / SPLIT_K): per k-tile, each loop copies perLoopRows consecutive
        # SOURCE rows of x in one DataCopy, quantizes them once, then stores every row to each of its k
        # destinations with its own DataCopyPad (skipped when the destination is >= activateRows)
        core_rows, per_loop = int(g["perCoreRows"]), int(g["perCorePerLoopRows"])
        last_loop = int(g.get("perCoreLastLoopRows") or per_loop)
        core_k = int(g.get("perCoreK") or k)
        k_loops = _cdiv(core_k, max(1, int(g.get("perCorePerLoopK") or core_k)))
        max_cols = int(g.get("maxColsOneLoop") or H)
        cols_loops = _cdiv(H, max_cols)
        col_tiles = [(max_cols, cols_loops - 1), (H - (cols_loops - 1) * max_cols, 1)]
        loops = _cdiv(core_rows, per_loop)
        gather = dict.fromkeys(("mte2", "mte3", "vector", "scalar"), 0.0)
        for rows, count in ((per_loop, loops - 1), (last_loop, 1)):
            gather["mte2"] += hw.dma("gm_to_ub", rows * 4 * min(k, core_k), count * k_loops)     # indices
            for cols_t, c_count in col_tiles:
                n_calls = count * c_count * k_loops
                gather["mte2"] += hw.dma("gm_to_ub", rows * cols_t * isz, n_calls)
                elems = rows * _cdiv(cols_t, 32) * 32
                for op, odt, factor in tile_ops:
                    gather["vector"] += hw.vec(op, odt, elems * factor, n_calls)
        stores = core_rows * core_k * min(1.0, out_rows / max(1, nk))
        for cols_t, c_count in col_tiles:
            gather["mte3"] += hw.dma("ub_to_gm", cols_t, stores * c_count)
        n_tiles = k_loops * loops * cols_loops
        rpt = per_loop if cols_loops == 1 else 1.0 / cols_loops
    else:
        # SPLIT_ACTIVATE_ROW (moe_quant_gather_out_small_activate_row.h): one gathered OUTPUT row at a time
        rpt = g.get("perCorePerLoopRows") or _tile(plan, ("rows_per_tile",), None)
        if rpt and g.get("colsLoops", 1) > 1:
            rpt = 1.0 / g["colsLoops"]               # a row split into column chunks
        if rpt is None:
            fit = _ub_rows(hw, H * (isz + 2 + 1))
            rpt = max(1, min(fit, 32)) if fit >= 1 else hw.soc.ub_bytes / 2 / (H * (isz + 3))
        rows_core = int(g.get("perCoreRows") or _cdiv(out_rows, bd))
        gather, n_tiles = vector_rows(hw, rows=rows_core, cols=H, in_bytes=isz, out_bytes=1.0,
                                      block_dim=1, rows_per_tile=rpt, tile_ops=tile_ops)
        # rows are gathered one by one (source row = sorted_row_idx % n): one load per row
        gather["mte2"] = hw.dma("gm_to_ub", H * isz, rows_core)
    # expanded_row_idx: one small scattered store per element, by the src_to_dst stage, which splits the
    # n*k elements over its own cores (plan.tiles['src_to_dst'], not the sort's needCoreNum)
    s2d = plan.tiles.get("src_to_dst") if isinstance(plan.tiles.get("src_to_dst"), dict) else {}
    s2d_rows = int(s2d.get("perCoreRows") or _cdiv(nk, bd))
    gather["mte3"] += hw.dma("ub_to_gm", 4, s2d_rows) + hw.stream("ub_to_gm", per_core * 4, 16384)
    rd, wr = _io_bytes(plan)
    return _plan_work(plan, hw, gather, n_tiles, bytes_read=rd, bytes_written=wr, flops=out_rows * H * 3.0 + nk * 8,
                      largest=max(16384, H * isz), tiles={"rows_per_tile": rpt, "sort_passes": passes},
                      gm_traffic=rd + wr + 4 * nk * 8, phases=[(sort, 1, False), (merge, 1, False)])


PLAN_BUILDERS = {
    "npu_dynamic_quant": dynamic_quant_work,
    "npu_dynamic_quant_asymmetric": dynamic_quant_asym_work,
    "indexer_compress_epilog": indexer_compress_epilog_work,
    "fake_quantize_per_channel_affine_cachemask": fake_quant_work,
    "npu_quant_matmul": quant_matmul_work,
    "moe_init_routing_quant": moe_init_routing_quant_work,
}

__all__ = ["TensorSpec", "add_work", "matmul_work", "PLAN_BUILDERS"]
