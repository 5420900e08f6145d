"""Reading and verifying a gate's log file, for tools and the shell (read-only connection)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edgegate.core.codec import ns_to_datetime
from edgegate.core.events import Event, decode
from edgegate.log.chain import GENESIS_HASH, ChainFault, ChainVerifier, Row
from edgegate.log.eventlog import LogError, connect, read_head

ROW_COLUMNS = (
    "seq, wall_ns, mono_ns, boot_id, type, lane, version,"
    " CAST(data AS BLOB), CAST(prev_hash AS BLOB), CAST(hash AS BLOB)"
)
"""The columns of a stored row in ``Row`` order. Blobs are cast: a payload edited with ``||``
is stored as text, which sqlite3 would fail to decode as UTF-8; cast, it reaches the hash check
as the bytes it now holds, and verify (or central) names its seq."""
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


class LogReader:
    """Read-only access to a log file; safe alongside a running writer (WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise LogError(f"no log file at {self.path}")
        self._conn = connect(self.path, readonly=True)
        try:
            row = self._conn.execute("SELECT value FROM log_meta WHERE key = 'gate_id'").fetchone()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise LogError(f"{self.path} is not an edgegate log: {exc}") from exc
        if row is None:
            self._conn.close()
            raise LogError(f"{self.path} has no gate id: not an edgegate log")
        self.gate_id = str(row[0])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def head(self) -> tuple[int, bytes]:
        return read_head(self._conn)

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def read(self, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events with ``seq > after`` in order, at most ``limit``."""
        rows = self._conn.execute(
            f"SELECT {ROW_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [StoredEvent(*r) for r in rows]

    def last(self, type_name: str) -> StoredEvent | None:
        """The newest event of ``type_name``, or None (scans back from the head: there is no
        index on type, so a type never logged costs a scan of the whole log)."""
        row = self._conn.execute(
            f"SELECT {ROW_COLUMNS} FROM events WHERE type = ? ORDER BY seq DESC LIMIT 1",
            (type_name,),
        ).fetchone()
        return None if row is None else StoredEvent(*row)

    def tail(self, n: int) -> list[StoredEvent]:
        rows = self._conn.execute(
            f"SELECT {ROW_COLUMNS} FROM events ORDER BY seq DESC LIMIT ?",
            (n,),
        ).fetchall()
        return [StoredEvent(*r) for r in reversed(rows)]

    def iter_rows(self, after: int = 0, batch: int = 10_000) -> Iterator[list[Row]]:
        """Raw rows in seq order, in lists of up to ``batch``."""
        cur = self._conn.execute(
            f"SELECT {ROW_COLUMNS} FROM events WHERE seq > ? ORDER BY seq",
            (after,),
        )
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            yield rows

    def missing_triggers(self) -> tuple[str, ...]:
        present = {
            r[0]
            for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
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
