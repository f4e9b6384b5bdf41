"""Op behaviour that surviving mutants showed no test pinned (scripts/mutation.sh)."""

import numpy as np
import pytest

import needle as ndl
from needle.errors import ShapeError


def test_logsumexp_over_an_empty_axis_is_refused_on_every_backend(device):
    # the fused kernel (cpu) must not be reached with an empty row: it would
    # return -inf where the composition raises, and the backends would disagree
    x = ndl.Tensor(np.zeros((3, 0), np.float32), device=device)
    with pytest.raises(ShapeError, match="zero-size reduction"):
        ndl.ops.logsumexp(x, axes=(1,))
    # reducing the non-empty axis instead gives an empty result, no error
    assert ndl.ops.logsumexp(x, axes=(0,)).shape == (0,)


def test_logsoftmax_op_honours_its_axes(device):
    # the course's logsoftmax is over the last axis; the op class takes any axes
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3))
    t = ndl.Tensor(x, device=device, dtype="float64")
    out = ndl.ops.LogSoftmax(axes=(0,))(t).numpy()
    m = x.max(axis=0, keepdims=True)
    want = x - (m + np.log(np.exp(x - m).sum(axis=0, keepdims=True)))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ndl.ops.logsoftmax(t).numpy(),
                               x - np.log(np.exp(x).sum(axis=1, keepdims=True)), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- #
# core/ops/ops_mathematic.py survivors (bash scripts/mutation.sh core/ops/ops_mathematic.py)
# --------------------------------------------------------------------------- #
def _t(x, device):
    return ndl.Tensor(np.asarray(x, dtype=np.float64), device=device, dtype="float64")


def test_array_operand_is_a_constant_that_asks_no_adjoint(device):
    x = _t([[1.0, 2.0]], device)
    out = x + np.array([[3.0, 4.0]])
    assert out.inputs[1].requires_grad is False
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 1.0]])


def test_unbroadcast_sums_only_the_stretched_axes(device):
    # (1, 1) + (5, 3, 1): the adjoint of the (1, 1) operand sums the new
    # leading axis and the stretched axis 1, not the size-1 trailing one
    a = _t(np.full((1, 1), 2.0), device)
    b = _t(np.arange(15.0).reshape(5, 3, 1), device)
    ((a + b) * b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [[np.arange(15.0).sum()]])
    np.testing.assert_allclose(b.grad.numpy(), 2 * np.arange(15.0).reshape(5, 3, 1) + 2.0)


@pytest.mark.parametrize("s,want", [(1, [1.0, 1.0, 1.0]), (0, [0.0, 0.0, 0.0]), (2, [0.0, 2.0, 4.0])])
def test_power_scalar_gradient_at_small_exponents(device, s, want):
    # x ** 1 has gradient 1 and x ** 0 gradient 0 -- also at x = 0, where the
    # general s * x ** (s - 1) would give 0 * inf
    x = _t([0.0, 1.0, 2.0], device)
    (x ** s).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), want)


def test_transpose_axes_bounds(device):
    x = _t(np.arange(6.0).reshape(2, 3), device)
    np.testing.assert_array_equal(ndl.ops.transpose(x, (-2, -1)).numpy(), np.arange(6.0).reshape(2, 3).T)
    np.testing.assert_array_equal(ndl.ops.transpose(x, (1, -2)).numpy(), np.arange(6.0).reshape(2, 3).T)
    for bad in ((2, 0), (0, 2), (-3, 0), (0, -3)):
        with pytest.raises(ShapeError, match="out of range"):
            ndl.ops.transpose(x, bad)


def test_reshape_and_broadcast_to_take_lists(device):
    # the course's attention helper passes lists; the ops keep tuples
    x = _t(np.arange(6.0), device)
    r = ndl.ops.reshape(x, [2, 3])
    assert r.shape == (2, 3) and type(ndl.ops.Reshape([2, 3]).shape) is tuple
    b = ndl.ops.broadcast_to(_t([[1.0, 2.0, 3.0]], device), [2, 3])
    assert b.shape == (2, 3) and type(ndl.ops.BroadcastTo([2, 3]).shape) is tuple
    (r * b).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 3.0, 1.0, 2.0, 3.0])


def test_max_keeps_dims_when_asked_and_names_itself_in_errors(device):
    x = _t([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], device)
    m = ndl.ops.max(x, axes=1, keepdims=True)
    assert m.shape == (2, 1)
    np.testing.assert_array_equal(m.numpy(), [[5.0], [7.0]])
    with pytest.raises(ShapeError, match="max"):
        ndl.ops.max(x, axes=4)
    with pytest.raises(ShapeError, match="summation"):
        ndl.ops.summation(x, axes=4)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4,)), ((4,), (2, 4, 3))])
def test_matmul_with_one_vector_operand_gradients(device, sa, sb):
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    ta, tb = _t(a, device), _t(b, device)
    out = ndl.ops.matmul(ta, tb)
    np.testing.assert_allclose(out.numpy(), np.matmul(a, b), rtol=1e-12)
    g = rng.standard_normal(out.shape)
    out.backward(_t(g, device))
    # reference adjoints through NumPy's matmul with the vector as a matrix
    A = a if a.ndim > 1 else a[None, :]
    B = b if b.ndim > 1 else b[:, None]
    G = g.reshape(np.matmul(A, B).shape)
    ga = np.matmul(G, np.swapaxes(B, -1, -2))
    gb = np.matmul(np.swapaxes(A, -1, -2), G)
    while ga.ndim > A.ndim:
        ga = ga.sum(0)
    while gb.ndim > B.ndim:
        gb = gb.sum(0)
    np.testing.assert_allclose(ta.grad.numpy(), ga.reshape(a.shape), rtol=1e-10)
    np.testing.assert_allclose(tb.grad.numpy(), gb.reshape(b.shape), rtol=1e-10)


def test_dilate_axes_int_negative_and_out_of_range(device):
    x = _t([[1.0, 2.0], [3.0, 4.0]], device)
    want0 = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_array_equal(ndl.ops.dilate(x, 0, 1).numpy(), want0)         # an int axis
    np.testing.assert_array_equal(ndl.ops.dilate(x, (-2,), 1).numpy(), want0)      # -ndim is axis 0
    np.testing.assert_array_equal(ndl.ops.dilate(x, (5, 0), 1).numpy(), want0)     # 5 ignored, 0 kept
    np.testing.assert_array_equal(ndl.ops.dilate(x, (-3,), 1).numpy(), x.numpy())  # out of range: ignored
    np.testing.assert_array_equal(ndl.ops.undilate(ndl.ops.dilate(x, (5, 0), 1), (5, 0), 1).numpy(),
                                  x.numpy())


# --------------------------------------------------------------------------- #
# core/ops/ops_pooling.py survivors
# --------------------------------------------------------------------------- #
def test_pool_sizes_square_tuples_and_bad_values(device):
    x = _t(np.arange(32.0).reshape(1, 4, 4, 2), device)
    want = ndl.ops.max_pool2d(x, 2).numpy()
    np.testing.assert_array_equal(ndl.ops.max_pool2d(x, (2, 2)).numpy(), want)
    np.testing.assert_array_equal(ndl.ops.max_pool2d(x, [2, 2], stride=(2, 2)).numpy(), want)
    np.testing.assert_array_equal(ndl.ops.max_pool2d(x, (2,)).numpy(), want)   # a 1-tuple
    for bad in ((2, 3), (), 0, -1, 2.5, "2"):
        with pytest.raises(ShapeError, match="max_pool2d"):
            ndl.ops.max_pool2d(x, bad)
    with pytest.raises(ShapeError, match="avg_pool2d: stride"):
        ndl.ops.avg_pool2d(x, 2, stride=0)


def test_pool_window_as_large_as_the_input_and_larger(device):
    x = _t(np.arange(8.0).reshape(1, 2, 2, 2), device)
    np.testing.assert_array_equal(ndl.ops.max_pool2d(x, 2).numpy(), [[[[6.0, 7.0]]]])   # H == W == k
    wide = _t(np.zeros((1, 1, 4, 1)), device)                                            # H < k <= W
    with pytest.raises(ShapeError, match="exceeds"):
        ndl.ops.avg_pool2d(wide, 2)
    tall = _t(np.zeros((1, 4, 1, 1)), device)                                            # W < k <= H
    with pytest.raises(ShapeError, match="exceeds"):
        ndl.ops.avg_pool2d(tall, 2)


def test_im2col_windows_and_their_adjoint(device):
    a = np.arange(2 * 3 * 3 * 2, dtype=np.float64).reshape(2, 3, 3, 2)
    x = _t(a, device)
    cols = ndl.ops.im2col(x, 2, 1)
    want = np.lib.stride_tricks.sliding_window_view(a, (2, 2), axis=(1, 2))   # (N, Ho, Wo, C, k, k)
    np.testing.assert_array_equal(cols.numpy(), want.transpose(0, 1, 2, 4, 5, 3))
    cols.sum().backward()
    # each input pixel receives one 1 per window that covers it
    cover = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64)
    np.testing.assert_array_equal(x.grad.numpy(), np.broadcast_to(cover[None, :, :, None], a.shape))


def test_max_pool_ties_share_the_adjoint(device):
    x = _t(np.array([3.0, 3.0, 1.0, 3.0]).reshape(1, 2, 2, 1), device)
    ndl.ops.max_pool2d(x, 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy().ravel(), [1 / 3, 1 / 3, 0.0, 1 / 3])


def test_pool_modules_refuse_non_square_windows():
    # (2, 2) is 2, as the course's kernel_size tuples; (2, 3) was cut to 2 silently
    assert ndl.nn.MaxPool2d((2, 2)).kernel_size == 2
    assert ndl.nn.AvgPool2d(2, stride=[1, 1]).stride == 1
    for bad in ((2, 3), ()):
        with pytest.raises(ShapeError, match="MaxPool2d: kernel_size"):
            ndl.nn.MaxPool2d(bad)
    with pytest.raises(ShapeError, match="AvgPool2d: stride"):
        ndl.nn.AvgPool2d(2, stride=(1, 2))
