"""One schema-migration runner for the gate's log and central's store, on any backend.

A migration is a version, a name and a SQL script for the database at hand. :func:`migrate`
runs each one not yet applied once, in its own transaction, and records it in the
``schema_migrations`` table; a database recorded at a version newer than the software knows
is refused, not guessed at. The runner sees the database only through :class:`MigrationDb`:
:class:`SqliteDb` here (sqlite3 is the standard library, and both the gate's log and
central's SQLite store use it); the PostgreSQL adapter lives with the PostgreSQL store, the
only module that imports psycopg.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

LEDGER = "schema_migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    """A script of one or more statements in the backend's dialect."""


class MigrationDb(Protocol):
    """What the runner needs of a database connection (``?`` placeholders)."""

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """A write transaction that also keeps concurrent migrators out until it ends:
        committed on normal exit, rolled back otherwise."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> None: ...

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        """The first column of the first row (None without rows)."""

    def script(self, sql: str) -> None:
        """Run a script of several statements inside the current transaction."""

    def table_exists(self, name: str) -> bool: ...


def ledger_ddl(time_type: str) -> str:
    """``CREATE TABLE`` of the ledger; ``time_type`` is what each database was created with
    (the gate's log says INTEGER, central's store BIGINT) so their schemas stay as they are."""
    return (
        f"CREATE TABLE IF NOT EXISTS {LEDGER} ("
        f" version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ns {time_type} NOT NULL)"
    )


def current_version(db: MigrationDb) -> int:
    """The highest version recorded; 0 for a database without a ledger (writes nothing)."""
    if not db.table_exists(LEDGER):
        return 0
    return int(db.scalar(f"SELECT MAX(version) FROM {LEDGER}") or 0)


def migrate(
    db: MigrationDb,
    migrations: Sequence[Migration],
    *,
    newer: Callable[[int, int], Exception],
    time_type: str = "BIGINT",
    clock: Callable[[], int] = time.time_ns,
) -> int:
    """Bring ``db`` up to the last of ``migrations``; return the version reached.

    ``newer(found, known)`` is the exception raised for a database recorded at a version
    above the last known one. Each migration's transaction re-reads the version, so several
    processes migrating one database at once apply each migration exactly once.
    """
    known = migrations[-1].version if migrations else 0

    def version_now() -> int:
        version = current_version(db)
        if version > known:
            raise newer(version, known)
        return version

    with db.transaction():
        db.execute(ledger_ddl(time_type))
        version = version_now()
    for m in migrations:
        if m.version <= version:
            continue
        with db.transaction():
            version = version_now()
            if m.version <= version:
                continue  # another process applied it meanwhile
            db.script(m.sql)
            db.execute(
                f"INSERT INTO {LEDGER} (version, name, applied_at_ns) VALUES (?, ?, ?)",
                (m.version, m.name, clock()),
            )
            version = m.version
    return version


# --- SQLite --------------------------------------------------------------------------------


class SqliteDb:
    """:class:`MigrationDb` over a ``sqlite3`` connection in autocommit mode
    (``isolation_level=None``); ``BEGIN IMMEDIATE`` takes the write lock up front."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself on some errors (a full disk): keep the first error.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self.conn.execute(sql, params)

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def script(self, sql: str) -> None:
        # Not executescript(): it commits first, and the migration must stay one transaction.
        for statement in split_statements(sql):
            self.conn.execute(statement)

    def table_exists(self, name: str) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()
            is not None
        )


def split_statements(sql: str) -> list[str]:
    """Split a SQLite script into statements, keeping trigger bodies and literals whole."""
    out: list[str] = []
    buf = ""
    *ends, rest = sql.split(";")
    for piece in ends:
        buf += piece + ";"
        if sqlite3.complete_statement(buf):  # not a ';' inside a trigger, literal or comment
            out.append(buf.strip())
            buf = ""
    buf += rest
    if buf.strip():
        out.append(buf.strip())
    return out
