"""The gate's allow-list as the shell owns it: the in-memory projection the policy reads, and
its SQLite rows, changed only in the transaction that appends the event explaining the change.

Every change is ``validate -> append event with the SQL as its effect -> swap in memory``: if
the commit fails, neither the rows nor the projection change, and the event is not in the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from edgegate.allowlist import store
from edgegate.core.allowlist import AllowList
from edgegate.core.domain import Credential, CredentialKind
from edgegate.core.events import AllowListUpdated, AllowListUpdateKind, Event
from edgegate.log import EventLog
from edgegate.log.eventlog import connect
from edgegate.observability import get_logger

log = get_logger("allowlist")


@dataclass(frozen=True, slots=True)
class UpdateResult:
    seq: int  # of the allowlist.updated event
    version: int
    previous_version: int
    entries: int
    upserted: int
    removed: int


def load_from_file(path: str) -> AllowList:
    """The allow-list stored in a gate's log file (read-only; safe beside a running daemon)."""
    conn = connect(path, readonly=True)
    try:
        return store.load(conn)
    finally:
        conn.close()


def _content_hash(rows: Sequence[tuple[str, str, str, bytes]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row[3])
    return digest.hexdigest()


class AllowListService:
    """Owns the allow-list projection of one gate; all changes go through the event log."""

    def __init__(self, event_log: EventLog, allowlist: AllowList) -> None:
        self._log = event_log
        self._list = allowlist

    @classmethod
    async def open(cls, event_log: EventLog) -> AllowListService:
        """Load the stored list (from a reader connection, not holding up the writer)."""
        allowlist = await asyncio.to_thread(load_from_file, str(event_log.path))
        log.info("allowlist_loaded", version=allowlist.version, entries=len(allowlist))
        return cls(event_log, allowlist)

    @property
    def view(self) -> AllowList:
        """The current projection; replaced (never mutated behind a reader) by snapshots."""
        return self._list

    async def replace(
        self,
        entries: Iterable[Credential],
        *,
        source: str,
        version: int | None = None,
        updated_at: datetime | None = None,
    ) -> UpdateResult:
        """Replace the whole list with a snapshot (``AllowListError`` if any entry is bad).

        ``version`` defaults to the current one plus one; ``updated_at`` to now. Appointments
        already consumed at this gate stay consumed.
        """
        entries = list(entries)
        previous = self._list.version
        version = previous + 1 if version is None else version
        updated_at = updated_at or datetime.now(UTC)
        # Validation and encoding off the event loop; AllowListError here changes nothing.
        prepared = await asyncio.to_thread(store.prepare_snapshot, entries)
        event = AllowListUpdated(
            kind=AllowListUpdateKind.SNAPSHOT,
            version=version,
            previous_version=previous,
            source=source,
            upserted=len(entries),
            removed=0,
            entries=len(entries),
            content_hash=_content_hash(prepared.rows),
        )

        def effect(conn: sqlite3.Connection, _seq: int) -> None:
            store.write_snapshot(conn, prepared, version, updated_at, source)

        seq = await self._log.append(event, effect=effect)
        # Rebuild from what was committed (appointments consumed here stay consumed) and swap
        # in one assignment: lanes keep deciding on the old list, whole, until then.
        self._list = await asyncio.to_thread(load_from_file, str(self._log.path))
        log.info(
            "allowlist_replaced", seq=seq, version=version, entries=len(entries), source=source
        )
        return UpdateResult(seq, version, previous, len(entries), len(entries), 0)

    async def apply_delta(
        self,
        upserts: Iterable[Credential],
        removals: Iterable[tuple[CredentialKind, str]],
        *,
        source: str,
        version: int | None = None,
        updated_at: datetime | None = None,
    ) -> UpdateResult:
        """Insert or replace ``upserts`` and drop ``removals`` atomically (``AllowListError``,
        with every problem, changes nothing)."""
        upserts = list(upserts)
        removals = list(removals)
        previous = self._list.version
        version = previous + 1 if version is None else version
        updated_at = updated_at or datetime.now(UTC)
        new_keys = {(c.kind, c.id) for c in upserts if self._list.get(c.kind, c.id) is None}
        size_after = len(self._list) + len(new_keys) - len(removals)
        digest = hashlib.sha256()
        for credential in upserts:
            digest.update(f"+{credential.kind}:{credential.id}\n".encode())
        for kind, id_ in removals:
            digest.update(f"-{kind}:{id_}\n".encode())
        event = AllowListUpdated(
            kind=AllowListUpdateKind.DELTA,
            version=version,
            previous_version=previous,
            source=source,
            upserted=len(upserts),
            removed=len(removals),
            entries=size_after,
            content_hash=digest.hexdigest(),
        )

        def effect(conn: sqlite3.Connection, _seq: int) -> None:
            store.write_delta(conn, upserts, removals, version, updated_at, source)

        # The store refuses exactly what the in-memory list refuses: a bad delta fails here,
        # before anything is committed or changed in memory.
        seq = await self._log.append(event, effect=effect)
        # Synchronous on the loop: no lane sees a half-applied delta.
        self._list.apply_delta(upserts, removals, version, updated_at)
        log.info(
            "allowlist_delta_applied",
            seq=seq,
            version=version,
            upserted=len(upserts),
            removed=len(removals),
            source=source,
        )
        return UpdateResult(seq, version, previous, len(self._list), len(upserts), len(removals))

    async def append_with_consumption(
        self, event: Event, appointment_id: str, *, consumed: bool
    ) -> int:
        """Append ``event`` (a pass or a back-out) and mark the appointment it consumes or
        releases, in the same transaction."""

        def effect(conn: sqlite3.Connection, _seq: int) -> None:
            store.set_appointment_consumed(conn, appointment_id, consumed)

        seq = await self._log.append(event, effect=effect)
        if consumed:
            self._list.consume_appointment(appointment_id)
        else:
            self._list.release_appointment(appointment_id)
        return seq
