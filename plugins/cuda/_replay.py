"""CUDA graph replay of a step recorded by ``needle.jit`` (``Backend.compile_replay``).

Design
------
The program is a list of backend calls.  Kernel arguments are baked into a
graph when it is captured, yet some calls take a scalar that changes between
replays (a :class:`~needle.protocol.ReplayScalar`: learning rate, bias
corrections, a dropout seed).  Those are handled in one of two ways:

* the scalar_* kernels, ``fill`` and ``rand_uniform`` -- what needle's
  optimizers and dropout issue -- are captured in a variant that reads the
  scalar from a small float64 device buffer (``vals[slot]``); ``run`` first
  queues ``set_scalars``, one kernel whose arguments carry the replay's
  values (kernel arguments are copied when the launch is queued, so no host
  buffer is read later), and the graph's kernels read them in stream order;
* any other call with a ReplayScalar cuts the program: it is issued directly,
  between graph launches, with the current values.

Every run of calls between such cuts (a *segment*) is captured once into a
CUDA graph -- stream capture on the device's stream around the very backend
methods the Python replay would call -- and ``run`` launches it with one
``cuGraphLaunch``.  A typical training step (forward, backward, SGD or Adam
composed of scalar kernels, dropout) is thus one ``set_scalars`` launch and
one graph launch.  (Updating kernel nodes with
``cuGraphExecKernelNodeSetParams`` was the other way; it needs a map from
calls to graph nodes that stream capture does not give.)

Before capturing a segment its calls are dry-run (``DeviceRuntime.dry_run``):
arguments are checked, kernel modules loaded and every scratch buffer a call
allocates internally is reserved in a :class:`~needle_cuda._memory.ScratchPool`
-- ``cuMemAlloc`` is refused during capture, and a block a graph writes must
never go back to the shared cache while the graph lives.  ``from_numpy`` calls
(constants made inside the step; ``needle.jit`` records a private copy of the
host array) are uploaded once, when the program is compiled, into a device
buffer the replay owns, and captured as device-to-device copies from it: every
replay writes the same constant with no host copy or synchronisation.

A failure of capture itself (the driver refusing stream capture, a call that
a graph cannot hold) gives None, and needle replays the step from Python; an
error the calls would raise anyway (a bad shape, an unknown kernel) is raised.
An error only a kernel can see (an embedding index outside the table) is noted
on the device and raised where results come back (``to_numpy``,
``synchronize``), as for calls made directly: ``run`` never waits for the GPU.

Limit: capture is per stream, and a device has one stream.  Work another
thread queues on the same device *while* a step is being captured (a few
milliseconds, once per compiled step) would land in the graph instead of
running; the dry run before it, and the scratch pool, act on the calling
thread only.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Callable, Sequence

import numpy as np

from needle.errors import ArgumentError, ShapeError
from needle.protocol import ReplayScalar

from . import _driver, _kernels, _runtime
from .backend import CudaBackend, rng_seed
from ._errors import CaptureUnsupportedError, CudaError
from ._memory import CudaArray, ScratchPool

#: set to "0" to turn CUDA graphs off (needle then replays steps from Python)
ENV_DISABLE = "NEEDLE_CUDA_GRAPHS"

_GRAPH, _DIRECT = 0, 1


class CaptureFailed(Exception):
    """Stream capture did not produce a graph; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def has_replay_scalar(x) -> bool:
    if isinstance(x, ReplayScalar):
        return True
    if isinstance(x, (tuple, list)):
        return any(has_replay_scalar(v) for v in x)
    return False


def bind(x, scalars: Sequence):
    """``x`` with every ReplayScalar replaced by its value in ``scalars``."""
    if isinstance(x, ReplayScalar):
        return scalars[x.slot]
    if isinstance(x, tuple):
        return tuple(bind(v, scalars) for v in x)
    if isinstance(x, list):
        return [bind(v, scalars) for v in x]
    return x


def _max_slot(x) -> int:
    if isinstance(x, ReplayScalar):
        return int(x.slot)
    if isinstance(x, (tuple, list)):
        return max((_max_slot(v) for v in x), default=-1)
    return -1


class _DeviceScalars:
    """The float64 device buffer the graphs' scalar-reading kernels use, the
    slots they read, and which of those hold rand_uniform seeds (checked on
    every run, as the direct call would check them)."""

    def __init__(self, backend, rt, size: int):
        self.vals = CudaArray(rt, size, np.dtype("float64"))
        self.host = np.zeros(size, dtype=np.float64)
        self.slots: set = set()
        self.seed_slots: set = set()
        self.write = backend._set_scalars

    def __call__(self, scalars: Sequence) -> None:
        for s in self.seed_slots:
            rng_seed(scalars[s])
        host = self.host
        for s in self.slots:
            host[s] = scalars[s]
        self.write(self.vals, host)


def _on_device(backend, name: str, args: tuple, dev: "_DeviceScalars"):
    """``(fn, args)`` running the call with its ReplayScalar read from
    ``dev.vals`` on the device, or None when the call is not one of those that
    can (then it is issued directly on each run)."""
    # only the cuda backend's own methods: a subclass may have changed what one does
    if getattr(type(backend), name, None) is not getattr(CudaBackend, name, False):
        return None
    if name in _kernels.SCALAR and len(args) == 3:
        a, val, out = args
        if isinstance(val, ReplayScalar) and not has_replay_scalar((a, out)):
            dev.slots.add(val.slot)
            return backend._scalar_dev, (name, a, out, dev.vals, val.slot)
    elif name in ("fill", "rand_uniform") and len(args) == 2:
        out, val = args
        if isinstance(val, ReplayScalar) and not has_replay_scalar(out):
            dev.slots.add(val.slot)
            if name == "fill":
                return backend._fill_dev, (out, dev.vals, val.slot)
            dev.seed_slots.add(val.slot)
            return backend._rand_uniform_dev, (out, dev.vals, val.slot)
    return None


def _buffers(x):
    if isinstance(x, CudaArray):
        yield x
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _buffers(v)


class _DirectCall:
    """A call issued from Python on every run, its ReplayScalars bound anew."""

    __slots__ = ("name", "fn", "args", "dynamic")

    def __init__(self, name: str, fn: Callable, args: tuple):
        self.name, self.fn, self.args = name, fn, tuple(args)
        self.dynamic = tuple(i for i, a in enumerate(self.args) if has_replay_scalar(a))

    def __call__(self, scalars: Sequence) -> None:
        args = list(self.args)
        for i in self.dynamic:
            args[i] = bind(args[i], scalars)
        self.fn(*args)


def _copy_snapshot(rt, out, snapshot) -> None:
    # rt.copy_device is looked up at call time: the dry run replaces it
    rt.copy_device(out.ptr(), snapshot.ptr(), snapshot.nbytes)


class CudaGraphReplay:
    """A compiled step: ``run(scalars)`` launches each static segment's graph
    and issues the calls with ReplayScalars in between, all on the device's
    stream, asynchronously.  Owns its graphs and scratch memory (``close()``
    or garbage collection frees them) and keeps every buffer of the program
    alive."""

    def __init__(self, rt, program: list, steps: list, graphs: list, pool: ScratchPool,
                 keep: list, drv, device_scalars: "_DeviceScalars | None" = None):
        self._rt = rt
        self._scalars = device_scalars  # None when no graph reads a ReplayScalar
        self._program = program       # the buffers every graph reads and writes
        self._keep = keep             # from_numpy snapshots
        self._steps = steps           # [(_GRAPH, exec) | (_DIRECT, _DirectCall)]
        self._graphs = graphs         # [(graph, exec)]
        self._pool = pool
        self._launch = drv.cuGraphLaunch
        # held here so that closing at interpreter exit needs no module lookups
        self._destroy_exec, self._destroy_graph = drv.cuGraphExecDestroy, drv.cuGraphDestroy
        self._closed = False

    @property
    def num_graphs(self) -> int:
        return sum(1 for kind, _ in self._steps if kind == _GRAPH)

    @property
    def num_direct_calls(self) -> int:
        return sum(1 for kind, _ in self._steps if kind == _DIRECT)

    @property
    def device_scalar_slots(self) -> tuple:
        """The ReplayScalar slots the graphs read on the device."""
        return tuple(sorted(self._scalars.slots)) if self._scalars is not None else ()

    @property
    def scratch_bytes(self) -> int:
        return self._pool.nbytes

    def run(self, scalars: Sequence = ()) -> None:
        if self._closed:
            raise CudaError("running a CUDA graph replay", "REPLAY_CLOSED", -1,
                            "close() was called on it")
        rt = self._rt
        if _runtime._current.context is not rt.context:
            rt.activate()
        if self._scalars is not None:
            self._scalars(scalars)     # before any launch: a bad seed raises with nothing queued
        stream, launch = rt.stream, self._launch
        for kind, item in self._steps:
            if kind == _GRAPH:
                res = launch(item, stream)
                err = res[0] if isinstance(res, tuple) else res
                if int(err) != 0:
                    raise CudaError(f"launching a CUDA graph on cuda:{rt.index}", _driver.error_name(err),
                                    int(err))
            else:
                item(scalars)

    def close(self) -> None:
        """Destroy the graphs and return the scratch memory; idempotent."""
        if self._closed:
            return
        self._closed = True
        graphs, self._graphs, self._steps = self._graphs, [], []
        failed = None
        for graph, exec_ in graphs:
            for destroy, handle in ((self._destroy_exec, exec_), (self._destroy_graph, graph)):
                try:
                    res = destroy(handle)
                    err = res[0] if isinstance(res, tuple) else res
                    if int(err) != 0 and failed is None:
                        failed = err
                except Exception:  # noqa: BLE001 -- keep destroying the others
                    pass
        self._rt.allocator.release_pool(self._pool)
        self._program, self._keep, self._scalars = [], [], None
        if failed is not None:
            raise CudaError("destroying a CUDA graph", _driver.error_name(failed), int(failed))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            # at interpreter exit the driver releases the context's graphs itself,
            # and cuda-python may already be half torn down: leave them
            if sys.is_finalizing():
                return
            self.close()
        except Exception:  # noqa: BLE001 -- never raise from garbage collection
            pass

    def __repr__(self):
        state = "closed" if self._closed else f"{self.num_graphs} graph(s), {self.num_direct_calls} direct call(s)"
        return f"<CudaGraphReplay cuda:{self._rt.index} {state}>"


# -- compiling ---------------------------------------------------------------------
def _plan(backend, rt, program) -> tuple[list, list, "_DeviceScalars | None"]:
    """``[(_GRAPH, [(fn, args)]) | (_DIRECT, _DirectCall)]``, the from_numpy
    snapshots to keep and the device scalars (None if no graph reads one);
    CaptureFailed for a call no graph can hold."""
    parts: list = []
    keep: list = []
    static: list = []
    top = max((_max_slot(args) for _, args in program), default=-1)
    dev = _DeviceScalars(backend, rt, top + 1) if top >= 0 else None
    for entry in program:
        name, args = entry[0], tuple(entry[1])
        if name == "to_numpy":
            raise CaptureFailed("to_numpy returns host data, which a graph cannot")
        if name == "from_numpy":
            a, out = args
            backend._check("from_numpy", out=out)
            host = np.ascontiguousarray(a, dtype=out.dtype).reshape(-1)
            if host.size != out.size:
                raise ShapeError(f"from_numpy: {host.size} elements for a buffer of {out.size}")
            snapshot = CudaArray(rt, out.size, out.dtype)
            rt.copy_to_device(snapshot.ptr(), host)
            keep.append(snapshot)
            static.append((_copy_snapshot, (rt, out, snapshot)))
            continue
        fn = getattr(backend, name, None) if not name.startswith("_") else None
        if not callable(fn):  # an op override listed under another name (as needle.jit looks it up)
            fn = (backend.op_overrides() or {}).get(name)
        if not callable(fn):
            raise ArgumentError(f"compile_replay: {name!r} is neither a method nor an op override "
                                "of the cuda backend")
        if has_replay_scalar(args):
            on_device = _on_device(backend, name, args, dev)
            if on_device is not None:
                static.append(on_device)
                continue
            if static:
                parts.append((_GRAPH, static))
                static = []
            parts.append((_DIRECT, _DirectCall(name, fn, args)))
        else:
            static.append((fn, args))
    if static:
        parts.append((_GRAPH, static))
    if dev is not None and not dev.slots:
        dev = None
    return parts, keep, dev


def _instantiate(drv, graph):
    # cuda-python 12 has cuGraphInstantiateWithFlags(graph, flags); 13 only
    # cuGraphInstantiate(graph, flags) -- the same call under its new name
    name = "cuGraphInstantiateWithFlags" if hasattr(drv, "cuGraphInstantiateWithFlags") else "cuGraphInstantiate"
    return _driver.call(name, graph, 0, action="instantiating a CUDA graph")


def _capture(rt, drv, calls: list, pool: ScratchPool):
    """``(graph, exec)`` for ``calls``, or None when they do no device work."""
    alloc = rt.allocator
    # 1. dry run: errors surface, modules load, scratch blocks go into the pool
    pool.may_grow = True
    alloc.use_pool(pool)
    try:
        with rt.dry_run() as log:
            for fn, args in calls:
                fn(*args)
    finally:
        alloc.use_pool(None)
    if not log:
        return None
    # 2. capture.  THREAD_LOCAL: a call this thread may not make during capture
    # fails (and we fall back) without disturbing other threads' CUDA work.
    rt.activate()
    mode = drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    try:
        _driver.call("cuStreamBeginCapture", rt.stream, mode, action=f"beginning stream capture on cuda:{rt.index}")
    except CudaError as exc:
        raise CaptureFailed(str(exc)) from exc
    failure = None
    pool.may_grow = False
    alloc.use_pool(pool)
    # no cyclic garbage collection while capturing: a finalizer that called the
    # driver (freeing another graph, say) could invalidate the capture
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for fn, args in calls:
            fn(*args)
    except BaseException as exc:  # noqa: BLE001 -- capture must be ended whatever happened
        failure = exc
    finally:
        alloc.use_pool(None)
        if gc_was_on:
            gc.enable()
        res = drv.cuStreamEndCapture(rt.stream)
    err, graph = res[0], (res[1] if len(res) > 1 else None)
    if failure is not None:
        if int(err) == 0 and graph is not None:
            drv.cuGraphDestroy(graph)
        if isinstance(failure, (CudaError, CaptureUnsupportedError)):
            raise CaptureFailed(str(failure)) from failure
        raise failure
    if int(err) != 0:
        raise CaptureFailed(f"cuda: ending stream capture failed: {_driver.error_name(err)}")
    try:
        exec_ = _instantiate(drv, graph)
    except CudaError as exc:
        drv.cuGraphDestroy(graph)
        raise CaptureFailed(str(exc)) from exc
    return graph, exec_


def compile_replay(backend, program: Sequence) -> "CudaGraphReplay | None":
    """``backend.compile_replay(program)``; see the module docstring."""
    if os.environ.get(ENV_DISABLE, "1").strip() == "0":
        backend.replay_fallback_reason = f"{ENV_DISABLE}=0"
        return None
    program = [(entry[0], tuple(entry[1])) for entry in program]
    rt = backend._rt()
    # launches go to the stream of their buffers' device: every buffer must be
    # on the device whose stream is captured, or its kernels would run now
    for _, args in program:
        for b in _buffers(args):
            if b._runtime is not rt:
                backend.replay_fallback_reason = f"a buffer on cuda:{b._runtime.index}, not cuda:{rt.index}"
                return None
    drv = _driver.driver()
    pool = ScratchPool()
    graphs: list = []
    steps: list = []
    try:
        parts, keep, dev = _plan(backend, rt, program)
        for kind, item in parts:
            if kind == _DIRECT:
                steps.append((_DIRECT, item))
                continue
            captured = _capture(rt, drv, item, pool)
            if captured is not None:
                graphs.append(captured)
                steps.append((_GRAPH, captured[1]))
    except BaseException as exc:
        for graph, exec_ in graphs:
            drv.cuGraphExecDestroy(exec_)
            drv.cuGraphDestroy(graph)
        rt.allocator.release_pool(pool)
        if isinstance(exc, (CaptureFailed, CaptureUnsupportedError)):
            backend.replay_fallback_reason = getattr(exc, "reason", None) or str(exc)
            return None
        raise
    backend.replay_fallback_reason = None
    return CudaGraphReplay(rt, program, steps, graphs, pool, keep, drv, dev)
