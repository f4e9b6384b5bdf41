"""Public API that no other test called, each checked with real values.

Grad mode, Tensor conveniences, default-device selection (``NEEDLE_DEVICE``,
``NEEDLE_BACKEND``, ``set_default_device``), run-time plugins and the op
registry, im2col/col2im, the conv and batch-norm adjoint ops, the lazy-mode
BatchNorm path and the small helpers exported next to them.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import types

import numpy as np
import pytest

import needle as ndl
import needle.backend_ndarray as nd
from needle import autograd, discovery, errors, ops


def _t(x, **kw):
    kw.setdefault("dtype", "float64")
    return ndl.Tensor(np.asarray(x, dtype=kw["dtype"]), device=ndl.cpu_numpy(), **kw)


# ------------------------------------------------------------------ grad mode
def test_enable_grad_inside_no_grad_records_the_graph():
    x = _t([1.0, 2.0], requires_grad=True)
    assert autograd.is_grad_enabled() is True
    with autograd.no_grad():
        assert autograd.is_grad_enabled() is False
        y = x * 3.0
        assert y.requires_grad is False and y.inputs == []
        with autograd.enable_grad():
            assert autograd.is_grad_enabled() is True
            z = (x * x).sum()
        assert autograd.is_grad_enabled() is False
    assert autograd.is_grad_enabled() is True
    z.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])


def test_grad_mode_is_restored_after_an_exception():
    with pytest.raises(RuntimeError):
        with autograd.no_grad():
            raise RuntimeError("boom")
    assert autograd.is_grad_enabled() is True


def test_compute_gradient_of_variables_with_a_given_out_grad():
    x = _t([[1.0, -2.0], [3.0, 0.5]], requires_grad=True)
    y = x * x
    autograd.compute_gradient_of_variables(y, _t([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(x.grad.numpy(), 2 * np.array([[1.0, -2.0], [3.0, 0.5]]) * [[1, 2], [3, 4]])


def test_value_and_tuple_op_are_the_graph_types():
    x = _t([1.0, 2.0])
    assert isinstance(x, autograd.Value)
    tup = ops.make_tuple(x, _t([3.0]))
    assert isinstance(tup.op, autograd.TensorTupleOp)
    np.testing.assert_array_equal(tup[1].numpy(), [3.0])


# ------------------------------------------------------------------ Tensor conveniences
def test_tensor_ndim_size_item():
    t = _t(np.arange(24.0).reshape(2, 3, 4))
    assert (t.ndim, t.size) == (3, 24)
    assert _t(np.zeros(())).ndim == 0 and _t(np.zeros(())).size == 1
    assert (t.sum() * 0.5).item() == pytest.approx(138.0)
    assert isinstance(_t([7.25]).item(), float) and _t([[7.25]]).item() == 7.25
    with pytest.raises(errors.ShapeError, match="item.*6 elements"):
        _t(np.ones((2, 3))).item()


# ------------------------------------------------------------------ default device
def _default_in_fresh_process(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("NEEDLE_DEVICE", "NEEDLE_BACKEND")}
    env.update(env_extra)
    code = "import needle as ndl; print(ndl.default_device().name, ndl.Tensor([1.0]).device.name)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_needle_device_and_needle_backend_select_the_default():
    assert _default_in_fresh_process({"NEEDLE_DEVICE": "numpy"}) == ["cpu_numpy", "cpu_numpy"]
    assert _default_in_fresh_process({"NEEDLE_BACKEND": "np"}) == ["cpu_numpy", "cpu_numpy"]
    expected = "cpu" if ndl.cpu().enabled() else "cpu_numpy"
    assert _default_in_fresh_process({}) == [expected, expected]
    if ndl.cpu().enabled():  # NEEDLE_DEVICE wins over NEEDLE_BACKEND
        assert _default_in_fresh_process({"NEEDLE_DEVICE": "cpu", "NEEDLE_BACKEND": "np"}) == ["cpu", "cpu"]


def test_set_default_device_switches_and_restores():
    before = ndl.default_device()
    previous = ndl.set_default_device("numpy")
    try:
        assert previous == before
        assert ndl.default_device() == ndl.cpu_numpy()
        assert ndl.Tensor([1.0, 2.0]).device == ndl.cpu_numpy()
        assert ndl.init.zeros(2).device == ndl.cpu_numpy()
        with pytest.raises(errors.BackendUnavailableError, match="nope"):
            ndl.set_default_device("nope")
    finally:
        ndl.set_default_device(None)
    assert ndl.default_device() == before
    from needle import backend_selection
    assert nd.Device is nd.BackendDevice and backend_selection.Device is nd.BackendDevice


def test_backend_selection_names_the_array_api():
    from needle import backend_selection as bs
    assert bs.BACKEND == "nd" and bs.array_api is nd
    a = bs.array_api.array([1.0, 2.0], device=ndl.cpu_numpy())
    np.testing.assert_array_equal((a + 1.0).numpy(), [2.0, 3.0])


# ------------------------------------------------------------------ plugins, registry
def test_register_plugin_adds_an_op_reachable_by_get_op_and_op_names():
    from needle.ops import registry

    class Triple(autograd.TensorOp):
        def compute(self, a):
            return a * 3.0

        def gradient(self, out_grad, node):
            return out_grad * 3.0

    plugin = types.ModuleType("needle_test_triple_plugin")

    from needle_numpy import NumpyBackend

    class Renamed(NumpyBackend):
        name = "i19numpy"

        def device_names(self):
            return ["i19numpy"]

    @ndl.protocol.hookimpl
    def needle_register_ops(register):
        register("i19_triple", Triple)

    @ndl.protocol.hookimpl
    def needle_backends():
        return [Renamed()]

    plugin.needle_register_ops = needle_register_ops
    plugin.needle_backends = needle_backends
    try:
        discovery.register_plugin(plugin, name="needle_test_triple_plugin")
        assert discovery.plugin_manager().is_registered(plugin)
        assert "i19_triple" in registry.op_names()
        entry = registry.get_op("i19_triple")
        assert isinstance(entry, registry.OpEntry) and entry.cls is Triple
        x = _t([1.0, -2.0], requires_grad=True)
        y = ops.i19_triple(x)
        np.testing.assert_array_equal(y.numpy(), [3.0, -6.0])
        y.sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
        assert discovery.require_backend("i19numpy").name == "i19numpy"
        a = nd.array([1.0, 4.0], device=nd.device("i19numpy"))
        np.testing.assert_array_equal(a.sqrt().numpy(), [1.0, 2.0])
    finally:
        discovery.plugin_manager().unregister(plugin)
        discovery.reset()
        registry.REGISTRY.pop("i19_triple", None)
        for mod in (ops, ndl):
            for n in ("i19_triple", "Triple"):
                if hasattr(mod, n):
                    delattr(mod, n)
                if n in getattr(mod, "__all__", []):
                    mod.__all__.remove(n)
    with pytest.raises(KeyError, match="no op named 'i19_triple'"):
        registry.get_op("i19_triple")


def test_require_backend_returns_the_backend_or_explains():
    be = discovery.require_backend("numpy")
    assert be.name == "numpy" and isinstance(be, ndl.protocol.Backend)
    with pytest.raises(errors.BackendUnavailableError, match="no backend named 'nope'.*available"):
        discovery.require_backend("nope")
    infos = {i.name: i for i in discovery.backend_infos()}
    assert isinstance(infos["numpy"], discovery.BackendInfo) and infos["numpy"].available
    assert discovery.GROUP == "needle.backends"
    assert ndl.protocol.MIN_PROTOCOL_VERSION <= ndl.protocol.PROTOCOL_VERSION


def test_error_hierarchy():
    assert issubclass(errors.ProtocolVersionError, errors.BackendUnavailableError)
    assert issubclass(errors.BackendUnavailableError, errors.NeedleError)
    assert issubclass(errors.ShapeError, errors.NeedleError) and issubclass(errors.ShapeError, ValueError)
    assert issubclass(nd.AxisError, errors.ShapeError) and issubclass(nd.AxisError, IndexError)
    with pytest.raises(nd.AxisError):
        nd.array(np.ones((2, 3)), device=ndl.cpu_numpy()).sum(axis=5)


def test_info_table_and_config_name_every_backend():
    table = ndl.info.backends_table()
    assert table.splitlines()[0].split()[:3] == ["backend", "version", "status"]
    assert any(line.split()[:1] == ["numpy"] and "available" in line for line in table.splitlines())
    buf = io.StringIO()
    ndl.show_config(file=buf)
    text = buf.getvalue()
    assert "numpy" in text and ndl.__version__ in text


# ------------------------------------------------------------------ im2col / col2im
def test_im2col_matches_numpy_windows_and_col2im_is_its_adjoint():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6, 3))
    k, s = 3, 2
    cols = ops.im2col(_t(x), k, s).numpy()
    Ho, Wo = (5 - k) // s + 1, (6 - k) // s + 1
    assert cols.shape == (2, Ho, Wo, k, k, 3)
    for i in range(Ho):
        for j in range(Wo):
            np.testing.assert_array_equal(cols[:, i, j], x[:, i * s:i * s + k, j * s:j * s + k, :])
    # col2im scatter-adds each window back: <im2col(x), g> == <x, col2im(g)>
    g = rng.standard_normal(cols.shape)
    back = ops.col2im(_t(g), k, s, x.shape).numpy()
    assert back.shape == x.shape
    assert np.sum(cols * g) == pytest.approx(np.sum(x * back), rel=1e-12)
    ones = ops.col2im(_t(np.ones(cols.shape)), k, s, x.shape).numpy()
    assert ones[0, 2, 2, 0] == 4.0 and ones[0, 0, 0, 0] == 1.0  # overlap counts
    assert isinstance(ops.Im2Col(k, s), ops.Im2Col) and ops.Col2Im(k, s, x.shape).in_shape == x.shape


def test_im2col_gradient_is_col2im():
    x = _t(np.random.default_rng(1).standard_normal((1, 4, 4, 2)), requires_grad=True)
    ops.im2col(x, 2, 1).sum().backward()
    counts = ops.col2im(_t(np.ones((1, 3, 3, 2, 2, 2))), 2, 1, (1, 4, 4, 2)).numpy()
    np.testing.assert_array_equal(x.grad.numpy(), counts)


# ------------------------------------------------------------------ conv adjoint ops
def _conv_ref(x, w, stride, pad):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    N, H, W, C = x.shape
    K, _, _, O = w.shape
    Ho, Wo = (H - K) // stride + 1, (W - K) // stride + 1
    out = np.zeros((N, Ho, Wo, O))
    for i in range(Ho):
        for j in range(Wo):
            out[:, i, j] = np.einsum("nabc,abco->no", x[:, i * stride:i * stride + K, j * stride:j * stride + K], w)
    return out


@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1)])
def test_conv_grad_ops_are_the_adjoints_of_conv(stride, pad):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 5, 5, 3)), rng.standard_normal((3, 3, 3, 4))
    out = _conv_ref(x, w, stride, pad)
    assert out.shape[1] == ops.conv_output_size(5, 3, stride, pad)
    g = rng.standard_normal(out.shape)
    gx = ops.ConvGradInput(stride, pad, (5, 5))(_t(g), _t(w)).numpy()
    gw = ops.ConvGradWeight(stride, pad, 3)(_t(x), _t(g)).numpy()
    # <conv(x, w), g> is bilinear: its derivative in x (resp. w) is gx (resp. gw)
    eps = 1e-6
    for _ in range(3):
        dx, dw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
        num_x = (np.sum(_conv_ref(x + eps * dx, w, stride, pad) * g) - np.sum(out * g)) / eps
        num_w = (np.sum(_conv_ref(x, w + eps * dw, stride, pad) * g) - np.sum(out * g)) / eps
        assert np.sum(gx * dx) == pytest.approx(num_x, rel=1e-5)
        assert np.sum(gw * dw) == pytest.approx(num_w, rel=1e-5)


def test_conv_grad_weight_gradient_runs_and_is_correct():
    # second-order: d/dx <ConvGradWeight(x, g), v> = ConvGradInput(g, v) (the map is bilinear)
    rng = np.random.default_rng(3)
    x = _t(rng.standard_normal((1, 4, 4, 2)), requires_grad=True)
    g = _t(rng.standard_normal((1, 4, 4, 3)), requires_grad=True)
    v = rng.standard_normal((3, 3, 2, 3))
    gw = ops.ConvGradWeight(1, 1, 3)(x, g)
    (gw * _t(v)).sum().backward()
    want_x = ops.ConvGradInput(1, 1, (4, 4))(_t(g.numpy()), _t(v)).numpy()
    np.testing.assert_allclose(x.grad.numpy(), want_x, rtol=1e-10, atol=1e-12)
    want_g = _conv_ref(x.numpy(), v, 1, 1)
    np.testing.assert_allclose(g.grad.numpy(), want_g, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ batch norm
def _bn_ref(x, w, b, eps):
    mu, var = x.mean(0), x.var(0)
    return w * (x - mu) / np.sqrt(var + eps) + b, mu, var


def test_batchnorm_grad_ops_match_the_composed_gradient():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 3))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    g = rng.standard_normal((6, 3))
    xt, wt, bt = _t(x, requires_grad=True), _t(w, requires_grad=True), _t(b, requires_grad=True)
    (ops.batch_norm_train(xt, wt, bt, 1e-5) * _t(g)).sum().backward()
    fused = [t.grad.numpy() for t in (xt, wt, bt)]
    xc, wc, bc = _t(x, requires_grad=True), _t(w, requires_grad=True), _t(b, requires_grad=True)
    n = 6
    mu = (xc.sum((0,)) / n).reshape((1, 3)).broadcast_to((6, 3))
    var = (((xc - mu) ** 2).sum((0,)) / n).reshape((1, 3)).broadcast_to((6, 3))
    y = wc.reshape((1, 3)).broadcast_to((6, 3)) * (xc - mu) / (var + 1e-5) ** 0.5 + bc.reshape((1, 3)).broadcast_to((6, 3))
    (y * _t(g)).sum().backward()
    for f, c in zip(fused, (xc, wc, bc)):
        np.testing.assert_allclose(f.reshape(c.shape), c.grad.numpy(), rtol=1e-9, atol=1e-11)
    assert ops.BatchNormGradX is not None and issubclass(ops.BatchNormGradW, autograd.TensorOp)
    node = ops.batch_norm_train(_t(x, requires_grad=True), _t(w, requires_grad=True), _t(b, requires_grad=True))
    grads = node.op.gradient(_t(g), node)
    assert {type(gr.op).__name__ for gr in grads if gr.op is not None} & {"BatchNormGradX", "BatchNormGradW",
                                                                          "Summation", "Reshape"}


def test_lazy_mode_batchnorm_trains_with_api_numerics(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4)).astype(np.float32) * 3 + 1
    eager = ndl.nn.BatchNorm1d(4, momentum=0.2)
    lazy = ndl.nn.BatchNorm1d(4, momentum=0.2)
    y_eager = eager(ndl.Tensor(x)).numpy()
    monkeypatch.setattr(autograd, "LAZY_MODE", True)
    out = lazy(ndl.Tensor(x))
    y_lazy = out.numpy()
    want, mu, var = _bn_ref(x.astype(np.float64), 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(y_lazy, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y_lazy, y_eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lazy.running_mean.numpy(), 0.2 * mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lazy.running_var.numpy(), 0.8 + 0.2 * var, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lazy.running_var.numpy(), eager.running_var.numpy(), rtol=1e-5)
    out.sum().backward()
    # d sum(y)/dx = 0 for batch norm with w = 1 (the output is centred per feature)
    assert np.abs(lazy.weight.grad.numpy()).max() < 1e-4 and lazy.bias.grad.numpy() == pytest.approx(8.0)


# ------------------------------------------------------------------ small helpers
def test_unbroadcast_normalize_axes_and_relu_grad():
    from needle.ops.ops_mathematic import ReLUGrad, normalize_axes, unbroadcast
    g = _t(np.arange(24.0).reshape(2, 3, 4))
    np.testing.assert_array_equal(unbroadcast(g, (3, 1)).numpy(), np.arange(24.0).reshape(2, 3, 4).sum((0, 2))[:, None])
    assert unbroadcast(g, (2, 3, 4)) is g
    assert normalize_axes(-1, 3, "t") == (2,) and normalize_axes(None, 3, "t") is None
    assert normalize_axes((0, -2), 3, "t") == (0, 1)
    with pytest.raises(errors.ShapeError):
        normalize_axes(3, 3, "t")
    x = _t([-1.0, 2.0, 0.5], requires_grad=True)
    ops.relu(x).backward(_t([5.0, 6.0, 7.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 6.0, 7.0])
    assert issubclass(ReLUGrad, autograd.TensorOp)


def test_max_class_and_logsumexp_array():
    x = np.array([[1.0, 5.0, -2.0], [0.5, 0.25, 3.0]])
    np.testing.assert_array_equal(ops.Max(axes=(1,))(_t(x)).numpy(), [5.0, 3.0])
    a = nd.array(x, device=ndl.cpu_numpy(), dtype="float64")
    np.testing.assert_allclose(ops.logsumexp_array(a, (1,)).numpy(), np.log(np.exp(x).sum(1)), rtol=1e-12)


def test_idx_readers_and_dataset_constants(tmp_path):
    from needle.data.datasets import cifar10_dataset, mnist_dataset, ptb_dataset
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "i").write_bytes(struct.pack(">IIII", 2051, 2, 3, 4) + imgs.tobytes())
    (tmp_path / "l").write_bytes(struct.pack(">II", 2049, 2) + bytes([7, 1]))
    np.testing.assert_array_equal(mnist_dataset.read_idx_images(tmp_path / "i"), imgs)
    np.testing.assert_array_equal(mnist_dataset.read_idx_labels(tmp_path / "l"), [7, 1])
    X, y = mnist_dataset.parse_mnist_arrays(tmp_path / "i", tmp_path / "l")
    assert X.shape == (2, 3, 4) and list(y) == [7, 1]
    (tmp_path / "l3").write_bytes(struct.pack(">II", 2049, 3) + bytes([7, 1, 2]))
    with pytest.raises(errors.DataFormatError, match="2 images but .* 3 labels"):
        mnist_dataset.parse_mnist_arrays(tmp_path / "i", tmp_path / "l3")
    assert len(cifar10_dataset.CIFAR10_TRAIN_FILES) == 5 and len(cifar10_dataset.CIFAR10_TEST_FILES) == 1
    assert len(ptb_dataset.PTB_SHA256) >= 1


def test_transform_base_and_optimizer_bases():
    from needle.data.data_transforms import Transform
    assert issubclass(ndl.data.RandomFlipHorizontal, Transform)
    assert issubclass(ndl.optim.SGD, ndl.optim.Optimizer)
    assert issubclass(ndl.optim.StepLR, ndl.optim.LRScheduler)
    from needle.backend_ndarray.device import forget_devices
    forget_devices(None)  # drops cached devices; they are rebuilt equal on demand
    assert ndl.cpu_numpy() == nd.device("numpy")
