"""``needle bench`` and ``needle check-backend`` as an installed wheel runs
them: no benchmarks/ folder beside the package, pytest possibly missing."""

from __future__ import annotations

import importlib.util

from needle import cli


def test_check_backend_without_pytest_names_the_extra(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("pytest", "hypothesis") else real(name, *a))
    assert cli.main(["check-backend", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "needs pytest and hypothesis" in err and "pip install 'needle-dl[test]'" in err


def _as_if_installed(monkeypatch):
    """Hide the checkout's benchmarks/compare.py, as in site-packages."""
    real = cli.os.path.exists
    monkeypatch.setattr(cli.os.path, "exists", lambda p: False if str(p).endswith("compare.py") else real(p))


def test_bench_from_a_wheel_runs_the_shipped_kernel_report(monkeypatch, capfd):
    _as_if_installed(monkeypatch)
    rc = cli.main(["bench", "kernels", "--quick", "--repeat", "1", "--device", "cpu_numpy", "--filter", "add_scalar"])
    out = capfd.readouterr().out
    assert rc == 0
    assert "== kernels" in out and "add_scalar 2^24" in out and "cpu_numpy x NumPy" in out


def test_bench_from_a_wheel_explains_sections_it_lacks(monkeypatch, capfd):
    _as_if_installed(monkeypatch)
    assert cli.main(["bench", "models"]) == 2
    assert "need a source checkout" in capfd.readouterr().err
