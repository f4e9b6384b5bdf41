"""One MLPResNet training epoch (60,000 28x28 images, batch 128, Adam) on each
needle device beside the same model in PyTorch CPU, in one process.

Timed twice for needle: the model steps alone (forward, loss, backward, Adam)
over pre-batched tensors, and the full ``needle.models.mlp_resnet.epoch`` with
the course DataLoader (per-sample fetch and stacking included).  PyTorch runs
the same steps over pre-batched tensors.
"""

from __future__ import annotations

import statistics

import numpy as np

from benchmarks.benchmarks.timing import time_once

N_TRAIN, BATCH, DIM, HIDDEN, CLASSES = 60000, 128, 784, 100, 10


def _data(n):
    rng = np.random.default_rng(0)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, CLASSES, n).astype(np.uint8)


def needle_steps(device, n):
    import needle as ndl
    from needle.models.mlp_resnet import MLPResNet
    X, y = _data(n)
    np.random.seed(0)
    previous = ndl.set_default_device(device)  # the course model takes no device argument
    model = MLPResNet(DIM, HIDDEN)
    ndl.set_default_device(previous)
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_fn = ndl.nn.SoftmaxLoss()
    batches = [(ndl.Tensor(X[i:i + BATCH].reshape(-1, DIM), device=device, requires_grad=False),
                ndl.Tensor(y[i:i + BATCH], device=device, requires_grad=False)) for i in range(0, n, BATCH)]
    model.train()

    def run():
        for xb, yb in batches:
            opt.reset_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
    return time_once(run)


def needle_epoch(device, n):
    import needle as ndl
    from needle.models.mlp_resnet import MLPResNet, epoch
    X, y = _data(n)
    ds = ndl.data.NDArrayDataset(X, y)
    loader = ndl.data.DataLoader(ds, batch_size=BATCH, shuffle=True)
    np.random.seed(0)
    model = MLPResNet(DIM, HIDDEN)
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    return time_once(lambda: epoch(loader, model, opt))


def torch_steps(n):
    import torch
    torch.manual_seed(0)
    X, y = _data(n)

    def block(dim, hid):
        return torch.nn.Sequential(torch.nn.Sequential(
            torch.nn.Linear(dim, hid), torch.nn.BatchNorm1d(hid), torch.nn.ReLU(), torch.nn.Dropout(0.1),
            torch.nn.Linear(hid, dim), torch.nn.BatchNorm1d(dim)), torch.nn.ReLU())

    class Res(torch.nn.Module):
        def __init__(self, dim, hid):
            super().__init__()
            self.inner, self.act = block(dim, hid)[0], torch.nn.ReLU()

        def forward(self, x):
            return self.act(self.inner(x) + x)

    model = torch.nn.Sequential(torch.nn.Linear(DIM, HIDDEN), torch.nn.ReLU(),
                                *[Res(HIDDEN, HIDDEN // 2) for _ in range(3)], torch.nn.Linear(HIDDEN, CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X.reshape(-1, DIM)), torch.from_numpy(y.astype(np.int64))
    batches = [(Xt[i:i + BATCH], yt[i:i + BATCH]) for i in range(0, n, BATCH)]
    model.train()

    def run():
        for xb, yb in batches:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
    return time_once(run)


def report(quick=False):
    import needle
    import needle.backend_ndarray as nd
    from needle import discovery

    # PyTorch's .grad rule (leaves only), as needle train and the models
    # probe use: with the course's, every node keeps its adjoint and each
    # step's graph waits for the cyclic collector
    saved, needle.autograd.KEEP_INTERIOR_GRADS = needle.autograd.KEEP_INTERIOR_GRADS, False
    try:
        _report(quick, nd, discovery)
    finally:
        needle.autograd.KEEP_INTERIOR_GRADS = saved


def _report(quick, nd, discovery):
    n = 12800 if quick else N_TRAIN
    scale = N_TRAIN / n
    # medians of rounds that alternate needle and PyTorch (needle first: after
    # a BLAS call OpenBLAS's idle threads spin and slow a 2-thread kernel that
    # runs next); one round each moved the ratio by 0.3 between runs on a
    # shared VM whose speed drifts over seconds
    rounds = 3
    devices = [nd.device(info.devices[0]) for info in discovery.backend_infos() if info.available]
    times = {}
    for _ in range(rounds):
        for dev in devices:
            times.setdefault((dev, "steps"), []).append(needle_steps(dev, n) * scale)
            if dev == nd.default_device():
                times.setdefault((dev, "epoch"), []).append(needle_epoch(dev, n) * scale)
        try:
            times.setdefault("torch", []).append(torch_steps(n) * scale)
        except ImportError:
            pass
    med = lambda key: statistics.median(times[key]) if key in times else None  # noqa: E731
    t_torch = med("torch")
    print(f"\n== mlp: MLPResNet(784, 100, 3 blocks) epoch, {N_TRAIN} samples, batch {BATCH}, Adam"
          f"{' (extrapolated from %d samples)' % n if quick else ''}; PyTorch's .grad rule; "
          f"medians of {rounds} alternating rounds ==")
    print(f"pytorch cpu steps: {t_torch:.3f} s" if t_torch else "pytorch: not installed")
    for dev in devices:
        t_steps = med((dev, "steps"))
        ratio = f" = {t_steps / t_torch:.2f}x PyTorch's time" if t_torch else ""
        print(f"needle {dev}: steps {t_steps:.3f} s{ratio}")
        t_epoch = med((dev, "epoch"))
        if t_epoch is not None:
            ratio = f" = {t_epoch / t_torch:.2f}x" if t_torch else ""
            print(f"needle {dev}: full epoch() with DataLoader {t_epoch:.3f} s{ratio}")


if __name__ == "__main__":
    import sys
    report(quick="--quick" in sys.argv)
