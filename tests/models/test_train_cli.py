"""``needle train``: outputs, resume, and clear failures on unusable data (exit code 2, no traceback)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
from needle.models.cli import train_command


def make_mnist_folder(folder, n_train=200, n_test=100, seed=0):
    """Tiny separable MNIST-format files (gzip IDX): class k lights up rows 2k..2k+2."""
    import gzip
    import struct

    rng = np.random.RandomState(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.randint(0, 10, size=n).astype(np.uint8)
        images = rng.randint(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k : 2 * k + 3, :] = 250
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())
    return folder

SHARED_MNIST = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    return make_mnist_folder(folder, n_train=300, n_test=100)


def _run(args):
    return train_command([str(a) for a in args])


def test_train_writes_metrics_curves_and_weights(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = _run(["--dataset", "mnist", "--data-dir", data_dir, "--epochs", 2, "--batch-size", 32, "--lr", 0.01,
                 "--out", out, "--seed", 3])
    assert code == 0
    printed = capsys.readouterr().out
    assert "final train accuracy" in printed and "test accuracy" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    for e in metrics["epochs"]:
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "train_time_s", "train_samples_per_s"):
            assert np.isfinite(e[key]) and e[key] >= 0
    assert metrics["args"]["batch_size"] == 32 and metrics["num_parameters"] == 110860
    assert metrics["data"] == {"train_size": 300, "test_size": 100}
    assert metrics["final"]["test_acc"] == metrics["epochs"][-1]["test_acc"] > 0.9  # separable toy data
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # model.npz loads back into a fresh model and reproduces the reported test accuracy
    model = ndl.models.MLPResNet(784, 100)
    model.load_state_dict(ndl.load(out / "model.npz"))
    model.eval()
    ds = ndl.data.MNISTDataset(str(data_dir / "t10k-images-idx3-ubyte.gz"), str(data_dir / "t10k-labels-idx1-ubyte.gz"))
    x, y = ds[np.arange(len(ds))]
    logits = model(ndl.Tensor(x.reshape(len(ds), 784), requires_grad=False)).numpy()
    assert np.mean(logits.argmax(1) == y) == pytest.approx(metrics["final"]["test_acc"])


def test_resume_continues_where_it_stopped(data_dir, tmp_path):
    common = ["--dataset", "mnist", "--data-dir", data_dir, "--batch-size", 50, "--seed", 1, "--no-progress"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert _run(common + ["--epochs", 3, "--out", full]) == 0
    assert _run(common + ["--epochs", 1, "--out", part]) == 0
    assert _run(common + ["--epochs", 3, "--out", part, "--resume"]) == 0
    a = json.loads((full / "metrics.json").read_text())["epochs"]
    b = json.loads((part / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in b] == [1, 2, 3]
    for ea, eb in zip(a, b):  # weights, optimizer state and RNG all restored: identical trajectory
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert ea[key] == pytest.approx(eb[key], rel=1e-5), key
    wa, wb = ndl.load(full / "model.npz"), ndl.load(part / "model.npz")
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_resume_without_checkpoint_fails_cleanly(data_dir, tmp_path, capsys):
    code = _run(["--dataset", "mnist", "--data-dir", data_dir, "--out", tmp_path / "empty", "--resume"])
    assert code == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_folder_without_train_split_lists_missing_files(tmp_path, capsys):
    folder = tmp_path / "partial"
    folder.mkdir()
    make_mnist_folder(folder)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    code = _run(["--dataset", "mnist", "--data-dir", folder, "--out", tmp_path / "o"])
    err = capsys.readouterr().err
    assert code == 2
    assert "train-images-idx3-ubyte[.gz] (train images)" in err
    assert "t10k-images" not in err.split("holds:")[0]  # only the missing file is listed as missing
    assert "Traceback" not in err


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist not present")
def test_shared_mnist_test_split_only_gives_exit_2():
    # run as the real command in a subprocess: the message must come without a traceback
    proc = subprocess.run(
        [sys.executable, "-m", "needle.cli", "train", "--dataset", "mnist", "--data-dir", str(SHARED_MNIST),
         "--out", "/nonexistent-not-created"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "train-images-idx3-ubyte[.gz] (train images)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_uncompressed_files_are_accepted(data_dir, tmp_path):
    import gzip

    plain = tmp_path / "plain"
    plain.mkdir()
    for gz in data_dir.iterdir():
        (plain / gz.name[:-3]).write_bytes(gzip.decompress(gz.read_bytes()))
    assert _run(["--dataset", "mnist", "--data-dir", plain, "--epochs", 1, "--max-batches", 2,
                 "--out", tmp_path / "o", "--no-progress"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet9", "--dataset", "mnist"], "model resnet9 does not train on mnist"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--device", "no-such-device"], "no-such-device"),
    ],
)
def test_bad_arguments_exit_2(argv, message, data_dir, tmp_path, capsys):
    code = _run(["--dataset", "mnist", "--data-dir", data_dir, "--out", tmp_path / "o"] + argv)
    assert code == 2
    assert message in capsys.readouterr().err


def test_argparse_errors_return_code_instead_of_exiting(capsys):
    assert train_command(["--model", "nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert train_command(["--help"]) == 0


def test_corrupt_data_file_is_reported(data_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(data_dir, bad)
    raw = (bad / "train-labels-idx1-ubyte.gz").read_bytes()
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    assert _run(["--dataset", "mnist", "--data-dir", bad, "--out", tmp_path / "o"]) == 2
    assert "train-labels-idx1-ubyte.gz: corrupt or truncated gzip" in capsys.readouterr().err


def test_needle_command_runs_train_through_entry_point(data_dir, tmp_path):
    """``needle train`` as users type it: the core command finds us through the needle.commands entry point."""
    out = tmp_path / "cmd"
    proc = subprocess.run(
        [sys.executable, "-m", "needle.cli", "train", "--dataset", "mnist", "--data-dir", str(data_dir),
         "--epochs", "1", "--max-batches", "3", "--batch-size", "20", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "final train accuracy" in proc.stdout
    assert "samples_s=" in proc.stderr  # the tqdm bar's postfix: loss, acc, samples/s
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "curves.png", "model.npz", "checkpoint.npz"}


def _write_cifar(folder, n=40, seed=0):
    import pickle

    rng = np.random.RandomState(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = rng.randint(0, 10, size=n)
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels.tolist()}, f)
    return folder


def test_mlp_resnet_on_generated_cifar10(tmp_path):
    folder = tmp_path / "cifar"
    folder.mkdir()
    _write_cifar(folder)
    out = tmp_path / "o"
    assert _run(["--model", "mlp_resnet", "--dataset", "cifar10", "--data-dir", folder, "--epochs", 1,
                 "--batch-size", 25, "--out", out, "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == {"train_size": 200, "test_size": 40}
    assert metrics["num_parameters"] == 3072 * 100 + 100 + 3 * 10450 + 1010


def test_cifar10_folder_missing_batches(tmp_path, capsys):
    folder = tmp_path / "cifar"
    folder.mkdir()
    _write_cifar(folder)
    (folder / "data_batch_3").unlink()
    assert _run(["--model", "resnet9", "--dataset", "cifar10", "--data-dir", folder, "--out", tmp_path / "o"]) == 2
    assert "lacks CIFAR-10 file(s): data_batch_3" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["lstm-lm", "transformer-lm"])
def test_language_models_on_generated_ptb(tmp_path, model):
    folder = tmp_path / "ptb"
    folder.mkdir()
    words = "the cat sat on the mat and the dog sat on the log".split()
    lines = [" ".join(words[i % 5 : i % 5 + 6]) for i in range(60)]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "test.txt").write_text("\n".join(lines[:15]) + "\n")
    out = tmp_path / "o"
    code = _run(["--model", model, "--dataset", "ptb", "--data-dir", folder, "--epochs", 2, "--batch-size", 4,
                 "--bptt", 8, "--embedding-size", 16, "--hidden-size", 16, "--lr", 0.01, "--out", out,
                 "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    vocab = len({w for line in lines for w in line.split()}) + 1  # + <eos>
    assert metrics["data"]["vocab_size"] == vocab
    first, last = metrics["epochs"]
    # learns: loss falls, and ends below a uniform guess over the vocabulary
    assert last["train_loss"] < first["train_loss"] and last["train_loss"] < np.log(vocab)
    assert 0 <= last["test_acc"] <= 1


def test_small_cnn_on_mnist_format_data(data_dir, tmp_path):
    out = tmp_path / "cnn"
    assert _run(["--model", "cnn", "--dataset", "mnist", "--data-dir", data_dir, "--epochs", 1, "--max-batches", 2,
                 "--batch-size", 16, "--out", out, "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"][0]["train_loss"] > 0
    model = ndl.models.SmallCNN()
    model.load_state_dict(ndl.load(out / "model.npz"))  # names and shapes agree with a fresh SmallCNN


def test_checkpoint_sections_round_trip_without_magic_offsets():
    from needle.models.cli import _under_prefix, _with_prefix

    model = {"0.weight": 1, "schedule.like": 2}
    optim = {"t": 3, "m.0": 4}
    state = {**_with_prefix("model", model), **_with_prefix("optim", optim), "epoch": 5,
             "models.other": 6}  # a longer prefix sharing the first letters is not a section
    assert _under_prefix("model", state) == model
    assert _under_prefix("optim", state) == optim
    assert _under_prefix("schedule", state) == {}


def test_evaluation_epochs_record_no_graph():
    """training.run_epoch evaluates under no_grad: no loss keeps a graph."""
    from needle.models.training import run_epoch

    model = ndl.nn.Linear(3, 2)
    x = ndl.Tensor(np.ones((4, 3), dtype=np.float32))
    y = ndl.Tensor(np.array([0, 1, 0, 1], dtype=np.float32))
    seen = []

    def forward(batch):
        loss = ndl.nn.SoftmaxLoss()(model(batch), y)
        seen.append(loss)
        return loss, 0, 4

    totals = run_epoch([x, x], forward, model)
    assert not model.training and totals.count == 8 and totals.correct == 0
    assert all(loss.op is None and not loss.requires_grad for loss in seen)
    totals = run_epoch([x], forward, model, ndl.optim.SGD(model.parameters(), lr=0.1))
    assert model.training and seen[-1].op is not None and model.weight.grad is not None
def _corrupt_checkpoint(path, how):
    state = ndl.load(path)
    if how == "not a zip":
        path.write_bytes(b"garbage")
        return
    if how == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
        return
    if how == "config not json":
        state["config"] = np.asarray("{not json")
    elif how == "config a list":
        state["config"] = np.asarray("[1, 2]")
    elif how == "epoch an array":
        state["epoch"] = np.arange(3)
    elif how == "history a number":
        state["history"] = np.asarray("7")
    elif how == "rng keys wrong shape":
        state["rng.keys"] = np.zeros(5, dtype=np.uint32)
    elif how == "weight as strings":
        key = next(k for k in state if k.startswith("model."))
        state[key] = np.full(state[key].shape, "x")
    elif how == "optimizer lr text":
        state["optim.lr"] = np.asarray("fast")
    elif how == "missing epoch":
        del state["epoch"]
    ndl.save(state, path)


@pytest.mark.parametrize("how", ["not a zip", "truncated", "config not json", "config a list", "epoch an array",
                                 "history a number", "rng keys wrong shape", "weight as strings",
                                 "optimizer lr text", "missing epoch"])
def test_resume_with_malformed_checkpoint_fails_cleanly(data_dir, tmp_path, capsys, how):
    common = ["--dataset", "mnist", "--data-dir", data_dir, "--batch-size", 100, "--no-progress",
              "--out", tmp_path / "run"]
    assert _run(common + ["--epochs", 1]) == 0
    _corrupt_checkpoint(tmp_path / "run" / "checkpoint.npz", how)
    capsys.readouterr()
    code = _run(common + ["--epochs", 2, "--resume"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--resume: cannot use" in err and "checkpoint.npz" in err and "Traceback" not in err


# --------------------------------------------------------------------------- #
# issue 18: defaults in --help, model names, --download, resume header, file
# modes, interrupt message, per-step curves
# --------------------------------------------------------------------------- #
def test_help_shows_the_defaults(capsys):
    assert train_command(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "L2 weight decay (default: 0.001)" in text
    assert "(default: cosine)" in text and "(default: adam)" in text and "(default: mlp-resnet)" in text
    assert "initial learning rate (default: 0.001)" in text and "(default: 10)" in text


@pytest.mark.parametrize("name, canonical", [("mlp-resnet", "mlp-resnet"), ("mlp_resnet", "mlp-resnet"),
                                             ("lstm_lm", "lstm-lm"), ("transformer-lm", "transformer-lm")])
def test_model_names_kebab_case_and_old_spellings(name, canonical):
    from needle.models.cli import MODELS, build_parser

    assert all("_" not in m for m in MODELS)
    args = build_parser().parse_args(["--model", name])
    assert args.model == canonical


def test_download_is_refused_for_datasets_without_a_url(tmp_path, capsys):
    code = _run(["--dataset", "fashion-mnist", "--download", "--out", tmp_path / "o"])
    err = capsys.readouterr().err
    assert code == 2 and "no downloader for fashion-mnist" in err and "apt install dataset-fashion-mnist" in err


@pytest.mark.parametrize("dataset, hint", [("mnist", "put the four MNIST IDX files"),
                                           ("fashion-mnist", "apt install dataset-fashion-mnist"),
                                           ("cifar10", "pass --download"), ("ptb", "pass --download")])
def test_missing_data_says_how_to_get_it(tmp_path, capsys, dataset, hint):
    model = {"cifar10": "resnet9", "ptb": "lstm-lm"}.get(dataset, "mlp-resnet")
    code = _run(["--model", model, "--dataset", dataset, "--data-dir", tmp_path / "nothing",
                 "--out", tmp_path / "o"])
    err = capsys.readouterr().err
    assert code == 2 and hint in err and "Traceback" not in err


def test_download_fetches_into_the_cache_and_trains(tmp_path, monkeypatch, capsys):
    """--download calls the dataset's downloader (replaced here: no network in tests) and trains from
    the folder it returns."""
    from needle.data.datasets import ptb_dataset

    fetched = tmp_path / "cache" / "ptb"
    calls = []

    def fake_download_ptb(cache_dir=None, urls=None, sha256=None):
        calls.append(cache_dir)
        fetched.mkdir(parents=True, exist_ok=True)
        lines = ["a b c d e f"] * 30
        (fetched / "train.txt").write_text("\n".join(lines) + "\n")
        (fetched / "test.txt").write_text("\n".join(lines[:10]) + "\n")
        return str(fetched)

    monkeypatch.setattr(ptb_dataset, "download_ptb", fake_download_ptb)
    out = tmp_path / "o"
    code = _run(["--model", "lstm-lm", "--dataset", "ptb", "--data-dir", tmp_path / "empty", "--download",
                 "--epochs", 1, "--batch-size", 2, "--bptt", 4, "--embedding-size", 8, "--hidden-size", 8,
                 "--out", out, "--no-progress"])
    assert code == 0 and calls == [None]
    assert f"using {fetched}" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["args"]["data_dir"] == str(fetched)


def test_resume_header_prints_the_lr_in_use(data_dir, tmp_path, capsys):
    common = ["--dataset", "mnist", "--data-dir", data_dir, "--batch-size", 100, "--no-progress",
              "--out", tmp_path / "r", "--lr", 0.01, "--max-batches", 1]
    assert _run(common + ["--epochs", 1]) == 0
    first = capsys.readouterr().out
    assert "adam lr 0.01 wd" in first
    assert _run(common + ["--epochs", 3, "--resume"]) == 0
    printed = capsys.readouterr().out
    # cosine over 3 epochs after 1: 0.01 * (1 + cos(pi/3)) / 2
    lr = 0.01 * (1 + np.cos(np.pi / 3)) / 2
    assert f"adam lr {lr:g} (schedule cosine from --lr 0.01, resumed at epoch 2)" in printed
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["epochs"][1]["lr"] == pytest.approx(lr)


def test_files_are_written_with_the_umask_mode(data_dir, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        out = tmp_path / "m"
        assert _run(["--dataset", "mnist", "--data-dir", data_dir, "--epochs", 1, "--max-batches", 1,
                     "--out", out, "--no-progress"]) == 0
        os.umask(0o027)
        out2 = tmp_path / "m2"
        assert _run(["--dataset", "mnist", "--data-dir", data_dir, "--epochs", 1, "--max-batches", 1,
                     "--out", out2, "--no-progress"]) == 0
    finally:
        os.umask(old)
    for name in ("checkpoint.npz", "model.npz", "metrics.json", "curves.png"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
        assert (out2 / name).stat().st_mode & 0o777 == 0o640, name


def test_interrupt_names_the_checkpoint_and_the_resume_command(data_dir, tmp_path, capsys, monkeypatch):
    import needle.models.training as training

    real = training.run_epoch
    calls = {"n": 0}

    def interrupted_in_epoch_2(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 1 train, epoch 1 test, then epoch 2 train
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(training, "run_epoch", interrupted_in_epoch_2)
    out = tmp_path / "ctrl-c"
    argv = ["--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "3", "--max-batches", "2",
            "--out", str(out), "--no-progress"]
    assert train_command(argv) == 130
    err = capsys.readouterr().err
    ckpt = out / "checkpoint.npz"
    assert f"interrupted during epoch 2; the checkpoint {ckpt} holds epoch 1" in err
    resume_line = err.strip().splitlines()[-1].strip()
    assert resume_line.startswith("needle train ") and resume_line.endswith("--resume")
    import shlex

    monkeypatch.setattr(training, "run_epoch", real)
    assert train_command(shlex.split(resume_line)[2:]) == 0  # the printed command works
    assert [e["epoch"] for e in json.loads((out / "metrics.json").read_text())["epochs"]] == [1, 2, 3]


def test_interrupt_before_any_checkpoint_says_so(data_dir, tmp_path, capsys, monkeypatch):
    import needle.models.training as training

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "run_epoch", interrupt)
    assert train_command(["--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(tmp_path / "x"),
                          "--no-progress"]) == 130
    assert "before the first checkpoint" in capsys.readouterr().err


def test_one_epoch_run_records_a_per_step_loss_curve(data_dir, tmp_path, monkeypatch):
    import needle.models.cli as cli

    plotted = {}
    real_plot = cli.plot_curves

    def spy(history, path, steps=()):
        plotted["steps"] = list(steps)
        return real_plot(history, path, steps)

    monkeypatch.setattr(cli, "plot_curves", spy)
    out = tmp_path / "steps"
    # 300 samples / batch 20 = 15 steps; a point every 4 steps and one for the last, partial window
    assert _run(["--dataset", "mnist", "--data-dir", data_dir, "--epochs", 1, "--batch-size", 20,
                 "--log-every", 4, "--lr", 0.01, "--out", out, "--no-progress"]) == 0
    steps = json.loads((out / "metrics.json").read_text())["steps"]
    assert [s["step"] for s in steps] == [4, 8, 12, 15]
    assert [s["epoch"] for s in steps] == pytest.approx([4 / 15, 8 / 15, 12 / 15, 1.0])
    assert all(np.isfinite(s["loss"]) and s["loss"] > 0 for s in steps)
    assert steps[-1]["loss"] < steps[0]["loss"]  # learns the separable toy data
    assert plotted["steps"] == steps
    # the per-step losses average (sample-weighted) to the epoch's train loss
    epoch = json.loads((out / "metrics.json").read_text())["epochs"][0]
    counts = [80, 80, 80, 60]
    assert sum(s["loss"] * c for s, c in zip(steps, counts)) / 300 == pytest.approx(epoch["train_loss"])


def test_failed_download_is_a_clean_error(tmp_path, monkeypatch, capsys):
    from needle.data.datasets import cifar10_dataset

    def unreachable(*a, **k):
        raise ConnectionError("download of https://example.invalid failed: cannot reach the server")

    monkeypatch.setattr(cifar10_dataset, "download_cifar10", unreachable)
    code = _run(["--model", "resnet9", "--dataset", "cifar10", "--data-dir", tmp_path / "none", "--download",
                 "--out", tmp_path / "o"])
    err = capsys.readouterr().err
    assert code == 2 and "--download of cifar10 failed: download of https://example.invalid" in err
    assert "Traceback" not in err


def test_interrupt_after_resume_before_a_new_epoch_keeps_the_checkpoint(data_dir, tmp_path, capsys,
                                                                          monkeypatch):
    import needle.models.training as training

    out = tmp_path / "r"
    common = ["--dataset", "mnist", "--data-dir", str(data_dir), "--max-batches", "1", "--out", str(out),
              "--no-progress"]
    assert train_command(common + ["--epochs", "1"]) == 0
    argv = common + ["--epochs", "2"]

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "run_epoch", interrupt)
    capsys.readouterr()
    assert train_command(argv + ["--resume"]) == 130
    err = capsys.readouterr().err
    assert f"no new epoch finished, {out / 'checkpoint.npz'} is unchanged" in err
    assert err.strip().endswith("--resume") and err.count("--resume") == 1
