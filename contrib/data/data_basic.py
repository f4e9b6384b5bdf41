"""Dataset and DataLoader (course API §6, docs/design.md)."""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from needle.autograd import Tensor

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


class DataLoader:
    """Iterates over ``dataset`` in batches of ``batch_size`` samples.

    Each batch is a tuple with one Tensor per dataset field, stacked on a new
    axis 0 (float32 by default, integer labels included), on ``device``
    (default device when None).  With ``shuffle``, every ``iter()`` draws one
    ``np.random.permutation(len(dataset))``; the last batch may be short.
    """

    def __init__(self, dataset: Dataset, batch_size: Optional[int] = 1, shuffle: bool = False,
                 device=None, dtype: str = "float32"):
        if batch_size is None or int(batch_size) < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
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
