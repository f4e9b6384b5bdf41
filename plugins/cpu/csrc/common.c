/* Runtime facts: OpenMP on/off, thread count, SIMD dispatch (the level is
 * chosen from cpuid at run time, never at build time). */
#include "needle_cpu.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static int g_threads = 1;

int nd_openmp_enabled(void) {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

void nd_set_num_threads(int n) {
  if (n < 1) n = 1;
#ifdef _OPENMP
  g_threads = n;
  omp_set_num_threads(n);
#else
  (void)n;
  g_threads = 1;
#endif
}

int nd_get_num_threads(void) { return g_threads; }

int nd_threads_for(nd_i64 work, nd_i64 grain) {
  if (g_threads <= 1 || work < grain) return 1;
  nd_i64 t = work / grain;  /* at least one grain of work per thread */
  return t < g_threads ? (int)t : g_threads;
}

int nd_threads_for_rows(nd_i64 outer, nd_i64 total) {
  int nt = nd_threads_for(total, ND_GRAIN_CHEAP);
  if (nt > outer) nt = (int)(outer > 0 ? outer : 1);
  return nt;
}

int nd_cpu_has_avx2_fma(void) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return 0;
#endif
}

/* __builtin_cpu_supports also checks (through xgetbv) that the OS saves the
 * zmm state, so "avx512f" here means the AVX-512 kernels can really run.
 * They also use AVX2 code (the small-product path), hence both. */
int nd_cpu_has_avx512f(void) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && nd_cpu_has_avx2_fma();
#else
  return 0;
#endif
}

int nd_simd_best(void) {
  static int best = -1;
  if (best < 0) best = nd_cpu_has_avx512f() ? ND_SIMD_AVX512 : nd_cpu_has_avx2_fma() ? ND_SIMD_AVX2 : ND_SIMD_NONE;
  return best;
}

/* -1: the best the CPU has; else the forced level (never above the CPU's) */
static int g_simd_forced = -1;

int nd_set_simd_level(int level) {
  if (level < 0) { g_simd_forced = -1; return 0; }
  if (level > nd_simd_best()) return -1;  /* would be an illegal instruction */
  g_simd_forced = level;
  return 0;
}

/* Read on every kernel call (one load), so a forced level applies at once. */
int nd_simd_level(void) { return g_simd_forced >= 0 ? g_simd_forced : nd_simd_best(); }

int nd_simd_avx2(void) { return nd_simd_level() >= ND_SIMD_AVX2; }
