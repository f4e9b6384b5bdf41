"""CIFAR-10 in its "python version" format (course hw4), plus its download.

The archive ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/``
holding ``data_batch_1`` ... ``data_batch_5`` (training, 10,000 images each)
and ``test_batch``.  Each file is a pickled dict (protocol 2, written by
Python 2, so it is read with ``encoding="bytes"``) with ``b"data"``: uint8
``(n, 3072)`` rows of 1024 red, 1024 green, 1024 blue values in row-major
32x32 order, and ``b"labels"``: n ints in 0..9.

Loading is validated: a missing file, a truncated pickle, missing keys, a
wrong dtype/shape or a label count that differs from the image count raise
:class:`needle.errors.DataFormatError` naming the file.  The unpickler only
accepts the NumPy classes the format needs, so a malicious file cannot run
code.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
import tempfile

import numpy as np

from needle.errors import DataFormatError
from needle.validation import check_probability

from ..data_basic import Dataset, check_index

__all__ = ["CIFAR10Dataset", "load_cifar10_batch", "download_cifar10", "extract_tar",
           "CIFAR10_URL", "CIFAR10_MD5", "CIFAR10_SHA256", "CIFAR10_TRAIN_FILES",
           "CIFAR10_TEST_FILES"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# Published on https://www.cs.toronto.edu/~kriz/cifar.html.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
# Not published by the dataset authors.  This is the value Keras pins for the
# same URL (keras/datasets/cifar10.py, ``get_file(file_hash=...)``), and that
# several independent provenance records list beside the published MD5 above
# for the 170,498,071-byte archive.  It was not recomputed here (no network
# on the build machine); ``download_cifar10`` checks the MD5 as well, so a
# mismatch between the two would be caught.
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
_ROW = 3 * 32 * 32


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled NumPy array needs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def load_cifar10_batch(path):
    """``(data uint8 (n, 3072), labels int64 (n,))`` from one batch file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataFormatError(
            f"CIFAR10Dataset: {path} does not exist (expected a CIFAR-10 python batch; "
            f"download_cifar10() fetches and unpacks them)") from None
    except IsADirectoryError:
        raise DataFormatError(f"CIFAR10Dataset: {path} is a directory, expected a batch file") \
            from None
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # truncated/garbled pickles raise many types
        raise DataFormatError(
            f"CIFAR10Dataset: {path} is not a readable CIFAR-10 pickle batch "
            f"(truncated or corrupt: {type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataFormatError(f"CIFAR10Dataset: {path} holds a {type(batch).__name__}, "
                              f"expected a dict with keys b'data' and b'labels'")
    missing = [k for k in (b"data", b"labels") if k not in batch]
    if missing:
        raise DataFormatError(f"CIFAR10Dataset: {path} lacks key(s) {missing}; found "
                              f"{sorted(map(repr, batch))}, expected b'data' and b'labels'")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        what = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFormatError(f"CIFAR10Dataset: {path}: b'data' is {what}, expected a uint8 "
                              f"array of shape (n, {_ROW})")
    if data.ndim != 2 or data.shape[1] != _ROW:
        raise DataFormatError(f"CIFAR10Dataset: {path}: b'data' has shape {data.shape}, "
                              f"expected (n, {_ROW}) (3 channels x 32 x 32)")
    try:
        labels = np.asarray(batch[b"labels"])
    except Exception:
        labels = None
    if labels is None or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(f"CIFAR10Dataset: {path}: b'labels' must be a flat list of "
                              f"integers, got {type(batch[b'labels']).__name__}")
    if labels.shape[0] != data.shape[0]:
        raise DataFormatError(f"CIFAR10Dataset: {path} holds {data.shape[0]} images but "
                              f"{labels.shape[0]} labels; counts must match")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"CIFAR10Dataset: {path}: labels range from {labels.min()} to "
                              f"{labels.max()}, expected classes 0..9")
    return data, labels.astype(np.int64)


class CIFAR10Dataset(Dataset):
    """CIFAR-10 images as float32 ``(3, 32, 32)`` in [0, 1] with int labels.

    ``base_folder`` holds the batch files (``cifar-10-batches-py``).
    ``train`` selects ``data_batch_1..5`` (50,000 images) or ``test_batch``
    (10,000).  ``X`` is ``(N, 3, 32, 32)`` float32 = data / 255, ``y`` int64.
    ``ds[i]`` -> ``(image (3, 32, 32), label)``; transforms (which work on
    H x W x C images) see the image as ``(32, 32, 3)``.  ``p`` is accepted
    for the course signature and unused.
    """

    supports_index_arrays = True

    def __init__(self, base_folder, train, p=0.5, transforms=None):
        check_probability("CIFAR10Dataset", "p", p)
        super().__init__(transforms)
        base_folder = os.fspath(base_folder)
        if not os.path.isdir(base_folder):
            raise DataFormatError(f"CIFAR10Dataset: {base_folder} is not a directory (expected "
                                  f"the unpacked {CIFAR10_FOLDER} folder)")
        names = CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES
        parts = [load_cifar10_batch(os.path.join(base_folder, n)) for n in names]
        data = np.concatenate([d for d, _ in parts])
        self.X = (data.astype(np.float32) / 255.0).reshape(-1, 3, 32, 32)
        self.y = np.concatenate([lab for _, lab in parts])
        self.p = p

    def __len__(self):
        return self.X.shape[0]

    def _transform(self, img):
        # transforms expect H x W x C
        out = self.apply_transforms(img.transpose(1, 2, 0))
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    def __getitem__(self, index):
        check_index("CIFAR10Dataset", index, len(self))
        x = self.X[index]
        if self.transforms:
            x = self._transform(x) if x.ndim == 3 else np.stack([self._transform(i) for i in x])
        return x, self.y[index]


def _member_is_safe(member, root):
    if not (member.isfile() or member.isdir()):
        return False  # links, devices, fifos: never needed by a dataset archive
    target = os.path.realpath(os.path.join(root, member.name))
    return os.path.commonpath([target, root]) == root


def extract_tar(archive, dest):
    """Unpack a (gzipped) tar archive into ``dest``; only regular files and
    folders that stay inside ``dest`` are allowed.  Returns ``dest``."""
    archive, dest = os.fspath(archive), os.fspath(dest)
    root = os.path.realpath(dest)
    os.makedirs(root, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            bad = [m.name for m in members if not _member_is_safe(m, root)]
            if bad:
                raise DataFormatError(f"extract_tar: {archive} has unsafe members {bad[:5]} "
                                      f"(links, special files or paths leaving {dest})")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, members=members, filter="data")
            else:  # pragma: no cover - Python without PEP 706
                tar.extractall(root, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataFormatError(f"extract_tar: {archive} is not a readable tar archive "
                              f"({type(exc).__name__}: {exc})") from None
    return dest


def download_cifar10(cache_dir=None, url=CIFAR10_URL, sha256=CIFAR10_SHA256, md5=CIFAR10_MD5):
    """Download and unpack CIFAR-10; return the ``cifar-10-batches-py`` folder
    (pass it to ``CIFAR10Dataset``).

    The archive is kept in ``<cache>/cifar10`` and checked against ``sha256``
    (by ``needle.data.download``) and ``md5``; pass ``None`` to skip either
    check.  An already unpacked folder is reused.
    """
    from ..download import download

    folder_root = os.path.join(_cache_root(cache_dir), "cifar10")
    folder = os.path.join(folder_root, CIFAR10_FOLDER)
    if all(os.path.isfile(os.path.join(folder, n))
           for n in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES):
        return folder
    # the MD5 is checked inside download(): a mismatch keeps nothing under the final name
    archive = os.fspath(download(url, sha256, filename="cifar-10-python.tar.gz",
                                 cache_dir=folder_root, md5=md5))
    # unpack beside the final folder and move it into place whole: an
    # interrupted unpack never leaves a half folder that the check above trusts
    staging = tempfile.mkdtemp(prefix=".cifar10-unpack.", dir=folder_root)
    try:
        extract_tar(archive, staging)
        unpacked = os.path.join(staging, CIFAR10_FOLDER)
        if not os.path.isdir(unpacked):
            raise DataFormatError(f"download_cifar10: {archive} did not contain a "
                                  f"{CIFAR10_FOLDER}/ folder")
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.replace(unpacked, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _cache_root(cache_dir):
    if cache_dir is not None:
        return os.fspath(cache_dir)
    from ..download import default_cache_dir

    return os.fspath(default_cache_dir())
