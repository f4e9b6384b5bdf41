"""The cpu backend's embedding / embedding_grad op overrides: the numpy
backend's values bit for bit (rows added in increasing order), bad indices
refused eagerly and from a native replay."""

import numpy as np
import pytest

import needle as ndl
from needle.errors import OutOfBoundsError

cpu = ndl.cpu().mod
ref = ndl.cpu_numpy().mod


def _buf(be, a):
    b = be.Array(a.size, a.dtype)
    if a.size:
        be.from_numpy(np.ascontiguousarray(a).reshape(-1), b)
    return b


def _read(be, b, n):
    return be.to_numpy(b, (n,), (1,), 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,num,dim", [(0, 5, 3), (1, 1, 1), (37, 10, 100), (2000, 50, 33), (300, 7, 0)])
def test_gather_and_scatter_add_equal_the_numpy_backend(dtype, rows, num, dim):
    rng = np.random.default_rng(rows + num + dim)
    w = rng.standard_normal((num, dim)).astype(dtype)
    g = rng.standard_normal((rows, dim)).astype(dtype)
    ids = rng.integers(0, num, rows).astype(dtype)   # many repeats: the order of additions shows
    outs = {}
    for name, be in (("cpu", cpu), ("numpy", ref)):
        o1, o2 = be.Array(rows * dim, np.dtype(dtype)), be.Array(num * dim, np.dtype(dtype))
        be.embedding(_buf(be, w), _buf(be, ids), o1, rows, num, dim)
        be.embedding_grad(_buf(be, g), _buf(be, ids), o2, rows, num, dim)
        outs[name] = (_read(be, o1, rows * dim), _read(be, o2, num * dim))
    np.testing.assert_array_equal(outs["cpu"][0], w[ids.astype(int)].reshape(-1))
    np.testing.assert_array_equal(outs["cpu"][0], outs["numpy"][0])
    np.testing.assert_array_equal(outs["cpu"][1], outs["numpy"][1])


@pytest.mark.parametrize("bad", [-1.0, 5.0, 2.5, np.nan])
def test_bad_index_is_refused_eagerly_and_by_a_replay(bad):
    w = _buf(cpu, np.ones((5, 4), "float32"))
    ids = _buf(cpu, np.array([0, 1, bad, 2], "float32"))
    out = cpu.Array(16)
    with pytest.raises(OutOfBoundsError, match=r"embedding: index .* at position 2 .*\[0, 5\)"):
        cpu.embedding(w, ids, out, 4, 5, 4)
    grad = cpu.Array(20)
    with pytest.raises(OutOfBoundsError, match="embedding_grad: index"):
        cpu.embedding_grad(_buf(cpu, np.ones((4, 4), "float32")), ids, grad, 4, 5, 4)
    good = _buf(cpu, np.array([0, 1, 3, 2], "float32"))
    tape = cpu.compile_replay([("embedding", (w, good, out, 4, 5, 4))])
    tape.run([])
    np.testing.assert_array_equal(_read(cpu, out, 16), np.ones(16))
    cpu.from_numpy(np.array([0, 1, bad, 2], "float32"), good)   # the ids change under the replay
    with pytest.raises(OutOfBoundsError, match="position 2"):
        tape.run([])


def test_sizes_are_checked():
    from needle.errors import ShapeError
    with pytest.raises(ShapeError):
        cpu.embedding(cpu.Array(4), cpu.Array(2), cpu.Array(8), 2, 5, 4)   # table smaller than num*dim
