"""ResNet9 (and the SmallCNN showcase model): parameter count, seeded
creation order, forward/backward against an equivalent PyTorch network with
copied weights, and a training step that lowers the loss."""

import math

import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.models import ResNet9, SmallCNN

LAYOUT = [(3, 16, 7, 4), (16, 32, 3, 2), (32, 32, 3, 1), (32, 32, 3, 1), (32, 64, 3, 2),
          (64, 128, 3, 2), (128, 128, 3, 1), (128, 128, 3, 1)]


def _convs(model):
    found = []

    def walk(m):
        if isinstance(m, nn.Conv):
            found.append(m)
        for v in vars(m).values():
            for child in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(child, nn.Module):
                    walk(child)
    walk(model)
    return found


def test_parameter_count_and_conv_layout():
    model = ResNet9()
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == 431946
    convs = _convs(model)
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == LAYOUT


def test_seeded_creation_order_matches_numpy_draws():
    np.random.seed(0)
    model = ResNet9()
    np.random.seed(0)
    convs = _convs(model)
    for conv, (cin, cout, k, _) in zip(convs, LAYOUT):
        fan_in = cin * k * k
        bound = math.sqrt(2) * math.sqrt(3 / fan_in)
        w = np.random.rand(k, k, cin, cout) * 2 * bound - bound
        bb = 1 / math.sqrt(fan_in)
        b = np.random.rand(cout) * 2 * bb - bb
        np.testing.assert_allclose(conv.weight.numpy(), w, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(conv.bias.numpy(), b, rtol=1e-6, atol=1e-7)
    lin1 = np.random.rand(128, 128)  # the Linear layers draw last
    bound = math.sqrt(2) * math.sqrt(3 / 128)
    assert model.parameters()[-4].shape == (128, 128)
    np.testing.assert_allclose(model.parameters()[-4].numpy(), lin1 * 2 * bound - bound,
                               rtol=1e-6, atol=1e-7)


def _torch_resnet9(torch, model):
    tnn = torch.nn

    def convbn(conv):
        t = tnn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                       padding=conv.kernel_size // 2)
        with torch.no_grad():
            t.weight.copy_(torch.tensor(conv.weight.numpy().transpose(3, 2, 0, 1)))
            t.bias.copy_(torch.tensor(conv.bias.numpy()))
        return tnn.Sequential(t, tnn.BatchNorm2d(conv.out_channels), tnn.ReLU())

    class Res(tnn.Module):
        def __init__(self, a, b):
            super().__init__()
            self.f = tnn.Sequential(a, b)

        def forward(self, x):
            return self.f(x) + x

    c = [convbn(conv) for conv in _convs(model)]
    params = model.parameters()
    lin1, lin2 = tnn.Linear(128, 128), tnn.Linear(128, 10)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor(params[-4].numpy().T))
        lin1.bias.copy_(torch.tensor(params[-3].numpy().reshape(-1)))
        lin2.weight.copy_(torch.tensor(params[-2].numpy().T))
        lin2.bias.copy_(torch.tensor(params[-1].numpy().reshape(-1)))
    return tnn.Sequential(c[0], c[1], Res(c[2], c[3]), c[4], c[5], Res(c[6], c[7]),
                          tnn.Flatten(), lin1, tnn.ReLU(), lin2)


def test_forward_and_backward_match_torch():
    torch = pytest.importorskip("torch")
    np.random.seed(1)
    model = ResNet9()
    tmodel = _torch_resnet9(torch, model)
    x = np.random.rand(4, 3, 32, 32).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = tmodel(tx)
    ty.sum().backward()
    nx = ndl.Tensor(x)
    y = model(nx)
    assert y.shape == (4, 10)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-3, atol=1e-3)
    y.sum().backward()
    np.testing.assert_allclose(nx.grad.numpy(), tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    first_conv = _convs(model)[0]
    np.testing.assert_allclose(first_conv.weight.grad.numpy(),
                               tmodel[0][0].weight.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-3, atol=1e-3)
    for p in model.parameters():
        assert p.grad is not None and p.grad.shape == p.shape


def test_sgd_steps_lower_the_loss_on_a_fixed_batch():
    np.random.seed(2)
    model = ResNet9()
    x = ndl.Tensor(np.random.rand(8, 3, 32, 32).astype(np.float32))
    y = ndl.Tensor(np.arange(8) % 10)
    opt = ndl.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.SoftmaxLoss()
    losses = []
    for _ in range(6):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.numpy()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_small_cnn_shapes_and_input_layouts():
    np.random.seed(3)
    model = SmallCNN()
    x = np.random.rand(5, 1, 28, 28).astype(np.float32)
    out = model(ndl.Tensor(x))
    assert out.shape == (5, 10)
    model.eval()
    a = model(ndl.Tensor(x)).numpy()
    b = model(ndl.Tensor(x.reshape(5, 28, 28, 1))).numpy()
    c = model(ndl.Tensor(x.reshape(5, 784))).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-6)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
