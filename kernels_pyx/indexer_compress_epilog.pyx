# cython: language_level=3
"""Kernel of npusim.indexer_compress_epilog: per-128-block FP8 quantization scattered into a cache.

Follows cann-recipes-infer ops/ascendc/src/indexer_compress_epilog/op_kernel/indexer_compress_epilog_base.h
(`VFProcessDynamicBlockQuant`, `VFProcessDynamicMxFp8Quant`), as written up in shared/spec/ARITHMETIC.md
section 2. Only runs on arguments npusim/indexer_compress_epilog.py has validated: C-contiguous raw
views, slots in [-1, cache rows) with no duplicate valid slot (so rows never race).
"""
from cython.parallel cimport prange
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t
from ascend_cast cimport (f32_bits, bits_f32, half_to_f32, F_E4M3, F_E5M2, Fp8RneParams, fp8_rne_params,
                          f32_to_fp8_rne, round_to_hif8, sel_u32, sel_f32)

cdef enum:
    BLOCK = 128                     # elements per quantization block (one scale each)

cdef enum:
    MX_RULE_KERNEL = 0              # 2^(floor(log2 s) + 1): the shipped kernel's bit manipulation
    MX_RULE_CEIL = 1                # 2^ceil(log2 s): the vendor golden's intent

# fp32 bits of f32(1/FP8MAX), the kernel's INV_FP8_*_MAX_VALUE constants
cdef uint32_t INV_E4M3_MAX = 0x3b124925
cdef uint32_t INV_E5M2_MAX = 0x37924925

# fp16 -> fp32 is exact; a table makes it one load per element
cdef uint32_t HALF_LUT[65536]
cdef Py_ssize_t _h
for _h in range(65536):
    HALF_LUT[_h] = f32_bits(half_to_f32(<uint16_t>_h))

cdef Py_ssize_t PARALLEL_MIN_ROWS = 16   # below this a thread team costs more than it saves


cdef inline Fp8RneParams fp8_params(bint e5m2) noexcept nogil:
    """Cast CAST_RINT with SatMode::NO_SAT under CTRL[60]=0: nearest-even, overflow to inf (e5m2) or
    NaN (e4m3fn has no inf)."""
    return fp8_rne_params(F_E5M2 if e5m2 else F_E4M3, False)


cdef inline uint32_t fp8_encode32(uint32_t q, Fp8RneParams p, bint nan_positive) noexcept nogil:
    """fp8 code of the fp32 bit pattern q (the shared Ascend cast), in a 32-bit lane; a NaN keeps its
    sign unless nan_positive (MX mode stores the format's positive NaN code)."""
    cdef uint32_t code = f32_to_fp8_rne(q, p)
    # sel_u32, not a branch: AVX2 loops over this stay vectorised (ascend_cast.pxd, f32_to_fp8_rne)
    return sel_u32(nan_positive & ((q & 0x7FFFFFFF) > 0x7F800000), p.nan_code, code)


cdef inline void load_block(const uint16_t* src, bint bf16, uint32_t* dst) noexcept nogil:
    """fp32 bit patterns of BLOCK fp16/bf16 values (exact widening)."""
    cdef int j
    if bf16:
        for j in range(BLOCK):
            dst[j] = (<uint32_t>src[j]) << 16
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
    cdef uint32_t xb[BLOCK]
    cdef float* xf = <float*>xb
    cdef uint32_t codes[BLOCK]
    cdef Fp8RneParams p = fp8_params(e5m2)
    cdef float coeff = bits_f32(INV_E5M2_MAX if e5m2 else INV_E4M3_MAX)
    cdef float s
    cdef uint32_t a, amax, q
    cdef Py_ssize_t b
    cdef int j
    for b in range(d // BLOCK):
        load_block(x + b * BLOCK, bf16, xb)
        # |x| bit patterns order like the values; inf and NaN lanes are masked out of the max
        amax = 0
        for j in range(BLOCK):
            a = xb[j] & 0x7FFFFFFF
            a = a & (0u - <uint32_t>(a < 0x7F800000))
            amax = a if a > amax else amax
        s = bits_f32(amax) * coeff if amax != 0 else <float>0.0
        scale[b] = s
        # codes stay in 32-bit lanes here and are narrowed in a loop of their own: with a uint8 store
        # in this loop GCC narrows every select to bytes and spends most of the time packing (AVX2)
        for j in range(BLOCK):
            q = f32_bits(xf[j] / s)               # IEEE; the NPU's Div is documented <= 1 ulp
            codes[j] = fp8_encode32(sel_u32((q & 0x7FFFFFFF) < 0x7F800000, q, xb[j]), p, False)   # inf/NaN: x
        for j in range(BLOCK):
            y[b * BLOCK + j] = <uint8_t>codes[j]


cdef void mx_quant_row(const uint16_t* x, bint bf16, Py_ssize_t d, uint8_t* y, uint8_t* scale,
                       bint e5m2, bint round_scale, int rule) noexcept nogil:
    """quant_mode 0 (VFProcessDynamicMxFp8Quant) on one row."""
    cdef uint32_t xb[BLOCK]
    cdef float* xf = <float*>xb
    cdef uint32_t codes[BLOCK]
    cdef Fp8RneParams p = fp8_params(e5m2)
    cdef float coeff = bits_f32(INV_E5M2_MAX if e5m2 else INV_E4M3_MAX)
    cdef float fmax = <float>57344.0 if e5m2 else <float>448.0
    cdef float s, q
    cdef uint32_t a, amax
    cdef Py_ssize_t b
    cdef int j
    for b in range(d // BLOCK):
        load_block(x + b * BLOCK, bf16, xb)
        amax = 0                                  # NaN bit patterns exceed inf's: a NaN wins the max
        for j in range(BLOCK):
            a = xb[j] & 0x7FFFFFFF
            amax = a if a > amax else amax
        if amax > 0x7F800000:
            amax = 0x7FC00000                     # assumed: the vector max propagates NaN
        s = bits_f32(amax)
        s = s if not (s < <float>1e-4) else <float>1e-4      # Maxs(amax, 1e-4); NaN stays
        s = s * coeff
        if round_scale:
            s = mx_round_scale(s, rule)
        scale[b] = <uint8_t>(f32_bits(s) >> 23)  # u32 -> u8 without saturation keeps the low byte
        for j in range(BLOCK):
            q = xf[j] / s
            q = sel_f32(q < -fmax, -fmax, q)      # Maxs / Mins clamp; NaN passes through
            q = sel_f32(q > fmax, fmax, q)
            codes[j] = fp8_encode32(f32_bits(q), p, True)
        for j in range(BLOCK):                    # narrowed apart, as in block_quant_row
            y[b * BLOCK + j] = <uint8_t>codes[j]


cdef void hif8_row(const uint16_t* x, bint bf16, Py_ssize_t d, uint8_t* y, float scale) noexcept nogil:
    """quant_mode 2 (VFProcessHifp8Quant): y = hif8(f32(x * scale)), CAST_ROUND with SatMode::SAT."""
    cdef uint32_t xb[BLOCK]
    cdef float* xf = <float*>xb
    cdef Py_ssize_t b
    cdef int j
    for b in range(d // BLOCK):
        load_block(x + b * BLOCK, bf16, xb)
        for j in range(BLOCK):
            y[b * BLOCK + j] = round_to_hif8(<double>(xf[j] * scale), True)


def indexer_compress_epilog_kernel(const uint16_t[:, ::1] x, bint x_bf16, const int32_t[::1] slot_mapping,
                                   uint8_t[:, ::1] cache, uint8_t[:, ::1] scale_bytes, int cache_fmt,
                                   int quant_mode, bint round_scale, int mx_rule, float hif8_scale=1.0):
    """Quantize each row i of x whose slot_mapping[i] != -1 into cache[slot] and its scales into
    scale_bytes[slot] (fp32 scales as 4 bytes each in mode 1, e8m0 bytes in mode 0; mode 2 writes only
    hifloat8 codes of x * hif8_scale). cache_fmt: F_E4M3 or F_E5M2 (ascend_cast codes; unused in mode 2)."""
    cdef Py_ssize_t T = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t i
    cdef int32_t slot
    cdef bint e5m2 = cache_fmt == F_E5M2
    cdef bint serial = T < PARALLEL_MIN_ROWS
    if T == 0:
        return
    # serial below PARALLEL_MIN_ROWS (a thread team costs more than it saves); the GIL is released either way
    with nogil:
        if serial:
            for i in range(T):
                _quant_row(i, x, x_bf16, d, slot_mapping, cache, scale_bytes, e5m2, quant_mode, round_scale, mx_rule,
                           hif8_scale)
        else:
            for i in prange(T, schedule="dynamic", chunksize=16):
                _quant_row(i, x, x_bf16, d, slot_mapping, cache, scale_bytes, e5m2, quant_mode, round_scale, mx_rule,
                           hif8_scale)


cdef inline void _quant_row(Py_ssize_t i, const uint16_t[:, ::1] x, bint x_bf16, Py_ssize_t d,
                            const int32_t[::1] slot_mapping, uint8_t[:, ::1] cache, uint8_t[:, ::1] scale_bytes,
                            bint e5m2, int quant_mode, bint round_scale, int mx_rule, float hif8_scale) noexcept nogil:
    cdef int32_t slot = slot_mapping[i]
    if slot < 0:
        return
    if quant_mode == 2:
        hif8_row(&x[i, 0], x_bf16, d, &cache[slot, 0], hif8_scale)
    elif quant_mode == 1:
        block_quant_row(&x[i, 0], x_bf16, d, &cache[slot, 0], <float*>&scale_bytes[slot, 0], e5m2)
    else:
        mx_quant_row(&x[i, 0], x_bf16, d, &cache[slot, 0], &scale_bytes[slot, 0], e5m2, round_scale, mx_rule)


def fp8_codes(const float[::1] q, int cache_fmt, bint nan_positive=False):
    """fp8 codes of fp32 values through the kernel's cast (RNE, non-saturating): a test hook."""
    import numpy as np
    cdef Py_ssize_t n = q.shape[0], i, k
    cdef int j
    out = np.empty(n, dtype=np.uint8)
    cdef uint8_t[::1] o = out
    cdef uint32_t qb[BLOCK]
    cdef uint8_t codes[BLOCK]
    cdef Fp8RneParams p = fp8_params(cache_fmt == F_E5M2)
    for i in range(0, n, BLOCK):
        k = min(BLOCK, n - i)
        memset(qb, 0, sizeof(qb))
        memcpy(qb, &q[i], k * 4)
        for j in range(BLOCK):
            codes[j] = <uint8_t>fp8_encode32(qb[j], p, nan_positive)
        memcpy(&o[i], codes, k)
    return out
