"""The MPI process group: mpi4py, nonblocking collectives, a timeout that names
the rank that did not arrive.

Every wait for other ranks is a nonblocking collective (``Ibarrier``, the
descriptor ``Iallgather`` that precedes each public collective, DDP's bucket
``Iallreduce``) completed by :meth:`MpiGroup.wait`, which polls the request
against a deadline.  MPI itself has no timeouts, so this is where a hang
becomes an error.  Once the descriptor exchange has shown every rank inside
the same collective, its data moves by the blocking call.  While polling, a rank also answers
"where are you?" queries on a second communicator; a rank whose wait expires
asks every other rank, and the ones that do not answer with the same
collective number are named in the error.

mpi4py is imported here only, on first use, so ``import needle`` and
``import needle.distributed`` never need it.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from needle.errors import BackendUnavailableError, DistributedTimeoutError

_QUERY, _REPLY = 7301, 7302
# how long a timed-out rank waits for the others to say where they are
_PRESENCE_GRACE_S = 2.0
# how long a wait polls back to back before it starts to nap
_SPIN_S = 1.0
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))
# polls before the timed loop (tens of microseconds): few, since a rank that
# spins without yielding starves a peer that shares its core
_TIGHT_POLLS = 32


def import_mpi():
    """``mpi4py.MPI``, or a BackendUnavailableError saying how to get it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise BackendUnavailableError(
            f"needle.distributed: the 'mpi' backend needs mpi4py and an MPI library ({exc}); "
            f"install them with  pip install 'needle-dl[mpi]'  (mpi4py + the mpich wheel)") from None
    return MPI


class MpiGroup:
    """All ranks of ``MPI.COMM_WORLD``; collectives on contiguous NumPy buffers."""

    backend = "mpi"

    def __init__(self, timeout: float):
        MPI = self.MPI = import_mpi()
        self.comm = MPI.COMM_WORLD.Dup()     # collectives
        self.ctl = MPI.COMM_WORLD.Dup()      # presence queries, never mixed with data
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = float(timeout)
        self.seq = 0                         # collectives started by this rank
        self.current = "idle"                # what this rank is waiting in, for the others
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "avg": MPI.SUM}
        self._rows = {}                      # reused receive buffers of the descriptor check

    # -- starting ------------------------------------------------------------
    def _started(self, what: str):
        self.seq += 1
        return (self.seq, what)

    def iallreduce(self, buf: np.ndarray, op: str, what: str = "all_reduce"):
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, self._ops[op])
        return req, self._started(what)

    def ibroadcast(self, buf: np.ndarray, src: int, what: str = "broadcast"):
        return self.comm.Ibcast(buf, root=src), self._started(what)

    def iallgather(self, send: np.ndarray, recv: np.ndarray, what: str = "all_gather"):
        return self.comm.Iallgather(send, recv), self._started(what)

    def ibarrier(self, what: str = "barrier"):
        return self.comm.Ibarrier(), self._started(what)

    # -- blocking: only once every rank is known to be in the collective -------
    def allreduce(self, buf: np.ndarray, op: str) -> None:
        """The data transfer after the descriptor check (bcast and allgather
        likewise): every rank passed the check, so none can be absent and a
        blocking call cannot hang on one.  Polling a nonblocking transfer from
        Python instead cost +10% at 1 MB and +30 us at 4 KB (MPICH progresses
        it only inside the polls)."""
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, self._ops[op])

    def bcast(self, buf: np.ndarray, src: int) -> None:
        self.comm.Bcast(buf, root=src)

    def allgather(self, send: np.ndarray, recv: np.ndarray) -> None:
        self.comm.Allgather(send, recv)

    # -- completing ------------------------------------------------------------
    def test(self, handle) -> bool:
        """Drive MPI progress on ``handle``; True once it is complete."""
        return handle[0].Test()

    def wait(self, handle) -> None:
        """Complete ``handle`` or raise DistributedTimeoutError after ``timeout`` s."""
        req, (seq, what) = handle
        self._poll(req.Test, seq, what)

    def _poll(self, ready, seq: int, what: str) -> None:
        """Call ``ready()`` until it is true, or raise DistributedTimeoutError.

        MPICH advances a nonblocking collective only inside MPI calls, on
        both sides: a rank that sleeps between polls stalls its peer's
        transfer too (measured: 16 ms per DDP step with 2 ms naps).  So for
        the first second it polls back to back, yielding the core between
        polls (``sched_yield``: free when nothing else wants the core), and
        only then naps, so a rank waiting long (its peer evaluating alone)
        leaves the core to the others.
        """
        # most waits end within microseconds of the last rank's arrival:
        # poll back to back first, without the clock and the yield
        for _ in range(_TIGHT_POLLS):
            if ready():
                return
        self.current = f"#{seq} {what}"
        start = time.perf_counter()
        deadline = start + self.timeout
        next_check = start + 0.01
        try:
            while not ready():
                now = time.perf_counter()
                if now >= next_check:  # the timeout and the others' queries, every 10 ms
                    if now > deadline:
                        self._timed_out(seq, what)
                    self._answer_queries()
                    next_check = now + 0.01
                if now - start < _SPIN_S:
                    _yield()
                else:
                    time.sleep(0.0005)
        finally:
            self.current = "idle"

    # -- the descriptor check before each public collective ----------------------
    def exchange_rows(self, row: np.ndarray, what: str) -> np.ndarray:
        """Every rank's ``row`` (int64), in rank order, once all ranks gave
        theirs (one small allgather): the arrival check, under the timeout.
        (An MPI shared-memory window instead was tried: its exchange took
        longer, ~24 vs ~14 us, and the passive-target epoch it keeps open
        slowed MPICH's progress on the data transfer that follows.)"""
        rows = self._rows.get(row.size)
        if rows is None:
            rows = self._rows[row.size] = np.empty((self.size, row.size), dtype=np.int64)
        self.wait(self.iallgather(row, rows, what=what))
        return rows

    def _answer_queries(self) -> None:
        MPI = self.MPI
        status = MPI.Status()
        while self.ctl.Iprobe(source=MPI.ANY_SOURCE, tag=_QUERY, status=status):
            src = status.Get_source()
            self.ctl.recv(source=src, tag=_QUERY)
            self.ctl.isend(self.current, dest=src, tag=_REPLY)

    def _timed_out(self, seq: int, what: str):
        """Ask the others where they are, then raise naming the absent ranks."""
        others = [r for r in range(self.size) if r != self.rank]
        for r in others:
            self.ctl.isend(None, dest=r, tag=_QUERY)
        answers = {}
        stop = time.perf_counter() + _PRESENCE_GRACE_S
        while len(answers) < len(others) and time.perf_counter() < stop:
            self._answer_queries()
            status = self.MPI.Status()
            if self.ctl.Iprobe(source=self.MPI.ANY_SOURCE, tag=_REPLY, status=status):
                answers[status.Get_source()] = self.ctl.recv(source=status.Get_source(), tag=_REPLY)
            else:
                time.sleep(0.001)
        here = f"#{seq} {what}"
        absent = []
        for r in others:
            if r not in answers:
                absent.append(f"rank {r} (no answer: busy outside needle.distributed, or dead)")
            elif answers[r] != here:
                absent.append(f"rank {r} (it is in {answers[r]})")
        names = "; ".join(absent) or "none found (all answered; the MPI library itself is stuck)"
        raise DistributedTimeoutError(
            f"needle.distributed: {what} (collective {here.split()[0]}) timed out after {self.timeout:g} s on "
            f"rank {self.rank} of {self.size}; did not arrive: {names}. Raise the limit with "
            f"init_process_group(timeout=...) or NEEDLE_DIST_TIMEOUT if the work between collectives is long.")

    # -- lifetime ---------------------------------------------------------------
    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (uncaught exception on this rank)."""
        try:
            sys.stderr.flush()
            sys.stdout.flush()
        finally:
            self.MPI.COMM_WORLD.Abort(code)

    def close(self) -> None:
        for comm in (self.comm, self.ctl):
            try:
                comm.Free()
            except Exception:  # noqa: BLE001 -- MPI may already be finalised at exit
                pass

