"""Fixtures for the CPU-backend tests: the backend object and NumPy <-> buffer helpers."""

import numpy as np
import pytest

import needle_cpu

DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="session")
def be():
    backend = needle_cpu.CpuBackend()
    ok, reason = backend.is_available()
    assert ok, f"the compiled CPU backend is not available: {reason}"
    return backend


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


def put(be, arr, dtype=None):
    """A backend buffer holding ``arr`` flattened (C order)."""
    arr = np.ascontiguousarray(arr, dtype=dtype or arr.dtype).ravel()
    buf = be.Array(arr.size, arr.dtype)
    be.from_numpy(arr, buf)
    return buf


def get(be, buf, shape=None):
    """The whole buffer (or its first prod(shape) elements) as a NumPy array."""
    shape = (buf.size,) if shape is None else tuple(shape)
    strides = tuple(int(np.prod(shape[k + 1:])) for k in range(len(shape)))
    return be.to_numpy(buf, shape, strides, 0)


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-12)
