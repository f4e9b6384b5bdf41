"""LogSumExp and LogSoftmax: numerically stable (the maximum is subtracted),
using the backend's fused ``logsumexp`` kernel when it offers one."""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray
from .ops_mathematic import Reduction, exp, kept_dims_shape, normalize_axes, reshape, summation
from .registry import register_op

__all__ = ["LogSumExp", "LogSoftmax", "logsumexp", "logsoftmax", "logsumexp_array"]


def logsumexp_array(a: NDArray, axes) -> NDArray:
    """``log(sum(exp(a), axes))`` on an NDArray, reduced axes dropped
    (``axes`` a normalized tuple, or None for all)."""
    ndim = a.ndim
    # a 0-d array's implicit axis (0 or -1, normalised to (0,)) holds its one
    # element: reducing over it reduces over no real axis
    red = tuple(range(ndim)) if axes is None or ndim == 0 else axes
    keep = tuple(i for i in range(ndim) if i not in red)
    out_shape = tuple(a.shape[i] for i in keep)
    outer = 1
    for d in out_shape:
        outer *= d
    inner = 1
    for i in red:
        inner *= a.shape[i]
    if inner > 0:
        src = a if red == tuple(range(ndim - len(red), ndim)) else a.permute(keep + red)
        out = NDArray.call_op_override("logsumexp", (src,), (outer,), outer, inner)
        if out is not None:
            return out.reshape(out_shape)
    # a row of all -inf has max -inf and a row holding +inf max +inf, and
    # x - m is then nan: clamping the shift to finite values keeps such rows
    # at -inf and +inf (as NumPy/torch); -max(-m, lo) is min(m, -lo)
    lo = float(np.finfo(a.dtype).min)
    m = -(-a.max(axis=red, keepdims=True).maximum(lo)).maximum(lo)
    shifted = a - m.broadcast_to(a.shape)
    s = shifted.exp().sum(axis=red)
    return s.log() + m.reshape(out_shape)


class LogSumExp(Reduction):
    """``log(sum(exp(a), axes))`` computed as ``m + log(sum(exp(a - m)))`` with
    ``m`` the maximum over ``axes``; exact for inputs like 1e10.  Adjoint:
    ``g`` broadcast back times ``exp(a - lse)``."""

    name = "logsumexp"

    def reduce(self, a: NDArray, axes) -> NDArray:
        return logsumexp_array(a, axes)

    def gradient(self, out_grad: Tensor, node: Tensor):
        x = node.inputs[0]
        shape = x.shape
        kept = kept_dims_shape(shape, normalize_axes(self.axes, len(shape), "logsumexp"))
        # the element-wise ops broadcast the kept-dims operands themselves
        # (and sum their adjoints back), which saves two nodes per call
        return exp(x - reshape(node, kept)) * reshape(out_grad, kept)


def logsumexp(a, axes=None):
    return LogSumExp(axes)(a)


class LogSoftmax(TensorOp):
    """``a - logsumexp(a, axis)`` over the last axis (axis 1 of the course's
    2-D input); adjoint ``g - softmax(a) * sum(g, axis)``."""

    def __init__(self, axes=None):
        self.axes = axes

    def _axis(self, ndim: int):
        if ndim == 0:  # the implicit axis of a 0-d input: log_softmax of one element
            normalize_axes(self.axes, ndim, "logsoftmax")  # still refuses axes past it
            return ()
        if self.axes is None:
            return (ndim - 1,)
        return normalize_axes(self.axes, ndim, "logsoftmax")

    def compute(self, a: NDArray) -> NDArray:
        axes = self._axis(a.ndim)
        kept = kept_dims_shape(a.shape, axes)
        lse = logsumexp_array(a, axes)
        # a row whose lse is +-inf (it holds +inf, or is all -inf) is nan
        # throughout, as torch.log_softmax: lse - lse is 0, or nan for those
        lse = (lse + (lse - lse)).reshape(kept).broadcast_to(a.shape)
        return a - lse

    def gradient(self, out_grad: Tensor, node: Tensor):
        shape = node.shape
        axes = self._axis(len(shape))
        kept = kept_dims_shape(shape, axes)
        return out_grad - exp(node) * reshape(summation(out_grad, axes), kept)


def logsoftmax(a):
    return LogSoftmax()(a)


register_op("logsumexp", LogSumExp, logsumexp)
register_op("logsoftmax", LogSoftmax, logsoftmax)
