"""``python benchmarks/compare.py jit``: the section reaches benchmarks/jit_probe.py,
and the probe, run once at toy sizes, prints every row.

(Not named test_jit_probe.py: test_compare_wiring keeps ``*probe*.py`` files
out of tests/, so that no benchmark module hides among the tests.)"""

import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def compare(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # what `python -m benchmarks.compare` from the root has
    return importlib.import_module("benchmarks.compare")


def test_jit_section_calls_the_probe_report_with_fitting_arguments(compare, monkeypatch):
    probe = importlib.import_module("benchmarks.jit_probe")
    signature = inspect.signature(probe.report)
    calls = []

    def recorder(*args, **kwargs):
        signature.bind(*args, **kwargs)  # TypeError if compare.py passes what report() lacks
        calls.append(kwargs)
    monkeypatch.setattr(probe, "report", recorder)
    assert compare.main(["jit", "--quick", "--device", "numpy"]) == 0
    assert calls == [{"quick": True, "device": "numpy"}]


@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_probe_prints_every_row_at_tiny_sizes(compare, device, capsys):
    import needle as ndl
    from benchmarks import jit_probe

    keep = ndl.autograd.KEEP_INTERIOR_GRADS
    result = jit_probe.report(quick=True, device=device, tiny=True)
    assert ndl.autograd.KEEP_INTERIOR_GRADS == keep  # restored
    out = capsys.readouterr().out
    assert "== jit: needle.jit training steps on" in out
    # (a) the tiny MLP: eager, both replay loops, PyTorch when installed, and the ratios
    assert "needle eager" in out and "needle jit native=False" in out
    assert "ratio jit / needle eager" in out
    assert result["mlp"]["jit"] > 0 and result["mlp"]["jit_python"] > 0
    assert "kernel calls" in out and "arena" in out and "replay" in out
    if jit_probe._torch() is not None:
        assert "pytorch eager, " in out and "jit / pytorch eager " in out and "(target <= 0.5x)" in out
    # (b), (c): a ratio, or the reason the step could not be captured
    for row in ("lstm", "resnet9", "transformer"):
        line = next(line for line in out.splitlines() if line.startswith(row))
        assert "needle eager" in line
        assert ("ratio jit / eager" in line) != ("jit: not captured --" in line), line
        assert (result[row]["error"] is None) == ("ratio jit / eager" in line)
    lstm = next(line for line in out.splitlines() if line.startswith("lstm"))
    assert "(target <= 0.8x)" in lstm or "not captured" in lstm
