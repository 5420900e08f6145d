"""Versioned schema migrations of a gate's SQLite file (events, allow-list, positions).

Each migration runs once, in its own transaction, and is recorded in ``schema_migrations``.
A file written by newer software (a higher version than known here) is refused, not guessed.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "event log, append-only triggers, gate metadata",
        """
        CREATE TABLE log_meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            wall_ns INTEGER NOT NULL,
            mono_ns INTEGER NOT NULL,
            boot_id TEXT NOT NULL,
            type TEXT NOT NULL,
            lane TEXT,
            version INTEGER NOT NULL,
            data BLOB NOT NULL,
            prev_hash BLOB NOT NULL,
            hash BLOB NOT NULL
        );
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END;
        CREATE TRIGGER log_meta_gate_fixed BEFORE UPDATE ON log_meta WHEN OLD.key = 'gate_id'
        BEGIN SELECT RAISE(ABORT, 'the gate id of a log never changes'); END;
        CREATE TABLE projection_position (
            name TEXT PRIMARY KEY,
            seq INTEGER NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "allow-list projection",
        """
        CREATE TABLE allowlist_entry (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            plate TEXT NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (kind, id)
        ) WITHOUT ROWID;
        CREATE INDEX allowlist_entry_plate ON allowlist_entry (plate);
        CREATE TABLE allowlist_state (
            singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
            version INTEGER NOT NULL,
            updated_at_ns INTEGER,
            source TEXT NOT NULL,
            content_hash BLOB
        );
        """,
    ),
    Migration(
        3,
        "no plate index on the allow-list table (lookups are in memory)",
        """
        DROP INDEX IF EXISTS allowlist_entry_plate;
        """,
    ),
    Migration(
        4,
        "allow-list sealed over every column: a list stored before is marked for resealing",
        # The old content hash covered the entries' data only (and was cleared by any
        # consumption). The allow-list store checks it once more and reseals the list the
        # first time the daemon opens the file (edgegate.allowlist.store.reseal_legacy).
        """
        INSERT OR REPLACE INTO log_meta (key, value)
        SELECT 'allowlist_legacy_hash', '1' WHERE EXISTS (SELECT 1 FROM allowlist_state);
        """,
    ),
)

LATEST = MIGRATIONS[-1].version


class SchemaError(RuntimeError):
    """The file's schema cannot be used by this software."""


def current_version(conn: sqlite3.Connection) -> int:
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not has_table:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Bring the schema up to date; return the version reached. ``conn`` is in autocommit."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ns INTEGER NOT NULL)"
    )
    version = current_version(conn)
    known = migrations[-1].version if migrations else 0
    if version > known:
        raise SchemaError(
            f"the log's schema is version {version}, newer than this software knows "
            f"({known}); upgrade edgegate rather than open it with an older one"
        )
    for m in migrations:
        if m.version <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in split_statements(m.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at_ns) VALUES (?, ?, ?)",
                (m.version, m.name, time.time_ns()),
            )
            conn.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself on some errors (a full disk): keep the first error.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        version = m.version
    return version


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buf = ""
    for line in sql.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
