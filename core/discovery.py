"""Finding backends: pluggy entry points, loaded lazily and in isolation.

Nothing here runs at ``import needle``.  The first call that needs a backend
(creating an array, listing backends) loads every entry point of the group
``needle.backends`` through pluggy -- one at a time, so a plugin that fails
to import is recorded as unavailable with its reason instead of breaking the
others.  Availability (``Backend.is_available``) is asked per backend, only
when that backend is listed or used.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Optional

import pluggy

from . import hookspecs
from .errors import BackendUnavailableError
from .protocol import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, Backend

GROUP = "needle.backends"

__all__ = ["BackendInfo", "backend_infos", "get_backend_info", "register_backend", "metadata_errors",
           "entry_points_of", "register_plugin", "reset", "plugin_manager", "on_plugins_loaded",
           "on_plugin_registered", "on_backends_changed", "GROUP"]


@dataclass
class BackendInfo:
    """What needle knows about one backend (shown by ``needle backends``)."""

    name: str
    plugin: str                      # entry-point name or module that provided it
    version: str = "?"
    backend: Optional[Backend] = None
    load_error: Optional[str] = None  # set when the plugin never produced a Backend
    _status: Optional[tuple[bool, str]] = field(default=None, repr=False)

    @property
    def status(self) -> tuple[bool, str]:
        """``(available, reason)``; computed once, on first request."""
        if self._status is None:
            self._status = self._probe()
        return self._status

    @property
    def available(self) -> bool:
        return self.status[0]

    @property
    def reason(self) -> str:
        return self.status[1]

    @property
    def devices(self) -> list[str]:
        if not self.available:
            return []
        try:
            return list(self.backend.device_names())
        except Exception as exc:  # a backend bug must not break listing
            self._status = (False, f"device_names() failed: {type(exc).__name__}: {exc}")
            return []

    def _probe(self) -> tuple[bool, str]:
        if self.load_error is not None:
            return False, self.load_error
        be = self.backend
        pv = getattr(be, "protocol_version", None)
        if not isinstance(pv, int) or pv < MIN_PROTOCOL_VERSION:
            return False, (f"written for array protocol {pv}, but this needle supports "
                           f"{MIN_PROTOCOL_VERSION}..{PROTOCOL_VERSION}; upgrade the plugin")
        if pv > PROTOCOL_VERSION:
            return False, (f"needs array protocol {pv}, but this needle has {PROTOCOL_VERSION}; "
                           f"upgrade needle")
        try:
            ok, reason = be.is_available()
        except Exception as exc:
            return False, f"is_available() raised {type(exc).__name__}: {exc}"
        return bool(ok), ("" if ok else str(reason or "unavailable (no reason given)"))


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.loaded = False
        self.infos: dict[str, BackendInfo] = {}
        #: distributions skipped because their metadata could not be read
        self.metadata_errors: list[str] = []
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)

    # -- loading ------------------------------------------------------------
    def ensure_loaded(self) -> None:
        if self.loaded:
            return
        with self.lock:
            if self.loaded:
                return
            self._load_entry_points()
            self.loaded = True
            self._notify_loaded()

    def _load_entry_points(self) -> None:
        disabled = {n.strip() for n in os.environ.get("NEEDLE_DISABLE_PLUGINS", "").split(",") if n.strip()}
        seen = set()
        for ep in entry_points_of(GROUP, self.metadata_errors):
            if ep.name in seen:  # the same dist seen twice on sys.path
                continue
            seen.add(ep.name)
            if ep.name in disabled:
                self.pm.set_blocked(ep.name)
                self.infos.setdefault(ep.name, BackendInfo(
                    ep.name, ep.name, load_error="disabled by NEEDLE_DISABLE_PLUGINS"))
                continue
            try:
                # loaded one by one (pluggy's load_setuptools_entrypoints would
                # re-read every distribution's metadata and stop at a broken one)
                self.pm.register(ep.load(), name=ep.name)
            except Exception as exc:
                self.infos[ep.name] = BackendInfo(
                    ep.name, ep.name, version=_dist_version(ep),
                    load_error=f"failed to import {ep.value}: {type(exc).__name__}: {exc}")
                continue
            plugin = self.pm.get_plugin(ep.name)
            if plugin is not None:
                self._collect(ep.name, plugin)

    def _collect(self, plugin_name: str, plugin: Any) -> None:
        """Ask one plugin for its backends and record each of them."""
        hook = getattr(plugin, "needle_backends", None)
        if hook is None:
            return
        try:
            backends = list(hook() or [])
        except Exception as exc:
            self.infos[plugin_name] = BackendInfo(
                plugin_name, plugin_name,
                load_error=f"needle_backends() raised {type(exc).__name__}: {exc}")
            return
        for be in backends:
            if not isinstance(be, Backend):
                self.infos[plugin_name] = BackendInfo(
                    plugin_name, plugin_name,
                    load_error=f"needle_backends() returned {type(be).__name__}, not a needle.protocol.Backend")
                continue
            self.infos[be.name] = BackendInfo(be.name, plugin_name, str(getattr(be, "version", "?")), be)

    def _notify_loaded(self) -> None:
        for callback in list(_ON_LOAD):
            callback(self.pm)


# Layers above this one (devices, the op registry) react to discovery through
# these callbacks, so discovery never imports them (docs/design.md, "Layers").
#: called with the plugin manager once its entry points are loaded
_ON_LOAD: list = []
#: called with each plugin module registered at run time
_ON_REGISTER: list = []
#: called with a backend name (None: every backend) when backends change
_ON_CHANGE: list = []


def on_plugins_loaded(callback) -> None:
    """Call ``callback(plugin_manager)`` after the entry points load (now, if
    they have loaded already), and again after every :func:`reset`."""
    _ON_LOAD.append(callback)
    if _REG.loaded:
        callback(_REG.pm)


def on_plugin_registered(callback) -> None:
    """Call ``callback(module)`` for each plugin module given to
    :func:`register_plugin` at run time (the op registry adds its ops, as it
    does for entry-point plugins through :func:`on_plugins_loaded`)."""
    _ON_REGISTER.append(callback)


def on_backends_changed(callback) -> None:
    """Call ``callback(backend_name_or_None)`` whenever a backend is registered
    or everything is reset (devices drop what they cached)."""
    _ON_CHANGE.append(callback)


def _changed(name: Optional[str]) -> None:
    for callback in list(_ON_CHANGE):
        callback(name)


_REG = _Registry()


def entry_points_of(group: str, errors: Optional[list] = None) -> list:
    """Entry points of ``group`` from every installed distribution.  Another
    distribution's unreadable metadata (not UTF-8, a line without '=') is
    skipped -- and described in ``errors`` -- instead of taking down
    discovery, as a broken plugin is."""
    errors = [] if errors is None else errors
    found = []
    try:
        dists = list(metadata.distributions())
    except Exception as exc:
        errors.append(f"listing installed distributions failed: {type(exc).__name__}: {exc}")
        return found
    for dist in dists:
        try:
            found.extend(ep for ep in dist.entry_points if ep.group == group)
        except Exception as exc:
            errors.append(f"{_dist_label(dist)}: unreadable entry-point metadata ({type(exc).__name__}: {exc})")
    return found


def _dist_label(dist) -> str:
    try:
        return f"{dist.metadata['Name']} at {getattr(dist, '_path', '?')}"
    except Exception:
        return f"a distribution at {getattr(dist, '_path', '?')}"


def metadata_errors() -> list[str]:
    """Installed distributions whose entry-point metadata could not be read (skipped)."""
    _REG.ensure_loaded()
    return list(_REG.metadata_errors)


def _dist_version(ep) -> str:
    try:
        return ep.dist.version if ep.dist is not None else "?"
    except Exception:
        return "?"


def plugin_manager() -> pluggy.PluginManager:
    """The pluggy manager (entry points loaded)."""
    _REG.ensure_loaded()
    return _REG.pm


def backend_infos() -> list[BackendInfo]:
    """Every discovered backend, in discovery order."""
    _REG.ensure_loaded()
    return list(_REG.infos.values())


def get_backend_info(name: str) -> Optional[BackendInfo]:
    _REG.ensure_loaded()
    return _REG.infos.get(name)


def register_backend(backend: Backend, plugin: str = "<runtime>") -> BackendInfo:
    """Register a backend object at run time (tests, notebooks, in-process plugins)."""
    if not isinstance(backend, Backend):
        raise TypeError(f"register_backend: expected a needle.protocol.Backend, got {type(backend).__name__}")
    _REG.ensure_loaded()
    with _REG.lock:
        info = BackendInfo(backend.name, plugin, str(getattr(backend, "version", "?")), backend)
        _REG.infos[backend.name] = info
    _changed(backend.name)
    return info


def register_plugin(module: Any, name: Optional[str] = None) -> None:
    """Register a plugin module (with hook implementations) at run time."""
    _REG.ensure_loaded()
    with _REG.lock:
        name = _REG.pm.register(module, name=name)
        _REG._collect(name, module)
    for callback in list(_ON_REGISTER):
        callback(module)
    _changed(None)


def reset() -> None:
    """Forget everything discovered (tests use this after changing sys.path or env)."""
    global _REG
    _REG = _Registry()
    _changed(None)


def require_backend(name: str) -> Backend:
    """The available backend called ``name``, or BackendUnavailableError explaining why not."""
    info = get_backend_info(name)
    if info is None:
        raise BackendUnavailableError(
            f"no backend named '{name}'; available: {available_summary()}")
    if not info.available:
        raise BackendUnavailableError(
            f"backend '{name}' is unavailable: {info.reason}; available: {available_summary()}")
    return info.backend


def available_summary() -> str:
    names = []
    for info in backend_infos():
        if info.available:
            names.extend(f"{d}() [{info.name}]" for d in info.devices)
    return ", ".join(names) or "none"
