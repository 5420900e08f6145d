"""SQLite persistence of the allow-list. One module (over 600 lines) because the writes
(snapshot, staged snapshot, delta, consumption) share the table's SQL and each keeps the seal
in step with it.

One row per credential (``allowlist_entry``, keyed by kind and id, ``data`` the codec bytes)
and one state row (``allowlist_state``: version, when it was brought up to date, where the
content came from, content hash).

The write functions run inside a transaction the caller owns and never commit: the event log
calls them in the transaction that also appends the "allow-list updated" event, so a change and
its event are durable together or not at all. Each is atomic on its own too (a savepoint): on
error nothing it did remains in the caller's transaction. They refuse (``AllowListError``)
exactly what ``AllowList`` refuses, and apply the same sticky appointment consumption, so the
table and the in-memory list stay in step.

Integrity. The state row's ``content_hash`` seals everything lookups are built from: every
entry's kind, id, plate and data (so a consumed appointment too) and the state's version,
update time and source. It is order-independent, the sum modulo 2**256 of the SHA-256 of each
entry's canonical bytes (``row_bytes``) and of the state's, so every write keeps it up to date
from what it changes alone: a snapshot computes it, a delta or a consumption subtracts the old
rows' terms and adds the new ones (a 10,000-entry delta hashes 20,000 rows, not the table).
It is never cleared. ``load`` recomputes it and raises ``AllowListTamperedError``, naming the first
bad entry it can find, when the table no longer matches it (changed behind edgegate's back);
``salvage`` then reads what can still be read, for a gate that runs on with a guard.

The seal is not keyed: it detects an edit made without recomputing it (a hand edit, a flipped
byte, a restored older copy of the table), not someone who rewrites the seal as well. The
seal's arithmetic and its check live in :mod:`edgegate.allowlist.seal`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from edgegate.allowlist.seal import (
    EPOCH,
    MICROSECOND,
    Row,
    RowsSum,
    check_seal,
    decode_row,
    first_bad_entry,
    is_seal,
    ns,
    resealed,
    rows_total,
    seal_of,
    state_term,
    table_total,
    term,
    to_seal,
)
from edgegate.allowlist.seal import Tampering as Tampering  # re-exported, as are the next two
from edgegate.allowlist.seal import row_bytes as row_bytes
from edgegate.allowlist.seal import rows_hash as rows_hash
from edgegate.core import credential_codec as codec
from edgegate.core.allowlist import AllowList, AllowListError, check_credential
from edgegate.core.domain import Appointment, Credential, CredentialKind
from edgegate.log import schema

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

_INSERT_SQL = (
    "INSERT INTO allowlist_entry (kind, id, plate, data) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (kind, id) DO UPDATE SET plate = excluded.plate, data = excluded.data"
)

# substr(kind, 1, 1) || id is core.allowlist.id_key in SQL. Every column is read as bytes, the
# bytes the seal covers, whatever type a hand edit stored. The seal's row bytes are built in
# Python from these (twice as fast as building them in SQL).
_LOAD_SQL = (
    "SELECT CAST(substr(kind, 1, 1) || id AS BLOB), CAST(plate AS BLOB), CAST(data AS BLOB),"
    " CAST(kind AS BLOB) FROM allowlist_entry ORDER BY kind, id"
)
_APPOINTMENT = CredentialKind.APPOINTMENT.value


class StoreError(RuntimeError):
    """The store cannot do what was asked (no transaction, a table changed behind its back)."""


class AllowListTamperedError(StoreError):
    """The stored allow-list does not match its seal: it was changed outside edgegate."""

    def __init__(self, finding: Tampering, version: int) -> None:
        self.finding = finding
        self.version = version
        super().__init__(f"stored allow-list version {version} {finding.described()}")


@dataclass(frozen=True, slots=True)
class AllowListState:
    """The stored list's version, when it was last brought up to date, where its content came
    from (e.g. ``central``, ``import:lists.csv``) and its seal (``content_hash``: see the
    module docstring; None only in a table edited outside edgegate)."""

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
    updated_at = None if updated_at_ns is None else EPOCH + (updated_at_ns // 1000) * MICROSECOND
    return AllowListState(version, updated_at, source, content_hash)


def load(conn: sqlite3.Connection) -> AllowList:
    """The stored allow-list, with its version; its ``content_hash`` is the seal, checked.

    Reads in one transaction (its own if the caller has none). Raises ``AllowListTamperedError``
    (naming the first bad entry) if the table does not match its seal.
    """
    with _reading(conn):
        state = read_state(conn)
        rows = RowsSum(
            0 if state is None else state_term(state.version, ns(state.updated_at), state.source)
        )
        allowlist = AllowList.from_encoded(
            conn.execute(_LOAD_SQL),
            state.version if state else 0,
            state.updated_at if state else None,
            digest=rows,
        )
        legacy = legacy_sealed(conn)
        finding = _check_legacy_hash(conn) if legacy else check_seal(conn, rows.total)
        if finding is not None:
            raise AllowListTamperedError(finding, state.version if state else 0)
    return allowlist


def verify(conn: sqlite3.Connection) -> Tampering | None:
    """What is wrong with the stored list (the first bad entry it can name), or None when it
    matches its seal. Reads in one transaction (its own if the caller has none)."""
    with _reading(conn):
        if legacy_sealed(conn):
            return _check_legacy_hash(conn)
        return check_seal(conn, table_total(conn))


# --- lists stored before the seal (schema migration 4) ----------------------------------

_LEGACY_KEY = "allowlist_legacy_hash"
_SEAL_MIGRATION = 4


def legacy_sealed(conn: sqlite3.Connection) -> bool:
    """Whether the stored list still has the content hash of before the seal: a file that
    migration 4 marked (:func:`reseal_legacy` seals it), or one not yet migrated (a copy
    read read-only)."""
    try:
        version = schema.current_version(conn)
        if 0 < version < _SEAL_MIGRATION:  # 0: a bare store, not a gate's log (tests)
            return read_state(conn) is not None
        row = conn.execute("SELECT 1 FROM log_meta WHERE key = ?", (_LEGACY_KEY,)).fetchone()
    except sqlite3.OperationalError:  # a bare store without the log's tables (tests)
        return False
    return row is not None


def _check_legacy_hash(conn: sqlite3.Connection) -> Tampering | None:
    """The check of before the seal: the SHA-256 of every entry's data in (kind, id) order,
    when one was recorded (a consumption cleared it: then nothing can be checked)."""
    state = read_state(conn)
    if state is None or state.content_hash is None:
        return None
    digest = hashlib.sha256()
    for (data,) in conn.execute("SELECT CAST(data AS BLOB) FROM allowlist_entry ORDER BY kind, id"):
        digest.update(data)
    if digest.digest() == state.content_hash:
        return None
    return first_bad_entry(conn) or Tampering(
        "the entries' data do not match the content hash recorded before this software's"
        " upgrade: changed, added or removed outside edgegate"
    )


def reseal_legacy(conn: sqlite3.Connection) -> Tampering | None:
    """Seal a list stored before the seal, in the caller's transaction: checked as it was
    then, and, if it passes, sealed over every column as it stands. One that fails keeps
    its old hash, which the seal's check then refuses (it was changed outside edgegate).
    Returns what the old check found, if anything."""
    _require_transaction(conn)
    finding = _check_legacy_hash(conn)
    state = read_state(conn)
    if finding is None and state is not None:
        seal = seal_of(table_total(conn), state.version, state.updated_at, state.source)
        conn.execute("UPDATE allowlist_state SET content_hash = ? WHERE singleton = 1", (seal,))
    conn.execute("DELETE FROM log_meta WHERE key = ?", (_LEGACY_KEY,))
    return finding


def salvage(conn: sqlite3.Connection) -> tuple[AllowList, list[Tampering]]:
    """The entries of a tampered table that can still be read, and those left out (for a gate
    that runs on, every entry confirmed by a guard, until a snapshot replaces the list).

    Each entry is taken from its ``data`` alone (the codec bytes carry kind, id and plate):
    an entry whose plate column was edited is indexed under its own plate again. An entry
    whose data does not hold a valid credential, or repeats a (kind, id), is left out. The
    list's ``content_hash`` is None. Reads in one transaction (its own if the caller has
    none)."""
    with _reading(conn):
        state = read_state(conn)
        left_out: list[Tampering] = []
        entries: list[Credential] = []
        seen: set[tuple[str, str]] = set()
        for kind, id_, plate, data in conn.execute(
            "SELECT kind, id, plate, CAST(data AS BLOB) FROM allowlist_entry ORDER BY kind, id"
        ):
            where = (str(kind), str(id_), str(plate))
            credential, problem = decode_row(*where, bytes(data))
            if credential is None:
                left_out.append(Tampering(problem or "unreadable", *where))
            elif (credential.kind.value, credential.id) in seen:
                left_out.append(Tampering("repeats another entry's kind and id", *where))
            else:
                seen.add((credential.kind.value, credential.id))
                entries.append(credential)
    allowlist = AllowList.from_credentials(
        entries, state.version if state else 0, state.updated_at if state else None
    )
    return allowlist, left_out


@dataclass(frozen=True, slots=True, eq=False)
class PreparedSnapshot:
    """Snapshot entries checked, encoded and sorted: see ``prepare_snapshot``."""

    rows: list[Row]


def prepare_snapshot(entries: Iterable[Credential]) -> PreparedSnapshot:
    """The pure, expensive part of ``write_snapshot`` (about half its time at a million
    entries), to run before taking the writer's transaction so the event log is held up
    only by the SQL. ``AllowListError`` if any entry is invalid or a (kind, id) repeats."""
    problems: list[str] = []
    rows: list[Row] = []
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
    state = AllowListState(
        version, updated_at, source, seal_of(rows_total(rows), version, updated_at, source)
    )
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


def start_staging(conn: sqlite3.Connection) -> None:
    """Replace any staging table (and any table a swap retired) with an empty one. In the
    caller's transaction."""
    _require_transaction(conn)
    conn.execute(f"DROP TABLE IF EXISTS {_STAGING}")
    conn.execute(f"DROP TABLE IF EXISTS {_RETIRED}")
    conn.execute(f"CREATE TABLE {_STAGING} {_ENTRY_COLUMNS}")


def stage_rows(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
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

    Appointments consumed at this gate stay consumed (the seal counts them so).
    ``consumed`` narrows the search to these appointment ids
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
        total = int.from_bytes(staged.content_hash, "little")
        for id_ in sorted(set(consumed)):
            if not _stored_consumed(conn, id_):
                continue
            row = conn.execute(
                f"SELECT kind, id, plate, data FROM {_STAGING} WHERE kind = ? AND id = ?",
                (_APPOINTMENT, id_),
            ).fetchone()
            if row is None:
                continue
            old = (str(row[0]), str(row[1]), str(row[2]), bytes(row[3]))
            new = _still_consumed(old)
            if new[3] != old[3]:
                conn.execute(
                    f"UPDATE {_STAGING} SET data = ? WHERE kind = ? AND id = ?",
                    (new[3], _APPOINTMENT, id_),
                )
                total += term(new) - term(old)
        # Renames only: dropping a million rows here would hold the commit for a second or
        # more; ``clear_retired`` empties the old table in short transactions afterwards.
        conn.execute(f"DROP TABLE IF EXISTS {_RETIRED}")
        conn.execute(f"ALTER TABLE allowlist_entry RENAME TO {_RETIRED}")
        conn.execute(f"ALTER TABLE {_STAGING} RENAME TO allowlist_entry")
        state = AllowListState(
            version, updated_at, source, seal_of(total, version, updated_at, source)
        )
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
    """Insert or replace ``upserts`` and delete ``removals``, and record the state (the seal
    brought up to date from the rows changed). In the caller's transaction; never commits.
    ``AllowListError`` (nothing written) for the reasons ``AllowList.apply_delta`` gives."""
    _require_transaction(conn)
    problems: list[str] = []
    _check_updated_at(updated_at, problems)
    current = read_state(conn)
    current_version = current.version if current else 0
    if version <= current_version:
        problems.append(f"delta version {version} is not newer than {current_version}")
    rows: list[Row] = []
    replaced: list[Row] = []  # the stored rows the upserts and removals replace
    seen: set[tuple[str, str]] = set()
    for entry in upserts:
        row = _encode_row(entry, problems, seen)
        if row is not None:
            old = _stored_row(conn, row[0], row[1])
            if old is not None:
                replaced.append(old)
                if row[0] == _APPOINTMENT and _is_consumed(old[3]):
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
        else:
            old = _stored_row(conn, kind, id_)
            if old is None:
                problems.append(f"cannot remove {kind} {id_!r}: not in the allow-list")
            else:
                replaced.append(old)
        removed.add((kind, id_))
        deletions.append((kind, id_))
    if problems:
        raise AllowListError(problems)
    seal = resealed(conn, rows_total(rows) - rows_total(replaced), version, updated_at, source)
    state = AllowListState(version, updated_at, source, seal)
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
    row = _stored_row(conn, _APPOINTMENT, appointment_id)
    if row is None:
        raise AllowListError([f"unknown appointment {appointment_id!r}"])
    old = codec.decode(row[3])
    assert isinstance(old, Appointment)
    if old.consumed == consumed:
        return old
    new = dataclasses.replace(old, consumed=consumed)
    new_row = (*row[:3], codec.encode(new))
    with _savepoint(conn):
        conn.execute(
            "UPDATE allowlist_entry SET data = ? WHERE kind = ? AND id = ?",
            (new_row[3], _APPOINTMENT, appointment_id),
        )
        # The state is unchanged: only this row's term of the seal changes.
        sealed = conn.execute(
            "SELECT content_hash FROM allowlist_state WHERE singleton = 1"
        ).fetchone()
        if sealed is not None and is_seal(sealed[0]):
            total = int.from_bytes(sealed[0], "little") + term(new_row) - term(row)
            conn.execute(
                "UPDATE allowlist_state SET content_hash = ? WHERE singleton = 1",
                (to_seal(total),),
            )
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
        updated_at_ns = (state.updated_at - EPOCH) // MICROSECOND * 1000
    conn.execute(
        "INSERT INTO allowlist_state (singleton, version, updated_at_ns, source, content_hash)"
        " VALUES (1, ?, ?, ?, ?) ON CONFLICT (singleton) DO UPDATE SET"
        " version = excluded.version, updated_at_ns = excluded.updated_at_ns,"
        " source = excluded.source, content_hash = excluded.content_hash",
        (state.version, updated_at_ns, state.source, state.content_hash),
    )


def _encode_row(entry: Credential, problems: list[str], seen: set[tuple[str, str]]) -> Row | None:
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


def _still_consumed(row: Row) -> Row:
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
    row = _stored_row(conn, _APPOINTMENT, appointment_id)
    return row is not None and _is_consumed(row[3])


def _stored_row(conn: sqlite3.Connection, kind: str, id_: str) -> Row | None:
    row = conn.execute(
        "SELECT kind, id, plate, data FROM allowlist_entry WHERE kind = ? AND id = ?",
        (kind, id_),
    ).fetchone()
    if row is None:
        return None
    return str(row[0]), str(row[1]), str(row[2]), bytes(row[3])


@contextmanager
def _reading(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: the caller's, or one of its own rolled back afterwards."""
    own_transaction = not conn.in_transaction
    if own_transaction:
        conn.execute("BEGIN")
    try:
        yield
    finally:
        if own_transaction:
            conn.rollback()
