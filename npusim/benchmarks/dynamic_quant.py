"""Benchmark: npu_dynamic_quant, x [8192, 7168] bf16 with smooth scales to int8 on Atlas A2 (tiling key 10).

numpy: the same arithmetic as a user would write it with vectorised NumPy (ARITHMETIC 1.1).
peer torch: the same formula in PyTorch (CPU), when torch is installed.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from npusim.benchmarks import Case, register

ROWS, COLS = 8192, 7168


def _setup():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 3.0, size=(ROWS, COLS)).astype(ml_dtypes.bfloat16)
    smooth = rng.uniform(0.5, 2.0, size=COLS).astype(ml_dtypes.bfloat16)
    return {"x": x, "smooth": smooth}


def _kernel(s):
    import npusim
    return npusim.npu_dynamic_quant(s["x"], s["smooth"], product="atlas-a2")


def _numpy(s):
    v = s["x"].astype(np.float32) * s["smooth"].astype(np.float32)
    m = np.abs(v).max(axis=-1, keepdims=True)
    q = np.float32(127.0) / m
    y = np.rint(v * q).astype(np.int8)
    scale = m[:, 0] * np.float32(1.0 / 127.0)
    return y, scale


def _torch(s):
    import torch
    if "tx" not in s:
        s["tx"] = torch.from_numpy(s["x"].view(np.int16)).view(torch.bfloat16)
        s["ts"] = torch.from_numpy(s["smooth"].view(np.int16)).view(torch.bfloat16)
    v = s["tx"].float() * s["ts"].float()
    m = v.abs().amax(dim=-1, keepdim=True)
    y = torch.round(v * (127.0 / m)).to(torch.int8)
    return y, m * (1.0 / 127.0)


register(Case(
    name="dynamic_quant_bf16_smooth_int8_8192x7168_a2",
    setup=_setup, kernel=_kernel, numpy=_numpy,
    nbytes=ROWS * COLS * 2 + COLS * 2 + ROWS * COLS + ROWS * 4,
    peers={"torch": _torch}, group="dynamic_quant"))
