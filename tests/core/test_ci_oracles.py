"""CI's oracles cannot vanish: with ``CI=true`` a missing PyTorch stops the run
(tests/conftest.py), and a test that would ``importorskip`` a reference fails.

Each case runs pytest in a subprocess on a tiny test file, with tests/conftest.py
loaded as a plugin and PyTorch hidden by a stand-in package that raises
ModuleNotFoundError -- the state of a machine where ``pip install torch`` failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _run(tmp_path, body, ci, hide_torch=True):
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True, exist_ok=True)
    (fake / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch' (hidden by the test)\", name='torch')\n")
    test = tmp_path / "test_probe.py"
    test.write_text(body)
    env = dict(os.environ)
    env.pop("PYTEST_XDIST_WORKER", None)
    env["CI"] = "true" if ci else "false"
    paths = [str(TESTS)] + ([str(fake)] if hide_torch else []) + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(test)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


PROBE = "import pytest\n\ndef test_uses_torch():\n    torch = pytest.importorskip('torch')\n    assert torch\n"


def test_ci_without_torch_stops_the_run(tmp_path):
    rc, out = _run(tmp_path, PROBE, ci=True)
    assert rc != 0, out
    assert "test references are missing" in out and "torch" in out, out


def test_without_ci_a_missing_torch_skips(tmp_path):
    rc, out = _run(tmp_path, PROBE, ci=False)
    assert rc == 0, out
    assert "1 skipped" in out, out


def test_ci_turns_an_importorskip_into_a_failure(tmp_path):
    body = "import pytest\n\ndef test_needs_a_lost_oracle():\n    pytest.importorskip('needle_no_such_reference')\n"
    rc, out = _run(tmp_path, body, ci=True, hide_torch=False)
    assert rc == 1, out
    assert "lost its oracle" in out and "1 failed" in out, out
    rc, out = _run(tmp_path, body, ci=False, hide_torch=False)
    assert rc == 0 and "1 skipped" in out, out


def test_ci_script_sets_ci_and_bootstrap_refuses_a_failed_torch_install():
    """The chain .ci/run -> scripts/test.sh -> pytest keeps CI=true, and the
    bootstrap does not paper over a failed PyTorch install in CI."""
    root = TESTS.parent
    assert "export CI=true" in (root / ".ci" / "run").read_text()
    boot = (root / "scripts" / "bootstrap.sh").read_text()
    torch_lines = [line for line in boot.splitlines() if "pip install -q torch" in line]
    assert torch_lines and all("ci_fail" in line for line in torch_lines), torch_lines
