"""Figures for sweeps and comparisons, each saved as PNG and SVG.

Figures are built on `matplotlib.figure.Figure` objects rendered by the Agg (PNG) and SVG canvases
directly: no pyplot, no display and no global backend switch, so they work headless and inside
other programs.

Roofline ceilings per SoC: memory and cube peaks from perfmodel.hw (the model's own figures), or,
when that is not importable, from HARDWARE.md sections 0-1: memory = INI ddr_rate x AI Cores x cube
clock, cube = 2 x fractal MACs per cycle x AI Cores x clock (fp16 16x16x16, int8 16x32x16); vector
fp16 = 128 lanes (one 256-byte repeat per cycle, HARDWARE.md section 3) x vector cores x vector clock.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from npusim.products import get_product
from perfmodel.profiles import PIPES

__all__ = ["save", "roofs", "plot_latency_vs_tokens", "plot_roofline", "plot_pipe_bars",
           "plot_pred_vs_measured", "plot_pipe_compare", "plot_sweep"]

PIPE_COLORS = {"mte1": "#8c564b", "mte2": "#1f77b4", "mte3": "#17becf", "vector": "#2ca02c", "cube": "#d62728",
               "fixpipe": "#9467bd", "scalar": "#7f7f7f"}
_MARKERS = "osD^v<>phX*"


def _color(i: int):
    return f"C{i % 10}"


def save(fig: Figure, stem) -> list[str]:
    """Write fig as <stem>.png (150 dpi) and <stem>.svg; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(str(path))
    return paths


def _soc_text(product: str, df: pd.DataFrame | None = None) -> str:
    socs = sorted({s for s in (df["soc"].dropna().astype(str) if df is not None and "soc" in df else []) if s})
    soc = ", ".join(socs) if socs else get_product(product).soc
    return f"{product} ({soc})"


def _dtypes_text(g: pd.DataFrame) -> str:
    return "/".join(sorted(g["dtype"].astype(str).unique())) if "dtype" in g else "?"


def roofs(product: str) -> dict:
    """Ceilings of one product's default SoC: {'mem_Bps', 'mem_source', 'cube_fp16', 'cube_int8',
    'vector_fp16'} (bytes/s and ops/s). Memory and cube peaks come from perfmodel.hw (the model's
    own figures) when it is importable, else from the INI rates."""
    soc = get_product(product)
    cube_hz, vec_hz = soc.cube_mhz * 1e6, soc.vector_mhz * 1e6
    vec_units = soc.aiv if soc.core_layout == "split" else soc.aic + soc.vector_cores
    m, k, n = soc.cube_fractal("float16")
    mi, ki, ni = soc.cube_fractal("int8")
    r = {"mem_Bps": soc.ddr_rate * soc.aic * cube_hz, "mem_source": "INI",
         "cube_fp16": 2.0 * m * k * n * soc.aic * cube_hz,
         "cube_int8": 2.0 * mi * ki * ni * soc.aic * cube_hz,
         "vector_fp16": 128.0 * vec_units * vec_hz}
    try:
        from perfmodel.hw import hardware
        hw = hardware(product)
        r.update(mem_Bps=float(hw.hbm_peak_Bps), mem_source="perfmodel",
                 cube_fp16=float(hw.cube_peak_ops("float16")), cube_int8=float(hw.cube_peak_ops("int8")))
    except Exception:       # noqa: BLE001 -- perfmodel.hw missing or changed: keep the INI figures
        pass
    return r


def _log_axes(ax, xlabel: str, ylabel: str, title: str, *, legend_size: int, legend_loc: str, xbase: int = 10):
    """The finish every log-log figure shares: scales, labels with units, title, grid, legend."""
    ax.set_xscale("log", base=xbase)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size, loc=legend_loc)


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    if "status" in df:
        df = df[df["status"] == "ok"]
    return df[pd.to_numeric(df["latency_us"], errors="coerce") > 0]


def plot_latency_vs_tokens(sweep: pd.DataFrame, outdir) -> list[str]:
    """One figure per product (and activation dtype): predicted latency (us) against tokens, log-log,
    one line per operator and shape."""
    df, paths = _ok(sweep), []
    for (product, dtype), g in df.groupby(["product", "dtype"], sort=True):
        fig = Figure(figsize=(8, 5.2))
        ax = fig.add_subplot()
        keys = [c for c in ("op", "hidden", "n", "topk") if c in g]
        vary = [c for c in ("hidden", "n", "topk") if c in g and df[c].nunique() > 1]
        for i, (key, line) in enumerate(g.groupby(keys, sort=True)):
            line = line.sort_values("tokens")
            label = key[0] + "".join(f" {c}={line[c].iloc[0]}" for c in vary)
            ax.plot(line["tokens"], line["latency_us"], marker=_MARKERS[i % len(_MARKERS)], color=_color(i),
                    label=label, lw=1.6, ms=4)
        _log_axes(ax, "tokens (rows of activations)", "predicted latency (µs)",
                  f"Predicted latency vs tokens — {_soc_text(product, g)}, activations {dtype}",
                  legend_size=8, legend_loc="upper left", xbase=2)
        paths += save(fig, Path(outdir) / f"latency_vs_tokens_{product}_{dtype}")
    return paths


def plot_roofline(sweep: pd.DataFrame, outdir) -> list[str]:
    """One roofline per product: achieved ops/s against arithmetic intensity (ops per byte moved),
    ceilings from `roofs`, every swept point placed, coloured by operator."""
    df, paths = _ok(sweep), []
    for product, g in df.groupby("product", sort=True):
        r = roofs(product)
        moved = pd.to_numeric(g["bytes_read"], errors="coerce") + pd.to_numeric(g["bytes_written"], errors="coerce")
        flops = pd.to_numeric(g["flops"], errors="coerce")
        lat_s = pd.to_numeric(g["latency_us"], errors="coerce") * 1e-6
        ai, perf = flops / moved, flops / lat_s
        good = (ai > 0) & (perf > 0) & np.isfinite(ai) & np.isfinite(perf)
        fig = Figure(figsize=(8, 5.2))
        ax = fig.add_subplot()
        lo = min(1e-2, float(ai[good].min()) / 2) if good.any() else 1e-2
        hi = max(1e4, float(ai[good].max()) * 2) if good.any() else 1e4
        x = np.logspace(math.log10(lo), math.log10(hi), 200)
        for name, style in (("cube_int8", "-"), ("cube_fp16", "--"), ("vector_fp16", ":")):
            ax.plot(x, np.minimum(r["mem_Bps"] * x, r[name]) / 1e12, style, color="k", lw=1.2,
                    label=f"roof {name.replace('_', ' ')}: {r[name] / 1e12:.1f} TOPS")
        ax.plot([], [], " ", label=f"memory {r['mem_Bps'] / 1e12:.2f} TB/s ({r['mem_source']})")
        for i, (op, pts) in enumerate(g[good].groupby("op", sort=True)):
            sel = pts.index
            ax.scatter(ai[sel], perf[sel] / 1e12, color=_color(i), marker=_MARKERS[i % len(_MARKERS)], s=22,
                       label=op, zorder=3)
        _log_axes(ax, "arithmetic intensity (ops / byte moved to and from HBM)", "achieved throughput (T ops/s)",
                  f"Roofline — {_soc_text(product, g)}, activations {_dtypes_text(g)}",
                  legend_size=7, legend_loc="lower right")
        paths += save(fig, Path(outdir) / f"roofline_{product}")
    return paths


def _wrap(name: str, width: int = 16) -> str:
    """Break an operator name at underscores into lines of about `width` characters."""
    lines, cur = [], ""
    for part in name.split("_"):
        if cur and len(cur) + len(part) + 1 > width:
            lines.append(cur + "_")
            cur = part
        else:
            cur = f"{cur}_{part}" if cur else part
    return "\n".join(lines + [cur])


def _pick_tokens(g: pd.DataFrame, tokens) -> int:
    avail = sorted(g["tokens"].unique())
    want = tokens if tokens is not None else 1024
    return min(avail, key=lambda t: (abs(math.log2(max(t, 1)) - math.log2(max(want, 1))), t))


def plot_pipe_bars(sweep: pd.DataFrame, outdir, tokens: int | None = None) -> list[str]:
    """One figure per product and dtype: per operator, the predicted busy time of each pipe stacked,
    at the swept token count nearest `tokens` (default 1024); the latency is marked (pipes overlap,
    so the stack can exceed it)."""
    df, paths = _ok(sweep), []
    for (product, dtype), g in df.groupby(["product", "dtype"], sort=True):
        t = _pick_tokens(g, tokens)
        g = g[g["tokens"] == t].drop_duplicates("op").sort_values("op")
        fig = Figure(figsize=(max(6.0, 1.3 * len(g) + 3), 5.2))
        ax = fig.add_subplot()
        xs = np.arange(len(g))
        bottom = np.zeros(len(g))
        for p in PIPES:
            v = pd.to_numeric(g[f"pipe_{p}_us"], errors="coerce").fillna(0).to_numpy()
            if v.any():
                ax.bar(xs, v, 0.6, bottom=bottom, color=PIPE_COLORS[p], label=p)
                bottom += v
        ax.scatter(xs, g["latency_us"], marker="_", s=900, color="k", lw=2.5, zorder=3, label="latency")
        ax.set_xticks(xs, [_wrap(o) for o in g["op"]], fontsize=7)
        ax.set_ylabel("predicted pipe busy time (µs, stacked)")
        ax.set_title(f"Per-pipe time — {_soc_text(product, g)}, {t} tokens, activations {dtype}")
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylim(0, 1.05 * max(bottom.max(), g["latency_us"].max()))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=0.3)
        paths += save(fig, Path(outdir) / f"pipes_{product}_{dtype}")
    return paths


def plot_sweep(sweep: pd.DataFrame, outdir, kinds=("latency", "roofline", "pipes"), tokens=None) -> list[str]:
    """Every figure kind asked for, from one sweep DataFrame."""
    paths = []
    if "latency" in kinds:
        paths += plot_latency_vs_tokens(sweep, outdir)
    if "roofline" in kinds:
        paths += plot_roofline(sweep, outdir)
    if "pipes" in kinds:
        paths += plot_pipe_bars(sweep, outdir, tokens)
    return paths


def plot_pred_vs_measured(joined: pd.DataFrame, stem, title: str = "Predicted vs measured latency") -> list[str]:
    """Scatter of predicted against measured latency (log axes) with y = x and ±10% / ±25% bands;
    colour = operator, marker = product, hollow = the measured launch differs from the predicted one."""
    df = joined[(joined["status"] == "ok")] if len(joined) else joined
    df = df[(pd.to_numeric(df.get("predicted_us"), errors="coerce") > 0) & (df["measured_us"] > 0)] if len(df) else df
    fig = Figure(figsize=(7, 6.3))
    ax = fig.add_subplot()
    if len(df):
        lo = min(df["measured_us"].min(), df["predicted_us"].min()) / 2
        hi = max(df["measured_us"].max(), df["predicted_us"].max()) * 2
    else:
        lo, hi = 1.0, 1e4
    x = np.logspace(math.log10(lo), math.log10(hi), 50)
    ax.fill_between(x, x / 1.25, x * 1.25, color="0.85", label="±25%")
    ax.fill_between(x, x / 1.10, x * 1.10, color="0.7", label="±10%")
    ax.plot(x, x, "k-", lw=1, label="y = x")
    ops = sorted(df["op"].unique()) if len(df) else []
    products = sorted(df["product"].unique()) if len(df) else []
    for _, r in df.iterrows():
        i, j = ops.index(r["op"]), products.index(r["product"])
        same = bool(r.get("same_launch", True))
        ax.scatter(r["measured_us"], r["predicted_us"], marker=_MARKERS[j % len(_MARKERS)], s=40, zorder=3,
                   facecolors=_color(i) if same else "none", edgecolors=_color(i))
    for i, op in enumerate(ops):
        ax.scatter([], [], color=_color(i), marker="s", label=op)
    for j, prod in enumerate(products):
        ax.scatter([], [], color="k", marker=_MARKERS[j % len(_MARKERS)], label=prod)
    if len(df) and not df["same_launch"].all():
        ax.scatter([], [], facecolors="none", edgecolors="k", label="measured launch ≠ predicted")
    _log_axes(ax, "measured latency (µs)", "predicted latency (µs)", title, legend_size=7, legend_loc="upper left")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    return save(fig, stem)


def plot_pipe_compare(joined: pd.DataFrame, stem, max_rows: int = 12, title: str | None = None) -> list[str]:
    """Per measured row with profiler pipe times: predicted and measured busy time per pipe, side by
    side. Returns [] when no row has measured pipe times."""
    mcols = [f"pipe_{p}_us" for p in PIPES]
    if not len(joined) or not set(mcols) <= set(joined):
        return []
    df = joined[(joined["status"] == "ok") & joined[mcols].notna().any(axis=1)].head(max_rows)
    if not len(df):
        return []
    cols = min(3, len(df))
    rows = math.ceil(len(df) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.6 * rows))
    for k, (_, r) in enumerate(df.iterrows()):
        ax = fig.add_subplot(rows, cols, k + 1)
        pipes = [p for p in PIPES if not (math.isnan(r[f"pipe_{p}_us"]) and math.isnan(r[f"pred_pipe_{p}_us"]))]
        xs = np.arange(len(pipes))
        meas = [r[f"pipe_{p}_us"] for p in pipes]
        pred = [r[f"pred_pipe_{p}_us"] for p in pipes]
        ax.bar(xs - 0.2, np.nan_to_num(meas), 0.4, color="#1f77b4", label="measured")
        ax.bar(xs + 0.2, np.nan_to_num(pred), 0.4, color="#ff7f0e", label="predicted")
        ax.set_xticks(xs, pipes, fontsize=8)
        ax.set_ylabel("pipe busy time (µs)")
        label = str(r.get("label", r["op"]))
        ax.set_title(f"{r['product']}: {label[:60]}", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        if k == 0:
            ax.legend(fontsize=8)
    fig.suptitle(title or "Per-pipe busy time, measured (profiler) vs predicted; no blue bar = not reported",
                 fontsize=11)
    fig.tight_layout()
    return save(fig, stem)
