# cython: language_level=3
"""Kernel of npusim.indexer_compress_epilog: per-128-block FP8 quantization scattered into a cache.

Follows cann-recipes-infer ops/ascendc/src/indexer_compress_epilog/op_kernel/indexer_compress_epilog_base.h
(`VFProcessDynamicBlockQuant`, `VFProcessDynamicMxFp8Quant`), as written up in shared/spec/ARITHMETIC.md
section 2. Only runs on arguments npusim/indexer_compress_epilog.py has validated: C-contiguous raw
views, slots in [-1, cache rows) with no duplicate valid slot (so rows never race).
"""
from cython.parallel cimport prange
from libc.math cimport rint, fabsf
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t
from ascend_cast cimport f32_bits, bits_f32, half_to_f32, F_E4M3, F_E5M2

cdef enum:
    BLOCK = 128                     # elements per quantization block (one scale each)

cdef enum:
    MX_RULE_KERNEL = 0              # 2^(floor(log2 s) + 1): the shipped kernel's bit manipulation
    MX_RULE_CEIL = 1                # 2^ceil(log2 s): the vendor golden's intent

# fp32 bits of f32(1/FP8MAX), the kernel's INV_FP8_*_MAX_VALUE constants
cdef uint32_t INV_E4M3_MAX = 0x3b124925
cdef uint32_t INV_E5M2_MAX = 0x37924925

# fp16 -> fp32 is exact; a table makes it one load per element
cdef float HALF_LUT[65536]
cdef Py_ssize_t _h
for _h in range(65536):
    HALF_LUT[_h] = half_to_f32(<uint16_t>_h)

cdef Py_ssize_t PARALLEL_MIN_ROWS = 16   # below this a thread team costs more than it saves


cdef inline uint8_t fp8_rne(float q, bint e5m2) noexcept nogil:
    """fp32 -> fp8 code, round to nearest even, non-saturating (Cast CAST_RINT, SatMode::NO_SAT
    with CTRL[60]=0): overflow gives inf (e5m2) or NaN (e4m3fn has no inf); NaN keeps its sign.
    Equal to ascend_cast.round_to_fmt(q, F_E4M3/F_E5M2, RM_RINT, False), written for fp32 input
    so the hot loop has no 64-bit decomposition."""
    cdef uint32_t u = f32_bits(q)
    cdef uint8_t sign = <uint8_t>((u >> 24) & 0x80)
    cdef uint32_t a = u & 0x7FFFFFFF
    if e5m2:
        if a >= 0x47700000:                  # >= 61440 = midpoint 57344..65536, inf, NaN
            return sign | (0x7E if a > 0x7F800000 else 0x7C)
        if a >= 0x38800000:                  # normal: >= 2^-14; drop 21 mantissa bits, RNE
            return sign | <uint8_t>(((a + 0xFFFFF + ((a >> 21) & 1)) >> 21) - (112 << 2))
        return sign | <uint8_t>rint(<double>bits_f32(a) * 65536.0)    # subnormal unit 2^-16
    if a > 0x43E80000:                       # > 464 = midpoint 448..480 (ties go to 448), inf, NaN
        return sign | 0x7F
    if a >= 0x3C800000:                      # normal: >= 2^-6; drop 20 mantissa bits, RNE
        return sign | <uint8_t>(((a + 0x7FFFF + ((a >> 20) & 1)) >> 20) - (120 << 3))
    return sign | <uint8_t>rint(<double>bits_f32(a) * 512.0)         # subnormal unit 2^-9


cdef inline void load_block(const uint16_t* src, bint bf16, float* dst) noexcept nogil:
    cdef int j
    if bf16:
        for j in range(BLOCK):
            dst[j] = bits_f32((<uint32_t>src[j]) << 16)
    else:
        for j in range(BLOCK):
            dst[j] = HALF_LUT[src[j]]


cdef inline float mx_round_scale(float s, int rule) noexcept nogil:
    """The power-of-two rounding of an MX scale, on its fp32 bits (uint32 arithmetic wraps like the
    vector ALU). Kernel: E = bits >> 23 & 0xFF; bump = (E & 0x7FFFFF) != 0 tests the exponent, not
    the mantissa, so every normal s becomes 2^(E - 127 + 1) (exact powers of two are doubled); a NaN
    or inf s (E = 255) becomes 256 << 23 = 0x80000000 (-0.0). Ceil: exponent + (mantissa != 0),
    i.e. 2^ceil(log2 s); NaN/inf are left alone."""
    cdef uint32_t bits = f32_bits(s)
    cdef uint32_t e = (bits >> 23) & 0xFF
    if rule == MX_RULE_KERNEL:
        e = e - 127 + (1 if (e & 0x7FFFFF) != 0 else 0) + 127
        return bits_f32(e << 23)
    if e == 0xFF:
        return s
    e = e + (1 if (bits & 0x7FFFFF) != 0 else 0)
    return bits_f32(e << 23)


cdef void block_quant_row(const uint16_t* x, bint bf16, Py_ssize_t d, uint8_t* y, float* scale,
                          bint e5m2) noexcept nogil:
    """quant_mode 1 (VFProcessDynamicBlockQuant) on one row."""
    cdef float buf[BLOCK]
    cdef float coeff = bits_f32(INV_E5M2_MAX if e5m2 else INV_E4M3_MAX)
    cdef float inf = bits_f32(0x7F800000)
    cdef float amax, a, s, q
    cdef Py_ssize_t b
    cdef int j
    for b in range(d // BLOCK):
        load_block(x + b * BLOCK, bf16, buf)
        amax = 0.0
        for j in range(BLOCK):
            a = fabsf(buf[j])
            a = a if a < inf else <float>0.0         # inf and NaN lanes are masked out of the max
            amax = a if a > amax else amax
        s = amax * coeff if amax != 0 else <float>0.0
        scale[b] = s
        for j in range(BLOCK):
            q = buf[j] / s                            # IEEE; the NPU's Div is documented <= 1 ulp
            if not (q - q == 0):                      # q is inf or NaN: the kernel selects x itself
                q = buf[j]
            y[b * BLOCK + j] = fp8_rne(q, e5m2)


cdef void mx_quant_row(const uint16_t* x, bint bf16, Py_ssize_t d, uint8_t* y, uint8_t* scale,
                       bint e5m2, bint round_scale, int rule) noexcept nogil:
    """quant_mode 0 (VFProcessDynamicMxFp8Quant) on one row."""
    cdef float buf[BLOCK]
    cdef float coeff = bits_f32(INV_E5M2_MAX if e5m2 else INV_E4M3_MAX)
    cdef float fmax = <float>57344.0 if e5m2 else <float>448.0
    cdef uint8_t nan_code = 0x7E if e5m2 else 0x7F
    cdef float amax, a, s, q
    cdef bint has_nan
    cdef Py_ssize_t b
    cdef int j
    for b in range(d // BLOCK):
        load_block(x + b * BLOCK, bf16, buf)
        amax = 0.0
        has_nan = False
        for j in range(BLOCK):
            a = fabsf(buf[j])
            has_nan = has_nan | (a != a)
            amax = a if a > amax else amax
        if has_nan:
            amax = bits_f32(0x7FC00000)              # assumed: vector max propagates NaN
        s = amax if not (amax < <float>1e-4) else <float>1e-4     # Maxs(amax, 1e-4); NaN stays
        s = s * coeff
        if round_scale:
            s = mx_round_scale(s, rule)
        scale[b] = <uint8_t>(f32_bits(s) >> 23)      # u32 -> u8 without saturation keeps the low byte
        for j in range(BLOCK):
            q = buf[j] / s
            q = -fmax if q < -fmax else q            # Maxs / Mins clamp; NaN passes through
            q = fmax if q > fmax else q
            y[b * BLOCK + j] = nan_code if q != q else fp8_rne(q, e5m2)


def indexer_compress_epilog_kernel(const uint16_t[:, ::1] x, bint x_bf16, const int32_t[::1] slot_mapping,
                                   uint8_t[:, ::1] cache, uint8_t[:, ::1] scale_bytes, int cache_fmt,
                                   int quant_mode, bint round_scale, int mx_rule):
    """Quantize each row i of x whose slot_mapping[i] != -1 into cache[slot] and its scales into
    scale_bytes[slot] (fp32 scales as 4 bytes each in mode 1, e8m0 bytes in mode 0).
    cache_fmt: F_E4M3 or F_E5M2 (ascend_cast codes); quant_mode 1 or 0."""
    cdef Py_ssize_t T = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t i
    cdef int32_t slot
    cdef bint e5m2 = cache_fmt == F_E5M2
    cdef bint serial = T < PARALLEL_MIN_ROWS
    if T == 0:
        return
    if quant_mode == 1:
        if serial:
            for i in range(T):
                slot = slot_mapping[i]
                if slot >= 0:
                    block_quant_row(&x[i, 0], x_bf16, d, &cache[slot, 0], <float*>&scale_bytes[slot, 0], e5m2)
        else:
            for i in prange(T, nogil=True, schedule="static"):
                slot = slot_mapping[i]
                if slot >= 0:
                    block_quant_row(&x[i, 0], x_bf16, d, &cache[slot, 0], <float*>&scale_bytes[slot, 0], e5m2)
    else:
        if serial:
            for i in range(T):
                slot = slot_mapping[i]
                if slot >= 0:
                    mx_quant_row(&x[i, 0], x_bf16, d, &cache[slot, 0], &scale_bytes[slot, 0], e5m2,
                                 round_scale, mx_rule)
        else:
            for i in prange(T, nogil=True, schedule="static"):
                slot = slot_mapping[i]
                if slot >= 0:
                    mx_quant_row(&x[i, 0], x_bf16, d, &cache[slot, 0], &scale_bytes[slot, 0], e5m2,
                                 round_scale, mx_rule)


def fp8_codes(const float[::1] q, int cache_fmt):
    """fp8 codes of fp32 values with the kernel's cast (RNE, non-saturating): a test hook."""
    import numpy as np
    out = np.empty(q.shape[0], dtype=np.uint8)
    cdef uint8_t[::1] o = out
    cdef Py_ssize_t i
    cdef bint e5m2 = cache_fmt == F_E5M2
    for i in range(q.shape[0]):
        o[i] = fp8_rne(q[i], e5m2)
    return out
