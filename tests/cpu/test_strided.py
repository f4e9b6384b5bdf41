"""compact / ewise_setitem / scalar_setitem / to_numpy on random strided views."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from needle.errors import ShapeError

from cpu_buffers import DTYPES, get, put


def view(buf_np, shape, strides, offset):
    item = buf_np.itemsize
    return np.lib.stride_tricks.as_strided(buf_np[offset:], shape, [s * item for s in strides])


@st.composite
def strided_views(draw, max_ndim=4, max_dim=6):
    """(shape, strides, offset, buffer size) for a random view, strides possibly 0
    (broadcast), permuted, or gapped."""
    ndim = draw(st.integers(0, max_ndim))
    shape = [draw(st.integers(0, max_dim)) for _ in range(ndim)]
    strides = [draw(st.integers(0, 40)) for _ in range(ndim)]
    offset = draw(st.integers(0, 20))
    reach = sum((n - 1) * s for n, s in zip(shape, strides) if n > 0)
    extra = draw(st.integers(0, 5))
    return tuple(shape), tuple(strides), offset, offset + reach + 1 + extra


@settings(max_examples=150, deadline=None, derandomize=True)
@given(v=strided_views(), dt=st.sampled_from(DTYPES))
def test_compact_and_to_numpy(be, v, dt):
    shape, strides, offset, size = v
    src = np.arange(size, dtype=dt) * 0.5 + 1
    buf = put(be, src)
    ref = view(src, shape, strides, offset)
    n = int(np.prod(shape))
    out = be.Array(n, dt)
    be.compact(buf, out, shape, strides, offset)
    np.testing.assert_array_equal(get(be, out), ref.ravel())
    np.testing.assert_array_equal(be.to_numpy(buf, shape, strides, offset), ref)


@st.composite
def writable_views(draw):
    """Views without overlap: a permutation of a compact layout inside a larger
    buffer, sliced with steps, at an offset."""
    ndim = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 6)) for _ in range(ndim)]
    steps = [draw(st.integers(1, 3)) for _ in range(ndim)]
    full = [n * s for n, s in zip(shape, steps)]
    perm = draw(st.permutations(range(ndim)))
    # compact strides of `full` laid out in the permuted order
    strides_full = [0] * ndim
    acc = 1
    for k in reversed(perm):
        strides_full[k] = acc
        acc *= full[k]
    strides = tuple(sf * s for sf, s in zip(strides_full, steps))
    offset = draw(st.integers(0, 7))
    return tuple(shape), strides, offset, offset + acc


@settings(max_examples=150, deadline=None, derandomize=True)
@given(v=writable_views(), dt=st.sampled_from(DTYPES))
def test_setitems(be, v, dt):
    shape, strides, offset, size = v
    n = int(np.prod(shape))
    base = np.arange(size, dtype=dt)
    vals = -np.arange(1, n + 1, dtype=dt)

    buf = put(be, base)
    be.ewise_setitem(put(be, vals), buf, shape, strides, offset)
    ref = base.copy()
    view(ref, shape, strides, offset)[...] = vals.reshape(shape)
    np.testing.assert_array_equal(get(be, buf), ref)

    buf = put(be, base)
    be.scalar_setitem(n, 7.25, buf, shape, strides, offset)
    ref = base.copy()
    view(ref, shape, strides, offset)[...] = 7.25
    np.testing.assert_array_equal(get(be, buf), ref)


def _compact_and_scatter_back(be, dtype, x, t):
    """compact() of the view ``t`` of ``x`` equals NumPy's, and scattering the
    compact data back through the same view rebuilds ``x``."""
    strides = tuple(s // x.itemsize for s in t.strides)
    out = be.Array(x.size, dtype)
    be.compact(put(be, x), out, t.shape, strides, 0)
    np.testing.assert_array_equal(get(be, out, t.shape), t)
    back = be.Array(x.size, dtype)
    be.ewise_setitem(out, back, t.shape, strides, 0)
    np.testing.assert_array_equal(get(be, back, x.shape), x)


@pytest.mark.parametrize("shape", [(4096, 4096), (1000, 333), (33, 65), (3, 1000, 77)])
def test_transposed_compact_large(be, dtype, shape):
    """The blocked-transpose fast path (and its threaded split) on big views."""
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    _compact_and_scatter_back(be, dtype, x, np.swapaxes(x, -1, -2))


@pytest.mark.parametrize("shape,perm", [((32, 64, 64), (2, 1, 0)), ((33, 70, 5), (2, 1, 0)),
                                        ((7, 40, 3, 65), (3, 1, 2, 0)), ((32, 256, 32), (1, 2, 0)),
                                        ((5, 9, 70, 3), (2, 0, 3, 1))])
def test_permuted_compact_with_unit_stride_on_an_outer_axis(be, dtype, shape, perm):
    """Permutations whose source unit stride lands on an outer axis of the view
    (a (B, T, D) array seen as (D, T, B)) take the tile path too: that axis is
    brought next to the innermost (it walked the large stride before, 2.7 GB/s)."""
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    _compact_and_scatter_back(be, dtype, x, np.transpose(x, perm))


def test_broadcast_compact(be, dtype):
    row = np.arange(1000, dtype=dtype)
    out = be.Array(300 * 1000, dtype)
    be.compact(put(be, row), out, (300, 1000), (0, 1), 0)
    np.testing.assert_array_equal(get(be, out, (300, 1000)), np.broadcast_to(row, (300, 1000)))
    col = np.arange(300, dtype=dtype)
    be.compact(put(be, col), out, (300, 1000), (1, 0), 0)
    np.testing.assert_array_equal(get(be, out, (300, 1000)), np.broadcast_to(col[:, None], (300, 1000)))
    be.compact(put(be, np.array([3.0], dtype)), out, (300, 1000), (0, 0), 0)
    assert (get(be, out) == 3).all()


def test_large_contiguous_and_sliced(be, dtype):
    x = np.random.default_rng(1).standard_normal((512, 700)).astype(dtype)
    buf = put(be, x)
    sl = x[3:500:2, 5:690]
    strides = tuple(s // x.itemsize for s in sl.strides)
    off = 3 * 700 + 5
    out = be.Array(sl.size, dtype)
    be.compact(buf, out, sl.shape, strides, off)
    np.testing.assert_array_equal(get(be, out, sl.shape), sl)
    whole = be.Array(x.size, dtype)
    be.compact(buf, whole, (x.size,), (1,), 0)
    np.testing.assert_array_equal(get(be, whole), x.ravel())


def test_strided_validation(be):
    a = be.Array(10)
    out = be.Array(100)
    with pytest.raises(ShapeError, match="compact"):
        be.compact(a, out, (2, 6), (6, 1), 0)           # reaches element 11
    with pytest.raises(ShapeError):
        be.compact(a, out, (2, 5), (5, 1), 1)           # offset pushes past the end
    with pytest.raises(ShapeError):
        be.compact(a, out, (2, 5), (5, -1), 4)          # negative stride
    with pytest.raises(ShapeError):
        be.compact(a, out, (2, 5), (5,), 0)             # length mismatch
    with pytest.raises(ShapeError):
        be.compact(a, out, (2, 5), (5, 1), -1)          # negative offset
    with pytest.raises(ShapeError):
        be.compact(a, be.Array(3), (2, 5), (5, 1), 0)   # out too small
    with pytest.raises(ShapeError):
        be.ewise_setitem(be.Array(3), a, (2, 5), (5, 1), 0)
    with pytest.raises(ShapeError):
        be.ewise_setitem(out, a, (11,), (1,), 0)
    with pytest.raises(ShapeError):
        be.scalar_setitem(10, 1.0, a, (3, 4), (4, 1), 0)
    with pytest.raises(ShapeError):
        be.scalar_setitem(5, 1.0, a, (2, 3), (3, 1), 0)  # size != prod(shape)
    with pytest.raises(ShapeError):
        be.to_numpy(a, (3, 4), (4, 1), 0)
    with pytest.raises(ShapeError):
        be.compact(a, out, (1,) * 40, (1,) * 40, 0)     # too many dimensions
    # empty views never touch memory, whatever their strides
    be.compact(a, out, (0, 5), (1000, 1000), 0)
