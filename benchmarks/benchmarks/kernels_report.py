"""The ``kernels`` section of the speed report: every kernel case through
NDArray on each available device, beside NumPy, in one process.

Shipped in the wheel as ``needle_benchmarks.kernels_report`` so that
``needle bench kernels`` works from an installed needle;
``benchmarks/compare.py kernels`` runs the same function in a checkout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# relative: this runs as benchmarks.benchmarks.* (checkout) or needle_benchmarks.* (wheel)
from .cases import KERNEL_CASES, QUICK_SKIP, available_devices, make_inputs, to_device
from .timing import alternating_medians


def print_table(title, header, rows):
    print(f"\n== {title} ==")
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def kernels_report(quick=False, repeat=None, device=None, filter=None):  # noqa: A002 (the CLI's name)
    """Print rates (GB/s, GFLOP/s) and ratios vs NumPy (> 1: faster than NumPy),
    each the median of rounds of alternating blocks (each device's, then NumPy's),
    so that the machine's drift over seconds hits both sides alike."""
    repeat = repeat or (3 if quick else 9)
    devices = [d for d in available_devices() if device in (None, d.name)]
    header = ["kernel", "numpy"] + [f"{d.name}" for d in devices] + [f"{d.name} x NumPy" for d in devices]
    rows = []
    for case in KERNEL_CASES:
        if quick and case.name in QUICK_SKIP:
            continue
        if filter and filter not in case.name:
            continue
        host = make_inputs(case)
        fns = []
        for dev in devices:
            if dev.name == "cpu_numpy" and case.unit == "GFLOP/s" and "2048" in case.name and quick:
                fns.append(None)
                continue
            inputs = to_device(host, dev)
            fns.append(lambda inputs=inputs: case.needle(*inputs))
        # needle first in each round, then NumPy.  After a NumPy BLAS call
        # OpenBLAS's idle threads spin for ~0.1 s and take the cores from a
        # 2-thread kernel that runs next, so around products every block
        # starts after a pause (settle) that lets that spin end.  Products
        # get 0.2 s blocks: on a VM a thread woken after such a pause runs
        # slow for tens of milliseconds (the host's halt polling adapts), so
        # 20 ms blocks read needle's 2-thread GEMM at half its rate.
        time.sleep(0.3)
        gemm = case.unit == "GFLOP/s"
        *times, t_np = alternating_medians(fns + [lambda: case.numpy(*host)], repeat=repeat,
                                           block=0.2 if gemm else 0.02, settle=0.15 if gemm else 0.0)
        rate = lambda t: f"{case.work / t / 1e9:6.1f} {case.unit}"  # noqa: E731
        rows.append([case.name, rate(t_np)] + [rate(t) if t else "-" for t in times]
                    + [f"{t_np / t:5.2f}x" if t else "-" for t in times])
    print_table("kernels (float32; rate of needle's NDArray op incl. output allocation)", header, rows)


def main(argv=None) -> int:
    """``needle bench`` outside a source checkout: the kernels section only."""
    parser = argparse.ArgumentParser(
        prog="needle bench", description="Kernel timings vs NumPy (an installed needle has only this section; "
                                         "the others need a source checkout: python benchmarks/compare.py).")
    parser.add_argument("sections", nargs="*", help="kernels (the default)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip the largest cases")
    parser.add_argument("--repeat", type=int, default=None, help="timing rounds per case (median)")
    parser.add_argument("--device", default=None, help="only this needle device (e.g. cpu)")
    parser.add_argument("--filter", default=None, help="only kernel cases whose name contains this")
    args = parser.parse_args(argv)
    others = [s for s in args.sections if s != "kernels"]
    if others:
        print(f"needle bench: section(s) {', '.join(others)} need a source checkout of needle "
              "(git clone, then: python benchmarks/compare.py " + " ".join(others) + "); "
              "an installed needle has only 'kernels'", file=sys.stderr)
        return 2
    import numpy as np
    import needle
    print(f"needle {needle.__version__}, numpy {np.__version__}, {os.cpu_count()} cpus")
    print(needle.info.backends_table(with_config=True))
    kernels_report(args.quick, args.repeat, args.device, args.filter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
