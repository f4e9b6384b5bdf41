/* Row kernels over the last axis: softmax backward and layer norm (forward,
 * input adjoint, parameter adjoints) -- op overrides of ops.softmax and
 * ops.layer_norm.  Rows are contiguous (outer, r); threads split the rows.
 *
 * The rows of a Transformer are short (d_model 64, 32 keys), so a kernel's
 * time is per-row latency rather than bandwidth: the row's sums, the
 * division and square root of its statistics.  Three things keep it down:
 *
 * - Row sums (FR_SUM) keep FR_LANES independent partial sums in T over
 *   blocks of FR_BLOCK elements, add each block's partials by halves (vector
 *   adds) and the block's total into a double.  A double accumulator is one
 *   dependent add per element (a (1024, 64) layer norm backward took 270 us);
 *   an `omp simd` reduction in double is still one chain of 2-lane adds.  A
 *   partial sums at most FR_BLOCK / FR_LANES = 16 elements in T: the error
 *   stays a few ulp of the row sum, as the composition's float32 sums.
 * - The per-row workers are compiled three times for float32 -- AVX-512F,
 *   AVX2+FMA and the baseline -- and chosen per call by nd_simd_level()
 *   (NEEDLE_CPU_SIMD forces a level, as for the GEMM), so the sums and the
 *   element loops use the widest vectors the CPU has.  float64 runs the
 *   baseline build.
 * - The OpenMP region only splits rows and calls the worker: the workers
 *   carry the target attribute, not the outlined parallel region.
 */
#include <math.h>
#include <stdlib.h>
#include "needle_cpu.h"

#define FR_LANES 16
#define FR_BLOCK 256
/* s (double) = sum over j in [0, n) of EXPR(j), EXPR in T */
#define FR_SUM(T, s, n, EXPR)                                                       \
  do {                                                                              \
    double s_ = 0.0;                                                                \
    for (nd_i64 b0_ = 0; b0_ < (n); b0_ += FR_BLOCK) {                              \
      nd_i64 b1_ = b0_ + FR_BLOCK < (n) ? b0_ + FR_BLOCK : (n), j;                  \
      T acc_[FR_LANES] = {0};                                                       \
      for (j = b0_; j + FR_LANES <= b1_; j += FR_LANES) {                           \
        _Pragma("omp simd")                                                         \
        for (int k_ = 0; k_ < FR_LANES; k_++) { nd_i64 jj = j + k_; acc_[k_] += (EXPR(jj)); } \
      }                                                                             \
      for (; j < b1_; j++) acc_[0] += (EXPR(j));                                    \
      for (int h_ = FR_LANES / 2; h_ > 0; h_ /= 2) {                                \
        _Pragma("omp simd")                                                         \
        for (int k_ = 0; k_ < h_; k_++) acc_[k_] += acc_[k_ + h_];                  \
      }                                                                             \
      s_ += acc_[0];                                                                \
    }                                                                               \
    (s) = s_;                                                                       \
  } while (0)

/* the row expressions FR_SUM adds up, over the workers' local names */
#define FR_X_(j) xr[j]
#define FR_D2_(j) ((xr[j] - m) * (xr[j] - m))
#define FR_GY_(j) (gr[j] * yr[j])
#define FR_GW_(j) (gr[j] * w[j])
#define FR_GWX_(j) (gr[j] * w[j] * ((xr[j] - m) * inv))

#define FR_AVX512 __attribute__((target("avx512f,fma")))
#define FR_AVX2 __attribute__((target("avx2,fma")))
#define FR_BASE

/* Per-row workers over rows [lo, hi), one set per (T, target). */
#define ND_DEF_ROW_WORKERS(T, SUF, ATTR)                                            \
/* row mean and 1/sqrt(biased var + eps), rounded like the composition: the mean \
 * in T, var in T, then (var + eps) ** -0.5 in T */                                 \
ATTR static inline __attribute__((always_inline)) void                              \
fr_stats_##SUF(const T *xr, nd_i64 r, double eps, T *mean_out, T *inv_out) {        \
  double s, v;                                                                      \
  FR_SUM(T, s, r, FR_X_);                                                           \
  T m = (T)(s / (double)r);                                                         \
  FR_SUM(T, v, r, FR_D2_);                                                          \
  *mean_out = m;                                                                    \
  T var = (T)(v / (double)r);                                                       \
  *inv_out = (T)(1.0 / sqrt((double)(T)(var + (T)eps)));                            \
}                                                                                   \
                                                                                    \
/* o = y * (g - sum_row(g * y)) */                                                  \
ATTR static void fr_softmax_grad_##SUF(const T *y, const T *g, T *o, nd_i64 lo,     \
                                       nd_i64 hi, nd_i64 r) {                       \
  for (nd_i64 i = lo; i < hi; i++) {                                                \
    const T *yr = y + i * r, *gr = g + i * r; T *orow = o + i * r;                  \
    double s;                                                                       \
    FR_SUM(T, s, r, FR_GY_);                                                        \
    T st = (T)s;                                                                    \
    _Pragma("omp simd")                                                             \
    for (nd_i64 j = 0; j < r; j++) orow[j] = yr[j] * (gr[j] - st);                  \
  }                                                                                 \
}                                                                                   \
                                                                                    \
/* o = (x - mean) * inv_std * w + b */                                              \
ATTR static void fr_layer_norm_##SUF(const T *x, const T *w, const T *b, T *o,      \
                                     nd_i64 lo, nd_i64 hi, nd_i64 r, double eps) {  \
  for (nd_i64 i = lo; i < hi; i++) {                                                \
    const T *xr = x + i * r; T *orow = o + i * r; T m, inv;                         \
    fr_stats_##SUF(xr, r, eps, &m, &inv);                                           \
    _Pragma("omp simd")                                                             \
    for (nd_i64 j = 0; j < r; j++) orow[j] = (xr[j] - m) * inv * w[j] + b[j];       \
  }                                                                                 \
}                                                                                   \
                                                                                    \
/* o = inv_std * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w */            \
ATTR static void fr_layer_norm_gx_##SUF(const T *g, const T *x, const T *w, T *o,   \
                                        nd_i64 lo, nd_i64 hi, nd_i64 r, double eps) { \
  for (nd_i64 i = lo; i < hi; i++) {                                                \
    const T *xr = x + i * r, *gr = g + i * r; T *orow = o + i * r; T m, inv;        \
    fr_stats_##SUF(xr, r, eps, &m, &inv);                                           \
    double s1, s2;                                                                  \
    FR_SUM(T, s1, r, FR_GW_);                                                       \
    FR_SUM(T, s2, r, FR_GWX_);                                                      \
    T a = (T)(s1 / (double)r), c = (T)(s2 / (double)r);                             \
    _Pragma("omp simd")                                                             \
    for (nd_i64 j = 0; j < r; j++) {                                                \
      T xh = (xr[j] - m) * inv;                                                     \
      orow[j] = inv * (gr[j] * w[j] - a - xh * c);                                  \
    }                                                                               \
  }                                                                                 \
}                                                                                   \
                                                                                    \
/* sw[j] += sum over rows of g * xhat, sb[j] += sum of g (double columns) */        \
ATTR static void fr_layer_norm_gp_##SUF(const T *g, const T *x, double *sw,         \
                                        double *sb, nd_i64 lo, nd_i64 hi, nd_i64 r, \
                                        double eps) {                               \
  for (nd_i64 i = lo; i < hi; i++) {                                                \
    const T *xr = x + i * r, *gr = g + i * r; T m, inv;                             \
    fr_stats_##SUF(xr, r, eps, &m, &inv);                                           \
    _Pragma("omp simd")                                                             \
    for (nd_i64 j = 0; j < r; j++) {                                                \
      sw[j] += (double)gr[j] * ((xr[j] - m) * inv); sb[j] += gr[j]; }               \
  }                                                                                 \
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FR_X86 1
ND_DEF_ROW_WORKERS(float, f32_avx512, FR_AVX512)
ND_DEF_ROW_WORKERS(float, f32_avx2, FR_AVX2)
#endif
ND_DEF_ROW_WORKERS(float, f32_base, FR_BASE)
ND_DEF_ROW_WORKERS(double, f64_base, FR_BASE)

/* the float32 worker for the SIMD level in force, the baseline for float64 */
#ifdef FR_X86
#define FR_PICK_f32(name)                                                           \
  (nd_simd_level() >= ND_SIMD_AVX512 ? name##_f32_avx512                            \
   : nd_simd_level() >= ND_SIMD_AVX2 ? name##_f32_avx2 : name##_f32_base)
#else
#define FR_PICK_f32(name) name##_f32_base
#endif
#define FR_PICK_f64(name) name##_f64_base

/* run CALL (a worker call over rows [lo, hi)) with the rows split over nt threads */
#define FR_SPLIT(nt, outer, CALL)                                                   \
  do {                                                                              \
    _Pragma("omp parallel num_threads(nt) if(nt > 1)")                              \
    {                                                                               \
      int t_ = ND_OMP_TID();                                                        \
      ND_ROW_SLICE(outer, t_, nt, lo, hi);                                          \
      CALL;                                                                         \
    }                                                                               \
  } while (0)

#define ND_DEF_ROW_API(T, SUF)                                                      \
void nd_softmax_grad_##SUF(const T *y, const T *g, T *o, nd_i64 outer, nd_i64 r) {  \
  void (*f)(const T *, const T *, T *, nd_i64, nd_i64, nd_i64) =                    \
      FR_PICK_##SUF(fr_softmax_grad);                                               \
  int nt = nd_threads_for_rows(outer, 2 * outer * r);                                        \
  FR_SPLIT(nt, outer, f(y, g, o, lo, hi, r));                                       \
}                                                                                   \
                                                                                    \
void nd_layer_norm_##SUF(const T *x, const T *w, const T *b, T *o,                  \
                         nd_i64 outer, nd_i64 r, double eps) {                      \
  void (*f)(const T *, const T *, const T *, T *, nd_i64, nd_i64, nd_i64, double) = \
      FR_PICK_##SUF(fr_layer_norm);                                                 \
  int nt = nd_threads_for_rows(outer, outer * r);                                            \
  FR_SPLIT(nt, outer, f(x, w, b, o, lo, hi, r, eps));                               \
}                                                                                   \
                                                                                    \
void nd_layer_norm_grad_input_##SUF(const T *g, const T *x, const T *w, T *o,       \
                                    nd_i64 outer, nd_i64 r, double eps) {           \
  void (*f)(const T *, const T *, const T *, T *, nd_i64, nd_i64, nd_i64, double) = \
      FR_PICK_##SUF(fr_layer_norm_gx);                                              \
  int nt = nd_threads_for_rows(outer, 3 * outer * r);                                        \
  FR_SPLIT(nt, outer, f(g, x, w, o, lo, hi, r, eps));                               \
}                                                                                   \
                                                                                    \
/* out[0:r] = sum over rows of g * xhat (the weight's adjoint), out[r:2r] = sum g; \
 * per-thread double columns added in thread order (deterministic).  Returns -1   \
 * when the scratch cannot be allocated. */                                         \
int nd_layer_norm_grad_params_##SUF(const T *g, const T *x, T *out,                 \
                                    nd_i64 outer, nd_i64 r, double eps) {           \
  void (*f)(const T *, const T *, double *, double *, nd_i64, nd_i64, nd_i64,       \
            double) = FR_PICK_##SUF(fr_layer_norm_gp);                              \
  int nt = nd_threads_for_rows(outer, 2 * outer * r);                                        \
  double *acc = (double *)calloc((size_t)(2 * nt * r), sizeof(double));             \
  if (!acc) return -1;                                                              \
  FR_SPLIT(nt, outer, f(g, x, acc + 2 * (nd_i64)t_ * r, acc + (2 * (nd_i64)t_ + 1) * r, \
                        lo, hi, r, eps));                                           \
  for (nd_i64 j = 0; j < r; j++) {                                                  \
    double s0 = 0.0, s1 = 0.0;                                                      \
    for (int t = 0; t < nt; t++) { s0 += acc[2 * (nd_i64)t * r + j]; s1 += acc[(2 * (nd_i64)t + 1) * r + j]; } \
    out[j] = (T)s0; out[r + j] = (T)s1;                                             \
  }                                                                                 \
  free(acc);                                                                        \
  return 0;                                                                         \
}

ND_DEF_ROW_API(float, f32)
ND_DEF_ROW_API(double, f64)
