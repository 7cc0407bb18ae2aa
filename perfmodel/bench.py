"""Prediction throughput: `python -m perfmodel.bench [N]` sweeps N token counts (1..N) of every
operator on one product through perfmodel.predict_many (the vectorised sweep path, the one `npusim
sweep` uses) and prints predictions per second: cold (first sweep: every npusim plan is built) and
warm (plans memoised, e.g. a re-run with another calibration), next to the one-call-per-shape
perfmodel.predict loop on the first 1000 shapes."""
import sys
import time

import perfmodel
from perfmodel.predict import _PLAN_MEMO
from perfmodel.sweep import Point, build_args

SWEEPS = [("add", "atlas-a2"), ("matmul", "atlas-a2"), ("npu_dynamic_quant", "atlas-a2"),
          ("npu_dynamic_quant_asymmetric", "atlas-a2"), ("indexer_compress_epilog", "ascend-950pr"),
          ("fake_quantize_per_channel_affine_cachemask", "atlas-a2"), ("npu_quant_matmul", "atlas-a2"),
          ("moe_init_routing_quant", "atlas-a2")]


def run(n: int = 10000, loop_n: int = 1000) -> list[dict]:
    """Per operator: predictions/s of predict_many over n shapes (cold and warm) and of a predict loop."""
    out = []
    for op, product in SWEEPS:
        args = [build_args(Point(op, product, t)) for t in range(1, n + 1)]
        _PLAN_MEMO.clear()
        t0 = time.perf_counter()
        perfmodel.predict_many(op, product, args)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        perfmodel.predict_many(op, product, args)
        warm = time.perf_counter() - t0
        _PLAN_MEMO.clear()
        t0 = time.perf_counter()
        for a in args[:loop_n]:
            perfmodel.predict(op, product, **a)
        loop = (time.perf_counter() - t0) / min(n, loop_n)
        out.append({"op": op, "product": product, "shapes": n, "cold_s": cold, "cold_per_s": n / cold,
                    "warm_s": warm, "warm_per_s": n / warm, "loop_per_s": 1.0 / loop})
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    print(f"{'operator':44s} {'product':13s} {'cold /s':>9s} {'(s)':>6s} {'warm /s':>9s} {'(s)':>6s} "
          f"{'predict() loop /s':>18s}")
    for r in run(n):
        print(f"{r['op']:44s} {r['product']:13s} {r['cold_per_s']:9.0f} {r['cold_s']:6.3f} {r['warm_per_s']:9.0f} "
              f"{r['warm_s']:6.3f} {r['loop_per_s']:18.0f}")
