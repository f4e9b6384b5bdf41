"""Dataset and DataLoader (course API §6, docs/design.md)."""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from needle.autograd import Tensor
from needle.errors import ArgumentError, ArgumentTypeError, EmptyDatasetError, OutOfBoundsError
from needle.validation import check_int

__all__ = ["Dataset", "DataLoader", "Dataloader", "default_collate"]


class Dataset:
    """Abstract dataset: ``ds[i]`` gives one sample (a tuple of fields), ``len(ds)`` the count.

    ``transforms`` is a list of callables applied in order by :meth:`apply_transforms`.
    A subclass whose ``__getitem__`` also accepts an integer index array and
    returns the fields stacked on axis 0 (with transforms applied per sample,
    in index order) may set ``supports_index_arrays = True``; the DataLoader
    then fetches a batch in one call instead of one call per sample.
    """

    supports_index_arrays = False

    def __init__(self, transforms: Optional[list] = None):
        self.transforms = transforms

    def __getitem__(self, index):  # pragma: no cover - abstract
        raise NotImplementedError()

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError()

    def apply_transforms(self, x):
        if self.transforms is not None:
            for tform in self.transforms:
                x = tform(x)
        return x


def check_index(call: str, index, n: int) -> None:
    """A dataset index (int, slice or integer array) inside ``[-n, n)``: an
    out-of-range one is an OutOfBoundsError (an IndexError, so ``for x in ds``
    still stops) naming the dataset, the index and the valid range."""
    if isinstance(index, slice):
        return
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        if not -n <= int(index) < n:
            raise OutOfBoundsError(f"{call}: index {int(index)} is out of range for {n} samples "
                                   f"(valid: {-n}..{n - 1})")
        return
    arr = np.asarray(index)
    if arr.dtype.kind not in "iu":
        raise ArgumentTypeError(f"{call}: index must be an int, a slice or an integer array, got "
                                f"{type(index).__name__} {index!r}")
    if arr.size and (arr.min() < -n or arr.max() >= n):
        bad = arr[(arr < -n) | (arr >= n)].ravel()[0]
        raise OutOfBoundsError(f"{call}: index {int(bad)} is out of range for {n} samples "
                               f"(valid: {-n}..{n - 1})")
def default_collate(samples: list) -> tuple:
    """Stack each field of ``samples`` (tuples, or single arrays) on a new axis 0: a tuple of NumPy arrays."""
    samples = [s if isinstance(s, tuple) else (s,) for s in samples]
    return tuple(np.stack([np.asarray(f) for f in field]) for field in zip(*samples))


def fetch_batch(dataset, indices: np.ndarray, collate_fn=None):
    """The collated batch of ``dataset`` at ``indices`` (runs in a worker when num_workers > 0).

    A dataset with ``supports_index_arrays`` is read in one call when the
    default collation is used; otherwise sample by sample, then ``collate_fn``
    (``default_collate`` when None) builds the batch.
    """
    if collate_fn is None and getattr(dataset, "supports_index_arrays", False):
        fields = dataset[indices]
        return fields if isinstance(fields, tuple) else (fields,)
    samples = [dataset[int(i)] for i in indices]
    return (collate_fn or default_collate)(samples)


class DataLoader:
    """Iterates over ``dataset`` in batches of ``batch_size`` samples.

    Each batch is a tuple with one Tensor per dataset field, stacked on a new
    axis 0 (float32 by default, integer labels included), on ``device``
    (default device when None).  With ``shuffle``, every ``iter()`` draws one
    ``np.random.permutation(len(dataset))``; the last batch may be short.

    PyTorch-style options (docs/for-pytorch-users.md):

    - ``drop_last``: leave out a last batch shorter than ``batch_size``.
    - ``collate_fn(samples) -> batch``: builds a batch from the list of
      samples; NumPy arrays in what it returns (a tuple, list or dict, or one
      array) become Tensors as above, anything else is passed through.
    - ``num_workers > 0``: samples are fetched, transformed and collated in
      that many worker processes (started at each ``iter()``, stopped at the
      end of the epoch, on an error and on Ctrl-C); batches still come in
      order.  Worker ``i`` seeds NumPy's and Python's global RNGs with
      ``base + i``, where ``base`` is one ``np.random.randint(2**31)`` drawn in
      the main process per epoch (after the shuffle permutation), so random
      transforms differ between workers and epochs but repeat under
      ``np.random.seed``.  ``worker_init_fn(worker_id)`` runs in each worker
      after seeding.  ``multiprocessing_context``: ``"fork"`` (the default
      where available), ``"spawn"`` or ``"forkserver"`` -- the latter two
      need a picklable dataset and ``collate_fn``.
    - ``pin_memory``: accepted and ignored (needle copies host arrays to the
      device when it wraps a batch; there is no pinned staging buffer).
    """

    def __init__(self, dataset: Dataset, batch_size: Optional[int] = 1, shuffle: bool = False,
                 device=None, dtype: str = "float32", *, drop_last: bool = False, collate_fn=None,
                 num_workers: int = 0, pin_memory: bool = False, worker_init_fn=None,
                 prefetch_factor: int = 2, multiprocessing_context=None, sampler=None):
        batch_size = check_int("DataLoader", "batch_size", batch_size, 1)
        if sampler is not None and shuffle:
            raise ArgumentError("DataLoader: sampler and shuffle=True exclude each other; the sampler decides "
                                "the order (DistributedSampler(shuffle=True) shuffles)")
        num_workers = check_int("DataLoader", "num_workers", num_workers, 0)
        prefetch_factor = check_int("DataLoader", "prefetch_factor", prefetch_factor, 1)
        if collate_fn is not None and not callable(collate_fn):
            raise ArgumentTypeError(f"DataLoader: collate_fn must be callable, got {type(collate_fn).__name__}")
        if len(dataset) == 0:  # PyTorch's sampler refuses it too; a loop over nothing hides the bug
            raise EmptyDatasetError(f"DataLoader: dataset {type(dataset).__name__} is empty (len 0); "
                                    f"it needs at least one sample")
        self.dataset = dataset
        self.shuffle = shuffle
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn
        self.num_workers = num_workers
        self.pin_memory = pin_memory  # accepted for PyTorch code; nothing to pin
        self.worker_init_fn = worker_init_fn
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        # sampler: an iterable of indices, re-iterated at every __iter__ (e.g. DistributedSampler)
        self.sampler = sampler
        if sampler is None:
            self.ordering = self._split(np.arange(len(dataset)))
        else:
            self.ordering = self._split(np.fromiter(iter(sampler), dtype=np.int64))
        self._batch = 0
        self._pool = None

    def _split(self, order: np.ndarray) -> list:
        if self.drop_last:
            order = order[: len(order) - len(order) % self.batch_size]
        return np.array_split(order, range(self.batch_size, len(order), self.batch_size))

    def __len__(self) -> int:
        return len(self.ordering)

    def __iter__(self):
        self._close_pool()
        if self.shuffle:
            self.ordering = self._split(np.random.permutation(len(self.dataset)))
        elif self.sampler is not None:
            self.ordering = self._split(np.fromiter(iter(self.sampler), dtype=np.int64))
        self._batch = 0
        if self.num_workers > 0 and len(self.ordering):
            from .workers import WorkerPool
            fetch = functools.partial(fetch_batch, collate_fn=self.collate_fn)
            self._pool = WorkerPool(self.dataset, self.ordering, fetch, self.num_workers,
                                    base_seed=int(np.random.randint(2**31)), worker_init_fn=self.worker_init_fn,
                                    context=self.multiprocessing_context, prefetch_factor=self.prefetch_factor)
        return self

    def __next__(self):
        if self._batch >= len(self.ordering):
            self._close_pool()
            raise StopIteration
        indices = self.ordering[self._batch]
        self._batch += 1
        if self._pool is not None:
            try:
                batch = self._pool.next_batch()
            except BaseException:  # a worker's error or Ctrl-C ends the epoch (its workers are gone)
                self._close_pool()
                self._batch = len(self.ordering)
                raise
        else:
            batch = fetch_batch(self.dataset, indices, self.collate_fn)
        if self.collate_fn is None:
            return tuple(self._to_tensor(field) for field in batch)
        return self._wrap(batch)

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __del__(self):
        try:
            self._close_pool()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _wrap(self, value):
        """NumPy arrays inside a custom collate_fn's batch become Tensors."""
        if isinstance(value, np.ndarray):
            return self._to_tensor(value)
        if isinstance(value, tuple):
            return tuple(self._wrap(v) for v in value)
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        if isinstance(value, dict):
            return {k: self._wrap(v) for k, v in value.items()}
        return value

    def _to_tensor(self, array) -> Tensor:
        array = np.asarray(array)
        if array.dtype != self.dtype:
            array = array.astype(self.dtype)
        return Tensor(array, device=self.device, dtype=self.dtype, requires_grad=False)


#: The name the course notebook uses.
Dataloader = DataLoader
