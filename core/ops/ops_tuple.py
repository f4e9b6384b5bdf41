"""Tuple ops: make_tuple, tuple_get_item, stack, split, fused_add_scalars.

A TensorTuple's data is a Python tuple of NDArrays; its adjoint is itself a
TensorTuple.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor, TensorOp, TensorTuple, TensorTupleOp
from ..backend_ndarray import NDArray
from ..errors import ArgumentTypeError, OutOfBoundsError, ShapeError
from .registry import register_op

__all__ = ["MakeTensorTuple", "TupleGetItem", "Stack", "Split", "FusedAddScalars",
           "make_tuple", "tuple_get_item", "stack", "split", "fused_add_scalars"]


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
            # one shared zero array per shape; marked so that summing many
            # such sparse tuple adjoints skips the zero slots (see autograd)
            z = zeros.get(arr.shape)
            if z is None:
                z = zeros[arr.shape] = NDArray.make(arr.shape, device=arr.device, dtype=out_grad.dtype)
                z.fill(0.0)
            zero = Tensor.make_const(z)
            zero.is_zero_adjoint = True
            parts.append(zero)
        adjoint = make_tuple(*parts)
        adjoint.adjoint_parts = parts  # kept even when the tuple comes back detached
        return adjoint


def tuple_get_item(value, index):
    return TupleGetItem(index)(value)


def _axis(axis, ndim: int, op: str) -> int:
    if not isinstance(axis, numbers.Integral) or not -ndim <= axis < ndim:
        raise ShapeError(f"{op}: axis {axis!r} is out of range for {ndim} dimension(s)")
    return int(axis) % ndim


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
