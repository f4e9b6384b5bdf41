/* BLIS-style GEMM for one dtype and one SIMD width (included by gemm.c with
 * T, SUF, MR, NR, KC, MC, NC, SIMD_ON() and KERN_SIMD set; KERN_DIRECT,
 * KERN_SMALL and PACK_A6 (six rows of row-major A packed with vectors) optional).  Defines static gemm_batch_<SUF>.
 *
 * Loop nest (Goto / BLIS):  jc (NC columns of B, panel in L3)
 *                            pc (KC of the inner dimension: pack B~ kc x nc)
 *                            ic (MC rows of A: pack A~ mc x kc, lives in L2)
 *                            jr (NR-column micro-panel of B~, lives in L1)
 *                            ir (MR-row micro-panel of A~) -> micro-kernel
 * The micro-kernel keeps an MR x NR block of C in registers across kc.
 * Operands are packed straight from their strides, so transposed or
 * broadcast operands cost nothing extra.  Partial tiles are zero-padded in
 * the packs and written back through a small bounce buffer.
 * Threads take independent slabs of C (see gemm_one_).
 */
#define ND_CAT_(a, b) a##b
#define ND_CAT(a, b) ND_CAT_(a, b)
#define ND_FN(name) ND_CAT(name, SUF)

/* A~: panels of MR rows, k-major inside a panel: Ap[panel][k][i] */
static void ND_FN(pack_a_)(nd_i64 mc, nd_i64 kc, const T *A, nd_i64 rs, nd_i64 cs, T *Ap) {
  for (nd_i64 i0 = 0; i0 < mc; i0 += MR) {
    nd_i64 mr = mc - i0 < MR ? mc - i0 : MR;
    const T *a = A + i0 * rs;
    if (mr == MR && cs == 1) {
      nd_i64 k0 = 0;
#ifdef PACK_A6
      if (MR == 6 && nd_simd_avx2()) k0 = PACK_A6(kc, a, rs, Ap);  /* k0 .. kc-1 left */
#endif
      for (int i = 0; i < MR; i++) {
        const T *ar = a + i * rs;
        for (nd_i64 k = k0; k < kc; k++) Ap[k * MR + i] = ar[k];
      }
    } else if (mr == MR) {
      for (nd_i64 k = 0; k < kc; k++) {
        const T *ak = a + k * cs;
        for (int i = 0; i < MR; i++) Ap[k * MR + i] = ak[i * rs];
      }
    } else {
      for (nd_i64 k = 0; k < kc; k++) {
        int i = 0;
        for (; i < mr; i++) Ap[k * MR + i] = a[i * rs + k * cs];
        for (; i < MR; i++) Ap[k * MR + i] = 0;
      }
    }
    Ap += MR * kc;
  }
}

/* One NR-column micro-panel of B~: Bp[k][j] */
static void ND_FN(pack_b_panel_)(nd_i64 kc, nd_i64 nr, const T *B, nd_i64 rs, nd_i64 cs, T *Bp) {
  if (nr == NR && cs == 1) {
    for (nd_i64 k = 0; k < kc; k++) {
      const T *bk = B + k * rs;
      for (int j = 0; j < NR; j++) Bp[k * NR + j] = bk[j];
    }
  } else if (nr == NR && rs == 1) {
    for (int j = 0; j < NR; j++) {
      const T *bj = B + j * cs;
      for (nd_i64 k = 0; k < kc; k++) Bp[k * NR + j] = bj[k];
    }
  } else {
    for (nd_i64 k = 0; k < kc; k++) {
      int j = 0;
      for (; j < nr; j++) Bp[k * NR + j] = B[k * rs + j * cs];
      for (; j < NR; j++) Bp[k * NR + j] = 0;
    }
  }
}

/* Portable micro-kernel: C[MR x NR] (+)= Ap^T Bp; gcc vectorises the j loop. */
static void ND_FN(kern_c_)(nd_i64 kc, const T *restrict Ap, const T *restrict Bp,
                           T *restrict C, nd_i64 ldc, int acc) {
  T c[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) c[i][j] = 0;
  for (nd_i64 k = 0; k < kc; k++) {
    for (int i = 0; i < MR; i++) {
      T a = Ap[k * MR + i];
      for (int j = 0; j < NR; j++) c[i][j] += a * Bp[k * NR + j];
    }
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) C[i * ldc + j] = acc ? C[i * ldc + j] + c[i][j] : c[i][j];
}

typedef void (*ND_FN(kern_t_))(nd_i64, const T *, const T *, T *, nd_i64, int);
typedef void (*ND_FN(kdirect_t_))(nd_i64, const T *, nd_i64, nd_i64, const T *, T *, nd_i64, int);

static ND_FN(kern_t_) ND_FN(pick_kernel_)(void) {
#if ND_HAVE_X86_SIMD
  if (SIMD_ON()) return KERN_SIMD;
#endif
  return ND_FN(kern_c_);
}

/* one MR x NR tile of C at (mr, nr) valid rows/cols */
static inline void ND_FN(tile_)(ND_FN(kern_t_) kern, nd_i64 kc, const T *Ap, const T *Bp,
                                T *C, nd_i64 ldc, int acc, nd_i64 mr, nd_i64 nr) {
  if (mr == MR && nr == NR) { kern(kc, Ap, Bp, C, ldc, acc); return; }
  T tmp[MR * NR] __attribute__((aligned(64)));
#ifdef KERN_HALF
  if (nr <= NR / 2 && kern == KERN_SIMD) { KERN_HALF(kc, Ap, Bp, tmp, NR, 0); } else
#endif
  kern(kc, Ap, Bp, tmp, NR, 0);
  for (nd_i64 i = 0; i < mr; i++)
    for (nd_i64 j = 0; j < nr; j++)
      C[i * ldc + j] = acc ? C[i * ldc + j] + tmp[i * NR + j] : tmp[i * NR + j];
}

/* C (m x nc, row stride ldc) (+)= A (m x kc: rows rsa, columns csa apart) @
 * B~ (kc x nc, packed in NR-column panels by pack_b_panel_): the ic / jr / ir
 * loops.  An A small enough to stay in L2 is read in place (kdirect), else
 * MC-row blocks of it are packed into bufA ((MC + MR) * KC elements). */
static void ND_FN(mul_packed_b_)(ND_FN(kern_t_) kern, ND_FN(kdirect_t_) kdirect, nd_i64 m, nd_i64 kc,
                                 nd_i64 nc, const T *A, nd_i64 rsa, nd_i64 csa, const T *bufB,
                                 T *C, nd_i64 ldc, int accum, T *bufA) {
  nd_i64 npanel = (nc + NR - 1) / NR;
  for (nd_i64 i0 = 0; i0 < m; i0 += MC) {
    nd_i64 mc = m - i0 < MC ? m - i0 : MC;
    const T *Ai = A + i0 * rsa;
    nd_i64 mfull = kdirect ? mc / MR * MR : 0;  /* rows handled in place */
    if (mfull < mc)  /* pack only the rows the direct kernel does not cover */
      ND_FN(pack_a_)(mc - mfull, kc, Ai + mfull * rsa, rsa, csa, bufA + mfull * kc);
    for (nd_i64 jp = 0; jp < npanel; jp++) {
      nd_i64 j = jp * NR;
      nd_i64 nr = nc - j < NR ? nc - j : NR;
      const T *Bp = bufB + jp * NR * kc;
      for (nd_i64 ir = 0; ir < mc; ir += MR) {
        nd_i64 mr = mc - ir < MR ? mc - ir : MR;
        T *Ct = C + (i0 + ir) * ldc + j;
        if (ir < mfull && nr == NR) {
          kdirect(kc, Ai + ir * rsa, rsa, csa, Bp, Ct, ldc, accum);
        } else if (ir < mfull) {
          T tmp[MR * NR] __attribute__((aligned(64)));
#ifdef KERN_DIRECT_HALF
          if (nr <= NR / 2 && SIMD_ON()) KERN_DIRECT_HALF(kc, Ai + ir * rsa, rsa, csa, Bp, tmp, NR, 0);
          else
#endif
          kdirect(kc, Ai + ir * rsa, rsa, csa, Bp, tmp, NR, 0);
          for (nd_i64 i = 0; i < mr; i++)
            for (nd_i64 jj = 0; jj < nr; jj++)
              Ct[i * ldc + jj] = accum ? Ct[i * ldc + jj] + tmp[i * NR + jj] : tmp[i * NR + jj];
        } else {
          ND_FN(tile_)(kern, kc, bufA + ir * kc, Bp, Ct, ldc, accum, mr, nr);
        }
      }
    }
  }
}

static ND_FN(kdirect_t_) ND_FN(pick_direct_)(nd_i64 m, nd_i64 k) {
#if defined(KERN_DIRECT) && ND_HAVE_X86_SIMD
  if (SIMD_ON() && m * k <= ND_DIRECT_A_MAX) return KERN_DIRECT;
#endif
  (void)m; (void)k;
  return NULL;
}

/* k-blocks of equal size: no short last block paying a full C load/store */
static inline nd_i64 ND_FN(k_block_)(nd_i64 k) {
  nd_i64 nkb = (k + KC - 1) / KC;
  return (k + nkb - 1) / nkb;
}

/* C (m x p, row stride ldc) (+)= A (m x k) @ B (k x p), on the calling thread.
 * bufB holds KC * round_up(min(NC, p), NR); bufA holds (MC + MR) * KC. */
static void ND_FN(gemm_serial_)(nd_i64 m, nd_i64 k, nd_i64 p, const T *A, nd_i64 rsa, nd_i64 csa,
                                const T *B, nd_i64 rsb, nd_i64 csb, T *C, nd_i64 ldc, int acc,
                                T *bufB, T *bufA) {
  ND_FN(kern_t_) kern = ND_FN(pick_kernel_)();
  ND_FN(kdirect_t_) kdirect = ND_FN(pick_direct_)(m, k);
  nd_i64 kcb = ND_FN(k_block_)(k);
  for (nd_i64 jc = 0; jc < p; jc += NC) {
    nd_i64 nc = p - jc < NC ? p - jc : NC;
    nd_i64 npanel = (nc + NR - 1) / NR;
    for (nd_i64 pc = 0; pc < k; pc += kcb) {
      nd_i64 kc = k - pc < kcb ? k - pc : kcb;
      const T *Bk = B + pc * rsb + jc * csb;
      for (nd_i64 jp = 0; jp < npanel; jp++) {
        nd_i64 nr = nc - jp * NR < NR ? nc - jp * NR : NR;
        ND_FN(pack_b_panel_)(kc, nr, Bk + jp * NR * csb, rsb, csb, bufB + jp * NR * kc);
      }
      ND_FN(mul_packed_b_)(kern, kdirect, m, kc, nc, A + pc * csa, rsa, csa, bufB, C + jc, ldc,
                           acc || pc > 0, bufA);
    }
  }
}

#ifdef _OPENMP
/* Row slabs that share one packed B~, for products whose B is large next to
 * a thread's rows and cannot be read in place (KERN_SMALL_ROWS: a transposed
 * B, one beyond L2, float64): each of two threads repacking all of B cost
 * about a third of the MLP's 128x784 @ 784x100 multiply.  The threads pack
 * B~'s panels together, multiply their own rows, and wait for each other
 * before the next k-block overwrites B~ -- two barriers a k-block, which a
 * descheduled thread makes the others wait at; hence only for few rows a
 * thread (ND_SHARED_B_ROWS), where the repacking would cost the most. */
static int ND_FN(gemm_shared_b_)(nd_i64 m, nd_i64 k, nd_i64 p, const T *A, nd_i64 rsa, nd_i64 csa,
                                 const T *B, nd_i64 rsb, nd_i64 csb, T *C, nd_i64 ldc, int acc,
                                 int nt) {
  ND_FN(kern_t_) kern = ND_FN(pick_kernel_)();
  nd_i64 kcb = ND_FN(k_block_)(k);
  nd_i64 ncap = p < NC ? p : NC;
  T *bufB = (T *)nd_aligned_alloc((size_t)(kcb * ((ncap + NR - 1) / NR * NR)) * sizeof(T));
  if (!bufB) return -1;
  nd_i64 units = (m + MR - 1) / MR;
  int ok = 1;
  _Pragma("omp parallel num_threads(nt) reduction(&&:ok)")
  {
    int t = omp_get_thread_num(), nth = omp_get_num_threads();
    nd_i64 r0 = units * t / nth * MR, r1 = units * (t + 1) / nth * MR;
    if (r1 > m) r1 = m;
    if (r0 > r1) r0 = r1;
    ND_FN(kdirect_t_) kdirect = ND_FN(pick_direct_)(r1 - r0, k);
    T *bufA = (T *)nd_aligned_alloc((size_t)((MC + MR) * KC) * sizeof(T));
    if (!bufA) ok = 0;
    for (nd_i64 jc = 0; jc < p; jc += NC) {
      nd_i64 nc = p - jc < NC ? p - jc : NC;
      nd_i64 npanel = (nc + NR - 1) / NR;
      for (nd_i64 pc = 0; pc < k; pc += kcb) {
        nd_i64 kc = k - pc < kcb ? k - pc : kcb;
        const T *Bk = B + pc * rsb + jc * csb;
        _Pragma("omp for schedule(static)")  /* ends with a barrier: B~ is whole */
        for (nd_i64 jp = 0; jp < npanel; jp++) {
          nd_i64 nr = nc - jp * NR < NR ? nc - jp * NR : NR;
          ND_FN(pack_b_panel_)(kc, nr, Bk + jp * NR * csb, rsb, csb, bufB + jp * NR * kc);
        }
        if (bufA && r1 > r0)
          ND_FN(mul_packed_b_)(kern, kdirect, r1 - r0, kc, nc, A + r0 * rsa + pc * csa, rsa, csa, bufB,
                               C + r0 * ldc + jc, ldc, acc || pc > 0, bufA);
        _Pragma("omp barrier")  /* every thread is done with B~ */
      }
    }
    nd_aligned_free(bufA);
  }
  nd_aligned_free(bufB);
  return ok ? 0 : -1;
}
#endif

#ifdef _OPENMP
/* Long products with a small C (the LSTM LM's output-layer adjoint 400x10000
 * @ 10000x100, a Transformer weight's 64x1024 @ 1024x64): each thread
 * multiplies its own range of k into its own copy of C -- packing only its
 * share of B, with no barrier -- and the copies are added afterwards.  Split
 * by rows instead, every thread packs all of B, or (gemm_shared_b_) they share
 * one packed B with two barriers a k-block -- 40 for k = 10000 -- where a
 * descheduled thread makes the others wait.  The sum's order then depends
 * on the thread count, as in OpenBLAS and MKL; it is fixed for a given one. */
#ifndef ND_SPLIT_K_RATIO
#define ND_SPLIT_K_RATIO 4              /* k >= 4 * max(m, p) */
#define ND_SPLIT_K_MAX_C ((nd_i64)1 << 18)  /* C's copies stay small to add */
#endif
static int ND_FN(gemm_split_k_)(nd_i64 m, nd_i64 k, nd_i64 p, const T *A, nd_i64 rsa, nd_i64 csa,
                                const T *B, nd_i64 rsb, nd_i64 csb, T *C, nd_i64 ldc, int acc,
                                int nt) {
  nd_i64 mp = m * p;
  T *part = (T *)nd_aligned_alloc((size_t)((nt - 1) * mp) * sizeof(T));
  if (!part) return -1;
  int ok = 1, used = nt;
  _Pragma("omp parallel num_threads(nt) reduction(&&:ok)")
  {
    int t = omp_get_thread_num(), nth = omp_get_num_threads();
    if (t == 0) used = nth;
    nd_i64 k0 = k * t / nth, k1 = k * (t + 1) / nth;
    T *Ct = t == 0 ? C : part + (t - 1) * mp;
    nd_i64 ldct = t == 0 ? ldc : p;
    int acct = t == 0 ? acc : 0;
    nd_i64 kcap = k1 - k0 < KC ? k1 - k0 : KC, ncap = p < NC ? p : NC;
    nd_i64 bsize = kcap * ((ncap + NR - 1) / NR * NR);  /* B~ for one k-block, then A~ */
    T *bufB = (T *)nd_aligned_alloc((size_t)(bsize + (MC + MR) * KC) * sizeof(T));
    if (!bufB) {
      ok = 0;
    } else if (k1 > k0) {
      T *bufA = bufB + bsize;
      ND_FN(gemm_serial_)(m, k1 - k0, p, A + k0 * csa, rsa, csa, B + k0 * rsb, rsb, csb, Ct, ldct,
                          acct, bufB, bufA);
    } else if (t > 0) {
      memset(Ct, 0, (size_t)mp * sizeof(T));
    } else if (!acc) {
      for (nd_i64 i = 0; i < m; i++) memset(C + i * ldc, 0, (size_t)p * sizeof(T));
    }
    nd_aligned_free(bufB);
  }
  if (ok)
    for (int t = 1; t < used; t++) {
      const T *src = part + (t - 1) * mp;
      for (nd_i64 i = 0; i < m; i++)
        for (nd_i64 j = 0; j < p; j++) C[i * ldc + j] += src[i * p + j];
    }
  nd_aligned_free(part);
  return ok ? 0 : -1;
}
#endif

/* Small products keep their packing buffers on the stack (no malloc). */
#define ND_STACK_ELEMS 8192
#ifndef ND_SHARED_B_ROWS
/* below this many rows a thread, a row split shares one packed B (see
 * gemm_shared_b_); from ND_SHARED_B_MIN elements of B up */
#define ND_SHARED_B_ROWS 256
#define ND_SHARED_B_MIN 16384
#endif
#ifndef ND_SLABS_PER_THREAD
/* 1: one slab a thread.  4 hid a descheduled thread's share on a loaded
 * machine but repacked B (or A) per slab: on a quiet one 1024^3 fell from
 * ~170 to ~140 GFLOP/s, so the static split stays the default. */
#define ND_SLABS_PER_THREAD 1
#define ND_SLAB_MIN 96
#endif

/* One product split into independent slabs of C (rows when C is tall,
 * columns when wide), claimed dynamically by nt threads, each packing what
 * its slab needs.  No barrier between slabs: a thread that is descheduled
 * for a while (shared machine) only does fewer of them. */
static int ND_FN(gemm_one_)(nd_i64 m, nd_i64 k, nd_i64 p, const T *A, nd_i64 rsa, nd_i64 csa,
                            const T *B, nd_i64 rsb, nd_i64 csb, T *C, nd_i64 ldc, int acc,
                            int nt) {
#ifdef KERN_SMALL
  if (KERN_SMALL(m, k, p, A, rsa, csa, B, rsb, csb, C, ldc, acc, nt) == 0) return 0;
#endif
  nd_i64 kcap = k < KC ? k : KC;
  int by_rows = m >= p;
  int few_rows = by_rows && m < (nd_i64)nt * ND_SHARED_B_ROWS;  /* few rows a thread */
#ifdef KERN_SMALL_ROWS
  /* read B in place rather than pack it (gemm_small_rows_f32) */
  if (few_rows && KERN_SMALL_ROWS(m, k, p, A, rsa, csa, B, rsb, csb, C, ldc, acc, nt) == 0)
    return 0;
#endif
#ifdef _OPENMP
  /* after the in-place path: it beats packing for row-major A (the MLP's
   * 128x784 @ 784x100: 0.95-1.04x NumPy in place, 0.70-0.87x split) */
  if (nt > 1 && k >= ND_SPLIT_K_RATIO * (m > p ? m : p) && m * p <= ND_SPLIT_K_MAX_C)
    return ND_FN(gemm_split_k_)(m, k, p, A, rsa, csa, B, rsb, csb, C, ldc, acc, nt);
  if (nt > 1 && few_rows && k * p >= ND_SHARED_B_MIN)
    return ND_FN(gemm_shared_b_)(m, k, p, A, rsa, csa, B, rsb, csb, C, ldc, acc, nt);
#endif
  nd_i64 unit = by_rows ? MR : NR, extent = by_rows ? m : p;
  nd_i64 units = (extent + unit - 1) / unit;
  if (nt > units) nt = (int)units;
  if (nt < 1) nt = 1;
  /* Slabs are claimed dynamically, up to ND_SLABS_PER_THREAD a thread: on a
   * shared machine (or next to NumPy's spinning BLAS threads) a thread that
   * waits for a core leaves its slabs to the one running instead of making
   * the call wait.  A slab keeps >= ND_SLAB_MIN rows/columns so repacking B
   * (or A) per slab stays small next to its multiply. */
  nd_i64 nslab = nt;
  if (nt > 1) {
    nd_i64 by_size = extent / ND_SLAB_MIN;
    nd_i64 most = (nd_i64)nt * ND_SLABS_PER_THREAD;
    nslab = by_size < most ? by_size : most;
    if (nslab < nt) nslab = nt;
    if (nslab > units) nslab = units;
  }
  nd_i64 slab_max = ((units + nslab - 1) / nslab) * unit;  /* widest slab */
  if (slab_max > extent) slab_max = extent;
  int ok = 1;
  _Pragma("omp parallel num_threads(nt) if(nt > 1) reduction(&&:ok)")
  {
    nd_i64 mmax = by_rows ? slab_max : m, pmax = by_rows ? p : slab_max;
    nd_i64 ncap = pmax < NC ? pmax : NC;
    nd_i64 mcap = mmax < MC ? mmax : MC;
    nd_i64 bsize = kcap * ((ncap + NR - 1) / NR * NR);
    nd_i64 asize = kcap * ((mcap + MR - 1) / MR * MR);
    T stack_buf[ND_STACK_ELEMS] __attribute__((aligned(64)));
    T *bufB, *bufA, *heap = NULL;
    nd_i64 bpad = (bsize + 15) / 16 * 16;  /* keep bufA 64-byte aligned */
    if (bpad + asize <= ND_STACK_ELEMS) bufB = stack_buf;
    else bufB = heap = (T *)nd_aligned_alloc((size_t)(bpad + asize) * sizeof(T));
    if (!bufB) ok = 0;
    bufA = bufB ? bufB + bpad : NULL;
    _Pragma("omp for schedule(dynamic, 1) nowait")
    for (nd_i64 sl = 0; sl < nslab; sl++) {
      if (!bufB) continue;  /* ok is 0: the call reports out of memory */
      nd_i64 u0 = units * sl / nslab, u1 = units * (sl + 1) / nslab;
      nd_i64 e0 = u0 * unit, e1 = u1 * unit < extent ? u1 * unit : extent;
      if (e1 <= e0) continue;
      nd_i64 mm = by_rows ? e1 - e0 : m, pp = by_rows ? p : e1 - e0;
      const T *Ab = by_rows ? A + e0 * rsa : A;
      const T *Bb = by_rows ? B : B + e0 * csb;
      T *Cb = by_rows ? C + e0 * ldc : C + e0;
      ND_FN(gemm_serial_)(mm, k, pp, Ab, rsa, csa, Bb, rsb, csb, Cb, ldc, acc, bufB, bufA);
    }
    nd_aligned_free(heap);
  }
  return ok ? 0 : -1;
}

static int ND_FN(gemm_batch_)(nd_i64 batch, nd_i64 m, nd_i64 k, nd_i64 p,
                           const T *A, nd_i64 sa0, nd_i64 sa1, nd_i64 sa2,
                           const T *B, nd_i64 sb0, nd_i64 sb1, nd_i64 sb2,
                           T *C, nd_i64 sc0, nd_i64 ldc, int acc) {
  if (batch <= 0 || m <= 0 || p <= 0) return 0;
  if (k <= 0) {
    if (!acc)
      for (nd_i64 t = 0; t < batch; t++)
        for (nd_i64 i = 0; i < m; i++) memset(C + t * sc0 + i * ldc, 0, (size_t)p * sizeof(T));
    return 0;
  }
  nd_i64 item = m * k * p;
  int nt = nd_threads_for(batch * item, ND_GEMM_GRAIN);
  if (batch > 1 && batch >= nt && item < ND_GEMM_BIG) {
    /* many small products: whole products per thread, each serial; handed
     * out dynamically so a descheduled thread (shared machine) does not
     * hold a static half of the batch */
    int ok = 1;
    _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(dynamic, 1) reduction(&&:ok)")
    for (nd_i64 t = 0; t < batch; t++)
      ok = ND_FN(gemm_one_)(m, k, p, A + t * sa0, sa1, sa2, B + t * sb0, sb1, sb2,
                            C + t * sc0, ldc, acc, 1) == 0 && ok;
    return ok ? 0 : -1;
  }
#ifdef KERN_SMALL
  /* a lone small product still splits its rows when it is worth a fork */
  if (nt == 1 && item <= ND_SMALL_MAX) nt = nd_threads_for(batch * item, ND_SMALL_SPLIT);
#endif
  int rc = 0;
  for (nd_i64 t = 0; t < batch && rc == 0; t++)
    rc = ND_FN(gemm_one_)(m, k, p, A + t * sa0, sa1, sa2, B + t * sb0, sb1, sb2, C + t * sc0,
                          ldc, acc, nt);
  return rc;
}

#undef ND_FN
