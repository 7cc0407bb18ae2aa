"""Calibration: the model parameters the sources leave open, fitted to measured timings.

Parameters (per kernel family 'a2a3', '950', '310p910', '310b'; defaults and sources in
perfmodel/data/<family>.toml [calibration]):
  hbm_efficiency, l2_efficiency  effective fraction of the HBM / L2 peak bandwidth (<= 1)
  launch_us, launch_per_core_us  launch floor and its growth with the cores launched
  barrier_cycles                 extra cycles of a vector call that waits for the one before (PipeBarrier)
  scalar_read_cycles             cycles of a vector result read back by the scalar unit (V->S + GetValue)
  scalar_element_cycles          cycles per element of a scalar loop over GM data (TransQuantParamV2)
  load_latency_us                GM latency of a load that nothing prefetched (single-buffered loops)
  vector_scale, dma_scale, cube_scale   multipliers on the table-based pipe times (cube_scale >= 1)

`fit(measured)` fits them by least squares on log(predicted / measured), with a weak pull towards the
defaults so that parameters the rows do not inform stay put. Only the parameters a family's rows can
inform are fitted (FIT_PARAMS). The shipped values (perfmodel/data/calibration.json) come from fitting the
packaged calibration set (perfmodel.published.calibration_set); reproduce them, with in-sample and
cross-validated errors, with
    python -m perfmodel.fit_report --cv
"""
from __future__ import annotations

import copy
import functools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from perfmodel.hw import family_data

FAMILIES = ("a2a3", "950", "310p910", "310b")
BOUNDS = {
    "hbm_efficiency": (0.05, 1.0), "l2_efficiency": (0.05, 1.0), "launch_us": (0.2, 40.0),
    "launch_per_core_us": (0.0, 1.0), "barrier_cycles": (0.0, 400.0), "scalar_read_cycles": (0.0, 2000.0),
    "scalar_element_cycles": (0.1, 100.0), "load_latency_us": (0.0, 5.0),
    "vector_scale": (0.2, 5.0), "dma_scale": (0.2, 5.0), "cube_scale": (1.0, 5.0),
}
PARAMS = tuple(BOUNDS)
SHIPPED = "calibration.json"


@dataclass
class Calibration:
    """Fitted parameters per kernel family; families or parameters absent fall back to the TOML defaults."""
    params: dict = field(default_factory=dict)     # family -> {name: value}
    source: str = "defaults from perfmodel/data/<family>.toml"
    report: list = field(default_factory=list)      # per-row fit report (dicts), informative only

    def params_for(self, family: str) -> dict:
        over = self.params.get(family, {})
        key = (family, tuple(sorted(over.items())))
        cache = self.__dict__.setdefault("_merged", {})
        if key not in cache:
            cache[key] = _params_cached(family, json.dumps(over, sort_keys=True))
        return cache[key]

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"source": self.source, "params": self.params, "report": self.report},
                                         indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path) -> "Calibration":
        """Read a calibration JSON (as `save` writes it), validated: an object with the keys 'params' (family ->
        {parameter: number}), 'source' (text) and 'report' (list); known families and parameters only (a
        parameter may be qualified by a kernel, 'launch_per_core_us@<kernel>'); every value a finite number in
        the parameter's range (BOUNDS). Anything else raises ValueError naming the
        file and the key."""
        try:
            d = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ValueError(f"calibration {path}: cannot be read ({exc.strerror or exc})") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"calibration {path}: not valid JSON ({exc})") from None
        return cls(params=_checked_params(d, path), source=str(d.get("source", str(path))), report=d.get("report", []))

    @classmethod
    def defaults(cls) -> "Calibration":
        return cls(params={f: dict(family_data(f)["calibration"]) for f in FAMILIES})


def _checked_params(d, path) -> dict:
    """The 'params' of a parsed calibration JSON, checked key by key (see Calibration.load)."""
    def bad(key, rule):
        raise ValueError(f"calibration {path}: {key}: {rule}")

    if not isinstance(d, dict):
        bad("top level", f"must be a JSON object with 'params', got {type(d).__name__}")
    for k in d:
        if k not in ("params", "source", "report"):
            bad(repr(k), "unknown key; known: 'params', 'source', 'report'")
    if not isinstance(d.get("source", ""), str):
        bad("source", "must be text")
    if not isinstance(d.get("report", []), list):
        bad("report", "must be a list")
    params = d.get("params", {})
    if not isinstance(params, dict):
        bad("params", f"must be an object {{family: {{parameter: value}}}}, got {type(params).__name__}")
    out = {}
    for fam, values in params.items():
        if fam not in FAMILIES:
            bad(f"params.{fam}", f"unknown kernel family; known: {', '.join(FAMILIES)}")
        if not isinstance(values, dict):
            bad(f"params.{fam}", f"must be an object {{parameter: value}}, got {type(values).__name__}")
        out[fam] = {}
        known = set(BOUNDS) | set(family_data(fam)["calibration"])
        for name, v in values.items():
            key = f"params.{fam}.{name}"
            base, _, kernel = name.partition("@")       # 'launch_per_core_us@<kernel>': one kernel's own value
            if base not in known or (_ and not kernel):
                bad(key, f"unknown parameter; known: {', '.join(sorted(known))} (or <parameter>@<kernel>)")
            lo, hi = BOUNDS.get(base, (0.0, math.inf))
            try:
                f = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
            except OverflowError:       # an integer beyond the float range
                f = math.nan
            if not (math.isfinite(f) and lo <= f <= hi):
                bad(key, f"must be a finite number in [{lo}, {hi}], got {v!r}"[:300])
            out.setdefault(fam, {})[name] = f
    return out


@functools.lru_cache(maxsize=256)
def _params_cached(family: str, overrides_json: str) -> dict:
    p = dict(family_data(family)["calibration"])
    p.update(json.loads(overrides_json))
    return p


@functools.cache
def default_calibration() -> Calibration:
    """The shipped calibration (perfmodel/data/calibration.json), else the TOML defaults."""
    res = resources.files("perfmodel").joinpath("data", SHIPPED)
    if res.is_file():
        d = json.loads(res.read_text())
        return Calibration(params=d.get("params", {}), source=d.get("source", SHIPPED), report=d.get("report", []))
    return Calibration.defaults()


# -- fitting ----------------------------------------------------------------------------------------

# The parameters each family's measurements can inform. Ascend 950 has only the two published MatMul 8192^3
# rows: they may move its cube and HBM constants and nothing else; 310P/910A/310B have no measurement.
# dma_scale stays 1 on A2/A3: the single-core DMA curves are msKPP's own measurements.
FIT_PARAMS = {"a2a3": tuple(p for p in PARAMS if p != "dma_scale"),
              "950": ("cube_scale", "hbm_efficiency"), "310p910": (), "310b": ()}


def _target(r) -> str:
    """The product or SoC name a measured row is predicted on (its exact SoC when known)."""
    t = getattr(r, "target", None)
    return t if isinstance(t, str) and t else r.product


def works_of(measured) -> list:
    """(Work, product id, op, measured_us) of every measured row (the launches fit and report cost)."""
    from perfmodel.predict import build_work
    out = []
    for r in measured.itertuples(index=False):
        work, pid = build_work(r.op, _target(r), **dict(r.args))
        out.append((work, pid, r.op, float(r.measured_us)))
    return out


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
        names = [n for n in (params or FIT_PARAMS.get(fam, PARAMS)) if n.split("@")[0] in BOUNDS]
        if params is None and "launch_per_core_us" in names:
            # each kernel's own start cost per core, where its rows can say
            names += sorted({f"launch_per_core_us@{w.launch_class or w.kernel}" for w, *_ in frows})
        if not names:
            continue
        prior = base.params_for(fam)
        lo = np.array([math.log(max(BOUNDS[n.split("@")[0]][0], 1e-6)) for n in names])
        hi = np.array([math.log(BOUNDS[n.split("@")[0]][1]) for n in names])
        z0 = np.clip(np.array([math.log(max(prior.get(n, prior[n.split("@")[0]]), 1e-6)) for n in names]), lo, hi)
        meas = np.array([r[3] for r in frows])
        sw = math.sqrt(prior_weight)
        works_f = [w for w, *_ in frows]

        # a kernel's own start cost per core is pulled towards the family's (fitted) one, not a fixed number:
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


# What the A2/A3 measurements teach about kernels rather than about A2/A3's memory and cube: the families
# without measurements of their own (950, 310P/910, 310B) take these fitted values.
INHERITED = ("launch_us", "launch_per_core_us", "barrier_cycles", "scalar_read_cycles", "load_latency_us",
             "scalar_element_cycles", "vector_scale")


def _inherit(cal: Calibration, fam: str) -> None:
    src = cal.params.get("a2a3", {})
    own = set(FIT_PARAMS.get(fam, ()))
    keep = {k: v for k, v in src.items() if (k.split("@")[0] in INHERITED) and k not in own}
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
