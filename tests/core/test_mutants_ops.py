"""Op behaviour that surviving mutants showed no test pinned (scripts/mutation.sh)."""

import re

import numpy as np
import pytest

import needle as ndl
from needle.errors import ShapeError


def test_logsumexp_over_an_empty_axis_is_refused_on_every_backend(device):
    # the fused kernel (cpu) must not be reached with an empty row: it would
    # return -inf where the composition raises, and the backends would disagree
    x = ndl.Tensor(np.zeros((3, 0), np.float32), device=device)
    with pytest.raises(ShapeError, match="zero-size reduction"):
        ndl.ops.logsumexp(x, axes=(1,))
    # reducing the non-empty axis instead gives an empty result, no error
    assert ndl.ops.logsumexp(x, axes=(0,)).shape == (0,)


def test_logsoftmax_op_honours_its_axes(device):
    # the course's logsoftmax is over the last axis; the op class takes any axes
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3))
    t = ndl.Tensor(x, device=device, dtype="float64")
    out = ndl.ops.LogSoftmax(axes=(0,))(t).numpy()
    m = x.max(axis=0, keepdims=True)
    want = x - (m + np.log(np.exp(x - m).sum(axis=0, keepdims=True)))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ndl.ops.logsoftmax(t).numpy(),
                               x - np.log(np.exp(x).sum(axis=1, keepdims=True)), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- #
# core/ops/ops_mathematic.py survivors (bash scripts/mutation.sh core/ops/ops_mathematic.py)
# --------------------------------------------------------------------------- #
def _t(x, device):
    return ndl.Tensor(np.asarray(x, dtype=np.float64), device=device, dtype="float64")


def test_array_operand_is_a_constant_that_asks_no_adjoint(device):
    x = _t([[1.0, 2.0]], device)
    out = x + np.array([[3.0, 4.0]])
    assert out.inputs[1].requires_grad is False
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 1.0]])


def test_unbroadcast_sums_only_the_stretched_axes(device):
    # (1, 1) + (5, 3, 1): the adjoint of the (1, 1) operand sums the new
    # leading axis and the stretched axis 1, not the size-1 trailing one
    a = _t(np.full((1, 1), 2.0), device)
    b = _t(np.arange(15.0).reshape(5, 3, 1), device)
    ((a + b) * b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [[np.arange(15.0).sum()]])
    np.testing.assert_allclose(b.grad.numpy(), 2 * np.arange(15.0).reshape(5, 3, 1) + 2.0)


@pytest.mark.parametrize("s,want", [(1, [1.0, 1.0, 1.0]), (0, [0.0, 0.0, 0.0]), (2, [0.0, 2.0, 4.0])])
def test_power_scalar_gradient_at_small_exponents(device, s, want):
    # x ** 1 has gradient 1 and x ** 0 gradient 0 -- also at x = 0, where the
    # general s * x ** (s - 1) would give 0 * inf
    x = _t([0.0, 1.0, 2.0], device)
    (x ** s).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), want)


def test_transpose_axes_bounds(device):
    x = _t(np.arange(6.0).reshape(2, 3), device)
    np.testing.assert_array_equal(ndl.ops.transpose(x, (-2, -1)).numpy(), np.arange(6.0).reshape(2, 3).T)
    np.testing.assert_array_equal(ndl.ops.transpose(x, (1, -2)).numpy(), np.arange(6.0).reshape(2, 3).T)
    for bad in ((2, 0), (0, 2), (-3, 0), (0, -3)):
        with pytest.raises(ShapeError, match="out of range"):
            ndl.ops.transpose(x, bad)


def test_reshape_and_broadcast_to_take_lists(device):
    # the course's attention helper passes lists; the ops keep tuples
    x = _t(np.arange(6.0), device)
    r = ndl.ops.reshape(x, [2, 3])
    assert r.shape == (2, 3) and type(ndl.ops.Reshape([2, 3]).shape) is tuple
    b = ndl.ops.broadcast_to(_t([[1.0, 2.0, 3.0]], device), [2, 3])
    assert b.shape == (2, 3) and type(ndl.ops.BroadcastTo([2, 3]).shape) is tuple
    (r * b).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 3.0, 1.0, 2.0, 3.0])


def test_max_keeps_dims_when_asked_and_names_itself_in_errors(device):
    x = _t([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], device)
    m = ndl.ops.max(x, axes=1, keepdims=True)
    assert m.shape == (2, 1)
    np.testing.assert_array_equal(m.numpy(), [[5.0], [7.0]])
    with pytest.raises(ShapeError, match="max"):
        ndl.ops.max(x, axes=4)
    with pytest.raises(ShapeError, match="summation"):
        ndl.ops.summation(x, axes=4)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4,)), ((4,), (2, 4, 3))])
def test_matmul_with_one_vector_operand_gradients(device, sa, sb):
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    ta, tb = _t(a, device), _t(b, device)
    out = ndl.ops.matmul(ta, tb)
    np.testing.assert_allclose(out.numpy(), np.matmul(a, b), rtol=1e-12)
    g = rng.standard_normal(out.shape)
    out.backward(_t(g, device))
    # reference adjoints through NumPy's matmul with the vector as a matrix
    A = a if a.ndim > 1 else a[None, :]
    B = b if b.ndim > 1 else b[:, None]
    G = g.reshape(np.matmul(A, B).shape)
    ga = np.matmul(G, np.swapaxes(B, -1, -2))
    gb = np.matmul(np.swapaxes(A, -1, -2), G)
    while ga.ndim > A.ndim:
        ga = ga.sum(0)
    while gb.ndim > B.ndim:
        gb = gb.sum(0)
    np.testing.assert_allclose(ta.grad.numpy(), ga.reshape(a.shape), rtol=1e-10)
    np.testing.assert_allclose(tb.grad.numpy(), gb.reshape(b.shape), rtol=1e-10)


def test_dilate_axes_int_negative_and_out_of_range(device):
    x = _t([[1.0, 2.0], [3.0, 4.0]], device)
    want0 = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_array_equal(ndl.ops.dilate(x, 0, 1).numpy(), want0)         # an int axis
    np.testing.assert_array_equal(ndl.ops.dilate(x, (-2,), 1).numpy(), want0)      # -ndim is axis 0
    np.testing.assert_array_equal(ndl.ops.dilate(x, (5, 0), 1).numpy(), want0)     # 5 ignored, 0 kept
    np.testing.assert_array_equal(ndl.ops.dilate(x, (-3,), 1).numpy(), x.numpy())  # out of range: ignored
    np.testing.assert_array_equal(ndl.ops.undilate(ndl.ops.dilate(x, (5, 0), 1), (5, 0), 1).numpy(),
                                  x.numpy())


# --------------------------------------------------------------------------- #
# core/ops/ops_pooling.py survivors
# --------------------------------------------------------------------------- #
def test_pool_sizes_square_tuples_and_bad_values(device):
    x = _t(np.arange(32.0).reshape(1, 4, 4, 2), device)
    want = ndl.ops.max_pool2d(x, 2).numpy()
    np.testing.assert_array_equal(ndl.ops.max_pool2d(x, (2, 2)).numpy(), want)
    np.testing.assert_array_equal(ndl.ops.max_pool2d(x, [2, 2], stride=(2, 2)).numpy(), want)
    np.testing.assert_array_equal(ndl.ops.max_pool2d(x, (2,)).numpy(), want)   # a 1-tuple
    for bad in ((2, 3), (), 0, -1, 2.5, "2"):
        with pytest.raises(ShapeError, match="max_pool2d"):
            ndl.ops.max_pool2d(x, bad)
    with pytest.raises(ShapeError, match="avg_pool2d: stride"):
        ndl.ops.avg_pool2d(x, 2, stride=0)


def test_pool_window_as_large_as_the_input_and_larger(device):
    x = _t(np.arange(8.0).reshape(1, 2, 2, 2), device)
    np.testing.assert_array_equal(ndl.ops.max_pool2d(x, 2).numpy(), [[[[6.0, 7.0]]]])   # H == W == k
    wide = _t(np.zeros((1, 1, 4, 1)), device)                                            # H < k <= W
    with pytest.raises(ShapeError, match="exceeds"):
        ndl.ops.avg_pool2d(wide, 2)
    tall = _t(np.zeros((1, 4, 1, 1)), device)                                            # W < k <= H
    with pytest.raises(ShapeError, match="exceeds"):
        ndl.ops.avg_pool2d(tall, 2)


def test_im2col_windows_and_their_adjoint(device):
    a = np.arange(2 * 3 * 3 * 2, dtype=np.float64).reshape(2, 3, 3, 2)
    x = _t(a, device)
    cols = ndl.ops.im2col(x, 2, 1)
    want = np.lib.stride_tricks.sliding_window_view(a, (2, 2), axis=(1, 2))   # (N, Ho, Wo, C, k, k)
    np.testing.assert_array_equal(cols.numpy(), want.transpose(0, 1, 2, 4, 5, 3))
    cols.sum().backward()
    # each input pixel receives one 1 per window that covers it
    cover = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64)
    np.testing.assert_array_equal(x.grad.numpy(), np.broadcast_to(cover[None, :, :, None], a.shape))


def test_max_pool_ties_share_the_adjoint(device):
    x = _t(np.array([3.0, 3.0, 1.0, 3.0]).reshape(1, 2, 2, 1), device)
    ndl.ops.max_pool2d(x, 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy().ravel(), [1 / 3, 1 / 3, 0.0, 1 / 3])


def test_pool_modules_refuse_non_square_windows():
    # (2, 2) is 2, as the course's kernel_size tuples; (2, 3) was cut to 2 silently
    assert ndl.nn.MaxPool2d((2, 2)).kernel_size == 2
    assert ndl.nn.AvgPool2d(2, stride=[1, 1]).stride == 1
    for bad in ((2, 3), ()):
        with pytest.raises(ShapeError, match="MaxPool2d: kernel_size"):
            ndl.nn.MaxPool2d(bad)
    with pytest.raises(ShapeError, match="AvgPool2d: stride"):
        ndl.nn.AvgPool2d(2, stride=(1, 2))


# --------------------------------------------------------------------------- #
# core/ops/ops_rows.py survivors: the fused softmax / layer norm
# --------------------------------------------------------------------------- #
@pytest.fixture
def overrides_taken(monkeypatch):
    """The op names whose override returned a result (a fused kernel ran),
    one entry per call, in order; the calls go through to the real one."""
    from needle.backend_ndarray import NDArray
    taken, real = [], NDArray.call_op_override

    def spy(name, inputs, out_shape, *args):
        out = real(name, inputs, out_shape, *args)
        if out is not None:
            taken.append(name)
        return out

    monkeypatch.setattr(NDArray, "call_op_override", staticmethod(spy))
    return taken


def _fused_on(device, names):
    """The names ``device`` offers a fused kernel for; the cpu backend must offer all."""
    have = [n for n in names if device.op_override(n) is not None]
    if device.name == "cpu":
        assert have == list(names)
    return have


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_softmax_runs_its_fused_kernels_forward_and_backward(device, overrides_taken):
    rng = np.random.default_rng(11)
    x, g = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    t = _t(x, device)
    y = ndl.ops.softmax(t)
    (y * _t(g, device)).sum().backward()
    assert overrides_taken == _fused_on(device, ["softmax", "softmax_grad"])
    # every backend, fused or composed, gives the same values
    s = _np_softmax(x)
    np.testing.assert_allclose(y.numpy(), s, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t.grad.numpy(), s * (g - (g * s).sum(-1, keepdims=True)), rtol=1e-10, atol=1e-14)


def _np_layer_norm(x, w, b, eps=1e-5):
    xhat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return xhat, xhat * w + b


def test_layer_norm_runs_its_fused_kernels_once_each(device, overrides_taken):
    # one backward: the weight's and the bias's adjoints share one
    # layer_norm_grad_params call (the pair), the input's is one more call
    rng = np.random.default_rng(12)
    x, g = rng.standard_normal((3, 4, 6)) * 2 + 1, rng.standard_normal((3, 4, 6))
    w, b = rng.uniform(0.5, 2, 6), rng.standard_normal(6)
    xt, wt, bt = _t(x, device), _t(w, device), _t(b, device)
    y = ndl.ops.layer_norm(xt, wt, bt)
    (y * _t(g, device)).sum().backward()
    names = ["layer_norm", "layer_norm_grad_input", "layer_norm_grad_params"]
    assert sorted(overrides_taken) == _fused_on(device, names)
    xhat, want = _np_layer_norm(x, w, b)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-12)
    inv = 1 / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    gw = g * w
    dx = inv * (gw - gw.mean(-1, keepdims=True) - xhat * (gw * xhat).mean(-1, keepdims=True))
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(wt.grad.numpy(), (g * xhat).sum((0, 1)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bt.grad.numpy(), g.sum((0, 1)), rtol=1e-10, atol=1e-12)


def test_fused_rows_of_one_element(device):
    # a row of one element: softmax is 1 and its adjoint 0; layer norm gives
    # the bias (xhat = 0), the input's and the weight's adjoints are 0 and
    # the bias's is the upstream gradient
    for shape in ((1,), (1, 1)):
        t = _t(np.full(shape, 2.5), device)
        y = ndl.ops.softmax(t)
        np.testing.assert_array_equal(y.numpy(), np.ones(shape))
        (y * _t(np.full(shape, 3.0), device)).sum().backward()
        np.testing.assert_array_equal(t.grad.numpy(), np.zeros(shape))

        x, w, b = _t(np.full(shape, 3.0), device), _t([2.0], device), _t([0.5], device)
        y = ndl.ops.layer_norm(x, w, b)
        np.testing.assert_array_equal(y.numpy(), np.full(shape, 0.5))
        (y * _t(np.full(shape, 1.5), device)).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.zeros(shape))
        np.testing.assert_array_equal(w.grad.numpy(), [0.0])
        np.testing.assert_array_equal(b.grad.numpy(), [1.5])


def test_fused_rows_of_empty_inputs(device):
    # no rows (0, 5) or empty rows (3, 0): empty results, no error; the
    # parameters' adjoints are zeros of the parameters' shape
    for shape in ((0, 5), (3, 0)):
        t = _t(np.zeros(shape), device)
        y = ndl.ops.softmax(t)
        assert y.shape == shape
        y.sum().backward()
        assert t.grad.shape == shape
    x = _t(np.zeros((0, 5)), device)
    w, b = _t(np.full(5, 2.0), device), _t(np.ones(5), device)
    y = ndl.ops.layer_norm(x, w, b)
    assert y.shape == (0, 5)
    y.sum().backward()
    assert x.grad.shape == (0, 5)
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros(5))
    np.testing.assert_array_equal(b.grad.numpy(), np.zeros(5))


def test_softmax_of_large_logits_does_not_overflow(device):
    # the row maximum is subtracted: exp never sees more than 0
    x = np.array([[800.0, 790.0, 795.0], [-900.0, -910.0, -900.0]])
    for dtype in ("float64", "float32"):
        y = ndl.ops.softmax(ndl.Tensor(x, device=device, dtype=dtype)).numpy()
        assert np.isfinite(y).all()
        np.testing.assert_allclose(y, _np_softmax(x), rtol=1e-6 if dtype == "float32" else 1e-12, atol=0)


def test_layer_norm_of_a_vector_and_the_default_eps(device):
    # a 1-D input is one row; LayerNorm() defaults to eps = 1e-5, which
    # matters for a row whose variance is of that order
    x = np.array([0.0, 2e-3, 5e-3, 9e-3, 1e-2])
    w, b = np.array([1.0, 2.0, 0.5, 1.5, 1.0]), np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    want = _np_layer_norm(x, w, b)[1]
    y = ndl.ops.layer_norm(_t(x, device), _t(w, device), _t(b, device))
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-12)
    y = ndl.ops.LayerNorm()(_t(x[None], device), _t(w, device), _t(b, device))
    np.testing.assert_allclose(y.numpy(), want[None], rtol=1e-10, atol=1e-12)
    assert np.abs(want - _np_layer_norm(x, w, b, eps=2e-5)[1]).max() > 1e-2


@pytest.mark.parametrize("pshape", [(1, 5), (5, 1)])
def test_layer_norm_parameters_of_another_shape_get_adjoints_of_their_shape(device, pshape):
    # weight and bias need only hold the last axis' 5 elements
    rng = np.random.default_rng(13)
    x, g = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    w, b = rng.uniform(0.5, 2, 5), rng.standard_normal(5)
    xt, wt, bt = _t(x, device), _t(w.reshape(pshape), device), _t(b.reshape(pshape), device)
    y = ndl.ops.layer_norm(xt, wt, bt)
    xhat, want = _np_layer_norm(x, w, b)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-12)
    (y * _t(g, device)).sum().backward()
    assert wt.grad.shape == pshape and bt.grad.shape == pshape
    np.testing.assert_allclose(wt.grad.numpy(), (g * xhat).sum(0).reshape(pshape), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bt.grad.numpy(), g.sum(0).reshape(pshape), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pshape", [(5,), (5, 1)])
def test_layer_norm_second_order_matches_torch(device, pshape):
    # the double backward through a 3-D input, with an upstream for the
    # input's adjoint whose rows do not sum to 0, differentiated also with
    # respect to the first backward's upstream g
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    x, g, u = (rng.standard_normal((2, 3, 5)) for _ in range(3))
    x = x * 2 + 1
    w, b, v, z = rng.uniform(0.5, 2, 5), rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(5)
    T = lambda a: ndl.Tensor(a, device=device, dtype="float64", requires_grad=True)  # noqa: E731
    xt, wt, bt, gt = T(x), T(w.reshape(pshape)), T(b.reshape(pshape)), T(g)
    y = ndl.ops.layer_norm(xt, wt, bt)
    dx, dw, db = ndl.autograd.local_vjp(y, (xt, wt, bt), gt)
    loss = (ndl.ops.summation(dx * T(u)) + ndl.ops.summation(dw * T(v.reshape(pshape)))
            + ndl.ops.summation(db * T(z.reshape(pshape))))
    one = ndl.Tensor(np.array(1.0), device=device, dtype="float64")
    got = ndl.autograd.local_vjp(loss, (xt, wt, gt), one)

    tx, tw, tb, tg = (torch.tensor(a, requires_grad=True) for a in (x, w.reshape(pshape), b.reshape(pshape), g))
    ty = torch.nn.functional.layer_norm(tx, (5,), tw.reshape(5), tb.reshape(5), 1e-5)
    tdx, tdw, tdb = torch.autograd.grad(ty, (tx, tw, tb), tg, create_graph=True)
    tloss = ((tdx * torch.tensor(u)).sum() + (tdw * torch.tensor(v.reshape(pshape))).sum()
             + (tdb * torch.tensor(z.reshape(pshape))).sum())
    want = torch.autograd.grad(tloss, (tx, tw, tg))
    np.testing.assert_allclose(dx.numpy(), tdx.detach().numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(dw.numpy(), tdw.detach().numpy(), rtol=1e-9, atol=1e-11)
    for a, c in zip(got, want):
        assert a.shape == tuple(c.shape)
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-9, atol=1e-11)


def test_layer_norm_mixed_dtypes_promote_with_eps_and_bias(device):
    # a float64 input through float32 weight and bias takes the composition:
    # eps under the root (rows of variance near eps) and the bias added
    x = np.array([[0.0, 2e-3, 5e-3, 9e-3], [1.0, -1.0, 3.0, 0.5]])
    w = np.array([1.0, 2.0, 0.5, 1.5], np.float32)
    b = np.array([0.25, -0.5, 0.75, 1.0], np.float32)
    y = ndl.ops.layer_norm(ndl.Tensor(x, device=device, dtype="float64"),
                           ndl.Tensor(w, device=device), ndl.Tensor(b, device=device))
    assert y.dtype == "float64"
    want = _np_layer_norm(x, w.astype(np.float64), b.astype(np.float64))[1]
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- #
# core/ops/ops_lstm.py survivors: the fused LSTM gates
# --------------------------------------------------------------------------- #
def _np_sig(a):
    return 1 / (1 + np.exp(-a))


def test_lstm_gates_run_their_fused_kernels_once_each(device, overrides_taken):
    # forward one lstm_gates call; backward one lstm_gates_grad call shared by
    # the adjoints of z and c
    rng = np.random.default_rng(21)
    bsz, hid = 3, 4
    z, c, g = rng.standard_normal((bsz, 4 * hid)) * 2, rng.standard_normal((bsz, hid)), \
        rng.standard_normal((bsz, 2, hid))
    zt, ct = _t(z, device), _t(c, device)
    y = ndl.ops.lstm_gates(zt, ct)
    (y * _t(g, device)).sum().backward()
    assert sorted(overrides_taken) == _fused_on(device, ["lstm_gates", "lstm_gates_grad"])
    i, f, gg, o = (z[:, k * hid:(k + 1) * hid] for k in range(4))
    i, f, gg, o = _np_sig(i), _np_sig(f), np.tanh(gg), _np_sig(o)
    cn = f * c + i * gg
    th = np.tanh(cn)
    np.testing.assert_allclose(y.numpy(), np.stack([o * th, cn], 1), rtol=1e-12, atol=1e-14)
    dcn = g[:, 1] + g[:, 0] * o * (1 - th * th)
    dz = np.concatenate([dcn * gg * i * (1 - i), dcn * c * f * (1 - f), dcn * i * (1 - gg * gg),
                         g[:, 0] * th * o * (1 - o)], axis=1)
    np.testing.assert_allclose(zt.grad.numpy(), dz, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ct.grad.numpy(), dcn * f, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("zshape,cshape", [((3, 8, 1), (3, 2)), ((3, 8), (3, 2, 1)), ((3, 8), (2,))])
def test_lstm_gates_refuse_inputs_not_two_dimensional(device, zshape, cshape):
    z, c = _t(np.zeros(zshape), device), _t(np.zeros(cshape), device)
    with pytest.raises(ShapeError, match=r"lstm_gates: expected z \(B, 4H\) and c \(B, H\)"):
        ndl.ops.lstm_gates(z, c)


def test_lstm_gates_grad_pair_shares_one_kernel_in_either_order(device, overrides_taken):
    # the two adjoint nodes of one backward share one call whichever runs first
    rng = np.random.default_rng(22)
    z, c, g = rng.standard_normal((2, 12)), rng.standard_normal((2, 3)), rng.standard_normal((2, 2, 3))
    zt, ct, gt = _t(z, device), _t(c, device), _t(g, device)
    shared = {}
    dc = ndl.Tensor.make_from_op(ndl.ops.LSTMGatesGrad(1, shared), (zt, ct, gt))
    dz = ndl.Tensor.make_from_op(ndl.ops.LSTMGatesGrad(0, shared), (zt, ct, gt))
    assert overrides_taken == _fused_on(device, ["lstm_gates_grad"])
    # against the adjoints of each made alone
    for which, got in ((0, dz), (1, dc)):
        want = ndl.Tensor.make_from_op(ndl.ops.LSTMGatesGrad(which), (zt, ct, gt)).numpy()
        np.testing.assert_array_equal(got.numpy(), want)
    i, f, gg = _np_sig(z[:, :3]), _np_sig(z[:, 3:6]), np.tanh(z[:, 6:9])
    th, o = np.tanh(f * c + i * gg), _np_sig(z[:, 9:])
    np.testing.assert_allclose(dc.numpy(), (g[:, 1] + g[:, 0] * o * (1 - th * th)) * f, rtol=1e-10, atol=1e-12)


def _np_lstm_layer_adjoints(p, w, h0, c0, g):
    """BPTT in NumPy for sum(lstm_layer(p, w, h0, c0) * g): (dp, dw, dh0, dc0)."""
    hid = h0.shape[1]
    hs, cs, acts = [h0], [c0], []
    for t in range(p.shape[0]):
        z = p[t] + hs[-1] @ w
        i, f, gg, o = _np_sig(z[:, :hid]), _np_sig(z[:, hid:2 * hid]), np.tanh(z[:, 2 * hid:3 * hid]), \
            _np_sig(z[:, 3 * hid:])
        cs.append(f * cs[-1] + i * gg)
        hs.append(o * np.tanh(cs[-1]))
        acts.append((i, f, gg, o))
    dp, dw = np.zeros_like(p), np.zeros_like(w)
    dh, dc = np.zeros_like(h0), g[-1]
    for t in range(p.shape[0] - 1, -1, -1):
        i, f, gg, o = acts[t]
        dh = dh + g[t]
        th = np.tanh(cs[t + 1])
        dcn = dc + dh * o * (1 - th * th)
        dp[t] = np.concatenate([dcn * gg * i * (1 - i), dcn * cs[t] * f * (1 - f), dcn * i * (1 - gg * gg),
                                dh * th * o * (1 - o)], axis=1)
        dw += hs[t].T @ dp[t]
        dh, dc = dp[t] @ w.T, dcn * f
    return dp, dw, dh, dc


def test_lstm_layer_runs_one_gate_kernel_per_step_each_way(device, overrides_taken):
    # forward: one lstm_gates kernel a step; backward: the z and c adjoints of
    # a step share one lstm_gates_grad kernel (its pair), so T calls, not 2T
    rng = np.random.default_rng(23)
    steps, bsz, hid = 3, 2, 4
    arrays = (rng.standard_normal((steps, bsz, 4 * hid)), rng.standard_normal((hid, 4 * hid)) * 0.5,
              rng.standard_normal((bsz, hid)), rng.standard_normal((bsz, hid)))
    g = rng.standard_normal((steps + 1, bsz, hid))
    leaves = [_t(a, device) for a in arrays]
    (ndl.ops.lstm_layer(*leaves) * _t(g, device)).sum().backward()
    fused = _fused_on(device, ["lstm_gates", "lstm_gates_grad"])
    assert overrides_taken == [n for n in fused if n == "lstm_gates"] * steps + \
        [n for n in fused if n == "lstm_gates_grad"] * steps
    for got, want in zip(leaves, _np_lstm_layer_adjoints(*arrays, g)):
        np.testing.assert_allclose(got.grad.numpy(), want, rtol=1e-10, atol=1e-12)


def test_lstm_layer_shape_error_names_the_expected_integer_shapes(device):
    # the message states the shapes p implies, as integers: w_hh (H, 4H), h0 and c0 (B, H)
    p, w, h = _t(np.zeros((3, 2, 16)), device), _t(np.zeros((4, 12)), device), _t(np.zeros((2, 4)), device)
    with pytest.raises(ShapeError) as info:
        ndl.ops.lstm_layer(p, w, h, h)
    assert str(info.value) == ("lstm_layer: for p (3, 2, 16) expected w_hh (4, 16) and h0, c0 (2, 4), "
                               "got (4, 12), (2, 4), (2, 4)")


# --------------------------------------------------------------------------- #
# core/ops/ops_tuple.py survivors
# --------------------------------------------------------------------------- #
def test_tuple_get_item_bounds_and_negative_indices(device):
    from needle.errors import ArgumentTypeError, OutOfBoundsError
    x = _t(np.arange(6.0).reshape(3, 2), device)
    parts = ndl.ops.split(x, 0)  # not a make_tuple: items are TupleGetItem nodes
    for k in (-3, -1, 0, 2):
        np.testing.assert_array_equal(ndl.ops.tuple_get_item(parts, k).numpy(), np.arange(6.0).reshape(3, 2)[k])
    for k in (3, -4):
        with pytest.raises(OutOfBoundsError, match=f"tuple_get_item: index {k} out of range for a tuple of 3"):
            ndl.ops.tuple_get_item(parts, k)
    with pytest.raises(ArgumentTypeError, match="tuple_get_item: expected a TensorTuple, got Tensor"):
        ndl.ops.tuple_get_item(x, 0)
    # a negative index sends its adjoint to the slot it names, zeros elsewhere
    (ndl.ops.tuple_get_item(parts, -1) * 2.0 + ndl.ops.tuple_get_item(parts, -3) * 5.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[5.0, 5.0], [0.0, 0.0], [2.0, 2.0]])
    # a make_tuple folds: item -1 is the last input itself
    a, b = _t([1.0], device), _t([2.0, 3.0], device)
    assert ndl.ops.tuple_get_item(ndl.ops.make_tuple(a, b), -1) is b


def test_tuple_adjoints_of_whole_and_single_slots_add_up(device):
    # stack(split(x)) sends back a whole tuple adjoint (a Split), the items
    # one-hot ones; slot by slot they add, slots nobody read get zeros
    rng = np.random.default_rng(31)
    a, c = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    x = _t(a, device)
    parts = ndl.ops.split(x, 0)
    loss = (ndl.ops.stack(parts, 0) * _t(c, device)).sum() + (parts[1] * 5.0).sum() + (parts[1] * parts[1]).sum()
    loss.backward()
    want = c.copy()
    want[1] += 5.0 + 2 * a[1]
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12, atol=1e-14)
    y = _t(a, device)
    parts = ndl.ops.split(y, 0)
    (parts[0] * 2.0 + parts[0] * 3.0).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [[5.0, 5.0], [0.0, 0.0], [0.0, 0.0]])


def test_stack_checks_and_promotes(device):
    a = ndl.Tensor(np.array([1.0, 2.0], np.float32), device=device)
    b = _t([3.0, 4.0], device)
    s = ndl.ops.stack([a, b], 1)
    assert s.dtype == "float64"
    np.testing.assert_array_equal(s.numpy(), [[1.0, 3.0], [2.0, 4.0]])
    with pytest.raises(ShapeError, match="stack: need at least one tensor"):
        ndl.ops.stack([], 0)
    with pytest.raises(ShapeError, match="stack: axis must be an integer, got 1.0"):
        ndl.ops.stack([b, b], 1.0)
    with pytest.raises(ShapeError, match="split: axis must be an integer"):
        ndl.ops.split(ndl.ops.stack([b, b], 0), "0")
    for axis in (2, -3):
        with pytest.raises(ShapeError):
            ndl.ops.stack([b, b], axis)
    np.testing.assert_array_equal(ndl.ops.stack([b, b], -2).numpy(), [[3.0, 4.0], [3.0, 4.0]])


# --------------------------------------------------------------------------- #
# core/ops/ops_loss.py: the fused softmax cross-entropy
# --------------------------------------------------------------------------- #
def test_softmax_cross_entropy_runs_its_fused_kernels(device, overrides_taken):
    rng = np.random.default_rng(41)
    z, y, g = rng.standard_normal((4, 5)) * 3, np.array([0.0, 4.0, 2.0, 4.0]), rng.standard_normal(4)
    zt = _t(z, device)
    loss = ndl.ops.softmax_cross_entropy(zt, _t(y, device))
    (loss * _t(g, device)).sum().backward()
    assert overrides_taken == _fused_on(device, ["softmax_xent", "softmax_xent_grad"])
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    rows = np.arange(4)
    np.testing.assert_allclose(loss.numpy(), lse - z[rows, y.astype(int)], rtol=1e-12, atol=1e-13)
    onehot = np.zeros((4, 5))
    onehot[rows, y.astype(int)] = 1
    np.testing.assert_allclose(zt.grad.numpy(), (np.exp(z - lse[:, None]) - onehot) * g[:, None],
                               rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------------- #
# core/ops/ops_norm.py: the fused batch norm beyond 2-D inputs
# --------------------------------------------------------------------------- #
def _np_batch_norm(x, w, b, g, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    keep = (1, -1) + (1,) * (x.ndim - 2)
    inv = 1 / np.sqrt(x.var(axes, keepdims=True) + eps)
    xhat = (x - x.mean(axes, keepdims=True)) * inv
    y = xhat * w.reshape(keep) + b.reshape(keep)
    dx = w.reshape(keep) * inv * (g - g.mean(axes, keepdims=True) - xhat * (g * xhat).mean(axes, keepdims=True))
    return y, dx, (g * xhat).sum(axes), g.sum(axes)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_batch_norm_of_images_runs_its_fused_kernels(device, overrides_taken, layout):
    # an NCHW input, compact or an NCHW view of NHWC memory (what nn.Conv
    # returns): the same values; on cpu the four kernels run once each (the
    # weight's and the bias's adjoints reuse the input adjoint's statistics)
    rng = np.random.default_rng(51)
    x, g = rng.standard_normal((2, 3, 4, 5)) * 2 + 1, rng.standard_normal((2, 3, 4, 5))
    w, b = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    if layout == "nchw":
        xt = _t(x, device)
        leaf = xt
    else:
        leaf = _t(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), device)
        xt = ndl.ops.permute(leaf, (0, 3, 1, 2))
    wt, bt = _t(w, device), _t(b, device)
    op = ndl.ops.BatchNormTrain()
    y = op(xt, wt, bt)
    (y * _t(g, device)).sum().backward()
    names = ["batch_norm_apply", "batch_norm_grad_input", "batch_norm_grad_stats", "batch_norm_stats"]
    assert sorted(overrides_taken) == _fused_on(device, names)
    want_y, want_dx, want_dw, want_db = _np_batch_norm(x, w, b, g)
    assert y.shape == x.shape
    np.testing.assert_allclose(y.numpy(), want_y, rtol=1e-10, atol=1e-12)
    dx = leaf.grad.numpy() if layout == "nchw" else leaf.grad.numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(wt.grad.numpy(), want_dw, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bt.grad.numpy(), want_db, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.mean.numpy(), x.mean((0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(op.var.numpy(), x.var((0, 2, 3)), rtol=1e-10)


def test_batch_norm_parameter_adjoints_on_their_own_and_of_another_shape(device):
    # the weight's and bias's adjoint ops computed without the input's first
    # (no statistics left to reuse), for a 3-D input and (1, C) parameters
    rng = np.random.default_rng(52)
    x, g = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))
    w, b = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    xt, wt, bt, gt = _t(x, device), _t(w.reshape(1, 3), device), _t(b.reshape(1, 3), device), _t(g, device)
    op = ndl.ops.BatchNormTrain()
    y = op(xt, wt, bt)
    want_y, want_dx, want_dw, want_db = _np_batch_norm(x, w, b, g)
    np.testing.assert_allclose(y.numpy(), want_y, rtol=1e-10, atol=1e-12)
    for which, want in ((1, want_dw), (0, want_db)):
        got = ndl.Tensor.make_from_op(ndl.ops.BatchNormGradW(op, which), (gt, xt))
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    got = ndl.Tensor.make_from_op(ndl.ops.BatchNormGradX(op), (gt, xt, wt))
    np.testing.assert_allclose(got.numpy(), want_dx, rtol=1e-9, atol=1e-11)
    (y * gt).sum().backward()
    assert wt.grad.shape == (1, 3) and bt.grad.shape == (1, 3)
    np.testing.assert_allclose(wt.grad.numpy(), want_dw.reshape(1, 3), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bt.grad.numpy(), want_db.reshape(1, 3), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), want_dx, rtol=1e-9, atol=1e-11)


def test_batch_norm_refuses_bad_inputs(device):
    from needle.errors import DeviceMismatchError, UnsupportedDTypeError
    w, b = _t(np.ones(3), device), _t(np.zeros(3), device)
    with pytest.raises(ShapeError, match=r"batch_norm_train: expected an input of 2 or more dimensions .* \(3,\)"):
        ndl.ops.batch_norm_train(_t(np.ones(3), device), w, b)
    x = _t(np.ones((2, 3)), device)
    with pytest.raises(UnsupportedDTypeError, match="batch_norm_train: the weight is float32"):
        ndl.ops.batch_norm_train(x, ndl.Tensor(np.ones(3, np.float32), device=device), b)
    with pytest.raises(UnsupportedDTypeError, match="batch_norm_train: the bias is float32"):
        ndl.ops.batch_norm_train(x, w, ndl.Tensor(np.zeros(3, np.float32), device=device))
    other = [d for d in (ndl.cpu_numpy(), ndl.cpu()) if d.enabled() and d != device]
    if other:  # needs a second backend
        with pytest.raises(DeviceMismatchError, match="batch_norm_train: the weight is on"):
            ndl.ops.batch_norm_train(x, _t(np.ones(3), other[0]), b)
        with pytest.raises(DeviceMismatchError, match="batch_norm_train: the bias is on"):
            ndl.ops.batch_norm_train(x, w, _t(np.zeros(3), other[0]))


@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 4, 5, 3)])
def test_batch_norm_reads_channels_last_memory_in_place(device, monkeypatch, shape):
    # an (N, ..., C) buffer seen as (N, C, ...): the statistics kernel reads
    # the input's own buffer as (rows, C, 1), no copy; values as NumPy's
    from needle.backend_ndarray import NDArray
    seen, real = [], NDArray.call_op_override

    def spy(name, inputs, out_shape, *args):
        seen.append((name, inputs[0]._handle, args))
        return real(name, inputs, out_shape, *args)

    monkeypatch.setattr(NDArray, "call_op_override", staticmethod(spy))
    rng = np.random.default_rng(53)
    data = rng.standard_normal(shape) * 2 + 1
    leaf = _t(data, device)
    perm = (0, len(shape) - 1) + tuple(range(1, len(shape) - 1))
    x = np.transpose(data, perm)
    w, b = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    y = ndl.ops.batch_norm_train(ndl.ops.permute(leaf, perm), _t(w, device), _t(b, device))
    np.testing.assert_allclose(y.numpy(), _np_batch_norm(x, w, b, np.zeros_like(x))[0], rtol=1e-10, atol=1e-12)
    stats = [(h, args) for name, h, args in seen if name == "batch_norm_stats"]
    if _fused_on(device, ["batch_norm_stats"]):
        rows = int(np.prod(shape[:-1]))
        assert stats == [(leaf.realize_cached_data()._handle, (rows, 3, 1, 1e-5))]
    else:
        assert stats == []


# --------------------------------------------------------------------------- #
# core/ops/ops_tensor_api.py: corners the Tensor-method tests leave out
# --------------------------------------------------------------------------- #
def test_getitem_second_order_and_two_ellipses(device):
    rng = np.random.default_rng(61)
    a, g, u = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal((3, 4))
    x, gt = _t(a, device), _t(g, device)
    y = x[1:, ::-1]
    np.testing.assert_array_equal(y.numpy(), a[1:, ::-1])
    (dx,) = ndl.autograd.local_vjp(y, (x,), gt)
    want = np.zeros((3, 4))
    want[1:, ::-1] = g
    np.testing.assert_array_equal(dx.numpy(), want)
    # the adjoint is linear in g: its own adjoint picks u at the index again
    (dg,) = ndl.autograd.local_vjp(ndl.ops.summation(dx * _t(u, device)), (gt,), _t(np.array(1.0), device))
    np.testing.assert_array_equal(dg.numpy(), u[1:, ::-1])
    with pytest.raises(IndexError, match="single ellipsis"):
        x[..., ...]


def test_cat_checks(device):
    a, b = _t(np.ones((2, 3)), device), _t(np.zeros((2, 1)), device)
    np.testing.assert_array_equal(ndl.ops.cat([a, b], dim=-1).numpy(), np.concatenate([np.ones((2, 3)), np.zeros((2, 1))], 1))
    for dim in (2, -3):
        with pytest.raises(ShapeError, match=f"cat: dim {dim} out of range for tensors of 2 dimension"):
            ndl.ops.cat([a, b], dim=dim)
    with pytest.raises(ShapeError, match="cat: shapes .* differ outside dim 0"):
        ndl.ops.cat([a, b], dim=0)
    with pytest.raises(TypeError, match="cat: expected Tensors, got ndarray"):
        ndl.ops.cat([a, np.ones((2, 3))])


def test_where_with_numbers_arrays_and_bad_operands(device):
    cond = [[1.0, 0.0, 2.0]]
    y = _t([[4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], device)
    for c in (cond, np.array(cond), ndl.backend_ndarray.array(np.array(cond), device=device)):
        out = ndl.ops.where(c, -1.5, y)  # x a number: y gives the device and dtype
        assert out.dtype == "float64"
        np.testing.assert_array_equal(out.numpy(), [[-1.5, 5.0, -1.5], [-1.5, 8.0, -1.5]])
    out.sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(TypeError, match="where: x or y must be a Tensor, got float and int"):
        ndl.ops.where(cond, 1.0, 2)
    with pytest.raises(TypeError, match="where: y must be a Tensor or a number, got str"):
        ndl.ops.where(cond, y, "a")
    with pytest.raises(ShapeError, match=r"where: shapes condition \(2,\), x \(2, 3\)"):
        ndl.ops.where([1.0, 0.0], y, y)


def test_compare_corners(device):
    from needle.errors import DeviceMismatchError
    a = _t([1.0, 2.0, 3.0], device)
    with pytest.raises(ValueError, match="compare: kind must be one of eq, ne, lt, le, gt, ge, got 'lte'"):
        ndl.ops.Compare("lte")
    assert ndl.ops.compare(a, "x", "lt") is NotImplemented
    with pytest.raises(TypeError):
        a < "x"
    other = [d for d in (ndl.cpu_numpy(), ndl.cpu()) if d.enabled() and d != device]
    if other:  # needs a second backend
        with pytest.raises(DeviceMismatchError, match="Tensor <=: operands on"):
            a <= _t([1.0, 2.0, 3.0], other[0])
    # the op itself passes no gradient: zeros of each input
    b = _t([2.0, 2.0, 2.0], device)
    out = ndl.Tensor.make_from_op(ndl.ops.Compare("lt"), (a, b))
    np.testing.assert_array_equal(out.numpy(), [1.0, 0.0, 0.0])
    (out * 3.0).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.zeros(3))
    np.testing.assert_array_equal(b.grad.numpy(), np.zeros(3))


def test_cast_mean_min_argmax_corners(device):
    from needle.errors import UnsupportedDTypeError
    data = np.array([[3.0, 1.0, 3.0], [0.5, 2.0, 2.0]])
    x = _t(data, device)
    with pytest.raises(UnsupportedDTypeError, match="cast: unknown dtype 'nope'"):
        ndl.ops.cast(x, "nope")
    # no axes: the input unchanged, and so is the adjoint
    for op in (ndl.ops.mean, ndl.ops.min):
        out = op(x, axes=())
        np.testing.assert_array_equal(out.numpy(), data)
    x.grad = None
    (ndl.ops.mean(x, axes=()) * _t(data, device)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), data)
    with pytest.raises(ShapeError, match=r"mean: cannot average over an empty axis \(shape \(2, 0\)\)"):
        ndl.ops.mean(_t(np.zeros((2, 0)), device), axes=(1,))
    got = ndl.ops.argmax(x, keepdims=True)
    assert got.shape == (1, 1)
    np.testing.assert_array_equal(got.numpy(), [[0.0]])
    # the op itself passes a zero adjoint
    z = _t(data, device)
    ndl.Tensor.make_from_op(ndl.ops.ArgMax(axis=1), (z,)).sum().backward()
    np.testing.assert_array_equal(z.grad.numpy(), np.zeros((2, 3)))


def test_where_condition_is_non_zero_whatever_its_container(device):
    # a tiny non-zero float64 condition is true as a Tensor, an NDArray, a
    # NumPy array or a list alike (it was cast to float32 first, where 1e-50 is 0)
    x, y = _t([1.0, 2.0, 3.0], device), _t([5.0, 6.0, 7.0], device)
    cond = np.array([1e-50, 0.0, -1e-300])
    for c in (cond, cond.tolist(), ndl.backend_ndarray.array(cond, dtype="float64", device=device),
              _t(cond, device)):
        np.testing.assert_array_equal(ndl.ops.where(c, x, y).numpy(), [1.0, 6.0, 3.0])


def test_cat_at_the_first_axis_by_negative_dim_and_single_axis_mean_min(device):
    a, c = _t(np.ones((2, 3)), device), _t(np.zeros((1, 3)), device)
    np.testing.assert_array_equal(ndl.ops.cat([a, c], dim=-2).numpy(), np.concatenate([np.ones((2, 3)), np.zeros((1, 3))]))
    data = np.array([[3.0, 1.0, 3.0], [0.5, 2.0, 2.0]])
    x = _t(data, device)
    np.testing.assert_array_equal(ndl.ops.min(x, axes=(1,)).numpy(), [1.0, 0.5])
    m = ndl.ops.mean(x, axes=(1,))
    np.testing.assert_allclose(m.numpy(), data.mean(1), rtol=1e-15)
    (m * _t([3.0, 6.0], device)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], rtol=1e-15)


# --------------------------------------------------------------------------- #
# core/ops/ops_conv.py
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), (2, 1)])
def test_conv_runs_its_fused_kernels_and_matches_torch(device, overrides_taken, stride, padding):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(71)
    x, w = rng.standard_normal((2, 6, 5, 3)), rng.standard_normal((3, 3, 3, 4))
    xt, wt = _t(x, device), _t(w, device)
    y = ndl.ops.conv(xt, wt, stride=stride, padding=padding)
    g = rng.standard_normal(y.shape)
    (y * _t(g, device)).sum().backward()
    assert sorted(overrides_taken) == _fused_on(device, ["conv", "conv_grad_input", "conv_grad_weight"])
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(w.transpose(3, 2, 0, 1), requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=padding)
    (ty * torch.tensor(g.transpose(0, 3, 1, 2))).sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(wt.grad.numpy(), tw.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-10, atol=1e-12)


def test_conv_of_a_constant_batch_skips_the_input_adjoint(device, overrides_taken):
    rng = np.random.default_rng(72)
    x = ndl.Tensor(rng.standard_normal((1, 4, 4, 2)), device=device, dtype="float64", requires_grad=False)
    w = _t(rng.standard_normal((3, 3, 2, 2)), device)
    ndl.ops.conv(x, w).sum().backward()
    assert x.grad is None
    assert sorted(overrides_taken) == _fused_on(device, ["conv", "conv_grad_weight"])


def test_conv_promotes_dtypes_and_checks_its_arguments(device):
    x32 = ndl.Tensor(np.ones((1, 3, 3, 1), np.float32), device=device)
    w64 = _t(np.full((2, 2, 1, 1), 0.5), device)
    y = ndl.ops.conv(x32, w64, padding=0)
    assert y.dtype == "float64"
    np.testing.assert_array_equal(y.numpy(), np.full((1, 2, 2, 1), 2.0))
    # a (s, s) tuple is s, as nn.Conv's arguments
    np.testing.assert_array_equal(ndl.ops.Conv(stride=(2, 2), padding=[1, 1])(x32, w64).numpy().shape, (1, 2, 2, 1))
    np.testing.assert_array_equal(ndl.ops.Conv(stride=[2], padding=(0,))(x32, w64).numpy(), np.full((1, 1, 1, 1), 2.0))
    # a non-square (1, 2) was cut to 1 silently
    for bad in ((1, 2), (), [0, 1]):
        with pytest.raises(ShapeError, match=r"conv: stride must be one int or equal ones \(square\), got "):
            ndl.ops.Conv(stride=bad)
    with pytest.raises(ShapeError, match=r"conv: padding must be one int or equal ones \(square\), got \(1, 0\)"):
        ndl.ops.conv(x32, w64, padding=(1, 0))
    with pytest.raises(TypeError, match="conv: stride must be an int, got 1.5"):
        ndl.ops.conv(x32, w64, stride=1.5)
    with pytest.raises(TypeError, match="conv: padding must be an int, got '1'"):
        ndl.ops.conv(x32, w64, padding="1")
    x = _t(np.ones((1, 3, 3, 1)), device)
    bad = [((_t(np.ones((3, 3, 1)), device), w64), {}, r"conv: expected input \(N, H, W, C_in\)"),
           ((x, _t(np.ones((2, 2, 1)), device)), {}, r"conv: expected input \(N, H, W, C_in\)"),
           ((x, _t(np.ones((2, 3, 1, 1)), device)), {}, "conv: kernel must be square"),
           ((x, _t(np.ones((2, 2, 2, 1)), device)), {}, "conv: input has 1 channels"),
           ((x, w64), dict(stride=0), "conv: need stride >= 1 and padding >= 0, got stride=0, padding=1"),
           ((x, w64), dict(padding=-1), "conv: need stride >= 1 and padding >= 0, got stride=1, padding=-1"),
           ((x, _t(np.ones((4, 4, 1, 1)), device)), dict(padding=0), "conv: kernel size 4 exceeds"),
           ((_t(np.ones((1, 3, 4, 1)), device), _t(np.ones((4, 4, 1, 1)), device)), dict(padding=0),
            "conv: kernel size 4 exceeds")]
    for args, kw, msg in bad:
        with pytest.raises(ShapeError, match=msg):
            ndl.ops.conv(*args, **kw)
    # a kernel exactly the padded size fits
    assert ndl.ops.conv(x, _t(np.ones((5, 5, 1, 1)), device), padding=1).shape == (1, 1, 1, 1)


# --------------------------------------------------------------------------- #
# core/ops/registry.py
# --------------------------------------------------------------------------- #
@pytest.fixture
def scratch_registry():
    """Undo every registration a test makes: the table, the module attributes
    and their __all__ lists."""
    import sys
    reg = ndl.ops.REGISTRY
    before = dict(reg)
    mods = [sys.modules[m] for m in ("needle.ops", "needle")]
    attrs = [dict(vars(m)) for m in mods]
    alls = [list(getattr(m, "__all__", [])) for m in mods]
    yield
    reg.clear()
    reg.update(before)
    for m, a, names in zip(mods, attrs, alls):
        for k in [k for k in vars(m) if k not in a]:
            delattr(m, k)
        for k, v in a.items():
            if vars(m).get(k) is not v:
                setattr(m, k, v)
        if isinstance(getattr(m, "__all__", None), list):
            m.__all__[:] = names


class _Twice(ndl.TensorOp):
    def __init__(self, k=2.0):
        self.k = k

    def compute(self, a):
        return a * self.k

    def gradient(self, out_grad, node):
        return out_grad * self.k


def test_register_op_checks_its_arguments(scratch_registry):
    for bad in (3, "9lives", "_private", "a-b"):
        with pytest.raises(ValueError, match=f"register_op: name must be a public Python identifier, got {bad!r}"):
            ndl.ops.register_op(bad, _Twice)
    for bad in (int, _Twice()):
        with pytest.raises(TypeError, match="register_op\\('twice_x'\\): cls must be a subclass of needle.autograd.Op"):
            ndl.ops.register_op("twice_x", bad)
    with pytest.raises(TypeError, match="register_op\\('twice_x'\\): function must be callable, got 5"):
        ndl.ops.register_op("twice_x", _Twice, 5)
    assert "twice_x" not in ndl.ops.REGISTRY
    with pytest.raises(KeyError, match="no op named 'twice_x'; registered ops: add, "):
        ndl.ops.get_op("twice_x")


def test_register_op_default_function_publishing_and_replacing(scratch_registry):
    entry = ndl.ops.register_op("twice_x", _Twice)
    assert ndl.ops.get_op("twice_x") is entry and ndl.ops.op_names()[-1] == "twice_x"
    f = entry.function
    assert (f.__name__, f.__qualname__) == ("twice_x", "twice_x")
    assert f.__doc__ == "Apply :class:`_Twice` (registered op 'twice_x')."
    np.testing.assert_array_equal(f(ndl.Tensor([1.0, 2.0]), k=3.0).numpy(), [3.0, 6.0])
    np.testing.assert_array_equal(f(ndl.Tensor([1.0])).numpy(), [2.0])
    for mod in (ndl.ops, ndl):
        assert mod.twice_x is f and mod._Twice is _Twice
    assert ndl.ops.__all__.count("twice_x") == 1 and ndl.ops.__all__.count("_Twice") == 1
    # the same class again is no conflict and publishes once; another class needs replace
    again = ndl.ops.register_op("twice_x", _Twice)
    assert ndl.ops.__all__.count("twice_x") == 1 and ndl.ops.twice_x is again.function
    with pytest.raises(ValueError, match="an op named 'twice_x' is already registered \\(_Twice\\); pass replace=True"):
        ndl.ops.register_op("twice_x", ndl.ops.EWiseAdd)
    assert ndl.ops.register_op("twice_x", ndl.ops.EWiseAdd, replace=True).cls is ndl.ops.EWiseAdd


def test_registering_a_builtin_name_never_shadows_it_in_needle(scratch_registry):
    for name in ("round", "pow"):
        entry = ndl.ops.register_op(name, _Twice)
        assert getattr(ndl.ops, name) is entry.function and ndl.ops._Twice is _Twice
        assert getattr(ndl, name, None) is not entry.function
    entry = ndl.ops.register_op("twice_y", _Twice)
    assert ndl.twice_y is entry.function


def test_op_plugins_register_through_the_hook_and_a_broken_one_warns(scratch_registry):
    from needle.ops import registry

    class Impl:
        def __init__(self, name, function):
            self.plugin_name, self.function = name, function

    class Hook:
        def __init__(self, impls):
            self.needle_register_ops = type("H", (), {"get_hookimpls": lambda _self: impls})()

    def good(register):
        register("twice_p", _Twice)

    def broken(register):
        raise RuntimeError("boom")

    pm = type("PM", (), {})()
    pm.hook = Hook([Impl("broken", broken), Impl("good", good)])
    with pytest.warns(UserWarning, match="needle: plugin 'broken' failed to register ops: boom"):
        registry._register_plugin_ops(pm)
    assert ndl.ops.get_op("twice_p").cls is _Twice  # the one after the broken one still ran
    module = type("M", (), {"needle_register_ops": staticmethod(lambda register: register("twice_m", _Twice))})
    registry._register_module_ops(module)
    assert ndl.ops.get_op("twice_m").cls is _Twice
    registry._register_module_ops(object())  # no hook: nothing happens


def test_op_entries_are_frozen_and_hashable():
    # an entry is what was published: changing it in place would leave
    # needle.ops.<name> on the old function, so entries are read-only values
    import dataclasses
    entry = ndl.ops.get_op("add")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.function = ndl.ops.multiply
    assert ndl.ops.get_op("add").function is ndl.ops.add
    assert entry in {entry} and hash(entry) == hash(type(entry)("add", entry.cls, entry.function))


# --------------------------------------------------------------------------- #
# core/ops/ops_optim.py
# --------------------------------------------------------------------------- #
def test_multi_tensor_steps_on_each_backend(device):
    rng = np.random.default_rng(81)
    host = [rng.standard_normal(n).astype(np.float32) for n in (4, 7)]
    arr = lambda a: ndl.backend_ndarray.array(a, device=device)  # noqa: E731
    ps, gs, us = [arr(h) for h in host], [arr(h * 0.5 + 1) for h in host], [arr(h * 0.25) for h in host]
    fused = bool(_fused_on(device, ["sgd_step", "adam_step"]))
    out = ndl.ops.multi_tensor_sgd_step(ps, gs, us, 0.1, 0.9, 0.01)
    plain = ndl.ops.multi_tensor_sgd_step(ps, gs, None, 0.1, 0.0, 0.0)
    vs = [arr(np.abs(h) + 0.5) for h in host]
    adam = ndl.ops.multi_tensor_adam_step(ps, gs, us, vs, 0.9, 0.99, 0.01, 2.0, 1e-3, False)
    if not fused:  # the optimizer's per-parameter composition runs instead
        assert out is None and plain is None and adam is None
        return
    for h, p, u in zip(host, *out):
        g = h * 0.5 + 1 + 0.01 * h
        uu = 0.9 * h * 0.25 + 0.1 * g
        np.testing.assert_allclose(u.numpy(), uu, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(p.numpy(), h - 0.1 * uu, rtol=1e-6, atol=1e-7)
    assert plain[1] is None
    for h, p in zip(host, plain[0]):
        np.testing.assert_allclose(p.numpy(), h - 0.1 * (h * 0.5 + 1), rtol=1e-6, atol=1e-7)
    for h, p, m, v in zip(host, *adam):
        g = h * 0.5 + 1 + 0.01 * h
        mm, vv = 0.9 * h * 0.25 + 0.1 * g, 0.99 * (np.abs(h) + 0.5) + 0.01 * g * g
        assert np.isfinite(p.numpy()).all()
        np.testing.assert_allclose(m.numpy(), mm, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(v.numpy(), vv, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(p.numpy(), h - mm / (np.sqrt(vv * 2.0) + 1e-3), rtol=1e-5, atol=1e-6)
    frozen = ndl.ops.multi_tensor_adam_step(ps, gs, us, vs, 0.9, 0.99, 0.0, 2.0, 1e-3, True)
    assert frozen[0] is None and len(frozen[1]) == len(frozen[2]) == 2
    # float64 arrays on a float32-only kernel: None, the composition runs
    d64 = [ndl.backend_ndarray.array(h.astype(np.float64), dtype="float64", device=device) for h in host]
    assert ndl.ops.multi_tensor_sgd_step(d64, d64, None, 0.1, 0.0, 0.0) is None


def test_softmax_cross_entropy_checks_labels_and_shapes(device):
    from needle.errors import ArgumentTypeError, DeviceMismatchError, OutOfBoundsError
    z = _t(np.arange(6.0).reshape(2, 3), device)
    want = np.log(np.exp(np.arange(3.0)).sum()) - np.array([2.0, 0.0])  # rows are 0 1 2 and 3 4 5
    # labels as a list, as float32 under float64 logits: the same losses
    for labels in ([2, 0], ndl.Tensor(np.array([2.0, 0.0], np.float32), device=device)):
        np.testing.assert_allclose(ndl.ops.softmax_cross_entropy(z, labels).numpy(), want, rtol=1e-12)
    for bad, row in (([0, 3], 1), ([-1, 0], 0), ([0, 1.5], 1), ([np.nan, 0], 0)):
        with pytest.raises(OutOfBoundsError, match=f"softmax_cross_entropy: label .* of row {row} is not a class index; "
                                                   r"valid: whole numbers in \[0, 3\)"):
            ndl.ops.softmax_cross_entropy(z, bad)
    shapes = [(np.zeros(3), [0], r"logits must have shape \(batch, classes\), got shape \(3,\)"),
              (np.zeros((2, 0)), [0, 0], r"logits need at least one class, got shape \(2, 0\)"),
              (np.zeros((2, 3)), [0, 1, 2], r"labels have shape \(3,\), expected \(2,\)")]
    for logits, labels, msg in shapes:
        with pytest.raises(ShapeError, match="softmax_cross_entropy: " + msg):
            ndl.ops.softmax_cross_entropy(_t(logits, device), labels)
    with pytest.raises(ArgumentTypeError, match="softmax_cross_entropy: logits must be a Tensor, got ndarray"):
        ndl.ops.softmax_cross_entropy(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ArgumentTypeError, match="softmax_cross_entropy: labels must be class indices .* got list"):
        ndl.ops.softmax_cross_entropy(z, ["a", "b"])
    other = [d for d in (ndl.cpu_numpy(), ndl.cpu()) if d.enabled() and d != device]
    if other:  # needs a second backend
        with pytest.raises(DeviceMismatchError, match="softmax_cross_entropy: labels are on"):
            ndl.ops.softmax_cross_entropy(z, _t([0.0, 1.0], other[0]))
    # the op on its own: labels that ask for an adjoint get zeros
    y = _t([2.0, 0.0], device)
    ndl.ops.SoftmaxCrossEntropy()(z, y).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [0.0, 0.0])


def test_softmax_cross_entropy_second_order_matches_torch(device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(42)
    z, g, u = rng.standard_normal((3, 4)) * 2, rng.standard_normal(3), rng.standard_normal((3, 4))
    labels = np.array([1.0, 3.0, 0.0])
    zt, gt = _t(z, device), _t(g, device)
    loss = ndl.ops.softmax_cross_entropy(zt, _t(labels, device))
    (dz,) = ndl.autograd.local_vjp(loss, (zt,), gt)
    ddz, ddg = ndl.autograd.local_vjp(ndl.ops.summation(dz * _t(u, device)), (zt, gt), _t(np.array(1.0), device))
    tz, tg = torch.tensor(z, requires_grad=True), torch.tensor(g, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(labels.astype(np.int64)), reduction="none")
    (tdz,) = torch.autograd.grad(tl, (tz,), tg, create_graph=True)
    want = torch.autograd.grad((tdz * torch.tensor(u)).sum(), (tz, tg))
    np.testing.assert_allclose(dz.numpy(), tdz.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ddz.numpy(), want[0].numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ddg.numpy(), want[1].numpy(), rtol=1e-9, atol=1e-11)


def test_tuple_adjoints_sum_in_lazy_mode(monkeypatch, device):
    # lazy nodes hold no arrays until realised: summing one-hot tuple
    # adjoints must not read a slot array from an unrealised tuple
    monkeypatch.setattr(ndl.autograd, "LAZY_MODE", True)
    a = np.arange(6.0).reshape(3, 2)
    x = _t(a, device)
    parts = ndl.ops.split(x, 0)
    loss = (parts[0] * 2.0 + parts[0] * parts[0] + parts[2] * 3.0).sum()
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0, 4.0], [0.0, 0.0], [3.0, 3.0]])


def test_tuple_item_adjoint_shares_one_zero_array_per_shape_and_stack_of_one(device):
    # reading one item of an n-tuple sends back zeros for the n - 1 others:
    # one zero array per shape, not n - 1 of them (an LSTM's split is long)
    x = _t(np.arange(8.0).reshape(4, 2), device)
    parts = ndl.ops.split(x, 0)
    item = ndl.ops.tuple_get_item(parts, 1)
    adj = item.op.gradient(_t([1.0, 1.0], device), item)
    zeros = [p.realize_cached_data() for i, p in enumerate(adj.parts) if i != 1]
    assert all(z is zeros[0] for z in zeros)
    np.testing.assert_array_equal(zeros[0].numpy(), [0.0, 0.0])
    # a stack of one tensor
    s = ndl.ops.stack([x], 1)
    np.testing.assert_array_equal(s.numpy(), np.arange(8.0).reshape(4, 1, 2))
    s.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((4, 2)))


def test_batch_norm_second_order_of_a_3d_input_matches_torch(device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(54)
    x, G, u = rng.standard_normal((4, 3, 5)) * 2 + 1, rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))
    w, b, v, z = rng.uniform(0.5, 2, 3), rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)
    T = lambda a: ndl.Tensor(a, device=device, dtype="float64", requires_grad=True)  # noqa: E731
    xt, wt, bt, gt = T(x), T(w), T(b), T(G)
    op = ndl.ops.BatchNormTrain()
    assert op.mean is None and op.var is None  # no statistics before a forward
    y = op(xt, wt, bt)
    dx, dw, db = ndl.autograd.local_vjp(y, (xt, wt, bt), gt)
    loss = ndl.ops.summation(dx * T(u)) + ndl.ops.summation(dw * T(v)) + ndl.ops.summation(db * T(z))
    got = ndl.autograd.local_vjp(loss, (xt, wt, gt), _t(np.array(1.0), device))
    tx, tw, tb, tg = (torch.tensor(a, requires_grad=True) for a in (x, w, b, G))
    ty = torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True, eps=1e-5)
    tdx, tdw, tdb = torch.autograd.grad(ty, (tx, tw, tb), tg, create_graph=True)
    tloss = (tdx * torch.tensor(u)).sum() + (tdw * torch.tensor(v)).sum() + (tdb * torch.tensor(z)).sum()
    want = torch.autograd.grad(tloss, (tx, tw, tg))
    for a, c in zip((dx, dw, db) + tuple(got), (tdx, tdw, tdb) + tuple(want)):
        np.testing.assert_allclose(a.numpy(), c.detach().numpy(), rtol=1e-8, atol=1e-10)
    # BatchNormGradW's default is the weight's adjoint
    gw = ndl.Tensor.make_from_op(ndl.ops.BatchNormGradW(op), (gt, xt))
    np.testing.assert_allclose(gw.numpy(), tdw.detach().numpy(), rtol=1e-9, atol=1e-11)
    # weight and bias are checked one by one
    for ws, bs in ((4, 3), (3, 4)):
        with pytest.raises(ShapeError, match=f"batch_norm_train: weight has {ws} and bias {bs} elements"):
            ndl.ops.batch_norm_train(xt, _t(np.ones(ws), device), _t(np.ones(bs), device))


def test_softmax_cross_entropy_labels_numpy_cannot_read(device):
    # labels whose conversion to an array raises are refused with the op's
    # typed error, not whatever the failed conversion left behind
    class Unreadable:
        def __array__(self, *args, **kwargs):
            raise ValueError("no array here")

    logits = ndl.Tensor(np.zeros((2, 3)), device=device)
    with pytest.raises(ndl.errors.ArgumentTypeError, match="labels must be class indices"):
        ndl.ops.softmax_cross_entropy(logits, Unreadable())


def test_tuple_slots_dropped_by_backward_are_put_back_not_recomputed(device, monkeypatch):
    # with PyTorch's .grad rule backward drops an item's adjoint array once
    # its one-hot tuple adjoint holds it; summing the tuple's adjoints puts the
    # very same array back (_slot) instead of recomputing the adjoint's graph:
    # each matmul runs once, as under the course rule, which drops nothing
    from needle.ops.ops_mathematic import MatMul
    calls, compute = [], MatMul.compute
    monkeypatch.setattr(MatMul, "compute", lambda self, a, b: calls.append(1) or compute(self, a, b))
    rng = np.random.default_rng(61)
    a, w, c = rng.standard_normal((3, 2, 4)), rng.standard_normal((4, 4)), rng.standard_normal((2, 4))

    def backward(keep):
        monkeypatch.setattr(ndl.autograd, "KEEP_INTERIOR_GRADS", keep)
        x, wt = _t(a, device), _t(w, device)
        parts = ndl.ops.split(x, 0)
        loss = ((parts[0] @ wt) * _t(c, device)).sum() + ((parts[2] @ wt) @ wt).sum()
        calls.clear()
        loss.backward()
        return len(calls), x.grad.numpy()

    n_course, g_course = backward(True)
    n_pytorch, g_pytorch = backward(False)
    assert n_pytorch == n_course == 6  # parts[0]: 2 matmuls back, parts[2]: 4 (w's adjoints included)
    want = np.zeros_like(a)
    want[0] = c @ w.T
    want[2] = np.ones((2, 4)) @ w.T @ w.T
    np.testing.assert_allclose(g_course, want, rtol=1e-12)
    np.testing.assert_array_equal(g_pytorch, g_course)


def test_sum_tuple_adjoints_of_unrealised_lazy_one_hot_adjoints(device, monkeypatch):
    # sum_tuple_adjoints is public: in lazy mode a one-hot adjoint built from
    # unrealised slots holds no array yet, and summing must not read one
    monkeypatch.setattr(ndl.autograd, "LAZY_MODE", True)
    x = _t([1.0, 2.0], device)
    zero = ndl.Tensor.make_const(ndl.Tensor(np.zeros(2), device=device, dtype="float64").realize_cached_data())
    first = ndl.ops.OneHotTupleAdjoint.make([x * 3.0, zero], 0)
    second = ndl.ops.OneHotTupleAdjoint.make([zero, x + 1.0], 1)
    again = ndl.ops.OneHotTupleAdjoint.make([x * x, zero], 0)
    assert first.cached_data is None and first.parts[0].cached_data is None
    total = ndl.ops.sum_tuple_adjoints([first, second, again])
    np.testing.assert_array_equal(total[0].numpy(), [4.0, 10.0])
    np.testing.assert_array_equal(total[1].numpy(), [2.0, 3.0])


@pytest.mark.parametrize("op", ["reshape", "broadcast_to"])
@pytest.mark.parametrize("shape", [(2.0, 3), [2.0, 3], (2, "3")])
def test_shape_arguments_must_be_ints_as_a_tuple_too(op, shape):
    # a tuple of floats used to skip the check that a list gets (reshape(t, (2.0, 3)) gave (2, 3))
    t = ndl.Tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ndl.errors.ArgumentTypeError, match=rf"{op}: shape must be an int or a sequence of ints"):
        getattr(ndl.ops, op)(t, shape)


# --------------------------------------------------------------------------- #
# ops_conv survivors (fifth session)
# --------------------------------------------------------------------------- #
def _torch_conv_and_grads(x, w, g, stride, padding):
    """torch's conv2d of NHWC ``x`` with (K, K, C_in, C_out) ``w``, and the
    adjoints of ``sum(y * g)``, all back in needle's layouts."""
    torch = pytest.importorskip("torch")
    c = np.ascontiguousarray  # torch's slow_conv2d wants contiguous weights (C_out = 1)
    tx = torch.tensor(c(x.transpose(0, 3, 1, 2)), requires_grad=True)
    tw = torch.tensor(c(w.transpose(3, 2, 0, 1)), requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=padding)
    (ty * torch.tensor(c(g.transpose(0, 3, 1, 2)))).sum().backward()
    return (ty.detach().numpy().transpose(0, 2, 3, 1), tx.grad.numpy().transpose(0, 2, 3, 1),
            tw.grad.numpy().transpose(2, 3, 1, 0))


@pytest.mark.parametrize("hw", [(3, 5), (5, 3)])
def test_conv_padding_widens_each_side_once(device, hw):
    # padding p adds 2p rows and 2p columns, not 3p: a kernel one wider than
    # the padded side is refused on either axis, one that fits exactly runs
    H, W = hw
    x = _t(np.ones((1, H, W, 1)), device)
    with pytest.raises(ShapeError, match=rf"conv: kernel size 6 exceeds the padded input \({H}\+2\*1, {W}\+2\*1\)"):
        ndl.ops.conv(x, _t(np.ones((6, 6, 1, 1)), device), padding=1)
    rng = np.random.default_rng(81)
    xs, ws = rng.standard_normal((1, H + 1, W + 1, 2)), rng.standard_normal((6, 6, 2, 3))
    g = rng.standard_normal((1, H - 4 + 1 + 1, W - 4 + 1 + 1, 3))
    xt, wt = _t(xs, device), _t(ws, device)
    y = ndl.ops.conv(xt, wt, padding=1)
    (y * _t(g, device)).sum().backward()
    want = _torch_conv_and_grads(xs, ws, g, 1, 1)
    for got, ref in zip((y, xt.grad, wt.grad), want):
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape,k,cout,stride,padding", [
    ((1, 3, 7, 2), 3, 2, 1, 0),    # W > H: the row padding must not read the width
    ((1, 7, 3, 5), 3, 2, 1, 0),    # C_in > W: the column padding must not read the channels
    ((2, 3, 8, 9), 2, 3, 2, 1),    # both, with stride 2 and leftover rows/columns
    ((1, 8, 4, 6), 3, 1, 3, 0),
])
def test_conv_input_adjoint_of_wide_tall_and_many_channel_inputs(device, shape, k, cout, stride, padding):
    # the composed conv_grad_input (backends without the fused kernel) pads
    # its full correlation to the padded input: height from axis 1, width
    # from axis 2 of that result
    rng = np.random.default_rng(82)
    x, w = rng.standard_normal(shape), rng.standard_normal((k, k, shape[3], cout))
    xt, wt = _t(x, device), _t(w, device)
    y = ndl.ops.conv(xt, wt, stride=stride, padding=padding)
    g = rng.standard_normal(y.shape)
    (y * _t(g, device)).sum().backward()
    want = _torch_conv_and_grads(x, w, g, stride, padding)
    for got, ref in zip((y, xt.grad, wt.grad), want):
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    # the adjoint op on its own gives the same
    gx = ndl.ops.ConvGradInput(stride, padding, shape[1:3])(_t(g, device), wt)
    np.testing.assert_allclose(gx.numpy(), want[1], rtol=1e-10, atol=1e-12)


def test_conv_adjoint_ops_refuse_operands_of_no_conv(device):
    # ConvGradInput / ConvGradWeight are public ops: a gradient whose shape
    # is not the conv output of the stated input and weights was cropped or
    # padded silently by one backend and refused by another (or an untyped
    # 'pad' error); every backend now refuses it naming the op
    rng = np.random.default_rng(83)

    def r(*s):
        return _t(rng.standard_normal(s), device)

    cgi, cgw = ndl.ops.ConvGradInput, ndl.ops.ConvGradWeight
    whole = re.escape  # a message matched from its start to its end
    bad = [(lambda: cgi(1, 0, (5, 5))(r(1, 2, 2, 1), r(3, 3, 1, 1)),
            "^" + whole("conv_grad_input: gradient of shape (1, 2, 2, 1) is not the conv output (1, 3, 3, 1) of an "
                        "input (1, 5, 5, 1) and weights (3, 3, 1, 1) with stride=1, padding=0") + "$"),
           (lambda: cgi(1, 0, (3, 3))(r(1, 2, 2, 1), r(3, 3, 1, 1)), "conv_grad_input: gradient of shape"),
           (lambda: cgi(2, 1, (4, 6))(r(1, 2, 2, 1), r(3, 3, 1, 1)), r"conv_grad_input: .* \(1, 2, 3, 1\)"),
           (lambda: cgi(1, 0, (4, 4))(r(1, 2, 2, 2), r(3, 3, 1, 1)), "conv_grad_input: gradient of shape"),
           (lambda: cgi(1, 0, (4, 4))(r(1, 2, 2, 1), r(3, 4, 1, 1)), "conv_grad_input: kernel must be square"),
           (lambda: cgi(1, 0, (4, 4))(r(1, 2, 2, 1), r(3, 2, 1, 1)), "conv_grad_input: kernel must be square"),
           (lambda: cgi(1, 0, (4, 4))(r(2, 2, 1), r(3, 3, 1, 1)),
            "^" + whole("conv_grad_input: expected gradient (N, Ho, Wo, C_out) and weights (K, K, C_in, C_out), "
                        "got shapes (2, 2, 1) and (3, 3, 1, 1)") + "$"),
           (lambda: cgi(1, 0, (2, 2))(r(1, 1, 1, 1), r(3, 3, 1, 1)), "conv_grad_input: kernel size 3 exceeds"),
           (lambda: cgw(1, 0, 3)(r(1, 5, 5, 1), r(1, 2, 2, 1)), "conv_grad_weight: gradient of shape"),
           (lambda: cgw(1, 0, 3)(r(1, 3, 3, 1), r(1, 2, 2, 1)), "conv_grad_weight: gradient of shape"),
           (lambda: cgw(1, 0, 3)(r(2, 4, 4, 1), r(1, 2, 2, 1)), "conv_grad_weight: gradient of shape"),
           (lambda: cgw(1, 0, 6)(r(1, 3, 3, 1), r(1, 1, 1, 1)), "conv_grad_weight: kernel size 6 exceeds"),
           (lambda: cgw(1, 0, 3)(r(1, 3, 3), r(1, 1, 1, 1)),
            "^" + whole("conv_grad_weight: expected input (N, H, W, C_in) and gradient (N, Ho, Wo, C_out), "
                        "got shapes (1, 3, 3) and (1, 1, 1, 1)") + "$")]
    for call, msg in bad:
        with pytest.raises(ShapeError, match=msg):
            call()
    # operands of one conv go through, and equal the conv's own adjoints
    x, w, g = rng.standard_normal((2, 5, 4, 3)), rng.standard_normal((3, 3, 3, 2)), rng.standard_normal((2, 3, 2, 2))
    _, gx, gw = _torch_conv_and_grads(x, w, g, 2, 1)
    np.testing.assert_allclose(cgi(2, 1, (5, 4))(_t(g, device), _t(w, device)).numpy(), gx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cgw(2, 1, 3)(_t(x, device), _t(g, device)).numpy(), gw, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- #
# ops_tensor_api survivors (fifth session)
# --------------------------------------------------------------------------- #
_A3 = np.arange(24.0).reshape(2, 3, 4)


@pytest.mark.parametrize("index", [
    (1, ..., slice(None, None, -1)), (Ellipsis,), (None, ..., 0), (0, ..., 2), (slice(None), ..., 1),
    (..., 1, None), (0, Ellipsis), (slice(None), 1, ...),
    (slice(None), slice(2, 0, -1)), (slice(None), slice(None), slice(3, 0, -2)),
    (slice(None), slice(-1, -4, -1)), (slice(None), slice(None), slice(2, None, -1)),
    (slice(None), slice(None), slice(None, None, -3)), (slice(None), slice(None), slice(1, 3, -1)),
    (-2,), (slice(None), -3), (..., -4), (slice(None), 2), (..., 3), (1, -1, 0),
    (slice(None), slice(2, 1)), (slice(None), slice(None), slice(0, 4, 2)),
])
def test_getitem_ellipsis_negative_steps_and_edge_ints_match_numpy(device, index):
    # the ellipsis anywhere (also first, alone or with ints after it), negative
    # steps that start inside the axis, ints at -dim and dim - 1 on every axis
    x = _t(_A3, device)
    y = x[index]
    want = _A3[index]
    assert y.shape == want.shape
    np.testing.assert_array_equal(y.numpy(), want)
    w = np.arange(1.0, want.size + 1).reshape(want.shape)
    (y * _t(w, device)).sum().backward()
    grad = np.zeros_like(_A3)
    grad[index] = w
    np.testing.assert_array_equal(x.grad.numpy(), grad)


@pytest.mark.parametrize("index,axis,k,size", [((slice(None), 3), 1, 3, 3), ((slice(None), -4), 1, -4, 3),
                                                ((-3,), 0, -3, 2), ((..., 4), 2, 4, 4), ((0, 0, -5), 2, -5, 4)])
def test_getitem_int_out_of_range_is_an_index_error(device, index, axis, k, size):
    x = _t(_A3, device)
    with pytest.raises(IndexError, match=rf"index {k} is out of bounds for axis {axis} with size {size}$"):
        x[index]
    with pytest.raises(IndexError):
        _A3[index]


def test_cat_of_one_tensor_and_the_default_dim(device):
    a = np.arange(6.0).reshape(2, 3)
    x = _t(a, device)
    one = ndl.ops.cat([x])  # one tensor: the result is a copy of it
    np.testing.assert_array_equal(one.numpy(), a)
    assert one.device == x.device
    (one * _t(a + 1.0, device)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), a + 1.0)
    c = _t(np.full((1, 3), 7.0), device)
    want = np.concatenate([a, np.full((1, 3), 7.0)])
    np.testing.assert_array_equal(ndl.ops.cat([x, c]).numpy(), want)  # dim defaults to 0, as torch.cat
    np.testing.assert_array_equal(ndl.ops.Concat()(x, c).numpy(), want)


def test_cat_refuses_tensors_on_two_devices_even_empty_ones(device):
    from needle.errors import DeviceMismatchError
    other = [d for d in (ndl.cpu_numpy(), ndl.cpu()) if d.enabled() and d != device]
    if not other:
        pytest.skip("needs a second backend")
    for shapes in (((2, 1), (3, 1)), ((2, 0), (3, 0))):
        a = _t(np.zeros(shapes[0]), device)
        b = _t(np.zeros(shapes[1]), other[0])
        with pytest.raises(DeviceMismatchError, match=r"cat: tensors on .* and .*; move them to one device"):
            ndl.ops.cat([a, b]).numpy()


def test_where_adjoints_and_number_operands_are_constants(device):
    x, y = _t([1.0, 2.0, 3.0], device), _t([4.0, 5.0, 6.0], device)
    cond = [1.0, 0.0, 1.0]
    out = ndl.ops.where(cond, x, y)
    g = ndl.Tensor(np.array([1.0, 2.0, 3.0]), device=device, dtype="float64", requires_grad=False)
    dx, dy = ndl.autograd.local_vjp(out, (x, y), g)
    np.testing.assert_array_equal(dx.numpy(), [1.0, 0.0, 3.0])
    np.testing.assert_array_equal(dy.numpy(), [0.0, 2.0, 0.0])
    # a constant cotangent gives constant adjoints: the masks ask no adjoint
    assert dx.requires_grad is False and dy.requires_grad is False
    # a number operand becomes a constant Tensor: it gets no .grad
    out = ndl.ops.where(cond, x, 2.5)
    np.testing.assert_array_equal(out.numpy(), [1.0, 2.5, 3.0])
    assert out.inputs[1].requires_grad is False
    out = ndl.ops.where(cond, 2.5, y)
    np.testing.assert_array_equal(out.numpy(), [2.5, 5.0, 2.5])
    assert out.inputs[0].requires_grad is False


def test_abs_gradient_is_zero_at_zero(device):
    data = np.array([-2.0, -0.0, 0.0, 3.0, -0.5])
    x = _t(data, device)
    np.testing.assert_array_equal(ndl.ops.abs(x).numpy(), np.abs(data))
    (ndl.ops.abs(x) * _t([1.0, 2.0, 3.0, 4.0, 5.0], device)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [-1.0, 0.0, 0.0, 4.0, -5.0])  # torch.abs: sign(x) * g


@pytest.mark.parametrize("axes", [(-1, -3, 1), (2, 0, -2), (-3, -1, -2)])
def test_permute_negative_axes_and_their_adjoint(device, axes):
    x = _t(_A3, device)
    y = ndl.ops.permute(x, axes)
    want = np.transpose(_A3, axes)
    np.testing.assert_array_equal(y.numpy(), want)
    w = np.arange(1.0, 25.0).reshape(want.shape)
    (y * _t(w, device)).sum().backward()
    inverse = np.argsort([a % 3 for a in axes])
    np.testing.assert_array_equal(x.grad.numpy(), np.transpose(w, inverse))


@pytest.mark.parametrize("axes", [(3, 1, 2), (0, 1, 3), (-4, 1, 2), (0, 0, 1)])
def test_permute_refuses_axes_out_of_range(device, axes):
    x = _t(_A3, device)
    with pytest.raises(ShapeError, match=r"permute: dims .* are not a permutation of the 3 axes"):
        ndl.ops.permute(x, axes)


def test_mean_op_drops_the_reduced_axes_by_default(device):
    x = _t(_A3, device)
    out = ndl.ops.Mean(axes=(1,))(x)
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out.numpy(), _A3.mean(axis=1), rtol=1e-15)
    assert ndl.ops.Mean()(x).shape == ()


def test_where_refuses_operands_on_two_devices_and_cat_bad_arguments_are_typed():
    from needle.errors import ArgumentError, ArgumentTypeError, DeviceMismatchError
    devs = [d for d in (ndl.cpu(), ndl.cpu_numpy()) if d.enabled()]
    if len(devs) == 2:  # needs a second backend
        x = ndl.Tensor(np.ones(3, np.float32), device=devs[0])
        y = ndl.Tensor(np.zeros(3, np.float32), device=devs[1])
        with pytest.raises(DeviceMismatchError, match=r"where: x on .* and y on "):
            ndl.ops.where(np.array([1, 0, 1]), x, y)
    with pytest.raises(ArgumentError, match="cat: expected a non-empty sequence"):
        ndl.ops.cat([])
    with pytest.raises(ArgumentTypeError, match="cat: expected Tensors, got list"):
        ndl.ops.cat([[1.0]])


def test_argmax_drops_the_reduced_axis_by_default(device):
    # torch.argmax(t, dim) and np.argmax drop the axis unless keepdims is asked
    x = np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]], np.float32)
    t = ndl.Tensor(x, device=device)
    out = ndl.ops.argmax(t, 1)
    assert out.shape == (2,)
    np.testing.assert_array_equal(out.numpy(), [1.0, 0.0])
    assert ndl.ops.argmax(t).shape == ()
    op = ndl.ops.ArgMax(0)
    assert op.compute(t.realize_cached_data()).shape == (3,)
    assert ndl.ops.argmax(t, 1, keepdims=True).shape == (2, 1)


# --------------------------------------------------------------------------- #
# ops_norm survivors (fifth session)
# --------------------------------------------------------------------------- #
def test_batch_norm_parameter_adjoint_op_computes_again_after_its_cached_pass(device):
    # BatchNormGradX leaves the weight's and bias's adjoints to their ops for one
    # call; a second compute (a node realised again after backward released it)
    # must do the pass itself and give the same values
    rng = np.random.default_rng(71)
    x, g = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    w, b = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
    op = ndl.ops.BatchNormTrain()
    y = op(_t(x, device), _t(w, device), _t(b, device))
    gx, gw, gb = op.gradient(_t(g, device), y)
    _, want_dx, want_dw, want_db = _np_batch_norm(x, w, b, g)
    np.testing.assert_allclose(gx.numpy(), want_dx, rtol=1e-9, atol=1e-11)
    for t, want in ((gw, want_dw), (gb, want_db)):
        first = t.numpy()
        again = t.op.compute(*[i.realize_cached_data() for i in t.inputs]).numpy()
        np.testing.assert_allclose(first, want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(again, want, rtol=1e-10, atol=1e-12)


def test_batch_norm_second_order_with_row_shaped_weight(device):
    # the input adjoint's own gradient reshapes a (1, C) weight to (C,) first;
    # it must match the same computation with a (C,) weight
    rng = np.random.default_rng(72)
    x, g = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    w, b = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    results = []
    for shape in ((3,), (1, 3)):
        xt = _t(x, device)
        wt, bt = _t(w.reshape(shape), device), _t(b.reshape(shape), device)
        y = ndl.ops.batch_norm_train(xt, wt, bt)
        (y * _t(g, device)).sum().backward()
        gx = xt.grad
        xt.grad = wt.grad = bt.grad = None
        (gx * gx).sum().backward()
        results.append((xt.grad.numpy(), wt.grad.numpy().reshape(3)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)
    assert np.abs(results[0][0]).max() > 1e-6  # a real second-order term, not zeros


def test_lstm_ops_name_both_or_all_operands_in_their_mismatch_messages():
    # two operands: "both must share"; more: "all must share"
    from needle.errors import UnsupportedDTypeError
    z = ndl.Tensor(np.zeros((2, 8), np.float32))
    c = ndl.Tensor(np.zeros((2, 2), np.float64), dtype="float64")
    with pytest.raises(UnsupportedDTypeError, match=r"lstm_gates: z is float32 and c float64; both must share one dtype$"):
        ndl.ops.lstm_gates(z, c)
    p = ndl.Tensor(np.zeros((3, 2, 8), np.float32))
    w = ndl.Tensor(np.zeros((2, 8), np.float32))
    h0 = ndl.Tensor(np.zeros((2, 2), np.float32))
    c0 = ndl.Tensor(np.zeros((2, 2), np.float64), dtype="float64")
    with pytest.raises(UnsupportedDTypeError, match=r"lstm_layer: p is float32 and c0 float64; all must share one dtype$"):
        ndl.ops.lstm_layer(p, w, h0, c0)
