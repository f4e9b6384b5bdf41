"""The runtime and backend on a fake driver: which kernel is launched with
which arguments, validation before launch, and CUDA errors -> needle errors."""

import numpy as np
import pytest

from needle.errors import DeviceMismatchError, ShapeError, UnsupportedDTypeError
from needle_cuda import CudaBackend, CudaError, _runtime


@pytest.fixture
def be(fake_driver):
    return CudaBackend()


def last(fake):
    return fake.launches[-1]


# -- launches -------------------------------------------------------------------
def test_runtime_reads_device_and_picks_exact_arch(be, fake_driver):
    rt = _runtime.runtime(0)
    assert (rt.compute_capability, rt.arch, rt.target_kind) == (80, "sm_80", "cubin")
    assert rt.name == "Fake GPU" and rt.sm_count == 108


def test_ewise_add_launch(be, fake_driver):
    a, b, out = be.Array(1000), be.Array(1000), be.Array(1000)
    be.ewise_add(a, b, out)
    fn, grid, block, args = last(fake_driver)
    assert fn == "ewise_add_f32" and block == (256, 1, 1)
    assert grid[0] * 256 * 4 >= 1000  # 4 floats per thread with 16-byte loads
    assert [int(x) for x in args[:3]] == [a.ptr(), b.ptr(), out.ptr()]
    assert args[3].dtype == np.int64 and args[3] == 1000
    assert args[4].dtype == np.int32 and args[4] == 1  # 16-byte aligned -> vector path


def test_scalar_value_has_the_buffer_dtype(be, fake_driver):
    a, out = be.Array(10, "float64"), be.Array(10, "float64")
    be.scalar_power(a, 3, out)   # a Python int: must arrive as float64, not a pointer
    fn, _, _, args = last(fake_driver)
    assert fn == "scalar_power_f64"
    assert args[1].dtype == np.float64 and args[1] == 3.0
    be.fill(out, 2.5)
    fn, _, _, args = last(fake_driver)
    assert fn == "fill_f64" and args[1].dtype == np.float64 and args[1] == 2.5


def test_every_protocol_kernel_launches_a_kernel_that_exists(be, fake_driver):
    from needle_cuda import _kernels
    n = 64
    a, b, o = be.Array(n), be.Array(n), be.Array(n)
    for k in ("ewise_add", "ewise_sub", "ewise_mul", "ewise_div", "ewise_pow", "ewise_maximum",
              "ewise_eq", "ewise_ge", "ewise_relu_grad"):
        getattr(be, k)(a, b, o)
    for k in ("ewise_neg", "ewise_log", "ewise_exp", "ewise_tanh", "ewise_sqrt"):
        getattr(be, k)(a, o)
    for k in ("scalar_add", "scalar_sub", "scalar_mul", "scalar_div", "scalar_rdiv", "scalar_power",
              "scalar_maximum", "scalar_eq", "scalar_ge"):
        getattr(be, k)(a, 1.5, o)
    be.compact(a, o, (8, 8), (1, 8), 0)
    be.ewise_setitem(a, o, (8, 8), (1, 8), 0)
    be.scalar_setitem(64, 1.0, o, (8, 8), (1, 8), 0)
    be.reduce_sum(a, be.Array(8), 8)
    be.reduce_max(a, be.Array(8), 8)
    be.matmul(a, b, o, 8, 8, 8)
    be.matmul_tiled(a, b, o, 8, 8, 8)
    be.logsumexp(a, be.Array(8), 8, 8)
    be.softmax(a, o, 8, 8)
    x, w = be.Array(2 * 4 * 4 * 2), be.Array(3 * 3 * 2 * 4)
    y = be.Array(2 * 4 * 4 * 4)
    be.conv(x, w, y, 2, 4, 4, 2, 3, 4, 1, 1)
    be.conv_grad_input(y, w, x, 2, 4, 4, 2, 3, 4, 1, 1)
    be.conv_grad_weight(x, y, w, 2, 4, 4, 2, 3, 4, 1, 1)
    be.embedding(a, b, o, 8, 8, 8)
    be.embedding_grad(a, b, o, 8, 8, 8)
    names = [l[0] for l in fake_driver.launches]
    assert len(names) == 9 + 5 + 9 + 3 + 2 + 2 + 2 + 3 + 2 + 5
    unknown = [nm for nm in names if nm not in _kernels.FILE_OF]
    assert not unknown
    # modules compiled once each, for the device's arch
    assert sorted(fake_driver.compiled) == sorted((f"{f}.cu", "sm_80", "cubin") for f in _kernels.KERNEL_FILES)


def test_compact_packs_a_coalesced_strided_view(be, fake_driver):
    a, out = be.Array(2 * 3 * 4), be.Array(2 * 3 * 4)
    be.compact(a, out, (2, 3, 4), (12, 1, 3), 0)   # axes 1 and 2 swapped
    fn, _, _, args = last(fake_driver)
    assert fn == "compact_f32_i32"
    view = args[2]
    assert view.dtype == np.int64 and view.shape == (18,)
    assert view[0] == 3 and view[1] == 0
    assert list(view[2:5]) == [2, 3, 4] and list(view[10:13]) == [12, 1, 3]
    # a contiguous view collapses to one axis
    be.compact(a, out, (2, 3, 4), (12, 4, 1), 0)
    view = last(fake_driver)[3][2]
    assert view[0] == 1 and view[2] == 24 and view[10] == 1


def test_large_views_use_64_bit_indices(be, fake_driver):
    a, out = be.Array(3), be.Array(3)
    big = 2**31
    be.compact(a, out, (3,), (1,), 0)
    assert last(fake_driver)[0] == "compact_f32_i32"
    # stride 0 broadcast of a huge logical size needs int64 linear indices
    src = be.Array(1)
    huge_out = type(out).__new__(type(out))  # a fake buffer of 2^31+ elements, never touched
    huge_out.size, huge_out.dtype, huge_out._ptr, huge_out._cls, huge_out._runtime = big + 8, out.dtype, 4096, 0, out._runtime
    be.compact(src, huge_out, (big + 8,), (0,), 0)
    assert last(fake_driver)[0] == "compact_f32_i64"


def test_matmul_picks_tile_config_by_shape(be, fake_driver):
    m = n = p = 2048
    a, b, c = be.Array(m * n), be.Array(n * p), be.Array(m * p)
    be.matmul(a, b, c, m, n, p)
    fn, grid, block, args = last(fake_driver)
    assert fn == "matmul_strided_f32_big" and grid == (16, 16, 1) and block == (256, 1, 1)
    assert [int(x) for x in args[3:7]] == [m, n, p, 1]
    assert list(args[7]) == [0, m * n, n, 1] and list(args[8]) == [0, n * p, p, 1]
    a, b, c = be.Array(100 * 30), be.Array(30 * 20), be.Array(100 * 20)
    be.matmul(a, b, c, 100, 30, 20)
    fn, grid, _, _ = last(fake_driver)
    assert fn == "matmul_strided_f32_small" and grid == (2, 1, 1)


def test_matmul_strided_passes_transposed_and_broadcast_operands(be, fake_driver):
    a, b, c = be.Array(6 * 4), be.Array(4 * 5), be.Array(3 * 6 * 5)
    # a: one (6,4) matrix broadcast over batch 3 (stride 0); b: transposed view of a (5,4) buffer
    be.matmul_strided(a, b, c, 3, 6, 4, 5, (0, 4, 1), 0, (0, 1, 4), 0)
    fn, grid, _, args = last(fake_driver)
    assert fn == "matmul_strided_f32_small" and grid == (1, 1, 3)
    assert list(args[7]) == [0, 0, 4, 1] and list(args[8]) == [0, 0, 1, 4]


def test_conv_geometry_argument(be, fake_driver):
    N, H, W, C, K, Co, s, p = 2, 9, 7, 3, 3, 5, 2, 1
    Ho, Wo = (H + 2 * p - K) // s + 1, (W + 2 * p - K) // s + 1
    x, w, y = be.Array(N * H * W * C), be.Array(K * K * C * Co), be.Array(N * Ho * Wo * Co)
    be.conv(x, w, y, N, H, W, C, K, Co, s, p)
    fn, _, _, args = last(fake_driver)
    assert fn == "conv_fwd_f32_small"
    assert [int(v) for v in args[3:6]] == [N * Ho * Wo, K * K * C, Co]
    assert list(args[6]) == [N, H, W, C, K, Co, s, p, Ho, Wo]
    be.conv_grad_input(y, w, x, N, H, W, C, K, Co, s, p)
    fn, _, _, args = last(fake_driver)
    assert fn == "conv_grad_input_f32_small" and [int(v) for v in args[3:6]] == [N * H * W, K * K * Co, C]
    be.conv_grad_weight(x, y, w, N, H, W, C, K, Co, s, p)
    fn, _, _, args = last(fake_driver)
    assert fn == "conv_grad_weight_f32_small" and [int(v) for v in args[3:6]] == [K * K * C, N * Ho * Wo, Co]


def test_rowwise_plan(be, fake_driver):
    a, out = be.Array(4096 * 10), be.Array(4096)
    be.reduce_sum(a, out, 10)
    assert last(fake_driver)[0] == "reduce_sum_warp_f32"
    a2, out2 = be.Array(8 * 5000), be.Array(8)
    be.reduce_max(a2, out2, 5000)
    assert last(fake_driver)[0] == "reduce_max_block_f32"


def test_zero_sized_work_launches_nothing(be, fake_driver):
    e = be.Array(0)
    be.ewise_add(e, e, e)
    be.compact(e, e, (0, 3), (3, 1), 0)
    be.matmul(be.Array(0), be.Array(0), e, 0, 5, 0)
    be.fill(e, 1.0)
    assert fake_driver.launches == []


# -- validation ------------------------------------------------------------------
def test_dtype_mismatch(be, fake_driver):
    with pytest.raises(UnsupportedDTypeError, match=r"ewise_add: dtypes differ \(a: float32, b: float64\)"):
        be.ewise_add(be.Array(4), be.Array(4, "float64"), be.Array(4))


def test_unsupported_dtype(be, fake_driver):
    with pytest.raises(UnsupportedDTypeError, match="backend 'cuda' does not support dtype int32"):
        be.Array(4, "int32")


def test_size_mismatch(be, fake_driver):
    with pytest.raises(ShapeError, match="'b' has 3 elements, 'out' has 4"):
        be.ewise_mul(be.Array(4), be.Array(3), be.Array(4))


def test_view_out_of_bounds(be, fake_driver):
    with pytest.raises(ShapeError, match=r"reaches element 12 of 'a', which has 12"):
        be.compact(be.Array(12), be.Array(12), (3, 4), (4, 1), 1)
    with pytest.raises(ShapeError, match="negative"):
        be.compact(be.Array(12), be.Array(12), (3, 4), (-4, 1), 8)


def test_too_many_dims_after_merging(be, fake_driver):
    shape = (2,) * 9
    strides = tuple(2 ** (2 * i) for i in range(9))[::-1]   # no two axes merge
    src = be.Array(max(strides) * 2 * 2)
    with pytest.raises(ShapeError, match="at most 8 dimensions"):
        be.compact(src, be.Array(512), shape, strides, 0)
    # nine axes that merge into one are fine
    be.compact(be.Array(512), be.Array(512), shape, tuple(2 ** i for i in range(9))[::-1], 0)
    assert last(fake_driver)[3][2][0] == 1


def test_non_cuda_buffer(be, fake_driver):
    with pytest.raises(DeviceMismatchError, match="'a' is a ndarray, not a cuda buffer"):
        be.ewise_add(np.zeros(4, np.float32), be.Array(4), be.Array(4))


def test_matmul_buffer_too_small(be, fake_driver):
    with pytest.raises(ShapeError, match="matmul: view shape \\(1, 4, 5\\)"):
        be.matmul(be.Array(19), be.Array(5 * 3), be.Array(12), 4, 5, 3)


def test_conv_validation(be, fake_driver):
    with pytest.raises(ShapeError, match="does not fit a 2x2 input"):
        be.conv(be.Array(8), be.Array(36), be.Array(8), 1, 2, 2, 2, 3, 2, 1, 0)
    with pytest.raises(ShapeError, match="stride and K must be >= 1"):
        be.conv(be.Array(8), be.Array(36), be.Array(8), 1, 2, 2, 2, 3, 2, 0, 1)
    with pytest.raises(ShapeError, match="conv: 'b' has 10 elements but 36 are needed"):
        be.conv(be.Array(8), be.Array(10), be.Array(8), 1, 2, 2, 2, 3, 2, 1, 1)


def test_matmul_tiled_needs_multiples(be, fake_driver):
    with pytest.raises(ShapeError, match="multiples of the tile size 8"):
        be.matmul_tiled(be.Array(100), be.Array(100), be.Array(100), 10, 10, 10)


# -- CUDA errors -> needle errors ---------------------------------------------------
def test_launch_error_names_cuda_error_and_action(be, fake_driver):
    a = be.Array(16)
    fake_driver.fail["cuLaunchKernel"] = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"
    with pytest.raises(CudaError) as info:
        be.ewise_exp(a, a)
    e = info.value
    assert isinstance(e, RuntimeError)
    assert e.error_name == "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"
    assert "launching ewise_exp_f32" in str(e) and "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES" in str(e)


def test_module_load_error(be, fake_driver):
    fake_driver.fail["cuModuleLoadData"] = "CUDA_ERROR_NO_BINARY_FOR_GPU"
    with pytest.raises(CudaError, match=r"loading kernel module ewise.cu \(sm_80\) on cuda:0 failed: "
                                        r"CUDA_ERROR_NO_BINARY_FOR_GPU"):
        be.fill(be.Array(4), 0.0)


def test_out_of_memory_becomes_memory_error_after_emptying_cache(be, fake_driver):
    a = be.Array(1000)
    del a                                  # its block goes to the cache
    assert _runtime.runtime(0).allocator.cached_bytes == 4096
    fake_driver.fail["cuMemAlloc"] = "CUDA_ERROR_OUT_OF_MEMORY"
    with pytest.raises(MemoryError, match="CUDA_ERROR_OUT_OF_MEMORY"):
        be.Array(10**6)
    assert fake_driver.freed, "the cache is emptied before giving up"
    assert _runtime.runtime(0).allocator.cached_bytes == 0


def test_other_alloc_errors_stay_cuda_errors(be, fake_driver):
    fake_driver.fail["cuMemAlloc"] = "CUDA_ERROR_INVALID_VALUE"
    with pytest.raises(CudaError, match="allocating 4096 bytes on cuda:0 failed: CUDA_ERROR_INVALID_VALUE"):
        be.Array(1024)


def test_sync_error_on_copy_back(be, fake_driver):
    a = be.Array(8)
    fake_driver.fail["cuStreamSynchronize"] = "CUDA_ERROR_ILLEGAL_ADDRESS"
    with pytest.raises(CudaError, match="synchronising cuda:0 failed: CUDA_ERROR_ILLEGAL_ADDRESS"):
        be.to_numpy(a, (8,), (1,), 0)


def test_context_error_on_first_use(fake_driver):
    fake_driver.fail["cuDevicePrimaryCtxRetain"] = "CUDA_ERROR_DEVICE_UNAVAILABLE"
    with pytest.raises(CudaError, match="retaining the primary context of cuda:0 failed: "
                                        "CUDA_ERROR_DEVICE_UNAVAILABLE"):
        CudaBackend().Array(4)


# -- memory and copies --------------------------------------------------------------
def test_freed_blocks_are_reused_and_returned_by_empty_cache(be, fake_driver):
    a = be.Array(256)
    p = a.ptr()
    del a
    b = be.Array(200)            # same 1 KiB class -> same block, no new cuMemAlloc
    assert b.ptr() == p and len(fake_driver.allocs) == 1
    del b
    assert be.empty_cache() == 1024
    assert fake_driver.freed == [p]


def test_to_numpy_contiguous_copies_directly(be, fake_driver):
    a = be.Array(100)
    r = be.to_numpy(a, (4, 5), (5, 1), 10)
    assert r.shape == (4, 5) and r.dtype == np.float32
    assert fake_driver.host_copies[-1] == ("dtoh", a.ptr() + 40, 80)
    assert fake_driver.launches == []
    be.to_numpy(a, (5, 4), (1, 5), 0)        # transposed: compact on the GPU first
    assert fake_driver.launches[-1][0] == "compact_f32_i32"


def test_from_numpy_checks_size(be, fake_driver):
    out = be.Array(6, "float64")
    be.from_numpy(np.arange(6.0), out)
    assert fake_driver.host_copies[-1] == ("htod", out.ptr(), 48)
    with pytest.raises(ShapeError):
        be.from_numpy(np.arange(5.0), out)


def test_config_lists_devices(be, fake_driver):
    cfg = be.config()
    assert cfg["driver"] == "13.0"
    assert cfg["devices"][0]["name"] == "Fake GPU" and cfg["devices"][0]["arch"] == "sm_80"
    assert cfg["nvrtc"].count(".") == 1


def test_launches_make_the_context_current_only_when_it_is_not(be, fake_driver):
    a = be.Array(16)
    be.ewise_exp(a, a)
    before = fake_driver.ctx_switches
    for _ in range(5):
        be.ewise_exp(a, a)
    assert fake_driver.ctx_switches == before  # still ours: no driver call per op
    assert len(fake_driver.launches) >= 6


def test_a_launch_failing_under_a_foreign_context_is_retried_once_after_activating(be, fake_driver):
    a = be.Array(16)
    be.ewise_exp(a, a)
    real = fake_driver.cuLaunchKernel
    results = ["CUDA_ERROR_INVALID_HANDLE"]  # first try fails as if another context were current

    def flaky(*args):
        if results:
            return (getattr(fake_driver.CUresult, results.pop()),)
        return real(*args)
    fake_driver.cuLaunchKernel = flaky
    be._rt()._cuLaunchKernel = flaky
    before = fake_driver.ctx_switches
    n = len(fake_driver.launches)
    be.ewise_exp(a, a)
    assert fake_driver.ctx_switches == before + 1 and len(fake_driver.launches) == n + 1
    # a failure that persists is reported, naming the launch
    fake_driver.fail["cuLaunchKernel"] = "CUDA_ERROR_INVALID_VALUE"
    be._rt()._cuLaunchKernel = real
    with pytest.raises(CudaError, match="launching ewise_exp_f32.*CUDA_ERROR_INVALID_VALUE"):
        be.ewise_exp(a, a)


def test_a_whole_tensor_sum_runs_in_two_passes_over_all_blocks(be, fake_driver):
    n = 1 << 22
    a, out = be.Array(n), be.Array(1)
    be.reduce_max(a, out, n)
    first, second = fake_driver.launches[-2], fake_driver.launches[-1]
    pieces = int(second[3][3])            # (a, out, rows, R): the second pass reduces the pieces
    assert first[0] == "reduce_max_block_f32" and int(first[3][2]) == pieces > 1
    assert int(first[3][3]) * pieces == n and first[1][0] > 1
    assert int(second[3][2]) == 1


def test_thin_matmul_with_long_k_launches_pieces_then_sums_them(be, fake_driver):
    m, n, p = 1, 131072, 16
    a, b, out = be.Array(m * n), be.Array(n * p), be.Array(m * p)
    be.matmul(a, b, out, m, n, p)
    gemm, compact, reduce = fake_driver.launches[-3:]
    assert gemm[0].startswith("matmul_strided_f32") and compact[0].startswith("compact_f32")
    assert reduce[0].startswith("reduce_sum")
    pieces = int(gemm[3][6])                      # the batch argument: one product per piece
    assert pieces > 1 and int(gemm[3][4]) * pieces == n
    assert list(gemm[3][7]) == [0, n // pieces, n, 1]          # a: offset, batch, row, col strides
    assert list(gemm[3][8]) == [0, (n // pieces) * p, p, 1]
    assert int(reduce[3][2]) == m * p and int(reduce[3][3]) == pieces


@pytest.mark.parametrize("op,short", [("conv", "b"), ("conv_grad_input", "g"), ("conv_grad_weight", "out")])
def test_conv_buffers_too_small_for_their_role_are_refused(be, fake_driver, op, short):
    N, H, W, C, K, Co = 2, 4, 4, 2, 3, 4          # stride 1, padding 1: output 4x4
    sizes = {"in": N * H * W * C, "weight": K * K * C * Co, "out": N * H * W * Co}
    roles = {"conv": {"a": "in", "b": "weight", "out": "out"},
             "conv_grad_input": {"g": "out", "b": "weight", "out": "in"},
             "conv_grad_weight": {"a": "in", "g": "out", "out": "weight"}}[op]
    bufs = [be.Array(sizes[role] - (name == short)) for name, role in roles.items()]
    with pytest.raises(ShapeError, match=f"{op}: '{short}' has {sizes[roles[short]] - 1} elements"):
        getattr(be, op)(*bufs, N, H, W, C, K, Co, 1, 1)
    assert fake_driver.launches == []
