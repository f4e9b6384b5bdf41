/* NHWC convolution through im2col + the packed GEMM (included by conv.c).
 *
 * Shapes: x (N,H,W,Ci), w (K,K,Ci,Co) = a (K*K*Ci, Co) matrix, y (N,Ho,Wo,Co)
 * = an (N*Ho*Wo, Co) matrix.  The column matrix col[(n,oh,ow), (kh,kw,ci)]
 * is built for a chunk of whole images at a time, bounding its memory.
 *   forward:      y_chunk  = col @ w
 *   grad weight:  dw      += col^T @ g_chunk       (col^T read through strides)
 *   grad input:   dcol     = g_chunk @ w^T, then every input pixel gathers the
 *                 dcol entries it fed (no write conflicts, so parallel).
 */
#define ND_CAT_(a, b) a##b
#define ND_CAT(a, b) ND_CAT_(a, b)
#define ND_FN(name) ND_CAT(name, SUF)

#define ND_CONV_CHUNK ((nd_i64)1 << 20)  /* elements of col per chunk (4 MiB in float32: a
                                            * bounded work buffer, not a batch-sized one) */

static nd_i64 ND_FN(imgs_per_chunk_)(nd_i64 N, nd_i64 rows_per_img, nd_i64 Kd) {
  nd_i64 per = rows_per_img * Kd;
  nd_i64 c = per > 0 ? ND_CONV_CHUNK / per : N;
  if (c < 1) c = 1;
  return c < N ? c : N;
}

static void ND_FN(im2col_)(const T *x, T *col, nd_i64 n0, nd_i64 nimg, nd_i64 H, nd_i64 W,
                           nd_i64 Ci, nd_i64 K, nd_i64 s, nd_i64 pad, nd_i64 Ho, nd_i64 Wo) {
  nd_i64 Kd = K * K * Ci, rows = nimg * Ho * Wo;
  int nt = nd_threads_for(rows * Kd, 32768);
  _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")
  for (nd_i64 r = 0; r < rows; r++) {
    nd_i64 n = n0 + r / (Ho * Wo), oh = (r / Wo) % Ho, ow = r % Wo;
    T *c = col + r * Kd;
    for (nd_i64 kh = 0; kh < K; kh++) {
      nd_i64 ih = oh * s + kh - pad;
      for (nd_i64 kw = 0; kw < K; kw++) {
        nd_i64 iw = ow * s + kw - pad;
        T *dst = c + (kh * K + kw) * Ci;
        if (ih < 0 || ih >= H || iw < 0 || iw >= W) memset(dst, 0, (size_t)Ci * sizeof(T));
        else memcpy(dst, x + ((n * H + ih) * W + iw) * Ci, (size_t)Ci * sizeof(T));
      }
    }
  }
}

int ND_CAT(nd_conv_fwd_, SUF)(const T *x, const T *w, T *y, nd_i64 N, nd_i64 H, nd_i64 W,
                              nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad) {
  nd_i64 Ho = (H + 2 * pad - K) / s + 1, Wo = (W + 2 * pad - K) / s + 1;
  nd_i64 Kd = K * K * Ci, rpi = Ho * Wo;
  if (N <= 0 || Ho <= 0 || Wo <= 0 || Co <= 0) return 0;
  if (K == 1 && s == 1 && pad == 0)  /* a 1x1 convolution is one GEMM on x itself */
    return ND_CAT(nd_gemm_, SUF)(1, N * rpi, Ci, Co, x, 0, Ci, 1, w, 0, Co, 1, y, 0, Co, 0);
  nd_i64 cimg = ND_FN(imgs_per_chunk_)(N, rpi, Kd);
  T *col = (T *)nd_aligned_alloc((size_t)(cimg * rpi * Kd) * sizeof(T));
  if (!col) return -1;
  int rc = 0;
  for (nd_i64 n0 = 0; n0 < N && rc == 0; n0 += cimg) {
    nd_i64 ni = N - n0 < cimg ? N - n0 : cimg, rows = ni * rpi;
    ND_FN(im2col_)(x, col, n0, ni, H, W, Ci, K, s, pad, Ho, Wo);
    rc = ND_CAT(nd_gemm_, SUF)(1, rows, Kd, Co, col, 0, Kd, 1, w, 0, Co, 1,
                               y + n0 * rpi * Co, 0, Co, 0);
  }
  nd_aligned_free(col);
  return rc;
}

int ND_CAT(nd_conv_grad_weight_, SUF)(const T *x, const T *g, T *dw, nd_i64 N, nd_i64 H,
                                      nd_i64 W, nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s,
                                      nd_i64 pad) {
  nd_i64 Ho = (H + 2 * pad - K) / s + 1, Wo = (W + 2 * pad - K) / s + 1;
  nd_i64 Kd = K * K * Ci, rpi = Ho * Wo;
  if (N <= 0 || Ho <= 0 || Wo <= 0) {
    for (nd_i64 i = 0; i < Kd * Co; i++) dw[i] = 0;
    return 0;
  }
  if (K == 1 && s == 1 && pad == 0)
    return ND_CAT(nd_gemm_, SUF)(1, Ci, N * rpi, Co, x, 0, 1, Ci, g, 0, Co, 1, dw, 0, Co, 0);
  nd_i64 cimg = ND_FN(imgs_per_chunk_)(N, rpi, Kd);
  T *col = (T *)nd_aligned_alloc((size_t)(cimg * rpi * Kd) * sizeof(T));
  if (!col) return -1;
  int rc = 0;
  for (nd_i64 n0 = 0; n0 < N && rc == 0; n0 += cimg) {
    nd_i64 ni = N - n0 < cimg ? N - n0 : cimg, rows = ni * rpi;
    ND_FN(im2col_)(x, col, n0, ni, H, W, Ci, K, s, pad, Ho, Wo);
    rc = ND_CAT(nd_gemm_, SUF)(1, Kd, rows, Co, col, 0, 1, Kd, g + n0 * rpi * Co, 0, Co, 1,
                               dw, 0, Co, n0 > 0);
  }
  nd_aligned_free(col);
  return rc;
}

int ND_CAT(nd_conv_grad_input_, SUF)(const T *g, const T *w, T *dx, nd_i64 N, nd_i64 H,
                                     nd_i64 W, nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s,
                                     nd_i64 pad) {
  nd_i64 Ho = (H + 2 * pad - K) / s + 1, Wo = (W + 2 * pad - K) / s + 1;
  nd_i64 Kd = K * K * Ci, rpi = Ho * Wo;
  if (N <= 0 || H <= 0 || W <= 0 || Ci <= 0) return 0;
  if (Ho <= 0 || Wo <= 0) {
    memset(dx, 0, (size_t)(N * H * W * Ci) * sizeof(T));
    return 0;
  }
  if (K == 1 && s == 1 && pad == 0)
    return ND_CAT(nd_gemm_, SUF)(1, N * rpi, Co, Ci, g, 0, Co, 1, w, 0, 1, Co, dx, 0, Ci, 0);
  nd_i64 cimg = ND_FN(imgs_per_chunk_)(N, rpi, Kd);
  T *col = (T *)nd_aligned_alloc((size_t)(cimg * rpi * Kd) * sizeof(T));
  if (!col) return -1;
  int rc = 0;
  for (nd_i64 n0 = 0; n0 < N && rc == 0; n0 += cimg) {
    nd_i64 ni = N - n0 < cimg ? N - n0 : cimg, rows = ni * rpi;
    rc = ND_CAT(nd_gemm_, SUF)(1, rows, Co, Kd, g + n0 * rpi * Co, 0, Co, 1, w, 0, 1, Co,
                               col, 0, Kd, 0);
    if (rc) break;
    nd_i64 pix = ni * H * W;
    int nt = nd_threads_for(pix * K * K * Ci, 32768);
    _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")
    for (nd_i64 q = 0; q < pix; q++) {
      nd_i64 nl = q / (H * W), ih = (q / W) % H, iw = q % W;
      T *d = dx + ((n0 + nl) * H * W + ih * W + iw) * Ci;
      for (nd_i64 c = 0; c < Ci; c++) d[c] = 0;
      for (nd_i64 kh = 0; kh < K; kh++) {
        nd_i64 th = ih + pad - kh;          /* = oh * s */
        if (th < 0 || th % s) continue;
        nd_i64 oh = th / s;
        if (oh >= Ho) continue;
        for (nd_i64 kw = 0; kw < K; kw++) {
          nd_i64 tw = iw + pad - kw;
          if (tw < 0 || tw % s) continue;
          nd_i64 ow = tw / s;
          if (ow >= Wo) continue;
          const T *src = col + ((nl * Ho + oh) * Wo + ow) * Kd + (kh * K + kw) * Ci;
          _Pragma("omp simd")
          for (nd_i64 c = 0; c < Ci; c++) d[c] += src[c];
        }
      }
    }
  }
  nd_aligned_free(col);
  return rc;
}

#undef ND_FN
