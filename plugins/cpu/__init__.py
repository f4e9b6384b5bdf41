"""needle's fast CPU backend (Cython + OpenMP), registered as ``cpu``.

The kernels live in the compiled module ``needle_cpu._ext`` (sources:
``_ext.pyx`` and ``csrc/*.c``); ``build_config.py`` tells the root setup.py
how to build it.  Importing this package never raises: when the extension is
missing or broken, the backend it registers reports itself unavailable with
the import error as the reason, and needle falls back to another device.

Environment:
    NEEDLE_NUM_THREADS   threads for the kernels (else OMP_NUM_THREADS, else all cores)
    NEEDLE_CPU_SIMD      avx512, avx2 or none forces that GEMM/conv/vmath path
                         (default: the best this CPU has, from cpuid at run
                         time); a path the CPU lacks makes the backend
                         unavailable with the reason, never a crash
    NEEDLE_NO_OPENMP=1   at build time: compile without OpenMP (serial kernels)
"""

from __future__ import annotations

import os

from needle.protocol import Backend, hookimpl

# libgomp's idle worker threads spin (~300k iterations) before sleeping.  On a
# shared or busy machine that spinning steals the cores from the thread doing
# the work (and from NumPy's BLAS threads): measured 4-20x slowdowns of 2-thread
# kernels with 7 runnable processes on 2 cores.  Spin briefly instead, unless the
# user chose a policy.  Read by libgomp when it loads, i.e. on importing _ext.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "2000"

__version__ = "0.1.0"
__all__ = ["CpuBackend", "needle_backends", "__version__"]

try:
    from ._ext import Array, CpuArray, CpuBackend  # noqa: F401
    from ._ext import set_num_threads as _set_num_threads
    _IMPORT_ERROR = None
    # libgomp's thread pool does not survive fork(): a forked child (a DataLoader
    # worker) whose parent has run a parallel region hangs in its first one.  A
    # forked child therefore runs the kernels on one thread (as PyTorch's
    # DataLoader workers do); exec'd children start afresh.
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: _set_num_threads(1))
except Exception as exc:  # a missing or broken build must not break needle
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

    def _unavailable(self, *args, **kwargs):
        from needle.errors import BackendUnavailableError

        raise BackendUnavailableError(f"cpu backend: extension not built: {_IMPORT_ERROR}")

    def _is_available(self):
        return False, f"extension not built: {_IMPORT_ERROR}"

    _ns = {name: _unavailable for name in Backend.__abstractmethods__}
    _ns.update(
        name="cpu",
        version=__version__,
        dtypes=("float32", "float64"),
        __tile_size__=8,
        __doc__="Placeholder for the CPU backend when its extension is not built.",
        is_available=_is_available,
        device_names=lambda self: ["cpu"],
        config=lambda self: {"openmp": False, "simd": "none", "threads": 0,
                             "omp_threads_source": "extension not built"},
    )
    CpuBackend = type("CpuBackend", (Backend,), _ns)


@hookimpl
def needle_backends():
    return [CpuBackend()]
