"""benchmarks/compare.py calls each probe's report() with arguments that fit
its signature (a mismatch once surfaced only at the end of a 10-minute run).
The probes' own work is replaced by a recorder: nothing is timed here."""

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


@pytest.fixture
def compare(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # what `python -m benchmarks.compare` from the root has
    return importlib.import_module("benchmarks.compare")


@pytest.mark.parametrize("path", sorted(p for p in BENCH.glob("*.py") if p.name != "__init__.py"),
                         ids=lambda p: p.name)
def test_every_benchmark_imports_as_a_package_module(path, monkeypatch):
    """From the repository root, with no sys.path edits of their own (the
    script-mode shim of compare/overhead only runs when __package__ is empty)."""
    monkeypatch.syspath_prepend(str(ROOT))
    text = path.read_text()
    assert "sys.path.insert" not in text and "sys.path.append" not in text
    if path.stem == "cpu_kernels_probe":
        pytest.importorskip("needle_cpu")
    importlib.import_module(f"benchmarks.{path.stem}")


def test_nothing_benchmark_only_ships_in_a_plugin_or_the_tests():
    assert not list((ROOT / "plugins").rglob("bench*.py"))
    assert not list((ROOT / "tests").rglob("*probe*.py"))


@pytest.mark.parametrize("script", ["compare.py", "overhead.py"])
def test_quoted_script_commands_still_run(script):
    """README and the issues quote `python benchmarks/compare.py`: it works as a script too."""
    out = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout


@pytest.mark.parametrize("section,module", [("overhead", "overhead"), ("conv", "conv_probe"),
                                            ("mlp", "training_probe"), ("models", "models_probe"),
                                            ("memory", "memory_probe"), ("fused", "fused_probe")])
def test_each_section_calls_its_probe_report_with_fitting_arguments(compare, monkeypatch, section,
                                                                    module, capsys):
    probe = importlib.import_module(f"benchmarks.{module}")
    signature = inspect.signature(probe.report)
    calls = []

    def recorder(*args, **kwargs):
        signature.bind(*args, **kwargs)  # TypeError if compare.py passes what report() lacks
        calls.append(kwargs)
    monkeypatch.setattr(probe, "report", recorder)
    assert compare.main([section, "--quick"]) == 0
    assert len(calls) == 1


def test_models_report_prints_each_probe(monkeypatch, capsys, compare):
    from benchmarks import models_probe
    monkeypatch.setattr(models_probe, "PROBES", {
        "tiny": lambda device=None, repeat=5: {"needle": 0.002, "torch": 0.001},
        "solo": lambda device=None, repeat=5: {"needle": 0.003, "torch": None}})
    models_probe.report(quick=True, device="numpy")
    out = capsys.readouterr().out
    assert "tiny" in out and "ratio  2.00x" in out
    assert "solo" in out and "needle       3.0 ms" in out


def test_distributed_section_calls_its_probe(compare, monkeypatch):
    pytest.importorskip("mpi4py")
    from benchmarks import distributed_probe
    calls = []
    monkeypatch.setattr(distributed_probe, "report", lambda quick=False: calls.append(quick))
    assert compare.main(["distributed", "--quick"]) == 0
    assert calls == [True]


def test_fused_probe_says_when_a_backend_offers_no_fused_overrides(capsys):
    from benchmarks import fused_probe
    assert fused_probe.report(repeat=1, device="cpu_numpy") == {}
    assert "offers no fused" in capsys.readouterr().out
