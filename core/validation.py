"""Argument checks shared by every public constructor (``needle.validation``).

Each helper returns the value normalised (an ``int`` or ``float``) or raises
a needle error naming the call, the argument, the value and what is valid:
:class:`~needle.errors.ArgumentTypeError` (a ``TypeError``) for a value of the
wrong kind, :class:`~needle.errors.HyperParameterError` (a ``ValueError``)
for one outside its domain.  Bounds follow PyTorch where PyTorch has one
(lr >= 0, 0 <= p <= 1, 0 <= betas < 1, eps > 0, weight_decay >= 0, features
>= 0).  Layers, optimizers, schedulers and loaders call them on their first
lines, so a bad setting fails at construction, not steps later.
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np

from .errors import ArgumentTypeError, HyperParameterError

__all__ = ["check_int", "check_float", "check_probability", "check_choice", "check_bool"]


def check_int(call: str, name: str, value, minimum: int | None = 0) -> int:
    """``value`` as an int >= ``minimum`` (bools and floats are refused: 2.5 features is a bug);
    ``minimum=None``: any integer (the caller checks the range with its own message)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        try:
            if isinstance(value, bool):
                raise TypeError
            value = operator.index(value)
        except TypeError:
            bound = "" if minimum is None else f" >= {minimum}"
            raise ArgumentTypeError(f"{call}: {name} must be an integer{bound}, got "
                                    f"{type(value).__name__} {value!r}") from None
    value = int(value)
    if minimum is not None and value < minimum:
        raise HyperParameterError(f"{call}: {name} must be an integer >= {minimum}, got {value}")
    return value


def check_float(call: str, name: str, value, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite-or-bounded float in the interval low..high
    (closed unless ``*_open``); NaN is always refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{call}: {name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    ok = not math.isnan(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo = f"{'(' if low_open else '['}{low:g}"
        hi = f"{high:g}{')' if high_open else ']'}"
        raise HyperParameterError(f"{call}: {name} must lie in {lo}, {hi}, got {value!r}")
    return v


def check_probability(call: str, name: str, value) -> float:
    """A probability: a real in [0, 1]."""
    return check_float(call, name, value, 0.0, 1.0)


def check_choice(call: str, name: str, value, choices) -> object:
    if value not in choices:
        raise HyperParameterError(f"{call}: {name} must be one of {list(choices)!r}, got {value!r}")
    return value


def check_bool(call: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_, numbers.Integral)) or value not in (0, 1):
        raise ArgumentTypeError(f"{call}: {name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)
