"""Quick speed probe of the CPU backend against NumPy (not a test).

    .venv/bin/python -m benchmarks.cpu_kernels_probe [--quick] [--threads N]

Prints GFLOP/s (matmul) or GB/s (memory-bound kernels) for needle_cpu and
NumPy side by side and the ratio numpy_time / cpu_time (> 1: needle_cpu is
faster).  The two sides are timed alternately, call by call, and each figure
is the median, so load from other processes hits both alike; the machine is
shared, so figures stay noisy: rerun before trusting a single ratio.
``--threads N`` sets NEEDLE_NUM_THREADS and OpenBLAS's thread count to N.
"""

import os
import sys

if "--threads" in sys.argv:
    _n = sys.argv[sys.argv.index("--threads") + 1]
    os.environ["NEEDLE_NUM_THREADS"] = _n
    os.environ["OPENBLAS_NUM_THREADS"] = _n
    os.environ["OMP_NUM_THREADS"] = _n

import numpy as np  # noqa: E402

import needle_cpu  # noqa: E402

from benchmarks.timing import alternating_medians  # noqa: E402

be = needle_cpu.CpuBackend()
QUICK = "--quick" in sys.argv


def put(x):
    x = np.ascontiguousarray(x).ravel()
    buf = be.Array(x.size, x.dtype)
    be.from_numpy(x, buf)
    return buf


def row(label, unit, work, f_cpu, f_np):
    t_cpu, t_np = alternating_medians([f_cpu, f_np], min_time=0.15 if QUICK else 0.4, max_reps=300)
    print(f"{label:<34} cpu {work / t_cpu / 1e9:8.1f} {unit}   numpy {work / t_np / 1e9:8.1f} {unit}"
          f"   ratio {t_np / t_cpu:5.2f}")


def matmul_case(label, m, n, p, ta=False, tb=False):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, m) if ta else (m, n)).astype(np.float32)
    b = rng.standard_normal((p, n) if tb else (n, p)).astype(np.float32)
    av, bv = (a.T if ta else a), (b.T if tb else b)
    A, B, C = put(a), put(b), be.Array(m * p)
    sa = (0, 1, m) if ta else (0, n, 1)
    sb = (0, 1, n) if tb else (0, p, 1)
    out_np = np.empty((m, p), np.float32)
    if ta or tb:
        f_cpu = lambda: be.matmul_strided(A, B, C, 1, m, n, p, sa, 0, sb, 0)
    else:
        f_cpu = lambda: be.matmul(A, B, C, m, n, p)
    f_np = lambda: np.matmul(av, bv, out=out_np)
    row(label, "GFLOP/s", 2.0 * m * n * p, f_cpu, f_np)


def main():
    print(f"needle_cpu config: {be.config()}  numpy {np.__version__}")
    print("-- matmul float32")
    for s in ((256, 512, 1024) if QUICK else (256, 512, 1024, 2048)):
        matmul_case(f"square {s}", s, s, s)
    matmul_case("mlp 128x784 @ 784x100", 128, 784, 100)
    matmul_case("mlp 128x100 @ 100x10", 128, 100, 10)
    matmul_case("mlp bwd X^T G 784x128 @ 128x100", 784, 128, 100, ta=True)
    matmul_case("mlp bwd G W^T 128x100 @ 100x784", 128, 100, 784, tb=True)
    matmul_case("mlp bwd H^T G 100x128 @ 128x10", 100, 128, 10, ta=True)
    matmul_case("mlp bwd G W^T 128x10 @ 10x100", 128, 10, 100, tb=True)

    print("-- memory-bound float32")
    n = 1 << 24
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    y = np.random.default_rng(2).standard_normal(n).astype(np.float32)
    X, Y = put(x), put(y)

    def cpu_add():
        out = be.Array(n)  # a fresh output each call, as NDArray does
        be.ewise_add(X, Y, out)

    def cpu_mul():
        out = be.Array(n)
        be.ewise_mul(X, Y, out)

    row("add 2^24 (new output)", "GB/s", 12.0 * n, cpu_add, lambda: x + y)
    row("mul 2^24 (new output)", "GB/s", 12.0 * n, cpu_mul, lambda: x * y)
    s2 = x.reshape(4096, 4096)

    def cpu_sum():
        out = be.Array(4096)
        be.reduce_sum(X, out, 4096)

    row("sum last axis 4096x4096", "GB/s", 4.0 * n, cpu_sum, lambda: s2.sum(axis=1))

    def cpu_t():
        out = be.Array(n)
        be.compact(X, out, (4096, 4096), (1, 4096), 0)

    row("compact transpose 4096x4096", "GB/s", 8.0 * n, cpu_t, lambda: np.ascontiguousarray(s2.T))


if __name__ == "__main__":
    main()
