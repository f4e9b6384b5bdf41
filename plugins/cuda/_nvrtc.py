"""NVRTC: compile the kernel sources to cubin for one GPU architecture.

Needs only the NVRTC library (PyPI ``nvidia-cuda-nvrtc``), never a driver or a
GPU, so the compile test runs on any machine.  Every real compilation bumps
:data:`COMPILE_COUNT` and, when ``NEEDLE_CUDA_COMPILE_LOG`` names a file,
appends one line to it -- that is how tests prove a warm cache compiles
nothing, even across processes.
"""

from __future__ import annotations

import os
import threading
from typing import Optional, Sequence

from . import _cache
from ._errors import CudaUnavailableError, KernelCompileError

#: Number of NVRTC compilations done by this process.
COMPILE_COUNT = 0

#: Options every kernel is compiled with.  No fast-math: exp/log/tanh/div keep
#: IEEE behaviour so results match NumPy closely.
BASE_OPTIONS: tuple[str, ...] = ("-std=c++17",)

_lock = threading.Lock()
_nvrtc_mod = None


def nvrtc():
    """The ``cuda.bindings.nvrtc`` module (it locates libnvrtc through
    cuda.pathfinder, which also finds the PyPI wheel's copy)."""
    global _nvrtc_mod
    if _nvrtc_mod is None:
        try:
            from cuda.bindings import nvrtc as mod
        except ImportError as exc:
            raise CudaUnavailableError(
                "cuda-python is not installed (pip install 'needle-dl[cuda]')") from exc
        _nvrtc_mod = mod
    return _nvrtc_mod


def _check(result, action: str, log: str = ""):
    err = result[0]
    if int(err) != 0:
        try:
            name = nvrtc().nvrtcGetErrorString(err)[1].decode()
        except Exception:  # noqa: BLE001 -- best effort naming only
            name = getattr(err, "name", f"nvrtcResult {int(err)}")
        raise KernelCompileError(action, name, int(err), log)
    return result[1:]


def version() -> tuple[int, int]:
    """NVRTC's (major, minor)."""
    major, minor = _check(nvrtc().nvrtcVersion(), "querying the NVRTC version")
    return int(major), int(minor)


def library_path() -> Optional[str]:
    """Where libnvrtc was found: cuda.pathfinder when present, else the
    ``nvidia/cuda_nvrtc/lib`` folder of an installed wheel."""
    try:
        from cuda import pathfinder
        return pathfinder.load_nvidia_dynamic_lib("nvrtc").abs_path
    except Exception:  # noqa: BLE001 -- fall back to looking for the wheel
        pass
    import glob
    import site
    for base in site.getsitepackages() + [site.getusersitepackages()]:
        for pattern in ("nvidia/cuda_nvrtc/lib/libnvrtc.so*", "nvidia/cu*/lib/libnvrtc.so*"):
            hits = sorted(glob.glob(os.path.join(base, pattern)))
            if hits:
                return hits[0]
    return None


def supported_archs() -> list[int]:
    """Architectures this NVRTC can emit cubin for, e.g. [75, 80, 86, 89, 90, ...]."""
    mod = nvrtc()
    (n,) = _check(mod.nvrtcGetNumSupportedArchs(), "querying NVRTC architectures")
    (archs,) = _check(mod.nvrtcGetSupportedArchs(), "querying NVRTC architectures")
    return [int(a) for a in archs][: int(n)]


def choose_target(cc: int, supported: Sequence[int]) -> tuple[str, str]:
    """Target for a device of compute capability ``cc`` (e.g. 90).

    cubin for the exact ``sm_XY`` when NVRTC knows it; for a GPU newer than
    this NVRTC, PTX for the newest architecture NVRTC knows (the driver JITs
    it forward); an older GPU than any NVRTC target cannot be served.
    Returns ``(kind, arch)`` with kind ``"cubin"`` or ``"ptx"``."""
    if cc in supported:
        return "cubin", f"sm_{cc}"
    older = [a for a in supported if a < cc]
    if older:
        return "ptx", f"compute_{max(older)}"
    raise CudaUnavailableError(
        f"cuda: this NVRTC cannot compile for compute capability {cc // 10}.{cc % 10}; "
        f"it supports sm_{min(supported)}..sm_{max(supported)}")


def compile_source(source: str, name: str, arch: str, options: Sequence[str] = BASE_OPTIONS,
                   kind: str = "cubin", warnings_are_errors: bool = False) -> tuple[bytes, str]:
    """Compile CUDA C ``source`` for ``arch`` (``"sm_90"`` or ``"compute_90"``).

    Returns ``(code, log)``.  Raises :class:`KernelCompileError` with the
    program log on failure, and also on any warning when
    ``warnings_are_errors`` (the compile test uses that)."""
    global COMPILE_COUNT
    mod = nvrtc()
    (prog,) = _check(mod.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], []),
                     f"creating NVRTC program {name}")
    try:
        opts = [f"--gpu-architecture={arch}".encode()] + [o.encode() for o in options]
        result = mod.nvrtcCompileProgram(prog, len(opts), opts)
        with _lock:
            COMPILE_COUNT += 1
        _log_compile(name, arch)
        (size,) = _check(mod.nvrtcGetProgramLogSize(prog), f"reading the log of {name}")
        buf = b" " * int(size)
        _check(mod.nvrtcGetProgramLog(prog, buf), f"reading the log of {name}")
        log = buf.rstrip(b"\0 \n").decode(errors="replace")
        _check(result, f"compiling {name} for {arch}", log)
        if warnings_are_errors and log:
            raise KernelCompileError(f"compiling {name} for {arch}", "NVRTC_WARNING", 0, log)
        if kind == "cubin":
            get_size, get = mod.nvrtcGetCUBINSize, mod.nvrtcGetCUBIN
        else:
            get_size, get = mod.nvrtcGetPTXSize, mod.nvrtcGetPTX
        (n,) = _check(get_size(prog), f"reading the {kind} of {name}")
        code = b" " * int(n)
        _check(get(prog, code), f"reading the {kind} of {name}")
        return code, log
    finally:
        mod.nvrtcDestroyProgram(prog)


def _log_compile(name: str, arch: str) -> None:
    path = os.environ.get("NEEDLE_CUDA_COMPILE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {name} {arch}\n")


def compile_cached(source: str, name: str, arch: str, options: Sequence[str] = BASE_OPTIONS,
                   kind: str = "cubin") -> bytes:
    """Compile through the on-disk cache (see :mod:`needle_cuda._cache`)."""
    key = _cache.cache_key(source, f"{kind}:{arch}", version(), options)
    code = _cache.load(key, kind)
    if code is None:
        code, _ = compile_source(source, name, arch, options, kind)
        _cache.store(key, code, kind)
    return code
