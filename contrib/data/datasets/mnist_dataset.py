"""MNIST-format (IDX) image/label files, gzip-compressed or not.

IDX layout (all integers big-endian uint32): magic, then one count per
dimension, then the raw uint8 values.  Images: magic 2051 (0x00000803),
dims (count, rows, cols).  Labels: magic 2049 (0x00000801), dims (count,).
Every field is checked; a truncated or malformed file raises
:class:`needle.errors.DataFormatError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from needle.errors import DataFormatError

from ..data_basic import Dataset, check_index

__all__ = ["MNISTDataset", "read_idx_images", "read_idx_labels", "parse_mnist_arrays"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path) -> bytes:
    """Whole file content, gunzipped when it starts with the gzip magic."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataFormatError(f"{path}: corrupt or truncated gzip stream ({exc})") from None


def _read_idx(path, magic: int, ndim: int, what: str) -> np.ndarray:
    data = _read_bytes(path)
    path = os.fspath(path)
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise DataFormatError(
            f"{path}: file is {len(data)} bytes, too short for the {header}-byte IDX {what} header "
            f"(truncated or not an IDX file)"
        )
    fields = np.frombuffer(data, dtype=">u4", count=1 + ndim)
    if int(fields[0]) != magic:
        raise DataFormatError(
            f"{path}: magic number is {int(fields[0])} (0x{int(fields[0]):08x}), expected {magic} "
            f"(0x{magic:08x}) for IDX {what}"
        )
    dims = tuple(int(d) for d in fields[1:])
    if any(d == 0 for d in dims[1:]):
        raise DataFormatError(f"{path}: IDX {what} header gives a zero dimension {dims}")
    expected = math.prod(dims)  # Python ints: four 32-bit dims can overflow int64
    payload = len(data) - header
    if payload != expected:
        problem = "truncated" if payload < expected else "has trailing bytes"
        raise DataFormatError(
            f"{path}: {problem}: header declares {what} of shape {dims} = {expected} bytes of data, "
            f"file holds {payload}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_images(path) -> np.ndarray:
    """uint8 array ``(count, rows, cols)`` from an IDX image file."""
    return _read_idx(path, IMAGES_MAGIC, 3, "images")


def read_idx_labels(path) -> np.ndarray:
    """uint8 array ``(count,)`` from an IDX label file."""
    return _read_idx(path, LABELS_MAGIC, 1, "labels")


def parse_mnist_arrays(image_filename, label_filename) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, rows, cols), labels uint8 (N,)), counts checked to agree."""
    images = read_idx_images(image_filename)
    labels = read_idx_labels(label_filename)
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{os.fspath(image_filename)} holds {images.shape[0]} images but "
            f"{os.fspath(label_filename)} holds {labels.shape[0]} labels; counts must match"
        )
    return images, labels


class MNISTDataset(Dataset):
    """MNIST-format images as float32 ``(28, 28, 1)`` in [0, 1] with uint8 labels.

    ``ds[i]`` -> ``(x, y)``; a slice or index array gives ``(n, 28, 28, 1)``
    and ``(n,)``, transforms applied to each image in order.
    """

    supports_index_arrays = True

    def __init__(self, image_filename: str, label_filename: str, transforms=None):
        super().__init__(transforms)
        images, labels = parse_mnist_arrays(image_filename, label_filename)
        n, rows, cols = images.shape
        self.X = (images.astype(np.float32) / 255.0).reshape(n, rows, cols, 1)
        self.y = labels

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, index):
        check_index("MNISTDataset", index, len(self))
        x = self.X[index]
        if self.transforms:
            if x.ndim == 3:
                x = self.apply_transforms(x)
            else:
                x = np.stack([self.apply_transforms(img) for img in x])
        return x, self.y[index]
