"""The docs agree with the code: the event table in docs/formats.md is the registry's, code
cites docs/design.md sections that exist (never a document outside the repository), and the
docs link only to files that exist."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from edgegate.core.events import registered_types

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CITE = re.compile(r"docs/design\.md §(\d+)")
ROW = re.compile(r"^\| `([a-z.-]+)` \| (\d+) \| [^|]+ \| ([a-z0-9_, ]+) \|$", re.MULTILINE)


def _sources() -> list[Path]:
    files = [*ROOT.glob("edgegate/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/*.py")]
    return [p for p in files if p != Path(__file__).resolve()]


def test_the_event_table_is_the_registry() -> None:
    text = (DOCS / "formats.md").read_text(encoding="utf-8")
    documented = {t: (int(v), fields.split(", ")) for t, v, fields in ROW.findall(text)}
    registry = {
        t: (cls.VERSION, [f.name for f in dataclasses.fields(cls) if f.name != "lane"])
        for t, cls in registered_types().items()
    }
    assert documented == registry


def test_code_cites_design_sections_that_exist() -> None:
    design = (DOCS / "design.md").read_text(encoding="utf-8")
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", design, re.MULTILINE)}
    cited: set[int] = set()
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        assert "DESIGN" not in text, f"{path.relative_to(ROOT)} cites DESIGN: cite docs/"
        cited |= {int(n) for n in CITE.findall(text)}
    assert cited and cited <= sections, f"sections cited but missing: {cited - sections}"


def test_docs_link_to_files_that_exist() -> None:
    for doc in [ROOT / "README.md", *DOCS.glob("*.md")]:
        text = doc.read_text(encoding="utf-8")
        assert "shared/DESIGN" not in text, f"{doc.name} cites a document outside the repo"
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: link to missing {target}"
