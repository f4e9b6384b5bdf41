"""Public helpers exported next to the Tensor-method ops, the tuple adjoints,
validation and discovery, each called and checked with real values."""

from __future__ import annotations

import importlib
import math
import sys
import types

import numpy as np
import pytest

import needle as ndl
from needle import discovery, ops, validation
from needle.errors import ArgumentTypeError, HyperParameterError
from needle.ops.ops_mathematic import kept_dims_shape
from needle.ops.ops_tensor_api import ComparisonResult, GetItemAdjoint, MinMaxResult
from needle.ops.ops_tuple import OneHotTupleAdjoint, sum_tuple_adjoints


def _t(x, requires_grad=True):
    return ndl.Tensor(np.asarray(x, dtype="float64"), device=ndl.cpu_numpy(), dtype="float64",
                      requires_grad=requires_grad)


A = np.array([[3.0, -1.0, 4.0], [-1.5, 5.0, 9.0]])


# ------------------------------------------------------------ Tensor-method ops
def test_getitem_node_and_its_adjoint():
    x = _t(A)
    y = x[1, ::-2]
    assert type(y.op) is ops.GetItem
    np.testing.assert_array_equal(y.numpy(), [9.0, -1.5])
    (y * _t([1.0, 10.0], False)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0, 0], [10.0, 0, 1.0]])
    adj = GetItemAdjoint((slice(0, 2),), (4,))(_t([7.0, 8.0]))
    np.testing.assert_array_equal(adj.numpy(), [7.0, 8.0, 0.0, 0.0])
    assert type(adj.op) is GetItemAdjoint


def test_concat_sqrt_abs_permute_nodes():
    a, b = _t([[1.0, 4.0]]), _t([[9.0, 16.0], [25.0, 36.0]])
    c = ops.cat([a, b], dim=0)
    assert type(c.op) is ops.Concat
    np.testing.assert_array_equal(c.numpy(), [[1, 4], [9, 16], [25, 36]])
    s = c.sqrt()
    assert type(s.op) is ops.Sqrt
    np.testing.assert_array_equal(s.numpy(), [[1, 2], [3, 4], [5, 6]])
    s.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [[0.5, 0.25]])
    np.testing.assert_allclose(b.grad.numpy(), [[1 / 6, 1 / 8], [1 / 10, 1 / 12]])
    x = _t(A)
    m = abs(x)
    assert type(m.op) is ops.Abs
    np.testing.assert_array_equal(m.numpy(), np.abs(A))
    m.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.sign(A))
    z = _t(np.arange(24.0).reshape(2, 3, 4))
    p = z.permute(2, 0, 1)
    assert type(p.op) is ops.Permute and p.shape == (4, 2, 3)
    np.testing.assert_array_equal(p.numpy(), np.arange(24.0).reshape(2, 3, 4).transpose(2, 0, 1))
    (p * _t(np.arange(24.0).reshape(4, 2, 3), False)).sum().backward()
    np.testing.assert_array_equal(z.grad.numpy(), np.arange(24.0).reshape(4, 2, 3).transpose(1, 2, 0))


def test_cast_todevice_mean_min_argmax():
    x = _t(A)
    c = x.to("float32")
    assert type(c.op) is ops.Cast and c.dtype == "float32"
    c.sum().backward()
    assert x.grad.dtype == "float64"
    np.testing.assert_array_equal(x.grad.numpy(), np.ones_like(A))
    d = ops.ToDevice(ndl.cpu_numpy())(x)
    assert type(d.op) is ops.ToDevice and d.device == ndl.cpu_numpy()
    np.testing.assert_array_equal(d.numpy(), A)
    x = _t(A)
    mu = x.mean(axis=1)
    assert type(mu.op) is ops.Mean
    np.testing.assert_allclose(mu.numpy(), A.mean(axis=1))
    mu.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full_like(A, 1 / 3))
    x = _t(A)
    lo = x.min(axis=0)
    assert type(lo.op) is ops.Min
    np.testing.assert_array_equal(lo.numpy(), [-1.5, -1.0, 4.0])
    lo.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 1], [1, 0, 0]])
    am = ops.ArgMax(axis=1).compute(x.realize_cached_data())
    np.testing.assert_array_equal(am.numpy(), [2, 2])
    np.testing.assert_array_equal(x.argmax(dim=0).numpy(), [0, 1, 1])


def test_comparison_result_and_min_max_result():
    x = _t(A, False)
    gt = x > 0.0
    assert type(gt) is ComparisonResult
    np.testing.assert_array_equal(gt.numpy(), A > 0)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(gt)
    assert bool(_t([2.0], False) > 1.0) is True and bool(_t([0.5], False) > 1.0) is False
    r = x.max(dim=1)
    assert isinstance(r, MinMaxResult) and r._fields == ("values", "indices")
    np.testing.assert_array_equal(r.values.numpy(), [4.0, 9.0])
    np.testing.assert_array_equal(r.indices.numpy(), [2, 2])
    r = x.min(dim=1)
    np.testing.assert_array_equal(r.values.numpy(), [-1.0, -1.5])
    np.testing.assert_array_equal(r.indices.numpy(), [1, 0])


def test_kept_dims_shape():
    assert kept_dims_shape((2, 3, 4), (1,)) == (2, 1, 4)
    assert kept_dims_shape((2, 3, 4), (0, 2)) == (1, 3, 1)
    assert kept_dims_shape((2, 3, 4), None) == (1, 1, 1)
    assert kept_dims_shape((5,), ()) == (5,)


# ------------------------------------------------------------ tuple adjoints
def test_one_hot_tuple_adjoints_sum_only_their_slots():
    z = lambda n: _t(np.zeros(n), False)  # noqa: E731
    g0 = OneHotTupleAdjoint.make([_t([1.0, 2.0], False), z(3)], 0)
    g0b = OneHotTupleAdjoint.make([_t([10.0, 20.0], False), z(3)], 0)
    assert isinstance(g0, ndl.TensorTuple) and g0.index == 0 and len(g0) == 2
    total = sum_tuple_adjoints([g0, g0b])
    np.testing.assert_array_equal(total[0].numpy(), [11.0, 22.0])
    np.testing.assert_array_equal(total[1].numpy(), [0.0, 0.0, 0.0])
    plain = ops.make_tuple(_t([1.0, 1.0], False), _t([5.0, 6.0, 7.0], False))
    total = sum_tuple_adjoints([g0, plain])
    np.testing.assert_array_equal(total[0].numpy(), [2.0, 3.0])
    np.testing.assert_array_equal(total[1].numpy(), [5.0, 6.0, 7.0])
    # through backward: reading both slots of a tuple sends each its adjoint
    a, b = _t([1.0, 2.0]), _t([3.0])
    t2 = ops.MakeTensorTuple()(a, b)
    (ops.TupleGetItem(0)(t2, fold_const=False).sum() * 2.0
     + ops.TupleGetItem(1)(t2, fold_const=False).sum() * 5.0).backward()
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(b.grad.numpy(), [5.0])


# ------------------------------------------------------------ validation
def test_validators_accept_and_normalise():
    assert validation.check_int("Linear", "in_features", np.int64(3)) == 3
    assert validation.check_float("SGD", "lr", 1, 0.0) == 1.0
    assert validation.check_probability("Dropout", "p", 0.25) == 0.25
    assert validation.check_choice("f", "mode", "sum", ("sum", "mean")) == "sum"
    assert validation.check_bool("DataLoader", "shuffle", 1) is True


@pytest.mark.parametrize("call, exc, words", [
    (lambda: validation.check_int("Linear", "in_features", 2.5), ArgumentTypeError, ["Linear", "in_features", "2.5"]),
    (lambda: validation.check_int("Linear", "in_features", True), ArgumentTypeError, ["Linear", "in_features", "True"]),
    (lambda: validation.check_int("Linear", "out_features", -1), HyperParameterError, ["out_features", ">= 0", "-1"]),
    (lambda: validation.check_float("SGD", "lr", -0.1, 0.0), HyperParameterError, ["SGD", "lr", "[0", "-0.1"]),
    (lambda: validation.check_float("Adam", "eps", 0.0, 0.0, low_open=True), HyperParameterError, ["eps", "(0"]),
    (lambda: validation.check_float("SGD", "lr", math.nan), HyperParameterError, ["lr", "nan"]),
    (lambda: validation.check_float("SGD", "lr", "0.1"), ArgumentTypeError, ["SGD", "lr", "str"]),
    (lambda: validation.check_probability("Dropout", "p", 1.5), HyperParameterError, ["Dropout", "p", "1.5"]),
    (lambda: validation.check_choice("loss", "reduction", "avg", ("sum", "mean")), HyperParameterError,
     ["loss", "reduction", "'avg'", "'sum'"]),
    (lambda: validation.check_bool("DataLoader", "shuffle", "yes"), ArgumentTypeError, ["shuffle", "'yes'"]),
    (lambda: validation.check_bool("DataLoader", "shuffle", 2), ArgumentTypeError, ["shuffle", "2"]),
])
def test_validators_raise_typed_errors_naming_call_name_value(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, TypeError if exc is ArgumentTypeError else ValueError)
    for w in words:
        assert w in str(info.value)


# ------------------------------------------------------------ discovery
def test_entry_points_of_reads_a_group_and_isolates_broken_metadata(tmp_path):
    good = tmp_path / "needle_i_good-1.0.dist-info"
    good.mkdir()
    (good / "METADATA").write_text("Metadata-Version: 2.1\nName: needle_i_good\nVersion: 1.0\n")
    (good / "entry_points.txt").write_text("[needle.i_test_group]\nhello = some.module:fn\n")
    bad = tmp_path / "needle_i_bad-1.0.dist-info"
    bad.mkdir()
    (bad / "METADATA").write_text("Metadata-Version: 2.1\nName: needle_i_bad\nVersion: 1.0\n")
    (bad / "entry_points.txt").write_bytes(b"[needle.i_test_group]\nno_equals_sign\n")
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        errors = []
        found = discovery.entry_points_of("needle.i_test_group", errors)
        assert [(ep.name, ep.value) for ep in found] == [("hello", "some.module:fn")]
        assert len(errors) == 1 and "needle_i_bad" in errors[0] and "unreadable" in errors[0]
        assert discovery.entry_points_of("needle.i_no_such_group") == []
    finally:
        sys.path.remove(str(tmp_path))
        importlib.invalidate_caches()


def test_on_plugin_registered_calls_back_with_each_runtime_plugin():
    seen = []
    callback = seen.append
    plugin = types.ModuleType("needle_i_empty_plugin")
    discovery.on_plugin_registered(callback)
    try:
        assert seen == []
        discovery.register_plugin(plugin, name="needle_i_empty_plugin")
        assert seen == [plugin]
    finally:
        discovery._ON_REGISTER.remove(callback)
        discovery.plugin_manager().unregister(plugin)
        discovery.reset()
