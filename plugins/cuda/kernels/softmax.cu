// Fused row-wise logsumexp and softmax on a compact (rows, R) array, max
// subtracted for stability.  logsumexp shifts a row whose max is not finite
// by 0 instead, so all -inf gives -inf and a +inf gives +inf (as NumPy and
// torch) rather than NaN.  softmax keeps the max as the shift, so such a row
// is NaN throughout, as torch.softmax and scipy's softmax.
// *_warp: one warp per row; *_block: one block per row.

template <typename T>
__device__ __forceinline__ T shift_of(T m) { return ndl_finite(m) ? m : T(0); }

__device__ __forceinline__ float sm_neg_inf(float) { return __int_as_float(0xff800000); }
__device__ __forceinline__ double sm_neg_inf(double) { return __longlong_as_double(0xfff0000000000000ULL); }

template <typename T, bool SOFTMAX>
__device__ __forceinline__ void rowwise_warp(const T* a, T* out, i64 rows, i64 R) {
    const int lane = threadIdx.x & 31;
    const i64 warp = NDL_TID >> 5, nwarps = NDL_STRIDE >> 5;
    for (i64 r = warp; r < rows; r += nwarps) {
        const T* row = a + r * R;
        T m = sm_neg_inf(T(0));
        for (i64 j = lane; j < R; j += 32) m = ndl_max(m, row[j]);
        m = warp_reduce(m, MaxOp());
        const T shift = SOFTMAX ? m : shift_of(m);
        T s = T(0);
        for (i64 j = lane; j < R; j += 32) s += ndl_exp(row[j] - shift);
        s = warp_reduce(s, SumOp());
        if (SOFTMAX) {
            const T inv = T(1) / s;
            for (i64 j = lane; j < R; j += 32) out[r * R + j] = ndl_exp(row[j] - shift) * inv;
        } else if (lane == 0) {
            out[r] = shift + ndl_log(s);
        }
    }
}

template <typename T, bool SOFTMAX>
__device__ __forceinline__ void rowwise_block(const T* a, T* out, i64 rows, i64 R, T* smem) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = a + r * R;
        T m = sm_neg_inf(T(0));
        for (i64 j = threadIdx.x; j < R; j += blockDim.x) m = ndl_max(m, row[j]);
        m = block_reduce(m, MaxOp(), sm_neg_inf(T(0)), smem);
        const T shift = SOFTMAX ? m : shift_of(m);
        T s = T(0);
        for (i64 j = threadIdx.x; j < R; j += blockDim.x) s += ndl_exp(row[j] - shift);
        s = block_reduce(s, SumOp(), T(0), smem);
        if (SOFTMAX) {
            const T inv = T(1) / s;
            for (i64 j = threadIdx.x; j < R; j += blockDim.x) out[r * R + j] = ndl_exp(row[j] - shift) * inv;
        } else if (threadIdx.x == 0) {
            out[r] = shift + ndl_log(s);
        }
    }
}

#define NDL_ROWWISE(T, SUF)                                                                     \
    extern "C" __global__ void logsumexp_warp_##SUF(const T* a, T* out, i64 rows, i64 R) {     \
        rowwise_warp<T, false>(a, out, rows, R);                                               \
    }                                                                                           \
    extern "C" __global__ void softmax_warp_##SUF(const T* a, T* out, i64 rows, i64 R) {       \
        rowwise_warp<T, true>(a, out, rows, R);                                                \
    }                                                                                           \
    extern "C" __global__ void logsumexp_block_##SUF(const T* a, T* out, i64 rows, i64 R) {    \
        __shared__ T smem[32];                                                                  \
        rowwise_block<T, false>(a, out, rows, R, smem);                                        \
    }                                                                                           \
    extern "C" __global__ void softmax_block_##SUF(const T* a, T* out, i64 rows, i64 R) {      \
        __shared__ T smem[32];                                                                  \
        rowwise_block<T, true>(a, out, rows, R, smem);                                         \
    }

NDL_ROWWISE(float, f32)
NDL_ROWWISE(double, f64)
