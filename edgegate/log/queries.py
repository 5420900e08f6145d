"""Named reads of the events table, for the modules that read the log beside ``LogReader``.

Only ``edgegate.log`` writes SQL against the events table (a test holds every other module to
that), so a change of its schema is made here. Each function takes an open connection to a
log file (``eventlog.connect``, the writer's connection inside ``run_in_writer``, or a
``LogReader`` through its methods) and never commits or closes it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

ROW_COLUMNS = (
    "seq, wall_ns, mono_ns, boot_id, type, lane, version,"
    " CAST(data AS BLOB), CAST(prev_hash AS BLOB), CAST(hash AS BLOB)"
)
"""The columns of a stored row in ``Row`` order. Blobs are cast: a payload edited with ``||``
is stored as text, which sqlite3 would fail to decode as UTF-8; cast, it reaches the hash check
as the bytes it now holds, and verify (or central) names its seq."""

TypedRow = tuple[int, int, str, str | None, int, bytes]
"""``(seq, wall_ns, type, lane, version, data)``: what ``events.decode`` (and presence) need."""


def has_events(conn: sqlite3.Connection) -> bool:
    """Whether the file holds an events table (an allow-list file may be used without one)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    ).fetchone()
    return row is not None


def last_seq(conn: sqlite3.Connection) -> int:
    """The highest seq in the log, 0 when it is empty."""
    return int(conn.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0)


def rows_after(conn: sqlite3.Connection, after: int, limit: int) -> sqlite3.Cursor:
    """A cursor over the rows (``ROW_COLUMNS``) with ``seq > after``, in order, at most
    ``limit``; the caller fetches from it (and closes it when it stops early)."""
    return conn.execute(
        f"SELECT {ROW_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
    )


def of_types(
    conn: sqlite3.Connection, types: Sequence[str], *, from_seq: int = 1
) -> Iterator[TypedRow]:
    """The events of ``types`` with ``seq >= from_seq``, in seq order, as ``TypedRow``.

    A scan: there is no index on type, so callers bound it with ``from_seq`` where they can
    (``first_seq_since``)."""
    return _select_types(conn, "seq, wall_ns, type, lane, version, data", types, from_seq)


def _select_types(
    conn: sqlite3.Connection, columns: str, types: Sequence[str], from_seq: int
) -> Iterator[Any]:
    if not types:
        return iter(())
    marks = ", ".join("?" * len(types))
    return iter(
        conn.execute(
            f"SELECT {columns} FROM events WHERE seq >= ? AND type IN ({marks}) ORDER BY seq",
            (from_seq, *types),
        )
    )


ClockedRow = tuple[int, int, int, str, bytes]
"""``(seq, wall_ns, mono_ns, boot_id, data)``: an event's payload with both its clocks."""


def clocked_of_types(
    conn: sqlite3.Connection, types: Sequence[str], *, from_seq: int = 1
) -> Iterator[ClockedRow]:
    """Like ``of_types``, with the monotonic time and boot id instead of type, lane, version:
    for projections that measure durations on the monotonic clock (presence)."""
    return _select_types(conn, "seq, wall_ns, mono_ns, boot_id, data", types, from_seq)


def first_seq_since(conn: sqlite3.Connection, wall_ns: int) -> int:
    """The first seq whose wall time is at or after ``wall_ns`` (binary search: the log's wall
    times rise with seq but for clock steps, which callers' margins absorb); one past the head
    if none."""
    lo, hi = conn.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
    if lo is None:
        return 1
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            "SELECT seq, wall_ns FROM events WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)
        ).fetchone()
        if row is None or row[1] >= wall_ns:
            hi = mid
        else:
            lo = int(row[0]) + 1
    return int(lo)


def last_seq_before(conn: sqlite3.Connection, wall_ns: int) -> int:
    """The highest seq whose wall time is before ``wall_ns`` (0 if none); one scan in SQLite,
    exact whatever the clock did."""
    row = conn.execute("SELECT max(seq) FROM events WHERE wall_ns < ?", (wall_ns,)).fetchone()
    return int(row[0] or 0)
