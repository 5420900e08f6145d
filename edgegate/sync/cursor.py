"""The synced cursor: the highest seq central has acknowledged as stored, kept in the log file.

It is the ``projection_position`` row ``sync.central``, written only in the log's writer
thread (``EventLog.run_in_writer``), so it commits in log order with the events it refers
to. It only moves forward and never beyond the log's head: an ack can only promise events
the gate has.
"""

from __future__ import annotations

import sqlite3

from edgegate.log.queries import last_seq

CURSOR_NAME = "sync.central"


class CursorError(ValueError):
    """A cursor value that cannot be stored (above the log's head)."""


def read_cursor(conn: sqlite3.Connection, name: str = CURSOR_NAME) -> int:
    """The stored cursor, 0 when there is none yet."""
    row = conn.execute("SELECT seq FROM projection_position WHERE name = ?", (name,)).fetchone()
    return 0 if row is None else int(row[0])


def write_cursor(conn: sqlite3.Connection, seq: int, name: str = CURSOR_NAME) -> int:
    """Advance the cursor to ``seq`` (a lower value leaves it as is); return the stored value.

    Runs inside the writer's transaction. Raises ``CursorError`` if ``seq`` is above the
    highest seq in the log.
    """
    head = last_seq(conn)
    if seq > head:
        raise CursorError(f"cursor {seq} is above the log's head {head}")
    conn.execute(
        "INSERT INTO projection_position (name, seq) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq "
        "WHERE excluded.seq > projection_position.seq",
        (name, seq),
    )
    return read_cursor(conn, name)
