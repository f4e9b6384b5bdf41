"""PyTorch-style containers: ``ModuleList`` and ``ModuleDict``.

Their items are named by position / key alone in state dicts
(``layers.0.weight``, not ``layers._items.0.weight``), like ``Sequential``'s.
Both are plain Modules with no ``forward``: they hold sub-modules so that
``parameters()``, ``train()``/``eval()``, ``to()`` and checkpoints see them.
"""

from __future__ import annotations

from .nn_basic import Module

__all__ = ["ModuleList", "ModuleDict"]


def _check_module(owner: str, value) -> Module:
    if not isinstance(value, Module):
        raise TypeError(f"{owner}: items must be nn.Module instances, got {type(value).__name__}")
    return value


class ModuleList(Module):
    """A list of sub-modules: ``append``, ``extend``, ``insert``, indexing,
    slicing (a new ModuleList of the same modules), ``len`` and iteration."""

    _items_attr = "_items"

    def __init__(self, modules=None):
        super().__init__()
        self._items = []
        if modules is not None:
            self.extend(modules)

    def append(self, module) -> "ModuleList":
        self._items.append(_check_module("ModuleList.append", module))
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module) -> None:
        self._items.insert(index, _check_module("ModuleList.insert", module))

    def _index(self, index: int) -> int:
        n = len(self._items)
        if not isinstance(index, int) or not -n <= index < n:
            raise IndexError(f"ModuleList: index {index!r} is out of range for a list of {n} modules")
        return index % n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(self._items[index])
        return self._items[self._index(index)]

    def __setitem__(self, index, module) -> None:
        self._items[self._index(index)] = _check_module("ModuleList.__setitem__", module)

    def __delitem__(self, index) -> None:
        if isinstance(index, slice):
            del self._items[index]
        else:
            del self._items[self._index(index)]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(): iterate over it in the parent's forward")


class ModuleDict(Module):
    """An insertion-ordered dict of sub-modules with string keys."""

    _items_attr = "_items"

    def __init__(self, modules=None):
        super().__init__()
        self._items = {}
        if modules is not None:
            self.update(modules)

    def update(self, modules) -> None:
        items = modules.items() if hasattr(modules, "items") else modules
        for key, module in items:
            self[key] = module

    def __setitem__(self, key, module) -> None:
        if not isinstance(key, str) or not key or "." in key:
            raise KeyError(f"ModuleDict: keys must be non-empty strings without '.', got {key!r}")
        self._items[key] = _check_module("ModuleDict.__setitem__", module)

    def __getitem__(self, key) -> Module:
        try:
            return self._items[key]
        except KeyError:
            raise KeyError(f"ModuleDict: no module named {key!r}; keys are {list(self._items)}") from None

    def __delitem__(self, key) -> None:
        del self._items[key]

    def __contains__(self, key) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def keys(self):
        return self._items.keys()

    def values(self):
        return self._items.values()

    def items(self):
        return self._items.items()

    def pop(self, key) -> Module:
        return self._items.pop(key)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward(): index it in the parent's forward")
