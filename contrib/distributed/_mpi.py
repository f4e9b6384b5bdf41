"""The MPI process group: mpi4py, nonblocking collectives, a timeout that names
the rank that did not arrive.

Every collective is started nonblocking (``Iallreduce``, ``Ibcast``,
``Iallgather``, ``Ibarrier``) and completed by :meth:`MpiGroup.wait`, which
polls the request against a deadline.  MPI itself has no timeouts, so this is
where a hang becomes an error.  While polling, a rank also answers
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
# the longest descriptor row a collective exchanges (needle.distributed._ROW)
_ROW_CAPACITY = 16
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
        self.board = NodeBoard.create(self, _ROW_CAPACITY)

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
        theirs: the arrival check, under the timeout.  Through shared memory
        when every rank is on this node, else by a small allgather."""
        if self.board is not None:
            return self.board.exchange(row, self, what)
        rows = np.empty((self.size, row.size), dtype=np.int64)
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
        if self.board is not None:
            self.board.close()
        for comm in (self.comm, self.ctl):
            try:
                comm.Free()
            except Exception:  # noqa: BLE001 -- MPI may already be finalised at exit
                pass


class NodeBoard:
    """The ranks' descriptor rows in one shared-memory segment of the node.

    Every public collective first checks that all ranks pass the same
    shape, dtype and op -- MPI does not, and MPICH reduces mismatched buffers
    into garbage without an error.  As a small MPI allgather that check cost
    10-15% of a 1 MB allreduce (a second synchronisation, ~25 us right after
    a large transfer).  When all ranks share this node (MPI_COMM_TYPE_SHARED)
    each rank instead writes its row, then the exchange's number, into its
    slot of an MPI shared window and polls until every slot shows that
    number: a few microseconds.

    Two slots per rank, used alternately: a rank can start exchange k+1
    while a slower one still reads exchange k, but not k+2 -- that needs
    the slower rank's row of k+1, written after it finished reading k.
    ``Win_sync`` orders the row before the number for other processors
    (a compiler and memory barrier; x86 would keep the order anyway).
    """

    def __init__(self, win, table, rank):
        self.win, self.table, self.rank = win, table, rank
        self.count = 0                       # exchanges done by this rank

    @classmethod
    def create(cls, group, row_len: int):
        """The board of ``group``, or None when its ranks span several nodes
        (or the MPI library cannot share memory, or ``NEEDLE_DIST_SHM=0``):
        then rows go by allgather."""
        MPI = group.MPI
        if group.size < 2 or os.environ.get("NEEDLE_DIST_SHM", "1") == "0":
            return None
        try:
            node = group.comm.Split_type(MPI.COMM_TYPE_SHARED, key=group.rank)
        except MPI.Exception:
            return None
        try:
            # one flag on every rank: the whole world is on this node
            everyone_here = group.comm.allreduce(int(node.Get_size() == group.size), op=MPI.MIN)
            if not everyone_here:
                return None
            shape = (group.size, 2, 1 + row_len)      # [rank, slot, (number, row...)]
            nbytes = int(np.prod(shape)) * 8
            win = table = None
            try:
                win = MPI.Win.Allocate_shared(nbytes if node.Get_rank() == 0 else 0, 8, comm=node)
                buf, _ = win.Shared_query(0)
                table = np.ndarray(shape, dtype=np.int64, buffer=buf)
            except MPI.Exception:
                pass                                  # no shared memory here (a full /dev/shm ...)
            # every rank takes the same way, or none uses the board
            if not group.comm.allreduce(int(table is not None), op=MPI.MIN):
                if win is not None:
                    win.Free()
                return None
            if node.Get_rank() == 0:
                table[...] = 0
            win.Lock_all(MPI.MODE_NOCHECK)
            win.Sync()
            node.Barrier()                            # the zeroed table before anyone writes
            return cls(win, table, group.rank)
        finally:
            node.Free()

    def exchange(self, row: np.ndarray, group, what: str) -> np.ndarray:
        self.count += 1
        number, slot = self.count, self.count & 1
        mine = self.table[self.rank, slot]
        mine[1:1 + row.size] = row
        self.win.Sync()                               # the row before the number
        mine[0] = number
        numbers = self.table[:, slot, 0]
        sync = self.win.Sync

        def all_here() -> bool:
            if (numbers == number).all():
                sync()                                # their rows after their numbers
                return True
            return False

        seq, what = group._started(what)
        group._poll(all_here, seq, what)
        return self.table[:, slot, 1:1 + row.size].copy()

    def close(self) -> None:
        try:
            self.win.Unlock_all()
            self.win.Free()
        except Exception:  # noqa: BLE001 -- MPI may already be finalised at exit
            pass
