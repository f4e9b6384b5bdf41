/* Trampolines of recorded kernel calls (replay.h) and the replay loop.
 *
 * One trampoline per C signature: it casts the record's kernel back to that
 * signature and spreads the slots over its arguments.  Scalars live in the
 * record as doubles and are rounded to the kernel's type here, as the eager
 * Cython code rounded them, so a value patched in by a replay goes through
 * the same rounding. */
#include <string.h>
#include "replay.h"
#include "fused_loss.h"

_Static_assert(sizeof(void *) == sizeof(nd_i64), "record tables hold 8-byte entries");

nd_i64 nd_replay_run(const nd_rec *recs, nd_i64 n, nd_i64 *status) {
  for (nd_i64 k = 0; k < n; k++) {
    nd_i64 st = recs[k].fn(&recs[k]);
    if (st != 0) {
      *status = st;
      return k;
    }
  }
  return -1;
}

#define P(k, TYPE) ((TYPE)r->p[k])
#define I(k) (r->i[k])

#define ND_TRAMPOLINES(T, SUF)                                                          \
  nd_i64 nd_tr_bin_##SUF(const nd_rec *r) {                                             \
    ((void (*)(const T *, const T *, T *, nd_i64))r->kern)(P(0, const T *), P(1, const T *), \
                                                          P(2, T *), I(0));              \
    return 0;                                                                           \
  }                                                                                     \
  nd_i64 nd_tr_scal_##SUF(const nd_rec *r) {                                            \
    ((void (*)(const T *, T, T *, nd_i64))r->kern)(P(0, const T *), (T)r->d[0], P(1, T *), I(0)); \
    return 0;                                                                           \
  }                                                                                     \
  nd_i64 nd_tr_un_##SUF(const nd_rec *r) {                                              \
    ((void (*)(const T *, T *, nd_i64))r->kern)(P(0, const T *), P(1, T *), I(0));      \
    return 0;                                                                           \
  }                                                                                     \
  nd_i64 nd_tr_fill_##SUF(const nd_rec *r) {                                            \
    ((void (*)(T *, T, nd_i64))r->kern)(P(0, T *), (T)r->d[0], I(0));                   \
    return 0;                                                                           \
  }                                                                                     \
  nd_i64 nd_tr_rows_##SUF(const nd_rec *r) {                                            \
    ((void (*)(const T *, T *, nd_i64, nd_i64))r->kern)(P(0, const T *), P(1, T *), I(0), I(1)); \
    return 0;                                                                           \
  }                                                                                     \
  nd_i64 nd_tr_rows_int_##SUF(const nd_rec *r) {                                        \
    return ((int (*)(const T *, T *, nd_i64, nd_i64))r->kern)(P(0, const T *), P(1, T *), \
                                                             I(0), I(1)) != 0;           \
  }                                                                                     \
  nd_i64 nd_tr_gemm_##SUF(const nd_rec *r) {                                            \
    return nd_gemm_##SUF(I(0), I(1), I(2), I(3), P(0, const T *), I(4), I(5), I(6),     \
                         P(1, const T *), I(7), I(8), I(9), P(2, T *), I(10), I(11),    \
                         (int)I(12)) != 0;                                              \
  }                                                                                     \
  /* tables p0 = a strides, p1 = b strides, p2 = shape */                               \
  nd_i64 nd_tr_ewise_strided_##SUF(const nd_rec *r) {                                  \
    return nd_ewise_strided_##SUF((int)I(0), P(3, const T *), P(0, const nd_i64 *),     \
                                  P(4, const T *), P(1, const nd_i64 *), P(5, T *),     \
                                  P(2, const nd_i64 *), (int)I(1)) != 0;                \
  }                                                                                     \
  nd_i64 nd_tr_conv_##SUF(const nd_rec *r) {                                            \
    return ((int (*)(const T *, const T *, T *, nd_i64, nd_i64, nd_i64, nd_i64, nd_i64, \
                     nd_i64, nd_i64, nd_i64))r->kern)(                                  \
               P(0, const T *), P(1, const T *), P(2, T *), I(0), I(1), I(2), I(3), I(4), \
               I(5), I(6), I(7)) != 0;                                                  \
  }                                                                                     \
  /* the kernels return the first bad row or -1: the status is row + 1 */               \
  nd_i64 nd_tr_xent_##SUF(const nd_rec *r) {                                            \
    return nd_softmax_xent_##SUF(P(0, const T *), P(1, const T *), P(2, T *), I(0), I(1)) + 1; \
  }                                                                                     \
  nd_i64 nd_tr_xent_grad_##SUF(const nd_rec *r) {                                       \
    return nd_softmax_xent_grad_##SUF(P(0, const T *), P(1, const T *), P(2, const T *), \
                                      P(3, T *), I(0), I(1)) + 1;                       \
  }                                                                                     \
  nd_i64 nd_tr_bn_stats_##SUF(const nd_rec *r) {                                        \
    return nd_bn_stats_##SUF(P(0, const T *), P(1, const T *), P(2, T *), I(0), I(1), I(2), \
                             r->d[0]) != 0;                                             \
  }                                                                                     \
  nd_i64 nd_tr_p4i3_##SUF(const nd_rec *r) {                                            \
    ((void (*)(const T *, const T *, const T *, T *, nd_i64, nd_i64, nd_i64))r->kern)(  \
        P(0, const T *), P(1, const T *), P(2, const T *), P(3, T *), I(0), I(1), I(2)); \
    return 0;                                                                           \
  }                                                                                     \
  nd_i64 nd_tr_p4i3_int_##SUF(const nd_rec *r) {                                        \
    return ((int (*)(const T *, const T *, const T *, T *, nd_i64, nd_i64, nd_i64))r->kern)( \
               P(0, const T *), P(1, const T *), P(2, const T *), P(3, T *), I(0), I(1), \
               I(2)) != 0;                                                              \
  }                                                                                     \
  nd_i64 nd_tr_p5i3_int_##SUF(const nd_rec *r) {                                        \
    return ((int (*)(const T *, const T *, const T *, const T *, T *, nd_i64, nd_i64,   \
                     nd_i64))r->kern)(P(0, const T *), P(1, const T *), P(2, const T *), \
                                      P(3, const T *), P(4, T *), I(0), I(1), I(2)) != 0; \
  }                                                                                     \
  nd_i64 nd_tr_p3i2_##SUF(const nd_rec *r) {                                            \
    ((void (*)(const T *, const T *, T *, nd_i64, nd_i64))r->kern)(                     \
        P(0, const T *), P(1, const T *), P(2, T *), I(0), I(1));                       \
    return 0;                                                                           \
  }                                                                                     \
  nd_i64 nd_tr_p3i2_int_##SUF(const nd_rec *r) {                                        \
    return ((int (*)(const T *, const T *, T *, nd_i64, nd_i64))r->kern)(               \
               P(0, const T *), P(1, const T *), P(2, T *), I(0), I(1)) != 0;           \
  }                                                                                     \
  nd_i64 nd_tr_p4i2_int_##SUF(const nd_rec *r) {                                        \
    return ((int (*)(const T *, const T *, const T *, T *, nd_i64, nd_i64))r->kern)(    \
               P(0, const T *), P(1, const T *), P(2, const T *), P(3, T *), I(0), I(1)) != 0; \
  }                                                                                     \
  nd_i64 nd_tr_p4i2d_##SUF(const nd_rec *r) {                                           \
    ((void (*)(const T *, const T *, const T *, T *, nd_i64, nd_i64, double))r->kern)(  \
        P(0, const T *), P(1, const T *), P(2, const T *), P(3, T *), I(0), I(1), r->d[0]); \
    return 0;                                                                           \
  }                                                                                     \
  nd_i64 nd_tr_p3i2d_int_##SUF(const nd_rec *r) {                                       \
    return ((int (*)(const T *, const T *, T *, nd_i64, nd_i64, double))r->kern)(       \
               P(0, const T *), P(1, const T *), P(2, T *), I(0), I(1), r->d[0]) != 0;  \
  }                                                                                     \
  /* the seed was checked to be a whole number in [0, 2^32): the cast is exact */      \
  nd_i64 nd_tr_rand_##SUF(const nd_rec *r) {                                            \
    nd_rand_uniform_##SUF(P(0, T *), I(0), (uint64_t)r->d[0]);                          \
    return 0;                                                                           \
  }

ND_TRAMPOLINES(float, f32)
ND_TRAMPOLINES(double, f64)

/* i0 elsize, i1 source offset, i2 destination offset, i3 ndim; tables p0
 * source strides, p1 destination strides, p2 shape; p3 source, p4 destination */
nd_i64 nd_tr_copy_strided(const nd_rec *r) {
  nd_copy_strided((int)I(0), r->p[3], I(1), P(0, const nd_i64 *), r->p[4], I(2),
                  P(1, const nd_i64 *), P(2, const nd_i64 *), (int)I(3));
  return 0;
}

/* i0 elsize, i1 offset, i2 ndim; tables p0 strides, p1 shape; p2 destination */
nd_i64 nd_tr_set_strided(const nd_rec *r) {
  float v32 = (float)r->d[0];
  double v64 = r->d[0];
  nd_set_strided((int)I(0), I(0) == 4 ? (const void *)&v32 : (const void *)&v64, r->p[2], I(1),
                 P(0, const nd_i64 *), P(1, const nd_i64 *), (int)I(2));
  return 0;
}

/* i0 buffers; tables p0 sizes, p1..p5 params, grads, moms, out params, out moms */
nd_i64 nd_tr_sgd(const nd_rec *r) {
  nd_sgd_step_f32(I(0), P(0, const nd_i64 *), P(1, const float *const *), P(2, const float *const *),
                  P(3, const float *const *), P(4, float *const *), P(5, float *const *),
                  (float)r->d[0], (float)r->d[1], (float)r->d[2], (float)r->d[3]);
  return 0;
}

/* i0 buffers, i1 frozen; tables p0 sizes, p1..p7 params, grads, ms, vs, out
 * params, out ms, out vs */
nd_i64 nd_tr_adam(const nd_rec *r) {
  nd_adam_step_f32(I(0), P(0, const nd_i64 *), P(1, const float *const *), P(2, const float *const *),
                   P(3, const float *const *), P(4, const float *const *), P(5, float *const *),
                   P(6, float *const *), P(7, float *const *), (float)r->d[0], (float)r->d[1],
                   (float)r->d[2], (float)r->d[3], (float)r->d[4], (float)r->d[5], (float)r->d[6],
                   (int)I(1));
  return 0;
}

/* i0 bytes from p1 to p0 */
nd_i64 nd_tr_memcpy(const nd_rec *r) {
  memcpy(r->p[0], r->p[1], (size_t)I(0));
  return 0;
}
