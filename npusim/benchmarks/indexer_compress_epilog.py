"""Benchmark: indexer_compress_epilog, x [8192, 4096] bf16 -> float8_e4m3fn cache with fp32 block scales
(quant_mode 1, tiling key 10011 on Ascend 950PR), slot_mapping a random permutation of the cache rows.

numpy: the same arithmetic (ARITHMETIC.md 2.2) as a user would write it with vectorised NumPy and
ml_dtypes, then the scatter. peer torch: the same formula in PyTorch (CPU) with torch's fp8 cast.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from npusim.benchmarks import Case, register

T, D, BLOCK = 8192, 4096, 128
INV_448 = np.uint32(0x3B124925).view(np.float32)      # f32(1/448), the kernel's constant


def _setup():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 2.0, size=(T, D)).astype(ml_dtypes.bfloat16)
    slots = rng.permutation(T).astype(np.int32)
    cache = np.zeros((T, D), ml_dtypes.float8_e4m3fn)
    scale = np.zeros((T, D // BLOCK), np.float32)
    return {"x": x, "slots": slots, "cache": cache, "scale": scale}


def _kernel(s):
    import npusim
    npusim.indexer_compress_epilog(s["cache"], s["scale"], s["x"], s["slots"], product="ascend-950pr")


def _numpy(s):
    xf = s["x"].astype(np.float32).reshape(T, D // BLOCK, BLOCK)
    a = np.abs(xf)
    amax = np.where(np.isfinite(a), a, 0).max(axis=-1, keepdims=True)
    scale = np.where(amax != 0, amax * INV_448, np.float32(0))
    with np.errstate(all="ignore"):
        q = xf / scale
    q = np.where(np.isfinite(q), q, xf)
    valid = s["slots"] != -1
    s["cache"][s["slots"][valid]] = q.reshape(T, D).astype(ml_dtypes.float8_e4m3fn)[valid]
    s["scale"][s["slots"][valid]] = scale[valid, :, 0]


def _torch(s):
    import torch
    if "tx" not in s:
        s["tx"] = torch.from_numpy(s["x"].view(np.int16)).view(torch.bfloat16)
        s["tslots"] = torch.from_numpy(s["slots"].astype(np.int64))
        s["tcache"] = torch.zeros((T, D), dtype=torch.float8_e4m3fn)
        s["tscale"] = torch.zeros((T, D // BLOCK), dtype=torch.float32)
    xf = s["tx"].float().view(T, D // BLOCK, BLOCK)
    a = xf.abs()
    amax = torch.where(torch.isfinite(a), a, 0).amax(dim=-1, keepdim=True)
    scale = torch.where(amax != 0, amax * float(INV_448), 0.0)
    q = xf / scale
    q = torch.where(torch.isfinite(q), q, xf)
    valid = s["tslots"] != -1
    s["tcache"][s["tslots"][valid]] = q.view(T, D).to(torch.float8_e4m3fn)[valid]
    s["tscale"][s["tslots"][valid]] = scale[valid, :, 0]


register(Case(
    name="indexer_compress_epilog_bf16_e4m3fn_fp32scale_8192x4096_950pr",
    setup=_setup, kernel=_kernel, numpy=_numpy,
    nbytes=T * D * 2 + T * 4 + T * D + T * (D // BLOCK) * 4,
    peers={"torch": _torch}, group="indexer_compress_epilog"))
