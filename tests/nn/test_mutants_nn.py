"""nn behaviour that planted bugs showed no test pinned."""

import re

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn


def _ce_reference(z, y):
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(y)), y]))


@pytest.mark.parametrize("scale", [1.0, 100.0, 1000.0])
def test_softmax_loss_is_stable_for_large_float32_logits(device, scale):
    # log(sum(exp(z))) without the max shift overflows float32 at z ~ 89
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((6, 5)) * scale).astype(np.float32)
    y = rng.integers(0, 5, size=6)
    loss = nn.SoftmaxLoss()(ndl.Tensor(z, device=device), ndl.Tensor(y, device=device))
    got = float(loss.numpy())
    assert np.isfinite(got)
    np.testing.assert_allclose(got, _ce_reference(z, y), rtol=1e-5, atol=1e-4 * scale)


def test_softmax_loss_gradient_is_softmax_minus_one_hot(device):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4, 3)) * 50
    y = np.array([0, 2, 1, 2])
    t = ndl.Tensor(z, device=device, dtype="float64")
    nn.SoftmaxLoss()(t, ndl.Tensor(y, device=device)).backward()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(4), y] -= 1
    np.testing.assert_allclose(t.grad.numpy(), p / 4, rtol=1e-9, atol=1e-12)


def test_train_and_eval_set_booleans_on_every_submodule():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.ReLU(), nn.Dropout(0.5)))
    subs = [model, *model.modules, *model.modules[2].modules]
    assert all(m.training is True for m in subs)
    model.eval()
    assert all(m.training is False for m in subs)
    model.train()
    assert all(m.training is True for m in subs)


def test_named_tensors_lists_a_shared_module_once_and_keeps_what_follows():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, shared, nn.Linear(2, 3))
    names = [n for n, _ in model.named_tensors()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_non_strict_load_skips_missing_keys_and_loads_the_rest():
    src, dst = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)), nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    state = src.state_dict()
    first_w = dst.modules[0].weight.numpy().copy()
    del state["0.weight"]
    dst.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(dst.modules[0].weight.numpy(), first_w)  # kept
    for name in ("0.bias", "1.weight", "1.bias"):
        np.testing.assert_array_equal(dict(dst.named_tensors())[name].numpy(), state[name])


def test_load_state_dict_reports_every_size_mismatch_and_loads_nothing():
    from needle.errors import StateDictError
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    before = {n: t.numpy().copy() for n, t in model.named_tensors()}
    state = model.state_dict()
    state["0.weight"] = np.zeros((5, 5), np.float32)
    state["1.weight"] = np.zeros((7,), np.float32)
    state["1.bias"] = np.full((1,), 9.0, np.float32)
    with pytest.raises(StateDictError) as err:
        model.load_state_dict(state)
    msg = str(err.value)
    assert "size mismatch for 0.weight" in msg and "size mismatch for 1.weight" in msg
    for n, t in model.named_tensors():
        np.testing.assert_array_equal(t.numpy(), before[n])


# -- contrib/nn/_checks.py: the loss inputs ------------------------------------

def test_softmax_loss_takes_class_ids_as_a_plain_list():
    # a list has no .shape: its length is the label count
    rng = np.random.default_rng(2)
    z = rng.standard_normal((3, 4)).astype(np.float32)
    y = [0, 3, 1]
    got = float(nn.SoftmaxLoss()(ndl.Tensor(z), y).numpy())
    np.testing.assert_allclose(got, _ce_reference(z, np.array(y)), rtol=1e-6)


def test_softmax_loss_rejects_labels_with_an_extra_axis_and_unsized_labels():
    from needle.errors import ArgumentTypeError, ShapeError
    z = ndl.Tensor(np.zeros((3, 4), np.float32))
    with pytest.raises(ShapeError) as err:
        nn.SoftmaxLoss()(z, np.zeros((3, 1), np.int64))
    assert str(err.value) == ("SoftmaxLoss: y has shape (3, 1), expected (3,): one class id per row "
                              "of logits (3, 4)")
    with pytest.raises(ArgumentTypeError, match=r"^SoftmaxLoss: y must hold one class id per row, got int 5$"):
        nn.SoftmaxLoss()(z, 5)


def test_softmax_loss_label_count_error_names_the_batch_size():
    from needle.errors import ShapeError
    z = ndl.Tensor(np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError) as err:
        nn.SoftmaxLoss()(z, [0, 1, 2])
    assert str(err.value) == ("SoftmaxLoss: y has shape (3,), expected (2,): one class id per row "
                              "of logits (2, 5)")


# -- contrib/nn/nn_activations.py: Softmax's axis ------------------------------

def _softmax_reference(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_softmax_defaults_to_the_last_axis_of_a_3d_input(device):
    x = np.random.default_rng(3).standard_normal((2, 3, 4)).astype(np.float32)
    m = nn.Softmax()
    assert m.dim == -1
    got = m(ndl.Tensor(x, device=device)).numpy()
    np.testing.assert_allclose(got, _softmax_reference(x, 2), rtol=1e-6, atol=1e-7)


def test_softmax_accepts_dim_minus_ndim_and_rejects_one_beyond(device):
    from needle.errors import ShapeError
    x = np.random.default_rng(4).standard_normal((2, 3, 4)).astype(np.float32)
    t = ndl.Tensor(x, device=device)
    np.testing.assert_allclose(nn.Softmax(dim=-3)(t).numpy(), _softmax_reference(x, 0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(nn.Softmax(dim=2)(t).numpy(), _softmax_reference(x, 2), rtol=1e-6, atol=1e-7)
    for dim in (-4, 3):
        with pytest.raises(ShapeError, match=rf"^Softmax\(dim={dim}\): input of shape \(2, 3, 4\) has no such axis$"):
            nn.Softmax(dim=dim)(t)


# -- contrib/nn/nn_basic.py: NumPy inputs to Module.__call__ -------------------

class _Probe(nn.Module):
    """One parameter; forward hands back what it was given."""

    def __init__(self, device, dtype):
        super().__init__()
        self.w = nn.Parameter(ndl.init.zeros(1, device=device, dtype=dtype))

    def forward(self, *args, **kwargs):
        return args, kwargs


def test_numpy_arguments_become_constant_tensors_like_the_parameters(device):
    x = np.arange(6.0).reshape(2, 3) / 7  # float64
    y = np.array([1.5, -2.0])
    t = ndl.Tensor(np.ones(2, np.float32), device=device)
    (gx, gy, gt, k), kw = _Probe(device, "float32")(x, y, t, 3)
    for got, want in ((gx, x), (gy, y)):
        assert type(got) is ndl.Tensor
        assert (got.device, got.dtype, got.requires_grad) == (device, "float32", False)
        np.testing.assert_array_equal(got.numpy(), want.astype(np.float32))
    assert gt is t and k == 3 and kw == {}


def test_numpy_input_to_a_linear_layer_meets_its_float32_weights(device):
    lin = nn.Linear(3, 2, device=device)
    x = np.random.default_rng(5).standard_normal((4, 3))  # float64
    out = lin(x)
    assert (out.device, out.dtype) == (device, "float32")
    w, b = lin.weight.numpy(), lin.bias.numpy()
    np.testing.assert_allclose(out.numpy(), x.astype(np.float32) @ w + b, rtol=1e-5, atol=1e-6)


def test_numpy_input_to_a_one_parameter_module(device):
    lin = nn.Linear(3, 2, bias=False, device=device, dtype="float64")
    x = np.random.default_rng(6).standard_normal((4, 3)).astype(np.float32)
    out = lin(x)
    assert (out.device, out.dtype) == (device, "float64")
    np.testing.assert_allclose(out.numpy(), x.astype(np.float64) @ lin.weight.numpy(), rtol=1e-12)


def test_a_module_without_parameters_keeps_the_tensor_constructor_rules():
    x = np.arange(4.0)
    got = nn.Identity()(x)
    assert type(got) is ndl.Tensor
    assert (got.device, got.dtype, got.requires_grad) == (ndl.default_device(), "float64", False)
    np.testing.assert_array_equal(got.numpy(), x)


def test_a_module_called_with_keywords_only(device):
    t = ndl.Tensor(np.ones(2, np.float32), device=device)
    args, kw = _Probe(device, "float32")(x=t)
    assert args == () and kw["x"] is t


# -- contrib/nn/nn_basic.py: load_state_dict's checks --------------------------

class _ItemsOnly:
    """Has items() but no __contains__: not a mapping load_state_dict can use."""

    def __init__(self, d):
        self._d = d

    def items(self):
        return self._d.items()


class _NotIterable(_ItemsOnly):
    """items(), membership and lookup, but no __iter__ (Python would iterate it by
    __getitem__(0), __getitem__(1), ...)."""

    def __contains__(self, key):
        return key in self._d

    def __getitem__(self, key):
        return self._d[key]


@pytest.mark.parametrize("bad, kind", [([("0.weight", np.zeros((2, 3)))], "list"),
                                       (_ItemsOnly({"0.weight": np.zeros((2, 3))}), "_ItemsOnly"),
                                       (_NotIterable({"0.weight": np.zeros((2, 3))}), "_NotIterable")])
@pytest.mark.parametrize("make", [lambda: nn.Linear(2, 3), lambda: nn.Sequential(nn.Linear(2, 3))],
                         ids=["Linear", "Sequential"])
def test_load_state_dict_wants_items_membership_and_iteration(bad, kind, make):
    from needle.errors import StateDictError
    model = make()
    with pytest.raises(StateDictError) as err:
        model.load_state_dict(bad)
    assert str(err.value) == f"{type(model).__name__}.load_state_dict: expected a mapping of name -> array, got {kind}"


def test_load_state_dict_rejects_non_string_keys_and_lists_the_first_five():
    from needle.errors import StateDictError
    model = nn.Linear(2, 3)
    before = {n: t.numpy().copy() for n, t in model.named_tensors()}
    state = {k: np.ones(v.shape, np.float32) for k, v in model.state_dict().items()}
    for strict in (True, False):
        for extra, listed in (([7], "[7]"), (list(range(6)), "[0, 1, 2, 3, 4]")):
            with pytest.raises(StateDictError) as err:
                model.load_state_dict({**state, **{k: np.zeros(1) for k in extra}}, strict=strict)
            assert str(err.value) == ("Error(s) in Linear.load_state_dict:\n\t"
                                      f"Non-string key(s) in state_dict: {listed}.")
    for n, t in model.named_tensors():
        np.testing.assert_array_equal(t.numpy(), before[n])


def test_every_nn_class_annotation_resolves():
    # the annotations are strings (from __future__ import annotations): tools that
    # read them (typing.get_type_hints, documentation generators) evaluate them
    import inspect
    import typing
    classes = [c for c in vars(nn).values() if inspect.isclass(c) and c.__module__.startswith("needle")]
    assert nn.Module in classes and nn.Sequential in classes
    for cls in classes:
        typing.get_type_hints(cls)
        for fn in (v for v in vars(cls).values() if inspect.isfunction(v)):
            typing.get_type_hints(fn)
    assert typing.get_type_hints(nn.Module)["_items_attr"] == (str | None)


def test_load_state_dict_reports_every_invalid_value_and_the_size_mismatch_after_them():
    from needle.errors import StateDictError
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    before = {n: t.numpy().copy() for n, t in model.named_tensors()}
    state = model.state_dict()
    state["0.weight"] = np.array([["a", "b", "c"]] * 2)
    state["0.bias"] = object()
    state["1.weight"] = np.zeros((1, 3), np.float32)
    with pytest.raises(StateDictError) as err:
        model.load_state_dict(state)
    assert str(err.value) == (
        "Error(s) in Sequential.load_state_dict:\n"
        "\tinvalid value for 0.weight: dtype <U1 is not numeric (got ndarray).\n"
        "\tinvalid value for 0.bias: dtype object is not numeric (got object).\n"
        "\tsize mismatch for 1.weight: copying a param with shape (1, 3) from checkpoint, "
        "the shape in current model is (3, 1).")
    for n, t in model.named_tensors():
        np.testing.assert_array_equal(t.numpy(), before[n])


def _lazy_checkpoint(arrays):
    """A read-only Mapping that counts each value read (as np.load's NpzFile
    decompresses an array only when it is read)."""
    from collections.abc import Mapping

    class Lazy(Mapping):
        reads = {}

        def __getitem__(self, key):
            value = arrays[key]
            self.reads[key] = self.reads.get(key, 0) + 1
            return value

        def __contains__(self, key):  # as NpzFile's: no read (Mapping's default reads the value)
            return key in arrays

        def __iter__(self):
            return iter(arrays)

        def __len__(self):
            return len(arrays)

    return Lazy()


@pytest.mark.parametrize("make", [lambda: nn.Linear(2, 3), lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU())],
                         ids=["Linear", "Sequential"])
def test_load_state_dict_reads_only_the_values_it_loads(make):
    model = make()
    arrays = {name: np.full(t.shape, i + 1.0, np.float32) for i, (name, t) in enumerate(model.named_tensors())}
    ckpt = _lazy_checkpoint({**arrays, "unused": np.zeros(3)})
    model.load_state_dict(ckpt, strict=False)
    assert ckpt.reads == {name: 1 for name in arrays}
    for name, t in model.named_tensors():
        np.testing.assert_array_equal(t.numpy(), arrays[name])


def test_load_state_dict_takes_an_npz_file(tmp_path):
    src, dst = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)), nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    src.modules[1].running_mean.data = ndl.Tensor(np.arange(3.0, dtype=np.float32))
    np.savez(tmp_path / "ckpt.npz", **src.state_dict())
    with np.load(tmp_path / "ckpt.npz") as ckpt:
        dst.load_state_dict(ckpt)
    for (name, a), (_, b) in zip(src.named_tensors(), dst.named_tensors()):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=name)


# -- contrib/nn/nn_basic.py: the PyTorch-style walkers -------------------------

class _Heads(nn.Module):
    """Sub-modules in a plain dict and a plain list attribute (not containers)."""

    def __init__(self):
        super().__init__()
        self.heads = {"cls": nn.Linear(4, 3), "box": nn.ReLU(), "scale": 2.0}
        self.blocks = [nn.Tanh(), "not a module", nn.Sigmoid()]


def test_named_children_names_modules_in_plain_dict_and_list_attributes():
    m = _Heads()
    named = list(m.named_children())
    assert [n for n, _ in named] == ["heads.cls", "heads.box", "blocks.0", "blocks.2"]
    assert [c for _, c in named] == [m.heads["cls"], m.heads["box"], m.blocks[0], m.blocks[2]]
    assert [n for n, _ in m.named_modules()] == ["", "heads.cls", "heads.box", "blocks.0", "blocks.2"]
    assert [n for n, _ in m.named_parameters()] == ["heads.cls.weight", "heads.cls.bias"]


# -- contrib/nn/nn_basic.py: BatchNorm1d's two training routes ------------------

def _bn_step_reference(x, w, b, eps, g):
    """Forward and the gradients of sum(out * g), in float64 (biased variance)."""
    mean, var = x.mean(0), x.var(0)
    xhat = (x - mean) / np.sqrt(var + eps)
    dx = w / np.sqrt(var + eps) * (g - g.mean(0) - xhat * (g * xhat).mean(0))
    return xhat * w + b, mean, var, dx, (g * xhat).sum(0), g.sum(0)


@pytest.mark.parametrize("route", ["fused", "float64 input", "lazy mode"])
def test_batchnorm1d_training_routes_agree_with_the_formula(device, route, monkeypatch):
    # eager float32 takes the fused node; a float64 input into float32 parameters,
    # or lazy mode, takes the composition; both must give the course's values
    from needle import autograd, ops
    made = []

    class Counted(ops.BatchNormTrain):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ops, "BatchNormTrain", Counted)
    if route == "lazy mode":
        monkeypatch.setattr(autograd, "LAZY_MODE", True)
    dtype = "float64" if route == "float64 input" else "float32"
    rng = np.random.default_rng(8)
    w, b, eps, m = np.array([1.5, -0.5, 2.0]), np.array([0.3, -1.0, 0.25]), 0.1, 0.3
    bn = nn.BatchNorm1d(3, eps=eps, momentum=m, device=device)
    bn.weight.data = ndl.Tensor(w, device=device)
    bn.bias.data = ndl.Tensor(b, device=device)
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(2):  # the second step starts from non-trivial running statistics
        x = rng.standard_normal((6, 3)) * [1.0, 3.0, 0.5] + [0.2, -1.0, 4.0]
        g = rng.standard_normal((6, 3))
        xt = ndl.Tensor(x.astype(dtype), device=device, dtype=dtype)
        out = bn(xt)
        (out * ndl.Tensor(g.astype(dtype), device=device, dtype=dtype)).sum().backward()
        want, mean, var, dx, dw, db = _bn_step_reference(x.astype(dtype).astype(np.float64), w, b, eps, g)
        assert out.dtype == dtype
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.weight.grad.numpy(), dw, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.bias.grad.numpy(), db, rtol=1e-4, atol=1e-5)
        rm, rv = (1 - m) * rm + m * mean, (1 - m) * rv + m * var
        np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.numpy(), rv, rtol=1e-5, atol=1e-6)
        assert bn.running_mean.dtype == bn.running_var.dtype == "float32"
    assert len(made) == (2 if route == "fused" else 0)
    bn.eval()
    x = rng.standard_normal((4, 3))
    got = bn(ndl.Tensor(x.astype(np.float32), device=device)).numpy()
    np.testing.assert_allclose(got, (x - rm) / np.sqrt(rv + eps) * w + b, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("cls", ["BatchNorm1d", "BatchNorm2d"])
def test_batchnorm_dim_bounds_and_message(cls):
    from needle.errors import HyperParameterError
    bn = getattr(nn, cls)(0)
    assert bn.weight.shape == (0,) and bn.running_var.shape == (0,)
    with pytest.raises(HyperParameterError) as err:
        getattr(nn, cls)(-1)
    assert str(err.value) == f"{cls}: dim must be an integer >= 0, got -1"


def test_batchnorm1d_of_zero_features():
    out = nn.BatchNorm1d(0)(ndl.Tensor(np.zeros((3, 0), np.float32)))
    assert out.shape == (3, 0)


# -- contrib/nn/nn_basic.py: zero-width layers, defaults, Module.to, repr --------

def test_linear_allows_zero_features_and_refuses_negative_ones():
    from needle.errors import HyperParameterError
    lin = nn.Linear(0, 3)
    out = lin(ndl.Tensor(np.zeros((2, 0), np.float32)))
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to(lin.bias.numpy(), (2, 3)))
    assert nn.Linear(3, 0)(ndl.Tensor(np.ones((2, 3), np.float32))).shape == (2, 0)
    for args, name in (((-1, 3), "in_features"), ((3, -1), "out_features")):
        with pytest.raises(HyperParameterError, match=rf"^Linear: {name} must be an integer >= 0, got -1$"):
            nn.Linear(*args)


def test_layernorm1d_zero_width_default_eps_and_shape_errors():
    from needle.errors import HyperParameterError, ShapeError
    assert nn.LayerNorm1d(0)(ndl.Tensor(np.zeros((3, 0), np.float32))).shape == (3, 0)
    with pytest.raises(HyperParameterError, match=r"^LayerNorm1d: dim must be an integer >= 0, got -1$"):
        nn.LayerNorm1d(-1)
    # rows whose variance is of the order of eps: the default eps (1e-5) shows in the values
    x = np.array([[0.0, 0.004, -0.004, 0.002], [1.0, 1.003, 0.997, 1.0]])
    ln = nn.LayerNorm1d(4)
    assert ln.eps == 1e-5
    got = ln(ndl.Tensor(x.astype(np.float32))).numpy()
    want = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    for shape in ((), (2, 3)):
        with pytest.raises(ShapeError) as err:
            ln(ndl.Tensor(np.zeros(shape, np.float32)))
        assert str(err.value) == f"LayerNorm1d(4): last axis of the input must be 4, got shape {shape}"


def test_dropout_defaults_to_one_half_and_p_one_zeroes_everything():
    np.random.seed(3)
    x = np.random.randn(20, 10).astype(np.float32) + 5.0  # no zeros of its own
    d = nn.Dropout()
    assert d.p == 0.5
    np.random.seed(4)
    out = d(ndl.Tensor(x)).numpy()
    np.random.seed(4)
    keep = np.random.rand(20, 10) <= 0.5
    np.testing.assert_allclose(out, x * keep * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(nn.Dropout(1.0)(ndl.Tensor(x)).numpy(), np.zeros_like(x))


def test_to_updates_remembered_device_and_dtype_only_where_a_module_has_them():
    target = ndl.cpu() if ndl.default_device() != ndl.cpu() else ndl.cpu_numpy()
    rnn = nn.RNNCell(3, 4)
    lin = nn.Linear(4, 3)
    net = nn.Sequential(lin, rnn)
    assert (rnn.device, rnn.dtype) == (None, "float32")
    net.to(target)
    assert (rnn.device, rnn.dtype) == (target, "float32")
    assert "device" not in lin.__dict__ and "device" not in net.__dict__
    net.to(dtype="float64")
    assert (rnn.device, rnn.dtype) == (target, "float64")
    assert "dtype" not in lin.__dict__ and "dtype" not in net.__dict__
    assert all(t.device == target and t.dtype == "float64" for _, t in net.named_tensors())
    # a move alone keeps the dtype (float64 here), and a cast alone keeps the device
    net.to(ndl.default_device())
    assert all(t.device == ndl.default_device() and t.dtype == "float64" for _, t in net.named_tensors())
    net.to(dtype="float32")
    assert all(t.device == ndl.default_device() and t.dtype == "float32" for _, t in net.named_tensors())


def test_repr_names_modules_in_plain_dict_and_list_attributes():
    m = _Heads()
    m.blocks[0] = nn.Sequential(nn.Tanh())
    assert repr(m) == ("_Heads(\n"
                       "  (heads.cls): Linear(in_features=4, out_features=3, bias=True)\n"
                       "  (heads.box): ReLU()\n"
                       "  (blocks.0): Sequential(\n"
                       "    (0): Tanh()\n"
                       "  )\n"
                       "  (blocks.2): Sigmoid()\n"
                       ")")


# -- contrib/nn/nn_basic.py: SoftmaxLoss's labels ------------------------------

def test_softmax_loss_moves_labels_from_another_device():
    # the two CPU backends are two devices (the op itself refuses a device mismatch)
    rng = np.random.default_rng(9)
    z = rng.standard_normal((4, 3)).astype(np.float32)
    y = np.array([2, 0, 1, 2])
    for zdev, ydev in ((ndl.cpu(), ndl.cpu_numpy()), (ndl.cpu_numpy(), ndl.cpu())):
        got = nn.SoftmaxLoss()(ndl.Tensor(z, device=zdev), ndl.Tensor(y, device=ydev, requires_grad=False))
        assert got.device == zdev
        np.testing.assert_allclose(float(got.numpy()), _ce_reference(z, y), rtol=1e-6)


def test_softmax_loss_of_constant_logits_is_a_constant():
    z = ndl.Tensor(np.zeros((3, 4), np.float32), requires_grad=False)
    for y in ([0, 1, 3], np.array([0, 1, 3]), ndl.Tensor(np.array([0, 1, 3]), requires_grad=False)):
        loss = nn.SoftmaxLoss()(z, y)
        assert loss.requires_grad is False
        np.testing.assert_allclose(float(loss.numpy()), np.log(4.0), rtol=1e-6)


def test_softmax_loss_names_non_numeric_labels():
    from needle.errors import ArgumentTypeError
    z = ndl.Tensor(np.zeros((3, 4), np.float32))
    with pytest.raises(ArgumentTypeError, match=r"^softmax_cross_entropy: labels must be class indices "
                                                r"\(a Tensor or numbers\), got ndarray$"):
        nn.SoftmaxLoss()(z, np.array(["a", "b", "c"]))


# -- contrib/nn/nn_containers.py -----------------------------------------------

def test_module_list_indexing_bounds_and_assignment():
    a, b, c = nn.Linear(2, 2), nn.ReLU(), nn.Tanh()
    layers = nn.ModuleList([a, b])
    assert layers[-2] is a and layers[-1] is b and layers[1] is b
    for bad in (-3, 2):
        with pytest.raises(IndexError, match=rf"^ModuleList: index {bad} is out of range for a list of 2 modules$"):
            layers[bad]
    layers[-2] = c
    layers[1] = a
    assert list(layers) == [c, a]
    assert [n for n, _ in layers.named_parameters()] == ["1.weight", "1.bias"]
    with pytest.raises(TypeError, match=r"^ModuleList.__setitem__: items must be nn.Module instances, got int$"):
        layers[0] = 3


@pytest.mark.parametrize("key", [1, "", "a.b"])
def test_module_dict_refuses_keys_that_are_not_plain_names(key):
    heads = nn.ModuleDict()
    with pytest.raises(KeyError) as err:
        heads[key] = nn.ReLU()
    assert err.value.args[0] == f"ModuleDict: keys must be non-empty strings without '.', got {key!r}"
    assert len(heads) == 0


# -- contrib/nn/nn_losses.py ---------------------------------------------------

def test_cross_entropy_with_unnormalised_target_weights(device):
    # -sum_c p_c log_softmax(z)_c for any non-negative p (PyTorch does not normalise the rows)
    rng = np.random.default_rng(10)
    z = rng.standard_normal((4, 3)) * 2
    p = rng.uniform(0.0, 2.0, size=(4, 3))
    logp = z - (z.max(1, keepdims=True) + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)))
    want = -(p * logp).sum(1)
    for reduction, ref in (("none", want), ("sum", want.sum()), ("mean", want.mean())):
        got = nn.CrossEntropyLoss(reduction=reduction)(ndl.Tensor(z, device=device, dtype="float64"), p)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_cross_entropy_names_the_first_five_fractional_targets():
    from needle.nn import TargetError
    z = ndl.Tensor(np.zeros((8, 4), np.float32))
    y = np.array([0.5, 1.0, 1.5, 2.5, 0.25, 3.5, 0.75, 2.0])
    with pytest.raises(TargetError) as err:
        nn.CrossEntropyLoss()(z, y)
    assert str(err.value) == ("CrossEntropyLoss: class-index targets must be integers, got "
                              "[0.5  1.5  2.5  0.25 3.5 ]")


def test_losses_of_constant_inputs_are_constants():
    z = ndl.Tensor(np.zeros((3, 4), np.float32), requires_grad=False)
    for target in ([0, 1, 3], np.full((3, 4), 0.25), [0, -100, 3]):
        loss = nn.CrossEntropyLoss()(z, target)
        assert loss.requires_grad is False
        np.testing.assert_allclose(float(loss.numpy()), np.log(4.0), rtol=1e-6)
    loss = nn.MSELoss()(z, np.ones((3, 4)))
    assert loss.requires_grad is False and float(loss.numpy()) == 1.0


def test_mse_loss_lets_gradient_reach_a_tensor_target_and_takes_a_list(device):
    rng = np.random.default_rng(11)
    x, t = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    xt = ndl.Tensor(x, device=device, dtype="float64")
    tt = ndl.Tensor(t, device=device, dtype="float64")
    loss = nn.MSELoss()(xt, tt)
    loss.backward()
    np.testing.assert_allclose(float(loss.numpy()), ((x - t) ** 2).mean(), rtol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), 2 * (x - t) / 6, rtol=1e-12)
    np.testing.assert_allclose(tt.grad.numpy(), -2 * (x - t) / 6, rtol=1e-12)
    got = nn.MSELoss(reduction="sum")(ndl.Tensor(x, device=device, dtype="float64"), t.tolist())
    np.testing.assert_allclose(float(got.numpy()), ((x - t) ** 2).sum(), rtol=1e-12)


def test_cross_entropy_range_message_and_ignored_rows_of_a_single_class():
    from needle.nn import TargetError
    z = ndl.Tensor(np.zeros((8, 4), np.float32))
    with pytest.raises(TargetError) as err:
        nn.CrossEntropyLoss()(z, np.array([0, 1, 2, 3, 4, 0, 0, 0]))
    assert str(err.value) == "CrossEntropyLoss: target 4 is out of range for 4 classes (valid: 0..3, or ignore_index=-100)"
    # one class: every kept row's loss is 0, and an ignored row must not pick a class that is not there
    z1 = ndl.Tensor(np.array([[0.3], [1.2], [-0.5]], np.float32))
    np.testing.assert_array_equal(nn.CrossEntropyLoss(reduction="none")(z1, [0, -100, 0]).numpy(), [0.0, 0.0, 0.0])
    assert float(nn.CrossEntropyLoss()(z1, [0, -100, 0]).numpy()) == 0.0


def test_mse_loss_mean_of_one_element():
    got = nn.MSELoss()(ndl.Tensor(np.array([[3.0]], np.float32)), np.array([[1.0]]))
    assert float(got.numpy()) == 4.0


# -- contrib/nn/utils.py -------------------------------------------------------

def test_clip_grad_norm_nonfinite_handling_and_constant_result():
    p = nn.Parameter(ndl.Tensor(np.ones(3, np.float32)))
    p.grad = ndl.Tensor(np.array([3.0, 4.0, 0.0], np.float32))
    total = nn.utils.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)  # finite: no error
    assert (float(total.numpy()), total.dtype, total.requires_grad) == (5.0, "float32", False)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8, 0.0], rtol=1e-5)
    p.grad = ndl.Tensor(np.array([np.nan, 1.0, 1.0], np.float32))
    assert np.isnan(float(nn.utils.clip_grad_norm_([p], 1.0).numpy()))  # by default a nan norm is returned
    p.grad = ndl.Tensor(np.array([np.inf, 1.0, 1.0], np.float32))
    with pytest.raises(RuntimeError, match=r"^clip_grad_norm_: the total norm of the gradients is inf, not finite$"):
        nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


# -- contrib/nn/nn_conv.py -----------------------------------------------------

def test_conv_defaults_one_tuples_and_remembered_device(device):
    from needle.errors import HyperParameterError
    conv = nn.Conv(2, 4, kernel_size=(3,), stride=(1,), device=device, dtype="float64")
    assert (conv.kernel_size, conv.stride, conv.padding) == (3, 1, 1)
    assert (conv.device, conv.dtype) == (device, "float64")
    default = nn.Conv(2, 4, 3, device=device)
    assert default.stride == 1
    assert default(ndl.Tensor(np.zeros((1, 2, 5, 6), np.float32), device=device)).shape == (1, 4, 5, 6)
    for args, name in (((-1, 4, 3), "in_channels"), ((2, -1, 3), "out_channels")):
        with pytest.raises(HyperParameterError, match=rf"^Conv: {name} must be an integer >= 0, got -1$"):
            nn.Conv(*args)


def test_conv_with_zero_channels(device):
    empty_in = nn.Conv(0, 4, 3, device=device)
    out = empty_in(ndl.Tensor(np.zeros((2, 0, 5, 5), np.float32), device=device))
    np.testing.assert_array_equal(out.numpy(), np.zeros((2, 4, 5, 5)))  # the bias bound is 0 at fan_in 0
    empty_out = nn.Conv(2, 0, 3, device=device)
    assert empty_out(ndl.Tensor(np.ones((2, 2, 5, 5), np.float32), device=device)).shape == (2, 0, 5, 5)


def test_conv_channel_mismatch_message():
    from needle.errors import ShapeError
    with pytest.raises(ShapeError) as err:
        nn.Conv(3, 2, 3)(ndl.Tensor(np.zeros((2, 4, 5, 6), np.float32)))
    assert str(err.value) == "Conv: input shape (2, 4, 5, 6) has 4 channels on axis 1 (NCHW), the module was built for 3"


@pytest.mark.parametrize("cls", [nn.MaxPool2d, nn.AvgPool2d])
def test_pooling_windows_square_tuples(cls):
    from needle.errors import ShapeError
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    want = cls(2)(ndl.Tensor(x)).numpy()
    for window in ((2,), (2, 2), [2, 2]):
        pool = cls(window, stride=window)
        assert (pool.kernel_size, pool.stride) == (2, 2)
        np.testing.assert_array_equal(pool(ndl.Tensor(x)).numpy(), want)
    for window in ((), (2, 3), (2, 2, 3)):
        with pytest.raises(ShapeError) as err:
            cls(window)
        assert str(err.value) == (f"{cls.__name__}: kernel_size must be one positive int or equal ones "
                                  f"(square windows), got {window!r}")


def test_conv_repr():
    assert repr(nn.Conv(2, 4, 3)) == "Conv(2, 4, kernel_size=3, stride=1, bias=True)"
    assert repr(nn.Conv(2, 4, 3, stride=2, bias=False)) == "Conv(2, 4, kernel_size=3, stride=2, bias=False)"
    assert repr(nn.Conv2d(2, 4, 3, padding=1, bias=False)) == \
        "Conv2d(2, 4, kernel_size=3, stride=1, padding=1, bias=False)"


def test_batchnorm2d_channel_mismatch_message():
    from needle.errors import ShapeError
    with pytest.raises(ShapeError) as err:
        nn.BatchNorm2d(3)(ndl.Tensor(np.zeros((2, 4, 5, 6), np.float32)))
    assert str(err.value) == "BatchNorm2d(3): input shape (2, 4, 5, 6) has 4 channels on axis 1 (NCHW), expected 3"


@pytest.mark.parametrize("cls", [nn.MaxPool2d, nn.AvgPool2d])
def test_pooling_window_bounds_and_messages(cls):
    from needle.errors import HyperParameterError, ShapeError
    name = cls.__name__
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(cls(1)(ndl.Tensor(x)).numpy(), x)  # a 1x1 window is the identity
    with pytest.raises(HyperParameterError, match=rf"^{name}: kernel_size must be an integer >= 1, got 0$"):
        cls(0)
    for shape in ((1, 1, 2, 5), (1, 1, 5, 2)):
        with pytest.raises(ShapeError) as err:
            cls(3)(ndl.Tensor(np.zeros(shape, np.float32)))
        assert str(err.value) == f"{name}: input shape {shape} is smaller than the 3x3 window"
    with pytest.raises(ShapeError) as err:
        cls(2)(ndl.Tensor(np.zeros((2, 4, 4), np.float32)))
    assert str(err.value) == f"{name}: expected an NCHW input of 4 dimensions, got shape (2, 4, 4)"


@pytest.mark.parametrize("cls, reduce", [(nn.MaxPool2d, np.max), (nn.AvgPool2d, np.mean)])
def test_pooling_window_as_large_as_the_input(cls, reduce):
    x = np.random.default_rng(12).standard_normal((2, 3, 3, 3)).astype(np.float32)
    got = cls(3)(ndl.Tensor(x)).numpy()
    np.testing.assert_allclose(got, reduce(x, axis=(2, 3), keepdims=True), rtol=1e-6)


def test_conv2d_arguments():
    conv = nn.Conv2d(2, 4, 3, dilation=(1, 1), groups=[1, 1], padding=(2,))
    assert (conv.stride, conv.padding) == (1, 2)
    for k in (3, 5):
        assert nn.Conv2d(2, 4, k, padding="same").padding == k // 2
    with pytest.raises(ValueError, match=r"^Conv2d: padding='same' needs stride 1 and an odd kernel_size, "
                                         r"got stride=1, kernel_size=4$"):
        nn.Conv2d(2, 4, 4, padding="same")
    with pytest.raises(ValueError, match=r"^Conv2d: only dilation=1 is supported, got \(1, 2\)$"):
        nn.Conv2d(2, 4, 3, dilation=(1, 2))
    with pytest.raises(ValueError, match=r"^Conv2d: padding must be a non-negative int, an equal pair, "
                                         r"'same' or 'valid', got True$"):
        nn.Conv2d(2, 4, 3, padding=True)


# --- nn_sequence (fourth session's mutation run) -------------------------------------------

def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("bad", ["three", "tensor"])
def test_lstm_state_must_be_a_pair(device, bad):
    lstm = nn.LSTM(3, 4, device=device)
    x = ndl.Tensor(np.zeros((2, 1, 3), np.float32), device=device)
    z = ndl.Tensor(np.zeros((1, 1, 4), np.float32), device=device)
    h = (z, z, z) if bad == "three" else ndl.Tensor(np.zeros((2, 1, 1, 4), np.float32), device=device)
    with pytest.raises(ndl.errors.ArgumentTypeError, match=r"LSTM: h must be None or a pair"):
        lstm(x, h)


def test_sequence_shape_errors_show_free_sizes_as_stars(device):
    lstm = nn.LSTM(3, 4, device=device)
    with pytest.raises(ndl.errors.ShapeError, match=r"LSTM: input X has shape \(5, 2, 7\), expected \(\*, \*, 3\)"):
        lstm(ndl.Tensor(np.zeros((5, 2, 7), np.float32), device=device))


@pytest.mark.parametrize("module", ["RNN", "LSTM"])
def test_an_empty_sequence_is_refused_by_name(device, module):
    # as PyTorch: T = 0 has no last state (it used to fail inside ops.stack)
    m = getattr(nn, module)(3, 4, device=device)
    with pytest.raises(ndl.errors.ShapeError, match=rf"{module}: input X has no time steps"):
        m(ndl.Tensor(np.zeros((0, 2, 3), np.float32), device=device))


@pytest.mark.parametrize("dropped", ["bias_ih", "bias_hh"])
def test_lstm_cell_with_one_bias_removed_keeps_the_other(device, dropped):
    # torch-style surgery: setting one bias to None must not drop both
    rng = np.random.default_rng(3)
    cell = nn.LSTMCell(3, 2, device=device, dtype="float64")
    setattr(cell, dropped, None)
    kept = cell.bias_hh if dropped == "bias_ih" else cell.bias_ih
    x = rng.standard_normal((4, 3))
    h0, c0 = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    h, c = cell(ndl.Tensor(x, device=device, dtype="float64"),
                (ndl.Tensor(h0, device=device, dtype="float64"), ndl.Tensor(c0, device=device, dtype="float64")))
    z = x @ cell.W_ih.numpy() + h0 @ cell.W_hh.numpy() + kept.numpy().reshape(1, -1)
    i, f, g, o = np.split(z, 4, axis=1)
    c_ref = _sigmoid(f) * c0 + _sigmoid(i) * np.tanh(g)
    np.testing.assert_allclose(c.numpy(), c_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h.numpy(), _sigmoid(o) * np.tanh(c_ref), rtol=1e-10, atol=1e-12)


def test_rnn_defaults_one_layer_with_biases(device):
    rnn = nn.RNN(3, 4, device=device)
    assert rnn.num_layers == 1 and len(rnn.rnn_cells) == 1
    assert rnn.rnn_cells[0].bias_ih is not None and rnn.rnn_cells[0].bias_hh is not None
    out, h_n = rnn(ndl.Tensor(np.ones((2, 5, 3), np.float32), device=device))
    assert out.shape == (2, 5, 4) and h_n.shape == (1, 5, 4)


def test_embedding_of_no_ids_and_empty_tables(device):
    emb = nn.Embedding(5, 3, device=device)
    out = emb(ndl.Tensor(np.zeros((0, 2), np.float32), device=device))
    assert out.shape == (0, 2, 3)
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy(), np.zeros((5, 3), np.float32))
    # as PyTorch, a table with no rows or no columns is valid
    assert nn.Embedding(0, 3, device=device).weight.shape == (0, 3)
    wide0 = nn.Embedding(4, 0, device=device)
    assert wide0(ndl.Tensor(np.array([[1, 3]], np.float32), device=device)).shape == (1, 2, 0)


# --- nn_transformer -------------------------------------------------------------------------

def _attention_reference(q, k, v, causal):
    logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        tq, tk = logits.shape[-2:]
        logits = logits + np.triu(np.full((tq, tk), -np.inf), tk - tq + 1)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p @ v


def test_multi_head_attention_is_not_causal_by_default(device):
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((1, 2, 4, 3)) for _ in range(3))
    mha = nn.MultiHeadAttention(device=device, dtype="float64")
    out, _ = mha(*(ndl.Tensor(t, device=device, dtype="float64") for t in (q, k, v)))
    np.testing.assert_allclose(out.numpy(), _attention_reference(q, k, v, causal=False), rtol=1e-10, atol=1e-12)


def test_multi_head_attention_checks_k_width_alone(device):
    mha = nn.MultiHeadAttention(device=device)
    q = ndl.Tensor(np.zeros((1, 2, 4, 3), np.float32), device=device)
    k = ndl.Tensor(np.zeros((1, 2, 4, 5), np.float32), device=device)  # B and H agree, D does not
    with pytest.raises(ndl.errors.ShapeError, match="q and k must share D"):
        mha(q, k, k)


def test_multi_head_attention_softmax_is_for_4d_logits(device):
    mha = nn.MultiHeadAttention(device=device)
    with pytest.raises(ndl.errors.ShapeError, match=r"softmax: logit must be \(B, H, Tq, Tk\)"):
        mha.softmax(ndl.Tensor(np.zeros((2, 3, 4), np.float32), device=device))


def test_attention_layer_defaults_causal_without_dropout(device):
    rng = np.random.default_rng(6)
    layer = nn.AttentionLayer(4, 2, 3, device=device, dtype="float64")
    layer.train()  # dropout 0 by default: training mode is deterministic too
    x = rng.standard_normal((1, 5, 4))
    y1 = layer(ndl.Tensor(x, device=device, dtype="float64")).numpy()
    np.testing.assert_array_equal(layer(ndl.Tensor(x, device=device, dtype="float64")).numpy(), y1)
    x2 = x.copy()
    x2[:, 3:] += 3 * rng.standard_normal((1, 2, 4))  # the future (not a constant: pre-norm removes it)
    y2 = layer(ndl.Tensor(x2, device=device, dtype="float64")).numpy()
    np.testing.assert_allclose(y2[:, :3], y1[:, :3], rtol=1e-12, atol=1e-12)
    assert not np.allclose(y2[:, 3:], y1[:, 3:])


def test_attention_layer_accepts_unit_sizes(device):
    layer = nn.AttentionLayer(1, 1, 1, k_features=1, v_features=1, out_features=1, device=device)
    out = layer(ndl.Tensor(np.ones((2, 3, 1), np.float32), device=device))
    assert out.shape == (2, 3, 1)


# --- nn_transformer survivors (fifth session) -----------------------------------------------

def test_attention_layer_remembers_out_features(device):
    assert nn.AttentionLayer(4, 2, 3, device=device).out_features == 4  # defaults to q_features
    layer = nn.AttentionLayer(4, 2, 3, out_features=7, device=device)
    assert layer.out_features == 7
    assert layer(ndl.Tensor(np.ones((1, 2, 4), np.float32), device=device)).shape == (1, 2, 7)


@pytest.mark.parametrize("what, shape, expected", [
    ("q", (5,), 4),          # 1-D: the typed error, not an IndexError
    ("q", (2, 5), 4),        # 2-D
    ("q", (1, 5, 3), 4),     # 3-D of the wrong width
    ("k", (1, 5, 4), 6),     # k's own width (k_features=6)
])
def test_attention_layer_input_shape_errors(device, what, shape, expected):
    layer = nn.AttentionLayer(4, 2, 3, k_features=6, device=device)
    good = ndl.Tensor(np.ones((1, 5, 4), np.float32), device=device)
    bad = ndl.Tensor(np.ones(shape, np.float32), device=device)
    args = (bad,) if what == "q" else (good, bad, good)
    with pytest.raises(ndl.errors.ShapeError,
                       match=rf"AttentionLayer: {what} has shape {re.escape(str(shape))}, "
                             rf"expected \(B, T, {expected}\)"):
        layer(*args)


def _future_changes(x, axis, rng, start=3):
    x2 = x.copy()
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(start, None)
    x2[tuple(idx)] += 3 * rng.standard_normal(x2[tuple(idx)].shape)
    return x2


def test_transformer_layer_defaults_causal_without_dropout(device):
    rng = np.random.default_rng(11)
    layer = nn.TransformerLayer(4, 2, 3, 5, device=device, dtype="float64")
    x = rng.standard_normal((2, 5, 4))
    run = lambda a: layer(ndl.Tensor(a, device=device, dtype="float64")).numpy()
    layer.train()  # dropout 0 by default: training mode computes what eval mode does
    y_train = run(x)
    layer.eval()
    y = run(x)
    np.testing.assert_allclose(y_train, y, rtol=1e-12, atol=1e-12)
    assert not np.allclose(y, x)  # and the block does something
    # causal by default: a change in the future leaves the past alone
    y2 = run(_future_changes(x, 1, rng))
    np.testing.assert_allclose(y2[:, :3], y[:, :3], rtol=1e-12, atol=1e-12)
    assert not np.allclose(y2[:, 3:], y[:, 3:])


def test_transformer_layer_accepts_unit_sizes_and_refuses_zero(device):
    layer = nn.TransformerLayer(1, 1, 1, 1, device=device)
    assert layer(ndl.Tensor(np.ones((2, 3, 1), np.float32), device=device)).shape == (2, 3, 1)
    for i in range(4):
        sizes = [1, 1, 1, 1]
        sizes[i] = 0
        with pytest.raises(ndl.errors.HyperParameterError, match="TransformerLayer: .* must be an integer >= 1"):
            nn.TransformerLayer(*sizes, device=device)


def test_transformer_default_sizes_and_sequence_len(device):
    model = nn.Transformer(4, 5, 1, device=device)  # API: num_head=8, dim_head=32, sequence_len=2048
    attn = model.layers[0].attn_layer
    assert (attn.num_head, attn.dim_head) == (8, 32)
    assert attn.q_projection.weight.shape == (4, 256) and attn.out_projection.weight.shape == (256, 4)
    assert model.sequence_len == 2048 and model.positional_embedding.weight.shape == (2048, 4)
    assert model.batch_first is False
    with pytest.raises(ndl.errors.ShapeError, match="sequence length 2049 exceeds sequence_len 2048"):
        model(ndl.Tensor(np.zeros((2049, 1, 4), np.float32), device=device))


def test_transformer_defaults_causal_without_dropout(device):
    rng = np.random.default_rng(12)
    model = nn.Transformer(4, 5, 2, num_head=2, dim_head=3, sequence_len=6, device=device, dtype="float64")
    x = rng.standard_normal((5, 2, 4))  # (T, B, E)
    run = lambda a: model(ndl.Tensor(a, device=device, dtype="float64"))[0].numpy()
    model.train()  # dropout 0 by default: training mode computes what eval mode does
    y_train = run(x)
    model.eval()
    y = run(x)
    np.testing.assert_allclose(y_train, y, rtol=1e-12, atol=1e-12)
    pos = model.positional_embedding.weight.numpy()[:5, None, :]
    assert not np.allclose(y, x + pos)  # the layers do something
    # causal by default: a change at time steps 3.. leaves steps 0..2 alone
    y2 = run(_future_changes(x, 0, rng))
    np.testing.assert_allclose(y2[:3], y[:3], rtol=1e-12, atol=1e-12)
    assert not np.allclose(y2[3:], y[3:])


def test_transformer_batch_first_argument(device):
    rng = np.random.default_rng(13)
    model = nn.Transformer(4, 5, 1, num_head=2, dim_head=3, sequence_len=3, batch_first=True,
                           device=device, dtype="float64")
    model.eval()
    assert model.batch_first is True
    x = rng.standard_normal((2, 3, 4))  # (B, T, E) with B != T
    out, h = model(ndl.Tensor(x, device=device, dtype="float64"))
    assert out.shape == h.shape == (2, 3, 4)
    model.batch_first = False  # the same model on the (T, B, E) layout
    ref, _ = model(ndl.Tensor(x.transpose(1, 0, 2).copy(), device=device, dtype="float64"))
    np.testing.assert_allclose(out.numpy(), ref.numpy().transpose(1, 0, 2), rtol=1e-12, atol=1e-12)


def test_transformer_sequence_len_is_the_longest_sequence(device):
    model = nn.Transformer(4, 5, 1, num_head=1, dim_head=2, sequence_len=3, device=device)
    out, _ = model(ndl.Tensor(np.ones((3, 2, 4), np.float32), device=device))  # T == sequence_len
    assert out.shape == (3, 2, 4)
    with pytest.raises(ndl.errors.ShapeError, match="sequence length 4 exceeds sequence_len 3"):
        model(ndl.Tensor(np.ones((4, 2, 4), np.float32), device=device))


class _PositionsFromOps(nn.Module):
    """A fixed positional encoding computed from the position ids with ops
    (no table), the kind of module a user swaps in for the learned one."""

    def __init__(self, width):
        super().__init__()
        self.width, self.seen = width, []

    def forward(self, positions):
        self.seen.append(positions)
        T = positions.shape[1]
        enc = ndl.ops.reshape(ndl.ops.exp(positions * -0.5), (1, T, 1))
        return ndl.ops.broadcast_to(enc, (1, T, self.width))


def test_transformer_hands_positions_as_constants(device):
    model = nn.Transformer(4, 5, 1, num_head=1, dim_head=2, sequence_len=6, device=device)
    model.positional_embedding = _PositionsFromOps(4)
    x = np.random.default_rng(14).standard_normal((5, 2, 4)).astype(np.float32)
    out, _ = model(ndl.Tensor(x, device=device))
    out.sum().backward()
    (positions,) = model.positional_embedding.seen
    assert positions.shape == (1, 5) and positions.device == device
    np.testing.assert_array_equal(positions.numpy(), np.arange(5)[None])
    # data, not a leaf of the graph: backward gives the positions no gradient
    assert positions.requires_grad is False and positions.grad is None
    assert all(p.grad is not None for p in model.parameters())


# --------------------------------------------------------------------------- #
# nn_sequence survivors (fifth session)
# --------------------------------------------------------------------------- #
def test_sequence_shape_errors_print_the_expected_shape_as_python_writes_it(device):
    from needle.errors import ShapeError
    # a 2-D expectation prints "(*, 3)", no trailing comma (that is only for 1-D)
    cell = nn.RNNCell(3, 4, device=device)
    with pytest.raises(ShapeError) as err:
        cell(ndl.Tensor(np.zeros((2, 5), np.float32), device=device))
    assert str(err.value) == "RNNCell: input X has shape (2, 5), expected (*, 3)"
    lstm = nn.LSTM(3, 4, num_layers=2, device=device)
    x = ndl.Tensor(np.zeros((5, 2, 3), np.float32), device=device)
    h0 = ndl.Tensor(np.zeros((1, 2, 4), np.float32), device=device)
    with pytest.raises(ShapeError) as err:
        lstm(x, (h0, h0))
    assert "expected (2, 2, 4)" in str(err.value) and "(2, 2, 4,)" not in str(err.value)
