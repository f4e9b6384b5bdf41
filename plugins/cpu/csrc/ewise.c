/* Element-wise kernels, reductions, logsumexp/softmax for float32 and float64. */
#include <math.h>
#include "needle_cpu.h"
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define ND_HAVE_X86_EW 1
#else
#define ND_HAVE_X86_EW 0
#endif

/* ND_GRAIN_CHEAP / ND_GRAIN_MATH (threads per element count): needle_cpu.h */
#define ND_GRAIN_VMATH 16384

#define T float
#define SUF f32
#define ACC double
#define ND_LANES 32
#define EXP expf
#define LOG logf
#define TANH tanhf
#define SQRT sqrtf
#define POW powf
#define ND_VEC_MATH 1
#include "ewise_tmpl.h"
#undef ND_VEC_MATH
#undef T
#undef SUF
#undef ACC
#undef EXP
#undef LOG
#undef TANH
#undef SQRT
#undef POW

#define T double
#define SUF f64
#define ACC double
#undef ND_LANES
#define ND_LANES 16
#define EXP exp
#define LOG log
#define TANH tanh
#define SQRT sqrt
#define POW pow
#include "ewise_tmpl.h"
