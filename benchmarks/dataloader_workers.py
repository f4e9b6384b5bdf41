#!/usr/bin/env python
"""DataLoader epoch time with worker processes vs in-process loading.

    python benchmarks/dataloader_workers.py [--data DIR] [--workers 2] [--rounds 3]

One epoch over Fashion-MNIST's training set (``--data``, default
/usr/share/datasets/fashion-mnist; ``apt-get install dataset-fashion-mnist``)
with a per-sample transform (RandomCrop(2) + RandomFlipHorizontal), batch
128, shuffled.  Rounds alternate num_workers=0 and num_workers=N in one
process; the report gives the median of each and their ratio.  Nothing
asserts a time: the figure is for the notes (issue 18).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import needle as ndl


def epoch_seconds(loader) -> float:
    t0 = time.perf_counter()
    n = 0
    for x, y in loader:
        n += x.shape[0]
    assert n == len(loader.dataset)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    ds = ndl.data.MNISTDataset(os.path.join(args.data, "train-images-idx3-ubyte.gz"),
                               os.path.join(args.data, "train-labels-idx1-ubyte.gz"),
                               transforms=[ndl.data.RandomCrop(2), ndl.data.RandomFlipHorizontal()])
    np.random.seed(0)
    loaders = {0: ndl.data.DataLoader(ds, args.batch_size, shuffle=True),
               args.workers: ndl.data.DataLoader(ds, args.batch_size, shuffle=True, num_workers=args.workers)}
    times = {k: [] for k in loaders}
    for _ in range(args.rounds):
        for k, loader in loaders.items():
            times[k].append(epoch_seconds(loader))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"Fashion-MNIST train epoch ({len(ds)} samples, batch {args.batch_size}, RandomCrop+Flip per sample), "
          f"median of {args.rounds} alternating rounds; cpu count {os.cpu_count()}")
    for k, v in times.items():
        print(f"  num_workers={k}: {med[k]:.2f} s   (rounds: {', '.join(f'{t:.2f}' for t in v)})")
    print(f"  speed-up num_workers={args.workers} vs 0: {med[0] / med[args.workers]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
