"""Robustness of the whole public API (issue 10): property tests over layouts, shapes and bad input.

Each property compares a call on an awkward input (non-contiguous, negative-stride, broadcast,
Fortran-order, read-only, misaligned, big-endian views; zero-size dims, one-element axes) with the
same call on a clean, C-contiguous, native-order copy of the same values: the results must be
bit-identical, or both calls must raise the same AclnnError. Bit-exactness of the clean call against
the spec is the business of each operator's own test file.

Warnings are errors in this file: a numpy warning leaking out of npusim fails the test.
Hypothesis profiles live in tests/conftest.py ('ci' by default; NPUSIM_HYPOTHESIS=thorough).
"""
from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

import npusim  # noqa: E402
from npusim import AclnnError, TensorSpec, formats  # noqa: E402
from npusim.testing import assert_bitexact  # noqa: E402

# hypothesis itself may warn (a deprecated import while it reports a failure): only that is let through
pytestmark = [pytest.mark.filterwarnings("error"),
              pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")]

BF16, E4M3, E5M2, E8M0, INT4 = (formats.bfloat16, formats.float8_e4m3fn, formats.float8_e5m2,
                                formats.float8_e8m0, formats.int4)
NULLPTR, INVALID = npusim.ACLNN_ERR_PARAM_NULLPTR, npusim.ACLNN_ERR_PARAM_INVALID

# ------------------------------------------------------------------ layouts of the same values
IN_KINDS = ("contiguous", "fortran", "strided", "negative", "readonly", "misaligned", "bigendian", "broadcast")
OUT_KINDS = ("contiguous", "fortran", "strided", "negative", "misaligned")     # writable layouts
BAD_OUT_KINDS = ("readonly", "bigendian")                                       # always rejected


def misaligned_empty(shape, dtype) -> np.ndarray:
    """A writable array whose data pointer is one byte off the dtype's alignment."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(bytearray(n * dtype.itemsize + 1), dtype=dtype, count=n, offset=1).reshape(shape)


def variant(a: np.ndarray, kind: str) -> np.ndarray:
    """`a` (C-contiguous, native) in another layout. Same values, except 'broadcast', which repeats
    the first entry along axis 0 (a zero-stride view)."""
    if kind == "contiguous" or (a.ndim == 0 and kind in ("fortran", "strided", "negative", "broadcast")):
        return a
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "strided":           # every other element of a buffer twice as large along each axis
        big = np.zeros(tuple(2 * d for d in a.shape), a.dtype)
        v = big[tuple(slice(None, None, 2) for _ in a.shape)]
        v[...] = a
        return v
    if kind == "negative":
        v = np.empty_like(a)[tuple(slice(None, None, -1) for _ in a.shape)]
        v[...] = a
        return v
    if kind == "readonly":
        v = a.copy()
        v.flags.writeable = False
        return v
    if kind == "misaligned":
        v = misaligned_empty(a.shape, a.dtype)
        v[...] = a
        return v
    if kind == "bigendian":
        return a.astype(a.dtype.newbyteorder(">")) if a.dtype.itemsize > 1 else a
    if kind == "broadcast":
        if a.ndim == 0 or a.shape[0] == 0:
            return a
        return np.broadcast_to(a[:1], a.shape)
    raise ValueError(kind)


def native(v):
    """A clean C-contiguous native-order copy of the values of `v` (None passes)."""
    if v is None:
        return None
    v = np.asarray(v)
    return np.array(v, order="C", copy=True).astype(v.dtype.newbyteorder("="), copy=False)


def outcome(fn, *args, **kw):
    """('ok', results as arrays) or ('error', exception type, message). Any other exception propagates
    (and fails the test): only AclnnError and TypeError are documented."""
    try:
        r = fn(*args, **kw)
    except (AclnnError, TypeError) as exc:
        return ("error", type(exc), str(exc))
    if r is None:
        r = ()
    elif not isinstance(r, tuple):
        r = (r,)
    return ("ok", tuple(np.array(a, copy=True) for a in r))


def assert_same_outcome(got, want):
    assert got[0] == want[0], f"got {got[:1]} {got[1:] if got[0] == 'error' else ''}, want {want[:1]} " \
                              f"{want[1:] if want[0] == 'error' else ''}"
    if got[0] == "error":
        assert got[1:] == want[1:]
    else:
        assert len(got[1]) == len(want[1])
        for i, (g, w) in enumerate(zip(got[1], want[1])):
            assert_bitexact(g, w, err_msg=f"output {i}")


def snapshot(arrays):
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def assert_unchanged(before, after):
    for b, a in zip(before, after):
        if b is not None:
            assert_bitexact(a, b, err_msg="input or output changed")


def fill(rng, shape, dtype, special=0.0) -> np.ndarray:
    """Random values of `dtype` over a wide range; a `special` fraction are NaN, +-inf, +-0 or huge."""
    shape = tuple(shape)
    v = np.asarray(rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3, shape))
    if special:
        m = rng.random(shape) < special
        v[m] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e6, -1e6, 1e-7], size=int(m.sum()))
    with np.errstate(over="ignore", invalid="ignore"):
        return v.astype(dtype)


def kinds(n, pool=IN_KINDS):
    return st.lists(st.sampled_from(pool), min_size=n, max_size=n)


def check_layouts(fn, tensors: dict, layout: list, **attrs):
    """fn(**variants, **attrs) == fn(**clean copies of the variants, **attrs), and inputs are not modified."""
    varied = {k: (None if v is None else variant(v, kd)) for (k, v), kd in zip(tensors.items(), layout)}
    before = snapshot(varied.values())
    got = outcome(fn, **varied, **attrs)
    want = outcome(fn, **{k: native(v) for k, v in varied.items()}, **attrs)
    assert_same_outcome(got, want)
    assert_unchanged(before, varied.values())
    return got


# ------------------------------------------------------------------ npu_dynamic_quant
DQ_PRODUCTS = ("atlas-a2", "atlas-a3", "atlas-inference", "atlas-training", "ascend-950pr", "ascend-950dt")
DQ_DSTS = {"a2a3": ("int8", "int4", "int32"), "310p910": ("int8",),
           "950": ("int8", "int4", "int32", "float8_e4m3fn", "float8_e5m2")}
DQ_CODE = {"int8": 2, "int4": 29, "int32": 3, "float8_e5m2": 35, "float8_e4m3fn": 36}
MAX_ELEMS = 1 << 17


@st.composite
def dq_case(draw):
    product = draw(st.sampled_from(DQ_PRODUCTS))
    fam = npusim.get_product(product).family
    symmetric = fam == "310p910" or draw(st.booleans())
    dst = draw(st.sampled_from(DQ_DSTS[fam]))
    xdt = np.float16 if fam == "310p910" else draw(st.sampled_from([np.float16, BF16]))
    lead = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    h = draw(st.sampled_from([0, 1, 2, 7, 8, 16, 33, 64, 128, 136, 1000, 4096, 18000]))
    step = math.lcm(32 if product == "atlas-inference" else 1, 2 if dst == "int4" else 1, 8 if dst == "int32" else 1)
    h = -(-h // step) * step
    if fam != "950":
        h = max(h, step)
    while math.prod(lead) * h > MAX_ELEMS:
        lead[lead.index(max(lead))] //= 2
    rows = math.prod(lead)
    mode = "none" if fam == "310p910" else draw(st.sampled_from(["none", "smooth", "group"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = fill(rng, lead + [h], xdt, special=draw(st.sampled_from([0.0, 0.02, 0.5])))
    smooth = group = None
    if mode == "smooth":
        smooth = fill(rng, (h,), xdt)
    elif mode == "group":
        e = draw(st.integers(1, 4))
        group = np.append(np.sort(rng.integers(0, rows + 1, e - 1)), rows).astype(np.int32)
        smooth = fill(rng, (e, h), xdt)
    return dict(product=product, symmetric=symmetric, dst=dst, x=x, smooth=smooth, group=group)


def _dq_torch(c):
    fn = npusim.npu_dynamic_quant if c["symmetric"] else npusim.npu_dynamic_quant_asymmetric
    return lambda x, smooth_scales, group_index: fn(x, smooth_scales, group_index, dst_type=c["dst"],
                                                    product=c["product"])


def _dq_outputs(c):
    x, dst = c["x"], c["dst"]
    ydt = {"int4": INT4}.get(dst, formats.as_dtype(dst))
    yshape = x.shape[:-1] + (x.shape[-1] // 8,) if dst == "int32" else x.shape
    outs = [(yshape, ydt), (x.shape[:-1], np.float32)]
    if not c["symmetric"]:
        outs.append((x.shape[:-1], np.float32))
    return outs


@given(dq_case(), kinds(3))
def test_dynamic_quant_any_input_layout(c, layout):
    r = check_layouts(_dq_torch(c), {"x": c["x"], "smooth_scales": c["smooth"], "group_index": c["group"]}, layout)
    if r[0] == "ok":
        assert r[1][0].shape == _dq_outputs(c)[0][0]


def garbage_out(shape, dtype, kind, rng):
    """An output array in layout `kind`, filled with random bytes."""
    dtype = np.dtype(dtype)
    base = np.frombuffer(rng.bytes(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize), dtype=dtype)
    base = base.reshape(shape).copy()
    if kind in ("readonly", "bigendian"):
        return variant(base, kind)
    return variant(base, kind) if kind != "contiguous" else base


@given(dq_case(), kinds(3, OUT_KINDS + BAD_OUT_KINDS), st.integers(0, 2**32 - 1))
def test_dynamic_quant_aclnn_outputs_any_layout(c, out_kinds, seed):
    rng = np.random.default_rng(seed)
    outs = [garbage_out(s, d, k, rng) for (s, d), k in zip(_dq_outputs(c), out_kinds)]
    before = snapshot(outs)
    want = outcome(_dq_torch(c), c["x"], c["smooth"], c["group"])
    y, scale = outs[0], outs[1]
    offset = None if c["symmetric"] else outs[2]
    rejected = any(k == "readonly" or (k == "bigendian" and o.dtype.itemsize > 1) for k, o in zip(out_kinds, outs))
    try:
        ws, ex = npusim.aclnn.aclnnDynamicQuantV2GetWorkspaceSize(c["x"], c["smooth"], c["group"], DQ_CODE[c["dst"]],
                                                                  y, scale, offset, product=c["product"])
        assert npusim.aclnn.aclnnDynamicQuantV2(npusim.aclnn.workspace(ws), ws, ex) == 0
    except AclnnError as exc:
        assert_unchanged(before, outs)
        assert want[0] == "error" or rejected, f"only the torch face succeeded: {exc}"
        return
    assert want[0] == "ok" and not rejected
    if c["x"].shape[-1] == 0:        # documented: rows of length 0 launch nothing, outputs stay as they were
        assert_unchanged(before, outs)
        return
    assert_same_outcome(("ok", tuple(np.array(o) for o in outs)), want)


# ------------------------------------------------------------------ fake_quantize_per_channel_affine_cachemask
QRANGES = [(-128, 127), (0, 255), (-8, 7), (0, 0), (5, 5), (-(2**31), 2**31 - 1), (-70000, 70000)]


@st.composite
def fq_case(draw):
    product = draw(st.sampled_from(["atlas-training", "atlas-a2"]))
    xdt = draw(st.sampled_from([np.float16, np.float32]))
    sdt = draw(st.sampled_from([np.float16, np.float32]))
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=4))
    ndim = len(shape)
    axis = draw(st.integers(-1, 0) if ndim == 0 else st.integers(-ndim, ndim - 1))
    ch = shape[axis] if ndim else 1
    qmin, qmax = draw(st.sampled_from(QRANGES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = fill(rng, shape, xdt, special=draw(st.sampled_from([0.0, 0.05])))
    scale = np.abs(fill(rng, (ch,), sdt, special=draw(st.sampled_from([0.0, 0.1]))))
    lo, hi = max(qmin - 3, -(2**31)), min(qmax + 3, 2**31 - 1)
    zp = rng.integers(lo, hi, size=ch, endpoint=True).astype(np.int32)
    return dict(product=product, x=x, scale=scale, zero_point=zp, axis=axis, qmin=qmin, qmax=qmax)


def _fq_torch(c):
    return lambda x, scale, zero_point: npusim.fake_quantize_per_channel_affine_cachemask(
        x, scale, zero_point, c["axis"], c["qmin"], c["qmax"], product=c["product"])


@given(fq_case(), kinds(3))
def test_fake_quant_any_input_layout(c, layout):
    check_layouts(_fq_torch(c), {"x": c["x"], "scale": c["scale"], "zero_point": c["zero_point"]}, layout)


@given(fq_case(), kinds(2, OUT_KINDS + BAD_OUT_KINDS), st.sampled_from([None, np.float16, np.float32]),
       st.integers(0, 2**32 - 1))
def test_fake_quant_aclnn_outputs_any_layout(c, out_kinds, out_dtype, seed):
    rng = np.random.default_rng(seed)
    shape = c["x"].shape
    odt = out_dtype or c["x"].dtype
    out = garbage_out(shape, odt, out_kinds[0], rng)
    mask = garbage_out(shape, np.bool_, out_kinds[1], rng)
    before = snapshot([out, mask])
    try:
        ws, ex = npusim.aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(
            c["x"], c["scale"], c["zero_point"], c["axis"], c["qmin"], c["qmax"], out, mask, product=c["product"])
        assert npusim.aclnn.aclnnFakeQuantPerChannelAffineCachemask(npusim.aclnn.workspace(ws), ws, ex) == 0
    except AclnnError:
        assert_unchanged(before, [out, mask])
        assert out_kinds[0] in BAD_OUT_KINDS or out_kinds[1] == "readonly"
        return
    assert out_kinds[0] not in BAD_OUT_KINDS and out_kinds[1] != "readonly"
    # the same values as the torch face, rounded to out's dtype (the op_api Cast, RNE)
    ref_out, ref_mask = npusim.fake_quantize_per_channel_affine_cachemask(
        c["x"], c["scale"], c["zero_point"], c["axis"], c["qmin"], c["qmax"], product=c["product"])
    assert_bitexact(np.array(mask), ref_mask)
    if np.dtype(odt) == ref_out.dtype:
        assert_bitexact(np.array(out), ref_out)


# ------------------------------------------------------------------ npu_quant_matmul / npu_trans_quant_param
@st.composite
def qm_case(draw):
    product = draw(st.sampled_from(["atlas-a2", "atlas-a3", "atlas-inference", "ascend-950pr"]))
    inference = product == "atlas-inference"
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    int4 = product in ("atlas-a2", "atlas-a3") and draw(st.integers(0, 5)) == 0     # 950: int8 only
    out = "float16" if int4 else draw(st.sampled_from(["int8", "float16"] if inference
                                                      else ["int8", "float16", "bfloat16", "int32"]))
    m = draw(st.integers(1, 9))
    k = draw(st.integers(1, 5)) * 8 if int4 else draw(st.integers(1, 40))
    n = draw(st.integers(1, 3)) * 8 if int4 else draw(st.integers(1, 20))
    b1 = () if int4 else draw(st.sampled_from([(), (1,), (2,), (3, 2)]))
    b2 = () if int4 else draw(st.sampled_from([(), (1,), b1[-1:]]))
    if int4:
        x1 = rng.integers(-(2**31), 2**31, (m, k // 8), dtype=np.int64).astype(np.int32)
        x2 = rng.integers(-(2**31), 2**31, (k, n // 8), dtype=np.int64).astype(np.int32)
    else:
        x1 = rng.integers(-128, 128, b1 + (m, k), dtype=np.int8)
        x2 = rng.integers(-128, 128, b2 + (k, n), dtype=np.int8)
    pertoken = None
    if out in ("float16", "bfloat16") and not inference and draw(st.booleans()):
        pertoken = (rng.random(m) * 2).astype(np.float32)
    vec = out == "bfloat16" or pertoken is not None
    slen = draw(st.sampled_from([1, n]))
    s32 = (rng.standard_normal(slen) * 1e-3).astype(np.float32)
    offset, bias = None, None
    if out == "int32" or out == "bfloat16":
        scale = s32.astype(draw(st.sampled_from([np.float32, BF16])))
    elif vec:
        scale = s32
    else:
        scale = draw(st.sampled_from(["f32", "i64"]))
        scale = s32 if scale == "f32" else npusim.npu_trans_quant_param(s32, product=product)
        if out == "int8" and scale.dtype == np.float32 and draw(st.booleans()):
            offset = rng.uniform(-300, 300, slen).astype(np.float32)
    if draw(st.booleans()):
        bdt = np.int32
        if out == "bfloat16":
            bdt = draw(st.sampled_from([np.int32, BF16, np.float32]))
        elif vec:
            bdt = draw(st.sampled_from([np.int32, np.float16, np.float32]))
        bias = (rng.integers(-1000, 1000, n).astype(bdt) if bdt == np.int32 else fill(rng, (n,), bdt))
    return dict(product=product, out=out, x1=x1, x2=x2, scale=scale, offset=offset, pertoken_scale=pertoken,
                bias=bias)


@given(qm_case(), kinds(6))
def test_quant_matmul_any_input_layout(c, layout):
    fn = lambda x1, x2, scale, offset, pertoken_scale, bias: npusim.npu_quant_matmul(  # noqa: E731
        x1, x2, scale, offset=offset, pertoken_scale=pertoken_scale, bias=bias, output_dtype=c["out"],
        product=c["product"])
    check_layouts(fn, {k: c[k] for k in ("x1", "x2", "scale", "offset", "pertoken_scale", "bias")}, layout)


@given(st.integers(1, 40), st.integers(0, 2**32 - 1), kinds(2), st.sampled_from([0, 1]), st.booleans())
def test_trans_quant_param_any_input_layout(n, seed, layout, round_mode, with_offset):
    rng = np.random.default_rng(seed)
    scale = fill(rng, (n,), np.float32, special=0.1)
    offset = fill(rng, (n,), np.float32, special=0.1) if with_offset else None
    check_layouts(lambda scale, offset: npusim.npu_trans_quant_param(scale, offset, round_mode),
                  {"scale": scale, "offset": offset}, layout)


@given(st.integers(1, 6), st.integers(1, 24), st.integers(1, 12), st.integers(0, 2**32 - 1), kinds(2),
       st.sampled_from([None, "float16", "bfloat16", "int32"]))
def test_linear_a8w8_any_input_layout(m, k, n, seed, layout, out):
    rng = np.random.default_rng(seed)
    layer = npusim.LinearA8W8Quant(k, n, bias=True, output_dtype=out)
    weight = rng.integers(-128, 128, (n, k), dtype=np.int8)
    x1 = rng.integers(-128, 128, (m, k), dtype=np.int8)
    layer.scale = (rng.random(n) * 1e-2).astype(np.float32)
    layer.bias = rng.integers(-500, 500, n).astype(np.int32)

    def call(x1, weight):
        layer.weight = weight
        return layer(x1)
    check_layouts(call, {"x1": x1, "weight": weight}, layout)


# ------------------------------------------------------------------ moe_init_routing_quant
@st.composite
def moe_case(draw):
    n, k, h = draw(st.integers(0, 7)), draw(st.integers(0, 3)), draw(st.sampled_from([0, 1, 3, 16, 40]))
    xdt = draw(st.sampled_from([np.float16, BF16, np.float32]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = fill(rng, (n, h), xdt, special=draw(st.sampled_from([0.0, 0.05])))
    row = np.arange(n * k, dtype=np.int32)
    row = (rng.permutation(row) if draw(st.booleans()) else row.reshape(k, n).T).reshape(n, k).astype(np.int32)
    spread = draw(st.sampled_from(["small", "wide", "extreme"]))
    if spread == "small":
        expert = rng.integers(0, 4, (n, k))
    elif spread == "wide":
        expert = rng.integers(-(2**24), 2**24, (n, k), endpoint=True)
    else:                                        # exactly representable in fp32, far apart
        expert = rng.choice(np.array([-(2**31), 2**30, 0, -1, 2**24 + 2]), (n, k))
    active = draw(st.integers(0, n + 2))
    scale = draw(st.sampled_from([1.0, 0.5, -3.25, 1e-3, 70000.0]))
    offset = draw(st.sampled_from([0.0, 0.5, -1.5, 100.0]))
    return dict(x=x, row_idx=np.ascontiguousarray(row), expert_idx=expert.astype(np.int32), active=active,
                scale=scale, offset=offset)


@given(moe_case(), st.lists(st.sampled_from([k for k in IN_KINDS if k != "broadcast"]), min_size=3, max_size=3))
def test_moe_init_routing_quant_any_input_layout(c, layout):
    fn = lambda x, row_idx, expert_idx: npusim.moe_init_routing_quant(  # noqa: E731
        x, row_idx, expert_idx, c["active"], c["scale"], c["offset"])
    r = check_layouts(fn, {"x": c["x"], "row_idx": c["row_idx"], "expert_idx": c["expert_idx"]}, layout)
    assert r[0] == "ok", r


@given(moe_case(), kinds(3, ("contiguous", "misaligned", "strided", "readonly", "bigendian")),
       st.integers(0, 2**32 - 1))
def test_moe_init_routing_quant_aclnn_outputs(c, out_kinds, seed):
    rng = np.random.default_rng(seed)
    want = npusim.moe_init_routing_quant(c["x"], c["row_idx"], c["expert_idx"], c["active"], c["scale"], c["offset"])
    outs = [garbage_out(w.shape, w.dtype, kd, rng) for w, kd in zip(want, out_kinds)]
    before = snapshot(outs)
    try:
        ws, ex = npusim.aclnn.aclnnMoeInitRoutingQuantGetWorkspaceSize(
            c["x"], c["row_idx"], c["expert_idx"], c["active"], c["scale"], c["offset"], *outs)
        assert npusim.aclnn.aclnnMoeInitRoutingQuant(npusim.aclnn.workspace(ws), ws, ex) == 0
    except AclnnError:
        assert_unchanged(before, outs)
        assert any(not o.flags.c_contiguous or not o.flags.writeable or o.dtype.byteorder == ">" for o in outs)
        return
    assert "readonly" not in out_kinds
    for o, w in zip(outs, want):
        assert_bitexact(np.array(o), w)


# ------------------------------------------------------------------ indexer_compress_epilog
@st.composite
def ice_case(draw):
    product = draw(st.sampled_from(["ascend-950pr", "ascend-950dt"]))
    t, rows = draw(st.integers(0, 5)), draw(st.integers(0, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    quant_mode = draw(st.sampled_from([0, 1, 2]))
    x = fill(rng, (t, 4096), draw(st.sampled_from([np.float16, BF16])), special=draw(st.sampled_from([0.0, 0.01])))
    slots = np.full(t, -1, np.int32)
    take = min(t, rows)
    slots[:take] = rng.permutation(rows)[:take]
    slots[rng.random(t) < 0.3] = -1
    slots = rng.permutation(slots).astype(np.int32)
    cache = np.frombuffer(rng.bytes(rows * 4096), np.uint8).reshape(rows, 4096).copy().view(
        np.uint8 if quant_mode == 2 else draw(st.sampled_from([E4M3, E5M2])))      # mode 2: hifloat8 codes
    sdt = E8M0 if quant_mode == 0 else np.float32
    scale = np.frombuffer(rng.bytes(rows * 32 * np.dtype(sdt).itemsize), np.uint8).copy().view(sdt).reshape(rows, 32)
    return dict(product=product, x=x, slot_mapping=slots, cache=cache, scale=scale, quant_mode=quant_mode,
                round_scale=draw(st.booleans()), rule=draw(st.sampled_from(["kernel", "ceil"])))


def _ice_call(c, cache, scale, x, slot_mapping):
    npusim.indexer_compress_epilog(cache, scale, x, slot_mapping, quant_mode=c["quant_mode"],
                                   round_scale=c["round_scale"], mx_scale_rule=c["rule"], product=c["product"])
    return cache, scale


@given(ice_case(), kinds(2))
def test_indexer_compress_epilog_any_input_layout(c, layout):
    x, slots = variant(c["x"], layout[0]), variant(c["slot_mapping"], layout[1])
    before = snapshot([x, slots])
    got = outcome(_ice_call, c, c["cache"].copy(), c["scale"].copy(), x, slots)
    assert_unchanged(before, [x, slots])
    # documented: x and slot_mapping must be C-contiguous (big-endian data is converted first)
    if any(not a.flags.c_contiguous and a.dtype.byteorder != ">" for a in (x, slots)):
        assert got[0] == "error" and "contiguous" in got[2]
        return
    want = outcome(_ice_call, c, c["cache"].copy(), c["scale"].copy(), native(x), native(slots))
    assert_same_outcome(got, want)


@given(ice_case(), kinds(2, ("contiguous", "misaligned", "strided", "readonly", "bigendian")))
def test_indexer_compress_epilog_in_place_layouts(c, out_kinds):
    want = outcome(_ice_call, c, c["cache"].copy(), c["scale"].copy(), c["x"], c["slot_mapping"])
    cache, scale = variant(c["cache"], out_kinds[0]), variant(c["scale"], out_kinds[1])
    before = snapshot([cache, scale])
    try:
        _ice_call(c, cache, scale, c["x"], c["slot_mapping"])
    except AclnnError:
        assert_unchanged(before, [cache, scale])
        assert any(not a.flags.c_contiguous or not a.flags.writeable or a.dtype.byteorder == ">"
                   for a in (cache, scale))
        return
    assert "readonly" not in out_kinds
    assert_same_outcome(("ok", (np.array(cache), np.array(scale))), want)


# ------------------------------------------------------------------ formats, testing
CAST_SRC = [np.float32, np.float16, BF16, E4M3, E5M2, E8M0, np.float64, np.int8, np.int16, np.int32, np.int64,
            np.uint8, np.uint16, np.uint32, INT4, np.bool_]
CAST_DST = [np.float32, np.float16, BF16, E4M3, E5M2, E8M0, np.int8, np.int16, np.int32, np.uint8, INT4]


@given(st.sampled_from(CAST_SRC), st.sampled_from(CAST_DST), st.sampled_from(list(formats.ROUND_MODES)),
       st.booleans(), st.lists(st.integers(0, 4), max_size=3), st.sampled_from(IN_KINDS),
       st.integers(0, 2**32 - 1))
def test_cast_any_layout(src, dst, mode, sat, shape, kind, seed):
    rng = np.random.default_rng(seed)
    src = np.dtype(src)
    if src.kind == "f" or src in (BF16, E4M3, E5M2, E8M0):
        a = fill(rng, shape, src, special=0.1)
    elif src == INT4:
        a = np.asarray(rng.integers(-8, 8, shape)).astype(INT4)
    elif src == np.bool_:
        a = np.asarray(rng.random(shape) < 0.5)
    else:
        info = np.iinfo(src)
        a = np.asarray(rng.integers(info.min, info.max, shape, dtype=src, endpoint=True))
    check_layouts(lambda x: formats.cast(x, dst, mode, saturate=sat), {"x": a}, [kind])


@given(st.lists(st.integers(0, 3), max_size=2), st.integers(0, 3), st.sampled_from(["uint8", "int32"]),
       st.sampled_from(IN_KINDS), st.integers(0, 2**32 - 1))
def test_pack_unpack_int4_any_layout(lead, groups, container, kind, seed):
    rng = np.random.default_rng(seed)
    per = 2 if container == "uint8" else 8
    v = rng.integers(-8, 8, tuple(lead) + (groups * per,)).astype(np.int8)
    packed = check_layouts(lambda values: formats.pack_int4(values, container), {"values": v}, [kind])
    assert packed[0] == "ok"
    p = packed[1][0]
    check_layouts(lambda packed: formats.unpack_int4(packed, container), {"packed": p}, [kind])
    assert_bitexact(formats.unpack_int4(p, container), native(variant(v, kind)))     # round trip


def test_formats_bad_input_clear_errors():
    with pytest.raises(ValueError, match="round_mode"):
        formats.cast(np.ones(2, np.float32), np.float16, "nearest")
    with pytest.raises(TypeError, match="source dtype"):
        formats.cast(np.ones(2, np.complex64), np.float16)
    with pytest.raises(TypeError, match="target dtype"):
        formats.cast(np.ones(2, np.float32), np.complex64)
    with pytest.raises(ValueError, match="unknown dtype"):
        formats.cast(np.ones(2, np.float32), "float7")
    with pytest.raises(TypeError, match="object|source dtype"):
        formats.cast(np.array([object()]), np.float16)
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        formats.pack_int4(np.array([8, 0], np.int8))
    with pytest.raises(ValueError, match="multiple of 8"):
        formats.pack_int4(np.zeros(4, np.int8), "int32")
    with pytest.raises(ValueError, match="container"):
        formats.pack_int4(np.zeros(4, np.int8), "int16")
    with pytest.raises(TypeError, match="integers"):
        formats.pack_int4(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="at least one dimension"):
        formats.pack_int4(np.int8(3))
    with pytest.raises(TypeError, match="uint8"):
        formats.unpack_int4(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="exceeds"):
        formats.unpack_int4(np.zeros(2, np.uint8), n=5)
    # lists and scalars are arrays of values
    assert_bitexact(formats.cast([1.5, 2.5], np.int8), np.array([2, 2], np.int8))
    assert_bitexact(formats.cast(2.5, np.int8, "round"), np.array(3, np.int8))


@given(st.sampled_from([np.float32, np.float16, BF16, E4M3, np.int8, np.int32, np.bool_]),
       st.lists(st.integers(0, 4), min_size=1, max_size=3),
       st.sampled_from([k for k in IN_KINDS if k != "bigendian"]), st.integers(0, 2**32 - 1))
def test_assert_bitexact_any_layout(dt, shape, kind, seed):
    rng = np.random.default_rng(seed)
    a = fill(rng, shape, dt, special=0.2) if np.dtype(dt).kind not in "ib" else \
        rng.integers(0, 2, shape).astype(dt)
    v = variant(a, kind)
    assert_bitexact(v, native(v))                 # equal bits in any layout
    if a.size:
        other = native(v).copy()
        flat = other.reshape(-1).view(np.uint8)
        flat[0] ^= 1                              # one bit differs
        with pytest.raises(AssertionError, match="1 of"):
            assert_bitexact(v, other)


def test_assert_bitexact_big_endian_and_0d():
    a = np.arange(3, dtype=np.float32)
    assert_bitexact(a.astype(">f4"), a)
    with pytest.raises(AssertionError, match="1 of 1"):
        assert_bitexact(np.float32(1.0), np.float32(2.0))


def test_assert_bitexact_mismatched_shape_dtype():
    with pytest.raises(AssertionError, match="dtype differs"):
        assert_bitexact(np.zeros(2, np.float32), np.zeros(2, np.float16))
    with pytest.raises(AssertionError, match="shape differs"):
        assert_bitexact(np.zeros(2, np.float32), np.zeros(3, np.float32))


# ------------------------------------------------------------------ products, plans, perfmodel
@given(st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12), st.binary(max_size=4),
                 st.lists(st.integers(), max_size=2)))
def test_get_product_rejects_anything_else_clearly(name):
    try:
        soc = npusim.get_product(name)
    except (ValueError, TypeError) as exc:
        assert "product" in str(exc)
        return
    assert isinstance(name, str) and soc.soc       # only strings naming a product resolve


@pytest.mark.parametrize("name", ["atlas-a2", "ATLAS-A2", " atlas-a2 ", "Ascend910B4", "910b4", "ascend-950pr"])
def test_get_product_spellings(name):
    assert npusim.get_product(name) == npusim.get_product(npusim.get_product(name))


def test_make_plan_bad_input():
    with pytest.raises(ValueError, match="no planner"):
        npusim.make_plan("npu_dynamic_quantx", x=TensorSpec((2, 8), "float16"))
    with pytest.raises(AclnnError, match="'x'.*nullptr") as e:
        npusim.make_plan("npu_dynamic_quant", x=None)
    assert e.value.status == NULLPTR
    with pytest.raises(AclnnError, match="product"):
        npusim.make_plan("npu_dynamic_quant", x=TensorSpec((2, 8), "float16"), product="atlas-200i-500-a2")
    with pytest.raises(TypeError):
        npusim.make_plan("npu_dynamic_quant", x=TensorSpec((2, 8), "float16"), bogus=1)
    with pytest.raises(ValueError, match="unknown dtype"):
        TensorSpec((2, 8), "float7")
    # a plan needs no data: TensorSpec, arrays and empty shapes all plan (an empty x launches nothing)
    assert npusim.make_plan("npu_dynamic_quant", x=np.zeros((0, 8), np.float16)).block_dim == 0


perfmodel = pytest.importorskip("perfmodel")


@pytest.mark.parametrize("op, product, args, exc", [
    ("no_such_op", "atlas-a2", {"x": TensorSpec((8, 128), "float16")}, ValueError),
    ("npu_dynamic_quant", "atlas-zz", {"x": TensorSpec((8, 128), "float16")}, ValueError),
    ("npu_dynamic_quant", 5, {"x": TensorSpec((8, 128), "float16")}, TypeError),
    ("npu_dynamic_quant", "atlas-a2", {}, TypeError),
    ("npu_dynamic_quant", "atlas-a2", {"x": None}, AclnnError),
    ("npu_dynamic_quant", "atlas-a2", {"x": TensorSpec((8, 128), "float32")}, AclnnError),
    ("npu_dynamic_quant", "atlas-200i-500-a2", {"x": TensorSpec((8, 128), "float16")}, ValueError),
    ("npu_dynamic_quant", "atlas-a2", {"x": TensorSpec((8, 128), "float16"), "foo": 1}, TypeError),
    ("moe_init_routing_quant", "atlas-a2", {"x": TensorSpec((4, 16), "float16"), "row_idx": TensorSpec((4, 2), "int64"),
                                            "expert_idx": TensorSpec((4, 2), "int32"), "active_num": 4}, AclnnError),
])
def test_perfmodel_predict_bad_input(op, product, args, exc):
    with pytest.raises(exc):
        perfmodel.predict(op, product, **args)


def test_perfmodel_predict_rejects_degenerate_matmul_and_bad_calibration():
    with pytest.raises((ValueError, TypeError)):
        perfmodel.predict("matmul", "atlas-a2", a=TensorSpec((0, 16), "float16"), b=TensorSpec((16, 8), "float16"))
    with pytest.raises((ValueError, TypeError)):
        perfmodel.predict("npu_dynamic_quant", "atlas-a2", calibration=5, x=TensorSpec((8, 128), "float16"))
    with pytest.raises(ValueError, match="block_dim"):
        perfmodel.predict("add", "atlas-a2", x=TensorSpec((64, 64), "float16"), y=TensorSpec((64, 64), "float16"),
                          block_dim=-1)
    with pytest.raises(ValueError, match=">= 0"):
        TensorSpec((-1, 8), "float16")


@pytest.mark.parametrize("op, args", [
    ("npu_dynamic_quant", {"x": TensorSpec((0, 128), "float16")}),
    ("moe_init_routing_quant", {"x": TensorSpec((0, 16), "float16"), "row_idx": TensorSpec((0, 2), "int32"),
                                "expert_idx": TensorSpec((0, 2), "int32"), "active_num": 0}),
    ("fake_quantize_per_channel_affine_cachemask", {"x": TensorSpec((0, 3), "float16"),
                                                    "scale": TensorSpec((3,), "float32"),
                                                    "zero_point": TensorSpec((3,), "int32"), "axis": 1,
                                                    "quant_min": 0, "quant_max": 255}),
])
def test_perfmodel_predict_empty_tensors_are_finite(op, args):
    pred = perfmodel.predict(op, "atlas-a2", **args)
    assert math.isfinite(pred.latency_us) and pred.latency_us >= 0


# ------------------------------------------------------------------ one deliberately broken input of each kind
_R = np.random.default_rng(7)
_X16 = _R.standard_normal((4, 64)).astype(np.float16)
_XF = _R.standard_normal((3, 4, 5)).astype(np.float32)
_SC = np.full(4, 0.05, np.float32)
_ZP = np.zeros(4, np.int32)
_X1 = _R.integers(-128, 128, (3, 32), dtype=np.int8)
_X2 = _R.integers(-128, 128, (32, 8), dtype=np.int8)
_MX = _R.standard_normal((4, 16)).astype(np.float16)
_ROW = np.arange(8, dtype=np.int32).reshape(2, 4).T.copy()
_EXP = _R.integers(0, 3, (4, 2)).astype(np.int32)
_IX = _R.standard_normal((3, 4096)).astype(np.float16)
_SLOTS = np.array([2, -1, 0], np.int32)


def _outs(*specs):
    """Output arrays filled with the byte 0x5A (so that any write shows)."""
    return [np.frombuffer(bytes([0x5A]) * (int(np.prod(s)) * np.dtype(d).itemsize), dtype=d).reshape(s).copy()
            for s, d in specs]


def _face(name):
    """(callable taking keyword overrides, in-place outputs it writes). Every default is valid."""
    if name == "npu_dynamic_quant":
        d = dict(x=_X16, smooth_scales=None, group_index=None, dst_type=np.int8, product="atlas-a2")
        return lambda **o: npusim.npu_dynamic_quant(**{**d, **o}), []
    if name == "aclnnDynamicQuantV2":
        outs = _outs(((4, 64), np.int8), ((4,), np.float32), ((4,), np.float32))
        d = dict(x=_X16, smoothScalesOptional=None, groupIndexOptional=None, dstType=2, yOut=outs[0],
                 scaleOut=outs[1], offsetOut=outs[2], product="atlas-a2")

        def run(**o):
            ws, ex = npusim.aclnn.aclnnDynamicQuantV2GetWorkspaceSize(**{**d, **o})
            return npusim.aclnn.aclnnDynamicQuantV2(npusim.aclnn.workspace(ws), ws, ex)
        return run, outs
    if name == "fake_quantize_per_channel_affine_cachemask":
        d = dict(x=_XF, scale=_SC, zero_point=_ZP, axis=1, quant_min=-128, quant_max=127, product="atlas-a2")
        return lambda **o: npusim.fake_quantize_per_channel_affine_cachemask(**{**d, **o}), []
    if name == "aclnnFakeQuantPerChannelAffineCachemask":
        outs = _outs(((3, 4, 5), np.float32), ((3, 4, 5), np.bool_))
        d = dict(self=_XF, scale=_SC, zeroPoint=_ZP, axis=1, quantMin=-128, quantMax=127, out=outs[0],
                 mask=outs[1], product="atlas-a2")

        def run(**o):
            ws, ex = npusim.aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(**{**d, **o})
            return npusim.aclnn.aclnnFakeQuantPerChannelAffineCachemask(npusim.aclnn.workspace(ws), ws, ex)
        return run, outs
    if name == "npu_quant_matmul":
        d = dict(x1=_X1, x2=_X2, scale=np.full(8, 1e-3, np.float32), output_dtype=None, product="atlas-a2")
        return lambda **o: npusim.npu_quant_matmul(**{**d, **o}), []
    if name == "npu_trans_quant_param":
        d = dict(scale=np.full(8, 1e-3, np.float32), offset=None, round_mode=0, product="atlas-a2")
        return lambda **o: npusim.npu_trans_quant_param(**{**d, **o}), []
    if name == "moe_init_routing_quant":
        d = dict(x=_MX, row_idx=_ROW, expert_idx=_EXP, active_num=4, scale=1.0, offset=0.0, product="atlas-a2")
        return lambda **o: npusim.moe_init_routing_quant(**{**d, **o}), []
    if name == "aclnnMoeInitRoutingQuant":
        outs = _outs(((8, 16), np.int8), ((8,), np.int32), ((8,), np.int32))
        d = dict(x=_MX, rowIdx=_ROW, expertIdx=_EXP, activeNum=4, scale=1.0, offset=0.0, expandedXOut=outs[0],
                 expandedRowIdxOut=outs[1], expandedExpertIdxOut=outs[2], product="atlas-a2")

        def run(**o):
            ws, ex = npusim.aclnn.aclnnMoeInitRoutingQuantGetWorkspaceSize(**{**d, **o})
            return npusim.aclnn.aclnnMoeInitRoutingQuant(npusim.aclnn.workspace(ws), ws, ex)
        return run, outs
    if name == "indexer_compress_epilog":
        outs = _outs(((4, 4096), E4M3), ((4, 32), np.float32))
        d = dict(indexer_compress_cache=outs[0], indexer_compress_scale=outs[1], x=_IX, slot_mapping=_SLOTS,
                 product="ascend-950pr")
        return lambda **o: npusim.indexer_compress_epilog(**{**d, **o}), outs
    if name == "aclnnIndexerCompressEpilog":
        outs = _outs(((4, 4096), E4M3), ((4, 32), np.float32))
        d = dict(indexerCompressCache=outs[0], indexerCompressScale=outs[1], x=_IX, slotMapping=_SLOTS,
                 product="ascend-950pr")

        def run(**o):
            ws, ex = npusim.aclnn.aclnnIndexerCompressEpilogGetWorkspaceSize(**{**d, **o})
            return npusim.aclnn.aclnnIndexerCompressEpilog(npusim.aclnn.workspace(ws), ws, ex, None)
        return run, outs
    raise KeyError(name)


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# (face, kind of breakage, overrides, status, text the message must contain)
BROKEN = [
    ("npu_dynamic_quant", "none", dict(x=None), NULLPTR, "'x'"),
    ("npu_dynamic_quant", "list", dict(x=_X16.tolist()), INVALID, "'x': dtype"),
    ("npu_dynamic_quant", "scalar", dict(x=1.5), INVALID, "'x'"),
    ("npu_dynamic_quant", "ragged", dict(x=[[1.0], [1.0, 2.0]]), INVALID, "'x'"),
    ("npu_dynamic_quant", "object", dict(x=np.array([None, 1], dtype=object)), INVALID, "'x'"),
    ("npu_dynamic_quant", "product", dict(product="atlas-200i-500-a2"), INVALID, "'product'"),
    ("npu_dynamic_quant", "product", dict(product="atlas-z9"), INVALID, "'product'"),
    ("npu_dynamic_quant", "product", dict(product=None), INVALID, "'product'"),
    ("npu_dynamic_quant", "enum", dict(dst_type="int16"), INVALID, "'dst_type'"),
    ("npu_dynamic_quant", "enum", dict(dst_type="hifloat8"), INVALID, "'dst_type'"),
    ("npu_dynamic_quant", "dtype", dict(x=_X16.astype(np.float32)), INVALID, "'x': dtype"),
    ("npu_dynamic_quant", "shape", dict(smooth_scales=np.ones(63, np.float16)), INVALID, "'smooth_scales'"),
    ("npu_dynamic_quant", "data", dict(smooth_scales=np.ones((2, 64), np.float16),
                                       group_index=np.array([3, 1], np.int32)), INVALID, "'group_index'"),
    ("aclnnDynamicQuantV2", "none", dict(x=None), NULLPTR, "'x'"),
    ("aclnnDynamicQuantV2", "none", dict(scaleOut=None), NULLPTR, "'scaleOut'"),
    ("aclnnDynamicQuantV2", "enum", dict(dstType=34), INVALID, "'dstType'"),
    ("aclnnDynamicQuantV2", "enum", dict(dstType=7), INVALID, "'dstType'"),
    ("aclnnDynamicQuantV2", "enum", dict(dstType=True), INVALID, "'dstType'"),
    ("aclnnDynamicQuantV2", "list", dict(yOut=np.zeros((4, 64), np.int8).tolist()), INVALID, "'yOut'"),
    ("aclnnDynamicQuantV2", "readonly", dict(scaleOut=_ro(np.zeros(4, np.float32))), INVALID, "writable"),
    ("aclnnDynamicQuantV2", "bigendian", dict(offsetOut=np.zeros(4, ">f4")), INVALID, "byte order"),
    ("aclnnDynamicQuantV2", "shape", dict(yOut=np.zeros((4, 65), np.int8)), INVALID, "'yOut': shape"),
    ("aclnnDynamicQuantV2", "product", dict(product="ascend-950pr", x=_X16.astype(np.float32)), INVALID, "'x'"),
    ("aclnnDynamicQuantV2", "data", dict(smoothScalesOptional=np.ones((2, 64), np.float16),
                                         groupIndexOptional=np.array([1, 3], np.int32)), INVALID, "last entry"),
    ("fake_quantize_per_channel_affine_cachemask", "none", dict(zero_point=None), NULLPTR, "'zero_point'"),
    ("fake_quantize_per_channel_affine_cachemask", "list", dict(x=_XF.tolist()), INVALID, "'x': dtype"),
    ("fake_quantize_per_channel_affine_cachemask", "enum", dict(axis=3), INVALID, "'axis'"),
    ("fake_quantize_per_channel_affine_cachemask", "enum", dict(axis=1.0), INVALID, "'axis'"),
    ("fake_quantize_per_channel_affine_cachemask", "enum", dict(quant_min=200), INVALID, "'quant_min'"),
    ("fake_quantize_per_channel_affine_cachemask", "product", dict(product="atlas-inference"), INVALID, "'product'"),
    ("fake_quantize_per_channel_affine_cachemask", "dtype", dict(zero_point=_ZP.astype(np.float32)), INVALID,
     "'zero_point'"),
    ("aclnnFakeQuantPerChannelAffineCachemask", "none", dict(mask=None), NULLPTR, "'mask'"),
    ("aclnnFakeQuantPerChannelAffineCachemask", "readonly", dict(out=_ro(np.zeros((3, 4, 5), np.float32))),
     INVALID, "writable"),
    ("aclnnFakeQuantPerChannelAffineCachemask", "bigendian", dict(out=np.zeros((3, 4, 5), ">f4")), INVALID,
     "byte order"),
    ("aclnnFakeQuantPerChannelAffineCachemask", "list", dict(out=np.zeros((3, 4, 5)).tolist()), INVALID, "'out'"),
    ("aclnnFakeQuantPerChannelAffineCachemask", "shape", dict(scale=np.ones(5, np.float32)), INVALID, "'zeroPoint'"),
    ("npu_quant_matmul", "none", dict(scale=None), NULLPTR, "'scale'"),
    ("npu_quant_matmul", "list", dict(x1=_X1.tolist()), INVALID, "'x1': dtype"),
    ("npu_quant_matmul", "scalar", dict(x1=np.int8(3)), INVALID, "'x1'"),
    ("npu_quant_matmul", "enum", dict(output_dtype="float64"), INVALID, "'output_dtype'"),
    ("npu_quant_matmul", "enum", dict(output_dtype=object()), INVALID, "'output_dtype'"),
    ("npu_quant_matmul", "product", dict(product="atlas-training"), INVALID, "'product'"),
    ("npu_quant_matmul", "shape", dict(x2=_X2[:31]), INVALID, "'x2'"),
    ("npu_quant_matmul", "empty", dict(x1=np.zeros((0, 32), np.int8)), INVALID, "'x1'"),
    ("npu_quant_matmul", "data", dict(scale=np.full(8, 1 << 50, np.int64)), INVALID, "'scale'"),
    ("npu_trans_quant_param", "none", dict(scale=None), NULLPTR, "'scale'"),
    ("npu_trans_quant_param", "list", dict(scale=[1.0, 2.0]), INVALID, "'scale': dtype"),
    ("npu_trans_quant_param", "enum", dict(round_mode=2), INVALID, "'round_mode'"),
    ("npu_trans_quant_param", "enum", dict(round_mode="1"), INVALID, "'round_mode'"),
    ("npu_trans_quant_param", "shape", dict(scale=np.ones((2, 2), np.float32)), INVALID, "'scale'"),
    ("npu_trans_quant_param", "product", dict(product="atlas-training"), INVALID, "'product'"),
    ("moe_init_routing_quant", "none", dict(expert_idx=None), NULLPTR, "'expert_idx'"),
    ("moe_init_routing_quant", "list", dict(row_idx=_ROW.tolist()), INVALID, "'row_idx': dtype"),
    ("moe_init_routing_quant", "scalar", dict(x=2.0), INVALID, "'x'"),
    ("moe_init_routing_quant", "enum", dict(active_num=-1), 561002, "'active_num'"),   # a tiling error (aclnn doc)
    ("moe_init_routing_quant", "enum", dict(scale=float("nan")), INVALID, "'scale'"),
    ("moe_init_routing_quant", "enum", dict(offset="0"), INVALID, "'offset'"),
    ("moe_init_routing_quant", "product", dict(product="atlas-inference"), INVALID, "'product'"),
    ("moe_init_routing_quant", "data", dict(row_idx=np.zeros((4, 2), np.int32)), INVALID, "permutation"),
    ("aclnnMoeInitRoutingQuant", "none", dict(expandedRowIdxOut=None), NULLPTR, "'expandedRowIdxOut'"),
    ("aclnnMoeInitRoutingQuant", "readonly", dict(expandedXOut=_ro(np.zeros((8, 16), np.int8))), INVALID,
     "writable"),
    ("aclnnMoeInitRoutingQuant", "bigendian", dict(expandedExpertIdxOut=np.zeros(8, ">i4")), INVALID, "byte order"),
    ("aclnnMoeInitRoutingQuant", "strided", dict(expandedRowIdxOut=np.zeros(16, np.int32)[::2]), INVALID,
     "contiguous"),
    ("aclnnMoeInitRoutingQuant", "data", dict(expertIdx=np.full((4, 2), 2**30 + 1, np.int32)), INVALID,
     "'expertIdx'"),
    ("indexer_compress_epilog", "none", dict(x=None), NULLPTR, "'x'"),
    ("indexer_compress_epilog", "none", dict(indexer_compress_scale=None), NULLPTR, "'indexer_compress_scale'"),
    ("indexer_compress_epilog", "list", dict(slot_mapping=_SLOTS.tolist()), INVALID, "'slot_mapping'"),
    ("indexer_compress_epilog", "list", dict(indexer_compress_cache=np.zeros((4, 4096)).tolist()), INVALID,
     "'indexer_compress_cache'"),
    ("indexer_compress_epilog", "enum", dict(quant_mode=3), INVALID, "'quant_mode'"),
    ("indexer_compress_epilog", "enum", dict(mx_scale_rule="floor"), INVALID, "'mx_scale_rule'"),
    ("indexer_compress_epilog", "enum", dict(mx_scale_rule=["kernel"]), INVALID, "'mx_scale_rule'"),
    ("indexer_compress_epilog", "enum", dict(round_scale=1), INVALID, "'round_scale'"),
    ("indexer_compress_epilog", "product", dict(product="atlas-a2"), INVALID, "'product'"),
    ("indexer_compress_epilog", "strided", dict(x=np.zeros((3, 8192), np.float16)[:, ::2]), INVALID, "contiguous"),
    ("indexer_compress_epilog", "readonly", dict(indexer_compress_cache=_ro(np.zeros((4, 4096), E4M3))), INVALID,
     "writable"),
    ("indexer_compress_epilog", "bigendian", dict(indexer_compress_scale=np.zeros((4, 32), ">f4")), INVALID,
     "byte order"),
    ("indexer_compress_epilog", "data", dict(slot_mapping=np.array([1, 1, -1], np.int32)), INVALID, "distinct"),
    ("indexer_compress_epilog", "data", dict(slot_mapping=np.array([4, 0, -1], np.int32)), INVALID, "[-1, 4)"),
    ("aclnnIndexerCompressEpilog", "none", dict(slotMapping=None), NULLPTR, "'slotMapping'"),
    ("aclnnIndexerCompressEpilog", "enum", dict(quantMode=-1), INVALID, "'quantMode'"),
    ("aclnnIndexerCompressEpilog", "data", dict(slotMapping=np.array([0, -2, 1], np.int32)), INVALID,
     "'slotMapping'"),
]


@pytest.mark.parametrize("face, kind, overrides, status, text", BROKEN,
                         ids=[f"{f}-{k}-{i}" for i, (f, k, *_) in enumerate(BROKEN)])
def test_broken_input_gives_clear_error(face, kind, overrides, status, text):
    """Each kind of broken input is an AclnnError naming the operator, the parameter and the rule, with
    the aclnn status; in-place outputs are left byte for byte as they were."""
    call, outs = _face(face)
    before = snapshot(outs)
    with pytest.raises(AclnnError) as err:
        call(**overrides)
    e = err.value
    assert e.status == status
    assert text in str(e), str(e)
    assert e.op and e.op in str(e)
    assert len(str(e)) < 1200
    assert_unchanged(before, outs)


@pytest.mark.parametrize("face", ["npu_dynamic_quant", "aclnnDynamicQuantV2",
                                  "fake_quantize_per_channel_affine_cachemask",
                                  "aclnnFakeQuantPerChannelAffineCachemask", "npu_quant_matmul",
                                  "npu_trans_quant_param", "moe_init_routing_quant", "aclnnMoeInitRoutingQuant",
                                  "indexer_compress_epilog", "aclnnIndexerCompressEpilog"])
def test_valid_defaults_of_broken_table_run(face):
    """The table above breaks one argument of an otherwise valid call (so each error is that argument's)."""
    call, _ = _face(face)
    call()


def test_executor_misuse_is_a_clear_error():
    call, outs = _face("aclnnDynamicQuantV2")
    ws, ex = npusim.aclnn.aclnnDynamicQuantV2GetWorkspaceSize(_X16, None, None, 2, outs[0], outs[1], None)
    with pytest.raises(AclnnError, match="executor was not made by") as e:
        npusim.aclnn.aclnnMoeInitRoutingQuant(npusim.aclnn.workspace(ws), ws, ex)
    assert e.value.status == INVALID
    with pytest.raises(AclnnError, match="nullptr"):
        npusim.aclnn.aclnnDynamicQuantV2(npusim.aclnn.workspace(ws), ws, None)
    assert npusim.aclnn.aclnnDynamicQuantV2(npusim.aclnn.workspace(ws), ws, ex) == 0
    with pytest.raises(AclnnError, match="single-use"):
        npusim.aclnn.aclnnDynamicQuantV2(npusim.aclnn.workspace(ws), ws, ex)
    ws, ex = npusim.aclnn.aclnnIndexerCompressEpilogGetWorkspaceSize(*_outs(((4, 4096), E4M3), ((4, 32), np.float32)),
                                                                     _IX, _SLOTS)
    with pytest.raises(AclnnError, match="workspaceSize"):
        npusim.aclnn.aclnnIndexerCompressEpilog(npusim.aclnn.workspace(ws - 1), ws - 1, ex)
    with pytest.raises(AttributeError, match="available"):
        npusim.aclnn.aclnnNoSuchOp


@given(st.sampled_from(["aclnnDynamicQuantV2", "aclnnFakeQuantPerChannelAffineCachemask", "aclnnMoeInitRoutingQuant",
                        "indexer_compress_epilog", "aclnnIndexerCompressEpilog"]),
       st.data())
def test_failed_call_never_writes_outputs(face, data):
    """Any single broken argument (drawn from the table for this face, or a random junk value) leaves
    every in-place output unchanged."""
    call, outs = _face(face)
    rows = [r for r in BROKEN if r[0] == face]
    if rows and data.draw(st.booleans()):
        overrides = data.draw(st.sampled_from(rows))[2]
    else:
        sig = {"aclnnDynamicQuantV2": ["x", "dstType", "yOut", "scaleOut", "offsetOut", "product"],
               "aclnnFakeQuantPerChannelAffineCachemask": ["self", "scale", "zeroPoint", "axis", "out", "mask",
                                                           "product"],
               "aclnnMoeInitRoutingQuant": ["x", "rowIdx", "expertIdx", "activeNum", "expandedXOut", "product"],
               "indexer_compress_epilog": ["x", "slot_mapping", "indexer_compress_scale", "product"],
               "aclnnIndexerCompressEpilog": ["x", "slotMapping", "indexerCompressScale", "product"]}[face]
        name = data.draw(st.sampled_from(sig))
        junk = data.draw(st.sampled_from(["str", -7, 3.5, [[1, 2], [3]], np.zeros(3, np.complex64),
                                          np.zeros((2, 2, 2), np.float16)]))
        overrides = {name: junk}
    before = snapshot(outs)
    try:
        call(**overrides)
    except (AclnnError, TypeError):
        assert_unchanged(before, outs)
        return
    raise AssertionError(f"{face} accepted {overrides!r}")


# ------------------------------------------------------------------ a TensorSpec where data is needed
_SPEC_CASES = {
    "npu_dynamic_quant": lambda s: npusim.npu_dynamic_quant(s((4, 64), "float16")),
    "npu_dynamic_quant_asymmetric": lambda s: npusim.npu_dynamic_quant_asymmetric(s((4, 64), "float16")),
    "aclnnDynamicQuantV2": lambda s: npusim.aclnn.aclnnDynamicQuantV2GetWorkspaceSize(
        s((4, 64), "float16"), None, None, 2, np.empty((4, 64), np.int8), np.empty(4, np.float32), None),
    "fake_quantize_per_channel_affine_cachemask": lambda s: npusim.fake_quantize_per_channel_affine_cachemask(
        s((4, 3), "float32"), np.ones(3, np.float32), np.zeros(3, np.int32), 1, 0, 255),
    "aclnnFakeQuantPerChannelAffineCachemask": lambda s: npusim.aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(
        s((4, 3), "float32"), np.ones(3, np.float32), np.zeros(3, np.int32), 1, 0, 255,
        np.empty((4, 3), np.float32), np.empty((4, 3), np.bool_)),
    "npu_quant_matmul": lambda s: npusim.npu_quant_matmul(s((4, 32), "int8"), np.ones((32, 8), np.int8),
                                                          np.ones(8, np.float32)),
    "npu_trans_quant_param": lambda s: npusim.npu_trans_quant_param(s((8,), "float32")),
    "moe_init_routing_quant": lambda s: npusim.moe_init_routing_quant(
        s((4, 16), "float16"), np.arange(8, dtype=np.int32).reshape(4, 2), np.zeros((4, 2), np.int32), 4, 1.0, 0.0),
    "indexer_compress_epilog": lambda s: npusim.indexer_compress_epilog(
        np.zeros((2, 4096), formats.float8_e4m3fn), np.zeros((2, 32), np.float32), s((2, 4096), "float16"),
        np.array([0, 1], np.int32)),
}


@pytest.mark.parametrize("face", sorted(_SPEC_CASES))
def test_data_faces_reject_a_tensorspec_clearly(face):
    with pytest.raises(AclnnError, match="TensorSpec only describes shape and dtype") as e:
        _SPEC_CASES[face](TensorSpec)
    assert e.value.status == 161002


def test_dynamic_quant_aclnn_outputs_aliasing_x_read_the_original_x():
    """y written over x's storage must not change the rows still to be read."""
    x = np.random.default_rng(3).standard_normal((64, 256)).astype(np.float16)
    y_ref, s_ref = npusim.npu_dynamic_quant(x)
    buf = np.zeros(x.nbytes, np.uint8)
    xs = buf.view(np.float16).reshape(64, 256)
    xs[...] = x
    y = buf[x.nbytes // 2:].view(np.int8).reshape(64, 256)        # y row 0 lies on x row 32, not yet read
    scale = np.empty(64, np.float32)
    ws, ex = npusim.aclnn.aclnnDynamicQuantV2GetWorkspaceSize(xs, None, None, 2, y, scale, None)
    npusim.aclnn.aclnnDynamicQuantV2(npusim.aclnn.workspace(ws), ws, ex)
    npusim.testing.assert_bitexact(y, y_ref)
    npusim.testing.assert_bitexact(scale, s_ref)
