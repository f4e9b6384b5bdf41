"""Vectorised float32 exp / log / tanh (csrc/vmath.c) against a float64 reference.

Every path this CPU can run (AVX-512F, AVX2+FMA, libm) is checked: error in
float32 ulps of the correctly rounded result over the whole finite range,
special values (+-0, +-inf, nan, denormal inputs and outputs, overflow),
and that an element's result does not depend on its position (vector body
vs tail) or on the thread count.
"""

import numpy as np
import pytest

import needle_cpu._ext as ext

from cpu_buffers import get, put

FUNCS = ["exp", "log", "tanh"]
# distance from the exact value in float32 ulps (a correctly rounded result
# is <= 0.5): our polynomials measure <= 1.7; glibc documents up to 2 ulps
# from the rounded result for tanhf, i.e. 2.5 here
MAX_ULP = 2.0
MAX_ULP_LIBM = 2.5


def _paths():
    saved = ext.vmath_path()
    found = []
    for level in ("avx512f", "avx2+fma", "libm"):
        if ext.vmath_cap(level) == level:
            found.append(level)
    ext.vmath_cap("avx512f")
    assert ext.vmath_path() == saved
    return found


PATHS = _paths()


@pytest.fixture(params=PATHS)
def path(request):
    assert ext.vmath_cap(request.param) == request.param
    yield request.param
    ext.vmath_cap("avx512f")


def run(be, name, x):
    out = be.Array(x.size, np.float32)
    getattr(be, "ewise_" + name)(put(be, x), out)
    return get(be, out)


def ulps(name, x, got):
    with np.errstate(all="ignore"):
        ref64 = getattr(np, name)(x.astype(np.float64))
        ref32 = ref64.astype(np.float32)
    ok = np.isfinite(ref32)
    spacing = np.spacing(np.abs(ref32[ok])).astype(np.float64)
    return np.abs(got[ok].astype(np.float64) - ref64[ok]) / spacing


def sample(name, rng):
    if name == "exp":  # the whole range: overflow above ~88.7, denormals below ~-87.3
        parts = [rng.uniform(-104, 89, 300_000), rng.uniform(-1, 1, 100_000),
                 rng.uniform(-1e-6, 1e-6, 10_000)]
    elif name == "log":  # positive floats of every exponent, denormals included
        parts = [np.exp(rng.uniform(-103, 88.7, 300_000)), rng.uniform(0.5, 2, 100_000),
                 rng.uniform(1e-45, 1.2e-38, 10_000)]
    else:
        parts = [rng.uniform(-12, 12, 200_000), rng.uniform(-1, 1, 200_000),
                 rng.uniform(-1e-3, 1e-3, 10_000), rng.uniform(0.6, 0.65, 10_000)]
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("name", FUNCS)
def test_accuracy_in_ulps(be, path, name):
    x = sample(name, np.random.default_rng(7))
    err = ulps(name, x, run(be, name, x))
    assert err.max() <= (MAX_ULP_LIBM if path == "libm" else MAX_ULP), (path, name, float(err.max()))
    assert err.mean() < 0.5, (path, name, float(err.mean()))


SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1e-40, -1e-40,
                    1.1754942e-38, 88.72, 88.73, 89.0, 100.0, -87.3, -100.0, -103.9, -104.5,
                    -110.0, -1000.0, 1e30, -1e30, 3.4e38, -3.4e38, 1.0, -1.0, 0.625, -0.625,
                    0.62499994, 9.0, 10.0, 20.0, -20.0, 1e-20, -1e-20], np.float32)


@pytest.mark.parametrize("name", FUNCS)
def test_special_values(be, path, name):
    got = run(be, name, SPECIAL)
    with np.errstate(all="ignore"):
        ref64 = getattr(np, name)(SPECIAL.astype(np.float64))
        ref = ref64.astype(np.float32)
    for x, g, r, r64 in zip(SPECIAL, got, ref, ref64):
        if np.isnan(r):
            assert np.isnan(g), (path, name, x, g)
        elif np.isinf(r) or r == 0:
            # infinities, exact zeros (sign included: tanh(-0) = -0, log(+-0) = -inf)
            assert g == r and np.signbit(g) == np.signbit(r), (path, name, x, g, r)
        else:
            spacing = float(np.spacing(np.abs(r)))
            assert abs(float(g) - r64) <= MAX_ULP_LIBM * spacing, (path, name, x, g, r)
            assert np.signbit(g) == np.signbit(r), (path, name, x, g, r)


def test_known_exact_values(be, path):
    x = np.array([0.0, -0.0, 1.0], np.float32)
    np.testing.assert_array_equal(run(be, "exp", x), [1.0, 1.0, np.float32(np.e)])
    np.testing.assert_array_equal(run(be, "log", np.array([1.0, 2.0 ** 10], np.float32)),
                                  [0.0, np.float32(10 * np.log(2))])
    t = run(be, "tanh", np.array([-0.0, 0.0, 30.0, -30.0], np.float32))
    assert np.signbit(t[0]) and not np.signbit(t[1])
    np.testing.assert_array_equal(t[2:], [1.0, -1.0])


@pytest.mark.parametrize("name", FUNCS)
def test_result_independent_of_position_and_threads(be, path, name):
    """The same input gives bitwise the same output in the vector body, in a
    tail, on one thread or several (chunks split on vector boundaries)."""
    x = sample(name, np.random.default_rng(3))[:100_003]
    full = run(be, name, x)
    for n in (1, 5, 8, 15, 16, 17, 31, 33, 4099, 40_001):
        np.testing.assert_array_equal(run(be, name, x[:n]), full[:n])
    for off in (1, 3, 7):  # unaligned starts put every element in another lane
        np.testing.assert_array_equal(run(be, name, x[off:off + 1000]), full[off:off + 1000])
    saved = ext.get_num_threads()
    try:
        for nt in (1, 2, 3):
            ext.set_num_threads(nt)
            np.testing.assert_array_equal(run(be, name, x), full)
    finally:
        ext.set_num_threads(saved)


def test_float64_stays_on_libm(be):
    x = np.random.default_rng(1).uniform(-20, 20, 50_000)
    for name in FUNCS:
        xin = np.abs(x) + 1e-3 if name == "log" else x
        np.testing.assert_allclose(run_f64(be, name, xin), getattr(np, name)(xin), rtol=1e-15, atol=0)


def run_f64(be, name, x):
    out = be.Array(x.size, np.float64)
    getattr(be, "ewise_" + name)(put(be, x), out)
    return get(be, out)


def test_vmath_cap_rejects_unknown_level():
    with pytest.raises(ValueError, match="vmath_cap"):
        ext.vmath_cap("sse9")
    assert ext.vmath_path() in ("avx512f", "avx2+fma", "libm")
