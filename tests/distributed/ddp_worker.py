"""Run by tests/distributed/test_ddp.py under ``needle launch -n 2``: every
check of needle.distributed that needs two real ranks, in one launch (a
launch costs about a second).  Each rank writes ``rank<r>.json`` into the
folder given as argv[1]; the test asserts on them."""

import json
import os
import sys

import numpy as np

import needle as ndl
import needle.distributed as dist
from needle import nn
from needle.errors import DistributedError, ShapeError

out_dir = sys.argv[1]
dist.init_process_group(timeout=60)
rank, world = dist.get_rank(), dist.get_world_size()
results = {"rank": rank, "world": world, "backend": dist.get_backend()}
dev = ndl.cpu() if ndl.cpu().enabled() else ndl.cpu_numpy()


def mlp(dtype):
    return nn.Sequential(nn.Linear(6, 16, device=dev, dtype=dtype), nn.ReLU(),
                         nn.Linear(16, 16, device=dev, dtype=dtype), nn.ReLU(),
                         nn.Linear(16, 4, device=dev, dtype=dtype))


def cnn(dtype):
    return nn.Sequential(nn.Conv(2, 3, 3, device=dev, dtype=dtype), nn.ReLU(),
                         nn.Conv(3, 4, 3, stride=2, device=dev, dtype=dtype), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 3 * 3, 4, device=dev, dtype=dtype))


def grads_of(model, X, y, dtype):
    loss = nn.SoftmaxLoss()(model(ndl.Tensor(X, device=dev, dtype=dtype)), ndl.Tensor(y, device=dev))
    loss.backward()


def flat(tensors):
    return np.concatenate([t.numpy().ravel() for t in tensors])


def compare(name, build, shape, dtype, bucket_cap_mb):
    rng = np.random.default_rng(1)               # the same global batch on every rank
    X = rng.standard_normal((8,) + shape)
    y = rng.integers(0, 4, size=8)
    np.random.seed(0)
    ref = build(dtype)                           # single process, full batch
    grads_of(ref, X, y, dtype)
    np.random.seed(0 if rank == 0 else 100 + rank)   # rank 0 as the reference; the others differ
    model = build(dtype)
    before = flat(model.parameters())
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=bucket_cap_mb)
    after = flat(model.parameters())
    shard = slice(rank * 8 // world, (rank + 1) * 8 // world)
    grads_of(ddp, X[shard], y[shard], dtype)
    results[name] = {
        "max_grad_diff": float(np.abs(flat(p.grad for p in model.parameters())
                                      - flat(p.grad for p in ref.parameters())).max()),
        "init_changed": bool(np.abs(before - after).max() > 0),
        "params_equal_rank0_init": bool(np.array_equal(after, flat(ref.parameters()))),
        "buckets": ddp.bucket_sizes,
        "grad_dtype": str(model.parameters()[0].grad.dtype),
    }
    return ddp, model, X, y


def start_running_mean(model):
    # a running mean away from 0, so that the update's (1 - momentum) term counts
    for m in model.modules:
        if isinstance(m, nn.parallel.SyncBatchNorm):
            m.running_mean.data = ndl.Tensor(np.linspace(-1, 1, m.dim), device=dev, dtype="float64")


def mlp_bn(dtype):
    return nn.parallel.convert_sync_batchnorm(
        nn.Sequential(nn.Linear(6, 8, device=dev, dtype=dtype), nn.BatchNorm1d(8, device=dev, dtype=dtype),
                      nn.ReLU(), nn.Linear(8, 4, device=dev, dtype=dtype)))


def cnn_bn(dtype):
    return nn.parallel.convert_sync_batchnorm(
        nn.Sequential(nn.Conv(2, 3, 3, device=dev, dtype=dtype), nn.BatchNorm2d(3, device=dev, dtype=dtype),
                      nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4, device=dev, dtype=dtype)))


compare("mlp64", mlp, (6,), "float64", 25)
compare("mlp32", mlp, (6,), "float32", 25)
compare("cnn64", cnn, (2, 6, 6), "float64", 0.0005)   # tiny buckets: several allreduces in flight
compare("cnn32", cnn, (2, 6, 6), "float32", 25)

# SyncBatchNorm: the reference is the same model in one process on the full batch (where
# SyncBatchNorm is plain batch norm); DDP ranks see half the batch each
for name, build, shape, offset in (("syncbn_mlp64", mlp_bn, (6,), 0.0), ("syncbn_cnn64", cnn_bn, (2, 6, 6), 0.0),
                                   ("syncbn_mlp64_large_mean", mlp_bn, (6,), 1e4)):
    dist_world = dist._group
    dist._group = None                   # the reference: a process outside any group
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((8,) + shape) + offset, rng.integers(0, 4, size=8)
    np.random.seed(0)
    ref = build("float64")
    start_running_mean(ref)
    grads_of(ref, X, y, "float64")
    dist._group = dist_world
    np.random.seed(0)
    model = build("float64")
    start_running_mean(model)
    ddp = dist.DistributedDataParallel(model)
    shard = slice(rank * 8 // world, (rank + 1) * 8 // world)
    grads_of(ddp, X[shard], y[shard], "float64")
    bn_ref = [m for m in ref.modules if isinstance(m, nn.parallel.SyncBatchNorm)][0]
    bn_ddp = [m for m in model.modules if isinstance(m, nn.parallel.SyncBatchNorm)][0]
    results[name] = {
        "max_grad_diff": float(np.abs(flat(p.grad for p in model.parameters())
                                      - flat(p.grad for p in ref.parameters())).max()),
        "running_var_diff": float(np.abs(bn_ref.running_var.numpy() - bn_ddp.running_var.numpy()).max()),
        "running_mean_diff": float(np.abs(bn_ref.running_mean.numpy() - bn_ddp.running_mean.numpy()).max()),
        "max_grad_rel_diff": float(np.abs(flat(p.grad for p in model.parameters())
                                          - flat(p.grad for p in ref.parameters())).max()
                                   / np.abs(flat(p.grad for p in ref.parameters())).max()),
        "running_mean_moved": float(np.abs(bn_ddp.running_mean.numpy() - np.linspace(-1, 1, bn_ddp.dim)).max()),
    }

# SyncBatchNorm: a (B, C) input with C != dim or a 3-D input is a typed error on every rank
bad_bn = nn.parallel.SyncBatchNorm(3, device=dev, dtype="float64")
for name, shape in (("syncbn_wrong_channels", (4, 5)), ("syncbn_3d", (4, 3, 2))):
    try:
        bad_bn(ndl.Tensor(np.ones(shape), device=dev, dtype="float64"))
        results[name] = "no error"
    except ShapeError as exc:
        results[name] = str(exc)

# no_sync: two micro-batches accumulated locally, one reduction -> 2 x the full-batch mean gradient
ddp, model, X, y = compare("nosync_ref", mlp, (6,), "float64", 25)
ref_grads = flat(p.grad for p in model.parameters())
half = 8 // world // 2
base = rank * 8 // world
with ddp.no_sync():
    grads_of(ddp, X[base:base + half], y[base:base + half], "float64")
local_only = flat(p.grad for p in model.parameters())
grads_of(ddp, X[base + half:base + 2 * half], y[base + half:base + 2 * half], "float64")
results["no_sync"] = {
    "max_diff_vs_2x_full": float(np.abs(flat(p.grad for p in model.parameters()) - 2 * ref_grads).max()),
    "local_differs_across_ranks": None,
}
gathered = dist.all_gather(ndl.Tensor(local_only, dtype="float64"))
results["no_sync"]["local_differs_across_ranks"] = bool(np.abs(gathered[0].numpy() - gathered[1].numpy()).max() > 0)

# collectives on NDArrays and Tensors, each op
t = ndl.Tensor(np.arange(3.0) * (rank + 1), device=dev, dtype="float32")
results["sum"] = dist.all_reduce(t, "sum").numpy().tolist()
t = ndl.Tensor(np.arange(3.0) * (rank + 1), device=dev, dtype="float64")
results["avg"] = dist.all_reduce(t, "avg").numpy().tolist()
nd = ndl.NDArray(np.array([rank, -rank, 5.0]), device=dev)
dist.all_reduce(nd, "max")
results["max_ndarray"] = nd.numpy().tolist()
b = ndl.NDArray(np.full((2, 2), float(rank + 7)), device=dev)
dist.broadcast(b, src=1)
results["broadcast_src1"] = b.numpy().tolist()

# mismatched shapes: a typed error on every rank, no hang
try:
    dist.all_reduce(ndl.Tensor(np.zeros(3 + rank)), "sum")
    results["mismatch"] = "no error"
except ShapeError as exc:
    results["mismatch"] = str(exc)
# the same shape through a different op, a different call, a different source rank: MPI would
# reduce these without an error (garbage, or the wrong op on one rank)
mismatches = {
    "op": lambda: dist.all_reduce(ndl.Tensor(np.ones(3)), ["sum", "max"][rank]),
    "call": lambda: dist.all_reduce(ndl.Tensor(np.ones(3))) if rank == 0 else dist.broadcast(ndl.Tensor(np.ones(3))),
    "src": lambda: dist.broadcast(ndl.Tensor(np.ones(3)), src=rank),
    "dtype": lambda: dist.all_reduce(ndl.Tensor(np.ones(3), dtype=["float32", "float64"][rank])),
}
for name, call in mismatches.items():
    try:
        call()
        results[f"mismatch_{name}"] = "no error"
    except ShapeError as exc:
        results[f"mismatch_{name}"] = str(exc)
# and the group still works after them
results["after_mismatch"] = dist.all_reduce(ndl.Tensor(np.full(2, rank + 1.0)), "sum").numpy().tolist()

# BatchNorm buffers follow rank 0 at each training forward
np.random.seed(5)
bn_model = nn.Sequential(nn.Linear(6, 4, device=dev), nn.BatchNorm1d(4, device=dev))
bn = dist.DistributedDataParallel(bn_model)
bn(ndl.Tensor(np.random.default_rng(rank).standard_normal((4, 6)), device=dev))   # rank-specific stats
stats = dist.all_gather(bn_model.modules[1].running_mean)
results["bn_buffers_differ_after_local_update"] = bool(np.abs(stats[0].numpy() - stats[1].numpy()).max() > 0)
bn(ndl.Tensor(np.zeros((4, 6)), device=dev))   # broadcasts rank 0's stats, then the same update everywhere
stats = dist.all_gather(bn_model.modules[1].running_mean)
results["bn_buffers_equal_after_broadcast"] = bool(np.array_equal(stats[0].numpy(), stats[1].numpy()))

# eval mode set on the wrapped module (as training loops do): no collective in forward, so one rank
# may evaluate alone
bn_model.eval()
seq = dist._group_or_none().seq
bn(ndl.Tensor(np.zeros((4, 6)), device=dev))
results["eval_forward_collectives"] = dist._group_or_none().seq - seq

dist.barrier()
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump(results, f)
dist.destroy_process_group()
try:
    dist.get_rank()
    results["after_destroy"] = "no error"
except DistributedError:
    pass
