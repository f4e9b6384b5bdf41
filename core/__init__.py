"""needle: a small, fast, readable deep-learning framework with pluggable
array backends, API-compatible with the CMU 10-414/714 course framework.

>>> import needle as ndl
>>> x = ndl.Tensor([[1.0, 2.0]], requires_grad=True)
>>> (x * x).sum().backward(); x.grad
"""

from __future__ import annotations

import importlib

from . import errors
from . import backend_ndarray
from .backend_ndarray import (BackendDevice, NDArray, all_devices, cpu, cpu_numpy, cuda,
                              default_device, device, set_default_device)
from .discovery import register_backend, register_plugin
from .info import __version__, backends, show_config
from . import autograd
from .autograd import Op, Tensor, TensorOp, TensorTuple, TensorTupleOp, Value, no_grad
from . import ops
from .ops import *  # noqa: F401,F403 -- every op function and class, as the course exposes them
from . import init
from .init import ones, ones_like, zeros, zeros_like
from . import replay
from .replay import jit

Device = BackendDevice

# contrib subpackages and heavier helpers load on first use (PEP 562), so
# importing needle stays cheap and core never imports contrib at start-up
_LAZY_MODULES = {"nn", "optim", "data", "models", "distributed", "testing", "serialization"}
_LAZY_ATTRS = {"save": "serialization", "load": "serialization"}


def __getattr__(name):
    if name in _LAZY_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY_ATTRS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'needle' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY_MODULES | set(_LAZY_ATTRS))
