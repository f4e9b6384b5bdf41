"""Tensor.register_post_accumulate_grad_hook: called during backward once a
leaf's gradient is final (DistributedDataParallel starts its allreduce there)."""

import numpy as np
import pytest

import needle as ndl


def test_hook_sees_the_final_summed_gradient_once():
    x = ndl.Tensor([1.0, 2.0], dtype="float64")
    seen = []
    x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    ((x * x).sum() + (x * 3.0).sum() + x.sum()).backward()  # three partial adjoints
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], [2 * 1.0 + 4, 2 * 2.0 + 4])


def test_hooks_run_in_backward_order_and_may_replace_grad():
    a, b = ndl.Tensor([1.0]), ndl.Tensor([2.0])
    order = []

    def replace(t):
        order.append("b")
        t.grad = ndl.Tensor([42.0])

    a.register_post_accumulate_grad_hook(lambda t: order.append("a"))
    b.register_post_accumulate_grad_hook(replace)
    ((a * 2.0) * b).sum().backward()   # b is used last, so its gradient is final first
    assert order == ["b", "a"]
    assert b.grad.numpy().tolist() == [42.0]


def test_remove_and_constants():
    x = ndl.Tensor([1.0])
    calls = []
    handle = x.register_post_accumulate_grad_hook(calls.append)
    handle.remove()
    handle.remove()  # twice is harmless
    (x * 2.0).sum().backward()
    assert calls == []
    c = ndl.Tensor([1.0], requires_grad=False)
    c.register_post_accumulate_grad_hook(calls.append)
    (c * x).sum().backward()
    assert calls == []  # a constant gets no gradient, so no hook


def test_bad_hook_registrations():
    x = ndl.Tensor([1.0])
    with pytest.raises(TypeError, match="hook must be callable"):
        x.register_post_accumulate_grad_hook(3)
    with pytest.raises(ValueError, match="only leaf tensors"):
        (x * 2.0).register_post_accumulate_grad_hook(print)
