"""NCCL for arrays on CUDA devices, through NVIDIA's nccl4py.

MPI bootstraps it: rank 0 makes the NCCL unique id and broadcasts it over
MPI, then every rank creates its communicator on its own GPU (local rank
modulo the GPUs of its machine; NCCL refuses two ranks on one GPU, so a
machine needs at least as many GPUs as ranks).  Buffers go to NCCL through
the CUDA Array Interface of needle's NDArray.  The device's queued kernels
are synchronised before a collective and the collective's stream after it,
so values are ordered correctly without needle exposing its stream.

Not run on a GPU in this repository's CI: tests/distributed/test_nccl_mocked.py
checks this logic against a fake ``nccl.core``.
"""

from __future__ import annotations

import os

from needle.errors import BackendUnavailableError, DistributedConfigError

_LOCAL_RANK_ENV = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_LOCAL_RANK")
_LOCAL_SIZE_ENV = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_LOCAL_SIZE")


def _import_nccl():
    try:
        import nccl.core as nccl
    except ImportError:
        return None
    return nccl


def _env_int(names, default):
    for name in names:
        if name in os.environ:
            return int(os.environ[name])
    return default


def _gpu_count() -> int:
    import needle as ndl
    n = 0
    while n < 64 and ndl.cuda(n).enabled():
        n += 1
    return n


def maybe_create(group, required: bool):
    """An NcclComm for ``group``, or None (auto) / BackendUnavailableError
    (``backend="nccl"``) when nccl4py or a GPU is missing."""
    nccl = _import_nccl()
    gpus = _gpu_count() if nccl is not None else 0
    if nccl is None or gpus == 0:
        if required:
            why = "nccl4py is not installed" if nccl is None else "no CUDA device is available"
            raise BackendUnavailableError(
                f"init_process_group(backend='nccl'): {why}; install pip install 'needle-dl[nccl]' on a "
                f"machine with NVIDIA GPUs, or use backend='mpi' (host staging)")
        return None
    local_rank = _env_int(_LOCAL_RANK_ENV, group.rank)
    local_size = _env_int(_LOCAL_SIZE_ENV, group.size)
    if local_size > gpus:
        raise DistributedConfigError(
            f"init_process_group: {local_size} ranks on this machine but {gpus} GPU(s); NCCL needs one GPU "
            f"per rank -- start at most {gpus} rank(s) per machine, or use backend='mpi'")
    import needle as ndl
    return NcclComm(group, nccl, ndl.cuda(local_rank % gpus))


class NcclComm:
    """One NCCL communicator over all ranks of ``group``, on ``device`` (a cuda device)."""

    def __init__(self, group, nccl, device):
        self.nccl = nccl
        self.size = group.size
        self.device = device
        uid = nccl.get_unique_id() if group.rank == 0 else None
        uid = group.comm.bcast(uid, root=0)  # the id travels over MPI
        self.comm = nccl.Communicator.init(group.size, group.rank, uid)
        self._ops = {"sum": nccl.SUM, "max": nccl.MAX, "avg": nccl.AVG}

    def handles(self, nd) -> bool:
        """True for an array on this communicator's GPU."""
        return nd.device == self.device

    def _buffer(self, nd, call):
        if not nd.is_compact():
            nd = nd.compact()
        if not hasattr(nd, "__cuda_array_interface__"):
            raise BackendUnavailableError(f"needle.distributed.{call}: the array on {nd.device} exposes no "
                                          f"CUDA Array Interface; NCCL cannot read it")
        return nd

    def all_reduce(self, nd, op: str):
        buf = self._buffer(nd, "all_reduce")
        self.device.synchronize()   # kernels that wrote buf, queued on needle's stream
        self.comm.allreduce(buf, buf, self._ops[op])
        self.comm.synchronize()
        if buf is not nd:
            nd[tuple(slice(None) for _ in nd.shape)] = buf
        return nd

    def broadcast(self, nd, src: int):
        buf = self._buffer(nd, "broadcast")
        self.device.synchronize()
        self.comm.broadcast(buf, buf, src)
        self.comm.synchronize()
        if buf is not nd:
            nd[tuple(slice(None) for _ in nd.shape)] = buf
        return nd

    def close(self):
        self.comm.destroy()
