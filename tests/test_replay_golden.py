"""Golden tests of the replay tools on the recorded incidents in replay/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgegate.cli.main import main

REPLAY = Path(__file__).resolve().parent.parent / "replay"
CASES = sorted(p.parent.name for p in REPLAY.glob("*/expected.json"))


def _matches(event: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(event.get(k) == v for k, v in wanted.items() if k != "count")


@pytest.mark.parametrize("case", CASES)
def test_recorded_incident(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = json.loads((REPLAY / case / "expected.json").read_text(encoding="utf-8"))
    db = tmp_path / "gate.db"
    shutil.copyfile(REPLAY / case / "gate.db", db)
    assert main(["log", "verify", str(db)]) == expected["verify"]["exit"]
    assert expected["verify"]["contains"] in capsys.readouterr().out
    assert main(["log", "tail", str(db), "-n", "100000", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for wanted in expected["findings"]:
        found = [e for e in events if _matches(e, wanted)]
        if "count" in wanted:
            assert len(found) == wanted["count"], wanted
        else:
            assert found, f"{case}: no event matches {wanted}"


def test_there_are_recorded_incidents() -> None:
    assert len(CASES) >= 3
