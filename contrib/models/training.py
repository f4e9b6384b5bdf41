"""The one epoch loop behind every training function of ``needle.models``.

``epoch`` (hw2), ``epoch_general_cifar10`` / ``epoch_general_ptb`` (hw4) and
``needle train`` differ only in how a batch becomes ``(loss, correct,
count)`` and in what they report, so each passes a ``forward`` function to
:func:`run_epoch` and reads the :class:`EpochTotals` it returns.  The loop
itself draws no random numbers: the course functions seed NumPy before
calling it, so their dropout masks and shuffles are what they always were.

``needle train --jit`` passes a :class:`JitTrainStep` instead: the whole
training step (forward, loss, backward, optimizer step) goes through
``needle.jit``, and the loop reads the loss and the logits it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import needle as ndl
from needle.errors import JitError

__all__ = ["EpochTotals", "run_epoch", "count_correct", "JitTrainStep"]


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
              on_batch: Optional[Callable[[EpochTotals], None]] = None,
              step: Optional[Callable] = None) -> EpochTotals:
    """One pass over ``batches``: trains ``model`` when ``opt`` is given
    (reset, backward, optional gradient clipping to norm ``clip``, step),
    else evaluates it without recording a graph.

    ``forward(batch) -> (loss Tensor, correct int, count int)``; at most
    ``max_batches`` batches; ``on_batch(totals)`` after each (progress bars).
    ``step`` (training only): ``step(batch) -> (loss, correct, count)`` that
    updates the model itself (a :class:`JitTrainStep`), used instead of
    ``forward`` and the reset/backward/step here.
    """
    training = opt is not None
    if step is not None and clip:
        # clipping reads the global norm on the host, which a captured step cannot do
        raise ValueError("run_epoch: gradient clipping is not available with a compiled step")
    model.train() if training else model.eval()
    totals = EpochTotals()
    for k, batch in enumerate(batches):
        if max_batches is not None and k >= max_batches:
            break
        if training and step is not None:
            loss, correct, count = step(batch)
        elif training:
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


class JitTrainStep:
    """One training step through ``needle.jit``: ``step(batch) -> (loss
    Tensor, correct int, count int)``, the model and optimizer updated.

    The task's step is split so that the jitted part does no host reads:
    ``inputs(batch)`` gives the step's Tensor arguments (the carried
    recurrent state among them, so a replay reads this batch's state rather
    than the one captured), ``outputs(*inputs) -> (loss, logits, carry)``
    runs the model and loss on the device, and ``result(batch, logits,
    carry) -> (correct, count)`` reads the returned Tensors after the call.

    When a capture raises ``JitError`` inside the step (a layer whose kernel
    the backend lacks, a host read in the model) nothing was updated yet:
    needle.jit runs that batch shape eagerly from then on, and this batch is
    run again that way.  ``on_fallback(exc)`` is told once; ``fallback``
    keeps the error.  (A step that ran but could not be planned is needle.jit's
    to handle: it warns and returns the step's results.)
    """

    def __init__(self, inputs: Callable, outputs: Callable, result: Callable, opt, *, native: bool = True,
                 on_fallback: Optional[Callable[[JitError], None]] = None):
        self.inputs, self.outputs, self.result, self.opt = inputs, outputs, result, opt
        self.on_fallback = on_fallback
        self.fallback: Optional[JitError] = None
        self._updating = False
        self.jitted = ndl.jit(self._train_step, native=native)

    @property
    def stats(self) -> dict:
        return dict(self.jitted.stats)

    def plan_info(self) -> list:
        return self.jitted.plan_info()

    def _train_step(self, *inputs):
        self.opt.reset_grad()
        loss, logits, carry = self.outputs(*inputs)
        loss.backward()
        self._updating = True
        self.opt.step()
        self._updating = False
        return loss, logits, carry

    def __call__(self, batch):
        args = self.inputs(batch)
        try:
            loss, logits, carry = self.jitted(*args)
        except JitError as exc:
            if self._updating:  # some parameters may have moved: running again would move them twice
                self._updating = False
                raise
            if self.fallback is None:
                self.fallback = exc
                if self.on_fallback is not None:
                    self.on_fallback(exc)
            loss, logits, carry = self.jitted(*args)   # this shape now runs eagerly
        correct, count = self.result(batch, logits, carry)
        return loss, correct, count


