"""PyTorch-style additions to needle.nn (docs/for-pytorch-users.md): Module
helpers, containers, losses, Conv2d, GELU, Softmax, clip_grad_norm_ --
values and gradients against PyTorch when it is installed, and against
hand computations otherwise."""

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle.errors import ShapeError, StateDictError


def T(a, requires_grad=True, dtype="float32", device=None):
    return ndl.Tensor(np.asarray(a), dtype=dtype, requires_grad=requires_grad, device=device)


def torch_or_skip():
    return pytest.importorskip("torch")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU())
        self.blocks = nn.ModuleList([nn.Linear(5, 5), nn.Linear(5, 5)])
        self.heads = nn.ModuleDict({"a": nn.Linear(5, 2), "b": nn.Linear(5, 3)})

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = ndl.ops.relu(b(x))
        return self.heads["a"](x), self.heads["b"](x)


# -- Module helpers ------------------------------------------------------------------------------
def test_state_dict_and_named_parameters_use_pytorch_names():
    np.random.seed(0)
    net = Net()
    keys = list(net.state_dict())
    assert keys == ["stem.0.weight", "stem.0.bias", "stem.1.weight", "stem.1.bias", "stem.1.running_mean",
                    "stem.1.running_var", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias",
                    "heads.a.weight", "heads.a.bias", "heads.b.weight", "heads.b.bias"]
    named = list(net.named_parameters())
    assert [n for n, _ in named] == [k for k in keys if "running" not in k]
    assert [p for _, p in named] == net.parameters()
    assert [n for n, _ in net.named_buffers()] == ["stem.1.running_mean", "stem.1.running_var"]


def test_children_and_modules():
    np.random.seed(0)
    net = Net()
    assert [n for n, _ in net.named_children()] == ["stem", "blocks", "heads"]
    assert list(net.children()) == [net.stem, net.blocks, net.heads]
    names = [n for n, _ in net.named_modules()]
    assert names == ["", "stem", "stem.0", "stem.1", "stem.2", "blocks", "blocks.0", "blocks.1",
                     "heads", "heads.a", "heads.b"]
    assert len(list(net.modules())) == 11
    # the course's tuple attribute wins on Sequential; the method stays reachable
    assert isinstance(net.stem.modules, tuple)
    assert list(nn.Module.modules(net.stem)) == [net.stem, *net.stem.modules]
    shared = nn.Linear(2, 2)
    twice = nn.Sequential(shared, shared)
    assert list(twice.children()) == [shared]


def test_repr_names_container_items_by_position():
    text = repr(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in text and "(1): ReLU()" in text
    assert "(0): Linear" in repr(nn.ModuleList([nn.Linear(2, 3)]))


def test_zero_grad_clears_every_parameter():
    np.random.seed(0)
    net = Net()
    a, b = net(T(np.random.randn(6, 4)))
    (a.sum() + b.sum()).backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_old_sequential_checkpoint_keys_still_load():
    np.random.seed(0)
    src = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)))
    old = {name: value + 1.0 for name, value in
           ((n, t.numpy()) for n, t in src.named_tensors(legacy=True))}
    assert "modules.1.modules.0.running_mean" in old
    src.load_state_dict(old)
    for name, value in src.state_dict().items():
        legacy = "modules." + name.replace(".", ".modules.", 1) if name.count(".") == 2 else "modules." + name
        np.testing.assert_array_equal(value, old[legacy], err_msg=name)
    assert list(src.state_dict())[0] == "0.weight"


def test_old_keys_mixed_with_unknown_ones_fail_clearly():
    m = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(StateDictError) as info:
        m.load_state_dict({"modules.0.weight": np.zeros((3, 4), np.float32), "modules.9.bias": np.zeros(4)})
    msg = str(info.value)
    assert 'Missing key(s) in state_dict: "0.bias"' in msg
    assert '"modules.9.bias"' in msg


@pytest.mark.parametrize("src", [np.float64, np.float32, np.int64])
def test_numpy_input_is_converted_to_the_module_dtype(src):
    np.random.seed(0)
    lin = nn.Linear(3, 2)
    x = (np.random.randn(4, 3) * 3).astype(src)
    out = lin(x)
    assert isinstance(out, ndl.Tensor) and out.dtype == "float32"
    np.testing.assert_allclose(out.numpy(), lin(T(x)).numpy(), rtol=1e-6)
    seq = nn.Sequential(nn.ReLU(), lin)
    np.testing.assert_allclose(seq(x).numpy(), lin(T(np.maximum(x, 0))).numpy(), rtol=1e-6)


def test_to_moves_parameters_and_buffers_in_place():
    target = ndl.cpu() if ndl.default_device() != ndl.cpu() else ndl.cpu_numpy()
    if not target.enabled():
        pytest.skip(f"{target} is not available here")
    np.random.seed(0)
    net = Net()
    params = net.parameters()
    before = {n: v.copy() for n, v in net.state_dict().items()}
    assert net.to(target) is net
    assert net.parameters() == params  # same objects: an optimizer built earlier still holds them
    for name, t in net.named_tensors():
        assert t.device == target, name
        np.testing.assert_array_equal(t.numpy(), before[name])
    x = T(np.random.randn(3, 4), device=target)
    a, _ = net(x)
    assert a.device == target
    net.to(str(ndl.default_device()).rstrip("()"))
    assert all(t.device == ndl.default_device() for _, t in net.named_tensors())


def test_to_casts_dtype_in_place():
    np.random.seed(0)
    lin = nn.Linear(3, 2)
    w = lin.weight
    lin.to(dtype="float64")
    assert lin.weight is w and w.dtype == "float64" and lin.bias.dtype == "float64"
    out = lin(T(np.ones((1, 3)), dtype="float64"))
    assert out.dtype == "float64"


def test_to_updates_remembered_device_of_sequence_models():
    target = ndl.cpu() if ndl.default_device() != ndl.cpu() else ndl.cpu_numpy()
    if not target.enabled():
        pytest.skip(f"{target} is not available here")
    rnn = nn.RNN(3, 4).to(target)
    out, h = rnn(T(np.random.randn(2, 5, 3), device=target))  # h0 created inside forward
    assert out.device == target and h.device == target


# -- containers ----------------------------------------------------------------------------------
def test_module_list_behaves_like_a_list():
    layers = nn.ModuleList([nn.Linear(2, 2)])
    layers.append(nn.ReLU()).extend([nn.Linear(2, 3)])
    layers.insert(0, nn.Identity())
    assert len(layers) == 4 and isinstance(layers[0], nn.Identity) and isinstance(layers[-1], nn.Linear)
    assert isinstance(layers[1:3], nn.ModuleList) and len(layers[1:3]) == 2
    assert len(layers.parameters()) == 4
    with pytest.raises(IndexError, match="index 4 is out of range"):
        layers[4]
    with pytest.raises(TypeError, match="nn.Module instances, got Tensor"):
        layers.append(T([1.0]))
    layers.eval()
    assert all(not m.training for m in layers)


def test_module_dict_behaves_like_a_dict():
    heads = nn.ModuleDict([("x", nn.Linear(2, 2))])
    heads["y"] = nn.Linear(2, 1)
    assert list(heads) == ["x", "y"] and "y" in heads and len(heads) == 2
    assert list(heads.state_dict()) == ["x.weight", "x.bias", "y.weight", "y.bias"]
    with pytest.raises(KeyError, match="no module named 'z'"):
        heads["z"]
    with pytest.raises(KeyError, match="without '.'"):
        heads["a.b"] = nn.ReLU()


# -- losses --------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(reduction):
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    z = rng.standard_normal((7, 5)).astype(np.float32) * 3
    y = rng.integers(0, 5, size=7)
    tz = torch.tensor(z, requires_grad=True)
    tl = torch.nn.CrossEntropyLoss(reduction=reduction)(tz, torch.tensor(y))
    g = rng.standard_normal(tl.shape).astype(np.float32)
    tl.backward(torch.tensor(g))
    nz = T(z)
    nl = nn.CrossEntropyLoss(reduction=reduction)(nz, T(y, requires_grad=False))
    assert nl.shape == tuple(tl.shape)
    nl.backward(T(g, requires_grad=False))
    np.testing.assert_allclose(nl.numpy(), tl.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nz.grad.numpy(), tz.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_cross_entropy_ignore_index_and_probabilities_match_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 3, -100, 2, -100, 1])
    for target in (y, rng.dirichlet(np.ones(4), size=6).astype(np.float32)):
        tz = torch.tensor(z, requires_grad=True)
        tl = torch.nn.CrossEntropyLoss()(tz, torch.tensor(target))
        tl.backward()
        nz = T(z)
        nl = nn.CrossEntropyLoss()(nz, target)  # a numpy target works too
        nl.backward()
        np.testing.assert_allclose(nl.numpy(), tl.detach().numpy(), rtol=1e-5)
        np.testing.assert_allclose(nz.grad.numpy(), tz.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_cross_entropy_equals_course_softmax_loss():
    rng = np.random.default_rng(2)
    z, y = rng.standard_normal((8, 3)), rng.integers(0, 3, 8)
    a = nn.CrossEntropyLoss()(T(z), T(y)).numpy()
    b = nn.SoftmaxLoss()(T(z), T(y)).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_cross_entropy_rejects_bad_targets():
    z = T(np.zeros((3, 4)))
    with pytest.raises(nn.TargetError, match="target 4 is out of range for 4 classes") as info:
        nn.CrossEntropyLoss()(z, [0, 4, 1])
    assert isinstance(info.value, IndexError)
    with pytest.raises(nn.TargetError, match="must be integers"):
        nn.CrossEntropyLoss()(z, [0.5, 1, 2])
    with pytest.raises(ShapeError, match=r"shape \(3,\)"):
        nn.CrossEntropyLoss()(z, [0, 1])
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(NotImplementedError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=0.1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_torch(reduction):
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 3, 4)).astype(np.float32), rng.standard_normal((2, 3, 4)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    tl = torch.nn.MSELoss(reduction=reduction)(tx, torch.tensor(y))
    tl.backward(torch.ones_like(tl))
    nx = T(x)
    nl = nn.MSELoss(reduction=reduction)(nx, y)
    nl.backward()
    np.testing.assert_allclose(nl.numpy(), tl.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(nx.grad.numpy(), tx.grad.numpy(), rtol=1e-5)
    with pytest.raises(ShapeError, match="must be equal"):
        nn.MSELoss()(nx, y[0])


# -- Conv2d --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (3, 1, 0), (3, 2, 2), (5, 1, "same"), (2, 1, "valid"),
                                              (1, 1, (1, 1))])
def test_conv2d_matches_torch(k, stride, padding):
    torch = torch_or_skip()
    np.random.seed(4)
    conv = nn.Conv2d(3, 4, k, stride=stride, padding=padding)
    tconv = torch.nn.Conv2d(3, 4, k, stride=stride, padding=padding)
    with torch.no_grad():
        tconv.weight.copy_(torch.tensor(conv.weight.numpy().transpose(3, 2, 0, 1)))
        tconv.bias.copy_(torch.tensor(conv.bias.numpy()))
    x = np.random.randn(2, 3, 7, 7).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = tconv(tx)
    g = np.random.randn(*ty.shape).astype(np.float32)
    ty.backward(torch.tensor(g))
    nx = T(x)
    ny = conv(nx)
    assert ny.shape == tuple(ty.shape)
    ny.backward(T(g, requires_grad=False))
    np.testing.assert_allclose(ny.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.weight.grad.numpy(), tconv.weight.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-4, atol=1e-4)


def test_conv2d_draws_like_conv_and_refuses_what_it_lacks():
    np.random.seed(5)
    a = nn.Conv(3, 4, 3)
    np.random.seed(5)
    b = nn.Conv2d(3, 4, 3, padding=1)
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert nn.Conv(3, 4, 3).padding == 1 and nn.Conv2d(3, 4, 3).padding == 0  # course Conv is unchanged
    for kwargs, text in (({"dilation": 2}, "dilation=1"), ({"groups": 3}, "groups=1"),
                         ({"padding": "same", "stride": 2}, "needs stride 1"), ({"padding": -1}, "non-negative"),
                         ({"padding": (1, 2)}, "equal on H and W"), ({"padding_mode": "reflect"}, "zeros")):
        with pytest.raises(ValueError, match=text):
            nn.Conv2d(3, 4, 3, **kwargs)


# -- activations ---------------------------------------------------------------------------------
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate):
    torch = torch_or_skip()
    x = np.concatenate([np.linspace(-8, 8, 161), [0.0, 1e-4, -1e-4, 30.0, -30.0]]).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.GELU(approximate=approximate)(tx)
    ty.sum().backward()
    nx = T(x)
    ny = nn.GELU(approximate=approximate)(nx)
    ny.sum().backward()
    np.testing.assert_allclose(ny.numpy(), ty.detach().numpy(), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(nx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=2e-6)


def test_gelu_hand_values():
    # Phi(1) = 0.8413447460685429, Phi'(x) = pdf
    y = nn.GELU()(T([1.0, 0.0, -1.0], dtype="float64"))
    np.testing.assert_allclose(y.numpy(), [0.8413447460685429, 0.0, -0.15865525393145707], rtol=1e-6)


@pytest.mark.parametrize("dim", [0, 1, -1, 2])
def test_softmax_matches_torch(dim):
    torch = torch_or_skip()
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((3, 4, 5)) * 10).astype(np.float32)
    g = rng.standard_normal((3, 4, 5)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.Softmax(dim=dim)(tx)
    ty.backward(torch.tensor(g))
    nx = T(x)
    ny = nn.Softmax(dim=dim)(nx)
    ny.backward(T(g, requires_grad=False))
    np.testing.assert_allclose(ny.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(nx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_softmax_rows_sum_to_one_and_bad_dim():
    y = nn.Softmax(dim=1)(T(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]])))
    np.testing.assert_allclose(y.numpy(), [[0.5, 0.5], [0.25, 0.75]], rtol=1e-6)
    with pytest.raises(ShapeError, match="no such axis"):
        nn.Softmax(dim=2)(T(np.zeros((2, 2))))


# -- clip_grad_norm_ -----------------------------------------------------------------------------
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    torch = torch_or_skip()
    rng = np.random.default_rng(7)
    grads = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (4,), (2, 2, 2))]
    tps = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for p, g in zip(tps, grads):
        p.grad = torch.tensor(g)
    t_total = torch.nn.utils.clip_grad_norm_(tps, max_norm)
    nps = [nn.Parameter(ndl.init.zeros(*g.shape)) for g in grads]
    for p, g in zip(nps, grads):
        p.grad = T(g, requires_grad=False)
    n_total = nn.utils.clip_grad_norm_(iter(nps), max_norm)
    assert isinstance(n_total, ndl.Tensor)
    np.testing.assert_allclose(n_total.numpy(), t_total.numpy(), rtol=1e-6)
    for p, tp in zip(nps, tps):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="norm_type=2"):
        nn.utils.clip_grad_norm_(nps, 1.0, norm_type=1)
