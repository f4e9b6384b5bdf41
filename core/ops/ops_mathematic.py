"""Element-wise, shape and reduction ops (course API §2, docs/design.md).

Each op's ``compute`` works on NDArrays; its ``gradient`` is built from
Tensor ops, so gradients can be differentiated again.  Binary element-wise
ops broadcast their inputs NumPy-style (NDArray does it when shapes differ)
and sum each adjoint back to its input's shape.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray
from ..backend_ndarray.ndarray import normalize_axes as _normalize_axes
from ..errors import ArgumentTypeError, DeviceMismatchError, ShapeError, UnsupportedDTypeError
from .registry import register_op

__all__ = [
    "EWiseAdd", "AddScalar", "EWiseMul", "MulScalar", "EWisePow", "PowerScalar", "EWiseDiv",
    "DivScalar", "Negate", "Transpose", "Reshape", "BroadcastTo", "Summation", "MatMul", "Log",
    "Exp", "ReLU", "ReLUGrad", "Tanh", "Sigmoid", "Max", "Flip", "Dilate", "UnDilate",
    "add", "add_scalar", "multiply", "mul_scalar", "power", "power_scalar", "divide",
    "divide_scalar", "negate", "transpose", "reshape", "broadcast_to", "summation", "matmul",
    "log", "exp", "relu", "tanh", "sigmoid", "max", "flip", "dilate", "undilate",
    "unbroadcast", "normalize_axes", "kept_dims_shape",
]

_make = Tensor.make_from_op
_INTS = (int, np.integer, numbers.Integral)
# float/int first: isinstance against the numbers ABCs is slow, so plain
# Python numbers (and numpy scalars, which subclass np.generic) skip it
_SCALARS = (float, int, np.generic, numbers.Number)


def _as_shape(shape, op: str) -> tuple:
    if type(shape) is tuple and all(type(s) is int for s in shape):
        return shape  # the common case (shapes read off other tensors), kept lean
    try:
        return (operator.index(shape),) if isinstance(shape, _INTS) else tuple(operator.index(s) for s in shape)
    except TypeError:
        raise ArgumentTypeError(f"{op}: shape must be an int or a sequence of ints, got {shape!r}") from None


# ---------------------------------------------------------------------- #
# helpers
# ---------------------------------------------------------------------- #
def normalize_axes(axes, ndim: int, op: str):
    """``axes`` (None, int or sequence) -> sorted tuple of non-negative axes,
    or None for "every axis" (NDArray's normaliser otherwise)."""
    return None if axes is None else _normalize_axes(axes, ndim, op)


def check_like_input(op: str, x: NDArray, **params: NDArray) -> None:
    """Each of ``params`` (a fused norm's weight and bias) on the input's device
    and in its dtype, else the typed error naming ``op`` and the parameter."""
    for name, a in params.items():
        if a.device != x.device:
            raise DeviceMismatchError(f"{op}: the {name} is on {a.device}, the input on "
                                      f"{x.device}; all must share one device")
        if a.dtype != x.dtype:
            raise UnsupportedDTypeError(f"{op}: the {name} is {a.dtype}, the input "
                                        f"{x.dtype}; all must share one dtype")


def kept_dims_shape(shape: tuple, axes) -> tuple:
    """``shape`` with the reduced ``axes`` (normalized, None: all) set to 1:
    the shape of a reduction's result with ``keepdims=True``."""
    if axes is None:
        return (1,) * len(shape)
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def _constant(x, like: Tensor, op: str) -> Tensor:
    """The array operand of a binary op (an NDArray or NumPy array) as a
    constant on ``like``'s device and dtype."""
    if isinstance(x, (NDArray, np.ndarray)):
        return Tensor(x, device=like.device, dtype=like.dtype, requires_grad=False)
    raise TypeError(f"{op}: unsupported operand of type {type(x).__name__}; expected a Tensor, "
                    f"a number, an NDArray or a NumPy array")


def unbroadcast(grad: Tensor, shape: tuple) -> Tensor:
    """Sum ``grad`` over the axes that broadcasting added or stretched so that
    it has ``shape`` (the adjoint of ``broadcast_to(x, grad.shape)``)."""
    gshape = grad.shape
    if gshape == shape:
        return grad
    extra = len(gshape) - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, d in enumerate(shape) if d == 1 and gshape[i + extra] != 1)
    if axes:
        grad = summation(grad, axes)
    if grad.shape != shape:
        grad = reshape(grad, shape)
    return grad


def _const(data: NDArray) -> Tensor:
    return Tensor.make_const(data)


# ---------------------------------------------------------------------- #
# element-wise binary ops (broadcasting)
# ---------------------------------------------------------------------- #
class EWiseAdd(TensorOp):
    """``a + b`` (broadcasting); adjoints ``g, g`` summed back to each shape."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a + b

    def gradient_needed(self, out_grad: Tensor, node: Tensor, need):
        a, b = node.inputs
        return (unbroadcast(out_grad, a.shape) if need[0] else None,
                unbroadcast(out_grad, b.shape) if need[1] else None)


def add(a, b):
    """``a + b``; ``b`` may also be a number (``add_scalar``) or an array."""
    if isinstance(b, Tensor):
        return _make(_EWISE_ADD, (a, b))
    if isinstance(b, _SCALARS):
        return _make(AddScalar(b), (a,))
    return _make(_EWISE_ADD, (a, _constant(b, a, "add")))


class AddScalar(TensorOp):
    """``a + scalar``."""

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a: NDArray) -> NDArray:
        return a + self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad


def add_scalar(a, scalar):
    return _make(AddScalar(scalar), (a,))


class EWiseMul(TensorOp):
    """``a * b`` (broadcasting); adjoints ``g*b, g*a``."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a * b

    def gradient_needed(self, out_grad: Tensor, node: Tensor, need):
        a, b = node.inputs
        return (unbroadcast(out_grad * b, a.shape) if need[0] else None,
                unbroadcast(out_grad * a, b.shape) if need[1] else None)


def multiply(a, b):
    """``a * b``; ``b`` may also be a number (``mul_scalar``) or an array."""
    if isinstance(b, Tensor):
        return _make(_EWISE_MUL, (a, b))
    if isinstance(b, _SCALARS):
        return _make(MulScalar(b), (a,))
    return _make(_EWISE_MUL, (a, _constant(b, a, "multiply")))


class MulScalar(TensorOp):
    """``a * scalar``."""

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a: NDArray) -> NDArray:
        return a * self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor):
        return _make(MulScalar(self.scalar), (out_grad,))


def mul_scalar(a, scalar):
    return _make(MulScalar(scalar), (a,))


class EWisePow(TensorOp):
    """``a ** b`` element-wise (broadcasting); adjoints ``g*b*a^(b-1)``, ``g*a^b*ln a``."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a ** b

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, b = node.inputs
        ga = out_grad * b * power(a, add_scalar(b, -1))
        gb = out_grad * node * log(a)
        return unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)


def power(a, b):
    """``a ** b``; ``b`` may also be a number (``power_scalar``) or an array."""
    if isinstance(b, Tensor):
        return _make(EWisePow(), (a, b))
    if isinstance(b, _SCALARS):
        return _make(PowerScalar(b), (a,))
    return _make(EWisePow(), (a, _constant(b, a, "power")))


class PowerScalar(TensorOp):
    """``a ** scalar`` for any real scalar; adjoint ``g * s * a^(s-1)``."""

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a: NDArray) -> NDArray:
        return a ** self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor):
        a = node.inputs[0]
        s = self.scalar
        if s == 0:
            return out_grad * 0.0
        if s == 1:
            return out_grad
        if s == 2:
            return out_grad * mul_scalar(a, 2.0)
        return out_grad * mul_scalar(power_scalar(a, s - 1), s)


def power_scalar(a, scalar):
    return _make(PowerScalar(scalar), (a,))


class EWiseDiv(TensorOp):
    """``a / b`` (broadcasting); adjoints ``g/b``, ``-g*a/b^2``."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a / b

    def gradient_needed(self, out_grad: Tensor, node: Tensor, need):
        a, b = node.inputs
        ga = unbroadcast(out_grad / b, a.shape) if need[0] else None
        gb = unbroadcast(negate(out_grad * a / power_scalar(b, 2)), b.shape) if need[1] else None
        return ga, gb


def divide(a, b):
    """``a / b``; either side may also be a number or an array (``2 / x`` is
    ``mul_scalar(power_scalar(x, -1), 2)``)."""
    if isinstance(a, Tensor):
        if isinstance(b, Tensor):
            return _make(_EWISE_DIV, (a, b))
        if isinstance(b, _SCALARS):
            return _make(DivScalar(b), (a,))
        return _make(_EWISE_DIV, (a, _constant(b, a, "divide")))
    if isinstance(a, _SCALARS):
        return _make(MulScalar(a), (_make(PowerScalar(-1), (b,)),))
    return _make(_EWISE_DIV, (_constant(a, b, "divide"), b))


class DivScalar(TensorOp):
    """``a / scalar``."""

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a: NDArray) -> NDArray:
        return a / self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor):
        return _make(DivScalar(self.scalar), (out_grad,))


def divide_scalar(a, scalar):
    return _make(DivScalar(scalar), (a,))


class Negate(TensorOp):
    """``-a``."""

    def compute(self, a: NDArray) -> NDArray:
        return -a

    def gradient(self, out_grad: Tensor, node: Tensor):
        return _make(_NEGATE, (out_grad,))


def negate(a):
    return _make(_NEGATE, (a,))


# ---------------------------------------------------------------------- #
# shape ops
# ---------------------------------------------------------------------- #
class Transpose(TensorOp):
    """Swap two axes (``axes=(i, j)``); ``None`` swaps the last two."""

    def __init__(self, axes=None):
        self.axes = axes

    def _perm(self, ndim: int):
        if self.axes is None:
            if ndim < 2:
                raise ShapeError(f"transpose: needs at least 2 dimensions to swap the last two, got {ndim}")
            i, j = ndim - 2, ndim - 1
        else:
            axes = tuple(self.axes)
            if len(axes) != 2:
                raise ShapeError(f"transpose: axes must name exactly two axes to swap, got {self.axes}")
            i, j = (int(x) for x in axes)
            if not (-ndim <= i < ndim and -ndim <= j < ndim):
                raise ShapeError(f"transpose: axes {self.axes} out of range for {ndim} dimension(s)")
            i, j = i % ndim, j % ndim
        perm = list(range(ndim))
        perm[i], perm[j] = perm[j], perm[i]
        return tuple(perm)

    def compute(self, a: NDArray) -> NDArray:
        return a.permute(self._perm(a.ndim))

    def gradient(self, out_grad: Tensor, node: Tensor):
        return transpose(out_grad, self.axes)


def transpose(a, axes=None):
    return _make(Transpose(axes), (a,))


class Reshape(TensorOp):
    """Reshape (one dimension may be -1); the input is compacted first if needed."""

    def __init__(self, shape):
        self.shape = _as_shape(shape, "reshape")

    def compute(self, a: NDArray) -> NDArray:
        try:
            return a.compact().reshape(self.shape)
        except ShapeError:
            raise ShapeError(f"reshape: cannot reshape a tensor of shape {a.shape} (size {a.size}) "
                             f"into shape {self.shape}") from None

    def gradient(self, out_grad: Tensor, node: Tensor):
        return reshape(out_grad, node.inputs[0].shape)


def reshape(a, shape):
    return _make(Reshape(shape), (a,))


class BroadcastTo(TensorOp):
    """Broadcast to ``shape`` (NumPy rules, new leading axes allowed); the
    adjoint is summed over the new and stretched axes."""

    def __init__(self, shape):
        self.shape = _as_shape(shape, "broadcast_to")

    def compute(self, a: NDArray) -> NDArray:
        return a.broadcast_to(self.shape)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return unbroadcast(out_grad, node.inputs[0].shape)


def broadcast_to(a, shape):
    return _make(BroadcastTo(shape), (a,))


# ---------------------------------------------------------------------- #
# reductions
# ---------------------------------------------------------------------- #
class Reduction(TensorOp):
    """Base of the ops reducing over ``axes`` (None: every axis; an int; a
    tuple; ``()``: no axis, the input itself): ``reduce`` gets the
    normalized axes; ``name`` is the op's name in error messages."""

    name = "reduction"

    def __init__(self, axes=None):
        self.axes = axes

    def compute(self, a: NDArray) -> NDArray:
        axes = normalize_axes(self.axes, a.ndim, self.name)
        if axes is not None and len(axes) == 0:
            return a
        return self.reduce(a, axes)

    def reduce(self, a: NDArray, axes) -> NDArray:
        raise NotImplementedError()


class Summation(Reduction):
    """Sum over ``axes`` (None: all -> 0-d; int; tuple; ``()`` = identity);
    reduced axes are dropped."""

    name = "summation"

    def reduce(self, a: NDArray, axes) -> NDArray:
        return a.sum(axis=axes)

    def gradient(self, out_grad: Tensor, node: Tensor):
        shape = node.inputs[0].shape
        kept = kept_dims_shape(shape, normalize_axes(self.axes, len(shape), "summation"))
        return broadcast_to(reshape(out_grad, kept), shape)


def summation(a, axes=None):
    return _make(Summation(axes), (a,))


class Max(Reduction):
    """Maximum over ``axes`` (None: all); ties share the adjoint equally."""

    name = "max"

    def __init__(self, axes=None, keepdims: bool = False):
        super().__init__(axes)
        self.keepdims = keepdims

    def reduce(self, a: NDArray, axes) -> NDArray:
        return a.max(axis=axes, keepdims=self.keepdims)

    def gradient(self, out_grad: Tensor, node: Tensor):
        x = node.inputs[0]
        shape = x.shape
        axes = normalize_axes(self.axes, len(shape), "max")
        kept = kept_dims_shape(shape, axes)
        data = x.realize_cached_data()
        m = node.realize_cached_data().compact().reshape(kept).broadcast_to(shape)
        mask = data == m
        weights = mask / mask.sum(axis=axes, keepdims=True).broadcast_to(shape)
        return broadcast_to(reshape(out_grad, kept), shape) * _const(weights)


def max(a, axes=None, keepdims=False):  # noqa: A001 (op name)
    return _make(Max(axes, keepdims), (a,))


# ---------------------------------------------------------------------- #
# matmul
# ---------------------------------------------------------------------- #
class MatMul(TensorOp):
    """NumPy ``matmul`` (batched, batch axes broadcast; 1-D operands allowed);
    adjoints ``g @ b^T`` and ``a^T @ g`` summed over broadcast batch axes."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a @ b

    def gradient_needed(self, out_grad: Tensor, node: Tensor, need):
        a, b = node.inputs
        ashape, bshape = a.shape, b.shape
        A = a if len(ashape) >= 2 else reshape(a, (1,) + ashape)
        B = b if len(bshape) >= 2 else reshape(b, bshape + (1,))
        g = out_grad
        if len(ashape) < 2 or len(bshape) < 2:
            gshape = g.shape
            nb = len(gshape) - (len(ashape) >= 2) - (len(bshape) >= 2)
            g = reshape(g, gshape[:nb] + (A.shape[-2], B.shape[-1]))
        ga = gb = None
        if need[0]:
            ga = unbroadcast(matmul(g, transpose(B)), A.shape)
            if ga.shape != ashape:
                ga = reshape(ga, ashape)
        if need[1]:
            if len(A.shape) > 2 and len(B.shape) == 2:
                # a weight shared by every batch: its adjoint sums a^T @ g over the
                # batches, which is one (K, B*T) @ (B*T, N) product -- no (B, K, N)
                # stack of per-batch products to reduce afterwards
                n = A.shape[-1]
                gb = matmul(transpose(reshape(A, (-1, n))), reshape(g, (-1, B.shape[-1])))
            else:
                gb = unbroadcast(matmul(transpose(A), g), B.shape)
            if gb.shape != bshape:
                gb = reshape(gb, bshape)
        return ga, gb


def matmul(a, b):
    """``a @ b``; ``b`` may also be an array."""
    return _make(_MATMUL, (a, b if isinstance(b, Tensor) else _constant(b, a, "matmul")))


# ---------------------------------------------------------------------- #
# element-wise unary ops
# ---------------------------------------------------------------------- #
class Log(TensorOp):
    """Natural logarithm; adjoint ``g / a``."""

    def compute(self, a: NDArray) -> NDArray:
        return a.log()

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad / node.inputs[0]


def log(a):
    return _make(_LOG, (a,))


class Exp(TensorOp):
    """``e^a``; adjoint ``g * e^a``."""

    def compute(self, a: NDArray) -> NDArray:
        return a.exp()

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * node


def exp(a):
    return _make(_EXP, (a,))


class ReLUGrad(TensorOp):
    """``g`` where the saved ReLU output is positive, else 0: ReLU's backward
    in one kernel.  Linear in ``g``, so its own adjoint is itself."""

    def __init__(self, mask_source: NDArray):
        self.mask_source = mask_source

    def compute(self, g: NDArray) -> NDArray:
        return self.mask_source.relu_grad(g)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return _make(self, (out_grad,))


class ReLU(TensorOp):
    """``max(a, 0)``; adjoint ``g * 1{a > 0}`` (mask read from the data)."""

    def compute(self, a: NDArray) -> NDArray:
        return a.maximum(0.0)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return _make(ReLUGrad(node.realize_cached_data()), (out_grad,))


def relu(a):
    return _make(_RELU, (a,))


class Tanh(TensorOp):
    """``tanh a``; adjoint ``g * (1 - tanh^2 a)``."""

    def compute(self, a: NDArray) -> NDArray:
        return a.tanh()

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * add_scalar(negate(node * node), 1.0)


def tanh(a):
    return _make(_TANH, (a,))


class Sigmoid(TensorOp):
    """``1 / (1 + e^-a)``, computed as ``(1 + tanh(a/2)) / 2`` (no overflow);
    adjoint ``g * s * (1 - s)``."""

    def compute(self, a: NDArray) -> NDArray:
        return ((a * 0.5).tanh() + 1.0) * 0.5

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * node * add_scalar(negate(node), 1.0)


def sigmoid(a):
    return _make(_SIGMOID, (a,))


# ---------------------------------------------------------------------- #
# flip / dilate
# ---------------------------------------------------------------------- #
class Flip(TensorOp):
    """Reverse along ``axes`` (None: every axis)."""

    def __init__(self, axes=None):
        self.axes = axes

    def compute(self, a: NDArray) -> NDArray:
        axes = normalize_axes(self.axes, a.ndim, "flip")
        return a.flip(axes)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return flip(out_grad, self.axes)


def flip(a, axes=None):
    return _make(Flip(axes), (a,))


def _dilate_axes(axes, ndim):
    """Axes to (un)dilate: ints or a tuple; axes >= ndim are ignored (course)."""
    if isinstance(axes, (numbers.Integral, np.integer)):
        axes = (axes,)
    out = []
    for ax in axes:
        ax = int(ax)
        if ax >= ndim or ax < -ndim:
            continue
        out.append(ax % ndim)
    return tuple(sorted(set(out)))


class Dilate(TensorOp):
    """Insert ``dilation`` zeros after every element along ``axes``: size n ->
    n * (1 + dilation).  ``out_shape`` (internal) fixes the result size when
    it is the adjoint of an UnDilate whose input was not a multiple."""

    def __init__(self, axes, dilation: int, out_shape=None):
        self.axes = axes
        self.dilation = int(dilation)
        self.out_shape = out_shape
        if self.dilation < 0:
            raise ShapeError(f"dilate: dilation must be >= 0, got {dilation}")

    def compute(self, a: NDArray) -> NDArray:
        d = self.dilation
        axes = _dilate_axes(self.axes, a.ndim)
        if d == 0 or not axes:
            return a
        shape = list(a.shape)
        for ax in axes:
            shape[ax] *= d + 1
        if self.out_shape is not None:
            shape = list(self.out_shape)
        out = NDArray.make(tuple(shape), device=a.device, dtype=a.dtype)
        out.fill(0.0)
        idx = tuple(slice(None, None, d + 1) if i in axes else slice(None) for i in range(a.ndim))
        out[idx] = a
        return out

    def gradient(self, out_grad: Tensor, node: Tensor):
        return undilate(out_grad, self.axes, self.dilation)


def dilate(a, axes, dilation):
    return _make(Dilate(axes, dilation), (a,))


class UnDilate(TensorOp):
    """Keep every ``(dilation+1)``-th element along ``axes`` from index 0."""

    def __init__(self, axes, dilation: int):
        self.axes = axes
        self.dilation = int(dilation)
        if self.dilation < 0:
            raise ShapeError(f"undilate: dilation must be >= 0, got {dilation}")

    def compute(self, a: NDArray) -> NDArray:
        d = self.dilation
        axes = _dilate_axes(self.axes, a.ndim)
        if d == 0 or not axes:
            return a
        idx = tuple(slice(None, None, d + 1) if i in axes else slice(None) for i in range(a.ndim))
        return a[idx].compact()

    def gradient(self, out_grad: Tensor, node: Tensor):
        shape = node.inputs[0].shape
        return _make(Dilate(self.axes, self.dilation, out_shape=shape), (out_grad,))


def undilate(a, axes, dilation):
    return _make(UnDilate(axes, dilation), (a,))


# shared instances of the stateless ops (the operator methods use them too)
_EWISE_ADD, _EWISE_MUL, _EWISE_DIV = EWiseAdd(), EWiseMul(), EWiseDiv()
_NEGATE, _MATMUL, _LOG, _EXP = Negate(), MatMul(), Log(), Exp()
_RELU, _TANH, _SIGMOID = ReLU(), Tanh(), Sigmoid()

for _name, _cls, _fn in [
    ("add", EWiseAdd, add), ("add_scalar", AddScalar, add_scalar),
    ("multiply", EWiseMul, multiply), ("mul_scalar", MulScalar, mul_scalar),
    ("power", EWisePow, power), ("power_scalar", PowerScalar, power_scalar),
    ("divide", EWiseDiv, divide), ("divide_scalar", DivScalar, divide_scalar),
    ("negate", Negate, negate), ("transpose", Transpose, transpose),
    ("reshape", Reshape, reshape), ("broadcast_to", BroadcastTo, broadcast_to),
    ("summation", Summation, summation), ("max", Max, max), ("matmul", MatMul, matmul),
    ("log", Log, log), ("exp", Exp, exp), ("relu", ReLU, relu), ("tanh", Tanh, tanh),
    ("sigmoid", Sigmoid, sigmoid), ("flip", Flip, flip), ("dilate", Dilate, dilate),
    ("undilate", UnDilate, undilate),
]:
    register_op(_name, _cls, _fn)
del _name, _cls, _fn
