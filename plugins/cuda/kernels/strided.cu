// Strided gather/scatter: compact, ewise_setitem, scalar_setitem.  The index
// type I is int when every index fits in 31 bits (cheaper division), else int64;
// the host picks (needle_cuda/_launch.py: index_bits).

template <typename T, typename I>
__device__ __forceinline__ void compact_body(const T* a, T* out, StridedView v, i64 n) {
    for (i64 i = NDL_TID; i < n; i += NDL_STRIDE) out[i] = a[strided_index<I>(v, (I)i)];
}

template <typename T, typename I>
__device__ __forceinline__ void setitem_body(const T* a, T* out, StridedView v, i64 n) {
    for (i64 i = NDL_TID; i < n; i += NDL_STRIDE) out[strided_index<I>(v, (I)i)] = a[i];
}

template <typename T, typename I>
__device__ __forceinline__ void scalar_setitem_body(T val, T* out, StridedView v, i64 n) {
    for (i64 i = NDL_TID; i < n; i += NDL_STRIDE) out[strided_index<I>(v, (I)i)] = val;
}

#define NDL_STRIDED(T, SUF, I, ISUF)                                                            \
    extern "C" __global__ void compact_##SUF##_##ISUF(const T* a, T* out, StridedView v, i64 n) { \
        compact_body<T, I>(a, out, v, n);                                                       \
    }                                                                                           \
    extern "C" __global__ void ewise_setitem_##SUF##_##ISUF(const T* a, T* out, StridedView v, i64 n) { \
        setitem_body<T, I>(a, out, v, n);                                                       \
    }                                                                                           \
    extern "C" __global__ void scalar_setitem_##SUF##_##ISUF(T val, T* out, StridedView v, i64 n) { \
        scalar_setitem_body<T, I>(val, out, v, n);                                              \
    }

NDL_STRIDED(float, f32, int, i32)
NDL_STRIDED(float, f32, i64, i64)
NDL_STRIDED(double, f64, int, i32)
NDL_STRIDED(double, f64, i64, i64)
