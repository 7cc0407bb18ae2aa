/* Exact int8 x int8 -> int32 GEMM for npu_quant_matmul, with SIMD paths chosen at run time.
 *
 *   c[m, n] = sum_k a[m, k] * b[k, n]      (a: [M, K] rows contiguous; b: any strides, used in place)
 *
 * Paths (GEMM_C, GEMM_AVX2, GEMM_AVX512): every x86-64 path is compiled with its own
 * __attribute__((target(...))), so one build serves every CPU and gemm_available() asks the CPU
 * (__builtin_cpu_supports) which ones may run. With NPUSIM_SIMD_FROM_MARCH defined (setup.py does so
 * when NPUSIM_MARCH is set), only the paths the -march enables are compiled in. Non-x86 builds have the
 * portable C path only.
 *
 * Exactness. AVX2: vpmaddwd on sign-extended int16 pairs, |a0*b0 + a1*b1| <= 2^15, summed in int32
 * (vpmaddubsw would be cheaper but saturates u8*s8 pair sums at int16, so it is not exact).
 * AVX-512: vpdpbusd multiplies unsigned by signed bytes, so b is biased to u8 (b ^ 0x80 = b + 128) and
 * the bias is removed per row: sum (b + 128) * a = sum a*b + 128 * sum_k a[m, k]. For K <= 65535 no
 * int32 sum can overflow (|a*b| <= 2^14; |(b + 128) * a| <= 255 * 128, times 65535 < 2^31), and all
 * SIMD adds wrap anyway, so the result is exact even for partial sums.
 *
 * Why integer SIMD and not float BLAS (measured on a Zen 4 core, thread CPU time, AVX2 forced with
 * -march=x86-64-v3): float32 sgemm is exact only in K chunks of <= 1024 (1024 * 2^14 = 2^24) and then
 * needs an int32 accumulation pass per chunk; OpenBLAS's Haswell sgemm ran 104 GFLOPS, the exact chunked
 * form ~95-100 GOPS, float64 BLAS half of sgemm. The AVX2 4 x 16 int16 tile (one vpmaddwd = 16
 * multiply-adds, plus one vpaddd) ran 170-190 GOPS alone and ~165 in the whole GEMM; the AVX-512 8 x 32
 * vpdpbusd tile ~390. So every shape class uses the integer kernels below.
 *
 * Shapes. The weight b is read where it lies: row-major [K, N] ("KN", n contiguous) or the transposed
 * view of a row-major [N, K] weight ("NK", k contiguous); nothing is copied whole.
 *  - NK with M <= dot_max_m (decode): dot products of a's rows with 4 weight rows at a time, streamed
 *    once (gemm_dot_all); M = 1 runs at memory speed.
 *  - KN with M <= gemv_max_m (4 on the AVX2 and AVX-512 paths, which share this AVX2 kernel; decode): the weight rows are widened in registers and multiplied
 *    into c's rows, which stay in L1/L2 (gemm_gemv_all). Packing them for the blocked kernel moved twice
 *    the weight's bytes through L2 for one row of a: on a Zen 3 core (512 KB L2), 1 x 7168 x 4096 took
 *    5.1 ms that way and 2.6-2.8 ms fused (M = 4: 5.5 and 4.4 ms).
 *  - Everything else (gemm_blocked): each thread owns a column range; per k block it packs its columns
 *    of b into the register tile's layout (int16 pairs / biased byte quads; NK is transposed in
 *    registers), packs a in blocks of mc rows, and runs the MR x NR register tile over them. For small M
 *    the k blocks are short and the column range long (whole weight rows per thread), so the weight is
 *    read once, in long runs.
 */
#ifndef NPUSIM_INT8_GEMM_H
#define NPUSIM_INT8_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#if !defined(NPUSIM_SIMD_FROM_MARCH) || defined(__AVX2__)
#define GEMM_HAVE_AVX2 1
#endif
#if !defined(NPUSIM_SIMD_FROM_MARCH) || (defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__))
#define GEMM_HAVE_AVX512 1
#endif
#endif

enum { GEMM_C = 0, GEMM_AVX2 = 1, GEMM_AVX512 = 2, GEMM_NPATHS = 3 };

typedef struct {
    int M, N, K;
    const int8_t* a; ptrdiff_t lda;          /* a[m * lda + k] */
    const int8_t* b; ptrdiff_t sbk, sbn;     /* b[k * sbk + n * sbn], sbn == 1 (KN) or sbk == 1 (NK) */
    int32_t* c; ptrdiff_t ldc;               /* c[m * ldc + n] */
} gemm_args;

/* Problems below this many multiply-adds run on one thread (a parallel region costs more). */
#define GEMM_PARALLEL_MIN (1 << 20)
static inline int gemm_parallel(const gemm_args* g) { return (double)g->M * g->N * g->K >= GEMM_PARALLEL_MIN; }

static inline int gemm_cdiv(int a, int b) { return (a + b - 1) / b; }
static inline int gemm_min(int a, int b) { return a < b ? a : b; }
static inline int gemm_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void* gemm_alloc(size_t n) {
    void* p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
    return p;
}

static inline int32_t gemm_ld32(const void* p) { int32_t v; memcpy(&v, p, 4); return v; }

/* Bytes between packed panels of ngroups x width groups of 4 bytes: one spare cache line, so that the
   panels (often 4 KiB or a multiple) do not all map to the same cache sets. */
static inline size_t gemm_panel(int ngroups, int width) { return (size_t)ngroups * width * 4 + 64; }

/* ------------------------------------------------------------------------------------------ C path */
/* Portable fallback (the only path off x86-64): tasks of GC_MB rows x GC_NB columns, whole K. */
#define GC_MB 32
#define GC_NB 128

static inline void gemm_c_dot(const int R, const gemm_args* g, int i, int j, int n1) {
    /* R x 4 dot products of contiguous rows (R = 4, or 1 for the last rows); columns past n1 point at
       column j and are not stored. */
    const int8_t* ar[4];
    const int8_t* br[4];
    int32_t acc[4][4] = {{0}};
    for (int r = 0; r < R; r++) ar[r] = g->a + (ptrdiff_t)(i + r) * g->lda;
    for (int s = 0; s < 4; s++) br[s] = g->b + (ptrdiff_t)(j + s < n1 ? j + s : j) * g->sbn;
    for (int k = 0; k < g->K; k++)
        for (int r = 0; r < R; r++)
            for (int s = 0; s < 4; s++) acc[r][s] += (int32_t)ar[r][k] * (int32_t)br[s][k];
    for (int r = 0; r < R; r++)
        for (int s = 0; s < 4 && j + s < n1; s++) g->c[(ptrdiff_t)(i + r) * g->ldc + j + s] = acc[r][s];
}

static void gemm_c_nk_task(const gemm_args* g, int m0, int m1, int n0, int n1) {
    for (int j = n0; j < n1; j += 4) {
        int i = m0;
        for (; i + 4 <= m1; i += 4) gemm_c_dot(4, g, i, j, n1);
        for (; i < m1; i++) gemm_c_dot(1, g, i, j, n1);
    }
}

static void gemm_c_kn_task(const gemm_args* g, int m0, int m1, int n0, int n1) {
    /* c rows += a[m, k] * b row k, on a GC_MB x GC_NB accumulator block that stays in L1. */
    int32_t acc[GC_MB][GC_NB];
    int w = n1 - n0;
    for (int i = 0; i < m1 - m0; i++) memset(acc[i], 0, sizeof(int32_t) * (size_t)w);
    for (int k = 0; k < g->K; k++) {
        const int8_t* br = g->b + (ptrdiff_t)k * g->sbk + n0;
        for (int i = 0; i < m1 - m0; i++) {
            int32_t av = g->a[(ptrdiff_t)(m0 + i) * g->lda + k];
            for (int j = 0; j < w; j++) acc[i][j] += av * (int32_t)br[j];
        }
    }
    for (int i = 0; i < m1 - m0; i++) memcpy(g->c + (ptrdiff_t)(m0 + i) * g->ldc + n0, acc[i], sizeof(int32_t) * (size_t)w);
}

static int gemm_c(const gemm_args* g) {
    int tm = gemm_cdiv(g->M, GC_MB), tn = gemm_cdiv(g->N, GC_NB);
    int nk = g->sbk == 1;
#pragma omp parallel for schedule(dynamic) if (gemm_parallel(g))
    for (long t = 0; t < (long)tm * tn; t++) {
        int m0 = (int)(t % tm) * GC_MB, n0 = (int)(t / tm) * GC_NB;
        int m1 = gemm_min(m0 + GC_MB, g->M), n1 = gemm_min(n0 + GC_NB, g->N);
        if (nk) gemm_c_nk_task(g, m0, m1, n0, n1);
        else gemm_c_kn_task(g, m0, m1, n0, n1);
    }
    return 0;
}

/* ------------------------------------------------------------------------------ SIMD path plumbing */
typedef struct {
    int kg;          /* k per group of the register tile: 2 (int16 pairs) or 4 (byte quads) */
    int mr, nr;      /* register tile (nr a multiple of 16) */
    int kc;          /* k block when M > mc (multiple of 4) */
    int kc_small;    /* k block when M <= mc */
    int mc;          /* rows of a packed a block */
    int nc_small;    /* at most this many columns per task when M <= mc (long runs of each weight row) */
    int nc_max;      /* at most this many columns per task otherwise (the packed block stays in L2) */
    int dot_max_m;   /* NK weights with M <= this use the dot kernel */
    int dot_ns;      /* weight rows per dot task unit */
    int dot_kalign;  /* the dot kernel's a rows are zero-padded to a multiple of this */
    int gemv_max_m;  /* KN weights with M <= this use the fused small-M kernel (0: never) */
    /* a[i0 : i0 + rows, k0 : k0 + kc] as ceil(rows / MR) panels of ngroups x MR groups (4 bytes each) */
    void (*pack_a)(const gemm_args* g, int i0, int rows, int k0, int kc, void* ap);
    /* b[k0 : k0 + kc, j0 : j0 + nc] as ceil(nc / NR) panels of ngroups x NR groups (zeros past kc and nc);
       weight memory is read in its own order */
    void (*pack_b)(const gemm_args* g, int k0, int kc, int j0, int nc, void* bp);
    /* c[mr x nr] (+)= a panel . b panel; then subtract rowcorr[i] when rowcorr != NULL */
    void (*micro)(int mr, int ngroups, const void* ap, const void* bp, int32_t* c, ptrdiff_t ldc, int nr,
                  int accumulate, const int32_t* rowcorr);
    /* dot kernel: a as [M][Kp] rows (int16, or bytes), then c[0:M, 0:ns] for ns <= dot_ns weight rows at w */
    void (*dot_prep)(const gemm_args* g, int Kp, void* ap);
    void (*dot)(const gemm_args* g, const void* ap, ptrdiff_t Kp, const int32_t* rowcorr, const int8_t* w,
                int ns, int32_t* c);
    /* fused small-M kernel: c[0:M, n0:n1] = a . b[:, n0:n1] for a KN weight, read once in rows, unpacked */
    void (*gemv_kn)(const gemm_args* g, int n0, int n1);
} gemm_path;

static void gemm_task(const gemm_path* P, const gemm_args* g, const int32_t* rowcorr, char* abuf, char* bbuf,
                      int m0, int m1, int n0, int n1) {
    /* For each k block: pack the task's columns of b, then for each block of mc rows pack a and run the
       register tile over every (row panel, column panel). Small M uses short k blocks, so the packed
       block stays in L1/L2 and the weight rows being read stay in the TLB. */
    const int K = g->K, kcb = m1 - m0 > P->mc ? P->kc : P->kc_small;
    for (int k0 = 0; k0 < K; k0 += kcb) {
        int kc = gemm_min(kcb, K - k0), ng = gemm_cdiv(kc, P->kg);
        size_t apanel = gemm_panel(ng, P->mr), bpanel = gemm_panel(ng, P->nr);
        int first = k0 == 0, last = k0 + kcb >= K;
        P->pack_b(g, k0, kc, n0, n1 - n0, bbuf);
        for (int ic = m0; ic < m1; ic += P->mc) {
            int ie = gemm_min(ic + P->mc, m1);
            P->pack_a(g, ic, ie - ic, k0, kc, abuf);
            for (int j = n0; j < n1; j += P->nr)
                for (int i = ic; i < ie; i += P->mr)
                    P->micro(gemm_min(P->mr, ie - i), ng, abuf + (size_t)((i - ic) / P->mr) * apanel,
                             bbuf + (size_t)((j - n0) / P->nr) * bpanel, g->c + (ptrdiff_t)i * g->ldc + j, g->ldc,
                             gemm_min(P->nr, n1 - j), !first, last && rowcorr ? rowcorr + i : NULL);
        }
    }
}

static int gemm_blocked(const gemm_path* P, const gemm_args* g, const int32_t* rowcorr) {
    const int M = g->M, N = g->N, T = gemm_parallel(g) ? gemm_threads() : 1;
    int nct = gemm_min(gemm_cdiv(gemm_cdiv(N, T), P->nr) * P->nr, M <= P->mc ? P->nc_small : P->nc_max);
    int tn = gemm_cdiv(N, nct), tm = 1, mct = M;
    if (tn < T && M > P->mr) {                               /* narrow N: split M as well */
        tm = gemm_min(gemm_cdiv(T, tn), gemm_cdiv(M, P->mr));
        mct = gemm_cdiv(gemm_cdiv(M, tm), P->mr) * P->mr;
        tm = gemm_cdiv(M, mct);
    }
    size_t ng = (size_t)gemm_cdiv(mct > P->mc ? P->kc : P->kc_small, P->kg);
    size_t asize = gemm_panel((int)ng, P->mr) * (size_t)gemm_cdiv(gemm_min(P->mc, mct), P->mr);
    size_t bsize = gemm_panel((int)ng, P->nr) * (size_t)gemm_cdiv(nct, P->nr);
    int failed = 0;
#pragma omp parallel if (gemm_parallel(g))
    {
        char* abuf = gemm_alloc(asize);
        char* bbuf = gemm_alloc(bsize);
        if (!abuf || !bbuf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (long t = 0; t < (long)tm * tn; t++) {
            if (!abuf || !bbuf) continue;
            int m0 = (int)(t % tm) * mct, n0 = (int)(t / tm) * nct;
            gemm_task(P, g, rowcorr, abuf, bbuf, m0, gemm_min(m0 + mct, M), n0, gemm_min(n0 + nct, N));
        }
        free(abuf);
        free(bbuf);
    }
    return failed ? -1 : 0;
}

static int gemm_dot_all(const gemm_path* P, const gemm_args* g, const int32_t* rowcorr) {
    ptrdiff_t Kp = (ptrdiff_t)gemm_cdiv(g->K, P->dot_kalign) * P->dot_kalign;
    char* ap = gemm_alloc((size_t)g->M * (size_t)Kp * (P->kg == 2 ? 2 : 1));
    if (!ap) return -1;
    P->dot_prep(g, (int)Kp, ap);
    int tiles = gemm_cdiv(g->N, P->dot_ns);
#pragma omp parallel for schedule(dynamic, 8) if (gemm_parallel(g))
    for (int t = 0; t < tiles; t++) {
        int n0 = t * P->dot_ns;
        P->dot(g, ap, Kp, rowcorr, g->b + (ptrdiff_t)n0 * g->sbn, gemm_min(P->dot_ns, g->N - n0), g->c + n0);
    }
    free(ap);
    return 0;
}

/* Columns per task of the fused small-M kernel: the M rows of c it sums into stay in L1 / L2. */
#define GEMV_NC 2048
#ifndef GEMV_KP
#define GEMV_KP 4                       /* pairs of weight rows per pass over the columns */
#endif

static int gemm_gemv_all(const gemm_path* P, const gemm_args* g) {
    int T = gemm_parallel(g) ? gemm_threads() : 1;
    int nc = gemm_min(gemm_cdiv(gemm_cdiv(g->N, T), 16) * 16, GEMV_NC);
    int tasks = gemm_cdiv(g->N, nc);
#pragma omp parallel for schedule(static) if (gemm_parallel(g))
    for (int t = 0; t < tasks; t++) P->gemv_kn(g, t * nc, gemm_min(t * nc + nc, g->N));
    return 0;
}

static int gemm_simd(const gemm_path* P, const gemm_args* g) {
    if (g->sbn == 1 && g->M <= P->gemv_max_m) return gemm_gemv_all(P, g);
    int32_t* rowcorr = NULL;
    if (P->kg == 4) {                                  /* byte quads: remove the bias of b per row */
        rowcorr = gemm_alloc(sizeof(int32_t) * (size_t)g->M);
        if (!rowcorr) return -1;
#pragma omp parallel for schedule(static) if (gemm_parallel(g))
        for (int m = 0; m < g->M; m++) {
            int32_t sum = 0;
            for (int k = 0; k < g->K; k++) sum += g->a[(ptrdiff_t)m * g->lda + k];
            rowcorr[m] = 128 * sum;
        }
    }
    int rc = g->sbk == 1 && g->M <= P->dot_max_m ? gemm_dot_all(P, g, rowcorr) : gemm_blocked(P, g, rowcorr);
    free(rowcorr);
    return rc;
}

/* ---------------------------------------------------------------------------------------- AVX2 path */
#ifdef GEMM_HAVE_AVX2
#define AVX2_TARGET "avx2"
#define AVX2_ATTR __attribute__((target(AVX2_TARGET)))
#define AVX2_INLINE static inline __attribute__((always_inline, target(AVX2_TARGET)))
#ifndef AVX2_MR
#define AVX2_MR 4
#endif
#ifndef AVX2_NV
#define AVX2_NV 2                       /* ymm vectors per row of the register tile */
#endif
#define AVX2_NR (8 * AVX2_NV)

AVX2_ATTR static void avx2_dot_prep(const gemm_args* g, int Kp, void* out) {
    for (int m = 0; m < g->M; m++) {
        const int8_t* s = g->a + (ptrdiff_t)m * g->lda;
        int16_t* d = (int16_t*)out + (ptrdiff_t)m * Kp;
        for (int k = 0; k < g->K; k++) d[k] = s[k];
        for (int k = g->K; k < Kp; k++) d[k] = 0;
    }
}

/* a panel layout: for each k pair p, MR int32 words (a[i, k] low half, a[i, k + 1] high half). */
AVX2_ATTR static void avx2_pack_a(const gemm_args* g, int i0, int rows, int k0, int kc, void* ap) {
    int np = gemm_cdiv(kc, 2);
    int32_t* d = ap;
    for (int i = 0; i < rows; i += AVX2_MR, d += gemm_panel(np, AVX2_MR) / 4) {
        const int8_t* r[AVX2_MR];                           /* rows past the end repeat the last one */
        for (int t = 0; t < AVX2_MR; t++) r[t] = g->a + (ptrdiff_t)(i0 + gemm_min(i + t, rows - 1)) * g->lda + k0;
        int p = 0;
#if AVX2_MR == 4
        for (; 2 * p + 16 <= kc; p += 8) {                  /* 4 rows x 8 pairs: a 4 x 8 transpose of words */
            __m256i y[4], t[4], u[4];
            for (int q = 0; q < 4; q++) y[q] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(r[q] + 2 * p)));
            t[0] = _mm256_unpacklo_epi32(y[0], y[1]); t[1] = _mm256_unpackhi_epi32(y[0], y[1]);
            t[2] = _mm256_unpacklo_epi32(y[2], y[3]); t[3] = _mm256_unpackhi_epi32(y[2], y[3]);
            u[0] = _mm256_unpacklo_epi64(t[0], t[2]); u[1] = _mm256_unpackhi_epi64(t[0], t[2]);
            u[2] = _mm256_unpacklo_epi64(t[1], t[3]); u[3] = _mm256_unpackhi_epi64(t[1], t[3]);
            __m256i* o = (__m256i*)(d + p * AVX2_MR);
            _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(u[0], u[1], 0x20));
            _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(u[2], u[3], 0x20));
            _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(u[0], u[1], 0x31));
            _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(u[2], u[3], 0x31));
        }
#endif
        for (; p < np; p++)
            for (int t = 0; t < AVX2_MR; t++) {
                int16_t lo = r[t][2 * p], hi = 2 * p + 1 < kc ? r[t][2 * p + 1] : 0;
                d[p * AVX2_MR + t] = (int32_t)(uint16_t)lo | (int32_t)((uint32_t)(uint16_t)hi << 16);
            }
    }
}

/* b panel layout: for each k pair p, NR int32 words (b[k, n] low half, b[k + 1, n] high half). */
AVX2_ATTR static void avx2_pack_b(const gemm_args* g, int k0, int kc, int j0, int nc, void* bp) {
    int np = gemm_cdiv(kc, 2), jv = 0, pv = 0;             /* columns < jv and pairs < pv: packed by SIMD */
    size_t panel = gemm_panel(np, AVX2_NR) / 4;             /* int32 words per panel */
    int32_t* d = bp;
    if (g->sbn == 1) {                                      /* [K, N] rows: two rows at a time, in order */
        jv = nc / 16 * 16, pv = np;
        for (int p = 0; p < np; p++) {
            const int8_t* r0 = g->b + (ptrdiff_t)(k0 + 2 * p) * g->sbk + j0;
            const int8_t* r1 = 2 * p + 1 < kc ? r0 + g->sbk : NULL;
            for (int j = 0; j < jv; j += 16) {
                __m128i x0 = _mm_loadu_si128((const __m128i*)(r0 + j));
                __m128i x1 = r1 ? _mm_loadu_si128((const __m128i*)(r1 + j)) : _mm_setzero_si128();
                int32_t* o = d + (j / AVX2_NR) * panel + p * AVX2_NR + j % AVX2_NR;
                _mm256_store_si256((__m256i*)o, _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(x0, x1)));
                _mm256_store_si256((__m256i*)(o + 8), _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(x0, x1)));
            }
        }
    } else {                                                /* [N, K] rows: 8 rows x 8 pairs, transposed */
        jv = nc / 8 * 8, pv = kc / 16 * 8;
        for (int j = 0; j < jv; j += 8) {
            const int8_t* r = g->b + (ptrdiff_t)(j0 + j) * g->sbn + k0;
            int32_t* o = d + (j / AVX2_NR) * panel + j % AVX2_NR;
            for (int p = 0; p < pv; p += 8) {               /* 16-bit units: u[t][q] = pair q of row t */
                __m128i x[8], y[8], v[8];
                for (int t = 0; t < 8; t++) x[t] = _mm_loadu_si128((const __m128i*)(r + t * g->sbn + 2 * p));
                for (int t = 0; t < 8; t += 2) {             /* y[t]: pairs 0-3 of rows t, t+1; y[t+1]: 4-7 */
                    y[t] = _mm_unpacklo_epi16(x[t], x[t + 1]);
                    y[t + 1] = _mm_unpackhi_epi16(x[t], x[t + 1]);
                }
                for (int h = 0; h < 8; h += 4)                /* x[h + q]: pairs 2q, 2q+1 of rows h..h+3 */
                    for (int t = 0; t < 2; t++) {
                        x[h + 2 * t] = _mm_unpacklo_epi32(y[h + t], y[h + t + 2]);
                        x[h + 2 * t + 1] = _mm_unpackhi_epi32(y[h + t], y[h + t + 2]);
                    }
                for (int q = 0; q < 4; q++) {                /* v[2q], v[2q+1]: pairs 2q, 2q+1 of all 8 rows */
                    v[2 * q] = _mm_unpacklo_epi64(x[q], x[q + 4]);
                    v[2 * q + 1] = _mm_unpackhi_epi64(x[q], x[q + 4]);
                }
                for (int q = 0; q < 8; q++) _mm256_storeu_si256((__m256i*)(o + (p + q) * AVX2_NR), _mm256_cvtepi8_epi16(v[q]));
            }
        }
    }
    for (int j = 0; j < gemm_cdiv(nc, AVX2_NR) * AVX2_NR; j++) {   /* whatever SIMD did not pack */
        int32_t* o = d + (j / AVX2_NR) * panel + j % AVX2_NR;
        const int8_t* e = g->b + (ptrdiff_t)k0 * g->sbk + (ptrdiff_t)(j0 + j) * g->sbn;
        for (int p = j < jv ? pv : 0; p < np; p++) {
            int16_t lo = 0, hi = 0;
            if (j < nc) {
                lo = e[(ptrdiff_t)(2 * p) * g->sbk];
                if (2 * p + 1 < kc) hi = e[(ptrdiff_t)(2 * p + 1) * g->sbk];
            }
            o[p * AVX2_NR] = (int32_t)(uint16_t)lo | (int32_t)((uint32_t)(uint16_t)hi << 16);
        }
    }
}

AVX2_INLINE void avx2_micro_rows(const int R, int np, const int32_t* ap, const int32_t* bp, int32_t* c,
                                 ptrdiff_t ldc, int nr, int accumulate) {
    __m256i acc[AVX2_MR][AVX2_NV];
    for (int i = 0; i < R; i++) {
        for (int v = 0; v < AVX2_NV; v++) acc[i][v] = _mm256_setzero_si256();
        if (accumulate) _mm_prefetch((const char*)(c + i * ldc), _MM_HINT_T0);   /* c comes from far away */
    }
    /* Pointer steps, not int index products: Python builds extensions with -fwrapv, and wrapping int
       arithmetic in the addresses cost 25%. Unrolled: gcc then keeps the accumulators in place (+15%). */
    const int32_t* const aend = ap + (ptrdiff_t)np * AVX2_MR;
#pragma GCC unroll 2
    for (; ap < aend; ap += AVX2_MR, bp += AVX2_NR) {
        __m256i b[AVX2_NV];
        for (int v = 0; v < AVX2_NV; v++) b[v] = _mm256_load_si256((const __m256i*)(bp + 8 * v));
        for (int i = 0; i < R; i++) {
            __m256i x = _mm256_set1_epi32(ap[i]);
            for (int v = 0; v < AVX2_NV; v++) acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(x, b[v]));
        }
    }
    for (int i = 0; i < R; i++) {
        int32_t* ci = c + i * ldc;
        if (nr == AVX2_NR) {
            for (int v = 0; v < AVX2_NV; v++) {
                if (accumulate) acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_loadu_si256((const __m256i*)(ci + 8 * v)));
                _mm256_storeu_si256((__m256i*)(ci + 8 * v), acc[i][v]);
            }
        } else {
            int32_t t[AVX2_NR];
            for (int v = 0; v < AVX2_NV; v++) _mm256_storeu_si256((__m256i*)(t + 8 * v), acc[i][v]);
            for (int j = 0; j < nr; j++) ci[j] = (accumulate ? ci[j] : 0) + t[j];
        }
    }
}

AVX2_ATTR static void avx2_micro(int mr, int np, const void* ap, const void* bp, int32_t* c, ptrdiff_t ldc, int nr,
                                 int accumulate, const int32_t* rowcorr) {
    (void)rowcorr;
    switch (mr) {
#if AVX2_MR > 5
    case 6: avx2_micro_rows(6, np, ap, bp, c, ldc, nr, accumulate); break;
#endif
#if AVX2_MR > 4
    case 5: avx2_micro_rows(5, np, ap, bp, c, ldc, nr, accumulate); break;
#endif
#if AVX2_MR > 3
    case 4: avx2_micro_rows(4, np, ap, bp, c, ldc, nr, accumulate); break;
#endif
    case 3: avx2_micro_rows(3, np, ap, bp, c, ldc, nr, accumulate); break;
    case 2: avx2_micro_rows(2, np, ap, bp, c, ldc, nr, accumulate); break;
    default: avx2_micro_rows(1, np, ap, bp, c, ldc, nr, accumulate); break;
    }
}

AVX2_INLINE int32_t avx2_hsum(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

#define AVX2_DOT_NS 4
/* R rows of a (int16, zero-padded) against 4 weight rows (int8, contiguous k). */
AVX2_INLINE void avx2_dot_rows(const int R, int K, const int16_t* a, ptrdiff_t lda, const int8_t* const* w,
                               int ns, int32_t* c, ptrdiff_t ldc) {
    __m256i acc[3][AVX2_DOT_NS];
    for (int r = 0; r < R; r++)
        for (int s = 0; s < AVX2_DOT_NS; s++) acc[r][s] = _mm256_setzero_si256();
    int kf = K & ~15;
    for (int k = 0; k <= kf; k += 16) {
        __m256i wv[AVX2_DOT_NS];
        if (k < kf) {
            for (int s = 0; s < AVX2_DOT_NS; s++)
                wv[s] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(w[s] + k)));
        } else {
            if (k == K) break;
            for (int s = 0; s < AVX2_DOT_NS; s++) {           /* k tail: a is zero-padded, b copied */
                int8_t t[16] = {0};
                memcpy(t, w[s] + k, (size_t)(K - k));
                wv[s] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)t));
            }
        }
        for (int r = 0; r < R; r++) {
            __m256i av = _mm256_loadu_si256((const __m256i*)(a + r * lda + k));
            for (int s = 0; s < AVX2_DOT_NS; s++) acc[r][s] = _mm256_add_epi32(acc[r][s], _mm256_madd_epi16(av, wv[s]));
        }
    }
    for (int r = 0; r < R; r++)
        for (int s = 0; s < ns; s++) c[r * ldc + s] = avx2_hsum(acc[r][s]);
}

AVX2_ATTR static void avx2_dot(const gemm_args* g, const void* ap, ptrdiff_t Kp, const int32_t* rowcorr,
                               const int8_t* w, int ns, int32_t* c) {
    (void)rowcorr;
    const int8_t* wr[AVX2_DOT_NS];
    for (int s = 0; s < AVX2_DOT_NS; s++) wr[s] = w + (s < ns ? s : 0) * g->sbn;
    const int16_t* a = ap;
    int m = 0;
    for (; m + 3 <= g->M; m += 3) avx2_dot_rows(3, g->K, a + m * Kp, Kp, wr, ns, c + m * g->ldc, g->ldc);
    if (g->M - m == 2) avx2_dot_rows(2, g->K, a + m * Kp, Kp, wr, ns, c + m * g->ldc, g->ldc);
    else if (g->M - m == 1) avx2_dot_rows(1, g->K, a + m * Kp, Kp, wr, ns, c + m * g->ldc, g->ldc);
}

/* Small M with a [K, N] weight: the blocked kernel would pack each weight block into int16 pairs, twice its
   bytes, through L2, for a handful of rows of a. Here two pairs of weight rows at a time are interleaved
   and widened in registers (the pack_b layout) and multiplied into the R rows of c, which stay in L1/L2
   across k: the weight is read once, in whole rows. */
AVX2_INLINE void avx2_gemv_rows(const int R, const gemm_args* g, int n0, int n1) {
    const int K = g->K, w = n1 - n0, wv = w / 16 * 16;
    const ptrdiff_t sbk = g->sbk;
    int32_t* c[4];
    for (int r = 0; r < R; r++) {
        c[r] = g->c + (ptrdiff_t)r * g->ldc + n0;
        memset(c[r], 0, sizeof(int32_t) * (size_t)w);
    }
    const int8_t zero[16] = {0};
    for (int k = 0; k < K; k += 2 * GEMV_KP) {
        /* rows k .. k + 2 GEMV_KP - 1 of b (past K: a zero row, with a zero a) as GEMV_KP pairs */
        const int8_t* row[2 * GEMV_KP];
        ptrdiff_t step[2 * GEMV_KP];                      /* 0 for a zero row: it stays put */
        __m256i ap[4][GEMV_KP];
        for (int q = 0; q < 2 * GEMV_KP; q++) {
            row[q] = k + q < K ? g->b + (ptrdiff_t)(k + q) * sbk + n0 : zero;
            step[q] = k + q < K;
        }
        for (int r = 0; r < R; r++)
            for (int p = 0; p < GEMV_KP; p++) {
                int16_t lo = k + 2 * p < K ? g->a[(ptrdiff_t)r * g->lda + k + 2 * p] : 0;
                int16_t hi = k + 2 * p + 1 < K ? g->a[(ptrdiff_t)r * g->lda + k + 2 * p + 1] : 0;
                ap[r][p] = _mm256_set1_epi32((int32_t)(uint16_t)lo | (int32_t)((uint32_t)(uint16_t)hi << 16));
            }
        for (int j = 0; j < wv; j += 16) {
            __m256i lo[4], hi[4];
            for (int p = 0; p < GEMV_KP; p++) {
                __m128i x0 = _mm_loadu_si128((const __m128i*)(row[2 * p] + step[2 * p] * j));
                __m128i x1 = _mm_loadu_si128((const __m128i*)(row[2 * p + 1] + step[2 * p + 1] * j));
                __m256i pl = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(x0, x1));
                __m256i ph = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(x0, x1));
                for (int r = 0; r < R; r++) {
                    __m256i ml = _mm256_madd_epi16(ap[r][p], pl), mh = _mm256_madd_epi16(ap[r][p], ph);
                    lo[r] = p ? _mm256_add_epi32(lo[r], ml) : ml;
                    hi[r] = p ? _mm256_add_epi32(hi[r], mh) : mh;
                }
            }
            for (int r = 0; r < R; r++) {
                __m256i* o = (__m256i*)(c[r] + j);
                _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), lo[r]));
                _mm256_storeu_si256(o + 1, _mm256_add_epi32(_mm256_loadu_si256(o + 1), hi[r]));
            }
        }
        for (int j = wv; j < w; j++)                        /* the last columns, fewer than 16 */
            for (int r = 0; r < R; r++) {
                int32_t sum = 0;
                for (int q = 0; q < 2 * GEMV_KP && k + q < K; q++)
                    sum += (int32_t)g->a[(ptrdiff_t)r * g->lda + k + q] * (int32_t)row[q][j];
                c[r][j] += sum;
            }
    }
}

AVX2_ATTR static void avx2_gemv_kn(const gemm_args* g, int n0, int n1) {
    switch (g->M) {
    case 4: avx2_gemv_rows(4, g, n0, n1); break;
    case 3: avx2_gemv_rows(3, g, n0, n1); break;
    case 2: avx2_gemv_rows(2, g, n0, n1); break;
    default: avx2_gemv_rows(1, g, n0, n1); break;
    }
}

static const gemm_path GEMM_PATH_AVX2 = {
    .kg = 2, .mr = AVX2_MR, .nr = AVX2_NR, .kc = 512, .kc_small = 128, .mc = 96, .nc_small = 4096, .nc_max = 1024,
    .dot_max_m = 32, .dot_ns = AVX2_DOT_NS, .dot_kalign = 16, .gemv_max_m = 4,
    .pack_a = avx2_pack_a, .pack_b = avx2_pack_b, .micro = avx2_micro, .dot_prep = avx2_dot_prep, .dot = avx2_dot,
    .gemv_kn = avx2_gemv_kn,
};
#endif

/* ------------------------------------------------------------------------------------- AVX-512 path */
#ifdef GEMM_HAVE_AVX512
#define A512_TARGET "avx512f,avx512bw,avx512vl,avx512vnni"
#define A512_ATTR __attribute__((target(A512_TARGET)))
#define A512_INLINE static inline __attribute__((always_inline, target(A512_TARGET)))
#define A512_MR 8
#define A512_NV 2                       /* zmm vectors per row of the register tile */
#define A512_NR (16 * A512_NV)

A512_ATTR static void a512_dot_prep(const gemm_args* g, int Kp, void* out) {
    for (int m = 0; m < g->M; m++) {
        int8_t* d = (int8_t*)out + (ptrdiff_t)m * Kp;
        memcpy(d, g->a + (ptrdiff_t)m * g->lda, (size_t)g->K);
        memset(d + g->K, 0, (size_t)(Kp - g->K));
    }
}

/* a panel layout: for each k quad q, MR groups of 4 bytes a[i, k..k+3] (zero past kc). */
A512_ATTR static void a512_pack_a(const gemm_args* g, int i0, int rows, int k0, int kc, void* ap) {
    int nq = gemm_cdiv(kc, 4), qf = kc / 4;
    int32_t* d = ap;
    for (int i = 0; i < rows; i += A512_MR, d += gemm_panel(nq, A512_MR) / 4)
        for (int t = 0; t < A512_MR; t++) {
            const int8_t* r = g->a + (ptrdiff_t)(i0 + gemm_min(i + t, rows - 1)) * g->lda + k0;
            int q = 0;
            if (t % 4 == 0)                                 /* rows t..t+3 x 4 quads: a 4 x 4 transpose */
                for (; q + 4 <= qf; q += 4) {
                    __m128i x[4];
                    for (int u = 0; u < 4; u++)
                        x[u] = _mm_loadu_si128((const __m128i*)(g->a + (ptrdiff_t)(i0 + gemm_min(i + t + u, rows - 1)) * g->lda + k0 + 4 * q));
                    __m128i l01 = _mm_unpacklo_epi32(x[0], x[1]), h01 = _mm_unpackhi_epi32(x[0], x[1]);
                    __m128i l23 = _mm_unpacklo_epi32(x[2], x[3]), h23 = _mm_unpackhi_epi32(x[2], x[3]);
                    _mm_storeu_si128((__m128i*)(d + (q + 0) * A512_MR + t), _mm_unpacklo_epi64(l01, l23));
                    _mm_storeu_si128((__m128i*)(d + (q + 1) * A512_MR + t), _mm_unpackhi_epi64(l01, l23));
                    _mm_storeu_si128((__m128i*)(d + (q + 2) * A512_MR + t), _mm_unpacklo_epi64(h01, h23));
                    _mm_storeu_si128((__m128i*)(d + (q + 3) * A512_MR + t), _mm_unpackhi_epi64(h01, h23));
                }
            else
                q = qf / 4 * 4;                             /* done with row t - t % 4 */
            for (; q < qf; q++) d[q * A512_MR + t] = gemm_ld32(r + 4 * q);
            if (qf < nq) {
                int8_t tail[4] = {0};
                memcpy(tail, r + 4 * qf, (size_t)(kc - 4 * qf));
                d[qf * A512_MR + t] = gemm_ld32(tail);
            }
        }
}

/* Panel layout: for each k quad q, NR columns of 4 bytes b[k..k+3, n] + 128 (zero past K: a is zero there). */
A512_ATTR static void a512_pack_b(const gemm_args* g, int k0, int kc, int j0, int nc, void* bp) {
    int nq = gemm_cdiv(kc, 4), jv = 0, qv = 0;              /* columns < jv and quads < qv: packed by SIMD */
    size_t panel = gemm_panel(nq, A512_NR);                 /* bytes per panel */
    uint8_t* d = bp;
    const __m128i bias = _mm_set1_epi8((char)0x80);
    if (g->sbn == 1) {                                      /* [K, N] rows: four rows at a time, in order */
        jv = nc / 16 * 16, qv = nq;
        for (int q = 0; q < nq; q++) {
            const int8_t* r[4];
            for (int t = 0; t < 4; t++) r[t] = 4 * q + t < kc ? g->b + (ptrdiff_t)(k0 + 4 * q + t) * g->sbk + j0 : NULL;
            for (int v = 0; v < jv; v += 16) {
                __m128i x[4];
                for (int t = 0; t < 4; t++) x[t] = r[t] ? _mm_loadu_si128((const __m128i*)(r[t] + v)) : _mm_setzero_si128();
                __m128i l01 = _mm_unpacklo_epi8(x[0], x[1]), h01 = _mm_unpackhi_epi8(x[0], x[1]);
                __m128i l23 = _mm_unpacklo_epi8(x[2], x[3]), h23 = _mm_unpackhi_epi8(x[2], x[3]);
                __m128i* o = (__m128i*)(d + (v / A512_NR) * panel + 4 * (q * A512_NR + v % A512_NR));
                _mm_store_si128(o + 0, _mm_xor_si128(_mm_unpacklo_epi16(l01, l23), bias));
                _mm_store_si128(o + 1, _mm_xor_si128(_mm_unpackhi_epi16(l01, l23), bias));
                _mm_store_si128(o + 2, _mm_xor_si128(_mm_unpacklo_epi16(h01, h23), bias));
                _mm_store_si128(o + 3, _mm_xor_si128(_mm_unpackhi_epi16(h01, h23), bias));
            }
        }
    } else {                                                /* [N, K] rows: 4 rows x 4 quads, transposed */
        jv = nc / 4 * 4, qv = kc / 16 * 4;
        for (int j = 0; j < jv; j += 4) {
            const int8_t* r = g->b + (ptrdiff_t)(j0 + j) * g->sbn + k0;
            uint8_t* o = d + (j / A512_NR) * panel + 4 * (j % A512_NR);
            for (int q = 0; q < qv; q += 4) {
                __m128i x[4];
                for (int t = 0; t < 4; t++) x[t] = _mm_loadu_si128((const __m128i*)(r + t * g->sbn + 4 * q));
                __m128i l01 = _mm_unpacklo_epi32(x[0], x[1]), h01 = _mm_unpackhi_epi32(x[0], x[1]);
                __m128i l23 = _mm_unpacklo_epi32(x[2], x[3]), h23 = _mm_unpackhi_epi32(x[2], x[3]);
                _mm_storeu_si128((__m128i*)(o + (q + 0) * 4 * A512_NR), _mm_xor_si128(_mm_unpacklo_epi64(l01, l23), bias));
                _mm_storeu_si128((__m128i*)(o + (q + 1) * 4 * A512_NR), _mm_xor_si128(_mm_unpackhi_epi64(l01, l23), bias));
                _mm_storeu_si128((__m128i*)(o + (q + 2) * 4 * A512_NR), _mm_xor_si128(_mm_unpacklo_epi64(h01, h23), bias));
                _mm_storeu_si128((__m128i*)(o + (q + 3) * 4 * A512_NR), _mm_xor_si128(_mm_unpackhi_epi64(h01, h23), bias));
            }
        }
    }
    for (int j = 0; j < gemm_cdiv(nc, A512_NR) * A512_NR; j++) {   /* whatever SIMD did not pack */
        uint8_t* o = d + (j / A512_NR) * panel + 4 * (j % A512_NR);
        const int8_t* e = g->b + (ptrdiff_t)k0 * g->sbk + (ptrdiff_t)(j0 + j) * g->sbn;
        for (int k = j < jv ? 4 * qv : 0; k < 4 * nq; k++)
            o[(k / 4) * 4 * A512_NR + k % 4] = (uint8_t)(j < nc && k < kc ? e[(ptrdiff_t)k * g->sbk] : 0) ^ 0x80;
    }
}

A512_INLINE void a512_micro_rows(const int R, int nq, const int32_t* ap, const uint8_t* bp, int32_t* c,
                                 ptrdiff_t ldc, int nr, int accumulate, const int32_t* rowcorr) {
    __m512i acc[A512_MR][A512_NV];
    for (int i = 0; i < R; i++) {
        for (int v = 0; v < A512_NV; v++) acc[i][v] = _mm512_setzero_si512();
        if (accumulate)
            for (int v = 0; v < A512_NV; v++) _mm_prefetch((const char*)(c + i * ldc + 16 * v), _MM_HINT_T0);
    }
    const int32_t* const aend = ap + (ptrdiff_t)nq * A512_MR;     /* pointer steps: see avx2_micro_rows */
#pragma GCC unroll 2
    for (; ap < aend; ap += A512_MR, bp += 4 * A512_NR) {
        __m512i b[A512_NV];
        for (int v = 0; v < A512_NV; v++) b[v] = _mm512_load_si512((const void*)(bp + 64 * v));
        for (int i = 0; i < R; i++) {
            __m512i x = _mm512_set1_epi32(ap[i]);
            for (int v = 0; v < A512_NV; v++) acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], b[v], x);
        }
    }
    for (int i = 0; i < R; i++) {
        int32_t* ci = c + i * ldc;
        __m512i corr = _mm512_set1_epi32(rowcorr ? rowcorr[i] : 0);
        for (int v = 0; v < A512_NV; v++) {
            int left = nr - 16 * v;
            if (left <= 0) break;
            __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            __m512i r = _mm512_sub_epi32(acc[i][v], corr);
            if (accumulate) r = _mm512_add_epi32(r, _mm512_maskz_loadu_epi32(m, ci + 16 * v));
            _mm512_mask_storeu_epi32(ci + 16 * v, m, r);
        }
    }
}

A512_ATTR static void a512_micro(int mr, int nq, const void* ap, const void* bp, int32_t* c, ptrdiff_t ldc, int nr,
                                 int accumulate, const int32_t* rowcorr) {
    switch (mr) {
    case 8: a512_micro_rows(8, nq, ap, bp, c, ldc, nr, accumulate, rowcorr); break;
    case 7: a512_micro_rows(7, nq, ap, bp, c, ldc, nr, accumulate, rowcorr); break;
    case 6: a512_micro_rows(6, nq, ap, bp, c, ldc, nr, accumulate, rowcorr); break;
    case 5: a512_micro_rows(5, nq, ap, bp, c, ldc, nr, accumulate, rowcorr); break;
    case 4: a512_micro_rows(4, nq, ap, bp, c, ldc, nr, accumulate, rowcorr); break;
    case 3: a512_micro_rows(3, nq, ap, bp, c, ldc, nr, accumulate, rowcorr); break;
    case 2: a512_micro_rows(2, nq, ap, bp, c, ldc, nr, accumulate, rowcorr); break;
    default: a512_micro_rows(1, nq, ap, bp, c, ldc, nr, accumulate, rowcorr); break;
    }
}

#define A512_DOT_NS 4
/* R rows of a (bytes, zero-padded to 64) against 4 weight rows; the weight's k tail is a masked load. */
A512_INLINE void a512_dot_rows(const int R, int K, const int8_t* a, ptrdiff_t lda, const int8_t* const* w,
                               int ns, int32_t* c, ptrdiff_t ldc, const int32_t* rowcorr) {
    __m512i acc[4][A512_DOT_NS];
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int r = 0; r < R; r++)
        for (int s = 0; s < A512_DOT_NS; s++) acc[r][s] = _mm512_setzero_si512();
    for (int k = 0; k < K; k += 64) {
        __mmask64 m = K - k >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (K - k)) - 1);
        __m512i wv[A512_DOT_NS];
        for (int s = 0; s < A512_DOT_NS; s++) wv[s] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, w[s] + k), bias);
        for (int r = 0; r < R; r++) {
            __m512i av = _mm512_loadu_si512((const void*)(a + r * lda + k));
            for (int s = 0; s < A512_DOT_NS; s++) acc[r][s] = _mm512_dpbusd_epi32(acc[r][s], wv[s], av);
        }
    }
    for (int r = 0; r < R; r++)
        for (int s = 0; s < ns; s++) c[r * ldc + s] = _mm512_reduce_add_epi32(acc[r][s]) - rowcorr[r];
}

A512_ATTR static void a512_dot(const gemm_args* g, const void* ap, ptrdiff_t Kp, const int32_t* rowcorr,
                               const int8_t* w, int ns, int32_t* c) {
    const int8_t* wr[A512_DOT_NS];
    for (int s = 0; s < A512_DOT_NS; s++) wr[s] = w + (s < ns ? s : 0) * g->sbn;
    const int8_t* a = ap;
    int m = 0;
    for (; m + 4 <= g->M; m += 4) a512_dot_rows(4, g->K, a + m * Kp, Kp, wr, ns, c + m * g->ldc, g->ldc, rowcorr + m);
    switch (g->M - m) {
    case 3: a512_dot_rows(3, g->K, a + m * Kp, Kp, wr, ns, c + m * g->ldc, g->ldc, rowcorr + m); break;
    case 2: a512_dot_rows(2, g->K, a + m * Kp, Kp, wr, ns, c + m * g->ldc, g->ldc, rowcorr + m); break;
    case 1: a512_dot_rows(1, g->K, a + m * Kp, Kp, wr, ns, c + m * g->ldc, g->ldc, rowcorr + m); break;
    }
}

static const gemm_path GEMM_PATH_AVX512 = {
    .kg = 4, .mr = A512_MR, .nr = A512_NR, .kc = 1024, .kc_small = 256, .mc = 128, .nc_small = 4096, .nc_max = 1024,
    .dot_max_m = 32, .dot_ns = A512_DOT_NS, .dot_kalign = 64,
    .pack_a = a512_pack_a, .pack_b = a512_pack_b, .micro = a512_micro, .dot_prep = a512_dot_prep, .dot = a512_dot,
#ifdef GEMM_HAVE_AVX2
    /* small-M KN: the AVX2 fused kernel (every AVX-512 CPU has AVX2). It reads the weight once, as the
       blocked kernel does not: on a Zen 5 EPYC core (one thread, best of 15), M x 7168 x 4096 took 0.94 ms
       with it against 2.02 ms blocked at M = 1, 1.16 / 2.07 ms at M = 2, 2.11 / 2.10 ms at M = 4 and
       5.1 / 2.35 ms at M = 8, hence 4 */
    .gemv_max_m = 4, .gemv_kn = avx2_gemv_kn,
#endif
};
#endif

/* ------------------------------------------------------------------------------------ entry points */
static const char* const GEMM_PATH_NAMES[GEMM_NPATHS] = {"c", "avx2", "avx512_vnni"};

/* 1 when path can run here: compiled into this build and supported by this CPU (and its OS). */
static int gemm_available(int path) {
#if defined(GEMM_HAVE_AVX2) || defined(GEMM_HAVE_AVX512)
    __builtin_cpu_init();
#endif
    switch (path) {
    case GEMM_C: return 1;
#ifdef GEMM_HAVE_AVX2
    case GEMM_AVX2: return __builtin_cpu_supports("avx2");
#endif
#ifdef GEMM_HAVE_AVX512
    case GEMM_AVX512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
    default: return 0;
    }
}

/* c = a @ b exactly on the given path (the caller checked gemm_available). 0, or -1 when out of memory. */
static int gemm_s8(int path, const gemm_args* g) {
    if (g->M <= 0 || g->N <= 0) return 0;
    if (g->K <= 0) {
        for (int m = 0; m < g->M; m++) memset(g->c + (ptrdiff_t)m * g->ldc, 0, sizeof(int32_t) * (size_t)g->N);
        return 0;
    }
    switch (path) {
#ifdef GEMM_HAVE_AVX2
    case GEMM_AVX2: return gemm_simd(&GEMM_PATH_AVX2, g);
#endif
#ifdef GEMM_HAVE_AVX512
    case GEMM_AVX512: return gemm_simd(&GEMM_PATH_AVX512, g);
#endif
    default: return gemm_c(g);
    }
}

#endif
