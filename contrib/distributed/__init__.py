"""needle.distributed: data-parallel training across processes and machines.

Collectives run on existing engines: MPI through mpi4py (CPU tensors, and the
bootstrap of every job) and NCCL through nccl4py (tensors on CUDA devices).
The API is PyTorch-shaped::

    import needle.distributed as dist
    dist.init_process_group()            # backend="auto": nccl for cuda, else mpi
    rank, world = dist.get_rank(), dist.get_world_size()
    dist.all_reduce(t, op="avg")          # in place; also returned
    model = dist.DistributedDataParallel(model)

Launch with ``needle launch -n 2 script.py`` (a wrapper of the MPI library's
``mpiexec``).  Not launched under MPI, ``init_process_group`` makes a world
of one process and every collective is the identity, so the same script runs
alone.  See docs/distributed.md.

This package lives in contrib (reached lazily as ``needle.distributed``, like
``needle.nn``): core imports only the standard library, numpy and pluggy;
mpi4py and nccl4py are imported inside this package, on first use.
"""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np

from needle.autograd import Tensor
from needle.backend_ndarray import NDArray
from needle.errors import DistributedError, ShapeError, UnsupportedDTypeError

__all__ = ["init_process_group", "destroy_process_group", "is_initialized", "get_rank", "get_world_size",
           "get_backend", "barrier", "all_reduce", "broadcast", "all_gather", "launched_under_mpi",
           "DistributedDataParallel", "DistributedSampler", "DEFAULT_TIMEOUT_S"]

#: seconds a collective may wait for the other ranks (PyTorch's default is 30 min)
DEFAULT_TIMEOUT_S = 600.0
_OPS = ("sum", "avg", "max")
# environment variables set by an MPI launcher in every rank it starts
_LAUNCHER_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")

_group = None          # the process group once init_process_group ran
_prev_excepthook = None


class _SingleGroup:
    """A world of one process: every collective is the identity."""

    backend = "single"
    rank, size = 0, 1

    def close(self):
        pass


def launched_under_mpi() -> bool:
    """True when an MPI launcher (mpiexec / needle launch) started this process."""
    return any(name in os.environ for name in _LAUNCHER_ENV)


# ---------------------------------------------------------------------- #
# lifetime
# ---------------------------------------------------------------------- #
def init_process_group(backend: str = "auto", timeout: float | None = None, abort_on_exception: bool = True):
    """Join the job's process group.

    ``backend``: ``"auto"`` (MPI when launched under an MPI launcher, plus
    NCCL for CUDA tensors when nccl4py and a GPU are present; a world of one
    otherwise), ``"mpi"`` (always mpi4py, even for one process) or ``"nccl"``
    (MPI for the bootstrap and host tensors, NCCL required for CUDA tensors).
    ``timeout``: seconds a collective waits for the others before raising
    :class:`needle.errors.DistributedTimeoutError` naming the absent ranks
    (default ``NEEDLE_DIST_TIMEOUT`` or 600).  With ``abort_on_exception`` an
    uncaught exception on any rank prints its traceback and ends every rank of
    the job (``MPI_Abort``) instead of leaving the others waiting.
    """
    global _group
    if backend not in ("auto", "mpi", "nccl"):
        raise DistributedError(f"init_process_group: unknown backend {backend!r}; "
                               f"use 'auto', 'mpi' or 'nccl'")
    if _group is not None:
        raise DistributedError(f"init_process_group: already initialised (backend {_group.backend}, "
                               f"rank {_group.rank} of {_group.size}); call destroy_process_group() first")
    if timeout is None:
        timeout = float(os.environ.get("NEEDLE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    if not timeout > 0:
        raise DistributedError(f"init_process_group: timeout must be positive seconds, got {timeout!r}")
    if backend == "auto" and not launched_under_mpi():
        _group = _SingleGroup()
        return
    from ._mpi import MpiGroup
    group = MpiGroup(timeout)
    group.nccl = None
    if backend in ("auto", "nccl"):
        from . import _nccl
        group.nccl = _nccl.maybe_create(group, required=backend == "nccl")
    _group = group
    if group.size > 1 and abort_on_exception:
        _install_abort_hook(group)


def destroy_process_group() -> None:
    """Leave the group (collectives then raise again until the next init)."""
    global _group
    if _group is None:
        return
    global _last_view
    group, _group, _last_view = _group, None, None
    _remove_abort_hook()
    nccl = getattr(group, "nccl", None)
    if nccl is not None:
        nccl.close()
    group.close()


def is_initialized() -> bool:
    return _group is not None


def _require(call: str):
    if _group is None:
        raise DistributedError(f"needle.distributed.{call}: the process group is not initialised; "
                               f"call needle.distributed.init_process_group() first")
    return _group


def get_rank() -> int:
    return _require("get_rank").rank


def get_world_size() -> int:
    return _require("get_world_size").size


def get_backend() -> str:
    """``single``, ``mpi`` or ``mpi+nccl``."""
    group = _require("get_backend")
    return group.backend + ("+nccl" if getattr(group, "nccl", None) is not None else "")


def _install_abort_hook(group) -> None:
    """An uncaught exception on this rank ends the whole job with its message
    (mpi4py.run's behaviour), so the other ranks never wait forever."""
    global _prev_excepthook
    _prev_excepthook = sys.excepthook

    def hook(kind, value, tb):
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"needle.distributed: uncaught exception on rank {group.rank} of {group.size}; "
                         f"aborting all ranks\n{text}")
        group.abort(1)

    sys.excepthook = hook


def _remove_abort_hook() -> None:
    global _prev_excepthook
    if _prev_excepthook is not None:
        sys.excepthook, _prev_excepthook = _prev_excepthook, None


# ---------------------------------------------------------------------- #
# host memory: a compact array of a host-memory backend (cpu, numpy) is
# reduced in place through NDArray.host_view(); any other array is staged:
# copied to a contiguous NumPy buffer and back to its device
# ---------------------------------------------------------------------- #
def _array_of(x, call: str) -> NDArray:
    if isinstance(x, Tensor):
        return x.realize_cached_data()
    if isinstance(x, NDArray):
        return x
    raise TypeError(f"needle.distributed.{call}: expected a needle Tensor or NDArray, got {type(x).__name__}")


def _host(nd: NDArray) -> np.ndarray:
    return np.ascontiguousarray(nd.numpy())


def _write_back(x, host: np.ndarray):
    """Store ``host`` into ``x`` in place (a Tensor's array is replaced, an
    NDArray is overwritten) and return ``x``."""
    if isinstance(x, Tensor):
        nd = x.realize_cached_data()
        x.cached_data = NDArray(host, device=nd.device, dtype=nd.dtype)
    else:
        x[tuple(slice(None) for _ in x.shape)] = host.reshape(x.shape)
    return x


def _like(x, host: np.ndarray):
    """A new object of ``x``'s kind (Tensor / NDArray) holding ``host`` on x's device."""
    nd = _array_of(x, "all_gather")
    out = NDArray(host, device=nd.device, dtype=nd.dtype)
    return Tensor(out, requires_grad=False) if isinstance(x, Tensor) else out


_DTYPE_CODES = {np.dtype("float32"): 1, np.dtype("float64"): 2}
_CALL_CODES = {"all_reduce": 1, "broadcast": 2, "all_gather": 3}
_OP_CODES = {op: k for k, op in enumerate(_OPS)}
_MAX_NDIM = 8
_ROW = 4 + _MAX_NDIM      # call, op or src, dtype, ndim, the shape padded with -1


# A collective's descriptor row, made once per (call, arg, shape, dtype) and
# reused: right after a large transfer the caches are cold and every NumPy
# call of the check costs several times its usual microseconds (at 1 MB the
# check's Python work was a third of needle's overhead).
_ROWS: dict = {}


def _describe(call: str, shape: tuple, dtype, arg: int = 0) -> np.ndarray:
    """The descriptor row of a collective (read-only); unsupported arrays
    raise here, before any rank starts a transfer."""
    key = (call, arg, shape, dtype)
    row = _ROWS.get(key)
    if row is not None:
        return row
    code = _DTYPE_CODES.get(np.dtype(dtype))
    if code is None:
        raise UnsupportedDTypeError(f"needle.distributed.{call}: dtype {dtype} is not supported; "
                                    f"use float32 or float64")
    if len(shape) > _MAX_NDIM:
        raise ShapeError(f"needle.distributed.{call}: at most {_MAX_NDIM} dimensions, got shape {shape}")
    row = np.full(_ROW, -1, dtype=np.int64)
    row[:4] = _CALL_CODES[call], arg, code, len(shape)
    row[4:4 + len(shape)] = shape
    row.flags.writeable = False
    if len(_ROWS) < 4096:  # bounded: a program with ever new shapes keeps working
        _ROWS[key] = row
    return row


def _check_same(group, call: str, nd: NDArray, arg: int = 0) -> None:
    """Every rank passes the same shape and dtype to the same collective (and
    op, or source rank): else a ShapeError on every rank listing what each
    passed -- never a hang or a silently wrong result (MPICH reduces
    mismatched buffers into garbage without an error).  The exchange is also
    the arrival check: it waits under the group's timeout, and the transfer
    that follows starts only once every rank is in the same collective."""
    row = _describe(call, nd.shape, nd.dtype, arg)
    rows = group.exchange_rows(row, what=f"{call} shape check")
    if rows.tobytes() == row.tobytes() * group.size:
        return
    calls = {v: k for k, v in _CALL_CODES.items()}
    dtypes = {v: k for k, v in _DTYPE_CODES.items()}

    def seen(r):
        name = calls.get(int(rows[r, 0]), "?")
        arg = int(rows[r, 1])
        extra = f"op={_OPS[arg]}" if name == "all_reduce" else f"src={arg}" if name == "broadcast" else ""
        shape = tuple(int(d) for d in rows[r, 4:4 + rows[r, 3]])
        return f"rank {r}: {name}({extra}) {shape} {dtypes.get(int(rows[r, 2]))}".replace("()", "")

    raise ShapeError(f"needle.distributed.{call}: ranks passed different shapes, dtypes or ops "
                     f"({'; '.join(seen(r) for r in range(group.size))}); every rank must make the same "
                     f"call with the same shape and dtype")


# ---------------------------------------------------------------------- #
# collectives
# ---------------------------------------------------------------------- #
def _check_op(call: str, op: str) -> None:
    if op not in _OPS:
        raise DistributedError(f"needle.distributed.{call}: unknown op {op!r}; use one of {', '.join(_OPS)}")


def _nccl_for(group, nd: NDArray):
    nccl = getattr(group, "nccl", None)
    if nccl is not None and nccl.handles(nd):
        return nccl
    return None


# The last host view made, with its NDArray: a loop that reduces the same
# tensor again (metrics, gradients) reuses it instead of building a NumPy
# view per call (~12 us right after a large transfer, when caches are cold).
# It keeps that one array alive until another one is reduced or the group is
# destroyed.
_last_view = None


def _host_buffer(nd: NDArray):
    """(the array's own memory as NumPy, True) for host-memory backends (cpu,
    numpy): MPI works in place; else (a staged copy, False)."""
    global _last_view
    last = _last_view
    if last is not None and last[0] is nd:  # an NDArray's buffer, shape and strides never change
        return last[1], True
    view = nd.host_view()
    if view is None:
        return _host(nd), False
    _last_view = (nd, view)
    return view, True


def all_reduce(t, op: str = "sum"):
    """Reduce ``t`` over all ranks (``sum``, ``avg`` or ``max``), in place; returns ``t``."""
    _check_op("all_reduce", op)
    group = _require("all_reduce")
    nd = _array_of(t, "all_reduce")
    if group.size == 1:
        _describe("all_reduce", nd.shape, nd.dtype)
        return t
    nccl = _nccl_for(group, nd)
    if nccl is not None:
        nccl.all_reduce(nd, op)
        return t
    _check_same(group, "all_reduce", nd, _OP_CODES[op])
    host, in_place = _host_buffer(nd)
    group.allreduce(host.reshape(-1), op)   # every rank is in it: the check waited for them
    if op == "avg":
        host /= group.size
    return t if in_place else _write_back(t, host)


def broadcast(t, src: int = 0):
    """Copy rank ``src``'s ``t`` into ``t`` on every rank, in place; returns ``t``."""
    group = _require("broadcast")
    if not isinstance(src, (int, np.integer)) or not 0 <= src < group.size:
        raise DistributedError(f"needle.distributed.broadcast: src must be a rank in [0, {group.size}), "
                               f"got {src!r}")
    nd = _array_of(t, "broadcast")
    if group.size == 1:
        return t
    nccl = _nccl_for(group, nd)
    if nccl is not None:
        nccl.broadcast(nd, int(src))
        return t
    _check_same(group, "broadcast", nd, int(src))
    host, in_place = _host_buffer(nd)
    group.bcast(host.reshape(-1), int(src))
    return t if in_place else _write_back(t, host)


def all_gather(t) -> list:
    """Every rank's ``t``, in rank order, as new Tensors (or NDArrays) on t's device."""
    group = _require("all_gather")
    nd = _array_of(t, "all_gather")
    if group.size == 1:
        return [_like(t, _host(nd))]
    _check_same(group, "all_gather", nd)
    host = _host(nd)
    out = np.empty((group.size,) + host.shape, dtype=host.dtype)
    group.allgather(host.reshape(-1), out.reshape(group.size, -1))
    return [_like(t, out[r]) for r in range(group.size)]


def barrier() -> None:
    """Wait until every rank reaches this call (or the timeout)."""
    group = _require("barrier")
    if group.size > 1:
        group.wait(group.ibarrier())


# ---------------------------------------------------------------------- #
# lazily reached parts (they import needle.nn / needle.data)
# ---------------------------------------------------------------------- #
def __getattr__(name):
    if name == "DistributedDataParallel":
        from needle.nn.parallel import DistributedDataParallel
        return DistributedDataParallel
    if name == "DistributedSampler":
        from needle.data import DistributedSampler
        return DistributedSampler
    raise AttributeError(f"module 'needle.distributed' has no attribute {name!r}")


def _group_or_none():
    """The current group (None before init): for DistributedDataParallel."""
    return _group
