"""Figures for sweeps and comparisons, each saved as PNG and SVG.

Figures are built on `matplotlib.figure.Figure` objects rendered by the Agg (PNG) and SVG canvases
directly: no pyplot, no display and no global backend switch, so they work headless and inside
other programs. Rows that cannot be drawn (not predicted, non-finite or non-positive values, unknown
products) are left out, never fatal. An operator has one colour in every figure and panel (`OP_COLORS`,
`op_color`); grey is kept for rows a fit does not use.

Roofline ceilings per SoC (`roofs`): memory and cube peaks from perfmodel.hw (the model's own
figures); vector fp16 = 128 lanes (one 256-byte repeat per cycle, HARDWARE.md section 3) x vector
cores x vector clock from the SoC's INI facts.
"""
from __future__ import annotations

import math
import re
import textwrap
import zlib
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from npusim.products import PRODUCTS, get_product
from perfmodel.hw import hardware
from perfmodel.model import PIPES

__all__ = ["NEEDS", "OP_COLORS", "op_color", "product_marker", "soc_marker", "save", "roofs",
           "plot_latency_vs_tokens", "plot_roofline", "plot_pipe_bars", "plot_pred_vs_measured", "plot_pipe_compare",
           "plot_sweep", "plot_validation"]

PIPE_COLORS = {"mte1": "#8c564b", "mte2": "#1f77b4", "mte3": "#17becf", "vector": "#2ca02c", "cube": "#d62728",
               "fixpipe": "#9467bd", "scalar": "#7f7f7f"}
HBM_BAR = "HBM"                 # the pipe figure's bar for chip_us (the kernel's HBM traffic at the chip's rate)
_MARKERS = "osD^v<>phX*"
_LINESTYLES = ("-", "--", ":", "-.")
# sweep CSV columns each figure kind needs (`npusim plot` checks them before drawing)
NEEDS = {"latency": ("op", "product", "tokens", "latency_us"),
         "roofline": ("op", "product", "latency_us", "bytes_read", "bytes_written", "flops"),
         "pipes": ("op", "product", "tokens", "latency_us", *[f"pipe_{p}_us" for p in PIPES])}

# One colour per operator in every figure and panel (latency, roofline, compare, validation):
# the project's operators and the generic kernels of the sweep and the calibration set each have their own;
# any other name takes a light colour chosen from its name (stable across runs). No operator is grey:
# NOT_FITTED_COLOR marks the rows a fit does not use.
OP_COLORS = {
    "npu_dynamic_quant": "#1f77b4", "npu_dynamic_quant_asymmetric": "#17becf", "npu_quant_matmul": "#d62728",
    "moe_init_routing_quant": "#ff7f0e", "fake_quantize_per_channel_affine_cachemask": "#9467bd",
    "indexer_compress_epilog": "#2ca02c", "matmul": "#8c564b", "grouped_matmul": "#e377c2", "add": "#bcbd22",
    "sigmoid": "#393b79", "gelu": "#c51b7d", "maximum": "#00897b", "sqrt": "#637939"}
# file names of the sweep figures: <prefix>_<product>[_<dtype>] (plot_sweep also removes stale ones by them)
_SWEEP_FIGURE_PREFIX = {"latency": "latency_vs_tokens", "roofline": "roofline", "pipes": "pipes"}
_SPARE_COLORS = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
NOT_FITTED_COLOR = "0.45"
# one marker per product (compare) and per SoC (validation: a product's SoCs differ; its default SoC takes the
# product's marker)
PRODUCT_MARKERS = {"atlas-a2": "o", "atlas-a3": "s", "ascend-950pr": "D", "ascend-950dt": "d",
                   "atlas-training": "X", "atlas-inference": "h", "atlas-200i-500-a2": "*"}
_SOC_MARKERS = (("Ascend910B1", "^"), ("Ascend910B2", "o"), ("Ascend910B3", "v"), ("Ascend910B4", "P"),
                ("Ascend910_93", "s"), ("Ascend950PR", "D"), ("Ascend950DT", "d"), ("Ascend910", "X"),
                ("Ascend310P", "h"), ("Ascend310B", "*"))
# how the packaged set's trust levels are drawn (compare's figure; the validation figure splits them by panel)
TRUST_STYLES = {"measured": "filled: measured (fitted)", "holdout": "light: holdout (never fitted)",
                "doubtful": "hollow: doubtful (not fitted)", "analogue": "half: analogue (not fitted)"}


def op_color(op) -> str:
    """The colour of an operator in every figure."""
    op = str(op)
    return OP_COLORS.get(op) or _SPARE_COLORS[zlib.crc32(op.encode()) % len(_SPARE_COLORS)]


def product_marker(product) -> str:
    return PRODUCT_MARKERS.get(str(product), "<")


def soc_marker(soc) -> str:
    return next((m for prefix, m in _SOC_MARKERS if str(soc).startswith(prefix)), "<")


def save(fig: Figure, stem) -> list[str]:
    """Write fig as <stem>.png (150 dpi) and <stem>.svg; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        # a fixed salt and no date: the same figure gives the same SVG (ids are otherwise random)
        with matplotlib.rc_context({"svg.hashsalt": "npusim"}):
            fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        paths.append(str(path))
    return paths


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(np.nan, index=df.index)


def _known_product(name) -> bool:
    try:
        get_product(name)
        return True
    except (ValueError, TypeError):
        return False


def _usable(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The predicted rows a figure kind can draw: status ok (when there is a status), a known product, finite
    positive latency (and tokens), names as text. Numeric columns come back as floats."""
    if "status" in df:
        df = df[df["status"].astype(str) == "ok"]
    df = df.copy()
    for c in ("latency_us", "tokens", "hidden", "n", "topk", "bytes_read", "bytes_written", "flops", "block_dim",
              "tiling_key", "head_us", *[f"pipe_{p}_us" for p in PIPES]):
        if c in df:
            df[c] = _num(df, c)
    for c in ("op", "product", "dtype", "in_dtype", "out_dtype", "epilogue", "weight_format", "soc", "bound"):
        if c in df:
            df[c] = df[c].where(df[c].notna(), "").astype(str)
    good = np.isfinite(df["latency_us"]) & (df["latency_us"] > 0) & (df["op"] != "")
    if "tokens" in NEEDS[kind]:
        good &= np.isfinite(df["tokens"]) & (df["tokens"] >= 1)
    df = df[good]
    return df[df["product"].map(_known_product).astype(bool)] if len(df) else df


def _soc_text(product: str, df: pd.DataFrame | None = None) -> str:
    """'atlas-a2 (Ascend910B2)', and ', inputs warm in L2' for a sweep run with --l2 warm (the figures of a warm
    and a cold sweep otherwise look alike)."""
    socs = sorted({s for s in (df["soc"] if df is not None and "soc" in df else []) if s})
    soc = ", ".join(socs) if socs else get_product(product).soc
    warm = df is not None and "l2" in df and (df["l2"] == "warm").any()
    return f"{product} ({soc})" + (", inputs warm in L2" if warm else "")


def _dtype_groups(df: pd.DataFrame):
    """(model dtype, rows) groups: a sweep CSV has a dtype column; other frames are one group."""
    if "dtype" in df:
        yield from df.groupby("dtype", sort=True)
    else:
        yield "", df


def _what(rows) -> str:
    """'npu_quant_matmul int8→bfloat16 pertoken' for sweep rows of one operator (a row or a frame): the input and
    output dtypes (every one present, 'bfloat16/float16') and the epilogue, when the rows say."""
    rows = rows.to_frame().T if isinstance(rows, pd.Series) else rows

    def values(col):
        return "/".join(sorted({str(v) for v in rows[col] if str(v) not in ("", "nan")})) if col in rows else ""

    text, ins, outs, epilogue = values("op"), values("in_dtype"), values("out_dtype"), values("epilogue")
    if ins and outs:
        text += f" {ins}→{outs}"
    text = f"{text} {epilogue}" if epilogue else text
    weight = values("weight_format")
    return f"{text} {weight} weight" if weight not in ("", "ND") else text


def roofs(soc) -> dict:
    """Ceilings of one SoC (product id or SoC name): {'mem_Bps', 'cube_fp16', 'cube_int8', 'vector_fp16'}
    (bytes/s and ops/s)."""
    hw, s = hardware(soc), get_product(soc)
    # 128 fp16 lanes a cycle per vector unit: the cores the kernels' vector work runs on, at its clock (hw.vec_hz),
    # and on coupled parts also the standalone Vector Cores (310P) at theirs
    lanes_hz = hw.vector_cores() * hw.vec_hz
    if s.core_layout == "coupled":
        lanes_hz += s.vector_cores * s.vector_mhz * 1e6
    return {"mem_Bps": float(hw.hbm_peak_Bps), "cube_fp16": float(hw.cube_peak_ops("float16")),
            "cube_int8": float(hw.cube_peak_ops("int8")), "vector_fp16": 128.0 * lanes_hz}


def _log_axes(ax, xlabel: str, ylabel: str, title: str, *, legend_size: int, legend_loc: str, xbase: int = 10,
              handles=None):
    """The finish every log-log figure shares: scales, labels with units, title, grid, legend. legend_loc
    'below': under the axes, where a long legend covers no curve (save's tight bounding box makes room)."""
    ax.set_xscale("log", base=xbase)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    where = dict(loc="upper center", bbox_to_anchor=(0.5, -0.13)) if legend_loc == "below" else dict(loc=legend_loc)
    if handles is not None:
        ax.legend(handles=handles, fontsize=legend_size, **where)
    else:
        ax.legend(fontsize=legend_size, **where)


# -- sweeps -------------------------------------------------------------------------------------------

def _regimes(line: pd.DataFrame) -> list[tuple[float, float, str]]:
    """Points of a latency curve where the kernel's launch changes in a way the curve shows: the tiling key
    changes, the latency drops although the tokens grew because more cores launched, or the kernel variant
    changes (a plan's or the cost model's named variant: e.g. the quant matmul's weight copies past M = 128).
    (tokens, latency, label)."""
    out = []
    t, lat = line["tokens"].to_numpy(), line["latency_us"].to_numpy()
    bd = line["block_dim"].to_numpy() if "block_dim" in line else np.full(len(line), np.nan)
    key = line["tiling_key"].to_numpy() if "tiling_key" in line else np.full(len(line), np.nan)
    var = [("" if pd.isna(v) else str(v)) for v in line["variant"]] if "variant" in line else [""] * len(line)
    for i in range(1, len(line)):
        parts = []
        if key[i] != key[i - 1] and np.isfinite(key[i]) and np.isfinite(key[i - 1]):
            parts.append(f"key {key[i - 1]:.0f}→{key[i]:.0f}")
        if lat[i] < lat[i - 1] and bd[i] != bd[i - 1] and np.isfinite(bd[i]) and np.isfinite(bd[i - 1]):
            parts.append(f"{bd[i - 1]:.0f}→{bd[i]:.0f} cores")
        if var[i] != var[i - 1] and var[i] and var[i - 1]:
            parts.append(var[i])
        if parts:
            out.append((t[i], lat[i], ", ".join(parts)))
    return out


def _shape_text(rows) -> str:
    """The fixed shapes behind a curve of sweep rows (a row or a frame): 'K=7168, N=4096' for a matmul (hidden
    is its K), else 'hidden=7168'; 'topk=8' for MoE routing. '' when the rows give none."""
    rows = rows.to_frame().T if isinstance(rows, pd.Series) else rows

    def value(col):
        v = pd.to_numeric(rows[col], errors="coerce").dropna().unique() if col in rows else []
        return "/".join(f"{x:.0f}" for x in sorted(v))

    hidden, n, topk = value("hidden"), value("n"), value("topk")
    parts = [f"K={hidden}", f"N={n}"] if n and hidden else [f"N={n}"] if n else [f"hidden={hidden}"] if hidden else []
    return ", ".join(parts + ([f"topk={topk}"] if topk else []))


def _styles(groups) -> list[tuple[str, str, str]]:
    """(colour, marker, line style) per (op, ...) key: the operator's colour and marker; an operator's variants
    (epilogue, weight format, shape) take the next marker and line style."""
    seen, out = {}, []
    for key in groups:
        op = key[0] if isinstance(key, tuple) else key
        k = seen[op] = seen.get(op, -1) + 1
        base = list(OP_COLORS).index(op) if op in OP_COLORS else zlib.crc32(str(op).encode())
        out.append((op_color(op), _MARKERS[(base + k) % len(_MARKERS)], _LINESTYLES[k % len(_LINESTYLES)]))
    return out


def plot_latency_vs_tokens(sweep: pd.DataFrame, outdir) -> list[str]:
    """One figure per product and model dtype: predicted latency (µs) against tokens, log-log, one line per
    operator and shape, labelled with the fixed shapes (hidden, or K and N; topk). Colour = operator (the same in
    every figure); an operator's variants differ in marker and line style. Regime changes are ringed and
    labelled: a new tiling key or kernel variant, or fewer µs at more tokens because the kernel launches more
    cores."""
    df, paths = _usable(sweep, "latency"), []
    for (product, dtype), g in [((prod, d), dg) for prod, pg in df.groupby("product", sort=True)
                                for d, dg in _dtype_groups(pg)]:
        fig = Figure(figsize=(9, 5.6))
        ax = fig.add_subplot()
        keys = [c for c in ("op", "epilogue", "weight_format", "hidden", "n", "topk") if c in g]
        lines = list(g.groupby(keys, sort=True, dropna=False))
        handles, drawn = [], {}         # drawn: each line's points -> its label, to name lines drawn over others
        for (key, line), (color, marker, style) in zip(lines, _styles([k for k, _ in lines])):
            line = line.sort_values("tokens").drop_duplicates("tokens")
            shape = _shape_text(line)
            label = _what(line) + (f" ({shape})" if shape else "")
            points = tuple(zip(line["tokens"], line["latency_us"]))
            if points in drawn:         # e.g. ND and NZ weights where HBM, not the copy, sets the time
                label += f"; the same as {drawn[points]}"
            drawn.setdefault(points, _what(line))
            h, = ax.plot(line["tokens"], line["latency_us"], marker=marker, ls=style, color=color, label=label,
                         lw=1.6, ms=4)
            handles.append(h)
            for t, lat, text in _regimes(line):
                ax.plot([t], [lat], "o", ms=11, mfc="none", mec=color, mew=1.3)
                ax.annotate(text, (t, lat), xytext=(7, 5), textcoords="offset points", fontsize=6.5,
                            color=color, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
        if any(len(_regimes(line)) for _, line in lines):
            handles.append(Line2D([], [], ls="none", marker="o", ms=9, mfc="none", mec="k",
                                  label="regime change: tiling key, kernel variant, or more cores"))
        title = f"Predicted latency vs tokens — {_soc_text(product, g)}" + (f", model dtype {dtype}" if dtype else "")
        title += "\ntokens = rows of activations (M of a matmul); fixed shapes in each label"
        _log_axes(ax, "tokens (rows of activations)", "predicted latency (µs)", title, legend_size=7.5,
                  legend_loc="upper left" if len(handles) <= 6 else "below", xbase=2, handles=handles)
        stem = f"{_SWEEP_FIGURE_PREFIX['latency']}_{product}{'_' + dtype if dtype else ''}"
        paths += save(fig, Path(outdir) / stem)
    return paths


def _line_angle(ax, x0, y0, x1, y1) -> float:
    """Screen angle (degrees) of the segment between two data points (for text along a roof)."""
    (a, b), (c, d) = ax.transData.transform([(x0, y0), (x1, y1)])
    return math.degrees(math.atan2(d - b, c - a))


XLABEL_ROOFLINE = "arithmetic intensity (ops per byte the kernel reads and writes)"


def _hbm_efficiency(soc) -> float | None:
    """The shipped calibration's hbm_efficiency for a product or SoC's kernel family (None if unknown)."""
    try:
        from perfmodel.calibration import default_calibration
        return float(default_calibration().params_for(get_product(soc).family)["hbm_efficiency"])
    except Exception:                   # a figure never fails on this optional roof
        return None


def plot_roofline(sweep: pd.DataFrame, outdir) -> list[str]:
    """One roofline per product: achieved ops/s against arithmetic intensity (ops per byte the kernel reads and
    writes: bytes_read + bytes_written, not the HBM traffic alone, since the model keeps written bytes in L2 when
    they fit), with the HBM peak roof, the HBM roof at the shipped calibration's hbm_efficiency (the rate the
    model gives HBM), and the cube int8 / cube fp16 / vector fp16 roofs drawn and labelled, every swept point
    placed (colour = operator); the axes fit the points and the roofs' knees. A point above the HBM roof is a
    kernel whose writes stay in L2: the figure says so."""
    df, paths = _usable(sweep, "roofline"), []
    for product, g in df.groupby("product", sort=True):
        moved = g["bytes_read"] + g["bytes_written"]
        ai, perf = g["flops"] / moved, g["flops"] / (g["latency_us"] * 1e-6)
        good = (ai > 0) & (perf > 0) & np.isfinite(ai) & np.isfinite(perf)
        if not good.any():
            continue
        socs = sorted({s for s in g["soc"] if _known_product(s)}) if "soc" in g else []
        r = roofs(socs[0] if socs else product)
        ceilings = [("cube_int8", "cube int8", "-"), ("cube_fp16", "cube fp16", "--"),
                    ("vector_fp16", "vector fp16", ":")]
        knees = [r[k] / r["mem_Bps"] for k, _, _ in ceilings]
        lo = min(float(ai[good].min()), min(knees)) / 3
        hi = max(float(ai[good].max()), max(knees)) * 3
        ylo = float(perf[good].min()) / 3 / 1e12
        yhi = max(r[k] for k, _, _ in ceilings) * 2.5 / 1e12
        fig = Figure(figsize=(8.5, 5.4))
        ax = fig.add_subplot()
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(ylo, yhi)
        top = max(knees)
        mem_x = np.array([lo, top])
        handles = [ax.plot(mem_x, r["mem_Bps"] * mem_x / 1e12, "-", color="0.35", lw=1.6,
                           label=f"memory roof: HBM peak {r['mem_Bps'] / 1e12:.2f} TB/s")[0]]
        eff = _hbm_efficiency(socs[0] if socs else product)
        if eff is not None and eff < 1:
            handles += ax.plot(mem_x, eff * r["mem_Bps"] * mem_x / 1e12, "-.", color="0.55", lw=1.1,
                               label=f"HBM at the model's rate: {eff:.2f} × peak = {eff * r['mem_Bps'] / 1e12:.2f} "
                                     "TB/s (shipped calibration)")
        for (key, name, style), knee in zip(ceilings, knees):
            handles += ax.plot([knee, hi], [r[key] / 1e12] * 2, style, color="k", lw=1.3,
                               label=f"{name} roof: {r[key] / 1e12:.1f} TOPS")
            # labelled in the right margin: the points crowd under the roofs' right ends
            ax.annotate(f"{name} {r[key] / 1e12:.0f} TOPS", xy=(1.0, r[key] / 1e12), xycoords=("axes fraction", "data"),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=7.5)
        x_text = max(lo * 4, min(knees) / 30)
        if x_text < top:
            ax.text(x_text, r["mem_Bps"] * x_text / 1e12 * 1.35, f"HBM {r['mem_Bps'] / 1e12:.2f} TB/s", fontsize=7.5,
                    rotation=_line_angle(ax, lo, r["mem_Bps"] * lo / 1e12, top, r["mem_Bps"] * top / 1e12),
                    rotation_mode="anchor", color="0.25")
        pts = g[good]
        keys = ["op", *[c for c in ("epilogue", "weight_format") if c in pts]]
        groups = list(pts.groupby(keys, sort=True))
        labelled = []           # (log x, log y) of the token labels placed: series that coincide get one
        for (_, sel), (color, marker, _) in zip(groups, _styles([k for k, _ in groups])):
            handles.append(ax.scatter(ai[sel.index], perf[sel.index] / 1e12, color=color, s=22, zorder=3,
                                      marker=marker, label=_what(sel)))
            # which end of a series is which: its fewest and most tokens, beside their points
            for t in sorted({int(sel["tokens"].min()), int(sel["tokens"].max())}):
                i = sel.index[sel["tokens"] == t][0]
                at = (math.log10(ai[i]), math.log10(perf[i] / 1e12))
                if any(abs(at[0] - u) < 0.15 and abs(at[1] - v) < 0.15 for u, v in labelled):
                    continue
                labelled.append(at)
                ax.annotate(f"{t} tok", (ai[i], perf[i] / 1e12), xytext=(5, -3), textcoords="offset points",
                            fontsize=6, color=color)
        above = int((perf[good] > r["mem_Bps"] * ai[good] * 1.0001).sum())
        dts = sorted({d for d in pts["dtype"] if d}) if "dtype" in pts else []
        title = (f"Roofline — {_soc_text(product, g)}" + (f", model dtypes {'/'.join(dts)}" if dts else "")
                 + "\nx counts every byte the kernel reads and writes; written bytes that stay in L2 never reach "
                 "HBM,\nso a point above the HBM roof is a kernel whose writes stay in L2"
                 + (f" ({above} point{'s' if above > 1 else ''} here)" if above else " (none here)")
                 + "; one point per token count, the ends labelled")
        ax.set_xlabel(XLABEL_ROOFLINE)
        ax.set_ylabel("achieved throughput (T ops/s)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
        paths += save(fig, Path(outdir) / f"{_SWEEP_FIGURE_PREFIX['roofline']}_{product}")
    return paths


def _pick_tokens(g: pd.DataFrame, tokens) -> int:
    avail = sorted(g["tokens"].unique())
    want = tokens if tokens is not None else 1024
    return int(min(avail, key=lambda t: (abs(math.log2(max(t, 1)) - math.log2(max(want, 1))), t)))


def _kernels(text) -> list[tuple[str, float]]:
    """[(kernel, µs)] from a sweep CSV's kernels cell ('QuantBatchMatmulV3 164.5 us; Transpose 13.8 us')."""
    out = []
    for part in str(text).split(";") if isinstance(text, str) else []:
        words = part.split()
        if len(words) >= 3 and words[-1] == "us":
            try:
                out.append((" ".join(words[:-2]), float(words[-2])))
            except ValueError:
                pass
    return out


def _bound_bar(bound: str, bars: dict) -> str | None:
    """The bar a row's `bound` names (bars: {name: µs}, the pipes and HBM drawn): the pipe itself; for 'memory' the
    largest of MTE1, MTE2, MTE3 and the HBM traffic (README: memory = the busiest data-moving pipe or the HBM
    traffic); None for 'launch' (the head outlasts the loops), 'none' or a bar not drawn."""
    if bound == "memory":
        movers = {k: v for k, v in bars.items() if k in ("mte1", "mte2", "mte3", HBM_BAR)}
        return max(movers, key=movers.get) if movers else None
    return bound if bound in bars else None


def plot_pipe_bars(sweep: pd.DataFrame, outdir, tokens: int | None = None) -> list[str]:
    """One figure per product and model dtype, at the swept token count nearest `tokens` (default 1024): a
    panel per operator with each pipe's predicted busy time side by side (pipes run concurrently, so the
    bars are not stacked), an HBM bar (chip_us: the kernel's HBM traffic alone at the chip's rate, when the CSV
    has it), the bar that sets `bound` hatched (for 'memory' the largest of MTE1/MTE2/MTE3/HBM), and the latency
    and head (launch, per-core start, op head) marked. An operator that launches several kernels (the CSV's
    kernels column) gets a top row splitting its latency into the kernels, which run one after another, and
    their names and times in its title; its pipe bars add up each pipe over the kernels."""
    df, paths = _usable(sweep, "pipes"), []
    for c in ("chip_us", "core_us"):
        if c in df:
            df[c] = _num(df, c)
    for product, pg in df.groupby("product", sort=True):
        for dtype, g in _dtype_groups(pg):
            t = _pick_tokens(g, tokens)
            g = g[g["tokens"] == t]
            keys = [c for c in ("op", "epilogue", "weight_format", "hidden", "n", "topk") if c in g]
            g = g.sort_values(keys).drop_duplicates(keys)
            n = len(g)
            cols = min(3, n)
            rows = math.ceil(n / cols)
            multi = any(len(_kernels(r.get("kernels"))) > 1 for _, r in g.iterrows())
            fig = Figure(figsize=(4.8 * cols, (3.3 if multi else 2.9) * rows + 1.2))
            for k, (_, r) in enumerate(g.iterrows()):
                ax = fig.add_subplot(rows, cols, k + 1)
                bars = {p: r[f"pipe_{p}_us"] for p in PIPES if np.isfinite(r[f"pipe_{p}_us"]) and r[f"pipe_{p}_us"] > 0}
                chip = r.get("chip_us", np.nan)
                if np.isfinite(chip) and chip > 0:      # after the data-moving pipes
                    order = [p for p in bars if p in ("mte1", "mte2", "mte3")] + [HBM_BAR] + \
                            [p for p in bars if p not in ("mte1", "mte2", "mte3")]
                    bars = {name: (chip if name == HBM_BAR else bars[name]) for name in order}
                hatched = _bound_bar(str(r.get("bound", "")), bars)
                names, vals = list(bars), list(bars.values())
                kernels = _kernels(r.get("kernels"))
                ys = np.arange(len(names) + (len(kernels) > 1))[::-1]
                ax.barh(ys[:len(names)], vals, 0.65, color=[PIPE_COLORS.get(p, "white") for p in names],
                        hatch=["//" if p == hatched else "" for p in names], edgecolor="k",
                        lw=[0.9 if p == HBM_BAR else 0.4 for p in names])
                labels = names
                if len(kernels) > 1:                    # the kernels in sequence, adding up to the latency
                    left = 0.0
                    for j, (kname, us) in enumerate(kernels):
                        ax.barh(ys[-1], us, 0.65, left=left, color=("0.88", "0.72")[j % 2], edgecolor="k", lw=0.4)
                        if us > 0.12 * r["latency_us"]:
                            ax.text(left + us / 2, ys[-1], kname if us > 0.4 * r["latency_us"] else kname[:10],
                                    ha="center", va="center", fontsize=6)
                        left += us
                    labels = names + ["kernels"]
                ax.set_yticks(ys, labels, fontsize=8)
                ax.axvline(r["latency_us"], color="k", lw=1.6)
                head = r.get("head_us", np.nan)
                if np.isfinite(head) and head > 0:
                    ax.axvline(head, color="k", lw=1, ls=":")
                ax.set_xlim(0, 1.12 * max([r["latency_us"], *vals]))
                ax.set_xlabel("µs", fontsize=8)
                ax.tick_params(axis="x", labelsize=8)
                name = textwrap.fill(_what(r), 48)
                shape = _shape_text(r)
                title = f"{name}" + (f" ({shape})" if shape else "")
                title += f"\nlatency {r['latency_us']:.3g} µs" + (f", bound {r['bound']}" if r.get("bound") else "")
                if np.isfinite(chip) and chip > 0:        # (3 digits: a tiny kernel's HBM time is not 0.0)
                    title += f", HBM alone {chip:.3g} µs"
                if len(kernels) > 1:
                    title += "\n" + textwrap.fill(f"{len(kernels)} kernels (the operator's own first): " + " + ".join(
                        f"{kname} {us:.3g}" for kname, us in kernels) + " µs", 62)
                core = r.get("core_us", np.nan)
                if len(kernels) <= 1 and np.isfinite(core) and core > 1.05 * max(vals, default=0.0):
                    # the gap the bars leave: single-buffered tiles, or serial phases (MoE: sort, then gather)
                    title += "\n" + textwrap.fill(f"loops {core:.3g} µs, more than the busiest pipe: pipes "
                                                   "overlap only in part, or phases run in turn", 62)
                ax.set_title(title, fontsize=7.5)
                ax.grid(True, axis="x", alpha=0.3)
            fig.suptitle(
                f"Predicted pipe busy time per operator — {_soc_text(product, g)}, {t} tokens"
                + (f", model dtype {dtype}" if dtype else "") + "\n"
                "pipes run concurrently: bars are busy times side by side; solid line = latency; dotted = head "
                "(launch + per-core start + op head)\n"
                f"{HBM_BAR} (white) = the kernel's HBM traffic alone at the chip's rate (chip_us): HBM bandwidth is the "
                "limit only where that bar nears the latency\n"
                "hatched = the bar that sets 'bound' ('memory': the largest of mte1/mte2/mte3/HBM, an mte2 bar above "
                "HBM = loads re-read from L2; 'launch': none, the head outlasts the loops)"
                + ("\nan operator launching several kernels runs them one after another: its 'kernels' row splits the "
                   "latency, and each pipe bar adds up over them" if multi else ""), fontsize=8.5)
            fig.tight_layout()
            stem = f"{_SWEEP_FIGURE_PREFIX['pipes']}_{product}{'_' + dtype if dtype else ''}"
            paths += save(fig, Path(outdir) / stem)
    return paths


def plot_sweep(sweep: pd.DataFrame, outdir, kinds=("latency", "roofline", "pipes"), tokens=None) -> list[str]:
    """Every figure kind asked for, from one sweep DataFrame. The figures of those kinds that an earlier sweep
    left in outdir (another product or dtype) are removed, so that the folder shows this sweep only."""
    paths = []
    if "latency" in kinds:
        paths += plot_latency_vs_tokens(sweep, outdir)
    if "roofline" in kinds:
        paths += plot_roofline(sweep, outdir)
    if "pipes" in kinds:
        paths += plot_pipe_bars(sweep, outdir, tokens)
    # <prefix>_<product id>[_<dtype>].png|svg: compare's figures (pipes_pred_vs_measured) are not sweep figures
    ids = "|".join(re.escape(p) for p in sorted(PRODUCTS, key=len, reverse=True))
    ours = re.compile(rf"({'|'.join(_SWEEP_FIGURE_PREFIX[k] for k in kinds)})_({ids})(_[a-z0-9]+)?\.(png|svg)")
    if Path(outdir).is_dir():
        for old in Path(outdir).iterdir():
            if ours.fullmatch(old.name) and str(old) not in paths:
                old.unlink()
    return paths


# -- comparisons --------------------------------------------------------------------------------------

def _drawable(joined: pd.DataFrame) -> pd.DataFrame:
    if not len(joined):
        return joined
    df = joined[joined["status"] == "ok"]
    m, p = _num(df, "measured_us"), _num(df, "predicted_us")
    return df[np.isfinite(m) & (m > 0) & np.isfinite(p) & (p > 0)]


def _bands(ax, x):
    """The ±25% / ±10% bands around y = x, with their edges drawn so they show at any width."""
    ax.fill_between(x, x / 1.25, x * 1.25, color="0.86", lw=0, label="±25%")
    ax.fill_between(x, x / 1.10, x * 1.10, color="0.70", lw=0, label="±10%")
    for f, style in ((1.25, ":"), (1.10, "--")):
        for y in (x * f, x / f):
            ax.plot(x, y, style, color="0.35", lw=0.7)
    ax.plot(x, x, "k-", lw=1, label="y = x")


def _trust_style(trust: str, color) -> dict:
    """Marker fill per trust level (TRUST_STYLES): measured filled, holdout light, doubtful hollow, analogue half;
    any other level (a user profile's rows) filled."""
    if trust == "holdout":
        return dict(mfc=to_rgba(color, 0.3), mec=color)
    if trust == "doubtful":
        return dict(mfc="none", mec=color, mew=1.3)
    if trust == "analogue":
        return dict(mfc=color, mec=color, fillstyle="bottom", mfcalt="none")
    return dict(mfc=color, mec=color)


def _mape_text(df: pd.DataFrame, m: pd.Series, p: pd.Series) -> str:
    """'MAPE 6.5% over the 126 'measured' launches; holdout 13.9% (107), ...' (the error of each launch's median)."""
    ape = _num(df, "ape_pct") if "ape_pct" in df else (p - m).abs() / m * 100
    ape = ape.where(np.isfinite(ape), (p - m).abs() / m * 100)
    trust = df["trust"].astype(str) if "trust" in df else pd.Series("", index=df.index)
    levels = [t for t in TRUST_STYLES if (trust == t).any()] + sorted(set(trust) - set(TRUST_STYLES) - {""})
    many = "rows" in df and (_num(df, "rows").fillna(1) > 1).any()
    what = "launches (the median of each)" if many else "launches"
    if len(levels) <= 1:
        return f"MAPE {ape.mean():.1f}% over {len(df)} {what}"
    first = "measured" if "measured" in levels else levels[0]
    text = f"MAPE {ape[trust == first].mean():.1f}% over the {int((trust == first).sum())} '{first}' {what}"
    return text + "; " + ", ".join(f"{t} {ape[trust == t].mean():.1f}% ({int((trust == t).sum())})"
                                   for t in levels if t != first)


def plot_pred_vs_measured(joined: pd.DataFrame, stem, title: str = "Predicted vs measured latency") -> list[str]:
    """Predicted against measured latency (log axes) with y = x and ±10% / ±25% bands, one point per row of
    `joined` (a compare() or by_launch() table): colour = operator (as in every figure), marker = product, fill =
    the packaged set's trust level (measured filled, holdout light, doubtful hollow, analogue half-filled), a
    black ring = the measured launch differs from the predicted one. The title adds the products and the MAPE (of
    the 'measured' rows, and of each other trust level). For by_launch rows the measured median is placed, a
    bar with caps spans the measured min to max, and the marker's area grows with the number of runs (both in
    the legend)."""
    df = _drawable(joined)
    fig = Figure(figsize=(9.6, 6.4))
    ax = fig.add_subplot()
    m, p = _num(df, "measured_us"), _num(df, "predicted_us")
    # the axes hold each launch's fastest and slowest run too: a warm-up bar must end inside, with its cap
    m_lo = _num(df, "measured_min_us").fillna(m) if "measured_min_us" in df else m
    m_hi = _num(df, "measured_max_us").fillna(m) if "measured_max_us" in df else m
    lo = min(m_lo.min(), m.min(), p.min()) / 2 if len(df) else 1.0
    hi = max(m_hi.max(), m.max(), p.max()) * 2 if len(df) else 1e4
    x = np.logspace(math.log10(lo), math.log10(hi), 50)
    _bands(ax, x)
    handles, labels = ax.get_legend_handles_labels()
    ops = sorted(df["op"].astype(str).unique()) if len(df) else []
    products = sorted(df["product"].astype(str).unique()) if len(df) else []
    same = df["same_launch"].astype(bool) if "same_launch" in df else pd.Series(True, index=df.index)
    trust = df["trust"].astype(str) if "trust" in df else pd.Series("", index=df.index)
    rows = _num(df, "rows").fillna(1) if "rows" in df else pd.Series(1.0, index=df.index)
    area = lambda n: 22 + 34 * np.log10(np.clip(n, 1, 1e6))          # marker area (pt²) for n runs
    ranged = False
    if {"measured_min_us", "measured_max_us"} <= set(df) and len(df):
        lo_e = (m - _num(df, "measured_min_us")).clip(lower=0).fillna(0)
        hi_e = (_num(df, "measured_max_us") - m).clip(lower=0).fillna(0)
        for op in ops:
            sel = df.index[(df["op"].astype(str) == op) & ((lo_e > 0) | (hi_e > 0))]
            if len(sel):
                ranged = True
                ax.errorbar(m[sel], p[sel], xerr=[lo_e[sel], hi_e[sel]], fmt="none", ecolor=op_color(op),
                            elinewidth=1.5, capsize=3, capthick=1.2, alpha=0.9, zorder=2)
    for i in df.index:
        op, prod, t = str(df.at[i, "op"]), str(df.at[i, "product"]), trust[i]
        ms = math.sqrt(area(rows[i]))
        ax.plot([m[i]], [p[i]], ls="none", marker=product_marker(prod), ms=ms, zorder=3,
                **_trust_style(t, op_color(op)))
        if not same[i]:
            ax.plot([m[i]], [p[i]], ls="none", marker="o", ms=ms + 7, mfc="none", mec="k", mew=1.1, zorder=4)
    handles += [Patch(color=op_color(op), label=op) for op in ops]
    handles += [Line2D([], [], ls="none", marker=product_marker(prod), color="k", label=prod) for prod in products]
    levels = [t for t in TRUST_STYLES if (trust == t).any()]
    if len(set(trust)) > 1:
        handles += [Line2D([], [], ls="none", marker="o", ms=7, label=TRUST_STYLES[t], **_trust_style(t, "0.3"))
                    for t in levels]
    if len(df) and not same.all():
        handles.append(Line2D([], [], ls="none", marker="o", ms=12, mfc="none", mec="k", mew=1.1,
                              label="ringed: measured launch ≠ predicted"))
    if ranged:
        handles.append(Line2D([], [], color="0.3", lw=1.5, marker="|", ms=8, mew=1.2,
                              label="bar: fastest to slowest run of a launch"))
    if len(df) and rows.max() > 1:
        # the fewest and the most runs a launch has (and 10 between, when it lies between): sizes that are drawn
        lo_n, hi_n = int(rows.min()), int(rows.max())
        for n in sorted({lo_n, hi_n} | ({10} if lo_n < 10 < hi_n else set())):
            handles.append(Line2D([], [], ls="none", marker="o", color="0.3", ms=math.sqrt(area(n)),
                                  label=f"{n} run{'s' if n > 1 else ''} (marker size)"))
    if len(df):
        title = (f"{title}\nproducts: {', '.join(products)}\n{textwrap.fill(_mape_text(df, m, p), 90)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured latency (µs)")
    ax.set_ylabel("predicted latency (µs)")
    ax.set_title(title, fontsize=9.5)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    return save(fig, stem)


def plot_pipe_compare(joined: pd.DataFrame, stem, max_rows: int = 12, title: str | None = None) -> list[str]:
    """Per measured row (or launch) with profiler pipe times, the most frequent first: predicted and measured
    busy time per pipe, side by side. Returns [] when no row has measured pipe times."""
    mcols = [f"pipe_{p}_us" for p in PIPES]
    if not len(joined) or not set(mcols) <= set(joined):
        return []
    df = _drawable(joined)
    df = df[df[mcols].apply(pd.to_numeric, errors="coerce").notna().any(axis=1)]
    if "rows" in df:
        df = df.sort_values("rows", ascending=False, kind="stable")
    df = df.head(max_rows)
    if not len(df):
        return []
    cols = min(3, len(df))
    rows = math.ceil(len(df) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.9 * rows + 0.6))
    for k, (_, r) in enumerate(df.iterrows()):
        ax = fig.add_subplot(rows, cols, k + 1)
        meas = {p: pd.to_numeric(r[f"pipe_{p}_us"], errors="coerce") for p in PIPES}
        pred = {p: pd.to_numeric(r.get(f"pred_pipe_{p}_us", np.nan), errors="coerce") for p in PIPES}
        pipes = [p for p in PIPES if np.isfinite(meas[p]) or (np.isfinite(pred[p]) and pred[p] > 0)]
        xs = np.arange(len(pipes))
        ax.bar(xs - 0.2, np.nan_to_num([meas[p] for p in pipes]), 0.4, color="#1f77b4", label="measured")
        ax.bar(xs + 0.2, np.nan_to_num([pred[p] for p in pipes]), 0.4, color="#ff7f0e", label="predicted")
        ax.set_xticks(xs, pipes, fontsize=8)
        ax.set_ylabel("pipe busy time (µs)", fontsize=8)
        label = f"{r['product']}: {r.get('label', r['op'])}"
        if "rows" in r and pd.notna(r["rows"]) and r["rows"] > 1:
            label += f" ({int(r['rows'])} rows)"
        # the latencies the busy times sit under (pipes overlap: the longest bar is at most the latency)
        m_us, p_us = (pd.to_numeric(r.get(c, np.nan), errors="coerce") for c in ("measured_us", "predicted_us"))
        lat = ""
        for us, color, who in ((m_us, "#1f77b4", "measured"), (p_us, "#ff7f0e", "predicted")):
            if np.isfinite(us) and us > 0:
                ax.axhline(us, color=color, ls="--", lw=1)
                lat += f"{', ' if lat else ''}{who} {us:.4g} µs"
        if np.isfinite(m_us) and np.isfinite(p_us) and m_us > 0:
            lat += f" ({100 * (p_us - m_us) / m_us:+.1f}%)"
        ax.set_title(textwrap.fill(label, 52) + (f"\nlatency (dashed): {lat}" if lat else ""), fontsize=7.5)
        ax.grid(True, axis="y", alpha=0.3)
        if k == 0:
            ax.legend(fontsize=8)
    fig.suptitle(title or "Per-pipe busy time, measured (profiler) vs predicted; no blue bar = not reported",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))      # room for the suptitle
    return save(fig, stem)


# -- the model's validation --------------------------------------------------------------------------

VALIDATION_PANELS = (("error_pct", "in-sample"), ("cv_group_pct", "operator × SoC held out"),
                     ("cv_family_pct", "shape family held out"))


def plot_validation(per_row: pd.DataFrame, stem, title: str = "perfmodel against the packaged measurements") \
        -> list[str]:
    """Predicted against measured latency, one panel per error column of a fit_report.evaluate table
    (in-sample, and cross-validated when present): the prediction a panel shows is measured * (1 + error).
    Colour = operator (as in every figure), marker = SoC: one legend entry per operator × SoC group; rows the fit
    does not use because of doubt (doubtful, analogue) are grey crosses, outside the MAPE. The panel title gives
    the MAPE over the fitted rows and says what else is drawn. A last panel shows the rows held out of the fit on
    purpose (trust 'holdout', e.g. Ascend 950PR), with their MAPE."""
    panels = [(c, t) for c, t in VALIDATION_PANELS if c in per_row]
    held = (per_row["trust"] == "holdout").to_numpy()
    ncols = len(panels) + int(held.any())
    fig = Figure(figsize=(5.4 * ncols, 6.4))
    m = _num(per_row, "measured_us")
    lo, hi = m.min() / 2, m.max() * 2
    x = np.logspace(math.log10(lo), math.log10(hi), 50)
    fitted = (per_row["trust"] == "measured").to_numpy()
    doubted = ~fitted & ~held
    op = per_row["op"].astype(str) if "op" in per_row else per_row["group"].astype(str).str.split().str[0]
    soc = per_row["soc"].astype(str) if "soc" in per_row else per_row["group"].astype(str).str.split().str[-1]

    def panel(k, rows, col, name, extra=""):
        ax = fig.add_subplot(1, ncols, k + 1)
        _bands(ax, x)
        pred = m * (1 + _num(per_row, col) / 100)
        for g in sorted(per_row.loc[rows, "group"].unique()):
            sel = rows & (per_row["group"] == g).to_numpy()
            first = np.flatnonzero(sel)[0]
            ax.scatter(m[sel], pred[sel], s=24, color=op_color(op.iloc[first]), marker=soc_marker(soc.iloc[first]),
                       label=g, zorder=3, edgecolors="k", linewidths=0.3)
        mape = float(np.mean(np.abs(_num(per_row, col)[rows])))
        _log_axes(ax, "measured latency (µs)", "predicted latency (µs)",
                  textwrap.fill(f"{name}: MAPE {mape:.1f}% over the {int(rows.sum())} {extra}", 58),
                  legend_size=7, legend_loc="upper left")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        return ax, pred

    extra = "fitted rows" + (f" (also drawn: {int(doubted.sum())} not fitted, grey ×)" if doubted.any() else "")
    for k, (col, name) in enumerate(panels):
        ax, pred = panel(k, fitted, col, name, extra)
        if doubted.any():
            ax.scatter(m[doubted], pred[doubted], s=24, color=NOT_FITTED_COLOR, marker="x", zorder=2,
                       label="not fitted (doubtful / analogue)")
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
        else:                           # the same groups and colours as the first panel's legend
            ax.get_legend().remove()
    if held.any():
        panel(len(panels), held, "error_pct", "never fitted (held out on purpose)", "held-out rows")
    fig.suptitle(f"{title}\ncolour = operator, marker = SoC (legend in the first panel; the last panel's own); "
                 "bands ±10% (dark, dashed edge) and ±25% (light, dotted edge)", fontsize=11)
    fig.tight_layout()
    return save(fig, stem)
