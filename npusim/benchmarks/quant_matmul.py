"""npu_quant_matmul benchmarks: the exact int8 GEMM plus epilogue against plain NumPy and torch.

The NumPy implementation multiplies in float64 (exact here: |sum| <= 128 * 128 * K < 2^53), which
is what a user would write to get an exact result fast; an int64 np.matmul is exact too but runs
without BLAS (well under 1 GOPS), too slow to time at these sizes. Integer GOPS = 2*M*K*N / time.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

import npusim
from npusim.benchmarks import Case, register


def _setup(m, k, n, pertoken):
    def setup():
        rng = np.random.default_rng(0)
        x1 = rng.integers(-5, 5, (m, k), dtype=np.int8)          # vendor test data range [-5, 5)
        x2 = rng.integers(-5, 5, (k, n), dtype=np.int8)
        scale = rng.uniform(1e-3, 1e-2, n).astype(np.float32)
        pt = rng.uniform(0.5, 2.0, m).astype(np.float32) if pertoken else None
        state = {"x1": x1, "x2": x2, "scale": scale, "pt": pt,
                 "x1f": x1.astype(np.float64), "x2f": x2.astype(np.float64)}
        try:
            import torch
            state["t"] = (torch.from_numpy(x1), torch.from_numpy(x2), torch.from_numpy(scale),
                          None if pt is None else torch.from_numpy(pt))
        except ImportError:
            pass
        return state
    return setup


def _numpy_bf16_pertoken(s):
    acc = (s["x1f"] @ s["x2f"]).astype(np.float32)
    return ((acc * s["scale"]) * s["pt"][:, None]).astype(ml_dtypes.bfloat16)


def _torch_bf16_pertoken(s):
    if "t" not in s:
        raise ImportError("torch")
    import torch
    x1, x2, scale, pt = s["t"]
    return ((torch._int_mm(x1, x2).float() * scale) * pt[:, None]).to(torch.bfloat16)


def _numpy_fp16_fixpipe(s):
    acc = (s["x1f"] @ s["x2f"]).astype(np.float32)
    s19 = (s["scale"].view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)
    return np.clip(acc * s19, -65504, 65504).astype(np.float16)


def _torch_fp16_fixpipe(s):
    if "t" not in s:
        raise ImportError("torch")
    import torch
    x1, x2, scale, _ = s["t"]
    s19 = (scale.view(torch.int32) & -8192).view(torch.float32)
    return (torch._int_mm(x1, x2).float() * s19).clamp(-65504, 65504).to(torch.float16)


def _in_out_bytes(m, k, n, out_itemsize):
    return m * k + k * n + m * n * out_itemsize


M, K, N = 2048, 7168, 4096
register(Case(
    name=f"quant_matmul_bf16_pertoken_{M}x{K}x{N}",
    setup=_setup(M, K, N, True),
    kernel=lambda s: npusim.npu_quant_matmul(s["x1"], s["x2"], s["scale"], pertoken_scale=s["pt"],
                                             output_dtype="bfloat16"),
    numpy=_numpy_bf16_pertoken,
    nbytes=_in_out_bytes(M, K, N, 2),
    ops=2 * M * K * N,
    peers={"torch_int_mm": _torch_bf16_pertoken},
    group="quant_matmul",
))

M2, K2, N2 = 8192, 320, 2560     # op-plugin test_npu_quant_matmul.py shape, fp16 output via the fixpipe
register(Case(
    name=f"quant_matmul_fp16_fixpipe_{M2}x{K2}x{N2}",
    setup=_setup(M2, K2, N2, False),
    kernel=lambda s: npusim.npu_quant_matmul(s["x1"], s["x2"], s["scale"], output_dtype="float16"),
    numpy=_numpy_fp16_fixpipe,
    nbytes=_in_out_bytes(M2, K2, N2, 2),
    ops=2 * M2 * K2 * N2,
    peers={"torch_int_mm": _torch_fp16_fixpipe},
    group="quant_matmul",
))
