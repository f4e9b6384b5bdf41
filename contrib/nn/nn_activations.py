"""PyTorch-named activations: ``GELU`` and ``Softmax(dim)``.

Both are compositions of existing ops, so they run on every backend and
differentiate (twice, too) without new kernels.
"""

from __future__ import annotations

import math

from needle import ops
from needle.errors import ShapeError

from .nn_basic import Module

__all__ = ["GELU", "Softmax"]

# Chebyshev fit of erfc (Numerical Recipes' erfcc): relative error < 1.2e-7
# for z >= 0, smooth, so its derivative is accurate to float32 as well
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
         0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def _erfc_nonneg(z):
    """erfc(z) for a Tensor z >= 0."""
    t = (z * 0.5 + 1.0) ** -1
    poly = t * _ERFC[-1]
    for c in reversed(_ERFC[1:-1]):
        poly = (poly + c) * t
    return t * ops.exp(poly + _ERFC[0] - z * z)


class GELU(Module):
    """x * Phi(x), Phi the standard normal CDF.

    ``approximate="none"`` (exact, PyTorch's default) writes
    ``x * Phi(x) = x/2 + |x|/2 * erf(|x|/sqrt 2)`` so that erf is only needed
    for non-negative arguments, where a smooth fit serves (no sign op, and
    the gradient at 0 comes out as 1/2).  ``approximate="tanh"``:
    ``x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))``.
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        if self.approximate == "tanh":
            inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
            return x * 0.5 * (ops.tanh(inner) + 1.0)
        a = ops.relu(x) + ops.relu(-x)  # |x|, with gradient 0 at 0
        erf_abs = -_erfc_nonneg(a * (1.0 / math.sqrt(2.0))) + 1.0
        return x * 0.5 + a * erf_abs * 0.5

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    """exp(x) / sum(exp(x)) along axis ``dim`` (negative counts from the end).

    The row maximum is subtracted first (a constant, so the gradient is
    unchanged) for stability.
    """

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = int(dim)

    def forward(self, x):
        ndim = len(x.shape)
        if not -ndim <= self.dim < ndim:
            raise ShapeError(f"Softmax(dim={self.dim}): input of shape {tuple(x.shape)} has no such axis")
        axis = self.dim % ndim
        peak = ops.max(x.detach(), axes=(axis,), keepdims=True)
        e = ops.exp(x - peak)
        keep = tuple(1 if i == axis else d for i, d in enumerate(x.shape))
        return e / e.sum((axis,)).reshape(keep)

    def extra_repr(self):
        return f"dim={self.dim}"
