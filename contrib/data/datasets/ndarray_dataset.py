"""A dataset over in-memory arrays."""

from __future__ import annotations

from needle.errors import ArgumentError, ArgumentTypeError, ShapeError

from ..data_basic import Dataset, check_index

__all__ = ["NDArrayDataset"]


class NDArrayDataset(Dataset):
    """Samples ``(a[i] for a in arrays)``; all arrays share their first axis.

    ``ds[i]`` accepts an int, a slice or an index array.
    """

    supports_index_arrays = True

    def __init__(self, *arrays):
        super().__init__()
        if not arrays:
            raise ArgumentError("NDArrayDataset: needs at least one array, got none")
        for k, a in enumerate(arrays):
            if not hasattr(a, "shape") or not hasattr(a, "__getitem__") or len(a.shape) == 0:
                raise ArgumentTypeError(f"NDArrayDataset: array {k} must be an array with a first axis, "
                                        f"got {type(a).__name__}")
        n = arrays[0].shape[0]
        for k, a in enumerate(arrays):
            if a.shape[0] != n:
                raise ShapeError(
                    f"NDArrayDataset: array {k} has {a.shape[0]} rows, array 0 has {n}; all must match"
                )
        self.arrays = arrays

    def __len__(self) -> int:
        return self.arrays[0].shape[0]

    def __getitem__(self, i):
        check_index("NDArrayDataset", i, len(self))
        return tuple(a[i] for a in self.arrays)
