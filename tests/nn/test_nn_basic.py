"""needle.nn basic modules against hand computations and PyTorch; state dicts and checkpoints."""

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle.errors import DataFormatError, ShapeError


def T(a, requires_grad=True, dtype="float32"):
    return ndl.Tensor(np.asarray(a), dtype=dtype, requires_grad=requires_grad)


def torch_or_skip():
    return pytest.importorskip("torch")


# -- parameters, children, train/eval ---------------------------------------
class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.blocks = [nn.Linear(3, 4), nn.ReLU()]
        self.table = {"x": nn.LayerNorm1d(4), "y": nn.Parameter(ndl.init.ones(5))}
        self.pair = (nn.Dropout(0.1), nn.BatchNorm1d(4))
        self.plain = 3


def test_parameters_follow_attribute_list_and_dict_order():
    np.random.seed(0)
    m = _Holder()
    params = m.parameters()
    expected = [m.a.weight, m.a.bias, m.blocks[0].weight, m.blocks[0].bias, m.table["x"].weight,
                m.table["x"].bias, m.table["y"], m.pair[1].weight, m.pair[1].bias]
    assert len(params) == len(expected)
    assert all(p is e for p, e in zip(params, expected))
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)


def test_train_eval_reach_children_in_lists_dicts_and_tuples():
    m = _Holder()
    m.eval()
    assert not m.training and not m.a.training and not m.blocks[1].training
    assert not m.table["x"].training and not m.pair[0].training and not m.pair[1].training
    m.train()
    assert m.training and m.pair[0].training and m.table["x"].training


def test_parameter_shares_init_array():
    t = ndl.init.ones(3)
    p = nn.Parameter(t)
    assert p.requires_grad
    assert p.realize_cached_data() is t.realize_cached_data()


# -- Linear ------------------------------------------------------------------
def test_linear_init_uses_kaiming_uniform_in_order():
    np.random.seed(3)
    lin = nn.Linear(7, 5)
    np.random.seed(3)
    bound_w = np.sqrt(2) * np.sqrt(3 / 7)
    w = np.random.rand(7, 5) * 2 * bound_w - bound_w
    bound_b = np.sqrt(2) * np.sqrt(3 / 5)  # the course's bias uses fan_in = out_features
    b = np.random.rand(5, 1) * 2 * bound_b - bound_b
    np.testing.assert_allclose(lin.weight.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin.bias.numpy(), b.reshape(1, 5), rtol=1e-5, atol=1e-6)
    assert lin.weight.dtype == "float32" and lin.bias.shape == (1, 5)


def test_linear_weight_init_course_value():
    # first row of the course's seed-1337 Linear(7, 4) weight
    np.random.seed(1337)
    lin = nn.Linear(7, 4)
    np.testing.assert_allclose(lin.weight.numpy()[0], [-0.44064468, -0.6319945, -0.41082984, -0.07533049],
                               rtol=1e-6)


def test_linear_matches_torch_forward_and_backward():
    torch = torch_or_skip()
    np.random.seed(1)
    lin = nn.Linear(6, 4)
    x = np.random.randn(8, 6).astype(np.float32)
    X = T(x)
    out = lin(X)
    (out * out).sum().backward()

    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(lin.weight.numpy(), requires_grad=True)
    tb = torch.tensor(lin.bias.numpy(), requires_grad=True)
    tout = tx @ tw + tb
    (tout * tout).sum().backward()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lin.weight.grad.numpy(), tw.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(lin.bias.grad.numpy(), tb.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(X.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_linear_leading_dims_no_bias_and_flat_bias():
    np.random.seed(2)
    lin = nn.Linear(3, 2)
    x = np.random.randn(4, 5, 3).astype(np.float32)
    out = lin(T(x))
    assert out.shape == (4, 5, 2)
    np.testing.assert_allclose(out.numpy(), x @ lin.weight.numpy() + lin.bias.numpy(), rtol=1e-5, atol=1e-5)
    # tests in the course overwrite the bias with a (out,) tensor
    lin.bias.data = T(np.array([1.0, -1.0]), requires_grad=False)
    out = lin(T(x[0]))
    np.testing.assert_allclose(out.numpy(), x[0] @ lin.weight.numpy() + np.array([1.0, -1.0]), rtol=1e-5,
                               atol=1e-5)
    nobias = nn.Linear(3, 2, bias=False)
    assert nobias.bias is None and len(nobias.parameters()) == 1
    np.testing.assert_allclose(nobias(T(x[0])).numpy(), x[0] @ nobias.weight.numpy(), rtol=1e-5, atol=1e-6)


# -- activations, Flatten, Sequential, Residual ---------------------------------
def test_activations_values_and_grads():
    x = np.array([[-2.0, -0.5, 0.3, 1.7]], dtype=np.float32)
    for module, f, df in [
        (nn.ReLU(), lambda v: np.maximum(v, 0), lambda v: (v > 0).astype(np.float32)),
        (nn.Tanh(), np.tanh, lambda v: 1 - np.tanh(v) ** 2),
        (nn.Sigmoid(), lambda v: 1 / (1 + np.exp(-v)), lambda v: np.exp(-v) / (1 + np.exp(-v)) ** 2),
    ]:
        X = T(x)
        y = module(X)
        np.testing.assert_allclose(y.numpy(), f(x), rtol=1e-5, atol=1e-6)
        y.sum().backward()
        np.testing.assert_allclose(X.grad.numpy(), df(x), rtol=1e-5, atol=1e-6)
    assert nn.Identity()(X) is X


def test_flatten_sequential_residual():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert nn.Flatten()(T(x)).shape == (2, 12)
    np.testing.assert_array_equal(nn.Flatten()(T(x)).numpy(), x.reshape(2, 12))
    np.random.seed(0)
    inner = nn.Sequential(nn.Linear(12, 12), nn.ReLU())
    seq = nn.Sequential(nn.Flatten(), nn.Residual(inner))
    assert isinstance(seq.modules, tuple) and seq.modules[1].fn is inner
    flat = x.reshape(2, 12)
    expected = np.maximum(flat @ inner.modules[0].weight.numpy() + inner.modules[0].bias.numpy(), 0) + flat
    np.testing.assert_allclose(seq(T(x)).numpy(), expected, rtol=1e-5, atol=1e-4)


# -- SoftmaxLoss -------------------------------------------------------------------
@pytest.mark.parametrize("label_dtype", ["float32", "int64"])
def test_softmax_loss_matches_torch(label_dtype):
    torch = torch_or_skip()
    np.random.seed(5)
    z = np.random.randn(9, 6).astype(np.float32) * 3
    y = np.random.randint(0, 6, size=9)
    Z = T(z)
    loss = nn.SoftmaxLoss()(Z, ndl.Tensor(y.astype(label_dtype), requires_grad=False))
    assert loss.shape == ()
    loss.backward()
    tz = torch.tensor(z, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(y))
    tl.backward()
    np.testing.assert_allclose(loss.numpy(), tl.item(), rtol=1e-5)
    np.testing.assert_allclose(Z.grad.numpy(), tz.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_softmax_loss_hand_value():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    y = np.array([2, 0])
    expected = np.mean([np.log(np.exp(z[0]).sum()) - 3.0, np.log(3.0)])
    got = nn.SoftmaxLoss()(T(z), T(y, requires_grad=False)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# -- BatchNorm1d ----------------------------------------------------------------
def test_batchnorm1d_training_matches_torch_and_biased_running_var():
    torch = torch_or_skip()
    np.random.seed(7)
    x = (np.random.randn(16, 5) * 2 + 1).astype(np.float32)
    bn = nn.BatchNorm1d(5, momentum=0.2)
    bn.weight.data = T(np.linspace(0.5, 1.5, 5), requires_grad=False)
    bn.bias.data = T(np.linspace(-1, 1, 5), requires_grad=False)
    X = T(x)
    out = bn(X)
    g = np.random.randn(16, 5).astype(np.float32)
    (out * T(g, requires_grad=False)).sum().backward()

    tbn = torch.nn.BatchNorm1d(5, momentum=0.2)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(np.linspace(0.5, 1.5, 5)))
        tbn.bias.copy_(torch.tensor(np.linspace(-1, 1, 5)))
    tx = torch.tensor(x, requires_grad=True)
    tout = tbn(tx)
    (tout * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(X.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.weight.grad.numpy(), tbn.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.bias.grad.numpy(), tbn.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    # running mean like torch; running var uses the biased batch variance (course tests), torch the unbiased
    np.testing.assert_allclose(bn.running_mean.numpy(), tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.8 + 0.2 * x.var(axis=0), rtol=1e-5, atol=1e-6)
    assert not bn.running_mean.requires_grad and bn.running_mean.op is None
    assert len(bn.parameters()) == 2


def test_batchnorm1d_eval_uses_running_stats():
    np.random.seed(8)
    bn = nn.BatchNorm1d(3)
    for _ in range(3):
        bn(T(np.random.randn(10, 3) * 3 + 2))
    rm, rv = bn.running_mean.numpy(), bn.running_var.numpy()
    bn.eval()
    x = np.random.randn(4, 3).astype(np.float32)
    out = bn(T(x)).numpy()
    np.testing.assert_allclose(out, (x - rm) / np.sqrt(rv + 1e-5), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), rm)  # no update in eval
    np.testing.assert_allclose(bn.running_var.numpy(), rv)


def test_batchnorm1d_rejects_wrong_width():
    with pytest.raises(ShapeError, match="BatchNorm1d\\(4\\).*3 features"):
        nn.BatchNorm1d(4)(T(np.zeros((2, 3))))


# -- LayerNorm1d ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 5)])
def test_layernorm_matches_torch(shape):
    torch = torch_or_skip()
    np.random.seed(9)
    x = (np.random.randn(*shape) * 3 + 1).astype(np.float32)
    ln = nn.LayerNorm1d(5)
    ln.weight.data = T(np.linspace(0.5, 1.5, 5), requires_grad=False)
    ln.bias.data = T(np.linspace(-1, 1, 5), requires_grad=False)
    X = T(x)
    out = ln(X)
    g = np.random.randn(*shape).astype(np.float32)
    (out * T(g, requires_grad=False)).sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(np.linspace(0.5, 1.5, 5), dtype=torch.float32, requires_grad=True)
    tb = torch.tensor(np.linspace(-1, 1, 5), dtype=torch.float32, requires_grad=True)
    tout = torch.nn.functional.layer_norm(tx, (5,), tw, tb, eps=1e-5)
    (tout * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(X.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ln.weight.grad.numpy(), tw.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ln.bias.grad.numpy(), tb.grad.numpy(), rtol=1e-4, atol=1e-4)


# -- Dropout ------------------------------------------------------------------------
def test_dropout_draws_one_rand_and_scales():
    x = np.random.randn(5, 4).astype(np.float32)
    np.random.seed(11)
    out = nn.Dropout(0.3)(T(x)).numpy()
    np.random.seed(11)
    keep = np.random.rand(5, 4) <= 0.7
    np.testing.assert_allclose(out, x * keep / 0.7, rtol=1e-5, atol=1e-6)
    assert np.random.rand() == pytest.approx(np.random.RandomState(11).rand(21)[-1])


def test_dropout_p0_still_draws_and_eval_draws_nothing():
    x = np.ones((3, 3), dtype=np.float32)
    np.random.seed(0)
    np.testing.assert_allclose(nn.Dropout(0.0)(T(x)).numpy(), x)
    after_train = np.random.rand()
    np.random.seed(0)
    np.random.rand(3, 3)
    assert after_train == np.random.rand()
    d = nn.Dropout(0.5).eval()
    np.random.seed(0)
    X = T(x)
    assert d(X) is X
    assert np.random.rand() == np.random.RandomState(0).rand()


# -- state dicts and checkpoints ---------------------------------------------------------
def _mlp(seed):
    np.random.seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))


def test_state_dict_names_include_buffers_and_round_trip(tmp_path):
    a, b = _mlp(0), _mlp(1)
    a(T(np.random.randn(5, 4)))  # move a's running stats
    sd = a.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias",
                        "1.running_mean", "1.running_var", "3.weight", "3.bias"]
    path = tmp_path / "w.npz"
    ndl.save(a, path)
    loaded = ndl.load(path)
    assert set(loaded) == set(sd) and all(isinstance(v, np.ndarray) for v in loaded.values())
    b.load_state_dict(loaded)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert b.modules[0].weight.dtype == "float32" and isinstance(b.modules[0].weight, nn.Parameter)
    x = np.random.randn(3, 4).astype(np.float32)
    a.eval(), b.eval()
    np.testing.assert_allclose(a(T(x)).numpy(), b(T(x)).numpy())


def test_load_state_dict_reports_every_problem_and_changes_nothing():
    m = _mlp(0)
    before = m.state_dict()
    bad = dict(before)
    del bad["0.bias"]
    bad["extra.weight"] = np.zeros(3)
    bad["3.weight"] = np.zeros((2, 3), dtype=np.float32)
    bad["0.weight"] = before["0.weight"] + 1
    with pytest.raises(nn.StateDictError) as info:
        m.load_state_dict(bad)
    msg = str(info.value)
    assert 'Missing key(s) in state_dict: "0.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in msg
    assert "size mismatch for 3.weight: copying a param with shape (2, 3) from checkpoint, " \
           "the shape in current model is (3, 2)" in msg
    assert isinstance(info.value, ValueError)
    np.testing.assert_array_equal(m.modules[0].weight.numpy(), before["0.weight"])


def test_load_state_dict_non_strict_loads_matching_names():
    m = _mlp(0)
    w = np.full((4, 3), 0.5, dtype=np.float32)
    m.load_state_dict({"0.weight": w, "other": np.zeros(1)}, strict=False)
    np.testing.assert_array_equal(m.modules[0].weight.numpy(), w)


def test_load_rejects_non_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(DataFormatError, match="junk.npz"):
        ndl.load(path)
    with pytest.raises(FileNotFoundError):
        ndl.load(tmp_path / "absent.npz")


def test_save_accepts_plain_dicts_and_keeps_path(tmp_path):
    path = tmp_path / "state"  # no .npz appended
    ndl.save({"a": np.arange(3), "b": ndl.Tensor([1.0, 2.0])}, path)
    assert path.exists() and not (tmp_path / "state.npz").exists()
    got = ndl.load(path)
    np.testing.assert_array_equal(got["a"], np.arange(3))
    np.testing.assert_allclose(got["b"], [1.0, 2.0])


def test_repr_lists_children():
    text = repr(_mlp(0))
    assert text.startswith("Sequential(")
    assert "(0): Linear(in_features=4, out_features=3, bias=True)" in text
    assert "BatchNorm1d(3, eps=1e-05, momentum=0.1)" in text
