"""cuda:N devices get their own backend object (buffers belong to one GPU)."""

import pytest

import needle.backend_ndarray as nd
from needle import discovery
from needle_cuda import _driver
from needle_cuda.backend import CudaBackend


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(_driver, "_probe", (True, "", 2))
    yield
    discovery.reset()


def test_for_device_gives_one_backend_per_gpu(two_gpus):
    be = CudaBackend()
    assert be.device_names() == ["cuda", "cuda:1"]
    assert be.for_device("cuda") is be
    second = be.for_device("cuda:1")
    assert second.device_index == 1 and second is be.for_device("cuda:1")
    with pytest.raises(ValueError, match="no device 'cuda:2'"):
        be.for_device("cuda:2")


def test_devices_resolve_to_their_gpu(two_gpus):
    discovery.reset()
    assert nd.cuda().mod.device_index == 0
    assert nd.cuda(1).mod.device_index == 1
    assert nd.device("cuda:1") == nd.cuda(1)
