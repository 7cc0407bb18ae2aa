"""Prediction throughput: `python -m perfmodel.bench [N]` sweeps N token counts (1..N) of every
operator on one product through perfmodel.predict_many (the sweep path, the one `npusim sweep` uses)
and prints predictions per second:

* cold: every memo forgotten first (plans, builders' vector-call sequences, DMA times: what a new
  process sweeping new shapes pays; the sweep's own shapes still share what they have in common);
* warm: the same sweep again (plans memoised, e.g. a re-run with another calibration);
* the one-call-per-shape perfmodel.predict loop on the first 1000 shapes, cold.

Each figure is the best of `--repeat` runs (default 3; the machine may be shared), with the CPU named.
"""
import argparse
import gc
import time

import perfmodel
from npusim.benchmarks import cpu_model
from perfmodel.predict import clear_memos
from perfmodel.sweep import Point, build_args

SWEEPS = [("add", "atlas-a2"), ("matmul", "atlas-a2"), ("grouped_matmul", "atlas-a2"),
          ("npu_dynamic_quant", "atlas-a2"), ("npu_dynamic_quant_asymmetric", "atlas-a2"),
          ("indexer_compress_epilog", "ascend-950pr"), ("fake_quantize_per_channel_affine_cachemask", "atlas-a2"),
          ("npu_quant_matmul", "atlas-a2"), ("moe_init_routing_quant", "atlas-a2")]


def _best(fn, repeat: int, cold: bool) -> float:
    """Least seconds of `repeat` runs of fn (memos forgotten before each when cold)."""
    times = []
    for _ in range(repeat):
        if cold:
            clear_memos()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(n: int = 10000, loop_n: int = 1000, repeat: int = 3) -> list[dict]:
    """Per operator: predictions/s of predict_many over n shapes (cold and warm) and of a predict loop."""
    out = []
    for op, product in SWEEPS:
        args = [build_args(Point(op, product, t)) for t in range(1, n + 1)]
        cold = _best(lambda: perfmodel.predict_many(op, product, args), repeat, cold=True)
        warm = _best(lambda: perfmodel.predict_many(op, product, args), repeat, cold=False)
        some = args[:loop_n]
        loop = _best(lambda: [perfmodel.predict(op, product, **a) for a in some], repeat, cold=True) / len(some)
        out.append({"op": op, "product": product, "shapes": n, "cold_s": cold, "cold_per_s": n / cold,
                    "warm_s": warm, "warm_per_s": n / warm, "loop_per_s": 1.0 / loop})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, default=10000, help="token counts per operator (1..n)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the best is kept)")
    a = ap.parse_args(argv)
    print(f"CPU: {cpu_model()}; {a.n} shapes per operator, best of {a.repeat} runs")
    print(f"{'operator':44s} {'product':13s} {'cold /s':>9s} {'(s)':>6s} {'warm /s':>9s} {'(s)':>6s} "
          f"{'predict() loop /s':>18s}")
    for r in run(a.n, repeat=a.repeat):
        print(f"{r['op']:44s} {r['product']:13s} {r['cold_per_s']:9.0f} {r['cold_s']:6.3f} {r['warm_per_s']:9.0f} "
              f"{r['warm_s']:6.3f} {r['loop_per_s']:18.0f}")


if __name__ == "__main__":
    main()
