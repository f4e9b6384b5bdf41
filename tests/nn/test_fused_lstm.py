"""ops.lstm_gates (nn.LSTMCell's gate arithmetic in one op) against its
Tensor composition, PyTorch's LSTMCell and second-order gradients, on every
backend, with contiguous and strided inputs."""

import numpy as np
import pytest

import needle as ndl
from needle import nn, ops
from needle.autograd import local_vjp
from needle.errors import DeviceMismatchError, ShapeError, UnsupportedDTypeError

B, H = 3, 5


def _composed(z, c):
    """the course API's LSTMCell: chunks i, f, g, o; c' = f c + i g; h' = o tanh(c')."""
    i, f, g, o = ops.split(ops.reshape(z, (B, 4, H)), 1).tuple()
    i, f, g, o = ops.sigmoid(i), ops.sigmoid(f), ops.tanh(g), ops.sigmoid(o)
    c_new = f * c + i * g
    return ops.stack([o * ops.tanh(c_new), c_new], 1)


def _leaf(a, device, dtype, strided):
    if not strided:
        t = ndl.Tensor(a, device=device, dtype=dtype, requires_grad=True)
        return t, t, lambda grad: grad
    leaf = ndl.Tensor(np.ascontiguousarray(a.T), device=device, dtype=dtype, requires_grad=True)
    return ops.transpose(leaf), leaf, lambda grad: grad.T


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, 4 * H)) * 2, rng.standard_normal((B, H)), rng.standard_normal((B, 2, H))


@pytest.mark.parametrize("strided", [False, True])
def test_values_and_gradients_match_the_composition(device, strided):
    z, c, g = _data()
    out = []
    for fused in (True, False):
        zt, zleaf, back = _leaf(z, device, "float64", strided)
        ct, cleaf, cback = _leaf(c, device, "float64", strided)
        y = ops.lstm_gates(zt, ct) if fused else _composed(zt, ct)
        (y * ndl.Tensor(g, device=device, dtype="float64")).sum().backward()
        out.append((y.numpy(), back(zleaf.grad.numpy()), cback(cleaf.grad.numpy())))
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_lstmcell_matches_torch_float32(device):
    torch = pytest.importorskip("torch")
    np.random.seed(0)
    cell = nn.LSTMCell(4, H, device=device)
    rng = np.random.default_rng(1)
    x, h0, c0 = (ndl.Tensor(rng.standard_normal(s).astype(np.float32), device=device, requires_grad=True)
                 for s in ((B, 4), (B, H), (B, H)))
    h, c = cell(x, (h0, c0))
    (h * h + c * 3).sum().backward()
    tcell = torch.nn.LSTMCell(4, H)
    with torch.no_grad():
        tcell.weight_ih.copy_(torch.tensor(cell.W_ih.numpy().T))
        tcell.weight_hh.copy_(torch.tensor(cell.W_hh.numpy().T))
        tcell.bias_ih.copy_(torch.tensor(cell.bias_ih.numpy()))
        tcell.bias_hh.copy_(torch.tensor(cell.bias_hh.numpy()))
    tx, th, tc = (torch.tensor(t.numpy(), requires_grad=True) for t in (x, h0, c0))
    th2, tc2 = tcell(tx, (th, tc))
    (th2 * th2 + tc2 * 3).sum().backward()
    pairs = [(h, th2.detach()), (c, tc2.detach()), (x.grad, tx.grad), (h0.grad, th.grad), (c0.grad, tc.grad),
             (cell.W_hh.grad, tcell.weight_hh.grad.T), (cell.bias_ih.grad, tcell.bias_ih.grad)]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)


def test_second_order_gradients_equal_the_compositions(device):
    z, c, g = _data(2)
    got = []
    for fused in (True, False):
        zt, ct = (ndl.Tensor(a, device=device, dtype="float64", requires_grad=True) for a in (z, c))
        gt = ndl.Tensor(g, device=device, dtype="float64", requires_grad=True)
        y = ops.lstm_gates(zt, ct) if fused else _composed(zt, ct)
        dz, dc = local_vjp(y, (zt, ct), gt)
        one = ndl.Tensor(np.array(1.0), device=device, dtype="float64")
        second = local_vjp(ops.summation(dz * dz) + ops.summation(dc * dc),
                           (zt, ct, gt), one)
        got.append([dz.numpy(), dc.numpy()] + [t.numpy() for t in second])
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_gradient_ops_called_directly_match_numpy(device):
    z, c, g = _data(3)
    T = lambda a: ndl.Tensor(a, device=device, dtype="float64")  # noqa: E731
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    i, f, gg, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
    cn = f * c + i * gg
    th = np.tanh(cn)
    dcn = g[:, 1] + g[:, 0] * o * (1 - th ** 2)
    want_z = np.concatenate([dcn * gg * i * (1 - i), dcn * c * f * (1 - f), dcn * i * (1 - gg ** 2),
                             g[:, 0] * th * o * (1 - o)], axis=1)
    for which, want in ((0, want_z), (1, dcn * f)):
        got = ndl.Tensor.make_from_op(ops.LSTMGatesGrad(which), (T(z), T(c), T(g))).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ops.lstm_gates(T(z), T(c)).numpy(), np.stack([o * th, cn], 1), rtol=1e-12)


def test_lstmcell_builds_one_gate_node(device):
    """LSTMCell's step goes through the fused op: h' and c' come from one LSTMGates node."""
    cell = nn.LSTMCell(4, H, device=device)
    x = ndl.Tensor(np.ones((B, 4), np.float32), device=device, requires_grad=True)
    h, c = cell(x)
    split_node = h.inputs[0]
    assert split_node is c.inputs[0]
    assert isinstance(split_node.inputs[0].op, ops.LSTMGates)


def test_bad_inputs_raise_typed_errors_naming_the_op(device):
    z = ndl.Tensor(np.zeros((B, 4 * H), np.float32), device=device)
    with pytest.raises(ShapeError, match="lstm_gates"):
        ops.lstm_gates(z, ndl.Tensor(np.zeros((B, H + 1), np.float32), device=device))
    with pytest.raises(UnsupportedDTypeError, match="lstm_gates"):
        ops.lstm_gates(z, ndl.Tensor(np.zeros((B, H)), device=device, dtype="float64"))
    other = [d for d in (ndl.cpu_numpy(), ndl.cpu()) if d.enabled() and d != device]
    if other:
        with pytest.raises(DeviceMismatchError, match="lstm_gates"):
            ops.lstm_gates(z, ndl.Tensor(np.zeros((B, H), np.float32), device=other[0]))


def test_cpu_kernels_validate_buffer_sizes():
    dev = ndl.cpu()
    if not dev.enabled():
        pytest.skip("the compiled cpu backend is not built")
    be = dev.require()
    with pytest.raises(ShapeError, match="lstm_gates"):
        be.lstm_gates(be.Array(4 * B * H - 1), be.Array(B * H), be.Array(2 * B * H), B, H)
    with pytest.raises(ShapeError, match="lstm_gates_grad"):
        be.lstm_gates_grad(be.Array(4 * B * H), be.Array(B * H), be.Array(2 * B * H),
                           be.Array(4 * B * H), B, H)


# --------------------------------------------------------------------------- #
# ops.lstm_layer: a layer's whole recurrence as one node (nn.LSTM's path)
# --------------------------------------------------------------------------- #
T_STEPS = 4


def _layer_composed(p, w, h, c):
    """T cell steps as Tensor ops, stacked like lstm_layer: every h, then the last c."""
    hs = []
    for p_t in ops.split(p, 0).tuple():
        h, c = ops.split(ops.lstm_gates(p_t + h @ w, c), 1).tuple()
        hs.append(h)
    return ops.stack(hs + [c], 0)


def _layer_data(seed=2):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((T_STEPS, B, 4 * H)), rng.standard_normal((H, 4 * H)) * 0.5,
            rng.standard_normal((B, H)), rng.standard_normal((B, H)),
            rng.standard_normal((T_STEPS + 1, B, H)))


def test_lstm_layer_matches_the_step_by_step_composition(device):
    """Values and all four adjoints (the recurrent weight's as one product over
    every step) equal T lstm_gates steps on the same backend."""
    p, w, h0, c0, g = _layer_data()
    res = []
    for fused in (True, False):
        leaves = [ndl.Tensor(a, device=device, dtype="float64", requires_grad=True) for a in (p, w, h0, c0)]
        y = (ops.lstm_layer if fused else _layer_composed)(*leaves)
        (y * ndl.Tensor(g, device=device, dtype="float64")).sum().backward()
        res.append([y.numpy()] + [t.grad.numpy() for t in leaves])
    assert res[0][0].shape == (T_STEPS + 1, B, H)
    for got, want in zip(*res):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


def test_lstm_layer_matches_numpy(device):
    # an independent oracle: the recurrence written in NumPy (i, f, g, o order)
    p, w, h0, c0, _ = _layer_data(3)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h, c, want = h0, c0, []
    for t in range(T_STEPS):
        z = p[t] + h @ w
        i, f, gg, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
        c = f * c + i * gg
        h = o * np.tanh(c)
        want.append(h)
    want.append(c)
    got = ops.lstm_layer(*(ndl.Tensor(a, device=device, dtype="float64") for a in (p, w, h0, c0)))
    np.testing.assert_allclose(got.numpy(), np.stack(want), rtol=1e-12, atol=1e-13)


def test_lstm_layer_second_order_matches_the_composition(device):
    # the backward's own adjoint differentiates the composition (local_vjp)
    p, w, h0, c0, g = _layer_data(4)
    res = []
    for fused in (True, False):
        leaves = [ndl.Tensor(a, device=device, dtype="float64", requires_grad=True) for a in (p, w, h0, c0)]
        gt = ndl.Tensor(g, device=device, dtype="float64")
        y = (ops.lstm_layer if fused else _layer_composed)(*leaves)
        grads = local_vjp(y, tuple(leaves), gt)
        # a scalar of the first-order adjoints, differentiated again
        (grads[1] * grads[1]).sum().backward()
        res.append([t.grad.numpy() for t in leaves])
    for got, want in zip(*res):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_lstm_module_runs_one_layer_node_per_layer(device):
    """nn.LSTM builds one lstm_layer node per layer (not T cell steps) and its
    outputs, final states and parameter gradients equal the cell-by-cell
    recurrence (LSTMCell steps) it replaces."""
    from needle.autograd import find_topo_sort
    np.random.seed(5)
    lstm = nn.LSTM(3, H, num_layers=2, device=device, dtype="float64")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((T_STEPS, B, 3))
    h0, c0 = rng.standard_normal((2, B, H)), rng.standard_normal((2, B, H))
    X = ndl.Tensor(x, device=device, dtype="float64")
    out, (hn, cn) = lstm(X, (ndl.Tensor(h0, device=device, dtype="float64"),
                             ndl.Tensor(c0, device=device, dtype="float64")))
    nodes = find_topo_sort([out])
    assert sum(isinstance(n.op, ops.LSTMLayer) for n in nodes) == 2
    (out.sum() + (hn * hn).sum() + (cn * 3).sum()).backward()
    fused_grads = [p.grad.numpy() for p in lstm.parameters()]
    # the same recurrence through the cells, step by step
    for p in lstm.parameters():
        p.grad = None
    layer_in, hs, cs = X, [], []
    for k, cell in enumerate(lstm.lstm_cells):
        h = ndl.Tensor(h0[k], device=device, dtype="float64")
        c = ndl.Tensor(c0[k], device=device, dtype="float64")
        outs = []
        for x_t in ops.split(layer_in, 0).tuple():
            h, c = cell(x_t, (h, c))
            outs.append(h)
        layer_in = ops.stack(outs, 0)
        hs.append(h)
        cs.append(c)
    np.testing.assert_allclose(out.numpy(), layer_in.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(hn.numpy(), np.stack([t.numpy() for t in hs]), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(cn.numpy(), np.stack([t.numpy() for t in cs]), rtol=1e-12, atol=1e-13)
    hn2, cn2 = ops.stack(hs, 0), ops.stack(cs, 0)
    (layer_in.sum() + (hn2 * hn2).sum() + (cn2 * 3).sum()).backward()
    for got, p in zip(fused_grads, lstm.parameters()):
        np.testing.assert_allclose(got, p.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_lstm_layer_bad_input(device):
    p, w, h0, c0, _ = _layer_data()
    t = lambda a, **kw: ndl.Tensor(a, device=device, dtype=kw.get("dtype", "float64"))  # noqa: E731
    with pytest.raises(ShapeError, match="lstm_layer: expected p"):
        ops.lstm_layer(t(p[:, :, :-1]), t(w), t(h0), t(c0))  # 4H must divide by 4
    with pytest.raises(ShapeError, match="lstm_layer: expected p"):
        ops.lstm_layer(t(p[:0]), t(w), t(h0), t(c0))  # no steps
    with pytest.raises(ShapeError, match="w_hh"):
        ops.lstm_layer(t(p), t(w[:, :-4]), t(h0), t(c0))
    with pytest.raises(ShapeError, match="h0, c0"):
        ops.lstm_layer(t(p), t(w), t(h0[:-1]), t(c0))
    with pytest.raises(UnsupportedDTypeError, match="lstm_layer: p is float64 and c0 float32"):
        ops.lstm_layer(t(p), t(w), t(h0), t(c0, dtype="float32"))


def test_lstm_layer_backward_is_one_pass_shared_by_its_four_adjoints(device, monkeypatch):
    # four LSTMLayerGrad nodes (p, w_hh, h0, c0) run backpropagation through
    # time once: 2 gate-adjoint computations a step, not 8
    calls = []
    real = ops.LSTMGatesGrad.compute
    monkeypatch.setattr(ops.LSTMGatesGrad, "compute", lambda self, *a: calls.append(1) or real(self, *a))
    p, w, h0, c0, g = _layer_data(7)
    leaves = [ndl.Tensor(a, device=device, dtype="float64", requires_grad=True) for a in (p, w, h0, c0)]
    y = ops.lstm_layer(*leaves)
    grads = local_vjp(y, tuple(leaves), ndl.Tensor(g, device=device, dtype="float64"))
    assert [type(t.op) for t in grads] == [ops.LSTMLayerGrad] * 4
    assert [t.op.which for t in grads] == [0, 1, 2, 3]
    assert [t.shape for t in grads] == [(T_STEPS, B, 4 * H), (H, 4 * H), (B, H), (B, H)]
    assert len(calls) == 2 * T_STEPS
    # also through backward() from a sum, whose adjoint is a broadcast view the
    # pass compacts first (the sharing must key on the array it was given)
    calls.clear()
    ops.lstm_layer(*leaves).sum().backward()
    assert len(calls) == 2 * T_STEPS
    assert all(t.grad is not None for t in leaves)
