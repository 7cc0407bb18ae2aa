"""Sweeps: predicted latency over a grid of operators, products, token counts, hidden sizes and dtypes.

A grid point names an LLM-shaped call: `tokens` rows of activations of width `hidden`, in the model's
floating dtype `dtype`; `build_args` turns it into the operator's `perfmodel.predict` arguments
(TensorSpecs, no data), and every row records the operator's own input and output dtypes:

* npu_dynamic_quant / _asymmetric: x [tokens, hidden] dtype -> int8 y and per-token scales.
* indexer_compress_epilog: x [tokens, d] -> float8_e4m3fn cache, float32 scale [tokens, d / 128] (quant_mode 1),
  slot_mapping [tokens]; d is `hidden` when the sweep names hidden sizes, else the doc's 4096.
* fake_quantize_per_channel_affine_cachemask: x [tokens, hidden], per-channel scale/zero_point on
  axis 1, int8 range; output in x's dtype.
* npu_quant_matmul: x1 [tokens, hidden] int8 @ x2 [hidden, n] int8 -> `dtype` output, with one of two
  epilogues: 'pertoken' (the W8A8 dynamic-quant path: float32 per-channel scale [n] times the
  per-token scale [tokens] that npu_dynamic_quant produced, vector epilogue) or 'fixpipe' (static
  W8A8: int64 per-channel scale from npu_trans_quant_param, dequantized in the cube's fixpipe; fp16
  output on A2/A3, fp16 or bf16 on Ascend 950).
* moe_init_routing_quant: x [tokens, hidden], top-`topk` routing, active_num = tokens -> int8.
* elementwise add, maximum (x, y), sqrt, sigmoid, gelu (x): [tokens, hidden]; matmul: a [tokens, hidden] @
  b [hidden, n]; grouped_matmul: x [tokens, hidden] @ weight [8, hidden, n], the tokens split as evenly as
  they go over GROUPED_MATMUL_EXPERTS = 8 groups (an MoE layer's expert matmul after routing).

`weight_format` ('ND', the default; 'ND-T', the transpose of a row-major [n, k] weight, w.T; or 'NZ': the
weight cast to FRACTAL_NZ first, as vllm-ascend's static W8A8 method does) applies to npu_quant_matmul's x2
and grouped_matmul's weight.

`n` applies to the matmuls only, `topk` to MoE routing, `epilogue` to npu_quant_matmul and
`weight_format` to npu_quant_matmul and grouped_matmul: other rows leave them blank. By default every
product that runs an operator is swept in bfloat16 and float16 (W8A8 inference runs bf16 activations), as
far as the operator supports each on that product. A point the model cannot cost (e.g. a dtype you asked
for that the product does not support) is kept as a 'skipped' row with the reason: a sweep never stops on
one bad point. Bad axis values (unknown operators, products, dtypes, epilogues, weight formats;
non-positive or non-integer sizes) raise ValueError naming the value and the choices, before anything runs.
"""
from __future__ import annotations

import functools
import itertools
import sys
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from npusim.formats import as_dtype, dtype_name
from npusim.plan import TensorSpec
from perfmodel.calibration import load_calibration
from perfmodel.ops import ELEMENTWISE, WEIGHT_FORMAT_OPTIONS, even_group_list
from perfmodel.predict import check_l2, check_operator, check_product, did_you_mean, supported_products
from perfmodel.published import FITTED_TRUST, measured_coverage
from perfmodel.rows import ROW_COLUMNS, predict_rows

__all__ = ["OPERATORS", "EXTRA_OPERATORS", "DEFAULT_TOKENS", "DEFAULT_DTYPES", "DTYPES", "EPILOGUES",
           "WEIGHT_FORMATS", "AXES",
           "Point", "build_args", "io_dtypes", "grid", "supported_dtypes", "load_config", "run_sweep",
           "SWEEP_COLUMNS", "Progress"]

# The five operators of the project (the default sweep); the generic kernels are available on request.
OPERATORS = ("npu_dynamic_quant", "npu_dynamic_quant_asymmetric", "indexer_compress_epilog",
             "fake_quantize_per_channel_affine_cachemask", "npu_quant_matmul", "moe_init_routing_quant")
EXTRA_OPERATORS = (*ELEMENTWISE, "matmul", "grouped_matmul")
DEFAULT_TOKENS = tuple(2 ** i for i in range(15))        # 1, 2, 4, ..., 16384
DEFAULT_HIDDEN = 7168          # DeepSeek-V3 model width
DEFAULT_N = 4096
DEFAULT_TOPK = 8
DTYPES = ("bfloat16", "float16", "float32")            # model dtypes a sweep may ask for
DEFAULT_DTYPES = ("bfloat16", "float16")
EPILOGUES = {"pertoken": "float32 per-channel scale x per-token scale, vector epilogue (W8A8 dynamic)",
             "fixpipe": "int64 per-channel scale dequantized in the fixpipe (static W8A8; fp16 output, also bf16 "
                        "on 950)"}
# how the matmuls' weight is stored in GM (perfmodel.predict's x2_format / weight_format)
WEIGHT_FORMATS = {"ND": "row-major, as the weight is loaded (default; every measured row)",
                  "ND-T": "the transpose of a row-major [n, k] weight (w.T, as LinearA8W8Quant passes it; "
                          "grouped_matmul's transpose_weight): Ascend 950's quant matmul tiling depends on it",
                  "NZ": "cast to FRACTAL_NZ first (npu_format_cast(w, 29)): copied into L1 as it lies, no ND->NZ"}
_NAMED_CHOICES = {"epilogues": ("epilogue", EPILOGUES), "weight_formats": ("weight format", WEIGHT_FORMATS)}
INDEXER_D = 4096               # indexer_compress_epilog's d unless hidden sizes are given: the doc's (seed 001)
MAX_DIM = 2 ** 31 - 1          # sizes beyond int32 are not LLM shapes (and overflow the vendor tiling data)
_MATMULS = ("npu_quant_matmul", "matmul", "grouped_matmul")
GROUPED_MATMUL_EXPERTS = 8


@dataclass(frozen=True)
class Point:
    op: str
    product: str
    tokens: int
    hidden: int = DEFAULT_HIDDEN
    dtype: str = "float16"
    n: int | None = DEFAULT_N              # matmuls only (None elsewhere)
    topk: int | None = DEFAULT_TOPK        # moe_init_routing_quant only
    epilogue: str | None = None            # npu_quant_matmul only; None: pertoken for bfloat16, else fixpipe
    weight_format: str | None = None       # npu_quant_matmul and grouped_matmul only; None: ND


def _epilogue(p: Point) -> str:
    return p.epilogue or ("pertoken" if p.dtype == "bfloat16" else "fixpipe")


def build_args(p: Point) -> dict:
    """perfmodel.predict keyword arguments for a grid point (see the module docstring)."""
    t, h, dt = p.tokens, p.hidden, p.dtype
    if p.op in ("npu_dynamic_quant", "npu_dynamic_quant_asymmetric"):
        return {"x": TensorSpec((t, h), dt), "dst_type": "int8"}
    if p.op == "indexer_compress_epilog":
        d = h
        return {"indexer_compress_cache": TensorSpec((t, d), "float8_e4m3fn"),
                "indexer_compress_scale": TensorSpec((t, d // 128), "float32"),
                "x": TensorSpec((t, d), dt), "slot_mapping": TensorSpec((t,), "int32"),
                "quant_mode": 1, "round_scale": True}
    if p.op == "fake_quantize_per_channel_affine_cachemask":
        return {"x": TensorSpec((t, h), dt), "scale": TensorSpec((h,), dt),
                "zero_point": TensorSpec((h,), "int32"), "axis": 1, "quant_min": -128, "quant_max": 127}
    n = DEFAULT_N if p.n is None else p.n
    if p.op == "npu_quant_matmul":
        args = {"x1": TensorSpec((t, h), "int8"), "x2": TensorSpec((h, n), "int8")}
        if _epilogue(p) == "pertoken":
            args.update(scale=TensorSpec((n,), "float32"), pertoken_scale=TensorSpec((t,), "float32"))
        else:
            args.update(scale=TensorSpec((n,), "int64"))
        args["output_dtype"] = dt
        return _with_weight_format(args, p)
    if p.op == "moe_init_routing_quant":
        k = DEFAULT_TOPK if p.topk is None else p.topk
        return {"x": TensorSpec((t, h), dt), "row_idx": TensorSpec((t, k), "int32"),
                "expert_idx": TensorSpec((t, k), "int32"), "active_num": t, "scale": 1.0, "offset": 0.0}
    if p.op in ELEMENTWISE:             # add, maximum (x, y); sqrt, sigmoid, gelu (x)
        xs = {"x": TensorSpec((t, h), dt)}
        return {**xs, "y": TensorSpec((t, h), dt)} if ELEMENTWISE[p.op][0] == 2 else xs
    if p.op == "matmul":
        return {"a": TensorSpec((t, h), dt), "b": TensorSpec((h, n), dt)}
    if p.op == "grouped_matmul":
        e = GROUPED_MATMUL_EXPERTS
        return _with_weight_format({"x": TensorSpec((t, h), dt), "weight": TensorSpec((e, h, n), dt),
                                    "group_list": even_group_list(t, e)}, p)
    raise ValueError(f"unknown operator {p.op!r}; known: {', '.join(OPERATORS + EXTRA_OPERATORS)}")


def _with_weight_format(args: dict, p: Point) -> dict:
    if p.weight_format == "ND-T":                   # the emulator's own arguments for a transposed weight
        if p.op == "npu_quant_matmul":
            args["x2"] = TensorSpec(args["x2"].shape, args["x2"].dtype, transposed=True)
        else:
            e, k, n = args["weight"].shape
            args.update(weight=TensorSpec((e, n, k), args["weight"].dtype), transpose_weight=True)
    elif p.weight_format not in (None, "ND"):       # ND is the model's default: the arguments stay the emulator's
        args[WEIGHT_FORMAT_OPTIONS[p.op][1]] = p.weight_format
    return args


def io_dtypes(p: Point) -> tuple[str, str]:
    """(input dtype, output dtype) of the operator's data tensors at a grid point (x -> y; x1 -> out)."""
    out = {"npu_dynamic_quant": "int8", "npu_dynamic_quant_asymmetric": "int8", "moe_init_routing_quant": "int8",
           "indexer_compress_epilog": "float8_e4m3fn"}.get(p.op, p.dtype)
    return ("int8" if p.op == "npu_quant_matmul" else p.dtype), out


# -- validation of the axes ------------------------------------------------------------------------------

AXES = ("ops", "products", "tokens", "hidden", "dtypes", "n", "topk", "epilogues", "weight_formats")


def _as_list(v):
    if v is None:
        return None
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _sizes(key, values) -> list[int]:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_DIM:
            raise ValueError(f"{key}: values must be integers in [1, {MAX_DIM}], got {v!r}"[:300])
    return [int(v) for v in values]


def _names(key, values) -> list[str]:
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"{key}: values must be names (strings), got {v!r}"[:300])
    return list(values)


def _dtype(v: str) -> str:
    try:
        name = dtype_name(as_dtype(v))
    except (TypeError, ValueError):
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtypes: unknown or unsupported dtype {v!r};{did_you_mean(v, DTYPES)} "
                         f"sweep dtypes: {', '.join(DTYPES)} (bf16, fp16, fp32 accepted)")
    return name


def _check_axis(key: str, value):
    """The axis as a validated list (names normalised: dtype aliases, nothing else changed), or None."""
    values = _as_list(value)
    if values is None:
        return None
    if not values:
        raise ValueError(f"{key}: empty list (leave the key out for the default)")
    if key in ("tokens", "hidden", "n", "topk"):
        return _sizes(key, values)
    values = _names(key, values)
    if key == "ops":
        return [check_operator(v) for v in values]
    if key == "products":
        for v in values:
            check_product(v)
        return values
    if key == "dtypes":
        return [_dtype(v) for v in values]
    if key in _NAMED_CHOICES:
        what, choices = _NAMED_CHOICES[key]
        for v in values:
            if v not in choices:
                raise ValueError(f"{key}: unknown {what} {v!r};{did_you_mean(v, choices)} "
                                 f"{key.replace('_', ' ')}: {', '.join(choices)}")
        return values
    raise ValueError(f"unknown sweep axis {key!r};{did_you_mean(key, AXES)} axes: {', '.join(AXES)}")


@functools.lru_cache(maxsize=None)
def _runs(op: str, product: str, dtype: str, epilogue: str | None) -> bool:
    """Whether the model costs `op` on `product` in this dtype (and epilogue): one small probe point."""
    p = Point(op, product, 16, DEFAULT_HIDDEN, dtype, DEFAULT_N, DEFAULT_TOPK, epilogue)
    return predict_rows(op, product, [build_args(p)])[0]["status"] == "ok"


def supported_dtypes(op: str, product: str) -> list[str]:
    """The sweep dtypes (of DTYPES) in which perfmodel costs `op` on `product`."""
    return [dt for dt in DTYPES if any(_runs(op, product, dt, e) for e in _epilogues_of(op))]


def _epilogues_of(op):
    return tuple(EPILOGUES) if op == "npu_quant_matmul" else (None,)


def grid(ops=None, products=None, tokens=None, hidden=None, dtypes=None, n=None, topk=None, epilogues=None,
         weight_formats=None, overrides: dict | None = None) -> list[Point]:
    """Every combination of the given axes. Defaults: the five operators; every product that runs each;
    DEFAULT_TOKENS; DEFAULT_HIDDEN; DEFAULT_DTYPES and both epilogues, as far as the operator supports them
    on the product; DEFAULT_N; DEFAULT_TOPK; ND weights. Values you give are taken as they are (unsupported
    ones become skipped rows with the reason). overrides: {op: {axis: values}} replaces axes for one operator (TOML
    [op.<name>] tables). Raises ValueError on bad axis values (see the module docstring)."""
    base = {k: _check_axis(k, v) for k, v in (("products", products), ("tokens", tokens), ("hidden", hidden),
                                                ("dtypes", dtypes), ("n", n), ("topk", topk),
                                                ("epilogues", epilogues), ("weight_formats", weight_formats))}
    op_list = _check_axis("ops", ops) or list(OPERATORS)
    overrides = _check_overrides(overrides)
    for op in overrides:
        if op not in op_list:
            raise ValueError(f"[op.{op}]: {op} is not among the swept operators ({', '.join(op_list)})")
    points = []
    for op in op_list:
        axes = {**base, **overrides.get(op, {})}
        prods = axes["products"] or supported_products(op)
        # axes an operator does not have stay blank (None): one point, no duplicate rows
        ns = (axes["n"] or [DEFAULT_N]) if op in _MATMULS else [None]
        ks = (axes["topk"] or [DEFAULT_TOPK]) if op == "moe_init_routing_quant" else [None]
        ws = (axes["weight_formats"] or ["ND"]) if op in WEIGHT_FORMAT_OPTIONS else [None]
        hs = axes["hidden"] or [INDEXER_D if op == "indexer_compress_epilog" else DEFAULT_HIDDEN]
        for prod in prods:
            combos = _combos(op, prod, axes["dtypes"], axes["epilogues"])
            for t, h, (dt, e), nn, k, w in itertools.product(axes["tokens"] or DEFAULT_TOKENS, hs, combos, ns, ks,
                                                                ws):
                points.append(Point(op, prod, t, h, dt, nn, k, e, w))
    return points


def _combos(op, product, dtypes, epilogues) -> list[tuple]:
    """(dtype, epilogue) pairs of one operator on one product: the values given, and of a defaulted axis
    only those the operator supports there (the first one when none is supported, so its rows say why)."""
    options = _epilogues_of(op)
    pairs = []
    for dt in dtypes or DEFAULT_DTYPES:
        if op == "npu_quant_matmul" and epilogues:
            pairs += [(dt, e) for e in epilogues]
        else:
            pairs += [(dt, e) for e in options if _runs(op, product, dt, e)] or [(dt, options[0])]
    if not dtypes:
        pairs = [c for c in pairs if _runs(op, product, *c)] or pairs[:1]
    return pairs


def _check_overrides(overrides) -> dict:
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise ValueError(f"[op] must hold [op.<operator>] tables, got {type(overrides).__name__} {overrides!r}"[:300])
    out = {}
    for op, table in overrides.items():
        check_operator(op)
        if not isinstance(table, dict):
            raise ValueError(f"[op.{op}] must be a table of axes, got {type(table).__name__}")
        out[op] = {}
        for k, v in table.items():
            if k not in AXES or k == "ops":
                raise ValueError(f"[op.{op}]: unknown key {k!r};{did_you_mean(k, AXES[1:])} "
                                 f"keys: {', '.join(AXES[1:])}")
            out[op][k] = _check_axis(k, v)
    return out


_CONFIG_KEYS = AXES + ("calibration", "l2", "op")


def load_config(path) -> dict:
    """Read and validate a sweep TOML file: top-level axes (AXES), calibration (a path, relative to the config
    file), l2 ('cold' or 'warm'), and optional [op.<name>] tables overriding axes for one operator. Raises ValueError naming the file
    and the key."""
    try:
        with open(path, "rb") as fh:
            cfg = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    for k in cfg:
        if k not in _CONFIG_KEYS:
            raise ValueError(f"{path}: unknown key {k!r};{did_you_mean(k, _CONFIG_KEYS)} "
                             f"keys: {', '.join(_CONFIG_KEYS)}")
    try:
        out = {k: _check_axis(k, cfg[k]) for k in AXES if k in cfg}
        out["overrides"] = _check_overrides(cfg.get("op"))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if "l2" in cfg:
        try:
            check_l2(cfg["l2"])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}"[:300]) from None
        out["l2"] = cfg["l2"]
    if "calibration" in cfg:
        if not isinstance(cfg["calibration"], str):
            raise ValueError(f"{path}: calibration must be a path (string), got {cfg['calibration']!r}"[:300])
        cal = Path(path).parent / cfg["calibration"]         # relative to the config file
        if not cal.is_file():
            raise ValueError(f"{path}: calibration: {cal}: no such file")
        out["calibration"] = str(cal)
    return out


# how far to trust a point: the packaged calibration set's timings of its operator on its SoC, fitted and held out
COVERAGE_COLUMNS = ["fitted_rows", "held_out_rows"]
SWEEP_COLUMNS = (list(Point.__dataclass_fields__) + ["in_dtype", "out_dtype"] + ROW_COLUMNS + ["kernels", "variant"]
                 + COVERAGE_COLUMNS + ["l2"])


@functools.cache
def _coverage(op: str, soc: str) -> dict:
    n = measured_coverage(op, soc)
    return {"fitted_rows": n[FITTED_TRUST], "held_out_rows": n["holdout"]}


class Progress:
    """A plain-text progress bar on stderr (a redrawn line on a terminal, a line per 10% otherwise).
    It stays quiet for the first `after_s` seconds: a sweep that ends sooner needs no bar."""

    def __init__(self, total: int, label: str = "sweep", stream=None, enabled: bool = True, after_s: float = 1.0):
        self.total, self.label, self.done, self.after_s = total, label, 0, after_s
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_decile = -1

    def step(self, what: str = ""):
        self.done += 1
        if not self.enabled or time.monotonic() - self.t0 < self.after_s:
            return
        frac = self.done / self.total
        if self.tty:
            bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
            self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {what[:40]:<40}")
            if self.done == self.total:
                self.stream.write(f"\n{self.label}: {self.total} points in {time.monotonic() - self.t0:.1f} s\n")
        elif int(10 * frac) > self._last_decile or self.done == self.total:
            self._last_decile = int(10 * frac)
            self.stream.write(f"{self.label}: {self.done}/{self.total} ({100 * frac:.0f}%)"
                              f" {time.monotonic() - self.t0:.1f} s\n")
        self.stream.flush()


def run_sweep(points, calibration=None, progress: bool | None = None, l2: str = "cold") -> pd.DataFrame:
    """Predict every point. Columns (SWEEP_COLUMNS): the Point fields, in_dtype, out_dtype, status, reason,
    soc, latency_us, head_us, core_us, chip_us, bound, bytes_read, bytes_written, flops, block_dim, tiling_key,
    achieved_GBps, achieved_TOPS, pipe_<pipe>_us, kernels (each kernel launched and its time), variant (the
    kernel variant the plan or the cost model names, e.g. how the quant matmul copies its weight), fitted_rows and
    held_out_rows (the packaged calibration set's timings of the operator on that SoC: fitted, and kept out of the
    fit as checks; 0 and 0: no measurement behind the point) and l2 (inputs from HBM, 'cold', as the profilers
    measure, or from L2 where they fit, 'warm': named in the CSV, as a warm and a cold sweep are otherwise alike).
    progress: None = show a bar when there are 50 points or more."""
    check_l2(l2)
    points = list(points)
    calibration = load_calibration(calibration)
    bar = Progress(len(points), enabled=(len(points) >= 50) if progress is None else progress)
    rows: list = [None] * len(points)
    groups: dict = {}               # (op, product) -> [(index, args)]: one predict_many call per group
    for i, p in enumerate(points):
        try:
            groups.setdefault((p.op, p.product), []).append((i, build_args(p)))
        except ValueError as exc:
            rows[i] = {"status": "skipped", "reason": str(exc)}
            bar.step(f"{p.op} {p.product} {p.tokens}")
    chunk = 2048                    # progress granularity; predict_many amortises over a chunk
    for (op, product), items in groups.items():
        for s0 in range(0, len(items), chunk):
            part = items[s0:s0 + chunk]
            for (i, _), row in zip(part, predict_rows(op, product, [a for _, a in part], calibration, l2)):
                rows[i] = row
            for i, _ in part:
                bar.step(f"{op} {product} {points[i].tokens}")
    for p, row in zip(points, rows):
        if row.get("status") == "ok":
            row.update(_coverage(p.op, row["soc"]))
        if row.get("kernels"):              # the kernels launched, as `npusim predict` prints them
            row["kernels"] = "; ".join(f"{k} {t:.4g} us" for k, t in row["kernels"])
        # a quant matmul's scale is the sweep's, built for its epilogue: say so
        if row.get("status") == "skipped" and p.op == "npu_quant_matmul":
            e = _epilogue(p)
            row["reason"] = f"{e} epilogue, {EPILOGUES[e]}: {row['reason']}"
    rows = [{**asdict(p), **dict(zip(("in_dtype", "out_dtype"), io_dtypes(p))), **row, "l2": l2}
            for p, row in zip(points, rows)]
    df = pd.DataFrame(rows).reindex(columns=SWEEP_COLUMNS)
    for c in ("n", "topk", *COVERAGE_COLUMNS):     # blank where the axis does not apply, integers elsewhere
        df[c] = df[c].astype("Int64")
    return df
