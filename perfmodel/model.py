"""The combining step: a kernel's loops on its critical core + the chip's shared memory -> a Prediction.

A cost builder (perfmodel.ops) describes one kernel launch as a `Work`: the loops its critical core runs,
each iteration's per-pipe times (uncalibrated, from the DMA curves, the ATT vector table and the cube
rate), the GM bytes each iteration moves (for contention between cores) and how the kernel's buffers let
consecutive iterations overlap. `combine` applies the calibration and plays the loops:

* memory contention: an iteration's load takes the longer of the core's own DMA time and its share of the
  chip: bytes x active cores / the chip's rate (HBM for cold reads and for writes that do not stay in L2,
  L2 for re-reads and absorbed writes). Every core streams at once, so in lockstep the chip is shared
  (HARDWARE.md sec. 4, ATT: "per-core peak BW drops as more cores contend");
* overlap, from the kernel's own synchronisation (`Loop.overlap`):
  - 'double' (double-buffered queues): period = the slowest pipe;
  - 'serial' (one buffer, TQue BUFFER_NUM = 1): the next load waits until the compute has freed the
    input buffer, the store of one iteration runs under the next load: period = max(load + compute, store);
    past the first iteration the cores drift apart (each core's load waits on its own compute), so a load
    runs at the core's own rate and the chip's bandwidth bounds the period instead;
    a load that nothing prefetched also pays the GM latency under load (load_latency_us, in proportion to
    the share of the chip's cores streaming: one core alone sees the idle latency the DMA curves hold);
  - 'early' (one buffer released early: the vendor sets a V->MTE2 flag right after the first Cast, e.g.
    dynamic_quant_multi_row.h): period = max(load + vector before the release, vector, store + vector
    after the output buffer is needed); its cores drift apart as in 'serial';
  - 'out1' (the input double-buffered, one output buffer: DynamicQuant's db and 310P kernels): the next load
    is issued before the compute, which waits for the previous store to free the output buffer:
    period = max(load, vector + store); no load latency is exposed;
  - 'in1out1' (one input and one output buffer: the next load waits for the compute to free the input,
    and the next compute for the store to free the output): period = vector + max(load, store); its cores
    drift apart as in 'serial';
  - 'none': nothing overlaps;
  the first iteration runs its stages back to back (fill), the rest at the period. A loop marked `behind`
  runs on other cores while the loops before it run (the per-token decode kernel's AIV epilogue of block b
  under the AIC's block b+1): only what exceeds those loops, and its last iteration, count;

* vector time = ATT cycles x vector_scale + dependent instructions (PipeBarrier) x barrier_cycles + scalar
  reads of vector results (V->S flag + GetValue) x scalar_read_cycles;
* latency = launch (launch_us + launch_per_core_us x cores started; a kernel's own fixed and per-core start
  costs, launch_us@<kernel> and launch_per_core_us@<kernel>, where its measurements fix them: e.g. every core
  reading the kernel's tiling data from GM costs microseconds, HARDWARE.md sec. 2) + the op head (ATT,
  HARDWARE.md sec. 4; the first load's and store's start latency is in the loops' first iteration, see
  Hardware.head_seconds) + the loops; an operator that launches several kernels (Work.extra, e.g.
  TransQuantParamV2 before QuantBatchMatmulV3) adds them up, as the profiler's per-kernel Task Durations do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PIPES = ("mte1", "mte2", "mte3", "vector", "cube", "fixpipe", "scalar")
DMA_PIPES = ("mte1", "mte2", "mte3", "fixpipe")
OVERLAPS = ("double", "serial", "early", "out1", "in1out1", "none")


@dataclass
class Loop:
    """`n` iterations of one loop on the critical core. Times are uncalibrated seconds per iteration."""
    n: float
    pipes: dict                       # pipe -> seconds (DMA pipes: the core's own transfer time)
    read_bytes: float = 0.0           # GM bytes the iteration loads (contends for the chip)
    write_bytes: float = 0.0          # GM bytes the iteration stores
    barriers: float = 0.0             # dependent vector instructions (PipeBarrier<PIPE_V>) per iteration
    scalar_elements: float = 0.0      # elements the scalar unit loops over (scalar_element_cycles each)
    scalar_reads: float = 0.0         # vector results read by the scalar unit (V->S flag + GetValue)
    overlap: str = "double"
    early: float = 0.0                # 'early': vector seconds before the input buffer is released
    late: float = 0.0                 # 'early': vector seconds after the output buffer is needed
    cont: bool = False                # continues the loop before it (its tail iterations): no fill of its own
    behind: bool = False              # runs on other cores under the loops before it (see the module docstring)
    active: float = 0.0               # cores streaming at once on average (0: the launch's block dim)
    offgrid_rows: float = 0.0         # source rows off the 32-byte grid an ND->NZ copy fetches from HBM per
                                      # iteration (offgrid_row_cycles of MTE2 each)


@dataclass
class Work:
    """One kernel launch as the cost builders see it."""
    hw: object                        # perfmodel.hw.Hardware
    core_type: str                    # 'aiv', 'aic', 'mix' or 'aicore'
    block_dim: int
    loops: list                       # Loops run one after another on the critical core
    bytes_read: float                 # unique bytes the kernel reads from GM (its inputs)
    bytes_written: float              # unique bytes it writes (its outputs)
    hbm_read_fraction: float = 1.0    # of the loaded bytes, the part that comes from HBM (the rest hits L2)
    cold_read_fraction: float = 1.0   # of the unique read bytes, the part in HBM when the kernel starts (1: cold)
    l2_bypass_bytes: float = 0.0      # read bytes marked CACHE_MODE_DISABLE: they do not occupy L2
    flops: float = 0.0
    kernel: str = ""
    launch_class: str = ""            # kernels that start alike (e.g. every CANN elementwise op); default: kernel
    tiling_key: int | None = None
    tiles: dict = field(default_factory=dict)
    plan: object = None
    extra: list = field(default_factory=list)     # further kernels the operator launches (Works)
    launched: bool = True             # False: nothing is launched (a plan of block dim 0, e.g. an empty input)


@dataclass
class Prediction:
    """Predicted latency of one operator call with its breakdown (times in microseconds)."""
    op: str
    product: str
    soc: str
    latency_us: float
    pipes_us: dict
    head_us: float
    bound: str
    bytes_read: int
    bytes_written: int
    flops: float
    block_dim: int
    tiling_key: int | None
    tiles: dict
    achieved_GBps: float              # bytes read + written per second (past the HBM peak where writes stay in L2)
    achieved_TOPS: float
    plan: object = None
    chip_us: float = 0.0              # HBM traffic at the chip's effective rate alone (the memory roofline)
    core_us: float = 0.0              # the critical core's loops (contention included)
    kernels: list = field(default_factory=list)   # per launched kernel: (name, latency_us)

    def to_row(self) -> dict:
        """Flat dict for pandas: pipes as '<pipe>_us', tiles as 'tile_<k>'."""
        row = {"op": self.op, "product": self.product, "soc": self.soc, "latency_us": self.latency_us,
               "head_us": self.head_us, "bound": self.bound, "bytes_read": self.bytes_read,
               "bytes_written": self.bytes_written, "flops": self.flops, "block_dim": self.block_dim,
               "tiling_key": self.tiling_key, "achieved_GBps": self.achieved_GBps,
               "achieved_TOPS": self.achieved_TOPS, "chip_us": self.chip_us, "core_us": self.core_us}
        for p in PIPES:
            row[f"{p}_us"] = self.pipes_us.get(p, 0.0)
        for k, v in self.tiles.items():
            row[f"tile_{k}"] = v
        return row


def cores_started(core_type: str, block_dim: int) -> int:
    """Blocks a launch starts: block_dim (a mix kernel's block is an AIC with its AIV, started together)."""
    return block_dim


def _write_hbm_fraction(work: Work) -> float:
    """Written bytes that cannot stay in L2 go to HBM during the kernel: the L2 holds what the reads
    leave free (reads that bypass L2 take none of it)."""
    w = float(work.bytes_written)
    if w <= 0.0:
        return 0.0
    room = max(0.0, work.hw.soc.l2_bytes - max(0.0, float(work.bytes_read) - float(work.l2_bypass_bytes)))
    return 1.0 - min(w, room) / w


class _Rates:
    """What every loop of one calibration family reads from the calibration (looked up once per combine)."""
    __slots__ = ("dma", "vec", "cube", "load_latency", "barrier", "scalar_read", "scalar_element", "hbm_eff",
                 "l2_eff", "offgrid_row", "params", "_start")

    def __init__(self, p: dict):
        self.params = p
        self.dma, self.vec, self.cube = p["dma_scale"], p["vector_scale"], p["cube_scale"]
        self.load_latency = p["load_latency_us"] * 1e-6
        self.barrier, self.scalar_read = p["barrier_cycles"], p["scalar_read_cycles"]
        self.scalar_element = p["scalar_element_cycles"]
        self.hbm_eff, self.l2_eff = p["hbm_efficiency"], p["l2_efficiency"]
        self.offgrid_row = p["offgrid_row_cycles"]
        self._start: dict = {}

    def start_of(self, kernel: str) -> tuple[float, float]:
        """(launch_us, launch_per_core_us) of a kernel: its own (launch_us@<kernel>,
        launch_per_core_us@<kernel>) where the calibration has them, else the family's."""
        t = self._start.get(kernel)
        if t is None:
            p = self.params
            t = self._start[kernel] = (p.get(f"launch_us@{kernel}", p["launch_us"]),
                                       p.get(f"launch_per_core_us@{kernel}", p["launch_per_core_us"]))
        return t


def _loop_time(lp: Loop, r: _Rates, vec_hz: float, active: int, read_rate: float, write_rate: float,
               f_read: float, f_write: float, hbm: float, cores: int):
    """(seconds of the loop, per-pipe seconds of one iteration with contention, in PIPES order).
    read_rate / write_rate: seconds per byte of the chip's share (f / hbm + (1 - f) / l2)."""
    dma, vec = r.dma, r.vec
    pipes = lp.pipes
    active = lp.active or active
    rd, wr = lp.read_bytes, lp.write_bytes
    own_load = (pipes.get("mte2", 0.0) + lp.offgrid_rows * r.offgrid_row / vec_hz) * dma
    own_store = pipes.get("mte3", 0.0) * dma
    L = max(own_load, rd * active * read_rate)
    S = max(own_store, wr * active * write_rate)
    mode = lp.overlap
    if mode not in ("double", "out1") and L > 0:
        # nothing prefetched: the next load's latency is in the loop. The DMA curves (one core alone) hold the
        # idle latency; what queues behind the other cores' requests grows with the share of cores streaming
        lat = r.load_latency * min(1.0, active / cores)
        L += lat
        own_load += lat
    extra = (lp.barriers * r.barrier + lp.scalar_reads * r.scalar_read) / vec_hz
    Sc = pipes.get("scalar", 0.0) + lp.scalar_elements * r.scalar_element / vec_hz
    V = pipes.get("vector", 0.0) * vec + extra + Sc
    C = pipes.get("cube", 0.0) * r.cube
    M1, F = pipes.get("mte1", 0.0) * dma, pipes.get("fixpipe", 0.0) * dma
    # loads and stores that run at the same time share HBM
    chip = (rd * f_read + wr * f_write) * active / hbm
    if mode == "double":
        period = max(L, V, S, C, M1, F, chip)
    elif mode in ("serial", "early", "in1out1"):
        # past the first iteration the cores drift apart: a core's load waits on its own compute, so not
        # every core loads at once; each load runs at the core's own rate and the chip bounds the period
        chip_all = rd * active * read_rate + wr * active * write_rate
        if mode == "serial":
            period = max(own_load + V + C, own_store, M1, F, chip, chip_all)
        elif mode == "early":
            period = max(own_load + lp.early * vec, V, own_store + lp.late * vec, C, M1, F, chip, chip_all)
        else:
            period = max(V + max(own_load, own_store), C, M1, F, chip, chip_all)
    elif mode == "out1":
        period = max(L, V + S, C, M1, F, chip)
    else:
        period = L + V + S + C + M1 + F
    fill = L + V + S + C + M1 + F
    n = float(lp.n)
    if lp.cont:
        total = n * period
    else:
        total = fill + (n - 1.0) * period if n >= 1.0 else n * fill
    if mode in ("serial", "early", "in1out1"):
        # the cores drift apart (above): a load or store is busy for the core's own time, not the chip's share
        L, S = own_load, own_store
    return total, (M1, L, S, V - Sc, C, F, Sc)


def _kernel(work: Work, r: _Rates):
    """(latency s, head s, core s, chip s, per-pipe s in PIPES order, bound) of one kernel launch."""
    hw = work.hw
    hbm = hw.hbm_peak_Bps * r.hbm_eff
    l2 = hw.l2_peak_Bps * r.l2_eff
    active = max(1, int(work.block_dim))
    f_read = work.hbm_read_fraction
    f_write = _write_hbm_fraction(work)
    read_rate = f_read / hbm + (1.0 - f_read) / l2
    write_rate = f_write / hbm + (1.0 - f_write) / l2
    vec_hz = hw.vec_hz
    cores = hw.soc.aic if work.core_type in ("aic", "aicore", "mix") else hw.vector_cores()
    core = 0.0
    own = [0.0] * 7             # per-pipe time of the critical core's loops, in PIPES order
    under = [0.0] * 7           # of the loops that run on other cores under them (behind)
    for lp in work.loops:
        if lp.n <= 0:
            continue
        total, used = _loop_time(lp, r, vec_hz, active, read_rate, write_rate, f_read, f_write, hbm, cores)
        if lp.behind:
            one = sum(used)
            total = max(0.0, total - one - core) + one
        core += total
        acc = under if lp.behind else own
        for i, t in enumerate(used):
            acc[i] += t * lp.n
    launch, per_core = r.start_of(work.launch_class or work.kernel)
    head = (launch + per_core * cores_started(work.core_type, active)) * 1e-6 + hw.head_seconds(work.core_type)
    chip = (float(work.bytes_read) * work.cold_read_fraction + float(work.bytes_written) * f_write) / hbm
    # the cores under run their own pipes at the same time: each pipe is the busier core's, never their sum
    pipes = [max(a, b) for a, b in zip(own, under)]
    return head + core, head, core, chip, pipes, _bound(head, core, pipes, chip)


def _bound(head: float, core: float, pipes, chip: float) -> str:
    """'launch' when the head outlasts the loops, else the busiest pipe (PIPES order), the DMA pipes and the HBM
    traffic counting as 'memory' (the first of the largest: memory, vector, cube, fixpipe, scalar)."""
    if head >= core:
        return "launch"
    m1, m2, m3, v, c, f, sc = pipes
    bound, top = "memory", max(m1, m2, m3, chip)
    for name, t in (("vector", v), ("cube", c), ("fixpipe", f), ("scalar", sc)):
        if t > top:
            bound, top = name, t
    return bound


def combine(work: Work, params: dict, op: str, product_id: str, rates: _Rates | None = None) -> Prediction:
    """Latency and breakdown of `work` (and of the further kernels it launches) under calibration `params`
    (one kernel family's dict; `rates`: the same, looked up already)."""
    r = rates or _Rates(params)
    if not work.launched:
        return Prediction(
            op=op, product=product_id, soc=work.hw.soc.soc, latency_us=0.0, pipes_us=dict.fromkeys(PIPES, 0.0),
            head_us=0.0, bound="none", bytes_read=0, bytes_written=0, flops=0.0, block_dim=0,
            tiling_key=work.tiling_key, tiles=dict(work.tiles), achieved_GBps=0.0, achieved_TOPS=0.0,
            plan=work.plan)
    latency, head, core, chip, pipes, bound = _kernel(work, r)
    kernels = [(work.kernel or op, latency * 1e6)]
    read, written, flops = float(work.bytes_read), float(work.bytes_written), float(work.flops)
    for w in work.extra:
        lat_x, head_x, core_x, chip_x, pipes_x, _ = _kernel(w, r)
        latency += lat_x
        head += head_x
        core += core_x
        chip += chip_x
        pipes = [a + b for a, b in zip(pipes, pipes_x)]
        kernels.append((w.kernel, lat_x * 1e6))
        read += float(w.bytes_read)
        written += float(w.bytes_written)
        flops += float(w.flops)
    if work.extra:
        bound = _bound(head, core, pipes, chip)
    return Prediction(
        op=op, product=product_id, soc=work.hw.soc.soc, latency_us=latency * 1e6,
        pipes_us={k: x * 1e6 for k, x in zip(PIPES, pipes)}, head_us=head * 1e6, bound=bound,
        bytes_read=int(read), bytes_written=int(written), flops=flops, block_dim=int(work.block_dim),
        tiling_key=work.tiling_key, tiles=dict(work.tiles), achieved_GBps=(read + written) / latency / 1e9,
        achieved_TOPS=flops / latency / 1e12, plan=work.plan, chip_us=chip * 1e6, core_us=core * 1e6,
        kernels=kernels)


def combine_many(works, params: dict, op: str, product_id: str) -> list:
    """combine() of many Works (sweeps and the calibration fit): the calibration is looked up once."""
    r = _Rates(params)
    return [combine(w, params, op, product_id, r) for w in works]
