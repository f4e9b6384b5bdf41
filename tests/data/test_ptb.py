"""PTB: Dictionary, Corpus, batchify, get_batch on generated text files, and
download_ptb against a local HTTP server (verified and unverified)."""

import hashlib

import numpy as np
import pytest

import needle as ndl
from needle.data import Corpus, Dictionary, batchify, get_batch
from needle.data.datasets.ptb_dataset import PTB_URLS, download_ptb
from needle.errors import ChecksumError, DataFormatError

TRAIN = " the cat sat \n a dog ran fast \n\n the dog sat \n"
TEST = " the bird flew \n a cat ran \n"


@pytest.fixture
def ptb_dir(tmp_path):
    (tmp_path / "train.txt").write_text(TRAIN)
    (tmp_path / "test.txt").write_text(TEST)
    return tmp_path


def test_dictionary():
    d = Dictionary()
    assert len(d) == 0
    assert d.add_word("a") == 0 and d.add_word("b") == 1 and d.add_word("a") == 0
    assert len(d) == 2 and d.idx2word == ["a", "b"] and d.word2idx == {"a": 0, "b": 1}


def test_corpus_tokenizes_train_then_test_with_one_dictionary(ptb_dir):
    c = Corpus(str(ptb_dir))
    words = ["the", "cat", "sat", "<eos>", "a", "dog", "ran", "fast", "bird", "flew"]
    assert c.dictionary.idx2word == words
    ids = {w: i for i, w in enumerate(words)}
    expected_train = [ids[w] for w in "the cat sat <eos> a dog ran fast <eos> <eos> "
                      "the dog sat <eos>".split()]
    assert c.train == expected_train  # the empty line still contributes <eos>
    assert c.test == [ids[w] for w in "the bird flew <eos> a cat ran <eos>".split()]
    assert len(c.dictionary) == 10


def test_corpus_max_lines(ptb_dir):
    c = Corpus(ptb_dir, max_lines=1)
    assert c.dictionary.idx2word == ["the", "cat", "sat", "<eos>", "bird", "flew"]
    assert c.train == [0, 1, 2, 3] and c.test == [0, 4, 5, 3]
    assert Corpus(ptb_dir, max_lines=0).train == []


def test_corpus_missing_file(tmp_path):
    (tmp_path / "train.txt").write_text(TRAIN)
    with pytest.raises(DataFormatError, match="test.txt"):
        Corpus(tmp_path)
    (tmp_path / "test.txt").write_bytes(b"\xff\xfe\xfa bad")
    with pytest.raises(DataFormatError, match="UTF-8"):
        Corpus(tmp_path)


def test_batchify_lays_runs_out_in_columns():
    data = list(range(23))
    b = batchify(data, 4, ndl.cpu_numpy(), "float32")
    assert isinstance(b, np.ndarray) and b.shape == (5, 4)
    for j in range(4):
        np.testing.assert_array_equal(b[:, j], data[j * 5:(j + 1) * 5])
    with pytest.raises(ValueError, match="batch_size"):
        batchify(data, 0, None, "float32")
    with pytest.raises(ValueError, match="fewer"):
        batchify([1, 2], 3, None, "float32")


def test_get_batch_shapes_values_and_last_short_batch():
    b = batchify(list(range(40)), 4, None, None)  # (10, 4)
    X, y = get_batch(b, 0, 3)
    assert isinstance(X, ndl.Tensor) and X.shape == (3, 4) and y.shape == (12,)
    assert X.dtype == "float32" and isinstance(X.cached_data, ndl.backend_ndarray.NDArray)
    np.testing.assert_array_equal(X.numpy(), b[0:3])
    np.testing.assert_array_equal(y.numpy(), b[1:4].reshape(-1))
    X, y = get_batch(b, 7, 5, device=ndl.cpu_numpy(), dtype="float64")
    assert X.shape == (2, 4) and y.shape == (8,)  # L = min(5, 10 - 1 - 7)
    assert X.dtype == "float64" and X.device == ndl.cpu_numpy()
    np.testing.assert_array_equal(y.numpy(), b[8:10].reshape(-1))
    with pytest.raises(ValueError, match="get_batch"):
        get_batch(b, 9, 5)


def test_download_ptb_from_local_server(tmp_path, serve_folder):
    served = tmp_path / "served"
    served.mkdir()
    (served / "ptb.train.txt").write_text(TRAIN)
    (served / "ptb.valid.txt").write_text(TEST)
    (served / "ptb.test.txt").write_text(TEST)
    sums = {n: hashlib.sha256((served / f"ptb.{n}").read_bytes()).hexdigest()
            for n in ("train.txt", "valid.txt", "test.txt")}
    with serve_folder(served) as base:
        urls = {n: f"{base}/ptb.{n}" for n in ("train.txt", "valid.txt", "test.txt")}
        folder = download_ptb(cache_dir=tmp_path / "cache", urls=urls, sha256=sums)
        c = Corpus(folder)
        assert c.dictionary.idx2word[:3] == ["the", "cat", "sat"]
        # unverified (no published SHA-256): still atomic, still loads
        folder2 = download_ptb(cache_dir=tmp_path / "cache2", urls=urls)
        assert Corpus(folder2).train == c.train
        with pytest.raises(ChecksumError):
            download_ptb(cache_dir=tmp_path / "cache3", urls=urls,
                         sha256={"train.txt": "f" * 64})
        missing = dict(urls, **{"train.txt": f"{base}/nope.txt"})
        with pytest.raises(OSError, match="404"):
            download_ptb(cache_dir=tmp_path / "cache4", urls=missing)
    assert not list((tmp_path / "cache4" / "ptb").glob("*.part"))


def test_default_urls_are_the_usual_raw_text_files():
    assert sorted(PTB_URLS) == ["test.txt", "train.txt", "valid.txt"]
    assert all(u.endswith("ptb." + n) for n, u in PTB_URLS.items())
