"""Every kernel against NumPy on a real GPU.  Skipped, with the backend's own
reason, where no GPU is usable."""

import numpy as np
import pytest

from needle_cuda import CudaBackend

_BE = CudaBackend()
AVAILABLE, REASON = _BE.is_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not AVAILABLE, reason=REASON or "cuda unavailable")]

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


def dev(x, dtype=None):
    x = np.ascontiguousarray(x, dtype=dtype or x.dtype)
    buf = _BE.Array(x.size, x.dtype)
    _BE.from_numpy(x.ravel(), buf)
    return buf


def host(buf, shape=None):
    shape = shape or (buf.size,)
    strides = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    return _BE.to_numpy(buf, shape, strides, 0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 4, 1000, 4097, 1 << 20])
def test_roundtrip_and_fill(dtype, n, rng):
    x = rng.standard_normal(n).astype(dtype)
    b = dev(x)
    np.testing.assert_array_equal(host(b), x)
    _BE.fill(b, -3.25)
    np.testing.assert_array_equal(host(b), np.full(n, -3.25, dtype))


BINARY = {
    "ewise_add": np.add, "ewise_sub": np.subtract, "ewise_mul": np.multiply, "ewise_div": np.divide,
    "ewise_maximum": np.maximum, "ewise_eq": lambda a, b: (a == b).astype(a.dtype),
    "ewise_ge": lambda a, b: (a >= b).astype(a.dtype), "ewise_pow": np.power,
    "ewise_relu_grad": lambda a, g: g * (a > 0),
}
UNARY = {"ewise_neg": np.negative, "ewise_log": np.log, "ewise_exp": np.exp, "ewise_tanh": np.tanh,
         "ewise_sqrt": np.sqrt}
SCALAR = {
    "scalar_add": np.add, "scalar_sub": np.subtract, "scalar_mul": np.multiply, "scalar_div": np.divide,
    "scalar_rdiv": lambda a, v: v / a, "scalar_power": np.power, "scalar_maximum": np.maximum,
    "scalar_eq": lambda a, v: (a == v).astype(a.dtype), "scalar_ge": lambda a, v: (a >= v).astype(a.dtype),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("n", [5, 1027, 300001])
def test_binary(name, dtype, n, rng):
    a = rng.standard_normal(n).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    if name == "ewise_pow":
        a = np.abs(a) + 0.1
    if name == "ewise_eq":
        b[::3] = a[::3]
    out = _BE.Array(n, dtype)
    getattr(_BE, name)(dev(a), dev(b), out)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(host(out), BINARY[name](a, b), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, dtype, rng):
    a = rng.standard_normal(10007).astype(dtype)
    if name in ("ewise_log", "ewise_sqrt"):
        a = np.abs(a) + 1e-3
    out = _BE.Array(a.size, dtype)
    getattr(_BE, name)(dev(a), out)
    np.testing.assert_allclose(host(out), UNARY[name](a), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(SCALAR))
@pytest.mark.parametrize("val", [2.0, -0.5, 3])
def test_scalar(name, dtype, val, rng):
    a = rng.standard_normal(4099).astype(dtype)
    if name == "scalar_power":
        a = np.abs(a) + 0.1
    if name == "scalar_eq":
        a[::7] = val
    out = _BE.Array(a.size, dtype)
    getattr(_BE, name)(dev(a), val, out)
    with np.errstate(all="ignore"):
        ref = SCALAR[name](a, a.dtype.type(val))
    np.testing.assert_allclose(host(out), ref, **TOL[dtype])


def test_special_values_match_numpy():
    a = np.array([0.0, -1.0, np.inf, -np.inf, np.nan, 2.0], np.float32)
    b = np.array([0.0, 0.0, 1.0, np.nan, 1.0, -np.inf], np.float32)
    for name, ref in [("ewise_div", np.divide), ("ewise_maximum", np.maximum)]:
        out = _BE.Array(a.size)
        getattr(_BE, name)(dev(a), dev(b), out)
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(host(out), ref(a, b))
    out = _BE.Array(a.size)
    _BE.ewise_log(dev(a), out)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(host(out), np.log(a))


def _strided_cases():
    return [
        ((3, 4), (4, 1), 0), ((4, 3), (1, 4), 0), ((2, 3, 4), (12, 1, 3), 0),
        ((5, 6), (0, 1), 2), ((2, 2, 2, 2, 2, 2, 2, 2, 2), (256, 128, 64, 32, 16, 8, 4, 2, 1), 0),
        ((3, 1, 5), (10, 7, 2), 1), ((64, 65), (130, 2), 3),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,strides,offset", _strided_cases())
def test_compact_setitem(shape, strides, offset, dtype, rng):
    size = offset + sum((n - 1) * s for n, s in zip(shape, strides)) + 1
    base = rng.standard_normal(size).astype(dtype)
    item = base.itemsize
    view = np.lib.stride_tricks.as_strided(base[offset:], shape, [s * item for s in strides])
    out = _BE.Array(view.size, dtype)
    src = dev(base)
    _BE.compact(src, out, shape, strides, offset)
    np.testing.assert_array_equal(host(out), view.ravel())
    np.testing.assert_array_equal(_BE.to_numpy(src, shape, strides, offset), view)
    if all(s > 0 for n, s in zip(shape, strides) if n > 1):
        vals = rng.standard_normal(view.size).astype(dtype)
        expect = base.copy()
        np.lib.stride_tricks.as_strided(expect[offset:], shape, [s * item for s in strides])[...] = \
            vals.reshape(shape)
        _BE.ewise_setitem(dev(vals), src, shape, strides, offset)
        np.testing.assert_array_equal(host(src), expect)
        np.lib.stride_tricks.as_strided(expect[offset:], shape, [s * item for s in strides])[...] = 7.5
        _BE.scalar_setitem(view.size, 7.5, src, shape, strides, offset)
        np.testing.assert_array_equal(host(src), expect)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,R", [(1, 1), (7, 3), (1000, 33), (3, 5000), (300, 2048), (5, 100000)])
def test_reductions(rows, R, dtype, rng):
    a = rng.standard_normal((rows, R)).astype(dtype)
    out = _BE.Array(rows, dtype)
    _BE.reduce_sum(dev(a), out, R)
    np.testing.assert_allclose(host(out), a.sum(axis=1), rtol=1e-4 if dtype == "float32" else 1e-10,
                               atol=1e-3 if dtype == "float32" else 1e-9)
    _BE.reduce_max(dev(a), out, R)
    np.testing.assert_array_equal(host(out), a.max(axis=1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,R", [(1, 1), (10, 7), (1000, 50), (4, 3000)])
def test_logsumexp_softmax(rows, R, dtype, rng):
    a = (rng.standard_normal((rows, R)) * 30).astype(dtype)
    m = a.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(a - m).sum(axis=1, keepdims=True))).ravel()
    out = _BE.Array(rows, dtype)
    _BE.logsumexp(dev(a), out, rows, R)
    np.testing.assert_allclose(host(out), lse, **TOL[dtype])
    sm = _BE.Array(rows * R, dtype)
    _BE.softmax(dev(a), sm, rows, R)
    np.testing.assert_allclose(host(sm, (rows, R)), np.exp(a - lse[:, None]), **TOL[dtype])


GEMM_TOL = {"float32": dict(rtol=1e-4, atol=1e-4), "float64": dict(rtol=1e-11, atol=1e-11)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,p", [(1, 1, 1), (5, 0, 3), (7, 13, 9), (64, 64, 64), (129, 257, 127),
                                   (1000, 37, 3), (512, 512, 512), (1536, 96, 1536)])
def test_matmul(m, n, p, dtype, rng):
    a = rng.standard_normal((m, n)).astype(dtype)
    b = rng.standard_normal((n, p)).astype(dtype)
    out = _BE.Array(m * p, dtype)
    _BE.matmul(dev(a), dev(b), out, m, n, p)
    np.testing.assert_allclose(host(out, (m, p)), a @ b, **GEMM_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_strided_broadcast_and_transposed(dtype, rng):
    batch, m, n, p = 3, 70, 40, 150
    a = rng.standard_normal((m, n)).astype(dtype)          # broadcast over batch
    bt = rng.standard_normal((batch, p, n)).astype(dtype)  # used transposed
    out = _BE.Array(batch * m * p, dtype)
    _BE.matmul_strided(dev(a), dev(bt), out, batch, m, n, p, (0, n, 1), 0, (p * n, 1, n), 0)
    ref = a[None] @ bt.transpose(0, 2, 1)
    np.testing.assert_allclose(host(out, (batch, m, p)), ref, **GEMM_TOL[dtype])
    # transposed a with an offset
    big = rng.standard_normal(5 + n * m).astype(dtype)
    at = big[5:].reshape(n, m)
    b = rng.standard_normal((n, p)).astype(dtype)
    out1 = _BE.Array(m * p, dtype)
    _BE.matmul_strided(dev(big), dev(b), out1, 1, m, n, p, (0, 1, m), 5, (0, p, 1), 0)
    np.testing.assert_allclose(host(out1, (m, p)), at.T @ b, **GEMM_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_tiled(dtype, rng):
    t = _BE.__tile_size__
    m, n, p = 3 * t, 2 * t, 4 * t
    a = rng.standard_normal((m, n)).astype(dtype)
    b = rng.standard_normal((n, p)).astype(dtype)

    def tile(x, r, c):
        return x.reshape(r // t, t, c // t, t).transpose(0, 2, 1, 3).copy()

    out = _BE.Array(m * p, dtype)
    _BE.matmul_tiled(dev(tile(a, m, n)), dev(tile(b, n, p)), out, m, n, p)
    np.testing.assert_allclose(host(out), tile(a @ b, m, p).ravel(), **GEMM_TOL[dtype])


def conv_ref(x, w, stride, pad):
    N, H, W, C = x.shape
    K, _, _, Co = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    Ho, Wo = (H + 2 * pad - K) // stride + 1, (W + 2 * pad - K) // stride + 1
    out = np.zeros((N, Ho, Wo, Co), x.dtype)
    for kh in range(K):
        for kw in range(K):
            patch = xp[:, kh:kh + stride * (Ho - 1) + 1:stride, kw:kw + stride * (Wo - 1) + 1:stride, :]
            out += patch @ w[kh, kw]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H,W,C,K,Co,stride,pad", [
    (2, 8, 8, 3, 3, 4, 1, 1), (2, 9, 7, 5, 3, 6, 2, 1), (1, 5, 5, 2, 1, 3, 1, 0),
    (3, 12, 12, 16, 5, 8, 2, 2), (4, 32, 32, 64, 3, 64, 1, 1)])
def test_conv_forward_and_gradients(N, H, W, C, K, Co, stride, pad, dtype, rng):
    x = rng.standard_normal((N, H, W, C)).astype(dtype)
    w = rng.standard_normal((K, K, C, Co)).astype(dtype)
    ref = conv_ref(x, w, stride, pad)
    Ho, Wo = ref.shape[1:3]
    out = _BE.Array(ref.size, dtype)
    args = (N, H, W, C, K, Co, stride, pad)
    _BE.conv(dev(x), dev(w), out, *args)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == "float32" else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(host(out, ref.shape), ref, **tol)
    # gradients of sum(out * g): exact adjoints, checked against finite sums in numpy
    g = rng.standard_normal(ref.shape).astype(dtype)
    gx_ref = np.zeros_like(x)
    gw_ref = np.zeros_like(w)
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    gxp = np.zeros_like(xp)
    for kh in range(K):
        for kw in range(K):
            sl = (slice(None), slice(kh, kh + stride * (Ho - 1) + 1, stride),
                  slice(kw, kw + stride * (Wo - 1) + 1, stride), slice(None))
            gw_ref[kh, kw] = np.einsum("nhwc,nhwo->co", xp[sl], g)
            gxp[sl] += g @ w[kh, kw].T
    gx_ref = gxp[:, pad:pad + H, pad:pad + W, :]
    gx = _BE.Array(x.size, dtype)
    _BE.conv_grad_input(dev(g), dev(w), gx, *args)
    np.testing.assert_allclose(host(gx, x.shape), gx_ref, **tol)
    gw = _BE.Array(w.size, dtype)
    _BE.conv_grad_weight(dev(x), dev(g), gw, *args)
    np.testing.assert_allclose(host(gw, w.shape), gw_ref, **tol)


def test_empty_cache_returns_memory():
    bufs = [_BE.Array(1 << 20) for _ in range(4)]
    del bufs
    assert _BE.empty_cache() >= 4 * (4 << 20)



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,R", [(1, 4_000_000), (3, 1 << 20), (2, 10007 * 7)])
def test_long_reductions_split_across_blocks(dtype, rows, R, rng):
    x = rng.standard_normal((rows, R)).astype(dtype)
    a = dev(x)
    out = _BE.Array(rows, x.dtype)
    _BE.reduce_sum(a, out, R)
    np.testing.assert_allclose(host(out), x.astype(np.float64).sum(axis=1),
                               rtol=1e-4 if dtype == "float32" else 1e-11, atol=1e-2 if dtype == "float32" else 1e-9)
    _BE.reduce_max(a, out, R)
    np.testing.assert_array_equal(host(out), x.max(axis=1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,p,transposed", [(1, 131072, 16, False), (3, 40000, 70, True),
                                              (64, 8192, 32, False)])
def test_thin_matmul_with_a_long_inner_dimension_splits_k(m, n, p, transposed, dtype, rng):
    """(1, B) @ (B, C) column sums: split into pieces of K, summed after."""
    a = rng.standard_normal((m, n)).astype(dtype)
    b = rng.standard_normal((n, p)).astype(dtype)
    out = _BE.Array(m * p, dtype)
    if transposed:  # a stored as (n, m) and read through its transpose, with an offset
        big = np.concatenate([np.zeros(3, dtype), a.T.ravel()])
        _BE.matmul_strided(dev(big), dev(b), out, 1, m, n, p, (0, 1, m), 3, (0, p, 1), 0)
    else:
        _BE.matmul(dev(a), dev(b), out, m, n, p)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == "float32" else dict(rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(host(out, (m, p)), ref, **tol)
