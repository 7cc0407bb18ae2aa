# cython: language_level=3
"""Kernel of aclnnFakeQuantPerChannelAffineCachemask (A2/A3 DAV_2201 kernel, tiling keys 1 and 2).

Arithmetic per element (ARITHMETIC.md section 3.2; hicann/ops-nn
quant/fake_quant_affine_cachemask/op_kernel/fake_quant_affine_cachemask_fp32.h / _fp16.h), channel c:
    inv = f32(1 / s)                       scalar division
    t   = f32(x * inv)                     Muls
    r   = CAST_RINT(t) -> int32            saturating; NaN -> 0 (npusim convention)
    t2  = f32(float(r) + float(zp))        Cast int32->float, Adds
    mask: fp32 kernel  t2 >= float(qmin) and t2 <= float(qmax)
          fp16 kernel  half(t2) >= half(qmin) and half(t2) <= half(qmax); on products whose only
                       overflow mode is saturation (Atlas training) these casts saturate to +-65504
    q   = CAST_RINT(t2) -> int32, clamped to [qmin, qmax] (int32 Maxs/Mins)
    c   = CAST_ROUND(q) -> float;  c = 0 where x is NaN
    y   = f32(f32(c - float(zp)) * s)      fp16 kernel: then CAST_RINT to half
qmin/qmax arrive already truncated to int32, as the kernel's tiling read does.

The Python layer (npusim/fake_quant.py) validates, makes the inputs contiguous and views the tensor
as [outer, channels, inner]; this module only sees raw bytes.
"""
from cython.parallel cimport prange
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, INT32_MIN, INT32_MAX
from libc.math cimport rintf
from ascend_cast cimport *

cdef Py_ssize_t PARALLEL_MIN = 1 << 16   # below this a thread team costs more than it saves
cdef float TWO31 = 2147483648.0          # float(INT32_MAX) and -float(INT32_MIN)
cdef float ZERO = 0.0
cdef float ONE = 1.0


cdef inline float _f32_of_int_round(int64_t v) noexcept nogil:
    """Cast int -> float with CAST_ROUND (nearest, ties away from zero); exact when |v| <= 2^24."""
    return bits_f32(round_to_fmt(<double>v, F_FP32, RM_ROUND, False))


cdef inline float _h2f(uint16_t h) noexcept nogil:
    return bits_f32(half_bits_to_f32_bits(h))


cdef NarrowParams F16_RINT = narrow_params(F_FP16, RM_RINT, False)   # CAST_RINT to half, IEEE overflow


cdef inline uint16_t _f2h(float v) noexcept nogil:
    return <uint16_t>f32_narrow_fast(f32_bits(v), F16_RINT)


cdef inline float _fast_elem(float xv, float inv, float zpf, float s, float lo, float hi,
                             uint8_t* mk) noexcept nogil:
    """One element when lo/hi bound an exactly representable range (see `fast` below).

    float(sat_int32(rint(t))) == clamp(rint(t), -2^31, 2^31), and clamping the integral t2 in
    float equals the int32 Maxs/Mins followed by an exact Cast. Branch-free so it vectorises."""
    cdef float t = xv * inv
    cdef float fr = rintf(t)
    cdef float t2, c
    fr = fr if fr == fr else ZERO
    fr = TWO31 if fr > TWO31 else fr
    fr = -TWO31 if fr < -TWO31 else fr
    t2 = fr + zpf
    mk[0] = (t2 >= lo) & (t2 <= hi)
    c = lo if t2 < lo else t2
    c = hi if c > hi else c
    c = c if xv == xv else ZERO
    return (c - zpf) * s


cdef inline float _load(const uint8_t* xb, Py_ssize_t i, bint x_half) noexcept nogil:
    return _h2f((<const uint16_t*>xb)[i]) if x_half else (<const float*>xb)[i]


cdef inline void _store(uint8_t* yb, Py_ssize_t i, float v, bint half_kernel, bint out_half) noexcept nogil:
    # the fp16 kernel ends with CAST_RINT to half; an fp16 `out` of the fp32 kernel gets the
    # aclnn Cast (same rounding); an fp32 `out` of the fp16 kernel widens exactly
    if out_half:
        (<uint16_t*>yb)[i] = _f2h(v)
    elif half_kernel:
        (<float*>yb)[i] = _h2f(_f2h(v))
    else:
        (<float*>yb)[i] = v


cdef inline void _row_fast(const uint8_t* xb, uint8_t* yb, uint8_t* m, Py_ssize_t start, Py_ssize_t n,
                           float inv, float zpf, float s, float lo, float hi,
                           bint x_half, bint half_kernel, bint out_half) noexcept nogil:
    """n elements from `start`, all of one channel. The dtype cases are separate loops (no
    control flow inside) so that the compiler vectorises the common ones."""
    cdef Py_ssize_t i
    cdef const float* xf = <const float*>xb
    cdef const uint16_t* xh = <const uint16_t*>xb
    if not (x_half or half_kernel or out_half):
        for i in range(start, start + n):
            (<float*>yb)[i] = _fast_elem(xf[i], inv, zpf, s, lo, hi, &m[i])
    elif x_half and out_half:
        for i in range(start, start + n):
            (<uint16_t*>yb)[i] = _f2h(_fast_elem(_h2f(xh[i]), inv, zpf, s, lo, hi, &m[i]))
    else:
        for i in range(start, start + n):
            _store(yb, i, _fast_elem(_load(xb, i, x_half), inv, zpf, s, lo, hi, &m[i]), half_kernel, out_half)


cdef inline void _row_fast_channels(const uint8_t* xb, uint8_t* yb, uint8_t* m, Py_ssize_t start,
                                    Py_ssize_t n, const float* inv, const float* zpf, const float* s,
                                    float lo, float hi, bint x_half, bint half_kernel,
                                    bint out_half) noexcept nogil:
    """n elements from `start`, element k of channel k (channel axis innermost)."""
    cdef Py_ssize_t k
    cdef const float* xf = <const float*>xb + start
    cdef const uint16_t* xh = <const uint16_t*>xb + start
    cdef uint8_t* mk = m + start
    if not (x_half or half_kernel or out_half):
        for k in range(n):
            (<float*>yb + start)[k] = _fast_elem(xf[k], inv[k], zpf[k], s[k], lo, hi, &mk[k])
    elif x_half and out_half:
        for k in range(n):
            (<uint16_t*>yb + start)[k] = _f2h(_fast_elem(_h2f(xh[k]), inv[k], zpf[k], s[k], lo, hi, &mk[k]))
    else:
        for k in range(n):
            _store(yb, start + k, _fast_elem(_load(xb, start + k, x_half), inv[k], zpf[k], s[k], lo, hi,
                                             &mk[k]), half_kernel, out_half)


cdef inline float _elem(float xv, float inv, float zpf, float s, int64_t qmin, int64_t qmax,
                        float lo, float hi, bint half_kernel, bint saturate, uint8_t* mk) noexcept nogil:
    """One element, exact for any quant range and both kernels; returns the fp32 value before
    the fp16 kernel's final CAST_RINT. lo/hi: the mask bounds as the kernel holds them; saturate:
    the mask's half cast saturates (the product's only overflow mode)."""
    cdef float t = xv * inv
    cdef int64_t r = to_int32(t, RM_RINT)
    cdef float t2 = (<float>r) + zpf      # int32 -> float conversion in C: nearest-even
    cdef float h
    cdef int64_t q
    cdef float c
    if half_kernel:
        h = half_to_f32(<uint16_t>round_to_fmt(t2, F_FP16, RM_RINT, saturate))
        mk[0] = (h >= lo) & (h <= hi)
    else:
        mk[0] = (t2 >= lo) & (t2 <= hi)
    q = to_int32(t2, RM_RINT)
    if q < qmin:
        q = qmin
    if q > qmax:
        q = qmax
    c = _f32_of_int_round(q)
    if xv != xv:
        c = ZERO
    return (c - zpf) * s


cdef inline void _row_generic(const uint8_t* xb, uint8_t* yb, uint8_t* m, Py_ssize_t start, Py_ssize_t n,
                              const float* inv, const float* zpf, const float* s,
                              Py_ssize_t c0, Py_ssize_t cstep, int64_t qmin, int64_t qmax, float lo, float hi,
                              bint x_half, bint half_kernel, bint out_half, bint saturate) noexcept nogil:
    """Elements start, start+1, ..., n of them; the channel of element k is c0 + k*cstep."""
    cdef Py_ssize_t k, i, c
    cdef float xv, v
    for k in range(n):
        i = start + k
        c = c0 + k * cstep
        xv = _load(xb, i, x_half)
        _store(yb, i, _elem(xv, inv[c], zpf[c], s[c], qmin, qmax, lo, hi, half_kernel, saturate, &m[i]),
               half_kernel, out_half)


def fake_quant_per_channel(const uint8_t[::1] x, const float[::1] scale, const int32_t[::1] zero_point,
                           uint8_t[::1] out, uint8_t[::1] mask,
                           Py_ssize_t outer, Py_ssize_t channels, Py_ssize_t inner,
                           int64_t qmin, int64_t qmax, bint x_half, bint half_kernel, bint out_half,
                           bint saturate):
    """Fake-quantize x viewed as [outer, channels, inner] (channel = middle axis) into out and mask.

    x: raw bytes of fp32 or fp16 (x_half) data; scale: fp32 per channel (fp16 scales widened
    exactly); out: raw bytes of fp32 or fp16 (out_half); mask: one byte per element (0/1).
    half_kernel selects the fp16 kernel (tiling key 2: x and scale both fp16), whose mask compares
    in half precision. qmin/qmax: the int32 values the kernel reads from its tiling data.
    saturate: the product's only overflow mode is saturation (Atlas training): the mask's half casts
    give +-65504 instead of +-inf (out is the caller's to clip).
    """
    cdef Py_ssize_t total = outer * channels * inner
    if total == 0:
        return
    cdef float[::1] inv_v = _floats(channels)
    cdef float[::1] zpf_v = _floats(channels)
    cdef float* inv = &inv_v[0]
    cdef float* zpf = &zpf_v[0]
    cdef const float* s = &scale[0]
    cdef Py_ssize_t c, rr, nrows
    cdef float lo, hi
    for c in range(channels):
        inv[c] = ONE / s[c]
        zpf[c] = <float>zero_point[c]
    if half_kernel:   # the kernel duplicates (half)(float)qmin into a half tensor
        # (saturating too under saturation mode: assumed for this scalar cast, which matters only when
        # the whole quant range lies beyond +-65504)
        lo = half_to_f32(<uint16_t>round_to_fmt(<float>qmin, F_FP16, RM_RINT, saturate))
        hi = half_to_f32(<uint16_t>round_to_fmt(<float>qmax, F_FP16, RM_RINT, saturate))
    else:
        lo = <float>qmin
        hi = <float>qmax
    # fast path: float compares/clamps are exact while qmin-1 .. qmax+1 are representable in the
    # compare's precision (fp32: 2^24; the fp16 kernel compares half(t2): 2047); there a half(t2) past
    # +-65504, inf or saturated, is outside the range either way
    cdef int64_t exact = 2047 if half_kernel else 16777216
    cdef bint fast = -exact <= qmin <= exact and -exact <= qmax <= exact
    cdef const uint8_t* xb = &x[0]
    cdef uint8_t* yb = &out[0]
    cdef uint8_t* mb = &mask[0]
    # rows: [outer*channels] rows of `inner` elements sharing one channel, or, when the channel
    # axis is innermost, [outer] rows of `channels` elements with per-element channels
    cdef bint by_channel_rows = inner > 1
    nrows = outer * channels if by_channel_rows else outer
    with nogil:
        if total < PARALLEL_MIN:
            for rr in range(nrows):
                _one_row(rr, by_channel_rows, fast, xb, yb, mb, channels, inner, inv, zpf, s,
                         qmin, qmax, lo, hi, x_half, half_kernel, out_half, saturate)
        else:
            for rr in prange(nrows, schedule="static"):
                _one_row(rr, by_channel_rows, fast, xb, yb, mb, channels, inner, inv, zpf, s,
                         qmin, qmax, lo, hi, x_half, half_kernel, out_half, saturate)


cdef inline void _one_row(Py_ssize_t rr, bint by_channel_rows, bint fast, const uint8_t* xb, uint8_t* yb,
                          uint8_t* mb, Py_ssize_t channels, Py_ssize_t inner, const float* inv,
                          const float* zpf, const float* s, int64_t qmin, int64_t qmax, float lo, float hi,
                          bint x_half, bint half_kernel, bint out_half, bint saturate) noexcept nogil:
    cdef Py_ssize_t c
    if by_channel_rows:
        c = rr % channels
        if fast:
            _row_fast(xb, yb, mb, rr * inner, inner, inv[c], zpf[c], s[c], lo, hi, x_half, half_kernel, out_half)
        else:
            _row_generic(xb, yb, mb, rr * inner, inner, inv, zpf, s, c, 0, qmin, qmax, lo, hi,
                         x_half, half_kernel, out_half, saturate)
    elif fast:
        _row_fast_channels(xb, yb, mb, rr * channels, channels, inv, zpf, s, lo, hi, x_half, half_kernel,
                           out_half)
    else:
        _row_generic(xb, yb, mb, rr * channels, channels, inv, zpf, s, 0, 1, qmin, qmax, lo, hi,
                     x_half, half_kernel, out_half, saturate)


def _floats(Py_ssize_t n):
    import numpy as np
    return np.empty(max(n, 1), dtype=np.float32)
