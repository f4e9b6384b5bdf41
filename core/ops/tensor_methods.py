"""Operator dunders and methods of ``Tensor``, bound to registered ops.

:data:`TENSOR_METHODS` says which registry op backs each method; ``install``
builds the methods from the registry entries (a test checks the two agree).
Stateless ops are shared instances, and ``Tensor.make_from_op`` is bound
once, so ``a + b`` costs one isinstance check and one node creation.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor
from ..backend_ndarray import NDArray
from .registry import REGISTRY

__all__ = ["TENSOR_METHODS", "install"]

#: Tensor method -> registry op names it dispatches to (tensor operand, scalar operand).
TENSOR_METHODS = {
    "__add__": ("add", "add_scalar"),
    "__radd__": ("add", "add_scalar"),
    "__sub__": ("add", "add_scalar"),  # a - b = add(a, negate(b))
    "__rsub__": ("add", "add_scalar"),
    "__mul__": ("multiply", "mul_scalar"),
    "__rmul__": ("multiply", "mul_scalar"),
    "__truediv__": ("divide", "divide_scalar"),
    "__rtruediv__": ("divide", "mul_scalar"),
    "__pow__": ("power", "power_scalar"),
    "__matmul__": ("matmul",),
    "__neg__": ("negate",),
    "sum": ("summation",),
    "reshape": ("reshape",),
    "broadcast_to": ("broadcast_to",),
    "transpose": ("transpose",),
    "matmul": ("matmul",),
}

# float/int first: isinstance against the numbers ABCs is slow, so plain
# Python numbers (and numpy scalars, which subclass np.generic) skip it
_SCALARS = (float, int, np.generic, numbers.Number)


def install(cls=Tensor) -> None:
    """Define the operator methods on ``cls`` from the registry's ops."""
    ops = {name: REGISTRY[name] for names in TENSOR_METHODS.values() for name in names}
    make1, make2 = Tensor._make1, Tensor._make2
    EWiseAdd, AddScalar = ops["add"].cls, ops["add_scalar"].cls
    EWiseMul, MulScalar = ops["multiply"].cls, ops["mul_scalar"].cls
    EWiseDiv, DivScalar = ops["divide"].cls, ops["divide_scalar"].cls
    EWisePow, PowerScalar = ops["power"].cls, ops["power_scalar"].cls
    MatMul, Negate = ops["matmul"].cls, ops["negate"].cls
    add_op, mul_op, div_op, neg_op, matmul_op = EWiseAdd(), EWiseMul(), EWiseDiv(), Negate(), MatMul()

    def as_tensor(other, like):
        """Array-like operands (NDArray, NumPy array) become constants on like's device."""
        if isinstance(other, (NDArray, np.ndarray)):
            return Tensor(other, device=like.device, dtype=like.dtype, requires_grad=False)
        return None

    def __add__(self, other):
        if isinstance(other, Tensor):
            return make2(add_op, self, other)
        if isinstance(other, _SCALARS):
            return make1(AddScalar(other), self)
        other = as_tensor(other, self)
        return NotImplemented if other is None else make2(add_op, self, other)

    def __sub__(self, other):
        if isinstance(other, Tensor):
            return make2(add_op, self, make1(neg_op, other))
        if isinstance(other, _SCALARS):
            return make1(AddScalar(-other), self)
        other = as_tensor(other, self)
        return NotImplemented if other is None else make2(add_op, self, make1(neg_op, other))

    def __rsub__(self, other):
        if isinstance(other, _SCALARS):
            return make1(AddScalar(other), make1(neg_op, self))
        other = as_tensor(other, self)
        return NotImplemented if other is None else make2(add_op, other, make1(neg_op, self))

    def __mul__(self, other):
        if isinstance(other, Tensor):
            return make2(mul_op, self, other)
        if isinstance(other, _SCALARS):
            return make1(MulScalar(other), self)
        other = as_tensor(other, self)
        return NotImplemented if other is None else make2(mul_op, self, other)

    def __truediv__(self, other):
        if isinstance(other, Tensor):
            return make2(div_op, self, other)
        if isinstance(other, _SCALARS):
            return make1(DivScalar(other), self)
        other = as_tensor(other, self)
        return NotImplemented if other is None else make2(div_op, self, other)

    def __rtruediv__(self, other):
        if isinstance(other, _SCALARS):
            return make1(MulScalar(other), make1(PowerScalar(-1), self))
        other = as_tensor(other, self)
        return NotImplemented if other is None else make2(div_op, other, self)

    def __pow__(self, other):
        if isinstance(other, Tensor):
            return make2(EWisePow(), self, other)
        if isinstance(other, _SCALARS):
            return make1(PowerScalar(other), self)
        other = as_tensor(other, self)
        return NotImplemented if other is None else make2(EWisePow(), self, other)

    def __matmul__(self, other):
        if not isinstance(other, Tensor):
            other = as_tensor(other, self)
            if other is None:
                return NotImplemented
        return make2(matmul_op, self, other)

    def __neg__(self):
        return make1(neg_op, self)

    summation = ops["summation"].function
    reshape = ops["reshape"].function
    broadcast_to = ops["broadcast_to"].function
    transpose = ops["transpose"].function
    matmul = ops["matmul"].function

    def sum(self, axes=None):
        """``summation(self, axes)``."""
        return summation(self, axes)

    def reshape_m(self, *shape):
        """``reshape(self, shape)``; also accepts the shape unpacked."""
        if len(shape) == 1 and not isinstance(shape[0], (numbers.Integral, np.integer)):
            shape = shape[0]
        return reshape(self, shape)

    def broadcast_to_m(self, shape):
        return broadcast_to(self, shape)

    def transpose_m(self, axes=None):
        return transpose(self, axes)

    def matmul_m(self, other):
        return __matmul__(self, other)

    methods = {
        "__add__": __add__, "__radd__": __add__, "__sub__": __sub__, "__rsub__": __rsub__,
        "__mul__": __mul__, "__rmul__": __mul__, "__truediv__": __truediv__,
        "__rtruediv__": __rtruediv__, "__pow__": __pow__, "__matmul__": __matmul__,
        "__neg__": __neg__, "sum": sum, "reshape": reshape_m, "broadcast_to": broadcast_to_m,
        "transpose": transpose_m, "matmul": matmul_m,
    }
    assert set(methods) == set(TENSOR_METHODS)
    for name, fn in methods.items():
        if fn.__name__ != "__add__" and fn.__name__ != "__mul__":  # shared by __radd__/__rmul__
            fn.__name__ = name
        fn.__qualname__ = f"{cls.__name__}.{fn.__name__}"
        setattr(cls, name, fn)
        INSTALLED[name] = fn


#: the functions ``install`` put on Tensor, by method name
INSTALLED: dict = {}
