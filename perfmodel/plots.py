"""Figures for sweeps and comparisons, each saved as PNG and SVG.

Figures are built on `matplotlib.figure.Figure` objects rendered by the Agg (PNG) and SVG canvases
directly: no pyplot, no display and no global backend switch, so they work headless and inside
other programs. Rows that cannot be drawn (not predicted, non-finite or non-positive values, unknown
products) are left out, never fatal.

Roofline ceilings per SoC (`roofs`): memory and cube peaks from perfmodel.hw (the model's own
figures); vector fp16 = 128 lanes (one 256-byte repeat per cycle, HARDWARE.md section 3) x vector
cores x vector clock from the SoC's INI facts.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from npusim.products import get_product
from perfmodel.hw import hardware
from perfmodel.model import PIPES

__all__ = ["NEEDS", "save", "roofs", "plot_latency_vs_tokens", "plot_roofline", "plot_pipe_bars",
           "plot_pred_vs_measured", "plot_pipe_compare", "plot_sweep"]

PIPE_COLORS = {"mte1": "#8c564b", "mte2": "#1f77b4", "mte3": "#17becf", "vector": "#2ca02c", "cube": "#d62728",
               "fixpipe": "#9467bd", "scalar": "#7f7f7f"}
_MARKERS = "osD^v<>phX*"
# sweep CSV columns each figure kind needs (`npusim plot` checks them before drawing)
NEEDS = {"latency": ("op", "product", "tokens", "latency_us"),
         "roofline": ("op", "product", "latency_us", "bytes_read", "bytes_written", "flops"),
         "pipes": ("op", "product", "tokens", "latency_us", *[f"pipe_{p}_us" for p in PIPES])}


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
    socs = sorted({s for s in (df["soc"] if df is not None and "soc" in df else []) if s})
    soc = ", ".join(socs) if socs else get_product(product).soc
    return f"{product} ({soc})"


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
    vec_units = s.aiv if s.core_layout == "split" else s.aic + s.vector_cores
    return {"mem_Bps": float(hw.hbm_peak_Bps), "cube_fp16": float(hw.cube_peak_ops("float16")),
            "cube_int8": float(hw.cube_peak_ops("int8")), "vector_fp16": 128.0 * vec_units * s.vector_mhz * 1e6}


def _log_axes(ax, xlabel: str, ylabel: str, title: str, *, legend_size: int, legend_loc: str, xbase: int = 10,
              handles=None):
    """The finish every log-log figure shares: scales, labels with units, title, grid, legend."""
    ax.set_xscale("log", base=xbase)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if handles is not None:
        ax.legend(handles=handles, fontsize=legend_size, loc=legend_loc)
    else:
        ax.legend(fontsize=legend_size, loc=legend_loc)


# -- sweeps -------------------------------------------------------------------------------------------

def _regimes(line: pd.DataFrame) -> list[tuple[float, float, str]]:
    """Points of a latency curve where the kernel's launch changes in a way the curve shows: the tiling key
    changes, or the latency drops although the tokens grew (more cores launched). (tokens, latency, label)."""
    out = []
    t, lat = line["tokens"].to_numpy(), line["latency_us"].to_numpy()
    bd = line["block_dim"].to_numpy() if "block_dim" in line else np.full(len(line), np.nan)
    key = line["tiling_key"].to_numpy() if "tiling_key" in line else np.full(len(line), np.nan)
    for i in range(1, len(line)):
        parts = []
        if key[i] != key[i - 1] and np.isfinite(key[i]) and np.isfinite(key[i - 1]):
            parts.append(f"key {key[i - 1]:.0f}→{key[i]:.0f}")
        if lat[i] < lat[i - 1] and bd[i] != bd[i - 1] and np.isfinite(bd[i]) and np.isfinite(bd[i - 1]):
            parts.append(f"{bd[i - 1]:.0f}→{bd[i]:.0f} cores")
        if parts:
            out.append((t[i], lat[i], ", ".join(parts)))
    return out


def plot_latency_vs_tokens(sweep: pd.DataFrame, outdir) -> list[str]:
    """One figure per product and model dtype: predicted latency (µs) against tokens, log-log, one line per
    operator and shape. Regime changes are ringed and labelled: a new tiling key, or fewer µs at more tokens
    because the kernel launches more cores."""
    df, paths = _usable(sweep, "latency"), []
    for (product, dtype), g in [((prod, d), dg) for prod, pg in df.groupby("product", sort=True)
                                for d, dg in _dtype_groups(pg)]:
        fig = Figure(figsize=(9, 5.6))
        ax = fig.add_subplot()
        keys = [c for c in ("op", "epilogue", "weight_format", "hidden", "n", "topk") if c in g]
        vary = [c for c in ("hidden", "n", "topk") if c in g and g[c].nunique() > 1]
        handles = []
        for i, (_, line) in enumerate(g.groupby(keys, sort=True, dropna=False)):
            line = line.sort_values("tokens").drop_duplicates("tokens")
            label = _what(line) + "".join(f" {c}={line[c].iloc[0]:.0f}" for c in vary
                                                  if pd.notna(line[c].iloc[0]))
            h, = ax.plot(line["tokens"], line["latency_us"], marker=_MARKERS[i % len(_MARKERS)], color=_color(i),
                         label=label, lw=1.6, ms=4)
            handles.append(h)
            for t, lat, text in _regimes(line):
                ax.plot([t], [lat], "o", ms=11, mfc="none", mec=_color(i), mew=1.3)
                ax.annotate(text, (t, lat), xytext=(7, 5), textcoords="offset points", fontsize=6.5,
                            color=_color(i), bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
        if any(len(_regimes(line)) for _, line in g.groupby(keys, sort=True, dropna=False)):
            handles.append(Line2D([], [], ls="none", marker="o", ms=9, mfc="none", mec="k",
                                  label="regime change: tiling key, or more cores"))
        title = f"Predicted latency vs tokens — {_soc_text(product, g)}" + (f", model dtype {dtype}" if dtype else "")
        _log_axes(ax, "tokens (rows of activations)", "predicted latency (µs)", title, legend_size=7.5,
                  legend_loc="upper left", xbase=2, handles=handles)
        paths += save(fig, Path(outdir) / f"latency_vs_tokens_{product}{'_' + dtype if dtype else ''}")
    return paths


def _line_angle(ax, x0, y0, x1, y1) -> float:
    """Screen angle (degrees) of the segment between two data points (for text along a roof)."""
    (a, b), (c, d) = ax.transData.transform([(x0, y0), (x1, y1)])
    return math.degrees(math.atan2(d - b, c - a))


def plot_roofline(sweep: pd.DataFrame, outdir) -> list[str]:
    """One roofline per product: achieved ops/s against arithmetic intensity (ops per byte moved to and from
    HBM), with the memory roof and the cube int8 / cube fp16 / vector fp16 roofs drawn and labelled, every
    swept point placed (coloured by operator); the axes fit the points and the roofs' knees."""
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
                           label=f"memory roof: HBM {r['mem_Bps'] / 1e12:.2f} TB/s")[0]]
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
        for i, (_, sel) in enumerate(pts.groupby(keys, sort=True)):
            handles.append(ax.scatter(ai[sel.index], perf[sel.index] / 1e12, color=_color(i), s=22, zorder=3,
                                      marker=_MARKERS[i % len(_MARKERS)], label=_what(sel)))
        dts = sorted({d for d in pts["dtype"] if d}) if "dtype" in pts else []
        title = f"Roofline — {_soc_text(product, g)}" + (f", model dtypes {'/'.join(dts)}" if dts else "")
        ax.set_xlabel("arithmetic intensity (ops / byte moved to and from HBM)")
        ax.set_ylabel("achieved throughput (T ops/s)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
        paths += save(fig, Path(outdir) / f"roofline_{product}")
    return paths


def _pick_tokens(g: pd.DataFrame, tokens) -> int:
    avail = sorted(g["tokens"].unique())
    want = tokens if tokens is not None else 1024
    return int(min(avail, key=lambda t: (abs(math.log2(max(t, 1)) - math.log2(max(want, 1))), t)))


def plot_pipe_bars(sweep: pd.DataFrame, outdir, tokens: int | None = None) -> list[str]:
    """One figure per product and model dtype, at the swept token count nearest `tokens` (default 1024): a
    panel per operator with each pipe's predicted busy time side by side (pipes run concurrently, so the
    bars are not stacked), the bound pipe hatched, and the latency and head (launch, per-core start, op head) marked."""
    df, paths = _usable(sweep, "pipes"), []
    for product, pg in df.groupby("product", sort=True):
        for dtype, g in _dtype_groups(pg):
            t = _pick_tokens(g, tokens)
            g = g[g["tokens"] == t]
            keys = [c for c in ("op", "epilogue", "weight_format", "hidden", "n", "topk") if c in g]
            g = g.sort_values(keys).drop_duplicates(keys)
            n = len(g)
            cols = min(3, n)
            rows = math.ceil(n / cols)
            fig = Figure(figsize=(4.6 * cols, 2.6 * rows + 0.9))
            for k, (_, r) in enumerate(g.iterrows()):
                ax = fig.add_subplot(rows, cols, k + 1)
                pipes = [p for p in PIPES if np.isfinite(r[f"pipe_{p}_us"]) and r[f"pipe_{p}_us"] > 0]
                ys = np.arange(len(pipes))[::-1]
                vals = [r[f"pipe_{p}_us"] for p in pipes]
                ax.barh(ys, vals, 0.65, color=[PIPE_COLORS[p] for p in pipes],
                        hatch=["//" if p == r.get("bound", "") else "" for p in pipes], edgecolor="k", lw=0.4)
                ax.set_yticks(ys, pipes, fontsize=8)
                ax.axvline(r["latency_us"], color="k", lw=1.6)
                head = r.get("head_us", np.nan)
                if np.isfinite(head) and head > 0:
                    ax.axvline(head, color="k", lw=1, ls=":")
                ax.set_xlim(0, 1.12 * max([r["latency_us"], *vals]))
                ax.set_xlabel("µs", fontsize=8)
                ax.tick_params(axis="x", labelsize=8)
                name = textwrap.fill(_what(r), 44)
                ax.set_title(f"{name}\nlatency {r['latency_us']:.1f} µs" + (f", bound {r['bound']}" if r.get("bound")
                                                                           else ""), fontsize=8)
                ax.grid(True, axis="x", alpha=0.3)
            fig.suptitle(f"Predicted pipe busy time per operator — {_soc_text(product, g)}, {t} tokens"
                         + (f", model dtype {dtype}" if dtype else "") + "\npipes run concurrently: bars are busy "
                         "times side by side, solid line = latency, dotted = head (launch + op head), "
                         "hatched = bound pipe ('bound memory': the chip's HBM/L2 bandwidth)", fontsize=9)
            fig.tight_layout()
            paths += save(fig, Path(outdir) / f"pipes_{product}{'_' + dtype if dtype else ''}")
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


# -- comparisons --------------------------------------------------------------------------------------

def _drawable(joined: pd.DataFrame) -> pd.DataFrame:
    if not len(joined):
        return joined
    df = joined[joined["status"] == "ok"]
    m, p = _num(df, "measured_us"), _num(df, "predicted_us")
    return df[np.isfinite(m) & (m > 0) & np.isfinite(p) & (p > 0)]


def plot_pred_vs_measured(joined: pd.DataFrame, stem, title: str = "Predicted vs measured latency") -> list[str]:
    """Predicted against measured latency (log axes) with y = x and ±10% / ±25% bands, one point per row of
    `joined` (a compare() or by_launch() table): colour = operator, marker = product, hollow = the measured
    launch differs from the predicted one. For by_launch rows the measured median is placed, a horizontal
    bar spans the measured min to max, and the marker grows with the number of rows."""
    df = _drawable(joined)
    fig = Figure(figsize=(7.4, 6.4))
    ax = fig.add_subplot()
    m, p = _num(df, "measured_us"), _num(df, "predicted_us")
    lo = min(m.min(), p.min()) / 2 if len(df) else 1.0
    hi = max(m.max(), p.max()) * 2 if len(df) else 1e4
    x = np.logspace(math.log10(lo), math.log10(hi), 50)
    ax.fill_between(x, x / 1.25, x * 1.25, color="0.88", label="±25%")
    ax.fill_between(x, x / 1.10, x * 1.10, color="0.75", label="±10%")
    ax.plot(x, x, "k-", lw=1, label="y = x")
    ops = sorted(df["op"].astype(str).unique()) if len(df) else []
    products = sorted(df["product"].astype(str).unique()) if len(df) else []
    same = df["same_launch"].astype(bool) if "same_launch" in df else pd.Series(True, index=df.index)
    rows = _num(df, "rows").fillna(1) if "rows" in df else pd.Series(1.0, index=df.index)
    for (op, prod), g in df.groupby([df["op"].astype(str), df["product"].astype(str)], sort=True):
        i, j = ops.index(op), products.index(prod)
        if {"measured_min_us", "measured_max_us"} <= set(g):
            lo_e = (m[g.index] - _num(g, "measured_min_us")).clip(lower=0).fillna(0)
            hi_e = (_num(g, "measured_max_us") - m[g.index]).clip(lower=0).fillna(0)
            ax.errorbar(m[g.index], p[g.index], xerr=[lo_e, hi_e], fmt="none", ecolor=_color(i), elinewidth=0.7,
                        alpha=0.6, zorder=2)
        size = 24 + 10 * np.log10(rows[g.index].clip(lower=1, upper=1e6))
        s = same[g.index].to_numpy()
        for filled in (True, False):
            sel = g.index[s == filled]
            if len(sel):
                ax.scatter(m[sel], p[sel], marker=_MARKERS[j % len(_MARKERS)], s=size[sel], zorder=3,
                           facecolors=_color(i) if filled else "none", edgecolors=_color(i))
    for i, op in enumerate(ops):
        ax.scatter([], [], color=_color(i), marker="s", label=op)
    for j, prod in enumerate(products):
        ax.scatter([], [], color="k", marker=_MARKERS[j % len(_MARKERS)], label=prod)
    if len(df) and not same.all():
        ax.scatter([], [], facecolors="none", edgecolors="k", label="measured launch ≠ predicted")
    _log_axes(ax, "measured latency (µs)", "predicted latency (µs)", textwrap.fill(title, 70), legend_size=7,
              legend_loc="upper left")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
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
        ax.set_title(textwrap.fill(label, 52), fontsize=7.5)
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
    Colour = operator × SoC group; rows the fit does not use because of doubt (doubtful, analogue) are grey
    crosses. The panel title gives the MAPE over the fitted rows. A last panel shows the rows held out of
    the fit on purpose (trust 'holdout', e.g. Ascend 950PR), coloured by group, with their MAPE."""
    panels = [(c, t) for c, t in VALIDATION_PANELS if c in per_row]
    held = (per_row["trust"] == "holdout").to_numpy()
    ncols = len(panels) + int(held.any())
    fig = Figure(figsize=(5.2 * ncols, 5.6))
    m = _num(per_row, "measured_us")
    lo, hi = m.min() / 2, m.max() * 2
    x = np.logspace(math.log10(lo), math.log10(hi), 50)
    fitted = (per_row["trust"] == "measured").to_numpy()
    doubted = ~fitted & ~held

    def panel(k, rows, col, name):
        ax = fig.add_subplot(1, ncols, k + 1)
        ax.fill_between(x, x / 1.25, x * 1.25, color="0.9", label="±25%")
        ax.fill_between(x, x / 1.10, x * 1.10, color="0.78", label="±10%")
        ax.plot(x, x, "k-", lw=1, label="y = x")
        pred = m * (1 + _num(per_row, col) / 100)
        for i, g in enumerate(sorted(per_row.loc[rows, "group"].unique())):
            sel = rows & (per_row["group"] == g).to_numpy()
            ax.scatter(m[sel], pred[sel], s=22, color=_color(i), marker=_MARKERS[i % len(_MARKERS)], label=g,
                       zorder=3)
        mape = float(np.mean(np.abs(_num(per_row, col)[rows])))
        _log_axes(ax, "measured latency (µs)", "predicted latency (µs)",
                  f"{name}: MAPE {mape:.1f}% over {int(rows.sum())} rows", legend_size=6, legend_loc="upper left")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        return ax, pred

    for k, (col, name) in enumerate(panels):
        ax, pred = panel(k, fitted, col, name)
        if doubted.any():
            ax.scatter(m[doubted], pred[doubted], s=22, color="0.45", marker="x", zorder=2,
                       label="not fitted (doubtful / analogue)")
            if k == 0:
                ax.legend(fontsize=6, loc="upper left")
        if k:
            ax.get_legend().remove()
    if held.any():
        panel(len(panels), held, "error_pct", "never fitted (held out on purpose)")
    fig.suptitle(title, fontsize=11)
    return save(fig, stem)
