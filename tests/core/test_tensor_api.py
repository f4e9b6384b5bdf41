"""Tensor's PyTorch-style additions (issue 18): indexing, comparisons,
reductions, cat/where, sqrt/abs, T/permute/view, to, len, repr, dtypes.

Forward against NumPy, gradients against central differences (float64) on
every available device, and PyTorch as a second oracle when installed."""

import numpy as np
import pytest

import needle as ndl
from needle import ops
from needle.errors import ShapeError, UnsupportedDTypeError

from test_ops import T, check_grad  # tests/core/test_ops.py (rootdir-prepended)

RNG = np.random.default_rng(18)


def randn(*shape):
    return RNG.standard_normal(shape)


def torch_or_skip():
    return pytest.importorskip("torch")


def torch_grads(fn_torch, *arrays):
    """Forward and gradients of sum(fn(*xs) * w) in PyTorch (float64), w fixed by the caller."""
    torch = torch_or_skip()
    xs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = fn_torch(*xs)
    return torch, xs, out


def compare_with_torch(fn, fn_torch, arrays, device, tol=1e-10):
    """Needle and PyTorch agree on the forward and on the gradients of sum(out * w)."""
    torch = torch_or_skip()
    xs = [T(a, device) for a in arrays]
    out = fn(*xs)
    txs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    tout = fn_torch(*txs)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=tol, atol=tol)
    w = RNG.standard_normal(out.shape)
    (out * T(w, device, requires_grad=False)).sum().backward()
    (tout * torch.tensor(w)).sum().backward()
    for x, tx in zip(xs, txs):
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------- #
# indexing
# --------------------------------------------------------------------------- #
INDICES = [
    1, -1, slice(1, 3), (slice(None), 2), (1, slice(None, None, 2)), (slice(None, None, -1),),
    (slice(4, 0, -2), slice(None)), (Ellipsis, 1), (None, 0), (slice(None), None, slice(1, 4, 2)),
    (-2, -1), (slice(5, 1, -1), slice(-1, None, -3)), (slice(2, 2),),
]


@pytest.mark.parametrize("index", INDICES, ids=repr)
def test_getitem_forward_and_gradient(device, index):
    a = randn(5, 4)
    out = check_grad(lambda x: x[index], a, device=device)
    np.testing.assert_array_equal(out.numpy(), a[index])
    assert out.shape == a[index].shape


@pytest.mark.parametrize("index", INDICES, ids=repr)
def test_getitem_matches_torch(device, index):
    if index == (slice(None, None, -1),) or any(
            isinstance(i, slice) and (i.step or 1) < 0 for i in (index if isinstance(index, tuple) else (index,))):
        # torch has no negative steps: compare with flip-based equivalent via NumPy instead
        a = randn(5, 4)
        x = T(a, device)
        np.testing.assert_array_equal(x[index].numpy(), a[index])
        return
    compare_with_torch(lambda x: x[index], lambda x: x[index], [randn(5, 4)], device)


def test_getitem_3d_and_second_order(device):
    a = randn(3, 4, 5)
    check_grad(lambda x: x[1:, ::-2, 3], a, device=device)
    x = T(a, device)
    y = (x[0] * x[0]).sum()  # d/dx = 2 x[0] at row 0; d2 = 2
    y.backward()
    g = x.grad
    expected = np.zeros_like(a)
    expected[0] = 2 * a[0]
    np.testing.assert_allclose(g.numpy(), expected)


def test_getitem_bad_index(device):
    x = T(randn(3, 4), device)
    with pytest.raises(IndexError, match="out of bounds for axis 1"):
        x[0, 4]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0]
    with pytest.raises(IndexError, match="basic indexing"):
        x[[0, 1]]
    with pytest.raises(IndexError, match="basic indexing"):
        x[True]
    with pytest.raises(ValueError):
        x[::0]


def test_len_and_iteration(device):
    x = T(randn(3, 2), device)
    assert len(x) == 3
    rows = list(x)
    assert len(rows) == 3 and all(r.shape == (2,) for r in rows)
    np.testing.assert_array_equal(rows[2].numpy(), x.numpy()[2])
    with pytest.raises(TypeError, match="0-d"):
        len(T(1.0, device))
    assert bool(T(np.zeros((0, 3)), device)) and bool(T(0.0, device))  # course truthiness kept


# --------------------------------------------------------------------------- #
# comparisons
# --------------------------------------------------------------------------- #
CMPS = [("<", np.less), ("<=", np.less_equal), (">", np.greater), (">=", np.greater_equal)]


def _cmp(sym, x, other):
    return {"<": lambda: x < other, "<=": lambda: x <= other, ">": lambda: x > other,
            ">=": lambda: x >= other, "eq": lambda: x.eq(other), "ne": lambda: x.ne(other)}[sym]()


@pytest.mark.parametrize("sym, ref", CMPS + [("eq", np.equal), ("ne", np.not_equal)],
                         ids=[c[0] for c in CMPS] + ["eq", "ne"])
def test_comparisons(device, sym, ref):
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    x, y = T(a, device), T(b, device)
    for other, other_np in [(y, b), (2.0, 2.0), (2, 2), (b, b)]:
        out = _cmp(sym, x, other)
        assert isinstance(out, ndl.Tensor) and not out.requires_grad and out.is_leaf()
        assert out.dtype == x.dtype
        np.testing.assert_array_equal(out.numpy(), ref(a, other_np).astype(np.float64))
    if sym in ("<", "<=", ">", ">="):
        rev = eval(f"2.0 {sym} x")  # reflected
        np.testing.assert_array_equal(rev.numpy(), ref(2.0, a).astype(np.float64))
    torch = pytest.importorskip("torch")
    ta, tb = torch.tensor(a), torch.tensor(b)
    expect = {"eq": ta.eq(tb), "ne": ta.ne(tb)}.get(sym)
    if expect is None:
        expect = eval(f"ta {sym} tb")
    np.testing.assert_array_equal(_cmp(sym, x, y).numpy(), expect.double().numpy())


def test_equality_operators_keep_the_course_identity_semantics(device):
    """Course API: == and != are identity, bool() of a Tensor is always true,
    Tensors hash by identity (dict keys in the graph bookkeeping)."""
    a, b = T([1.0, 2.0], device), T([1.0, 2.0], device)
    assert (a == a) is True and (a == b) is False and (a != b) is True and (a != a) is False
    assert (a == None) is False and (a != None) is True  # noqa: E711
    assert {a: 1, b: 2}[b] == 2 and b in {a, b} and hash(a) == object.__hash__(a)
    assert bool(T([], device)) and bool(T(0.0, device)) and bool(T([0.0], device))
    assert a in [a] and a not in [b]  # containers compare by identity, never by value


def test_comparison_truth_values(device):
    a, b = T([1.0, 2.0], device), T([1.0, 3.0], device)
    assert bool(T(1.0, device) < 2.0) and not bool(T([3.0], device) < 2.0)
    assert bool(T([2.0], device).eq(2.0)) and not bool(T([2.0], device).ne(2.0))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(a < b)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(a.eq(b))
    with pytest.raises(ShapeError, match="do not broadcast"):
        a.eq(T([1.0, 2.0, 3.0], device))


def test_comparison_carries_no_gradient(device):
    x = T(randn(4), device)
    y = (x * (x > 0.0)).sum()  # relu by mask
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), (x.numpy() > 0).astype(np.float64))


# --------------------------------------------------------------------------- #
# reductions
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("axis, keepdims", [(None, False), (1, False), (0, True), ((0, 2), False),
                                            (-1, True), (None, True)])
def test_mean(device, axis, keepdims):
    a = randn(2, 3, 4)
    out = check_grad(lambda x: x.mean(axis, keepdims=keepdims), a, device=device)
    np.testing.assert_allclose(out.numpy(), a.mean(axis=axis, keepdims=keepdims), rtol=1e-12)
    if axis is not None and not isinstance(axis, tuple):
        compare_with_torch(lambda x: x.mean(dim=axis, keepdims=keepdims),
                           lambda x: x.mean(dim=axis, keepdim=keepdims), [a], device)


@pytest.mark.parametrize("axis, keepdims", [(None, False), (1, False), (0, True), (-1, True)])
def test_sum_axis_keepdims_aliases(device, axis, keepdims):
    a = randn(2, 3, 4)
    out = check_grad(lambda x: x.sum(axis=axis, keepdims=keepdims), a, device=device)
    np.testing.assert_allclose(out.numpy(), a.sum(axis=axis, keepdims=keepdims), rtol=1e-12)
    x = T(a, device)
    if axis is not None:
        np.testing.assert_allclose(x.sum(dim=axis).numpy(), a.sum(axis=axis), rtol=1e-12)
        np.testing.assert_allclose(x.sum(axis).numpy(), a.sum(axis=axis), rtol=1e-12)  # course axes
    with pytest.raises(TypeError, match="only one of"):
        x.sum(axes=0, axis=1)
    if axis is not None:  # PyTorch's keepdim= spelling, on every reduction
        torch = torch_or_skip()
        ta = torch.tensor(a)
        for name in ("sum", "mean", "max", "min", "argmax"):
            got = getattr(x, name)(dim=axis, keepdim=keepdims)
            want = getattr(ta, name)(dim=axis, keepdim=keepdims)
            if name in ("max", "min"):
                got, want = got.values, want.values
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("axis, keepdims", [(None, False), (1, False), (0, True)])
def test_max_min(device, name, axis, keepdims):
    a = randn(3, 4)
    out = check_grad(lambda x: getattr(x, name)(axis, keepdims=keepdims), a, device=device)
    np.testing.assert_allclose(out.numpy(), getattr(np, name)(a, axis=axis, keepdims=keepdims))
    if axis is not None:
        torch = torch_or_skip()
        x = T(a, device)
        values, indices = getattr(x, name)(dim=axis, keepdims=keepdims)
        tv, ti = getattr(torch.tensor(a), name)(dim=axis, keepdim=keepdims)
        np.testing.assert_allclose(values.numpy(), tv.numpy())
        np.testing.assert_array_equal(indices.numpy(), ti.numpy())


def test_min_ties_share_gradient(device):
    x = T([1.0, 1.0, 3.0], device)
    x.min().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.5, 0.5, 0.0])


@pytest.mark.parametrize("axis, keepdims", [(None, False), (0, False), (1, True), (-1, False)])
def test_argmax(device, axis, keepdims):
    a = randn(4, 5)
    a[1, 2] = a[1, 3] = 10.0  # ties: the first maximum
    x = T(a, device)
    out = x.argmax(axis, keepdims=keepdims)
    assert not out.requires_grad and out.dtype == x.dtype
    np.testing.assert_array_equal(out.numpy(), np.argmax(a, axis=axis, keepdims=keepdims))
    torch = torch_or_skip()
    if axis is not None:
        np.testing.assert_array_equal(out.numpy(), torch.tensor(a).argmax(dim=axis, keepdim=keepdims).numpy())


# --------------------------------------------------------------------------- #
# cat / where / sqrt / abs
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat(device, dim):
    a, b, c = randn(2, 3), randn(2, 3), randn(2, 3)
    if dim == 0:
        b = randn(1, 3)
    out = check_grad(lambda x, y, z: ndl.cat([x, y, z], dim=dim), a, b, c, device=device)
    np.testing.assert_array_equal(out.numpy(), np.concatenate([a, b, c], axis=dim))
    torch = torch_or_skip()
    compare_with_torch(lambda x, y, z: ndl.cat((x, y, z), dim), lambda x, y, z: torch.cat((x, y, z), dim),
                       [a, b, c], device)


def test_cat_errors(device):
    with pytest.raises(ShapeError, match="differ outside dim"):
        ndl.cat([T(randn(2, 3), device), T(randn(3, 2), device)])
    with pytest.raises(ValueError, match="non-empty"):
        ndl.cat([])


def test_where(device):
    a, b = randn(3, 4), randn(4)
    cond = a > 0
    out = check_grad(lambda x, y: ndl.where(T(cond, device, requires_grad=False), x, y), a, b, device=device)
    np.testing.assert_array_equal(out.numpy(), np.where(cond, a, b))
    torch = torch_or_skip()
    compare_with_torch(lambda x, y: ndl.where(x > 0, x, y), lambda x, y: torch.where(x > 0, x, y),
                       [a, b], device)
    # a masked fill with -inf stays finite where the condition holds (no 0 * inf)
    x = T(a, device)
    filled = ndl.where(x > 0, x, -np.inf)
    np.testing.assert_array_equal(filled.numpy(), np.where(a > 0, a, -np.inf))


def test_sqrt_abs(device):
    a = RNG.uniform(0.5, 2.0, (3, 4))
    out = check_grad(lambda x: ndl.sqrt(x), a, device=device)
    np.testing.assert_allclose(out.numpy(), np.sqrt(a), rtol=1e-12)
    b = randn(3, 4)
    out = check_grad(lambda x: abs(x), b, device=device)
    np.testing.assert_array_equal(out.numpy(), np.abs(b))
    torch = torch_or_skip()
    compare_with_torch(lambda x: x.sqrt(), lambda x: x.sqrt(), [a], device)
    compare_with_torch(lambda x: abs(x), lambda x: abs(x), [b], device)
    z = T([0.0, -0.0], device)
    assert np.all(np.signbit(abs(z).numpy()) == False)  # noqa: E712 (-0.0 -> 0.0 as torch)


# --------------------------------------------------------------------------- #
# shape: T, permute, view; transpose keeps the course meaning
# --------------------------------------------------------------------------- #
def test_T_permute_view(device):
    a = randn(2, 3, 4)
    out = check_grad(lambda x: x.permute(2, 0, 1), a, device=device)
    np.testing.assert_array_equal(out.numpy(), a.transpose(2, 0, 1))
    out = check_grad(lambda x: x.permute((1, 2, 0)), a, device=device)
    np.testing.assert_array_equal(out.numpy(), a.transpose(1, 2, 0))
    out = check_grad(lambda x: x.T, randn(3, 5), device=device)
    assert out.shape == (5, 3)
    compare_with_torch(lambda x: x.permute(2, 0, 1), lambda x: x.permute(2, 0, 1), [a], device)
    compare_with_torch(lambda x: x.view(6, -1), lambda x: x.reshape(6, -1), [a], device)
    x = T(a, device)
    assert x.transpose().shape == (2, 4, 3)  # course: swap the last two, not reverse
    assert T(randn(3), device).T.shape == (3,)
    with pytest.raises(ShapeError, match="not a permutation"):
        x.permute(0, 0, 1)


# --------------------------------------------------------------------------- #
# to(device), item, repr, dtype
# --------------------------------------------------------------------------- #
def test_to_device_is_differentiable(device):
    import needle.backend_ndarray as nd
    x = T(randn(2, 3), device)
    assert x.to(device) is x and x.to(str(device).rstrip("()")) is x
    other = nd.cpu_numpy() if device != nd.cpu_numpy() else nd.cpu()
    if not other.enabled():
        pytest.skip(f"{other} unavailable")
    y = x.to(other)
    assert y.device == other
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    (y * y).sum().backward()
    assert x.grad.device == device
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy())


def test_to_dtype_is_differentiable(device):
    x = T(randn(2, 3), device)
    y = x.to("float32")
    assert y.dtype == "float32" and y.device == device and x.to(np.float64) is x
    np.testing.assert_allclose(y.numpy(), x.numpy().astype(np.float32))
    (y * y).sum().backward()
    assert x.grad.dtype == "float64"
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy(), rtol=1e-6)
    z = x.to(device, dtype="float32")
    assert z.dtype == "float32" and z.device == device
    with pytest.raises(UnsupportedDTypeError, match="float32 and float64 only"):
        x.to("int64")


def test_hw2_style_batch_comparison_with_a_real_dataloader():
    # hw2: ``for i, j in zip(shuffled, unshuffled): if i != j: diff = True`` must see the shuffle
    np.random.seed(0)
    ds = ndl.data.NDArrayDataset(np.random.rand(40, 3).astype(np.float32), np.arange(40.0))
    shuffled = ndl.data.DataLoader(ds, batch_size=8, shuffle=True)
    plain = ndl.data.DataLoader(ds, batch_size=8, shuffle=False)
    assert any(i != j for i, j in zip(shuffled, plain))
    # by value the batches do differ (the identity rule alone would say so for any two loaders)
    assert any(not np.array_equal(i[0].numpy(), j[0].numpy()) for i, j in zip(shuffled, plain))
    for i, j in zip(plain, ndl.data.DataLoader(ds, batch_size=8)):
        assert i != j and i == i  # tuples of distinct Tensors: identity, as the course
        np.testing.assert_array_equal(i[0].numpy(), j[0].numpy())


def test_item_repr(device):
    x = T([[1.5]], device)
    assert x.item() == 1.5 and isinstance(x.item(), float)
    r = repr(x)
    assert r.startswith("needle.Tensor([[1.5]]") and f"device={device}" in r
    assert "dtype=float64" in r and "requires_grad=True" in r
    assert "requires_grad=False" in repr(x.detach())


@pytest.mark.parametrize("dtype", ["int64", "int32", np.int64, "uint8", int])
def test_integer_dtype_is_refused_not_silently_float(dtype):
    with pytest.raises(UnsupportedDTypeError, match="float32 and float64 only"):
        ndl.Tensor([1, 2, 3], dtype=dtype)


def test_integer_sources_still_become_float32_without_dtype():
    # course rule: with dtype=None integer/bool sources become float32 (unchanged)
    assert ndl.Tensor([1, 2]).dtype == "float32"
    assert ndl.Tensor(np.arange(3)).dtype == "float32"
    assert ndl.Tensor([True, False], dtype="bool").dtype == "float32"  # init.randb's masks


def test_new_ops_are_registered():
    for name in ["getitem", "cat", "where", "compare", "sqrt", "abs", "permute", "to_device", "cast",
                 "mean", "min", "argmax"]:
        assert name in ops.op_names()
    assert ndl.cat is ops.cat and ndl.where is ops.where and ndl.sqrt is ops.sqrt
    assert not hasattr(ndl, "min") and not hasattr(ndl, "abs")  # never shadow builtins
