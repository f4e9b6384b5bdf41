"""Issue 17's classes of hole, one test each (each failed before its fix):
silently wrong results, untyped errors from internals, and the course's
``process_slice``.  Array-level checks run on every backend (``device``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import needle as ndl
import needle.backend_ndarray as nd
from needle import errors
from needle.errors import (ArgumentTypeError, DeviceMismatchError, HyperParameterError, NeedleError,
                           OutOfBoundsError, ShapeError, SizeOverflowError, UnsupportedDTypeError)


# ---------------------------------------------------------------------- #
# silently wrong results
# ---------------------------------------------------------------------- #
def test_softmax_loss_is_stable_per_row(device):
    """One very confident row must not cancel the others (PyTorch gives 0.3466 here)."""
    logits = ndl.Tensor(np.array([[1e4, 0.0], [0.0, 0.0]], dtype=np.float32), device=device)
    y = ndl.Tensor(np.array([0, 1], dtype=np.float32), device=device)
    loss = ndl.nn.SoftmaxLoss()(logits, y).numpy()
    assert float(loss) == pytest.approx(np.log(2.0) / 2, rel=1e-5)
    # and the gradient of a confident row is ~0, of the uniform row +-0.25
    logits = ndl.Tensor(np.array([[1e4, 0.0], [0.0, 0.0]], dtype=np.float32), device=device)
    ndl.nn.SoftmaxLoss()(logits, y).backward()
    np.testing.assert_allclose(logits.grad.numpy(), [[0.0, 0.0], [0.25, -0.25]], atol=1e-6)


def test_softmax_loss_course_value_unchanged(device):
    np.random.seed(0)
    z = np.random.randn(5, 7).astype(np.float32)
    y = np.array([0, 6, 3, 3, 1])
    want = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(5), y])
    got = ndl.nn.SoftmaxLoss()(ndl.Tensor(z, device=device), ndl.Tensor(y, device=device)).numpy()
    assert float(got) == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("make", [
    lambda: ndl.nn.Dropout(1.5), lambda: ndl.nn.Dropout(-0.1),
    lambda: ndl.optim.Adam([], lr=-0.1), lambda: ndl.optim.SGD([], lr=-1.0),
    lambda: ndl.optim.Adam([], beta1=1.0), lambda: ndl.optim.Adam([], eps=0.0),
    lambda: ndl.optim.SGD([], weight_decay=-1e-3),
])
def test_hyper_parameters_outside_their_domain_are_refused(make):
    with pytest.raises(HyperParameterError):
        make()


def test_adam_at_lr_zero_keeps_weights_and_advances_moments(device):
    w = ndl.nn.Parameter(ndl.Tensor(np.ones((3,), np.float32), device=device))
    opt = ndl.optim.Adam([w], lr=0.0)
    (w * w).sum().backward()
    opt.step()  # was ZeroDivisionError
    np.testing.assert_array_equal(w.numpy(), np.ones(3, np.float32))
    np.testing.assert_allclose(opt.m[w].numpy(), 0.1 * 2 * np.ones(3), rtol=1e-6)
    np.testing.assert_allclose(opt.v[w].numpy(), 0.001 * 4 * np.ones(3), rtol=1e-6)
    opt.lr = 0.1  # a schedule raising lr again continues from those moments
    opt.step()
    assert (w.numpy() < 1.0).all()


def test_cosine_schedule_to_zero_with_adam(device):
    w = ndl.nn.Parameter(ndl.Tensor(np.ones((2,), np.float32), device=device))
    opt = ndl.optim.Adam([w], lr=0.1)
    sched = ndl.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    for _ in range(3):
        (w * w).sum().backward()
        opt.step()
        sched.step()
    assert opt.lr == 0.0 and np.isfinite(w.numpy()).all()


def test_backward_out_grad_must_match_device_shape_dtype(device):
    x = ndl.Tensor(np.ones((2, 3), np.float32), device=device)
    y = x * 2
    with pytest.raises(ShapeError, match=r"backward: out_grad has shape \(3, 2\)"):
        y.backward(ndl.Tensor(np.ones((3, 2), np.float32), device=device))
    with pytest.raises(UnsupportedDTypeError, match="backward: out_grad has dtype float64"):
        y.backward(ndl.Tensor(np.ones((2, 3)), device=device, dtype="float64"))
    other = nd.cpu_numpy() if device != nd.cpu_numpy() else nd.cpu()
    with pytest.raises(DeviceMismatchError, match="backward: out_grad is on"):
        y.backward(ndl.Tensor(np.ones((2, 3), np.float32), device=other))
    y.backward(ndl.Tensor(np.full((2, 3), 3.0, np.float32), device=device))
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 6.0))


def test_dataloader_over_empty_dataset_raises():
    ds = ndl.data.NDArrayDataset(np.zeros((0, 3), np.float32))
    with pytest.raises(errors.EmptyDatasetError, match="DataLoader: dataset NDArrayDataset is empty"):
        ndl.data.DataLoader(ds, batch_size=4)


def test_grad_mode_is_per_thread(device):
    """no_grad() in one thread leaves recording on in the others (as PyTorch)."""
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with ndl.no_grad():
            seen["worker"] = ndl.autograd.is_grad_enabled()
            inside.set()
            release.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    assert inside.wait(10)
    try:
        assert ndl.autograd.is_grad_enabled()
        x = ndl.Tensor(np.ones(2, np.float32), device=device)
        y = (x * 3).sum()
        assert y.requires_grad and y.op is not None
        y.backward()
        np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    finally:
        release.set()
        t.join(10)
    assert seen["worker"] is False
    # a new thread starts with grad mode on, even if this one is in no_grad()
    with ndl.no_grad():
        out = {}
        th = threading.Thread(target=lambda: out.setdefault("v", ndl.autograd.is_grad_enabled()))
        th.start()
        th.join(10)
        assert out["v"] is True and not ndl.autograd.is_grad_enabled()


# ---------------------------------------------------------------------- #
# untyped errors from internals -> needle errors subclassing the builtins
# ---------------------------------------------------------------------- #
def test_shape_whose_byte_size_overflows(device):
    for call in (lambda: nd.empty((2**40, 2**40), device=device),
                 lambda: ndl.init.zeros(2**31, 2**31, 2**31, device=device),
                 lambda: nd.array(np.zeros(1), device=device).broadcast_to((2**62, 4))):
        with pytest.raises(SizeOverflowError, match="overflows") as info:
            call()
        assert isinstance(info.value, OverflowError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("fin,fout", [(0, 4), (4, 0), (0, 0)])
def test_linear_with_zero_features_works_like_pytorch(device, fin, fout):
    layer = ndl.nn.Linear(fin, fout, device=device)
    out = layer(ndl.Tensor(np.ones((2, fin), np.float32), device=device))
    assert out.shape == (2, fout)


def test_linear_with_negative_features_is_typed():
    with pytest.raises(HyperParameterError, match="Linear: in_features must be an integer >= 0, got -1"):
        ndl.nn.Linear(-1, 3)


def test_index_out_of_bounds_is_a_needle_index_error(device):
    a = nd.array(np.arange(6, dtype=np.float32).reshape(2, 3), device=device)
    with pytest.raises(OutOfBoundsError, match="index 5 is out of bounds for axis 1 with size 3") as info:
        a[0, 5]
    assert isinstance(info.value, IndexError) and isinstance(info.value, NeedleError)
    ds = ndl.data.NDArrayDataset(np.zeros((3, 2)))
    with pytest.raises(OutOfBoundsError, match="NDArrayDataset: index 3 is out of range for 3 samples"):
        ds[3]
    with pytest.raises(OutOfBoundsError, match="one_hot"):
        ndl.init.one_hot(3, [0, 3], device=device)


@pytest.mark.parametrize("obj", [{"a": 1}, "text", None, object(), [[1, 2], [3]], {1, 2}, b"xy"])
def test_tensor_from_unsupported_object(device, obj):
    with pytest.raises(ArgumentTypeError, match="Tensor: cannot build a tensor from") as info:
        ndl.Tensor(obj, device=device)
    assert isinstance(info.value, TypeError)


def test_ndarray_from_unsupported_object(device):
    with pytest.raises(ArgumentTypeError, match="NDArray: cannot build an array from"):
        nd.array([[1, 2], [3]], device=device)


# ---------------------------------------------------------------------- #
# course API to the letter
# ---------------------------------------------------------------------- #
def test_process_slice_takes_the_axis(device):
    a = nd.array(np.zeros((3, 7, 5)), device=device)
    assert a.process_slice(slice(None, None, None), 1) == slice(0, 7, 1)
    assert a.process_slice(slice(None, -2, None), 2) == slice(0, 3, 1)
    assert a.process_slice(slice(-2, None, 2), 0) == slice(1, 3, 2)
    with pytest.raises(errors.ShapeError, match="process_slice: axis 3 is out of range"):
        a.process_slice(slice(None), 3)


def test_course_style_subclass_calling_process_slice_by_axis(device):
    """hw3's test subclass calls ``self.process_slice(s, i)`` with i the position in the index."""
    class Course(nd.NDArray):
        def course_slices(self, idxs):
            return tuple(self.process_slice(s, i) for i, s in enumerate(idxs))

    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    a = nd.array(x, device=device)
    c = object.__new__(Course)
    c._init(a)
    sl = c.course_slices((slice(None), slice(1, None), slice(None, None, 2)))
    assert sl == (slice(0, 3, 1), slice(1, 4, 1), slice(0, 5, 2))
    np.testing.assert_array_equal(a[sl].numpy(), x[:, 1:, ::2])


def test_simple_ml_softmax_loss_is_stable_per_row(device):
    """The hw2 helper had the same batch-sum cancellation as nn.SoftmaxLoss."""
    from needle.models.simple_ml import softmax_loss
    z = ndl.Tensor(np.array([[1e4, 0.0], [0.0, 0.0]], dtype=np.float32), device=device)
    y = ndl.Tensor(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32), device=device)
    assert float(softmax_loss(z, y).numpy()) == pytest.approx(np.log(2.0) / 2, rel=1e-5)


@pytest.mark.parametrize("cin,cout", [(0, 3), (3, 0), (0, 0)])
def test_conv_with_zero_channels_works_like_pytorch(device, cin, cout):
    layer = ndl.nn.Conv(cin, cout, 3, device=device)
    x = ndl.Tensor(np.ones((2, cin, 5, 5), np.float32), device=device)
    y = layer(x)
    assert y.shape == (2, cout, 5, 5)
    np.testing.assert_array_equal(y.numpy(), np.zeros((2, cout, 5, 5)))  # no input channel: bias bound 0
    y.sum().backward()
    assert layer.weight.grad.shape == (3, 3, cin, cout)


def test_empty_embedding_tables_like_pytorch(device):
    assert ndl.nn.Embedding(4, 0, device=device)(ndl.Tensor(np.zeros((3, 2)), device=device)).shape == (3, 2, 0)
    assert ndl.nn.Embedding(0, 3, device=device).weight.shape == (0, 3)
