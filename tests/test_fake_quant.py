"""aclnnFakeQuantPerChannelAffineCachemask: bit-exact against a slow NumPy reference written from
ARITHMETIC.md section 3.2 and against PyTorch's CPU kernel (the vendor's own ATK benchmark)."""
import itertools

import numpy as np
import pytest

import npusim
from npusim import aclnn
from npusim.errors import ACLNN_ERR_PARAM_INVALID, ACLNN_ERR_PARAM_NULLPTR, AclnnError
from npusim.plan import TensorSpec, make_plan
from npusim.testing import assert_bitexact

fq = npusim.fake_quantize_per_channel_affine_cachemask
F32, F16 = np.float32, np.float16
QRANGES = [(-128, 127), (0, 255), (60, 76), (-39, -14), (72, 74)]


# ---------------------------------------------------------------- reference (from the spec, slow)
def _to_f32_ties_away(q):
    """int -> float32, nearest with ties away from zero (Ascend CAST_ROUND), one value at a time."""
    out = np.empty(q.shape, F32)
    for i, v in np.ndenumerate(q):
        v = int(v)
        f = F32(v)                                   # nearest-even
        if int(f) != v:
            other = np.nextafter(f, F32(np.inf) if int(f) < v else F32(-np.inf))
            if abs(int(other) - v) == abs(int(f) - v) and abs(int(other)) > abs(int(f)):
                f = other
        out[i] = f
    return out


def _sat_int32(a):
    """float array -> int64 with rint, saturated to int32, NaN -> 0."""
    r = np.rint(a.astype(np.float64))
    r = np.where(np.isnan(r), 0.0, np.clip(r, -2.0**31, 2.0**31 - 1))
    return r.astype(np.int64)


def reference(x, scale, zp, axis, qmin, qmax, out_dtype=None, saturate=False):
    """The A2/A3 kernel, channel by channel, in numpy float32/float16 arithmetic. saturate: the product's
    only overflow mode is saturation (Atlas training): casts and products that overflow give the largest
    finite value instead of inf."""
    def to_half(v):
        return (np.clip(v, -65504, 65504) if saturate else v).astype(F16)
    x = np.asarray(x)
    scale = np.asarray(scale)
    half_kernel = x.dtype == F16 and scale.dtype == F16
    out_dtype = np.dtype(out_dtype or x.dtype)
    x0 = x.reshape(1) if x.ndim == 0 else x
    xm = np.moveaxis(x0, axis, 0).astype(F32)
    qmin32 = int(np.array(qmin, np.int64).astype(np.int32))
    qmax32 = int(np.array(qmax, np.int64).astype(np.int32))
    out = np.empty(xm.shape, F32)
    mask = np.empty(xm.shape, bool)
    with np.errstate(all="ignore"):
        for c in range(xm.shape[0]):
            s = F32(scale[c])
            inv = F32(1) / s
            zpf = F32(zp[c])
            xc = xm[c]
            t = xc * inv
            t2 = _sat_int32(t).astype(F32) + zpf
            if half_kernel:
                h = to_half(t2)
                mask[c] = (h >= to_half(F32(qmin32))) & (h <= to_half(F32(qmax32)))
            else:
                mask[c] = (t2 >= F32(qmin32)) & (t2 <= F32(qmax32))
            q = np.minimum(np.maximum(_sat_int32(t2), qmin32), qmax32)
            cf = np.where(np.isnan(xc), F32(0), _to_f32_ties_away(q))
            v = (cf - zpf) * s
            out[c] = to_half(v).astype(F32) if half_kernel else v
    with np.errstate(over="ignore"):
        if saturate:
            big = np.finfo(out_dtype).max
            out = np.clip(out, -big, big)
        out = np.moveaxis(out, 0, axis).astype(out_dtype).reshape(x.shape)
    return out, np.moveaxis(mask, 0, axis).reshape(x.shape)


def _case(rng, shape, axis, qr, xd=F32, sd=F32, lo=-100, hi=100):
    x = rng.uniform(lo, hi, shape).astype(xd)
    c = shape[axis] if shape else 1
    s = rng.uniform(0.01, 1.0, c).astype(sd)
    zp = rng.integers(qr[0], qr[1] + 1, c).astype(np.int32)
    return x, s, zp


def _shape_for_rank(rng, rank):
    return tuple(int(d) for d in rng.integers(1, 6 if rank <= 4 else 3, rank))


# ---------------------------------------------------------------- against the reference
@pytest.mark.parametrize("xd,sd", [(F32, F32), (F16, F16), (F16, F32), (F32, F16)])
def test_grid_vs_reference(xd, sd):
    rng = np.random.default_rng(1)
    for rank in range(1, 9):
        shape = _shape_for_rank(rng, rank)
        for axis in range(-rank, rank):
            qr = QRANGES[(rank + axis) % len(QRANGES)]
            x, s, zp = _case(rng, shape, axis, qr, xd, sd)
            out, mask = fq(x, s, zp, axis, *qr)
            ro, rm = reference(x, s, zp, axis, *qr)
            assert_bitexact(out, ro, err_msg=f"{shape} axis {axis} {qr}")
            assert_bitexact(mask, rm, err_msg=f"{shape} axis {axis} {qr}")


@pytest.mark.parametrize("product", ["atlas-a3", "atlas-training"])
@pytest.mark.parametrize("xd,sd", [(F32, F32), (F16, F16)])
def test_other_products_vs_reference(product, xd, sd):
    """Atlas A3 (the ops-nn doc; A2's kernel) and Atlas training (seed 002) follow the same reference."""
    rng = np.random.default_rng(5)
    x, s, zp = _case(rng, (6, 33, 5), 1, QRANGES[0], xd, sd)
    out, mask = fq(x, s, zp, 1, *QRANGES[0], product=product)
    ro, rm = reference(x, s, zp, 1, *QRANGES[0])
    assert_bitexact(out, ro)
    assert_bitexact(mask, rm)


@pytest.mark.parametrize("xd,sd", [(F32, F32), (F16, F16), (F16, F32)])
@pytest.mark.parametrize("shape,axis", [((4096, 19), 0), ((19, 4096), 0), ((3, 7, 1024), 1), ((64, 1030), -1)])
def test_large_parallel_paths_vs_reference(xd, sd, shape, axis):
    """Big enough for the threaded loops; channel-inner (axis -1) and channel-outer layouts."""
    rng = np.random.default_rng(2)
    x, s, zp = _case(rng, shape, axis, (-128, 127), xd, sd)
    out, mask = fq(x, s, zp, axis, -128, 127)
    ro, rm = reference(x, s, zp, axis, -128, 127)
    assert_bitexact(out, ro)
    assert_bitexact(mask, rm)


@pytest.mark.parametrize("xd,sd", [(F32, F32), (F16, F16)])
def test_exact_ties_round_half_even(xd, sd):
    """Power-of-two scales and x at (n + 0.5) steps: x * (1/s) is an exact tie."""
    s = np.array([0.25, 0.5, 1.0, 0.125], sd)
    n = np.arange(-20, 20, dtype=np.float64)
    x = ((n + 0.5)[:, None] * s.astype(np.float64)[None, :]).astype(xd)
    zp = np.array([0, 3, -5, 1], np.int32)
    out, mask = fq(x, s, zp, 1, -10, 10)
    ro, rm = reference(x, s, zp, 1, -10, 10)
    assert_bitexact(out, ro)
    assert_bitexact(mask, rm)
    # half-even stated independently: scale 1, zp -5, x = -0.5, 0.5, 1.5, 2.5 -> q - zp = 0, 0, 2, 2
    assert list(x[19:23, 2].astype(np.float64)) == [-0.5, 0.5, 1.5, 2.5]
    assert list(out[19:23, 2].astype(np.float64)) == [0.0, 0.0, 2.0, 2.0]


@pytest.mark.parametrize("xd,sd", [(F32, F32), (F16, F16), (F16, F32)])
def test_non_finite_follow_the_kernel(xd, sd):
    x = np.array([[np.nan, np.inf, -np.inf, 1.0]] * 3, xd).T.copy()   # [4, 3], axis 1
    s = np.array([0.5, 0.25, 1.0], sd)
    zp = np.array([3, -200, 0], np.int32)
    out, mask = fq(x, s, zp, 1, -128, 127)
    ro, rm = reference(x, s, zp, 1, -128, 127)
    assert_bitexact(out, ro)
    assert_bitexact(mask, rm)
    # documented values: NaN -> (0 - zp) * s, mask = qmin <= zp <= qmax; +inf -> qmax; -inf -> qmin
    zf, sf = zp.astype(F32), s.astype(F32)
    expect_nan = ((F32(0) - zf) * sf).astype(xd)
    assert_bitexact(out[0], expect_nan)
    assert list(mask[0]) == [True, False, True]
    assert_bitexact(out[1], ((F32(127) - zf) * sf).astype(xd))
    assert_bitexact(out[2], ((F32(-128) - zf) * sf).astype(xd))
    assert not mask[1].any() and not mask[2].any()


def test_wide_quant_ranges_take_the_exact_path():
    """Ranges beyond 2^24 (fp32) and 2048 (fp16 kernel: half compare), up to int32's ends."""
    rng = np.random.default_rng(3)
    for xd, sd, qr, scale_hi in [(F32, F32, (-2**30, 2**30), 1e-6), (F32, F32, (-2**24 - 5, 2**24 + 5), 1e-5),
                                 (F16, F16, (-70000, 70000), 0.001), (F16, F16, (-3000, 2500), 0.01),
                                 (F32, F32, (-2**31, 2**31 - 1), 1e-7)]:
        x = rng.uniform(-100, 100, (33, 7)).astype(xd)
        s = rng.uniform(scale_hi / 10, scale_hi, 7).astype(sd)
        zp = rng.integers(-1000, 1000, 7).astype(np.int32)
        out, mask = fq(x, s, zp, 1, *qr)
        ro, rm = reference(x, s, zp, 1, *qr)
        assert_bitexact(out, ro, err_msg=str(qr))
        assert_bitexact(mask, rm, err_msg=str(qr))


def test_quant_range_beyond_int32_is_refused_on_every_face():
    """The aclnn attributes are int64 but the kernel reads them as int32_t: [-128, 2**31] would run as
    [-128, -2**31] on the NPU, every output garbage. A 161002 naming the attribute instead; out untouched."""
    x = np.ones((4, 3), F32)
    s, zp = np.full(3, 0.1, F32), np.zeros(3, np.int32)
    for qr, name in (((-128, 2**31), "quant_max"), ((-2**31 - 1, 10), "quant_min"), ((0, 2**32), "quant_max")):
        with pytest.raises(npusim.AclnnError, match="must fit in int32") as e:
            fq(x, s, zp, 1, *qr)
        assert e.value.param == name and e.value.status == 161002
        out, mask = np.full((4, 3), 7, F32), np.zeros((4, 3), bool)
        aclnn_name = {"quant_min": "quantMin", "quant_max": "quantMax"}[name]
        with pytest.raises(npusim.AclnnError, match="must fit in int32") as e:
            npusim.aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(x, s, zp, 1, *qr, out, mask)
        assert e.value.param == aclnn_name
        assert (out == 7).all() and not mask.any()


def test_every_fp16_input_pattern():
    """All 65536 fp16 bit patterns as x (fp16 and fp32 kernels), channel axis innermost and outermost."""
    x = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(F16).reshape(256, 256)
    for sd, axis in [(F16, 0), (F16, 1), (F32, 1)]:
        s = np.random.default_rng(8).uniform(0.001, 1.0, 256).astype(sd)
        zp = np.random.default_rng(9).integers(-128, 128, 256).astype(np.int32)
        out, mask = fq(x, s, zp, axis, -128, 127)
        ro, rm = reference(x, s, zp, axis, -128, 127)
        assert_bitexact(out, ro)
        assert_bitexact(mask, rm)


def test_fp16_output_rounding_over_all_magnitudes():
    """fp32 kernel into an fp16 out: products from 2^-30 to 2^20 (subnormal halves, ties, overflow to inf)."""
    rng = np.random.default_rng(10)
    shape = (64, 200)
    x = rng.uniform(-300, 300, shape).astype(F32)
    s = np.ldexp(rng.uniform(1, 2, 200), rng.integers(-30, 20, 200)).astype(F32)
    s[:40] = np.ldexp(1.0, rng.integers(-28, -12, 40)) * (1 + np.ldexp(1.0, -11))   # near fp16 subnormal ties
    zp = rng.integers(-128, 128, 200).astype(np.int32)
    x = (np.rint(x) * s.astype(np.float64)[None, :]).astype(F32)    # x * (1/s) close to integers
    out = np.empty(shape, F16)
    mask = np.empty(shape, bool)
    ws, ex = aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(x, s, zp, 1, -255, 255, out, mask)
    aclnn.aclnnFakeQuantPerChannelAffineCachemask(npusim.aclnn.workspace(ws), ws, ex)
    ro, rm = reference(x, s, zp, 1, -255, 255, F16)
    assert np.isinf(ro).any() and (np.abs(ro.astype(np.float64)) < 2.0**-14).any()
    assert_bitexact(out, ro)
    assert_bitexact(mask, rm)


def test_atlas_training_saturates_an_overflowing_out():
    """Atlas training products have only the saturation overflow mode (CANN aclrtFloatOverflowMode doc): by hand,
    x = 65504 with scale 1000: rint(65.504) = 66, 66 * 1000 = 66000 overflows fp16: inf on A2 (IEEE), 65504
    there; a fp32 out of huge scales likewise gives the largest float32 there."""
    x = np.array([[65504.0], [-65504.0], [60000.0]], F16)
    s, zp = np.full(3, 1000, F16), np.zeros(3, np.int32)
    a2 = npusim.fake_quantize_per_channel_affine_cachemask(x, s, zp, 0, -128, 127, product="atlas-a2")[0]
    sat = npusim.fake_quantize_per_channel_affine_cachemask(x, s, zp, 0, -128, 127, product="atlas-training")[0]
    assert a2.ravel().tolist() == [np.inf, -np.inf, 60000.0]
    assert sat.ravel().tolist() == [65504.0, -65504.0, 60000.0]
    # fp32: x = 0, zp = -100 clamped up to quant_min 0, so out = (0 - (-100)) * 1e37 = 1e39, beyond float32
    args = (np.zeros((1, 1), F32), np.full(1, 1e37, F32), np.full(1, -100, np.int32), 0, 0, 255)
    assert npusim.fake_quantize_per_channel_affine_cachemask(*args, product="atlas-a2")[0][0, 0] == np.inf
    assert npusim.fake_quantize_per_channel_affine_cachemask(*args, product="atlas-training")[0][0, 0] == \
        np.finfo(F32).max


def test_atlas_training_saturates_the_half_kernels_mask_cast():
    """The fp16 kernel's mask casts t2 to half with the same instruction as its out: by hand, x = 65504, scale 1,
    zero_point 16 give t2 = 65520, half(t2) = inf on A2 (outside [0, 65500], mask False) and 65504 on Atlas
    training (saturation mode), which equals half(65500) = 65504: mask True. The out (65504 - 16 = 65488 rounds
    to half 65472 with RINT, the tie going to the even 65472) does not overflow on either product."""
    args = (np.array([65504.0], F16), np.array([1.0], F16), np.array([16], np.int32), 0, 0, 65500)
    out_a2, m_a2 = npusim.fake_quantize_per_channel_affine_cachemask(*args, product="atlas-a2")
    out_t, m_t = npusim.fake_quantize_per_channel_affine_cachemask(*args, product="atlas-training")
    assert (not m_a2[0]) and m_t[0]
    assert out_a2[0] == out_t[0] == 65472.0


@pytest.mark.parametrize("qr", [(0, 65500), (-65519, 65519), (-70000, 70000), (-65500, 0), (-2**31, 2**31 - 1)])
def test_atlas_training_wide_ranges_vs_saturating_reference(qr):
    """fp16 x and scale (the fp16 kernel) near and past the fp16 limit, quant ranges around +-65504: Atlas
    training follows the reference with saturation, A2 the one without."""
    rng = np.random.default_rng(11)
    big = np.array([65504, -65504, 65472, -65472, 65000, np.inf, -np.inf, 60000, 0.5, -3], F16)
    x = rng.choice(big, size=(4, 64)).astype(F16)
    s = np.array([1.0, 0.5, 2.0, 1.0], F16)
    zp = np.array([16, -16, 0, 40], np.int32)
    for product, sat in (("atlas-training", True), ("atlas-a2", False)):
        out, mask = fq(x, s, zp, 0, *qr, product=product)
        ro, rm = reference(x, s, zp, 0, *qr, saturate=sat)
        assert_bitexact(out, ro)
        assert_bitexact(mask, rm)


def test_half_kernel_mask_compares_in_half():
    """fp16 kernel: t2 = 2049 rounds to half 2048, so quant_max 2048 accepts it (fp32 kernel does not)."""
    x = np.array([1024.0], F16)          # x * (1/0.5) + zp = 2049, which rounds to half 2048
    zp = np.array([1], np.int32)
    _, m16 = fq(x, np.array([0.5], F16), zp, 0, 0, 2048)
    _, m32 = fq(x, np.array([0.5], F32), zp, 0, 0, 2048)
    assert m16[0] and not m32[0]


def test_non_contiguous_zero_dim_empty_and_output_dtypes():
    rng = np.random.default_rng(4)
    base = rng.uniform(-100, 100, (6, 10, 8)).astype(F32)
    x = base[:, ::2, ::-1].transpose(2, 0, 1)           # strided, reversed, transposed
    s = rng.uniform(0.1, 1, 12).astype(F32)[::2]
    zp = np.arange(6, dtype=np.int32)[::-1]
    out, mask = fq(x, s, zp, 1, 0, 255)
    ro, rm = reference(np.ascontiguousarray(x), s, zp, 1, 0, 255)
    assert_bitexact(out, ro)
    assert_bitexact(mask, rm)
    # 0-dim: one channel
    out, mask = fq(np.array(3.3, F32), np.array([0.5], F32), np.array([1], np.int32), -1, -128, 127)
    assert out.shape == () and mask.shape == () and out.dtype == F32 and mask.dtype == bool
    assert float(out) == 3.5 and bool(mask)
    # empty
    for shape, axis in [((0, 4), 1), ((3, 0), 1), ((0,), 0)]:
        c = shape[axis]
        out, mask = fq(np.zeros(shape, F16), np.ones(c, F16), np.zeros(c, np.int32), axis, 0, 1)
        assert out.shape == shape and out.dtype == F16 and mask.dtype == bool
    # big-endian inputs are values like any other
    xb = rng.uniform(-100, 100, (5, 3)).astype(">f4")
    out, _ = fq(xb, np.array([0.5, 0.25, 1.0], ">f4"), np.array([1, 2, 3], ">i4"), 1, -128, 127)
    ro, _ = reference(xb.astype(F32), np.array([0.5, 0.25, 1.0], F32), [1, 2, 3], 1, -128, 127)
    assert_bitexact(out, ro)


# ---------------------------------------------------------------- aclnn face
def test_aclnn_two_phase_with_strided_outputs_and_dtype_cast():
    rng = np.random.default_rng(5)
    x, s, zp = _case(rng, (7, 9, 5), -2, (-128, 127), F16, F32)   # fp32 kernel, out fp16 and fp32
    for out_dtype in (F16, F32):
        big = np.full((7, 18, 5), 7, out_dtype)
        out = big[:, ::2, :]                                        # non-contiguous out
        mask = np.zeros((5, 9, 7), bool).T.transpose(0, 1, 2)      # non-contiguous mask, shape (7, 9, 5)
        ws, ex = aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(
            x, s, zp, -2, -128, 127, out, mask, product="atlas-training")
        assert np.all(big == 7)                                     # phase one writes nothing
        assert aclnn.aclnnFakeQuantPerChannelAffineCachemask(npusim.aclnn.workspace(ws), ws, ex) == 0
        ro, rm = reference(x, s, zp, 1, -128, 127, out_dtype)
        assert_bitexact(out, ro)
        assert_bitexact(mask, rm)
        assert np.all(big[:, 1::2, :] == 7)                         # untouched gaps
        with pytest.raises(AclnnError):
            aclnn.aclnnFakeQuantPerChannelAffineCachemask(npusim.aclnn.workspace(ws), ws, ex)   # single use


def test_aclnn_empty_has_no_workspace():
    x = np.zeros((0, 3), F32)
    ws, ex = aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(
        x, np.ones(3, F32), np.zeros(3, np.int32), 1, 0, 1, np.zeros((0, 3), F32), np.zeros((0, 3), bool))
    assert ws == 0 and aclnn.aclnnFakeQuantPerChannelAffineCachemask(npusim.aclnn.workspace(ws), ws, ex) == 0


def _errors_cases():
    x = np.zeros((4, 3), F32)
    s = np.ones(3, F32)
    z = np.zeros(3, np.int32)
    o = np.zeros((4, 3), F32)
    m = np.zeros((4, 3), bool)
    base = dict(self=x, scale=s, zeroPoint=z, axis=1, quantMin=0, quantMax=255, out=o, mask=m)
    yield "self", None, ACLNN_ERR_PARAM_NULLPTR, {}
    yield "zeroPoint", None, ACLNN_ERR_PARAM_NULLPTR, {}
    yield "out", None, ACLNN_ERR_PARAM_NULLPTR, {}
    yield "mask", None, ACLNN_ERR_PARAM_NULLPTR, {}
    yield "self", x.astype(np.float64), ACLNN_ERR_PARAM_INVALID, {}
    yield "self", x.astype(npusim.formats.bfloat16), ACLNN_ERR_PARAM_INVALID, {}
    yield "scale", s.astype(np.int32), ACLNN_ERR_PARAM_INVALID, {}
    yield "zeroPoint", z.astype(F32), ACLNN_ERR_PARAM_INVALID, {}
    yield "zeroPoint", z.astype(F16), ACLNN_ERR_PARAM_INVALID, {}
    yield "zeroPoint", z.astype(np.int64), ACLNN_ERR_PARAM_INVALID, {}
    yield "zeroPoint", np.zeros(2, np.int32), ACLNN_ERR_PARAM_INVALID, {}
    yield "scale", np.ones((3, 1), F32), ACLNN_ERR_PARAM_INVALID, {}
    yield "scale", np.ones(4, F32), ACLNN_ERR_PARAM_INVALID, {"zeroPoint": np.zeros(4, np.int32)}
    yield "axis", 2, ACLNN_ERR_PARAM_INVALID, {}
    yield "axis", -3, ACLNN_ERR_PARAM_INVALID, {}
    yield "quantMin", 256, ACLNN_ERR_PARAM_INVALID, {}
    yield "out", np.zeros((4, 3), np.int32), ACLNN_ERR_PARAM_INVALID, {}
    yield "out", np.zeros((3, 4), F32), ACLNN_ERR_PARAM_INVALID, {}
    yield "mask", np.zeros((4, 3), np.uint8), ACLNN_ERR_PARAM_INVALID, {}
    yield "mask", np.zeros((4,), bool), ACLNN_ERR_PARAM_INVALID, {}
    yield "self", np.zeros((1,) * 9, F32), ACLNN_ERR_PARAM_INVALID, {"scale": np.ones(1, F32),
                                                                      "zeroPoint": np.zeros(1, np.int32)}
    yield "product", "atlas-inference", ACLNN_ERR_PARAM_INVALID, {}
    yield "product", "ascend-950pr", ACLNN_ERR_PARAM_INVALID, {}


@pytest.mark.parametrize("param,value,status,extra", list(_errors_cases()))
def test_aclnn_errors_name_the_parameter_and_leave_outputs(param, value, status, extra):
    x = np.ones((4, 3), F32)
    kw = dict(self=x, scale=np.ones(3, F32), zeroPoint=np.zeros(3, np.int32), axis=1, quantMin=0, quantMax=255,
              out=np.full((4, 3), 9, F32), mask=np.zeros((4, 3), bool), product="atlas-a2")
    kw.update(extra)
    kw[param] = value
    outs = [a.copy() for a in (kw["out"], kw["mask"]) if isinstance(a, np.ndarray)]
    with pytest.raises(AclnnError) as ei:
        aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(**kw)
    assert ei.value.status == status
    assert param in str(ei.value) and "aclnnFakeQuantPerChannelAffineCachemask" in str(ei.value)
    for before, after in zip(outs, [a for a in (kw["out"], kw["mask"]) if isinstance(a, np.ndarray)]):
        assert_bitexact(after, before)


def test_torch_face_errors():
    x = np.ones((4, 3), F32)
    with pytest.raises(AclnnError, match="zero_point"):
        fq(x, np.ones(3, F32), np.zeros(3, F32), 1, 0, 255)
    with pytest.raises(AclnnError, match="quant_min"):
        fq(x, np.ones(3, F32), np.zeros(3, np.int32), 1, 5, 4)
    with pytest.raises(AclnnError, match="axis"):
        fq(np.array(1.0, F32), np.ones(1, F32), np.zeros(1, np.int32), 1, 0, 4)
    with pytest.raises(AclnnError, match="axis"):
        fq(x, np.ones(3, F32), np.zeros(3, np.int32), 1.0, 0, 4)


# ---------------------------------------------------------------- plan
def test_plan_follows_the_vendor_tiling():
    p = make_plan("fake_quantize_per_channel_affine_cachemask", x=TensorSpec((4096, 4096), "float32"),
                  scale=TensorSpec((4096,), "float32"), zero_point=TensorSpec((4096,), "int32"),
                  axis=0, quant_min=-128, quant_max=127, product="atlas-a2")
    soc = npusim.get_product("atlas-a2")
    assert p.tiling_key == 1 and p.block_dim == soc.aiv and p.core_type == "aiv"
    t = p.tiles
    assert t["headNum"] == 4096 and t["calcLength"] == 4096
    assert t["loopNum"] * soc.aiv + t["remainNum"] == 4096
    assert t["tileLength"] == (soc.ub_bytes - 8000) // 68 // 64 * 64
    # the kernel's split of a 4096-element channel into 2752-element tiles: one whole tile, then one more
    # that copies the other 1344 elements
    assert t["transposes"] == 0 and (t["tileNum"], t["lastTileLength"], t["lastActulTileLength"]) == (1, 1344, 1344)
    p16 = make_plan("fake_quantize_per_channel_affine_cachemask", x=TensorSpec((2, 5, 3), "float16"),
                    scale=TensorSpec((5,), "float16"), zero_point=TensorSpec((5,), "int32"),
                    axis=1, quant_min=0, quant_max=255, product="atlas-training")
    assert p16.tiling_key == 2 and p16.block_dim == 5 and p16.core_type == "aicore"
    assert p16.tiles["calcLength"] == 6 and p16.tiles["transposes"] == 3
    mixed = make_plan("fake_quantize_per_channel_affine_cachemask", x=TensorSpec((2, 5), "float16"),
                      scale=TensorSpec((5,), "float32"), zero_point=TensorSpec((5,), "int32"),
                      axis=1, quant_min=0, quant_max=255)
    assert mixed.tiling_key == 1 and mixed.tiles["cast_self"] and mixed.tiles["cast_out"]


# ---------------------------------------------------------------- PyTorch CPU oracle
def _torch_op(torch, x, s, zp, axis, qmin, qmax):
    # the vendor's ATK executor feeds torch an fp32 scale
    o, m = torch.ops.aten.fake_quantize_per_channel_affine_cachemask(
        torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(s.astype(F32)),
        torch.from_numpy(zp), axis, qmin, qmax)
    return o.numpy(), m.numpy()


@pytest.mark.parametrize("xd,sd", [(F32, F32), (F16, F16), (F16, F32), (F32, F16)])
def test_grid_vs_pytorch(xd, sd):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    for rank in range(1, 9):
        for _ in range(2):
            shape = _shape_for_rank(rng, rank)
            for axis in range(rank):
                qr = QRANGES[int(rng.integers(len(QRANGES)))]
                x, s, zp = _case(rng, shape, axis, qr, xd, sd)
                ax = axis - rank if rng.integers(2) else axis
                out, mask = fq(x, s, zp, ax, *qr)
                to, tm = _torch_op(torch, x, s, zp, axis, *qr)
                assert_bitexact(out, to, err_msg=f"{shape} axis {ax} {qr}")
                assert_bitexact(mask, tm, err_msg=f"{shape} axis {ax} {qr}")


def test_past_2_to_24_the_kernel_rounds_in_float32_where_pytorch_uses_double():
    # the README's example: a quotient of about -3.4e8 over int32's range; the kernel (and the spec reference)
    # computes (c - zp) * s in float32, PyTorch in double: one ulp apart
    x = np.array([0xCBDB3D7B], np.uint32).view(F32)
    s, zp = np.array([0x3DAB1D1D], np.uint32).view(F32), np.array([-45], np.int32)
    out, mask = fq(x, s, zp, 0, -2**31, 2**31 - 1)
    ro, rm = reference(x, s, zp, 0, -2**31, 2**31 - 1)
    assert_bitexact(out, ro)
    assert_bitexact(mask, rm)
    assert out.view(np.uint32)[0] == 0xCBDB3D7B and mask[0]
    torch = pytest.importorskip("torch")
    to, tm = _torch_op(torch, x, s, zp, 0, -2**31, 2**31 - 1)
    assert to.view(np.uint32)[0] == 0xCBDB3D7A and tm[0]


def test_vs_pytorch_larger_and_clipping():
    """Scales small enough that ~half the values clip; ties included; multi-threaded size."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for (shape, axis), (xd, sd) in itertools.product([((256, 512), 0), ((256, 512), 1), ((8, 64, 130), 1)],
                                                     [(F32, F32), (F16, F16)]):
        x, s, zp = _case(rng, shape, axis, (-128, 127), xd, sd)
        s = (s * 0.5).astype(sd)
        x.flat[::7] = (np.round(x.flat[::7]) + 0.5).astype(xd)
        s[::3] = 0.5
        out, mask = fq(x, s, zp, axis, -128, 127)
        to, tm = _torch_op(torch, x, s, zp, axis, -128, 127)
        assert 0.2 < (~tm).mean() < 0.9
        assert_bitexact(out, to)
        assert_bitexact(mask, tm)


def test_aclnn_out_may_alias_self():
    rng = np.random.default_rng(11)
    x, s, zp = _case(rng, (40, 33), 1, (0, 255))
    ro, rm = reference(x, s, zp, 1, 0, 255)
    mask = np.zeros(x.shape, bool)
    ws, ex = aclnn.aclnnFakeQuantPerChannelAffineCachemaskGetWorkspaceSize(x, s, zp, 1, 0, 255, x, mask)
    aclnn.aclnnFakeQuantPerChannelAffineCachemask(npusim.aclnn.workspace(ws), ws, ex)
    assert_bitexact(x, ro)
    assert_bitexact(mask, rm)
