"""Does needle's 2-thread GEMM slow down right after a NumPy BLAS call?
(not a test; prints a table)

    .venv/bin/python tests/cpu/blas_spin_probe.py [--rounds 15]

OpenBLAS's worker threads busy-wait for a while after each BLAS call before
they sleep; on a 2-core machine they then compete with needle's threads.
Each round: one NumPy 512x512 matmul, then needle 256x256 GEMMs timed at
growing delays after it, and once more after a 0.5 s pause (the baseline).
Medians over rounds; 1.0 = no slowdown.
"""

import statistics
import sys
import time

import numpy as np

import needle.backend_ndarray as nd

rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 15
rng = np.random.default_rng(0)
x = rng.standard_normal((512, 512)).astype(np.float32)
a = nd.array(rng.standard_normal((256, 256)).astype(np.float32), device=nd.cpu())
b = nd.array(rng.standard_normal((256, 256)).astype(np.float32), device=nd.cpu())
DELAYS = (0.0, 0.01, 0.03, 0.06, 0.1, 0.2)


def one():
    t0 = time.perf_counter()
    a @ b
    return time.perf_counter() - t0


one()
times = {d: [] for d in DELAYS}
base = []
for _ in range(rounds):
    for d in DELAYS:
        x @ x  # wakes OpenBLAS's threads; they spin after it returns
        t_end = time.perf_counter()
        while time.perf_counter() - t_end < d:
            pass
        times[d].append(one())
    time.sleep(0.5)
    base.append(one())
b0 = statistics.median(base)
print(f"needle 256^3 GEMM after a 0.5 s pause: {b0 * 1e6:.0f} us (median of {rounds})")
for d in DELAYS:
    m = statistics.median(times[d])
    print(f"  {d * 1e3:5.0f} ms after a NumPy matmul: {m * 1e6:7.0f} us  ({m / b0:4.2f}x the baseline)")
