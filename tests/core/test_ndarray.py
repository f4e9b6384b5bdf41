"""Course semantics of ``needle.backend_ndarray`` (course API §7, docs/design.md) and its
bad-input errors, on every available backend (``device`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest

import needle
import needle.backend_ndarray as nd
from needle import discovery
from needle.backend_ndarray import NDArray
from needle.errors import (BackendUnavailableError, DeviceMismatchError, ShapeError,
                           UnsupportedDTypeError)

DTYPES = ("float32", "float64")


def _x(shape, seed=0, dtype="float32"):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------- #
# devices
# ---------------------------------------------------------------------- #
def test_device_names_repr_and_equality():
    assert repr(nd.cpu()) == "cpu()" and repr(nd.cuda()) == "cuda()" and repr(nd.cpu_numpy()) == "cpu_numpy()"
    assert nd.cpu().name == "cpu" and nd.cuda().name == "cuda" and nd.cpu_numpy().name == "cpu_numpy"
    assert nd.cpu_numpy() == nd.cpu_numpy() and nd.cpu() != nd.cpu_numpy()
    assert hash(nd.cpu_numpy()) == hash(nd.BackendDevice("cpu_numpy"))
    assert nd.BackendDevice("cpu_numpy") == nd.cpu_numpy()
    assert nd.device("numpy") == nd.cpu_numpy() and nd.device("cpu_numpy()") == nd.cpu_numpy()
    assert [repr(d) for d in nd.all_devices()] == ["cpu()", "cuda()", "cpu_numpy()"]
    for dev in nd.all_devices():
        assert isinstance(dev.enabled(), bool)
    assert nd.cpu_numpy().enabled()


def test_cuda_never_raises_and_fails_clearly_on_first_use():
    dev = nd.cuda()  # must not raise, GPU or not
    if dev.enabled():
        pytest.skip("a GPU is present: the disabled-device path does not apply")
    with pytest.raises(BackendUnavailableError, match=r"cuda\(\) is unavailable.*available devices"):
        nd.array([1.0, 2.0], device=dev)
    with pytest.raises(BackendUnavailableError):
        dev.empty((2,))
    # kernel fall-through is attribute access: hasattr stays usable, the reason is in the message
    assert not hasattr(dev, "matmul_tiled")
    with pytest.raises(AttributeError, match="unavailable"):
        dev.ewise_add


def test_unknown_device_lists_what_is_available():
    with pytest.raises(BackendUnavailableError, match=r"unknown device 'nope'.*cpu_numpy\(\)"):
        nd.device("nope")
    with pytest.raises(BackendUnavailableError):
        needle.device("nope:0")


def test_default_device_supports_float64():
    dev = nd.default_device()
    assert dev.enabled() and "cuda" not in dev.name
    assert nd.array([1.0], dtype="float64").dtype == np.float64


def test_rand_randn_one_hot_use_numpy_global_rng(device):
    np.random.seed(3)
    want = np.random.rand(2, 3).astype(np.float32)
    np.random.seed(3)
    got = device.rand(2, 3)
    assert got.device == device and got.shape == (2, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got.numpy(), want)
    np.random.seed(4)
    want = np.random.randn(4).astype(np.float64)
    np.random.seed(4)
    np.testing.assert_array_equal(device.randn(4, dtype="float64").numpy(), want)
    oh = device.one_hot(5, np.array([1, 4, 1]))
    np.testing.assert_array_equal(oh.numpy(), np.eye(5, dtype=np.float32)[[1, 4, 1]])
    with pytest.raises(IndexError, match="one_hot"):
        device.one_hot(3, [3])
    e = device.empty((2, 3), dtype="float64")
    assert e.shape == (2, 3) and e.dtype == np.float64
    np.testing.assert_array_equal(device.full((2, 2), 1.5).numpy(), np.full((2, 2), 1.5, np.float32))
    np.testing.assert_array_equal(nd.full((3,), -2.0, device=device).numpy(), np.full(3, -2.0, np.float32))


def test_unknown_device_attributes_fall_through_to_the_backend(device):
    assert hasattr(device, "matmul_tiled") and hasattr(device, "ewise_add")
    assert isinstance(device.__tile_size__, int) and device.__tile_size__ > 0
    assert not hasattr(device, "no_such_kernel")
    assert device.backend is device.mod and device.backend is not None


def test_matmul_tiled_called_as_hw3_does(device):
    t = device.__tile_size__
    m, n, p = 2 * t, 3 * t, t
    A, B = _x((m, n), 1), _x((n, p), 2)
    a = nd.array(A, device=device).reshape((m // t, t, n // t, t)).permute((0, 2, 1, 3)).compact()
    b = nd.array(B, device=device).reshape((n // t, t, p // t, t)).permute((0, 2, 1, 3)).compact()
    out = NDArray.make((m // t, p // t, t, t), device=device)  # uninitialised: the kernel overwrites it
    device.matmul_tiled(a._handle, b._handle, out._handle, m, n, p)
    got = out.permute((0, 2, 1, 3)).compact().reshape((m, p)).numpy()
    np.testing.assert_allclose(got, A @ B, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- #
# construction, properties, conversion
# ---------------------------------------------------------------------- #
def test_construction_copies(device):
    x = _x((2, 3))
    a = NDArray(x, device=device)
    x[0, 0] = 100.0
    assert a.numpy()[0, 0] != 100.0, "NDArray(numpy) must copy"
    b = NDArray(a)
    assert b._handle is not a._handle and b.device == device
    np.testing.assert_array_equal(b.numpy(), a.numpy())
    c = NDArray([[1, 2], [3, 4]], device=device)
    assert c.dtype == np.float32 and c.shape == (2, 2)
    assert nd.array([1, 2], dtype="float64", device=device).dtype == np.float64
    assert NDArray(nd.array([1.0], dtype="float64", device=device)).dtype == np.float64
    assert a.to(device) is a
    if device != nd.cpu_numpy():
        moved = a.to(nd.cpu_numpy())
        assert moved.device == nd.cpu_numpy()
        np.testing.assert_array_equal(moved.numpy(), a.numpy())


def test_properties_make_and_compact_strides(device):
    a = nd.array(np.arange(24, dtype=np.float32).reshape(2, 3, 4), device=device)
    assert (a.shape, a.strides, a.offset, a._offset, a.size, a.ndim) == ((2, 3, 4), (12, 4, 1), 0, 0, 24, 3)
    assert NDArray.compact_strides((2, 3, 4)) == (12, 4, 1) and NDArray.compact_strides(()) == ()
    v = NDArray.make((3, 2), strides=(1, 3), device=device, handle=a._handle, offset=5)
    assert v._handle is a._handle
    np.testing.assert_array_equal(v.numpy(), np.arange(24, dtype=np.float32)[5:11].reshape(2, 3).T)
    fresh = NDArray.make((4, 5), device=device)
    assert fresh.shape == (4, 5) and fresh._handle.size == 20 and fresh.is_compact()
    with pytest.raises(IndexError, match="NDArray.make"):
        NDArray.make((3, 9), device=device, handle=a._handle)
    # a freshly allocated buffer holds prod(shape) elements: strides or an
    # offset that reach past it are refused before any kernel reads them
    with pytest.raises(IndexError, match="NDArray.make"):
        NDArray.make((2, 3), strides=(100, 1), device=device)
    with pytest.raises(IndexError, match="NDArray.make"):
        NDArray.make((2, 3), device=device, offset=2)
    ok = NDArray.make((2, 3), strides=(1, 2), device=device)  # a column-major view of its 6 elements
    assert ok.shape == (2, 3) and ok._handle.size == 6


def test_array_protocol_and_astype(device):
    x = _x((4, 3))
    a = nd.array(x, device=device)
    np.testing.assert_array_equal(np.array(a), x)
    np.testing.assert_allclose(a, x)  # np.testing accepts NDArray through __array__
    parts = np.array_split(a, 2)
    assert len(parts) == 2 and parts[0].shape == (2, 3)
    assert np.asarray(a, dtype=np.float64).dtype == np.float64
    got = a.astype(np.float64)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_array_equal(got, x.astype(np.float64))


def test_handles_ptr_size_shared_by_views_and_kept_by_writes(device):
    a = nd.array(np.arange(12, dtype=np.float32).reshape(3, 4), device=device)
    ptr = a._handle.ptr()
    assert isinstance(ptr, int) and a._handle.size == 12
    for view in (a.reshape((4, 3)), a.permute((1, 0)), a[1:, ::2], a.flat, a.as_strided((2, 2), (4, 1))):
        assert view._handle.ptr() == ptr
    a[0, :] = 5.0
    a[1:3, 1:3] = nd.array(np.ones((2, 2)), device=device)
    a.fill(2.0)
    assert a._handle.ptr() == ptr, "in-place writes must keep the buffer"
    assert (a + 1)._handle.ptr() != ptr


def test_flat_edits_in_place(device):
    a = nd.array(np.zeros((2, 3), dtype=np.float32), device=device)
    a.flat[4] += 0.5
    a.flat[0] -= 1.0
    want = np.zeros((2, 3), np.float32)
    want.flat[4] += 0.5
    want.flat[0] -= 1.0
    np.testing.assert_array_equal(a.numpy(), want)


def test_is_compact_compact_as_strided(device):
    a = nd.array(np.arange(12, dtype=np.float32), device=device)
    assert a.is_compact() and a.compact() is a
    s = a[2:8]
    assert not s.is_compact(), "a slice covering part of the buffer is not compact"
    c = s.compact()
    assert c.is_compact() and c._handle is not a._handle
    np.testing.assert_array_equal(c.numpy(), np.arange(2, 8, dtype=np.float32))
    v = s.as_strided((2, 3), (1, 2))
    np.testing.assert_array_equal(v.numpy(), np.lib.stride_tricks.as_strided(
        np.arange(12, dtype=np.float32)[2:], (2, 3), (4, 8)))


# ---------------------------------------------------------------------- #
# indexing
# ---------------------------------------------------------------------- #
def test_getitem_course_semantics(device):
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    a = nd.array(x, device=device)
    assert a[2, 2, 2].shape == (1, 1, 1), "an int index keeps its axis"
    assert a[1].shape == (1, 4, 5)
    np.testing.assert_array_equal(a[1, 1:3, ::2].numpy(), x[1:2, 1:3, ::2])
    np.testing.assert_array_equal(a[-1, -3:, 1:-1:3].numpy(), x[2:3, -3:, 1:-1:3])
    np.testing.assert_array_equal(a[:, 10:, :].numpy(), x[:, 10:, :])  # empty view
    v = a[1:3, ::2, 4]
    assert v.strides == (20, 10, 1) and v.offset == 20 + 4
    # course API: the second argument is the AXIS (axis 2 has size 5), not a size
    assert a.process_slice(slice(None, None, None), 2) == slice(0, 5, 1)
    assert a.process_slice(slice(-3, None, 2), 2) == slice(2, 5, 2)
    assert a.process_slice(slice(1, 99, None), 2) == slice(1, 5, 1)
    assert a.process_slice(slice(None, None, None), 0) == slice(0, 3, 1)
    assert a.process_slice(slice(None, -1, None), 1) == slice(0, 3, 1)


def test_setitem_array_and_scalar(device):
    x = np.zeros((4, 5), np.float32)
    a = nd.array(x, device=device)
    a[1:3, ::2] = 7.0
    x[1:3, ::2] = 7.0
    vals = _x((4, 2), 3)
    a[:, 3:] = nd.array(vals, device=device)
    x[:, 3:] = vals
    a[0, :] = nd.array(np.arange(5, dtype=np.float32).reshape(5, 1), device=device)  # same count, other shape
    x[0, :] = np.arange(5)
    a[3, 0] = np.array([[9.0]], dtype=np.float32)
    x[3, 0] = 9.0
    np.testing.assert_array_equal(a.numpy(), x)


# ---------------------------------------------------------------------- #
# arithmetic
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_scalar_and_comparisons(device, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (3, 4)).astype(dtype)
    y = rng.uniform(0.5, 2, (3, 4)).astype(dtype)
    a, b = nd.array(x, dtype=dtype, device=device), nd.array(y, dtype=dtype, device=device)
    pairs = [(a + b, x + y), (a - b, x - y), (a * b, x * y), (a / b, x / y), (-a, -x),
             (a + 2, x + 2), (2 + a, 2 + x), (a - 2, x - 2), (2 - a, 2 - x), (a * 3, x * 3), (3 * a, 3 * x),
             (a / 4, x / 4), (1 / b, 1 / y), (b ** 2, y ** 2), (b ** 0.5, y ** 0.5), (b ** a, y ** x),
             (a.maximum(b), np.maximum(x, y)), (a.maximum(0), np.maximum(x, 0)), (nd.maximum(a, b), np.maximum(x, y)),
             (a == b, x == y), (a == 1, x == 1), (a != 1, x != 1), (a >= 0, x >= 0), (a > 0, x > 0),
             (a < 1, x < 1), (a <= 1, x <= 1), (a > b, x > y), (a <= b, x <= y),
             (b.log(), np.log(y)), (nd.log(b), np.log(y)), (a.exp(), np.exp(x)), (nd.exp(a), np.exp(x)),
             (a.tanh(), np.tanh(x)), (nd.tanh(a), np.tanh(x))]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    for k, (got, want) in enumerate(pairs):
        assert got.dtype == np.dtype(dtype), f"case {k}: dtype {got.dtype}"
        np.testing.assert_allclose(got.numpy(), np.asarray(want, dtype=dtype), **tol, err_msg=f"case {k}")
    np.testing.assert_array_equal((nd.array([-4.0], device=device) ** 0.5).numpy(), [np.nan])


def test_dtype_promotion(device):
    a = nd.array([1.0, 2.0], dtype="float32", device=device)
    b = nd.array([1e-10, 1.0], dtype="float64", device=device)
    c = a + b
    assert c.dtype == np.float64
    np.testing.assert_array_equal(c.numpy(), np.float32([1, 2]) + np.float64([1e-10, 1]))


def test_reductions(device):
    x = _x((3, 4, 5), 5)
    a = nd.array(x, device=device)
    for axis in (0, 1, 2, -1, (0, 2), (2, 0), (0, 1, 2)):
        for keep in (False, True):
            np.testing.assert_allclose(a.sum(axis=axis, keepdims=keep).numpy(), x.sum(axis=axis, keepdims=keep),
                                       rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(nd.max(a, axis=axis, keepdims=keep).numpy(),
                                          x.max(axis=axis, keepdims=keep))
    assert a.sum().size == 1
    np.testing.assert_allclose(float(a.sum().numpy().reshape(())), x.sum(), rtol=1e-5)
    np.testing.assert_allclose(nd.sum(a, axis=1).numpy(), x.sum(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.permute((2, 0, 1)).max(axis=0).numpy(), x.transpose(2, 0, 1).max(axis=0))


def test_sum_over_leading_axes(device, monkeypatch):
    """A sum over leading axes (a bias's gradient) goes to the backend's
    sum_leading override where it has one (cpu: rows read in place, no
    transposed copy) and to the permute-and-compact composition elsewhere;
    both give NumPy's values, for every thread split of the kernel (few rows:
    columns split; many rows: per-thread sums; one column: a row sum)."""
    used = []
    real = NDArray.call_op_override

    def spy(name, *args):
        out = real(name, *args)
        used.append((name, out is not None))
        return out
    monkeypatch.setattr(NDArray, "call_op_override", staticmethod(spy))
    rng = np.random.default_rng(7)
    cases = [((400, 1000), (0,)), ((3, 70000), (0,)), ((70000, 3), (0,)), ((50000, 1), (0,)),
             ((2, 3, 4), (0, 1)), ((128, 4, 4, 8), (0, 1, 2)), ((1, 9), (0,)), ((9, 1, 1), (0,))]
    for dtype, tol in (("float32", 1e-5), ("float64", 1e-12)):
        for shape, axes in cases:
            x = rng.standard_normal(shape).astype(dtype)
            want = x.astype(np.float64).sum(axis=axes, keepdims=True)
            for keep in (False, True):
                got = nd.array(x, device=device, dtype=dtype).sum(axis=axes, keepdims=keep).numpy()
                assert got.dtype == np.dtype(dtype)
                np.testing.assert_allclose(got, want if keep else want.reshape(shape[len(axes):]),
                                           rtol=tol, atol=tol * 10, err_msg=f"{dtype} {shape} {axes}")
    offered = device.op_override("sum_leading") is not None
    assert used and all(name == "sum_leading" and ran == offered for name, ran in used)
    assert offered == (device.name == "cpu")
    # a strided (transposed) input is compacted first; NaN and inf follow NumPy
    x = rng.standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_allclose(nd.array(x, device=device).permute((1, 0)).sum(axis=0).numpy(), x.T.sum(0),
                               rtol=1e-5, atol=1e-6)
    x = np.array([[1, np.nan, np.inf, np.inf], [np.inf, 2, 1, -np.inf], [3, 4, 5, 6]], np.float32)
    np.testing.assert_array_equal(nd.array(x, device=device).sum(axis=0).numpy(), x.sum(axis=0))
    # an empty reduced axis sums to zeros; an empty kept axis gives an empty result
    assert nd.array(np.zeros((0, 3), np.float32), device=device).sum(axis=0).numpy().tolist() == [0, 0, 0]
    assert nd.array(np.zeros((4, 0), np.float32), device=device).sum(axis=0).shape == (0,)


def test_batched_matmul_with_broadcasting(device):
    for sa, sb in [((5, 4), (4, 3)), ((6, 6, 5, 4), (4, 3)), ((5, 4), (6, 6, 4, 3)),
                   ((3, 2, 1), (3, 3, 1, 2)), ((2, 1, 3, 4), (5, 4, 2)), ((8, 8), (8, 8))]:
        x, y = _x(sa, 1), _x(sb, 2)
        got = nd.array(x, device=device) @ nd.array(y, device=device)
        np.testing.assert_allclose(got.numpy(), x @ y, rtol=1e-4, atol=1e-5, err_msg=f"{sa} @ {sb}")
    x, y = _x((6, 4), 3), _x((5, 6), 4)
    got = nd.matmul(nd.array(x, device=device).permute((1, 0)), nd.array(y, device=device).permute((1, 0)))
    np.testing.assert_allclose(got.numpy(), x.T @ y.T, rtol=1e-4, atol=1e-5)


def test_batched_activations_times_one_weight(device):
    """(B, T, K) @ (K, N) runs as one (B*T, K) @ (K, N) product when the
    batches' rows follow each other at one stride -- also through a column
    slice (row stride 8 for K = 4) -- and per batch when they do not (a
    row slice, a per-batch transpose)."""
    big = _x((6, 5, 8), 5)
    w = _x((4, 3), 6)
    W = nd.array(w, device=device)
    B = nd.array(big, device=device)
    views = {"compact": (B[:, :, :4].compact(), big[:, :, :4]),
             "column slice (folds)": (B[:, :, 2:6], big[:, :, 2:6]),
             "row slice (per batch)": (B[:, 1:4, :4], big[:, 1:4, :4]),
             "transposed (per batch)": (B[:, :4, :5].permute((0, 2, 1)), big[:, :4, :5].transpose(0, 2, 1))}
    for name, (a, x) in views.items():
        if name.startswith("transposed"):
            got, want = a @ nd.array(_x((4, 3), 7), device=device), x @ _x((4, 3), 7)
        else:
            got, want = a @ W, x @ w
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_flip_pad_broadcast_reshape_functions(device):
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    a = nd.array(x, device=device)
    for axes in ((0,), (1, 2), (0, 1, 2)):
        f = nd.flip(a, axes)
        assert f.is_compact()
        np.testing.assert_array_equal(f.numpy(), np.flip(x, axes))
    np.testing.assert_array_equal(a.pad(((0, 0), (1, 1), (2, 0))).numpy(), np.pad(x, ((0, 0), (1, 1), (2, 0))))
    np.testing.assert_array_equal(nd.broadcast_to(a[:, :1, :], (5, 2, 3, 4)).numpy(),
                                  np.broadcast_to(x[:, :1, :], (5, 2, 3, 4)))
    assert nd.broadcast_to(a[:, :1, :], (2, 3, 4)).strides == (12, 0, 1)
    np.testing.assert_array_equal(nd.reshape(a, (4, 6)).numpy(), x.reshape(4, 6))
    np.testing.assert_array_equal(a.reshape((6, -1)).numpy(), x.reshape(6, -1))


# ---------------------------------------------------------------------- #
# bad input
# ---------------------------------------------------------------------- #
def test_shape_errors_name_the_op(device):
    a = nd.array(np.zeros((2, 3)), device=device)
    with pytest.raises(ShapeError, match=r"add.*\(2, 3\).*\(3, 2\)"):
        a + nd.array(np.zeros((3, 2)), device=device)
    with pytest.raises(ShapeError, match="multiply"):
        a * nd.array(np.zeros((4,)), device=device)
    with pytest.raises(ShapeError, match=r"matmul.*\(2, 3\).*\(2, 3\)"):
        a @ a
    with pytest.raises(ShapeError, match=r"reshape.*\(4, 2\)"):
        a.reshape((4, 2))
    with pytest.raises(ShapeError, match="reshape"):
        a.permute((1, 0)).reshape((6,))  # not compact
    with pytest.raises(ShapeError, match="broadcast_to"):
        a.broadcast_to((4, 3))
    with pytest.raises(ShapeError, match="__setitem__"):
        a[0, :] = nd.array(np.zeros(4), device=device)
    with pytest.raises(ValueError, match="pad"):
        a.pad(((1, 1),))
    with pytest.raises(ShapeError, match="permute"):
        a.permute((0, 0))
    with pytest.raises(ShapeError, match="sum.*axis 2"):
        a.sum(axis=2)


def test_index_errors(device):
    a = nd.array(np.zeros((2, 3)), device=device)
    with pytest.raises(IndexError, match=r"__getitem__.*index 2.*axis 0.*size 2"):
        a[2, 0]
    with pytest.raises(IndexError, match=r"__getitem__.*-4.*axis 1"):
        a[0, -4]
    with pytest.raises(IndexError, match=r"__setitem__.*index 3"):
        a[0, 3] = 1.0
    with pytest.raises(IndexError, match="3 indices"):
        a[0, 0, 0]
    with pytest.raises(IndexError, match="step"):
        a[::-1, 0]
    with pytest.raises(IndexError, match="as_strided"):
        a.as_strided((3, 3), (3, 1))


def test_array_write_through_a_broadcast_view_is_refused(device):
    """Several elements of a stride-0 view share one buffer slot: which value
    would win is undefined (NumPy makes such views read-only)."""
    a = nd.array(np.zeros((1, 4)), device=device)
    b = a.broadcast_to((3, 4))
    with pytest.raises(ShapeError, match=r"__setitem__.*broadcast"):
        b[:, :] = nd.array(np.arange(12.0).reshape(3, 4), device=device)
    np.testing.assert_array_equal(a.numpy(), np.zeros((1, 4)))
    b[:, :] = 5.0  # a scalar is well defined: every slot gets it
    np.testing.assert_array_equal(a.numpy(), np.full((1, 4), 5.0))
    b[0:1, :] = nd.array(np.ones((1, 4)), device=device)  # one row of the broadcast: no sharing
    np.testing.assert_array_equal(a.numpy(), np.ones((1, 4)))


def test_unsupported_dtypes_name_backend_and_dtype(device):
    for bad in ("int32", "float16", "complex64"):
        with pytest.raises(UnsupportedDTypeError, match=f"backend '{device.backend_name}'.*{bad}"):
            nd.array([1, 2], dtype=bad, device=device)
    with pytest.raises(UnsupportedDTypeError, match="not-a-dtype"):
        nd.array([1.0], dtype="not-a-dtype", device=device)


@pytest.fixture
def second_device():
    """A second backend registered at run time: the numpy backend under another name."""
    from needle_numpy import NumpyBackend

    class OtherNumpy(NumpyBackend):
        name = "numpy_other"

        def device_names(self):
            return ["numpy_other"]

    discovery.register_backend(OtherNumpy())
    try:
        yield nd.device("numpy_other")
    finally:
        discovery.reset()


def test_device_mismatch_errors(second_device):
    a = nd.array(np.ones((2, 2)), device=nd.cpu_numpy())
    b = nd.array(np.ones((2, 2)), device=second_device)
    assert repr(second_device) == "numpy_other()" and b.device == second_device
    for op, fn in [("add", lambda: a + b), ("multiply", lambda: a * b), ("matmul", lambda: a @ b),
                   ("maximum", lambda: a.maximum(b)), ("ge", lambda: a >= b), ("__setitem__", lambda: a.__setitem__(
                       (slice(None), slice(None)), b))]:
        with pytest.raises(DeviceMismatchError, match=rf"{op}.*cpu_numpy\(\).*numpy_other\(\)|"
                                                      rf"{op}.*numpy_other\(\).*cpu_numpy\(\)"):
            fn()
    np.testing.assert_array_equal((a + b.to(nd.cpu_numpy())).numpy(), np.full((2, 2), 2.0))


def test_call_op_override_hands_compact_buffers_and_returns_the_result(monkeypatch):
    """The one place ops reach a backend's fused kernel: None when the device
    offers none; otherwise compact inputs, a fresh out of out_shape, and no
    call at all for an empty out."""
    import needle.backend_ndarray as nd
    from needle.backend_ndarray import NDArray

    dev = nd.cpu_numpy()
    a = NDArray(np.arange(6.0).reshape(2, 3), device=dev).permute((1, 0))  # a non-compact view
    assert NDArray.call_op_override("logsumexp", (a,), (3,), 3, 2) is None  # numpy offers no override
    calls = []

    def kernel(src, out, outer, inner):
        calls.append((src, outer, inner))
        dev.fill(out, 7.0)

    monkeypatch.setattr(type(dev), "op_override", lambda self, name: kernel if name == "logsumexp" else None)
    out = NDArray.call_op_override("logsumexp", (a,), (3,), 3, 2)
    assert out.shape == (3,) and out.numpy().tolist() == [7.0, 7.0, 7.0]
    (src, outer, inner), = calls
    assert (outer, inner) == (3, 2)
    np.testing.assert_array_equal(dev.to_numpy(src, (3, 2), (2, 1), 0), np.arange(6.0).reshape(2, 3).T)
    empty = NDArray.call_op_override("logsumexp", (a,), (0,), 0, 2)
    assert empty.shape == (0,) and len(calls) == 1


def test_unshared_sees_every_other_holder_of_an_array_or_its_buffer():
    """``unshared(k)``: True only while the caller's k references are all
    there is -- another variable, a view, a NumPy export or a non-compact
    layout makes it False (the fused optimizer steps then write a fresh array).
    (Results are taken outside ``assert``: pytest's rewriting keeps the bound
    method, one more reference, alive inside it.)"""
    for dev in [nd.cpu_numpy()] + ([nd.cpu()] if nd.cpu().enabled() else []):
        a = nd.array(np.arange(6, dtype=np.float32).reshape(2, 3), device=dev)
        alone = a.unshared(1)          # the variable ``a`` only
        b = a
        with_b, counted_b = a.unshared(1), a.unshared(2)
        del b
        v = a.permute((1, 0))
        with_view, view_itself = a.unshared(1), v.unshared(1)
        del v
        after_view = a.unshared(1)
        exported = a.numpy()
        a[0, 0] = 100.0                # in place: does the export see the buffer?
        shares = bool(exported[0, 0] == 100.0)
        with_export = a.unshared(1)
        del exported
        after_export = a.unshared(1)
        assert alone and not with_b and counted_b, dev
        assert not with_view and not view_itself and after_view, dev  # a view shares; it is not compact
        assert with_export == (not shares) and after_export, dev
