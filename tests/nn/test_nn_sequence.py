"""RNNCell, RNN, LSTMCell, LSTM, Embedding: seeded init against NumPy,
forward and gradients against PyTorch (when installed) and NumPy, numerical
gradients, devices, bad input."""

import math

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.errors import ShapeError

DEVICES = [d for d in (ndl.cpu_numpy(), ndl.cpu(), ndl.cuda()) if d.enabled()]
DEVICE_IDS = [str(d) for d in DEVICES]
TOL = dict(rtol=1e-4, atol=1e-5)


def _uniform(shape, H):
    b = 1 / math.sqrt(H)
    return np.random.rand(*shape) * 2 * b - b


def test_rnncell_and_lstmcell_seeded_init_order_and_bounds():
    np.random.seed(0)
    cell = nn.RNNCell(5, 7)
    np.random.seed(0)
    for name, shape in (("W_ih", (5, 7)), ("W_hh", (7, 7)), ("bias_ih", (7,)),
                        ("bias_hh", (7,))):
        np.testing.assert_allclose(getattr(cell, name).numpy(), _uniform(shape, 7), rtol=1e-6,
                                   atol=1e-7)
    assert [id(p) for p in cell.parameters()] == [id(cell.W_ih), id(cell.W_hh),
                                                  id(cell.bias_ih), id(cell.bias_hh)]
    np.random.seed(1)
    lcell = nn.LSTMCell(3, 4)
    np.random.seed(1)
    for name, shape in (("W_ih", (3, 16)), ("W_hh", (4, 16)), ("bias_ih", (16,)),
                        ("bias_hh", (16,))):
        np.testing.assert_allclose(getattr(lcell, name).numpy(), _uniform(shape, 4),
                                   rtol=1e-6, atol=1e-7)
    nobias = nn.RNNCell(3, 4, bias=False)
    assert nobias.bias_ih is None and nobias.bias_hh is None and len(nobias.parameters()) == 2


def test_multilayer_init_creates_layers_in_order():
    np.random.seed(2)
    lstm = nn.LSTM(3, 4, 2)
    np.random.seed(2)
    expected = [_uniform(s, 4) for s in ((3, 16), (4, 16), (16,), (16,),
                                         (4, 16), (4, 16), (16,), (16,))]
    got = [p.numpy() for p in lstm.parameters()]
    assert len(got) == 8
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
    assert lstm.lstm_cells[1].W_ih.shape == (4, 16)
    rnn = nn.RNN(3, 4, 3, False)  # positional (input, hidden, num_layers, bias)
    assert len(rnn.rnn_cells) == 3 and len(rnn.parameters()) == 6


def _torch_rnn(torch, module, kind, nonlinearity="tanh"):
    cells = module.rnn_cells if kind == "rnn" else module.lstm_cells
    bias = cells[0].bias_ih is not None
    if kind == "rnn":
        t = torch.nn.RNN(module.input_size, module.hidden_size, len(cells), bias=bias,
                         nonlinearity=nonlinearity)
    else:
        t = torch.nn.LSTM(module.input_size, module.hidden_size, len(cells), bias=bias)
    with torch.no_grad():
        for layer, cell in enumerate(cells):
            getattr(t, f"weight_ih_l{layer}").copy_(torch.tensor(cell.W_ih.numpy().T))
            getattr(t, f"weight_hh_l{layer}").copy_(torch.tensor(cell.W_hh.numpy().T))
            if bias:
                getattr(t, f"bias_ih_l{layer}").copy_(torch.tensor(cell.bias_ih.numpy()))
                getattr(t, f"bias_hh_l{layer}").copy_(torch.tensor(cell.bias_hh.numpy()))
    return t


def _compare_param_grads(torch_module, cells, bias):
    for layer, cell in enumerate(cells):
        np.testing.assert_allclose(cell.W_ih.grad.numpy(),
                                   getattr(torch_module, f"weight_ih_l{layer}").grad.numpy().T,
                                   **TOL)
        np.testing.assert_allclose(cell.W_hh.grad.numpy(),
                                   getattr(torch_module, f"weight_hh_l{layer}").grad.numpy().T,
                                   **TOL)
        if bias:
            np.testing.assert_allclose(cell.bias_ih.grad.numpy(),
                                       getattr(torch_module, f"bias_ih_l{layer}").grad.numpy(),
                                       **TOL)
            np.testing.assert_allclose(cell.bias_hh.grad.numpy(),
                                       getattr(torch_module, f"bias_hh_l{layer}").grad.numpy(),
                                       **TOL)


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
@pytest.mark.parametrize("layers,bias,nonlinearity,with_h0", [
    (1, True, "tanh", False), (2, True, "relu", True), (3, False, "tanh", True),
    (2, True, "tanh", False)])
def test_rnn_matches_torch(device, layers, bias, nonlinearity, with_h0):
    torch = pytest.importorskip("torch")
    np.random.seed(3)
    T, B, I, H = 5, 3, 4, 6
    model = nn.RNN(I, H, layers, bias, nonlinearity=nonlinearity, device=device)
    tmodel = _torch_rnn(torch, model, "rnn", nonlinearity)
    x = np.random.randn(T, B, I).astype(np.float32)
    h0 = np.random.randn(layers, B, H).astype(np.float32) if with_h0 else None

    tx = torch.tensor(x, requires_grad=True)
    tout, th = tmodel(tx, None if h0 is None else torch.tensor(h0))
    nx = ndl.Tensor(x, device=device)
    out, h = model(nx, None if h0 is None else ndl.Tensor(h0, device=device))
    assert out.shape == (T, B, H) and h.shape == (layers, B, H)
    assert out.device == device and h.device == device
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), **TOL)
    np.testing.assert_allclose(h.numpy(), th.detach().numpy(), **TOL)

    (tout.sum() + (th * 0.5).sum()).backward()
    (out.sum() + (h * 0.5).sum()).backward()
    np.testing.assert_allclose(nx.grad.numpy(), tx.grad.numpy(), **TOL)
    _compare_param_grads(tmodel, model.rnn_cells, bias)


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
@pytest.mark.parametrize("layers,bias,with_h", [(1, True, False), (2, True, True),
                                                (2, False, False), (3, True, True)])
def test_lstm_matches_torch(device, layers, bias, with_h):
    torch = pytest.importorskip("torch")
    np.random.seed(4)
    T, B, I, H = 4, 2, 3, 5
    model = nn.LSTM(I, H, layers, bias, device=device)
    tmodel = _torch_rnn(torch, model, "lstm")
    x = np.random.randn(T, B, I).astype(np.float32)
    h0 = np.random.randn(layers, B, H).astype(np.float32)
    c0 = np.random.randn(layers, B, H).astype(np.float32)
    g = np.random.randn(T, B, H).astype(np.float32)

    tx = torch.tensor(x, requires_grad=True)
    tout, (th, tc) = tmodel(tx, (torch.tensor(h0), torch.tensor(c0)) if with_h else None)
    nx = ndl.Tensor(x, device=device)
    state = (ndl.Tensor(h0, device=device), ndl.Tensor(c0, device=device)) if with_h else None
    out, (h, c) = model(nx, state)
    for a, ref in ((out, tout), (h, th), (c, tc)):
        assert a.device == device
        np.testing.assert_allclose(a.numpy(), ref.detach().numpy(), **TOL)
    loss_t = (tout * torch.tensor(g)).sum() + th.sum() + (tc * 2).sum()
    loss_t.backward()
    loss = (out * ndl.Tensor(g, device=device)).sum() + h.sum() + (c * 2).sum()
    loss.backward()
    np.testing.assert_allclose(nx.grad.numpy(), tx.grad.numpy(), **TOL)
    _compare_param_grads(tmodel, model.lstm_cells, bias)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_every_parameter_gets_a_gradient_from_nonscalar_backward(kind):
    np.random.seed(5)
    model = nn.RNN(3, 4, 2) if kind == "rnn" else nn.LSTM(3, 4, 2)
    out, _ = model(ndl.Tensor(np.random.randn(1, 2, 3).astype(np.float32)))
    out.backward()  # T = 1 and h0 = None: W_hh still gets its (zero) gradient
    for p in model.parameters():
        assert p.grad is not None and p.grad.shape == p.shape


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
def test_cells_match_torch_cells(device):
    torch = pytest.importorskip("torch")
    np.random.seed(6)
    B, I, H = 3, 4, 5
    x = np.random.randn(B, I).astype(np.float32)
    h0 = np.random.randn(B, H).astype(np.float32)
    c0 = np.random.randn(B, H).astype(np.float32)
    cell = nn.RNNCell(I, H, nonlinearity="relu", device=device)
    tcell = torch.nn.RNNCell(I, H, nonlinearity="relu")
    lcell = nn.LSTMCell(I, H, device=device)
    tl = torch.nn.LSTMCell(I, H)
    with torch.no_grad():
        for n, t in ((cell, tcell), (lcell, tl)):
            t.weight_ih.copy_(torch.tensor(n.W_ih.numpy().T))
            t.weight_hh.copy_(torch.tensor(n.W_hh.numpy().T))
            t.bias_ih.copy_(torch.tensor(n.bias_ih.numpy()))
            t.bias_hh.copy_(torch.tensor(n.bias_hh.numpy()))
    y = cell(ndl.Tensor(x, device=device), ndl.Tensor(h0, device=device))
    np.testing.assert_allclose(y.numpy(), tcell(torch.tensor(x), torch.tensor(h0))
                               .detach().numpy(), **TOL)
    y0 = cell(ndl.Tensor(x, device=device))  # h defaults to zeros
    np.testing.assert_allclose(y0.numpy(), tcell(torch.tensor(x)).detach().numpy(), **TOL)
    h, c = lcell(ndl.Tensor(x, device=device),
                 (ndl.Tensor(h0, device=device), ndl.Tensor(c0, device=device)))
    th, tc = tl(torch.tensor(x), (torch.tensor(h0), torch.tensor(c0)))
    np.testing.assert_allclose(h.numpy(), th.detach().numpy(), **TOL)
    np.testing.assert_allclose(c.numpy(), tc.detach().numpy(), **TOL)
    assert h.device == device and c.device == device


def _np_lstm_cell(x, h, c, Wi, Wh, bi, bh):
    z = x @ Wi + bi + h @ Wh + bh
    H = h.shape[1]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
    c2 = f * c + i * g
    return o * np.tanh(c2), c2


def test_lstmcell_matches_numpy_gate_order_and_numerical_gradient():
    np.random.seed(7)
    B, I, H = 2, 3, 2
    cell = nn.LSTMCell(I, H, dtype="float64")
    x = np.random.randn(B, I)
    h0, c0 = np.random.randn(B, H), np.random.randn(B, H)
    wts = [cell.W_ih.numpy().copy(), cell.W_hh.numpy().copy(), cell.bias_ih.numpy().copy(),
           cell.bias_hh.numpy().copy()]
    coef = np.random.randn(B, H)

    def loss():
        h, c = _np_lstm_cell(x, h0, c0, *wts)
        return float((h * coef).sum() + c.sum())

    nh, nc = cell(ndl.Tensor(x, dtype="float64"),
                  (ndl.Tensor(h0, dtype="float64"), ndl.Tensor(c0, dtype="float64")))
    rh, rc = _np_lstm_cell(x, h0, c0, *wts)
    np.testing.assert_allclose(nh.numpy(), rh, rtol=1e-10)
    np.testing.assert_allclose(nc.numpy(), rc, rtol=1e-10)
    ((nh * ndl.Tensor(coef, dtype="float64")).sum() + nc.sum()).backward()
    for p, arr in zip((cell.W_ih, cell.W_hh, cell.bias_ih, cell.bias_hh), wts):
        num = np.zeros_like(arr)
        for j in range(arr.size):
            old = arr.flat[j]
            arr.flat[j] = old + 1e-6
            hi = loss()
            arr.flat[j] = old - 1e-6
            lo = loss()
            arr.flat[j] = old
            num.flat[j] = (hi - lo) / 2e-6
        np.testing.assert_allclose(p.grad.numpy(), num, rtol=1e-5, atol=1e-7)


def test_forward_reads_replaced_parameters():
    np.random.seed(8)
    cell = nn.RNNCell(2, 3)
    W = ndl.Tensor(np.random.randn(2, 3).astype(np.float32))
    cell.W_ih = W
    x = np.random.randn(4, 2).astype(np.float32)
    y = cell(ndl.Tensor(x))
    ref = np.tanh(x @ W.numpy() + cell.bias_ih.numpy() + cell.bias_hh.numpy())
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-6)
    y.sum().backward()
    assert W.grad is not None and W.grad.shape == (2, 3)


def test_sequence_modules_reject_bad_shapes():
    rnn = nn.RNN(3, 4, 2)
    with pytest.raises(ShapeError, match="RNN"):
        rnn(ndl.Tensor(np.zeros((2, 3), dtype=np.float32)))
    with pytest.raises(ShapeError, match="RNN"):
        rnn(ndl.Tensor(np.zeros((2, 1, 5), dtype=np.float32)))
    with pytest.raises(ShapeError, match="h0"):
        rnn(ndl.Tensor(np.zeros((2, 1, 3), dtype=np.float32)),
            ndl.Tensor(np.zeros((1, 1, 4), dtype=np.float32)))
    lstm = nn.LSTM(3, 4)
    with pytest.raises(ShapeError, match="c0"):
        lstm(ndl.Tensor(np.zeros((2, 1, 3), dtype=np.float32)),
             (ndl.Tensor(np.zeros((1, 1, 4), dtype=np.float32)),
              ndl.Tensor(np.zeros((1, 2, 4), dtype=np.float32))))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNNCell(2, 3, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size"):
        nn.LSTM(2, 0)


def test_embedding_init_forward_backward():
    np.random.seed(9)
    emb = nn.Embedding(7, 3)
    np.random.seed(9)
    np.testing.assert_allclose(emb.weight.numpy(), np.random.randn(7, 3), rtol=1e-6,
                               atol=1e-7)
    ids = np.array([[0, 6, 2], [2, 2, 5]], dtype=np.float32)
    out = emb(ndl.Tensor(ids))
    W = emb.weight.numpy()
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.numpy(), W[ids.astype(int)])
    g = np.random.randn(2, 3, 3).astype(np.float32)
    out.backward(ndl.Tensor(g))
    ref = np.zeros_like(W)
    np.add.at(ref, ids.astype(int).reshape(-1), g.reshape(-1, 3))
    np.testing.assert_allclose(emb.weight.grad.numpy(), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES, ids=DEVICE_IDS)
def test_embedding_on_device_and_bad_ids(device):
    emb = nn.Embedding(5, 2, device=device)
    out = emb(ndl.Tensor(np.array([[4.0], [1.0]]), device=device))
    assert out.device == device and out.shape == (2, 1, 2)
    with pytest.raises(ValueError, match="Embedding"):
        emb(ndl.Tensor(np.array([[5.0]]), device=device))
    with pytest.raises(ValueError, match="Embedding"):
        emb(ndl.Tensor(np.array([[-1.0]]), device=device))
    with pytest.raises(ValueError, match="Embedding"):
        emb(ndl.Tensor(np.array([[1.5]]), device=device))


def test_embedding_gather_and_scatter_are_adjoint_and_differentiable():
    """The row gather behind Embedding and its scatter-add gradient are each
    other's adjoints, so gradients of gradients work too."""
    from needle.nn.nn_sequence import _RowGather, _RowScatterAdd

    np.random.seed(10)
    ids = np.array([3, 0, 3, 3, 1])
    W = ndl.Tensor(np.random.randn(4, 2).astype(np.float64), dtype="float64")
    c = np.random.randn(5, 2)
    (_RowGather(ids)(W) * ndl.Tensor(c, dtype="float64")).sum().backward()
    ref = np.zeros((4, 2))
    np.add.at(ref, ids, c)
    np.testing.assert_allclose(W.grad.numpy(), ref, rtol=1e-12)
    g = ndl.Tensor(np.random.randn(5, 2), dtype="float64")
    d = np.random.randn(4, 2)
    (_RowScatterAdd(ids, 4)(g) * ndl.Tensor(d, dtype="float64")).sum().backward()
    np.testing.assert_allclose(g.grad.numpy(), d[ids], rtol=1e-12)
    empty = _RowScatterAdd(np.array([], dtype=np.int64), 3)(
        ndl.Tensor(np.zeros((0, 2)), dtype="float64"))
    np.testing.assert_array_equal(empty.numpy(), np.zeros((3, 2)))
