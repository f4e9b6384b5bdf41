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

#define ND_DECL_TRAMP(SUF) \
  nd_i64 nd_tr_bin_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_scal_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_un_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_fill_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_rows_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_rows_int_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_gemm_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_ewise_strided_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_conv_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_xent_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_xent_grad_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_bn_stats_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_p4i3_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_p4i3_int_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_p5i3_int_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_p3i2_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_p3i2_int_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_p4i2_int_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_p4i2d_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_p3i2d_int_##SUF(const nd_rec *r); \
  nd_i64 nd_tr_rand_##SUF(const nd_rec *r);
ND_DECL_TRAMP(f32)
ND_DECL_TRAMP(f64)

nd_i64 nd_tr_copy_strided(const nd_rec *r);
nd_i64 nd_tr_set_strided(const nd_rec *r);
nd_i64 nd_tr_sgd(const nd_rec *r);
nd_i64 nd_tr_adam(const nd_rec *r);
nd_i64 nd_tr_memcpy(const nd_rec *r);

#endif
