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
