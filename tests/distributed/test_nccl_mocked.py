"""The NCCL path on fakes: no GPU and no nccl4py are needed (none was available
where this was written, so it has not run on a real GPU).  A fake ``nccl.core``
records what needle.distributed asks of it; fake device arrays expose the CUDA
Array Interface as needle's NDArray does on the cuda backend."""

import sys
import types

import numpy as np
import pytest

import needle as ndl
import needle.distributed as dist
from needle.distributed import _nccl
from needle.errors import BackendUnavailableError, DistributedConfigError


class FakeComm:
    def __init__(self, log, nranks, rank, uid):
        self.log = log
        log.append(("init", nranks, rank, uid))

    def allreduce(self, send, recv, op):
        self.log.append(("allreduce", send.__cuda_array_interface__["data"][0],
                         recv.__cuda_array_interface__["data"][0], op))

    def broadcast(self, send, recv, root):
        self.log.append(("broadcast", send.__cuda_array_interface__["data"][0], root))

    def synchronize(self):
        self.log.append(("comm.synchronize",))

    def destroy(self):
        self.log.append(("destroy",))


def fake_nccl_module(log):
    mod = types.SimpleNamespace(SUM="ncclSum", MAX="ncclMax", AVG="ncclAvg")
    mod.get_unique_id = lambda: log.append(("get_unique_id",)) or b"uid-from-rank-0"
    mod.Communicator = types.SimpleNamespace(init=lambda n, r, uid: FakeComm(log, n, r, uid))
    return mod


class FakeDevice:
    def __init__(self, log, name="cuda"):
        self.log, self.name = log, name

    def synchronize(self):
        self.log.append(("device.synchronize",))

    def __eq__(self, other):
        return isinstance(other, FakeDevice) and other.name == self.name


class FakeGpuArray:
    def __init__(self, device, ptr=0x7000, shape=(4,), compact=True):
        self.device, self.ptr, self.shape, self._compact = device, ptr, shape, compact

    def is_compact(self):
        return self._compact

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": "<f4", "data": (self.ptr, False), "version": 3}


class FakeGroup:
    def __init__(self, rank, size, log):
        self.rank, self.size, self.log = rank, size, log
        self.comm = types.SimpleNamespace(bcast=self.bcast)

    def bcast(self, obj, root):
        self.log.append(("mpi.bcast", obj, root))
        return b"uid-from-rank-0"  # what rank 0 sent


@pytest.mark.parametrize("rank", [0, 1])
def test_unique_id_is_made_by_rank0_and_sent_over_mpi(rank):
    log = []
    comm = _nccl.NcclComm(FakeGroup(rank, 2, log), fake_nccl_module(log), FakeDevice(log))
    made = [e for e in log if e[0] == "get_unique_id"]
    assert len(made) == (1 if rank == 0 else 0)
    assert ("mpi.bcast", b"uid-from-rank-0" if rank == 0 else None, 0) in log
    assert log[-1] == ("init", 2, rank, b"uid-from-rank-0")
    comm.close()
    assert log[-1] == ("destroy",)


@pytest.mark.parametrize("op,code", [("sum", "ncclSum"), ("max", "ncclMax"), ("avg", "ncclAvg")])
def test_all_reduce_is_in_place_on_the_device_buffer_between_synchronisations(op, code):
    log = []
    dev = FakeDevice(log)
    comm = _nccl.NcclComm(FakeGroup(0, 2, log), fake_nccl_module(log), dev)
    log.clear()
    arr = FakeGpuArray(dev, ptr=0xABC0)
    assert comm.handles(arr) and not comm.handles(FakeGpuArray(FakeDevice(log, "cuda:1")))
    comm.all_reduce(arr, op)
    assert log == [("device.synchronize",), ("allreduce", 0xABC0, 0xABC0, code), ("comm.synchronize",)]
    log.clear()
    comm.broadcast(arr, 1)
    assert log == [("device.synchronize",), ("broadcast", 0xABC0, 1), ("comm.synchronize",)]


def test_public_all_reduce_routes_device_arrays_to_nccl_and_host_arrays_to_mpi(monkeypatch):
    log = []
    dev = FakeDevice(log)
    group = types.SimpleNamespace(rank=0, size=2, backend="mpi")
    group.nccl = _nccl.NcclComm(FakeGroup(0, 2, log), fake_nccl_module(log), dev)
    monkeypatch.setattr(dist, "_group", group)
    monkeypatch.setattr(dist, "_array_of", lambda x, call: x)
    arr = FakeGpuArray(dev)
    assert dist.all_reduce(arr, "avg") is arr
    assert ("allreduce", 0x7000, 0x7000, "ncclAvg") in log
    assert dist.get_backend() == "mpi+nccl"
    # a host array on the same group goes the MPI way (here: the fake group has no MPI, so it fails there)
    monkeypatch.setattr(dist, "_array_of", lambda x, call: x.realize_cached_data())
    with pytest.raises(AttributeError):
        dist.all_reduce(ndl.Tensor([1.0]))


def test_nccl_required_without_nccl4py_or_gpu(monkeypatch):
    group = FakeGroup(0, 2, [])
    monkeypatch.setattr(_nccl, "_import_nccl", lambda: None)
    assert _nccl.maybe_create(group, required=False) is None
    with pytest.raises(BackendUnavailableError, match="nccl4py is not installed"):
        _nccl.maybe_create(group, required=True)
    monkeypatch.setattr(_nccl, "_import_nccl", lambda: fake_nccl_module([]))
    monkeypatch.setattr(_nccl, "_gpu_count", lambda: 0)
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        _nccl.maybe_create(group, required=True)


def test_two_ranks_on_one_gpu_are_refused(monkeypatch):
    monkeypatch.setattr(_nccl, "_import_nccl", lambda: fake_nccl_module([]))
    monkeypatch.setattr(_nccl, "_gpu_count", lambda: 1)
    monkeypatch.setenv("MPI_LOCALNRANKS", "2")
    with pytest.raises(DistributedConfigError, match="2 ranks on this machine but 1 GPU"):
        _nccl.maybe_create(FakeGroup(0, 2, []), required=False)


def test_ndarray_exposes_the_interface_only_for_gpu_memory():
    a = ndl.NDArray(np.ones(3, dtype=np.float32), device=ndl.cpu_numpy())
    assert not hasattr(a, "__cuda_array_interface__")

    class GpuHandle:  # what the cuda backend's buffers look like to NDArray
        size, dtype, device_index = 6, np.dtype("float32"), 0

        def ptr(self):
            return 0x5000

    b = ndl.NDArray.make((2, 3), device=ndl.cpu_numpy(), handle=GpuHandle())
    cai = b.__cuda_array_interface__
    assert cai == {"shape": (2, 3), "typestr": "<f4", "data": (0x5000, False), "strides": None, "version": 3,
                   "stream": None}
    assert not hasattr(b.permute((1, 0)), "__cuda_array_interface__")  # a strided view
