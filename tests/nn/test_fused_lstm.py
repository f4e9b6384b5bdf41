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
