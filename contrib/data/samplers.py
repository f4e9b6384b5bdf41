"""Index samplers for ``DataLoader(..., sampler=...)``.

``DistributedSampler`` gives each rank of a data-parallel job its own share
of the dataset: the index list (shuffled by ``seed + epoch`` when ``shuffle``)
is padded by repeating its head until its length is a multiple of the world
size (or cut down to one, with ``drop_last``), and rank ``r`` takes
``indices[r::world]``.  Every rank then sees the same number of samples, so
every rank runs the same number of steps.  Shuffling draws from its own
generator, never from ``np.random``'s global state.
"""

from __future__ import annotations

import math

import numpy as np

from needle.errors import DistributedConfigError

__all__ = ["DistributedSampler"]


def _whole(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        return f"{name} must be an integer >= {low}, got {value!r}"
    return None


class DistributedSampler:
    """The indices of ``dataset`` that rank ``rank`` of ``num_replicas`` reads.

    ``num_replicas`` and ``rank`` default to the process group's world size
    and rank (``needle.distributed.init_process_group()`` must have run).
    Call :meth:`set_epoch` before each epoch so the shuffle differs per epoch
    and agrees across ranks.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        if num_replicas is None or rank is None:
            import needle.distributed as dist
            if not dist.is_initialized():
                raise DistributedConfigError(
                    "DistributedSampler: num_replicas/rank not given and the process group is not "
                    "initialised; call needle.distributed.init_process_group() or pass both")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        problem = _whole("num_replicas", num_replicas, 1) or _whole("rank", rank, 0) or _whole("seed", seed, 0)
        if problem is None and rank >= num_replicas:
            problem = f"rank must be in [0, num_replicas={num_replicas}), got {rank}"
        if problem:
            raise DistributedConfigError(f"DistributedSampler: {problem}")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Shuffle with ``seed + epoch`` from now on (same on every rank)."""
        problem = _whole("epoch", epoch, 0)
        if problem:
            raise DistributedConfigError(f"DistributedSampler.set_epoch: {problem}")
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            order = np.arange(n)
        if self.total_size > n:  # pad by repeating the head (cyclically if the world exceeds the data)
            order = np.concatenate([order, np.resize(order, self.total_size - n)]) if n else order
        else:
            order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples
