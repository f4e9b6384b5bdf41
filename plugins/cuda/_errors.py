"""Errors of the CUDA backend.

Every failing CUDA driver or NVRTC call becomes a :class:`CudaError` that
names the CUDA error (``CUDA_ERROR_OUT_OF_MEMORY``, ``NVRTC_ERROR_COMPILATION``,
...) -- something a user can search for -- and what needle was doing.
"""

from __future__ import annotations

from needle.errors import BackendUnavailableError, NeedleError

__all__ = ["CudaError", "KernelCompileError", "CudaUnavailableError", "BackendUnavailableError",
           "CaptureUnsupportedError", "CaptureAllocationError"]


class CudaError(NeedleError, RuntimeError):
    """A CUDA driver or NVRTC call failed.

    Attributes: ``error_name`` (e.g. ``"CUDA_ERROR_INVALID_VALUE"``),
    ``code`` (the integer result) and ``action`` (what was being done)."""

    def __init__(self, action: str, error_name: str, code: int = -1, detail: str = ""):
        self.action, self.error_name, self.code, self.detail = action, error_name, code, detail
        msg = f"cuda: {action} failed: {error_name} (code {code})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)

    def __reduce__(self):  # keep it picklable (pytest-xdist, multiprocessing)
        return (type(self), (self.action, self.error_name, self.code, self.detail))


class KernelCompileError(CudaError):
    """NVRTC rejected a kernel source (or warned about it in strict mode); the
    message carries the program log."""


class CudaUnavailableError(BackendUnavailableError):
    """The CUDA backend cannot run here (no cuda-python, no driver, no device)."""


class CaptureUnsupportedError(NeedleError, RuntimeError):
    """A call that a CUDA graph cannot hold (a host copy, a device allocation)
    met while a step was being prepared for capture; the step then replays
    from Python instead."""


class CaptureAllocationError(CaptureUnsupportedError):
    """A kernel asked for device memory while a CUDA graph was being captured
    and none had been reserved for it.  The capture is abandoned (the step then
    replays from Python); it never reaches ``cuMemAlloc`` inside capture."""
