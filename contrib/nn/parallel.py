"""Data-parallel training: ``DistributedDataParallel`` (also reachable as
``needle.distributed.DistributedDataParallel``).

Each rank holds a full replica of the module and runs it on its own slice of
the global batch.  The wrapper keeps the replicas identical:

* at wrap time every parameter and buffer is broadcast from rank 0;
* during ``backward()``, a grad-ready hook on every parameter
  (``Tensor.register_post_accumulate_grad_hook``) marks it done; parameters
  are grouped into buckets in *reverse* registration order (roughly the order
  backward produces their gradients), the first bucket capped at 1 MB so
  communication starts early, the others at ``bucket_cap_mb``; a full bucket's
  gradients are packed into one buffer and its allreduce is started
  nonblocking (MPI ``Iallreduce``), so it overlaps the rest of backward.
  Buckets are launched strictly in index order, so every rank issues the same
  collectives in the same order;
* when the last bucket is launched every bucket is completed, divided by the
  world size and written to ``.grad``: when ``backward()`` returns, ``.grad``
  holds the gradient of the global batch mean, ready for ``opt.step()``;
* buffers (BatchNorm running statistics) are broadcast from rank 0 at every
  forward in training mode (PyTorch's ``broadcast_buffers=True``).

Batch norm still normalises by each rank's own batch, as in PyTorch; the
gradients then differ from a single process's on the global batch unless the
model is converted with :func:`convert_sync_batchnorm` (``SyncBatchNorm``
sums the statistics over ranks).

needle's ``backward()`` overwrites ``.grad`` instead of adding to it, so
inside :meth:`DistributedDataParallel.no_sync` the wrapper keeps the running
sum of each parameter's local gradients itself (and shows it in ``.grad``);
the first synchronised backward after it adds that sum before reducing --
PyTorch's gradient-accumulation result.
"""

from __future__ import annotations

import contextlib

import numpy as np

from needle.autograd import Tensor
from needle.errors import DistributedError, ShapeError

from .nn_basic import Module, Parameter

__all__ = ["DistributedDataParallel", "SyncBatchNorm", "convert_sync_batchnorm"]

_MB = 1024 * 1024
FIRST_BUCKET_MB = 1.0


def _dist():
    import needle.distributed as dist  # contrib -> contrib, reached lazily
    return dist


class _Bucket:
    __slots__ = ("index", "params", "numel", "dtype", "ready", "buffer", "handle")

    def __init__(self, index, params):
        self.index = index
        self.params = params
        self.numel = sum(int(np.prod(p.shape)) for p in params)
        self.dtype = params[0].dtype
        self.ready = 0
        self.buffer = None
        self.handle = None


def _make_buckets(params, cap_bytes, first_cap_bytes):
    """Reverse parameter order, one dtype per bucket, the first bucket smaller."""
    buckets, current, size = [], [], 0
    cap = first_cap_bytes
    for p in reversed(params):
        nbytes = int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize
        if current and (size + nbytes > cap or np.dtype(p.dtype) != np.dtype(current[0].dtype)):
            buckets.append(_Bucket(len(buckets), current))
            current, size, cap = [], 0, cap_bytes
        current.append(p)
        size += nbytes
    if current:
        buckets.append(_Bucket(len(buckets), current))
    return buckets


class _Reducer:
    """The gradient bookkeeping of one DistributedDataParallel (not a Module,
    list or dict, so Module.parameters() never walks into it)."""

    def __init__(self, group, params, cap_bytes, first_cap_bytes):
        self.group = group
        self.params = params
        self.buckets = _make_buckets(params, cap_bytes, first_cap_bytes)
        self.where = {id(p): b for b in self.buckets for p in b.params}
        self.local = {}            # id(param) -> host gradient of this backward (or the no_sync sum)
        self.accumulated = {}      # id(param) -> sum of local gradients under no_sync
        self.next_bucket = 0       # buckets are launched in index order on every rank
        self.got = set()           # id(param) of the gradients seen in this backward
        self.sync = True
        self.handles = [p.register_post_accumulate_grad_hook(self.grad_ready) for p in params]
        # overlap statistics for benchmarks: seconds spent waiting at the end
        self.stats = {"wait_s": 0.0, "steps": 0}

    # -- during backward ----------------------------------------------------------
    def grad_ready(self, p: Tensor) -> None:
        grad = p.grad.numpy()
        key = id(p)
        if key in self.accumulated:
            grad = grad + self.accumulated[key]
        if not self.sync:  # no_sync: keep the local sum, show it in .grad
            self.accumulated[key] = grad
            p.grad = Tensor(grad, device=p.device, dtype=p.dtype, requires_grad=False)
            return
        self.accumulated.pop(key, None)
        self.local[key] = grad
        self.got.add(key)
        bucket = self.where[key]
        bucket.ready += 1
        # drive MPI progress on buckets already in flight
        for b in self.buckets[:self.next_bucket]:
            if b.handle is not None:
                self.group.test(b.handle)
        while self.next_bucket < len(self.buckets) and \
                self.buckets[self.next_bucket].ready == len(self.buckets[self.next_bucket].params):
            self._launch(self.buckets[self.next_bucket])
            self.next_bucket += 1
        if self.next_bucket == len(self.buckets):
            self._finish()

    def _launch(self, bucket: _Bucket) -> None:
        buf = np.empty(bucket.numel, dtype=bucket.dtype)
        pos = 0
        for p in bucket.params:
            g = self.local.pop(id(p))
            buf[pos:pos + g.size] = g.reshape(-1)
            pos += g.size
        bucket.buffer = buf
        if self.group.size > 1:
            bucket.handle = self.group.iallreduce(buf, "sum", what=f"DDP gradient bucket {bucket.index}")

    def _finish(self) -> None:
        import time
        start = time.perf_counter()
        scale = 1.0 / self.group.size
        for bucket in self.buckets:
            if bucket.handle is not None:
                self.group.wait(bucket.handle)
            buf = bucket.buffer
            if scale != 1.0:
                buf *= scale
            pos = 0
            for p in bucket.params:
                n = int(np.prod(p.shape))
                p.grad = Tensor(buf[pos:pos + n].reshape(p.shape), device=p.device, dtype=p.dtype,
                                requires_grad=False)
                pos += n
            bucket.buffer = bucket.handle = None
            bucket.ready = 0
        self.next_bucket = 0
        self.got.clear()
        self.stats["wait_s"] += time.perf_counter() - start
        self.stats["steps"] += 1

    def check_finished(self) -> None:
        """Before a forward: the previous backward must have reduced every bucket."""
        if not self.got:
            return
        missing = [tuple(p.shape) for p in self.params if id(p) not in self.got]
        raise DistributedError(
            f"DistributedDataParallel: the previous backward produced no gradient for {len(missing)} of "
            f"{len(self.params)} parameters (shapes {missing[:5]}), so their buckets were never reduced; "
            f"every parameter must take part in the loss (set requires_grad=False on unused ones before "
            f"wrapping)")

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training (see the module docstring).

    ``bucket_cap_mb``: size of the gradient buckets after the first (1 MB).
    ``broadcast_buffers``: copy rank 0's buffers to every rank at each forward
    in training mode.  Needs ``needle.distributed.init_process_group()``
    first; in a world of one it changes nothing but the bookkeeping.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25, broadcast_buffers: bool = True):
        super().__init__()
        dist = _dist()
        if not dist.is_initialized():
            raise DistributedError("DistributedDataParallel: the process group is not initialised; call "
                                   "needle.distributed.init_process_group() before wrapping the model")
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected a needle.nn.Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb!r}")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        group = dist._group_or_none()
        params, seen = [], set()
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        self._reducer = _Reducer(group, params, bucket_cap_mb * _MB, min(FIRST_BUCKET_MB, bucket_cap_mb) * _MB)
        self._sync_state(everything=True)
        self.training = module.training

    @property
    def bucket_sizes(self) -> list:
        """Number of parameters per bucket, in launch order (for tests and tuning)."""
        return [len(b.params) for b in self._reducer.buckets]

    def _sync_state(self, everything: bool) -> None:
        """Broadcast rank 0's parameters (when ``everything``) and buffers, one
        fused message per dtype."""
        group = self._reducer.group
        if group.size == 1:
            return
        params = {id(p) for p in self.module.parameters()}
        tensors = [t for _, t in self.module.named_tensors() if everything or id(t) not in params]
        by_dtype = {}
        for t in tensors:
            by_dtype.setdefault(np.dtype(t.dtype), []).append(t)
        for dtype, group_tensors in sorted(by_dtype.items(), key=lambda kv: kv[0].str):
            flat = np.concatenate([t.numpy().reshape(-1) for t in group_tensors]).astype(dtype, copy=False)
            group.wait(group.ibroadcast(flat, 0, what="DDP parameter/buffer broadcast"))
            pos = 0
            for t in group_tensors:
                n = int(np.prod(t.shape))
                t.data = Tensor(flat[pos:pos + n].reshape(t.shape), device=t.device, dtype=t.dtype,
                                requires_grad=False)
                pos += n

    def forward(self, *args, **kwargs):
        self._reducer.check_finished()
        # the wrapped module's own mode counts: training loops often call model.eval() on it, not on us
        if self.broadcast_buffers and self.module.training:
            self._sync_state(everything=False)
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate local gradients without
        communicating; the next backward outside reduces the accumulated sum."""
        prev, self._reducer.sync = self._reducer.sync, False
        try:
            yield
        finally:
            self._reducer.sync = prev

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        self.module.load_state_dict(state_dict, strict)


# ---------------------------------------------------------------------- #
# synchronised batch norm
# ---------------------------------------------------------------------- #
from needle import ops  # noqa: E402
from needle.autograd import TensorOp  # noqa: E402
from needle.backend_ndarray import NDArray  # noqa: E402

from .nn_basic import BatchNorm1d  # noqa: E402


class _AllReduceSum(TensorOp):
    """Sum over ranks, differentiable: the adjoint of a sum over ranks is the
    sum over ranks of the adjoints (every rank runs the same backward, so the
    backward collectives line up)."""

    def compute(self, a):
        out = NDArray(a.numpy(), device=a.device, dtype=a.dtype)  # a copy: inputs are never written
        _dist().all_reduce(out, "sum")
        return out

    def gradient(self, out_grad, node):
        return _AllReduceSum()(out_grad)


class SyncBatchNorm(BatchNorm1d):
    """Batch norm whose training statistics are those of the *global* batch:
    the per-feature sums and sums of squares are summed over all ranks
    (PyTorch's ``SyncBatchNorm``).  Takes ``(B, C)`` or NCHW ``(B, C, H, W)``
    inputs; the parameters, buffers and running-stat rule are BatchNorm1d's.
    In a world of one (or before ``init_process_group``) it is BatchNorm1d.
    """

    def forward(self, x):
        if len(x.shape) == 4:  # NCHW: C features of N*H*W samples, as BatchNorm2d
            n, c, h, w = x.shape
            rows = ops.reshape(ops.transpose(ops.transpose(x, (1, 2)), (2, 3)), (n * h * w, c))
            y = ops.reshape(self._rows(rows), (n, h, w, c))
            return ops.transpose(ops.transpose(y, (2, 3)), (1, 2))
        return self._rows(x)

    def _rows(self, x):
        dist = _dist()
        if self.training and dist.is_initialized() and dist.get_world_size() > 1:
            return self._synced(x)
        return BatchNorm1d.forward(self, x)

    def _synced(self, x):
        if len(x.shape) != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"SyncBatchNorm({self.dim}): expected (batch, {self.dim}) or NCHW input with "
                             f"{self.dim} channels, got shape {tuple(x.shape)}")
        count = Tensor([float(x.shape[0])], device=x.device, dtype=x.dtype, requires_grad=False)
        total = float(_dist().all_reduce(count, "sum").numpy()[0])
        mean = _AllReduceSum()(x.sum((0,))) / total
        # two passes, as one process's batch norm: E[x^2] - E[x]^2 in one
        # reduction loses the variance to cancellation when the mean is large
        # next to the spread (about 1e-4 off at a mean of 1e6 in float64, and
        # negative -- NaN after the power -- in float32)
        centred = x - mean
        var = _AllReduceSum()((centred * centred).sum((0,))) / total
        m = self.momentum
        self.running_mean.data = self.running_mean.realize_cached_data() * (1 - m) + mean.realize_cached_data() * m
        self.running_var.data = self.running_var.realize_cached_data() * (1 - m) + var.realize_cached_data() * m
        scale = self.weight * (var + self.eps) ** -0.5
        return centred * scale + self.bias

    @classmethod
    def convert_sync_batchnorm(cls, module):
        """``module`` with every BatchNorm1d/BatchNorm2d inside it replaced by a
        SyncBatchNorm sharing its parameters and buffers (convert before
        creating the optimizer and wrapping in DistributedDataParallel)."""
        return _convert(module, cls)


def _convert(value, cls):
    if isinstance(value, BatchNorm1d) and not isinstance(value, SyncBatchNorm):
        new = cls.__new__(cls)
        new.__dict__.update(value.__dict__)  # the same Parameter and buffer objects
        return new
    if isinstance(value, Module):
        for key, item in list(value.__dict__.items()):
            value.__dict__[key] = _convert(item, cls)
        return value
    if isinstance(value, list):
        value[:] = [_convert(v, cls) for v in value]
        return value
    if isinstance(value, tuple):
        return tuple(_convert(v, cls) for v in value)
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _convert(value[key], cls)
        return value
    return value


def convert_sync_batchnorm(module):
    """See :meth:`SyncBatchNorm.convert_sync_batchnorm`."""
    return SyncBatchNorm.convert_sync_batchnorm(module)
