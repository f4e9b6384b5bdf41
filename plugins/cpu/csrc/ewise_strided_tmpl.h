/* One dtype of ewise_strided.c (T, SUF, POW set by the includer). */
#define ND_CAT_(a, b) a##b
#define ND_CAT(a, b) ND_CAT_(a, b)
#define ND_FN(name) ND_CAT(name, SUF)

typedef void (*ND_FN(ews_row_t_))(const T *, nd_i64, const T *, nd_i64, T *, nd_i64);

/* one row of n outputs; x is a's element, y is b's */
#define ND_EWS_ROW(NAME, EXPR)                                                   \
  ND_EWS_ROW1(ND_CAT(ND_FN(NAME), avx2_), ND_EWS_AVX2, EXPR)                      \
  ND_EWS_ROW1(ND_FN(NAME), , EXPR)
/* compiled for AVX2 and for baseline x86-64, like ewise_tmpl.h's kernels */
#define ND_EWS_ROW1(FNAME, ATTR, EXPR)                                           \
  ATTR static void FNAME(const T *a, nd_i64 sa, const T *b, nd_i64 sb, T *o, nd_i64 n) { \
    if (sa == 1 && sb == 1) {                                                    \
      _Pragma("omp simd")                                                        \
      for (nd_i64 i = 0; i < n; i++) { T x = a[i]; T y = b[i]; o[i] = (EXPR); }  \
    } else if (sa == 1 && sb == 0) {                                             \
      const T y = b[0];                                                          \
      _Pragma("omp simd")                                                        \
      for (nd_i64 i = 0; i < n; i++) { T x = a[i]; o[i] = (EXPR); }              \
    } else if (sa == 0 && sb == 1) {                                             \
      const T x = a[0];                                                          \
      _Pragma("omp simd")                                                        \
      for (nd_i64 i = 0; i < n; i++) { T y = b[i]; o[i] = (EXPR); }              \
    } else {                                                                     \
      for (nd_i64 i = 0; i < n; i++) { T x = a[i * sa]; T y = b[i * sb]; o[i] = (EXPR); } \
    }                                                                            \
  }

ND_EWS_ROW(ews_add_, x + y)
ND_EWS_ROW(ews_sub_, x - y)
ND_EWS_ROW(ews_mul_, x * y)
ND_EWS_ROW(ews_div_, x / y)
ND_EWS_ROW(ews_maximum_, (x >= y || x != x) ? x : y)
ND_EWS_ROW(ews_eq_, (T)(x == y))
ND_EWS_ROW(ews_ge_, (T)(x >= y))
ND_EWS_ROW(ews_relu_grad_, y * (T)(x > 0))
ND_EWS_ROW(ews_pow_, POW(x, y))
#undef ND_EWS_ROW
#undef ND_EWS_ROW1

int ND_CAT(nd_ewise_strided_, SUF)(int op, const T *a, const nd_i64 *sa_in, const T *b,
                                   const nd_i64 *sb_in, T *o, const nd_i64 *shape, int ndim) {
  ND_FN(ews_row_t_) row;
  nd_i64 grain = ND_GRAIN_CHEAP;
  const int avx2 = ND_EWS_X86 && nd_simd_avx2();
  switch (op) {
    case ND_EW_ADD: row = avx2 ? ND_CAT(ND_FN(ews_add_), avx2_) : ND_FN(ews_add_); break;
    case ND_EW_SUB: row = avx2 ? ND_CAT(ND_FN(ews_sub_), avx2_) : ND_FN(ews_sub_); break;
    case ND_EW_MUL: row = avx2 ? ND_CAT(ND_FN(ews_mul_), avx2_) : ND_FN(ews_mul_); break;
    case ND_EW_DIV: row = avx2 ? ND_CAT(ND_FN(ews_div_), avx2_) : ND_FN(ews_div_); break;
    case ND_EW_MAXIMUM: row = avx2 ? ND_CAT(ND_FN(ews_maximum_), avx2_) : ND_FN(ews_maximum_); break;
    case ND_EW_EQ: row = avx2 ? ND_CAT(ND_FN(ews_eq_), avx2_) : ND_FN(ews_eq_); break;
    case ND_EW_GE: row = avx2 ? ND_CAT(ND_FN(ews_ge_), avx2_) : ND_FN(ews_ge_); break;
    case ND_EW_RELU_GRAD: row = avx2 ? ND_CAT(ND_FN(ews_relu_grad_), avx2_) : ND_FN(ews_relu_grad_); break;
    case ND_EW_POW: row = avx2 ? ND_CAT(ND_FN(ews_pow_), avx2_) : ND_FN(ews_pow_); grain = ND_GRAIN_MATH; break;
    default: return -1;
  }
  if (ndim < 0 || ndim > ND_MAX_DIMS) return -1;
  nd_i64 sh[ND_MAX_DIMS], sa[ND_MAX_DIMS], sb[ND_MAX_DIMS];
  nd_i64 total = 1;
  int nd = 0;
  for (int d = 0; d < ndim; d++) {
    total *= shape[d];
    if (shape[d] == 1) continue;  /* a size-1 dimension moves nothing */
    if (nd > 0 && sa[nd - 1] == sa_in[d] * shape[d] && sb[nd - 1] == sb_in[d] * shape[d]) {
      sh[nd - 1] *= shape[d];     /* merges with the dimension before it */
      sa[nd - 1] = sa_in[d];
      sb[nd - 1] = sb_in[d];
    } else {
      sh[nd] = shape[d]; sa[nd] = sa_in[d]; sb[nd] = sb_in[d]; nd++;
    }
  }
  if (total <= 0) return 0;
  if (nd == 0) { sh[0] = 1; sa[0] = sb[0] = 0; nd = 1; }
  const nd_i64 inner = sh[nd - 1], rows = total / inner;
  const nd_i64 isa = sa[nd - 1], isb = sb[nd - 1];
  int nt = nd_threads_for(total, grain);
  if (nt > rows) nt = (int)rows;
  _Pragma("omp parallel num_threads(nt) if(nt > 1)")
  {
    int t = 0;
#ifdef _OPENMP
    t = omp_get_thread_num();
#endif
    nd_i64 r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
    nd_i64 idx[ND_MAX_DIMS], oa = 0, ob = 0, rem = r0;
    for (int d = nd - 2; d >= 0; d--) {  /* multi-index of row r0 */
      idx[d] = rem % sh[d];
      rem /= sh[d];
      oa += idx[d] * sa[d];
      ob += idx[d] * sb[d];
    }
    for (nd_i64 r = r0; r < r1; r++) {
      row(a + oa, isa, b + ob, isb, o + r * inner, inner);
      for (int d = nd - 2; d >= 0; d--) {  /* odometer step to the next row */
        oa += sa[d];
        ob += sb[d];
        if (++idx[d] < sh[d]) break;
        oa -= sa[d] * sh[d];
        ob -= sb[d] * sh[d];
        idx[d] = 0;
      }
    }
  }
  return 0;
}

#undef ND_FN
