"""NumPy references and buffer helpers shared by the conformance suite.

Everything here is computed with NumPy directly -- never through a needle
backend -- so the suite's expectations do not depend on the reference
backend being right.
"""

from __future__ import annotations

import numpy as np

#: relative / absolute tolerances per dtype (reductions and matmul use a
#: looser rtol: their rounding grows with the reduced length)
TOL = {"float32": dict(rtol=2e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}
ACC_TOL = {"float32": dict(rtol=2e-4, atol=1e-4), "float64": dict(rtol=1e-10, atol=1e-10)}


def to_buffer(be, x: np.ndarray):
    """A new buffer of backend ``be`` holding ``x`` flattened (row-major)."""
    flat = np.ascontiguousarray(x).reshape(-1)
    buf = be.Array(flat.size, flat.dtype)
    if flat.size:
        be.from_numpy(flat, buf)
    return buf


def from_buffer(be, buf) -> np.ndarray:
    """The whole buffer as a 1-D NumPy copy."""
    if buf.size == 0:
        return np.zeros(0, dtype=buf.dtype)
    return np.array(be.to_numpy(buf, (buf.size,), (1,), 0), copy=True).reshape(-1)


def view_params(base: np.ndarray, view: np.ndarray):
    """``(shape, strides, offset)`` in elements of a NumPy ``view`` into the
    1-D array ``base``."""
    item = base.itemsize
    offset = (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // item
    return view.shape, tuple(s // item for s in view.strides), offset


def strided_views(base: np.ndarray, writable: bool = False):
    """Named strided views of the 1-D array ``base`` (at least 400 elements):
    offsets, steps, transposes, odd sizes, 0-d and (unless ``writable``)
    stride-0 broadcasts.  Yields ``(name, view)``."""
    n = base.size
    assert n >= 400
    yield "compact-3d", base[:60].reshape(3, 4, 5)
    yield "offset-step", base[3:63].reshape(3, 4, 5)[:, ::2, 1:]
    yield "transpose", base[:120].reshape(4, 5, 6).transpose(2, 0, 1)
    yield "step3-1d", base[2::3]
    yield "odd-2d-steps", base[7:7 + 35].reshape(5, 7)[::2, ::3]
    yield "single", base[11:12]
    yield "0-d", base[13:14].reshape(())
    yield "4d-permuted-offset", base[5:5 + 210].reshape(2, 3, 5, 7).transpose(3, 1, 0, 2)[1:, :, :, 2:]
    yield "tail", base[n - 17:]
    if not writable:
        yield "broadcast-row", np.broadcast_to(base[5:12].reshape(1, 7), (3, 7))
        yield "broadcast-inner", np.broadcast_to(base[20:26].reshape(2, 3, 1), (2, 3, 4))
        yield "broadcast-new-axes", np.broadcast_to(base[30:35], (2, 3, 5))


def conv_nhwc(x, w, stride, padding):
    """Cross-correlation: x (N,H,W,C_in), w (K,K,C_in,C_out) -> (N,H_out,W_out,C_out)."""
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]), dtype=np.float64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :]
            out += patch @ w[i, j]
    return out


def conv_grads(x, w, g, stride, padding):
    """Gradients of :func:`conv_nhwc` with respect to x and w, given the adjoint g."""
    k = w.shape[0]
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = g.shape[1], g.shape[2]
    dxp = np.zeros(xp.shape, dtype=np.float64)
    dw = np.zeros(w.shape, dtype=np.float64)
    for i in range(k):
        for j in range(k):
            sl = (slice(None), slice(i, i + stride * ho, stride), slice(j, j + stride * wo, stride))
            dxp[sl] += g @ w[i, j].T
            dw[i, j] = np.einsum("nhwc,nhwo->co", xp[sl], g)
    h, wd = x.shape[1], x.shape[2]
    return dxp[:, padding:padding + h, padding:padding + wd, :], dw


def logsumexp_rows(a):
    m = a.max(axis=1, keepdims=True)
    return (np.log(np.exp(a - m).sum(axis=1, keepdims=True)) + m)[:, 0]


def softmax_rows(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def central_difference(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The gradient of the scalar NumPy function ``f`` at ``x`` by central
    differences, one element at a time (an oracle independent of needle)."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[idx] = eps
        grad[idx] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad
