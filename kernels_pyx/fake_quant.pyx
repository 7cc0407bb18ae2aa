# cython: language_level=3
"""Kernel of aclnnFakeQuantPerChannelAffineCachemask (A2/A3 DAV_2201 kernel, tiling keys 1 and 2).

Arithmetic per element (ARITHMETIC.md section 3.2; hicann/ops-nn
quant/fake_quant_affine_cachemask/op_kernel/fake_quant_affine_cachemask_fp32.h / _fp16.h), channel c:
    inv = f32(1 / s)                       scalar division
    t   = f32(x * inv)                     Muls
    r   = CAST_RINT(t) -> int32            saturating; NaN -> 0 (npusim convention)
    t2  = f32(float(r) + float(zp))        Cast int32->float, Adds
    mask: fp32 kernel  t2 >= float(qmin) and t2 <= float(qmax)
          fp16 kernel  half(t2) >= half(qmin) and half(t2) <= half(qmax)
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


cdef inline void _row_fast(const float* x, float* y, uint8_t* m, Py_ssize_t n,
                           float inv, float zpf, float s, float lo, float hi) noexcept nogil:
    """fp32 kernel, fp32 in and out, |qmin|,|qmax| <= 2^24: every step is exact in float.

    float(sat_int32(rint(t))) == clamp(rint(t), -2^31, 2^31), and clamping the integral t2 in
    float equals the int32 Maxs/Mins followed by an exact Cast. Branch-free so it vectorises."""
    cdef Py_ssize_t i
    cdef float xv, t, fr, t2, c
    for i in range(n):
        xv = x[i]
        t = xv * inv
        fr = rintf(t)
        fr = fr if fr == fr else ZERO
        fr = TWO31 if fr > TWO31 else fr
        fr = -TWO31 if fr < -TWO31 else fr
        t2 = fr + zpf
        m[i] = (t2 >= lo) & (t2 <= hi)
        c = lo if t2 < lo else t2
        c = hi if c > hi else c
        c = c if xv == xv else ZERO
        y[i] = (c - zpf) * s


cdef inline float _elem(float xv, float inv, float zpf, float s, int64_t qmin, int64_t qmax,
                        float lo, float hi, bint half_kernel, uint8_t* mk) noexcept nogil:
    """One element, exact for any quant range and both kernels; returns the fp32 value before
    the fp16 kernel's final CAST_RINT. lo/hi: the mask bounds as the kernel holds them."""
    cdef float t = xv * inv
    cdef int64_t r = to_int32(t, RM_RINT)
    cdef float t2 = (<float>r) + zpf      # int32 -> float conversion in C: nearest-even
    cdef float h
    cdef int64_t q
    cdef float c
    if half_kernel:
        h = half_to_f32(<uint16_t>round_to_fmt(t2, F_FP16, RM_RINT, False))
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
                              bint x_half, bint half_kernel, bint out_half) noexcept nogil:
    """Elements start, start+1, ..., n of them; the channel of element k is c0 + k*cstep."""
    cdef Py_ssize_t k, i, c
    cdef float xv, v
    for k in range(n):
        i = start + k
        c = c0 + k * cstep
        if x_half:
            xv = half_to_f32((<const uint16_t*>xb)[i])
        else:
            xv = (<const float*>xb)[i]
        v = _elem(xv, inv[c], zpf[c], s[c], qmin, qmax, lo, hi, half_kernel, &m[i])
        if half_kernel and not out_half:
            v = half_to_f32(<uint16_t>round_to_fmt(v, F_FP16, RM_RINT, False))
        if out_half:
            # fp16 kernel: its CAST_RINT; fp32 kernel: the aclnn Cast to the fp16 output (same rounding)
            (<uint16_t*>yb)[i] = <uint16_t>round_to_fmt(v, F_FP16, RM_RINT, False)
        else:
            (<float*>yb)[i] = v


def fake_quant_per_channel(const uint8_t[::1] x, const float[::1] scale, const int32_t[::1] zero_point,
                           uint8_t[::1] out, uint8_t[::1] mask,
                           Py_ssize_t outer, Py_ssize_t channels, Py_ssize_t inner,
                           int64_t qmin, int64_t qmax, bint x_half, bint half_kernel, bint out_half):
    """Fake-quantize x viewed as [outer, channels, inner] (channel = middle axis) into out and mask.

    x: raw bytes of fp32 or fp16 (x_half) data; scale: fp32 per channel (fp16 scales widened
    exactly); out: raw bytes of fp32 or fp16 (out_half); mask: one byte per element (0/1).
    half_kernel selects the fp16 kernel (tiling key 2: x and scale both fp16), whose mask compares
    in half precision. qmin/qmax: the int32 values the kernel reads from its tiling data.
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
        lo = half_to_f32(<uint16_t>round_to_fmt(<float>qmin, F_FP16, RM_RINT, False))
        hi = half_to_f32(<uint16_t>round_to_fmt(<float>qmax, F_FP16, RM_RINT, False))
    else:
        lo = <float>qmin
        hi = <float>qmax
    cdef bint fast = (not x_half and not half_kernel and not out_half
                      and -16777216 <= qmin <= 16777216 and -16777216 <= qmax <= 16777216)
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
                         qmin, qmax, lo, hi, x_half, half_kernel, out_half)
        else:
            for rr in prange(nrows, schedule="static"):
                _one_row(rr, by_channel_rows, fast, xb, yb, mb, channels, inner, inv, zpf, s,
                         qmin, qmax, lo, hi, x_half, half_kernel, out_half)


cdef inline void _one_row(Py_ssize_t rr, bint by_channel_rows, bint fast, const uint8_t* xb, uint8_t* yb,
                          uint8_t* mb, Py_ssize_t channels, Py_ssize_t inner, const float* inv,
                          const float* zpf, const float* s, int64_t qmin, int64_t qmax, float lo, float hi,
                          bint x_half, bint half_kernel, bint out_half) noexcept nogil:
    cdef Py_ssize_t c
    if by_channel_rows:
        c = rr % channels
        if fast:
            _row_fast(<const float*>xb + rr * inner, <float*>yb + rr * inner, mb + rr * inner, inner,
                      inv[c], zpf[c], s[c], lo, hi)
        else:
            _row_generic(xb, yb, mb, rr * inner, inner, inv, zpf, s, c, 0, qmin, qmax, lo, hi,
                         x_half, half_kernel, out_half)
    else:
        _row_generic(xb, yb, mb, rr * channels, channels, inv, zpf, s, 0, 1, qmin, qmax, lo, hi,
                     x_half, half_kernel, out_half)


def _floats(Py_ssize_t n):
    import numpy as np
    return np.empty(max(n, 1), dtype=np.float32)
