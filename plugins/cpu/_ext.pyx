# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, nonecheck=False, embedsignature=True
"""needle's fast CPU backend: buffers and kernels (compiled module).

Every kernel method validates its arguments here (dtypes, sizes, strides,
offsets -- cheap integer checks) and only then calls the C kernels in
``csrc/`` with the GIL released.  No argument from Python reaches C code that
could read or write outside a buffer.

Each C call is a record (``csrc/replay.h``): run at once by an eager call, or
kept by :meth:`CpuBackend.compile_replay`, whose :class:`NativeReplay` runs a
whole captured step (``needle.jit``) in one C loop without the GIL.
"""

from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy
from cpython.pythread cimport PyThread_get_thread_ident

import os

import numpy as np

from needle.errors import ArgumentError, BackendUnavailableError, ShapeError
from needle.protocol import PROTOCOL_VERSION, Backend, ReplayScalar, UnsupportedDTypeError, check_seed

cdef extern from "needle_cpu.h" nogil:
    ctypedef int64_t nd_i64
    int nd_openmp_enabled() noexcept
    void nd_set_num_threads(int n) noexcept
    int nd_get_num_threads() noexcept
    int nd_simd_level() noexcept
    int nd_simd_best() noexcept
    int nd_set_simd_level(int level) noexcept
    int nd_cpu_has_avx2_fma() noexcept
    int nd_cpu_has_avx512f() noexcept
    int nd_vmath_level() noexcept
    void nd_vmath_cap(int level) noexcept
    void *nd_pool_alloc(size_t nbytes, size_t *cap_out) noexcept
    void nd_pool_free(void *p, size_t cap) noexcept
    void nd_pool_set_limit(size_t nbytes) noexcept
    size_t nd_pool_cached_bytes() noexcept
    void nd_pool_fresh(size_t *count, size_t *nbytes) noexcept
    void nd_pool_clear() noexcept

    void nd_fill_f32(float *o, float v, nd_i64 n) noexcept
    void nd_fill_f64(double *o, double v, nd_i64 n) noexcept

    void nd_add_f32(const float *a, const float *b, float *o, nd_i64 n) noexcept
    void nd_sub_f32(const float *a, const float *b, float *o, nd_i64 n) noexcept
    void nd_mul_f32(const float *a, const float *b, float *o, nd_i64 n) noexcept
    void nd_div_f32(const float *a, const float *b, float *o, nd_i64 n) noexcept
    void nd_pow_f32(const float *a, const float *b, float *o, nd_i64 n) noexcept
    void nd_maximum_f32(const float *a, const float *b, float *o, nd_i64 n) noexcept
    void nd_eq_f32(const float *a, const float *b, float *o, nd_i64 n) noexcept
    void nd_ge_f32(const float *a, const float *b, float *o, nd_i64 n) noexcept
    void nd_relu_grad_f32(const float *a, const float *b, float *o, nd_i64 n) noexcept
    void nd_sadd_f32(const float *a, float v, float *o, nd_i64 n) noexcept
    void nd_ssub_f32(const float *a, float v, float *o, nd_i64 n) noexcept
    void nd_smul_f32(const float *a, float v, float *o, nd_i64 n) noexcept
    void nd_sdiv_f32(const float *a, float v, float *o, nd_i64 n) noexcept
    void nd_srdiv_f32(const float *a, float v, float *o, nd_i64 n) noexcept
    void nd_spow_f32(const float *a, float v, float *o, nd_i64 n) noexcept
    void nd_smaximum_f32(const float *a, float v, float *o, nd_i64 n) noexcept
    void nd_seq_f32(const float *a, float v, float *o, nd_i64 n) noexcept
    void nd_sge_f32(const float *a, float v, float *o, nd_i64 n) noexcept
    void nd_neg_f32(const float *a, float *o, nd_i64 n) noexcept
    void nd_sqrt_f32(const float *a, float *o, nd_i64 n) noexcept
    void nd_log_f32(const float *a, float *o, nd_i64 n) noexcept
    void nd_exp_f32(const float *a, float *o, nd_i64 n) noexcept
    void nd_tanh_f32(const float *a, float *o, nd_i64 n) noexcept
    void nd_reduce_sum_f32(const float *a, float *o, nd_i64 outer, nd_i64 r) noexcept
    void nd_reduce_max_f32(const float *a, float *o, nd_i64 outer, nd_i64 r) noexcept
    int nd_reduce_sum_leading_f32(const float *a, float *o, nd_i64 outer, nd_i64 inner) noexcept
    void nd_logsumexp_f32(const float *a, float *o, nd_i64 outer, nd_i64 r) noexcept
    void nd_softmax_f32(const float *a, float *o, nd_i64 outer, nd_i64 r) noexcept

    void nd_add_f64(const double *a, const double *b, double *o, nd_i64 n) noexcept
    void nd_sub_f64(const double *a, const double *b, double *o, nd_i64 n) noexcept
    void nd_mul_f64(const double *a, const double *b, double *o, nd_i64 n) noexcept
    void nd_div_f64(const double *a, const double *b, double *o, nd_i64 n) noexcept
    void nd_pow_f64(const double *a, const double *b, double *o, nd_i64 n) noexcept
    void nd_maximum_f64(const double *a, const double *b, double *o, nd_i64 n) noexcept
    void nd_eq_f64(const double *a, const double *b, double *o, nd_i64 n) noexcept
    void nd_ge_f64(const double *a, const double *b, double *o, nd_i64 n) noexcept
    void nd_relu_grad_f64(const double *a, const double *b, double *o, nd_i64 n) noexcept
    void nd_sadd_f64(const double *a, double v, double *o, nd_i64 n) noexcept
    void nd_ssub_f64(const double *a, double v, double *o, nd_i64 n) noexcept
    void nd_smul_f64(const double *a, double v, double *o, nd_i64 n) noexcept
    void nd_sdiv_f64(const double *a, double v, double *o, nd_i64 n) noexcept
    void nd_srdiv_f64(const double *a, double v, double *o, nd_i64 n) noexcept
    void nd_spow_f64(const double *a, double v, double *o, nd_i64 n) noexcept
    void nd_smaximum_f64(const double *a, double v, double *o, nd_i64 n) noexcept
    void nd_seq_f64(const double *a, double v, double *o, nd_i64 n) noexcept
    void nd_sge_f64(const double *a, double v, double *o, nd_i64 n) noexcept
    void nd_neg_f64(const double *a, double *o, nd_i64 n) noexcept
    void nd_sqrt_f64(const double *a, double *o, nd_i64 n) noexcept
    void nd_log_f64(const double *a, double *o, nd_i64 n) noexcept
    void nd_exp_f64(const double *a, double *o, nd_i64 n) noexcept
    void nd_tanh_f64(const double *a, double *o, nd_i64 n) noexcept
    void nd_reduce_sum_f64(const double *a, double *o, nd_i64 outer, nd_i64 r) noexcept
    void nd_reduce_max_f64(const double *a, double *o, nd_i64 outer, nd_i64 r) noexcept
    int nd_reduce_sum_leading_f64(const double *a, double *o, nd_i64 outer, nd_i64 inner) noexcept
    void nd_logsumexp_f64(const double *a, double *o, nd_i64 outer, nd_i64 r) noexcept
    void nd_softmax_f64(const double *a, double *o, nd_i64 outer, nd_i64 r) noexcept

    int nd_ewise_strided_f32(int op, const float *a, const nd_i64 *sa, const float *b,
                             const nd_i64 *sb, float *o, const nd_i64 *shape, int ndim) noexcept
    int nd_ewise_strided_f64(int op, const double *a, const nd_i64 *sa, const double *b,
                             const nd_i64 *sb, double *o, const nd_i64 *shape, int ndim) noexcept
    void nd_copy_strided(int elsize, const void *src, nd_i64 soff, const nd_i64 *src_st,
                         void *dst, nd_i64 doff, const nd_i64 *dst_st,
                         const nd_i64 *shape, int ndim) noexcept
    void nd_set_strided(int elsize, const void *val, void *dst, nd_i64 doff,
                        const nd_i64 *dst_st, const nd_i64 *shape, int ndim) noexcept

    int nd_gemm_f32(nd_i64 batch, nd_i64 m, nd_i64 n, nd_i64 p,
                    const float *A, nd_i64 sa0, nd_i64 sa1, nd_i64 sa2,
                    const float *B, nd_i64 sb0, nd_i64 sb1, nd_i64 sb2,
                    float *C, nd_i64 sc0, nd_i64 ldc, int accumulate) noexcept
    int nd_gemm_f64(nd_i64 batch, nd_i64 m, nd_i64 n, nd_i64 p,
                    const double *A, nd_i64 sa0, nd_i64 sa1, nd_i64 sa2,
                    const double *B, nd_i64 sb0, nd_i64 sb1, nd_i64 sb2,
                    double *C, nd_i64 sc0, nd_i64 ldc, int accumulate) noexcept

    int nd_conv_fwd_f32(const float *x, const float *w, float *y, nd_i64 N, nd_i64 H, nd_i64 W,
                        nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad) noexcept
    int nd_conv_grad_input_f32(const float *g, const float *w, float *dx, nd_i64 N, nd_i64 H,
                               nd_i64 W, nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad) noexcept
    int nd_conv_grad_weight_f32(const float *x, const float *g, float *dw, nd_i64 N, nd_i64 H,
                                nd_i64 W, nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad) noexcept
    int nd_conv_fwd_f64(const double *x, const double *w, double *y, nd_i64 N, nd_i64 H, nd_i64 W,
                        nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad) noexcept
    int nd_conv_grad_input_f64(const double *g, const double *w, double *dx, nd_i64 N, nd_i64 H,
                               nd_i64 W, nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad) noexcept
    int nd_conv_grad_weight_f64(const double *x, const double *g, double *dw, nd_i64 N, nd_i64 H,
                                nd_i64 W, nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad) noexcept

# ---- issue 14 fused ops: softmax cross-entropy, multi-tensor SGD/Adam (csrc/fused_loss.c) ----
cdef extern from "fused_loss.h" nogil:
    nd_i64 nd_softmax_xent_f32(const float *z, const float *lab, float *loss, nd_i64 rows, nd_i64 cls) noexcept
    nd_i64 nd_softmax_xent_f64(const double *z, const double *lab, double *loss, nd_i64 rows, nd_i64 cls) noexcept
    nd_i64 nd_softmax_xent_grad_f32(const float *z, const float *lab, const float *g, float *out,
                                    nd_i64 rows, nd_i64 cls) noexcept
    nd_i64 nd_softmax_xent_grad_f64(const double *z, const double *lab, const double *g, double *out,
                                    nd_i64 rows, nd_i64 cls) noexcept
    void nd_sgd_step_f32(nd_i64 n, const nd_i64 *size, const float *const *p, const float *const *g,
                         const float *const *u, float *const *p_out, float *const *u_out,
                         float lr, float mom, float c, float wd) noexcept
    void nd_adam_step_f32(nd_i64 n, const nd_i64 *size, const float *const *p, const float *const *g,
                          const float *const *m, const float *const *v, float *const *p_out,
                          float *const *m_out, float *const *v_out, float b1, float c1, float b2, float c2, float wd,
                          float k_scale, float eps_s, int frozen) noexcept

from libc.stdlib cimport malloc, free, realloc

# ---- recorded kernel calls (csrc/replay.h) ----
cdef extern from "replay.h" nogil:
    ctypedef void (*nd_kern_t)() noexcept nogil
    ctypedef struct nd_rec:
        nd_i64 (*fn)(const nd_rec *) noexcept nogil
        nd_kern_t kern
        void *p[8]
        nd_i64 i[16]
        double d[8]
        void *own
        nd_i64 tablen
        int ntab
        int err
        int kind
    ctypedef nd_i64 (*nd_tramp_t)(const nd_rec *) noexcept nogil
    nd_i64 nd_replay_run(const nd_rec *recs, nd_i64 n, nd_i64 *status) noexcept
    nd_i64 nd_tr_bin_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_bin_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_scal_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_scal_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_un_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_un_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_fill_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_fill_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_rows_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_rows_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_rows_int_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_rows_int_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_gemm_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_gemm_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_ewise_strided_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_ewise_strided_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_conv_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_conv_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_xent_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_xent_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_xent_grad_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_xent_grad_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_bn_stats_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_bn_stats_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_p4i3_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_p4i3_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_p4i3_int_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_p4i3_int_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_p5i3_int_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_p5i3_int_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_p3i2_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_p3i2_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_p3i2_int_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_p3i2_int_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_p4i2_int_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_p4i2_int_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_p4i2d_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_p4i2d_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_p3i2d_int_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_p3i2d_int_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_rand_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_rand_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_emb_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_emb_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_emb_grad_f32(const nd_rec *r) noexcept
    nd_i64 nd_tr_emb_grad_f64(const nd_rec *r) noexcept
    nd_i64 nd_tr_copy_strided(const nd_rec *r) noexcept
    nd_i64 nd_tr_set_strided(const nd_rec *r) noexcept
    nd_i64 nd_tr_sgd(const nd_rec *r) noexcept
    nd_i64 nd_tr_adam(const nd_rec *r) noexcept
    nd_i64 nd_tr_memcpy(const nd_rec *r) noexcept

from needle.errors import OutOfBoundsError


cdef int _xent_check(str op, CpuArray z, CpuArray labels, CpuArray out, Py_ssize_t rows,
                     Py_ssize_t classes, Py_ssize_t out_need) except -1:
    _same_dtype(op, z, out)
    _same_dtype(op, labels, out)
    if classes < 1:
        raise ShapeError(f"{op}: the number of classes must be >= 1, got {classes}")
    _nonneg(op, "the number of rows", rows)
    _need(op, "logits", z, rows * classes)
    _need(op, "labels", labels, rows)
    _need(op, "out", out, out_need)
    return 0


cdef int _embedding_call(str op, CpuArray a, CpuArray ids, CpuArray out, Py_ssize_t rows,
                         Py_ssize_t num, Py_ssize_t dim, Py_ssize_t a_need, Py_ssize_t out_need,
                         nd_tramp_t t32, nd_tramp_t t64) except -1:
    """Check and run (or record) one embedding kernel: ``a`` is the table
    (gather) or the rows' adjoint (scatter-add), ``out`` the other side."""
    _same_dtype(op, a, out)
    _same_dtype(op, ids, out)
    _nonneg(op, "the number of rows", rows)
    _nonneg(op, "the number of table rows", num)
    _nonneg(op, "the row width", dim)
    _need(op, "the first operand", a, a_need)
    _need(op, "ids", ids, rows)
    _need(op, "out", out, out_need)
    if out_need == 0:  # nothing to write
        return 0
    cdef nd_rec r
    _setk(&r, out.kind, t32, t64, NULL, NULL, ERR_INDEX)
    r.p[0] = a.data
    r.p[1] = ids.data
    r.p[2] = out.data
    r.i[0] = rows
    r.i[1] = num
    r.i[2] = dim
    return _go(op, &r)


cdef class _PtrList:
    """C arrays of the data pointers (and sizes) of a list of same-dtype buffers."""
    cdef void **ptr
    cdef nd_i64 *size
    cdef Py_ssize_t n

    def __cinit__(self, Py_ssize_t n):
        self.n = n
        self.ptr = <void **>malloc(max(n, 1) * sizeof(void *))
        self.size = <nd_i64 *>malloc(max(n, 1) * sizeof(nd_i64))
        if self.ptr == NULL or self.size == NULL:
            raise MemoryError("multi-tensor step: cannot allocate the pointer table")

    def __dealloc__(self):
        free(self.ptr)
        free(self.size)


cdef _PtrList _ptrs(str op, str what, list bufs, _PtrList sizes):
    """Pointers of ``bufs`` (float32, each at least sizes.size[k] elements; with
    sizes None the sizes are taken from the buffers themselves); None for a None list."""
    cdef Py_ssize_t k, n = len(bufs)
    cdef CpuArray b
    cdef _PtrList out = _PtrList(n)
    if sizes is not None and n != sizes.n:
        raise ShapeError(f"{op}: {what} has {n} buffers, expected {sizes.n}")
    for k in range(n):
        b = bufs[k]
        if b.kind != 0:
            raise UnsupportedDTypeError(f"{op}: {what}[{k}] is {b.dtype.name}; the step takes float32 buffers")
        if sizes is not None and b.size < sizes.size[k]:
            raise ShapeError(f"{op}: buffer {what}[{k}] has {b.size} elements, the call needs {sizes.size[k]}")
        out.ptr[k] = b.data
        out.size[k] = b.size
    return out


cdef enum:
    MAX_DIMS = 32

ctypedef void (*bin_f32_t)(const float *, const float *, float *, nd_i64) noexcept nogil
ctypedef void (*bin_f64_t)(const double *, const double *, double *, nd_i64) noexcept nogil
ctypedef void (*scal_f32_t)(const float *, float, float *, nd_i64) noexcept nogil
ctypedef void (*scal_f64_t)(const double *, double, double *, nd_i64) noexcept nogil
ctypedef void (*un_f32_t)(const float *, float *, nd_i64) noexcept nogil
ctypedef void (*un_f64_t)(const double *, double *, nd_i64) noexcept nogil
ctypedef void (*rows_f32_t)(const float *, float *, nd_i64, nd_i64) noexcept nogil
ctypedef void (*rows_f64_t)(const double *, double *, nd_i64, nd_i64) noexcept nogil
ctypedef int (*conv_f32_t)(const float *, const float *, float *, nd_i64, nd_i64, nd_i64,
                           nd_i64, nd_i64, nd_i64, nd_i64, nd_i64) noexcept nogil
ctypedef int (*conv_f64_t)(const double *, const double *, double *, nd_i64, nd_i64, nd_i64,
                           nd_i64, nd_i64, nd_i64, nd_i64, nd_i64) noexcept nogil

__version__ = "0.1.0"
TILE = 8

_F32 = np.dtype("float32")
_F64 = np.dtype("float64")
_DTYPES = (_F32, _F64)
_ITEMSIZE = (4, 8)


# ---------------------------------------------------------------------------
# Buffers
# ---------------------------------------------------------------------------
cdef int _kind_of(object dtype, str op) except -1:
    """0 for float32, 1 for float64; UnsupportedDTypeError otherwise."""
    if dtype is _F32:
        return 0
    if dtype is _F64:
        return 1
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt == _F32:
        return 0
    if dt == _F64:
        return 1
    raise UnsupportedDTypeError(
        f"{op}: backend 'cpu' does not support dtype {dtype!r}; supported: float32, float64")


cdef class CpuArray:
    """A flat, 64-byte aligned buffer of ``size`` float32 or float64 elements.

    Memory comes from (and returns to) the backend's size-class cache."""

    cdef void *data
    cdef size_t cap
    cdef readonly Py_ssize_t size
    cdef readonly object dtype
    cdef readonly int kind
    cdef readonly int itemsize

    def __cinit__(self, Py_ssize_t size, dtype=_F32):
        self.kind = _kind_of(dtype, "Array")
        if size < 0:
            raise ValueError(f"Array: size must be >= 0, got {size}")
        self.itemsize = _ITEMSIZE[self.kind]
        if size > (<Py_ssize_t>1 << 60) // self.itemsize:
            raise MemoryError(f"Array: {size} elements is too large")
        self.size = size
        self.dtype = _DTYPES[self.kind]
        self.data = nd_pool_alloc(<size_t>size * self.itemsize, &self.cap)
        if self.data == NULL:
            raise MemoryError(f"Array: cannot allocate {size} elements of {self.dtype}")

    def __dealloc__(self):
        if self.data != NULL:
            nd_pool_free(self.data, self.cap)
            self.data = NULL

    def ptr(self):
        """Address of the first element."""
        return <size_t>self.data

    def __repr__(self):
        return f"needle_cpu.CpuArray(size={self.size}, dtype={self.dtype.name})"


cdef inline CpuArray _new(Py_ssize_t size, int kind):
    """A scratch buffer; a recording tape keeps it, as its calls point into it."""
    buf = CpuArray(size, _DTYPES[kind])
    if _rec_active:
        tape = _recording_tape()
        if tape is not None:
            (<NativeReplay>tape).keep.append(buf)
    return buf


# ---------------------------------------------------------------------------
# Validation (runs with the GIL, before any C kernel)
# ---------------------------------------------------------------------------
cdef int _same_dtype(str op, CpuArray a, CpuArray out) except -1:
    if a.kind != out.kind:
        raise UnsupportedDTypeError(
            f"{op}: buffers must share one dtype, got {a.dtype.name} and {out.dtype.name}")
    return 0


cdef int _need(str op, str what, CpuArray a, Py_ssize_t n) except -1:
    if a.size < n:
        raise ShapeError(f"{op}: buffer {what} has {a.size} elements, the call needs {n}")
    return 0


cdef int _nonneg(str op, str what, Py_ssize_t v) except -1:
    if v < 0:
        raise ShapeError(f"{op}: {what} must be >= 0, got {v}")
    return 0


cdef Py_ssize_t _view(str op, str what, CpuArray buf, shape, strides, offset,
                      nd_i64 *sh, nd_i64 *st, int *ndim) except -1:
    """Check a strided view of ``buf`` and copy it into C arrays; returns its
    element count.  Every reachable index must lie in [0, buf.size)."""
    cdef int nd = len(shape), k
    if len(strides) != nd:
        raise ShapeError(f"{op}: {what} shape {tuple(shape)} and strides {tuple(strides)} "
                         f"differ in length")
    if nd > MAX_DIMS:
        raise ShapeError(f"{op}: {what} has {nd} dimensions; at most {MAX_DIMS} are supported")
    off = int(offset)
    if off < 0:
        raise ShapeError(f"{op}: {what} offset must be >= 0, got {off}")
    count = 1
    last = off
    for k in range(nd):
        n = int(shape[k])
        s = int(strides[k])
        if n < 0 or s < 0:
            raise ShapeError(f"{op}: {what} shape {tuple(shape)} / strides {tuple(strides)} "
                             f"must be non-negative")
        count *= n
        if n > 0:
            last += (n - 1) * s
    if count > 0 and last >= buf.size:
        raise ShapeError(f"{op}: {what} view (shape {tuple(shape)}, strides {tuple(strides)}, "
                         f"offset {off}) reaches element {last} of a buffer of {buf.size}")
    if count > 0:
        for k in range(nd):
            sh[k] = shape[k]
            st[k] = strides[k]
    ndim[0] = nd
    return count


cdef void _compact_strides(const nd_i64 *sh, nd_i64 *st, int nd) noexcept:
    cdef nd_i64 acc = 1
    cdef int k
    for k in range(nd - 1, -1, -1):
        st[k] = acc
        acc *= sh[k]


# ---------------------------------------------------------------------------
# Recorded kernel calls.  Every kernel call is an nd_rec (csrc/replay.h) run
# by _go: at once for an eager call, or appended to the calling thread's tape
# while compile_replay records a program -- so a method's validation runs
# once, when the program is compiled, and a replay runs only the C calls.
# ---------------------------------------------------------------------------
# what a non-zero kernel status means (nd_rec.err)
cdef enum:
    ERR_NONE = 0
    ERR_NOMEM_PACK = 1
    ERR_NOMEM_IM2COL = 2
    ERR_NOMEM_SUMS = 3
    ERR_NOMEM_COEF = 4
    ERR_NOMEM_ROWS = 5
    ERR_LABEL = 6      # status: the first bad label's row + 1
    ERR_STRIDED = 7
    ERR_INDEX = 8      # status: the first bad embedding index's position + 1

_NOMEM_WHAT = (None, "cannot allocate the packing buffers", "cannot allocate the im2col buffer",
               "cannot allocate the per-thread sums", "cannot allocate the per-channel coefficients",
               "cannot allocate the row scratch")


cdef int _raise_status(str op, const nd_rec *r, nd_i64 st) except -1:
    """Raise the typed error of a kernel that returned status ``st`` != 0."""
    cdef nd_i64 row, k
    if ERR_NOMEM_PACK <= r.err <= ERR_NOMEM_ROWS:
        raise MemoryError(f"{op}: {_NOMEM_WHAT[r.err]}")
    if r.err == ERR_LABEL or r.err == ERR_INDEX:
        # the loss kernels' labels and the embedding kernels' indices are both
        # p[1], their bound i[1]; the status is the first bad position + 1
        row = st - 1
        x = (<const double *>r.p[1])[row] if r.kind else (<const float *>r.p[1])[row]
        value = _DTYPES[r.kind].type(x)
        if r.err == ERR_LABEL:
            raise OutOfBoundsError(f"{op}: label {value!r} of row {row} is not a class index in [0, {r.i[1]})")
        raise OutOfBoundsError(f"{op}: index {value!r} at position {row} is not a whole number in "
                               f"[0, {r.i[1]})")
    if r.err == ERR_STRIDED:
        shape = tuple([(<const nd_i64 *>r.p[2])[k] for k in range(r.i[1])])
        raise ShapeError(f"ewise_strided: the C kernel refused {_EWS_NAMES[r.i[0]]!r} on shape {shape}")
    raise RuntimeError(f"{op}: the C kernel failed with status {st}")


# compile_replay calls in progress (any thread), and the tape of each
# recording thread: an eager call pays one integer test while none records,
# and a thread that does not record keeps running its calls even while
# another thread compiles a program
cdef int _rec_active = 0
cdef dict _rec_tapes = {}


cdef int _record(str op, const nd_rec *r) except -1:
    """Append ``r`` to this thread's tape: 1, or 0 when this thread does not record."""
    tape = _rec_tapes.get(PyThread_get_thread_ident())
    if tape is None:
        return 0
    (<NativeReplay>tape)._append(op, r)
    return 1


cdef object _recording_tape():
    """This thread's tape while it records, else None."""
    if not _rec_active:
        return None
    return _rec_tapes.get(PyThread_get_thread_ident())


cdef inline void _setk(nd_rec *r, int kind, nd_tramp_t t32, nd_tramp_t t64, nd_kern_t k32,
                       nd_kern_t k64, int err) noexcept:
    """The dtype's trampoline and kernel; no tables (a caller with some sets ntab after)."""
    r.kind = kind
    r.err = err
    r.ntab = 0
    if kind == 0:
        r.fn = t32
        r.kern = k32
    else:
        r.fn = t64
        r.kern = k64


cdef inline int _go(str op, nd_rec *r) except -1:
    """Run the call ``r`` now without the GIL -- or record it -- and raise its error."""
    cdef nd_i64 st
    if _rec_active and _record(op, r):
        return 0
    # read before the GIL is released: the C compiler then sees which
    # trampoline it is (an inline function) and calls the kernel directly
    cdef nd_tramp_t fn = r.fn
    with nogil:
        st = fn(r)
    if st != 0:
        _raise_status(op, r, st)
    return 0


cdef inline int _go_kind(str op, nd_rec *r, nd_tramp_t t32, nd_tramp_t t64) except -1:
    """_go for the hot small kernels: with t32 and t64 known where this is
    inlined, each branch inlines its trampoline and an eager call costs what
    a direct kernel call did (a trampoline chosen by a conditional move
    stayed an extra indirect call)."""
    cdef nd_i64 st
    if _rec_active and _record(op, r):
        return 0
    with nogil:
        if r.kind == 0:
            st = t32(r)
        else:
            st = t64(r)
    if st != 0:
        _raise_status(op, r, st)
    return 0


cdef class NativeReplay:
    """A program compiled by :meth:`CpuBackend.compile_replay`: its kernel calls
    as a C array of records, run in order by one loop without the GIL.

    It holds the program (so every buffer the records point into), the
    scratch buffers and host copies the calls made while recording, and its
    own copies of the strides, shapes and pointer lists."""

    cdef nd_rec *recs
    cdef Py_ssize_t n, cap
    cdef list _ops    # per record: the method that made it (for error messages)
    cdef list keep
    cdef Py_ssize_t *dyn   # per dynamic scalar: (record, d slot, scalars index)
    cdef char *dyn_seed    # 1 where the scalar is rand_uniform's seed (checked every run)
    cdef Py_ssize_t ndyn, nslots
    cdef bint running

    def __cinit__(self):
        self._ops = []
        self.keep = []

    def __dealloc__(self):
        cdef Py_ssize_t k
        for k in range(self.n):
            free(self.recs[k].own)
        free(self.recs)
        free(self.dyn)
        free(self.dyn_seed)

    cdef int _append(self, str op, const nd_rec *r) except -1:
        cdef nd_rec *grown
        cdef nd_rec *dst
        cdef char *own
        cdef size_t tb
        cdef Py_ssize_t newcap
        cdef int k
        if self.n == self.cap:
            newcap = max(64, 2 * self.cap)
            grown = <nd_rec *>realloc(self.recs, newcap * sizeof(nd_rec))
            if grown == NULL:
                raise MemoryError("compile_replay: cannot grow the call table")
            self.recs = grown
            self.cap = newcap
        dst = &self.recs[self.n]
        memcpy(dst, r, sizeof(nd_rec))
        dst.own = NULL
        if r.ntab > 0:  # the tables live on the recording call's stack: copy them
            tb = <size_t>max(r.tablen, 1) * sizeof(nd_i64)
            own = <char *>malloc(r.ntab * tb)
            if own == NULL:
                raise MemoryError("compile_replay: cannot copy a call's tables")
            for k in range(r.ntab):
                if r.tablen > 0:
                    memcpy(own + k * tb, r.p[k], <size_t>r.tablen * sizeof(nd_i64))
                dst.p[k] = own + k * tb
            dst.own = own
        self._ops.append(op)
        self.n += 1
        return 0

    cdef int _set_dyn(self, list dyn) except -1:
        cdef Py_ssize_t k
        self.ndyn = len(dyn)
        self.dyn = <Py_ssize_t *>malloc(max(self.ndyn, 1) * 3 * sizeof(Py_ssize_t))
        self.dyn_seed = <char *>malloc(max(self.ndyn, 1))
        if self.dyn == NULL or self.dyn_seed == NULL:
            raise MemoryError("compile_replay: cannot allocate the scalar table")
        self.nslots = 0
        for k in range(self.ndyn):
            rec, dslot, slot, seed = dyn[k]
            self.dyn[3 * k] = rec
            self.dyn[3 * k + 1] = dslot
            self.dyn[3 * k + 2] = slot
            self.dyn_seed[k] = seed
            self.nslots = max(self.nslots, slot + 1)
        return 0

    def __len__(self):
        """The number of C kernel calls one run makes."""
        return self.n

    @property
    def ops(self):
        """Per C kernel call, the backend method that made it."""
        return tuple(self._ops)

    @property
    def scalar_slots(self):
        """The ``scalars`` indices a run reads, in call order."""
        return tuple([self.dyn[3 * k + 2] for k in range(self.ndyn)])

    def run(self, scalars=()):
        """Run every call in order, ``scalars[s.slot]`` in place of each
        ReplayScalar ``s`` of the program; after the loop, raise the typed
        error of a call that failed (the calls after it did not run)."""
        cdef Py_ssize_t k, fail
        cdef nd_i64 st = 0
        cdef double v
        if self.running:
            raise RuntimeError("NativeReplay.run: this replay is already running (in another thread)")
        if self.ndyn:
            if len(scalars) < self.nslots:
                raise ArgumentError(f"NativeReplay.run: got {len(scalars)} scalars, the program reads "
                                    f"slot {self.nslots - 1}")
            for k in range(self.ndyn):
                x = scalars[self.dyn[3 * k + 2]]
                if self.dyn_seed[k]:
                    v = _seed_value(x)
                else:
                    v = x
                self.recs[self.dyn[3 * k]].d[self.dyn[3 * k + 1]] = v
        self.running = True
        with nogil:
            fail = nd_replay_run(self.recs, self.n, &st)
        self.running = False
        if fail >= 0:
            _raise_status(self._ops[fail], &self.recs[fail], st)


# ---------------------------------------------------------------------------
# Kernel runners: validate, then call the dtype's C function without the GIL
# ---------------------------------------------------------------------------
cdef int _run_bin(str op, CpuArray a, CpuArray b, CpuArray out, bin_f32_t f32, bin_f64_t f64) except -1:
    _same_dtype(op, a, out)
    _same_dtype(op, b, out)
    cdef nd_i64 n = out.size
    if a.size < n or b.size < n:
        raise ShapeError(f"{op}: input sizes {a.size} and {b.size} differ from output size {n}")
    cdef nd_rec r
    _setk(&r, out.kind, nd_tr_bin_f32, nd_tr_bin_f64, <nd_kern_t>f32, <nd_kern_t>f64, ERR_NONE)
    r.p[0] = a.data
    r.p[1] = b.data
    r.p[2] = out.data
    r.i[0] = n
    return _go_kind(op, &r, nd_tr_bin_f32, nd_tr_bin_f64)


cdef int _run_scalar(str op, CpuArray a, double val, CpuArray out, scal_f32_t f32,
                     scal_f64_t f64) except -1:
    _same_dtype(op, a, out)
    cdef nd_i64 n = out.size
    if a.size < n:
        raise ShapeError(f"{op}: input size {a.size} differs from output size {n}")
    cdef nd_rec r
    _setk(&r, out.kind, nd_tr_scal_f32, nd_tr_scal_f64, <nd_kern_t>f32, <nd_kern_t>f64, ERR_NONE)
    r.p[0] = a.data
    r.p[1] = out.data
    r.i[0] = n
    r.d[0] = val  # the float32 trampoline rounds it, so a replayed value rounds alike
    return _go_kind(op, &r, nd_tr_scal_f32, nd_tr_scal_f64)


cdef int _run_un(str op, CpuArray a, CpuArray out, un_f32_t f32, un_f64_t f64) except -1:
    _same_dtype(op, a, out)
    cdef nd_i64 n = out.size
    if a.size < n:
        raise ShapeError(f"{op}: input size {a.size} differs from output size {n}")
    cdef nd_rec r
    _setk(&r, out.kind, nd_tr_un_f32, nd_tr_un_f64, <nd_kern_t>f32, <nd_kern_t>f64, ERR_NONE)
    r.p[0] = a.data
    r.p[1] = out.data
    r.i[0] = n
    return _go_kind(op, &r, nd_tr_un_f32, nd_tr_un_f64)


# [i14f2 fused norm] batch-norm op overrides (csrc/fused_norm.c) ---------------
cdef extern from "needle_cpu.h" nogil:
    int nd_bn_stats_f32(const float *x, const float *w, float *out, nd_i64 outer, nd_i64 C, nd_i64 inner,
                        double eps) noexcept
    int nd_bn_stats_f64(const double *x, const double *w, double *out, nd_i64 outer, nd_i64 C, nd_i64 inner,
                        double eps) noexcept
    int nd_bn_grad_stats_f32(const float *g, const float *x, const float *st, float *out,
                             nd_i64 outer, nd_i64 C, nd_i64 inner) noexcept
    int nd_bn_grad_stats_f64(const double *g, const double *x, const double *st, double *out,
                             nd_i64 outer, nd_i64 C, nd_i64 inner) noexcept
    void nd_bn_apply_f32(const float *x, const float *st, const float *sh, float *o,
                         nd_i64 outer, nd_i64 C, nd_i64 inner) noexcept
    void nd_bn_apply_f64(const double *x, const double *st, const double *sh, double *o,
                         nd_i64 outer, nd_i64 C, nd_i64 inner) noexcept
    int nd_bn_grad_input_f32(const float *g, const float *x, const float *st, const float *gs, float *o,
                             nd_i64 outer, nd_i64 C, nd_i64 inner) noexcept
    int nd_bn_grad_input_f64(const double *g, const double *x, const double *st, const double *gs,
                             double *o, nd_i64 outer, nd_i64 C, nd_i64 inner) noexcept

    void nd_softmax_grad_f32(const float *y, const float *g, float *o, nd_i64 outer, nd_i64 r) noexcept
    void nd_layer_norm_f32(const float *x, const float *w, const float *b, float *o, nd_i64 outer, nd_i64 r,
                          double eps) noexcept
    void nd_layer_norm_grad_input_f32(const float *g, const float *x, const float *w, float *o,
                                     nd_i64 outer, nd_i64 r, double eps) noexcept
    int nd_layer_norm_grad_params_f32(const float *g, const float *x, float *out, nd_i64 outer, nd_i64 r,
                                     double eps) noexcept
    void nd_softmax_grad_f64(const double *y, const double *g, double *o, nd_i64 outer, nd_i64 r) noexcept
    void nd_layer_norm_f64(const double *x, const double *w, const double *b, double *o, nd_i64 outer, nd_i64 r,
                          double eps) noexcept
    void nd_layer_norm_grad_input_f64(const double *g, const double *x, const double *w, double *o,
                                     nd_i64 outer, nd_i64 r, double eps) noexcept
    int nd_layer_norm_grad_params_f64(const double *g, const double *x, double *out, nd_i64 outer, nd_i64 r,
                                     double eps) noexcept
    int nd_lstm_gates_f32(const float *z, const float *c, float *out, nd_i64 B, nd_i64 H) noexcept
    int nd_lstm_gates_f64(const double *z, const double *c, double *out, nd_i64 B, nd_i64 H) noexcept
    int nd_lstm_gates_grad_f32(const float *z, const float *c, const float *g, float *out,
                               nd_i64 B, nd_i64 H) noexcept
    int nd_lstm_gates_grad_f64(const double *z, const double *c, const double *g, double *out,
                               nd_i64 B, nd_i64 H) noexcept
    void nd_rand_uniform_f32(float *o, nd_i64 n, uint64_t seed) noexcept
    void nd_rand_uniform_f64(double *o, nd_i64 n, uint64_t seed) noexcept

cdef int _check_channels(str op, bufs, CpuArray out, Py_ssize_t outer, Py_ssize_t C,
                         Py_ssize_t inner, Py_ssize_t out_need) except -1:
    """Validate (outer, C, inner) operands: bufs are (buffer, name, elements needed)."""
    _nonneg(op, "outer", outer); _nonneg(op, "channels", C); _nonneg(op, "inner", inner)
    for buf, what, n in bufs:
        _same_dtype(op, buf, out)
        _need(op, what, buf, n)
    _need(op, "out", out, out_need)
    return 0
# [/i14f2 fused norm] ----------------------------------------------------------


cdef int _run_rows(str op, CpuArray a, CpuArray out, Py_ssize_t outer, Py_ssize_t inner,
                   Py_ssize_t out_need, rows_f32_t f32, rows_f64_t f64) except -1:
    _same_dtype(op, a, out)
    if inner < 1:
        raise ShapeError(f"{op}: the reduced length must be >= 1, got {inner}")
    _nonneg(op, "the number of rows", outer)
    _need(op, "a", a, outer * inner)
    _need(op, "out", out, out_need)
    if outer == 0:
        return 0
    cdef nd_rec r
    _setk(&r, out.kind, nd_tr_rows_f32, nd_tr_rows_f64, <nd_kern_t>f32, <nd_kern_t>f64, ERR_NONE)
    r.p[0] = a.data
    r.p[1] = out.data
    r.i[0] = outer
    r.i[1] = inner
    return _go_kind(op, &r, nd_tr_rows_f32, nd_tr_rows_f64)


cdef int _gemm(str op, CpuArray a, CpuArray b, CpuArray out, nd_i64 batch, nd_i64 m, nd_i64 n, nd_i64 p,
               nd_i64 sa0, nd_i64 sa1, nd_i64 sa2, nd_i64 aoff,
               nd_i64 sb0, nd_i64 sb1, nd_i64 sb2, nd_i64 boff, nd_i64 coff) except -1:
    cdef nd_rec r
    cdef size_t isz = out.itemsize
    _setk(&r, out.kind, nd_tr_gemm_f32, nd_tr_gemm_f64, NULL, NULL, ERR_NOMEM_PACK)
    r.p[0] = <char *>a.data + aoff * isz
    r.p[1] = <char *>b.data + boff * isz
    r.p[2] = <char *>out.data + coff * isz
    r.i[0] = batch; r.i[1] = m; r.i[2] = n; r.i[3] = p
    r.i[4] = sa0; r.i[5] = sa1; r.i[6] = sa2
    r.i[7] = sb0; r.i[8] = sb1; r.i[9] = sb2
    r.i[10] = m * p; r.i[11] = p; r.i[12] = 0
    return _go(op, &r)


cdef int _run_conv(str op, CpuArray x, CpuArray w, CpuArray out, Py_ssize_t x_need, Py_ssize_t w_need,
                   Py_ssize_t out_need, N, H, W, Ci, K, Co, stride, padding,
                   conv_f32_t f32, conv_f64_t f64) except -1:
    _same_dtype(op, x, out)
    _same_dtype(op, w, out)
    _need(op, "first input", x, x_need)
    _need(op, "second input", w, w_need)
    _need(op, "out", out, out_need)
    cdef nd_rec r
    _setk(&r, out.kind, nd_tr_conv_f32, nd_tr_conv_f64, <nd_kern_t>f32, <nd_kern_t>f64, ERR_NOMEM_IM2COL)
    r.p[0] = x.data
    r.p[1] = w.data
    r.p[2] = out.data
    r.i[0] = N; r.i[1] = H; r.i[2] = W; r.i[3] = Ci
    r.i[4] = K; r.i[5] = Co; r.i[6] = stride; r.i[7] = padding
    return _go(op, &r)


cdef tuple _conv_dims(str op, N, H, W, Ci, K, Co, stride, padding):
    vals = dict(N=N, H=H, W=W, C_in=Ci, K=K, C_out=Co, stride=stride, padding=padding)
    for name, v in vals.items():
        if int(v) != v:
            raise ShapeError(f"{op}: {name} must be an integer, got {v!r}")
    if min(N, H, W, Ci, Co) < 0 or K < 1 or stride < 1 or padding < 0:
        raise ShapeError(f"{op}: invalid sizes {vals}: need N, H, W, C_in, C_out >= 0, "
                         f"K >= 1, stride >= 1, padding >= 0")
    if H + 2 * padding < K or W + 2 * padding < K:
        raise ShapeError(f"{op}: kernel {K} larger than the padded input "
                         f"{H + 2 * padding}x{W + 2 * padding}")
    Ho = (H + 2 * padding - K) // stride + 1
    Wo = (W + 2 * padding - K) // stride + 1
    return N * H * W * Ci, K * K * Ci * Co, N * Ho * Wo * Co


cdef double _seed_value(seed) except -1:
    """``seed`` checked by the protocol's rule (a whole number in [0, 2**32)),
    as the double a record holds: below 2**32, so exact."""
    return <double>check_seed(seed)


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------
def _threads_from_env():
    """(threads, source): NEEDLE_NUM_THREADS, else OMP_NUM_THREADS, else all cores."""
    for var in ("NEEDLE_NUM_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(var, "").strip()
        if raw:
            try:
                n = int(raw.split(",")[0])
            except ValueError:
                continue
            if n >= 1:
                return n, var
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n), "all cores"


_THREADS, _THREADS_SOURCE = _threads_from_env()
nd_set_num_threads(_THREADS)


def set_num_threads(int n):
    """Use ``n`` threads (>= 1) from now on; ignored when built without OpenMP."""
    global _THREADS, _THREADS_SOURCE
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    nd_set_num_threads(n)
    _THREADS, _THREADS_SOURCE = nd_get_num_threads(), "set_num_threads"


def get_num_threads():
    return nd_get_num_threads()


def openmp_enabled():
    return bool(nd_openmp_enabled())


# SIMD paths of the GEMM/conv micro-kernels (and vmath), index = C level
SIMD_PATHS = ("none", "avx2", "avx512")
_SIMD_ALIASES = {"portable": "none", "avx2+fma": "avx2", "avx512f": "avx512"}


def cpu_simd_flags():
    """The SIMD features of this CPU the kernels can use, e.g. "avx2,fma"."""
    flags = []
    if nd_cpu_has_avx2_fma():
        flags += ["avx2", "fma"]
    if nd_cpu_has_avx512f():
        flags.append("avx512f")
    return ",".join(flags) or "none of avx2/fma/avx512f"


def simd_path():
    """The micro-kernel path in use: "avx512", "avx2" or "none" (portable C)."""
    return SIMD_PATHS[nd_simd_level()]


def simd_best():
    """The fastest path this CPU can run."""
    return SIMD_PATHS[nd_simd_best()]


def set_simd(path):
    """Use the ``path`` micro-kernels from the next call on ("avx512", "avx2",
    "none", or "auto" for the best this CPU has); returns the path in use.
    A path the CPU lacks raises BackendUnavailableError (it would otherwise
    die of an illegal instruction)."""
    key = str(path).strip().lower()
    key = _SIMD_ALIASES.get(key, key)
    if key in ("", "auto"):
        nd_set_simd_level(-1)
        return simd_path()
    if key not in SIMD_PATHS:
        raise ValueError(f"set_simd: path must be one of {SIMD_PATHS + ('auto',)}, got {path!r}")
    if nd_set_simd_level(SIMD_PATHS.index(key)) != 0:
        raise BackendUnavailableError(
            f"cpu backend: SIMD path {key!r} was asked for, but this CPU cannot run it "
            f"(it has: {cpu_simd_flags()}; best path: {simd_best()!r})")
    return simd_path()


def _simd_from_env():
    """Apply NEEDLE_CPU_SIMD; the reason the backend is unavailable, or ""."""
    raw = os.environ.get("NEEDLE_CPU_SIMD", "")
    try:
        set_simd(raw)
    except (ValueError, BackendUnavailableError) as exc:
        nd_set_simd_level(0)  # never run a path the CPU lacks, even if used anyway
        if isinstance(exc, ValueError):
            return (f"NEEDLE_CPU_SIMD={raw!r} is not a SIMD path; use one of "
                    f"avx512, avx2, none (or unset it for the best this CPU has)")
        return (f"NEEDLE_CPU_SIMD={raw!r} forces a SIMD path this CPU cannot run "
                f"(it has: {cpu_simd_flags()}; best path: {simd_best()!r})")
    return ""


_VMATH_NAMES = ("libm", "avx2+fma", "avx512f")


def vmath_path():
    """Which float32 exp/log/tanh kernels run: "avx512f", "avx2+fma" or "libm"."""
    return _VMATH_NAMES[nd_vmath_level()]


def vmath_cap(level):
    """Testing aid: allow at most this float32 exp/log/tanh path ("avx512f",
    "avx2+fma" or "libm"); returns the path now in use."""
    if level not in _VMATH_NAMES:
        raise ValueError(f"vmath_cap: level must be one of {_VMATH_NAMES}, got {level!r}")
    nd_vmath_cap(_VMATH_NAMES.index(level))
    return vmath_path()


_SIMD_ENV_ERROR = _simd_from_env()


def pool_cached_bytes():
    return nd_pool_cached_bytes()


def pool_stats():
    """The allocation cache: bytes held now, and the buffers (and bytes) it
    could not serve since the process started -- fresh memory, whose pages
    each fault on first touch."""
    cdef size_t count = 0, nbytes = 0
    nd_pool_fresh(&count, &nbytes)
    return {"cached_bytes": nd_pool_cached_bytes(), "fresh_buffers": count, "fresh_bytes": nbytes}


def pool_clear():
    nd_pool_clear()


def pool_set_limit(size_t nbytes):
    nd_pool_set_limit(nbytes)


# binary kernels ewise_strided runs, by the C op numbers (ND_EW_* in needle_cpu.h)
_EWS_CODES = {"ewise_add": 0, "ewise_sub": 1, "ewise_mul": 2, "ewise_div": 3, "ewise_maximum": 4,
              "ewise_eq": 5, "ewise_ge": 6, "ewise_relu_grad": 7, "ewise_pow": 8}
_EWS_NAMES = {code: name for name, code in _EWS_CODES.items()}


cdef inline void _rec_ptrs(nd_rec *r, CpuArray b0, CpuArray b1, CpuArray b2, CpuArray b3,
                           CpuArray b4) noexcept:
    """p[0..) = the data of the buffers given (None ends the list)."""
    r.p[0] = b0.data
    r.p[1] = b1.data
    r.p[2] = b2.data
    if b3 is not None:
        r.p[3] = b3.data
        if b4 is not None:
            r.p[4] = b4.data


cdef inline void _rec_ints(nd_rec *r, nd_i64 i0, nd_i64 i1, nd_i64 i2) noexcept:
    r.i[0] = i0
    r.i[1] = i1
    r.i[2] = i2


cdef inline void _copy_rec(nd_rec *r, CpuArray src, nd_i64 soff, nd_i64 *src_st, CpuArray dst,
                           nd_i64 doff, nd_i64 *dst_st, nd_i64 *shape, int nd) noexcept:
    """A strided copy (nd_copy_strided) as a call record; its three tables point
    at the caller's arrays until a tape copies them."""
    r.fn = nd_tr_copy_strided
    r.err = ERR_NONE
    r.kind = dst.kind
    r.ntab = 3
    r.tablen = nd
    r.p[0] = src_st
    r.p[1] = dst_st
    r.p[2] = shape
    r.p[3] = src.data
    r.p[4] = dst.data
    r.i[0] = src.itemsize
    r.i[1] = soff
    r.i[2] = doff
    r.i[3] = nd


# ---------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------
class CpuBackend(Backend):
    """Cython + OpenMP backend; see the package docstring."""

    name = "cpu"
    version = __version__
    protocol_version = PROTOCOL_VERSION
    host_memory = True  # ptr() is the malloc'd host address (needle.distributed shares it with MPI)
    dtypes = ("float32", "float64")
    __tile_size__ = TILE

    def is_available(self):
        if _SIMD_ENV_ERROR:
            return False, _SIMD_ENV_ERROR
        return True, ""

    def device_names(self):
        return ["cpu"]

    def config(self):
        return {
            "openmp": bool(nd_openmp_enabled()),
            "simd": simd_path(),
            "cpu_simd": cpu_simd_flags(),
            "vmath": vmath_path(),
            "threads": nd_get_num_threads(),
            "omp_threads_source": _THREADS_SOURCE if nd_openmp_enabled() else "built without OpenMP",
        }

    # -- buffers ---------------------------------------------------------------
    def Array(self, size, dtype=_F32):  # noqa: N802 (course name)
        """Uninitialised buffer of ``size`` elements."""
        return CpuArray(size, dtype)

    def from_numpy(self, a, CpuArray out not None):
        """Copy NumPy array ``a`` (``out.size`` elements) into ``out``."""
        arr = np.ascontiguousarray(a, dtype=out.dtype).reshape(-1)
        if arr.size != out.size:
            raise ShapeError(f"from_numpy: array has {arr.size} elements, buffer has {out.size}")
        if out.size == 0:
            return
        tape = _recording_tape()
        if tape is not None:  # a replay copies in the array as it is now
            arr = arr.copy()
            (<NativeReplay>tape).keep.append(arr)
        cdef const unsigned char[::1] mv = arr.view(np.uint8)
        cdef nd_rec r
        if tape is not None:
            r.fn = nd_tr_memcpy
            r.ntab = 0
            r.err = ERR_NONE
            r.kind = out.kind
            r.p[0] = out.data
            r.p[1] = <void *>&mv[0]
            r.i[0] = <nd_i64>out.size * out.itemsize
            (<NativeReplay>tape)._append("from_numpy", &r)
            return
        memcpy(out.data, &mv[0], <size_t>out.size * out.itemsize)

    def to_numpy(self, CpuArray a not None, shape, strides, offset):
        """A new NumPy array holding the strided view (shape, strides, offset) of ``a``."""
        cdef nd_i64 sh[MAX_DIMS]
        cdef nd_i64 st[MAX_DIMS]
        cdef nd_i64 dst[MAX_DIMS]
        cdef int nd
        cdef Py_ssize_t count = _view("to_numpy", "a", a, shape, strides, offset, sh, st, &nd)
        res = np.empty(tuple(int(s) for s in shape), dtype=a.dtype)
        if count == 0:
            return res
        cdef unsigned char[::1] mv = res.reshape(-1).view(np.uint8)
        cdef void *dptr = &mv[0]
        cdef nd_i64 off = offset
        _compact_strides(sh, dst, nd)
        with nogil:
            nd_copy_strided(a.itemsize, a.data, off, st, dptr, 0, dst, sh, nd)
        return res

    def fill(self, CpuArray out not None, value):
        """Set every element of ``out`` to ``value``."""
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_fill_f32, nd_tr_fill_f64, <nd_kern_t>nd_fill_f32, <nd_kern_t>nd_fill_f64,
              ERR_NONE)
        r.p[0] = out.data
        r.i[0] = out.size
        r.d[0] = value
        _go("fill", &r)

    # -- strided copies ----------------------------------------------------------
    def compact(self, CpuArray a not None, CpuArray out not None, shape, strides, offset):
        """Gather the strided view of ``a`` into compact ``out``."""
        cdef nd_i64 sh[MAX_DIMS]
        cdef nd_i64 st[MAX_DIMS]
        cdef nd_i64 dst[MAX_DIMS]
        cdef int nd
        _same_dtype("compact", a, out)
        cdef Py_ssize_t count = _view("compact", "a", a, shape, strides, offset, sh, st, &nd)
        _need("compact", "out", out, count)
        if count == 0:
            return
        _compact_strides(sh, dst, nd)
        cdef nd_rec r
        _copy_rec(&r, a, <nd_i64>offset, st, out, 0, dst, sh, nd)
        _go("compact", &r)

    def ewise_setitem(self, CpuArray a not None, CpuArray out not None, shape, strides, offset):
        """Scatter compact ``a`` into the strided view of ``out``."""
        cdef nd_i64 sh[MAX_DIMS]
        cdef nd_i64 st[MAX_DIMS]
        cdef nd_i64 src[MAX_DIMS]
        cdef int nd
        _same_dtype("ewise_setitem", a, out)
        cdef Py_ssize_t count = _view("ewise_setitem", "out", out, shape, strides, offset,
                                      sh, st, &nd)
        _need("ewise_setitem", "a", a, count)
        if count == 0:
            return
        _compact_strides(sh, src, nd)
        cdef nd_rec r
        _copy_rec(&r, a, 0, src, out, <nd_i64>offset, st, sh, nd)
        _go("ewise_setitem", &r)

    def scalar_setitem(self, size, val, CpuArray out not None, shape, strides, offset):
        """Write ``val`` to every element of the strided view of ``out``."""
        cdef nd_i64 sh[MAX_DIMS]
        cdef nd_i64 st[MAX_DIMS]
        cdef int nd
        cdef Py_ssize_t count = _view("scalar_setitem", "out", out, shape, strides, offset,
                                      sh, st, &nd)
        if size != count:
            raise ShapeError(f"scalar_setitem: size {size} differs from prod(shape) = {count}")
        if count == 0:
            return
        cdef nd_rec r
        r.fn = nd_tr_set_strided
        r.err = ERR_NONE
        r.kind = out.kind
        r.ntab = 2
        r.tablen = nd
        r.p[0] = st
        r.p[1] = sh
        r.p[2] = out.data
        r.i[0] = out.itemsize
        r.i[1] = offset
        r.i[2] = nd
        r.d[0] = val  # rounded to float32 by the trampoline, as a replayed value is
        _go("scalar_setitem", &r)

    # -- element-wise -------------------------------------------------------------
    def ewise_add(self, CpuArray a not None, CpuArray b not None, CpuArray out not None):
        """``out = a + b``."""
        _run_bin("ewise_add", a, b, out, nd_add_f32, nd_add_f64)

    def ewise_sub(self, CpuArray a not None, CpuArray b not None, CpuArray out not None):
        """``out = a - b``."""
        _run_bin("ewise_sub", a, b, out, nd_sub_f32, nd_sub_f64)

    def ewise_mul(self, CpuArray a not None, CpuArray b not None, CpuArray out not None):
        """``out = a * b``."""
        _run_bin("ewise_mul", a, b, out, nd_mul_f32, nd_mul_f64)

    def ewise_div(self, CpuArray a not None, CpuArray b not None, CpuArray out not None):
        """``out = a / b (IEEE)``."""
        _run_bin("ewise_div", a, b, out, nd_div_f32, nd_div_f64)

    def ewise_pow(self, CpuArray a not None, CpuArray b not None, CpuArray out not None):
        """``out = a ** b``."""
        _run_bin("ewise_pow", a, b, out, nd_pow_f32, nd_pow_f64)

    def ewise_maximum(self, CpuArray a not None, CpuArray b not None, CpuArray out not None):
        """``out = max(a, b), NaN propagates``."""
        _run_bin("ewise_maximum", a, b, out, nd_maximum_f32, nd_maximum_f64)

    def ewise_eq(self, CpuArray a not None, CpuArray b not None, CpuArray out not None):
        """``out = 1.0 if a == b else 0.0``."""
        _run_bin("ewise_eq", a, b, out, nd_eq_f32, nd_eq_f64)

    def ewise_ge(self, CpuArray a not None, CpuArray b not None, CpuArray out not None):
        """``out = 1.0 if a >= b else 0.0``."""
        _run_bin("ewise_ge", a, b, out, nd_ge_f32, nd_ge_f64)

    def ewise_relu_grad(self, CpuArray a not None, CpuArray g not None, CpuArray out not None):
        """``out = g if a > 0 else 0``."""
        _run_bin("ewise_relu_grad", a, g, out, nd_relu_grad_f32, nd_relu_grad_f64)

    def scalar_add(self, CpuArray a not None, double val, CpuArray out not None):
        """``out = a + val`` (val rounded to the buffer dtype first, like NumPy)."""
        _run_scalar("scalar_add", a, val, out, nd_sadd_f32, nd_sadd_f64)

    def scalar_sub(self, CpuArray a not None, double val, CpuArray out not None):
        """``out = a - val`` (val rounded to the buffer dtype first, like NumPy)."""
        _run_scalar("scalar_sub", a, val, out, nd_ssub_f32, nd_ssub_f64)

    def scalar_mul(self, CpuArray a not None, double val, CpuArray out not None):
        """``out = a * val`` (val rounded to the buffer dtype first, like NumPy)."""
        _run_scalar("scalar_mul", a, val, out, nd_smul_f32, nd_smul_f64)

    def scalar_div(self, CpuArray a not None, double val, CpuArray out not None):
        """``out = a / val`` (val rounded to the buffer dtype first, like NumPy)."""
        _run_scalar("scalar_div", a, val, out, nd_sdiv_f32, nd_sdiv_f64)

    def scalar_rdiv(self, CpuArray a not None, double val, CpuArray out not None):
        """``out = val / a`` (val rounded to the buffer dtype first, like NumPy)."""
        _run_scalar("scalar_rdiv", a, val, out, nd_srdiv_f32, nd_srdiv_f64)

    def scalar_power(self, CpuArray a not None, double val, CpuArray out not None):
        """``out = a ** val`` (val rounded to the buffer dtype first, like NumPy)."""
        _run_scalar("scalar_power", a, val, out, nd_spow_f32, nd_spow_f64)

    def scalar_maximum(self, CpuArray a not None, double val, CpuArray out not None):
        """``out = max(a, val)`` (val rounded to the buffer dtype first, like NumPy)."""
        _run_scalar("scalar_maximum", a, val, out, nd_smaximum_f32, nd_smaximum_f64)

    def scalar_eq(self, CpuArray a not None, double val, CpuArray out not None):
        """``out = 1.0 if a == val else 0.0`` (val rounded to the buffer dtype first, like NumPy)."""
        _run_scalar("scalar_eq", a, val, out, nd_seq_f32, nd_seq_f64)

    def scalar_ge(self, CpuArray a not None, double val, CpuArray out not None):
        """``out = 1.0 if a >= val else 0.0`` (val rounded to the buffer dtype first, like NumPy)."""
        _run_scalar("scalar_ge", a, val, out, nd_sge_f32, nd_sge_f64)

    def ewise_neg(self, CpuArray a not None, CpuArray out not None):
        """``out = -a``."""
        _run_un("ewise_neg", a, out, nd_neg_f32, nd_neg_f64)

    def ewise_log(self, CpuArray a not None, CpuArray out not None):
        """``out = ln(a)``."""
        _run_un("ewise_log", a, out, nd_log_f32, nd_log_f64)

    def ewise_exp(self, CpuArray a not None, CpuArray out not None):
        """``out = exp(a)``."""
        _run_un("ewise_exp", a, out, nd_exp_f32, nd_exp_f64)

    def ewise_tanh(self, CpuArray a not None, CpuArray out not None):
        """``out = tanh(a)``."""
        _run_un("ewise_tanh", a, out, nd_tanh_f32, nd_tanh_f64)

    def ewise_sqrt(self, CpuArray a not None, CpuArray out not None):
        """``out = sqrt(a)`` (nan below 0; IEEE correctly rounded)."""
        _run_un("ewise_sqrt", a, out, nd_sqrt_f32, nd_sqrt_f64)


    # -- reductions ---------------------------------------------------------------
    def reduce_sum(self, CpuArray a not None, CpuArray out not None, Py_ssize_t reduce_size):
        """``out[i] = sum(a[i*r:(i+1)*r])``."""
        _run_rows("reduce_sum", a, out, out.size, reduce_size, out.size,
                  nd_reduce_sum_f32, nd_reduce_sum_f64)

    def reduce_max(self, CpuArray a not None, CpuArray out not None, Py_ssize_t reduce_size):
        """``out[i] = max(a[i*r:(i+1)*r])`` (NaN propagates)."""
        _run_rows("reduce_max", a, out, out.size, reduce_size, out.size,
                  nd_reduce_max_f32, nd_reduce_max_f64)

    def sum_leading(self, CpuArray a not None, CpuArray out not None, Py_ssize_t outer, Py_ssize_t inner):
        """Op override: ``out[j] = sum_i a[i, j]`` over the (outer, inner) array ``a``
        (a sum over leading axes, read row by row instead of a transposed copy)."""
        _same_dtype("sum_leading", a, out)
        if outer < 1:
            raise ShapeError(f"sum_leading: the reduced length must be >= 1, got {outer}")
        _nonneg("sum_leading", "the number of columns", inner)
        _need("sum_leading", "a", a, outer * inner)
        _need("sum_leading", "out", out, inner)
        if inner == 0:
            return
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_rows_int_f32, nd_tr_rows_int_f64, <nd_kern_t>nd_reduce_sum_leading_f32,
              <nd_kern_t>nd_reduce_sum_leading_f64, ERR_NOMEM_SUMS)
        r.p[0] = a.data
        r.p[1] = out.data
        r.i[0] = outer
        r.i[1] = inner
        _go("sum_leading", &r)

    def logsumexp(self, CpuArray a not None, CpuArray out not None, Py_ssize_t outer, Py_ssize_t inner):
        """Op override: ``out[i] = log(sum_j exp(a[i, j]))``, max subtracted."""
        _run_rows("logsumexp", a, out, outer, inner, outer, nd_logsumexp_f32, nd_logsumexp_f64)

    def softmax(self, CpuArray a not None, CpuArray out not None, Py_ssize_t outer, Py_ssize_t inner):
        """Op override: row-wise softmax of the (outer, inner) array ``a``."""
        _run_rows("softmax", a, out, outer, inner, outer * inner, nd_softmax_f32, nd_softmax_f64)

    # -- matmul -------------------------------------------------------------------
    def matmul(self, CpuArray a not None, CpuArray b not None, CpuArray out not None,
               Py_ssize_t m, Py_ssize_t n, Py_ssize_t p):
        """``out (m, p) = a (m, n) @ b (n, p)``, all compact; n == 0 gives zeros."""
        _same_dtype("matmul", a, out)
        _same_dtype("matmul", b, out)
        _nonneg("matmul", "m", m); _nonneg("matmul", "n", n); _nonneg("matmul", "p", p)
        _need("matmul", "a", a, m * n)
        _need("matmul", "b", b, n * p)
        _need("matmul", "out", out, m * p)
        _gemm("matmul", a, b, out, 1, m, n, p, 0, n, 1, 0, 0, p, 1, 0, 0)

    def matmul_strided(self, CpuArray a not None, CpuArray b not None, CpuArray out not None,
                       Py_ssize_t batch, Py_ssize_t m, Py_ssize_t n, Py_ssize_t p,
                       a_strides, a_offset, b_strides, b_offset):
        """Batched matmul of strided operands into compact ``out (batch, m, p)``;
        operands are packed straight from their strides (no compact copy)."""
        cdef nd_i64 sh[MAX_DIMS]
        cdef nd_i64 sa[MAX_DIMS]
        cdef nd_i64 sb[MAX_DIMS]
        cdef int nd
        _same_dtype("matmul_strided", a, out)
        _same_dtype("matmul_strided", b, out)
        _nonneg("matmul_strided", "batch", batch)
        _nonneg("matmul_strided", "m", m); _nonneg("matmul_strided", "n", n)
        _nonneg("matmul_strided", "p", p)
        if len(a_strides) != 3 or len(b_strides) != 3:
            raise ShapeError(f"matmul_strided: a_strides {tuple(a_strides)} and b_strides "
                             f"{tuple(b_strides)} must have 3 entries (batch, row, column)")
        _view("matmul_strided", "a", a, (batch, m, n), a_strides, a_offset, sh, sa, &nd)
        _view("matmul_strided", "b", b, (batch, n, p), b_strides, b_offset, sh, sb, &nd)
        _need("matmul_strided", "out", out, batch * m * p)
        if batch == 0 or m == 0 or p == 0:
            return
        _gemm("matmul_strided", a, b, out, batch, m, n, p, a_strides[0], a_strides[1], a_strides[2], a_offset,
              b_strides[0], b_strides[1], b_strides[2], b_offset, 0)

    def matmul_batched(self, CpuArray a not None, CpuArray b not None, CpuArray out not None,
                       batch_shape, Py_ssize_t m, Py_ssize_t n, Py_ssize_t p,
                       a_strides, a_offset, b_strides, b_offset):
        """Matmul over several batch axes of strided operands (e.g. an attention
        permute), compact ``out``; nothing is copied: batch axes that collapse
        are merged, the last one goes to the GEMM as its batch, the others are
        looped over here."""
        cdef nd_i64 sh[MAX_DIMS]
        cdef nd_i64 sa[MAX_DIMS]
        cdef nd_i64 sb[MAX_DIMS]
        cdef nd_i64 bsh[MAX_DIMS]
        cdef nd_i64 bsa[MAX_DIMS]
        cdef nd_i64 bsb[MAX_DIMS]
        cdef nd_i64 idx[MAX_DIMS]
        cdef int nd, nbd = 0, d, k
        cdef nd_i64 outer = 1, last, oa, ob, r, oc, mp = m * p
        op = "matmul_batched"
        _same_dtype(op, a, out)
        _same_dtype(op, b, out)
        _nonneg(op, "m", m); _nonneg(op, "n", n); _nonneg(op, "p", p)
        bshape = tuple(batch_shape)
        nbatch = len(bshape)
        if len(a_strides) != nbatch + 2 or len(b_strides) != nbatch + 2:
            raise ShapeError(f"{op}: a_strides {tuple(a_strides)} and b_strides {tuple(b_strides)} "
                             f"must have {nbatch + 2} entries (batch axes {bshape}, row, column)")
        _view(op, "a", a, bshape + (m, n), a_strides, a_offset, sh, sa, &nd)
        _view(op, "b", b, bshape + (n, p), b_strides, b_offset, sh, sb, &nd)
        total = 1
        for d in range(nbatch):
            total *= bshape[d]
        _need(op, "out", out, total * m * p)
        if total == 0 or m == 0 or p == 0:
            return
        if n == 0:
            self.fill(out, 0.0)
            return
        for d in range(nbatch):  # drop size-1 axes, merge the ones that collapse
            if bshape[d] == 1:
                continue
            if nbd > 0 and bsa[nbd - 1] == sa[d] * bshape[d] and bsb[nbd - 1] == sb[d] * bshape[d]:
                bsh[nbd - 1] *= bshape[d]
                bsa[nbd - 1] = sa[d]
                bsb[nbd - 1] = sb[d]
            else:
                bsh[nbd] = bshape[d]; bsa[nbd] = sa[d]; bsb[nbd] = sb[d]
                nbd += 1
        if nbd == 0:
            bsh[0] = 1; bsa[0] = 0; bsb[0] = 0
            nbd = 1
        last = bsh[nbd - 1]
        for d in range(nbd - 1):
            outer *= bsh[d]
            idx[d] = 0
        oa, ob, oc = a_offset, b_offset, 0
        for r in range(outer):  # odometer over the axes that did not merge
            _gemm(op, a, b, out, last, m, n, p, bsa[nbd - 1], sa[nbatch], sa[nbatch + 1], oa,
                  bsb[nbd - 1], sb[nbatch], sb[nbatch + 1], ob, oc)
            oc += last * mp
            for k in range(nbd - 2, -1, -1):
                oa += bsa[k]; ob += bsb[k]
                idx[k] += 1
                if idx[k] < bsh[k]:
                    break
                oa -= bsa[k] * bsh[k]; ob -= bsb[k] * bsh[k]
                idx[k] = 0

    # -- element-wise on strided operands -----------------------------------------
    def ewise_strided(self, str kernel, CpuArray a not None, CpuArray b not None,
                      CpuArray out not None, shape, a_strides, a_offset, b_strides, b_offset):
        """A binary kernel on strided views (stride 0 = broadcast) into compact
        ``out``, read in place: no broadcast is materialised, nothing compacted."""
        cdef nd_i64 sh[MAX_DIMS]
        cdef nd_i64 sa[MAX_DIMS]
        cdef nd_i64 sb[MAX_DIMS]
        cdef int nd
        cdef int code = _EWS_CODES.get(kernel, -1)
        if code < 0:
            raise ValueError(f"ewise_strided: kernel must be one of {tuple(_EWS_CODES)}, "
                             f"got {kernel!r}")
        _same_dtype("ewise_strided", a, out)
        _same_dtype("ewise_strided", b, out)
        cdef Py_ssize_t count = _view("ewise_strided", "a", a, shape, a_strides, a_offset, sh, sa, &nd)
        _view("ewise_strided", "b", b, shape, b_strides, b_offset, sh, sb, &nd)
        _need("ewise_strided", "out", out, count)
        if count == 0:
            return
        cdef nd_i64 oa = a_offset, ob = b_offset
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_ewise_strided_f32, nd_tr_ewise_strided_f64, NULL, NULL, ERR_STRIDED)
        r.ntab = 3
        r.tablen = nd
        r.p[0] = sa
        r.p[1] = sb
        r.p[2] = sh
        r.p[3] = <char *>a.data + oa * a.itemsize
        r.p[4] = <char *>b.data + ob * b.itemsize
        r.p[5] = out.data
        r.i[0] = code
        r.i[1] = nd
        _go("ewise_strided", &r)

    def matmul_tiled(self, CpuArray a not None, CpuArray b not None, CpuArray out not None,
                     Py_ssize_t m, Py_ssize_t n, Py_ssize_t p):
        """Course API: matmul of tiled buffers ``(m/T, n/T, T, T)`` with T = 8."""
        cdef Py_ssize_t t = TILE
        _same_dtype("matmul_tiled", a, out)
        _same_dtype("matmul_tiled", b, out)
        for name, v in (("m", m), ("n", n), ("p", p)):
            if v < 0 or v % t:
                raise ShapeError(f"matmul_tiled: {name} = {v} must be a non-negative "
                                 f"multiple of the tile size {t}")
        _need("matmul_tiled", "a", a, m * n)
        _need("matmul_tiled", "b", b, n * p)
        _need("matmul_tiled", "out", out, m * p)
        if m == 0 or p == 0:
            return
        # untile into compact scratch buffers with the blocked copy, multiply, re-tile
        ca, cb, co = _new(m * n, a.kind), _new(n * p, a.kind), _new(m * p, a.kind)
        self.compact(a, ca, (m // t, t, n // t, t), (n * t, t, t * t, 1), 0)
        self.compact(b, cb, (n // t, t, p // t, t), (p * t, t, t * t, 1), 0)
        _gemm("matmul_tiled", ca, cb, co, 1, m, n, p, 0, n, 1, 0, 0, p, 1, 0, 0)
        self.ewise_setitem(co, out, (m // t, t, p // t, t), (p * t, t, t * t, 1), 0)

    # -- convolution (op overrides), NHWC --------------------------------------------
    def conv(self, CpuArray a not None, CpuArray b not None, CpuArray out not None,
             N, H, W, C_in, K, C_out, stride, padding):
        """Op override: ``out (N,Ho,Wo,C_out) = conv(a (N,H,W,C_in), b (K,K,C_in,C_out))``."""
        xs, ws, ys = _conv_dims("conv", N, H, W, C_in, K, C_out, stride, padding)
        _run_conv("conv", a, b, out, xs, ws, ys, N, H, W, C_in, K, C_out, stride, padding,
                  nd_conv_fwd_f32, nd_conv_fwd_f64)

    def conv_grad_input(self, CpuArray g not None, CpuArray b not None, CpuArray out not None,
                        N, H, W, C_in, K, C_out, stride, padding):
        """Op override: gradient (N,H,W,C_in) of conv with respect to its input."""
        xs, ws, ys = _conv_dims("conv_grad_input", N, H, W, C_in, K, C_out, stride, padding)
        _run_conv("conv_grad_input", g, b, out, ys, ws, xs, N, H, W, C_in, K, C_out, stride,
                  padding, nd_conv_grad_input_f32, nd_conv_grad_input_f64)

    def conv_grad_weight(self, CpuArray a not None, CpuArray g not None, CpuArray out not None,
                         N, H, W, C_in, K, C_out, stride, padding):
        """Op override: gradient (K,K,C_in,C_out) of conv with respect to its weights."""
        xs, ws, ys = _conv_dims("conv_grad_weight", N, H, W, C_in, K, C_out, stride, padding)
        _run_conv("conv_grad_weight", a, g, out, xs, ys, ws, N, H, W, C_in, K, C_out, stride,
                  padding, nd_conv_grad_weight_f32, nd_conv_grad_weight_f64)


    # ---- issue 14 fused ops: softmax cross-entropy, multi-tensor SGD/Adam (csrc/fused_loss.c) ----
    def softmax_xent(self, CpuArray z not None, CpuArray labels not None, CpuArray out not None,
                     Py_ssize_t rows, Py_ssize_t classes):
        """Op override: ``out[i] = logsumexp(z[i, :]) - z[i, labels[i]]``."""
        _xent_check("softmax_xent", z, labels, out, rows, classes, rows)
        if rows == 0:
            return
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_xent_f32, nd_tr_xent_f64, NULL, NULL, ERR_LABEL)
        r.p[0] = z.data
        r.p[1] = labels.data
        r.p[2] = out.data
        r.i[0] = rows
        r.i[1] = classes
        _go("softmax_xent", &r)

    def softmax_xent_grad(self, CpuArray z not None, CpuArray labels not None, CpuArray g not None,
                          CpuArray out not None, Py_ssize_t rows, Py_ssize_t classes):
        """Op override: ``out[i, j] = (softmax(z[i])_j - [j == labels[i]]) * g[i]``."""
        _xent_check("softmax_xent_grad", z, labels, out, rows, classes, rows * classes)
        _same_dtype("softmax_xent_grad", g, out)
        _need("softmax_xent_grad", "g", g, rows)
        if rows == 0:
            return
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_xent_grad_f32, nd_tr_xent_grad_f64, NULL, NULL, ERR_LABEL)
        r.p[0] = z.data
        r.p[1] = labels.data
        r.p[2] = g.data
        r.p[3] = out.data
        r.i[0] = rows
        r.i[1] = classes
        _go("softmax_xent_grad", &r)

    def sgd_step(self, list params not None, list grads not None, moms, list out_params not None,
                 out_moms, double lr, double momentum, double one_minus_momentum, double weight_decay):
        """Op override: one SGD step over every (float32) parameter in one call."""
        cdef _PtrList p = _ptrs("sgd_step", "params", params, None)
        cdef _PtrList g = _ptrs("sgd_step", "grads", grads, p)
        cdef _PtrList po = _ptrs("sgd_step", "out_params", out_params, p)
        cdef _PtrList u = None
        cdef _PtrList uo = None
        cdef Py_ssize_t k
        if (moms is None) != (out_moms is None) or (moms is None) != (momentum == 0):
            raise ShapeError("sgd_step: moms and out_moms are given exactly when momentum is not 0")
        if moms is None:
            u = _PtrList(p.n)
            uo = _PtrList(p.n)
            for k in range(p.n):
                u.ptr[k] = NULL
                uo.ptr[k] = NULL
        else:
            u = _ptrs("sgd_step", "moms", list(moms), p)
            uo = _ptrs("sgd_step", "out_moms", list(out_moms), p)
        cdef nd_rec r
        r.fn = nd_tr_sgd
        r.err = ERR_NONE
        r.kind = 0
        r.ntab = 6
        r.tablen = p.n
        r.p[0] = p.size
        r.p[1] = p.ptr
        r.p[2] = g.ptr
        r.p[3] = u.ptr
        r.p[4] = po.ptr
        r.p[5] = uo.ptr
        r.i[0] = p.n
        # doubles: the trampoline rounds them to float32 (replayed values alike)
        r.d[0] = lr
        r.d[1] = momentum
        r.d[2] = one_minus_momentum
        r.d[3] = weight_decay
        _go("sgd_step", &r)

    def adam_step(self, list params not None, list grads not None, list ms not None, list vs not None,
                  out_params, list out_ms not None, list out_vs not None,
                  double beta1, double c1, double beta2, double c2, double weight_decay,
                  double k_scale, double eps_s,
                  bint frozen):
        """Op override: one Adam step over every (float32) parameter in one call."""
        cdef _PtrList p = _ptrs("adam_step", "params", params, None)
        cdef _PtrList g = _ptrs("adam_step", "grads", grads, p)
        cdef _PtrList m = _ptrs("adam_step", "ms", ms, p)
        cdef _PtrList v = _ptrs("adam_step", "vs", vs, p)
        cdef _PtrList po
        cdef _PtrList mo = _ptrs("adam_step", "out_ms", out_ms, p)
        cdef _PtrList vo = _ptrs("adam_step", "out_vs", out_vs, p)
        cdef int fz = 1 if frozen else 0
        cdef Py_ssize_t k
        if out_params is None:  # a frozen group writes no parameter
            if not frozen:
                raise ShapeError("adam_step: out_params may be None only when frozen")
            po = _PtrList(p.n)
            for k in range(p.n):
                po.ptr[k] = NULL
        else:
            po = _ptrs("adam_step", "out_params", list(out_params), p)
        cdef nd_rec r
        r.fn = nd_tr_adam
        r.err = ERR_NONE
        r.kind = 0
        r.ntab = 8
        r.tablen = p.n
        r.p[0] = p.size
        r.p[1] = p.ptr
        r.p[2] = g.ptr
        r.p[3] = m.ptr
        r.p[4] = v.ptr
        r.p[5] = po.ptr
        r.p[6] = mo.ptr
        r.p[7] = vo.ptr
        r.i[0] = p.n
        r.i[1] = fz
        r.d[0] = beta1
        r.d[1] = c1
        r.d[2] = beta2
        r.d[3] = c2
        r.d[4] = weight_decay
        r.d[5] = k_scale
        r.d[6] = eps_s
        _go("adam_step", &r)

    # [i14f2 fused norm] batch-norm op overrides -----------------------------------
    def batch_norm_stats(self, CpuArray x not None, CpuArray w not None, CpuArray out not None,
                         Py_ssize_t outer, Py_ssize_t channels, Py_ssize_t inner, double eps):
        """Op override: per-channel mean, biased variance, ``(var + eps) ** -0.5`` and
        that times ``w`` of (outer, C, inner) ``x``, as rows of a (4, C) ``out``."""
        _check_channels("batch_norm_stats", ((x, "x", outer * channels * inner), (w, "w", channels)), out,
                        outer, channels, inner, 4 * channels)
        if outer * inner == 0:
            raise ShapeError(f"batch_norm_stats: no elements to average (outer={outer}, inner={inner})")
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_bn_stats_f32, nd_tr_bn_stats_f64, NULL, NULL, ERR_NOMEM_SUMS)
        _rec_ptrs(&r, x, w, out, None, None)
        _rec_ints(&r, outer, channels, inner)
        r.d[0] = eps
        _go("batch_norm_stats", &r)

    def batch_norm_grad_stats(self, CpuArray g not None, CpuArray x not None, CpuArray st not None,
                              CpuArray out not None, Py_ssize_t outer, Py_ssize_t channels,
                              Py_ssize_t inner):
        """Op override: per-channel ``sum g`` and ``sum g * xhat`` as rows of a (2, C) ``out``
        (``st``: batch_norm_stats's rows)."""
        cdef Py_ssize_t n = outer * channels * inner
        _check_channels("batch_norm_grad_stats", ((g, "g", n), (x, "x", n), (st, "st", 4 * channels)),
                        out, outer, channels, inner, 2 * channels)
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_p4i3_int_f32, nd_tr_p4i3_int_f64, <nd_kern_t>nd_bn_grad_stats_f32,
              <nd_kern_t>nd_bn_grad_stats_f64, ERR_NOMEM_SUMS)
        _rec_ptrs(&r, g, x, st, out, None)
        _rec_ints(&r, outer, channels, inner)
        _go("batch_norm_grad_stats", &r)

    def batch_norm_apply(self, CpuArray x not None, CpuArray st not None, CpuArray sh not None,
                         CpuArray out not None, Py_ssize_t outer, Py_ssize_t channels, Py_ssize_t inner):
        """Op override: ``out = (x - mean[c]) * scale[c] + sh[c]`` per channel c
        (``st``: batch_norm_stats's rows)."""
        cdef Py_ssize_t n = outer * channels * inner
        _check_channels("batch_norm_apply", ((x, "x", n), (st, "st", 4 * channels), (sh, "sh", channels)),
                        out, outer, channels, inner, n)
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_p4i3_f32, nd_tr_p4i3_f64, <nd_kern_t>nd_bn_apply_f32,
              <nd_kern_t>nd_bn_apply_f64, ERR_NONE)
        _rec_ptrs(&r, x, st, sh, out, None)
        _rec_ints(&r, outer, channels, inner)
        _go("batch_norm_apply", &r)

    def batch_norm_grad_input(self, CpuArray g not None, CpuArray x not None, CpuArray st not None,
                              CpuArray gs not None, CpuArray out not None,
                              Py_ssize_t outer, Py_ssize_t channels, Py_ssize_t inner):
        """Op override: the input's adjoint of a training batch norm from
        batch_norm_stats's rows ``st`` and batch_norm_grad_stats's ``gs``."""
        cdef Py_ssize_t n = outer * channels * inner
        _check_channels("batch_norm_grad_input", ((g, "g", n), (x, "x", n), (st, "st", 4 * channels),
                                                  (gs, "gs", 2 * channels)), out, outer, channels, inner, n)
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_p5i3_int_f32, nd_tr_p5i3_int_f64, <nd_kern_t>nd_bn_grad_input_f32,
              <nd_kern_t>nd_bn_grad_input_f64, ERR_NOMEM_COEF)
        _rec_ptrs(&r, g, x, st, gs, out)
        _rec_ints(&r, outer, channels, inner)
        _go("batch_norm_grad_input", &r)

    def softmax_grad(self, CpuArray y not None, CpuArray g not None, CpuArray out not None,
                     Py_ssize_t outer, Py_ssize_t inner):
        """Op override: ``out = y * (g - sum_row(g * y))`` over rows of (outer, inner)."""
        cdef Py_ssize_t n = outer * inner
        _check_channels("softmax_grad", ((y, "y", n), (g, "g", n)), out, outer, 1, inner, n)
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_p3i2_f32, nd_tr_p3i2_f64, <nd_kern_t>nd_softmax_grad_f32,
              <nd_kern_t>nd_softmax_grad_f64, ERR_NONE)
        _rec_ptrs(&r, y, g, out, None, None)
        _rec_ints(&r, outer, inner, 0)
        _go("softmax_grad", &r)

    def layer_norm(self, CpuArray x not None, CpuArray w not None, CpuArray b not None,
                   CpuArray out not None, Py_ssize_t outer, Py_ssize_t inner, double eps):
        """Op override: layer norm of each row of (outer, inner) ``x`` (biased variance)."""
        cdef Py_ssize_t n = outer * inner
        _check_channels("layer_norm", ((x, "x", n), (w, "w", inner), (b, "b", inner)), out,
                        outer, 1, inner, n)
        if inner < 1:
            raise ShapeError(f"layer_norm: rows must have >= 1 element, got {inner}")
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_p4i2d_f32, nd_tr_p4i2d_f64, <nd_kern_t>nd_layer_norm_f32,
              <nd_kern_t>nd_layer_norm_f64, ERR_NONE)
        _rec_ptrs(&r, x, w, b, out, None)
        _rec_ints(&r, outer, inner, 0)
        r.d[0] = eps
        _go("layer_norm", &r)

    def layer_norm_grad_input(self, CpuArray g not None, CpuArray x not None, CpuArray w not None,
                              CpuArray out not None, Py_ssize_t outer, Py_ssize_t inner, double eps):
        """Op override: the input's adjoint of :meth:`layer_norm`."""
        cdef Py_ssize_t n = outer * inner
        _check_channels("layer_norm_grad_input", ((g, "g", n), (x, "x", n), (w, "w", inner)), out,
                        outer, 1, inner, n)
        if inner < 1:
            raise ShapeError(f"layer_norm_grad_input: rows must have >= 1 element, got {inner}")
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_p4i2d_f32, nd_tr_p4i2d_f64, <nd_kern_t>nd_layer_norm_grad_input_f32,
              <nd_kern_t>nd_layer_norm_grad_input_f64, ERR_NONE)
        _rec_ptrs(&r, g, x, w, out, None)
        _rec_ints(&r, outer, inner, 0)
        r.d[0] = eps
        _go("layer_norm_grad_input", &r)

    def layer_norm_grad_params(self, CpuArray g not None, CpuArray x not None, CpuArray out not None,
                               Py_ssize_t outer, Py_ssize_t inner, double eps):
        """Op override: ``out (2, inner)``: row 0 sum over rows of g * xhat, row 1 sum of g."""
        cdef Py_ssize_t n = outer * inner
        _check_channels("layer_norm_grad_params", ((g, "g", n), (x, "x", n)), out,
                        outer, 1, inner, 2 * inner)
        if inner < 1:
            raise ShapeError(f"layer_norm_grad_params: rows must have >= 1 element, got {inner}")
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_p3i2d_int_f32, nd_tr_p3i2d_int_f64, <nd_kern_t>nd_layer_norm_grad_params_f32,
              <nd_kern_t>nd_layer_norm_grad_params_f64, ERR_NOMEM_SUMS)
        _rec_ptrs(&r, g, x, out, None, None)
        _rec_ints(&r, outer, inner, 0)
        r.d[0] = eps
        _go("layer_norm_grad_params", &r)
    def lstm_gates(self, CpuArray z not None, CpuArray c not None, CpuArray out not None,
                   Py_ssize_t batch, Py_ssize_t hidden):
        """Op override: LSTM gate arithmetic, ``out (B, 2, H)`` = (h', c')."""
        _check_channels("lstm_gates", ((z, "z", 4 * batch * hidden), (c, "c", batch * hidden)), out,
                        batch, 1, hidden, 2 * batch * hidden)
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_p3i2_int_f32, nd_tr_p3i2_int_f64, <nd_kern_t>nd_lstm_gates_f32,
              <nd_kern_t>nd_lstm_gates_f64, ERR_NOMEM_ROWS)
        _rec_ptrs(&r, z, c, out, None, None)
        _rec_ints(&r, batch, hidden, 0)
        _go("lstm_gates", &r)

    def lstm_gates_grad(self, CpuArray z not None, CpuArray c not None, CpuArray g not None,
                        CpuArray out not None, Py_ssize_t batch, Py_ssize_t hidden):
        """Op override: adjoints of z (B*4H) then c (B*H) given g (B, 2, H)."""
        _check_channels("lstm_gates_grad", ((z, "z", 4 * batch * hidden), (c, "c", batch * hidden),
                                            (g, "g", 2 * batch * hidden)), out,
                        batch, 1, hidden, 5 * batch * hidden)
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_p4i2_int_f32, nd_tr_p4i2_int_f64, <nd_kern_t>nd_lstm_gates_grad_f32,
              <nd_kern_t>nd_lstm_gates_grad_f64, ERR_NOMEM_ROWS)
        _rec_ptrs(&r, z, c, g, out, None)
        _rec_ints(&r, batch, hidden, 0)
        _go("lstm_gates_grad", &r)
    # [/i14f2 fused norm] ------------------------------------------------------------

    def rand_uniform(self, CpuArray out not None, seed):
        """Op override: ``out[i]`` = the protocol's counter-based uniform number in
        [0, 1) of (seed, i); seed: a whole number in [0, 2**32), int or float."""
        cdef double s = _seed_value(seed)
        if out.size == 0:
            return
        cdef nd_rec r
        _setk(&r, out.kind, nd_tr_rand_f32, nd_tr_rand_f64, NULL, NULL, ERR_NONE)
        r.p[0] = out.data
        r.i[0] = out.size
        r.d[0] = s  # whole and below 2**32: the trampoline's cast to uint64 is exact
        _go("rand_uniform", &r)

    def embedding(self, CpuArray w not None, CpuArray ids not None, CpuArray out not None,
                  Py_ssize_t rows, Py_ssize_t num, Py_ssize_t dim):
        """Op override: ``out[i, :] = w[ids[i], :]`` (ids whole numbers in [0, num))."""
        _embedding_call("embedding", w, ids, out, rows, num, dim, num * dim, rows * dim,
                        nd_tr_emb_f32, nd_tr_emb_f64)

    def embedding_grad(self, CpuArray g not None, CpuArray ids not None, CpuArray out not None,
                       Py_ssize_t rows, Py_ssize_t num, Py_ssize_t dim):
        """Op override: ``out[v, :]`` = the sum of ``g[i, :]`` over ``ids[i] == v``, in increasing i."""
        _embedding_call("embedding_grad", g, ids, out, rows, num, dim, rows * dim, num * dim,
                        nd_tr_emb_grad_f32, nd_tr_emb_grad_f64)

    # -- native replay (needle.jit) ----------------------------------------------------
    def compile_replay(self, program):
        """A :class:`NativeReplay` of ``program`` (``(method name, args)`` calls),
        or None when a call has no recorded form here (a method outside
        :data:`REPLAYABLE`, or a ReplayScalar where the method takes no replayable
        scalar): needle then replays the program from Python.

        Each call runs its method once, now, in record mode: the method checks
        its arguments as an eager call would (raising the same error for bad
        ones) and hands its C calls to the tape instead of running them.
        ``run(scalars)`` then runs every C call in one loop without the GIL."""
        global _rec_active
        calls = [(name, tuple(args)) for name, args in program]
        cls = type(self)
        for name, args in calls:
            # the class's own method: needle.jit shadows kernels on the instance while capturing
            if name not in REPLAYABLE or not callable(getattr(cls, name, None)):
                return None
            where = _SCALAR_ARGS.get(name, {})
            for pos, a in enumerate(args):
                if isinstance(a, ReplayScalar) and (pos not in where or int(a.slot) < 0):
                    return None
        tape = NativeReplay()
        tape.keep.append(calls)  # every buffer the records point into
        dyn = []
        tid = PyThread_get_thread_ident()
        prev = _rec_tapes.get(tid)
        _rec_tapes[tid] = tape
        _rec_active += 1
        try:
            for name, args in calls:
                start = tape.n
                getattr(cls, name)(self, *args)
                for pos, a in enumerate(args):
                    if not isinstance(a, ReplayScalar):
                        continue
                    dslot = _SCALAR_ARGS[name][pos]
                    if tape.n == start:  # nothing to compute (an empty buffer)
                        continue
                    # the one record the call made must hold the scalar unrounded in that slot
                    if tape.n != start + 1 or tape.recs[start].d[dslot] != <double>a:
                        return None
                    dyn.append((start, dslot, int(a.slot), name == "rand_uniform"))
        finally:
            _rec_active -= 1
            if prev is None:
                del _rec_tapes[tid]
            else:
                _rec_tapes[tid] = prev
        tape._set_dyn(dyn)
        return tape


#: the methods compile_replay can record: each runs its C kernels only through _go
#: (a method that calls a kernel directly would run it while recording and be
#: missing from the tape, so a new kernel joins this set once it goes through _go)
REPLAYABLE = frozenset(
    ["from_numpy", "fill", "compact", "ewise_setitem", "scalar_setitem"]
    + [f"ewise_{k}" for k in ("add", "sub", "mul", "div", "pow", "maximum", "eq", "ge", "relu_grad",
                              "neg", "log", "exp", "tanh", "sqrt")]
    + [f"scalar_{k}" for k in ("add", "sub", "mul", "div", "rdiv", "power", "maximum", "eq", "ge")]
    + ["reduce_sum", "reduce_max", "sum_leading", "logsumexp", "softmax", "softmax_grad",
       "matmul", "matmul_strided", "matmul_batched", "matmul_tiled", "ewise_strided",
       "conv", "conv_grad_input", "conv_grad_weight", "softmax_xent", "softmax_xent_grad",
       "sgd_step", "adam_step", "batch_norm_stats", "batch_norm_grad_stats", "batch_norm_apply",
       "batch_norm_grad_input", "layer_norm", "layer_norm_grad_input", "layer_norm_grad_params",
       "lstm_gates", "lstm_gates_grad", "rand_uniform", "embedding", "embedding_grad"])

# per method, the positional arguments a replay may change: argument index ->
# the record's d slot that holds it (as given, before any rounding)
_SCALAR_ARGS = {"fill": {1: 0}, "scalar_setitem": {1: 0}, "rand_uniform": {1: 0},
                "sgd_step": {5: 0, 6: 1, 7: 2, 8: 3},
                "adam_step": {7: 0, 8: 1, 9: 2, 10: 3, 11: 4, 12: 5, 13: 6},
                "batch_norm_stats": {6: 0}, "layer_norm": {6: 0}, "layer_norm_grad_input": {6: 0},
                "layer_norm_grad_params": {5: 0}}
_SCALAR_ARGS.update({f"scalar_{k}": {1: 0} for k in
                     ("add", "sub", "mul", "div", "rdiv", "power", "maximum", "eq", "ge")})


#: the buffer type (the protocol calls it ``Array``)
Array = CpuArray
