"""Image augmentations on one H x W x C NumPy image (course API §6, docs/design.md).

Each transform makes exactly the NumPy RNG call the course goldens expect,
whether or not it ends up changing the image.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Transform", "RandomFlipHorizontal", "RandomCrop"]


class Transform:
    """Base class: ``transform(img) -> img``."""

    def __call__(self, x):  # pragma: no cover - abstract
        raise NotImplementedError()


class RandomFlipHorizontal(Transform):
    """Mirror the image along W (axis 1) with probability p."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        flip = np.random.rand() < self.p
        return img[:, ::-1, :] if flip else img


class RandomCrop(Transform):
    """Zero-pad H and W by ``padding`` and cut an H x W window shifted by up to +-padding."""

    def __init__(self, padding=3):
        self.padding = padding

    def __call__(self, img):
        pad = self.padding
        shift_x, shift_y = np.random.randint(low=-pad, high=pad + 1, size=2)
        h, w = img.shape[0], img.shape[1]
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        return padded[pad + shift_x : pad + shift_x + h, pad + shift_y : pad + shift_y + w, :]
