"""Per-SoC cost primitives: DMA transfers, vector instructions, cube fractals, op heads.

Every constant comes from the data files in perfmodel/data/ (one TOML per kernel family plus the msKPP
and ATT tables as CSV); each value there carries its source. Costs here are UNCALIBRATED seconds on one
core; perfmodel.model applies the calibration scales and combines pipes.
"""
from __future__ import annotations

import bisect
import csv
import functools
import math
import tomllib
from dataclasses import dataclass
from importlib import resources

from npusim.products import Soc, get_product

GIB = float(1 << 30)


def _data_text(name: str) -> str:
    return resources.files("perfmodel").joinpath("data", name).read_text()


def _csv_rows(name: str) -> list[dict]:
    lines = [ln for ln in _data_text(name).splitlines() if ln and not ln.startswith("#")]
    return list(csv.DictReader(lines))


@functools.cache
def family_data(family: str) -> dict:
    """The parsed TOML of one kernel family ('a2a3', '950', '310p910', '310b')."""
    return tomllib.loads(_data_text(f"{family}.toml"))


@functools.cache
def _dma_curves() -> dict:
    """(path, table_soc) -> sorted [(transfer bytes, GiB/s)]."""
    pts: dict = {}
    for r in _csv_rows("mskpp_curves.csv"):
        pts.setdefault((r["path"], r["table_soc"]), []).append((float(r["size_kib"]) * 1024, float(r["gib_per_s"])))
    return {k: sorted(v) for k, v in pts.items()}


@functools.cache
def _mmad_curves() -> dict:
    """table_soc -> sorted [(fractals per instruction, efficiency)]; fractal = 16x16x16 MACs."""
    out: dict = {}
    for r in _csv_rows("mmad_curves.csv"):
        fr = int(r["m"]) * int(r["k"]) * int(r["n"]) / 4096.0
        out.setdefault(r["table_soc"], []).append((fr, float(r["ops_per_cycle"]) / 8192.0))
    return {k: sorted(v) for k, v in out.items()}


@functools.cache
def vector_table() -> dict:
    """(op, dtype) -> (k cycles/element, b cycles/call)."""
    return {(r["op"], r["dtype"]): (float(r["k"]), float(r["b"])) for r in _csv_rows("vector_ops.csv")}


@dataclass(frozen=True)
class Curve:
    """Transfer time vs size: linear interpolation of bandwidth over size (as msKPP does), clamped at the
    ends; time is made non-decreasing in size (a larger copy is never faster than a smaller one)."""
    sizes: tuple
    times: tuple        # seconds for a transfer of each tabulated size
    peak_Bps: float     # bandwidth of the largest tabulated transfer

    @classmethod
    def from_points(cls, pts) -> "Curve":
        sizes, times, worst = [], [], 0.0
        for size, gibps in pts:
            t = size / (gibps * GIB)
            worst = max(worst, t)
            sizes.append(size)
            times.append(worst)
        return cls(tuple(sizes), tuple(times), pts[-1][1] * GIB)

    def seconds(self, nbytes: float) -> float:
        s = self.sizes
        if nbytes <= s[0]:
            return self.times[0] * nbytes / s[0]        # below the table: the smallest size's bandwidth
        if nbytes >= s[-1]:
            return self.times[-1] + (nbytes - s[-1]) / self.peak_Bps
        i = bisect.bisect_right(s, nbytes)
        x0, x1, t0, t1 = s[i - 1], s[i], self.times[i - 1], self.times[i]
        return t0 + (t1 - t0) * (nbytes - x0) / (x1 - x0)


def streaming_rate_to(pts, peak_Bps: float) -> list:
    """A msKPP curve (size bytes, GiB/s) carried over to a link whose streaming rate is peak_Bps: each size keeps
    the time it spends beyond streaming at the curve's own last rate (the per-transfer latency, in seconds),
    and streams at the new rate. msKPP's own tables behave so: 910B3's GM->UB curve peaks 2.4x above 910B1's,
    yet both take about the same time for 1-4 KB (tests/test_perfmodel.py)."""
    peak = pts[-1][1] * GIB
    out = []
    for size, gibps in pts:
        t = size / (gibps * GIB) - size / peak + size / peak_Bps
        out.append((size, size / t / GIB))
    return out


# DMA paths: pipe, msKPP table name, INI rate field a curve streams at on chips without tables.
PATHS = {
    "gm_to_ub": ("mte2", "gm_to_ub", "ddr_rate"),
    "ub_to_gm": ("mte3", "ub_to_gm", "ub_to_ddr_rate"),
    "gm_to_l1": ("mte2", "gm_to_l1", "ddr_rate"),
    "gm_to_l1_trans": ("mte2", "gm_to_l1_trans", "ddr_rate"),     # ND -> NZ while copying (cube inputs)
    "l1_to_l0a": ("mte1", "l1_to_l0a", None),
    "l1_to_l0b": ("mte1", "l1_to_l0b", None),
    "l0c_to_gm": ("fixpipe", "l0c_to_gm", None),
}


class Hardware:
    """Cost primitives of one SoC (uncalibrated, one core)."""

    def __init__(self, soc: Soc):
        self.soc = soc
        self.family = soc.family
        d = family_data(self.family)
        self.data = d
        # the vector pipes of the modelled kernels: on coupled parts they run on the AI Cores (vector_cores()), at
        # the AI Core's clock; the INI's vec_freq there is the 310P's standalone Vector Cores' (HARDWARE.md sec. 0),
        # where no modelled kernel runs
        self.vec_hz = (soc.cube_mhz if soc.core_layout == "coupled" else soc.vector_mhz) * 1e6
        self.cube_hz = soc.cube_mhz * 1e6
        dma = d["dma"]
        table_soc = dma["curve_soc_by_soc"].get(soc.soc, dma["curve_soc"])
        curves = _dma_curves()
        src = get_product(dma["curve_soc_ini"]) if dma["curve_from_ini"] else None   # the curves' own chip
        self.curves = {}
        for path, (_pipe, table, ini_field) in PATHS.items():
            pts = curves.get((table, table_soc)) or curves.get((table, dma["curve_soc"]))
            if pts is None and path == "gm_to_l1_trans":     # no ND->NZ table: the plain GM->L1 copy [E]
                pts = curves.get(("gm_to_l1", table_soc)) or curves.get(("gm_to_l1", dma["curve_soc"]))
            if pts is None:          # e.g. 950 has no UB<->GM for one of its variants: fall back to 910B1 [E]
                pts = curves[(table, "910b1")]
            if dma["curve_from_ini"] and ini_field is not None:
                # the INI rate (bytes/cycle/core) relative to the curve's own chip's, not as an absolute rate:
                # msKPP streams loads 1.4-4.8x above the INI rate x clock on each chip that has both (910B1,
                # 910B3, 950), and the ratio lands closer on both other chips (ini_rate_ratio_errors in tests)
                ratio = getattr(soc, ini_field) * soc.cube_mhz / (getattr(src, ini_field) * src.cube_mhz)
                pts = streaming_rate_to(pts, pts[-1][1] * GIB * ratio)
            self.curves[path] = Curve.from_points(pts)
        self.load_head_s = dma["load_head_cycles"] / self.vec_hz
        self.store_head_s = dma["store_head_cycles"] / self.vec_hz
        self.burst = int(dma["burst_bytes"])

        mem = d["memory"]
        self.hbm_peak_Bps = 1e9 * mem.get("hbm_peak_GBps_by_soc", {}).get(
            soc.soc, mem.get("hbm_peak_GBps_by_product", {}).get(soc.product, mem["hbm_peak_GBps"]))
        self.l2_peak_Bps = 1e9 * mem.get("l2_peak_GBps_by_product", {}).get(soc.product, mem["l2_peak_GBps"])
        self.heads = d["heads"]
        self.cube = d["cube"]
        self.mmad_pts = _mmad_curves()[self.cube["mmad_curve_soc"]]
        self.bank_conflict_free_factor = d["vector"]["bank_conflict_free_factor"]
        self._vec = vector_table()
        self._vec_memo: dict = {}
        self._dma_memo: dict = {}

    # -- DMA ---------------------------------------------------------------------------------------
    def dma(self, path: str, nbytes: float, count: float = 1.0) -> float:
        """Seconds for `count` transfers of `nbytes` each on one core (bursts rounded up, plus the
        per-instruction head of loads/stores)."""
        if count <= 0 or nbytes <= 0:
            return 0.0
        key = (path, nbytes)
        t = self._dma_memo.get(key)
        if t is None:                       # sweeps ask for the same few transfer sizes over and over
            b = self.burst
            size = math.ceil(nbytes / b) * b
            t = self.curves[path].seconds(size)
            if path in ("gm_to_ub", "gm_to_l1", "gm_to_l1_trans"):
                t += self.load_head_s
            elif path == "ub_to_gm":
                t += self.store_head_s
            if len(self._dma_memo) < 65536:
                self._dma_memo[key] = t
        return count * t

    def dma_rows(self, path: str, row_bytes: float, rows: float) -> float:
        """Seconds for one DataCopyPad of `rows` rows of `row_bytes` each (blockCount = rows): every row is
        padded to the 32-byte UB block, one instruction head."""
        if rows <= 0 or row_bytes <= 0:
            return 0.0
        return self.dma(path, rows * math.ceil(row_bytes / 32) * 32)

    def stream(self, path: str, total_bytes: float, chunk: float) -> float:
        """Seconds to move `total_bytes` in copies of at most `chunk` bytes (last one partial)."""
        if total_bytes <= 0:
            return 0.0
        chunk = max(1.0, min(chunk, total_bytes))
        full = math.floor(total_bytes / chunk)
        rest = total_bytes - full * chunk
        return self.dma(path, chunk, full) + (self.dma(path, rest) if rest > 0 else 0.0)

    # -- vector ------------------------------------------------------------------------------------
    def vec_coeffs(self, op: str, dtype: str) -> tuple[float, float]:
        """(k cycles per element, b cycles per call) of vector API `op` (the fp32 row when no `dtype` row)."""
        return self._vec.get((op, dtype)) or self._vec[(op, "float32")]

    def vec(self, op: str, dtype: str, elems: float, count: float = 1.0) -> float:
        """Seconds for `count` calls of vector API `op` over `elems` elements each (ATT k*n+b)."""
        if count <= 0 or elems <= 0:
            return 0.0
        kb = self._vec_memo.get((op, dtype))          # builders make this call millions of times in a sweep
        if kb is None:
            kb = self._vec_memo[(op, dtype)] = self.vec_coeffs(op, dtype)
        k, b = kb
        return count * (k * elems + b) / self.vec_hz

    # -- cube --------------------------------------------------------------------------------------
    def fractal(self, dtype: str) -> tuple[int, int, int]:
        return self.soc.cube_fractal(dtype)

    def mmad_efficiency(self, fractals: float) -> float:
        pts = self.mmad_pts
        if fractals <= pts[0][0]:
            return pts[0][1]
        if fractals >= pts[-1][0]:
            return pts[-1][1]
        xs = [p[0] for p in pts]
        i = bisect.bisect_right(xs, fractals)
        (x0, y0), (x1, y1) = pts[i - 1], pts[i]
        return y0 + (y1 - y0) * (fractals - x0) / (x1 - x0)

    def mmad(self, m: int, k: int, n: int, dtype: str, count: float = 1.0) -> float:
        """Seconds for `count` mmad instructions of shape (m, k, n) on one core: one fractal per cycle at
        the msKPP efficiency of an instruction that size."""
        fm, fk, fn = self.fractal(dtype)
        fr = math.ceil(m / fm) * math.ceil(k / fk) * math.ceil(n / fn)
        # the efficiency table is per fp16 fractal (16x16x16); an int8 fractal 16x32x16 counts as one
        return count * fr / self.mmad_efficiency(fr) / self.cube_hz

    def cube_peak_ops(self, dtype: str) -> float:
        """Chip peak arithmetic rate (2 ops per MAC) of the cube for `dtype`."""
        fm, fk, fn = self.fractal(dtype)
        return 2.0 * fm * fk * fn * self.soc.aic * self.cube_hz

    # -- heads -------------------------------------------------------------------------------------
    def head_seconds(self, core_type: str) -> float:
        """The op head (ATT), plus the vector pipe's head on vector kernels. ATT's MTE2/MTE3 pipe heads
        are not added: they belong to its constant-bandwidth pipe model, where they stand for each
        transfer's start latency. Here the first iteration's loads and stores run back to back on msKPP's
        measured size-dependent DMA curves, which include that start; counting ATT's heads as well would
        count it twice (and its 25000-byte switch between two MTE2 heads made predictions jump with the tile
        size). What the chip adds per core launched is the fitted per-core start cost."""
        h = self.heads
        cyc = h["op"] + (h["vector"] if core_type != "aic" else 0.0)
        return cyc / (self.cube_hz if core_type == "aic" else self.vec_hz)

    def vector_cores(self) -> int:
        """Cores a vector kernel runs on: AIV on split parts, AI Cores on coupled parts."""
        return self.soc.aiv if self.soc.core_layout == "split" else self.soc.aic


@functools.lru_cache(maxsize=None)
def hardware(product) -> Hardware:
    """The (cached) Hardware of a product id, SoC name or Soc."""
    return Hardware(get_product(product))
