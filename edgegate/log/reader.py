"""Reading and verifying a gate's log file, for tools and the shell (read-only connection)."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from edgegate.core.codec import ns_to_datetime
from edgegate.core.events import Event, decode
from edgegate.log import queries
from edgegate.log.chain import GENESIS_HASH, ChainFault, ChainVerifier, Row
from edgegate.log.eventlog import LogError
from edgegate.log.queries import ROW_COLUMNS

T = TypeVar("T")

_REQUIRED_TRIGGERS = ("events_no_update", "events_no_delete")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored: envelope columns and the encoded payload."""

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
    gate_id: str
    events: int
    head_seq: int
    fault: ChainFault | None
    missing_triggers: tuple[str, ...]

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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._copy: tempfile.TemporaryDirectory[str] | None = None
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
        if self._copy is None and self._state[1] is not None and self._state[2]:
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

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the last event, or (0, genesis); a damaged hash is returned as is."""
        row = self._read(
            lambda: self._conn.execute(
                "SELECT seq, CAST(hash AS BLOB) FROM events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        )
        return (0, GENESIS_HASH) if row is None else (int(row[0]), bytes(row[1] or b""))

    def count(self) -> int:
        return self._read(
            lambda: int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        )

    def read(self, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events with ``seq > after`` in order, at most ``limit``."""
        rows = self._read(
            lambda: self._conn.execute(
                f"SELECT {ROW_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        )
        return [StoredEvent(*r) for r in rows]

    def last(self, type_name: str) -> StoredEvent | None:
        """The newest event of ``type_name``, or None (scans back from the head: there is no
        index on type, so a type never logged costs a scan of the whole log)."""
        row = self._read(
            lambda: self._conn.execute(
                f"SELECT {ROW_COLUMNS} FROM events WHERE type = ? ORDER BY seq DESC LIMIT 1",
                (type_name,),
            ).fetchone()
        )
        return None if row is None else StoredEvent(*row)

    def of_types(self, types: Sequence[str], *, from_seq: int = 1) -> Iterator[queries.TypedRow]:
        """The events of ``types`` from ``from_seq`` on, in seq order (``queries.of_types``);
        read while the reader is open."""
        return queries.of_types(self._conn, types, from_seq=from_seq)

    def read_with(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` run on the reader's read-only connection, for the other stores kept in the
        log's file (the allow-list), read by their own modules. sqlite3 errors pass as they
        are; nothing can be written through it."""
        return fn(self._conn)

    def tail(self, n: int) -> list[StoredEvent]:
        rows = self._read(
            lambda: self._conn.execute(
                f"SELECT {ROW_COLUMNS} FROM events ORDER BY seq DESC LIMIT ?",
                (n,),
            ).fetchall()
        )
        return [StoredEvent(*r) for r in reversed(rows)]

    def iter_rows(self, after: int = 0, batch: int = 10_000) -> Iterator[list[Row]]:
        """Raw rows in seq order, in lists of up to ``batch``. ``LogError`` names the last
        seq read if the file cannot be read further."""
        while True:
            try:
                cur = self._conn.execute(
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
                if not self._lenient and _undecodable(exc):
                    self._lenient = True
                    self._conn.text_factory = _lenient_text
                elif batch > 1:
                    batch = 1
                else:
                    raise LogError(f"{self.path} cannot be read after seq {after}: {exc}") from exc

    def missing_triggers(self) -> tuple[str, ...]:
        present = self._read(
            lambda: {
                r[0]
                for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            }
        )
        return tuple(t for t in _REQUIRED_TRIGGERS if t not in present)

    def verify(self) -> VerifyReport:
        """Check seq continuity and the hash chain from the first event to the head."""
        verifier = ChainVerifier(self.gate_id, 0, GENESIS_HASH)
        fault = None
        for rows in self.iter_rows():
            fault = verifier.feed(rows)
            if fault is not None:
                break
        return VerifyReport(
            gate_id=self.gate_id,
            events=verifier.count,
            head_seq=verifier.last_seq,
            fault=fault,
            missing_triggers=self.missing_triggers(),
        )
