/* Fused batch-normalisation kernels (op overrides of ops.batch_norm_train).
 *
 * Every kernel sees its input as a compact (outer, C, inner) array and works
 * per channel c (the middle axis): (B, D) batches are (B, D, 1), NCHW
 * tensors are (N, C, H*W), and channels-last memory (an NCHW view of NHWC
 * data, what nn.Conv returns) is (N*H*W, C, 1) -- so BatchNorm2d never
 * permutes or copies its input.
 *
 * Reductions accumulate in double.  Threads split the outer axis; each keeps
 * private per-channel sums that are added in thread order afterwards, so the
 * result does not depend on scheduling.
 */
#include <stdlib.h>
#include <string.h>
#include "needle_cpu.h"

#ifdef _OPENMP
#include <omp.h>
#define ND_FN_TID() omp_get_thread_num()
#else
#define ND_FN_TID() 0
#endif

/* threads for a pass over `total` elements with `outer` splittable rows */
static int fn_threads(nd_i64 outer, nd_i64 total) {
  int nt = nd_threads_for(total, ND_GRAIN_CHEAP);
  if (nt > outer) nt = (int)(outer > 0 ? outer : 1);
  return nt;
}

/* per-thread slice [lo, hi) of n rows */
#define FN_SLICE(n, t, nt, lo, hi) \
  nd_i64 lo = (n) * (t) / (nt), hi = (n) * ((t) + 1) / (nt)

#define ND_DEF_FUSED_NORM(T, SUF)                                                   \
/* out[0:C] = mean, out[C:2C] = biased variance over outer and inner.  Returns   \
 * -1 when the scratch cannot be allocated. */                                    \
int nd_bn_stats_##SUF(const T *x, T *out, nd_i64 outer, nd_i64 C, nd_i64 inner) {  \
  int nt = fn_threads(outer, outer * C * inner);                                   \
  double *acc = (double *)calloc((size_t)(nt * C + C), sizeof(double));            \
  if (!acc) return -1;                                                              \
  double *mean = acc + nt * C;                                                      \
  double n = (double)outer * (double)inner;                                        \
  for (int pass = 0; pass < 2; pass++) {                                            \
    _Pragma("omp parallel num_threads(nt) if(nt > 1)")                              \
    {                                                                               \
      int t = ND_FN_TID();                                                          \
      double *a = acc + (nd_i64)t * C;                                              \
      FN_SLICE(outer, t, nt, lo, hi);                                               \
      for (nd_i64 o = lo; o < hi; o++) {                                            \
        const T *row = x + o * C * inner;                                           \
        if (inner == 1) {                                                           \
          if (pass == 0) for (nd_i64 c = 0; c < C; c++) a[c] += row[c];             \
          else for (nd_i64 c = 0; c < C; c++) {                                     \
            double d = row[c] - mean[c]; a[c] += d * d; }                           \
        } else {                                                                    \
          for (nd_i64 c = 0; c < C; c++) {                                          \
            const T *p = row + c * inner;                                           \
            double s = 0.0, m = mean[c];                                            \
            if (pass == 0) for (nd_i64 i = 0; i < inner; i++) s += p[i];            \
            else for (nd_i64 i = 0; i < inner; i++) { double d = p[i] - m; s += d * d; } \
            a[c] += s;                                                              \
          }                                                                         \
        }                                                                           \
      }                                                                             \
    }                                                                               \
    for (nd_i64 c = 0; c < C; c++) {                                                \
      double s = 0.0;                                                               \
      for (int t = 0; t < nt; t++) { s += acc[(nd_i64)t * C + c]; acc[(nd_i64)t * C + c] = 0.0; } \
      if (pass == 0) { mean[c] = s / n; out[c] = (T)mean[c]; }                      \
      else out[C + c] = (T)(s / n);                                                 \
    }                                                                               \
  }                                                                                 \
  free(acc);                                                                        \
  return 0;                                                                         \
}                                                                                   \
                                                                                    \
/* out[0:C] = sum g, out[C:2C] = sum g * (x - mean[c]) over outer and inner. */    \
int nd_bn_grad_stats_##SUF(const T *g, const T *x, const T *mean, T *out,           \
                           nd_i64 outer, nd_i64 C, nd_i64 inner) {                  \
  int nt = fn_threads(outer, 2 * outer * C * inner);                               \
  double *acc = (double *)calloc((size_t)(2 * nt * C), sizeof(double));            \
  if (!acc) return -1;                                                              \
  _Pragma("omp parallel num_threads(nt) if(nt > 1)")                                \
  {                                                                                 \
    int t = ND_FN_TID();                                                            \
    double *sg = acc + 2 * (nd_i64)t * C, *sgx = sg + C;                            \
    FN_SLICE(outer, t, nt, lo, hi);                                                 \
    for (nd_i64 o = lo; o < hi; o++) {                                              \
      const T *gr = g + o * C * inner, *xr = x + o * C * inner;                     \
      if (inner == 1) {                                                             \
        for (nd_i64 c = 0; c < C; c++) {                                            \
          sg[c] += gr[c]; sgx[c] += (double)gr[c] * ((double)xr[c] - mean[c]); }    \
      } else {                                                                      \
        for (nd_i64 c = 0; c < C; c++) {                                            \
          const T *gp = gr + c * inner, *xp = xr + c * inner;                       \
          double s0 = 0.0, s1 = 0.0, m = mean[c];                                   \
          for (nd_i64 i = 0; i < inner; i++) { s0 += gp[i]; s1 += (double)gp[i] * (xp[i] - m); } \
          sg[c] += s0; sgx[c] += s1;                                                \
        }                                                                           \
      }                                                                             \
    }                                                                               \
  }                                                                                 \
  for (nd_i64 c = 0; c < C; c++) {                                                  \
    double s0 = 0.0, s1 = 0.0;                                                      \
    for (int t = 0; t < nt; t++) { s0 += acc[2 * (nd_i64)t * C + c]; s1 += acc[(2 * (nd_i64)t + 1) * C + c]; } \
    out[c] = (T)s0; out[C + c] = (T)s1;                                             \
  }                                                                                 \
  free(acc);                                                                        \
  return 0;                                                                         \
}                                                                                   \
                                                                                    \
/* o = (x - m[c]) * sc[c] + sh[c] */                                               \
void nd_channel_affine_##SUF(const T *x, const T *m, const T *sc, const T *sh, T *o,  \
                             nd_i64 outer, nd_i64 C, nd_i64 inner) {               \
  int nt = fn_threads(outer * C, outer * C * inner);                               \
  if (inner == 1) {                                                                 \
    _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")         \
    for (nd_i64 r = 0; r < outer; r++) {                                            \
      const T *xr = x + r * C; T *orow = o + r * C;                                 \
      for (nd_i64 c = 0; c < C; c++) orow[c] = (xr[c] - m[c]) * sc[c] + sh[c];      \
    }                                                                               \
  } else {                                                                          \
    _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")         \
    for (nd_i64 r = 0; r < outer * C; r++) {                                        \
      const T *xr = x + r * inner; T *orow = o + r * inner;                         \
      T mm = m[r % C], a = sc[r % C], b = sh[r % C];                                \
      for (nd_i64 i = 0; i < inner; i++) orow[i] = (xr[i] - mm) * a + b;            \
    }                                                                               \
  }                                                                                 \
}                                                                                   \
                                                                                    \
/* o = g * a[c] + (x - m[c]) * b[c] + k[c] */                                       \
void nd_channel_affine2_##SUF(const T *g, const T *x, const T *m, const T *a,        \
                              const T *b, const T *k, T *o,                         \
                              nd_i64 outer, nd_i64 C, nd_i64 inner) {              \
  int nt = fn_threads(outer * C, 2 * outer * C * inner);                           \
  if (inner == 1) {                                                                 \
    _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")         \
    for (nd_i64 r = 0; r < outer; r++) {                                            \
      const T *gr = g + r * C, *xr = x + r * C; T *orow = o + r * C;                \
      for (nd_i64 c = 0; c < C; c++) orow[c] = gr[c] * a[c] + (xr[c] - m[c]) * b[c] + k[c]; \
    }                                                                               \
  } else {                                                                          \
    _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")         \
    for (nd_i64 r = 0; r < outer * C; r++) {                                        \
      const T *gr = g + r * inner, *xr = x + r * inner; T *orow = o + r * inner;    \
      T mm = m[r % C], aa = a[r % C], bb = b[r % C], kk = k[r % C];                 \
      for (nd_i64 i = 0; i < inner; i++) orow[i] = gr[i] * aa + (xr[i] - mm) * bb + kk; \
    }                                                                               \
  }                                                                                 \
}

ND_DEF_FUSED_NORM(float, f32)
ND_DEF_FUSED_NORM(double, f64)
