"""needle.optim: optimizers (course API §5, docs/design.md), gradient clipping and LR schedules."""

from .optimizer import SGD, Adam, Optimizer, clip_grad_norm
from .lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR

__all__ = ["Optimizer", "SGD", "Adam", "clip_grad_norm", "LRScheduler", "StepLR", "CosineAnnealingLR"]
