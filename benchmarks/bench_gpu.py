"""GPU figures for needle's CUDA backend against PyTorch on the same GPU.

    python -m benchmarks.bench_gpu [--size 4096] [--ewise-log2 26] [--reps 20]

Prints float32 matmul (size^2, TF32 off in PyTorch) and element-wise add
(2^ewise-log2 elements) timings and needle/torch ratios.  Exits with status 2
and a clear message when no GPU (or no torch with CUDA) is usable.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks.timing import median_time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--ewise-log2", type=int, default=26)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)

    from needle_cuda import CudaBackend
    be = CudaBackend()
    ok, reason = be.is_available()
    if not ok:
        print(f"no GPU: cuda backend unavailable ({reason}); nothing measured")
        return 2
    try:
        import torch
        if not torch.cuda.is_available():
            raise ImportError("torch has no CUDA device")
    except ImportError as exc:
        print(f"no GPU reference: PyTorch with CUDA is required ({exc}); nothing measured")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def sync():
        be.synchronize()
        torch.cuda.synchronize()

    cfg = be.config()
    print(f"device: {cfg['devices'][0]['name']} ({cfg['devices'][0]['arch']}), driver {cfg['driver']}, "
          f"NVRTC {cfg['nvrtc']}; torch {torch.__version__}; median of {args.reps}")

    n = args.size
    rng = np.random.default_rng(0)
    a_h = rng.standard_normal((n, n)).astype(np.float32)
    b_h = rng.standard_normal((n, n)).astype(np.float32)
    a, b, c = be.Array(n * n), be.Array(n * n), be.Array(n * n)
    be.from_numpy(a_h.ravel(), a)
    be.from_numpy(b_h.ravel(), b)
    ta, tb = torch.from_numpy(a_h).cuda(), torch.from_numpy(b_h).cuda()
    t_ndl = median_time(lambda: be.matmul(a, b, c, n, n, n), args.reps, number=1, sync=sync)
    t_ref = median_time(lambda: ta @ tb, args.reps, number=1, sync=sync)
    err = np.abs(be.to_numpy(c, (n, n), (n, 1), 0) - (ta @ tb).cpu().numpy()).max()
    flops = 2 * n**3
    print(f"matmul f32 {n}^2: needle {flops / t_ndl / 1e12:.2f} TFLOP/s, torch {flops / t_ref / 1e12:.2f} "
          f"TFLOP/s, ratio {t_ref / t_ndl:.2f}x of cuBLAS (max abs diff {err:.2e})")

    m = 1 << args.ewise_log2
    x, y, z = be.Array(m), be.Array(m), be.Array(m)
    be.fill(x, 1.0)
    be.fill(y, 2.0)
    tx, ty = torch.ones(m, device="cuda"), torch.full((m,), 2.0, device="cuda")
    tz = torch.empty_like(tx)
    t_ndl = median_time(lambda: be.ewise_add(x, y, z), args.reps, number=1, sync=sync)
    t_ref = median_time(lambda: torch.add(tx, ty, out=tz), args.reps, number=1, sync=sync)
    gbytes = 3 * 4 * m / 1e9
    print(f"ewise add 2^{args.ewise_log2}: needle {gbytes / t_ndl:.0f} GB/s, torch {gbytes / t_ref:.0f} GB/s, "
          f"ratio {t_ref / t_ndl:.2f}x of PyTorch's bandwidth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
