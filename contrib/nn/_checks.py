"""Input checks of the nn modules that are not plain hyper-parameters
(those use :mod:`needle.validation`)."""

from __future__ import annotations

from needle.autograd import Tensor
from needle.errors import ArgumentTypeError, ShapeError
from needle.validation import check_bool, check_choice, check_float, check_int, check_probability

__all__ = ["check_loss_inputs", "check_int", "check_float", "check_probability", "check_choice",
           "check_bool", "check_module"]


def check_loss_inputs(call: str, logits, y) -> None:
    """logits a 2-D Tensor ``(B, k)``; y ``(B,)`` class ids (a Tensor or array-like)."""
    if not isinstance(logits, Tensor):
        raise ArgumentTypeError(f"{call}: logits must be a Tensor of shape (batch, classes), got "
                                f"{type(logits).__name__}")
    shape = tuple(logits.shape)
    if len(shape) != 2:
        raise ShapeError(f"{call}: logits must have shape (batch, classes), got shape {shape}")
    y_shape = tuple(getattr(y, "shape", None) or ())
    if not hasattr(y, "shape"):
        try:
            y_shape = (len(y),)
        except TypeError:
            raise ArgumentTypeError(f"{call}: y must hold one class id per row, got "
                                    f"{type(y).__name__} {y!r}") from None
    if y_shape != (shape[0],):
        raise ShapeError(f"{call}: y has shape {y_shape}, expected ({shape[0]},): one class id per "
                         f"row of logits {shape}")


def check_module(call: str, name: str, value) -> None:
    if not callable(value):
        raise ArgumentTypeError(f"{call}: {name} must be a Module (callable), got {type(value).__name__}")
