"""Predicted versus measured: measured rows from profiler CSVs or the published set, joined with
perfmodel predictions; MAPE per operator and product; the worst rows.

A measured row has: op, product, target (the product or SoC name given to predict: the exact SoC
when the source names one), args (perfmodel.predict keyword arguments), measured_us, and when
known block_dim (the launch that was measured), label (what was measured), config, source and
pipe_<pipe>_us (measured per-pipe busy time). The same rows feed `perfmodel.calibration.fit`. The
published set is read by perfmodel.published.read_published: the one mapping of its rows to predict
arguments, shared by `python -m perfmodel.fit_report`, `npusim calibrate` and `npusim compare`.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from npusim.products import PRODUCTS
from perfmodel.profiles import PIPES, read_profiles, to_predict_args
from perfmodel.published import MEASURED_COLUMNS, default_published_path, read_published
from perfmodel.sweep import load_calibration, predict_row

__all__ = ["MEASURED_COLUMNS", "default_published_path", "read_published", "measured_from_profiles",
           "compare", "summarize", "worst", "ape_pct", "per_row"]


def _frame(rows, skipped) -> pd.DataFrame:
    df = pd.DataFrame(rows).reindex(columns=MEASURED_COLUMNS)
    df.attrs["skipped"] = dict(Counter(r["reason"] for r in skipped))
    df.attrs["skipped_rows"] = skipped
    return df


def measured_from_profiles(paths_or_df, product: str) -> pd.DataFrame:
    """Measured rows from profiler CSVs (or a read_profiles DataFrame), all taken on `product`
    (the profiles do not name the chip). Rows whose call cannot be reconstructed are skipped."""
    df = paths_or_df if isinstance(paths_or_df, pd.DataFrame) else read_profiles(paths_or_df)
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; valid: {', '.join(PRODUCTS)}")
    rows, skipped = [], list(df.attrs.get("skipped_rows", []))
    for _, r in df.iterrows():
        try:
            args = to_predict_args(r)
        except ValueError as exc:
            skipped.append({"source": r["source"], "line": r["line"], "op_type": r["op_type"],
                            "reason": f"arguments: {exc}"})
            continue
        shapes = ";".join(",".join(map(str, s)) for s in r["input_shapes"])
        rows.append({"op": r["op"], "product": product, "target": product, "args": args, "measured_us": r["duration_us"],
                     "block_dim": r["block_dim"], "label": f"{r['op_type']} [{shapes}] {';'.join(r['input_dtypes'])}",
                     "source": f"{r['source']}:{r['line']}",
                     **{f"pipe_{p}_us": r[f"pipe_{p}_us"] for p in PIPES}})
    return _frame(rows, skipped)


def ape_pct(predicted, measured):
    """Absolute percentage error 100 * |predicted - measured| / measured."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    return 100.0 * np.abs(predicted - measured) / measured


def compare(measured: pd.DataFrame, calibration=None) -> pd.DataFrame:
    """Predict every measured row. Adds: status, reason, predicted_us, predicted_block_dim, bound,
    error_pct (signed, 100*(pred-meas)/meas), ape_pct, same_launch (measured block_dim unknown or
    equal to the predicted one), pred_pipe_<pipe>_us."""
    calibration = load_calibration(calibration)
    out = []
    for _, r in measured.iterrows():
        target = r.get("target")
        p = predict_row(r["op"], target if isinstance(target, str) and target else r["product"], r["args"],
                        calibration)
        row = r.to_dict()
        row.update(status=p["status"], reason=p["reason"], soc=p.get("soc", ""),
                   predicted_us=p.get("latency_us", math.nan),
                   predicted_block_dim=p.get("block_dim", math.nan), bound=p.get("bound"))
        for pipe in PIPES:
            row[f"pred_pipe_{pipe}_us"] = p.get(f"pipe_{pipe}_us", math.nan)
        out.append(row)
    df = pd.DataFrame(out)
    if df.empty:
        return df.reindex(columns=list(measured.columns) + ["status", "reason", "predicted_us", "error_pct",
                                                            "ape_pct", "same_launch"])
    pred = pd.to_numeric(df["predicted_us"], errors="coerce")
    df["predicted_us"] = pred
    df["error_pct"] = 100.0 * (pred - df["measured_us"]) / df["measured_us"]
    df["ape_pct"] = df["error_pct"].abs()
    bd, pbd = pd.to_numeric(df["block_dim"], errors="coerce"), pd.to_numeric(df["predicted_block_dim"], errors="coerce")
    df["same_launch"] = bd.isna() | pbd.isna() | (bd == pbd)
    df.attrs.update(measured.attrs)
    return df


def summarize(joined: pd.DataFrame) -> pd.DataFrame:
    """Per operator and product over the predicted rows: n, MAPE (%), median and max APE (%),
    mean signed error (%), rows within 10% and 25%, and MAPE over the same-launch rows only."""
    ok = joined[joined["status"] == "ok"] if len(joined) else joined
    rows = []
    for (op, product), g in ok.groupby(["op", "product"], sort=True):
        same = g[g["same_launch"]]
        rows.append({"op": op, "product": product, "n": len(g), "mape_pct": g["ape_pct"].mean(),
                     "median_ape_pct": g["ape_pct"].median(), "max_ape_pct": g["ape_pct"].max(),
                     "bias_pct": g["error_pct"].mean(), "within_10pct": int((g["ape_pct"] <= 10).sum()),
                     "within_25pct": int((g["ape_pct"] <= 25).sum()), "n_same_launch": len(same),
                     "mape_same_launch_pct": same["ape_pct"].mean() if len(same) else math.nan})
    return pd.DataFrame(rows, columns=["op", "product", "n", "mape_pct", "median_ape_pct", "max_ape_pct", "bias_pct",
                                       "within_10pct", "within_25pct", "n_same_launch", "mape_same_launch_pct"])


def per_row(joined: pd.DataFrame) -> pd.DataFrame:
    """Every predicted row: op, product, soc, config (or label), predicted_us, measured_us, error_pct
    (signed, 2 decimals), bound. `npusim compare` and `python -m perfmodel.fit_report` print this table."""
    ok = joined[joined["status"] == "ok"] if len(joined) else joined
    what = ok["config"] if "config" in ok and ok["config"].notna().all() else ok.get("label", "")
    return pd.DataFrame({"op": ok["op"], "product": ok["product"], "soc": ok.get("soc", ""), "config": what,
                         "predicted_us": ok["predicted_us"].round(2), "measured_us": ok["measured_us"],
                         "error_pct": ok["error_pct"].round(2), "bound": ok["bound"]}).reset_index(drop=True)


def worst(joined: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The k predicted rows with the largest absolute percentage error."""
    if not len(joined):
        return joined
    ok = joined[joined["status"] == "ok"]
    cols = ["op", "product", "label", "measured_us", "predicted_us", "error_pct", "block_dim", "predicted_block_dim",
            "bound"]
    return ok.sort_values("ape_pct", ascending=False).head(k).reindex(columns=cols)
