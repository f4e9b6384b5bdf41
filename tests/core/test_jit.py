"""needle.jit: a captured and replayed step gives eager's values, and every
bad use raises JitError (issue 15).

Each model test trains two copies from one seed, one eagerly and one through
``ndl.jit``, on the same batches and compares every parameter after 5 steps
(call 1 eager, call 2 captured, calls 3-5 replayed).
"""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
import needle.optim as optim
from needle import models
from needle.errors import JitError

STEPS = 5


def _t(a, device, **kw):
    return ndl.Tensor(a, device=device, requires_grad=False, **kw)


def _params_equal(m1, m2, atol=1e-6):
    for p, q in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=0, atol=atol)


def _train_both(build, batches, device):
    """(eager losses, jitted losses, eager model, jitted model, the JitFunction)."""
    m1, step1, after1 = build(device)
    m2, step2, after2 = build(device)
    jitted = ndl.jit(step2)
    l1, l2 = [], []
    for args in batches:
        l1.append(step1(*[_t(a, device) for a in args]).numpy())
        after1()
        l2.append(jitted(*[_t(a, device) for a in args]).numpy())
        after2()
    return l1, l2, m1, m2, jitted


def _classifier_step(model, opt):
    """The usual step: forward, SoftmaxLoss, backward, optimizer step; returns the loss."""
    loss_fn = nn.SoftmaxLoss()

    def step(x, y):
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def _classifier_batches(shape, classes, n=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape).astype("float32"),
             rng.integers(0, classes, shape[0]).astype("float32")) for _ in range(n)]


def _mlp_resnet(drop_prob=0.0):
    def build(device):
        np.random.seed(0)
        model = models.MLPResNet(20, hidden_dim=16, num_blocks=2, num_classes=5, drop_prob=drop_prob,
                                 device=device)
        opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
        sched = optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
        step = _classifier_step(model, opt)
        return model, step, sched.step
    return build


def test_mlp_resnet_adam_cosine_matches_eager(device):
    l1, l2, m1, m2, jitted = _train_both(_mlp_resnet(), _classifier_batches((8, 20), 5), device)
    np.testing.assert_allclose(l1, l2, rtol=0, atol=1e-6)
    _params_equal(m1, m2)
    assert jitted.stats == {"eager": 1, "captures": 1, "replays": 3}


def test_resnet9_sgd_momentum_matches_eager(device):
    def build(dev):
        np.random.seed(0)
        model = models.ResNet9(device=dev)
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
        step = _classifier_step(model, opt)
        return model, step, lambda: None
    l1, l2, m1, m2, jitted = _train_both(build, _classifier_batches((2, 3, 32, 32), 10), device)
    np.testing.assert_allclose(l1, l2, rtol=0, atol=1e-6)
    _params_equal(m1, m2)
    for p, q in zip(m1.parameters(), m2.parameters()):   # the last replay's gradients, left in p.grad
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=0, atol=1e-6)
    # BatchNorm's running statistics follow the replays too
    norms = [(a, b) for a, b in zip(nn.Module.modules(m1), nn.Module.modules(m2)) if isinstance(a, nn.BatchNorm2d)]
    assert norms
    for a, b in norms:
        np.testing.assert_allclose(a.running_mean.numpy(), b.running_mean.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.running_var.numpy(), b.running_var.numpy(), rtol=0, atol=1e-6)
        assert np.abs(a.running_mean.numpy()).max() > 0   # they did move


def test_lstm_language_model_matches_eager(device):
    vocab, seq, batch = 30, 6, 4

    def build(dev):
        np.random.seed(0)
        model = models.LanguageModel(8, vocab, 8, num_layers=2, seq_model="lstm", device=dev)
        opt = optim.SGD(model.parameters(), lr=0.5)
        loss_fn = nn.SoftmaxLoss()

        def step(x, y, h0, c0):
            opt.reset_grad()
            out, (h, c) = model(x, (h0, c0))
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            return loss, h, c
        return model, step, lambda: None

    rng = np.random.default_rng(3)
    m1, step1, _ = build(device)
    m2, step2, _ = build(device)
    jitted = ndl.jit(step2)
    h1 = h2 = (np.zeros((2, batch, 8), "float32"),) * 2
    for _ in range(STEPS):
        x = rng.integers(0, vocab, (seq, batch)).astype("float32")
        y = rng.integers(0, vocab, seq * batch).astype("float32")
        la, ha, ca = step1(_t(x, device), _t(y, device), _t(h1[0], device), _t(h1[1], device))
        lb, hb, cb = jitted(_t(x, device), _t(y, device), _t(h2[0], device), _t(h2[1], device))
        np.testing.assert_allclose(la.numpy(), lb.numpy(), rtol=0, atol=1e-6)
        h1, h2 = (ha.numpy(), ca.numpy()), (hb.numpy(), cb.numpy())  # carried state, as in truncated BPTT
        np.testing.assert_allclose(h1[0], h2[0], rtol=0, atol=1e-6)
    _params_equal(m1, m2)
    assert jitted.stats["replays"] == STEPS - 2


def test_transformer_layer_matches_eager(device):
    def build(dev):
        np.random.seed(0)
        model = nn.TransformerLayer(16, 2, 8, 32, dropout=0.0, device=dev)
        opt = optim.Adam(model.parameters(), lr=1e-3)

        def step(x, target):
            opt.reset_grad()
            diff = model(x) - target
            loss = (diff * diff).sum()
            loss.backward()
            opt.step()
            return loss
        return model, step, lambda: None
    rng = np.random.default_rng(2)
    batches = [(rng.standard_normal((2, 5, 16)).astype("float32"),
                rng.standard_normal((2, 5, 16)).astype("float32")) for _ in range(STEPS)]
    l1, l2, m1, m2, _ = _train_both(build, batches, device)
    np.testing.assert_allclose(l1, l2, rtol=1e-6, atol=1e-6)
    _params_equal(m1, m2)


def test_dropout_is_fresh_every_replay_and_the_loss_falls_alike(device):
    """Jitted dropout draws from the device generator (another stream than
    eager's NumPy draws), a new mask each replay; training still converges
    the same way on a fixed problem."""
    batches = _classifier_batches((16, 20), 5, n=40, seed=4) * 1
    x, y = batches[0]
    build = _mlp_resnet(drop_prob=0.2)
    losses = {}
    for name in ("eager", "jit"):
        model, step, _ = build(device)
        if name == "jit":
            step = ndl.jit(step)
        losses[name] = [float(step(_t(x, device), _t(y, device)).numpy()) for _ in range(40)]
    for name, ls in losses.items():
        assert np.mean(ls[-5:]) < 0.5 * np.mean(ls[:5]), (name, ls)
    # masks differ from replay to replay: the same batch gives different losses
    # even once the weights barely move
    assert len(set(np.round(losses["jit"][10:], 7))) > 5


def test_new_batch_shape_captures_again(device):
    build = _mlp_resnet()
    model, step, _ = build(device)
    jitted = ndl.jit(step)
    for n in (8, 8, 8, 3, 3, 3, 8):
        x, y = _classifier_batches((n, 20), 5, n=1)[0]
        out = jitted(_t(x, device), _t(y, device))
        assert out.shape == ()
    # the second shape is captured on its first call: an eager step there would
    # have given the parameters new arrays under the first capture
    assert jitted.stats == {"eager": 1, "captures": 2, "replays": 4}
    assert len(jitted.plan_info()) == 2


def test_learning_rate_set_between_replays_is_used(device):
    def build(dev):
        np.random.seed(0)
        model = nn.Linear(6, 3, device=dev)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
        step = _classifier_step(model, opt)
        return model, step, opt
    m1, s1, o1 = build(device)
    m2, s2, o2 = build(device)
    jitted = ndl.jit(s2)
    for i, (x, y) in enumerate(_classifier_batches((4, 6), 3, n=6)):
        o1.lr = o2.lr = 0.1 / (i + 1)
        s1(_t(x, device), _t(y, device))
        jitted(_t(x, device), _t(y, device))
    _params_equal(m1, m2)
    # a new momentum changes the kernels: the step is captured again
    o1.momentum = o2.momentum = 0.0
    x, y = _classifier_batches((4, 6), 3, n=1)[0]
    s1(_t(x, device), _t(y, device))
    jitted(_t(x, device), _t(y, device))
    _params_equal(m1, m2)
    assert jitted.stats["captures"] == 2


def test_adam_frozen_group_recaptures(device):
    def build(dev):
        np.random.seed(0)
        model = nn.Linear(4, 2, device=dev)
        opt = optim.Adam(model.parameters(), lr=0.05)

        def step(x):
            opt.reset_grad()
            loss = (model(x) * model(x)).sum()
            loss.backward()
            opt.step()
            return loss
        return model, step, opt
    m1, s1, o1 = build(device)
    m2, s2, o2 = build(device)
    jitted = ndl.jit(s2)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype("float32")
    for lr in (0.05, 0.05, 0.05, 0.0, 0.0, 0.0, 0.01):
        o1.lr = o2.lr = lr
        s1(_t(x, device))
        jitted(_t(x, device))
        _params_equal(m1, m2)
    assert o1.t == o2.t == 7


def test_course_style_optimizer_assigning_data(device):
    """``p.data = p.data - lr * p.grad.data`` (the course's pattern) keeps
    each parameter in one buffer under replay."""
    def build(dev):
        np.random.seed(0)
        model = nn.Linear(5, 2, device=dev)

        def step(x):
            for p in model.parameters():
                p.grad = None
            loss = (model(x) * model(x)).sum()
            loss.backward()
            for p in model.parameters():
                p.data = p.data - 0.01 * p.grad.data
            return loss
        return model, step
    m1, s1 = build(device)
    m2, s2 = build(device)
    jitted = ndl.jit(s2)
    x = np.random.default_rng(1).standard_normal((4, 5)).astype("float32")
    for _ in range(STEPS):
        a = s1(_t(x, device))
        b = jitted(_t(x, device))
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    _params_equal(m1, m2)


def test_returned_tensors_are_copies(device):
    w = ndl.Tensor(np.ones((2, 2), "float32"), device=device, requires_grad=False)

    @ndl.jit
    def f(x):
        return x @ w + 1.0, {"x2": x * 2.0}
    outs = [f(_t(np.full((2, 2), float(i), "float32"), device)) for i in range(5)]
    for i, (y, d) in enumerate(outs):
        np.testing.assert_allclose(y.numpy(), np.full((2, 2), 2.0 * i + 1.0))
        np.testing.assert_allclose(d["x2"].numpy(), np.full((2, 2), 2.0 * i))
        assert not y.requires_grad and y.op is None
    assert f.stats == {"eager": 1, "captures": 1, "replays": 3}


def test_arena_reuses_buffers(device):
    @ndl.jit
    def f(x):
        for _ in range(20):
            x = ndl.ops.relu(x * 1.5) + 1.0
        return x.sum()
    x = _t(np.ones((64, 64), "float32"), device)
    for _ in range(3):
        out = f(x)
    info = f.plan_info()[0]
    # 60 intermediates of 16 KiB each, alive one or two at a time
    assert info["arena_bytes"] <= 4 * 64 * 64 * 4
    expected = np.ones((64, 64))
    for _ in range(20):
        expected = np.maximum(expected * 1.5, 0) + 1.0
    np.testing.assert_allclose(out.numpy(), expected.sum(), rtol=1e-5)


# ----------------------------------------------------------------------------- errors
def test_host_read_inside_raises_jit_error_naming_the_line(device):
    def f(x):
        y = x * 2.0
        if float(y.sum()) > 0:  # a Python branch on a tensor value
            return y
        return -y
    jitted = ndl.jit(f)
    x = _t(np.ones(3, "float32"), device)
    jitted(x)  # eager
    with pytest.raises(JitError, match=r"host \(Tensor\.__float__ called at .*test_jit\.py:\d+"):
        jitted(x)
    # the failed capture leaves the function usable, eagerly
    np.testing.assert_allclose(jitted(x).numpy(), [2.0, 2.0, 2.0])
    assert jitted.stats["captures"] == 0 and jitted.stats["eager"] == 2


def test_non_tensor_result_raises(device):
    jitted = ndl.jit(lambda x: (x * 2.0, 3))
    x = _t(np.ones(3, "float32"), device)
    jitted(x)
    with pytest.raises(JitError, match="returned int"):
        jitted(x)


def test_enclosing_tensor_given_new_data_between_calls_raises(device):
    w = ndl.Tensor(np.ones(3, "float32"), device=device, requires_grad=False)
    jitted = ndl.jit(lambda x: x * w)
    x = _t(np.ones(3, "float32"), device)
    for _ in range(3):
        jitted(x)
    w.data = ndl.Tensor(np.full(3, 5.0, "float32"), device=device)
    with pytest.raises(JitError, match="new array since the capture"):
        jitted(x)
    jitted.reset()
    for _ in range(3):
        np.testing.assert_allclose(jitted(x).numpy(), [5.0, 5.0, 5.0])


def test_enclosing_tensor_updated_in_place_is_read_fresh(device):
    w = ndl.Tensor(np.ones(3, "float32"), device=device, requires_grad=False)
    jitted = ndl.jit(lambda x: x * w)
    x = _t(np.ones(3, "float32"), device)
    for _ in range(3):
        jitted(x)
    w.realize_cached_data()[:] = 7.0   # written into its own buffer: the replay sees it
    np.testing.assert_allclose(jitted(x).numpy(), [7.0, 7.0, 7.0])


def test_mixing_devices_raises():
    if not ndl.cpu().enabled():
        pytest.skip("the cpu backend is not built")
    jitted = ndl.jit(lambda a, b: a + b.to(a.device))
    a, b = _t(np.ones(2, "float32"), ndl.cpu_numpy()), _t(np.ones(2, "float32"), ndl.cpu())
    with pytest.raises(JitError, match=r"\['cpu', 'cpu_numpy'\]; a captured step runs on one device"):
        jitted(a, b)   # already on the first, eager call
    other = ndl.Tensor(np.ones(2, "float32"), device=ndl.cpu(), requires_grad=False)
    inner = ndl.jit(lambda a: a + 1.0 + other.to(a.device))
    inner(a)
    ndl.cpu().mod  # resolved, so the capture watches it
    with pytest.raises(JitError, match="uses arrays on cpu"):
        inner(a)


def test_unhashable_argument_raises(device):
    jitted = ndl.jit(lambda x, opts: x * 2.0)
    with pytest.raises(JitError, match="neither a Tensor nor hashable"):
        jitted(_t(np.ones(2, "float32"), device), np.ones(2))


def test_randn_inside_a_capture_raises(device):
    jitted = ndl.jit(lambda x: x + ndl.init.randn(2, device=x.device))
    x = _t(np.ones(2, "float32"), device)
    jitted(x)
    with pytest.raises(JitError, match=r"randn inside a captured step \(at .*test_jit\.py:\d+\)"):
        jitted(x)


def test_not_a_function():
    with pytest.raises(JitError, match="expected a function"):
        ndl.jit(3)


def test_uniform_stream_is_the_documented_generator(device):
    """The rand_uniform op override draws the protocol's counter-based
    stream: the same numbers on every backend."""
    from needle.backend_ndarray.ndarray import device_uniform
    from needle.protocol import counter_uniform as uniform_stream
    for dtype in ("float32", "float64"):
        got = device_uniform((1000,), device, dtype, 12345.0)
        if got is None:
            pytest.skip(f"{device} has no rand_uniform")
        np.testing.assert_array_equal(got.numpy(), uniform_stream(1000, 12345, dtype))
    # seed 1, counter 0 mixes the golden ratio itself: splitmix64's published
    # first output (for its seed 0)
    z = np.uint64(0xE220A8397B1DCDAF)
    assert uniform_stream(1, 1, "float64")[0] == float(z >> np.uint64(11)) * 2.0**-53


# ----------------------------------------------------------------------- the hooks
def test_hooks_let_a_hand_written_optimizer_follow_replays(device):
    """What needle.optim does, by hand: a replay-time scalar (``dynamic``), a
    Python side effect per replay (``on_replay``), a guard, and state moved
    to a new array (``state_moved``); outside a capture each is a no-op."""
    from needle.backend_ndarray import capture

    assert capture.dynamic(0.5, lambda: 1.0) == 0.5 and not capture.capturing()
    capture.on_replay(lambda: None)
    capture.guard(lambda: False)
    capture.state_moved(None, None, None)

    state = {"lr": 0.5, "steps": 0, "sign": 1.0}
    w = ndl.Tensor(np.ones(3, "float32"), device=device, requires_grad=False)
    velocity = {"v": ndl.Tensor(np.zeros(3, "float32"), device=device).realize_cached_data()}
    seen = []

    def step(g):
        state["steps"] += 1
        capture.on_replay(lambda: state.__setitem__("steps", state["steps"] + 1))
        lr = capture.dynamic(state["lr"], lambda: state["lr"])
        sign = state["sign"]
        capture.guard(lambda: state["sign"] == sign)
        seen.append(capture.user_line())
        old = velocity["v"]
        velocity["v"] = old * 0.5 + g.realize_cached_data()
        capture.state_moved(old, velocity["v"], lambda arr: velocity.__setitem__("v", arr))
        w.data = w - ndl.Tensor(velocity["v"], device=device) * lr * sign
        return w + 0.0

    jitted = ndl.jit(step)
    g = _t(np.full(3, 2.0, "float32"), device)
    v, ref = 0.0, 1.0
    for i, (lr, sign) in enumerate([(0.5, 1.0), (0.5, 1.0), (0.25, 1.0), (0.1, 1.0), (0.1, -1.0)]):
        state["lr"], state["sign"] = lr, sign
        out = jitted(g)
        v = v * 0.5 + 2.0
        ref = ref - v * lr * sign
        np.testing.assert_allclose(out.numpy(), np.full(3, ref), rtol=1e-6)
    assert state["steps"] == 5
    assert jitted.stats == {"eager": 1, "captures": 2, "replays": 2}   # the sign change captured again
    assert seen[1].endswith(f"test_jit.py:{seen[1].rsplit(':', 1)[1]}") and "test_jit.py" in seen[1]


def test_a_signature_that_cannot_be_captured_runs_eagerly_beside_captured_ones(device):
    """Shape 3 reads the host (JitError once, then eager); its eager steps
    keep the parameters in the buffers shape 8's capture reads, so that
    capture stays valid and both train as the eager model does."""
    def build(dev):
        np.random.seed(0)
        model = nn.Linear(6, 3, device=dev)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
        loss_fn = nn.SoftmaxLoss()

        def step(x, y):
            opt.reset_grad()
            loss = loss_fn(model(x), y)
            if x.shape[0] == 3:
                loss.numpy()  # a host read: this shape cannot be captured
            loss.backward()
            opt.step()
            return loss
        return model, step
    m1, s1 = build(device)
    m2, s2 = build(device)
    jitted = ndl.jit(s2)
    for i, n in enumerate((8, 8, 8, 3, 3, 8, 3, 8)):
        x, y = _classifier_batches((n, 6), 3, n=1, seed=i)[0]
        if i == 3:  # the capture stops at the host read, before any update
            with pytest.raises(JitError, match="host"):
                jitted(_t(x, device), _t(y, device))
            continue
        s1(_t(x, device), _t(y, device))
        jitted(_t(x, device), _t(y, device))
        _params_equal(m1, m2)
    assert jitted.stats == {"eager": 3, "captures": 1, "replays": 3}


def test_state_replaced_behind_the_hooks_warns_and_runs_eagerly(device):
    """A step that keeps state in a plain attribute, rebound to a new array
    each call: a replay would read the first array forever.  The capture
    call still trains (its results are returned) and warns; later calls run
    eagerly, so the values stay right."""
    class Counter:
        def __init__(self):
            self.total = ndl.Tensor(np.zeros(2, "float32"), device=device).realize_cached_data()

    c = Counter()

    def f(x):
        c.total = c.total + x.realize_cached_data()   # rebinds: nothing tells jit
        return x * 1.0
    jitted = ndl.jit(f)
    x = _t(np.ones(2, "float32"), device)
    jitted(x)
    with pytest.warns(RuntimeWarning, match="stale value.*runs eagerly"):
        jitted(x)
    for _ in range(3):
        jitted(x)
    np.testing.assert_allclose(c.total.numpy(), [5.0, 5.0])
    assert jitted.stats == {"eager": 4, "captures": 0, "replays": 0}


def test_keep_buffers_copies_rebound_state_back_at_once(device):
    """Inside keep_buffers() (an eager step beside captured ones) state that
    is given a new array goes back into its buffer at once; outside it the
    course's rebinding stands."""
    from needle.backend_ndarray import capture

    w = ndl.Tensor(np.ones(2, "float32"), device=device, requires_grad=False)
    first = w.realize_cached_data()
    with capture.keep_buffers():
        assert capture.keeps_buffers()
        w.data = w * 3.0
    assert not capture.keeps_buffers()
    assert w.realize_cached_data() is first
    np.testing.assert_allclose(first.numpy(), [3.0, 3.0])
    w.data = w * 2.0
    assert w.realize_cached_data() is not first


def test_another_threads_kernels_are_not_recorded(device):
    """A data-loader thread uploading and computing while the step is being
    captured: its calls run for real and stay out of the step's recording."""
    import threading

    side = []
    go, done = threading.Event(), threading.Event()

    def loader():
        go.wait()
        a = ndl.Tensor(np.full(4, 3.0, "float32"), device=device, requires_grad=False)
        side.append((a * 2.0).numpy())   # a host read too: fine outside the captured thread
        done.set()

    loading = []

    def f(x):
        if loading:          # the capture call: let the loader run in the middle of it
            go.set()
            done.wait(10)
        return x + 1.0
    jitted = ndl.jit(f)
    x = _t(np.zeros(4, "float32"), device)
    jitted(x)                       # eager
    t = threading.Thread(target=loader)
    t.start()
    loading.append(True)
    jitted(x)                       # captured while the loader runs
    t.join()
    np.testing.assert_allclose(side[0], np.full(4, 6.0))
    assert jitted.plan_info()[0]["calls"] == 1   # only x + 1.0
    np.testing.assert_allclose(jitted(_t(np.ones(4, "float32"), device)).numpy(), np.full(4, 2.0))


def test_gradients_left_by_the_step_are_detached_so_intermediates_share_the_arena(device):
    """Each ``p.grad`` a captured backward leaves is a graph node whose inputs
    reach back through the whole pass; after the capture they are leaves, so
    the step's intermediates are free to share buffers."""
    np.random.seed(0)
    model = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(32, 32, device=device), nn.ReLU())])
    opt = optim.SGD(model.parameters(), lr=0.01)

    @ndl.jit
    def step(x):
        opt.reset_grad()
        loss = (model(x) * model(x)).sum()
        loss.backward()
        opt.step()
        return loss
    x = _t(np.random.default_rng(0).standard_normal((64, 32)).astype("float32"), device)
    for _ in range(3):
        step(x)
    for p in model.parameters():
        assert p.grad is not None and p.grad.op is None and p.grad.inputs == []
    info = step.plan_info()[0]
    assert info["arena_bytes"] < 0.5 * info["step_bytes"], info


# ------------------------------------------------------- planning and signatures
def test_the_arena_of_a_chain_is_two_buffers_and_never_aliases_a_kernels_operands(device):
    """((x*2)+1)*3: the two intermediates overlap at the call that reads one
    and writes the other, so they need two buffers (the result keeps its own);
    a chain of square products, where a buffer freed by a call must not be
    that same call's output, gives eager's values."""
    n = 32 * 32

    @ndl.jit
    def chain(x):
        x * 5.0   # a dead first call: its buffer is the step's too, and free at once
        return ((x * 2.0) + 1.0) * 3.0
    x = _t(np.ones((32, 32), "float32"), device)
    for _ in range(3):
        out = chain(x)
    np.testing.assert_allclose(out.numpy(), np.full((32, 32), 9.0))
    info = chain.plan_info()[0]
    # the step made four buffers (the result among them); the arena holds two
    assert info["arena_bytes"] == 2 * n * 4 and info["step_bytes"] == 4 * n * 4, info

    rng = np.random.default_rng(5)
    ws = [ndl.Tensor(rng.standard_normal((16, 16)).astype("float32") / 4, device=device,
                     requires_grad=False) for _ in range(6)]

    @ndl.jit
    def products(x):
        for w in ws:
            x = x @ w
        return x
    for i in range(4):
        a = rng.standard_normal((16, 16)).astype("float32")
        expected = a
        for w in ws:
            expected = expected @ w.numpy()
        np.testing.assert_allclose(products(_t(a, device)).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert 0 < products.plan_info()[0]["arena_bytes"] < products.plan_info()[0]["step_bytes"]


def test_argument_structure_is_rebuilt_for_the_function(device):
    seen = []

    @ndl.jit
    def f(xs, pair, opts):
        seen.append((type(xs), type(pair), sorted(opts)))
        return xs[0] + pair[1] * opts["k"]
    a, b = _t(np.ones(2, "float32"), device), _t(np.full(2, 2.0, "float32"), device)
    for _ in range(3):
        out = f([a, b], (b, a), {"k": 3.0})
    np.testing.assert_allclose(out.numpy(), [4.0, 4.0])
    assert seen == [(list, tuple, ["k"])] * 2   # eager and capture; the replay runs no Python
    f([a, b], (b, a), {"k": 5.0})               # another value of a non-Tensor: another signature
    assert f.stats["captures"] == 2


def test_state_in_a_plain_table_rebound_between_replays_raises(device):
    """State held outside any Tensor (a dict of arrays) and given a new array
    between calls: the buffer the replay reads is held by nothing else."""
    table = {"v": ndl.Tensor(np.ones(2, "float32"), device=device).realize_cached_data()}

    def f(x):
        return x + ndl.Tensor(table["v"], device=device, requires_grad=False)
    jitted = ndl.jit(f)
    x = _t(np.zeros(2, "float32"), device)
    for _ in range(3):
        np.testing.assert_allclose(jitted(x).numpy(), [1.0, 1.0])
    table["v"] = ndl.Tensor(np.full(2, 4.0, "float32"), device=device).realize_cached_data()
    with pytest.raises(JitError, match="no longer held by anything but the replay"):
        jitted(x)


def test_native_replay_where_the_backend_offers_one(device):
    def f(x):
        return x * 2.0 + 1.0
    native, python = ndl.jit(f), ndl.jit(native=False)(f)
    x = _t(np.ones(3, "float32"), device)
    assert native.native is None
    for _ in range(3):
        a, b = native(x), python(x)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    has_native = type(device.mod).compile_replay is not ndl.protocol.Backend.compile_replay
    assert native.native is has_native and native.plan_info()[0]["native"] is has_native
    assert python.native is False and python.plan_info()[0]["native"] is False
    assert device.name != "cpu" or has_native   # the compiled backend replays natively


def test_state_moved_twice_in_one_step_keeps_its_first_buffer(device):
    """``w.data`` assigned twice in one step (and a second tensor once): each
    owner ends in its first buffer holding the last value, every replay."""
    w = ndl.Tensor(np.ones(3, "float32"), device=device, requires_grad=False)
    u = ndl.Tensor(np.zeros(3, "float32"), device=device, requires_grad=False)

    def f(x):
        w.data = w * 2.0
        u.data = u + w
        w.data = w + x
        return w + 0.0
    jitted = ndl.jit(f)
    x = _t(np.ones(3, "float32"), device)
    ew, eu = 1.0, 0.0
    for i in range(5):
        if i == 1:   # the eager call gave them new arrays; the capture keeps these
            first_w, first_u = w.realize_cached_data(), u.realize_cached_data()
        out = jitted(x)
        ew = ew * 2.0
        eu = eu + ew
        ew = ew + 1.0
        np.testing.assert_allclose(out.numpy(), np.full(3, ew))
        np.testing.assert_allclose(u.numpy(), np.full(3, eu))
    assert w.realize_cached_data() is first_w and u.realize_cached_data() is first_u
    assert jitted.stats["replays"] == 3


def test_another_devices_op_override_inside_a_capture_raises():
    """A cpu step drawing dropout-style numbers on the numpy device: the
    numpy backend's override table is watched too."""
    if not ndl.cpu().enabled():
        pytest.skip("the cpu backend is not built")
    ndl.cpu_numpy().op_override("rand_uniform")   # its table resolved before the capture
    jitted = ndl.jit(lambda x: x + ndl.init.rand(3, device=ndl.cpu_numpy()).to(x.device))
    x = _t(np.ones(3, "float32"), ndl.cpu())
    jitted(x)
    with pytest.raises(JitError, match="uses arrays on numpy as well as on cpu"):
        jitted(x)
    assert ndl.cpu_numpy().op_override("rand_uniform").__name__ == "rand_uniform"   # the table is back


def test_a_backend_attribute_set_before_the_capture_is_put_back(device, monkeypatch):
    """A kernel already shadowed on the backend object (a test's spy, a
    profiler) is recorded through and restored after the capture."""
    be = device.mod
    calls = []
    real = be.ewise_add
    monkeypatch.setattr(be, "ewise_add", lambda *a: (calls.append(1), real(*a))[1])
    spy = be.ewise_add
    jitted = ndl.jit(lambda x, y: x + y)
    x = _t(np.ones(3, "float32"), device)
    for _ in range(3):
        out = jitted(x, x)
    np.testing.assert_allclose(out.numpy(), [2.0, 2.0, 2.0])
    assert be.__dict__["ewise_add"] is spy
    assert len(calls) >= 2   # the eager call and the capture went through the spy


def test_an_override_offered_under_another_name_is_recorded_and_watched():
    """A backend whose op_overrides() offers a callable that is no method of
    it: a capture on its device records and replays that callable; a capture
    on another device refuses it (its table is watched, not only its methods)."""
    from needle import discovery
    from needle.backend_ndarray import NDArray
    from needle_numpy import NumpyBackend

    class Custom(NumpyBackend):
        name = "numpy_custom"

        def device_names(self):
            return ["numpy_custom"]

        def op_overrides(self):
            table = dict(super().op_overrides())
            table["double_it"] = lambda a, out, n: np.multiply(a.array[:n], 2, out=out.array[:n])
            return table

    discovery.register_backend(Custom())
    try:
        dev = ndl.device("numpy_custom")

        def doubled(x):
            arr = x.realize_cached_data()
            return ndl.Tensor(NDArray.call_op_override("double_it", (arr,), arr.shape, arr.size),
                              device=x.device, requires_grad=False)
        jitted = ndl.jit(doubled)
        for i in range(4):
            out = jitted(_t(np.full(3, float(i), "float32"), dev))
            np.testing.assert_allclose(out.numpy(), np.full(3, 2.0 * i))   # the replays ran it anew
        assert jitted.stats["replays"] == 2

        other = ndl.Tensor(np.ones(3, "float32"), device=dev, requires_grad=False)
        mixed = ndl.jit(lambda x: x + doubled(other).to(x.device))
        x = _t(np.ones(3, "float32"), ndl.cpu_numpy())
        np.testing.assert_allclose(mixed(x).numpy(), [3.0, 3.0, 3.0])
        with pytest.raises(JitError, match="uses arrays on numpy_custom as well as on cpu_numpy"):
            mixed(x)
    finally:
        discovery.reset()


def test_an_in_place_update_on_another_device_is_refused():
    """A step on the numpy device that steps an optimizer whose parameters
    live on cpu: the fused in-place sgd_step allocates nothing, so only the
    watched override table of the other device stops it from running
    unrecorded (the replay would skip the update)."""
    if not ndl.cpu().enabled():
        pytest.skip("the cpu backend is not built")
    w = nn.Parameter(ndl.Tensor(np.ones(4, "float32"), device=ndl.cpu()))
    w.grad = ndl.Tensor(np.ones(4, "float32"), device=ndl.cpu(), requires_grad=False)
    opt = optim.SGD([w], lr=0.5)
    assert ndl.cpu().op_override("sgd_step") is not None   # cpu's table is cached before the capture

    def f(x):
        opt.step()
        return x * 1.0
    jitted = ndl.jit(f)
    x = _t(np.ones(2, "float32"), ndl.cpu_numpy())
    jitted(x)
    with pytest.raises(JitError, match="uses arrays on cpu as well as on cpu_numpy"):
        jitted(x)


def test_a_module_cache_emptied_between_replays_does_not_break_them(device):
    """BatchNorm1d's composition (the numpy backend) takes a column of 1/n
    from a module cache that empties itself when it grows: a capture makes
    its own, so clearing the cache between replays changes nothing."""
    from needle.ops import ops_norm

    np.random.seed(0)
    model = nn.Sequential(nn.Linear(6, 4, device=device), nn.BatchNorm1d(4, device=device))
    opt = optim.SGD(model.parameters(), lr=0.1)

    def step(x):
        opt.reset_grad()
        loss = (model(x) * model(x)).sum()
        loss.backward()
        opt.step()
        return loss
    jitted = ndl.jit(step)
    x = _t(np.random.default_rng(0).standard_normal((5, 6)).astype("float32"), device)
    for _ in range(3):
        jitted(x)
    ops_norm._ONES.clear()
    jitted(x)
    assert jitted.stats == {"eager": 1, "captures": 1, "replays": 2}


def test_arrays_made_before_the_backends_were_reset_are_recorded_too(device):
    """discovery.reset() gives the device a new backend object; arrays made
    before keep calling the old one, whose kernels the capture records too --
    otherwise the replay would return the capture's values for ever."""
    from needle import discovery

    w = ndl.Tensor(np.full(3, 2.0, "float32"), device=device, requires_grad=False)
    discovery.reset()
    try:
        if not device.enabled():
            pytest.skip(f"{device} unavailable after the reset")
        assert w.realize_cached_data()._be is not device.mod   # the old object
        jitted = ndl.jit(lambda x: w * x + 1.0)
        for i in range(5):
            out = jitted(_t(np.full(3, float(i), "float32"), device))
            np.testing.assert_allclose(out.numpy(), np.full(3, 2.0 * i + 1.0))
        assert jitted.stats["replays"] == 3
    finally:
        discovery.reset()


def test_a_scheduler_stepped_inside_the_step_runs_after_each_replay(device):
    """``sched.step()`` after ``opt.step()`` inside the jitted function: each
    replay uses the lr the previous step's scheduler call set, as eagerly."""
    def build(dev):
        np.random.seed(0)
        model = nn.Linear(6, 3, device=dev)
        opt = optim.SGD(model.parameters(), lr=0.5)
        sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        inner = _classifier_step(model, opt)

        def step(x, y):
            loss = inner(x, y)
            sched.step()
            return loss
        return model, step, opt
    m1, s1, o1 = build(device)
    m2, s2, o2 = build(device)
    jitted = ndl.jit(s2)
    for x, y in _classifier_batches((4, 6), 3, n=6):
        s1(_t(x, device), _t(y, device))
        jitted(_t(x, device), _t(y, device))
        assert o1.lr == o2.lr
    _params_equal(m1, m2)
    assert jitted.stats["replays"] == 4 and o2.lr == 0.5 * 0.5**6


@pytest.mark.parametrize("seed,error,text", [
    (-1, "ArgumentError", r"in \[0, 2\*\*32\), got -1"), (2**32, "ArgumentError", "got 4294967296"),
    (1.5, "ArgumentError", "whole number, got 1.5"), (float("nan"), "ArgumentError", "whole number, got nan"),
    ("3", "ArgumentTypeError", "got str"), (True, "ArgumentTypeError", "got bool")])
def test_every_backend_checks_a_seed_by_the_protocols_rule(device, seed, error, text):
    """rand_uniform's seed: one rule (``protocol.check_seed``), typed errors."""
    from needle import errors
    kernel = device.op_override("rand_uniform")
    if kernel is None:
        pytest.skip(f"{device} has no rand_uniform")
    with pytest.raises(getattr(errors, error), match=text):
        kernel(device.mod.Array(4), seed)
    assert ndl.protocol.check_seed(7.0) == 7 and ndl.protocol.check_seed(np.uint32(9)) == 9
