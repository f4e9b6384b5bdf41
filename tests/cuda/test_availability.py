"""is_available(): exact reasons, never raises, never hangs; import is cheap."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from needle_cuda import _driver

TIMEOUT = 60


def run_py(code: str, env=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env)


@pytest.mark.skipif(_driver._libcuda_loadable(), reason="an NVIDIA driver is installed here")
def test_no_driver_reason_in_fresh_process():
    # a subprocess with a timeout: a hang fails the test instead of blocking the suite
    r = run_py("""
        import needle_cuda
        b = needle_cuda.needle_backends()[0]
        print(repr(b.is_available()))
        print(repr(b.is_available()))   # second call: cached, same answer
        try:
            b.Array(4)
        except Exception as e:
            print(type(e).__name__, e)
    """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    expected = repr((False, "no NVIDIA driver found (libcuda.so not loadable)"))
    assert lines[0] == expected and lines[1] == expected
    assert lines[2].startswith("CudaUnavailableError cuda: no NVIDIA driver found")


def test_not_installed_reason():
    r = run_py("""
        import sys
        sys.modules["cuda.bindings"] = None      # makes `from cuda.bindings import driver` fail
        sys.modules["cuda.bindings.driver"] = None
        import needle_cuda
        print(needle_cuda.needle_backends()[0].is_available())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == repr((False, "cuda-python is not installed (pip install 'needle-dl[cuda]')"))


def test_import_is_cheap_and_touches_no_cuda_module():
    r = run_py("""
        import sys, time
        t = time.perf_counter()
        import needle_cuda
        dt = time.perf_counter() - t
        print(sorted(m for m in sys.modules if m == "cuda" or m.startswith("cuda.")))
        print(dt)
    """)
    assert r.returncode == 0, r.stderr
    mods, dt = r.stdout.splitlines()
    assert mods == "[]"
    assert float(dt) < 5.0  # generous: 2 shared cores; the real cost is a few ms


class _FakeInitDriver:
    """Just enough driver for the probe."""

    def __init__(self, init_result, count=1):
        from cuda.bindings import driver as real
        self.CUresult = real.CUresult
        self.init_result, self.count, self.init_calls = init_result, count, 0

    def cuInit(self, flags):
        self.init_calls += 1
        return (self.init_result,)

    def cuDeviceGetCount(self):
        return self.CUresult.CUDA_SUCCESS, self.count

    def cuGetErrorName(self, err):
        return self.CUresult.CUDA_SUCCESS, err.name.encode()


@pytest.fixture
def fresh_probe(monkeypatch):
    pytest.importorskip("cuda.bindings.driver")
    monkeypatch.setattr(_driver, "_probe", None)
    monkeypatch.setattr(_driver, "_driver", None)
    monkeypatch.setattr(_driver, "_libcuda_loadable", lambda: True)
    yield


def _with_fake(monkeypatch, fake):
    monkeypatch.setattr(_driver, "_import_driver", lambda: fake)


def test_no_device_reason(fresh_probe, monkeypatch):
    from cuda.bindings import driver as real
    fake = _FakeInitDriver(real.CUresult.CUDA_ERROR_NO_DEVICE)
    _with_fake(monkeypatch, fake)
    assert _driver.probe() == (False, "no CUDA device", 0)
    assert _driver.probe() == (False, "no CUDA device", 0)
    assert fake.init_calls == 1, "the driver is probed once"
    with pytest.raises(_driver.CudaUnavailableError, match="no CUDA device"):
        _driver.call("cuDeviceGet", 0, action="x")
    assert fake.init_calls == 1, "a failed probe is never retried"


def test_zero_devices_reason(fresh_probe, monkeypatch):
    from cuda.bindings import driver as real
    _with_fake(monkeypatch, _FakeInitDriver(real.CUresult.CUDA_SUCCESS, count=0))
    assert _driver.probe() == (False, "no CUDA device", 0)


def test_other_init_error_is_named(fresh_probe, monkeypatch):
    from cuda.bindings import driver as real
    _with_fake(monkeypatch, _FakeInitDriver(real.CUresult.CUDA_ERROR_SYSTEM_DRIVER_MISMATCH))
    ok, reason, _ = _driver.probe()
    assert not ok and reason == "CUDA driver initialisation failed: CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"


def test_init_raising_never_escapes(fresh_probe, monkeypatch):
    class Boom(_FakeInitDriver):
        def cuInit(self, flags):
            raise RuntimeError('"cuda" is an NVIDIA driver library and can only be found via system search')
    from cuda.bindings import driver as real
    _with_fake(monkeypatch, Boom(real.CUresult.CUDA_SUCCESS))
    assert _driver.probe() == (False, "no NVIDIA driver found (libcuda.so not loadable)", 0)


def test_available_lists_one_name_per_device(fresh_probe, monkeypatch):
    from cuda.bindings import driver as real
    _with_fake(monkeypatch, _FakeInitDriver(real.CUresult.CUDA_SUCCESS, count=3))
    from needle_cuda import CudaBackend
    b = CudaBackend()
    assert b.is_available() == (True, "")
    assert b.device_names() == ["cuda", "cuda:1", "cuda:2"]


def test_hook_returns_the_backend():
    import needle_cuda
    (b,) = needle_cuda.needle_backends()
    assert b.name == "cuda" and set(b.dtypes) == {"float32", "float64"}
    assert set(b.op_overrides()) == {"conv", "conv_grad_input", "conv_grad_weight", "logsumexp", "softmax",
                                     "rand_uniform", "embedding", "embedding_grad"}


def test_bench_script_exits_cleanly_without_gpu():
    ok, reason, _ = _driver.probe()
    if ok:
        pytest.skip("a GPU is usable here; the benchmark would run for real")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_gpu", "--reps", "1"], capture_output=True,
                       text=True, timeout=TIMEOUT, cwd=root)
    assert r.returncode == 2, r.stderr
    assert r.stdout.strip() == f"no GPU: cuda backend unavailable ({reason}); nothing measured"
