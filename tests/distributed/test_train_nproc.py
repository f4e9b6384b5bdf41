"""``needle train --nproc 2``: two ranks through mpiexec, rank 0 alone writes,
--resume, and bad --nproc values refused before anything is written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from needle.models.cli import train_command

from test_distributed import needs_mpi  # noqa: E402 -- a sibling module (pytest puts this folder on sys.path)


def _load_make_mnist_folder():
    """The toy MNIST-format writer of tests/models/test_train_cli.py (one copy)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "models" / "test_train_cli.py"
    spec = importlib.util.spec_from_file_location("_needle_train_cli_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_mnist_folder


make_mnist_folder = _load_make_mnist_folder()


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    return make_mnist_folder(folder, n_train=256, n_test=64)


def _train(*args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "NEEDLE_DIST_TIMEOUT"}
    return subprocess.run([sys.executable, "-m", "needle.cli", "train", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


@needs_mpi
def test_nproc2_trains_and_resumes(data_dir, tmp_path):
    out = tmp_path / "run"
    common = ["--dataset", "mnist", "--data-dir", data_dir, "--batch-size", 32, "--lr", 0.01, "--out", out,
              "--nproc", 2, "--no-progress"]
    proc = _train(*common, "--epochs", 1)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("final train accuracy") == 1  # rank 0 alone prints
    assert "(2 processes x 16)" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"][0]["epoch"] == 1 and metrics["args"]["nproc"] == 2
    assert metrics["epochs"][0]["test_acc"] > 0.5  # separable toy data
    proc = _train(*common, "--epochs", 2, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout
    assert [e["epoch"] for e in json.loads((out / "metrics.json").read_text())["epochs"]] == [1, 2]


@needs_mpi
def test_only_rank0_writes(data_dir, tmp_path):
    """Each rank runs in its own folder with a relative --out: rank 1's must stay empty."""
    from needle.distributed.launch import find_mpiexec

    mpiexec, flavour = find_mpiexec()
    if flavour != "mpich":
        pytest.skip("per-rank working directories are spelled for MPICH's mpiexec here")
    dirs = [tmp_path / "rank0", tmp_path / "rank1"]
    for d in dirs:
        d.mkdir()
    argv = [sys.executable, "-m", "needle.cli", "train", "--dataset", "mnist", "--data-dir", str(data_dir),
            "--batch-size", "32", "--epochs", "1", "--max-batches", "2", "--out", "out", "--nproc", "2",
            "--no-progress"]
    cmd = [mpiexec, "-n", "1", "-wdir", str(dirs[0]), *argv, ":", "-n", "1", "-wdir", str(dirs[1]), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(dirs[0] / "out")) == ["checkpoint.npz", "curves.png", "metrics.json", "model.npz"]
    assert os.listdir(dirs[1]) == []


@pytest.mark.parametrize("extra,message", [
    (["--nproc", "0"], "--nproc must be at least 1, got 0"),
    (["--nproc", "100000"], "--nproc 100000 is more than allowed on this machine"),
    (["--nproc", "3", "--batch-size", "32"], "must split evenly across --nproc 3 ranks"),
])
def test_bad_nproc_is_refused_before_anything_is_written(extra, message, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = train_command(["--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(out), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_nproc_refuses_language_models(tmp_path, capsys):
    code = train_command(["--model", "lstm-lm", "--dataset", "ptb", "--data-dir", str(tmp_path), "--nproc", "2",
                          "--out", str(tmp_path / "run")])
    assert code == 2 and "image models only" in capsys.readouterr().err
