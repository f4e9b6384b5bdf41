"""2-D max and average pooling on NHWC tensors (no padding).

Both read the input through a ``(N, Ho, Wo, K, K, C)`` window view.  Their
gradients scatter-add window adjoints back with :class:`Col2Im`, the adjoint
of the window extraction :class:`Im2Col`; the two are each other's
gradients, so pooling is differentiable to any order.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray
from ..errors import ShapeError
from .ops_mathematic import broadcast_to, reshape
from .registry import register_op

__all__ = ["Im2Col", "Col2Im", "MaxPool2d", "AvgPool2d", "im2col", "col2im", "max_pool2d",
           "avg_pool2d"]


def _size(v, name, op):
    if isinstance(v, (tuple, list)):
        # square windows only: (k, k) is k; (2, 3) used to become 2 silently
        if len(v) == 0 or any(x != v[0] for x in v):
            raise ShapeError(f"{op}: {name} must be one positive int or equal ones (square windows), "
                             f"got {v!r}")
        v = v[0]
    if not isinstance(v, (numbers.Integral, np.integer)) or int(v) < 1:
        raise ShapeError(f"{op}: {name} must be a positive int, got {v!r}")
    return int(v)


def _out_hw(shape, k, s, op):
    if len(shape) != 4:
        raise ShapeError(f"{op}: expected an NHWC input of 4 dimensions, got shape {shape}")
    _, H, W, _ = shape
    if H < k or W < k:
        raise ShapeError(f"{op}: kernel size {k} exceeds the input's H, W = {H}, {W}")
    return (H - k) // s + 1, (W - k) // s + 1


def _windows(a: NDArray, k: int, s: int) -> NDArray:
    Ho, Wo = _out_hw(a.shape, k, s, "pool")
    a = a.compact()
    N, _, _, C = a.shape
    sN, sH, sW, sC = a.strides
    return a.as_strided((N, Ho, Wo, k, k, C), (sN, sH * s, sW * s, sH, sW, sC))


class Im2Col(TensorOp):
    """Windows of an NHWC input: ``(N,H,W,C) -> (N,Ho,Wo,K,K,C)`` (a copy)."""

    def __init__(self, kernel_size: int, stride: int):
        self.kernel_size, self.stride = kernel_size, stride

    def compute(self, a: NDArray) -> NDArray:
        return _windows(a, self.kernel_size, self.stride).compact()

    def gradient(self, out_grad: Tensor, node: Tensor):
        return Col2Im(self.kernel_size, self.stride, node.inputs[0].shape)(out_grad)


class Col2Im(TensorOp):
    """Scatter-add windows back: ``(N,Ho,Wo,K,K,C) -> in_shape (N,H,W,C)``."""

    def __init__(self, kernel_size: int, stride: int, in_shape):
        self.kernel_size, self.stride, self.in_shape = kernel_size, stride, tuple(in_shape)

    def compute(self, cols: NDArray) -> NDArray:
        k, s = self.kernel_size, self.stride
        N, Ho, Wo, _, _, C = cols.shape
        out = NDArray.make(self.in_shape, device=cols.device, dtype=cols.dtype)
        out.fill(0.0)
        for i in range(k):
            for j in range(k):
                idx = (slice(None), slice(i, i + s * (Ho - 1) + 1, s),
                       slice(j, j + s * (Wo - 1) + 1, s), slice(None))
                piece = cols[:, :, :, i, j, :].compact().reshape((N, Ho, Wo, C))
                out[idx] = out[idx] + piece
        return out

    def gradient(self, out_grad: Tensor, node: Tensor):
        return Im2Col(self.kernel_size, self.stride)(out_grad)


def im2col(a, kernel_size, stride):
    return Im2Col(kernel_size, stride)(a)


def col2im(a, kernel_size, stride, in_shape):
    return Col2Im(kernel_size, stride, in_shape)(a)


class MaxPool2d(TensorOp):
    """Max over ``kernel_size`` windows with ``stride`` (default: kernel_size);
    the adjoint goes to each window's maximum (shared equally between ties)."""

    def __init__(self, kernel_size: int, stride=None):
        self.kernel_size = _size(kernel_size, "kernel_size", "max_pool2d")
        self.stride = self.kernel_size if stride is None else _size(stride, "stride", "max_pool2d")

    def compute(self, a: NDArray) -> NDArray:
        return _windows(a, self.kernel_size, self.stride).max(axis=(3, 4))

    def gradient(self, out_grad: Tensor, node: Tensor):
        k, s = self.kernel_size, self.stride
        x = node.inputs[0]
        win = _windows(x.realize_cached_data(), k, s)
        N, Ho, Wo, _, _, C = win.shape
        m = node.realize_cached_data().reshape((N, Ho, Wo, 1, 1, C)).broadcast_to(win.shape)
        mask = win == m
        weights = mask / mask.sum(axis=(3, 4), keepdims=True).broadcast_to(win.shape)
        g = broadcast_to(reshape(out_grad, (N, Ho, Wo, 1, 1, C)), win.shape)
        return Col2Im(k, s, x.shape)(g * Tensor.make_const(weights))


class AvgPool2d(TensorOp):
    """Mean over ``kernel_size`` windows with ``stride`` (default: kernel_size)."""

    def __init__(self, kernel_size: int, stride=None):
        self.kernel_size = _size(kernel_size, "kernel_size", "avg_pool2d")
        self.stride = self.kernel_size if stride is None else _size(stride, "stride", "avg_pool2d")

    def compute(self, a: NDArray) -> NDArray:
        k = self.kernel_size
        return _windows(a, k, self.stride).sum(axis=(3, 4)) / float(k * k)

    def gradient(self, out_grad: Tensor, node: Tensor):
        k, s = self.kernel_size, self.stride
        x = node.inputs[0]
        N, Ho, Wo, C = node.shape
        g = broadcast_to(reshape(out_grad, (N, Ho, Wo, 1, 1, C)), (N, Ho, Wo, k, k, C))
        return Col2Im(k, s, x.shape)(g / float(k * k))


def max_pool2d(x, kernel_size, stride=None):
    """NHWC max pooling: ``(N, H, W, C) -> (N, (H-k)//s+1, (W-k)//s+1, C)``."""
    return MaxPool2d(kernel_size, stride)(x)


def avg_pool2d(x, kernel_size, stride=None):
    """NHWC average pooling: ``(N, H, W, C) -> (N, (H-k)//s+1, (W-k)//s+1, C)``."""
    return AvgPool2d(kernel_size, stride)(x)


register_op("im2col", Im2Col, im2col)
register_op("col2im", Col2Im, col2im)
register_op("max_pool2d", MaxPool2d, max_pool2d)
register_op("avg_pool2d", AvgPool2d, avg_pool2d)
