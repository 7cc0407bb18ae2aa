"""Fitting the calibration parameters (perfmodel.calibration) to measured rows.

`fit(measured)` fits them by least squares on log(predicted / measured), with a weak pull towards the
defaults so that parameters the rows do not inform stay put. Only the parameters a family's rows can
inform are fitted (FIT_PARAMS); the families without measurements inherit what the A2/A3 rows teach about
kernels (INHERITED). `calibrate` fits and writes the JSON; `report` gives the per-row errors.
"""
from __future__ import annotations

import copy
import math

from perfmodel.calibration import BOUNDS, FAMILIES, PARAMS, Calibration
from perfmodel.hw import family_data
from perfmodel.predict import build_work

__all__ = ["FIT_PARAMS", "INHERITED", "NOT_INHERITED", "SCALED", "parameter_names", "fit", "works_of", "predicted_us", "report", "calibrate"]

# -- fitting ----------------------------------------------------------------------------------------

# The parameters each family's measurements can inform. Ascend 950 has only the two published MatMul 8192^3
# rows: they may move its cube and HBM constants and nothing else; 310P/910A/310B have no measurement.
# dma_scale stays 1 on A2/A3: the single-core DMA curves are msKPP's own measurements. cube_scale stays 1 on
# A2/A3 too: the cube model (one fractal a cycle at msKPP's MMAD efficiency) gives 3091 us of MAC time for the
# Ascend C matmul sample on 910B1 (8192^3 fp16, 24 AIC), whose profile measured 3076.4 us (HARDWARE.md sec. 7.2);
# a fitted cube_scale would only soak up what the loads cost.
FIT_PARAMS = {"a2a3": tuple(p for p in PARAMS if p not in ("dma_scale", "cube_scale")),
              "950": ("cube_scale", "hbm_efficiency"), "310p910": (), "310b": ()}


def _target(r) -> str:
    """The product or SoC name a measured row is predicted on (its exact SoC when known)."""
    t = getattr(r, "target", None)
    return t if isinstance(t, str) and t else r.product


def works_of(measured) -> list:
    """(Work, product id, op, measured_us) of every measured row (the launches fit and report cost); a row
    that names the kernels its time covers (column kernels) keeps only those of the operator's launches."""
    out = []
    for r in measured.itertuples(index=False):
        work, pid = build_work(r.op, _target(r), **dict(r.args))
        covered = getattr(r, "kernels", ())
        if isinstance(covered, tuple) and covered:     # the measurement times only these kernels
            work.extra = [w for w in work.extra if w.kernel in covered]
        out.append((work, pid, r.op, float(r.measured_us)))
    return out


def parameter_names(family: str, works, params=None) -> list:
    """The parameters fit() fits for one family's Works: `params`, or the family's FIT_PARAMS plus each
    launched kernel's own start costs (launch_us@<kernel>, launch_per_core_us@<kernel>)."""
    names = [n for n in (params or FIT_PARAMS.get(family, PARAMS)) if n.split("@")[0] in BOUNDS]
    for base_name in ("launch_us", "launch_per_core_us"):
        if params is None and base_name in names:
            # each kernel's own start costs (fixed, and per core), where its rows can say
            names += sorted({f"{base_name}@{w.launch_class or w.kernel}" for w in works})
    return names


def fit(measured, product=None, params=None, base: Calibration | None = None, prior_weight: float = 0.03,
        iterations: int = 60, works=None) -> Calibration:
    """Fit the calibration parameters to measured rows (columns op, product, args, measured_us).

    product: only rows of this product id / SoC; params: names to fit (default: FIT_PARAMS of each
    family); base: starting/prior calibration (default: the TOML defaults); works: works_of(measured),
    when the caller already has them. Each family present in the rows is fitted separately by damped
    Gauss-Newton (Levenberg-Marquardt) in log-parameter space on log(predicted/measured), plus
    prior_weight * log(value/prior) per parameter.
    """
    import numpy as np
    from npusim.products import get_product
    from perfmodel.model import combine_many
    base = copy.deepcopy(base or Calibration.defaults())
    rows = works if works is not None else works_of(measured)
    if product is not None:
        pid = get_product(product).product
        keep = [get_product(p).product == pid for p in measured["product"]]
        rows = [w for w, k in zip(rows, keep) if k]
    by_family: dict = {}
    for w in rows:
        by_family.setdefault(w[0].hw.family, []).append(w)
    for fam in sorted(by_family, key=lambda f: f != "a2a3"):  # A2/A3 first: the others inherit from it
        frows = by_family[fam]
        if fam != "a2a3" and "a2a3" in by_family:
            _inherit(base, fam)
        names = parameter_names(fam, [w for w, *_ in frows], params)
        if not names:
            continue
        prior = base.params_for(fam)
        lo = np.array([math.log(max(BOUNDS[n.split("@")[0]][0], 1e-6)) for n in names])
        hi = np.array([math.log(BOUNDS[n.split("@")[0]][1]) for n in names])
        z0 = np.clip(np.array([math.log(max(prior.get(n, prior[n.split("@")[0]]), 1e-6)) for n in names]), lo, hi)
        meas = np.array([r[3] for r in frows])
        sw = math.sqrt(prior_weight)
        works_f = [w for w, *_ in frows]

        # a kernel's own start costs are pulled towards the family's (fitted) ones, not fixed numbers:
        # a kernel the rows do not cover gets what the others share
        hier = [(i, names.index(n.split("@")[0])) for i, n in enumerate(names)
                if "@" in n and n.split("@")[0] in names]

        def resid(z):
            p = dict(prior)
            p.update({n: float(math.exp(v)) for n, v in zip(names, z)})
            pred = np.array([x.latency_us for x in combine_many(works_f, p, "", "")])
            pull = z - z0
            for i, j in hier:
                pull[i] = z[i] - z[j]
            return np.concatenate([np.log(pred / meas), sw * pull])

        z, lam = z0.copy(), 1e-2
        r = resid(z)
        cost = float(r @ r)
        for _ in range(iterations):
            J = np.empty((r.size, z.size))
            for j in range(z.size):
                dz = np.zeros_like(z)
                dz[j] = 1e-4
                J[:, j] = (resid(np.clip(z + dz, lo, hi + 1e-4)) - r) / 1e-4
            A, g = J.T @ J, J.T @ r
            # Marquardt damping, floored so that a parameter the rows barely inform takes small steps
            damp = np.diag(np.diag(A) + 1e-3 * np.mean(np.diag(A)) + 1e-12)
            improved = False
            for _ in range(12):
                step = np.linalg.solve(A + lam * damp, -g)
                step *= min(1.0, 1.0 / max(1e-12, float(np.max(np.abs(step)))))      # at most a factor e
                zn = np.clip(z + step, lo, hi)
                rn = resid(zn)
                cn = float(rn @ rn)
                if cn < cost:
                    z, r, cost, lam, improved = zn, rn, cn, max(lam / 3, 1e-7), True
                    break
                lam *= 4
            if not improved or float(np.max(np.abs(step))) < 1e-7:
                break
        fitted = dict(base.params.get(fam, {}))
        fitted.update({n: float(math.exp(v)) for n, v in zip(names, z)})
        base.params[fam] = fitted
    if "a2a3" in by_family:
        for fam in FAMILIES:
            if fam not in by_family:
                _inherit(base, fam)
    base.source = f"fitted on {len(rows)} measured rows"
    base.report = []
    return base


# What the A2/A3 measurements teach about kernels rather than about A2/A3's memory, DMA engine and cube: the
# families without measurements of their own (950, 310P/910, 310B) take these fitted values.
INHERITED = ("launch_us", "launch_per_core_us", "barrier_cycles", "scalar_read_cycles", "load_latency_us",
             "scalar_element_cycles", "vector_scale")
# ... except where the vendor's own cost model says the family differs: ATT grows the MTE2 pipe head with the
# cores launched on A2/A3 (v1: 32.72 cycles a core) and not on Ascend 950 (v2: a constant 1174 cycles),
# HARDWARE.md sec. 4, so 950 keeps its own per-core start (950.toml)
NOT_INHERITED = {"950": ("launch_per_core_us",)}


# ... and what the A2/A3 rows teach about a cost that a vendor measurement of both chips scales: the fitted
# value times the family's [dma] ratio (950.toml offgrid_cost_vs_a2a3: the vendor's ND2NZ copy sample timed on
# both chips)
SCALED = {"offgrid_row_cycles": "offgrid_cost_vs_a2a3"}


def _inherit(cal: Calibration, fam: str) -> None:
    src = cal.params.get("a2a3", {})
    own = set(FIT_PARAMS.get(fam, ()))
    keep = {k: v for k, v in src.items() if k.split("@")[0] in INHERITED and k not in own
            and k.split("@")[0] not in NOT_INHERITED.get(fam, ())}
    dma = family_data(fam)["dma"]
    keep.update({k: src[k] * dma[ratio] for k, ratio in SCALED.items() if k in src and ratio in dma and k not in own})
    cal.params[fam] = {**cal.params.get(fam, {}), **keep}


def predicted_us(cal: Calibration, works) -> list:
    """Latency (us) of each (Work, product id, op, measured) under `cal`."""
    from perfmodel.model import combine
    return [combine(w, cal.params_for(w.hw.family), op, pid).latency_us for w, pid, op, _m in works]


def report(cal: Calibration, measured, works=None):
    """Per-row predicted vs measured (error % = (pred - meas) / meas) as a DataFrame; .attrs['mape']."""
    import pandas as pd
    from perfmodel.model import combine
    works = works if works is not None else works_of(measured)
    out = []
    for (work, pid, op, meas), r in zip(works, measured.itertuples(index=False)):
        p = combine(work, cal.params_for(work.hw.family), op, pid)
        out.append({"op": op, "product": pid, "soc": p.soc, "config": getattr(r, "config", ""),
                    "predicted_us": round(p.latency_us, 2), "measured_us": meas,
                    "error_pct": round(100 * (p.latency_us - meas) / meas, 2), "bound": p.bound})
    df = pd.DataFrame(out)
    df.attrs["mape"] = float(df["error_pct"].abs().mean()) if len(df) else float("nan")
    return df


def calibrate(measured, path=None, product=None, params=None, **kw) -> Calibration:
    """Fit (see fit) and, if `path` is given, write the calibration JSON there; returns the Calibration.
    Use it with predict(..., calibration=Calibration.load(path))."""
    cal = fit(measured, product=product, params=params, **kw)
    cal.report = report(cal, measured).to_dict("records") if len(measured) else []
    if path is not None:
        cal.save(path)
    return cal
