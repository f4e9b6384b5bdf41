"""Fused training-mode batch normalisation (``nn.BatchNorm1d``'s hot path).

``batch_norm_train(x, w, b, eps)`` is one graph node in place of the dozen
element-wise, reduction and broadcast nodes of its composition, and its
backward is two nodes (``BatchNormGradX``, ``BatchNormGradW``) plus one
summation.  Numerics are the course API's: batch mean, *biased* batch variance, eps
inside the square root, ``y = w * (x - mean) / sqrt(var + eps) + b``.

Higher-order gradients: the two backward ops are exact to first order with
fast NDArray code; their own gradients rebuild the unfused Tensor
composition of the backward formula on the same inputs and differentiate it
(:func:`needle.autograd.local_vjp`), so gradients of gradients are those of
the composition.
"""

from __future__ import annotations

from ..autograd import Tensor, TensorOp, local_vjp
from ..backend_ndarray import NDArray
from ..errors import ShapeError
from .ops_mathematic import reshape, summation
from .registry import register_op

__all__ = ["BatchNormTrain", "BatchNormGradX", "BatchNormGradW", "batch_norm_train"]

_ONES: dict = {}


def _col_mean(a: NDArray) -> NDArray:
    """Mean over axis 0 of a compact ``(B, D)`` array as ``(1, D)``: one
    ``(1, B) @ (B, D)`` product, which every backend does in one kernel
    (a reduction over axis 0 would first transpose-copy the array)."""
    n = a.shape[0]
    key = (n, a.device.name, a.dtype)
    ones = _ONES.get(key)
    if ones is None:
        if len(_ONES) > 64:
            _ONES.clear()
        ones = NDArray.make((1, n), device=a.device, dtype=a.dtype)
        ones.fill(1.0 / n)
        _ONES[key] = ones
    return ones @ a


def _check(x_shape, w_size, b_size):
    if len(x_shape) != 2:
        raise ShapeError(f"batch_norm_train: expected a 2-D input (batch, dim), got shape {x_shape}")
    dim = x_shape[1]
    if w_size != dim or b_size != dim:
        raise ShapeError(f"batch_norm_train: weight has {w_size} and bias {b_size} elements; "
                         f"both must have {dim} (the input's shape is {x_shape})")


class BatchNormTrain(TensorOp):
    """Training-mode batch norm of ``x (B, D)`` with weight and bias of ``D``
    elements (any shape).  After ``compute``, ``self.mean`` and ``self.var``
    hold the batch mean and biased variance ``(D,)`` for the running-stat
    update."""

    def __init__(self, eps: float = 1e-5):
        self.eps = float(eps)
        self.mean = self.var = None
        self._saved = None

    def compute(self, x: NDArray, w: NDArray, b: NDArray) -> NDArray:
        _check(x.shape, w.size, b.size)
        dim = x.shape[1]
        x = x.compact()
        mean = _col_mean(x)                           # (1, D)
        centred = x - mean
        var = _col_mean(centred * centred)            # biased
        inv_std = (var + self.eps) ** -0.5            # (1, D): tiny
        scale = inv_std * w.compact().reshape((1, dim))
        self.mean, self.var = mean.reshape((dim,)), var.reshape((dim,))
        self._saved = (centred, inv_std, scale)
        return centred * scale + b.compact().reshape((1, dim))

    def _xhat(self) -> NDArray:
        saved = self._saved
        if len(saved) == 3:
            centred, inv_std, scale = saved
            # centred is only needed for xhat: drop it (one input-sized
            # array less held for the rest of the step)
            self._saved = saved = (None, inv_std, scale, centred * inv_std)
        return saved[3]

    def gradient(self, out_grad: Tensor, node: Tensor):
        x, w, b = node.inputs
        gw_op = BatchNormGradW(self)
        gx = Tensor.make_from_op(BatchNormGradX(self, gw_op), (out_grad, x, w))
        gw = Tensor.make_from_op(gw_op, (out_grad, x))
        if gw.shape != w.shape:
            gw = reshape(gw, w.shape)
        gb = summation(out_grad, (0,))
        if gb.shape != b.shape:
            gb = reshape(gb, b.shape)
        return gx, gw, gb


def _unfused_xhat(x: Tensor, eps: float) -> Tensor:
    n = x.shape[0]
    centred = x + summation(x, (0,)) * (-1.0 / n)
    var = summation(centred * centred, (0,)) / n
    return centred * (var + eps) ** -0.5, (var + eps) ** -0.5


class BatchNormGradW(TensorOp):
    """``sum_0(g * xhat)``, the weight's adjoint, as ``(D,)``; inputs ``(g, x)``."""

    def __init__(self, fwd: BatchNormTrain):
        self.fwd = fwd
        self.cached = None  # (g array, result) left by BatchNormGradX

    def compute(self, g: NDArray, x: NDArray) -> NDArray:
        cached = self.cached
        self.cached = None
        if cached is not None and cached[0] is g:
            return cached[1]
        g = g.compact()
        return (_col_mean(g * self.fwd._xhat()) * g.shape[0]).reshape((g.shape[1],))

    def gradient(self, out_grad: Tensor, node: Tensor):
        g, x = node.inputs
        xhat, _ = _unfused_xhat(x, self.fwd.eps)
        return local_vjp(summation(g * xhat, (0,)), (g, x), out_grad)


class BatchNormGradX(TensorOp):
    """The input's adjoint ``w / std * (g - mean_0 g - xhat * mean_0(g xhat))``;
    inputs ``(g, x, w)``."""

    def __init__(self, fwd: BatchNormTrain, gw_op: BatchNormGradW = None):
        self.fwd = fwd
        self.gw_op = gw_op

    def compute(self, g: NDArray, x: NDArray, w: NDArray) -> NDArray:
        fwd = self.fwd
        xhat = fwd._xhat()
        scale = fwd._saved[2]
        gc = g.compact()
        g_mean = _col_mean(gc)                        # (1, D)
        gx_mean = _col_mean(gc * xhat)                # (1, D)
        if self.gw_op is not None:  # the weight's adjoint is B * gx_mean
            self.gw_op.cached = (g, (gx_mean * gc.shape[0]).reshape((gc.shape[1],)))
        return (gc - g_mean - xhat * gx_mean) * scale

    def gradient(self, out_grad: Tensor, node: Tensor):
        g, x, w = node.inputs
        n, dim = x.shape
        xhat, inv_std = _unfused_xhat(x, self.fwd.eps)
        w_row = reshape(w, (dim,)) if w.shape != (dim,) else w
        g_mean = summation(g, (0,)) / n
        gx_mean = summation(g * xhat, (0,)) / n
        dx = (g - g_mean - xhat * gx_mean) * (inv_std * w_row)
        return local_vjp(dx, (g, x, w), out_grad)


def batch_norm_train(x, w, b, eps=1e-5):
    """Training-mode batch norm of ``x (B, D)``: ``w * (x - mean) / sqrt(var + eps) + b``
    with the batch mean and biased variance over axis 0."""
    return BatchNormTrain(eps)(x, w, b)


register_op("batch_norm_train", BatchNormTrain, batch_norm_train)
