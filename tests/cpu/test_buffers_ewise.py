"""Buffers, element-wise, scalar and unary kernels of the CPU backend against NumPy."""

import numpy as np
import pytest

from needle.errors import ShapeError, UnsupportedDTypeError

from cpu_buffers import get, put

# sizes straddle the serial/parallel thresholds (32K cheap, 4K libm) and vector tails
SIZES = [0, 1, 7, 33, 4099, 40000, 100003]


def rand(n, dtype, seed=0, low=-3.0, high=3.0):
    return np.random.default_rng(seed).uniform(low, high, n).astype(dtype)


def test_array_basics(be, dtype):
    for n in (0, 1, 1000):
        a = be.Array(n, dtype)
        assert a.size == n and a.dtype == dtype
        assert a.ptr() % 64 == 0
    assert be.Array(3).dtype == np.float32


def test_array_rejects_bad_dtype_and_size(be):
    with pytest.raises(UnsupportedDTypeError, match="cpu"):
        be.Array(4, np.int32)
    with pytest.raises(UnsupportedDTypeError):
        be.Array(4, "float16")
    with pytest.raises(ValueError):
        be.Array(-1)


def test_buffers_are_reused(be):
    import needle_cpu._ext as ext

    ext.pool_clear()  # the cache is bounded (16 MiB): start with room in it
    a = be.Array(1 << 16)
    p = a.ptr()
    del a
    assert ext.pool_cached_bytes() >= (1 << 18)
    b = be.Array((1 << 16) - 5)  # same size class
    assert b.ptr() == p


def test_pool_stats_count_what_the_cache_could_not_serve(be):
    import needle_cpu._ext as ext

    ext.pool_clear()
    before = ext.pool_stats()
    a = be.Array(5000)              # 20,000 bytes: class 20,480
    del a
    b = be.Array(4900)              # same class: served from the cache
    after = ext.pool_stats()
    assert after["fresh_buffers"] - before["fresh_buffers"] == 1
    assert after["fresh_bytes"] - before["fresh_bytes"] == 20480
    # many same-size temporaries freed at once are all kept (an LSTM step frees dozens)
    many = [be.Array(1000) for _ in range(40)]
    del many, b
    mid = ext.pool_stats()
    again = [be.Array(1000) for _ in range(40)]
    assert ext.pool_stats()["fresh_buffers"] == mid["fresh_buffers"]
    assert mid["cached_bytes"] >= 40 * 4096
    del again


def test_cache_of_large_buffers_is_bounded(be):
    """Freed activation-sized buffers go back to the system past the cache's
    16 MiB bound (512 MiB of stale buffers once inflated a training step's
    peak memory); mapped buffers read and write like the others."""
    import needle_cpu._ext as ext

    ext.pool_clear()
    arrs = [be.Array(3 << 20) for _ in range(8)]  # 12 MiB each
    for i, a in enumerate(arrs):
        be.fill(a, float(i))
    np.testing.assert_array_equal(get(be, arrs[5])[:: 1 << 18], 5.0)
    del arrs, a
    assert ext.pool_cached_bytes() <= 16 << 20
    b = be.Array(3 << 20)
    be.fill(b, 1.5)
    assert float(get(be, b).sum()) == 1.5 * (3 << 20)
    # buffers past the whole bound: the 4 most recently freed are kept aside, so a loop
    # over such sizes (an LSTM's logits) reuses them instead of faulting fresh pages
    ext.pool_clear()
    bigs = [be.Array((5 << 20) + k * 1024) for k in range(1, 6)]  # 20-24 MiB: one size class
    ptrs = [b.ptr() for b in bigs]
    while bigs:
        del bigs[0]  # freed in order: ptrs[0] first
    assert ext.pool_cached_bytes() == 4 * (24 << 20)  # class of 20 MiB + a little: 24 MiB
    before = ext.pool_stats()["fresh_buffers"]
    again = [be.Array((5 << 20) + 2048) for _ in range(4)]
    assert ext.pool_stats()["fresh_buffers"] == before
    assert sorted(a.ptr() for a in again) == sorted(ptrs[1:])  # the first freed went back
    del again


def test_mapped_buffers_start_off_the_page_boundary(be, dtype):
    """Mapped (>= 1 MiB) buffers start 256 bytes past their page: arrays that
    all start on a page (or 2 MiB) boundary alias in the caches and the 4 KiB
    store-forwarding check (an MPI allreduce of 64 MiB ran 30% slower).  A
    buffer filled to its size class's last byte (4 MiB, 64 MiB: the class
    equals the size) reaches into the padding page and reads back whole."""
    import needle_cpu._ext as ext

    ext.pool_clear()
    for nbytes in (1 << 20, 4 << 20, 5 << 20, 64 << 20):
        n = nbytes // np.dtype(dtype).itemsize
        x = rand(n, dtype, seed=nbytes % 97)
        a = put(be, x)
        assert a.ptr() % 4096 == 256 and a.ptr() % 64 == 0
        np.testing.assert_array_equal(get(be, a), x)
        be.fill(a, -2.5)
        out = get(be, a)
        assert out[0] == out[-1] == -2.5 and float(out.sum()) == -2.5 * n
        del a


@pytest.mark.parametrize("n", SIZES)
def test_from_to_numpy_and_fill(be, dtype, n):
    x = rand(n, dtype)
    buf = put(be, x)
    np.testing.assert_array_equal(get(be, buf), x)
    be.fill(buf, 2.5)
    np.testing.assert_array_equal(get(be, buf), np.full(n, 2.5, dtype))


BINARY = {
    "ewise_add": np.add,
    "ewise_sub": np.subtract,
    "ewise_mul": np.multiply,
    "ewise_div": np.divide,
    "ewise_maximum": np.maximum,
    "ewise_eq": lambda a, b: (a == b).astype(a.dtype),
    "ewise_ge": lambda a, b: (a >= b).astype(a.dtype),
    "ewise_relu_grad": lambda a, g: g * (a > 0),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("n", SIZES)
def test_binary(be, dtype, name, n):
    a, b = rand(n, dtype, 1), rand(n, dtype, 2)
    if n > 3:
        b[:3] = a[:3]  # exercise equality
    out = be.Array(n, dtype)
    getattr(be, name)(put(be, a), put(be, b), out)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(get(be, out), BINARY[name](a, b).astype(dtype))


def test_special_values(be, dtype):
    a = np.array([np.nan, 1.0, -np.inf, 0.0, 2.0, np.nan], dtype)
    b = np.array([1.0, np.nan, 3.0, 0.0, -np.inf, np.nan], dtype)
    out = be.Array(6, dtype)
    with np.errstate(all="ignore"):
        for name, ref in [("ewise_maximum", np.maximum(a, b)), ("ewise_div", a / b),
                          ("ewise_eq", (a == b).astype(dtype)), ("ewise_ge", (a >= b).astype(dtype))]:
            getattr(be, name)(put(be, a), put(be, b), out)
            np.testing.assert_array_equal(get(be, out), ref, err_msg=name)
        be.ewise_log(put(be, np.array([-1.0, 0.0, 1.0], dtype)), out3 := be.Array(3, dtype))
        np.testing.assert_array_equal(get(be, out3), np.log(np.array([-1.0, 0.0, 1.0], dtype)))
        be.reduce_max(put(be, a), o1 := be.Array(1, dtype), 6)
        assert np.isnan(get(be, o1)[0])


def test_ewise_pow(be, dtype):
    a = rand(1000, dtype, 3, 0.1, 3.0)
    b = rand(1000, dtype, 4, -2.0, 2.0)
    a[:10] = -a[:10]
    b[:5] = np.round(b[:5])  # negative base, integer exponent is fine
    out = be.Array(1000, dtype)
    be.ewise_pow(put(be, a), put(be, b), out)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(get(be, out), np.power(a, b), rtol=2e-6 if dtype == np.float32 else 1e-14)


def ref_scalar(name, a, v):
    v = a.dtype.type(v)
    return {
        "scalar_add": lambda: a + v,
        "scalar_sub": lambda: a - v,
        "scalar_mul": lambda: a * v,
        "scalar_div": lambda: a / v,
        "scalar_rdiv": lambda: v / a,
        "scalar_power": lambda: np.power(a, v),
        "scalar_maximum": lambda: np.maximum(a, v),
        "scalar_eq": lambda: (a == v).astype(a.dtype),
        "scalar_ge": lambda: (a >= v).astype(a.dtype),
    }[name]()


@pytest.mark.parametrize("name", ["scalar_add", "scalar_sub", "scalar_mul", "scalar_div",
                                  "scalar_rdiv", "scalar_maximum", "scalar_eq", "scalar_ge"])
@pytest.mark.parametrize("n", SIZES)
def test_scalar(be, dtype, name, n):
    a = rand(n, dtype, 5)
    if n:
        a[0] = 0.5
    out = be.Array(n, dtype)
    getattr(be, name)(put(be, a), 0.5, out)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(get(be, out), ref_scalar(name, a, 0.5))


@pytest.mark.parametrize("val", [2.0, 3.0, 1.0, 0.5, -1.5, 0.0])
def test_scalar_power(be, dtype, val):
    a = rand(5000, dtype, 6)
    out = be.Array(5000, dtype)
    be.scalar_power(put(be, a), val, out)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(get(be, out), ref_scalar("scalar_power", a, val),
                                   rtol=1e-6 if dtype == np.float32 else 1e-14)


UNARY = {"ewise_neg": np.negative, "ewise_log": np.log, "ewise_exp": np.exp, "ewise_tanh": np.tanh}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("n", SIZES)
def test_unary(be, dtype, name, n):
    a = rand(n, dtype, 7, 0.01 if name == "ewise_log" else -5, 5)
    out = be.Array(n, dtype)
    getattr(be, name)(put(be, a), out)
    np.testing.assert_allclose(get(be, out), UNARY[name](a), rtol=4e-7 if dtype == np.float32 else 1e-15)


def test_in_place_aliasing(be, dtype):
    """out may be one of the inputs (the protocol's default compositions do it)."""
    a = rand(50000, dtype, 8)
    b = rand(50000, dtype, 9)
    ba, bb = put(be, a), put(be, b)
    be.ewise_add(ba, bb, bb)
    np.testing.assert_array_equal(get(be, bb), a + b)
    be.scalar_mul(ba, 2.0, ba)
    np.testing.assert_array_equal(get(be, ba), a * 2)


def test_elementwise_validation(be):
    a32, b32 = be.Array(10), be.Array(10)
    with pytest.raises(UnsupportedDTypeError, match="ewise_add"):
        be.ewise_add(a32, be.Array(10, np.float64), b32)
    with pytest.raises(ShapeError, match="ewise_mul"):
        be.ewise_mul(be.Array(5), a32, b32)
    with pytest.raises(ShapeError):
        be.scalar_add(be.Array(3), 1.0, a32)
    with pytest.raises(ShapeError):
        be.ewise_exp(be.Array(3), a32)
    with pytest.raises(TypeError):
        be.ewise_add(np.zeros(10, np.float32), a32, b32)
    with pytest.raises(TypeError):
        be.ewise_add(None, a32, b32)
    with pytest.raises(ShapeError):
        be.from_numpy(np.zeros(11, np.float32), a32)
