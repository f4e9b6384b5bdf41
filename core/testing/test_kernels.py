"""Every protocol kernel of the backend under test, on flat buffers, against NumPy.

Each test is tagged with the kernels it exercises (``needle_kernel``) for the
per-kernel report; ``test_every_kernel_is_covered`` keeps that list complete
when the protocol grows.
"""

from __future__ import annotations

import numpy as np
import pytest

from needle.errors import UnsupportedDTypeError
from needle.protocol import OP_OVERRIDE_SIGNATURES, ReplayScalar, counter_uniform, kernel_names

from .reference import (ACC_TOL, TOL, conv_grads, conv_nhwc, from_buffer, logsumexp_rows,
                        softmax_rows, strided_views, to_buffer, view_params)

kernel = pytest.mark.needle_kernel
DTYPES = ("float32", "float64")
COVERED: set = set()


def covers(*names):
    """Mark a test as exercising ``names`` and remember them for the coverage check."""
    COVERED.update(names)
    return kernel(*names)


@pytest.fixture
def backend(conformance_device):
    return conformance_device.require()


@pytest.fixture(params=DTYPES)
def kdtype(request, backend):
    dt = request.param
    if dt not in backend.dtypes:
        pytest.skip(f"backend {backend.name!r} declares dtypes {backend.dtypes}, not {dt}")
    return np.dtype(dt)


@pytest.fixture
def sizes(conformance_quick):
    """Odd element counts, including 1 and a size past typical vector widths."""
    return (1, 7, 33) if conformance_quick else (1, 7, 33, 1001)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------- #
# buffers
# ---------------------------------------------------------------------- #
@covers("Array")
def test_array_allocates_size_dtype_ptr(backend, kdtype, sizes):
    for n in (0,) + tuple(sizes):
        buf = backend.Array(n, kdtype)
        assert buf.size == n, f"Array({n}).size is {buf.size}"
        assert np.dtype(buf.dtype) == kdtype, f"Array(.., {kdtype}).dtype is {buf.dtype}"
        assert isinstance(buf.ptr(), int)
    a, b = backend.Array(5, kdtype), backend.Array(5, kdtype)
    assert a.ptr() != b.ptr(), "two live buffers share storage"


@covers("Array")
def test_array_rejects_unsupported_dtype(backend):
    bad = "int8" if "int8" not in backend.dtypes else "complex128"
    with pytest.raises(UnsupportedDTypeError) as info:
        backend.Array(4, np.dtype(bad))
    assert bad in str(info.value)


@covers("from_numpy", "to_numpy")
def test_from_numpy_to_numpy_roundtrip(backend, kdtype, sizes):
    for n in sizes:
        x = _rng(n).standard_normal(n).astype(kdtype)
        got = from_buffer(backend, to_buffer(backend, x))
        assert got.dtype == kdtype
        np.testing.assert_array_equal(got, x)


@covers("to_numpy")
def test_to_numpy_strided(backend, kdtype):
    base = _rng(1).standard_normal(400).astype(kdtype)
    buf = to_buffer(backend, base)
    for name, view in strided_views(base):
        shape, strides, offset = view_params(base, view)
        got = np.asarray(backend.to_numpy(buf, shape, strides, offset)).reshape(shape)
        np.testing.assert_array_equal(got, view, err_msg=f"to_numpy of view {name}")


@covers("fill")
def test_fill(backend, kdtype, sizes):
    for n in sizes:
        buf = backend.Array(n, kdtype)
        backend.fill(buf, -2.5)
        np.testing.assert_array_equal(from_buffer(backend, buf), np.full(n, -2.5, kdtype))


# ---------------------------------------------------------------------- #
# strided copies
# ---------------------------------------------------------------------- #
@covers("compact")
def test_compact(backend, kdtype):
    base = _rng(2).standard_normal(400).astype(kdtype)
    src = to_buffer(backend, base)
    for name, view in strided_views(base):
        shape, strides, offset = view_params(base, view)
        out = backend.Array(view.size, kdtype)
        backend.compact(src, out, shape, strides, offset)
        np.testing.assert_array_equal(from_buffer(backend, out), view.reshape(-1),
                                      err_msg=f"compact of view {name} {shape} {strides} +{offset}")
    np.testing.assert_array_equal(from_buffer(backend, src), base, err_msg="compact modified its source")


@covers("ewise_setitem")
def test_ewise_setitem(backend, kdtype):
    base = _rng(3).standard_normal(400).astype(kdtype)
    for name, _ in strided_views(base, writable=True):
        expect = base.copy()
        view = dict(strided_views(expect, writable=True))[name]
        shape, strides, offset = view_params(expect, view)
        values = _rng(4).standard_normal(view.size).astype(kdtype)
        view[...] = values.reshape(shape)
        out = to_buffer(backend, base)
        backend.ewise_setitem(to_buffer(backend, values), out, shape, strides, offset)
        np.testing.assert_array_equal(from_buffer(backend, out), expect,
                                      err_msg=f"ewise_setitem into view {name} {shape} {strides} +{offset}")


@covers("scalar_setitem")
def test_scalar_setitem(backend, kdtype):
    base = _rng(5).standard_normal(400).astype(kdtype)
    for name, _ in strided_views(base, writable=True):
        expect = base.copy()
        view = dict(strided_views(expect, writable=True))[name]
        shape, strides, offset = view_params(expect, view)
        view[...] = 3.25
        out = to_buffer(backend, base)
        backend.scalar_setitem(view.size, 3.25, out, shape, strides, offset)
        np.testing.assert_array_equal(from_buffer(backend, out), expect,
                                      err_msg=f"scalar_setitem into view {name} {shape} {strides} +{offset}")


# ---------------------------------------------------------------------- #
# element-wise and scalar kernels
# ---------------------------------------------------------------------- #
def _data(kind, n, dtype, seed):
    """Inputs in each kernel's domain; 'int' gives small integers so ties occur."""
    rng = _rng(seed)
    if kind == "pos":
        x = rng.uniform(0.1, 3.0, n)
    elif kind == "int":
        x = rng.integers(-3, 4, n).astype(np.float64)
    else:
        x = rng.standard_normal(n) * 2
    return x.astype(dtype)


def _binary_ref(f):
    def ref(a, b):
        with np.errstate(all="ignore"):
            return f(a, b)
    return ref


# name -> (numpy reference, domain of a, domain of b)
EWISE_BINARY = {
    "ewise_add": (np.add, "any", "any"),
    "ewise_sub": (np.subtract, "any", "any"),
    "ewise_mul": (np.multiply, "any", "any"),
    "ewise_div": (np.divide, "any", "pos"),
    "ewise_maximum": (np.maximum, "int", "int"),
    "ewise_eq": (lambda a, b: (a == b).astype(a.dtype), "int", "int"),
    "ewise_ge": (lambda a, b: (a >= b).astype(a.dtype), "int", "int"),
    "ewise_pow": (np.power, "pos", "any"),
    "ewise_relu_grad": (lambda a, g: np.where(a > 0, g, 0).astype(a.dtype), "int", "any"),
}
EWISE_UNARY = {
    "ewise_log": (np.log, "pos"),
    "ewise_exp": (np.exp, "any"),
    "ewise_tanh": (np.tanh, "any"),
    "ewise_neg": (np.negative, "any"),
    "ewise_sqrt": (np.sqrt, "pos"),
}
# name -> (numpy reference f(a, val), domain, scalar values)
SCALAR = {
    "scalar_add": (np.add, "any", (1.5, -3.0)),
    "scalar_sub": (np.subtract, "any", (1.5, -3.0)),
    "scalar_mul": (np.multiply, "any", (0.5, -3.0)),
    "scalar_div": (np.divide, "any", (4.0, -0.25)),
    "scalar_rdiv": (lambda a, v: v / a, "pos", (1.0, -2.0)),
    "scalar_power": (np.power, "pos", (2.0, 0.5, 3.0, -1.0)),
    "scalar_maximum": (np.maximum, "int", (0.0, 1.5)),
    "scalar_eq": (lambda a, v: (a == v).astype(a.dtype), "int", (0.0, 2.0)),
    "scalar_ge": (lambda a, v: (a >= v).astype(a.dtype), "int", (0.0, -1.0)),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=covers(n)) for n in EWISE_BINARY])
def test_ewise_binary(backend, kdtype, sizes, name):
    ref, dom_a, dom_b = EWISE_BINARY[name]
    for n in sizes:
        a, b = _data(dom_a, n, kdtype, n), _data(dom_b, n, kdtype, n + 1)
        out = backend.Array(n, kdtype)
        getattr(backend, name)(to_buffer(backend, a), to_buffer(backend, b), out)
        expect = _binary_ref(ref)(a, b).astype(kdtype)
        np.testing.assert_allclose(from_buffer(backend, out), expect, **TOL[kdtype.name],
                                   err_msg=f"{name} on {n} elements")


def _strided_pairs(A, B):
    """(name, a view, b view) of one shape into the 1-D arrays A and B: every
    strided view of A against a compact, a transposed and a broadcast b."""
    for (name, av), (_, bview) in zip(strided_views(A), strided_views(B)):
        shape = av.shape
        size = int(np.prod(shape))
        yield name + " / compact", av, B[:size].reshape(shape)
        if av.ndim >= 2:
            rev = B[2:2 + size].reshape(shape[::-1]).transpose(tuple(range(av.ndim))[::-1])
            yield name + " / transposed", av, rev
        if av.ndim >= 1:
            yield name + " / broadcast-row", av, np.broadcast_to(B[1:1 + shape[-1]], shape)
            yield "broadcast-row / " + name, np.broadcast_to(A[1:1 + shape[-1]], shape), bview


@pytest.mark.parametrize("name", [pytest.param(n, marks=covers("ewise_strided"))
                                  for n in EWISE_BINARY])
def test_ewise_strided(backend, kdtype, name):
    """A binary kernel on strided / broadcast views equals NumPy and the
    compact kernel on the gathered operands (bit for bit)."""
    ref, dom_a, dom_b = EWISE_BINARY[name]
    A, B = _data(dom_a, 500, kdtype, 3), _data(dom_b, 500, kdtype, 4)
    ba, bb = to_buffer(backend, A), to_buffer(backend, B)
    for case, av, bv in _strided_pairs(A, B):
        shape, a_strides, a_off = view_params(A, av)
        _, b_strides, b_off = view_params(B, bv)
        size = int(np.prod(shape))
        out = backend.Array(size, kdtype)
        backend.ewise_strided(name, ba, bb, out, shape, a_strides, a_off, b_strides, b_off)
        got = from_buffer(backend, out)
        expect = _binary_ref(ref)(np.ascontiguousarray(av), np.ascontiguousarray(bv)).astype(kdtype)
        np.testing.assert_allclose(got, expect.reshape(-1), **TOL[kdtype.name],
                                   err_msg=f"ewise_strided {name} on {case}")
        compact = backend.Array(size, kdtype)
        getattr(backend, name)(to_buffer(backend, np.ascontiguousarray(av).reshape(-1)),
                               to_buffer(backend, np.ascontiguousarray(bv).reshape(-1)), compact)
        np.testing.assert_array_equal(got, from_buffer(backend, compact),
                                      err_msg=f"ewise_strided {name} on {case} vs {name}")


@pytest.mark.parametrize("name", [pytest.param(n, marks=covers(n)) for n in EWISE_UNARY])
def test_ewise_unary(backend, kdtype, sizes, name):
    ref, dom = EWISE_UNARY[name]
    for n in sizes:
        a = _data(dom, n, kdtype, n)
        out = backend.Array(n, kdtype)
        getattr(backend, name)(to_buffer(backend, a), out)
        np.testing.assert_allclose(from_buffer(backend, out), ref(a).astype(kdtype), **TOL[kdtype.name],
                                   err_msg=f"{name} on {n} elements")


@pytest.mark.parametrize("name", [pytest.param(n, marks=covers(n)) for n in SCALAR])
def test_scalar(backend, kdtype, sizes, name):
    ref, dom, values = SCALAR[name]
    for n in sizes:
        a = _data(dom, n, kdtype, n)
        for val in values:
            out = backend.Array(n, kdtype)
            getattr(backend, name)(to_buffer(backend, a), float(val), out)
            expect = _binary_ref(ref)(a, kdtype.type(val)).astype(kdtype)
            np.testing.assert_allclose(from_buffer(backend, out), expect, **TOL[kdtype.name],
                                       err_msg=f"{name}(val={val}) on {n} elements")


@covers("ewise_div", "ewise_log", "scalar_power")
def test_ieee_special_values(backend, kdtype):
    """Division by zero, log of 0 and of negatives, fractional power of a negative."""
    a = np.array([1.0, -1.0, 0.0, 2.0], kdtype)
    z = np.zeros(4, kdtype)
    out = backend.Array(4, kdtype)
    backend.ewise_div(to_buffer(backend, a), to_buffer(backend, z), out)
    np.testing.assert_array_equal(from_buffer(backend, out), np.array([np.inf, -np.inf, np.nan, np.inf], kdtype))
    backend.ewise_log(to_buffer(backend, np.array([0.0, -1.0, 1.0, np.e], kdtype)), out)
    np.testing.assert_allclose(from_buffer(backend, out), np.array([-np.inf, np.nan, 0.0, 1.0], kdtype),
                               **TOL[kdtype.name])
    backend.scalar_power(to_buffer(backend, np.array([-4.0, 4.0, -2.0, 0.0], kdtype)), 0.5, out)
    np.testing.assert_allclose(from_buffer(backend, out), np.array([np.nan, 2.0, np.nan, 0.0], kdtype),
                               **TOL[kdtype.name])


@covers("scalar_power")
def test_scalar_power_negative_base_integer_exponent(backend, kdtype):
    a = np.array([-2.0, -1.5, 3.0, -0.5, 0.0], kdtype)
    out = backend.Array(5, kdtype)
    for val in (2.0, 3.0):
        backend.scalar_power(to_buffer(backend, a), val, out)
        np.testing.assert_allclose(from_buffer(backend, out), a ** kdtype.type(val), **TOL[kdtype.name],
                                   err_msg=f"scalar_power(val={val}) on a negative base")


@covers("ewise_add", "ewise_mul")
def test_ewise_out_may_alias_input(backend, kdtype):
    """The protocol's own defaults write into an input (``ewise_mul(out, b, out)``),
    so in-place element-wise calls must work."""
    a = _data("any", 33, kdtype, 1)
    b = _data("any", 33, kdtype, 2)
    ba, bb = to_buffer(backend, a), to_buffer(backend, b)
    backend.ewise_add(ba, bb, ba)
    backend.ewise_mul(ba, bb, ba)
    np.testing.assert_allclose(from_buffer(backend, ba), ((a + b) * b).astype(kdtype), **TOL[kdtype.name])


# ---------------------------------------------------------------------- #
# reductions
# ---------------------------------------------------------------------- #
REDUCTIONS = {"reduce_sum": np.sum, "reduce_max": np.max}


@pytest.mark.parametrize("name", [pytest.param(n, marks=covers(n)) for n in REDUCTIONS])
@pytest.mark.parametrize("outer,red", [(1, 1), (5, 1), (1, 7), (3, 33), (7, 5), (2, 1001)])
def test_reductions(backend, kdtype, conformance_quick, outer, red, name):
    if conformance_quick and outer * red > 200:
        red = 37
    a = _data("any", outer * red, kdtype, red)
    out = backend.Array(outer, kdtype)
    getattr(backend, name)(to_buffer(backend, a), out, red)
    expect = REDUCTIONS[name](a.astype(np.float64).reshape(outer, red), axis=1)
    np.testing.assert_allclose(from_buffer(backend, out), expect, **ACC_TOL[kdtype.name],
                               err_msg=f"{name} over ({outer}, {red})")


# ---------------------------------------------------------------------- #
# matmul
# ---------------------------------------------------------------------- #
MATMUL_SIZES = [(1, 1, 1), (1, 5, 1), (3, 4, 5), (7, 1, 9), (8, 16, 24), (17, 33, 9), (64, 65, 63)]


@covers("matmul")
@pytest.mark.parametrize("m,n,p", MATMUL_SIZES)
def test_matmul(backend, kdtype, conformance_quick, m, n, p):
    if conformance_quick and m * n * p > 5000:
        pytest.skip("--needle-quick: large matmul left out")
    a, b = _data("any", m * n, kdtype, 1).reshape(m, n), _data("any", n * p, kdtype, 2).reshape(n, p)
    out = backend.Array(m * p, kdtype)
    backend.matmul(to_buffer(backend, a), to_buffer(backend, b), out, m, n, p)
    np.testing.assert_allclose(from_buffer(backend, out).reshape(m, p),
                               a.astype(np.float64) @ b.astype(np.float64), **ACC_TOL[kdtype.name],
                               err_msg=f"matmul ({m},{n}) @ ({n},{p})")


@covers("matmul")
def test_matmul_inner_zero(backend, kdtype):
    out = backend.Array(6, kdtype)
    backend.fill(out, 7.0)
    backend.matmul(backend.Array(0, kdtype), backend.Array(0, kdtype), out, 2, 0, 3)
    np.testing.assert_array_equal(from_buffer(backend, out), np.zeros(6, kdtype))


def _batched_operands(kdtype):
    """(name, a view (batch,m,n), b view (batch,n,p)) into two big 1-D arrays."""
    ra, rb = _rng(7), _rng(8)
    A = ra.standard_normal(2000).astype(kdtype)
    B = rb.standard_normal(2000).astype(kdtype)
    cases = []
    cases.append(("compact", A[:3 * 4 * 5].reshape(3, 4, 5), B[:3 * 5 * 6].reshape(3, 5, 6)))
    cases.append(("transposed-a", A[:3 * 5 * 4].reshape(3, 5, 4).transpose(0, 2, 1),
                  B[:3 * 5 * 6].reshape(3, 5, 6)))
    cases.append(("transposed-b-offset", A[3:3 + 2 * 7 * 9].reshape(2, 7, 9),
                  B[11:11 + 2 * 5 * 9].reshape(2, 5, 9).transpose(0, 2, 1)))
    cases.append(("broadcast-b (stride-0 batch)", A[:4 * 3 * 5].reshape(4, 3, 5),
                  np.broadcast_to(B[:5 * 2].reshape(1, 5, 2), (4, 5, 2))))
    cases.append(("broadcast-a, stepped b", np.broadcast_to(A[1:1 + 6 * 4].reshape(6, 4), (3, 6, 4)),
                  B[: 3 * 8 * 5].reshape(3, 8, 5)[:, ::2, :]))
    cases.append(("single batch, odd", A[:1 * 17 * 33].reshape(1, 17, 33), B[:33 * 9].reshape(1, 33, 9)))
    return A, B, cases


@covers("matmul_strided")
def test_matmul_strided(backend, kdtype):
    A, B, cases = _batched_operands(kdtype)
    ba, bb = to_buffer(backend, A), to_buffer(backend, B)
    for name, av, bv in cases:
        batch, m, n = av.shape
        p = bv.shape[2]
        _, a_strides, a_off = view_params(A, av)
        _, b_strides, b_off = view_params(B, bv)
        out = backend.Array(batch * m * p, kdtype)
        backend.matmul_strided(ba, bb, out, batch, m, n, p, a_strides, a_off, b_strides, b_off)
        np.testing.assert_allclose(from_buffer(backend, out).reshape(batch, m, p),
                                   av.astype(np.float64) @ bv.astype(np.float64), **ACC_TOL[kdtype.name],
                                   err_msg=f"matmul_strided case {name}")


@covers("matmul_batched")
def test_matmul_batched(backend, kdtype):
    ra, rb = _rng(9), _rng(10)
    A = ra.standard_normal(4000).astype(kdtype)
    B = rb.standard_normal(4000).astype(kdtype)
    # attention: (batch, seq, heads, dim) permuted to (batch, heads, seq, dim)
    q = A[:2 * 5 * 3 * 4].reshape(2, 5, 3, 4).transpose(0, 2, 1, 3)
    k = B[7:7 + 2 * 5 * 3 * 4].reshape(2, 5, 3, 4).transpose(0, 2, 3, 1)
    cases = [
        ("attention q @ k^T", q, k),
        ("attention scores @ v", A[:2 * 3 * 5 * 5].reshape(2, 3, 5, 5),
         B[:2 * 5 * 3 * 4].reshape(2, 5, 3, 4).transpose(0, 2, 1, 3)),
        ("compact 4-d", A[:2 * 3 * 4 * 5].reshape(2, 3, 4, 5), B[:2 * 3 * 5 * 6].reshape(2, 3, 5, 6)),
        ("broadcast middle axis", np.broadcast_to(A[:2 * 1 * 4 * 5].reshape(2, 1, 4, 5), (2, 3, 4, 5)),
         B[3:3 + 2 * 3 * 5 * 2].reshape(3, 2, 5, 2).transpose(1, 0, 2, 3)),
        ("size-1 axes, stepped", A[:1 * 3 * 8 * 5].reshape(1, 3, 8, 5)[:, :, ::2, :],
         B[:1 * 3 * 5 * 7].reshape(1, 3, 5, 7)),
        ("no batch axes", A[:6 * 4].reshape(4, 6).T, B[:4 * 3].reshape(4, 3)),
    ]
    ba, bb = to_buffer(backend, A), to_buffer(backend, B)
    for name, av, bv in cases:
        batch = av.shape[:-2]
        m, n = av.shape[-2:]
        p = bv.shape[-1]
        _, a_strides, a_off = view_params(A, av)
        _, b_strides, b_off = view_params(B, bv)
        out = backend.Array(int(np.prod(batch)) * m * p, kdtype)
        backend.matmul_batched(ba, bb, out, batch, m, n, p, a_strides, a_off, b_strides, b_off)
        np.testing.assert_allclose(from_buffer(backend, out).reshape(batch + (m, p)),
                                   av.astype(np.float64) @ bv.astype(np.float64), **ACC_TOL[kdtype.name],
                                   err_msg=f"matmul_batched case {name}")


def _tile(x, t):
    r, c = x.shape
    return x.reshape(r // t, t, c // t, t).transpose(0, 2, 1, 3).copy()


@covers("matmul_tiled")
def test_matmul_tiled(backend, kdtype):
    t = int(backend.__tile_size__)
    for m, n, p in ((t, t, t), (2 * t, 3 * t, t), (3 * t, t, 2 * t)):
        a, b = _data("any", m * n, kdtype, m).reshape(m, n), _data("any", n * p, kdtype, p).reshape(n, p)
        out = backend.Array(m * p, kdtype)
        backend.fill(out, np.nan)  # the kernel must overwrite, not accumulate
        backend.matmul_tiled(to_buffer(backend, _tile(a, t)), to_buffer(backend, _tile(b, t)), out, m, n, p)
        got = from_buffer(backend, out).reshape(m // t, p // t, t, t).transpose(0, 2, 1, 3).reshape(m, p)
        np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64), **ACC_TOL[kdtype.name],
                                   err_msg=f"matmul_tiled ({m},{n},{p}) with tile {t}")


# ---------------------------------------------------------------------- #
# op overrides (only those the backend declares)
# ---------------------------------------------------------------------- #
def _override(backend, name):
    fn = dict(backend.op_overrides() or {}).get(name)
    if fn is None:
        pytest.skip(f"backend {backend.name!r} has no op override {name!r} (the op uses its composition)")
    return fn


@kernel("override:logsumexp")
def test_override_logsumexp(backend, kdtype):
    fn = _override(backend, "logsumexp")
    a = (_data("any", 5 * 13, kdtype, 1) * 20).reshape(5, 13)
    out = backend.Array(5, kdtype)
    fn(to_buffer(backend, a), out, 5, 13)
    np.testing.assert_allclose(from_buffer(backend, out), logsumexp_rows(a.astype(np.float64)),
                               **ACC_TOL[kdtype.name])


@kernel("override:sum_leading")
@pytest.mark.parametrize("outer,inner", [(1, 5), (3, 1), (6, 40), (70000, 2), (2, 40000), (300, 300)])
def test_override_sum_leading(backend, kdtype, outer, inner):
    fn = _override(backend, "sum_leading")
    a = _data("any", outer * inner, kdtype, 3).reshape(outer, inner)
    out = backend.Array(inner, kdtype)
    backend.fill(out, np.nan)  # every element must be written
    fn(to_buffer(backend, a), out, outer, inner)
    np.testing.assert_allclose(from_buffer(backend, out), a.astype(np.float64).sum(axis=0),
                               **ACC_TOL[kdtype.name])


@kernel("override:softmax")
def test_override_softmax(backend, kdtype):
    fn = _override(backend, "softmax")
    a = (_data("any", 4 * 9, kdtype, 2) * 20).reshape(4, 9)
    out = backend.Array(36, kdtype)
    fn(to_buffer(backend, a), out, 4, 9)
    np.testing.assert_allclose(from_buffer(backend, out).reshape(4, 9), softmax_rows(a.astype(np.float64)),
                               **ACC_TOL[kdtype.name])


CONV_CASES = [(2, 7, 6, 3, 3, 4, 1, 1), (1, 8, 8, 2, 3, 5, 2, 0), (2, 5, 5, 1, 1, 3, 1, 0),
              (1, 9, 7, 2, 3, 2, 2, 2)]


@kernel("override:conv", "override:conv_grad_input", "override:conv_grad_weight")
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "N{}H{}W{}C{}K{}O{}s{}p{}".format(*c))
def test_override_conv(backend, kdtype, case):
    names = [n for n in ("conv", "conv_grad_input", "conv_grad_weight")
             if n in dict(backend.op_overrides() or {})]
    if not names:
        pytest.skip(f"backend {backend.name!r} has no conv op overrides")
    N, H, W, C, K, O, s, p = case
    x = _data("any", N * H * W * C, kdtype, 1).reshape(N, H, W, C)
    w = _data("any", K * K * C * O, kdtype, 2).reshape(K, K, C, O)
    ref = conv_nhwc(x.astype(np.float64), w.astype(np.float64), s, p)
    g = _data("any", ref.size, kdtype, 3).reshape(ref.shape)
    dx, dw = conv_grads(x.astype(np.float64), w.astype(np.float64), g.astype(np.float64), s, p)
    args = (N, H, W, C, K, O, s, p)
    ov = dict(backend.op_overrides())
    if "conv" in ov:
        out = backend.Array(ref.size, kdtype)
        ov["conv"](to_buffer(backend, x), to_buffer(backend, w), out, *args)
        np.testing.assert_allclose(from_buffer(backend, out).reshape(ref.shape), ref, **ACC_TOL[kdtype.name],
                                   err_msg="op override conv")
    if "conv_grad_input" in ov:
        out = backend.Array(dx.size, kdtype)
        ov["conv_grad_input"](to_buffer(backend, g), to_buffer(backend, w), out, *args)
        np.testing.assert_allclose(from_buffer(backend, out).reshape(dx.shape), dx, **ACC_TOL[kdtype.name],
                                   err_msg="op override conv_grad_input")
    if "conv_grad_weight" in ov:
        out = backend.Array(dw.size, kdtype)
        ov["conv_grad_weight"](to_buffer(backend, x), to_buffer(backend, g), out, *args)
        np.testing.assert_allclose(from_buffer(backend, out).reshape(dw.shape), dw, **ACC_TOL[kdtype.name],
                                   err_msg="op override conv_grad_weight")


# ---- issue 14 fused ops: softmax cross-entropy, multi-tensor optimizer steps ----
@kernel("override:softmax_xent", "override:softmax_xent_grad")
def test_override_softmax_xent(backend, kdtype):
    ov = dict(backend.op_overrides() or {})
    if "softmax_xent" not in ov and "softmax_xent_grad" not in ov:
        pytest.skip(f"backend {backend.name!r} has no softmax_xent overrides")
    rows, classes = 6, 11
    z = (_data("any", rows * classes, kdtype, 4) * 10).reshape(rows, classes)
    y = np.array([0, 10, 3, 3, 7, 1], dtype=kdtype)
    g = _data("any", rows, kdtype, 5)
    z64, idx = z.astype(np.float64), y.astype(np.int64)
    if "softmax_xent" in ov:
        out = backend.Array(rows, kdtype)
        ov["softmax_xent"](to_buffer(backend, z), to_buffer(backend, y), out, rows, classes)
        np.testing.assert_allclose(from_buffer(backend, out), logsumexp_rows(z64) - z64[np.arange(rows), idx],
                                   **ACC_TOL[kdtype.name], err_msg="op override softmax_xent")
    if "softmax_xent_grad" in ov:
        out = backend.Array(rows * classes, kdtype)
        backend.fill(out, np.nan)  # every entry must be written
        ov["softmax_xent_grad"](to_buffer(backend, z), to_buffer(backend, y), to_buffer(backend, g), out,
                                rows, classes)
        want = softmax_rows(z64)
        want[np.arange(rows), idx] -= 1
        np.testing.assert_allclose(from_buffer(backend, out).reshape(rows, classes),
                                   want * g.astype(np.float64)[:, None], **ACC_TOL[kdtype.name],
                                   err_msg="op override softmax_xent_grad")


def _step_lists(backend, kdtype, sizes, seed):
    host = [_data("any", n, kdtype, seed + i) for i, n in enumerate(sizes)]
    return host, [to_buffer(backend, h) for h in host]


@kernel("override:sgd_step", "override:adam_step")
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_override_optimizer_steps(backend, kdtype, wd):
    ov = dict(backend.op_overrides() or {})
    if "sgd_step" not in ov and "adam_step" not in ov:
        pytest.skip(f"backend {backend.name!r} has no multi-tensor optimizer overrides")
    sizes = [7, 1, 300]
    p, pb = _step_lists(backend, kdtype, sizes, 10)
    g, gb = _step_lists(backend, kdtype, sizes, 20)
    m, mb = _step_lists(backend, kdtype, sizes, 30)
    v = [np.abs(x) for x in _step_lists(backend, kdtype, sizes, 40)[0]]
    vb = [to_buffer(backend, x) for x in v]
    tol = ACC_TOL[kdtype.name]

    def outs():
        return [backend.Array(n, kdtype) for n in sizes]
    try:
        if "sgd_step" in ov:
            po, uo = outs(), outs()
            ov["sgd_step"](pb, gb, mb, po, uo, 0.1, 0.9, 0.1, wd)
            for i in range(len(sizes)):
                gi = g[i] + wd * p[i]
                u = 0.9 * m[i] + 0.1 * gi
                np.testing.assert_allclose(from_buffer(backend, uo[i]), u, **tol, err_msg="sgd_step u")
                np.testing.assert_allclose(from_buffer(backend, po[i]), p[i] - 0.1 * u, **tol, err_msg="sgd_step p")
            po = outs()
            ov["sgd_step"](pb, gb, None, po, None, 0.5, 0.0, 1.0, wd)
            for i in range(len(sizes)):
                np.testing.assert_allclose(from_buffer(backend, po[i]), p[i] - 0.5 * (g[i] + wd * p[i]), **tol,
                                           err_msg="sgd_step without momentum")
        if "adam_step" in ov:
            po, mo, vo = outs(), outs(), outs()
            k, eps_s = 3.0, 1e-3
            ov["adam_step"](pb, gb, mb, vb, po, mo, vo, 0.9, 0.1, 0.99, 0.01, wd, k, eps_s, False)
            for i in range(len(sizes)):
                gi = g[i] + wd * p[i]
                mi, vi = 0.9 * m[i] + 0.1 * gi, 0.99 * v[i] + 0.01 * gi * gi
                np.testing.assert_allclose(from_buffer(backend, mo[i]), mi, **tol, err_msg="adam_step m")
                np.testing.assert_allclose(from_buffer(backend, vo[i]), vi, **tol, err_msg="adam_step v")
                np.testing.assert_allclose(from_buffer(backend, po[i]), p[i] - mi / (np.sqrt(vi * k) + eps_s),
                                           **tol, err_msg="adam_step p")
    except UnsupportedDTypeError:
        pass  # the contract lets a backend do only some dtypes; the optimizer then composes


@kernel("override:sgd_step", "override:adam_step")
def test_override_optimizer_steps_in_place(backend, kdtype):
    """The out buffers may be the input buffers themselves (the optimizers
    update a parameter's own array when nothing else sees it): same values."""
    ov = dict(backend.op_overrides() or {})
    if "sgd_step" not in ov and "adam_step" not in ov:
        pytest.skip(f"backend {backend.name!r} has no multi-tensor optimizer overrides")
    sizes = [5, 1, 1000]
    tol = ACC_TOL[kdtype.name]
    try:
        if "sgd_step" in ov:
            p, pb = _step_lists(backend, kdtype, sizes, 11)
            g, gb = _step_lists(backend, kdtype, sizes, 21)
            m, mb = _step_lists(backend, kdtype, sizes, 31)
            ov["sgd_step"](pb, gb, mb, pb, mb, 0.1, 0.9, 0.1, 0.05)
            for i in range(len(sizes)):
                u = 0.9 * m[i] + 0.1 * (g[i] + 0.05 * p[i])
                np.testing.assert_allclose(from_buffer(backend, mb[i]), u, **tol, err_msg="sgd_step u in place")
                np.testing.assert_allclose(from_buffer(backend, pb[i]), p[i] - 0.1 * u, **tol,
                                           err_msg="sgd_step p in place")
        if "adam_step" in ov:
            p, pb = _step_lists(backend, kdtype, sizes, 12)
            g, gb = _step_lists(backend, kdtype, sizes, 22)
            m, mb = _step_lists(backend, kdtype, sizes, 32)
            v = [np.abs(x) for x in _step_lists(backend, kdtype, sizes, 42)[0]]
            vb = [to_buffer(backend, x) for x in v]
            ov["adam_step"](pb, gb, mb, vb, pb, mb, vb, 0.9, 0.1, 0.99, 0.01, 0.0, 3.0, 1e-3, False)
            for i in range(len(sizes)):
                mi, vi = 0.9 * m[i] + 0.1 * g[i], 0.99 * v[i] + 0.01 * g[i] * g[i]
                np.testing.assert_allclose(from_buffer(backend, mb[i]), mi, **tol, err_msg="adam_step m in place")
                np.testing.assert_allclose(from_buffer(backend, vb[i]), vi, **tol, err_msg="adam_step v in place")
                np.testing.assert_allclose(from_buffer(backend, pb[i]), p[i] - mi / (np.sqrt(vi * 3.0) + 1e-3),
                                           **tol, err_msg="adam_step p in place")
    except UnsupportedDTypeError:
        pass  # as above: the optimizer composes for this dtype


# [i14f2 fused nn ops] batch norm, softmax backward, layer norm, LSTM gates ----------
def _run_override(backend, kdtype, name, inputs, out_size, *args):
    fn = _override(backend, name)
    out = backend.Array(out_size, kdtype)
    backend.fill(out, np.nan)  # the kernel must overwrite every element
    fn(*[to_buffer(backend, a.astype(kdtype)) for a in inputs], out, *args)
    return from_buffer(backend, out)


@kernel("override:batch_norm_stats", "override:batch_norm_apply", "override:batch_norm_grad_stats",
        "override:batch_norm_grad_input")
@pytest.mark.parametrize("dims", [(6, 4, 1), (3, 5, 7)], ids=lambda d: "x".join(map(str, d)))
def test_override_batch_norm(backend, kdtype, dims):
    ov = dict(backend.op_overrides() or {})
    names = ("batch_norm_stats", "batch_norm_apply", "batch_norm_grad_stats", "batch_norm_grad_input")
    if not any(n in ov for n in names):
        pytest.skip(f"backend {backend.name!r} has no batch-norm op overrides")
    missing = [n for n in names if n not in ov]
    assert not missing, f"the batch-norm overrides go together (ops.batch_norm_train uses all four): {missing}"
    outer, C, inner = dims
    eps = 1e-3
    x = (_data("any", outer * C * inner, kdtype, 1) * 3 + 1).reshape(dims)
    g = _data("any", x.size, kdtype, 2).reshape(dims)
    w, b = _data("any", C, kdtype, 3) + 2, _data("any", C, kdtype, 4)
    x64, g64, w64 = x.astype(np.float64), g.astype(np.float64), w.astype(np.float64)
    col = lambda v: v.reshape(1, C, 1)  # noqa: E731
    tol = ACC_TOL[kdtype.name]
    mean, var = x64.mean((0, 2)), x64.var((0, 2))
    inv = (var + eps) ** -0.5
    want_st = np.stack([mean, var, inv, inv * w64])
    st = _run_override(backend, kdtype, "batch_norm_stats", [x, w], 4 * C, *dims, eps).reshape(4, C)
    np.testing.assert_allclose(st, want_st, **tol, err_msg="op override batch_norm_stats")
    # the next kernels take the backend's own stats (as the op passes them)
    st64 = st.astype(np.float64)
    got = _run_override(backend, kdtype, "batch_norm_apply", [x, st, b], x.size, *dims).reshape(dims)
    np.testing.assert_allclose(got, (x64 - col(st64[0])) * col(st64[3]) + col(b.astype(np.float64)), **tol,
                               err_msg="op override batch_norm_apply")
    xhat = (x64 - col(st64[0])) * col(st64[2])
    want_gs = np.stack([g64.sum((0, 2)), (g64 * xhat).sum((0, 2))])
    gs = _run_override(backend, kdtype, "batch_norm_grad_stats", [g, x, st], 2 * C, *dims).reshape(2, C)
    np.testing.assert_allclose(gs, want_gs, **tol, err_msg="op override batch_norm_grad_stats")
    n = outer * inner
    gs64 = gs.astype(np.float64)
    want_gx = col(st64[3]) * (g64 - col(gs64[0]) / n - xhat * col(gs64[1]) / n)
    got = _run_override(backend, kdtype, "batch_norm_grad_input", [g, x, st, gs], x.size, *dims).reshape(dims)
    np.testing.assert_allclose(got, want_gx, **tol, err_msg="op override batch_norm_grad_input")


@kernel("override:softmax_grad", "override:layer_norm", "override:layer_norm_grad_input",
        "override:layer_norm_grad_params")
def test_override_rows(backend, kdtype):
    ov = dict(backend.op_overrides() or {})
    if not any(n in ov for n in ("softmax_grad", "layer_norm", "layer_norm_grad_input",
                                 "layer_norm_grad_params")):
        pytest.skip(f"backend {backend.name!r} has no softmax/layer-norm op overrides")
    outer, r, eps = 4, 9, 1e-5
    x = (_data("any", outer * r, kdtype, 1) * 3 + 2).reshape(outer, r)
    g = _data("any", outer * r, kdtype, 2).reshape(outer, r)
    w, b = _data("any", r, kdtype, 3), _data("any", r, kdtype, 4)
    x64, g64, w64 = x.astype(np.float64), g.astype(np.float64), w.astype(np.float64)
    tol = ACC_TOL[kdtype.name]
    if "softmax_grad" in ov:
        y = softmax_rows(x64)
        got = _run_override(backend, kdtype, "softmax_grad", [y, g], x.size, outer, r).reshape(outer, r)
        np.testing.assert_allclose(got, y * (g64 - (g64 * y).sum(1, keepdims=True)), **tol,
                                   err_msg="op override softmax_grad")
    inv = 1 / np.sqrt(x64.var(1, keepdims=True) + eps)
    xhat = (x64 - x64.mean(1, keepdims=True)) * inv
    if "layer_norm" in ov:
        got = _run_override(backend, kdtype, "layer_norm", [x, w, b], x.size, outer, r, eps).reshape(outer, r)
        np.testing.assert_allclose(got, xhat * w64 + b.astype(np.float64), **tol, err_msg="op override layer_norm")
    if "layer_norm_grad_input" in ov:
        gw = g64 * w64
        want = inv * (gw - gw.mean(1, keepdims=True) - xhat * (gw * xhat).mean(1, keepdims=True))
        got = _run_override(backend, kdtype, "layer_norm_grad_input", [g, x, w], x.size,
                            outer, r, eps).reshape(outer, r)
        np.testing.assert_allclose(got, want, **tol, err_msg="op override layer_norm_grad_input")
    if "layer_norm_grad_params" in ov:
        got = _run_override(backend, kdtype, "layer_norm_grad_params", [g, x], 2 * r, outer, r, eps)
        np.testing.assert_allclose(got.reshape(2, r), np.stack([(g64 * xhat).sum(0), g64.sum(0)]), **tol,
                                   err_msg="op override layer_norm_grad_params")


@kernel("override:lstm_gates", "override:lstm_gates_grad")
def test_override_lstm_gates(backend, kdtype):
    ov = dict(backend.op_overrides() or {})
    if "lstm_gates" not in ov and "lstm_gates_grad" not in ov:
        pytest.skip(f"backend {backend.name!r} has no LSTM op overrides")
    B, H = 3, 5
    z = (_data("any", B * 4 * H, kdtype, 1) * 3).reshape(B, 4 * H)
    c = _data("any", B * H, kdtype, 2).reshape(B, H)
    g = _data("any", B * 2 * H, kdtype, 3).reshape(B, 2, H)
    z64, c64, g64 = z.astype(np.float64), c.astype(np.float64), g.astype(np.float64)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, f, gg, o = sig(z64[:, :H]), sig(z64[:, H:2 * H]), np.tanh(z64[:, 2 * H:3 * H]), sig(z64[:, 3 * H:])
    cn = f * c64 + i * gg
    th = np.tanh(cn)
    tol = ACC_TOL[kdtype.name]
    if "lstm_gates" in ov:
        got = _run_override(backend, kdtype, "lstm_gates", [z, c], 2 * B * H, B, H).reshape(B, 2, H)
        np.testing.assert_allclose(got, np.stack([o * th, cn], 1), **tol, err_msg="op override lstm_gates")
    if "lstm_gates_grad" in ov:
        dcn = g64[:, 1] + g64[:, 0] * o * (1 - th ** 2)
        dz = np.concatenate([dcn * gg * i * (1 - i), dcn * c64 * f * (1 - f), dcn * i * (1 - gg ** 2),
                             g64[:, 0] * th * o * (1 - o)], axis=1)
        got = _run_override(backend, kdtype, "lstm_gates_grad", [z, c, g], 5 * B * H, B, H)
        np.testing.assert_allclose(got[:4 * B * H].reshape(B, 4 * H), dz, **tol,
                                   err_msg="op override lstm_gates_grad (z)")
        np.testing.assert_allclose(got[4 * B * H:].reshape(B, H), dcn * f, **tol,
                                   err_msg="op override lstm_gates_grad (c)")
# [/i14f2 fused nn ops] ------------------------------------------------------------


# needle.jit: device random numbers, embedding rows, native replays ------------------
@kernel("override:rand_uniform")
@pytest.mark.parametrize("n,seed", [(1, 0), (1000, 12345), (70001, 2**32 - 1)])
def test_override_rand_uniform(backend, kdtype, n, seed):
    """The documented counter-based stream, bit for bit (every backend draws the same)."""
    fn = _override(backend, "rand_uniform")
    out = backend.Array(n, kdtype)
    fn(out, float(seed))
    got = from_buffer(backend, out)
    np.testing.assert_array_equal(got, counter_uniform(n, seed, kdtype))
    assert got.min() >= 0 and got.max() < 1


@kernel("override:embedding")
@pytest.mark.parametrize("rows,num,dim", [(1, 1, 1), (50, 7, 33), (300, 20, 5)])
def test_override_embedding(backend, kdtype, rows, num, dim):
    """Row gather, and its adjoint adding repeated ids' rows in increasing order."""
    ov = dict(backend.op_overrides() or {})
    if "embedding" not in ov and "embedding_grad" not in ov:
        pytest.skip(f"backend {backend.name!r} has no embedding op overrides")
    rng = _rng(rows)
    w = _data("any", num * dim, kdtype, 2).reshape(num, dim)
    g = _data("any", rows * dim, kdtype, 3).reshape(rows, dim)
    ids = rng.integers(0, num, rows).astype(kdtype)
    if "embedding" in ov:
        got = _run_override(backend, kdtype, "embedding", [w, ids], rows * dim, rows, num, dim)
        np.testing.assert_array_equal(got.reshape(rows, dim), w[ids.astype(np.int64)])
    if "embedding_grad" in ov:
        want = np.zeros((num, dim), kdtype)
        for i, v in enumerate(ids.astype(np.int64)):
            want[v] += g[i]
        got = _run_override(backend, kdtype, "embedding_grad", [g, ids], num * dim, rows, num, dim)
        np.testing.assert_array_equal(got.reshape(num, dim), want)


def test_compile_replay_runs_the_program(backend, kdtype):
    """An offered native replay runs the recorded calls in order, with the
    replay-time scalars of each run (the default offers none: needle then
    replays from Python)."""
    a = to_buffer(backend, _data("any", 64, kdtype, 4))
    t, out = backend.Array(64, kdtype), backend.Array(64, kdtype)
    program = [("scalar_mul", (a, ReplayScalar(2.0, 0), t)), ("ewise_add", (t, a, out)),
               ("scalar_add", (out, 1.0, out))]
    replay = backend.compile_replay(program)
    if replay is None:
        pytest.skip(f"backend {backend.name!r} replays needle.jit steps from Python")
    src = from_buffer(backend, a)
    for scale in (2.0, -0.5, 3.0):
        replay.run([scale])
        want = (src * kdtype.type(scale) + src) + kdtype.type(1.0)
        np.testing.assert_allclose(from_buffer(backend, out), want, **TOL[kdtype.name])


def test_op_overrides_are_known(backend):
    """Every override a backend declares has a documented signature the core can call."""
    unknown = sorted(set(dict(backend.op_overrides() or {})) - set(OP_OVERRIDE_SIGNATURES))
    assert not unknown, (f"backend {backend.name!r} declares op overrides {unknown} that needle does not "
                         f"know; known: {sorted(OP_OVERRIDE_SIGNATURES)}")
    for name, fn in dict(backend.op_overrides() or {}).items():
        assert callable(fn), f"op override {name!r} is not callable"


def test_every_kernel_is_covered():
    """The suite tests every kernel of the protocol (fails when the protocol grows untested)."""
    missing = sorted(set(kernel_names()) - COVERED)
    assert not missing, f"protocol kernels without a conformance test: {missing}"
