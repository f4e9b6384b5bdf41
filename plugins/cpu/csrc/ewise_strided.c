/* Binary element-wise kernels on strided operands, compact output:
 *   o[idx] = OP(a[idx . sa], b[idx . sb])   for every idx in shape
 * Broadcast operands have stride 0 and transposed/sliced ones any stride, so
 * NDArray never materialises a broadcast or compacts a view before a binary
 * op.  Dimensions are coalesced first (size-1 dimensions dropped, adjacent
 * dimensions merged where both operands allow), then each innermost row runs
 * one of four loops: both contiguous, one operand a broadcast scalar per row,
 * or general strides.  The expressions are the compact kernels' (ewise_tmpl.h)
 * so results are identical, NaN handling included. */
#include <math.h>
#include "needle_cpu.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define ND_EWS_X86 1
#define ND_EWS_AVX2 __attribute__((target("avx2")))
#else
#define ND_EWS_X86 0
#define ND_EWS_AVX2
#endif

#define T float
#define SUF f32
#define POW powf
#include "ewise_strided_tmpl.h"
#undef T
#undef SUF
#undef POW

#define T double
#define SUF f64
#define POW pow
#include "ewise_strided_tmpl.h"
