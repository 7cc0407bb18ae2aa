"""Exhaustive tests of npusim.formats.cast and the int4 packing.

The reference below is deliberately slow and plain: every source value is decoded to float64
(exact for every format here) by decoders written in this file, its two neighbouring representable
values in the target format are looked up on an enumerated grid of the target's codes, and the
round mode picks one of them. Nothing is imported from the kernel. Rules: ARITHMETIC.md "General
hardware facts" (round modes, saturation by default) and the conventions documented in
kernels_pyx/ascend_cast.pxd (NaN codes, non-saturating overflow, e8m0 encoding as ml_dtypes).

Both kernel paths are checked: the fast branch-free one (what cast() runs for float storage
sources) and the generic double-precision one (cast_buffer(generic=True)).
"""
import ml_dtypes
import numpy as np
import pytest

from npusim import formats
from npusim._kernels import casts as _casts
from npusim.testing import assert_bitexact

MODES = ["rint", "round", "trunc", "floor", "ceil", "odd"]
RNG = np.random.default_rng(20240611)


# ============================================================ sources (decoded independently)
def _decode_e4m3(c):
    c = c.astype(np.int64)
    e, m = (c >> 3) & 0xF, c & 0x7
    v = np.where(e == 0, m * 2.0 ** -9, (8 + m) * np.exp2(e - 10.0))
    v = np.where((e == 15) & (m == 7), np.nan, v)
    return np.where(c & 0x80, -v, v)


@np.errstate(invalid="ignore")
def _decode(x):
    """float64 value of every element (exact), from the bit pattern."""
    dt = x.dtype
    b = formats.bits(x)
    if dt == np.float16:
        return b.view(np.float16).astype(np.float64)
    if dt == np.float32:
        return b.view(np.float32).astype(np.float64)
    if dt == np.float64:
        return b.view(np.float64).copy()
    if dt == formats.bfloat16:
        return (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dt == formats.float8_e4m3fn:
        return _decode_e4m3(b)
    if dt == formats.float8_e5m2:
        return (b.astype(np.uint16) << 8).view(np.float16).astype(np.float64)
    if dt == formats.float8_e8m0:
        return np.where(b == 0xFF, np.nan, np.exp2(b.astype(np.float64) - 127))
    raise AssertionError(dt)


def all_patterns(dtype):
    dt = formats.as_dtype(dtype)
    n = 1 << (8 * dt.itemsize)
    return np.arange(n, dtype={1: np.uint8, 2: np.uint16}[dt.itemsize]).view(dt)


# ============================================================ float targets
class Fmt:
    """A float target: its non-negative finite codes in value order, overflow codes and sign bit."""

    def __init__(self, name, dtype, max_code, inf_code, nan_code, sign, virtual_next):
        self.name, self.dtype = name, formats.as_dtype(dtype)
        self.max_code, self.inf_code, self.nan_code, self.sign = max_code, inf_code, nan_code, sign
        codes = np.arange(max_code + 1, dtype=np.uint16 if self.dtype.itemsize == 2 else np.uint8)
        self.values = _decode(codes.view(self.dtype))
        assert np.all(np.diff(self.values) > 0)
        # The value one code above max as if the exponent range went on: where overflow starts.
        self.virtual_next = virtual_next


FLOATS = {
    "float16": Fmt("float16", np.float16, 0x7BFF, 0x7C00, 0x7E00, 0x8000, 65536.0),
    "bfloat16": Fmt("bfloat16", formats.bfloat16, 0x7F7F, 0x7F80, 0x7FC0, 0x8000, 2.0 ** 128),
    # e4m3fn has no inf: 0x7F is NaN, and non-saturating overflow gives NaN (ml_dtypes semantics)
    "float8_e4m3fn": Fmt("float8_e4m3fn", formats.float8_e4m3fn, 0x7E, 0x7F, 0x7F, 0x80, 480.0),
    "float8_e5m2": Fmt("float8_e5m2", formats.float8_e5m2, 0x7B, 0x7C, 0x7E, 0x80, 65536.0),
}


def _pick(a, lo, hi, lo_code, neg, mode):
    """Whether magnitude a (lo <= a <= hi) rounds up to hi (code lo_code + 1) under `mode`."""
    exact = a == lo
    with np.errstate(over="ignore"):
        twice, mid = 2 * a, lo + hi      # exact in float64 (overflow only for a beyond every format)
    if mode == "rint":
        up = (twice > mid) | ((twice == mid) & (lo_code % 2 == 1))
    elif mode == "round":
        up = twice >= mid
    elif mode == "trunc":
        up = np.zeros_like(exact)
    elif mode == "floor":
        up = neg.copy()
    elif mode == "ceil":
        up = ~neg
    else:                                # odd: the neighbour whose last code bit is 1
        up = lo_code % 2 == 0
    return up & ~exact


def ref_float(v, fmt: Fmt, mode, sat):
    """Expected codes (unsigned ints) of float64 values v cast to `fmt`."""
    neg = np.signbit(v)
    a = np.abs(v)
    finite = np.isfinite(a)
    af = np.where(finite, a, 0.0)
    lo_code = np.searchsorted(fmt.values, af, side="right").astype(np.int64) - 1
    lo = fmt.values[lo_code]
    hi = np.where(lo_code < fmt.max_code, fmt.values[np.minimum(lo_code + 1, fmt.max_code)], fmt.virtual_next)
    up = _pick(af, lo, hi, lo_code, neg, mode)
    code = lo_code + up
    overflow = code > fmt.max_code
    # Overflow: +-max when saturating or when the mode rounds toward zero (trunc, odd, and the
    # directed mode of the other sign never gets here); otherwise inf (NaN for e4m3fn).
    keep_max = sat or mode in ("trunc", "odd")
    code = np.where(overflow, fmt.max_code if keep_max else fmt.inf_code, code)
    code = np.where(np.isinf(v), fmt.max_code if sat else fmt.inf_code, code)
    # NaN stays NaN with its sign, but a saturating cast to float8 gives +0 (asc-devkit Reg-API Cast.md:
    # "饱和模式：当输出类型为fp8_e5m2_t/fp8_e4m3fn_t时，输入nan，默认输出为0")
    nan_zero = sat and fmt.name.startswith("float8")
    code = (code | np.where(neg, fmt.sign, 0))
    nan = (fmt.nan_code | np.where(neg, fmt.sign, 0)) if not nan_zero else 0
    return np.where(np.isnan(v), nan, code).astype(np.uint64)


def ref_float32(v, mode, sat):
    """Expected fp32 codes of float64 values: neighbours found with nextafter in float32."""
    neg = np.signbit(v)
    a = np.abs(v)
    finite = np.isfinite(a)
    af = np.where(finite, a, 0.0)
    with np.errstate(over="ignore"):
        c = af.astype(np.float32)                      # a neighbour (nearest, by numpy)
    max32 = np.float64(np.finfo(np.float32).max)
    c = np.where(np.isinf(c), np.float32(max32), c).astype(np.float32)
    above = c.astype(np.float64) > af
    lo32 = np.where(above, np.nextafter(c, np.float32(0)), c)
    with np.errstate(over="ignore"):
        hi32 = np.where(above, c, np.nextafter(c, np.float32(np.inf)))
    lo = lo32.astype(np.float64)
    hi = np.where(np.isinf(hi32), 2.0 ** 128, hi32.astype(np.float64))
    lo_code = lo32.view(np.uint32).astype(np.int64)
    up = _pick(af, lo, hi, lo_code, neg, mode)
    code = lo_code + up
    overflow = code > 0x7F7FFFFF
    keep_max = sat or mode in ("trunc", "odd")
    code = np.where(overflow, 0x7F7FFFFF if keep_max else 0x7F800000, code)
    code = np.where(np.isnan(v), 0x7FC00000, code)
    code = np.where(np.isinf(v), 0x7F7FFFFF if sat else 0x7F800000, code)
    return (code | np.where(neg, 0x80000000, 0)).astype(np.uint64)


def ref_e8m0(v, mode, sat):
    """float8_e8m0 (unsigned powers of two 2^-127..2^127, 0xFF NaN) as ml_dtypes encodes it:
    nearest with ties up (linear mantissa), zero/negative/NaN -> 0xFF, below 2^-127 -> 0x00.
    Directed modes: trunc/floor down, ceil up; odd rounds down (kernel convention)."""
    a = np.where(np.isfinite(v) & (v > 0), v, 1.0)
    mant, e = np.frexp(a)                 # a = mant * 2^e, mant in [0.5, 1)
    k = e.astype(np.int64) - 1            # 2^k <= a < 2^(k+1)
    frac = mant * 2 - 1                   # a / 2^k - 1, in [0, 1)
    if mode in ("rint", "round"):
        up = frac >= 0.5
    elif mode == "ceil":
        up = frac > 0
    else:
        up = np.zeros(a.shape, bool)
    code = k + 127 + up
    to_inf = mode in ("rint", "round", "ceil")
    code = np.where(code > 254, 0xFF if (to_inf and not sat) else 0xFE, code)
    code = np.maximum(code, 0)
    code = np.where(np.isposinf(v), 0xFE if sat else 0xFF, code)
    code = np.where(np.isnan(v) | (v <= 0) | np.isneginf(v), 0xFF, code)
    return code.astype(np.uint64)


# ============================================================ integer targets
INTS = {"int8": (-128, 127), "int16": (-32768, 32767), "int32": (-2 ** 31, 2 ** 31 - 1),
        "uint8": (0, 255), "int4": (-8, 7)}


def round_integral(v, mode):
    """Integral float64 per Ascend round mode, from floor/ceil and the exact distance to floor."""
    lo = np.floor(v)
    hi = lo + 1
    d = v - lo                            # exact, in [0, 1)
    if mode == "rint":
        return np.rint(v)                 # numpy: nearest, ties to even
    if mode == "round":
        return np.where((d > 0.5) | ((d == 0.5) & (v > 0)), hi, lo)
    if mode == "trunc":
        return np.where(v < 0, np.ceil(v), lo)
    if mode == "floor":
        return lo
    if mode == "ceil":
        return np.ceil(v)
    return np.where(d == 0, v, np.where(np.mod(lo, 2) == 1, lo, hi))   # odd


def ref_int(v, name, mode, sat):
    lo, hi = INTS[name]
    with np.errstate(invalid="ignore"):
        r = round_integral(v, mode)
    r = np.where(np.isnan(v), 0.0, r)
    if sat:
        out = np.clip(r, lo, hi)
    else:
        # wrap modulo 2^bits (two's complement truncation); beyond +-2^63 (and inf) clamp
        big = ~(np.abs(r) < 9.2e18)
        ri = np.where(big, 0, r).astype(np.int64)                     # exact integers
        wrapped = np.mod(ri - lo, hi - lo + 1) + lo
        out = np.where(big, np.clip(r, lo, hi), wrapped)
    return out.astype(np.int64)


# ============================================================ kernel calls
def run_cast(x, target, mode, sat, generic):
    """Cast through formats.cast (fast path where it applies) or the generic kernel path."""
    if not generic:
        return formats.cast(x, target, round_mode=mode, saturate=sat)
    dt = formats.as_dtype(target)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape, dtype=np.int8 if dt == formats.int4 else dt)
    _casts.cast_buffer(flat.view(np.uint8), formats._KIND[flat.dtype], out.view(np.uint8),
                       formats._KIND[dt], flat.size, formats.ROUND_MODES[mode], sat, True)
    return out.astype(formats.int4) if dt == formats.int4 else out


def expected(v, target, mode, sat):
    if target in FLOATS:
        return ref_float(v, FLOATS[target], mode, sat)
    if target == "float32":
        return ref_float32(v, mode, sat)
    if target == "float8_e8m0":
        return ref_e8m0(v, mode, sat)
    return ref_int(v, target, mode, sat)


def check(x, target, generic=False, modes=MODES):
    v = _decode(x)
    for mode in modes:
        for sat in (True, False):
            got = run_cast(x, target, mode, sat, generic)
            assert got.dtype == formats.as_dtype(target)
            assert got.shape == x.shape
            want = expected(v, target, mode, sat)
            if target in INTS:
                got_v = got.astype(np.int64)
            else:
                got_v = formats.bits(got).astype(np.uint64)
            bad = np.flatnonzero(got_v != want)
            if bad.size:
                i = bad[:5]
                raise AssertionError(
                    f"{x.dtype}->{target} mode={mode} sat={sat} generic={generic}: {bad.size} differ; "
                    f"inputs {formats.bits(x)[i]} ({v[i]}), got {got_v[i]}, want {want[i]}")


# ============================================================ adversarial samples
def _grid_edges(values):
    """Every representable value, every midpoint, and the midpoints nudged both ways (float32)."""
    vals = values.astype(np.float32)
    mids = ((values[:-1] + values[1:]) / 2).astype(np.float32)        # exact: <= 12 significant bits
    near = np.concatenate([vals, mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(np.inf))])
    return near


def fp32_samples():
    parts = [RNG.integers(0, 2 ** 32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32)]
    parts.append((RNG.standard_normal(50_000) * np.exp2(RNG.integers(-30, 30, 50_000))).astype(np.float32))
    for f in FLOATS.values():
        parts.append(_grid_edges(f.values))
        top = np.float64(f.values[-1])
        over = np.array([(top + f.virtual_next) / 2, f.virtual_next, 2 * f.virtual_next, 1e38], np.float64)
        over = over[over < 3.4e38].astype(np.float32)
        parts.append(np.concatenate([over, np.nextafter(over, np.float32(0)), np.nextafter(over, np.float32(np.inf))]))
    e8 = np.exp2(np.arange(-127, 128, dtype=np.float64))
    parts.append(np.concatenate([e8, 1.5 * e8, np.nextafter(1.5 * e8, 0), np.nextafter(1.5 * e8, 4 * e8)])
                 .astype(np.float32))
    k = np.arange(-300, 300, dtype=np.float64)
    ints = np.concatenate([k, k + 0.5, k + 0.25, k + 0.75, 2.0 ** 22 + 0.5 + k, 2.0 ** 23 + k, 2.0 ** 24 + 2 * k,
                           2.0 ** 31 + 256 * k, -2.0 ** 31 + 256 * k, 2.0 ** 15 + 0.5 * k, 2.0 ** 63 + 2.0 ** 40 * k])
    parts.append(ints.astype(np.float32))
    tiny = np.arange(0, 4096, dtype=np.uint32)
    parts.append(np.concatenate([tiny, 0x00800000 + tiny - 2048]).view(np.float32))  # fp32 subnormals/min normal
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan], np.float32)
    parts.append(np.concatenate([specials, np.array([0x7F800001, 0xFFC12345], np.uint32).view(np.float32)]))
    x = np.concatenate(parts).astype(np.float32)
    return np.concatenate([x, -x])


def fp64_samples():
    with np.errstate(invalid="ignore"):
        f32 = fp32_samples()[::7].astype(np.float64)
    f32 = f32[np.isfinite(f32)]
    up = np.nextafter(f32.astype(np.float32), np.float32(np.inf)).astype(np.float64)
    mids = (f32 + up) / 2                                             # fp32 ties, exact in fp64
    parts = [f32, mids, np.nextafter(mids, -np.inf), np.nextafter(mids, np.inf),
             RNG.standard_normal(20_000) * np.exp2(RNG.integers(-160, 160, 20_000)),
             np.array([1e39, -1e39, 1e120, -1e120, 1e308, 5e-324, -5e-324, 2.0 ** -150, 2.0 ** -149 * 1.5,
                       3.4028235677973366e38, 3.4028235677973362e38, np.inf, -np.inf, np.nan])]
    return np.concatenate(parts)


FP32 = fp32_samples()
FP64 = fp64_samples()
TARGETS = ["float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0",
           "int8", "int16", "int32", "uint8", "int4"]


# ============================================================ tests: exhaustive and sampled
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", ["float16", "bfloat16"])
def test_every_16bit_pattern(source, target):
    x = all_patterns(source)
    check(x, target)
    check(x, target, generic=True)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source", ["float8_e4m3fn", "float8_e5m2", "float8_e8m0"])
def test_every_8bit_code(source, target):
    x = all_patterns(source)
    check(x, target)
    check(x, target, generic=True)


@pytest.mark.parametrize("target", TARGETS)
def test_fp32_random_and_adversarial(target):
    check(FP32, target)
    check(FP32[::5], target, generic=True)


@pytest.mark.parametrize("target", TARGETS)
def test_fp64_random_and_adversarial(target):
    check(FP64, target)                   # float64 sources always take the generic path


def test_fast_path_equals_generic_on_fp32_patterns():
    """The branch-free fast path against the double-precision routine, on more fp32 bit patterns."""
    x = RNG.integers(0, 2 ** 32, 400_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    for target in ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "int8", "int32"]:
        for mode in MODES:
            for sat in (True, False):
                assert_bitexact(run_cast(x, target, mode, sat, False), run_cast(x, target, mode, sat, True),
                                err_msg=f"{target} {mode} {sat}")


def test_integer_sources():
    x = np.array([-2 ** 31, -70000, -129, -128, -9, -8, -1, 0, 1, 7, 8, 127, 128, 255, 256, 65504, 65520,
                  2 ** 24 + 1, 2 ** 31 - 1], dtype=np.int32)
    v = x.astype(np.float64)
    for target in ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float32", "int8", "uint8", "int4"]:
        for mode in MODES:
            for sat in (True, False):
                got = formats.cast(x, target, mode, sat)
                got_v = got.astype(np.int64) if target in INTS else formats.bits(got).astype(np.uint64)
                np.testing.assert_array_equal(got_v, expected(v, target, mode, sat), err_msg=f"{target} {mode} {sat}")


# ============================================================ documented hardware examples
def test_hardware_examples_saturate():
    # ARITHMETIC.md "General hardware facts": half 127.5 -> int8 RINT -> 127 (128 saturates),
    # float 2^22 + 0.5 -> int16 -> 32767.
    assert formats.cast(np.float16([127.5]), "int8")[0] == 127
    assert formats.cast(np.float32([2.0 ** 22 + 0.5]), "int16")[0] == 32767
    assert formats.cast(np.float32([np.nan]), "int32")[0] == 0          # aclnnCast: NaN -> 0
    assert formats.cast(np.float32([2.5, 3.5, -2.5]), "int8").tolist() == [2, 4, -2]
    assert formats.cast(np.float32([2.5, 3.5, -2.5]), "int8", "round").tolist() == [3, 4, -3]
    assert formats.cast(np.float32([2.5, 3.5, -2.5]), "int8", "odd").tolist() == [3, 3, -3]


def test_fp8_overflow_conventions():
    x = np.float32([448, 464, 464.0001, 1e6, np.inf, -np.inf])
    sat = formats.bits(formats.cast(x, "float8_e4m3fn"))
    nosat = formats.bits(formats.cast(x, "float8_e4m3fn", saturate=False))
    assert sat.tolist() == [0x7E, 0x7E, 0x7E, 0x7E, 0x7E, 0xFE]
    assert nosat.tolist() == [0x7E, 0x7E, 0x7F, 0x7F, 0x7F, 0xFF]
    assert formats.bits(formats.cast(np.float32([1e6]), "float8_e5m2", saturate=False)).tolist() == [0x7C]
    assert formats.bits(formats.cast(np.float32([1e6]), "float8_e5m2", "trunc", saturate=False)).tolist() == [0x7B]


# ============================================================ peers: ml_dtypes / numpy astype
def _peer_compare(x, target):
    """RNE, non-saturating: ml_dtypes / numpy astype semantics. NaN payloads may differ."""
    dt = formats.as_dtype(target)
    if dt == formats.float8_e8m0:
        if x.dtype.itemsize == 1:
            return                        # ml_dtypes has no fp8 -> e8m0 cast
        # ml_dtypes rounds inputs strictly inside (2^-127, 2^-126) (subnormal in fp32/bf16) up to
        # 2^-126 even when 2^-127 is nearer (e.g. 1.02 * 2^-127); we keep the nearest, so skip them.
        with np.errstate(invalid="ignore"):
            a = np.abs(x.astype(np.float64))
        x = x[~((a > 2.0 ** -127) & (a < 2.0 ** -126))]
    ours = formats.cast(x, dt, "rint", saturate=False)
    with np.errstate(over="ignore", invalid="ignore"):
        theirs = x.astype(dt)
    nan_o = np.isnan(ours.astype(np.float32))
    nan_t = np.isnan(theirs.astype(np.float32))
    np.testing.assert_array_equal(nan_o, nan_t)
    assert_bitexact(ours[~nan_o], theirs[~nan_t])


@pytest.mark.parametrize("target", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0"])
def test_matches_ml_dtypes_astype_rne(target):
    for src in ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]:
        _peer_compare(all_patterns(src), target)
    _peer_compare(FP32, target)
    if target == "float16":
        # numpy rounds float64 -> float16 once; ml_dtypes goes float64 -> float32 -> target (two
        # roundings: ~3% of our fp32-tie samples differ for bf16), so only numpy is a peer here.
        _peer_compare(FP64, target)


@pytest.mark.parametrize("target", ["float8_e4m3fn", "float8_e5m2"])
def test_saturating_fp8_matches_clip_then_astype(target):
    dt = formats.as_dtype(target)
    m = formats.FP8_MAX[dt]
    for x in [FP32, all_patterns("float16"), all_patterns("bfloat16")]:
        x = x[~np.isnan(x.astype(np.float32))]
        want = np.clip(x.astype(np.float32), -m, m).astype(dt)
        assert_bitexact(formats.cast(x, dt), want)


def test_trunc_to_int_matches_numpy_astype_in_range():
    for x in [FP32, all_patterns("float16").astype(np.float32)]:
        x = x[np.isfinite(x) & (np.abs(x) < 2 ** 31 - 128)]
        assert_bitexact(formats.cast(x, "int32", "trunc"), x.astype(np.int32))
        small = x[np.abs(x) < 128]
        assert_bitexact(formats.cast(small, "int8", "trunc"), small.astype(np.int8))


def test_widening_is_exact():
    for src in ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0"]:
        x = all_patterns(src)
        got = formats.cast(x, "float32", saturate=False).astype(np.float64)
        want = _decode(x)
        np.testing.assert_array_equal(got, want)          # NaN positions compare equal
        assert_bitexact(formats.cast(x, "float32", saturate=False)[~np.isnan(want)],
                        x.astype(np.float32)[~np.isnan(want)])


# ============================================================ API surface of cast
def test_cast_api():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 12.5
    out = formats.cast(x, "bf16")
    assert out.dtype == formats.bfloat16 and out.shape == (2, 3, 4)
    assert formats.cast(x, "int4").dtype == formats.int4
    assert formats.cast(x.T, np.float16).shape == (4, 3, 2)                     # non-contiguous
    assert_bitexact(formats.cast(x.T, np.float16), formats.cast(np.ascontiguousarray(x.T), np.float16))
    big = x.astype(">f4")
    assert_bitexact(formats.cast(big, "fp16"), formats.cast(x, "fp16"))
    assert formats.cast(np.array([True, False]), "float32").tolist() == [1.0, 0.0]
    assert formats.cast(np.zeros((0, 3), np.float32), "int8").shape == (0, 3)
    assert formats.cast(2.5, "int8").shape == ()
    assert formats.cast([1.5, 2.5], "int8", "ROUND").tolist() == [2, 3]
    with pytest.raises(ValueError, match="round_mode"):
        formats.cast(x, "int8", "nearest")
    with pytest.raises(ValueError, match="unknown dtype"):
        formats.cast(x, "float7")
    with pytest.raises(TypeError):
        formats.cast(np.array([1 + 2j]), "float32")


def test_dtype_names():
    assert formats.as_dtype("BF16") == formats.bfloat16
    assert formats.as_dtype("torch.float8_e4m3fn") == formats.float8_e4m3fn
    assert formats.as_dtype("e8m0") == formats.float8_e8m0
    assert formats.as_dtype(np.float16) == np.dtype(np.float16)
    assert formats.dtype_name(ml_dtypes.float8_e8m0fnu) == "float8_e8m0"
    assert formats.dtype_name("half") == "float16"
    with pytest.raises(TypeError):
        formats.as_dtype(object())


# ============================================================ int4 packing
def test_pack_int4_layout_uint8():
    v = np.array([[1, 2, -1, -8, 7, 0]], np.int8)
    p = formats.pack_int4(v)
    assert p.dtype == np.uint8 and p.shape == (1, 3)
    assert p.tolist() == [[0x21, 0x8F, 0x07]]           # element 2k in the low nibble


def test_pack_int4_layout_int32():
    v = np.arange(8, dtype=np.int8) - 4                   # -4..3
    p = formats.pack_int4(v, container="int32")
    assert p.dtype == np.int32 and p.shape == (1,)
    word = sum(((int(e) & 0xF) << (4 * i)) for i, e in enumerate(v))   # element i at bits 4i..4i+3
    assert int(p[0]) & 0xFFFFFFFF == word


@pytest.mark.parametrize("container,group", [("uint8", 2), ("int32", 8)])
def test_pack_unpack_round_trip(container, group):
    for shape in [(group,), (3, 5 * group), (2, 3, 4 * group)]:
        v = RNG.integers(-8, 8, shape).astype(np.int8)
        p = formats.pack_int4(v, container)
        assert p.shape == shape[:-1] + (shape[-1] // group,)
        assert_bitexact(formats.unpack_int4(p, container), v)
        assert_bitexact(formats.unpack_int4(p, container, n=shape[-1] - 1), v[..., :-1])
    v = RNG.integers(-8, 8, (4, 16)).astype(np.int8)
    assert_bitexact(formats.unpack_int4(formats.pack_int4(v.astype(formats.int4), container), container), v)


def test_pack_int4_every_pair():
    lo, hi = np.meshgrid(np.arange(-8, 8), np.arange(-8, 8))
    v = np.stack([lo.ravel(), hi.ravel()], axis=-1).astype(np.int8)       # 256 pairs
    p = formats.pack_int4(v)[:, 0]
    assert sorted(p.tolist()) == list(range(256))
    assert_bitexact(formats.unpack_int4(p[:, None]), v)


def test_pack_int4_errors():
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        formats.pack_int4(np.array([0, 8]))
    with pytest.raises(ValueError, match="multiple of 2"):
        formats.pack_int4(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="multiple of 8"):
        formats.pack_int4(np.zeros(4, np.int8), container="int32")
    with pytest.raises(ValueError, match="container"):
        formats.pack_int4(np.zeros(2, np.int8), container="int16")
    with pytest.raises(TypeError):
        formats.pack_int4(np.array([0.5, 1.0]))
    with pytest.raises(ValueError):
        formats.pack_int4(np.int8(3))
    with pytest.raises(TypeError):
        formats.unpack_int4(np.zeros(2, np.float32))
    with pytest.raises(TypeError):
        formats.unpack_int4(np.zeros(2, np.uint8), container="int32")
    with pytest.raises(ValueError, match="exceeds"):
        formats.unpack_int4(np.zeros(2, np.uint8), n=5)


def test_bits():
    assert formats.bits(np.float16([1.0])).tolist() == [0x3C00]
    assert formats.bits(np.array([1.0], formats.bfloat16)).tolist() == [0x3F80]
    assert formats.bits(np.float32([-0.0])).tolist() == [0x80000000]
    assert formats.bits(np.array([True])).dtype == np.uint8
