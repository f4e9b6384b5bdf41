"""The embedding / embedding_grad op overrides of the CUDA backend.

Three layers: the launches and validation on the fake driver; the kernels
themselves run on the host -- kernels/embedding.cu compiled by g++ against a
small SIMT emulator (a std::thread per CUDA thread, a std::barrier per block),
driven through the fake driver with real memory, so the backend's own launch
sequence, scratch layout and error record are exercised end to end and
compared with the numpy backend bit for bit; and the same comparison on a
real GPU where there is one."""

import ctypes
import math
import re
import shutil
import subprocess

import numpy as np
import pytest

from needle.errors import DeviceMismatchError, OutOfBoundsError, ShapeError, UnsupportedDTypeError
from needle_cuda import CudaBackend, _kernels, _runtime
from needle_cuda._launch import DevicePtr, pack_args
from needle_numpy import NumpyBackend

SUF = {"float32": "f32", "float64": "f64"}


@pytest.fixture
def be(fake_driver):
    return CudaBackend()


def names(launches):
    return [l[0] for l in launches]


# -- launches on the fake driver ------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_embedding_checks_the_ids_then_gathers_a_warp_per_row(be, fake_driver, dtype):
    rows, num, dim = 300, 50, 24
    w, ids, out = be.Array(num * dim, dtype), be.Array(rows, dtype), be.Array(rows * dim, dtype)
    be.embedding(w, ids, out, rows, num, dim)
    (check, _, cblock, cargs), (gather, grid, block, gargs) = fake_driver.launches
    rec = _runtime.runtime(0).error_record()
    assert check == f"embedding_check_{SUF[dtype]}" and cblock == (_kernels.EMB_BLOCK, 1, 1)
    assert [int(a) for a in cargs] == [ids.ptr(), rows, num, rec, _kernels.EMB_OPS["embedding"]]
    assert [type(a) for a in cargs] == [DevicePtr, np.int64, np.int64, DevicePtr, np.int64]
    assert gather == f"embedding_{SUF[dtype]}" and block == (256, 1, 1)
    assert grid[0] * 256 // 32 >= rows                      # a warp for every row
    assert [int(a) for a in gargs] == [w.ptr(), ids.ptr(), out.ptr(), rows, num, dim]
    assert all(type(a) is np.int64 for a in gargs[3:])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_embedding_grad_buckets_the_ids_in_scratch_then_sums(be, fake_driver, dtype):
    rows, num, dim = 700, 300, 40
    g, ids, out = be.Array(rows * dim, dtype), be.Array(rows, dtype), be.Array(num * dim, dtype)
    be.embedding_grad(g, ids, out, rows, num, dim)
    s = SUF[dtype]
    launched = fake_driver.launches
    assert names(launched) == [f"embedding_check_{s}", f"embedding_grad_count_{s}", "embedding_grad_scan",
                               f"embedding_grad_fill_{s}", f"embedding_grad_sum_{s}"]
    check, count, scan, fill, total = launched
    assert int(check[3][4]) == _kernels.EMB_OPS["embedding_grad"]
    start = int(count[3][3])
    order = start + 4 * (num + 1)                          # int32 offsets, then the positions
    assert count[2] == (_kernels.EMB_TILE, 1, 1) and count[1][0] * _kernels.EMB_TILE >= num
    assert [int(a) for a in count[3]] == [ids.ptr(), rows, num, start]
    assert scan[1:3] == ((1, 1, 1), (_kernels.EMB_BLOCK, 1, 1)) and [int(a) for a in scan[3]] == [start, num]
    assert fill[1:3] == count[1:3]
    assert [int(a) for a in fill[3]] == [ids.ptr(), rows, num, start, order]
    assert total[2] == (64, 1, 1) and total[1][0] == num        # a block per v, 40 columns -> 64 threads
    assert [int(a) for a in total[3]] == [g.ptr(), start, order, out.ptr(), num, dim]
    # the scratch block went back to the cache (one stream: later work is ordered after it)
    assert start in _runtime.runtime(0).allocator._cache[512 * math.ceil(4 * (num + 1 + rows) / 512)]


def test_sum_block_covers_wide_rows_with_256_threads(be, fake_driver):
    g, ids, out = be.Array(3 * 512), be.Array(3), be.Array(2 * 512)
    be.embedding_grad(g, ids, out, 3, 2, 512)
    assert fake_driver.launches[-1][2] == (256, 1, 1) and fake_driver.launches[-1][1] == (2, 1, 1)


def test_empty_work(be, fake_driver):
    w, ids, out = be.Array(8), be.Array(4), be.Array(8)
    be.embedding(w, ids, out, 0, 4, 2)                     # no rows: nothing at all
    be.embedding_grad(w, ids, out, 0, 0, 2)                # no rows, empty table
    assert fake_driver.launches == []
    be.embedding(w, ids, out, 4, 4, 0)                     # 0-wide rows: the ids are still checked
    be.embedding_grad(w, ids, out, 4, 4, 0)
    assert names(fake_driver.launches) == ["embedding_check_f32"] * 2
    fake_driver.launches.clear()
    be.embedding_grad(w, ids, out, 0, 4, 2)                # no ids: a zero table, nothing to check
    assert names(fake_driver.launches) == ["embedding_grad_count_f32", "embedding_grad_scan",
                                           "embedding_grad_fill_f32", "embedding_grad_sum_f32"]


@pytest.mark.parametrize("op,sizes,text", [          # sizes: table or g, ids, out
    ("embedding", (6, 3, 12), "'w' has 6 elements but 12 are needed"),
    ("embedding", (12, 2, 12), "'ids' has 2 elements but 3 are needed"),
    ("embedding", (12, 3, 11), "'out' has 11 elements but 12 are needed"),
    ("embedding_grad", (11, 3, 12), "'g' has 11 elements but 12 are needed"),
    ("embedding_grad", (12, 2, 12), "'ids' has 2 elements but 3 are needed"),
    ("embedding_grad", (12, 3, 8), "'out' has 8 elements but 12 are needed"),
])
def test_buffers_too_small_are_refused_before_any_launch(be, fake_driver, op, sizes, text):
    a, ids, out = (be.Array(n) for n in sizes)
    with pytest.raises(ShapeError, match=f"{op}: {text}"):
        getattr(be, op)(a, ids, out, 3, 3, 4)            # rows = num = 3, dim = 4
    assert fake_driver.launches == []


@pytest.mark.parametrize("op", ["embedding", "embedding_grad"])
def test_bad_arguments_are_refused(be, fake_driver, op):
    a, ids, out = be.Array(16), be.Array(4), be.Array(16)
    with pytest.raises(ShapeError, match=f"{op}: rows=-1"):
        getattr(be, op)(a, ids, out, -1, 4, 4)
    with pytest.raises(ShapeError, match=f"{op}: dim=2147483648"):
        getattr(be, op)(a, ids, out, 0, 0, 2**31)
    with pytest.raises(UnsupportedDTypeError, match=f"{op}: dtypes differ"):
        getattr(be, op)(a, be.Array(4, "float64"), out, 4, 4, 4)
    with pytest.raises(DeviceMismatchError, match=f"{op}: 'ids' is a ndarray"):
        getattr(be, op)(a, np.zeros(4, np.float32), out, 4, 4, 4)
    assert fake_driver.launches == []


def test_they_are_op_overrides(be):
    overrides = be.op_overrides()
    assert overrides["embedding"] == be.embedding and overrides["embedding_grad"] == be.embedding_grad


# -- the error record ----------------------------------------------------------------
def test_the_record_is_made_once_outside_the_allocator_and_zeroed(be, fake_driver):
    rt = _runtime.runtime(0)
    w, ids, out = be.Array(8), be.Array(2), be.Array(8)
    in_use = rt.allocator.in_use_bytes
    be.embedding(w, ids, out, 2, 2, 4)
    be.embedding_grad(out, ids, w, 2, 2, 4)
    rec = rt.error_record()
    assert fake_driver.allocs[rec] == 40 and rt.allocator.in_use_bytes == in_use   # not the allocator's
    assert [c for c in fake_driver.host_copies if c[1] == rec] == [("htod", rec, 40)]


def test_to_numpy_reads_nothing_more_until_a_kernel_can_note_an_error(be, fake_driver):
    a = be.Array(4)
    be.to_numpy(a, (4,), (1,), 0)
    be.synchronize()
    assert fake_driver.host_copies == [("dtoh", a.ptr(), 16)]


def _note_error(fake_driver, rt, words):
    """Make the fake device's record read back as ``words``."""
    rec = int(rt.error_record())
    plain = fake_driver.cuMemcpyDtoHAsync

    def dtoh(dst, src, n, s):
        if int(src) == rec:
            ctypes.memmove(dst, np.asarray(words, np.int64).ctypes.data, n)
        return plain(dst, src, n, s)
    fake_driver.cuMemcpyDtoHAsync = dtoh
    return rec


@pytest.mark.parametrize("where", ["to_numpy", "synchronize"])
def test_a_noted_error_is_raised_where_results_come_back_and_cleared(be, fake_driver, where):
    rt = _runtime.runtime(0)
    w, ids, out = be.Array(8), be.Array(2), be.Array(8)
    be.embedding(w, ids, out, 2, 2, 4)
    rec = _note_error(fake_driver, rt, [_kernels.EMB_OPS["embedding_grad"], 5, np.float64(7.5).view(np.int64), 3, 8])
    with pytest.raises(OutOfBoundsError, match=r"embedding_grad: index 7\.5 at position 5 is not a whole "
                                               r"number in \[0, 3\) \(found on cuda:0 by a kernel"):
        be.to_numpy(out, (2, 4), (4, 1), 0) if where == "to_numpy" else be.synchronize()
    assert fake_driver.host_copies[-2:] == [("dtoh", rec, 40), ("htod", rec, 40)]   # read, then cleared


def test_nan_is_reported_as_nan(be, fake_driver):
    rt = _runtime.runtime(0)
    be.embedding(be.Array(8), be.Array(2), be.Array(8), 2, 2, 4)
    _note_error(fake_driver, rt, [_kernels.EMB_OPS["embedding"], 0, np.float64("nan").view(np.int64), 2, 4])
    with pytest.raises(OutOfBoundsError, match=r"embedding: index nan at position 0 .*\[0, 2\)"):
        be.synchronize()


# -- CUDA graphs ---------------------------------------------------------------------
def test_both_are_captured_into_one_graph(be, fake_driver):
    rows, num, dim = 10, 6, 8
    w, ids, out = be.Array(num * dim), be.Array(rows), be.Array(rows * dim)
    gw = be.Array(num * dim)
    replay = be.compile_replay([("embedding", (w, ids, out, rows, num, dim)),
                                ("embedding_grad", (out, ids, gw, rows, num, dim))])
    assert replay is not None, be.replay_fallback_reason
    assert (replay.num_graphs, replay.num_direct_calls) == (1, 0)
    # nothing allocated or read back inside the capture; the scratch is the graph's own
    assert not {"cuMemAlloc", "cuMemcpyDtoHAsync", "cuStreamSynchronize"} & set(fake_driver.during_capture)
    assert replay.scratch_bytes == 512
    (exec_,) = fake_driver.instantiated
    assert [n[1] for n in exec_.graph.nodes] == [
        "embedding_check_f32", "embedding_f32", "embedding_check_f32", "embedding_grad_count_f32",
        "embedding_grad_scan", "embedding_grad_fill_f32", "embedding_grad_sum_f32"]
    rec = int(_runtime.runtime(0).error_record())
    assert int(exec_.graph.nodes[0][4][3]) == rec and int(exec_.graph.nodes[2][4][3]) == rec
    replay.run([])
    assert fake_driver.graph_launches == [exec_]


def test_a_jitted_embedding_step_is_one_graph(emu, fake_driver):
    # on the emulator (below) for the ids' real values, which nn.Embedding checks on
    # the host in the eager first call; the other kernels do not run there
    fake_driver.strict = False
    from needle import discovery
    discovery.reset()
    try:
        import needle as ndl
        import needle.nn as nn
        import needle.optim as optim
        dev = ndl.cuda()
        np.random.seed(0)
        emb, head = nn.Embedding(20, 8, device=dev), nn.Linear(8, 20, device=dev)
        opt = optim.SGD(emb.parameters() + head.parameters(), lr=0.1)
        loss_fn = nn.SoftmaxLoss()

        def step(x, y):
            opt.reset_grad()
            loss = loss_fn(head(ndl.ops.reshape(emb(x), (6, 8))), y)
            loss.backward()
            opt.step()
            return loss
        jitted = ndl.jit(step)
        x = ndl.Tensor(np.array([[1, 2, 3], [3, 2, 1]], "float32"), device=dev, requires_grad=False)
        y = ndl.Tensor(np.array([0, 1, 2, 3, 4, 5], "float32"), device=dev, requires_grad=False)
        jitted(x, y)                                   # eager
        jitted(x, y)                                   # captured
        assert jitted.native, dev.require().replay_fallback_reason
        replay = next(iter(jitted._plans.values())).native
        assert replay.num_direct_calls == 0
        captured = [n[1] for e in fake_driver.instantiated for n in e.graph.nodes if n[0] == "kernel"]
        assert {"embedding_check_f32", "embedding_f32", "embedding_grad_sum_f32"} <= set(captured)
    finally:
        discovery.reset()


# -- the kernels, run on the host ------------------------------------------------------
_EMULATOR = r"""
// A SIMT emulator just large enough for kernels/embedding.cu: blocks run one after
// another, each as blockDim std::threads sharing the kernel's static (__shared__)
// arrays and one std::barrier (__syncthreads).  A thread that returns drops out
// of the barrier, as a GPU thread that exits does.
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>
struct ndl_dim3 { unsigned x, y, z; };
static thread_local ndl_dim3 threadIdx, blockIdx;
static ndl_dim3 blockDim, gridDim;
static std::barrier<>* ndl_bar;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static inline void __syncthreads() { ndl_bar->arrive_and_wait(); }
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline long long __double_as_longlong(double d) { long long r; std::memcpy(&r, &d, 8); return r; }
template <typename T> T __shfl_xor_sync(unsigned, T, int);  // named by common.cuh, never used here
%(source)s
template <typename... A, std::size_t... I>
static void ndl_call(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*reinterpret_cast<A*>(args[I])...);
}
template <typename... A>
static void ndl_run(void (*f)(A...), unsigned gx, unsigned bx, void** args) {
    gridDim = {gx, 1, 1};
    blockDim = {bx, 1, 1};
    for (unsigned b = 0; b < gx; ++b) {
        std::barrier<> bar(bx);
        ndl_bar = &bar;
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < bx; ++t)
            threads.emplace_back([=, &bar] {
                blockIdx = {b, 0, 0};
                threadIdx = {t, 0, 0};
                ndl_call(f, args, std::index_sequence_for<A...>{});
                bar.arrive_and_drop();
            });
        for (auto& th : threads) th.join();
    }
}
extern "C" int ndl_emu_launch(const char* name, unsigned gx, unsigned bx, void** args) {
#define NDL_K(k) if (!std::strcmp(name, #k)) { ndl_run(k, gx, bx, args); return 0; }
    NDL_K(embedding_check_f32) NDL_K(embedding_check_f64) NDL_K(embedding_f32) NDL_K(embedding_f64)
    NDL_K(embedding_grad_count_f32) NDL_K(embedding_grad_count_f64) NDL_K(embedding_grad_scan)
    NDL_K(embedding_grad_fill_f32) NDL_K(embedding_grad_fill_f64)
    NDL_K(embedding_grad_sum_f32) NDL_K(embedding_grad_sum_f64)
    return 1;
}
"""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler to run the kernels without a GPU")
    d = tmp_path_factory.mktemp("emu")
    (d / "emu.cpp").write_text(_EMULATOR % {"source": _kernels.source("embedding")})
    r = subprocess.run([cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-o", str(d / "emu.so"),
                        str(d / "emu.cpp")], capture_output=True, text=True)
    if r.returncode != 0 and "barrier" in r.stderr and "No such file" in r.stderr:
        pytest.skip("the host C++ library has no <barrier>")
    assert r.returncode == 0, r.stderr
    lib = ctypes.CDLL(str(d / "emu.so"))
    lib.ndl_emu_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
    return lib


@pytest.fixture
def emu(fake_driver, emulator):
    """The fake driver with host memory behind its pointers, copies that copy
    and embedding kernels (launched, or replayed from a graph) that run."""
    fake = fake_driver
    fake.sm_count = 1          # small grids: every grid-stride loop goes round
    memory = {}
    plain = {n: getattr(fake, n) for n in ("cuMemAlloc", "cuMemFree", "cuMemcpyHtoDAsync", "cuMemcpyDtoHAsync",
                                             "cuMemcpyDtoDAsync", "cuLaunchKernel", "cuGraphLaunch")}

    def run(kernel, grid, block, params):
        if not kernel.startswith("embedding") and not fake.strict:
            return                 # a kernel the emulator lacks: its output stays garbage
        assert grid[1:] == (1, 1) and block[1:] == (1, 1)
        assert emulator.ndl_emu_launch(kernel.encode(), grid[0], block[0], params) == 0, kernel

    def alloc(n):
        res = plain["cuMemAlloc"](n)
        if int(res[0]) == 0:
            buf = np.full(n + 256, 0xAB, np.uint8)    # not zero: the kernels must write what they mean
            addr = -(-buf.ctypes.data // 256) * 256
            fake.allocs.pop(res[1])
            fake.allocs[addr] = n
            memory[addr] = buf
            res = (res[0], addr)
        return res

    def free(p):
        memory.pop(int(p), None)
        return plain["cuMemFree"](p)

    def copier(name):
        def copy(dst, src, n, *rest):
            res = plain[name](dst, src, n, *rest)
            if int(res[0]) == 0 and not (name == "cuMemcpyDtoDAsync" and fake.capturing is not None):
                ctypes.memmove(int(dst), int(src), int(n))
            return res
        return copy

    def launch(fn, gx, gy, gz, bx, by, bz, shmem, stream, params, extra):
        res = plain["cuLaunchKernel"](fn, gx, gy, gz, bx, by, bz, shmem, stream, params, extra)
        if int(res[0]) == 0 and fake.capturing is None:
            run(fn, (gx, gy, gz), (bx, by, bz), params)
        return res

    def graph_launch(exec_, stream):
        res = plain["cuGraphLaunch"](exec_, stream)
        for node in exec_.graph.nodes:
            if node[0] == "kernel":
                _, kernel, grid, block, args = node
                packed = pack_args(args)   # its storage must outlive the launch
                run(kernel, grid, block, packed.params)
            else:
                ctypes.memmove(node[1], node[2], node[3])
        return res

    fake.cuMemAlloc, fake.cuMemFree, fake.cuLaunchKernel, fake.cuGraphLaunch = alloc, free, launch, graph_launch
    for name in ("cuMemcpyHtoDAsync", "cuMemcpyDtoHAsync", "cuMemcpyDtoDAsync"):
        setattr(fake, name, copier(name))
    fake.memory, fake.strict = memory, True
    return CudaBackend()


_REF = NumpyBackend()


def ref(op, a, ids, rows, num, dim):
    a_buf, ids_buf = _REF.Array(a.size, a.dtype), _REF.Array(ids.size, ids.dtype)
    a_buf.array[:], ids_buf.array[:] = a.ravel(), ids
    out = _REF.Array((rows if op == "embedding" else num) * dim, a.dtype)
    getattr(_REF, op)(a_buf, ids_buf, out, rows, num, dim)
    return out.array


def up(be, x):
    buf = be.Array(x.size, x.dtype)
    be.from_numpy(np.ascontiguousarray(x).ravel(), buf)
    return buf


def down(be, buf, n=None):
    n = buf.size if n is None else n
    return be.to_numpy(buf, (n,), (1,), 0)


def run_op(be, op, a, ids, rows, num, dim):
    out = be.Array((rows if op == "embedding" else num) * dim, a.dtype)
    getattr(be, op)(up(be, a), up(be, ids), out, rows, num, dim)
    return down(be, out)


CASES = [  # rows, num, dim: grid-stride loops on every axis at sm_count 1, tiles with a tail
    (1, 1, 1), (5, 3, 7), (300, 40, 33), (700, 300, 300), (129, 4500, 5)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,num,dim", CASES)
def test_kernels_equal_the_numpy_backend_bit_for_bit(emu, dtype, rows, num, dim):
    rng = np.random.default_rng(rows * num + dim)
    # few distinct ids: long buckets whose order of addition shows in the low bits
    ids = rng.integers(0, min(num, 7), rows).astype(dtype)
    ids[::3] = rng.integers(0, num, ids[::3].size)
    w = (rng.standard_normal((num, dim)) * 10 ** rng.uniform(-3, 3, (num, dim))).astype(dtype)
    g = (rng.standard_normal((rows, dim)) * 10 ** rng.uniform(-3, 3, (rows, dim))).astype(dtype)
    got = run_op(emu, "embedding", w, ids, rows, num, dim)
    np.testing.assert_array_equal(got, ref("embedding", w, ids, rows, num, dim))
    got = run_op(emu, "embedding_grad", g, ids, rows, num, dim)
    want = ref("embedding_grad", g, ids, rows, num, dim)
    assert got.tobytes() == want.tobytes()
    # the order matters: a pairwise sum of a long bucket differs in the last bits
    if rows >= 300 and dtype == "float32":
        fast = np.zeros((num, dim), dtype)
        order = np.argsort(ids, kind="stable")
        starts = np.flatnonzero(np.r_[True, ids[order][1:] != ids[order][:-1]])
        fast[ids[order][starts].astype(int)] = np.add.reduceat(g[order], starts, axis=0)
        assert fast.tobytes() != want.tobytes()


def test_rows_past_what_the_ids_buffer_holds_are_not_read_and_empty_rows_are_zero(emu):
    ids = np.array([2, 2, 0, 99], np.float32)                  # only the first 3 are rows
    g = np.arange(4 * 3, dtype=np.float32).reshape(4, 3) + 0.5
    got = run_op(emu, "embedding_grad", g, ids, 3, 4, 3).reshape(4, 3)
    np.testing.assert_array_equal(got, [g[2], [0, 0, 0], g[0] + g[1], [0, 0, 0]])
    emu.synchronize()                                          # no error noted


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["embedding", "embedding_grad"])
@pytest.mark.parametrize("bad,text", [(4.0, "4.0"), (-1.0, "-1.0"), (1.5, "1.5"), (float("nan"), "nan"),
                                      (-0.25, "-0.25"), (1e30, "1e+30")])
def test_a_bad_index_is_skipped_and_raised_at_to_numpy(emu, dtype, op, bad, text):
    rows, num, dim = 600, 4, 3
    ids = (np.arange(rows) % num).astype(dtype)
    ids[[457, 500]] = bad                                      # the first bad one is reported
    ids[531] = num
    a = np.arange(max(rows, num) * dim, dtype=dtype).reshape(-1, dim)[: rows if op == "embedding_grad" else num]
    out = emu.Array((rows if op == "embedding" else num) * dim, dtype)
    getattr(emu, op)(up(emu, a), up(emu, ids), out, rows, num, dim)
    message = rf"^{op}: index {re.escape(text)} at position 457 is not a whole number in \[0, 4\) \(found on cuda:0 "
    with pytest.raises(OutOfBoundsError, match=message):
        down(emu, out)
    got = down(emu, out).reshape(-1, dim)                      # reported once; the record is clear again
    good = ids.copy()
    good[[457, 500, 531]] = 0
    want = ref(op, a, good, rows, num, dim).reshape(-1, dim)
    if op == "embedding":
        want[[457, 500, 531]] = 0                              # a bad index's row is zeros
    else:                                                      # a bad index's row of g is left out
        want = np.zeros((num, dim), dtype)
        for i in range(rows):
            if i not in (457, 500, 531):
                want[int(ids[i])] += a[i]
    assert got.tobytes() == want.tobytes()


def test_the_first_bad_call_is_the_one_reported(emu):
    w = np.ones((3, 2), np.float32)
    out = emu.Array(4)
    emu.embedding(up(emu, w), up(emu, np.array([0, 5], np.float32)), out, 2, 3, 2)
    emu.embedding_grad(up(emu, np.ones((2, 2), np.float32)), up(emu, np.array([-3, 1], np.float32)),
                       emu.Array(6), 2, 3, 2)
    with pytest.raises(OutOfBoundsError, match=r"^embedding: index 5\.0 at position 1 "):
        emu.synchronize()
    emu.synchronize()


def test_a_graph_replay_checks_and_computes_the_ids_of_each_run(emu):
    rows, num, dim = 40, 9, 6
    rng = np.random.default_rng(3)
    w = rng.standard_normal((num, dim)).astype(np.float32)
    g = rng.standard_normal((rows, dim)).astype(np.float32)
    wb, gb, ids = up(emu, w), up(emu, g), emu.Array(rows)
    out, gw = emu.Array(rows * dim), emu.Array(num * dim)
    emu.from_numpy(np.zeros(rows, np.float32), ids)
    replay = emu.compile_replay([("embedding", (wb, ids, out, rows, num, dim)),
                                 ("embedding_grad", (gb, ids, gw, rows, num, dim))])
    assert replay.num_graphs == 1
    for seed in range(3):
        x = np.random.default_rng(seed).integers(0, num, rows).astype(np.float32)
        emu.from_numpy(x, ids)
        replay.run([])
        np.testing.assert_array_equal(down(emu, out), ref("embedding", w, x, rows, num, dim))
        assert down(emu, gw).tobytes() == ref("embedding_grad", g, x, rows, num, dim).tobytes()
    x[7] = num + 0.5
    emu.from_numpy(x, ids)
    replay.run([])
    with pytest.raises(OutOfBoundsError, match=r"^embedding: index 9\.5 at position 7 "):
        down(emu, out)
    replay.close()


# -- on a real GPU ---------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,num,dim", [(1, 1, 1), (37, 5, 3), (20000, 10000, 512), (4096, 3, 100),
                                          (400, 10000, 128)])
def test_gpu_kernels_equal_the_numpy_backend(dtype, rows, num, dim):
    be = CudaBackend()
    ok, reason = be.is_available()
    if not ok:
        pytest.skip(reason or "cuda unavailable")
    rng = np.random.default_rng(rows + dim)
    ids = rng.zipf(1.3, rows).astype(np.int64) % num                # a few very long buckets
    ids = ids.astype(dtype)
    w = rng.standard_normal((num, dim)).astype(dtype)
    g = rng.standard_normal((rows, dim)).astype(dtype)
    np.testing.assert_array_equal(run_op(be, "embedding", w, ids, rows, num, dim),
                                  ref("embedding", w, ids, rows, num, dim))
    assert run_op(be, "embedding_grad", g, ids, rows, num, dim).tobytes() == \
        ref("embedding_grad", g, ids, rows, num, dim).tobytes()
    ids[rows // 2] = num
    out = be.Array(num * dim, dtype)
    be.embedding_grad(up(be, g), up(be, ids), out, rows, num, dim)
    with pytest.raises(OutOfBoundsError, match=rf"embedding_grad: index {float(num)!r} at position {rows // 2} "):
        be.synchronize()
