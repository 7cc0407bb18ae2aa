"""npu_quant_matmul benchmarks: the exact int8 GEMM plus epilogue against an exact float-BLAS reference and
torch._int_mm, for decode (M = 1, 16), mid (M = 256) and prefill (M = 2048) shapes of a 7168 -> 4096 layer.

Reference ("numpy" columns): float32 BLAS summed over K chunks of 1024 and accumulated in int32, which is
exact (|x1 * x2| <= 2^14, so a chunk's sum stays below 2^24) and the fastest exact BLAS formulation
(float64 BLAS for the whole K is exact too but half as fast); the float copies of x1 and x2 are made in
setup, outside the timing. Peer: torch._int_mm, then the same epilogue in torch. Integer GOPS = 2*M*K*N / time.
The weight is passed as [K, N] rows and, for the decode shapes, also as the transposed view of [N, K] rows
(LinearA8W8Quant, torch users): npusim reads both in place. For decode the weight bytes dominate, so the
"copy" column (bytes moved / this machine's copy bandwidth) says how close the call is to memory speed.
Case names end with the GEMM path that ran (NPUSIM_GEMM_SIMD or the fastest available).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

import npusim
from npusim._kernels import quant_matmul as _k
from npusim.benchmarks import Case, register
from npusim.quant_matmul import _gemm_path

K_CHUNK = 1024          # exact float32 sums: 1024 * 2^14 = 2^24


def _setup(m, k, n, pertoken, transposed=False):
    def setup():
        rng = np.random.default_rng(0)
        x1 = rng.integers(-5, 5, (m, k), dtype=np.int8)          # vendor test data range [-5, 5)
        x2 = rng.integers(-5, 5, (n, k), dtype=np.int8).T if transposed else rng.integers(-5, 5, (k, n), dtype=np.int8)
        scale = rng.uniform(1e-3, 1e-2, n).astype(np.float32)
        pt = rng.uniform(0.5, 2.0, m).astype(np.float32) if pertoken else None
        state = {"x1": x1, "x2": x2, "scale": scale, "pt": pt,
                 "x1f": x1.astype(np.float32), "x2f": x2.astype(np.float32),
                 "acc": np.empty((m, n), np.int32), "part": np.empty((m, n), np.float32)}
        try:
            import torch
            state["t"] = (torch.from_numpy(x1), torch.from_numpy(x2), torch.from_numpy(scale),
                          None if pt is None else torch.from_numpy(pt))
        except ImportError:
            pass
        return state
    return setup


def _exact_acc(s):
    """x1 @ x2 exactly: float32 BLAS per K chunk, each (exact) partial sum added in int32."""
    acc, part, x1f, x2f = s["acc"], s["part"], s["x1f"], s["x2f"]
    acc[:] = 0
    for k0 in range(0, x1f.shape[1], K_CHUNK):
        np.matmul(x1f[:, k0:k0 + K_CHUNK], x2f[k0:k0 + K_CHUNK], out=part)
        np.add(acc, part, out=acc, casting="unsafe")
    return acc


def _numpy_bf16_pertoken(s):
    acc = _exact_acc(s).astype(np.float32)
    return ((acc * s["scale"]) * s["pt"][:, None]).astype(ml_dtypes.bfloat16)


def _torch_bf16_pertoken(s):
    if "t" not in s:
        raise ImportError("torch")
    import torch
    x1, x2, scale, pt = s["t"]
    return ((torch._int_mm(x1, x2).float() * scale) * pt[:, None]).to(torch.bfloat16)


def _numpy_fp16_fixpipe(s):
    acc = _exact_acc(s).astype(np.float32)
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


SIMD = _k.SIMD_PATHS[_gemm_path()]
K, N = 7168, 4096
for M, transposed in ((1, False), (1, True), (16, False), (16, True), (256, False), (2048, False)):
    layout = "w[N,K].T" if transposed else "w[K,N]"
    register(Case(
        name=f"quant_matmul_bf16_pertoken_{M}x{K}x{N}_{layout}_{SIMD}",
        setup=_setup(M, K, N, True, transposed),
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
    name=f"quant_matmul_fp16_fixpipe_{M2}x{K2}x{N2}_{SIMD}",
    setup=_setup(M2, K2, N2, False),
    kernel=lambda s: npusim.npu_quant_matmul(s["x1"], s["x2"], s["scale"], output_dtype="float16"),
    numpy=_numpy_fp16_fixpipe,
    nbytes=_in_out_bytes(M2, K2, N2, 2),
    ops=2 * M2 * K2 * N2,
    peers={"torch_int_mm": _torch_fp16_fixpipe},
    group="quant_matmul",
))
