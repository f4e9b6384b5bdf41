#!/usr/bin/env python
"""Speed report: needle's backends beside NumPy and PyTorch, in one process.

    python benchmarks/compare.py                 # every section
    python benchmarks/compare.py kernels --quick # one section, fewer repeats
    needle bench overhead                        # same, through the CLI

Sections:
  kernels   protocol kernels through NDArray vs NumPy (ratio = NumPy time / backend time,
            so > 1 means faster than NumPy)
  overhead  per-op Python overhead of Tensor ops vs PyTorch eager
  conv      convolution forward+backward at ResNet9 layer shapes vs PyTorch
  mlp       one MLPResNet training epoch (Fashion-MNIST sized) vs PyTorch
  models    ResNet9 / LSTM LM / Transformer block training steps vs PyTorch
  memory    peak RSS growth of SmallCNN / ResNet9 training steps vs PyTorch, each
            framework in its own process

Ratios are medians of repeated runs.  Targets live in the issues and the
README; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from timing import fmt_time, median_time  # noqa: E402

SECTIONS = {}


def section(fn):
    SECTIONS[fn.__name__.removeprefix("section_")] = fn
    return fn


def _print_table(title, header, rows):
    print(f"\n== {title} ==")
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


@section
def section_kernels(args):
    from benchmarks.cases import KERNEL_CASES, QUICK_SKIP, available_devices, make_inputs, to_device
    devices = [d for d in available_devices() if args.device in (None, d.name)]
    header = ["kernel", "numpy"] + [f"{d.name}" for d in devices] + [f"{d.name} x NumPy" for d in devices]
    rows = []
    for case in KERNEL_CASES:
        if args.quick and case.name in QUICK_SKIP:
            continue
        if args.filter and args.filter not in case.name:
            continue
        host = make_inputs(case)
        t_np = median_time(lambda: case.numpy(*host), repeat=args.repeat)
        times = []
        for dev in devices:
            if dev.name == "cpu_numpy" and case.unit == "GFLOP/s" and "2048" in case.name and args.quick:
                times.append(None)
                continue
            inputs = to_device(host, dev)
            times.append(median_time(lambda: case.needle(*inputs), repeat=args.repeat))
        rate = lambda t: f"{case.work / t / 1e9:6.1f} {case.unit}"  # noqa: E731
        rows.append([case.name, rate(t_np)] + [rate(t) if t else "-" for t in times]
                    + [f"{t_np / t:5.2f}x" if t else "-" for t in times])
    _print_table("kernels (float32; rate of needle's NDArray op incl. output allocation)", header, rows)


@section
def section_overhead(args):
    import overhead  # benchmarks/overhead.py
    overhead.report(repeat=args.repeat)


@section
def section_conv(args):
    import conv_probe  # benchmarks/conv_probe.py
    conv_probe.report(repeat=args.repeat, quick=args.quick)


@section
def section_mlp(args):
    import training_probe  # benchmarks/training_probe.py
    training_probe.report(quick=args.quick)


@section
def section_models(args):
    import models_probe  # benchmarks/models_probe.py
    models_probe.report(quick=args.quick, device=args.device)


@section
def section_memory(args):
    import memory_probe  # benchmarks/memory_probe.py: one subprocess per framework and model
    memory_probe.report(steps=5 if args.quick else 25, device=args.device or "cpu")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", choices=[[]] + list(SECTIONS),
                        help="sections to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip the largest cases")
    parser.add_argument("--repeat", type=int, default=None, help="timing rounds per case (median)")
    parser.add_argument("--device", default=None, help="only this needle device (e.g. cpu)")
    parser.add_argument("--filter", default=None, help="only kernel cases whose name contains this")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 7
    import numpy as np
    import needle
    print(f"needle {needle.__version__}, numpy {np.__version__}, {os.cpu_count()} cpus")
    print(needle.info.backends_table(with_config=True))
    for name in args.sections or list(SECTIONS):
        try:
            SECTIONS[name](args)
        except ImportError as exc:
            print(f"\n== {name} ==\nnot available: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
