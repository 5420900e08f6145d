"""Replay sources: a log on read-only media is read without a byte written or a file created;
central's copy yields the same events; the gate's time zone is read from the log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from edgegate.central.store import open_store
from edgegate.cli.main import main
from edgegate.core import events as ev
from edgegate.log import EventLog, LogReader
from edgegate.replay.source import open_central, open_log
from tests.event_samples import all_samples

GATE = "fengxiang-road"


async def _log(path: Path, zone: str = "Asia/Shanghai") -> None:
    async with await EventLog.open(path, gate_id=GATE) as log:
        for e in all_samples():
            if isinstance(e, ev.DaemonStarted):
                e = ev.DaemonStarted(
                    software_version="0.1.0",
                    config_hash="cd",
                    config_path="/x",
                    pid=1,
                    timezone=zone,
                )
            await log.append(e)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "media"
    d.mkdir()
    yield d
    os.chmod(d, stat.S_IRWXU)
    for f in d.iterdir():
        os.chmod(f, stat.S_IRUSR | stat.S_IWUSR)


def test_log_on_read_only_media_is_read_without_writing(
    read_only_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = read_only_dir / "gate.db"
    asyncio.run(_log(db))
    db.chmod(0o444)
    read_only_dir.chmod(0o555)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    out = read_only_dir.parent / "out.ndjson"
    assert main(["replay", "timeline", str(db), "--json"]) == 0
    assert main(["replay", "verify", str(db)]) == 0
    assert main(["replay", "export", str(db), "--ndjson", str(out)]) == 0
    assert sorted(p.name for p in read_only_dir.iterdir()) == ["gate.db"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(all_samples())


def test_central_copy_yields_the_same_events(tmp_path: Path) -> None:
    db = tmp_path / "gate.db"
    asyncio.run(_log(db))
    dsn = f"sqlite:///{tmp_path / 'central.db'}"
    with LogReader(db) as reader, open_store(dsn) as store:
        rows = [r for batch in reader.iter_rows() for r in batch]
        store.store_batch(GATE, [list(r) for r in rows])
    listing = sorted(p.name for p in tmp_path.iterdir())
    with open_log(db) as a, open_central(dsn) as b:
        assert [e.row() for e in b.events()] == [e.row() for e in a.events()] == rows
        assert b.gate_id == GATE
        # Nothing created beside the store while it is read (a -wal, a -shm).
        assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_recorded_time_zone_is_used_and_tz_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "gate.db"
    asyncio.run(_log(db, zone="Asia/Urumqi"))
    assert main(["replay", "timeline", str(db), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["timezone"] == "Asia/Urumqi"
    first = doc["items"][0]
    assert first.get("ts", first.get("start")).endswith("+06:00")
    assert main(["replay", "timeline", str(db), "--json", "--tz", "UTC"]) == 0
    first = json.loads(capsys.readouterr().out)["items"][0]
    assert first.get("ts", first.get("start")).endswith("+00:00")


def test_daemon_started_v1_reads_as_the_default_zone() -> None:
    stored = msgpack.packb(
        {"software_version": "0.1.0", "config_hash": "ab", "config_path": "/x", "pid": 7}
    )
    event = ev.decode("daemon.started", 1, stored)
    assert isinstance(event, ev.DaemonStarted)
    assert event.timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--type", "vehicle.flew"], "--type 'vehicle.flew' names no event type"),
        (["--from", "yesterday"], "is not ISO 8601"),
        (["--tz", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["--from", "2026-11-29", "--to", "2026-11-28"], "is not after"),
    ],
)
def test_bad_filters_exit_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    db = tmp_path / "gate.db"
    asyncio.run(_log(db))
    assert main(["replay", "timeline", str(db), *args]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert err.count("\n") == 1


def test_foreign_sqlite_database_as_central_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert main(["replay", "timeline", "--central", f"sqlite:///{other}", "--gate", "g"]) == 2
    err = capsys.readouterr().err
    assert "not an edgegate central store" in err
    assert "Traceback" not in err
