"""DESIGN.md's layering, enforced by reading every module's imports (ast).

* core (``needle``): the standard library, numpy, pluggy and itself -- never a
  plugin (``needle_*``), never contrib (``needle.nn`` ...).  Inside
  ``needle.testing`` pytest and hypothesis are allowed too.
* a plugin (``plugins/<x>`` -> ``needle_<x>``, and the out-of-tree example
  under ``examples/``): ``needle.protocol`` and
  ``needle.errors``, itself, and its own third-party dependencies -- no other
  part of needle, no other plugin.
* contrib (``needle.nn`` ...): needle's public API -- never a plugin, never a
  backend internal (``_handle``, ``_be``, ``needle.discovery``/``hookspecs``).

Imports inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
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


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def check_source(layer: str, module: str, source: str, is_pkg: bool = False) -> list[str]:
    """Layering violations of one module's source, as readable strings."""
    tree = ast.parse(source)
    problems = []
    top_self = module.split(".")[0]
    for line, name in imported_modules(tree, module, is_pkg):
        top = name.split(".")[0]
        why = None
        if layer == "core":
            if top.startswith("needle_"):
                why = "core imports a plugin"
            elif top == "needle" and any(_under(name, f"needle.{c}") for c in CONTRIB):
                why = "core imports contrib"
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
    if layer == "contrib":
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in INTERNAL_ATTRS:
                problems.append(f"{module}:{node.lineno}: uses NDArray internal .{node.attr}")
    return problems


def layered_files():
    files = []
    for folder in ("core", "plugins", "contrib", "examples"):
        files += [p for p in sorted((ROOT / folder).rglob("*.py"))
                  if "__pycache__" not in p.parts and not p.name.startswith(".")
                  and not (folder == "plugins" and p.name == "build_config.py")]  # setup-time script
    return files


def test_there_is_something_to_check():
    names = {module_name(p)[1] for p in layered_files()}
    assert {"needle.protocol", "needle.backend_ndarray.ndarray", "needle_numpy", "needle.testing.plugin",
            "needle_arraybackend"} <= names


def test_every_module_respects_the_layering():
    problems = []
    for path in layered_files():
        layer, module, is_pkg = module_name(path)
        problems += check_source(layer, module, path.read_text(), is_pkg)
    assert not problems, "layering violations:\n" + "\n".join(problems)


# ---------------------------------------------------------------------- #
# the checker can fail
# ---------------------------------------------------------------------- #
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
