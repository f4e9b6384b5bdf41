"""The ``needle`` command.

Built-in subcommands live here; others (``needle train``) come from entry
points in the group ``needle.commands``: each names a callable
``command(argv: list[str]) -> int``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

COMMAND_GROUP = "needle.commands"


class CommandExit(Exception):
    """Raised by :class:`CommandParser` where argparse would exit; ``status``
    is the exit code (0 after ``--help``, 2 after a usage error)."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


class CommandParser(argparse.ArgumentParser):
    """argparse for a ``needle`` subcommand (``command(argv) -> int``): it
    raises :class:`CommandExit` instead of exiting, so the command returns
    the code to its caller (tests, ``needle.cli.main``)."""

    def exit(self, status=0, message=None):
        if message:
            self._print_message(message, sys.stderr)
        raise CommandExit(status)


def _cmd_backends(argv):
    parser = argparse.ArgumentParser(prog="needle backends",
                                     description="List discovered backends and why any is unavailable.")
    parser.add_argument("--reasons-only", action="store_true",
                        help="show only the unavailability reasons, not each backend's build/runtime config")
    parser.add_argument("--config", action="store_true", help=argparse.SUPPRESS)  # the default; kept for scripts
    args = parser.parse_args(argv)
    from .info import backends_table
    print(backends_table(with_config=not args.reasons_only))
    return 0


def _cmd_config(argv):
    argparse.ArgumentParser(prog="needle config", description="Versions, backends, build flags, threads.").parse_args(argv)
    from .info import show_config
    show_config()
    return 0


def _cmd_bench(argv):
    """Run benchmarks/compare.py in a source checkout; from an installed wheel,
    the kernels section it ships (``needle_benchmarks``), in a subprocess so
    that core never imports it."""
    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.join(os.path.dirname(here), "benchmarks", "compare.py")
    if os.path.exists(script):
        return subprocess.call([sys.executable, script, *argv])
    if importlib.util.find_spec("needle_benchmarks") is None:
        print("needle bench: neither benchmarks/compare.py (a source checkout) nor the needle_benchmarks "
              "package (installed with needle-dl) was found; reinstall: pip install needle-dl", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "needle_benchmarks.kernels_report", *argv])


def _missing_test_deps() -> list:
    return [m for m in ("pytest", "hypothesis") if importlib.util.find_spec(m) is None]


def _cmd_check_backend(argv):
    parser = argparse.ArgumentParser(prog="needle check-backend",
                                     description="Run the conformance suite against one backend; "
                                                 "other arguments go to pytest (e.g. --needle-quick, -k matmul).")
    parser.add_argument("backend")
    args, pytest_args = parser.parse_known_args(argv)
    args.pytest_args = pytest_args
    missing = _missing_test_deps()
    if missing:
        print(f"needle check-backend: the conformance suite needs {' and '.join(missing)}; "
              "install them with: pip install 'needle-dl[test]'", file=sys.stderr)
        return 2
    from .testing import run_suite  # pytest is imported only inside needle.testing
    return run_suite(args.backend, args.pytest_args)


BUILTIN = {
    "backends": (_cmd_backends, "list backends: name, version, availability and reason, devices"),
    "config": (_cmd_config, "versions, build flags (OpenMP, SIMD) and thread counts"),
    "bench": (_cmd_bench, "timings vs NumPy/PyTorch: benchmarks/compare.py in a checkout, kernels from a wheel"),
    "check-backend": (_cmd_check_backend, "run the conformance suite on a backend"),
}


def _plugin_commands():
    found = {}
    from .discovery import entry_points_of
    for ep in entry_points_of(COMMAND_GROUP):
        found.setdefault(ep.name, ep)
    return found


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plugins = _plugin_commands()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: needle <command> [options]\n\ncommands:")
        for name, (_, text) in BUILTIN.items():
            print(f"  {name:<14} {text}")
        for name, ep in sorted(plugins.items()):
            print(f"  {name:<14} (from {ep.value})")
        return 0
    if argv[0] in ("-V", "--version"):
        from .info import __version__
        print(f"needle {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name in BUILTIN:
        return BUILTIN[name][0](rest)
    if name in plugins:
        try:
            command = plugins[name].load()
        except Exception as exc:
            print(f"needle {name}: the command's plugin failed to load: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 1
        return int(command(rest) or 0)
    print(f"needle: unknown command {name!r}; try 'needle --help'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
