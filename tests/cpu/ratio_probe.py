"""Kernel ratios to NumPy, timed fairly on a loaded machine (not a test).

    .venv/bin/python tests/cpu/ratio_probe.py [FILTER ...] [--blocks 15]

Runs benchmarks/benchmarks/cases.py's KERNEL_CASES on the ``cpu`` device and
in NumPy, alternating blocks of calls (~20 ms each) and taking the median of
each side, so load from other processes hits both alike; ratio = NumPy time /
needle time (> 1: needle faster).  benchmarks/compare.py kernels times the
two sides one after the other instead, which on a shared machine can land a
burst of load on one side only.
"""

import os
import statistics
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import needle.backend_ndarray as nd  # noqa: E402
from benchmarks.cases import KERNEL_CASES, make_inputs, to_device  # noqa: E402


def block_time(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def ratio(case, blocks):
    host = make_inputs(case)
    dev = to_device(host, nd.cpu())
    f_np = lambda: case.numpy(*host)  # noqa: E731
    f_nd = lambda: case.needle(*dev)  # noqa: E731
    for f in (f_np, f_nd, f_np, f_nd):  # warm-up: caches, pools, thread pools
        f()
    one = max(block_time(f_np, 1), 1e-7)
    number = max(1, int(0.02 / one))
    t_np, t_nd = [], []
    for _ in range(blocks):
        t_np.append(block_time(f_np, number))
        t_nd.append(block_time(f_nd, number))
    return statistics.median(t_np), statistics.median(t_nd)


def main(argv):
    blocks = 15
    if "--blocks" in argv:
        i = argv.index("--blocks")
        blocks = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    for case in KERNEL_CASES:
        if argv and not any(f in case.name for f in argv):
            continue
        t_np, t_nd = ratio(case, blocks)
        rate = lambda t: f"{case.work / t / 1e9:7.1f} {case.unit}"  # noqa: E731
        print(f"{case.name:48s} numpy {rate(t_np)}  cpu {rate(t_nd)}  {t_np / t_nd:5.2f}x", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
