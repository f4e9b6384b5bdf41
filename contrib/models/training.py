"""The one epoch loop behind every training function of ``needle.models``.

``epoch`` (hw2), ``epoch_general_cifar10`` / ``epoch_general_ptb`` (hw4) and
``needle train`` differ only in how a batch becomes ``(loss, correct,
count)`` and in what they report, so each passes a ``forward`` function to
:func:`run_epoch` and reads the :class:`EpochTotals` it returns.  The loop
itself draws no random numbers: the course functions seed NumPy before
calling it, so their dropout masks and shuffles are what they always were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import needle as ndl

__all__ = ["EpochTotals", "run_epoch", "count_correct"]


@dataclass
class EpochTotals:
    """What one pass saw: ``loss_sum`` (per-batch mean loss times batch
    size, summed), ``correct`` predictions and ``count`` samples."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.count

    @property
    def accuracy(self) -> float:
        return self.correct / self.count

    @property
    def error(self) -> float:
        return (self.count - self.correct) / self.count


def count_correct(logits, y) -> int:
    """How many rows of ``logits`` have their largest entry at the label in ``y``."""
    return int((logits.numpy().argmax(axis=1) == y.numpy()).sum())


def run_epoch(batches: Iterable, forward: Callable, model, opt=None, *, clip: Optional[float] = None,
              max_batches: Optional[int] = None,
              on_batch: Optional[Callable[[EpochTotals], None]] = None) -> EpochTotals:
    """One pass over ``batches``: trains ``model`` when ``opt`` is given
    (reset, backward, optional gradient clipping to norm ``clip``, step),
    else evaluates it without recording a graph.

    ``forward(batch) -> (loss Tensor, correct int, count int)``; at most
    ``max_batches`` batches; ``on_batch(totals)`` after each (progress bars).
    """
    training = opt is not None
    model.train() if training else model.eval()
    totals = EpochTotals()
    for k, batch in enumerate(batches):
        if max_batches is not None and k >= max_batches:
            break
        if training:
            loss, correct, count = forward(batch)
            opt.reset_grad()
            loss.backward()
            if clip:
                opt.clip_grad_norm(clip)
            opt.step()
        else:
            with ndl.no_grad():
                loss, correct, count = forward(batch)
        totals.loss_sum += float(loss.numpy()) * count
        totals.correct += correct
        totals.count += count
        if on_batch is not None:
            on_batch(totals)
    return totals
