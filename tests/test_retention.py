"""[log.retention]: roll-over by day and size, archiving only what central acknowledged,
removal over the budget, and reading the whole kept log as one (real files, a manual clock)."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest

from edgegate.cli.main import main
from edgegate.config import parse_config
from edgegate.core import events as ev
from edgegate.core.clock import ManualClock
from edgegate.core.domain import Direction
from edgegate.log import EventLog, LogReader, StoredEvent
from edgegate.log.eventlog import connect
from edgegate.log.reader import LogGoneError
from edgegate.log.retention import Retention, RetentionPolicy
from edgegate.log.segments import SegmentError, check_copy, list_files, segments_dir, write_segment
from tests.config_cases import assert_reported
from tests.config_cli import Runner
from tests.eventually import eventually
from tests.gate_harness import ALLOWED, RunningGate, gate_toml, lane, sim_plc, sim_reader
from tests.test_config_sync import BASE, with_sync

HOUR = 3600.0
CURSOR = "sync.central"
# 2026-11-20 00:00 in Asia/Shanghai (UTC+8): days of the gate start at 16:00 UTC.
MIDNIGHT_NS = 1_795_536_000 * 10**9


def _policy(**overrides: object) -> RetentionPolicy:
    values: dict[str, object] = {
        "timezone": "Asia/Shanghai",
        "max_segment_size": 1 << 30,
        "keep": timedelta(days=2),
        "archive_budget": 1 << 40,
        "acked_cursor": CURSOR,
        "compression_level": 3,
    }
    values.update(overrides)
    return RetentionPolicy(**values)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> ManualClock:
    """The log's clock (conftest's ``event_log`` uses it): 06:00 on a gate's day."""
    return ManualClock(wall_ns=MIDNIGHT_NS + 6 * 3600 * 10**9)


async def _append_day(event_log: EventLog, clock: ManualClock, n: int = 50) -> list[int]:
    """``n`` events spread over the next 12 hours."""
    seqs = []
    for _i in range(n):
        seqs.append(
            await event_log.append(
                ev.PlateRead(lane="in-1", plate="苏E12345", confidence=0.9, reader="cam", raw=b"x")
            )
        )
        clock.advance(12 * HOUR / n)
    return seqs


async def _ack(event_log: EventLog, seq: int) -> None:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO projection_position (name, seq) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            (CURSOR, seq),
        )

    await event_log.run_in_writer(write)


def _types(path: Path, prefix: str = "log.") -> list[ev.Event]:
    with LogReader(path) as reader:
        return [
            StoredEvent(*row).event()
            for rows in reader.iter_rows()
            for row in rows
            if row[4].startswith(prefix)
        ]


def _active_rows(path: Path) -> tuple[int, int]:
    conn = connect(path, readonly=True)
    try:
        return conn.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()  # type: ignore[no-any-return]
    finally:
        conn.close()


async def test_a_day_rolls_over_into_a_verified_segment_and_reads_as_one_log(
    event_log: EventLog, clock: ManualClock
) -> None:
    retention = Retention(event_log, _policy(), clock)
    try:
        first_day = await _append_day(event_log, clock)
        assert await retention.step() == []  # the day has not ended
        clock.advance(8 * HOUR)  # the next day, 02:00
        assert await retention.step() == []  # and no event of the next day yet
        second = await _append_day(event_log, clock, 5)
        done = await retention.step()
    finally:
        await retention.aclose()
    assert done[0] == "sealed 000000000001-000000000050.db (day)"
    sealed = [e for e in _types(event_log.path) if isinstance(e, ev.LogSegmentSealed)]
    assert [(e.first_seq, e.last_seq, e.reason) for e in sealed] == [(1, 50, "day")]
    lowest, head = _active_rows(event_log.path)
    assert lowest == second[0] and head == event_log.head[0]  # the sealed rows left the active file
    with LogReader(event_log.path) as reader:
        report = reader.verify()
        assert report.ok and report.events == event_log.head[0] and report.first_seq == 1
        assert [s.seq for s in reader.read(after=48, limit=10)] == [49, 50]  # a part ends
        assert [s.seq for s in reader.read(after=50, limit=3)] == second[:3]
        assert [s.seq for s in reader.tail(3)] == list(
            range(event_log.head[0] - 2, event_log.head[0] + 1)
        )
        assert len(reader.tail(1000)) == event_log.head[0]
        assert reader.count() == event_log.head[0]
        assert [r[0] for r in reader.of_types(("plate.read",))] == first_day + second
        assert reader.last_seq_before(MIDNIGHT_NS + 24 * 3600 * 10**9) == 50
        assert reader.first_seq_since(MIDNIGHT_NS + 24 * 3600 * 10**9) == 51
        assert reader.first_seq_since(0) == 1
        last_read = reader.last("plate.read")
        assert last_read is not None and last_read.seq == second[-1]


async def test_size_rolls_over_before_the_day_ends(event_log: EventLog, clock: ManualClock) -> None:
    retention = Retention(event_log, _policy(max_segment_size=20 * 170), clock)
    try:
        await _append_day(event_log, clock, 30)
        done = await retention.step()
    finally:
        await retention.aclose()
    assert done and done[0].endswith("(size)")
    with LogReader(event_log.path) as reader:
        assert reader.verify().ok


async def test_only_what_central_acknowledged_is_archived_then_the_budget_removes_the_oldest(
    event_log: EventLog, clock: ManualClock
) -> None:
    retention = Retention(event_log, _policy(keep=timedelta(hours=1)), clock)
    try:
        for _ in range(4):  # four days, each sealed once the next one's events come
            await _append_day(event_log, clock)
            clock.advance(12 * HOUR)
            await retention.step()
        files = list_files(segments_dir(event_log.path))
        assert [p.archived for p in files] == [False, False, False]  # nothing acknowledged
        assert retention.state.waiting_for_central == 3
        await _ack(event_log, 60)  # the first day and a bit of the second
        await retention.step()
        files = list_files(segments_dir(event_log.path))
        assert (files[0].first, files[0].archived) == (1, True)
        assert not any(p.archived for p in files[1:])  # [51..] waits for its acknowledgement
        await _ack(event_log, event_log.head[0])
        await retention.step()
        assert all(p.archived for p in list_files(segments_dir(event_log.path)))
        with LogReader(event_log.path) as reader:
            assert reader.verify().ok  # archives decompressed and chained
            assert [s.seq for s in reader.read(after=0, limit=5)] == [1, 2, 3, 4, 5]
        # A budget of two archives' worth: the oldest goes, logged first with its anchor.
        sizes = [p.size() for p in list_files(segments_dir(event_log.path))]
        await retention.aclose()
        retention = Retention(
            event_log, _policy(keep=timedelta(hours=1), archive_budget=sum(sizes[1:])), clock
        )
        done = await retention.step()
    finally:
        await retention.aclose()
    assert done == ["removed 000000000001-000000000050.db.zst"]
    removed = [e for e in _types(event_log.path) if isinstance(e, ev.LogArchiveRemoved)]
    assert [(e.first_seq, e.last_seq) for e in removed] == [(1, 50)]
    assert event_log.first_kept_seq == 51
    with LogReader(event_log.path) as reader:
        report = reader.verify()
        assert report.ok and report.first_seq == 51
        assert report.events == event_log.head[0] - 50
        assert reader.anchor()[1].hex() == removed[0].last_hash
        with pytest.raises(LogGoneError) as gone:
            reader.rows(after=10, limit=5)
        assert gone.value.first_seq == 51
        assert [r[0] for r in reader.rows(after=50, limit=2)] == [51, 52]


async def test_without_an_acknowledgement_cursor_segments_are_archived_and_say_so(
    event_log: EventLog, clock: ManualClock
) -> None:
    retention = Retention(event_log, _policy(keep=timedelta(0), acked_cursor=None), clock)
    try:
        await _append_day(event_log, clock)
        clock.advance(12 * HOUR)
        await _append_day(event_log, clock, 1)
        await retention.step()
    finally:
        await retention.aclose()
    archived = [e for e in _types(event_log.path) if isinstance(e, ev.LogSegmentArchived)]
    assert [(e.first_seq, e.acknowledged) for e in archived] == [(1, False)]


async def test_the_active_file_refuses_deleting_unsealed_events(event_log: EventLog) -> None:
    await event_log.append(ev.DaemonStopped(reason=ev.StopReason.SIGNAL))

    def delete(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM events WHERE seq = 1")

    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await event_log.run_in_writer(delete)


# ------------------------------------------------------------------------ configuration

_RETENTION = """
[log.retention]
keep = "7d"
archive_budget = "2GiB"
"""


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        pytest.param(
            BASE + _RETENTION,
            "log.retention.archive_unacknowledged",
            "this gate has no [sync]",
            id="no-sync-must-say-so",
        ),
        pytest.param(
            with_sync(append=_RETENTION + "archive_unacknowledged = true\n"),
            "log.retention.archive_unacknowledged",
            "only for a gate without [sync]",
            id="sync-never-unacknowledged",
        ),
        pytest.param(
            BASE + '\n[log.retention]\nkeep = "7d"\n',
            "log.retention.archive_budget",
            "required key is missing",
            id="budget-required",
        ),
        pytest.param(
            BASE + _RETENTION + 'archive_unacknowledged = true\nmax_segment_size = "10KiB"\n',
            "log.retention.max_segment_size",
            "must be between",
            id="segment-too-small",
        ),
    ],
)
def test_retention_settings_are_checked(
    text: str, key: str, fragment: str, tmp_path: Path, run_cli: Runner
) -> None:
    assert_reported(tmp_path / "gate.toml", text, key, fragment, run_cli)


def test_check_config_shows_the_retention(tmp_path: Path, run_cli: Runner) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(with_sync(append=_RETENTION), encoding="utf-8")
    code, out, _ = run_cli(path)
    assert code == 0
    assert "segments by day or 1GiB, uncompressed for 7d" in out
    assert "once central acknowledged them; oldest archives removed beyond 2GiB" in " ".join(
        out.split()
    )
    path.write_text(BASE, encoding="utf-8")
    assert "(none: one log file that grows without bound)" in run_cli(path)[1]


# ------------------------------------------------------------------------------ the daemon


async def test_a_restarted_gate_rebuilds_from_archives_and_keeps_rolling_over(
    tmp_path: Path,
) -> None:
    """The daemon's start-up scans read across archives: a hold and a vehicle inside logged
    three days ago, now in an archive, are held again and inside again; and the daemon runs
    its own retention ([log.retention] of a gate without [sync]), whose log verifies."""
    path = tmp_path / "gate.db"
    then = ManualClock(wall_ns=time.time_ns() - 3 * 86_400 * 10**9)
    async with await EventLog.open(path, gate_id="e2e-gate", clock=then) as old:
        await old.append(
            ev.ManualAction(
                lane="l1", action=ev.ManualActionKind.OPEN, operator="guard:li", reason="escort"
            )
        )
        await old.append(
            ev.VehiclePassed(lane="l1", plate=ALLOWED, direction=Direction.ENTRY, category=None)
        )
        then.advance(86_400)  # a day later: the log moved past the first day
        await old.append(ev.DaemonStopped(reason=ev.StopReason.SIGNAL))
        retention = Retention(old, _policy(keep=timedelta(0), acked_cursor=None), then)
        try:
            await retention.step()
        finally:
            await retention.aclose()
    assert [p.archived for p in list_files(segments_dir(path))] == [True]
    text = gate_toml(
        path, {"plc": sim_plc(), "cam": sim_reader()}, [lane("l1", "entry", "cam", "plc")]
    )
    text += '\n[log.retention]\narchive_budget = "1GiB"\narchive_unacknowledged = true\n'
    config = parse_config(text, source="<e2e>", base_dir=tmp_path)
    async with RunningGate(config) as g:
        started = g.log.of(ev.DaemonStarted)[-1]
        restored = await g.log.wait_for(ev.ManualAction, lane="l1", after=started.seq)
        assert restored.event.operator == "guard:li" and "held since seq 1" in restored.event.reason
        assert ALLOWED in g.gate.presence
        assert g.gate.retention is not None
        # The day the old log ended is sealed by the running gate (its events are older).
        await eventually(
            lambda: len(list_files(segments_dir(path))) == 2, "the daemon sealed the old day"
        )


async def test_a_segment_that_is_not_the_log_s_copy_is_refused(
    event_log: EventLog, clock: ManualClock
) -> None:
    await _append_day(event_log, clock, 5)
    with LogReader(event_log.path) as reader:
        rows = [r for batch in reader.iter_rows() for r in batch]
    part = write_segment(event_log.path, event_log.gate_id, 1, 5, rows[0][8], rows[4][9])
    conn = sqlite3.connect(part.path, isolation_level=None)
    conn.execute("ATTACH DATABASE ? AS src", (str(event_log.path),))
    try:
        check_copy(conn, part.name, 1, 5, rows[0][8], rows[4][9])  # sound
        with pytest.raises(SegmentError, match=r"holds 5 events 1\.\.5, not 1\.\.6"):
            check_copy(conn, part.name, 1, 6, rows[0][8], rows[4][9])
        with pytest.raises(SegmentError, match="does not chain from the sealed log"):
            check_copy(conn, part.name, 1, 5, b"\x01" * 32, rows[4][9])
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET data = x'00' WHERE seq = 3")
        with pytest.raises(SegmentError, match="seq 3 differs from the log's"):
            check_copy(conn, part.name, 1, 5, rows[0][8], rows[4][9])
    finally:
        conn.close()


async def test_log_verify_and_tail_read_across_segments_archives_and_the_anchor(
    event_log: EventLog, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    retention = Retention(event_log, _policy(keep=timedelta(0), acked_cursor=None), clock)
    try:
        for _ in range(3):  # two days sealed and archived, the third sealed on the way
            await _append_day(event_log, clock)
            clock.advance(12 * HOUR)
            await retention.step()
    finally:
        await retention.aclose()
    usage = event_log.disk_usage()
    assert usage.archives > 0 and usage.active > 0
    assert usage.total == usage.active + usage.segments + usage.archives
    head = event_log.head[0]
    db = str(event_log.path)
    assert main(["log", "verify", db]) == 0
    assert f"{head} events, seq 1..{head}, chain verified\n" in capsys.readouterr().out
    assert main(["log", "tail", db, "-n", str(head), "--json"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == list(
        range(1, head + 1)
    )
    removal = Retention(
        event_log, _policy(keep=timedelta(0), acked_cursor=None, archive_budget=0), clock
    )
    try:
        await removal.step()
    finally:
        await removal.aclose()
    first = event_log.first_kept_seq
    assert first > 1
    assert main(["log", "verify", db]) == 0
    out = capsys.readouterr().out
    assert f"seq {first}..{event_log.head[0]}, chain verified (chained from the anchor" in out
    assert main(["replay", "verify", db]) == 0
    out = capsys.readouterr().out
    assert f"seq {first}..{event_log.head[0]}, chain verified (chained from the anchor" in out
    # An archive deleted by hand (not by the retention) is a gap that verify names.
    await _append_day(event_log, clock)
    clock.advance(12 * HOUR)
    await _append_day(event_log, clock, 1)
    retention = Retention(event_log, _policy(keep=timedelta(0), acked_cursor=None), clock)
    try:
        await retention.step()
    finally:
        await retention.aclose()
    [archive] = list_files(segments_dir(event_log.path))
    packed = archive.path.read_bytes()
    # Cut off (a copy that stopped half-way, a full disk): a damaged archive, named.
    for cut in (packed[: len(packed) // 2], b""):
        archive.path.write_bytes(cut)
        assert main(["log", "verify", db]) == 2
        err = capsys.readouterr().err
        assert f"{archive.path.name}: damaged archive: cut off (empty or truncated)" in err
    archive.path.unlink()
    assert main(["log", "verify", db]) == 1
    assert f"first bad seq {archive.first}: gap" in capsys.readouterr().out


async def test_a_reader_open_across_a_seal_follows_the_rows_into_the_segment(
    event_log: EventLog, clock: ManualClock
) -> None:
    """A long-lived reader (the uplink's, the pull API's) listed no segment; the rows it asks
    for next left the active file meanwhile: it finds them in the new segment. A segment
    emptied by hand is a gap verify names, not a reader going round in circles."""
    await _append_day(event_log, clock)
    clock.advance(12 * HOUR)
    await _append_day(event_log, clock, 3)
    with LogReader(event_log.path, live=True) as reader:
        assert [s.seq for s in reader.read(after=0, limit=5)] == [1, 2, 3, 4, 5]
        retention = Retention(event_log, _policy(), clock)
        try:
            assert (await retention.step())[0].startswith("sealed 000000000001-000000000050")
        finally:
            await retention.aclose()
        assert [s.seq for s in reader.read(after=5, limit=3)] == [6, 7, 8]
        assert [r[0] for r in reader.rows(48, 10)] == [49, 50]
        assert [r[0] for r in reader.rows(50, 2)] == [51, 52]
    [segment] = list_files(segments_dir(event_log.path))
    conn = sqlite3.connect(segment.path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER events_no_delete")
        conn.execute("DELETE FROM events WHERE seq > 20")
    finally:
        conn.close()
    with LogReader(event_log.path) as reader:
        report = reader.verify()
    assert report.fault is not None and report.fault.seq == 21
    assert report.fault.problem.startswith("gap")
