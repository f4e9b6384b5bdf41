"""The fused training-mode batch norm op against its composition, PyTorch,
central differences and (second order) the composition's own gradients."""

import numpy as np
import pytest

import needle as ndl
from needle import ops
from needle.errors import ShapeError


def _devices():
    return [d for d in ndl.all_devices() if d.enabled()]


@pytest.fixture(params=_devices(), ids=str)
def device(request):
    return request.param


EPS = 1e-5


def _unfused(x, w, b, eps=EPS):
    """the course API's formula as plain Tensor ops (biased variance, eps in the sqrt)."""
    n = x.shape[0]
    mean = ops.summation(x, (0,)) / n
    centred = x - mean
    var = ops.summation(centred * centred, (0,)) / n
    return w * centred / (var + eps) ** 0.5 + b


def _inputs(device, dtype="float64", seed=0, shape=(7, 5)):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3 + 1
    w = rng.uniform(0.5, 2, shape[1])
    b = rng.standard_normal(shape[1])
    T = lambda a: ndl.Tensor(a, device=device, dtype=dtype)  # noqa: E731
    return (x, w, b), (T(x), T(w), T(b))


def test_forward_matches_composition_numpy_and_stats(device):
    (x, w, b), (tx, tw, tb) = _inputs(device)
    op = ops.BatchNormTrain(EPS)
    y = op(tx, tw, tb)
    ref = w * (x - x.mean(0)) / np.sqrt(x.var(0) + EPS) + b
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y.numpy(), _unfused(tx, tw, tb).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.mean.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(op.var.numpy(), x.var(0), rtol=1e-10)  # biased


def test_float32_forward_and_backward_match_torch(device):
    torch = pytest.importorskip("torch")
    (x, w, b), (tx, tw, tb) = _inputs(device, "float32", seed=1, shape=(128, 100))
    g = np.random.default_rng(2).standard_normal((128, 100)).astype(np.float32)
    y = ops.batch_norm_train(tx, tw, tb)
    (y * ndl.Tensor(g, device=device, requires_grad=False)).sum().backward()
    xt, wt, bt = (torch.tensor(a.astype(np.float32), requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.batch_norm(xt, None, None, wt, bt, training=True, eps=EPS)
    (yt * torch.tensor(g)).sum().backward()
    assert y.dtype == "float32" and tx.grad.dtype == "float32"
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tx.grad.numpy(), xt.grad.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(tw.grad.numpy(), wt.grad.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(tb.grad.numpy(), bt.grad.numpy(), rtol=1e-4, atol=1e-4)


def _numerical_grad(f, arrays, eps=1e-6):
    out = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in range(a.size):
            old = a.flat[i]
            a.flat[i] = old + eps
            plus = f()
            a.flat[i] = old - eps
            minus = f()
            a.flat[i] = old
            g.flat[i] = (plus - minus) / (2 * eps)
        out.append(g)
    return out


def test_gradients_match_central_differences(device):
    (x, w, b), _ = _inputs(device, seed=3, shape=(6, 4))
    v = np.random.default_rng(4).standard_normal((6, 4))

    def loss_value():
        T = lambda a: ndl.Tensor(a, device=device)  # noqa: E731
        return float((ops.batch_norm_train(T(x), T(w), T(b)) * T(v)).sum().numpy())

    tx, tw, tb = (ndl.Tensor(a, device=device) for a in (x, w, b))
    (ops.batch_norm_train(tx, tw, tb) * ndl.Tensor(v, device=device, requires_grad=False)).sum().backward()
    for got, num in zip((tx.grad, tw.grad, tb.grad), _numerical_grad(loss_value, [x, w, b])):
        np.testing.assert_allclose(got.numpy(), num, rtol=1e-6, atol=1e-8)


def test_grad_of_grad_equals_the_compositions(device):
    (_, _, _), (x1, w1, b1) = _inputs(device, seed=5, shape=(6, 3))
    (_, _, _), (x2, w2, b2) = _inputs(device, seed=5, shape=(6, 3))
    rng = np.random.default_rng(6)
    v, u = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    V = ndl.Tensor(v, device=device, requires_grad=False)
    U = ndl.Tensor(u, device=device, requires_grad=False)
    (ops.batch_norm_train(x1, w1, b1) * V).sum().backward()
    (_unfused(x2, w2, b2) * V).sum().backward()
    np.testing.assert_allclose(x1.grad.numpy(), x2.grad.numpy(), rtol=1e-9, atol=1e-12)
    # second order: differentiate <x.grad, U> + sum(w.grad^2) again
    gx1, gw1, gx2, gw2 = x1.grad, w1.grad, x2.grad, w2.grad
    ((gx1 * U).sum() + (gw1 * gw1).sum()).backward()
    ((gx2 * U).sum() + (gw2 * gw2).sum()).backward()
    np.testing.assert_allclose(x1.grad.numpy(), x2.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(w1.grad.numpy(), w2.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_constant_input_and_bad_shapes(device):
    (x, w, b), (_, tw, tb) = _inputs(device)
    cx = ndl.Tensor(x, device=device, requires_grad=False)
    ops.batch_norm_train(cx, tw, tb).sum().backward()
    assert cx.grad is None
    np.testing.assert_allclose(tb.grad.numpy(), np.full(5, 7.0))
    with pytest.raises(ShapeError, match="batch_norm_train"):
        ops.batch_norm_train(ndl.Tensor(np.ones((3, 4)), device=device), tw, tb)


def test_batchnorm1d_module_uses_it_and_matches_torch_over_steps(device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    bn = ndl.nn.BatchNorm1d(6, device=device)
    tbn = torch.nn.BatchNorm1d(6, momentum=0.1, eps=1e-5)
    running_var = np.ones(6)
    for _ in range(3):
        x = rng.standard_normal((9, 6)).astype(np.float32) * 2 + 0.5
        y = bn(ndl.Tensor(x, device=device))
        ty = tbn(torch.tensor(x))
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
        running_var = 0.9 * running_var + 0.1 * x.astype(np.float64).var(axis=0)
    np.testing.assert_allclose(bn.running_mean.numpy(), tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    # course API: running var uses the biased batch variance (torch uses unbiased)
    np.testing.assert_allclose(bn.running_var.numpy(), running_var, rtol=1e-5, atol=1e-6)
    assert not np.allclose(running_var, tbn.running_var.numpy(), rtol=1e-3)  # the two rules differ here
    assert not bn.running_mean.requires_grad and bn.running_mean.op is None
    assert not bn.running_var.requires_grad and bn.running_var.op is None
