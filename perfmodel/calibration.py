"""Calibration: the model parameters the sources leave open, fitted to measured timings.

Parameters (per kernel family 'a2a3', '950', '310p910', '310b'; defaults and sources in
perfmodel/data/<family>.toml [calibration]):
  hbm_efficiency, l2_efficiency  effective fraction of the HBM / L2 peak bandwidth (<= 1)
  launch_us, launch_per_core_us  launch floor and its growth with the cores launched
  mem_q                          smooth-max exponent between per-core DMA time and the chip ceiling
  overlap_p                      pipe-overlap exponent of double-buffered pipelines
  vector_scale, dma_scale, cube_scale   multipliers on the table-based pipe times (cube_scale >= 1)

`fit(measured)` fits them by least squares on log(predicted / measured), with a weak pull towards the
defaults so that parameters the rows do not inform stay put. The shipped values
(perfmodel/data/calibration.json) come from fitting the published set; reproduce with
    python -m perfmodel.fit_report
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
    "launch_per_core_us": (0.0, 1.0), "mem_q": (1.0, 16.0), "overlap_p": (1.0, 16.0),
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
        {parameter: number}), 'source' (text) and 'report' (list); known families and parameters only; every
        value a finite number in the parameter's range (BOUNDS). Anything else raises ValueError naming the
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
            if name not in known:
                bad(key, f"unknown parameter; known: {', '.join(sorted(known))}")
            lo, hi = BOUNDS.get(name, (0.0, math.inf))
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


# -- the published calibration set ----------------------------------------------------------------------

def published_rows(path=None):
    """The published measured timings (perfmodel.published.read_published: op, product, target, args,
    measured_us, block_dim, label, config, source, pipe_*_us); rows whose product or kernel the model
    cannot express are left out (counted in .attrs['skipped'], listed in .attrs['skipped_rows'])."""
    from perfmodel.published import read_published
    return read_published(path)


def _target(r) -> str:
    """The product or SoC name a measured row is predicted on (its exact SoC when known)."""
    t = getattr(r, "target", None)
    return t if isinstance(t, str) and t else r.product


# -- fitting ----------------------------------------------------------------------------------------

def _works(measured):
    from perfmodel.predict import build_work
    out = []
    for r in measured.itertuples(index=False):
        work, pid = build_work(r.op, _target(r), **dict(r.args))
        out.append((work, pid, r.op, float(r.measured_us)))
    return out


def fit(measured, product=None, params=None, base: Calibration | None = None, prior_weight: float = 0.03,
        iterations: int = 60) -> Calibration:
    """Fit the calibration parameters to measured rows (columns op, product, args, measured_us).

    product: only rows of this product id / SoC; params: names to fit (default: all in PARAMS);
    base: starting/prior calibration (default: the TOML defaults). Each family present in the rows is
    fitted separately by damped Gauss-Newton (Levenberg-Marquardt) in log-parameter space on
    log(predicted/measured), plus prior_weight * log(value/prior) per parameter.
    """
    import numpy as np
    from npusim.products import get_product
    from perfmodel.model import combine_many
    base = copy.deepcopy(base or Calibration.defaults())
    df = measured
    if product is not None:
        pid = get_product(product).product
        df = df[[get_product(p).product == pid for p in df["product"]]]
    names = list(params or PARAMS)
    rows = _works(df)
    by_family: dict = {}
    for w in rows:
        by_family.setdefault(w[0].hw.family, []).append(w)
    for fam, frows in by_family.items():
        prior = base.params_for(fam)
        lo = np.array([math.log(max(BOUNDS[n][0], 1e-6)) for n in names])
        hi = np.array([math.log(BOUNDS[n][1]) for n in names])
        z0 = np.array([math.log(max(prior[n], 1e-6)) for n in names])
        z0 = np.clip(z0, lo, hi)
        meas = np.array([r[3] for r in frows])
        sw = math.sqrt(prior_weight)

        def resid(z):
            p = dict(prior)
            p.update({n: float(math.exp(v)) for n, v in zip(names, z)})
            pred = np.array([x.latency_us for x in combine_many([w for w, *_ in frows], p, "", "")])
            return np.concatenate([np.log(pred / meas), sw * (z - z0)])

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
            improved = False
            for _ in range(8):
                step = np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-9), -g)
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
    base.source = f"fitted on {len(rows)} measured rows"
    base.report = report(base, df).to_dict("records") if len(df) else []
    return base


def report(cal: Calibration, measured):
    """Per-row predicted vs measured (error % = (pred - meas) / meas) as a DataFrame; .attrs['mape']."""
    import pandas as pd
    from perfmodel.model import combine
    out = []
    for (work, pid, op, meas), r in zip(_works(measured), measured.itertuples(index=False)):
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
    if path is not None:
        cal.save(path)
    return cal


# The published set informs only these parameters (Add: HBM/L2 effects, launch, memory contention,
# vector time; matmul: cube, L2 and overlap); the rest keep their defaults.
PUBLISHED_FIT_PARAMS = ["hbm_efficiency", "l2_efficiency", "launch_us", "mem_q", "overlap_p", "dma_scale",
                        "vector_scale", "cube_scale"]


def main(argv=None) -> int:
    """Fit the published set, write perfmodel/data/calibration.json and print the fit report."""
    import argparse

    import pandas as pd

    from perfmodel import compare as cmp
    from perfmodel.published import default_published_path
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--csv", default=str(default_published_path()))
    ap.add_argument("--out", default=str(Path(__file__).parent / "data" / SHIPPED))
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    rows = published_rows(a.csv)
    cal = fit(rows, params=PUBLISHED_FIT_PARAMS)
    cal.source = f"perfmodel.fit_report: fit of {Path(a.csv).name} ({len(rows)} rows) with {PUBLISHED_FIT_PARAMS}"
    # the same table `npusim compare` prints, from the same rows
    table = cmp.per_row(cmp.compare(rows, calibration=cal))
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_colwidth", 70):
        print(table.to_string(index=False))
    ape = table["error_pct"].abs()
    print(f"MAPE {ape.mean():.2f}%  max |error| {ape.max():.2f}%")
    for s in rows.attrs.get("skipped_rows", []):
        print(f"not used ({s['reason']}): {s['source']} {s['op_type']}")
    for fam in sorted({w[0].hw.family for w in _works(rows)}):
        print(fam, {k: round(v, 4) for k, v in cal.params[fam].items()})
    if not a.no_write:
        cal.save(a.out)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
