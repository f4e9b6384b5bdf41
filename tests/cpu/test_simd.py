"""Run-time SIMD dispatch of the CPU backend (NEEDLE_CPU_SIMD, set_simd).

Every path this CPU can run passes the conformance suite (in a subprocess,
forced through the environment variable, the way a user would force it); a
path the CPU lacks is refused with BackendUnavailableError instead of dying
of an illegal instruction.  The AVX-512 kernels can only be run on a CPU with
avx512f: their value test is conditional on that hardware, nothing else is.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import needle_cpu._ext as ext
from needle.errors import BackendUnavailableError

from cpu_buffers import get, put

RUNNABLE_PATHS = ext.SIMD_PATHS[:ext.SIMD_PATHS.index(ext.simd_best()) + 1]
MISSING_PATHS = ext.SIMD_PATHS[len(RUNNABLE_PATHS):]
HAS_AVX512 = "avx512" in RUNNABLE_PATHS


def run_py(code, timeout=600, **env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=timeout)


def _proc_cpuinfo_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.fixture(autouse=True)
def _restore_auto():
    yield
    ext.set_simd("auto")


def test_best_path_matches_the_cpu_flags():
    flags = set(ext.cpu_simd_flags().split(","))
    best = ext.simd_best()
    assert best == ("avx512" if "avx512f" in flags else "avx2" if {"avx2", "fma"} <= flags
                    else "none")
    cpuinfo = _proc_cpuinfo_flags()
    if cpuinfo is not None and {"avx2", "fma"} & cpuinfo:  # an x86 Linux machine: an independent oracle
        assert ("avx512f" in flags) == ("avx512f" in cpuinfo)
        assert ({"avx2", "fma"} <= flags) == ({"avx2", "fma"} <= cpuinfo)
    assert ext.simd_path() == best  # the default is the best the CPU has
    assert ext.CpuBackend().config()["simd"] == best


def test_every_path_is_either_runnable_or_refused():
    for path in ext.SIMD_PATHS:
        if path in RUNNABLE_PATHS:
            assert ext.set_simd(path) == path
            assert ext.simd_path() == path
        else:
            with pytest.raises(BackendUnavailableError) as info:
                ext.set_simd(path)
            msg = str(info.value)
            assert repr(path) in msg and ext.cpu_simd_flags() in msg
            assert ext.simd_path() == RUNNABLE_PATHS[-1]  # the refused call changed nothing
    assert ext.set_simd("auto") == ext.simd_best()
    with pytest.raises(ValueError, match="set_simd"):
        ext.set_simd("sse9")


def test_vmath_follows_the_simd_level():
    ext.set_simd("none")
    assert ext.vmath_path() == "libm"
    if "avx2" in RUNNABLE_PATHS:
        ext.set_simd("avx2")
        assert ext.vmath_path() == "avx2+fma"


@pytest.mark.parametrize("path", RUNNABLE_PATHS)
def test_conformance_suite_on_each_runnable_path(path):
    """The whole backend conformance suite with NEEDLE_CPU_SIMD forced."""
    code = ("import sys, pytest, needle_cpu._ext as e\n"
            f"assert e.simd_path() == {path!r}, e.simd_path()\n"
            "sys.exit(pytest.main(['--pyargs', 'needle.testing', '--needle-backend', 'cpu',"
            " '-q', '-x', '-p', 'no:cacheprovider']))\n")
    r = run_py(code, NEEDLE_CPU_SIMD=path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert " passed" in r.stdout and "failed" not in r.stdout


@pytest.mark.parametrize("value", list(MISSING_PATHS) + ["sse9"])
def test_env_forcing_an_unusable_path_makes_the_backend_unavailable(value):
    """Never an illegal instruction: the backend says why, and using it raises."""
    code = ("import needle as ndl, needle_cpu\n"
            "(be,) = needle_cpu.needle_backends()\n"
            "ok, reason = be.is_available()\n"
            "print(ok)\nprint(reason)\n"
            "try:\n"
            "    ndl.Tensor([1.0, 2.0], device=ndl.cpu())\n"
            "except ndl.errors.BackendUnavailableError as exc:\n"
            "    print('raised', 'NEEDLE_CPU_SIMD' in str(exc))\n")
    r = run_py(code, timeout=120, NEEDLE_CPU_SIMD=value)
    assert r.returncode == 0, r.stderr
    ok, reason, raised = r.stdout.strip().splitlines()
    assert ok == "False" and raised == "raised True"
    assert f"NEEDLE_CPU_SIMD={value!r}" in reason
    if value != "sse9":
        assert ext.cpu_simd_flags() in reason
    else:
        assert "avx512, avx2, none" in reason


def _gemm(be, a, b, path):
    ext.set_simd(path)
    m, n = a.shape
    p = b.shape[1]
    out = be.Array(m * p, a.dtype)
    be.matmul(put(be, a), put(be, b), out, m, n, p)
    return get(be, out, (m, p))


GEMM_SHAPES = [(6, 16, 32), (7, 11, 13), (97, 257, 127), (300, 300, 300), (128, 784, 100),
               (150, 520, 3100), (1000, 3, 40)]


@pytest.mark.skipif(not HAS_AVX512, reason="this CPU has no avx512f: the AVX-512 kernels cannot run")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mnp", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_avx512_kernels_match_numpy_and_avx2(be, dtype, mnp):
    """Same blocking and FMA order as AVX2, so the values agree bit for bit."""
    m, n, p = mnp
    rng = np.random.default_rng(m + n + p)
    a, b = rng.uniform(-1, 1, (m, n)).astype(dtype), rng.uniform(-1, 1, (n, p)).astype(dtype)
    z = _gemm(be, a, b, "avx512")
    y = _gemm(be, a, b, "avx2")
    tol = n * (1e-6 if dtype == np.float32 else 1e-14) * 10
    np.testing.assert_allclose(z, a.astype(np.float64) @ b, rtol=tol, atol=tol)
    np.testing.assert_array_equal(z, y)


@pytest.mark.skipif(not HAS_AVX512, reason="this CPU has no avx512f: the AVX-512 kernels cannot run")
def test_avx512_conv_matches_avx2(be):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 9, 9, 5)).astype(np.float32)
    w = rng.uniform(-1, 1, (3, 3, 5, 17)).astype(np.float32)
    outs = []
    for path in ("avx512", "avx2"):
        ext.set_simd(path)
        out = be.Array(2 * 9 * 9 * 17, np.float32)
        be.conv(put(be, x), put(be, w), out, 2, 9, 9, 5, 3, 17, 1, 1)
        outs.append(get(be, out))
    np.testing.assert_array_equal(outs[0], outs[1])


def _row_kernels(be, x, g, w, b, eps=1e-5):
    """The layer-norm overrides (forward, input and parameter adjoints) and
    softmax's backward on (outer, r) rows, as NumPy arrays."""
    outer, r = x.shape
    ov = be.op_overrides()
    y = be.Array(x.size)
    ov["layer_norm"](put(be, x), put(be, w), put(be, b), y, outer, r, eps)
    gx = be.Array(x.size)
    ov["layer_norm_grad_input"](put(be, g), put(be, x), put(be, w), gx, outer, r, eps)
    gp = be.Array(2 * r)
    ov["layer_norm_grad_params"](put(be, g), put(be, x), gp, outer, r, eps)
    sm = np.exp(x - x.max(1, keepdims=True))
    sm = (sm / sm.sum(1, keepdims=True)).astype(np.float32)
    sg = be.Array(x.size)
    ov["softmax_grad"](put(be, sm), put(be, g), sg, outer, r)
    return (get(be, y, x.shape), get(be, gx, x.shape), get(be, gp, (2, r)), get(be, sg, x.shape), sm)


def _row_refs(x, g, w, b, sm, eps=1e-5):
    x, g, w, b, sm = (a.astype(np.float64) for a in (x, g, w, b, sm))
    r = x.shape[1]
    mu = x.mean(1, keepdims=True)
    inv = 1 / np.sqrt(((x - mu) ** 2).mean(1, keepdims=True) + eps)
    xh = (x - mu) * inv
    gw = g * w
    gx = inv * (gw - gw.mean(1, keepdims=True) - xh * (gw * xh).mean(1, keepdims=True))
    assert r == x.shape[1]
    return (xh * w + b, gx, np.stack([(g * xh).sum(0), g.sum(0)]),
            sm * (g - (g * sm).sum(1, keepdims=True)))


# row lengths around the 16-lane partial sums and the 256-element blocks
ROW_SHAPES = [(3, 1), (5, 7), (9, 16), (33, 64), (4, 255), (6, 300), (2, 517), (1100, 64)]


@pytest.mark.parametrize("path", RUNNABLE_PATHS)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_row_kernels_on_each_path_match_float64(be, path, shape):
    """Layer norm and softmax backward on every SIMD build the CPU can run:
    float32 results within a few ulp of float64 arithmetic, on row lengths
    that leave tails after the vector lanes and after a block."""
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal((2, shape[1])).astype(np.float32)
    ext.set_simd(path)
    got = _row_kernels(be, x, g, w, b)
    want = _row_refs(x, g, w, b, got[4])
    for name, a, e in zip(("layer_norm", "grad_input", "grad_params", "softmax_grad"), got, want):
        tol = 2e-5 * (shape[0] if name == "grad_params" else 1) ** 0.5
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol, err_msg=f"{name} on {path}")
