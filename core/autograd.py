"""Reverse-mode automatic differentiation: ``Value``, ``Op``, ``Tensor``.

A ``Tensor`` is a node of a computation graph: a leaf (``op is None``) or the
result of an ``Op`` applied to input Tensors.  Computation is eager: an op's
NDArray result is computed when the node is created (by the one builder,
``Value.make_from_op``).  ``backward()`` walks the graph in reverse
topological order and stores the adjoint of each leaf (and of the output,
and of nodes marked ``retain_grad()``) in ``node.grad``; adjoints
are themselves Tensors built from ops, so they can be differentiated again.

``Tensor``'s operators (``+``, ``@``, ``sum`` ...) are one-liners calling the
op functions of :mod:`needle.ops`.  That package is the layer above this one
(its ops subclass ``TensorOp``), so it hands itself in (:func:`use_ops`)
rather than being imported here; docs/design.md walks through ``a + b``.
"""

from __future__ import annotations

import contextlib
import functools
from _thread import get_ident as _thread_id
import gc
from functools import reduce
from operator import add as _add
from typing import Iterable, List, Optional

import numpy as np

from .backend_ndarray import NDArray, default_device, device as _device_by_name
from .backend_ndarray import capture as _capture
from .backend_ndarray.device import BackendDevice
from .errors import ArgumentTypeError, DeviceMismatchError, ShapeError, UnsupportedDTypeError

__all__ = ["Value", "Op", "TensorOp", "TensorTupleOp", "Tensor", "TensorTuple",
           "find_topo_sort", "topo_sort_dfs", "compute_gradient_of_variables",
           "sum_node_list", "no_grad", "enable_grad", "is_grad_enabled",
           "LAZY_MODE", "KEEP_INTERIOR_GRADS", "TENSOR_COUNTER"]

# Course global: LAZY_MODE delays computation until realize_cached_data().
LAZY_MODE = False

# Course API: ``backward`` stores the adjoint of every node in ``node.grad``.
# An interior adjoint is a graph that usually reaches back to its node
# (d exp(x) = g * exp(x)), so each step's graph then sits in reference cycles
# that only Python's cyclic collector frees (a whole step's activations held
# per step).  False gives PyTorch's rule -- ``.grad`` on leaves, on the tensor
# ``backward`` starts from and on ``retain_grad()`` nodes only -- and the
# graph goes as soon as the last reference to the loss does.  ``needle train``
# and the memory benchmarks set it False; the course default stays True.
KEEP_INTERIOR_GRADS = True



def __getattr__(name):
    # Course global TENSOR_COUNTER: the number of live Values (hw2 checks it
    # to detect graph leaks; garbage in reference cycles counts until the
    # collector frees it).  The collector tracks every Value, so it is
    # counted when read; a per-node counter would cost a Python ``__del__``
    # on every freed node (~0.1 us per op).
    if name == "TENSOR_COUNTER":
        # type(), not isinstance: isinstance may read a proxy's __class__
        return sum(1 for obj in gc.get_objects() if issubclass(type(obj), Value))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Grad mode is per thread, as in PyTorch: ``no_grad()`` in a data-loading or
# serving thread must not switch off recording in the training thread.  The
# set holds the ids of the threads inside ``no_grad()`` (and not inside an
# ``enable_grad()`` nested in it).  It is empty in the common case, so the
# eager fast path's check ``_GRAD_OFF and _thread_id() in _GRAD_OFF`` costs
# one global read (a ``threading.local`` attribute read measured several
# times slower, on every op).
_GRAD_OFF: set = set()


# ---------------------------------------------------------------------- #
# grad mode
# ---------------------------------------------------------------------- #
@contextlib.contextmanager
def no_grad():
    """Context manager: ops inside it record no graph (results are constants).
    Affects the calling thread only."""
    tid = _thread_id()
    was_off = tid in _GRAD_OFF
    _GRAD_OFF.add(tid)
    try:
        yield
    finally:
        if not was_off:
            _GRAD_OFF.discard(tid)


@contextlib.contextmanager
def enable_grad():
    """Context manager re-enabling graph recording inside ``no_grad()`` (this thread)."""
    tid = _thread_id()
    was_off = tid in _GRAD_OFF
    _GRAD_OFF.discard(tid)
    try:
        yield
    finally:
        if was_off:
            _GRAD_OFF.add(tid)


def is_grad_enabled() -> bool:
    """Whether ops in the calling thread record a graph."""
    return not (_GRAD_OFF and _thread_id() in _GRAD_OFF)


# ---------------------------------------------------------------------- #
# ops
# ---------------------------------------------------------------------- #
class Op:
    """An operator: ``compute`` on NDArrays, ``gradient`` built from Tensor ops."""

    def __call__(self, *args):
        raise NotImplementedError()

    def compute(self, *args):
        """Forward on NDArrays (or tuples of NDArrays for tuple inputs)."""
        raise NotImplementedError()

    # An op writes one of the next two: ``gradient``, or -- when an input's
    # adjoint is worth skipping if that input needs none (a data batch's
    # adjoint through a matmul is a full product) -- ``gradient_needed``.
    def gradient(self, out_grad, node):
        """Partial adjoints for each input given ``out_grad`` (the adjoint of
        ``node``).  Returns one Tensor or a tuple, one per input.  Default:
        ``gradient_needed`` with every input needed."""
        if type(self).gradient_needed is Op.gradient_needed:
            raise NotImplementedError(f"{type(self).__name__} defines neither gradient nor gradient_needed")
        return self.gradient_needed(out_grad, node, (True,) * len(node.inputs))

    def gradient_needed(self, out_grad, node, need):
        """Partial adjoints only for the inputs whose ``need`` flag is true
        (None in the other slots); ``backward`` calls it when some input
        requires no gradient.  Default: ``gradient`` (every adjoint)."""
        return self.gradient_as_tuple(out_grad, node)

    def gradient_as_tuple(self, out_grad, node):
        """``gradient`` normalised to a tuple (course API; tests call it)."""
        out = self.gradient(out_grad, node)
        if isinstance(out, tuple):
            return out
        if isinstance(out, list):
            return tuple(out)
        return (out,)


def _check_inputs(op: Op, args) -> None:
    """Raise ArgumentTypeError naming ``op`` for an input that is not a graph
    node (``ops.relu(5)``).  Called only after building the node failed, so
    the per-op hot path pays nothing for it."""
    for i, x in enumerate(args):
        if not isinstance(x, Value):
            from .errors import ArgumentTypeError
            raise ArgumentTypeError(
                f"{type(op).__name__}: input {i} is a {type(x).__name__} ({x!r:.60}), not a Tensor; "
                f"wrap it with needle.Tensor(...) first") from None


class TensorOp(Op):
    """An op whose output is a single Tensor."""

    def __call__(self, *args):
        return Tensor.make_from_op(self, args)


class TensorTupleOp(Op):
    """An op whose output is a TensorTuple."""

    def __call__(self, *args):
        return TensorTuple.make_from_op(self, args)


# ---------------------------------------------------------------------- #
# values and the node builder
# ---------------------------------------------------------------------- #
_object_new = object.__new__


def _set_cached_data(value: "Value", arr) -> None:
    value.cached_data = arr


class Value:
    """A node of the graph: ``op`` applied to ``inputs`` gives ``cached_data``."""

    __slots__ = ("op", "inputs", "cached_data", "requires_grad", "grad", "__dict__", "__weakref__")

    #: set on the instance by ``Tensor.retain_grad()``; read by ``backward``
    _retains_grad = False

    def realize_cached_data(self):
        """The node's array, computing it (and its inputs') if needed."""
        data = self.cached_data
        if data is not None:
            return data
        inputs = [x.cached_data for x in self.inputs]
        if all(x is not None for x in inputs):  # its inputs are computed already
            data = self.cached_data = self.op.compute(*inputs)
            return data
        for node in find_topo_sort([self]):  # lazy mode: compute pending nodes in forward order
            if node.cached_data is None:
                node.cached_data = node.op.compute(*[x.cached_data for x in node.inputs])
        return self.cached_data

    def is_leaf(self) -> bool:
        return self.op is None

    def _init(self, op: Optional[Op], inputs: List["Value"], *, num_outputs: int = 1,
              cached_data=None, requires_grad: Optional[bool] = None):
        """Fill in a node (course signature)."""
        if requires_grad is None:
            requires_grad = any(x.requires_grad for x in inputs)
        self.op = op
        self.inputs = inputs
        self.cached_data = cached_data
        self.requires_grad = requires_grad
        self.grad = None

    @classmethod
    def make_const(cls, data, *, requires_grad: bool = False):
        """A leaf of class ``cls`` holding ``data`` (the array is shared)."""
        node = _object_new(cls)
        node.op, node.inputs, node.cached_data, node.requires_grad = None, [], data, requires_grad
        node.grad = None
        return node

    @classmethod
    def make_from_op(cls, op: Op, inputs):
        """The node ``op(*inputs)`` of class ``cls`` -- the one builder of op
        results.  Eager mode computes it now and keeps the graph edge only
        when an input requires a gradient and grad mode is on; lazy mode
        records the edge and leaves ``cached_data`` to ``realize_cached_data``.
        One- and two-input ops (nearly all) skip the generic list building:
        Python overhead per op dominates small models."""
        try:  # free unless raised (3.11): a non-Tensor input fails on .cached_data
            node = _object_new(cls)
            node.grad = None
            if LAZY_MODE:
                node.op, node.inputs, node.cached_data = op, list(inputs), None
                node.requires_grad = (not (_GRAD_OFF and _thread_id() in _GRAD_OFF)
                                      and any(x.requires_grad for x in inputs))
                return node
            n = len(inputs)
            if n == 2:
                a, b = inputs
                da = a.cached_data
                if da is None:
                    da = a.realize_cached_data()
                db = b.cached_data
                if db is None:
                    db = b.realize_cached_data()
                node.cached_data = op.compute(da, db)
                if (a.requires_grad or b.requires_grad) and not (_GRAD_OFF and _thread_id() in _GRAD_OFF):
                    node.op = op
                    node.inputs = [a, b]
                    node.requires_grad = True
                    return node
            elif n == 1:
                a = inputs[0]
                da = a.cached_data
                if da is None:
                    da = a.realize_cached_data()
                node.cached_data = op.compute(da)
                if a.requires_grad and not (_GRAD_OFF and _thread_id() in _GRAD_OFF):
                    node.op = op
                    node.inputs = [a]
                    node.requires_grad = True
                    return node
            else:
                node.cached_data = op.compute(*[x.realize_cached_data() for x in inputs])
                if not (_GRAD_OFF and _thread_id() in _GRAD_OFF) and any(x.requires_grad for x in inputs):
                    node.op, node.inputs, node.requires_grad = op, list(inputs), True
                    return node
            node.op, node.inputs, node.requires_grad = None, [], False  # a constant: no graph kept
            return node
        except AttributeError:
            _check_inputs(op, inputs)
            raise


# ---------------------------------------------------------------------- #
# Tensor construction helpers
# ---------------------------------------------------------------------- #
_F32, _F64 = np.dtype("float32"), np.dtype("float64")
_DTYPE_CACHE: dict = {}


def _canon_dtype(dtype) -> np.dtype:
    """A dtype argument as a ``numpy.dtype``; bool/int map to float32 because
    backends store floats only (``randb`` returns 0/1 floats)."""
    try:
        return _DTYPE_CACHE[dtype]
    except (KeyError, TypeError):
        pass
    try:
        dt = np.dtype(dtype)
    except TypeError:
        from .errors import UnsupportedDTypeError
        raise UnsupportedDTypeError(f"Tensor: unknown dtype {dtype!r}; use 'float32' or 'float64'") from None
    if dt.kind in "iu":
        # backends store float32/float64 only; an integer dtype silently
        # turned into float32 would change results (issue 18)
        from .errors import UnsupportedDTypeError
        raise UnsupportedDTypeError(
            f"Tensor: dtype {dt.name} is not supported: needle's backends store float32 and float64 "
            f"only; pass dtype='float32' (integers up to 2**24 are exact) or 'float64'")
    if dt.kind == "b":
        dt = _F32  # boolean masks (init.randb, course) are 0/1 float32
    try:
        _DTYPE_CACHE[dtype] = dt
    except TypeError:
        pass
    return dt


def _pick_axes(op: str, axes, axis, dim):
    """The one axes argument of a reduction given the course's ``axes``,
    NumPy's ``axis`` or PyTorch's ``dim`` (at most one of them)."""
    given = [a for a in (axes, axis, dim) if a is not None]
    if len(given) > 1:
        raise TypeError(f"Tensor.{op}: pass only one of axes=, axis= and dim=")
    return given[0] if given else None


def _pick_keep(keepdims, keepdim) -> bool:
    """NumPy's ``keepdims`` or PyTorch's ``keepdim`` (None: not given)."""
    return bool(keepdims if keepdim is None else keepdim)


def _keep(out, shape, axes, op):
    """A reduction's result reshaped with size-1 axes where it reduced (keepdims)."""
    ndim = len(shape)
    if axes is None:
        kept = (1,) * ndim
    else:
        red = {int(a) % ndim for a in ((axes,) if _is_int(axes) else axes)} if ndim else set()
        kept = tuple(1 if i in red else d for i, d in enumerate(shape))
    return out.reshape(kept)


def _looks_like_dtype(arg) -> bool:
    """Whether a positional argument of ``Tensor.to`` names a dtype (not a device)."""
    if isinstance(arg, BackendDevice):
        return False
    if isinstance(arg, (np.dtype, type)):
        return True
    if isinstance(arg, str):
        try:
            np.dtype(arg)
        except TypeError:
            return False
        return True
    return False


def _resolve_device(device):
    if device is None or isinstance(device, BackendDevice):
        return device
    return _device_by_name(device)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer))


def _source_dtype(dt: np.dtype) -> np.dtype:
    """Course rule for ``dtype=None``: float64 stays float64, the rest -> float32."""
    return _F64 if dt == _F64 else _F32


_ACCEPTED = ("a needle Tensor, an NDArray, a NumPy array, a Python number or a nested "
             "list/tuple of numbers")


def _array_from(array, device, dtype) -> NDArray:
    """A new compact NDArray holding a copy of ``array`` (not a Tensor)."""
    if isinstance(array, NDArray):
        dt = array.dtype if dtype is None else dtype
        return NDArray(array, device=device if device is not None else array.device, dtype=dt)
    if isinstance(array, (str, bytes, dict, set)) or array is None:
        raise ArgumentTypeError(f"Tensor: cannot build a tensor from {type(array).__name__}; "
                        f"expected {_ACCEPTED}")
    try:
        host = np.asarray(array)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"Tensor: cannot build a tensor from {type(array).__name__} ({exc}); "
                        f"expected {_ACCEPTED}") from None
    if host.dtype.kind not in "fiub":
        raise ArgumentTypeError(f"Tensor: cannot build a tensor from {type(array).__name__} with "
                        f"element type {host.dtype}; expected {_ACCEPTED}")
    dt = _source_dtype(host.dtype) if dtype is None else dtype
    data = NDArray(host, device=device if device is not None else default_device(), dtype=dt)
    if host.ndim == 0 and data.shape != ():
        data = data.reshape(())  # np.ascontiguousarray makes 0-d arrays 1-d
    return data


# ---------------------------------------------------------------------- #
# Tensor
# ---------------------------------------------------------------------- #
class Tensor(Value):
    """An n-d array that records the ops applied to it for differentiation.

    ``Tensor(array, device=None, dtype=None, requires_grad=True)``: ``array``
    is a Tensor, NDArray, NumPy array, Python number or nested list.  With
    ``dtype=None`` float64 sources stay float64 and everything else becomes
    float32.  From a Tensor with the same device and dtype the array is
    shared; otherwise it is copied.  An explicit integer ``dtype`` raises
    ``UnsupportedDTypeError`` (backends store float32/float64 only);
    ``dtype="bool"`` gives 0/1 float32 (the course's ``init.randb``).

    PyTorch-style additions beside the course API: ``t[...]`` (basic
    indexing, differentiable; ints drop their axis as in NumPy/PyTorch, unlike
    ``NDArray.__getitem__``), element-wise ``== != < <= > >=`` returning
    constant 0/1 float Tensors, ``mean``/``max``/``min``/``argmax``,
    ``sum(axis=, keepdims=)`` / ``sum(dim=, keepdim=)``, ``sqrt``,
    ``abs(t)``, ``.T`` (all axes reversed), ``permute``, ``view``,
    ``to(device, dtype)``, ``len(t)``, iteration over the first axis, and a
    ``repr`` with device, dtype and ``requires_grad``.

    Where that departs from the course's Tensor: ``==``/``!=`` are
    element-wise, not identity -- but hashing stays by identity (dict keys,
    sets and graph bookkeeping are unchanged), a Tensor is still always true,
    and a comparison's own truth value is "all equal" for ``==`` and "any
    differs" for ``!=``, so comparing tuples of batches (hw2) still tells
    differing batches apart.  Code that looks Tensors up in lists with ``in``
    or ``list.index`` now compares values: use ``any(x is t for t in lst)``.
    Where it departs from PyTorch: ``transpose()`` keeps the course meaning
    (swap two axes, default the last two); ``argmax`` and comparisons return
    float Tensors (no integer or bool storage); ``t.max(dim=d)`` returns
    ``(values, indices)`` as in PyTorch but ``t.max(d)`` / ``t.max(axis=d)``
    the values only.
    """

    # numpy must not treat a Tensor as an array-like in ``ndarray * Tensor``:
    # this makes numpy return NotImplemented so our reflected method runs.
    __array_ufunc__ = None

    def __init__(self, array, *, device=None, dtype=None, requires_grad=True, **kwargs):
        device = _resolve_device(device)
        if dtype is not None:
            dtype = _canon_dtype(dtype)
        if isinstance(array, Tensor):
            src = array.realize_cached_data()
            same_dev = device is None or device == src.device
            same_dt = dtype is None or dtype == src.dtype
            if same_dev and same_dt:
                data = src
            else:
                data = NDArray(src, device=src.device if device is None else device,
                               dtype=src.dtype if dtype is None else dtype)
        else:
            data = _array_from(array, device, dtype)
        self.op, self.inputs, self.cached_data = None, [], data
        self.requires_grad, self.grad = bool(requires_grad), None

    @classmethod
    def make_const(cls, data, requires_grad: bool = False):
        """A leaf holding ``data``: an NDArray, or a Tensor whose array is
        shared, or anything ``Tensor()`` accepts (copied)."""
        if isinstance(data, Tensor):
            data = data.realize_cached_data()
        elif not isinstance(data, NDArray):
            data = _array_from(data, None, None)
        return super().make_const(data, requires_grad=requires_grad)

    # -- operators: each is its op function in needle.ops ------------------
    # (``_ops`` is that module, handed in by needle.ops when it loads: the
    # ops are built on this module, so it cannot import them -- see
    # docs/design.md, "Layers")
    def __add__(self, other):
        return _ops.add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return _ops.add(self, -other)

    def __rsub__(self, other):
        return _ops.add(-self, other)

    def __mul__(self, other):
        return _ops.multiply(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return _ops.divide(self, other)

    def __rtruediv__(self, other):
        return _ops.divide(other, self)

    def __pow__(self, other):
        return _ops.power(self, other)

    def __matmul__(self, other):
        """``self @ other`` (NumPy ``matmul`` rules, batched)."""
        return _ops.matmul(self, other)

    matmul = __matmul__

    def __neg__(self):
        return _ops.negate(self)

    def sum(self, axes=None, keepdims=False, *, axis=None, dim=None, keepdim=None):
        """Sum over ``axes`` (course; None: all).  NumPy's ``axis=``/``keepdims=``
        and PyTorch's ``dim=``/``keepdim=`` spellings are accepted too."""
        axes = _pick_axes("sum", axes, axis, dim)
        keepdims = _pick_keep(keepdims, keepdim)
        out = _ops.summation(self, axes)
        return _keep(out, self.shape, axes, "sum") if keepdims else out

    def mean(self, axis=None, keepdims=False, *, axes=None, dim=None, keepdim=None):
        """Mean over ``axis`` (None: all); ``axes``/``dim`` and ``keepdim`` spellings accepted."""
        return _ops.mean(self, _pick_axes("mean", axes, axis, dim), _pick_keep(keepdims, keepdim))

    def max(self, axis=None, keepdims=False, *, axes=None, dim=None, keepdim=None):
        """Maximum over ``axis`` (None: all), differentiable.  With ``dim=``
        (PyTorch's spelling) returns ``(values, indices)`` as ``torch.max`` does."""
        keepdims = _pick_keep(keepdims, keepdim)
        if dim is not None:
            return _ops.MinMaxResult(_ops.max(self, dim, keepdims), self.argmax(dim, keepdims))
        return _ops.max(self, _pick_axes("max", axes, axis, None), keepdims)

    def min(self, axis=None, keepdims=False, *, axes=None, dim=None, keepdim=None):
        """Minimum over ``axis`` (None: all); ``dim=`` as for :meth:`max`."""
        keepdims = _pick_keep(keepdims, keepdim)
        if dim is not None:
            return _ops.MinMaxResult(_ops.min(self, dim, keepdims), (-self).argmax(dim, keepdims))
        return _ops.min(self, _pick_axes("min", axes, axis, None), keepdims)

    def argmax(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Indices of the maxima as a constant float Tensor (no gradient;
        PyTorch returns int64, needle's backends store floats: exact below 2**24)."""
        return _ops.argmax(self, _pick_axes("argmax", None, axis, dim), _pick_keep(keepdims, keepdim))

    def sqrt(self):
        """Element-wise square root (PyTorch-style addition)."""
        return _ops.sqrt(self)

    def __abs__(self):
        """``abs(t)``: element-wise absolute value (PyTorch-style addition)."""
        return _ops.abs(self)

    abs = __abs__

    def permute(self, *dims):
        """Reorder all axes (``torch.permute``); ``transpose`` keeps the
        course's meaning (swap two axes, default the last two)."""
        return _ops.permute(self, dims[0] if len(dims) == 1 and not _is_int(dims[0]) else dims)

    @property
    def T(self) -> "Tensor":
        """All axes reversed (the matrix transpose for 2-D tensors)."""
        n = len(self.shape)
        return self if n < 2 else _ops.permute(self, tuple(range(n - 1, -1, -1)))

    def view(self, *shape):
        """``reshape`` (needle copies a non-compact input rather than failing)."""
        return self.reshape(*shape)

    def to(self, *args, device=None, dtype=None):
        """This tensor on ``device`` (a device or its name) and/or in
        ``dtype`` ('float32', 'float64', ``np.float64``); positional arguments
        may be either, as in PyTorch.  Itself when nothing changes.
        Differentiable: the gradient moves (and casts) back."""
        for arg in args:
            if _looks_like_dtype(arg):
                dtype = arg
            else:
                device = arg
        out = self
        if dtype is not None:
            out = _ops.cast(out, dtype)
        if device is not None:
            out = _ops.to_device(out, device)
        return out

    def __getitem__(self, index):
        """NumPy basic indexing (ints drop their axis, slices with any step,
        ``None``, ``...``); differentiable."""
        return _ops.getitem(self, index)

    def __len__(self) -> int:
        shape = self.shape
        if not shape:
            raise TypeError("len() of a 0-d tensor")
        return shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    # The course's identity semantics (course API): ``==``, ``!=`` and
    # ``bool()`` are object identity and "always true" -- Tensors are dict
    # keys in the graph bookkeeping and hw2 compares tuples of batches with
    # ``!=``.  __bool__ is spelled out only because __len__ would otherwise
    # decide truth.  Element-wise equality is ``a.eq(b)`` / ``a.ne(b)``, as
    # torch.eq; the ordering operators below are element-wise.
    def __bool__(self) -> bool:
        return True

    def eq(self, other):
        """Element-wise ``==`` as a constant 0/1 Tensor (PyTorch's ``Tensor.eq``;
        the ``==`` operator keeps the course's identity meaning)."""
        return _ops.compare(self, other, "eq")

    def ne(self, other):
        """Element-wise ``!=`` as a constant 0/1 Tensor (PyTorch's ``Tensor.ne``)."""
        return _ops.compare(self, other, "ne")

    def __lt__(self, other):
        return _ops.compare(self, other, "lt")

    def __le__(self, other):
        return _ops.compare(self, other, "le")

    def __gt__(self, other):
        return _ops.compare(self, other, "gt")

    def __ge__(self, other):
        return _ops.compare(self, other, "ge")

    def reshape(self, *shape):
        """``reshape(self, shape)``; the shape may also be given unpacked."""
        return _ops.reshape(self, shape[0] if len(shape) == 1 and not _is_int(shape[0]) else shape)

    def broadcast_to(self, shape):
        """Broadcast to ``shape`` (NumPy rules; course op)."""
        return _ops.broadcast_to(self, shape)

    def transpose(self, axes=None):
        """Swap the two axes in ``axes``; None swaps the last two (course
        meaning -- never a full permutation; see :meth:`permute` and ``.T``)."""
        return _ops.transpose(self, axes)

    # -- properties ---------------------------------------------------------
    @property
    def data(self) -> "Tensor":
        """A detached Tensor sharing this Tensor's array."""
        return self.detach()

    @data.setter
    def data(self, value) -> None:
        # shape is not checked (course tests assign a (dim,) tensor to a (1, dim) bias)
        new = value.realize_cached_data() if isinstance(value, Value) else value
        if not isinstance(new, NDArray):
            raise TypeError(f"Tensor.data: expected a Tensor or NDArray, got {type(value).__name__}")
        old = self.realize_cached_data()
        if new.dtype != old.dtype:
            new = new.cast(old.dtype)
        self.cached_data = new
        if _capture._ACTIVE is not None or _capture._KEEP:  # needle.jit: the state keeps its buffer
            _capture.state_moved(old, new, functools.partial(_set_cached_data, self))

    def retain_grad(self) -> "Tensor":
        """Keep this interior node's adjoint in ``.grad`` after ``backward``
        (leaves and the tensor ``backward`` starts from always get one;
        other interior nodes do not, see ``compute_gradient_of_variables``)."""
        self._retains_grad = True
        return self

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    def detach(self) -> "Tensor":
        """A new leaf with the same array and ``requires_grad=False``."""
        return Tensor.make_const(self.realize_cached_data())

    @property
    def shape(self) -> tuple:
        """The shape, a tuple of ints."""
        data = self.cached_data
        return (data if data is not None else self.realize_cached_data()).shape

    @property
    def dtype(self):
        """The element type, a ``numpy.dtype`` (compares equal to 'float32')."""
        data = self.cached_data
        return (data if data is not None else self.realize_cached_data()).dtype

    @property
    def device(self):
        """The device holding the data (``cpu()``, ``cuda()``, ``cpu_numpy()`` ...)."""
        data = self.cached_data
        return (data if data is not None else self.realize_cached_data()).device

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements."""
        return self.realize_cached_data().size

    def numpy(self) -> np.ndarray:
        """A NumPy copy of the data."""
        return self.realize_cached_data().numpy()

    def __array__(self, dtype=None, copy=None):
        out = self.numpy()
        return out if dtype is None else out.astype(dtype)

    def item(self) -> float:
        """The single element as a Python float."""
        arr = self.numpy()
        if arr.size != 1:
            raise ShapeError(f"Tensor.item: tensor of shape {arr.shape} has {arr.size} elements, need 1")
        return arr.reshape(()).item()

    def __repr__(self) -> str:
        data = self.realize_cached_data()
        values = np.array2string(data.numpy(), separator=", ", prefix="needle.Tensor(")
        return (f"needle.Tensor({values}, device={data.device}, dtype={data.dtype.name}, "
                f"requires_grad={self.requires_grad})")

    def __str__(self) -> str:
        return str(self.realize_cached_data())

    def __float__(self) -> float:
        return float(self.item())

    # -- autodiff -----------------------------------------------------------
    def backward(self, out_grad: Optional["Tensor"] = None) -> None:
        """Reverse-mode AD from this Tensor; ``out_grad`` defaults to ones of
        its shape.  The ``.grad`` of each leaf reached (and of this tensor and of
        nodes marked ``retain_grad()``) is overwritten (never accumulated)."""
        data = self.realize_cached_data()
        if out_grad is None:
            ones = NDArray.make(data.shape, device=data.device, dtype=data.dtype)
            ones.fill(1.0)
            out_grad = Tensor.make_const(ones)
        else:
            out_grad = _checked_out_grad(out_grad, data)
        compute_gradient_of_variables(self, out_grad)


def _checked_out_grad(out_grad, data: NDArray) -> "Tensor":
    """``backward``'s seed gradient: same shape, device and dtype as the output
    (PyTorch refuses the same three mismatches); array-likes are converted."""
    if not isinstance(out_grad, Tensor):
        out_grad = Tensor(out_grad, device=data.device, dtype=data.dtype, requires_grad=False)
    grad = out_grad.realize_cached_data()
    if tuple(grad.shape) != tuple(data.shape):
        raise ShapeError(f"backward: out_grad has shape {tuple(grad.shape)} but the tensor "
                         f"has shape {tuple(data.shape)}; they must match")
    if grad.device != data.device:
        raise DeviceMismatchError(f"backward: out_grad is on {grad.device} but the tensor is on "
                                  f"{data.device}; move it with .to({data.device})")
    if grad.dtype != data.dtype:
        raise UnsupportedDTypeError(f"backward: out_grad has dtype {grad.dtype} but the tensor has "
                                    f"dtype {data.dtype}; they must match")
    return out_grad


class TensorTuple(Value):
    """The output of a tuple op (``split``, ``make_tuple``): a tuple of arrays."""

    def __len__(self) -> int:
        return len(self.realize_cached_data())

    def __getitem__(self, index: int):
        return _ops.tuple_get_item(self, index)

    def tuple(self):
        return tuple(self[i] for i in range(len(self)))

    def __iter__(self):
        return iter(self.tuple())

    def __repr__(self) -> str:
        return "needle.TensorTuple" + str(self.tuple())

    def __str__(self) -> str:
        return self.__repr__()

    def __add__(self, other):
        if not isinstance(other, TensorTuple) or len(self) != len(other):
            raise ShapeError(f"TensorTuple + : need a TensorTuple of the same length "
                             f"({len(self)}), got {type(other).__name__}")
        return _ops.make_tuple(*[self[i] + other[i] for i in range(len(self))])

    def detach(self) -> "TensorTuple":
        return TensorTuple.make_const(self.realize_cached_data())

    @staticmethod
    def sum_adjoints(grads: List["TensorTuple"]) -> "TensorTuple":
        """The sum of a tuple node's partial adjoints (``backward`` calls it);
        the tuple ops know which slots are zero, so they do the summing."""
        return _ops.sum_tuple_adjoints(grads)


#: ``needle.ops``, set by :func:`use_ops` when it loads.  The operator
#: methods above call the op functions through it: this module is the layer
#: below the ops, so it never imports them.
_ops = None


def use_ops(ops_module) -> None:
    """Called once by ``needle.ops``: the op functions Tensor's and
    TensorTuple's operators call (``add``, ``multiply``, ``tuple_get_item`` ...)."""
    global _ops
    _ops = ops_module


# ---------------------------------------------------------------------- #
# graph traversal and reverse mode
# ---------------------------------------------------------------------- #
def find_topo_sort(node_list: Iterable[Value]) -> List[Value]:
    """Nodes reachable from ``node_list`` in forward (post-order DFS) order:
    each node's inputs, visited in order, come before it; each node once."""
    visited: set = set()
    topo_order: List[Value] = []
    for node in node_list:
        topo_sort_dfs(node, visited, topo_order)
    return topo_order


def topo_sort_dfs(node: Value, visited: set, topo_order: List[Value], boundary=frozenset()) -> None:
    """Post-order DFS from ``node`` appending to ``topo_order`` (iterative, so
    graphs deeper than the recursion limit work).  The inputs of nodes in
    ``boundary`` are not walked."""
    if node in visited:
        return
    visited.add(node)
    stack = [(node, iter(() if node in boundary else node.inputs))]
    while stack:
        current, children = stack[-1]
        for child in children:
            if child not in visited:
                visited.add(child)
                stack.append((child, iter(() if child in boundary else child.inputs)))
                break
        else:
            stack.pop()
            topo_order.append(current)


def sum_node_list(node_list: List[Value]) -> Value:
    """Sum of the nodes (course helper; one element is returned as is)."""
    return reduce(_add, node_list)


def compute_gradient_of_variables(output_tensor: Value, out_grad: Value) -> None:
    """Store in ``node.grad`` the adjoint of every node reachable from
    ``output_tensor`` that requires a gradient (course API), given
    ``out_grad`` for the output.  With ``KEEP_INTERIOR_GRADS`` off (PyTorch's
    rule) only leaves, the output and ``retain_grad()`` nodes keep theirs;
    the other interior adjoints are passed on, not stored.  Constants
    (``requires_grad=False``) receive no adjoint, so no work is spent on them.

    Memory, with ``KEEP_INTERIOR_GRADS`` off: the stored gradients are graphs
    (differentiable again), so they keep every node made during this pass.
    Once a made node's array has been consumed -- an interior adjoint passed to its op's ``gradient``, a
    partial adjoint summed, a helper node inside a ``gradient`` -- the array
    is dropped (``cached_data = None``; ``realize_cached_data`` recomputes it
    from the node's inputs should a gradient of a gradient need it), as
    PyTorch frees a node's saved tensors once backward has passed it.  Arrays
    of the forward graph, of constants and of stored gradients are kept."""
    order = find_topo_sort([output_tensor])
    # dropping consumed arrays goes with PyTorch's .grad rule (the course rule
    # keeps every adjoint anyway); lazy nodes are not computed yet: nothing to drop
    release = not LAZY_MODE and not KEEP_INTERIOR_GRADS
    forward = set(order) if release else ()
    pending: dict = {}  # node made by this pass -> partial-adjoint slots not yet consumed
    stored: set = set()  # nodes stored in some .grad: their arrays stay

    def consumed(t):
        n = pending.get(t)
        if n is None:  # a forward node, ``out_grad`` or a constant
            return
        if n > 1:
            pending[t] = n - 1
            return
        del pending[t]
        if t.op is not None and t not in stored:
            t.cached_data = None

    def drop_helpers(g):
        # nodes a ``gradient`` made on its way to the partial ``g``
        # (``g * exp(x)``'s ``exp(x)``): nothing but ``g``'s graph uses them
        stack = list(g.inputs)
        while stack:
            m = stack.pop()
            if (m.op is None or m.cached_data is None or m in forward or m in pending
                    or m in stored):
                continue
            m.cached_data = None
            stack.extend(m.inputs)

    partials = {output_tensor: [out_grad]}
    for node in reversed(order):
        grads = partials.pop(node, None)
        if grads is None:  # cannot happen for nodes reached from the output
            continue
        if len(grads) == 1:
            adjoint = grads[0]
        elif isinstance(node, TensorTuple):
            adjoint = TensorTuple.sum_adjoints(grads)
        else:
            adjoint = sum_node_list(grads)
        op = node.op
        # every node keeps its adjoint (course API) unless KEEP_INTERIOR_GRADS
        # is off: then leaves, the output and retain_grad() nodes only
        keep = KEEP_INTERIOR_GRADS or op is None or node is output_tensor or node._retains_grad
        if keep:
            node.grad = adjoint
            if release:
                stored.add(adjoint)
        if release and len(grads) > 1:
            for g in grads:
                consumed(g)
            drop_helpers(adjoint)  # the summation's own intermediate nodes
            pending[adjoint] = 1
        if op is None:
            # a leaf's adjoint is stored (keep above), so never released: no count to update
            if node._grad_ready_hooks:  # a leaf's adjoint is final here (grad-ready hooks, below)
                _run_grad_ready_hooks(node)
            continue
        inputs = node.inputs
        # inputs that need no gradient (data batches, masks, one-hot labels)
        # get no partial adjoint: ops that can skip computing it do
        # (``gradient_needed``), the rest compute it and it is dropped
        need = [inp.requires_grad for inp in inputs]
        if all(need):
            partial = op.gradient_as_tuple(adjoint, node)
        elif not any(need):
            if release:
                consumed(adjoint)
            continue
        else:
            partial = op.gradient_needed(adjoint, node, need)
        made = []
        for inp, g, wanted in zip(inputs, partial, need):
            if not wanted or g is None:
                continue
            lst = partials.get(inp)
            if lst is None:
                partials[inp] = [g]
            else:
                lst.append(g)
            if release and g not in forward:
                pending[g] = pending.get(g, 0) + 1
                made.append(g)
        if release:
            consumed(adjoint)
            for g in made:
                drop_helpers(g)


def local_vjp(output: Value, inputs, out_grad: Value) -> tuple:
    """Adjoints of ``inputs`` for ``output`` given ``out_grad`` (the adjoint
    of ``output``), built from Tensor ops so they can be differentiated
    again, without writing any ``.grad``.

    Fused ops use it for their higher-order gradients: ``output`` is the op's
    unfused composition applied to the op's own input Tensors, so the fused
    kernel only has to be right to first order.  The walk stops at
    ``inputs``; an input that ``output`` does not depend on gets a zero
    adjoint (``input * 0``, which keeps it a graph node)."""
    boundary = set(inputs)
    order: List[Value] = []
    topo_sort_dfs(output, set(), order, boundary)
    partials = {output: [out_grad]}
    found = {}
    for node in reversed(order):
        grads = partials.pop(node, None)
        if grads is None:
            continue
        adjoint = grads[0] if len(grads) == 1 else sum_node_list(grads)
        if node in boundary:
            found[node] = adjoint
            continue
        if node.op is None:
            continue
        for inp, g in zip(node.inputs, node.op.gradient_as_tuple(adjoint, node)):
            if inp.requires_grad or inp in boundary:
                partials.setdefault(inp, []).append(g)
    return tuple(found[x] if x in found else x * 0.0 for x in inputs)


# ---------------------------------------------------------------------- #
# grad-ready hooks (needle.distributed's DistributedDataParallel)
# ---------------------------------------------------------------------- #
# In reverse topological order every consumer of a leaf comes before it, so
# when ``compute_gradient_of_variables`` reaches a leaf its ``.grad`` is final:
# that is where these hooks run, during ``backward()``, one leaf at a time.
# Data-parallel training starts a leaf's gradient allreduce there, overlapping
# communication with the rest of the backward pass (PyTorch's
# ``register_post_accumulate_grad_hook``).
Value._grad_ready_hooks = None


class _HookHandle:
    """Returned by ``register_post_accumulate_grad_hook``; ``remove()`` undoes it."""

    __slots__ = ("_hooks", "_key")

    def __init__(self, hooks: dict, key: int):
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


def _register_post_accumulate_grad_hook(self, hook) -> _HookHandle:
    """Call ``hook(tensor)`` during ``backward()`` once this leaf's ``.grad``
    is final (after every partial adjoint is summed).  The hook may replace
    ``tensor.grad``.  Only leaves (parameters) have such a moment; returns a
    handle whose ``remove()`` unregisters the hook."""
    if not callable(hook):
        raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got {type(hook).__name__}")
    if self.op is not None:
        raise ValueError("register_post_accumulate_grad_hook: only leaf tensors (op is None) have a final "
                         "gradient during backward; register the hook on the leaf instead")
    hooks = self.__dict__.get("_grad_ready_hooks")
    if hooks is None:
        hooks = self._grad_ready_hooks = {}
    key = max(hooks, default=-1) + 1
    hooks[key] = hook
    return _HookHandle(hooks, key)


def _run_grad_ready_hooks(node: Value) -> None:
    for hook in list(node._grad_ready_hooks.values()):
        hook(node)


Tensor.register_post_accumulate_grad_hook = _register_post_accumulate_grad_hook
