"""``python -m needle.distributed.run script.py args...`` (or ``-m module``):
what each rank of ``needle launch`` runs.

Runs the script as ``__main__``; if it raises, prints the traceback headed by
the rank and aborts every rank of the job (``MPI_Abort``), as ``mpi4py.run``
does, so no other rank hangs in a collective waiting for this one.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
import traceback


def _rank_text() -> str:
    for rank, size in (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")):
        if rank in os.environ:
            return f"rank {os.environ[rank]} of {os.environ.get(size, '?')}"
    return "rank ?"


def _abort(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        from mpi4py import MPI
    except ImportError:
        os._exit(code)
    # MPICH's launcher forwards each rank's output through a pipe; an abort
    # right after the write can kill the forwarder first and lose the message
    # that says why the job ended (seen on a loaded machine): give it a moment
    time.sleep(0.5)
    MPI.COMM_WORLD.Abort(code)


def main(argv: list[str]) -> None:
    if not argv:
        print("usage: python -m needle.distributed.run script.py [args...] | -m module [args...]",
              file=sys.stderr)
        sys.exit(2)
    try:
        if argv[0] == "-m":
            sys.argv = argv[1:]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code
        if code not in (None, 0) and not isinstance(code, int):
            print(code, file=sys.stderr)  # sys.exit("message")
            code = 1
        if code not in (None, 0):
            sys.stderr.write(f"needle.distributed: {_rank_text()} exited with status {code}; aborting all ranks\n")
            _abort(int(code))
        raise
    except BaseException:  # noqa: BLE001 -- any failure must end the whole job
        sys.stderr.write(f"needle.distributed: uncaught exception on {_rank_text()}; aborting all ranks\n"
                         + traceback.format_exc())
        _abort(1)


if __name__ == "__main__":
    main(sys.argv[1:])
