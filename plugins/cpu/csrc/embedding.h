/* nn.Embedding's row gather and its adjoint with the indices on the device
 * (op overrides embedding / embedding_grad; needle.jit captures them). */
#ifndef NEEDLE_EMBEDDING_H
#define NEEDLE_EMBEDDING_H
#include "needle_cpu.h"

/* each returns -1, or the first position whose index is not a whole number in [0, num) */
nd_i64 nd_embedding_f32(const float *w, const float *ids, float *out, nd_i64 rows, nd_i64 num, nd_i64 dim);
nd_i64 nd_embedding_f64(const double *w, const double *ids, double *out, nd_i64 rows, nd_i64 num, nd_i64 dim);
nd_i64 nd_embedding_grad_f32(const float *g, const float *ids, float *out, nd_i64 rows, nd_i64 num,
                             nd_i64 dim);
nd_i64 nd_embedding_grad_f64(const double *g, const double *ids, double *out, nd_i64 rows, nd_i64 num,
                             nd_i64 dim);
#endif
