"""The `npusim` command: predict, record, sweep, compare, calibrate, plot, list.

    npusim predict npu_quant_matmul x1=1024x7168:int8 x2=7168x4096:int8 scale=4096:float32 output_dtype=bfloat16
    npusim record --torch-npu --product ascend-950pr my_layer.py  # the kernels a script launches, predicted
    npusim sweep                                  # default sweep -> npusim-out/sweep.csv + figures
    npusim sweep --ops npu_quant_matmul --products atlas-a2 atlas-a3 --tokens 1:8192 --dtypes bf16
    npusim sweep --config my_sweep.toml --out out/
    npusim compare                                # the packaged calibration set (perfmodel/data/)
    npusim compare --profiles PROF_DIR/ --product atlas-a2
    npusim calibrate --profiles op_summary_0.csv --product atlas-a2 --output cal.json
    npusim plot --sweep npusim-out/sweep.csv --kind roofline
    npusim list                                   # operators, products, dtypes, epilogues

Every command that writes files prints their paths at the end. Mistakes (unknown names, bad values, missing
files, files with no usable row) end with a message naming the value and the choices, and exit
status 2 (1 when the input was readable but nothing in it could be used). scripts/{predict,record,sweep,
compare,calibrate,plot}.py run the same subcommands from a checkout.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import runpy
import sys
import textwrap
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

import npusim
from npusim.plan import TensorSpec
from npusim.products import PRODUCTS, get_product, socs_of
from perfmodel import compare as cmp
from perfmodel import plots, sweep
from perfmodel.calibration import load_calibration
from perfmodel.hw import hardware
from perfmodel.model import PIPES
from perfmodel.predict import (L2_STATES, OPERATORS, check_operator, check_product, op_parameters, predict,
                               supported_products)
from perfmodel.profiles import skipped_files_summary, skipped_summary
from perfmodel.published import FITTED_TRUST, measured_coverage, read_timings

__all__ = ["main", "build_parser"]

DEFAULT_OUT = "npusim-out"
PER_ROW_MAX = 40               # compare prints every row up to this many, else the worst launches
LIST_MAX = 20                  # rows of a table of failures printed before '... and N more'


class UsageError(ValueError):
    """A mistake in the command line or its input files: message printed, exit status 2."""


class NothingUsable(ValueError):
    """Input read, but nothing in it could be used: message printed, exit status 1."""


def _sizes(text: str) -> list[int]:
    """'1,4,16' -> [1, 4, 16]; 'a:b' -> a, 2a, 4a, ... up to b (the powers of two when a is one)."""
    out = []
    try:
        for part in text.split(","):
            if ":" in part:
                lo, hi = (int(v) for v in part.split(":"))
                if lo < 1 or hi > sweep.MAX_DIM:
                    raise ValueError
                t = lo
                while t <= hi:
                    out.append(t)
                    t *= 2
            elif part.strip():
                out.append(int(part))
    except ValueError:
        out = []
    if not out or min(out) < 1 or max(out) > sweep.MAX_DIM:
        raise argparse.ArgumentTypeError(f"expected positive integers ('1 16 256', '1,16,256' or '1:4096' for "
                                         f"1, 2, 4, ..., 4096), got {text!r}")
    return out


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _flat(lists):
    return None if lists is None else [v for sub in lists for v in sub]


def _print_table(df: pd.DataFrame, title: str, float_format="{:.4g}", limit: int | None = None):
    print(f"\n{title}")
    if not len(df):
        print("  (none)")
        return
    with pd.option_context("display.max_columns", None, "display.width", 220, "display.max_colwidth", 70,
                           "display.float_format", float_format.format):
        shown = df.head(limit) if limit else df
        print(shown.to_string(index=False, na_rep=""))        # blank, not NaN, where a value does not apply
    if limit and len(df) > limit:
        print(f"  ... and {len(df) - limit} more")


def _print_skipped(skipped: pd.DataFrame) -> None:
    """A sweep's skipped points, one wrapped entry per operator, product and reason (the reasons are sentences: a
    table of them runs hundreds of characters wide)."""
    print("\nskipped points (operator on product, how many: reason):")
    groups = skipped.fillna({"reason": ""}).groupby(["op", "product", "reason"], sort=True).size()
    for k, ((op, product, reason), n) in enumerate(groups.items()):
        if k == LIST_MAX:
            print(f"  ... and {len(groups) - LIST_MAX} more")
            break
        print(textwrap.fill(f"{op} on {product}, {n} point{'s' if n > 1 else ''}: {reason}", 110,
                            initial_indent="  - ", subsequent_indent="    "))


def _note_pipe_tokens(df: pd.DataFrame, tokens) -> None:
    """Say so when --pipe-tokens names a token count the sweep does not hold: the bars show the nearest one."""
    swept = pd.to_numeric(df.loc[df["status"] == "ok", "tokens"], errors="coerce").dropna()
    if tokens is not None and len(swept) and tokens not in set(swept):
        print(f"note: --pipe-tokens {tokens} is not a swept token count; the pipe bars show the nearest one swept "
              f"(each figure's title names it)")


def _print_paths(paths):
    print("\nwrote:")
    for p in paths:
        print(f"  {p}")


# ---------------------------------------------------------------------------------------------

def _arg_value(name: str, text: str):
    """One `name=value` argument of `npusim predict`: 'AxBxC:dtype' a tensor (TensorSpec; 'AxB:dtype:T' the
    transpose of a contiguous BxA tensor, as `w.T`), '1,2,3' or '[1,2,3]' a tuple of ints (grouped_matmul's
    group_list), 'none' / 'true' / 'false', an int, a float, else the text (a dtype name, 'pertoken', ...)."""
    if ":" in text:
        shape, _, dtype = text.partition(":")
        dtype, _, layout = dtype.partition(":")
        dims = shape.lower().split("x") if shape else []
        if not all(d.strip().isdigit() for d in dims):
            raise UsageError(f"argument {name}={text!r}: a tensor is its shape and dtype, e.g. {name}=1024x7168:int8 "
                             f"(or {name}=:float32 for a 0-d tensor)")
        if layout not in ("", "T"):
            raise UsageError(f"argument {name}={text!r}: after the dtype only ':T' may follow (the tensor is the "
                             f"transpose of a contiguous one, as w.T), got {layout!r}")
        try:
            return TensorSpec(tuple(int(d) for d in dims), dtype, transposed=layout == "T")
        except ValueError as exc:
            raise UsageError(f"argument {name}={text!r}: {exc}") from None
    body = text.strip()
    if re.fullmatch(r"\d+(\s*[xX]\s*\d+)+", body):
        raise UsageError(f"argument {name}={text!r}: a tensor is written SHAPE:DTYPE, e.g. {name}={body}:bfloat16 "
                         "(the dtype is missing)")
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    if "," in body or text.strip().startswith("["):
        try:
            return tuple(int(v) for v in body.split(",") if v.strip())
        except ValueError:
            raise UsageError(f"argument {name}={text!r}: a list holds integers, e.g. {name}=128,256,384") from None
    low = body.lower()
    if low in ("none", "true", "false"):
        return {"none": None, "true": True, "false": False}[low]
    for kind in (int, float):
        try:
            return kind(body)
        except ValueError:
            pass
    return body


def _print_prediction(p) -> None:
    """A Prediction as a short report: latency, what bounds it, the kernels, the plan, the pipes and the bytes."""
    print(f"{p.op} on {p.product} ({p.soc}): {p.latency_us:.4g} us, {p.bound}-bound")
    if p.kernels:
        print("  kernels: " + ", ".join(f"{k} {t:.4g} us" for k, t in p.kernels))
    print(f"  head (launch, core start, op head) {p.head_us:.4g} us; critical core's loops {p.core_us:.4g} us; "
          f"HBM traffic alone {p.chip_us:.4g} us")
    print(f"  block dim {p.block_dim}, tiling key {p.tiling_key}")
    if p.tiles:
        print("  tiles: " + ", ".join(f"{k}={v}" for k, v in p.tiles.items()))
    if p.plan is not None and p.plan.notes:
        print(f"  plan: {p.plan.notes}")
    where = ("each kernel's critical core, summed" if len(p.kernels) > 1 else
             "the critical cube core and its vector cores"
             if p.plan is not None and p.plan.core_type == "mix" else "the critical core")
    print(f"  pipes on {where} (us): " + ", ".join(f"{k} {v:.4g}" for k, v in p.pipes_us.items() if v))
    peak = hardware(get_product(p.soc)).hbm_peak_Bps / 1e9
    # bytes read + written per second: written bytes that stay in L2 never reach HBM, so this may pass HBM's peak
    above = f" (above the {peak:.0f} GB/s HBM peak: written bytes that stay in L2 never reach HBM)" \
        if p.achieved_GBps > peak else ""
    print(f"  read {p.bytes_read / 1e6:.4g} MB, written {p.bytes_written / 1e6:.4g} MB, {p.flops / 1e9:.4g} GFLOP; "
          f"{p.achieved_GBps:.4g} GB/s read + written{above}, {p.achieved_TOPS:.4g} TOPS")


def _coverage_text(op: str, soc: str, own_calibration: bool = False) -> str:
    """What the packaged calibration set holds of `op` on `soc`: how far to trust a prediction there."""
    n = measured_coverage(op, soc)
    fitted, held = n[FITTED_TRUST], n["holdout"]
    if fitted:
        text = f"{fitted} timings of {op} on {soc} in the packaged calibration set are fitted"
        if held:
            text += f", {held} more held out of the fit"
    elif held:
        text = (f"{held} timings of {op} on {soc} in the packaged set, all held out of the fit (their error: the "
                "README's Validation section)")
    else:
        text = (f"no timing of {op} on {soc} in the packaged set: costed from the SoC's hardware facts and "
                "constants fitted on other kernels or chips")
    unfitted = []
    if n["analogue"]:
        unfitted.append(f"{n['analogue']} of another kernel standing in for it")
    if n["doubtful"]:
        unfitted.append(f"{n['doubtful']} whose sources call them doubtful")
    if unfitted:
        text += f" (never fitted: {' and '.join(unfitted)})"
    if own_calibration:
        text += "; this prediction uses your --calibration"
    return text


def cmd_predict(a) -> int:
    op = check_operator(a.op)
    args = {}
    for item in a.args:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise UsageError(f"arguments are name=value (e.g. x=4096x7168:bfloat16), got {item!r}")
        if name.strip() in args:
            raise UsageError(f"argument {name.strip()!r} given twice")
        args[name.strip()] = _arg_value(name.strip(), value)
    try:
        pred = predict(op, a.product, calibration=load_calibration(a.calibration), l2=a.l2, **args)
    except TypeError as exc:        # perfmodel.predict names an unknown or missing argument and lists them all
        text = str(exc)
        if not text.startswith(f"{op}: "):      # a value of the wrong type, found further in
            text = f"{op}: {text}; its arguments: {', '.join(op_parameters(op))}"
        raise UsageError(text) from None
    _print_prediction(pred)
    print(f"  measured: {_coverage_text(op, pred.soc, a.calibration is not None)}")
    return 0


def cmd_record(a) -> int:
    from perfmodel.record import record
    if (a.script is None) == (a.module is None):
        raise UsageError("give a SCRIPT or -m MODULE (as python takes them), one of the two")
    if a.module is not None and not a.module:
        raise UsageError("-m needs a module name (e.g. -m pytest)")
    if a.module is not None and a.script_args:
        raise UsageError("options go before -m MODULE; everything after it is the module's own")
    script = None if a.script is None else Path(a.script)
    if script is not None and not script.is_file():
        raise UsageError(f"script {a.script!r} is not a file")
    if a.csv and not Path(a.csv).resolve().parent.is_dir():       # before a long run, not after it
        raise UsageError(f"--csv {a.csv!r}: directory {str(Path(a.csv).resolve().parent)!r} does not exist")
    cal = load_calibration(a.calibration)
    # SoC names are kept as given (a product id means its default SoC): Ascend910B4 is not atlas-a2's 910B2
    product = check_product(a.product).soc if a.product else None
    also = list(dict.fromkeys(check_product(p.strip()).soc for item in a.also or [] for p in item.split(",")
                              if p.strip()))      # each SoC once
    # record's own options after SCRIPT went to the script (argv after it is the script's): say so, since a script
    # that tolerates unknown arguments runs on without them
    own = sorted({arg.split("=")[0] for arg in a.script_args} & _RECORD_OPTIONS)
    if own:
        print(f"npusim record: note: {', '.join(own)} came after SCRIPT, so {'it goes' if len(own) == 1 else 'they go'} "
              f"to the script; put record's options before SCRIPT", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        if a.torch_npu or a.npu_device:
            try:
                import npusim.torch_npu as stand_in
            except ImportError as exc:
                raise UsageError(f"--torch-npu needs torch ({exc}); see the README's torch face section") from None
            stack.enter_context(stand_in.install(product=product, npu_device=a.npu_device))
        elif product:
            stack.enter_context(_environ("NPUSIM_PRODUCT", product))
        rec = stack.enter_context(record(meta=a.meta))
        status = _run_script(script, a.script_args) if script else _run_module(a.module[0], a.module[1:])
    print(f"\nnpusim record: {script or '-m ' + ' '.join(a.module)}")
    if status:
        print(f"the run stopped with exit status {status} (its error is above): what follows is what it launched "
              f"before, a partial record")
    others = []
    if not len(rec):
        print("no launches recorded: the run made no call through npusim (only its operators are recorded: other "
              "torch_npu operators are not emulated)")
        asked = rec.report(calibration=cal, l2=a.l2).splitlines()[1:]     # what it asked for and npusim lacks
        if asked:
            print("\n".join(asked))
    else:
        print(rec.report(calibration=cal, l2=a.l2))
        recorded = {plan.soc.soc for plan, _details in rec.launches}
        if product and product not in recorded:
            print(f"note: --product {a.product} was not used by these launches (a script calling npusim's numpy "
                  f"functions names its product itself); --also {a.product} plans them for it")
        also = [soc for soc in also if soc not in recorded]      # (already reported above)
        others = [rec.on(soc) for soc in also]
        for soc, other in zip(also, others):
            print(f"\nthe same launches planned for {soc} ({check_product(soc).product}):")
            print(other.report(calibration=cal, l2=a.l2))
    if a.csv:
        # (l2 named in the file: a warm and a cold CSV are otherwise alike)
        pd.concat([r.table(calibration=cal, l2=a.l2, include_refused=True) for r in [rec, *others]],
                  ignore_index=True).assign(l2=a.l2).to_csv(a.csv, index=False)
        _print_paths([a.csv])
    return status


# record's options (a script's arguments that look like them were probably meant for record)
_RECORD_OPTIONS = {"--torch-npu", "--npu-device", "--product", "--also", "--csv", "--l2", "--calibration", "--meta"}


@contextlib.contextmanager
def _environ(name: str, value: str):
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _run_script(script: Path, args) -> int:
    """Run a Python file as `python script args` would (as __main__, its directory first on sys.path); its
    exit status (1 with the traceback printed when it raised)."""
    return _run(lambda: runpy.run_path(str(script), run_name="__main__"), [str(script), *args],
                str(script.resolve().parent))


def _run_module(module: str, args) -> int:
    """Run a module as `python -m module args` would (the working directory first on sys.path)."""
    return _run(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), [module, *args], os.getcwd())


def _run(main, argv, first_path: str) -> int:
    """Run main() with sys.argv and sys.path as python sets them; its exit status (1 with the traceback printed
    when it raised)."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = list(argv)
    sys.path.insert(0, first_path)
    try:
        main()
        return 0
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:       # Ctrl-C: python's status, and what ran until then is still reported
        print("KeyboardInterrupt", file=sys.stderr)
        return 130
    except Exception as exc:    # noqa: BLE001 -- the script's own error: shown, and what it launched is still reported
        tb = exc.__traceback__          # from the script's own frames on, as python shows it
        while tb is not None and (tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__)
                                  or tb.tb_frame.f_code.co_filename.startswith("<frozen runpy")):
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "torch_npu":
            print("npusim record: hint: --torch-npu gives the run npusim's torch_npu stand-in", file=sys.stderr)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def cmd_sweep(a) -> int:
    cfg = sweep.load_config(a.config) if a.config else {}
    flags = {"ops": a.ops, "products": a.products, "tokens": _flat(a.tokens), "hidden": _flat(a.hidden),
             "dtypes": a.dtypes, "n": _flat(a.n), "topk": _flat(a.topk), "epilogues": a.epilogues,
             "weight_formats": a.weight_formats}
    axes = {k: (v if v is not None else cfg.get(k)) for k, v in flags.items()}
    try:
        points = sweep.grid(**axes, overrides=cfg.get("overrides"))
    except ValueError as exc:
        if a.config and str(exc).startswith("[op."):          # the [op.<name>] tables live in the file
            raise UsageError(f"{a.config}: {exc}") from None
        raise
    df = sweep.run_sweep(points, calibration=a.calibration or cfg.get("calibration"),
                         progress=False if a.quiet else None, l2=a.l2 or cfg.get("l2", "cold"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "sweep.csv"
    df.to_csv(csv_path, index=False)
    ok = df[df["status"] == "ok"]
    print(f"sweep: {len(df)} points, {len(ok)} predicted, {len(df) - len(ok)} skipped")
    if len(df) - len(ok):
        _print_skipped(df.loc[df["status"] != "ok"])
    paths = [str(csv_path)]
    if not a.no_plots and len(ok):
        _note_pipe_tokens(df, a.pipe_tokens)
        paths += plots.plot_sweep(df, out / "figures", tokens=a.pipe_tokens)
    _print_paths(paths)
    if not len(ok):
        raise NothingUsable("no point of the sweep could be predicted (reasons above)")
    return 0


def _profile_paths(paths) -> list:
    """The --profiles paths, each an existing file or a directory holding profiler CSVs."""
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"--profiles: {p}: no such file or directory")
        if p.is_dir() and not (any(p.rglob("*op_summary*.csv")) or any(p.rglob("*kernel_details*.csv"))):
            raise UsageError(f"--profiles: {p}: directory holds no op_summary*.csv or kernel_details*.csv file")
    return paths


SKIP_EXAMPLES = 3          # unusable profile rows shown per reason, as file:line


def _measured(a) -> pd.DataFrame:
    frames = []
    if a.profiles:
        if not a.product:
            raise UsageError("--product is required with --profiles: a profile does not say which chip it was "
                             f"taken on (products: {', '.join(PRODUCTS)}, or an SoC name; see `npusim list`)")
        m = cmp.measured_from_profiles(_profile_paths(a.profiles), a.product, unitless_unit=a.time_unit)
        print(f"profiles: {len(m)} usable rows from {len(m.attrs['files'])} file(s) in {len(a.profiles)} path(s)")
        for f in m.attrs["repeated_files"]:
            print(f"note: {f} was named more than once in --profiles (a directory and a file in it?); read once")
        for u in m.attrs["unitless_durations"]:     # the file cannot say; a wrong guess is off by 1000x
            print(f"note: {u['source']}: {u['header']!r} has no unit; read as {u['unit']} (--time-unit us|ns sets it)")
        if m.attrs.get("skipped_files"):
            print("profile files that gave no row (file: reason):")
            print(skipped_files_summary(m))
        if m.attrs.get("skipped"):
            print(f"unusable profile rows (count, reason; up to {SKIP_EXAMPLES} examples as file:line):")
            print(skipped_summary(m, examples=SKIP_EXAMPLES))
        hint = cmp.core_count_hint(m, a.product)
        if hint:
            print(f"hint: {hint}")
        frames.append(m)
    elif a.product:
        raise UsageError("--product applies to --profiles only (the published set names its products)")
    if a.published is not None or not a.profiles:
        if a.published is None:
            m = cmp.calibration_set()
            print(f"packaged calibration set (measured_timings.csv + published_timings.csv in "
                  f"{cmp.default_published_path().parent}): {len(m)} usable rows")
        elif Path(a.published).is_file():
            try:
                m = read_timings(a.published)
            except ValueError as exc:
                raise UsageError(f"--published: {exc}") from None
            print(f"published set {a.published}: {len(m)} usable rows")
        else:
            raise UsageError(f"--published: {a.published}: no such file")
        if m.attrs.get("skipped"):
            print("unusable rows (count, reason):")
            print(skipped_summary(m))
        frames.append(m)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df.attrs = {}
    if not len(df):
        raise NothingUsable("no usable measured row (reasons above)")
    return df


def cmd_compare(a) -> int:
    joined = cmp.compare(_measured(a), calibration=a.calibration, l2=a.l2)
    ok = joined["status"] == "ok"
    summary = cmp.summarize(joined)
    launches = cmp.by_launch(joined)
    _print_table(summary, "MAPE per operator and product, over launches (a launch's measured time: the median of "
                 "its rows; APE = |predicted - measured| / measured; bias_pct: mean signed error; within_*_launches: "
                 "launches within 10% / 25%; same_launch_*: the launches measured on the plan's core count; "
                 "mape_over_rows_pct: over every row, warm-ups and repeats included):", float_format="{:.1f}")
    if a.published is None and not a.profiles:
        print("(in-sample: the shipped calibration was fitted to the 'measured' rows; doubtful, analogue and holdout\n"
              " rows are predicted, never fitted. Cross-validated errors: python -m perfmodel.fit_report --cv)")
    if len(joined) <= PER_ROW_MAX:
        _print_table(cmp.per_row(joined), "per row (error = (predicted - measured) / measured, %):",
                     float_format="{:.2f}")
    else:
        print(f"\n{len(joined)} rows: {len(launches)} distinct launches (call and measured block dim)")
    if len(joined) > PER_ROW_MAX or a.worst is not None:        # a --worst asked for is listed in any case
        k = a.worst or 5
        _print_table(cmp.worst(launches, k), f"worst {k} launches (measured = median of its rows):")
    failed = launches[launches["status"] != "ok"]
    if len(failed):
        first_row = [f"{src}:{line}" if not pd.isna(line) else str(src)
                     for src, line in zip(failed["source"], failed["line"])]
        _print_table(failed.assign(first_row=first_row)[["op", "product", "label", "rows", "first_row", "reason"]],
                     "launches the model could not predict (first_row: where its first row is):", limit=LIST_MAX)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [str(out / "compare.csv"), str(out / "compare_summary.csv")]
    launches.to_csv(paths[0], index=False)
    summary.to_csv(paths[1], index=False)
    if not a.no_plots and ok.any():
        cal = f", calibration {Path(a.calibration).name}" if a.calibration else ""
        paths += plots.plot_pred_vs_measured(
            launches, out / "figures" / "pred_vs_measured",
            title=f"Predicted vs measured latency: {len(joined)} rows, {len(launches)} launches{cal}")
        paths += plots.plot_pipe_compare(launches, out / "figures" / "pipes_pred_vs_measured")
    _print_paths(paths)
    if not ok.any():
        raise NothingUsable("the model could predict none of the measured rows (reasons above)")
    return 0


def _fitted_packaged_rows(m: pd.DataFrame) -> pd.DataFrame:
    """The packaged set's rows a fit may use: those of the trust level a fit uses (FITTED_TRUST)."""
    return m[(m["trust"] == FITTED_TRUST).to_numpy()].reset_index(drop=True)


def _before_after(rows: pd.DataFrame, cal, title: str) -> None:
    """MAPE per operator and product of `rows` under the shipped calibration and under `cal`, side by side."""
    before = cmp.summarize(cmp.compare(rows))
    after = cmp.summarize(cmp.compare(rows, calibration=cal))
    cols = ["op", "product", "mape_pct", "max_ape_pct"]
    table = before[cols[:2] + ["launches"] + cols[2:]].merge(after[cols], on=["op", "product"], how="outer",
                                                      suffixes=("_before", "_after"))
    _print_table(table, title)


def _launch_medians(rows: pd.DataFrame, launch) -> pd.DataFrame:
    """One row per launch (compare's launch: the same call; and the same measured block dim), its first, with the
    median of the launch's measured times, as `npusim compare` reports a launch. A profile repeats each launch
    many times: fitted row by row, a kernel's warm-up rows (a first call loads its binary, on cold caches) pull
    every constant, and the fit's cost grows with the profile's rows instead of its launches."""
    bd = pd.to_numeric(rows["block_dim"], errors="coerce").fillna(-1).to_numpy() if "block_dim" in rows \
        else np.zeros(len(rows))
    key = pd.MultiIndex.from_arrays([launch, bd])
    median = pd.Series(pd.to_numeric(rows["measured_us"], errors="coerce").to_numpy()).groupby(key).transform("median")
    first = ~key.duplicated()
    out = rows.reset_index(drop=True).assign(measured_us=median.to_numpy())[first].reset_index(drop=True)
    if len(out) < len(rows):
        print(f"fitting {len(out)} launch{'es' if len(out) != 1 else ''}: the median of their {len(rows)} rows "
              f"(as `npusim compare` reports "
              f"them; a launch's warm-up or outlier rows do not move the fit)")
    return out


def _underdetermined(rows: pd.DataFrame, params) -> list:
    """Per family, a sentence when `rows` (one per launch) are fewer than the parameters fit() would fit."""
    from perfmodel import fitting
    by_family: dict = {}
    for w, *_ in fitting.works_of(rows):
        by_family.setdefault(w.hw.family, []).append(w)
    out = []
    for fam, works in by_family.items():
        names = fitting.parameter_names(fam, works, params)
        if len(works) < len(names):
            out.append(f"{len(works)} launch{' of the ' + fam + ' family informs' if len(works) == 1 else 'es of the ' + fam + ' family inform'} "
                       f"{len(names)} parameters ({', '.join(names)}): the fit is under-determined, and the "
                       f"prior (the shipped calibration) holds the rest only weakly")
    return out


def cmd_calibrate(a) -> int:
    if a.output is None and str(a.out).lower().endswith(".json"):
        raise UsageError(f"--out {a.out}: --out is the output directory; the calibration file is --output JSON")
    measured = _measured(a)
    from perfmodel import calibration, fitting
    given = bool(a.profiles) or a.published is not None
    if not given:                   # the packaged set: never fit its held-out, doubtful or analogue rows
        n = len(measured)
        measured = _fitted_packaged_rows(measured)
        print(f"fitting the packaged set's {len(measured)} '{FITTED_TRUST}' rows ({n - len(measured)} held-out, "
              "doubtful or analogue rows are never fitted)")
    before_rows = cmp.compare(measured)
    if a.all_rows:
        keep = before_rows["status"] == "ok"
    else:
        # a measured launch other than the planned one (e.g. a 1-core demo of a 48-core kernel) is a
        # different kernel, not a model error: fitting to it would distort every other prediction
        keep = (before_rows["status"] == "ok") & before_rows["same_launch"]
        dropped = cmp.by_launch(before_rows[~keep])
        dropped["reason"] = [r if isinstance(r, str) and r else "measured on another core count than the plan's"
                             for r in dropped["reason"]]
        _print_table(dropped[["op", "product", "label", "rows", "block_dim", "predicted_block_dim", "reason"]],
                     "launches left out of the fit (launch differs from the plan, or not predictable; "
                     "--all-rows keeps the predictable ones):", limit=LIST_MAX)
    keep = keep.to_numpy()
    fit_rows = _launch_medians(measured[keep], before_rows["launch"].to_numpy()[keep])
    if not len(fit_rows):
        hint = cmp.core_count_hint(measured, a.product) if a.profiles else ""
        raise NothingUsable("no rows left to fit" + (f": {hint}" if hint else ""))
    if a.fit_product:
        check_product(a.fit_product)
    params = a.params               # None: the parameters each family's rows can inform (fitting.FIT_PARAMS)
    for name in params or ():
        if name not in calibration.PARAMS:
            raise UsageError(f"--params: unknown calibration parameter {name!r}; "
                             f"known: {', '.join(calibration.PARAMS)}")
    # fit your rows together with the packaged set's: a few rows then move what they inform, and the constants they
    # cannot pin down stay where the packaged measurements hold them (fitted alone, ten rows of two operators
    # moved shared constants and tripled another operator's error)
    packaged = None
    if given and not a.only_given_rows:
        packaged = _fitted_packaged_rows(cmp.calibration_set())
        print(f"fitting your {len(fit_rows)} launches together with the packaged set's {len(packaged)} "
              f"'{FITTED_TRUST}' rows (--only-given-rows fits yours alone)")
    if packaged is None and given:
        for text in _underdetermined(fit_rows, params):
            print(f"warning: {text}; fit with the packaged set (without --only-given-rows), or name fewer "
                  f"parameters with --params", file=sys.stderr)
    pooled = fit_rows if packaged is None else pd.concat([fit_rows, packaged], ignore_index=True)
    # with the packaged set, fitted as the shipped calibration was (python -m perfmodel.fit_report: from the TOML
    # defaults, base None), so that without rows of yours it is reproduced; your rows alone: near the shipped one
    base = calibration.default_calibration() if packaged is None and given else None
    cal = fitting.calibrate(pooled, product=a.fit_product, params=params, base=base)
    path = Path(a.output) if a.output else Path(a.out) / "calibration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    cal.save(path)
    _before_after(fit_rows, cal, "MAPE on your fitted rows, before and after calibration (in-sample):"
                  if given else "MAPE on the fitted rows, before and after calibration (in-sample):")
    if given:               # what the calibration does to the packaged measurements too
        ref = packaged if packaged is not None else _fitted_packaged_rows(cmp.calibration_set())
        _before_after(ref, cal, "MAPE on the packaged set's measured rows, before and after (check what else moved):")
    _print_paths([str(path)])
    return 0


def cmd_plot(a) -> int:
    # the layout of `npusim sweep --out DIR`: DIR/sweep.csv and DIR/figures/; a given CSV's figures go beside it
    out = Path(a.out) if a.out is not None else Path(a.sweep).parent if a.sweep else Path(DEFAULT_OUT)
    src = Path(a.sweep) if a.sweep else out / "sweep.csv"
    wrote = []
    if src.exists():
        try:
            df = pd.read_csv(src, low_memory=False)
        except (ValueError, UnicodeDecodeError) as exc:       # pandas' parser and empty-file errors
            raise UsageError(f"--sweep: {src}: not a readable CSV ({type(exc).__name__}: {exc})"[:400]) from None
        print(f"plotting {src}: {len(df)} rows")
    elif a.sweep:
        raise UsageError(f"--sweep: {src}: no such file")
    else:
        print(f"{src} not found: running the default sweep first")
        df = sweep.run_sweep(sweep.grid(), progress=None)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(src, index=False)
        wrote.append(str(src))
    kinds = ("latency", "roofline", "pipes") if a.kind == "all" else (a.kind,)
    missing = sorted({c for k in kinds for c in plots.NEEDS[k]} - set(df.columns))
    if missing:
        raise UsageError(f"--sweep: {src}: not a sweep CSV (`npusim sweep` writes one): missing columns "
                         f"{', '.join(missing)}")
    if "pipes" in kinds and "status" in df:
        _note_pipe_tokens(df, a.pipe_tokens)
    paths = plots.plot_sweep(df, out / "figures", kinds=kinds, tokens=a.pipe_tokens)
    if not paths:
        raise NothingUsable(f"{src}: no predicted row with a usable product, operator, tokens and latency to plot")
    _print_paths(wrote + paths)
    return 0


def _hardware_line(soc_name: str) -> str:
    """The facts of a SoC a capacity planner reaches for first: cores, clock, device memory size and peak
    bandwidth (the model's, perfmodel/data/<family>.toml), L2."""
    hw = hardware(get_product(soc_name))
    s = hw.soc
    cores = f"{s.aic} AIC + {s.aiv} AIV" if s.core_layout == "split" else f"{s.aic} AI Core" + (
        f" + {s.vector_cores} Vector Core" if s.vector_cores else "")
    size = f"{s.hbm_bytes / 2**30:.0f} GiB" if s.hbm_bytes else "size not in the CANN INI"
    return (f"{s.soc}: {cores} at {s.cube_mhz} MHz; device memory (HBM or DDR) {size}, "
            f"{hw.hbm_peak_Bps / 1e9:.0f} GB/s peak; L2 {s.l2_bytes / 2**20:.0f} MiB")


def cmd_list(a) -> int:
    rows = []
    swept = [op for op in OPERATORS if op in sweep.OPERATORS + sweep.EXTRA_OPERATORS]
    for op in swept:
        runs = supported_products(op)
        rows.append({"operator": op, **{p: " ".join(d.replace("bfloat", "bf").replace("float", "fp")
                                                    for d in sweep.supported_dtypes(op, p)) if p in runs else "-"
                                        for p in PRODUCTS}})
    _print_table(pd.DataFrame(rows), "operators x products: the dtypes each runs in ('-': not on that product)")
    for op in OPERATORS:
        if op not in swept:         # weight preparation: no token axis to sweep
            print(f"also (not swept): {op} on {', '.join(supported_products(op))}; its arguments: "
                  f"{', '.join(op_parameters(op))}")
    print("\nproducts (`--products` / `--product` take a product id or one of its SoC names, case-insensitive):")
    for pid, prod in PRODUCTS.items():
        print(f"  {pid:18s} {prod.name}")
        print(f"  {'':18s} SoCs: {', '.join(s.soc for s in socs_of(pid))} (default {prod.default_soc})")
        print(f"  {'':18s} {_hardware_line(prod.default_soc)}")
    print(f"\nsweep axes: {', '.join(sweep.AXES)}; dtypes: {', '.join(sweep.DTYPES)} "
          f"(default {', '.join(sweep.DEFAULT_DTYPES)} where supported)")
    print("npu_quant_matmul epilogues (--epilogues):")
    for name, text in sweep.EPILOGUES.items():
        print(f"  {name:9s} {text}")
    print("npu_quant_matmul and grouped_matmul weight formats (--weight-formats):")
    for name, text in sweep.WEIGHT_FORMATS.items():
        print(f"  {name:9s} {text}")
    print(f"per-pipe times: {', '.join(PIPES)}")
    return 0


class _Once(argparse.Action):
    """An option that may be given once: a second value is an error, not silently the one used."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, f"_{self.dest}_given", False):
            parser.error(f"{option_string} takes one value, given twice ({getattr(namespace, self.dest)} and "
                         f"{values}); for several products: `npusim sweep --products A B`, `npusim record --also P`")
        setattr(namespace, f"_{self.dest}_given", True)
        setattr(namespace, self.dest, values)


def _add_measured_args(p):
    p.add_argument("--published", metavar="CSV",
                   help="a timings CSV in the format of either packaged file, perfmodel/data/published_timings.csv "
                        "or measured_timings.csv (default when no --profiles: the packaged calibration set, both)")
    p.add_argument("--profiles", nargs="+", metavar="PATH",
                   help="msprof op_summary_*.csv / torch_npu kernel_details.csv files, or directories holding them")
    p.add_argument("--product", metavar="P", action=_Once,
                   help="product (or SoC) the profiles were taken on: required with --profiles, since a profile "
                        "does not say (`npusim list` shows the names)")
    p.add_argument("--time-unit", choices=("us", "ns"), default="us",
                   help="unit of a profile's duration header that has none (older CANN 'Task Duration'; default us)")
    p.add_argument("--calibration", metavar="JSON", help="calibration to apply to the predictions")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="npusim", description="npusim performance model: sweeps, comparison with "
                                 "measured profiles, calibration and plots.",
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"npusim {npusim.__version__}")
    sub = ap.add_subparsers(dest="command", metavar="{predict,record,sweep,compare,calibrate,plot,list}")

    pr = sub.add_parser("predict", help="one call's predicted latency with its breakdown (plan, pipes, bytes)",
                        description="Predict one launch of an operator and print the breakdown: latency and what "
                        "bounds it, the kernels launched, block dim, tiling key and tiles of the plan, per-pipe "
                        "times, bytes and achieved rates, and how many timings of the operator on that SoC the "
                        "packaged calibration set fits or holds out. Arguments are the operator's own (as in "
                        "perfmodel.predict): tensors as SHAPE:DTYPE (x=4096x7168:bfloat16), or SHAPE:DTYPE:T for "
                        "the transpose of a contiguous tensor (x2=7168x576:int8:T is w.T of a 576x7168 w), lists "
                        "as 1,2,3, numbers, true/false/none, names.",
                        epilog="examples:\n"
                        "  npusim predict npu_dynamic_quant x=4096x7168:bfloat16 --product atlas-a3\n"
                        "  npusim predict npu_quant_matmul x1=1024x7168:int8 x2=7168x4096:int8 scale=4096:float32 "
                        "output_dtype=bfloat16\n"
                        "  npusim predict grouped_matmul x=4096x7168:bfloat16 weight=8x7168x2048:bfloat16 "
                        "group_list=512,1024,1536,2048,2560,3072,3584,4096",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("op", metavar="OP", help="operator (`npusim list`)")
    pr.add_argument("args", nargs="*", metavar="NAME=VALUE", help="the operator's arguments")
    pr.add_argument("--product", default="atlas-a2", metavar="P", action=_Once, help="product id or SoC name (default atlas-a2)")
    pr.add_argument("--calibration", metavar="JSON", help="calibration written by `npusim calibrate`")
    pr.add_argument("--l2", choices=L2_STATES, default="cold",
                    help="inputs read from HBM (cold, the profilers' setting; default) or from L2 where they fit")
    pr.set_defaults(func=cmd_predict)

    r = sub.add_parser("record", help="run a Python script and predict every kernel it launches through npusim",
                       description="Run SCRIPT (as `python SCRIPT ARGS` would) while recording every kernel launch it "
                       "makes through npusim (numpy face, torch_npu stand-in, aclnn calls), then print each distinct "
                       "launch with its calls, predicted microseconds each and in all, share and bound, on the "
                       "product the emulator ran it for (perfmodel.record). The total adds up the launches' device "
                       "times: no overlap between launches, no host time.",
                       epilog="options go before SCRIPT (or -m MODULE); everything after it is the script's own.\n"
                       "examples:\n"
                       "  npusim record my_layer.py                  # a script that calls npusim itself\n"
                       "  npusim record --torch-npu --product ascend-950pr --csv launches.csv w8a8_layer.py\n"
                       "  npusim record --npu-device run_layer.py --batch 16\n"
                       "  npusim record --torch-npu --also atlas-a3,ascend-950pr w8a8_layer.py   # other products\n"
                       "  npusim record --torch-npu --meta prefill_on_meta.py --seq 32768   # shapes only, no compute\n"
                       "  npusim record --torch-npu -m pytest -q tests/test_w8a8.py   # what a test suite launches",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("script", nargs="?", metavar="SCRIPT", help="the Python file to run")
    r.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE ARGS",
                   help="run a module instead, as python -m does (e.g. -m pytest -q tests/)")
    r.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS", help="its arguments (all that follows "
                   "SCRIPT)")
    r.add_argument("--torch-npu", action="store_true",
                   help="run it with npusim's torch_npu stand-in installed (`import torch_npu` gives it; needs torch)")
    r.add_argument("--npu-device", action="store_true",
                   help="the stand-in with install(npu_device=True): .npu(), device='npu' run on the CPU")
    r.add_argument("--product", metavar="P", action=_Once, help="the torch_npu stand-in's product where the script names none: "
                   "with --torch-npu / --npu-device the installed one, else $NPUSIM_PRODUCT, which the script's own "
                   "install() reads; numpy-face and aclnn calls name theirs in each call (product=, default "
                   "atlas-a2) and do not change")
    r.add_argument("--also", action="append", metavar="P[,P...]",
                   help="also plan every launch for these products and report them (perfmodel's Recording.on: "
                   "from the launches' shapes and attributes; a launch a product refuses is listed)")
    r.add_argument("--meta", action="store_true",
                   help="also record the stand-in's calls on meta tensors (device='meta'): planned from shapes, "
                   "nothing computed, so a script can size a model at any batch in no time (perfmodel.record(meta=True))")
    r.add_argument("--calibration", metavar="JSON", help="calibration written by `npusim calibrate`")
    r.add_argument("--l2", choices=L2_STATES, default="cold",
                   help="inputs read from HBM (cold, the profilers' setting; default) or from L2 where they fit "
                   "(warm: weights too, which a real model step gets only with a weight prefetch)")
    r.add_argument("--csv", metavar="PATH", help="also write one row per launch (and per --also product), with the "
                   "pipes' breakdown")
    r.set_defaults(func=cmd_record)

    s = sub.add_parser("sweep", help="predict a grid of operators x products x shapes x dtypes to CSV + figures",
                       description="Predict a grid to <out>/sweep.csv plus figures. With no arguments: the five "
                       "operators over tokens 1, 2, 4, ..., 16384 on every product that runs each, in bfloat16 and "
                       "float16 where supported (npu_quant_matmul with both epilogues).")
    s.add_argument("--config", metavar="TOML", help="sweep file: " + ", ".join(sweep.AXES) + ", calibration, and "
                   "[op.<name>] tables overriding axes for one operator; flags override the file")
    s.add_argument("--ops", nargs="+", metavar="OP", help=f"operators (default: {' '.join(sweep.OPERATORS)}; "
                   f"also {' '.join(sweep.EXTRA_OPERATORS)})")
    s.add_argument("--products", nargs="+", metavar="P", help="product ids or SoC names (default: every product that "
                   "runs the operator; `npusim list`)")
    s.add_argument("--tokens", nargs="+", type=_sizes, metavar="T",
                   help="token counts: '1 16 256', '1,16,256' or 'A:B' (A, 2A, 4A, ... up to B: '1:4096' gives the "
                        "powers of two from 1 to 4096); default 1:16384")
    s.add_argument("--hidden", nargs="+", type=_sizes, metavar="H",
                   help=f"hidden size / K (default {sweep.DEFAULT_HIDDEN})")
    s.add_argument("--dtypes", nargs="+", metavar="D", help=f"model dtypes: {', '.join(sweep.DTYPES)} (bf16, fp16, "
                   f"fp32 too; default {' '.join(sweep.DEFAULT_DTYPES)} where the operator supports them)")
    s.add_argument("--n", nargs="+", type=_sizes, metavar="N", help=f"matmul N (default {sweep.DEFAULT_N})")
    s.add_argument("--topk", nargs="+", type=_sizes, metavar="K",
                   help=f"MoE experts per token (default {sweep.DEFAULT_TOPK})")
    s.add_argument("--epilogues", nargs="+", metavar="E",
                   help=f"npu_quant_matmul epilogues: {', '.join(sweep.EPILOGUES)} "
                   "(default: both, where supported)")
    s.add_argument("--weight-formats", nargs="+", metavar="F",
                   help=f"how npu_quant_matmul's and grouped_matmul's weight is stored: "
                   f"{', '.join(sweep.WEIGHT_FORMATS)} (default ND)")
    s.add_argument("--calibration", metavar="JSON", help="calibration written by `npusim calibrate`")
    s.add_argument("--l2", choices=L2_STATES, help="inputs read from HBM (cold, the profilers' setting; "
                   "default) or from L2 where they fit")
    s.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    s.add_argument("--pipe-tokens", type=_positive, metavar="T", help="token count of the per-pipe bars (default 1024)")
    s.add_argument("--no-plots", action="store_true", help="write the CSV only")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)

    c = sub.add_parser("compare", help="predictions vs measured timings: MAPE table, worst launches, figures",
                       description="Predict every measured row (profiles, or the published set) and compare: MAPE "
                       "per operator and product, the worst launches, <out>/compare.csv (one row per distinct "
                       "launch) and compare_summary.csv, and figures. With no --profiles or --published: the "
                       "packaged calibration set.")
    _add_measured_args(c)
    c.add_argument("--l2", choices=L2_STATES, default="cold",
                   help="inputs read from HBM (cold: what benchmarks that flush L2 measure; default) or from L2 "
                   "where they fit (warm: a model run, where the kernel before wrote them)")
    c.add_argument("--worst", type=_positive, default=None, metavar="K",
                   help=f"how many worst launches to list (default 5, listed when there are more than {PER_ROW_MAX} "
                        "rows, which are not printed one by one)")
    c.add_argument("--no-plots", action="store_true", help="tables and CSVs only")
    c.set_defaults(func=cmd_compare)

    k = sub.add_parser("calibrate", help="fit the model's constants to measured rows; write the calibration JSON",
                       description="Fit the model's calibration parameters to measured rows (profiles, a published "
                       "set, or the packaged calibration set) by least squares, write the calibration JSON and print "
                       "MAPE before and after.")
    _add_measured_args(k)
    k.add_argument("--output", metavar="JSON", help="calibration file (default <out>/calibration.json)")
    k.add_argument("--fit-product", metavar="P", help="fit only the rows of this product")
    k.add_argument("--params", nargs="+", metavar="NAME",
                   help="calibration parameters to fit (default: all; see perfmodel.calibration)")
    k.add_argument("--only-given-rows", action="store_true",
                   help="with --profiles/--published: fit those rows alone (default: together with the packaged "
                   "set's measured rows, so that what your rows cannot inform stays put)")
    k.add_argument("--all-rows", action="store_true",
                   help="also fit rows whose measured block dim differs from the planned launch")
    k.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("plot", help="figures from a sweep CSV: latency vs tokens, roofline, per-pipe bars",
                       description="Figures from a sweep CSV (written by `npusim sweep`): latency against tokens per "
                       "product, a roofline per product, and per-pipe times per operator, as PNG and SVG, written "
                       "to <out>/figures/ (files of the same name there are replaced). <out> is --out if given, "
                       "else the directory of the --sweep CSV (as `npusim sweep --out DIR` lays out DIR/sweep.csv "
                       f"and DIR/figures/), else {DEFAULT_OUT}.")
    p.add_argument("--sweep", metavar="CSV", help="sweep CSV (default <out>/sweep.csv; the default sweep is run "
                   "and written there when that does not exist)")
    p.add_argument("--kind", choices=("all", "latency", "roofline", "pipes"), default="all")
    p.add_argument("--pipe-tokens", type=_positive, metavar="T", help="token count of the per-pipe bars (default 1024)")
    p.add_argument("--out", metavar="DIR", help="figures go to DIR/figures/ (default: the --sweep CSV's directory, "
                   f"else {DEFAULT_OUT})")
    p.set_defaults(func=cmd_plot)

    li = sub.add_parser("list", help="operators, products, dtypes and epilogues the model supports",
                        description="List the operators and products (with their SoCs), which dtypes each operator "
                        "runs in on each product, the sweep axes and the npu_quant_matmul epilogues.")
    li.set_defaults(func=cmd_list)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    a, extra = ap.parse_known_args(argv)
    if extra and getattr(a, "command", None) == "predict" and all("=" in e and not e.startswith("-") for e in extra):
        a.args += extra             # NAME=VALUE arguments given after an option
    elif extra:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(a, "command", None):
        ap.print_help()
        return 2
    try:
        return a.func(a)
    except BrokenPipeError:         # the reader stopped reading (`npusim list | head`): not a mistake
        try:                        # (and the interpreter's last flush must not complain either)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except NothingUsable as exc:
        print(f"npusim {a.command}: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:     # bad names, values, config; unreadable input: a message
        print(f"npusim {a.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
