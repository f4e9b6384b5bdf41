"""Generate the protocol reference of docs/backends.md from the protocol itself.

One source: the kernel contracts are the docstrings of
:class:`needle.protocol.Backend`, the hooks those of :mod:`needle.hookspecs`,
the op overrides :data:`needle.protocol.OP_OVERRIDE_SIGNATURES`.

    python scripts/docgen.py                          # print the generated section
    python scripts/docgen.py --write docs/backends.md # replace it between the markers
    python scripts/docgen.py --check docs/backends.md # exit 1 when the file is stale
"""

from __future__ import annotations

import argparse
import inspect
import sys

BEGIN = "<!-- BEGIN GENERATED PROTOCOL REFERENCE (python scripts/docgen.py --write docs/backends.md) -->"
END = "<!-- END GENERATED PROTOCOL REFERENCE -->"


def _signature(fn) -> str:
    sig = inspect.signature(fn)
    params = [p for name, p in sig.parameters.items() if name != "self"]
    return f"({', '.join(str(p.replace(annotation=inspect.Parameter.empty)) for p in params)})"


def _doc(obj) -> str:
    return inspect.getdoc(obj) or "(undocumented)"


def generate() -> str:
    """The generated Markdown section (without the markers)."""
    from needle import hookspecs, protocol
    from needle.protocol import Backend, kernel_names, required_kernel_names

    required = set(required_kernel_names())
    out = [f"Array protocol version **{protocol.PROTOCOL_VERSION}** "
           f"(backends declaring {protocol.MIN_PROTOCOL_VERSION}..{protocol.PROTOCOL_VERSION} load).", ""]
    out += ["### Conventions (from `needle.protocol`)", "", _doc(protocol).split("Conventions shared by every kernel")[1]
            .split("Optional kernels and op overrides")[0].strip("-\n "), ""]
    out += ["### Backend class attributes and methods", "", "```text", _doc(Backend), "```", ""]
    kernels = set(kernel_names())
    methods = [n for n, v in Backend.__dict__.items()
               if callable(v) and not n.startswith("_") and n not in kernels]
    for name in methods:
        fn = getattr(Backend, name)
        out += [f"- **`{name}{_signature(fn)}`** -- " + _doc(fn).replace("\n", " ")]
    out += ["", "### Kernels", "",
            f"{len(kernel_names())} kernels: {len(required)} required (abstract), "
            f"{len(kernel_names()) - len(required)} optional (default: a composition of the required ones).", ""]
    for name in kernel_names():
        fn = getattr(Backend, name)
        kind = "required" if name in required else "optional"
        out += [f"#### `{name}{_signature(fn)}` -- {kind}", "", _doc(fn), ""]
    out += ["### Op overrides (`Backend.op_overrides()` keys)", ""]
    for name, text in protocol.OP_OVERRIDE_SIGNATURES.items():
        out += [f"- **`{name}`**: {text}"]
    out += ["", "### Hooks (`needle.hookspecs`, implemented with `needle.protocol.hookimpl`)", ""]
    for name in ("needle_backends", "needle_register_ops"):
        fn = getattr(hookspecs, name)
        out += [f"- **`{name}{_signature(fn)}`** -- " + _doc(fn).replace("\n\n", " ").replace("\n", " ")]
    return "\n".join(out).rstrip() + "\n"


def splice(document: str, section: str) -> str:
    """``document`` with the text between the markers replaced by ``section``."""
    if BEGIN not in document or END not in document:
        raise ValueError(f"markers not found: the document needs the lines\n{BEGIN}\n{END}")
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{section}\n{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/docgen.py", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", help="replace the generated section of FILE")
    group.add_argument("--check", metavar="FILE", help="exit 1 when FILE's generated section is stale")
    args = parser.parse_args(argv)
    section = generate()
    if not (args.write or args.check):
        sys.stdout.write(section)
        return 0
    path = args.write or args.check
    with open(path, encoding="utf-8") as f:
        current = f.read()
    wanted = splice(current, section)
    if args.check:
        if wanted != current:
            print(f"{path} is out of date: run python scripts/docgen.py --write {path}", file=sys.stderr)
            return 1
        return 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
