"""The combining step: per-core pipe times + chip memory ceilings + heads -> a Prediction.

A cost builder (perfmodel.ops) turns a plan into a `Work`: uncalibrated seconds per pipe on the
critical core, the bytes the whole kernel moves, and how its tiles are buffered. `combine` then
applies the calibration:

* pipes on one core overlap as double buffering allows: double-buffered pipelines take the p-norm of
  the pipe times (p = overlap_p; p -> inf is perfect overlap) plus one tile of fill/drain;
  single-buffered ones run load+compute serially, with the write-back of a tile hidden under the
  next tile's load;
* the chip ceilings: HBM traffic / (HBM peak x efficiency) and GM traffic through L2 / (L2 peak x
  efficiency); written bytes stay in L2 when they fit next to what the reads leave there;
* body = smooth max (exponent mem_q) of the core time and the chip time: every core's DMA slows as
  the cores contend for bandwidth (HARDWARE.md sec. 4: "per-core peak BW drops as more cores contend");
* latency = launch floor + op/pipe heads + body.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PIPES = ("mte1", "mte2", "mte3", "vector", "cube", "fixpipe", "scalar")
DMA_PIPES = ("mte1", "mte2", "mte3", "fixpipe")


@dataclass
class Work:
    """What one kernel launch does, as the cost builders see it (seconds uncalibrated, critical core)."""
    hw: object                       # perfmodel.hw.Hardware
    core_type: str                   # 'aiv', 'aic', 'mix' or 'aicore'
    block_dim: int
    n_tiles: int
    pipes: dict                      # pipe -> seconds on the critical core
    bytes_read: float                # unique bytes the op reads from GM (its inputs)
    bytes_written: float             # unique bytes it writes (its outputs)
    gm_traffic: float = 0.0          # all GM bytes moved by all cores (re-reads go through L2); 0 = read+written
    double_buffer: bool = True
    l2_bypass: bool = False          # reads marked CACHE_MODE_DISABLE: they do not occupy L2
    flops: float = 0.0
    largest_load: float = 0.0        # bytes of the biggest single GM->local copy (selects the MTE2 head)
    tiling_key: int | None = None
    tiles: dict = field(default_factory=dict)
    plan: object = None
    # further phases run after the main one with a barrier in between (e.g. a sort before a gather):
    # each is (pipes dict, n_tiles, double_buffer)
    phases: list = field(default_factory=list)


@dataclass
class Prediction:
    """Predicted latency of one kernel launch with its breakdown (times in microseconds)."""
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
    achieved_GBps: float
    achieved_TOPS: float
    plan: object = None
    chip_us: float = 0.0             # chip memory ceiling (HBM/L2) alone
    core_us: float = 0.0             # critical core's pipelined time without contention

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


def _pow(base, exponent):
    """base ** exponent element by element with Python's float pow (C pow): numpy's vectorised power may
    round differently by position in the array, and results must not depend on the batch."""
    return np.array([b ** e for b, e in zip(base.tolist(), np.broadcast_to(exponent, base.shape).tolist())])


def combine_many(works, params: dict, op: str, product_id: str) -> list:
    """combine() of many Works at once: numpy over the works, the same operations in the same order
    (powers in Python floats), so each result is exactly the one combine() gives."""
    n_w = len(works)
    if n_w == 0:
        return []
    dma_s, vec_s, cube_s = params["dma_scale"], params["vector_scale"], params["cube_scale"]
    scale = {"mte1": dma_s, "mte2": dma_s, "mte3": dma_s, "fixpipe": dma_s, "vector": vec_s,
             "cube": cube_s, "scalar": 1.0}
    pipes = {p: np.zeros(n_w) for p in PIPES}
    core = np.zeros(n_w)
    n_phases = max(1 + len(w.phases) for w in works)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(n_phases):
            phs = [((w.pipes, w.n_tiles, w.double_buffer) if k == 0 else w.phases[k - 1])
                   if k <= len(w.phases) else None for w in works]
            present = np.array([ph is not None for ph in phs])
            ph = {p: np.array([(q[0].get(p, 0.0) if q is not None else 0.0) for q in phs]) * scale[p] for p in PIPES}
            n = np.array([max(1, q[1]) if q is not None else 1 for q in phs], dtype=float)
            db = np.array([bool(q[2]) if q is not None else True for q in phs])
            total = np.zeros(n_w)
            for p in PIPES:                   # left to right, as sum() does
                total = total + ph[p]
            vmax = np.maximum.reduce([ph[p] for p in PIPES])
            active = present & (total > 0.0)
            # double buffered: p-norm of the pipes plus one tile of fill/drain
            terms = np.zeros(n_w)
            pw = params["overlap_p"]
            for p in PIPES:
                terms = terms + _pow(np.where(vmax > 0, ph[p] / vmax, 0.0), pw)
            pnorm = np.where(vmax > 0.0, vmax * _pow(terms, 1.0 / pw), 0.0)
            dbl = pnorm + (total - vmax) / n
            single = total - np.minimum(ph["mte2"], ph["mte3"]) * (1.0 - 1.0 / n)
            core = core + np.where(active, np.where(db, dbl, single), 0.0)
            for p in PIPES:
                pipes[p] = pipes[p] + np.where(active, ph[p], 0.0)

        read = np.array([float(w.bytes_read) for w in works])
        written = np.array([float(w.bytes_written) for w in works])
        hws = [w.hw for w in works]
        l2 = np.array([float(h.soc.l2_bytes) for h in hws])
        bypass = np.array([bool(w.l2_bypass) for w in works])
        absorbed = np.minimum(written, np.maximum(0.0, l2 - np.where(bypass, 0.0, read)))
        hbm_peak = np.array([h.hbm_peak_Bps for h in hws])
        l2_peak = np.array([h.l2_peak_Bps for h in hws])
        hbm = (read + written - absorbed) / (hbm_peak * params["hbm_efficiency"])
        gm = np.array([float(w.gm_traffic) for w in works])
        traffic = np.where(gm != 0.0, gm, read + written)
        l2t = traffic / (l2_peak * params["l2_efficiency"])
        chip = np.maximum(hbm, l2t)
        q = params["mem_q"]
        hi, lo = np.maximum(core, chip), np.minimum(core, chip)
        both = (chip > 0.0) & (core > 0.0)
        smooth = hi * _pow(1.0 + _pow(np.where(both, lo / hi, 0.0), q), 1.0 / q)
        body = np.where(both, smooth, core + chip)
        bd = np.array([float(w.block_dim) for w in works])
        pipe_heads = np.array([w.hw.head_seconds(w.core_type, w.block_dim, w.largest_load) for w in works])
        head = (params["launch_us"] + params["launch_per_core_us"] * bd) * 1e-6 + pipe_heads
        latency = head + body

        stretch = np.where(core > 0, body / core, 1.0)
        stretched = chip > 0
        pipes_out = {p: (np.where(stretched, v * stretch, v) if p in DMA_PIPES else v) * 1e6 for p, v in pipes.items()}
        mem = np.maximum.reduce([chip] + [pipes_out[p] * 1e-6 for p in ("mte1", "mte2", "mte3")])
        cands = np.stack([mem, pipes["vector"], pipes["cube"], pipes_out["fixpipe"] * 1e-6, pipes["scalar"]])
        names = np.array(["memory", "vector", "cube", "fixpipe", "scalar"])
        bound = np.where(head >= body, "launch", names[np.argmax(cands, axis=0)]).tolist()
        flops = np.array([float(w.flops) for w in works])
        gbps = ((read + written) / latency / 1e9).tolist()
        tops = (flops / latency / 1e12).tolist()

    lat_us, head_us, chip_us, core_us = ((v * 1e6).tolist() for v in (latency, head, chip, core))
    pipes_l = {p: v.tolist() for p, v in pipes_out.items()}
    out = []
    for i, w in enumerate(works):
        out.append(Prediction(
            op=op, product=product_id, soc=w.hw.soc.soc, latency_us=lat_us[i],
            pipes_us={p: pipes_l[p][i] for p in PIPES}, head_us=head_us[i], bound=bound[i],
            bytes_read=int(w.bytes_read), bytes_written=int(w.bytes_written), flops=float(w.flops),
            block_dim=int(w.block_dim), tiling_key=w.tiling_key, tiles=dict(w.tiles), achieved_GBps=gbps[i],
            achieved_TOPS=tops[i], plan=w.plan, chip_us=chip_us[i], core_us=core_us[i]))
    return out


def _pnorm(values, p: float) -> float:
    m = max(values)
    if m <= 0.0:
        return 0.0
    return m * sum((v / m) ** p for v in values) ** (1.0 / p)


def combine(work: Work, params: dict, op: str, product_id: str):
    """Latency and breakdown of `work` under calibration `params` (one family's dict).

    The reference, in plain floats (fast for one launch); combine_many is its vectorised twin for
    sweeps, and tests hold the two to identical results."""
    hw = work.hw
    dma_s, vec_s, cube_s = params["dma_scale"], params["vector_scale"], params["cube_scale"]
    scale = {"mte1": dma_s, "mte2": dma_s, "mte3": dma_s, "fixpipe": dma_s, "vector": vec_s,
             "cube": cube_s, "scalar": 1.0}
    pipes = dict.fromkeys(PIPES, 0.0)
    core = 0.0
    for ph_pipes, n_tiles, double_buffer in [(work.pipes, work.n_tiles, work.double_buffer), *work.phases]:
        ph = {p: ph_pipes.get(p, 0.0) * scale[p] for p in PIPES}
        vals = list(ph.values())
        total = sum(vals)
        n = max(1, n_tiles)
        if total <= 0.0:
            continue
        if double_buffer:
            core += _pnorm(vals, params["overlap_p"]) + (total - max(vals)) / n
        else:
            core += total - min(ph["mte2"], ph["mte3"]) * (1.0 - 1.0 / n)
        for p in PIPES:
            pipes[p] += ph[p]

    read, written = work.bytes_read, work.bytes_written
    l2 = hw.soc.l2_bytes
    absorbed = min(written, max(0.0, l2 - (0.0 if work.l2_bypass else read)))
    hbm = (read + written - absorbed) / (hw.hbm_peak_Bps * params["hbm_efficiency"])
    traffic = work.gm_traffic or (read + written)
    l2t = traffic / (hw.l2_peak_Bps * params["l2_efficiency"])
    chip = max(hbm, l2t)
    q = params["mem_q"]
    if chip > 0.0 and core > 0.0:
        body = max(core, chip) * (1.0 + (min(core, chip) / max(core, chip)) ** q) ** (1.0 / q)
    else:
        body = core + chip
    head = (params["launch_us"] + params["launch_per_core_us"] * work.block_dim) * 1e-6 \
        + hw.head_seconds(work.core_type, work.block_dim, work.largest_load)
    latency = head + body

    stretch = body / core if core > 0 else 1.0
    pipes_out = {p: (v * stretch if p in DMA_PIPES and chip > 0 else v) * 1e6 for p, v in pipes.items()}
    if head >= body:
        bound = "launch"
    else:
        mem = max(chip, *(pipes_out[p] * 1e-6 for p in ("mte1", "mte2", "mte3")))
        cands = {"memory": mem, "vector": pipes["vector"], "cube": pipes["cube"],
                 "fixpipe": pipes_out["fixpipe"] * 1e-6, "scalar": pipes["scalar"]}
        bound = max(cands, key=cands.get)
    return Prediction(
        op=op, product=product_id, soc=hw.soc.soc, latency_us=latency * 1e6, pipes_us=pipes_out,
        head_us=head * 1e6, bound=bound, bytes_read=int(read), bytes_written=int(written),
        flops=float(work.flops), block_dim=int(work.block_dim), tiling_key=work.tiling_key,
        tiles=dict(work.tiles), achieved_GBps=(read + written) / latency / 1e9,
        achieved_TOPS=work.flops / latency / 1e12, plan=work.plan, chip_us=chip * 1e6, core_us=core * 1e6)
