"""``needle launch``: start a data-parallel job with the MPI library's mpiexec.

    needle launch -n 2 train.py --epochs 1
    needle launch -n 8 --hostfile hosts train.py        # several machines

Each rank runs the script through :mod:`needle.distributed.run`, so an
uncaught exception on any rank prints that rank's traceback and aborts every
rank (no rank is left waiting in a collective).  The flags a given MPI needs
are added here: MPICH's Hydra runs as root and oversubscribed as is; Open MPI
needs ``--allow-run-as-root`` (as root) and ``--oversubscribe``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from needle.cli import CommandExit, CommandParser

__all__ = ["launch_command", "find_mpiexec", "mpiexec_command", "threads_per_rank"]


def find_mpiexec() -> tuple[str, str]:
    """``(path, flavour)`` of the mpiexec to use: the one beside this Python
    (the mpich wheel installs it there) first, then PATH.  ``flavour`` is
    ``mpich``, ``openmpi`` or ``unknown``."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    path = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if path is None:
        raise FileNotFoundError("no mpiexec found beside this Python or on PATH; install an MPI with "
                                "pip install 'needle-dl[mpi]'  (mpi4py + the mpich wheel)")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    if "HYDRA" in out or "MPICH" in out:
        return path, "mpich"
    if "Open MPI" in out or "OpenRTE" in out or "Open RTE" in out:
        return path, "openmpi"
    return path, "unknown"


def mpiexec_command(nproc: int, program: list[str], hostfile: str | None = None,
                    mpiexec: tuple[str, str] | None = None) -> list[str]:
    """The full command line that runs ``program`` (argv after the Python
    interpreter) on ``nproc`` ranks."""
    path, flavour = mpiexec or find_mpiexec()
    cmd = [path, "-n", str(nproc)]
    if flavour == "openmpi":
        cmd.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
        if hostfile:
            cmd += ["--hostfile", hostfile]
    elif hostfile:
        cmd += ["-f", hostfile]  # Hydra (MPICH) and most others
    return cmd + [sys.executable, "-m", "needle.distributed.run"] + program


def threads_per_rank(nproc: int) -> int:
    """Compute threads per rank when ``nproc`` ranks share this machine's cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // nproc)


def build_parser():
    p = CommandParser(prog="needle launch", description="Run a script on N processes with mpiexec "
                "(needle.distributed); an uncaught exception on any rank ends all of them.")
    p.add_argument("-n", "--nproc", type=int, required=True, help="number of processes (ranks)")
    p.add_argument("--hostfile", default=None, help="MPI hostfile listing the machines (one per line, "
                   "optionally host:slots); default: all ranks on this machine")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds a collective waits for the other ranks (sets NEEDLE_DIST_TIMEOUT)")
    p.add_argument("-m", dest="module", default=None, help="run a module (like python -m) instead of a script")
    p.add_argument("--dry-run", action="store_true", help="print the mpiexec command and exit")
    p.add_argument("script", nargs="?", help="the Python script each rank runs")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    return p


def launch_command(argv: list[str]) -> int:
    """Entry point of ``needle launch``; returns mpiexec's exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except CommandExit as stop:
        return stop.status
    if args.module is None and not args.script:
        print("needle launch: error: give a script (or -m module)", file=sys.stderr)
        return 2
    if args.nproc < 1:
        print(f"needle launch: error: -n must be at least 1, got {args.nproc}", file=sys.stderr)
        return 2
    if args.hostfile and not os.path.isfile(args.hostfile):
        print(f"needle launch: error: --hostfile {args.hostfile} does not exist", file=sys.stderr)
        return 2
    if args.module is not None:
        program = ["-m", args.module] + ([args.script] if args.script else []) + args.args
    else:
        if not os.path.isfile(args.script):
            print(f"needle launch: error: no script {args.script}", file=sys.stderr)
            return 2
        program = [args.script] + args.args
    try:
        cmd = mpiexec_command(args.nproc, program, args.hostfile)
    except FileNotFoundError as exc:
        print(f"needle launch: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    env = dict(os.environ)
    if not args.hostfile and not (env.get("NEEDLE_NUM_THREADS") or env.get("OMP_NUM_THREADS")):
        # N ranks on one machine share its cores: N x all-cores OpenMP threads would thrash
        # (torchrun does the same); set NEEDLE_NUM_THREADS yourself to choose otherwise
        env["NEEDLE_NUM_THREADS"] = str(threads_per_rank(args.nproc))
    if args.timeout is not None:
        env["NEEDLE_DIST_TIMEOUT"] = str(args.timeout)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
