/* Fused softmax cross-entropy on class-index labels and multi-tensor
 * SGD/Adam steps (issue 14, "Fused ops"; the op overrides
 * softmax_xent, softmax_xent_grad, sgd_step and adam_step of
 * needle.protocol.OP_OVERRIDE_SIGNATURES).
 *
 * The loss never builds a one-hot matrix: each row reads its label's entry.
 * Labels arrive as a buffer of the logits' dtype holding whole numbers (the
 * core op has checked them on the host); the kernels check them again and
 * return the first bad row instead of reading outside it.
 */
#include <math.h>
#include "fused_loss.h"

/* Returns -1 when every label is a whole number in [0, cls), else the first bad row. */
#define ND_LABEL_CHECK(T)                                                     \
  for (nd_i64 i = 0; i < rows; i++) {                                         \
    T y = lab[i];                                                             \
    if (!(y >= 0 && y < (T)cls) || y != (T)(nd_i64)y) return i;               \
  }

/* One row: max, then exp(z - m) (into buf when given) summed in double. */
static double row_expsum_f32(const float *z, nd_i64 n, float m, float *buf) {
  if (buf) {
    for (nd_i64 j = 0; j < n; j++) buf[j] = z[j] - m;
    nd_vexp_f32(buf, buf, n);
    return nd_vrow_sum_f32(buf, n);
  }
  double s = 0;
  for (nd_i64 j0 = 0; j0 < n; j0 += 256) {
    float tmp[256];
    nd_i64 nb = n - j0 < 256 ? n - j0 : 256;
    for (nd_i64 j = 0; j < nb; j++) tmp[j] = z[j0 + j] - m;
    nd_vexp_f32(tmp, tmp, nb);
    s += nd_vrow_sum_f32(tmp, nb);
  }
  return s;
}

static double row_expsum_f64(const double *z, nd_i64 n, double m, double *buf) {
  double s = 0;
  for (nd_i64 j = 0; j < n; j++) {
    double e = exp(z[j] - m);
    if (buf) buf[j] = e;
    s += e;
  }
  return s;
}

/* Row maxima (NaN propagates), vectorised: the vmath kernel for float32, an
 * omp simd reduction for float64 (as the logsumexp kernel of ewise_tmpl.h). */
static float row_max_xf32(const float *z, nd_i64 n) { return nd_vrow_max_f32(z, n); }

static double row_max_xf64(const double *z, nd_i64 n) {
  double m = z[0];
  int nan = 0;
  _Pragma("omp simd reduction(max:m) reduction(|:nan)")
  for (nd_i64 j = 0; j < n; j++) {
    double x = z[j];
    m = x > m ? x : m;
    nan |= (x != x);
  }
  return nan ? (double)NAN : m;
}

#define ND_XENT(T, SUF)                                                        \
/* loss[i] = logsumexp(z[i, :]) - z[i, y_i] (lse rounded to T first, as the   \
 * composition computes it) */                                                \
nd_i64 nd_softmax_xent_##SUF(const T *z, const T *lab, T *loss, nd_i64 rows,  \
                             nd_i64 cls) {                                    \
  ND_LABEL_CHECK(T)                                                           \
  int nt = nd_threads_for(rows * cls, ND_GRAIN_MATH);                         \
  _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")     \
  for (nd_i64 i = 0; i < rows; i++) {                                         \
    const T *row = z + i * cls;                                               \
    T m = row_max_x##SUF(row, cls);                                           \
    T lse = m;                                                                \
    if (!(m != m || m == (T)INFINITY || m == -(T)INFINITY))                   \
      lse = (T)((double)m + log(row_expsum_##SUF(row, cls, m, NULL)));        \
    loss[i] = lse - row[(nd_i64)lab[i]];                                      \
  }                                                                           \
  return -1;                                                                  \
}                                                                             \
/* out[i, j] = (softmax(z[i, :])_j - [j == y_i]) * g[i] */                    \
nd_i64 nd_softmax_xent_grad_##SUF(const T *z, const T *lab, const T *g,       \
                                  T *out, nd_i64 rows, nd_i64 cls) {          \
  ND_LABEL_CHECK(T)                                                           \
  int nt = nd_threads_for(rows * cls, ND_GRAIN_MATH);                         \
  _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")     \
  for (nd_i64 i = 0; i < rows; i++) {                                         \
    const T *row = z + i * cls;                                               \
    T *orow = out + i * cls;                                                  \
    T m = row_max_x##SUF(row, cls);                                           \
    double s = row_expsum_##SUF(row, cls, m, orow);                           \
    T scale = (T)((double)g[i] / s);                                          \
    _Pragma("omp simd")                                                       \
    for (nd_i64 j = 0; j < cls; j++) orow[j] *= scale;                        \
    orow[(nd_i64)lab[i]] -= g[i];                                             \
  }                                                                           \
  return -1;                                                                  \
}

ND_XENT(float, f32)
ND_XENT(double, f64)

/* ---- multi-tensor optimizer steps (float32) ----------------------------- *
 * n tensors; p[k], g[k], state[k] of size[k] elements each, results into
 * fresh buffers (the optimizers replace arrays, never edit them).  The
 * arithmetic follows contrib/optim/optimizer.py step by step, in float32,
 * with the scalars it uses (c = 1 - mom etc. rounded from double, as the
 * NDArray scalar kernels see them), so results are the same bits. */

/* One OpenMP region for the whole list (threads split each tensor with
 * "omp for nowait": no barrier between tensors), sized by the total work. */
static nd_i64 total_of(nd_i64 n, const nd_i64 *size) {
  nd_i64 t = 0;
  for (nd_i64 k = 0; k < n; k++) t += size[k];
  return t;
}

void nd_sgd_step_f32(nd_i64 n, const nd_i64 *size, const float *const *p,
                     const float *const *g, const float *const *u, float *const *p_out,
                     float *const *u_out, float lr, float mom, float c, float wd) {
  int nt = nd_threads_for(total_of(n, size), ND_GRAIN_CHEAP);
  _Pragma("omp parallel num_threads(nt) if(nt > 1)")
  for (nd_i64 k = 0; k < n; k++) {
    nd_i64 len = size[k];
    const float *pk = p[k], *gk = g[k], *uk = u[k];
    float *po = p_out[k], *uo = u_out[k];
    if (uo) {
      _Pragma("omp for simd schedule(static) nowait")
      for (nd_i64 j = 0; j < len; j++) {
        float w = pk[j];
        float gj = wd != 0.0f ? gk[j] + w * wd : gk[j];
        float uj = uk[j] * mom + gj * c;
        uo[j] = uj;
        po[j] = w - uj * lr;
      }
    } else {
      _Pragma("omp for simd schedule(static) nowait")
      for (nd_i64 j = 0; j < len; j++) {
        float w = pk[j];
        float gj = wd != 0.0f ? gk[j] + w * wd : gk[j];
        po[j] = w - gj * lr;
      }
    }
  }
}

void nd_adam_step_f32(nd_i64 n, const nd_i64 *size, const float *const *p,
                      const float *const *g, const float *const *m, const float *const *v,
                      float *const *p_out, float *const *m_out, float *const *v_out,
                      float b1, float c1, float b2, float c2, float wd, float k_scale, float eps_s,
                      int frozen) {
  int nt = nd_threads_for(total_of(n, size), ND_GRAIN_CHEAP);  /* memory-bound, as sgd */
  _Pragma("omp parallel num_threads(nt) if(nt > 1)")
  for (nd_i64 k = 0; k < n; k++) {
    nd_i64 len = size[k];
    const float *pk = p[k], *gk = g[k], *mk = m[k], *vk = v[k];
    float *po = p_out[k], *mo = m_out[k], *vo = v_out[k];
    if (frozen) {  /* lr 0: the moments advance, the weights stay */
      _Pragma("omp for simd schedule(static) nowait")
      for (nd_i64 j = 0; j < len; j++) {
        float gj = wd != 0.0f ? pk[j] * wd + gk[j] : gk[j];
        float gc2 = gj * c2;
        mo[j] = mk[j] * b1 + gj * c1;
        vo[j] = vk[j] * b2 + gc2 * gj;
      }
    } else {  /* two loops, so that this one has no conditional store and vectorises */
      _Pragma("omp for simd schedule(static) nowait")
      for (nd_i64 j = 0; j < len; j++) {
        float w = pk[j];
        float gj = wd != 0.0f ? w * wd + gk[j] : gk[j];
        float gc2 = gj * c2;
        float mj = mk[j] * b1 + gj * c1;
        float vj = vk[j] * b2 + gc2 * gj;
        mo[j] = mj;
        vo[j] = vj;
        po[j] = w - mj / (sqrtf(vj * k_scale) + eps_s);
      }
    }
  }
}
