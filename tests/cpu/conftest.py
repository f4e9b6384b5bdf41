"""Fixtures for the CPU-backend tests: the backend object and the dtypes
(NumPy <-> buffer helpers live in cpu_buffers.py: test modules import them,
and a module named ``conftest`` is ambiguous when several folders have one)."""

import numpy as np
import pytest

import needle_cpu

from cpu_buffers import DTYPES


@pytest.fixture(scope="session")
def be():
    backend = needle_cpu.CpuBackend()
    ok, reason = backend.is_available()
    assert ok, f"the compiled CPU backend is not available: {reason}"
    return backend


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)
