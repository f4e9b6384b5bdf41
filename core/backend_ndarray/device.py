"""Devices: named places where arrays live, each served by one backend.

``cpu()``, ``cuda()`` and ``cpu_numpy()`` never raise: a device whose
backend is missing or unusable is *disabled* (``enabled() is False``) and
the first attempt to put an array on it raises
:class:`~needle.errors.BackendUnavailableError` with the reason.
``device("nope")`` raises that error at once.
"""

from __future__ import annotations

import os
import threading
from typing import Optional

import numpy as np

from .. import discovery
from ..errors import BackendUnavailableError

__all__ = ["BackendDevice", "Device", "device", "cpu", "cuda", "cpu_numpy", "default_device",
           "all_devices", "forget_devices", "set_default_device"]

# device name (as shown by repr) -> backend name, for the course's fixed names
_NAMED = {"cpu": "cpu", "cuda": "cuda", "cpu_numpy": "numpy"}
_UNRESOLVED = object()


class BackendDevice:
    """A device: ``name`` plus the backend object (``mod``) that computes on it.

    Attribute access falls through to the backend, so course code can call
    kernels directly (``nd.cpu().matmul_tiled(...)``, ``nd.cpu().__tile_size__``).
    Equality and hashing go by name; ``repr`` is ``name + "()"``.
    """

    def __init__(self, name: str, mod=_UNRESOLVED, *, backend_name: Optional[str] = None,
                 reason: str = ""):
        self.name = name
        self.backend_name = backend_name or _NAMED.get(name.split(":")[0], name.split(":")[0])
        self._mod = mod
        self._reason = reason
        self._overrides = None

    # -- backend resolution (lazy: importing needle touches no plugin) -------
    @property
    def mod(self):
        """The backend object, or ``None`` when this device is disabled."""
        if self._mod is _UNRESOLVED:
            info = discovery.get_backend_info(self.backend_name)
            if info is None:
                self._mod, self._reason = None, f"no backend named '{self.backend_name}' is installed"
            elif not info.available:
                self._mod, self._reason = None, info.reason
            else:
                try:
                    self._mod = info.backend.for_device(self.name)
                except Exception as exc:  # e.g. a GPU index that does not exist
                    self._mod, self._reason = None, f"{type(exc).__name__}: {exc}"
        return self._mod

    backend = mod

    def enabled(self) -> bool:
        return self.mod is not None

    def require(self):
        """The backend, or BackendUnavailableError naming the reason and the alternatives."""
        be = self.mod
        if be is None:
            raise BackendUnavailableError(
                f"device {self.name}() is unavailable: {self._reason}; "
                f"available devices: {discovery.available_summary()}")
        return be

    def op_override(self, op_name: str):
        """The backend's fused kernel for op ``op_name``, or None."""
        if self._overrides is None:
            be = self.require()
            self._overrides = dict(be.op_overrides() or {})
        return self._overrides.get(op_name)

    def __getattr__(self, attr):
        # only called for names not found normally: fall through to the backend
        if attr.startswith("_") and attr != "__tile_size__":
            raise AttributeError(attr)
        be = self.mod
        if be is None:  # AttributeError keeps hasattr()/getattr(default) working
            raise AttributeError(f"{self.name}() has no kernel {attr!r}: the device is unavailable "
                                 f"({self._reason})")
        return getattr(be, attr)

    def __eq__(self, other):
        return isinstance(other, BackendDevice) and self.name == other.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return self.name + "()"

    __str__ = __repr__

    # -- array helpers (course API) -----------------------------------------
    def rand(self, *shape, dtype="float32"):
        """Uniform [0, 1) samples: one ``np.random.rand(*shape)`` call."""
        from .ndarray import NDArray
        return NDArray(np.random.rand(*shape), device=self, dtype=dtype)

    def randn(self, *shape, dtype="float32"):
        """Standard normal samples: one ``np.random.randn(*shape)`` call."""
        from .ndarray import NDArray
        return NDArray(np.random.randn(*shape), device=self, dtype=dtype)

    def one_hot(self, n, i, dtype="float32"):
        """Rows of ``eye(n)`` selected by the integer indices ``i``."""
        from .ndarray import NDArray
        idx = np.asarray(i).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"one_hot: indices must lie in [0, {n}); got min {idx.min()}, max {idx.max()}")
        return NDArray(one_hot_rows(n, idx, dtype), device=self, dtype=dtype)

    def empty(self, shape, dtype="float32"):
        from .ndarray import NDArray
        return NDArray.make(tuple(shape), device=self, dtype=dtype)

    def full(self, shape, fill_value, dtype="float32"):
        arr = self.empty(shape, dtype)
        arr.fill(fill_value)
        return arr


Device = BackendDevice

_devices: dict[str, BackendDevice] = {}
_lock = threading.Lock()


def one_hot_rows(n: int, idx: np.ndarray, dtype="float32") -> np.ndarray:
    """``np.eye(n, dtype=dtype)[idx]`` without building the ``n x n`` identity
    (a 10,000-word vocabulary would cost 400 MB and most of a training step)."""
    idx = np.asarray(idx, dtype=np.int64)
    out = np.zeros(idx.shape + (n,), dtype=dtype)
    np.put_along_axis(out, idx[..., None], 1, axis=-1)
    return out


def forget_devices(backend_name: Optional[str]) -> None:
    """Drop cached device objects (after backends were registered or reset)."""
    if backend_name is None:
        _reset_default()
    with _lock:
        for key in list(_devices):
            if backend_name is None or _devices[key].backend_name == backend_name:
                dev = _devices[key]
                dev._mod, dev._overrides = _UNRESOLVED, None


discovery.on_backends_changed(forget_devices)


def _get(name: str, backend_name: Optional[str] = None) -> BackendDevice:
    dev = _devices.get(name)
    if dev is None:
        with _lock:
            dev = _devices.setdefault(name, BackendDevice(name, backend_name=backend_name))
    return dev


def cpu() -> BackendDevice:
    """The compiled CPU backend's device (disabled if that backend is unusable)."""
    return _get("cpu")


def cuda(index: int = 0) -> BackendDevice:
    """A CUDA GPU (disabled when there is none); never raises."""
    return _get("cuda" if index == 0 else f"cuda:{index}", "cuda")


def cpu_numpy() -> BackendDevice:
    """The NumPy reference backend's device."""
    return _get("cpu_numpy", "numpy")


def device(spec) -> BackendDevice:
    """Look a device up by backend or device name: ``"numpy"``, ``"cpu"``,
    ``"cpu_numpy"``, ``"cuda"``, ``"cuda:1"``, or a third-party backend's name.

    Raises BackendUnavailableError (with the reason and the list of available
    devices) when there is no such device or it is unusable here."""
    if isinstance(spec, BackendDevice):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"device: expected a device name such as 'cpu' or 'cuda:0', got {spec!r}")
    spec = spec.strip()
    if spec.endswith("()"):
        spec = spec[:-2]
    base, _, index = spec.partition(":")
    if index and not index.isdigit():
        raise BackendUnavailableError(f"device: bad device index in {spec!r}; expected e.g. 'cuda:1'")
    backend_name = _NAMED.get(base, base)
    info = discovery.get_backend_info(backend_name)
    if info is None:  # maybe a device name offered by some backend
        for other in discovery.backend_infos():
            if other.available and spec in other.devices:
                return _get(spec, other.name)
        raise BackendUnavailableError(
            f"device: unknown device {spec!r}; available devices: {discovery.available_summary()}")
    if not info.available:
        raise BackendUnavailableError(
            f"device: {spec!r} is unavailable: {info.reason}; available devices: "
            f"{discovery.available_summary()}")
    names = info.devices
    if index:
        k = int(index)
        wanted = base if k == 0 else f"{base}:{k}"
        if wanted not in names and not (k == 0 and names):
            raise BackendUnavailableError(
                f"device: {spec!r} does not exist; backend '{backend_name}' offers {names}")
        return _get(names[0] if k == 0 else wanted, backend_name)
    if base in names:
        return _get(base, backend_name)
    return _get(names[0], backend_name)


def default_device() -> BackendDevice:
    """``NEEDLE_DEVICE`` when set, else ``cpu`` when available, else ``cpu_numpy``.
    Never a GPU implicitly.  ``NEEDLE_BACKEND=np`` (course notebooks) selects
    the NumPy backend."""
    global _default
    if _default is not None:
        return _default
    spec = os.environ.get("NEEDLE_DEVICE", "").strip()
    if spec:
        dev = device(spec)
    elif os.environ.get("NEEDLE_BACKEND", "nd").strip() == "np":
        dev = cpu_numpy()
    else:
        dev = cpu() if cpu().enabled() else cpu_numpy()
    _default = dev
    return dev


_default: Optional[BackendDevice] = None


def set_default_device(dev) -> BackendDevice:
    """Make ``dev`` (a device or a name) the default device; returns the
    previous default.  ``None`` goes back to the environment's choice."""
    global _default
    previous = default_device()
    _default = None if dev is None else (dev if isinstance(dev, BackendDevice) else device(dev))
    if _default is not None:
        _default.require()
    return previous


def _reset_default() -> None:
    global _default
    _default = None


def all_devices() -> list[BackendDevice]:
    """The course's list: ``[cpu(), cuda(), cpu_numpy()]`` (some may be disabled)."""
    return [cpu(), cuda(), cpu_numpy()]
