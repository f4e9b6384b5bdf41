"""A dataset over in-memory arrays."""

from __future__ import annotations

from ..data_basic import Dataset

__all__ = ["NDArrayDataset"]


class NDArrayDataset(Dataset):
    """Samples ``(a[i] for a in arrays)``; all arrays share their first axis.

    ``ds[i]`` accepts an int, a slice or an index array.
    """

    supports_index_arrays = True

    def __init__(self, *arrays):
        super().__init__()
        if not arrays:
            raise ValueError("NDArrayDataset needs at least one array")
        n = arrays[0].shape[0]
        for k, a in enumerate(arrays):
            if a.shape[0] != n:
                raise ValueError(
                    f"NDArrayDataset: array {k} has {a.shape[0]} rows, array 0 has {n}; all must match"
                )
        self.arrays = arrays

    def __len__(self) -> int:
        return self.arrays[0].shape[0]

    def __getitem__(self, i):
        return tuple(a[i] for a in self.arrays)
