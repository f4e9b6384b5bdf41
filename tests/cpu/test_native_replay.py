"""CpuBackend.compile_replay: programs of backend calls recorded once and run
by one native loop, checked value for value against the same calls made
eagerly on a second set of buffers.

Unknown methods (and a ReplayScalar where a method takes no replayable
scalar) make compile_replay return None: needle then replays from Python.
"""

import gc
import threading

import numpy as np
import pytest

from needle.errors import ArgumentError, OutOfBoundsError, ShapeError
from needle.protocol import ReplayScalar

from cpu_buffers import get, put


def rs(value, slot):
    return ReplayScalar(value, slot)


def subst(args, scalars):
    return tuple(scalars[a.slot] if isinstance(a, ReplayScalar) else a for a in args)


def run_both(be, init, prog_fn, runs=((),), exact=True):
    """Compile ``prog_fn(buffers)`` over one copy of ``init`` and call the same
    program eagerly over another; after each run (scalars from ``runs``) every
    buffer must agree.  Returns (replay buffers, replay)."""
    rb = {k: put(be, v) for k, v in init.items()}
    eb = {k: put(be, v) for k, v in init.items()}
    rep = be.compile_replay(prog_fn(rb))
    assert rep is not None
    for k, v in init.items():  # compiling records; it computes nothing
        np.testing.assert_array_equal(get(be, rb[k]), np.ravel(v).astype(v.dtype))
    for scalars in runs:
        rep.run(list(scalars))
        for name, args in prog_fn(eb):
            getattr(be, name)(*subst(args, scalars))
        for k in init:
            if exact:
                np.testing.assert_array_equal(get(be, rb[k]), get(be, eb[k]), err_msg=k)
            else:
                np.testing.assert_allclose(get(be, rb[k]), get(be, eb[k]), rtol=1e-6, atol=1e-7, err_msg=k)
    return rb, rep


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# element-wise, scalar, unary
# ---------------------------------------------------------------------------
def test_elementwise_chain(be, dtype):
    n = 1000
    r = rng(1)
    init = {"a": r.uniform(0.5, 2, n).astype(dtype), "b": r.uniform(0.5, 2, n).astype(dtype),
            "t": np.zeros(n, dtype), "u": np.zeros(n, dtype), "o": np.zeros(n, dtype)}

    def prog(B):
        a, b, t, u, o = B["a"], B["b"], B["t"], B["u"], B["o"]
        calls = []
        for k in ("add", "sub", "mul", "div", "pow", "maximum", "eq", "ge", "relu_grad"):
            calls += [(f"ewise_{k}", (a, b, t)), ("ewise_add", (u, t, u))]
        for k in ("neg", "log", "exp", "tanh", "sqrt"):
            calls += [(f"ewise_{k}", (a, t)), ("ewise_add", (u, t, u))]
        for k in ("add", "sub", "mul", "div", "rdiv", "power", "maximum", "eq", "ge"):
            calls += [(f"scalar_{k}", (a, 1.25, t)), ("ewise_add", (u, t, u))]
        calls += [("scalar_mul", (u, rs(2.0, 0), o)), ("scalar_add", (o, rs(0.5, 1), o))]
        return calls

    rb, rep = run_both(be, init, prog, runs=[(3.0, 0.25), (-1.5, 0.1), (0.1, 7.0)])
    assert rep.scalar_slots == (0, 1)
    # against NumPy too: the loop runs what the calls say
    a, b = init["a"], init["b"]
    u = np.zeros(n, dtype)
    for _ in range(3):
        for t in (a + b, a - b, a * b, a / b, a ** b, np.maximum(a, b), (a == b).astype(dtype),
                  (a >= b).astype(dtype), b * (a > 0), -a, np.log(a), np.exp(a), np.tanh(a), np.sqrt(a),
                  a + 1.25, a - 1.25, a * 1.25, a / 1.25, 1.25 / a, a ** 1.25, np.maximum(a, 1.25),
                  (a == 1.25).astype(dtype), (a >= 1.25).astype(dtype)):
            u = u + t.astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(get(be, rb["u"]), u, rtol=tol)
    np.testing.assert_allclose(get(be, rb["o"]), u * 0.1 + 7.0, rtol=tol)


def test_scalar_rounds_to_float32_like_eager(be):
    # a replayed double is rounded to float32 exactly as the eager call rounds it
    init = {"a": np.ones(4, np.float32), "o": np.zeros(4, np.float32)}
    x = 1 + 2.0**-30  # 1 in float32
    rb, _ = run_both(be, init, lambda B: [("scalar_mul", (B["a"], rs(0.0, 0), B["o"])),
                                          ("scalar_sub", (B["o"], 1.0, B["o"]))], runs=[(x,)])
    np.testing.assert_array_equal(get(be, rb["o"]), 0.0)


def test_many_calls_grow_the_table(be):
    init = {"a": np.zeros(16, np.float32)}
    rb, rep = run_both(be, init, lambda B: [("scalar_add", (B["a"], 1.0, B["a"]))] * 1000,
                       runs=[(), ()])
    assert len(rep) == 1000
    np.testing.assert_array_equal(get(be, rb["a"]), 2000.0)


# ---------------------------------------------------------------------------
# matmul paths, strided copies, reductions
# ---------------------------------------------------------------------------
def test_matmul_paths(be, dtype):
    r = rng(2)
    m, n, p = 37, 29, 23
    B_, H, T, D = 2, 3, 5, 4  # an attention-like (B, T, H, D) -> (B, H, T, D) permute
    init = {"a": r.standard_normal(m * n).astype(dtype), "b": r.standard_normal(n * p).astype(dtype),
            "c": np.zeros(m * p, dtype), "ct": np.zeros(p * p, dtype),
            "q": r.standard_normal(B_ * T * H * D).astype(dtype),
            "s": np.zeros(B_ * H * T * T, dtype), "z0": np.full(B_ * H * T * T, 3.0, dtype),
            "ta": r.standard_normal(16 * 8).astype(dtype), "tb": r.standard_normal(8 * 24).astype(dtype),
            "tc": np.zeros(16 * 24, dtype)}

    def prog(B):
        q_strides = (T * H * D, D, H * D, 1)     # q viewed as (B, H, T, D)
        k_strides = (T * H * D, D, 1, H * D)     # q viewed as (B, H, D, T)
        return [
            ("matmul", (B["a"], B["b"], B["c"], m, n, p)),
            # c^T (p, m) @ c (m, p) read through strides, no copy
            ("matmul_strided", (B["c"], B["c"], B["ct"], 1, p, m, p, (0, 1, p), 0, (0, p, 1), 0)),
            ("matmul_batched", (B["q"], B["q"], B["s"], (B_, H), T, D, T, q_strides, 0, k_strides, 0)),
            ("matmul_batched", (B["q"], B["q"], B["z0"], (B_, H), T, 0, T, q_strides, 0, k_strides, 0)),
            ("matmul_tiled", (B["ta"], B["tb"], B["tc"], 16, 8, 24)),
        ]

    rb, rep = run_both(be, init, prog, runs=[(), ()])
    assert "fill" in rep.ops  # the n == 0 batched product fills zeros
    ref = init["a"].reshape(m, n).astype(np.float64) @ init["b"].reshape(n, p)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(get(be, rb["c"]).reshape(m, p), ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(get(be, rb["ct"]).reshape(p, p), ref.T @ ref, rtol=tol * 10, atol=tol * 10)
    q = init["q"].reshape(B_, T, H, D).transpose(0, 2, 1, 3).astype(np.float64)
    np.testing.assert_allclose(get(be, rb["s"]).reshape(B_, H, T, T), q @ q.transpose(0, 1, 3, 2),
                               rtol=tol, atol=tol)
    np.testing.assert_array_equal(get(be, rb["z0"]), 0.0)


def test_strided_copies_and_setitem(be, dtype):
    r = rng(3)
    init = {"x": r.standard_normal(6 * 7).astype(dtype), "c": np.zeros(42, dtype),
            "y": np.zeros(42, dtype), "e": np.zeros(42, dtype), "v": r.standard_normal(7).astype(dtype)}

    def prog(B):
        return [
            ("compact", (B["x"], B["c"], (7, 6), (1, 7), 0)),                    # transpose
            ("ewise_setitem", (B["c"], B["y"], (3, 7), (14, 1), 0)),             # every other row
            ("scalar_setitem", (21, rs(0.0, 0), B["y"], (3, 7), (14, 1), 7)),    # the other rows
            ("ewise_strided", ("ewise_mul", B["x"], B["v"], B["e"], (6, 7), (7, 1), 0, (0, 1), 0)),
            ("ewise_strided", ("ewise_add", B["e"], B["v"], B["e"], (6, 7), (7, 1), 0, (0, 1), 0)),
            ("fill", (B["c"], rs(0.0, 1))),
        ]

    rb, _ = run_both(be, init, prog, runs=[(2.5, -1.0), (0.75, 4.0)])
    x, v = init["x"].reshape(6, 7), init["v"]
    y = np.empty((6, 7), dtype)
    y[0::2] = x.T.reshape(-1)[:21].reshape(3, 7)
    y[1::2] = 0.75
    np.testing.assert_array_equal(get(be, rb["y"]).reshape(6, 7), y)
    np.testing.assert_allclose(get(be, rb["e"]).reshape(6, 7), x * v + v, rtol=1e-6)
    np.testing.assert_array_equal(get(be, rb["c"]), 4.0)


def test_reductions(be, dtype):
    r = rng(4)
    rows, cols = 33, 70
    init = {"x": r.standard_normal(rows * cols).astype(dtype), "g": r.standard_normal(rows * cols).astype(dtype),
            "s": np.zeros(rows, dtype), "mx": np.zeros(rows, dtype), "sl": np.zeros(cols, dtype),
            "lse": np.zeros(rows, dtype), "sm": np.zeros(rows * cols, dtype), "smg": np.zeros(rows * cols, dtype)}

    def prog(B):
        return [("reduce_sum", (B["x"], B["s"], cols)), ("reduce_max", (B["x"], B["mx"], cols)),
                ("sum_leading", (B["x"], B["sl"], rows, cols)), ("logsumexp", (B["x"], B["lse"], rows, cols)),
                ("softmax", (B["x"], B["sm"], rows, cols)),
                ("softmax_grad", (B["sm"], B["g"], B["smg"], rows, cols))]

    rb, _ = run_both(be, init, prog)
    x = init["x"].reshape(rows, cols).astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(get(be, rb["s"]), x.sum(1), rtol=tol, atol=tol)
    np.testing.assert_array_equal(get(be, rb["mx"]), x.max(1).astype(dtype))
    np.testing.assert_allclose(get(be, rb["sl"]), x.sum(0), rtol=tol, atol=tol)
    sm = np.exp(x - x.max(1, keepdims=True))
    sm /= sm.sum(1, keepdims=True)
    np.testing.assert_allclose(get(be, rb["sm"]).reshape(rows, cols), sm, rtol=tol * 10, atol=tol)


# ---------------------------------------------------------------------------
# optimizer steps: replay-time learning rates, in-place aliasing
# ---------------------------------------------------------------------------
SIZES = (5, 1000, 70001)


def _group(r, prefix, sizes=SIZES):
    return {f"{prefix}{k}": r.standard_normal(n).astype(np.float32) for k, n in enumerate(sizes)}


def test_sgd_step_in_place_with_replayed_lr(be):
    r = rng(5)
    init = {**_group(r, "p"), **_group(r, "g"), **{f"u{k}": np.zeros(n, np.float32) for k, n in enumerate(SIZES)}}
    idx = range(len(SIZES))

    def prog(B):
        ps, gs, us = [B[f"p{k}"] for k in idx], [B[f"g{k}"] for k in idx], [B[f"u{k}"] for k in idx]
        # out_params is params, out_moms is moms: updated in place
        return [("sgd_step", (ps, gs, us, ps, us, rs(0.1, 0), 0.9, 0.1, 1e-4))]

    lrs = [(0.1,), (0.05,), (0.0,), (1.5,)]
    rb, rep = run_both(be, init, prog, runs=lrs)
    assert rep.ops == ("sgd_step",)
    # the replayed lr really took effect: redo the four steps in NumPy
    for k in idx:
        p, g, u = init[f"p{k}"].copy(), init[f"g{k}"], np.zeros_like(init[f"p{k}"])
        for (lr,) in lrs:
            gg = g + np.float32(1e-4) * p
            u = np.float32(0.9) * u + np.float32(0.1) * gg
            p = p - np.float32(lr) * u
        np.testing.assert_allclose(get(be, rb[f"p{k}"]), p, rtol=1e-5, atol=1e-6)


def test_sgd_step_without_momentum_separate_outputs(be):
    r = rng(6)
    init = {**_group(r, "p"), **_group(r, "g"), **{f"o{k}": np.zeros(n, np.float32) for k, n in enumerate(SIZES)}}
    idx = range(len(SIZES))

    def prog(B):
        return [("sgd_step", ([B[f"p{k}"] for k in idx], [B[f"g{k}"] for k in idx], None,
                              [B[f"o{k}"] for k in idx], None, rs(0.1, 0), 0.0, 1.0, 0.0))]

    rb, _ = run_both(be, init, prog, runs=[(0.1,), (2.0,)])
    for k in idx:
        np.testing.assert_allclose(get(be, rb[f"o{k}"]), init[f"p{k}"] - np.float32(2.0) * init[f"g{k}"],
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("frozen", [False, True])
def test_adam_step_with_replayed_scalars(be, frozen):
    r = rng(7)
    init = {**_group(r, "p"), **_group(r, "g"),
            **{f"m{k}": np.zeros(n, np.float32) for k, n in enumerate(SIZES)},
            **{f"v{k}": np.zeros(n, np.float32) for k, n in enumerate(SIZES)}}
    idx = range(len(SIZES))

    def prog(B):
        ps, gs = [B[f"p{k}"] for k in idx], [B[f"g{k}"] for k in idx]
        ms, vs = [B[f"m{k}"] for k in idx], [B[f"v{k}"] for k in idx]
        return [("adam_step", (ps, gs, ms, vs, None if frozen else ps, ms, vs,
                               0.9, 0.1, 0.999, 0.001, 0.0, rs(1.0, 0), rs(1e-8, 1), frozen))]

    runs = [(1 / (1 - 0.999), 1e-8 / 0.1), (1 / (1 - 0.999**2), 1e-8 / 0.05), (3.0, 1e-3)]
    rb, rep = run_both(be, init, prog, runs=runs)
    assert rep.scalar_slots == (0, 1)
    if frozen:
        for k in idx:
            np.testing.assert_array_equal(get(be, rb[f"p{k}"]), init[f"p{k}"])


# ---------------------------------------------------------------------------
# errors reported by kernels, raised after the loop
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("grad", [False, True])
def test_bad_label_raises_from_run(be, dtype, grad):
    rows, classes = 6, 4
    r = rng(8)
    z = r.standard_normal(rows * classes).astype(dtype)
    labels = np.array([0, 3, 1, 2, 2, 0], dtype)
    zb, lb, gb = put(be, z), put(be, labels), put(be, np.ones(rows, dtype))
    out = be.Array(rows * classes if grad else rows, dtype)
    after = put(be, np.zeros(3, dtype))
    call = (("softmax_xent_grad", (zb, lb, gb, out, rows, classes)) if grad
            else ("softmax_xent", (zb, lb, out, rows, classes)))
    rep = be.compile_replay([call, ("fill", (after, rs(0.0, 0)))])
    rep.run([1.0])
    np.testing.assert_array_equal(get(be, after), 1.0)

    bad = labels.copy()
    bad[4] = 7
    be.from_numpy(bad, lb)
    op = call[0]
    with pytest.raises(OutOfBoundsError, match=rf"{op}: label .*7.* of row 4 is not a class index in \[0, 4\)") as ei:
        rep.run([2.0])
    # the eager call says the same
    with pytest.raises(OutOfBoundsError) as ee:
        getattr(be, op)(*call[1])
    assert str(ei.value) == str(ee.value)
    # the calls after the failing one did not run
    np.testing.assert_array_equal(get(be, after), 1.0)

    be.from_numpy(labels, lb)  # fixed: the same replay runs again
    rep.run([3.0])
    np.testing.assert_array_equal(get(be, after), 3.0)


def test_non_whole_label_raises(be):
    lb = put(be, np.array([0.5], np.float32))
    rep = be.compile_replay([("softmax_xent", (put(be, np.zeros(3, np.float32)), lb, be.Array(1), 1, 3))])
    with pytest.raises(OutOfBoundsError, match="row 0"):
        rep.run()


def test_errors_while_compiling_propagate_and_recording_stops(be):
    a, b, o = put(be, np.ones(8, np.float32)), put(be, np.ones(8, np.float32)), be.Array(8)
    small = be.Array(3)
    with pytest.raises(ShapeError, match="ewise_add"):
        be.compile_replay([("ewise_add", (a, b, o)), ("ewise_add", (a, small, o))])
    # eager calls run again (recording ended with the error)
    be.ewise_add(a, b, o)
    np.testing.assert_array_equal(get(be, o), 2.0)


# ---------------------------------------------------------------------------
# rand_uniform with a replayed seed
# ---------------------------------------------------------------------------
def test_rand_uniform_replayed_seed(be, dtype):
    n = 100003
    out = be.Array(n, dtype)
    mask = be.Array(n, dtype)
    rep = be.compile_replay([("rand_uniform", (out, rs(5.0, 0))), ("scalar_ge", (out, 0.5, mask))])
    assert rep.scalar_slots == (0,)
    ref = be.Array(n, dtype)
    for seed in (0, 1, 123456789, 2**32 - 1, 5):
        rep.run([float(seed)])
        be.rand_uniform(ref, seed)
        np.testing.assert_array_equal(get(be, out), get(be, ref))
        np.testing.assert_array_equal(get(be, mask), (get(be, ref) >= 0.5).astype(dtype))
    before = get(be, out)
    for bad in (-1.0, 0.5, 2.0**32, float("nan")):
        with pytest.raises(ArgumentError, match="seed"):
            rep.run([bad])
        np.testing.assert_array_equal(get(be, out), before)  # nothing ran


def test_too_few_scalars(be):
    a = be.Array(4)
    rep = be.compile_replay([("fill", (a, rs(1.0, 2)))])
    with pytest.raises(ArgumentError, match="slot 2"):
        rep.run([1.0, 2.0])
    rep.run([0.0, 0.0, 9.0])
    np.testing.assert_array_equal(get(be, a), 9.0)


# ---------------------------------------------------------------------------
# the fused layers: conv, batch norm, layer norm, LSTM gates
# ---------------------------------------------------------------------------
def test_conv_and_batch_norm(be, dtype):
    r = rng(9)
    N, H, W, Ci, K, Co, s, pad = 2, 9, 8, 3, 3, 5, 2, 1
    Ho, Wo = (H + 2 * pad - K) // s + 1, (W + 2 * pad - K) // s + 1
    ny = N * Ho * Wo * Co
    init = {"x": r.standard_normal(N * H * W * Ci).astype(dtype), "w": r.standard_normal(K * K * Ci * Co).astype(dtype),
            "y": np.zeros(ny, dtype), "gy": r.standard_normal(ny).astype(dtype),
            "dx": np.zeros(N * H * W * Ci, dtype), "dw": np.zeros(K * K * Ci * Co, dtype),
            "bw": r.uniform(0.5, 1.5, Co).astype(dtype), "bb": r.standard_normal(Co).astype(dtype),
            "st": np.zeros(4 * Co, dtype), "bn": np.zeros(ny, dtype), "gs": np.zeros(2 * Co, dtype),
            "gbn": np.zeros(ny, dtype)}
    dims = (N, H, W, Ci, K, Co, s, pad)
    outer, C, inner = N * Ho * Wo, Co, 1  # channels-last

    def prog(B):
        return [("conv", (B["x"], B["w"], B["y"], *dims)),
                ("batch_norm_stats", (B["y"], B["bw"], B["st"], outer, C, inner, rs(1e-5, 0))),
                ("batch_norm_apply", (B["y"], B["st"], B["bb"], B["bn"], outer, C, inner)),
                ("batch_norm_grad_stats", (B["gy"], B["y"], B["st"], B["gs"], outer, C, inner)),
                ("batch_norm_grad_input", (B["gy"], B["y"], B["st"], B["gs"], B["gbn"], outer, C, inner)),
                ("conv_grad_input", (B["gbn"], B["w"], B["dx"], *dims)),
                ("conv_grad_weight", (B["x"], B["gbn"], B["dw"], *dims))]

    rb, rep = run_both(be, init, prog, runs=[(1e-5,), (0.5,)])
    assert len(rep) == 7
    y = get(be, rb["y"]).reshape(outer, C).astype(np.float64)
    bn = (y - y.mean(0)) / np.sqrt(y.var(0) + 0.5) * init["bw"] + init["bb"]
    np.testing.assert_allclose(get(be, rb["bn"]).reshape(outer, C), bn, rtol=1e-4, atol=1e-4)


def test_layer_norm_and_lstm_gates(be, dtype):
    r = rng(10)
    rows, d, Bt, Hd = 12, 24, 4, 6
    init = {"x": r.standard_normal(rows * d).astype(dtype), "w": r.standard_normal(d).astype(dtype),
            "b": r.standard_normal(d).astype(dtype), "y": np.zeros(rows * d, dtype),
            "g": r.standard_normal(rows * d).astype(dtype), "gx": np.zeros(rows * d, dtype),
            "gp": np.zeros(2 * d, dtype),
            "z": r.standard_normal(Bt * 4 * Hd).astype(dtype), "c": r.standard_normal(Bt * Hd).astype(dtype),
            "hc": np.zeros(Bt * 2 * Hd, dtype), "ghc": r.standard_normal(Bt * 2 * Hd).astype(dtype),
            "gzc": np.zeros(Bt * 5 * Hd, dtype)}

    def prog(B):
        eps = rs(1e-5, 0)
        return [("layer_norm", (B["x"], B["w"], B["b"], B["y"], rows, d, eps)),
                ("layer_norm_grad_input", (B["g"], B["x"], B["w"], B["gx"], rows, d, eps)),
                ("layer_norm_grad_params", (B["g"], B["x"], B["gp"], rows, d, eps)),
                ("lstm_gates", (B["z"], B["c"], B["hc"], Bt, Hd)),
                ("lstm_gates_grad", (B["z"], B["c"], B["ghc"], B["gzc"], Bt, Hd))]

    rb, rep = run_both(be, init, prog, runs=[(1e-5,), (1.0,)])
    assert rep.scalar_slots == (0, 0, 0)
    x = init["x"].reshape(rows, d).astype(np.float64)
    ln = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1.0) * init["w"] + init["b"]
    np.testing.assert_allclose(get(be, rb["y"]).reshape(rows, d), ln, rtol=1e-4, atol=1e-5)
    z = init["z"].reshape(Bt, 4, Hd).astype(np.float64)
    sig = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    c2 = sig(z[:, 1]) * init["c"].reshape(Bt, Hd) + sig(z[:, 0]) * np.tanh(z[:, 2])
    h2 = sig(z[:, 3]) * np.tanh(c2)
    hc = get(be, rb["hc"]).reshape(Bt, 2, Hd)
    np.testing.assert_allclose(hc[:, 0], h2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hc[:, 1], c2, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# a whole training step of a small MLP
# ---------------------------------------------------------------------------
def test_mlp_training_step(be):
    r = rng(11)
    bs, din, hid, ncls = 16, 10, 32, 5
    f32 = np.float32
    init = {"x": r.standard_normal(bs * din).astype(f32), "lab": r.integers(0, ncls, bs).astype(f32),
            "w1": (r.standard_normal(din * hid) * 0.3).astype(f32), "b1": np.zeros(hid, f32),
            "w2": (r.standard_normal(hid * ncls) * 0.3).astype(f32), "b2": np.zeros(ncls, f32),
            "h": np.zeros(bs * hid, f32), "a": np.zeros(bs * hid, f32), "z": np.zeros(bs * ncls, f32),
            "loss": np.zeros(bs, f32), "ones": np.full(bs, 1 / bs, f32), "gz": np.zeros(bs * ncls, f32),
            "gw2": np.zeros(hid * ncls, f32), "gb2": np.zeros(ncls, f32), "ga": np.zeros(bs * hid, f32),
            "gh": np.zeros(bs * hid, f32), "gw1": np.zeros(din * hid, f32), "gb1": np.zeros(hid, f32),
            "mean": np.zeros(1, f32)}

    def prog(B):
        params = [B["w1"], B["b1"], B["w2"], B["b2"]]
        grads = [B["gw1"], B["gb1"], B["gw2"], B["gb2"]]
        return [
            ("matmul", (B["x"], B["w1"], B["h"], bs, din, hid)),
            ("ewise_strided", ("ewise_add", B["h"], B["b1"], B["h"], (bs, hid), (hid, 1), 0, (0, 1), 0)),
            ("scalar_maximum", (B["h"], 0.0, B["a"])),
            ("matmul", (B["a"], B["w2"], B["z"], bs, hid, ncls)),
            ("ewise_strided", ("ewise_add", B["z"], B["b2"], B["z"], (bs, ncls), (ncls, 1), 0, (0, 1), 0)),
            ("softmax_xent", (B["z"], B["lab"], B["loss"], bs, ncls)),
            ("reduce_sum", (B["loss"], B["mean"], bs)),
            ("softmax_xent_grad", (B["z"], B["lab"], B["ones"], B["gz"], bs, ncls)),
            ("matmul_strided", (B["a"], B["gz"], B["gw2"], 1, hid, bs, ncls, (0, 1, hid), 0, (0, ncls, 1), 0)),
            ("sum_leading", (B["gz"], B["gb2"], bs, ncls)),
            ("matmul_strided", (B["gz"], B["w2"], B["ga"], 1, bs, ncls, hid, (0, ncls, 1), 0, (0, 1, ncls), 0)),
            ("ewise_relu_grad", (B["h"], B["ga"], B["gh"])),
            ("matmul_strided", (B["x"], B["gh"], B["gw1"], 1, din, bs, hid, (0, 1, din), 0, (0, hid, 1), 0)),
            ("sum_leading", (B["gh"], B["gb1"], bs, hid)),
            ("sgd_step", (params, grads, None, params, None, rs(0.1, 0), 0.0, 1.0, 0.0)),
        ]

    rb, rep = run_both(be, init, prog, runs=[(0.5,)] * 5 + [(0.0,)])
    losses = []
    for _ in range(3):
        rep.run([0.5])
        losses.append(float(get(be, rb["mean"])[0]))
    assert losses[-1] < losses[0]  # it trains


# ---------------------------------------------------------------------------
# host copies, lifetimes, what does not compile, threads
# ---------------------------------------------------------------------------
def test_from_numpy_copies_the_array_at_compile(be):
    host = np.arange(10, dtype=np.float32)
    buf = be.Array(10)
    rep = be.compile_replay([("from_numpy", (host, buf)), ("scalar_mul", (buf, 2.0, buf))])
    host[:] = -1  # the program keeps its own copy
    for _ in range(2):
        rep.run()
        np.testing.assert_array_equal(get(be, buf), 2 * np.arange(10, dtype=np.float32))


def test_replay_keeps_the_buffers_alive(be):
    out = be.Array(64)
    tmp = [be.Array(64) for _ in range(3)]
    prog = [("fill", (tmp[0], 1.0)), ("scalar_add", (tmp[0], 2.0, tmp[1])),
            ("ewise_mul", (tmp[1], tmp[1], tmp[2])), ("ewise_add", (tmp[2], tmp[0], out))]
    rep = be.compile_replay(prog)
    del prog, tmp
    gc.collect()
    for _ in range(50):  # fresh buffers would reuse freed memory
        junk = be.Array(64)
        be.fill(junk, -7.0)
    rep.run()
    np.testing.assert_array_equal(get(be, out), 10.0)


def test_unknown_or_unrecordable_calls_give_none(be):
    a, o = be.Array(4), be.Array(4)
    assert be.compile_replay([("ewise_add", (a, a, o)), ("no_such_kernel", (a,))]) is None
    assert be.compile_replay([("to_numpy", (a, (4,), (1,), 0))]) is None
    assert be.compile_replay([("Array", (4,))]) is None
    # a replayed scalar where the method takes none that a replay may change
    assert be.compile_replay([("reduce_sum", (a, o, rs(4.0, 0)))]) is None
    assert be.compile_replay([]) is not None


def test_other_threads_run_eagerly_while_one_compiles(be):
    a, b, o, side = (put(be, np.full(8, 2.0, np.float32)), put(be, np.ones(8, np.float32)), be.Array(8),
                     be.Array(8))

    class Host:
        """An array-like whose conversion runs an eager call on another thread
        in the middle of the compile (this thread is recording then)."""

        def __array__(self, dtype=None, copy=None):
            t = threading.Thread(target=lambda: be.ewise_add(a, b, side))
            t.start()
            t.join()
            return np.full(8, 5.0, np.float32)

    rep = be.compile_replay([("ewise_add", (a, b, o)), ("from_numpy", (Host(), a))])
    np.testing.assert_array_equal(get(be, side), 3.0)  # ran, not recorded
    assert rep.ops == ("ewise_add", "from_numpy")
    rep.run()
    np.testing.assert_array_equal(get(be, o), 3.0)
    np.testing.assert_array_equal(get(be, a), 5.0)
