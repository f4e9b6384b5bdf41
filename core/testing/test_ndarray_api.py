"""NDArray behaviour through the backend under test, against NumPy.

These go through the core's view logic (reshape, permute, broadcast, slicing)
and then the backend's kernels, the way user code does.
"""

from __future__ import annotations

import numpy as np
import pytest

from needle.errors import ShapeError

from .reference import ACC_TOL, TOL

kernel = pytest.mark.needle_kernel


@pytest.fixture(params=("float32", "float64"))
def adtype(request, conformance_device):
    if request.param not in conformance_device.require().dtypes:
        pytest.skip(f"backend does not declare dtype {request.param}")
    return request.param


def _nd():
    import needle.backend_ndarray as nd
    return nd


def _arr(x, dev, dtype):
    return _nd().array(np.asarray(x, dtype=dtype), dtype=dtype, device=dev)


@kernel("from_numpy", "to_numpy")
def test_roundtrip_shapes(conformance_device, adtype):
    rng = np.random.default_rng(0)
    for shape in [(), (1,), (7,), (3, 5), (2, 3, 4), (1, 1, 5, 1)]:
        x = rng.standard_normal(shape).astype(adtype)
        a = _arr(x, conformance_device, adtype)
        assert a.shape == shape and a.dtype == np.dtype(adtype) and a.device == conformance_device
        np.testing.assert_array_equal(a.numpy(), x)
        assert a.strides == tuple(s // x.itemsize for s in x.strides)


@kernel("compact", "ewise_setitem", "scalar_setitem")
def test_views_compact_and_setitem(conformance_device, adtype):
    x = np.arange(120, dtype=adtype).reshape(4, 5, 6)
    a = _arr(x, conformance_device, adtype)
    np.testing.assert_array_equal(a.permute((2, 0, 1)).compact().numpy(), x.transpose(2, 0, 1))
    np.testing.assert_array_equal(a[1:4:2, ::2, -3:].compact().numpy(), x[1:4:2, ::2, -3:])
    np.testing.assert_array_equal(a[2, 1:, 3].numpy(), x[2:3, 1:, 3:4])
    b = _arr(x[:1, :, :1], conformance_device, adtype)
    np.testing.assert_array_equal(b.broadcast_to((3, 4, 5, 6)).compact().numpy(),
                                  np.broadcast_to(x[:1, :, :1], (3, 4, 5, 6)))
    a[1:3, ::2, 1::2] = 9.0
    x[1:3, ::2, 1::2] = 9.0
    np.testing.assert_array_equal(a.numpy(), x)
    vals = np.arange(2 * 5 * 2, dtype=adtype).reshape(2, 5, 2) * -1
    a[::3, :, 4:] = _arr(vals, conformance_device, adtype)
    x[::3, :, 4:] = vals
    np.testing.assert_array_equal(a.numpy(), x)


@kernel("ewise_add", "ewise_sub", "ewise_mul", "ewise_div", "ewise_pow", "ewise_maximum", "ewise_eq",
        "ewise_ge", "ewise_neg", "scalar_add", "scalar_sub", "scalar_mul", "scalar_div", "scalar_rdiv",
        "scalar_power", "scalar_maximum", "scalar_eq", "scalar_ge", "ewise_log", "ewise_exp", "ewise_tanh")
def test_elementwise_operators(conformance_device, adtype):
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, (3, 7)).astype(adtype)
    y = rng.uniform(0.5, 2.0, (3, 7)).astype(adtype)
    # a transposed view as an operand: the core compacts it before the kernel
    yt_src = np.ascontiguousarray(y.T)
    a, b = _arr(x, conformance_device, adtype), _arr(yt_src, conformance_device, adtype).permute((1, 0))
    tol = TOL[adtype]
    checks = {
        "a+b": (a + b, x + y), "a-b": (a - b, x - y), "a*b": (a * b, x * y), "a/b": (a / b, x / y),
        "b**a": (b ** a, y ** x), "max": (a.maximum(b), np.maximum(x, y)),
        "a+2": (a + 2, x + 2), "2-a": (2 - a, 2 - x), "a-2": (a - 2, x - 2), "3*a": (3 * a, 3 * x),
        "a/4": (a / 4, x / 4), "2/b": (2 / b, 2 / y), "b**2": (b ** 2, y ** 2), "-a": (-a, -x),
        "max0": (a.maximum(0.5), np.maximum(x, 0.5)),
        "a==b": (a == a.maximum(0), x == np.maximum(x, 0)), "a==1": (a == 1, x == 1),
        "a>=0": (a >= 0, x >= 0), "a>0": (a > 0, x > 0), "a<1": (a < 1, x < 1),
        "a<=1": (a <= 1, x <= 1), "a!=0": (a != 0, x != 0), "a>=b": (a >= b, x >= y),
        "a<b": (a < b, x < y), "a>b": (a > b, x > y), "a<=b": (a <= b, x <= y),
        "log": (b.log(), np.log(y)), "exp": (a.exp(), np.exp(x)), "tanh": (a.tanh(), np.tanh(x)),
    }
    for name, (got, want) in checks.items():
        assert got.dtype == np.dtype(adtype), f"{name}: dtype {got.dtype}"
        np.testing.assert_allclose(got.numpy(), np.asarray(want).astype(adtype), **tol, err_msg=name)


@pytest.mark.parametrize("op", [pytest.param("sum", marks=kernel("reduce_sum")),
                                pytest.param("max", marks=kernel("reduce_max"))])
def test_reductions_over_axes(conformance_device, adtype, op):
    x = np.random.default_rng(2).standard_normal((3, 4, 5)).astype(adtype)
    a = _arr(x, conformance_device, adtype)
    for axis in (None, 0, 1, 2, -1, (0, 2), (1, 2), (0, 1, 2)):
        for keep in (False, True):
            got = getattr(a, op)(axis=axis, keepdims=keep).numpy()
            want = getattr(x, op)(axis=axis, keepdims=keep)
            if axis is None and not keep:
                got = np.asarray(got).reshape(())  # the course gives (1,), 0-d is fine too
            np.testing.assert_allclose(got, want, **ACC_TOL[adtype], err_msg=f"{op} axis={axis} keepdims={keep}")


@kernel("matmul", "matmul_strided")
def test_matmul_batched_broadcast_transposed(conformance_device, adtype):
    rng = np.random.default_rng(3)
    cases = [((5, 4), (4, 3)), ((6, 6, 5, 4), (4, 3)), ((5, 4), (6, 6, 4, 3)), ((3, 2, 1), (3, 3, 1, 2)),
             ((2, 1, 3, 4), (5, 4, 2)), ((1, 9), (9, 1))]
    for sa, sb in cases:
        x, y = rng.standard_normal(sa).astype(adtype), rng.standard_normal(sb).astype(adtype)
        got = (_arr(x, conformance_device, adtype) @ _arr(y, conformance_device, adtype)).numpy()
        np.testing.assert_allclose(got, x @ y, **ACC_TOL[adtype], err_msg=f"{sa} @ {sb}")
    x, y = rng.standard_normal((7, 5)).astype(adtype), rng.standard_normal((3, 7)).astype(adtype)
    got = _arr(x, conformance_device, adtype).permute((1, 0)) @ _arr(y, conformance_device, adtype).permute((1, 0))
    np.testing.assert_allclose(got.numpy(), x.T @ y.T, **ACC_TOL[adtype], err_msg="transposed operands")


@kernel("compact", "ewise_setitem", "fill")
def test_flip_and_pad(conformance_device, adtype):
    x = np.arange(2 * 3 * 70, dtype=adtype).reshape(2, 3, 70)
    a = _arr(x, conformance_device, adtype)
    for axes in ((0,), (2,), (0, 1, 2), (1, 2)):
        np.testing.assert_array_equal(a.flip(axes).numpy(), np.flip(x, axes), err_msg=f"flip {axes}")
    pads = ((1, 0), (0, 2), (3, 1))
    np.testing.assert_array_equal(a.pad(pads).numpy(), np.pad(x, pads))


def test_shape_errors_name_the_op(conformance_device):
    a = _arr(np.zeros((2, 3)), conformance_device, "float32")
    b = _arr(np.zeros((4, 5)), conformance_device, "float32")
    with pytest.raises(ShapeError, match="matmul"):
        a @ b
    with pytest.raises(ShapeError, match="reshape"):
        a.reshape((4, 2))
    with pytest.raises(ShapeError, match="add"):
        a + _arr(np.zeros((3, 2)), conformance_device, "float32")
    with pytest.raises(IndexError, match="out of bounds"):
        a[2, 0]


def test_float64_keeps_precision(conformance_device):
    if "float64" not in conformance_device.require().dtypes:
        pytest.skip("backend does not declare float64")
    x = np.array([1.0, 1e-12], dtype=np.float64)
    a = _arr(x, conformance_device, "float64")
    assert (a + 1.0).numpy()[1] - 1.0 == pytest.approx(1e-12, rel=1e-3), "float64 arithmetic lost precision"
