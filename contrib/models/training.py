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

    When needle.jit raises ``JitError`` (a layer whose kernel the backend
    lacks, a host read in the model) the step runs eagerly from then on, for
    every batch shape: an eager optimizer step gives the parameters new
    arrays, which the captures of the other shapes would refuse to replay.
    ``on_fallback(exc)`` is told once; ``fallback`` keeps the error.
    ``stats`` are the jitted function's, the eager steps after a fallback
    counted under ``"eager"``.
    """

    def __init__(self, inputs: Callable, outputs: Callable, result: Callable, opt, *, native: bool = True,
                 on_fallback: Optional[Callable[[JitError], None]] = None):
        self.inputs, self.outputs, self.result, self.opt = inputs, outputs, result, opt
        self.on_fallback = on_fallback
        self.fallback: Optional[JitError] = None
        self._eager_after_fallback = 0
        # how far the step body got, and its outputs once done: a capture can
        # fail after the step ran (planning the buffers), and then the batch
        # is trained and must not run again
        self._phase = None
        self._done = None
        self.jitted = ndl.jit(self._train_step, native=native)

    @property
    def stats(self) -> dict:
        stats = dict(self.jitted.stats)
        stats["eager"] += self._eager_after_fallback
        return stats

    def plan_info(self) -> list:
        return [] if self.fallback is not None else self.jitted.plan_info()

    def _train_step(self, *inputs):
        self._phase = "forward"
        self.opt.reset_grad()
        loss, logits, carry = self.outputs(*inputs)
        loss.backward()
        self._phase = "optimizer"
        self.opt.step()
        self._phase = "done"
        # graph-free views of the results (the graph itself stays free to go,
        # so the capture can plan its buffers into the arena)
        self._done = (loss.detach(), logits.detach(), _detached(carry))
        return loss, logits, carry

    def __call__(self, batch):
        args = self.inputs(batch)
        if self.fallback is not None:
            self._eager_after_fallback += 1
            loss, logits, carry = self._train_step(*args)
        else:
            loss, logits, carry = self._jitted_step(args)
        self._phase, self._done = None, None
        correct, count = self.result(batch, logits, carry)
        return loss, correct, count

    def _jitted_step(self, args):
        self._phase, self._done = None, None
        try:
            return self.jitted(*args)
        except JitError as exc:
            phase, done = self._phase, self._done
            self._phase, self._done = None, None
            if phase == "optimizer":  # some parameters may have moved: running again would move them twice
                raise
            # the jitted function keeps the error; its traceback's frames would
            # keep the failed step's half-built Tensors alive, and a later
            # capture (of any jitted function) walks every live Tensor
            exc.__traceback__ = None
            self.fallback = exc
            self.jitted.reset()  # its captures are stale once an eager step has run
            if self.on_fallback is not None:
                self.on_fallback(exc)
            if phase == "done":       # the step ran; only its capture failed
                return done
            # failed before any update (in the forward pass, or before the body ran)
            self._eager_after_fallback += 1
            return self._train_step(*args)


def _detached(state):
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(_detached(s) for s in state)
    return state.detach()
