"""Peak memory of training steps, needle beside PyTorch, each in its own process.

    python benchmarks/memory_probe.py [--device cpu] [--steps 25] [--only smallcnn,resnet9]
    python benchmarks/compare.py memory

Workloads (issue 14): SmallCNN with Adam, batch 128 of 28x28x1; ResNet9 with
SGD (momentum 0.9), batch 128 of 32x32x3.  The data batch needs no gradient,
as a DataLoader's does not.

Each (framework, workload) runs in a fresh subprocess (``--worker``), so one
framework's allocator caches and import footprint never count against the
other.  The worker builds the model and the batch, takes the RSS as its
baseline, resets the kernel's high-water mark (``/proc/self/clear_refs``),
runs the steps with Python's collector left as it is by default, and
reports

* ``peak``: the high-water RSS during the steps minus the baseline -- the
  step's peak working memory (activations, gradients, optimizer state,
  allocator caches, any garbage not yet freed);
* ``end``:  RSS after the last step minus the baseline (what stays held).

Memory is deterministic enough that one run per cell is quoted; nothing here
asserts a size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/memory_probe.py`: import this folder as `benchmarks`
    sys.path[0] = os.path.dirname(os.path.abspath(sys.path[0]))

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("smallcnn", "resnet9")
BATCH = 128


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise OSError("no VmRSS in /proc/self/status")


def _hwm_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise OSError("no VmHWM in /proc/self/status")


def _reset_hwm() -> bool:
    """Set the RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _data(shape):
    rng = np.random.default_rng(0)
    return rng.random((BATCH,) + shape, dtype=np.float32), rng.integers(0, 10, BATCH)


def needle_step(workload, device):
    import needle as ndl
    from needle import nn
    from needle.models import ResNet9
    from needle.models.cnn import SmallCNN

    # PyTorch's rule for .grad (leaves only): the course's interior adjoints
    # hold each step's graph in cycles (see needle.autograd.KEEP_INTERIOR_GRADS)
    ndl.autograd.KEEP_INTERIOR_GRADS = False
    dev = ndl.device(device)
    np.random.seed(0)
    if workload == "smallcnn":
        x_np, y_np = _data((1, 28, 28))
        model = SmallCNN(device=dev)
        opt = ndl.optim.Adam(model.parameters(), lr=1e-3)
    else:
        x_np, y_np = _data((3, 32, 32))
        model = ResNet9(device=dev)
        opt = ndl.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.SoftmaxLoss()
    x = ndl.Tensor(x_np, device=dev, requires_grad=False)
    y = ndl.Tensor(y_np.astype(np.float32), device=dev, requires_grad=False)

    def step():
        opt.reset_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.numpy()
    return step


def torch_step(workload, threads):
    import torch
    from benchmarks.models_probe import torch_resnet9

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tnn = torch.nn
    if workload == "smallcnn":
        x_np, y_np = _data((1, 28, 28))
        model = tnn.Sequential(
            tnn.Conv2d(1, 32, 3, padding=1), tnn.BatchNorm2d(32), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(32, 64, 3, padding=1), tnn.BatchNorm2d(64), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Flatten(), tnn.Linear(64 * 7 * 7, 128), tnn.ReLU(), tnn.Dropout(0.25),
            tnn.Linear(128, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        x_np, y_np = _data((3, 32, 32))
        model = torch_resnet9(torch)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.tensor(x_np), torch.tensor(y_np)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def worker(framework, workload, steps, device, threads):
    """Runs in its own process: the JSON line of one cell."""
    step = needle_step(workload, device) if framework == "needle" else torch_step(workload, threads)
    base = _rss_kb()
    if _reset_hwm():
        for _ in range(steps):
            step()
        peak = _hwm_kb()
    else:  # no clear_refs: sample RSS after each step (misses in-step peaks)
        peak = base
        for _ in range(steps):
            step()
            peak = max(peak, _rss_kb())
    end = _rss_kb()
    return {"framework": framework, "workload": workload, "steps": steps,
            "base_mb": base / 1024, "peak_mb": (peak - base) / 1024, "end_mb": (end - base) / 1024}


def measure(framework, workload, steps=25, device="cpu", threads=2):
    """One cell, in a fresh interpreter; None when that framework is missing."""
    cmd = [sys.executable, "-m", "benchmarks.memory_probe", "--worker", framework, "--only", workload,
           "--steps", str(steps), "--device", device, "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    # from the repository root, where `benchmarks` is a package
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=os.path.dirname(HERE))
    if proc.returncode != 0:
        if "No module named 'torch'" in proc.stderr:
            return None
        raise RuntimeError(f"memory worker {framework}/{workload} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_cell(cells):
    """The run with the median peak (its end figure goes with it); None when missing."""
    cells = [c for c in cells if c is not None]
    if not cells:
        return None
    return sorted(cells, key=lambda c: c["peak_mb"])[len(cells) // 2]


def report(steps=25, device="cpu", only=None, threads=2, runs=3):
    """Each cell is the run with the median peak of ``runs`` fresh processes,
    needle's and PyTorch's alternating: PyTorch's peak for one workload moved
    between 114 and 165 MB from run to run on the development VM."""
    rows = []
    for workload in only or WORKLOADS:
        ours, theirs = [], []
        for _ in range(runs):
            ours.append(measure("needle", workload, steps, device, threads))
            theirs.append(measure("torch", workload, steps, device, threads))
        ours, theirs = _median_cell(ours), _median_cell(theirs)
        ratio = f"{ours['peak_mb'] / theirs['peak_mb']:.2f}x" if theirs else "-"
        rows.append([workload, f"{ours['peak_mb']:.0f} MB", f"{ours['end_mb']:.0f} MB",
                     f"{theirs['peak_mb']:.0f} MB" if theirs else "-",
                     f"{theirs['end_mb']:.0f} MB" if theirs else "-", ratio])
    header = ["workload", "needle peak", "needle end", "torch peak", "torch end", "peak ratio"]
    from benchmarks.benchmarks.kernels_report import print_table

    print_table(f"memory: RSS growth over {steps} training steps, batch {BATCH}, "
                f"needle {device} vs PyTorch CPU, one process each, median of {runs} runs", header, rows)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=["needle", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--only", default=None, help="comma-separated workloads: " + ",".join(WORKLOADS))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--device", default="cpu", help="needle device (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch / OpenMP threads")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per cell (the median is shown)")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    if args.worker:
        print(json.dumps(worker(args.worker, only[0], args.steps, args.device, args.threads)))
        return 0
    report(args.steps, args.device, only, args.threads, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
