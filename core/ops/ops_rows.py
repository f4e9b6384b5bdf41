"""Fused row ops over the last axis: ``softmax`` (the Transformer's attention
softmax) and ``layer_norm`` (``nn.LayerNorm1d``), forward and backward.

Each forward and first-order backward calls the backend's op override
(``softmax``/``softmax_grad``, ``layer_norm``/``layer_norm_grad_input``/
``layer_norm_grad_params``, see ``protocol.OP_OVERRIDE_SIGNATURES``) and
falls back to the NDArray composition on backends without one.  Numerics are
the course API's: softmax subtracts the row maximum (a constant: it cancels),
layer norm uses the row's biased variance with eps inside the square root.
Higher-order gradients differentiate the unfused Tensor composition
(:func:`needle.autograd.local_vjp`), as the batch-norm ops do.
"""

from __future__ import annotations

from ..autograd import Tensor, TensorOp, local_vjp
from ..backend_ndarray import NDArray
from ..errors import ShapeError
from .ops_mathematic import check_like_input, reshape, summation
from .registry import register_op

__all__ = ["Softmax", "SoftmaxGrad", "LayerNorm", "LayerNormGradX", "LayerNormGradParam",
           "softmax", "layer_norm"]


def _rows(op: str, a: NDArray):
    if a.ndim == 0:
        raise ShapeError(f"{op}: expected an input of at least 1 dimension, got a scalar")
    inner = a.shape[-1]
    return (a.size // inner if inner else 0), inner


def _kept(t: Tensor) -> tuple:
    return tuple(t.shape[:-1]) + (1,)


# ------------------------------------------------------------------ softmax
class Softmax(TensorOp):
    """Softmax over the last axis: ``exp(a - max) / sum(exp(a - max))``."""

    def compute(self, a: NDArray) -> NDArray:
        outer, inner = _rows("softmax", a)
        if a.size == 0:
            return a.compact()
        out = NDArray.call_op_override("softmax", (a,), (outer, inner), outer, inner)
        if out is not None:
            return out.reshape(a.shape)
        last = a.ndim - 1
        e = (a - a.max(axis=last, keepdims=True)).exp()
        return e / e.sum(axis=last, keepdims=True)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return (Tensor.make_from_op(SoftmaxGrad(), (node, out_grad)),)


class SoftmaxGrad(TensorOp):
    """Softmax's adjoint ``y * (g - sum_last(g * y))``; inputs ``(y, g)``."""

    def compute(self, y: NDArray, g: NDArray) -> NDArray:
        outer, inner = _rows("softmax_grad", y)
        if y.size == 0:
            return y.compact()
        out = NDArray.call_op_override("softmax_grad", (y, g), (outer, inner), outer, inner)
        if out is not None:
            return out.reshape(y.shape)
        return y * (g - (g * y).sum(axis=y.ndim - 1, keepdims=True))

    def gradient(self, out_grad: Tensor, node: Tensor):
        y, g = node.inputs
        dx = y * (g - reshape(summation(g * y, (len(y.shape) - 1,)), _kept(y)))
        return local_vjp(dx, (y, g), out_grad)


def softmax(a):
    """Softmax over the last axis of ``a`` (max subtracted)."""
    return Softmax()(a)


# ------------------------------------------------------------------ layer norm
def _check_ln(x: NDArray, w: NDArray, b: NDArray):
    if x.ndim == 0:
        raise ShapeError("layer_norm: expected an input of at least 1 dimension, got a scalar")
    dim = x.shape[-1]
    if w.size != dim or b.size != dim:
        raise ShapeError(f"layer_norm: weight has {w.size} and bias {b.size} elements; both must "
                         f"have {dim}, the last axis of the input's shape {x.shape}")
    check_like_input("layer_norm", x, weight=w, bias=b)


def _ln_parts(x: NDArray, eps: float):
    """NDArray composition: (x - mean, (var + eps) ** -0.5) per row."""
    last, dim = x.ndim - 1, x.shape[-1]
    centred = x - x.sum(axis=last, keepdims=True) / dim
    var = (centred * centred).sum(axis=last, keepdims=True) / dim
    return centred, (var + eps) ** -0.5


class LayerNorm(TensorOp):
    """``(x - mean) / sqrt(var + eps) * w + b`` over the last axis (biased
    variance); ``w`` and ``b`` hold ``x.shape[-1]`` elements."""

    def __init__(self, eps: float = 1e-5):
        self.eps = float(eps)

    def compute(self, x: NDArray, w: NDArray, b: NDArray) -> NDArray:
        _check_ln(x, w, b)
        outer, inner = _rows("layer_norm", x)
        if x.size == 0:
            return x.compact()
        out = NDArray.call_op_override("layer_norm", (x, w, b), (outer, inner), outer, inner, self.eps)
        if out is not None:
            return out.reshape(x.shape)
        centred, inv = _ln_parts(x, self.eps)
        return centred * inv * w.compact().reshape((inner,)) + b.compact().reshape((inner,))

    def gradient(self, out_grad: Tensor, node: Tensor):
        x, w, b = node.inputs
        gx = Tensor.make_from_op(LayerNormGradX(self.eps), (out_grad, x, w))
        pair = {}
        gw = Tensor.make_from_op(LayerNormGradParam(self.eps, 0, pair), (out_grad, x))
        gb = Tensor.make_from_op(LayerNormGradParam(self.eps, 1, pair), (out_grad, x))
        if gw.shape != w.shape:
            gw = reshape(gw, w.shape)
        if gb.shape != b.shape:
            gb = reshape(gb, b.shape)
        return gx, gw, gb


def _unfused_xhat(x: Tensor, eps: float):
    last, dim = len(x.shape) - 1, x.shape[-1]
    centred = x + reshape(summation(x, (last,)) * (-1.0 / dim), _kept(x))
    var = reshape(summation(centred * centred, (last,)) / dim, _kept(x))
    inv = (var + eps) ** -0.5
    return centred * inv, inv


class LayerNormGradX(TensorOp):
    """The input's adjoint ``(gw - mean(gw) - xhat * mean(gw xhat)) / std``
    with ``gw = g * w`` (means over the last axis); inputs ``(g, x, w)``."""

    def __init__(self, eps: float):
        self.eps = eps

    def compute(self, g: NDArray, x: NDArray, w: NDArray) -> NDArray:
        outer, inner = _rows("layer_norm_grad_input", x)
        if x.size == 0:
            return x.compact()
        out = NDArray.call_op_override("layer_norm_grad_input", (g, x, w), (outer, inner),
                                       outer, inner, self.eps)
        if out is not None:
            return out.reshape(x.shape)
        centred, inv = _ln_parts(x, self.eps)
        xhat = centred * inv
        gw = g * w.compact().reshape((inner,))
        last = x.ndim - 1
        return inv * (gw - gw.sum(axis=last, keepdims=True) / inner
                      - xhat * ((gw * xhat).sum(axis=last, keepdims=True) / inner))

    def gradient(self, out_grad: Tensor, node: Tensor):
        g, x, w = node.inputs
        dim, last = x.shape[-1], len(x.shape) - 1
        xhat, inv = _unfused_xhat(x, self.eps)
        gw = g * (reshape(w, (dim,)) if w.shape != (dim,) else w)
        dx = inv * (gw - reshape(summation(gw, (last,)) / dim, _kept(x))
                    - xhat * reshape(summation(gw * xhat, (last,)) / dim, _kept(x)))
        return local_vjp(dx, (g, x, w), out_grad)


class LayerNormGradParam(TensorOp):
    """A parameter's adjoint as ``(D,)``, summed over every row: ``which=0``
    ``sum(g * xhat)`` (the weight's), ``which=1`` ``sum(g)`` (the bias's).
    The pair made by one backward shares one kernel call through ``pair``."""

    def __init__(self, eps: float, which: int, pair: dict = None):
        self.eps, self.which = eps, which
        self.pair = {} if pair is None else pair

    def compute(self, g: NDArray, x: NDArray) -> NDArray:
        cached = self.pair.pop(self.which, None)
        if cached is not None and cached[0] is g:
            return cached[1]
        outer, inner = _rows("layer_norm_grad_params", x)
        if x.size == 0:
            out = NDArray.make((inner,), device=x.device, dtype=x.dtype)
            out.fill(0.0)
            return out
        both = NDArray.call_op_override("layer_norm_grad_params", (g, x), (2, inner),
                                        outer, inner, self.eps)
        if both is not None:
            parts = [both[i:i + 1, :].compact().reshape((inner,)) for i in (0, 1)]
        else:
            centred, inv = _ln_parts(x, self.eps)
            rows = (outer, inner)
            gc = g.compact().reshape(rows)
            gxhat = (gc * (centred * inv).compact().reshape(rows))
            parts = [gxhat.sum(axis=0), gc.sum(axis=0)]
        other = 1 - self.which
        self.pair[other] = (g, parts[other])
        return parts[self.which]

    def gradient(self, out_grad: Tensor, node: Tensor):
        g, x = node.inputs
        lead = tuple(range(len(x.shape) - 1))
        if self.which == 0:
            xhat, _ = _unfused_xhat(x, self.eps)
            out = summation(g * xhat, lead)
        else:
            out = summation(g, lead)
        return local_vjp(out, (g, x), out_grad)


def layer_norm(x, w, b, eps=1e-5):
    """Layer norm over the last axis: ``(x - mean) / sqrt(var + eps) * w + b``
    with the row's mean and biased variance.  Input and parameters of
    different dtypes (a float64 batch through float32 parameters, as the
    course's tests feed) take the composition, which promotes as NumPy does;
    the fused node needs one dtype."""
    if isinstance(x, Tensor) and isinstance(w, Tensor) and isinstance(b, Tensor) \
            and not (x.dtype == w.dtype == b.dtype) and x.shape:
        last = len(x.shape) - 1
        keep = tuple(x.shape[:-1]) + (1,)
        n = x.shape[-1]
        mean = reshape(summation(x, (last,)) / n, keep)
        centred = x - mean
        var = reshape(summation(centred * centred, (last,)) / n, keep)
        return centred * (var + eps) ** -0.5 * w + b
    return LayerNorm(eps)(x, w, b)


register_op("softmax", Softmax, softmax)
register_op("layer_norm", LayerNorm, layer_norm)
