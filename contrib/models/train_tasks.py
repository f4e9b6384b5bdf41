"""Datasets and models behind ``needle train``.

A *task* bundles what the command needs for one (model, dataset) pair:
train/test batch iterables, the model and its ``forward`` for the epoch loop
of :mod:`.training`.  The command (:mod:`.cli`) uses this module; this module
knows nothing of the command.  Image tasks
(MNIST-format and CIFAR-10) yield ``(X, y)`` batches from a DataLoader;
language-model tasks (PTB) walk batchified token columns with truncated BPTT.
Models and datasets written by other contrib modules are looked up by name
at call time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import needle as ndl
import needle.nn as nn

from .simple_ml import bptt_windows, detach_state
from .training import count_correct

__all__ = ["MissingDataError", "IMAGE_DATASETS", "MODEL_DATASETS", "MODEL_ALIASES", "canonical_model",
           "DOWNLOADABLE", "download_dataset", "data_present", "find_mnist_files", "build_task", "Task"]

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IMAGE_DATASETS = ("fashion-mnist", "mnist", "cifar10")
# which datasets each model can train on
MODEL_DATASETS = {
    "mlp-resnet": ("fashion-mnist", "mnist", "cifar10"),
    "cnn": ("fashion-mnist", "mnist"),
    "resnet9": ("cifar10",),
    "lstm-lm": ("ptb",),
    "transformer-lm": ("ptb",),
}


#: older spellings still accepted on the command line (names are kebab-case)
MODEL_ALIASES = {"mlp_resnet": "mlp-resnet", "mlpresnet": "mlp-resnet", "lstm_lm": "lstm-lm",
                 "transformer_lm": "transformer-lm"}


def canonical_model(name: str) -> str:
    """The kebab-case model name for ``name`` or one of its old spellings."""
    return MODEL_ALIASES.get(name, name)


class MissingDataError(Exception):
    """The data folder lacks files the chosen dataset needs (message lists
    them and says how to get the data)."""


# how to get each dataset, appended to every missing-data message
HOW_TO_GET = {
    "fashion-mnist": ("get Fashion-MNIST with `apt install dataset-fashion-mnist` (Debian/Ubuntu: files in "
                      f"{DEBIAN_FASHION_MNIST}) or put the four IDX files of "
                      "https://github.com/zalandoresearch/fashion-mnist in --data-dir (needle has no "
                      "downloader for it)"),
    "mnist": ("put the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
              "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in --data-dir (needle has no "
              "downloader for MNIST)"),
    "cifar10": "pass --download to fetch CIFAR-10 into the needle cache, or point --data-dir at a "
               "cifar-10-batches-py folder",
    "ptb": "pass --download to fetch Penn Treebank into the needle cache, or point --data-dir at a folder "
           "with train.txt and test.txt",
}

#: datasets ``--download`` can fetch (their loaders carry a URL)
DOWNLOADABLE = ("cifar10", "ptb")


def download_dataset(dataset: str) -> str:
    """Fetch ``dataset`` into the needle cache (``$NEEDLE_CACHE_DIR`` or the
    user cache dir) and return its folder; looked up at call time so tests
    can replace the fetchers."""
    if dataset == "cifar10":
        from needle.data.datasets import cifar10_dataset

        return cifar10_dataset.download_cifar10()
    if dataset == "ptb":
        from needle.data.datasets import ptb_dataset

        return ptb_dataset.download_ptb()
    raise MissingDataError(f"--download: needle has no downloader for {dataset}; {HOW_TO_GET[dataset]}")


def default_data_dir(dataset: str) -> str:
    if dataset == "fashion-mnist":
        return DEBIAN_FASHION_MNIST
    return os.path.join("data", {"mnist": "mnist", "cifar10": "cifar-10-batches-py", "ptb": "ptb"}[dataset])


# -- MNIST-format files -----------------------------------------------------
_MNIST_PARTS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _candidates(stem: str) -> list[str]:
    # gzip as distributed, unpacked, and the "...-idx3.ubyte" spelling some mirrors use
    dotted = stem.replace("-ubyte", ".ubyte")
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def find_mnist_files(data_dir: str, dataset: str = "mnist") -> dict:
    """{(split, kind): path} for the four IDX files in ``data_dir``.

    Raises :class:`MissingDataError` listing every file that is absent.
    """
    found, missing = {}, []
    for key, stem in _MNIST_PARTS.items():
        for name in _candidates(stem):
            path = os.path.join(data_dir, name)
            if os.path.isfile(path):
                found[key] = path
                break
        else:
            missing.append(f"{stem}[.gz] ({key[0]} {key[1]})")
    if missing:
        present = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []
        where = f"{data_dir} does not exist" if not os.path.isdir(data_dir) else (
            f"{data_dir} holds: {', '.join(present) if present else 'nothing'}")
        raise MissingDataError(
            f"--data-dir {data_dir} lacks {len(missing)} MNIST-format file(s): " + "; ".join(missing)
            + f". {where}. An MNIST-format folder needs the train and t10k images and labels: "
            + HOW_TO_GET.get(dataset, HOW_TO_GET["mnist"]) + "."
        )
    return found


def _load_mnist_arrays(data_dir: str, model: str, dataset: str = "mnist"):
    from needle.data.datasets.mnist_dataset import parse_mnist_arrays

    files = find_mnist_files(data_dir, dataset)
    out = {}
    for split in ("train", "test"):
        images, labels = parse_mnist_arrays(files[(split, "images")], files[(split, "labels")])
        n, rows, cols = images.shape
        X = images.astype(np.float32) * np.float32(1 / 255.0)
        # the MLP takes flat rows; the CNN takes NCHW (one channel, so no transpose needed)
        X = X.reshape(n, rows * cols) if model == "mlp-resnet" else X.reshape(n, 1, rows, cols)
        out[split] = (X, labels)
    return out


# -- tasks ------------------------------------------------------------------
@dataclass
class Task:
    """One (model, dataset) pair, ready for ``training.run_epoch``."""

    model: nn.Module
    train_batches: Callable[[], "object"]  # () -> iterable of batches, fresh each epoch
    test_batches: Callable[[], "object"]
    num_train_batches: int
    num_test_batches: int
    forward: Callable  # batch -> (loss Tensor, correct int, count int)
    info: dict = field(default_factory=dict)
    set_epoch: Callable[[int], None] = lambda epoch: None  # the distributed sampler's shuffle
    # ``forward`` in three parts, for a step compiled with needle.jit (needle
    # train --jit), which may not read values on the host:
    # step_inputs(batch) -> the step's Tensor arguments (and None);
    # step_outputs(*inputs) -> (loss, logits, carried state or None), device ops only;
    # step_result(batch, logits, carry) -> (correct, count), read after the call
    step_inputs: Optional[Callable] = None
    step_outputs: Optional[Callable] = None
    step_result: Optional[Callable] = None


def _composed_forward(inputs, outputs, result):
    """``forward`` from its three parts, so eager and --jit run the same model code."""
    def forward(batch):
        loss, logits, carry = outputs(*inputs(batch))
        correct, count = result(batch, logits, carry)
        return loss, correct, count
    return forward


def _image_task(args, device, model):
    if args.dataset in ("fashion-mnist", "mnist"):
        arrays = _load_mnist_arrays(args.data_dir, args.model, args.dataset)
        train = ndl.data.NDArrayDataset(*arrays["train"])
        test = ndl.data.NDArrayDataset(*arrays["test"])
        in_dim = arrays["train"][0].shape[1] if args.model == "mlp-resnet" else None
    else:  # cifar10
        _check_files(args.data_dir, _CIFAR10_FILES, "CIFAR-10", "cifar10")
        train = ndl.data.CIFAR10Dataset(args.data_dir, train=True)
        test = ndl.data.CIFAR10Dataset(args.data_dir, train=False)
        in_dim = 3 * 32 * 32

    if model is None:
        model = _make_image_model(args.model, in_dim, device)
    net, set_epoch = model, (lambda epoch: None)
    world = getattr(args, "world_size", 1)
    if world > 1:  # needle train --nproc N: this rank's share of every global batch, DDP gradients
        sampler = ndl.data.DistributedSampler(train, seed=args.seed)
        train_loader = ndl.data.DataLoader(train, args.batch_size // world, device=device, sampler=sampler)
        net, set_epoch = ndl.distributed.DistributedDataParallel(model), sampler.set_epoch
    else:
        train_loader = ndl.data.DataLoader(train, args.batch_size, shuffle=True, device=device)
    test_loader = ndl.data.DataLoader(test, args.batch_size, shuffle=False, device=device)
    loss_fn = nn.SoftmaxLoss()
    flatten = args.model == "mlp-resnet" and args.dataset == "cifar10"

    def inputs(batch):
        return tuple(batch)

    def outputs(X, y):
        if flatten:
            X = X.reshape((X.shape[0], in_dim))
        logits = net(X)
        return loss_fn(logits, y), logits, None

    def result(batch, logits, carry):
        y = batch[1]
        return count_correct(logits, y), y.shape[0]

    return Task(model, lambda: iter(train_loader), lambda: iter(test_loader), len(train_loader),
                len(test_loader), _composed_forward(inputs, outputs, result),
                info={"train_size": len(train), "test_size": len(test)}, set_epoch=set_epoch,
                step_inputs=inputs, step_outputs=outputs, step_result=result)


def _make_image_model(name, in_dim, device):
    if name == "mlp-resnet":
        from .mlp_resnet import MLPResNet

        return MLPResNet(in_dim, 100, num_blocks=3, num_classes=10, device=device)
    if name == "cnn":
        return ndl.models.SmallCNN(device=device)
    if name == "resnet9":
        return ndl.models.ResNet9(device=device)
    raise ValueError(f"unknown image model {name!r}")


def _check_files(data_dir, names, what, dataset):
    missing = [n for n in names if not os.path.isfile(os.path.join(data_dir, n))]
    if missing:
        raise MissingDataError(f"--data-dir {data_dir} lacks {what} file(s): {', '.join(missing)}; "
                               f"{HOW_TO_GET[dataset]}")


def _lm_task(args, device, model):
    _check_files(args.data_dir, ["train.txt", "test.txt"], "Penn Treebank", "ptb")
    corpus = ndl.data.Corpus(args.data_dir)
    vocab = len(corpus.dictionary)
    train = ndl.data.batchify(corpus.train, args.batch_size, device=device, dtype="float32")
    test = ndl.data.batchify(corpus.test, args.batch_size, device=device, dtype="float32")
    if model is None:
        seq_model = "lstm" if args.model == "lstm-lm" else "transformer"
        model = ndl.models.LanguageModel(args.embedding_size, vocab, args.hidden_size, num_layers=args.num_layers,
                                         seq_model=seq_model, seq_len=args.bptt, device=device)
    loss_fn = nn.SoftmaxLoss()
    state = {"h": None}

    def windows(data):
        state["h"] = None  # each pass starts from a zero state
        return bptt_windows(data, args.bptt, device, "float32")

    # the carried state is an argument of the step, not read from ``state``
    # inside it: a compiled step's replay would read the captured window's
    # state otherwise
    def inputs(batch):
        X, y = batch
        return X, y, state["h"]

    def outputs(X, y, h):
        out, h = model(X, h)
        return loss_fn(out, y), out, h

    def result(batch, logits, h):
        y = batch[1]
        state["h"] = detach_state(h)  # carry the state forward but cut the graph at the window boundary
        return count_correct(logits, y), y.shape[0]

    n_windows = lambda data: len(range(0, data.shape[0] - 1, args.bptt))  # noqa: E731
    return Task(model, lambda: windows(train), lambda: windows(test), n_windows(train), n_windows(test),
                _composed_forward(inputs, outputs, result),
                info={"vocab_size": vocab, "train_tokens": len(corpus.train), "test_tokens": len(corpus.test)},
                step_inputs=inputs, step_outputs=outputs, step_result=result)


_CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def data_present(dataset: str, data_dir: str) -> bool:
    """Whether ``data_dir`` holds every file ``dataset`` needs."""
    try:
        if dataset in ("fashion-mnist", "mnist"):
            find_mnist_files(data_dir, dataset)
        elif dataset == "cifar10":
            _check_files(data_dir, _CIFAR10_FILES, "CIFAR-10", dataset)
        else:
            _check_files(data_dir, ["train.txt", "test.txt"], "Penn Treebank", dataset)
    except MissingDataError:
        return False
    return True


def build_task(args, device, model: Optional[nn.Module] = None) -> Task:
    """The Task for ``args.model`` on ``args.dataset`` (``model`` given: reuse it)."""
    if args.dataset == "ptb":
        return _lm_task(args, device, model)
    return _image_task(args, device, model)
