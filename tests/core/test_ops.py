"""Every op of course API §2 (docs/design.md) (plus sigmoid, max, pooling): forward against
NumPy, gradient against central differences in float64, on every available
device; PyTorch as a second oracle when it is installed."""

import numpy as np
import pytest

import needle as ndl
import needle.backend_ndarray as nd
from needle import ops
from needle.errors import DeviceMismatchError, ShapeError


# ``device``: every available backend (tests/conftest.py)
RNG = np.random.default_rng(0)


def T(x, device, requires_grad=True, dtype="float64"):
    return ndl.Tensor(np.asarray(x), device=device, dtype=dtype, requires_grad=requires_grad)


def numeric_grads(fn, arrays, device, weights, eps=1e-6):
    """Central differences of sum(fn(*arrays) * weights) w.r.t. each array."""
    grads = []
    for k, arr in enumerate(arrays):
        g = np.zeros_like(arr)
        flat = arr.reshape(-1)
        for j in range(flat.size):
            vals = []
            for sign in (1, -1):
                pert = [a.copy() for a in arrays]
                pert[k].reshape(-1)[j] += sign * eps
                with ndl.no_grad():
                    out = fn(*[T(p, device, requires_grad=False) for p in pert])
                vals.append(float((out.numpy() * weights).sum()))
            g.reshape(-1)[j] = (vals[0] - vals[1]) / (2 * eps)
        grads.append(g)
    return grads


def check_grad(fn, *arrays, device, tol=1e-5):
    """Compare needle's gradients of sum(fn(*xs) * w) with central differences."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    xs = [T(a, device) for a in arrays]
    out = fn(*xs)
    w = RNG.standard_normal(out.shape)
    (out * T(w, device, requires_grad=False)).sum().backward()
    expected = numeric_grads(fn, arrays, device, w)
    for x, e in zip(xs, expected):
        assert x.grad is not None
        assert x.grad.shape == x.shape
        np.testing.assert_allclose(x.grad.numpy(), e, rtol=tol, atol=tol)
    return out


def randn(*shape):
    return RNG.standard_normal(shape)


def randpos(*shape):
    return RNG.uniform(0.5, 2.0, shape)


# --------------------------------------------------------------------------- #
# element-wise
# --------------------------------------------------------------------------- #
BINARY = [
    ("add", ops.add, np.add, randn),
    ("multiply", ops.multiply, np.multiply, randn),
    ("divide", ops.divide, np.divide, randpos),
    ("power", ops.power, np.power, randpos),
]
SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1, 3), (3,)), ((), (2, 3)),
          ((2, 3), (1, 1))]


@pytest.mark.parametrize("name,fn,npfn,gen", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_binary_forward_and_grad(device, name, fn, npfn, gen, shapes):
    a, b = gen(*shapes[0]), gen(*shapes[1])
    out = check_grad(fn, a, b, device=device)
    np.testing.assert_allclose(out.numpy(), npfn(a, b), rtol=1e-12)


SCALAR = [
    ("add_scalar", ops.add_scalar, lambda a, s: a + s, randn, 1.5),
    ("mul_scalar", ops.mul_scalar, lambda a, s: a * s, randn, -2.5),
    ("divide_scalar", ops.divide_scalar, lambda a, s: a / s, randn, 3.0),
    ("power_scalar_0", ops.power_scalar, np.power, randpos, 0),
    ("power_scalar_2", ops.power_scalar, np.power, randn, 2),
    ("power_scalar_3", ops.power_scalar, np.power, randn, 3),
    ("power_scalar_half", ops.power_scalar, np.power, randpos, 0.5),
    ("power_scalar_neg", ops.power_scalar, np.power, randpos, -1.5),
    ("power_scalar_npint", ops.power_scalar, np.power, randn, np.int64(2)),
]


@pytest.mark.parametrize("name,fn,npfn,gen,s", SCALAR, ids=[s[0] for s in SCALAR])
def test_scalar_ops(device, name, fn, npfn, gen, s):
    a = gen(3, 4)
    out = check_grad(lambda x: fn(x, s), a, device=device)
    np.testing.assert_allclose(out.numpy(), npfn(a, s), rtol=1e-12)


UNARY = [
    ("negate", ops.negate, np.negative, randn),
    ("log", ops.log, np.log, randpos),
    ("exp", ops.exp, np.exp, randn),
    ("tanh", ops.tanh, np.tanh, randn),
    ("sigmoid", ops.sigmoid, lambda a: 1 / (1 + np.exp(-a)), randn),
    ("relu", ops.relu, lambda a: np.maximum(a, 0), randn),
]


@pytest.mark.parametrize("name,fn,npfn,gen", UNARY, ids=[u[0] for u in UNARY])
def test_unary_ops(device, name, fn, npfn, gen):
    a = gen(2, 3, 4)
    if name == "relu":  # keep away from the kink for central differences
        a = np.where(np.abs(a) < 1e-3, 0.5, a)
    out = check_grad(fn, a, device=device)
    np.testing.assert_allclose(out.numpy(), npfn(a), rtol=1e-12, atol=1e-15)


def test_relu_gradient_is_zero_at_zero(device):
    x = T([-1.0, 0.0, 2.0], device)
    ops.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 1.0])


def test_operators_build_the_course_graph(device):
    a, b = T(randn(2, 3), device), T(randn(2, 3), device)
    c = a - b
    assert isinstance(c.op, ops.EWiseAdd) and isinstance(c.inputs[1].op, ops.Negate)
    assert isinstance((a - 2).op, ops.AddScalar) and (a - 2).op.scalar == -2
    assert isinstance((a + 2).op, ops.AddScalar)
    assert isinstance((a * b).op, ops.EWiseMul) and isinstance((a * 2).op, ops.MulScalar)
    assert isinstance((a / b).op, ops.EWiseDiv) and isinstance((a / 2).op, ops.DivScalar)
    assert isinstance((a ** b).op, ops.EWisePow) and isinstance((a ** 2).op, ops.PowerScalar)
    assert isinstance((a ** np.int64(2)).op, ops.PowerScalar)
    assert isinstance((-a).op, ops.Negate)
    assert isinstance((a @ b.transpose()).op, ops.MatMul)
    an, bn = a.numpy(), b.numpy()
    np.testing.assert_allclose((2 - a).numpy(), 2 - an)
    np.testing.assert_allclose((2 / a).numpy(), 2 / an)
    np.testing.assert_allclose((2 * a).numpy(), 2 * an)
    np.testing.assert_allclose((2 + a).numpy(), 2 + an)
    np.testing.assert_allclose((np.float64(2.0) * a).numpy(), 2 * an)
    np.testing.assert_allclose((a - b).numpy(), an - bn)


def test_dtype_promotion_float32_float64():
    a = ndl.Tensor(np.ones(3, dtype=np.float32))
    b = ndl.Tensor(np.ones(3, dtype=np.float64))
    assert (a + b).dtype == "float64"
    assert (a + 1.5).dtype == "float32"
    assert (a * 2.0).dtype == "float32"


# --------------------------------------------------------------------------- #
# shape ops and reductions
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("shape,axes,perm", [
    ((3, 4), None, (1, 0)), ((2, 3, 4), None, (0, 2, 1)), ((2, 3, 4), (0, 1), (1, 0, 2)),
    ((2, 3, 4, 5), (0, 3), (3, 1, 2, 0)), ((2, 3, 4), (-1, 0), (2, 1, 0))])
def test_transpose(device, shape, axes, perm):
    a = randn(*shape)
    out = check_grad(lambda x: ops.transpose(x, axes), a, device=device)
    np.testing.assert_array_equal(out.numpy(), np.transpose(a, perm))


@pytest.mark.parametrize("shape,new", [((3, 4), (4, 3)), ((2, 3, 4), (6, 4)), ((6,), (1, 2, 3)),
                                       ((2, 3), (-1,)), ((), (1, 1)), ((4, 1), (4,))])
def test_reshape(device, shape, new):
    a = randn(*shape)
    out = check_grad(lambda x: ops.reshape(x, new), a, device=device)
    np.testing.assert_array_equal(out.numpy(), a.reshape(new))


def test_reshape_of_transposed_view(device):
    a = randn(3, 4)
    out = check_grad(lambda x: ops.reshape(ops.transpose(x), (12,)), a, device=device)
    np.testing.assert_array_equal(out.numpy(), a.T.reshape(12))


@pytest.mark.parametrize("shape,new", [((3, 1), (3, 4)), ((1,), (3, 3, 3)), ((), (3, 3, 3)),
                                       ((4,), (2, 3, 4)), ((2, 1, 3), (2, 5, 3)), ((2, 3), (2, 3))])
def test_broadcast_to(device, shape, new):
    a = randn(*shape)
    out = check_grad(lambda x: ops.broadcast_to(x, new), a, device=device)
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to(a, new))


@pytest.mark.parametrize("shape,axes", [((3, 4), None), ((3, 4), 0), ((3, 4), 1), ((2, 3, 4), (0, 2)),
                                        ((2, 3, 4), -1), ((2, 3, 4), (-1, -3)), ((2, 3), ()),
                                        ((1, 3, 1), (0, 2)), ((5,), 0), ((2, 3, 4), (0, 1, 2))])
def test_summation(device, shape, axes):
    a = randn(*shape)
    out = check_grad(lambda x: ops.summation(x, axes), a, device=device)
    expected = a if axes == () else a.sum(axis=axes)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("value", [-2.5, -0.0, np.inf, -np.inf, np.nan])
def test_zero_d_logsumexp_and_logsoftmax_over_the_implicit_axis(device, value):
    # as torch.logsumexp(t, 0) / torch.log_softmax(t, 0) of a 0-d t: the element
    # itself (log(exp(x)); -0.0 gives +0.0), and 0 (nan where x is not finite)
    for axes in (0, -1, (0,), None):
        t = ndl.Tensor(np.float32(value), device=device, requires_grad=True)
        out = ops.logsumexp(t, axes)
        assert out.shape == ()
        np.testing.assert_array_equal(out.numpy(), np.float32(value) + np.float32(0.0))
        if np.isfinite(value):
            out.backward()
            assert t.grad.numpy() == np.float32(1.0)  # exp(x - lse) = 1
    t = ndl.Tensor(np.float32(value), device=device, requires_grad=True)
    y = ops.logsoftmax(t)
    assert y.shape == ()
    np.testing.assert_array_equal(y.numpy(), np.float32(0.0) if np.isfinite(value) else np.float32(np.nan))
    if np.isfinite(value):
        y.backward()
        assert t.grad.numpy() == np.float32(0.0)  # 1 - softmax = 0
    with pytest.raises(ShapeError, match="logsumexp: axis 1 is out of range"):
        ops.logsumexp(t, 1)


def test_split_of_a_zero_d_tensor_is_a_shape_error(device):
    with pytest.raises(ShapeError, match="split: a 0-d tensor has no axis"):
        ops.split(ndl.Tensor(np.float32(1.0), device=device), 0)


def test_summation_none_is_0d():
    assert ops.summation(ndl.Tensor(np.ones((2, 3)))).shape == ()
    assert ndl.Tensor(np.ones((2, 3))).sum().numpy() == 6.0


@pytest.mark.parametrize("shape,axes", [((3, 4), None), ((3, 4), 1), ((2, 3, 4), (0, 2)), ((2, 3), -2)])
def test_max_reduction(device, shape, axes):
    a = randn(*shape)
    out = check_grad(lambda x: ops.max(x, axes), a, device=device)
    np.testing.assert_allclose(out.numpy(), a.max(axis=axes), rtol=1e-12)


def test_max_ties_share_gradient(device):
    x = T([[1.0, 3.0, 3.0]], device)
    ops.max(x, axes=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.0, 0.5, 0.5]])


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((6, 6, 5, 4), (4, 3)), ((5, 4), (6, 6, 4, 3)),
                                   ((3, 2, 1), (3, 3, 1, 2)), ((2, 3, 4), (2, 4, 2)), ((4,), (4, 3)),
                                   ((2, 3, 4), (4,)), ((4,), (4,)), ((1, 3, 4), (5, 4, 2))])
def test_matmul(device, sa, sb):
    a, b = randn(*sa), randn(*sb)
    out = check_grad(ops.matmul, a, b, device=device)
    np.testing.assert_allclose(out.numpy(), np.matmul(a, b), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- #
# logsumexp / logsoftmax
# --------------------------------------------------------------------------- #
def np_lse(a, axes):
    m = a.max(axis=axes, keepdims=True)
    return (np.log(np.exp(a - m).sum(axis=axes, keepdims=True)) + m).squeeze(
        axis=axes if axes is not None else tuple(range(a.ndim)))


@pytest.mark.parametrize("shape,axes", [((3, 4), (1,)), ((3, 4), None), ((2, 3, 4), (0, 2)),
                                        ((2, 3, 4), 1), ((5,), 0), ((2, 3), -1), ((3, 4), (0,))])
def test_logsumexp(device, shape, axes):
    a = randn(*shape) * 3
    out = check_grad(lambda x: ops.logsumexp(x, axes), a, device=device)
    np.testing.assert_allclose(out.numpy(), np_lse(a, axes), rtol=1e-12)


def test_logsumexp_is_stable_for_huge_inputs(device):
    a = np.array([[1e10, 1e10, 1e10], [-1e10, -1e10, 0.0]])
    out = ops.logsumexp(T(a, device), axes=(1,)).numpy()
    np.testing.assert_allclose(out, [1e10 + np.log(3), 0.0], rtol=1e-15)
    out32 = ops.logsumexp(T(a, device, dtype="float32"), axes=(1,)).numpy()
    assert np.all(np.isfinite(out32))
    with np.errstate(all="ignore"):
        masked = ops.logsumexp(T([[-np.inf, -np.inf], [-np.inf, 0.0]], device), axes=(1,)).numpy()
    np.testing.assert_array_equal(masked, [-np.inf, 0.0])


def test_logsoftmax(device):
    a = randn(4, 5) * 3
    out = check_grad(ops.logsoftmax, a, device=device)
    expected = a - np_lse(a, 1)[:, None]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)


# --------------------------------------------------------------------------- #
# tuple ops
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack_and_split(device, axis):
    arrays = [randn(2, 3) for _ in range(3)]
    out = check_grad(lambda *xs: ops.stack(list(xs), axis), *arrays, device=device)
    np.testing.assert_array_equal(out.numpy(), np.stack(arrays, axis))
    big = randn(2, 3, 4)
    ax = axis if axis != 2 else 1
    parts = ops.split(T(big, device), ax)
    assert isinstance(parts, ndl.TensorTuple) and len(parts) == big.shape[ax]
    for i, p in enumerate(parts.tuple()):
        np.testing.assert_array_equal(p.numpy(), np.take(big, i, axis=ax))
    check_grad(lambda x: ops.split(x, ax)[1] * 2.0 + ops.split(x, ax)[0], big, device=device)


def test_many_items_of_one_split(device):
    """Adjoints of every tuple_get_item of one split are summed slot by slot."""
    a = randn(6, 2, 3)
    x = T(a, device)
    parts = ops.split(x, 0)
    out = ops.stack([parts[i] * float(i) + parts[(i + 1) % 6] for i in range(6)], 0)
    (out * out).sum().backward()
    xs = [a[i] * i + a[(i + 1) % 6] for i in range(6)]
    expected = np.zeros_like(a)
    for i in range(6):
        expected[i] += 2 * xs[i] * i
        expected[(i + 1) % 6] += 2 * xs[i]
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)
    check_grad(lambda t: ops.stack([ops.split(t, 1)[j] * float(j + 1) for j in (1, 0, 1)], 2),
               a, device=device)


def test_stack_gradient_is_tensortuple(device):
    xs = [T(randn(2), device) for _ in range(3)]
    s = ops.stack(xs, 0)
    grads = s.op.gradient_as_tuple(T(np.ones((3, 2)), device), s)
    assert len(grads) == 1 and isinstance(grads[0], ndl.TensorTuple)
    assert len(grads[0].tuple()) == 3


def test_make_tuple_and_get_item(device):
    a, b = T(randn(2), device), T(randn(3), device)
    t = ops.make_tuple(a, b)
    assert isinstance(t, ndl.TensorTuple) and len(t) == 2
    assert t[1] is b  # folds to the input
    assert ops.tuple_get_item(t, 0) is a
    item = ops.TupleGetItem(1)(t, fold_const=False)
    np.testing.assert_array_equal(item.numpy(), b.numpy())
    (item * 3.0).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), np.full(3, 3.0))
    assert "needle.TensorTuple" in repr(t)
    u = t + t
    np.testing.assert_array_equal(u[0].numpy(), 2 * a.numpy())
    assert t.detach().requires_grad is False


def test_fused_add_scalars(device):
    a = randn(3)
    x = T(a, device)
    t = ops.fused_add_scalars(x, 1.0, 2.0)
    np.testing.assert_array_equal(t[0].numpy(), a + 1)
    np.testing.assert_array_equal(t[1].numpy(), a + 2)
    (t[0] * 2.0 + t[1] * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, 5.0))


# --------------------------------------------------------------------------- #
# flip / dilate / undilate
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("axes", [None, (0,), (1, 2), (0, 1, 2), -1])
def test_flip(device, axes):
    a = randn(2, 3, 4)
    out = check_grad(lambda x: ops.flip(x, axes), a, device=device)
    np.testing.assert_array_equal(out.numpy(), np.flip(a, axes))


@pytest.mark.parametrize("shape,axes,d", [((2, 3), (0,), 1), ((2, 3), (0, 1), 2), ((2, 3), (1,), 0),
                                          ((2, 3), (2,), 1), ((2, 3, 2), (1, 2), 1)])
def test_dilate_undilate(device, shape, axes, d):
    a = randn(*shape)
    out = check_grad(lambda x: ops.dilate(x, axes, d), a, device=device)
    expected = a
    for ax in axes:
        if ax >= a.ndim:
            continue
        n = expected.shape[ax]
        new = list(expected.shape)
        new[ax] = n * (d + 1)
        z = np.zeros(new)
        idx = [slice(None)] * a.ndim
        idx[ax] = slice(None, None, d + 1)
        z[tuple(idx)] = expected
        expected = z
    np.testing.assert_array_equal(out.numpy(), expected)
    back = check_grad(lambda x: ops.undilate(x, axes, d), expected, device=device)
    np.testing.assert_array_equal(back.numpy(), a)


def test_undilate_of_odd_size(device):
    check_grad(lambda x: ops.undilate(x, (0,), 1), randn(5, 2), device=device)


# --------------------------------------------------------------------------- #
# conv and pooling
# --------------------------------------------------------------------------- #
def np_conv(a, b, stride, padding):
    a = np.pad(a, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    N, H, W, C = a.shape
    K, _, _, Co = b.shape
    Ho, Wo = (H - K) // stride + 1, (W - K) // stride + 1
    out = np.zeros((N, Ho, Wo, Co))
    for i in range(K):
        for j in range(K):
            patch = a[:, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride, :]
            out += patch @ b[i, j]
    return out


CONV_CASES = [((2, 5, 5, 2), 3, 3, 1, 0), ((1, 5, 5, 2), 3, 1, 1, 1), ((2, 6, 6, 1), 3, 2, 2, 1),
              ((1, 7, 6, 2), 3, 2, 3, 0), ((1, 4, 4, 2), 1, 2, 1, 0), ((1, 5, 5, 1), 2, 1, 2, 2),
              ((1, 3, 3, 1), 3, 1, 1, 3)]


@pytest.mark.parametrize("shape,k,cout,stride,padding", CONV_CASES, ids=str)
def test_conv(device, shape, k, cout, stride, padding):
    a, b = randn(*shape), randn(k, k, shape[3], cout)
    out = check_grad(lambda x, w: ops.conv(x, w, stride=stride, padding=padding), a, b, device=device)
    np.testing.assert_allclose(out.numpy(), np_conv(a, b, stride, padding), rtol=1e-10, atol=1e-12)


def test_conv_defaults():
    assert ops.Conv().padding == 0 and ops.Conv().stride == 1
    a = ndl.Tensor(np.ones((1, 4, 4, 1)))
    w = ndl.Tensor(np.ones((3, 3, 1, 1)))
    assert ops.conv(a, w).shape == (1, 4, 4, 1)  # function default padding=1


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (3, 0), (2, 2)])
def test_conv_matches_torch(device, stride, padding):
    torch = pytest.importorskip("torch")
    a, b = randn(2, 7, 6, 3), randn(3, 3, 3, 4)
    x, w = T(a, device), T(b, device)
    y = ops.conv(x, w, stride=stride, padding=padding)
    g = randn(*y.shape)
    (y * T(g, device, requires_grad=False)).sum().backward()
    tx = torch.tensor(a.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(b.transpose(3, 2, 0, 1), requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=padding)
    ty.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-10, atol=1e-12)


def test_conv_second_order(device):
    """Gradients of conv gradients (conv_grad_input / conv_grad_weight are differentiable)."""
    a, b = randn(1, 5, 5, 2), randn(3, 3, 2, 2)
    check_grad(lambda x, w: ops.conv(x, w, stride=2, padding=1) ** 2, a, b, device=device)
    x, w = T(a, device), T(b, device)
    y = (ops.conv(x, w, stride=2, padding=1) ** 2).sum()
    y.backward()
    gx = x.grad
    # d/dw of sum(gx * v) against finite differences
    v = randn(*a.shape)
    (gx * T(v, device, requires_grad=False)).sum().backward()
    got = w.grad.numpy()

    def gx_of(bb):
        xx, ww = T(a, device), T(bb, device)
        (ops.conv(xx, ww, stride=2, padding=1) ** 2).sum().backward()
        return (xx.grad.numpy() * v).sum()

    num = np.zeros_like(b)
    eps = 1e-6
    for j in range(b.size):
        bp, bm = b.copy(), b.copy()
        bp.reshape(-1)[j] += eps
        bm.reshape(-1)[j] -= eps
        num.reshape(-1)[j] = (gx_of(bp) - gx_of(bm)) / (2 * eps)
    np.testing.assert_allclose(got, num, rtol=1e-5, atol=1e-6)

    # d/dx of sum(gw * V): differentiates the weight adjoint (ConvGradWeight.gradient)
    x, w = T(a, device), T(b, device)
    (ops.conv(x, w, stride=2, padding=1) ** 2).sum().backward()
    V = randn(*b.shape)
    (w.grad * T(V, device, requires_grad=False)).sum().backward()
    got_x = x.grad.numpy()

    def gw_of(aa):
        xx, ww = T(aa, device), T(b, device)
        (ops.conv(xx, ww, stride=2, padding=1) ** 2).sum().backward()
        return (ww.grad.numpy() * V).sum()

    num_x = np.zeros_like(a)
    for j in range(a.size):
        ap, am = a.copy(), a.copy()
        ap.reshape(-1)[j] += eps
        am.reshape(-1)[j] -= eps
        num_x.reshape(-1)[j] = (gw_of(ap) - gw_of(am)) / (2 * eps)
    np.testing.assert_allclose(got_x, num_x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k,s", [(2, 2), (3, 1), (3, 2)])
def test_pooling(device, k, s):
    a = randn(2, 6, 5, 3)
    N, H, W, C = a.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    win = np.stack([a[:, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s, :]
                    for i in range(k) for j in range(k)], axis=0)
    out = check_grad(lambda x: ops.max_pool2d(x, k, s), a, device=device)
    np.testing.assert_allclose(out.numpy(), win.max(axis=0))
    out = check_grad(lambda x: ops.avg_pool2d(x, k, s), a, device=device)
    np.testing.assert_allclose(out.numpy(), win.mean(axis=0), rtol=1e-12)


def test_pooling_matches_torch(device):
    torch = pytest.importorskip("torch")
    a = randn(2, 6, 6, 3)
    for ours, theirs in [(ops.max_pool2d, torch.nn.functional.max_pool2d),
                         (ops.avg_pool2d, torch.nn.functional.avg_pool2d)]:
        x = T(a, device)
        y = ours(x, 2, 2)
        y.sum().backward()
        tx = torch.tensor(a.transpose(0, 3, 1, 2), requires_grad=True)
        ty = theirs(tx, 2, 2)
        ty.sum().backward()
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-12)
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-12)


# --------------------------------------------------------------------------- #
# PyTorch oracle for a composite expression
# --------------------------------------------------------------------------- #
def test_mlp_gradients_match_torch():
    torch = pytest.importorskip("torch")
    x, w1, b1, w2 = randn(8, 5), randn(5, 6), randn(1, 6), randn(6, 4)
    X, W1, B1, W2 = (ndl.Tensor(v) for v in (x, w1, b1, w2))
    h = ops.relu(X @ W1 + ops.broadcast_to(B1, (8, 6)))
    loss = (ops.logsumexp(h @ W2, axes=(1,)) - ops.tanh(h).sum(axes=(1,))).sum() / 8
    loss.backward()
    tX, tW1, tB1, tW2 = (torch.tensor(v, requires_grad=True) for v in (x, w1, b1, w2))
    th = torch.relu(tX @ tW1 + tB1)
    tl = (torch.logsumexp(th @ tW2, dim=1) - torch.tanh(th).sum(dim=1)).sum() / 8
    tl.backward()
    np.testing.assert_allclose(loss.numpy(), tl.item(), rtol=1e-12)
    for ours, theirs in [(X, tX), (W1, tW1), (B1, tB1), (W2, tW2)]:
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_bad_shapes_raise_shape_error():
    a = ndl.Tensor(np.ones((2, 3)))
    with pytest.raises(ShapeError, match="add"):
        a + ndl.Tensor(np.ones((4,)))
    with pytest.raises(ShapeError, match="reshape"):
        ops.reshape(a, (4, 2))
    with pytest.raises(ShapeError, match="matmul"):
        a @ ndl.Tensor(np.ones((2, 3)))
    with pytest.raises(ShapeError, match="summation"):
        ops.summation(a, axes=2)
    with pytest.raises(ShapeError, match="broadcast_to"):
        ops.broadcast_to(a, (3, 3))
    with pytest.raises(ShapeError, match="transpose"):
        ops.transpose(a, (0, 5))
    with pytest.raises(ShapeError, match="stack"):
        ops.stack([a, ndl.Tensor(np.ones((3, 2)))], 0)
    with pytest.raises(ShapeError, match="conv"):
        ops.conv(ndl.Tensor(np.ones((1, 4, 4, 2))), ndl.Tensor(np.ones((3, 3, 3, 1))))
    with pytest.raises(ShapeError, match="logsumexp"):
        ops.logsumexp(a, axes=(3,))


def test_device_mismatch_names_both_devices():
    # a second device served by the numpy backend under another name
    other = nd.BackendDevice("numpy_twin", nd.cpu_numpy().mod)
    a = ndl.Tensor(np.ones(3), device=nd.cpu_numpy())
    b = ndl.Tensor(np.ones(3), device=other)
    x4 = ndl.Tensor(np.ones((1, 3, 3, 1)), device=nd.cpu_numpy())
    w4 = ndl.Tensor(np.ones((3, 3, 1, 1)), device=other)
    for fn in (lambda: ops.conv(x4, w4), lambda: a + b, lambda: a * b, lambda: ops.matmul(ops.reshape(a, (1, 3)),
                                                                ops.reshape(b, (3, 1)))):
        with pytest.raises(DeviceMismatchError) as info:
            fn()
        assert "cpu_numpy()" in str(info.value) and "numpy_twin()" in str(info.value)


def test_logsoftmax_of_a_one_d_tensor_over_its_only_axis(device):
    x = np.array([1.0, -2.0, 0.5, 3.0])
    t = ndl.Tensor(x, device=device, dtype="float64", requires_grad=True)
    y = ops.logsoftmax(t)
    want = x - np.log(np.exp(x).sum())
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12)
    (y * ndl.Tensor(np.array([1.0, 0.0, 2.0, -1.0]), device=device, dtype="float64")).sum().backward()
    g = np.array([1.0, 0.0, 2.0, -1.0])
    np.testing.assert_allclose(t.grad.numpy(), g - np.exp(want) * g.sum(), rtol=1e-12)
