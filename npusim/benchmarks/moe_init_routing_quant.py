"""Benchmark: aclnnMoeInitRoutingQuant on Atlas A2, x [8192, 7168] bf16, k = 8 of 256 experts (issue 7).

numpy: the same arithmetic as a user would write it with vectorised NumPy (ARITHMETIC 5.2-5.3): stable
argsort, scatter of expandedRowIdx, each token row quantized once in numpy float16, then gathered.
peer torch: the same steps in PyTorch (CPU), when torch is installed.
"""
from __future__ import annotations

import numpy as np

from npusim import formats
from npusim.benchmarks import Case, register

TOKENS, HIDDEN, TOPK, EXPERTS = 8192, 7168, 8, 256
SCALE, OFFSET = 0.37, -1.5


def _setup():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 20.0, size=(TOKENS, HIDDEN)).astype(formats.bfloat16)
    expert_idx = rng.integers(0, EXPERTS, size=(TOKENS, TOPK)).astype(np.int32)
    row_idx = np.arange(TOKENS * TOPK, dtype=np.int32).reshape(TOPK, TOKENS).T.copy()
    return {"x": x, "row_idx": row_idx, "expert_idx": expert_idx}


def _kernel(s):
    import npusim
    return npusim.moe_init_routing_quant(s["x"], s["row_idx"], s["expert_idx"], TOKENS, SCALE, OFFSET,
                                         product="atlas-a2")


def _numpy(s):
    n, k = s["expert_idx"].shape
    order = np.argsort(s["expert_idx"].ravel(), kind="stable")
    expanded_expert = s["expert_idx"].ravel()[order]
    sorted_row = s["row_idx"].ravel()[order]
    expanded_row = np.empty(n * k, np.int32)
    expanded_row[sorted_row] = np.arange(n * k, dtype=np.int32)
    h = s["x"].astype(np.float32).astype(np.float16)
    v = h * np.float16(np.float32(SCALE)) + np.float16(np.float32(OFFSET))
    q = np.clip(np.rint(v), -128, 127).astype(np.int8)
    return q[sorted_row % n], expanded_row, expanded_expert


def _torch(s):
    import torch
    if "tx" not in s:
        s["tx"] = torch.from_numpy(s["x"].view(np.int16)).view(torch.bfloat16)
        s["te"] = torch.from_numpy(s["expert_idx"]).flatten()
        s["tr"] = torch.from_numpy(s["row_idx"]).flatten()
    n = s["tx"].shape[0]
    expanded_expert, order = torch.sort(s["te"], stable=True)
    sorted_row = s["tr"][order]
    expanded_row = torch.empty_like(sorted_row)
    expanded_row[sorted_row] = torch.arange(sorted_row.numel(), dtype=sorted_row.dtype)
    v = s["tx"].float().half() * torch.tensor(SCALE).half() + torch.tensor(OFFSET).half()
    q = torch.clamp(torch.round(v.float()), -128, 127).to(torch.int8)
    return q[sorted_row % n], expanded_row, expanded_expert


register(Case(
    name="moe_init_routing_quant_bf16_8192x7168_k8_e256_a2",
    setup=_setup, kernel=_kernel, numpy=_numpy,
    nbytes=TOKENS * HIDDEN * 2 + TOKENS * TOPK * HIDDEN + TOKENS * TOPK * 4 * 4,
    peers={"torch": _torch}, group="moe_init_routing_quant"))
