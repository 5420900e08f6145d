"""Editing central's store behind its back (SQLite or PostgreSQL), as an intruder would."""

from __future__ import annotations

import sqlite3

import psycopg

from edgegate.central.store import sqlite_path


def raw_execute(dsn: str, sql: str) -> None:
    """Run ``sql`` on the store's database behind its back (to simulate tampering)."""
    if dsn.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(dsn), isolation_level=None)
        try:
            conn.executescript(sql)
        finally:
            conn.close()
    else:
        with psycopg.connect(dsn, autocommit=True) as pg:
            pg.execute(sql.encode())


def overwrite_event_data(dsn: str, gate: str, seq: int) -> None:
    """Replace the payload of ``gate``'s event ``seq`` by one zero byte, the store's
    append-only triggers dropped (SQLite) or disabled (PostgreSQL) first."""
    if dsn.startswith("sqlite"):
        off = "DROP TRIGGER IF EXISTS gate_events_no_update;"
        data = "x'00'"
    else:
        off = "ALTER TABLE gate_events DISABLE TRIGGER gate_events_append_only;"
        data = "'\\x00'::bytea"
    raw_execute(
        dsn, f"{off}UPDATE gate_events SET data = {data} WHERE gate = '{gate}' AND seq = {seq};"
    )
