"""SQLite persistence of the allow-list.

One row per credential (``allowlist_entry``, keyed by kind and id, ``data`` the codec bytes)
and one state row (``allowlist_state``: version, when it was brought up to date, where the
content came from, content hash).

The write functions run inside a transaction the caller owns and never commit: the event log
calls them in the transaction that also appends the "allow-list updated" event, so a change and
its event are durable together or not at all. Each is atomic on its own too (a savepoint): on
error nothing it did remains in the caller's transaction. They refuse (``AllowListError``)
exactly what ``AllowList`` refuses, and apply the same sticky appointment consumption, so the
table and the in-memory list stay in step.

The content hash is SHA-256 over the ``data`` of every entry in (kind, id) order. A snapshot
records it; a delta or an appointment (un)consumption clears it (recomputing it would scan the
whole table), and ``load`` computes it afresh and refuses a table that no longer matches a
recorded hash (changed behind the gate's back).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edgegate.allowlist import codec
from edgegate.core.allowlist import AllowList, AllowListError, check_credential
from edgegate.core.domain import Appointment, Credential, CredentialKind

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# No index on plate: lookups go through the in-memory index, and keeping one up to date made
# every snapshot rewrite it (a second on a million entries, or gigabytes of random page
# writes when staged). Migration 3 dropped the one older files have.
_STAGING = "allowlist_entry_staging"
_RETIRED = "allowlist_entry_retired"
_ENTRY_COLUMNS = """(
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        plate TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID"""
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS allowlist_entry " + _ENTRY_COLUMNS,
    """CREATE TABLE IF NOT EXISTS allowlist_state (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        version INTEGER NOT NULL,
        updated_at_ns INTEGER,
        source TEXT NOT NULL,
        content_hash BLOB
    )""",
)

# substr(kind, 1, 1) || id is core.allowlist.id_key in SQL. The primary key's order is
# (kind, id) in BINARY collation, i.e. UTF-8 byte order, the order the content hash uses.
_LOAD_SQL = (
    "SELECT CAST(substr(kind, 1, 1) || id AS BLOB), CAST(plate AS BLOB), data"
    " FROM allowlist_entry ORDER BY kind, id"
)
_INSERT_SQL = (
    "INSERT INTO allowlist_entry (kind, id, plate, data) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (kind, id) DO UPDATE SET plate = excluded.plate, data = excluded.data"
)

_APPOINTMENT = CredentialKind.APPOINTMENT.value

_Row = tuple[str, str, str, bytes]  # kind, id, normalised plate, codec bytes


class StoreError(RuntimeError):
    """The store cannot do what was asked (no transaction, a table changed behind its back)."""


@dataclass(frozen=True, slots=True)
class AllowListState:
    """The stored list's version, when it was last brought up to date, where its content came
    from (e.g. ``central``, ``import:lists.csv``) and its content hash (None after a delta)."""

    version: int
    updated_at: datetime | None
    source: str
    content_hash: bytes | None


def create_tables(conn: sqlite3.Connection) -> None:
    """Create the allow-list tables if missing. Does not commit."""
    for statement in _SCHEMA:
        conn.execute(statement)


def read_state(conn: sqlite3.Connection) -> AllowListState | None:
    """The stored state, or None when no snapshot or delta was ever written."""
    row = conn.execute(
        "SELECT version, updated_at_ns, source, content_hash FROM allowlist_state"
        " WHERE singleton = 1"
    ).fetchone()
    if row is None:
        return None
    version, updated_at_ns, source, content_hash = row
    updated_at = None if updated_at_ns is None else _EPOCH + (updated_at_ns // 1000) * _MICROSECOND
    return AllowListState(version, updated_at, source, content_hash)


def load(conn: sqlite3.Connection) -> AllowList:
    """The stored allow-list, with its version and a freshly computed content hash.

    Reads in one transaction (its own if the caller has none). Raises ``StoreError`` if a
    content hash was recorded and the table no longer matches it.
    """
    own_transaction = not conn.in_transaction
    if own_transaction:
        conn.execute("BEGIN")
    try:
        state = read_state(conn)
        allowlist = AllowList.from_encoded(
            conn.execute(_LOAD_SQL),
            state.version if state else 0,
            state.updated_at if state else None,
            digest=hashlib.sha256(),
        )
    finally:
        if own_transaction:
            conn.rollback()
    recorded = state.content_hash if state is not None else None
    if recorded is not None and allowlist.content_hash != recorded:
        raise StoreError(
            "allow-list table does not match the content hash recorded with version "
            f"{allowlist.version}: it was changed outside edgegate; fetch a new snapshot"
        )
    return allowlist


@dataclass(frozen=True, slots=True, eq=False)
class PreparedSnapshot:
    """Snapshot entries checked, encoded and sorted: see ``prepare_snapshot``."""

    rows: list[_Row]


def prepare_snapshot(entries: Iterable[Credential]) -> PreparedSnapshot:
    """The pure, expensive part of ``write_snapshot`` (about half its time at a million
    entries), to run before taking the writer's transaction so the event log is held up
    only by the SQL. ``AllowListError`` if any entry is invalid or a (kind, id) repeats."""
    problems: list[str] = []
    rows: list[_Row] = []
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        row = _encode_row(entry, problems, seen)
        if row is not None:
            rows.append(row)
    if problems:
        raise AllowListError(problems)
    rows.sort(key=lambda r: (r[0], r[1]))
    return PreparedSnapshot(rows)


def write_snapshot(
    conn: sqlite3.Connection,
    entries: Iterable[Credential] | PreparedSnapshot,
    version: int,
    updated_at: datetime | None,
    source: str,
) -> AllowListState:
    """Replace every stored entry with ``entries`` and record the state (with the content
    hash). In the caller's transaction; never commits. ``AllowListError`` (nothing written)
    if any entry is invalid or a (kind, id) is given twice."""
    _require_transaction(conn)
    problems: list[str] = []
    _check_updated_at(updated_at, problems)
    if problems:
        raise AllowListError(problems)
    if not isinstance(entries, PreparedSnapshot):
        entries = prepare_snapshot(entries)
    consumed = consumed_appointments(conn)
    rows = entries.rows
    if consumed:
        rows = [
            _still_consumed(r) if r[0] == _APPOINTMENT and r[1] in consumed else r for r in rows
        ]
    state = AllowListState(version, updated_at, source, rows_hash(rows))
    with _savepoint(conn):
        conn.execute("DELETE FROM allowlist_entry")
        conn.executemany(
            "INSERT INTO allowlist_entry (kind, id, plate, data) VALUES (?, ?, ?, ?)", rows
        )
        _write_state(conn, state)
    return state


# --- staged snapshots -------------------------------------------------------------------
# ``write_snapshot`` holds one transaction for the whole table: a million entries keep the
# event log's writer (and so every lane's next event) waiting for seconds. A staged snapshot
# fills a staging table in many short transactions that interleave with the log's events,
# and only the swap commits with the "allow-list updated" event. Nothing is visible before
# the swap; a staging table left by a crash is dropped when the next snapshot starts.


@dataclass(frozen=True, slots=True)
class StagedSnapshot:
    """What ``swap_in_staged`` expects to find in the staging table."""

    count: int
    content_hash: bytes  # ``rows_hash`` of the rows staged


def rows_hash(rows: Iterable[_Row]) -> bytes:
    """The content hash of encoded rows given in (kind, id) order."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row[3])
    return digest.digest()


def start_staging(conn: sqlite3.Connection) -> None:
    """Replace any staging table (and any table a swap retired) with an empty one. In the
    caller's transaction."""
    _require_transaction(conn)
    conn.execute(f"DROP TABLE IF EXISTS {_STAGING}")
    conn.execute(f"DROP TABLE IF EXISTS {_RETIRED}")
    conn.execute(f"CREATE TABLE {_STAGING} {_ENTRY_COLUMNS}")


def stage_rows(conn: sqlite3.Connection, rows: Iterable[_Row]) -> None:
    """Add prepared rows to the staging table. In the caller's transaction."""
    _require_transaction(conn)
    conn.executemany(f"INSERT INTO {_STAGING} (kind, id, plate, data) VALUES (?, ?, ?, ?)", rows)


def clear_retired(conn: sqlite3.Connection, rows: int) -> bool:
    """Delete up to ``rows`` entries of the table a swap retired, and drop it once empty;
    True when it is gone. In the caller's transaction."""
    _require_transaction(conn)
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_RETIRED,)
    ).fetchone()
    if exists is None:
        return True
    deleted = conn.execute(
        f"DELETE FROM {_RETIRED} WHERE (kind, id) IN"
        f" (SELECT kind, id FROM {_RETIRED} ORDER BY kind, id LIMIT ?)",
        (rows,),
    ).rowcount
    if deleted < rows:
        conn.execute(f"DROP TABLE {_RETIRED}")
        return True
    return False


def drop_staging(conn: sqlite3.Connection) -> None:
    """Drop the staging table, if any. In the caller's transaction."""
    _require_transaction(conn)
    conn.execute(f"DROP TABLE IF EXISTS {_STAGING}")


def consumed_appointments(conn: sqlite3.Connection) -> set[str]:
    """Ids of the stored appointments marked consumed."""
    return {
        str(id_)
        for id_, data in conn.execute(
            "SELECT id, data FROM allowlist_entry WHERE kind = ?", (_APPOINTMENT,)
        )
        if _is_consumed(data)
    }


def swap_in_staged(
    conn: sqlite3.Connection,
    staged: StagedSnapshot,
    version: int,
    updated_at: datetime | None,
    source: str,
    consumed: Iterable[str] | None = None,
) -> AllowListState:
    """Make the staged rows the allow-list and record the state. In the caller's transaction;
    never commits. ``StoreError`` (nothing changed) if the staging table is missing or does
    not hold ``staged.count`` rows.

    Appointments consumed at this gate stay consumed (the content hash is then cleared, as
    any consumption clears it). ``consumed`` narrows the search to these appointment ids
    (each is checked against the stored row); it must include every appointment that may be
    consumed now. None scans every stored appointment."""
    _require_transaction(conn)
    problems: list[str] = []
    _check_updated_at(updated_at, problems)
    if problems:
        raise AllowListError(problems)
    try:
        count = conn.execute(f"SELECT COUNT(*) FROM {_STAGING}").fetchone()[0]
    except sqlite3.OperationalError as exc:
        raise StoreError(f"no staged snapshot to swap in: {exc}") from exc
    if count != staged.count:
        raise StoreError(
            f"the staging table holds {count} entries, the snapshot has {staged.count}:"
            " it was changed while staging; start the snapshot again"
        )
    if consumed is None:
        consumed = consumed_appointments(conn)
    with _savepoint(conn):
        kept = 0
        for id_ in sorted(set(consumed)):
            if not _stored_consumed(conn, id_):
                continue
            row = conn.execute(
                f"SELECT kind, id, plate, data FROM {_STAGING} WHERE kind = ? AND id = ?",
                (_APPOINTMENT, id_),
            ).fetchone()
            if row is None:
                continue
            new = _still_consumed((row[0], row[1], row[2], bytes(row[3])))
            if new[3] != row[3]:
                conn.execute(
                    f"UPDATE {_STAGING} SET data = ? WHERE kind = ? AND id = ?",
                    (new[3], _APPOINTMENT, id_),
                )
                kept += 1
        # Renames only: dropping a million rows here would hold the commit for a second or
        # more; ``clear_retired`` empties the old table in short transactions afterwards.
        conn.execute(f"DROP TABLE IF EXISTS {_RETIRED}")
        conn.execute(f"ALTER TABLE allowlist_entry RENAME TO {_RETIRED}")
        conn.execute(f"ALTER TABLE {_STAGING} RENAME TO allowlist_entry")
        state = AllowListState(version, updated_at, source, None if kept else staged.content_hash)
        _write_state(conn, state)
    return state


def write_delta(
    conn: sqlite3.Connection,
    upserts: Iterable[Credential],
    removals: Iterable[tuple[CredentialKind, str]],
    version: int,
    updated_at: datetime | None,
    source: str,
) -> AllowListState:
    """Insert or replace ``upserts`` and delete ``removals``, and record the state (content
    hash cleared). In the caller's transaction; never commits. ``AllowListError`` (nothing
    written) for the reasons ``AllowList.apply_delta`` gives."""
    _require_transaction(conn)
    problems: list[str] = []
    _check_updated_at(updated_at, problems)
    current = read_state(conn)
    current_version = current.version if current else 0
    if version <= current_version:
        problems.append(f"delta version {version} is not newer than {current_version}")
    rows: list[_Row] = []
    seen: set[tuple[str, str]] = set()
    for entry in upserts:
        row = _encode_row(entry, problems, seen)
        if row is not None:
            if row[0] == _APPOINTMENT and _stored_consumed(conn, row[1]):
                row = _still_consumed(row)
            rows.append(row)
    deletions: list[tuple[str, str]] = []
    removed: set[tuple[str, str]] = set()
    for raw_kind, id_ in removals:
        try:
            kind = CredentialKind(raw_kind).value
        except ValueError:
            problems.append(f"cannot remove {raw_kind!r} {id_!r}: unknown kind")
            continue
        if (kind, id_) in removed:
            problems.append(f"{kind} {id_!r}: removed twice")
        elif (kind, id_) in seen:
            problems.append(f"{kind} {id_!r}: both upserted and removed")
        elif not _exists(conn, kind, id_):
            problems.append(f"cannot remove {kind} {id_!r}: not in the allow-list")
        removed.add((kind, id_))
        deletions.append((kind, id_))
    if problems:
        raise AllowListError(problems)
    state = AllowListState(version, updated_at, source, None)
    # In key order the B-tree pages are visited once each, not at random.
    deletions.sort()
    rows.sort()
    with _savepoint(conn):
        conn.executemany("DELETE FROM allowlist_entry WHERE kind = ? AND id = ?", deletions)
        conn.executemany(_INSERT_SQL, rows)
        _write_state(conn, state)
    return state


def set_appointment_consumed(
    conn: sqlite3.Connection, appointment_id: str, consumed: bool
) -> Appointment:
    """Mark the stored appointment consumed or not, and return it. In the caller's
    transaction; never commits. ``AllowListError`` if the appointment is unknown."""
    _require_transaction(conn)
    row = conn.execute(
        "SELECT data FROM allowlist_entry WHERE kind = ? AND id = ?",
        (_APPOINTMENT, appointment_id),
    ).fetchone()
    if row is None:
        raise AllowListError([f"unknown appointment {appointment_id!r}"])
    old = codec.decode(row[0])
    assert isinstance(old, Appointment)
    if old.consumed == consumed:
        return old
    new = dataclasses.replace(old, consumed=consumed)
    with _savepoint(conn):
        conn.execute(
            "UPDATE allowlist_entry SET data = ? WHERE kind = ? AND id = ?",
            (codec.encode(new), _APPOINTMENT, appointment_id),
        )
        conn.execute("UPDATE allowlist_state SET content_hash = NULL WHERE singleton = 1")
    return new


def _require_transaction(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:
        raise StoreError(
            "allow-list writes run inside a transaction the caller owns: BEGIN before calling"
        )


@contextmanager
def _savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("SAVEPOINT allowlist_write")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO allowlist_write")
        conn.execute("RELEASE allowlist_write")
        raise
    conn.execute("RELEASE allowlist_write")


def _check_updated_at(updated_at: datetime | None, problems: list[str]) -> None:
    if updated_at is not None and updated_at.utcoffset() is None:
        problems.append(f"updated_at {updated_at.isoformat()} is naive (must be timezone-aware)")


def _write_state(conn: sqlite3.Connection, state: AllowListState) -> None:
    updated_at_ns = None
    if state.updated_at is not None:
        updated_at_ns = (state.updated_at - _EPOCH) // _MICROSECOND * 1000
    conn.execute(
        "INSERT INTO allowlist_state (singleton, version, updated_at_ns, source, content_hash)"
        " VALUES (1, ?, ?, ?, ?) ON CONFLICT (singleton) DO UPDATE SET"
        " version = excluded.version, updated_at_ns = excluded.updated_at_ns,"
        " source = excluded.source, content_hash = excluded.content_hash",
        (state.version, updated_at_ns, state.source, state.content_hash),
    )


def _encode_row(entry: Credential, problems: list[str], seen: set[tuple[str, str]]) -> _Row | None:
    try:
        c = check_credential(entry)
    except AllowListError as exc:
        problems.extend(exc.problems)
        return None
    key = (c.kind.value, c.id)
    if key in seen:
        problems.append(f"{c.kind} {c.id!r}: given twice")
        return None
    seen.add(key)
    try:
        return (c.kind.value, c.id, c.plate, codec.encode(c))
    except codec.CodecError as exc:
        problems.append(f"{c.kind} {c.id!r}: {exc}")
        return None


def _still_consumed(row: _Row) -> _Row:
    """The row of an appointment the gate already consumed: it stays consumed (the same rule
    as ``core.allowlist.keep_consumed``)."""
    appointment = codec.decode(row[3])
    if not isinstance(appointment, Appointment) or appointment.consumed:
        return row
    return (*row[:3], codec.encode(dataclasses.replace(appointment, consumed=True)))


def _is_consumed(data: bytes) -> bool:
    appointment = codec.decode(data)
    return isinstance(appointment, Appointment) and appointment.consumed


def _stored_consumed(conn: sqlite3.Connection, appointment_id: str) -> bool:
    row = conn.execute(
        "SELECT data FROM allowlist_entry WHERE kind = ? AND id = ?",
        (_APPOINTMENT, appointment_id),
    ).fetchone()
    return row is not None and _is_consumed(row[0])


def _exists(conn: sqlite3.Connection, kind: str, id_: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM allowlist_entry WHERE kind = ? AND id = ?", (kind, id_)
    ).fetchone()
    return row is not None
