"""NDArray behaviour that surviving mutants of core/backend_ndarray/ndarray.py
showed no test pinned (bash scripts/mutation.sh core/backend_ndarray/ndarray.py).

Every test compares with NumPy (or states the exact value) on each bundled
device; they stay small: each mutant of ndarray.py runs this whole file.
"""

import numpy as np
import pytest

from needle.backend_ndarray import ndarray as nd
from needle.backend_ndarray.ndarray import AxisError, NDArray
from needle.errors import ArgumentTypeError, OutOfBoundsError, ShapeError


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


# --------------------------------------------------------------------------- #
# small protocol methods: len, repr/str, fill through a view
# --------------------------------------------------------------------------- #
def test_len_repr_and_str(device):
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    a = _a(x, device)
    assert len(a) == 3 and len(a[1:, :]) == 2 and len(a.permute((1, 0))) == 2
    assert str(a) == str(x)
    assert repr(a) == f"NDArray({x}, device={device}, dtype=float32)"
    assert repr(_a([1.5], device, "float64")) == f"NDArray([1.5], device={device}, dtype=float64)"


def test_fill_through_a_strided_view_writes_only_the_view(device):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = _a(x, device)
    v = a[:, 1::2]  # not compact: the kernel fill would overwrite the whole buffer
    assert not v.is_compact()
    v.fill(-1.0)
    x[:, 1::2] = -1.0
    np.testing.assert_array_equal(a.numpy(), x)
    np.testing.assert_array_equal(v.numpy(), np.full((3, 2), -1.0, np.float32))
    a.permute((1, 0))[2:, :].fill(np.float32(9.0))  # a transposed slice: rows 2.. of x.T
    x.T[2:, :] = 9.0
    np.testing.assert_array_equal(a.numpy(), x)


# --------------------------------------------------------------------------- #
# binary operators with NumPy arrays and foreign operands
# --------------------------------------------------------------------------- #
def test_a_numpy_operand_is_converted_to_the_arrays_device_and_dtype(device):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    a = _a(x, device)
    y = np.array([0.1, 1.3, 2.7])  # float64 (not exact in float32), broadcast over the rows
    for got, want in [(a + y, x + y), (a - y, x - y), (a * y, x * y), (a / y, x / y), (a.maximum(y), np.maximum(x, y))]:
        assert got.dtype == np.float32 and got.device == device and got.shape == (2, 3)
        np.testing.assert_allclose(got.numpy(), want.astype(np.float32), rtol=1e-6)
    # a float64 array keeps a float64 operand's digits (no float32 round trip)
    d = _a(x, device, "float64") + y
    assert d.dtype == np.float64
    np.testing.assert_array_equal(d.numpy(), x.astype(np.float64) + y)


def test_unsupported_operands_give_a_type_error(device):
    a = _a([1.0, 2.0], device)
    for fn in (lambda: a + "1", lambda: a * None, lambda: a - [1.0, 2.0], lambda: "1" / a, lambda: None / a):
        with pytest.raises(TypeError):
            fn()
    np.testing.assert_array_equal((3.0 / a).numpy(), [3.0, 1.5])


# --------------------------------------------------------------------------- #
# matmul's general path
# --------------------------------------------------------------------------- #
def test_matmul_promotes_mixed_dtypes(device):
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    y = np.arange(12, dtype=np.float64).reshape(3, 4) / 3
    for a, b, want in [(_a(x, device), _a(y, device, "float64"), x.astype(np.float64) @ y),
                       (_a(y.T, device, "float64"), _a(x.T, device), y.T @ x.T.astype(np.float64)),
                       (_a(x, device), _a(y[:, 0], device, "float64"), x.astype(np.float64) @ y[:, 0])]:
        out = a @ b
        assert out.dtype == np.float64 and out.shape == want.shape
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-12)


def test_batched_matmul_of_compact_operands(device):
    # two dense (2, m, n) @ (2, n, p) stacks: one product per batch
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3) - 5
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 4
    out = _a(x, device) @ _a(w, device)
    assert out.shape == (2, 2, 4)
    np.testing.assert_allclose(out.numpy(), x @ w, rtol=1e-6)


def test_matmul_with_unit_batch_axes(device):
    # (1, m, n) @ (n, p): the weight is broadcast (not compact), one batch
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3) - 2
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 2
    for a, b, want in [(_a(x, device), _a(w, device), x @ w),
                       (_a(x, device), _a(w[None], device), x @ w[None]),
                       (_a(x[0], device), _a(w[None, None], device), x[0] @ w[None, None]),
                       (_a(x.reshape(1, 1, 2, 3), device), _a(w.T, device).permute((1, 0)), x.reshape(1, 1, 2, 3) @ w)]:
        out = a @ b
        assert out.shape == want.shape
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)


def test_module_pad_matches_numpy(device):
    x = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
    out = nd.pad(_a(x, device), ((1, 0), (0, 2)))
    np.testing.assert_array_equal(out.numpy(), np.pad(x, ((1, 0), (0, 2))))


# --------------------------------------------------------------------------- #
# __cuda_array_interface__: only for compact arrays in GPU memory
# --------------------------------------------------------------------------- #
class _GpuBuffer:
    """What the interface reads of a GPU backend's buffer (plugins/cuda's
    device buffers): size, dtype, device_index and ptr() -- a stand-in so the
    property's contract is checked on machines without a GPU."""

    def __init__(self, size, dtype, ptr=0x7F0000001000):
        self.size, self.dtype, self.device_index, self._ptr = size, np.dtype(dtype), 0, ptr

    def ptr(self):
        return self._ptr


def test_cuda_array_interface_of_gpu_and_host_arrays(device):
    host = _a(np.zeros((2, 3)), device)
    assert not hasattr(host, "__cuda_array_interface__")
    with pytest.raises(AttributeError, match="not in GPU memory"):
        host.__cuda_array_interface__
    g = nd.NDArray.make((2, 3), device=device, handle=_GpuBuffer(6, "float32"))
    assert g.__cuda_array_interface__ == {"shape": (2, 3), "typestr": "<f4", "data": (0x7F0000001000, False),
                                          "strides": None, "version": 3, "stream": None}
    g64 = nd.NDArray.make((4,), device=device, handle=_GpuBuffer(4, "float64", ptr=4096))
    assert g64.__cuda_array_interface__["typestr"] == "<f8" and g64.__cuda_array_interface__["data"] == (4096, False)
    # a strided view of GPU memory has no interface (strides None means C-contiguous)
    for view in (g.permute((1, 0)), g[:, 1:], nd.NDArray.make((2, 2), device=device, handle=_GpuBuffer(6, "float32"))):
        assert not hasattr(view, "__cuda_array_interface__")
        with pytest.raises(AttributeError, match="strided view"):
            view.__cuda_array_interface__

    class _NoPtr:  # a device buffer that exposes no address
        size, dtype, device_index = 6, np.dtype("float32"), 0

    assert not hasattr(nd.NDArray.make((2, 3), device=device, handle=_NoPtr()), "__cuda_array_interface__")


# --------------------------------------------------------------------------- #
# call_multi_tensor_override: when a fused optimizer step is offered
# --------------------------------------------------------------------------- #
def test_multi_tensor_override_is_offered_only_for_matching_arrays(monkeypatch):
    """None (the optimizer's per-parameter fallback) unless the first array's
    device has the kernel and every array shares its device, dtype and, list
    by list, its shape; a list may be None (left out); nothing is called for
    an empty first list."""
    dev = nd.cpu_numpy()
    calls = []

    def kernel(params, grads, moms, out_params, out_moms, lr):
        calls.append((params, grads, moms, out_params, out_moms, lr))
        for src, dst in zip(params, out_params):
            dev.scalar_add(src, lr, dst)

    p = [_a([[1.0, 2.0], [3.0, 4.0]], dev), _a([5.0, 6.0, 7.0], dev)]
    g = [_a([[0.5, 0.5], [0.5, 0.5]], dev).permute((1, 0)), _a([1.0, 1.0, 1.0], dev)]  # one non-compact
    assert NDArray.call_multi_tensor_override("sgd_step", (p, g, None), (True, False), 0.25) is None  # no kernel
    assert NDArray.call_multi_tensor_override("sgd_step", ([], [], None), (True, False), 0.25) == [[], None]
    assert NDArray.call_multi_tensor_override("sgd_step", ([], [], None), (True, True), 0.25) == [[], []]
    monkeypatch.setattr(type(dev), "op_override", lambda self, name: kernel if name == "sgd_step" else None)
    assert NDArray.call_multi_tensor_override("adam_step", (p, g, None), (True, False), 0.25) is None

    out_params, out_moms = NDArray.call_multi_tensor_override("sgd_step", (p, g, None), (True, False), 0.25)
    assert out_moms is None and len(calls) == 1
    np.testing.assert_array_equal(out_params[0].numpy(), [[1.25, 2.25], [3.25, 4.25]])
    np.testing.assert_array_equal(out_params[1].numpy(), [5.25, 6.25, 7.25])
    params, grads, moms, outs, none_outs, lr = calls[0]
    assert moms is None and none_outs is None and lr == 0.25
    assert params == [x._handle for x in p] and outs == [x._handle for x in out_params]
    assert all(o is not x._handle for o, x in zip(outs, p))  # fresh outputs, inputs untouched
    np.testing.assert_array_equal(p[0].numpy(), [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(dev.to_numpy(grads[0], (2, 2), (2, 1), 0), [[0.5, 0.5], [0.5, 0.5]])

    other = nd.cpu()
    for bad_grads in ([g[0]],  # one array short
                      [g[0], _a([1.0, 1.0, 1.0], other)],  # another device
                      [g[0], _a([1.0, 1.0, 1.0], dev, "float64")],  # another dtype
                      [g[0], _a([1.0, 1.0, 1.0, 1.0], dev)],  # another shape
                      [g[0], _a([[1.0, 1.0, 1.0]], dev)]):  # same size, another shape
        assert NDArray.call_multi_tensor_override("sgd_step", (p, bad_grads, None), (True, False), 0.25) is None
    assert NDArray.call_multi_tensor_override("sgd_step", (p, g, [g[1], g[0]]), (True, True), 0.25) is None
    # a left-out list is skipped, the lists after it are still checked
    assert NDArray.call_multi_tensor_override("sgd_step", (p, None, [g[1], g[0]]), (True, True), 0.25) is None
    assert len(calls) == 1


# --------------------------------------------------------------------------- #
# construction from NumPy arrays
# --------------------------------------------------------------------------- #
def test_a_numpy_source_of_another_dtype_is_converted_or_refused(device):
    # a contiguous float64 / int64 source is cast to the requested dtype
    src = np.array([[0.1, -2.7], [1e-3, 3.0e5]])
    a = nd.array(src, device=device)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a.numpy(), src.astype(np.float32))
    np.testing.assert_array_equal(nd.array(np.arange(4), device=device).numpy(), np.arange(4, dtype=np.float32))
    # the same dtype is copied as it is, contiguous or not
    f = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(nd.array(f, device=device).numpy(), f)
    np.testing.assert_array_equal(nd.array(f.T, device=device).numpy(), f.T)
    # sources that are no numbers are refused with the typed error, whatever their layout
    for bad in (np.array(["x", "y"]), np.array([{"a": 1}, 2.0], dtype=object), np.array(["x", "y", "z"])[::2]):
        with pytest.raises(ArgumentTypeError, match="cannot build an array"):
            nd.array(bad, device=device)


def test_static_methods_are_callable_through_an_instance(device):
    # the course's NDArray code calls them as self.make(...) / self.compact_strides(...)
    a = _a(np.zeros((2, 3, 4)), device)
    assert NDArray.compact_strides((2, 3, 4)) == (12, 4, 1) == a.compact_strides(a.shape)
    assert a.compact_strides([5]) == (1,) and a.compact_strides(()) == ()
    m = a.make((3, 2), device=device, dtype="float64")
    assert type(m) is NDArray and m.shape == (3, 2) and m.strides == (2, 1) and m.dtype == np.float64
    v = a.make((2, 2), strides=(1, 2), device=device, handle=a._handle, offset=3)
    np.testing.assert_array_equal(v.numpy(), np.zeros((2, 2), np.float32))
    assert v.strides == (1, 2) and v.offset == 3 and v._handle is a._handle
    assert a.call_op_override("no such op", (a,), (2,)) is None
    assert a.call_multi_tensor_override("no such op", ([a], [a]), (True,)) is None


def test_views_of_a_subclass_keep_the_subclass(device):
    class Tagged(NDArray):
        __slots__ = ()

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = Tagged(x, device=device)
    for view, want in [(t[1:, :], x[1:, :]), (t.permute((1, 0)), x.T), (t.reshape((3, 2)), x.reshape(3, 2)),
                       (t.broadcast_to((4, 2, 3)), np.broadcast_to(x, (4, 2, 3))), (t.as_strided((3,), (1,)), x[0])]:
        assert type(view) is Tagged and view._handle is t._handle
        np.testing.assert_array_equal(view.numpy(), want)


# --------------------------------------------------------------------------- #
# conversion to NumPy
# --------------------------------------------------------------------------- #
def test_numpy_copies_a_read_only_view_from_the_backend(monkeypatch):
    """Backend.to_numpy may return a read-only view of its buffer (the
    protocol lets the caller copy): NDArray.numpy() still hands out a
    writeable copy that later writes to the array do not reach."""
    dev = nd.cpu_numpy()
    be = dev.require()

    def to_numpy_view(a, shape, strides, offset):
        item = a.array.itemsize
        v = np.ndarray(tuple(shape), dtype=a.array.dtype, buffer=a.array, offset=offset * item,
                       strides=tuple(s * item for s in strides))
        v.flags.writeable = False
        return v

    monkeypatch.setattr(be, "to_numpy", to_numpy_view)
    a = _a(np.arange(6).reshape(2, 3), dev)
    out = a.numpy()
    assert out.flags.writeable
    a[0, 0] = 100.0
    out[1, 1] = -1.0
    np.testing.assert_array_equal(out, [[0, 1, 2], [3, -1, 5]])
    np.testing.assert_array_equal(a.numpy(), [[100, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(a.permute((1, 0)).numpy(), [[100, 3], [1, 4], [2, 5]])


def test_array_protocol_keeps_or_converts_the_dtype(device):
    a = _a([[1.5, -2.0]], device)
    assert np.asarray(a).dtype == np.float32 and np.array(a).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(a), [[1.5, -2.0]])
    assert np.asarray(_a([0.1], device, "float64")).dtype == np.float64
    as64 = np.asarray(a, dtype=np.float64)
    assert as64.dtype == np.float64 and as64.tolist() == [[1.5, -2.0]]
    assert np.array(a, dtype=np.int64).tolist() == [[1, -2]]


def test_reshape_infers_one_minus_one_dimension(device):
    x = np.arange(12, dtype=np.float32)
    a = _a(x, device)
    for shape in ((-1,), (3, -1), (-1, 6), (2, -1, 3), (1, -1), -1):
        np.testing.assert_array_equal(a.reshape(shape).numpy(), x.reshape(shape))
    np.testing.assert_array_equal(_a(np.float32(3.0), device).reshape((-1,)).numpy(), [3.0])
    # ambiguous or impossible: two -1, a zero beside -1, a size that does not divide
    e = _a(np.zeros((0, 3)), device)
    assert e.reshape((-1,)).shape == (0,) and e.reshape((3, -1)).shape == (3, 0)
    one = _a([5.0], device)  # two -1 could both be 1: still refused, as NumPy does
    for arr, shape in [(a, (-1, -1)), (one, (-1, -1)), (one, (-1, 1, -1)), (e, (0, -1)), (a, (5, -1)), (a, (0, -1))]:
        with pytest.raises(ShapeError, match="cannot reshape"):
            arr.reshape(shape)


# --------------------------------------------------------------------------- #
# views: permute, broadcast_to
# --------------------------------------------------------------------------- #
def test_permute_takes_axes_from_minus_ndim_to_ndim_minus_one(device):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    a = _a(x, device)
    for axes in ((-3, -2, -1), (2, -3, 1), (-1, 0, -2)):
        p = a.permute(axes)
        np.testing.assert_array_equal(p.numpy(), np.transpose(x, axes))
        assert p.strides == tuple(a.strides[ax] for ax in axes)
    # an axis one past either end is out of range, even when it would wrap onto a free axis
    for axes in ((3, 1, 2), (0, 1, -4), (0, 1, 5)):
        with pytest.raises(AxisError, match="out of range"):
            a.permute(axes)
    for axes in ((0, 1), (0, 0, 1), (0, 1, 2, 0), (1, -2, 0)):
        with pytest.raises(AxisError, match="not a permutation"):
            a.permute(axes)
    with pytest.raises(ArgumentTypeError, match="integers"):
        a.permute((0, 1.0, 2))


# --------------------------------------------------------------------------- #
# indexing
# --------------------------------------------------------------------------- #
def test_process_slice_axis_range(device):
    a = _a(np.zeros((2, 3, 4)), device)
    assert a.process_slice(slice(1, None), -3) == slice(1, 2, 1)
    assert a.process_slice(slice(None, -1), 2) == slice(0, 3, 1)
    assert a.process_slice(slice(None, None, 2), np.int64(-1)) == slice(0, 4, 2)
    for axis in (3, -4, 1.0, 2.5, "0"):
        with pytest.raises(AxisError, match="process_slice: axis"):
            a.process_slice(slice(None), axis)


def test_integer_index_range_on_every_axis(device):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = _a(x, device)
    for i in (-3, -1, 0, 2):
        for j in (-4, 3):
            v = a[i, j]
            assert v.shape == (1, 1)
            assert v.numpy().item() == x[i, j]
            a[i, j] = x[i, j] = 100.0 + i + j
            np.testing.assert_array_equal(a.numpy(), x)
    for idx, axis, size in [((3, 0), 0, 3), ((-4, 0), 0, 3), ((0, 4), 1, 4), ((0, -5), 1, 4)]:
        with pytest.raises(OutOfBoundsError, match=rf"axis {axis} with size {size}; valid: {-size}\.\.{size - 1}$"):
            a[idx]
    # fewer indices than axes: the rest are whole slices
    np.testing.assert_array_equal(a[1].numpy(), x[1:2])
    np.testing.assert_array_equal(a[np.int64(-1)].numpy(), x[-1:])


def test_setitem_converts_sources_and_checks_counts(device):
    x = np.zeros((3, 4), np.float32)
    a = _a(x, device)
    # a float64 NumPy source and a float64 NDArray are rounded to the array's float32
    src = np.array([[0.1, 0.2], [0.3, 1e-8]])
    a[1:, 2:] = src
    x[1:, 2:] = src
    a[0, :] = _a([[1.1, 2.2, 3.3, 4.4]], device, "float64")
    x[0, :] = [1.1, 2.2, 3.3, 4.4]
    # a transposed (not compact) source is read in its logical order
    t = np.arange(4, dtype=np.float32).reshape(2, 2)
    a[1:, :2] = _a(t, device).permute((1, 0))
    x[1:, :2] = t.T
    np.testing.assert_array_equal(a.numpy(), x)
    # a float64 array keeps a float64 source's digits
    d = _a(np.zeros(3), device, "float64")
    d[:] = np.array([0.1, 0.2, 0.3])
    np.testing.assert_array_equal(d.numpy(), [0.1, 0.2, 0.3])
    with pytest.raises(ShapeError, match=r"cannot assign 3 elements \(shape \(3,\)\) to a view of shape \(1, 4\) \(4 elements\)"):
        a[0, :] = np.ones(3, np.float32)
    # empty views: nothing to write, no error
    a[1:1, :] = np.zeros((0, 4), np.float32)
    a[:, 4:] = 7.0
    np.testing.assert_array_equal(a.numpy(), x)
    with pytest.raises(ArgumentTypeError, match="value must be"):
        a[0, 0] = "1"


def test_setitem_through_a_broadcast_axis_of_two_is_refused(device):
    a = _a(np.zeros((1, 3)), device)
    b = a.broadcast_to((2, 3))
    with pytest.raises(ShapeError, match=r"broadcast view \(stride 0 on axis 0"):
        b[:, :] = _a(np.ones((2, 3)), device)
    c = _a(np.zeros((2, 1)), device).broadcast_to((2, 2))
    with pytest.raises(ShapeError, match=r"stride 0 on axis 1"):
        c[:, :] = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(a.numpy(), np.zeros((1, 3)))


# --------------------------------------------------------------------------- #
# element-wise operands
# --------------------------------------------------------------------------- #
def test_empty_operands_broadcast_by_numpy_rules(device):
    # two empty arrays whose dense strides agree ((2, 0) and (5, 0): both (0, 1))
    # still follow the broadcasting rules
    a, b = _a(np.zeros((2, 0)), device), _a(np.zeros((5, 0)), device)
    for fn in (lambda: a + b, lambda: a * b, lambda: a.maximum(b), lambda: a >= b):
        with pytest.raises(ShapeError, match="cannot be broadcast"):
            fn()
    assert (a + _a(np.zeros((1, 0)), device)).shape == (2, 0)
    assert (_a(np.zeros((3, 1, 0)), device) * b).shape == (3, 5, 0)


def test_binary_ops_on_views_that_do_not_cover_their_buffer(device):
    # row slices keep dense strides but cover only part of the buffer (a prefix
    # at offset 0, or a block further in): the kernels must read just the view
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.arange(12, dtype=np.float32).reshape(4, 3)[::-1].copy() / 2
    z = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    a, b, c = _a(x, device), _a(y, device), _a(z, device)
    for got, want in [(a[:2] + b[:2], x[:2] + y[:2]), (a[:2] - c, x[:2] - z), (c * b[:2], z * y[:2]),
                      (a[2:] / (b[:2] + 1), x[2:] / (y[:2] + 1)), (a[1:3].maximum(c), np.maximum(x[1:3], z)),
                      (a[:2] >= b[2:], (x[:2] >= y[2:]).astype(np.float32)), (c + a[2:], z + x[2:])]:
        assert got.shape == (2, 3) and got.strides == (3, 1) and got.is_compact()
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
        np.testing.assert_allclose(got.reshape((6,)).numpy(), want.reshape(6), rtol=1e-6)
    # whole buffers of one shape, dense or transposed (a square transpose has the
    # same shape and buffer size but other strides)
    s = np.arange(9, dtype=np.float32).reshape(3, 3)
    sq = _a(s, device)
    for got, want in [(a + b, x + y), (a * b, x * y), (sq - sq.permute((1, 0)), s - s.T),
                      (sq.permute((1, 0)) * sq, s.T * s), (sq.maximum(sq.permute((1, 0))), np.maximum(s, s.T))]:
        assert got.is_compact()
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_matmul_vector_and_empty_operands(device):
    rng = np.random.default_rng(11)
    m, n, p = 3, 4, 2
    A, B = rng.standard_normal((m, n)).astype(np.float32), rng.standard_normal((n, p)).astype(np.float32)
    v, w = rng.standard_normal(n).astype(np.float32), rng.standard_normal(m).astype(np.float32)
    S = rng.standard_normal((2, m, n)).astype(np.float32)
    cases = [(v, v), (v, B), (A, v), (w, A), (S, v), (v, np.transpose(S, (0, 2, 1))),
             (np.zeros((m, 0), np.float32), np.zeros((0, p), np.float32)),  # empty inner: zeros
             (np.zeros((2, m, 0), np.float32), np.zeros((0, p), np.float32)),
             (np.zeros((0, n), np.float32), B), (A, np.zeros((n, 0), np.float32)),
             (np.zeros(0, np.float32), np.zeros(0, np.float32))]
    for x, y in cases:
        got, want = _a(x, device) @ _a(y, device), x @ y
        assert got.shape == want.shape, (x.shape, y.shape)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    for x, y in [(A, A), (v, A), (B, w), (np.zeros((m, 0), np.float32), B)]:
        with pytest.raises(ShapeError, match="not aligned"):
            _a(x, device) @ _a(y, device)
    for x, y in [(np.float32(2.0), A), (A, np.float32(2.0)), (v, np.float32(2.0))]:
        with pytest.raises(ShapeError, match="0-d operands are not allowed"):
            _a(x, device) @ _a(y, device)


def test_matmul_batches_read_in_place(device):
    # batch axes with one stride (a slice), with none (a permute), and one
    # weight shared by every batch, each against NumPy
    rng = np.random.default_rng(12)
    X = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    W = rng.standard_normal((5, 2)).astype(np.float32)
    Y = rng.standard_normal((3, 2, 5, 2)).astype(np.float32)
    a = _a(X, device)
    cases = [(a, _a(W, device), X @ W),
             (a.permute((1, 0, 2, 3)), _a(Y, device), np.transpose(X, (1, 0, 2, 3)) @ Y),
             (a[:, 1:, :, :], _a(W, device), X[:, 1:] @ W),
             (a[:, :, 1:3, :], _a(Y, device).permute((1, 0, 2, 3)), X[:, :, 1:3] @ np.transpose(Y, (1, 0, 2, 3))),
             (_a(W.T, device), a.permute((0, 1, 3, 2)), W.T @ np.transpose(X, (0, 1, 3, 2))),
             (a, _a(Y[0:1, 0:1], device), X @ Y[0:1, 0:1]),
             # one shared weight, but the batches' rows do not follow each other
             (a[:, :, 1:3, :], _a(W, device), X[:, :, 1:3] @ W),
             # a weight whose batch axis has stride 1 (not 0: one weight per batch)
             (a[0], _a(np.transpose(Y[:, 0], (1, 2, 0)).copy(), device).permute((2, 0, 1)), X[0:1] @ Y[:, 0]),
             # an inner dimension of one through the batched path
             (a[:, :, :, 2:3], _a(W[2:3], device), X[:, :, :, 2:3] @ W[2:3])]
    # batches whose rows overlap (as_strided): batch stride 2, row stride 2
    flat = np.arange(30, dtype=np.float32) / 7
    ov = np.lib.stride_tricks.as_strided(flat, (2, 4, 3), (8, 8, 4))
    cases.append((_a(flat, device).as_strided((2, 4, 3), (2, 2, 1)), _a(W[:3], device), ov @ W[:3]))
    for x, y, want in cases:
        got = x @ y
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_operands_on_equal_device_objects_combine(device):
    # BackendDevice is public: a second object for the same device is equal to
    # the cached one, and arrays on either combine as arrays on one device
    twin = nd.BackendDevice(device.name, backend_name=device.backend_name)
    assert twin == device and twin is not device
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    a, b = _a(x, device), nd.array(x + 1, device=twin)
    assert b.device is twin
    for got, want in [(a + b, 2 * x + 1), (a * b[:, 1:2], x * (x[:, 1:2] + 1)), (a.maximum(b), x + 1),
                      (a @ b.permute((1, 0)), x @ (x + 1).T), (a[:, 0:2] @ b[0:2, :], x[:, 0:2] @ (x + 1)[0:2])]:
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_two_d_matmul_with_one_operand_not_compact(device):
    rng = np.random.default_rng(13)
    A, B = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    a, b = _a(A, device), _a(B, device)
    for got, want in [(a @ b.permute((1, 0)), A @ B.T), (a.permute((1, 0)) @ a[:, 1:], A.T @ A[:, 1:]),
                      (b @ a.permute((1, 0)), B @ A.T), (a[1:, :] @ b.permute((1, 0)), A[1:] @ B.T)]:
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_kernels_are_not_called_for_an_empty_result(monkeypatch):
    """As call_op_override, the element-wise, reduction and matmul paths call
    no backend kernel when the result has no elements (a backend need not
    handle m = 0 or p = 0)."""
    dev = nd.cpu_numpy()
    be = dev.require()
    calls = []
    for name in ("matmul", "matmul_strided", "ewise_add", "ewise_strided", "scalar_mul", "reduce_sum", "fill"):
        real = getattr(be, name)
        monkeypatch.setattr(be, name, lambda *args, _n=name, _f=real: (calls.append(_n), _f(*args))[1])
    e = _a(np.zeros((0, 4)), dev)
    w = _a(np.ones((4, 3)), dev)
    outs = [e @ w, w.permute((1, 0)) @ _a(np.zeros((4, 0)), dev), e @ w[:, 0:0], e + e, e + e[:, 0:1], e * 2.0,
            e.sum(axis=1), _a(np.zeros((2, 0, 3)), dev).sum(axis=(0, 2))]
    assert [o.shape for o in outs] == [(0, 3), (3, 0), (0, 0), (0, 4), (0, 4), (0, 4), (0,), (0,)]
    assert calls == []


def test_flip_short_long_and_several_axes(device):
    rng = np.random.default_rng(14)
    for shape, axes in [((2, 3), (0,)), ((2, 3), (1,)), ((1, 3), None), ((3, 2, 4), (0, 2)), ((3, 2, 4), (-1, -3)),
                        ((2, 65), (1,)), ((64, 2), (0, 1)), ((70,), 0)]:
        x = rng.standard_normal(shape).astype(np.float32)
        a = _a(x, device)
        got = a.flip(axes)
        assert got.is_compact() and got.shape == x.shape
        np.testing.assert_array_equal(got.numpy(), np.flip(x, axes))
        np.testing.assert_array_equal(a.numpy(), x)  # a copy: the source is unchanged
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(_a(x, device).permute((1, 0)).flip((0,)).numpy(), np.flip(x.T, 0))


def test_pad_widths_and_their_checks(device):
    x = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
    a = _a(x, device)
    for widths in (((0, 0), (0, 0)), ((1, 0), (0, 2)), ((0, 3), (1, 1)), [[2, 1], [0, 1]]):
        np.testing.assert_array_equal(a.pad(widths).numpy(), np.pad(x, widths))
    np.testing.assert_array_equal(a.permute((1, 0)).pad(((1, 1), (0, 1))).numpy(), np.pad(x.T, ((1, 1), (0, 1))))
    e = _a(np.zeros((0, 2)), device)
    np.testing.assert_array_equal(e.pad(((1, 1), (1, 0))).numpy(), np.zeros((2, 3), np.float32))
    for bad in (((1, 0),), ((1, 0), (0, 1), (0, 0)), ((-1, 0), (0, 0)), ((0, 0), (0, -1)), ((0, 0, 0), (0, 0)),
                ((0,), (0, 0))):
        with pytest.raises(ShapeError, match=r"pad: need one non-negative \(left, right\) pair per axis"):
            a.pad(bad)


def test_views_must_stay_inside_their_buffer(device):
    a = _a(np.arange(6), device)
    # the last element read is offset + sum((d - 1) * stride): index 5 is the last one there is
    np.testing.assert_array_equal(a.as_strided((2,), (5,)).numpy(), [0, 5])
    np.testing.assert_array_equal(a.as_strided((2, 2), (3, 2)).numpy(), [[0, 2], [3, 5]])
    np.testing.assert_array_equal(a[1:].as_strided((2, 2), (2, 1)).numpy(), [[1, 2], [3, 4]])
    assert a.as_strided((0, 50), (50, 1)).shape == (0, 50)  # an empty view reads nothing
    np.testing.assert_array_equal(a.as_strided((3, 2), (0, 1)).numpy(), [[0, 1]] * 3)  # stride 0 repeats
    with pytest.raises(OutOfBoundsError, match="reaches element 6"):  # one element, but past the end
        NDArray.make((1,), device=device, handle=a._handle, offset=6)
    for shape, strides in [((3,), (3,)), ((2, 2), (3, 3)), ((7,), (1,)), ((2, 3), (3, 2))]:
        with pytest.raises(OutOfBoundsError, match=r"reaches element \d+ of a buffer of 6"):
            a.as_strided(shape, strides)
    with pytest.raises(OutOfBoundsError, match="reaches element 6"):
        a[2:].as_strided((5,), (1,))
    with pytest.raises(ShapeError, match="negative offset, stride"):
        a.as_strided((2,), (-1,))
    with pytest.raises(ShapeError, match="negative offset, stride"):
        NDArray.make((2,), strides=(1,), device=device, handle=a._handle, offset=-1)
    with pytest.raises(ShapeError, match="differ in length"):
        NDArray.make((2, 1), strides=(1,), device=device, handle=a._handle)


def test_slices_clamp_and_never_run_backwards(device):
    x = np.arange(10, dtype=np.float32)
    a = _a(x, device)
    for sl in (slice(3, 1), slice(8, 2, 3), slice(-2, -5), slice(20, None), slice(None, -20), slice(2, 9, 4),
               slice(-3, None, 2), slice(None, None, 11)):
        v = a[sl]
        assert v.shape == x[sl].shape, sl
        np.testing.assert_array_equal(v.numpy(), x[sl])
    # process_slice hands out explicit bounds that never run backwards
    assert a.process_slice(slice(3, 1), 0) == slice(3, 3, 1)
    assert a.process_slice(slice(-2, -5, 2), 0) == slice(8, 8, 2)
    for bad in (slice(None, None, 0), slice(None, None, -1), slice(5, 1, -2)):
        with pytest.raises(OutOfBoundsError, match="slice step must be positive"):
            a[bad]
    with pytest.raises(ArgumentTypeError, match="slice bounds must be integers"):
        a[1.0:3]


def test_copies_keep_negative_zero_and_special_values(device):
    # the copy constructor and a reduction over no axes copy the values
    # exactly (x + 0.0 would turn -0.0 into +0.0), as NumPy does
    x = np.array([[-0.0, 0.0, np.nan], [np.inf, -np.inf, -2.5]], np.float32)
    a = _a(x, device)
    for got in (NDArray(a), NDArray(a, device=device), nd.array(a, device=device, dtype="float32"),
                NDArray(a.permute((1, 0))).permute((1, 0)), a.sum(axis=()), a.max(axis=()), a.sum(axis=(), keepdims=True)):
        assert got.shape == (2, 3) and got.dtype == np.float32
        out = got.numpy()
        np.testing.assert_array_equal(out, x)
        np.testing.assert_array_equal(np.signbit(out), np.signbit(x))
    for c in (NDArray(a), a.sum(axis=()), a.max(axis=[])):
        c[0, 0] = 5.0  # a copy, not a view
        assert a.numpy()[0, 0] == 0.0 and np.signbit(a.numpy()[0, 0])
    assert NDArray(_a(np.zeros((0, 2)), device)).shape == (0, 2)


def test_reshape_refuses_float_sizes_as_numpy(device):
    # int() would have turned 6.0 into 6 and 6.5 into 6; NumPy refuses both
    from needle.errors import ArgumentTypeError
    a = _a(np.zeros((2, 3, 3), np.float32), device)
    for shape in ((6.0, 3), (6.5, 3), 18.0):
        with pytest.raises(ArgumentTypeError, match="reshape: shape must be an int or a sequence of ints"):
            a.reshape(shape)
    assert a.reshape((np.int64(6), 3)).shape == (6, 3) and a.reshape(18).shape == (18,)


# --------------------------------------------------------------------------- #
# ndarray survivors (fifth session)
# --------------------------------------------------------------------------- #
def _other_device(device):
    return nd.cpu_numpy() if device.name != "cpu_numpy" else nd.cpu()


def test_copy_to_another_device_also_converts_the_dtype(device):
    # NDArray(x, device=elsewhere, dtype=...) moves AND casts, as np.asarray would
    other = _other_device(device)
    if not other.enabled():
        pytest.skip(f"{other.name} unavailable")
    x = np.array([[1.5, -2.25], [3.0, 0.1]], np.float32)
    a = _a(x, device)
    for dt in ("float64", "float32"):
        got = NDArray(a, device=other, dtype=dt)
        assert got.device == other and got.dtype == np.dtype(dt)
        np.testing.assert_array_equal(got.numpy(), x.astype(dt))
    back = NDArray(_a(x, other, "float64"), device=device, dtype="float32")
    assert back.device == device and back.dtype == np.float32
    np.testing.assert_array_equal(back.numpy(), x)


def test_comparisons_with_ties_and_scalars_follow_numpy(device):
    x = np.array([-3.0, 0.0, 1.0, 2.0, 3.0], np.float32)
    y = np.array([-3.0, 1.0, 1.0, 0.0, 3.0], np.float32)  # ties at 0, 2 and 4
    a, b = _a(x, device), _a(y, device)
    for got, want in ((a <= b, x <= y), (a >= b, x >= y), (a < b, x < y), (a > b, x > y),
                      (a <= a, x <= x), (a > a, x > x)):
        np.testing.assert_array_equal(got.numpy(), want.astype(np.float32))
    for s in (1, 1.0, np.float32(2.0), -3):
        pairs = [(a > s, x > s), (a >= s, x >= s), (a < s, x < s), (a <= s, x <= s)]
        if not isinstance(s, np.generic):  # np.float32 on the left is NumPy's own operator
            pairs += [(s > a, s > x), (s <= a, s <= x)]
        for got, want in pairs:
            np.testing.assert_array_equal(got.numpy(), want.astype(np.float32), err_msg=repr(s))


def test_an_ndarray_is_unhashable_like_numpy(device):
    import collections.abc
    a = _a([1.0, 2.0], device)
    assert NDArray.__hash__ is None and not isinstance(a, collections.abc.Hashable)
    with pytest.raises(TypeError, match="unhashable type"):
        hash(a)
    with pytest.raises(TypeError, match="unhashable type"):
        {a: 1}


def test_matmul_two_d_with_three_d_and_broadcast_weights(device):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    # (m, n) @ (B, n, p): the 2-d left operand broadcasts over the batch
    b3 = rng.standard_normal((4, 3, 2)).astype(np.float32)
    np.testing.assert_allclose((_a(w.T.copy(), device) @ _a(b3, device)).numpy(), w.T @ b3, rtol=1e-5, atol=1e-5)
    # (B, T, K) @ (K, N) and @ (1, K, N): one weight (batch stride 0) for every batch
    for wt in (w, w[None]):
        np.testing.assert_allclose((_a(x, device) @ _a(wt, device)).numpy(), x @ wt, rtol=1e-5, atol=1e-5)
    # a (B, 1, K) slice whose batches are NOT one row apart, against one weight
    xs = _a(x, device)[:, 1:2, :]
    np.testing.assert_allclose((xs @ _a(w, device)).numpy(), x[:, 1:2, :] @ w, rtol=1e-5, atol=1e-5)
    # a right operand broadcast along its ROWS (stride 0 on axis 1), distinct per batch
    c = rng.standard_normal((2, 1, 4)).astype(np.float32)
    cb = _a(c, device).broadcast_to((2, 3, 4))
    assert cb.strides == (4, 0, 1)
    np.testing.assert_allclose((_a(x, device) @ cb).numpy(), x @ np.broadcast_to(c, (2, 3, 4)),
                               rtol=1e-5, atol=1e-5)


def test_matmul_over_three_batch_axes(device):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 3, 4, 2, 3)).astype(np.float32)
    b = rng.standard_normal((2, 3, 4, 3, 2)).astype(np.float32)
    np.testing.assert_allclose((_a(a, device) @ _a(b, device)).numpy(), a @ b, rtol=1e-5, atol=1e-5)
    # permuted (non-collapsible) batch axes
    ap = a.transpose(1, 0, 2, 3, 4)
    got = _a(a, device).permute((1, 0, 2, 3, 4)) @ _a(b.transpose(1, 0, 2, 3, 4).copy(), device)
    np.testing.assert_allclose(got.numpy(), ap @ b.transpose(1, 0, 2, 3, 4), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(5, 2, 3), (2, 3, 2, 3), (2, 3, 4, 2, 3), (2, 1, 3, 1, 4, 2, 3)])
def test_as_batched_collapses_dense_batch_axes(device, shape):
    # _as_batched views (..., r, c) as (prod(batch), r, c) when the batch axes
    # follow each other at one stride, and gives None when they do not
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    a = _a(x, device)
    v = nd._as_batched(a)
    assert v is not None and v.shape == (int(np.prod(shape[:-2])),) + shape[-2:]
    np.testing.assert_array_equal(v.numpy(), x.reshape(v.shape))
    nbatch = len(shape) - 2
    perm = tuple(reversed(range(nbatch))) + (nbatch, nbatch + 1)
    real = [d for d in shape[:-2] if d != 1]
    if len(real) > 1:
        assert nd._as_batched(a.permute(perm)) is None
    # a batch axis broadcast from 1 (stride 0) over a dense one does not collapse either
    bc = _a(x[:1], device).broadcast_to((3,) + shape[1:]) if nbatch == 1 else None
    if bc is not None:
        w = nd._as_batched(bc)
        assert w.shape == (3,) + shape[1:] and w.strides[0] == 0
        np.testing.assert_array_equal(w.numpy(), np.broadcast_to(x[:1], (3,) + shape[1:]))


def test_sum_routes_only_partial_leading_reductions_to_sum_leading(device, monkeypatch):
    used = []
    real = NDArray.call_op_override

    def spy(name, *args):
        out = real(name, *args)
        used.append(name)
        return out
    monkeypatch.setattr(NDArray, "call_op_override", staticmethod(spy))
    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.0
    a = _a(x, device)
    np.testing.assert_array_equal(a.sum(axis=0).numpy(), x.sum(axis=0))
    assert used == ["sum_leading"]  # one leading axis of two
    used.clear()
    for got, want in ((a.sum(), x.sum()), (a.sum(axis=(0, 1)), x.sum()), (a.sum(axis=1), x.sum(axis=1)),
                      (a.sum(keepdims=True), x.sum(keepdims=True))):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.numpy(), want)
    assert used == []  # a full or trailing reduction is one reduce_sum


def test_module_max_drops_the_reduced_axes_by_default(device):
    x = np.array([[1.0, 5.0], [-2.0, 3.0]], np.float32)
    a = _a(x, device)
    assert nd.max(a).shape == () and nd.max(a).numpy() == np.float32(5.0)
    np.testing.assert_array_equal(nd.max(a, axis=0).numpy(), x.max(axis=0))
    assert nd.max(a, axis=1, keepdims=True).shape == (2, 1)


def test_the_element_limit_is_exactly_2_to_the_60_minus_1(device):
    # 8-byte elements: (2**63 - 1) // 8 = 2**60 - 1 of them fit a signed 64-bit byte size;
    # a broadcast view of that many elements is fine, one more is refused
    from needle.errors import SizeOverflowError
    limit = 2**60 - 1
    one = _a([2.0], device)
    assert one.broadcast_to((limit,)).shape == (limit,)
    assert nd._check_size((limit,), "t") == limit
    with pytest.raises(SizeOverflowError, match=rf"has {limit + 1} elements.*\(at most {limit} elements\)$"):
        one.broadcast_to((limit + 1,))
    with pytest.raises(SizeOverflowError, match=rf"at most {limit} elements"):
        nd.empty((2**30, 2**30), device=device)


def test_host_view_speaks_array_interface_version_3(device):
    # the NumPy array interface protocol is version 3; consumers may check it
    a = _a([[1.0, 2.0], [3.0, 4.0]], device)
    v = a.host_view()
    if v is None:
        pytest.skip(f"{device.name} buffers are not in host memory")
    assert v.base.__array_interface__["version"] == 3
    np.testing.assert_array_equal(v, a.numpy())


# --------------------------------------------------------------------------- #
# memory orders (element-wise results keep a dense permutation's layout)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("shape,strides,dense", [
    ((2, 3), (3, 1), True), ((2, 3), (1, 2), True), ((2, 3, 4), (12, 4, 1), True),
    ((2, 3, 4), (1, 8, 2), True), ((2, 1, 3), (3, 99, 1), True), ((1,), (5,), True),
    ((2, 3), (1, 3), False), ((2, 2), (2, 2), False), ((4,), (2,), False), ((3, 2), (0, 1), False),
    ((2, 2), (1, 1), False),
])
def test_dense_permutation_test(shape, strides, dense):
    """Dense in some axis order: no gap, overlap or broadcast; size-1 axes
    carry any stride."""
    assert nd._is_dense_perm(shape, strides) is dense


def test_scalar_and_unary_results_keep_a_dense_permutations_strides(device):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 11
    a = _a(x, device)
    v = a.permute((2, 0, 1))                       # dense, not row-major
    for got, want in ((v * 2.0, x.transpose(2, 0, 1) * 2), (-v, -x.transpose(2, 0, 1)),
                      (v.maximum(0.0), np.maximum(x.transpose(2, 0, 1), 0))):
        assert got.strides == v.strides and got.offset == 0
        np.testing.assert_array_equal(got.numpy(), want)
    # two operands in the same dense order: the flat kernel, the order kept
    y = np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.5
    w = _a(y, device).permute((2, 0, 1))
    both = v + w
    assert both.strides == v.strides
    np.testing.assert_array_equal(both.numpy(), (x + y).transpose(2, 0, 1))
    # an offset view of a bigger buffer is not "whole": compacted first, row-major result
    s = a[1:, :, :]
    r = s * 2.0
    assert r.strides == (12, 4, 1) and r.is_compact()
    np.testing.assert_array_equal(r.numpy(), x[1:] * 2)


def test_compact_of_size_one_axes_strides_is_a_view_only_without_offset(device):
    a = _a(np.arange(6, dtype=np.float32), device)
    odd = NDArray.make((6, 1), strides=(1, 7), device=device, handle=a._handle)
    c = odd.compact()
    assert c.is_compact() and c._handle is a._handle
    # the same odd stride on a view that starts later must copy
    b = _a(np.arange(7, dtype=np.float32), device)
    late = NDArray.make((6, 1), strides=(1, 7), device=device, handle=b._handle, offset=1)
    d = late.compact()
    assert d.is_compact() and d._handle is not b._handle
    np.testing.assert_array_equal(d.numpy().ravel(), np.arange(1, 7, dtype=np.float32))
    # strides that differ on an axis longer than 1 are no view either
    t = _a(np.arange(6, dtype=np.float32).reshape(2, 3), device).permute((1, 0))
    assert t.compact()._handle is not t._handle


def test_multi_tensor_outputs_named_arrays_only_when_they_fit(device):
    """call_multi_tensor_override writes into a named output only when it is
    compact and matches the element's shape, dtype and device."""
    dev = device if hasattr(device, "op_override") else nd.device(device)
    if dev.op_override("sgd_step") is None:
        pytest.skip(f"{device} has no multi-tensor sgd_step")
    p = [_a(np.ones(4, np.float32), device), _a(np.ones((2, 3), np.float32), device)]
    g = [_a(np.full(4, 2.0, np.float32), device), _a(np.full((2, 3), 2.0, np.float32), device)]
    fits = _a(np.zeros(4, np.float32), device)
    wrong_shape = _a(np.zeros((3, 2), np.float32), device)
    for named, expect_same in (([fits, wrong_shape], [True, False]),
                               ([None, _a(np.zeros((2, 3), np.float64), device, "float64")], [False, False]),
                               ([fits, _a(np.zeros((3, 2), np.float32), device).permute((1, 0))],
                                [True, False])):
        out = NDArray.call_multi_tensor_override("sgd_step", (p, g, None), (named, False), 0.5, 0.0, 1.0, 0.0)
        new_p = out[0]
        for o, n_, same in zip(new_p, named, expect_same):
            assert (o is n_) == same
            assert o.is_compact() and o.dtype == np.float32
        np.testing.assert_array_equal(new_p[0].numpy(), np.zeros(4, np.float32))
        np.testing.assert_array_equal(new_p[1].numpy(), np.zeros((2, 3), np.float32))


def test_row_major_2d_products_take_the_compact_kernel(device, monkeypatch):
    """Row-major operands without offset go to ``matmul``; only views
    (transposed, sliced) go to ``matmul_strided``."""
    a, b = _a(np.arange(12, dtype=np.float32).reshape(3, 4), device), \
        _a(np.arange(20, dtype=np.float32).reshape(4, 5), device)
    be = a._be
    calls = []
    real = be.matmul_strided

    def spy(*args):
        calls.append(args[4:7])
        return real(*args)
    try:
        monkeypatch.setattr(be, "matmul_strided", spy)
    except (AttributeError, TypeError):  # a compiled backend's methods cannot be replaced
        pytest.skip(f"cannot watch {device}'s matmul_strided (the numpy device pins the routing)")
    np.testing.assert_array_equal((a @ b).numpy(), a.numpy() @ b.numpy())
    assert calls == []
    big = _a(np.arange(15, dtype=np.float32).reshape(3, 5), device)
    sliced = big[:, :4]                                   # row stride 5, not 4
    np.testing.assert_array_equal((sliced @ b).numpy(), big.numpy()[:, :4] @ b.numpy())
    assert calls == [(3, 4, 5)]
