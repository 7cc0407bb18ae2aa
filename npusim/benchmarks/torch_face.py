"""Benchmark: the overhead of the torch face (npusim.torch_npu) over the numpy face on the same data.

kernel: the torch_npu stand-in called with torch CPU tensors (bf16 crosses as a view, no copy);
peer numpy_face: npusim's numpy function on the arrays behind those tensors. speedup_vs_numpy_face
near 1.0 means no overhead; the small cases show the fixed per-call cost. Registered only when torch
is installed (importing this module does not import torch).
"""
from __future__ import annotations

import importlib.util

import ml_dtypes
import numpy as np

from npusim.benchmarks import Case, register


def _dq_setup(rows, cols):
    def setup():
        import torch
        rng = np.random.default_rng(0)
        x = rng.normal(0.0, 3.0, size=(rows, cols)).astype(ml_dtypes.bfloat16)
        smooth = rng.uniform(0.5, 2.0, size=cols).astype(ml_dtypes.bfloat16)
        as_tensor = lambda a: torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)   # noqa: E731
        return {"x": x, "smooth": smooth, "tx": as_tensor(x), "tsmooth": as_tensor(smooth)}
    return setup


def _dq_torch(s):
    from npusim import torch_npu
    return torch_npu.npu_dynamic_quant(s["tx"], smooth_scales=s["tsmooth"])      # default product atlas-a2


def _dq_numpy_face(s):
    import npusim
    return npusim.npu_dynamic_quant(s["x"], s["smooth"], product="atlas-a2")


def _qmm_setup():
    import torch
    rng = np.random.default_rng(0)
    m, k, n = 16, 4096, 4096
    s = {"x1": rng.integers(-128, 128, (m, k)).astype(np.int8), "x2": rng.integers(-128, 128, (k, n)).astype(np.int8),
         "scale": rng.uniform(1e-3, 1e-2, n).astype(ml_dtypes.bfloat16),
         "pt": rng.uniform(0.5, 2, m).astype(np.float32)}
    s["t"] = {key: torch.from_numpy(a.view(np.int16)).view(torch.bfloat16) if a.dtype == ml_dtypes.bfloat16
              else torch.from_numpy(a) for key, a in s.items()}
    return s


def _qmm_torch(s):
    import torch
    from npusim import torch_npu
    t = s["t"]
    return torch_npu.npu_quant_matmul(t["x1"], t["x2"], t["scale"], pertoken_scale=t["pt"], output_dtype=torch.bfloat16)


def _qmm_numpy_face(s):
    import npusim
    return npusim.npu_quant_matmul(s["x1"], s["x2"], s["scale"], pertoken_scale=s["pt"], output_dtype="bfloat16",
                                   product="atlas-a2")


if importlib.util.find_spec("torch") is not None:
    for rows, cols in ((8192, 7168), (4, 4096)):
        register(Case(
            name=f"torch_face_dynamic_quant_bf16_smooth_{rows}x{cols}_a2",
            setup=_dq_setup(rows, cols), kernel=_dq_torch, numpy=None,
            nbytes=rows * cols * 2 + cols * 2 + rows * cols + rows * 4,
            peers={"numpy_face": _dq_numpy_face}, group="torch_face"))
    register(Case(
        name="torch_face_quant_matmul_16x4096x4096_bf16_pertoken_a2",
        setup=_qmm_setup, kernel=_qmm_torch, numpy=None,
        nbytes=16 * 4096 + 4096 * 4096 + 4096 * 2 + 16 * 4 + 16 * 4096 * 2,
        peers={"numpy_face": _qmm_numpy_face}, group="torch_face", ops=2 * 16 * 4096 * 4096))
