"""The model against the packaged measurements: fit, in-sample and cross-validated errors.

    python -m perfmodel.fit_report            # fit, per-row table, MAPE per group; writes calibration.json
    python -m perfmodel.fit_report --cv       # ... plus leave-one-group-out and shape-family hold-out errors
    python -m perfmodel.fit_report --no-write # print only
    python -m perfmodel.fit_report --cv --figure out/validation   # ... and draw the validation figure

The calibration set is perfmodel.published.calibration_set(): the measured set (msprof/profiler Task
Durations of CANN kernels, with sources) and the published best-practice samples. Rows flagged as
analogues (another kernel standing in for an operator), doubtful (values their source calls
placeholders) or held out (sound measurements kept out of the fit on purpose, to check the model where
it was not fitted: the 910B4 MatMuls and every Ascend 950PR row but the two MatMul samples, since 950 is
predicted from its hardware facts) are predicted and shown, never fitted; the held-out rows get a
summary of their own. Groups are operator x SoC. Cross-validation refits the calibration without some
of the fitted rows and predicts those:
  * LOGO: each group held out in turn (its operator's constants must come from the other operators);
  * family: each shape family (decode, batched, unaligned, aligned, sample) held out in turn.
"""
from __future__ import annotations

import argparse
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from perfmodel import fitting, plots
from perfmodel.calibration import SHIPPED
from perfmodel.published import FITTED_TRUST, calibration_set

__all__ = ["evaluate", "summary", "main"]

FITTED = FITTED_TRUST         # the trust level of rows the fit uses


def _fit(rows, works, base=None):
    return fitting.fit(rows, works=works, base=base)


def evaluate(rows: pd.DataFrame | None = None, cv: bool = False):
    """(Calibration fitted on the trusted rows, per-row DataFrame with predicted_us, error_pct and, with cv,
    cv_group_pct and cv_family_pct)."""
    rows = calibration_set() if rows is None else rows
    works = fitting.works_of(rows)
    trusted = (rows["trust"] == FITTED).to_numpy()
    t_rows = rows[trusted].reset_index(drop=True)
    t_works = [w for w, k in zip(works, trusted) if k]
    cal = _fit(t_rows, t_works)
    out = rows[["op", "soc_name", "label", "measured_us", "trust", "family", "source"]].copy() \
        if "soc_name" in rows else rows[["op", "label", "measured_us", "trust", "family", "source"]].copy()
    out.insert(1, "soc", [w.hw.soc.soc for w, *_ in works])
    out["group"] = out["op"] + " " + out["soc"]
    out["predicted_us"] = fitting.predicted_us(cal, works)
    out["error_pct"] = 100 * (out["predicted_us"] - out["measured_us"]) / out["measured_us"]
    if cv:
        for col, key in (("cv_group_pct", out["group"].to_numpy()), ("cv_family_pct", out["family"].to_numpy())):
            pred = np.full(len(rows), np.nan)
            for held in sorted(set(key)):
                keep = trusted & (key != held)
                sub = rows[keep].reset_index(drop=True)
                cal_h = _fit(sub, [w for w, k in zip(works, keep) if k])
                idx = np.flatnonzero(key == held)
                pred[idx] = fitting.predicted_us(cal_h, [works[i] for i in idx])
            out[col] = 100 * (pred - out["measured_us"]) / out["measured_us"]
    return cal, out


def summary(per_row: pd.DataFrame, trust: str = FITTED) -> pd.DataFrame:
    """MAPE per group and overall over the rows of one trust level: the fitted rows (default; in-sample and,
    when present, cross-validated), or e.g. 'holdout', the rows kept out of the fit on purpose (one MAPE:
    none of them was fitted)."""
    t = per_row[per_row["trust"] == trust]
    cols = [c for c in ("error_pct", "cv_group_pct", "cv_family_pct") if c in t and (trust == FITTED or
                                                                                       c == "error_pct")]
    g = t.groupby("group")[cols].agg(lambda s: float(np.mean(np.abs(s))))
    g.insert(0, "rows", t.groupby("group").size())
    g["worst_pct"] = t.groupby("group")["error_pct"].agg(lambda s: float(np.max(np.abs(s))))
    allrow = pd.DataFrame({"rows": [len(t)], **{c: [float(np.mean(np.abs(t[c])))] for c in cols},
                           "worst_pct": [float(np.max(np.abs(t["error_pct"])))]}, index=["all"])
    g = pd.concat([g, allrow])
    return g.rename(columns={"error_pct": "in_sample_mape" if trust == FITTED else "mape",
                             "cv_group_pct": "logo_mape", "cv_family_pct": "family_mape"})


ROW_LEGEND = ("per row: predicted_us against measured_us (the packaged calibration set), error_pct = 100 x "
              "(predicted - measured) / measured in-sample; trust: measured (fitted), or analogue / doubtful / holdout "
              "(predicted, never fitted); family: the row's shape family")
CV_LEGEND = ("; cv_group_pct: the error when the calibration is refitted without the row's group (operator x SoC); "
             "cv_family_pct: refitted without the row's shape family")


def _same_params(cal, path) -> bool:
    """Whether the calibration JSON at `path` holds `cal`'s parameters (relative 1e-6: the last digits of a fit
    move with the machine's BLAS, and a rewrite would only churn the shipped file)."""
    from perfmodel.calibration import Calibration
    try:
        old = Calibration.load(path).params
    except ValueError:
        return False
    return old.keys() == cal.params.keys() and all(
        old[f].keys() == cal.params[f].keys() and all(math.isclose(old[f][k], v, rel_tol=1e-6, abs_tol=1e-12)
                                                      for k, v in cal.params[f].items()) for f in old)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perfmodel.fit_report",
                                 description="Fit the model to the packaged measurements and report its errors.")
    ap.add_argument("--cv", action="store_true", help="also print cross-validated errors (refits per held-out group)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "data" / SHIPPED),
                    help="where to write the fitted calibration (default: the shipped perfmodel/data/calibration.json)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--figure", metavar="STEM", help="draw predicted vs measured (in-sample and, with --cv, "
                    "cross-validated) to STEM.png/.svg and write the per-row table to STEM.csv")
    a = ap.parse_args(argv)
    cal, rows = evaluate(cv=a.cv)
    show = rows.copy()
    for c in ("predicted_us", "error_pct", "cv_group_pct", "cv_family_pct"):
        if c in show:
            show[c] = show[c].round(1)
    cols = ["group", "label", "predicted_us", "measured_us", "error_pct"] + \
        [c for c in ("cv_group_pct", "cv_family_pct") if c in show] + ["trust", "family"]
    # labels left-aligned and cut in the middle to a terminal's width, keeping their ends (output dtypes tell
    # calls apart there); validation.csv, written with --figure, keeps them whole
    width = {"group": max(map(len, show["group"])), "label": 72}
    cut = {c: (lambda v, w=w: (v if len(v) <= w else v[:w - 28] + "..." + v[-25:]).ljust(w))
           for c, w in width.items()}
    print(textwrap.fill(ROW_LEGEND + (CV_LEGEND if a.cv else ""), 110))
    with pd.option_context("display.width", 250, "display.max_rows", 1000):
        print(show[cols].to_string(index=False, formatters=cut, justify="left"))
        print("\n" + textwrap.fill("MAPE per group (operator x SoC) over the fitted rows: in_sample_mape"
              + (", logo_mape (each group refitted without itself), family_mape (each shape family refitted "
                 "without itself)" if a.cv else "") + "; worst_pct: the largest in-sample |error|", 110))
        print(summary(rows).round(1).to_string())
        print("\nheld out of the fit on purpose (never fitted: the model's error where it was not fitted):")
        print(summary(rows, "holdout").round(1).to_string())
    print("\nfitted calibration parameters per kernel family (perfmodel/data/<family>.toml says what each means):")
    for fam in sorted(cal.params):
        if fitting.FIT_PARAMS.get(fam):
            print(f"  {fam}:", {k: round(v, 4) for k, v in cal.params[fam].items()})
    if a.figure:
        wrote = plots.plot_validation(rows, a.figure)
        rows.round(3).to_csv(Path(a.figure).with_suffix(".csv"), index=False)
        print("wrote " + ", ".join(wrote + [str(Path(a.figure).with_suffix(".csv"))]))
    if not a.no_write and _same_params(cal, a.out):
        print(f"{a.out} already holds this fit (every parameter within 1e-6): not rewritten")
    elif not a.no_write:
        # the per-row errors are printed above and kept in the --figure table (perfmodel/validation/), not here
        cal.source = ("perfmodel.fit_report: fit of the packaged calibration set (perfmodel/data/measured_timings.csv "
                      "and published_timings.csv, trusted rows); per-row errors: perfmodel/validation/validation.csv")
        cal.report = []
        cal.save(a.out)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
