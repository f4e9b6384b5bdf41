// Element-wise, scalar and fill kernels on compact buffers: grid-stride loops,
// 16-byte vector loads when the host says every pointer is 16-byte aligned.
// Also rand_uniform, which fills a compact buffer from a seed.
// Exported names: <op>_f32 / <op>_f64 (see needle_cuda/_kernels.py).

struct OpAdd { template <typename T> __device__ T operator()(T a, T b) const { return a + b; } };
struct OpSub { template <typename T> __device__ T operator()(T a, T b) const { return a - b; } };
struct OpMul { template <typename T> __device__ T operator()(T a, T b) const { return a * b; } };
struct OpDiv { template <typename T> __device__ T operator()(T a, T b) const { return a / b; } };
struct OpRDiv { template <typename T> __device__ T operator()(T a, T b) const { return b / a; } };
struct OpPow { template <typename T> __device__ T operator()(T a, T b) const { return ndl_pow(a, b); } };
struct OpMax { template <typename T> __device__ T operator()(T a, T b) const { return ndl_max(a, b); } };
struct OpEq { template <typename T> __device__ T operator()(T a, T b) const { return a == b ? T(1) : T(0); } };
struct OpGe { template <typename T> __device__ T operator()(T a, T b) const { return a >= b ? T(1) : T(0); } };
// g * (a > 0): keeps numpy's NaN behaviour for a NaN gradient
struct OpReluGrad { template <typename T> __device__ T operator()(T a, T g) const { return g * (a > T(0) ? T(1) : T(0)); } };

struct OpNeg { template <typename T> __device__ T operator()(T a) const { return -a; } };
struct OpLog { template <typename T> __device__ T operator()(T a) const { return ndl_log(a); } };
struct OpExp { template <typename T> __device__ T operator()(T a) const { return ndl_exp(a); } };
struct OpSqrt { template <typename T> __device__ T operator()(T a) const { return ndl_sqrt(a); } };
struct OpTanh { template <typename T> __device__ T operator()(T a) const { return ndl_tanh(a); } };

template <typename T, typename Op>
__device__ __forceinline__ void binary_body(const T* a, const T* b, T* out, i64 n, int vec, Op op) {
    constexpr int V = 16 / sizeof(T);
    i64 start = 0;
    if (vec) {
        const i64 nv = n / V;
        const Pack<T, V>* av = reinterpret_cast<const Pack<T, V>*>(a);
        const Pack<T, V>* bv = reinterpret_cast<const Pack<T, V>*>(b);
        Pack<T, V>* ov = reinterpret_cast<Pack<T, V>*>(out);
        for (i64 i = NDL_TID; i < nv; i += NDL_STRIDE) {
            const Pack<T, V> x = av[i], y = bv[i];
            Pack<T, V> r;
#pragma unroll
            for (int k = 0; k < V; ++k) r.v[k] = op(x.v[k], y.v[k]);
            ov[i] = r;
        }
        start = nv * V;
    }
    for (i64 i = start + NDL_TID; i < n; i += NDL_STRIDE) out[i] = op(a[i], b[i]);
}

template <typename T, typename Op>
__device__ __forceinline__ void scalar_body(const T* a, T val, T* out, i64 n, int vec, Op op) {
    constexpr int V = 16 / sizeof(T);
    i64 start = 0;
    if (vec) {
        const i64 nv = n / V;
        const Pack<T, V>* av = reinterpret_cast<const Pack<T, V>*>(a);
        Pack<T, V>* ov = reinterpret_cast<Pack<T, V>*>(out);
        for (i64 i = NDL_TID; i < nv; i += NDL_STRIDE) {
            const Pack<T, V> x = av[i];
            Pack<T, V> r;
#pragma unroll
            for (int k = 0; k < V; ++k) r.v[k] = op(x.v[k], val);
            ov[i] = r;
        }
        start = nv * V;
    }
    for (i64 i = start + NDL_TID; i < n; i += NDL_STRIDE) out[i] = op(a[i], val);
}

template <typename T, typename Op>
__device__ __forceinline__ void unary_body(const T* a, T* out, i64 n, int vec, Op op) {
    constexpr int V = 16 / sizeof(T);
    i64 start = 0;
    if (vec) {
        const i64 nv = n / V;
        const Pack<T, V>* av = reinterpret_cast<const Pack<T, V>*>(a);
        Pack<T, V>* ov = reinterpret_cast<Pack<T, V>*>(out);
        for (i64 i = NDL_TID; i < nv; i += NDL_STRIDE) {
            const Pack<T, V> x = av[i];
            Pack<T, V> r;
#pragma unroll
            for (int k = 0; k < V; ++k) r.v[k] = op(x.v[k]);
            ov[i] = r;
        }
        start = nv * V;
    }
    for (i64 i = start + NDL_TID; i < n; i += NDL_STRIDE) out[i] = op(a[i]);
}

template <typename T>
__device__ __forceinline__ void fill_body(T* out, T val, i64 n, int vec) {
    constexpr int V = 16 / sizeof(T);
    i64 start = 0;
    if (vec) {
        const i64 nv = n / V;
        Pack<T, V> r;
#pragma unroll
        for (int k = 0; k < V; ++k) r.v[k] = val;
        Pack<T, V>* ov = reinterpret_cast<Pack<T, V>*>(out);
        for (i64 i = NDL_TID; i < nv; i += NDL_STRIDE) ov[i] = r;
        start = nv * V;
    }
    for (i64 i = start + NDL_TID; i < n; i += NDL_STRIDE) out[i] = val;
}

#define NDL_BINARY(name, Op)                                                                  \
    extern "C" __global__ void name##_f32(const float* a, const float* b, float* out, i64 n, int vec) { \
        binary_body<float>(a, b, out, n, vec, Op());                                          \
    }                                                                                         \
    extern "C" __global__ void name##_f64(const double* a, const double* b, double* out, i64 n, int vec) { \
        binary_body<double>(a, b, out, n, vec, Op());                                         \
    }

#define NDL_SCALAR(name, Op)                                                                  \
    extern "C" __global__ void name##_f32(const float* a, float val, float* out, i64 n, int vec) { \
        scalar_body<float>(a, val, out, n, vec, Op());                                        \
    }                                                                                         \
    extern "C" __global__ void name##_f64(const double* a, double val, double* out, i64 n, int vec) { \
        scalar_body<double>(a, val, out, n, vec, Op());                                       \
    }

#define NDL_UNARY(name, Op)                                                                   \
    extern "C" __global__ void name##_f32(const float* a, float* out, i64 n, int vec) {      \
        unary_body<float>(a, out, n, vec, Op());                                              \
    }                                                                                         \
    extern "C" __global__ void name##_f64(const double* a, double* out, i64 n, int vec) {    \
        unary_body<double>(a, out, n, vec, Op());                                             \
    }

NDL_BINARY(ewise_add, OpAdd)
NDL_BINARY(ewise_sub, OpSub)
NDL_BINARY(ewise_mul, OpMul)
NDL_BINARY(ewise_div, OpDiv)
NDL_BINARY(ewise_pow, OpPow)
NDL_BINARY(ewise_maximum, OpMax)
NDL_BINARY(ewise_eq, OpEq)
NDL_BINARY(ewise_ge, OpGe)
NDL_BINARY(ewise_relu_grad, OpReluGrad)

NDL_SCALAR(scalar_add, OpAdd)
NDL_SCALAR(scalar_sub, OpSub)
NDL_SCALAR(scalar_mul, OpMul)
NDL_SCALAR(scalar_div, OpDiv)
NDL_SCALAR(scalar_rdiv, OpRDiv)
NDL_SCALAR(scalar_power, OpPow)
NDL_SCALAR(scalar_maximum, OpMax)
NDL_SCALAR(scalar_eq, OpEq)
NDL_SCALAR(scalar_ge, OpGe)

NDL_UNARY(ewise_neg, OpNeg)
NDL_UNARY(ewise_log, OpLog)
NDL_UNARY(ewise_exp, OpExp)
NDL_UNARY(ewise_tanh, OpTanh)
NDL_UNARY(ewise_sqrt, OpSqrt)

extern "C" __global__ void fill_f32(float* out, float val, i64 n, int vec) { fill_body<float>(out, val, n, vec); }
extern "C" __global__ void fill_f64(double* out, double val, i64 n, int vec) { fill_body<double>(out, val, n, vec); }

// ---- rand_uniform (op override): the counter-based generator the protocol fixes
// (OP_OVERRIDE_SIGNATURES["rand_uniform"]), bit for bit, so that a mask drawn here
// from a seed equals the one every other backend draws from it.  Element i depends
// only on (seed, i): no state to carry between launches, and a captured CUDA graph
// replays a fresh draw for whatever seed the next launch passes.
// The block between the [ndl-rng] markers is compiled on the host by the tests
// (tests/cuda/test_cuda_rand_uniform.py) and compared with a NumPy model of the spec.
// [ndl-rng]
__device__ __forceinline__ u64 ndl_splitmix64_mix(u64 z) {
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z;
}
// the top 24 (53) bits as a multiple of 2^-24 (2^-53): exact, and always < 1
__device__ __forceinline__ float ndl_u01_f32(u64 z) { return (float)(z >> 40) * 5.9604644775390625e-08f; }
__device__ __forceinline__ double ndl_u01_f64(u64 z) { return (double)(z >> 11) * 1.1102230246251565e-16; }
__device__ __forceinline__ u64 ndl_rng_base(u64 seed) { return seed * 0x9E3779B97F4A7C15ull; }
// [/ndl-rng]

// unsigned arithmetic wraps mod 2^64, as the spec asks; the index is 64-bit so a
// buffer past 2^31 elements keeps drawing distinct numbers
extern "C" __global__ void rand_uniform_f32(float* out, u64 seed, i64 n) {
    const u64 base = ndl_rng_base(seed);
    for (i64 i = NDL_TID; i < n; i += NDL_STRIDE) out[i] = ndl_u01_f32(ndl_splitmix64_mix(base + (u64)i));
}
extern "C" __global__ void rand_uniform_f64(double* out, u64 seed, i64 n) {
    const u64 base = ndl_rng_base(seed);
    for (i64 i = NDL_TID; i < n; i += NDL_STRIDE) out[i] = ndl_u01_f64(ndl_splitmix64_mix(base + (u64)i));
}

// ---- scalars read on the device.  A CUDA graph bakes kernel arguments in, yet a
// needle.jit step's learning rate, bias corrections and dropout seed change on every
// replay.  In a graph these kernels read their scalar from vals[slot] (float64 device
// memory) instead, and set_scalars, launched just before the graph, writes the
// replay's values there: one graph serves every value, in stream order.
// The float32 variants round the double as the host's np.float32(value) does.
#define NDL_SCALAR_DEV(name, Op)                                                              \
    extern "C" __global__ void name##_dev_f32(const float* a, const double* vals, i64 slot,   \
                                              float* out, i64 n, int vec) {                  \
        scalar_body<float>(a, (float)vals[slot], out, n, vec, Op());                          \
    }                                                                                         \
    extern "C" __global__ void name##_dev_f64(const double* a, const double* vals, i64 slot,  \
                                              double* out, i64 n, int vec) {                 \
        scalar_body<double>(a, vals[slot], out, n, vec, Op());                                \
    }

NDL_SCALAR_DEV(scalar_add, OpAdd)
NDL_SCALAR_DEV(scalar_sub, OpSub)
NDL_SCALAR_DEV(scalar_mul, OpMul)
NDL_SCALAR_DEV(scalar_div, OpDiv)
NDL_SCALAR_DEV(scalar_rdiv, OpRDiv)
NDL_SCALAR_DEV(scalar_power, OpPow)
NDL_SCALAR_DEV(scalar_maximum, OpMax)
NDL_SCALAR_DEV(scalar_eq, OpEq)
NDL_SCALAR_DEV(scalar_ge, OpGe)

extern "C" __global__ void fill_dev_f32(float* out, const double* vals, i64 slot, i64 n, int vec) {
    fill_body<float>(out, (float)vals[slot], n, vec);
}
extern "C" __global__ void fill_dev_f64(double* out, const double* vals, i64 slot, i64 n, int vec) {
    fill_body<double>(out, vals[slot], n, vec);
}

// the host has checked the seed (a whole number in [0, 2^32)), so the conversion is exact
extern "C" __global__ void rand_uniform_dev_f32(float* out, const double* vals, i64 slot, i64 n) {
    const u64 base = ndl_rng_base((u64)vals[slot]);
    for (i64 i = NDL_TID; i < n; i += NDL_STRIDE) out[i] = ndl_u01_f32(ndl_splitmix64_mix(base + (u64)i));
}
extern "C" __global__ void rand_uniform_dev_f64(double* out, const double* vals, i64 slot, i64 n) {
    const u64 base = ndl_rng_base((u64)vals[slot]);
    for (i64 i = NDL_TID; i < n; i += NDL_STRIDE) out[i] = ndl_u01_f64(ndl_splitmix64_mix(base + (u64)i));
}

// Up to NDL_SCALAR_BLOCK values by value (the host packs the doubles' bits as int64,
// the layout of this struct): launch arguments are copied when the launch is queued,
// so the host may reuse its array at once -- no host buffer a queued copy still reads.
#define NDL_SCALAR_BLOCK 32
struct ScalarBlock {
    double v[NDL_SCALAR_BLOCK];
};
extern "C" __global__ void set_scalars(double* vals, ScalarBlock block, i64 first, i64 count) {
    const i64 i = threadIdx.x;
    if (i < count) vals[first + i] = block.v[i];
}
