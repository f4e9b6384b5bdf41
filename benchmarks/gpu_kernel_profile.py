"""Where a model step's GPU time goes: needle's CUDA kernels per name.

    python -m benchmarks.gpu_kernel_profile [--model resnet9] [--steps 5]

Runs the needle training step of ``models_probe`` on ``cuda`` under
``torch.profiler`` (CUPTI records every kernel of the process, needle's
NVRTC-compiled ones included) and prints the kernels by total GPU time,
then the wall time per step beside the summed kernel time: a wide gap
means the step waits on the host (launch overhead, copies, syncs).
Needs a GPU and PyTorch with CUDA; PyTorch is only the profiler here.
"""

from __future__ import annotations

import argparse

from benchmarks import models_probe
from benchmarks.timing import median_time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet9", choices=sorted(models_probe.PROBES))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args(argv)

    import needle as ndl
    import torch
    from torch.profiler import ProfilerActivity, profile

    step, _ = models_probe.PROBES[args.model](device=ndl.device("cuda"), build_only=True)
    step()  # compile kernels, fill the allocator cache (median_time warms up once more)
    wall = median_time(step, repeat=1, number=args.steps, sync=ndl.device("cuda").synchronize)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    print(events.table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    gpu_us = sum(getattr(e, key) for e in events) / args.steps
    launches = sum(e.count for e in events) / args.steps
    print(f"{args.model}: wall {wall * 1e3:.1f} ms/step, GPU kernels {gpu_us / 1e3:.1f} ms/step, "
          f"{launches:.0f} kernels/step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
