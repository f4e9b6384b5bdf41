"""docs/api.md is generated from the docstrings (scripts/apidoc.py) and must be up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# a maintainer's tool, not part of the installed package: load it from scripts/
_spec = importlib.util.spec_from_file_location("apidoc", ROOT / "scripts" / "apidoc.py")
apidoc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(apidoc)
DOC = ROOT / "docs" / "api.md"


def test_api_reference_is_up_to_date():
    assert apidoc.main(["--check", str(DOC)]) == 0, \
        "docs/api.md is stale: run python scripts/apidoc.py --write docs/api.md"


def test_reference_covers_the_five_modules_and_the_tensor_api():
    text = DOC.read_text()
    for module in apidoc.MODULES:
        assert f"## `{module}`" in text, module
    assert "### class `Tensor(array, *, device=None, dtype=None, requires_grad=True, **kwargs)`" in text
    for method in ("sum(axes=None, keepdims=False, *, axis=None, dim=None, keepdim=None)", "permute(*dims)", "to(*args, device=None, dtype=None)",
                   "backward(out_grad=None)", "reshape(*shape)"):
        assert f"- `{method}`" in text, method
    for name in ("Linear", "Sequential", "SGD", "Adam", "DataLoader", "xavier_uniform"):
        assert f"`{name}(" in text, name


def test_check_detects_a_stale_copy(tmp_path):
    stale = tmp_path / "api.md"
    stale.write_text(DOC.read_text().replace("## `needle.optim`", "## `needle.optim` (old)"))
    assert apidoc.main(["--check", str(stale)]) == 1
    assert apidoc.main(["--write", str(stale)]) == 0
    assert stale.read_text() == DOC.read_text()


def test_output_is_free_of_memory_addresses():
    assert " at 0x" not in apidoc.generate()


def test_readme_links_the_api_reference():
    assert "docs/api.md" in (ROOT / "README.md").read_text()
