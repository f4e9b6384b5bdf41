"""needle's GPU backend: CUDA C kernels compiled at run time by NVRTC.

Install with ``pip install 'needle-dl[cuda]'`` (cuda-python + the NVRTC wheel).
Importing this module is cheap and never touches the driver; whether a GPU
is usable is decided on first use by ``CudaBackend.is_available()``.

Kernel sources live in ``kernels/*.cu``; compiled cubins are cached under
``$NEEDLE_CACHE_DIR/cuda-kernels`` (see :mod:`needle_cuda._cache`).
"""

from __future__ import annotations

from needle.protocol import hookimpl

from .backend import CudaBackend, __version__
from ._errors import CudaError, CudaUnavailableError, KernelCompileError

__all__ = ["CudaBackend", "CudaError", "CudaUnavailableError", "KernelCompileError",
           "empty_cache", "__version__"]

_backend = CudaBackend()


def empty_cache() -> int:
    """Give the memory cached by needle's allocator back to the driver;
    returns the number of bytes released."""
    return _backend.empty_cache()


@hookimpl
def needle_backends():
    return [_backend]
