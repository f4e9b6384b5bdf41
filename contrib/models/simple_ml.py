"""The course's ``apps/simple_ml.py``: hw1 helpers and the hw4 training loops (course API).

hw1 part: ``parse_mnist``, ``softmax_loss``, ``nn_epoch``, ``loss_err`` on
needle Tensors.  hw4 part: epoch/train/evaluate loops for CIFAR-10 image
models and PTB language models; these return **accuracy** (not error).
"""

from __future__ import annotations

import numpy as np

import needle as ndl
import needle.nn as nn
from needle.data.datasets.mnist_dataset import parse_mnist_arrays

from .training import count_correct, run_epoch

__all__ = [
    "parse_mnist",
    "softmax_loss",
    "nn_epoch",
    "loss_err",
    "epoch_general_cifar10",
    "train_cifar10",
    "evaluate_cifar10",
    "epoch_general_ptb",
    "train_ptb",
    "evaluate_ptb",
]


def parse_mnist(image_filename, label_filename):
    """(X float32 ``(N, rows*cols)`` in [0, 1], y uint8 ``(N,)``) from IDX files (gzip or not)."""
    images, labels = parse_mnist_arrays(image_filename, label_filename)
    X = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return X, labels.copy()


def softmax_loss(Z, y_one_hot):
    """Mean softmax cross-entropy of logits ``Z (B, k)`` against one-hot ``y_one_hot (B, k)`` -> 0-d Tensor."""
    batch = Z.shape[0]
    return (ndl.logsumexp(Z, axes=(1,)).sum() - (Z * y_one_hot).sum()) / batch


def _one_hot(y, classes, dtype=np.float32):
    y = np.asarray(y).astype(np.int64).reshape(-1)
    out = np.zeros((y.shape[0], classes), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


def nn_epoch(X, y, W1, W2, lr=0.1, batch=100):
    """One SGD pass of the two-layer net ``relu(X W1) W2`` over unshuffled batches.

    X ``(N, n)`` and y ``(N,)`` are NumPy; W1 ``(n, d)`` and W2 ``(d, k)`` are
    Tensors.  Returns the updated ``(W1, W2)`` as new float32 Tensors.
    """
    classes = W2.shape[1]
    for start in range(0, X.shape[0], batch):
        Xb = ndl.Tensor(X[start : start + batch], dtype="float32", requires_grad=False)
        Iy = ndl.Tensor(_one_hot(y[start : start + batch], classes), requires_grad=False)
        loss = softmax_loss(ndl.relu(Xb @ W1) @ W2, Iy)
        loss.backward()
        W1 = ndl.Tensor((W1.numpy() - lr * W1.grad.numpy()).astype(np.float32))
        W2 = ndl.Tensor((W2.numpy() - lr * W2.grad.numpy()).astype(np.float32))
    return W1, W2


def loss_err(h, y):
    """(mean softmax loss as a NumPy value, error rate) of logits Tensor ``h`` vs labels ``y``."""
    y = np.asarray(y)
    Iy = ndl.Tensor(_one_hot(y, h.shape[1]), requires_grad=False)
    err = float(np.mean(h.numpy().argmax(axis=1) != y))
    return softmax_loss(h, Iy).numpy(), err


def _instance(loss_fn):
    """Accept a loss class (as the train_* functions take) or an instance."""
    return loss_fn() if isinstance(loss_fn, type) else loss_fn


def epoch_general_cifar10(dataloader, model, loss_fn=nn.SoftmaxLoss(), opt=None):
    """One pass over ``dataloader`` (training when ``opt`` is given) -> ``(accuracy, mean loss)``."""
    np.random.seed(4)
    loss_fn = _instance(loss_fn)

    def forward(batch):
        X, y = batch
        logits = model(X)
        return loss_fn(logits, y), count_correct(logits, y), y.shape[0]

    totals = run_epoch(dataloader, forward, model, opt)
    return totals.accuracy, totals.mean_loss


def train_cifar10(model, dataloader, n_epochs=1, optimizer=ndl.optim.Adam, lr=0.001, weight_decay=0.001,
                  loss_fn=nn.SoftmaxLoss):
    """Train for ``n_epochs``; returns the last epoch's ``(accuracy, mean loss)``."""
    np.random.seed(4)
    opt = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    acc = loss = None
    for _ in range(n_epochs):
        acc, loss = epoch_general_cifar10(dataloader, model, _instance(loss_fn), opt)
    return acc, loss


def evaluate_cifar10(model, dataloader, loss_fn=nn.SoftmaxLoss):
    """One evaluation pass -> ``(accuracy, mean loss)``."""
    np.random.seed(4)
    return epoch_general_cifar10(dataloader, model, _instance(loss_fn))


def detach_state(h):
    """A recurrent state (a Tensor, a tuple of them, or None) cut from its graph."""
    if h is None:
        return None
    if isinstance(h, (tuple, list)):
        return tuple(x.detach() for x in h)
    return h.detach()


def epoch_general_ptb(data, model, seq_len=40, loss_fn=nn.SoftmaxLoss(), opt=None, clip=None, device=None,
                      dtype="float32"):
    """One truncated-BPTT pass over batchified ``data (nbatch, B)`` -> ``(accuracy, mean loss per token)``.

    The hidden state is carried across windows, detached each time so the
    graph stays one window long.
    """
    np.random.seed(4)
    loss_fn = _instance(loss_fn)
    state = {"h": None}

    def forward(batch):
        X, y = batch
        out, h = model(X, state["h"])
        state["h"] = detach_state(h)
        return loss_fn(out, y), count_correct(out, y), y.shape[0]

    totals = run_epoch(bptt_windows(data, seq_len, device, dtype), forward, model, opt, clip=clip)
    return totals.accuracy, totals.mean_loss


def bptt_windows(data, seq_len, device=None, dtype="float32"):
    """The ``(X, y)`` windows of truncated BPTT over batchified ``data``, in order."""
    from needle.data import get_batch  # written alongside the PTB dataset; resolved at call time

    for i in range(0, data.shape[0] - 1, seq_len):
        yield get_batch(data, i, seq_len, device=device, dtype=dtype)


def train_ptb(model, data, seq_len=40, n_epochs=1, optimizer=ndl.optim.SGD, lr=4.0, weight_decay=0.0,
              loss_fn=nn.SoftmaxLoss, clip=None, device=None, dtype="float32"):
    """Train a language model for ``n_epochs``; returns the last epoch's ``(accuracy, mean loss)``."""
    np.random.seed(4)
    opt = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    acc = loss = None
    for _ in range(n_epochs):
        acc, loss = epoch_general_ptb(data, model, seq_len, _instance(loss_fn), opt, clip, device, dtype)
    return acc, loss


def evaluate_ptb(model, data, seq_len=40, loss_fn=nn.SoftmaxLoss, device=None, dtype="float32"):
    """One evaluation pass of a language model -> ``(accuracy, mean loss)``."""
    np.random.seed(4)
    return epoch_general_ptb(data, model, seq_len, _instance(loss_fn), None, None, device, dtype)
