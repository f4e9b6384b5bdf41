"""hw0 (the course's ``src/simple_ml.py``) in pure NumPy (course API §9, docs/design.md).

Softmax regression and a two-layer ReLU network trained by minibatch SGD on
NumPy arrays, updated in place.  ``softmax_regression_epoch_cpp`` is the
course's C++ extension entry point; here it is the same NumPy code behind
that name (with the extension's argument checks), so callers of either get
identical results.
"""

from __future__ import annotations

import numpy as np

from needle.data.datasets.mnist_dataset import parse_mnist_arrays

__all__ = [
    "add",
    "parse_mnist",
    "softmax_loss",
    "softmax_regression_epoch",
    "softmax_regression_epoch_cpp",
    "nn_epoch",
    "loss_err",
    "train_softmax",
    "train_nn",
]


def add(x, y):
    """x + y."""
    return x + y


def parse_mnist(image_filename, label_filename):
    """(X float32 ``(N, 784)`` = raw/255, y uint8 ``(N,)``) from IDX files (gzip or not)."""
    images, labels = parse_mnist_arrays(image_filename, label_filename)
    X = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return X, labels.copy()


def _logsumexp_rows(Z):
    m = Z.max(axis=1, keepdims=True)
    return (np.log(np.exp(Z - m).sum(axis=1, keepdims=True)) + m)[:, 0]


def softmax_loss(Z, y):
    """Mean over rows of log sum exp Z - Z[y]; Z ``(B, k)`` logits, y ``(B,)`` integer labels."""
    y = np.asarray(y).astype(np.int64)
    return np.mean(_logsumexp_rows(Z) - Z[np.arange(Z.shape[0]), y])


def _softmax_rows(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def _one_hot(y, k, dtype):
    out = np.zeros((y.shape[0], k), dtype=dtype)
    out[np.arange(y.shape[0]), y.astype(np.int64)] = 1
    return out


def softmax_regression_epoch(X, y, theta, lr=0.1, batch=100):
    """One SGD pass of softmax regression; updates ``theta (n, k)`` in place, returns None."""
    for start in range(0, X.shape[0], batch):
        Xb = X[start : start + batch]
        yb = y[start : start + batch]
        G = _softmax_rows(Xb @ theta) - _one_hot(yb, theta.shape[1], theta.dtype)
        theta -= (lr / Xb.shape[0]) * (Xb.T @ G)


def softmax_regression_epoch_cpp(X, y, theta, lr, batch):
    """The C++ extension's entry point, implemented with NumPy (same results as the Python version).

    X: C-contiguous float32 ``(m, n)``; y: uint8 ``(m,)``; theta: float32
    ``(n, k)``, updated in place.
    """
    if not (isinstance(theta, np.ndarray) and theta.dtype == np.float32 and theta.flags.c_contiguous):
        raise TypeError("softmax_regression_epoch_cpp: theta must be a C-contiguous float32 NumPy array")
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.asarray(y)
    if X.ndim != 2 or theta.ndim != 2 or X.shape[1] != theta.shape[0] or y.shape != (X.shape[0],):
        raise ValueError(
            f"softmax_regression_epoch_cpp: shapes X {X.shape}, y {y.shape}, theta {theta.shape} do not fit "
            f"(need X (m, n), y (m,), theta (n, k))"
        )
    softmax_regression_epoch(X, y, theta, lr=lr, batch=batch)


def nn_epoch(X, y, W1, W2, lr=0.1, batch=100):
    """One SGD pass of ``relu(X W1) W2`` with softmax loss; W1, W2 updated in place."""
    for start in range(0, X.shape[0], batch):
        Xb = X[start : start + batch]
        yb = y[start : start + batch]
        b = Xb.shape[0]
        Z1 = np.maximum(Xb @ W1, 0)
        G2 = _softmax_rows(Z1 @ W2) - _one_hot(yb, W2.shape[1], W2.dtype)
        G1 = (Z1 > 0) * (G2 @ W2.T)
        W1 -= (lr / b) * (Xb.T @ G1)
        W2 -= (lr / b) * (Z1.T @ G2)


def loss_err(h, y):
    """(softmax loss, error rate) of logits ``h`` against labels ``y``."""
    return softmax_loss(h, y), np.mean(h.argmax(axis=1) != y)


def train_softmax(X_tr, y_tr, X_te, y_te, epochs=10, lr=0.5, batch=100, cpp=False):
    """Softmax regression from zeros, printing train/test loss and error per epoch."""
    theta = np.zeros((X_tr.shape[1], y_tr.max() + 1), dtype=np.float32)
    print("| Epoch | Train Loss | Train Err | Test Loss | Test Err |")
    for epoch in range(epochs):
        if cpp:
            softmax_regression_epoch_cpp(X_tr, y_tr, theta, lr=lr, batch=batch)
        else:
            softmax_regression_epoch(X_tr, y_tr, theta, lr=lr, batch=batch)
        train_loss, train_err = loss_err(X_tr @ theta, y_tr)
        test_loss, test_err = loss_err(X_te @ theta, y_te)
        print(f"|  {epoch:>4} |    {train_loss:.5f} |   {train_err:.5f} |   {test_loss:.5f} |  {test_err:.5f} |")


def train_nn(X_tr, y_tr, X_te, y_te, hidden_dim=500, epochs=10, lr=0.5, batch=100):
    """Two-layer network with seed-0 scaled Gaussian init, printing progress per epoch."""
    n, k = X_tr.shape[1], y_tr.max() + 1
    np.random.seed(0)
    W1 = np.random.randn(n, hidden_dim).astype(np.float32) / np.sqrt(hidden_dim)
    W2 = np.random.randn(hidden_dim, k).astype(np.float32) / np.sqrt(k)
    print("| Epoch | Train Loss | Train Err | Test Loss | Test Err |")
    for epoch in range(epochs):
        nn_epoch(X_tr, y_tr, W1, W2, lr=lr, batch=batch)
        train_loss, train_err = loss_err(np.maximum(X_tr @ W1, 0) @ W2, y_tr)
        test_loss, test_err = loss_err(np.maximum(X_te @ W1, 0) @ W2, y_te)
        print(f"|  {epoch:>4} |    {train_loss:.5f} |   {train_err:.5f} |   {test_loss:.5f} |  {test_err:.5f} |")
