"""Versioned schema migrations of a gate's SQLite file (events, allow-list, positions).

Run by the shared runner (:mod:`edgegate.migrations`): each migration once, in its own
transaction, recorded in ``schema_migrations``. A file written by newer software (a higher
version than known here) is refused, not guessed.
"""

from __future__ import annotations

import sqlite3

from edgegate import migrations as runner
from edgegate.migrations import Migration, split_statements

__all__ = [
    "LATEST",
    "MIGRATIONS",
    "Migration",
    "SchemaError",
    "current_version",
    "migrate",
    "split_statements",
]

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
    Migration(
        5,
        "retention: events copied into a sealed segment may leave the active file",
        # Only rows at or below the recorded sealed-through seq may be deleted (the retention
        # deletes them once their segment file is durable and verified, docs/design.md §4);
        # the retention marks only ever rise and are never deleted. ``log_segment``: every
        # sealed range, for archiving (its age) and removal (the anchor it leaves).
        """
        DROP TRIGGER events_no_delete;
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        WHEN OLD.seq > COALESCE(
            (SELECT CAST(value AS INTEGER) FROM log_meta WHERE key = 'sealed_through'), 0)
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END;
        CREATE TRIGGER log_meta_marks_rise BEFORE UPDATE ON log_meta
        WHEN OLD.key IN ('sealed_through', 'archived_through', 'removed_through')
            AND CAST(NEW.value AS INTEGER) < CAST(OLD.value AS INTEGER)
        BEGIN SELECT RAISE(ABORT, 'the log retention marks only rise'); END;
        CREATE TRIGGER log_meta_marks_kept BEFORE DELETE ON log_meta
        WHEN OLD.key IN ('gate_id', 'sealed_through', 'sealed_hash', 'archived_through',
            'removed_through', 'removed_hash')
        BEGIN SELECT RAISE(ABORT, 'the log metadata is never deleted'); END;
        CREATE TABLE log_segment (
            first_seq INTEGER PRIMARY KEY,
            last_seq INTEGER NOT NULL,
            last_hash BLOB NOT NULL,
            last_wall_ns INTEGER NOT NULL
        );
        """,
    ),
)

LATEST = MIGRATIONS[-1].version


class SchemaError(RuntimeError):
    """The file's schema cannot be used by this software."""


def _newer(version: int, known: int) -> SchemaError:
    return SchemaError(
        f"the log's schema is version {version}, newer than this software knows "
        f"({known}); upgrade edgegate rather than open it with an older one"
    )


def current_version(conn: sqlite3.Connection) -> int:
    """The file's schema version (0 before the first migration); reads only."""
    return runner.current_version(runner.SqliteDb(conn))


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Bring the schema up to date; return the version reached. ``conn`` is in autocommit."""
    # INTEGER: the type the log's ledger was created with (central's says BIGINT).
    return runner.migrate(runner.SqliteDb(conn), migrations, newer=_newer, time_type="INTEGER")
