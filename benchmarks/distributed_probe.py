"""needle.distributed figures (``python benchmarks/compare.py distributed``).

1. allreduce, 4 KB .. 64 MB of float32: ``needle.distributed.all_reduce`` on a
   Tensor of the default device vs mpi4py's own ``Allreduce`` on a NumPy
   array, and vs mpi4py's ``Allreduce`` on the Tensor's own buffer (what the
   needle layer adds), two ranks, alternating rounds in the same processes,
   medians.
2. one MLPResNet training epoch (Fashion-MNIST sized, synthetic data, global
   batch 128): 1 process with all cores vs 2 DDP ranks with one core each.
3. the share of the gradient allreduce hidden behind backward: the time DDP
   waits for its buckets at the end of backward (on the rank that waits
   less: the other one also waits for its peer's backward), against the time
   the same bucket allreduces take on their own.

The report launches itself with ``needle launch -n 2`` (and runs the single
process baseline alone first); nothing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = [4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
DIM, HIDDEN, CLASSES, BATCH = 784, 100, 10, 128


def _data(n):
    rng = np.random.default_rng(0)
    return rng.random((n, DIM), dtype=np.float32), rng.integers(0, CLASSES, n).astype(np.uint8)


def _epoch(n, ddp=False, bucket_cap_mb=25.0):
    """Seconds for one epoch of n samples; with ddp: this rank's share, DDP."""
    import needle as ndl
    import needle.distributed as dist
    from needle.models.mlp_resnet import MLPResNet

    X, y = _data(n)
    ds = ndl.data.NDArrayDataset(X, y)
    np.random.seed(0)
    model = MLPResNet(DIM, HIDDEN, num_blocks=3, num_classes=CLASSES)
    forward, reducer = model, None
    if ddp:
        world = dist.get_world_size()
        loader = ndl.data.DataLoader(ds, BATCH // world, sampler=ndl.data.DistributedSampler(ds, seed=0))
        forward = dist.DistributedDataParallel(model, bucket_cap_mb=bucket_cap_mb)
        reducer = forward._reducer
    else:
        loader = ndl.data.DataLoader(ds, BATCH, shuffle=True)
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_fn = ndl.nn.SoftmaxLoss()
    if ddp:
        dist.barrier()
    t0 = time.perf_counter()
    for Xb, yb in loader:
        loss = loss_fn(forward(Xb), yb)
        opt.reset_grad()
        loss.backward()
        opt.step()
    if ddp:
        dist.barrier()
    elapsed = time.perf_counter() - t0
    return elapsed, reducer


def _medians(fns, rounds, comm):
    """Median seconds of each function, timed in alternating rounds, each
    call started together on every rank (a barrier before it)."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def worker(out_path, quick):
    """Runs on every rank of ``needle launch -n 2``; rank 0 writes the JSON."""
    import needle as ndl
    import needle.distributed as dist
    from mpi4py import MPI

    dist.init_process_group()
    comm, rank = MPI.COMM_WORLD, dist.get_rank()
    result = {"world": dist.get_world_size(), "allreduce": []}
    for nbytes in SIZES if not quick else SIZES[:4]:
        n = nbytes // 4
        host = np.zeros(n, dtype=np.float32)
        t = ndl.Tensor(np.zeros(n, dtype=np.float32), requires_grad=False)
        view = t.realize_cached_data().host_view()   # None on a backend without host memory
        rounds = 30 if nbytes <= (1 << 20) else (10 if nbytes <= (16 << 20) else 5)
        fns = [lambda: comm.Allreduce(MPI.IN_PLACE, host), lambda: dist.all_reduce(t)]
        if view is not None:
            fns.append(lambda: comm.Allreduce(MPI.IN_PLACE, view))
        for fn in fns:
            fn()  # warm up
        times = _medians(fns, rounds, comm)
        # every rank must agree on the figure: take the slower rank's
        t_mpi, t_needle = comm.allreduce(times[0], op=MPI.MAX), comm.allreduce(times[1], op=MPI.MAX)
        t_view = comm.allreduce(times[2], op=MPI.MAX) if view is not None else None
        result["allreduce"].append({"bytes": nbytes, "mpi4py_s": t_mpi, "needle_s": t_needle,
                                    "mpi4py_on_needle_memory_s": t_view})

    n = 15000 if quick else 60000
    result["samples"] = n
    for label, cap in (("default buckets (25 MB, first 1 MB)", 25.0), ("small buckets (0.05 MB)", 0.05)):
        elapsed, reducer = _epoch(n, ddp=True, bucket_cap_mb=cap)
        # the same bucket allreduces on their own (blocking), as many times as there were steps
        sizes = [b.numel for b in reducer.buckets]
        bufs = [np.ones(k, dtype=np.float32) for k in sizes]
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(reducer.stats["steps"]):
            for b in bufs:
                comm.Allreduce(MPI.IN_PLACE, b)
        alone = time.perf_counter() - t0
        exposed = reducer.stats["wait_s"]
        result.setdefault("ddp", []).append({
            "buckets": label, "num_buckets": len(sizes), "epoch_s": comm.allreduce(elapsed, op=MPI.MAX),
            "steps": reducer.stats["steps"], "allreduce_alone_s": comm.allreduce(alone, op=MPI.MAX),
            # a rank that reaches the end of backward first also waits for the other to finish
            # its backward (skew, not communication); the rank that arrives last waits only for
            # what communication is left: the smaller of the two totals bounds the exposed part
            "exposed_wait_s": comm.allreduce(exposed, op=MPI.MIN),
            "max_wait_s": comm.allreduce(exposed, op=MPI.MAX)})
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


def _single(out_path, quick):
    n = 15000 if quick else 60000
    elapsed, _ = _epoch(n)
    with open(out_path, "w") as f:
        json.dump({"epoch_s": elapsed, "samples": n}, f)


def report(quick=False):
    tmp = tempfile.mkdtemp(prefix="needle-dist-bench-")
    single, multi = os.path.join(tmp, "single.json"), os.path.join(tmp, "multi.json")
    me = os.path.abspath(__file__)
    env = {k: v for k, v in os.environ.items() if k not in ("NEEDLE_NUM_THREADS", "OMP_NUM_THREADS")}
    flag = ["--quick"] if quick else []
    subprocess.run([sys.executable, me, "--single", single] + flag, check=True, env=env)
    subprocess.run([sys.executable, "-m", "needle.cli", "launch", "-n", "2", me, "--worker", multi] + flag,
                   check=True, env=env)
    one, two = json.load(open(single)), json.load(open(multi))

    print("\n== distributed: allreduce of float32, 2 ranks (median of alternating blocks; slower rank) ==")
    print(f"{'size':>8}  {'mpi4py Allreduce':>17}  {'needle all_reduce':>18}  {'overhead':>8}  "
          f"{'mpi4py on needle memory':>24}  {'needle layer':>12}")
    for row in two["allreduce"]:
        size = row["bytes"]
        name = f"{size >> 20} MB" if size >= 1 << 20 else f"{size >> 10} KB"
        over = row["needle_s"] / row["mpi4py_s"] - 1
        same = row["mpi4py_on_needle_memory_s"]
        extra = (f"{same * 1e3:>21.3f} ms  {row['needle_s'] / same - 1:>+12.0%}" if same else "")
        print(f"{name:>8}  {row['mpi4py_s'] * 1e3:>14.3f} ms  {row['needle_s'] * 1e3:>15.3f} ms  {over:>+8.0%}  "
              + extra)
    print("(overhead: vs mpi4py on a NumPy array; needle layer: vs mpi4py on the same needle buffer, "
          "i.e. what needle.distributed adds: the shape/arrival check)")
    print(f"\n== distributed: MLPResNet epoch ({one['samples']} samples, global batch {BATCH}) ==")
    print(f"1 process, all cores          : {one['epoch_s']:.2f} s")
    for row in two["ddp"]:
        hidden = 1 - row["exposed_wait_s"] / row["allreduce_alone_s"] if row["allreduce_alone_s"] > 0 else 0.0
        print(f"2 ranks x 1 core, {row['buckets']:<34}: {row['epoch_s']:.2f} s "
              f"({one['epoch_s'] / row['epoch_s']:.2f}x), {row['num_buckets']} bucket(s); allreduce alone "
              f"{row['allreduce_alone_s']:.2f} s, waited at the end of backward {row['exposed_wait_s']:.2f} s "
              f"(the other rank {row['max_wait_s']:.2f} s) -> hidden {max(0.0, hidden):.0%}")
    return {"single": one, "multi": two}


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        worker(sys.argv[2], "--quick" in sys.argv)
    elif sys.argv[1] == "--single":
        _single(sys.argv[2], "--quick" in sys.argv)
    else:
        report(quick="--quick" in sys.argv)
