/* Recorded kernel calls: every C kernel the backend runs goes through one
 * nd_rec (a trampoline for the kernel's C signature, the kernel, and its
 * arguments in typed slots).  An eager call fills one on the stack and runs
 * it at once; CpuBackend.compile_replay keeps them in a tape and runs the
 * whole tape in one loop without the GIL (nd_replay_run). */
#ifndef NEEDLE_CPU_REPLAY_H
#define NEEDLE_CPU_REPLAY_H
#include "needle_cpu.h"

#define ND_REC_P 8
#define ND_REC_I 16
#define ND_REC_D 8

typedef void (*nd_kern_t)(void);
typedef struct nd_rec nd_rec;
/* 0 when the kernel succeeded, else a positive status the caller decodes
 * with the record's err (e.g. a bad label's row + 1) */
typedef nd_i64 (*nd_tramp_t)(const nd_rec *r);

struct nd_rec {
  nd_tramp_t fn;
  nd_kern_t kern;
  void *p[ND_REC_P];
  nd_i64 i[ND_REC_I];
  double d[ND_REC_D];   /* scalars before any rounding to float: a replay patches them here */
  void *own;            /* a tape's copy of the tables (unused by eager calls) */
  nd_i64 tablen;        /* entries (8 bytes each) of every table */
  int ntab;             /* p[0..ntab) point at tables: strides, shapes, pointer lists */
  int err;              /* how a non-zero status reads (the Cython layer's ND_ERR_*) */
  int kind;             /* 0 float32, 1 float64 */
};

/* runs recs[0..n) in order; -1 when all succeeded, else the failing index
 * (its status in *status; the calls after it do not run) */
nd_i64 nd_replay_run(const nd_rec *recs, nd_i64 n, nd_i64 *status);

/* ---- trampolines: one per C signature ----
 * Each casts the record's kernel back to that signature and spreads the slots
 * over its arguments.  Scalars live in the record as doubles and are rounded
 * to the kernel's type here, as the eager Cython code rounded them, so a value
 * patched in by a replay goes through the same rounding.  Static inline: an
 * eager call whose trampoline is known where it is built compiles to a direct
 * call of the kernel, as before records existed; a tape stores their
 * addresses (the copies in the Cython module). */
#include <string.h>
#include "fused_loss.h"
#include "embedding.h"

#define ND_RP(k, TYPE) ((TYPE)r->p[k])
#define ND_RI(k) (r->i[k])

#define ND_TRAMPOLINES(T, SUF)                                                                     \
  static inline nd_i64 nd_tr_bin_##SUF(const nd_rec *r) {                                          \
    ((void (*)(const T *, const T *, T *, nd_i64))r->kern)(ND_RP(0, const T *), ND_RP(1, const T *), \
                                                          ND_RP(2, T *), ND_RI(0));                \
    return 0;                                                                                      \
  }                                                                                                \
  static inline nd_i64 nd_tr_scal_##SUF(const nd_rec *r) {                                         \
    ((void (*)(const T *, T, T *, nd_i64))r->kern)(ND_RP(0, const T *), (T)r->d[0], ND_RP(1, T *), ND_RI(0)); \
    return 0;                                                                                      \
  }                                                                                                \
  static inline nd_i64 nd_tr_un_##SUF(const nd_rec *r) {                                           \
    ((void (*)(const T *, T *, nd_i64))r->kern)(ND_RP(0, const T *), ND_RP(1, T *), ND_RI(0));     \
    return 0;                                                                                      \
  }                                                                                                \
  static inline nd_i64 nd_tr_fill_##SUF(const nd_rec *r) {                                         \
    ((void (*)(T *, T, nd_i64))r->kern)(ND_RP(0, T *), (T)r->d[0], ND_RI(0));                      \
    return 0;                                                                                      \
  }                                                                                                \
  static inline nd_i64 nd_tr_rows_##SUF(const nd_rec *r) {                                         \
    ((void (*)(const T *, T *, nd_i64, nd_i64))r->kern)(ND_RP(0, const T *), ND_RP(1, T *), ND_RI(0), ND_RI(1)); \
    return 0;                                                                                      \
  }                                                                                                \
  static inline nd_i64 nd_tr_rows_int_##SUF(const nd_rec *r) {                                     \
    return ((int (*)(const T *, T *, nd_i64, nd_i64))r->kern)(ND_RP(0, const T *), ND_RP(1, T *),  \
                                                             ND_RI(0), ND_RI(1)) != 0;             \
  }                                                                                                \
  static inline nd_i64 nd_tr_gemm_##SUF(const nd_rec *r) {                                         \
    return nd_gemm_##SUF(ND_RI(0), ND_RI(1), ND_RI(2), ND_RI(3), ND_RP(0, const T *), ND_RI(4), ND_RI(5), ND_RI(6), \
                         ND_RP(1, const T *), ND_RI(7), ND_RI(8), ND_RI(9), ND_RP(2, T *), ND_RI(10), ND_RI(11), \
                         (int)ND_RI(12)) != 0;                                                     \
  }                                                                                                \
  /* tables p0 = a strides, p1 = b strides, p2 = shape */                                          \
  static inline nd_i64 nd_tr_ewise_strided_##SUF(const nd_rec *r) {                                \
    return nd_ewise_strided_##SUF((int)ND_RI(0), ND_RP(3, const T *), ND_RP(0, const nd_i64 *),    \
                                  ND_RP(4, const T *), ND_RP(1, const nd_i64 *), ND_RP(5, T *),    \
                                  ND_RP(2, const nd_i64 *), (int)ND_RI(1)) != 0;                   \
  }                                                                                                \
  static inline nd_i64 nd_tr_conv_##SUF(const nd_rec *r) {                                         \
    return ((int (*)(const T *, const T *, T *, nd_i64, nd_i64, nd_i64, nd_i64, nd_i64,            \
                     nd_i64, nd_i64, nd_i64))r->kern)(                                             \
               ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, T *), ND_RI(0), ND_RI(1), ND_RI(2), ND_RI(3), ND_RI(4), \
               ND_RI(5), ND_RI(6), ND_RI(7)) != 0;                                                 \
  }                                                                                                \
  /* the kernels return the first bad row or -1: the status is row + 1 */                          \
  static inline nd_i64 nd_tr_xent_##SUF(const nd_rec *r) {                                         \
    return nd_softmax_xent_##SUF(ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, T *), ND_RI(0), ND_RI(1)) + 1; \
  }                                                                                                \
  static inline nd_i64 nd_tr_xent_grad_##SUF(const nd_rec *r) {                                    \
    return nd_softmax_xent_grad_##SUF(ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, const T *), \
                                      ND_RP(3, T *), ND_RI(0), ND_RI(1)) + 1;                      \
  }                                                                                                \
  static inline nd_i64 nd_tr_bn_stats_##SUF(const nd_rec *r) {                                     \
    return nd_bn_stats_##SUF(ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, T *), ND_RI(0), ND_RI(1), ND_RI(2), \
                             r->d[0]) != 0;                                                        \
  }                                                                                                \
  static inline nd_i64 nd_tr_p4i3_##SUF(const nd_rec *r) {                                         \
    ((void (*)(const T *, const T *, const T *, T *, nd_i64, nd_i64, nd_i64))r->kern)(             \
        ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, const T *), ND_RP(3, T *), ND_RI(0), ND_RI(1), ND_RI(2)); \
    return 0;                                                                                      \
  }                                                                                                \
  static inline nd_i64 nd_tr_p4i3_int_##SUF(const nd_rec *r) {                                     \
    return ((int (*)(const T *, const T *, const T *, T *, nd_i64, nd_i64, nd_i64))r->kern)(       \
               ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, const T *), ND_RP(3, T *), ND_RI(0), ND_RI(1), \
               ND_RI(2)) != 0;                                                                     \
  }                                                                                                \
  static inline nd_i64 nd_tr_p5i3_int_##SUF(const nd_rec *r) {                                     \
    return ((int (*)(const T *, const T *, const T *, const T *, T *, nd_i64, nd_i64,              \
                     nd_i64))r->kern)(ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, const T *), \
                                      ND_RP(3, const T *), ND_RP(4, T *), ND_RI(0), ND_RI(1), ND_RI(2)) != 0; \
  }                                                                                                \
  static inline nd_i64 nd_tr_p3i2_##SUF(const nd_rec *r) {                                         \
    ((void (*)(const T *, const T *, T *, nd_i64, nd_i64))r->kern)(                                \
        ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, T *), ND_RI(0), ND_RI(1));              \
    return 0;                                                                                      \
  }                                                                                                \
  static inline nd_i64 nd_tr_p3i2_int_##SUF(const nd_rec *r) {                                     \
    return ((int (*)(const T *, const T *, T *, nd_i64, nd_i64))r->kern)(                          \
               ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, T *), ND_RI(0), ND_RI(1)) != 0;  \
  }                                                                                                \
  static inline nd_i64 nd_tr_p4i2_int_##SUF(const nd_rec *r) {                                     \
    return ((int (*)(const T *, const T *, const T *, T *, nd_i64, nd_i64))r->kern)(               \
               ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, const T *), ND_RP(3, T *), ND_RI(0), ND_RI(1)) != 0; \
  }                                                                                                \
  static inline nd_i64 nd_tr_p4i2d_##SUF(const nd_rec *r) {                                        \
    ((void (*)(const T *, const T *, const T *, T *, nd_i64, nd_i64, double))r->kern)(             \
        ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, const T *), ND_RP(3, T *), ND_RI(0), ND_RI(1), r->d[0]); \
    return 0;                                                                                      \
  }                                                                                                \
  static inline nd_i64 nd_tr_p3i2d_int_##SUF(const nd_rec *r) {                                    \
    return ((int (*)(const T *, const T *, T *, nd_i64, nd_i64, double))r->kern)(                  \
               ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, T *), ND_RI(0), ND_RI(1), r->d[0]) != 0; \
  }                                                                                                \
  /* the seed was checked to be a whole number in [0, 2^32): the cast is exact */                  \
  static inline nd_i64 nd_tr_rand_##SUF(const nd_rec *r) {                                         \
    nd_rand_uniform_##SUF(ND_RP(0, T *), ND_RI(0), (uint64_t)r->d[0]);                             \
    return 0;                                                                                      \
  }                                                                                                \
  /* embedding rows: the kernels return the first bad index's position or -1 (status = it + 1) */  \
  static inline nd_i64 nd_tr_emb_##SUF(const nd_rec *r) {                                          \
    return nd_embedding_##SUF(ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, T *), ND_RI(0),   \
                              ND_RI(1), ND_RI(2)) + 1;                                             \
  }                                                                                                \
  static inline nd_i64 nd_tr_emb_grad_##SUF(const nd_rec *r) {                                     \
    return nd_embedding_grad_##SUF(ND_RP(0, const T *), ND_RP(1, const T *), ND_RP(2, T *),        \
                                   ND_RI(0), ND_RI(1), ND_RI(2)) + 1;                              \
  }

ND_TRAMPOLINES(float, f32)
ND_TRAMPOLINES(double, f64)

/* i0 elsize, i1 source offset, i2 destination offset, i3 ndim; tables p0
 * source strides, p1 destination strides, p2 shape; p3 source, p4 destination */
static inline nd_i64 nd_tr_copy_strided(const nd_rec *r) {
  nd_copy_strided((int)ND_RI(0), r->p[3], ND_RI(1), ND_RP(0, const nd_i64 *), r->p[4], ND_RI(2),
                  ND_RP(1, const nd_i64 *), ND_RP(2, const nd_i64 *), (int)ND_RI(3));
  return 0;
}

/* i0 elsize, i1 offset, i2 ndim; tables p0 strides, p1 shape; p2 destination */
static inline nd_i64 nd_tr_set_strided(const nd_rec *r) {
  float v32 = (float)r->d[0];
  double v64 = r->d[0];
  nd_set_strided((int)ND_RI(0), ND_RI(0) == 4 ? (const void *)&v32 : (const void *)&v64, r->p[2], ND_RI(1),
                 ND_RP(0, const nd_i64 *), ND_RP(1, const nd_i64 *), (int)ND_RI(2));
  return 0;
}

/* i0 buffers; tables p0 sizes, p1..p5 params, grads, moms, out params, out moms */
static inline nd_i64 nd_tr_sgd(const nd_rec *r) {
  nd_sgd_step_f32(ND_RI(0), ND_RP(0, const nd_i64 *), ND_RP(1, const float *const *), ND_RP(2, const float *const *),
                  ND_RP(3, const float *const *), ND_RP(4, float *const *), ND_RP(5, float *const *),
                  (float)r->d[0], (float)r->d[1], (float)r->d[2], (float)r->d[3]);
  return 0;
}

/* i0 buffers, i1 frozen; tables p0 sizes, p1..p7 params, grads, ms, vs, out
 * params, out ms, out vs */
static inline nd_i64 nd_tr_adam(const nd_rec *r) {
  nd_adam_step_f32(ND_RI(0), ND_RP(0, const nd_i64 *), ND_RP(1, const float *const *), ND_RP(2, const float *const *),
                   ND_RP(3, const float *const *), ND_RP(4, const float *const *), ND_RP(5, float *const *),
                   ND_RP(6, float *const *), ND_RP(7, float *const *), (float)r->d[0], (float)r->d[1],
                   (float)r->d[2], (float)r->d[3], (float)r->d[4], (float)r->d[5], (float)r->d[6],
                   (int)ND_RI(1));
  return 0;
}

/* i0 bytes from p1 to p0 */
static inline nd_i64 nd_tr_memcpy(const nd_rec *r) {
  memcpy(r->p[0], r->p[1], (size_t)ND_RI(0));
  return 0;
}

#undef ND_RP
#undef ND_RI

#endif
