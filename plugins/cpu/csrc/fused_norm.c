/* Fused batch-normalisation kernels (op overrides of ops.batch_norm_train)
 * and the LSTM gate arithmetic.  Layer norm and softmax's backward are in
 * fused_rows.c.
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
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "needle_cpu.h"

#define ND_DEF_FUSED_NORM(T, SUF)                                                   \
/* out rows (4, C): the mean, the biased variance over outer and inner, inv_std \
 * = (var + eps) ** -0.5 and scale = inv_std * w[c] -- the last two rounded as    \
 * the composition rounds them (var in T, var + eps in T, the power in T), so the \
 * fused node's values match it.  Returns -1 when the scratch cannot be allocated. */ \
int nd_bn_stats_##SUF(const T *x, const T *w, T *out, nd_i64 outer, nd_i64 C,       \
                      nd_i64 inner, double eps) {                                  \
  int nt = nd_threads_for_rows(outer, outer * C * inner);                           \
  double *acc = (double *)calloc((size_t)(nt * C + C), sizeof(double));            \
  if (!acc) return -1;                                                              \
  double *mean = acc + nt * C;                                                      \
  double n = (double)outer * (double)inner;                                        \
  for (int pass = 0; pass < 2; pass++) {                                            \
    _Pragma("omp parallel num_threads(nt) if(nt > 1)")                              \
    {                                                                               \
      int t = ND_OMP_TID();                                                         \
      double *a = acc + (nd_i64)t * C;                                              \
      ND_ROW_SLICE(outer, t, nt, lo, hi);                                           \
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
      if (pass == 0) { mean[c] = s / n; out[c] = (T)mean[c]; continue; }           \
      T var = (T)(s / n), inv = (T)(1.0 / sqrt((double)(T)(var + (T)eps)));        \
      out[C + c] = var; out[2 * C + c] = inv; out[3 * C + c] = inv * w[c];          \
    }                                                                               \
  }                                                                                 \
  free(acc);                                                                        \
  return 0;                                                                         \
}                                                                                   \
                                                                                    \
/* out rows (2, C) over outer and inner: sum g (the bias's adjoint) and         \
 * sum g * xhat = (T)sum g * (x - mean[c]) times inv_std[c] (the weight's);        \
 * st: the (4, C) rows of nd_bn_stats. */                                           \
int nd_bn_grad_stats_##SUF(const T *g, const T *x, const T *st, T *out,             \
                           nd_i64 outer, nd_i64 C, nd_i64 inner) {                  \
  const T *mean = st;                                                               \
  int nt = nd_threads_for_rows(outer, 2 * outer * C * inner);                       \
  double *acc = (double *)calloc((size_t)(2 * nt * C), sizeof(double));            \
  if (!acc) return -1;                                                              \
  _Pragma("omp parallel num_threads(nt) if(nt > 1)")                                \
  {                                                                                 \
    int t = ND_OMP_TID();                                                           \
    double *sg = acc + 2 * (nd_i64)t * C, *sgx = sg + C;                            \
    ND_ROW_SLICE(outer, t, nt, lo, hi);                                             \
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
    out[c] = (T)s0; out[C + c] = (T)s1 * st[2 * C + c];                             \
  }                                                                                 \
  free(acc);                                                                        \
  return 0;                                                                         \
}                                                                                   \
                                                                                    \
/* o = (x - mean[c]) * scale[c] + b[c] (st: the (4, C) rows of nd_bn_stats) */     \
void nd_bn_apply_##SUF(const T *x, const T *st, const T *sh, T *o,                  \
                       nd_i64 outer, nd_i64 C, nd_i64 inner) {                     \
  const T *m = st, *sc = st + 3 * C;                                                \
  int nt = nd_threads_for_rows(outer * C, outer * C * inner);                       \
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
/* the input's adjoint o = g * a[c] + (x - m[c]) * b[c] + k[c] with a = scale,     \
 * b = scale * inv_std * sum(g xhat) * (-1/n), k = scale * sum(g) * (-1/n), in the  \
 * composition's order (n = outer * inner; st: nd_bn_stats's rows, gs:             \
 * nd_bn_grad_stats's).  Returns -1 when the scratch cannot be allocated. */       \
int nd_bn_grad_input_##SUF(const T *g, const T *x, const T *st, const T *gs, T *o,  \
                           nd_i64 outer, nd_i64 C, nd_i64 inner) {                 \
  T *coef = (T *)malloc((size_t)(2 * C > 0 ? 2 * C : 1) * sizeof(T));              \
  if (!coef) return -1;                                                             \
  const T *m = st, *a = st + 3 * C, *b = coef, *k = coef + C;                       \
  T neg_inv_n = (T)(-1.0 / ((double)outer * (double)inner));                        \
  for (nd_i64 c = 0; c < C; c++) {                                                  \
    coef[c] = a[c] * st[2 * C + c] * gs[C + c] * neg_inv_n;                         \
    coef[C + c] = a[c] * gs[c] * neg_inv_n;                                         \
  }                                                                                 \
  int nt = nd_threads_for_rows(outer * C, 2 * outer * C * inner);                   \
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
  free(coef);                                                                       \
  return 0;                                                                         \
}

ND_DEF_FUSED_NORM(float, f32)
ND_DEF_FUSED_NORM(double, f64)

/* ---- row kernels over the last axis (softmax backward, layer norm): fused_rows.c ---- */

/* ---- LSTM gate arithmetic (ops.lstm_gates) ----
 * z (B, 4H) holds the pre-activations of the gates i, f, g, o (PyTorch's
 * order), c (B, H) the cell state.  sigmoid(a) is (1 + tanh(a/2)) / 2, as
 * ops.sigmoid, so one vectorised tanh pass serves all four gates. */
static void fn_tanh_f32(float *a, nd_i64 n) { nd_vtanh_f32(a, a, n); }
static void fn_tanh_f64(double *a, nd_i64 n) { for (nd_i64 j = 0; j < n; j++) a[j] = tanh(a[j]); }

#define ND_DEF_LSTM(T, SUF)                                                         \
/* s (4H) = tanh of the scaled pre-activations; then the gates in place */          \
static void lstm_gates_row_##SUF(const T *zr, T *s, nd_i64 H) {                     \
  for (nd_i64 j = 0; j < 4 * H; j++) s[j] = (j >= 2 * H && j < 3 * H) ? zr[j] : zr[j] * (T)0.5; \
  fn_tanh_##SUF(s, 4 * H);                                                          \
  for (nd_i64 j = 0; j < 4 * H; j++) if (j < 2 * H || j >= 3 * H) s[j] = (s[j] + (T)1) * (T)0.5; \
}                                                                                   \
                                                                                    \
/* out (B, 2, H): out[b, 0] = h' = o * tanh(c'), out[b, 1] = c' = f * c + i * g */  \
int nd_lstm_gates_##SUF(const T *z, const T *c, T *out, nd_i64 B, nd_i64 H) {       \
  int nt = nd_threads_for_rows(B, B * 5 * H); /* cheap grain: a forked thread must pay */ \
  int fail = 0;                                                                     \
  _Pragma("omp parallel num_threads(nt) if(nt > 1) reduction(|:fail)")              \
  {                                                                                 \
    T *s = (T *)malloc((size_t)(5 * H) * sizeof(T));                                \
    if (!s) fail = 1;                                                               \
    else {                                                                          \
      T *tc = s + 4 * H;                                                            \
      int t = ND_OMP_TID(), n = nt;                                                 \
      ND_ROW_SLICE(B, t, n, lo, hi);                                                \
      for (nd_i64 b = lo; b < hi; b++) {                                            \
        lstm_gates_row_##SUF(z + b * 4 * H, s, H);                                  \
        const T *cr = c + b * H; T *hr = out + b * 2 * H, *cn = hr + H;             \
        for (nd_i64 j = 0; j < H; j++) cn[j] = s[H + j] * cr[j] + s[j] * s[2 * H + j]; \
        for (nd_i64 j = 0; j < H; j++) tc[j] = cn[j];                               \
        fn_tanh_##SUF(tc, H);                                                       \
        for (nd_i64 j = 0; j < H; j++) hr[j] = s[3 * H + j] * tc[j];                \
      }                                                                             \
      free(s);                                                                      \
    }                                                                               \
  }                                                                                 \
  return fail ? -1 : 0;                                                             \
}                                                                                   \
                                                                                    \
/* g (B, 2, H): the adjoints of h' and c'.  out: B*4H adjoints of z, then B*H of c */ \
int nd_lstm_gates_grad_##SUF(const T *z, const T *c, const T *g, T *out, nd_i64 B, nd_i64 H) { \
  int nt = nd_threads_for_rows(B, B * 5 * H); /* cheap grain: a forked thread must pay */ \
  int fail = 0;                                                                     \
  _Pragma("omp parallel num_threads(nt) if(nt > 1) reduction(|:fail)")              \
  {                                                                                 \
    T *s = (T *)malloc((size_t)(5 * H) * sizeof(T));                                \
    if (!s) fail = 1;                                                               \
    else {                                                                          \
      T *tc = s + 4 * H;                                                            \
      int t = ND_OMP_TID(), n = nt;                                                 \
      ND_ROW_SLICE(B, t, n, lo, hi);                                                \
      for (nd_i64 b = lo; b < hi; b++) {                                            \
        lstm_gates_row_##SUF(z + b * 4 * H, s, H);                                  \
        const T *cr = c + b * H, *gh = g + b * 2 * H, *gc = gh + H;                  \
        T *dz = out + b * 4 * H, *dc = out + B * 4 * H + b * H;                     \
        for (nd_i64 j = 0; j < H; j++) tc[j] = s[H + j] * cr[j] + s[j] * s[2 * H + j]; \
        fn_tanh_##SUF(tc, H);                                                       \
        for (nd_i64 j = 0; j < H; j++) {                                            \
          T i = s[j], f = s[H + j], gg = s[2 * H + j], o = s[3 * H + j], th = tc[j]; \
          T dcn = gc[j] + gh[j] * o * ((T)1 - th * th);                             \
          dz[j] = dcn * gg * i * ((T)1 - i);                                        \
          dz[H + j] = dcn * cr[j] * f * ((T)1 - f);                                 \
          dz[2 * H + j] = dcn * i * ((T)1 - gg * gg);                               \
          dz[3 * H + j] = gh[j] * th * o * ((T)1 - o);                              \
          dc[j] = dcn * f;                                                          \
        }                                                                           \
      }                                                                             \
      free(s);                                                                      \
    }                                                                               \
  }                                                                                 \
  return fail ? -1 : 0;                                                             \
}

ND_DEF_LSTM(float, f32)
ND_DEF_LSTM(double, f64)
