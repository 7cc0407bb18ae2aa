"""The `npusim` command: sweep, compare, calibrate, plot.

    npusim sweep                                  # default sweep -> npusim-out/sweep.csv + figures
    npusim sweep --ops npu_quant_matmul --products atlas-a2 ascend-950pr --tokens 1:8192 --dtypes bfloat16
    npusim sweep --config my_sweep.toml --out out/
    npusim compare                                # the published set (perfmodel/data/published_timings.csv)
    npusim compare --profiles PROF_DIR/ --product atlas-a2
    npusim calibrate --profiles op_summary_0.csv --product atlas-a2 --output cal.json
    npusim plot --sweep npusim-out/sweep.csv --kind roofline

Every command prints the paths it wrote at the end. scripts/{sweep,compare,calibrate,plot}.py run
the same subcommands from a checkout.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from perfmodel import compare as cmp
from perfmodel import plots, sweep
from perfmodel.profiles import skipped_summary

__all__ = ["main", "build_parser"]

DEFAULT_OUT = "npusim-out"
PER_ROW_MAX = 40               # compare prints every row up to this many, else the worst ones


def _tokens(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16]; '1:4096' -> the powers of two from 1 to 4096."""
    out = []
    for part in text.split(","):
        if ":" in part:
            lo, hi = (int(v) for v in part.split(":"))
            t = lo
            while t <= hi:
                out.append(t)
                t *= 2
        elif part.strip():
            out.append(int(part))
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"token counts must be positive integers, got {text!r}")
    return out


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _flat(lists):
    return None if lists is None else [v for sub in lists for v in (sub if isinstance(sub, list) else [sub])]


def _args_text(args) -> str:
    """'x=float16[1024,7168] dst_type=int8' for a predict argument dict."""
    if not isinstance(args, dict):
        return str(args)
    parts = []
    for k, v in args.items():
        if hasattr(v, "shape") and hasattr(v, "dtype"):
            from npusim.formats import dtype_name
            parts.append(f"{k}={dtype_name(v.dtype)}[{','.join(map(str, v.shape))}]")
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts)


def _print_table(df: pd.DataFrame, title: str, float_format="{:.4g}"):
    print(f"\n{title}")
    if not len(df):
        print("  (none)")
        return
    with pd.option_context("display.max_columns", None, "display.width", 220, "display.max_colwidth", 70,
                           "display.float_format", float_format.format):
        print(df.to_string(index=False))


def _print_paths(paths):
    print("\nwrote:")
    for p in paths:
        print(f"  {p}")


# ---------------------------------------------------------------------------------------------

def cmd_sweep(a) -> int:
    cfg = sweep.load_config(a.config) if a.config else {}
    axes = {}
    for key, flag in (("ops", a.ops), ("products", a.products), ("tokens", _flat(a.tokens)),
                      ("hidden", _flat(a.hidden)), ("dtypes", a.dtypes), ("n", _flat(a.n)), ("topk", _flat(a.topk))):
        axes[key] = flag if flag is not None else cfg.get(key)
    points = sweep.grid(**axes, overrides=cfg.get("overrides"))
    calibration = a.calibration or cfg.get("calibration")
    df = sweep.run_sweep(points, calibration=calibration, progress=False if a.quiet else None)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "sweep.csv"
    df.to_csv(csv_path, index=False)
    ok = df[df["status"] == "ok"]
    print(f"sweep: {len(df)} points, {len(ok)} predicted, {len(df) - len(ok)} skipped")
    if len(df) - len(ok):
        reasons = df.loc[df["status"] != "ok"].groupby(["op", "reason"]).size().reset_index(name="points")
        _print_table(reasons, "skipped points (operator, reason):")
    paths = [str(csv_path)]
    if not a.no_plots and len(ok):
        paths += plots.plot_sweep(df, out / "figures", tokens=a.pipe_tokens)
    _print_paths(paths)
    return 0


def _measured(a) -> pd.DataFrame | None:
    frames = []
    if a.profiles:
        m = cmp.measured_from_profiles(a.profiles, a.product)
        print(f"profiles: {len(m)} usable rows from {len(a.profiles)} path(s)")
        if m.attrs.get("skipped"):
            print("unusable profile rows (count, reason):")
            print(skipped_summary(m))
        frames.append(m)
    published = a.published
    if published is None and not a.profiles:
        default = cmp.default_published_path()
        published = default if default.exists() else None
    if published is not None:
        m = cmp.read_published(published)
        print(f"published set {published}: {len(m)} usable rows")
        if m.attrs.get("skipped"):
            print("unusable rows (count, reason):")
            print(skipped_summary(m))
        frames.append(m)
    if not frames:
        print("error: no measured data: give --profiles PATH... or --published CSV "
              f"(default {cmp.default_published_path()} does not exist)", file=sys.stderr)
        return None
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df.attrs = {}
    return df


def cmd_compare(a) -> int:
    measured = _measured(a)
    if measured is None:
        return 2
    joined = cmp.compare(measured, calibration=a.calibration)
    summary = cmp.summarize(joined)
    _print_table(summary, "MAPE per operator and product (APE = |predicted - measured| / measured):")
    if len(joined) <= PER_ROW_MAX:
        _print_table(cmp.per_row(joined), "per row (error = (predicted - measured) / measured, %):",
                     float_format="{:.2f}")
    else:
        _print_table(cmp.worst(joined, a.worst), f"worst {a.worst} rows:")
    failed = joined[joined["status"] != "ok"] if len(joined) else joined
    if len(failed):
        _print_table(failed[["op", "product", "label", "reason"]], "rows the model could not predict:")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    joined_out = joined.copy()
    if "args" in joined_out:
        joined_out["args"] = joined_out["args"].map(_args_text)
    paths = [str(out / "compare.csv"), str(out / "compare_summary.csv")]
    joined_out.to_csv(paths[0], index=False)
    summary.to_csv(paths[1], index=False)
    cal = f", calibration {a.calibration}" if a.calibration else ""
    paths += plots.plot_pred_vs_measured(joined, out / "figures" / "pred_vs_measured",
                                         title=f"Predicted vs measured latency ({len(joined)} rows{cal})")
    paths += plots.plot_pipe_compare(joined, out / "figures" / "pipes_pred_vs_measured")
    _print_paths(paths)
    return 0


def cmd_calibrate(a) -> int:
    measured = _measured(a)
    if measured is None:
        return 2
    from perfmodel import calibration
    before_rows = cmp.compare(measured)
    if a.all_rows or not len(before_rows):
        fit_rows = measured
    else:
        # a measured launch other than the planned one (e.g. a 1-core demo of a 48-core kernel) is a
        # different kernel, not a model error: fitting to it would distort every other prediction
        keep = (before_rows["status"] == "ok") & before_rows["same_launch"]
        dropped = before_rows.loc[~keep, ["op", "product", "label", "block_dim", "predicted_block_dim", "reason"]]
        _print_table(dropped, "rows left out of the fit (launch differs from the plan, or not predictable; "
                              "--all-rows keeps them):")
        fit_rows = measured[keep.to_numpy()].reset_index(drop=True)
    if not len(fit_rows):
        print("error: no rows left to fit", file=sys.stderr)
        return 2
    # start from (and stay near) the shipped calibration: the least-squares steps only ever lower the
    # fit's cost, so the result fits these rows at least as well as the shipped constants do
    params = a.params or list(calibration.PARAMS)
    cal = calibration.fit(fit_rows, product=a.fit_product, params=params, base=calibration.default_calibration())
    path = Path(a.output) if a.output else Path(a.out) / "calibration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    cal.save(path)
    before = cmp.summarize(cmp.compare(fit_rows))
    after = cmp.summarize(cmp.compare(fit_rows, calibration=cal))
    cols = ["op", "product", "mape_pct", "max_ape_pct"]
    table = before[cols[:2] + ["n"] + cols[2:]].merge(after[cols], on=["op", "product"], how="outer",
                                                      suffixes=("_before", "_after"))
    _print_table(table, "MAPE on the fitted rows, before and after calibration (in-sample):")
    _print_paths([str(path)])
    return 0


def cmd_plot(a) -> int:
    out = Path(a.out)
    src = Path(a.sweep) if a.sweep else out / "sweep.csv"
    if src.exists():
        df = pd.read_csv(src)
        print(f"plotting {src}: {len(df)} rows")
    elif a.sweep:
        print(f"error: {src} does not exist", file=sys.stderr)
        return 2
    else:
        print(f"{src} not found: running the default sweep first")
        df = sweep.run_sweep(sweep.grid(), progress=None)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(src, index=False)
    kinds = ("latency", "roofline", "pipes") if a.kind == "all" else (a.kind,)
    paths = plots.plot_sweep(df, out / "figures", kinds=kinds, tokens=a.pipe_tokens)
    if not paths:
        print("no predicted rows to plot", file=sys.stderr)
        return 1
    _print_paths(([str(src)] if not a.sweep else []) + paths)
    return 0


def _add_measured_args(p):
    p.add_argument("--published", metavar="CSV",
                   help="published timings CSV (default when no --profiles: the packaged set, "
                        "perfmodel/data/published_timings.csv)")
    p.add_argument("--profiles", nargs="+", metavar="PATH",
                   help="msprof op_summary_*.csv / torch_npu kernel_details.csv files or directories holding them")
    p.add_argument("--product", default="atlas-a2",
                   help="product the profiles were taken on (profiles do not say; default atlas-a2)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="npusim", description="npusim performance model: sweeps, comparison with "
                                 "measured profiles, calibration and plots.",
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="{sweep,compare,calibrate,plot}")

    s = sub.add_parser("sweep", help="predict a grid of operators x products x shapes x dtypes to CSV + figures",
                       description="Predict a grid to <out>/sweep.csv plus figures. With no arguments: the five "
                       "operators over tokens 1..16384 on every product that supports each.")
    s.add_argument("--config", metavar="TOML", help="sweep file: ops, products, tokens, hidden, dtypes, n, topk, "
                   "calibration, and [op.<name>] tables overriding axes per operator; flags override it")
    s.add_argument("--ops", nargs="+", metavar="OP", help=f"operators (default: {' '.join(sweep.OPERATORS)})")
    s.add_argument("--products", nargs="+", metavar="P", help="products (default: every product supporting the op)")
    s.add_argument("--tokens", nargs="+", type=_tokens, metavar="T",
                   help="token counts: '1 16 256', '1,16,256' or '1:4096' (powers of two)")
    s.add_argument("--hidden", nargs="+", type=_ints, metavar="H", help=f"hidden size / K (default {sweep.DEFAULT_HIDDEN})")
    s.add_argument("--dtypes", nargs="+", metavar="D", help=f"activation dtypes (default {sweep.DEFAULT_DTYPE})")
    s.add_argument("--n", nargs="+", type=_ints, metavar="N", help=f"matmul N (default {sweep.DEFAULT_N})")
    s.add_argument("--topk", nargs="+", type=_ints, metavar="K", help=f"MoE experts per token (default {sweep.DEFAULT_TOPK})")
    s.add_argument("--calibration", metavar="JSON", help="calibration written by `npusim calibrate`")
    s.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    s.add_argument("--pipe-tokens", type=int, metavar="T", help="token count of the per-pipe bars (default 1024)")
    s.add_argument("--no-plots", action="store_true", help="write the CSV only")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)

    c = sub.add_parser("compare", help="predictions vs measured timings: MAPE table, worst rows, figures")
    _add_measured_args(c)
    c.add_argument("--calibration", metavar="JSON", help="calibration to apply to the predictions")
    c.add_argument("--worst", type=int, default=5, metavar="K", help="how many worst rows to list (default 5)")
    c.set_defaults(func=cmd_compare)

    k = sub.add_parser("calibrate", help="fit the model's constants to measured rows; write the calibration JSON")
    _add_measured_args(k)
    k.add_argument("--output", metavar="JSON", help="calibration file (default <out>/calibration.json)")
    k.add_argument("--fit-product", metavar="P", help="fit only the rows of this product")
    k.add_argument("--params", nargs="+", metavar="NAME",
                   help="calibration parameters to fit (default: all; see perfmodel.calibration)")
    k.add_argument("--all-rows", action="store_true",
                   help="also fit rows whose measured block dim differs from the planned launch")
    k.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("plot", help="figures from a sweep CSV: latency vs tokens, roofline, per-pipe bars")
    p.add_argument("--sweep", metavar="CSV", help="sweep CSV (default <out>/sweep.csv; the default sweep is run "
                   "when that does not exist)")
    p.add_argument("--kind", choices=("all", "latency", "roofline", "pipes"), default="all")
    p.add_argument("--pipe-tokens", type=int, metavar="T", help="token count of the per-pipe bars (default 1024)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    p.set_defaults(func=cmd_plot)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if not getattr(a, "command", None):
        ap.print_help()
        return 2
    try:
        return a.func(a)
    except (ValueError, OSError) as exc:     # bad config, unreadable input: a message, not a traceback
        print(f"npusim {a.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
