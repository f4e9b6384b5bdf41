"""Learning-rate schedules (beyond the course), stepped once per epoch.

Each schedule remembers every param group's starting ``lr`` and rewrites
each group's ``lr`` on every :meth:`step` from its own base, following
PyTorch's closed forms (``optimizer.lr`` reads the first group's).
"""

from __future__ import annotations

import math

from needle.backend_ndarray import capture
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
        groups = getattr(optimizer, "param_groups", None)
        # an optimizer written against the course's base class keeps lr as a plain attribute
        self._grouped = bool(groups) and all("lr" in g for g in groups)
        self.base_lrs = [g["lr"] for g in groups] if self._grouped else [optimizer.lr]
        self.last_epoch = 0

    @property
    def base_lr(self) -> float:
        """The first group's starting lr."""
        return self.base_lrs[0]

    def lr_from(self, base_lr: float, epoch: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError()

    def lr_at(self, epoch: int) -> float:
        """The first group's lr at ``epoch``."""
        return self.lr_from(self.base_lrs[0], epoch)

    def _apply(self) -> None:
        if self._grouped:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = self.lr_from(base, self.last_epoch)
        else:
            self.optimizer.lr = self.lr_at(self.last_epoch)

    def step(self) -> float:
        self.last_epoch += 1
        self._apply()
        capture.on_replay(self.step, after=True)  # needle.jit: stepped inside a captured step
        return self.optimizer.lr

    def get_last_lr(self) -> float:
        return self.optimizer.lr

    def state_dict(self) -> dict:
        state = {"base_lr": self.base_lrs[0], "last_epoch": self.last_epoch}
        if len(self.base_lrs) > 1:
            state["base_lrs"] = list(self.base_lrs)
        return state

    def load_state_dict(self, state) -> None:
        if "base_lrs" in state:
            self.base_lrs = [float(v) for v in state["base_lrs"]]
        else:
            self.base_lrs = [float(state["base_lr"])] * len(self.base_lrs)
        self.last_epoch = int(state["last_epoch"])
        self._apply()


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        step_size = check_int("StepLR", "step_size", step_size, 1)
        check_float("StepLR", "gamma", gamma, 0.0)
        super().__init__(optimizer)
        self.step_size = step_size
        self.gamma = gamma

    def lr_from(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2, flat after T_max."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        T_max = check_int("CosineAnnealingLR", "T_max", T_max, 1)
        check_float("CosineAnnealingLR", "eta_min", eta_min, 0.0)
        super().__init__(optimizer)
        self.T_max = T_max
        self.eta_min = eta_min

    def lr_from(self, base_lr, epoch):
        e = min(epoch, self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * e / self.T_max)) / 2
