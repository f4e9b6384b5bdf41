/* NHWC convolution (forward and both gradients) for float32 and float64. */
#include <string.h>
#include "needle_cpu.h"

#define T float
#define SUF f32
#include "conv_tmpl.h"
#undef T
#undef SUF

#define T double
#define SUF f64
#include "conv_tmpl.h"
