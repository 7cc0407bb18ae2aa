# cython: language_level=3
"""Ascend Cast arithmetic shared by every kernel: bit views, exact decoders, and one rounding routine.

Every narrowing conversion is `round_to_fmt` (generic, from double) or one of the branch-free fast
paths at the end of this file, which tests/test_formats.py proves identical to it on every fp16, bf16
and fp8 pattern and on sampled fp32 ones; so all kernels round the same way.
Semantics (ARITHMETIC.md "General hardware facts", asc-devkit Cast.md / precision_conversion.md):
  round modes  RM_RINT (nearest, ties to even), RM_ROUND (nearest, ties away from zero), RM_TRUNC,
               RM_FLOOR, RM_CEIL, RM_ODD (round to odd / von Neumann).
  saturate     overflow gives +-max finite; +-inf becomes +-max; NaN stays NaN, except to float8
               (e4m3fn, e5m2), where it gives +0: asc-devkit's Reg-API Cast.md ("饱和模式：当输出类型为
               fp8_e5m2_t/fp8_e4m3fn_t时，输入nan，默认输出为0。如果CTRL[50] = 1'b1，则输出为nan"), and
               no kernel emulated here sets CTRL[50] (fp8 exists only on Ascend 950, the Reg-API's chip).
  no saturate  IEEE overflow: inf when the mode rounds away from zero in that direction, max finite
               otherwise; float8_e4m3fn has no inf, so that case gives NaN (0x7F / 0xFF).
The input is a double: every format here (fp32, fp16, bf16, fp8, e8m0) widens to double exactly,
so narrowing from double is a single rounding, exactly as the hardware's one-step Cast.
"""
from libc.stdint cimport (uint8_t, uint16_t, uint32_t, uint64_t, int8_t, int16_t, int32_t, int64_t,
                          INT32_MIN, INT32_MAX)
from libc.math cimport (ldexp, rint, round as c_round, trunc, floor, ceil, isnan, isinf,
                        rintf, truncf, floorf, ceilf, fabsf, copysignf, nextafterf)

cdef enum:
    RM_RINT = 0
    RM_ROUND = 1
    RM_TRUNC = 2
    RM_FLOOR = 3
    RM_CEIL = 4
    RM_ODD = 5

# Floating formats (codes). Kept in sync with npusim/formats.py FORMAT_CODES.
cdef enum:
    F_FP32 = 0
    F_FP16 = 1
    F_BF16 = 2
    F_E4M3 = 3     # float8_e4m3fn: no inf, NaN = S.1111.111, max 448
    F_E5M2 = 4     # float8_e5m2: IEEE-like, max 57344
    F_E8M0 = 5     # float8_e8m0fnu: unsigned power of two 2^(code-127), 0xFF = NaN
    F_HIF8 = 6     # HiFloat8: tapered precision, see hif8_to_f32 / round_to_hif8 (own codecs, not round_to_fmt)


# ---------------------------------------------------------------- bit views
cdef union _F32Bits:                        # a union pun lets GCC keep values in (SIMD) registers
    float f
    uint32_t u

cdef inline uint32_t f32_bits(float x) noexcept nogil:
    cdef _F32Bits t
    t.f = x
    return t.u

cdef inline float bits_f32(uint32_t u) noexcept nogil:
    cdef _F32Bits t
    t.u = u
    return t.f

cdef inline uint64_t f64_bits(double x) noexcept nogil:
    return (<uint64_t*>&x)[0]


# ---------------------------------------------------------------- exact decoders
cdef inline float half_to_f32(uint16_t h) noexcept nogil:
    cdef uint32_t sign = (<uint32_t>(h & 0x8000)) << 16
    cdef uint32_t e = (h >> 10) & 0x1F
    cdef uint32_t m = h & 0x3FF
    cdef float v
    if e == 0:
        v = ldexp(<double>m, -24)
        return -v if sign else v
    if e == 31:
        return bits_f32(sign | 0x7F800000 | (m << 13))
    return bits_f32(sign | ((e + 112) << 23) | (m << 13))

cdef inline float bf16_to_f32(uint16_t b) noexcept nogil:
    return bits_f32((<uint32_t>b) << 16)

cdef inline float e4m3_to_f32(uint8_t c) noexcept nogil:
    cdef int e = (c >> 3) & 0xF
    cdef int m = c & 0x7
    cdef double v
    if e == 15 and m == 7:
        return bits_f32(0x7FC00000 | ((<uint32_t>(c & 0x80)) << 24))
    if e == 0:
        v = ldexp(<double>m, -9)
    else:
        v = ldexp(<double>(8 + m), e - 10)
    return <float>(-v if c & 0x80 else v)

cdef inline float e5m2_to_f32(uint8_t c) noexcept nogil:
    return half_to_f32((<uint16_t>c) << 8)

cdef inline float e8m0_to_f32(uint8_t c) noexcept nogil:
    if c == 0xFF:
        return bits_f32(0x7FC00000)
    return <float>ldexp(1.0, <int>c - 127)

cdef inline double decode_fmt(uint32_t code, int fmt) noexcept nogil:
    if fmt == F_FP32:
        return bits_f32(code)
    if fmt == F_FP16:
        return half_to_f32(<uint16_t>code)
    if fmt == F_BF16:
        return bf16_to_f32(<uint16_t>code)
    if fmt == F_E4M3:
        return e4m3_to_f32(<uint8_t>code)
    if fmt == F_E5M2:
        return e5m2_to_f32(<uint8_t>code)
    return e8m0_to_f32(<uint8_t>code)


# ---------------------------------------------------------------- format parameters
# mbits: stored mantissa bits; emin: exponent of the smallest normal; sign_shift: position of
# the sign bit; max_code: largest finite magnitude code.
cdef inline int fmt_mbits(int fmt) noexcept nogil:
    if fmt == F_FP32: return 23
    if fmt == F_FP16: return 10
    if fmt == F_BF16: return 7
    if fmt == F_E4M3: return 3
    if fmt == F_E5M2: return 2
    return 0

cdef inline int fmt_emin(int fmt) noexcept nogil:
    if fmt == F_FP32 or fmt == F_BF16: return -126
    if fmt == F_FP16 or fmt == F_E5M2: return -14
    if fmt == F_E4M3: return -6
    return -127

cdef inline int fmt_sign_shift(int fmt) noexcept nogil:
    if fmt == F_FP32: return 31
    if fmt == F_FP16 or fmt == F_BF16: return 15
    return 7

cdef inline uint32_t fmt_max_code(int fmt) noexcept nogil:
    if fmt == F_FP32: return 0x7F7FFFFF
    if fmt == F_FP16: return 0x7BFF
    if fmt == F_BF16: return 0x7F7F
    if fmt == F_E4M3: return 0x7E
    if fmt == F_E5M2: return 0x7B
    return 0xFE

cdef inline uint32_t fmt_inf_code(int fmt) noexcept nogil:
    # magnitude code of +inf; formats without inf return their NaN code
    if fmt == F_FP32: return 0x7F800000
    if fmt == F_FP16: return 0x7C00
    if fmt == F_BF16: return 0x7F80
    if fmt == F_E4M3: return 0x7F
    if fmt == F_E5M2: return 0x7C
    return 0xFF

cdef inline uint32_t fmt_nan_code(int fmt) noexcept nogil:
    if fmt == F_FP32: return 0x7FC00000
    if fmt == F_FP16: return 0x7E00
    if fmt == F_BF16: return 0x7FC0
    if fmt == F_E4M3: return 0x7F
    if fmt == F_E5M2: return 0x7E
    return 0xFF

cdef inline uint32_t fmt_sat_nan_code(int fmt) noexcept nogil:
    """Magnitude code of NaN in a saturating cast: 0 for float8 (its sign is dropped too), else the NaN."""
    if fmt == F_E4M3 or fmt == F_E5M2: return 0
    return fmt_nan_code(fmt)


# ---------------------------------------------------------------- rounding core
cdef inline bint _round_up(uint64_t ipart, uint64_t rem, uint64_t half, bint neg, int mode) noexcept nogil:
    """Whether the magnitude ipart (remainder rem out of 2*half) moves up by one unit."""
    if rem == 0:
        return False
    if mode == RM_RINT:
        return rem > half or (rem == half and (ipart & 1))
    if mode == RM_ROUND:
        return rem >= half
    if mode == RM_FLOOR:
        return neg
    if mode == RM_CEIL:
        return not neg
    return False          # RM_TRUNC; RM_ODD handled by the caller

cdef inline bint _overflow_to_inf(bint neg, int mode) noexcept nogil:
    if mode == RM_RINT or mode == RM_ROUND:
        return True
    if mode == RM_FLOOR:
        return neg
    if mode == RM_CEIL:
        return not neg
    return False

cdef inline uint32_t _e8m0_code(int e, uint64_t frac, int mode, bint sat) noexcept nogil:
    """Positive value (1 + frac/2^52) * 2^e to a power of two. Ties go up (the implicit 1 is odd),
    as ml_dtypes does; below 2^-127 clamps to code 0 (e8m0 has no zero)."""
    cdef bint up = False
    cdef int code
    if frac != 0:
        if mode == RM_RINT or mode == RM_ROUND:
            up = frac >= ((<uint64_t>1) << 51)
        elif mode == RM_CEIL:
            up = True
    code = e + 127 + (1 if up else 0)
    if code < 0:
        return 0
    if code > 254:
        return 0xFE if (sat or not _overflow_to_inf(False, mode)) else 0xFF
    return <uint32_t>code

cdef inline uint32_t round_to_fmt(double x, int fmt, int mode, bint sat) noexcept nogil:
    """Code of x in `fmt`, one rounding with `mode`, saturating or not (see module docstring)."""
    cdef uint64_t u = f64_bits(x)
    cdef bint neg = (u >> 63) != 0
    cdef uint32_t sbit = (<uint32_t>neg) << fmt_sign_shift(fmt)
    cdef int mbits = fmt_mbits(fmt)
    cdef int emin = fmt_emin(fmt)
    cdef uint32_t max_code = fmt_max_code(fmt)
    cdef int E = <int>((u >> 52) & 0x7FF)
    cdef uint64_t m53 = u & ((<uint64_t>1 << 52) - 1)
    cdef int e, q, shift
    cdef uint64_t ipart, rem, half, code64
    if fmt == F_E8M0:
        sbit = 0
        if neg and not (E == 0 and m53 == 0):
            return 0xFF                      # negative: not representable
        if E == 0 and m53 == 0:
            return 0xFF                      # zero: not representable (ml_dtypes convention)
    if E == 0x7FF:
        if m53 != 0:
            if sat and (fmt == F_E4M3 or fmt == F_E5M2):
                return 0                     # saturating float8: NaN gives +0 (module docstring)
            return sbit | fmt_nan_code(fmt)
        if sat:
            return sbit | max_code
        return sbit | fmt_inf_code(fmt)
    if E == 0:
        if m53 == 0:
            return sbit                      # signed zero
        e = -1074                            # double subnormal: value = m53 * 2^-1074
        while (m53 >> 52) == 0:
            m53 <<= 1
            e -= 1
        e += 52
    else:
        m53 |= (<uint64_t>1) << 52
        e = E - 1023                         # value = m53 * 2^(e-52), m53 in [2^52, 2^53)
    if fmt == F_E8M0:
        return _e8m0_code(e, m53 - ((<uint64_t>1) << 52), mode, sat)
    q = (e if e > emin else emin) - mbits    # exponent of one unit in the last place
    shift = q - (e - 52)
    if shift <= 0:
        ipart = m53 << (-shift)              # exact (only when the target is wider here)
        rem = 0
        half = 1
    elif shift > 60:
        ipart = 0
        rem = 1                              # non-zero, far below half a unit
        half = (<uint64_t>1) << 62
    else:
        ipart = m53 >> shift
        rem = m53 & ((<uint64_t>1 << shift) - 1)
        half = (<uint64_t>1) << (shift - 1)
    if mode == RM_ODD:
        if rem != 0:
            ipart |= 1
    elif _round_up(ipart, rem, half, neg, mode):
        ipart += 1
    if ipart == 0:
        return sbit
    # compare in 64 bits: for fp32 a huge double's code does not fit 32 bits (was a wrap-around bug)
    code64 = (<uint64_t>((e if e > emin else emin) - emin) << mbits) + ipart
    if code64 > max_code:
        if sat or not _overflow_to_inf(neg, mode):
            return sbit | max_code
        return sbit | fmt_inf_code(fmt)
    return sbit | <uint32_t>code64


# ---------------------------------------------------------------- HiFloat8
# Huawei's 8-bit tapered-precision float (Luo et al., "Ascend HiFloat8 Format for Deep Learning",
# arXiv 2409.16626; field table in hicann/amct docs/zh/context/hifloat8_quantization.md and
# hicann/asc-tools cpudebug/include/kernel_hif8.h). Code = S | Dot | Exponent | Mantissa:
#   Dot '11' (D=4) '10' (D=3) '01' (D=2) '001' (D=1) '0001' (D=0) '0000' (denormal)
#   exponent field: D bits, sign-magnitude with an implicit leading 1 (|e| in [2^(D-1), 2^D - 1]; D=0: e=0)
#   mantissa: the bits left (1..3), value (1 + m / 2^w) * 2^e, e in [-15, 15]
#   denormal: 3-bit m, value 2^(m - 23) (m 1..7: 2^-22 .. 2^-16); 0x00 = 0, 0x80 = NaN
#   0x6F / 0xEF (D=4, e=+15, m=1: the 1.5*2^15 slot) = +-inf; largest finite 2^15 = 32768 (0x6E)
# No negative zero. Encoding rounds to nearest, ties away from zero (CAST_ROUND, the deterministic mode
# of asc_float2hif8 / asc_half2hif8; CAST_HYBRID is stochastic and not emulated).

cdef inline int hif8_mant_bits(int mag) noexcept nogil:
    """Mantissa width of a normal exponent magnitude (0..15): 3 for 0..3, 2 for 4..7, 1 for 8..15."""
    if mag <= 3:
        return 3
    if mag <= 7:
        return 2
    return 1

cdef inline float hif8_to_f32(uint8_t c) noexcept nogil:
    """Exact value of a HiFloat8 code (every value is exact in fp32)."""
    cdef bint neg = (c & 0x80) != 0
    cdef uint32_t b = c & 0x7F
    cdef int d, dlen, w, e, mag
    cdef uint32_t ef, m
    cdef double v
    if (b >> 5) == 3:
        d, dlen = 4, 2
    elif (b >> 5) == 2:
        d, dlen = 3, 2
    elif (b >> 5) == 1:
        d, dlen = 2, 2
    elif (b >> 4) == 1:
        d, dlen = 1, 3
    elif (b >> 3) == 1:
        d, dlen = 0, 4
    else:                                   # denormal
        m = b & 7
        if m == 0:
            return bits_f32(0x7FC00000) if neg else <float>0.0
        v = ldexp(1.0, <int>m - 23)
        return <float>(-v if neg else v)
    w = 7 - dlen - d
    ef = (b >> w) & ((1u << d) - 1)
    m = b & ((1u << w) - 1)
    e = 0
    if d > 0:
        mag = <int>((1u << (d - 1)) | (ef & ((1u << (d - 1)) - 1)))
        e = -mag if (ef >> (d - 1)) else mag
    if d == 4 and e == 15 and m == 1:
        return bits_f32(0xFF800000 if neg else 0x7F800000)
    v = ldexp(<double>((1u << w) + m), e - w)
    return <float>(-v if neg else v)

cdef inline uint8_t hif8_encode(int e, uint32_t m) noexcept nogil:
    """Magnitude code of (1 + m/2^w) * 2^e for e in [-15, 15], or 2^e for e in [-22, -16]."""
    cdef int mag = e if e >= 0 else -e
    cdef int d, w
    cdef uint32_t dot, ef
    if e <= -16:
        return <uint8_t>(e + 23)
    if mag == 0:
        return <uint8_t>((1u << 3) | m)                     # dot 0001, no exponent bits
    d = 1 if mag == 1 else (2 if mag <= 3 else (3 if mag <= 7 else 4))
    w = hif8_mant_bits(mag)
    dot = 1u if d == 1 else (1u if d == 2 else (2u if d == 3 else 3u))
    # exponent field: sign bit, then the magnitude below its (implicit) top bit
    ef = ((1u if e < 0 else 0u) << (d - 1)) | (<uint32_t>mag & ((1u << (d - 1)) - 1))
    if d == 1:
        return <uint8_t>((dot << 4) | (ef << w) | m)        # dot 001 (3 bits)
    return <uint8_t>((dot << 5) | (ef << w) | m)            # 2-bit dots

cdef inline uint8_t round_to_hif8(double x, bint sat) noexcept nogil:
    """HiFloat8 code of x, round to nearest with ties away from zero (CAST_ROUND).
    Not saturating: |x| rounding past 2^15 (|x| >= 40960) and +-inf give +-inf, NaN gives NaN (0x80).
    Saturating: those give +-32768 (0x6E / 0xEE) and NaN gives 0 (asc-devkit asc_float2hif8.md:
    "饱和模式 ... 输入数据为nan时，返回0"). Results below half the smallest denormal are 0 (no -0)."""
    cdef uint64_t u = f64_bits(x)
    cdef uint32_t sbit = <uint32_t>((u >> 63) << 7)
    cdef int E = <int>((u >> 52) & 0x7FF)
    cdef uint64_t m53 = u & ((<uint64_t>1 << 52) - 1)
    cdef int e, w, shift
    cdef uint64_t ipart
    if E == 0x7FF:
        if m53 != 0:
            return 0 if sat else 0x80
        return <uint8_t>(sbit | (0x6E if sat else 0x6F))
    if E == 0:
        return 0                            # zero and float64 subnormals (far below 2^-23)
    m53 |= (<uint64_t>1) << 52
    e = E - 1023                            # value = m53 * 2^(e-52), m53 in [2^52, 2^53)
    if e < -23:
        return 0
    if e > 15:
        return <uint8_t>(sbit | (0x6E if sat else 0x6F))
    # bits kept after the implicit one: w for normals, 0 for denormals, -1 at e = -23 (rounds to 2^-22 or 0)
    w = hif8_mant_bits(e if e >= 0 else -e) if e >= -15 else (0 if e >= -22 else -1)
    shift = 52 - w
    ipart = (m53 >> shift) + ((m53 >> (shift - 1)) & 1)    # ties (and above) away from zero
    if ipart >> (w + 1):                    # carried into the next binade: 2^(e+1)
        e += 1
        ipart = 0
    else:
        ipart -= (<uint64_t>1) << w if w >= 0 else 0
    if e > 15 or (e == 15 and ipart != 0):  # 1.5 * 2^15 is the inf code
        return <uint8_t>(sbit | (0x6E if sat else 0x6F))
    return <uint8_t>(sbit | hif8_encode(e, <uint32_t>ipart))


# ---------------------------------------------------------------- convenient wrappers
cdef inline float to_f32(double x, int mode) noexcept nogil:
    """IEEE binary32 result of x with the given mode (non-saturating, as C float arithmetic)."""
    return bits_f32(round_to_fmt(x, F_FP32, mode, False))

cdef inline float f32_rne(double x) noexcept nogil:
    """Round a double to fp32, ties to even (what a C float operation produces)."""
    return <float>x

cdef inline uint16_t f32_to_half(double x, int mode, bint sat) noexcept nogil:
    return <uint16_t>round_to_fmt(x, F_FP16, mode, sat)

cdef inline uint16_t f32_to_bf16(double x, int mode, bint sat) noexcept nogil:
    return <uint16_t>round_to_fmt(x, F_BF16, mode, sat)

cdef inline uint8_t f32_to_e4m3(double x, int mode, bint sat) noexcept nogil:
    return <uint8_t>round_to_fmt(x, F_E4M3, mode, sat)

cdef inline uint8_t f32_to_e5m2(double x, int mode, bint sat) noexcept nogil:
    return <uint8_t>round_to_fmt(x, F_E5M2, mode, sat)

cdef inline double half_round(double x) noexcept nogil:
    """x rounded to fp16 (RNE, non-saturating) and widened back: emulates one fp16 vector op."""
    return half_to_f32(<uint16_t>round_to_fmt(x, F_FP16, RM_RINT, False))


# ---------------------------------------------------------------- float -> integer
cdef inline double round_integral(double x, int mode) noexcept nogil:
    """x rounded to an integral value (still a double) with an Ascend round mode."""
    cdef double t
    if mode == RM_RINT:
        return rint(x)                       # default FP environment: ties to even
    if mode == RM_ROUND:
        return c_round(x)
    if mode == RM_TRUNC:
        return trunc(x)
    if mode == RM_FLOOR:
        return floor(x)
    if mode == RM_CEIL:
        return ceil(x)
    t = trunc(x)                             # RM_ODD: truncate, then force odd if inexact
    if t != x and (<int64_t>t) % 2 == 0:
        t += -1.0 if x < 0 else 1.0
    return t

cdef inline int64_t to_int(double x, int mode, int64_t lo, int64_t hi, bint sat) noexcept nogil:
    """float -> integer of range [lo, hi]. NaN gives 0 (aclnnCast: "nan转换为0", hicann/ops-math
    math/cast/README.md; the vector Cast instruction itself does not document it).
    Saturating clamps (inf too); non-saturating wraps modulo the width (hi - lo + 1), a choice: the
    hardware's non-saturating float -> int overflow is undocumented."""
    cdef double r
    cdef int64_t v
    cdef uint64_t width
    if isnan(x):
        return 0
    r = round_integral(x, mode)
    if sat or isinf(r) or r >= 9.2e18 or r <= -9.2e18:
        if r <= <double>lo:
            return lo
        if r >= <double>hi:
            return hi
        return <int64_t>r
    v = <int64_t>r
    width = <uint64_t>(hi - lo) + 1
    return lo + <int64_t>((<uint64_t>(v - lo)) % width)

cdef inline int8_t to_int8(double x, int mode) noexcept nogil:
    return <int8_t>to_int(x, mode, -128, 127, True)

cdef inline int32_t to_int32(double x, int mode) noexcept nogil:
    return <int32_t>to_int(x, mode, INT32_MIN, INT32_MAX, True)


# ---------------------------------------------------------------- branch-free fast paths
# Same results as the generic routines above (tests/test_formats.py checks every fp16/bf16/fp8
# pattern and sampled fp32 ones against them), written as straight-line integer/float arithmetic:
# the format, round mode and saturation are data (a small struct of masks built once per call),
# so a loop over elements has no branches and GCC compiles it to SIMD code.

cdef inline uint32_t sel_u32(uint32_t c, uint32_t a, uint32_t b) noexcept nogil:
    """a if c (0 or 1) else b, as bit masks: both sides are always computed, so GCC cannot move a
    possibly trapping float operation under a branch and then refuse to vectorise the loop."""
    cdef uint32_t m = 0U - c
    return (a & m) | (b & ~m)

cdef inline float sel_f32(uint32_t c, float a, float b) noexcept nogil:
    return bits_f32(sel_u32(c, f32_bits(a), f32_bits(b)))

cdef inline uint32_t half_bits_to_f32_bits(uint16_t h) noexcept nogil:
    """Exact fp16 -> fp32 widening on bits (NaN payload kept, like half_to_f32)."""
    cdef uint32_t e = (h >> 10) & 0x1F
    cdef uint32_t m = h & 0x3FF
    cdef uint32_t sign = (<uint32_t>(h & 0x8000)) << 16
    cdef uint32_t sub = f32_bits(<float>(<int32_t>m) * <float>5.9604644775390625e-08)   # m * 2^-24, exact
    cdef uint32_t normal = ((<uint32_t>(h & 0x7FFF)) << 13) + (<uint32_t>112 << 23)
    cdef uint32_t special = 0x7F800000 | (m << 13)
    return sign | sel_u32(e == 0, sub, sel_u32(e == 31, special, normal))

cdef inline uint32_t f32_canonical_nan(uint32_t u) noexcept nogil:
    """u unchanged unless NaN; a NaN becomes the default NaN with u's sign (what round_to_fmt gives)."""
    return ((u & 0x80000000U) | 0x7FC00000) if (u & 0x7FFFFFFF) > 0x7F800000 else u

cdef struct NarrowParams:
    # target format (F_FP16, F_BF16, F_E4M3 or F_E5M2)
    uint32_t shift_normal      # 23 - mbits: fp32 bits >> this = target code, for normal targets
    uint32_t rebias            # (126 + emin) << 23: subtract to move the exponent to the target bias
    uint32_t exp_normal        # smallest fp32 biased exponent that is normal in the target
    uint32_t sub_base          # 150 + emin - mbits: shift for a subnormal target = sub_base - exponent
    uint32_t sign_shift
    uint32_t max_code
    uint32_t inf_code          # overflow code when not saturating (NaN for e4m3fn)
    uint32_t nan_code
    uint32_t nan_sign          # 1: a NaN keeps its sign bit; 0: it gives +nan_code (saturating float8: +0)
    # round mode and saturation as 0/1 flags
    uint32_t near              # RINT or ROUND: above half goes up, overflow goes to inf
    uint32_t tie_even          # RINT
    uint32_t tie_away          # ROUND
    uint32_t down              # FLOOR: negative inexact values grow in magnitude
    uint32_t up                # CEIL: positive inexact values grow in magnitude
    uint32_t odd               # ODD: an inexact result gets its last bit set
    uint32_t sat

cdef inline NarrowParams narrow_params(int fmt, int mode, bint sat) noexcept nogil:
    """Parameters of f32_narrow_fast for (fmt, mode, sat); fmt in F_FP16, F_BF16, F_E4M3, F_E5M2."""
    cdef NarrowParams p
    cdef int mbits = fmt_mbits(fmt)
    cdef int emin = fmt_emin(fmt)
    p.shift_normal = <uint32_t>(23 - mbits)
    p.rebias = (<uint32_t>(126 + emin)) << 23
    p.exp_normal = <uint32_t>(127 + emin)
    p.sub_base = <uint32_t>(150 + emin - mbits)
    p.sign_shift = <uint32_t>fmt_sign_shift(fmt)
    p.max_code = fmt_max_code(fmt)
    p.inf_code = fmt_inf_code(fmt)
    p.nan_code = fmt_sat_nan_code(fmt) if sat else fmt_nan_code(fmt)
    p.nan_sign = 0 if (sat and p.nan_code == 0) else 1
    p.near = mode == RM_RINT or mode == RM_ROUND
    p.tie_even = mode == RM_RINT
    p.tie_away = mode == RM_ROUND
    p.down = mode == RM_FLOOR
    p.up = mode == RM_CEIL
    p.odd = mode == RM_ODD
    p.sat = 1 if sat else 0
    return p

cdef inline uint32_t f32_narrow_fast(uint32_t u, NarrowParams p) noexcept nogil:
    """round_to_fmt(bits_f32(u), fmt, mode, sat) for the (fmt, mode, sat) of p, without branches.

    Normal targets: rebias the exponent in place, so the target code is the fp32 bits shifted right
    by 23-mbits (a mantissa carry runs into the exponent, as it should). Subnormal targets: shift the
    significand with its implicit bit so that one unit is the target's smallest subnormal."""
    cdef uint32_t a = u & 0x7FFFFFFF
    cdef uint32_t neg = u >> 31
    cdef uint32_t exp = a >> 23
    cdef uint32_t normal = exp >= p.exp_normal
    cdef uint32_t sub_shift = p.sub_base - (exp | (exp == 0))      # fp32 subnormals scale like exponent 1
    cdef uint32_t shift = p.shift_normal if normal else (sub_shift if sub_shift < 31 else 31)
    cdef uint32_t base = (a - p.rebias) if normal else ((a & 0x7FFFFF) | ((<uint32_t>(exp != 0)) << 23))
    cdef uint32_t ipart = base >> shift
    cdef uint32_t rem = base & ((<uint32_t>1 << shift) - 1)
    cdef uint32_t half = <uint32_t>1 << (shift - 1)
    cdef uint32_t inexact = rem != 0
    cdef uint32_t directed = (p.down & neg) | (p.up & (neg ^ 1))
    cdef uint32_t up = ((rem > half) & p.near) | ((rem == half) & (p.tie_away | (p.tie_even & ipart))) \
        | (inexact & directed)
    cdef uint32_t code = (ipart | (inexact & p.odd)) + up
    cdef uint32_t overflow_code = p.max_code if (p.sat | ((p.near | directed) ^ 1)) else p.inf_code
    cdef uint32_t nan = a > 0x7F800000
    cdef uint32_t special = p.nan_code if nan else (p.max_code if p.sat else p.inf_code)
    code = overflow_code if code > p.max_code else code
    return ((neg & (p.nan_sign | (nan ^ 1))) << p.sign_shift) | (special if exp == 255 else code)

cdef inline uint32_t f32_to_bf16_rne(uint32_t u, bint sat) noexcept nogil:
    """f32_narrow_bits(u, F_BF16, RM_RINT, sat) in a few operations: bf16 shares fp32's exponent,
    so rounding the low 16 bits to nearest-even is the whole cast (a carry reaches inf exactly
    when the value overflows)."""
    cdef uint32_t a = u & 0x7FFFFFFF
    cdef uint32_t sign = (u >> 16) & 0x8000
    cdef uint32_t r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16          # carries into the sign never: a <= 0x7F800000
    cdef uint32_t mag = r & 0x7FFF
    mag = sel_u32(sat & (mag == 0x7F80), 0x7F7F, mag)
    return sign | sel_u32(a > 0x7F800000, 0x7FC0, mag)

cdef struct Fp8RneParams:
    uint32_t norm_min           # fp32 bits of the smallest fp8 normal
    uint32_t overflow           # fp32 bits from which nearest-even overflows (inf and NaN included)
    uint32_t shift              # fp32 mantissa bits dropped (23 - fp8 mantissa bits)
    uint32_t bias_adjust        # (127 - fp8 bias) << fp8 mantissa bits
    float sub_scale             # 1 / (fp8 subnormal unit)
    uint32_t overflow_code      # magnitude code of an overflow: max finite if saturating, else inf (e4m3fn: NaN)
    uint32_t nan_code           # code of NaN: the NaN if not saturating, else +0 (module docstring)
    uint32_t nan_sign           # sign mask of a NaN's result: 0x80, or 0 when it gives +0

cdef inline Fp8RneParams fp8_rne_params(int fmt, bint sat) noexcept nogil:
    """Parameters of f32_to_fp8_rne for fmt F_E4M3 or F_E5M2."""
    cdef Fp8RneParams p
    if fmt == F_E5M2:
        p.norm_min, p.overflow, p.shift, p.bias_adjust = 0x38800000, 0x47700000, 21, 112 << 2
        p.sub_scale = 65536.0
    else:
        p.norm_min, p.overflow, p.shift, p.bias_adjust = 0x3C800000, 0x43E80001, 20, 120 << 3
        p.sub_scale = 512.0
    p.overflow_code = fmt_max_code(fmt) if sat else fmt_inf_code(fmt)
    p.nan_code = fmt_sat_nan_code(fmt) if sat else fmt_nan_code(fmt)
    p.nan_sign = 0 if sat else 0x80
    return p

cdef inline uint32_t f32_to_fp8_rne(uint32_t u, Fp8RneParams p) noexcept nogil:
    """f32_narrow_bits(u, F_E4M3/F_E5M2, RM_RINT, sat): the hot fp8 case in a few operations.
    Normal results: rebias and round the dropped bits to nearest-even; subnormal results come
    from the FPU: |u| * (1/unit) + 2^23 rounds to an integer, ties to even."""
    cdef uint32_t a = u & 0x7FFFFFFF
    cdef uint32_t sign = (u >> 24) & 0x80
    cdef uint32_t code = ((a + ((<uint32_t>1 << (p.shift - 1)) - 1) + ((a >> p.shift) & 1)) >> p.shift) - p.bias_adjust
    cdef uint32_t sub = f32_bits(bits_f32(a) * p.sub_scale + <float>8388608.0) - 0x4B000000
    cdef uint32_t nan = a > 0x7F800000
    # sel_u32, not `?:`: GCC if-converts these only with AVX-512 masks; on AVX2 the loop stayed scalar
    code = sel_u32(a >= p.norm_min, code, sub)
    code = sel_u32(a < p.overflow, code, sel_u32(nan, p.nan_code, p.overflow_code))
    return code | sel_u32(nan, sign & p.nan_sign, sign)

cdef inline uint32_t f32_narrow_bits(uint32_t u, int fmt, int mode, bint sat) noexcept nogil:
    """round_to_fmt(bits_f32(u), fmt, mode, sat) for fmt in F_FP16, F_BF16, F_E4M3, F_E5M2.
    In loops build the parameters once with narrow_params and call f32_narrow_fast."""
    return f32_narrow_fast(u, narrow_params(fmt, mode, sat))

cdef struct IntParams:
    float lo                   # range [lo, hi] of the integer target (exact in fp32 except int32 hi)
    float hi_safe              # largest fp32 <= hi
    float hi_over              # fp32 results >= this give ihi (hi + 1, exact in fp32)
    int32_t ihi
    uint32_t rint, trunc, floor, ceil, round, odd     # the round mode as 0/1 flags

cdef inline IntParams int_params(int mode, int32_t lo, int32_t hi) noexcept nogil:
    """Parameters of f32_to_int_fast: saturating conversion to [lo, hi] (a range inside int32)."""
    cdef IntParams p
    p.lo = <float>lo
    p.hi_over = <float>(<double>hi + 1.0)
    p.hi_safe = <float>hi if <double>(<float>hi) <= <double>hi else nextafterf(<float>hi, 0)
    p.ihi = hi
    p.rint = mode == RM_RINT
    p.trunc = mode == RM_TRUNC
    p.floor = mode == RM_FLOOR
    p.ceil = mode == RM_CEIL
    p.round = mode == RM_ROUND
    p.odd = mode == RM_ODD
    return p

cdef inline float round_f32_integral(float x, IntParams p) noexcept nogil:
    """round_integral for an fp32 value in fp32 arithmetic (every step exact). Only rintf is used
    as a rounding primitive (GCC vectorises it under the default -ftrapping-math, unlike
    truncf/floorf/ceilf); the others are rintf plus a correction of one. All candidates are
    computed and the mode's one selected, so loops stay branch-free."""
    cdef float one = 1.0
    cdef float r = rintf(x)                  # |x| >= 2^23 (and inf, NaN): r == x, no correction
    cdef float fl = r - sel_f32(r > x, one, 0)
    cdef float ce = r + sel_f32(r < x, one, 0)
    cdef float t = sel_f32(x < 0, ce, fl)
    cdef float d = x - t                     # exact
    cdef float away = t + copysignf(one, x)  # next integer away from zero
    cdef float h = t * <float>0.5            # integral iff t is even
    r = sel_f32(p.trunc, t, r)
    r = sel_f32(p.floor, fl, r)
    r = sel_f32(p.ceil, ce, r)
    r = sel_f32(p.round, sel_f32(fabsf(d) >= <float>0.5, away, t), r)
    r = sel_f32(p.odd, sel_f32((d != 0) & (rintf(h) == h), away, t), r)
    return r

cdef inline int32_t f32_to_int_fast(float x, IntParams p) noexcept nogil:
    """to_int(x, mode, lo, hi, sat=True) for fp32 x, the mode and range of p; NaN gives 0."""
    cdef float r = round_f32_integral(x, p)
    cdef float c
    r = sel_f32(r == r, r, <float>0.0)
    c = sel_f32(r < p.lo, p.lo, r)
    c = sel_f32(c > p.hi_safe, p.hi_safe, c)     # now exactly convertible
    return <int32_t>sel_u32(r >= p.hi_over, <uint32_t>p.ihi, <uint32_t>(<int32_t>c))

cdef inline int32_t f32_to_int_near_small(float x, float lo, float hi, uint32_t ties_away) noexcept nogil:
    """to_int(x, RM_RINT or RM_ROUND (ties_away=1), lo, hi, sat=True) for a range exact in fp32
    (8/16-bit targets): the common cases, in a handful of vector operations."""
    cdef float r = rintf(x)
    cdef float d = x - r                     # exact; +-0.5 exactly at a tie
    r = sel_f32(ties_away & (fabsf(d) == <float>0.5), x + copysignf(<float>0.5, x), r)   # x + 0.5 exact here
    r = sel_f32(r == r, r, <float>0.0)       # NaN -> 0
    r = lo if r < lo else r
    r = hi if r > hi else r
    return <int32_t>r

cdef inline int32_t f32_to_int_sat(float x, int mode, int32_t lo, int32_t hi) noexcept nogil:
    """to_int(x, mode, lo, hi, sat=True) for fp32 x and a range inside int32."""
    return f32_to_int_fast(x, int_params(mode, lo, hi))
