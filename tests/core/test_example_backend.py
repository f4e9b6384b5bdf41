"""The out-of-tree example backend (examples/needle-arraybackend), installed
the way a user installs a plugin: ``pip install`` into a target folder put on
``sys.path``.  It must be discovered, be selectable with ``ndl.device``, and
pass the conformance suite; a copy with one wrong kernel must fail it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
from needle import discovery

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "needle-arraybackend"
NAME = "pyarray"


def pip_install(src: Path, target: Path) -> None:
    """``pip install --no-deps --no-build-isolation --target`` (offline: needs no download)."""
    # build from a copy so that setuptools' build/ and egg-info stay out of the repo
    work = target.parent / (target.name + "-src")
    shutil.copytree(src, work, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(work)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"pip install failed:\n{out.stdout}\n{out.stderr}"


def run_suite(site: Path, tmp: Path):
    """The conformance suite on the example backend, in a fresh interpreter, outside the repo."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(site), os.environ.get("PYTHONPATH")] if p))
    return subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "needle.testing", "--needle-backend", NAME,
                           "--needle-quick", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    site = tmp_path_factory.mktemp("site") / "lib"
    pip_install(EXAMPLE, site)
    assert (site / "needle_arraybackend-0.1.0.dist-info" / "entry_points.txt").exists()
    return site


@pytest.fixture
def on_path(installed):
    sys.path.insert(0, str(installed))
    importlib.invalidate_caches()
    discovery.reset()
    try:
        yield installed
    finally:
        sys.path.remove(str(installed))
        sys.modules.pop("needle_arraybackend", None)
        importlib.invalidate_caches()
        discovery.reset()


def test_example_is_discovered_and_selectable(on_path):
    info = discovery.get_backend_info(NAME)
    assert info is not None and info.available, info and info.reason
    assert info.version == "0.1.0" and info.devices == [NAME] and info.plugin == NAME
    assert any(r["name"] == NAME and r["available"] for r in ndl.backends())
    dev = ndl.device(NAME)
    assert repr(dev) == "pyarray()" and dev.enabled()
    x = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]], dtype=np.float32)
    t = ndl.Tensor(x, device=dev, requires_grad=True)
    y = (ndl.ops.exp(t) * 2.0).sum()
    y.backward()
    assert t.device == dev and t.cached_data._handle.__class__.__module__ == "needle_arraybackend"
    np.testing.assert_allclose(y.numpy(), (np.exp(x) * 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(t.grad.numpy(), np.exp(x) * 2, rtol=1e-5)
    a = ndl.NDArray(x, device=dev)
    np.testing.assert_allclose((a @ a.permute((1, 0))).numpy(), x @ x.T, rtol=1e-5)


def test_example_passes_the_conformance_suite(installed, tmp_path):
    out = run_suite(installed, tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-6000:]
    assert "needle conformance report: backend 'pyarray'" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "native" in lines["ewise_add"] and "pass" in lines["ewise_add"]
    assert "falls back to composition" in lines["matmul_strided"] and "pass" in lines["matmul_strided"]
    assert "native" in lines["ewise_neg"]
    assert "NOT TESTED" not in text and "FAIL" not in text


def test_a_broken_copy_is_caught(tmp_path):
    """One wrong kernel (ewise_mul adds) makes the suite fail and the report names it."""
    broken = tmp_path / "broken-src"
    shutil.copytree(EXAMPLE, broken, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    source = broken / "needle_arraybackend" / "__init__.py"
    text = source.read_text()
    right = "self._binary(lambda x, y: x * y, a, b, out)"
    assert text.count(right) == 1
    source.write_text(text.replace(right, "self._binary(lambda x, y: x + y, a, b, out)"))
    site = tmp_path / "site"
    pip_install(broken, site)
    out = run_suite(site, tmp_path)
    report = out.stdout + out.stderr
    assert out.returncode == 1, report[-4000:]
    assert "test_ewise_binary[float32-ewise_mul]" in report
    mul = next(line for line in report.splitlines() if line.startswith("  ewise_mul "))
    assert "FAIL" in mul, mul
    # the kernel's own tests fail; tests of other kernels still pass
    assert "FAILED test_kernels.py::test_ewise_binary[float32-ewise_add]" not in report
    for other in ("reduce_max", "compact", "fill"):
        line = next(line for line in report.splitlines() if line.startswith(f"  {other} "))
        assert "FAIL" not in line, line
