#!/usr/bin/env python
"""Per-op Python overhead of needle's Tensor layer beside PyTorch eager.

    python benchmarks/overhead.py [--repeat 7]     (or: python -m benchmarks.overhead)

* ``bench_add_small``: ``a + b`` with ``requires_grad=True`` on 1-element and
  16x16 float32 tensors (graph node creation + one kernel).
* ``bench_tiny_mlp_step``: one training step of a tiny MLP -- ``x @ W1 + b1``,
  relu, ``@ W2 + b2``, logsumexp loss, backward, SGD update through ``.data``.

Each function returns ``{label: median microseconds}`` with one entry per
enabled needle device (``needle[<device>]``) and ``torch`` when PyTorch is
importable.  Timings are noisy on a shared machine: compare ratios taken in
one process.
"""

from __future__ import annotations

import os
import sys

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/overhead.py`: import this folder as `benchmarks`
    sys.path[0] = os.path.dirname(os.path.abspath(sys.path[0]))

from benchmarks.timing import median_time  # noqa: E402

__all__ = ["bench_add_small", "bench_tiny_mlp_step", "devices", "report"]


def _median_us(fn, repeat: int) -> float:
    return median_time(fn, repeat) * 1e6


def devices():
    """Enabled needle devices (cpu_numpy always included), CPU-side ones first."""
    import needle.backend_ndarray as nd
    devs = [d for d in nd.all_devices() if d.enabled()]
    if all(d.name != "cpu_numpy" for d in devs):
        devs.append(nd.cpu_numpy())
    return devs


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_time(fn, repeat: int) -> float:
    """Median us of ``fn`` with PyTorch on one intra-op thread: tiny tensors
    gain nothing from threads, and on a shared machine thread contention made
    its timings erratic (restored afterwards)."""
    torch = _torch()
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _median_us(fn, repeat)
    finally:
        torch.set_num_threads(prev)


def bench_add_small(n_repeat: int = 7, shapes=((1,), (16, 16))) -> dict:
    """Median microseconds of ``a + b`` (requires_grad) per device and shape:
    ``{"needle[cpu_numpy] (16, 16)": us, "torch (16, 16)": us, ...}``."""
    import needle as ndl
    out = {}
    for shape in shapes:
        host_a = np.random.rand(*shape).astype(np.float32)
        host_b = np.random.rand(*shape).astype(np.float32)
        for dev in devices():
            a = ndl.Tensor(host_a, device=dev, requires_grad=True)
            b = ndl.Tensor(host_b, device=dev, requires_grad=True)
            out[f"needle[{dev.name}] {shape}"] = _median_us(lambda: a + b, n_repeat)
        torch = _torch()
        if torch is not None:
            ta = torch.tensor(host_a, requires_grad=True)
            tb = torch.tensor(host_b, requires_grad=True)
            out[f"torch {shape}"] = _torch_time(lambda: ta + tb, n_repeat)
    return out


def bench_tiny_mlp_step(n_repeat: int = 7, batch: int = 16, dim_in: int = 32, hidden: int = 64,
                        classes: int = 10, lr: float = 0.01) -> dict:
    """Median microseconds of one tiny-MLP SGD step per device, and PyTorch's:
    ``{"needle[cpu_numpy]": us, "torch": us}``."""
    import needle as ndl
    rng = np.random.default_rng(0)
    x_h = rng.standard_normal((batch, dim_in)).astype(np.float32)
    params_h = [rng.standard_normal(s).astype(np.float32) * 0.1
                for s in ((dim_in, hidden), (1, hidden), (hidden, classes), (1, classes))]
    out = {}
    for dev in devices():
        x = ndl.Tensor(x_h, device=dev, requires_grad=False)
        w1, b1, w2, b2 = (ndl.Tensor(p, device=dev) for p in params_h)

        def step():
            h = ndl.relu(x @ w1 + b1.broadcast_to((batch, hidden)))
            z = h @ w2 + b2.broadcast_to((batch, classes))
            loss = ndl.logsumexp(z, axes=(1,)).sum() / batch
            loss.backward()
            for p in (w1, b1, w2, b2):
                p.data = p.data - p.grad.data * lr

        out[f"needle[{dev.name}]"] = _median_us(step, n_repeat)
    torch = _torch()
    if torch is not None:
        x = torch.tensor(x_h)
        params = [torch.tensor(p, requires_grad=True) for p in params_h]
        w1, b1, w2, b2 = params

        def tstep():
            h = torch.relu(x @ w1 + b1)
            z = h @ w2 + b2
            loss = torch.logsumexp(z, dim=1).sum() / batch
            loss.backward()
            with torch.no_grad():
                for p in params:
                    p -= p.grad * lr
                    p.grad = None

        out["torch"] = _torch_time(tstep, n_repeat)
    return out


def _ratio_rows(results: dict, key_of):
    rows = []
    for label, us in results.items():
        ref = results.get(key_of(label))
        ratio = f"{us / ref:5.2f}x" if ref and not label.startswith("torch") else "-"
        rows.append((label, f"{us:9.2f}", ratio))
    return rows


def report(repeat: int = 7) -> None:
    """Print both benchmarks with ratios to PyTorch (time / torch time; <= 2x is the target)."""
    add = bench_add_small(repeat)
    mlp = bench_tiny_mlp_step(repeat)
    print("\n== overhead: a + b with requires_grad (median us; ratio = needle / torch) ==")
    print(f"{'case':34s} {'us':>9s}  ratio")
    for label, us, ratio in _ratio_rows(add, lambda lab: "torch " + lab.split(" ", 1)[1]):
        print(f"{label:34s} {us}  {ratio}")
    print("\n== overhead: tiny MLP step (16x32 @ 32x64, relu, 64x10, logsumexp, backward, SGD) ==")
    print(f"{'case':34s} {'us':>9s}  ratio")
    for label, us, ratio in _ratio_rows(mlp, lambda lab: "torch"):
        print(f"{label:34s} {us}  {ratio}")


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    report(args.repeat)
