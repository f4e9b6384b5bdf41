"""CI's slice of the fuzzing campaign: a few cases of every target on every
backend (the >= 100,000-case runs are ``python -m needle.testing.fuzz``)."""

import io
import subprocess
import sys

import pytest

from needle.testing import fuzz


def test_every_target_passes_a_small_campaign(device):
    result = fuzz.run(60, device=device.name, seed=7, out=io.StringIO())
    assert result["failures"] == [], result["failures"][:3]
    assert set(result["per_target"]) == set(fuzz.TARGETS)


def test_fuzz_detects_a_wrong_kernel(monkeypatch):
    """The comparison can fail: break one kernel and the campaign reports it."""
    import needle.backend_ndarray as nd
    be = nd.cpu_numpy().require()
    monkeypatch.setattr(type(be), "ewise_add", lambda self, a, b, out: be.ewise_mul(a, b, out))
    result = fuzz.run(30, device="cpu_numpy", only=["ewise_add"], out=io.StringIO())
    assert result["failures"] and result["failures"][0]["error"] == "Mismatch"


def test_command_line_runs_and_exits_zero():
    out = subprocess.run([sys.executable, "-m", "needle.testing.fuzz", "--cases", "3", "--device", "cpu_numpy",
                          "--only", "getitem,matmul"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "6 cases over 2 targets, 0 failures" in out.stdout


def test_unknown_target_is_refused():
    with pytest.raises(KeyError, match="fuzz: unknown target"):
        fuzz.run(1, device="cpu_numpy", only=["nope"])
