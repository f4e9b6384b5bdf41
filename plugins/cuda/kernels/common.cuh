// Shared definitions, prepended by the loader (needle_cuda/_kernels.py) to every
// kernels/*.cu file before NVRTC sees it.  Header-free on purpose: NVRTC has no
// CUDA runtime headers unless they are installed, so nothing here is #included.

typedef long long i64;
typedef unsigned long long u64;

#define NDL_MAX_DIMS 8

// A strided view: element (i_0..i_{ndim-1}) lives at offset + sum_k i_k*strides[k].
// Passed by value; the host packs it as 18 int64 (needle_cuda/_launch.py).
struct StridedView {
    i64 ndim;
    i64 offset;
    i64 shape[NDL_MAX_DIMS];
    i64 strides[NDL_MAX_DIMS];
};

// Buffer index of the row-major element number `linear` of the view.  The loop
// is unrolled over the fixed maximum so the struct stays in parameter space.
template <typename I>
__device__ __forceinline__ I strided_index(const StridedView& v, I linear) {
    I idx = (I)v.offset;
#pragma unroll
    for (int d = NDL_MAX_DIMS - 1; d >= 0; --d) {
        if (d < v.ndim) {
            const I s = (I)v.shape[d];
            const I q = linear / s;
            idx += (linear - q * s) * (I)v.strides[d];
            linear = q;
        }
    }
    return idx;
}

// A small aligned bundle of V values, so that aligned loads become one vector load.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
    T v[V];
};

// Math with the right precision for each dtype (no reliance on overloads that
// only the full CUDA headers declare).
__device__ __forceinline__ float ndl_exp(float x) { return expf(x); }
__device__ __forceinline__ double ndl_exp(double x) { return exp(x); }
__device__ __forceinline__ float ndl_log(float x) { return logf(x); }
__device__ __forceinline__ double ndl_log(double x) { return log(x); }
__device__ __forceinline__ float ndl_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double ndl_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float ndl_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double ndl_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float ndl_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double ndl_pow(double x, double y) { return pow(x, y); }

// max that propagates NaN from either side, like numpy.maximum
template <typename T>
__device__ __forceinline__ T ndl_max(T a, T b) { return (a != a || a > b) ? a : b; }

// true for finite values (x - x is NaN for inf and NaN)
template <typename T>
__device__ __forceinline__ bool ndl_finite(T x) { return (x - x) == (x - x); }

struct SumOp { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; } };
struct MaxOp { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return ndl_max(a, b); } };

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// Reduce over the whole block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result.  `smem` holds 32 values; a leading barrier makes
// back-to-back calls with the same smem safe.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T identity, T* smem) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_reduce(v, op);
    __syncthreads();
    if (lane == 0) smem[wid] = v;
    __syncthreads();
    if (wid == 0) {
        T x = lane < nwarps ? smem[lane] : identity;
        x = warp_reduce(x, op);
        if (lane == 0) smem[0] = x;
    }
    __syncthreads();
    return smem[0];
}

#define NDL_TID ((i64)blockIdx.x * blockDim.x + threadIdx.x)
#define NDL_STRIDE ((i64)gridDim.x * blockDim.x)
