"""Tuple ops: make_tuple, tuple_get_item, stack, split, fused_add_scalars.

A TensorTuple's data is a Python tuple of NDArrays; its adjoint is itself a
TensorTuple.  How a tuple's partial adjoints are summed lives here too
(:func:`sum_tuple_adjoints`), beside the op that makes them sparse.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor, TensorOp, TensorTuple, TensorTupleOp, sum_node_list
from ..backend_ndarray import NDArray
from ..backend_ndarray.ndarray import normalize_axes
from ..errors import ArgumentTypeError, OutOfBoundsError, ShapeError
from .registry import register_op

__all__ = ["MakeTensorTuple", "TupleGetItem", "Stack", "Split", "FusedAddScalars",
           "OneHotTupleAdjoint", "make_tuple", "tuple_get_item", "stack", "split",
           "fused_add_scalars", "sum_tuple_adjoints"]


class MakeTensorTuple(TensorTupleOp):
    """Group Tensors into a TensorTuple; the adjoint tuple is split back."""

    def compute(self, *args):
        return tuple(args)

    def gradient(self, out_grad, node):
        return tuple(out_grad[i] for i in range(len(out_grad)))


def make_tuple(*args):
    return MakeTensorTuple()(*args)


class TupleGetItem(TensorOp):
    """Element ``index`` of a TensorTuple (folds ``make_tuple(...)[i]`` to the
    i-th input); the adjoint is a tuple with zeros in the other slots."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, a, fold_const: bool = True):
        if not isinstance(a, TensorTuple):
            raise ArgumentTypeError(f"tuple_get_item: expected a TensorTuple, got {type(a).__name__}")
        n = len(a)
        if not -n <= self.index < n:
            raise OutOfBoundsError(f"tuple_get_item: index {self.index} out of range for a tuple of {n}")
        if fold_const and isinstance(a.op, MakeTensorTuple):
            return a.inputs[self.index]
        return Tensor.make_from_op(self, [a])

    def compute(self, a):
        return a[self.index]

    def gradient(self, out_grad, node):
        src = node.inputs[0]
        index = self.index % len(src)
        parts, zeros = [], {}
        for i, arr in enumerate(src.realize_cached_data()):
            if i == index:
                parts.append(out_grad)
                continue
            z = zeros.get(arr.shape)  # one shared zero array per shape
            if z is None:
                z = zeros[arr.shape] = NDArray.make(arr.shape, device=arr.device, dtype=out_grad.dtype)
                z.fill(0.0)
            parts.append(Tensor.make_const(z))
        return OneHotTupleAdjoint.make(parts, index)


class OneHotTupleAdjoint(TensorTuple):
    """The adjoint ``tuple_get_item(t, index)`` sends back to ``t``: the
    element's adjoint in slot ``index`` and zeros elsewhere.  It is an
    ordinary TensorTuple that also remembers ``parts`` and ``index`` (even
    when it comes back detached), so :func:`sum_tuple_adjoints` can add only
    the slots that are set."""

    __slots__ = ("parts", "index")

    @classmethod
    def make(cls, parts, index: int) -> "OneHotTupleAdjoint":
        adjoint = cls.make_from_op(MakeTensorTuple(), parts)
        adjoint.parts, adjoint.index = parts, index
        return adjoint


def _slot(adjoint, i: int, part):
    """Slot ``i`` of a tuple adjoint, with its array.  ``backward`` drops an
    adjoint's array once the op it feeds has used it; when that op was the
    grouping into this tuple, the tuple still holds the very same array, so it
    is put back rather than recomputed (recomputing an LSTM's dropped slots
    pulled in their whole graphs: 985 matmuls in a step that needs ~100)."""
    if part.cached_data is None and adjoint.cached_data is not None and part.op is not None:
        part.cached_data = adjoint.cached_data[i]
    return part


def sum_tuple_adjoints(grads):
    """Sum a TensorTuple's partial adjoints slot by slot.  Reading n elements
    of a tuple gives n one-hot adjoints: only their set slots are added, so
    that costs n adds instead of n^2.  (``backward`` calls this through
    ``TensorTuple.sum_adjoints``.)"""
    columns = [[] for _ in range(len(grads[0]))]
    zero_parts = None
    for g in grads:
        if isinstance(g, OneHotTupleAdjoint):
            columns[g.index].append(_slot(g, g.index, g.parts[g.index]))
            zero_parts = zero_parts or g.parts
        else:
            for i, (column, part) in enumerate(zip(columns, g.tuple())):
                column.append(_slot(g, i, part))
    slots = []
    for i, column in enumerate(columns):
        if not column:
            slots.append(zero_parts[i])
        else:
            slots.append(column[0] if len(column) == 1 else sum_node_list(column))
    return make_tuple(*slots)


def tuple_get_item(value, index):
    return TupleGetItem(index)(value)


def _axis(axis, ndim: int, op: str) -> int:
    if not isinstance(axis, numbers.Integral):
        raise ShapeError(f"{op}: axis must be an integer, got {axis!r}")
    return normalize_axes(axis, ndim, op)[0]


class Stack(TensorOp):
    """Stack same-shaped arrays along a new axis ``axis``; adjoint: split."""

    def __init__(self, axis: int):
        self.axis = axis

    def compute(self, args) -> NDArray:
        if len(args) == 0:
            raise ShapeError("stack: need at least one tensor")
        shape = args[0].shape
        for i, arr in enumerate(args):
            if arr.shape != shape:
                raise ShapeError(f"stack: all tensors must have the same shape; tensor 0 has "
                                 f"{shape}, tensor {i} has {arr.shape}")
        axis = _axis(self.axis, len(shape) + 1, "stack")
        first = args[0]
        dtype = first.dtype
        for arr in args[1:]:
            if arr.dtype != dtype:
                dtype = np.promote_types(dtype, arr.dtype)
        out_shape = shape[:axis] + (len(args),) + shape[axis:]
        out = NDArray.make(out_shape, device=first.device, dtype=dtype)
        idx = [slice(None)] * len(out_shape)
        for i, arr in enumerate(args):
            idx[axis] = i
            out[tuple(idx)] = arr
        return out

    def gradient(self, out_grad, node):
        return split(out_grad, self.axis)


def stack(args, axis):
    if isinstance(args, TensorTuple):
        return Stack(axis)(args)
    return Stack(axis)(make_tuple(*args))


class Split(TensorTupleOp):
    """Split along ``axis`` into ``shape[axis]`` tensors with that axis removed;
    adjoint: stack."""

    def __init__(self, axis: int):
        self.axis = axis

    def compute(self, a: NDArray):
        if a.ndim == 0:
            raise ShapeError("split: a 0-d tensor has no axis to split along (as torch.unbind)")
        axis = _axis(self.axis, a.ndim, "split")
        shape = a.shape
        out_shape = shape[:axis] + shape[axis + 1:]
        idx = [slice(None)] * a.ndim
        parts = []
        for i in range(shape[axis]):
            idx[axis] = i
            parts.append(a[tuple(idx)].compact().reshape(out_shape))
        return tuple(parts)

    def gradient(self, out_grad, node):
        return Stack(self.axis)(out_grad)


def split(a, axis):
    return Split(axis)(a)


class FusedAddScalars(TensorTupleOp):
    """``(a + c0, a + c1)`` in one op; adjoint ``g0 + g1``."""

    def __init__(self, c0: float, c1: float):
        self.c0 = c0
        self.c1 = c1

    def compute(self, a: NDArray):
        return a + self.c0, a + self.c1

    def gradient(self, out_grad, node):
        return out_grad[0] + out_grad[1]


def fused_add_scalars(x, c0, c1):
    return FusedAddScalars(c0, c1)(x)


for _name, _cls, _fn in [
    ("make_tuple", MakeTensorTuple, make_tuple), ("tuple_get_item", TupleGetItem, tuple_get_item),
    ("stack", Stack, stack), ("split", Split, split),
    ("fused_add_scalars", FusedAddScalars, fused_add_scalars),
]:
    register_op(_name, _cls, _fn)
del _name, _cls, _fn
