"""Tensor construction, reverse-mode AD semantics (course API §1.1-1.3, docs/design.md) and the op registry."""

import gc
import sys

import numpy as np
import pytest

import needle as ndl
import needle.backend_ndarray as nd
from needle import autograd, ops
from needle.errors import ShapeError


# ``device``: every available backend (tests/conftest.py)


# --------------------------------------------------------------------------- #
# construction and dtype rules
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("src,dtype", [
    (np.ones(3, dtype=np.float64), "float64"), (np.ones(3, dtype=np.float32), "float32"),
    (np.ones(3, dtype=np.int64), "float32"), (np.ones(3, dtype=bool), "float32"),
    ([1.0, 2.0], "float64"), ([1, 2], "float32"), (3, "float32"), (3.0, "float64"),
    (np.float64(2.5), "float64"), (np.random.default_rng(0).standard_normal(), "float64"),
])
def test_dtype_rules(src, dtype):
    t = ndl.Tensor(src)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.numpy(), np.asarray(src, dtype=dtype))
    assert t.requires_grad and t.is_leaf() and t.grad is None and t.op is None


def test_dtype_argument_casts():
    assert ndl.Tensor([1.0, 2.0], dtype="float32").dtype == "float32"
    assert ndl.Tensor(np.ones(2, dtype=np.float32), dtype=np.float64).dtype == "float64"
    assert ndl.Tensor([1, 0], dtype="bool").dtype == "float32"


def test_zero_dim():
    t = ndl.Tensor(3)
    assert t.shape == () and t.numpy() == 3


def test_from_tensor_shares_or_copies():
    a = ndl.Tensor([1.0, 2.0])
    b = ndl.Tensor(a)
    assert b.cached_data is a.cached_data
    c = ndl.Tensor(a, dtype="float32")
    assert c.dtype == "float32" and c.cached_data is not a.cached_data


def test_from_ndarray_copies():
    arr = nd.array([1.0, 2.0])
    t = ndl.Tensor(arr)
    assert t.cached_data is not arr and t.dtype == "float32"
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0])


@pytest.mark.parametrize("bad", ["abc", None, object(), {"a": 1}, [[1, 2], [3]], 1 + 2j])
def test_bad_source_raises_type_error(bad):
    with pytest.raises(TypeError, match="expected .*Tensor.*NumPy"):
        ndl.Tensor(bad)


def test_identity_semantics_and_hashable():
    # course API: ==, != and bool() are identity / always true (never
    # overridden); hashing by identity keys the graph bookkeeping
    a, b = ndl.Tensor([1.0]), ndl.Tensor([1.0])
    assert {a: 1, b: 2}[a] == 1 and {a: 1, b: 2}[b] == 2 and len({a, b}) == 2
    assert hash(a) != hash(b) and (a == b) is False and (a != b) is True and (a == a) is True
    # hw2 compares tuples of batches with != : distinct batches always differ
    x1 = ndl.Tensor([[1.0, 2.0]])
    assert (x1, a) != (ndl.Tensor([[1.0, 2.0]]), a) and (x1, a) == (x1, a)
    assert bool(ndl.Tensor(np.zeros((0, 3)))) and bool(ndl.Tensor(0.0))
    assert "needle.Tensor(" in repr(a)


def test_data_getter_setter_and_detach():
    a = ndl.Tensor(np.ones((1, 3), dtype=np.float32))
    d = a.data
    assert d.is_leaf() and not d.requires_grad and d.cached_data is a.cached_data
    a.data = ndl.Tensor(np.arange(3.0))  # float64 (3,) into a float32 (1, 3)
    assert a.dtype == "float32" and a.shape == (3,)
    np.testing.assert_array_equal(a.numpy(), [0.0, 1.0, 2.0])
    y = a * 2.0
    assert y.detach().op is None and not y.detach().requires_grad


def test_make_const_and_make_from_op():
    c = ndl.Tensor.make_const(nd.array([1.0, 2.0]))
    assert not c.requires_grad and c.is_leaf()
    assert ndl.Tensor.make_const(np.ones(2)).dtype == "float64"
    x = ndl.Tensor([1.0, 2.0])
    y = ndl.Tensor.make_from_op(ops.EWiseAdd(), [x, c])
    assert y.requires_grad and y.inputs == [x, c]
    np.testing.assert_array_equal(y.numpy(), [2.0, 4.0])


def test_no_input_requires_grad_gives_detached_result():
    a = ndl.Tensor([1.0], requires_grad=False)
    y = a * 3.0 + a
    assert y.op is None and not y.requires_grad and y.inputs == []


def test_no_grad_context():
    x = ndl.Tensor([1.0, 2.0])
    with ndl.no_grad():
        y = x * x
    assert y.op is None and not y.requires_grad
    z = x * x
    assert z.requires_grad and z.op is not None


# --------------------------------------------------------------------------- #
# topological sort and gradients (hw1 semantics)
# --------------------------------------------------------------------------- #
def test_find_topo_sort_order():
    a1, b1 = ndl.Tensor(np.asarray([[0.88282157]])), ndl.Tensor(np.asarray([[0.90170084]]))
    c1 = 3 * a1 * a1 + 4 * b1 * a1 - a1
    order = autograd.find_topo_sort([c1])
    # post-order DFS visiting inputs in order; a - b contributes a Negate node
    expected = [0.88282157, 2.64846471, 2.33812177, 0.90170084, 3.60680336, 3.1841638,
                5.52228558, -0.88282157, 4.63946401]
    np.testing.assert_allclose([float(t.numpy().reshape(-1)[0]) for t in order], expected, rtol=1e-6)
    assert order[0] is a1 and order[3] is b1 and order[-1] is c1
    assert isinstance(order[-2].op, ops.Negate)


def test_topo_sort_dfs_matches():
    x = ndl.Tensor([1.0])
    y = (x * x + x).sum()
    visited, order = set(), []
    autograd.topo_sort_dfs(y, visited, order)
    assert order == autograd.find_topo_sort([y]) and order[0] is x and order[-1] is y


def test_backward_overwrites_and_grad_of_grad_hw1():
    x = ndl.Tensor([6.0])
    z = ndl.Tensor([4.0])
    y = x * x + x * z
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 * 6 + 4])
    x.grad.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0])
    np.testing.assert_allclose(z.grad.numpy(), [1.0])


def test_second_derivative_of_cube(device):
    xv = np.array([1.0, -2.0, 0.5])
    x = ndl.Tensor(xv, device=device)
    (x * x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * xv ** 2)
    x.grad.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * xv)


def test_grad_of_grad_through_logsumexp_and_tanh(device):
    torch = pytest.importorskip("torch")
    xv = np.random.default_rng(1).standard_normal((3, 4))
    x = ndl.Tensor(xv, device=device)
    y = ops.logsumexp(ops.tanh(x) * 2.0, axes=(1,)).sum()
    y.backward()
    g = x.grad
    (g * g).sum().backward()
    tx = torch.tensor(xv, requires_grad=True)
    ty = torch.logsumexp(torch.tanh(tx) * 2.0, dim=1).sum()
    (tg,) = torch.autograd.grad(ty, tx, create_graph=True)
    (tg * tg).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_gradient_sums_partial_adjoints():
    x = ndl.Tensor([2.0, 3.0])
    y = (x * 3.0 + x * x + x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 + 2 * np.array([2.0, 3.0]) + 1)
    assert y.grad is not None and x.grad.shape == x.shape


def test_backward_non_scalar_uses_ones_and_checks_shape():
    x = ndl.Tensor(np.arange(6.0).reshape(2, 3))
    y = x * 2.0
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0))
    y.backward(ndl.Tensor(np.full((2, 3), 3.0)))
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 6.0))
    with pytest.raises(ShapeError, match=r"out_grad has shape \(3, 2\)"):
        y.backward(ndl.Tensor(np.ones((3, 2))))


def test_gradient_as_tuple():
    x, y = ndl.Tensor([1.0]), ndl.Tensor([2.0])
    z = x * y
    grads = z.op.gradient_as_tuple(ndl.Tensor([1.0]), z)
    assert isinstance(grads, tuple) and len(grads) == 2
    w = ops.negate(x)
    assert isinstance(w.op.gradient_as_tuple(ndl.Tensor([1.0]), w), tuple)


def test_sum_node_list():
    a, b = ndl.Tensor([1.0]), ndl.Tensor([2.0])
    assert autograd.sum_node_list([a]) is a
    np.testing.assert_array_equal(autograd.sum_node_list([a, b, a]).numpy(), [4.0])


def test_deep_chain_backward_has_no_recursion_limit():
    x = ndl.Tensor([1.0])
    y = x
    for _ in range(5000):
        y = y + 1.0
    assert 5000 > sys.getrecursionlimit() / 2
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0])
    np.testing.assert_array_equal(y.numpy(), [5001.0])


def test_tensor_counter_tracks_live_values():
    gc.collect()
    before = autograd.TENSOR_COUNTER
    xs = [ndl.Tensor([1.0]) for _ in range(10)]
    ys = [x * 2.0 for x in xs]
    assert autograd.TENSOR_COUNTER == before + 20
    del xs, ys
    gc.collect()
    assert autograd.TENSOR_COUNTER == before


def test_training_loop_does_not_leak_graphs():
    """Updating .data between steps keeps the live count bounded."""
    w = ndl.Tensor(np.ones((3, 2)))
    x = ndl.Tensor(np.ones((4, 3)), requires_grad=False)
    counts = []
    for _ in range(20):
        loss = ops.relu(x @ w).sum()
        loss.backward()
        w.data = w.data - w.grad.data * 0.01
        gc.collect()
        counts.append(autograd.TENSOR_COUNTER)
    assert counts[-1] == counts[5]
    assert w.is_leaf() and w.requires_grad


def test_lazy_mode_defers_compute(monkeypatch):
    monkeypatch.setattr(autograd, "LAZY_MODE", True)
    x = ndl.Tensor([1.0, 2.0])
    y = x * 3.0
    assert y.cached_data is None
    np.testing.assert_array_equal(y.numpy(), [3.0, 6.0])
    z = x
    for _ in range(3000):  # deeper than the recursion limit
        z = z + 1.0
    assert z.cached_data is None
    np.testing.assert_array_equal(z.numpy(), [3001.0, 3002.0])
    z.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])


# --------------------------------------------------------------------------- #
# registry
# --------------------------------------------------------------------------- #
COURSE_OPS = ["add", "add_scalar", "multiply", "mul_scalar", "power", "power_scalar", "divide",
              "divide_scalar", "negate", "transpose", "reshape", "broadcast_to", "summation",
              "matmul", "log", "exp", "relu", "tanh", "logsumexp", "logsoftmax", "stack", "split",
              "flip", "dilate", "undilate", "conv", "make_tuple", "tuple_get_item",
              "fused_add_scalars", "sigmoid", "max", "max_pool2d", "avg_pool2d"]
COURSE_CLASSES = ["EWiseAdd", "AddScalar", "EWiseMul", "MulScalar", "EWisePow", "PowerScalar",
                  "EWiseDiv", "DivScalar", "Negate", "Transpose", "Reshape", "BroadcastTo",
                  "Summation", "MatMul", "Log", "Exp", "ReLU", "Tanh", "LogSumExp", "LogSoftmax",
                  "Stack", "Split", "Flip", "Dilate", "UnDilate", "Conv", "MakeTensorTuple",
                  "TupleGetItem", "FusedAddScalars"]


def test_registry_exports_every_op():
    for name in COURSE_OPS:
        entry = ops.REGISTRY[name]
        assert getattr(ops, name) is entry.function
        if name in ops.NOT_STAR_EXPORTED:
            assert name not in ops.__all__ and getattr(ndl, name, None) is not entry.function
            continue
        assert getattr(ndl, name) is entry.function
        assert getattr(ops, entry.cls.__name__) is entry.cls
        assert name in ops.__all__ and entry.cls.__name__ in ops.__all__
    for cls in COURSE_CLASSES:
        assert getattr(ndl, cls) is getattr(ops, cls)
        assert issubclass(getattr(ops, cls), autograd.Op)


def test_tensor_operators_build_the_registry_ops():
    # requires_grad so that every result keeps its op
    x = ndl.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = ndl.Tensor(np.ones((2, 3)), requires_grad=True)
    # operator -> (result, the registry op its node comes from)
    built = {
        "__add__": (x + y, "add"), "__radd__": (1.0 + x, "add_scalar"),
        "__sub__": (x - y, "add"), "__rsub__": (1.0 - x, "add_scalar"),
        "__mul__": (x * y, "multiply"), "__rmul__": (2.0 * x, "mul_scalar"),
        "__truediv__": (x / y, "divide"), "__rtruediv__": (1.0 / (x + 1.0), "mul_scalar"),
        "__pow__": (x ** y, "power"), "__matmul__": (x @ y.transpose(), "matmul"),
        "__neg__": (-x, "negate"), "sum": (x.sum(), "summation"),
        "reshape": (x.reshape((3, 2)), "reshape"), "broadcast_to": (x.broadcast_to((4, 2, 3)), "broadcast_to"),
        "transpose": (x.transpose(), "transpose"), "matmul": (x.matmul(y.transpose()), "matmul"),
    }
    for method, (result, name) in built.items():
        assert method in vars(ndl.Tensor), f"{method} is not written in the Tensor class body"
        assert type(result.op) is ops.REGISTRY[name].cls, (method, result.op)


def test_tensor_operators_call_the_registered_function():
    """``a + b`` goes through ``needle.ops.add``: replacing the registered
    function changes the operator too (the registry is the one table)."""
    calls = []
    old = ops.REGISTRY["add"]

    def traced_add(a, b):
        calls.append((a, b))
        return old.function(a, b)

    ops.register_op("add", old.cls, traced_add, replace=True)
    try:
        x, y = ndl.Tensor([1.0]), ndl.Tensor([2.0])
        z = x + y
        assert calls == [(x, y)] and z.numpy().tolist() == [3.0]
    finally:
        ops.register_op("add", old.cls, old.function, replace=True)
    assert ops.add is old.function


def test_register_third_party_op_and_hook():
    import pluggy

    from needle.hookspecs import PROJECT, hookimpl

    class Square(ndl.TensorOp):
        def compute(self, a):
            return a * a

        def gradient(self, out_grad, node):
            return out_grad * node.inputs[0] * 2.0

    class Plugin:
        @hookimpl
        def needle_register_ops(self, register):
            register("test_square", Square)

    import needle.hookspecs as specs
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(specs)
    pm.register(Plugin())
    try:
        pm.hook.needle_register_ops(register=ops.registry.register_op)
        x = ndl.Tensor([3.0])
        y = ndl.ops.test_square(x)
        assert ndl.test_square is ops.test_square and ops.Square is Square
        y.backward()
        np.testing.assert_array_equal(x.grad.numpy(), [6.0])
        with pytest.raises(ValueError, match="already registered"):
            ops.register_op("test_square", ops.EWiseAdd)
        with pytest.raises(TypeError, match="subclass"):
            ops.register_op("bad_op", int)
    finally:
        entry = ops.REGISTRY.pop("test_square", None)
        for mod in (ops, ndl):
            for n in ("test_square", "Square"):
                if hasattr(mod, n):
                    delattr(mod, n)
                if n in getattr(mod, "__all__", []):
                    mod.__all__.remove(n)
        assert entry is not None


# --------------------------------------------------------------------------- #
# second order against PyTorch: gradients are differentiable graphs
# --------------------------------------------------------------------------- #
SECOND_ORDER = {
    "mul_div": (lambda x, y: x * y / (y * y + 1.0), lambda x, y: x * y / (y * y + 1.0)),
    "pow": (lambda x, y: ops.power(x * x + 1.0, y), lambda x, y: torch_mod().pow(x * x + 1.0, y)),
    "power_scalar": (lambda x, y: (x * x + 1.0) ** 1.5 + y ** 3,
                     lambda x, y: (x * x + 1.0) ** 1.5 + y ** 3),
    "exp_log": (lambda x, y: ops.log(ops.exp(x) + ops.exp(y)) * x,
                lambda x, y: torch_mod().log(torch_mod().exp(x) + torch_mod().exp(y)) * x),
    "tanh_sigmoid": (lambda x, y: ops.tanh(x) * ops.sigmoid(y),
                     lambda x, y: torch_mod().tanh(x) * torch_mod().sigmoid(y)),
    "relu": (lambda x, y: ops.relu(x) * y * y, lambda x, y: torch_mod().relu(x) * y * y),
    "matmul_bcast": (lambda x, y: (x @ ops.transpose(y)) * (x @ ops.transpose(y)),
                     lambda x, y: (x @ y.T) * (x @ y.T)),
    "sum_broadcast": (lambda x, y: ops.broadcast_to(ops.reshape(ops.summation(x * y, axes=(1,)), (3, 1)),
                                                    (2, 3, 4)) ** 2 * y,
                      lambda x, y: (x * y).sum(dim=1).reshape(3, 1).expand(2, 3, 4) ** 2 * y),
    "logsoftmax": (lambda x, y: ops.logsoftmax(x * y) * y,
                   lambda x, y: torch_mod().log_softmax(x * y, dim=1) * y),
    "stack_split": (lambda x, y: ops.stack([ops.split(x, 0)[1] * ops.split(y, 0)[2],
                                            ops.split(x * y, 0)[0]], 1) ** 2,
                    lambda x, y: torch_mod().stack([x[1] * y[2], (x * y)[0]], 1) ** 2),
}


def torch_mod():
    import torch
    return torch


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_second_order_matches_torch(name):
    torch = pytest.importorskip("torch")
    ours, theirs = SECOND_ORDER[name]
    rng = np.random.default_rng(7)
    xv, yv = rng.uniform(0.3, 1.5, (3, 4)), rng.uniform(0.3, 1.5, (3, 4))
    xv[0, 0] = -0.7  # a negative entry for relu's mask
    x, y = ndl.Tensor(xv), ndl.Tensor(yv)
    out = ours(x, y)
    w = rng.standard_normal(out.shape)
    (out * ndl.Tensor(w)).sum().backward()
    gx, gy = x.grad, y.grad
    v1, v2 = rng.standard_normal(xv.shape), rng.standard_normal(yv.shape)
    ((gx * ndl.Tensor(v1)).sum() + (gy * ndl.Tensor(v2)).sum()).backward()
    tx, ty = torch.tensor(xv, requires_grad=True), torch.tensor(yv, requires_grad=True)
    tout = theirs(tx, ty)
    tgx, tgy = torch.autograd.grad((tout * torch.tensor(w)).sum(), (tx, ty), create_graph=True)
    np.testing.assert_allclose(gx.numpy(), tgx.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gy.numpy(), tgy.detach().numpy(), rtol=1e-10, atol=1e-12)
    hx, hy = torch.autograd.grad((tgx * torch.tensor(v1)).sum() + (tgy * torch.tensor(v2)).sum(),
                                 (tx, ty), allow_unused=True)
    hx = np.zeros_like(xv) if hx is None else hx.numpy()
    hy = np.zeros_like(yv) if hy is None else hy.numpy()
    np.testing.assert_allclose(x.grad.numpy(), hx, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(y.grad.numpy(), hy, rtol=1e-9, atol=1e-11)


def test_eager_op_creation_does_not_walk_the_graph(monkeypatch):
    """Building a node in eager mode computes it from its inputs directly: a
    topological sort per new node made a long forward pass quadratic (an LSTM
    language-model step spent most of its time there)."""
    from needle import autograd
    x = ndl.Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
    calls = []
    real = autograd.find_topo_sort
    monkeypatch.setattr(autograd, "find_topo_sort", lambda nodes: calls.append(1) or real(nodes))
    y = x
    for _ in range(200):
        y = y * 1.0 + 0.5
    assert calls == []
    np.testing.assert_allclose(y.numpy(), np.full((2, 2), 101.0))
    y.sum().backward()  # backward sorts the graph once
    assert len(calls) == 1
    np.testing.assert_allclose(x.grad.numpy(), np.ones((2, 2)))


def test_tuple_adjoints_are_summed_slot_by_slot(monkeypatch):
    """Reading every element of a split tuple gives one one-hot adjoint per
    read: they are summed without adding the zero slots (no sum per slot
    when each slot is set once), and a dense adjoint joins them correctly."""
    from needle.ops import ops_tuple

    sums = []
    real = ops_tuple.sum_node_list
    monkeypatch.setattr(ops_tuple, "sum_node_list", lambda nodes: sums.append(len(nodes)) or real(nodes))
    rng = np.random.default_rng(0)
    x_h, c_h = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    x = ndl.Tensor(x_h, requires_grad=True)
    parts = ndl.split(x, 0)
    loss = None
    for i in range(5):
        term = (parts[i] * ndl.Tensor(c_h[i])).sum()
        loss = term if loss is None else loss + term
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), c_h, rtol=1e-6)
    assert sums == []  # five one-hot adjoints, five distinct slots: nothing to add
    # a slot read twice is added once; a dense adjoint (stack's split) joins in
    x = ndl.Tensor(x_h, requires_grad=True)
    parts = ndl.split(x, 0)
    loss = (parts[1] * 2.0).sum() + (parts[1] * 3.0).sum() + ndl.stack(parts, 0).sum()
    loss.backward()
    expect = np.ones((5, 3))
    expect[1] += 5.0
    np.testing.assert_allclose(x.grad.numpy(), expect, rtol=1e-6)
    assert sums and max(sums) <= 3


@pytest.mark.parametrize("call, op, kind", [
    (lambda: ndl.ops.relu(5), "ReLU", "int"),
    (lambda: ndl.ops.exp("x"), "Exp", "str"),
    (lambda: ndl.ops.add_scalar([1.0], 2.0), "AddScalar", "list"),
    (lambda: ndl.ops.multiply(np.ones(2), ndl.Tensor([1.0, 2.0])), "EWiseMul", "ndarray"),
])
def test_an_op_given_a_non_tensor_input_raises_a_typed_error_naming_it(call, op, kind):
    from needle.errors import ArgumentTypeError
    with pytest.raises(ArgumentTypeError, match=f"{op}: input 0 is a {kind}"):
        call()
