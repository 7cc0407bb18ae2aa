#!/usr/bin/env python3
"""npusim in a few seconds: the products, the Ascend Cast round modes, and every operator that this
installation provides, each emulated on small generated data.

    pip install . && python scripts/demo.py

Works on the foundation alone (products and casts); operators are shown when npusim has them.
Exit status 1 if an operator that exists raised an error.
"""
from __future__ import annotations

import sys
import time
import traceback

import ml_dtypes
import numpy as np

import npusim
from npusim import formats
from npusim.products import PRODUCTS, socs_of

RNG = np.random.default_rng(0)


def _r(a, nd=4):
    """A short list of rounded Python floats for printing."""
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def show_products():
    print("Products (npusim.get_product accepts an id, an SoC name or a short name):")
    print(f"  {'id':<19} {'default SoC':<18} {'arch':<9} {'AIC/AIV':<8} {'MHz':>5}  SoCs")
    for pid, p in PRODUCTS.items():
        s = npusim.get_product(pid)
        print(f"  {pid:<19} {s.soc:<18} {s.arch_family:<9} {f'{s.aic}/{s.aiv}':<8} {s.cube_mhz:>5}  "
              f"{len(socs_of(pid))}")


def show_casts():
    x = np.array([2.5, -2.5, 3.5, 127.5, 0.1, 500.0], np.float32)
    print(f"\nAscend Cast of fp32 {_r(x)}:")
    for mode in formats.ROUND_MODES:
        print(f"  -> int8  {mode:<5} (saturating) {formats.cast(x, 'int8', mode).tolist()}")
    e4 = formats.cast(x, "float8_e4m3fn")
    e4n = formats.cast(x, "float8_e4m3fn", saturate=False)
    print(f"  -> e4m3fn rint saturating     {e4.astype(np.float32).tolist()}  bits {[hex(b) for b in formats.bits(e4)]}")
    print(f"  -> e4m3fn rint non-saturating {e4n.astype(np.float32).tolist()}  (no inf in e4m3fn: NaN)")
    print(f"  -> bf16 / fp16               {_r(formats.cast(x, 'bf16').astype(np.float32), 8)} / "
          f"{_r(formats.cast(x, 'fp16'), 8)}")
    packed = formats.pack_int4(np.array([1, -2, 7, -8], np.int8))
    print(f"  pack_int4([1, -2, 7, -8]) = {[hex(b) for b in packed]} (element 2k in the low nibble)")


def _dynamic_quant():
    x = (RNG.standard_normal((4, 16)) * 3).astype(np.float16)
    y, scale = npusim.npu_dynamic_quant(x, product="atlas-a2")
    return f"x fp16 [4, 16] -> y {y.dtype} row 0 {y[0, :8].tolist()}..., scale {_r(scale)}"


def _indexer_compress_epilog():
    x = RNG.standard_normal((2, 4096)).astype(ml_dtypes.bfloat16)
    cache = np.zeros((4, 4096), ml_dtypes.float8_e4m3fn)
    scale = np.zeros((4, 32), np.float32)
    npusim.indexer_compress_epilog(cache, scale, x, np.array([3, -1], np.int32), product="ascend-950pr")
    return (f"x bf16 [2, 4096], slots [3, -1] -> cache[3, :6] {cache[3, :6].astype(np.float32).tolist()}, "
            f"scale[3, :3] {_r(scale[3, :3], 6)}, other rows untouched: {bool((scale[:3] == 0).all())}")


def _fake_quant():
    x = (RNG.standard_normal((2, 3)) * 4).astype(np.float32)
    out, mask = npusim.fake_quantize_per_channel_affine_cachemask(
        x, np.array([0.1, 0.5, 1.0], np.float32), np.array([0, 2, -1], np.int32), 1, -8, 7, product="atlas-a2")
    return f"x {_r(x, 3)} -> out {_r(out)}, mask {mask.astype(int).tolist()}"


def _quant_matmul():
    x1 = RNG.integers(-128, 128, (2, 32)).astype(np.int8)
    x2 = RNG.integers(-128, 128, (32, 4)).astype(np.int8)
    scale = npusim.npu_trans_quant_param(np.full(4, 0.01, np.float32), product="atlas-a2")
    y = npusim.npu_quant_matmul(x1, x2, scale, output_dtype=np.int8, product="atlas-a2")
    acc = x1.astype(np.int32) @ x2.astype(np.int32)
    return f"int8 [2, 32] @ [32, 4], scale 0.01 -> int8 {y.tolist()} (int32 acc row 0 {acc[0].tolist()})"


def _moe_init_routing_quant():
    n, k, h = 3, 2, 8
    x = RNG.standard_normal((n, h)).astype(np.float16)
    row_idx = np.arange(n * k, dtype=np.int32).reshape(k, n).T.copy()
    expert_idx = RNG.integers(0, 4, (n, k)).astype(np.int32)
    ex, erow, eexp = npusim.moe_init_routing_quant(x, row_idx, expert_idx, n, 20.0, 1.0, product="atlas-a2")
    return (f"experts {expert_idx.tolist()} -> expanded_expert_idx {eexp.tolist()}, expanded_row_idx "
            f"{erow.tolist()}, expanded_x {ex.shape} {ex.dtype}, row 0 {ex[0].tolist()}")


OPERATORS = [
    ("npu_dynamic_quant", _dynamic_quant),
    ("indexer_compress_epilog", _indexer_compress_epilog),
    ("fake_quantize_per_channel_affine_cachemask", _fake_quant),
    ("npu_quant_matmul", _quant_matmul),
    ("moe_init_routing_quant", _moe_init_routing_quant),
]


def show_operators() -> int:
    print("\nOperators (bit-exact CPU emulation on generated data):")
    failed = 0
    for name, fn in OPERATORS:
        if not hasattr(npusim, name):
            print(f"  {name}: not in this installation")
            continue
        t0 = time.perf_counter()
        try:
            text = fn()
        except Exception:              # a demo keeps going, but reports the failure and exits 1
            failed += 1
            print(f"  {name}: FAILED\n" + "".join("    " + line for line in traceback.format_exc().splitlines(True)))
            continue
        print(f"  {name} ({(time.perf_counter() - t0) * 1e3:.1f} ms): {text}")
    return failed


def main() -> int:
    np.set_printoptions(precision=4, suppress=True)
    print(f"npusim {npusim.__version__}: bit-exact CPU emulation of Ascend NPU quantization operators\n")
    show_products()
    show_casts()
    return 1 if show_operators() else 0


if __name__ == "__main__":
    sys.exit(main())
