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
from ..backend_ndarray import NDArray, capture
from ..errors import ShapeError
from .ops_mathematic import check_like_input, reshape, summation
from .registry import register_op

__all__ = ["BatchNormTrain", "BatchNormGradX", "BatchNormGradW", "batch_norm_train"]

_ONES: dict = {}


def _col_mean(a: NDArray) -> NDArray:
    """Mean over axis 0 of a compact ``(B, D)`` array as ``(1, D)``: one
    ``(1, B) @ (B, D)`` product, which every backend does in one kernel
    (a reduction over axis 0 would first transpose-copy the array)."""
    n = a.shape[0]
    key = (n, a.device.name, a.dtype)
    # a needle.jit capture makes its own (the fill is recorded): the cache may
    # drop an entry later, and a replay must not read an array nothing holds
    cached = not capture.capturing()
    ones = _ONES.get(key) if cached else None
    if ones is None:
        if len(_ONES) > 64:
            _ONES.clear()
        ones = NDArray.make((1, n), device=a.device, dtype=a.dtype)
        ones.fill(1.0 / n)
        if cached:
            _ONES[key] = ones
    return ones @ a


def _check(x_shape, w_size, b_size):
    if len(x_shape) < 2:
        raise ShapeError(f"batch_norm_train: expected an input of 2 or more dimensions "
                         f"(batch, channels, ...), got shape {x_shape}")
    dim = x_shape[1]
    if w_size != dim or b_size != dim:
        raise ShapeError(f"batch_norm_train: weight has {w_size} and bias {b_size} elements; "
                         f"both must have {dim} (the input's shape is {x_shape})")


class _Layout:
    """How an input of shape (N, C, *spatial) lies in memory, as the compact
    (outer, C, inner) array the fused kernels read.  Channels-last memory
    (an NCHW view of NHWC data, what ``nn.Conv`` returns) is read in place as
    (N*H*W, C, 1); anything else is compacted as (N, C, H*W)."""

    def __init__(self, x: NDArray):
        shape = x.shape
        self.shape, self.channels = shape, shape[1]
        self.perm = None
        if len(shape) > 2:
            perm = (0,) + tuple(range(2, len(shape))) + (1,)
            xp = x.permute(perm)
            if xp.is_compact():
                self.perm = perm
                self.inv = tuple(perm.index(i) for i in range(len(perm)))
                self.outer, self.inner = x.size // self.channels, 1
                return
        self.outer, self.inner = shape[0], x.size // (shape[0] * self.channels) if x.size else 0

    def view(self, a: NDArray) -> NDArray:
        """``a`` (same shape as the input) as a compact array in this layout."""
        return a.permute(self.perm).compact() if self.perm else a.compact()

    def restore(self, a: NDArray) -> NDArray:
        """A compact array in this layout seen with the input's shape."""
        return a.permute(self.inv) if self.perm else a

    @property
    def out_shape(self):
        if self.perm:
            return tuple(self.shape[i] for i in self.perm)
        return self.shape

    def args(self):
        return self.outer, self.channels, self.inner


def _rows(x: NDArray, lay: _Layout) -> NDArray:
    """The input as compact (rows, C) samples (the composition's layout)."""
    if x.ndim == 2:
        return x.compact()
    perm = (0,) + tuple(range(2, x.ndim)) + (1,)
    return x.permute(perm).compact().reshape((x.size // lay.channels, lay.channels))


def _from_rows(a: NDArray, lay: _Layout) -> NDArray:
    if len(lay.shape) == 2:
        return a
    perm = (0,) + tuple(range(2, len(lay.shape))) + (1,)
    inv = tuple(perm.index(i) for i in range(len(perm)))
    return a.reshape(tuple(lay.shape[i] for i in perm)).permute(inv)


def _row(a: NDArray, i: int) -> NDArray:
    """Row ``i`` of a fresh compact ``(R, C)`` kernel result as a ``(C,)`` view
    (no copy: the rows of the batch-norm overrides' outputs are the results)."""
    c = a.shape[1]
    return a._view((c,), (1,), a.offset + i * c)


class BatchNormTrain(TensorOp):
    """Training-mode batch norm of ``x (B, C, ...)`` over every axis but 1, with
    weight and bias of ``C`` elements (any shape).  After ``compute``,
    ``self.mean`` and ``self.var`` hold the batch mean and biased variance
    ``(C,)`` for the running-stat update.

    Backends offering the ``batch_norm_*`` overrides (stats, apply, grad_stats, grad_input)
    normalise the input where it lies (NCHW or channels-last, no copy);
    others run the composition on ``(rows, C)`` samples."""

    def __init__(self, eps: float = 1e-5):
        self.eps = float(eps)
        self.mean = self.var = None
        self._saved = None
        self._fused = None

    def compute(self, x: NDArray, w: NDArray, b: NDArray) -> NDArray:
        _check(x.shape, w.size, b.size)
        check_like_input("batch_norm_train", x, weight=w, bias=b)
        lay = _Layout(x)
        dim = lay.channels
        # an empty batch goes the composition's way (its mean is nan, as NumPy's)
        if x.size and x.device.op_override("batch_norm_stats") is not None:
            xv = lay.view(x)
            # rows mean, var, inv_std, scale: the per-channel arithmetic stays
            # in the kernel (a dozen (C,)-sized ops in Python cost more than
            # the normalisation of a (128, 100) batch)
            stats = NDArray.call_op_override("batch_norm_stats", (xv, w), (4, dim), *lay.args(), self.eps)
            self.mean, self.var = _row(stats, 0), _row(stats, 1)
            self._fused = (lay, xv, stats)
            self._saved = None
            out = NDArray.call_op_override("batch_norm_apply", (xv, stats, b), lay.out_shape, *lay.args())
            return lay.restore(out)
        self._fused = None
        x = _rows(x, lay)
        mean = _col_mean(x)                           # (1, D)
        centred = x - mean
        var = _col_mean(centred * centred)            # biased
        inv_std = (var + self.eps) ** -0.5            # (1, D): tiny
        scale = inv_std * w.compact().reshape((1, dim))
        self.mean, self.var = mean.reshape((dim,)), var.reshape((dim,))
        self._saved = (lay, centred, inv_std, scale)
        return _from_rows(centred * scale + b.compact().reshape((1, dim)), lay)

    def _xhat(self) -> NDArray:
        saved = self._saved
        if len(saved) == 4:
            lay, centred, inv_std, scale = saved
            # centred is only needed for xhat: drop it (one input-sized
            # array less held for the rest of the step)
            self._saved = saved = (lay, None, inv_std, scale, centred * inv_std)
        return saved[4]

    def _grad_stats(self, gv: NDArray) -> NDArray:
        """Fused path: the (2, C) rows ``sum g`` and ``sum g * xhat`` per
        channel, given the adjoint ``gv`` already in the input's layout."""
        lay, xv, stats = self._fused
        return NDArray.call_op_override("batch_norm_grad_stats", (gv, xv, stats), (2, lay.channels), *lay.args())

    def gradient(self, out_grad: Tensor, node: Tensor):
        x, w, b = node.inputs
        gw_op = BatchNormGradW(self, 1)
        gb_op = BatchNormGradW(self, 0)
        gx = Tensor.make_from_op(BatchNormGradX(self, gw_op, gb_op), (out_grad, x, w))
        gw = Tensor.make_from_op(gw_op, (out_grad, x))
        if gw.shape != w.shape:
            gw = reshape(gw, w.shape)
        gb = Tensor.make_from_op(gb_op, (out_grad, x))
        if gb.shape != b.shape:
            gb = reshape(gb, b.shape)
        return gx, gw, gb


def _keep(t: Tensor, ndim: int) -> Tensor:
    """A (C,) per-channel Tensor shaped to broadcast against (N, C, ...)."""
    return reshape(t, (1, t.shape[0]) + (1,) * (ndim - 2))


def _unfused_xhat(x: Tensor, eps: float):
    axes = (0,) + tuple(range(2, len(x.shape)))
    n = 1
    for i in axes:
        n *= x.shape[i]
    centred = x + _keep(summation(x, axes) * (-1.0 / n), len(x.shape))
    var = _keep(summation(centred * centred, axes) / n, len(x.shape))
    return centred * (var + eps) ** -0.5, (var + eps) ** -0.5, axes, n


class BatchNormGradW(TensorOp):
    """Per-channel sums of the adjoint as ``(C,)``; inputs ``(g, x)``: with
    ``which=1`` ``sum(g * xhat)`` (the weight's adjoint), with ``which=0``
    ``sum(g)`` (the bias's)."""

    def __init__(self, fwd: BatchNormTrain, which: int = 1):
        self.fwd = fwd
        self.which = which
        self.cached = None  # (g array, result) left by BatchNormGradX

    def compute(self, g: NDArray, x: NDArray) -> NDArray:
        cached = self.cached
        self.cached = None
        if cached is not None and cached[0] is g:
            return cached[1]
        fwd = self.fwd
        dim = x.shape[1]
        if fwd._fused is not None:
            return _row(fwd._grad_stats(fwd._fused[0].view(g)), self.which)
        rows = _rows(g, fwd._saved[0])
        if self.which == 1:
            rows = rows * fwd._xhat()
        return (_col_mean(rows) * rows.shape[0]).reshape((dim,))

    def gradient(self, out_grad: Tensor, node: Tensor):
        g, x = node.inputs
        xhat, _, axes, _ = _unfused_xhat(x, self.fwd.eps)
        out = summation(g * xhat if self.which == 1 else g, axes)
        return local_vjp(out, (g, x), out_grad)


class BatchNormGradX(TensorOp):
    """The input's adjoint ``w / std * (g - mean g - xhat * mean(g xhat))``
    (means per channel); inputs ``(g, x, w)``."""

    def __init__(self, fwd: BatchNormTrain, gw_op: BatchNormGradW = None, gb_op: BatchNormGradW = None):
        self.fwd = fwd
        self.gw_op = gw_op
        self.gb_op = gb_op

    def _leave(self, g, sum_g, sum_gxhat):
        """Hand the (C,) adjoints of bias and weight, computed on the way, to
        their ops (which would otherwise make the same pass over ``g``)."""
        if self.gw_op is not None:
            self.gw_op.cached = (g, sum_gxhat)
        if self.gb_op is not None:
            self.gb_op.cached = (g, sum_g)

    def compute(self, g: NDArray, x: NDArray, w: NDArray) -> NDArray:
        fwd = self.fwd
        if fwd._fused is not None:
            lay, xv, stats = fwd._fused
            gv = lay.view(g)  # one copy at most (an NCHW adjoint of channels-last data)
            gs = fwd._grad_stats(gv)
            self._leave(g, _row(gs, 0), _row(gs, 1))
            out = NDArray.call_op_override("batch_norm_grad_input", (gv, xv, stats, gs),
                                           lay.out_shape, *lay.args())
            return lay.restore(out)
        lay = fwd._saved[0]
        xhat = fwd._xhat()
        scale = fwd._saved[3]
        gc = _rows(g, lay)
        g_mean = _col_mean(gc)                        # (1, D)
        gx_mean = _col_mean(gc * xhat)                # (1, D)
        rows, dim = gc.shape
        self._leave(g, (g_mean * rows).reshape((dim,)), (gx_mean * rows).reshape((dim,)))
        return _from_rows((gc - g_mean - xhat * gx_mean) * scale, lay)

    def gradient(self, out_grad: Tensor, node: Tensor):
        g, x, w = node.inputs
        dim, nd = x.shape[1], len(x.shape)
        xhat, inv_std, axes, n = _unfused_xhat(x, self.fwd.eps)
        w_row = _keep(reshape(w, (dim,)) if w.shape != (dim,) else w, nd)
        g_mean = _keep(summation(g, axes) / n, nd)
        gx_mean = _keep(summation(g * xhat, axes) / n, nd)
        dx = (g - g_mean - xhat * gx_mean) * (inv_std * w_row)
        return local_vjp(dx, (g, x, w), out_grad)


def batch_norm_train(x, w, b, eps=1e-5):
    """Training-mode batch norm of ``x (B, C, ...)`` over every axis but 1:
    ``w * (x - mean) / sqrt(var + eps) + b`` with the batch mean and biased
    variance of each channel."""
    return BatchNormTrain(eps)(x, w, b)


register_op("batch_norm_train", BatchNormTrain, batch_norm_train)
