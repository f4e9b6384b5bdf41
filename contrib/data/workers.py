"""Worker processes for ``DataLoader(num_workers > 0)``.

Each epoch starts ``num_workers`` processes.  The main process hands out
batches round-robin (batch ``b`` to worker ``b % num_workers``), keeping
``prefetch_factor`` batches per worker in flight; a worker fetches the
samples (transforms run there, in parallel) and collates them into NumPy
arrays, which come back through one result queue.  The main process
returns batches strictly in order and wraps them in Tensors itself, so no
needle array ever crosses a process boundary.

Shutdown is always attempted: at the end of the epoch, when the epoch is
abandoned (a new ``iter()``, the loader garbage-collected), on an error in
a worker (re-raised in the main process with the worker's traceback) and
on Ctrl-C in the main process.  Workers ignore SIGINT (a terminal's Ctrl-C
reaches the whole process group; the main process decides), are daemonic
(ended when the main interpreter exits) and exit by themselves within about
a second if the main process dies without cleaning up (killed with SIGKILL).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from needle.errors import NeedleError

__all__ = ["DataLoaderWorkerError", "WorkerInfo", "get_worker_info"]

#: seconds between liveness checks while waiting on a queue
_POLL = 0.5


class DataLoaderWorkerError(NeedleError, RuntimeError):
    """A DataLoader worker process died, or failed with an exception that cannot be re-raised as its own type."""


@dataclass(frozen=True)
class WorkerInfo:
    """What :func:`get_worker_info` returns inside a worker process."""

    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: Optional[WorkerInfo] = None


def get_worker_info() -> Optional[WorkerInfo]:
    """Inside a DataLoader worker: its id, the worker count, its seed and its
    copy of the dataset (for ``worker_init_fn`` or a dataset that shards
    itself).  ``None`` in the main process."""
    return _worker_info


class _Failure:
    """An exception raised in a worker, carried back to the main process."""

    def __init__(self, worker_id: int, batch: int, exc: BaseException):
        self.worker_id, self.batch = worker_id, batch
        self.type_name = type(exc).__name__
        self.text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:  # the type itself, if it can travel (a class defined in __main__ under spawn cannot)
            self.exc_type = type(exc) if isinstance(exc, Exception) else None
            import pickle
            pickle.dumps(self.exc_type)
        except Exception:
            self.exc_type = None

    def error(self, pid) -> BaseException:
        where = "in worker_init_fn" if self.batch < 0 else f"on batch {self.batch}"
        message = (f"DataLoader worker {self.worker_id} (pid {pid}) raised {self.type_name} {where}; "
                   f"its traceback:\n{self.text}")
        if self.exc_type is not None:
            try:
                return self.exc_type(message)
            except Exception:
                pass
        return DataLoaderWorkerError(message)


def _worker_loop(dataset, fetch: Callable, jobs, results, worker_id: int, num_workers: int, seed: int,
                 worker_init_fn, parent_pid: int) -> None:
    global _worker_info
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the main process to handle
    np.random.seed(seed)
    random.seed(seed)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
    try:
        if worker_init_fn is not None:
            worker_init_fn(worker_id)
    except Exception as exc:  # noqa: BLE001 - reported to the main process
        results.put((-1, _Failure(worker_id, -1, exc)))
        return
    while True:
        try:
            job = jobs.get(timeout=_POLL)
        except queue.Empty:
            if os.getppid() != parent_pid:  # the main process is gone: do not linger as an orphan
                return
            continue
        if job is None:
            return
        batch, indices = job
        try:
            out = fetch(dataset, indices)
        except Exception as exc:  # noqa: BLE001 - reported to the main process
            out = _Failure(worker_id, batch, exc)
        results.put((batch, out))


class WorkerPool:
    """One epoch of worker processes feeding ``batches`` (index arrays) in order."""

    def __init__(self, dataset, batches: list, fetch: Callable, num_workers: int, base_seed: int,
                 worker_init_fn=None, context=None, prefetch_factor: int = 2):
        ctx = multiprocessing.get_context(context)
        self.batches = batches
        self.results = ctx.Queue()
        self.jobs = [ctx.Queue() for _ in range(num_workers)]
        self.workers = []
        self.closed = False
        self.sent = self.next = 0
        self.ready: dict = {}
        try:
            for i in range(num_workers):
                w = ctx.Process(target=_worker_loop, daemon=True, name=f"needle-DataLoader-worker-{i}",
                                args=(dataset, fetch, self.jobs[i], self.results, i, num_workers,
                                      (base_seed + i) % 2**32, worker_init_fn, os.getpid()))
                w.start()
                self.workers.append(w)
            for _ in range(prefetch_factor * num_workers):
                self._send()
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list:
        return [w.pid for w in self.workers]

    def _send(self) -> None:
        if self.sent < len(self.batches):
            self.jobs[self.sent % len(self.jobs)].put((self.sent, self.batches[self.sent]))
            self.sent += 1

    def _check_alive(self) -> None:
        """Raise if a worker has died; called when the result queue stays empty."""
        for i, w in enumerate(self.workers):
            if w.exitcode is not None and not self.closed:
                try:  # what it sent just before exiting (a failure report) may still be in the pipe
                    batch, out = self.results.get(timeout=_POLL)
                except queue.Empty:
                    pass
                else:
                    self._receive(batch, out)
                    return
                code = w.exitcode
                self.close()
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                raise DataLoaderWorkerError(
                    f"DataLoader worker {i} (pid {w.pid}) {how} before the epoch ended "
                    "(out of memory? a crash in the dataset's code?)")

    def _receive(self, batch, out) -> None:
        if batch < 0:  # worker_init_fn failed: no batch will come from that worker
            self._raise(out)
        self.ready[batch] = out  # a failure too: it is raised at its batch's turn, as in order

    def _raise(self, failure: _Failure) -> None:
        self.close()
        raise failure.error(self.workers[failure.worker_id].pid)

    def next_batch(self):
        """The next batch's collated arrays; StopIteration after the last one."""
        if self.next >= len(self.batches):
            self.close()
            raise StopIteration
        try:
            while self.next not in self.ready:
                try:
                    batch, out = self.results.get(timeout=_POLL)
                except queue.Empty:
                    self._check_alive()
                    continue
                self._receive(batch, out)
            out = self.ready.pop(self.next)
            if isinstance(out, _Failure):
                self._raise(out)
            self.next += 1
            self._send()
            return out
        except BaseException:  # Ctrl-C and errors: no worker outlives the epoch
            self.close()
            raise

    def close(self) -> None:
        """Stop every worker (asking first, then terminating) and release the queues."""
        if self.closed:
            return
        self.closed = True
        for q in self.jobs:
            try:
                q.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 1.0  # one second in all for workers to finish by themselves
        for w in self.workers:
            w.join(timeout=max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            if w.is_alive():
                w.terminate()
                w.join(timeout=2.0)
            if w.is_alive():  # pragma: no cover - terminate ignored
                w.kill()
                w.join()
        for q in (*self.jobs, self.results):
            q.cancel_join_thread()  # do not block exit on items nobody will read
            q.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
