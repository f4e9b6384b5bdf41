// Row reductions of a compact (rows, R) array: out[r] = op(a[r, :]).
// *_warp: one warp per row (short rows); *_block: one block per row (long rows).
// Rows are visited with grid-stride loops, so any row count works.

template <typename T, typename Op>
__device__ __forceinline__ void reduce_warp_body(const T* a, T* out, i64 rows, i64 R, Op op, T identity) {
    const int lane = threadIdx.x & 31;
    const i64 warp = NDL_TID >> 5, nwarps = NDL_STRIDE >> 5;
    for (i64 r = warp; r < rows; r += nwarps) {
        const T* row = a + r * R;
        T acc = identity;
        for (i64 j = lane; j < R; j += 32) acc = op(acc, row[j]);
        acc = warp_reduce(acc, op);
        if (lane == 0) out[r] = acc;
    }
}

template <typename T, typename Op>
__device__ __forceinline__ void reduce_block_body(const T* a, T* out, i64 rows, i64 R, Op op, T identity, T* smem) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = a + r * R;
        T acc = identity;
        for (i64 j = threadIdx.x; j < R; j += blockDim.x) acc = op(acc, row[j]);
        acc = block_reduce(acc, op, identity, smem);
        if (threadIdx.x == 0) out[r] = acc;
    }
}

// max starts from -inf written as a bit pattern (no INFINITY macro without headers)
__device__ __forceinline__ float neg_inf(float) { return __int_as_float(0xff800000); }
__device__ __forceinline__ double neg_inf(double) { return __longlong_as_double(0xfff0000000000000ULL); }

#define NDL_REDUCE(T, SUF)                                                                      \
    extern "C" __global__ void reduce_sum_warp_##SUF(const T* a, T* out, i64 rows, i64 R) {    \
        reduce_warp_body<T>(a, out, rows, R, SumOp(), T(0));                                   \
    }                                                                                           \
    extern "C" __global__ void reduce_max_warp_##SUF(const T* a, T* out, i64 rows, i64 R) {    \
        reduce_warp_body<T>(a, out, rows, R, MaxOp(), neg_inf(T(0)));                          \
    }                                                                                           \
    extern "C" __global__ void reduce_sum_block_##SUF(const T* a, T* out, i64 rows, i64 R) {   \
        __shared__ T smem[32];                                                                  \
        reduce_block_body<T>(a, out, rows, R, SumOp(), T(0), smem);                            \
    }                                                                                           \
    extern "C" __global__ void reduce_max_block_##SUF(const T* a, T* out, i64 rows, i64 R) {   \
        __shared__ T smem[32];                                                                  \
        reduce_block_body<T>(a, out, rows, R, MaxOp(), neg_inf(T(0)), smem);                   \
    }

NDL_REDUCE(float, f32)
NDL_REDUCE(double, f64)
