"""Predicted versus measured: measured rows from profiler CSVs or the published set, joined with
perfmodel predictions; MAPE per operator and product; the worst rows.

A measured row has: op, product, target (the product or SoC name given to predict: the exact SoC
when the source names one), args (perfmodel.predict keyword arguments), measured_us, and when
known block_dim (the launch that was measured), label (what was measured), config, source and
pipe_<pipe>_us (measured per-pipe busy time). The same rows feed `perfmodel.fitting.fit`. The
published set is read by perfmodel.published.read_published: the one mapping of its rows to predict
arguments, shared by `python -m perfmodel.fit_report`, `npusim calibrate` and `npusim compare`.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from npusim.products import socs_of
from perfmodel.calibration import load_calibration
from perfmodel.model import PIPES
from perfmodel.predict import check_l2, check_product
from perfmodel.profiles import EXAMPLES_PER_REASON, read_profiles, to_predict_args
from perfmodel.published import MEASURED_COLUMNS, calibration_set, default_published_path, read_published
from perfmodel.rows import predict_rows

__all__ = ["MEASURED_COLUMNS", "calibration_set", "default_published_path", "read_published", "measured_from_profiles",
           "compare", "summarize", "by_launch", "worst", "ape_pct", "per_row", "args_text", "core_count_hint"]


def measured_from_profiles(paths_or_df, product: str, unitless_unit: str = "us") -> pd.DataFrame:
    """Measured rows from profiler CSVs (or a read_profiles DataFrame), all taken on `product` (a product id
    or SoC name: the profiles do not name the chip). Each distinct call is mapped to predict arguments once;
    its rows share that dict (do not mutate it). Rows whose call cannot be reconstructed are skipped
    (counted by reason in attrs['skipped'], examples in attrs['skipped_rows']); files that gave no row are in
    attrs['skipped_files'] (source, reason), the files read in attrs['files'] (those named more than once in
    attrs['repeated_files']) and those read in `unitless_unit` in attrs['unitless_durations'], as read_profiles
    lists them. Columns: MEASURED_COLUMNS, with source = the
    file, plus line and task_type (the profile's Task Type / Accelerator Core)."""
    soc = check_product(product)
    df = paths_or_df if isinstance(paths_or_df, pd.DataFrame) else read_profiles(paths_or_df,
                                                                                  unitless_unit=unitless_unit)
    if soc.family == "950" and len(df) and "op_type" in df:
        # Ascend 950 launches DynamicQuantV2, with its three outputs, for the symmetric call too (ops-nn
        # l0op::DynamicQuantV2 always declares the offset): the profile cannot tell them apart; take the
        # common, symmetric one (perfmodel.profiles.OP_TYPES)
        v2 = (df["op"] == "npu_dynamic_quant_asymmetric").to_numpy() & \
            (df["op_type"].astype(str).str.strip().str.lower() == "dynamicquantv2").to_numpy()
        if v2.any():
            attrs, df = df.attrs, df.copy()
            df.loc[v2, "op"] = "npu_dynamic_quant"
            df.attrs = attrs
    skipped = Counter(df.attrs.get("skipped", {}))
    examples = list(df.attrs.get("skipped_rows", []))
    if "call" in df:
        calls = df["call"].to_numpy()
    else:                               # a frame built by hand: one call per distinct op, shapes and dtypes
        calls = pd.factorize(df["op"].astype(str) + df["input_shapes"].astype(str) + df["input_dtypes"].astype(str)
                             + df["output_shapes"].astype(str) + df["output_dtypes"].astype(str))[0]
    uniq, first = np.unique(calls, return_index=True)
    pos = np.searchsorted(uniq, calls)
    counts = np.bincount(pos, minlength=len(uniq))
    args_of, label_of = np.empty(len(uniq), dtype=object), np.empty(len(uniq), dtype=object)
    # a profile row times one kernel: its own (the operator's further launches, e.g. TransQuantParamV2 before
    # QuantBatchMatmulV3, are rows of their own)
    kernels_of = np.empty(len(uniq), dtype=object)
    usable = np.zeros(len(uniq), dtype=bool)
    for k, i in enumerate(first):
        r = df.iloc[i]
        shapes = ";".join(",".join(map(str, s)) for s in r["input_shapes"])
        outs = r.get("output_dtypes")           # (an int8 and an int4 launch differ only there)
        outs = outs if isinstance(outs, (list, tuple)) else []
        label_of[k] = f"{r['op_type']} [{shapes}] {';'.join(r['input_dtypes'])}" + (f" -> {';'.join(outs)}"
                                                                                      if outs else "")
        kernels_of[k] = (str(r["op_type"]).strip(),)
        try:
            args_of[k] = to_predict_args(r)
            usable[k] = True
        except ValueError as exc:
            reason = f"arguments: {exc}"
            if skipped[reason] < EXAMPLES_PER_REASON:
                examples.append({"source": r.get("source", ""), "line": int(r.get("line", 0)),
                                 "op_type": r["op_type"], "reason": reason})
            skipped[reason] += int(counts[k])
    keep = usable[pos]
    pos = pos[keep]

    def col(name):
        return df[name].to_numpy()[keep] if name in df else np.full(len(pos), np.nan)

    out = pd.DataFrame({"op": col("op"), "product": soc.product, "target": str(product), "args": args_of[pos],
                        "measured_us": col("duration_us"), "block_dim": col("block_dim"), "label": label_of[pos],
                        "config": None, "source": col("source"), "line": col("line"), "task_type": col("task_type"),
                        "kernels": kernels_of[pos],
                        **{f"pipe_{p}_us": col(f"pipe_{p}_us") for p in PIPES}})
    out = out.reindex(columns=MEASURED_COLUMNS + ["line", "task_type"])
    out.attrs["skipped"] = dict(skipped)
    out.attrs["skipped_rows"] = examples
    for name in ("skipped_files", "files", "repeated_files", "unitless_durations"):
        out.attrs[name] = list(df.attrs.get(name, []))
    return out


# which core count bounds a task's block dim, by Task Type (op_summary doc atlasprofiling_16_0067: a MIX_AIC
# task's Block Num counts its AIC cores, its Mix Block Num the AIV ones); Soc attribute and how to say it
_CORES_OF_TASK = {"AI_CORE": ("aic", "AIC"), "MIX_AIC": ("aic", "AIC"), "AI_VECTOR_CORE": ("aiv", "AIV"),
                  "MIX_AIV": ("aiv", "AIV")}


def core_count_hint(measured: pd.DataFrame, product: str) -> str:
    """A hint when the profile seems taken on another SoC of `product` than the one predicted for ('' if not):
    the largest measured block dim per core type (from the Task Type) is below the SoC's core count and equals
    another SoC's of the same product (a 20 AIC / 40 AIV 910B3 or 910B4 profiled with --product atlas-a2, whose
    default SoC Ascend910B2 has 24 / 48). Rows without a task type or block dim (the packaged set) are ignored,
    so a calibration's 'no rows left to fit' error can add it too."""
    if not len(measured) or "task_type" not in measured or "block_dim" not in measured:
        return ""
    soc = check_product(product)
    task = measured["task_type"].astype(str).str.strip().str.upper()
    block_dim = pd.to_numeric(measured["block_dim"], errors="coerce")
    largest = {}                        # Soc attribute -> (largest block dim, how to say the core type)
    for task_type, (attr, label) in _CORES_OF_TASK.items():
        if attr == "aiv" and soc.core_layout != "split":
            continue                    # coupled chips: no AIV cores to compare a vector task with
        dims = block_dim[(task == task_type).to_numpy()].dropna()
        if len(dims):
            largest[attr] = (max(int(dims.max()), largest.get(attr, (0, label))[0]), label)
    if not largest or all(getattr(soc, attr) == n for attr, (n, _) in largest.items()):
        return ""
    if any(n > getattr(soc, attr) for attr, (n, _) in largest.items()):
        return ""                       # more blocks than cores: a kernel that loops, not a smaller chip
    matching = [s.soc for s in socs_of(soc.product) if all(getattr(s, a) == n for a, (n, _) in largest.items())]
    if not matching:
        return ""
    seen = " / ".join(f"{n} {label}" for _, (n, label) in largest.items())
    has = " / ".join(f"{getattr(soc, attr)} {label}" for attr, (_, label) in largest.items())
    return (f"block dims in the profile (max {seen}) never reach {soc.soc}'s {has} cores ({product!r} was taken "
            f"as {soc.soc}); SoCs of {soc.product} with {seen} cores: {', '.join(matching)}. If the profile was taken "
            f"on one of them, pass --product <SoC> (e.g. --product {matching[0]})")


def ape_pct(predicted, measured):
    """Absolute percentage error 100 * |predicted - measured| / measured."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    return 100.0 * np.abs(predicted - measured) / measured


def compare(measured: pd.DataFrame, calibration=None, l2: str = "cold") -> pd.DataFrame:
    """Predict every measured row (l2: 'cold', inputs from HBM as a benchmark that flushes L2 measures, or
    'warm', inputs from L2 as far as they fit, as in a model run where the previous kernel wrote them).
    Adds: launch (rows with the same op, product/SoC and arguments share it: each is predicted once),
    status ('skipped' also when the measured time is not a finite positive number), reason, soc,
    predicted_us, predicted_block_dim, bound, error_pct (signed, 100*(pred-meas)/meas), ape_pct, same_launch
    (measured block_dim unknown or equal to the predicted one), pred_pipe_<pipe>_us."""
    check_l2(l2)
    calibration = load_calibration(calibration)
    n = len(measured)
    ops = measured["op"].fillna("").to_numpy()
    target = measured["target"].to_numpy() if "target" in measured else np.full(n, None)
    target = np.where([isinstance(t, str) and t != "" for t in target], target, measured["product"].fillna(""))
    args = measured["args"].to_numpy()
    # the same call spelled two ways in a profile (DT_BF16 and BF16) is one launch: keyed by its arguments' repr
    # (TensorSpecs show canonical dtype names and the layout), once per argument dict (a call's rows share theirs)
    text: dict = {}
    for a in args:
        if id(a) not in text:
            text[id(a)] = repr(sorted(a.items())) if isinstance(a, dict) else repr(a)
    keys = [text[id(a)] for a in args]
    launch = pd.factorize(pd.MultiIndex.from_arrays([ops, target, keys]))[0] if n else np.zeros(0, dtype=np.int64)
    first = np.unique(launch, return_index=True)[1]         # codes are 0..U-1: first row of each launch
    results = [None] * len(first)
    groups: dict = {}
    for k, i in enumerate(first):
        groups.setdefault((ops[i], target[i]), []).append(k)
    for (op, tgt), ks in groups.items():
        for k, row in zip(ks, predict_rows(op, tgt, [args[first[k]] for k in ks], calibration, l2)):
            results[k] = row
    df = measured.copy(deep=False)      # new columns only: the measured frame itself is not changed
    df["launch"] = launch
    cols = ["status", "reason", "soc", "latency_us", "block_dim", "bound"] + [f"pipe_{p}_us" for p in PIPES]
    names = ["status", "reason", "soc", "predicted_us", "predicted_block_dim", "bound"] + \
            [f"pred_pipe_{p}_us" for p in PIPES]
    for col, name in zip(cols, names):
        per_launch = np.empty(len(results) + 1, dtype=object)      # (+1: never a 0-length take source)
        per_launch[:-1] = [r.get(col, math.nan) for r in results]
        v = per_launch[launch]
        df[name] = pd.to_numeric(v, errors="coerce") if name not in ("status", "reason", "soc", "bound") else v
    # a row that names the kernels its time covers is compared with those alone (the first, the
    # operator's own kernel, always counts; fitting.works_of drops the others the same way)
    if "kernels" in measured:
        per_kernel = [r.get("kernels") or [] for r in results] + [[]]
        for i, (covered, k) in enumerate(zip(measured["kernels"].to_numpy(), launch)):
            if isinstance(covered, tuple) and covered and per_kernel[k]:
                df.iloc[i, df.columns.get_loc("predicted_us")] = sum(
                    us for j, (name, us) in enumerate(per_kernel[k]) if j == 0 or name in covered)
    meas = pd.to_numeric(df["measured_us"], errors="coerce")
    unusable = ~(np.isfinite(meas) & (meas > 0))          # a measured time no error can be computed from
    if unusable.any():
        df["status"] = df["status"].where(~unusable, "skipped")
        df["reason"] = df["reason"].where(~unusable, "measured time missing, not finite or not positive")
    df["error_pct"] = 100.0 * (df["predicted_us"] - meas) / meas
    df["ape_pct"] = df["error_pct"].abs()
    bd, pbd = pd.to_numeric(df["block_dim"], errors="coerce"), df["predicted_block_dim"]
    df["same_launch"] = bd.isna() | pbd.isna() | (bd == pbd)
    df.attrs.update(measured.attrs)
    return df


SUMMARY_COLUMNS = ["op", "product", "trust", "launches", "rows", "mape_pct", "median_ape_pct", "max_ape_pct",
                   "bias_pct", "within_10pct_launches", "within_25pct_launches", "same_launch_launches",
                   "mape_same_launch_pct", "mape_over_rows_pct"]


def summarize(joined: pd.DataFrame) -> pd.DataFrame:
    """Per operator, product and trust (the packaged set's column; else 'measured') over the predicted launches
    (by_launch: a launch's measured time is the median of its rows, so a warm-up row or a launch repeated
    1,000 times does not outweigh the others; the figure's MAPE is the same): launches, rows (the profile rows
    behind them), MAPE (%), median and max APE (%), mean signed error (%), launches within 10% and 25%, the
    launches measured on the plan's core count (same_launch) and their MAPE; and, apart, mape_over_rows_pct:
    the mean APE over every row (warm-ups and repeats included)."""
    ok = joined[joined["status"] == "ok"] if len(joined) else joined
    launches = by_launch(ok)
    rows = []
    for (op, product, tr), g in launches.groupby(["op", "product", "trust"], sort=True):
        same = g[g["same_launch"].astype(bool)]
        over_rows = ok[(ok["op"] == op).to_numpy() & (ok["product"] == product).to_numpy()
                       & _trust(ok).eq(tr).to_numpy()]
        rows.append({"op": op, "product": product, "trust": tr, "launches": len(g), "rows": int(g["rows"].sum()),
                     "mape_pct": g["ape_pct"].mean(), "median_ape_pct": g["ape_pct"].median(),
                     "max_ape_pct": g["ape_pct"].max(), "bias_pct": g["error_pct"].mean(),
                     "within_10pct_launches": int((g["ape_pct"] <= 10).sum()),
                     "within_25pct_launches": int((g["ape_pct"] <= 25).sum()), "same_launch_launches": len(same),
                     "mape_same_launch_pct": same["ape_pct"].mean() if len(same) else math.nan,
                     "mape_over_rows_pct": over_rows["ape_pct"].mean()})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _trust(df: pd.DataFrame) -> pd.Series:
    """The packaged set's trust column; user profiles have none: their rows are measurements."""
    return df["trust"].astype(object).fillna("measured") if "trust" in df else pd.Series("measured", index=df.index)


def args_text(args) -> str:
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


LAUNCH_COLUMNS = ["op", "product", "soc", "trust", "label", "args", "block_dim", "predicted_block_dim", "rows",
                  "measured_us", "measured_min_us", "measured_max_us", "predicted_us", "error_pct", "ape_pct",
                  "same_launch", "bound", "status", "reason", "source", "line"] + \
                 [f"{w}pipe_{p}_us" for p in PIPES for w in ("", "pred_")]


def by_launch(joined: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct measured launch (same call and measured block dim): the number of rows, the
    median, min and max measured time (and median measured pipe times), the prediction, the error of
    the median, and where its first row is (source, line: the profile file and line; line empty for rows
    that have none). A model-run profile repeats each launch many times; this is the table to read."""
    if not len(joined):
        return pd.DataFrame(columns=LAUNCH_COLUMNS)
    measured_bd = pd.to_numeric(joined["block_dim"], errors="coerce").fillna(-1).rename("measured_block_dim")
    g = joined.groupby([joined["launch"], measured_bd], sort=False)
    keep = [c for c in ("op", "product", "soc", "trust", "label", "args", "predicted_block_dim", "predicted_us",
                        "same_launch", "bound", "status", "reason", "source", "line",
                        *[f"pred_pipe_{p}_us" for p in PIPES]) if c in joined]
    meas = g["measured_us"]
    out = g[keep].first().assign(
        rows=g.size(), measured_us=meas.median(), measured_min_us=meas.min(), measured_max_us=meas.max(),
        **{f"pipe_{p}_us": g[f"pipe_{p}_us"].median() for p in PIPES if f"pipe_{p}_us" in joined}).reset_index()
    out["block_dim"] = out["measured_block_dim"].where(out["measured_block_dim"] >= 0)
    out["error_pct"] = 100.0 * (out["predicted_us"] - out["measured_us"]) / out["measured_us"]
    out["ape_pct"] = out["error_pct"].abs()
    out["args"] = out["args"].map(args_text)
    out["trust"] = _trust(out)
    if "line" in out:                   # a plain integer, also beside rows without one (the packaged set's)
        out["line"] = pd.to_numeric(out["line"], errors="coerce").astype("Int64")
    return out.reindex(columns=LAUNCH_COLUMNS)


def per_row(joined: pd.DataFrame) -> pd.DataFrame:
    """Every predicted row: op, product, soc, config (or label), predicted_us, measured_us, error_pct
    (signed, 2 decimals), bound. `npusim compare` and `python -m perfmodel.fit_report` print this table."""
    ok = joined[joined["status"] == "ok"] if len(joined) else joined
    what = ok["config"] if "config" in ok and ok["config"].notna().all() else ok.get("label", "")
    return pd.DataFrame({"op": ok["op"], "product": ok["product"], "soc": ok.get("soc", ""), "config": what,
                         "predicted_us": ok["predicted_us"].round(2), "measured_us": ok["measured_us"],
                         "error_pct": ok["error_pct"].round(2), "bound": ok["bound"]}).reset_index(drop=True)


def worst(joined: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The k predicted rows (or launches, given a by_launch table) with the largest absolute percentage error."""
    if not len(joined):
        return joined
    ok = joined[joined["status"] == "ok"]
    cols = ["op", "product", "trust", "label", "rows", "measured_us", "predicted_us", "error_pct", "block_dim",
            "predicted_block_dim", "bound"]
    return ok.nlargest(k, "ape_pct").reindex(columns=[c for c in cols if c in ok])
