"""``[log.retention]``: a log that fits its disk (docs/design.md §4, docs/operations.md).

Every ``check_every`` the retention takes the steps that are due, each reported by an event
appended before it takes effect for readers:

1. **seal**: the events of a day that ended (in the gate's time zone), or of a day whose
   events reached ``max_segment_size``, are copied into a segment file beside the log (in a
   background thread, through its own connection: the writer goes on), fsynced, renamed and
   verified; ``log.segment-sealed`` then records it (its effect sets the ``sealed_through``
   mark), and only then are the rows deleted from the active file, a small chunk per writer
   transaction, so that a lane's append never waits behind more than one chunk;
2. **archive**: a segment older than ``keep`` whose last event central acknowledged (the
   uplink's durable cursor; never one it did not, unless the gate has no ``[sync]`` and says
   ``archive_unacknowledged``) is compressed with zstd, checked, ``log.segment-archived``
   logged, and the segment file removed;
3. **remove**: while the archives exceed ``archive_budget``, the oldest is removed:
   ``log.archive-removed`` (with the anchor ``log verify`` then starts from) first, the file
   after.

A kill at any point leaves the log verifiable: readers follow the marks, not the files, and
the next start completes or undoes the interrupted step (``segments.recover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from edgegate.core.clock import Clock
from edgegate.core.events import LogArchiveRemoved, LogSegmentArchived, LogSegmentSealed
from edgegate.log import segments
from edgegate.log.eventlog import EventLog, LogError, connect
from edgegate.log.segments import Marks, Part, SegmentError
from edgegate.observability import get_logger

log = get_logger("retention")

T = TypeVar("T")

_ROW_OVERHEAD = 160
"""Bytes a stored row takes besides its payload (envelope, hashes, SQLite's record): the
size roll-over counts ``length(data) + _ROW_OVERHEAD`` per event."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What ``[log.retention]`` asks (built from the configuration by the daemon).

    ``acked_cursor``: the ``projection_position`` central's acknowledgement is kept under
    (``sync.central``); None on a gate without ``[sync]`` that archives unacknowledged.
    """

    timezone: str
    max_segment_size: int
    keep: timedelta
    archive_budget: int
    compression_level: int = 9
    acked_cursor: str | None = None
    check_every: timedelta = timedelta(minutes=1)
    delete_chunk: int = 500
    #: Between chunks: the checkpointer then copies a little WAL often, not a day's at once
    #: (one large fsync of the file would stall the lanes' commits behind it).
    delete_pause: float = 0.02


@dataclass(slots=True)
class _Sizing:
    """The running size estimate of the unsealed events: from ``first`` through ``through``."""

    first: int = 0
    through: int = 0
    size: int = 0


@dataclass(frozen=True, slots=True)
class _SealPlan:
    first: int
    last: int
    prev_hash: bytes
    last_hash: bytes
    last_wall_ns: int
    reason: str


@dataclass(slots=True)
class RetentionState:
    """What the retention last saw, for status lines and metrics."""

    marks: Marks = field(default_factory=Marks)
    waiting_for_central: int = 0  # segments due for archiving that central has not acked
    last_problem: str | None = None


class Retention:
    """Runs the retention of one ``EventLog`` (owned by the log's event loop)."""

    def __init__(self, elog: EventLog, policy: RetentionPolicy, clock: Clock) -> None:
        self.log = elog
        self.policy = policy
        self._clock = clock
        self._zone = ZoneInfo(policy.timezone)
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="eventlog-retention", initializer=_background
        )
        self._conn: sqlite3.Connection | None = None
        self._sizing = _Sizing()
        self._recovered = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._warned_day: str | None = None
        self.state = RetentionState()

    # --- running ------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run ``step`` every ``check_every`` in the background until ``aclose``."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="log-retention")
        return self._task

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        every = self.policy.check_every.total_seconds()
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a full disk, a damaged file: try again later
                self.state.last_problem = str(exc)
                log.error("retention_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._wake.wait()
            self._wake.clear()

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _reader(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.log.path, readonly=True)
        return self._conn

    async def step(self) -> list[str]:
        """Take every step that is due now; return what was done (one line each)."""
        done: list[str] = []
        if not self._recovered:
            marks = await self._in_thread(lambda: segments.read_marks(self._reader()))
            for line in await self._in_thread(lambda: segments.recover(self.log.path, marks)):
                log.warning("retention_recovered", action=line)
                done.append(line)
            self._recovered = True
        done += await self._delete_sealed()
        # Never beyond the head as it was: the retention's own events wait for the next step.
        head = self.log.head[0]
        while (plan := await self._in_thread(partial(self._plan_seal, head))) is not None:
            done.append(await self._seal(plan))
            done += await self._delete_sealed()
        done += await self._archive_due()
        done += await self._remove_over_budget()
        self.state.marks = await self._in_thread(lambda: segments.read_marks(self._reader()))
        self.state.last_problem = None
        return done

    # --- sealing ------------------------------------------------------------------------

    def _day_end_ns(self, wall_ns: int) -> int:
        """The next local midnight after ``wall_ns``, in the gate's time zone."""
        local = datetime.fromtimestamp(wall_ns / 1e9, self._zone)
        end = datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=self._zone)
        return int(end.timestamp()) * 1_000_000_000

    def _plan_seal(self, head: int) -> _SealPlan | None:
        """The next range to seal, up to ``head``: the first unsealed event's day once the
        log has moved on past it (its newest event is of a later day: the log's own clock
        decides, so a clock stepped back seals nothing early), else everything once the
        unsealed events reach ``max_segment_size``."""
        conn = self._reader()
        marks = segments.read_marks(conn)
        first = marks.sealed_through + 1
        if first > head:
            return None
        row = conn.execute(
            "SELECT wall_ns, CAST(prev_hash AS BLOB) FROM events WHERE seq = ?", (first,)
        ).fetchone()
        if row is None:
            return None
        first_wall, prev_hash = int(row[0]), bytes(row[1])
        day_end = self._day_end_ns(first_wall)
        newest = conn.execute("SELECT wall_ns FROM events WHERE seq = ?", (head,)).fetchone()
        last: int | None
        if newest is not None and newest[0] >= day_end:
            last = conn.execute(
                "SELECT MAX(seq) FROM events WHERE seq BETWEEN ? AND ? AND wall_ns < ?",
                (first, head, day_end),
            ).fetchone()[0]
            reason = "day"
        else:
            last = self._size_reached(conn, first)
            reason = "size"
        if last is None:
            return None
        last = min(last, head)
        tail = conn.execute(
            "SELECT CAST(hash AS BLOB), wall_ns FROM events WHERE seq = ?", (last,)
        ).fetchone()
        if prev_hash != marks.sealed_hash:
            raise SegmentError(
                f"event {first} does not chain from the last sealed event {first - 1}: "
                "nothing is sealed (see edgegate log verify)"
            )
        return _SealPlan(first, int(last), prev_hash, bytes(tail[0]), int(tail[1]), reason)

    def _size_reached(self, conn: sqlite3.Connection, first: int) -> int | None:
        """The head, once the unsealed events reach ``max_segment_size`` (counted on from
        where the last check stopped)."""
        sizing = self._sizing
        if sizing.first != first:
            self._sizing = sizing = _Sizing(first, first - 1, 0)
        size, through = conn.execute(
            "SELECT COALESCE(SUM(LENGTH(data)), 0) + COUNT(*) * ?, MAX(seq) FROM events"
            " WHERE seq > ?",
            (_ROW_OVERHEAD, sizing.through),
        ).fetchone()
        if through is not None:
            sizing.size += int(size)
            sizing.through = int(through)
        if sizing.size >= self.policy.max_segment_size:
            return sizing.through
        return None

    async def _seal(self, plan: _SealPlan) -> str:
        elog = self.log
        part = await self._in_thread(
            lambda: segments.write_segment(
                elog.path, elog.gate_id, plan.first, plan.last, plan.prev_hash, plan.last_hash
            )
        )

        def mark(conn: sqlite3.Connection, _seq: int) -> None:
            marks = segments.read_marks(conn)
            if marks.sealed_through != plan.first - 1:
                raise LogError(f"sealed through {marks.sealed_through}, not {plan.first - 1}")
            segments.write_marks(conn, sealed_through=plan.last, sealed_hash=plan.last_hash)
            conn.execute(
                "INSERT INTO log_segment (first_seq, last_seq, last_hash, last_wall_ns)"
                " VALUES (?, ?, ?, ?)",
                (plan.first, plan.last, plan.last_hash, plan.last_wall_ns),
            )

        size = part.size()
        await elog.append(
            LogSegmentSealed(
                first_seq=plan.first,
                last_seq=plan.last,
                last_hash=plan.last_hash.hex(),
                file=part.name,
                size=size,
                reason=plan.reason,
            ),
            effect=mark,
        )
        log.info("segment_sealed", first=plan.first, last=plan.last, size=size, reason=plan.reason)
        return f"sealed {part.name} ({plan.reason})"

    async def _delete_sealed(self) -> list[str]:
        """Delete the rows the sealed segments hold from the active file, a chunk per writer
        transaction (also what a crash left undeleted)."""

        def survey() -> tuple[int | None, int]:
            conn = self._reader()
            lowest = conn.execute("SELECT MIN(seq) FROM events").fetchone()[0]
            return lowest, segments.read_marks(conn).sealed_through

        lowest, sealed = await self._in_thread(survey)
        if lowest is None or lowest > sealed:
            return []
        start, chunk = int(lowest), self.policy.delete_chunk
        while start <= sealed:
            end = min(start + chunk - 1, sealed)

            def delete(conn: sqlite3.Connection, lo: int = start, hi: int = end) -> None:
                conn.execute("DELETE FROM events WHERE seq BETWEEN ? AND ?", (lo, hi))

            await self.log.run_in_writer(delete)
            start = end + 1
            await asyncio.sleep(self.policy.delete_pause)
        return [f"deleted events {lowest}..{sealed} from the active file"]

    # --- archiving and removal ----------------------------------------------------------

    def _acked(self, conn: sqlite3.Connection) -> int | None:
        """Central's durable acknowledgement (None: the gate archives unacknowledged)."""
        name = self.policy.acked_cursor
        if name is None:
            return None
        row = conn.execute("SELECT seq FROM projection_position WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def _archive_plan(self) -> tuple[list[tuple[Part, bool]], int]:
        """The segments due for archiving, oldest first, each with whether central
        acknowledged it; and how many more are due but wait for central."""
        conn = self._reader()
        marks = segments.read_marks(conn)
        acked = self._acked(conn)
        cutoff = self._clock.wall_ns() - int(self.policy.keep.total_seconds() * 1e9)
        ages = dict(conn.execute("SELECT first_seq, last_wall_ns FROM log_segment"))
        due: list[tuple[Part, bool]] = []
        waiting = 0
        for part in segments.kept_parts(segments.segments_dir(self.log.path), marks):
            if part.archived or part.last <= marks.archived_through:
                continue  # (a segment file whose archiving was logged: recovery removes it)
            if ages.get(part.first, 0) > cutoff:
                break
            if acked is not None and part.last > acked:
                waiting += 1
                continue
            if waiting:
                break  # archives stay in seq order
            due.append((part, acked is not None))
        return due, waiting

    async def _archive_due(self) -> list[str]:
        due, waiting = await self._in_thread(self._archive_plan)
        self.state.waiting_for_central = waiting
        if waiting:
            self._warn_waiting(waiting)
        done = []
        for part, acknowledged in due:
            archived = await self._in_thread(
                partial(segments.archive_segment, part, self.policy.compression_level)
            )

            def mark(conn: sqlite3.Connection, _seq: int, last: int = part.last) -> None:
                if segments.read_marks(conn).archived_through >= last:
                    raise LogError(f"events up to {last} are archived already")
                segments.write_marks(conn, archived_through=last)

            size = part.size()
            await self.log.append(
                LogSegmentArchived(
                    first_seq=part.first,
                    last_seq=part.last,
                    file=archived.name,
                    size=size,
                    archived_size=archived.size(),
                    acknowledged=acknowledged,
                ),
                effect=mark,
            )
            await self._in_thread(partial(_unlink, part.path))
            log.info("segment_archived", file=archived.name, size=size, archived=archived.size())
            done.append(f"archived {archived.name}")
        return done

    def _warn_waiting(self, waiting: int) -> None:
        """Once a day: segments pile up uncompressed because central has not acknowledged
        them (a disk must not fill silently)."""
        day = datetime.fromtimestamp(self._clock.wall_ns() / 1e9, self._zone).date().isoformat()
        if day != self._warned_day:
            self._warned_day = day
            log.warning(
                "retention_waiting_for_central",
                segments=waiting,
                consequence="kept uncompressed until central acknowledges them",
            )

    def _removal_plan(self) -> tuple[list[tuple[Part, bytes]], int]:
        conn = self._reader()
        marks = segments.read_marks(conn)
        archives = [
            p
            for p in segments.kept_parts(segments.segments_dir(self.log.path), marks)
            if p.archived
        ]
        total = sum(p.size() for p in archives)
        hashes = dict(conn.execute("SELECT last_seq, CAST(last_hash AS BLOB) FROM log_segment"))
        out = []
        left = total
        for part in archives:
            if left <= self.policy.archive_budget:
                break
            out.append((part, bytes(hashes[part.last])))
            left -= part.size()
        return out, total

    async def _remove_over_budget(self) -> list[str]:
        plan, total = await self._in_thread(self._removal_plan)
        done = []
        acked = await self._in_thread(lambda: self._acked(self._reader()))
        for part, last_hash in plan:
            size = part.size()

            def mark(
                conn: sqlite3.Connection, _seq: int, p: Part = part, h: bytes = last_hash
            ) -> None:
                if segments.read_marks(conn).removed_through >= p.last:
                    raise LogError(f"events up to {p.last} are removed already")
                segments.write_marks(conn, removed_through=p.last, removed_hash=h)

            # Logged before the file goes: evidence never vanishes without its event.
            await self.log.append(
                LogArchiveRemoved(
                    first_seq=part.first,
                    last_seq=part.last,
                    last_hash=last_hash.hex(),
                    file=part.name,
                    archived_size=size,
                    archives_size=total,
                    budget=self.policy.archive_budget,
                    acknowledged=acked is not None and part.last <= acked,
                ),
                effect=mark,
            )
            self.log.first_kept_seq = part.last + 1
            await self._in_thread(partial(_unlink, part.path))
            total -= size
            log.warning("archive_removed", file=part.name, first_kept=part.last + 1)
            done.append(f"removed {part.name}")
        return done


def _background() -> None:
    """Lower the retention thread's CPU priority (Linux: per thread), so that on a gate PC's
    two cores the lanes, the writer and the event loop win the CPU over compression."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
    segments.fsync_dir(path.parent)
