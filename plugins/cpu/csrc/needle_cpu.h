/* needle_cpu: C kernels of the fast CPU backend.
 *
 * Every function works on raw, already-validated buffers (the Cython layer
 * checks dtypes, sizes, strides and offsets before calling in, with the GIL
 * released).  Sizes, strides and offsets are in elements.  Functions come in
 * _f32 / _f64 pairs; copies are dtype-agnostic and take the element size.
 */
#ifndef NEEDLE_CPU_H
#define NEEDLE_CPU_H

#include <stddef.h>
#include <stdint.h>

typedef int64_t nd_i64;

#define ND_MAX_DIMS 32

/* ---- runtime facts / threads (common.c) ---- */
int nd_openmp_enabled(void);
void nd_set_num_threads(int n);
int nd_get_num_threads(void);
/* SIMD levels of the GEMM/conv micro-kernels (and vmath) */
#define ND_SIMD_NONE 0    /* portable C */
#define ND_SIMD_AVX2 1    /* AVX2 + FMA */
#define ND_SIMD_AVX512 2  /* AVX-512F (+ AVX2 + FMA) */
int nd_simd_level(void);         /* level in use now */
int nd_simd_best(void);          /* highest level this CPU can run */
int nd_set_simd_level(int level);  /* force a level (-1: best); -1 when the CPU lacks it */
int nd_simd_avx2(void);          /* 1 when the level in use is AVX2 or higher */
int nd_cpu_has_avx2_fma(void);
int nd_cpu_has_avx512f(void);

/* ---- aligned memory with a size-class cache (pool.c) ---- */
void *nd_pool_alloc(size_t nbytes, size_t *cap_out);
void nd_pool_free(void *p, size_t cap);
void nd_pool_set_limit(size_t bytes);
size_t nd_pool_cached_bytes(void);
void nd_pool_fresh(size_t *count, size_t *nbytes);
void nd_pool_clear(void);
void *nd_aligned_alloc(size_t nbytes);   /* uncached, 64-byte aligned */
void nd_aligned_free(void *p);

/* ---- element-wise (ewise.c) ---- */
#define ND_DECL_EWISE(T, SUF) \
  void nd_fill_##SUF(T *o, T v, nd_i64 n); \
  void nd_add_##SUF(const T *a, const T *b, T *o, nd_i64 n); \
  void nd_sub_##SUF(const T *a, const T *b, T *o, nd_i64 n); \
  void nd_mul_##SUF(const T *a, const T *b, T *o, nd_i64 n); \
  void nd_div_##SUF(const T *a, const T *b, T *o, nd_i64 n); \
  void nd_pow_##SUF(const T *a, const T *b, T *o, nd_i64 n); \
  void nd_maximum_##SUF(const T *a, const T *b, T *o, nd_i64 n); \
  void nd_eq_##SUF(const T *a, const T *b, T *o, nd_i64 n); \
  void nd_ge_##SUF(const T *a, const T *b, T *o, nd_i64 n); \
  void nd_relu_grad_##SUF(const T *a, const T *b, T *o, nd_i64 n); \
  void nd_sadd_##SUF(const T *a, T v, T *o, nd_i64 n); \
  void nd_ssub_##SUF(const T *a, T v, T *o, nd_i64 n); \
  void nd_smul_##SUF(const T *a, T v, T *o, nd_i64 n); \
  void nd_sdiv_##SUF(const T *a, T v, T *o, nd_i64 n); \
  void nd_srdiv_##SUF(const T *a, T v, T *o, nd_i64 n); \
  void nd_spow_##SUF(const T *a, T v, T *o, nd_i64 n); \
  void nd_smaximum_##SUF(const T *a, T v, T *o, nd_i64 n); \
  void nd_seq_##SUF(const T *a, T v, T *o, nd_i64 n); \
  void nd_sge_##SUF(const T *a, T v, T *o, nd_i64 n); \
  void nd_neg_##SUF(const T *a, T *o, nd_i64 n); \
  void nd_sqrt_##SUF(const T *a, T *o, nd_i64 n); \
  void nd_log_##SUF(const T *a, T *o, nd_i64 n); \
  void nd_exp_##SUF(const T *a, T *o, nd_i64 n); \
  void nd_tanh_##SUF(const T *a, T *o, nd_i64 n); \
  void nd_reduce_sum_##SUF(const T *a, T *o, nd_i64 outer, nd_i64 r); \
  void nd_reduce_max_##SUF(const T *a, T *o, nd_i64 outer, nd_i64 r); \
  int nd_reduce_sum_leading_##SUF(const T *a, T *o, nd_i64 outer, nd_i64 inner); \
  void nd_logsumexp_##SUF(const T *a, T *o, nd_i64 outer, nd_i64 r); \
  void nd_softmax_##SUF(const T *a, T *o, nd_i64 outer, nd_i64 r);

ND_DECL_EWISE(float, f32)
ND_DECL_EWISE(double, f64)

/* ---- element-wise on strided operands (ewise_strided.c) ----
 * o (compact, shape) = OP(a view, b view); a and b already point at their
 * offsets; strides may be 0 (broadcast).  Returns 0, or -1 for an unknown op. */
enum { ND_EW_ADD, ND_EW_SUB, ND_EW_MUL, ND_EW_DIV, ND_EW_MAXIMUM, ND_EW_EQ, ND_EW_GE,
       ND_EW_RELU_GRAD, ND_EW_POW };
int nd_ewise_strided_f32(int op, const float *a, const nd_i64 *sa, const float *b,
                         const nd_i64 *sb, float *o, const nd_i64 *shape, int ndim);
int nd_ewise_strided_f64(int op, const double *a, const nd_i64 *sa, const double *b,
                         const nd_i64 *sb, double *o, const nd_i64 *shape, int ndim);

/* below these many elements a kernel runs on one thread.  Cheap (memory
 * bound) kernels fork from 2^15 elements a thread (PyTorch's grain too):
 * measured with add on a 2-core EPYC (512 KiB L2 a core), an op of 2^16
 * float32 (a Transformer activation; 768 KiB of operands, past one core's
 * L2) took 17.4 us on one thread and 8.4 us on two, against NumPy's 12.2
 * (python benchmarks/compare.py kernels --filter 2^16: 1.15-1.6x NumPy, also
 * next to nice'd background jobs).  The cost: on a machine whose other core
 * is taken by an equal-priority process, the second thread waits for a
 * time slice (an earlier 2^19 grain was chosen for that case, 0.15x there).
 * libm calls are dearer: threads pay past ~4K of them. */
#define ND_GRAIN_CHEAP (1 << 15)
#define ND_GRAIN_MATH 4096
/* vectorised exp/log/tanh cost ~0.3-0.5 ns an element: threads pay past ~16K */

/* ---- vectorised float32 exp/log/tanh on one chunk, calling thread (vmath.c) ---- */
void nd_vexp_f32(const float *a, float *o, nd_i64 n);
void nd_vlog_f32(const float *a, float *o, nd_i64 n);
void nd_vtanh_f32(const float *a, float *o, nd_i64 n);
double nd_vrow_sum_f32(const float *a, nd_i64 r);  /* one row, float32 */
float nd_vrow_max_f32(const float *a, nd_i64 r);    /* nan if any nan */
int nd_vmath_level(void);        /* 2 AVX-512F, 1 AVX2+FMA, 0 libm */
void nd_vmath_cap(int level);    /* tests: highest path allowed */

/* ---- strided copies (strided.c); elsize is 4 or 8 ---- */
/* dst[doff + idx.dst_st] = src[soff + idx.src_st] for every idx in shape */
void nd_copy_strided(int elsize, const void *src, nd_i64 soff, const nd_i64 *src_st,
                     void *dst, nd_i64 doff, const nd_i64 *dst_st,
                     const nd_i64 *shape, int ndim);
/* dst[doff + idx.dst_st] = *val for every idx in shape */
void nd_set_strided(int elsize, const void *val, void *dst, nd_i64 doff,
                    const nd_i64 *dst_st, const nd_i64 *shape, int ndim);

/* ---- GEMM (gemm.c) ----
 * C[t,i,j] (+)= sum_k A[t*sa0 + i*sa1 + k*sa2] * B[t*sb0 + k*sb1 + j*sb2]
 * C[t,i,j] lives at C + t*sc0 + i*ldc + j.  accumulate=0 overwrites C.
 * Returns 0, or -1 when the packing buffers cannot be allocated. */
int nd_gemm_f32(nd_i64 batch, nd_i64 m, nd_i64 n, nd_i64 p,
                 const float *A, nd_i64 sa0, nd_i64 sa1, nd_i64 sa2,
                 const float *B, nd_i64 sb0, nd_i64 sb1, nd_i64 sb2,
                 float *C, nd_i64 sc0, nd_i64 ldc, int accumulate);
int nd_gemm_f64(nd_i64 batch, nd_i64 m, nd_i64 n, nd_i64 p,
                 const double *A, nd_i64 sa0, nd_i64 sa1, nd_i64 sa2,
                 const double *B, nd_i64 sb0, nd_i64 sb1, nd_i64 sb2,
                 double *C, nd_i64 sc0, nd_i64 ldc, int accumulate);

/* ---- convolution, NHWC (conv.c); returns 0, or -1 when out of memory ---- */
#define ND_DECL_CONV(T, SUF) \
  int nd_conv_fwd_##SUF(const T *x, const T *w, T *y, nd_i64 N, nd_i64 H, nd_i64 W, \
                        nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad); \
  int nd_conv_grad_input_##SUF(const T *g, const T *w, T *dx, nd_i64 N, nd_i64 H, nd_i64 W, \
                               nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad); \
  int nd_conv_grad_weight_##SUF(const T *x, const T *g, T *dw, nd_i64 N, nd_i64 H, nd_i64 W, \
                                nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad);
ND_DECL_CONV(float, f32)
ND_DECL_CONV(double, f64)

/* internal: thread count for `work` units given a grain below which to stay serial */
int nd_threads_for(nd_i64 work, nd_i64 grain);
/* internal: threads for a pass over `total` elements whose `outer` rows are
 * split between the threads (at least one row a thread; ND_GRAIN_CHEAP) */
int nd_threads_for_rows(nd_i64 outer, nd_i64 total);
/* thread t's share [lo, hi) of n rows split over nt threads */
#define ND_ROW_SLICE(n, t, nt, lo, hi) \
  nd_i64 lo = (n) * (t) / (nt), hi = (n) * ((t) + 1) / (nt)
/* the calling thread's number in an OpenMP team (0 without OpenMP) */
#ifdef _OPENMP
#include <omp.h>
#define ND_OMP_TID() omp_get_thread_num()
#else
#define ND_OMP_TID() 0
#endif

/* ---- [i14f2 fused norm] batch-norm op overrides (fused_norm.c) ----
 * x is a compact (outer, C, inner) array normalised per channel c.
 * stats: out rows (4, C) mean, biased variance, inv_std, scale = inv_std * w;
 * grad_stats: out rows (2, C) sum g, sum g*xhat; apply: o = (x - mean)*scale
 * + sh; grad_input: the input's adjoint from both.  The int ones return -1
 * when out of memory. */
#define ND_DECL_FUSED_NORM(T, SUF) \
  int nd_bn_stats_##SUF(const T *x, const T *w, T *out, nd_i64 outer, nd_i64 C, nd_i64 inner, \
                        double eps); \
  int nd_bn_grad_stats_##SUF(const T *g, const T *x, const T *st, T *out, \
                             nd_i64 outer, nd_i64 C, nd_i64 inner); \
  void nd_bn_apply_##SUF(const T *x, const T *st, const T *sh, T *o, \
                         nd_i64 outer, nd_i64 C, nd_i64 inner); \
  int nd_bn_grad_input_##SUF(const T *g, const T *x, const T *st, const T *gs, T *o, \
                             nd_i64 outer, nd_i64 C, nd_i64 inner);
ND_DECL_FUSED_NORM(float, f32)
ND_DECL_FUSED_NORM(double, f64)
/* rows (outer, r), contiguous: softmax backward o = y*(g - sum(g*y)); layer norm
 * over the last axis (biased variance) forward, input adjoint, and params
 * adjoint out[0:r] = sum g*xhat, out[r:2r] = sum g (-1 when out of memory). */
#define ND_DECL_FUSED_ROWS(T, SUF) \
  void nd_softmax_grad_##SUF(const T *y, const T *g, T *o, nd_i64 outer, nd_i64 r); \
  void nd_layer_norm_##SUF(const T *x, const T *w, const T *b, T *o, nd_i64 outer, nd_i64 r, double eps); \
  void nd_layer_norm_grad_input_##SUF(const T *g, const T *x, const T *w, T *o, \
                                      nd_i64 outer, nd_i64 r, double eps); \
  int nd_layer_norm_grad_params_##SUF(const T *g, const T *x, T *out, nd_i64 outer, nd_i64 r, double eps);
ND_DECL_FUSED_ROWS(float, f32)
ND_DECL_FUSED_ROWS(double, f64)
/* LSTM gates: z (B, 4H) i,f,g,o pre-activations, c (B, H); forward out (B, 2, H) =
 * (h', c'); grad g (B, 2, H) -> out = B*4H adjoints of z then B*H of c.  -1: no memory. */
int nd_lstm_gates_f32(const float *z, const float *c, float *out, nd_i64 B, nd_i64 H);
int nd_lstm_gates_f64(const double *z, const double *c, double *out, nd_i64 B, nd_i64 H);
int nd_lstm_gates_grad_f32(const float *z, const float *c, const float *g, float *out, nd_i64 B, nd_i64 H);
int nd_lstm_gates_grad_f64(const double *z, const double *c, const double *g, double *out, nd_i64 B, nd_i64 H);
/* ---- [/i14f2 fused norm] ---- */

/* ---- rand_uniform (rand.c): o[i] = the protocol's counter-based uniform of
 * (seed, i) in [0, 1); seed < 2^32 (checked by the caller) ---- */
void nd_rand_uniform_f32(float *o, nd_i64 n, uint64_t seed);
void nd_rand_uniform_f64(double *o, nd_i64 n, uint64_t seed);

#endif
