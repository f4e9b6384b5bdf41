"""Recording a step's backend calls for ``needle.jit`` (the capture half).

While a :class:`Capture` is active, every kernel a backend is asked to run
goes through a recorder: the backend object's methods are shadowed by
instance attributes for the duration (all arrays of a device share that one
object, so arrays made before the capture are recorded too), the device's
cached op-override table is swapped for recorders, and other devices'
tables are resolved again through their shadowed methods.  A recorder runs
the real kernel -- the capture call computes real values -- and appends
``(name, args)`` with every buffer replaced by a :class:`Slot` index.
Kernels that call other kernels of their backend (the protocol's default
methods) are recorded once, at the outermost call.

Lower layers ask :func:`capturing` to pick replay-safe paths (a device
random kernel for dropout, device-side labels for the loss, in-place
optimizer updates), and the optimizers declare what changes between
replays: :func:`dynamic` scalars (the learning rate), :func:`on_replay`
callbacks (Adam's step count), :func:`guard` conditions (a group frozen at
lr 0) and :func:`state_moved` (state rebound to a new array).  Outside a
capture each of these is a cheap no-op, so the code that calls them stays
the eager code.

The replay half (planning, the arena, running) is ``needle.replay``.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from threading import get_ident
from typing import Callable, Optional

from ..errors import JitError
from ..protocol import OP_OVERRIDE_SIGNATURES, ReplayScalar, kernel_names

__all__ = ["Capture", "capturing", "keeps_buffers", "keep_buffers", "dynamic", "on_replay", "guard",
           "state_moved", "user_line"]

#: the capture in progress, or None (one at a time: a jitted function called
#: while another is being captured runs inline and is recorded with it)
_ACTIVE: Optional["Capture"] = None

_MISSING = object()
# backend methods that are not kernels: never shadowed
_NOT_KERNELS = frozenset({"Array", "from_numpy", "to_numpy"})


#: depth of keep_buffers() blocks: eager steps that must leave state in place
_KEEP = 0


@contextlib.contextmanager
def keep_buffers():
    """An eager step run beside captured ones (a signature that could not be
    captured): state the step rebinds is copied back into its buffer at once
    and optimizers update in place, so the captures keep reading live state."""
    global _KEEP
    _KEEP += 1
    try:
        yield
    finally:
        _KEEP -= 1


def keeps_buffers() -> bool:
    """True while capturing or inside :func:`keep_buffers`: state must stay in
    its buffers (optimizers update in place)."""
    return _ACTIVE is not None or _KEEP > 0


def capturing() -> bool:
    """True while ``needle.jit`` records a step."""
    return _ACTIVE is not None


def dynamic(value: float, fn: Callable[[], float]):
    """``value``, marked during a capture as a scalar that ``fn()`` gives anew
    before every replay (e.g. ``lambda: group["lr"]``); ``value`` unchanged
    otherwise."""
    cap = _ACTIVE
    if cap is None:
        return value
    cap.scalar_fns.append(fn)
    return ReplayScalar(value, len(cap.scalar_fns) - 1)


def on_replay(fn: Callable[[], object], after: bool = False) -> None:
    """During a capture: call ``fn()`` before every replay (``after=True``:
    after it) -- the Python side effects of the recorded step, such as
    Adam's ``t += 1`` or a scheduler's ``step()``.  A no-op otherwise."""
    cap = _ACTIVE
    if cap is not None:
        (cap.after if after else cap.before).append(fn)


def guard(predicate: Callable[[], bool]) -> None:
    """During a capture: replay only while ``predicate()`` holds; when it
    stops holding the step is captured again (a hyper-parameter that decides
    which kernels run, such as a group frozen at lr 0)."""
    cap = _ACTIVE
    if cap is not None:
        cap.guards.append(predicate)


def state_moved(old, new, rebind: Callable[[object], None]) -> None:
    """During a capture: a piece of state held in ``old`` (an NDArray) now
    lives in ``new``, and ``rebind(arr)`` points its owner at ``arr``.  The
    capture copies the final value back into ``old``'s buffer and rebinds the
    owner to ``old``, so the state keeps one buffer across replays (course
    code assigns new arrays: ``p.data = p.data - lr * grad``)."""
    if old is None or old._handle is new._handle:
        return
    cap = _ACTIVE
    if cap is not None:
        cap.note_move(old, new, rebind)
    elif _KEEP and old.shape == new.shape:
        _write_back(old, new, rebind)


def _write_back(old, new, rebind) -> None:
    """The state's new value copied into its first buffer, its owner pointed
    at that buffer again."""
    if old.size:
        old[tuple(slice(None) for _ in old.shape)] = new
    rebind(old)


def _is_needle(frame) -> bool:
    name = frame.f_globals.get("__name__", "")
    return name == "needle" or name.startswith(("needle.", "needle_"))


def user_line() -> str:
    """``file:line`` of the innermost frame outside needle (the user's code)."""
    frame = sys._getframe(1)
    while frame is not None and _is_needle(frame):
        frame = frame.f_back
    return "<unknown>" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _user_call() -> str:
    """The needle function the user's code called (``Tensor.__float__``,
    ``Tensor.numpy``, ``Embedding.forward`` ...) and that line, for errors."""
    frame, entry = sys._getframe(1), None
    while frame is not None and _is_needle(frame):
        entry, frame = frame, frame.f_back
    where = "<unknown>" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"
    if entry is None:
        return where
    code = entry.f_code
    return f"{getattr(code, 'co_qualname', code.co_name)} called at {where}"


def _stale_twins(be, device) -> list:
    """Earlier backend objects of ``be``'s class that arrays on ``device``
    still hold: forgetting devices (``discovery.reset``, ``register_backend``)
    gives a device a new backend object, but arrays made before -- a module's
    cache, a model built earlier -- keep calling the old one, whose kernels a
    capture must record as well."""
    from .ndarray import NDArray   # the same layer; imported late, capture.py loads first
    twins = {}
    for obj in gc.get_objects():
        if type(obj) is NDArray:
            other = obj._be
            if other is not be and type(other) is type(be) and obj._device == device:
                twins[id(other)] = other
    return list(twins.values())


class Slot:
    """A buffer's index in a :class:`Capture`'s ``buffers``."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __repr__(self):
        return f"Slot({self.index})"


class Capture:
    """The calls of one captured step and the buffers they touch.

    ``calls``: ``(name, args)`` in order, buffers as :class:`Slot`;
    ``buffers``: each buffer once; ``kinds``: per buffer ``"input"`` (a static
    input), ``"new"`` (allocated during the capture) or ``"ext"`` (allocated
    before it: parameters, optimizer state, constants)."""

    def __init__(self, backend, device):
        self.backend, self.device = backend, device
        self.calls: list = []
        self.buffers: list = []
        self.kinds: list = []
        self._index: dict = {}            # id(buffer) -> slot index (buffers are kept alive)
        self.scalar_fns: list = []
        self.before: list = []
        self.after: list = []
        self.guards: list = []
        self.moves: dict = {}             # id(owner's first array) -> [old, new, rebind]
        self._depth = 0
        self._patched: list = []          # (object, attribute, previous value or _MISSING)
        self._tables: list = []           # (device, previous override table)
        self._buffer_type = None
        self._thread = get_ident()        # only this thread's calls are the step's
        self.kernels: dict = {}           # name -> the real kernel each recorded call ran

    # -- buffers -------------------------------------------------------------
    def slot(self, buf, kind: str = "ext") -> int:
        i = self._index.get(id(buf))
        if i is None:
            i = self._index[id(buf)] = len(self.buffers)
            self.buffers.append(buf)
            self.kinds.append(kind)
        return i

    def _convert(self, arg):
        if type(arg) is self._buffer_type:
            return Slot(self.slot(arg))
        if type(arg) is list:
            return [self._convert(a) for a in arg]
        return arg

    def note_move(self, old, new, rebind) -> None:
        for entry in self.moves.values():
            if entry[1] is old:  # the owner moved again: its first array stays the one kept
                entry[1], entry[2] = new, rebind
                return
        self.moves[id(old)] = [old, new, rebind]

    def settle_moves(self) -> None:
        """State rebound during the step goes back to its first buffer (the
        copy is recorded, so every replay does the same)."""
        for old, new, rebind in self.moves.values():
            if old.shape != new.shape:
                raise JitError(f"needle.jit: state of shape {old.shape} was replaced by one of shape "
                               f"{new.shape} in the captured step; its buffer cannot be kept")
            _write_back(old, new, rebind)
        self.moves.clear()

    # -- recorders -----------------------------------------------------------
    def _recorder(self, name: str, real):
        def record(*args):
            # inside another kernel of this backend (recorded with it), or another
            # thread's call (a data loader's upload): runs, unrecorded
            if self._depth or get_ident() != self._thread:
                return real(*args)
            self._depth += 1
            try:
                # the kernel sees plain floats, as on a replay: NumPy treats a float
                # subclass as a float64 array, not as a Python scalar
                real(*[float(a) if type(a) is ReplayScalar else a for a in args])
            finally:
                self._depth -= 1
            self.calls.append((name, tuple(self._convert(a) for a in args)))
        record.__name__ = name
        return record

    def _allocator(self, real):
        def array(*args, **kwargs):
            buf = real(*args, **kwargs)
            if not self._depth and get_ident() == self._thread:
                self.slot(buf, "new")
            return buf
        return array

    def _uploader(self, real):
        def from_numpy(a, out):
            real(a, out)
            if not self._depth and get_ident() == self._thread:
                # host data become a constant of the step, uploaded on every replay
                self.calls.append(("from_numpy", (a.copy(), Slot(self.slot(out)))))
        return from_numpy

    def _host_read(self, backend, real):
        def to_numpy(*args):
            if get_ident() != self._thread:
                return real(*args)
            raise JitError(
                f"needle.jit: a captured step read an array on the host ({_user_call()}: .numpy(), "
                f"float(t), item() or a Python branch on a tensor value reach {backend.name}'s to_numpy); "
                f"a replay runs no Python, so the value would be stale. Return the tensor from the "
                f"function instead (e.g. the loss) and read it after the call")
        return to_numpy

    def _foreign(self, backend, device, real):
        def foreign(*args, **kwargs):
            if get_ident() != self._thread:
                return real(*args, **kwargs)
            raise JitError(f"needle.jit: the captured step uses arrays on {backend.name} as well as on "
                           f"{device} (at {user_line()}); a step runs on one device -- move everything "
                           f"with .to(device) first")
        return foreign

    def _shadow(self, obj, name, value) -> None:
        prev = obj.__dict__.get(name, _MISSING)
        self._patched.append((obj, name, prev))
        obj.__dict__[name] = value

    # -- start / stop --------------------------------------------------------
    def start(self, all_devices) -> None:
        """Shadow the kernels of this capture's backend with recorders, and
        every other live backend's with errors (a step stays on one device)."""
        global _ACTIVE
        if _ACTIVE is not None:
            raise JitError("needle.jit: a capture is already in progress")
        be = self.backend
        if not hasattr(be, "__dict__"):
            raise JitError(f"needle.jit: backend {be.name!r} cannot be captured (its object has no "
                           f"instance dictionary to hold recorders)")
        self._buffer_type = type(be.Array(0))
        names = set(kernel_names()) | set(OP_OVERRIDE_SIGNATURES) | set(be.op_overrides() or {})
        try:
            for dev in all_devices:
                other = dev._mod
                if (other is None or other is be or not hasattr(other, "__dict__")
                        or any(o is other for o, _, _ in self._patched)):
                    continue
                for name in names | {"Array", "from_numpy"}:
                    real = getattr(other, name, None)
                    if callable(real):
                        self._shadow(other, name, self._foreign(other, self.device, real))
            for obj in [be] + _stale_twins(be, self.device):
                for name in names - _NOT_KERNELS:
                    real = getattr(obj, name, None)
                    if callable(real):
                        self.kernels.setdefault(name, real)
                        self._shadow(obj, name, self._recorder(name, real))
                self._shadow(obj, "Array", self._allocator(obj.Array))
                self.kernels.setdefault("from_numpy", obj.from_numpy)
                self._shadow(obj, "from_numpy", self._uploader(obj.from_numpy))
                self._shadow(obj, "to_numpy", self._host_read(obj, obj.to_numpy))
            for dev in all_devices:
                self._tables.append((dev, dev._overrides))
                if dev._mod is be:
                    table = dev._overrides if dev._overrides is not None else dict(be.op_overrides() or {})
                    # an override offered under a name that is no method of the backend
                    # is recorded through its table entry
                    for k, fn in table.items():
                        self.kernels.setdefault(k, fn)
                    dev._overrides = {k: be.__dict__.get(k) or self._recorder(k, fn) for k, fn in table.items()}
                else:
                    # another device's cached table holds its real methods: it is resolved
                    # again, through the errors shadowing them (an override under a name
                    # that is no method of its backend still has to allocate its result,
                    # and Array is shadowed)
                    dev._overrides = None
        except BaseException:
            self.stop()
            raise
        _ACTIVE = self

    def stop(self) -> None:
        """Put every shadowed method and override table back."""
        global _ACTIVE
        for obj, name, prev in reversed(self._patched):
            if prev is _MISSING:
                obj.__dict__.pop(name, None)
            else:
                obj.__dict__[name] = prev
        self._patched.clear()
        for dev, table in reversed(self._tables):
            dev._overrides = table
        self._tables.clear()
        if _ACTIVE is self:
            _ACTIVE = None
