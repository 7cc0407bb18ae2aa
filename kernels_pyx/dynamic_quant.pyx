# cython: language_level=3
"""Per-token dynamic quantization rows: the kernel behind npusim.dynamic_quant.

npusim/dynamic_quant.py validates everything (dtypes, shapes, group_index) and passes raw views:
x and smooth as uint16 bit patterns (fp16 or bf16), y as one byte per element. Arithmetic per
family follows shared/spec/ARITHMETIC.md section 1 (citations there):
  FAM_A2    A2/A3 dynamic_quant / dynamic_quant_v2 (1.1 symmetric, 1.2 asymmetric)
  FAM_950   Ascend 950 arch35 regbase (1.3)
  FAM_310P  Atlas inference / training DAV_2002 / DAV_1001 (1.4), symmetric, fp16, int8 only
Row maxima are taken on bit patterns (|v| bits as unsigned, or an order-preserving signed key),
which is exact, vectorises, and makes any NaN in a row win (NaN propagation: see the module doc).
"""
from cython.parallel cimport prange, threadid
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int8_t, int32_t
from libc.math cimport rintf, roundf
from ascend_cast cimport *

cdef enum:
    FAM_A2 = 0
    FAM_950 = 1
    FAM_310P = 2

cdef enum:
    OUT_INT = 0       # int8 value byte (int4: nibble byte, see _store_int)
    OUT_E4M3 = 1
    OUT_E5M2 = 2
    OUT_HIF8 = 3      # HiFloat8 code byte

cdef float[65536] HALF_TABLE          # fp16 bits -> fp32, filled once at import
cdef uint32_t ABS_MASK = 0x7FFFFFFF
cdef uint32_t INF_BITS = 0x7F800000
cdef float HALF_MAX = 65504.0


cdef void _fill_half_table() noexcept nogil:
    cdef int i
    for i in range(65536):
        HALF_TABLE[i] = half_to_f32(<uint16_t>i)

_fill_half_table()


cdef inline float _dec(uint16_t h, bint is_bf16) noexcept nogil:
    if is_bf16:
        return bits_f32((<uint32_t>h) << 16)
    return HALF_TABLE[h]


cdef inline void _load_row(const uint16_t* xr, const float* sr, float* v, Py_ssize_t H,
                           bint is_bf16) noexcept nogil:
    """v = f32(x) [* f32(smooth)] : exact widening, then one RNE fp32 multiply."""
    cdef Py_ssize_t j
    if is_bf16:
        if sr != NULL:
            for j in range(H):
                v[j] = bits_f32((<uint32_t>xr[j]) << 16) * sr[j]
        else:
            for j in range(H):
                v[j] = bits_f32((<uint32_t>xr[j]) << 16)
    else:
        if sr != NULL:
            for j in range(H):
                v[j] = HALF_TABLE[xr[j]] * sr[j]
        else:
            for j in range(H):
                v[j] = HALF_TABLE[xr[j]]


cdef inline float _absmax(const float* v, Py_ssize_t H) noexcept nogil:
    """max |v_j|, exact; any NaN in the row gives NaN (NaN bits sort above inf)."""
    cdef uint32_t m = 0, b
    cdef Py_ssize_t j
    for j in range(H):
        b = f32_bits(v[j]) & ABS_MASK
        m = b if b > m else m
    if m > INF_BITS:
        return bits_f32(0x7FC00000)
    return bits_f32(m)


cdef inline int32_t _key(float f) noexcept nogil:
    """Order-preserving signed key of a float (NaN: beyond +-inf by its sign)."""
    cdef int32_t i = <int32_t>f32_bits(f)
    return i ^ ((i >> 31) & 0x7FFFFFFF)


cdef inline float _unkey(int32_t k) noexcept nogil:
    return bits_f32(<uint32_t>(k ^ ((k >> 31) & 0x7FFFFFFF)))


cdef inline void _minmax(const float* v, Py_ssize_t H, float* mx, float* mn) noexcept nogil:
    """Exact row max and min; NaN anywhere makes max or min NaN (canonicalised below)."""
    cdef int32_t kmax = -2147483647 - 1, kmin = 2147483647, k
    cdef Py_ssize_t j
    for j in range(H):
        k = _key(v[j])
        kmax = k if k > kmax else kmax
        kmin = k if k < kmin else kmin
    mx[0] = _unkey(kmax)
    mn[0] = _unkey(kmin)
    if mx[0] != mx[0] or mn[0] != mn[0]:
        mx[0] = bits_f32(0x7FC00000)
        mn[0] = mx[0]


cdef inline void _store_int(const float* v, float mul, uint8_t* yr, Py_ssize_t H, float lo, float hi,
                            bint away, bint nibble) noexcept nogil:
    """y = saturate(round(f32(v * mul))) in [lo, hi], NaN -> 0 (Cast to int; NaN's result is undocumented).
    Rounds half to even (CAST_RINT), or half away from zero (CAST_ROUND, 310P; mul must be 1 there).
    int4 (nibble): the byte holds the value's low 4 bits, as ml_dtypes.int4 stores it.
    Separate loops per mode so that each one vectorises."""
    cdef Py_ssize_t j
    cdef float t
    if away:
        for j in range(H):
            t = roundf(v[j])
            t = t if t == t else <float>0
            t = lo if t < lo else t
            t = hi if t > hi else t
            yr[j] = <uint8_t>(<int8_t>(<int32_t>t))
    elif nibble:
        for j in range(H):
            t = rintf(v[j] * mul)
            t = t if t == t else <float>0
            t = lo if t < lo else t
            t = hi if t > hi else t
            yr[j] = <uint8_t>((<int32_t>t) & 0xF)
    else:
        for j in range(H):
            t = rintf(v[j] * mul)
            t = t if t == t else <float>0
            t = lo if t < lo else t
            t = hi if t > hi else t
            yr[j] = <uint8_t>(<int8_t>(<int32_t>t))


cdef inline void _store_fp8(const float* v, uint8_t* yr, Py_ssize_t H, int fmt) noexcept nogil:
    """f32 -> fp8 Cast CAST_RINT with SatMode::SAT (ARITHMETIC 1.3)."""
    cdef Py_ssize_t j
    for j in range(H):
        yr[j] = <uint8_t>round_to_fmt(<double>v[j], fmt, RM_RINT, True)


cdef inline void _store_hif8(const float* v, uint8_t* yr, Py_ssize_t H) noexcept nogil:
    """f32 -> hifloat8 Cast CAST_ROUND with SatMode::SAT (arch35 castTraitF32toh8)."""
    cdef Py_ssize_t j
    for j in range(H):
        yr[j] = round_to_hif8(<double>v[j], True)


cdef void _row(const uint16_t* xr, const float* sr, float* v, uint8_t* yr, float* scale_out,
               float* offset_out, Py_ssize_t H, bint is_bf16, int fam, bint symmetric,
               int scale_mode, float dt_max, float inv_dt, float rng, float inv_rng,
               int out_kind, float lo, float hi, bint nibble) noexcept nogil:
    cdef float m, q, s, mx, mn, off, inv, hq
    cdef float mul = 1.0                                 # final multiply fused into the int store
    cdef Py_ssize_t j
    _load_row(xr, sr, v, H, is_bf16)
    if symmetric:
        m = _absmax(v, H)
        if fam == FAM_A2:
            q = dt_max / m                               # vector Div 127/m (keys 2/3/7/10/100/0/1) or scalar
            if out_kind == OUT_INT:
                mul = q                                  # y_f = f32(v * q), rounded in _store_int
            else:
                for j in range(H):
                    v[j] = v[j] * q
            if scale_mode == 0:
                s = m * inv_dt                           # keys 2/3/10/100: m * f32(1/127)
            else:
                s = <float>1.0 / q                       # keys 0/1/6/7/8: 1 / q
        elif fam == FAM_950:
            s = m * inv_dt
            for j in range(H):
                v[j] = v[j] / s                          # MicroAPI::Div, emulated IEEE (hw: <= 1 ulp)
        else:                                            # 310P / 910: fp16 arithmetic
            q = 0.0 if m <= <float>1e-12 else dt_max / m
            hq = <float>half_round(<double>q)            # Muls in fp16: q rounded to half first,
            hq = HALF_MAX if hq > HALF_MAX else hq       # saturating (m < 127/65504): these chips have only
                                                         # the saturation overflow mode (aclrtFloatOverflowMode)
            for j in range(H):
                v[j] = <float>half_round(<double>v[j] * <double>hq)
            s = m * inv_dt
        scale_out[0] = s if s == s else bits_f32(0x7FC00000)
        if m == 0.0:                                     # all-zero row: 0*inf / 0/0 is NaN; emit 0
            mul = 1.0
            for j in range(H):
                v[j] = 0.0
    else:
        _minmax(v, H, &mx, &mn)
        if fam == FAM_A2:
            s = (mx - mn) / rng                          # scalar GetMax(s, 1e-12f) = s > 1e-12f ? s : 1e-12f,
            s = s if s > <float>1e-12 else <float>1e-12  # so a NaN s (NaN row, inf - inf) gives 1e-12
            off = dt_max - mx / s
            inv = <float>1.0 / s
            for j in range(H):
                v[j] = v[j] * inv
            for j in range(H):
                v[j] = v[j] + off                        # Muls then Adds: two roundings
        else:                                            # 950: no clamp, y = v/scale + offset
            s = (mx - mn) * inv_rng
            off = -(mx / s) + dt_max
            for j in range(H):
                v[j] = v[j] / s
            for j in range(H):
                v[j] = v[j] + off
        scale_out[0] = s if s == s else bits_f32(0x7FC00000)        # NaN sign is unspecified: +qNaN
        offset_out[0] = off if off == off else bits_f32(0x7FC00000)
        if fam == FAM_950 and mx == 0.0 and mn == 0.0:   # all-zero row: 0/0 -> emit 0 (documented);
                                                         # A2/A3 clamps scale to 1e-12: y = 127 by formula
            for j in range(H):
                v[j] = 0.0
    if out_kind == OUT_INT:
        _store_int(v, mul, yr, H, lo, hi, fam == FAM_310P, nibble)
    elif out_kind == OUT_HIF8:
        _store_hif8(v, yr, H)
    else:
        _store_fp8(v, yr, H, F_E4M3 if out_kind == OUT_E4M3 else F_E5M2)


def quant_rows(const uint16_t[:, ::1] x, bint is_bf16, const float[:, ::1] smooth,
               const int32_t[::1] expert_of_row, uint8_t[:, ::1] y, float[::1] scale,
               float[::1] offset, int fam, bint symmetric, int scale_mode, float dt_max,
               float inv_dt, float rng, float inv_rng, int out_kind, float lo, float hi,
               bint nibble, int num_threads):
    """Quantize every row of x ([R, H] fp16/bf16 bits) into y ([R, H] bytes), scale[R], offset[R].

    smooth: [E, H] fp32 (exactly widened; E = 0 means no smooth); expert_of_row: [R] smooth row
    per x row (length 0: row 0 for every row). offset has R entries (scratch when symmetric).
    Constants: dt_max = 127/7/448/57344 (offset constant for asymmetric), inv_dt = f32(1/dt_max),
    rng = 255/15 (A2 asymmetric divisor), inv_rng = f32(1/R) (950 asymmetric multiplier).
    """
    cdef Py_ssize_t R = x.shape[0], H = x.shape[1], r
    cdef bint has_smooth = smooth.shape[0] > 0
    cdef bint moe = expert_of_row.shape[0] > 0
    cdef float* buf
    cdef const float* sr
    cdef int nt = num_threads if num_threads > 0 else 1
    if R == 0 or H == 0:
        return
    import numpy as np
    work = np.empty((nt, H), dtype=np.float32)     # one fp32 row buffer per thread
    cdef float[:, ::1] w = work
    cdef int tid
    with nogil:
        for r in prange(R, schedule="static", num_threads=nt):
            tid = threadid()
            buf = &w[tid, 0]
            sr = NULL
            if has_smooth:
                sr = &smooth[expert_of_row[r] if moe else 0, 0]
            _row(&x[r, 0], sr, buf, &y[r, 0], &scale[r], &offset[r], H, is_bf16, fam, symmetric,
                 scale_mode, dt_max, inv_dt, rng, inv_rng, out_kind, lo, hi, nibble)
