"""Reading and verifying a gate's log, for tools and the shell (read-only connections).

One reader over the whole kept log: the active file and, with ``[log.retention]``, its sealed
segments and archives (:mod:`edgegate.log.segments`), in seq order as one log. Callers never
learn about segments; ``read_with`` alone reaches the active file only (its state tables).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from edgegate.core.codec import ns_to_datetime
from edgegate.core.events import Event, decode
from edgegate.log import queries, segments
from edgegate.log.chain import GENESIS_HASH, ChainFault, ChainVerifier, Row
from edgegate.log.eventlog import LogError, connect
from edgegate.log.queries import ROW_COLUMNS
from edgegate.log.segments import Marks, Part, SegmentError

T = TypeVar("T")
R = TypeVar("R")

_REQUIRED_TRIGGERS = ("events_no_update", "events_no_delete")


class StoredEvent(NamedTuple):
    """An event as stored: envelope columns and the encoded payload.

    A named tuple rather than a dataclass: scans over a whole log build one per row, and
    ``StoredEvent._make(row)`` is the cheapest way to give a row its names."""

    seq: int
    wall_ns: int
    mono_ns: int
    boot_id: str
    type: str
    lane: str | None
    version: int
    data: bytes
    prev_hash: bytes
    hash: bytes

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> StoredEvent:
        return cls(*row)

    @property
    def ts(self) -> datetime:
        return ns_to_datetime(self.wall_ns)

    def event(self) -> Event:
        """The typed event (old versions upcast). Raises ``EventDecodeError``."""
        return decode(self.type, self.version, self.data, self.lane)

    def row(self) -> Row:
        """A plain tuple, as the stores check rows by type."""
        return (
            self.seq,
            self.wall_ns,
            self.mono_ns,
            self.boot_id,
            self.type,
            self.lane,
            self.version,
            self.data,
            self.prev_hash,
            self.hash,
        )


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """``events`` verified from the anchor (``first_seq - 1``, its hash: the genesis, or
    where the last removed archive ended) to ``head_seq``."""

    gate_id: str
    events: int
    head_seq: int
    fault: ChainFault | None
    missing_triggers: tuple[str, ...]
    first_seq: int = 1

    @property
    def ok(self) -> bool:
        return self.fault is None and not self.missing_triggers


def _lenient_text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _undecodable(exc: sqlite3.Error) -> bool:
    """A TEXT column holding bytes that are not UTF-8 (sqlite3 refuses the whole row)."""
    return isinstance(exc, sqlite3.OperationalError) and "Could not decode to UTF-8" in str(exc)


_FileState = tuple[tuple[int, int, int], int | None, bool]
"""The log file's (inode, size, mtime), its -wal's size (None: no -wal), whether a -shm is."""


class LogReader:
    """Read-only access to a log file that never writes to it nor beside it.

    Safe alongside a running writer (WAL), and on a read-only copy (forensics): no byte of the
    file changes and no ``-wal``/``-shm`` file is created. A log whose ``-wal`` and ``-shm``
    exist (a writer has it open, or crashed) is read through them without writing to the
    ``-shm``; a log no writer has open is read as immutable; a ``-wal`` left by a crash without
    its ``-shm`` is read from a private copy of both. ``changed()`` tells when a writer came
    (or went) meanwhile, so that a result read as immutable may be stale.

    A TEXT column that is not UTF-8 (damage) is read with U+FFFD in place of the bad bytes,
    so the row's hash no longer matches and verify names its seq. Every SQLite error is
    raised as ``LogError`` naming the file.
    """

    def __init__(self, path: str | Path, *, live: bool = False) -> None:
        """``live``: for the daemon's own readers (uplink, pull API), beside its writer: the
        active file is read through an ordinary read-only connection."""
        self.path = Path(path)
        self._live = live
        self._copy: tempfile.TemporaryDirectory[str] | None = None
        self._dir = segments.segments_dir(self.path)
        self._parts_cache: list[Part] | None = None
        self._marks_cache = Marks()
        self._part_conns: dict[Path, sqlite3.Connection] = {}
        self._unpacked: tempfile.TemporaryDirectory[str] | None = None
        self._open()

    def _open(self) -> None:
        self._lenient = False
        try:
            if not self.path.exists():
                raise LogError(f"no log file at {self.path}")
            if not self.path.is_file():
                raise LogError(f"{self.path} is not a log file (a directory or a device)")
            self._state = self._file_state()
            self._conn = self._connect()
        except OSError as exc:
            self._drop_copy()
            raise LogError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc
        except sqlite3.Error as exc:
            self._drop_copy()
            raise LogError(f"{self.path} is damaged or not an edgegate log: {exc}") from exc
        try:
            row = self._run(
                lambda: self._conn.execute(
                    "SELECT value FROM log_meta WHERE key = 'gate_id'"
                ).fetchone()
            )
            # A file with another schema is refused here, not half-way through a command.
            self._run(lambda: self._conn.execute(f"SELECT {ROW_COLUMNS} FROM events LIMIT 0"))
        except sqlite3.Error as exc:
            self.close()
            raise LogError(f"{self.path} is damaged or not an edgegate log: {exc}") from exc
        if row is None:
            self.close()
            raise LogError(f"{self.path} has no gate id: not an edgegate log")
        self.gate_id = str(row[0])

    def _file_state(self) -> _FileState:
        st = self.path.stat()
        wal = Path(f"{self.path}-wal")
        try:
            wal_size: int | None = wal.stat().st_size
        except FileNotFoundError:
            wal_size = None
        return (st.st_ino, st.st_size, st.st_mtime_ns), wal_size, Path(f"{self.path}-shm").exists()

    def _connect(self) -> sqlite3.Connection:
        if self._live:
            return connect(self.path, readonly=True)
        _, wal_size, shm = self._state
        path = self.path.absolute()
        if wal_size is not None and shm:
            # readonly_shm: the -shm is opened read-only (a stale one from a crash is read
            # around, not repaired); plain mode=ro would write to it.
            query = "mode=ro&readonly_shm=1"
        elif wal_size:
            # Committed events may be in the -wal, and reading them needs a -shm beside it.
            self._copy = tempfile.TemporaryDirectory(prefix="edgegate-log-")
            copy = Path(self._copy.name) / "log.db"
            shutil.copyfile(self.path, copy)
            shutil.copyfile(f"{self.path}-wal", f"{copy}-wal")
            path, query = copy, "mode=ro"
        else:
            # Nothing beyond the file itself; mode=ro alone would create a -wal and a -shm.
            query = "mode=ro&immutable=1"
        conn = sqlite3.connect(
            f"{path.as_uri()}?{query}", uri=True, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    def _drop_copy(self) -> None:
        if self._copy is not None:
            self._copy.cleanup()
            self._copy = None

    def _run(self, fn: Callable[[], T]) -> T:
        """``fn()``, again with lenient text decoding if a TEXT column was not UTF-8."""
        try:
            return fn()
        except sqlite3.Error as exc:
            if self._lenient or not _undecodable(exc):
                raise
        self._lenient = True
        self._conn.text_factory = _lenient_text
        return fn()

    def _read(self, fn: Callable[[], T]) -> T:
        try:
            return self._run(fn)
        except sqlite3.Error as exc:
            raise LogError(f"{self.path} cannot be read: {exc}") from exc

    def changed(self) -> bool:
        """Whether the file (or its -wal) changed since it was opened, when it was opened
        as immutable or copied: a writer came or went, and what was read may be stale."""
        if self._live or (self._copy is None and self._state[1] is not None and self._state[2]):
            return False  # read through the -wal and -shm: SQLite sees every commit
        try:
            return self._file_state() != self._state
        except OSError:
            return True

    def reopen(self) -> None:
        """Open the file afresh (after ``changed()``)."""
        self.close()
        self._open()

    def close(self) -> None:
        self._conn.close()
        self._drop_copy()
        self._close_parts()

    def _close_parts(self) -> None:
        for conn in self._part_conns.values():
            conn.close()
        self._part_conns.clear()
        self._parts_cache = None
        if self._unpacked is not None:
            self._unpacked.cleanup()
            self._unpacked = None

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the parts: sealed segments and archives --------------------------------------------

    def marks(self) -> Marks:
        """How far the retention went (sealed, archived, removed), read afresh."""
        try:
            self._marks_cache = self._read(lambda: segments.read_marks(self._conn))
        except LogError:
            self._marks_cache = Marks()  # a log from before retention, or damaged meta
        return self._marks_cache

    def _parts(self, *, refresh: bool = False) -> list[Part]:
        if refresh or self._parts_cache is None:
            self._parts_cache = parts = segments.kept_parts(self._dir, self.marks())
            # A file archived or removed since: its connection would keep it on the disk.
            paths = {p.path for p in parts}
            for path in [p for p in self._part_conns if p not in paths]:
                self._part_conns.pop(path).close()
        return self._parts_cache

    def _covered_now(self, seq: int, done: int) -> bool:
        """Whether a part not read yet (ending after ``done``) holds ``seq`` once the parts
        are listed afresh: sealed, and deleted from the active file, meanwhile."""
        return any(p.first <= seq <= p.last and p.last > done for p in self._parts(refresh=True))

    def _part_conn(self, part: Part) -> sqlite3.Connection:
        conn = self._part_conns.get(part.path)
        if conn is not None:
            return conn
        try:
            if part.archived:
                # One archive unpacked at a time: a week of them would fill the disk twice.
                for path in [p for p in self._part_conns if p.name.endswith(".zst")]:
                    self._part_conns.pop(path).close()
                if self._unpacked is not None:
                    self._unpacked.cleanup()
                self._unpacked = tempfile.TemporaryDirectory(prefix="edgegate-archive-")
                conn = segments.open_readonly(segments.decompress(part, Path(self._unpacked.name)))
            else:
                if not part.path.exists():
                    raise FileNotFoundError(part.path)
                conn = segments.open_readonly(part.path)
            conn.execute("SELECT 1 FROM events LIMIT 0")
        except (OSError, sqlite3.Error, SegmentError) as exc:
            raise LogError(f"{part.path} cannot be read: {exc}") from exc
        self._part_conns[part.path] = conn
        return conn

    def _open_part(self, part: Part) -> tuple[Part, sqlite3.Connection]:
        """The part (or what replaced it: a segment archived meanwhile) and a connection."""
        try:
            return part, self._part_conn(part)
        except LogError:
            for again in self._parts(refresh=True):
                if again.first == part.first and again.path != part.path:
                    return again, self._part_conn(again)
            raise

    def first_seq(self) -> int:
        """The first seq kept on disk: 1, or one past the last removed archive."""
        return self.marks().first_kept

    def anchor(self) -> tuple[int, bytes]:
        """(seq, hash) the kept log chains from: (0, genesis), or the last removed event."""
        marks = self.marks()
        return marks.removed_through, marks.removed_hash

    # --- reading ------------------------------------------------------------------------------

    def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the last event, or (0, genesis); a damaged hash is returned as is."""
        row = self._read(
            lambda: self._conn.execute(
                "SELECT seq, CAST(hash AS BLOB) FROM events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        )
        if row is None:
            parts = self._parts(refresh=True)
            if not parts:
                return self.anchor() if self.marks().removed_through else (0, GENESIS_HASH)
            _, conn = self._open_part(parts[-1])
            row = conn.execute(
                "SELECT seq, CAST(hash AS BLOB) FROM events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (0, GENESIS_HASH) if row is None else (int(row[0]), bytes(row[1] or b""))

    def count(self) -> int:
        """Events kept (a part counts as its name's range; verify checks every one)."""
        sealed = self.marks().sealed_through
        active = self._read(
            lambda: int(
                self._conn.execute(
                    "SELECT COUNT(*) FROM events WHERE seq > ?", (sealed,)
                ).fetchone()[0]
            )
        )
        return active + sum(p.last - p.first + 1 for p in self._parts(refresh=True))

    def read(self, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events with ``seq > after`` in order, at most ``limit`` (fewer where a segment
        ends: ask again from the last one)."""
        batches = self.iter_rows(after, limit)
        try:
            rows = next(batches, [])
        finally:
            batches.close()
        return [StoredEvent(*r) for r in rows]

    def rows(self, after: int, limit: int) -> list[Row]:
        """Up to ``limit`` contiguous raw rows from ``after + 1`` (fewer where a segment ends;
        none past the head). ``LogGoneError`` if ``after + 1`` was removed by the retention,
        ``LogGapError`` if no file on the disk holds it (a segment or archive went missing):
        never rows from beyond a gap, which a reader would take for the next ones."""
        if after + 1 < self.first_seq():
            raise LogGoneError(self.first_seq())
        batches = self.iter_rows(after, limit)
        try:
            rows = next(batches, [])
        finally:
            batches.close()
        if rows and rows[0][0] != after + 1:
            raise LogGapError(after + 1, rows[0][0] - 1)
        return rows

    def last(self, type_name: str) -> StoredEvent | None:
        """The newest event of ``type_name``, or None (scans back from the head: there is no
        index on type, so a type never logged costs a scan of the whole kept log, archives
        included)."""
        sql = f"SELECT {ROW_COLUMNS} FROM events WHERE type = ? ORDER BY seq DESC LIMIT 1"
        row = self._read(lambda: self._conn.execute(sql, (type_name,)).fetchone())
        if row is None:
            for part in reversed(self._parts(refresh=True)):
                _, conn = self._open_part(part)
                row = conn.execute(sql, (type_name,)).fetchone()
                if row is not None:
                    break
        return None if row is None else StoredEvent(*row)

    def of_types(self, types: Sequence[str], *, from_seq: int = 1) -> Iterator[queries.TypedRow]:
        """The events of ``types`` from ``from_seq`` on, in seq order (``queries.of_types``)
        across the kept log; read while the reader is open."""
        return self._across(queries.of_types, types, from_seq)

    def clocked_of_types(
        self, types: Sequence[str], *, from_seq: int = 1
    ) -> Iterator[queries.ClockedRow]:
        """``queries.clocked_of_types`` across the kept log, like :meth:`of_types`."""
        return self._across(queries.clocked_of_types, types, from_seq)

    def _across(
        self,
        query: Callable[..., Iterator[R]],
        types: Sequence[str],
        from_seq: int,
    ) -> Iterator[R]:
        done = from_seq - 1
        for part in self._parts(refresh=True):
            if part.last <= done:
                continue
            _, conn = self._open_part(part)
            yield from query(conn, types, from_seq=done + 1)
            done = part.last
        yield from query(self._conn, types, from_seq=done + 1)

    def first_seq_since(self, wall_ns: int) -> int:
        """``queries.first_seq_since`` across the kept log: the first seq at or after
        ``wall_ns`` (one past the head if none), searching back from the active file."""
        found = None
        for part in [None, *reversed(self._parts(refresh=True))]:
            conn = self._conn if part is None else self._open_part(part)[1]
            first = conn.execute("SELECT MIN(seq) FROM events").fetchone()[0]
            if first is None:
                continue
            seq = queries.first_seq_since(conn, wall_ns)
            if seq > first:
                return seq
            found = seq  # the whole file is at or after it: look in the one before
        return found if found is not None else self.head()[0] + 1

    def last_seq_before(self, wall_ns: int) -> int:
        """``queries.last_seq_before`` across the kept log (0 if none)."""
        seq = queries.last_seq_before(self._conn, wall_ns)
        if seq:
            return seq
        for part in reversed(self._parts(refresh=True)):
            _, conn = self._open_part(part)
            seq = queries.last_seq_before(conn, wall_ns)
            if seq:
                return seq
        return 0

    def read_with(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` run on the reader's read-only connection to the active file, for the other
        stores kept in it (the allow-list), read by their own modules. sqlite3 errors pass as
        they are; nothing can be written through it. Events there are only the newest."""
        return fn(self._conn)

    def tail(self, n: int) -> list[StoredEvent]:
        rows = self._read(
            lambda: self._conn.execute(
                f"SELECT {ROW_COLUMNS} FROM events WHERE seq > ? ORDER BY seq DESC LIMIT ?",
                (self.marks().sealed_through, n),
            ).fetchall()
        )
        for part in reversed(self._parts(refresh=True)):
            if len(rows) >= n:
                break
            _, conn = self._open_part(part)
            rows += conn.execute(
                f"SELECT {ROW_COLUMNS} FROM events ORDER BY seq DESC LIMIT ?", (n - len(rows),)
            ).fetchall()
        return [StoredEvent(*r) for r in reversed(rows)]

    def iter_rows(self, after: int = 0, batch: int = 10_000) -> Generator[list[Row]]:
        """Raw rows in seq order across the kept log, in lists of up to ``batch`` (a list
        never spans two files). ``LogError`` names the file and the last seq read if it
        cannot be read further."""
        done = after  # every seq up to here was looked for in its file
        while True:
            part = next((p for p in self._parts() if p.last > done), None)
            if part is None:
                for rows in self._iter_file(self._conn, self.path, after, batch):
                    if rows[0][0] > after + 1 and self._covered_now(after + 1, done):
                        break  # sealed and deleted from the active file since listed
                    yield rows
                    after = rows[-1][0]
                else:
                    return
                done = after
                continue
            part, conn = self._open_part(part)
            for rows in self._iter_file(conn, part.path, after, batch):
                yield rows
                after = rows[-1][0]
            done = part.last

    def _iter_file(
        self, conn: sqlite3.Connection, path: Path, after: int, batch: int
    ) -> Iterator[list[Row]]:
        while True:
            try:
                cur = conn.execute(
                    f"SELECT {ROW_COLUMNS} FROM events WHERE seq > ? ORDER BY seq",
                    (after,),
                )
                while True:
                    rows = cur.fetchmany(batch)
                    if not rows:
                        return
                    yield rows
                    after = rows[-1][0]
            except sqlite3.Error as exc:
                # Read again from the last row handed out: decoding leniently, or row by row
                # to hand out every row before the damage.
                if conn.text_factory is not _lenient_text and _undecodable(exc):
                    conn.text_factory = _lenient_text
                    if conn is self._conn:
                        self._lenient = True
                elif batch > 1:
                    batch = 1
                else:
                    raise LogError(f"{path} cannot be read after seq {after}: {exc}") from exc

    def missing_triggers(self) -> tuple[str, ...]:
        present = self._read(
            lambda: {
                r[0]
                for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            }
        )
        return tuple(t for t in _REQUIRED_TRIGGERS if t not in present)

    def verify(self) -> VerifyReport:
        """Check seq continuity and the hash chain from the anchor (the genesis, or the last
        removed archive's end) across segments, archives and the active file to the head."""
        anchor_seq, anchor_hash = self.anchor()
        verifier = ChainVerifier(self.gate_id, anchor_seq, anchor_hash)
        fault = None
        for rows in self.iter_rows(anchor_seq):
            fault = verifier.feed(rows)
            if fault is not None:
                break
        return VerifyReport(
            gate_id=self.gate_id,
            events=verifier.count,
            head_seq=verifier.last_seq,
            fault=fault,
            missing_triggers=self.missing_triggers(),
            first_seq=anchor_seq + 1,
        )


class LogGapError(LogError):
    """Events ``first..last`` are in no file on the gate's disk, though they should be kept:
    rows deleted, or a segment or archive file deleted or moved, outside edgegate."""

    def __init__(self, first: int, last: int) -> None:
        super().__init__(
            f"events {first}..{last} are missing from this gate's log: removed outside "
            "edgegate (rows, or a segment or archive file); `edgegate log verify` shows the gap"
        )
        self.first = first
        self.last = last


class LogGoneError(LogError):
    """Events asked for were removed from the gate's disk (``[log.retention]``)."""

    def __init__(self, first_seq: int) -> None:
        super().__init__(f"events before seq {first_seq} were removed from this gate's disk")
        self.first_seq = first_seq
