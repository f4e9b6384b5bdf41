"""The course's ``apps/simple_ml.py``: hw1 helpers and the hw4 training loops (API.md section 8).

hw1 part: ``parse_mnist``, ``softmax_loss``, ``nn_epoch``, ``loss_err`` on
needle Tensors.  hw4 part: epoch/train/evaluate loops for CIFAR-10 image
models and PTB language models; these return **accuracy** (not error).
"""

from __future__ import annotations

import numpy as np

import needle as ndl
import needle.nn as nn
from needle.data.datasets.mnist_dataset import parse_mnist_arrays

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
    # per row, then the batch (as nn.SoftmaxLoss): summing each term over the
    # batch first lets one confident row swamp the float32 sums
    return (ndl.logsumexp(Z, axes=(1,)) - (Z * y_one_hot).sum((1,))).sum() / batch


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


def _count_correct(logits, y) -> int:
    return int((logits.numpy().argmax(axis=1) == y.numpy()).sum())


def epoch_general_cifar10(dataloader, model, loss_fn=nn.SoftmaxLoss(), opt=None):
    """One pass over ``dataloader`` (training when ``opt`` is given) -> ``(accuracy, mean loss)``."""
    np.random.seed(4)
    if opt is not None:
        model.train()
    else:
        model.eval()
    loss_fn = _instance(loss_fn)
    correct, total_loss, n = 0, 0.0, 0
    for X, y in dataloader:
        logits = model(X)
        loss = loss_fn(logits, y)
        if opt is not None:
            opt.reset_grad()
            loss.backward()
            opt.step()
        batch = y.shape[0]
        correct += _count_correct(logits, y)
        total_loss += float(loss.numpy()) * batch
        n += batch
    return correct / n, total_loss / n


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


def _detach_state(h):
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
    from needle.data import get_batch  # written alongside the PTB dataset; resolved at call time

    np.random.seed(4)
    if opt is not None:
        model.train()
    else:
        model.eval()
    loss_fn = _instance(loss_fn)
    nbatch = data.shape[0]
    h = None
    correct, total_loss, n = 0, 0.0, 0
    for i in range(0, nbatch - 1, seq_len):
        X, y = get_batch(data, i, seq_len, device=device, dtype=dtype)
        out, h = model(X, h)
        loss = loss_fn(out, y)
        if opt is not None:
            opt.reset_grad()
            loss.backward()
            if clip:
                opt.clip_grad_norm(clip)
            opt.step()
        h = _detach_state(h)
        count = y.shape[0]
        correct += _count_correct(out, y)
        total_loss += float(loss.numpy()) * count
        n += count
    return correct / n, total_loss / n


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
