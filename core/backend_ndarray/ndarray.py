"""NDArray: a strided n-d array over a backend buffer.

All view logic lives here -- shapes, strides, offsets, broadcasting, slicing,
permutation -- so a backend only ever sees flat buffers (see
:mod:`needle.protocol`).  Views share their buffer; operations that need
dense data call :meth:`NDArray.compact` first.
"""

from __future__ import annotations

import builtins
import math
import numbers
import operator
import sys
from functools import lru_cache

import numpy as np

from ..errors import (ArgumentTypeError, DeviceMismatchError, OutOfBoundsError, ShapeError,
                      SizeOverflowError, UnsupportedDTypeError)
from ..protocol import ReplayScalar
from .device import (BackendDevice, all_devices, cpu, cpu_numpy, cuda, default_device,
                     device)

__all__ = ["NDArray", "array", "empty", "full", "broadcast_to", "reshape", "maximum", "log",
           "exp", "tanh", "sum", "max", "flip", "pad", "matmul", "AxisError", "normalize_axes", "BackendDevice",
           "cpu", "cuda", "cpu_numpy", "default_device", "all_devices", "device", "prod"]

prod = math.prod
_FLOATS = (np.dtype("float32"), np.dtype("float64"))


class AxisError(ShapeError, IndexError):
    """An axis outside ``[-ndim, ndim)``; for a 0-d array, outside ``[-1, 0]``
    (its one implicit axis, which reductions accept as NumPy and PyTorch do)."""


@lru_cache(maxsize=4096)
def _compact_strides(shape: tuple) -> tuple:
    # memoised: every new array and every is_compact() asks, for the few
    # shapes a model uses over and over
    stride, out = 1, []
    for dim in reversed(shape):
        out.append(stride)
        stride *= dim
    return tuple(reversed(out))


def _is_dense_perm(shape: tuple, strides: tuple) -> bool:
    """Whether ``strides`` lay ``shape`` out densely in some axis order
    (a permutation of a compact array: no gap, no overlap, no broadcast);
    size-1 axes may carry any stride."""
    dims = sorted((st, d) for d, st in zip(shape, strides) if d != 1)
    expect = 1
    for st, d in dims:
        if st != expect:
            return False
        expect *= d
    return True


def _output_list(want, first):
    """One output list of a multi-tensor override (see
    ``NDArray.call_multi_tensor_override``): fresh arrays shaped like
    ``first`` (True), none (False), or the named arrays that fit."""
    if want is True:
        return [x._new(x._shape) for x in first]
    if not want:
        return None
    return [o if (o is not None and o._shape == x._shape and o._device == x._device
                  and o._handle.dtype == x._handle.dtype and o.is_compact())
            else x._new(x._shape) for o, x in zip(want, first)]


def _as_shape(shape, op: str) -> tuple:
    """A shape argument (an int or a sequence of ints) as a tuple, validated:
    no negative dimension, no float, no byte size that overflows."""
    try:
        if isinstance(shape, (numbers.Integral, np.integer)):
            out = (operator.index(shape),)
        else:
            out = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise ArgumentTypeError(f"{op}: shape must be an int or a sequence of ints, got {shape!r}") from None
    if any(s < 0 for s in out):
        raise ShapeError(f"{op}: negative dimension in shape {out}; dimensions must be >= 0")
    _check_size(out, op)
    return out


def _dtype(dtype) -> np.dtype:
    if dtype is None:
        return _FLOATS[0]
    try:
        return np.dtype(dtype)
    except TypeError:
        raise UnsupportedDTypeError(f"NDArray: unknown dtype {dtype!r}; use 'float32' or 'float64'") from None


def normalize_axes(axis, ndim: int, op: str) -> tuple:
    """Axis argument (None: every axis, an int or a sequence) -> sorted tuple
    of non-negative axes; AxisError naming ``op`` when one is out of range or
    repeated.  The one axis normaliser: the ops use it too."""
    if axis is None:
        return tuple(range(ndim))
    try:
        axes = (operator.index(axis),) if isinstance(axis, (numbers.Integral, np.integer)) else \
            tuple(operator.index(a) for a in axis)
    except TypeError:
        raise ArgumentTypeError(f"{op}: axis must be an int, a sequence of ints or None, got {axis!r}") from None
    # a 0-d array has one implicit axis, 0 or -1, as in NumPy's reductions and PyTorch
    n = builtins.max(ndim, 1)
    out = []
    for a in axes:
        if not -n <= a < n:
            raise AxisError(f"{op}: axis {a} is out of range for an array of {ndim} dimension(s); "
                            f"valid axes are {-n}..{n - 1}")
        a %= n
        if a in out:
            raise AxisError(f"{op}: repeated axis {a} in {axes}")
        out.append(a)
    return tuple(sorted(out))


def _broadcast_shapes(s1: tuple, s2: tuple, op: str) -> tuple:
    n = builtins.max(len(s1), len(s2))
    a, b = (1,) * (n - len(s1)) + s1, (1,) * (n - len(s2)) + s2
    out = []
    for x, y in zip(a, b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ShapeError(f"{op}: shapes {s1} and {s2} cannot be broadcast together")
    return tuple(out)


class NDArray:
    """An n-d array: ``shape``/``strides``/``offset`` over a backend buffer.

    ``NDArray(other, device=None, dtype=None)`` copies ``other`` (an NDArray,
    a NumPy array or anything ``np.array`` accepts) onto ``device`` (default:
    the default device).  The dtype is float32 unless ``dtype`` is given or
    ``other`` is an NDArray (whose dtype is kept).
    """

    __slots__ = ("_shape", "_strides", "_offset", "_device", "_handle", "_be")

    def __init__(self, other, device=None, dtype=None):
        if isinstance(other, NDArray):
            dev = other._device if device is None else _resolve(device)
            dt = other.dtype if dtype is None else _dtype(dtype)
            src = other.to(dev)
            if src is other or src.dtype != dt:
                src = src.cast(dt) if src.dtype != dt else src._copy()
            self._init(src)
            return
        dev = default_device() if device is None else _resolve(device)
        dt = _dtype(dtype)
        if other is None:  # np.asarray(None) is a NaN: never what the caller meant
            raise ArgumentTypeError("NDArray: cannot build an array from NoneType; expected an array, "
                                    "a number or a nested list of numbers")
        if isinstance(other, np.ndarray) and other.dtype == dt and other.flags.c_contiguous:
            host = other
        else:
            try:
                host = np.asarray(other, dtype=dt, order="C")  # keeps 0-d arrays 0-d
            except (TypeError, ValueError) as exc:
                raise ArgumentTypeError(f"NDArray: cannot build an array from {type(other).__name__}: "
                                        f"{exc}") from None
        arr = NDArray.make(host.shape, device=dev, dtype=dt)
        if host.size:
            arr._be.from_numpy(host.reshape(-1), arr._handle)
        self._init(arr)

    def _init(self, other: "NDArray") -> None:
        self._shape = other._shape
        self._strides = other._strides
        self._offset = other._offset
        self._device = other._device
        self._handle = other._handle
        self._be = other._be

    # ------------------------------------------------------------------ #
    # construction
    # ------------------------------------------------------------------ #
    @staticmethod
    def compact_strides(shape) -> tuple:
        """Row-major strides (in elements) of a dense array of ``shape``."""
        return _compact_strides(tuple(shape))

    @staticmethod
    def make(shape, strides=None, device=None, handle=None, offset=0, dtype=None):
        """A new array; allocates a buffer when ``handle`` is None, else a view
        of ``handle`` (validated to stay inside it)."""
        arr = object.__new__(NDArray)
        arr._shape = shape = tuple(shape)
        arr._strides = _compact_strides(shape) if strides is None else tuple(strides)
        arr._offset = offset
        dev = default_device() if device is None else _resolve(device)
        arr._device = dev
        be = arr._be = dev.require()
        if handle is None:
            arr._handle = be.Array(_check_size(shape, "NDArray.make"), _dtype(dtype))
            if strides is not None or offset:  # custom layouts must fit the new buffer too
                _check_view(shape, arr._strides, offset, arr._handle.size, "NDArray.make")
        else:
            _check_view(shape, arr._strides, offset, handle.size, "NDArray.make")
            arr._handle = handle
        return arr

    def _view(self, shape, strides, offset) -> "NDArray":
        arr = object.__new__(type(self)) if type(self) is not NDArray else object.__new__(NDArray)
        arr._shape, arr._strides, arr._offset = shape, strides, offset
        arr._device, arr._handle, arr._be = self._device, self._handle, self._be
        return arr

    @staticmethod
    def call_op_override(name: str, inputs, out_shape, *args):
        """Run the backend's fused kernel for the op ``name`` (an op override,
        see ``needle.protocol.OP_OVERRIDE_SIGNATURES``) and return its result,
        or None when the device of ``inputs[0]`` has no such override.

        The inputs are compacted (and must share a device and dtype) and a
        compact ``out`` of ``out_shape`` is allocated; the kernel is called as
        ``kernel(*input buffers, out buffer, *args)``, or not at all when
        ``out`` is empty.  The one place an op hands buffers to a backend."""
        first = inputs[0]
        kernel = first._device.op_override(name)
        if kernel is None:
            return None
        buffers = [x.compact()._handle for x in inputs]
        out = first._new(tuple(out_shape))
        if out._handle.size:
            kernel(*buffers, out._handle, *args)
        return out

    # issue 14 fused ops: multi-tensor optimizer steps
    @staticmethod
    def call_multi_tensor_override(name: str, input_lists, outputs, *args):
        """Run a multi-tensor op override (``sgd_step``, ``adam_step``: one
        backend call over many arrays) and return its output lists, or None
        when it is not offered: the device of the first array has no such
        override, or the arrays do not all share that device, the dtype and,
        list by list, the shapes of ``input_lists[0]``.

        ``input_lists``: lists of NDArrays (None for a list the call leaves
        out); ``outputs``: one entry per output list, True to allocate compact
        arrays shaped like ``input_lists[0]``, False to pass None, or a list
        naming for each element an array to write the result into (the
        element-wise kernels allow it to be one of the inputs) or None to
        allocate -- a named array must be compact and match the element's
        shape, dtype and device, else one is allocated.  The kernel is called
        as ``kernel(*input buffer lists, *output buffer lists, *args)``."""
        first = input_lists[0]
        if not first:
            return [[] if want else None for want in outputs]
        dev, dtype = first[0]._device, first[0].dtype
        kernel = dev.op_override(name)
        if kernel is None:
            return None
        shapes = [x._shape for x in first]
        for lst in input_lists:
            if lst is None:
                continue
            if len(lst) != len(first):
                return None
            for x, shape in zip(lst, shapes):
                if x._device != dev or x.dtype != dtype or x._shape != shape:
                    return None
        bufs = [None if lst is None else [x.compact()._handle for x in lst] for lst in input_lists]
        outs = [_output_list(want, first) for want in outputs]
        kernel(*bufs, *[None if o is None else [x._handle for x in o] for o in outs], *args)
        return outs

    def unshared(self, known_refs: int) -> bool:
        """Whether nothing but the caller's ``known_refs`` references holds
        this array and nothing else holds its buffer (no other NDArray or
        view, no NumPy export), and it is compact: then no one can tell if
        it is overwritten in place.  An optimizer step uses this to update a
        parameter's own buffer (as PyTorch's do) only where the course's
        out-of-place semantics cannot be observed."""
        # getrefcount counts its own argument; a method call adds ``self``
        return (sys.getrefcount(self) == known_refs + 2 and sys.getrefcount(self._handle) == 2
                and self.is_compact())

    def _new(self, shape, dtype=None) -> "NDArray":
        """Uninitialised compact array on this device."""
        arr = object.__new__(NDArray)
        arr._shape = shape
        arr._strides = _compact_strides(shape)
        arr._offset = 0
        arr._device, arr._be = self._device, self._be
        arr._handle = self._be.Array(prod(shape), self._handle.dtype if dtype is None else dtype)
        return arr

    # ------------------------------------------------------------------ #
    # properties
    # ------------------------------------------------------------------ #
    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def strides(self) -> tuple:
        return self._strides

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def device(self) -> BackendDevice:
        return self._device

    @property
    def dtype(self) -> np.dtype:
        return self._handle.dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return prod(self._shape)

    def __len__(self) -> int:
        if not self._shape:
            raise ArgumentTypeError("len() of a 0-d NDArray (shape ()): it has no first axis")
        return self._shape[0]

    def __repr__(self) -> str:
        return f"NDArray({self.numpy()}, device={self._device}, dtype={self.dtype.name})"

    def __str__(self) -> str:
        return str(self.numpy())

    # ------------------------------------------------------------------ #
    # conversion
    # ------------------------------------------------------------------ #
    def numpy(self) -> np.ndarray:
        """A NumPy copy of the array."""
        if self.size == 0:
            return np.zeros(self._shape, dtype=self.dtype)
        return np.array(self._be.to_numpy(self._handle, self._shape, self._strides, self._offset),
                        copy=True).reshape(self._shape)

    def __array__(self, dtype=None, copy=None):
        out = self.numpy()
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        """A NumPy copy in ``dtype`` (course tests call this on cached data)."""
        return self.numpy().astype(dtype)

    def cast(self, dtype) -> "NDArray":
        """This array converted to ``dtype`` on the same device (self if equal)."""
        dt = _dtype(dtype)
        if dt == self.dtype:
            return self
        self._be.check_dtype(dt, "cast")
        return NDArray(self.numpy().astype(dt), device=self._device, dtype=dt)

    def to(self, device) -> "NDArray":
        """This array on ``device`` (self if it is already there)."""
        dev = _resolve(device)
        if dev == self._device:
            return self
        return NDArray(self.numpy(), device=dev, dtype=self.dtype)

    def fill(self, value) -> None:
        """Set every element to ``value`` in place (through views too)."""
        if not isinstance(value, (numbers.Real, np.generic)) or isinstance(value, np.flexible):
            raise ArgumentTypeError(f"fill: value must be a real number, got {type(value).__name__} {value!r}")
        if self.is_compact():
            self._be.fill(self._handle, float(value))
        else:
            self[tuple(slice(None) for _ in self._shape)] = value

    # ------------------------------------------------------------------ #
    # interop: host / GPU memory for libraries such as MPI and NCCL (needle.distributed)
    # ------------------------------------------------------------------ #
    def host_view(self):
        """A NumPy array sharing this compact array's memory when its backend
        keeps buffers in host memory (``Backend.host_memory``), else None.
        Writes through the view change the array, and the view keeps the
        buffer alive.  For zero-copy exchange with host libraries (MPI)."""
        if not getattr(self._be, "host_memory", False) or not self.is_compact():
            return None
        return np.asarray(_HostBuffer(self._handle, self._shape))

    @property
    def __cuda_array_interface__(self) -> dict:
        """CUDA Array Interface (v3) of a compact array held in GPU memory, so
        a library (NCCL through nccl4py) reads and writes it in place.  Any
        other array raises AttributeError, so ``hasattr`` is False for it.
        The caller orders work with the device (``device.synchronize()``):
        the interface names no stream."""
        handle = self._handle
        if getattr(handle, "device_index", None) is None or not hasattr(handle, "ptr"):
            raise AttributeError(f"__cuda_array_interface__: the array on {self._device} is not in GPU memory")
        if not self.is_compact():
            raise AttributeError("__cuda_array_interface__: the array is a strided view; compact() it first")
        return {"shape": tuple(self._shape), "typestr": self.dtype.str, "data": (int(handle.ptr()), False),
                "strides": None, "version": 3, "stream": None}

    # ------------------------------------------------------------------ #
    # views
    # ------------------------------------------------------------------ #
    def is_compact(self) -> bool:
        """Dense row-major with no offset, covering the whole buffer."""
        return (self._strides == _compact_strides(self._shape)
                and prod(self._shape) == self._handle.size)

    def compact(self) -> "NDArray":
        """Self when compact, else a compact copy -- or, when only the strides
        of size-1 axes differ from row-major (``x[:, None]``-style views, a
        1x1 feature map seen as NCHW), a row-major view of the same buffer."""
        if self.is_compact():
            return self
        if not self._offset and prod(self._shape) == self._handle.size:
            canon = _compact_strides(self._shape)
            if all(d == 1 or st == c for d, st, c in zip(self._shape, self._strides, canon)):
                return self._view(self._shape, canon, 0)
        return self._copy()

    def _copy(self) -> "NDArray":
        """A compact copy holding exactly the same values (``self + 0.0``
        would turn -0.0 into +0.0), even when self is compact."""
        out = self._new(self._shape)
        if out._handle.size:
            self._be.compact(self._handle, out._handle, self._shape, self._strides, self._offset)
        return out

    def as_strided(self, shape, strides) -> "NDArray":
        """A view with the given shape and strides (same buffer and offset)."""
        shape, strides = _as_shape(shape, "as_strided"), tuple(int(s) for s in strides)
        if len(shape) != len(strides):
            raise ShapeError(f"as_strided: shape {shape} and strides {strides} differ in length")
        _check_view(shape, strides, self._offset, self._handle.size, "as_strided")
        return self._view(shape, strides, self._offset)

    @property
    def flat(self) -> "NDArray":
        return self.reshape((self.size,))

    def reshape(self, new_shape) -> "NDArray":
        """A view with a new shape of the same size (one dimension may be -1).

        The array must be compact; otherwise a ShapeError asks for
        ``.compact()`` first (the Tensor-level reshape op does that)."""
        try:  # ints only, as NumPy: int() would let a float size through (6.0 -> 6, 6.5 -> 6)
            shape = tuple(operator.index(s) for s in
                          ((new_shape,) if isinstance(new_shape, numbers.Integral) else new_shape))
        except TypeError:
            raise ArgumentTypeError(f"reshape: shape must be an int or a sequence of ints, got {new_shape!r}") from None
        if -1 in shape:
            known = prod(s for s in shape if s != -1)
            if shape.count(-1) > 1 or known == 0 or self.size % known:
                raise ShapeError(f"reshape: cannot reshape array of shape {self._shape} into {shape}")
            shape = tuple(self.size // known if s == -1 else s for s in shape)
        if prod(shape) != self.size or any(s < 0 for s in shape):
            raise ShapeError(f"reshape: cannot reshape array of size {self.size} (shape {self._shape}) "
                             f"into shape {shape} (size {prod(shape)})")
        if not self.is_compact():
            raise ShapeError(f"reshape: array of shape {self._shape} with strides {self._strides} "
                             f"is not compact; call .compact() first")
        return self._view(shape, _compact_strides(shape), self._offset)

    def permute(self, new_axes) -> "NDArray":
        """A view with the axes reordered: axis i of the result is ``new_axes[i]``."""
        n = self.ndim
        try:
            axes = tuple(operator.index(a) for a in new_axes)
        except TypeError:
            raise ArgumentTypeError(f"permute: axes must be integers, got {new_axes!r}") from None
        # range first: a bare ``% ndim`` would turn axis 5 of a 2-d array into axis 1
        if any(not -n <= a < n for a in axes):
            raise AxisError(f"permute: {tuple(new_axes)} has an axis out of range for the {n} axes "
                            f"of shape {self._shape}")
        axes = tuple(a % n for a in axes)
        if sorted(axes) != list(range(n)):
            raise AxisError(f"permute: {tuple(new_axes)} is not a permutation of the {self.ndim} axes "
                            f"of shape {self._shape}")
        return self._view(tuple(self._shape[a] for a in axes),
                          tuple(self._strides[a] for a in axes), self._offset)

    def broadcast_to(self, new_shape) -> "NDArray":
        """A view broadcast to ``new_shape`` (NumPy rules; new leading axes allowed)."""
        new_shape = _as_shape(new_shape, "broadcast_to")
        if new_shape == self._shape:
            return self
        extra = len(new_shape) - self.ndim
        if extra < 0:
            raise ShapeError(f"broadcast_to: cannot broadcast shape {self._shape} to {new_shape} "
                             f"(fewer dimensions)")
        strides = [0] * extra
        for dim, new, st in zip(self._shape, new_shape[extra:], self._strides):
            if dim == new:
                strides.append(st)
            elif dim == 1:
                strides.append(0)
            else:
                raise ShapeError(f"broadcast_to: cannot broadcast shape {self._shape} to {new_shape}; "
                                 f"each axis must match or be 1")
        return self._view(new_shape, tuple(strides), self._offset)

    # ------------------------------------------------------------------ #
    # indexing
    # ------------------------------------------------------------------ #
    def process_slice(self, sl, dim):
        """An explicit ``slice(start, stop, step)`` with non-negative bounds
        clamped to ``self.shape[dim]``: ``dim`` is the AXIS index, as in the
        course's NDArray (hw3 calls ``self.process_slice(s, i)``); step must be
        positive."""
        if not isinstance(dim, (numbers.Integral, np.integer)) or not -self.ndim <= int(dim) < self.ndim:
            raise AxisError(f"process_slice: axis {dim!r} is out of range for an array of "
                            f"{self.ndim} dimension(s) (shape {self._shape})")
        if not isinstance(sl, slice):
            raise ArgumentTypeError(f"process_slice: expected a slice, got {type(sl).__name__}")
        return _explicit_slice(sl, self._shape[int(dim)], "process_slice")

    def _index(self, idxs, op):
        if not isinstance(idxs, tuple):
            idxs = (idxs,)
        if len(idxs) > self.ndim:
            raise OutOfBoundsError(f"{op}: {len(idxs)} indices for an array of {self.ndim} dimension(s)")
        idxs = idxs + (slice(None),) * (self.ndim - len(idxs))
        shape, strides, offset = [], [], self._offset
        for axis, (idx, dim, st) in enumerate(zip(idxs, self._shape, self._strides)):
            if isinstance(idx, slice):
                sl = _explicit_slice(idx, dim, op)
            elif isinstance(idx, (numbers.Integral, np.integer)):
                k = int(idx)
                if not -dim <= k < dim:
                    raise OutOfBoundsError(f"{op}: index {k} is out of bounds for axis {axis} with size {dim}; "
                                           f"valid: {-dim}..{dim - 1}")
                k %= dim
                sl = slice(k, k + 1, 1)
            else:
                raise ArgumentTypeError(f"{op}: only integers and slices are valid indices, got "
                                        f"{type(idx).__name__} {idx!r}")
            n = builtins.max(0, -(-(sl.stop - sl.start) // sl.step))
            shape.append(n)
            strides.append(st * sl.step)
            if n:
                offset += sl.start * st
        return self._view(tuple(shape), tuple(strides), offset)

    def __getitem__(self, idxs) -> "NDArray":
        """A view; an integer index keeps its axis (``A[2, 2]`` has shape (1, 1))."""
        return self._index(idxs, "__getitem__")

    def __setitem__(self, idxs, other) -> None:
        """Write an array with the same number of elements, or a scalar, into
        the indexed view, in place."""
        view = self._index(idxs, "__setitem__")
        n = view.size
        if isinstance(other, NDArray) or isinstance(other, np.ndarray):
            if isinstance(other, np.ndarray):
                other = NDArray(other, device=self._device, dtype=self.dtype)
            elif other._device != self._device:
                raise DeviceMismatchError(f"__setitem__: value on {other._device}, array on {self._device}")
            if other.size != n:
                raise ShapeError(f"__setitem__: cannot assign {other.size} elements (shape {other.shape}) "
                                 f"to a view of shape {view.shape} ({n} elements)")
            if not n:
                return
            shared = [ax for ax, (d, st) in enumerate(zip(view._shape, view._strides)) if st == 0 and d > 1]
            if shared:  # the protocol's ewise_setitem never gets a stride-0 axis
                raise ShapeError(f"__setitem__: cannot write an array through a broadcast view (stride 0 "
                                 f"on axis {shared[0]} of shape {view._shape}); compact() it first")
            src = other.cast(self.dtype).compact()
            self._be.ewise_setitem(src._handle, self._handle, view._shape, view._strides, view._offset)
        else:
            if not isinstance(other, (numbers.Number, np.generic)):
                raise ArgumentTypeError(f"__setitem__: value must be an NDArray, a NumPy array or a number, "
                                f"got {type(other).__name__}")
            if n:
                self._be.scalar_setitem(n, float(other), self._handle, view._shape,
                                        view._strides, view._offset)

    # ------------------------------------------------------------------ #
    # element-wise
    # ------------------------------------------------------------------ #
    def _operands(self, other, op):
        """Two operands of one shape, dtype and device: views (a broadcast is
        a stride-0 view), not compacted -- the kernel reads them in place."""
        if other._device is not self._device and other._device != self._device:
            raise DeviceMismatchError(f"{op}: operands on different devices: {self._device} and "
                                      f"{other._device}; move one with .to(device)")
        a, b = self, other
        if a._shape != b._shape:
            shape = _broadcast_shapes(a._shape, b._shape, op)
            a, b = a.broadcast_to(shape), b.broadcast_to(shape)
        if a._handle.dtype != b._handle.dtype:
            dt = np.promote_types(a.dtype, b.dtype)
            a, b = a.cast(dt), b.cast(dt)
        return a, b

    def _binary_kernel(self, other, kernel: str, op: str) -> "NDArray":
        """``kernel(self, other)`` into a new compact array: compact operands
        go to the compact kernel, any others (broadcast, transposed, sliced)
        to ``ewise_strided`` as they are."""
        h, oh = self._handle, other._handle
        if (other._device is self._device and other._shape == self._shape and oh.dtype == h.dtype
                and not self._offset and not other._offset and other._strides == self._strides
                and oh.size == h.size and (self.is_compact() or self._whole_dense())):
            # two whole dense buffers of one shape and memory order (most
            # activations, channels-last ones too): no broadcast, cast or
            # stride work -- a third of a 2^16 add's time went to the general
            # path's checks; the result keeps the operands' order
            out = self._like()
            if h.size:
                getattr(self._be, kernel)(h, oh, out._handle)
            return out
        a, b = self._operands(other, op)
        out = a._new(a._shape)
        if out._handle.size:
            st, n = out._strides, out._handle.size  # both operands whole dense buffers?
            if (a._strides == st and b._strides == st and not a._offset and not b._offset
                    and a._handle.size == n and b._handle.size == n):
                getattr(self._be, kernel)(a._handle, b._handle, out._handle)
            else:
                self._be.ewise_strided(kernel, a._handle, b._handle, out._handle, a._shape,
                                       a._strides, a._offset, b._strides, b._offset)
        return out

    def _ewise(self, other, kernel: str, op: str) -> "NDArray":
        return self._binary_kernel(other, kernel, op)

    def _whole_dense(self) -> bool:
        """The array is its whole buffer in some axis order (compact, or a
        permuted view of a compact array such as an NCHW view of NHWC data)."""
        return (not self._offset and prod(self._shape) == self._handle.size
                and _is_dense_perm(self._shape, self._strides))

    def _like(self) -> "NDArray":
        """A new array laid out as self (a whole dense buffer): element-wise
        results keep their operand's memory order, as PyTorch's do, so that
        channels-last activations stay channels-last and are never
        transposed by a copy just to apply a ReLU."""
        out = object.__new__(NDArray)
        out._shape, out._strides, out._offset = self._shape, self._strides, 0
        out._device, out._be = self._device, self._be
        out._handle = self._be.Array(self._handle.size, self._handle.dtype)
        return out

    def _flat_operand(self) -> "NDArray":
        """Self when its buffer can be read flat by a compact kernel (compact,
        or densely permuted), else a compact copy."""
        return self if self.is_compact() or self._whole_dense() else self._copy()

    def _scalar(self, val, kernel: str) -> "NDArray":
        a = self._flat_operand()
        out = a._like()
        if out._handle.size:
            # a needle.jit replay-time scalar (a float subclass) reaches the kernel as it is
            getattr(self._be, kernel)(a._handle, val if type(val) is ReplayScalar else float(val),
                                      out._handle)
        return out

    def _unary(self, kernel: str) -> "NDArray":
        a = self._flat_operand()
        out = a._like()
        if out._handle.size:
            getattr(self._be, kernel)(a._handle, out._handle)
        return out

    def _binary(self, other, ewise: str, scalar: str, op: str) -> "NDArray":
        if isinstance(other, NDArray):
            return self._ewise(other, ewise, op)
        if type(other) is float or type(other) is int or isinstance(other, (numbers.Number, np.generic)):
            return self._scalar(other, scalar)
        if isinstance(other, np.ndarray):
            return self._ewise(NDArray(other, device=self._device, dtype=self.dtype), ewise, op)
        return NotImplemented

    def __add__(self, other):
        return self._binary(other, "ewise_add", "scalar_add", "add")

    __radd__ = __add__

    def __sub__(self, other):
        return self._binary(other, "ewise_sub", "scalar_sub", "subtract")

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        return self._binary(other, "ewise_mul", "scalar_mul", "multiply")

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._binary(other, "ewise_div", "scalar_div", "divide")

    def __rtruediv__(self, other):
        if isinstance(other, (numbers.Number, np.generic)):
            return self._scalar(other, "scalar_rdiv")
        return NotImplemented

    def __neg__(self):
        return self._unary("ewise_neg")

    def __pow__(self, other):
        return self._binary(other, "ewise_pow", "scalar_power", "power")

    def maximum(self, other):
        return self._binary(other, "ewise_maximum", "scalar_maximum", "maximum")

    # comparisons: 0.0/1.0 in the array's dtype
    def __eq__(self, other):
        return self._binary(other, "ewise_eq", "scalar_eq", "eq")

    def __ge__(self, other):
        return self._binary(other, "ewise_ge", "scalar_ge", "ge")

    def __ne__(self, other):
        return 1.0 - (self == other)

    def __lt__(self, other):
        return 1.0 - (self >= other)

    def __gt__(self, other):
        if isinstance(other, NDArray):
            return 1.0 - (other >= self)
        return 1.0 - ((-self) >= -other)

    def __le__(self, other):
        if isinstance(other, NDArray):
            return other >= self
        return (-self) >= -other

    __hash__ = None

    def log(self):
        return self._unary("ewise_log")

    def exp(self):
        return self._unary("ewise_exp")

    def tanh(self):
        return self._unary("ewise_tanh")

    def sqrt(self):
        """Element-wise square root (nan below 0); the backend's
        ``ewise_sqrt`` (protocol default: ``** 0.5``)."""
        return self._unary("ewise_sqrt")

    def relu_grad(self, grad: "NDArray") -> "NDArray":
        """``grad`` where self > 0, else 0 (ReLU's backward in one pass)."""
        return self._binary_kernel(grad, "ewise_relu_grad", "relu_grad")

    # ------------------------------------------------------------------ #
    # matmul
    # ------------------------------------------------------------------ #
    def __matmul__(self, other) -> "NDArray":
        """NumPy ``matmul``: 2-D or batched, batch dimensions broadcast."""
        if not isinstance(other, NDArray):
            return NotImplemented
        if other._device is not self._device and other._device != self._device:
            raise DeviceMismatchError(f"matmul: operands on different devices: {self._device} and "
                                      f"{other._device}")
        a, b = self, other
        ha, hb = a._handle, b._handle
        if len(a._shape) == 2 and len(b._shape) == 2 and ha.dtype == hb.dtype:
            (m, n), (n2, p) = a._shape, b._shape
            if n == n2 and n:  # the common case, kept lean: an MLP's 128x100 @ 100x10
                # takes ~4 us in the kernel, so every 0.1 us here shows
                out = object.__new__(NDArray)
                out._shape, out._strides, out._offset = (m, p), (p, 1), 0
                out._device, out._be = a._device, a._be
                out._handle = ho = a._be.Array(m * p, ha.dtype)
                if m and p:
                    sa, sb = a._strides, b._strides
                    if (sa[1] == 1 and sb[1] == 1 and sa[0] == n and sb[0] == p and not a._offset
                            and not b._offset and ha.size == m * n and hb.size == n * p):
                        a._be.matmul(ha, hb, ho, m, n, p)
                    else:  # A.T @ B, A @ B.T, slices: read in place, never compacted
                        a._be.matmul_strided(ha, hb, ho, 1, m, n, p, (0,) + sa, a._offset,
                                             (0,) + sb, b._offset)
                return out
        if a.dtype != b.dtype:
            dt = np.promote_types(a.dtype, b.dtype)
            a, b = a.cast(dt), b.cast(dt)
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: 0-d operands are not allowed (shapes {a.shape} and {b.shape})")
        squeeze = []
        if a.ndim == 1:  # a 1-d operand is a (1, n) / (n, 1) view of itself
            a, squeeze = a._view((1,) + a._shape, (0,) + a._strides, a._offset), [-2]
        if b.ndim == 1:
            b = b._view(b._shape + (1,), b._strides + (0,), b._offset)
            squeeze.append(-1)
        m, n = a._shape[-2:]
        n2, p = b._shape[-2:]
        if n != n2:
            raise ShapeError(f"matmul: shapes {self._shape} and {other._shape} are not aligned: "
                             f"{n} (dim -1 of the first) != {n2} (dim -2 of the second)")
        batch = _broadcast_shapes(a._shape[:-2], b._shape[:-2], "matmul")
        a, b = a.broadcast_to(batch + (m, n)), b.broadcast_to(batch + (n, p))
        nb = prod(batch)
        out = a._new(batch + (m, p))
        if out._handle.size:
            if n == 0:
                self._be.fill(out._handle, 0.0)
            elif nb == 1 and a.is_compact() and b.is_compact():
                self._be.matmul(a._handle, b._handle, out._handle, m, n, p)
            else:
                a3, b3 = _as_batched(a), _as_batched(b)
                if a3 is not None and b3 is not None and b3._strides[0] == 0 \
                        and a3._strides[0] == m * a3._strides[1]:
                    # one weight for every batch, and the batches' rows follow each
                    # other at one stride ((B, T, K) activations @ (K, N)): a single
                    # (B*T, K) @ (K, N) product, not B small ones (3x faster at T=32)
                    self._be.matmul_strided(a3._handle, b3._handle, out._handle, 1, nb * m, n, p,
                                            (0,) + a3._strides[1:], a3._offset,
                                            (0,) + b3._strides[1:], b3._offset)
                elif a3 is not None and b3 is not None:
                    self._be.matmul_strided(a3._handle, b3._handle, out._handle, nb, m, n, p,
                                            a3._strides, a3._offset, b3._strides, b3._offset)
                else:  # batch axes with no single stride (attention permutes): still in place
                    self._be.matmul_batched(a._handle, b._handle, out._handle, batch, m, n, p,
                                            a._strides, a._offset, b._strides, b._offset)
        if squeeze:
            shape = list(out._shape)
            for ax in sorted(squeeze):
                shape.pop(ax if ax == -1 else len(shape) - 2)
            out = out.reshape(tuple(shape))
        return out

    # ------------------------------------------------------------------ #
    # reductions
    # ------------------------------------------------------------------ #
    def _reduce(self, axis, keepdims, kernel: str, op: str) -> "NDArray":
        axes = normalize_axes(axis, self.ndim, op)
        if not self._shape:  # the implicit axis of a 0-d array holds its one element
            axes = ()
        if axis is not None and not isinstance(axis, numbers.Integral) and len(axes) == 0:
            return self._copy()  # reducing over no axes: a copy
        if kernel == "reduce_sum" and 0 < len(axes) < self.ndim and axes == tuple(range(len(axes))):
            # leading axes (a bias's gradient): the backend's sum_leading reads the
            # rows in place, where the composition below makes a transposed copy
            red = prod(self._shape[:len(axes)])
            if red:
                kept = self._shape[len(axes):]
                out = NDArray.call_op_override("sum_leading", (self,), (1,) * len(axes) + kept if keepdims
                                               else kept, red, prod(kept))
                if out is not None:
                    return out
        keep = [a for a in range(self.ndim) if a not in axes]
        view = self.permute(tuple(keep) + axes) if axes != tuple(range(self.ndim - len(axes), self.ndim)) else self
        outer_shape = tuple(self._shape[a] for a in keep)
        red = prod(self._shape[a] for a in axes)
        if keepdims:
            out_shape = tuple(1 if a in axes else d for a, d in enumerate(self._shape))
        else:
            out_shape = outer_shape
        if red == 0 and kernel == "reduce_max":  # even when the result is empty, as NumPy and PyTorch
            raise ShapeError(f"{op}: zero-size reduction over axes {axes} of shape {self._shape} "
                             f"has no identity")
        src = view.compact()
        out = src._new(out_shape)
        if out._handle.size:
            if red == 0:
                self._be.fill(out._handle, 0.0)
            else:
                getattr(self._be, kernel)(src._handle, out._handle, red)
        return out

    def sum(self, axis=None, keepdims=False) -> "NDArray":
        """Sum over ``axis`` (None: all, int, or tuple); reduced axes dropped
        unless ``keepdims``."""
        return self._reduce(axis, keepdims, "reduce_sum", "sum")

    def max(self, axis=None, keepdims=False) -> "NDArray":
        """Maximum over ``axis`` (None: all, int, or tuple)."""
        return self._reduce(axis, keepdims, "reduce_max", "max")

    # ------------------------------------------------------------------ #
    # copies with new layout
    # ------------------------------------------------------------------ #
    def flip(self, axes=None) -> "NDArray":
        """A compact copy reversed along ``axes`` (None: every axis)."""
        axes = normalize_axes(axes, self.ndim, "flip")
        if not self._shape:  # the implicit axis of a 0-d array has one element: nothing to reverse
            axes = ()
        out = self.compact()
        for ax in axes:
            n = self._shape[ax]
            if n < 2:
                continue
            src, out = out, self._new_like_shape()
            # protocol strides are non-negative, so reverse one index at a time
            # along short axes, or through the host for long ones
            if n <= 64:
                full = [slice(None)] * self.ndim
                for i in range(n):
                    full_src, full_dst = list(full), list(full)
                    full_src[ax], full_dst[ax] = i, n - 1 - i
                    out[tuple(full_dst)] = src[tuple(full_src)]
            else:
                out = NDArray(np.flip(src.numpy(), ax), device=self._device, dtype=self.dtype)
        return out

    def _new_like_shape(self) -> "NDArray":
        return self._new(self._shape)

    def pad(self, axes) -> "NDArray":
        """Zero padding: ``axes`` gives ``(left, right)`` for every axis."""
        axes = tuple(tuple(int(v) for v in p) for p in axes)
        if len(axes) != self.ndim or any(len(p) != 2 or p[0] < 0 or p[1] < 0 for p in axes):
            raise ShapeError(f"pad: need one non-negative (left, right) pair per axis of shape "
                             f"{self._shape}, got {axes}")
        out = self._new(tuple(d + l + r for d, (l, r) in zip(self._shape, axes)))
        out.fill(0.0)
        if self.size:
            out[tuple(slice(l, l + d) for d, (l, _) in zip(self._shape, axes))] = self
        return out


def _as_batched(x: NDArray):
    """View (..., r, c) as (batch, r, c) without copying when the batch axes
    collapse into one stride; None when they do not."""
    batch_shape, batch_strides = x._shape[:-2], x._strides[:-2]
    r, c = x._shape[-2:]
    rs, cs = x._strides[-2:]
    nb = prod(batch_shape)
    dims = [(d, s) for d, s in zip(batch_shape, batch_strides) if d != 1]
    if not dims:
        bs = r * c
    elif all(s == 0 for _, s in dims):
        bs = 0
    else:
        if not all(dims[i][1] == dims[i + 1][1] * dims[i + 1][0] for i in range(len(dims) - 1)):
            return None
        bs = dims[-1][1]
    return x._view((nb, r, c), (bs, rs, cs), x._offset)


def device_uniform(shape, device, dtype, seed) -> "NDArray | None":
    """Uniform [0, 1) numbers made on ``device`` by its ``rand_uniform`` op
    override from ``seed`` (same stream on every backend), or None when the
    backend has none.  needle.jit draws with it: a replay cannot call NumPy."""
    dev = _resolve(device)
    kernel = dev.op_override("rand_uniform")
    if kernel is None:
        return None
    out = NDArray.make(shape, device=dev, dtype=dtype)
    if out._handle.size:
        kernel(out._handle, seed)
    return out


def _check_view(shape, strides, offset, size, op) -> None:
    if len(shape) != len(strides):
        raise ShapeError(f"{op}: shape {shape} and strides {strides} differ in length")
    if offset < 0 or any(s < 0 for s in strides) or any(d < 0 for d in shape):
        raise ShapeError(f"{op}: negative offset, stride or dimension (shape {shape}, strides "
                         f"{strides}, offset {offset})")
    if prod(shape) == 0:
        return
    last = offset + builtins.sum((d - 1) * s for d, s in zip(shape, strides))
    if last >= size:
        raise OutOfBoundsError(f"{op}: view (shape {shape}, strides {strides}, offset {offset}) reaches "
                         f"element {last} of a buffer of {size}")


def _explicit_slice(sl: slice, size: int, op: str) -> slice:
    """``sl`` with explicit, non-negative bounds clamped to an axis of ``size``."""
    try:
        step = 1 if sl.step is None else operator.index(sl.step)
        if step <= 0:
            raise OutOfBoundsError(f"{op}: slice step must be positive, got {step} in {sl!r}")
        start, stop, step = sl.indices(size)
    except TypeError:
        raise ArgumentTypeError(f"{op}: slice bounds must be integers or None, got {sl!r}") from None
    return slice(start, builtins.max(stop, start), step)


#: the most elements any array may hold: its byte size (8-byte dtypes at most)
#: must fit a signed 64-bit index, or allocators and kernels overflow
_MAX_ELEMENTS = (2**63 - 1) // 8


def _check_size(shape: tuple, op: str) -> int:
    n = prod(shape)
    if n > _MAX_ELEMENTS:
        raise SizeOverflowError(f"{op}: shape {shape} has {n} elements; its byte size overflows "
                                f"(at most {_MAX_ELEMENTS} elements)")
    return n


def _resolve(dev) -> BackendDevice:
    return dev if isinstance(dev, BackendDevice) else device(dev)


# ---------------------------------------------------------------------- #
# module functions (course API)
# ---------------------------------------------------------------------- #
def array(a, dtype="float32", device=None) -> NDArray:
    """A new NDArray copied from ``a``; float32 unless ``dtype`` says otherwise."""
    return NDArray(a, device=device, dtype=dtype)


def empty(shape, dtype="float32", device=None) -> NDArray:
    return NDArray.make(_as_shape(shape, "empty"), device=device, dtype=dtype)


def full(shape, fill_value, dtype="float32", device=None) -> NDArray:
    arr = empty(shape, dtype, device)
    arr.fill(fill_value)
    return arr


def broadcast_to(a, shape):
    return a.broadcast_to(shape)


def reshape(a, shape):
    return a.reshape(shape)


def maximum(a, b):
    return a.maximum(b)


def log(a):
    return a.log()


def exp(a):
    return a.exp()


def tanh(a):
    return a.tanh()


def sum(a, axis=None, keepdims=False):  # noqa: A001 (course name)
    return a.sum(axis=axis, keepdims=keepdims)


def max(a, axis=None, keepdims=False):  # noqa: A001 (course name)
    return a.max(axis=axis, keepdims=keepdims)


def flip(a, axes):
    return a.flip(axes)


def pad(a, axes):
    return a.pad(axes)


def matmul(a, b):
    return a @ b


class _HostBuffer:
    """``__array_interface__`` over a host-memory buffer; as the NumPy view's
    base it keeps the buffer alive (NDArray.host_view)."""

    __slots__ = ("buffer", "__array_interface__")

    def __init__(self, buffer, shape):
        self.buffer = buffer
        self.__array_interface__ = {"shape": tuple(shape), "typestr": buffer.dtype.str,
                                    "data": (int(buffer.ptr()), False), "strides": None, "version": 3}
