"""reduce_sum / reduce_max and the logsumexp / softmax overrides against NumPy."""

import numpy as np
import pytest

from needle.errors import ShapeError

from cpu_buffers import get, put

SHAPES = [(1, 1), (5, 1), (1, 7), (3, 17), (100, 33), (2, 100000), (1, 1 << 20), (4096, 64), (7, 5000)]


@pytest.mark.parametrize("shape", SHAPES)
def test_reduce_sum(be, dtype, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    out = be.Array(shape[0], dtype)
    be.reduce_sum(put(be, x), out, shape[1])
    ref = x.astype(np.float64).sum(axis=1)
    scale = np.abs(x).astype(np.float64).sum(axis=1) + 1
    err = np.abs(get(be, out) - ref) / scale
    assert err.max() < (1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("shape", SHAPES)
def test_reduce_max(be, dtype, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    out = be.Array(shape[0], dtype)
    be.reduce_max(put(be, x), out, shape[1])
    np.testing.assert_array_equal(get(be, out), x.max(axis=1))


def test_reduce_max_nan_and_negative(be, dtype):
    x = -np.arange(1, 3 * 50001 + 1, dtype=dtype).reshape(3, 50001)
    x[1, 777] = np.nan
    out = be.Array(3, dtype)
    be.reduce_max(put(be, x), out, 50001)
    np.testing.assert_array_equal(get(be, out), x.max(axis=1))
    one = be.Array(1, dtype)
    be.reduce_max(put(be, x[1].copy()), one, 50001)  # long single row: split over threads
    assert np.isnan(get(be, one)[0])


def ref_logsumexp(x):
    m = x.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]


@pytest.mark.parametrize("shape", [(1, 1), (4, 10), (128, 10), (300, 1000), (2, 70000)])
def test_logsumexp_softmax(be, dtype, shape):
    x = (np.random.default_rng(2).standard_normal(shape) * 30).astype(dtype)
    ov = be.op_overrides()
    out = be.Array(shape[0], dtype)
    ov["logsumexp"](put(be, x), out, *shape)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(get(be, out), ref_logsumexp(x64), rtol=1e-6 if dtype == np.float32 else 1e-13)
    sm = be.Array(x.size, dtype)
    ov["softmax"](put(be, x), sm, *shape)
    ref = np.exp(x64 - ref_logsumexp(x64)[:, None])
    np.testing.assert_allclose(get(be, sm, shape), ref, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-7 if dtype == np.float32 else 1e-15)


def test_logsumexp_infinite_rows(be):
    x = np.array([[-np.inf, -np.inf], [np.inf, 0.0], [1.0, -np.inf]], np.float32)
    out = be.Array(3)
    be.logsumexp(put(be, x), out, 3, 2)
    np.testing.assert_array_equal(get(be, out), [-np.inf, np.inf, 1.0])


def test_reduce_validation(be):
    with pytest.raises(ShapeError, match="reduce_sum"):
        be.reduce_sum(be.Array(10), be.Array(3), 4)
    with pytest.raises(ShapeError):
        be.reduce_max(be.Array(10), be.Array(2), 0)
    with pytest.raises(ShapeError):
        be.logsumexp(be.Array(10), be.Array(2), 3, 4)
    with pytest.raises(ShapeError):
        be.softmax(be.Array(12), be.Array(11), 3, 4)
    with pytest.raises(TypeError):
        be.reduce_sum(be.Array(10), be.Array(2, np.float64), 5)


@pytest.mark.parametrize("r", [1, 7, 31, 32, 33, 100, 1030])
def test_reduce_max_nan_in_every_position(be, dtype, r):
    """A nan in any lane of the 4 x 8 vector body or in the tail wins."""
    base = np.random.default_rng(r).uniform(-5, 5, r).astype(dtype)
    rows = np.repeat(base[None, :], r, axis=0)
    rows[np.arange(r), np.arange(r)] = np.nan  # row i has its nan at column i
    rows = np.concatenate([rows, base[None, :]])  # and one clean row
    out = be.Array(r + 1, dtype)
    be.reduce_max(put(be, rows), out, r)
    got = get(be, out)
    assert np.isnan(got[:r]).all()
    assert got[r] == base.max()


@pytest.mark.parametrize("r", [1, 9, 32, 33, 1023, 1024, 1025, 5000])
def test_reduce_sum_row_lengths(be, dtype, r):
    x = np.random.default_rng(r).uniform(-1, 1, (37, r)).astype(dtype)
    out = be.Array(37, dtype)
    be.reduce_sum(put(be, x), out, r)
    ref = x.astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(get(be, out), ref, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 * np.sqrt(r) if dtype == np.float32 else 1e-12)
