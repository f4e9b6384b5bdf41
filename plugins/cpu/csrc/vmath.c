/* Vectorised float32 exp, log and tanh (AVX2+FMA, chosen at run time).
 *
 * libm's expf/logf/tanhf are scalar calls (~5-10 ns each); NumPy ships SIMD
 * versions, so a libm loop runs at a fraction of NumPy's speed.  These are
 * Cody-Waite range reduction plus minimax polynomials (the classic Cephes
 * float32 coefficients), accurate to about 1-2 ulp over the whole range,
 * with the IEEE special values (+-0, +-inf, nan, denormal inputs and
 * outputs) handled by blends rather than branches.
 *
 * nd_vexp_f32 / nd_vlog_f32 / nd_vtanh_f32 work on one contiguous chunk on
 * the calling thread; ewise.c splits large arrays across threads.  Without
 * AVX2 (or with NEEDLE_CPU_SIMD=none) they fall back to libm; on CPUs with
 * AVX-512F a 16-lane version of the same polynomials runs.
 */
#include <math.h>
#include <string.h>
#include "needle_cpu.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define ND_VM_X86 1
#include <immintrin.h>

#define ND_AVX2 __attribute__((target("avx2,fma")))

/* exp(x) for 8 lanes.  n = round(x / ln2), r = x - n ln2 in [-ln2/2, ln2/2]
 * (ln2 split in two so n ln2 is exact), exp(r) by a degree-7 polynomial,
 * then 2^n applied as 2^(n/2) * 2^(n - n/2): both halves stay normal for
 * every n in the clamped range, so results that overflow become inf and
 * results that underflow become correctly rounded denormals or 0. */
ND_AVX2 static inline __m256 vexp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(90.0f), lo = _mm256_set1_ps(-110.0f);
  __m256 isnan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, r);
  p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i n1 = _mm256_srai_epi32(ni, 1);
  __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  return _mm256_blendv_ps(y, x, isnan);  /* nan in, nan out */
}

/* log(x) for 8 lanes.  x = m 2^e with m in [sqrt(1/2), sqrt(2)), f = m - 1,
 * log(1+f) = f - f^2/2 + f^3 P(f), plus e ln2 (split).  Denormal inputs are
 * scaled by 2^23 first.  x < 0 or nan -> nan, 0 -> -inf, inf -> inf. */
ND_AVX2 static inline __m256 vlog8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
  __m256 xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(8388608.0f)), tiny);
  __m256 eadj = _mm256_and_ps(tiny, _mm256_set1_ps(-23.0f));
  __m256i bits = _mm256_castps_si256(xs);
  __m256 e = _mm256_cvtepi32_ps(
      _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
      _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
  /* m in [0.5, 1): below sqrt(1/2) use 2m - 1 and e - 1, else m - 1 */
  __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  e = _mm256_add_ps(_mm256_sub_ps(e, _mm256_and_ps(small, one)), eadj);
  __m256 f = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(small, m)), one);
  __m256 z = _mm256_mul_ps(f, f);
  __m256 p = _mm256_set1_ps(7.0376836292e-2f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(-1.1514610310e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.1676998740e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(-1.2420140846e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.4249322787e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(-1.6668057665e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.0000714765e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(-2.4999993993e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(3.3333331174e-1f));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, z), f);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
  y = _mm256_add_ps(f, y);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), y);
  /* special values */
  __m256 zero = _mm256_setzero_ps();
  __m256 isinf = _mm256_cmp_ps(x, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ);
  y = _mm256_blendv_ps(y, x, isinf);
  __m256 iszero = _mm256_cmp_ps(x, zero, _CMP_EQ_OQ);  /* +0 and -0 */
  y = _mm256_blendv_ps(y, _mm256_set1_ps(-INFINITY), iszero);
  __m256 bad = _mm256_cmp_ps(x, zero, _CMP_NGE_UQ);    /* x < 0 or nan */
  return _mm256_blendv_ps(y, _mm256_set1_ps(NAN), bad);
}

/* tanh(x) for 8 lanes: odd polynomial for |x| < 0.625, else
 * sign(x) (1 - 2 / (exp(2|x|) + 1)) with |x| clamped at 10 (tanh = 1 in
 * float32 well before).  +-0 and nan pass through the polynomial. */
ND_AVX2 static inline __m256 vtanh8(__m256 x) {
  const __m256 signmask = _mm256_set1_ps(-0.0f);
  __m256 ax = _mm256_andnot_ps(signmask, x);
  __m256 z = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-5.70498872745e-3f);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.06390887954e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.37397155531e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.33314422036e-1f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33332819422e-1f));
  __m256 ysmall = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
  /* tanh keeps the sign of x, -0 included (x + x^3 p would round -0 to +0) */
  ysmall = _mm256_or_ps(_mm256_andnot_ps(signmask, ysmall), _mm256_and_ps(x, signmask));
  __m256 big = _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_GE_OQ);
  if (_mm256_movemask_ps(big) == 0) return ysmall;
  __m256 e = vexp8(_mm256_mul_ps(_mm256_min_ps(ax, _mm256_set1_ps(10.0f)), _mm256_set1_ps(2.0f)));
  __m256 ybig = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                              _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
  ybig = _mm256_or_ps(ybig, _mm256_and_ps(x, signmask));
  return _mm256_blendv_ps(ysmall, ybig, big);
}


/* ---- row reductions (float32): 4 x 8 independent lanes hide the add/max
 * latency; sums fold each block of 1024 into a double like the portable
 * code, so long rows keep their precision ---- */
ND_AVX2 static double vrow_sum_avx2(const float *a, nd_i64 r) {
  double total = 0;
  for (nd_i64 b = 0; b < r; b += 1024) {
    nd_i64 e = b + 1024 < r ? b + 1024 : r, i = b;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (; i + 32 <= e; i += 32) {
      s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i));
      s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a + i + 8));
      s2 = _mm256_add_ps(s2, _mm256_loadu_ps(a + i + 16));
      s3 = _mm256_add_ps(s3, _mm256_loadu_ps(a + i + 24));
    }
    for (; i + 8 <= e; i += 8) s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i));
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float t = _mm_cvtss_f32(h);
    for (; i < e; i++) t += a[i];
    total += t;
  }
  return total;
}

/* NaN anywhere wins, like numpy.max (vmaxps alone would drop it) */
ND_AVX2 static float vrow_max_avx2(const float *a, nd_i64 r) {
  nd_i64 i = 0;
  float m = a[0];
  int nan = 0;
  if (r >= 32) {
    __m256 m0 = _mm256_loadu_ps(a), m1 = m0, m2 = m0, m3 = m0;
    __m256 bad = _mm256_setzero_ps();
    for (; i + 32 <= r; i += 32) {
      __m256 x0 = _mm256_loadu_ps(a + i), x1 = _mm256_loadu_ps(a + i + 8);
      __m256 x2 = _mm256_loadu_ps(a + i + 16), x3 = _mm256_loadu_ps(a + i + 24);
      m0 = _mm256_max_ps(m0, x0); m1 = _mm256_max_ps(m1, x1);
      m2 = _mm256_max_ps(m2, x2); m3 = _mm256_max_ps(m3, x3);
      /* unordered(x, y) is true when either is nan */
      bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(x0, x1, _CMP_UNORD_Q),
                                           _mm256_cmp_ps(x2, x3, _CMP_UNORD_Q)));
    }
    __m256 mm = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(mm), _mm256_extractf128_ps(mm, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    m = _mm_cvtss_f32(h);
    nan = _mm256_movemask_ps(bad) != 0;
  }
  for (; i < r; i++) { float x = a[i]; m = x > m ? x : m; nan |= (x != x); }
  return nan ? NAN : m;
}

#define ND_VM_DRIVER(name, FN8)                                                \
  ND_AVX2 static void name##_avx2(const float *a, float *o, nd_i64 n) {        \
    nd_i64 i = 0;                                                              \
    for (; i + 16 <= n; i += 16) {                                             \
      __m256 x0 = _mm256_loadu_ps(a + i), x1 = _mm256_loadu_ps(a + i + 8);     \
      _mm256_storeu_ps(o + i, FN8(x0));                                        \
      _mm256_storeu_ps(o + i + 8, FN8(x1));                                    \
    }                                                                          \
    for (; i < n; i += 8) {                                                    \
      /* the tail through the same vector code: same answers at every size */  \
      float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                 \
      nd_i64 r = n - i < 8 ? n - i : 8;                                        \
      memcpy(buf, a + i, (size_t)r * sizeof(float));                           \
      _mm256_storeu_ps(buf, FN8(_mm256_loadu_ps(buf)));                        \
      memcpy(o + i, buf, (size_t)r * sizeof(float));                           \
    }                                                                          \
  }
ND_VM_DRIVER(vexp, vexp8)
ND_VM_DRIVER(vlog, vlog8)
ND_VM_DRIVER(vtanh, vtanh8)

/* ---- AVX-512F: same polynomials, 16 lanes; vgetexp/vgetmant split log's
 * argument (denormals included) and vscalef applies 2^n with IEEE overflow
 * and gradual underflow in one correctly rounded step. ---- */
#define ND_AVX512 __attribute__((target("avx512f,fma")))

ND_AVX512 static inline __m512 vexp16(__m512 x) {
  __mmask16 isnan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-110.0f)), _mm512_set1_ps(90.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
  p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
  return _mm512_mask_mov_ps(_mm512_scalef_ps(p, n), isnan, x);
}

ND_AVX512 static inline __m512 vlog16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  /* m in [1, 2), e = floor(log2 x); m > sqrt 2 -> m/2, e + 1 */
  __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
  __m512 e = _mm512_getexp_ps(x);
  __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356237309505f), _CMP_GT_OQ);
  m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
  e = _mm512_mask_add_ps(e, big, e, one);
  __m512 f = _mm512_sub_ps(m, one);
  __m512 z = _mm512_mul_ps(f, f);
  __m512 p = _mm512_set1_ps(7.0376836292e-2f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(-1.1514610310e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.1676998740e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(-1.2420140846e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.4249322787e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(-1.6668057665e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.0000714765e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(-2.4999993993e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(3.3333331174e-1f));
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, z), f);
  y = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.12194440e-4f), y);
  y = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), y);
  y = _mm512_add_ps(f, y);
  y = _mm512_fmadd_ps(e, _mm512_set1_ps(0.693359375f), y);
  const __m512 zero = _mm512_setzero_ps();
  y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ), x);
  y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, zero, _CMP_EQ_OQ), _mm512_set1_ps(-INFINITY));
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, zero, _CMP_NGE_UQ), _mm512_set1_ps(NAN));
}

ND_AVX512 static inline __m512 vtanh16(__m512 x) {
  const __m512i signbit = _mm512_set1_epi32((int)0x80000000u);
  __m512i xi = _mm512_castps_si512(x);
  __m512i sgn = _mm512_and_si512(xi, signbit);
  __m512 ax = _mm512_castsi512_ps(_mm512_andnot_si512(signbit, xi));
  __m512 z = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-5.70498872745e-3f);
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(2.06390887954e-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-5.37397155531e-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.33314422036e-1f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33332819422e-1f));
  __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(p, z), ax, ax);
  __mmask16 big = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_GE_OQ);
  if (big) {
    __m512 e = vexp16(_mm512_mul_ps(_mm512_min_ps(ax, _mm512_set1_ps(10.0f)), _mm512_set1_ps(2.0f)));
    __m512 d = _mm512_add_ps(e, _mm512_set1_ps(1.0f));
    /* 1/d by a 14-bit reciprocal and one Newton step (~28 bits); its
     * error shrinks in 1 - 2/d, which is >= 0.55 here */
    __m512 q = _mm512_rcp14_ps(d);
    q = _mm512_mul_ps(q, _mm512_fnmadd_ps(d, q, _mm512_set1_ps(2.0f)));
    y = _mm512_mask_mov_ps(y, big, _mm512_fnmadd_ps(q, _mm512_set1_ps(2.0f), _mm512_set1_ps(1.0f)));
  }
  /* odd function: |tanh| with the sign of x (keeps -0 and nan) */
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sgn));
}

#define ND_VM_DRIVER512(name, FN16)                                            \
  ND_AVX512 static void name##_avx512(const float *a, float *o, nd_i64 n) {    \
    nd_i64 i = 0;                                                              \
    for (; i + 32 <= n; i += 32) {                                             \
      __m512 x0 = _mm512_loadu_ps(a + i), x1 = _mm512_loadu_ps(a + i + 16);    \
      _mm512_storeu_ps(o + i, FN16(x0));                                       \
      _mm512_storeu_ps(o + i + 16, FN16(x1));                                  \
    }                                                                          \
    for (; i < n; i += 16) {                                                   \
      nd_i64 r = n - i < 16 ? n - i : 16;                                      \
      __mmask16 k = (__mmask16)((1u << r) - 1u);                               \
      _mm512_mask_storeu_ps(o + i, k, FN16(_mm512_maskz_loadu_ps(k, a + i)));  \
    }                                                                          \
  }
ND_VM_DRIVER512(vexp, vexp16)
ND_VM_DRIVER512(vlog, vlog16)
ND_VM_DRIVER512(vtanh, vtanh16)
#else
#define ND_VM_X86 0
#endif

/* highest path allowed (tests lower it to check each path on one CPU):
 * 2 AVX-512F, 1 AVX2+FMA, 0 libm */
static int g_vm_cap = 2;

void nd_vmath_cap(int level) { g_vm_cap = level; }

int nd_vmath_level(void) {
#if ND_VM_X86
  int lv = nd_simd_level();  /* NEEDLE_CPU_SIMD caps vmath too */
  return lv < g_vm_cap ? lv : g_vm_cap;
#else
  return 0;
#endif
}

void nd_vexp_f32(const float *a, float *o, nd_i64 n) {
#if ND_VM_X86
  int lv = nd_vmath_level();
  if (lv == 2) { vexp_avx512(a, o, n); return; }
  if (lv == 1) { vexp_avx2(a, o, n); return; }
#endif
  for (nd_i64 i = 0; i < n; i++) o[i] = expf(a[i]);
}

void nd_vlog_f32(const float *a, float *o, nd_i64 n) {
#if ND_VM_X86
  int lv = nd_vmath_level();
  if (lv == 2) { vlog_avx512(a, o, n); return; }
  if (lv == 1) { vlog_avx2(a, o, n); return; }
#endif
  for (nd_i64 i = 0; i < n; i++) o[i] = logf(a[i]);
}

void nd_vtanh_f32(const float *a, float *o, nd_i64 n) {
#if ND_VM_X86
  int lv = nd_vmath_level();
  if (lv == 2) { vtanh_avx512(a, o, n); return; }
  if (lv == 1) { vtanh_avx2(a, o, n); return; }
#endif
  for (nd_i64 i = 0; i < n; i++) o[i] = tanhf(a[i]);
}

double nd_vrow_sum_f32(const float *a, nd_i64 r) {
#if ND_VM_X86
  if (nd_simd_avx2()) return vrow_sum_avx2(a, r);
#endif
  double total = 0;
  for (nd_i64 b = 0; b < r; b += 1024) {
    nd_i64 e = b + 1024 < r ? b + 1024 : r;
    float t = 0;
    for (nd_i64 i = b; i < e; i++) t += a[i];
    total += t;
  }
  return total;
}

float nd_vrow_max_f32(const float *a, nd_i64 r) {
#if ND_VM_X86
  if (nd_simd_avx2()) return vrow_max_avx2(a, r);
#endif
  float m = a[0];
  int nan = 0;
  for (nd_i64 i = 0; i < r; i++) { float x = a[i]; m = x > m ? x : m; nan |= (x != x); }
  return nan ? NAN : m;
}
