"""NumPy <-> CPU-backend buffer helpers for the tests in this folder."""

import numpy as np

DTYPES = [np.float32, np.float64]


def put(be, arr, dtype=None):
    """A backend buffer holding ``arr`` flattened (C order)."""
    arr = np.ascontiguousarray(arr, dtype=dtype or arr.dtype).ravel()
    buf = be.Array(arr.size, arr.dtype)
    be.from_numpy(arr, buf)
    return buf


def get(be, buf, shape=None):
    """The whole buffer (or its first prod(shape) elements) as a NumPy array."""
    shape = (buf.size,) if shape is None else tuple(shape)
    strides = tuple(int(np.prod(shape[k + 1:])) for k in range(len(shape)))
    return be.to_numpy(buf, shape, strides, 0)
