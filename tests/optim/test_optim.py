"""needle.optim against PyTorch (when installed) and a NumPy reference of the course API's update rules."""

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn


def _problem(seed=0, dtype="float32"):
    """A Linear layer, a fixed batch and a loss closure: enough for several distinct steps."""
    np.random.seed(seed)
    lin = nn.Linear(5, 3, dtype=dtype)
    x = np.random.randn(8, 5).astype(dtype)
    y = np.random.randint(0, 3, size=8)
    X = ndl.Tensor(x, dtype=dtype, requires_grad=False)
    Y = ndl.Tensor(y, requires_grad=False)

    def loss():
        out = lin(X)
        return nn.SoftmaxLoss()(out * out, Y)

    return lin, x, y, loss


def _torch_problem(torch, lin, x, y):
    w = torch.tensor(lin.weight.numpy(), requires_grad=True)
    b = torch.tensor(lin.bias.numpy(), requires_grad=True)
    tx, ty = torch.tensor(x), torch.tensor(y)

    def loss():
        out = tx @ w + b
        return torch.nn.functional.cross_entropy(out * out, ty)

    return [w, b], loss


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_matches_torch_over_several_steps(wd):
    torch = pytest.importorskip("torch")
    lin, x, y, loss = _problem(1)
    tparams, tloss = _torch_problem(torch, lin, x, y)
    opt = ndl.optim.Adam(lin.parameters(), lr=0.05, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=wd)
    topt = torch.optim.Adam(tparams, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd)
    for _ in range(6):
        opt.reset_grad()
        loss().backward()
        opt.step()
        topt.zero_grad()
        tloss().backward()
        topt.step()
    assert opt.t == 6
    np.testing.assert_allclose(lin.weight.numpy(), tparams[0].detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lin.bias.numpy(), tparams[1].detach().numpy(), rtol=1e-4, atol=1e-5)


def test_sgd_plain_matches_torch():
    torch = pytest.importorskip("torch")
    lin, x, y, loss = _problem(2)
    tparams, tloss = _torch_problem(torch, lin, x, y)
    opt = ndl.optim.SGD(lin.parameters(), lr=0.3, weight_decay=0.02)
    topt = torch.optim.SGD(tparams, lr=0.3, weight_decay=0.02)
    for _ in range(5):
        opt.reset_grad()
        loss().backward()
        opt.step()
        topt.zero_grad()
        tloss().backward()
        topt.step()
    np.testing.assert_allclose(lin.weight.numpy(), tparams[0].detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lin.bias.numpy(), tparams[1].detach().numpy(), rtol=1e-4, atol=1e-5)


def test_sgd_momentum_follows_averaged_rule():
    """u <- m u + (1-m) g from u = 0 (unlike torch, whose first buffer is g itself)."""
    lin, x, y, loss = _problem(3)
    lr, m, wd = 0.2, 0.9, 0.01
    w_ref = [lin.weight.numpy().astype(np.float64), lin.bias.numpy().astype(np.float64)]
    u_ref = [np.zeros_like(w) for w in w_ref]
    opt = ndl.optim.SGD(lin.parameters(), lr=lr, momentum=m, weight_decay=wd)
    for _ in range(4):
        opt.reset_grad()
        loss().backward()
        grads = [p.grad.numpy() for p in lin.parameters()]
        # the reference follows needle's parameters so float32 rounding cannot drift apart
        w_ref = [p.numpy().astype(np.float64) for p in lin.parameters()]
        opt.step()
        for i in range(2):
            g = grads[i] + wd * w_ref[i]
            u_ref[i] = m * u_ref[i] + (1 - m) * g
            np.testing.assert_allclose(lin.parameters()[i].numpy(), w_ref[i] - lr * u_ref[i], rtol=1e-5,
                                       atol=1e-6)


def test_step_keeps_dtype_builds_no_graph_and_leaves_grads_untouched():
    for dtype in ("float32", "float64"):
        lin, x, y, loss = _problem(4, dtype=dtype)
        for opt in (ndl.optim.Adam(lin.parameters(), lr=0.1, weight_decay=0.1),
                    ndl.optim.SGD(lin.parameters(), lr=0.1, momentum=0.5, weight_decay=0.1)):
            opt.reset_grad()
            loss().backward()
            before = [p.grad.detach().cached_data.numpy().copy() for p in lin.parameters()]
            opt.step()
            opt.step()
            for p, g in zip(lin.parameters(), before):
                np.testing.assert_array_equal(p.grad.detach().cached_data.numpy(), g)
                assert p.dtype == dtype
                assert p.is_leaf() and p.requires_grad and isinstance(p, nn.Parameter)


def test_params_without_grad_are_skipped():
    lin, x, y, loss = _problem(5)
    extra = nn.Parameter(ndl.init.ones(3))
    opt = ndl.optim.Adam(lin.parameters() + [extra], lr=0.1)
    loss().backward()
    opt.step()
    np.testing.assert_array_equal(extra.numpy(), np.ones(3))
    opt.reset_grad()
    assert all(p.grad is None for p in opt.params)


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    lin, x, y, loss = _problem(6)
    tparams, tloss = _torch_problem(torch, lin, x, y)
    loss().backward()
    tloss().backward()
    raw = [p.grad.numpy().copy() for p in lin.parameters()]
    opt = ndl.optim.SGD(lin.parameters(), lr=0.1)
    total = opt.clip_grad_norm(0.05)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, 0.05)
    assert total == pytest.approx(float(ttotal), rel=1e-4)
    assert total > 0.05
    for p, tp in zip(lin.parameters(), tparams):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-4, atol=1e-7)
    new_norm = np.sqrt(sum((p.grad.numpy().astype(np.float64) ** 2).sum() for p in lin.parameters()))
    assert new_norm == pytest.approx(0.05, rel=1e-4)
    # small gradients are left alone
    lin2, *_ , loss2 = _problem(6)
    loss2().backward()
    ndl.optim.clip_grad_norm(lin2.parameters(), max_norm=1e6)
    for p, g in zip(lin2.parameters(), raw):
        np.testing.assert_allclose(p.grad.numpy(), g)


def test_lr_schedules_match_torch():
    torch = pytest.importorskip("torch")
    for make, tmake in [
        (lambda o: ndl.optim.StepLR(o, step_size=3, gamma=0.5),
         lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
        (lambda o: ndl.optim.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.01)),
    ]:
        opt = ndl.optim.SGD([], lr=0.2)
        topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
        sched, tsched = make(opt), tmake(topt)
        for _ in range(7):
            topt.step()
            sched.step()
            tsched.step()
            assert opt.lr == pytest.approx(tsched.get_last_lr()[0], rel=1e-9, abs=1e-12)


def test_optimizer_state_dict_round_trip_continues_identically():
    lin_a, x, y, loss_a = _problem(7)
    opt_a = ndl.optim.Adam(lin_a.parameters(), lr=0.05, weight_decay=0.01)
    for _ in range(3):
        opt_a.reset_grad()
        loss_a().backward()
        opt_a.step()
    lin_b, _, _, loss_b = _problem(7)  # same data; its weights are overwritten below
    lin_b.weight.data = ndl.init.zeros(5, 3)
    lin_b.load_state_dict(lin_a.state_dict())
    opt_b = ndl.optim.Adam(lin_b.parameters(), lr=0.9)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.t == 3 and opt_b.lr == 0.05 and opt_b.weight_decay == 0.01
    for lin, loss, opt in ((lin_a, loss_a, opt_a), (lin_b, loss_b, opt_b)):
        opt.reset_grad()
        loss().backward()
        opt.step()
    np.testing.assert_allclose(lin_a.weight.numpy(), lin_b.weight.numpy(), rtol=1e-6)


def test_sgd_state_dict_keeps_float_hyperparameters():
    lin, x, y, loss = _problem(9)
    opt = ndl.optim.SGD(lin.parameters(), lr=4, momentum=0.5)
    loss().backward()
    opt.step()
    state = opt.state_dict()
    assert set(state) == {"lr", "momentum", "weight_decay", "u.0", "u.1"}
    other = ndl.optim.SGD(lin.parameters(), lr=1)
    state["lr"] = np.asarray(0.25)
    other.load_state_dict(state)
    assert other.lr == 0.25 and other.momentum == 0.5
    np.testing.assert_array_equal(other.u[lin.weight].numpy(), opt.u[lin.weight].numpy())
