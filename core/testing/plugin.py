"""The pytest plugin behind ``pytest --pyargs needle.testing --needle-backend NAME``.

pytest loads this module for *every* run (entry point ``pytest11``), so it
imports nothing heavy at load and does nothing unless asked:

* ``--needle-backend NAME`` selects the backend the suite tests (the
  ``conformance_device`` fixture); without it the suite's tests skip.
* ``--needle-quick`` shrinks sizes and hypothesis example counts.
* ``--needle-report`` prints the per-kernel report even without
  ``--needle-backend`` (the repo's own parameterized run).

Tests tag the protocol kernels they exercise with
``@pytest.mark.needle_kernel("ewise_add", ...)``; the outcomes are gathered
per backend and per kernel and printed at the end by
:func:`pytest_terminal_summary`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_RESULTS = pytest.StashKey[dict]()

OUTCOMES = ("passed", "failed", "skipped")


def pytest_addoption(parser):
    group = parser.getgroup("needle", "needle backend conformance suite")
    group.addoption("--needle-backend", action="store", default=None, metavar="NAME",
                    help="run needle's conformance suite (pytest --pyargs needle.testing) "
                         "against the backend NAME, e.g. numpy, cpu, or your plugin's name")
    group.addoption("--needle-quick", action="store_true", default=False,
                    help="small sizes and few hypothesis examples (for slow, pure-Python backends)")
    group.addoption("--needle-report", action="store_true", default=False,
                    help="print the per-kernel conformance report for every backend tested")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needle_kernel(*names): protocol kernels (or 'override:NAME') a conformance "
                   "test exercises; used for needle's per-kernel report")
    config.stash[_RESULTS] = {}
    name = config.getoption("needle_backend", None)
    if name:
        _require_backend(name)


def _require_backend(name: str) -> None:
    """Refuse to start (exit code 4, a usage error) on an unknown or unusable backend."""
    from needle import discovery
    info = discovery.get_backend_info(name)
    if info is None:
        raise pytest.UsageError(
            f"--needle-backend {name}: no backend named {name!r} is installed; discovered: "
            f"{', '.join(i.name for i in discovery.backend_infos()) or 'none'} "
            f"(a backend registers an entry point in the group 'needle.backends')")
    if not info.available:
        raise pytest.UsageError(f"--needle-backend {name}: backend is unavailable: {info.reason}")


# ---------------------------------------------------------------------- #
# fixtures (the repo's tests/conftest.py overrides conformance_device with a
# parameterization over every available backend)
# ---------------------------------------------------------------------- #
@pytest.fixture(scope="session")
def conformance_device(request):
    """The device of the backend under test (``--needle-backend``)."""
    name = request.config.getoption("needle_backend")
    if not name:
        pytest.skip("needle conformance suite: pass --needle-backend NAME to choose the backend")
    import needle.backend_ndarray as nd
    return nd.device(name)


@pytest.fixture(scope="session")
def conformance_quick(request) -> bool:
    """True under ``--needle-quick``: tests use small sizes and few examples."""
    return bool(request.config.getoption("needle_quick"))


# ---------------------------------------------------------------------- #
# collection: import the suite's modules by their real names
# ---------------------------------------------------------------------- #
@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path, parent):
    # A plain Dir rather than a Package: a Package would import __init__.py by
    # a rootdir-relative name ("core.testing" in a source checkout), loading
    # a second copy of needle.
    if Path(path).resolve() == _HERE:
        return pytest.Dir.from_parent(parent, path=Path(path))
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    if Path(module_path).resolve().parent == _HERE:
        return _SuiteModule.from_parent(parent, path=Path(module_path))
    return None


class _SuiteModule(pytest.Module):
    """A suite module, imported as ``needle.testing.<stem>`` whatever the layout."""

    def _getobj(self):
        return importlib.import_module(f"{__package__}.{self.path.stem}")


# ---------------------------------------------------------------------- #
# the per-kernel report
# ---------------------------------------------------------------------- #
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    kernels = [name for mark in item.iter_markers("needle_kernel") for name in mark.args]
    # setup skips/errors and call outcomes count; a passing setup is not a result
    if kernels and (report.when == "call" or report.outcome != "passed"):
        device = getattr(item, "funcargs", {}).get("conformance_device")
        param = getattr(getattr(item, "callspec", None), "params", {}).get("conformance_device")
        backend = (getattr(device, "backend_name", None) or (param if isinstance(param, str) else None)
                   or item.config.getoption("needle_backend") or "?")
        table = item.config.stash[_RESULTS].setdefault(backend, {})
        for name in kernels:
            counts = table.setdefault(name, dict.fromkeys(OUTCOMES, 0))
            counts[report.outcome] += 1
    return report


def kernel_status(backend, kernel: str) -> str:
    """``"native"`` when ``backend`` overrides ``kernel``, else ``"falls back to composition"``."""
    from needle.protocol import Backend
    base = Backend.__dict__.get(kernel)
    if base is None:
        return "unknown"
    if getattr(base, "__isabstractmethod__", False):
        return "native"
    return "native" if getattr(type(backend), kernel, None) is not base else "falls back to composition"


def format_report(backend_name: str, results: dict) -> list[str]:
    """Lines of the report for one backend: every protocol kernel and op override."""
    from needle import discovery
    from needle.protocol import kernel_names
    info = discovery.get_backend_info(backend_name)
    be = info.backend if info is not None else None
    lines = []
    declared = sorted(dict(be.op_overrides() or {})) if be is not None else []
    overrides = sorted(set(declared) | {k.split(":", 1)[1] for k in results if k.startswith("override:")})
    width = max(len(k) for k in kernel_names() + ["op " + o for o in overrides]) + 2

    def verdict(counts):
        if counts is None:
            return "NOT TESTED"
        if counts["failed"]:
            return f"FAIL ({counts['failed']} failed, {counts['passed']} passed)"
        if counts["passed"]:
            return f"pass ({counts['passed']})"
        return "skipped"

    for kernel in kernel_names():
        how = kernel_status(be, kernel) if be is not None else "?"
        lines.append(f"  {kernel:<{width}} {how:<27} {verdict(results.get(kernel))}")
    for name in overrides:
        if name in declared:
            lines.append(f"  {'op ' + name:<{width}} {'op override':<27} "
                         f"{verdict(results.get('override:' + name))}")
        else:
            lines.append(f"  {'op ' + name:<{width}} {'no override: op composes kernels':<27}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(_RESULTS, {})
    if not results or not (config.getoption("needle_backend") or config.getoption("needle_report")):
        return
    for backend_name, table in results.items():
        terminalreporter.write_sep("=", f"needle conformance report: backend {backend_name!r}")
        for line in format_report(backend_name, table):
            bad = "FAIL" in line or "NOT TESTED" in line
            terminalreporter.write_line(line, red=bad, green=not bad and "pass" in line)
