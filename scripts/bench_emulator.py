#!/usr/bin/env python3
"""Time npusim's kernels against NumPy, peers and this machine's copy bandwidth, in one run.

    python scripts/bench_emulator.py                 # every case
    python scripts/bench_emulator.py --select casts  # a group or a substring of case names
    python scripts/bench_emulator.py --csv bench.csv
"""
import argparse
import os

import pandas as pd

from npusim import benchmarks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--select", help="run only cases of this group or whose name contains this text")
    ap.add_argument("--repeat", type=int, default=5, help="timing rounds per implementation (best is kept)")
    ap.add_argument("--csv", help="also write the table to this CSV file")
    args = ap.parse_args(argv)
    df = benchmarks.run(args.select, args.repeat)
    print(f"CPU: {df.attrs['cpu']}, {os.cpu_count()} logical cores; SIMD: {df.attrs['simd']}")
    print(f"memory-copy bandwidth of this machine (measured now): {df.attrs['copy_GBps']:.2f} GB/s")
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format", "{:.3g}".format):
        print(df.to_string(index=False))
    if args.csv:        # each row names the machine it ran on
        df.assign(cpu=df.attrs["cpu"], simd=df.attrs["simd"]).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
