"""``edgegate replay export``: CSV a spreadsheet opens with Chinese intact and no formula run,
NDJSON one decoded event a line."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from edgegate.cli.main import main
from edgegate.core import events as ev
from edgegate.log import EventLog
from tests.event_samples import all_samples

GATE = "fengxiang-road"
FORMULA = '=HYPERLINK("http://127.0.0.1/x","click")'


async def _log(path: Path) -> None:
    async with await EventLog.open(path, gate_id=GATE) as log:
        for e in all_samples():
            await log.append(e)
        await log.append(
            ev.ManualAction(
                lane="in-1", action=ev.ManualActionKind.OPEN, operator="@wang", reason=FORMULA
            )
        )


def test_csv_has_bom_chinese_and_escaped_formulas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, out = tmp_path / "gate.db", tmp_path / "out.csv"
    asyncio.run(_log(db))
    assert main(["replay", "export", str(db), "--csv", str(out)]) == 0
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert len(rows) == len(all_samples()) + 1
    manual = rows[-1]
    assert manual["type"] == "manual.action"
    assert manual["reason"] == "'" + FORMULA
    assert manual["operator"] == "'@wang"
    assert manual["time"].endswith("+08:00")
    plates = {r["plate"] for r in rows if r["type"] == "plate.read"}
    assert any("苏" in p for p in plates)
    for row in rows:
        for value in row.values():
            assert not (value or "").startswith(("=", "+", "@", "\t", "\r"))


def test_ndjson_one_decoded_event_a_line_with_filters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, out = tmp_path / "gate.db", tmp_path / "out.ndjson"
    asyncio.run(_log(db))
    assert main(["replay", "export", str(db), "--ndjson", str(out), "--type", "plate.*"]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = [e for e in all_samples() if e.TYPE.startswith("plate.")]
    assert [d["type"] for d in lines] == [e.TYPE for e in expected]
    read = next(d for d in lines if d["type"] == "plate.read")
    assert read["plate"] == next(e for e in expected if isinstance(e, ev.PlateRead)).plate


def test_export_refuses_to_overwrite_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "gate.db"
    asyncio.run(_log(db))
    before = db.read_bytes()
    assert main(["replay", "export", str(db), "--csv", str(db)]) == 2
    assert "is the log being read" in capsys.readouterr().err
    assert db.read_bytes() == before
