"""needle.models' exported helpers that only the CLI reached before: the
parser's defaults, MNIST file discovery, building and running a task, ConvBN."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

import needle as ndl
from needle.models import cli, resnet9, train_tasks


def _write_mnist(folder, n=6, gz=True):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    for split in ("train", "t10k"):
        img = struct.pack(">IIII", 2051, n, 28, 28) + imgs.tobytes()
        lab = struct.pack(">II", 2049, n) + labels.tobytes()
        for stem, data in ((f"{split}-images-idx3-ubyte", img), (f"{split}-labels-idx1-ubyte", lab)):
            if gz:
                with gzip.open(folder / (stem + ".gz"), "wb") as f:
                    f.write(data)
            else:
                (folder / stem).write_bytes(data)
    return imgs, labels


def test_build_parser_defaults_follow_the_readme():
    args = cli.build_parser().parse_args([])
    assert (args.model, args.dataset, args.epochs, args.batch_size, args.lr) == ("mlp-resnet", "fashion-mnist",
                                                                                10, 128, 1e-3)
    args = cli.build_parser().parse_args(["--model", "cnn", "--epochs", "2", "--lr", "0.5"])
    assert (args.model, args.epochs, args.lr) == ("cnn", 2, 0.5)
    assert set(train_tasks.MODEL_DATASETS["mlp-resnet"]) == set(train_tasks.IMAGE_DATASETS)


def test_find_mnist_files_finds_gzip_and_plain_and_lists_what_is_missing(tmp_path):
    with pytest.raises(train_tasks.MissingDataError) as err:
        train_tasks.find_mnist_files(str(tmp_path))
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert stem in str(err.value)
    _write_mnist(tmp_path, gz=False)
    found = train_tasks.find_mnist_files(str(tmp_path))
    assert found[("train", "images")].endswith("train-images-idx3-ubyte")
    assert len(found) == 4


def test_build_task_runs_a_batch_with_real_loss(tmp_path):
    imgs, labels = _write_mnist(tmp_path, n=6)
    args = cli.build_parser().parse_args(["--model", "mlp_resnet", "--dataset", "mnist", "--data-dir",
                                          str(tmp_path), "--batch-size", "3"])
    task = train_tasks.build_task(args, ndl.cpu_numpy())
    assert isinstance(task, train_tasks.Task)
    assert (task.num_train_batches, task.num_test_batches) == (2, 2)
    batch = next(iter(task.test_batches()))
    loss, correct, count = task.forward(batch)
    assert count == 3 and 0 <= correct <= 3
    # 10 classes, fresh weights: the loss is near log(10), finite and positive
    assert 0.5 < float(loss.numpy()) < 20.0


def test_convbn_is_conv_batchnorm_relu():
    block = resnet9.ConvBN(2, 3, 3, 1, device=ndl.cpu_numpy())
    x = ndl.Tensor(np.random.default_rng(1).standard_normal((4, 2, 6, 6)).astype("float32"), device=ndl.cpu_numpy())
    y = block(x).numpy()
    assert y.shape == (4, 3, 6, 6)
    assert y.min() >= 0.0  # ReLU last
    # training-mode batch norm before the ReLU: each channel's pre-activation has mean 0, so
    # about half the outputs are zero and the rest positive
    assert 0.2 < (y == 0).mean() < 0.8


# ---------------------------------------------- names, data checks, epoch totals
def test_canonical_model_maps_old_spellings():
    assert train_tasks.canonical_model("mlp_resnet") == "mlp-resnet"
    assert train_tasks.canonical_model("lstm_lm") == "lstm-lm"
    assert train_tasks.canonical_model("cnn") == "cnn"
    assert set(train_tasks.MODEL_ALIASES.values()) <= set(train_tasks.MODEL_DATASETS)


def test_data_present_and_download_refusal(tmp_path):
    assert not train_tasks.data_present("mnist", str(tmp_path))
    _write_mnist(tmp_path)
    assert train_tasks.data_present("mnist", str(tmp_path))
    assert not train_tasks.data_present("ptb", str(tmp_path))
    (tmp_path / "train.txt").write_text("a b\n")
    assert not train_tasks.data_present("ptb", str(tmp_path))
    (tmp_path / "test.txt").write_text("a b\n")
    assert train_tasks.data_present("ptb", str(tmp_path))
    assert train_tasks.DOWNLOADABLE == ("cifar10", "ptb")
    with pytest.raises(train_tasks.MissingDataError, match="no downloader for mnist"):
        train_tasks.download_dataset("mnist")


def test_epoch_totals_and_count_correct():
    from needle.models.training import EpochTotals, count_correct

    logits = ndl.Tensor(np.array([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 3.0, 2.0]]))
    y = ndl.Tensor(np.array([1.0, 0.0, 0.0, 2.0]))
    assert count_correct(logits, y) == 2
    t = EpochTotals(loss_sum=6.0, correct=3, count=4)
    assert (t.mean_loss, t.accuracy, t.error) == (1.5, 0.75, 0.25)
    assert EpochTotals() == EpochTotals(0.0, 0, 0)
