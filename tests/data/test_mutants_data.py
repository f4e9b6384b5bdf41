"""Tests written for mutants of ``contrib/data`` that the other data tests let
survive (scripts/mutation.sh, docs/testing.md "Mutation testing").  Each
checks a documented behaviour with real values: default arguments of the
course API, boundary cases of the validation, error messages naming the
value, and the one-call batch fetch of datasets that take index arrays."""

from __future__ import annotations

import importlib
import pickle

import numpy as np
import pytest

import needle as ndl
from needle.data import CIFAR10Dataset, DataLoader, RandomCrop, RandomFlipHorizontal
from needle.errors import DataFormatError


# -- transforms (course API §6) --------------------------------------------------
def test_random_flip_default_probability_is_one_half():
    img = np.arange(6, dtype=np.float32).reshape(1, 6, 1)
    tf = RandomFlipHorizontal()
    flips = []
    for seed in range(40):
        np.random.seed(seed)
        draw = np.random.rand()
        np.random.seed(seed)
        out = tf(img)
        flipped = np.array_equal(out, img[:, ::-1, :])
        assert flipped == (draw < 0.5), (seed, draw)
        flips.append(flipped)
    assert 0 < sum(flips) < 40  # both outcomes occurred


def test_random_flip_with_p_zero_never_flips_even_on_a_zero_draw(monkeypatch):
    # flip when rand() < p: a draw of exactly p (0.0 is a possible draw) does not flip
    img = np.arange(6, dtype=np.float32).reshape(1, 6, 1)
    monkeypatch.setattr(np.random, "rand", lambda: 0.0)
    np.testing.assert_array_equal(RandomFlipHorizontal(p=0.0)(img), img)
    monkeypatch.setattr(np.random, "rand", lambda: 0.25)
    np.testing.assert_array_equal(RandomFlipHorizontal(p=0.25)(img), img)
    np.testing.assert_array_equal(RandomFlipHorizontal(p=0.26)(img), img[:, ::-1, :])


def test_random_crop_default_padding_is_three():
    img = np.arange(1, 7 * 8 + 1, dtype=np.float32).reshape(7, 8, 1)
    padded = np.pad(img, ((3, 3), (3, 3), (0, 0)))
    tf = RandomCrop()
    for seed in range(10):
        np.random.seed(seed)
        sx, sy = np.random.randint(low=-3, high=4, size=2)
        np.random.seed(seed)
        np.testing.assert_array_equal(tf(img), padded[3 + sx:3 + sx + 7, 3 + sy:3 + sy + 8])


def test_random_crop_padding_zero_is_the_identity():
    img = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    np.random.seed(0)
    np.testing.assert_array_equal(RandomCrop(padding=0)(img), img)


# -- CIFAR-10 batch files ----------------------------------------------------------
def _batch(path, data, labels):
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": labels}, f, protocol=2)


def _cifar(folder, n=3, labels=None, data=None, seed=0):
    rng = np.random.RandomState(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8) if data is None else data
        lab = [int(v) for v in rng.randint(0, 10, size=n)] if labels is None else labels
        _batch(folder / name, d, lab)


def test_cifar_bad_data_dtype_is_named_in_the_error(tmp_path):
    _cifar(tmp_path, data=np.zeros((3, 3072), np.float32))
    with pytest.raises(DataFormatError, match="b'data' is float32"):
        CIFAR10Dataset(tmp_path, train=False)


@pytest.mark.parametrize("labels, why", [
    ([[1], [2, 3], [4]], "ragged: np.asarray cannot build an array"),
    (np.array([[1], [2], [3]]), "2-D integer labels"),
])
def test_cifar_labels_that_are_not_a_flat_integer_list(tmp_path, labels, why):
    _cifar(tmp_path, labels=labels)
    with pytest.raises(DataFormatError, match="flat list of integers"):
        CIFAR10Dataset(tmp_path, train=False)


def test_cifar_count_mismatch_names_both_counts(tmp_path):
    _cifar(tmp_path, n=2, labels=[1, 2, 3])
    with pytest.raises(DataFormatError, match="holds 2 images but 3 labels"):
        CIFAR10Dataset(tmp_path, train=False)


def test_cifar_keeps_p_as_given(tmp_path):
    _cifar(tmp_path)
    assert CIFAR10Dataset(tmp_path, train=False, p=0.25).p == 0.25
    assert CIFAR10Dataset(tmp_path, train=False).p == 0.5


class _Counting:
    """Counts a dataset's ``__getitem__`` calls (the DataLoader's fetches)."""

    def __init__(self, ds):
        self.calls = []
        cls = type(ds)
        counting = self

        class Wrapped(cls):
            def __getitem__(self, index):
                counting.calls.append(index)
                return super().__getitem__(index)

        ds.__class__ = Wrapped
        self.ds = ds


def test_cifar_loader_fetches_each_batch_in_one_call(tmp_path):
    # Dataset.supports_index_arrays: one __getitem__ per batch, same values as per sample
    _cifar(tmp_path, n=5)
    ds = CIFAR10Dataset(tmp_path, train=False)
    counted = _Counting(ds)
    batches = list(DataLoader(counted.ds, batch_size=2))
    assert len(counted.calls) == 3 and all(isinstance(c, np.ndarray) for c in counted.calls)
    np.testing.assert_allclose(np.concatenate([b[0].numpy() for b in batches]), ds.X)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), ds.y)


# -- MNIST IDX files ---------------------------------------------------------------
def _idx(path, magic, dims, payload):
    import struct
    path.write_bytes(struct.pack(">" + "I" * (1 + len(dims)), magic, *dims) + payload)
    return str(path)


def test_mnist_bad_magic_is_named_in_decimal_and_hex(tmp_path):
    from needle.data.datasets.mnist_dataset import read_idx_labels
    bad = _idx(tmp_path / "lab", 0x12345678, (2,), b"\x01\x02")
    with pytest.raises(DataFormatError, match=r"magic number is 305419896 \(0x12345678\), expected 2049 "
                                              r"\(0x00000801\)"):
        read_idx_labels(bad)


def test_mnist_loader_fetches_each_batch_in_one_call(tmp_path):
    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, size=(5, 4, 3)).astype(np.uint8)
    labels = rng.randint(0, 10, size=5).astype(np.uint8)
    ds = ndl.data.MNISTDataset(_idx(tmp_path / "img", 2051, (5, 4, 3), images.tobytes()),
                               _idx(tmp_path / "lab", 2049, (5,), labels.tobytes()))
    counted = _Counting(ds)
    batches = list(DataLoader(counted.ds, batch_size=2))
    assert len(counted.calls) == 3 and all(isinstance(c, np.ndarray) for c in counted.calls)
    np.testing.assert_allclose(np.concatenate([b[0].numpy() for b in batches]),
                               images.reshape(5, 4, 3, 1) / np.float32(255))
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), labels)


# -- Dataset, check_index, NDArrayDataset ---------------------------------------------
def test_dataset_applies_its_transforms_in_order():
    ds = ndl.data.Dataset(transforms=[lambda x: x + 1, lambda x: x * 2])
    np.testing.assert_array_equal(ds.apply_transforms(np.array([1.0, 3.0])), [4.0, 8.0])
    assert ds.apply_transforms(5) == 12
    untouched = np.array([1.0])
    assert ndl.data.Dataset().apply_transforms(untouched) is untouched


def test_dataset_index_array_flag_defaults():
    # a plain Dataset is read sample by sample; NDArrayDataset takes index arrays
    assert ndl.data.Dataset.supports_index_arrays is False
    assert ndl.data.NDArrayDataset.supports_index_arrays is True


def _nds(n=5):
    a = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return a, ndl.data.NDArrayDataset(a, np.arange(n, dtype=np.float32) * 10)


def test_dataset_index_bounds_are_exactly_minus_n_to_n_minus_1():
    from needle.errors import OutOfBoundsError
    a, ds = _nds(5)
    np.testing.assert_array_equal(ds[-5][0], a[0])
    np.testing.assert_array_equal(ds[4][0], a[4])
    np.testing.assert_array_equal(ds[np.int64(-5)][0], a[0])
    for bad in (5, -6, np.int32(5)):
        with pytest.raises(OutOfBoundsError, match=rf"index {int(bad)} is out of range for 5 samples "
                                                   r"\(valid: -5\.\.4\)"):
            ds[bad]
    # index arrays: the same bounds
    np.testing.assert_array_equal(ds[np.array([-5, 4])][0], a[[0, 4]])
    for bad in ([0, 5], [-6, 1], [-5, 7]):  # the message names the first index out of range
        with pytest.raises(OutOfBoundsError, match=rf"index {[b for b in bad if not -5 <= b < 5][0]} is out "
                                                   r"of range for 5 samples \(valid: -5\.\.4\)"):
            ds[np.array(bad)]


def test_dataset_refuses_a_boolean_index():
    # True would pass as the int 1, and NumPy would read a[True] as a new axis
    from needle.errors import ArgumentTypeError
    _, ds = _nds(5)
    for bad in (True, False, np.array([True, False, True, False, True])):
        with pytest.raises(ArgumentTypeError, match="index must be an int, a slice or an integer array"):
            ds[bad]


def test_ndarray_dataset_loader_fetches_each_batch_in_one_call():
    a, ds = _nds(5)
    counted = _Counting(ds)
    batches = list(DataLoader(counted.ds, batch_size=2))
    assert len(counted.calls) == 3 and all(isinstance(c, np.ndarray) for c in counted.calls)
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), a)


# -- DataLoader --------------------------------------------------------------------
def test_dataloader_defaults_one_sample_per_batch_in_order_float32():
    a, ds = _nds(3)
    loader = DataLoader(ds)
    assert len(loader) == 3 and loader.shuffle is False
    for i, (x, y) in enumerate(loader):
        assert x.shape == (1, 2) and x.dtype == "float32" and y.dtype == "float32"
        np.testing.assert_array_equal(x.numpy(), a[i:i + 1])
        np.testing.assert_array_equal(y.numpy(), [10.0 * i])


def test_dataloader_dtype_float64_keeps_the_values():
    a = np.array([[0.1], [1e-12], [3.0]], dtype=np.float64)
    (x,), = list(DataLoader(ndl.data.NDArrayDataset(a), batch_size=3, dtype="float64"))
    assert x.dtype == "float64"
    np.testing.assert_array_equal(x.numpy(), a)


def test_default_collate_wraps_a_single_array_sample():
    from needle.data.data_basic import default_collate
    out = default_collate([np.array([1.0, 2.0]), np.array([3.0, 4.0])])
    assert isinstance(out, tuple) and len(out) == 1
    np.testing.assert_array_equal(out[0], [[1, 2], [3, 4]])


def test_dataloader_accepts_the_smallest_valid_options():
    a, ds = _nds(4)
    loader = DataLoader(ds, batch_size=4, num_workers=1, prefetch_factor=1, pin_memory=True)
    assert loader.pin_memory is True and loader.prefetch_factor == 1
    (x, _), = list(loader)
    np.testing.assert_array_equal(x.numpy(), a)


def test_dataloader_pytorch_defaults():
    _, ds = _nds(3)
    loader = DataLoader(ds)
    assert loader.pin_memory is False and loader.prefetch_factor == 2 and loader.num_workers == 0
    assert loader.drop_last is False and loader.collate_fn is None and loader.sampler is None


class _IntOnly:
    """A duck-typed dataset (no Dataset base, no supports_index_arrays): ints only."""

    def __init__(self):
        self.calls = []

    def __len__(self):
        return 3

    def __getitem__(self, i):
        self.calls.append(i)
        if not isinstance(i, int):
            raise TypeError(f"int index expected, got {type(i).__name__}")
        return np.array([i, i], dtype=np.float32), i


def test_a_dataset_without_the_flag_is_read_sample_by_sample():
    ds = _IntOnly()
    (x, y), = list(DataLoader(ds, batch_size=3))
    assert ds.calls == [0, 1, 2]
    np.testing.assert_array_equal(x.numpy(), [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(y.numpy(), [0, 1, 2])


@pytest.mark.parametrize("name", ["numpy", "cpu"])
def test_dataloader_puts_batches_on_its_device(name):
    from tests.conftest import backend_device
    dev = backend_device(name)
    a, ds = _nds(4)
    x, y = next(iter(DataLoader(ds, batch_size=2, device=dev)))
    assert x.device == dev and y.device == dev
    np.testing.assert_array_equal(x.numpy(), a[:2])


def test_next_without_iter_starts_at_the_first_batch():
    a, ds = _nds(4)
    loader = DataLoader(ds, batch_size=3)
    x, _ = next(loader)
    np.testing.assert_array_equal(x.numpy(), a[:3])


class _PerProcess(ndl.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        import os
        from needle.data import get_worker_info
        info = get_worker_info()
        return np.array([os.getpid(), -1 if info is None else info.id], dtype=np.float64), i


def test_one_worker_fetches_in_a_worker_process():
    import os
    (x, _), = list(DataLoader(_PerProcess(), batch_size=2, num_workers=1, dtype="float64"))
    pids, ids = x.numpy()[:, 0], x.numpy()[:, 1]
    assert (pids != os.getpid()).all() and (ids == 0).all()
    (x, _), = list(DataLoader(_PerProcess(), batch_size=2, dtype="float64"))
    assert (x.numpy()[:, 0] == os.getpid()).all() and (x.numpy()[:, 1] == -1).all()


class _Unpicklable(ndl.data.Dataset):
    def __init__(self):
        super().__init__()
        self.fn = lambda i: np.float32(i)  # a lambda: cannot be pickled for a spawned worker

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return self.fn(i)


def test_multiprocessing_context_is_used():
    # fork (the default here) shares the dataset; spawn must pickle it, and a lambda cannot be
    (x,), = list(DataLoader(_Unpicklable(), batch_size=2, num_workers=1))
    np.testing.assert_array_equal(x.numpy(), [0, 1])
    with pytest.raises(Exception, match="pickle"):
        list(DataLoader(_Unpicklable(), batch_size=2, num_workers=1, multiprocessing_context="spawn"))


class _Seeds(ndl.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        from needle.data import get_worker_info
        info = get_worker_info()
        return np.array([info.seed, info.id], dtype=np.float64), i


@pytest.mark.parametrize("shuffle", [False, True])
def test_worker_seeds_are_one_main_process_draw_plus_the_worker_id(shuffle):
    # documented: base = np.random.randint(2**31), drawn after the shuffle permutation
    def base_for(seed, high):
        rs = np.random.RandomState(seed)
        if shuffle:
            rs.permutation(4)
        return rs.randint(high)
    # a seed whose draw tells randint(2**31) from randint(2**32) (they agree when the raw top bit is 0)
    seed = next(s for s in range(100) if base_for(s, 2**31) != base_for(s, 2**32))
    np.random.seed(seed)
    batches = list(DataLoader(_Seeds(), batch_size=1, shuffle=shuffle, num_workers=2, dtype="float64"))
    base = base_for(seed, 2**31)
    got = np.concatenate([b[0].numpy() for b in batches])
    np.testing.assert_array_equal(got[:, 0], base + got[:, 1])
    assert set(got[:, 1]) == {0, 1}


def test_batches_are_constants():
    # a data batch needs no gradient: backward must not spend work on it (PyTorch: requires_grad False)
    _, ds = _nds(4)
    for x, y in DataLoader(ds, batch_size=2):
        assert x.requires_grad is False and y.requires_grad is False
    (x,), = list(DataLoader(ndl.data.NDArrayDataset(np.ones((2, 2))), batch_size=2,
                            collate_fn=lambda samples: (np.stack([s[0] for s in samples]),)))
    assert x.requires_grad is False


def test_extract_tar_names_the_first_five_unsafe_members(tmp_path):
    import io
    import tarfile
    from needle.data.datasets.cifar10_dataset import extract_tar
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        for k in range(6):
            info = tarfile.TarInfo(f"../escape{k}.txt")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataFormatError) as info:
        extract_tar(path, tmp_path / "out")
    assert "'../escape4.txt']" in str(info.value) and "escape5" not in str(info.value)


# -- PTB -----------------------------------------------------------------------------
def test_corpus_reads_no_further_than_max_lines(tmp_path):
    # "at most the first max_lines lines": a bad byte far after them (beyond the
    # text reader's first buffer, which is decoded whole) is never read
    from needle.data.datasets.ptb_dataset import Dictionary, Corpus
    path = tmp_path / "train.txt"
    path.write_bytes(b"a b\nc\n" + b"filler words\n" * 20000 + b"\xff\xfe not utf-8\n")
    c = Corpus.__new__(Corpus)
    c.dictionary = Dictionary()
    assert c.tokenize(str(path), max_lines=2) == [0, 1, 2, 3, 2]
    with pytest.raises(DataFormatError, match="not UTF-8"):
        c.tokenize(str(path))


def test_batchify_and_get_batch_smallest_sizes():
    from needle.data.datasets.ptb_dataset import batchify, get_batch
    b = batchify(np.arange(5), 1, None, None)
    np.testing.assert_array_equal(b, [[0], [1], [2], [3], [4]])
    data, target = get_batch(b, 0, 1)
    np.testing.assert_array_equal(data.numpy(), [[0]])
    np.testing.assert_array_equal(target.numpy(), [1])
    # the last row that still has a next-word target: i = n - 2, L = 1
    data, target = get_batch(b, 3, 4)
    np.testing.assert_array_equal(data.numpy(), [[3]])
    np.testing.assert_array_equal(target.numpy(), [4])
    assert data.requires_grad is False and target.requires_grad is False


@pytest.mark.parametrize("i", [-1, -1000, -(2**70), 4])
def test_get_batch_rows_outside_the_batches_name_the_valid_range(i):
    from needle.errors import ArgumentError
    from needle.data.datasets.ptb_dataset import batchify, get_batch
    b = batchify(np.arange(10), 2, None, None)  # 5 rows
    with pytest.raises(ArgumentError, match=rf"row i={i} leaves no \(input, target\) pair in 5 rows "
                                            r"\(valid: 0 <= i <= 3\)"):
        get_batch(b, i, 2)


def test_get_batch_row_must_be_an_integer():
    from needle.errors import ArgumentTypeError
    from needle.data.datasets.ptb_dataset import get_batch
    with pytest.raises(ArgumentTypeError, match=r"get_batch: i must be an integer, got float 1.5"):
        get_batch(np.zeros((4, 2)), 1.5, 2)


def test_download_ptb_defaults_to_the_needle_cache_dir(tmp_path, monkeypatch, serve_folder):
    import hashlib
    from needle.data.datasets.ptb_dataset import download_ptb
    served = tmp_path / "served"
    served.mkdir()
    (served / "t.txt").write_text("a b\n")
    monkeypatch.setenv("NEEDLE_CACHE_DIR", str(tmp_path / "envcache"))
    digest = hashlib.sha256(b"a b\n").hexdigest()
    with serve_folder(served) as base:
        folder = download_ptb(urls={"train.txt": f"{base}/t.txt"}, sha256={"train.txt": digest})
    assert folder == str(tmp_path / "envcache" / "ptb")
    assert (tmp_path / "envcache" / "ptb" / "train.txt").read_text() == "a b\n"


# -- download --------------------------------------------------------------------------
@pytest.mark.parametrize("platform, env, parts", [
    ("win32", None, ("AppData", "Local", "needle")),
    ("win32", "LOCALAPPDATA", ("la", "needle")),
    ("darwin", None, ("Library", "Caches", "needle")),
    ("linux", None, (".cache", "needle")),
    ("linux", "XDG_CACHE_HOME", ("la", "needle")),
])
def test_default_cache_dir_per_platform(monkeypatch, tmp_path, platform, env, parts):
    from pathlib import Path
    dl = importlib.import_module("needle.data.download")  # needle.data.download is also the function
    for name in ("NEEDLE_CACHE_DIR", "LOCALAPPDATA", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    if env:
        monkeypatch.setenv(env, str(tmp_path / "home" / "la"))
    monkeypatch.setattr(dl.sys, "platform", platform)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    assert dl.default_cache_dir() == tmp_path.joinpath("home", *parts)


def test_download_streams_in_bounded_chunks(tmp_path, monkeypatch, serve_folder):
    # a 170 MB archive must never be held in memory whole: every read is bounded
    import hashlib
    import builtins
    import urllib.request
    dl = importlib.import_module("needle.data.download")
    payload = np.random.RandomState(0).bytes(3 << 20)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "big.bin").write_bytes(payload)
    sizes = []

    class Recorded:
        def __init__(self, inner):
            self.inner = inner

        def read(self, n=-1):
            sizes.append(n)
            return self.inner.read(n)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    real_urlopen, real_open = urllib.request.urlopen, builtins.open
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda *a, **k: Recorded(real_urlopen(*a, **k)))
    monkeypatch.setattr(dl, "open", lambda *a, **k: Recorded(real_open(*a, **k)), raising=False)
    digest = hashlib.sha256(payload).hexdigest()
    with serve_folder(tmp_path / "www") as base:
        path = dl.download(f"{base}/big.bin", digest, cache_dir=str(tmp_path / "c"))
        assert path.read_bytes() == payload
        fetched = list(sizes)
        sizes.clear()
        assert dl.download(f"{base}/big.bin", digest, cache_dir=str(tmp_path / "c")) == path  # cached: hashed
    for reads in (fetched, sizes):
        assert len(reads) >= 3 and all(isinstance(n, int) and 0 < n <= 4 << 20 for n in reads), reads


class _FakeResponse:
    """urlopen's result: ``chunks`` then, if given, an exception from read()."""

    def __init__(self, chunks, error=None, length=None):
        self.chunks, self.error = list(chunks), error
        self.headers = {} if length is None else {"Content-Length": str(length)}

    def read(self, n=-1):
        if self.chunks:
            return self.chunks.pop(0)
        if self.error is not None:
            raise self.error
        return b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fake_urlopen(monkeypatch, response, seen=None):
    dl = importlib.import_module("needle.data.download")

    def urlopen(url, timeout=None):
        if seen is not None:
            seen.append((url, timeout))
        return response
    monkeypatch.setattr(dl.urllib.request, "urlopen", urlopen)
    return dl


def test_download_default_timeout_is_60_seconds_and_nested_cache_dirs_are_made(tmp_path, monkeypatch):
    seen = []
    dl = _fake_urlopen(monkeypatch, _FakeResponse([b"abc"]), seen)
    path = dl.download("http://example.invalid/a.bin", None, cache_dir=str(tmp_path / "x" / "y" / "z"))
    assert seen == [("http://example.invalid/a.bin", 60.0)]
    assert path == tmp_path / "x" / "y" / "z" / "a.bin" and path.read_bytes() == b"abc"


def test_download_cut_short_names_the_bytes_received(tmp_path, monkeypatch):
    import http.client
    from needle.errors import DownloadError
    dl = _fake_urlopen(monkeypatch, _FakeResponse([b"0123456789"], http.client.IncompleteRead(b"xyz", 5)))
    with pytest.raises(DownloadError, match="transfer cut short after 13 bytes"):
        dl.download("http://example.invalid/a.bin", None, cache_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_download_url_must_be_a_string(tmp_path):
    from needle.errors import ArgumentError
    from needle.data import download
    with pytest.raises(ArgumentError, match="url must be a non-empty string, got 123"):
        download(123, None, filename="f.bin", cache_dir=str(tmp_path))


def test_download_trusts_a_cached_file_whose_md5_matches(tmp_path, monkeypatch):
    import hashlib
    dl = _fake_urlopen(monkeypatch, _FakeResponse([b"payload"]))
    md5 = hashlib.md5(b"payload").hexdigest()
    sha = hashlib.sha256(b"payload").hexdigest()
    path = dl.download("http://example.invalid/p.bin", sha, cache_dir=str(tmp_path), md5=md5)

    def offline(*a, **k):
        raise AssertionError("the cached file should have been used")
    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    assert dl.download("http://example.invalid/p.bin", sha, cache_dir=str(tmp_path), md5=md5) == path


# -- DistributedSampler ------------------------------------------------------------------
def test_sampler_default_seed_is_zero():
    from needle.data import DistributedSampler
    s = DistributedSampler(list(range(10)), num_replicas=2, rank=1)
    expected = np.random.default_rng(0).permutation(10)[1::2]
    np.testing.assert_array_equal(list(s), expected)


def test_sampler_refuses_one_of_num_replicas_rank_without_a_process_group():
    import needle.distributed as dist
    from needle.data import DistributedSampler
    from needle.errors import DistributedConfigError
    dist.destroy_process_group()
    for kwargs in ({"rank": 0}, {"num_replicas": 2}):
        with pytest.raises(DistributedConfigError, match="process group is not initialised"):
            DistributedSampler(list(range(4)), **kwargs)


def test_sampler_fills_in_what_is_not_given_from_the_process_group(monkeypatch):
    import needle.distributed as dist
    from needle.data import DistributedSampler
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(dist, "get_rank", lambda: 2)
    s = DistributedSampler(list(range(9)), shuffle=False)
    assert (s.num_replicas, s.rank, list(s)) == (3, 2, [2, 5, 8])
    s = DistributedSampler(list(range(9)), num_replicas=4, shuffle=False)
    assert (s.num_replicas, s.rank) == (4, 2)
    s = DistributedSampler(list(range(9)), rank=0, shuffle=False)
    assert (s.num_replicas, s.rank, list(s)) == (3, 0, [0, 3, 6])


def test_sampler_set_epoch_bounds():
    from needle.data import DistributedSampler
    from needle.errors import DistributedConfigError
    s = DistributedSampler(list(range(6)), num_replicas=2, rank=0, seed=3)
    s.set_epoch(5)
    s.set_epoch(0)
    np.testing.assert_array_equal(list(s), np.random.default_rng(3).permutation(6)[0::2])
    with pytest.raises(DistributedConfigError, match="epoch must be an integer >= 0, got -1"):
        s.set_epoch(-1)


# -- workers -------------------------------------------------------------------------------
def test_get_worker_info_is_none_in_the_main_process():
    from needle.data import get_worker_info
    assert get_worker_info() is None


def test_worker_info_is_read_only():
    import dataclasses
    from needle.data.workers import WorkerInfo
    info = WorkerInfo(id=1, num_workers=2, seed=5, dataset=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.id = 0
    assert (info.id, info.num_workers, info.seed) == (1, 2, 5)


class _Broken(ndl.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 0:
            raise ValueError("sample 0 is broken")
        return np.float32(i)


def test_an_error_on_the_first_batch_names_batch_0():
    with pytest.raises(ValueError, match=r"raised ValueError on batch 0"):
        list(DataLoader(_Broken(), batch_size=2, num_workers=1))


def test_workers_wait_for_a_slow_consumer():
    # a training step slower than the workers' queue poll: idle workers keep waiting for jobs
    import time
    ds = ndl.data.NDArrayDataset(np.arange(3, dtype=np.float32).reshape(3, 1))
    got = []
    for (x,) in DataLoader(ds, batch_size=1, num_workers=1, prefetch_factor=1):
        got.append(float(x.numpy()[0, 0]))
        time.sleep(1.2)
    assert got == [0.0, 1.0, 2.0]


class _Slow(ndl.data.Dataset):
    """Each sample takes longer than the main process's queue poll (0.5 s)."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        import time
        time.sleep(1.2)
        return np.float32(i)


def test_the_main_process_waits_for_a_slow_worker():
    got = [float(x.numpy()[0]) for (x,) in DataLoader(_Slow(), batch_size=1, num_workers=1)]
    assert got == [0.0, 1.0]


class _Exits(ndl.data.Dataset):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def __len__(self):
        return 4

    def __getitem__(self, i):
        import os
        import signal
        if i == 2:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(0)
        return np.float32(i)


@pytest.mark.parametrize("how, says", [("kill", "was killed by signal 9"), ("exit0", "exited with code 0")])
def test_a_worker_that_ends_mid_epoch_is_reported_with_how(how, says):
    from needle.data import DataLoaderWorkerError
    with pytest.raises(DataLoaderWorkerError, match=rf"worker 0 \(pid \d+\) {says} before the epoch ended"):
        list(DataLoader(_Exits(how), batch_size=1, num_workers=1))


class _Stuck(ndl.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        import time
        if i == 1:
            time.sleep(45)  # a sample that does not come in time (a hung network read)
        return np.float32(i)


def test_an_abandoned_epoch_terminates_a_stuck_worker_instead_of_waiting_for_it():
    # close() asks, waits about a second in all, then terminates: starting the next
    # epoch must not wait for the stuck sample (the 20 s bound only catches a hang)
    import time
    loader = DataLoader(_Stuck(), batch_size=1, num_workers=1, prefetch_factor=2)
    it = iter(loader)
    assert float(next(it)[0].numpy()[0]) == 0.0
    pool = loader._pool
    start = time.monotonic()
    loader._close_pool()
    assert time.monotonic() - start < 20
    assert [w.exitcode for w in pool.workers] == [-15]  # SIGTERM: it did not finish by itself
