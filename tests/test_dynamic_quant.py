"""npu_dynamic_quant / aclnnDynamicQuantV2 against slow NumPy references written from ARITHMETIC.md 1.1-1.5.

The references work row by row with numpy float32 scalars/arrays (IEEE binary32, RNE) and ml_dtypes
casts; they share no code with the kernel.
"""
import ml_dtypes
import numpy as np
import pytest

import npusim
from npusim import AclnnError, make_plan
from npusim.testing import assert_bitexact

F = np.float32
BF16 = ml_dtypes.bfloat16
DST = {"int8": (127.0, 255.0, -128, 127), "int4": (7.0, 15.0, -8, 7),
       "float8_e4m3fn": (448.0, 896.0, None, None), "float8_e5m2": (57344.0, 114688.0, None, None)}


# ------------------------------------------------------------------ references
def _experts(group, R):
    """Golden semantics: expert e covers rows [group[e-1], group[e])."""
    out = np.zeros(R, np.int64)
    start = 0
    for e, end in enumerate(group):
        out[start:end] = e
        start = end
    return out


def _to_int(yf, lo, hi, away=False):
    with np.errstate(invalid="ignore"):
        a = yf.astype(np.float64)
        r = np.sign(a) * np.floor(np.abs(a) + 0.5) if away else np.rint(a)
        r = np.where(np.isnan(r), 0, r)
        return np.clip(r, lo, hi).astype(np.int8)


def _to_fp8(yf, dt):
    """Cast CAST_RINT, SatMode::SAT: overflow and inf clip to the largest finite, NaN gives +0 (asc-devkit
    Reg-API Cast.md: a saturating cast to fp8 turns NaN into 0 unless CTRL[50] is set; the kernel does not)."""
    mx = float(ml_dtypes.finfo(dt).max)
    return np.nan_to_num(np.clip(yf, -mx, mx), nan=0.0).astype(dt)


def reference(x, smooth=None, group=None, dst="int8", symmetric=True, family="a2a3", scale_form="m*C"):
    """Returns (y values [int8 codes or fp8 array], scale, offset) per ARITHMETIC.md section 1."""
    H = x.shape[-1]
    rows = np.asarray(x).reshape(-1, H)
    R = rows.shape[0]
    dtmax, rng, lo, hi = DST[dst]
    fp8 = lo is None
    sm = None if smooth is None else np.asarray(smooth).astype(F).reshape(-1, H)
    ex = _experts(group, R) if group is not None else np.zeros(R, np.int64)
    ys, scales, offsets = [], [], []
    for r in range(R):
        v = rows[r].astype(F)
        if sm is not None:
            with np.errstate(over="ignore"):
                v = (v * sm[ex[r]]).astype(F)
        with np.errstate(all="ignore"):
            if symmetric:
                m = F(np.max(np.abs(v)))
                if family == "a2a3":
                    q = F(F(dtmax) / m)
                    yf = (v * q).astype(F)
                    s = F(m * F(F(1) / F(dtmax))) if scale_form == "m*C" else F(F(1) / q)
                elif family == "950":
                    s = F(m * F(F(1) / F(dtmax)))
                    yf = (v / s).astype(F)
                else:                                   # 310P: fp16 multiply, round half away
                    q = F(0) if m <= F(1e-12) else F(F(127) / m)
                    q16 = np.float16(q)                 # half(q), saturating: the only overflow mode there
                    q16 = np.float16(65504) if np.isinf(q16) else q16
                    yf = (rows[r].astype(np.float16) * q16).astype(F)
                    s = F(m * F(F(1) / F(127)))
                zero = m == 0
                off = None
            else:
                mx, mn = F(np.max(v)), F(np.min(v))
                if family == "a2a3":
                    s = F(F(mx - mn) / F(rng))
                    s = s if s > F(1e-12) else F(1e-12)           # GetMax: a NaN s gives 1e-12
                    off = F(F(dtmax) - F(mx / s))
                    yf = ((v * F(F(1) / s)).astype(F) + off).astype(F)
                else:
                    s = F(F(mx - mn) * F(F(1) / F(rng)))
                    off = F(-F(mx / s) + F(dtmax))
                    yf = ((v / s).astype(F) + off).astype(F)
                zero = family == "950" and mx == 0 and mn == 0        # A2/A3: no NaN, formula gives 127
        if fp8:
            y = _to_fp8(yf, np.dtype(getattr(ml_dtypes, dst)))
            if zero:
                y = np.zeros(H, y.dtype)
        else:
            y = _to_int(yf, lo, hi, away=family == "310p910")
            if zero:
                y[:] = 0
        ys.append(y)
        scales.append(s)
        offsets.append(off)
    y = np.stack(ys).reshape(x.shape)
    canon = lambda a: np.where(np.isnan(a), F(np.nan), a).astype(F)    # npusim writes NaN as +qNaN
    scale = canon(np.array(scales, F).reshape(x.shape[:-1]))
    offset = None if symmetric else canon(np.array(offsets, F).reshape(x.shape[:-1]))
    return y, scale, offset


def _adversarial(H, dt, rng):
    """Rows that hit ties, subnormal maxima, huge values, constants, zeros."""
    finfo = ml_dtypes.finfo(dt) if dt == BF16 else np.finfo(dt)
    rows = []
    tie = np.resize(np.array([127, 0.5, 1.5, 2.5, -0.5, -2.5, 3.5, -126.5, 64.5, -7.5]), H)
    rows.append(tie)                                           # max 127 -> q == 1: exact .5 ties
    rows.append(np.resize(np.array([127, -128, 0.5, -0.5, 1.5, 2.5, -3.5]), H))   # asym: scale 1, offset 0
    tiny = float(finfo.smallest_subnormal)
    rows.append(rng.integers(-3, 4, H) * tiny)                 # max in the subnormal range
    rows.append(rng.normal(size=H) * float(finfo.max) / 4)     # huge values
    rows.append(np.full(H, 3.25))                              # constant row
    rows.append(np.full(H, -1.0))
    rows.append(np.zeros(H))                                   # all-zero row
    rows.append(rng.normal(size=H) * 1e-3)
    with np.errstate(over="ignore"):
        return np.stack(rows).astype(dt)


def _data(R, H, dt, rng, adversarial=True):
    x = (rng.normal(0, 3, size=(R, H)) * rng.choice([1e-2, 1, 50], size=(R, 1))).astype(dt)
    if adversarial:
        x = np.concatenate([x, _adversarial(H, dt, rng)])
    return x


def _check(got, ref, dst):
    y, scale, offset = ref
    assert_bitexact(got[1], scale, err_msg="scale")
    if offset is not None:
        assert_bitexact(got[2], offset, err_msg="offset")
    if dst == "int4":
        assert_bitexact(got[0].astype(np.int8), y, err_msg="y")
    else:
        assert_bitexact(got[0], y, err_msg="y")


# ------------------------------------------------------------------ bit-exact against the references
A2_SHAPES = [(6, 256), (5, 100), (3, 16400), (2, 18000), (20, 4096), (4, 1)]   # keys 10, 2/3, 0/1, 6, 100, 2/3


@pytest.mark.parametrize("product", ["atlas-a2", "atlas-a3"])
@pytest.mark.parametrize("dt", [np.float16, BF16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", A2_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("use_smooth", [False, True], ids=["plain", "smooth"])
def test_a2_symmetric_int8(product, dt, shape, use_smooth):
    rng = np.random.default_rng(hash((shape, use_smooth)) % 2**32)
    R, H = shape
    x = _data(R, H, dt, rng, adversarial=H > 1 and R * H < 100000)
    sm = rng.uniform(0.25, 4, H).astype(dt) if use_smooth else None
    plan = make_plan("npu_dynamic_quant", x=x, smooth_scales=sm, product=product)
    form = "m*C" if plan.tiling_key in (2, 3, 10, 100) else "1/q"
    got = npusim.npu_dynamic_quant(x, sm, product=product)
    _check(got, reference(x, sm, scale_form=form), "int8")


@pytest.mark.parametrize("product", ["atlas-a2", "atlas-a3"])
def test_rows_past_key_10_by_the_reserved_ub_take_the_split_rows_scale(product):
    """H = 12800 with smooth scales fits key 10 (scale m * (1/127)) in the INI's UB but not in the 256 B smaller
    UB the tiling sees (test_a2_tiling_keys): the kernel splits the row (key 6, scale 1 / (127 / m)). The two
    forms differ on this data, so the output tells which kernel ran."""
    rng = np.random.default_rng(12800)
    x = _data(8, 12800, BF16, rng)
    sm = rng.uniform(0.25, 4, 12800).astype(BF16)
    split, multi = reference(x, sm, scale_form="1/q"), reference(x, sm, scale_form="m*C")
    assert not np.array_equal(split[1], multi[1])
    _check(npusim.npu_dynamic_quant(x, sm, product=product), split, "int8")


@pytest.mark.parametrize("dst", ["int4", "int32"])
@pytest.mark.parametrize("dt", [np.float16, BF16], ids=["fp16", "bf16"])
def test_a2_symmetric_int4_and_packed(dst, dt):
    rng = np.random.default_rng(4)
    x = _data(9, 64, dt, rng)
    sm = rng.uniform(0.5, 2, 64).astype(dt)
    y, scale = npusim.npu_dynamic_quant(x, sm, dst_type=dst if dst == "int32" else ml_dtypes.int4)
    ry, rs, _ = reference(x, sm, dst="int4")
    assert_bitexact(scale, rs)
    if dst == "int4":
        assert y.dtype == ml_dtypes.int4 and y.shape == x.shape
        assert_bitexact(y.astype(np.int8), ry)
    else:
        assert y.dtype == np.int32 and y.shape == (x.shape[0], 8)
        words = y.astype(np.int64) & 0xFFFFFFFF                 # element 8j+i at bits 4i..4i+3
        nib = np.stack([(words >> (4 * i)) & 0xF for i in range(8)], axis=-1).reshape(x.shape)
        assert_bitexact(np.where(nib >= 8, nib - 16, nib).astype(np.int8), ry)
    y2, _ = npusim.npu_dynamic_quant(x, sm, dst_type="quint4x2")
    if dst == "int32":
        assert_bitexact(y2, y)


@pytest.mark.parametrize("dst", ["int8", "int4"])
@pytest.mark.parametrize("dt", [np.float16, BF16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", [(6, 256), (3, 16400), (2, 18000), (5, 2)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("use_smooth", [False, True], ids=["plain", "smooth"])
def test_a2_asymmetric(dst, dt, shape, use_smooth):
    rng = np.random.default_rng(7)
    R, H = shape
    x = _data(R, H, dt, rng, adversarial=R * H < 100000)
    sm = rng.uniform(0.25, 4, H).astype(dt) if use_smooth else None
    got = npusim.npu_dynamic_quant_asymmetric(x, sm, dst_type=dst)
    _check(got, reference(x, sm, dst=dst, symmetric=False), dst)


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("dt", [np.float16, BF16], ids=["fp16", "bf16"])
def test_a2_moe_group_index(symmetric, dt):
    rng = np.random.default_rng(11)
    x = _data(30, 96, dt, rng).reshape(2, 19, 96)
    E = 5
    group = np.array([0, 7, 7, 30, 38], np.int32)              # cumulative ends, an empty expert, first empty
    sm = rng.uniform(0.25, 4, (E, 96)).astype(dt)
    assert make_plan("npu_dynamic_quant", x=x, smooth_scales=sm, group_index=group).tiling_key == 7
    fn = npusim.npu_dynamic_quant if symmetric else npusim.npu_dynamic_quant_asymmetric
    got = fn(x, sm, group)
    _check(got, reference(x, sm, group, symmetric=symmetric, scale_form="1/q"), "int8")


@pytest.mark.parametrize("product", ["ascend-950pr", "ascend-950dt"])
@pytest.mark.parametrize("dst", ["int8", "int4", "float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("dt", [np.float16, BF16], ids=["fp16", "bf16"])
def test_950(product, dst, symmetric, dt):
    rng = np.random.default_rng(13)
    x = _data(12, 128, dt, rng)
    sm = rng.uniform(0.25, 4, 128).astype(dt)
    dtype = getattr(ml_dtypes, dst) if dst.startswith("float8") else ml_dtypes.int4 if dst == "int4" else np.int8
    fn = npusim.npu_dynamic_quant if symmetric else npusim.npu_dynamic_quant_asymmetric
    got = fn(x, sm, dst_type=dtype, product=product)
    ref = reference(x, sm, dst=dst, symmetric=symmetric, family="950")
    if dst.startswith("float8"):
        assert_bitexact(got[0].view(np.uint8), ref[0].view(np.uint8), err_msg="y")
        assert_bitexact(got[1], ref[1])
        if not symmetric:
            assert_bitexact(got[2], ref[2])
    else:
        _check(got, ref, dst)


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("dt", [np.float16, BF16], ids=["fp16", "bf16"])
def test_950_hifloat8(symmetric, dt):
    """dstType 34: the 950 formula with DTMAX 32768 (range 65536), then the saturating CAST_ROUND hifloat8
    cast, from the table-based reference of test_hifloat8 (NaN quotient -> code 0)."""
    from test_hifloat8 import ref_encode
    rng = np.random.default_rng(23)
    x = _data(10, 128, dt, rng)
    x[1, 5] = np.nan                                             # a NaN row: scale NaN, every y 0
    sm = rng.uniform(0.25, 4, 128).astype(dt)
    fn = npusim.npu_dynamic_quant if symmetric else npusim.npu_dynamic_quant_asymmetric
    got = fn(x, sm, dst_type="hifloat8", product="ascend-950pr")
    with np.errstate(all="ignore"):
        v = x.astype(F) * sm.astype(F)
        if symmetric:
            s = (np.max(np.abs(v), axis=1) * F(1 / 32768)).astype(F)
            yf = (v / s[:, None]).astype(F)
        else:
            mx, mn = np.max(v, axis=1), np.min(v, axis=1)
            s = ((mx - mn) * F(1 / 65536)).astype(F)
            off = (-(mx / s) + F(32768)).astype(F)
            yf = ((v / s[:, None]).astype(F) + off[:, None]).astype(F)
            assert_bitexact(got[2], np.where(np.isnan(off), F(np.nan), off).astype(F))
    yf[np.max(np.abs(v), axis=1) == 0] = 0                       # all-zero rows: 0/0 emitted as 0
    assert got[0].dtype == np.uint8
    assert_bitexact(got[0], ref_encode(yf, saturate=True).reshape(x.shape), err_msg="y")
    assert_bitexact(got[1], np.where(np.isnan(s), F(np.nan), s).astype(F))
    assert (got[0][1] == 0).all()
    # the aclnn face, dstType 34, into a caller-owned uint8 yOut
    y, sc = np.full(x.shape, 7, np.uint8), np.empty(x.shape[0], F)
    ws, ex = npusim.aclnn.aclnnDynamicQuantV2GetWorkspaceSize(x, sm, None, 34, y, sc, None if symmetric else
                                                             np.empty(x.shape[0], F), product="ascend-950dt")
    npusim.aclnn.aclnnDynamicQuantV2(npusim.aclnn.workspace(ws), ws, ex)
    assert_bitexact(y, got[0])
    with pytest.raises(AclnnError, match="hifloat8"):                # hifloat8 is a 950 output only
        fn(x, sm, dst_type="hifloat8", product="atlas-a2")


def test_950_moe():
    rng = np.random.default_rng(17)
    x = _data(20, 64, BF16, rng)
    group = np.array([3, 10, 28], np.int32)
    sm = rng.uniform(0.5, 2, (3, 64)).astype(BF16)
    got = npusim.npu_dynamic_quant(x, sm, group, dst_type="float8_e4m3fn", product="ascend-950pr")
    ref = reference(x, sm, group, dst="float8_e4m3fn", family="950")
    assert_bitexact(got[0].view(np.uint8), ref[0].view(np.uint8))
    assert_bitexact(got[1], ref[1])


@pytest.mark.parametrize("dst", ["float8_e4m3fn", "float8_e5m2"])
def test_950_fp8_nan_quotients_give_zero(dst):
    """The 950 kernel's fp8 Cast is saturating (SatMode::SAT) and never sets CTRL[50], so a NaN quotient is
    written as +0 (asc-devkit Reg-API Cast.md), not as an fp8 NaN: NaN rows, inf / inf, and an asymmetric row
    of equal values (scale 0: v / 0 + (-inf) is NaN); an inf quotient saturates to the largest finite."""
    x = np.zeros((5, 32), np.float16)
    x[0, :] = 3.0                                    # constant row
    x[1, 0] = np.nan
    x[1, 1] = 2.0
    x[2, :2] = [1.0, np.inf]                         # symmetric: 1 / inf = 0, inf / inf = NaN
    x[3, :2] = [-np.inf, 1.0]
    dt = getattr(ml_dtypes, dst)
    y, s = npusim.npu_dynamic_quant(x, dst_type=dt, product="ascend-950pr")
    assert not y.view(np.uint8)[1:].any()           # NaN row, inf rows, all-zero row: every byte +0
    ya, sa, oa = npusim.npu_dynamic_quant_asymmetric(x, dst_type=dt, product="ascend-950pr")
    assert sa[0] == 0 and not ya.view(np.uint8)[0].any()
    assert not ya.view(np.uint8)[1].any() and np.isnan(sa[1])
    assert not ya.view(np.uint8)[4].any()           # all zero: 0 / 0


@pytest.mark.parametrize("product", ["atlas-inference", "atlas-training"])
def test_310p_910(product):
    rng = np.random.default_rng(19)
    x = _data(10, 96, np.float16, rng)
    x[0, :4] = [127, 0.5, -2.5, 1.5]                             # q == 1: ties go away from zero
    got = npusim.npu_dynamic_quant(x, product=product)
    _check(got, reference(x, family="310p910"), "int8")
    assert got[0][0, 1] == 1 and got[0][0, 2] == -3


@pytest.mark.parametrize("product", ["atlas-inference", "atlas-training"])
def test_310p_910_rows_of_small_values_saturate_the_fp16_factor(product):
    """Below max |x| = 127/65504 the factor 127/max is beyond fp16: these chips have only the saturation overflow
    mode (aclrtFloatOverflowMode doc: Atlas inference and training products), so it is 65504, not inf. By hand:
    fp16(1e-3) * 65504 = 65.53 -> fp16 65.5 -> 66 (half away); fp16(5e-4) * 65504 = 32.77 -> 32.75 -> 33."""
    x = np.zeros((2, 32), np.float16)
    x[0, :3] = [1e-3, -1e-3, 5e-4]
    x[1, :2] = [2e-3, 1e-3]                             # 127/2e-3 fits fp16: the usual path
    y, scale = npusim.npu_dynamic_quant(x, product=product)
    assert y[0, :4].tolist() == [66, -66, 33, 0] and not y[0, 4:].any()
    assert y[1, :2].tolist() == [127, 64]
    assert scale[0] == np.float32(np.float32(np.float16(1e-3)) * np.float32(np.float32(1) / np.float32(127)))


def test_special_values_documented():
    """NaN row: scale NaN, y 0; inf row: scale inf, y 0; all-zero row: y 0, scale 0."""
    x = np.zeros((3, 16), BF16)
    x[0, 3] = np.nan
    x[0, 4] = 5
    x[1, 2] = np.inf
    x[1, 5] = -2
    y, scale = npusim.npu_dynamic_quant(x)
    assert np.isnan(scale[0]) and np.isinf(scale[1]) and scale[2] == 0
    assert not y.any()
    y, scale, offset = npusim.npu_dynamic_quant_asymmetric(x)
    assert scale[0] == F(1e-12) and np.isnan(offset[0]) and not y[:2].any()     # A2 GetMax: NaN -> 1e-12
    assert scale[2] == F(1e-12) and offset[2] == 127 and (y[2] == 127).all()   # A2: formula, no NaN


@pytest.mark.parametrize("product", ["atlas-a2", "ascend-950pr"])
@pytest.mark.parametrize("shape", [(4, 64), (4, 16400)], ids=["key2", "key0"])
def test_asymmetric_nan_and_infinite_rows(product, shape):
    """A2/A3: scale = GetMax((mx - mn) / 255, 1e-12) with GetMax(a, b) = a > b ? a : b, so NaN -> 1e-12
    (dynamic_quant_base.h); 950 has no clamp: NaN stays NaN."""
    x = np.ones(shape, BF16)
    x[0, 5] = np.nan                                   # NaN row: mx, mn NaN
    x[1, :] = np.inf                                   # inf - inf = NaN
    x[2, :] = -np.inf
    x[3, 3] = np.inf                                   # (inf - 1) / 255 = inf
    y, scale, offset = npusim.npu_dynamic_quant_asymmetric(x, product=product)
    ref_y, ref_scale, ref_offset = reference(x, symmetric=False,
                                             family="950" if product.startswith("ascend") else "a2a3")
    assert_bitexact(scale, ref_scale)
    assert_bitexact(offset, ref_offset)
    assert_bitexact(y, ref_y)
    if product == "atlas-a2":
        assert (scale[:3] == F(1e-12)).all() and np.isinf(scale[3])
        assert np.isnan(offset[0]) and offset[1] == -np.inf and offset[2] == np.inf and np.isnan(offset[3])
    else:
        assert np.isnan(scale[:3]).all()
    assert not y.any()


def test_subnormal_max_bf16_saturates():
    """bf16 max below 127/FLT_MAX: q = inf, so nonzero y saturate (+127 / -128) and zeros stay 0."""
    tiny = float(ml_dtypes.finfo(BF16).smallest_subnormal)
    x = np.array([[tiny, -tiny, 0, 2 * tiny]], BF16)
    y, _ = npusim.npu_dynamic_quant(x)
    assert y.tolist() == [[127, -128, 0, 127]]


# ------------------------------------------------------------------ golden agreement (ARITHMETIC 1.7)
@pytest.mark.parametrize("dt", [np.float16, BF16], ids=["fp16", "bf16"])
def test_vendor_golden_agreement(dt):
    rng = np.random.default_rng(23)
    x = (rng.normal(rng.uniform(-100, 100, (512, 1)), rng.uniform(1, 25, (512, 1)), (512, 1024))).astype(dt)
    sm = rng.uniform(0.5, 2, 1024).astype(dt)
    y, scale = npusim.npu_dynamic_quant(x, sm)
    v = x.astype(F) * sm.astype(F)
    gscale = np.max(np.abs(v), axis=-1, keepdims=True) * (F(1) / F(127))
    gy = np.clip(np.round(v / gscale), -128, 127).astype(np.int8)
    diff = np.abs(y.astype(np.int16) - gy.astype(np.int16))
    frac = np.count_nonzero(diff) / diff.size
    print(f"golden vs kernel ({np.dtype(dt).name}): {100 * frac:.4f}% of y differ, max |dy| = {diff.max()}")
    assert diff.max() <= 1
    assert np.allclose(scale, gscale[:, 0], rtol=1e-6, atol=0)


# ------------------------------------------------------------------ tiling / plan
@pytest.mark.parametrize("shape,dt,smooth,group,key,block_dim", [
    ((8192, 7168), BF16, True, False, 10, 48),
    ((16, 4096), np.float16, False, False, 100, 4),
    ((400, 4096), np.float16, False, False, 10, 48),
    ((2, 16400), BF16, False, False, 0, 2),
    ((2, 16400), np.float16, False, False, 1, 2),
    ((3, 100), BF16, False, False, 2, 3),
    ((3, 100), np.float16, True, False, 3, 3),
    ((2, 18000), BF16, False, False, 6, 2),
    ((64, 256), BF16, True, True, 7, 48),
    ((64, 18000), BF16, True, True, 8, 48),
    # the UB the tiling sees is GetCoreMemSize's, 196608 - 256 = 196352 B: key 10's longest row with smooth is
    # (196352 - 1024 - 3392) // 15 // 64 * 64 = 12736 < 12800 (12800 with the INI's 196608), and a 17 x 12800 B
    # row does not fit the 195328 B left: the row is split, key 6
    ((64, 12800), BF16, True, False, 6, 48),
    ((64, 12736), BF16, True, False, 10, 48),
])
def test_a2_tiling_keys(shape, dt, smooth, group, key, block_dim):
    """Keys and block dims derived by hand from dynamic_quant_tiling.cpp for Ascend910B2 (48 AIV, 192 KiB UB of
    which the tiling sees 256 B fewer, PlatformAscendC::GetCoreMemSize)."""
    from npusim.plan import TensorSpec
    H = shape[-1]
    sm = TensorSpec((4, H) if group else (H,), dt) if smooth else None
    g = TensorSpec((4,), np.int32) if group else None
    p = make_plan("npu_dynamic_quant", x=TensorSpec(shape, dt), smooth_scales=sm, group_index=g, product="atlas-a2")
    assert (p.tiling_key, p.block_dim, p.core_type) == (key, block_dim, "aiv")
    assert p.tiles["coreNum"] == block_dim


def test_950_few_huge_rows_are_split_over_every_core():
    """PERTEN_LARGE_MULTICORE (R <= 64 / 2 rows, each over 4 UBs): block b takes slice b % (64 // R) of row
    b // (64 // R), so all 64 AIVs work (dynamic_quant_regbase_perten_large_multicore.h); by hand, one row of
    131072 is 64 slices of 2048, two rows 2 x 32 slices of 4096. The 1-row case, which once ran on one core,
    now takes less than a row of half its length that fits the common template (one core)."""
    from npusim.plan import TensorSpec
    for rows, per_token, slice_len in ((1, 64, 2048), (2, 32, 4096)):
        p = make_plan("npu_dynamic_quant", x=TensorSpec((rows, 131072), BF16), product="ascend-950pr")
        assert p.tiles["quantMode"] == "PERTEN_LARGE_MULTICORE"
        assert (p.block_dim, p.tiles["headCoreNum"], p.tiles["rowPerHeadCore"]) == (64, per_token, slice_len)
    import perfmodel
    split, whole = (perfmodel.predict("npu_dynamic_quant", "ascend-950pr", x=TensorSpec((1, h), BF16))
                    for h in (131072, 65536))
    assert whole.block_dim == 1 and split.latency_us < whole.latency_us


def test_plans_other_families():
    from npusim.plan import TensorSpec
    p = make_plan("npu_dynamic_quant_asymmetric", x=TensorSpec((100, 4096), BF16), product="atlas-a2")
    assert p.kernel == "dynamic_quant_v2" and p.tiling_key == 2          # no key 10/100 for 3 outputs
    p = make_plan("npu_dynamic_quant", x=TensorSpec((100, 4096), BF16), dst_type="float8_e4m3fn",
                  product="ascend-950pr")
    assert p.kernel == "dynamic_quant_v2" and p.block_dim == 64 and p.tiles["quantMode"] == "COMMON_FULL_LOAD"
    # dynamic_quant_tiling_310P.cpp by hand (310P3: 8 cores, 256 KiB UB): H = 4096 gives numCopyRow 8;
    # 16 rows = 2 full passes -> aligned 10100; 4 rows leave a tail pass -> 11000; H > 4096 -> 11001
    for shape, key in [((16, 4096), 10100), ((4, 4096), 11000), ((8, 8192), 11001)]:
        p = make_plan("npu_dynamic_quant", x=TensorSpec(shape, np.float16), product="atlas-inference")
        assert (p.tiling_key, p.block_dim, p.core_type, p.tiles["numCopyRow"]) == (key, 8, "aicore", 8)
    p = make_plan("npu_dynamic_quant", x=TensorSpec((1000, 128), np.float16), product="atlas-inference")
    assert (p.tiling_key, p.tiles["numCopyRow"], p.tiles["numLastTailRow"]) == (11000, 128, 104)


# ------------------------------------------------------------------ aclnn face
def test_aclnn_matches_torch_face_and_fills_in_place():
    rng = np.random.default_rng(29)
    x = rng.normal(size=(3, 5, 64)).astype(BF16)
    sm = rng.uniform(0.5, 2, 64).astype(BF16)
    for code, ydt, yshape, sym in [(2, np.int8, x.shape, True), (29, ml_dtypes.int4, x.shape, False),
                                   (3, np.int32, (3, 5, 8), True)]:
        y = np.empty(yshape, ydt)
        sc = np.empty((3, 5), F)
        off = None if sym else np.empty((3, 5), F)
        ws, ex = npusim.aclnn.aclnnDynamicQuantV2GetWorkspaceSize(x, sm, None, code, y, sc, off, product="atlas-a2")
        assert npusim.aclnn.aclnnDynamicQuantV2(npusim.aclnn.workspace(ws), ws, ex) == 0
        dst = {2: "int8", 29: "int4", 3: "int32"}[code]
        want = (npusim.npu_dynamic_quant(x, sm, dst_type=dst) if sym
                else npusim.npu_dynamic_quant_asymmetric(x, sm, dst_type=dst))
        assert_bitexact(y, want[0])
        assert_bitexact(sc, want[1])
        if not sym:
            assert_bitexact(off, want[2])
        assert ex.plan.tiling_key in (2, 10)


def _err(fn, *a, status=161002, match=None, **k):
    with pytest.raises(AclnnError, match=match) as ei:
        fn(*a, **k)
    assert ei.value.status == status
    return ei.value


def test_validation_errors():
    q, qa = npusim.npu_dynamic_quant, npusim.npu_dynamic_quant_asymmetric
    x = np.ones((4, 64), np.float16)
    _err(q, None, status=161001)
    _err(q, np.ones(64, np.float16), match="2 to 8 dimensions")
    _err(q, x.astype(F), match="dtype")
    _err(q, x.astype(BF16), product="atlas-inference", match="dtype")
    _err(q, np.ones((4, 48), np.float16), product="atlas-inference", match="multiple of 32")
    _err(qa, x, product="atlas-inference", match="symmetric only")
    _err(q, x, np.ones(64, np.float16), product="atlas-training", match="smooth_scales")
    _err(q, x, product="atlas-200i-500-a2", match="not supported")
    _err(q, np.ones((4, 63), np.float16), dst_type="int4", match="even")
    _err(q, np.ones((4, 60), np.float16), dst_type="int32", match="divisible by 8")
    _err(q, x, dst_type="float8_e4m3fn", product="atlas-a2", match="not supported")
    _err(q, x, dst_type=np.float32, match="dst_type")
    _err(q, x, np.ones(64, BF16), match="dtype must equal")
    _err(q, x, np.ones(32, np.float16), match="shape must be")
    _err(q, x, None, np.array([4], np.int32), match="requires smooth_scales")
    _err(q, x, np.ones((2, 64), np.float16), np.array([1, 4], np.int16), match="dtype")    # int32/int64 only
    _err(q, x, np.ones((2, 64), np.float16), np.array([3, 2], np.int32), match="non-decreasing")
    _err(q, x, np.ones((2, 64), np.float16), np.array([1, 3], np.int32), match="last entry")
    _err(q, x, np.ones((3, 64), np.float16), np.array([1, 4], np.int32), match="shape must be")
    _err(q, np.ones((2000, 64), np.float16), np.ones((1025, 64), np.float16),
         np.arange(1, 1026, dtype=np.int32), match="1024")


def test_aclnn_errors_leave_outputs_untouched():
    x = np.ones((4, 64), np.float16)
    sm = np.ones((2, 64), np.float16)
    y = np.full((4, 64), 7, np.int8)
    sc = np.full(4, 3, F)
    gws = npusim.aclnn.aclnnDynamicQuantV2GetWorkspaceSize
    _err(gws, x, sm, np.array([3, 2], np.int32), 2, y, sc, None)
    _err(gws, x, None, None, 2, y.astype(np.int16), sc, None, match="yOut")
    _err(gws, x, None, None, 2, y, np.empty(5, F), None, match="scaleOut")
    _err(gws, x, None, None, 34, y, sc, None, match="hifloat8")
    _err(gws, x, None, None, 7, y, sc, None, match="dstType")
    _err(gws, x, None, None, 2, None, sc, None, status=161001)
    # the aclnn doc's parameter names (seed 000), not the numpy face's
    _err(gws, x, np.ones(65, np.float16), None, 2, y, sc, None, match="'smoothScalesOptional'")
    _err(gws, x, sm, np.array([3, 2], np.int32), 2, y, sc, None, match="'groupIndexOptional'")
    # packed int4 on a product without it says what the user asked for, not only its int32 container
    with pytest.raises(AclnnError, match=r"output int32 \(8 packed int4: torch.quint4x2\) is not supported"):
        npusim.npu_dynamic_quant(x, dst_type="quint4x2", product="atlas-inference")
    # in the rule too: a group index without smooth scales names the aclnn parameter it needs
    _err(gws, x, None, np.array([4], np.int32), 2, y, sc, None,
         match="'groupIndexOptional': requires smoothScalesOptional")
    _err(gws, x, sm[:1], np.array([4], np.int32).reshape(1, 1), 2, y, sc, None,
         match="'groupIndexOptional': must be 1-D")
    assert (y == 7).all() and (sc == 3).all()
    ws, ex = gws(x, None, None, 2, y, sc, None)
    npusim.aclnn.aclnnDynamicQuantV2(npusim.aclnn.workspace(ws), ws, ex)
    _err(npusim.aclnn.aclnnDynamicQuantV2, None, ws, ex, match="already run")


@pytest.mark.parametrize("product", ["atlas-a2", "ascend-950pr"])
def test_group_index_may_be_int64(product):
    """The doc says int32; the aclnn layer (GROUP_INDEX_DTYPE_SUPPORT_LIST) and the tiling take int64 too."""
    x = np.random.default_rng(3).standard_normal((6, 64)).astype(np.float16)
    sm = np.random.default_rng(4).uniform(0.5, 2, (2, 64)).astype(np.float16)
    a = npusim.npu_dynamic_quant(x, sm, np.array([2, 6], np.int32), product=product)
    b = npusim.npu_dynamic_quant(x, sm, np.array([2, 6], np.int64), product=product)
    assert_bitexact(a[0], b[0])
    assert_bitexact(a[1], b[1])


@pytest.mark.parametrize("product", ["atlas-inference", "atlas-training"])
def test_310p_910_rows_must_be_multiples_of_32(product):
    """dynamic_quant_tiling_310P rejects H % 32 != 0 on both products (the ops-nn doc says so too; seed 000
    names Atlas inference)."""
    with pytest.raises(AclnnError, match=r"'x'.*multiple of 32.*got 48") as e:
        npusim.npu_dynamic_quant(np.ones((4, 48), np.float16), product=product)
    assert e.value.status == 161002
