"""docs/design.md: linked from the README, its pointers real, and no file
in the repository citing a document the repository does not contain."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"


def test_readme_links_the_architecture_page():
    assert "](docs/design.md)" in (ROOT / "README.md").read_text()


def _add_table_rows():
    text = DESIGN.read_text()
    table = text[text.index("## Where an op's parts live"):text.index("## The life of `a + b`")]
    return [line for line in table.splitlines() if line.startswith("| ") and "`" in line]


def test_every_part_of_add_is_one_hop_away():
    """Each row names a file and the symbols to look for in it: they exist there."""
    checked = 0
    for row in _add_table_rows():
        for path, rest in re.findall(r"`((?:core|plugins)/[\w/.]+\.(?:py|pyx|h|cu))`:?\s*([^|]*)", row):
            source = (ROOT / path).read_text()
            symbols = re.findall(r"`([\w.]+)`", rest.split(" in `")[0])
            for symbol in symbols:
                name = symbol.split(".")[-1]
                if name in ("a", "b", "g"):
                    continue
                assert re.search(rf"\b{re.escape(name)}\b", source), f"{name} not in {path} ({row})"
                checked += 1
    for needle in ("NumpyBackend.ewise_add", "CpuBackend.ewise_add", "CudaBackend.ewise_add",
                   "EWiseAdd.compute", "EWiseAdd.gradient_needed"):
        assert needle in DESIGN.read_text()
    assert checked >= 10


def test_no_file_cites_a_document_that_is_not_in_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (an sdist): read the tree
        tracked = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    present = {Path(p).name for p in tracked}
    cited = set()
    for name in tracked:
        path = ROOT / name
        if path.suffix not in (".py", ".pyx", ".md", ".sh", ".toml", ".cfg", ".txt") or not path.is_file():
            continue
        for doc in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", path.read_text(errors="replace")):
            if doc not in present:
                cited.add(f"{name}: {doc}")
    assert not cited, "cited but not in the repository:\n" + "\n".join(sorted(cited))
