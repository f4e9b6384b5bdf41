"""The multi-tensor SGD/Adam steps (issue 14): one backend call per param
group gives the per-parameter composition's values (float32 rounding), keeps
param groups, frozen groups and the state layout, never writes a gradient's
or an old weight's array, and falls back where it is not offered."""

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
import needle.optim as optim
from needle import ops


def _model(device, seed=0):
    np.random.seed(seed)
    return nn.Sequential(nn.Linear(6, 8, device=device), nn.ReLU(), nn.Linear(8, 3, device=device))


def _batch(device, seed=1):
    rng = np.random.default_rng(seed)
    x = ndl.Tensor(rng.standard_normal((5, 6)).astype(np.float32), device=device)
    y = ndl.Tensor(rng.integers(0, 3, 5).astype(np.float32), device=device)
    return x, y


def _run(device, make_opt, fused: bool, steps=4, groups=False):
    model = _model(device)
    params = model.parameters()
    if groups:
        params = [{"params": params[:2]}, {"params": params[2:], "lr": 0.0}]
    opt = make_opt(params)
    if not fused:  # force the per-parameter composition
        opt._fused_step = lambda *a, **k: False
    x, y = _batch(device)
    for _ in range(steps):
        opt.reset_grad()
        nn.SoftmaxLoss()(model(x), y).backward()
        opt.step()
    return [p.numpy() for p in model.parameters()], opt


OPTS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd_mom_wd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda ps: optim.Adam(ps, lr=0.01),
    "adam_wd": lambda ps: optim.Adam(ps, lr=0.01, beta1=0.8, beta2=0.99, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(OPTS))
@pytest.mark.parametrize("groups", [False, True])
def test_fused_step_equals_the_composition(device, name, groups):
    fused, opt_f = _run(device, OPTS[name], True, groups=groups)
    composed, opt_c = _run(device, OPTS[name], False, groups=groups)
    for a, b in zip(fused, composed):
        if device.name == "cpu":  # the C kernel repeats the composition's float32 operations exactly
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    sd_f, sd_c = opt_f.state_dict(), opt_c.state_dict()
    assert sorted(sd_f) == sorted(sd_c)  # same slots keyed by parameter position
    for key in sd_f:
        np.testing.assert_allclose(sd_f[key], sd_c[key], rtol=1e-6, atol=1e-7)


def test_frozen_group_keeps_weights_and_advances_moments(device):
    model = _model(device)
    ps = model.parameters()
    before = [p.numpy() for p in ps]
    opt = optim.Adam([{"params": ps[:2], "lr": 0.0}, {"params": ps[2:]}], lr=0.01)
    x, y = _batch(device)
    nn.SoftmaxLoss()(model(x), y).backward()
    opt.step()
    for p, b in zip(ps[:2], before[:2]):
        np.testing.assert_array_equal(p.numpy(), b)
        assert p in opt.m and p in opt.v
    assert not np.allclose(ps[2].numpy(), before[2])


def test_step_writes_no_gradient_or_old_weight_array(device):
    model = _model(device)
    ps = model.parameters()
    opt = optim.Adam(ps, lr=0.01)
    x, y = _batch(device)
    nn.SoftmaxLoss()(model(x), y).backward()
    grads = [p.grad.detach().cached_data for p in ps]
    grad_vals = [g.numpy().copy() for g in grads]
    olds = [p.cached_data for p in ps]
    old_vals = [o.numpy().copy() for o in olds]
    opt.step()
    for g, v in zip(grads, grad_vals):
        np.testing.assert_array_equal(g.numpy(), v)
    for p, o, v in zip(ps, olds, old_vals):
        np.testing.assert_array_equal(o.numpy(), v)  # the old array is not edited in place
        assert p.cached_data is not o


def test_matches_torch_adam_and_sgd(device):
    torch = pytest.importorskip("torch")
    for make, tmake in ((lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.0),
                         lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-8)),
                        (lambda ps: optim.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1))):
        model = _model(device)
        tparams = [torch.tensor(p.numpy(), requires_grad=True) for p in model.parameters()]
        opt, topt = make(model.parameters()), tmake(tparams)
        x, y = _batch(device)
        for _ in range(3):
            opt.reset_grad()
            nn.SoftmaxLoss()(model(x), y).backward()
            opt.step()
            topt.zero_grad()
            tx, ty = torch.tensor(x.numpy()), torch.tensor(y.numpy()).long()
            h = torch.relu(tx @ tparams[0] + tparams[1]) @ tparams[2] + tparams[3]
            torch.nn.functional.cross_entropy(h, ty).backward()
            topt.step()
        for p, tp in zip(model.parameters(), tparams):
            np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_unsupported_arrays_fall_back():
    """float64 parameters, or a device without the override: None, and the optimizer's loop runs."""
    dev = ndl.cpu()
    w = ndl.backend_ndarray.array(np.ones(3), dtype="float64", device=dev)
    assert ops.multi_tensor_sgd_step([w], [w], None, 0.1, 0.0, 0.0) is None
    wn = ndl.backend_ndarray.array(np.ones(3, np.float32), device=ndl.cpu_numpy())
    assert ops.multi_tensor_sgd_step([wn], [wn], None, 0.1, 0.0, 0.0) is None
    p = nn.Parameter(ndl.Tensor(np.ones(3), dtype="float64", device=dev))
    p.grad = ndl.Tensor(np.full(3, 2.0), dtype="float64", device=dev)
    optim.SGD([p], lr=0.5, momentum=0.5).step()
    np.testing.assert_allclose(p.numpy(), 1 - 0.5 * 0.5 * 2.0)


def test_one_backend_call_per_group():
    dev = ndl.cpu()
    kernel = dev.op_override("adam_step")
    if kernel is None:
        pytest.skip("no compiled cpu backend")
    calls = []
    dev._overrides["adam_step"] = lambda *a: (calls.append(len(a[0])), kernel(*a))[1]
    try:
        model = _model(dev)
        opt = optim.Adam(model.parameters(), lr=0.01)
        x, y = _batch(dev)
        nn.SoftmaxLoss()(model(x), y).backward()
        opt.step()
    finally:
        dev._overrides["adam_step"] = kernel
    assert calls == [4]


def test_multi_tensor_adam_step_formula():
    """The core entry point itself: Adam's update with folded scalars, fresh arrays."""
    dev = ndl.cpu()
    if dev.op_override("adam_step") is None:
        pytest.skip("no compiled cpu backend")
    rng = np.random.default_rng(3)
    host = [rng.standard_normal(n).astype(np.float32) for n in (5, 9)]
    arr = lambda a: ndl.backend_ndarray.array(a, device=dev)  # noqa: E731
    ws, gs = [arr(h) for h in host], [arr(h * 0.5) for h in host]
    ms, vs = [arr(h * 0.1) for h in host], [arr(np.abs(h)) for h in host]
    new_w, new_m, new_v = ops.multi_tensor_adam_step(ws, gs, ms, vs, 0.9, 0.99, 0.0, 2.0, 1e-3, False)
    for h, w, m, v in zip(host, new_w, new_m, new_v):
        g = h * 0.5
        mm, vv = 0.9 * h * 0.1 + 0.1 * g, 0.99 * np.abs(h) + 0.01 * g * g
        np.testing.assert_allclose(m.numpy(), mm, rtol=1e-6)
        np.testing.assert_allclose(v.numpy(), vv, rtol=1e-6)
        np.testing.assert_allclose(w.numpy(), h - mm / (np.sqrt(vv * 2.0) + 1e-3), rtol=1e-5)
    np.testing.assert_array_equal(ws[0].numpy(), host[0])  # inputs untouched
    frozen = ops.multi_tensor_adam_step(ws, gs, ms, vs, 0.9, 0.99, 0.0, 2.0, 1e-3, True)
    assert frozen[0] is None and len(frozen[1]) == 2


def _addresses(model):
    return [p.cached_data._handle.ptr() for p in model.parameters()]


@pytest.mark.parametrize("name", ["sgd", "sgd_mom_wd", "adam_wd"])
def test_unshared_weights_and_states_are_updated_in_place(device, name, monkeypatch):
    """Under PyTorch's .grad rule nothing but the parameter holds its array
    after backward, so the fused step writes into it (and into the momentum /
    moment arrays) instead of a fresh buffer each step; the values are the
    out-of-place composition's."""
    if ndl.device(device).op_override("sgd_step") is None:
        pytest.skip(f"{device} has no fused optimizer step (its composition makes fresh arrays)")
    monkeypatch.setattr(ndl.autograd, "KEEP_INTERIOR_GRADS", False)
    model = _model(device)
    opt = OPTS[name](model.parameters())
    x, y = _batch(device)
    states = []
    for step in range(3):
        opt.reset_grad()
        nn.SoftmaxLoss()(model(x), y).backward()
        before = _addresses(model)
        opt.step()
        assert _addresses(model) == before, f"step {step} moved a parameter to a new buffer"
        table = opt.u if name.startswith("sgd_mom") else getattr(opt, "m", None)
        if table:
            states.append([table[p]._handle.ptr() for p in model.parameters()])
    if states:  # from the second step on, the states are written in place too
        assert states[1] == states[2]
    fused, _ = _run(device, OPTS[name], True)
    composed, _ = _run(device, OPTS[name], False)
    for f, c in zip(fused, composed):
        np.testing.assert_allclose(f, c, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("hold", ["data", "detach", "view", "numpy", "state"])
def test_a_held_array_is_never_overwritten(device, hold, monkeypatch):
    """Anything that can still see a parameter's (or a state's) array -- a
    ``p.data`` or ``detach()`` Tensor, an NDArray view, a NumPy export, the
    state array itself -- keeps its values: the step writes a fresh array."""
    monkeypatch.setattr(ndl.autograd, "KEEP_INTERIOR_GRADS", False)
    model = _model(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _batch(device)
    for _ in range(2):  # the second step has momentum states to hold
        opt.reset_grad()
        nn.SoftmaxLoss()(model(x), y).backward()
        p = model.parameters()[0]
        if hold == "data":
            held = p.data
        elif hold == "detach":
            held = p.detach()
        elif hold == "view":
            held = p.cached_data.reshape((p.cached_data.size,))
        elif hold == "numpy":
            held = p.cached_data.numpy()
        else:
            held = opt.u.get(p)
        if held is None:  # no state before the first step
            opt.step()
            continue
        values = (held.numpy() if hasattr(held, "numpy") else held).copy()
        opt.step()
        after = held.numpy() if hasattr(held, "numpy") else held
        np.testing.assert_array_equal(after, values)
        assert not np.array_equal(p.numpy().reshape(-1), values.reshape(-1))


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.5),
                                  lambda ps: optim.Adam(ps, lr=0.1)], ids=["sgd", "adam"])
def test_a_parameter_listed_twice_is_updated_twice_like_the_loop(device, make, monkeypatch):
    """A parameter listed twice in a group is updated twice, the second update
    starting from the first (the per-parameter loop's result, and PyTorch's);
    the fused step computed both from the old values before."""
    monkeypatch.setattr(ndl.autograd, "KEEP_INTERIOR_GRADS", False)
    results = []
    for fused in (True, False):
        w = nn.Parameter(ndl.Tensor(np.array([1.0, -2.0, 3.0], np.float32), device=device))
        opt = make([w, w])
        if not fused:
            opt._fused_step = lambda *a, **k: False
        for _ in range(2):
            opt.reset_grad()
            (w * w).sum().backward()
            opt.step()
        results.append(w.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)
