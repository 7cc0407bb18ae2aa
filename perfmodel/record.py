"""record(): the kernel launches a piece of code makes through npusim, each one predicted.

    import perfmodel
    with perfmodel.record() as rec:
        layer_forward(x)          # any code calling npusim: numpy face, torch_npu stand-in, aclnn calls
    print(rec.report())           # each distinct launch: calls, predicted us each and in all, share, bound
    rec.table()                   # one row per launch (pandas), with the pipes' breakdown

Each launch is predicted on the product the emulator ran it for (install(product=...) in the torch face, the
product= argument in the others) from the very plan the emulator ran, with what the face knew beyond the
arrays (a torch weight's FRACTAL_NZ format). Launches of every thread are recorded, in the order they end.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import pandas as pd

from npusim import formats
from npusim.plan import launch_hook
from perfmodel.model import PIPES
from perfmodel.ops import BUILDER_OPTIONS
from perfmodel.predict import predict_plan

SUMMARY_COLUMNS = ["op", "product", "kernel", "tiling_key", "block_dim", "inputs", "calls", "us_each", "us_total",
                   "share_pct", "bound"]


def _inputs_text(plan) -> str:
    """'x 32x4096 bfloat16; smooth_scales 4096 bfloat16' (a transposed layout marked .T)."""
    parts = []
    for name, spec in plan.inputs.items():
        if spec is not None:
            dims = "x".join(map(str, spec.shape)) or "scalar"
            parts.append(f"{name} {dims}{'.T' if spec.transposed else ''} {formats.dtype_name(spec.dtype)}")
    return "; ".join(parts)


def _key(plan, details) -> tuple:
    """What a launch's cost depends on: the plan's kernel, tiling and tensors, and the face's details."""
    specs = tuple((k, v.shape, str(v.dtype), v.transposed) for k, v in {**plan.inputs, **plan.outputs}.items()
                  if v is not None)
    return (plan.op, plan.soc.soc, plan.kernel, plan.tiling_key, plan.block_dim, specs,
            repr(sorted(plan.attrs.items())), repr(sorted(plan.tiles.items())), repr(sorted(details.items())))


class Recording:
    """The launches recorded (plan and details, in order) and their predictions on demand."""

    def __init__(self):
        self.launches: list[tuple] = []          # (plan, details)
        self._lock = threading.Lock()

    def _add(self, plan, details) -> None:
        # the details this operator's cost builder takes (a block's details reach every launch made in it)
        details = {k: v for k, v in details.items() if k in BUILDER_OPTIONS.get(plan.op, ())}
        with self._lock:
            self.launches.append((plan, details))

    def __len__(self) -> int:
        return len(self.launches)

    def predictions(self, *, calibration=None, l2: str = "cold") -> list:
        """A perfmodel Prediction per launch, in order (each distinct launch is predicted once)."""
        done: dict = {}
        out = []
        for plan, details in list(self.launches):
            key = _key(plan, details)
            if key not in done:
                done[key] = predict_plan(plan, calibration=calibration, l2=l2, **details)
            out.append(done[key])
        return out

    def table(self, *, calibration=None, l2: str = "cold") -> pd.DataFrame:
        """One row per launch: launch (0, 1, ...), op, product, soc, kernel, inputs, the prediction (latency_us,
        bound, head_us, '<pipe>_us', bytes, block_dim, tiling_key, ...) and the details the face gave."""
        rows = []
        for i, ((plan, details), p) in enumerate(zip(list(self.launches), self.predictions(
                calibration=calibration, l2=l2))):
            row = {k: v for k, v in p.to_row().items() if not k.startswith("tile_")}
            rows.append({"launch": i, **row, "kernel": plan.kernel, "inputs": _inputs_text(plan),
                         "details": ", ".join(f"{k}={v}" for k, v in sorted(details.items()))})
        cols = ["launch", "op", "product", "soc", "kernel", "tiling_key", "block_dim", "inputs", "details",
                "latency_us", "bound", "head_us", *[f"{p}_us" for p in PIPES]]
        df = pd.DataFrame(rows, columns=None if rows else cols)
        return df[cols + [c for c in df.columns if c not in cols]]

    def total_us(self, *, calibration=None, l2: str = "cold") -> float:
        """The launches' predicted latencies added up (each launch alone; see report())."""
        return float(sum(p.latency_us for p in self.predictions(calibration=calibration, l2=l2)))

    def summary(self, *, calibration=None, l2: str = "cold") -> pd.DataFrame:
        """One row per distinct launch (operator, product, kernel, tiling and inputs), the costliest first:
        calls, us_each, us_total, share_pct of the recording's total, bound."""
        t = self.table(calibration=calibration, l2=l2)
        if t.empty:
            return pd.DataFrame(columns=SUMMARY_COLUMNS)
        g = (t.groupby(["op", "product", "kernel", "tiling_key", "block_dim", "inputs", "details", "bound"],
                       sort=False, dropna=False)
             .agg(calls=("launch", "size"), us_each=("latency_us", "first"), us_total=("latency_us", "sum"))
             .reset_index())
        total = g["us_total"].sum()
        g["share_pct"] = 100.0 * g["us_total"] / total if total > 0 else 0.0
        g["inputs"] = [f"{i} [{d}]" if d else i for i, d in zip(g["inputs"], g["details"])]
        return g.sort_values("us_total", ascending=False, kind="stable")[SUMMARY_COLUMNS].reset_index(drop=True)

    def report(self, *, calibration=None, l2: str = "cold") -> str:
        """The summary as text, with the total and what it means."""
        s = self.summary(calibration=calibration, l2=l2)
        if s.empty:
            return "no launches recorded (did the code call npusim inside the record() block?)"
        shown = s.assign(us_each=s["us_each"].map("{:.2f}".format), us_total=s["us_total"].map("{:.2f}".format),
                         share_pct=s["share_pct"].map("{:.1f}".format))
        with pd.option_context("display.max_colwidth", 90, "display.width", 250):
            text = shown.to_string(index=False)
        products = ", ".join(sorted(set(s["product"])))
        n = len(self)
        return (f"{text}\n{n} launch{'' if n == 1 else 'es'} on {products}: {s['us_total'].sum():.2f} us predicted in "
                "all (each launch's device time alone, added up: no overlap between launches, no host time)")


@contextmanager
def record():
    """Record every kernel launch npusim makes while the block runs (any face, any thread); yields the
    Recording, whose predictions are made when asked for (report(), summary(), table(), total_us())."""
    rec = Recording()
    with launch_hook(rec._add):
        yield rec
