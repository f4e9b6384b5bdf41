"""Learning-rate schedules (beyond the course), stepped once per epoch.

Each schedule remembers the optimizer's starting ``lr`` and rewrites
``optimizer.lr`` on every :meth:`step`, following PyTorch's closed forms.
"""

from __future__ import annotations

import math

from needle.errors import ArgumentTypeError
from needle.validation import check_float, check_int

__all__ = ["LRScheduler", "StepLR", "CosineAnnealingLR"]


class LRScheduler:
    """Base class: ``step()`` advances ``last_epoch`` and sets ``optimizer.lr``."""

    def __init__(self, optimizer):
        if not hasattr(optimizer, "lr"):
            raise ArgumentTypeError(f"{type(self).__name__}: optimizer {type(optimizer).__name__} has no 'lr' "
                                    f"attribute; pass a needle.optim optimizer")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError()

    def step(self) -> float:
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)
        return self.optimizer.lr

    def get_last_lr(self) -> float:
        return self.optimizer.lr

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state) -> None:
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        step_size = check_int("StepLR", "step_size", step_size, 1)
        check_float("StepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer)
        self.step_size = step_size
        self.gamma = gamma

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2, flat after T_max."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        T_max = check_int("CosineAnnealingLR", "T_max", T_max, 1)
        check_float("CosineAnnealingLR", "eta_min", eta_min, 0.0)
        super().__init__(optimizer)
        self.T_max = T_max
        self.eta_min = eta_min

    def lr_at(self, epoch):
        e = min(epoch, self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * e / self.T_max)) / 2
