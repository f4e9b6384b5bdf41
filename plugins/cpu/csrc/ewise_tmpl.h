/* Element-wise kernels and row reductions for one dtype.  Included twice by
 * ewise.c with T, SUF, ACC (accumulator type) and the libm names set.
 * Loops are written as plain indexable loops with `omp simd` so gcc -O3
 * vectorises them; large arrays are split across threads. */

#define ND_CAT_(a, b) a##b
#define ND_CAT(a, b) ND_CAT_(a, b)
#define ND_FN(name) ND_CAT(name, SUF)

/* parallel when long enough, one loop body for both paths */
#define ND_LOOP(n, grain, BODY)                                                 \
  do {                                                                          \
    int nt_ = nd_threads_for((n), (grain));                                     \
    if (nt_ > 1) {                                                              \
      _Pragma("omp parallel for simd num_threads(nt_) schedule(static)")        \
      for (nd_i64 i = 0; i < (n); i++) { BODY; }                                \
    } else {                                                                    \
      _Pragma("omp simd")                                                       \
      for (nd_i64 i = 0; i < (n); i++) { BODY; }                                \
    }                                                                           \
  } while (0)

/* Each cheap kernel is compiled twice: for AVX2 (target attribute, 8/4
 * lanes) and for baseline x86-64 (SSE2), and picks one per call from the
 * SIMD level (NEEDLE_CPU_SIMD=none takes the baseline).  Only "avx2", not
 * "fma": the expressions are single operations, so both copies give the
 * same bits.  Measured at 2^16 float32 adds (in L2): SSE2 ~0.8x NumPy. */
#if ND_HAVE_X86_EW
#define ND_EW_AVX2 __attribute__((target("avx2")))
#define ND_EW_PICK(name, ARGS) \
  if (nd_simd_avx2()) ND_CAT(ND_FN(name), _avx2) ARGS; else ND_CAT(ND_FN(name), _base) ARGS;
#else
#define ND_EW_AVX2
#define ND_EW_PICK(name, ARGS) ND_CAT(ND_FN(name), _base) ARGS;
#endif
#define ND_TWICE(name, PARAMS, ARGS, BODY)                                      \
  ND_EW_AVX2 static void ND_CAT(ND_FN(name), _avx2) PARAMS { BODY; }            \
  static void ND_CAT(ND_FN(name), _base) PARAMS { BODY; }                       \
  void ND_FN(name) PARAMS { ND_EW_PICK(name, ARGS) }

#define ND_BIN(name, EXPR)                                                      \
  ND_TWICE(name, (const T *a, const T *b, T *o, nd_i64 n), (a, b, o, n),        \
           ND_LOOP(n, ND_GRAIN_CHEAP, { T x = a[i]; T y = b[i]; o[i] = (EXPR); }))
#define ND_BIN_MATH(name, EXPR)                                                 \
  void ND_FN(name)(const T *a, const T *b, T *o, nd_i64 n) {                    \
    ND_LOOP(n, ND_GRAIN_MATH, { T x = a[i]; T y = b[i]; o[i] = (EXPR); });      \
  }
#define ND_SCAL(name, EXPR)                                                     \
  ND_TWICE(name, (const T *a, T y, T *o, nd_i64 n), (a, y, o, n),               \
           ND_LOOP(n, ND_GRAIN_CHEAP, { T x = a[i]; o[i] = (EXPR); }))
#define ND_UN(name, GRAIN, EXPR)                                                \
  void ND_FN(name)(const T *a, T *o, nd_i64 n) {                                \
    ND_LOOP(n, GRAIN, { T x = a[i]; o[i] = (EXPR); });                          \
  }
#define ND_UN_CHEAP(name, EXPR)                                                 \
  ND_TWICE(name, (const T *a, T *o, nd_i64 n), (a, o, n),                       \
           ND_LOOP(n, ND_GRAIN_CHEAP, { T x = a[i]; o[i] = (EXPR); }))

void ND_FN(nd_fill_)(T *o, T v, nd_i64 n) { ND_LOOP(n, ND_GRAIN_CHEAP, { o[i] = v; }); }

ND_BIN(nd_add_, x + y)
ND_BIN(nd_sub_, x - y)
ND_BIN(nd_mul_, x * y)
ND_BIN(nd_div_, x / y)
/* NaN-propagating like numpy.maximum */
ND_BIN(nd_maximum_, (x >= y || x != x) ? x : y)
ND_BIN(nd_eq_, (T)(x == y))
ND_BIN(nd_ge_, (T)(x >= y))
/* g * (a > 0): keeps numpy's nan/inf behaviour of the reference */
ND_BIN(nd_relu_grad_, y * (T)(x > 0))
ND_BIN_MATH(nd_pow_, POW(x, y))

ND_SCAL(nd_sadd_, x + y)
ND_SCAL(nd_ssub_, x - y)
ND_SCAL(nd_smul_, x * y)
ND_SCAL(nd_sdiv_, x / y)
ND_SCAL(nd_srdiv_, y / x)
ND_SCAL(nd_smaximum_, (x >= y || x != x) ? x : y)
ND_SCAL(nd_seq_, (T)(x == y))
ND_SCAL(nd_sge_, (T)(x >= y))

void ND_FN(nd_spow_)(const T *a, T y, T *o, nd_i64 n) {
  /* the common exponents exactly and fast; pow() for the rest */
  if (y == (T)2) { ND_LOOP(n, ND_GRAIN_CHEAP, { T x = a[i]; o[i] = x * x; }); }
  else if (y == (T)1) { ND_LOOP(n, ND_GRAIN_CHEAP, { o[i] = a[i]; }); }
  else if (y == (T)3) { ND_LOOP(n, ND_GRAIN_CHEAP, { T x = a[i]; o[i] = x * x * x; }); }
  else { ND_LOOP(n, ND_GRAIN_MATH, { o[i] = POW(a[i], y); }); }
}

ND_UN_CHEAP(nd_neg_, -x)
ND_UN_CHEAP(nd_sqrt_, SQRT(x))
#ifdef ND_VEC_MATH
/* vectorised kernels (vmath.c) on contiguous chunks, one chunk per thread */
#define ND_UN_VEC(name, VFN)                                                    \
  void ND_FN(name)(const T *a, T *o, nd_i64 n) {                                \
    int nt = nd_threads_for(n, ND_GRAIN_VMATH);                                 \
    if (nt <= 1) { VFN(a, o, n); return; }                                      \
    _Pragma("omp parallel for num_threads(nt) schedule(static)")                \
    for (int t = 0; t < nt; t++) {                                              \
      /* chunk edges on 16-element multiples: whole vectors, no shared lines */ \
      nd_i64 b = (n * t / nt) & ~(nd_i64)15, e = t + 1 == nt ? n : (n * (t + 1) / nt) & ~(nd_i64)15; \
      if (e > b) VFN(a + b, o + b, e - b);                                      \
    }                                                                           \
  }
ND_UN_VEC(nd_log_, nd_vlog_f32)
ND_UN_VEC(nd_exp_, nd_vexp_f32)
ND_UN_VEC(nd_tanh_, nd_vtanh_f32)
#undef ND_UN_VEC
#else
ND_UN(nd_log_, ND_GRAIN_MATH, LOG(x))
ND_UN(nd_exp_, ND_GRAIN_MATH, EXP(x))
ND_UN(nd_tanh_, ND_GRAIN_MATH, TANH(x))
#endif

/* ---- rows ---- */

/* Sum of one row: vector-width partial sums in T over short blocks, blocks
 * added in ACC (double for float32) so long rows keep their precision. */
static ACC ND_FN(row_sum_)(const T *a, nd_i64 r) {
#ifdef ND_VEC_MATH
  return nd_vrow_sum_f32(a, r);
#endif
  /* ND_LANES independent partial sums: enough vector chains to hide the
   * latency of the adds; blocks of 1024 are folded into ACC */
  ACC total = 0;
  for (nd_i64 b = 0; b < r; b += 1024) {
    nd_i64 e = b + 1024 < r ? b + 1024 : r;
    T s[ND_LANES];
    for (int j = 0; j < ND_LANES; j++) s[j] = 0;
    nd_i64 i = b;
    for (; i + ND_LANES <= e; i += ND_LANES)
      for (int j = 0; j < ND_LANES; j++) s[j] += a[i + j];
    T t = 0;
    for (; i < e; i++) t += a[i];
    for (int j = 0; j < ND_LANES; j++) t += s[j];
    total += t;
  }
  return total;
}

/* Max of one row; NaN wins like numpy.max. */
static T ND_FN(row_max_)(const T *a, nd_i64 r) {
#ifdef ND_VEC_MATH
  return nd_vrow_max_f32(a, r);
#endif
  T m = a[0];
  int nan = 0;
  _Pragma("omp simd reduction(max:m) reduction(|:nan)")
  for (nd_i64 i = 0; i < r; i++) {
    T x = a[i];
    m = x > m ? x : m;
    nan |= (x != x);
  }
  return nan ? (T)NAN : m;
}

void ND_FN(nd_reduce_sum_)(const T *a, T *o, nd_i64 outer, nd_i64 r) {
  int nt = nd_threads_for(outer * r, ND_GRAIN_CHEAP);
  if (nt > 1 && outer < nt) {
    /* few long rows: split each row across threads */
    for (nd_i64 i = 0; i < outer; i++) {
      const T *row = a + i * r;
      nd_i64 chunk = (r + nt - 1) / nt;
      ACC s = 0;
      _Pragma("omp parallel for num_threads(nt) reduction(+:s) schedule(static)")
      for (int t = 0; t < nt; t++) {
        nd_i64 b = (nd_i64)t * chunk, e = b + chunk < r ? b + chunk : r;
        if (b < e) s += ND_FN(row_sum_)(row + b, e - b);
      }
      o[i] = (T)s;
    }
    return;
  }
  if (r == 1) { for (nd_i64 i = 0; i < outer; i++) o[i] = a[i]; return; }
  /* dynamic chunks of ~64K elements: on a shared machine a thread that is
   * descheduled would otherwise hold up a whole static half of the rows */
  nd_i64 chunk = 65536 / r > 1 ? 65536 / r : 1;
  _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(dynamic, chunk)")
  for (nd_i64 i = 0; i < outer; i++) o[i] = (T)ND_FN(row_sum_)(a + i * r, r);
}

/* o[j] = sum_i a[i * inner + j]: a sum over leading axes (a bias's gradient,
 * (B*T, N) -> (N,)).  The composition moves the reduced axes last and
 * compacts, a transposed copy of the whole array: for the LSTM LM's
 * (400, 10000) logit gradient that copy took ~12 ms of a ~60 ms step.  Here
 * the rows are streamed in order into ACC sums (column blocks of
 * ND_SUM_COLS, so a block's sums stay in L1/L2 and each row segment spans
 * whole pages for the prefetcher; blocks of a few columns across many rows
 * hopped a page a row and ran at a third of the speed).  Threads take row
 * ranges with sums of their own, added up in thread order, or column ranges
 * when there are few rows. */
#ifndef ND_SUM_COLS
#define ND_SUM_COLS 4096
#endif
/* compiled for AVX2 and for baseline x86-64 like the cheap kernels above
 * (the float32 -> ACC conversions are the work): SSE2 alone ran at ~0.35x */
#define ND_SUM_ROWS_BODY                                                        \
  for (nd_i64 j = 0; j < ncols; j++) s[j] = 0;                                  \
  for (nd_i64 j0 = 0; j0 < ncols; j0 += ND_SUM_COLS) {                          \
    nd_i64 nj = ncols - j0 < ND_SUM_COLS ? ncols - j0 : ND_SUM_COLS;            \
    for (nd_i64 i = 0; i < rows; i++) {                                         \
      const T *row = a + i * ld + j0;                                           \
      ACC *sj = s + j0;                                                         \
      _Pragma("omp simd")                                                       \
      for (nd_i64 j = 0; j < nj; j++) sj[j] += row[j];                          \
    }                                                                           \
  }
ND_TWICE(sum_rows_into_, (const T *a, ACC *s, nd_i64 rows, nd_i64 ld, nd_i64 ncols),
         (a, s, rows, ld, ncols), ND_SUM_ROWS_BODY)
#undef ND_SUM_ROWS_BODY

int ND_FN(nd_reduce_sum_leading_)(const T *a, T *o, nd_i64 outer, nd_i64 inner) {
  if (inner == 1) { ND_FN(nd_reduce_sum_)(a, o, 1, outer); return 0; }
  int nt = nd_threads_for(outer * inner, ND_GRAIN_CHEAP);
  int by_cols = outer < 4 * (nd_i64)nt;  /* few rows: split the columns */
  if (by_cols && nt > inner) nt = (int)inner;
  ACC *acc = (ACC *)nd_aligned_alloc((size_t)(by_cols ? 1 : nt) * (size_t)inner * sizeof(ACC));
  if (!acc) return -1;
  _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")
  for (int t = 0; t < nt; t++) {
    if (by_cols) {
      nd_i64 j0 = inner * t / nt, j1 = inner * (t + 1) / nt;
      ND_FN(sum_rows_into_)(a + j0, acc + j0, outer, inner, j1 - j0);
    } else {
      nd_i64 r0 = outer * t / nt, r1 = outer * (t + 1) / nt;
      ND_FN(sum_rows_into_)(a + r0 * inner, acc + (nd_i64)t * inner, r1 - r0, inner, inner);
    }
  }
  int parts = by_cols ? 1 : nt;
  for (nd_i64 j = 0; j < inner; j++) {
    ACC s = acc[j];
    for (int t = 1; t < parts; t++) s += acc[(nd_i64)t * inner + j];
    o[j] = (T)s;
  }
  nd_aligned_free(acc);
  return 0;
}

void ND_FN(nd_reduce_max_)(const T *a, T *o, nd_i64 outer, nd_i64 r) {
  int nt = nd_threads_for(outer * r, ND_GRAIN_CHEAP);
  if (nt > 1 && outer < nt) {
    T part[256];
    if (nt > 256) nt = 256;
    for (nd_i64 i = 0; i < outer; i++) {
      const T *row = a + i * r;
      nd_i64 chunk = (r + nt - 1) / nt;
      _Pragma("omp parallel for num_threads(nt) schedule(static)")
      for (int t = 0; t < nt; t++) {
        nd_i64 b = (nd_i64)t * chunk, e = b + chunk < r ? b + chunk : r;
        part[t] = b < e ? ND_FN(row_max_)(row + b, e - b) : -(T)INFINITY;
      }
      T m = part[0];
      for (int t = 1; t < nt; t++) m = (part[t] > m || part[t] != part[t]) ? part[t] : m;
      o[i] = m;
    }
    return;
  }
  nd_i64 chunk = 65536 / r > 1 ? 65536 / r : 1;  /* see nd_reduce_sum_ */
  _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(dynamic, chunk)")
  for (nd_i64 i = 0; i < outer; i++) o[i] = ND_FN(row_max_)(a + i * r, r);
}

void ND_FN(nd_logsumexp_)(const T *a, T *o, nd_i64 outer, nd_i64 r) {
  int nt = nd_threads_for(outer * r, ND_GRAIN_MATH);
  _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")
  for (nd_i64 i = 0; i < outer; i++) {
    const T *row = a + i * r;
    T m = ND_FN(row_max_)(row, r);
    if (m != m || m == (T)INFINITY || m == -(T)INFINITY) { o[i] = m; continue; }
    ACC s = 0;
#ifdef ND_VEC_MATH
    /* exp of blocks of (row - m) through the vector exp, summed in ACC */
    for (nd_i64 j0 = 0; j0 < r; j0 += 256) {
      T buf[256];
      nd_i64 nb = r - j0 < 256 ? r - j0 : 256;
      for (nd_i64 j = 0; j < nb; j++) buf[j] = row[j0 + j] - m;
      nd_vexp_f32(buf, buf, nb);
      s += nd_vrow_sum_f32(buf, nb);
    }
#else
    for (nd_i64 j = 0; j < r; j++) s += EXP(row[j] - m);
#endif
    o[i] = (T)((ACC)m + log(s));
  }
}

void ND_FN(nd_softmax_)(const T *a, T *o, nd_i64 outer, nd_i64 r) {
  int nt = nd_threads_for(outer * r, ND_GRAIN_MATH);
#ifdef ND_VEC_MATH
  if (r < 256) {
    /* short rows (attention over 32 keys): one vector exp call per block of
     * rows instead of one per row -- the per-call dispatch and the partial
     * last vector cost more than a 32-wide row's exp (4096 x 32: 94 -> 59 us) */
    nd_i64 per = 4096 / r;
    nd_i64 nblk = (outer + per - 1) / per;
    _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")
    for (nd_i64 bi = 0; bi < nblk; bi++) {
      nd_i64 i0 = bi * per, i1 = i0 + per < outer ? i0 + per : outer;
      for (nd_i64 i = i0; i < i1; i++) {
        const T *row = a + i * r;
        T *orow = o + i * r;
        T m = ND_FN(row_max_)(row, r);
        _Pragma("omp simd")
        for (nd_i64 j = 0; j < r; j++) orow[j] = row[j] - m;
      }
      nd_vexp_f32(o + i0 * r, o + i0 * r, (i1 - i0) * r);
      for (nd_i64 i = i0; i < i1; i++) {
        T *orow = o + i * r;
        T inv = (T)(1.0 / nd_vrow_sum_f32(orow, r));
        _Pragma("omp simd")
        for (nd_i64 j = 0; j < r; j++) orow[j] *= inv;
      }
    }
    return;
  }
#endif
  _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")
  for (nd_i64 i = 0; i < outer; i++) {
    const T *row = a + i * r;
    T *orow = o + i * r;
    T m = ND_FN(row_max_)(row, r);
    ACC s = 0;
#ifdef ND_VEC_MATH
    for (nd_i64 j = 0; j < r; j++) orow[j] = row[j] - m;
    nd_vexp_f32(orow, orow, r);  /* in place: element-wise, no overlap issue */
    s = nd_vrow_sum_f32(orow, r);
#else
    for (nd_i64 j = 0; j < r; j++) { T e = EXP(row[j] - m); orow[j] = e; s += e; }
#endif
    T inv = (T)(1.0 / s);
    _Pragma("omp simd")
    for (nd_i64 j = 0; j < r; j++) orow[j] *= inv;
  }
}

#undef ND_BIN
#undef ND_BIN_MATH
#undef ND_SCAL
#undef ND_UN
#undef ND_LOOP
#undef ND_FN
