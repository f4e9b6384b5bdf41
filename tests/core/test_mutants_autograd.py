"""Tests written for mutants of ``core/autograd.py`` that the other tests let
survive or never reached (scripts/mutation.sh, docs/testing.md "Mutation
testing").  Values are checked against NumPy; gradients against hand-derived
ones."""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
from needle import autograd, ops
from needle.autograd import Op, Tensor, TensorOp, TensorTuple, Value
from needle.errors import ShapeError


# -- Op base class ------------------------------------------------------------------
def test_op_base_methods_are_abstract():
    with pytest.raises(NotImplementedError):
        Op()()
    with pytest.raises(NotImplementedError):
        Op().compute()


class _NoGradient(TensorOp):
    def compute(self, a):
        return a


def test_an_op_with_neither_gradient_says_so():
    x = Tensor(np.ones(2, np.float32))
    y = _NoGradient()(x)
    with pytest.raises(NotImplementedError, match="_NoGradient defines neither gradient nor gradient_needed"):
        y.backward()


class _ListGradient(TensorOp):
    """a * b whose gradient is returned as a list (the course allows any sequence)."""

    def compute(self, a, b):
        return a * b

    def gradient(self, out_grad, node):
        a, b = node.inputs
        return [out_grad * b, out_grad * a]


def test_gradient_as_tuple_turns_a_list_into_a_tuple_and_backward_uses_it():
    a = Tensor(np.array([1.0, 2.0], np.float32))
    b = Tensor(np.array([3.0, -4.0], np.float32))
    y = _ListGradient()(a, b)
    g = y.op.gradient_as_tuple(Tensor(np.ones(2, np.float32)), y)
    assert isinstance(g, tuple) and len(g) == 2
    ops.summation(y).backward()
    np.testing.assert_array_equal(a.grad.numpy(), [3.0, -4.0])
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 2.0])


# -- nodes ----------------------------------------------------------------------------
def test_value_init_course_signature_infers_requires_grad():
    a = Tensor([1.0], requires_grad=False)
    b = Tensor([2.0], requires_grad=True)
    for inputs, expected in (([a], False), ([a, b], True), ([], False)):
        v = Value.__new__(Value)
        v._init(None, inputs, cached_data=a.cached_data)
        assert v.requires_grad is expected and v.grad is None and v.inputs == inputs
    v = Value.__new__(Value)
    v._init(None, [a], requires_grad=True)
    assert v.requires_grad is True and v.cached_data is None
    op = ops.EWiseAdd() if hasattr(ops, "EWiseAdd") else _ListGradient()
    v = Value.__new__(Value)
    v._init(op, [a, b], cached_data=b.cached_data)
    assert v.op is op and v.cached_data is b.cached_data and v.requires_grad is True


def test_fresh_nodes_have_no_grad_and_retain_none():
    t = Tensor(np.ones(2, np.float32))
    c = Tensor.make_const(np.ones(2, np.float32))
    y = t * 2.0
    for node in (t, c, y):
        assert node.grad is None and node.retains_grad is False
    assert y.retain_grad() is y and y.retains_grad is True and t.retains_grad is False


def test_eager_op_on_a_pending_lazy_second_input(monkeypatch):
    # a graph built in lazy mode and used after switching back: both inputs are realised
    monkeypatch.setattr(autograd, "LAZY_MODE", True)
    a = Tensor(np.array([1.0, 2.0], np.float32))
    lazy = a * 3.0
    assert lazy.cached_data is None
    monkeypatch.setattr(autograd, "LAZY_MODE", False)
    np.testing.assert_array_equal((a + lazy).numpy(), [4.0, 8.0])
    # each case below gets a fresh pending node (using one realises it)

    def pending():
        monkeypatch.setattr(autograd, "LAZY_MODE", True)
        node = a * 3.0
        monkeypatch.setattr(autograd, "LAZY_MODE", False)
        assert node.cached_data is None
        return node
    np.testing.assert_array_equal((pending() + a).numpy(), [4.0, 8.0])
    np.testing.assert_array_equal((pending() * 0.5).numpy(), [1.5, 3.0])
    np.testing.assert_array_equal(ops.stack([pending(), a, pending()], 0).numpy(), [[3, 6], [1, 2], [3, 6]])


def test_lazy_mode_under_no_grad_records_no_gradient(monkeypatch):
    monkeypatch.setattr(autograd, "LAZY_MODE", True)
    a = Tensor(np.array([1.0, 2.0], np.float32))
    with ndl.no_grad():
        y = a * 2.0
    z = a * 2.0
    assert y.requires_grad is False and z.requires_grad is True
    np.testing.assert_array_equal(y.numpy(), [2.0, 4.0])


def test_three_input_op_under_no_grad_is_a_constant():
    a, b, c = (Tensor(np.full(2, v, np.float32)) for v in (1.0, 2.0, 3.0))
    y = ops.stack([a, b, c], 0)
    assert y.requires_grad is True and y.op is not None
    with ndl.no_grad():
        z = ops.stack([a, b, c], 0)
    assert z.requires_grad is False and z.op is None and z.inputs == []
    np.testing.assert_array_equal(z.numpy(), [[1, 1], [2, 2], [3, 3]])


class _Broken(TensorOp):
    def compute(self, a):
        raise AttributeError("a bug inside compute")


def test_an_attribute_error_inside_compute_is_not_mistaken_for_a_bad_input():
    with pytest.raises(AttributeError, match="a bug inside compute"):
        _Broken()(Tensor([1.0]))


# -- construction -------------------------------------------------------------------------
def test_zero_dim_sources_stay_zero_dim():
    for src in (np.float32(2.5), np.array(2.5), 2.5):
        t = Tensor(src)
        assert t.shape == () and t.numpy() == 2.5 and float(t) == 2.5


def test_make_const_from_a_tensor_shares_its_array():
    a = Tensor([1.0, 2.0])
    c = Tensor.make_const(a)
    assert c.cached_data is a.cached_data and c.requires_grad is False and c.op is None


def test_sum_keepdims_over_all_axes():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for t in (Tensor(x).sum(keepdims=True), Tensor(x).sum(keepdim=True)):
        assert t.shape == (1, 1)
        np.testing.assert_array_equal(t.numpy(), [[15.0]])


def test_to_with_something_that_is_no_dtype_treats_it_as_a_device():
    from tests.conftest import backend_device
    dev = backend_device("numpy")
    t = Tensor(np.array([1.0, 2.0], np.float32), device=dev)
    assert t.to(dev) is t and t.to("float32") is t
    assert t.to(np.float64).dtype == "float64" and t.to(np.dtype("float64")).dtype == "float64"
    assert autograd._looks_like_dtype(3) is False and autograd._looks_like_dtype("no-such-dtype") is False


# -- protocol methods -----------------------------------------------------------------------
def test_array_str_float_and_iteration_of_a_zero_dim_tensor():
    t = Tensor(np.array([[1.0, 2.0]], np.float32))
    np.testing.assert_array_equal(np.asarray(t), [[1.0, 2.0]])
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert str(t) == str(np.array([[1.0, 2.0]], np.float32))
    s = Tensor(np.float32(3.5))
    assert float(s) == 3.5
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(s)
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(s)
    with pytest.raises(ShapeError, match="has 2 elements, need 1"):
        float(t)


def test_data_setter_refuses_a_non_array():
    t = Tensor(np.array([1.0], np.float32))
    with pytest.raises(TypeError, match="Tensor.data: expected a Tensor or NDArray, got list"):
        t.data = [2.0]
    t.data = Tensor(np.array([5.0], np.float64))  # cast to the tensor's dtype
    assert t.dtype == "float32" and t.numpy()[0] == 5.0


def test_tensor_tuple_iteration_str_and_adding():
    a, b = Tensor([1.0, 2.0]), Tensor([3.0])
    tt = ops.make_tuple(a, b)
    parts = list(tt)
    np.testing.assert_array_equal(parts[0].numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(parts[1].numpy(), [3.0])
    assert str(tt) == repr(tt) and str(tt).startswith("needle.TensorTuple(")
    s = tt + ops.make_tuple(b, b)
    np.testing.assert_array_equal(s[0].numpy(), [4.0, 5.0])
    with pytest.raises(ShapeError, match="need a TensorTuple of the same length \\(2\\), got TensorTuple"):
        tt + ops.make_tuple(a)
    with pytest.raises(ShapeError, match="got Tensor"):
        tt + a
    d = tt.detach()
    assert d.op is None and d.requires_grad is False and len(d) == 2


# -- graph walks --------------------------------------------------------------------------
def test_topo_sort_visits_a_shared_node_once():
    a = Tensor([1.0])
    b = a * 2.0
    c = b + b
    order = autograd.find_topo_sort([c, b])
    assert [n is m for n, m in zip(order, [a, b, c])] == [True, True, True] and len(order) == 3
    visited, out = {b}, []
    autograd.topo_sort_dfs(b, visited, out)
    assert out == []


def test_pytorch_rule_with_a_node_whose_inputs_need_no_gradient(monkeypatch):
    # KEEP_INTERIOR_GRADS off: a branch that reaches only constants costs nothing and
    # leaves the real leaves' gradients right
    monkeypatch.setattr(autograd, "KEEP_INTERIOR_GRADS", False)
    w = Tensor(np.array([1.0, 2.0], np.float32))
    x = Tensor(np.array([3.0, 4.0], np.float32), requires_grad=False)
    forced = ops.exp(x)
    forced.requires_grad = True  # an interior node marked by hand, as a retain_grad user might
    loss = ops.summation(w * w + forced)
    loss.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 4.0])
    assert x.grad is None


# -- course globals and grad mode ------------------------------------------------------------
def test_course_globals_have_their_course_defaults():
    # hw code compares them (LAZY_MODE == False); the values, not just their truth, are the API
    assert autograd.LAZY_MODE is False and autograd.KEEP_INTERIOR_GRADS is True


def test_backward_keeps_every_interior_adjoint_by_default():
    # course rule (KEEP_INTERIOR_GRADS default): every node reached gets its .grad
    x = Tensor(np.array([1.0, -2.0], np.float32))
    y = x * 3.0
    z = ops.exp(y * 0.0)
    ops.summation(z * y).backward()
    np.testing.assert_array_equal(y.grad.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(z.grad.numpy(), [3.0, -6.0])
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_nested_no_grad_stays_off_until_the_outer_one_ends():
    x = Tensor(np.ones(2, np.float32))
    with ndl.no_grad():
        with ndl.no_grad():
            pass
        assert autograd.is_grad_enabled() is False
        assert (x * 2.0).requires_grad is False
        with autograd.enable_grad():
            with autograd.enable_grad():
                pass
            assert autograd.is_grad_enabled() is True
        assert autograd.is_grad_enabled() is False
    assert autograd.is_grad_enabled() is True and (x * 2.0).requires_grad is True


@pytest.mark.parametrize("lazy", [True, False])
def test_nodes_follow_this_threads_grad_mode_only(monkeypatch, lazy):
    # another thread inside no_grad() must not switch recording off here, for ops of
    # one, two and three inputs (each has its own fast path), eager and lazy
    import threading
    monkeypatch.setattr(autograd, "LAZY_MODE", lazy)
    inside, release = threading.Event(), threading.Event()

    def other():
        with ndl.no_grad():
            inside.set()
            release.wait(30)
    t = threading.Thread(target=other)
    t.start()
    try:
        assert inside.wait(30)
        x = Tensor(np.ones(2, np.float32))
        assert (x * 2.0).requires_grad is True and (x + x).requires_grad is True
        assert ops.stack([x, x, x], 0).requires_grad is True
        with ndl.no_grad():
            assert (x * 2.0).requires_grad is False and (x + x).requires_grad is False
            assert ops.stack([x, x, x], 0).requires_grad is False
    finally:
        release.set()
        t.join()


def test_dtype_rules_from_an_ndarray_and_for_bool():
    import needle.backend_ndarray as nd
    src = nd.array(np.array([0.5, 1.5]), dtype="float64")
    assert Tensor(src).dtype == "float64"
    t = Tensor(src, dtype="float32")
    assert t.dtype == "float32" and t.numpy().tolist() == [0.5, 1.5]
    # bool: 0/1 masks stored as float32, whatever the source's float type
    m = Tensor(np.array([0.0, 1.0], np.float64), dtype="bool")
    assert m.dtype == "float32" and m.numpy().tolist() == [0.0, 1.0]


def test_three_constant_inputs_make_a_constant():
    a, b, c = (Tensor(np.full(2, v, np.float32), requires_grad=False) for v in (1.0, 2.0, 3.0))
    y = ops.stack([a, b, c], 0)
    assert y.requires_grad is False and y.op is None


def test_tensor_from_an_ndarray_goes_to_the_device_asked_for():
    import needle.backend_ndarray as nd
    from tests.conftest import backend_device
    numpy_dev, cpu_dev = backend_device("numpy"), backend_device("cpu")
    for src_dev, dst in ((cpu_dev, numpy_dev), (numpy_dev, cpu_dev)):
        src = nd.array(np.array([1.0, 2.0], np.float32), device=src_dev)
        assert Tensor(src, device=dst).device == dst
        assert Tensor(src).device == src_dev


@pytest.mark.parametrize("bad", ["abc", b"ab", {"a": 1}, {1, 2}, None])
def test_non_numeric_sources_are_refused_by_type_before_numpy_sees_them(bad):
    from needle.errors import ArgumentTypeError
    with pytest.raises(ArgumentTypeError, match=rf"Tensor: cannot build a tensor from {type(bad).__name__}; "
                                                r"expected a needle Tensor"):
        Tensor(bad)


def test_tensor_from_a_tensor_shares_when_nothing_changes():
    from tests.conftest import backend_device
    numpy_dev, cpu_dev = backend_device("numpy"), backend_device("cpu")
    t = Tensor(np.array([1.0, 2.0], np.float32), device=cpu_dev)
    assert Tensor(t).cached_data is t.cached_data
    assert Tensor(t, device=cpu_dev).cached_data is t.cached_data
    assert Tensor(t, dtype="float32").cached_data is t.cached_data
    assert Tensor(t, device=cpu_dev, dtype=np.float32).cached_data is t.cached_data
    moved, cast = Tensor(t, device=numpy_dev), Tensor(t, dtype="float64")
    assert moved.cached_data is not t.cached_data and moved.device == numpy_dev
    assert cast.cached_data is not t.cached_data and cast.dtype == "float64"
    np.testing.assert_array_equal(moved.numpy(), [1.0, 2.0])


def test_reductions_drop_the_axis_by_default_and_abs_method():
    x = np.array([[1.0, -5.0, 3.0], [-2.0, 4.0, 0.5]], np.float32)
    t = Tensor(x)
    np.testing.assert_allclose(t.mean(1).numpy(), x.mean(1), rtol=1e-6)
    assert t.mean(1).shape == (2,) and t.max(0).shape == (3,) and t.min(1).shape == (2,)
    np.testing.assert_array_equal(t.max(0).numpy(), x.max(0))
    np.testing.assert_array_equal(t.min(1).numpy(), x.min(1))
    assert t.argmax(1).shape == (2,)
    np.testing.assert_array_equal(t.argmax(1).numpy(), x.argmax(1))
    np.testing.assert_array_equal(t.abs().numpy(), np.abs(x))


def test_permute_takes_one_sequence_or_unpacked_axes():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = Tensor(x)
    for out in (t.permute((2, 0, 1)), t.permute([2, 0, 1]), t.permute(2, 0, 1)):
        np.testing.assert_array_equal(out.numpy(), x.transpose(2, 0, 1))
    np.testing.assert_array_equal(Tensor(np.arange(3, dtype=np.float32)).permute(0).numpy(), [0, 1, 2])


# -- properties, conversion, backward's seed ----------------------------------------
@pytest.mark.parametrize("prop,want", [("shape", (2, 3)), ("dtype", np.dtype("float64")), ("ndim", 2), ("size", 6)])
def test_a_lazy_node_reports_its_properties_before_it_is_computed(monkeypatch, prop, want):
    # a node with no array yet (lazy mode) computes it on the first read of a property
    monkeypatch.setattr(autograd, "LAZY_MODE", True)
    x = Tensor(np.arange(6.0).reshape(2, 3), device=ndl.cpu_numpy())
    y = x * 2.0
    assert y.cached_data is None
    assert getattr(y, prop) == want
    assert y.device == ndl.cpu_numpy()
    np.testing.assert_array_equal(y.numpy(), np.arange(6.0).reshape(2, 3) * 2.0)
    z = x + 1.0
    assert z.cached_data is None and z.device == ndl.cpu_numpy()
    np.testing.assert_array_equal(z.cached_data.numpy(), np.arange(6.0).reshape(2, 3) + 1.0)


def test_array_protocol_keeps_the_dtype_unless_one_is_asked_for():
    t32 = Tensor(np.array([0.1, 2.0], np.float32))
    t64 = Tensor(np.array([0.1, 2.0]))
    assert np.asarray(t32).dtype == np.float32 and np.asarray(t64).dtype == np.float64
    np.testing.assert_array_equal(np.asarray(t32), np.array([0.1, 2.0], np.float32))
    wide = np.asarray(t32, dtype=np.float64)
    assert wide.dtype == np.float64
    np.testing.assert_array_equal(wide, np.array([0.1, 2.0], np.float32).astype(np.float64))
    assert np.asarray(t64, dtype=np.float32).dtype == np.float32


@pytest.mark.parametrize("seed", [np.array([1.0, 2.0, -1.0]), [1.0, 2.0, -1.0]])
def test_an_array_like_seed_gradient_is_a_constant(seed):
    # backward(array) converts the seed to a constant Tensor, as the default
    # seed of ones is: gradients linear in it keep no graph back to it
    x = Tensor(np.array([1.0, 2.0, 3.0]))
    y = x * 3.0
    y.backward(seed)
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 6.0, -3.0])
    assert y.grad.requires_grad is False and y.grad.is_leaf()
    assert x.grad.requires_grad is False and x.grad.is_leaf()


def test_sum_adjoints_is_static_and_callable_on_a_tuple_node():
    x = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]))
    parts = ops.split(x, 0)
    a = ops.make_tuple(Tensor(np.array([1.0, 1.0])), Tensor(np.array([0.0, 2.0])))
    b = ops.make_tuple(Tensor(np.array([5.0, 0.0])), Tensor(np.array([1.0, 1.0])))
    for total in (TensorTuple.sum_adjoints([a, b]), parts.sum_adjoints([a, b])):
        np.testing.assert_array_equal(total[0].numpy(), [6.0, 1.0])
        np.testing.assert_array_equal(total[1].numpy(), [1.0, 3.0])


def test_the_course_rule_drops_no_array_that_backward_made():
    # only PyTorch's rule (KEEP_INTERIOR_GRADS off) frees consumed arrays;
    # under the course rule x ** 2's adjoint keeps its helper 2 * x
    x = Tensor(np.array([1.0, -2.0, 0.5]))
    w = Tensor(np.array([3.0, 1.0, 2.0]))
    ((x ** 2) * w).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1.0, -2.0, 0.5]) * [3.0, 1.0, 2.0])
    made = autograd.find_topo_sort([x.grad, w.grad])
    assert len(made) > 4  # the adjoints' graphs, helpers included
    assert all(n.cached_data is not None for n in made)


def test_a_partial_shared_by_three_consumers_is_dropped_after_the_last(monkeypatch):
    # PyTorch's rule: in (((a + b) + c) * w).sum() the adjoint of the sums,
    # g * w (a graph node: w needs a gradient), goes to a, b and c; its
    # array is dropped only once all three have used it (nothing is
    # recomputed during backward), and every array backward made but the
    # leaves' gradients is gone afterwards
    monkeypatch.setattr(autograd, "KEEP_INTERIOR_GRADS", False)
    recomputed = []
    realize = Value.realize_cached_data

    def counting(self):
        if self.cached_data is None:
            recomputed.append(type(self.op).__name__)
        return realize(self)

    monkeypatch.setattr(Value, "realize_cached_data", counting)
    xv, wv = np.array([0.5, -1.0, 2.0]), np.array([2.0, -1.0, 0.5])
    x, w = Tensor(xv), Tensor(wv)
    loss = (((x * x + ops.exp(x)) + x * 3.0) * w).sum()
    loss.backward()
    assert recomputed == []
    np.testing.assert_allclose(x.grad.numpy(), (2 * xv + np.exp(xv) + 3.0) * wv, rtol=1e-12)
    forward = set(autograd.find_topo_sort([loss]))
    made = [n for n in autograd.find_topo_sort([x.grad, w.grad])
            if n.op is not None and n not in forward and n is not x.grad and n is not w.grad]
    assert len(made) >= 6 and all(n.cached_data is None for n in made)
    # a gradient of the gradient recomputes the dropped arrays from the graph
    x.grad.sum().backward()
    assert recomputed
    np.testing.assert_allclose(x.grad.numpy(), (2.0 + np.exp(xv)) * wv, rtol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), 2 * xv + np.exp(xv) + 3.0, rtol=1e-12)


@pytest.mark.parametrize("frozen_first", [True, False])
def test_an_adjoint_last_used_by_a_node_without_gradient_inputs_is_dropped(monkeypatch, frozen_first):
    # PyTorch's rule: the sum's adjoint g * v goes to w * 3 and to exp(u), u
    # frozen after the forward (its gradient no longer wanted); exp(u) is its
    # last user and computes nothing with it, and the array is still dropped
    # (None, recomputed on demand) though w.grad's graph reaches the node;
    # in the other order exp(u) comes first and w * 3 still gets its adjoint
    monkeypatch.setattr(autograd, "KEEP_INTERIOR_GRADS", False)
    w, v, u = Tensor(np.array([1.0, 2.0])), Tensor(np.array([0.5, -1.0])), Tensor(np.array([3.0, 4.0]))
    s = ops.exp(u) + w * 3.0 if frozen_first else w * 3.0 + ops.exp(u)
    loss = (s * v).sum()
    u.requires_grad = False
    loss.backward()
    assert u.grad is None
    np.testing.assert_array_equal(w.grad.numpy(), [1.5, -3.0])
    shared = w.grad.inputs[0]  # w.grad = (g * v) * 3
    assert shared.cached_data is None
    np.testing.assert_array_equal(shared.numpy(), [0.5, -1.0])


def test_an_input_that_needs_no_gradient_gets_none_from_an_op_computing_all():
    # _ListGradient has no gradient_needed: the default computes every
    # partial, and backward hands out only the wanted ones -- the constant
    # operand gets no .grad (and is not reached)
    a = Tensor(np.array([1.0, 2.0], np.float32))
    b = Tensor(np.array([3.0, -4.0], np.float32), requires_grad=False)
    ops.summation(_ListGradient()(a, b)).backward()
    np.testing.assert_array_equal(a.grad.numpy(), [3.0, -4.0])
    assert b.grad is None


# -- local_vjp ----------------------------------------------------------------------------
def test_local_vjp_walks_past_constants_and_sums_partials():
    # out = ((a * b + c) * a) * w with c a constant and w a leaf outside the
    # inputs: the walk meets w and c (no adjoint) before a and goes on; a's two
    # partials add; b needs no gradient but is asked for, and u, unrelated to
    # out, gets a zero adjoint that is still a graph node
    av, bv, cv, gv = np.array([1.5, -2.0]), np.array([0.5, 3.0]), np.array([2.0, 1.0]), np.array([1.0, -0.5])
    a, u, w = Tensor(av), Tensor(np.array([7.0, 8.0])), Tensor(np.array([3.0, -1.0]))
    b = Tensor(bv, requires_grad=False)
    c = Tensor(cv, requires_grad=False)
    out = ((a * b + c) * a) * w
    da, db, du = autograd.local_vjp(out, (a, b, u), Tensor(gv))
    np.testing.assert_allclose(da.numpy(), gv * w.numpy() * (2 * av * bv + cv), rtol=1e-12)
    np.testing.assert_allclose(db.numpy(), gv * w.numpy() * av * av, rtol=1e-12)
    np.testing.assert_array_equal(du.numpy(), [0.0, 0.0])
    assert du.op is not None and du.inputs[0] is u
    assert a.grad is None and w.grad is None and u.grad is None  # no .grad written


# -- grad-ready hooks -----------------------------------------------------------------------
def test_three_grad_ready_hooks_each_run_once_in_order_and_remove_alone():
    x = Tensor(np.array([1.0, 2.0]))
    seen = []
    handles = [x.register_post_accumulate_grad_hook(lambda t, k=k: seen.append((k, t.grad.numpy().tolist())))
               for k in range(3)]
    (x * 3.0).sum().backward()
    assert seen == [(0, [3.0, 3.0]), (1, [3.0, 3.0]), (2, [3.0, 3.0])]
    handles[1].remove()
    seen.clear()
    (x * 2.0).sum().backward()
    assert seen == [(0, [2.0, 2.0]), (2, [2.0, 2.0])]
    x.register_post_accumulate_grad_hook(lambda t: seen.append(("new", None)))
    seen.clear()
    x.sum().backward()
    assert [k for k, _ in seen] == [0, 2, "new"]


def test_reshape_with_no_sizes_is_the_zero_dim_shape():
    # t.reshape() is t.reshape(()) (the sizes unpacked: none): a 0-d tensor
    t = Tensor(np.array([5.0]))
    for r in (t.reshape(), t.reshape(()), t.view()):
        assert r.shape == () and r.item() == 5.0
