"""GEMM kernels (matmul, matmul_strided, matmul_tiled) against NumPy, on every
SIMD path this CPU can run (AVX-512 where present, AVX2+FMA, portable C)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import needle_cpu._ext as ext
from needle.errors import ShapeError, UnsupportedDTypeError

from cpu_buffers import DTYPES, get, put

EDGE_SHAPES = [
    (1, 1, 1), (1, 5, 1), (5, 1, 5), (1, 300, 1), (7, 11, 13), (13, 17, 19), (6, 16, 16),
    (5, 15, 17), (37, 0, 29), (0, 4, 5), (4, 5, 0), (128, 784, 100), (128, 100, 10),
    (1000, 3, 2), (2, 3, 1000), (3, 2000, 4), (97, 257, 127), (300, 300, 300), (150, 520, 3100),
]


# the paths this CPU runs; the AVX-512 path joins on CPUs with avx512f
RUNNABLE_PATHS = ext.SIMD_PATHS[:ext.SIMD_PATHS.index(ext.simd_best()) + 1]


@pytest.fixture(params=RUNNABLE_PATHS)
def kernel_path(request):
    assert ext.set_simd(request.param) == request.param
    yield request.param
    ext.set_simd("auto")


def check(got, ref, dtype, k):
    # rounding in a k-term dot product of random operands grows like sqrt(k)
    # units of roundoff; a linear k * 1e-5 would pass a dropped term at k = 2000
    tol = 16 * np.sqrt(max(k, 1)) * np.finfo(dtype).eps
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


def check_every_thread_count(be, A, sa, B, sb, m, n, p, dtype, ref):
    """A @ B with 1, 2 and 3 threads (the splits differ with the count), each
    into a NaN-filled C that the product must overwrite, against ``ref``."""
    saved = ext.get_num_threads()
    try:
        for nt in (1, 2, 3):
            ext.set_num_threads(nt)
            out = be.Array(m * p, dtype)
            be.fill(out, np.nan)
            be.matmul_strided(A, B, out, 1, m, n, p, sa, 0, sb, 0)
            check(get(be, out, (m, p)), ref, dtype, n)
    finally:
        ext.set_num_threads(saved)


def operands(m, n, p, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (m, n)).astype(dtype), rng.uniform(-1, 1, (n, p)).astype(dtype)


def laid_out(be, a, b, layout):
    """(buffer, strides) of A and B for matmul_strided: "plain" row-major,
    "a_T" / "b_T" stored transposed (column-major views), "a_padded" A's rows
    3 elements longer than n."""
    (m, n), p = a.shape, b.shape[1]
    A, sa = put(be, a), (0, n, 1)
    B, sb = put(be, b), (0, p, 1)
    if layout == "a_T":
        A, sa = put(be, np.ascontiguousarray(a.T)), (0, 1, m)
    elif layout == "b_T":
        B, sb = put(be, np.ascontiguousarray(b.T)), (0, 1, n)
    elif layout == "a_padded":
        padded = np.zeros((m, n + 3), a.dtype)
        padded[:, :n] = a
        A, sa = put(be, padded), (0, n + 3, 1)
    return (A, sa), (B, sb)


@pytest.mark.parametrize("mnp", EDGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_shapes(be, dtype, kernel_path, mnp):
    m, n, p = mnp
    a, b = operands(m, n, p, dtype)
    out = be.Array(m * p, dtype)
    be.fill(out, np.nan)  # n == 0 must overwrite with zeros
    be.matmul(put(be, a), put(be, b), out, m, n, p)
    check(get(be, out, (m, p)), a.astype(np.float64) @ b, dtype, n)


def test_matmul_square_large(be):
    a, b = operands(1031, 1029, 1033, np.float32, 3)
    out = be.Array(1031 * 1033)
    be.matmul(put(be, a), put(be, b), out, 1031, 1029, 1033)
    check(get(be, out, (1031, 1033)), a.astype(np.float64) @ b, np.float32, 1029)


def strides_of(x):
    return tuple(s // x.itemsize for s in x.strides)


@pytest.mark.parametrize("case", ["plain", "a_T", "b_T", "both_T", "bcast_a", "bcast_b", "offsets"])
@pytest.mark.parametrize("shape", [(3, 17, 33, 21), (1, 128, 100, 10), (4, 1, 5, 1), (2, 0, 3, 4), (64, 8, 8, 8)])
def test_matmul_strided(be, dtype, kernel_path, case, shape):
    batch, m, n, p = shape
    rng = np.random.default_rng(4)
    pad = 5 if case == "offsets" else 0
    if case in ("a_T", "both_T"):
        abuf = rng.uniform(-1, 1, pad + batch * n * m).astype(dtype)
        av = abuf[pad:].reshape(batch, n, m).transpose(0, 2, 1)
    elif case == "bcast_a":
        abuf = rng.uniform(-1, 1, pad + m * n).astype(dtype)
        av = np.broadcast_to(abuf[pad:].reshape(1, m, n), (batch, m, n))
    else:
        abuf = rng.uniform(-1, 1, pad + batch * m * n).astype(dtype)
        av = abuf[pad:].reshape(batch, m, n)
    if case in ("b_T", "both_T"):
        bbuf = rng.uniform(-1, 1, pad + batch * p * n).astype(dtype)
        bv = bbuf[pad:].reshape(batch, p, n).transpose(0, 2, 1)
    elif case == "bcast_b":
        bbuf = rng.uniform(-1, 1, pad + n * p).astype(dtype)
        bv = np.broadcast_to(bbuf[pad:].reshape(1, n, p), (batch, n, p))
    else:
        bbuf = rng.uniform(-1, 1, pad + batch * n * p).astype(dtype)
        bv = bbuf[pad:].reshape(batch, n, p)
    out = be.Array(batch * m * p, dtype)
    be.matmul_strided(put(be, abuf), put(be, bbuf), out, batch, m, n, p,
                      strides_of(av), pad, strides_of(bv), pad)
    check(get(be, out, (batch, m, p)), av.astype(np.float64) @ bv, dtype, n)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(batch=st.integers(1, 3), m=st.integers(1, 40), n=st.integers(0, 40), p=st.integers(1, 40),
       ta=st.booleans(), tb=st.booleans(), dt=st.sampled_from(DTYPES), off=st.integers(0, 3))
def test_matmul_strided_random(be, batch, m, n, p, ta, tb, dt, off):
    rng = np.random.default_rng(m * 1000 + n * 10 + p)
    abuf = rng.standard_normal(off + batch * m * n).astype(dt)
    bbuf = rng.standard_normal(off + batch * n * p).astype(dt)
    av = (abuf[off:].reshape(batch, n, m).transpose(0, 2, 1) if ta
          else abuf[off:].reshape(batch, m, n))
    bv = (bbuf[off:].reshape(batch, p, n).transpose(0, 2, 1) if tb
          else bbuf[off:].reshape(batch, n, p))
    out = be.Array(batch * m * p, dt)
    be.matmul_strided(put(be, abuf), put(be, bbuf), out, batch, m, n, p,
                      strides_of(av), off, strides_of(bv), off)
    check(get(be, out, (batch, m, p)), av.astype(np.float64) @ bv, dt, n)


def tile(x, t=8):
    r, c = x.shape
    return x.reshape(r // t, t, c // t, t).transpose(0, 2, 1, 3).copy()


@pytest.mark.parametrize("mnp", [(8, 8, 8), (16, 24, 8), (64, 128, 32), (256, 8, 136)])
def test_matmul_tiled(be, dtype, mnp):
    m, n, p = mnp
    a, b = operands(m, n, p, dtype, 5)
    out = be.Array(m * p, dtype)
    be.matmul_tiled(put(be, tile(a)), put(be, tile(b)), out, m, n, p)
    check(get(be, out), tile(a.astype(np.float64) @ b).ravel(), dtype, n)


def test_matmul_validation(be):
    a, b, o = be.Array(6), be.Array(6), be.Array(4)
    be.matmul(a, b, o, 2, 3, 2)
    with pytest.raises(ShapeError, match="matmul"):
        be.matmul(a, b, o, 2, 4, 2)
    with pytest.raises(ShapeError):
        be.matmul(a, b, o, 3, 2, 2)  # out needs 6
    with pytest.raises(ShapeError):
        be.matmul(a, b, o, -1, 3, 2)
    with pytest.raises(UnsupportedDTypeError):
        be.matmul(a, be.Array(6, np.float64), o, 2, 3, 2)
    with pytest.raises(ShapeError, match="matmul_tiled"):
        be.matmul_tiled(be.Array(64), be.Array(64), be.Array(64), 8, 8, 4)
    with pytest.raises(ShapeError):
        be.matmul_tiled(be.Array(63), be.Array(64), be.Array(64), 8, 8, 8)
    with pytest.raises(ShapeError, match="matmul_strided"):
        be.matmul_strided(a, b, be.Array(8), 2, 2, 3, 2, (6, 3, 1), 0, (0, 2, 1), 0)
    with pytest.raises(ShapeError):
        be.matmul_strided(a, b, be.Array(8), 2, 2, 3, 2, (0, 3, 1), 0, (0, 2, 1), 1)
    with pytest.raises(ShapeError):
        be.matmul_strided(a, b, be.Array(7), 2, 2, 3, 2, (0, 3, 1), 0, (0, 2, 1), 0)
    with pytest.raises(ShapeError):
        be.matmul_strided(a, b, be.Array(8), 2, 2, 3, 2, (0, 3), 0, (0, 2, 1), 0)
    be.matmul_strided(a, b, be.Array(8), 2, 2, 3, 2, (0, 3, 1), 0, (0, 2, 1), 0)


def test_course_style_tiled_call_through_device(be):
    """nd.cpu().matmul_tiled(a._handle, ...) in the course tests hits this method."""
    m = n = p = 16
    a, b = operands(m, n, p, np.float32, 6)
    out = be.Array(m * p)
    be.matmul_tiled(put(be, tile(a)), put(be, tile(b)), out, m, n, p)
    np.testing.assert_allclose(get(be, out), tile(a @ b).ravel(), rtol=1e-5, atol=1e-5)


# The unpacked small-product path (float32, up to 2^18 multiply-adds): every
# row tail (1..5 of the 6-row tile), every column tail of the 8- and 16-wide
# tiles (masked loads/stores), B read in place or copied when transposed.
# m >= 16 with a transposed A and p < 16 takes the column-major variant
# (vectors down 16 rows, masked row tail, every column tail 1..5 of 6)
@pytest.mark.parametrize("m", [1, 2, 5, 6, 7, 13, 16, 17, 29, 100])
@pytest.mark.parametrize("p", [1, 3, 7, 8, 9, 10, 12, 15, 16, 17, 31, 33])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_small_products_every_tail(be, m, p, ta, tb):
    n = 37
    a, b = operands(m, n, p, np.float32, seed=m * 100 + p)
    A = put(be, a.T if ta else a)
    B = put(be, b.T if tb else b)
    sa = (0, 1, m) if ta else (0, n, 1)
    sb = (0, 1, n) if tb else (0, p, 1)
    guard = 19
    out = be.Array(m * p + guard, np.float32)
    be.fill(out, 7.25)  # the masked stores must not touch past m * p
    be.matmul_strided(A, B, out, 1, m, n, p, sa, 0, sb, 0)
    got = get(be, out)
    check(got[:m * p].reshape(m, p), a.astype(np.float64) @ b, np.float32, n)
    np.testing.assert_array_equal(got[m * p:], np.full(guard, 7.25, np.float32))


def test_small_products_match_packed_path(be):
    """The small path and the packed GEMM agree (MLP shapes, both orientations),
    and each matches NumPy's float64 product (agreeing alone proves nothing)."""
    for m, n, p in [(128, 100, 10), (100, 128, 10), (128, 10, 100), (64, 64, 64)]:
        a, b = operands(m, n, p, np.float32, seed=1)
        outs = []
        for path in (ext.simd_best(), "none"):
            ext.set_simd(path)
            try:
                out = be.Array(m * p, np.float32)
                be.matmul(put(be, a), put(be, b), out, m, n, p)
                outs.append(get(be, out, (m, p)))
            finally:
                ext.set_simd("auto")
        ref = a.astype(np.float64) @ b
        for out in outs:
            check(out, ref, np.float32, n)
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


# A row split with few rows a thread shares one packed B between the threads
# (gemm_shared_b_: under 256 rows a thread, B of >= 16384 elements): every
# thread count, transposed operands, several k-blocks and column blocks
@pytest.mark.parametrize("m,n,p", [(128, 784, 100), (13, 5000, 17), (300, 257, 99), (100, 300, 3500)])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, True)])
def test_shared_packed_b_row_split(be, dtype, m, n, p, ta, tb):
    a, b = operands(m, n, p, dtype, seed=m + p)
    A = put(be, np.ascontiguousarray(a.T) if ta else a)
    B = put(be, np.ascontiguousarray(b.T) if tb else b)
    sa = (0, 1, m) if ta else (0, n, 1)
    sb = (0, 1, n) if tb else (0, p, 1)
    ref = a.astype(np.float64) @ b
    check_every_thread_count(be, A, sa, B, sb, m, n, p, dtype, ref)


# Few rows a thread and a row-major B of at most 2^17 elements and 1024 rows:
# the threads split the rows on six-row tiles and read A and B in place
# (gemm_small_rows_f32 on AVX2), the last 16-column panel masked.  Every
# thread count, A plain, transposed or with padded rows; B at both limits and
# just past them (the packed path): all must match NumPy, over a NaN-filled C
@pytest.mark.parametrize("m,n,p", [(128, 784, 100), (1, 300, 5), (7, 1024, 100), (31, 1025, 27),
                                   (300, 512, 256), (300, 512, 257), (97, 40, 33)])
@pytest.mark.parametrize("layout", ["plain", "a_T", "a_padded"])
def test_small_rows_split(be, kernel_path, m, n, p, layout):
    a, b = operands(m, n, p, np.float32, seed=m * 7 + p)
    (A, sa), (B, sb) = laid_out(be, a, b, layout)
    ref = a.astype(np.float64) @ b
    check_every_thread_count(be, A, sa, B, sb, m, n, p, np.float32, ref)


# Small products (up to 2^18 multiply-adds, no packing) of at least 2^16
# multiply-adds and k >= 32 split C's rows over the threads: six-row tiles
# for a row-major or padded A, 16-row blocks for a column-major A with a
# narrow C, and after one row-major copy of a transposed B (which the threads
# share).  Sizes at and around those limits, uneven splits (3 threads), over a
# NaN-filled C that every thread's rows must overwrite.
@pytest.mark.parametrize("m,n,p", [(128, 100, 10), (100, 128, 10), (37, 64, 40), (128, 32, 16),
                                   (128, 31, 17), (250, 33, 31), (20, 64, 51)])
@pytest.mark.parametrize("layout", ["plain", "a_T", "b_T", "a_padded"])
def test_small_product_row_split(be, kernel_path, m, n, p, layout):
    a, b = operands(m, n, p, np.float32, seed=m * 3 + n + p)
    (A, sa), (B, sb) = laid_out(be, a, b, layout)
    ref = a.astype(np.float64) @ b
    check_every_thread_count(be, A, sa, B, sb, m, n, p, np.float32, ref)


# Long products with a small C split k between the threads, each into its own
# copy of C, added afterwards (gemm_split_k_: the LSTM LM's 400x10000 @
# 10000x100 adjoint, a Transformer weight's 64x1024 @ 1024x64): every thread
# count (3 splits 1000 unevenly), A and B plain or transposed, float32 and
# float64, over a NaN-filled C that only the sum of the copies may overwrite
@pytest.mark.parametrize("m,n,p", [(40, 2000, 30), (64, 1024, 64), (5, 60001, 7), (1, 300000, 1)])
@pytest.mark.parametrize("layout", ["plain", "a_T", "b_T"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_k(be, kernel_path, m, n, p, layout, dtype):
    a, b = operands(m, n, p, dtype, seed=m + n + p)
    (A, sa), (B, sb) = laid_out(be, a, b, layout)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    check_every_thread_count(be, A, sa, B, sb, m, n, p, dtype, ref)


# Row-major A too large to read in place is packed six rows at a time; the
# AVX2 packer moves eight k at a time and leaves k % 8 to the scalar loop,
# and the last of its stores must stop at the panel's end (a NaN-filled
# output shows a stray write as a wrong value nowhere else)
@pytest.mark.parametrize("k", [1640 + r for r in range(8)])
def test_packed_a_every_k_tail(be, kernel_path, k):
    m, p = 91, 21  # 15 full six-row panels and a partial one; > 65536 elements of A a thread
    a, b = operands(m, k, p, np.float32, seed=k)
    a_big = np.zeros((m, k + 5), np.float32)  # rows 5 floats apart from where they end
    a_big[:, :k] = a
    out = be.Array(m * p, np.float32)
    be.fill(out, np.nan)
    be.matmul_strided(put(be, a_big), put(be, b), out, 1, m, k, p, (0, k + 5, 1), 0, (0, p, 1), 0)
    check(get(be, out, (m, p)), a.astype(np.float64) @ b, np.float32, k)
