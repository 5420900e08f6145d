"""The event log: durability contract, chain, append-only enforcement, tamper detection."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgegate.core import events as ev
from edgegate.core.clock import ManualClock
from edgegate.log import EventLog, GateMismatchError, LogClosedError, LogReader, LogWriteError
from edgegate.log.eventlog import _chunk_sizes, _insert_rows, connect
from edgegate.log.schema import LATEST, SchemaError, migrate
from tests.event_samples import all_samples
from tests.eventually import eventually
from tests.tamper import tamper


def _loop_event(i: int) -> ev.LoopChanged:
    return ev.LoopChanged(
        lane=f"in-{i % 3}", loop=ev.Loop.ARMING, occupied=i % 2 == 0, source="plc-1"
    )


async def test_append_returns_gap_free_seqs_and_reads_back(event_log: EventLog) -> None:
    samples = all_samples()
    seqs = [await event_log.append(e) for e in samples]
    assert seqs == list(range(1, len(samples) + 1))
    assert event_log.head[0] == len(samples)
    with LogReader(event_log.path) as reader:
        stored = reader.read(after=0, limit=100)
        assert [s.event() for s in stored] == samples
        assert reader.verify().ok


async def test_envelope_carries_clock_boot_and_chain(
    event_log: EventLog, clock: ManualClock
) -> None:
    await event_log.append(_loop_event(0))
    clock.advance(1.5)
    await event_log.append(_loop_event(1))
    with LogReader(event_log.path) as reader:
        a, b = reader.read()
    assert b.wall_ns - a.wall_ns == 1_500_000_000
    assert b.mono_ns - a.mono_ns == 1_500_000_000
    assert a.boot_id == clock.boot_id
    assert a.prev_hash == bytes(32)
    assert b.prev_hash == a.hash
    assert a.lane == "in-0"
    assert a.type == "loop.changed"


async def test_concurrent_producers_get_unique_gap_free_seqs(event_log: EventLog) -> None:
    async def producer(k: int) -> list[int]:
        return [await event_log.append(_loop_event(k * 1000 + i)) for i in range(50)]

    results = await asyncio.gather(*(producer(k) for k in range(64)))
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(1, 64 * 50 + 1))
    for r in results:  # each producer's events keep its order
        assert r == sorted(r)
    with LogReader(event_log.path) as reader:
        report = reader.verify()
    assert report.ok and report.events == 64 * 50


async def test_effect_commits_with_its_event(event_log: EventLog) -> None:
    await event_log.run_in_writer(lambda c: c.execute("CREATE TABLE side (seq INTEGER)"))

    def effect(conn: sqlite3.Connection, seq: int) -> None:
        conn.execute("INSERT INTO side (seq) VALUES (?)", (seq,))

    seq = await event_log.append(_loop_event(0), effect=effect)
    rows = await event_log.run_in_writer(lambda c: c.execute("SELECT seq FROM side").fetchall())
    assert rows == [(seq,)]


async def test_failed_effect_rolls_back_event_and_effect_and_keeps_chain(
    event_log: EventLog,
) -> None:
    await event_log.run_in_writer(lambda c: c.execute("CREATE TABLE side (seq INTEGER)"))

    def failing(conn: sqlite3.Connection, seq: int) -> None:
        conn.execute("INSERT INTO side (seq) VALUES (?)", (seq,))
        raise ValueError("projection refused the update")

    first = await event_log.append(_loop_event(0))
    results = await asyncio.gather(
        event_log.append(_loop_event(1)),
        event_log.append(_loop_event(2), effect=failing),
        event_log.append(_loop_event(3)),
        return_exceptions=True,
    )
    assert results[0] == first + 1
    assert isinstance(results[1], ValueError)
    assert results[2] == first + 2  # no hole where the failed event would have been
    side = await event_log.run_in_writer(lambda c: c.execute("SELECT * FROM side").fetchall())
    assert side == []
    with LogReader(event_log.path) as reader:
        assert reader.verify().ok
        assert reader.head()[0] == first + 2


async def test_submitted_appends_resolve_in_seq_order_once_durable(event_log: EventLog) -> None:
    futures = [event_log.submit(_loop_event(i)) for i in range(500)]
    seqs = await asyncio.gather(*futures)
    assert seqs == list(range(1, 501))
    with LogReader(event_log.path) as reader:
        assert reader.head()[0] == 500
        assert reader.verify().ok


async def test_group_links_seqs_and_commits_between_other_producers(event_log: EventLog) -> None:
    await event_log.append(_loop_event(0))

    def build(first: int) -> list[ev.Event]:
        return [
            ev.ManualAction(
                lane="in-1", action=ev.ManualActionKind.OPEN, operator="op", reason=f"read {first}"
            ),
            ev.BarrierCommanded(
                lane="in-1",
                command=ev.BarrierCommand.OPEN,
                reason="manual",
                device="plc-1",
                cause_seq=first,
            ),
        ]

    before, group, after = await asyncio.gather(
        event_log.append(_loop_event(1)),
        event_log.append_group(build),
        event_log.append(_loop_event(2)),
    )
    assert (before, group, after) == (2, [3, 4], 5)
    with LogReader(event_log.path) as reader:
        stored = {s.seq: s.event() for s in reader.read(after=0, limit=10)}
        assert reader.verify().ok
    manual, commanded = stored[3], stored[4]
    assert isinstance(manual, ev.ManualAction)
    assert manual.reason == "read 3"
    assert isinstance(commanded, ev.BarrierCommanded)
    assert commanded.cause_seq == 3


async def test_failed_group_leaves_no_event_and_no_hole(event_log: EventLog) -> None:
    def build(first: int) -> list[ev.Event]:
        raise RuntimeError(f"cannot build from {first}")

    results = await asyncio.gather(
        event_log.append(_loop_event(0)),
        event_log.append_group(build),
        event_log.append(_loop_event(1)),
        return_exceptions=True,
    )
    assert results[0] == 1
    assert isinstance(results[1], RuntimeError)
    assert results[2] == 2
    with LogReader(event_log.path) as reader:
        assert reader.head()[0] == 2
        assert reader.verify().ok


async def test_group_fails_whole_when_the_commit_fails(event_log: EventLog) -> None:
    await event_log.append(_loop_event(0))
    pages = await event_log.run_in_writer(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await event_log.run_in_writer(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    big = ev.FrameRejected(device="cam", reason="huge", data=b"\x00" * 200_000)
    with pytest.raises(LogWriteError, match="commit failed"):
        await event_log.append_group(lambda first: [_loop_event(1), big])
    await event_log.run_in_writer(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
    assert await event_log.append_group(lambda first: [_loop_event(1), big]) == [2, 3]
    with LogReader(event_log.path) as reader:
        assert reader.verify().ok


async def test_commit_failure_raises_and_appending_resumes(event_log: EventLog) -> None:
    """A full disk (simulated with max_page_count) fails the batch; nothing half-written."""
    await event_log.append(_loop_event(0))
    pages = await event_log.run_in_writer(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await event_log.run_in_writer(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    big = ev.FrameRejected(device="cam", reason="huge", data=b"\x00" * 200_000)
    with pytest.raises(LogWriteError, match="commit failed"):
        await event_log.append(big)
    await event_log.run_in_writer(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
    assert await event_log.append(big) == 2
    with LogReader(event_log.path) as reader:
        assert reader.verify().ok


async def test_reopen_resumes_the_chain(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "g.db"
    async with await EventLog.open(path, gate_id="g1", clock=clock) as log:
        for i in range(5):
            await log.append(_loop_event(i))
    async with await EventLog.open(path, gate_id="g1", clock=clock) as log:
        assert log.head[0] == 5
        assert await log.append(_loop_event(5)) == 6
    with LogReader(path) as reader:
        assert reader.verify().ok


async def test_log_of_another_gate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    async with await EventLog.open(path, gate_id="g1"):
        pass
    with pytest.raises(GateMismatchError, match="belongs to gate 'g1', not 'g2'"):
        await EventLog.open(path, gate_id="g2")


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    async with await EventLog.open(path, gate_id="g1"):
        pass
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (?, 'from the future', 0)", (LATEST + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="newer than this software knows"):
        await EventLog.open(path, gate_id="g1")


async def test_migrations_are_recorded(event_log: EventLog) -> None:
    versions = await event_log.run_in_writer(
        lambda c: [r[0] for r in c.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    )
    assert versions == list(range(1, LATEST + 1))


async def test_append_after_close_is_refused(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "g.db", gate_id="g1")
    await log.aclose()
    with pytest.raises(LogClosedError):
        await log.append(_loop_event(0))


async def test_close_commits_everything_queued(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "g.db", gate_id="g1")
    tasks = [asyncio.create_task(log.append(_loop_event(i))) for i in range(200)]
    await asyncio.sleep(0)
    await log.aclose()
    assert sorted(await asyncio.gather(*tasks)) == list(range(1, 201))


# --- append-only in fact ----------------------------------------------------------------


async def _filled(tmp_path: Path, n: int = 10) -> Path:
    path = tmp_path / "g.db"
    async with await EventLog.open(path, gate_id="g1") as log:
        for i in range(n):
            await log.append(_loop_event(i))
    return path


async def test_update_and_delete_are_refused_by_triggers(tmp_path: Path) -> None:
    path = await _filled(tmp_path)
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only: UPDATE refused"):
        conn.execute("UPDATE events SET lane = 'x' WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only: DELETE refused"):
        conn.execute("DELETE FROM events WHERE seq = 3")
    with pytest.raises(sqlite3.IntegrityError, match="gate id of a log never changes"):
        conn.execute("UPDATE log_meta SET value = 'other' WHERE key = 'gate_id'")
    conn.close()
    with LogReader(path) as reader:
        assert reader.verify().ok


async def test_flipped_payload_byte_is_caught_at_its_seq(tmp_path: Path) -> None:
    path = await _filled(tmp_path)
    conn = sqlite3.connect(path)
    data = bytearray(conn.execute("SELECT data FROM events WHERE seq = 6").fetchone()[0])
    conn.close()
    data[len(data) // 2] ^= 0x01
    tamper(path, "UPDATE events SET data = ? WHERE seq = 6", bytes(data))
    with LogReader(path) as reader:
        report = reader.verify()
    assert not report.ok
    assert report.fault is not None and report.fault.seq == 6
    assert "hash does not match" in report.fault.problem
    assert report.missing_triggers == ("events_no_update", "events_no_delete")


async def test_a_payload_edited_into_text_is_caught_at_its_seq(tmp_path: Path) -> None:
    """``||`` makes text of the bytes it splices; verify still names the seq."""
    path = await _filled(tmp_path)
    tamper(path, "UPDATE events SET data = X'00' || substr(data, 2) WHERE seq = 6")
    with LogReader(path) as reader:
        report = reader.verify()
        assert reader.read(after=5, limit=1)[0].seq == 6
    assert report.fault is not None and report.fault.seq == 6
    assert "hash does not match" in report.fault.problem


async def test_deleted_row_is_caught_as_a_gap(tmp_path: Path) -> None:
    path = await _filled(tmp_path)
    tamper(path, "DELETE FROM events WHERE seq = 4")
    with LogReader(path) as reader:
        fault = reader.verify().fault
    assert fault is not None and fault.seq == 4 and "gap" in fault.problem


async def test_rehashed_edit_breaks_the_link_to_the_next_event(tmp_path: Path) -> None:
    """Even recomputing the edited row's own hash cannot hide an edit: the next link breaks."""
    from edgegate.log.chain import event_hash

    path = await _filled(tmp_path)
    conn = sqlite3.connect(path)
    row = conn.execute(
        "SELECT seq, wall_ns, mono_ns, boot_id, type, lane, version, data, prev_hash "
        "FROM events WHERE seq = 7"
    ).fetchone()
    conn.close()
    forged = event_hash(
        row[8], "g1", row[0], row[1], row[2], row[3], row[4], "in-9", row[6], row[7]
    )
    tamper(path, "UPDATE events SET lane = 'in-9', hash = ? WHERE seq = 7", forged)
    with LogReader(path) as reader:
        fault = reader.verify().fault
    assert fault is not None and fault.seq == 8
    assert "prev_hash" in fault.problem


@pytest.mark.parametrize(("limit", "largest"), [(32766, 2048), (999, 64), (10, 1)])
def test_chunk_sizes_follow_the_variable_limit_of_this_sqlite(
    tmp_path: Path, limit: int, largest: int
) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    sizes = _chunk_sizes(conn)
    assert sizes[0] == largest and sizes[-1] == 1
    assert all(a == 2 * b for a, b in itertools.pairwise(sizes))


@pytest.mark.parametrize("count", [0, 1, 2, 3, 63, 64, 65, 127, 1000, 4097])
def test_multi_row_inserts_store_every_row_once_in_order(tmp_path: Path, count: int) -> None:
    conn = connect(tmp_path / "x.db")
    migrate(conn)
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # chunks of at most 64 rows
    flat: list[object] = []
    for seq in range(1, count + 1):
        flat.extend((seq, seq, seq, "boot", "t", None, 1, b"d", b"p", seq.to_bytes(4, "big")))
    conn.execute("BEGIN IMMEDIATE")
    _insert_rows(conn, flat, _chunk_sizes(conn))
    conn.execute("COMMIT")
    stored = [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY rowid")]
    assert stored == list(range(1, count + 1))
    conn.close()


async def test_many_queued_events_are_stored_once_in_order(tmp_path: Path) -> None:
    # Plain events go in statements of at most 2,048 rows: 5,000 queued take several commits.
    async with await EventLog.open(tmp_path / "big.db", gate_id="g", max_batch=10_000) as log:
        seqs = await asyncio.gather(*(log.submit(_loop_event(i)) for i in range(5_000)))
    assert seqs == list(range(1, 5_001))
    with LogReader(tmp_path / "big.db") as reader:
        report = reader.verify()
        assert [e.event() for e in reader.read(after=4_997, limit=10)] == [
            _loop_event(4_997),
            _loop_event(4_998),
            _loop_event(4_999),
        ]
    assert report.ok and report.events == 5_000


async def test_one_large_group_is_stored_whole(tmp_path: Path) -> None:
    # More than two of the largest statements' worth in one transaction.
    async with await EventLog.open(tmp_path / "big.db", gate_id="g") as log:
        await log.append(_loop_event(0))
        seqs = await log.append_group(lambda first: [_loop_event(i) for i in range(5_000)])
    assert seqs == list(range(2, 5_002))
    with LogReader(tmp_path / "big.db") as reader:
        report = reader.verify()
    assert report.ok and report.events == 5_001


async def test_committed_events_reach_the_database_file_while_the_log_is_open(
    tmp_path: Path,
) -> None:
    """A checkpointer beside the writer copies the WAL into the file (the writer never does)."""
    path = tmp_path / "gate.db"
    async with await EventLog.open(path, gate_id="g") as log:
        before = path.stat().st_size
        await asyncio.gather(*(log.submit(_loop_event(i)) for i in range(3_000)))
        await eventually(
            lambda: path.stat().st_size > before + 100_000, "the WAL checkpointed into the file"
        )
        with LogReader(path) as reader:
            assert reader.head()[0] == 3_000


async def test_reader_finds_the_newest_event_of_a_type(event_log: EventLog) -> None:
    await event_log.append(_loop_event(0))
    await event_log.append(ev.DeviceRecovered(device="plc-1", down_ms=10))
    last_loop = await event_log.append(_loop_event(1))
    await event_log.append(ev.DeviceRecovered(device="plc-2", down_ms=20))
    with LogReader(event_log.path) as reader:
        found = reader.last("loop.changed")
        assert found is not None and found.seq == last_loop
        assert found.event() == _loop_event(1)
        assert reader.last("mode.changed") is None


class _CloseWhileClearing(threading.Event):
    """The checkpointer's wake-up event, clearing only once ``aclose`` has set it and the
    stop flag: the interleaving in which a close used to be lost."""

    def __init__(self, log: EventLog, clearing: threading.Event) -> None:
        super().__init__()
        self._log = log
        self._clearing = clearing

    def clear(self) -> None:
        self._clearing.set()
        stop = self._log._checkpoints_stop
        if stop.wait(timeout=5):
            while not self.is_set():  # aclose sets the wake-up right after the stop flag
                time.sleep(0.001)
        super().clear()


class _RacyLog(EventLog):
    clearing: threading.Event

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clearing = threading.Event()
        self._checkpoint_due = _CloseWhileClearing(self, self.clearing)


async def test_close_stops_a_checkpointer_clearing_its_wake_up_meanwhile(
    tmp_path: Path,
) -> None:
    log = await _RacyLog.open(tmp_path / "gate.db", gate_id="g")
    assert isinstance(log, _RacyLog)
    await log.append(_loop_event(0))
    await asyncio.to_thread(log.clearing.wait, 5)  # the checkpointer is about to clear
    try:
        await asyncio.wait_for(log.aclose(), timeout=5)
    finally:
        log._checkpoint_due.set()  # lets a lost checkpointer end, so a failure cannot hang


async def test_batches_are_capped_by_max_batch(tmp_path: Path) -> None:
    committed: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def hold(_conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(10)

    async with await EventLog.open(tmp_path / "g.db", gate_id="g", max_batch=3) as log:
        original = log._commit

        def spy(batch: list[object]) -> None:
            committed.append(len(batch))
            original(batch)

        log._commit = spy  # type: ignore[method-assign]
        held = asyncio.ensure_future(log.run_in_writer(hold))
        await asyncio.to_thread(entered.wait, 10)
        futures = [log.submit(_loop_event(i)) for i in range(10)]  # queued behind the job
        release.set()
        await held
        assert await asyncio.gather(*futures) == list(range(1, 11))
    # The job alone, then power-of-two counts within the cap: 3 becomes 2.
    assert committed == [1, 2, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="max_batch"):
        await EventLog.open(tmp_path / "h.db", gate_id="g", max_batch=0)


async def test_an_event_whose_header_cannot_be_packed_fails_its_batch_only(
    event_log: EventLog,
) -> None:
    bad = ev.LoopChanged(lane=object(), loop=ev.Loop.ARMING, occupied=True, source="plc-1")  # type: ignore[arg-type]
    with pytest.raises(LogWriteError, match="commit failed"):
        await asyncio.wait_for(event_log.append(bad), 5)
    assert await event_log.append(_loop_event(0)) == 1
    with LogReader(event_log.path) as reader:
        assert reader.verify().ok


async def test_the_rest_of_a_burst_is_committed_whole_not_halved(tmp_path: Path) -> None:
    taken: list[tuple[int, bool]] = []
    entered, release = threading.Event(), threading.Event()

    def hold(_conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(10)

    async with await EventLog.open(tmp_path / "g.db", gate_id="g") as log:
        original = log._commit_taken

        def spy(batch: list[object], *, whole: bool = False) -> None:
            taken.append((len(batch), whole))
            original(batch, whole=whole)

        log._commit_taken = spy  # type: ignore[method-assign]
        held = asyncio.ensure_future(log.run_in_writer(hold))
        await asyncio.to_thread(entered.wait, 10)
        futures = [log.submit(_loop_event(i)) for i in range(2_047)]  # a burst, then nothing
        release.set()
        await held
        assert await asyncio.gather(*futures) == list(range(1, 2_048))
    # One INSERT of 1,024, then the 1,023 left in one transaction (not 512, 256, ... 1).
    assert taken == [(1, False), (1_024, False), (1_023, True)]
    with LogReader(tmp_path / "g.db") as reader:
        assert reader.verify().ok


async def test_a_writer_bug_fails_the_batch_in_hand_and_everything_after(tmp_path: Path) -> None:
    async with await EventLog.open(tmp_path / "g.db", gate_id="g") as log:

        def broken(batch: list[object]) -> None:
            raise RecursionError("a bug in the writer")

        log._commit = broken  # type: ignore[method-assign]
        with pytest.raises(LogClosedError, match="writer died"):
            await asyncio.wait_for(log.append(_loop_event(0)), 5)
        with pytest.raises(LogClosedError, match="writer died"):
            await log.append(_loop_event(1))
