"""What is installed and usable: ``needle.backends()`` and ``needle.show_config()``."""

from __future__ import annotations

import platform
import sys

from . import discovery

__all__ = ["__version__", "backends", "show_config", "backends_table"]

#: needle's version (``needle.__version__``; pyproject.toml says the same)
__version__ = "0.1.0"


def backends() -> list[dict]:
    """Every discovered backend: name, version, available, reason, devices, plugin, config."""
    rows = []
    for info in discovery.backend_infos():
        rows.append({
            "name": info.name,
            "version": info.version,
            "available": info.available,
            "reason": info.reason,
            "devices": info.devices,
            "plugin": info.plugin,
            "config": _config(info) if info.available else {},
        })
    return rows


def _config(info) -> dict:
    try:
        return dict(info.backend.config() or {})
    except Exception as exc:  # config is informative only: never break a listing
        return {"config error": f"{type(exc).__name__}: {exc}"}


def backends_table(with_config: bool = False) -> str:
    """A plain-text table of :func:`backends` (what ``needle backends`` prints)."""
    from .backend_ndarray.device import default_device
    lines = [f"{'backend':<10} {'version':<9} {'status':<12} {'devices':<22} details"]
    for info in discovery.backend_infos():
        status = "available" if info.available else "unavailable"
        devs = ", ".join(d + "()" for d in info.devices) or "-"
        detail = info.reason
        if info.available and with_config:
            detail = ", ".join(f"{k}={v}" for k, v in _config(info).items())
        lines.append(f"{info.name:<10} {info.version:<9} {status:<12} {devs:<22} {detail}")
    try:
        lines.append(f"default device: {default_device()}")
    except Exception as exc:
        lines.append(f"default device: none ({exc})")
    return "\n".join(lines)


def show_config(file=None) -> None:
    """Print versions, every backend's status and its build/runtime config
    (OpenMP, SIMD path, threads)."""
    import numpy
    import pluggy
    from .protocol import PROTOCOL_VERSION
    out = file or sys.stdout
    print(f"needle {__version__} (array protocol {PROTOCOL_VERSION})", file=out)
    print(f"python {platform.python_version()} on {platform.platform()}", file=out)
    print(f"numpy {numpy.__version__}, pluggy {pluggy.__version__}", file=out)
    print(backends_table(with_config=True), file=out)
