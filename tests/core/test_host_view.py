"""NDArray.host_view(): zero-copy NumPy views of host-memory buffers (MPI in
needle.distributed reduces arrays in place through it)."""

import gc

import numpy as np
import pytest

import needle as ndl

HOST_DEVICES = [d for d in (ndl.cpu(), ndl.cpu_numpy()) if d.enabled()]


@pytest.mark.parametrize("device", HOST_DEVICES, ids=lambda d: d.name)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_view_shares_the_memory(device, dtype):
    a = ndl.NDArray(np.arange(6.0).reshape(2, 3), device=device, dtype=dtype)
    v = a.host_view()
    assert v.shape == (2, 3) and v.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(v, np.arange(6.0).reshape(2, 3))
    v[1, 2] = 42.0
    assert a.numpy()[1, 2] == 42.0
    a[0, 0] = -1.0
    assert v[0, 0] == -1.0


@pytest.mark.parametrize("device", HOST_DEVICES, ids=lambda d: d.name)
def test_view_keeps_the_buffer_alive(device):
    a = ndl.NDArray(np.full(1000, 7.0), device=device)
    v = a.host_view()
    del a
    gc.collect()
    ndl.NDArray(np.zeros(1000), device=device)  # would reuse a freed block
    assert (v == 7.0).all()


@pytest.mark.parametrize("device", HOST_DEVICES, ids=lambda d: d.name)
def test_no_view_of_strided_arrays(device):
    a = ndl.NDArray(np.arange(6.0).reshape(2, 3), device=device)
    assert a.permute((1, 0)).host_view() is None
    assert a[:, 1:].host_view() is None


def test_backends_without_host_memory_give_none():
    class Handle:
        size, dtype = 4, np.dtype("float32")

        def ptr(self):
            return 0

    a = ndl.NDArray.make((4,), device=ndl.cpu_numpy(), handle=Handle())
    object.__setattr__(a, "_be", object())   # a backend that does not declare host_memory
    assert a.host_view() is None
