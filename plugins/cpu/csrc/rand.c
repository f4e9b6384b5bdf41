/* rand_uniform: the counter-based generator of the protocol
 * (OP_OVERRIDE_SIGNATURES["rand_uniform"]).  Element i depends only on (seed,
 * i), never on a running state, so threads split the range freely and every
 * backend (and NumPy) draws the same bits. */
#include "needle_cpu.h"

#define ND_GOLDEN 0x9E3779B97F4A7C15ULL

static inline uint64_t nd_mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ULL;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z;
}

/* Two 64-bit multiplies a element: dearer than an add, far cheaper than a
 * libm call, so the grain sits between ND_GRAIN_MATH and ND_GRAIN_CHEAP. */
#define ND_GRAIN_RAND 8192

void nd_rand_uniform_f32(float *o, nd_i64 n, uint64_t seed) {
  const uint64_t base = seed * ND_GOLDEN;
  int nt = nd_threads_for(n, ND_GRAIN_RAND);
  /* 24 top bits fit a float's significand exactly: no rounding up to 1.0 */
  _Pragma("omp parallel for simd num_threads(nt) schedule(static) if(nt > 1)")
  for (nd_i64 i = 0; i < n; i++)
    o[i] = (float)(nd_mix64(base + (uint64_t)i) >> 40) * 0x1p-24f;
}

void nd_rand_uniform_f64(double *o, nd_i64 n, uint64_t seed) {
  const uint64_t base = seed * ND_GOLDEN;
  int nt = nd_threads_for(n, ND_GRAIN_RAND);
  _Pragma("omp parallel for simd num_threads(nt) schedule(static) if(nt > 1)")
  for (nd_i64 i = 0; i < n; i++)
    o[i] = (double)(nd_mix64(base + (uint64_t)i) >> 11) * 0x1p-53;
}
