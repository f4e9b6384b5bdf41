/* GEMM: packed, cache-blocked, register-tiled; AVX-512F or AVX2+FMA
 * micro-kernels chosen at run time (nd_simd_level: cpuid, or NEEDLE_CPU_SIMD),
 * portable C otherwise.  The SIMD code is compiled per function with a target
 * attribute, so the module itself needs no -march flag and runs on any x86-64
 * (or non-x86) CPU; the AVX-512 code is only reached on CPUs that have it. */
#include <string.h>
#include "needle_cpu.h"
#ifdef _OPENMP
#include <omp.h>
#define ND_TID(t) (t) = omp_get_thread_num()
#else
#define ND_TID(t) (t) = 0
#endif

#define ND_MAX_THREADS 256
/* below ~2^18 multiply-adds a product runs on one thread */
#define ND_GEMM_GRAIN (1 << 18)
/* products smaller than this may run one-per-thread across a batch */
#define ND_GEMM_BIG ((nd_i64)1 << 22)
/* A operands up to this many elements (256 KiB of float32) skip packing */
#define ND_DIRECT_A_MAX 65536

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define ND_HAVE_X86_SIMD 1
#include <immintrin.h>

/* 6 x 16 float32: 12 ymm accumulators, 2 loads of B and 6 broadcasts of A per k */
__attribute__((target("avx2,fma")))
static void kern_avx2_f32(nd_i64 kc, const float *restrict Ap, const float *restrict Bp,
                          float *restrict C, nd_i64 ldc, int acc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (nd_i64 k = 0; k < kc; k++) {
    __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);
    __m256 a;
    a = _mm256_broadcast_ss(Ap + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(Ap + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(Ap + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(Ap + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(Ap + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(Ap + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    Ap += 6; Bp += 16;
  }
#define ND_ST(r, x0, x1)                                                              \
  do {                                                                                \
    float *cr = C + (r) * ldc;                                                        \
    if (acc) { x0 = _mm256_add_ps(x0, _mm256_loadu_ps(cr)); x1 = _mm256_add_ps(x1, _mm256_loadu_ps(cr + 8)); } \
    _mm256_storeu_ps(cr, x0); _mm256_storeu_ps(cr + 8, x1);                           \
  } while (0)
  ND_ST(0, c00, c01); ND_ST(1, c10, c11); ND_ST(2, c20, c21);
  ND_ST(3, c30, c31); ND_ST(4, c40, c41); ND_ST(5, c50, c51);
#undef ND_ST
}

/* Same as kern_avx2_f32 but A is read in place (rows rs apart, columns cs
 * apart): used for small products, where packing A would cost as much as
 * the multiply.  Broadcast loads need no contiguity. */
__attribute__((target("avx2,fma")))
static void kern_avx2_direct_f32(nd_i64 kc, const float *restrict A, nd_i64 rs, nd_i64 cs,
                                 const float *restrict Bp, float *restrict C, nd_i64 ldc, int acc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  const float *a0 = A, *a1 = A + rs, *a2 = A + 2 * rs, *a3 = A + 3 * rs, *a4 = A + 4 * rs, *a5 = A + 5 * rs;
  for (nd_i64 k = 0; k < kc; k++) {
    nd_i64 o = k * cs;
    __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);
    __m256 a;
    a = _mm256_broadcast_ss(a0 + o); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(a1 + o); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(a2 + o); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(a3 + o); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(a4 + o); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(a5 + o); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    Bp += 16;
  }
#define ND_ST(r, x0, x1)                                                              \
  do {                                                                                \
    float *cr = C + (r) * ldc;                                                        \
    if (acc) { x0 = _mm256_add_ps(x0, _mm256_loadu_ps(cr)); x1 = _mm256_add_ps(x1, _mm256_loadu_ps(cr + 8)); } \
    _mm256_storeu_ps(cr, x0); _mm256_storeu_ps(cr + 8, x1);                           \
  } while (0)
  ND_ST(0, c00, c01); ND_ST(1, c10, c11); ND_ST(2, c20, c21);
  ND_ST(3, c30, c31); ND_ST(4, c40, c41); ND_ST(5, c50, c51);
#undef ND_ST
}

/* The last column panel of a product whose width leaves <= 8 columns there
 * (p = 100: 6 full panels and 4 columns) runs these 6 x 8 halves of the two
 * kernels above: the full kernel would spend an eighth of such a product on
 * zero padding.  Same packed layouts (B~ rows 16 apart), C is 8 wide. */
#define ND_HALF_BODY(LOADA)                                                            \
  __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), c2 = _mm256_setzero_ps(); \
  __m256 c3 = _mm256_setzero_ps(), c4 = _mm256_setzero_ps(), c5 = _mm256_setzero_ps(); \
  for (nd_i64 k = 0; k < kc; k++) {                                                    \
    __m256 b0 = _mm256_load_ps(Bp);                                                    \
    c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(LOADA(0)), b0, c0);                     \
    c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(LOADA(1)), b0, c1);                     \
    c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(LOADA(2)), b0, c2);                     \
    c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(LOADA(3)), b0, c3);                     \
    c4 = _mm256_fmadd_ps(_mm256_broadcast_ss(LOADA(4)), b0, c4);                     \
    c5 = _mm256_fmadd_ps(_mm256_broadcast_ss(LOADA(5)), b0, c5);                     \
    ND_HALF_STEP;                                                                      \
  }                                                                                    \
  __m256 cs_[6] = {c0, c1, c2, c3, c4, c5};                                            \
  for (int r = 0; r < 6; r++) {                                                        \
    float *cr = C + r * ldc;                                                           \
    _mm256_storeu_ps(cr, acc ? _mm256_add_ps(cs_[r], _mm256_loadu_ps(cr)) : cs_[r]);   \
  }

__attribute__((target("avx2,fma")))
static void kern_avx2_half_f32(nd_i64 kc, const float *restrict Ap, const float *restrict Bp,
                               float *restrict C, nd_i64 ldc, int acc) {
#define ND_PACKED_A(i) (Ap + (i))
#define ND_HALF_STEP (Ap += 6, Bp += 16)
  ND_HALF_BODY(ND_PACKED_A)
#undef ND_HALF_STEP
#undef ND_PACKED_A
}

__attribute__((target("avx2,fma")))
static void kern_avx2_direct_half_f32(nd_i64 kc, const float *restrict A, nd_i64 rs, nd_i64 cs,
                                      const float *restrict Bp, float *restrict C, nd_i64 ldc, int acc) {
#define ND_DIRECT_A(i) (A + (i) * rs + k * cs)
#define ND_HALF_STEP (Bp += 16)
  ND_HALF_BODY(ND_DIRECT_A)
#undef ND_HALF_STEP
#undef ND_DIRECT_A
}
#undef ND_HALF_BODY

/* 6 x 8 float64: 12 ymm accumulators */
__attribute__((target("avx2,fma")))
static void kern_avx2_f64(nd_i64 kc, const double *restrict Ap, const double *restrict Bp,
                          double *restrict C, nd_i64 ldc, int acc) {
  __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();
  __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();
  __m256d c20 = _mm256_setzero_pd(), c21 = _mm256_setzero_pd();
  __m256d c30 = _mm256_setzero_pd(), c31 = _mm256_setzero_pd();
  __m256d c40 = _mm256_setzero_pd(), c41 = _mm256_setzero_pd();
  __m256d c50 = _mm256_setzero_pd(), c51 = _mm256_setzero_pd();
  for (nd_i64 k = 0; k < kc; k++) {
    __m256d b0 = _mm256_load_pd(Bp), b1 = _mm256_load_pd(Bp + 4);
    __m256d a;
    a = _mm256_broadcast_sd(Ap + 0); c00 = _mm256_fmadd_pd(a, b0, c00); c01 = _mm256_fmadd_pd(a, b1, c01);
    a = _mm256_broadcast_sd(Ap + 1); c10 = _mm256_fmadd_pd(a, b0, c10); c11 = _mm256_fmadd_pd(a, b1, c11);
    a = _mm256_broadcast_sd(Ap + 2); c20 = _mm256_fmadd_pd(a, b0, c20); c21 = _mm256_fmadd_pd(a, b1, c21);
    a = _mm256_broadcast_sd(Ap + 3); c30 = _mm256_fmadd_pd(a, b0, c30); c31 = _mm256_fmadd_pd(a, b1, c31);
    a = _mm256_broadcast_sd(Ap + 4); c40 = _mm256_fmadd_pd(a, b0, c40); c41 = _mm256_fmadd_pd(a, b1, c41);
    a = _mm256_broadcast_sd(Ap + 5); c50 = _mm256_fmadd_pd(a, b0, c50); c51 = _mm256_fmadd_pd(a, b1, c51);
    Ap += 6; Bp += 8;
  }
#define ND_ST(r, x0, x1)                                                              \
  do {                                                                                \
    double *cr = C + (r) * ldc;                                                       \
    if (acc) { x0 = _mm256_add_pd(x0, _mm256_loadu_pd(cr)); x1 = _mm256_add_pd(x1, _mm256_loadu_pd(cr + 4)); } \
    _mm256_storeu_pd(cr, x0); _mm256_storeu_pd(cr + 4, x1);                           \
  } while (0)
  ND_ST(0, c00, c01); ND_ST(1, c10, c11); ND_ST(2, c20, c21);
  ND_ST(3, c30, c31); ND_ST(4, c40, c41); ND_ST(5, c50, c51);
#undef ND_ST
}
/* ---- AVX-512F micro-kernels ----
 * The same register blocking as the AVX2 kernels above (6 rows, 2 vectors of
 * B per k, 12 accumulators), each register twice as wide: 6 x 32 float32 and
 * 6 x 16 float64.  Per C element the arithmetic is the same FMA chain over k
 * in the same order, so they give the AVX2 kernels' values bit for bit. */
/* 6 x 32 float32: 12 zmm accumulators */
__attribute__((target("avx512f,fma")))
static void kern_avx512_f32(nd_i64 kc, const float *restrict Ap, const float *restrict Bp,
                            float *restrict C, nd_i64 ldc, int acc) {
  __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps();
  __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
  __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
  __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
  __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps();
  __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
  for (nd_i64 k = 0; k < kc; k++) {
    __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
    __m512 a;
    a = _mm512_set1_ps(Ap[0]); c00 = _mm512_fmadd_ps(a, b0, c00); c01 = _mm512_fmadd_ps(a, b1, c01);
    a = _mm512_set1_ps(Ap[1]); c10 = _mm512_fmadd_ps(a, b0, c10); c11 = _mm512_fmadd_ps(a, b1, c11);
    a = _mm512_set1_ps(Ap[2]); c20 = _mm512_fmadd_ps(a, b0, c20); c21 = _mm512_fmadd_ps(a, b1, c21);
    a = _mm512_set1_ps(Ap[3]); c30 = _mm512_fmadd_ps(a, b0, c30); c31 = _mm512_fmadd_ps(a, b1, c31);
    a = _mm512_set1_ps(Ap[4]); c40 = _mm512_fmadd_ps(a, b0, c40); c41 = _mm512_fmadd_ps(a, b1, c41);
    a = _mm512_set1_ps(Ap[5]); c50 = _mm512_fmadd_ps(a, b0, c50); c51 = _mm512_fmadd_ps(a, b1, c51);
    Ap += 6; Bp += 32;
  }
#define ND_ZST(r, x0, x1)                                                             \
  do {                                                                               \
    float *cr = C + (r) * ldc;                                                         \
    if (acc) { x0 = _mm512_add_ps(x0, _mm512_loadu_ps(cr)); x1 = _mm512_add_ps(x1, _mm512_loadu_ps(cr + 16)); } \
    _mm512_storeu_ps(cr, x0); _mm512_storeu_ps(cr + 16, x1);                       \
  } while (0)
  ND_ZST(0, c00, c01); ND_ZST(1, c10, c11); ND_ZST(2, c20, c21);
  ND_ZST(3, c30, c31); ND_ZST(4, c40, c41); ND_ZST(5, c50, c51);
#undef ND_ZST
}

/* kern_avx512_f32 with A read in place (see kern_avx2_direct_f32) */
__attribute__((target("avx512f,fma")))
static void kern_avx512_direct_f32(nd_i64 kc, const float *restrict A, nd_i64 rs, nd_i64 cs,
                                   const float *restrict Bp, float *restrict C, nd_i64 ldc, int acc) {
  __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps();
  __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
  __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
  __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
  __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps();
  __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
  for (nd_i64 k = 0; k < kc; k++) {
    const float *ak = A + k * cs;
    __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);
    __m512 a;
    a = _mm512_set1_ps(ak[0 * rs]); c00 = _mm512_fmadd_ps(a, b0, c00); c01 = _mm512_fmadd_ps(a, b1, c01);
    a = _mm512_set1_ps(ak[1 * rs]); c10 = _mm512_fmadd_ps(a, b0, c10); c11 = _mm512_fmadd_ps(a, b1, c11);
    a = _mm512_set1_ps(ak[2 * rs]); c20 = _mm512_fmadd_ps(a, b0, c20); c21 = _mm512_fmadd_ps(a, b1, c21);
    a = _mm512_set1_ps(ak[3 * rs]); c30 = _mm512_fmadd_ps(a, b0, c30); c31 = _mm512_fmadd_ps(a, b1, c31);
    a = _mm512_set1_ps(ak[4 * rs]); c40 = _mm512_fmadd_ps(a, b0, c40); c41 = _mm512_fmadd_ps(a, b1, c41);
    a = _mm512_set1_ps(ak[5 * rs]); c50 = _mm512_fmadd_ps(a, b0, c50); c51 = _mm512_fmadd_ps(a, b1, c51);
    Bp += 32;
  }
#define ND_ZST(r, x0, x1)                                                             \
  do {                                                                               \
    float *cr = C + (r) * ldc;                                                         \
    if (acc) { x0 = _mm512_add_ps(x0, _mm512_loadu_ps(cr)); x1 = _mm512_add_ps(x1, _mm512_loadu_ps(cr + 16)); } \
    _mm512_storeu_ps(cr, x0); _mm512_storeu_ps(cr + 16, x1);                       \
  } while (0)
  ND_ZST(0, c00, c01); ND_ZST(1, c10, c11); ND_ZST(2, c20, c21);
  ND_ZST(3, c30, c31); ND_ZST(4, c40, c41); ND_ZST(5, c50, c51);
#undef ND_ZST
}

/* 6 x 16 float64: 12 zmm accumulators */
__attribute__((target("avx512f,fma")))
static void kern_avx512_f64(nd_i64 kc, const double *restrict Ap, const double *restrict Bp,
                            double *restrict C, nd_i64 ldc, int acc) {
  __m512d c00 = _mm512_setzero_pd(), c01 = _mm512_setzero_pd();
  __m512d c10 = _mm512_setzero_pd(), c11 = _mm512_setzero_pd();
  __m512d c20 = _mm512_setzero_pd(), c21 = _mm512_setzero_pd();
  __m512d c30 = _mm512_setzero_pd(), c31 = _mm512_setzero_pd();
  __m512d c40 = _mm512_setzero_pd(), c41 = _mm512_setzero_pd();
  __m512d c50 = _mm512_setzero_pd(), c51 = _mm512_setzero_pd();
  for (nd_i64 k = 0; k < kc; k++) {
    __m512d b0 = _mm512_load_pd(Bp), b1 = _mm512_load_pd(Bp + 8);
    __m512d a;
    a = _mm512_set1_pd(Ap[0]); c00 = _mm512_fmadd_pd(a, b0, c00); c01 = _mm512_fmadd_pd(a, b1, c01);
    a = _mm512_set1_pd(Ap[1]); c10 = _mm512_fmadd_pd(a, b0, c10); c11 = _mm512_fmadd_pd(a, b1, c11);
    a = _mm512_set1_pd(Ap[2]); c20 = _mm512_fmadd_pd(a, b0, c20); c21 = _mm512_fmadd_pd(a, b1, c21);
    a = _mm512_set1_pd(Ap[3]); c30 = _mm512_fmadd_pd(a, b0, c30); c31 = _mm512_fmadd_pd(a, b1, c31);
    a = _mm512_set1_pd(Ap[4]); c40 = _mm512_fmadd_pd(a, b0, c40); c41 = _mm512_fmadd_pd(a, b1, c41);
    a = _mm512_set1_pd(Ap[5]); c50 = _mm512_fmadd_pd(a, b0, c50); c51 = _mm512_fmadd_pd(a, b1, c51);
    Ap += 6; Bp += 16;
  }
#define ND_ZST(r, x0, x1)                                                             \
  do {                                                                               \
    double *cr = C + (r) * ldc;                                                         \
    if (acc) { x0 = _mm512_add_pd(x0, _mm512_loadu_pd(cr)); x1 = _mm512_add_pd(x1, _mm512_loadu_pd(cr + 8)); } \
    _mm512_storeu_pd(cr, x0); _mm512_storeu_pd(cr + 8, x1);                       \
  } while (0)
  ND_ZST(0, c00, c01); ND_ZST(1, c10, c11); ND_ZST(2, c20, c21);
  ND_ZST(3, c30, c31); ND_ZST(4, c40, c41); ND_ZST(5, c50, c51);
#undef ND_ZST
}

/* r[0..7] (eight rows of 8 floats) transposed in registers: afterwards r[j]
 * holds column j, (r0[j], r1[j], ..., r7[j]) */
__attribute__((target("avx2"), always_inline))
static inline void tr8x8_avx2(__m256 *r) {
  __m256 u0 = _mm256_unpacklo_ps(r[0], r[1]), u1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 u2 = _mm256_unpacklo_ps(r[2], r[3]), u3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 u4 = _mm256_unpacklo_ps(r[4], r[5]), u5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 u6 = _mm256_unpacklo_ps(r[6], r[7]), u7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 v0 = _mm256_shuffle_ps(u0, u2, 0x44), v1 = _mm256_shuffle_ps(u0, u2, 0xEE);
  __m256 v2 = _mm256_shuffle_ps(u1, u3, 0x44), v3 = _mm256_shuffle_ps(u1, u3, 0xEE);
  __m256 v4 = _mm256_shuffle_ps(u4, u6, 0x44), v5 = _mm256_shuffle_ps(u4, u6, 0xEE);
  __m256 v6 = _mm256_shuffle_ps(u5, u7, 0x44), v7 = _mm256_shuffle_ps(u5, u7, 0xEE);
  r[0] = _mm256_permute2f128_ps(v0, v4, 0x20); r[1] = _mm256_permute2f128_ps(v1, v5, 0x20);
  r[2] = _mm256_permute2f128_ps(v2, v6, 0x20); r[3] = _mm256_permute2f128_ps(v3, v7, 0x20);
  r[4] = _mm256_permute2f128_ps(v0, v4, 0x31); r[5] = _mm256_permute2f128_ps(v1, v5, 0x31);
  r[6] = _mm256_permute2f128_ps(v2, v6, 0x31); r[7] = _mm256_permute2f128_ps(v3, v7, 0x31);
}

/* ---- packing six float32 rows of A ----
 * pack_a_'s layout puts the six rows' values for one k next to each other
 * (Ap[k * 6 + i]); read from row-major A that is a transpose, and the scalar
 * loop (one strided store per element) took 12-13% of a (400 x 10000) @
 * (10000 x 100) product, whose A is used only 100 times per element.  Here
 * eight k at a time are loaded from the six rows, transposed in registers as
 * an 8 x 8 block (two rows zero) and written as eight overlapping 8-float
 * stores 6 floats apart; the last store of the panel writes 4 + 2 floats so
 * nothing past the panel is touched.  Returns the k it packed (a multiple
 * of 8); the caller packs the rest. */
__attribute__((target("avx2")))
static nd_i64 pack_a6_rows_avx2(nd_i64 kc, const float *A, nd_i64 rs, float *Ap) {
  const float *r0 = A, *r1 = A + rs, *r2 = A + 2 * rs, *r3 = A + 3 * rs, *r4 = A + 4 * rs, *r5 = A + 5 * rs;
  nd_i64 k = 0;
  for (; k + 8 <= kc; k += 8) {
    /* rows a0..a5 and two zero rows: t[j] = column j = (a0[j] .. a5[j], 0, 0) */
    __m256 t[8] = {_mm256_loadu_ps(r0 + k), _mm256_loadu_ps(r1 + k), _mm256_loadu_ps(r2 + k),
                   _mm256_loadu_ps(r3 + k), _mm256_loadu_ps(r4 + k), _mm256_loadu_ps(r5 + k),
                   _mm256_setzero_ps(), _mm256_setzero_ps()};
    tr8x8_avx2(t);
    float *o = Ap + k * 6;
    for (int j = 0; j < 7; j++) _mm256_storeu_ps(o + 6 * j, t[j]);
    /* the eighth column: 6 floats, without the 2 zero lanes past them */
    _mm_storeu_ps(o + 42, _mm256_castps256_ps128(t[7]));
    _mm_storel_pi((__m64 *)(o + 46), _mm256_extractf128_ps(t[7], 1));
  }
  return k;
}

/* ---- small float32 products: no packing ----
 * For products up to ND_SMALL_MAX multiply-adds (the MLP's 128x100 @ 100x10
 * and its transposed backward forms) packing A and B and bouncing partial
 * tiles costs as much as the multiply.  Here A is read in place by
 * broadcasts (any strides), B rows are loaded straight from memory (or from
 * one small contiguous copy when B's rows are not contiguous), and the
 * column tail uses masked loads and stores, so no tile needs a bounce
 * buffer.  Tiles are up to 6 rows x 16 columns; an 8-column variant keeps
 * narrow outputs (p <= 8) from paying for 16 lanes. */
#define ND_SMALL_MAX ((nd_i64)1 << 18)
/* multiply-adds a thread of a small product that splits its rows over the
 * threads (gemm_small_f32): two threads from 2^16 on; below that the fork
 * costs about what it saves */
#define ND_SMALL_SPLIT ((nd_i64)1 << 15)
#define ND_SMALL_SPLIT_K 32
#define ND_SMALL_BCOPY 8192

__attribute__((target("avx2,fma"), always_inline))
static inline void small_tile_f32(const int rows, const int wide, const int full, nd_i64 k,
                                  const float *restrict A, nd_i64 rsa, nd_i64 csa,
                                  const float *restrict B, nd_i64 rsb,
                                  float *restrict C, nd_i64 ldc, int acc,
                                  __m256i m0, __m256i m1) {
  __m256 c0[6], c1[6];
  for (int r = 0; r < 6; r++) { c0[r] = _mm256_setzero_ps(); c1[r] = _mm256_setzero_ps(); }
  for (nd_i64 kk = 0; kk < k; kk++) {
    const float *b = B + kk * rsb;
    __m256 b0 = full ? _mm256_loadu_ps(b) : (wide ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, m0));
    __m256 b1 = _mm256_setzero_ps();
    if (wide) b1 = full ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, m1);
    const float *a = A + kk * csa;
    for (int r = 0; r < rows; r++) {
      __m256 av = _mm256_broadcast_ss(a + r * rsa);
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      if (wide) c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
  }
  for (int r = 0; r < rows; r++) {
    float *c = C + r * ldc;
    if (full) {
      if (acc) { c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(c)); c1[r] = _mm256_add_ps(c1[r], _mm256_loadu_ps(c + 8)); }
      _mm256_storeu_ps(c, c0[r]); _mm256_storeu_ps(c + 8, c1[r]);
    } else if (wide) {
      if (acc) { c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(c)); c1[r] = _mm256_add_ps(c1[r], _mm256_maskload_ps(c + 8, m1)); }
      _mm256_storeu_ps(c, c0[r]); _mm256_maskstore_ps(c + 8, m1, c1[r]);
    } else {
      if (acc) c0[r] = _mm256_add_ps(c0[r], _mm256_maskload_ps(c, m0));
      _mm256_maskstore_ps(c, m0, c0[r]);
    }
  }
}

/* one column panel (nr <= 16 columns) over all rows, tile variant fixed */
#define ND_SMALL_PANEL(WIDE, FULL)                                                       \
  __attribute__((target("avx2,fma")))                                                    \
  static void small_panel_##WIDE##FULL(nd_i64 m, nd_i64 k, const float *A, nd_i64 rsa,   \
                                       nd_i64 csa, const float *B, nd_i64 rsb, float *C, \
                                       nd_i64 ldc, int acc, __m256i m0, __m256i m1) {    \
    nd_i64 i = 0;                                                                        \
    for (; i + 6 <= m; i += 6)                                                           \
      small_tile_f32(6, WIDE, FULL, k, A + i * rsa, rsa, csa, B, rsb, C + i * ldc, ldc, acc, m0, m1); \
    switch (m - i) {                                                                     \
      case 5: small_tile_f32(5, WIDE, FULL, k, A + i * rsa, rsa, csa, B, rsb, C + i * ldc, ldc, acc, m0, m1); break; \
      case 4: small_tile_f32(4, WIDE, FULL, k, A + i * rsa, rsa, csa, B, rsb, C + i * ldc, ldc, acc, m0, m1); break; \
      case 3: small_tile_f32(3, WIDE, FULL, k, A + i * rsa, rsa, csa, B, rsb, C + i * ldc, ldc, acc, m0, m1); break; \
      case 2: small_tile_f32(2, WIDE, FULL, k, A + i * rsa, rsa, csa, B, rsb, C + i * ldc, ldc, acc, m0, m1); break; \
      case 1: small_tile_f32(1, WIDE, FULL, k, A + i * rsa, rsa, csa, B, rsb, C + i * ldc, ldc, acc, m0, m1); break; \
      default: break;                                                                    \
    }                                                                                    \
  }
ND_SMALL_PANEL(1, 1)
ND_SMALL_PANEL(1, 0)
ND_SMALL_PANEL(0, 0)

/* The same product seen as C^T = B^T A^T, for A stored column-major (a
 * transposed view, rows contiguous along i) and few output columns: vectors
 * run down 16 rows of A, B is broadcast (any strides), so no lane is wasted
 * on p < 16 columns; the 16 x jn tile of C is written back through a small
 * transposing buffer (C rows are p wide). */
__attribute__((target("avx2,fma"), always_inline))
static inline void small_tile_t_f32(const int cols, nd_i64 k, const float *restrict A, nd_i64 csa,
                                    const float *restrict B, nd_i64 rsb, nd_i64 csb,
                                    float *restrict C, nd_i64 ldc, int acc, nd_i64 ni,
                                    __m256i m0, __m256i m1) {
  __m256 c0[6], c1[6];
  for (int j = 0; j < 6; j++) { c0[j] = _mm256_setzero_ps(); c1[j] = _mm256_setzero_ps(); }
  const int full = ni == 16;
  for (nd_i64 kk = 0; kk < k; kk++) {
    const float *a = A + kk * csa;
    __m256 a0, a1;
    if (full) { a0 = _mm256_loadu_ps(a); a1 = _mm256_loadu_ps(a + 8); }
    else { a0 = _mm256_maskload_ps(a, m0); a1 = _mm256_maskload_ps(a + 8, m1); }
    const float *b = B + kk * rsb;
    for (int j = 0; j < cols; j++) {
      __m256 bv = _mm256_broadcast_ss(b + j * csb);
      c0[j] = _mm256_fmadd_ps(a0, bv, c0[j]);
      c1[j] = _mm256_fmadd_ps(a1, bv, c1[j]);
    }
  }
  float tmp[6][16] __attribute__((aligned(32)));
  for (int j = 0; j < cols; j++) { _mm256_store_ps(tmp[j], c0[j]); _mm256_store_ps(tmp[j] + 8, c1[j]); }
  for (nd_i64 i = 0; i < ni; i++)
    for (int j = 0; j < cols; j++)
      C[i * ldc + j] = acc ? C[i * ldc + j] + tmp[j][i] : tmp[j][i];
}

__attribute__((target("avx2,fma")))
static void gemm_small_t_f32(nd_i64 m, nd_i64 k, nd_i64 p, const float *A, nd_i64 csa,
                             const float *B, nd_i64 rsb, nd_i64 csb, float *C, nd_i64 ldc, int acc) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (nd_i64 i = 0; i < m; i += 16) {
    nd_i64 ni = m - i < 16 ? m - i : 16;
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)ni), lane);
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)ni - 8), lane);
    nd_i64 j = 0;
    for (; j + 6 <= p; j += 6)
      small_tile_t_f32(6, k, A + i, csa, B + j * csb, rsb, csb, C + i * ldc + j, ldc, acc, ni, m0, m1);
    const float *Bj = B + j * csb;
    float *Cj = C + i * ldc + j;
    switch (p - j) {
      case 5: small_tile_t_f32(5, k, A + i, csa, Bj, rsb, csb, Cj, ldc, acc, ni, m0, m1); break;
      case 4: small_tile_t_f32(4, k, A + i, csa, Bj, rsb, csb, Cj, ldc, acc, ni, m0, m1); break;
      case 3: small_tile_t_f32(3, k, A + i, csa, Bj, rsb, csb, Cj, ldc, acc, ni, m0, m1); break;
      case 2: small_tile_t_f32(2, k, A + i, csa, Bj, rsb, csb, Cj, ldc, acc, ni, m0, m1); break;
      case 1: small_tile_t_f32(1, k, A + i, csa, Bj, rsb, csb, Cj, ldc, acc, ni, m0, m1); break;
      default: break;
    }
  }
}

/* C (m x p) (+)= A @ B for a row-major B (rows rsb apart), in 16-column
 * panels, the last one masked */
__attribute__((target("avx2,fma")))
static void small_panels_f32(nd_i64 m, nd_i64 k, nd_i64 p, const float *A, nd_i64 rsa, nd_i64 csa,
                             const float *B, nd_i64 rsb, float *C, nd_i64 ldc, int acc) {
  for (nd_i64 j = 0; j < p; j += 16) {
    nd_i64 nr = p - j < 16 ? p - j : 16;
    const float *Bj = B + j;
    float *Cj = C + j;
    if (nr == 16) {
      __m256i ones = _mm256_set1_epi32(-1);
      small_panel_11(m, k, A, rsa, csa, Bj, rsb, Cj, ldc, acc, ones, ones);
    } else {
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr), lane);
      __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr - 8), lane);
      if (nr > 8) small_panel_10(m, k, A, rsa, csa, Bj, rsb, Cj, ldc, acc, m0, m1);
      else small_panel_00(m, k, A, rsa, csa, Bj, rsb, Cj, ldc, acc, m0, m1);
    }
  }
}

/* dst (k x p, row-major) = B for a B stored transposed (B[kk][j] at
 * B + kk + j * csb, i.e. B^T row-major with row stride csb): 8 x 8 blocks
 * transposed in registers.  The scalar copy read B one strided element at a
 * time: half of an attention q @ k^T batch (32x16 @ 16x32 products) went to
 * copying each product's k^T. */
__attribute__((target("avx2")))
static void transpose_b_f32(nd_i64 k, nd_i64 p, const float *B, nd_i64 csb, float *dst) {
  nd_i64 j0 = 0;
  for (; j0 + 8 <= p; j0 += 8) {
    const float *s0 = B + j0 * csb;
    nd_i64 k0 = 0;
    for (; k0 + 8 <= k; k0 += 8) {
      __m256 t[8];
      for (int j = 0; j < 8; j++) t[j] = _mm256_loadu_ps(s0 + j * csb + k0);
      tr8x8_avx2(t);
      for (int kk = 0; kk < 8; kk++) _mm256_storeu_ps(dst + (k0 + kk) * p + j0, t[kk]);
    }
    for (; k0 < k; k0++)
      for (nd_i64 j = 0; j < 8; j++) dst[k0 * p + j0 + j] = s0[j * csb + k0];
  }
  for (; j0 < p; j0++)
    for (nd_i64 kk = 0; kk < k; kk++) dst[kk * p + j0] = B[kk + j0 * csb];
}

/* small_panels_f32 (six-row tiles: a tile's rows share each broadcast B row)
 * or, for a column-major A (col_a), gemm_small_t_f32 (16-row blocks) */
static void small_rows_f32(int col_a, nd_i64 m, nd_i64 k, nd_i64 p, const float *A, nd_i64 rsa,
                           nd_i64 csa, const float *B, nd_i64 rsb, nd_i64 csb, float *C,
                           nd_i64 ldc, int acc) {
  if (col_a) gemm_small_t_f32(m, k, p, A, csa, B, rsb, csb, C, ldc, acc);
  else small_panels_f32(m, k, p, A, rsa, csa, B, rsb, C, ldc, acc);
}

/* small_rows_f32 with C's rows split over nt threads in whole tiles (blocks),
 * so that only the last thread has a partial one */
static void small_split_f32(int col_a, nd_i64 m, nd_i64 k, nd_i64 p, const float *A, nd_i64 rsa,
                            nd_i64 csa, const float *B, nd_i64 rsb, nd_i64 csb, float *C,
                            nd_i64 ldc, int acc, int nt) {
  nd_i64 unit = col_a ? 16 : 6, units = (m + unit - 1) / unit;
  if (nt > units) nt = (int)units;
  if (nt <= 1) {
    small_rows_f32(col_a, m, k, p, A, rsa, csa, B, rsb, csb, C, ldc, acc);
    return;
  }
  _Pragma("omp parallel num_threads(nt)")
  {
    int t, nth = nt;
    ND_TID(t);
#ifdef _OPENMP
    nth = omp_get_num_threads();
#endif
    nd_i64 r0 = units * t / nth * unit, r1 = units * (t + 1) / nth * unit;
    if (r1 > m) r1 = m;
    if (r1 > r0)
      small_rows_f32(col_a, r1 - r0, k, p, A + r0 * rsa, rsa, csa, B, rsb, csb, C + r0 * ldc, ldc, acc);
  }
}

/* 0 when done, -1 when the product is not one for this path.  nt > 1 splits
 * C's rows over threads: the caller asks for that from 2 * ND_SMALL_SPLIT
 * multiply-adds on (the MLP's 128x100 @ 100x10, 128k of them, ran in 4.6 us
 * on one thread and 3.2 us on two). */
__attribute__((target("avx2,fma")))
static int gemm_small_f32(nd_i64 m, nd_i64 k, nd_i64 p, const float *A, nd_i64 rsa, nd_i64 csa,
                          const float *B, nd_i64 rsb, nd_i64 csb, float *C, nd_i64 ldc, int acc,
                          int nt) {
  if (!nd_simd_avx2() || m * k * p > ND_SMALL_MAX) return -1;
  /* with a short k a tile is mostly its stores: two threads ran G @ W2^T
   * (128x10 @ 10x100) no faster than one */
  if (k < ND_SMALL_SPLIT_K) nt = 1;
  if (rsa == 1 && csa != 1 && p < 16 && m >= 16) {  /* column-major A, narrow C */
    small_split_f32(1, m, k, p, A, rsa, csa, B, rsb, csb, C, ldc, acc, nt);
    return 0;
  }
  float bcopy[ND_SMALL_BCOPY] __attribute__((aligned(64)));
  if (csb != 1 || p == 1) {
    /* B's rows are not contiguous (a transposed view): copy it once, row-major */
    if (k * p > ND_SMALL_BCOPY) return -1;
    if (rsb == 1 && csb >= k) {
      transpose_b_f32(k, p, B, csb, bcopy);
    } else {
      for (nd_i64 kk = 0; kk < k; kk++)
        for (nd_i64 j = 0; j < p; j++) bcopy[kk * p + j] = B[kk * rsb + j * csb];
    }
    B = bcopy; rsb = p;
  }
  small_split_f32(0, m, k, p, A, rsa, csa, B, rsb, 1, C, ldc, acc, nt);
  return 0;
}

/* Products with few rows a thread and a row-major B that fits in L2 (the
 * MLP's 128x784 @ 784x100; ND_SMALL_ROWS_B elements, ND_SMALL_ROWS_K rows):
 * each thread takes a slab of rows and reads A and B in place through the
 * small kernels.  Packing B -- shared by the threads
 * in gemm_shared_b_, with two barriers a k-block -- cost about a third of
 * such a product on two threads (128x784 @ 784x100: 64-68 -> 89-94 GFLOP/s).
 * 0 when done, -1 when the product is not one for this path. */
#define ND_SMALL_ROWS_B ((nd_i64)1 << 17)
#define ND_SMALL_ROWS_K 1024  /* no k-blocking here: a 16-column panel of B stays within L2 */
__attribute__((target("avx2,fma")))
static int gemm_small_rows_f32(nd_i64 m, nd_i64 k, nd_i64 p, const float *A, nd_i64 rsa, nd_i64 csa,
                               const float *B, nd_i64 rsb, nd_i64 csb, float *C, nd_i64 ldc, int acc,
                               int nt) {
  /* a column-major A (a transposed view, X^T @ G) is left to the packed paths:
   * each thread rereads its slab for every 16-column panel of B with loads k
   * columns apart (64x1024 @ 1024x64: 72 GFLOP/s here, 95 split by k) */
  if (!nd_simd_avx2() || csa != 1 || csb != 1 || k > ND_SMALL_ROWS_K || k * p > ND_SMALL_ROWS_B) return -1;
  small_split_f32(0, m, k, p, A, rsa, csa, B, rsb, csb, C, ldc, acc, nt);
  return 0;
}
#else
#define ND_HAVE_X86_SIMD 0
#define kern_avx2_f32 NULL
#define kern_avx2_f64 NULL
#define kern_avx2_direct_f32 NULL
#endif

/* Each dtype is instantiated twice from gemm_tmpl.h: once with the AVX2
 * tile width (AVX2 micro-kernels, or portable C when the level is "none")
 * and once with the AVX-512 width (suffix z).  nd_gemm_* picks one per call
 * from nd_simd_level(), so a forced level applies at once. */
#define T float
#define SUF f32
#define MR 6
#define NR 16
#define KC 256
#define MC 144
#define NC 3072
#define SIMD_ON() nd_simd_avx2()
#define KERN_SIMD kern_avx2_f32
#define KERN_DIRECT kern_avx2_direct_f32
#if ND_HAVE_X86_SIMD
#define KERN_HALF kern_avx2_half_f32
#define KERN_DIRECT_HALF kern_avx2_direct_half_f32
#define KERN_SMALL gemm_small_f32
#define KERN_SMALL_ROWS gemm_small_rows_f32
#define PACK_A6 pack_a6_rows_avx2
#endif
#include "gemm_tmpl.h"
#undef SUF
#undef NR
#undef KERN_SIMD
#undef KERN_DIRECT
#undef KERN_HALF
#undef KERN_DIRECT_HALF
#if ND_HAVE_X86_SIMD
#define SUF f32z
#define NR 32
#define KERN_SIMD kern_avx512_f32
#define KERN_DIRECT kern_avx512_direct_f32
#include "gemm_tmpl.h"
#undef SUF
#undef NR
#undef KERN_SIMD
#undef KERN_DIRECT
#endif
#undef T
#undef MR
#undef KC
#undef MC
#undef NC
#undef KERN_SMALL
#undef KERN_SMALL_ROWS
#undef PACK_A6

#define T double
#define SUF f64
#define MR 6
#define NR 8
#define KC 256
#define MC 72
#define NC 2048
#define KERN_SIMD kern_avx2_f64
#include "gemm_tmpl.h"
#undef SUF
#undef NR
#undef KERN_SIMD
#if ND_HAVE_X86_SIMD
#define SUF f64z
#define NR 16
#define KERN_SIMD kern_avx512_f64
#include "gemm_tmpl.h"
#endif

#if ND_HAVE_X86_SIMD
/* The AVX-512 tiles are twice as wide (32 float32 / 16 float64 columns) as
 * the AVX2 ones, which also have a half-width tile for a narrow last panel
 * (float32).  Where the wide panels would compute many more padding
 * columns -- the MLP's 100 outputs: 128 columns of work against 104 -- the
 * AVX2 tiles run instead: on Zen 4, which runs a 512-bit FMA as two 256-bit
 * halves, both widths have the same peak, and X^T @ G (784x128 @ 128x100)
 * ran at 157 GFLOP/s with the wide tiles, 172 with the AVX2 ones.  A CPU with
 * full-width AVX-512 units loses less to padding than it gains, hence only
 * when more than a tenth of the wide panels' columns would be padding. */
#define ND_NRZ_f32 32
#define ND_NRY_f32 16
#define ND_HALF_f32 1
#define ND_NRZ_f64 16
#define ND_NRY_f64 8
#define ND_HALF_f64 0
static int z_panels_waste(nd_i64 p, nd_i64 nrz, nd_i64 nry, int half) {
  nd_i64 padded_z = (p + nrz - 1) / nrz * nrz, rem = p % nry;
  nd_i64 padded_y = p - rem + (rem == 0 ? 0 : (half && rem <= nry / 2) ? nry / 2 : nry);
  return padded_y < padded_z && (padded_z - p) * 10 > padded_z;
}

#define ND_GEMM_ENTRY(T, SUF)                                                                   \
  int nd_gemm_##SUF(nd_i64 batch, nd_i64 m, nd_i64 k, nd_i64 p,                                 \
                    const T *A, nd_i64 sa0, nd_i64 sa1, nd_i64 sa2,                             \
                    const T *B, nd_i64 sb0, nd_i64 sb1, nd_i64 sb2,                             \
                    T *C, nd_i64 sc0, nd_i64 ldc, int acc) {                                    \
    if (nd_simd_level() >= ND_SIMD_AVX512 && !z_panels_waste(p, ND_NRZ_##SUF, ND_NRY_##SUF, ND_HALF_##SUF)) \
      return gemm_batch_##SUF##z(batch, m, k, p, A, sa0, sa1, sa2, B, sb0, sb1, sb2, C, sc0, ldc, acc); \
    return gemm_batch_##SUF(batch, m, k, p, A, sa0, sa1, sa2, B, sb0, sb1, sb2, C, sc0, ldc, acc); \
  }
#else
#define ND_GEMM_ENTRY(T, SUF)                                                                   \
  int nd_gemm_##SUF(nd_i64 batch, nd_i64 m, nd_i64 k, nd_i64 p,                                 \
                    const T *A, nd_i64 sa0, nd_i64 sa1, nd_i64 sa2,                             \
                    const T *B, nd_i64 sb0, nd_i64 sb1, nd_i64 sb2,                             \
                    T *C, nd_i64 sc0, nd_i64 ldc, int acc) {                                    \
    return gemm_batch_##SUF(batch, m, k, p, A, sa0, sa1, sa2, B, sb0, sb1, sb2, C, sc0, ldc, acc); \
  }
#endif
ND_GEMM_ENTRY(float, f32)
ND_GEMM_ENTRY(double, f64)
