"""needle.optim against NumPy references of the course API's update rules: an oracle
that needs no PyTorch, so the optimizers stay checked on any machine.

Gradients are set by hand (no autograd in the loop), so each step's expected
value follows from the formulas alone; they include values near ``eps`` where
a mis-scaled eps changes the step several-fold.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import needle as ndl
from needle.errors import StateDictError

# ---------------------------------------------------------------- references
# the course API's optimizer formulas, written out once in float64


def sgd_reference(params, grads_per_step, lr, momentum=0.0, weight_decay=0.0):
    """p <- p - lr * u,  u <- m*u + (1-m)*(grad + wd*p), u starting at 0."""
    params = [p.astype(np.float64).copy() for p in params]
    u = [np.zeros_like(p) for p in params]
    for grads in grads_per_step:
        for i, g in enumerate(grads):
            if g is None:
                continue
            g = g + weight_decay * params[i]
            u[i] = momentum * u[i] + (1 - momentum) * g
            params[i] = params[i] - lr * u[i]
    return params


def adam_reference(params, grads_per_step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Bias-corrected Adam with L2 weight decay; t counts calls of step()."""
    params = [p.astype(np.float64).copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            if g is None:
                continue
            g = g + weight_decay * params[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1 ** t)
            v_hat = v[i] / (1 - beta2 ** t)
            params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


# ---------------------------------------------------------------- helpers
def _params(seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((3, 4)), rng.standard_normal((4,)), rng.standard_normal((2, 2))]
    return arrays, [ndl.Tensor(a, dtype=dtype) for a in arrays]


def _grads(seed, steps, scale=1.0, skip=()):
    """Per step, one gradient per parameter (None where (step, index) in skip)."""
    rng = np.random.default_rng(100 + seed)
    shapes = [(3, 4), (4,), (2, 2)]
    return [[None if (s, i) in skip else rng.standard_normal(sh) * scale for i, sh in enumerate(shapes)]
            for s in range(steps)]


def _run(opt, tensors, grads_per_step, dtype="float64"):
    for grads in grads_per_step:
        for t, g in zip(tensors, grads):
            t.grad = None if g is None else ndl.Tensor(g, dtype=dtype, requires_grad=False)
        opt.step()


def _close(tensors, expected, rtol=1e-10, atol=1e-12):
    for i, (t, e) in enumerate(zip(tensors, expected)):
        np.testing.assert_allclose(t.numpy(), e, rtol=rtol, atol=atol, err_msg=f"parameter {i}")


# ---------------------------------------------------------------- SGD
@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.1), (0.5, 0.01)])
def test_sgd_matches_numpy_reference(momentum, wd):
    arrays, tensors = _params(1)
    grads = _grads(1, 5, skip={(2, 1)})
    opt = ndl.optim.SGD(tensors, lr=0.3, momentum=momentum, weight_decay=wd)
    _run(opt, tensors, grads)
    _close(tensors, sgd_reference(arrays, grads, 0.3, momentum, wd))


def test_sgd_momentum_state_is_the_average_not_the_sum():
    # two identical gradients: u = (1-m) g, then m(1-m) g + (1-m) g
    p = ndl.Tensor(np.zeros(3), dtype="float64")
    opt = ndl.optim.SGD([p], lr=1.0, momentum=0.9)
    g = np.array([1.0, -2.0, 0.5])
    _run(opt, [p], [[g], [g]])
    np.testing.assert_allclose(opt.u[p].numpy(), (0.9 * 0.1 + 0.1) * g, rtol=1e-12)
    np.testing.assert_allclose(p.numpy(), -(0.1 + 0.19) * g, rtol=1e-12)


def test_sgd_defaults_follow_api():
    p = ndl.Tensor(np.ones(2), dtype="float64")
    opt = ndl.optim.SGD([p])
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.01, 0.0, 0.0)
    _run(opt, [p], [[np.array([1.0, 2.0])]])
    np.testing.assert_allclose(p.numpy(), [0.99, 0.98], rtol=1e-12)


# ---------------------------------------------------------------- Adam
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adam_matches_numpy_reference(wd):
    arrays, tensors = _params(2)
    grads = _grads(2, 6, skip={(1, 0), (4, 2)})
    opt = ndl.optim.Adam(tensors, lr=0.02, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=wd)
    _run(opt, tensors, grads)
    assert opt.t == 6
    _close(tensors, adam_reference(arrays, grads, 0.02, 0.8, 0.95, 1e-6, wd))


@pytest.mark.parametrize("eps", [1e-8, 1e-3])
def test_adam_eps_enters_unscaled_when_gradients_are_near_eps(eps):
    # |g| ~ eps: the step is lr * g / (|g| + eps), so eps scaled by anything
    # (the bias corrections, lr) changes the step by a large factor
    arrays, tensors = _params(3)
    grads = _grads(3, 4, scale=eps)
    opt = ndl.optim.Adam(tensors, lr=0.1, eps=eps)
    _run(opt, tensors, grads)
    _close(tensors, adam_reference(arrays, grads, 0.1, eps=eps), rtol=1e-9, atol=1e-14)
    moved = abs(tensors[0].numpy() - arrays[0]).max()
    assert 0.01 < moved < 0.4, moved  # about lr * |g| / (|g| + eps) per step


def test_adam_defaults_and_first_step_is_lr_times_sign():
    # step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps)
    p = ndl.Tensor(np.zeros(4), dtype="float64")
    opt = ndl.optim.Adam([p])
    assert (opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, opt.t) == (0.01, 0.9, 0.999, 1e-8, 0.0, 0)
    g = np.array([3.0, -0.5, 1e-3, -20.0])
    _run(opt, [p], [[g]])
    np.testing.assert_allclose(p.numpy(), -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)


def test_adam_float32_parameters_stay_float32_and_match_reference():
    arrays, tensors = _params(4, dtype="float32")
    grads = _grads(4, 3)
    opt = ndl.optim.Adam(tensors, lr=0.01)
    _run(opt, tensors, grads, dtype="float32")
    assert all(t.dtype == "float32" for t in tensors)
    _close(tensors, adam_reference([a.astype(np.float32) for a in arrays],
                                   [[g.astype(np.float32) for g in gs] for gs in grads], 0.01),
           rtol=1e-5, atol=1e-6)


def test_reset_grad_and_zero_grad_clear_every_gradient():
    _, tensors = _params(5)
    opt = ndl.optim.SGD(tensors, lr=0.1)
    for opt_clear in (opt.reset_grad, opt.zero_grad):
        for t in tensors:
            t.grad = ndl.Tensor(np.ones(t.shape), dtype="float64")
        opt_clear()
        assert all(t.grad is None for t in tensors)


# ---------------------------------------------------------------- clipping
def test_clip_grad_norm_scales_by_the_global_norm():
    _, tensors = _params(6)
    grads = _grads(6, 1, scale=3.0)[0]
    for t, g in zip(tensors, grads):
        t.grad = ndl.Tensor(g, dtype="float64")
    total = math.sqrt(sum(float((g * g).sum()) for g in grads))
    opt = ndl.optim.SGD(tensors)
    assert opt.clip_grad_norm(max_norm=1.5) == pytest.approx(total, rel=1e-12)
    for t, g in zip(tensors, grads):
        np.testing.assert_allclose(t.grad.numpy(), g * 1.5 / (total + 1e-6), rtol=1e-12)
    # under the threshold: untouched, and the norm is still returned
    before = [t.grad.numpy().copy() for t in tensors]
    small = math.sqrt(sum(float((b * b).sum()) for b in before))
    assert ndl.optim.clip_grad_norm(tensors, max_norm=small * 2) == pytest.approx(small, rel=1e-12)
    for t, b in zip(tensors, before):
        np.testing.assert_array_equal(t.grad.numpy(), b)


# ---------------------------------------------------------------- state dicts
def test_load_state_dict_refuses_a_slot_of_the_wrong_shape():
    _, tensors = _params(7)
    opt = ndl.optim.Adam(tensors, lr=0.01)
    _run(opt, tensors, _grads(7, 1))
    state = opt.state_dict()
    assert state["m.0"].shape == (3, 4) and int(state["t"]) == 1
    state["m.1"] = np.zeros((5,))
    fresh = ndl.optim.Adam(tensors, lr=0.01)
    with pytest.raises(StateDictError, match=r"m\.1 has shape \(5,\), parameter 1 has shape \(4,\)"):
        fresh.load_state_dict(state)
    assert isinstance(StateDictError("x"), ValueError)
    assert fresh.t == 0 and fresh.m == {} and fresh.v == {}  # all or nothing: nothing was applied


def test_load_state_dict_restores_scalars_and_slots():
    arrays, tensors = _params(8)
    grads = _grads(8, 4)
    opt = ndl.optim.Adam(tensors, lr=0.03, beta1=0.7)
    _run(opt, tensors, grads[:2])
    state = opt.state_dict()
    other = ndl.optim.Adam(tensors)
    other.load_state_dict(state)
    assert other.t == 2 and isinstance(other.t, int)
    assert (other.lr, other.beta1) == (0.03, 0.7)
    _run(other, tensors, grads[2:])
    _close(tensors, adam_reference(arrays, grads, 0.03, beta1=0.7))


# ---------------------------------------------------------------- schedules
def _opt(lr=1.0):
    return ndl.optim.SGD([ndl.Tensor(np.zeros(1), dtype="float64")], lr=lr)


def test_steplr_closed_form_and_get_last_lr():
    opt = _opt(0.5)
    sched = ndl.optim.StepLR(opt, step_size=2)  # default gamma 0.1
    assert sched.get_last_lr() == 0.5
    seen = [sched.step() for _ in range(5)]
    assert seen == pytest.approx([0.5, 0.05, 0.05, 0.005, 0.005])
    assert sched.get_last_lr() == opt.lr == pytest.approx(0.005)
    one = ndl.optim.StepLR(_opt(1.0), step_size=1, gamma=0.5)  # step_size 1 is valid
    assert [one.step() for _ in range(3)] == pytest.approx([0.5, 0.25, 0.125])
    for bad in (0, -1):
        with pytest.raises(ValueError, match="step_size"):
            ndl.optim.StepLR(_opt(), step_size=bad)


def test_cosine_closed_form_flat_after_t_max():
    opt = _opt(1.0)
    sched = ndl.optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    got = [sched.step() for _ in range(6)]
    want = [0.1 + 0.9 * (1 + math.cos(math.pi * min(e, 4) / 4)) / 2 for e in range(1, 7)]
    assert got == pytest.approx(want, rel=1e-12)
    assert ndl.optim.CosineAnnealingLR(_opt(), T_max=1).step() == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="T_max"):
        ndl.optim.CosineAnnealingLR(_opt(), T_max=0)


def test_scheduler_state_dict_round_trip_resumes_the_schedule():
    sched = ndl.optim.StepLR(_opt(2.0), step_size=2, gamma=0.5)
    for _ in range(3):
        sched.step()
    state = sched.state_dict()
    assert state == {"base_lr": 2.0, "last_epoch": 3}
    opt2 = _opt(99.0)
    resumed = ndl.optim.StepLR(opt2, step_size=2, gamma=0.5)
    resumed.load_state_dict(state)
    assert resumed.base_lr == 2.0 and resumed.last_epoch == 3
    assert opt2.lr == pytest.approx(1.0)  # lr_at(3) restored onto the optimizer at once
    assert resumed.step() == pytest.approx(0.5)


def test_scheduler_needs_an_lr():
    with pytest.raises(TypeError, match="no 'lr' attribute"):
        ndl.optim.StepLR(object(), step_size=1)


def test_clip_grad_norm_default_max_norm_is_a_quarter():
    p = ndl.Tensor(np.zeros(2), dtype="float64")
    p.grad = ndl.Tensor(np.array([3.0, 4.0]), dtype="float64")
    assert ndl.optim.SGD([p]).clip_grad_norm() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), np.array([3.0, 4.0]) * 0.25 / (5.0 + 1e-6), rtol=1e-12)


def test_a_custom_optimizer_inherits_a_state_dict_of_its_lr():
    class Halver(ndl.optim.Optimizer):
        def __init__(self, params, lr):
            super().__init__(params)
            self.lr = lr

        def step(self):
            for p in self.params:
                p.data = p.realize_cached_data() * self.lr

    p = ndl.Tensor(np.array([4.0, -2.0]), dtype="float64")
    opt = Halver([p], lr=0.5)
    opt.step()
    np.testing.assert_array_equal(p.numpy(), [2.0, -1.0])
    state = opt.state_dict()
    assert list(state) == ["lr"] and float(state["lr"]) == 0.5
    other = Halver([p], lr=9.0)
    other.load_state_dict({"lr": np.asarray(0.25)})
    assert other.lr == 0.25


def test_load_state_dict_skips_params_without_state_and_loads_the_rest():
    # parameter 0 never had a gradient, so there is no m.0/v.0: the later slots still load
    arrays, tensors = _params(9)
    grads = _grads(9, 3, skip={(0, 0)})
    opt = ndl.optim.Adam(tensors, lr=0.05)
    _run(opt, tensors, grads[:1])
    state = opt.state_dict()
    assert "m.0" not in state and "m.1" in state and "v.2" in state
    other = ndl.optim.Adam(tensors, lr=0.05)
    other.load_state_dict(state)
    assert set(other.m) == {tensors[1], tensors[2]}
    _run(other, tensors, grads[1:])
    # reference: param 0 starts its moments at step 2 but shares the global t
    _close(tensors, adam_reference(arrays, [[None, grads[0][1], grads[0][2]]] + grads[1:], 0.05))


def test_clip_grad_norm_function_default_and_boundary():
    p = ndl.Tensor(np.zeros(2), dtype="float64")
    p.grad = ndl.Tensor(np.array([0.3, 0.4]), dtype="float64")  # norm 0.5 > 0.25 (the default)
    assert ndl.optim.clip_grad_norm([p]) == pytest.approx(0.5)
    np.testing.assert_allclose(p.grad.numpy(), np.array([0.3, 0.4]) * 0.25 / (0.5 + 1e-6), rtol=1e-12)
    # exactly at the threshold: "exceeds" is strict, the gradient is left as it is
    p.grad = ndl.Tensor(np.array([3.0, 4.0]), dtype="float64")
    assert ndl.optim.clip_grad_norm([p], max_norm=5.0) == 5.0
    np.testing.assert_array_equal(p.grad.numpy(), [3.0, 4.0])
