# cython: language_level=3
"""Elementwise Ascend Cast between storage formats: the kernel behind npusim.formats.cast.

Inputs are validated and made contiguous by npusim/formats.py; this module only sees raw bytes
and kind codes (kept in sync with formats.py `_KIND`).
"""
from cython.parallel cimport prange
from libc.stdint cimport (uint8_t, uint16_t, uint32_t, int8_t, int16_t, int32_t, int64_t,
                          INT32_MIN, INT32_MAX, INT64_MIN, INT64_MAX, UINT32_MAX)
from ascend_cast cimport *

cdef enum:
    K_FLOAT64 = 10
    K_INT8 = 20
    K_INT16 = 21
    K_INT32 = 22
    K_INT64 = 23
    K_UINT8 = 24
    K_INT4 = 25          # one value per int8 byte, range [-8, 7]
    K_UINT16 = 26
    K_UINT32 = 27

cdef Py_ssize_t PARALLEL_MIN = 1 << 16   # below this a thread team costs more than it saves


cdef inline double _load(const uint8_t* p, int kind, Py_ssize_t i) noexcept nogil:
    if kind == F_FP32:
        return (<const float*>p)[i]
    if kind == F_FP16 or kind == F_BF16:
        return decode_fmt((<const uint16_t*>p)[i], kind)
    if kind <= F_E8M0:
        return decode_fmt(p[i], kind)
    if kind == K_FLOAT64:
        return (<const double*>p)[i]
    if kind == K_INT8 or kind == K_INT4:
        return (<const int8_t*>p)[i]
    if kind == K_INT16:
        return (<const int16_t*>p)[i]
    if kind == K_INT32:
        return (<const int32_t*>p)[i]
    if kind == K_INT64:
        return <double>(<const int64_t*>p)[i]
    if kind == K_UINT8:
        return p[i]
    if kind == K_UINT16:
        return (<const uint16_t*>p)[i]
    return (<const uint32_t*>p)[i]


cdef inline void _store(uint8_t* p, int kind, Py_ssize_t i, double v, int mode, bint sat) noexcept nogil:
    if kind == F_FP32:
        (<uint32_t*>p)[i] = round_to_fmt(v, F_FP32, mode, sat)
    elif kind == F_FP16 or kind == F_BF16:
        (<uint16_t*>p)[i] = <uint16_t>round_to_fmt(v, kind, mode, sat)
    elif kind <= F_E8M0:
        p[i] = <uint8_t>round_to_fmt(v, kind, mode, sat)
    elif kind == K_FLOAT64:
        (<double*>p)[i] = v
    elif kind == K_INT8:
        (<int8_t*>p)[i] = <int8_t>to_int(v, mode, -128, 127, sat)
    elif kind == K_INT4:
        (<int8_t*>p)[i] = <int8_t>to_int(v, mode, -8, 7, sat)
    elif kind == K_INT16:
        (<int16_t*>p)[i] = <int16_t>to_int(v, mode, -32768, 32767, sat)
    elif kind == K_INT32:
        (<int32_t*>p)[i] = <int32_t>to_int(v, mode, INT32_MIN, INT32_MAX, sat)
    elif kind == K_INT64:
        (<int64_t*>p)[i] = to_int(v, mode, INT64_MIN, INT64_MAX, sat)
    elif kind == K_UINT8:
        p[i] = <uint8_t>to_int(v, mode, 0, 255, sat)
    elif kind == K_UINT16:
        (<uint16_t*>p)[i] = <uint16_t>to_int(v, mode, 0, 65535, sat)
    else:
        (<uint32_t*>p)[i] = <uint32_t>to_int(v, mode, 0, <int64_t>UINT32_MAX, sat)


def cast_buffer(const uint8_t[::1] src, int src_kind, uint8_t[::1] dst, int dst_kind,
                Py_ssize_t n, int mode, bint sat):
    """dst[i] = Cast(src[i]) for i < n; both buffers hold n elements of their kinds."""
    cdef const uint8_t* s = &src[0] if src.shape[0] else NULL
    cdef uint8_t* d = &dst[0] if dst.shape[0] else NULL
    cdef Py_ssize_t i
    if n == 0:
        return
    with nogil:
        if n < PARALLEL_MIN:
            for i in range(n):
                _store(d, dst_kind, i, _load(s, src_kind, i), mode, sat)
        else:
            for i in prange(n, schedule="static"):
                _store(d, dst_kind, i, _load(s, src_kind, i), mode, sat)
