"""Run under ``needle launch -n 2`` by test_launch_failures: argv[1] picks the failure."""

import sys
import time

import needle as ndl
import needle.distributed as dist

mode = sys.argv[1]
dist.init_process_group(timeout=float(sys.argv[2]) if len(sys.argv) > 2 else 60)
rank = dist.get_rank()
if mode == "raise":
    dist.barrier()
    if rank == 1:
        raise ValueError("rank one's own message: bad batch 17")
    dist.barrier()          # rank 0 waits here; the abort must end it
    time.sleep(60)
elif mode == "absent":
    if rank == 1:
        time.sleep(60)      # never reaches the collective
    dist.all_reduce(ndl.Tensor([1.0]))
elif mode == "exit":
    if rank == 1:
        sys.exit(3)
    dist.barrier()
print(f"rank {rank} finished", flush=True)
