"""benchmarks/compare.py calls each probe's report() with arguments that fit
its signature (a mismatch once surfaced only at the end of a 10-minute run).
The probes' own work is replaced by a recorder: nothing is timed here."""

import importlib
import inspect
import os

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


@pytest.fixture
def compare(monkeypatch):
    monkeypatch.syspath_prepend(os.path.abspath(BENCH))
    monkeypatch.syspath_prepend(os.path.abspath(os.path.join(BENCH, "..")))
    return importlib.import_module("compare")


@pytest.mark.parametrize("section,module", [("overhead", "overhead"), ("conv", "conv_probe"),
                                            ("mlp", "training_probe"), ("models", "models_probe"),
                                            ("memory", "memory_probe")])
def test_each_section_calls_its_probe_report_with_fitting_arguments(compare, monkeypatch, section,
                                                                    module, capsys):
    probe = importlib.import_module(module)
    signature = inspect.signature(probe.report)
    calls = []

    def recorder(*args, **kwargs):
        signature.bind(*args, **kwargs)  # TypeError if compare.py passes what report() lacks
        calls.append(kwargs)
    monkeypatch.setattr(probe, "report", recorder)
    assert compare.main([section, "--quick"]) == 0
    assert len(calls) == 1


def test_models_report_prints_each_probe(monkeypatch, capsys, compare):
    import models_probe
    monkeypatch.setattr(models_probe, "PROBES", {
        "tiny": lambda device=None, repeat=5: {"needle": 0.002, "torch": 0.001},
        "solo": lambda device=None, repeat=5: {"needle": 0.003, "torch": None}})
    models_probe.report(quick=True, device="numpy")
    out = capsys.readouterr().out
    assert "tiny" in out and "ratio  2.00x" in out
    assert "solo" in out and "needle       3.0 ms" in out
