"""The ``needle`` command, run as users run it: the venv's console script
(or ``python -m needle.cli`` when the script is not installed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import needle_numpy

import needle

SCRIPT = Path(sys.executable).with_name("needle")


def run(*args, env=None, timeout=300):
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "needle.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), cwd=os.path.expanduser("~"))


def test_backends_lists_numpy_available_with_version_and_device():
    out = run("backends")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("numpy "))
    assert re.search(rf"^numpy\s+{re.escape(needle_numpy.__version__)}\s+available\s+cpu_numpy\(\)", row), row
    assert "default device:" in out.stdout
    for line in out.stdout.splitlines():  # every unavailable backend says why
        if " unavailable " in line:
            assert line.split("unavailable", 1)[1].strip(" -"), line


def test_backends_shows_disabled_plugins_with_reason():
    out = run("backends", env={"NEEDLE_DISABLE_PLUGINS": "cuda"})
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("cuda "))
    assert "unavailable" in row and "disabled by NEEDLE_DISABLE_PLUGINS" in row


def test_config_prints_versions_and_backends():
    out = run("config")
    assert out.returncode == 0, out.stderr
    assert f"needle {needle.__version__} (array protocol" in out.stdout
    assert "numpy " in out.stdout and "pluggy " in out.stdout
    assert re.search(r"^numpy\s+\S+\s+available", out.stdout, re.M)


def test_unknown_command_exits_2():
    out = run("frobnicate")
    assert out.returncode == 2
    assert "unknown command 'frobnicate'" in out.stderr


def test_help_and_version():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("backends", "config", "check-backend"):
        assert cmd in out.stdout
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"needle {needle.__version__}"


def test_check_backend_rejects_an_unknown_backend():
    out = run("check-backend", "nope")
    assert out.returncode == 4, out.stdout + out.stderr  # pytest's usage-error code
    assert "no backend named 'nope'" in out.stdout + out.stderr


def test_check_backend_runs_the_suite_and_passes_pytest_options():
    out = run("check-backend", "numpy", "--needle-quick", "-k", "matmul or reduce")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    assert "needle conformance report: backend 'numpy'" in out.stdout
    assert re.search(r"^  matmul\s+native\s+pass", out.stdout, re.M)
    assert re.search(r"^\d+ passed.*deselected", out.stdout, re.M)
