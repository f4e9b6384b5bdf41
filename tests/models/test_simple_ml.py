"""needle.models.simple_ml (hw1 + hw4 loops) and needle.models.hw0 (pure NumPy)."""

import gzip
import struct

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle.models import hw0, simple_ml


@pytest.fixture
def idx_files(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(30, 28, 28)).astype(np.uint8)
    labels = rng.randint(0, 10, size=30).astype(np.uint8)
    img, lab = tmp_path / "i.gz", tmp_path / "l.gz"
    img.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 30, 28, 28) + images.tobytes()))
    lab.write_bytes(gzip.compress(struct.pack(">II", 2049, 30) + labels.tobytes()))
    return str(img), str(lab), images, labels


@pytest.mark.parametrize("parse", [simple_ml.parse_mnist, hw0.parse_mnist])
def test_parse_mnist(idx_files, parse):
    img, lab, images, labels = idx_files
    X, y = parse(img, lab)
    assert X.shape == (30, 784) and X.dtype == np.float32 and y.dtype == np.uint8
    np.testing.assert_allclose(X, images.reshape(30, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)


def _problem(seed=0, n=50, d=12, k=4):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, d).astype(np.float32)
    y = rng.randint(0, k, size=n).astype(np.uint8)
    return X, y


def test_softmax_loss_tensor_matches_numpy_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.RandomState(1)
    Z = rng.randn(7, 5).astype(np.float32) * 4
    y = rng.randint(0, 5, size=7)
    Iy = np.eye(5, dtype=np.float32)[y]
    Zt = ndl.Tensor(Z)
    loss = simple_ml.softmax_loss(Zt, ndl.Tensor(Iy, requires_grad=False))
    loss.backward()
    tz = torch.tensor(Z, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(y))
    tl.backward()
    assert float(loss.numpy()) == pytest.approx(tl.item(), rel=1e-5)
    assert hw0.softmax_loss(Z, y) == pytest.approx(tl.item(), rel=1e-5)
    np.testing.assert_allclose(Zt.grad.numpy(), tz.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_nn_epoch_matches_hw0_numpy():
    X, y = _problem(2)
    rng = np.random.RandomState(3)
    W1 = (rng.randn(12, 8) / np.sqrt(8)).astype(np.float32)
    W2 = (rng.randn(8, 4) / np.sqrt(4)).astype(np.float32)
    ref1, ref2 = W1.copy(), W2.copy()
    hw0.nn_epoch(X, y, ref1, ref2, lr=0.2, batch=15)  # in place; batches 15, 15, 15, 5
    T1, T2 = simple_ml.nn_epoch(X, y, ndl.Tensor(W1), ndl.Tensor(W2), lr=0.2, batch=15)
    assert T1.dtype == "float32" and T2.dtype == "float32"
    np.testing.assert_allclose(T1.numpy(), ref1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(T2.numpy(), ref2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ref1, W1)


def test_loss_err_both_versions():
    rng = np.random.RandomState(4)
    h = rng.randn(10, 3).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    loss, err = simple_ml.loss_err(ndl.Tensor(h), y)
    ref_loss = np.mean(np.log(np.exp(h).sum(1)) - h[np.arange(10), y])
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    assert err == pytest.approx(np.mean(h.argmax(1) != y))
    l0, e0 = hw0.loss_err(h, y)
    assert l0 == pytest.approx(ref_loss, rel=1e-5) and e0 == pytest.approx(err)


def test_hw0_softmax_regression_gradient_step_and_cpp_name():
    X, y = _problem(5)
    theta = np.zeros((12, 4), dtype=np.float32)
    hw0.softmax_regression_epoch(X, y, theta, lr=0.5, batch=50)  # one full batch: one exact gradient step
    Z = np.zeros((50, 4))
    P = np.exp(Z) / np.exp(Z).sum(1, keepdims=True)
    grad = X.T @ (P - np.eye(4)[y]) / 50
    np.testing.assert_allclose(theta, -0.5 * grad, rtol=1e-5, atol=1e-6)
    t_py = np.zeros((12, 4), dtype=np.float32)
    t_cpp = np.zeros((12, 4), dtype=np.float32)
    hw0.softmax_regression_epoch(X, y, t_py, lr=0.1, batch=7)
    hw0.softmax_regression_epoch_cpp(X, y, t_cpp, lr=0.1, batch=7)
    np.testing.assert_allclose(t_cpp, t_py, rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError, match="float32"):
        hw0.softmax_regression_epoch_cpp(X, y, np.zeros((12, 4)), lr=0.1, batch=7)


def test_hw0_nn_epoch_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    X, y = _problem(6, n=20)
    rng = np.random.RandomState(7)
    W1 = rng.randn(12, 6).astype(np.float32) * 0.3
    W2 = rng.randn(6, 4).astype(np.float32) * 0.3
    t1 = torch.tensor(W1, requires_grad=True)
    t2 = torch.tensor(W2, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(torch.relu(torch.tensor(X) @ t1) @ t2, torch.tensor(y).long())
    loss.backward()
    hw0.nn_epoch(X, y, W1, W2, lr=0.3, batch=20)
    np.testing.assert_allclose(W1, (t1 - 0.3 * t1.grad).detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(W2, (t2 - 0.3 * t2.grad).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_add():
    assert hw0.add(5, 6) == 11 and hw0.add(3.2, 1.0) == pytest.approx(4.2)


# -- hw4 image loops ----------------------------------------------------------------
def _image_loader(seed=0, n=64):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 3, size=n)
    X = rng.randn(n, 3, 4, 4).astype(np.float32) * 0.3
    X[np.arange(n), y, :, :] += 1.0  # class = brightest channel
    return ndl.data.DataLoader(ndl.data.NDArrayDataset(X, y), batch_size=16), X, y


def _image_model(seed=0):
    np.random.seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def test_epoch_general_cifar10_eval_returns_accuracy_and_mean_loss():
    loader, X, y = _image_loader()
    model = _image_model()
    acc, loss = simple_ml.epoch_general_cifar10(loader, model)
    assert not model.training
    logits = model(ndl.Tensor(X, requires_grad=False)).numpy()
    lse = np.log(np.exp(logits).sum(1))
    assert acc == pytest.approx(np.mean(logits.argmax(1) == y))
    assert loss == pytest.approx(np.mean(lse - logits[np.arange(len(y)), y]), rel=1e-5)
    assert simple_ml.evaluate_cifar10(model, loader) == (acc, pytest.approx(loss))


def test_train_cifar10_learns_and_is_seeded():
    runs = []
    for _ in range(2):
        loader, _, _ = _image_loader()
        model = _image_model()
        first = simple_ml.evaluate_cifar10(model, loader)
        runs.append(simple_ml.train_cifar10(model, loader, n_epochs=6, lr=0.01))
        assert model.training
    assert runs[0] == runs[1]
    acc, loss = runs[0]
    assert acc > 0.9 and loss < first[1]


# -- hw4 language-model loops ----------------------------------------------------------
class _ToyLM(nn.Module):
    """Bigram model with a carried state: logits = onehot(x) @ W + h; h' = mean logits (tracked)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.W = nn.Parameter(ndl.init.zeros(vocab, vocab))
        self.seen_states = []

    def forward(self, x, h=None):
        T, B = x.shape
        self.seen_states.append(h)
        onehot = ndl.init.one_hot(self.vocab, x, device=x.device).reshape((T * B, self.vocab))
        logits = onehot @ self.W
        if h is not None:
            logits = logits + h.broadcast_to(logits.shape)
        new_h = logits.sum((0,)).reshape((1, self.vocab)) * 0.0
        return logits, new_h


def _ptb_data(vocab=5, n=203, batch=4):
    seq = np.array([i % vocab for i in range(n)])  # a deterministic cycle: perfectly predictable
    return ndl.data.batchify(seq, batch, device=None, dtype="float32")


def test_epoch_general_ptb_windows_state_detach_and_counts():
    data = _ptb_data()
    model = _ToyLM(5)
    acc, loss = simple_ml.epoch_general_ptb(data, model, seq_len=10)
    nbatch = data.shape[0]
    assert len(model.seen_states) == len(range(0, nbatch - 1, 10))
    assert model.seen_states[0] is None
    assert all(h.op is None and not h.requires_grad for h in model.seen_states[1:])
    assert loss == pytest.approx(np.log(5), rel=1e-5)  # zero weights: uniform prediction
    assert 0.0 <= acc <= 1.0


def test_train_ptb_learns_cycle_and_evaluate_agrees():
    data = _ptb_data()
    model = _ToyLM(5)
    acc, loss = simple_ml.train_ptb(model, data, seq_len=10, n_epochs=3, optimizer=ndl.optim.Adam, lr=0.5,
                                    clip=5.0)
    assert loss < 0.5
    eval_acc, eval_loss = simple_ml.evaluate_ptb(model, data, seq_len=10)
    assert eval_acc == 1.0 and eval_loss < loss


def test_hw0_drivers_train_and_report(capsys):
    X, y = _problem(8, n=120, d=6, k=3)
    X[np.arange(120), y] += 3.0  # separable enough to learn in a few epochs
    for cpp in (False, True):
        hw0.train_softmax(X[:100], y[:100], X[100:], y[100:], epochs=3, lr=0.2, batch=20, cpp=cpp)
    hw0.train_nn(X[:100], y[:100], X[100:], y[100:], hidden_dim=8, epochs=3, lr=0.2, batch=20)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("|  ")]
    assert len(lines) == 9
    last_softmax_err = float(lines[5].split("|")[5])
    assert last_softmax_err < 0.2
