/* GEMM: packed, cache-blocked, register-tiled; AVX2+FMA micro-kernels chosen
 * at run time (__builtin_cpu_supports), portable C otherwise.  The AVX2 code
 * is compiled per function with target("avx2,fma"), so the module itself
 * needs no -march flag and runs on any x86-64 (or non-x86) CPU. */
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
#else
#define ND_HAVE_X86_SIMD 0
#define kern_avx2_f32 NULL
#define kern_avx2_f64 NULL
#define kern_avx2_direct_f32 NULL
#endif

#define T float
#define SUF f32
#define MR 6
#define NR 16
#define KC 256
#define MC 144
#define NC 3072
#define KERN_SIMD kern_avx2_f32
#define KERN_DIRECT kern_avx2_direct_f32
#include "gemm_tmpl.h"
#undef T
#undef SUF
#undef MR
#undef NR
#undef KC
#undef MC
#undef NC
#undef KERN_SIMD
#undef KERN_DIRECT

#define T double
#define SUF f64
#define MR 6
#define NR 8
#define KC 256
#define MC 72
#define NC 2048
#define KERN_SIMD kern_avx2_f64
#include "gemm_tmpl.h"
