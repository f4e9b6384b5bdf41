"""Basic tensor constructors: random, constant, one-hot, *_like."""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..backend_ndarray import NDArray, capture, default_device
from ..backend_ndarray.device import BackendDevice, device as _device_by_name, one_hot_rows
from ..backend_ndarray.ndarray import _as_shape, device_uniform
from ..errors import ArgumentTypeError, JitError, OutOfBoundsError, UnsupportedDTypeError
from ..validation import check_int, check_probability

__all__ = ["rand", "randn", "constant", "ones", "zeros", "randb", "one_hot", "zeros_like",
           "ones_like"]


def _device(device):
    if device is None:
        return default_device()
    return device if isinstance(device, BackendDevice) else _device_by_name(device)


def _dtype(dtype):
    # backends store floats only: boolean masks (randb) are 0/1 in float32
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise UnsupportedDTypeError(f"init: unknown dtype {dtype!r}; use 'float32' or 'float64'") from None
    return np.dtype("float32") if dt.kind in "biu" else dt


def _shape(shape):
    # init.rand((2, 3)) and init.rand(2, 3) both work
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return _as_shape(shape, "init")


def _wrap(host: np.ndarray, device, dtype, requires_grad) -> Tensor:
    data = NDArray(host, device=_device(device), dtype=_dtype(dtype))
    return Tensor.make_const(data, requires_grad=requires_grad)


def _new_seed() -> float:
    return float(np.random.randint(0, 2**32, dtype=np.int64))


def _captured_uniform(shape, device, dtype, op: str) -> NDArray:
    """Inside a needle.jit capture: uniform numbers from the device's
    counter-based generator, seeded afresh from ``np.random`` before every
    replay (a different stream from eager draws, as docs/jit.md says)."""
    seed = capture.dynamic(_new_seed(), _new_seed)
    arr = device_uniform(shape, _device(device), _dtype(dtype), seed)
    if arr is None:
        raise JitError(f"needle.jit: {op} inside a captured step needs the backend's rand_uniform kernel, "
                       f"which {_device(device).backend_name} lacks (at {capture.user_line()}); a replay "
                       f"cannot draw from NumPy. Draw outside the step and pass the result as an argument")
    return arr


def rand(*shape, low=0.0, high=1.0, device=None, dtype="float32", requires_grad=False):
    """Uniform in [low, high): ``np.random.rand(*shape) * (high - low) + low``
    (inside a needle.jit capture: the device generator, fresh each replay)."""
    if capture.capturing():
        u = _captured_uniform(_shape(shape), device, dtype, "init.rand")
        return Tensor.make_const(u * (high - low) + low, requires_grad=requires_grad)
    host = np.random.rand(*_shape(shape)) * (high - low) + low
    return _wrap(host, device, dtype, requires_grad)


def randn(*shape, mean=0.0, std=1.0, device=None, dtype="float32", requires_grad=False):
    """Normal: ``np.random.randn(*shape) * std + mean``."""
    if capture.capturing():
        raise JitError(f"needle.jit: init.randn inside a captured step (at {capture.user_line()}): a replay "
                       f"cannot draw from NumPy; draw outside the step and pass the result as an argument")
    host = np.random.randn(*_shape(shape)) * std + mean
    return _wrap(host, device, dtype, requires_grad)


def constant(*shape, c=1.0, device=None, dtype="float32", requires_grad=False):
    """Every element ``c``."""
    data = NDArray.make(_shape(shape), device=_device(device), dtype=_dtype(dtype))
    data.fill(c)
    return Tensor.make_const(data, requires_grad=requires_grad)


def ones(*shape, device=None, dtype="float32", requires_grad=False):
    return constant(*shape, c=1.0, device=device, dtype=dtype, requires_grad=requires_grad)


def zeros(*shape, device=None, dtype="float32", requires_grad=False):
    return constant(*shape, c=0.0, device=device, dtype=dtype, requires_grad=requires_grad)


def randb(*shape, p=0.5, device=None, dtype="bool", requires_grad=False):
    """Bernoulli mask: ``np.random.rand(*shape) <= p`` as 0/1 (stored as float32
    for ``dtype="bool"``)."""
    p = check_probability("randb", "p", p)
    if capture.capturing():
        mask = _captured_uniform(_shape(shape), device, dtype, "init.randb") <= p
        return Tensor.make_const(mask, requires_grad=requires_grad)
    host = np.random.rand(*_shape(shape)) <= p
    return _wrap(host, device, dtype, requires_grad)


def one_hot(n, i, device=None, dtype="float32", requires_grad=False):
    """Rows of ``eye(n)`` picked by the indices in ``i`` (a Tensor, NDArray,
    array or list; cast to int): shape ``i.shape + (n,)``."""
    if isinstance(i, Tensor):
        idx = i.numpy()
    elif isinstance(i, NDArray):
        idx = i.numpy()
    else:
        idx = np.asarray(i)
    n = check_int("one_hot", "n", n, 0)
    if idx.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"one_hot: indices must be numbers, got dtype {idx.dtype}")
    if idx.dtype.kind == "f" and idx.size and not (np.isfinite(idx).all() and (idx == np.floor(idx)).all()):
        bad = idx[~(np.isfinite(idx) & (idx == np.floor(idx)))].ravel()[0]
        raise OutOfBoundsError(f"one_hot: indices must be whole numbers in [0, {n}); got {bad}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise OutOfBoundsError(f"one_hot: indices must lie in [0, {n}); got min {idx.min()}, "
                               f"max {idx.max()}")
    host = one_hot_rows(n, idx, _dtype(dtype))  # 0/1 are exact in any float dtype
    return _wrap(host, device, dtype, requires_grad)


def zeros_like(array, *, device=None, requires_grad=False):
    """Zeros with ``array``'s shape and dtype, on its device unless given."""
    device = device if device is not None else array.device
    return zeros(*array.shape, dtype=array.dtype, device=device, requires_grad=requires_grad)


def ones_like(array, *, device=None, requires_grad=False):
    """Ones with ``array``'s shape and dtype, on its device unless given."""
    device = device if device is not None else array.device
    return ones(*array.shape, dtype=array.dtype, device=device, requires_grad=requires_grad)
