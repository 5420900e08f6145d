"""Editing a gate's log behind edgegate's back, as an intruder or a careless admin would."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

EVENT_TRIGGERS = ("events_no_update", "events_no_delete")


@contextmanager
def tampering(
    path: Path, *, triggers: Sequence[str] = EVENT_TRIGGERS, restore: bool = False
) -> Iterator[sqlite3.Connection]:
    """A connection to the log at ``path`` with its append-only ``triggers`` dropped; committed
    on leaving. With ``restore`` the triggers are put back as they were, so only the data is
    wrong; without, verification also finds them missing."""
    with closing(sqlite3.connect(path)) as conn:
        kept = []
        for name in triggers:
            (sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (name,)
            ).fetchone()
            kept.append(sql)
            conn.execute(f'DROP TRIGGER "{name}"')
        yield conn
        if restore:
            for sql in kept:
                conn.execute(sql)
        conn.commit()


def tamper(path: Path, sql: str, *params: object) -> None:
    """Run one statement on the log at ``path``, leaving its append-only triggers dropped."""
    with tampering(path) as conn:
        conn.execute(sql, params)
