# cython: language_level=3
"""Exact int8 x int8 -> int32 GEMM and the npu_quant_matmul epilogues (ARITHMETIC.md section 4).

GEMM: int8_gemm.h (exact int32 accumulation with AVX2 / AVX-512 VNNI / portable C paths chosen at
run time; its header comment explains the arithmetic and the blocking). The weight is read in place,
as [K, N] rows or as the transposed view of [N, K] rows.

Epilogues (one pass over the int32 accumulator, per element):
  EPI_INT32   y = acc + bias_i32
  EPI_REQ8    fixpipe REQ8: v = f32(f32(acc + bias_i32) * M1), s9 = clip(rint(v), -256, 255),
              y = clip(s9 + offset9, -128, 127) (Sign bit set) or clip(.., 0, 255) (Sign clear)
  EPI_DEQF16  fixpipe DEQF16: y = fp16_rne_saturating(f32(f32(acc + bias_i32) * M1))
  EPI_VEC_*   vector epilogue: d = f32(f32(acc + bias_i32) * s); d = f32(p_m * d); d = f32(d + fbias);
              y = RNE to fp16/bf16 (IEEE overflow to inf)
"""
from cython.parallel cimport prange
from libc.stdint cimport int8_t, uint8_t, uint16_t, int32_t, uint32_t, int64_t
from libc.math cimport rint, isnan
from ascend_cast cimport *

cdef enum:
    EPI_INT32 = 0
    EPI_REQ8 = 1
    EPI_DEQF16 = 2
    EPI_VEC_FP16 = 3
    EPI_VEC_BF16 = 4

cdef extern from "int8_gemm.h" nogil:
    ctypedef struct gemm_args:
        int M, N, K
        const int8_t* a
        Py_ssize_t lda
        const int8_t* b
        Py_ssize_t sbk, sbn
        int32_t* c
        Py_ssize_t ldc
    int gemm_available(int path)
    int gemm_s8(int path, const gemm_args* g)

# Names of the GEMM paths, by id (int8_gemm.h); the last available one is the default.
SIMD_PATHS = ("c", "avx2", "avx512_vnni")


def simd_paths():
    """The GEMM paths this build can run on this CPU, slowest first."""
    return tuple(name for i, name in enumerate(SIMD_PATHS) if gemm_available(i))


def int8_gemm(const int8_t[:, :, ::1] x1, const int8_t[:, :, :] x2, const int64_t[::1] a_index,
              const int64_t[::1] b_index, int32_t[:, :, ::1] c, int path):
    """c[b] = x1[a_index[b]] @ x2[b_index[b]] exactly (int32), for every output batch b, on GEMM path `path`.

    x1: [B1, M, K] int8 contiguous; x2: [B2, K, N] int8 with x2.strides[2] == 1 ([K, N] rows) or
    x2.strides[1] == 1 (the transposed view of [N, K] rows), read in place; c: [B, M, N] int32.
    """
    cdef gemm_args g
    cdef Py_ssize_t b, B = c.shape[0]
    cdef int rc = 0
    if not gemm_available(path):
        raise ValueError(f"GEMM path {path} is not available here (available: {simd_paths()})")
    if x2.strides[1] != 1 and x2.strides[2] != 1:
        raise ValueError("x2 must have unit stride along k or n")
    g.M = <int>c.shape[1]
    g.N = <int>c.shape[2]
    g.K = <int>x1.shape[2]
    g.lda = x1.shape[2]
    g.sbk = x2.strides[1]
    g.sbn = x2.strides[2]
    g.ldc = c.shape[2]
    if g.M == 0 or g.N == 0:
        return
    with nogil:
        for b in range(B):
            g.a = &x1[a_index[b], 0, 0]
            g.b = &x2[b_index[b], 0, 0]
            g.c = &c[b, 0, 0]
            rc = gemm_s8(path, &g)
            if rc != 0:
                break
    if rc != 0:
        raise MemoryError("npu_quant_matmul: out of memory for the GEMM work buffers")


cdef inline int32_t _add_wrap(int32_t a, int32_t b) noexcept nogil:
    # int32 add as the L0C does it (two's complement wrap; never reached for K <= 65535 and sane bias)
    return <int32_t>(<uint32_t>a + <uint32_t>b)


cdef inline int8_t _req8(float v, int32_t off, bint signed_out) noexcept nogil:
    cdef int32_t s9
    cdef double r
    if isnan(v):
        s9 = 0                                        # NaN -> 0 (undocumented on hardware)
    else:
        r = rint(v)                                   # half to even (vendor model: np.round)
        s9 = -256 if r < -256.0 else (255 if r > 255.0 else <int32_t>r)
    s9 = s9 + off
    if signed_out:
        return <int8_t>(-128 if s9 < -128 else (127 if s9 > 127 else s9))
    return <int8_t>(<uint8_t>(0 if s9 < 0 else (255 if s9 > 255 else s9)))


cdef void _epilogue_row(const int32_t* acc, Py_ssize_t N, int mode, const int32_t* bias_i32,
                        const float* scale, const int32_t* offset9, const uint8_t* signed_out,
                        float p, bint has_pertoken, const float* bias_f,
                        int8_t* o8, uint16_t* o16, int32_t* o32) noexcept nogil:
    """One output row; bias_i32 / bias_f are NULL when absent. Modes branch outside the element loops."""
    cdef Py_ssize_t n
    cdef int32_t a
    cdef float v
    cdef NarrowParams f16_sat = narrow_params(F_FP16, RM_RINT, True)      # DEQF16 saturates
    cdef NarrowParams f16 = narrow_params(F_FP16, RM_RINT, False)         # vector Cast: IEEE overflow
    if mode == EPI_INT32:
        for n in range(N):
            o32[n] = _add_wrap(acc[n], bias_i32[n]) if bias_i32 != NULL else acc[n]
    elif mode == EPI_REQ8:
        for n in range(N):
            a = _add_wrap(acc[n], bias_i32[n]) if bias_i32 != NULL else acc[n]
            v = (<float>a) * scale[n]                 # int32 -> fp32 (RNE above 2^24), one fp32 multiply
            o8[n] = _req8(v, offset9[n], signed_out[n])
    elif mode == EPI_DEQF16:
        for n in range(N):
            a = _add_wrap(acc[n], bias_i32[n]) if bias_i32 != NULL else acc[n]
            o16[n] = <uint16_t>f32_narrow_fast(f32_bits((<float>a) * scale[n]), f16_sat)
    else:
        for n in range(N):
            a = _add_wrap(acc[n], bias_i32[n]) if bias_i32 != NULL else acc[n]
            v = (<float>a) * scale[n]
            if has_pertoken:
                v = p * v
            if bias_f != NULL:
                v = v + bias_f[n]
            o16[n] = <uint16_t>(f32_narrow_fast(f32_bits(v), f16) if mode == EPI_VEC_FP16
                                else f32_to_bf16_rne(f32_bits(v), False))


def epilogue(const int32_t[:, :, ::1] acc, Py_ssize_t M, Py_ssize_t N, int mode,
             const int32_t[:, ::1] bias_i32, bint has_bias_i32,
             const float[::1] scale, const int32_t[::1] offset9, const uint8_t[::1] signed_out,
             const float[::1] pertoken, bint has_pertoken,
             const float[:, ::1] bias_f, bint has_bias_f,
             int8_t[:, :, ::1] out_i8, uint16_t[:, :, ::1] out_u16, int32_t[:, :, ::1] out_i32):
    """Apply one epilogue to acc[:, :M, :N] (see the module docstring). Per-column arrays have N entries;
    bias rows are indexed by batch when they have B rows, else row 0 is used for every batch. Unused
    outputs may be 1 x 1 x 1 dummies."""
    cdef Py_ssize_t B = acc.shape[0], row, b, m
    cdef const int32_t* bi
    cdef const float* bf
    if B == 0 or M == 0 or N == 0:
        return
    with nogil:
        for row in prange(B * M, schedule="static"):
            b = row // M
            m = row % M
            bi = NULL
            bf = NULL
            if has_bias_i32:
                bi = &bias_i32[b if bias_i32.shape[0] > 1 else 0, 0]
            if has_bias_f:
                bf = &bias_f[b if bias_f.shape[0] > 1 else 0, 0]
            _epilogue_row(&acc[b, m, 0], N, mode, bi, &scale[0], &offset9[0], &signed_out[0],
                          pertoken[m] if has_pertoken else 1.0, has_pertoken, bf,
                          &out_i8[b, m, 0] if mode == EPI_REQ8 else NULL,
                          &out_u16[b, m, 0] if (mode == EPI_DEQF16 or mode >= EPI_VEC_FP16) else NULL,
                          &out_i32[b, m, 0] if mode == EPI_INT32 else NULL)
