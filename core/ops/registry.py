"""The op registry: one entry per op, name -> (class, function).

Built-in ops register themselves when their module is imported; third-party
plugins register through the pluggy hook ``needle_register_ops(register)``,
which discovery calls with :func:`register_op`.  ``needle.ops.<name>``, the
top-level aliases and the ``Tensor`` methods all come from here, so an op is
never written twice.  Nothing in the hot path looks ops up by string: the
functions and classes are bound once, at import or registration time.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from .. import discovery
from ..autograd import Op

__all__ = ["OpEntry", "REGISTRY", "register_op", "get_op", "op_names"]


@dataclass(frozen=True)
class OpEntry:
    """A registered op: its registry ``name``, its class and its function."""

    name: str
    cls: type
    function: Callable


#: name -> OpEntry, in registration order.
REGISTRY: Dict[str, OpEntry] = {}


def _default_function(name: str, cls: type) -> Callable:
    """``function(*inputs, **attrs) = cls(**attrs)(*inputs)`` for ops registered
    without a helper."""

    def function(*inputs, **attrs):
        return cls(**attrs)(*inputs)

    function.__name__ = name
    function.__qualname__ = name
    function.__doc__ = f"Apply :class:`{cls.__name__}` (registered op '{name}')."
    return function


def register_op(name: str, cls: type, function: Optional[Callable] = None, *,
                replace: bool = False) -> OpEntry:
    """Add op class ``cls`` under ``name``; ``function`` is the lowercase
    helper (generated as ``cls(**attrs)(*inputs)`` when omitted).

    The op becomes ``needle.ops.<name>`` (and ``needle.<name>`` once needle is
    imported), and its class ``needle.ops.<ClassName>``.  Registering an
    existing name with a different class raises ValueError unless
    ``replace=True``.
    """
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"register_op: name must be a public Python identifier, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Op)):
        raise TypeError(f"register_op('{name}'): cls must be a subclass of needle.autograd.Op "
                        f"(TensorOp or TensorTupleOp), got {cls!r}")
    if function is not None and not callable(function):
        raise TypeError(f"register_op('{name}'): function must be callable, got {function!r}")
    old = REGISTRY.get(name)
    if old is not None and old.cls is not cls and not replace:
        raise ValueError(f"register_op: an op named '{name}' is already registered "
                         f"({old.cls.__qualname__}); pass replace=True to override it")
    entry = OpEntry(name, cls, function or _default_function(name, cls))
    REGISTRY[name] = entry
    _publish(entry)
    return entry


def _publish(entry: OpEntry) -> None:
    """Expose a newly registered op on ``needle.ops`` and ``needle`` when those
    modules are already imported (built-ins are exported by ``__all__``)."""
    for modname in ("needle.ops", "needle"):
        mod = sys.modules.get(modname)
        if mod is None:
            continue
        if entry.name in ("max", "min", "sum", "abs", "pow", "round"):
            if modname == "needle":
                continue  # never shadow a builtin in needle's namespace
        setattr(mod, entry.name, entry.function)
        setattr(mod, entry.cls.__name__, entry.cls)
        names = getattr(mod, "__all__", None)
        if isinstance(names, list):
            for n in (entry.name, entry.cls.__name__):
                if n not in names:
                    names.append(n)


def _register_plugin_ops(plugin_manager) -> None:
    """Let every plugin's ``needle_register_ops(register)`` hook add its ops."""
    for impl in plugin_manager.hook.needle_register_ops.get_hookimpls():
        try:
            impl.function(register=register_op)
        except Exception as exc:  # a broken op plugin must not break array creation
            warnings.warn(f"needle: plugin {impl.plugin_name!r} failed to register ops: {exc}")


def _register_module_ops(module) -> None:
    """A plugin module registered at run time adds its ops through the same hook."""
    hook = getattr(module, "needle_register_ops", None)
    if hook is not None:
        hook(register=register_op)


discovery.on_plugins_loaded(_register_plugin_ops)
discovery.on_plugin_registered(_register_module_ops)


def get_op(name: str) -> OpEntry:
    """The entry registered under ``name`` (KeyError listing the names otherwise)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no op named '{name}'; registered ops: {', '.join(REGISTRY)}") from None


def op_names() -> list:
    return list(REGISTRY)
