"""Ops behind Tensor's PyTorch-style methods (issue 18): indexing, ``cat``,
``where``, comparisons, ``sqrt``, ``abs``, ``permute``, ``mean``, ``min``,
``argmax`` and device moves.

These are additions: the course ops are untouched.
Differentiable ops build their gradients from Tensor ops (so they can be
differentiated again); comparisons and ``argmax`` return constants.
"""

from __future__ import annotations

import builtins
import collections
import numbers

import numpy as np

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray
from ..backend_ndarray.device import BackendDevice, device as _device_by_name
from ..errors import ArgumentError, ArgumentTypeError, DeviceMismatchError, ShapeError
from .ops_mathematic import Max, broadcast_to, kept_dims_shape, normalize_axes, reshape, unbroadcast
from .registry import register_op

__all__ = [
    "GetItem", "GetItemAdjoint", "Concat", "Where", "Compare", "Sqrt", "Abs", "Permute", "Mean",
    "Min", "ArgMax", "ToDevice", "Cast",
    "getitem", "cat", "where", "compare", "sqrt", "abs", "permute", "mean", "min", "argmax",
    "to_device", "cast", "ComparisonResult", "MinMaxResult",
]

_make = Tensor.make_from_op
_INTS = (int, np.integer)
_SCALARS = (float, int, np.generic, numbers.Number)


# ---------------------------------------------------------------------- #
# indexing: t[...]
# ---------------------------------------------------------------------- #
def _parse_index(index, shape: tuple):
    """NumPy basic indexing -> what NDArray can do.

    Returns ``(view_index, flip_axes, out_shape)``: one positive-step slice
    per input axis (NDArray's ``__getitem__`` keeps every axis), the axes of
    that view to reverse (negative steps: NDArray slices with positive steps
    only, so ``a[5:1:-2]`` is ``a[3:6:2]`` reversed), and the result's shape
    (ints drop their axis, ``None`` adds one)."""
    items = index if isinstance(index, tuple) else (index,)
    ndim = len(shape)
    for it in items:
        ok = it is None or it is Ellipsis or isinstance(it, slice) or (
            isinstance(it, _INTS) and not isinstance(it, (bool, np.bool_)))
        if not ok:
            raise IndexError(f"Tensor.__getitem__: index {it!r} of type {type(it).__name__} is not "
                             f"supported; use ints, slices, None or ... (basic indexing)")
    if builtins.sum(it is Ellipsis for it in items) > 1:
        raise IndexError("Tensor.__getitem__: an index can only have a single ellipsis ('...')")
    consumed = builtins.sum(1 for it in items if it is not None and it is not Ellipsis)
    if consumed > ndim:
        raise IndexError(f"Tensor.__getitem__: too many indices ({consumed}) for a tensor of "
                         f"shape {shape} ({ndim} dimension(s))")
    fill = (slice(None),) * (ndim - consumed)
    if any(it is Ellipsis for it in items):
        k = next(i for i, it in enumerate(items) if it is Ellipsis)
        items = items[:k] + fill + items[k + 1:]
    else:
        items = items + fill
    view_index, flip_axes, out_shape = [], [], []
    axis = 0
    for it in items:
        if it is None:
            out_shape.append(1)
            continue
        dim = shape[axis]
        if isinstance(it, slice):
            start, stop, step = it.indices(dim)  # ValueError for step 0, as in Python
            n = len(range(start, stop, step))
            if n == 0:
                view_index.append(slice(0, 0, 1))
            elif step > 0:
                view_index.append(slice(start, start + (n - 1) * step + 1, step))
            else:
                last = start + (n - 1) * step
                view_index.append(slice(last, start + 1, -step))
                flip_axes.append(axis)
            out_shape.append(n)
        else:
            k = int(it)
            if not -dim <= k < dim:
                raise IndexError(f"Tensor.__getitem__: index {k} is out of bounds for axis {axis} "
                                 f"with size {dim}")
            k %= dim
            view_index.append(slice(k, k + 1, 1))
        axis += 1
    return tuple(view_index), tuple(flip_axes), tuple(out_shape)


class GetItem(TensorOp):
    """``a[index]`` with NumPy basic indexing (ints, slices of any step, None,
    ...); the adjoint scatters ``g`` into zeros of ``a``'s shape."""

    def __init__(self, index):
        self.index = index

    def compute(self, a: NDArray) -> NDArray:
        view_index, flip_axes, out_shape = _parse_index(self.index, a.shape)
        view = a[view_index]
        view = view.flip(flip_axes) if flip_axes else view.compact()
        return view.reshape(out_shape)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return _make(GetItemAdjoint(self.index, node.inputs[0].shape), (out_grad,))


class GetItemAdjoint(TensorOp):
    """Zeros of ``shape`` with ``g`` written at ``index`` (basic indexing picks
    each element at most once, so scatter-add into zeros is a write).  Linear
    in ``g``; its adjoint is ``GetItem(index)``."""

    def __init__(self, index, shape):
        self.index = index
        self.shape = tuple(shape)

    def compute(self, g: NDArray) -> NDArray:
        view_index, flip_axes, _ = _parse_index(self.index, self.shape)
        out = NDArray.make(self.shape, device=g.device, dtype=g.dtype)
        out.fill(0.0)
        view_shape = out[view_index].shape
        if g.size:
            src = g.compact().reshape(view_shape)
            if flip_axes:
                src = src.flip(flip_axes)
            out[view_index] = src
        return out

    def gradient(self, out_grad: Tensor, node: Tensor):
        return getitem(out_grad, self.index)


def getitem(a, index):
    """``a[index]`` (``Tensor.__getitem__``)."""
    return _make(GetItem(index), (a,))


# ---------------------------------------------------------------------- #
# cat / where
# ---------------------------------------------------------------------- #
class Concat(TensorOp):
    """Join tensors along an existing axis ``dim``; each input's adjoint is
    its slice of ``g``."""

    def __init__(self, dim: int = 0):
        self.dim = dim

    def _axis(self, shapes):
        ndim = len(shapes[0])
        if not -ndim <= self.dim < ndim:
            raise ShapeError(f"cat: dim {self.dim} out of range for tensors of {ndim} dimension(s)")
        axis = self.dim % ndim
        for s in shapes[1:]:
            if len(s) != ndim or any(x != y for i, (x, y) in enumerate(zip(s, shapes[0])) if i != axis):
                raise ShapeError(f"cat: shapes {shapes} differ outside dim {self.dim}")
        return axis

    def compute(self, *arrays: NDArray) -> NDArray:
        shapes = [x.shape for x in arrays]
        axis = self._axis(shapes)
        total = list(shapes[0])
        total[axis] = builtins.sum(s[axis] for s in shapes)
        first = arrays[0]
        dtype = np.result_type(*[x.dtype for x in arrays])
        out = NDArray.make(tuple(total), device=first.device, dtype=dtype)
        pos = 0
        for x in arrays:
            if x.device != first.device:  # an empty x would otherwise slip through unwritten
                raise DeviceMismatchError(f"cat: tensors on {first.device} and {x.device}; move them to "
                                          f"one device with .to(device)")
            n = x.shape[axis]
            if n and x.size:
                idx = tuple(slice(pos, pos + n) if i == axis else slice(None) for i in range(len(total)))
                out[idx] = x
            pos += n
        return out

    def gradient(self, out_grad: Tensor, node: Tensor):
        shapes = [x.shape for x in node.inputs]
        axis = self._axis(shapes)
        grads, pos = [], 0
        for s in shapes:
            idx = (slice(None),) * axis + (slice(pos, pos + s[axis]),)
            grads.append(getitem(out_grad, idx))
            pos += s[axis]
        return tuple(grads)


def cat(tensors, dim: int = 0):
    """Concatenate a sequence of Tensors along axis ``dim`` (``torch.cat``)."""
    tensors = list(tensors)
    if not tensors:
        raise ArgumentError("cat: expected a non-empty sequence of Tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise ArgumentTypeError(f"cat: expected Tensors, got {type(t).__name__}")
    return _make(Concat(int(dim)), tuple(tensors))


class Where(TensorOp):
    """``x`` where ``condition`` is non-zero, else ``y`` (broadcasting).

    Computed with NumPy on the host: ``c*x + (1-c)*y`` on the device would
    turn ``where(mask, x, -inf)`` into NaN (0 * inf).  The condition is a
    constant; adjoints ``g*c`` and ``g*(1-c)`` summed back to each shape."""

    def __init__(self, condition: NDArray):
        self.condition = condition

    def compute(self, x: NDArray, y: NDArray) -> NDArray:
        if x.device != y.device:  # the result and both adjoints would land on x's device
            raise DeviceMismatchError(f"where: x on {x.device} and y on {y.device}; move them to one "
                                      f"device with .to(device)")
        c = self.condition.numpy() != 0
        try:
            host = np.where(c, x.numpy(), y.numpy())
        except ValueError:
            raise ShapeError(f"where: shapes condition {c.shape}, x {x.shape}, y {y.shape} do not "
                             f"broadcast") from None
        return NDArray(host, device=x.device, dtype=host.dtype)

    def gradient(self, out_grad: Tensor, node: Tensor):
        x, y = node.inputs
        shape = out_grad.shape
        c = self.condition.numpy() != 0
        keep = np.broadcast_to(c, shape).astype(out_grad.dtype)
        mask = Tensor(keep, device=out_grad.device, dtype=out_grad.dtype, requires_grad=False)
        other = Tensor(1.0 - keep, device=out_grad.device, dtype=out_grad.dtype, requires_grad=False)
        return unbroadcast(out_grad * mask, x.shape), unbroadcast(out_grad * other, y.shape)


def where(condition, x, y):
    """``torch.where(condition, x, y)``: ``x`` and ``y`` may be Tensors or
    numbers (at least one a Tensor); ``condition`` a Tensor (non-zero is
    true), NDArray, NumPy array or list."""
    like = x if isinstance(x, Tensor) else y
    if not isinstance(like, Tensor):
        raise TypeError(f"where: x or y must be a Tensor, got {type(x).__name__} and {type(y).__name__}")
    if isinstance(condition, Tensor):
        cond = condition.realize_cached_data()
    elif isinstance(condition, NDArray):
        cond = condition
    else:  # non-zero is true: test it before storing 0/1 (1e-50 is 0 in float32)
        cond = NDArray((np.asarray(condition) != 0).astype(np.float32), device=like.device)

    def as_tensor(v, name):
        if isinstance(v, Tensor):
            return v
        if isinstance(v, _SCALARS):
            return Tensor(np.full((), v), device=like.device, dtype=like.dtype, requires_grad=False)
        raise TypeError(f"where: {name} must be a Tensor or a number, got {type(v).__name__}")

    return _make(Where(cond), (as_tensor(x, "x"), as_tensor(y, "y")))


# ---------------------------------------------------------------------- #
# comparisons
# ---------------------------------------------------------------------- #
class ComparisonResult(Tensor):
    """The 0/1 float Tensor a comparison returns (a constant).  As in NumPy
    and PyTorch only a one-element result has a truth value, so ``if t > 0:``
    works on a scalar and is an error, not a silent answer, on a batch."""

    def __bool__(self) -> bool:
        data = self.numpy()
        if data.size != 1:
            raise ValueError(f"the truth value of a comparison of {data.size} elements is ambiguous; "
                             f"use .numpy().any() or .numpy().all()")
        return bool(data.reshape(()) != 0)


_COMPARE = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__", "gt": "__gt__",
            "ge": "__ge__"}
_SYMBOL = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


class Compare(TensorOp):
    """Element-wise ``a <kind> b`` (kind one of eq ne lt le gt ge), 1.0 where
    true, 0.0 elsewhere; no gradient flows through it (piecewise constant)."""

    def __init__(self, kind: str):
        if kind not in _COMPARE:
            raise ValueError(f"compare: kind must be one of {', '.join(_COMPARE)}, got {kind!r}")
        self.kind = kind

    def compute(self, a: NDArray, b) -> NDArray:
        return getattr(a, _COMPARE[self.kind])(b)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return tuple(x * 0.0 for x in node.inputs)


def compare(a, b, kind: str):
    """``a <kind> b`` element-wise as a constant 0/1 Tensor (``a < b``,
    ``a.eq(b)`` ...); ``b`` a Tensor, a number, an NDArray or a NumPy array."""
    op = Compare(kind)
    x = a.realize_cached_data()
    if isinstance(b, Tensor):
        y = b.realize_cached_data()
    elif isinstance(b, _SCALARS):
        y = float(b)
    elif isinstance(b, (NDArray, np.ndarray)):
        y = NDArray(b, device=x.device, dtype=x.dtype)
    else:
        return NotImplemented
    if isinstance(y, NDArray):
        if y.device != x.device:
            raise DeviceMismatchError(f"Tensor {_SYMBOL[kind]}: operands on {x.device} and {y.device}; "
                                      f"move one with .to(device)")
        if y.shape != x.shape:
            try:
                np.broadcast_shapes(x.shape, y.shape)
            except ValueError:
                raise ShapeError(f"Tensor {_SYMBOL[kind]}: shapes {x.shape} and {y.shape} do not "
                                 f"broadcast") from None
    return ComparisonResult.make_const(op.compute(x, y))


# ---------------------------------------------------------------------- #
# element-wise unary
# ---------------------------------------------------------------------- #
class Sqrt(TensorOp):
    """``sqrt a`` (NaN below 0); adjoint ``g / (2 sqrt a)``."""

    def compute(self, a: NDArray) -> NDArray:
        return a.sqrt()

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad / (node * 2.0)


def sqrt(a):
    return _make(Sqrt(), (a,))


class Abs(TensorOp):
    """``|a|``; adjoint ``g * sign(a)`` (0 at 0, as PyTorch)."""

    def compute(self, a: NDArray) -> NDArray:
        return a.maximum(-a) + 0.0  # + 0.0 turns -0.0 into 0.0, as torch.abs

    def gradient(self, out_grad: Tensor, node: Tensor):
        x = node.inputs[0].realize_cached_data()
        sign = (x > 0.0) - (x < 0.0)
        return out_grad * Tensor.make_const(sign)


def abs(a):  # noqa: A001 (op name; kept out of needle's namespace)
    return _make(Abs(), (a,))


# ---------------------------------------------------------------------- #
# shape
# ---------------------------------------------------------------------- #
class Permute(TensorOp):
    """Reorder all axes (``torch.permute``); ``transpose`` keeps the course's
    swap-two-axes meaning.  Adjoint: the inverse permutation."""

    def __init__(self, axes):
        self.axes = tuple(int(a) for a in axes)

    def _perm(self, ndim):
        axes = tuple(a % ndim if -ndim <= a < ndim else a for a in self.axes) if ndim else self.axes
        if sorted(axes) != list(range(ndim)):
            raise ShapeError(f"permute: dims {self.axes} are not a permutation of the {ndim} "
                             f"axes of the tensor")
        return axes

    def compute(self, a: NDArray) -> NDArray:
        return a.permute(self._perm(a.ndim))

    def gradient(self, out_grad: Tensor, node: Tensor):
        perm = self._perm(len(node.inputs[0].shape))
        inverse = [0] * len(perm)
        for i, p in enumerate(perm):
            inverse[p] = i
        return permute(out_grad, tuple(inverse))


def permute(a, axes):
    return _make(Permute(axes), (a,))


class ToDevice(TensorOp):
    """A copy on ``device``; adjoint: ``g`` moved back to the input's device."""

    def __init__(self, device):
        self.device = device

    def compute(self, a: NDArray) -> NDArray:
        return a.to(self.device)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return to_device(out_grad, node.inputs[0].device)


class Cast(TensorOp):
    """A copy in ``dtype`` (float32/float64); adjoint: ``g`` cast back to the
    input's dtype."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def compute(self, a: NDArray) -> NDArray:
        return a.cast(self.dtype)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return cast(out_grad, node.inputs[0].dtype)


def cast(a, dtype):
    """``a`` in ``dtype``; ``a`` itself when it already has it.  Integer
    dtypes raise UnsupportedDTypeError (backends store floats only)."""
    from ..errors import UnsupportedDTypeError

    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise UnsupportedDTypeError(f"cast: unknown dtype {dtype!r}; use 'float32' or 'float64'") from None
    if dt.kind != "f":
        raise UnsupportedDTypeError(f"cast: dtype {dt.name} is not supported: needle's backends store "
                                    f"float32 and float64 only")
    if a.dtype == dt:
        return a
    return _make(Cast(dt), (a,))


def to_device(a, device):
    """``a`` on ``device`` (a device or its name); ``a`` itself when already there."""
    if not isinstance(device, BackendDevice):
        device = _device_by_name(device)
    if a.device == device:
        return a
    return _make(ToDevice(device), (a,))


# ---------------------------------------------------------------------- #
# reductions
# ---------------------------------------------------------------------- #
class Mean(TensorOp):
    """Mean over ``axes`` (None: all), reduced axes dropped unless
    ``keepdims``; adjoint ``g / n`` broadcast back."""

    def __init__(self, axes=None, keepdims: bool = False):
        self.axes = axes
        self.keepdims = keepdims

    def _count(self, shape, axes):
        n = 1
        for i, d in enumerate(shape):
            if axes is None or i in axes:
                n *= d
        return n

    def compute(self, a: NDArray) -> NDArray:
        axes = normalize_axes(self.axes, a.ndim, "mean")
        if axes is not None and len(axes) == 0:
            return a
        n = self._count(a.shape, axes)
        if n == 0:
            raise ShapeError(f"mean: cannot average over an empty axis (shape {a.shape})")
        return a.sum(axis=axes, keepdims=self.keepdims) / float(n)

    def gradient(self, out_grad: Tensor, node: Tensor):
        shape = node.inputs[0].shape
        axes = normalize_axes(self.axes, len(shape), "mean")
        if axes is not None and len(axes) == 0:
            return out_grad
        n = self._count(shape, axes)
        return broadcast_to(reshape(out_grad, kept_dims_shape(shape, axes)), shape) / float(n)


def mean(a, axes=None, keepdims=False):
    return _make(Mean(axes, keepdims), (a,))


class Min(Max):
    """Minimum over ``axes`` (None: all); ties share the adjoint equally
    (the mask is read from the data, as for ``max``)."""

    def compute(self, a: NDArray) -> NDArray:
        axes = normalize_axes(self.axes, a.ndim, "min")
        if axes is not None and len(axes) == 0:
            return a
        return -((-a).max(axis=axes, keepdims=self.keepdims))


def min(a, axes=None, keepdims=False):  # noqa: A001 (op name; kept out of needle's namespace)
    return _make(Min(axes, keepdims), (a,))


class ArgMax(TensorOp):
    """Index of the first maximum along ``axis`` (None: of the flattened
    tensor), stored as a float (backends store floats; exact below 2**24).
    A constant: no gradient."""

    def __init__(self, axis=None, keepdims: bool = False):
        self.axis = axis
        self.keepdims = keepdims

    def compute(self, a: NDArray) -> NDArray:
        host = a.numpy()
        if self.axis is None:
            idx = np.asarray(np.argmax(host))
            if self.keepdims:
                idx = idx.reshape((1,) * host.ndim)
        else:
            (axis,) = normalize_axes(self.axis, a.ndim, "argmax")
            idx = np.argmax(host, axis=axis)
            if self.keepdims:
                idx = np.expand_dims(idx, axis)
        return NDArray(idx.astype(a.dtype), device=a.device, dtype=a.dtype)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return node.inputs[0] * 0.0


def argmax(a, axis=None, keepdims=False):
    """Indices of the maxima (a constant float Tensor, like PyTorch's int64
    indices but in the tensor's float dtype)."""
    return Tensor.make_const(ArgMax(axis, keepdims).compute(a.realize_cached_data()))


#: ``t.max(dim=...)`` / ``t.min(dim=...)`` result, as in PyTorch
MinMaxResult = collections.namedtuple("MinMaxResult", ["values", "indices"])


for _name, _cls, _fn in [
    ("getitem", GetItem, getitem), ("cat", Concat, cat), ("where", Where, where),
    ("compare", Compare, compare), ("sqrt", Sqrt, sqrt), ("abs", Abs, abs),
    ("permute", Permute, permute), ("to_device", ToDevice, to_device), ("cast", Cast, cast),
    ("mean", Mean, mean),
    ("min", Min, min), ("argmax", ArgMax, argmax),
]:
    register_op(_name, _cls, _fn)
del _name, _cls, _fn
