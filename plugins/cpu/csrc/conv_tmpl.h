/* NHWC convolution through im2col + the packed GEMM (included by conv.c).
 *
 * Shapes: x (N,H,W,Ci), w (K,K,Ci,Co) = a (K*K*Ci, Co) matrix, y (N,Ho,Wo,Co)
 * = an (N*Ho*Wo, Co) matrix.  The column matrix col[(n,oh,ow), (kh,kw,ci)]
 * is built for a chunk of whole images at a time, bounding its memory, over
 * the live taps only (live_taps_ below: taps that read nothing but padding
 * on a small map are left out of col, of w's rows and of the products).
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

/* The taps that can touch the input.  A tap row kh reads input rows
 * oh*s + kh - pad for oh in [0, Ho); when none of them lies in [0, H) the
 * whole tap row only ever reads padding and contributes nothing.  Small
 * late feature maps lose most taps this way: a 3x3 conv with padding 1 on a
 * 1x1 map has only its centre tap live (ResNet9's last residual block spent
 * 9x the arithmetic on zeros), a stride-2 conv from 2x2 to 1x1 keeps 4 of 9.
 * The live taps form a window [h0, h0+Kh) x [w0, w0+Kw) of the K x K kernel. */
typedef struct {
  nd_i64 h0, Kh, w0, Kw;
} ND_FN(taps_t_);

static nd_i64 ND_FN(live_lo_)(nd_i64 s, nd_i64 pad, nd_i64 Ho) {
  nd_i64 lo = pad - (Ho - 1) * s; /* the last output row reads row (Ho-1)*s + k - pad >= 0 */
  return lo > 0 ? lo : 0;
}

static nd_i64 ND_FN(live_hi_)(nd_i64 K, nd_i64 pad, nd_i64 H) {
  nd_i64 hi = H - 1 + pad; /* the first output row reads row k - pad <= H - 1 */
  return hi < K - 1 ? hi : K - 1;
}

static ND_FN(taps_t_) ND_FN(live_taps_)(nd_i64 H, nd_i64 W, nd_i64 K, nd_i64 s, nd_i64 pad,
                                       nd_i64 Ho, nd_i64 Wo) {
  ND_FN(taps_t_) t;
  t.h0 = ND_FN(live_lo_)(s, pad, Ho);
  t.Kh = ND_FN(live_hi_)(K, pad, H) - t.h0 + 1;
  t.w0 = ND_FN(live_lo_)(s, pad, Wo);
  t.Kw = ND_FN(live_hi_)(K, pad, W) - t.w0 + 1;
  /* a padding wider than the kernel can leave no live tap at all (K 3,
   * padding 5, stride 20 on a 1x1 map): then the output is all zeros */
  if (t.Kh < 0) t.Kh = 0;
  if (t.Kw < 0) t.Kw = 0;
  return t;
}

static int ND_FN(all_taps_)(ND_FN(taps_t_) t, nd_i64 K) { return t.Kh == K && t.Kw == K; }

static int ND_FN(no_taps_)(ND_FN(taps_t_) t) { return t.Kh == 0 || t.Kw == 0; }

/* the weight rows of the live taps, (Kh*Kw*Ci, Co) row-major: w itself when
 * every tap is live, else a copy (the caller frees it when it differs from w) */
static T *ND_FN(live_weights_)(const T *w, ND_FN(taps_t_) t, nd_i64 K, nd_i64 Ci, nd_i64 Co) {
  if (ND_FN(all_taps_)(t, K)) return (T *)w;
  nd_i64 run = t.Kw * Ci * Co; /* one tap row's live taps are contiguous in w */
  T *wl = (T *)nd_aligned_alloc((size_t)(t.Kh * run) * sizeof(T));
  if (!wl) return NULL;
  for (nd_i64 i = 0; i < t.Kh; i++)
    memcpy(wl + i * run, w + ((t.h0 + i) * K + t.w0) * Ci * Co, (size_t)run * sizeof(T));
  return wl;
}

/* col[(n,oh,ow), (kh,kw,ci)] over the live taps: Kd = Kh*Kw*Ci columns */
static void ND_FN(im2col_)(const T *x, T *col, nd_i64 n0, nd_i64 nimg, nd_i64 H, nd_i64 W,
                           nd_i64 Ci, ND_FN(taps_t_) t, nd_i64 s, nd_i64 pad, nd_i64 Ho,
                           nd_i64 Wo) {
  nd_i64 row_len = t.Kw * Ci, Kd = t.Kh * row_len, rows = nimg * Ho * Wo;
  int nt = nd_threads_for(rows * Kd, 32768);
  _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")
  for (nd_i64 r = 0; r < rows; r++) {
    nd_i64 n = n0 + r / (Ho * Wo), oh = (r / Wo) % Ho, ow = r % Wo;
    nd_i64 iw0 = ow * s + t.w0 - pad; /* input column of the first live tap */
    int inside = iw0 >= 0 && iw0 + t.Kw <= W;
    T *c = col + r * Kd;
    for (nd_i64 i = 0; i < t.Kh; i++) {
      nd_i64 ih = oh * s + t.h0 + i - pad;
      T *dst = c + i * row_len;
      if (ih < 0 || ih >= H) {
        memset(dst, 0, (size_t)row_len * sizeof(T));
      } else if (inside) {
        /* the tap row's pixels are adjacent in NHWC: one copy, not Kw
         * (the first layer's 3-channel taps are 12 bytes each) */
        memcpy(dst, x + ((n * H + ih) * W + iw0) * Ci, (size_t)row_len * sizeof(T));
      } else {
        for (nd_i64 j = 0; j < t.Kw; j++) {
          nd_i64 iw = iw0 + j;
          if (iw < 0 || iw >= W) memset(dst + j * Ci, 0, (size_t)Ci * sizeof(T));
          else memcpy(dst + j * Ci, x + ((n * H + ih) * W + iw) * Ci, (size_t)Ci * sizeof(T));
        }
      }
    }
  }
}

int ND_CAT(nd_conv_fwd_, SUF)(const T *x, const T *w, T *y, nd_i64 N, nd_i64 H, nd_i64 W,
                              nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s, nd_i64 pad) {
  nd_i64 Ho = (H + 2 * pad - K) / s + 1, Wo = (W + 2 * pad - K) / s + 1;
  nd_i64 rpi = Ho * Wo;
  if (N <= 0 || Ho <= 0 || Wo <= 0 || Co <= 0) return 0;
  if (K == 1 && s == 1 && pad == 0)  /* a 1x1 convolution is one GEMM on x itself */
    return ND_CAT(nd_gemm_, SUF)(1, N * rpi, Ci, Co, x, 0, Ci, 1, w, 0, Co, 1, y, 0, Co, 0);
  ND_FN(taps_t_) t = ND_FN(live_taps_)(H, W, K, s, pad, Ho, Wo);
  if (ND_FN(no_taps_)(t)) {
    memset(y, 0, (size_t)(N * rpi * Co) * sizeof(T));
    return 0;
  }
  nd_i64 Kd = t.Kh * t.Kw * Ci;
  nd_i64 cimg = ND_FN(imgs_per_chunk_)(N, rpi, Kd);
  T *wl = ND_FN(live_weights_)(w, t, K, Ci, Co);
  T *col = (T *)nd_aligned_alloc((size_t)(cimg * rpi * Kd) * sizeof(T));
  int rc = (!wl || !col) ? -1 : 0;
  for (nd_i64 n0 = 0; n0 < N && rc == 0; n0 += cimg) {
    nd_i64 ni = N - n0 < cimg ? N - n0 : cimg, rows = ni * rpi;
    ND_FN(im2col_)(x, col, n0, ni, H, W, Ci, t, s, pad, Ho, Wo);
    rc = ND_CAT(nd_gemm_, SUF)(1, rows, Kd, Co, col, 0, Kd, 1, wl, 0, Co, 1,
                               y + n0 * rpi * Co, 0, Co, 0);
  }
  if (wl && wl != w) nd_aligned_free(wl);
  nd_aligned_free(col);
  return rc;
}

int ND_CAT(nd_conv_grad_weight_, SUF)(const T *x, const T *g, T *dw, nd_i64 N, nd_i64 H,
                                      nd_i64 W, nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s,
                                      nd_i64 pad) {
  nd_i64 Ho = (H + 2 * pad - K) / s + 1, Wo = (W + 2 * pad - K) / s + 1;
  nd_i64 rpi = Ho * Wo;
  if (N <= 0 || Ho <= 0 || Wo <= 0) {
    for (nd_i64 i = 0; i < K * K * Ci * Co; i++) dw[i] = 0;
    return 0;
  }
  if (K == 1 && s == 1 && pad == 0)
    return ND_CAT(nd_gemm_, SUF)(1, Ci, N * rpi, Co, x, 0, 1, Ci, g, 0, Co, 1, dw, 0, Co, 0);
  ND_FN(taps_t_) t = ND_FN(live_taps_)(H, W, K, s, pad, Ho, Wo);
  if (ND_FN(no_taps_)(t)) {
    memset(dw, 0, (size_t)(K * K * Ci * Co) * sizeof(T));
    return 0;
  }
  int all = ND_FN(all_taps_)(t, K);
  nd_i64 Kd = t.Kh * t.Kw * Ci;
  nd_i64 cimg = ND_FN(imgs_per_chunk_)(N, rpi, Kd);
  /* the live taps' gradient, scattered into dw below (the dead taps' is 0) */
  T *dwl = all ? dw : (T *)nd_aligned_alloc((size_t)(Kd * Co) * sizeof(T));
  T *col = (T *)nd_aligned_alloc((size_t)(cimg * rpi * Kd) * sizeof(T));
  int rc = (!dwl || !col) ? -1 : 0;
  for (nd_i64 n0 = 0; n0 < N && rc == 0; n0 += cimg) {
    nd_i64 ni = N - n0 < cimg ? N - n0 : cimg, rows = ni * rpi;
    ND_FN(im2col_)(x, col, n0, ni, H, W, Ci, t, s, pad, Ho, Wo);
    rc = ND_CAT(nd_gemm_, SUF)(1, Kd, rows, Co, col, 0, 1, Kd, g + n0 * rpi * Co, 0, Co, 1,
                               dwl, 0, Co, n0 > 0);
  }
  if (!all && dwl) {
    if (rc == 0) {
      nd_i64 run = t.Kw * Ci * Co;
      memset(dw, 0, (size_t)(K * K * Ci * Co) * sizeof(T));
      for (nd_i64 i = 0; i < t.Kh; i++)
        memcpy(dw + ((t.h0 + i) * K + t.w0) * Ci * Co, dwl + i * run, (size_t)run * sizeof(T));
    }
    nd_aligned_free(dwl);
  }
  nd_aligned_free(col);
  return rc;
}

int ND_CAT(nd_conv_grad_input_, SUF)(const T *g, const T *w, T *dx, nd_i64 N, nd_i64 H,
                                     nd_i64 W, nd_i64 Ci, nd_i64 K, nd_i64 Co, nd_i64 s,
                                     nd_i64 pad) {
  nd_i64 Ho = (H + 2 * pad - K) / s + 1, Wo = (W + 2 * pad - K) / s + 1;
  nd_i64 rpi = Ho * Wo;
  if (N <= 0 || H <= 0 || W <= 0 || Ci <= 0) return 0;
  if (Ho <= 0 || Wo <= 0) {
    memset(dx, 0, (size_t)(N * H * W * Ci) * sizeof(T));
    return 0;
  }
  if (K == 1 && s == 1 && pad == 0)
    return ND_CAT(nd_gemm_, SUF)(1, N * rpi, Co, Ci, g, 0, Co, 1, w, 0, 1, Co, dx, 0, Ci, 0);
  ND_FN(taps_t_) t = ND_FN(live_taps_)(H, W, K, s, pad, Ho, Wo);
  if (ND_FN(no_taps_)(t)) {
    memset(dx, 0, (size_t)(N * H * W * Ci) * sizeof(T));
    return 0;
  }
  nd_i64 Kd = t.Kh * t.Kw * Ci;
  nd_i64 cimg = ND_FN(imgs_per_chunk_)(N, rpi, Kd);
  T *wl = ND_FN(live_weights_)(w, t, K, Ci, Co);
  T *col = (T *)nd_aligned_alloc((size_t)(cimg * rpi * Kd) * sizeof(T));
  int rc = (!wl || !col) ? -1 : 0;
  for (nd_i64 n0 = 0; n0 < N && rc == 0; n0 += cimg) {
    nd_i64 ni = N - n0 < cimg ? N - n0 : cimg, rows = ni * rpi;
    rc = ND_CAT(nd_gemm_, SUF)(1, rows, Co, Kd, g + n0 * rpi * Co, 0, Co, 1, wl, 0, 1, Co,
                               col, 0, Kd, 0);
    if (rc) break;
    nd_i64 pix = ni * H * W;
    int nt = nd_threads_for(pix * Kd, 32768);
    _Pragma("omp parallel for num_threads(nt) if(nt > 1) schedule(static)")
    for (nd_i64 q = 0; q < pix; q++) {
      nd_i64 nl = q / (H * W), ih = (q / W) % H, iw = q % W;
      T *d = dx + ((n0 + nl) * H * W + ih * W + iw) * Ci;
      for (nd_i64 c = 0; c < Ci; c++) d[c] = 0;
      for (nd_i64 i = 0; i < t.Kh; i++) {
        nd_i64 th = ih + pad - (t.h0 + i);          /* = oh * s */
        if (th < 0 || th % s) continue;
        nd_i64 oh = th / s;
        if (oh >= Ho) continue;
        for (nd_i64 j = 0; j < t.Kw; j++) {
          nd_i64 tw = iw + pad - (t.w0 + j);
          if (tw < 0 || tw % s) continue;
          nd_i64 ow = tw / s;
          if (ow >= Wo) continue;
          const T *src = col + ((nl * Ho + oh) * Wo + ow) * Kd + (i * t.Kw + j) * Ci;
          _Pragma("omp simd")
          for (nd_i64 c = 0; c < Ci; c++) d[c] += src[c];
        }
      }
    }
  }
  if (wl && wl != w) nd_aligned_free(wl);
  nd_aligned_free(col);
  return rc;
}

#undef ND_FN
