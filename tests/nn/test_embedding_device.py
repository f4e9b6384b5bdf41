"""nn.Embedding gathers with the backend's ``embedding`` / ``embedding_grad``
op overrides when it has them: the same values, bit for bit, as the host
gather it falls back to, and the same gradients up to the order of the
additions (the kernels add repeated ids' rows in increasing order, the host
path's ``np.add.reduceat`` pairwise)."""

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle import ops
from needle.errors import ArgumentError
from needle.nn.nn_sequence import _RowGather


def test_device_gather_equals_the_host_path(device):
    if device.op_override("embedding") is None:
        pytest.skip(f"{device} gathers on the host")
    np.random.seed(0)
    emb = nn.Embedding(11, 7, device=device)
    ids = np.random.default_rng(0).integers(0, 11, (6, 5)).astype("float32")   # repeats
    g = np.random.default_rng(1).standard_normal((6, 5, 7)).astype("float32")
    x = ndl.Tensor(ids, device=device, requires_grad=False)
    out = emb(x)
    assert type(out.inputs[0].op).__name__ == "_DeviceRowGather"
    (out * ndl.Tensor(g, device=device)).sum().backward()
    dev_grad = emb.weight.grad.numpy()

    host = ops.reshape(_RowGather(ids.reshape(-1).astype(np.int64))(emb.weight), (6, 5, 7))
    np.testing.assert_array_equal(out.numpy(), host.numpy())
    (host * ndl.Tensor(g, device=device)).sum().backward()
    np.testing.assert_allclose(dev_grad, emb.weight.grad.numpy(), rtol=1e-6, atol=1e-6)
    seq = np.zeros((11, 7), "float32")
    for i, v in enumerate(ids.reshape(-1).astype(int)):   # the kernels' order, exactly
        seq[v] += g.reshape(-1, 7)[i]
    np.testing.assert_array_equal(dev_grad, seq)
    # the ids are still checked on the host, with the module's message
    with pytest.raises(ArgumentError, match="ids must be integers"):
        emb(ndl.Tensor(np.array([[11.0]], "float32"), device=device))
