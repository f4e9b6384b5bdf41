"""Op behaviour that surviving mutants showed no test pinned (scripts/mutation.sh)."""

import numpy as np
import pytest

import needle as ndl
from needle.errors import ShapeError


def test_logsumexp_over_an_empty_axis_is_refused_on_every_backend(device):
    # the fused kernel (cpu) must not be reached with an empty row: it would
    # return -inf where the composition raises, and the backends would disagree
    x = ndl.Tensor(np.zeros((3, 0), np.float32), device=device)
    with pytest.raises(ShapeError, match="zero-size reduction"):
        ndl.ops.logsumexp(x, axes=(1,))
    # reducing the non-empty axis instead gives an empty result, no error
    assert ndl.ops.logsumexp(x, axes=(0,)).shape == (0,)


def test_logsoftmax_op_honours_its_axes(device):
    # the course's logsoftmax is over the last axis; the op class takes any axes
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3))
    t = ndl.Tensor(x, device=device, dtype="float64")
    out = ndl.ops.LogSoftmax(axes=(0,))(t).numpy()
    m = x.max(axis=0, keepdims=True)
    want = x - (m + np.log(np.exp(x - m).sum(axis=0, keepdims=True)))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ndl.ops.logsoftmax(t).numpy(),
                               x - np.log(np.exp(x).sum(axis=1, keepdims=True)), rtol=1e-12, atol=1e-12)
