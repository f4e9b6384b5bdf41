"""nn.Conv, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d: seeded init against a
NumPy recomputation, forward/backward against PyTorch (when installed) and
against hand-written NumPy convolution, numerical gradients, bad input."""

import math

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.errors import ShapeError

DEVICES = [d for d in (ndl.cpu_numpy(), ndl.cpu(), ndl.cuda()) if d.enabled()]
DEVICE_IDS = [str(d) for d in DEVICES]


def numpy_conv_nchw(x, w_kkio, b, stride, pad):
    """Direct cross-correlation: x (N,C,H,W), w (k,k,C,O) -> (N,O,H',W')."""
    n, c, h, wd = x.shape
    k, _, _, o = w_kkio.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, o, ho, wo), dtype=np.float64)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]  # (N,C,k,k)
            out[:, :, i, j] = np.einsum("ncab,abco->no", patch, w_kkio)
    if b is not None:
        out += b.reshape(1, o, 1, 1)
    return out


def test_conv_seeded_init_matches_numpy_recomputation():
    np.random.seed(0)
    conv = nn.Conv(16, 8, 3)
    np.random.seed(0)
    fan_in = 16 * 9
    bound = math.sqrt(2) * math.sqrt(3 / fan_in)
    w = np.random.rand(3, 3, 16, 8) * 2 * bound - bound
    bb = 1 / math.sqrt(fan_in)
    b = np.random.rand(8) * 2 * bb - bb
    assert conv.weight.shape == (3, 3, 16, 8) and conv.bias.shape == (8,)
    np.testing.assert_allclose(conv.weight.numpy(), w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(conv.bias.numpy(), b, rtol=1e-6, atol=1e-7)
    # course golden: seed 0, kaiming_uniform(144, 72, shape=(3,3,16,8)).sum()
    np.testing.assert_allclose(conv.weight.numpy().sum(), -2.5719218, rtol=1e-5)
    assert conv.weight.dtype == "float32"
    assert [id(p) for p in conv.parameters()] == [id(conv.weight), id(conv.bias)]


def test_conv_tuple_kernel_and_no_bias():
    conv = nn.Conv(2, 3, (5, 5), stride=(2, 2), bias=False)
    assert conv.kernel_size == 5 and conv.stride == 2 and conv.bias is None
    assert len(conv.parameters()) == 1


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
@pytest.mark.parametrize("cin,cout,k,stride,size,bias", [
    (3, 4, 3, 1, 6, True), (2, 5, 1, 1, 5, True), (3, 2, 5, 2, 9, False),
    (4, 3, 3, 2, 8, True), (1, 2, 4, 1, 7, True), (3, 16, 7, 4, 32, True)])
def test_conv_forward_matches_numpy(device, cin, cout, k, stride, size, bias):
    np.random.seed(1)
    conv = nn.Conv(cin, cout, k, stride=stride, bias=bias, device=device)
    x = np.random.randn(2, cin, size, size).astype(np.float32)
    y = conv(ndl.Tensor(x, device=device))
    ref = numpy_conv_nchw(x.astype(np.float64), conv.weight.numpy().astype(np.float64),
                          conv.bias.numpy() if bias else None, stride, k // 2)
    expected_size = (size + 2 * (k // 2) - k) // stride + 1
    assert y.shape == (2, cout, expected_size, expected_size)
    assert y.device == device
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
@pytest.mark.parametrize("cin,cout,k,stride,size,bias", [
    (3, 4, 3, 1, 6, True), (3, 2, 5, 2, 9, False), (4, 6, 3, 2, 8, True), (2, 3, 2, 1, 5, True)])
def test_conv_forward_backward_match_torch(device, cin, cout, k, stride, size, bias):
    torch = pytest.importorskip("torch")
    np.random.seed(2)
    conv = nn.Conv(cin, cout, k, stride=stride, bias=bias, device=device)
    x = np.random.randn(3, cin, size, size).astype(np.float32)
    g = None
    tconv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)
    with torch.no_grad():
        tconv.weight.copy_(torch.tensor(conv.weight.numpy().transpose(3, 2, 0, 1)))
        if bias:
            tconv.bias.copy_(torch.tensor(conv.bias.numpy()))
    tx = torch.tensor(x, requires_grad=True)
    ty = tconv(tx)
    g = np.random.randn(*ty.shape).astype(np.float32)
    ty.backward(torch.tensor(g))

    nx = ndl.Tensor(x, device=device)
    ny = conv(nx)
    ny.backward(ndl.Tensor(g, device=device))
    np.testing.assert_allclose(ny.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.weight.grad.numpy(),
                               tconv.weight.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-4, atol=1e-4)
    if bias:
        np.testing.assert_allclose(conv.bias.grad.numpy(), tconv.bias.grad.numpy(),
                                   rtol=1e-4, atol=1e-4)


def _numerical_grad(f, arr, eps=1e-6):
    grad = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for j in range(flat.size):
        old = flat[j]
        flat[j] = old + eps
        hi = f()
        flat[j] = old - eps
        lo = f()
        flat[j] = old
        gflat[j] = (hi - lo) / (2 * eps)
    return grad


def test_conv_gradients_match_numerical_differences():
    np.random.seed(3)
    x = np.random.randn(2, 2, 5, 5)
    conv = nn.Conv(2, 3, 3, stride=2, dtype="float64")
    w = conv.weight.numpy().copy()
    b = conv.bias.numpy().copy()
    c = np.random.randn(2, 3, 3, 3)

    def loss():
        return float((numpy_conv_nchw(x, w, b, 2, 1) * c).sum())

    nx = ndl.Tensor(x, dtype="float64")
    out = (conv(nx) * ndl.Tensor(c, dtype="float64")).sum()
    out.backward()
    np.testing.assert_allclose(nx.grad.numpy(), _numerical_grad(loss, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conv.weight.grad.numpy(), _numerical_grad(loss, w),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conv.bias.grad.numpy(), _numerical_grad(loss, b),
                               rtol=1e-5, atol=1e-6)


def test_conv_rejects_bad_input():
    conv = nn.Conv(3, 4, 3)
    with pytest.raises(ShapeError, match="channels"):
        conv(ndl.Tensor(np.zeros((1, 2, 5, 5), dtype=np.float32)))
    with pytest.raises(ShapeError, match="4 dimensions"):
        conv(ndl.Tensor(np.zeros((3, 5, 5), dtype=np.float32)))
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv(3, 4, 0)


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
def test_batchnorm2d_train_and_eval_match_torch(device):
    torch = pytest.importorskip("torch")
    np.random.seed(4)
    c = 5
    bn = nn.BatchNorm2d(c, momentum=0.2, device=device)
    tbn = torch.nn.BatchNorm2d(c, momentum=0.2)
    # non-trivial affine parameters so their gradients are checked too
    w = np.random.rand(c).astype(np.float32) + 0.5
    b = np.random.randn(c).astype(np.float32)
    bn.weight.data = ndl.Tensor(w, device=device)
    bn.bias.data = ndl.Tensor(b, device=device)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(w))
        tbn.bias.copy_(torch.tensor(b))
    x = (np.random.randn(4, c, 3, 6) * 2 + 1).astype(np.float32)
    g = np.random.randn(4, c, 3, 6).astype(np.float32)

    tx = torch.tensor(x, requires_grad=True)
    ty = tbn(tx)
    ty.backward(torch.tensor(g))
    nx = ndl.Tensor(x, device=device)
    ny = bn(nx)
    ny.backward(ndl.Tensor(g, device=device))
    assert ny.shape == x.shape and ny.device == device
    np.testing.assert_allclose(ny.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.weight.grad.numpy(), tbn.weight.grad.numpy(), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(bn.bias.grad.numpy(), tbn.bias.grad.numpy(), rtol=1e-4,
                               atol=1e-4)
    # running statistics use the biased variance (course API §10, docs/design.md), unlike torch
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.8 * 0 + 0.2 * mean, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.8 * 1 + 0.2 * var, rtol=1e-5,
                               atol=1e-6)

    bn.eval()
    x2 = np.random.randn(2, c, 2, 2).astype(np.float32)
    y2 = bn(ndl.Tensor(x2, device=device)).numpy()
    rm, rv = bn.running_mean.numpy(), bn.running_var.numpy()
    ref = (w.reshape(1, c, 1, 1) * (x2 - rm.reshape(1, c, 1, 1))
           / np.sqrt(rv.reshape(1, c, 1, 1) + 1e-5) + b.reshape(1, c, 1, 1))
    np.testing.assert_allclose(y2, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), rm)  # eval: no update


def test_batchnorm2d_rejects_non_4d_and_wrong_channels():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ShapeError):
        bn(ndl.Tensor(np.zeros((2, 3), dtype=np.float32)))
    with pytest.raises(ShapeError):
        bn(ndl.Tensor(np.zeros((2, 4, 2, 2), dtype=np.float32)))


def _pool_ref(x, k, s, fn):
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, c, ho, wo), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = fn(x[:, :, i * s:i * s + k, j * s:j * s + k], axis=(2, 3))
    return out


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
@pytest.mark.parametrize("k,s,size", [(2, None, 6), (3, 2, 7), (2, 1, 5), (3, 3, 9)])
def test_pooling_forward_matches_numpy(device, k, s, size):
    np.random.seed(5)
    x = np.random.randn(2, 3, size, size).astype(np.float32)
    stride = k if s is None else s
    ymax = nn.MaxPool2d(k, s)(ndl.Tensor(x, device=device))
    yavg = nn.AvgPool2d(k, s)(ndl.Tensor(x, device=device))
    np.testing.assert_allclose(ymax.numpy(), _pool_ref(x, k, stride, np.max), rtol=1e-6)
    np.testing.assert_allclose(yavg.numpy(), _pool_ref(x, k, stride, np.mean), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (2, 1)])
def test_pooling_gradients_match_torch(device, k, s):
    torch = pytest.importorskip("torch")
    np.random.seed(6)
    x = np.random.randn(2, 3, 7, 6).astype(np.float32)
    for mod, tfn in ((nn.MaxPool2d(k, s), torch.nn.functional.max_pool2d),
                     (nn.AvgPool2d(k, s), torch.nn.functional.avg_pool2d)):
        tx = torch.tensor(x, requires_grad=True)
        ty = tfn(tx, k, s)
        g = np.random.randn(*ty.shape).astype(np.float32)
        ty.backward(torch.tensor(g))
        nx = ndl.Tensor(x, device=device)
        ny = mod(nx)
        ny.backward(ndl.Tensor(g, device=device))
        np.testing.assert_allclose(ny.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(nx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_pooling_rejects_bad_input():
    with pytest.raises(ShapeError):
        nn.MaxPool2d(2)(ndl.Tensor(np.zeros((2, 3, 4), dtype=np.float32)))
    with pytest.raises(ShapeError, match="window"):
        nn.AvgPool2d(5)(ndl.Tensor(np.zeros((1, 1, 4, 4), dtype=np.float32)))
    with pytest.raises(ValueError):
        nn.MaxPool2d(0)
