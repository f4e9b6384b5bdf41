"""docs/backends.md: its protocol reference is generated from the protocol's
docstrings (scripts/docgen.py) and must be up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from needle.protocol import OP_OVERRIDE_SIGNATURES, kernel_names

ROOT = Path(__file__).resolve().parents[2]
# a maintainer's tool, not part of the installed package: load it from scripts/
_spec = importlib.util.spec_from_file_location("docgen", ROOT / "scripts" / "docgen.py")
docgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(docgen)
DOC = ROOT / "docs" / "backends.md"


def test_generated_reference_is_up_to_date():
    assert docgen.main(["--check", str(DOC)]) == 0, \
        "docs/backends.md is stale: run python scripts/docgen.py --write docs/backends.md"


def test_reference_documents_every_kernel_override_and_hook():
    text = DOC.read_text()
    for name in kernel_names():
        assert f"#### `{name}(" in text, name
    for name in OP_OVERRIDE_SIGNATURES:
        assert f"**`{name}`**" in text, name
    for hook in ("needle_backends", "needle_register_ops"):
        assert f"**`{hook}(" in text, hook


def test_check_detects_a_stale_copy(tmp_path):
    stale = tmp_path / "backends.md"
    stale.write_text(DOC.read_text().replace("#### `ewise_add(a, b, out)` -- required", "#### `ewise_add` (old)"))
    assert docgen.main(["--check", str(stale)]) == 1
    assert docgen.main(["--write", str(stale)]) == 0
    assert stale.read_text() == DOC.read_text()


def test_readme_links_the_backend_guide():
    assert "docs/backends.md" in (ROOT / "README.md").read_text()
