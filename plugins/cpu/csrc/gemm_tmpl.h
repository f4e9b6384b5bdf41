/* BLIS-style GEMM for one dtype (included by gemm.c with T, SUF, MR, NR, KC,
 * MC, NC and KERN_SIMD set).
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
 * Threads share the packed B~ and split the (ic, jr-chunk) tasks.
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
      for (int i = 0; i < MR; i++) {
        const T *ar = a + i * rs;
        for (nd_i64 k = 0; k < kc; k++) Ap[k * MR + i] = ar[k];
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

static ND_FN(kern_t_) ND_FN(pick_kernel_)(void) {
#if ND_HAVE_X86_SIMD
  if (nd_simd_avx2()) return KERN_SIMD;
#endif
  return ND_FN(kern_c_);
}

/* one MR x NR tile of C at (mr, nr) valid rows/cols */
static inline void ND_FN(tile_)(ND_FN(kern_t_) kern, nd_i64 kc, const T *Ap, const T *Bp,
                                T *C, nd_i64 ldc, int acc, nd_i64 mr, nd_i64 nr) {
  if (mr == MR && nr == NR) { kern(kc, Ap, Bp, C, ldc, acc); return; }
  T tmp[MR * NR] __attribute__((aligned(64)));
  kern(kc, Ap, Bp, tmp, NR, 0);
  for (nd_i64 i = 0; i < mr; i++)
    for (nd_i64 j = 0; j < nr; j++)
      C[i * ldc + j] = acc ? C[i * ldc + j] + tmp[i * NR + j] : tmp[i * NR + j];
}

/* C (m x p, row stride ldc) (+)= A (m x k) @ B (k x p) with nt threads.
 * bufB holds KC * round_up(min(NC, p), NR); bufA[t] holds MC_eff*KC (+MR*KC). */
static void ND_FN(gemm_one_)(nd_i64 m, nd_i64 k, nd_i64 p, const T *A, nd_i64 rsa, nd_i64 csa,
                             const T *B, nd_i64 rsb, nd_i64 csb, T *C, nd_i64 ldc, int acc,
                             int nt, T *bufB, T **bufA, nd_i64 mc_eff) {
  ND_FN(kern_t_) kern = ND_FN(pick_kernel_)();
  nd_i64 mb = (m + mc_eff - 1) / mc_eff;
  for (nd_i64 jc = 0; jc < p; jc += NC) {
    nd_i64 nc = p - jc < NC ? p - jc : NC;
    nd_i64 npanel = (nc + NR - 1) / NR;
    /* split columns too when there are fewer row blocks than threads */
    nd_i64 jchunks = 1;
    if (mb < nt) { jchunks = (nt + mb - 1) / mb; if (jchunks > npanel) jchunks = npanel; }
    nd_i64 tasks = mb * jchunks;
    for (nd_i64 pc = 0; pc < k; pc += KC) {
      nd_i64 kc = k - pc < KC ? k - pc : KC;
      int accum = acc || pc > 0;
      const T *Bk = B + pc * rsb + jc * csb;
      int ntb = nt > npanel ? (int)npanel : nt;
      _Pragma("omp parallel for num_threads(ntb) if(ntb > 1) schedule(static)")
      for (nd_i64 jp = 0; jp < npanel; jp++) {
        nd_i64 nr = nc - jp * NR < NR ? nc - jp * NR : NR;
        ND_FN(pack_b_panel_)(kc, nr, Bk + jp * NR * csb, rsb, csb, bufB + jp * NR * kc);
      }
      int ntt = nt > tasks ? (int)tasks : nt;
      _Pragma("omp parallel num_threads(ntt) if(ntt > 1)")
      {
        int tid = 0;
        ND_TID(tid);
        T *Ap = bufA[tid];
        nd_i64 packed_ib = -1;
        /* dynamic: on a busy machine a descheduled thread must not hold up the rest */
        _Pragma("omp for schedule(dynamic, 1)")
        for (nd_i64 task = 0; task < tasks; task++) {
          nd_i64 ib = task / jchunks, jcb = task % jchunks;
          nd_i64 i0 = ib * mc_eff;
          nd_i64 mc = m - i0 < mc_eff ? m - i0 : mc_eff;
          if (ib != packed_ib) {
            ND_FN(pack_a_)(mc, kc, A + i0 * rsa + pc * csa, rsa, csa, Ap);
            packed_ib = ib;
          }
          nd_i64 jp0 = jcb * npanel / jchunks, jp1 = (jcb + 1) * npanel / jchunks;
          for (nd_i64 jp = jp0; jp < jp1; jp++) {
            nd_i64 j = jp * NR;
            nd_i64 nr = nc - j < NR ? nc - j : NR;
            const T *Bp = bufB + jp * NR * kc;
            for (nd_i64 ir = 0; ir < mc; ir += MR) {
              nd_i64 mr = mc - ir < MR ? mc - ir : MR;
              ND_FN(tile_)(kern, kc, Ap + ir * kc, Bp, C + (i0 + ir) * ldc + jc + j, ldc,
                           accum, mr, nr);
            }
          }
        }
      }
    }
  }
}

static nd_i64 ND_FN(mc_for_)(nd_i64 m, int nt) {
  if (m >= MC * nt) return MC;
  nd_i64 per = (m + nt - 1) / nt;
  per = (per + MR - 1) / MR * MR;
  return per < MC ? per : MC;
}

int ND_CAT(nd_gemm_, SUF)(nd_i64 batch, nd_i64 m, nd_i64 k, nd_i64 p,
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
  nd_i64 kcap = k < KC ? k : KC;
  nd_i64 ncap = p < NC ? p : NC;
  nd_i64 bsize = kcap * ((ncap + NR - 1) / NR * NR);
  if (batch >= nt && item < ND_GEMM_BIG) {
    /* many small products: one per thread, each serial */
    nd_i64 mce = ND_FN(mc_for_)(m, 1);
    nd_i64 asize = kcap * (mce + MR);
    int ok = 1;
    _Pragma("omp parallel num_threads(nt) if(nt > 1) reduction(&&:ok)")
    {
      T *bb = (T *)nd_aligned_alloc((size_t)bsize * sizeof(T));
      T *ba = (T *)nd_aligned_alloc((size_t)asize * sizeof(T));
      if (!bb || !ba) ok = 0;
      else {
        _Pragma("omp for schedule(dynamic, 1)")
        for (nd_i64 t = 0; t < batch; t++)
          ND_FN(gemm_one_)(m, k, p, A + t * sa0, sa1, sa2, B + t * sb0, sb1, sb2, C + t * sc0,
                           ldc, acc, 1, bb, &ba, mce);
      }
      nd_aligned_free(bb);
      nd_aligned_free(ba);
    }
    return ok ? 0 : -1;
  }
  nd_i64 mce = ND_FN(mc_for_)(m, nt);
  nd_i64 asize = kcap * (mce + MR);
  T *bufB = (T *)nd_aligned_alloc((size_t)bsize * sizeof(T));
  T *bufA[ND_MAX_THREADS];
  if (nt > ND_MAX_THREADS) nt = ND_MAX_THREADS;
  int ok = bufB != NULL;
  for (int t = 0; t < nt; t++) {
    bufA[t] = (T *)nd_aligned_alloc((size_t)asize * sizeof(T));
    ok = ok && bufA[t] != NULL;
  }
  if (ok)
    for (nd_i64 t = 0; t < batch; t++)
      ND_FN(gemm_one_)(m, k, p, A + t * sa0, sa1, sa2, B + t * sb0, sb1, sb2, C + t * sc0, ldc,
                       acc, nt, bufB, bufA, mce);
  for (int t = 0; t < nt; t++) nd_aligned_free(bufA[t]);
  nd_aligned_free(bufB);
  return ok ? 0 : -1;
}

#undef ND_FN
