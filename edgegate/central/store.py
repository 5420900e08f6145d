"""Central's copy of every gate's event log, in SQLite or PostgreSQL.

``open_store("sqlite:///relative/path.db")`` (``sqlite:////absolute/path.db``) or
``open_store("postgresql://user:pass@host:port/db")`` returns a ``CentralStore``; both
backends share all logic here and differ only in SQL dialect, locking and bulk insert.

Contract of ``store_batch`` / ``store_batches`` (what the sink builds on):

- Each batch of a gate's rows is checked against the gate's head (the highest contiguous
  seq stored and its hash), in one transaction that is committed before the call returns:
  the caller may ack ``acked_seq`` as soon as it has the result.
- Rows at or below the head are duplicates (at-least-once delivery); each is compared with
  the stored hash, and a difference (a fork: the gate's history is not ours) dead-letters
  the batch and stores nothing from it.
- A first new seq above head + 1 is a gap: nothing is stored, ``resend_from`` = head + 1.
- New rows are proven with ``ChainVerifier`` (prev_hash links from the head, every SHA-256
  recomputed). The sound prefix is stored; from the first faulty row on, the rows go to
  ``dead_letters`` with a reason naming the seq, and ``resend_from`` asks for them again.
- Replaying any batch changes nothing. Malformed input is dead-lettered, never raised, so a
  bad payload cannot crash-loop the sink; ``StoreError`` means the database itself failed
  (nothing of that call was committed; retry later).
- Dead letters are bounded (``DeadLetterLimits``): a dead letter keeps the payload's size,
  its SHA-256 and only a prefix of it; each gate keeps its newest ``per_gate`` dead letters
  (those of no known gate count as one gate) and the oldest beyond that are deleted and
  tallied in ``dead_letter_drops``. A gate with valid credentials sending junk costs central
  at most ``per_gate`` x (``payload_prefix`` + reason) bytes.
- Rows are checked field by field, except ``decode_batch``'s ``DecodedEvents`` (pass
  ``batch.events`` as they are): decoding checked them already, so only what it lets through
  (NUL in text) is looked for. Every hash is recomputed either way.

Threads and asyncio: the store is synchronous and thread-safe (one connection, one lock:
calls are serialised). An asyncio sink must not call it on the event loop (a commit waits
for fsync); ``AsyncStore`` runs every call on one dedicated thread. Several sink processes
may share one PostgreSQL database: a gate's head row is locked (``SELECT … FOR UPDATE``) for
the transaction that advances it, so two sinks never advance the same gate concurrently.
SQLite serialises writers by itself (``BEGIN IMMEDIATE``); it runs in WAL mode with
``synchronous=FULL`` because an ack promises the events survive a power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import operator
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import msgpack
import psycopg
import psycopg.conninfo
import psycopg.errors

from edgegate.core.codec import datetime_to_ns
from edgegate.core.events import EventDecodeError, RevokedCredentialAdmission
from edgegate.core.events import decode as decode_event
from edgegate.log.chain import GENESIS_HASH, ChainFault, ChainVerifier, Row
from edgegate.log.schema import split_statements
from edgegate.sync.protocol import DecodedEvents

T = TypeVar("T")

RowLike = Sequence[Any]
"""A row as received: ``Row`` fields in a list or tuple (msgpack gives lists)."""

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_PAGE = 10_000  # rows per read when iterating a gate's events
_IN_CHUNK = 500  # parameters per ``IN (…)`` list
_GATE_MAX = 256  # bytes of UTF-8
_PG_RETRIES = 5  # deadlock / serialisation failures retried before giving up


_REVIEW_TYPE = RevokedCredentialAdmission.TYPE

DEAD_PAYLOAD_PREFIX = 4096
"""Bytes of a dead payload kept by default (and by migration 2 of older rows)."""
_DEAD_TEXT_MAX = 2000  # characters of a dead letter's source and reason
_NO_GATE = ""  # dead_letter_drops key of dead letters without a gate (no gate id is empty)


@dataclass(frozen=True, slots=True)
class DeadLetterLimits:
    """What dead letters may cost: ``payload_prefix`` bytes of each payload are kept (with
    its size and SHA-256), and the newest ``per_gate`` dead letters of each gate."""

    payload_prefix: int = DEAD_PAYLOAD_PREFIX
    per_gate: int = 1000

    def __post_init__(self) -> None:
        if self.payload_prefix < 0 or self.per_gate < 1:
            raise ValueError("dead letter limits: payload_prefix >= 0, per_gate >= 1")


class StoreError(RuntimeError):
    """The central database failed; nothing of the failed call was committed."""


class DsnError(StoreError, ValueError):
    """The store DSN cannot be used; the message names the problem."""


class SchemaError(StoreError):
    """The database's schema was written by newer software."""


class StoreClosedError(StoreError):
    """The store is closed."""


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Outcome of one batch; every field is as committed.

    ``acked_seq``: the gate's head after the batch (ack it). ``resend_from``: ask the gate to
    resend from this seq (gap, or rows refused), else None. ``stored``: new rows stored;
    ``duplicates``: rows already held. ``dead_lettered``: rows refused into dead_letters, with
    ``fault`` saying why (also None/0 for a gap, which is not a fault of the payload).
    """

    acked_seq: int
    resend_from: int | None
    stored: int
    duplicates: int
    dead_lettered: int = 0
    fault: str | None = None


class Batch(NamedTuple):
    """One gate's rows as received, and where they came from (e.g. the MQTT topic or URL)."""

    gate: str
    rows: Sequence[RowLike]
    source: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    received_at_ns: int
    source: str
    gate: str | None
    payload: bytes
    """The payload's first ``DeadLetterLimits.payload_prefix`` bytes."""
    reason: str
    payload_size: int
    """The whole payload's size in bytes."""
    payload_sha256: bytes
    """The whole payload's SHA-256."""

    @property
    def truncated(self) -> bool:
        return self.payload_size > len(self.payload)


@dataclass(frozen=True, slots=True)
class DeadLetterDrops:
    """Dead letters of a gate (None: of no known gate) deleted to keep within the cap."""

    gate: str | None
    letters: int
    payload_bytes: int
    """Their payloads' sizes, summed (as received, not as kept)."""
    last_dropped_at_ns: int


@dataclass(frozen=True, slots=True)
class AdmissionReview:
    """An entry admitted offline by a credential central had revoked by then."""

    gate: str
    seq: int
    plate: str
    credential_kind: str
    credential_id: str
    revoked_at_ns: int
    decided_at_ns: int
    noted_at_ns: int


# --- schema ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    """Common SQL with ``{BIGINT}``, ``{BLOB}``, ``{ID}`` placeholders."""
    sqlite_extra: str = ""
    postgres_extra: str = ""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "gate events, heads, dead letters, admission reviews",
        """
        CREATE TABLE gate_events (
            gate TEXT NOT NULL,
            seq {BIGINT} NOT NULL,
            wall_ns {BIGINT} NOT NULL,
            mono_ns {BIGINT} NOT NULL,
            boot_id TEXT NOT NULL,
            type TEXT NOT NULL,
            lane TEXT,
            version {BIGINT} NOT NULL,
            data {BLOB} NOT NULL,
            prev_hash {BLOB} NOT NULL,
            hash {BLOB} NOT NULL,
            received_at_ns {BIGINT} NOT NULL,
            PRIMARY KEY (gate, seq)
        );
        CREATE TABLE gate_heads (
            gate TEXT PRIMARY KEY,
            seq {BIGINT} NOT NULL,
            hash {BLOB} NOT NULL,
            updated_at_ns {BIGINT} NOT NULL
        );
        CREATE TABLE dead_letters (
            id {ID},
            received_at_ns {BIGINT} NOT NULL,
            source TEXT NOT NULL,
            gate TEXT,
            payload {BLOB} NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX dead_letters_gate ON dead_letters (gate, id);
        CREATE TABLE admission_reviews (
            gate TEXT NOT NULL,
            seq {BIGINT} NOT NULL,
            plate TEXT NOT NULL,
            credential_kind TEXT NOT NULL,
            credential_id TEXT NOT NULL,
            revoked_at_ns {BIGINT} NOT NULL,
            decided_at_ns {BIGINT} NOT NULL,
            noted_at_ns {BIGINT} NOT NULL,
            PRIMARY KEY (gate, seq)
        );
        """,
        sqlite_extra="""
        CREATE TRIGGER gate_events_no_update BEFORE UPDATE ON gate_events
        BEGIN SELECT RAISE(ABORT, 'gate_events are append-only: UPDATE refused'); END;
        CREATE TRIGGER gate_events_no_delete BEFORE DELETE ON gate_events
        BEGIN SELECT RAISE(ABORT, 'gate_events are append-only: DELETE refused'); END;
        """,
        postgres_extra="""
        CREATE FUNCTION edgegate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'gate_events are append-only: % refused', TG_OP;
        END $$;
        CREATE TRIGGER gate_events_append_only BEFORE UPDATE OR DELETE ON gate_events
            FOR EACH ROW EXECUTE FUNCTION edgegate_append_only();
        """,
    ),
    Migration(
        2,
        "bounded dead letters: payload size, SHA-256 and prefix; drops per gate",
        """
        ALTER TABLE dead_letters ADD COLUMN payload_size {BIGINT} NOT NULL DEFAULT 0;
        ALTER TABLE dead_letters ADD COLUMN payload_sha256 {BLOB};
        CREATE TABLE dead_letter_drops (
            gate TEXT PRIMARY KEY,
            letters {BIGINT} NOT NULL,
            payload_bytes {BIGINT} NOT NULL,
            last_dropped_at_ns {BIGINT} NOT NULL
        );
        """,
        # Rows written before: hashed and measured whole, then cut to the prefix like new ones.
        sqlite_extra="UPDATE dead_letters SET payload_size = length(payload),"
        " payload_sha256 = edgegate_sha256(payload),"
        f" payload = substr(payload, 1, {DEAD_PAYLOAD_PREFIX});",
        postgres_extra="UPDATE dead_letters SET payload_size = length(payload),"
        " payload_sha256 = sha256(payload),"
        f" payload = substr(payload, 1, {DEAD_PAYLOAD_PREFIX});",
    ),
)

LATEST = MIGRATIONS[-1].version

_SQLITE_TYPES = {
    "BIGINT": "INTEGER",
    "BLOB": "BLOB",
    "ID": "INTEGER PRIMARY KEY AUTOINCREMENT",
}
# gate_events is a rowid table with its (gate, seq) key as an index, not WITHOUT ROWID:
# events arrive in key order, so each insert appends to the rightmost leaf of both B-trees,
# which SQLite does cheaply for a rowid table ("balance_quick") but not for a WITHOUT ROWID
# one (~8% fewer instructions per stored event). Stores created by earlier versions keep
# their WITHOUT ROWID table; the two behave identically.
_POSTGRES_TYPES = {
    "BIGINT": "BIGINT",
    "BLOB": "BYTEA",
    "ID": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}
_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ns BIGINT NOT NULL)"
)

# --- SQL shared by both backends (``?`` placeholders; PostgreSQL gets ``%s``) -------------

_EVENT_COLUMNS = (
    "gate, seq, wall_ns, mono_ns, boot_id, type, lane, version, data, prev_hash, hash,"
    " received_at_ns"
)
_ROW_COLUMNS = "seq, wall_ns, mono_ns, boot_id, type, lane, version, data, prev_hash, hash"
_SELECT_EVENTS = (
    f"SELECT {_ROW_COLUMNS} FROM gate_events WHERE gate = ? AND seq > ? ORDER BY seq LIMIT ?"
)
_ENSURE_HEAD = (
    "INSERT INTO gate_heads (gate, seq, hash, updated_at_ns) VALUES (?, 0, ?, ?)"
    " ON CONFLICT (gate) DO NOTHING"
)
_UPDATE_HEAD = "UPDATE gate_heads SET seq = ?, hash = ?, updated_at_ns = ? WHERE gate = ?"
_INSERT_DEAD = (
    "INSERT INTO dead_letters"
    " (received_at_ns, source, gate, payload, payload_size, payload_sha256, reason)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
# Keep a gate's newest N dead letters (N: the OFFSET): delete from the (N+1)-th newest down.
_TRIM_DEAD = (
    "DELETE FROM dead_letters WHERE gate = ? AND id <= ("
    "SELECT id FROM dead_letters WHERE gate = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
    " RETURNING payload_size"
)
_TRIM_DEAD_NO_GATE = (
    "DELETE FROM dead_letters WHERE gate IS NULL AND id <= ("
    "SELECT id FROM dead_letters WHERE gate IS NULL ORDER BY id DESC LIMIT 1 OFFSET ?)"
    " RETURNING payload_size"
)
_COUNT_DROPS = (
    "INSERT INTO dead_letter_drops (gate, letters, payload_bytes, last_dropped_at_ns)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (gate) DO UPDATE SET"
    " letters = dead_letter_drops.letters + excluded.letters,"
    " payload_bytes = dead_letter_drops.payload_bytes + excluded.payload_bytes,"
    " last_dropped_at_ns = excluded.last_dropped_at_ns"
)
_DEAD_COLUMNS = "id, received_at_ns, source, gate, payload, reason, payload_size, payload_sha256"


# --- input checks --------------------------------------------------------------------------


def _text_problem(what: str, value: object, *, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if type(value) is not str:
        return f"{what} is {type(value).__name__}, not str"
    if "\x00" in value:
        return f"{what} contains a NUL character"
    try:
        value.encode()
    except UnicodeEncodeError:
        return f"{what} is not valid UTF-8 text"
    return None


def _gate_problem(gate: object) -> str | None:
    problem = _text_problem("gate", gate)
    if problem is None and not 0 < len(cast(str, gate).encode()) <= _GATE_MAX:
        # Bounded because it is part of the primary key (PostgreSQL caps index entries).
        problem = f"gate id is empty or longer than {_GATE_MAX} bytes"
    return problem


def _row_problem(row: object) -> str | None:
    """Why ``row`` cannot be a stored event (slow path: only for rows the fast check refused)."""
    if type(row) not in (list, tuple):
        return f"a row is {type(row).__name__}, not a list"
    fields = cast(Sequence[object], row)
    if len(fields) != 10:
        return f"a row has {len(fields)} fields, not 10"
    seq, wall, mono, boot, type_name, lane, version, data, prev, digest = fields
    for name, value, low in (
        ("seq", seq, 1),
        ("wall_ns", wall, _I64_MIN),
        ("mono_ns", mono, _I64_MIN),
        ("version", version, 0),
    ):
        if type(value) is not int:
            return f"{name} is {type(value).__name__}, not int"
        if not low <= value <= _I64_MAX:
            return f"{name} {value} is out of range"
    for name, value, nullable in (
        ("boot_id", boot, False),
        ("type", type_name, False),
        ("lane", lane, True),
    ):
        problem = _text_problem(name, value, nullable=nullable)
        if problem:
            return problem
    if type(data) is not bytes:
        return f"data is {type(data).__name__}, not bytes"
    for name, value in (("prev_hash", prev), ("hash", digest)):
        if type(value) is not bytes or len(value) != 32:
            return f"{name} is not 32 bytes"
    return None


def _check_rows(rows: object) -> str | None:
    """The first reason (naming the row's index) why ``rows`` are not a list of ``Row``s."""
    if type(rows) is not list and type(rows) is not tuple:
        return f"rows are {type(rows).__name__}, not a list"
    lo, hi = _I64_MIN, _I64_MAX
    for i, r in enumerate(cast(Sequence[Any], rows)):
        # Fast path for the common, well-formed row; anything unusual (including valid
        # non-ASCII text) goes through _row_problem for an exact verdict.
        if (type(r) is list or type(r) is tuple) and len(r) == 10:
            seq, wall, mono, boot, type_name, lane, version, data, prev, digest = r
            if (
                type(seq) is int
                and 0 < seq <= hi
                and type(wall) is int
                and lo <= wall <= hi
                and type(mono) is int
                and lo <= mono <= hi
                and type(boot) is str
                and boot.isascii()
                and "\x00" not in boot
                and type(type_name) is str
                and type_name.isascii()
                and "\x00" not in type_name
                and (lane is None or (type(lane) is str and lane.isascii() and "\x00" not in lane))
                and type(version) is int
                and 0 <= version <= hi
                and type(data) is bytes
                and type(prev) is bytes
                and len(prev) == 32
                and type(digest) is bytes
                and len(digest) == 32
            ):
                continue
        problem = _row_problem(r)
        if problem is not None:
            return f"malformed row at index {i}: {problem}"
    return None


_BOOT_IDS = operator.itemgetter(3)
_TYPES = operator.itemgetter(4)
_LANES = operator.itemgetter(5)


def _check_decoded(rows: DecodedEvents) -> str | None:
    """``_check_rows`` for rows ``decode_batch`` already checked: only NUL is left to find."""
    # decode_batch proved every type and range (msgpack text is valid UTF-8); what it lets
    # through is NUL in text, which PostgreSQL cannot store. C-speed scans, no Python loop.
    nul = "\x00"
    if (
        nul in "".join(map(_BOOT_IDS, rows))
        or nul in "".join(map(_TYPES, rows))
        or nul in "".join(filter(None, map(_LANES, rows)))
    ):
        return _check_rows(tuple(rows))
    return None


def _clean_text(value: str) -> str:
    """Text safe to store in either backend (no NUL, valid UTF-8)."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()


def _payload(gate: object, rows: object) -> bytes:
    """What a dead letter keeps of refused rows: msgpack ``{gate, rows}``, else their repr."""
    try:
        packed: bytes = msgpack.packb({"gate": gate, "rows": rows}, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        packed = _clean_text(repr({"gate": gate, "rows": rows})).encode()
    return packed


# --- DSNs ----------------------------------------------------------------------------------

_DSN_HELP = "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"


def redact(dsn: str) -> str:
    """``dsn`` without its password, for messages and logs."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable DSN>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rpartition("@")
    userinfo = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[2]}"))


def sqlite_path(dsn: str) -> str:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` DSN."""
    if not dsn.lower().startswith("sqlite:"):
        raise DsnError(f"not a sqlite DSN: {redact(dsn)!r}")
    rest = dsn[len("sqlite:") :]
    if not rest.startswith("///"):
        raise DsnError(
            f"sqlite DSN {dsn!r} must start with sqlite:/// (three slashes, no host): "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = rest[3:]
    if "?" in path or "#" in path:
        raise DsnError(f"sqlite DSN {dsn!r} takes no query or fragment")
    path = unquote(path)
    if not path:
        raise DsnError(f"sqlite DSN {dsn!r} names no file: sqlite:///PATH")
    if "\x00" in path:
        raise DsnError("sqlite DSN path contains a NUL character")
    if path == ":memory:":
        return path
    p = Path(path)
    if p.is_dir():
        raise DsnError(f"sqlite DSN {dsn!r} names a directory, not a database file")
    if not p.parent.is_dir():
        raise DsnError(f"sqlite DSN {dsn!r}: directory {str(p.parent)!r} does not exist")
    return path


def _check_postgres_dsn(dsn: str) -> None:
    try:
        parts = urlsplit(dsn)
        if "," not in parts.netloc:  # libpq's multi-host form has no single port to check
            parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        raise DsnError(f"postgresql DSN {redact(dsn)!r} is malformed: {exc}") from None
    if not parts.path.strip("/"):
        raise DsnError(
            f"postgresql DSN {redact(dsn)!r} names no database: "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise DsnError(f"postgresql DSN {redact(dsn)!r} is malformed: {exc}") from None


def open_store(dsn: str, *, dead_letters: DeadLetterLimits | None = None) -> CentralStore:
    """Open (creating and migrating if needed) the store named by ``dsn``.

    Raises ``DsnError`` (a ``ValueError``) for a DSN it cannot use, ``StoreError`` when the
    database cannot be opened, ``SchemaError`` when it was written by newer software.
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise DsnError(f"empty store DSN: {_DSN_HELP}")
    scheme, sep, _ = dsn.partition(":")
    scheme = scheme.lower()
    if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise DsnError(f"store DSN {redact(dsn)!r} has no scheme: {_DSN_HELP}")
    if scheme == "sqlite":
        return SqliteStore(sqlite_path(dsn), dead_letters=dead_letters)
    if scheme in ("postgresql", "postgres"):
        _check_postgres_dsn(dsn)
        return PostgresStore(dsn, dead_letters=dead_letters)
    raise DsnError(f"unsupported store DSN scheme {scheme!r}: {_DSN_HELP}")


# --- the store -----------------------------------------------------------------------------


class CentralStore(ABC):
    """Central's copy of gates' logs. Thread-safe; every method is a short blocking call."""

    backend: ClassVar[str]

    def __init__(self, description: str, dead_letters: DeadLetterLimits | None = None) -> None:
        self.description = description
        self.dead_letter_limits = dead_letters or DeadLetterLimits()
        self._lock = threading.Lock()
        self._closed = False

    # Dialect hooks -------------------------------------------------------------------------

    @abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        """A write transaction: committed durably on normal exit, rolled back otherwise."""

    @abstractmethod
    def _exec(self, sql: str, params: Sequence[object] = ()) -> None: ...

    @abstractmethod
    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def _insert_events(self, gate: str, rows: Sequence[Row], received_at_ns: int) -> None:
        """Insert verified rows above the head (no conflicts expected): consecutive seqs, each
        row's prev_hash equal to the previous row's hash."""

    @abstractmethod
    def _lock_heads(self, gates: list[str], now_ns: int) -> dict[str, tuple[int, bytes]]:
        """Inside a transaction: create missing heads at (0, genesis), lock and read them."""

    @abstractmethod
    def _retryable(self, exc: BaseException) -> bool:
        """Whether a failed transaction may simply be run again (deadlock, serialisation)."""

    @abstractmethod
    def _db_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a database failure to report as ``StoreError``."""

    @abstractmethod
    def _close(self) -> None: ...

    # Plumbing ------------------------------------------------------------------------------

    def _run(self, fn: Callable[[], T], *, write: bool) -> T:
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"store {self.description} is closed")
            attempt = 0
            while True:
                try:
                    if not write:
                        return fn()
                    with self._transaction():
                        return fn()
                except Exception as exc:
                    if write and self._retryable(exc) and attempt < _PG_RETRIES:
                        attempt += 1
                        time.sleep(0.005 * attempt)
                        continue
                    if self._db_error(exc):
                        raise StoreError(f"{self.description}: {exc}") from exc
                    raise

    # Writing -------------------------------------------------------------------------------

    def store_batch(self, gate: str, rows: Sequence[RowLike], *, source: str = "") -> StoreResult:
        """Store one batch of ``gate``'s rows (see the module docstring); committed on return."""
        return self.store_batches([Batch(gate, rows, source)])[0]

    def store_batches(
        self, items: Sequence[Batch | tuple[str, Sequence[RowLike]]], *, source: str = ""
    ) -> list[StoreResult]:
        """Store several batches in ONE transaction (one fsync); results in ``items`` order.

        Batches of the same gate are applied in order, so a later one may extend an earlier
        one. ``source`` is the default for items that are plain ``(gate, rows)`` tuples.
        """
        batches = [
            item if isinstance(item, Batch) else Batch(item[0], item[1], source) for item in items
        ]
        if not batches:
            return []
        return self._run(lambda: self._store_batches_tx(batches), write=True)

    def _store_batches_tx(self, batches: list[Batch]) -> list[StoreResult]:
        now = time.time_ns()
        gates = sorted({b.gate for b in batches if _gate_problem(b.gate) is None})
        heads = self._lock_heads(gates, now) if gates else {}
        start = dict(heads)
        results = [self._store_one(b, heads, now) for b in batches]
        for gate, head in heads.items():
            if head != start[gate]:
                self._exec(_UPDATE_HEAD, (head[0], head[1], now, gate))
        return results

    def _store_one(
        self, batch: Batch, heads: dict[str, tuple[int, bytes]], now: int
    ) -> StoreResult:
        gate, raw_rows, source = batch
        source = _clean_text(source) if type(source) is str else repr(source)
        gate_problem = _gate_problem(gate)
        if gate_problem is not None:
            reason = f"malformed batch: {gate_problem} ({_clean_text(repr(gate))[:200]})"
            self._dead(now, source, None, _payload(None, raw_rows), reason)
            n = len(raw_rows) if isinstance(raw_rows, list | tuple) else 0
            return StoreResult(0, None, 0, 0, n, reason)
        head_seq, head_hash = heads[gate]
        problem = (
            _check_decoded(raw_rows) if type(raw_rows) is DecodedEvents else _check_rows(raw_rows)
        )
        if problem is not None:
            n = len(raw_rows) if isinstance(raw_rows, list | tuple) else 0
            self._dead(now, source, gate, _payload(gate, raw_rows), problem)
            # A fresh copy may be sound (the gate hashed what it stored); ask for one.
            return StoreResult(head_seq, head_seq + 1, 0, 0, n, problem)
        # Checked: every row has Row's shape and types (lists from msgpack, or tuples).
        rows = cast(Sequence[Row], raw_rows)
        if not rows:
            return StoreResult(head_seq, None, 0, 0)

        dups: Sequence[Row] = ()
        new = rows
        if rows[0][0] <= head_seq or rows[-1][0] <= head_seq:
            dups = [r for r in rows if r[0] <= head_seq]
            new = [r for r in rows if r[0] > head_seq]
        if dups:
            fork = self._fork(gate, dups)
            if fork is not None:
                self._dead(now, source, gate, _payload(gate, raw_rows), fork)
                # Resending cannot help: the gate's history differs from the one we hold.
                return StoreResult(head_seq, None, 0, len(dups), len(rows), fork)
        if not new:
            return StoreResult(head_seq, None, 0, len(dups))
        if new[0][0] > head_seq + 1:
            return StoreResult(head_seq, head_seq + 1, 0, len(dups))

        verifier = ChainVerifier(gate, after_seq=head_seq, after_hash=head_hash)
        chain_fault = verifier.feed(new)
        good = new[: verifier.count]
        if good:
            self._insert_events(gate, good, now)
            self._note_reviews(gate, source, good, now)
            last = good[-1]
            head_seq, head_hash = last[0], last[9]
            heads[gate] = (head_seq, head_hash)
        if chain_fault is None:
            return StoreResult(head_seq, None, len(good), len(dups))
        rest = new[verifier.count :]
        reason = f"unverifiable: {chain_fault}"
        self._dead(now, source, gate, _payload(gate, [list(r) for r in rest]), reason)
        return StoreResult(head_seq, head_seq + 1, len(good), len(dups), len(rest), reason)

    def _note_reviews(self, gate: str, source: str, rows: Sequence[Row], now: int) -> None:
        """A gate's ``admission.revoked-credential`` reports become review rows, in the same
        transaction as the events that carry them."""
        for row in rows:
            if row[4] != _REVIEW_TYPE:
                continue
            try:
                event = decode_event(row[4], row[6], bytes(row[7]), row[5])
            except EventDecodeError as exc:
                # The event is stored (its chain is sound); only its review row is missing.
                reason = f"admission review of seq {row[0]} not recorded: {exc}"
                self._dead(now, source, gate, bytes(row[7]), reason)
                continue
            assert isinstance(event, RevokedCredentialAdmission)
            self._exec(
                "INSERT INTO admission_reviews (gate, seq, plate, credential_kind,"
                " credential_id, revoked_at_ns, decided_at_ns, noted_at_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gate, seq) DO NOTHING",
                (
                    gate,
                    event.decision_seq,
                    event.plate,
                    event.credential_kind,
                    event.credential_id,
                    datetime_to_ns(event.revoked_at),
                    datetime_to_ns(event.decided_at),
                    now,
                ),
            )

    def _fork(self, gate: str, dups: Sequence[Row]) -> str | None:
        """A reason if any duplicate's hash differs from the stored one, else None."""
        stored: dict[int, bytes] = {}
        seqs = sorted({r[0] for r in dups})
        if seqs[-1] - seqs[0] + 1 == len(seqs):  # a contiguous replay: one range query
            for seq, digest in self._query(
                "SELECT seq, hash FROM gate_events WHERE gate = ? AND seq BETWEEN ? AND ?",
                (gate, seqs[0], seqs[-1]),
            ):
                stored[seq] = bytes(digest)
        else:
            for i in range(0, len(seqs), _IN_CHUNK):
                chunk = seqs[i : i + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                for seq, digest in self._query(
                    f"SELECT seq, hash FROM gate_events WHERE gate = ? AND seq IN ({marks})",
                    (gate, *chunk),
                ):
                    stored[seq] = bytes(digest)
        for r in dups:
            held = stored.get(r[0])
            if held is None:
                return f"fork at seq {r[0]}: below the head but not stored"
            if held != r[9]:
                return f"fork at seq {r[0]}: hash differs from the stored event's"
        return None

    def _dead(self, now: int, source: str, gate: str | None, payload: bytes, reason: str) -> int:
        """Keep a bounded dead letter (prefix, size, SHA-256) and trim the gate's to the cap."""
        lim = self.dead_letter_limits
        digest = hashlib.sha256(payload).digest()
        row = (
            now,
            source[:_DEAD_TEXT_MAX],
            gate,
            payload[: lim.payload_prefix],
            len(payload),
            digest,
            _clean_text(reason)[:_DEAD_TEXT_MAX],
        )
        dead_id = int(self._query(_INSERT_DEAD, row)[0][0])
        # Oldest dropped, not newest refused: what a gate sends now is what an operator must
        # see; the drops are counted (and a gate can only push out its own dead letters).
        if gate is None:
            dropped = self._query(_TRIM_DEAD_NO_GATE, (lim.per_gate,))
        else:
            dropped = self._query(_TRIM_DEAD, (gate, gate, lim.per_gate))
        if dropped:
            size = sum(int(r[0]) for r in dropped)
            key = _NO_GATE if gate is None else gate
            self._exec(_COUNT_DROPS, (key, len(dropped), size, now))
        return dead_id

    def dead_letter(self, source: str, gate: str | None, payload: bytes, reason: str) -> int:
        """Keep a payload that could not be used, with why; return its id. Committed."""
        now = time.time_ns()
        gate_value = gate if gate is None or _gate_problem(gate) is None else None
        if gate is not None and gate_value is None:
            reason = f"{reason} (gate {gate!r})"
        body = bytes(payload)
        return self._run(
            lambda: self._dead(now, _clean_text(source), gate_value, body, reason), write=True
        )

    def add_admission_review(
        self,
        gate: str,
        seq: int,
        *,
        plate: str,
        credential_kind: str,
        credential_id: str,
        revoked_at_ns: int,
        decided_at_ns: int,
        noted_at_ns: int | None = None,
    ) -> bool:
        """Record an entry admitted by a credential revoked meanwhile; False if already held."""
        noted = time.time_ns() if noted_at_ns is None else noted_at_ns
        params = (
            gate,
            seq,
            plate,
            credential_kind,
            credential_id,
            revoked_at_ns,
            decided_at_ns,
            noted,
        )

        def add() -> bool:
            inserted = self._query(
                "INSERT INTO admission_reviews (gate, seq, plate, credential_kind,"
                " credential_id, revoked_at_ns, decided_at_ns, noted_at_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gate, seq) DO NOTHING"
                " RETURNING seq",
                params,
            )
            return bool(inserted)

        return self._run(add, write=True)

    # Reading -------------------------------------------------------------------------------

    def head(self, gate: str) -> tuple[int, bytes]:
        """(seq, hash) of the gate's highest contiguous stored event; (0, genesis) if none."""
        rows = self._run(
            lambda: self._query("SELECT seq, hash FROM gate_heads WHERE gate = ?", (gate,)),
            write=False,
        )
        if not rows:
            return 0, GENESIS_HASH
        return int(rows[0][0]), bytes(rows[0][1])

    def heads(self) -> dict[str, tuple[int, bytes]]:
        """Every known gate's head (a gate seen with nothing stored yet is at (0, genesis))."""
        rows = self._run(
            lambda: self._query("SELECT gate, seq, hash FROM gate_heads ORDER BY gate"),
            write=False,
        )
        return {str(g): (int(s), bytes(h)) for g, s, h in rows}

    def count(self, gate: str | None = None) -> int:
        """Events stored for ``gate``, or for all gates."""
        params: tuple[object, ...] = ()
        if gate is None:
            sql = "SELECT COUNT(*) FROM gate_events"
        else:
            sql, params = "SELECT COUNT(*) FROM gate_events WHERE gate = ?", (gate,)
        return int(self._run(lambda: self._query(sql, params), write=False)[0][0])

    def events(self, gate: str, after: int = 0, limit: int | None = None) -> Iterator[Row]:
        """``gate``'s stored rows with seq > ``after`` in seq order, read page by page."""
        remaining = limit
        while remaining is None or remaining > 0:
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            rows = self._run(
                functools.partial(self._query, _SELECT_EVENTS, (gate, after, page)), write=False
            )
            for r in rows:
                yield cast(Row, tuple(r))
            if len(rows) < page:
                return
            after = int(rows[-1][0])
            if remaining is not None:
                remaining -= len(rows)

    def verify(self, gate: str) -> ChainFault | None:
        """Re-prove the whole stored chain of ``gate`` from genesis, and that it ends at the head.

        Returns the first fault, or None when every link and hash holds. Events stored after
        the head was read are not checked.
        """
        # The head first, then the rows up to it: events stored meanwhile are not a fault.
        head_seq, head_hash = self.head(gate)
        verifier = ChainVerifier(gate)
        fault = verifier.feed(itertools.takewhile(lambda r: r[0] <= head_seq, self.events(gate)))
        if fault is not None:
            return fault
        if verifier.last_seq != head_seq:
            return ChainFault(
                min(verifier.last_seq, head_seq) + 1,
                f"the head says seq {head_seq} but the stored chain ends at {verifier.last_seq}",
            )
        if verifier.last_hash != head_hash:
            return ChainFault(head_seq, "the head's hash differs from the stored event's")
        return None

    def dead_letters(self, gate: str | None = None, *, limit: int = 1000) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters kept (of ``gate`` if given), by id."""
        if gate is None:
            sql = f"SELECT {_DEAD_COLUMNS} FROM dead_letters ORDER BY id LIMIT ?"
            params: tuple[object, ...] = (limit,)
        else:
            sql = f"SELECT {_DEAD_COLUMNS} FROM dead_letters WHERE gate = ? ORDER BY id LIMIT ?"
            params = (gate, limit)
        rows = self._run(lambda: self._query(sql, params), write=False)
        return [
            DeadLetter(
                int(i),
                int(at),
                str(src),
                None if g is None else str(g),
                bytes(p),
                str(r),
                int(size),
                bytes(digest),
            )
            for i, at, src, g, p, r, size, digest in rows
        ]

    def dead_letter_drops(self) -> list[DeadLetterDrops]:
        """Per gate (None: no known gate), the dead letters deleted to keep within the cap."""
        rows = self._run(
            lambda: self._query(
                "SELECT gate, letters, payload_bytes, last_dropped_at_ns FROM dead_letter_drops"
                " ORDER BY gate"
            ),
            write=False,
        )
        return [
            DeadLetterDrops(None if g == _NO_GATE else str(g), int(n), int(b), int(at))
            for g, n, b, at in rows
        ]

    def admission_reviews(self, gate: str | None = None) -> list[AdmissionReview]:
        """Recorded admission reviews (of ``gate`` if given), by gate and seq."""
        cols = (
            "gate, seq, plate, credential_kind, credential_id, revoked_at_ns, decided_at_ns,"
            " noted_at_ns"
        )
        params: tuple[object, ...] = ()
        if gate is None:
            sql = f"SELECT {cols} FROM admission_reviews ORDER BY gate, seq"
        else:
            sql = f"SELECT {cols} FROM admission_reviews WHERE gate = ? ORDER BY seq"
            params = (gate,)
        rows = self._run(lambda: self._query(sql, params), write=False)
        return [
            AdmissionReview(str(g), int(s), str(p), str(k), str(c), int(r), int(d), int(n))
            for g, s, p, k, c, r, d, n in rows
        ]

    # Lifecycle -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection; idempotent. Waits for a call in progress to finish."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close()

    def __enter__(self) -> CentralStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- SQLite --------------------------------------------------------------------------------

_SQLITE_CHUNK = 128  # most rows per INSERT statement (a power of two, see _sqlite_insert)


def _sha256(value: bytes | None) -> bytes | None:
    """SQL ``edgegate_sha256(blob)`` for the SQLite migration (SQLite has no SHA-256)."""
    return None if value is None else hashlib.sha256(value).digest()


def _sqlite_chunk(variable_limit: int) -> int:
    """Most rows per INSERT under SQLite's parameter limit (32766 since 3.32, 999 before)."""
    n = _SQLITE_CHUNK
    while n > 1 and 3 + 9 * n > variable_limit:
        n //= 2
    return n


@functools.cache
def _sqlite_insert(n: int, one_boot: bool) -> str:
    """``INSERT`` of ``n`` chained rows with numbered parameters.

    ``?1`` is the gate, ``?2`` received_at_ns, ``?3`` the first row's prev_hash, ``?4`` the
    boot_id of every row if ``one_boot``; then per row seq, wall_ns, mono_ns, (boot_id,) type,
    lane, version, data, hash. A row's prev_hash is the previous row's hash parameter: the
    rows are verified, so the two are equal, and one blob fewer per row is bound (each bound
    text or blob is copied by SQLite). Sizes are powers of two so that few distinct
    statements exist; each is compiled once and kept in the connection's statement cache.
    """
    values = []
    prev = 3
    p = 5 if one_boot else 4
    for _ in range(n):
        if one_boot:
            s, w, m, b, t, la, v, d, h = p, p + 1, p + 2, 4, p + 3, p + 4, p + 5, p + 6, p + 7
            p += 8
        else:
            s, w, m, b, t, la, v, d, h = range(p, p + 9)
            p += 9
        values.append(f"(?1,?{s},?{w},?{m},?{b},?{t},?{la},?{v},?{d},?{prev},?{h},?2)")
        prev = h
    return f"INSERT INTO gate_events ({_EVENT_COLUMNS}) VALUES {','.join(values)}"


class SqliteStore(CentralStore):
    """One SQLite file in WAL mode with ``synchronous=FULL``: a commit survives power loss."""

    backend = "sqlite"

    def __init__(self, path: str, *, dead_letters: DeadLetterLimits | None = None) -> None:
        super().__init__(f"sqlite:///{path}", dead_letters)
        self.path = path
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.description}: {exc}") from exc
        self._conn = conn
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.create_function("edgegate_sha256", 1, _sha256, deterministic=True)
            # Only takes effect on a new, empty file (before WAL mode is set): 8 KiB pages
            # hold more ~330-byte events per page than 4 KiB (fewer splits, ~3% fewer
            # instructions per stored event).
            conn.execute("PRAGMA page_size = 8192")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if path != ":memory:" and str(mode).lower() != "wal":
                raise StoreError(f"{self.description}: cannot use WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: keeps the PK B-tree hot
            self._chunk = _sqlite_chunk(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
            self._migrate()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open {self.description}: {exc}") from exc
            raise

    def _migrate(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_MIGRATIONS_TABLE)
            version = int(
                conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
            )
            if version > LATEST:
                raise SchemaError(
                    f"{self.description}: schema version {version} is newer than this "
                    f"software knows ({LATEST}); upgrade edgegate"
                )
            for m in MIGRATIONS:
                if m.version <= version:
                    continue
                script = m.sql.format(**_SQLITE_TYPES) + m.sqlite_extra
                for statement in split_statements(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at_ns) VALUES (?, ?, ?)",
                    (m.version, m.name, time.time_ns()),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        conn = self._conn
        # IMMEDIATE takes the write lock up front: the head we read stays ours until COMMIT.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT: never leave the connection inside a transaction.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _exec(self, sql: str, params: Sequence[object] = ()) -> None:
        self._conn.execute(sql, params)

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def _insert_events(self, gate: str, rows: Sequence[Row], received_at_ns: int) -> None:
        # Blobs as bytearray: sqlite3 binds bytearray directly but sends bytes through its
        # adapter lookup first, which costs far more than the copy.
        ba = bytearray
        execute = self._conn.execute
        total = len(rows)
        boot = rows[0][3]
        one_boot = list(map(_BOOT_IDS, rows)).count(boot) == total  # the usual case
        start = 0
        while start < total:
            n = min(self._chunk, 1 << ((total - start).bit_length() - 1))
            chunk = rows[start : start + n]
            params: list[object] = [gate, received_at_ns, ba(chunk[0][8])]
            extend = params.extend
            if one_boot:
                params.append(boot)
                for s, w, m, _b, t, la, v, d, _p, h in chunk:
                    extend((s, w, m, t, la, v, ba(d), ba(h)))
            else:
                for s, w, m, b, t, la, v, d, _p, h in chunk:
                    extend((s, w, m, b, t, la, v, ba(d), ba(h)))
            execute(_sqlite_insert(n, one_boot), params)
            start += n

    def _lock_heads(self, gates: list[str], now_ns: int) -> dict[str, tuple[int, bytes]]:
        conn = self._conn
        conn.executemany(_ENSURE_HEAD, [(g, GENESIS_HASH, now_ns) for g in gates])
        heads: dict[str, tuple[int, bytes]] = {}
        for gate in gates:
            seq, digest = conn.execute(
                "SELECT seq, hash FROM gate_heads WHERE gate = ?", (gate,)
            ).fetchone()
            heads[gate] = (int(seq), bytes(digest))
        return heads

    def _retryable(self, exc: BaseException) -> bool:
        return False  # busy_timeout already waited for the other writer

    def _db_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def _close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._conn.close()


# --- PostgreSQL ----------------------------------------------------------------------------

_PG_ADVISORY_MIGRATE = 0x6564676567617465  # "edgegate": serialises concurrent migrations
_PG_COPY = f"COPY gate_events ({_EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_PG_COPY_TYPES = [
    "text",
    "int8",
    "int8",
    "int8",
    "text",
    "text",
    "text",
    "int8",
    "bytea",
    "bytea",
    "bytea",
    "int8",
]


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class PostgresStore(CentralStore):
    """PostgreSQL through psycopg 3; reconnects on the next call after a lost connection."""

    backend = "postgresql"

    def __init__(self, dsn: str, *, dead_letters: DeadLetterLimits | None = None) -> None:
        super().__init__(redact(dsn), dead_letters)
        self._dsn = dsn
        self._sql_cache: dict[str, str] = {}
        self._conn = self._connect()
        try:
            self._migrate()
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"cannot open {self.description}: {exc}") from exc
            raise

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            return psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.description}: {exc}") from exc

    @property
    def _live(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _sql(self, sql: str) -> str:
        out = self._sql_cache.get(sql)
        if out is None:
            out = self._sql_cache[sql] = _pg(sql)
        return out

    def _migrate(self) -> None:
        conn = self._conn
        for m in (None, *MIGRATIONS):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_ADVISORY_MIGRATE,))
                conn.execute(_MIGRATIONS_TABLE)
                row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
                version = int(row[0] or 0) if row else 0
                if version > LATEST:
                    raise SchemaError(
                        f"{self.description}: schema version {version} is newer than this "
                        f"software knows ({LATEST}); upgrade edgegate"
                    )
                if m is None or m.version <= version:
                    continue
                # No parameters: psycopg sends the script as one simple query, $$ bodies intact.
                conn.execute(m.sql.format(**_POSTGRES_TYPES) + m.postgres_extra)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at_ns)"
                    " VALUES (%s, %s, %s)",
                    (m.version, m.name, time.time_ns()),
                )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._live.transaction():
            yield

    def _exec(self, sql: str, params: Sequence[object] = ()) -> None:
        self._live.execute(self._sql(sql), params)

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._live.execute(self._sql(sql), params).fetchall()

    def _insert_events(self, gate: str, rows: Sequence[Row], received_at_ns: int) -> None:
        # COPY: one round trip for the whole batch; nothing conflicts, the head is locked.
        with self._live.cursor() as cur, cur.copy(_PG_COPY) as copy:
            copy.set_types(_PG_COPY_TYPES)
            write = copy.write_row
            for r in rows:
                write((gate, *r, received_at_ns))

    def _lock_heads(self, gates: list[str], now_ns: int) -> dict[str, tuple[int, bytes]]:
        conn = self._live
        # Create missing heads, then lock them all, both in gate order: two sinks locking
        # overlapping sets of gates take the locks in the same order and cannot deadlock
        # (a deadlock that happens anyway is retried by _run).
        conn.execute(
            "INSERT INTO gate_heads (gate, seq, hash, updated_at_ns)"
            " SELECT g, 0, %s, %s FROM unnest(%s::text[]) AS g ORDER BY g"
            " ON CONFLICT (gate) DO NOTHING",
            (GENESIS_HASH, now_ns, gates),
        )
        rows = conn.execute(
            "SELECT gate, seq, hash FROM gate_heads WHERE gate = ANY(%s) ORDER BY gate FOR UPDATE",
            (gates,),
        ).fetchall()
        return {str(g): (int(s), bytes(h)) for g, s, h in rows}

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(
            exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
        )

    def _db_error(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error)

    def _close(self) -> None:
        self._conn.close()


# --- asyncio -------------------------------------------------------------------------------


class AsyncStore:
    """A ``CentralStore`` for asyncio code: every call runs on one dedicated thread.

    One thread keeps calls in submission order (a batch is committed before the next one
    starts) and keeps blocking I/O and fsync off the event loop. If the awaiting task is
    cancelled, a call already started still completes and commits; its result is lost, so the
    caller does not ack, and the gate's resend is stored idempotently.
    """

    def __init__(self, store: CentralStore) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="central-store")

    async def run(self, fn: Callable[[CentralStore], T]) -> T:
        """Run ``fn(store)`` on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self.store)

    async def store_batches(
        self, items: Sequence[Batch | tuple[str, Sequence[RowLike]]], *, source: str = ""
    ) -> list[StoreResult]:
        return await self.run(lambda s: s.store_batches(items, source=source))

    async def store_batch(
        self, gate: str, rows: Sequence[RowLike], *, source: str = ""
    ) -> StoreResult:
        return await self.run(lambda s: s.store_batch(gate, rows, source=source))

    async def dead_letter(self, source: str, gate: str | None, payload: bytes, reason: str) -> int:
        return await self.run(lambda s: s.dead_letter(source, gate, payload, reason))

    async def heads(self) -> dict[str, tuple[int, bytes]]:
        return await self.run(lambda s: s.heads())

    async def head(self, gate: str) -> tuple[int, bytes]:
        return await self.run(lambda s: s.head(gate))

    async def aclose(self) -> None:
        """Finish queued calls, close the store, stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.store.close)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
