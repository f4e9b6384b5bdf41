"""The main ops on the backend under test: forward against NumPy, gradient
against central differences (float64).  Small and generic on purpose; the
exhaustive op tests live in needle's own tests/core/test_ops*.py."""

from __future__ import annotations

import numpy as np
import pytest


def _ndl():
    # no skip: a needle.ops that cannot import is a failure the suite must show
    import needle as ndl
    import needle.ops  # noqa: F401
    return ndl


def _lse(x, axes):
    m = x.max(axis=axes, keepdims=True)
    return (np.log(np.exp(x - m).sum(axis=axes, keepdims=True)) + m).squeeze(axis=axes)


# name -> (needle function of tensors, numpy function, input shapes, domain)
OPS = {
    "add": (lambda o, a, b: o.add(a, b), np.add, [(3, 4), (3, 4)], "any"),
    "multiply": (lambda o, a, b: o.multiply(a, b), np.multiply, [(3, 4), (3, 4)], "any"),
    "divide": (lambda o, a, b: o.divide(a, b), np.divide, [(3, 4), (3, 4)], "pos"),
    "power_scalar": (lambda o, a: o.power_scalar(a, 3), lambda x: x ** 3, [(5,)], "any"),
    "negate": (lambda o, a: o.negate(a), np.negative, [(2, 3)], "any"),
    "exp": (lambda o, a: o.exp(a), np.exp, [(2, 5)], "any"),
    "log": (lambda o, a: o.log(a), np.log, [(2, 5)], "pos"),
    "tanh": (lambda o, a: o.tanh(a), np.tanh, [(4, 3)], "any"),
    "relu": (lambda o, a: o.relu(a), lambda x: np.maximum(x, 0), [(4, 3)], "any"),
    "matmul": (lambda o, a, b: o.matmul(a, b), np.matmul, [(3, 5), (5, 2)], "any"),
    "matmul-batched": (lambda o, a, b: o.matmul(a, b), np.matmul, [(2, 3, 4), (4, 5)], "any"),
    "summation": (lambda o, a: o.summation(a, axes=(1,)), lambda x: x.sum(axis=1), [(3, 4, 2)], "any"),
    "broadcast_to": (lambda o, a: o.broadcast_to(a, (3, 2, 4)), lambda x: np.broadcast_to(x, (3, 2, 4)),
                     [(2, 1)], "any"),
    "reshape": (lambda o, a: o.reshape(a, (6, 2)), lambda x: x.reshape(6, 2), [(3, 4)], "any"),
    "transpose": (lambda o, a: o.transpose(a), lambda x: np.swapaxes(x, -1, -2), [(2, 3, 4)], "any"),
    "logsumexp": (lambda o, a: o.logsumexp(a, axes=(1,)), lambda x: _lse(x, (1,)), [(3, 6)], "any"),
}


def _inputs(shapes, domain, seed=0):
    rng = np.random.default_rng(seed)
    if domain == "pos":
        return [rng.uniform(0.5, 2.0, s) for s in shapes]
    # keep away from relu's kink at 0 so finite differences are smooth
    xs = [rng.standard_normal(s) for s in shapes]
    return [np.where(np.abs(x) < 0.05, 0.3, x) for x in xs]


@pytest.mark.parametrize("name", list(OPS))
def test_op_forward(conformance_device, name):
    ndl = _ndl()
    fn, ref, shapes, domain = OPS[name]
    xs = _inputs(shapes, domain)
    ts = [ndl.Tensor(x.astype(np.float32), device=conformance_device, dtype="float32") for x in xs]
    out = fn(ndl.ops, *ts)
    np.testing.assert_allclose(out.numpy(), ref(*xs), rtol=1e-4, atol=1e-5, err_msg=f"{name} forward")


@pytest.mark.parametrize("name", list(OPS))
def test_op_gradient(conformance_device, name):
    ndl = _ndl()
    if "float64" not in conformance_device.require().dtypes:
        pytest.skip("gradient checks run in float64, which this backend does not declare")
    fn, ref, shapes, domain = OPS[name]
    xs = _inputs(shapes, domain, seed=1)
    weights = np.random.default_rng(2).standard_normal(np.shape(ref(*xs)))

    def loss(*arrays):  # sum(f(x) * w), on the backend
        ts = [ndl.Tensor(a, device=conformance_device, dtype="float64", requires_grad=False) for a in arrays]
        return float((fn(ndl.ops, *ts).numpy() * weights).sum())

    ts = [ndl.Tensor(x, device=conformance_device, dtype="float64") for x in xs]
    out = fn(ndl.ops, *ts)
    w = ndl.Tensor(weights, device=conformance_device, dtype="float64", requires_grad=False)
    (out * w).sum().backward()
    eps = 1e-6
    for k, x in enumerate(xs):
        numeric = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            plus, minus = [a.copy() for a in xs], [a.copy() for a in xs]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            numeric[idx] = (loss(*plus) - loss(*minus)) / (2 * eps)
        np.testing.assert_allclose(ts[k].grad.numpy(), numeric, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{name}: gradient of input {k}")
