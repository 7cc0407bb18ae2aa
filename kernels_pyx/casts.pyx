# cython: language_level=3
"""Elementwise Ascend Cast between storage formats: the kernel behind npusim.formats.cast.

Inputs are validated and made contiguous by npusim/formats.py; this module only sees raw bytes
and kind codes (kept in sync with formats.py `_KIND`).

Two paths with identical results (tests/test_formats.py checks them against each other and against
a NumPy reference): the generic one widens every element to double and calls `round_to_fmt` /
`to_int`; the fast one handles every float8/fp16/bf16/fp32 source and the fp32/fp16/bf16/fp8 and
saturating small-integer targets with the branch-free helpers of ascend_cast.pxd, format, mode and
saturation passed as data, so that GCC turns each loop into branch-free SIMD code.
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

cdef enum:
    BLOCK = 1024         # elements decoded into a stack buffer at a time (stays in L1)
    CHUNK = 32768        # elements per parallel work item

cdef Py_ssize_t PARALLEL_MIN = 1 << 16   # below this a thread team costs more than it saves


# ================================================================ generic path
cdef inline double _load(const uint8_t* p, int kind, Py_ssize_t i) noexcept nogil:
    if kind == F_FP32:
        return (<const float*>p)[i]
    if kind == F_FP16 or kind == F_BF16:
        return decode_fmt((<const uint16_t*>p)[i], kind)
    if kind == F_HIF8:
        return hif8_to_f32(p[i])
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
    elif kind == F_HIF8:
        p[i] = round_to_hif8(v, sat)        # CAST_ROUND only (formats.cast checks the mode)
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


# ================================================================ fast path
cdef inline int _itemsize(int kind) noexcept nogil:
    if kind == F_FP32 or kind == K_INT32:
        return 4
    if kind == F_FP16 or kind == F_BF16 or kind == K_INT16 or kind == K_UINT16:
        return 2
    return 1

cdef inline bint _fast_pair(int src, int dst, bint sat) noexcept nogil:
    if src > F_E8M0 or dst == F_HIF8:        # only float storage formats as sources; hifloat8 is generic
        return False
    if dst <= F_E5M2:                        # fp32, fp16, bf16, e4m3, e5m2 (e8m0 stays generic)
        return True
    return sat and (dst == K_INT8 or dst == K_INT16 or dst == K_INT32 or dst == K_UINT8
                    or dst == K_UINT16 or dst == K_INT4)


# --- decode: any float storage format -> fp32 bits (exact)
cdef inline void _decode(const uint8_t* s, int kind, Py_ssize_t n, uint32_t* buf,
                         const uint32_t* lut) noexcept nogil:
    cdef Py_ssize_t i
    if kind == F_FP16:
        for i in range(n):
            buf[i] = half_bits_to_f32_bits((<const uint16_t*>s)[i])
    elif kind == F_BF16:
        for i in range(n):
            buf[i] = (<uint32_t>(<const uint16_t*>s)[i]) << 16
    else:                                    # 8-bit formats: 256-entry table
        for i in range(n):
            buf[i] = lut[s[i]]


# --- encode: fp32 bits -> target (format, mode and saturation are data: one loop per width)
cdef void _narrow(const uint32_t* u, uint8_t* d, Py_ssize_t n, int fmt, int mode, bint sat) noexcept nogil:
    cdef NarrowParams p = narrow_params(fmt, mode, sat)
    cdef Py_ssize_t i
    cdef uint32_t satu = 1 if sat else 0
    cdef Fp8RneParams p8
    if fmt == F_BF16 and mode == RM_RINT:    # the common cases, much shorter than the general one
        for i in range(n):
            (<uint16_t*>d)[i] = <uint16_t>f32_to_bf16_rne(u[i], satu)
    elif (fmt == F_E4M3 or fmt == F_E5M2) and mode == RM_RINT:
        p8 = fp8_rne_params(fmt, sat)
        for i in range(n):
            d[i] = <uint8_t>f32_to_fp8_rne(u[i], p8)
    elif fmt == F_FP16 or fmt == F_BF16:
        for i in range(n):
            (<uint16_t*>d)[i] = <uint16_t>f32_narrow_fast(u[i], p)
    else:
        for i in range(n):
            d[i] = <uint8_t>f32_narrow_fast(u[i], p)

cdef void _widen16(const uint16_t* h, int kind, uint32_t* d, Py_ssize_t n, bint sat) noexcept nogil:
    # fp16/bf16 -> fp32: exact; NaN canonicalised and infinities saturated as in _to_f32
    cdef Py_ssize_t i
    cdef uint32_t v, satu = 1 if sat else 0
    if kind == F_BF16:
        for i in range(n):
            v = (<uint32_t>h[i]) << 16
            d[i] = sel_u32(satu & ((v & 0x7FFFFFFF) == 0x7F800000), v - 1, f32_canonical_nan(v))
    else:
        for i in range(n):
            v = half_bits_to_f32_bits(h[i])
            d[i] = sel_u32(satu & ((v & 0x7FFFFFFF) == 0x7F800000), v - 1, f32_canonical_nan(v))

cdef void _to_f32(const uint32_t* u, uint32_t* d, Py_ssize_t n, bint sat) noexcept nogil:
    # every fast source is exact in fp32: only NaN canonicalisation and saturated infinities remain
    cdef Py_ssize_t i
    cdef uint32_t v
    if sat:
        for i in range(n):
            v = u[i]
            d[i] = ((v & 0x80000000U) | 0x7F7FFFFF) if (v & 0x7FFFFFFF) == 0x7F800000 else f32_canonical_nan(v)
    else:
        for i in range(n):
            d[i] = f32_canonical_nan(u[i])

cdef inline (float, float) _int_range(int kind) noexcept nogil:
    if kind == K_INT8:
        return -128, 127
    if kind == K_INT4:
        return -8, 7
    if kind == K_UINT8:
        return 0, 255
    if kind == K_INT16:
        return -32768, 32767
    return 0, 65535

cdef void _to_int(const float* x, uint8_t* d, Py_ssize_t n, int kind, int mode) noexcept nogil:
    cdef IntParams p
    cdef Py_ssize_t i
    cdef float lo, hi
    cdef uint32_t away = mode == RM_ROUND
    if (mode == RM_RINT or mode == RM_ROUND) and kind != K_INT32:   # common cases, ranges exact in fp32
        lo, hi = _int_range(kind)
        if kind == K_INT8 or kind == K_INT4:
            for i in range(n):
                (<int8_t*>d)[i] = <int8_t>f32_to_int_near_small(x[i], lo, hi, away)
        elif kind == K_UINT8:
            for i in range(n):
                d[i] = <uint8_t>f32_to_int_near_small(x[i], lo, hi, away)
        elif kind == K_INT16:
            for i in range(n):
                (<int16_t*>d)[i] = <int16_t>f32_to_int_near_small(x[i], lo, hi, away)
        else:
            for i in range(n):
                (<uint16_t*>d)[i] = <uint16_t>f32_to_int_near_small(x[i], lo, hi, away)
    elif kind == K_INT8 or kind == K_INT4:
        p = int_params(mode, -128, 127) if kind == K_INT8 else int_params(mode, -8, 7)
        for i in range(n):
            (<int8_t*>d)[i] = <int8_t>f32_to_int_fast(x[i], p)
    elif kind == K_UINT8:
        p = int_params(mode, 0, 255)
        for i in range(n):
            d[i] = <uint8_t>f32_to_int_fast(x[i], p)
    elif kind == K_INT16:
        p = int_params(mode, -32768, 32767)
        for i in range(n):
            (<int16_t*>d)[i] = <int16_t>f32_to_int_fast(x[i], p)
    elif kind == K_UINT16:
        p = int_params(mode, 0, 65535)
        for i in range(n):
            (<uint16_t*>d)[i] = <uint16_t>f32_to_int_fast(x[i], p)
    else:
        p = int_params(mode, INT32_MIN, INT32_MAX)
        for i in range(n):
            (<int32_t*>d)[i] = f32_to_int_fast(x[i], p)

cdef void _fast_range(const uint8_t* s, int sk, uint8_t* d, int dk, Py_ssize_t start, Py_ssize_t end,
                      int mode, bint sat, const uint32_t* lut) noexcept nogil:
    """Elements [start, end): decode a block to fp32 bits (unless fp32 already), then encode it."""
    cdef uint32_t buf[BLOCK]
    cdef const uint32_t* u
    cdef Py_ssize_t b, m
    cdef int ss = _itemsize(sk)
    cdef int ds = _itemsize(dk)
    b = start
    while b < end:
        m = end - b if end - b < BLOCK else BLOCK
        if sk == F_FP32:
            u = (<const uint32_t*>s) + b
        elif dk == F_FP32 and sk <= F_BF16:  # fp16/bf16 widening: one fused loop
            _widen16(<const uint16_t*>(s + b * ss), sk, (<uint32_t*>d) + b, m, sat)
            b += m
            continue
        else:
            _decode(s + b * ss, sk, m, buf, lut)
            u = buf
        if dk == F_FP32:
            _to_f32(u, (<uint32_t*>d) + b, m, sat)
        elif dk <= F_E5M2:
            _narrow(u, d + b * ds, m, dk, mode, sat)
        else:
            _to_int(<const float*>u, d + b * ds, m, dk, mode)
        b += m


def hifloat8_table():
    """float32 value of every HiFloat8 code 0..255 (exact), from hif8_to_f32."""
    import numpy as np
    out = np.empty(256, np.float32)
    cdef float[::1] o = out
    cdef int c
    for c in range(256):
        o[c] = hif8_to_f32(<uint8_t>c)
    return out


def cast_buffer(const uint8_t[::1] src, int src_kind, uint8_t[::1] dst, int dst_kind,
                Py_ssize_t n, int mode, bint sat, bint generic=False):
    """dst[i] = Cast(src[i]) for i < n; both buffers hold n elements of their kinds.
    generic=True forces the double-precision reference path (used by the tests)."""
    cdef const uint8_t* s = &src[0] if src.shape[0] else NULL
    cdef uint8_t* d = &dst[0] if dst.shape[0] else NULL
    cdef Py_ssize_t i, c, nchunks
    cdef uint32_t lut[256]
    cdef int k
    if n == 0:
        return
    if not generic and _fast_pair(src_kind, dst_kind, sat):
        if src_kind >= F_E4M3:
            for k in range(256):
                lut[k] = f32_bits(<float>decode_fmt(k, src_kind))
        nchunks = (n + CHUNK - 1) // CHUNK
        with nogil:
            if n < PARALLEL_MIN:
                _fast_range(s, src_kind, d, dst_kind, 0, n, mode, sat, lut)
            else:
                for c in prange(nchunks, schedule="static"):
                    _fast_range(s, src_kind, d, dst_kind, c * CHUNK,
                                n if (c + 1) * CHUNK > n else (c + 1) * CHUNK, mode, sat, lut)
        return
    with nogil:
        if n < PARALLEL_MIN:
            for i in range(n):
                _store(d, dst_kind, i, _load(s, src_kind, i), mode, sat)
        else:
            for i in prange(n, schedule="static"):
                _store(d, dst_kind, i, _load(s, src_kind, i), mode, sat)


# ================================================================ OpenMP threads
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static void npusim_set_omp_threads(int n) { omp_set_num_threads(n); }
    #else
    static void npusim_set_omp_threads(int n) { (void)n; }
    #endif
    """
    void npusim_set_omp_threads(int n) nogil


def set_openmp_threads(int n):
    """The calling thread's OpenMP team size for the parallel regions that do not name one (every kernel's but
    DynamicQuant's, which npusim/_parallel.py sizes). In this module because every operator imports it."""
    npusim_set_omp_threads(n)


# ================================================================ what this build was compiled for
cdef extern from *:
    """
    /* the widest vector instruction set the compiler was allowed (its predefined macros): what the
       auto-vectorised kernels run on; the int8 GEMM picks its own path at run time */
    static const char* npusim_build_isa(void) {
    #if defined(__AVX512F__) && defined(__AVX512BW__)
        return "AVX-512";
    #elif defined(__AVX2__)
        return "AVX2";
    #elif defined(__AVX__)
        return "AVX";
    #elif defined(__SSE2__)
        return "SSE2";
    #elif defined(__ARM_FEATURE_SVE)
        return "SVE";
    #elif defined(__ARM_NEON)
        return "NEON";
    #else
        return "scalar";
    #endif
    }
    """
    const char* npusim_build_isa() noexcept nogil


def build_isa() -> str:
    """The widest SIMD instruction set this build's kernels were compiled for (AVX-512, AVX2, AVX, SSE2,
    SVE, NEON or scalar): the path their auto-vectorised loops run on."""
    return npusim_build_isa().decode()
