"""Sweeps: predicted latency over a grid of operators, products, token counts, hidden sizes and dtypes.

A grid point names an LLM-shaped call: `tokens` rows of activations of width `hidden` in `dtype`;
`build_args` turns it into the operator's `perfmodel.predict` arguments (TensorSpecs, no data):

* npu_dynamic_quant / _asymmetric: x [tokens, hidden], int8 output.
* indexer_compress_epilog: x [tokens, 4096] (d is fixed to 4096 by the op), float8_e4m3fn cache,
  float32 scale [tokens, 32] (quant_mode 1), slot_mapping [tokens].
* fake_quantize_per_channel_affine_cachemask: x [tokens, hidden], per-channel scale/zero_point on
  axis 1, int8 range.
* npu_quant_matmul: x1 [tokens, hidden] int8, x2 [hidden, n] int8; fp16 output with an int64
  (npu_trans_quant_param) per-channel scale, or for bf16 a float32 per-channel scale with a
  per-token scale (the W8A8 dynamic-quant pattern).
* moe_init_routing_quant: x [tokens, hidden], top-`topk` routing, active_num = tokens.
* add: x + y, [tokens, hidden]; matmul: a [tokens, hidden] @ b [hidden, n].

A point the model cannot cost (operator not supported on the product, planner missing, dtype
not allowed) is kept as a 'skipped' row with the reason: a sweep never stops on one bad point.
"""
from __future__ import annotations

import itertools
import math
import sys
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from npusim.plan import TensorSpec
from npusim.products import PRODUCTS
from perfmodel.profiles import PIPES

__all__ = ["OPERATORS", "DEFAULT_TOKENS", "Point", "build_args", "grid", "load_config", "run_sweep",
           "predict_row", "predict_rows", "supported_products", "load_calibration", "Progress"]

# The five operators of the project (the default sweep); 'add' and 'matmul' are available on request.
OPERATORS = ("npu_dynamic_quant", "npu_dynamic_quant_asymmetric", "indexer_compress_epilog",
             "fake_quantize_per_channel_affine_cachemask", "npu_quant_matmul", "moe_init_routing_quant")
EXTRA_OPERATORS = ("add", "matmul")
DEFAULT_TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384)
DEFAULT_HIDDEN = 7168          # DeepSeek-V3 model width
DEFAULT_N = 4096
DEFAULT_TOPK = 8
DEFAULT_DTYPE = "float16"      # the one activation dtype every product supports for all five operators
INDEXER_D = 4096               # indexer_compress_epilog: d fixed to 4096 (seed 001 constraints)


@dataclass(frozen=True)
class Point:
    op: str
    product: str
    tokens: int
    hidden: int = DEFAULT_HIDDEN
    dtype: str = DEFAULT_DTYPE
    n: int = DEFAULT_N
    topk: int = DEFAULT_TOPK


def build_args(p: Point) -> dict:
    """perfmodel.predict keyword arguments for a grid point (see the module docstring)."""
    t, h, dt = p.tokens, p.hidden, p.dtype
    if p.op in ("npu_dynamic_quant", "npu_dynamic_quant_asymmetric"):
        return {"x": TensorSpec((t, h), dt), "dst_type": "int8"}
    if p.op == "indexer_compress_epilog":
        d = INDEXER_D
        return {"indexer_compress_cache": TensorSpec((t, d), "float8_e4m3fn"),
                "indexer_compress_scale": TensorSpec((t, d // 128), "float32"),
                "x": TensorSpec((t, d), dt), "slot_mapping": TensorSpec((t,), "int32"),
                "quant_mode": 1, "round_scale": True}
    if p.op == "fake_quantize_per_channel_affine_cachemask":
        return {"x": TensorSpec((t, h), dt), "scale": TensorSpec((h,), dt),
                "zero_point": TensorSpec((h,), "int32"), "axis": 1, "quant_min": -128, "quant_max": 127}
    if p.op == "npu_quant_matmul":
        args = {"x1": TensorSpec((t, h), "int8"), "x2": TensorSpec((h, p.n), "int8")}
        if dt == "bfloat16":
            args.update(scale=TensorSpec((p.n,), "float32"), pertoken_scale=TensorSpec((t,), "float32"))
        else:
            args.update(scale=TensorSpec((p.n,), "int64"))
        args["output_dtype"] = dt
        return args
    if p.op == "moe_init_routing_quant":
        return {"x": TensorSpec((t, h), dt), "row_idx": TensorSpec((t, p.topk), "int32"),
                "expert_idx": TensorSpec((t, p.topk), "int32"), "active_num": t, "scale": 1.0, "offset": 0.0}
    if p.op == "add":
        return {"x": TensorSpec((t, h), dt), "y": TensorSpec((t, h), dt)}
    if p.op == "matmul":
        return {"a": TensorSpec((t, h), dt), "b": TensorSpec((h, p.n), dt)}
    raise ValueError(f"unknown operator {p.op!r}; known: {', '.join(OPERATORS + EXTRA_OPERATORS)}")


def supported_products(op: str) -> list[str]:
    """Products perfmodel supports for op (every product when perfmodel cannot say)."""
    import perfmodel
    fn = getattr(perfmodel, "supported_products", None)
    if fn is not None:
        try:
            return list(fn(op))
        except Exception:       # noqa: BLE001 -- an op perfmodel does not know: let predict report it
            pass
    return list(PRODUCTS)


def _as_list(v):
    if v is None:
        return None
    return list(v) if isinstance(v, (list, tuple)) else [v]


def grid(ops=None, products=None, tokens=None, hidden=None, dtypes=None, n=None, topk=None,
         overrides: dict | None = None) -> list[Point]:
    """Every combination of the given axes (defaults: the five operators, every product that
    supports each, DEFAULT_TOKENS, DEFAULT_HIDDEN, float16, DEFAULT_N, DEFAULT_TOPK).
    overrides: {op: {axis: values}} replaces axes for one operator (TOML [op.<name>] tables)."""
    points = []
    for op in _as_list(ops) or list(OPERATORS):
        axes = {"products": products, "tokens": tokens, "hidden": hidden, "dtypes": dtypes, "n": n, "topk": topk}
        for k, v in ((overrides or {}).get(op) or {}).items():
            if k not in axes:
                raise ValueError(f"[op.{op}]: unknown key {k!r}; known: {sorted(axes)}")
            axes[k] = v
        prods = _as_list(axes["products"]) or supported_products(op)
        # one n value for ops without an N axis, one topk for ops without routing: no duplicate rows
        ns = (_as_list(axes["n"]) or [DEFAULT_N]) if op in ("npu_quant_matmul", "matmul") else [DEFAULT_N]
        ks = (_as_list(axes["topk"]) or [DEFAULT_TOPK]) if op == "moe_init_routing_quant" else [DEFAULT_TOPK]
        hs = [INDEXER_D] if op == "indexer_compress_epilog" else (_as_list(axes["hidden"]) or [DEFAULT_HIDDEN])
        for prod, t, h, dt, nn, k in itertools.product(prods, _as_list(axes["tokens"]) or list(DEFAULT_TOKENS), hs,
                                                       _as_list(axes["dtypes"]) or [DEFAULT_DTYPE], ns, ks):
            points.append(Point(op, str(prod), int(t), int(h), str(dt), int(nn), int(k)))
    return points


_CONFIG_KEYS = {"ops", "products", "tokens", "hidden", "dtypes", "n", "topk", "calibration", "op"}


def load_config(path) -> dict:
    """Read a sweep TOML file: top-level keys ops, products, tokens, hidden, dtypes, n, topk,
    calibration, and optional [op.<name>] tables overriding axes for one operator."""
    with open(path, "rb") as fh:
        cfg = tomllib.load(fh)
    unknown = set(cfg) - _CONFIG_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}")
    cfg["overrides"] = cfg.pop("op", {})
    return cfg


def load_calibration(cal):
    """A Calibration from a path (JSON written by `npusim calibrate`), or cal itself."""
    if cal is None or not isinstance(cal, (str, Path)):
        return cal
    from perfmodel import calibration
    return calibration.Calibration.load(cal)


def _row(pred) -> dict:
    """A Prediction flattened to a sweep/compare row (status 'ok')."""
    row = {"status": "ok", "reason": "", "soc": str(getattr(pred, "soc", ""))}
    for key in ("latency_us", "head_us", "bound", "bytes_read", "bytes_written", "flops", "block_dim",
                "tiling_key", "achieved_GBps", "achieved_TOPS"):
        row[key] = getattr(pred, key, None)
    pipes = getattr(pred, "pipes_us", None) or {}
    for p in PIPES:
        row[f"pipe_{p}_us"] = pipes.get(p, math.nan)
    return row


def _failed(exc) -> dict:
    return {"status": "skipped", "reason": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}


def predict_row(op: str, product: str, args: dict, calibration=None) -> dict:
    """One prediction flattened to a dict: status 'ok', or 'skipped' with the reason."""
    import perfmodel
    try:
        pred = perfmodel.predict(op, product, calibration=calibration, **args)
    except Exception as exc:    # noqa: BLE001 -- any failure of one point is recorded, never fatal
        return _failed(exc)
    return _row(pred)


def predict_rows(op: str, product: str, args_list: list, calibration=None) -> list[dict]:
    """predict_row for many argument dicts of one operator on one product, through the vectorised
    perfmodel.predict_many (results identical to predict)."""
    import perfmodel
    many = getattr(perfmodel, "predict_many", None)
    if many is None:
        return [predict_row(op, product, a, calibration) for a in args_list]
    try:
        preds = many(op, product, args_list, calibration=calibration, errors="return")
    except Exception as exc:    # noqa: BLE001 -- e.g. op not supported on the product: every point
        return [_failed(exc)] * len(args_list)
    return [_failed(p) if isinstance(p, BaseException) else _row(p) for p in preds]


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


def run_sweep(points, calibration=None, progress: bool | None = None) -> pd.DataFrame:
    """Predict every point. Columns: the Point fields, status, reason, soc, latency_us, head_us,
    bound, bytes_read, bytes_written, flops, block_dim, tiling_key, achieved_GBps, achieved_TOPS,
    pipe_<pipe>_us. progress: None = show a bar when there are 50 points or more."""
    points = list(points)
    calibration = load_calibration(calibration)
    bar = Progress(len(points), enabled=(len(points) >= 50) if progress is None else progress)
    rows: list = [None] * len(points)
    groups: dict = {}               # (op, product) -> [(index, args)]: one vectorised call per group
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
            for (i, _), row in zip(part, predict_rows(op, product, [a for _, a in part], calibration)):
                rows[i] = row
            for i, _ in part:
                bar.step(f"{op} {product} {points[i].tokens}")
    rows = [{**asdict(p), **row} for p, row in zip(points, rows)]
    cols = list(asdict(Point("", "", 0))) + ["status", "reason", "soc", "latency_us", "head_us", "bound",
                                             "bytes_read", "bytes_written", "flops", "block_dim", "tiling_key",
                                             "achieved_GBps", "achieved_TOPS"] + [f"pipe_{p}_us" for p in PIPES]
    return pd.DataFrame(rows).reindex(columns=cols)
