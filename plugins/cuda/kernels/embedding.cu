// nn.Embedding's row gather and its adjoint, with the indices on the device (op
// overrides embedding / embedding_grad; see OP_OVERRIDE_SIGNATURES).  The ids are
// stored in the table's dtype, as the loss's labels are.
//
// Bad indices.  An index that is not a whole number in [0, num) is never read or
// written through: every kernel that uses one checks it (emb_row) and skips it
// (embedding writes a zero row instead).  Raising needs the host, and these calls
// must stay pure device work (needle.jit captures them into CUDA graphs, where no
// host read is possible), so embedding_check -- one block, launched first by both
// ops -- writes the first bad position of the call into the device's error record
// (5 int64: op code, position, the value as float64 bits, num, sizeof the dtype)
// unless the record already holds an earlier error.  The host reads the record
// when results come back (to_numpy, synchronize) and raises OutOfBoundsError
// there (DeviceRuntime.raise_kernel_errors).
//
// Determinism.  embedding_grad must equal the numpy backend's np.add.at bit for bit:
// each out[v, j] is 0 + g[i0, j] + g[i1, j] + ... over the i with ids[i] == v in
// increasing i, one thread adding them in that order (no atomics on floats).  To
// find those i without a sort it builds buckets in an int32 scratch buffer:
//   count  -- thread v counts the i with ids[i] == v (every block walks the ids in
//             tiles through shared memory) into start[v];
//   scan   -- one block turns the counts into offsets: start[v] is where v's bucket
//             begins in order[], start[num] = the number of good ids;
//   fill   -- thread v walks the ids again in increasing i and lists its i's in
//             order[start[v]...]: each bucket is sorted by construction;
//   sum    -- a block per v, a thread per column j, adds the bucket's rows of g.
// count and fill do num * rows comparisons (shared-memory reads; tens of
// microseconds for the 10000 x 20000 of a language model); the sums read g once.
// Exported names: <kernel>_f32 / <kernel>_f64, and embedding_grad_scan
// (needle_cuda/_kernels.py).  Only __syncthreads and shared memory: the tests
// run this file on the host as well (tests/cuda/test_embedding.py).

// threads of the single-block kernels (check, scan) and of count / fill, whose
// tile of ids is one per thread; the host launches exactly these
#define NDL_EMB_BLOCK 256
#define NDL_EMB_TILE 128

// The row ids[i] names, or -1 when it is not a whole number in [0, num).  Compared
// as double, which holds every float and every num < 2^31 exactly; the cast to an
// integer comes only once the value is known to be in range.
template <typename T>
__device__ __forceinline__ i64 emb_row(T v, i64 num) {
    const double d = (double)v;
    if (!(d >= 0.0 && d < (double)num)) return -1;  // also NaN
    const i64 r = (i64)d;
    return (double)r == d ? r : -1;
}

// One block of NDL_EMB_BLOCK threads: the smallest bad position (thread t looks
// at t, t + blockDim, ... and stops at its first bad one), then thread 0 fills the
// record when it is empty.  Kernels on a stream run in order and only thread 0 of
// this single block writes, so the record holds the first bad index of the first
// bad call, and the host may read it once the stream has drained.
template <typename T>
__device__ __forceinline__ void emb_check(const T* ids, i64 rows, i64 num, i64* rec, i64 op) {
    __shared__ i64 first[NDL_EMB_BLOCK];
    i64 mine = rows;
    for (i64 i = threadIdx.x; i < rows; i += blockDim.x) {
        if (emb_row(ids[i], num) < 0) {
            mine = i;
            break;
        }
    }
    first[threadIdx.x] = mine;
    __syncthreads();
    for (int s = NDL_EMB_BLOCK / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s && first[threadIdx.x + s] < first[threadIdx.x])
            first[threadIdx.x] = first[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0 && first[0] < rows && rec[0] == 0) {
        const i64 pos = first[0];
        rec[1] = pos;
        rec[2] = __double_as_longlong((double)ids[pos]);
        rec[3] = num;
        rec[4] = (i64)sizeof(T);  // to print the value as the ids' dtype does
        __threadfence();
        rec[0] = op;  // last: a record with its code set is complete
    }
}

// out[i, :] = w[ids[i], :], a warp per row (lanes over the columns: coalesced
// rows of w and out); a zero row for a bad index.
template <typename T>
__device__ __forceinline__ void emb_gather(const T* w, const T* ids, T* out, i64 rows, i64 num, i64 dim) {
    const int lane = threadIdx.x & 31;
    const i64 warp = NDL_TID >> 5, nwarps = NDL_STRIDE >> 5;
    for (i64 i = warp; i < rows; i += nwarps) {
        const i64 v = emb_row(ids[i], num);
        T* o = out + i * dim;
        if (v < 0) {
            for (i64 j = lane; j < dim; j += 32) o[j] = T(0);
        } else {
            const T* src = w + v * dim;
            for (i64 j = lane; j < dim; j += 32) o[j] = src[j];
        }
    }
}

// count (FILL false): counts[v] = the number of i with ids[i] == v; fill (FILL
// true): order[start[v] + k] = the k-th such i, in increasing i.  Thread v of the
// grid (grid-stride over v); every block walks all ids in tiles of NDL_EMB_TILE,
// each id turned into its row (-1 when bad: it matches no v).  The loops' bounds
// are the same for every thread of a block, so all of them reach each barrier.
template <typename T, bool FILL>
__device__ __forceinline__ void emb_buckets(const T* ids, i64 rows, i64 num, int* counts, const int* start,
                                            int* order) {
    __shared__ int tile[NDL_EMB_TILE];
    for (i64 base = (i64)blockIdx.x * NDL_EMB_TILE; base < num; base += (i64)gridDim.x * NDL_EMB_TILE) {
        const i64 v = base + threadIdx.x;
        const bool mine = v < num;
        int at = (FILL && mine) ? start[v] : 0;
        int n = 0;
        for (i64 t = 0; t < rows; t += NDL_EMB_TILE) {
            __syncthreads();  // the previous tile is read by everyone
            const i64 i = t + threadIdx.x;
            tile[threadIdx.x] = i < rows ? (int)emb_row(ids[i], num) : -1;
            __syncthreads();
            const int m = rows - t < NDL_EMB_TILE ? (int)(rows - t) : NDL_EMB_TILE;
            if (mine) {
                for (int k = 0; k < m; ++k) {
                    if (tile[k] == (int)v) {
                        if (FILL) order[at++] = (int)(t + k);
                        else ++n;
                    }
                }
            }
        }
        if (!FILL && mine) counts[v] = n;
    }
}

// start[0..num-1] holds the counts; afterwards start[v] = the sum of the counts
// before v and start[num] = all of them.  One block of NDL_EMB_BLOCK threads,
// each taking a contiguous run of v's.
__device__ __forceinline__ void emb_scan(int* start, i64 num) {
    __shared__ int part[NDL_EMB_BLOCK];
    const i64 per = (num + NDL_EMB_BLOCK - 1) / NDL_EMB_BLOCK;
    const i64 lo = (i64)threadIdx.x * per;
    const i64 hi = lo + per < num ? lo + per : num;
    int s = 0;
    for (i64 v = lo; v < hi; ++v) s += start[v];
    part[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        int run = 0;
        for (int k = 0; k < NDL_EMB_BLOCK; ++k) {
            const int c = part[k];
            part[k] = run;
            run += c;
        }
        start[num] = run;
    }
    __syncthreads();
    int run = part[threadIdx.x];
    for (i64 v = lo; v < hi; ++v) {
        const int c = start[v];
        start[v] = run;
        run += c;
    }
}

// out[v, j] = 0 + the rows of g in v's bucket, in increasing i: a block per v
// (grid-stride), a thread per column.  Buckets are sorted, so this is np.add.at's
// order; the loads of one bucket do not depend on each other, only the adds do.
template <typename T>
__device__ __forceinline__ void emb_sum(const T* g, const int* start, const int* order, T* out, i64 num,
                                        i64 dim) {
    for (i64 v = blockIdx.x; v < num; v += gridDim.x) {
        const int k0 = start[v], k1 = start[v + 1];
        for (i64 j = threadIdx.x; j < dim; j += blockDim.x) {
            T s = T(0);
            // unrolled for loads in flight; the adds stay in order (no fast-math)
#pragma unroll 4
            for (int k = k0; k < k1; ++k) s += g[(i64)order[k] * dim + j];
            out[v * dim + j] = s;
        }
    }
}

#define NDL_EMBEDDING(T, SUF)                                                                        \
    extern "C" __global__ void embedding_check_##SUF(const T* ids, i64 rows, i64 num, i64* rec,      \
                                                      i64 op) {                                       \
        emb_check<T>(ids, rows, num, rec, op);                                                       \
    }                                                                                                \
    extern "C" __global__ void embedding_##SUF(const T* w, const T* ids, T* out, i64 rows, i64 num,  \
                                                i64 dim) {                                            \
        emb_gather<T>(w, ids, out, rows, num, dim);                                                  \
    }                                                                                                \
    extern "C" __global__ void embedding_grad_count_##SUF(const T* ids, i64 rows, i64 num,           \
                                                           int* start) {                              \
        emb_buckets<T, false>(ids, rows, num, start, nullptr, nullptr);                             \
    }                                                                                                \
    extern "C" __global__ void embedding_grad_fill_##SUF(const T* ids, i64 rows, i64 num,            \
                                                          const int* start, int* order) {             \
        emb_buckets<T, true>(ids, rows, num, nullptr, start, order);                                \
    }                                                                                                \
    extern "C" __global__ void embedding_grad_sum_##SUF(const T* g, const int* start,                \
                                                         const int* order, T* out, i64 num,           \
                                                         i64 dim) {                                   \
        emb_sum<T>(g, start, order, out, num, dim);                                                  \
    }

NDL_EMBEDDING(float, f32)
NDL_EMBEDDING(double, f64)

extern "C" __global__ void embedding_grad_scan(int* start, i64 num) { emb_scan(start, num); }
