"""CIFAR10Dataset on small batch files written in the real format (python
pickles with bytes keys), validation of malformed files, safe extraction and
the download helper against a local HTTP server."""

import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

import needle as ndl
from needle.data import CIFAR10Dataset
from needle.data.datasets.cifar10_dataset import (CIFAR10_MD5, CIFAR10_SHA256, CIFAR10_URL,
                                                  download_cifar10, extract_tar,
                                                  load_cifar10_batch)
from needle.errors import ChecksumError, DataFormatError

N_PER_BATCH = 4


def _write_batch(path, data, labels, **extra):
    batch = {b"batch_label": b"testing batch", b"data": data, b"labels": labels,
             b"filenames": [b"img_%d.png" % i for i in range(len(labels))]}
    batch.update(extra)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def make_cifar_folder(folder, n=N_PER_BATCH, seed=0):
    """Writes data_batch_1..5 and test_batch; returns {name: (data, labels)}."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        labels = [int(v) for v in rng.randint(0, 10, size=n)]
        _write_batch(folder / name, data, labels)
        written[name] = (data, labels)
    return written


def test_train_and_test_splits_have_the_documented_layout(tmp_path):
    written = make_cifar_folder(tmp_path / "cifar")
    train = CIFAR10Dataset(str(tmp_path / "cifar"), train=True)
    test = ndl.data.CIFAR10Dataset(tmp_path / "cifar", False)
    assert len(train) == 5 * N_PER_BATCH and len(test) == N_PER_BATCH
    assert train.X.shape == (5 * N_PER_BATCH, 3, 32, 32) and train.X.dtype == np.float32
    data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    np.testing.assert_array_equal(train.X, data.reshape(-1, 3, 32, 32) / np.float32(255))
    np.testing.assert_array_equal(train.y, labels)
    x, y = test[2]
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    # channel-major rows: the first 1024 values of a row are the red plane
    red = written["test_batch"][0][2, :1024] / np.float32(255)
    np.testing.assert_array_equal(x[0].ravel(), red)
    assert y == written["test_batch"][1][2]
    xs, ys = train[np.array([1, 7])]
    assert xs.shape == (2, 3, 32, 32) and list(ys) == [labels[1], labels[7]]


def test_transforms_see_hwc_images_and_results_come_back_chw(tmp_path):
    make_cifar_folder(tmp_path)
    seen = []

    def flip_w(img):
        seen.append(img.shape)
        return img[:, ::-1, :]

    ds = CIFAR10Dataset(tmp_path, train=False, transforms=[flip_w])
    x, _ = ds[1]
    assert seen == [(32, 32, 3)]
    np.testing.assert_array_equal(x, ds.X[1][:, :, ::-1])
    flip = ndl.data.RandomFlipHorizontal(p=1.0)
    ds2 = CIFAR10Dataset(tmp_path, train=False, transforms=[flip])
    np.testing.assert_array_equal(ds2[0][0], ds.X[0][:, :, ::-1])


def test_dataloader_batches(tmp_path):
    make_cifar_folder(tmp_path)
    loader = ndl.data.DataLoader(CIFAR10Dataset(tmp_path, train=True), batch_size=8)
    X, y = next(iter(loader))
    assert X.shape == (8, 3, 32, 32) and y.shape == (8,) and X.dtype == "float32"


@pytest.mark.parametrize("problem,match", [
    ("missing", "does not exist"),
    ("truncated", "truncated or corrupt"),
    ("not_pickle", "truncated or corrupt"),
    ("not_dict", "expected a dict"),
    ("no_labels", "lacks key"),
    ("float_data", "uint8"),
    ("bad_row", r"\(n, 3072\)"),
    ("count_mismatch", "counts must match"),
    ("label_range", "0..9"),
    ("labels_not_ints", "integers"),
    ("malicious", "not allowed"),
])
def test_malformed_batches_raise_data_format_error_naming_the_file(tmp_path, problem, match):
    make_cifar_folder(tmp_path)
    bad = tmp_path / "data_batch_3"
    data = np.zeros((N_PER_BATCH, 3072), dtype=np.uint8)
    labels = [0] * N_PER_BATCH
    if problem == "missing":
        bad.unlink()
    elif problem == "truncated":
        raw = bad.read_bytes()
        bad.write_bytes(raw[: len(raw) // 2])
    elif problem == "not_pickle":
        bad.write_bytes(b"this is not a pickle at all")
    elif problem == "not_dict":
        bad.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    elif problem == "no_labels":
        bad.write_bytes(pickle.dumps({b"data": data}, protocol=2))
    elif problem == "float_data":
        _write_batch(bad, data.astype(np.float32), labels)
    elif problem == "bad_row":
        _write_batch(bad, np.zeros((N_PER_BATCH, 3071), dtype=np.uint8), labels)
    elif problem == "count_mismatch":
        _write_batch(bad, data, labels[:-1])
    elif problem == "label_range":
        _write_batch(bad, data, [0, 1, 10, 2])
    elif problem == "labels_not_ints":
        _write_batch(bad, data, ["a", "b", "c", "d"])
    elif problem == "malicious":
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))
        bad.write_bytes(pickle.dumps({b"data": Evil(), b"labels": labels}, protocol=2))
    with pytest.raises(DataFormatError, match=match) as info:
        CIFAR10Dataset(tmp_path, train=True)
    assert "data_batch_3" in str(info.value)
    # the test split does not read the broken file
    assert len(CIFAR10Dataset(tmp_path, train=False)) == N_PER_BATCH


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(DataFormatError, match="not a directory"):
        CIFAR10Dataset(tmp_path / "nope", train=True)


def test_load_batch_returns_uint8_rows_and_int_labels(tmp_path):
    written = make_cifar_folder(tmp_path, n=3)
    data, labels = load_cifar10_batch(tmp_path / "test_batch")
    assert data.dtype == np.uint8 and data.shape == (3, 3072) and labels.dtype == np.int64
    np.testing.assert_array_equal(data, written["test_batch"][0])


def _make_archive(tmp_path):
    src = tmp_path / "src"
    written = make_cifar_folder(src / "cifar-10-batches-py", seed=3)
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    raw = archive.read_bytes()
    return served, written, hashlib.sha256(raw).hexdigest(), hashlib.md5(raw).hexdigest()


def test_download_extract_and_load_from_local_server(tmp_path, serve_folder):
    served, written, sha, md5 = _make_archive(tmp_path)
    cache = tmp_path / "cache"
    with serve_folder(served) as base:
        url = base + "/cifar-10-python.tar.gz"
        folder = download_cifar10(cache_dir=cache, url=url, sha256=sha, md5=md5)
        assert os.path.isdir(folder) and folder.endswith("cifar-10-batches-py")
        ds = CIFAR10Dataset(folder, train=False)
        np.testing.assert_array_equal(ds.y, written["test_batch"][1])
        # second call reuses the unpacked folder (works with the server gone, too)
    assert download_cifar10(cache_dir=cache, url=url, sha256=sha, md5=md5) == folder


def test_download_rejects_checksum_mismatch(tmp_path, serve_folder):
    served, _, sha, md5 = _make_archive(tmp_path)
    with serve_folder(served) as base:
        url = base + "/cifar-10-python.tar.gz"
        with pytest.raises(ChecksumError):
            download_cifar10(cache_dir=tmp_path / "c1", url=url, sha256="0" * 64, md5=md5)
        assert not (tmp_path / "c1" / "cifar10" / "cifar-10-batches-py").exists()
        with pytest.raises(ChecksumError, match="MD5"):
            download_cifar10(cache_dir=tmp_path / "c2", url=url, sha256=sha, md5="0" * 32)


def test_published_constants():
    assert CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"
    # the published archive's SHA-256 (the MD5 above is the one on the dataset page)
    assert CIFAR10_SHA256 == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"


def _tar_with(tmp_path, add):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        add(tar)
    return path


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_extract_tar_refuses_unsafe_members(tmp_path, kind):
    def add(tar):
        info = tarfile.TarInfo({"parent": "../escape.txt", "absolute": "/tmp/escape.txt",
                                "symlink": "link"}[kind])
        if kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            payload = b"x"
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

    archive = _tar_with(tmp_path, add)
    with pytest.raises(DataFormatError, match="unsafe"):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_extract_tar_reports_corrupt_archive(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataFormatError, match="bad.tar.gz"):
        extract_tar(bad, tmp_path / "out")
