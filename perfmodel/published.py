"""The published calibration set (perfmodel/data/published_timings.csv) as measured rows.

This is the ONE mapping from a published row to perfmodel.predict arguments; `python -m
perfmodel.fit_report`, `npusim calibrate` and `npusim compare` all read the set through
`read_published`, so they predict exactly the same launches.

A row's arguments = its tensors (from the shape and dtype columns) + its launch configuration
(from the config column). The configurations of the two Ascend C best-practice samples are spelled
out in SAMPLE_CONFIGS because their cases are cumulative (HARDWARE.md sec. 7.1: case 4 = case 3 +
double buffer, case 5 = case 4 + L2 bypass, case 6 = case 5 + dataCopyLen 16256 fp16 elements =
32512 bytes with the UB bank-conflict fix; cases 1-3 are single-buffered). Any other row's config
text is read for what it states: 'N AIV/AIC' -> block_dim, 'N KB' -> tile_bytes (add),
'double buffer', 'L2 bypass', 'naive' (matmul tiling).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from npusim.plan import TensorSpec
from npusim.products import PRODUCTS, SOCS, get_product
from perfmodel.ops import group_sizes
from perfmodel.profiles import PIPES

__all__ = ["MEASURED_COLUMNS", "SAMPLE_CONFIGS", "default_published_path", "default_measured_path",
           "published_args", "config_args", "read_published", "read_measured", "read_timings", "calibration_set",
           "shape_family", "measured_kernels"]

MEASURED_COLUMNS = ["op", "product", "target", "args", "measured_us", "block_dim", "label", "config", "source",
                    "family", "trust", "kernels"] + [f"pipe_{p}_us" for p in PIPES]

# (kernel, config text) -> launch options of the generic kernels (perfmodel.ops.add_work / matmul_work).
SAMPLE_CONFIGS = {
    ("add", "1 AIV, 8 KB DataCopy"): dict(block_dim=1, tile_bytes=8192, double_buffer=False),
    ("add", "48 AIV, 8 KB DataCopy"): dict(block_dim=48, tile_bytes=8192, double_buffer=False),
    ("add", "48 AIV, 32 KB DataCopy"): dict(block_dim=48, tile_bytes=32768, double_buffer=False),
    ("add", "48 AIV, 32 KB, double buffer"): dict(block_dim=48, tile_bytes=32768, double_buffer=True),
    ("add", "48 AIV, double buffer, L2 bypass"): dict(block_dim=48, tile_bytes=32768, double_buffer=True,
                                                      l2_bypass=True),
    ("add", "48 AIV, L2 bypass, UB bank-conflict fix"): dict(block_dim=48, tile_bytes=32512, double_buffer=True,
                                                             l2_bypass=True, bank_conflict_free=True),
    # the same sample on Ascend 950 (its README's 950 table: 64 AIV, dataCopyLen 4096 or 21760 fp16 elements)
    ("add", "64 AIV, 8 KB DataCopy"): dict(block_dim=64, tile_bytes=8192, double_buffer=False),
    ("add", "64 AIV, 43520 B DataCopy"): dict(block_dim=64, tile_bytes=43520, double_buffer=False),
    ("add", "64 AIV, 43520 B, double buffer"): dict(block_dim=64, tile_bytes=43520, double_buffer=True),
    ("add", "64 AIV, 43520 B, double buffer, L2 bypass"): dict(block_dim=64, tile_bytes=43520, double_buffer=True,
                                                               l2_bypass=True),
    ("matmul", "24 AIC, best tiling (MDL + L1/L2 tiling + UnitFlag)"): dict(block_dim=24, tiling="best"),
    ("matmul", "32 AIC, best tiling"): dict(block_dim=32, tiling="best"),
    ("matmul", "32 AIC, naive split"): dict(block_dim=32, tiling="naive"),
}


def default_published_path() -> Path:
    """The packaged copy of the published set (perfmodel/data/published_timings.csv; sources in its rows)."""
    return Path(__file__).resolve().parent / "data" / "published_timings.csv"


def default_measured_path() -> Path:
    """The packaged measured set (perfmodel/data/measured_timings.csv; sources in its rows)."""
    return Path(__file__).resolve().parent / "data" / "measured_timings.csv"


def _matmul_dims(shape: str) -> tuple[int, int, int]:
    """(M, N, K) from 'M=N=K=8192' or 'M=16,N=4096,K=7168'."""
    same = re.search(r"M\s*=\s*N\s*=\s*K\s*=\s*(\d+)", shape)
    if same:
        return (int(same.group(1)),) * 3
    dims = {k.upper(): int(v) for k, v in re.findall(r"\b([MNK])\s*=\s*(\d+)", shape, flags=re.I)}
    if not {"M", "N", "K"} <= set(dims):
        raise ValueError(f"cannot read matmul shape {shape!r}")
    return dims["M"], dims["N"], dims["K"]


def _tensor_args(kernel: str, shape: str, dtype: str) -> dict:
    if kernel == "add":
        m = re.search(r"(\d+)\s*x\s*(\d+)", shape)
        if not m:
            raise ValueError(f"cannot read add shape {shape!r}")
        s = (int(m.group(1)), int(m.group(2)))
        return {"x": TensorSpec(s, dtype), "y": TensorSpec(s, dtype)}
    if kernel == "matmul":
        m, n, k = _matmul_dims(shape)
        return {"a": TensorSpec((m, k), dtype), "b": TensorSpec((k, n), dtype)}
    raise ValueError(f"kernel {kernel!r} has no perfmodel operator")


def config_args(kernel: str, config: str) -> dict:
    """Launch options stated by a published row's config text (see the module docstring)."""
    known = SAMPLE_CONFIGS.get((kernel, config.strip()))
    if known is not None:
        return dict(known)
    out = {}
    text = config.lower()
    m = re.search(r"(\d+)\s*(aiv|aic)\b", text)
    if m:
        out["block_dim"] = int(m.group(1))
    if kernel == "add":
        m = re.search(r"(\d+)\s*kb\b", text)
        if m:
            out["tile_bytes"] = int(m.group(1)) * 1024
        if "double buffer" in text:
            out["double_buffer"] = True
        if "l2 bypass" in text:
            out["l2_bypass"] = True
    elif kernel == "matmul" and "naive" in text:
        out["tiling"] = "naive"
    return out


def published_args(kernel: str, shape: str, dtype: str, config: str = "") -> dict:
    """perfmodel.predict keyword arguments of one published row."""
    return {**_tensor_args(kernel, shape, dtype), **config_args(kernel, config)}


def read_published(path=None) -> pd.DataFrame:
    """Measured rows (MEASURED_COLUMNS) from a published-timings CSV (default: the packaged set).

    Column use: task_duration_us -> measured_us; vec_or_mac_time_us -> pipe_vector_us (add) or
    pipe_cube_us (matmul); mte2_time_us -> pipe_mte2_us; mte3_or_fixpipe_time_us -> pipe_mte3_us
    (add) or pipe_fixpipe_us (matmul); block_dim = the launch the config names; target = the soc
    column when it names a known SoC, else the product; trust = trust(note) (a row whose note says it is
    held out of the fit is predicted and shown, not fitted). Rows without a known product or operator are
    skipped: attrs['skipped'] counts them by reason, attrs['skipped_rows'] lists them.
    """
    path = default_published_path() if path is None else path
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows, skipped = [], []
    for i, r in raw.iterrows():
        where = {"source": f"{path}:{i + 2}", "line": i + 2, "op_type": r.get("kernel", "")}
        kernel, product = r.get("kernel", "").strip(), r.get("product", "").strip()
        config = r.get("config", "").strip()
        if product not in PRODUCTS:
            skipped.append({**where, "reason": f"unknown product {product!r}"})
            continue
        try:
            args = published_args(kernel, r.get("shape", ""), r.get("dtype", "").strip(), config)
            measured = float(r["task_duration_us"])
        except (ValueError, KeyError) as exc:
            skipped.append({**where, "reason": str(exc)})
            continue
        soc = r.get("soc", "").strip()
        row = {"op": kernel, "product": product, "target": soc if soc in SOCS else product, "args": args,
               "measured_us": measured, "block_dim": float(args.get("block_dim", math.nan)),
               "label": f"{kernel} {r.get('shape', '')} {r.get('dtype', '')}: {config}", "config": config,
               "source": r.get("source", ""), "family": "sample", "trust": trust(r.get("note", "")),
               "kernels": ()}
        vec_or_mac = "pipe_cube_us" if kernel == "matmul" else "pipe_vector_us"
        out_pipe = "pipe_fixpipe_us" if kernel == "matmul" else "pipe_mte3_us"
        for col, pipe in (("vec_or_mac_time_us", vec_or_mac), ("mte2_time_us", "pipe_mte2_us"),
                          ("mte3_or_fixpipe_time_us", out_pipe)):
            v = r.get(col, "").strip()
            row[pipe] = float(v) if v else math.nan
        rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=MEASURED_COLUMNS)
    df.attrs["skipped"] = dict(Counter(s["reason"] for s in skipped))
    df.attrs["skipped_rows"] = skipped
    return df


# -- the measured set (perfmodel/data/measured_timings.csv) ------------------------------------------------

# measured-set operator names -> perfmodel operator names
_MEASURED_OPS = {"dynamic_quant": "npu_dynamic_quant", "quant_matmul": "npu_quant_matmul", "add": "add",
                 "matmul": "matmul", "moe_init_routing_quant": "moe_init_routing_quant", "maximum": "maximum",
                 "sigmoid": "sigmoid", "gelu": "gelu", "sqrt": "sqrt", "grouped_matmul": "grouped_matmul"}


def _named_shapes(text: str) -> dict:
    """'x1 1024x3584; x2 3584x3584; scale 3584' -> {'x1': (1024, 3584), ...}; a list of values
    ('group_list [32, 64]') -> a tuple of them."""
    out = {}
    for part in text.split(";"):
        name, _, dims = part.strip().partition(" ")
        dims = dims.strip()
        if not name or not dims:
            raise ValueError(f"cannot read shape {part!r}")
        if dims.startswith("["):
            out[name] = tuple(int(d) for d in dims.strip("[]").split(","))
        else:
            out[name] = tuple(int(d) for d in dims.split("x"))
    return out


def _named_dtypes(text: str) -> dict:
    """'x1 int8; x2 int8; out float16' -> {'x1': 'int8', ...}; 'float16->int8' -> {'in': .., 'out': ..};
    'float16' -> {'in': 'float16'}."""
    if ";" in text or " " in text.strip():
        return dict(part.strip().split(" ", 1) for part in text.split(";"))
    src, _, dst = text.partition("->")
    return {"in": src.strip(), **({"out": dst.strip()} if dst else {})}


def _attr(params: str, name: str):
    m = re.search(rf"\b{name}\s*=\s*(-?\d+)", params)
    return int(m.group(1)) if m else None


def measured_args(op: str, shape: str, dtypes: str, params: str = "") -> dict:
    """perfmodel.predict keyword arguments of one measured-set row (op already mapped)."""
    shapes, dts = _named_shapes(shape), _named_dtypes(dtypes)
    if op == "npu_dynamic_quant":
        return {"x": TensorSpec(shapes["x"], dts["in"]), "dst_type": dts.get("out", "int8")}
    if op in ("add", "maximum"):
        return {"x": TensorSpec(shapes["x"], dts["in"]), "y": TensorSpec(shapes["y"], dts["in"])}
    if op in ("sigmoid", "gelu", "sqrt"):
        return {"x": TensorSpec(shapes["x"], dts["in"])}
    if op == "matmul":
        return {"a": TensorSpec(shapes["a"], dts["in"]), "b": TensorSpec(shapes["b"], dts["in"])}
    if op == "grouped_matmul":
        args = {name: TensorSpec(shapes[name], dts[name]) for name in ("x", "w", "bias") if name in shapes}
        args["weight"] = args.pop("w")
        args["group_list"] = shapes["group_list"]
        args["transpose_weight"] = bool(re.search(r"transpose_weight\s*=\s*true", params, flags=re.I))
        return args
    if op == "npu_quant_matmul":
        args = {name: TensorSpec(shapes[name], dts[name]) for name in shapes}
        args["output_dtype"] = dts["out"]
        return args
    if op == "moe_init_routing_quant":
        n, k = shapes["expert_idx"]
        active = _attr(params, "active_num")
        # MoeInitRoutingQuant's active_num counts source rows, MoeInitRoutingV3's counts expanded rows
        return {"x": TensorSpec(shapes["x"], dts["in"]), "row_idx": TensorSpec((n, k), "int32"),
                "expert_idx": TensorSpec((n, k), "int32"),
                "active_num": n if active is None else min(n, -(-active // k)), "scale": 1.0, "offset": 0.0}
    raise ValueError(f"operator {op!r} has no perfmodel mapping")


FITTED_TRUST = "measured"       # the trust level of the rows a fit uses (held-out, doubtful and analogue ones never)


def trust(params: str) -> str:
    """How far a measured row can be trusted, from what its params column says: 'analogue' (another kernel
    standing in for the operator), 'doubtful' (its source calls the values placeholders, or the row marks
    itself doubtful and says why), 'holdout' (a sound measurement kept out of the fit on purpose, to check
    the model where it was not fitted: the row says 'held out of the fit' and why), else 'measured'."""
    text = params.lower()
    if "held out of the fit" in text:
        return "holdout"
    if "analogue" in text:
        return "analogue"
    if "placeholder" in text or "doubtful" in text:
        return "doubtful"
    return FITTED_TRUST


def measured_coverage(op: str, soc: str) -> Counter:
    """How many rows of the packaged calibration set (the measured set and the published samples) time operator
    `op` (perfmodel's name) on SoC `soc`, by trust level (see trust(): a measured row's params, a published row's
    note). Read from the files' own columns, without building the rows (calibration_set() takes a second)."""
    def soc_of(named: str, product: str) -> str:     # as the rows' target: the SoC named exactly, else the product's
        return named if named in SOCS else get_product(product).soc if product in PRODUCTS else ""
    out = Counter()
    raw = pd.read_csv(default_measured_path(), dtype=str, keep_default_na=False,
                      usecols=["op", "product", "soc", "params"])
    for name, product, named, params in raw.itertuples(index=False):
        if _MEASURED_OPS.get(name.strip()) == op and soc_of(named.strip(), product.strip()) == soc:
            out[trust(params)] += 1
    raw = pd.read_csv(default_published_path(), dtype=str, keep_default_na=False,
                      usecols=["kernel", "product", "soc", "note"])
    for name, product, named, note in raw.itertuples(index=False):
        if name.strip() == op and soc_of(named.strip(), product.strip()) == soc:
            out[trust(note)] += 1
    return out


def measured_kernels(params: str) -> tuple:
    """The kernels a measurement covers, when its params column names them ('baseline_kernels: A x1, B x1',
    cann-bench's own list of the kernels its timing sums), else () for every kernel the operator launches.
    E.g. cann-bench times npu_quant_matmul with a float32 scale as QuantBatchMatmulV3 alone: the
    TransQuantParamV2 launch op-plugin puts before it is not in the measured time."""
    m = re.search(r"baseline_kernels:\s*([^;]*)", params)
    if not m:
        return ()
    return tuple(re.sub(r"\s*[x\u00d7]\s*\d+\s*$", "", k).strip() for k in m.group(1).split(",") if k.strip())


def shape_family(op: str, args: dict) -> str:
    """The shape family of a measured row, for holding whole families out in cross-validation:
    decode (M <= 16), batched, unaligned (a dimension off the 32-byte / fractal grid) or aligned."""
    if op in ("npu_quant_matmul", "matmul", "grouped_matmul"):
        if op == "grouped_matmul":          # by its largest group
            m, k = max(group_sizes(args["group_list"])), args["x"].shape[-1]
            n, batched = args["weight"].shape[-2 if args.get("transpose_weight") else -1], False
        else:
            a, b = (args["x1"], args["x2"]) if op == "npu_quant_matmul" else (args["a"], args["b"])
            m, k, n, batched = a.shape[-2], a.shape[-1], b.shape[-1], len(a.shape) > 2
        if m <= 16:
            return "decode"
        if batched:
            return "batched"
        return "unaligned" if any(d % 16 for d in (m, k, n)) or min(m, k, n) < 128 else "aligned"
    if op in ("npu_dynamic_quant", "add", "maximum", "sigmoid", "gelu", "sqrt"):
        x = args["x"]
        return "unaligned" if (x.shape[-1] * x.dtype.itemsize) % 32 else "aligned"
    return "all"


def read_measured(path=None) -> pd.DataFrame:
    """Measured rows (MEASURED_COLUMNS) from a measured-timings CSV (default: the packaged set).
    Rows the model cannot express are skipped (attrs['skipped'], attrs['skipped_rows'])."""
    path = default_measured_path() if path is None else path
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows, skipped = [], []
    for i, r in raw.iterrows():
        where = {"source": f"{path}:{i + 2}", "line": i + 2, "op_type": r.get("op", "")}
        op = _MEASURED_OPS.get(r.get("op", "").strip())
        product, soc = r.get("product", "").strip(), r.get("soc", "").strip()
        if op is None or product not in PRODUCTS:
            skipped.append({**where, "reason": f"unknown operator or product {r.get('op')!r}/{product!r}"})
            continue
        try:
            args = measured_args(op, r["shape"], r["dtypes"], r.get("params", ""))
            measured = float(r["measured_us"])
        except (ValueError, KeyError) as exc:
            skipped.append({**where, "reason": str(exc)})
            continue
        row = {"op": op, "product": product, "target": soc if soc in SOCS else product, "args": args,
               "measured_us": measured, "block_dim": math.nan,
               "label": f"{r['op']} {r['shape']} {r['dtypes']}", "config": r.get("params", ""),
               "source": r.get("source", ""), "family": shape_family(op, args), "trust": trust(r.get("params", "")),
               "kernels": measured_kernels(r.get("params", ""))}
        rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=MEASURED_COLUMNS)
    df.attrs["skipped"] = dict(Counter(s["reason"] for s in skipped))
    df.attrs["skipped_rows"] = skipped
    return df


# the columns that tell the two packaged formats apart (a file of either kind may be given as --published)
_PUBLISHED_KEYS = ("kernel", "config", "task_duration_us")
_MEASURED_KEYS = ("op", "soc", "shape", "measured_us")


def read_timings(path) -> pd.DataFrame:
    """Measured rows from a timings CSV of either packaged format: published_timings.csv's (kernel, config,
    task_duration_us, ...: read_published) or measured_timings.csv's (op, soc, shape, measured_us, ...:
    read_measured); any other header is a ValueError naming both."""
    header = set(pd.read_csv(path, dtype=str, nrows=0).columns.str.strip())
    if all(k in header for k in _PUBLISHED_KEYS):
        return read_published(path)
    if all(k in header for k in _MEASURED_KEYS):
        return read_measured(path)
    raise ValueError(f"{path}: neither timings format: a published-timings CSV has the columns "
                     f"{', '.join(_PUBLISHED_KEYS)} (perfmodel/data/published_timings.csv), a measured-timings CSV "
                     f"{', '.join(_MEASURED_KEYS)} (perfmodel/data/measured_timings.csv); got "
                     f"{', '.join(sorted(header))[:300]}")


def calibration_set() -> pd.DataFrame:
    """The packaged calibration set: the measured set followed by the published best-practice samples."""
    a, b = read_measured(), read_published()
    df = pd.concat([a, b], ignore_index=True)
    df.attrs = {"skipped": {**a.attrs["skipped"], **b.attrs["skipped"]},
                "skipped_rows": a.attrs["skipped_rows"] + b.attrs["skipped_rows"]}
    return df
