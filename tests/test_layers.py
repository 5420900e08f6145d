"""Layering rules that import-linter cannot see (its contracts are in pyproject.toml): only
``edgegate.log`` writes SQL against the events table, and no module reaches into another
object's private SQLite connection."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgegate"
LOG = PACKAGE / "log"

EVENTS_SQL = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+events\b", re.IGNORECASE)
FOREIGN_CONN = re.compile(r"(?<!\bself)\._conn\b")


def _outside_log() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if LOG not in p.parents)


def _hits(pattern: re.Pattern[str]) -> list[str]:
    hits = []
    for path in _outside_log():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    return hits


def test_only_the_log_queries_the_events_table() -> None:
    assert _outside_log(), "no modules found"
    assert _hits(EVENTS_SQL) == [], "use (or add) a function of edgegate.log.queries"


def test_no_module_reads_another_objects_connection() -> None:
    assert _hits(FOREIGN_CONN) == [], "use LogReader's methods (of_types, read_with)"
