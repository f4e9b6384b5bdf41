"""Extension modules of the CPU backend (imported by the root setup.py).

``extensions(root)`` returns the one Cython extension ``needle_cpu._ext``:
``_ext.pyx`` (validation and the Backend class) plus the C kernels in
``csrc/``.  OpenMP is used when the compiler accepts ``-fopenmp`` (checked by
compiling a tiny program) unless ``NEEDLE_NO_OPENMP=1`` is set at build time;
without it the kernels run serially and the build prints a warning.  No
``-march`` flag: the AVX2 micro-kernels carry their own target attribute and
are chosen at run time, so the module runs on any CPU of its architecture.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
C_SOURCES = ["common.c", "pool.c", "ewise.c", "ewise_strided.c", "strided.c", "gemm.c", "conv.c", "vmath.c"]
# issue 14 fused loss + multi-tensor optimizer steps (fused_loss.c)
C_SOURCES += ["fused_loss.c"]
# [i14f2 fused norm] batch-norm op overrides
C_SOURCES += ["fused_norm.c"]
# layer norm and softmax-backward row kernels, per SIMD level
C_SOURCES += ["fused_rows.c"]
# rand_uniform op override (the protocol's counter-based generator)
C_SOURCES += ["rand.c"]
# recorded kernel calls: eager calls and CpuBackend.compile_replay's native loop
C_SOURCES += ["replay.c"]
# nn.Embedding's row gather / scatter-add with device-side indices (needle.jit)
C_SOURCES += ["embedding.c"]
CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
}


def _warn(msg: str) -> None:
    bar = "*" * 78
    print(f"\n{bar}\nneedle_cpu: {msg}\n{bar}\n", file=sys.stderr)


def _compiler_accepts(flags_compile, flags_link, code: str) -> bool:
    """Compile and link ``code`` with the default C compiler and the flags."""
    try:
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler
    except ImportError:  # pragma: no cover - very old setuptools
        from distutils.ccompiler import new_compiler
        from distutils.sysconfig import customize_compiler
    tmp = tempfile.mkdtemp(prefix="needle_cpu_probe_")
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2), os.dup(1)
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        cc = new_compiler()
        customize_compiler(cc)
        os.dup2(devnull, 2)
        os.dup2(devnull, 1)
        objs = cc.compile([src], output_dir=tmp, extra_postargs=list(flags_compile))
        cc.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=list(flags_link))
        return True
    except Exception:
        return False
    finally:
        os.dup2(saved[0], 2)
        os.dup2(saved[1], 1)
        os.close(saved[0])
        os.close(saved[1])
        os.close(devnull)
        shutil.rmtree(tmp, ignore_errors=True)


_OMP_PROBE = """
#include <omp.h>
int main(void) {
  int n = 0;
  #pragma omp parallel reduction(+:n)
  n += 1;
  return n > 0 ? 0 : 1;
}
"""


def openmp_flags():
    """(compile_flags, link_flags, enabled) for OpenMP on this compiler."""
    if os.environ.get("NEEDLE_NO_OPENMP", "").strip() not in ("", "0"):
        _warn("NEEDLE_NO_OPENMP is set: building WITHOUT OpenMP; every kernel runs on one thread.")
        return [], [], False
    if _compiler_accepts(["-fopenmp"], ["-fopenmp"], _OMP_PROBE):
        return ["-fopenmp"], ["-fopenmp"], True
    _warn("the C compiler does not support -fopenmp: building WITHOUT OpenMP; "
          "every kernel runs on one thread. Install an OpenMP runtime (libgomp / libomp) "
          "to enable threads.")
    return [], [], False


def extensions(root):
    """The CPU backend's setuptools Extension list (empty if Cython is missing)."""
    from setuptools import Extension

    try:
        from Cython.Build import cythonize
    except ImportError:
        _warn("Cython is not installed: the compiled CPU backend is NOT built "
              "(needle falls back to the numpy backend).")
        return []
    here = os.path.relpath(HERE, root) if os.path.isabs(HERE) else HERE
    if os.path.abspath(os.getcwd()) != os.path.abspath(root):
        here = HERE  # setup.py run from elsewhere: absolute paths still work
    csrc = os.path.join(here, "csrc")
    omp_c, omp_l, omp_on = openmp_flags()
    simd_c = [] if omp_on else (["-fopenmp-simd"] if _compiler_accepts(
        ["-fopenmp-simd"], [], "int main(void){return 0;}") else [])
    # -fno-math-errno: needle never reads errno, and without it sqrt cannot
    # vectorise (each negative input became a libm call that sets errno).
    # -fno-trapping-math: needle never traps or reads floating-point
    # exceptions, and without it a comparison inside a loop is "control flow"
    # (it might trap) so the loop is not vectorised: relu's gradient
    # g * (x > 0) ran a branch per element, 1.4 ms instead of 0.07 ms on
    # 262k random-sign floats.  Neither flag changes a result (unlike
    # -ffast-math: NaN, inf and rounding stay IEEE).
    compile_args = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fno-strict-aliasing", "-Wno-unused-function",
                    "-Wno-unknown-pragmas"] + omp_c + simd_c
    if not omp_on:  # thread counts then feed only the (ignored) pragmas
        compile_args.append("-Wno-unused-variable")
    ext = Extension(
        "needle_cpu._ext",
        sources=[os.path.join(here, "_ext.pyx")] + [os.path.join(csrc, s) for s in C_SOURCES],
        include_dirs=[csrc],
        depends=[os.path.join(csrc, h) for h in
                 ("needle_cpu.h", "gemm_tmpl.h", "ewise_tmpl.h", "ewise_strided_tmpl.h", "conv_tmpl.h",
                  "replay.h", "embedding.h")]
                + [os.path.join(csrc, "fused_loss.h")],  # issue 14 fused loss/optimizer
        extra_compile_args=compile_args,
        extra_link_args=omp_l,
        define_macros=[("NEEDLE_CPU_OPENMP", "1" if omp_on else "0")],
    )
    return cythonize([ext], compiler_directives=CYTHON_DIRECTIVES, quiet=True)
