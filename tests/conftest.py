"""Fixtures shared by every test folder.

* ``device``: parameterized over every bundled backend's device (numpy, cpu,
  cuda); a backend that is not usable here skips with the exact reason
  discovery gives (not built, no GPU, ...).
* ``conformance_device``: the same parameterization for the conformance suite
  of :mod:`needle.testing` (whose own plugin fixture takes ``--needle-backend``).
* hypothesis profiles: ``ci`` (derandomized, no deadline) is loaded when
  ``CI=true``; ``dev`` otherwise (random, no deadline: timings on a shared
  2-core machine are noise).  ``HYPOTHESIS_PROFILE`` overrides.
* oracles never vanish in CI: under ``CI=true`` a missing reference
  (PyTorch, hypothesis, NVRTC -- ``REFERENCES``) stops the run at start, and
  any test that skips because an import failed (``pytest.importorskip``)
  fails instead.  Locally such tests skip with the reason.
"""

from __future__ import annotations

import os

import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; only the property tests need it
    settings = None

if settings is not None:
    _quiet = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                              suppress_health_check=_quiet)
    settings.register_profile("dev", deadline=None, suppress_health_check=_quiet)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                          or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev"))

#: modules the tests use as oracles or drivers: CI must have every one
REFERENCES = {
    "torch": "PyTorch, the reference for ops, nn, optim and models",
    "hypothesis": "the property-based tests",
    "cuda.bindings": "NVRTC, the compile test of the CUDA kernels (needs no GPU)",
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def pytest_sessionstart(session):
    if not _in_ci():
        return
    import importlib
    missing = []
    for name, why in REFERENCES.items():
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 -- a broken install is as missing as an absent one
            missing.append(f"{name} ({why}): {type(exc).__name__}: {exc}")
    if missing:
        raise pytest.UsageError("CI=true: test references are missing, so their oracles would skip "
                                "silently; install them (scripts/bootstrap.sh does):\n  " + "\n  ".join(missing))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # importorskip's reason starts "could not import": in CI that is a lost oracle, not a skip
    if _in_ci() and report.skipped and call.excinfo is not None:
        reason = str(call.excinfo.value)
        if reason.startswith("could not import"):
            report.outcome = "failed"
            report.longrepr = f"CI=true: {item.nodeid} lost its oracle: {reason}"
    return report


#: the bundled backends, in the order tests show them
BACKENDS = ("numpy", "cpu", "cuda")


def backend_device(name: str):
    """The default device of backend ``name``, or skip with the reason it is unusable."""
    from needle import discovery
    import needle.backend_ndarray as nd
    info = discovery.get_backend_info(name)
    if info is None:
        pytest.skip(f"backend {name!r} is not installed (no entry point in 'needle.backends')")
    if not info.available:
        pytest.skip(f"backend {name!r} unavailable: {info.reason}")
    return nd.device(name)


@pytest.fixture(scope="session", params=BACKENDS)
def device(request):
    """Each available bundled backend's device: cpu_numpy(), cpu(), cuda()."""
    return backend_device(request.param)


@pytest.fixture(scope="session", params=BACKENDS)
def conformance_device(request):
    """The backend under test in needle.testing's suite, over every bundled backend."""
    return backend_device(request.param)
