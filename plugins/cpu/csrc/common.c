/* Runtime facts: OpenMP on/off, thread count, SIMD dispatch. */
#include "needle_cpu.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static int g_threads = 1;
static int g_force_portable = 0;

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

int nd_cpu_has_avx2_fma(void) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return 0;
#endif
}

void nd_force_portable(int on) { g_force_portable = on; }

int nd_simd_avx2(void) {
  static int has = -1;
  if (has < 0) has = nd_cpu_has_avx2_fma();
  return has && !g_force_portable;
}
