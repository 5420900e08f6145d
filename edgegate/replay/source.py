"""Where a replay reads a gate's events: its log file, or central's copy of it — read-only.

``open_log(path)`` reads a gate's log file through ``LogReader`` (no byte written, no file
created beside it: a forensic copy on read-only media works). ``open_central(dsn, gate)``
reads one gate's events from central's store (SQLite or PostgreSQL) on a read-only
connection: never migrated, never written. Both are a ``Source`` yielding the same
``StoredEvent`` records in seq order; ``EventFilter`` narrows them (time, lane, type, plate).

The gate's time zone is the one its newest ``daemon.started`` recorded (v1 events, before it
was recorded, read as ``DEFAULT_GATE_TIMEZONE``); a command's ``--tz`` overrides it.

Every problem with the input (missing, not SQLite, a foreign database, a bad DSN, an unknown
gate) is a ``SourceError`` whose message names it.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edgegate.central.store import DsnError, redact, sqlite_path
from edgegate.core.codec import datetime_to_ns
from edgegate.core.events import DEFAULT_GATE_TIMEZONE, DaemonStarted, Event, registered_types
from edgegate.core.plates import confusable_variants, normalise
from edgegate.log import LogError, LogReader, StoredEvent
from edgegate.log.chain import GENESIS_HASH, Row

_ROW_COLUMNS = "seq, wall_ns, mono_ns, boot_id, type, lane, version, data, prev_hash, hash"
_BATCH = 10_000

T = TypeVar("T")

Progress = Callable[[int], None]
"""Called with the number of rows read so far, after each batch."""


class SourceError(Exception):
    """A log or store that cannot be read as asked; the message names what is wrong."""


# --- time zones and times ---------------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``SourceError`` if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SourceError(f"unknown time zone {name!r} (an IANA name like Asia/Shanghai)") from None


def parse_time(text: str, tz: ZoneInfo) -> datetime:
    """An instant from ISO 8601 text: with an offset as given; without, in the gate's zone
    ``tz``; a date alone is its midnight there. ``SourceError`` names what is wrong."""
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise SourceError(
            f"time {text!r} is not ISO 8601 (2026-11-28, 2026-11-28 08:30 or "
            "2026-11-28T08:30:00+08:00)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value


def _date_only(text: str) -> bool:
    try:
        datetime.strptime(text.strip(), "%Y-%m-%d")
    except ValueError:
        return False
    return True


def parse_range(
    start: str | None, end: str | None, tz: ZoneInfo
) -> tuple[datetime | None, datetime | None]:
    """``--from``/``--to`` as instants, ``[start, end)``; ``--to`` given as a date alone
    includes that whole day. ``SourceError`` if ``end`` is not after ``start``."""
    a = parse_time(start, tz) if start else None
    b = parse_time(end, tz) if end else None
    if b is not None and end is not None and _date_only(end):
        b = datetime.combine(b.date() + timedelta(days=1), time(), tz)
    if a is not None and b is not None and b <= a:
        raise SourceError(f"--to {end} is not after --from {start}")
    return a, b


# --- plates -----------------------------------------------------------------------------------


class PlateQuery:
    """A plate to look for: matches the same normalised plate (``"exact"``) or one confusable
    character away by the OCR rules of ``core.plates`` (``"fuzzy"``)."""

    def __init__(self, text: str) -> None:
        self.plate = normalise(text)
        if not self.plate:
            raise SourceError(f"--plate {text!r} is empty once normalised")
        self._near = {v for v, *_ in confusable_variants(self.plate)}

    def match(self, plate: str | None) -> str | None:
        """``"exact"``, ``"fuzzy"`` or None for a plate as recorded."""
        if not plate:
            return None
        p = normalise(plate)
        if p == self.plate:
            return "exact"
        return "fuzzy" if p in self._near else None


PLATE_FIELDS = ("plate", "plate_read", "matched_plate")
"""The fields of events that name a plate."""


def plates_of(event: Event) -> list[str]:
    out = []
    for name in PLATE_FIELDS:
        value = getattr(event, name, None)
        if isinstance(value, str) and value:
            out.append(value)
    return out


_PLATE_TYPES = frozenset(
    t
    for t, cls in registered_types().items()
    if any(f.name in PLATE_FIELDS for f in dataclasses.fields(cls))
)


# --- filters ----------------------------------------------------------------------------------


def check_types(patterns: Iterable[str]) -> frozenset[str]:
    """The event types named by ``--type`` values (comma-separated; ``vehicle.*`` or
    ``vehicle.`` names a family). ``SourceError`` names a value matching no type."""
    known = sorted(registered_types())
    out: set[str] = set()
    for value in patterns:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if part.endswith(("*", ".")):
                prefix = part.rstrip("*")
                found = [t for t in known if t.startswith(prefix)]
            else:
                found = [part] if part in known else []
            if not found:
                raise SourceError(f"--type {part!r} names no event type; known: {', '.join(known)}")
            out.update(found)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to yield: wall time in ``[start, end)``, lanes, types, a plate. Time,
    lane and type are checked on the stored columns; only the plate needs decoding (and only
    of event types that name one)."""

    start: datetime | None = None
    end: datetime | None = None
    lanes: frozenset[str] | None = None
    types: frozenset[str] | None = None
    plate: PlateQuery | None = None

    def _bounds(self) -> tuple[int | None, int | None]:
        return (
            None if self.start is None else datetime_to_ns(self.start),
            None if self.end is None else datetime_to_ns(self.end),
        )

    def row_filter(self) -> Callable[[Row], bool]:
        """A predicate on stored rows for the time, lane and type conditions."""
        lo, hi = self._bounds()
        lanes, types = self.lanes, self.types

        def keep(row: Row) -> bool:
            wall = row[1]
            if lo is not None and wall < lo:
                return False
            if hi is not None and wall >= hi:
                return False
            if lanes is not None and row[5] not in lanes:
                return False
            return types is None or row[4] in types

        return keep

    def admits(self, stored: StoredEvent) -> bool:
        """The plate condition (the others are the row filter's)."""
        if self.plate is None:
            return True
        if stored.type not in _PLATE_TYPES:
            return False
        try:
            event = stored.event()
        except Exception:
            return False
        return any(self.plate.match(p) for p in plates_of(event))


# --- sources ----------------------------------------------------------------------------------


class Source(ABC):
    """One gate's events, read-only, in seq order. ``gate_id``; ``description`` for messages."""

    gate_id: str
    description: str

    @abstractmethod
    def batches(self, after: int = 0, batch: int = _BATCH) -> Iterator[list[Row]]:
        """Stored rows with seq > ``after`` in seq order, in lists."""

    @abstractmethod
    def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the newest event, (0, genesis) if none."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def last_started(self) -> StoredEvent | None:
        """The newest ``daemon.started``."""

    @abstractmethod
    def close(self) -> None: ...

    def anchor(self) -> tuple[int, bytes]:
        """(seq, hash) the events chain from: (0, genesis), or for a gate's log whose oldest
        archives ``[log.retention]`` removed, the last removed event."""
        return 0, GENESIS_HASH

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recorded_timezone(self) -> str:
        """The zone the newest ``daemon.started`` recorded (default if none, or unreadable)."""
        started = self.last_started()
        if started is None:
            return DEFAULT_GATE_TIMEZONE
        try:
            event = started.event()
        except Exception:
            return DEFAULT_GATE_TIMEZONE
        return event.timezone if isinstance(event, DaemonStarted) else DEFAULT_GATE_TIMEZONE

    def timezone(self, override: str | None = None) -> ZoneInfo:
        """``override`` (``--tz``) if given, else the recorded zone."""
        return zone(override or self.recorded_timezone())

    def events(
        self, flt: EventFilter | None = None, *, progress: Progress | None = None
    ) -> Iterator[StoredEvent]:
        """The events ``flt`` admits, in seq order; ``progress`` gets the rows read."""
        flt = flt or EventFilter()
        read = 0
        if flt == EventFilter():
            # Everything (incidents, verify on a week's log): no per-row test to pay for.
            for rows in self.batches():
                yield from (StoredEvent(*row) for row in rows)
                read += len(rows)
                if progress is not None:
                    progress(read)
            return
        keep = flt.row_filter()
        for rows in self.batches():
            for row in rows:
                if keep(row):
                    stored = StoredEvent(*row)
                    if flt.admits(stored):
                        yield stored
            read += len(rows)
            if progress is not None:
                progress(read)


class LogSource(Source):
    """A gate's log file, through ``LogReader`` (read-only; immutable when no writer has it)."""

    def __init__(self, path: str | Path) -> None:
        try:
            self.reader = LogReader(path)
        except LogError as exc:
            raise SourceError(str(exc)) from None
        self.gate_id = self.reader.gate_id
        self.description = str(path)

    def batches(self, after: int = 0, batch: int = _BATCH) -> Iterator[list[Row]]:
        try:
            yield from self.reader.iter_rows(after, batch)
        except LogError as exc:
            raise SourceError(str(exc)) from None

    def head(self) -> tuple[int, bytes]:
        return self._guard(self.reader.head)

    def count(self) -> int:
        return self._guard(self.reader.count)

    def last_started(self) -> StoredEvent | None:
        return self._guard(lambda: self.reader.last(DaemonStarted.TYPE))

    def anchor(self) -> tuple[int, bytes]:
        return self._guard(self.reader.anchor)

    def _guard(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except LogError as exc:
            raise SourceError(str(exc)) from None

    def close(self) -> None:
        self.reader.close()


class _CentralDb(ABC):
    """A read-only connection to central's store: query with ``?`` placeholders."""

    @abstractmethod
    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def close(self) -> None: ...


class _SqliteDb(_CentralDb):
    """Read-only like ``LogReader``: immutable when no -wal, through -wal/-shm without writing
    the -shm when both exist, a private copy when a -wal is left without its -shm."""

    def __init__(self, path: str) -> None:
        self._copy: tempfile.TemporaryDirectory[str] | None = None
        p = Path(path)
        if not p.is_file():
            raise SourceError(f"central store {path}: no such file")
        wal, shm = Path(f"{p}-wal"), Path(f"{p}-shm")
        target = p.absolute()
        if wal.exists() and shm.exists():
            query = "mode=ro&readonly_shm=1"
        elif wal.exists() and wal.stat().st_size:
            self._copy = tempfile.TemporaryDirectory(prefix="edgegate-central-")
            target = Path(self._copy.name) / "store.db"
            shutil.copyfile(p, target)
            shutil.copyfile(wal, f"{target}-wal")
            query = "mode=ro"
        else:
            query = "mode=ro&immutable=1"
        try:
            self._conn = sqlite3.connect(f"{target.as_uri()}?{query}", uri=True)
        except sqlite3.Error as exc:
            self.close()
            raise SourceError(f"central store {path}: cannot open: {exc}") from None

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        if hasattr(self, "_conn"):
            self._conn.close()
        if self._copy is not None:
            self._copy.cleanup()
            self._copy = None


class _PostgresDb(_CentralDb):
    """A session whose every transaction is read-only (``default_transaction_read_only``)."""

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise SourceError(
                f"store DSN {redact(dsn)!r} needs PostgreSQL support, which is not installed:"
                " pip install 'edgegate[central]'"
            ) from None
        self._psycopg = psycopg
        try:
            self._conn = psycopg.connect(
                dsn,
                autocommit=True,
                connect_timeout=10,
                options="-c default_transaction_read_only=on",
            )
        except psycopg.Error as exc:
            raise SourceError(f"cannot connect to {redact(dsn)}: {exc}".strip()) from None

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        rows = self._conn.execute(sql.replace("?", "%s"), params).fetchall()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def close(self) -> None:
        self._conn.close()


class CentralSource(Source):
    """One gate's events in central's store, on a read-only connection."""

    def __init__(self, dsn: str, gate: str | None) -> None:
        self.description = f"{redact(dsn)} gate {gate}"
        self._db = _open_central_db(dsn)
        try:
            heads = {str(g): int(s) for g, s in self._q("SELECT gate, seq FROM gate_heads")}
            if gate is None:
                if len(heads) != 1:
                    raise SourceError(
                        f"central store {redact(dsn)} holds gates {', '.join(sorted(heads))}: "
                        "name one with --gate"
                    )
                gate = next(iter(heads))
            if gate not in heads:
                known = ", ".join(sorted(heads)) or "none"
                raise SourceError(
                    f"central store {redact(dsn)} holds no gate {gate!r} (gates: {known})"
                )
        except BaseException:
            self._db.close()
            raise
        self.gate_id = gate
        self.description = f"{redact(dsn)} gate {gate}"

    def _q(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.query(sql, params)
        except Exception as exc:
            raise SourceError(
                f"{self.description} cannot be read (not an edgegate central store?): {exc}"
            ) from None

    def batches(self, after: int = 0, batch: int = _BATCH) -> Iterator[list[Row]]:
        sql = (
            f"SELECT {_ROW_COLUMNS} FROM gate_events WHERE gate = ? AND seq > ?"
            " ORDER BY seq LIMIT ?"
        )
        while True:
            rows = self._q(sql, (self.gate_id, after, batch))
            if not rows:
                return
            yield [(*r[:7], bytes(r[7]), bytes(r[8]), bytes(r[9])) for r in rows]
            after = int(rows[-1][0])

    def head(self) -> tuple[int, bytes]:
        """Central's head for the gate: the highest contiguous seq it stored (and acked)."""
        rows = self._q("SELECT seq, hash FROM gate_heads WHERE gate = ?", (self.gate_id,))
        return (0, GENESIS_HASH) if not rows else (int(rows[0][0]), bytes(rows[0][1]))

    def count(self) -> int:
        rows = self._q("SELECT COUNT(*) FROM gate_events WHERE gate = ?", (self.gate_id,))
        return int(rows[0][0])

    def last_started(self) -> StoredEvent | None:
        rows = self._q(
            f"SELECT {_ROW_COLUMNS} FROM gate_events WHERE gate = ? AND type = ?"
            " ORDER BY seq DESC LIMIT 1",
            (self.gate_id, DaemonStarted.TYPE),
        )
        if not rows:
            return None
        r = rows[0]
        return StoredEvent.from_row((*r[:7], bytes(r[7]), bytes(r[8]), bytes(r[9])))

    def close(self) -> None:
        self._db.close()


def _open_central_db(dsn: str) -> _CentralDb:
    scheme = dsn.partition(":")[0].lower()
    try:
        if scheme == "sqlite":
            return _SqliteDb(sqlite_path(dsn))
        if scheme in ("postgresql", "postgres"):
            return _PostgresDb(dsn)
    except DsnError as exc:
        raise SourceError(str(exc)) from None
    raise SourceError(
        f"store DSN {redact(dsn)!r}: use sqlite:///PATH or "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    )


def central_gates(dsn: str) -> list[str]:
    """The gates central's store holds (read-only), sorted; ``SourceError`` names a problem."""
    db = _open_central_db(dsn)
    try:
        rows = db.query("SELECT gate FROM gate_heads ORDER BY gate")
    except Exception as exc:
        raise SourceError(
            f"central store {redact(dsn)} cannot be read (not an edgegate central store?): {exc}"
        ) from None
    finally:
        db.close()
    return [str(g) for (g,) in rows]


def open_log(path: str | Path) -> LogSource:
    return LogSource(path)


def open_central(dsn: str, gate: str | None = None) -> CentralSource:
    """Central's copy of ``gate`` (may be omitted when the store holds one gate only)."""
    return CentralSource(dsn, gate)
