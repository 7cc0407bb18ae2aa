# cython: language_level=3
"""Exact int8 x int8 -> int32 GEMM and the npu_quant_matmul epilogues (ARITHMETIC.md section 4).

GEMM: x1 arrives biased to uint8 (x + 128, a free XOR of the sign bit) and x2 transposed to
[N, K], so every output element is one contiguous dot product of uint8 x int8 terms; compilers turn
that pattern into VNNI dot-product instructions (vpdpbusd) where the CPU has them. The bias is
removed exactly afterwards: acc = sum((x1 + 128) * x2) - 128 * sum(x2). Bounds: |(x1 + 128) * x2|
<= 255 * 128 and K <= 65535 give |partial sums| <= 2139095040 < 2^31, so no int32 overflow ever
happens (int4 inputs are smaller still). Work is tiled (MB rows x NB columns per task) and spread
over the OpenMP threads; each task computes 4 x 4 output blocks with 16 register accumulators.

Epilogues (one pass over the int32 accumulator, per element):
  EPI_INT32   y = acc + bias_i32
  EPI_REQ8    fixpipe REQ8: v = f32(f32(acc + bias_i32) * M1), s9 = clip(rint(v), -256, 255),
              y = clip(s9 + offset9, -128, 127) (Sign bit set) or clip(.., 0, 255) (Sign clear)
  EPI_DEQF16  fixpipe DEQF16: y = fp16_rne_saturating(f32(f32(acc + bias_i32) * M1))
  EPI_VEC_*   vector epilogue: d = f32(f32(acc + bias_i32) * s); d = f32(p_m * d); d = f32(d + fbias);
              y = RNE to fp16/bf16 (IEEE overflow to inf)
"""
from cython.parallel cimport prange
from libc.stdint cimport int8_t, uint8_t, int16_t, uint16_t, int32_t, uint32_t, int64_t
from libc.math cimport rint, isnan
from ascend_cast cimport *

cdef enum:
    EPI_INT32 = 0
    EPI_REQ8 = 1
    EPI_DEQF16 = 2
    EPI_VEC_FP16 = 3
    EPI_VEC_BF16 = 4

# Tile of one parallel task. Measured on the dev box (Zen4, 2 threads, K = 4096): 32 x 128 with the
# whole K in one pass ran at ~205 GOPS; K chunks below 2048 were slower (more partial-sum traffic).
DEF MB = 32
DEF NB = 128
DEF KC = 8192


cdef inline void _dot4x4(const uint8_t* a, const int8_t* b, Py_ssize_t K, Py_ssize_t kl,
                         int32_t* c) noexcept nogil:
    """c[4 x 4] = dot products of 4 biased rows of x1 (stride K) with 4 rows of x2^T (stride K)."""
    cdef Py_ssize_t k
    cdef int32_t s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0
    cdef int32_t s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0
    cdef const uint8_t* a0 = a
    cdef const uint8_t* a1 = a + K
    cdef const uint8_t* a2 = a + 2 * K
    cdef const uint8_t* a3 = a + 3 * K
    cdef const int8_t* b0 = b
    cdef const int8_t* b1 = b + K
    cdef const int8_t* b2 = b + 2 * K
    cdef const int8_t* b3 = b + 3 * K
    for k in range(kl):
        s00 += <int32_t>a0[k] * <int32_t>b0[k]
        s01 += <int32_t>a0[k] * <int32_t>b1[k]
        s02 += <int32_t>a0[k] * <int32_t>b2[k]
        s03 += <int32_t>a0[k] * <int32_t>b3[k]
        s10 += <int32_t>a1[k] * <int32_t>b0[k]
        s11 += <int32_t>a1[k] * <int32_t>b1[k]
        s12 += <int32_t>a1[k] * <int32_t>b2[k]
        s13 += <int32_t>a1[k] * <int32_t>b3[k]
        s20 += <int32_t>a2[k] * <int32_t>b0[k]
        s21 += <int32_t>a2[k] * <int32_t>b1[k]
        s22 += <int32_t>a2[k] * <int32_t>b2[k]
        s23 += <int32_t>a2[k] * <int32_t>b3[k]
        s30 += <int32_t>a3[k] * <int32_t>b0[k]
        s31 += <int32_t>a3[k] * <int32_t>b1[k]
        s32 += <int32_t>a3[k] * <int32_t>b2[k]
        s33 += <int32_t>a3[k] * <int32_t>b3[k]
    c[0] = s00; c[1] = s01; c[2] = s02; c[3] = s03
    c[4] = s10; c[5] = s11; c[6] = s12; c[7] = s13
    c[8] = s20; c[9] = s21; c[10] = s22; c[11] = s23
    c[12] = s30; c[13] = s31; c[14] = s32; c[15] = s33


cdef void _gemm_tile(const uint8_t* a, const int8_t* bt, const int32_t* corr, int32_t* c,
                     Py_ssize_t K, Py_ssize_t Np, Py_ssize_t i0, Py_ssize_t i1,
                     Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """c[i0:i1, j0:j1] = a[i0:i1] . bt[j0:j1]^T - corr[j0:j1] (a biased by +128, corr = 128 * col sums)."""
    cdef int32_t blk[16]
    cdef Py_ssize_t k0 = 0, kl, i, j, r, q
    while k0 < K:
        kl = K - k0 if K - k0 < KC else KC
        i = i0
        while i < i1:
            j = j0
            while j < j1:
                _dot4x4(a + i * K + k0, bt + j * K + k0, K, kl, blk)
                for r in range(4):
                    for q in range(4):
                        if k0 == 0:
                            c[(i + r) * Np + j + q] = blk[4 * r + q] - corr[j + q]
                        else:
                            c[(i + r) * Np + j + q] += blk[4 * r + q]
                j += 4
            i += 4
        k0 += KC


def int8_gemm(const uint8_t[:, :, ::1] a_biased, const int8_t[:, :, ::1] bt, const int32_t[:, ::1] corr,
              const int64_t[::1] a_index, const int64_t[::1] b_index, int32_t[:, :, ::1] c):
    """c[b] = x1[a_index[b]] @ x2[b_index[b]] exactly, for every output batch b.

    a_biased: [B1, Mp, K] uint8 = x1 + 128; bt: [B2, Np, K] int8 = x2 transposed; corr: [B2, Np]
    int32 = 128 * sum_k x2; c: [B, Mp, Np] int32. Mp and Np are multiples of 4 (zero padded).
    """
    cdef Py_ssize_t B = c.shape[0], Mp = c.shape[1], Np = c.shape[2], K = a_biased.shape[2]
    cdef Py_ssize_t tm = (Mp + MB - 1) // MB, tn = (Np + NB - 1) // NB
    cdef Py_ssize_t t, b, im, jn, i1, j1
    if K == 0 or B == 0 or Mp == 0 or Np == 0:
        return
    with nogil:
        for t in prange(B * tm * tn, schedule="dynamic"):
            b = t // (tm * tn)
            im = (t % (tm * tn)) % tm
            jn = (t % (tm * tn)) // tm
            i1 = (im + 1) * MB
            if i1 > Mp:
                i1 = Mp
            j1 = (jn + 1) * NB
            if j1 > Np:
                j1 = Np
            _gemm_tile(&a_biased[a_index[b], 0, 0], &bt[b_index[b], 0, 0], &corr[b_index[b], 0],
                       &c[b, 0, 0], K, Np, im * MB, i1, jn * NB, j1)


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
