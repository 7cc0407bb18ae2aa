"""Calibration: the model parameters the sources leave open, fitted to measured timings.

Parameters (per kernel family 'a2a3', '950', '310p910', '310b'; defaults and sources in
perfmodel/data/<family>.toml [calibration]):
  hbm_efficiency, l2_efficiency  effective fraction of the HBM / L2 peak bandwidth (<= 1)
  launch_us, launch_per_core_us  launch floor and its growth with the cores launched (each may also be
                                 fitted per kernel or launch class: 'launch_us@MatmulApi')
  barrier_cycles                 extra cycles of a vector call that waits for the one before (PipeBarrier)
  scalar_read_cycles             cycles of a vector result read back by the scalar unit (V->S + GetValue)
  scalar_element_cycles          cycles per element of a scalar loop over GM data (TransQuantParamV2)
  load_latency_us                GM latency of a load that nothing prefetched (single-buffered loops)
  vector_scale, dma_scale, cube_scale   multipliers on the table-based pipe times (cube_scale >= 1)
  offgrid_row_cycles             MTE2 cycles an ND->NZ copy spends on each source row off the 32-byte grid
                                 that it fetches from HBM (perfmodel.ops.cube_loops)

perfmodel.fitting.fit(measured) fits them to measured rows. The shipped values
(perfmodel/data/calibration.json) come from fitting the packaged calibration set
(perfmodel.published.calibration_set); reproduce them, with in-sample and cross-validated errors, with
    python -m perfmodel.fit_report --cv
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from perfmodel.hw import family_data
from perfmodel.ops import MATMUL_API

FAMILIES = ("a2a3", "950", "310p910", "310b")
BOUNDS = {
    "hbm_efficiency": (0.05, 1.0), "l2_efficiency": (0.05, 1.0), "launch_us": (0.2, 40.0),
    "launch_per_core_us": (0.0, 1.0), "barrier_cycles": (0.0, 400.0), "scalar_read_cycles": (0.0, 2000.0),
    "scalar_element_cycles": (0.1, 100.0), "load_latency_us": (0.0, 5.0),
    "vector_scale": (0.2, 5.0), "dma_scale": (0.2, 5.0), "cube_scale": (1.0, 5.0),
    "offgrid_row_cycles": (0.0, 2000.0),
}
PARAMS = tuple(BOUNDS)
# kernels whose start costs moved to a launch class shared with others
RENAMED_LAUNCH_CLASSES = {"QuantBatchMatmulV3": MATMUL_API}
# parameters the model no longer reads, and what replaced them
RETIRED_PARAMS = {"offgrid_copy_scale": "replaced by offgrid_row_cycles (a cost per off-grid source row fetched "
                                        "from HBM, not a factor on doubled sectors)"}
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
        parameter may be qualified by a kernel, e.g. 'launch_us@<kernel>'); every value a finite number in
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
    if "params" not in d:       # e.g. '{}': no calibration at all, which would silently give the TOML defaults
        bad("params", "missing: a calibration holds {family: {parameter: value}} (npusim calibrate writes it)")
    params = d["params"]
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
            base, _, kernel = name.partition("@")       # '<parameter>@<kernel>': one kernel's own value
            if base in RETIRED_PARAMS:
                bad(key, f"no longer a parameter: {RETIRED_PARAMS[base]}; refit")
            if base not in known or (_ and not kernel):
                bad(key, f"unknown parameter; known: {', '.join(sorted(known))} (or <parameter>@<kernel>)")
            if kernel in RENAMED_LAUNCH_CLASSES:         # a value no kernel would read any more
                bad(key, f"{kernel} now starts as the launch class {RENAMED_LAUNCH_CLASSES[kernel]}: rename the "
                         f"key to {base}@{RENAMED_LAUNCH_CLASSES[kernel]} (or refit)")
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


def load_calibration(cal):
    """A Calibration from the path of a calibration JSON (as `npusim calibrate` writes it; validated on load), or
    `cal` itself (a Calibration, or None for the shipped one)."""
    if isinstance(cal, (str, os.PathLike)):
        return Calibration.load(cal)
    return cal
