"""The fused row ops ops.softmax (the attention softmax) and ops.layer_norm
(nn.LayerNorm1d) against their unfused compositions, PyTorch and second-order
gradients, on every backend, with contiguous and strided inputs."""

import numpy as np
import pytest

import needle as ndl
from needle import nn, ops
from needle.autograd import local_vjp
from needle.errors import DeviceMismatchError, ShapeError, UnsupportedDTypeError

EPS = 1e-5


def _softmax_composed(t):
    """the course API's MultiHeadAttention.softmax: max subtracted as a constant."""
    m = ndl.Tensor(t.realize_cached_data().max(axis=len(t.shape) - 1, keepdims=True),
                   device=t.device, dtype=t.dtype, requires_grad=False)
    e = ops.exp(t - m)
    return e / ops.reshape(ops.summation(e, (len(t.shape) - 1,)), tuple(t.shape[:-1]) + (1,))


def _layer_norm_composed(x, w, b, eps=EPS):
    """The course's LayerNorm1d composition."""
    last, dim = len(x.shape) - 1, x.shape[-1]
    keep = tuple(x.shape[:-1]) + (1,)
    mean = ops.reshape(ops.summation(x, (last,)) / dim, keep)
    centred = x - mean
    var = ops.reshape(ops.summation(centred * centred, (last,)) / dim, keep)
    return centred * (var + eps) ** -0.5 * w + b


def _tensor(a, device, dtype, strided, requires_grad=True):
    """A leaf holding ``a``; with ``strided`` the op sees a transposed view of it."""
    if not strided:
        return ndl.Tensor(a, device=device, dtype=dtype, requires_grad=requires_grad), None
    leaf = ndl.Tensor(np.ascontiguousarray(np.swapaxes(a, -1, -2)), device=device, dtype=dtype,
                      requires_grad=requires_grad)
    return ops.transpose(leaf), leaf


def _grad(t, leaf):
    return t.grad.numpy() if leaf is None else np.swapaxes(leaf.grad.numpy(), -1, -2)


@pytest.mark.parametrize("strided", [False, True])
def test_softmax_matches_composition_and_torch(device, strided):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((2, 3, 5, 7)) * 4).astype(np.float64)
    g = rng.standard_normal(a.shape)
    out = []
    for fused in (True, False):
        t, leaf = _tensor(a, device, "float64", strided)
        y = ops.softmax(t) if fused else _softmax_composed(t)
        (y * ndl.Tensor(g, device=device, dtype="float64")).sum().backward()
        out.append((y.numpy(), _grad(t, leaf)))
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    torch = pytest.importorskip("torch")
    ta = torch.tensor(a, requires_grad=True)
    ty = torch.softmax(ta, -1)
    (ty * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out[0][0], ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out[0][1], ta.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_softmax_float32_and_masked_rows(device):
    """The causal mask's -finfo.max entries give exact zeros, as the composition."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    mask = np.triu(np.full((6, 6), -np.finfo(np.float32).max, np.float32), 1)
    t = ndl.Tensor(a, device=device) + ndl.Tensor(mask[None, None], device=device)
    y, ref = ops.softmax(t).numpy(), _softmax_composed(t).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-7)
    assert (y[..., np.triu_indices(6, 1)[0], np.triu_indices(6, 1)[1]] == 0).all()


def test_softmax_second_order_equals_the_compositions(device):
    rng = np.random.default_rng(2)
    a, g = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    got = []
    for fused in (True, False):
        t = ndl.Tensor(a, device=device, dtype="float64", requires_grad=True)
        gt = ndl.Tensor(g, device=device, dtype="float64", requires_grad=True)
        y = ops.softmax(t) if fused else _softmax_composed(t)
        (dx,) = local_vjp(y, (t,), gt)
        one = ndl.Tensor(np.array(1.0), device=device, dtype="float64")
        ddx, ddg = local_vjp(ops.summation(dx * dx), (t, gt), one)
        got.append((dx.numpy(), ddx.numpy(), ddg.numpy()))
    for x, y in zip(*got):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-11)


def test_attention_softmax_uses_the_fused_op(device):
    attn = nn.MultiHeadAttention(device=device)
    t = ndl.Tensor(np.random.default_rng(3).standard_normal((2, 2, 3, 3)), device=device)
    y = attn.softmax(t)
    assert isinstance(y.op, ops.Softmax) or y.op is None
    np.testing.assert_allclose(y.numpy(), _softmax_composed(t).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("shape", [(6, 8), (2, 5, 8)])
def test_layer_norm_matches_composition_and_torch(device, strided, shape):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape) * 3 + 2
    w, b = rng.uniform(0.5, 2, shape[-1]), rng.standard_normal(shape[-1])
    g = rng.standard_normal(shape)
    out = []
    for fused in (True, False):
        t, leaf = _tensor(x, device, "float64", strided)
        wt = ndl.Tensor(w, device=device, dtype="float64", requires_grad=True)
        bt = ndl.Tensor(b, device=device, dtype="float64", requires_grad=True)
        y = ops.layer_norm(t, wt, bt, EPS) if fused else _layer_norm_composed(t, wt, bt)
        (y * ndl.Tensor(g, device=device, dtype="float64")).sum().backward()
        out.append((y.numpy(), _grad(t, leaf), wt.grad.numpy(), bt.grad.numpy()))
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)
    torch = pytest.importorskip("torch")
    tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
    ty = torch.nn.functional.layer_norm(tx, (shape[-1],), tw, tb, EPS)
    (ty * torch.tensor(g)).sum().backward()
    for got, want in zip(out[0], (ty.detach(), tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-10)


def test_layer_norm_second_order_equals_the_compositions(device):
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    w, b = rng.uniform(0.5, 2, 6), rng.standard_normal(6)
    got = []
    for fused in (True, False):
        T = lambda v: ndl.Tensor(v, device=device, dtype="float64", requires_grad=True)  # noqa: E731
        xt, wt, bt = T(x), T(w), T(b)
        y = ops.layer_norm(xt, wt, bt) if fused else _layer_norm_composed(xt, wt, bt)
        dx, dw, db = local_vjp(y, (xt, wt, bt), ndl.Tensor(g, device=device, dtype="float64"))
        one = ndl.Tensor(np.array(1.0), device=device, dtype="float64")
        ddx, ddw = local_vjp(ops.summation(dx * dx) + ops.summation(dw * dw), (xt, wt), one)
        got.append((dx.numpy(), dw.numpy(), db.numpy(), ddx.numpy(), ddw.numpy()))
    for a, c in zip(*got):
        np.testing.assert_allclose(a, c, rtol=1e-8, atol=1e-10)


def test_layernorm1d_float32_matches_the_composition(device):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 16)).astype(np.float32) * 5 + 10
    ln = nn.LayerNorm1d(16, device=device)
    ln.weight.data = ndl.Tensor(rng.uniform(0.5, 2, 16).astype(np.float32), device=device)
    xt = ndl.Tensor(x, device=device, requires_grad=True)
    y = ln(xt)
    ref = _layer_norm_composed(xt, ln.weight, ln.bias)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    assert isinstance(y.op, ops.LayerNorm)


def test_bad_inputs_raise_typed_errors_naming_the_op(device):
    x = ndl.Tensor(np.ones((2, 4), np.float32), device=device)
    w4 = ndl.Tensor(np.ones(4, np.float32), device=device)
    with pytest.raises(ShapeError, match="layer_norm"):
        ops.layer_norm(x, ndl.Tensor(np.ones(3, np.float32), device=device), w4)
    w64 = ndl.Tensor(np.ones(4), device=device, dtype="float64")
    with pytest.raises(UnsupportedDTypeError, match="layer_norm"):
        ops.LayerNorm(1e-5)(x, w64, w4)  # the fused node itself needs one dtype ...
    assert ops.layer_norm(x, w64, w4).dtype == "float64"  # ... the function promotes
    other = [d for d in (ndl.cpu_numpy(), ndl.cpu()) if d.enabled() and d != device]
    if other:
        with pytest.raises(DeviceMismatchError, match="layer_norm"):
            ops.layer_norm(x, ndl.Tensor(np.ones(4, np.float32), device=other[0]), w4)
    with pytest.raises(ShapeError, match="softmax"):
        ops.softmax(ndl.Tensor(np.array(1.0, np.float32), device=device))


def test_cpu_row_kernels_validate_buffer_sizes():
    dev = ndl.cpu()
    if not dev.enabled():
        pytest.skip("the compiled cpu backend is not built")
    be = dev.require()
    big, small = be.Array(12), be.Array(3)
    with pytest.raises(ShapeError, match="softmax_grad"):
        be.softmax_grad(big, small, be.Array(12), 3, 4)
    with pytest.raises(ShapeError, match="layer_norm"):
        be.layer_norm(big, small, be.Array(4), be.Array(12), 3, 4, 1e-5)
    with pytest.raises(ShapeError, match="layer_norm_grad_params"):
        be.layer_norm_grad_params(big, big, small, 3, 4, 1e-5)


def test_backward_ops_called_directly_match_numpy(device):
    """SoftmaxGrad, LayerNormGradX and LayerNormGradParam on their own."""
    rng = np.random.default_rng(8)
    x, g = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    w = rng.uniform(0.5, 2, 5)
    T = lambda v: ndl.Tensor(v, device=device, dtype="float64")  # noqa: E731
    y = np.exp(x - x.max(1, keepdims=True))
    y /= y.sum(1, keepdims=True)
    got = ndl.Tensor.make_from_op(ops.SoftmaxGrad(), (T(y), T(g))).numpy()
    np.testing.assert_allclose(got, y * (g - (g * y).sum(1, keepdims=True)), rtol=1e-12)
    inv = 1 / np.sqrt(x.var(1, keepdims=True) + EPS)
    xhat = (x - x.mean(1, keepdims=True)) * inv
    gw = g * w
    want = inv * (gw - gw.mean(1, keepdims=True) - xhat * (gw * xhat).mean(1, keepdims=True))
    got = ndl.Tensor.make_from_op(ops.LayerNormGradX(EPS), (T(g), T(x), T(w))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    for which, ref in ((0, (g * xhat).sum(0)), (1, g.sum(0))):
        got = ndl.Tensor.make_from_op(ops.LayerNormGradParam(EPS, which), (T(g), T(x))).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5)])
def test_layer_norm_of_a_float64_batch_through_float32_parameters_promotes(device, shape):
    """The course's tests feed float64 batches (Tensor(np.random.randn(...))) to
    float32 modules: the result promotes as NumPy does (the composition), and
    the fused node is not asked to mix dtypes."""
    x = np.random.default_rng(3).standard_normal(shape) * 5
    ln = ndl.nn.LayerNorm1d(5, device=device)
    t = ndl.Tensor(x, device=device)
    y = ln(t)
    assert y.dtype == "float64"
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-6)
    (y * y).sum().backward()
    assert t.grad.shape == shape and ln.weight.grad.shape == (5,)
    np.testing.assert_allclose(ln.weight.grad.numpy(), (2 * want * want).reshape(-1, 5).sum(0), rtol=1e-5)
