"""``needle.jit``: capture a step once, replay it without Python per op.

``step = ndl.jit(fn)``: for each argument signature (the shapes, dtypes,
devices and ``requires_grad`` of the Tensor arguments, and the values of the
others) the first call runs ``fn`` eagerly, the second runs it while
:mod:`needle.backend_ndarray.capture` records every backend call, and later
calls replay the recording: the new Tensor arguments are copied into the
capture's static input buffers, the recorded kernels run in order on
buffers planned from their lifetimes (intermediates share an arena of
reused buffers, so a replay allocates nothing but its results), and the
returned Tensors are copies of the step's outputs.

Replays run through the backend's native loop when it offers one
(:meth:`needle.protocol.Backend.compile_replay`: a ``nogil`` loop on
``cpu``, a CUDA graph on ``cuda``), else from Python, one call per kernel.
docs/jit.md tells users what may change between calls and what raises.
"""

from __future__ import annotations

import functools
import gc
import heapq
import sys
import warnings
import weakref
from typing import Any, Callable, Optional

from .autograd import Tensor, Value
from .backend_ndarray import NDArray, capture as _capture, default_device
from .backend_ndarray.capture import Capture, Slot, capturing
from .backend_ndarray.device import _devices
from .errors import JitError
from .protocol import ReplayScalar

__all__ = ["jit", "JitFunction"]


# ---------------------------------------------------------------------------
# argument trees: nested tuples / lists / dicts of Tensors and other values
# ---------------------------------------------------------------------------
def _flatten(obj, leaves: list, path: str):
    """A hashable description of ``obj``'s structure; appends its Tensors to ``leaves``."""
    if isinstance(obj, Tensor):
        leaves.append(obj)
        return ("T",)
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__,) + tuple(_flatten(x, leaves, f"{path}[{i}]") for i, x in enumerate(obj))
    if isinstance(obj, dict):
        keys = list(obj)
        return ("dict", tuple(keys)) + tuple(_flatten(obj[k], leaves, f"{path}[{k!r}]") for k in keys)
    if isinstance(obj, (NDArray, Value)):
        raise JitError(f"needle.jit: argument {path} is a {type(obj).__name__}; pass Tensors")
    try:
        hash(obj)
    except TypeError:
        raise JitError(f"needle.jit: argument {path} ({type(obj).__name__}) is neither a Tensor nor "
                       f"hashable; the arguments that are not Tensors are part of the cache key") from None
    return ("V", obj)


_FLAT_TREES: dict = {}  # number of arguments -> the tree of that many Tensors


def _unflatten(tree, leaves):
    it = iter(leaves)

    def build(t):
        kind = t[0]
        if kind == "T":
            return next(it)
        if kind == "V":
            return t[1]
        if kind == "dict":
            return {k: build(sub) for k, sub in zip(t[1], t[2:])}
        items = [build(sub) for sub in t[1:]]
        return tuple(items) if kind == "tuple" else items
    return build(tree)


def _outputs_of(result):
    """The Tensors of a step's result and its structure; JitError for other values."""
    leaves: list = []

    def walk(obj, path):
        if obj is None:
            return ("V", None)
        if isinstance(obj, Tensor):
            leaves.append(obj)
            return ("T",)
        if isinstance(obj, (tuple, list)):
            return (type(obj).__name__,) + tuple(walk(x, f"{path}[{i}]") for i, x in enumerate(obj))
        if isinstance(obj, dict):
            keys = list(obj)
            return ("dict", tuple(keys)) + tuple(walk(obj[k], f"{path}[{k!r}]") for k in keys)
        raise JitError(f"needle.jit: the function returned {type(obj).__name__} at {path}; a jitted "
                       f"function returns Tensors (or tuples, lists, dicts of them, or None) -- a Python "
                       f"value computed in the step would be stale on replay")
    return walk(result, "result"), leaves


def _copy_into(static: NDArray, arr: NDArray) -> None:
    """An argument's values into its static input buffer (compact, same shape)."""
    if static._handle.size:
        static._be.compact(arr._handle, static._handle, arr._shape, arr._strides, arr._offset)


def _copy_out(buf, shape, strides, offset, device) -> Tensor:
    """A compact copy of the view ``(buf, shape, strides, offset)`` as a constant
    Tensor: a step's results never alias the buffers the next replay writes."""
    out = NDArray.make(shape, device=device, dtype=buf.dtype)
    if out._handle.size:
        out._be.compact(buf, out._handle, shape, strides, offset)
    return Tensor.make_const(out)


# ---------------------------------------------------------------------------
# a planned, replayable step
# ---------------------------------------------------------------------------
class _Plan:
    """One captured step: its static inputs, the planned program, what to
    check and call around each replay, and how to build the outputs."""

    def __init__(self):
        self.inputs: list = []         # static input NDArrays, in argument order
        self.program: list = []        # (name, args) with real buffers and ReplayScalars
        self.steps: list = []          # (bound kernel, args, dynamic positions) for the Python loop
        self.native = None
        self.scalar_fns: list = []
        self.before: list = []
        self.after: list = []
        self.guards: list = []
        self.outputs: list = []        # (buffer, shape, strides, offset, device)
        self.out_tree = None
        self.externals: list = []      # buffers made before the capture that the step reads
        self.ext_base: list = []       # per external buffer: the references the plan holds
        self.owners: list = []         # (weakref to Tensor, the NDArray it must still hold)
        self.arena_bytes = 0
        self.step_bytes = 0            # what the step's new buffers take without the arena

    def check(self) -> None:
        """JitError when state the step reads was rebound since the capture."""
        for ref, arr in self.owners:
            t = ref()
            if t is not None and t.cached_data is not arr:
                raise JitError(
                    "needle.jit: a Tensor the captured step reads from outside its arguments was given "
                    "a new array since the capture (e.g. `t.data = ...`, load_state_dict); the replay "
                    "would read the old one. Pass it as an argument, update it in place, or call "
                    "reset() on the jitted function to capture again")
        for count, base in zip(self.ext_counts(), self.ext_base):
            if count <= base:
                raise JitError(
                    "needle.jit: an array the captured step reads from outside its arguments is no "
                    "longer held by anything but the replay (its owner was given a new array); the "
                    "replay would read a stale value. Pass it as an argument or call reset()")

    def ext_counts(self) -> list:
        """References to each external buffer (measured the same way at the
        capture, where ``ext_base`` was taken, and before each replay)."""
        return [sys.getrefcount(b) for b in self.externals]

    def run(self) -> None:
        for fn in self.before:
            fn()
        scalars = [float(fn()) for fn in self.scalar_fns]
        if self.native is not None:
            self.native.run(scalars)
        else:
            for fn, args, dyn in self.steps:
                if dyn:
                    args = list(args)
                    for pos in dyn:
                        args[pos] = scalars[args[pos].slot]
                fn(*args)
        for fn in self.after:
            fn()


class JitFunction:
    """A function compiled by :func:`jit`: call it like the function.

    ``stats`` counts eager calls, captures and replays; ``reset()`` forgets
    every capture.  ``native`` is whether the last plan replays through the
    backend's native loop."""

    def __init__(self, fn: Callable, *, native: bool = True):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.use_native = native
        self._seen: set = set()      # signatures called once (eagerly)
        self._plans: dict = {}       # key -> _Plan
        self._failed: set = set()    # signatures whose capture failed: they run eagerly
        self.stats = {"eager": 0, "captures": 0, "replays": 0}

    def reset(self) -> None:
        """Drop every capture: the next call per signature runs eagerly again."""
        self._seen.clear()
        self._plans.clear()
        self._failed.clear()

    @property
    def native(self) -> Optional[bool]:
        plan = next(reversed(self._plans.values()), None)
        return None if plan is None else plan.native is not None

    def plan_info(self) -> list:
        """Per capture: kernel calls, the arena's bytes, the bytes of every buffer
        the step made (what it would take without the arena), native replay or not."""
        return [{"calls": len(p.program), "arena_bytes": p.arena_bytes, "step_bytes": p.step_bytes,
                 "native": p.native is not None} for p in self._plans.values()]

    def __call__(self, *args, **kwargs):
        if capturing():  # called inside another capture: recorded with it
            return self.fn(*args, **kwargs)
        if not kwargs and all(type(a) is Tensor for a in args):
            # the common step(x, y): no tree to walk (a replay's Python is per call)
            leaves = list(args)
            tree = _FLAT_TREES.get(len(args))
            if tree is None:
                tree = _FLAT_TREES[len(args)] = _flatten((args, {}), [], "args")
        else:
            leaves = []
            tree = _flatten((args, kwargs), leaves, "args")
        sig = []
        for t in leaves:
            arr = t.realize_cached_data()
            sig.append((arr._shape, arr._handle.dtype, arr._device, t.requires_grad))
        key = (tree, *sig)
        plan = self._plans.get(key)
        if plan is None and len({k[2] for k in key[1:]}) > 1:
            raise JitError(f"needle.jit: the Tensor arguments are on {sorted({k[2].name for k in key[1:]})}; "
                           f"a captured step runs on one device")
        if plan is not None:
            if all(g() for g in plan.guards):
                return self._replay(plan, leaves)
            del self._plans[key]      # a hyper-parameter changed what the step runs: capture again
            return self._capture(key, tree, leaves)
        # the first call runs eagerly, so that state made on first use (optimizer
        # moments) exists before a capture; once one signature is captured a new
        # one is captured at once -- an eager step would give the parameters new
        # arrays (out-of-place updates) under the existing captures
        if key in self._failed or (key not in self._seen and not self._plans):
            self._seen.add(key)
            self.stats["eager"] += 1
            if not self._plans:
                return self.fn(*args, **kwargs)
            # a signature that cannot be captured, beside ones that are: its eager
            # steps keep the state in the buffers the captures read
            with _capture.keep_buffers():
                return self.fn(*args, **kwargs)
        return self._capture(key, tree, leaves)

    # -- replay ----------------------------------------------------------------
    def _replay(self, plan: _Plan, leaves: list):
        plan.check()
        for t, static in zip(leaves, plan.inputs):   # the signature matched: same shapes and device
            _copy_into(static, t.realize_cached_data())
        plan.run()
        self.stats["replays"] += 1
        return self._results(plan)

    @staticmethod
    def _results(plan: _Plan):
        return _unflatten(plan.out_tree, [_copy_out(*view) for view in plan.outputs])

    # -- capture -----------------------------------------------------------------
    def _capture(self, key, tree, leaves):
        devices = {t.device for t in leaves}
        device = devices.pop() if devices else default_device()
        backend = device.require()
        plan = _Plan()
        cap = Capture(backend, device)
        static_leaves = []
        for t in leaves:
            arr = t.realize_cached_data()
            static = NDArray.make(arr.shape, device=device, dtype=arr.dtype)
            _copy_into(static, arr)
            cap.slot(static._handle, "input")
            plan.inputs.append(static)
            static_leaves.append(Tensor.make_const(static, requires_grad=t.requires_grad))
        call_args, call_kwargs = _unflatten(tree, static_leaves)
        cap.start(list(_devices.values()))
        try:
            result = self.fn(*call_args, **call_kwargs)
            plan.out_tree, out_tensors = _outputs_of(result)
            outs = [t.realize_cached_data() for t in out_tensors]
            for arr in outs:
                if arr._device != device:
                    raise JitError(f"needle.jit: the step returned a Tensor on {arr._device}; it ran on "
                                   f"{device}")
            cap.settle_moves()
        except JitError:
            cap.stop()
            self._failed.add(key)   # this signature runs eagerly from now on
            raise
        except BaseException:
            cap.stop()
            raise
        cap.stop()
        plan.outputs = [(arr._handle, arr._shape, arr._strides, arr._offset, device) for arr in outs]
        out_slots = {cap.slot(arr._handle) for arr in outs}
        # the capture's own results are copied before the buffers are planned
        first = [_copy_out(*view) for view in plan.outputs]
        del result, out_tensors, outs, call_args, call_kwargs, static_leaves
        try:
            self._finish(plan, cap, out_slots)
        except JitError as exc:
            # the step itself ran (it is trained; raising would invite running it
            # twice): say why it cannot be replayed and run it eagerly from now on
            self._failed.add(key)
            warnings.warn(f"{exc}; this signature runs eagerly", RuntimeWarning, stacklevel=3)
            return _unflatten(plan.out_tree, first)
        self._plans[key] = plan
        self.stats["captures"] += 1
        return _unflatten(plan.out_tree, first)

    def _finish(self, plan: _Plan, cap: Capture, out_slots: set) -> None:
        owners = _scan_survivors(cap)
        gc.collect()
        # the nodes the cut graphs dropped are gone now: their entries go too,
        # before any reference to a buffer is counted
        owners = [(ref, arr) for ref, arr in owners if ref() is not None]
        n_calls = len(cap.calls)
        first = [n_calls] * len(cap.buffers)
        last = [-1] * len(cap.buffers)

        for i, (_, args) in enumerate(cap.calls):
            for a in args:
                _touch(a, i, first, last)
        # which buffers something outside the recording still holds (p.grad, ...):
        # they keep their own buffer; the rest share the arena
        held = [sys.getrefcount(cap.buffers[s]) > 2 for s in range(len(cap.buffers))]  # the list + the argument
        for s, kind in enumerate(cap.kinds):
            if kind == "ext" and last[s] >= 0 and not held[s]:
                raise JitError(
                    "needle.jit: the captured step read an array that nothing outside the step holds "
                    "any more (its owner was given a new array during the step without "
                    "`Tensor.data = ...`), so a replay would read a stale value; keep state in "
                    "Tensors updated through .data, or pass it as an argument")
        ext = [s for s, k in enumerate(cap.kinds) if k == "ext" and last[s] >= 0]
        # references from outside the recording, counted before the plan adds its own
        outside = {s: sys.getrefcount(cap.buffers[s]) - 2 for s in ext}
        physical = list(cap.buffers)
        free: dict = {}
        busy: list = []   # (last use, slot) of arena buffers in use
        order = sorted((s for s, k in enumerate(cap.kinds)
                        if k == "new" and not held[s] and s not in out_slots and last[s] >= 0),
                       key=lambda s: first[s])
        arena = 0
        for s in order:
            while busy and busy[0][0] < first[s]:
                _, done = heapq.heappop(busy)
                buf = physical[done]
                free.setdefault((buf.size, buf.dtype), []).append(buf)
            want = cap.buffers[s]
            pool = free.get((want.size, want.dtype))
            if pool:
                physical[s] = pool.pop()
            else:  # the arena grows by this capture buffer itself: planning allocates nothing
                arena += want.size * want.dtype.itemsize
            heapq.heappush(busy, (last[s], s))
        plan.arena_bytes = arena
        plan.step_bytes = sum(cap.buffers[s].size * cap.buffers[s].dtype.itemsize
                              for s, k in enumerate(cap.kinds) if k == "new" and last[s] >= 0)

        plan.program = [(name, tuple(_real(a, physical) for a in args)) for name, args in cap.calls]
        del physical, free, busy
        for name, args in plan.program:
            dyn = tuple(i for i, a in enumerate(args) if type(a) is ReplayScalar)
            plan.steps.append((cap.kernels[name], args, dyn))
        plan.scalar_fns, plan.before = list(cap.scalar_fns), list(cap.before)
        plan.after, plan.guards = list(cap.after), list(cap.guards)
        plan.externals = [cap.buffers[s] for s in ext]
        read = {id(b) for b in plan.externals}
        plan.owners = [(ref, arr) for ref, arr in owners if id(arr._handle) in read]
        del owners
        if self.use_native:   # None where the backend has no native loop (the protocol's default)
            plan.native = cap.backend.compile_replay(plan.program)
        cap.buffers.clear()
        cap.calls.clear()
        # what the plan itself holds of each external buffer: a replay finds the
        # buffer orphaned when its count falls back to that
        plan.ext_base = [c - outside[s] for c, s in zip(plan.ext_counts(), ext)]


# module functions, not closures: a recursive closure is a reference cycle that
# would keep the buffers it reaches alive until the next garbage collection,
# and the plan counts references to buffers
def _touch(arg, i: int, first: list, last: list) -> None:
    if type(arg) is Slot:
        s = arg.index
        if first[s] > i:
            first[s] = i
        last[s] = i
    elif type(arg) is list:
        for a in arg:
            _touch(a, i, first, last)


def _real(arg, physical: list):
    if type(arg) is Slot:
        return physical[arg.index]
    if type(arg) is list:
        return [_real(a, physical) for a in arg]
    return arg


def _scan_survivors(cap: Capture) -> list:
    """One walk over the live Tensors after a capture.

    It cuts the graph behind every Tensor the step left alive with an array
    it made (each ``p.grad`` is a node whose inputs reach back through the
    whole backward pass): replays rebuild no graph, so those links would only
    keep every intermediate buffer out of the arena.  And it returns
    ``(weakref, NDArray)`` for every Tensor holding an array made before the
    capture: a replay checks that each still holds it (``_Plan.check``)."""
    made = {id(b) for b, kind in zip(cap.buffers, cap.kinds) if kind == "new"}
    earlier = {id(b) for b, kind in zip(cap.buffers, cap.kinds) if kind == "ext"}
    owners = []
    gc.collect()
    for obj in gc.get_objects():
        # type(), not isinstance(): proxies (lazy modules) answer __class__ with side effects
        if issubclass(type(obj), Value):
            arr = getattr(obj, "cached_data", None)   # a half-built node may have none yet
            if not isinstance(arr, NDArray):
                continue
            if id(arr._handle) in earlier:
                owners.append((weakref.ref(obj), arr))
            elif obj.op is not None and id(arr._handle) in made:
                obj.op, obj.inputs = None, []
    return owners


def jit(fn: Optional[Callable] = None, *, native: bool = True):
    """Compile ``fn`` (a training or inference step) for capture and replay.

    Usable as ``ndl.jit(fn)`` or ``@ndl.jit`` / ``@ndl.jit(native=False)``.
    Per argument signature the first call runs eagerly, the second captures
    the backend calls, later calls replay them without Python per op; the
    results are fresh Tensors (copies of the step's outputs, without a graph).
    ``native=False`` replays from Python even where the backend has a native
    loop.  See docs/jit.md."""
    if fn is None:
        return lambda f: JitFunction(f, native=native)
    if not callable(fn):
        raise JitError(f"needle.jit: expected a function, got {type(fn).__name__}")
    return JitFunction(fn, native=native)
