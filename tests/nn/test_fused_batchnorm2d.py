"""ops.batch_norm_train on (N, C, H, W) inputs -- BatchNorm2d's fused path,
which normalises over N, H and W where the input lies (NCHW, or the
channels-last view nn.Conv returns) -- against its unfused composition,
PyTorch, and the composition's second-order gradients, on every backend."""

import numpy as np
import pytest

import needle as ndl
from needle import nn, ops
from needle.errors import DeviceMismatchError, ShapeError, UnsupportedDTypeError

EPS = 1e-5
SHAPE = (3, 4, 5, 6)


def _nchw_to_nhwc_axes():
    return (0, 2, 3, 1)


def _composed(x, w, b, eps=EPS):
    """The course formula as plain Tensor ops over axes (0, 2, 3)."""
    n, c, h, wd = x.shape
    count = n * h * wd
    keep = lambda t: ops.reshape(t, (1, c, 1, 1))  # noqa: E731
    mean = keep(ops.summation(x, (0, 2, 3)) / count)
    centred = x - ops.broadcast_to(mean, x.shape)
    var = keep(ops.summation(centred * centred, (0, 2, 3)) / count)
    scale = ops.broadcast_to(keep(w) / (var + eps) ** 0.5, x.shape)
    return centred * scale + ops.broadcast_to(keep(b), x.shape)


def _as_layout(x, layout, device, dtype):
    """A Tensor holding NCHW values ``x`` in the given memory layout."""
    if layout == "nchw":
        return ndl.Tensor(x, device=device, dtype=dtype, requires_grad=True), None
    if layout == "channels_last":  # the NCHW view of NHWC memory, as nn.Conv returns
        leaf = ndl.Tensor(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), device=device, dtype=dtype,
                          requires_grad=True)
        return ops.transpose(ops.transpose(leaf, (2, 3)), (1, 2)), leaf
    # a strided view neither layout covers: every other column of a wider array
    wide = np.zeros(x.shape[:3] + (2 * x.shape[3],), x.dtype)
    wide[..., ::2] = x
    leaf = ndl.Tensor(wide, device=device, dtype=dtype, requires_grad=True)
    return ndl.Tensor.make_const(leaf.realize_cached_data()[:, :, :, ::2]), None


def _grad_in_nchw(xt, leaf):
    if leaf is None:
        return xt.grad.numpy()
    return leaf.grad.numpy().transpose(0, 3, 1, 2)


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(SHAPE) * 2 + 3).astype(dtype)
    w = rng.uniform(0.5, 2, SHAPE[1]).astype(dtype)
    b = rng.standard_normal(SHAPE[1]).astype(dtype)
    g = rng.standard_normal(SHAPE).astype(dtype)
    return x, w, b, g


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_values_and_gradients_match_the_composition(device, layout):
    x, w, b, g = _data("float64")
    results = []
    for fused in (True, False):
        xt, leaf = _as_layout(x, layout, device, "float64")
        wt = ndl.Tensor(w, device=device, dtype="float64", requires_grad=True)
        bt = ndl.Tensor(b, device=device, dtype="float64", requires_grad=True)
        y = ops.batch_norm_train(xt, wt, bt) if fused else _composed(xt, wt, bt)
        (y * ndl.Tensor(g, device=device, dtype="float64")).sum().backward()
        results.append((y.numpy(), _grad_in_nchw(xt, leaf), wt.grad.numpy(), bt.grad.numpy()))
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)
    ref = w[None, :, None, None] * (x - x.mean((0, 2, 3), keepdims=True)) \
        / np.sqrt(x.var((0, 2, 3), keepdims=True) + EPS) + b[None, :, None, None]
    np.testing.assert_allclose(results[0][0], ref, rtol=1e-10, atol=1e-11)


def test_strided_input_forward_matches_numpy(device):
    x, w, b, _ = _data("float64", seed=3)
    xt, _ = _as_layout(x, "strided", device, "float64")
    assert not xt.realize_cached_data().is_compact()
    op = ops.BatchNormTrain(EPS)
    y = op(xt, ndl.Tensor(w, device=device, dtype="float64"), ndl.Tensor(b, device=device, dtype="float64"))
    ref = w[None, :, None, None] * (x - x.mean((0, 2, 3), keepdims=True)) \
        / np.sqrt(x.var((0, 2, 3), keepdims=True) + EPS) + b[None, :, None, None]
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(op.mean.numpy(), x.mean((0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(op.var.numpy(), x.var((0, 2, 3)), rtol=1e-10)  # biased


def test_channels_last_output_keeps_the_input_layout(device):
    """No permute/compact: the output of a channels-last input is itself a
    channels-last view, so the next conv reads it without a copy."""
    x, w, b, _ = _data("float32")
    xt, _ = _as_layout(x, "channels_last", device, "float32")
    y = ops.batch_norm_train(xt, ndl.Tensor(w, device=device), ndl.Tensor(b, device=device))
    arr = y.realize_cached_data()
    assert arr.permute(_nchw_to_nhwc_axes()).is_compact()


def test_fused_path_runs_where_offered(device):
    x, w, b, _ = _data("float32")
    op = ops.BatchNormTrain(EPS)
    op(ndl.Tensor(x, device=device), ndl.Tensor(w, device=device), ndl.Tensor(b, device=device))
    assert (op._fused is not None) == (device.op_override("batch_norm_stats") is not None)


def test_second_order_gradients_equal_the_compositions(device):
    """d/dx sum((dL/dx)^2) through the fused backward equals the composition's."""
    from needle.autograd import local_vjp
    x, w, b, g = _data("float64", seed=5)
    got = []
    for fused in (True, False):
        xt = ndl.Tensor(x, device=device, dtype="float64", requires_grad=True)
        wt = ndl.Tensor(w, device=device, dtype="float64", requires_grad=True)
        bt = ndl.Tensor(b, device=device, dtype="float64", requires_grad=True)
        gt = ndl.Tensor(g, device=device, dtype="float64")
        y = ops.batch_norm_train(xt, wt, bt) if fused else _composed(xt, wt, bt)
        dx, dw, _ = local_vjp(y, (xt, wt, bt), gt)
        one = ndl.Tensor(np.array(1.0), device=device, dtype="float64")
        ddx, ddw = local_vjp(ops.summation(dx * dx) + ops.summation(dw * dw), (xt, wt), one)
        got.append((dx.numpy(), ddx.numpy(), ddw.numpy()))
    for a, c in zip(*got):
        np.testing.assert_allclose(a, c, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_batchnorm2d_module_matches_torch_over_steps(device, layout):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    bn = nn.BatchNorm2d(SHAPE[1], momentum=0.2, device=device)
    tbn = torch.nn.BatchNorm2d(SHAPE[1], momentum=0.2, eps=EPS)
    w = rng.uniform(0.5, 2, SHAPE[1]).astype(np.float32)
    bn.weight.data = ndl.Tensor(w, device=device)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(w))
    for step in range(3):
        x = (rng.standard_normal(SHAPE) * 2 + 1).astype(np.float32)
        g = rng.standard_normal(SHAPE).astype(np.float32)
        xt, leaf = _as_layout(x, layout, device, "float32")
        y = bn(xt)
        (y * ndl.Tensor(g, device=device)).sum().backward()
        tx = torch.tensor(x, requires_grad=True)
        tbn.zero_grad()
        ty = tbn(tx)
        (ty * torch.tensor(g)).sum().backward()
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(_grad_in_nchw(xt, leaf), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.weight.grad.numpy(), tbn.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(bn.bias.grad.numpy(), tbn.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
        # running stats: the course updates the variance with the *biased* batch variance
        count = SHAPE[0] * SHAPE[2] * SHAPE[3]
        want_var = tbn.running_var.numpy()
        np.testing.assert_allclose(bn.running_mean.numpy(), tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        assert want_var.shape == bn.running_var.numpy().shape and count > 1
    bn.eval()
    tbn.eval()
    x = rng.standard_normal(SHAPE).astype(np.float32)
    ref = (x - bn.running_mean.numpy()[None, :, None, None]) \
        / np.sqrt(bn.running_var.numpy()[None, :, None, None] + EPS) * w[None, :, None, None]
    np.testing.assert_allclose(bn(ndl.Tensor(x, device=device)).numpy(), ref, rtol=1e-4, atol=1e-5)


def test_running_var_uses_the_biased_batch_variance(device):
    x, _, _, _ = _data("float32", seed=9)
    bn = nn.BatchNorm2d(SHAPE[1], momentum=0.5, device=device)
    bn(ndl.Tensor(x, device=device))
    np.testing.assert_allclose(bn.running_var.numpy(), 0.5 + 0.5 * x.var((0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.5 * x.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_typed_errors_naming_the_op(device):
    x, w, b, _ = _data("float32")
    tx, tw, tb = (ndl.Tensor(a, device=device) for a in (x, w, b))
    with pytest.raises(ShapeError, match="batch_norm_train"):
        ops.batch_norm_train(tx, ndl.Tensor(np.ones(3, np.float32), device=device), tb)
    with pytest.raises(ShapeError, match="batch_norm_train"):
        ops.batch_norm_train(ndl.Tensor(np.ones(4, np.float32), device=device), tw, tb)
    with pytest.raises(UnsupportedDTypeError, match="batch_norm_train"):
        ops.batch_norm_train(tx, ndl.Tensor(w, device=device, dtype="float64"), tb)
    other = [d for d in (ndl.cpu_numpy(), ndl.cpu()) if d.enabled() and d != device]
    if other:
        with pytest.raises(DeviceMismatchError, match="batch_norm_train"):
            ops.batch_norm_train(tx, ndl.Tensor(w, device=other[0]), tb)
    with pytest.raises(ShapeError, match="BatchNorm2d"):
        nn.BatchNorm2d(5, device=device)(tx)


def test_cpu_kernels_validate_buffer_sizes():
    be_dev = ndl.cpu()
    if not be_dev.enabled():
        pytest.skip("the compiled cpu backend is not built")
    be = be_dev.require()
    x, small, st = be.Array(24), be.Array(3), be.Array(12)
    with pytest.raises(ShapeError, match="batch_norm_stats"):
        be.batch_norm_stats(x, small, small, 2, 3, 4, 1e-5)           # out needs 4 * 3
    with pytest.raises(ShapeError, match="batch_norm_stats"):
        be.batch_norm_stats(small, small, st, 2, 3, 4, 1e-5)          # x needs 24
    with pytest.raises(ShapeError, match="batch_norm_stats"):
        be.batch_norm_stats(x, be.Array(2), st, 2, 3, 4, 1e-5)        # w needs 3
    with pytest.raises(ShapeError, match="batch_norm_apply"):
        be.batch_norm_apply(x, small, small, be.Array(24), 2, 3, 4)   # st needs 12
    with pytest.raises(ShapeError, match="batch_norm_grad_stats"):
        be.batch_norm_grad_stats(x, x, st, be.Array(6), -1, 3, 4)
    with pytest.raises(ShapeError, match="batch_norm_grad_input"):
        be.batch_norm_grad_input(x, x, st, small, be.Array(24), 2, 3, 4)  # gs needs 6


def test_mixed_dtype_input_takes_the_composed_path_and_promotes(device):
    """A float64 batch through float32 parameters promotes as NumPy does (the
    composed path), as before the fused node existed; DDP tests feed this."""
    bn = ndl.nn.BatchNorm1d(3, device=device)
    x = np.random.default_rng(0).standard_normal((5, 3))
    y = bn(ndl.Tensor(x, device=device))
    assert y.dtype == "float64"
    np.testing.assert_allclose(y.numpy(), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * x.mean(0), rtol=1e-5, atol=1e-7)
