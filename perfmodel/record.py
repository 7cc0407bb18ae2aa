"""record(): the kernel launches a piece of code makes through npusim, each one predicted.

    import perfmodel
    with perfmodel.record() as rec:
        layer_forward(x)          # any code calling npusim: numpy face, torch_npu stand-in, aclnn calls
    print(rec.report())           # each distinct launch: calls, predicted us each and in all, share, bound
    rec.table()                   # one row per launch (pandas), with the pipes' breakdown

Each launch is predicted on the product the emulator ran it for (install(product=...) in the torch face, the
product= argument in the others) from the very plan the emulator ran, with what the face knew beyond the
arrays (a torch weight's FRACTAL_NZ format). Launches of every thread of this process are recorded, in the
order they end; child processes (multiprocessing, pytest-xdist workers) are not.
"""
from __future__ import annotations

import threading
import warnings
from collections import Counter
from contextlib import contextmanager

import pandas as pd

from npusim import formats
from npusim.plan import PLANNERS, PRODUCTS_OF, launch_hook
from npusim.quant_matmul import check_weight_format
from perfmodel.model import PIPES
from perfmodel.ops import BUILDER_OPTIONS
from perfmodel.predict import check_product, op_parameters, predict_plan

TABLE_COLUMNS = ["launch", "section", "source", "op", "product", "soc", "kernel", "kernels", "tiling_key", "block_dim", "call",
                 "details", "notes", "refused", "latency_us", "bound", "head_us", "core_us", "chip_us",
                 *[f"{p}_us" for p in PIPES], "bytes_read", "bytes_written", "flops", "achieved_GBps", "achieved_TOPS"]
SUMMARY_COLUMNS = ["section", "op", "product", "soc", "kernel", "tiling_key", "block_dim", "calls", "us_each", "us_total",
                   "share_pct", "bound", "call"]


def _tensors_text(specs: dict, shapes: bool = True) -> str:
    """'x 32x4096 bfloat16; smooth_scales 4096 bfloat16' (a transposed layout marked .T), or without shapes."""
    parts = []
    for name, spec in specs.items():
        if spec is not None:
            dims = "x".join(map(str, spec.shape)) or "scalar"
            shape = f" {dims}{'.T' if spec.transposed else ''}" if shapes else ""
            parts.append(f"{name}{shape} {formats.dtype_name(spec.dtype)}")
    return "; ".join(parts)


def _call_text(plan) -> str:
    """What sets a launch apart: its inputs, the outputs' dtypes and the attributes of its plan."""
    text = f"{_tensors_text(plan.inputs)} -> {_tensors_text(plan.outputs, shapes=False)}"
    attrs = ", ".join(f"{k}={v}" for k, v in plan.attrs.items())
    return f"{text} ({attrs})" if attrs else text


def _key(plan, details) -> tuple:
    """What a launch's cost depends on: the plan's kernel, tiling and tensors, and the face's details."""
    specs = tuple((k, v.shape, str(v.dtype), v.transposed) for k, v in {**plan.inputs, **plan.outputs}.items()
                  if v is not None)
    return (plan.op, plan.soc.soc, plan.kernel, plan.tiling_key, plan.block_dim, specs,
            repr(sorted(plan.attrs.items())), repr(sorted(plan.tiles.items())), repr(sorted(details.items())))


def _call_args(plan) -> dict:
    """The planner's arguments a plan was made from: its tensors and attributes are named as the planner's
    parameters (npusim.plan.Plan), so the same call can be planned for another product."""
    names = op_parameters(plan.op)
    given = {**plan.outputs, **plan.inputs, **plan.attrs}
    return {k: v for k, v in given.items() if k in names}


_SECTION = threading.local()          # the labels of the section() blocks this thread is in, outermost first


@contextmanager
def section(label: str):
    """Label the launches made in this block (this thread) in every recording: a planner's steps of one run
    ('decode b=16', 'prefill 4k'), each with its own total in report() and its `section` in table() and
    summary(). Nested sections join with ' / '. A script under `npusim record` labels its steps so."""
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"section(): label must be a non-empty string, got {label!r}"[:200])
    labels = getattr(_SECTION, "labels", ())
    _SECTION.labels = (*labels, label.strip())
    try:
        yield
    finally:
        _SECTION.labels = labels


class Recording:
    """The launches recorded (plan and details, in order) and their predictions on demand.

    numbers: each launch's number in the run. planned_for: None for a recording of a run, else the SoC that
    on() planned it for; refused then lists the run's launches that SoC cannot run, as (number, op, reason,
    kind), kind 'absent' (the operator is not on that product), 'refused' (its rules reject the call, as
    the emulator would) or 'not emulated' (the NPU may run it; npusim does not model it)."""

    def __init__(self, planned_for=None):
        self.launches: list[tuple] = []          # (plan, details)
        self.numbers: list[int] = []
        self.sections: list[str] = []            # each launch's section() label ('' outside one)
        self.planned_for = planned_for
        self.refused: list[tuple] = []
        # operators the run asked for that npusim does not emulate (torch_npu.<name>: a call, or a hasattr guard
        # that then ran something else), how often: their kernels are in no total
        self.missing: Counter = Counter()
        self.meta_left_out = 0                   # calls on meta tensors not recorded (record(meta=False))
        self._lock = threading.Lock()

    def _meta_left_out(self, plan, details) -> None:
        with self._lock:
            self.meta_left_out += 1

    def _asked(self, name: str) -> None:
        with self._lock:
            self.missing[name] += 1

    def _add(self, plan, details) -> None:
        # the details this operator's cost builder takes (a block's details reach every launch made in it)
        details = {k: v for k, v in details.items() if k in BUILDER_OPTIONS.get(plan.op, ())}
        label = " / ".join(getattr(_SECTION, "labels", ()))        # (the launching thread's)
        with self._lock:
            self.numbers.append(len(self.launches))
            self.launches.append((plan, details))
            self.sections.append(label)

    def __len__(self) -> int:
        return len(self.launches)

    def on(self, product) -> "Recording":
        """The same launches planned for another product (npusim's planner of each operator, from the launch's
        shapes, dtypes, layout and attributes; the face's details kept), to compare products from one run.
        A launch that product cannot run is left out and listed in .refused with the reason and its kind (see
        the class)."""
        soc = check_product(product)
        out = Recording(planned_for=soc.soc)
        out.missing = Counter(self.missing)
        out.meta_left_out = self.meta_left_out
        for i, label, (plan, details) in zip(list(self.numbers), list(self.sections), list(self.launches)):
            if soc.product not in PRODUCTS_OF[plan.op]:
                out.refused.append((i, plan.op, f"{plan.op} does not run on {soc.product}", "absent"))
                continue
            try:
                planned = PLANNERS[plan.op](product=soc.soc, **_call_args(plan))
                if plan.op == "npu_quant_matmul":      # what the face told of the weight: its tiling may refuse it
                    check_weight_format(planned, details.get("x2_format", "ND"))
                out.launches.append((planned, details))
                out.numbers.append(i)
                out.sections.append(label)
            except (ValueError, TypeError) as exc:       # AclnnError is a ValueError: the product's own rules
                kind = "not emulated" if getattr(exc, "not_emulated", False) else "refused"
                why = str(exc).splitlines()[0]
                out.refused.append((i, plan.op, why if len(why) <= 300 else why[:299] + "…", kind))
        return out

    def _distinct(self, calibration, l2) -> tuple[list, list]:
        """(the index of each launch's distinct launch, each distinct launch's (plan, details, Prediction)),
        each distinct launch predicted once."""
        index: dict = {}
        which, distinct = [], []
        for plan, details in list(self.launches):
            key = _key(plan, details)
            if key not in index:
                index[key] = len(distinct)
                distinct.append((plan, details, predict_plan(plan, calibration=calibration, l2=l2, **details)))
            which.append(index[key])
        return which, distinct

    def _launch_predictions(self, calibration, l2) -> list:
        """(plan, details, Prediction) of each launch, in order."""
        which, distinct = self._distinct(calibration, l2)
        return [distinct[i] for i in which]

    def predictions(self, *, calibration=None, l2: str = "cold") -> list:
        """A perfmodel Prediction per launch, in order (each distinct launch is predicted once)."""
        return [p for _plan, _details, p in self._launch_predictions(calibration, l2)]

    def table(self, *, calibration=None, l2: str = "cold", include_refused: bool = False) -> pd.DataFrame:
        """One row per launch (TABLE_COLUMNS): launch (its number in the run: 0, 1, ...), source ('recorded', or
        'planned' by on()), op, product, soc, kernel, kernels (each kernel the operator launches with its time,
        e.g. a quant matmul's TransQuantParamV2), call (inputs, the outputs' dtypes, the plan's attributes),
        details (what the face told, e.g. x2_format=NZ) and the prediction: latency, bound, head, pipes, bytes,
        rates; notes: the plan's own (the tiling it follows, what it does not model, e.g. why a decode runs on 3
        of 32 cores). include_refused: also a row for each launch of the run this product refused, its kind and reason
        in 'refused'."""
        source = "recorded" if self.planned_for is None else "planned"
        rows = []
        for i, label, (plan, details, p) in zip(list(self.numbers), list(self.sections),
                                                self._launch_predictions(calibration, l2)):
            row = {k: v for k, v in p.to_row().items() if not k.startswith("tile_")}
            rows.append({**row, "launch": i, "section": label, "source": source, "kernel": plan.kernel, "call": _call_text(plan),
                         "kernels": " + ".join(f"{name} {us:.2f}" for name, us in p.kernels),
                         "details": ", ".join(f"{k}={v}" for k, v in sorted(details.items())),
                         "notes": plan.notes, "refused": ""})
        if include_refused and self.refused:
            soc = check_product(self.planned_for)
            rows += [{"launch": i, "source": source, "op": op, "product": soc.product, "soc": soc.soc,
                      "refused": f"{kind}: {why}"} for i, op, why, kind in self.refused]
            rows.sort(key=lambda r: r["launch"])
        df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
        for col in ("tiling_key", "block_dim"):         # integers, also beside a refused row's blank
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
        return df

    def total_us(self, *, calibration=None, l2: str = "cold") -> float:
        """The launches' predicted latencies added up (each launch alone; see report()). A warning says when it
        leaves launches out: those this product refused (on()), and operators npusim does not emulate."""
        left_out = [f"{len(self.refused)} launch{'' if len(self.refused) == 1 else 'es'} {self.planned_for} "
                    f"cannot run (.refused)"] if self.refused else []
        if self.missing:
            left_out.append(f"the operators npusim does not emulate ({', '.join(sorted(self.missing))})")
        if left_out:
            warnings.warn(f"total_us() leaves out {' and '.join(left_out)}", stacklevel=2)
        return float(sum(p.latency_us for p in self.predictions(calibration=calibration, l2=l2)))

    def summary(self, *, calibration=None, l2: str = "cold") -> pd.DataFrame:
        """One row per distinct launch (all it is predicted from: operator, SoC, plan, tensors, attributes, the
        face's details), the costliest first (SUMMARY_COLUMNS): calls, us_each, us_total, share_pct of its
        SoC's total (in its section), bound. kernel names every kernel the launch runs
        ('QuantBatchMatmulV3+TransQuantParamV2'); section: the section() the launches were made in ('' outside
        one; a launch made in two sections is a row in each)."""
        which, distinct = self._distinct(calibration, l2)
        if not distinct:
            return pd.DataFrame(columns=SUMMARY_COLUMNS)
        calls: Counter = Counter(zip(list(self.sections), which))     # (section, distinct launch) -> calls
        rows = []
        for (label, i), n in calls.items():
            plan, details, p = distinct[i]
            tag = ", ".join(f"{k}={v}" for k, v in sorted(details.items()))
            rows.append({"section": label, "op": plan.op, "product": plan.soc.product, "soc": plan.soc.soc,
                         "kernel": "+".join(name for name, _ in p.kernels) or plan.kernel,
                         "tiling_key": plan.tiling_key, "block_dim": p.block_dim,
                         "call": f"{_call_text(plan)} [{tag}]" if tag else _call_text(plan), "calls": n,
                         "us_each": p.latency_us, "us_total": n * p.latency_us, "bound": p.bound})
        s = pd.DataFrame(rows)
        per_soc = s.groupby(["section", "soc"])["us_total"].transform("sum")    # the SoC: what a planner chose
        s["share_pct"] = (100.0 * s["us_total"] / per_soc).where(per_soc > 0, 0.0)
        return s.sort_values("us_total", ascending=False, kind="stable")[SUMMARY_COLUMNS].reset_index(drop=True)

    def _refused_lines(self) -> list[str]:
        """The refused launches, one line per operator, kind and reason, with their numbers."""
        groups: dict = {}
        for i, op, why, kind in self.refused:
            groups.setdefault((op, kind, why), []).append(i)
        if not groups:
            return []
        lines = [f"{len(self.refused)} of the run's launches not planned for {self.planned_for}:"]
        for (op, kind, why), numbers in groups.items():
            n = len(numbers)
            lines.append(f"  {op}, {n} launch{'' if n == 1 else 'es'} ({_numbers_text(numbers)}): "
                         f"{_KIND_TEXT[kind]}: {why}")
        return lines

    def _missing_lines(self) -> list[str]:
        if not self.missing:
            return []
        names = ", ".join(f"{name} x{n}" for name, n in sorted(self.missing.items(), key=lambda kv: (-kv[1], kv[0])))
        return [f"operators the run asked for that npusim does not emulate (what ran instead is not in the total): "
                f"{names}"]

    def _meta_lines(self) -> list[str]:
        n = self.meta_left_out
        return [f"{n} call{'' if n == 1 else 's'} on meta tensors not recorded (shapes only, nothing computed): "
                "perfmodel.record(meta=True) or `npusim record --meta` records them"] if n else []

    def report(self, *, calibration=None, l2: str = "cold") -> str:
        """The summary as text, then the total on each SoC (shares are of their SoC's total), the L2 setting
        and the calibration used, and what is not in the totals: launches this product refused (on()), and the
        operators the run asked for that npusim does not emulate."""
        s = self.summary(calibration=calibration, l2=l2)
        refused, missing = self._refused_lines(), self._missing_lines()
        if s.empty:
            head = "no launches recorded" if self.planned_for is None else f"no launch planned for {self.planned_for}"
            return "\n".join([head, *refused, *missing, *self._meta_lines()])
        shown = s.assign(us_each=s["us_each"].map("{:.2f}".format), us_total=s["us_total"].map("{:.2f}".format),
                         share_pct=s["share_pct"].map("{:.1f}".format))
        sectioned = bool((s["section"] != "").any())
        if not sectioned:
            shown = shown.drop(columns="section")
        lines = _aligned(shown, left=("section", "op", "product", "soc", "kernel", "call", "bound"))
        left_out = f" (the run's other {len(self.refused)} not planned here, below: not counted)" if self.refused \
            else ""
        for (label, soc, product), part in s.groupby(["section", "soc", "product"], sort=False):
            n = int(part["calls"].sum())
            where = f" in section {label!r}" if label else (" outside any section" if sectioned else "")
            lines.append(f"{n} launch{'' if n == 1 else 'es'} on {product} ({soc}){where}: "
                         f"{part['us_total'].sum():.2f} us predicted in all{left_out}")
        inputs = ("from HBM (l2='cold')" if l2 == "cold" else
                  "from L2 where they fit (l2='warm'; weights too, which only a prefetch gives a real model step)")
        lines.append(f"(npusim's operators only; each launch's device time alone, added up: no overlap between "
                     f"launches, no host time; inputs read {inputs}; "
                     f"{'the given' if calibration is not None else 'the packaged'} calibration)")
        return "\n".join(lines + refused + missing + self._meta_lines())


_KIND_TEXT = {"absent": "its operator is not on this product", "refused": "this product's rules refuse the call",
              "not emulated": "the NPU may run it; npusim does not model it"}


def _numbers_text(numbers: list) -> str:
    """'0-3, 7, 9-12': launch numbers as ranges."""
    runs, start = [], None
    for a, b in zip(numbers, numbers[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = None
    return ", ".join(runs)


def _aligned(df: pd.DataFrame, left) -> list[str]:
    """The table as lines of text: the `left` columns flush left (names, the call), the others right."""
    cols = list(df.columns)
    cells = [[str(v) for v in df[c]] for c in cols]
    widths = [max(len(c), *map(len, col)) for c, col in zip(cols, cells)]

    def line(values):
        return "  ".join(v.ljust(w) if c in left else v.rjust(w) for v, w, c in zip(values, widths, cols)).rstrip()
    return [line(cols)] + [line([col[r] for col in cells]) for r in range(len(df))]


@contextmanager
def record(meta: bool = False):
    """Record every kernel launch npusim makes while the block runs (any face, any thread of this process);
    yields the Recording, whose predictions are made when asked for (report(), summary(), table(),
    total_us()).

    meta: also record the torch face's calls on meta tensors (device='meta', inside install()), which it plans
    from their shapes and dtypes without computing: a model's launches at any size in no time. torch.compile's
    tracing (fake tensors) is never recorded: the compiled graph's calls are, when it runs."""
    rec = Recording()
    with launch_hook(rec._add, missing=rec._asked, meta=rec._add if meta else rec._meta_left_out):
        yield rec
