"""Parameter initializers (Xavier/Glorot and Kaiming/He), course formulas."""

from __future__ import annotations

import math

from .init_basic import rand, randn

__all__ = ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]


def _gain(nonlinearity: str) -> float:
    if nonlinearity != "relu":
        raise ValueError(f"kaiming init: only nonlinearity='relu' is supported, got {nonlinearity!r}")
    return math.sqrt(2.0)


def xavier_uniform(fan_in, fan_out, gain=1.0, **kwargs):
    """U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``; shape (fan_in, fan_out)."""
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rand(fan_in, fan_out, low=-a, high=a, **kwargs)


def xavier_normal(fan_in, fan_out, gain=1.0, **kwargs):
    """N(0, std^2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return randn(fan_in, fan_out, std=std, **kwargs)


def kaiming_uniform(fan_in, fan_out, shape=None, nonlinearity="relu", **kwargs):
    """U(-b, b) with ``b = sqrt(2) * sqrt(3 / fan_in)``.  ``shape`` sets the
    output shape only (conv weights); the bound still uses ``fan_in``."""
    bound = _gain(nonlinearity) * math.sqrt(3.0 / fan_in)
    shape = tuple(shape) if shape is not None else (fan_in, fan_out)
    return rand(*shape, low=-bound, high=bound, **kwargs)


def kaiming_normal(fan_in, fan_out, shape=None, nonlinearity="relu", **kwargs):
    """N(0, std^2) with ``std = sqrt(2) / sqrt(fan_in)``; ``shape`` as in kaiming_uniform."""
    std = _gain(nonlinearity) / math.sqrt(fan_in)
    shape = tuple(shape) if shape is not None else (fan_in, fan_out)
    return randn(*shape, std=std, **kwargs)
