// GEMM: shared-memory + register tiled, C[t] (M x N, compact) = A[t] (M x K) @ B[t] (K x N).
//
// A block computes a BM x BN tile of C with 256 threads, each owning a TM x TN
// register tile; K advances BK at a time through shared memory, with the next
// K-slice prefetched into registers while the current one is multiplied.
// Operands are read through *loaders* -- a strided view for matmul, an implicit
// im2col view for convolution -- so the same tiled kernel serves every entry
// point and convolution never materialises its column matrix.
//
// Configurations (host: needle_cuda/_launch.py gemm_config):
//   big   : BM=BN=128, BK=8, TM=TN=8  (large matrices)
//   small : BM=BN=64,  BK=8, TM=TN=4  (small or skinny ones, more blocks)

struct StridedOperand {  // element (t, r, c) at offset + t*s_batch + r*s_row + c*s_col
    i64 offset;
    i64 s_batch;
    i64 s_row;
    i64 s_col;
};

struct ConvGeom {  // NHWC input (N,H,W,C), weights (K,K,C,Cout), output (N,Ho,Wo,Cout)
    i64 N, H, W, C, K, Cout, stride, pad, Ho, Wo;
};

template <typename T>
struct LoadStrided {
    const T* p;
    StridedOperand d;
    // consecutive threads should walk the unit-stride direction to coalesce
    __device__ bool row_fastest() const { return d.s_row == 1 && d.s_col != 1; }
    __device__ T operator()(i64 t, int r, int c) const {
        return p[d.offset + t * d.s_batch + (i64)r * d.s_row + (i64)c * d.s_col];
    }
};

// im2col(m, k): m = (n, ho, wo), k = (kh, kw, ci); zero outside the input (padding)
template <typename T>
__device__ __forceinline__ T im2col_value(const T* x, const ConvGeom& g, int m, int k) {
    const int Ho = (int)g.Ho, Wo = (int)g.Wo, C = (int)g.C, K = (int)g.K;
    const int n = m / (Ho * Wo);
    const int rem = m - n * (Ho * Wo);
    const int ho = rem / Wo, wo = rem - (rem / Wo) * Wo;
    const int kh = k / (K * C);
    const int rem2 = k - kh * (K * C);
    const int kw = rem2 / C, ci = rem2 - (rem2 / C) * C;
    const int h = ho * (int)g.stride - (int)g.pad + kh;
    const int w = wo * (int)g.stride - (int)g.pad + kw;
    if (h < 0 || h >= (int)g.H || w < 0 || w >= (int)g.W) return T(0);
    return x[(((i64)n * g.H + h) * g.W + w) * g.C + ci];
}

template <typename T>
struct LoadIm2col {  // A of the forward conv: (N*Ho*Wo) x (K*K*C)
    const T* x;
    ConvGeom g;
    __device__ bool row_fastest() const { return false; }
    __device__ T operator()(i64, int m, int k) const { return im2col_value(x, g, m, k); }
};

template <typename T>
struct LoadIm2colT {  // A of the weight gradient: (K*K*C) x (N*Ho*Wo)
    const T* x;
    ConvGeom g;
    __device__ bool row_fastest() const { return true; }
    __device__ T operator()(i64, int k, int m) const { return im2col_value(x, g, m, k); }
};

template <typename T>
struct LoadGradOutCols {  // A of the input gradient: row (n,h,w), col (kh,kw,co)
    const T* go;
    ConvGeom g;
    __device__ bool row_fastest() const { return false; }
    __device__ T operator()(i64, int m, int k) const {
        const int H = (int)g.H, W = (int)g.W, K = (int)g.K, Co = (int)g.Cout, S = (int)g.stride;
        const int n = m / (H * W);
        const int rem = m - n * (H * W);
        const int h = rem / W, w = rem - (rem / W) * W;
        const int kh = k / (K * Co);
        const int rem2 = k - kh * (K * Co);
        const int kw = rem2 / Co, co = rem2 - (rem2 / Co) * Co;
        const int hn = h + (int)g.pad - kh, wn = w + (int)g.pad - kw;
        if (hn < 0 || wn < 0) return T(0);
        const int ho = hn / S, wo = wn / S;
        if (ho * S != hn || wo * S != wn || ho >= (int)g.Ho || wo >= (int)g.Wo) return T(0);
        return go[(((i64)n * g.Ho + ho) * g.Wo + wo) * g.Cout + co];
    }
};

template <typename T>
struct LoadWeightT {  // B of the input gradient: row (kh,kw,co), col ci -> w[kh,kw,ci,co]
    const T* w;
    ConvGeom g;
    __device__ bool row_fastest() const { return true; }
    __device__ T operator()(i64, int k, int ci) const {
        const int K = (int)g.K, Co = (int)g.Cout;
        const int kh = k / (K * Co);
        const int rem = k - kh * (K * Co);
        const int kw = rem / Co, co = rem - (rem / Co) * Co;
        return w[(((i64)kh * K + kw) * g.C + ci) * g.Cout + co];
    }
};

template <typename T, int BM, int BN, int BK, int TM, int TN, typename LA, typename LB>
__device__ __forceinline__ void gemm_body(const LA& la, const LB& lb, T* c, int M, int K, int N, i64 batch) {
    constexpr int V = 16 / (int)sizeof(T);  // values per 16-byte shared-memory load
    constexpr int PAD = V;                  // row padding: conflict-free transposed stores
    constexpr int NTX = BN / TN, NTY = BM / TM, NT = NTX * NTY;
    constexpr int A_LOADS = BM * BK / NT, B_LOADS = BK * BN / NT;
    static_assert(NT == 256, "gemm configs are written for 256 threads");
    static_assert(TM % V == 0 && TN % V == 0, "register tile must be a multiple of the vector width");
    static_assert((BM * BK) % NT == 0 && (BK * BN) % NT == 0, "tile loads must divide evenly");

    __shared__ __align__(16) T As[BK][BM + PAD];  // A slice, transposed: As[k][m]
    __shared__ __align__(16) T Bs[BK][BN + PAD];

    const int tid = threadIdx.x;
    const int tx = tid % NTX, ty = tid / NTX;
    const bool a_rf = la.row_fastest(), b_rf = lb.row_fastest();
    const int tilesM = (M + BM - 1) / BM, tilesN = (N + BN - 1) / BN;

    for (i64 t = blockIdx.z; t < batch; t += gridDim.z)
    for (int tm = blockIdx.x; tm < tilesM; tm += gridDim.x)
    for (int tn = blockIdx.y; tn < tilesN; tn += gridDim.y) {
        const int m0 = tm * BM, n0 = tn * BN;
        T acc[TM][TN];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
        T ra[A_LOADS], rb[B_LOADS];

#define NDL_A_COORD(l, r, kc)                                            \
    const int idx_##l = tid + (l) * NT;                                  \
    const int r = a_rf ? idx_##l % BM : idx_##l / BK;                    \
    const int kc = a_rf ? idx_##l / BM : idx_##l % BK;
#define NDL_B_COORD(l, kr, cc)                                           \
    const int idx_##l = tid + (l) * NT;                                  \
    const int kr = b_rf ? idx_##l % BK : idx_##l / BN;                   \
    const int cc = b_rf ? idx_##l / BK : idx_##l % BN;

        // fetch the K-slice starting at k0 into registers (zero outside the matrices)
        auto fetch = [&](int k0) {
#pragma unroll
            for (int l = 0; l < A_LOADS; ++l) {
                NDL_A_COORD(l, r, kc)
                const int gr = m0 + r, gk = k0 + kc;
                ra[l] = (gr < M && gk < K) ? la(t, gr, gk) : T(0);
            }
#pragma unroll
            for (int l = 0; l < B_LOADS; ++l) {
                NDL_B_COORD(l, kr, cc)
                const int gk = k0 + kr, gc = n0 + cc;
                rb[l] = (gk < K && gc < N) ? lb(t, gk, gc) : T(0);
            }
        };
        auto stash = [&]() {
#pragma unroll
            for (int l = 0; l < A_LOADS; ++l) {
                NDL_A_COORD(l, r, kc)
                As[kc][r] = ra[l];
            }
#pragma unroll
            for (int l = 0; l < B_LOADS; ++l) {
                NDL_B_COORD(l, kr, cc)
                Bs[kr][cc] = rb[l];
            }
        };
#undef NDL_A_COORD
#undef NDL_B_COORD

        fetch(0);
        stash();
        __syncthreads();
        for (int k0 = 0; k0 < K; k0 += BK) {
            const bool more = k0 + BK < K;
            if (more) fetch(k0 + BK);  // global loads in flight during the FMAs below
#pragma unroll
            for (int kk = 0; kk < BK; ++kk) {
                T fa[TM], fb[TN];
#pragma unroll
                for (int g = 0; g < TM / V; ++g) {
                    const Pack<T, V> p = *reinterpret_cast<const Pack<T, V>*>(&As[kk][g * (BM * V / TM) + ty * V]);
#pragma unroll
                    for (int v = 0; v < V; ++v) fa[g * V + v] = p.v[v];
                }
#pragma unroll
                for (int g = 0; g < TN / V; ++g) {
                    const Pack<T, V> p = *reinterpret_cast<const Pack<T, V>*>(&Bs[kk][g * (BN * V / TN) + tx * V]);
#pragma unroll
                    for (int v = 0; v < V; ++v) fb[g * V + v] = p.v[v];
                }
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < TN; ++j) acc[i][j] += fa[i] * fb[j];
            }
            __syncthreads();
            if (more) {
                stash();
                __syncthreads();
            }
        }

        T* ct = c + t * (i64)M * N;
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int row = m0 + (i / V) * (BM * V / TM) + ty * V + (i % V);
            if (row >= M) continue;
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const int col = n0 + (j / V) * (BN * V / TN) + tx * V + (j % V);
                if (col < N) ct[(i64)row * N + col] = acc[i][j];
            }
        }
        __syncthreads();  // the next tile's stash must not overwrite slices still being read
    }
}

#define NDL_GEMM_ENTRIES(T, SUF, CFG, BM, BN, BK, TM, TN)                                                  \
    extern "C" __global__ void __launch_bounds__(256)                                                    \
    matmul_strided_##SUF##_##CFG(const T* a, const T* b, T* c, int M, int K, int N, i64 batch,           \
                                 StridedOperand da, StridedOperand db) {                                 \
        LoadStrided<T> la{a, da};                                                                        \
        LoadStrided<T> lb{b, db};                                                                        \
        gemm_body<T, BM, BN, BK, TM, TN>(la, lb, c, M, K, N, batch);                                     \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(256)                                                    \
    conv_fwd_##SUF##_##CFG(const T* x, const T* w, T* out, int M, int K, int N, ConvGeom g,              \
                           StridedOperand dw) {                                                          \
        LoadIm2col<T> la{x, g};                                                                          \
        LoadStrided<T> lb{w, dw};                                                                        \
        gemm_body<T, BM, BN, BK, TM, TN>(la, lb, out, M, K, N, (i64)1);                                  \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(256)                                                    \
    conv_grad_weight_##SUF##_##CFG(const T* x, const T* go, T* out, int M, int K, int N, ConvGeom g,     \
                                   StridedOperand dg) {                                                  \
        LoadIm2colT<T> la{x, g};                                                                         \
        LoadStrided<T> lb{go, dg};                                                                       \
        gemm_body<T, BM, BN, BK, TM, TN>(la, lb, out, M, K, N, (i64)1);                                  \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(256)                                                    \
    conv_grad_input_##SUF##_##CFG(const T* go, const T* w, T* out, int M, int K, int N, ConvGeom g) {   \
        LoadGradOutCols<T> la{go, g};                                                                    \
        LoadWeightT<T> lb{w, g};                                                                         \
        gemm_body<T, BM, BN, BK, TM, TN>(la, lb, out, M, K, N, (i64)1);                                  \
    }

NDL_GEMM_ENTRIES(float, f32, big, 128, 128, 8, 8, 8)
NDL_GEMM_ENTRIES(float, f32, small, 64, 64, 8, 4, 4)
NDL_GEMM_ENTRIES(double, f64, big, 128, 128, 8, 8, 8)
NDL_GEMM_ENTRIES(double, f64, small, 64, 64, 8, 4, 4)

// Course API: matmul on tiled layouts, a (m/T, n/T, T, T), b (n/T, p/T, T, T),
// out (m/T, p/T, T, T).  One thread per output element; correctness, not speed.
template <typename T>
__device__ __forceinline__ void matmul_tiled_body(const T* a, const T* b, T* out, i64 m, i64 n, i64 p, i64 tile) {
    const i64 tt = tile * tile;
    for (i64 e = NDL_TID; e < m * p; e += NDL_STRIDE) {
        const i64 i = e / p, j = e - (e / p) * p;
        const T* arow = a + (i / tile) * (n / tile) * tt + (i % tile) * tile;
        const T* bcol = b + (j / tile) * tt + (j % tile);
        T s = T(0);
        for (i64 k = 0; k < n; ++k) s += arow[(k / tile) * tt + (k % tile)] * bcol[(k / tile) * (p / tile) * tt + (k % tile) * tile];
        out[((i / tile) * (p / tile) + j / tile) * tt + (i % tile) * tile + (j % tile)] = s;
    }
}

extern "C" __global__ void matmul_tiled_f32(const float* a, const float* b, float* out, i64 m, i64 n, i64 p, i64 tile) {
    matmul_tiled_body<float>(a, b, out, m, n, p, tile);
}
extern "C" __global__ void matmul_tiled_f64(const double* a, const double* b, double* out, i64 m, i64 n, i64 p, i64 tile) {
    matmul_tiled_body<double>(a, b, out, m, n, p, tile);
}
