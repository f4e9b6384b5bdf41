"""The layering of docs/design.md, enforced by reading every module's imports.

* core (``needle``): the standard library, numpy, pluggy and itself -- never a
  plugin (``needle_*``), never contrib (``needle.nn`` ...).  Inside
  ``needle.testing`` pytest and hypothesis are allowed too.  Inside core the
  imports point one way, down :data:`CORE_LAYERS` (errors -> protocol ->
  discovery -> ndarray -> autograd -> ops -> init -> front), and no modules
  import each other in a loop.
* a plugin (``plugins/<x>`` -> ``needle_<x>``, its ``.pyx`` sources included,
  and the out-of-tree example under ``examples/``): ``needle.protocol`` and
  ``needle.errors``, itself, and its own third-party dependencies -- no other
  part of needle, no other plugin.
* contrib (``needle.nn`` ...): needle's public API -- never a plugin, never a
  backend internal (``_handle``, ``_be``, ``needle.discovery``/``hookspecs``).
* outside core, no private attribute is reached by name in a string
  (``getattr(x, "_handle")``).

Imports inside functions count: a lazy import is still a dependency, and so
does ``importlib.import_module("name")`` / ``__import__("name")``.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
CONTRIB = {"nn", "optim", "data", "models", "distributed"}
CORE_THIRD_PARTY = {"numpy", "pluggy"}
TESTING_THIRD_PARTY = {"pytest", "hypothesis", "_pytest"}
PLUGIN_NEEDLE_API = {"needle.protocol", "needle.errors"}
CONTRIB_FORBIDDEN_MODULES = {"needle.discovery", "needle.hookspecs"}
INTERNAL_ATTRS = {"_handle", "_be"}

#: core's layers, lowest first.  A core module imports modules of its own
#: layer and the layers below, never above; a name belongs to the layer of
#: its longest listed prefix (``needle`` itself: only the package).
CORE_LAYERS = [
    ("errors", ["needle.errors", "needle.validation"]),
    ("protocol", ["needle.hookspecs", "needle.protocol"]),
    ("discovery", ["needle.discovery"]),
    ("ndarray", ["needle.backend_ndarray"]),
    ("autograd", ["needle.autograd"]),
    ("ops", ["needle.ops"]),
    ("init", ["needle.init"]),
    ("front", ["needle", "needle.backend_selection", "needle.serialization", "needle.info",
               "needle.cli", "needle.testing"]),
]
#: packages whose modules count as one unit in the loop check: a device makes
#: arrays and an array lives on a device
ONE_UNIT = {"needle.backend_ndarray"}
ACCESSORS = {"getattr", "setattr", "hasattr", "delattr"}


def core_layer(name: str):
    """``(rank, layer name)`` of a core module name, or None when unlisted."""
    best = None
    for rank, (layer, prefixes) in enumerate(CORE_LAYERS):
        for prefix in prefixes:
            hit = name == prefix if prefix == "needle" else _under(name, prefix)
            if hit and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank, layer)
    if best is None and name.startswith("needle.") and name.split(".")[1] not in CONTRIB:
        best = (0, len(CORE_LAYERS) - 1, "front")  # needle.<attribute>: the package
    return None if best is None else best[1:]


def module_name(path: Path) -> tuple[str, str, bool]:
    """``(layer, dotted module name, is_package)`` of a source file."""
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    top = parts[0]
    if top == "core":
        return "core", ".".join(["needle"] + parts[1:]), is_pkg
    if top == "plugins":
        return "plugin", ".".join([f"needle_{parts[1]}"] + parts[2:]), is_pkg
    if top == "contrib":
        return "contrib", ".".join(["needle"] + parts[1:]), is_pkg
    if top == "examples":  # an out-of-tree plugin: examples/<dist>/<package>/...
        return "plugin", ".".join(parts[2:]), is_pkg
    raise ValueError(f"not a layered source file: {rel}")


def imported_modules(tree: ast.AST, module: str, is_pkg: bool):
    """Absolute names of everything a module imports, with line numbers."""
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                mod = f"{prefix}.{node.module}" if node.module else prefix
            else:
                mod = node.module
            # "from pkg import name" may name a submodule (from needle import discovery)
            for alias in node.names:
                yield node.lineno, (mod if alias.name == "*" else f"{mod}.{alias.name}")
        elif isinstance(node, ast.Call) and _call_name(node) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def _call_name(node: ast.Call):
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


_PYX_IMPORT = re.compile(r"^\s*(?:from\s+(\.*)([\w.]*)\s+c?import\s+(.+)|c?import\s+(.+))$")


def pyx_imported_modules(source: str, module: str, is_pkg: bool):
    """Absolute names a Cython source imports or cimports (ast cannot parse it)."""
    package = module if is_pkg else module.rpartition(".")[0]
    for lineno, line in enumerate(source.splitlines(), 1):
        m = _PYX_IMPORT.match(line.split("#")[0].rstrip())
        if m is None:
            continue
        if m.group(4) is not None:  # import a, b as c
            for part in m.group(4).split(","):
                yield lineno, part.split(" as ")[0].strip()
            continue
        dots, mod = m.group(1), m.group(2)
        if dots:
            base = package.split(".")
            base = base[: len(base) - (len(dots) - 1)]
            mod = ".".join(base + ([mod] if mod else []))
        for part in m.group(3).strip("()").split(","):
            name = part.split(" as ")[0].strip()
            if name:
                yield lineno, (mod if name == "*" else f"{mod}.{name}")


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def check_source(layer: str, module: str, source: str, is_pkg: bool = False, pyx: bool = False) -> list[str]:
    """Layering violations of one module's source, as readable strings."""
    tree = None if pyx else ast.parse(source)
    imports = pyx_imported_modules(source, module, is_pkg) if pyx else imported_modules(tree, module, is_pkg)
    problems = []
    top_self = module.split(".")[0]
    own = core_layer(module) if layer == "core" else None
    for line, name in imports:
        top = name.split(".")[0]
        why = None
        if layer == "core":
            theirs = core_layer(name) if top == "needle" else None
            if top.startswith("needle_"):
                why = "core imports a plugin"
            elif top == "needle" and any(_under(name, f"needle.{c}") for c in CONTRIB):
                why = "core imports contrib"
            elif own is not None and theirs is not None and theirs[0] > own[0]:
                why = f"the {own[1]} layer imports the {theirs[1]} layer above it"
            elif top not in STDLIB | CORE_THIRD_PARTY | {"needle"}:
                if not (_under(module, "needle.testing") and top in TESTING_THIRD_PARTY):
                    why = f"core may import only the standard library, numpy and pluggy, not {top}"
        elif layer == "plugin":
            if top == "needle" and not any(_under(name, allowed) for allowed in PLUGIN_NEEDLE_API):
                why = "a plugin may use only needle.protocol and needle.errors"
            elif top.startswith("needle_") and top != top_self:
                why = "a plugin imports another plugin"
        elif layer == "contrib":
            if top.startswith("needle_"):
                why = "contrib imports a plugin"
            elif any(_under(name, m) for m in CONTRIB_FORBIDDEN_MODULES):
                why = "contrib reaches into backend discovery internals"
        if why:
            problems.append(f"{module}:{line}: imports {name} ({why})")
    if tree is None:
        return problems
    for node in ast.walk(tree):
        if layer == "contrib" and isinstance(node, ast.Attribute) and node.attr in INTERNAL_ATTRS:
            problems.append(f"{module}:{node.lineno}: uses NDArray internal .{node.attr}")
        if layer != "core" and isinstance(node, ast.Call) and _call_name(node) in ACCESSORS \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            attr = node.args[1].value
            if isinstance(attr, str) and attr.startswith("_") and not attr.startswith("__"):
                problems.append(f"{module}:{node.lineno}: reaches private attribute {attr!r} "
                                f"by string ({_call_name(node)})")
    return problems


def unit(name: str) -> str:
    for package in ONE_UNIT:
        if _under(name, package):
            return package
    return name


def import_graph(sources: dict) -> dict:
    """``{unit: set of units it imports}`` over the core modules in
    ``sources`` (``{module name: (source, is_pkg)}``); an imported name maps
    to the longest module name it starts with."""
    known = sorted(sources, key=len, reverse=True)
    graph = {unit(m): set() for m in sources}
    for module, (source, is_pkg) in sources.items():
        for _, name in imported_modules(ast.parse(source), module, is_pkg):
            target = next((k for k in known if _under(name, k)), None)
            if target is not None and unit(target) != unit(module):
                graph[unit(module)].add(unit(target))
    return graph


def find_loop(graph: dict):
    """One import loop of ``graph`` as a list of units (first == last), or None."""
    state = {}  # unit -> 1 while on the path, 2 when done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                loop = visit(nxt, path)
                if loop:
                    return loop
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            loop = visit(start, [])
            if loop:
                return loop
    return None


def layered_files():
    files = []
    for folder in ("core", "plugins", "contrib", "examples"):
        for pattern in ("*.py", "*.pyx"):
            files += [p for p in sorted((ROOT / folder).rglob(pattern))
                      if "__pycache__" not in p.parts and not p.name.startswith(".")
                      and "build" not in p.relative_to(ROOT).parts
                      and not (folder == "plugins" and p.name == "build_config.py")]  # setup-time script
    return files


def core_sources() -> dict:
    out = {}
    for path in layered_files():
        layer, module, is_pkg = module_name(path)
        if layer == "core" and path.suffix == ".py":
            out[module] = (path.read_text(), is_pkg)
    return out


def test_there_is_something_to_check():
    names = {module_name(p)[1] for p in layered_files()}
    assert {"needle.protocol", "needle.backend_ndarray.ndarray", "needle_numpy", "needle.testing.plugin",
            "needle_arraybackend"} <= names


def test_every_module_respects_the_layering():
    problems = []
    for path in layered_files():
        layer, module, is_pkg = module_name(path)
        problems += check_source(layer, module, path.read_text(), is_pkg, pyx=path.suffix == ".pyx")
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_every_core_module_has_a_layer():
    assert [m for m in core_sources() if core_layer(m) is None] == []


def test_core_has_no_import_loop():
    loop = find_loop(import_graph(core_sources()))
    assert loop is None, "import loop in core: " + " -> ".join(loop)


def test_pyx_sources_are_checked():
    assert any(p.suffix == ".pyx" for p in layered_files())


# ---------------------------------------------------------------------- #
# the checker can fail
# ---------------------------------------------------------------------- #
def test_loop_check_finds_a_reintroduced_loop():
    """The loop this layering broke (discovery registering plugin ops into the
    op registry, which sits on autograd and the arrays, which use discovery),
    put back as a fixture, is reported."""
    sources = dict(core_sources())
    discovery, is_pkg = sources["needle.discovery"]
    sources["needle.discovery"] = (discovery + "\n\ndef _f():\n    from .ops.registry import register_op\n",
                                   is_pkg)
    loop = find_loop(import_graph(sources))
    assert loop is not None and "needle.discovery" in loop and "needle.ops.registry" in loop, loop
    assert find_loop({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_loop({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_pyx_imports_are_read():
    src = "# cython: x\nfrom libc.stdlib cimport malloc\ncimport numpy as cnp\nfrom needle.autograd import Tensor\n"
    problems = check_source("plugin", "needle_fake._ext", src, pyx=True)
    assert problems == ["needle_fake._ext:4: imports needle.autograd.Tensor "
                        "(a plugin may use only needle.protocol and needle.errors)"]
    assert check_source("plugin", "needle_fake._ext", "import needle_numpy\n", pyx=True)
    assert check_source("plugin", "needle_fake._ext", "from needle.protocol import Backend\n"
                        "from ._kernels cimport k\n", pyx=True) == []


@pytest.mark.parametrize("layer,module,source,expected", [
    ("core", "needle.fake", "import needle_numpy\n", "core imports a plugin"),
    ("core", "needle.fake", "def f():\n    from needle_cpu import CpuBackend\n", "core imports a plugin"),
    ("core", "needle.ops.fake", "from ..nn import Linear\n", "core imports contrib"),
    ("core", "needle.fake", "import torch\n", "not torch"),
    ("core", "needle.fake", "import pytest\n", "not pytest"),
    ("plugin", "needle_fake", "from needle.autograd import Tensor\n", "only needle.protocol"),
    ("plugin", "needle_fake.sub", "import needle_numpy\n", "another plugin"),
    ("contrib", "needle.nn.fake", "import needle_cpu\n", "contrib imports a plugin"),
    ("contrib", "needle.nn.fake", "def f(x):\n    return x.cached_data._handle\n", "internal ._handle"),
    ("contrib", "needle.nn.fake", "from needle import discovery\n", "discovery internals"),
    ("core", "needle.autograd", "def f():\n    from .ops import add\n", "autograd layer imports the ops layer"),
    ("core", "needle.backend_ndarray.device", "from ..autograd import Tensor\n", "ndarray layer imports"),
    ("core", "needle.discovery", "from .backend_ndarray.device import forget_devices\n", "discovery layer"),
    ("core", "needle.fake", "import importlib\nimportlib.import_module('needle_numpy')\n", "core imports a plugin"),
    ("core", "needle.fake", "mod = __import__('needle_cpu')\n", "core imports a plugin"),
    ("contrib", "needle.nn.fake", "from importlib import import_module\nimport_module('needle_cuda')\n",
     "contrib imports a plugin"),
    ("contrib", "needle.nn.fake", "def f(x):\n    return getattr(x.cached_data, '_handle')\n",
     "private attribute '_handle' by string"),
    ("plugin", "needle_fake", "def f(a):\n    return getattr(a, '_be')\n", "private attribute '_be' by string"),
])
def test_checker_reports_violations(layer, module, source, expected):
    problems = check_source(layer, module, source)
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize("layer,module,source", [
    ("core", "needle.fake", "import os, numpy as np\nimport pluggy\nfrom . import errors\n"),
    ("core", "needle.testing.fake", "import pytest\nfrom hypothesis import given\n"),
    ("plugin", "needle_fake", "import numpy\nfrom needle.protocol import Backend\nfrom needle.errors import ShapeError\n"
                              "from . import _kernels\nfrom needle_fake.sub import x\n"),
    ("contrib", "needle.nn.fake", "import needle\nfrom needle.autograd import Tensor\nfrom ..init import ones\n"),
])
def test_checker_accepts_allowed_imports(layer, module, source):
    assert check_source(layer, module, source) == []


def test_checker_finds_a_fixture_core_module_importing_a_plugin(tmp_path):
    """End to end on a file: a fake core module importing needle_numpy is reported."""
    fake = tmp_path / "fake_core.py"
    fake.write_text("import numpy as np\nimport needle_numpy  # a layering violation\n")
    problems = check_source("core", "needle.fake_core", fake.read_text())
    assert problems == ["needle.fake_core:2: imports needle_numpy (core imports a plugin)"]
