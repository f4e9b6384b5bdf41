"""PyTorch-named losses: ``CrossEntropyLoss`` and ``MSELoss``.

The course's own loss, ``SoftmaxLoss`` (nn_basic), stays as it is;
``CrossEntropyLoss`` computes the same mean for class indices and adds
PyTorch's options: ``reduction``, ``ignore_index`` and class-probability
targets.  Targets may be Tensors, NumPy arrays or lists; they are constants
(no gradient flows into a target).
"""

from __future__ import annotations

import numpy as np

from needle import ops
from needle.autograd import Tensor
from needle.errors import NeedleError, ShapeError

from .nn_basic import Module

__all__ = ["CrossEntropyLoss", "MSELoss", "TargetError"]

_REDUCTIONS = ("mean", "sum", "none")


class TargetError(NeedleError, IndexError):
    """A class-index target outside ``[0, classes)`` or not an integer."""


def _check_reduction(owner: str, reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _host(target) -> np.ndarray:
    return target.numpy() if isinstance(target, Tensor) else np.asarray(target)


def _const_like(array: np.ndarray, like: Tensor) -> Tensor:
    return Tensor(array, device=like.device, dtype=like.dtype, requires_grad=False)


def _reduce(per_sample: Tensor, reduction: str, count=None) -> Tensor:
    if reduction == "none":
        return per_sample
    total = per_sample.sum()
    if reduction == "sum":
        return total
    return total / (per_sample.shape[0] if count is None else count)


class CrossEntropyLoss(Module):
    """Cross-entropy between logits ``(N, C)`` and a target.

    The target is either class indices ``(N,)`` (integers, stored as any
    numeric dtype) or class probabilities ``(N, C)``.  Per sample:
    ``logsumexp(z) - z[y]`` (indices) or ``-sum_c p_c * log_softmax(z)_c``
    (probabilities).  ``reduction``: ``"mean"`` (over the samples whose
    target is not ``ignore_index``), ``"sum"`` or ``"none"`` (shape ``(N,)``,
    0 for ignored samples).  PyTorch's ``weight`` and ``label_smoothing`` are
    not supported and are refused when given.
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0):
        super().__init__()
        if weight is not None:
            raise NotImplementedError("CrossEntropyLoss: class weights (weight=...) are not supported")
        if label_smoothing:
            raise NotImplementedError("CrossEntropyLoss: label_smoothing is not supported")
        self.ignore_index = int(ignore_index)
        self.reduction = _check_reduction("CrossEntropyLoss", reduction)

    def forward(self, logits: Tensor, target) -> Tensor:
        shape = tuple(logits.shape)
        if len(shape) != 2:
            raise ShapeError(f"CrossEntropyLoss: logits must be (N, C), got shape {shape}")
        n, classes = shape
        y = _host(target)
        if y.shape == shape:  # class probabilities
            lse = ops.logsumexp(logits, axes=(1,))
            probs = _const_like(y, logits)
            picked = (logits * probs).sum((1,))
            return _reduce(lse * probs.sum((1,)) - picked, self.reduction)
        if y.shape != (n,):
            raise ShapeError(
                f"CrossEntropyLoss: target must be class indices of shape ({n},) or probabilities of "
                f"shape {shape}, got shape {y.shape}")
        if y.size and not np.all(np.mod(y, 1) == 0):
            raise TargetError(f"CrossEntropyLoss: class-index targets must be integers, got {y[np.mod(y, 1) != 0][:5]}")
        y = y.astype(np.int64)
        keep = y != self.ignore_index
        bad = keep & ((y < 0) | (y >= classes))
        if bad.any():
            raise TargetError(
                f"CrossEntropyLoss: target {int(y[bad][0])} is out of range for {classes} classes "
                f"(valid: 0..{classes - 1}, or ignore_index={self.ignore_index})")
        # the fused per-row loss (no one-hot matrix); ignored rows get class 0
        # and are masked out below
        per_sample = ops.softmax_cross_entropy(logits, _const_like(np.where(keep, y, 0), logits))
        if keep.all():
            return _reduce(per_sample, self.reduction)
        per_sample = per_sample * _const_like(keep.astype(np.float32), logits)
        # PyTorch: the mean over zero kept samples is nan (0/0)
        return _reduce(per_sample, self.reduction, count=int(keep.sum()) or float("nan"))

    def extra_repr(self):
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"


class MSELoss(Module):
    """Mean squared error between ``input`` and a ``target`` of the same shape.

    ``reduction``: ``"mean"`` (over every element), ``"sum"`` or ``"none"``.
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = _check_reduction("MSELoss", reduction)

    def forward(self, input: Tensor, target) -> Tensor:
        if not isinstance(target, Tensor):
            target = _const_like(np.asarray(target), input)
        if tuple(target.shape) != tuple(input.shape):
            raise ShapeError(
                f"MSELoss: input shape {tuple(input.shape)} and target shape {tuple(target.shape)} "
                "must be equal")
        diff = input - target
        sq = diff * diff
        if self.reduction == "none":
            return sq
        total = sq.sum()
        return total if self.reduction == "sum" else total / max(int(np.prod(input.shape)), 1)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"
