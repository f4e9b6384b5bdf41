"""Registration, configuration, threads and the not-built fallback of needle_cpu."""

import os
import subprocess
import sys

import pytest

import needle_cpu
from needle.protocol import Backend, OP_OVERRIDE_SIGNATURES, required_kernel_names

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def run_py(code, **env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=120)


def test_hook_returns_cpu_backend():
    (be,) = needle_cpu.needle_backends()
    assert isinstance(be, Backend)
    assert be.name == "cpu" and be.device_names() == ["cpu"]
    assert be.is_available() == (True, "")
    assert be.__tile_size__ == 8
    assert set(be.dtypes) == {"float32", "float64"}


def test_every_kernel_is_native():
    be = needle_cpu.CpuBackend()
    optional = ["matmul_strided", "matmul_batched", "ewise_strided", "matmul_tiled", "ewise_sub",
                "ewise_pow", "scalar_rdiv",
                "scalar_sub", "ewise_neg", "ewise_relu_grad"]
    for name in required_kernel_names() + optional:
        assert getattr(type(be), name) is not getattr(Backend, name, None), name


def test_config_and_overrides():
    be = needle_cpu.CpuBackend()
    cfg = be.config()
    assert set(cfg) >= {"openmp", "simd", "threads", "omp_threads_source"}
    assert cfg["simd"] in ("avx512", "avx2", "none")
    assert cfg["threads"] >= 1
    ov = be.op_overrides()
    assert set(ov) == set(OP_OVERRIDE_SIGNATURES)
    assert all(callable(f) for f in ov.values())


def test_thread_env_precedence():
    code = "import needle_cpu; print(needle_cpu.CpuBackend().config())"
    r = run_py(code, NEEDLE_NUM_THREADS="1", OMP_NUM_THREADS="2")
    assert r.returncode == 0, r.stderr
    cfg = eval(r.stdout)
    # without OpenMP the kernels run on one thread whatever the environment says
    no_omp = "built without OpenMP"
    assert cfg["threads"] == 1
    assert cfg["omp_threads_source"] == ("NEEDLE_NUM_THREADS" if cfg["openmp"] else no_omp)
    env = {k: v for k, v in os.environ.items() if k != "NEEDLE_NUM_THREADS"}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    cfg = eval(r.stdout)
    assert cfg["threads"] == 1
    assert cfg["omp_threads_source"] == ("OMP_NUM_THREADS" if cfg["openmp"] else no_omp)


def test_portable_env_switch():
    r = run_py("import needle_cpu; print(needle_cpu.CpuBackend().config()['simd'])",
               NEEDLE_CPU_SIMD="none")
    assert r.stdout.strip() == "none", r.stderr


def test_import_never_raises_without_extension():
    """A missing/broken extension gives an unavailable backend, not an ImportError."""
    code = (
        "import sys; sys.modules['needle_cpu._ext'] = None\n"
        "import needle_cpu\n"
        "(be,) = needle_cpu.needle_backends()\n"
        "ok, reason = be.is_available()\n"
        "print(ok, reason.startswith('extension not built'), be.name)\n"
        "try:\n"
        "    be.Array(3)\n"
        "except RuntimeError as e:\n"
        "    print('raised', type(e).__name__)\n"
    )
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["False True cpu", "raised BackendUnavailableError"]


def test_build_config_openmp_switch(monkeypatch, capsys):
    sys.path.insert(0, os.path.join(ROOT, "plugins", "cpu"))
    try:
        import build_config
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("NEEDLE_NO_OPENMP", "1")
    c, l, on = build_config.openmp_flags()
    assert (c, l, on) == ([], [], False)
    assert "WITHOUT OpenMP" in capsys.readouterr().err
    monkeypatch.delenv("NEEDLE_NO_OPENMP")
    c, l, on = build_config.openmp_flags()
    if on:
        assert c == ["-fopenmp"] and l == ["-fopenmp"]


def test_needle_lists_cpu_backend():
    """Discovery through the entry point finds this backend available."""
    nd = pytest.importorskip("needle.backend_ndarray")
    dev = nd.cpu()
    assert dev.enabled()
    assert type(dev.backend).__name__ == "CpuBackend"
