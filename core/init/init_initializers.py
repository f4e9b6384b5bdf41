"""Parameter initializers (Xavier/Glorot and Kaiming/He), course formulas."""

from __future__ import annotations

import math

from ..errors import HyperParameterError
from ..validation import check_int
from .init_basic import rand, randn

__all__ = ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]


def _fan(call: str, fan_in, fan_out, shape):
    """Validated (fan_in, fan_out, shape); fans of 0 are allowed only for an
    empty tensor (PyTorch allows Linear(0, n)), whose bound is never used."""
    fan_in, fan_out = check_int(call, "fan_in", fan_in, 0), check_int(call, "fan_out", fan_out, 0)
    shape = tuple(shape) if shape is not None else (fan_in, fan_out)
    return fan_in, fan_out, shape


def _scale(fan: int, shape: tuple, value) -> float:
    if fan == 0:
        if math.prod(shape) == 0:
            return 0.0
        raise HyperParameterError(f"init: fan of 0 for a non-empty tensor of shape {shape}; the bound "
                                  f"divides by the fan, which must be >= 1")
    return value()


def _gain(nonlinearity: str) -> float:
    if nonlinearity != "relu":
        raise HyperParameterError(f"kaiming init: only nonlinearity='relu' is supported, got {nonlinearity!r}")
    return math.sqrt(2.0)


def xavier_uniform(fan_in, fan_out, gain=1.0, **kwargs):
    """U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``; shape (fan_in, fan_out)."""
    fan_in, fan_out, shape = _fan("xavier_uniform", fan_in, fan_out, None)
    a = _scale(fan_in + fan_out, shape, lambda: gain * math.sqrt(6.0 / (fan_in + fan_out)))
    return rand(fan_in, fan_out, low=-a, high=a, **kwargs)


def xavier_normal(fan_in, fan_out, gain=1.0, **kwargs):
    """N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out, shape = _fan("xavier_normal", fan_in, fan_out, None)
    std = _scale(fan_in + fan_out, shape, lambda: gain * math.sqrt(2.0 / (fan_in + fan_out)))
    return randn(fan_in, fan_out, std=std, **kwargs)


def kaiming_uniform(fan_in, fan_out, shape=None, nonlinearity="relu", **kwargs):
    """U(-b, b) with ``b = sqrt(2) * sqrt(3 / fan_in)``.  ``shape`` sets the
    output shape only (conv weights); the bound still uses ``fan_in``."""
    fan_in, fan_out, shape = _fan("kaiming_uniform", fan_in, fan_out, shape)
    bound = _scale(fan_in, shape, lambda: _gain(nonlinearity) * math.sqrt(3.0 / fan_in))
    return rand(*shape, low=-bound, high=bound, **kwargs)


def kaiming_normal(fan_in, fan_out, shape=None, nonlinearity="relu", **kwargs):
    """N(0, std^2) with ``std = sqrt(2) / sqrt(fan_in)``; ``shape`` as in kaiming_uniform."""
    fan_in, fan_out, shape = _fan("kaiming_normal", fan_in, fan_out, shape)
    std = _scale(fan_in, shape, lambda: _gain(nonlinearity) / math.sqrt(fan_in))
    return randn(*shape, std=std, **kwargs)
