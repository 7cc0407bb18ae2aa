"""Profiler ingestion: msprof `op_summary_*.csv` and torch_npu `kernel_details.csv` into one DataFrame.

Both files and both header generations are read (HARDWARE.md section 6, after Ascend/msprof
`docs/en/user_guide/profile_data_file_references.md` and `analysis/msconfig/prof_header_mapping.json`):

* op_summary (msprof): `Op Name, OP Type, Task Type, Task Start Time(us), Task Duration(us), Block Num, ...`
* kernel_details (torch_npu profiler): `Name, Type, Accelerator Core, Start Time(us), Duration(us), Block Dim, ...`
* CANN <= 8.0 headers: `Block Dim` / `Mix Block Dim`, times without a unit suffix (`Task Duration`),
  `aicore_time`, `total_cycles`, unprefixed pipe times on coupled chips (`vec_time`, `mac_time`, ...).

A header without a unit is read in `unitless_unit` (microseconds unless told otherwise): the older
CANN releases wrote either ns or us there, and the file itself does not say which; the files whose
duration header had none are listed in `df.attrs["unitless_durations"]`.

Rows the model cannot use (tasks that are no AI Core kernel by their Task Type: AI_CPU, AICPU, HCCL,
COMMUNICATION, MEMCPY_*; operators it does not cost, N/A, infinite or non-positive durations,
malformed or missing shapes, ragged CSV lines) are skipped and counted by reason in
`df.attrs["skipped"]`; `df.attrs["skipped_rows"]` keeps the first examples of each reason. Files that
give no row at all (missing, unreadable, empty, header only, no operator type or duration column) are
listed apart, with the reason, in `df.attrs["skipped_files"]`. Pipe and
core times that are not finite non-negative numbers, and block dims that are not positive integers,
read as NaN (not reported). Reading never raises on row content.

Model-run profiles hold 10^5-10^6 kernel rows, most of them repeats of a few thousand calls. Files
are read as a stream, in chunks, and each distinct call (operator type, shapes, dtypes, formats) is
parsed once: rows of one call share its parsed shape and dtype lists (do not mutate them) and its
`call` id. Memory stays at about 200 bytes per usable row.
"""
from __future__ import annotations

import csv
import difflib
import math
import operator
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from npusim.plan import TensorSpec
from perfmodel.model import PIPES
from perfmodel.ops import even_group_list

__all__ = ["OP_TYPES", "PIPES", "read_profiles", "parse_shapes", "parse_dtypes", "to_predict_args",
           "skipped_summary", "skipped_files_summary"]

# Profiler OP Type (case-insensitive) -> perfmodel operator name. DynamicQuantV2 is the asymmetric
# kernel on A2/A3 (resolved per row from the number of outputs: 3 = y, scale, offset -> asymmetric);
# on Ascend 950 it is also the symmetric one, with the same three outputs (ops-nn's l0op::DynamicQuantV2
# always declares the offset), so perfmodel.compare reads it as symmetric there, the common call.
OP_TYPES = {
    "dynamicquant": "npu_dynamic_quant",
    "dynamicquantv2": "npu_dynamic_quant",
    "indexercompressepilog": "indexer_compress_epilog",
    "fakequantaffinecachemask": "fake_quantize_per_channel_affine_cachemask",
    "fakequantperchannelaffinecachemask": "fake_quantize_per_channel_affine_cachemask",
    "quantbatchmatmul": "npu_quant_matmul",
    "quantbatchmatmulv3": "npu_quant_matmul",
    "quantbatchmatmulv4": "npu_quant_matmul",
    "moeinitroutingquant": "moe_init_routing_quant",
    "transquantparamv2": "npu_trans_quant_param",      # launched before QuantBatchMatmulV3 for a float32 scale
    # generic operators the model also costs (calibration anchors)
    "add": "add",
    "maximum": "maximum",
    "sqrt": "sqrt",
    "sigmoid": "sigmoid",
    "gelu": "gelu",
    "matmul": "matmul",
    "matmulv2": "matmul",
    "matmulv3": "matmul",
    "groupedmatmul": "grouped_matmul",
}

# Canonical column <- header names (lower case, unit suffix removed, spaces -> '_').
_COLUMNS = {
    "op_name": ("op_name", "name"),
    "op_type": ("op_type", "type"),
    "task_type": ("task_type", "accelerator_core"),
    "start": ("task_start_time", "start_time"),
    "duration": ("task_duration", "duration"),
    "wait": ("task_wait_time", "wait_time"),
    "block_dim": ("block_num", "block_dim"),
    "mix_block_dim": ("mix_block_num", "mix_block_dim"),
    "input_shapes": ("input_shapes",),
    "input_dtypes": ("input_data_types",),
    "input_formats": ("input_formats",),
    "output_shapes": ("output_shapes",),
    "output_dtypes": ("output_data_types",),
    "output_formats": ("output_formats",),
    "aicore_time": ("aicore_time",),
    "aiv_time": ("aiv_time",),
}
# Pipe <- header names. Where a mix task reports both the AIC and the AIV view of a pipe (mte2,
# scalar) the larger is kept: the two core types run concurrently, the slower one bounds the task.
_PIPE_COLUMNS = {
    "mte1": ("aic_mte1_time", "mte1_time"),
    "mte2": ("aic_mte2_time", "aiv_mte2_time", "mte2_time"),
    "mte3": ("aiv_mte3_time", "mte3_time"),
    "vector": ("aiv_vec_time", "vec_time"),
    "cube": ("aic_mac_time", "mac_time"),
    "fixpipe": ("aic_fixpipe_time", "fixpipe_time"),
    "scalar": ("aic_scalar_time", "aiv_scalar_time", "scalar_time"),
}
_TIME_UNITS = {"us": 1.0, "ns": 1e-3, "ms": 1e3, "s": 1e6}
_MISSING = {"", "n/a", "na", "nan", "none", "null", "-", "--"}

# Profiler dtype spellings -> npusim.formats names.
_DTYPES = {
    "float": "float32", "float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
    "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16", "double": "float64", "float64": "float64",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64", "uint8": "uint8", "uint16": "uint16",
    "uint32": "uint32", "uint64": "uint64", "int4": "int4", "bool": "bool",
    "float8_e4m3fn": "float8_e4m3fn", "float8_e4m3": "float8_e4m3fn", "float8_e5m2": "float8_e5m2",
    "float8_e8m0": "float8_e8m0", "float8_e8m0fnu": "float8_e8m0", "hifloat8": "hifloat8",
}


def _header_key(header: str) -> tuple[str, str | None]:
    """('task_duration', 'us') from 'Task Duration(us)'; the unit is None when the header has none."""
    h = header.strip().strip('"').strip()
    unit = None
    m = re.match(r"^(.*?)\s*\(([^)]*)\)\s*$", h)
    if m:
        h, unit = m.group(1), m.group(2).strip().lower()
    return re.sub(r"[\s\-]+", "_", h.lower()), unit


def _missing(v) -> bool:
    return v is None or str(v).strip().strip('"').strip().lower() in _MISSING


def _number(v) -> float:
    """Float value of a cell; NaN when missing or not a number."""
    if _missing(v):
        return math.nan
    try:
        return float(str(v).strip().strip('"'))
    except ValueError:
        return math.nan


def parse_shapes(text) -> list[tuple[int, ...]]:
    """'8192,320;320,2560' -> [(8192, 320), (320, 2560)]. An empty entry is a scalar or absent input: ().

    Raises ValueError on anything else (non-integer or negative dims, 'N/A')."""
    if _missing(text):
        raise ValueError("shapes missing")
    shapes = []
    for part in str(text).strip().strip('"').split(";"):
        part = part.strip().strip('"').strip("[]() ")
        if not part:
            shapes.append(())
            continue
        dims = []
        for d in part.split(","):
            d = d.strip()
            if not re.fullmatch(r"\d+", d):
                raise ValueError(f"malformed shape {part!r}")
            dims.append(int(d))
        shapes.append(tuple(dims))
    return shapes


def parse_dtypes(text) -> list[str]:
    """'DT_FLOAT16;INT8' -> ['float16', 'int8']; unknown spellings are kept in lower case."""
    if _missing(text):
        return []
    out = []
    for part in str(text).strip().strip('"').split(";"):
        key = part.strip().strip('"').lower().removeprefix("dt_")
        out.append(_DTYPES.get(key, key))
    return out


def _split(text) -> list[str]:
    return [] if _missing(text) else [p.strip() for p in str(text).strip().strip('"').split(";")]


def _expand(paths) -> tuple[list[Path], list[Path]]:
    """Files named, plus op_summary_*.csv / kernel_details*.csv found under directories named, each once (by
    resolved path, in the order first met). A torch_npu result directory (*_ascend_pt) holds the same launches
    twice: ASCEND_PROFILER_OUTPUT/kernel_details.csv and, derived from the same data,
    PROF_*/mindstudio_profiler_output/op_summary_*.csv; only the first is read there. Returns the files to read
    and the files that were named again (as first named)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            details = set(p.rglob("*kernel_details*.csv"))
            covered = {f.parent.parent for f in details if f.parent.name == "ASCEND_PROFILER_OUTPUT"}
            summaries = {f for f in p.rglob("*op_summary*.csv") if not covered & set(f.parents)}
            files.extend(sorted(details | summaries))
        else:
            files.append(p)
    # a file named twice (a directory and a file in it, or overlapping shell globs) is read once, where it
    # first came, under the name first given
    first, repeated = {}, []
    for f in files:
        seen = first.setdefault(f.resolve(), f)
        if seen is not f and seen not in repeated:
            repeated.append(seen)
    return list(first.values()), repeated


def _op_of(op_type: str, n_outputs: int) -> str | None:
    key = re.sub(r"[\s_]+", "", op_type.lower())
    op = OP_TYPES.get(key)
    if op == "npu_dynamic_quant" and key == "dynamicquantv2" and n_outputs >= 3:
        return "npu_dynamic_quant_asymmetric"
    return op


COLUMNS = ["source", "line", "format", "generation", "op", "op_type", "op_name", "task_type", "duration_us",
           "block_dim", "mix_block_dim", "input_shapes", "input_dtypes", "input_formats", "output_shapes",
           "output_dtypes", "aicore_time_us"] + [f"pipe_{p}_us" for p in PIPES] + ["call"]
EXAMPLES_PER_REASON = 20        # skipped rows listed per reason in attrs['skipped_rows'] (all are counted)
_CHUNK = 1 << 14                # rows converted to arrays at a time (bounds the per-row Python objects held)
_CALL_FIELDS = ("op_type", "input_shapes", "input_dtypes", "input_formats", "output_shapes", "output_dtypes")
_TIME_FIELDS = ("duration", "aicore_time", "aiv_time")


def read_profiles(paths, *, unitless_unit: str = "us") -> pd.DataFrame:
    """Read profiler CSVs (files, or directories searched for op_summary*/kernel_details* files).

    Returns one row per usable task with the columns COLUMNS: source (the file), line (record number
    in it, header = 1), format ('op_summary' or 'kernel_details'), generation ('new': Block Num
    headers, 'old': Block Dim), op (perfmodel name), op_type, op_name, task_type, duration_us,
    block_dim, mix_block_dim, input_shapes (list of tuples), input_dtypes, input_formats,
    output_shapes, output_dtypes, aicore_time_us, pipe_<pipe>_us for the pipes in PIPES (NaN when
    the profile has no such column), and call (an id shared by the rows of one distinct call).
    `df.attrs['skipped']` counts the unusable rows by reason, `df.attrs['skipped_rows']` lists the
    first EXAMPLES_PER_REASON of each (source, line, op_type, reason), `df.attrs['files']` the files
    read (each once, however often it was named; `df.attrs['repeated_files']` those named more than once),
    `df.attrs['skipped_files']` the files that gave no row
    (source, reason): missing, unreadable, empty, header only, or without an operator type or duration column.
    `df.attrs['unitless_durations']` lists the files whose duration header had no unit (source, header, unit:
    the `unitless_unit` they were read in). None of these is an error.
    """
    if unitless_unit not in _TIME_UNITS:
        raise ValueError(f"unitless_unit must be one of {sorted(_TIME_UNITS)}, got {unitless_unit!r}")
    acc = _Accumulator()
    files, repeated = _expand(paths)
    for path in files:
        try:
            # a byte that is not UTF-8 (e.g. a GBK op name from a Windows export) becomes U+FFFD: the columns
            # read (types, shapes, dtypes, times) are ASCII, and a row it does garble is skipped with its line
            with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
                _read_records(str(path), csv.reader(fh), _TIME_UNITS[unitless_unit], acc)
        except (OSError, csv.Error) as exc:
            acc.skip_file(str(path), f"unreadable file: {type(exc).__name__}: {exc}"[:200])
    df = acc.frame()
    df.attrs["files"] = [str(f) for f in files]
    df.attrs["repeated_files"] = [str(f) for f in repeated]
    df.attrs["unitless_durations"] = [{**u, "unit": unitless_unit} for u in acc.unitless_durations]
    return df


class _Call:
    """One distinct call (op type, shapes, dtypes, formats) parsed once: op, shapes, or why it is unusable."""
    __slots__ = ("id", "op", "op_type", "reason", "input_shapes", "input_dtypes", "input_formats",
                 "output_shapes", "output_dtypes")

    def __init__(self, call_id, op_type, in_shapes, in_dtypes, in_formats, out_shapes, out_dtypes):
        self.id, self.op_type, self.reason = call_id, op_type.strip(), ""
        self.input_shapes = self.output_shapes = None
        self.input_dtypes, self.input_formats = parse_dtypes(in_dtypes), _split(in_formats)
        self.output_dtypes = parse_dtypes(out_dtypes)
        self.op = _op_of(self.op_type, max(len(self.output_dtypes), len(_split(out_shapes))))
        if self.op is None:             # named per type, so that a user sees which operators went unused
            self.reason = f"{_NOT_MODELLED}: {self.op_type}" if not _missing(self.op_type) else _NO_OP_TYPE
            return
        try:
            self.input_shapes = parse_shapes(in_shapes)
        except ValueError as exc:
            self.reason = f"input shapes: {exc}"
            return
        try:
            self.output_shapes = parse_shapes(out_shapes) if not _missing(out_shapes) else []
        except ValueError as exc:
            self.reason = f"output shapes: {exc}"


class _Accumulator:
    """Usable rows as arrays (chunk by chunk), the distinct calls, and the skip counts and examples."""

    def __init__(self):
        self.calls: dict = {}           # call text fields -> _Call
        self.strings: dict = {}         # one shared str object per distinct op name / task type / file
        self.parts: list = []           # per chunk: dict of column arrays
        self.skipped: Counter = Counter()
        self.examples: list = []
        self.files: list = []           # (source, reason) of the files that gave no row
        self.unitless_durations: list = []      # (source, header) of the files whose duration header has no unit

    def skip(self, source, line, op_type, reason, count=1):
        """Count `count` rows skipped for `reason`; the first of them (at `line`) may serve as an example."""
        if self.skipped[reason] < EXAMPLES_PER_REASON:
            self.examples.append({"source": source, "line": line, "op_type": op_type, "reason": reason})
        self.skipped[reason] += count

    def skip_file(self, source, reason):
        """A whole file gave no row (listed apart from the row counts)."""
        self.files.append({"source": source, "reason": reason})

    def call(self, key) -> _Call:
        c = self.calls.get(key)
        if c is None:
            c = self.calls[key] = _Call(len(self.calls), *key)
        return c

    def text(self, values) -> np.ndarray:
        """Stripped strings, one shared object per distinct value (op names repeat across a run)."""
        codes, uniques = pd.factorize(values)
        share = self.strings.setdefault
        shared = np.array([share(u.strip(), u.strip()) for u in uniques] + [""], dtype=object)
        return shared[codes]

    def frame(self) -> pd.DataFrame:
        if self.parts:                  # column by column, releasing the chunks' copies as it goes
            cols = {k: np.concatenate([p.pop(k) for p in self.parts]) for k in list(self.parts[0])}
        else:
            cols = {k: np.array([], dtype=np.int64 if k in ("line", "call") else float if k.endswith(("_us", "_dim"))
                                else object) for k in COLUMNS}
        calls = sorted(self.calls.values(), key=lambda c: c.id)
        for name in ("op", "op_type", "input_shapes", "input_dtypes", "input_formats", "output_shapes",
                     "output_dtypes"):
            per_call = np.empty(len(calls) + 1, dtype=object)      # (+1: never a 0-length take source)
            per_call[:-1] = [getattr(c, name) for c in calls]
            cols[name] = per_call[cols["call"]]
        df = pd.DataFrame(cols, columns=COLUMNS, copy=False)
        df.attrs["skipped"] = dict(self.skipped)
        df.attrs["skipped_rows"] = self.examples
        df.attrs["skipped_files"] = self.files
        return df


def _number_array(values, scale: float) -> np.ndarray:
    """Floats of CSV cells (NaN where missing or not a number) times the unit scale, vectorised."""
    try:
        out = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):     # N/A cells, quoted numbers: once per distinct cell text
        codes, uniques = pd.factorize(np.asarray(values, dtype=object))
        out = np.array([_float(u) for u in uniques] + [np.nan])[codes]
    return out * scale


def _float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return _number(text)


# header names a reader needs, as a user would write them (for the messages)
_REQUIRED_HEADERS = {"op_type": ("OP Type", "Type"), "duration": ("Task Duration(us)", "Duration(us)"),
                     "input_shapes": ("Input Shapes",)}


def _no_column(name: str, header) -> str:
    """"no 'OP Type' / 'Type' column; did you mean 'OP Typ'?" (the file's header closest to one of the names
    looked for, when one is very close: a typo, not another column)."""
    looked = _REQUIRED_HEADERS[name]
    present = {h.strip().strip('"').strip().lower(): h.strip().strip('"').strip() for h in header}
    for n in looked:
        close = difflib.get_close_matches(n.lower(), [h for h in present if h], n=1, cutoff=0.85)
        if close:
            return f"no {' / '.join(map(repr, looked))} column; did you mean {present[close[0]]!r}?"
    return f"no {' / '.join(map(repr, looked))} column"


def _read_records(source: str, records, unitless_scale: float, acc: _Accumulator):
    header = next(records, None)
    if not header:
        acc.skip_file(source, "empty file")
        return
    keys = [_header_key(h) for h in header]
    index = {k: (i, unit) for i, (k, unit) in enumerate(keys)}

    def find(names):
        for n in names:
            if n in index:
                return index[n]
        return None

    cols = {name: find(names) for name, names in _COLUMNS.items()}
    pipe_cols = {p: [index[n] for n in names if n in index] for p, names in _PIPE_COLUMNS.items()}
    absent = [_no_column(name, header) for name in ("op_type", "duration") if cols[name] is None]
    if absent:
        # a spreadsheet in a comma-decimal locale re-saves the file with ';' between fields: one long header field
        looks_semicolon = sum(h.count(";") for h in header) >= len(header)
        hint = (" (the header looks ';'-separated: re-saved by a spreadsheet? Save it comma-separated)"
                if looks_semicolon else "")
        acc.skip_file(source, f"not a profiler CSV: {'; '.join(absent)}{hint}")
        return
    if cols["duration"][1] is None:     # read in unitless_unit; said so, since the file cannot tell
        acc.unitless_durations.append({"source": source, "header": header[cols["duration"][0]].strip().strip('"')})
    fmt = "op_summary" if "op_type" in index else "kernel_details"
    generation = "new" if ("block_num" in index or "mix_block_num" in index) else "old"

    def scale_of(unit):
        return _TIME_UNITS.get(unit, unitless_scale) if unit is not None else unitless_scale

    # the cells each row needs, in a fixed order: (position in the record, field name, unit scale); a pipe
    # may come from several columns (the AIC and AIV views): 'pipe_<pipe>:<k>'
    wanted = [(cols["duration"][0], "duration", scale_of(cols["duration"][1])),
              (cols["op_type"][0], "op_type", 1.0)]
    wanted += [(c[0], name, scale_of(c[1])) for name, c in cols.items() if c is not None and name in _READ]
    for p, found in pipe_cols.items():
        wanted += [(c[0], f"pipe_{p}:{k}", scale_of(c[1])) for k, c in enumerate(found)]
    get = operator.itemgetter(*[w[0] for w in wanted])      # duration and op type: always a tuple
    n_fields, op_type_at = len(header), cols["op_type"][0]
    shared = {"source": acc.strings.setdefault(source, source), "format": fmt, "generation": generation,
              # without the column no call can be costed: its rows say so, not 'shapes missing' cell by cell
              "no_shapes": None if cols["input_shapes"] is not None else
              f"input shapes: {source} has {_no_column('input_shapes', header)}"}
    chunk, lines, any_record = [], [], False
    for lineno, rec in enumerate(records, start=2):
        if not any_record and rec and any(c.strip() for c in rec):     # (looked at until the first one)
            any_record = True
        if len(rec) != n_fields:
            if rec and any(c.strip() for c in rec):
                acc.skip(source, lineno, rec[op_type_at].strip() if len(rec) > op_type_at else "",
                         f"ragged line ({len(rec)} fields, header has {n_fields})")
            continue
        if not rec[op_type_at] and not any(c.strip() for c in rec):
            continue                    # a blank line of separators
        chunk.append(get(rec))
        lines.append(lineno)
        if len(chunk) >= _CHUNK:
            _convert(chunk, lines, wanted, shared, acc)
            chunk, lines = [], []
    if chunk:
        _convert(chunk, lines, wanted, shared, acc)
    if not any_record:
        acc.skip_file(source, "no data rows (only the header)")


def _same(n: int, value) -> np.ndarray:
    """n references to one object (np.full would make n copies of a string)."""
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


_READ = {"op_name", "task_type", "block_dim", "mix_block_dim", "input_shapes", "input_dtypes", "input_formats",
         "output_shapes", "output_dtypes", "aicore_time", "aiv_time"}
_NOT_MODELLED, _BAD_DURATION = "operator not modelled", "duration missing, N/A, not finite or not positive"
# torch_npu's option is spelled profiler_level=torch_npu.profiler.ProfilerLevel.Level0 (its default); its doc says
# Level0 leaves part of the operator information out, and Level1 adds it (hiascend Pytorch apiref
# torch_npu-profiler-ProfilerLevel, 6.0/7.1.0)
_NO_OP_TYPE = ("no OP Type (N/A): a profile taken with msprof --task-time l0 records no operator types (with "
               "torch_npu's profiler, profiler_level=ProfilerLevel.Level0 leaves operator information out: take it "
               "at Level1)")
# Task Types that are not an AI Core / AI Vector Core kernel (op_summary doc atlasprofiling_16_0067; HARDWARE.md
# section 6): an Add that GE sent to the AI CPU, a communication or a copy task is no kernel the model costs
_OFF_CORE_TASK_TYPES = ("AI_CPU", "AICPU", "HCCL", "COMMUNICATION")


def _off_core_reason(task_type) -> str:
    """'ran on AI_CPU; ...' for a task that is not an AI Core kernel; '' for the others (and an unknown type)."""
    t = str(task_type).strip().strip('"').strip().upper()
    if t in _OFF_CORE_TASK_TYPES or t.startswith("MEMCPY"):
        return f"ran on {t}; the model costs the AI Core kernel"
    return ""


def _convert(chunk, lines, wanted, shared, acc: _Accumulator):
    """One chunk of records -> column arrays of its usable rows; the rest counted as skipped. Work per row is
    numpy; Python runs once per distinct call."""
    table = np.empty((len(chunk), len(wanted)), dtype=object)
    table[:] = chunk                    # (one C-level copy; zip(*chunk) would be slower)
    at = {w[1]: i for i, w in enumerate(wanted)}
    n = len(chunk)
    blank = _same(n, "")

    def column(name):
        return table[:, at[name]] if name in at else blank

    # distinct calls of the chunk: factorize each text field, then the combinations of their codes
    codes, uniques = zip(*(pd.factorize(column(f)) for f in _CALL_FIELDS))
    combo = np.zeros(n, dtype=np.int64)
    for c in codes:
        combo = pd.factorize(combo * (len(c) + 1) + c)[0]      # stays below n: no overflow
    _, first = np.unique(combo, return_index=True)
    calls = [acc.call(tuple(u[c[i]] for u, c in zip(uniques, codes))) for i in first]
    call_ids = np.array([c.id for c in calls], dtype=np.int64)[combo]
    not_modelled = np.array([c.op is None for c in calls])[combo]
    call_reason = np.array([c.reason for c in calls] + [""], dtype=object)[combo]
    if shared["no_shapes"]:
        call_reason[~not_modelled] = shared["no_shapes"]
    # the task type first: an AI_CPU Add is no AI Core kernel, whatever its operator type and cells say
    tt_codes, tt_uniques = pd.factorize(column("task_type"))
    off_core_reason = np.array([_off_core_reason(u) for u in tt_uniques] + [""], dtype=object)[tt_codes]
    off_core = off_core_reason != ""
    not_modelled &= ~off_core
    duration = _number_array(table[:, 0], wanted[0][2])
    bad_duration = ~off_core & ~not_modelled & ~(np.isfinite(duration) & (duration > 0))
    bad_call = ~off_core & ~not_modelled & ~bad_duration & (call_reason != "")
    lines = np.asarray(lines, dtype=np.int64)
    op_types = column("op_type")
    for mask, reasons in ((off_core, off_core_reason), (not_modelled, call_reason),
                          (bad_duration, _same(n, _BAD_DURATION)), (bad_call, call_reason)):
        rows = np.flatnonzero(mask)
        if not len(rows):
            continue
        found, at_row, counts = np.unique(reasons[rows], return_index=True, return_counts=True)
        for text, i, count in zip(found, at_row, counts):
            acc.skip(shared["source"], int(lines[rows[i]]), str(op_types[rows[i]]).strip(), text, int(count))
    idx = np.flatnonzero(~(off_core | not_modelled | bad_duration | bad_call))
    if not len(idx):
        return

    def kept(name):
        return column(name)[idx]

    out = {"source": _same(len(idx), shared["source"]),
           "line": lines[idx],
           "format": _same(len(idx), shared["format"]), "generation": _same(len(idx), shared["generation"]),
           "op_name": acc.text(kept("op_name")), "task_type": acc.text(kept("task_type")),
           "call": call_ids[idx], "duration_us": duration[idx]}
    for name in ("block_dim", "mix_block_dim"):
        v = _number_array(kept(name), 1.0) if name in at else np.full(len(idx), np.nan)
        v[~(np.isfinite(v) & (v >= 1) & (v == np.floor(v)))] = np.nan     # a launch is a positive core count
        out[name] = v

    def times(names):
        """Largest of the valid (finite, >= 0) values of the named columns; NaN when none is."""
        best = np.full(len(idx), np.nan)
        for name in names:
            v = _number_array(kept(name), wanted[at[name]][2])
            v[~(np.isfinite(v) & (v >= 0))] = np.nan
            best = np.fmax(best, v)
        return best

    out["aicore_time_us"] = times([t for t in _TIME_FIELDS[1:] if t in at])
    for p in PIPES:
        out[f"pipe_{p}_us"] = times([name for name in at if name.startswith(f"pipe_{p}:")])
    acc.parts.append(out)


def skipped_summary(df: pd.DataFrame, examples: int = 0) -> str:
    """One line per skip reason with its count of rows ('' when every row was usable); with `examples`, up to
    that many of the rows kept in attrs['skipped_rows'] under each, as 'e.g. <file>:<line> (<op type>)', so that
    the user can find them."""
    skipped = df.attrs.get("skipped", {})
    where: dict = {}
    for ex in df.attrs.get("skipped_rows", []):
        where.setdefault(ex["reason"], []).append(ex)
    lines = []
    for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {n:6d}  {reason}")
        for ex in where.get(reason, [])[:examples]:
            op_type = f" ({ex['op_type']})" if ex.get("op_type") else ""
            lines.append(f"          e.g. {ex['source']}:{ex['line']}{op_type}")
    return "\n".join(lines)


def skipped_files_summary(df: pd.DataFrame) -> str:
    """One line per file that gave no row: '  <file>: <reason>' ('' when there is none)."""
    return "\n".join(f"  {f['source']}: {f['reason']}" for f in df.attrs.get("skipped_files", []))


# ---------------------------------------------------------------------------------------------
# profiler row -> perfmodel.predict keyword arguments

_ABSENT_DTYPES = ("", "undefined", "null")


def _slots(row) -> list:
    """(shape, dtype) of each input position; None where the profiler left the slot empty (an absent optional
    input: no shape and no dtype, or DT_UNDEFINED). An empty shape with a dtype stays: a 0-d tensor to an
    elementwise op, an absent optional input to the others (they take no 0-d one)."""
    shapes = list(row["input_shapes"])
    if len(row["input_dtypes"]) > len(shapes):     # which dtype belongs to which input is then a guess
        raise ValueError(f"{len(row['input_dtypes'])} input dtypes for {len(shapes)} input shapes")
    dtypes = list(row["input_dtypes"]) + [""] * (len(shapes) - len(row["input_dtypes"]))
    return [None if s == () and d in _ABSENT_DTYPES else (s, d) for s, d in zip(shapes, dtypes)]


def _specs(row) -> list[tuple[tuple, str]]:
    """The inputs present, in order (the empty slots dropped)."""
    return [e for e in _slots(row) if e is not None]


def _tensors(entries) -> list:
    """The entries that are tensors with a shape (not empty slots or 0-d placeholders)."""
    return [e for e in entries if e is not None and e[0] != ()]


def _nz(row, i: int) -> bool:
    """Input i is stored FRACTAL_NZ (the profile's Input Formats)."""
    formats = list(row.get("input_formats") or [])
    return i < len(formats) and "NZ" in str(formats[i]).upper()


def _spec(shape, dtype) -> TensorSpec:
    # uint64 quant scales carry the same bits as int64 ones (npu_trans_quant_param output)
    return TensorSpec(shape, "int64" if dtype == "uint64" else dtype)


_FLOATS = {"float16", "bfloat16", "float32"}


def to_predict_args(row) -> dict:
    """Keyword arguments for `perfmodel.predict(row['op'], product, **args)` from one profile row.

    The profiler records shapes and dtypes but not every attribute; these are reconstructed:
    dynamic quant: inputs told apart by dtype (float 1-D/2-D = smooth_scales, int = group_index),
    dst_type from y's dtype (int4, or int32 = packed int4 -> 'int4'); fake quant: axis = the first
    dimension whose size equals len(scale), quant range int8 [-128, 127] (latency does not depend
    on it); quant matmul: K from x1, N from the output (an x2 recorded [N, K] in ND format, N != K, is the
    transpose of a contiguous [N, K] weight: TensorSpec((N, K)).T; a FRACTAL_NZ input format sets x2_format and
    x2 [K, N]), optional inputs by position when the profile keeps
    empty slots (QuantBatchMatmulV3: offset, bias, pertoken_scale), else by dtype/length (the last float32
    (m,) input with a float output is the per-token scale), output_dtype from the output; moe routing:
    active_num from the expanded_x rows, scale 1.0, offset 0.0; TransQuantParamV2: the scale and an offset
    when there is a second input; indexer epilog: tensors by dtype,
    quant_mode from the scale dtype (float32 -> 1, float8_e8m0 -> 0); grouped matmul: the weight
    transposed when its last dimension is x's K (a FRACTAL_NZ weight: weight_format NZ, N from the output), bias
    the float [E, N] input, and the rows split evenly over the E groups (the profiler records group_list's
    shape, not its values). Empty slots (absent optional inputs) are absent. Raises ValueError (with the
    reason) when the row does not determine the call.
    """
    op = row["op"]
    specs = _specs(row)
    if not specs:
        raise ValueError("no input shapes (torch_npu's profiler records them with record_shapes=True)")
    outs = list(zip(row.get("output_shapes") or [], row.get("output_dtypes") or []))
    try:
        if op in ("npu_dynamic_quant", "npu_dynamic_quant_asymmetric"):
            (xs, xd), rest = specs[0], _tensors(specs[1:])
            args = {"x": _spec(xs, xd)}
            for s, d in rest:
                if d in _FLOATS and "smooth_scales" not in args:
                    args["smooth_scales"] = _spec(s, d)
                elif d.startswith("int") and "group_index" not in args:
                    args["group_index"] = _spec(s, d)
            ydt = outs[0][1] if outs else "int8"
            args["dst_type"] = "int4" if ydt in ("int4", "int32") else "int8"
            return args
        if op == "indexer_compress_epilog":
            args, quant_mode = {}, 1
            for s, d in _tensors(specs):
                if d in ("float8_e4m3fn", "float8_e5m2"):
                    args["indexer_compress_cache"] = _spec(s, d)
                elif d in ("float32", "float8_e8m0"):
                    args["indexer_compress_scale"] = _spec(s, d)
                    quant_mode = 1 if d == "float32" else 0
                elif d in ("float16", "bfloat16"):
                    args["x"] = _spec(s, d)
                elif d.startswith("int"):
                    args["slot_mapping"] = _spec(s, d)
            missing = {"indexer_compress_cache", "indexer_compress_scale", "x", "slot_mapping"} - set(args)
            if missing:
                raise ValueError(f"cannot identify {sorted(missing)} from the input dtypes")
            return {**args, "quant_mode": quant_mode, "round_scale": True}
        if op == "fake_quantize_per_channel_affine_cachemask":
            if len(specs) < 3:
                raise ValueError("needs x, scale, zero_point")
            (xs, xd), (ss, sd), (zs, zd) = specs[:3]
            n = ss[0] if len(ss) == 1 else None
            axes = [i for i, d in enumerate(xs) if d == n]
            if not axes:
                raise ValueError(f"no axis of x {xs} matches scale {ss}")
            return {"x": _spec(xs, xd), "scale": _spec(ss, sd), "zero_point": _spec(zs, zd), "axis": axes[0],
                    "quant_min": -128, "quant_max": 127}
        if op == "npu_quant_matmul":
            if len(specs) < 3:
                raise ValueError("needs x1, x2, scale")
            (x1s, x1d), (x2s, x2d), (ss, sd) = specs[:3]
            if len(x1s) < 2:
                raise ValueError(f"x1 shape {x1s} is not a matrix")
            k = x1s[-1]
            m = x1s[-2]
            if not outs or not outs[0][1]:
                # npu_quant_matmul's default (int8) would be a guess that misreads a per-token scale as a bias
                raise ValueError("the output is not recorded (the Output Shapes and Output Data Types columns): its "
                                 "dtype decides the quant matmul's epilogue and which inputs are the per-token scale "
                                 "or the bias")
            out_dtype = outs[0][1]
            if len(outs[0][0]) >= 2:
                n, batch = outs[0][0][-1], outs[0][0][:-2]
            elif len(x2s) >= 2 and x2s[-2] == k:
                n, batch = x2s[-1], x2s[:-2]
            else:
                raise ValueError("cannot tell N without the output shape")
            if x1d != "int8" or x2d != "int8":
                raise ValueError(f"only int8 x int8 is mapped, got {x1d} x {x2d}")
            nz = _nz(row, 1)             # stored FRACTAL_NZ: the profile shows the fractal storage shape
            # x2 is rebuilt from x1's K and the output's N: its recorded shape must agree, else the row is refused
            # (an NZ weight may be recorded in its fractal storage shape or, by some versions, its ND one)
            plain = len(x2s) >= 2 and tuple(x2s[-2:]) in ((k, n), (n, k))
            fractal = nz and len(x2s) >= 4 and min(x2s[-2:]) > 0 and x2s[-4] == -(-n // x2s[-1]) \
                and x2s[-3] == -(-k // x2s[-2])
            if not (plain or fractal):
                raise ValueError(f"x2 shape {x2s} is not [K, N] or [N, K]" + (
                    ", nor the FRACTAL_NZ storage (ceil(N/n0), ceil(K/k0), k0, n0)," if nz else "")
                    + f" of K = {k} (x1) and N = {n} (the output)")
            x2_batch = () if nz or len(x2s) <= 2 else tuple(batch)
            # The profile records the kernel's input descriptor. aclnn's QuantMatmul passes a transposed x2 (w.T
            # of a contiguous [n, k] weight, as LinearA8W8Quant does) as its [n, k] storage with transpose_x2 set,
            # so an ND x2 recorded [n, k] is that transpose (it changes the Ascend 950 tiling). When n == k the
            # shape cannot tell the two layouts apart: read as contiguous [k, n], as before.
            transposed = not nz and len(x2s) >= 2 and tuple(x2s[-2:]) == (n, k) and n != k
            x2 = _spec(x2_batch + (n, k), x2d).T if transposed else _spec(x2_batch + (k, n), x2d)
            args = {"x1": _spec(x1s, x1d), "x2": x2, "scale": _spec(ss, sd)}
            if nz:
                args["x2_format"] = "NZ"
            slots = _slots(row)[3:]
            if str(row.get("op_type", "")).strip().lower() == "quantbatchmatmulv3" and (len(slots) >= 3 or any(
                    e is None or e[0] == () for e in slots)):
                # the op's inputs in order: x1, x2, scale, offset, bias, pertoken_scale; a profile that keeps the
                # absent ones as empty slots says which is which
                for name, e in zip(("offset", "bias", "pertoken_scale"), slots):
                    if e is not None and e[0] != ():
                        args[name] = _spec(*e)
            else:
                # present inputs only: a per-token scale is the last, float32 (m,), with a float output (so
                # also when m == n); an offset goes with int8 output; anything else is the bias
                rest = _tensors(slots)
                if rest and rest[-1][1] == "float32" and len(rest[-1][0]) == 1 and rest[-1][0][0] == m \
                        and out_dtype in ("float16", "bfloat16"):
                    args["pertoken_scale"] = _spec(*rest.pop())
                rows = math.prod(x1s[:-1])
                if rest and len(x1s) > 2 and rest[-1][1] == "float32" and tuple(rest[-1][0]) == (rows,) \
                        and rows != n and out_dtype in ("float16", "bfloat16"):
                    # one scale per row of a batched x1 (b*m) looks like a per-token scale, but
                    # npusim.npu_quant_matmul takes pertoken_scale as (m,) only; read as a bias it would fail
                    # naming a bias the profile may not hold, so say which input it is
                    raise ValueError(f"the last input {tuple(rest[-1][0])} float32 would be read as bias (n = {n}): "
                                     f"its length is x1's b*m = {rows}, a per-token scale of the batched x1 "
                                     f"{list(x1s)}, which npusim.npu_quant_matmul takes as (m,) = ({m},) only")
                for s, d in rest:
                    if d == "float32" and out_dtype == "int8" and "offset" not in args:
                        args["offset"] = _spec(s, d)
                    elif "bias" not in args:
                        args["bias"] = _spec(s, d)
            args["output_dtype"] = out_dtype
            return args
        if op == "npu_trans_quant_param":        # scale, then the optional offset, both float32
            (ss, sd), rest = specs[0], _tensors(specs[1:])
            args = {"scale": _spec(ss, sd)}
            if rest:
                args["offset"] = _spec(*rest[0])
            return args
        if op == "moe_init_routing_quant":
            if len(specs) < 3:
                raise ValueError("needs x, row_idx, expert_idx")
            (xs, xd), (rs, rd), (es, ed) = specs[:3]
            n, k = es[0], es[1] if len(es) > 1 else 1
            active = n
            if outs and outs[0][0] and k:
                active = min(n, outs[0][0][0] // k)
            return {"x": _spec(xs, xd), "row_idx": _spec(rs, rd), "expert_idx": _spec(es, ed),
                    "active_num": int(active), "scale": 1.0, "offset": 0.0}
        if op in ("add", "maximum"):
            if len(specs) < 2:
                raise ValueError("needs x, y")
            return {"x": _spec(*specs[0]), "y": _spec(*specs[1])}
        if op in ("sqrt", "sigmoid", "gelu"):
            return {"x": _spec(*specs[0])}
        if op == "matmul":
            if len(specs) < 2 or not outs or len(outs[0][0]) != 2:
                raise ValueError("needs a, b and a 2-D output")
            if len(_tensors(specs[2:])) or outs[0][1] not in ("float16", "bfloat16"):
                raise ValueError("the generic matmul model has no bias and a float16/bfloat16 output, got "
                                 f"{len(_tensors(specs[2:]))} more input(s) and a {outs[0][1]} output")
            (as_, ad), (bs, bd) = specs[:2]
            m, n = outs[0][0]
            if len(as_) != 2:
                raise ValueError(f"a shape {as_} is not 2-D")
            if _nz(row, 1):
                raise ValueError("the generic matmul model costs an ND weight; b is recorded FRACTAL_NZ")
            k = as_[1] if as_[0] == m else as_[0]
            if tuple(bs) not in ((k, n), (n, k)):       # b rebuilt from a's K and the output's N must agree
                raise ValueError(f"b shape {tuple(bs)} is not [K, N] or [N, K] of K = {k} (a) and N = {n} (the output)")
            return {"a": _spec((m, k), ad), "b": _spec((k, n), bd)}
        if op == "grouped_matmul":
            nz = _nz(row, 1)             # an NZ weight [E, N/n0, K/k0, k0, n0] as stored; N from the output
            if nz and len(specs) >= 2 and len(specs[1][0]) == 5 and outs and len(outs[0][0]) == 2:
                (xs, xd), (ws, wd) = specs[:2]
                ws = (ws[0], xs[-1], outs[0][0][-1])
            elif len(specs) < 2 or len(specs[0][0]) != 2 or len(specs[1][0]) != 3:
                raise ValueError("needs x [M,K] and one weight [E,K,N] (or [E,N,K], or [E,N1,K1,k0,n0] FRACTAL_NZ)")
            else:
                (xs, xd), (ws, wd) = specs[:2]
            m, k = xs
            e = ws[0]
            args = {"x": _spec(xs, xd), "weight": _spec(ws, wd), "transpose_weight": ws[1] != k and ws[2] == k,
                    "group_list": even_group_list(m, e)}
            if nz:
                args["weight_format"] = "NZ"
            n = ws[1] if args["transpose_weight"] else ws[2]
            for s_, d in specs[2:]:
                if d in _FLOATS and tuple(s_) == (e, n):
                    args["bias"] = _spec(s_, d)
            return args
    except (TypeError, IndexError) as exc:
        raise ValueError(f"{op}: cannot map inputs {row['input_shapes']} {row['input_dtypes']}: {exc}") from None
    raise ValueError(f"operator {op!r} has no argument mapping")
