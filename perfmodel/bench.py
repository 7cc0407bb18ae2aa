"""Prediction throughput: `python -m perfmodel.bench [N]` times N predictions per operator (a sweep over
the token count, one plan + cost per shape) and prints predictions per second."""
import sys
import time

import perfmodel
from perfmodel import TensorSpec as T

SWEEPS = {
    "add": ("atlas-a2", lambda n: dict(x=T((n, 4096), "float16"), y=T((n, 4096), "float16"))),
    "matmul": ("atlas-a2", lambda n: dict(a=T((n, 4096), "float16"), b=T((4096, 4096), "float16"))),
    "npu_dynamic_quant": ("atlas-a2", lambda n: dict(x=T((n, 7168), "bfloat16"))),
    "npu_quant_matmul": ("atlas-a2", lambda n: dict(x1=T((n, 7168), "int8"), x2=T((7168, 4096), "int8"),
                                                    scale=T((4096,), "float32"), output_dtype="float16")),
}


def run(n: int = 10000) -> dict:
    out = {}
    for op, (product, make) in SWEEPS.items():
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            perfmodel.predict(op, product, **make(i))
        out[op] = n / (time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    for op, rate in run(n).items():
        print(f"{op:22s} {rate:10.0f} predictions/s  ({n / rate:.2f} s for {n} shapes)")
