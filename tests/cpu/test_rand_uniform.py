"""rand_uniform: the protocol's counter-based generator, bit for bit against
a NumPy uint64 reference of the documented formula."""

import numpy as np
import pytest

from needle.errors import ArgumentError, ArgumentTypeError

from cpu_buffers import get

SEEDS = [0, 1, 7, 12345, 2**31, 2**32 - 1]
SIZES = [0, 1, 1000, 100003]


def reference(seed, n, dtype):
    """The formula of OP_OVERRIDE_SIGNATURES["rand_uniform"], in uint64 arithmetic
    (NumPy's uint64 multiply and add wrap modulo 2**64, as the formula asks)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.arange(n, dtype=np.uint64)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    if np.dtype(dtype) == np.float32:
        return ((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)).astype(np.float32)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_reference_bits(be, dtype, seed, n):
    out = be.Array(n, dtype)
    be.rand_uniform(out, seed)
    got = get(be, out)
    ref = reference(seed, n, dtype)
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got.view(np.uint8), ref.view(np.uint8))


def _mix_int(z):
    """splitmix64's finalizer on Python ints (an independent check of the NumPy one)."""
    m = (1 << 64) - 1
    z &= m
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & m
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_reference_is_splitmix64():
    # seed s, element 0 is splitmix64's s-th output from state 0: the published
    # first two are 0xE220A8397B1DCDAF and 0x6E789E6AA1B965F4
    assert _mix_int(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF
    assert _mix_int(2 * 0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4
    for seed in (1, 2, 2**32 - 1):
        for i in (0, 1, 999):
            z = _mix_int(seed * 0x9E3779B97F4A7C15 + i)
            assert reference(seed, i + 1, np.float64)[i] == (z >> 11) * 2.0**-53
            assert reference(seed, i + 1, np.float32)[i] == np.float32((z >> 40) * 2.0**-24)


@pytest.mark.parametrize("seed", [3, 3.0, np.int64(3), np.uint32(3), np.float32(3.0)])
def test_seed_types_agree(be, dtype, seed):
    out = be.Array(257, dtype)
    be.rand_uniform(out, seed)
    np.testing.assert_array_equal(get(be, out), reference(3, 257, dtype))


def test_float_seed_near_top(be):
    out = be.Array(64, np.float64)
    be.rand_uniform(out, float(2**32 - 1))
    np.testing.assert_array_equal(get(be, out), reference(2**32 - 1, 64, np.float64))


@pytest.mark.parametrize("n", [1 << 16, (1 << 20) + 3])
def test_range_and_mean(be, dtype, n):
    out = be.Array(n, dtype)
    be.rand_uniform(out, 42)
    u = get(be, out)
    assert u.min() >= 0.0 and u.max() < 1.0
    # std of the mean of n uniforms is 1/sqrt(12 n): 6 sigma
    assert abs(u.astype(np.float64).mean() - 0.5) < 6 / np.sqrt(12 * n)
    assert len(np.unique(u)) > 0.9 * n if dtype == np.float64 else True


def test_seeds_give_different_streams(be):
    a, b = be.Array(1000), be.Array(1000)
    be.rand_uniform(a, 1)
    be.rand_uniform(b, 2)
    assert not np.array_equal(get(be, a), get(be, b))


def test_threads_agree_with_one_thread(be):
    import needle_cpu._ext as ext
    n = 300001
    saved = ext.get_num_threads()
    try:
        outs = []
        for t in (1, 2):
            ext.set_num_threads(t)
            out = be.Array(n, np.float32)
            be.rand_uniform(out, 99)
            outs.append(get(be, out))
    finally:
        ext.set_num_threads(saved)
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("seed", [-1, -1.0, 2**32, 2.0**32, 0.5, 3.25, float("nan"), float("inf"),
                                  np.int64(-5), 2**70])
def test_bad_seed_values(be, seed):
    out = be.Array(8)
    with pytest.raises(ArgumentError, match="seed"):
        be.rand_uniform(out, seed)


@pytest.mark.parametrize("seed", ["3", None, True, [1]])
def test_bad_seed_types(be, seed):
    out = be.Array(8)
    with pytest.raises(ArgumentTypeError, match="seed"):
        be.rand_uniform(out, seed)


def test_bad_seed_checked_even_when_empty(be):
    with pytest.raises(ArgumentError):
        be.rand_uniform(be.Array(0), -3)


def test_registered_as_op_override(be):
    assert "rand_uniform" in be.op_overrides()
