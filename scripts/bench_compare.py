#!/usr/bin/env python3
"""Benchmark `npusim compare` at the scale of a model-run profile (a benchmark, not a test).

    python scripts/bench_compare.py                 # 10^4, 10^5 and 10^6 rows
    python scripts/bench_compare.py --rows 1000000 --keep /tmp/prof

For each size it writes a synthetic msprof op_summary CSV shaped like an LLM serving run (decode steps
of 1-256 tokens and prefills of 512-8192 tokens; per step DynamicQuant -> QuantBatchMatmulV3 (W8A8,
per-token scales, bf16 out) x 4 layers' projections, MoeInitRoutingQuant, fp16 MatMul and Add, plus
operators the model does not cost (RmsNorm, Softmax, ...) and a few broken rows (N/A, inf, ragged)),
then runs `npusim compare --profiles FILE --product atlas-a2` in a fresh process with figures on, and
prints its wall time and peak resident memory (from the child's rusage). The durations are synthetic:
the point is the time and memory of the comparison, not its errors.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEADER = ("Device_id,Model ID,Task ID,Stream ID,Op Name,OP Type,OP State,Task Type,Task Start Time(us),"
          "Task Duration(us),Task Wait Time(us),Block Num,HF32 Eligible,Mix Block Num,Input Shapes,"
          "Input Data Types,Input Formats,Output Shapes,Output Data Types,Output Formats,Context ID,"
          "aicore_time(us),aic_total_cycles,aic_mac_time(us),aic_scalar_time(us),aic_mte1_time(us),"
          "aic_mte2_time(us),aic_fixpipe_time(us),aiv_time(us),aiv_total_cycles,aiv_vec_time(us),"
          "aiv_scalar_time(us),aiv_mte2_time(us),aiv_mte3_time(us)")
H = 7168


def _calls(t: int) -> list[tuple[str, str, str, str, str, str, str, float]]:
    """(op type, task type, block dim, input shapes, input dtypes, output shapes, output dtypes, base µs) of the
    kernels of one step with t tokens."""
    out = [("DynamicQuant", "AI_VECTOR_CORE", "48", f'"{t},{H}"', "DT_BF16", f'"{t},{H};{t}"', "INT8;FLOAT",
            3 + t * H * 3e-6)]
    for n in (1536, 4096, 2048, 18432):
        out.append(("QuantBatchMatmulV3", "AI_CORE", "24", f'"{t},{H};{H},{n};{n};{t}"', "INT8;INT8;FLOAT;FLOAT",
                    f'"{t},{n}"', "DT_BF16", 8 + H * n * 1e-6 + t * H * n * 2e-9))
    out += [("MoeInitRoutingQuant", "AI_VECTOR_CORE", "48", f'"{t},{H};{t},8;{t},8"', "DT_BF16;INT32;INT32",
             f'"{t * 8},{H};{t * 8};{t * 8}"', "INT8;INT32;INT32", 6 + t * 0.05),
            ("MatMulV2", "AI_CORE", "20", f'"{t},{H};{H},1024"', "FLOAT16;FLOAT16", f'"{t},1024"', "FLOAT16",
             5 + t * 0.004),
            ("Add", "AI_VECTOR_CORE", "48", f'"{t},{H};{t},{H}"', "FLOAT16;FLOAT16", f'"{t},{H}"', "FLOAT16",
             3 + t * 0.008)]
    out += [(name, "AI_VECTOR_CORE", "48", f'"{t},{H}"', "DT_BF16", f'"{t},{H}"', "DT_BF16", 3 + t * 0.005)
            for name in ("RmsNorm", "Softmax", "SwiGlu", "RotaryPositionEmbedding", "Cast")]
    return out


def write_profile(path: Path, rows: int, seed: int = 0) -> int:
    """A synthetic op_summary CSV of about `rows` rows (returns the exact count)."""
    rng = np.random.default_rng(seed)
    decode = [int(t) for t in 2 ** np.arange(9)]           # 1..256 tokens
    prefill = [512, 1024, 2048, 4096, 8192]
    written = 0
    start = 1.7e12
    with open(path, "w") as fh:
        fh.write(HEADER + "\n")
        while written < rows:
            t = int(rng.choice(prefill)) if rng.random() < 0.05 else int(rng.choice(decode))
            for op_type, task, bd, ins, idt, outs, odt, base in _calls(t):
                if written >= rows:
                    break
                written += 1
                dur = base * float(rng.lognormal(0.0, 0.08))
                start += dur + 1.0
                cell = f"{dur:.3f}"
                if written % 10007 == 0:
                    cell = "N/A"
                elif written % 20011 == 0:
                    cell = "inf"
                pipes = f"{dur * 0.6:.3f},{dur * 0.1:.3f},{dur * 0.5:.3f},{dur * 0.3:.3f}"
                line = (f"0,4294967295,{written},2,aclnn{op_type}_{op_type},{op_type},dynamic,{task},{start:.1f},"
                        f"{cell},0.5,{bd},NO,0,{ins},{idt},ND,{outs},{odt},ND,N/A,{dur * 0.95:.3f},N/A,N/A,N/A,N/A,"
                        f"N/A,N/A,{dur * 0.95:.3f},100000,{pipes}")
                if written % 50021 == 0:
                    line = line[:60]            # a ragged line
                fh.write(line + "\n")
    return written


def run_compare(profile: Path, out: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit status) of one `npusim compare` in a fresh process."""
    cmd = [sys.executable, "-m", "perfmodel.cli", "compare", "--profiles", str(profile), "--product", "atlas-a2",
           "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024.0, proc.returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--keep", metavar="DIR",
                    help="write the profiles and outputs here (default: a temporary directory)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(a.keep or tmp)
        base.mkdir(parents=True, exist_ok=True)
        print(f"{'rows':>9s} {'CSV MB':>7s} {'write s':>8s} {'compare s':>10s} {'peak RSS MB':>12s} {'rc':>3s}")
        for n in a.rows:
            prof = base / f"op_summary_{n}.csv"
            t0 = time.perf_counter()
            n = write_profile(prof, n)
            write_s = time.perf_counter() - t0
            wall, rss, rc = run_compare(prof, base / f"out_{n}")
            print(f"{n:9d} {prof.stat().st_size / 1e6:7.1f} {write_s:8.1f} {wall:10.1f} {rss:12.0f} {rc:3d}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
