"""A small convolutional classifier for 28x28 grey images (Fashion-MNIST)."""

from needle import nn, ops

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Two ``Conv -> BatchNorm2d -> ReLU -> MaxPool2d(2)`` blocks and an MLP head.

    Input ``(N, 1, 28, 28)`` (NCHW; an ``(N, 28, 28, 1)`` image batch as the
    MNIST loaders give it, or ``(N, 784)`` rows, is reshaped/transposed
    first), output ``(N, 10)`` logits.  About 420k parameters.
    """

    def __init__(self, device=None, dtype="float32", dropout=0.25):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.features = nn.Sequential(
            nn.Conv(1, 32, 3, **kw), nn.BatchNorm2d(32, **kw), nn.ReLU(),
            nn.MaxPool2d(2),                                 # 28 -> 14
            nn.Conv(32, 64, 3, **kw), nn.BatchNorm2d(64, **kw), nn.ReLU(),
            nn.MaxPool2d(2),                                 # 14 -> 7
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128, **kw), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(128, 10, **kw),
        )

    def forward(self, x):
        shape = tuple(x.shape)
        if len(shape) == 2 and shape[1] == 28 * 28:
            x = ops.reshape(x, (shape[0], 1, 28, 28))
        elif len(shape) == 4 and shape[1:] == (28, 28, 1):
            x = ops.reshape(x, (shape[0], 1, 28, 28))  # one channel: NHWC == NCHW in memory
        return self.classifier(self.features(x))
