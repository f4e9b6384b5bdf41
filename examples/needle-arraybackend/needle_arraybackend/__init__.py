"""A needle backend over Python's ``array`` module, in plain Python loops.

This file is the whole plugin.  needle finds it through the entry point
``pyarray = "needle_arraybackend"`` in the group ``needle.backends`` (see
pyproject.toml) and calls the hook :func:`needle_backends` below.  Only
``needle.protocol`` is imported from needle.

What a backend must know (the rest is needle's job):

* a *buffer* is a flat run of elements with ``size``, ``dtype`` and ``ptr()``;
* views (shape, strides, offset) arrive as integers, counted in elements;
* every kernel writes into an ``out`` buffer needle allocated beforehand.
"""

from __future__ import annotations

import functools
import math
from array import array

from needle.protocol import PROTOCOL_VERSION, Backend, hookimpl

__version__ = "0.1.0"

TYPECODES = {"float32": "f", "float64": "d"}


class Buffer:
    """``size`` elements of one dtype in an ``array.array``."""

    __slots__ = ("data", "dtype")

    def __init__(self, size, dtype):
        self.dtype = dtype
        self.data = array(TYPECODES[dtype.name], bytes(size * dtype.itemsize))

    @property
    def size(self):
        return len(self.data)

    def ptr(self):
        return self.data.buffer_info()[0]


def walk(shape, strides, offset):
    """Buffer positions of the strided view, in row-major order."""
    positions = [offset]
    for dim, stride in zip(shape, strides):
        positions = [p + k * stride for p in positions for k in range(dim)]
    return positions


# IEEE results where Python's math module raises instead
def _div(x, y):
    if y != 0:
        return x / y
    if x == 0 or math.isnan(x):
        return math.nan
    return math.copysign(math.inf, x) * math.copysign(1.0, y)


def _log(x):
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _max(x, y):
    # NaN from either side wins, like numpy.maximum (x >= y alone drops a NaN x)
    return x if (x >= y or x != x) else y


def _sum(values):
    try:
        return math.fsum(values)
    except ValueError:  # fsum refuses inf + -inf; IEEE addition gives nan
        return math.nan
    except OverflowError:  # finite terms overflowing the double range
        return sum(values)


def _pow(x, y):
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.inf
    except ValueError:  # negative base, fractional exponent; or 0 ** negative
        return math.inf if x == 0 else math.nan


class ArrayBackend(Backend):
    name = "pyarray"
    version = __version__
    protocol_version = PROTOCOL_VERSION
    dtypes = ("float32", "float64")

    # buffers ----------------------------------------------------------------
    def Array(self, size, dtype="float32"):  # noqa: N802 (the protocol's name)
        return Buffer(size, self.check_dtype(dtype))

    def from_numpy(self, a, out):
        memoryview(out.data).cast("B")[:] = a.tobytes()  # in place: the buffer keeps its address

    def to_numpy(self, a, shape, strides, offset):
        import numpy as np  # needle hands us NumPy arrays anyway
        d = a.data
        return np.array([d[p] for p in walk(shape, strides, offset)], dtype=a.dtype).reshape(shape)

    def fill(self, out, value):
        out.data[:] = array(out.data.typecode, [value]) * len(out.data)

    # strided copies -------------------------------------------------------------
    def compact(self, a, out, shape, strides, offset):
        src, dst = a.data, out.data
        for i, p in enumerate(walk(shape, strides, offset)):
            dst[i] = src[p]

    def ewise_setitem(self, a, out, shape, strides, offset):
        src, dst = a.data, out.data
        for i, p in enumerate(walk(shape, strides, offset)):
            dst[p] = src[i]

    def scalar_setitem(self, size, val, out, shape, strides, offset):
        dst = out.data
        for p in walk(shape, strides, offset):
            dst[p] = val

    # element-wise: one helper per arity -----------------------------------------
    @staticmethod
    def _binary(f, a, b, out):
        x, y, o = a.data, b.data, out.data
        for i in range(len(o)):
            o[i] = f(x[i], y[i])

    @staticmethod
    def _unary(f, a, out):
        x, o = a.data, out.data
        for i in range(len(o)):
            o[i] = f(x[i])

    def ewise_add(self, a, b, out):
        self._binary(lambda x, y: x + y, a, b, out)

    def ewise_mul(self, a, b, out):
        self._binary(lambda x, y: x * y, a, b, out)

    def ewise_div(self, a, b, out):
        self._binary(_div, a, b, out)

    def ewise_maximum(self, a, b, out):
        self._binary(_max, a, b, out)

    def ewise_eq(self, a, b, out):
        self._binary(lambda x, y: 1.0 if x == y else 0.0, a, b, out)

    def ewise_ge(self, a, b, out):
        self._binary(lambda x, y: 1.0 if x >= y else 0.0, a, b, out)

    def ewise_log(self, a, out):
        self._unary(_log, a, out)

    def ewise_exp(self, a, out):
        self._unary(_exp, a, out)

    def ewise_tanh(self, a, out):
        self._unary(math.tanh, a, out)

    def ewise_neg(self, a, out):  # optional in the protocol; done natively here
        self._unary(lambda x: -x, a, out)

    def scalar_add(self, a, val, out):
        self._unary(lambda x: x + val, a, out)

    def scalar_mul(self, a, val, out):
        self._unary(lambda x: x * val, a, out)

    def scalar_div(self, a, val, out):
        self._unary(lambda x: _div(x, val), a, out)

    def scalar_power(self, a, val, out):
        self._unary(lambda x: _pow(x, val), a, out)

    def scalar_maximum(self, a, val, out):
        self._unary(lambda x: _max(x, val), a, out)

    def scalar_eq(self, a, val, out):
        self._unary(lambda x: 1.0 if x == val else 0.0, a, out)

    def scalar_ge(self, a, val, out):
        self._unary(lambda x: 1.0 if x >= val else 0.0, a, out)

    # reductions over the last axis ---------------------------------------------------
    def reduce_sum(self, a, out, reduce_size):
        x, o = a.data, out.data
        for i in range(len(o)):
            o[i] = _sum(x[i * reduce_size:(i + 1) * reduce_size])

    def reduce_max(self, a, out, reduce_size):
        x, o = a.data, out.data
        for i in range(len(o)):
            o[i] = functools.reduce(_max, x[i * reduce_size:(i + 1) * reduce_size])

    # matmul ------------------------------------------------------------------------------
    def matmul(self, a, b, out, m, n, p):
        x, y, o = a.data, b.data, out.data
        for i in range(m):
            row = x[i * n:(i + 1) * n]
            for j in range(p):
                o[i * p + j] = math.fsum(row[k] * y[k * p + j] for k in range(n))

    # op overrides: a fused kernel for a whole op -----------------------------------------
    def logsumexp(self, a, out, outer, inner):
        x, o = a.data, out.data
        for i in range(outer):
            row = x[i * inner:(i + 1) * inner]
            m = functools.reduce(_max, row)
            if math.isnan(m) or math.isinf(m):  # +inf, all -inf, or nan: the row's answer is m
                o[i] = m
                continue
            o[i] = m + math.log(math.fsum(_exp(v - m) for v in row))


@hookimpl
def needle_backends():
    """needle's hook: the backends this plugin provides."""
    return [ArrayBackend()]
