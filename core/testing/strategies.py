"""hypothesis strategies and checks for NDArray's view logic.

Each ``check_*`` function takes a device and one drawn case, performs the
operation both on an ``NDArray`` on that device and on a NumPy array, and
asserts they agree (values, shape, and that views share their buffer).
The conformance suite and needle's own tests/core/test_ndarray_properties.py
both drive them, with different example counts.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from hypothesis import strategies as st

MAX_SIDE = 5


def _nd():
    import needle.backend_ndarray as nd
    return nd


# Strategies are built once and reused: building them per draw costs more
# than the checks themselves.
@lru_cache(maxsize=None)
def _ints(lo, hi):
    return st.integers(lo, hi)


@lru_cache(maxsize=None)
def _bound(dim):
    return st.none() | st.integers(-dim - 2, dim + 2)


@lru_cache(maxsize=None)
def _perm(n):
    return st.permutations(range(n))


_BOOL = st.booleans()
_STEP = st.none() | st.integers(1, 4)


@lru_cache(maxsize=None)
def dims(min_dims=1, max_dims=4, min_side=1, max_side=MAX_SIDE):
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def _values(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def index_for(draw, shape, allow_int=True):
    """One int or slice per axis: ints in [-dim, dim), slices with any
    start/stop (negative, past the end, None) and steps 1..4."""
    out = []
    for dim in shape:
        if allow_int and dim > 0 and draw(_ints(0, 3)) == 0:
            out.append(draw(_ints(-dim, dim - 1)))
            continue
        bound = _bound(dim)
        out.append(slice(draw(bound), draw(bound), draw(_STEP)))
    return tuple(out)


def numpy_index(idx, shape):
    """The NumPy index with course semantics: an int k keeps its axis (k:k+1)."""
    return tuple(slice(i % d, i % d + 1) if isinstance(i, int) else i for i, d in zip(idx, shape))


_KINDS = st.sampled_from(["slice", "permute", "broadcast"])
_KINDS_NO_BROADCAST = st.sampled_from(["slice", "permute"])


@st.composite
def base_views(draw, max_dims=4, broadcast=True):
    """``(shape, ops)``: a starting shape and a chain of view operations
    (slice / permute / broadcast) producing a possibly non-compact view."""
    shape = draw(dims(1, max_dims))
    ops, cur = [], shape
    for _ in range(draw(_ints(0, 3))):
        kind = draw(_KINDS if broadcast else _KINDS_NO_BROADCAST)
        if kind == "slice":
            idx = index_for(draw, cur)
            cur = np.empty(cur)[numpy_index(idx, cur)].shape
        elif kind == "permute":
            perm = tuple(draw(_perm(len(cur))))
            cur = tuple(cur[p] for p in perm)
            idx = perm
        else:
            new = tuple(draw(_ints(1, 3)) if d == 1 else d for d in cur)
            lead = tuple(draw(dims(0, 1, 1, 3)))
            idx = lead + new
            cur = idx
        ops.append((kind, idx))
    return shape, ops


def apply_np(x, ops):
    """The view chain on a NumPy array."""
    for kind, arg in ops:
        if kind == "slice":
            x = x[numpy_index(arg, x.shape)]
        elif kind == "permute":
            x = x.transpose(arg)
        else:
            x = np.broadcast_to(x, arg)
    return x


def apply_views(a, x, ops):
    """Apply the view chain to an NDArray ``a`` and a NumPy array ``x`` alike."""
    for kind, arg in ops:
        if kind == "slice":
            a = a[arg]
        elif kind == "permute":
            a = a.permute(arg)
        else:
            a = a.broadcast_to(arg)
    return a, apply_np(x, ops)


def _make(dev, shape_or_x, seed=0):
    x = shape_or_x if isinstance(shape_or_x, np.ndarray) else _values(shape_or_x, seed)
    return _nd().array(x, device=dev), x


def _same_view(view, a, x_view):
    assert view._handle is a._handle, "a view must share its source's buffer"
    assert view.shape == x_view.shape, f"shape {view.shape} != numpy {x_view.shape}"
    np.testing.assert_array_equal(view.numpy(), x_view)


# ---------------------------------------------------------------------- #
# strategies + checks, one pair per operation
# ---------------------------------------------------------------------- #
def _factor_shape(draw, size):
    factors, n, p = [], size, 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    k = draw(_ints(1, 4))
    bins = [1] * k
    for f in factors:
        bins[draw(_ints(0, k - 1))] *= f
    for _ in range(draw(_ints(0, 1))):
        bins.insert(draw(_ints(0, len(bins))), 1)
    if draw(_BOOL):
        bins[draw(_ints(0, len(bins) - 1))] = -1
    return tuple(bins)


@st.composite
def reshape_cases(draw):
    shape = draw(dims(1, 4))
    return shape, _factor_shape(draw, int(np.prod(shape)))


def check_reshape(dev, case):
    shape, new = case
    a, x = _make(dev, shape)
    _same_view(a.reshape(new), a, x.reshape(new))


@st.composite
def permute_cases(draw):
    shape, ops = draw(base_views())
    ndim = apply_np(np.empty(shape), ops).ndim
    return shape, ops, tuple(draw(_perm(ndim)))


def check_permute(dev, case):
    shape, ops, perm = case
    a, x = _make(dev, shape)
    a, x = apply_views(a, x, ops)
    _same_view(a.permute(perm), a, x.transpose(perm))


@st.composite
def broadcast_cases(draw):
    shape = draw(dims(1, 4, 1, 4).map(lambda s: tuple(1 if d % 2 else d for d in s)))
    target = tuple(draw(_ints(1, 4)) if d == 1 else d for d in shape)
    lead = tuple(draw(dims(0, 2, 1, 3)))
    ops = draw(st.just([]) | st.just([("slice", tuple(slice(None, None, 1) for _ in shape))]))
    return shape, ops, lead + target


def check_broadcast_to(dev, case):
    shape, ops, target = case
    a, x = _make(dev, shape)
    a, x = apply_views(a, x, ops)
    _same_view(a.broadcast_to(target), a, np.broadcast_to(x, target))


@st.composite
def getitem_cases(draw):
    shape, ops = draw(base_views(3))
    return shape, ops, index_for(draw, apply_np(np.empty(shape), ops).shape)


def check_getitem(dev, case):
    shape, ops, idx = case
    a, x = _make(dev, shape)
    a, x = apply_views(a, x, ops)
    _same_view(a[idx], a, x[numpy_index(idx, x.shape)])


@st.composite
def as_strided_cases(draw):
    n = draw(_ints(1, 80))
    offset = draw(_ints(0, n - 1))
    shape = draw(dims(0, 4, 1, 4))
    strides = tuple(draw(_ints(0, 7)) for _ in shape)
    reach = sum((d - 1) * s for d, s in zip(shape, strides))
    # keep the view inside the buffer
    offset = min(offset, n - 1 - reach) if reach <= n - 1 else None
    if offset is None:
        strides = tuple(0 for _ in shape)
        offset = 0
    return n, offset, shape, strides


def check_as_strided(dev, case):
    n, offset, shape, strides = case
    base, x = _make(dev, (n,))
    a = base[offset:]
    view = a.as_strided(shape, strides)
    want = np.lib.stride_tricks.as_strided(x[offset:], shape, tuple(s * x.itemsize for s in strides))
    _same_view(view, base, want)


def compact_cases():
    return base_views()


def check_compact(dev, case):
    shape, ops = case
    a, x = _make(dev, shape)
    v, xv = apply_views(a, x, ops)
    c = v.compact()
    assert c.is_compact(), "compact() returned a non-compact array"
    assert c.strides == tuple(int(np.prod(xv.shape[k + 1:])) for k in range(xv.ndim)), "not row-major"
    assert (c is v) == v.is_compact(), "compact() must return self exactly when already compact"
    np.testing.assert_array_equal(c.numpy(), xv)
    np.testing.assert_array_equal(a.numpy(), x, err_msg="compact() changed its source")


@st.composite
def setitem_cases(draw):
    shape, ops = draw(base_views(3, broadcast=False))  # never write through a broadcast
    idx = index_for(draw, apply_np(np.empty(shape), ops).shape)
    return shape, ops, idx, draw(_BOOL)


def check_setitem_array(dev, case):
    shape, ops, idx, transposed_value = case
    a, x = _make(dev, shape)
    v, xv = apply_views(a, x, ops)  # NumPy views of x: writes land in x
    target = xv[numpy_index(idx, xv.shape)]
    vals = _values(target.shape, 7)
    if transposed_value and target.ndim >= 2:
        src = _nd().array(np.ascontiguousarray(vals.T), device=dev).permute(tuple(reversed(range(vals.ndim))))
    else:
        src = _nd().array(vals, device=dev)
    handle = a._handle
    v[idx] = src
    target[...] = vals
    assert a._handle is handle, "__setitem__ must write in place"
    np.testing.assert_array_equal(a.numpy(), x)


def check_setitem_scalar(dev, case):
    shape, ops, idx, _ = case
    a, x = _make(dev, shape)
    v, xv = apply_views(a, x, ops)
    v[idx] = -7.5
    xv[numpy_index(idx, xv.shape)] = -7.5
    np.testing.assert_array_equal(a.numpy(), x)


#: operation name -> (strategy, check)
CASES = {
    "reshape": (reshape_cases(), check_reshape),
    "permute": (permute_cases(), check_permute),
    "broadcast_to": (broadcast_cases(), check_broadcast_to),
    "getitem": (getitem_cases(), check_getitem),
    "as_strided": (as_strided_cases(), check_as_strided),
    "compact": (compact_cases(), check_compact),
    "setitem_array": (setitem_cases(), check_setitem_array),
    "setitem_scalar": (setitem_cases(), check_setitem_scalar),
}
