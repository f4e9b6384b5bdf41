"""``needle.nn.utils``: PyTorch's gradient-clipping helper."""

from __future__ import annotations

import math

from needle.autograd import Tensor
from needle.optim import clip_grad_norm

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    ``parameters``: one Tensor or an iterable of Tensors (those without a
    gradient are skipped).  The scale is ``max_norm / (total + 1e-6)`` when
    ``total > max_norm``, as PyTorch and the course's ``clip_grad_norm`` do
    (this is that function).  Returns the norm before clipping as a 0-d
    float32 Tensor.  Only ``norm_type=2`` is supported.
    """
    if norm_type != 2:
        raise ValueError(f"clip_grad_norm_: only norm_type=2 is supported, got {norm_type!r}")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    total = clip_grad_norm(params, float(max_norm))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of the gradients is {total}, not finite")
    return Tensor(total, dtype="float32", requires_grad=False)
