"""Convolution forward+backward at ResNet9's layer shapes (batch 128, 32x32
inputs, NHWC in needle, NCHW in PyTorch), in one process."""

from __future__ import annotations

import numpy as np

from benchmarks.timing import fmt_time, median_time

# (H=W, C_in, C_out, K, stride) of each ResNet9 conv on a 32x32 input
RESNET9_LAYERS = [(32, 3, 16, 7, 4), (8, 16, 32, 3, 2), (4, 32, 32, 3, 1), (4, 32, 64, 3, 2),
                  (2, 64, 128, 3, 2), (1, 128, 128, 3, 1)]


def needle_conv_step(device, hw, cin, cout, k, s, batch):
    import needle as ndl
    rng = np.random.default_rng(0)
    x = ndl.Tensor(rng.standard_normal((batch, hw, hw, cin), dtype=np.float32), device=device)
    w = ndl.Tensor(rng.standard_normal((k, k, cin, cout), dtype=np.float32), device=device)

    def step():
        y = ndl.conv(x, w, stride=s, padding=k // 2)
        y.sum().backward()
    return step


def torch_conv_step(hw, cin, cout, k, s, batch):
    import torch
    x = torch.randn(batch, cin, hw, hw, requires_grad=True)
    w = torch.randn(cout, cin, k, k, requires_grad=True)

    def step():
        y = torch.nn.functional.conv2d(x, w, stride=s, padding=k // 2)
        y.sum().backward()
    return step


def report(repeat=5, quick=False):
    import needle.backend_ndarray as nd
    from needle import discovery
    batch = 32 if quick else 128
    devices = [nd.device(i.devices[0]) for i in discovery.backend_infos() if i.available]
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    print(f"\n== conv: forward+backward, batch {batch}, ResNet9 layer shapes (time; ratio = needle/PyTorch) ==")
    totals = {d.name: 0.0 for d in devices}
    total_torch = 0.0
    for hw, cin, cout, k, s in RESNET9_LAYERS:
        row = f"{hw:>2}x{hw:<2} {cin:>3}->{cout:<3} k{k} s{s}:"
        t_t = median_time(torch_conv_step(hw, cin, cout, k, s, batch), repeat=repeat) if have_torch else None
        if t_t:
            total_torch += t_t
            row += f"  torch {fmt_time(t_t)}"
        for d in devices:
            t = median_time(needle_conv_step(d, hw, cin, cout, k, s, batch), repeat=repeat)
            totals[d.name] += t
            row += f"  {d.name} {fmt_time(t)}" + (f" ({t / t_t:.2f}x)" if t_t else "")
        print(row)
    if have_torch:
        print("total: torch " + fmt_time(total_torch) + "".join(
            f", {n} {fmt_time(t)} ({t / total_torch:.2f}x)" for n, t in totals.items()))
