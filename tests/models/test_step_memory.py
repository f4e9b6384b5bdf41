"""A training step leaves nothing for Python's cyclic collector (issue 14).

With the course's rule every interior node keeps its adjoint in ``.grad``,
and the adjoint's graph reaches back to the node, so a step's graph sits in
reference cycles until the cyclic collector happens to run.  With
``needle.autograd.KEEP_INTERIOR_GRADS = False`` (PyTorch's rule, what
``needle train`` uses) and ``gc`` disabled, a step (after one warm-up step
that creates the optimizer state) must leave ``gc.collect()`` nothing to
free.  The course default is checked at the end.
"""

import gc

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.models.cnn import SmallCNN
from needle.models.language_model import LanguageModel
from needle.models.mlp_resnet import MLPResNet
from needle.models.resnet9 import ResNet9
from needle.testing.reference import central_difference


@pytest.fixture(autouse=True)
def _pytorch_grad_rule(monkeypatch):
    monkeypatch.setattr(ndl.autograd, "KEEP_INTERIOR_GRADS", False)


def _cyclic_garbage_of(step):
    """Objects a second ``step()`` leaves to the cyclic collector (gc off)."""
    step()  # warm-up: optimizer state, caches
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        step()
        return gc.collect()
    finally:
        if was_enabled:
            gc.enable()


def _classifier_step(model, opt, x, y):
    loss_fn = nn.SoftmaxLoss()

    def step():
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return step


def _data(device, shape, classes, n):
    rng = np.random.default_rng(0)
    x = ndl.Tensor(rng.standard_normal(shape).astype("float32"), device=device, requires_grad=False)
    y = ndl.Tensor(rng.integers(0, classes, n).astype("float32"), device=device, requires_grad=False)
    return x, y


def test_small_cnn_adam_step_leaves_no_cycles(device):
    np.random.seed(0)
    model = SmallCNN(device=device)
    x, y = _data(device, (4, 1, 28, 28), 10, 4)
    step = _classifier_step(model, ndl.optim.Adam(model.parameters(), lr=1e-3), x, y)
    assert _cyclic_garbage_of(step) == 0


def test_resnet9_sgd_step_leaves_no_cycles(device):
    np.random.seed(0)
    model = ResNet9(device=device)
    x, y = _data(device, (2, 3, 32, 32), 10, 2)
    opt = ndl.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    assert _cyclic_garbage_of(_classifier_step(model, opt, x, y)) == 0


def test_mlp_resnet_adam_step_leaves_no_cycles(device):
    np.random.seed(0)
    model = MLPResNet(20, hidden_dim=16, num_blocks=2, num_classes=5, device=device)
    x, y = _data(device, (8, 20), 5, 8)
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    assert _cyclic_garbage_of(_classifier_step(model, opt, x, y)) == 0


@pytest.mark.parametrize("seq_model", ["lstm", "transformer"])
def test_language_model_step_leaves_no_cycles(device, seq_model):
    np.random.seed(0)
    seq, batch, vocab = 5, 3, 30
    model = LanguageModel(8, vocab, 8, num_layers=2, seq_model=seq_model, seq_len=seq, device=device)
    rng = np.random.default_rng(1)
    x = ndl.Tensor(rng.integers(0, vocab, (seq, batch)).astype("float32"), device=device,
                   requires_grad=False)
    y = ndl.Tensor(rng.integers(0, vocab, seq * batch).astype("float32"), device=device,
                   requires_grad=False)
    opt = ndl.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.SoftmaxLoss()
    h = None

    def step():
        nonlocal h
        opt.reset_grad()
        out, h = model(x, h)
        loss_fn(out, y).backward()
        opt.step()
        # carry the hidden state on, detached (the course's epoch_general_ptb)
        h = tuple(t.detach() for t in h) if isinstance(h, tuple) else h.detach()
    assert _cyclic_garbage_of(step) == 0


def test_transformer_layer_input_gradient_leaves_no_cycles(device):
    np.random.seed(0)
    layer = nn.TransformerLayer(16, 2, 8, 32, dropout=0.0, causal=True, device=device)
    rng = np.random.default_rng(2)
    x = ndl.Tensor(rng.standard_normal((2, 6, 16)).astype("float32"), device=device)

    def step():
        x.grad = None
        layer(x).sum().backward()
    assert _cyclic_garbage_of(step) == 0
    assert x.grad is not None and x.grad.shape == (2, 6, 16)


def test_interior_nodes_keep_no_adjoint_unless_retained(device):
    x = ndl.Tensor([1.0, 2.0], device=device)
    y = ndl.ops.exp(x)
    z = ndl.ops.exp(x * 2.0).retain_grad()
    out = (y + z).sum()
    out.backward()
    assert y.grad is None and not y.retains_grad
    assert z.retains_grad
    np.testing.assert_allclose(z.grad.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(x.grad.numpy(), np.exp([1.0, 2.0]) + 2 * np.exp([2.0, 4.0]), rtol=1e-6)
    np.testing.assert_allclose(out.grad.numpy(), 1.0)


def test_leaf_gradient_graph_still_differentiable(device):
    """Dropping interior adjoints keeps gradients of gradients (hw1)."""
    x = ndl.Tensor([6.0], device=device)
    z = ndl.Tensor([0.0], device=device)
    y = ndl.ops.exp(x * 0.1) * x + x * z
    y.backward()
    gx = x.grad
    gx.backward()
    e = np.exp(0.6)
    # d/dx (0.1 e^{0.1x} x + e^{0.1x} + z) = 0.01 e x + 0.2 e
    np.testing.assert_allclose(x.grad.numpy(), [0.01 * e * 6 + 0.2 * e], rtol=1e-5)
    np.testing.assert_allclose(z.grad.numpy(), [1.0])


def test_backward_drops_consumed_adjoint_arrays_and_recomputes_them(device):
    """Arrays of nodes made by backward are dropped once consumed (PyTorch
    frees saved tensors likewise); the leaf gradient keeps its array, and a
    gradient of that gradient recomputes what it needs from the graph."""
    rng = np.random.default_rng(3)
    x_np, w_np = rng.standard_normal((4, 3)) * 0.3, rng.standard_normal((3, 2)) * 0.3
    x = ndl.Tensor(x_np, device=device, dtype="float64")
    w = ndl.Tensor(w_np, device=device, dtype="float64")
    y = ndl.ops.exp(x @ w)
    loss = (y * y).sum()
    loss.backward()
    forward = set(ndl.autograd.find_topo_sort([loss]))
    made = [n for n in ndl.autograd.find_topo_sort([w.grad, x.grad])
            if n.op is not None and n not in forward and n is not w.grad and n is not x.grad]
    assert made and all(n.cached_data is None for n in made)
    assert w.grad.cached_data is not None and x.grad.cached_data is not None
    e2 = np.exp(2 * x_np @ w_np)
    np.testing.assert_allclose(w.grad.numpy(), x_np.T @ (2 * e2), rtol=1e-10)
    # gradient of sum(dL/dw) in x, against a central difference
    w.grad.sum().backward()

    def f(xv):
        return np.sum(xv.T @ (2 * np.exp(2 * xv @ w_np)))
    np.testing.assert_allclose(x.grad.numpy(), central_difference(f, x_np), rtol=1e-6, atol=1e-8)


def test_conv_of_a_data_batch_computes_no_input_adjoint(device):
    """A network's first conv reads a batch that needs no gradient: backward
    skips its input adjoint (a full-size conv and a batch-sized array)."""
    rng = np.random.default_rng(4)
    x = ndl.Tensor(rng.standard_normal((2, 5, 5, 3)), device=device, dtype="float64",
                   requires_grad=False)
    w = ndl.Tensor(rng.standard_normal((3, 3, 3, 4)), device=device, dtype="float64")
    y = ndl.ops.conv(x, w, stride=1, padding=1)
    g = ndl.Tensor(rng.standard_normal(y.shape), device=device, dtype="float64", requires_grad=False)
    gx, gw = y.op.gradient_needed(g, y, (False, True))
    assert gx is None
    full_gx, full_gw = y.op.gradient_as_tuple(g, y)
    np.testing.assert_allclose(gw.numpy(), full_gw.numpy(), rtol=1e-12)
    assert full_gx.shape == x.shape
    (y * g).sum().backward()
    assert x.grad is None
    np.testing.assert_allclose(w.grad.numpy(), full_gw.numpy(), rtol=1e-12)


def test_batch_norm_keeps_one_input_sized_array_after_backward(device):
    """The fused batch norm needs the normalised input for backward; the
    centred input it was made from is dropped once that exists."""
    rng = np.random.default_rng(5)
    x = ndl.Tensor(rng.standard_normal((16, 4)), device=device, dtype="float64")
    w = ndl.Tensor(rng.uniform(0.5, 1.5, 4), device=device, dtype="float64")
    b = ndl.Tensor(rng.standard_normal(4), device=device, dtype="float64")
    y = ndl.ops.batch_norm_train(x, w, b)
    (y * y).sum().backward()
    from needle.backend_ndarray import NDArray
    kept = [a for a in (y.op._saved or ()) + (y.op._fused or ())
            if isinstance(a, NDArray) and a.size == 16 * 4]
    # the composed path keeps xhat alone; the fused one a view of x itself
    extra = [a for a in kept if a._handle.ptr() != x.realize_cached_data()._handle.ptr()]
    assert len(extra) <= 1 and len(kept) == 1
    xn = x.numpy()
    xhat = (xn - xn.mean(0)) / np.sqrt(xn.var(0) + 1e-5)
    np.testing.assert_allclose(w.grad.numpy(), (2 * (xhat * w.numpy() + b.numpy()) * xhat).sum(0),
                               rtol=1e-8)


def test_course_default_stores_every_nodes_adjoint(device, monkeypatch):
    """course API: backward stores the adjoint of every node, leaves included
    (and that graph is what leaves cycles behind)."""
    monkeypatch.setattr(ndl.autograd, "KEEP_INTERIOR_GRADS", True)
    x = ndl.Tensor([1.0, 2.0], device=device)
    y = ndl.ops.exp(x)
    out = (y * 3.0).sum()
    out.backward()
    np.testing.assert_allclose(y.grad.numpy(), [3.0, 3.0])
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.exp([1.0, 2.0]), rtol=1e-6)
    model = MLPResNet(12, 8, num_blocks=1, num_classes=3, device=device)
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3)
    xb, yb = _data(device, (6, 12), 3, 6)
    assert _cyclic_garbage_of(_classifier_step(model, opt, xb, yb)) > 0


def test_dropped_tuple_slots_are_not_recomputed(device, monkeypatch):
    """An LSTM's backward sums tuple adjoints slot by slot; a slot's array,
    dropped once the grouping into the tuple had "used" it, was recomputed
    from its whole graph (985 matmuls in a 20-step LSTM backward that needs
    ~100).  Backward must compute each matmul once: as many as with the
    course's rule, which drops nothing, and the same gradients."""
    from needle.ops.ops_mathematic import MatMul

    calls = {"n": 0}
    compute = MatMul.compute

    def counting(self, a, b):
        calls["n"] += 1
        return compute(self, a, b)

    monkeypatch.setattr(MatMul, "compute", counting)
    np.random.seed(0)
    model = nn.LSTM(6, 5, num_layers=2, device=device)
    x = ndl.Tensor(np.random.default_rng(3).standard_normal((8, 3, 6)).astype("float32"), device=device)

    def backward_matmuls(keep):
        monkeypatch.setattr(ndl.autograd, "KEEP_INTERIOR_GRADS", keep)
        for p in model.parameters():
            p.grad = None
        out, _ = model(x)
        loss = (out * out).sum()
        calls["n"] = 0
        loss.backward()
        return calls["n"], [p.grad.numpy() for p in model.parameters()]

    n_course, g_course = backward_matmuls(True)
    n_pytorch, g_pytorch = backward_matmuls(False)
    assert n_pytorch == n_course
    for a, b in zip(g_pytorch, g_course):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
