"""Softmax cross-entropy on class-index labels, fused (issue 14).

``softmax_cross_entropy(logits, labels)`` gives each row's loss
``logsumexp(z_i) - z_i[y_i]`` as a ``(B,)`` Tensor in one graph node; its
adjoint ``(softmax(z_i) - onehot(y_i)) * g_i`` is one more node.  No one-hot
matrix is built when the backend offers the op overrides ``softmax_xent``
and ``softmax_xent_grad`` (``protocol.OP_OVERRIDE_SIGNATURES``); otherwise
the forward is the composition ``nn.SoftmaxLoss`` always used (``logsumexp``
minus the row sum of ``logits * one_hot``), so the numpy backend and
third-party backends give the values they gave before.

Labels are read on the host (the one-hot path did the same) to check them:
a label that is not a whole number in ``[0, classes)`` is an
OutOfBoundsError naming the op, never an out-of-row read.

Higher-order gradients rebuild the gradient's composition from Tensor ops
and differentiate it (:func:`needle.autograd.local_vjp`).
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor, TensorOp, local_vjp
from ..backend_ndarray import NDArray, array as nd_array, capture
from ..errors import ArgumentTypeError, DeviceMismatchError, OutOfBoundsError, ShapeError, UnsupportedDTypeError
from .ops_logarithmic import logsumexp, logsumexp_array
from .ops_mathematic import broadcast_to, exp, reshape
from .registry import register_op

__all__ = ["SoftmaxCrossEntropy", "SoftmaxCrossEntropyGrad", "softmax_cross_entropy"]

_OP = "softmax_cross_entropy"


def _check_shapes(z_shape, y_shape) -> None:
    if len(z_shape) != 2:
        raise ShapeError(f"{_OP}: logits must have shape (batch, classes), got shape {tuple(z_shape)}")
    if z_shape[1] < 1:
        raise ShapeError(f"{_OP}: logits need at least one class, got shape {tuple(z_shape)}")
    if tuple(y_shape) != (z_shape[0],):
        raise ShapeError(f"{_OP}: labels have shape {tuple(y_shape)}, expected ({z_shape[0]},): "
                         f"one class index per row of logits {tuple(z_shape)}")


def _host_labels(y: NDArray, classes: int) -> np.ndarray:
    """The labels as int64 on the host, checked to be whole numbers in [0, classes)."""
    host = y.numpy()
    if host.size:
        ok = np.isfinite(host) & (host == np.floor(host)) & (host >= 0) & (host < classes)
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            raise OutOfBoundsError(f"{_OP}: label {host[row]!r} of row {row} is not a class index; "
                                   f"valid: whole numbers in [0, {classes})")
    return host.astype(np.int64)


def _checked_labels(y: NDArray, classes: int):
    """The host labels (checked), or None inside a needle.jit capture: a
    replay cannot read them on the host, so there the kernels alone guard
    the rows (the cpu kernel reports a bad label after the replay)."""
    return None if capture.capturing() else _host_labels(y, classes)


def _labels_for(z: NDArray, y: NDArray) -> NDArray:
    """``y`` in ``z``'s dtype (the op overrides take one dtype)."""
    if y.dtype == z.dtype:
        return y
    if capture.capturing():
        return y.cast(z.dtype)
    return nd_array(y.numpy().astype(z.dtype), dtype=z.dtype, device=z.device)


def _one_hot(z: NDArray, y: NDArray, idx) -> NDArray:
    """The labels' one-hot rows: from the host indices ``idx``, or (idx None,
    inside a capture) on the device by comparing the labels with 0..classes-1
    -- the same 0/1 values."""
    rows, classes = z.shape
    if idx is None:
        ids = _labels_for(z, y).reshape((rows, 1)).broadcast_to((rows, classes))
        columns = nd_array(np.arange(classes, dtype=z.dtype), dtype=z.dtype, device=z.device)
        return ids == columns.reshape((1, classes)).broadcast_to((rows, classes))
    host = np.zeros((rows, classes), dtype=z.dtype)
    host[np.arange(rows), idx] = 1
    return nd_array(host, dtype=z.dtype, device=z.device)


class SoftmaxCrossEntropy(TensorOp):
    """Per-row loss ``logsumexp(z_i) - z_i[y_i]`` of logits ``z (B, C)`` and
    class indices ``y (B,)`` (any float dtype, whole numbers); no adjoint
    flows into the labels."""

    def compute(self, z: NDArray, y: NDArray) -> NDArray:
        _check_shapes(z.shape, y.shape)
        rows, classes = z.shape
        idx = _checked_labels(y, classes)
        out = NDArray.call_op_override("softmax_xent", (z, _labels_for(z, y)), (rows,), rows, classes)
        if out is not None:
            return out
        # the composition nn.SoftmaxLoss used before this op (same values)
        return logsumexp_array(z, (1,)) - (z * _one_hot(z, y, idx)).sum(axis=(1,))

    def gradient_needed(self, out_grad: Tensor, node: Tensor, need):
        z, y = node.inputs
        gz = SoftmaxCrossEntropyGrad()(z, y, out_grad) if need[0] else None
        gy = y * 0.0 if need[1] else None  # labels are indices: no adjoint
        return gz, gy


class SoftmaxCrossEntropyGrad(TensorOp):
    """``(softmax(z_i) - onehot(y_i)) * g_i``, the logits' adjoint of
    :class:`SoftmaxCrossEntropy` given its adjoint ``g (B,)``."""

    def compute(self, z: NDArray, y: NDArray, g: NDArray) -> NDArray:
        _check_shapes(z.shape, y.shape)
        rows, classes = z.shape
        idx = _checked_labels(y, classes)
        out = NDArray.call_op_override("softmax_xent_grad", (z, _labels_for(z, y), g),
                                       (rows, classes), rows, classes)
        if out is not None:
            return out
        lse = logsumexp_array(z, (1,)).reshape((rows, 1)).broadcast_to((rows, classes))
        probs = (z - lse).exp()
        return (probs - _one_hot(z, y, idx)) * g.compact().reshape((rows, 1)).broadcast_to((rows, classes))

    def gradient(self, out_grad: Tensor, node: Tensor):
        z, y, g = node.inputs
        rows, classes = z.shape
        ya = y.realize_cached_data()
        one_hot = Tensor(_one_hot(z.realize_cached_data(), ya, _checked_labels(ya, classes)),
                         device=z.device, dtype=z.dtype, requires_grad=False)
        lse = broadcast_to(reshape(logsumexp(z, axes=(1,)), (rows, 1)), (rows, classes))
        dz = (exp(z - lse) - one_hot) * broadcast_to(reshape(g, (rows, 1)), (rows, classes))
        return local_vjp(dz, (z, y, g), out_grad)


def softmax_cross_entropy(logits, labels):
    """Per-row softmax cross-entropy ``logsumexp(logits_i) - logits_i[labels_i]``
    as a ``(B,)`` Tensor; ``labels`` are class indices ``(B,)`` (a Tensor on
    the logits' device, or an array/list).  ``.sum() / B`` is
    ``nn.SoftmaxLoss``."""
    if not isinstance(logits, Tensor):
        raise ArgumentTypeError(f"{_OP}: logits must be a Tensor, got {type(logits).__name__}")
    if np.dtype(logits.dtype).kind != "f":
        raise UnsupportedDTypeError(f"{_OP}: logits must be floating point, got {logits.dtype}")
    if not isinstance(labels, Tensor):
        try:
            host = np.asarray(labels)
        except Exception:
            host = None
        if host is None or host.dtype.kind not in "biuf":
            raise ArgumentTypeError(f"{_OP}: labels must be class indices (a Tensor or numbers), "
                                    f"got {type(labels).__name__}")
        labels = Tensor(host.astype(logits.dtype), device=logits.device, dtype=logits.dtype,
                        requires_grad=False)
    elif labels.device != logits.device:
        raise DeviceMismatchError(f"{_OP}: labels are on {labels.device}, logits on {logits.device}; "
                                  "put both on one device")
    _check_shapes(tuple(logits.shape), tuple(labels.shape))
    return SoftmaxCrossEntropy()(logits, labels)


register_op("softmax_cross_entropy", SoftmaxCrossEntropy, softmax_cross_entropy)
