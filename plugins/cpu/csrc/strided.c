/* Strided copies: compact (gather), ewise_setitem (scatter) and
 * scalar_setitem (strided fill).
 *
 * One kernel copies between two strided views.  It first drops length-1 axes
 * and merges axes that are contiguous in both views, so most real cases
 * shrink to one or two axes.  Then:
 *   - innermost axis unit-stride on both sides -> memcpy per row;
 *   - source innermost stride 0 (broadcast)     -> fill per row;
 *   - the two views' unit strides are on different axes (a transpose) ->
 *     that pair of axes becomes the innermost two, copied in TB x TB tiles
 *     through an L1 buffer, so each side is walked along its unit stride;
 *   - anything else -> strided loop per row.
 * Rows (or tile rows) are distributed over threads; each thread walks its
 * range with an odometer over the outer axes (no division per row).
 * Copies move bits, so one instance serves float32 (uint32) and float64 (uint64).
 */
#include <string.h>
#include "needle_cpu.h"

#define ND_COPY_GRAIN 65536
#define TB 32

/* Drop length-1 axes and merge axes contiguous in both views.
 * Returns the new number of axes, or -1 when the view is empty. */
static int collapse(int ndim, const nd_i64 *sh, const nd_i64 *s1, const nd_i64 *s2,
                    nd_i64 *osh, nd_i64 *os1, nd_i64 *os2) {
  nd_i64 tsh[ND_MAX_DIMS], t1[ND_MAX_DIMS], t2[ND_MAX_DIMS];
  int n = 0;
  for (int k = ndim - 1; k >= 0; k--) {  /* innermost first */
    if (sh[k] == 0) return -1;
    if (sh[k] == 1) continue;
    if (n > 0 && s1[k] == t1[n - 1] * tsh[n - 1] && s2[k] == t2[n - 1] * tsh[n - 1]) {
      tsh[n - 1] *= sh[k];
      continue;
    }
    tsh[n] = sh[k]; t1[n] = s1[k]; t2[n] = s2[k]; n++;
  }
  for (int k = 0; k < n; k++) {  /* back to outermost first */
    osh[k] = tsh[n - 1 - k]; os1[k] = t1[n - 1 - k]; os2[k] = t2[n - 1 - k];
  }
  return n;
}

/* Thread t of nt gets items [*b, *e) of `items`. */
static void split(nd_i64 items, int t, int nt, nd_i64 *b, nd_i64 *e) {
  nd_i64 q = items / nt, r = items % nt;
  *b = t * q + (t < r ? t : r);
  *e = *b + q + (t < r ? 1 : 0);
}

#define ND_ODO_INIT(no, osh, oss, ods, start, so, dso, idx)                    \
  do {                                                                         \
    nd_i64 rem_ = (start);                                                     \
    for (int k_ = (no) - 1; k_ >= 0; k_--) {                                   \
      idx[k_] = rem_ % osh[k_]; rem_ /= osh[k_];                               \
      so += idx[k_] * oss[k_]; dso += idx[k_] * ods[k_];                       \
    }                                                                          \
  } while (0)

#define ND_ODO_NEXT(no, osh, oss, ods, so, dso, idx)                           \
  do {                                                                         \
    for (int k_ = (no) - 1; k_ >= 0; k_--) {                                   \
      idx[k_]++; so += oss[k_]; dso += ods[k_];                                \
      if (idx[k_] < osh[k_]) break;                                            \
      so -= oss[k_] * osh[k_]; dso -= ods[k_] * osh[k_]; idx[k_] = 0;          \
    }                                                                          \
  } while (0)

#define ND_DEF_COPY(U, NAME)                                                    \
static void NAME(const U *src, nd_i64 soff, const nd_i64 *ss_in, U *dst,        \
                 nd_i64 doff, const nd_i64 *ds_in, const nd_i64 *sh_in,         \
                 int ndim) {                                                    \
  nd_i64 sh[ND_MAX_DIMS], ss[ND_MAX_DIMS], ds[ND_MAX_DIMS];                     \
  int nd = collapse(ndim, sh_in, ss_in, ds_in, sh, ss, ds);                     \
  if (nd < 0) return;                                                           \
  if (nd == 0) { dst[doff] = src[soff]; return; }                               \
  nd_i64 total = 1;                                                             \
  for (int k = 0; k < nd; k++) total *= sh[k];                                  \
  if (nd == 1) { /* one long row: split it */                                   \
    nd_i64 L = sh[0], a = ss[0], d = ds[0];                                     \
    int nt = nd_threads_for(L, ND_COPY_GRAIN);                                  \
    _Pragma("omp parallel num_threads(nt) if(nt > 1)")                          \
    {                                                                           \
      nd_i64 b, e;                                                              \
      int t = 0, ntt = 1;                                                       \
      ND_THREAD_ID(t, ntt);                                                     \
      split(L, t, ntt, &b, &e);                                                 \
      const U *s = src + soff; U *o = dst + doff;                               \
      if (a == 1 && d == 1) memcpy(o + b, s + b, (size_t)(e - b) * sizeof(U));  \
      else if (a == 0) { U v = s[0]; for (nd_i64 i = b; i < e; i++) o[i * d] = v; } \
      else for (nd_i64 i = b; i < e; i++) o[i * d] = s[i * a];                  \
    }                                                                           \
    return;                                                                     \
  }                                                                             \
  /* the other side's unit-stride axis may be an outer one (a (B,T,D) array   \
   * viewed as (D,T,B)): bring it next to the innermost, so the tile below   \
   * applies; the outer axes may be walked in any order */                   \
  for (int k = 0; k < nd - 2; k++) {                                          \
    int src_unit = ds[nd - 1] == 1 && ss[nd - 1] != 1 && ss[k] == 1;          \
    int dst_unit = ss[nd - 1] == 1 && ds[nd - 1] != 1 && ds[k] == 1;          \
    if (!src_unit && !dst_unit) continue;                                     \
    nd_i64 h = sh[k], a = ss[k], d = ds[k];                                   \
    for (int m = k; m < nd - 2; m++) {                                        \
      sh[m] = sh[m + 1]; ss[m] = ss[m + 1]; ds[m] = ds[m + 1];                \
    }                                                                         \
    sh[nd - 2] = h; ss[nd - 2] = a; ds[nd - 2] = d;                           \
    break;                                                                    \
  }                                                                           \
  int transposed = (ss[nd - 2] == 1 && ds[nd - 1] == 1) ||                      \
                   (ds[nd - 2] == 1 && ss[nd - 1] == 1);                        \
  nd_i64 osh[ND_MAX_DIMS], oss[ND_MAX_DIMS], ods[ND_MAX_DIMS];                  \
  int no;                                                                       \
  nd_i64 R = sh[nd - 2], C = sh[nd - 1];                                        \
  nd_i64 s0 = ss[nd - 2], s1 = ss[nd - 1], d0 = ds[nd - 2], d1 = ds[nd - 1];    \
  if (transposed) { /* outer axes + one axis of TB-row tiles */                 \
    no = nd - 1;                                                                \
    for (int k = 0; k < nd - 2; k++) { osh[k] = sh[k]; oss[k] = ss[k]; ods[k] = ds[k]; } \
    osh[no - 1] = (R + TB - 1) / TB; oss[no - 1] = TB * s0; ods[no - 1] = TB * d0; \
  } else { /* outer axes; rows of length C */                                   \
    no = nd - 1;                                                                \
    for (int k = 0; k < nd - 1; k++) { osh[k] = sh[k]; oss[k] = ss[k]; ods[k] = ds[k]; } \
  }                                                                             \
  nd_i64 items = 1;                                                             \
  for (int k = 0; k < no; k++) items *= osh[k];                                 \
  int nt = nd_threads_for(total, ND_COPY_GRAIN);                                \
  if (nt > items) nt = (int)items;                                              \
  _Pragma("omp parallel num_threads(nt) if(nt > 1)")                            \
  {                                                                             \
    nd_i64 b, e, idx[ND_MAX_DIMS];                                              \
    int t = 0, ntt = 1;                                                         \
    ND_THREAD_ID(t, ntt);                                                       \
    split(items, t, ntt, &b, &e);                                               \
    nd_i64 so = soff, dso = doff;                                               \
    if (b < e) ND_ODO_INIT(no, osh, oss, ods, b, so, dso, idx);                 \
    for (nd_i64 it = b; it < e; it++) {                                         \
      const U *s = src + so; U *o = dst + dso;                                  \
      if (transposed) {                                                         \
        /* through an L1 tile: each side is walked along its unit stride.     \
         * Walking one side across its large stride touches TB lines that      \
         * share cache sets when that stride is a power of two (a (32,64,64)   \
         * array's axes 0 and 2 swapped: rows 16 KiB apart) and thrashes them: \
         * 2.7 GB/s before, against 10+ through the tile. */                   \
        U tile[TB * TB];                                                        \
        nd_i64 rr = R - idx[no - 1] * TB; if (rr > TB) rr = TB;                 \
        for (nd_i64 jb = 0; jb < C; jb += TB) {                                 \
          nd_i64 cc = C - jb < TB ? C - jb : TB;                                \
          const U *st = s + jb * s1; U *ot = o + jb * d1;                       \
          if (d1 == 1) { /* source unit stride along i, destination along j */  \
            for (nd_i64 j = 0; j < cc; j++)                                     \
              for (nd_i64 i = 0; i < rr; i++) tile[j * TB + i] = st[i + j * s1]; \
            for (nd_i64 i = 0; i < rr; i++)                                     \
              for (nd_i64 j = 0; j < cc; j++) ot[i * d0 + j] = tile[j * TB + i]; \
          } else {       /* source unit stride along j, destination along i */  \
            for (nd_i64 i = 0; i < rr; i++)                                     \
              for (nd_i64 j = 0; j < cc; j++) tile[i * TB + j] = st[i * s0 + j]; \
            for (nd_i64 j = 0; j < cc; j++)                                     \
              for (nd_i64 i = 0; i < rr; i++) ot[i + j * d1] = tile[i * TB + j]; \
          }                                                                     \
        }                                                                       \
      } else if (s1 == 1 && d1 == 1) {                                          \
        memcpy(o, s, (size_t)C * sizeof(U));                                    \
      } else if (s1 == 0) {                                                     \
        U v = s[0];                                                             \
        for (nd_i64 j = 0; j < C; j++) o[j * d1] = v;                           \
      } else {                                                                  \
        for (nd_i64 j = 0; j < C; j++) o[j * d1] = s[j * s1];                   \
      }                                                                         \
      ND_ODO_NEXT(no, osh, oss, ods, so, dso, idx);                             \
    }                                                                           \
  }                                                                             \
}

#ifdef _OPENMP
#include <omp.h>
#define ND_THREAD_ID(t, n) do { t = omp_get_thread_num(); n = omp_get_num_threads(); } while (0)
#else
#define ND_THREAD_ID(t, n) do { t = 0; n = 1; } while (0)
#endif

ND_DEF_COPY(uint32_t, copy_u32)
ND_DEF_COPY(uint64_t, copy_u64)

void nd_copy_strided(int elsize, const void *src, nd_i64 soff, const nd_i64 *src_st,
                     void *dst, nd_i64 doff, const nd_i64 *dst_st,
                     const nd_i64 *shape, int ndim) {
  if (elsize == 4) copy_u32((const uint32_t *)src, soff, src_st, (uint32_t *)dst, doff, dst_st, shape, ndim);
  else copy_u64((const uint64_t *)src, soff, src_st, (uint64_t *)dst, doff, dst_st, shape, ndim);
}

/* A strided fill is a copy from a source with all strides 0. */
void nd_set_strided(int elsize, const void *val, void *dst, nd_i64 doff,
                    const nd_i64 *dst_st, const nd_i64 *shape, int ndim) {
  nd_i64 zeros[ND_MAX_DIMS] = {0};
  nd_copy_strided(elsize, val, 0, zeros, dst, doff, dst_st, shape, ndim);
}
