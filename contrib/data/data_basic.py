"""Dataset and DataLoader (course API §6, docs/design.md)."""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from needle.autograd import Tensor
from needle.errors import ArgumentTypeError, EmptyDatasetError, OutOfBoundsError
from needle.validation import check_int

__all__ = ["Dataset", "DataLoader", "Dataloader"]


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


class DataLoader:
    """Iterates over ``dataset`` in batches of ``batch_size`` samples.

    Each batch is a tuple with one Tensor per dataset field, stacked on a new
    axis 0 (float32 by default, integer labels included), on ``device``
    (default device when None).  With ``shuffle``, every ``iter()`` draws one
    ``np.random.permutation(len(dataset))``; the last batch may be short.
    """

    def __init__(self, dataset: Dataset, batch_size: Optional[int] = 1, shuffle: bool = False,
                 device=None, dtype: str = "float32"):
        batch_size = check_int("DataLoader", "batch_size", batch_size, 1)
        if len(dataset) == 0:  # PyTorch's sampler refuses it too; a loop over nothing hides the bug
            raise EmptyDatasetError(f"DataLoader: dataset {type(dataset).__name__} is empty (len 0); "
                                    f"it needs at least one sample")
        self.dataset = dataset
        self.shuffle = shuffle
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        self.ordering = self._split(np.arange(len(dataset)))
        self._batch = 0

    def _split(self, order: np.ndarray) -> list:
        return np.array_split(order, range(self.batch_size, len(order), self.batch_size))

    def __len__(self) -> int:
        return len(self.ordering)

    def __iter__(self):
        if self.shuffle:
            self.ordering = self._split(np.random.permutation(len(self.dataset)))
        self._batch = 0
        return self

    def __next__(self):
        if self._batch >= len(self.ordering):
            raise StopIteration
        indices = self.ordering[self._batch]
        self._batch += 1
        return tuple(self._to_tensor(field) for field in self._fetch(indices))

    def _fetch(self, indices: np.ndarray) -> Iterable[np.ndarray]:
        if getattr(self.dataset, "supports_index_arrays", False):
            fields = self.dataset[indices]
            return fields if isinstance(fields, tuple) else (fields,)
        samples = [self.dataset[int(i)] for i in indices]
        samples = [s if isinstance(s, tuple) else (s,) for s in samples]
        return [np.stack([np.asarray(f) for f in field]) for field in zip(*samples)]

    def _to_tensor(self, array) -> Tensor:
        array = np.asarray(array)
        if array.dtype != self.dtype:
            array = array.astype(self.dtype)
        return Tensor(array, device=self.device, dtype=self.dtype, requires_grad=False)


#: The name the course notebook uses.
Dataloader = DataLoader
