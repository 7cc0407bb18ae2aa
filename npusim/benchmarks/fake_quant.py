"""Benchmark of fake_quantize_per_channel_affine_cachemask: x [4096, 4096] fp32, axis 0, against the
same arithmetic in plain vectorised NumPy and against PyTorch's CPU op (when torch is installed)."""
import numpy as np

from npusim.benchmarks import Case, register

SHAPE = (4096, 4096)
QMIN, QMAX = -128, 127


def _setup():
    rng = np.random.default_rng(0)
    x = rng.uniform(-100, 100, SHAPE).astype(np.float32)
    scale = rng.uniform(0.01, 1.0, SHAPE[0]).astype(np.float32)
    zp = rng.integers(QMIN, QMAX + 1, SHAPE[0]).astype(np.int32)
    return {"x": x, "scale": scale, "zp": zp}


def _npusim(st):
    from npusim import fake_quantize_per_channel_affine_cachemask
    return fake_quantize_per_channel_affine_cachemask(st["x"], st["scale"], st["zp"], 0, QMIN, QMAX)


def _numpy(st):
    """The A2/A3 kernel's arithmetic as a NumPy user would write it (channel axis 0)."""
    x = st["x"]
    inv = (np.float32(1) / st["scale"])[:, None]
    zpf = st["zp"].astype(np.float32)[:, None]
    s = st["scale"][:, None]
    r = np.rint(x * inv)
    r = np.clip(np.nan_to_num(r, nan=0.0), -2.0**31, 2.0**31).astype(np.float32)
    t2 = r + zpf
    mask = (t2 >= QMIN) & (t2 <= QMAX)
    c = np.clip(t2, np.float32(QMIN), np.float32(QMAX))
    c[np.isnan(x)] = 0
    return (c - zpf) * s, mask


def _torch_setup(st):
    import torch
    if "torch" not in st:
        st["torch"] = (torch.from_numpy(st["x"]), torch.from_numpy(st["scale"]), torch.from_numpy(st["zp"]))
    return torch, st["torch"]


def _torch(st):
    torch, (x, s, z) = _torch_setup(st)
    return torch.ops.aten.fake_quantize_per_channel_affine_cachemask(x, s, z, 0, QMIN, QMAX)


register(Case(
    name="fake_quant_per_channel_f32_4096x4096_axis0",
    setup=_setup, kernel=_npusim, numpy=_numpy,
    nbytes=SHAPE[0] * SHAPE[1] * (4 + 4 + 1),       # read x, write out (fp32) and mask (bool)
    peers={"torch": _torch}, group="fake_quant",
))
