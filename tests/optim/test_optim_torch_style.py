"""PyTorch-style optimizer additions: Adam(betas=), param_groups, zero_grad,
schedulers that follow param groups -- with the course's update rules."""

import re
import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
import needle.optim as optim


def _params(seed, shapes=((3, 2), (2,), (2, 2))):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(ndl.Tensor(rng.standard_normal(s).astype(np.float32))) for s in shapes]


def _set_grads(params, seed):
    rng = np.random.default_rng(seed)
    for p in params:
        p.grad = ndl.Tensor(rng.standard_normal(p.shape).astype(np.float32), requires_grad=False)


def test_adam_betas_equals_beta1_beta2():
    a, b = _params(0), _params(0)
    oa = optim.Adam(a, lr=0.1, beta1=0.8, beta2=0.99)
    ob = optim.Adam(b, lr=0.1, betas=(0.8, 0.99))
    assert ob.beta1 == 0.8 and ob.beta2 == 0.99 and ob.betas == (0.8, 0.99)
    for step in range(3):
        _set_grads(a, step), _set_grads(b, step)
        oa.step(), ob.step()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    with pytest.raises(ValueError, match="give one"):
        optim.Adam(a, beta1=0.5, betas=(0.8, 0.99))
    with pytest.raises(ValueError, match="must be a pair"):
        optim.Adam(a, betas=0.9)


def test_param_groups_equal_separate_optimizers():
    for cls, kw in ((optim.SGD, {"momentum": 0.9}), (optim.Adam, {})):
        p, q = _params(1), _params(1)
        grouped = cls([{"params": p[:2], "lr": 0.1}, {"params": p[2:], "lr": 0.01, "weight_decay": 0.1}], lr=0.5,
                      **kw)
        first, second = cls(q[:2], lr=0.1, **kw), cls(q[2:], lr=0.01, weight_decay=0.1, **kw)
        assert [g["lr"] for g in grouped.param_groups] == [0.1, 0.01]
        assert grouped.params == p
        for step in range(3):
            _set_grads(p, step), _set_grads(q, step)
            grouped.step(), first.step(), second.step()
        for x, y in zip(p, q):
            np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-6, err_msg=cls.__name__)


def test_adam_param_groups_match_torch():
    torch = pytest.importorskip("torch")
    p = _params(2)
    tp = [torch.tensor(x.numpy(), requires_grad=True) for x in p]
    ours = optim.Adam([{"params": p[:1]}, {"params": p[1:], "lr": 0.05}], lr=0.01, betas=(0.8, 0.95),
                      weight_decay=0.01)
    theirs = torch.optim.Adam([{"params": tp[:1]}, {"params": tp[1:], "lr": 0.05}], lr=0.01, betas=(0.8, 0.95),
                              weight_decay=0.01)
    for step in range(4):
        if step == 2:  # a PyTorch-style lr change mid-run
            for group in ours.param_groups:
                group["lr"] *= 0.5
            for group in theirs.param_groups:
                group["lr"] *= 0.5
        _set_grads(p, step)
        for t, x in zip(tp, p):
            t.grad = torch.tensor(x.grad.numpy())
        ours.step(), theirs.step()
    for x, t in zip(p, tp):
        np.testing.assert_allclose(x.numpy(), t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_course_lr_attribute_reads_first_group_and_sets_all():
    p = _params(3)
    opt = optim.SGD([{"params": p[:1], "lr": 0.1}, {"params": p[1:], "lr": 0.2}])
    assert opt.lr == 0.1
    opt.lr = 0.3
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]


def test_frozen_group_lr_zero_keeps_weights():
    p = _params(4)
    before = [x.numpy().copy() for x in p]
    opt = optim.Adam([{"params": p[:1], "lr": 0.0}, {"params": p[1:]}], lr=0.1)
    _set_grads(p, 0)
    opt.step()
    np.testing.assert_array_equal(p[0].numpy(), before[0])
    assert not np.array_equal(p[1].numpy(), before[1])


def test_bad_groups_are_refused():
    p = _params(5)
    with pytest.raises(KeyError, match="unknown option"):
        optim.SGD([{"params": p, "betas": (0.9, 0.9)}])
    with pytest.raises(ValueError, match="already in another group"):
        optim.SGD([{"params": p}, {"params": p[:1]}])
    with pytest.raises(TypeError, match="all Tensors or all param-group dicts"):
        optim.SGD([p[0], {"params": p[1:]}])


def test_zero_grad_accepts_set_to_none():
    p = _params(6)
    opt = optim.SGD(p)
    _set_grads(p, 0)
    opt.zero_grad(set_to_none=False)
    assert all(x.grad is None for x in p)


def test_schedulers_follow_each_group_like_torch():
    torch = pytest.importorskip("torch")
    p = _params(7)
    tp = [torch.zeros(1, requires_grad=True) for _ in range(2)]
    for make_ours, make_theirs in (
            (lambda o: optim.StepLR(o, step_size=2, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5)),
            (lambda o: optim.CosineAnnealingLR(o, T_max=5, eta_min=0.001),
             lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 5, eta_min=0.001))):
        ours = optim.SGD([{"params": p[:1], "lr": 0.1}, {"params": p[1:], "lr": 0.02}])
        theirs = torch.optim.SGD([{"params": tp[:1], "lr": 0.1}, {"params": tp[1:], "lr": 0.02}])
        so, st = make_ours(ours), make_theirs(theirs)
        for _ in range(5):  # up to T_max: past it needle's cosine stays flat, PyTorch's turns back up
            theirs.step()
            so.step(), st.step()
            np.testing.assert_allclose([g["lr"] for g in ours.param_groups],
                                       [g["lr"] for g in theirs.param_groups], rtol=1e-12)


def test_group_state_round_trips_through_state_dict():
    p, q = _params(8), _params(8)
    a = optim.Adam([{"params": p[:1], "lr": 0.1}, {"params": p[1:], "lr": 0.02}])
    b = optim.Adam([{"params": q[:1]}, {"params": q[1:]}])
    _set_grads(p, 0)
    a.step()
    sched_a = optim.StepLR(a, step_size=1, gamma=0.5)
    sched_a.step()
    b.load_state_dict(a.state_dict())
    assert [g["lr"] for g in b.param_groups] == [0.05, 0.01]
    sched_b = optim.StepLR(b, step_size=1, gamma=0.5)
    sched_b.load_state_dict(sched_a.state_dict())
    sched_b.step(), sched_a.step()
    assert [g["lr"] for g in b.param_groups] == [g["lr"] for g in a.param_groups] == [0.025, 0.005]


def test_scheduler_drives_a_course_style_optimizer_subclass():
    class Plain(optim.Optimizer):  # as student code writes one: lr as an attribute
        def __init__(self, params, lr):
            super().__init__(params)
            self.lr = lr

        def step(self):
            pass

    opt = Plain(_params(9), lr=0.4)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    assert opt.lr == 0.2


# --------------------------------------------------------------------------- #
# contrib/optim survivors (fifth session)
# --------------------------------------------------------------------------- #
def test_zero_grad_sets_gradients_to_none_by_default():
    # PyTorch 2's default (set_to_none=True)
    params = _params(81)
    _set_grads(params, 82)
    opt = optim.SGD(params, lr=0.1)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_hyperparameter_bounds_are_open_at_one():
    # momentum and Adam's betas are an average's weights, in [0, 1); eps > 0
    from needle.errors import HyperParameterError
    params = _params(83)
    for bad in (1.0, 1.5):
        with pytest.raises(HyperParameterError, match="SGD: momentum"):
            optim.SGD(params, lr=0.1, momentum=bad)
        with pytest.raises(HyperParameterError, match="Adam: beta1"):
            optim.Adam(params, beta1=bad)
        with pytest.raises(HyperParameterError, match="Adam: beta2"):
            optim.Adam(params, beta2=bad)
    with pytest.raises(HyperParameterError, match="Adam: eps"):
        optim.Adam(params, eps=0.0)
    optim.SGD(params, lr=0.1, momentum=0.999)
    optim.Adam(params, beta1=0.0, beta2=0.999999, eps=1e-12)


def test_load_state_dict_refuses_several_numbers_for_a_scalar_naming_the_call():
    from needle.errors import StateDictError
    params = _params(84)
    opt = optim.Adam(params, lr=0.01)
    state = opt.state_dict()
    for key in ("t", "param_groups.0.lr"):
        bad = dict(state)
        bad[key] = np.array([0.5, 0.25])
        with pytest.raises(StateDictError, match=rf"^Adam\.load_state_dict: {re.escape(key)} must be one finite number"):
            opt.load_state_dict(bad)
    with pytest.raises(StateDictError, match=r"^Adam\.load_state_dict: expected a mapping, got list"):
        opt.load_state_dict([])


def test_sgd_and_adam_steps_run_as_one_multi_tensor_call_on_cpu(monkeypatch):
    from needle.backend_ndarray import NDArray
    if not ndl.cpu().enabled():
        pytest.skip("the compiled cpu backend is not built")
    calls, real = [], NDArray.call_multi_tensor_override

    def spy(name, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(NDArray, "call_multi_tensor_override", staticmethod(spy))
    for opt_cls, kw, name in ((optim.SGD, dict(lr=0.1, momentum=0.9), "sgd_step"),
                              (optim.Adam, dict(lr=0.01), "adam_step")):
        params = [ndl.Tensor(np.ones((3, 2), np.float32), device=ndl.cpu(), requires_grad=True)]
        params[0].grad = ndl.Tensor(np.full((3, 2), 0.5, np.float32), device=ndl.cpu())
        calls.clear()
        opt_cls(params, **kw).step()
        assert calls == [name]
