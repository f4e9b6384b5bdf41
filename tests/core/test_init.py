"""needle.init: exact formulas and NumPy RNG calls (course API §3, docs/design.md)."""

import math

import numpy as np
import pytest

import needle as ndl
import needle.backend_ndarray as nd
from needle import init


# ``device``: every available backend (tests/conftest.py)


def seeded(fn, seed=3):
    np.random.seed(seed)
    return fn()


def test_rand_randn(device):
    got = seeded(lambda: init.rand(3, 4, low=-2.0, high=5.0, device=device))
    exp = seeded(lambda: np.random.rand(3, 4) * 7.0 - 2.0)
    np.testing.assert_allclose(got.numpy(), exp.astype(np.float32), rtol=1e-6)
    assert got.dtype == "float32" and got.device == device and not got.requires_grad
    got = seeded(lambda: init.randn(2, 5, mean=1.0, std=3.0, device=device, dtype="float64"))
    exp = seeded(lambda: np.random.randn(2, 5) * 3.0 + 1.0)
    np.testing.assert_allclose(got.numpy(), exp, rtol=1e-12)
    assert got.dtype == "float64"


def test_one_rng_call_per_initializer():
    np.random.seed(0)
    init.rand(2, 3)
    init.randn(4)
    after = np.random.rand()
    np.random.seed(0)
    np.random.rand(2, 3)
    np.random.randn(4)
    assert after == np.random.rand()


def test_constant_ones_zeros(device):
    np.testing.assert_array_equal(init.constant(2, 3, c=4.5, device=device).numpy(), np.full((2, 3), 4.5))
    np.testing.assert_array_equal(init.ones(2, device=device).numpy(), np.ones(2))
    np.testing.assert_array_equal(init.zeros(1, 2, device=device).numpy(), np.zeros((1, 2)))
    assert init.ones(3, requires_grad=True).requires_grad
    assert ndl.ones is init.ones and ndl.zeros_like is init.zeros_like


def test_randb(device):
    got = seeded(lambda: init.randb(5, 6, p=0.3, device=device))
    exp = seeded(lambda: np.random.rand(5, 6) <= 0.3)
    np.testing.assert_array_equal(got.numpy(), exp.astype(np.float32))


def test_one_hot(device):
    i = ndl.Tensor([[2.0, 0.0], [1.0, 3.0]], device=device)
    got = init.one_hot(4, i, device=device)
    assert got.shape == (2, 2, 4)
    np.testing.assert_array_equal(got.numpy(), np.eye(4)[np.array([[2, 0], [1, 3]])])
    np.testing.assert_array_equal(init.one_hot(3, [1]).numpy(), [[0, 1, 0]])
    with pytest.raises(IndexError, match="one_hot"):
        init.one_hot(3, [3])


def test_like(device):
    t = ndl.Tensor(np.ones((2, 3)), device=device)
    z, o = init.zeros_like(t), init.ones_like(t)
    assert z.shape == o.shape == (2, 3) and z.dtype == o.dtype == "float64"
    assert z.device == device and not z.requires_grad
    np.testing.assert_array_equal(o.numpy(), np.ones((2, 3)))


def test_xavier():
    got = seeded(lambda: init.xavier_uniform(5, 7, gain=1.5))
    a = 1.5 * math.sqrt(6 / 12)
    exp = seeded(lambda: np.random.rand(5, 7) * 2 * a - a)
    np.testing.assert_allclose(got.numpy(), exp.astype(np.float32), rtol=1e-6)
    got = seeded(lambda: init.xavier_normal(5, 7, gain=0.5))
    exp = seeded(lambda: np.random.randn(5, 7) * 0.5 * math.sqrt(2 / 12))
    np.testing.assert_allclose(got.numpy(), exp.astype(np.float32), rtol=1e-6)


def test_kaiming():
    got = seeded(lambda: init.kaiming_uniform(6, 4))
    b = math.sqrt(2) * math.sqrt(3 / 6)
    exp = seeded(lambda: np.random.rand(6, 4) * 2 * b - b)
    np.testing.assert_allclose(got.numpy(), exp.astype(np.float32), rtol=1e-6)
    got = seeded(lambda: init.kaiming_normal(6, 4))
    exp = seeded(lambda: np.random.randn(6, 4) * math.sqrt(2) / math.sqrt(6))
    np.testing.assert_allclose(got.numpy(), exp.astype(np.float32), rtol=1e-6)
    got = seeded(lambda: init.kaiming_normal(6, 4, shape=(2, 3)))
    assert got.shape == (2, 3)


def test_kaiming_uniform_hw4_golden():
    np.random.seed(0)
    got = init.kaiming_uniform(144, 72, shape=(3, 3, 16, 8))
    assert got.shape == (3, 3, 16, 8)
    np.testing.assert_allclose(got.numpy().sum(), -2.5719218, rtol=1e-5)


def test_kwargs_pass_through():
    t = init.xavier_uniform(2, 3, dtype="float64", requires_grad=True, device=nd.cpu_numpy())
    assert t.dtype == "float64" and t.requires_grad and t.device == nd.cpu_numpy()
    assert init.rand(2).device == ndl.default_device()


def test_one_hot_of_a_huge_vocabulary_builds_only_the_rows_asked_for():
    """``np.eye(n)`` would need n^2 elements (8 TB here): the rows are built
    directly, with the same values."""
    t = init.one_hot(10**6, ndl.Tensor([3.0, 999_999.0]), dtype="float32")
    assert t.shape == (2, 10**6) and t.dtype == "float32"
    host = t.numpy()
    assert host.sum() == 2.0 and host[0, 3] == 1.0 and host[1, 999_999] == 1.0
    rows = ndl.cpu_numpy().one_hot(10**6, np.array([[0, 7]]))
    assert rows.shape == (1, 2, 10**6) and rows.numpy()[0, 1, 7] == 1.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_hot_equals_rows_of_eye(dtype):
    idx = np.array([[4, 0, 2], [1, 1, 3]])
    t = init.one_hot(5, ndl.Tensor(idx, dtype="float32"), dtype=dtype)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.numpy(), np.eye(5)[idx])


# ---- defaults and argument forms, one by one (the mutation run of init_basic.py) ----
def test_defaults_of_the_constructors():
    import needle as ndl
    np.random.seed(0)
    u = ndl.init.rand(4000)
    assert 0.0 <= u.numpy().min() < 0.01 and 0.99 < u.numpy().max() < 1.0   # [0, 1)
    n = ndl.init.randn(4000).numpy()
    assert abs(n.mean()) < 0.1 and 0.9 < n.std() < 1.1
    np.testing.assert_array_equal(ndl.init.constant(2, 3).numpy(), np.ones((2, 3)))
    for t in (ndl.init.rand(2), ndl.init.randn(2), ndl.init.constant(2), ndl.init.ones(2),
              ndl.init.zeros(2), ndl.init.randb(2), ndl.init.one_hot(3, [1]),
              ndl.init.ones_like(ndl.init.ones(2)), ndl.init.zeros_like(ndl.init.ones(2))):
        assert t.requires_grad is False
    b = ndl.init.randb(20000).numpy()
    assert 0.45 < b.mean() < 0.55 and set(np.unique(b)) <= {0.0, 1.0}   # p = 0.5
    dev = ndl.cpu_numpy()
    assert ndl.init.ones_like(ndl.init.ones(2, device=dev)).device == dev   # the array's device


def test_shape_given_as_one_tuple_or_list():
    import needle as ndl
    for make in (ndl.init.rand, ndl.init.randn, ndl.init.zeros, ndl.init.ones, ndl.init.randb):
        assert make((2, 3)).shape == (2, 3) and make([4, 1]).shape == (4, 1) and make(2, 3).shape == (2, 3)
    assert ndl.init.rand(5).shape == (5,)


def test_one_hot_reports_the_first_bad_index_and_takes_n_zero():
    import needle as ndl
    from needle.errors import ArgumentError, OutOfBoundsError
    with pytest.raises((ArgumentError, OutOfBoundsError, ValueError), match=r"2\.5"):
        ndl.init.one_hot(4, np.array([1.0, 2.5, np.inf]))
    with pytest.raises((ArgumentError, OutOfBoundsError, ValueError), match="inf"):
        ndl.init.one_hot(4, np.array([1.0, np.inf]))
    assert ndl.init.one_hot(0, np.zeros(0)).shape == (0, 0)
    t = ndl.Tensor(np.array([2.0, 0.0], "float32"), requires_grad=False)
    np.testing.assert_array_equal(ndl.init.one_hot(3, t).numpy(), [[0, 0, 1], [1, 0, 0]])


def test_rand_inside_a_capture_scales_to_low_high():
    import needle as ndl
    np.random.seed(1)
    jitted = ndl.jit(lambda x: x + ndl.init.rand(2000, low=2.0, high=5.0, device=x.device))
    x = ndl.Tensor(np.zeros(2000, "float32"), requires_grad=False)
    for _ in range(3):
        v = jitted(x).numpy()
    assert 2.0 <= v.min() < 2.05 and 4.95 < v.max() < 5.0


def test_captured_seeds_span_the_generator():
    from needle.init.init_basic import _new_seed
    np.random.seed(0)
    seeds = [_new_seed() for _ in range(200)]
    assert min(seeds) >= 0 and max(seeds) < 2**32 and max(seeds) > 2**31 and len(set(seeds)) == 200


def test_one_hot_of_an_ndarray():
    import needle as ndl
    import needle.backend_ndarray as nd
    np.testing.assert_array_equal(ndl.init.one_hot(3, nd.array([2.0, 1.0])).numpy(), [[0, 0, 1], [0, 1, 0]])


def test_a_tuple_beside_other_sizes_is_refused():
    import needle as ndl
    with pytest.raises((TypeError, ValueError)):
        ndl.init.rand((2, 3), 4)
