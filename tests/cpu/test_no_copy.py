"""Products and binary element-wise ops on the cpu device read transposed,
permuted and broadcast operands in place: the backend's ``compact`` kernel is
never called for them (checked by making it raise), and the values match
NumPy."""

import numpy as np
import pytest

import needle.backend_ndarray as nd


@pytest.fixture
def no_compact(monkeypatch):
    """The cpu device, its backend's compact kernel made to fail loudly."""
    dev = nd.cpu()
    probe = nd.array(np.zeros(1, np.float32), device=dev)

    def refuse(*args, **kwargs):
        raise AssertionError("compact was called before a kernel that reads strides in place")

    monkeypatch.setattr(probe._be, "compact", refuse)
    return dev


def _arr(rng, shape, dev):
    x = rng.standard_normal(shape).astype(np.float32)
    return x, nd.array(x, device=dev)


def _close(got, expect, k=1):
    tol = 1e-5 * max(k, 1)
    np.testing.assert_allclose(got.numpy(), expect, rtol=tol, atol=tol)


@pytest.mark.parametrize("m,n,p", [(100, 128, 10), (128, 10, 100), (37, 300, 41), (256, 256, 256)])
def test_transposed_products_read_in_place(no_compact, m, n, p):
    rng = np.random.default_rng(m + n + p)
    at, At = _arr(rng, (n, m), no_compact)   # A stored transposed
    bt, Bt = _arr(rng, (p, n), no_compact)   # B stored transposed
    a, A = _arr(rng, (m, n), no_compact)
    b, B = _arr(rng, (n, p), no_compact)
    _close(At.permute((1, 0)) @ B, at.T.astype(np.float64) @ b, n)
    _close(A @ Bt.permute((1, 0)), a.astype(np.float64) @ bt.T, n)
    _close(At.permute((1, 0)) @ Bt.permute((1, 0)), at.T.astype(np.float64) @ bt.T, n)


def test_sliced_product_reads_in_place(no_compact):
    rng = np.random.default_rng(1)
    a, A = _arr(rng, (40, 30), no_compact)
    b, B = _arr(rng, (50, 20), no_compact)
    _close(A[3:33:2, 1:26] @ B[5:30, ::2], a[3:33:2, 1:26].astype(np.float64) @ b[5:30, ::2], 25)


def test_attention_permutes_read_in_place(no_compact):
    """(batch, seq, heads, dim) permuted to (batch, heads, seq, dim): the batch
    axes do not collapse into one stride, still no copy."""
    rng = np.random.default_rng(2)
    q, Q = _arr(rng, (4, 16, 3, 8), no_compact)
    k, K = _arr(rng, (4, 16, 3, 8), no_compact)
    s = Q.permute((0, 2, 1, 3)) @ K.permute((0, 2, 3, 1))
    ref = q.transpose(0, 2, 1, 3).astype(np.float64) @ k.transpose(0, 2, 3, 1)
    _close(s, ref, 8)
    v, V = _arr(rng, (4, 16, 3, 8), no_compact)
    o = s @ V.permute((0, 2, 1, 3))
    _close(o, ref.astype(np.float32).astype(np.float64) @ v.transpose(0, 2, 1, 3), 16 * 8)


def test_broadcast_batch_and_1d_operands_read_in_place(no_compact):
    rng = np.random.default_rng(3)
    a, A = _arr(rng, (5, 7, 9), no_compact)
    w, W = _arr(rng, (9, 4), no_compact)
    _close(A @ W, a.astype(np.float64) @ w, 9)
    v, V = _arr(rng, (9,), no_compact)
    _close(A @ V, a.astype(np.float64) @ v, 9)
    u, U = _arr(rng, (7,), no_compact)
    _close(U @ A, u.astype(np.float64) @ a, 7)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "truediv", "maximum", "eq", "ge", "pow"])
def test_broadcast_and_transposed_ewise_read_in_place(no_compact, op):
    rng = np.random.default_rng(4)
    x, X = _arr(rng, (64, 48), no_compact)
    bias, Bias = _arr(rng, (1, 48), no_compact)
    col, Col = _arr(rng, (64, 1), no_compact)
    xt, Xt = _arr(rng, (48, 64), no_compact)
    if op == "pow":
        x, X = np.abs(x) + 0.5, nd.array(np.abs(x) + 0.5, device=no_compact)
    ref_fn = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.divide,
              "maximum": np.maximum, "eq": lambda a, b: (a == b).astype(np.float32),
              "ge": lambda a, b: (a >= b).astype(np.float32), "pow": np.power}[op]
    nd_fn = {"maximum": lambda a, b: a.maximum(b), "eq": lambda a, b: a == b,
             "ge": lambda a, b: a >= b, "pow": lambda a, b: a ** b}.get(
        op, lambda a, b: getattr(a, f"__{op}__")(b))
    with np.errstate(all="ignore"):
        for Y, y in ((Bias, bias), (Col, col), (Xt.permute((1, 0)), xt.T)):
            got = nd_fn(X, Y).numpy()
            expect = ref_fn(x, y).astype(np.float32)
            np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6, err_msg=op)
            got = nd_fn(Y.broadcast_to(X.shape) if Y.shape != X.shape else Y, X).numpy()
            expect = ref_fn(np.broadcast_to(y, x.shape), x).astype(np.float32)
            np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6, err_msg=op)


def test_relu_grad_reads_in_place(no_compact):
    rng = np.random.default_rng(5)
    x, X = _arr(rng, (32, 20), no_compact)
    g, G = _arr(rng, (20, 32), no_compact)
    got = X.relu_grad(G.permute((1, 0))).numpy()
    np.testing.assert_array_equal(got, np.where(x > 0, g.T, 0).astype(np.float32))


def test_strided_ewise_equals_compact_path_bitwise():
    """The strided kernel's values are the compact kernel's (NaN and ties included)."""
    dev = nd.cpu()
    rng = np.random.default_rng(6)
    x = rng.integers(-2, 3, (33, 70)).astype(np.float32)
    x[3, 5] = np.nan
    y = rng.integers(-2, 3, (70, 33)).astype(np.float32)
    y[7, 1] = np.nan
    X, Y = nd.array(x, device=dev), nd.array(y, device=dev)
    Yc = nd.array(np.ascontiguousarray(y.T), device=dev)
    for f in (lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a.maximum(b),
              lambda a, b: a == b, lambda a, b: a >= b, lambda a, b: a / b):
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(f(X, Y.permute((1, 0))).numpy(), f(X, Yc).numpy())


@pytest.mark.parametrize("device", ["cpu", "cpu_numpy"])
def test_dense_prefix_views_are_not_taken_for_whole_buffers(device):
    """A view with compact strides and offset 0 that covers only the start of
    its buffer (x[:3]) must not reach a kernel that reads whole buffers."""
    dev = nd.device(device)
    x = np.arange(10, dtype=np.float32)
    y = np.arange(3, dtype=np.float32) * 10
    X, Y = nd.array(x, device=dev), nd.array(y, device=dev)
    np.testing.assert_array_equal((X[:3] + Y).numpy(), x[:3] + y)
    np.testing.assert_array_equal((Y * X[:3]).numpy(), y * x[:3])
    np.testing.assert_array_equal(X[:3].relu_grad(Y).numpy(), np.where(x[:3] > 0, y, 0))


@pytest.mark.parametrize("op", ["relu", "scale", "exp", "add", "mul", "relu_grad"])
def test_elementwise_ops_keep_a_permuted_operands_memory_order(no_compact, op):
    """An NCHW view of NHWC (channels-last) data: element-wise results stay
    channels-last (same strides, a new whole buffer) instead of being
    transposed by a copy, as PyTorch's do -- conv -> batch norm -> ReLU ->
    conv then never copies an activation."""
    rng = np.random.default_rng(3)
    x, X = _arr(rng, (4, 5, 6, 3), no_compact)       # NHWC storage
    y, Y = _arr(rng, (4, 5, 6, 3), no_compact)
    Xv, Yv = X.permute((0, 3, 1, 2)), Y.permute((0, 3, 1, 2))   # NCHW views
    xv, yv = x.transpose(0, 3, 1, 2), y.transpose(0, 3, 1, 2)
    got, expect = {
        "relu": (Xv.maximum(0.0), np.maximum(xv, 0)),
        "scale": (Xv * 2.5, xv * 2.5),
        "exp": (Xv.exp(), np.exp(xv)),
        "add": (Xv + Yv, xv + yv),
        "mul": (Xv * Yv, xv * yv),
        "relu_grad": (Xv.relu_grad(Yv), np.where(xv > 0, yv, 0)),
    }[op]
    assert got.shape == Xv.shape and got.strides == Xv.strides
    assert got._handle is not X._handle
    _close(got, expect)
    # and back in NHWC order it is a compact array: the next conv reads it as is
    assert got.permute((0, 2, 3, 1)).is_compact()


def test_size_one_axes_strides_compact_without_a_copy(no_compact):
    """A (N, 1, 1, C) view whose size-1 axes carry other strides (a 1x1 feature
    map seen through a permute) is row-major already: compact() gives a view."""
    rng = np.random.default_rng(4)
    x, X = _arr(rng, (8, 1, 1, 5), no_compact)
    V = nd.NDArray.make((8, 1, 1, 5), strides=(5, 1, 1, 1), device=no_compact, handle=X._handle)
    assert not V.is_compact()
    C = V.compact()
    assert C.is_compact() and C._handle is X._handle
    _close(C, x)


def test_conv_compacts_a_permuted_input_batch_once_for_forward_and_weight_gradient(monkeypatch):
    """nn.Conv on an NCHW data batch sees an NHWC view: the forward compacts
    it, and the weight gradient reuses that copy instead of making another."""
    import needle as ndl
    from needle import nn
    dev = nd.cpu()
    rng = np.random.default_rng(7)
    x_np = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    conv = nn.Conv(3, 5, 3, stride=2, device=dev)
    x = ndl.Tensor(x_np, device=dev)
    be = x.cached_data._be
    shapes = []
    real = be.compact

    def counting(src, out, shape, strides, offset):
        shapes.append(tuple(shape))
        return real(src, out, shape, strides, offset)
    monkeypatch.setattr(be, "compact", counting)
    y = conv(x)
    y.sum().backward()
    assert shapes.count((4, 9, 9, 3)) == 1
    # the weight gradient is the one of the composed reference
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x_np)
    tw = torch.tensor(conv.weight.numpy().transpose(3, 2, 0, 1), requires_grad=True)
    torch.nn.functional.conv2d(tx, tw, torch.tensor(conv.bias.numpy()), stride=2, padding=1).sum().backward()
    np.testing.assert_allclose(conv.weight.grad.numpy(), tw.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-4, atol=1e-4)
