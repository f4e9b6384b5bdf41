/* nn.Embedding's row gather (out[i] = w[ids[i]]) and its adjoint (out[v] =
 * the sum of g[i] over ids[i] == v), with the indices in a buffer of the
 * table's dtype, as the loss's labels are.  Indices are checked before any
 * row is touched: a bad one is reported, never read or written through. */
#include <string.h>
#include "embedding.h"

#define ND_IDS_CHECK(T)                                                       \
  for (nd_i64 i = 0; i < rows; i++) {                                         \
    T v = ids[i];                                                             \
    if (!(v >= 0 && v < (T)num) || v != (T)(nd_i64)v) return i;               \
  }

#define ND_EMBEDDING(T, SUF)                                                  \
nd_i64 nd_embedding_##SUF(const T *w, const T *ids, T *out, nd_i64 rows,      \
                          nd_i64 num, nd_i64 dim) {                           \
  ND_IDS_CHECK(T)                                                             \
  int nt = nd_threads_for(rows * dim, ND_GRAIN_CHEAP);                        \
  _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")     \
  for (nd_i64 i = 0; i < rows; i++)                                           \
    memcpy(out + i * dim, w + (nd_i64)ids[i] * dim, (size_t)dim * sizeof(T)); \
  return -1;                                                                  \
}                                                                             \
                                                                              \
/* Threads split the columns, not the rows: two rows may share an index, and  \
 * each column's sum then still adds its rows in increasing i (the order the  \
 * eager NumPy path and the numpy backend use), so every backend agrees. */   \
nd_i64 nd_embedding_grad_##SUF(const T *g, const T *ids, T *out, nd_i64 rows, \
                               nd_i64 num, nd_i64 dim) {                      \
  ND_IDS_CHECK(T)                                                             \
  memset(out, 0, (size_t)(num * dim) * sizeof(T));                            \
  int nt = nd_threads_for(rows * dim, ND_GRAIN_CHEAP);                        \
  if (nt > dim / 16) nt = dim / 16 > 1 ? (int)(dim / 16) : 1;                 \
  _Pragma("omp parallel num_threads(nt) if(nt > 1)")                          \
  {                                                                           \
    int t = ND_OMP_TID(), team = nt > 1 ? nt : 1;                             \
    ND_ROW_SLICE(dim, t, team, lo, hi);                                       \
    for (nd_i64 i = 0; i < rows; i++) {                                       \
      const T *src = g + i * dim;                                             \
      T *dst = out + (nd_i64)ids[i] * dim;                                    \
      for (nd_i64 j = lo; j < hi; j++) dst[j] += src[j];                      \
    }                                                                         \
  }                                                                           \
  return -1;                                                                  \
}

ND_EMBEDDING(float, f32)
ND_EMBEDDING(double, f64)
