"""Randomised differential testing of NDArray and every backend kernel against NumPy.

``python -m needle.testing.fuzz --cases N [--device cpu] [--seed S] [--only a,b]``
runs N random cases for every target below: each NDArray view op (getitem,
setitem, permute, broadcast_to, reshape, flip, pad, compact, as_strided) and
every kernel the backend exposes (element-wise and scalar ops, reductions,
the matmul paths, the op overrides: logsumexp, softmax, conv and its two
gradients).  Inputs are random in dtype (every dtype the backend declares),
shape (0-size axes included), strides (steps > 1), offsets, permutations and
stride-0 broadcasts, so kernels see the layouts training never produces.

A case passes when needle's result equals NumPy's within the conformance
tolerances (:mod:`needle.testing.reference`) or when both refuse it; needle
refusing with a needle error what NumPy accepts (or the reverse), any other
exception, and any difference are failures, printed with a reproducer
(target, seed, case).  A crash of the process is a failure too: run it as a
subprocess to catch one.  Exit status: 0 when every case passed.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from typing import Callable

import numpy as np

from ..backend_ndarray import NDArray, device as _device
from ..errors import NeedleError
from .reference import ACC_TOL, TOL, conv_grads, conv_nhwc

__all__ = ["TARGETS", "run", "main", "Mismatch"]


class Mismatch(AssertionError):
    """needle and NumPy disagree on one case."""


# ---------------------------------------------------------------------- #
# random inputs
# ---------------------------------------------------------------------- #
def _shape(rng, ndim=None, max_dim=6):
    ndim = int(rng.integers(0, 5)) if ndim is None else ndim
    dims = []
    for _ in range(ndim):
        r = rng.random()
        dims.append(0 if r < 0.06 else int(rng.integers(1, 3)) if r < 0.4 else
                    int(rng.integers(1, max_dim + 1)) if r < 0.95 else int(rng.choice([17, 33, 65])))
    return tuple(dims)


def _values(rng, shape, dtype, positive=False):
    x = rng.standard_normal(shape) * 2
    if positive:
        x = np.abs(x) + 0.1
    return x.astype(dtype)


def _view(rng, dev, dtype, shape, positive=False, broadcast=True):
    """(NDArray view of ``shape``, its NumPy twin): a strided slice of a
    larger buffer at an offset, maybe permuted, maybe broadcast (stride 0)."""
    ndim = len(shape)
    perm = tuple(rng.permutation(ndim)) if ndim > 1 and rng.random() < 0.3 else tuple(range(ndim))
    bshape = list(shape)
    if broadcast and ndim and rng.random() < 0.25:
        for ax in range(ndim):
            if rng.random() < 0.5:
                bshape[ax] = 1
    inner = tuple(bshape[p] for p in perm)  # the view before the permutation is undone
    starts = [int(rng.integers(0, 3)) if rng.random() < 0.4 else 0 for _ in inner]
    steps = [int(rng.integers(1, 4)) if rng.random() < 0.3 else 1 for _ in inner]
    base_shape = tuple(s + max(d - 1, 0) * st + 1 + int(rng.integers(0, 2))
                       for d, s, st in zip(inner, starts, steps))
    host = _values(rng, base_shape, dtype, positive)
    base = NDArray(host, device=dev, dtype=dtype)
    idx = tuple(slice(s, s + d * st, st) for d, s, st in zip(inner, starts, steps))
    v, h = (base[idx], host[idx]) if ndim else (base, host)
    inverse = tuple(int(i) for i in np.argsort(perm))
    if ndim > 1:
        v, h = v.permute(inverse), np.transpose(h, inverse)
    if tuple(bshape) != tuple(shape):
        v, h = v.broadcast_to(shape), np.broadcast_to(h, shape)
    return v, h


def _close(got, want, dtype, what, acc=False, scale=1.0):
    tol = dict((ACC_TOL if acc else TOL)[np.dtype(dtype).name])
    tol["atol"] *= scale
    got = np.asarray(got)
    if got.shape != np.shape(want):
        raise Mismatch(f"{what}: shape {got.shape}, NumPy {np.shape(want)}")
    if not np.allclose(got, want, equal_nan=True, **tol):
        diff = np.abs(got.astype(np.float64) - np.asarray(want, np.float64))
        k = int(np.nanargmax(diff)) if diff.size else 0
        raise Mismatch(f"{what}: max |diff| {np.nanmax(diff):.3g} at flat index {k}: "
                       f"needle {got.ravel()[k]!r}, NumPy {np.asarray(want).ravel()[k]!r}")


# ---------------------------------------------------------------------- #
# targets: each draws one case and checks it
# ---------------------------------------------------------------------- #
def t_getitem(rng, dev, dt):
    shape = _shape(rng, int(rng.integers(1, 5)))
    a, h = _view(rng, dev, dt, shape)
    idx, ref = [], []
    for d in shape:
        if rng.random() < 0.3 and d:
            k = int(rng.integers(-d, d))
            idx.append(k)
            ref.append(slice(k % d, k % d + 1))
        else:
            lo = None if rng.random() < 0.4 else int(rng.integers(-d - 2, d + 3))
            hi = None if rng.random() < 0.4 else int(rng.integers(-d - 2, d + 3))
            st = None if rng.random() < 0.5 else int(rng.integers(1, 4))
            idx.append(slice(lo, hi, st))
            ref.append(slice(lo, hi, st))
    _close(a[tuple(idx)].numpy(), h[tuple(ref)], dt, f"getitem {tuple(idx)}")


def t_setitem(rng, dev, dt):
    shape = _shape(rng, int(rng.integers(1, 5)))
    host = _values(rng, shape, dt)
    a = NDArray(host, device=dev, dtype=dt)
    idx = tuple(slice(int(rng.integers(0, d + 1)), None, int(rng.integers(1, 3))) for d in shape)
    target = host[idx]
    if rng.random() < 0.5:
        val = float(rng.standard_normal())
        a[idx] = val
        host[idx] = val
    else:
        src, sh = _view(rng, dev, dt, target.shape, broadcast=False)
        a[idx] = src
        host[idx] = sh
    _close(a.numpy(), host, dt, f"setitem {idx}")


def t_permute(rng, dev, dt):
    shape = _shape(rng)
    a, h = _view(rng, dev, dt, shape)
    perm = tuple(int(p) for p in rng.permutation(len(shape)))
    _close(a.permute(perm).numpy(), np.transpose(h, perm), dt, f"permute {perm}")


def t_broadcast_to(rng, dev, dt):
    shape = _shape(rng, int(rng.integers(0, 4)))
    small = tuple(1 if rng.random() < 0.5 else d for d in shape)
    lead = _shape(rng, int(rng.integers(0, 2)))
    a, h = _view(rng, dev, dt, small)
    _close(a.broadcast_to(lead + shape).numpy(), np.broadcast_to(h, lead + shape), dt, "broadcast_to")


def t_reshape(rng, dev, dt):
    shape = _shape(rng)
    a, h = _view(rng, dev, dt, shape)
    a = a.compact()
    new = list(shape)
    rng.shuffle(new)
    if len(new) > 1 and rng.random() < 0.5:
        new = [new[0] * new[1]] + new[2:]
    _close(a.reshape(tuple(new)).numpy(), h.reshape(tuple(new)), dt, f"reshape {tuple(new)}")


def t_compact(rng, dev, dt):
    a, h = _view(rng, dev, dt, _shape(rng))
    c = a.compact()
    if not c.is_compact():
        raise Mismatch("compact() returned a non-compact array")
    _close(c.numpy(), h, dt, "compact")


def t_as_strided(rng, dev, dt):
    n = int(rng.integers(1, 40))
    host = _values(rng, (n,), dt)
    a = NDArray(host, device=dev, dtype=dt)
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(rng.integers(1, 5)) for _ in range(ndim))
    strides = tuple(int(rng.integers(0, 4)) for _ in range(ndim))
    last = sum((d - 1) * s for d, s in zip(shape, strides))
    try:
        got = a.as_strided(shape, strides).numpy()
    except NeedleError:
        if last < n:
            raise Mismatch(f"as_strided {shape} {strides} refused a view inside {n} elements")
        return
    if last >= n:
        raise Mismatch(f"as_strided {shape} {strides} accepted a view past {n} elements")
    want = np.lib.stride_tricks.as_strided(host, shape, tuple(s * host.itemsize for s in strides))
    _close(got, want, dt, f"as_strided {shape} {strides}")


def t_flip(rng, dev, dt):
    shape = _shape(rng, int(rng.integers(1, 4)), max_dim=8)
    a, h = _view(rng, dev, dt, shape)
    axes = tuple(ax for ax in range(len(shape)) if rng.random() < 0.5) or (0,)
    _close(a.flip(axes).numpy(), np.flip(h, axes), dt, f"flip {axes}")


def t_pad(rng, dev, dt):
    shape = _shape(rng, int(rng.integers(1, 4)))
    a, h = _view(rng, dev, dt, shape)
    pads = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in shape)
    _close(a.pad(pads).numpy(), np.pad(h, pads), dt, f"pad {pads}")


def _binary(name: str, fn: Callable, ref: Callable, positive=False):
    def target(rng, dev, dt):
        shape = _shape(rng)
        a, ha = _view(rng, dev, dt, shape, positive=positive)
        if rng.random() < 0.3:  # broadcasting between operands
            other = tuple(1 if rng.random() < 0.5 else d for d in shape)
        else:
            other = shape
        b, hb = _view(rng, dev, dt, other, positive=positive)
        if name == "div":
            hb = np.where(np.abs(hb) < 0.05, 0.5, hb).astype(dt)
            b = NDArray(hb, device=dev, dtype=dt)
        want = ref(ha, np.broadcast_to(hb, np.broadcast_shapes(ha.shape, hb.shape))).astype(dt)
        if other != shape:
            b = b.broadcast_to(shape)
        _close(fn(a, b).numpy(), want, dt, f"ewise {name} {shape}")
    target.__name__ = f"t_ewise_{name}"
    return target


def _scalar(name: str, fn: Callable, ref: Callable, positive=False):
    def target(rng, dev, dt):
        shape = _shape(rng)
        a, h = _view(rng, dev, dt, shape, positive=positive)
        s = float(rng.choice([0.0, 1.0, -1.0, 0.5, 2.0, 3.0])) if rng.random() < 0.4 else \
            float(rng.standard_normal() * 3)
        if name in ("div", "rdiv") and s == 0.0:
            s = 0.25
        if name == "rdiv":
            h = np.where(np.abs(h) < 0.05, 0.5, h).astype(dt)
            a = NDArray(h, device=dev, dtype=dt)
        if name == "power":
            s = float(rng.choice([0.0, 0.5, 1.0, 2.0, 3.0, -1.0, 1.5]))
        want = np.asarray(ref(h, np.asarray(s, dtype=dt))).astype(dt)
        _close(fn(a, s).numpy(), want, dt, f"scalar {name} {s!r}")
    target.__name__ = f"t_scalar_{name}"
    return target


def _unary(name: str, fn: Callable, ref: Callable, positive=False):
    def target(rng, dev, dt):
        a, h = _view(rng, dev, dt, _shape(rng), positive=positive)
        _close(fn(a).numpy(), ref(h).astype(dt), dt, f"{name}")
    target.__name__ = f"t_{name}"
    return target


def t_relu_grad(rng, dev, dt):
    shape = _shape(rng)
    a, h = _view(rng, dev, dt, shape)
    g, hg = _view(rng, dev, dt, shape)
    _close(a.relu_grad(g).numpy(), np.where(h > 0, hg, 0).astype(dt), dt, "relu_grad")


def _reduce(name: str):
    def target(rng, dev, dt):
        shape = _shape(rng, int(rng.integers(1, 5)))
        a, h = _view(rng, dev, dt, shape)
        r = rng.random()
        axis = None if r < 0.2 else int(rng.integers(0, len(shape))) if r < 0.7 else \
            tuple(ax for ax in range(len(shape)) if rng.random() < 0.5) or None
        keep = bool(rng.random() < 0.5)
        axes = tuple(range(len(shape))) if axis is None else (axis,) if isinstance(axis, int) else axis
        try:  # NumPy refuses a max over an empty axis when the result is not empty
            want = getattr(np, name)(h, axis=axis, keepdims=keep)
        except ValueError:
            try:
                a.max(axis=axis, keepdims=keep)
            except NeedleError:
                return
            raise Mismatch(f"{name} axis={axis} of {shape}: NumPy refuses it, needle did not raise")
        got = getattr(a, name)(axis=axis, keepdims=keep).numpy()
        n = max(1, math.prod(shape[ax] for ax in axes))
        _close(got, want, dt, f"{name} axis={axis} keepdims={keep} of {shape}", acc=True,
               scale=max(1.0, math.sqrt(n) / 4))
    target.__name__ = f"t_reduce_{name}"
    return target


def t_matmul(rng, dev, dt):
    r = rng.random()
    big = r < 0.15  # sizes past the tiled / blocked thresholds
    m, n, p = (int(rng.integers(1, 80 if big else 9)) for _ in range(3))
    if rng.random() < 0.05:
        m, n, p = (int(rng.integers(0, 3)) for _ in range(3))
    batch = _shape(rng, int(rng.integers(0, 3)), max_dim=3) if rng.random() < 0.4 else ()
    a, ha = _view(rng, dev, dt, batch + (m, n), broadcast=False)
    b, hb = _view(rng, dev, dt, batch + (n, p), broadcast=False)
    if batch and rng.random() < 0.3:  # one operand 2-D, broadcast over the batch
        b, hb = _view(rng, dev, dt, (n, p), broadcast=False)
    _close((a @ b).numpy(), ha @ hb, dt, f"matmul {ha.shape} @ {hb.shape}", acc=True,
           scale=max(1.0, math.sqrt(max(n, 1)) / 2))


def t_logsumexp(rng, dev, dt):
    from ..ops.ops_logarithmic import logsumexp_array
    shape = _shape(rng, int(rng.integers(1, 4)), max_dim=9)
    a, h = _view(rng, dev, dt, shape)
    axes = tuple(ax for ax in range(len(shape)) if rng.random() < 0.5) or (len(shape) - 1,)
    if any(shape[ax] == 0 for ax in axes):
        return
    m = np.max(h, axis=axes, keepdims=True)
    want = (np.log(np.sum(np.exp(h - m), axis=axes)) + np.squeeze(m, axis=axes))
    _close(logsumexp_array(a, axes).numpy(), want, dt, f"logsumexp axes={axes} of {shape}", acc=True)


def t_softmax(rng, dev, dt):
    kernel = dev.op_override("softmax")
    outer, inner = int(rng.integers(0, 9)), int(rng.integers(1, 70))
    h = _values(rng, (outer, inner), dt) * 4
    if kernel is None:
        return
    a = NDArray(h, device=dev, dtype=dt)
    out = NDArray.make((outer, inner), device=dev, dtype=dt)
    if outer:
        kernel(a._handle, out._handle, outer, inner)
    e = np.exp(h - h.max(axis=1, keepdims=True)) if outer else h
    want = e / e.sum(axis=1, keepdims=True) if outer else h
    _close(out.numpy(), want, dt, f"softmax ({outer}, {inner})", acc=True)


def _conv_case(rng, dt):
    N, H, W = int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    C, Co, K = int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
    stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    if H + 2 * pad < K or W + 2 * pad < K:
        pad = K
    x, w = _values(rng, (N, H, W, C), dt), _values(rng, (K, K, C, Co), dt)
    return x, w, stride, pad


def t_conv(rng, dev, dt):
    from ..ops.ops_conv import conv_forward_array
    x, w, s, p = _conv_case(rng, dt)
    got = conv_forward_array(NDArray(x, device=dev, dtype=dt), NDArray(w, device=dev, dtype=dt), s, p)
    _close(got.numpy(), conv_nhwc(x, w, s, p), dt, f"conv x{x.shape} w{w.shape} s{s} p{p}", acc=True)


def t_conv_grads(rng, dev, dt):
    from ..ops.ops_conv import conv_grad_input_array, conv_grad_weight_array
    x, w, s, p = _conv_case(rng, dt)
    ref = conv_nhwc(x, w, s, p)
    g = _values(rng, ref.shape, dt)
    gx, gw = conv_grads(x, w, g, s, p)
    nd_g, nd_w = NDArray(g, device=dev, dtype=dt), NDArray(w, device=dev, dtype=dt)
    got_x = conv_grad_input_array(nd_g, nd_w, x.shape[1:3], s, p)
    got_w = conv_grad_weight_array(NDArray(x, device=dev, dtype=dt), nd_g, w.shape[0], s, p)
    _close(got_x.numpy(), gx, dt, f"conv_grad_input x{x.shape} w{w.shape} s{s} p{p}", acc=True)
    _close(got_w.numpy(), gw, dt, f"conv_grad_weight x{x.shape} w{w.shape} s{s} p{p}", acc=True)


def _bool(x):
    return x.astype(np.float64)


TARGETS: dict[str, Callable] = {
    "getitem": t_getitem, "setitem": t_setitem, "permute": t_permute,
    "broadcast_to": t_broadcast_to, "reshape": t_reshape, "compact": t_compact,
    "as_strided": t_as_strided, "flip": t_flip, "pad": t_pad,
    "ewise_add": _binary("add", lambda a, b: a + b, np.add),
    "ewise_sub": _binary("sub", lambda a, b: a - b, np.subtract),
    "ewise_mul": _binary("mul", lambda a, b: a * b, np.multiply),
    "ewise_div": _binary("div", lambda a, b: a / b, np.divide),
    "ewise_maximum": _binary("maximum", lambda a, b: a.maximum(b), np.maximum),
    "ewise_eq": _binary("eq", lambda a, b: a == b, lambda x, y: _bool(x == y)),
    "ewise_ge": _binary("ge", lambda a, b: a >= b, lambda x, y: _bool(x >= y)),
    "scalar_add": _scalar("add", lambda a, s: a + s, np.add),
    "scalar_sub": _scalar("sub", lambda a, s: a - s, np.subtract),
    "scalar_rsub": _scalar("rsub", lambda a, s: s - a, lambda x, s: s - x),
    "scalar_mul": _scalar("mul", lambda a, s: a * s, np.multiply),
    "scalar_div": _scalar("div", lambda a, s: a / s, np.divide),
    "scalar_rdiv": _scalar("rdiv", lambda a, s: s / a, lambda x, s: s / x),
    "scalar_power": _scalar("power", lambda a, s: a ** s, np.power, positive=True),
    "scalar_maximum": _scalar("maximum", lambda a, s: a.maximum(s), np.maximum),
    "scalar_eq": _scalar("eq", lambda a, s: a == s, lambda x, s: _bool(x == s)),
    "scalar_ge": _scalar("ge", lambda a, s: a >= s, lambda x, s: _bool(x >= s)),
    "ewise_neg": _unary("neg", lambda a: -a, np.negative),
    "ewise_log": _unary("log", lambda a: a.log(), np.log, positive=True),
    "ewise_exp": _unary("exp", lambda a: a.exp(), np.exp),
    "ewise_tanh": _unary("tanh", lambda a: a.tanh(), np.tanh),
    "ewise_sqrt": _unary("sqrt", lambda a: a.sqrt(), np.sqrt, positive=True),
    "ewise_relu_grad": t_relu_grad,
    "reduce_sum": _reduce("sum"), "reduce_max": _reduce("max"),
    "matmul": t_matmul, "logsumexp": t_logsumexp, "softmax": t_softmax,
    "conv": t_conv, "conv_grads": t_conv_grads,
}


def run(cases: int, device: str = "cpu", seed: int = 0, only=None, out=sys.stdout,
        max_failures: int = 20) -> dict:
    """Run ``cases`` cases of every target (or of ``only``) on ``device``;
    returns ``{"cases": n, "failures": [...], "per_target": {...}}``."""
    dev = _device(device)
    dtypes = [np.dtype(d) for d in dev.require().dtypes]
    names = list(TARGETS) if not only else list(only)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise KeyError(f"fuzz: unknown target(s) {unknown}; known: {list(TARGETS)}")
    failures, per_target, total = [], {}, 0
    for name in names:
        fn, t0, fails = TARGETS[name], time.perf_counter(), 0
        for case in range(cases):
            rng = np.random.default_rng([seed, list(TARGETS).index(name), case])
            dt = dtypes[case % len(dtypes)]
            try:
                fn(rng, dev, dt)
            except Exception as exc:  # every failure is reported with its reproducer
                fails += 1
                detail = str(exc) if isinstance(exc, Mismatch) else traceback.format_exc(limit=4)
                failures.append(dict(target=name, case=case, seed=seed, dtype=dt.name,
                                     error=type(exc).__name__, detail=detail))
                if len(failures) <= max_failures:
                    print(f"FAIL {name} case {case} seed {seed} {dt.name}: {type(exc).__name__}: {detail}",
                          file=out, flush=True)
        total += cases
        per_target[name] = dict(cases=cases, failures=fails, seconds=round(time.perf_counter() - t0, 2))
        print(f"{name:<16} {cases:>9} cases  {fails:>4} failures  {per_target[name]['seconds']:>8.1f} s",
              file=out, flush=True)
    return dict(cases=total, failures=failures, per_target=per_target)


def replay(target: str, case: int, seed: int = 0, device: str = "cpu") -> None:
    """Re-run one case (raises what it raised in the campaign)."""
    dev = _device(device)
    dtypes = [np.dtype(d) for d in dev.require().dtypes]
    rng = np.random.default_rng([seed, list(TARGETS).index(target), case])
    TARGETS[target](rng, dev, dtypes[case % len(dtypes)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m needle.testing.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=1000, help="cases per target (default 1000)")
    p.add_argument("--device", default="cpu", help="device name: cpu, cpu_numpy, cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help="comma-separated targets (default: all)")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(TARGETS))
        return 0
    if args.cases < 1:
        p.error(f"--cases must be >= 1, got {args.cases}")
    only = [n.strip() for n in args.only.split(",") if n.strip()] or None
    t0 = time.perf_counter()
    result = run(args.cases, args.device, args.seed, only)
    n_fail = len(result["failures"])
    print(f"fuzz on {args.device}: {result['cases']} cases over {len(result['per_target'])} targets, "
          f"{n_fail} failures, {time.perf_counter() - t0:.0f} s")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
