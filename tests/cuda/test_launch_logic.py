"""CPU-side logic: argument packing, dimension merging, index width, launch
shapes, GEMM tile choice, allocator size classes."""

import ctypes

import numpy as np
import pytest

from needle.errors import ShapeError
from needle_cuda import _launch
from needle_cuda._launch import DevicePtr
from needle_cuda._memory import CachingAllocator, size_class


def test_pack_args_points_at_exact_bytes():
    view = np.arange(18, dtype=np.int64)
    args = [DevicePtr(0xDEADBEEF00), np.int32(-7), np.int64(2**40), np.float32(1.5), np.float64(-2.25), view]
    packed = _launch.pack_args(args)
    ptrs = packed.pointers
    assert len(ptrs) == 6
    # kernelParams: a table of the argument addresses
    assert list((ctypes.c_uint64 * 6).from_address(packed.params)) == ptrs
    sizes = [8, 4, 8, 4, 8, 8 * 18]
    got = [ctypes.string_at(int(p), n) for p, n in zip(ptrs, sizes)]
    assert all(int(p) % 8 == 0 for p in ptrs)  # every argument 8-byte aligned
    assert got[0] == (0xDEADBEEF00).to_bytes(8, "little")
    assert got[1] == np.int32(-7).tobytes() and len(got[1]) == 4
    assert got[2] == np.int64(2**40).tobytes()
    assert got[3] == np.float32(1.5).tobytes() and len(got[3]) == 4
    assert got[4] == np.float64(-2.25).tobytes()
    assert got[5] == view.tobytes()
    assert [_launch.arg_bytes(a) for a in args] == got


def test_pack_args_reuses_the_layout_but_never_the_values():
    view = np.arange(18, dtype=np.int64)
    first = _launch.pack_args([DevicePtr(16), np.float32(1.0), view])
    second = _launch.pack_args([DevicePtr(32), np.float32(-3.0), view * 2])
    p2 = second.pointers  # valid while `second` (its storage) is alive
    assert ctypes.string_at(first.pointers[0], 8) == (16).to_bytes(8, "little")
    assert ctypes.string_at(int(p2[0]), 8) == (32).to_bytes(8, "little")
    assert ctypes.string_at(int(p2[1]), 4) == np.float32(-3.0).tobytes()
    assert ctypes.string_at(int(p2[2]), 8 * 18) == (view * 2).tobytes()
    # a struct of another length or dtype is a different signature, checked again
    with pytest.raises(TypeError, match="kernel argument 0"):
        _launch.pack_args([view.astype(np.int32)])


@pytest.mark.parametrize("bad", [3, 2.5, True, None, "x", np.zeros(3, np.float32)])
def test_pack_args_refuses_values_without_a_width(bad):
    with pytest.raises(TypeError, match="kernel argument 0"):
        _launch.pack_args([bad])


@pytest.mark.parametrize("shape,strides,expect", [
    ((2, 3, 4), (12, 4, 1), ((24,), (1,))),
    ((2, 3, 4), (12, 1, 3), ((2, 3, 4), (12, 1, 3))),
    ((2, 1, 4), (4, 99, 1), ((8,), (1,))),
    ((5, 6), (0, 0), ((30,), (0,))),            # full broadcast of one element
    ((5, 6), (0, 1), ((5, 6), (0, 1))),
    ((1, 1), (7, 9), ((1,), (1,))),
    ((4, 3), (6, 2), ((12,), (2,))),            # every other element
])
def test_coalesce(shape, strides, expect):
    assert _launch.coalesce(shape, strides) == expect


def test_coalesce_visits_the_same_elements():
    rng = np.random.default_rng(0)
    base = np.arange(4000)
    for _ in range(200):
        nd = rng.integers(1, 6)
        shape = tuple(int(x) for x in rng.integers(1, 4, nd))
        # random mixture of contiguous, broadcast and permuted strides
        strides = tuple(int(x) for x in rng.choice([0, 1, 2, 3, 6, 12, 36], nd))
        view = np.lib.stride_tricks.as_strided(base, shape, [s * 8 for s in strides])
        cs, cst = _launch.coalesce(shape, strides)
        cview = np.lib.stride_tricks.as_strided(base, cs, [s * 8 for s in cst])
        assert np.array_equal(view.ravel(), cview.ravel()), (shape, strides)


def test_strided_view_layout_and_limit():
    v = _launch.strided_view((2, 3), (1, 2), 5, "compact")
    assert v.dtype == np.int64 and v.shape == (18,)
    assert list(v[:4]) == [2, 5, 2, 3] and list(v[10:12]) == [1, 2]
    with pytest.raises(ShapeError, match="compact: .* at most 8 dimensions"):
        _launch.strided_view((2,) * 9, tuple(3 ** i for i in range(9)), 0, "compact")


def test_index_bits():
    assert _launch.index_bits(100, (10, 10), (10, 1), 0) == 32
    assert _launch.index_bits(2**31, (2**31,), (1,), 0) == 64       # linear index too big
    assert _launch.index_bits(4, (2, 2), (2**31, 1), 0) == 64       # buffer index too big
    assert _launch.index_bits(4, (4,), (1,), 2**31 - 10) == 32      # reaches 2^31-7: fits
    assert _launch.max_index((0, 5), (5, 1), 3) == 2


def test_grid_1d():
    assert _launch.grid_1d(1, 100) == (1, 256)
    assert _launch.grid_1d(256 * 4, 100, per_thread=4) == (1, 256)
    assert _launch.grid_1d(256 * 4 + 1, 100, per_thread=4) == (2, 256)
    assert _launch.grid_1d(2**30, 132) == (32 * 132, 256)         # capped; the loop strides


def test_row_plan():
    assert _launch.row_plan(10000, 10, 132).variant == "warp"
    assert _launch.row_plan(10000, 10, 132).grid == 1250
    assert _launch.row_plan(8, 100000, 132).variant == "block"
    assert _launch.row_plan(8, 100, 132).variant == "block"       # few rows: a block each
    assert _launch.row_plan(100000, 5000, 132).grid == 64 * 132


def test_gemm_config_and_grid():
    assert _launch.gemm_config(4096, 4096, 1, 132).name == "big"
    assert _launch.gemm_config(1024, 1024, 1, 132).name == "small"   # 64 big tiles < 132 SMs
    assert _launch.gemm_config(1024, 1024, 4, 132).name == "big"
    assert _launch.gemm_config(64, 100000, 1, 132).name == "small"
    assert _launch.gemm_grid(4096, 4096, 1, _launch.GEMM_BIG) == (32, 32, 1)
    assert _launch.gemm_grid(100, 10**7, 70000, _launch.GEMM_SMALL) == (2, 65535, 65535)


def test_conv_helpers():
    assert _launch.conv_out_size(32, 3, 1, 1) == 32
    assert _launch.conv_out_size(32, 3, 2, 1) == 16
    assert list(_launch.conv_geom(2, 9, 7, 3, 3, 5, 2, 1)) == [2, 9, 7, 3, 3, 5, 2, 1, 5, 4]


def test_size_class():
    assert size_class(0) == 0
    assert size_class(1) == 512 and size_class(512) == 512 and size_class(513) == 1024
    assert size_class(1 << 20) == 1 << 20
    assert size_class((1 << 20) + 1) == 2 << 20
    assert size_class(5 << 20) == 6 << 20


def test_caching_allocator_reuse_and_oom_retry():
    live, freed, syncs = {}, [], []
    budget = [4096]

    def alloc(n):
        if sum(live.values()) + n > budget[0]:
            raise MemoryError("fake OOM")
        p = 4096 * (len(live) + len(freed) + 1)
        live[p] = n
        return p

    def free(p):
        freed.append(p)
        live.pop(p)

    al = CachingAllocator(alloc, free, lambda: syncs.append(1))
    p1, c1 = al.allocate(1000)
    assert c1 == 1024 and al.in_use_bytes == 1024
    al.release(p1, c1)
    assert al.cached_bytes == 1024 and al.in_use_bytes == 0
    p2, _ = al.allocate(600)                   # same class: reused
    assert p2 == p1 and len(live) == 1
    al.release(p2, 1024)
    p3, c3 = al.allocate(3500)                 # needs the cached 1 KiB back: emptied, then retried
    assert c3 == 3584 and freed == [p1] and syncs
    assert al.allocate(0) == (0, 0)
    with pytest.raises(MemoryError):
        al.allocate(4096)


def test_split_rows_cuts_long_reductions_into_equal_pieces():
    assert _launch.split_rows(1, 4_000_000, 132) > 1
    c = _launch.split_rows(1, 4_000_000, 132)
    assert 4_000_000 % c == 0 and 4_000_000 // c >= 4096
    assert _launch.split_rows(1, 10007 * 7, 132) == 7       # only divisors qualify
    assert _launch.split_rows(1, 65_537, 132) == 1          # prime: one pass
    assert _launch.split_rows(1000, 1 << 20, 132) == 1      # rows already fill the GPU
    assert _launch.split_rows(4, 1000, 132) == 1            # short rows


def test_split_k_only_for_thin_single_products_with_long_k():
    s = _launch.split_k(1, 1, 131072, 16, 132)
    assert s > 1 and 131072 % s == 0 and 131072 // s >= 1024
    assert _launch.split_k(2, 1, 131072, 16, 132) == 1        # batched: no
    assert _launch.split_k(1, 4096, 131072, 4096, 132) == 1   # enough tiles already
    assert _launch.split_k(1, 1, 2048, 16, 132) == 1          # short K
    assert _launch.split_k(1, 1, 65537, 16, 132) == 1         # prime K
