"""The one door to the CUDA driver: lazy import, a guarded probe, checked calls.

Every driver call in the plugin goes through :func:`call`, which turns a
non-success ``CUresult`` into :class:`CudaError` carrying the error name (from
``cuGetErrorName``) and the action.  Tests replace the driver module with
:func:`set_driver_for_testing` to exercise the error paths without a GPU.

Probe discipline (ANCHORS section 2, pitfall a): the driver is probed once,
under a lock, and after a failed probe nothing touches it again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from typing import Any, Optional

from ._errors import CudaError, CudaUnavailableError

NOT_INSTALLED = "cuda-python is not installed (pip install 'needle-dl[cuda]')"
NO_DRIVER = "no NVIDIA driver found (libcuda.so not loadable)"
NO_DEVICE = "no CUDA device"

_lock = threading.Lock()
_driver: Any = None
_probe: Optional[tuple[bool, str, int]] = None  # (ok, reason, device count)


def _import_driver():
    from cuda.bindings import driver
    return driver


def _libcuda_loadable() -> bool:
    """Whether the driver library can be opened, checked with ctypes before
    cuda-python tries (its own failure path is what can leave state behind)."""
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    found = ctypes.util.find_library("cuda")
    if found:
        names.append(found)
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def probe() -> tuple[bool, str, int]:
    """``(available, reason, device_count)``; runs its checks once per process
    and never raises."""
    global _probe, _driver
    if _probe is not None:
        return _probe
    with _lock:
        if _probe is not None:
            return _probe
        try:
            _probe = _run_probe()
        except Exception as exc:  # noqa: BLE001 -- availability must never raise
            _probe = (False, f"CUDA driver probe failed: {type(exc).__name__}: {exc}", 0)
        if not _probe[0] and _driver is not None and not _testing:
            _driver = None  # never touch a driver that failed its probe
        return _probe


def _run_probe() -> tuple[bool, str, int]:
    global _driver
    drv = _driver
    if drv is None:
        try:
            drv = _import_driver()
        except ImportError:
            return False, NOT_INSTALLED, 0
        if not _libcuda_loadable():
            return False, NO_DRIVER, 0
    try:
        (err,) = drv.cuInit(0)
    except Exception as exc:  # noqa: BLE001 -- e.g. cuda.pathfinder DynamicLibNotFoundError
        if "driver" in str(exc).lower() or "libcuda" in str(exc).lower():
            return False, NO_DRIVER, 0
        return False, f"CUDA driver initialisation failed: {type(exc).__name__}: {exc}", 0
    name = error_name(err, drv)
    if name == "CUDA_ERROR_NO_DEVICE":
        return False, NO_DEVICE, 0
    if int(err) != 0:
        return False, f"CUDA driver initialisation failed: {name}", 0
    err, count = drv.cuDeviceGetCount()
    if int(err) != 0:
        return False, f"CUDA device count failed: {error_name(err, drv)}", 0
    if int(count) == 0:
        return False, NO_DEVICE, 0
    _driver = drv
    return True, "", int(count)


def error_name(err, drv=None) -> str:
    """``CUDA_ERROR_...`` for a CUresult, via cuGetErrorName when possible."""
    drv = drv if drv is not None else _driver
    if drv is not None:
        try:
            e2, name = drv.cuGetErrorName(err)
            if int(e2) == 0 and name:
                return name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # noqa: BLE001 -- naming is best effort
            pass
    name = getattr(err, "name", None)
    return name if isinstance(name, str) else f"CUresult {int(err)}"


def driver():
    """The driver module after a successful probe, else CudaUnavailableError."""
    ok, reason, _ = probe()
    if not ok:
        raise CudaUnavailableError(f"cuda: {reason}")
    return _driver


def call(fn: str, *args, action: str):
    """Call driver function ``fn``; raise CudaError(action, error name) unless
    it succeeded.  Returns the remaining results: None, one value or a tuple."""
    res = getattr(driver(), fn)(*args)
    if not isinstance(res, tuple):
        res = (res,)
    err = res[0]
    if int(err) != 0:
        raise CudaError(action, error_name(err), int(err))
    rest = res[1:]
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


# -- test support -------------------------------------------------------------
_testing = False


def set_driver_for_testing(fake, device_count: int = 1) -> None:
    """Install ``fake`` as the driver (a probe that succeeded); ``None`` resets
    to the unprobed state.  For tests only."""
    global _driver, _probe, _testing
    with _lock:
        _testing = fake is not None
        _driver = fake
        _probe = (True, "", device_count) if fake is not None else None
