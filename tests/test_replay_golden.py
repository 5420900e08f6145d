"""Golden tests of the replay tools on the recorded incidents in replay/: the verification
outcome (``log verify``) and every finding of ``replay incidents --json``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgegate.cli.main import main

REPLAY = Path(__file__).resolve().parent.parent / "replay"
CASES = sorted(p.parent.name for p in REPLAY.glob("*/expected.json"))


def _matches(finding: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(finding.get(k) == v for k, v in wanted.items() if k != "matches")


@pytest.mark.parametrize("case", CASES)
def test_recorded_incident(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = json.loads((REPLAY / case / "expected.json").read_text(encoding="utf-8"))
    db = tmp_path / "gate.db"
    shutil.copyfile(REPLAY / case / "gate.db", db)
    assert main(["log", "verify", str(db)]) == expected["verify"]["exit"]
    assert expected["verify"]["contains"] in capsys.readouterr().out
    assert main(["replay", "incidents", str(db), "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)["findings"]
    for wanted in expected["findings"]:
        found = [f for f in findings if _matches(f, wanted)]
        if "matches" in wanted:
            assert len(found) == wanted["matches"], wanted
        else:
            assert found, f"{case}: no finding matches {wanted}"


def test_there_are_recorded_incidents() -> None:
    assert len(CASES) >= 3
