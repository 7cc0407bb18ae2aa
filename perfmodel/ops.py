"""Cost builders: a plan (or, for the generic kernels, the shapes) -> the loops of the critical core -> `Work`.

Each builder follows the vendor kernel's own loop: what one iteration loads, which Ascend C vector calls
it makes (one ATT `k*n + b` cost per call, perfmodel/data/vector_ops.csv), which of them wait for the one
before (PipeBarrier), what the scalar unit reads back, what it stores, and how the kernel's queues let
iterations overlap (perfmodel.model.Loop). Tile sizes and core counts come from the operator's npusim plan.
Sources per builder in its docstring; shared/spec/ARITHMETIC.md has the kernels' steps.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from npusim import _checks, formats
from npusim.plan import spec_of
from npusim.quant_matmul import ACL_FORMAT_FRACTAL_NZ, ACL_FORMAT_ND, check_weight_format

from perfmodel.model import Loop, Work

# -- helpers -------------------------------------------------------------------------------------------

def _dt(spec) -> str:
    """Canonical dtype name."""
    return formats.dtype_name(spec.dtype)


def _size(spec) -> int:
    return math.prod(spec.shape)


def _nbytes(spec) -> float:
    n = math.prod(spec.shape)
    return n * 0.5 if _dt(spec) == "int4" else n * spec.dtype.itemsize


def _cdiv(a, b):
    return -(-int(a) // int(b))


def _align(a, b):
    return _cdiv(a, b) * b


class Vec:
    """The vector calls of one loop iteration: ATT seconds, dependent calls (PipeBarrier) and scalar reads."""

    def __init__(self, hw):
        self.hw = hw
        self.s = 0.0
        self.barriers = 0.0
        self.scalar_reads = 0.0

    def __call__(self, op: str, dtype: str, elems: float, count: float = 1.0, barrier: bool = True) -> float:
        t = self.hw.vec(op, dtype, elems, count) if elems > 0 and count > 0 else 0.0
        self.s += t
        if barrier and elems > 0:
            self.barriers += count
        return t

    def vf(self, calls, elems: float, heads: float) -> None:
        """A fused arch35 vector function over `elems` elements: the calls' per-element costs, `heads` VF
        heads (HARDWARE.md sec. 4: 20 cycles)."""
        hw = self.hw
        self.s += (sum(hw.vec_coeffs(op, dt)[0] for op, dt in calls) * elems
                   + hw.data["vector"]["vf_head_cycles"] * heads) / hw.vec_hz

    def scale(self, factor: float) -> None:
        """The same calls `factor` times (a row processed in chunks)."""
        self.s *= factor
        self.barriers *= factor
        self.scalar_reads *= factor


_CALLS_MEMO: dict = {}


def memo_calls(fn):
    """Memoise `fn(v, *args)`, a builder's vector calls on a fresh Vec (what they add to it and return), by
    hardware and args: a sweep repeats the same iterations (a full pass of the same rows) launch after
    launch. On a Vec that already holds calls it just runs (sums in another order could round otherwise)."""
    @functools.wraps(fn)
    def run(v, *args):
        if v.s or v.barriers or v.scalar_reads:
            return fn(v, *args)
        key = (fn, v.hw, args)
        hit = _CALLS_MEMO.get(key)
        if hit is None:
            out = fn(v, *args)
            if len(_CALLS_MEMO) < 65536:
                _CALLS_MEMO[key] = (v.s, v.barriers, v.scalar_reads, out)
            return out
        v.s, v.barriers, v.scalar_reads, out = hit
        return out
    return run


@memo_calls
def _each(v, calls, elems) -> None:
    """One call of each (op, dtype) in `calls` over `elems` elements."""
    for op, dtype in calls:
        v(op, dtype, elems)


def _io_bytes(plan):
    rd = sum(_nbytes(s) for s in plan.inputs.values() if s is not None)
    wr = sum(_nbytes(s) for s in plan.outputs.values() if s is not None)
    return rd, wr


def _work(plan, hw, loops, *, bytes_read=None, bytes_written=None, flops=0.0, tiles=None, core_type=None,
          block_dim=None, hbm_read_fraction=1.0, extra=(), launch_class=""):
    rd, wr = _io_bytes(plan)
    t = dict(plan.tiles)
    t.update({k: v for k, v in (tiles or {}).items() if k not in t})
    return Work(hw=hw, core_type=core_type or plan.core_type, block_dim=max(1, int(block_dim or plan.block_dim)),
                loops=loops, bytes_read=rd if bytes_read is None else bytes_read,
                bytes_written=wr if bytes_written is None else bytes_written, hbm_read_fraction=hbm_read_fraction,
                flops=flops, kernel=plan.kernel, tiling_key=plan.tiling_key, tiles=t, plan=plan, extra=list(extra),
                launch_class=launch_class, launched=bool(block_dim or plan.block_dim))


def _vector_core_type(hw) -> str:
    return "aiv" if hw.soc.core_layout == "split" else "aicore"


def _cube_core_type(hw) -> str:
    return "aic" if hw.soc.core_layout == "split" else "aicore"


# -- generic elementwise kernels -----------------------------------------------------------------------

def streamed_loops(hw, tiles, calls_of, *, in_bytes, out_bytes, n_in=1, double_buffer=True, load_row_bytes=None):
    """Loops of a vector kernel that streams its elements through UB, for each (elements, count) in `tiles`
    (tiles of no element are left out): each tile loaded (n_in inputs of in_bytes an element; in rows of
    load_row_bytes when the source is strided), computed (calls_of(v, elements) adds the vector calls to a Vec)
    and stored (out_bytes an element, or a tuple: one store per output), double-buffered or one after the
    other."""
    outs = out_bytes if isinstance(out_bytes, tuple) else (out_bytes,)
    loops = []
    for elems, count in tiles:
        if count <= 0 or elems <= 0:
            continue
        v = Vec(hw)
        calls_of(v, elems)
        b = elems * in_bytes
        load = (hw.dma("gm_to_ub", b, n_in) if load_row_bytes is None
                else n_in * hw.dma_rows("gm_to_ub", load_row_bytes, b / load_row_bytes))
        store = sum(hw.dma("ub_to_gm", elems * o) for o in outs)
        loops.append(Loop(n=count, pipes={"mte2": load, "vector": v.s, "mte3": store}, read_bytes=n_in * b,
                          write_bytes=elems * sum(outs), barriers=v.barriers,
                          overlap="double" if double_buffer else "serial", cont=bool(loops)))
    return loops


def _elementwise_cores(hw, n: int, block_dim=None) -> int:
    """Vector cores of a generic elementwise kernel over n elements: all of them, unless fewer give each core
    at least ELEMENTWISE_MIN_PER_CORE elements (or block_dim asks for fewer)."""
    cores = hw.vector_cores()
    return max(1, min(int(block_dim or cores), cores, _cdiv(max(n, 1), ELEMENTWISE_MIN_PER_CORE)))


def _ub_tile(hw, ub_bytes_per_element: float) -> int:
    """Elements of a double-buffered UB tile (multiples of 256, 8 KB of UB kept back)."""
    return max(256, int((hw.soc.ub_bytes - 8192) // (2 * ub_bytes_per_element)) // 256 * 256)


# op -> (number of inputs, vector calls per tile in the compute dtype, whether fp16 is computed in fp32).
# Compute dtype: fp32 as given, bf16 in fp32 (Cast in and out), fp16 as given unless the kernel widens it.
# Calls of the CANN kernels as their ATT APIs. The TBE Sigmoid, Gelu and Sqrt widen fp16 to fp32 on
# 910B/910_93 (sigmoid.py sigmoid_compute in its default high-precision mode; gelu.py gelu_compute_v2, the
# path after v200; sqrt.py sqrt_compute where fp32 vsqrt exists); the model widens them on every product.
# Sigmoid is 1 / (1 + exp(-x)): Muls, Exp, Adds, Div, in the TBE kernel and in ops-nn's Ascend C
# KernelSigmoid alike (not the Sigmoid high-level API). Gelu is the tanh form x / (1 + exp(-1.5958 (x +
# 0.044715 x^3))): Mul, Mul, Muls, Add, Muls, Exp, Adds, Div; op-plugin calls aclnnGelu (this kernel) for
# torch's approximate='none' too.
ELEMENTWISE = {
    "add": (2, ("add",), False),
    "maximum": (2, ("max",), False),
    "sqrt": (1, ("sqrt",), True),
    "sigmoid": (1, ("muls", "exp", "adds", "div"), True),
    "gelu": (1, ("mul", "mul", "muls", "add", "muls", "exp", "adds", "div"), True),
}
# Elements per core below which the ops-math elementwise tiling does not split further [E]: 1024.
ELEMENTWISE_MIN_PER_CORE = 1024


def elementwise_work(hw, op: str, x, y=None, *, block_dim=None, tile_bytes=None, double_buffer=True,
                     l2_bypass=False, bank_conflict_free=False):
    """z = op(x[, y]) streamed through UB: the flattened tensor split evenly over the vector cores, tiles of
    `tile_bytes` per input (default: what fits UB twice), each tile loaded, computed and stored. The Add
    best-practice sample (HARDWARE.md sec. 7.1) states its launch, tile, buffering and L2 mode; CANN's own
    elementwise kernels are taken as double-buffered with UB-sized tiles [E]."""
    if op not in ELEMENTWISE:
        raise ValueError(f"elementwise: unknown op {op!r}; known: {sorted(ELEMENTWISE)}")
    n_in, calls, widens_fp16 = ELEMENTWISE[op]
    x = spec_of(x)
    shape = x.shape
    if n_in == 2:
        if y is None:
            raise ValueError(f"{op}: needs two inputs x and y")
        y = spec_of(y)
        shape = x.shape if x.shape == y.shape else tuple(np.broadcast_shapes(x.shape, y.shape))
    n = math.prod(shape)
    dt = _dt(x)
    allowed = ("float16", "bfloat16", "float32") + (("int32",) if op in ("add", "maximum") else ())
    for name, t in (("x", x), ("y", y)):
        if t is not None and _dt(t) not in allowed:
            raise ValueError(f"{op}: {name} dtype must be one of {', '.join(allowed)}, got {_dt(t)}")
    if y is not None and _dt(y) != dt:
        # aclnn promotes a mixed pair with Cast kernels of its own first; perfmodel models the one kernel
        raise ValueError(f"{op}: x and y must have the same dtype (a mixed pair is cast first, by kernels "
                         f"perfmodel does not model; predict the cast input's dtype), got {dt} and {_dt(y)}")
    isz = x.dtype.itemsize
    widen = dt == "bfloat16" or (dt == "float16" and widens_fp16)      # computed in fp32, Cast in and out
    cdt = "float32" if widen or dt in ("float32", "int32") else "float16"
    if block_dim is not None and _checks.int_attr(op, "block_dim", block_dim) < 1:
        raise ValueError(f"{op}: block_dim must be >= 1, got {block_dim}")
    bd = _elementwise_cores(hw, n, block_dim)
    if tile_bytes is None:
        tile_elems = _ub_tile(hw, (n_in + 1) * isz + (8 if widen else 0))       # + fp32 work buffers
    else:
        if _checks.int_attr(op, "tile_bytes", tile_bytes) < isz:
            raise ValueError(f"{op}: tile_bytes must hold at least one element, got {tile_bytes}")
        tile_elems = max(1, int(tile_bytes) // isz)
    per_core = _cdiv(n, bd) if n else 0
    # a broadcast input (a bias row, a scalar) that fits one tile: each core loads it once and streams the
    # other input alone [E: how CANN's broadcast tilings place it is not published]; a larger one is
    # re-read with every tile, from L2 after its first touch
    small = None
    if n_in == 2 and x.shape != y.shape and n in (math.prod(x.shape), math.prod(y.shape)):
        small = y if math.prod(y.shape) < n else x
    once = small is not None and _nbytes(small) <= tile_elems * isz
    streamed = 1 if once else n_in

    def calls_of(v, elems):
        if widen:
            v("cast_f16_f32", "float16", elems, streamed)
        for c in calls:
            v(c, cdt, elems)
        if widen:
            v("cast_f32_f16", "float32", elems)
        if bank_conflict_free:
            v.s *= hw.bank_conflict_free_factor

    full, rem = divmod(per_core, tile_elems)
    loops = streamed_loops(hw, [(tile_elems, full), (rem, 1)], calls_of, in_bytes=isz, out_bytes=isz,
                           n_in=streamed, double_buffer=double_buffer)
    rd = sum(_nbytes(s) for s in (x, y) if s is not None)
    loaded = float(n_in * n * isz)          # what the cores load in all: each input's full size ...
    if once:                                # ... but a broadcast input once per core
        b = _nbytes(small)
        loops.insert(0, Loop(n=1, pipes={"mte2": hw.dma("gm_to_ub", b)}, read_bytes=b, overlap="none"))
        loaded = n * isz + bd * b
    return Work(hw=hw, core_type=_vector_core_type(hw), block_dim=bd, loops=loops, bytes_read=rd,
                hbm_read_fraction=min(1.0, rd / loaded) if loaded else 1.0,
                bytes_written=n * isz, l2_bypass_bytes=rd if l2_bypass else 0.0, flops=n * len(calls),
                kernel=op.title(), launch_class="Elementwise",
                tiles={"tile_bytes": tile_elems * isz, "tiles_per_core": full + (1 if rem else 0),
                       "double_buffer": int(bool(double_buffer))})


def _streamed_kernel(hw, kernel, n, in_bytes, out_bytes, calls_of, load_row_bytes=None):
    """A one-input vector kernel over n elements, split and tiled as the generic elementwise kernels [E]."""
    bd = _elementwise_cores(hw, n)
    tile = _ub_tile(hw, in_bytes + out_bytes)
    per_core = _cdiv(n, bd) if n else 0
    loops = streamed_loops(hw, [(tile, per_core // tile), (per_core % tile, 1)], calls_of, in_bytes=in_bytes,
                           out_bytes=out_bytes, load_row_bytes=load_row_bytes)
    return Work(hw=hw, core_type=_vector_core_type(hw), block_dim=bd, loops=loops, bytes_read=n * in_bytes,
                bytes_written=n * out_bytes, kernel=kernel, launch_class="Elementwise")


_SHORT = {"float16": "f16", "float32": "f32"}


def cast_work(hw, n: int, src: str, dst: str):
    """The Cast kernel an aclnn call launches to promote a tensor of n elements from dtype src to dst."""
    name = f"cast_{_SHORT[src]}_{_SHORT[dst]}"
    return _streamed_kernel(hw, "Cast", n, np.dtype(src).itemsize, np.dtype(dst).itemsize,
                            lambda v, e: v(name, src, e))


def transpose_work(hw, shape, axis: int, dtype: str):
    """The Transpose kernel an aclnn call launches to swap dimension 0 with `axis`: a copy whose runs of
    prod(shape[axis + 1:]) elements stay contiguous. Runs of a 32-byte block or more are gathered by the
    DMA, row by row; shorter ones are loaded whole and reordered in UB by vector instructions, costed as one
    write pass at ATT Duplicate's rate [E] (no Transpose timing is published for these shapes)."""
    n = math.prod(shape)
    isz = np.dtype(dtype).itemsize
    run = math.prod(shape[axis + 1:]) * isz
    if run >= 32:
        return _streamed_kernel(hw, "Transpose", n, isz, isz, lambda v, e: None, load_row_bytes=run)
    return _streamed_kernel(hw, "Transpose", n, isz, isz, lambda v, e: v("duplicate", "float32", e * isz / 4))


def add_work(hw, x, y, **kw):
    """z = x + y (the Ascend C Add best-practice sample's structure, HARDWARE.md sec. 7.1)."""
    kw.setdefault("tile_bytes", 32768)
    return elementwise_work(hw, "add", x, y, **kw)


# -- cube kernels ------------------------------------------------------------------------------------------

# Launch class of the Ascend C kernels built on the Matmul high-level API (QuantBatchMatmulV3, GroupedMatmul):
# they start alike (each core sets up the Matmul object and its L1 queues and copies a tiling of 0.4-2 KB,
# with its 200-byte TCubeTiling, from GM: ops-nn and ops-transformer tiling data); the smallest shapes of
# both take 6-9 us, where MatMulV2 (TBE) takes 1.9 us.
MATMUL_API = "MatmulApi"


def _stored_kn(hw, dtype, K, N, nz) -> tuple[int, int]:
    """K x N of a B operand as stored in GM: as it is in ND; padded to whole fractals in FRACTAL_NZ."""
    if not nz:
        return K, N
    _fm, fk, fn = hw.fractal(dtype)
    return _cdiv(K, fk) * fk, _cdiv(N, fn) * fn


def cube_loops(hw, *, M, K, N, batch=1, dtype="float16", in_bytes=2.0, block_dim=None, base=None,
               tiling="best", l0c_out_bytes=2.0, depth_a=None, depth_b=None, a_row_bytes=None, b_row_bytes=None,
               b_transposed=False, b_streamed=False, b_nz=False, c_row_bytes=None, core_share=None,
               block_loads=(), group_rows=None, unit_flag=False):
    """Loops of a tiled cube matmul on its critical core, and what the kernel moves.

    Output blocks baseM x baseN are dealt to the AICs (the critical core gets ceil(blocks / cores)); each
    block runs ceil(K / baseK) k-steps double-buffered (GM->L1 MTE2 in steps of l1_depth_k k-steps, A in
    steps of depth_a and B of depth_b where the kernel's tiling says so, L1->L0A/
    L0B MTE1, mmad), then one FixPipe of the L0C block (a 128 x 256 fp32 L0C block fills L0C: not double-
    buffered, so the next block's mmad waits for it). Loads hit L2 after the first touch: the HBM part of the
    loaded bytes is the unique input bytes over all bytes loaded. On average blocks / ceil(blocks / cores)
    cores stream at once (the last round runs on fewer cores). The last row and column blocks are tails: the
    chip's traffic counts each block as the blocks' mean rows x cols, the critical core's pipes whole blocks.

    a_row_bytes, b_row_bytes, c_row_bytes: the row strides of A, B and C in GM (default K, N (K when
    b_transposed: B is [N,K]) and N elements). Rows off the 32-byte grid cost more (GM transfers are rounded
    up to whole aligned bursts, HARDWARE.md sec. 2); the vendor does not publish by how much. The FixPipe's
    NZ->ND store of C writes every 32-byte piece of such a row across two sectors: twice the sectors. An
    ND->NZ copy in pays a fixed cost for each source row it fetches from HBM (Loop.offgrid_rows, x the
    calibration's offgrid_row_cycles); rows already in L2 (the operand's re-reads by the other blocks) pay
    none, and b_streamed B (read past L2) is all HBM. Per row, not per byte: GroupedMatmul's off-grid blocks
    cost about the same at K = 127 and K = 511, and QuantBatchMatmulV3 1024x4096x1025, whose weight rows
    eight row blocks re-read, is far cheaper than a per-row cost of every read. Once per row and block, not
    per copy: a row the block copies in several k-chunks (A in depth_a k-steps, [N,K] B in depth_b) takes
    one extra sector from HBM in all (its unaligned start; each chunk's first sector is the one the chunk
    before ended in, already in L2). Counted otherwise the measured
    set fitted worse when tried: per doubled sector, in and out with one fitted factor, GroupedMatmul 12.8% in-sample
    (11.9% per row) and a worst row of 32% (23%); per 32-byte piece of each HBM row (the work unit of the
    ND2NZ instruction's definition), 14.2% in-sample and 26% held out (15.5%); with any row not a multiple
    of 256 bytes off-grid, as the vendor's ND2NZ best-practice page calls them slow, small fp16 MatMuls lost
    their start cost to the penalty.

    Whole rows (families whose [dma] sets offgrid_whole_rows): an operand whose copies take every element of
    its rows, laid back to back in GM (A with K within one copy of depth_a k-steps, [K,N] B and C with N
    within one block, [N,K] B with K within one copy of depth_b k-steps: one ND2NZ DataCopy of nValue rows
    with dValue == srcDValue, asc-devkit data_copy_wrapper_nd.h CopyND2NZ) moves one contiguous range: its
    rows share their boundary sectors with their neighbours, so no sector is fetched twice and the HBM cost
    above does not apply. What such a copy pays instead is on the core: off the grid it cannot stream the
    rows as one burst, each row is a request of its own, a load head (load_head_cycles, ATT) per row on
    every copy, from L2 or HBM alike. C in whole rows (the FixPipe's one NZ->ND store of the block,
    copy_cube_out_fixpipe.h CopyOutNZ2ND) is one range as well, not twice the sectors, but each row starts
    and ends mid-sector and shares that sector with the next row: two requests a row.

    b_nz: B is stored FRACTAL_NZ in GM (npu_format_cast(w, 29), as vllm-ascend's static W8A8 method does):
    its tiles are whole fractals laid out as in L1, so they move as plain GM->L1 copies (msKPP's gm_to_l1
    curve, not the ND->NZ one) and no B row is off the grid (NZ pads K and N to the fractal).

    unit_flag: the kernel's MatmulConfig sets enUnitFlag (GroupedMatmul on A2: matmulCFGUnitFlag): the FixPipe
    drains L0C fractal by fractal behind the last k-step's mmad, so only what it takes beyond that mmad is
    exposed.

    core_share: (rows, cols) of one core's share of C; base blocks are no larger. block_loads: bytes per output
    column of each load a block makes from GM, unprefetched, besides its A and B tiles (a per-channel dequant's
    scale words before the FixPipe store; a bias before the first mmad, GM -> L1 -> bias table). group_rows:
    the rows of each of several matmuls that share K and N but not M (a grouped matmul's groups, each with
    its own B): their blocks are dealt to the cores together; M is then the largest group's rows and batch
    is ignored.
    """
    c = hw.cube
    fm, fk, fn = hw.fractal(dtype)
    bm, bn, bk = base or (c["base_m"], c["base_n"], max(fk, int(c["base_k_bytes"] / in_bytes)))
    depth = c["l1_depth_k"]
    if tiling == "naive":
        bm, bn, depth = min(bm, 128), min(bn, 128), 1
    if core_share:
        bm, bn = min(bm, core_share[0]), min(bn, core_share[1])
    depth_b = min(depth, depth_b or depth)
    depth = depth_a or depth
    if group_rows is None:
        group_rows = (M,) * batch
    bm = min(bm, _cdiv(M, fm) * fm)
    bn = min(bn, _cdiv(N, fn) * fn)
    bk = min(bk, _cdiv(K, fk) * fk)
    row_blocks, col_blocks = sum(_cdiv(m, bm) for m in group_rows), _cdiv(N, bn)
    blocks = row_blocks * col_blocks
    cores = hw.soc.aic
    bd = max(1, min(int(block_dim or cores), cores, blocks))
    per_core = _cdiv(blocks, bd)
    ksteps = _cdiv(K, bk)
    a_step, b_step = bm * bk * in_bytes, bk * bn * in_bytes
    # a matrix's last row and column blocks are its tails (the Matmul API's SetSingleShape per block): the
    # chip's traffic is what the blocks move, their mean rows x cols each; the critical core's own pipes
    # are costed on whole blocks (it holds whole ones)
    m_blk = sum(group_rows) / row_blocks if row_blocks else bm
    n_blk = N / col_blocks
    a_blk_step, b_blk_step = m_blk * bk * in_bytes, n_blk * bk * in_bytes    # what a block's k-step loads
    step_bytes = a_blk_step + b_blk_step
    # B is ND in GM and NZ in L1: its copies run at msKPP's ND->NZ rate (gm_to_l1_trans) [S]; an NZ B is
    # copied as it lies
    a_load = hw.dma("gm_to_l1", depth * a_step) / depth
    b_load = hw.dma("gm_to_l1" if b_nz else "gm_to_l1_trans", depth_b * b_step) / depth_b
    unique_a = sum(group_rows) * K * in_bytes
    kb, nb = _stored_kn(hw, dtype, K, N, b_nz)
    unique_b = sum(1 for m in group_rows if m) * kb * nb * in_bytes
    # off-grid source rows per k-step that come from HBM: a block's bm A rows and bn [N,K] B rows once each
    # (however many k-chunks copy them), bk K-rows of [K,N] B a k-step; each operand's first touches over all
    # the blocks load of it (the rest are L2 hits). Whole rows laid back to back pay a load head per row and
    # copy instead (docstring)
    whole_rows = bool(hw.data["dma"].get("offgrid_whole_rows", False))
    a_len, b_len = K * in_bytes, (K if b_transposed else N) * in_bytes
    a_row = a_len if a_row_bytes is None else a_row_bytes
    b_row = b_len if b_row_bytes is None else b_row_bytes
    offgrid_rows = heads = 0.0
    if a_row % 32:
        if whole_rows and a_row == a_len and K <= depth * bk:
            heads += bm / ksteps
        else:
            first = min(1.0, unique_a / (blocks * ksteps * a_blk_step))
            offgrid_rows += first * bm / ksteps
    if not b_nz and b_row % 32:
        if whole_rows and b_row == b_len and (K <= depth_b * bk if b_transposed else N <= bn):
            heads += (bn if b_transposed else K) / ksteps
        else:
            first = 1.0 if b_streamed else min(1.0, unique_b / (blocks * ksteps * b_blk_step))
            offgrid_rows += first * (bn / ksteps if b_transposed else bk)
    kloop = Loop(n=per_core * ksteps, pipes={
        "mte2": a_load + b_load + heads * hw.load_head_s,
        "mte1": hw.dma("l1_to_l0a", a_step) + hw.dma("l1_to_l0b", b_step),
        "cube": hw.mmad(bm, bk, bn, dtype)}, read_bytes=step_bytes, overlap="double",
        active=blocks / per_core, offgrid_rows=offgrid_rows)
    c_len = N * l0c_out_bytes
    c_row = c_len if c_row_bytes is None else c_row_bytes
    c_off = c_row % 32
    c_whole = whole_rows and c_off and c_row == c_len and N <= bn
    fix_pipes = {"fixpipe": hw.dma("l0c_to_gm", (2 if c_off and not c_whole else 1) * bm * bn * l0c_out_bytes)}
    if unit_flag:
        fix_pipes["fixpipe"] = max(0.0, fix_pipes["fixpipe"] - hw.mmad(bm, bk, bn, dtype))
    if c_whole:
        fix_pipes["fixpipe"] += 2 * bm * hw.load_head_s
    if block_loads:
        fix_pipes["mte2"] = sum(hw.dma("gm_to_l1", bn * b) for b in block_loads)
    fix = Loop(n=per_core, pipes=fix_pipes, read_bytes=n_blk * sum(block_loads),
               write_bytes=m_blk * n_blk * l0c_out_bytes, overlap="none", active=blocks / per_core)
    loaded = blocks * ksteps * step_bytes
    unique = unique_a + unique_b
    info = {"base_m": bm, "base_n": bn, "base_k": bk, "blocks": blocks, "blocks_per_core": per_core,
            "k_steps": ksteps}
    return [kloop, fix], bd, min(1.0, unique / loaded) if loaded else 1.0, info


def core_grid_tile(M, N, K, cores, fractal=(16, 16, 16)):
    """(rows, cols) of one core's share of C in a generic matmul (MatMulV2): of the splits m_dim x n_dim <=
    cores, the one that minimises a core's load, ceil(m / m_dim) + ceil(n / n_dim) panels of one fractal over
    the whole K (ties: more N splits). That is the objective of CANN's matmul cache tiling (cache_tiling.cc
    GetBlockDim, which also limits the splits to divisors of the extents; on A2 a cycle-model pattern search
    usually decides first, and it is closed). A problem whose A, B and C fit L0 (m k, n k <= 128 fractals,
    m n k <= 256) stays on one core, the cache tiling's mini-shape rule. m, n, k in fractals."""
    fm, fk, fn = fractal
    m, n, k = _cdiv(M, fm), _cdiv(N, fn), _cdiv(K, fk)
    if m * k <= 128 and n * k <= 128 and m * n * k <= 256:
        return m * fm, n * fn
    m_dim, n_dim = _least_load_grid(m, n, cores)
    return -(-m // m_dim) * fm, -(-n // n_dim) * fn


@functools.lru_cache(maxsize=4096)
def _least_load_grid(m: int, n: int, cores: int) -> tuple[int, int]:
    best = None
    for m_dim in range(1, min(m, cores) + 1):
        n_dim = min(n, cores // m_dim)          # the most N splits that fit: the load only falls with them
        key = (-(-m // m_dim) - (-n // n_dim), -n_dim)
        if best is None or key < best[0]:
            best = (key, m_dim, n_dim)
    return best[1], best[2]


def matmul_work(hw, a, b, *, block_dim=None, tiling="best"):
    """C[M,N] fp16 = A[M,K] @ B[K,N] (fp16/bf16): tiling 'best' is the Ascend C matmul sample's (sec. 7.2)
    128 x 256 base blocks, shrunk to one core's share of C where the problem is small (core_grid_tile),
    dealt to the cores in turn; 'naive' is the sample's naive split."""
    a, b = spec_of(a), spec_of(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: a must be [M,K] and b [K,N], got {a.shape} and {b.shape}")
    dt = _dt(a)
    if dt not in ("float16", "bfloat16") or _dt(b) != dt:
        raise ValueError(f"matmul: a and b must both be float16 or bfloat16, got {dt} and {_dt(b)}")
    if tiling not in ("best", "naive"):
        raise ValueError(f"matmul: tiling must be 'best' or 'naive', got {tiling!r}")
    if block_dim is not None and _checks.int_attr("matmul", "block_dim", block_dim) < 1:
        raise ValueError(f"matmul: block_dim must be >= 1, got {block_dim}")
    M, K = a.shape
    N = b.shape[1]
    if min(M, K, N) < 1:
        raise ValueError(f"matmul: M, K and N must be >= 1, got {M}, {K}, {N}")
    share = None
    if tiling == "best":
        share = core_grid_tile(M, N, K, min(int(block_dim or hw.soc.aic), hw.soc.aic), hw.fractal(dt))
    loops, bd, hbm_frac, info = cube_loops(hw, M=M, K=K, N=N, dtype=dt, block_dim=block_dim, tiling=tiling,
                                           core_share=share)
    core_type = _cube_core_type(hw)
    return Work(hw=hw, core_type=core_type, block_dim=bd, loops=loops, bytes_read=_nbytes(a) + _nbytes(b),
                bytes_written=M * N * 2, hbm_read_fraction=hbm_frac, flops=2.0 * M * N * K, kernel="MatMul",
                tiles=info)


# grouped_matmul's bias dtype for each input dtype (torch_npu npu_grouped_matmul doc, ptaoplist_000880:
# the non-quantized rows of its dtype table)
GROUPED_MATMUL_BIAS = {"float16": "float16", "bfloat16": "float32"}


def group_sizes(ends) -> list:
    """Rows of each group from cumulative row counts (group_list_type 0)."""
    return [b - a for a, b in zip((0, *ends), ends)]


def even_group_list(rows: int, groups: int) -> tuple:
    """Cumulative row counts of `rows` split as evenly as they go over `groups` (the first groups smaller)."""
    return tuple(rows * (g + 1) // groups for g in range(groups))


def storage_format(op: str, option: str, value) -> str:
    """'ND' or 'NZ' from a weight-format option: a name ('ND', 'NZ', 'FRACTAL_NZ', any case) or the ACL format
    code npu_format_cast takes (2 or 29), else a ValueError naming the operator and the option."""
    if isinstance(value, str) and value.strip().upper() in ("ND", "NZ", "FRACTAL_NZ"):
        return "ND" if value.strip().upper() == "ND" else "NZ"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value in (ACL_FORMAT_ND,
                                                                                         ACL_FORMAT_FRACTAL_NZ):
        return "ND" if value == ACL_FORMAT_ND else "NZ"
    raise ValueError(f"perfmodel: {op} option {option!r} must be 'ND' or 'NZ' (or the ACL format code "
                     f"{ACL_FORMAT_ND} or {ACL_FORMAT_FRACTAL_NZ}), got {value!r}"[:300])


def grouped_matmul_work(hw, x, weight, group_list, bias=None, *, transpose_weight=False, block_dim=None,
                        weight_format="ND"):
    """y = x @ weight[g] for the rows of each group g (GroupedMatmul, torch_npu.npu_grouped_matmul with one x,
    one weight tensor and group_type 0): x [M,K] and weight [E,K,N] ([E,N,K] with transpose_weight) fp16 or
    bf16, group_list the E cumulative row counts (group_list_type 0), bias [E,N] optional; y [M,N] in x's
    dtype. ops-transformer's GroupedMatmul on A2 (AIC only, MDL with enUnitFlag: grouped_matmul.cpp GMM_CUBE_IMP
    with matmulCFGUnitFlag, grouped_matmul_utils.h): 128 x 256 x 64 base blocks (the kernel sizes a
    group's last block to its rows; here no block is taller than the largest group), numbered across the
    groups and dealt to the AICs in turn, each a fresh full-K matmul with the bias loaded into the bias
    table first (cube_loops group_rows, block_loads). Empty groups are skipped. weight_format 'NZ': the
    weight cast to FRACTAL_NZ beforehand (cube_loops b_nz)."""
    x, weight = spec_of(x), spec_of(weight)
    if x.ndim != 2 or weight.ndim != 3:
        raise ValueError(f"grouped_matmul: x must be [M,K] and weight [E,K,N], got {x.shape} and {weight.shape}")
    if not isinstance(transpose_weight, (bool, np.bool_)):
        raise ValueError(f"grouped_matmul: transpose_weight must be True or False, got {transpose_weight!r}"[:300])
    dt = _dt(x)
    if dt not in ("float16", "bfloat16") or _dt(weight) != dt:
        raise ValueError(f"grouped_matmul: x and weight must both be float16 or bfloat16, got {dt} and "
                         f"{_dt(weight)}")
    M, K = x.shape
    E = weight.shape[0]
    wk, N = (weight.shape[2], weight.shape[1]) if transpose_weight else weight.shape[1:]
    if wk != K:
        raise ValueError(f"grouped_matmul: weight {'[E,N,K]' if transpose_weight else '[E,K,N]'} "
                         f"{weight.shape} does not match x's K = {K}")
    ends = group_list.tolist() if hasattr(group_list, "tolist") else group_list     # numpy or torch
    if not isinstance(ends, (list, tuple)) or not all(
            isinstance(g, numbers.Integral) and not isinstance(g, bool) for g in ends):
        raise ValueError(f"grouped_matmul: group_list must be a list or tuple of cumulative row counts (ints), "
                         f"got {group_list!r}"[:300])
    ends = [int(g) for g in ends]
    if len(ends) != E or any(b < a for a, b in zip([0] + ends, ends)) or (ends and ends[-1] > M):
        raise ValueError(f"grouped_matmul: group_list must hold E = {E} non-decreasing cumulative row counts "
                         f"ending at most at M = {M}, got {ends}")
    if bias is not None:
        bias = spec_of(bias)
        want = GROUPED_MATMUL_BIAS[dt]
        if tuple(bias.shape) != (E, N) or _dt(bias) != want:
            raise ValueError(f"grouped_matmul: bias must be [E,N] = [{E},{N}] {want} with {dt} x (torch_npu's "
                             f"npu_grouped_matmul dtype table), got {bias.shape} {_dt(bias)}")
    if block_dim is not None and _checks.int_attr("grouped_matmul", "block_dim", block_dim) < 1:
        raise ValueError(f"grouped_matmul: block_dim must be >= 1, got {block_dim}")
    if min(K, N) < 1:
        raise ValueError(f"grouped_matmul: K and N must be >= 1, got {K} and {N}")
    nz = storage_format("grouped_matmul", "weight_format", weight_format) == "NZ"
    rows = group_sizes(ends)
    in_b = x.dtype.itemsize
    # Ascend 950 runs ops-transformer's arch35 kernel (hicann/ops-transformer@735cea56 gmm/grouped_matmul/
    # op_host/op_tiling/arch35/grouped_no_quant_matmul_tiling.cpp): 256 x 256 x 64 blocks (950.toml's base
    # block), A and B each half of L1, and its own core count and L2 rule (below)
    arch35 = hw.family == "950"
    if arch35:      # CalL1Tiling: stepKa = stepKb = 4 k-steps, 3 when the bias's reserve shrinks A's half
        a_steps = b_steps = 3 if bias is not None else 4
    else:
        # A's k-steps per GM->L1 copy: stepKa = 8 from the L1 the B side (256 KB) leaves, 4 when the bias's
        # reserve shrinks it below a multiple of stepKb = 4 (ops-transformer CalcStepKaKb, 128 x 256 x 64 blocks)
        a_steps, b_steps = (4 if bias is not None else 8), None
    core_type = _cube_core_type(hw)
    if not any(rows):           # nothing to compute: launch costs only
        return Work(hw=hw, core_type=core_type, block_dim=1, loops=[], bytes_read=0.0, bytes_written=0.0,
                    kernel="GroupedMatmul", launch_class=MATMUL_API)
    loops, bd, hbm_frac, info = cube_loops(hw, M=max(rows), K=K, N=N, dtype=dt, in_bytes=in_b, block_dim=block_dim,
                                           b_transposed=transpose_weight, b_nz=nz, group_rows=rows,
                                           depth_a=a_steps, depth_b=b_steps, unit_flag=not arch35,
                                           block_loads=(bias.dtype.itemsize,) if bias is not None else ())
    used = sum(1 for m in rows if m)
    kb, nb = _stored_kn(hw, dt, K, N, nz)
    read = (sum(rows) * K + used * kb * nb) * in_b + (used * N * bias.dtype.itemsize if bias is not None else 0)
    # the tiling's baseM: 128, or M rounded up to 16 below that (ops-transformer GMM tiling)
    base_m = min(hw.cube["base_m"], _cdiv(M, 16) * 16)
    if block_dim is None and arch35 and E > 1:
        bd = hw.soc.aic             # arch35: every AIC whenever there is more than one group
    elif block_dim is None:
        # the tiling launches mDim x nDim AICs (at most all of them), mDim = E + (M - E) // baseM an upper
        # bound on the row blocks (the host cannot see group_list's values; ops-transformer CalUsedCoreNum);
        # blocks are dealt round-robin, extra cores idle
        bd = max(bd, min(hw.soc.aic, (E + max(0, M - E) // base_m) * _cdiv(N, hw.cube["base_n"])))
    # the weight of a group of one row block is read past L2 (grouped_matmul.h SetGlobalBufferW: blockDimM
    # == 1 sets CACHE_MODE_DISABLE), leaving L2 to the output: a many-expert MoE layer's weights stream
    # through without evicting what the kernel writes. arch35 (SetDisableL2Cache) does so for groups of fewer
    # than baseM rows, and only when x, the weights and y fill L2 and the weight's rows are whole 128 bytes
    if arch35:
        stream = (M * K + E * K * N + M * N) * in_b >= hw.soc.l2_bytes and ((K if transpose_weight else N)
                                                                              * in_b) % 128 == 0
        bypass = sum(1 for m in rows if 0 < m < hw.cube["base_m"]) * kb * nb * in_b if stream else 0.0
    else:
        bypass = sum(1 for m in rows if 0 < m <= base_m) * kb * nb * in_b
    return Work(hw=hw, core_type=core_type, block_dim=bd, loops=loops, bytes_read=read,
                bytes_written=sum(rows) * N * in_b, hbm_read_fraction=hbm_frac, flops=2.0 * sum(rows) * N * K,
                kernel="GroupedMatmul", launch_class=MATMUL_API, tiles={**info, "groups": E},
                l2_bypass_bytes=bypass)


# -- operators (from their npusim plans) -------------------------------------------------------------

def _rows_of_core(t) -> int:
    """Rows of the critical core in a dynamic-quant style tiling."""
    if t.get("headCoreNum", 0) > 0:
        return int(t.get("rowPerHeadCore", 0))
    return int(t.get("rowPerTailCore", t.get("rowPerHeadCore", 0)))


@memo_calls
def _dq_calls_multi_row(v, rows, H, smooth):
    """dynamic_quant_multi_row.h (key 10): each call over the whole pass of `rows` rows, the row max one
    Max call per row. Returns the vector seconds before the input buffer is released (the first Cast) and
    after the output buffer is needed (the last Mul and Cast)."""
    f32 = "float32"
    e = rows * H
    v("cast_f16_f32", "float16", e)
    early = v.s
    if smooth:
        v("broadcast", f32, e)
        v("mul", f32, e)
    v("abs", f32, e)
    v("max", f32, max(0, H // 64 - 1) * 64, rows)                # fold each row's 64-lane repeats
    if H % 64:
        v("max", f32, H % 64, rows)
    v("reduce_max", f32, 64 * rows)                              # WholeReduceMax, one repeat per row
    v("div", f32, 64 * _cdiv(rows, 64))
    v("broadcast", f32, e)                                       # BroadCast<float, 2, 1>: Brcb, then a copy [E]
    v("broadcast", f32, e)
    v("mul", f32, e)
    v("cast_f32_i16", f32, e)
    v("cast_i16_f16", "int32", e)
    before_out = v.s
    v("mul", f32, 64 * _cdiv(rows, 64), barrier=False)           # scale = max * 1/127
    v("cast_f16_i8", "float16", e)
    return early, v.s - before_out


@memo_calls
def _dq_calls_single_row(v, rows, H, smooth, fp16):
    """dynamic_quant_single_row.h (key 100) over a pass of `rows` rows: Cast to fp32, (smooth: the row copied
    to every row and a Mul), Abs (fp16 rows: in fp16, in place), each row's Max fold, one WholeReduceMax, the
    scales (Muls, Duplicate, Div; fp16 rows cast their maxima first), Brcb and a counter-mode Copy of the
    127/max to every element, a Mul, then Casts through int32 and fp16 to int8, a PipeBarrier<PIPE_V>
    after each. The input buffer (one deep) is freed after the Mul and the output buffer (one deep) taken
    after the WholeReduceMax: returns the vector seconds before the release and after the output is needed.
    Brcb and the Copy have no cost row: costed as broadcasts [E]."""
    f32 = "float32"
    e = rows * H
    lanes, dt = (128, "float16") if fp16 and not smooth else (64, f32)
    v("cast_f16_f32", "float16", e)
    if smooth:
        v("broadcast", f32, e)
        v("mul", f32, e)
    v("abs", dt, e)
    if H % lanes and H >= lanes:
        v("max", dt, H % lanes, rows)
    v("max", dt, max(0, H // lanes - 1) * lanes, rows)
    v("reduce_max", dt, lanes * rows)
    before_out = v.s
    if dt == "float16":
        v("cast_f16_f32", "float16", rows)
    v("muls", f32, rows)
    v("duplicate", f32, rows)
    v("div", f32, rows)
    v("broadcast", f32, 8 * _cdiv(rows, 8))
    v("broadcast", f32, e)
    v("mul", f32, e)
    early = v.s
    v("cast_f32_i32", f32, e)
    v("cast_i32_f16", "int32", e)
    v("cast_f16_i8", "float16", e)
    return early, v.s - before_out


@memo_calls
def _dq_calls_moe(v, rows, H):
    """dynamic_quant_moe.h (key 7) over a pass of `rows` rows: the expert's smooth row loaded and cast first
    (after a PipeBarrier<PIPE_ALL>), then the per-row calls of dynamic_quant.h with the smooth Mul (the
    ReduceMax API in place of the fold, costed alike). A row that starts another expert reloads the smooth
    row: data-dependent, not counted."""
    v("cast_f16_f32", "float16", H)
    _dq_calls_per_row.__wrapped__(v, rows, H, True, False)


@memo_calls
def _dq_calls_per_row(v, rows, H, smooth, asymmetric):
    """dynamic_quant.h (keys 0/1) and the asymmetric path of dynamic_quant_db.h (keys 2/3): every call once
    per row; the scalar reads the row's max (and min) back from UB to form the scale (and offset)."""
    f32 = "float32"
    fold = max(0, H // 64 - 1) * 64
    v("cast_f16_f32", "float16", H, rows)
    if smooth:
        v("mul", f32, H, rows)
    if asymmetric:                                               # ReduceMax and ReduceMin: the same calls
        for _ in range(2):
            v("max", f32, fold, rows)
            v("reduce_max", f32, 64, rows)
        v.scalar_reads += 2 * rows
        v("muls", f32, H, rows)
        v("adds", f32, H, rows)
    else:
        v("abs", f32, H, rows)
        v("max", f32, fold, rows)
        if H % 64 and H >= 64:                                   # ReduceMaxInplace folds a tail in too
            v("max", f32, H % 64, rows)
        v("reduce_max", f32, 64, rows)
        v("div", f32, 8, rows)
        v.scalar_reads += rows
        v("muls", f32, H, rows)
    v("cast_f32_i32", f32, H, rows)
    v("cast_i32_f16", "int32", H, rows)
    v("cast_f16_i8", "float16", H, rows, barrier=False)


@memo_calls
def _dq_calls_db(v, rows, H, smooth, fp16):
    """dynamic_quant_db.h ProcessSymmetric (keys 2/3), per row: the row max (bf16, or with smooth: Cast to
    fp32, Mul, Abs and ReduceMaxInplace in fp32; fp16 without smooth: Abs and ReduceMaxInplace in fp16 on the
    input, the fp32 Cast beside it, then the fp16 max row cast), then the scale by vector instructions (Brcb,
    Div of 127 by it, a Mul of the row by the broadcast scale), Casts through int16 and fp16 to int8 and a
    one-lane Mul of the stored scale: no scalar read (ARITHMETIC.md sec. 1: scale = m * (1/127) on these
    keys). Brcb has no cost row: costed as an 8-element broadcast [E]."""
    f32 = "float32"
    if fp16 and not smooth:
        lanes, dt = 128, "float16"
        v("cast_f16_f32", "float16", H, rows, barrier=False)
        v("abs", dt, H, rows)
    else:
        lanes, dt = 64, f32
        v("cast_f16_f32", "float16", H, rows)
        if smooth:
            v("mul", f32, H, rows)
        v("abs", f32, H, rows)
    v("max", dt, max(0, H // lanes - 1) * lanes, rows)      # ReduceMaxInplace: fold the row's repeats
    if H % lanes and H >= lanes:
        v("max", dt, H % lanes, rows)                          # and its tail
    v("reduce_max", dt, min(H, lanes), rows)
    if fp16 and not smooth:
        v("cast_f16_f32", "float16", H, rows)
    v("broadcast", f32, 8, rows)
    v("div", f32, 8, rows)
    v("mul", f32, 64 * _cdiv(H, 64), rows)
    v("cast_f32_i16", f32, H, rows)
    v("cast_i16_f16", "int32", H, rows)
    v("mul", f32, 1, rows, barrier=False)
    v("cast_f16_i8", "float16", H, rows, barrier=False)


@memo_calls
def _dq_calls_950(v, rows, H, smooth, asymmetric):
    """arch35 RegBase kernels: the row's steps fused into vector functions (VF), each element costing what
    the same ATT calls cost, one VF head per function (reduce, per-row scale, quantize) [E]."""
    f32 = "float32"
    calls = [("cast_f16_f32", "float16"), ("abs", f32), ("max", f32), ("div", f32), ("cast_f32_i16", f32),
             ("cast_i16_f16", "int32"), ("cast_f16_i8", "float16")]
    if smooth:
        calls.append(("mul", f32))
    if asymmetric:
        calls += [("max", f32), ("adds", f32)]
    v.vf(calls, rows * H, heads=2 + rows)


@memo_calls
def _dq_calls_310p(v, rows, H):
    """Compute() of dynamic_quant_align_310p.h / _unalign_310p.h over one pass of `rows` rows of H fp16: per row
    an Abs, the ReduceMax API read back by the scalar (V->S flag, GetValue, 127 / max), a Muls by the row's
    scale and a Cast to int8 (a PipeBarrier<PIPE_V> after the Abs and the Muls); then one fp32 Muls of the
    pass's scales by 1/127."""
    v("abs", "float16", H, rows)
    v("reduce_max", "float16", H, rows, barrier=False)
    v.scalar_reads += rows
    v("muls", "float16", H, rows)
    v("cast_f16_i8", "float16", H, rows, barrier=False)
    v("muls", "float32", rows, barrier=False)


def _dq_310p_loops(hw, t, H):
    """Loops of DynamicQuant on 310P/910 (dynamic_quant_tiling_310P.cpp, dynamic_quant_*_310p.h).

    The tiling hands out whole passes of numCopyRow rows: numHeadCore cores run numHeadTimes passes, the
    others numTailTimes, and the last core adds a pass of numLastTailRow rows. Keys 10100 / 11000: the input
    queue holds two passes and the output queue one (CopyIn(i + 1) is issued before Compute(i), which waits
    for CopyOut(i - 1)): 'out1'. Key 11001 (H > 4096, 8-row passes in 4096-column chunks): the row max chunk
    by chunk (a strided copy of the pass's chunk, per row Abs and a ReduceMax the scalar waits for, so each
    chunk's load follows the previous compute), the tail columns loaded, merged, quantized and stored, then
    every row chunk quantized on its own (8 KB in, the scalar's scale, Muls, Cast, 4 KB out; a row's load
    overlaps only the previous store), then the pass's scales."""
    f16, f32 = "float16", "float32"
    copy, heads = int(t["numCopyRow"]), int(t["numHeadCore"])
    # the critical core: a head core (one more whole pass) if any, else the last core with the tail rows
    full, tail = (int(t["numHeadTimes"]), 0) if heads else (int(t["numTailTimes"]), int(t["numLastTailRow"]))
    working = hw.vector_cores() if int(t["numTailTimes"]) else heads + (1 if int(t["numLastTailRow"]) else 0)
    active = max(1, working)
    chunk, chunks, tail_cols = int(t["innerLoopEle"]), int(t["innerLoopTimes"]), int(t["innerLoopTail"])
    loops = []
    for r, count in ((copy, full), (tail, 1 if tail else 0)):
        if not (r and count):
            continue
        if not chunks:
            v = Vec(hw)
            _dq_calls_310p(v, r, H)
            loops.append(Loop(n=count, pipes={"mte2": hw.dma("gm_to_ub", r * H * 2), "vector": v.s,
                                              "mte3": hw.dma("ub_to_gm", r * H) + hw.dma("ub_to_gm", r * 4)},
                              read_bytes=r * H * 2, write_bytes=r * (H + 4), barriers=v.barriers,
                              scalar_reads=v.scalar_reads, overlap="out1", active=active, cont=bool(loops)))
            continue
        v = Vec(hw)
        v("abs", f16, chunk, r)
        v("reduce_max", f16, chunk, r, barrier=False)
        v.scalar_reads += r
        loops.append(Loop(n=count * chunks, pipes={"mte2": hw.dma_rows("gm_to_ub", chunk * 2, r), "vector": v.s},
                          read_bytes=r * chunk * 2, barriers=v.barriers, scalar_reads=v.scalar_reads,
                          overlap="serial", active=active))
        if tail_cols:
            v = Vec(hw)
            v("abs", f16, tail_cols, r)
            v("reduce_max", f16, tail_cols, r, barrier=False)
            v("muls", f16, tail_cols, r)
            v("cast_f16_i8", f16, tail_cols, r, barrier=False)
            v.scalar_reads += 2 * r
            loops.append(Loop(n=count, pipes={"mte2": hw.dma_rows("gm_to_ub", tail_cols * 2, r), "vector": v.s,
                                              "mte3": hw.dma_rows("ub_to_gm", tail_cols, r)},
                              read_bytes=r * tail_cols * 2, write_bytes=r * tail_cols, barriers=v.barriers,
                              scalar_reads=v.scalar_reads, overlap="serial", active=active))
        v = Vec(hw)
        v("muls", f16, chunk)
        v("cast_f16_i8", f16, chunk, barrier=False)
        v.scalar_reads += 1
        loops.append(Loop(n=count * r * chunks, pipes={"mte2": hw.dma("gm_to_ub", chunk * 2), "vector": v.s,
                                                       "mte3": hw.dma("ub_to_gm", chunk)},
                          read_bytes=chunk * 2, write_bytes=chunk, barriers=v.barriers,
                          scalar_reads=v.scalar_reads, overlap="serial", active=active))
        v = Vec(hw)
        v("muls", f32, r, barrier=False)
        loops.append(Loop(n=count, pipes={"vector": v.s, "mte3": hw.dma("ub_to_gm", r * 4)}, write_bytes=r * 4,
                          overlap="none", active=active))
    return loops


def _dq_large_loops(hw, t, rows, H, isz, out_b, smooth, moe):
    """Loops of the A2 kernels for rows longer than UB holds, split into innerLoopEle-element chunks and a tail,
    per row: the row max chunk by chunk (Cast, smooth Mul, Abs, the fold and WholeReduceMax, read back by the
    scalar every chunk), then every chunk loaded again and quantized (Muls, Casts through int32 and fp16 to
    int8) and stored. Key 6 (dynamic_quant_large_shape_opt.h): two-deep queues, the next chunk prefetched,
    so the quantize pass overlaps ('double') while the max pass waits on the scalar ('serial'); its smooth
    chunk loaded beside each x chunk. Key 8 (dynamic_quant_moe_large_shape.h): one-deep queues ('in1out1'),
    the expert's smooth chunk loaded and cast with each x chunk, and the tail chunk loaded once: its max is
    finished and it is quantized and stored in one step."""
    f32 = "float32"
    chunk, chunks, tail = int(t["innerLoopEle"]), int(t["innerLoopTimes"]), int(t["innerLoopTail"])
    loops = []

    def step(elems, count, max_part, quant_part, overlap):
        if not (elems and count):
            return
        v = Vec(hw)
        loads = 2 if smooth else 1                         # the x chunk and the smooth chunk beside it
        v("cast_f16_f32", "float16", elems, loads)
        if smooth:
            v("mul", f32, elems)
        if max_part:
            v("abs", f32, elems)
            v("max", f32, max(0, elems // 64 - 1) * 64)
            if elems % 64 and elems >= 64:
                v("max", f32, elems % 64)
            v("reduce_max", f32, 64)
            v.scalar_reads += 1
        if quant_part:
            v("muls", f32, elems)
            v("cast_f32_i32", f32, elems)
            v("cast_i32_f16", "int32", elems)
            v("cast_f16_i8", "float16", elems, barrier=False)
        loops.append(Loop(n=count, pipes={"mte2": hw.dma("gm_to_ub", elems * isz, loads), "vector": v.s,
                                          "mte3": hw.dma("ub_to_gm", elems * out_b) if quant_part else 0.0},
                          read_bytes=loads * elems * isz, write_bytes=elems * out_b if quant_part else 0.0,
                          barriers=v.barriers, scalar_reads=v.scalar_reads, overlap=overlap))

    if moe:
        step(chunk, rows * chunks, True, False, "in1out1")
        step(tail, rows, True, True, "in1out1")
        step(chunk, rows * chunks, False, True, "in1out1")
    else:
        step(chunk, rows * chunks, True, False, "serial")
        step(tail, rows, True, False, "serial")
        step(chunk, rows * chunks, False, True, "double")
        step(tail, rows, False, True, "double")
    return loops


def dynamic_quant_work(plan, hw, asymmetric=False):
    """DynamicQuant(V2): per-row absmax (or min/max), scale, quantize (ARITHMETIC.md sec. 1).

    A2/A3 (DAV_2201), by tiling key (dynamic_quant_tiling.cpp picks it; the plan carries it):
      10 (dynamic_quant_multi_row.h): one DataCopyPad of multiRowNum rows a pass; the V->MTE2 flag after the
        first Cast lets the next pass load while this one computes ('early');
      100 (dynamic_quant_single_row.h, _dq_calls_single_row): the same pass, the input freed only after
        the scale's Mul ('early');
      0/1 (dynamic_quant.h): TQue BUFFER_NUM = 1: the next load waits for the pass ('serial');
      7 (dynamic_quant_moe.h, _dq_calls_moe): one-deep queues, PipeBarrier<PIPE_ALL> ('in1out1');
      2/3 (dynamic_quant_db.h, _dq_calls_db): the scale formed on the vector unit, two input buffers and
        one output buffer ('out1');
      6/8 (a row split into innerLoopEle chunks, _dq_large_loops): the max chunk by chunk, then the chunks
        quantized.
    Ascend 950 (arch35): fused vector functions, double-buffered when the tiling's useDb says so.
    310P/910 (DAV_2002/1001): whole passes of numCopyRow rows per core (_dq_310p_loops).
    """
    t = plan.tiles
    x = plan.inputs["x"]
    H = x.shape[-1]
    R = _size(x) // max(1, H)
    isz = x.dtype.itemsize
    out_b = 0.5 if _dt(plan.outputs["y"]) in ("int4", "int32") else 1.0
    smooth = plan.inputs.get("smooth_scales") is not None or plan.inputs.get("group_index") is not None
    key, fam = plan.tiling_key, hw.family
    scale_bytes = 8.0 if asymmetric else 4.0
    flops = R * H * 5.0                 # of the whole call (H may become one core's slice below)
    if fam == "310p910":
        return _work(plan, hw, _dq_310p_loops(hw, t, H) if R else [], flops=flops,
                     tiles={"rows_per_pass": int(t["numCopyRow"])}, launch_class="dynamic_quant")
    rows, per = (_rows_of_core(t) if R else 0), max(1, int(t.get("multiRowNumHeadCore", 1) or 1))
    if t.get("quantMode") == "PERTEN_LARGE_MULTICORE":
        # 950: each core one slice of one row (the tiling's rowPerHeadCore elements), its max pass and its
        # quantize pass; the SyncAll between them is not costed
        rows, per, H = 1, 1, int(t["rowPerHeadCore"])
    if fam == "a2a3" and key in (6, 8) and not asymmetric:
        return _work(plan, hw, _dq_large_loops(hw, t, rows, H, isz, out_b, smooth, key == 8),
                     flops=flops, tiles={"rows_per_core": rows, "rows_per_pass": 1},
                     launch_class="dynamic_quant")
    if fam == "950":
        overlap = "double" if t.get("useDb") else "serial"
    elif key in (10, 100):
        overlap = "early"
    elif key == 7:                      # one-deep queues and a PipeBarrier<PIPE_ALL> before each pass's compute
        overlap = "in1out1"
    elif key in (2, 3):
        # two input buffers; one output buffer the pass's first row waits for (MTE3_V): dynamic_quant_db.h
        overlap = "out1" if not asymmetric else "double"
    else:
        overlap = "serial"
    inner = int(t.get("innerLoopEle", 0) or 0)
    chunks = _cdiv(H, inner) if 0 < inner < H else 1              # keys 6/8 and 950's large shapes
    h = H if chunks == 1 else inner
    loads = 2 if chunks > 1 else 1                                # the max pass and the quantize pass
    loops = []
    full, rem = divmod(rows, per)
    for r, count in ((per, full), (rem, 1 if rem else 0)):
        if count == 0:
            continue
        v = Vec(hw)
        early = late = 0.0
        if fam == "950":
            _dq_calls_950(v, r, h, smooth, asymmetric)
        elif key == 10:
            early, late = _dq_calls_multi_row(v, r, h, smooth)
        elif key == 100:
            early, late = _dq_calls_single_row(v, r, h, smooth, _dt(x) == "float16")
        elif key == 7:
            _dq_calls_moe(v, r, h)
        elif key in (2, 3) and not asymmetric:
            _dq_calls_db(v, r, h, smooth, _dt(x) == "float16")
        else:
            _dq_calls_per_row(v, r, h, smooth, asymmetric)
        v.scale(chunks)
        smooth_row = H * isz if key == 7 else 0          # the moe kernel reloads the expert's smooth row a pass
        pipes = {"mte2": loads * hw.dma_rows("gm_to_ub", H * isz, r) + hw.dma("gm_to_ub", smooth_row),
                 "vector": v.s,
                 "mte3": hw.dma_rows("ub_to_gm", H * out_b, r) + hw.dma("ub_to_gm", r * scale_bytes)}
        loops.append(Loop(n=count, pipes=pipes, read_bytes=loads * r * H * isz + smooth_row,
                          write_bytes=r * (H * out_b + scale_bytes), barriers=v.barriers,
                          scalar_reads=v.scalar_reads, overlap=overlap, early=early, late=late, cont=bool(loops)))
    # the DynamicQuantV2 kernel runs the DynamicQuant templates (dynamic_quant.h, dynamic_quant_db.h;
    # ARITHMETIC.md sec. 1.2): both start alike, so they share the measured start cost per core
    return _work(plan, hw, loops, flops=flops, tiles={"rows_per_core": rows, "rows_per_pass": per},
                 launch_class="dynamic_quant")


def dynamic_quant_asym_work(plan, hw):
    return dynamic_quant_work(plan, hw, asymmetric=True)


# what indexer_compress_epilog_base.h's vector functions do to each element, by quant_mode: 1 (fp8 per 128-block
# scale, VFProcessDynamicBlockQuant: the inf/NaN guards Muls by 0, Compare, masked Abs before the ReduceMax and
# Muls by 0, Compare, Select after the Div; the MaskNot and the per-block scalar register work have no cost row
# and are left out), 0 (MX fp8, VFProcessDynamicMxFp8Quant: Maxs/Mins clamp, no guards), 2 (hifloat8 by the
# scale attribute, VFProcessHifp8Quant)
INDEXER_CALLS = {
    1: (("cast_f16_f32", "float16"), ("muls", "float32"), ("compare", "float32"), ("abs", "float32"),
        ("block_reduce_max", "float32"), ("div", "float32"), ("muls", "float32"), ("compare", "float32"),
        ("select", "float32"), ("cast_f32_f8", "float32")),
    0: (("cast_f16_f32", "float16"), ("abs", "float32"), ("block_reduce_max", "float32"), ("div", "float32"),
        ("maxs", "float32"), ("mins", "float32"), ("cast_f32_f8", "float32")),
    2: (("cast_f16_f32", "float16"), ("muls", "float32"), ("cast_f32_f8", "float32")),
}


def indexer_compress_epilog_work(plan, hw):
    """950 FP8 quant of x rows scattered by slot_mapping (ARITHMETIC.md sec. 2), as
    indexer_compress_epilog_multi_row.h runs it: rowFactor rows a pass, double-buffered (two buffers per
    queue, no barriers); for each row the scalar reads its slot from GM (GetValue) and one DataCopyPad loads
    the row; one arch35 vector function a pass (INDEXER_CALLS of the quant_mode per element); two stores per
    row (y and the row's scales). Every row is assumed valid (slot != -1): the plan does not know the slots."""
    x = plan.inputs["x"]
    d = int(plan.tiles["d"])
    rows = min(int(plan.tiles["bs"]), _size(x) // max(1, d))       # slot_mapping's rows that have an x row
    scale = plan.inputs.get("indexer_compress_scale") or plan.outputs.get("indexer_compress_scale")
    scale_row = d // 128 * (scale.dtype.itemsize if scale is not None else 4)    # the row's d / 128 scales
    mode = plan.attrs.get("quant_mode", 1)
    calls = INDEXER_CALLS.get(mode, INDEXER_CALLS[1])
    bd = max(1, int(plan.block_dim))
    rows_core = _cdiv(rows, bd) if rows else 0
    rpt = int(plan.tiles.get("rowFactor") or plan.tiles.get("rows_per_tile") or 1)
    isz = x.dtype.itemsize
    loops = []
    full, rem = divmod(rows_core, max(1, rpt))
    for r, count in ((rpt, full), (rem, 1 if rem else 0)):
        if count == 0:
            continue
        v = Vec(hw)
        v.vf(calls, r * d, heads=1)
        pipes = {"mte2": hw.dma("gm_to_ub", d * isz, r), "vector": v.s,
                 "mte3": hw.dma("ub_to_gm", d, r) + hw.dma("ub_to_gm", scale_row, r)}
        loops.append(Loop(n=count, pipes=pipes, read_bytes=r * (d * isz + 4), write_bytes=r * (d + scale_row),
                          scalar_elements=r, overlap="double", cont=bool(loops)))
    return _work(plan, hw, loops, bytes_read=rows * (d * isz + 4), bytes_written=rows * (d + scale_row),
                 flops=rows * d * 4.0, tiles={"rows_per_tile": rpt})


_F32 = "float32"
# Compute() of fake_quant_affine_cachemask_fp32.h and _fp16.h (int32 zero point): quantize (x / scale, rint,
# + zp, rint), the mask (two Compare + Select, Mul, Cast to uint8), the clamp and dequantize (Maxs, Mins, Cast,
# NaN Select, - zp, * scale); int32 calls costed as their fp32 rows (same width)
FAKE_QUANT_CALLS = {
    "float32": (("muls", _F32), ("cast_f32_i32", _F32), ("cast_i32_f32", "int32"), ("adds", _F32),
                ("cast_f32_i32", _F32), ("compare", _F32), ("select", _F32), ("compare", _F32), ("select", _F32),
                ("mul", _F32), ("cast_f32_f16", _F32), ("cast_f16_i8", "float16"), ("maxs", _F32), ("mins", _F32),
                ("cast_i32_f32", "int32"), ("compare", _F32), ("select", _F32), ("adds", _F32), ("muls", _F32)),
    "float16": (("cast_f16_f32", "float16"), ("muls", _F32), ("cast_f32_i32", _F32), ("cast_i32_f32", "int32"),
                ("adds", _F32), ("cast_f32_f16", _F32), ("compare", "float16"), ("select", "float16"),
                ("compare", "float16"), ("select", "float16"), ("mul", "float16"), ("cast_f16_i8", "float16"),
                ("cast_f32_i32", _F32), ("maxs", _F32), ("mins", _F32), ("cast_i32_f32", "int32"),
                ("compare", "float16"), ("select", _F32), ("adds", _F32), ("muls", _F32), ("cast_f32_f16", _F32)),
}


def fake_quant_work(plan, hw):
    """FakeQuantPerChannelAffineCachemask (ARITHMETIC.md sec. 3.2) as the aclnn call launches it.

    The kernel (fake_quant_affine_cachemask_base.h, _fp32.h, _fp16.h) gives each core whole channels (the
    plan's channels_per_core_max on the critical core), reads each channel's scale and zero point with scalar
    GM loads, and walks the channel in tiles: tileNum whole tiles, then one more when lastTileLength > 0,
    whose copies move lastActulTileLength elements but whose Compute still runs over tileLength. A
    PipeBarrier<PIPE_ALL> after the load, after Compute and after the store means nothing overlaps,
    although the queues are double-buffered. Compute is FAKE_QUANT_CALLS; the core first fills five
    tileLength constants (Duplicate).

    Around it (aclnn_fake_quant_per_channel_affine_cachemask.cpp): a Cast of self and of scale to the
    promoted dtype where they differ from it, a Transpose of self moving `axis` to 0 and two back (out and
    mask) when axis != 0, and a Cast of out to its dtype (the plan's cast_self, cast_scale, transposes and
    cast_out), each its own launch (Work.extra). An empty self launches nothing: the aclnn call returns
    ACLNN_SUCCESS with no workspace before any kernel when self, out or mask is empty."""
    t = plan.tiles
    x = plan.inputs["x"]
    n = _size(x)
    if not plan.block_dim:      # the plan's block dim 0: an empty self, nothing launched
        return _work(plan, hw, [], bytes_read=0.0, bytes_written=0.0)
    kd = "float16" if plan.tiling_key == 2 else "float32"
    calls = FAKE_QUANT_CALLS[kd]
    isz = np.dtype(kd).itemsize
    tile = int(t["tileLength"])
    channels = int(t["channels_per_core_max"])
    loops = []
    if channels:
        v = Vec(hw)
        v("duplicate", _F32, tile * isz / 4, 5)
        loops.append(Loop(n=1, pipes={"vector": v.s}, overlap="none"))
        v = Vec(hw)
        _each(v, calls, tile)
        last = int(t["lastActulTileLength"]), 1 if t["lastTileLength"] else 0
        for moved, count in ((tile, int(t["tileNum"])), last):
            if count:
                loops.append(Loop(n=channels * count, pipes={
                    "mte2": hw.dma("gm_to_ub", moved * isz), "vector": v.s,
                    "mte3": hw.dma("ub_to_gm", moved * isz) + hw.dma("ub_to_gm", moved)},
                    read_bytes=moved * isz, write_bytes=moved * (isz + 1), barriers=v.barriers, overlap="none"))
    c = int(t["headNum"])
    shape = x.shape
    axis = plan.attrs["axis"]
    before, after = [], []
    if t["cast_self"]:
        before.append(cast_work(hw, n, _dt(x), kd))
    if t["cast_scale"]:
        before.append(cast_work(hw, c, _dt(plan.inputs["scale"]), kd))
    if t["transposes"]:
        before.append(transpose_work(hw, shape, axis, kd))
        moved_shape = (shape[axis], *shape[1:axis], shape[0], *shape[axis + 1:])
        after += [transpose_work(hw, moved_shape, axis, kd), transpose_work(hw, moved_shape, axis, "bool")]
    if t["cast_out"]:
        after.append(cast_work(hw, n, kd, _dt(plan.outputs["out"])))
    return _work(plan, hw, loops, bytes_read=n * isz + c * (isz + 4), bytes_written=n * (isz + 1),
                 flops=n * 8.0, tiles={"tile_elems": tile}, extra=before + after)


TRANS_QUANT_CHUNK = 65536 // 8      # uint64 words TransQuantParamV2 packs in UB before each store (SPLIT_SIZE)


def trans_quant_param_work(hw, n: int):
    """TransQuantParamV2: the float32 scale [n] packed into the int64 FixPipe words. op-plugin launches it
    before QuantBatchMatmulV3 when the scale is float32, there is no per-token scale and the output is not
    bf16/int32 (op_plugin QuantMatmulKernelNpuOpApi.cpp). One core (block 0; the others return), and no MTE2
    load: per element the scalar unit reads the scale from GM (GetValue), packs it and writes the word into UB
    (SetValue); every 8192 words (64 KB) the vector queue hands them to MTE3 and the scalar waits for the store
    before packing on (V_MTE3 and MTE3_S flags: ops-nn quant/trans_quant_param_v2/op_kernel/
    trans_quant_param_v2.h, Process; read in the jbgztxdy/ops-nn mirror @057c079e)."""
    chunks = [TRANS_QUANT_CHUNK] * (n // TRANS_QUANT_CHUNK) + ([n % TRANS_QUANT_CHUNK] if n % TRANS_QUANT_CHUNK else [])
    loops = [Loop(n=1, pipes={"mte3": hw.dma("ub_to_gm", c * 8)}, read_bytes=c * 4, write_bytes=c * 8,
                  scalar_elements=c, overlap="none") for c in chunks]
    return Work(hw=hw, core_type=_vector_core_type(hw), block_dim=1, loops=loops, bytes_read=n * 4,
                bytes_written=n * 8, kernel="TransQuantParamV2")


def trans_quant_param_plan_work(plan, hw):
    """npu_trans_quant_param launched on its own (torch_npu's LinearA8W8Quant does before each quant matmul;
    vllm-ascend once, when it loads the weights): trans_quant_param_work of its plan's n words."""
    w = trans_quant_param_work(hw, plan.tiles["n"])
    w.plan, w.tiling_key, w.tiles = plan, plan.tiling_key, dict(plan.tiles)
    return w


def _dequant_epilogue(hw, plan, *, bm, bn, M, out_b, pertoken, c_in_ub=False):
    """One output block's dequant on its AIV (mix kernels: one AIV per AIC does it, the other returns):
    chunks of ubCalcM rows x baseN (CalcUbTiling's UB budget per row), each loaded, dequantized (int32 x
    scale), [x per-token scale, + float bias per row], cast and stored, with its own MTE2->V and V->MTE3
    waits (quant_batch_matmul_v3_bf16.h / _pertoken.h); one buffer here, quant_matmul_work sets how the
    mix kernels' chunks overlap. c_in_ub: the int32 block is already in UB (the AIC's FixPipe put it there),
    only the scale is loaded, and the rows go in four chunks (Ascend 950's mix kernel)."""
    f32 = "float32"
    scale = plan.inputs.get("scale")
    bias = plan.inputs.get("bias")
    s_b = scale.dtype.itemsize if scale is not None else 4
    float_bias = bias is not None and _dt(bias) != "int32"
    per_row = 20 * bn + 2 * s_b * bn + (4 * bn if (pertoken or float_bias) else 0) \
        + (8 + 4 * bn if pertoken else 0) + (4 * bn if float_bias else 0)
    fixed = (bm * 32 + 56 if pertoken else 0) + ((2 * bias.dtype.itemsize * bn + 4 * bn) if float_bias else 0)
    rows = max(1, min((hw.soc.tiling_ub_bytes - fixed) // per_row, bm, M))
    if c_in_ub:         # the 950 kernel's AIV splits its rows into (at most) four chunks
        rows = _cdiv(min(bm, M), min(4, min(bm, M)))
    e = rows * bn
    v = Vec(hw)
    v("cast_i32_f16", "int32", e)                                  # AscendDequant: int32 -> fp32 x scale
    v("mul", f32, e)
    if pertoken:
        v("broadcast", f32, e)
        v("mul", f32, e)
    if float_bias:
        v("cast_f16_f32", "float16", bn)
        v("add", f32, bn, rows)
    v("cast_f32_f16", f32, e, barrier=False)
    chunks = _cdiv(min(bm, M), rows)
    c_load = 0.0 if c_in_ub else hw.dma_rows("gm_to_ub", bn * 4, rows)
    return Loop(n=chunks, pipes={"mte2": c_load + hw.dma("gm_to_ub", bn * s_b),
                                 "vector": v.s, "mte3": hw.dma_rows("ub_to_gm", bn * out_b, rows)},
                read_bytes=(0 if c_in_ub else e * 4) + bn * s_b, write_bytes=e * out_b, barriers=v.barriers,
                overlap="serial")


def _quant_matmul_launch_class(family: str, core_type: str) -> str:
    """The start costs a quant matmul kernel shares. The A2/A3 templates and 950's mix template build a Matmul
    API object (MatmulImpl, TCubeTiling read): MATMUL_API, fitted on GroupedMatmul and QuantBatchMatmulV3.
    950's cube template (QbmmCubeBasicApiKernel / QbmmCubeTensorApiKernel, AIC only) builds none and reads a
    ~150-byte tiling without TCubeTiling (ops-nn@0a20ef97 matmul/quant_batch_matmul_v3/op_kernel/arch35/
    quant_batch_matmul_v3_apt_tiling_key.h, quant_batch_matmul_v3.cpp): it starts as a kernel of no fitted
    class does, on the family's launch_us and launch_per_core_us."""
    return "" if family == "950" and core_type != "mix" else MATMUL_API


def quant_matmul_work(plan, hw, x2_format="ND"):
    """npu_quant_matmul (ARITHMETIC.md sec. 4.3): int8 (or packed int4) cube matmul with the dequant in the
    FixPipe (fp16/int8/int32 output without a per-token scale) or on the AIVs (bf16 output or a per-token
    scale: a mix kernel whose AIC writes int32 blocks to a workspace and whose AIV dequantizes each block
    after it; the per-token decode kernel dequantizes while the AIC computes the next; on Ascend 950 the
    FixPipe puts each block into both AIVs' UB, which dequantize it under the next block). A per-channel FixPipe
    dequant loads each block's scale words before the block's store. 310P has no FixPipe: L0C -> UB -> vector
    dequant -> GM. A float32 scale with fp16/int8 output also launches TransQuantParamV2 first (op-plugin).
    M <= baseM streams the weight past L2 (x2 CACHE_MODE_DISABLE in the kernels). x2_format: 'ND' or 'NZ'
    (the weight cast to FRACTAL_NZ beforehand, see cube_loops' b_nz; storage_format's spellings).
    Known differences from the source (an audit of quant_batch_matmul_v3, kept because the measured rows
    say so): its basic templates (M >= 999, K >= 1024 rows) copy x1 8 k-steps and x2 2 k-steps at a time, and
    their AIV dequant of block b overlaps the AIC's block b + 1 (a two-slot workspace); the model keeps 4 and 4
    and runs them block after block. Refitted, the source's depths give QuantBatchMatmulV3 25.5% in-sample
    (msKPP's ND->NZ curve prices the smaller x2 copies far slower per byte) and the overlap 8.2%, against
    5.8%: the copy curve and the mix kernels' own start, not these structures, are the likely misfits."""
    nz = storage_format("npu_quant_matmul", "x2_format", x2_format) == "NZ"
    check_weight_format(plan, "NZ" if nz else "ND")        # the product's tiling may refuse an NZ weight
    x1, x2 = plan.inputs["x1"], plan.inputs["x2"]
    out = next(iter(plan.outputs.values()))
    int4 = _dt(x1) in ("int32", "int4")
    dtype = "int4" if int4 else "int8"
    M, K = x1.shape[-2], x1.shape[-1] * (8 if _dt(x1) == "int32" else 1)
    N = out.shape[-1]
    batch = max(1, _size(out) // max(1, out.shape[-2] * N))
    in_b = 0.5 if int4 else 1.0
    out_b = out.dtype.itemsize
    pertoken = plan.inputs.get("pertoken_scale") is not None
    out_name = _dt(out)
    fam = hw.family
    t = plan.tiles
    unit = t.get("epilogue_unit")
    if M * N == 0:      # 950 accepts m = 0 or n = 0 and returns an empty output: launch costs only
        return _work(plan, hw, [], bytes_read=0.0, bytes_written=0.0)
    if fam == "310p910":
        epi = "ub"
    elif unit in ("vector", "fixpipe"):
        epi = unit
    else:
        epi = "vector" if (out_name == "bfloat16" or pertoken) else "fixpipe"
    base = None
    if t.get("baseM"):
        base = (int(t["baseM"]), int(t.get("baseN", 256)), int(t.get("baseK", 128)))
    scale = plan.inputs.get("scale")
    # per-channel FixPipe dequant: before each block's store the matmul API waits for the previous store,
    # loads the block's baseN uint64 scale words GM -> L1, waits for them and moves them to the FixPipe buffer
    # (asc-devkit copy_cube_out_fixpipe.h, quant_processor_fixpipe.h CopyDeqTensorToL1); a per-tensor scale
    # is a register (SetQuantScalar)
    per_channel_fix = epi == "fixpipe" and fam == "a2a3" and scale is not None and _size(scale) > 1
    # an int32 bias goes into the cube's bias table before each block (SetBias: GM -> L1 -> BT), as in
    # GroupedMatmul; a float bias is added by the vector epilogue
    bias = plan.inputs.get("bias")
    bt_bias = fam == "a2a3" and bias is not None and _dt(bias) == "int32"
    # with M <= baseM (128: where the kernels stream x2 past L2) x2 is copied one k-step per ND->NZ copy [E]: the
    # measured decode rows move ~50 GB/s a core, what msKPP's ND->NZ curve gives for one k-step's B tile
    streamed = M <= 128
    loops, bd, hbm_frac, info = cube_loops(
        hw, M=M, K=K, N=N, batch=batch, dtype=dtype, in_bytes=in_b, block_dim=plan.block_dim, base=base,
        l0c_out_bytes=out_b if epi == "fixpipe" else 4, depth_b=1 if streamed else None, b_streamed=streamed,
        b_nz=nz,
        c_row_bytes=None if epi == "fixpipe" else 64,     # else whole int32 blocks to a workspace (or UB): on the grid
        block_loads=((8,) if per_channel_fix else ()) + ((4,) if bt_bias else ()))
    if epi in ("vector", "ub"):
        bm = info["base_m"]
        # Ascend 950's mix kernel (launched 1 AIC : 2 AIV) has no GM workspace: the FixPipe copies the int32
        # block from L0C into the UB of both AIVs, each dequantizing half its rows, and the AIC waits for them
        # (CrossCoreWaitFlag on PIPE_FIX) only before its next FixPipe copy, so a block's dequant runs under the
        # next block's cube work (hicann/ops-nn@a035a66f matmul/quant_batch_matmul_v3/op_kernel/arch35/
        # qbmm_mix_online_dynamic.h; no C workspace: @1e222ac3 op_host/op_tiling/arch35/
        # adaptive_sliding_window_mix_tiling.cpp GetWorkspaceSize). That the wait holds only the FixPipe is
        # read from the pipe it names [E]; the copy's rate is the L0C->GM curve's (no L0C->UB one is published)
        ub_c = epi == "vector" and fam == "950"
        epi_loop = _dequant_epilogue(hw, plan, bm=_cdiv(bm, 2) if ub_c else bm, bn=info["base_n"],
                                     M=_cdiv(min(M, bm), 2) if ub_c else M, out_b=out_b, pertoken=pertoken,
                                     c_in_ub=ub_c)
        epi_loop.n *= info["blocks_per_core"]
        if epi == "vector":
            # the TBE mix kernels (BmmDequantBf16, BmmDequantPertoken) drive the AIC's matmul from the AIV,
            # block by block (Iterate, then GetTensorC): a block's dequant follows its cube work, its chunks
            # on the double-buffered queues (BUFFER_NUM = 2, quant_batch_matmul_v3_base.h). The per-token OPT
            # kernel (M <= baseM, _pertoken_opt.h) computes the scales while the AIC works: behind the cube.
            epi_loop.overlap = "double"
            epi_loop.behind = (pertoken and M <= bm) or ub_c
        if ub_c:
            loops[1].write_bytes = 0.0          # the FixPipe's copy stays on chip
            epi_loop.active = 2.0 * bd          # both AIVs of every AIC store their halves at once
        loops.append(epi_loop)
    extra = []
    if (scale is not None and _dt(scale) == "float32" and not pertoken and out_name in ("float16", "int8")
            and fam != "310p910"):
        extra.append(trans_quant_param_work(hw, _size(scale)))
    core_type = "mix" if epi == "vector" else _cube_core_type(hw)
    # named, so that a sweep shows where it changes: past M = 128 the weight's copies are 4 times larger and
    # faster a byte, so more rows can take less time on the same cores
    info["variant"] = "x2 past L2" if streamed else "x2 via L2"
    w = _work(plan, hw, loops, flops=2.0 * batch * M * N * K, tiles=info, core_type=core_type, block_dim=bd,
              hbm_read_fraction=hbm_frac, extra=extra, launch_class=_quant_matmul_launch_class(fam, core_type))
    if M <= info["base_m"]:
        w.l2_bypass_bytes = _nbytes(x2)
    return w


# MoeInitRoutingQuant's merges (moe_quant_mrgsort.h): each iteration loads up to mrgSortListMaxElement (1024)
# (key, row) pairs of every list not yet used up, and MrgSort<float, true> (exhausted suspension) stops when one
# of those chunks is used up; the next iteration reloads what is left of the others
MOE_MERGE_CHUNK = 1024
# ... so an iteration yields less than all it loaded: merging routings of uniform random expert ids that way
# (tests/test_perfmodel.py simulates it) takes about elements / (0.9 x lists x 1024) iterations, plus one more
# for each list that runs out before the last [D]. With few experts (one expert's pairs in a run filling a
# chunk, e.g. 8 experts) equal keys go to the lower list first and an iteration yields little more than a
# chunk: up to `lists` times as many iterations (MoeInitRoutingQuant takes no expert count to tell by)
MOE_MERGE_YIELD = 0.9


def moe_merge_iterations(elements: int, lists: int) -> int:
    """Iterations of one core's merge of `lists` sorted runs, `elements` pairs in all (MOE_MERGE_YIELD)."""
    if elements <= 0:
        return 0
    if lists <= 1:                             # a single run is copied through UB a chunk at a time
        return _cdiv(elements, MOE_MERGE_CHUNK)
    return math.ceil(elements / (MOE_MERGE_YIELD * MOE_MERGE_CHUNK * lists)) + lists - 1


def _moe_merge_loop(hw, elements, lists, *, final=False):
    """One core merging `lists` sorted runs of (key, row) pairs, `elements` in all (moe_quant_mrgsort.h,
    _mrgsort_out.h): moe_merge_iterations iterations, each loading a chunk of every list (up to 1024 pairs)
    and merging and storing its share of the elements, one after the other (MTE3->MTE2, MTE2->V, V->MTE3
    flags), the merge counts read back by the scalar; a single run is copied through UB. The final merge
    (core 0) also negates and casts the keys (Extract has no cost row) and stores keys and rows apart, 4 bytes
    each."""
    f32 = "float32"
    lists = max(1, lists)
    its = moe_merge_iterations(elements, lists)
    if its == 0:
        return Loop(n=0, pipes={})
    chunk = min(MOE_MERGE_CHUNK, _cdiv(elements, lists))      # pairs loaded a list and iteration
    out = elements / its                                       # pairs merged and stored an iteration
    v = Vec(hw)
    if lists > 1:
        v("merge_sort", f32, out)
    if final:
        v("muls", f32, out)
        v("cast_f32_i32", f32, out)
    store = hw.dma("ub_to_gm", out * 4, 2) if final else hw.dma("ub_to_gm", out * 8)
    return Loop(n=its, pipes={"mte2": hw.dma("gm_to_ub", chunk * 8, lists), "vector": v.s, "mte3": store},
                read_bytes=chunk * 8 * lists, write_bytes=out * 8, barriers=v.barriers,
                scalar_reads=1 if lists > 1 else 0, overlap="none", active=1 if final else 0)


def moe_init_routing_quant_work(plan, hw):
    """MoeInitRoutingQuant (ARITHMETIC.md sec. 5) as moe_init_routing_quant.cpp runs its three phases, every
    queue one buffer deep:
    * sort: keys 1/3, one core sorts the n*k expert ids in UB (Cast, Muls -1, Sort, then Muls and Cast back;
      two loads and two stores of 4 bytes an element); keys 2/4, vbs.needCoreNum cores each sort their
      share in perCoreLoops UB passes (moe_quant_sort_multi_core.h VBS) and merge their passes (a single one
      copied), then 4-way merge stages over ceil(runs / 4) cores until at most 4 runs are left, which core 0
      merges into the outputs (_moe_merge_loop);
    * src_to_dst (moe_quant_src_to_dst_op.h): the row ids of a core's share loaded per loop of at most
      perLoopMaxRows, an Adds of 256 ints per 32 rows (each index in its own 32-byte block), then per row
      the scalar reads the destination (GetValue) and a 4-byte store goes there;
    * gather: split N/K (moe_quant_gather_out.h), per block of perCorePerLoopRows source rows the indices once,
      then per column tile (colsLoops - 1 of maxColsOneLoop and the rest) the rows loaded, quantized (fp16
      Muls, Adds, Cast to int8; bf16 through fp32, fp16 and int32 first) and stored once per destination row:
      one input and one output buffer ('in1out1'); activate_row (_small_activate_row.h), one output row and
      column tile at a time, loaded from its source row. Each of those stores (split N/K) and loads
      (activate_row) is set up by the scalar as src_to_dst's are: a GetValue of its row index, the offset, an
      S->MTE3 (S->MTE2) flag, the copy issued (scalar_element_cycles each, as a src_to_dst row).
    Not costed, for want of any number: the SyncAll between phases on more than one core (two to five a
    launch), the three TPipe set-ups, Concat and Extract."""
    x = plan.inputs["x"]
    n, H = x.shape
    eidx = plan.inputs.get("expert_idx")
    k = eidx.shape[-1] if eidx is not None else 1
    active = plan.attrs.get("active_num", n)
    nk = n * k
    out_rows = min(n, int(active)) * k
    bd = max(1, int(plan.block_dim))
    f32 = "float32"
    tiles = plan.tiles
    vbs = tiles.get("vbs") if isinstance(tiles.get("vbs"), dict) else {}
    sort_cores = max(1, int(vbs.get("needCoreNum", bd)))
    per_core = int(vbs.get("perCoreElements") or _cdiv(nk, sort_cores))
    ub_loops = max(1, int(vbs.get("perCoreLoops") or 1))
    per_loop = int(vbs.get("perCorePerLoopElements") or per_core)
    passes = max(0, math.ceil(math.log(max(per_loop, 32) / 32, 4)))
    multi = tiles.get("sort_mode") == "multi_core"
    v = Vec(hw)
    v("cast_i32_f32", "int32", per_loop)
    v("muls", f32, per_loop)
    v("sort32", f32, per_loop)
    v("merge_sort", f32, per_loop, passes)
    if not multi:                          # the sorted keys go straight to the outputs
        v("muls", f32, per_loop)
        v("cast_f32_i32", f32, per_loop)
    store = hw.dma("ub_to_gm", per_loop * 8) if multi else hw.dma("ub_to_gm", per_loop * 4, 2)
    loops = [Loop(n=ub_loops, pipes={"mte2": hw.dma("gm_to_ub", per_loop * 4, 2), "vector": v.s, "mte3": store},
                  read_bytes=per_loop * 8, write_bytes=per_loop * 8, barriers=v.barriers, overlap="none")]
    merges = []                            # MrgSort iterations of each merge stage on its core (a tile shown)
    if multi:
        stages = []
        lists = ub_loops                   # the core's UB passes merged 4 at a time (a single one copied)
        while True:
            stages.append(_moe_merge_loop(hw, per_core, min(4, lists)))
            if lists <= 4:
                break
            lists = _cdiv(lists, 4)
        runs, run = sort_cores, per_core
        while runs > 4:
            stages.append(_moe_merge_loop(hw, min(nk, 4 * run), 4))
            runs, run = _cdiv(runs, 4), 4 * run
        stages.append(_moe_merge_loop(hw, nk, runs, final=True))
        loops += stages
        merges = [int(lp.n) for lp in stages]
    # expanded_row_idx: per loop the sorted row ids in, an Adds per 32 of them, one scattered 4-byte store per
    # row after the scalar reads where it goes
    s2d = tiles.get("src_to_dst") if isinstance(tiles.get("src_to_dst"), dict) else {}
    s2d_rows = int(s2d.get("perCoreRows") or _cdiv(nk, bd))
    s2d_loop = max(1, int(s2d.get("perCorePerLoopRows") or s2d_rows))
    v = Vec(hw)
    v("adds", f32, 256)                   # AssistInit: the 256-int index table, loaded once and offset
    loops.append(Loop(n=1, pipes={"mte2": hw.dma("gm_to_ub", 1024), "vector": v.s}, read_bytes=1024,
                      overlap="none"))
    full, rem = divmod(s2d_rows, s2d_loop)
    for r, count in ((s2d_loop, full), (rem, 1 if rem else 0)):
        if not (r and count):
            continue
        v = Vec(hw)
        v("adds", f32, 256, _cdiv(r, 32))
        loops.append(Loop(n=count, pipes={"mte2": hw.dma("gm_to_ub", r * 4), "vector": v.s,
                                          "mte3": hw.dma("ub_to_gm", 4, r)},
                          read_bytes=r * 4, write_bytes=r * 32, barriers=2, scalar_elements=r, overlap="none"))
    isz = x.dtype.itemsize
    dt = _dt(x)
    quant = [("muls", "float16"), ("adds", "float16"), ("cast_f16_i8", "float16")]
    if dt == "float32":
        quant.insert(0, ("cast_f32_f16", f32))
    elif dt == "bfloat16":                 # bf16 -> fp32 -> fp16 in; rint through int32 and back before the int8 cast
        quant = [("cast_f16_f32", "float16"), ("cast_f32_f16", f32), ("muls", "float16"), ("adds", "float16"),
                 ("cast_f16_i32", "float16"), ("cast_i32_f16", "int32"), ("cast_f16_i8", "float16")]
    quant = tuple(quant)
    g = tiles.get("gather") if isinstance(tiles.get("gather"), dict) else {}
    cols_loops = max(1, int(g.get("colsLoops", 1) or 1))
    max_cols = min(H, int(g.get("maxColsOneLoop") or H))
    col_tiles = [(cols, count) for cols, count in ((max_cols, cols_loops - 1), (H - (cols_loops - 1) * max_cols, 1))
                 if cols > 0 and count > 0]      # (columns of a tile, tiles a row)
    if out_rows * H == 0:           # k, active_num or H is 0: nothing to gather (no division by a 0 tile)
        rpt = 0
    elif g.get("split") in ("n", "k") and g.get("perCoreRows") and g.get("perCorePerLoopRows"):
        core_rows, per_loop_rows = int(g["perCoreRows"]), int(g["perCorePerLoopRows"])
        core_k = int(g.get("perCoreK") or k)
        loop_k = max(1, int(g.get("perCorePerLoopK") or core_k))
        blocks = _cdiv(core_rows, per_loop_rows) * _cdiv(core_k, loop_k)
        stores = per_loop_rows * min(core_k, loop_k) * min(1.0, out_rows / max(1, nk))
        index_load = hw.dma("gm_to_ub", per_loop_rows * 4, min(k, loop_k))
        for i, (cols, count) in enumerate(col_tiles):
            v = Vec(hw)
            _each(v, quant, per_loop_rows * _align(cols, 32))
            loops.append(Loop(n=blocks * count, pipes={
                "mte2": hw.dma("gm_to_ub", per_loop_rows * cols * isz) + (index_load if count == 1 else 0.0),
                "vector": v.s, "mte3": hw.dma("ub_to_gm", cols, stores)},
                read_bytes=per_loop_rows * cols * isz, write_bytes=stores * cols, barriers=v.barriers,
                scalar_elements=stores, overlap="in1out1", cont=i > 0))
        rpt = per_loop_rows
    else:
        rows_core = int(g.get("perCoreRows") or _cdiv(out_rows, bd))
        for i, (cols, count) in enumerate(col_tiles):
            v = Vec(hw)
            _each(v, quant, cols)
            loops.append(Loop(n=rows_core * count, pipes={
                "mte2": hw.dma("gm_to_ub", cols * isz), "vector": v.s, "mte3": hw.dma("ub_to_gm", cols)},
                read_bytes=cols * isz, write_bytes=cols, barriers=v.barriers, scalar_elements=1, overlap="serial",
                cont=i > 0))
        rpt = 1
    return _work(plan, hw, loops, flops=out_rows * H * 3.0 + nk * 8,
                 tiles={"rows_per_tile": rpt, "sort_passes": passes,
                        "merge_iterations": merges})


# op -> (its weight argument, the option that names how that weight is stored: 'ND' or 'NZ'); predict reads
# the option from a torch weight cast with npusim's torch_npu.npu_format_cast when it is not given
WEIGHT_FORMAT_OPTIONS = {"npu_quant_matmul": ("x2", "x2_format"), "grouped_matmul": ("weight", "weight_format")}

PLAN_BUILDERS = {
    "npu_dynamic_quant": dynamic_quant_work,
    "npu_dynamic_quant_asymmetric": dynamic_quant_asym_work,
    "indexer_compress_epilog": indexer_compress_epilog_work,
    "fake_quantize_per_channel_affine_cachemask": fake_quant_work,
    "npu_quant_matmul": quant_matmul_work,
    "moe_init_routing_quant": moe_init_routing_quant_work,
    "npu_trans_quant_param": trans_quant_param_plan_work,
}
# options of a plan builder that are the model's, not arguments of the emulator's function (predict passes
# them to the builder, not to the planner)
BUILDER_OPTIONS = {op: (option,) for op, (_weight, option) in WEIGHT_FORMAT_OPTIONS.items() if op in PLAN_BUILDERS}

__all__ = ["elementwise_work", "add_work", "matmul_work", "grouped_matmul_work", "group_sizes", "even_group_list",
           "storage_format", "PLAN_BUILDERS", "BUILDER_OPTIONS", "WEIGHT_FORMAT_OPTIONS", "ELEMENTWISE"]
