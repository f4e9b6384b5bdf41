"""Fixtures shared by every test folder.

* ``device``: parameterized over every bundled backend's device (numpy, cpu,
  cuda); a backend that is not usable here skips with the exact reason
  discovery gives (not built, no GPU, ...).
* ``conformance_device``: the same parameterization for the conformance suite
  of :mod:`needle.testing` (whose own plugin fixture takes ``--needle-backend``).
* hypothesis profiles: ``ci`` (derandomized, no deadline) is loaded when
  ``CI=true``; ``dev`` otherwise (random, no deadline: timings on a shared
  2-core machine are noise).  ``HYPOTHESIS_PROFILE`` overrides.
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
