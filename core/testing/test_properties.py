"""Property-based tests (hypothesis) of NDArray's view logic, compact and
setitem on the backend under test, against NumPy.

Example counts are modest here (a plugin author's run); needle's own
tests/core/test_ndarray_properties.py drives the same checks 1000 times each.
"""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the property tests need hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from .strategies import CASES  # noqa: E402

EXAMPLES, QUICK_EXAMPLES = 60, 15


def _make_test(name):
    strategy, check = CASES[name]

    @pytest.mark.needle_kernel("compact", "ewise_setitem", "scalar_setitem", "to_numpy")
    def test(conformance_device, conformance_quick):
        @settings(max_examples=QUICK_EXAMPLES if conformance_quick else EXAMPLES, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(case=strategy)
        def run(case):
            check(conformance_device, case)
        run()

    test.__name__ = f"test_property_{name}"
    test.__doc__ = f"{name} agrees with NumPy on random shapes, strides, offsets and slices."
    return test


for _name in CASES:
    globals()[f"test_property_{_name}"] = _make_test(_name)
del _name
