"""``edgegate log verify`` and ``edgegate log tail`` as a technician uses them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgegate.allowlist.service import AllowListService
from edgegate.cli.main import main
from edgegate.core import credential_codec as codec
from edgegate.core import events as ev
from edgegate.core.domain import Direction, VehicleCategory
from edgegate.log import EventLog
from tests.event_samples import all_samples
from tests.tamper import tampering
from tests.test_allowlist_index import appt, black, reg

ROOT = Path(__file__).resolve().parent.parent


async def _log_with_samples(path: Path) -> list[ev.Event]:
    samples = all_samples()
    async with await EventLog.open(path, gate_id="fengxiang-road") as log:
        for e in samples:
            await log.append(e)
    return samples


async def test_verify_sound_log_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "g.db"
    samples = await _log_with_samples(db)
    assert main(["log", "verify", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"OK gate fengxiang-road: {len(samples)} events" in out


async def test_verify_names_first_bad_seq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "g.db"
    await _log_with_samples(db)
    with tampering(db, triggers=["events_no_update"]) as conn:
        conn.execute("UPDATE events SET lane = 'out-9' WHERE seq = 5")
        conn.execute("UPDATE events SET lane = 'out-9' WHERE seq = 9")
    assert main(["log", "verify", str(db)]) == 1
    out = capsys.readouterr().out
    assert "first bad seq 5: hash does not match" in out
    assert "triggers missing: events_no_update" in out


async def test_verify_byte_flip_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "g.db"
    await _log_with_samples(db)
    with tampering(db, restore=True) as conn:  # only the payload is wrong
        blob = bytearray(conn.execute("SELECT data FROM events WHERE seq = 3").fetchone()[0])
        blob[-1] ^= 0x80
        conn.execute("UPDATE events SET data = ? WHERE seq = 3", (bytes(blob),))
    assert main(["log", "verify", str(db)]) == 1
    assert "first bad seq 3" in capsys.readouterr().out


def test_verify_missing_or_foreign_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", "verify", str(tmp_path / "absent.db")]) == 2
    assert "no log file at" in capsys.readouterr().err
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.close()
    assert main(["log", "verify", str(other)]) == 2
    assert "not an edgegate log" in capsys.readouterr().err


async def test_tail_json_has_envelope_and_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "g.db"
    samples = await _log_with_samples(db)
    assert main(["log", "tail", str(db), "-n", "3", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    objs = [json.loads(line) for line in lines]
    assert [o["seq"] for o in objs] == [len(samples) - 2, len(samples) - 1, len(samples)]
    last = objs[-1]
    assert last["type"] == "daemon.stopped"
    assert last["reason"] == "signal"
    assert {"seq", "type", "lane", "ts"} <= set(last)
    assert main(["log", "tail", str(db), "-n", "100", "--json"]) == 0
    decided = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    access = next(o for o in decided if o["type"] == "access.decided")
    assert access["lane"] == "in-1"
    assert access["reasons"] == [
        "fuzzy-match",
        "fuzzy-dangerous-needs-confirmation",
        "appointment-valid",
    ]
    assert access["category"] == "hazmat"


async def test_tail_shows_undecodable_events_instead_of_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "g.db"
    async with await EventLog.open(db, gate_id="g") as log:
        await log.append(all_samples()[0])
    # A future event type written by newer software, chained properly.
    from edgegate.log.chain import event_hash
    from edgegate.log.eventlog import read_head

    conn = sqlite3.connect(db)
    seq, prev = read_head(conn)
    data = b"\x81\xa1x\x01"
    h = event_hash(prev, "g", seq + 1, 1, 1, "b", "future.thing", None, 1, data)
    conn.execute(
        "INSERT INTO events VALUES (?, 1, 1, 'b', 'future.thing', NULL, 1, ?, ?, ?)",
        (seq + 1, data, prev, h),
    )
    conn.commit()
    conn.close()
    assert main(["log", "tail", str(db), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["decode_error"] == "unknown event type 'future.thing'"
    assert last["raw"] == {"x": 1}
    assert main(["log", "verify", str(db)]) == 0


async def _append(db: Path, event: ev.Event) -> int:
    async with await EventLog.open(db, gate_id="g") as log:
        return await log.append(event)


def test_tail_follow_prints_new_events(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    asyncio.run(_append(db, all_samples()[0]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgegate",
            "log",
            "tail",
            str(db),
            "--follow",
            "--json",
            "--interval",
            "0.05",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["seq"] == 1
        time.sleep(0.1)  # pacing: the next event comes while the follower polls (0.05 s)
        asyncio.run(_append(db, ev.DaemonStopped(reason=ev.StopReason.REQUESTED)))
        second = json.loads(proc.stdout.readline())
        assert second["seq"] == 2
        assert second["type"] == "daemon.stopped"
    finally:
        proc.terminate()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def _gate_with_a_consumed_appointment(db: Path) -> None:
    """A log whose allow-list holds a blacklisted plate and an appointment that a pass
    consumed, recorded as the lane records it (access.decided, then vehicle.passed)."""
    decided = next(e for e in all_samples() if isinstance(e, ev.AccessDecided))
    async with await EventLog.open(db, gate_id="fengxiang-road") as log:
        service = await AllowListService.open(log)
        await service.replace(
            [reg(plate="苏E99999"), black("B1", "苏E99999"), appt()], source="central"
        )
        seq = await log.append(
            dataclasses.replace(
                decided, credential_id="A1", consumed_appointment="A1", plate="苏E12345"
            )
        )
        passed = ev.VehiclePassed(
            lane="in-1",
            plate="苏E12345",
            direction=Direction.ENTRY,
            category=VehicleCategory.HAZMAT,
            credential_id="A1",
            decision_seq=seq,
        )
        await service.append_with_consumption(passed, "A1", consumed=True)


async def test_verify_checks_the_allow_list_and_names_a_flipped_blacklisted_plate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "g.db"
    await _gate_with_a_consumed_appointment(db)
    assert main(["log", "verify", str(db)]) == 0
    assert "OK gate fengxiang-road: allow-list version 1, 3 entries, seal verified" in (
        capsys.readouterr().out
    )

    conn = sqlite3.connect(db)
    (plate,) = conn.execute("SELECT CAST(plate AS BLOB) FROM allowlist_entry WHERE id = 'B1'")
    flipped = bytes(plate[0][:-1]) + bytes([plate[0][-1] ^ 1])
    conn.execute("UPDATE allowlist_entry SET plate = CAST(? AS TEXT) WHERE id = 'B1'", (flipped,))
    conn.commit()
    conn.close()
    assert main(["log", "verify", str(db)]) == 1
    out = capsys.readouterr().out
    assert (
        "FAILED gate fengxiang-road: allow-list: changed outside edgegate: first bad entry:"
        " blacklist 'B1' (plate '苏E99998'): plate column '苏E99998' is not the entry's plate"
        " '苏E99999'"
    ) in out


async def test_verify_names_an_appointment_whose_consumption_was_undone_by_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "g.db"
    await _gate_with_a_consumed_appointment(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE allowlist_entry SET data = ? WHERE id = 'A1'", (codec.encode(appt()),))
    conn.commit()
    passed_seq = conn.execute("SELECT MAX(seq) FROM events WHERE type = 'vehicle.passed'")
    seq = passed_seq.fetchone()[0]
    conn.close()
    assert main(["log", "verify", str(db)]) == 1
    out = capsys.readouterr().out
    assert (
        f"first bad entry: appointment 'A1' (plate '苏E12345'): stored as not consumed, but the"
        f" log's vehicle.passed seq {seq} consumed it"
    ) in out
