"""Every name in a public ``__all__`` is used by at least one test.

A static scan: each exported name must appear as a whole word in some test
source (tests/ and the shipped conformance suite), this file excepted, so
listing a name here never counts.  Static rather than coverage-based so it
runs in any test selection, with or without pytest-cov.  Modules are every
``needle`` module with an ``__all__`` (core and contrib), except the pytest
plugin ``needle.testing`` whose own tests are that suite.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import needle

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("needle", "needle.nn", "needle.optim", "needle.data", "needle.models")


def _public_modules():
    names = set(PACKAGES)
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
            parts = info.name.split(".")
            if parts[1] == "testing" or any(p.startswith("_") for p in parts):
                continue
            names.add(info.name)
    return sorted(names)


def _test_sources():
    here = Path(__file__).resolve()
    files = [p for p in (ROOT / "tests").rglob("*.py") if p.resolve() != here]
    files += list((ROOT / "core" / "testing").glob("test_*.py"))
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def test_every_public_name_is_used_by_a_test():
    text = _test_sources()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    unused = {}
    for modname in _public_modules():
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", None) or ():
            if name not in words:
                unused.setdefault(modname, []).append(name)
    assert not unused, f"public names no test uses (add a test that calls each): {unused}"


def test_the_scan_sees_the_packages_and_would_catch_a_name():
    mods = _public_modules()
    assert {"needle.autograd", "needle.nn.nn_basic", "needle.optim.optimizer", "needle.data.data_basic"} <= set(mods)
    assert len(mods) > 25
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", _test_sources()))
    assert "enable_grad" in words and "zz_never_exported_zz" not in words
