"""The ``needle`` command.

Built-in subcommands live here; others (``needle train``) come from entry
points in the group ``needle.commands``: each names a callable
``command(argv: list[str]) -> int``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

COMMAND_GROUP = "needle.commands"


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
    """Run benchmarks/compare.py from a source checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.join(os.path.dirname(here), "benchmarks", "compare.py")
    if not os.path.exists(script):
        print("needle bench: benchmarks/compare.py is only in a source checkout of needle", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, script, *argv])


def _cmd_check_backend(argv):
    parser = argparse.ArgumentParser(prog="needle check-backend",
                                     description="Run the conformance suite against one backend; "
                                                 "other arguments go to pytest (e.g. --needle-quick, -k matmul).")
    parser.add_argument("backend")
    args, pytest_args = parser.parse_known_args(argv)
    args.pytest_args = pytest_args
    from .testing import run_suite  # pytest is imported only inside needle.testing
    return run_suite(args.backend, args.pytest_args)


BUILTIN = {
    "backends": (_cmd_backends, "list backends: name, version, availability and reason, devices"),
    "config": (_cmd_config, "versions, build flags (OpenMP, SIMD) and thread counts"),
    "bench": (_cmd_bench, "run benchmarks/compare.py (kernel and model timings vs NumPy/PyTorch)"),
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
