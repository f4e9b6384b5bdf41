"""NDArray behaviour that surviving mutants of core/backend_ndarray/ndarray.py
showed no test pinned (bash scripts/mutation.sh core/backend_ndarray/ndarray.py).

Every test compares with NumPy (or states the exact value) on each bundled
device; they stay small: each mutant of ndarray.py runs this whole file.
"""

import numpy as np
import pytest

from needle.backend_ndarray import ndarray as nd
from needle.backend_ndarray.ndarray import AxisError


def _a(x, device, dtype="float32"):
    return nd.array(np.asarray(x, dtype=dtype), device=device, dtype=dtype)


# --------------------------------------------------------------------------- #
# shape and axis arguments
# --------------------------------------------------------------------------- #
def test_a_bare_int_is_a_one_dimensional_shape(device):
    # empty/full/broadcast_to take an int (or a NumPy integer) as the shape (n,)
    assert nd.empty(3, device=device).shape == (3,)
    f = nd.full(np.int64(4), 2.5, device=device)
    assert f.shape == (4,) and f.strides == (1,)
    np.testing.assert_array_equal(f.numpy(), np.full(4, 2.5, np.float32))
    b = _a([7.0], device).broadcast_to(5)
    assert b.shape == (5,) and b.strides == (0,)
    np.testing.assert_array_equal(b.numpy(), np.full(5, 7.0, np.float32))


@pytest.mark.parametrize("shape", [(4,), (2, 3), (2, 3, 2)])
def test_reduction_axes_span_minus_ndim_to_ndim_minus_one(device, shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 3.0
    a = _a(x, device)
    ndim = len(shape)
    # both ends of the valid range, negative and positive
    for axis in (-ndim, ndim - 1, 0, -1):
        np.testing.assert_array_equal(a.sum(axis=axis).numpy(), x.sum(axis=axis))
        np.testing.assert_array_equal(a.max(axis=axis).numpy(), x.max(axis=axis))
    # one past either end is refused, and the message states the valid range
    for axis in (ndim, -ndim - 1, ndim + 1):
        with pytest.raises(AxisError, match=rf"axis {axis} is out of range .*valid axes are {-ndim}\.\.{ndim - 1}$"):
            a.sum(axis=axis)
        with pytest.raises(AxisError, match=rf"valid axes are {-ndim}\.\.{ndim - 1}$"):
            a.max(axis=(0, axis))


def test_a_zero_d_array_reduces_over_its_one_implicit_axis(device):
    # NumPy's reductions and PyTorch accept axis 0 and -1 on a 0-d array and
    # return the element; anything else is out of range (valid: -1..0)
    a = _a(np.float32(-2.5), device)
    for axis in (0, -1, (0,), (-1,)):
        for keepdims in (False, True):
            s, m = a.sum(axis=axis, keepdims=keepdims), a.max(axis=axis, keepdims=keepdims)
            assert s.shape == () and m.shape == ()
            assert s.numpy() == np.float32(-2.5) and m.numpy() == np.float32(-2.5)
    np.testing.assert_array_equal(a.flip((0,)).numpy(), np.float32(-2.5))
    np.testing.assert_array_equal(a.flip(-1).numpy(), np.float32(-2.5))
    for axis in (1, -2):
        with pytest.raises(AxisError, match=r"valid axes are -1\.\.0$"):
            a.sum(axis=axis)
        with pytest.raises(AxisError, match=r"valid axes are -1\.\.0$"):
            a.flip(axis)
    with pytest.raises(AxisError, match="repeated axis"):
        a.sum(axis=(0, -1))


def test_normalize_axes_sorts_wraps_and_refuses_repeats():
    assert nd.normalize_axes((-1, 0), 3, "t") == (0, 2)
    assert nd.normalize_axes(np.int64(-3), 3, "t") == (0,)
    assert nd.normalize_axes(None, 2, "t") == (0, 1)
    assert nd.normalize_axes(-1, 0, "t") == (0,) and nd.normalize_axes(0, 0, "t") == (0,)
    with pytest.raises(AxisError, match=r"repeated axis 1"):
        nd.normalize_axes((1, -2), 3, "t")
