"""Property-based tests of every NDArray view operation (reshape, permute,
broadcast_to, getitem with ints / slices / negative indices / steps > 1,
as_strided) and of compact and setitem (array and scalar), with random
shapes, strides, offsets, slices and steps, against NumPy, on every
available backend.

1000 generated cases per operation, each checked on every available bundled
backend (generating a case costs more than checking it, so the backends
share the cases); derandomized under CI=true (the "ci" hypothesis profile of
tests/conftest.py).  The strategies and
checks live in needle.testing.strategies, shared with the conformance suite.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from needle.testing.strategies import CASES, check_getitem, numpy_index

BACKENDS = ("numpy", "cpu", "cuda")  # as tests/conftest.py

EXAMPLES = 1000


@pytest.fixture(scope="module")
def devices():
    from needle import discovery
    import needle.backend_ndarray as nd
    found = []
    for name in BACKENDS:
        info = discovery.get_backend_info(name)
        if info is not None and info.available:
            found.append(nd.device(name))
    assert found, "no bundled backend is available"
    return found


@pytest.mark.parametrize("op", sorted(CASES))
def test_view_operation_matches_numpy(devices, op):
    strategy, check = CASES[op]
    seen = []

    @settings(max_examples=EXAMPLES)
    @given(case=strategy)
    def run(case):
        seen.append(case)
        for dev in devices:
            check(dev, case)

    run()
    # hypothesis may stop early only when the strategy's space is exhausted
    assert len(seen) >= EXAMPLES, f"{op}: only {len(seen)} cases generated"


def test_checks_can_fail(device):
    """The shared checks are live: a wrong NumPy expectation is caught."""
    case = ((4, 5), [], (slice(1, None, 2), -1))
    check_getitem(device, case)  # right
    with pytest.raises(AssertionError):
        import needle.testing.strategies as s
        original = s.numpy_index
        try:  # shift every int index by one: the comparison must notice
            s.numpy_index = lambda idx, shape: tuple(
                slice((i + 1) % d, (i + 1) % d + 1) if isinstance(i, int) else i for i, d in zip(idx, shape))
            check_getitem(device, case)
        finally:
            s.numpy_index = original


@settings(max_examples=200)
@given(dim=st.integers(0, 9), start=st.none() | st.integers(-12, 12), stop=st.none() | st.integers(-12, 12),
       step=st.none() | st.integers(1, 5))
def test_process_slice_matches_python(dim, start, stop, step):
    """process_slice gives explicit, non-negative bounds selecting what Python's slicing selects."""
    import needle.backend_ndarray as nd
    a = nd.array(np.zeros((2, dim)), device=nd.cpu_numpy())
    sl = a.process_slice(slice(start, stop, step), 1)  # course API: axis 1 (of size dim)
    assert sl.start >= 0 and sl.stop >= sl.start and sl.step >= 1
    assert list(range(dim))[sl] == list(range(dim))[slice(start, stop, step)]
    assert numpy_index((slice(start, stop, step),), (dim,)) == (slice(start, stop, step),)
