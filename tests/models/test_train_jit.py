"""``needle train --jit``: the compiled training step trains exactly as the eager one,
and the combinations it cannot run are refused with a clear message (exit 2)."""

import json

import numpy as np
import pytest

import needle as ndl
from needle.errors import JitError
from needle.models.cli import train_command
from test_train_cli import make_mnist_folder  # a sibling module (pytest puts this folder on sys.path)


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    return make_mnist_folder(folder, n_train=200, n_test=60)


@pytest.fixture
def no_dropout(monkeypatch):
    # a captured step draws dropout masks from the device generator (a
    # different stream from the eager NumPy draws, and it takes one NumPy
    # seed per replay, which moves the next epoch's shuffle): with dropout
    # off, eager and --jit must agree to the last bit
    monkeypatch.setattr(ndl.nn.Dropout, "forward", lambda self, x: x)


def _run(args):
    return train_command([str(a) for a in args])


def _train(data_dir, out, device, *extra):
    # 2 epochs so that replays run after an evaluation pass, a checkpoint and a
    # learning-rate change (cosine: the compiled step reads group["lr"] anew);
    # 200 samples in batches of 32: 6 full and a last one of 8, a second shape
    code = _run(["--dataset", "mnist", "--data-dir", data_dir, "--epochs", 2,
                 "--batch-size", 32, "--lr", 0.01, "--schedule", "cosine", "--device", device,
                 "--out", out, "--no-progress", *extra])
    assert code == 0
    return json.loads((out / "metrics.json").read_text()), ndl.load(out / "model.npz")


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_jit_trains_like_eager(data_dir, tmp_path, device, optimizer, no_dropout, capsys):
    eager, w_eager = _train(data_dir, tmp_path / "eager", device, "--optimizer", optimizer)
    jitted, w_jit = _train(data_dir, tmp_path / "jit", device, "--optimizer", optimizer, "--jit")
    assert "jit: " in capsys.readouterr().out  # the summary line of a --jit run
    assert eager["jit"] is False and jitted["jit"] is True
    stats = jitted["jit_stats"]
    # 14 steps: the first eager, each shape captured once, the rest replayed
    assert stats["fallback"] is None
    assert stats["eager"] + stats["captures"] + stats["replays"] == 14
    assert stats["captures"] == 2 and stats["replays"] >= 10
    assert len(stats["plans"]) == 2 and all(p["calls"] > 0 for p in stats["plans"])
    assert w_eager.keys() == w_jit.keys()  # BatchNorm running statistics included
    for key in w_eager:
        np.testing.assert_allclose(np.asarray(w_jit[key]), np.asarray(w_eager[key]), rtol=0, atol=1e-5,
                                   err_msg=key)
    for a, b in zip(eager["epochs"], jitted["epochs"]):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    # the progress figures come from the returned Tensors: the loss is logged per step
    assert [s["loss"] for s in jitted["steps"]] == pytest.approx([s["loss"] for s in eager["steps"]], abs=1e-5)


def test_language_model_trains_the_same_with_jit(tmp_path, no_dropout):
    """The LSTM LM's step (nn.Embedding through the device kernels, the
    carried hidden state an argument of the step) replays, and trains as
    without --jit."""
    folder = tmp_path / "ptb"
    folder.mkdir()
    words = "the cat sat on the mat and the dog sat on the log".split()
    lines = [" ".join(words[i % 5: i % 5 + 6]) for i in range(30)]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "test.txt").write_text("\n".join(lines[:8]) + "\n")
    common = ["--model", "lstm-lm", "--dataset", "ptb", "--data-dir", folder, "--epochs", 2, "--batch-size", 4,
              "--bptt", 8, "--embedding-size", 8, "--hidden-size", 8, "--lr", 0.01, "--no-progress"]
    assert _run(common + ["--out", tmp_path / "eager"]) == 0
    assert _run(common + ["--out", tmp_path / "jit", "--jit"]) == 0
    eager = json.loads((tmp_path / "eager" / "metrics.json").read_text())
    jitted = json.loads((tmp_path / "jit" / "metrics.json").read_text())
    stats = jitted["jit_stats"]
    assert stats["fallback"] is None and stats["replays"] > 0 and stats["plans"]
    for a, b in zip(eager["epochs"], jitted["epochs"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert b["test_acc"] == pytest.approx(a["test_acc"], abs=1e-5)


def _eager_weights(build, batches, loss_fn):
    """The weights after training a fresh ``build()`` eagerly on ``batches``: the reference."""
    model, opt = build()
    for X, y in batches:
        opt.reset_grad()
        loss_fn(model(X), y).backward()
        opt.step()
    return [p.numpy() for p in model.parameters()]


def test_failed_capture_after_the_step_does_not_train_the_batch_twice(monkeypatch, no_dropout):
    """A capture can fail after the step body ran (planning its buffers):
    needle.jit warns and returns the step's own outputs, and the batch is not
    run again."""
    from needle.models.mlp_resnet import MLPResNet
    from needle.models.training import JitTrainStep, count_correct

    monkeypatch.setattr(ndl.autograd, "KEEP_INTERIOR_GRADS", False)  # as needle train runs
    rng = np.random.default_rng(0)
    batches = [(ndl.Tensor(rng.random((8, 784), dtype=np.float32), requires_grad=False),
                ndl.Tensor(rng.integers(0, 10, 8).astype(np.float32), requires_grad=False)) for _ in range(4)]
    loss_fn = ndl.nn.SoftmaxLoss()

    def build():
        np.random.seed(0)
        model = MLPResNet(784, 16)
        return model, ndl.optim.SGD(model.parameters(), lr=0.1)

    expected = _eager_weights(build, batches, loss_fn)
    model, opt = build()
    notes = []
    step = JitTrainStep(lambda b: tuple(b), lambda X, y: (lambda z: (loss_fn(z, y), z, None))(model(X)),
                        lambda b, z, carry: (count_correct(z, b[1]), b[1].shape[0]), opt,
                        on_fallback=notes.append)

    def fail(*args):
        raise JitError("planning failed")
    monkeypatch.setattr(type(step.jitted), "_finish", fail)
    with pytest.warns(RuntimeWarning, match="planning failed; this signature runs eagerly"):
        losses = [step(b) for b in batches]
    assert notes == [] and step.stats["captures"] == 0 and step.stats["eager"] == 3
    assert all(np.isfinite(float(loss.numpy())) and count == 8 for loss, _, count in losses)
    for got, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("order", [(4, 4, 4, 5, 5, 5, 5), (5, 5, 5, 5, 4, 5, 5)],
                         ids=["fails-first", "fails-after-a-capture"])
def test_a_shape_that_cannot_be_captured_trains_eagerly_beside_replays(monkeypatch, order):
    """One batch shape whose step reads the host: it trains eagerly from its
    failed capture on (keeping the parameters in the buffers the other
    shape's capture reads), the other shape replays, and all train as
    without jit."""
    from needle.models.training import JitTrainStep, count_correct

    monkeypatch.setattr(ndl.autograd, "KEEP_INTERIOR_GRADS", False)

    class HostRead(ndl.autograd.TensorOp):
        """Reads its input on the host inside compute(): the JitError is
        raised while its output Tensor is being built (whose frames once kept
        that half-built Tensor alive, and the next capture tripped over it)."""

        def compute(self, a):
            a.numpy()
            return a

        def gradient(self, out_grad, node):
            return out_grad

    rng = np.random.default_rng(1)
    batches = [(ndl.Tensor(rng.random((n, 6), dtype=np.float32), requires_grad=False),
                ndl.Tensor(rng.integers(0, 3, n).astype(np.float32), requires_grad=False)) for n in order]

    def build():
        np.random.seed(0)
        model = ndl.nn.Sequential(ndl.nn.Linear(6, 8), ndl.nn.ReLU(), ndl.nn.Linear(8, 3))
        return model, ndl.optim.SGD(model.parameters(), lr=0.1)

    loss_fn = ndl.nn.SoftmaxLoss()
    expected = _eager_weights(build, batches, loss_fn)
    model, opt = build()

    def outputs(X, y):
        if X.shape[0] == 4:
            X = HostRead()(X)  # this shape cannot be captured
        z = model(X)
        return loss_fn(z, y), z, None

    notes = []
    step = JitTrainStep(lambda b: tuple(b), outputs, lambda b, z, carry: (count_correct(z, b[1]), b[1].shape[0]),
                        opt, on_fallback=notes.append)
    for batch in batches:
        loss, correct, count = step(batch)
        assert np.isfinite(float(loss.numpy())) and count == batch[1].shape[0]
    assert len(notes) == 1 and "host" in str(notes[0]) and step.fallback is notes[0]
    assert step.stats["eager"] + step.stats["captures"] + step.stats["replays"] == len(order)
    assert len(step.plan_info()) == 1 and step.stats["replays"] >= 2
    # a later capture of another function works (no half-built Tensor left alive)
    probe = ndl.jit(lambda a: (a * 2.0).sum())
    for _ in range(3):
        probe(batches[0][0])
    assert probe.stats["replays"] == 1
    for got, want in zip(model.parameters(), expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("argv,message", [
    (["--jit", "--clip", "1.0"], "--jit cannot be combined with --clip"),
    (["--jit", "--nproc", "2"], "--jit cannot be combined with --nproc 2"),
])
def test_jit_refuses_what_it_cannot_capture(data_dir, tmp_path, capsys, argv, message):
    code = _run(["--dataset", "mnist", "--data-dir", data_dir, "--epochs", 1, "--out", tmp_path / "o"] + argv)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before anything ran


def test_help_lists_jit(capsys):
    assert _run(["--help"]) == 0
    assert "--jit" in capsys.readouterr().out
