"""The fused softmax cross-entropy op (issue 14): per-row losses and the
logits' gradient against the unfused composition (logsumexp minus the
one-hot-picked logit), PyTorch, numerical differences and every backend;
bad labels are typed errors naming the op."""

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle import errors as E
from needle import ops
from needle.testing.reference import central_difference


def _composed(z: ndl.Tensor, y: np.ndarray) -> ndl.Tensor:
    """The course's formula with an explicit one-hot matrix (SoftmaxLoss before the fused op)."""
    rows, classes = z.shape
    onehot = ndl.init.one_hot(classes, ndl.Tensor(y.astype("float32"), device=z.device),
                              device=z.device, dtype=z.dtype)
    return ops.logsumexp(z, axes=(1,)) - (z * onehot).sum((1,))


def _data(rows=7, classes=5, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((rows, classes)) * scale).astype(np.float32)
    y = rng.integers(0, classes, size=rows)
    return z, y


def _labels(y, device, dtype="float32"):
    return ndl.Tensor(y.astype(dtype), device=device, dtype=dtype, requires_grad=False)


@pytest.mark.parametrize("shape", [(7, 5), (1, 1), (64, 10), (3, 300)])
def test_forward_and_gradient_match_the_composition(device, shape):
    z_np, y = _data(*shape)
    w_np = np.random.default_rng(1).standard_normal(shape[0]).astype(np.float32)
    z1 = ndl.Tensor(z_np, device=device, requires_grad=True)
    z2 = ndl.Tensor(z_np, device=device, requires_grad=True)
    w = ndl.Tensor(w_np, device=device)
    fused = ops.softmax_cross_entropy(z1, _labels(y, device))
    composed = _composed(z2, y)
    np.testing.assert_allclose(fused.numpy(), composed.numpy(), rtol=1e-6, atol=1e-6)
    (fused * w).sum().backward()
    (composed * w).sum().backward()
    np.testing.assert_allclose(z1.grad.numpy(), z2.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_matches_torch_values_and_gradients(device):
    torch = pytest.importorskip("torch")
    z_np, y = _data(16, 9, seed=3)
    z = ndl.Tensor(z_np, device=device, requires_grad=True)
    loss = nn.SoftmaxLoss()(z, _labels(y, device))
    loss.backward()
    tz = torch.tensor(z_np, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(y))
    tl.backward()
    np.testing.assert_allclose(loss.numpy(), tl.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z.grad.numpy(), tz.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_strided_logits(device):
    """Transposed and sliced logits (non-compact views) give the compact result."""
    torch = pytest.importorskip("torch")
    base = np.random.default_rng(4).standard_normal((6, 11)).astype(np.float32)
    y = np.array([0, 3, 5, 1, 2, 4, 0, 1, 5, 3, 2])
    b = ndl.Tensor(base, device=device, requires_grad=True)
    z = ops.transpose(b)  # (11, 6), a strided view until compacted
    loss = nn.SoftmaxLoss()(z, _labels(y, device))
    loss.backward()
    tb = torch.tensor(base, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tb.T, torch.tensor(y))
    tl.backward()
    np.testing.assert_allclose(loss.numpy(), tl.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_softmax_loss_keeps_the_course_formula(device):
    """nn.SoftmaxLoss == mean over rows of logsumexp(z) - z_y (course API §4), float64 reference."""
    z_np, y = _data(10, 4, seed=5, scale=20.0)
    z64 = z_np.astype(np.float64)
    m = z64.max(axis=1, keepdims=True)
    ref = np.mean(np.log(np.exp(z64 - m).sum(axis=1)) + m[:, 0] - z64[np.arange(10), y])
    got = nn.SoftmaxLoss()(ndl.Tensor(z_np, device=device), _labels(y, device)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_gradient_scaled_by_out_grad_and_numerical(device):
    """(softmax - onehot) * g per row, and central differences in float64."""
    z_np, y = _data(4, 3, seed=6)
    z = ndl.Tensor(z_np.astype("float64"), device=device, dtype="float64", requires_grad=True) \
        if "float64" in getattr(device, "dtypes", ("float32", "float64")) else None
    if z is None:
        pytest.skip("backend without float64")
    labels = _labels(y, device, "float64")
    g = np.array([0.5, -2.0, 1.0, 3.0])
    out = ops.softmax_cross_entropy(z, labels)
    (out * ndl.Tensor(g, device=device, dtype="float64")).sum().backward()
    zz = z_np.astype(np.float64)
    p = np.exp(zz - zz.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(4), y] -= 1
    np.testing.assert_allclose(z.grad.numpy(), p * g[:, None], rtol=1e-10, atol=1e-12)

    def f(a):
        m = a.max(1)
        return float(((np.log(np.exp(a - m[:, None]).sum(1)) + m - a[np.arange(4), y]) * g).sum())
    np.testing.assert_allclose(z.grad.numpy(), central_difference(f, zz), rtol=1e-5, atol=1e-7)


def test_second_order_gradient_matches_the_composition(device):
    z_np, y = _data(3, 4, seed=7)
    v_np = np.random.default_rng(8).standard_normal((3, 4)).astype(np.float32)
    grads = []
    for build in (lambda z: ops.softmax_cross_entropy(z, _labels(y, device)), lambda z: _composed(z, y)):
        z = ndl.Tensor(z_np, device=device, requires_grad=True)
        (gz,) = ndl.autograd.local_vjp(build(z).sum(), (z,), ndl.Tensor(np.float32(1.0), device=device))
        (gz * ndl.Tensor(v_np, device=device)).sum().backward()
        grads.append(z.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_extreme_logits_stay_finite(device):
    z_np = np.array([[1e4, 0.0, -1e4], [-3e4, -3e4, -3e4]], dtype=np.float32)
    y = np.array([1, 2])
    out = ops.softmax_cross_entropy(ndl.Tensor(z_np, device=device), _labels(y, device)).numpy()
    # lse is rounded to float32 before the label's logit is subtracted (as the
    # composition does): at |z| = 3e4 one float32 step is 2e-3
    np.testing.assert_allclose(out, [1e4, np.log(3.0)], rtol=1e-6, atol=2e-3)


def test_labels_in_another_dtype_or_as_a_list(device):
    z_np, y = _data(5, 4, seed=9)
    z = ndl.Tensor(z_np, device=device)
    ref = ops.softmax_cross_entropy(z, _labels(y, device)).numpy()
    np.testing.assert_allclose(ops.softmax_cross_entropy(z, list(y)).numpy(), ref)
    np.testing.assert_allclose(nn.SoftmaxLoss()(z, y).numpy(), ref.mean(), rtol=1e-6)


@pytest.mark.parametrize("bad", [5.0, -1.0, 1.5, float("nan")])
def test_bad_labels_are_typed_errors(device, bad):
    z = ndl.Tensor(np.zeros((3, 5), np.float32), device=device)
    y = ndl.Tensor(np.array([0.0, bad, 1.0], np.float32), device=device)
    with pytest.raises(E.OutOfBoundsError, match="softmax_cross_entropy.*row 1"):
        ops.softmax_cross_entropy(z, y)
    with pytest.raises(E.OutOfBoundsError, match="softmax_cross_entropy"):
        nn.SoftmaxLoss()(z, y)


def test_bad_shapes_and_types(device):
    z = ndl.Tensor(np.zeros((3, 5), np.float32), device=device)
    with pytest.raises(E.ShapeError, match="softmax_cross_entropy.*\\(3,\\)"):
        ops.softmax_cross_entropy(z, _labels(np.zeros(4, int), device))
    with pytest.raises(E.ShapeError, match="softmax_cross_entropy.*\\(5,\\)"):
        ops.softmax_cross_entropy(ndl.Tensor(np.zeros(5, np.float32), device=device),
                                  _labels(np.zeros(5, int), device))
    with pytest.raises(E.ArgumentTypeError, match="softmax_cross_entropy"):
        ops.softmax_cross_entropy(np.zeros((3, 5)), _labels(np.zeros(3, int), device))
    with pytest.raises(E.ArgumentTypeError, match="softmax_cross_entropy"):
        ops.softmax_cross_entropy(z, ["a", "b", "c"])


def test_labels_on_another_device_are_refused_by_the_op():
    devices = [d for d in (ndl.cpu(), ndl.cpu_numpy()) if d.enabled()]
    if len(devices) < 2:
        pytest.skip("needs two backends")
    z = ndl.Tensor(np.zeros((2, 3), np.float32), device=devices[0])
    y = _labels(np.array([0, 1]), devices[1])
    with pytest.raises(E.DeviceMismatchError, match="softmax_cross_entropy"):
        ops.softmax_cross_entropy(z, y)
    # nn.SoftmaxLoss moves the labels (it read them on the host before the fused op too)
    np.testing.assert_allclose(nn.SoftmaxLoss()(z, y).numpy(), np.log(3.0), rtol=1e-6)


def test_cpu_kernel_refuses_bad_labels_itself():
    """The C kernel re-checks labels (a direct backend call cannot read outside a row)."""
    dev = ndl.cpu()
    if not dev.enabled() or dev.op_override("softmax_xent") is None:
        pytest.skip("no compiled cpu backend")
    z = ndl.backend_ndarray.array(np.zeros((2, 3), np.float32), device=dev)
    y = ndl.backend_ndarray.array(np.array([0.0, 3.0], np.float32), device=dev)
    out = ndl.backend_ndarray.array(np.zeros(2, np.float32), device=dev)
    with pytest.raises(E.OutOfBoundsError, match="softmax_xent.*row 1"):
        dev.op_override("softmax_xent")(z.compact()._handle, y._handle, out._handle, 2, 3)


def test_cross_entropy_loss_uses_the_fused_op(device):
    torch = pytest.importorskip("torch")
    z_np, y = _data(6, 4, seed=11)
    y[2] = -100
    for reduction in ("mean", "sum", "none"):
        z = ndl.Tensor(z_np, device=device, requires_grad=True)
        loss = nn.CrossEntropyLoss(reduction=reduction)(z, y)
        loss.sum().backward() if reduction == "none" else loss.backward()
        tz = torch.tensor(z_np, requires_grad=True)
        tl = torch.nn.functional.cross_entropy(tz, torch.tensor(y), reduction=reduction)
        tl.sum().backward()
        np.testing.assert_allclose(loss.numpy(), tl.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(z.grad.numpy(), tz.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_graph_is_two_fused_nodes(device):
    """Forward is one SoftmaxCrossEntropy node; its adjoint one SoftmaxCrossEntropyGrad node."""
    z_np, y = _data(4, 6, seed=12)
    z = ndl.Tensor(z_np, device=device, requires_grad=True)
    out = ops.softmax_cross_entropy(z, _labels(y, device))
    assert isinstance(out.op, ops.SoftmaxCrossEntropy) and out.inputs[0] is z
    (gz,) = ndl.autograd.local_vjp(out, (z,), ndl.Tensor(np.ones(4, np.float32), device=device))
    assert isinstance(gz.op, ndl.ops.ops_loss.SoftmaxCrossEntropyGrad)


def test_nan_in_a_row_gives_nan_for_that_row_only(device):
    z_np, y = _data(3, 4, seed=13)
    z_np[1, 2] = np.nan
    fused = ops.softmax_cross_entropy(ndl.Tensor(z_np, device=device), _labels(y, device)).numpy()
    composed = _composed(ndl.Tensor(z_np, device=device), y).numpy()
    assert np.isnan(fused[1]) and np.isnan(composed[1])
    np.testing.assert_allclose(fused[[0, 2]], composed[[0, 2]], rtol=1e-6)
