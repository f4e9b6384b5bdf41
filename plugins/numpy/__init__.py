"""needle's reference backend, in plain NumPy.

It is the oracle the test-suite compares every other backend with, and the
template to copy when writing a backend of your own: each kernel is a few
obvious lines over a flat NumPy array.  See ``docs/backends.md``.
"""

from __future__ import annotations

import numpy as np

from needle.errors import OutOfBoundsError
from needle.protocol import PROTOCOL_VERSION, Backend, check_seed, counter_uniform, hookimpl

__version__ = "0.1.0"


class Array:
    """A flat buffer: one 1-D NumPy array of ``size`` elements."""

    __slots__ = ("array",)

    def __init__(self, size: int, dtype=np.float32):
        self.array = np.empty(size, dtype=dtype)

    @property
    def size(self) -> int:
        return self.array.size

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def ptr(self) -> int:
        return self.array.ctypes.data


def _view(a: Array, shape, strides, offset) -> np.ndarray:
    """The strided view of a buffer that the kernel arguments describe."""
    item = a.array.itemsize
    # the ndarray constructor is much cheaper than as_strided on small arrays
    return np.ndarray(tuple(shape), dtype=a.array.dtype, buffer=a.array, offset=offset * item,
                      strides=tuple(s * item for s in strides))


class NumpyBackend(Backend):
    name = "numpy"
    host_memory = True  # buffers are NumPy arrays; ptr() is their data address
    version = __version__
    protocol_version = PROTOCOL_VERSION
    dtypes = ("float32", "float64")
    __tile_size__ = 8

    def device_names(self):
        return ["cpu_numpy"]

    def config(self):
        return {"numpy": np.__version__, "threads": "as NumPy's BLAS"}

    # buffers --------------------------------------------------------------
    def Array(self, size, dtype=np.dtype("float32")):  # noqa: N802
        return Array(size, self.check_dtype(dtype))

    def from_numpy(self, a, out):
        out.array[:] = a

    def to_numpy(self, a, shape, strides, offset):
        return _view(a, shape, strides, offset).copy()

    def fill(self, out, value):
        out.array.fill(value)

    # strided copies ----------------------------------------------------------
    def compact(self, a, out, shape, strides, offset):
        out.array[:] = _view(a, shape, strides, offset).ravel()

    def ewise_setitem(self, a, out, shape, strides, offset):
        _view(out, shape, strides, offset)[...] = a.array.reshape(shape)

    def scalar_setitem(self, size, val, out, shape, strides, offset):
        _view(out, shape, strides, offset)[...] = val

    # element-wise --------------------------------------------------------------
    def ewise_add(self, a, b, out):
        np.add(a.array, b.array, out=out.array)

    def ewise_sub(self, a, b, out):
        np.subtract(a.array, b.array, out=out.array)

    def ewise_mul(self, a, b, out):
        np.multiply(a.array, b.array, out=out.array)

    def ewise_div(self, a, b, out):
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(a.array, b.array, out=out.array)

    def ewise_pow(self, a, b, out):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            np.power(a.array, b.array, out=out.array)

    def ewise_maximum(self, a, b, out):
        np.maximum(a.array, b.array, out=out.array)

    def ewise_eq(self, a, b, out):
        out.array[:] = a.array == b.array

    def ewise_ge(self, a, b, out):
        out.array[:] = a.array >= b.array

    def ewise_neg(self, a, out):
        np.negative(a.array, out=out.array)

    def ewise_log(self, a, out):
        with np.errstate(divide="ignore", invalid="ignore"):
            np.log(a.array, out=out.array)

    def ewise_exp(self, a, out):
        with np.errstate(over="ignore"):
            np.exp(a.array, out=out.array)

    def ewise_tanh(self, a, out):
        np.tanh(a.array, out=out.array)

    def ewise_sqrt(self, a, out):
        with np.errstate(invalid="ignore"):
            np.sqrt(a.array, out=out.array)

    def ewise_relu_grad(self, a, g, out):
        np.multiply(g.array, a.array > 0, out=out.array)

    # scalar ----------------------------------------------------------------------
    def scalar_add(self, a, val, out):
        np.add(a.array, val, out=out.array)

    def scalar_sub(self, a, val, out):
        np.subtract(a.array, val, out=out.array)

    def scalar_mul(self, a, val, out):
        np.multiply(a.array, val, out=out.array)

    def scalar_div(self, a, val, out):
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(a.array, val, out=out.array)

    def scalar_rdiv(self, a, val, out):
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(val, a.array, out=out.array)

    def scalar_power(self, a, val, out):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            np.power(a.array, a.dtype.type(val), out=out.array)

    def scalar_maximum(self, a, val, out):
        np.maximum(a.array, val, out=out.array)

    def scalar_eq(self, a, val, out):
        out.array[:] = a.array == val

    def scalar_ge(self, a, val, out):
        out.array[:] = a.array >= val

    # reductions ----------------------------------------------------------------------
    def reduce_sum(self, a, out, reduce_size):
        out.array[:] = a.array[: out.size * reduce_size].reshape(-1, reduce_size).sum(axis=1)

    def reduce_max(self, a, out, reduce_size):
        out.array[:] = a.array[: out.size * reduce_size].reshape(-1, reduce_size).max(axis=1)

    # matmul ----------------------------------------------------------------------------
    def matmul(self, a, b, out, m, n, p):
        np.matmul(a.array[: m * n].reshape(m, n), b.array[: n * p].reshape(n, p),
                  out=out.array[: m * p].reshape(m, p))

    def matmul_strided(self, a, b, out, batch, m, n, p, a_strides, a_offset, b_strides, b_offset):
        av = _view(a, (batch, m, n), a_strides, a_offset)
        bv = _view(b, (batch, n, p), b_strides, b_offset)
        np.matmul(av, bv, out=out.array[: batch * m * p].reshape(batch, m, p))

    def matmul_tiled(self, a, b, out, m, n, p):
        t = self.__tile_size__
        at = a.array[: m * n].reshape(m // t, n // t, t, t).transpose(0, 2, 1, 3).reshape(m, n)
        bt = b.array[: n * p].reshape(n // t, p // t, t, t).transpose(0, 2, 1, 3).reshape(n, p)
        c = at @ bt
        out.array[: m * p] = c.reshape(m // t, t, p // t, t).transpose(0, 2, 1, 3).ravel()

    # random numbers (op override: needle.jit draws dropout masks with it) ------------
    def rand_uniform(self, out, seed):
        out.array[:] = counter_uniform(out.size, check_seed(seed), out.dtype)

    # embedding rows with device-side indices (op overrides) ----------------------------
    def embedding(self, w, ids, out, rows, num, dim):
        idx = _indices(ids.array[:rows], num, "embedding")
        out.array[: rows * dim] = w.array[: num * dim].reshape(num, dim)[idx].reshape(-1)

    def embedding_grad(self, g, ids, out, rows, num, dim):
        idx = _indices(ids.array[:rows], num, "embedding_grad")
        table = out.array[: num * dim].reshape(num, dim)
        table[:] = 0
        np.add.at(table, idx, g.array[: rows * dim].reshape(rows, dim))  # in increasing i


def _indices(ids: np.ndarray, num: int, op: str) -> np.ndarray:
    bad = ~((ids >= 0) & (ids < num) & (ids == np.floor(ids)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise OutOfBoundsError(f"{op}: index {ids[i]!r} at position {i} is not a whole number in [0, {num})")
    return ids.astype(np.int64)


@hookimpl
def needle_backends():
    return [NumpyBackend()]
