"""The gate's allow-list as the shell owns it: the in-memory projection the policy reads, and
its SQLite rows, changed only in the transaction that appends the event explaining the change.

Every change is ``validate -> append event with the SQL as its effect -> swap in memory``: if
the commit fails, neither the rows nor the projection change, and the event is not in the log.

A stored list that fails its integrity check when opened (changed outside edgegate) is logged
as ``allowlist.tampered`` naming the first bad entry; the service then holds what can still be
read, marked tampered (the policy has a guard confirm every entry), until a snapshot replaces
it. Deltas leave it tampered.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from edgegate.allowlist import store
from edgegate.core.allowlist import AllowList, AllowListError
from edgegate.core.codec import ns_to_datetime
from edgegate.core.domain import Credential, CredentialKind, InsideElsewhere
from edgegate.core.events import AllowListTampered, AllowListUpdated, AllowListUpdateKind, Event
from edgegate.log import EventLog
from edgegate.log.eventlog import connect
from edgegate.observability import get_logger

log = get_logger("allowlist")

T = TypeVar("T")


MAX_VERSION = 2**63 - 1
"""The largest version the log and the store can hold (SQLite's INTEGER)."""


class VersionError(AllowListError):
    """A version that does not move the list forward: not above the current one, or above
    ``MAX_VERSION``. Nothing was changed."""

    def __init__(self, version: int, current: int) -> None:
        self.version = version
        self.current = current
        if version > MAX_VERSION:
            why = (
                f"version {version} is above the largest allowed ({MAX_VERSION}); "
                f"the current version is {current}"
            )
        else:
            why = f"version {version} is not newer than the current version {current}"
        super().__init__([why])


def check_version(version: int | None, current: int, *, restoring: bool = False) -> int:
    """The version a change gets: ``current + 1`` by default; ``VersionError`` unless it is
    above ``current`` and at most ``MAX_VERSION`` (versions only move forward). ``restoring``:
    a snapshot replacing a tampered list may also be of the current version."""
    chosen = current + 1 if version is None else version
    lowest = current if restoring else current + 1
    if chosen < lowest or chosen > MAX_VERSION:
        raise VersionError(chosen, current)
    return chosen


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
    return _read(path, store.load)


def salvage_file(path: str) -> tuple[AllowList, list[store.Tampering]]:
    """``store.salvage`` of the log file at ``path`` (read-only)."""
    return _read(path, store.salvage)


def _read(path: str, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn`` on a read-only connection to the log file at ``path``."""
    conn = connect(path, readonly=True)
    try:
        return fn(conn)
    finally:
        conn.close()


STAGE_ROWS = 5_000
"""Entries a snapshot stages per writer transaction: each holds the log's writer (and so a
lane's next event) for tens of milliseconds, not seconds for the whole list."""
MAX_INSIDE = 100_000
"""Vehicles central says are inside elsewhere a gate keeps at most: beyond, expired ones go
first, then the oldest marks."""
DEFAULT_INSIDE_MAX_AGE_NS = 24 * 3600 * 10**9


def _consumed_in_file(path: str) -> set[str]:
    return _read(path, store.consumed_appointments)


class AllowListService:
    """Owns the allow-list projection of one gate; all changes go through the event log.

    Snapshots and deltas are applied one at a time, in the order they were asked for;
    consuming an appointment never waits for them.
    """

    def __init__(
        self, event_log: EventLog, allowlist: AllowList, *, stage_rows: int = STAGE_ROWS
    ) -> None:
        self._log = event_log
        self._list = allowlist
        self._stage_rows = stage_rows
        self._changes = asyncio.Lock()
        # While a snapshot is being swapped in: appointments (un)consumed since its scan of
        # consumed ones began; the swap checks them as well as the scanned ones, without
        # decoding every appointment.
        self._touched: set[str] | None = None
        # Vehicles central saw enter at another gate and not leave (its park chain), oldest
        # mark first, with the entry time in ns; in memory only (after a restart the park
        # chain's resend rebuilds them), at most MAX_INSIDE, forgotten after a max age.
        self._inside: dict[str, tuple[InsideElsewhere, int]] = {}
        # Plates that passed this gate, and when (ns): a later-arriving mark of an entry
        # before that is old news.
        self._passed: dict[str, int] = {}
        self._gate_id: str | None = None
        self._inside_max_age_ns = DEFAULT_INSIDE_MAX_AGE_NS
        self._now_ns: Callable[[], int] | None = None

    def configure_presence(self, gate_id: str, max_age_ns: int, now_ns: Callable[[], int]) -> None:
        """Marks naming ``gate_id`` are ignored; a mark older than ``max_age_ns`` (by
        ``now_ns``, the gate's wall clock) is forgotten."""
        self._gate_id = gate_id
        self._inside_max_age_ns = max_age_ns
        self._now_ns = now_ns

    def inside_elsewhere(self, plate: str) -> InsideElsewhere | None:
        """Where and when central saw ``plate`` enter at another gate and not leave (within
        the max age). A dict lookup: on the lane's decision path."""
        found = self._inside.get(plate)
        if found is None:
            return None
        if self._now_ns is not None and self._now_ns() - found[1] > self._inside_max_age_ns:
            del self._inside[plate]
            return None
        return found[0]

    def passed_here(self, plate: str) -> None:
        """``plate`` passed this gate (either way): whatever central said of it is old."""
        self._inside.pop(plate, None)
        if plate and self._now_ns is not None:
            self._passed.pop(plate, None)
            self._passed[plate] = self._now_ns()
            if len(self._passed) > MAX_INSIDE:
                del self._passed[next(iter(self._passed))]

    def note_presence(self, inside: Iterable[tuple[str, str, int]], left: Iterable[str]) -> int:
        """Central's marks of one park message, in chain order: ``inside`` ``(plate, gate,
        entered_at_ns)`` and ``left`` plates. Marks naming this gate, older than the max age,
        or of an entry before the plate's last pass here are ignored; how many were older
        than the max age (by this gate's clock)."""
        now = self._now_ns() if self._now_ns is not None else None
        too_old = 0
        for plate in left:
            self._inside.pop(plate, None)
        for plate, gate, at_ns in inside:
            self._inside.pop(plate, None)  # re-inserted as the newest (or dropped)
            if gate == self._gate_id or at_ns <= self._passed.get(plate, -1):
                continue
            if now is not None and now - at_ns > self._inside_max_age_ns:
                too_old += 1
                continue
            mark = InsideElsewhere(gate=gate, entered_at=ns_to_datetime(at_ns))
            self._inside[plate] = (mark, at_ns)
        if len(self._inside) > MAX_INSIDE and now is not None:
            for plate in [
                p for p, (_, at) in self._inside.items() if now - at > self._inside_max_age_ns
            ]:
                del self._inside[plate]
        while len(self._inside) > MAX_INSIDE:
            del self._inside[next(iter(self._inside))]
        return too_old

    def consumable(self, ids: Iterable[str]) -> list[str]:
        """Those of ``ids`` this list holds as appointments not consumed yet."""
        out = []
        for id_ in dict.fromkeys(ids):
            held = self._list.get(CredentialKind.APPOINTMENT, id_)
            if held is not None and not getattr(held, "consumed", False):
                out.append(id_)
        return out

    async def consume_elsewhere(
        self,
        ids: list[str],
        event: Event,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> int:
        """Mark appointments ``ids`` (held, from ``consumable``) consumed because another
        gate consumed them, appending ``event`` that says so in the same transaction (and
        running ``also`` in it); its seq."""

        def effect(conn: sqlite3.Connection, _seq: int) -> None:
            for id_ in ids:
                store.set_appointment_consumed(conn, id_, True)
            if also is not None:
                also(conn)

        if self._touched is not None:
            self._touched.update(ids)
        seq = await self._log.append(event, effect=effect)
        for id_ in ids:
            self._list.consume_appointment(id_)
        return seq

    @classmethod
    async def open(cls, event_log: EventLog, *, stage_rows: int = STAGE_ROWS) -> AllowListService:
        """Load the stored list (from a reader connection, not holding up the writer). A list
        that fails its integrity check is logged (``allowlist.tampered``) and what can still
        be read is held, marked tampered."""
        path = str(event_log.path)
        if await asyncio.to_thread(_read, path, store.legacy_sealed):
            # Stored by a version before the seal: checked the old way once, then sealed.
            found = await event_log.run_in_writer(store.reseal_legacy)
            log.info("allowlist_resealed", passed_old_check=found is None)
        try:
            allowlist = await asyncio.to_thread(load_from_file, path)
        except store.AllowListTamperedError as exc:
            allowlist = await _open_tampered(event_log, exc)
        else:
            log.info("allowlist_loaded", version=allowlist.version, entries=len(allowlist))
        return cls(event_log, allowlist, stage_rows=stage_rows)

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

        ``version`` defaults to the current one plus one and must be newer than it
        (``VersionError``); ``updated_at`` defaults to now. Appointments already consumed at
        this gate stay consumed.
        """
        entries = list(entries)
        async with self._changes:
            previous = self._list.version
            version = check_version(version, previous, restoring=self._list.tampered)
            updated_at = updated_at or datetime.now(UTC)
            # Validation and encoding off the event loop; AllowListError here changes nothing.
            prepared = await asyncio.to_thread(store.prepare_snapshot, entries)
            content_hash = await asyncio.to_thread(store.rows_hash, prepared.rows)
            try:
                staged = await self._stage(prepared, content_hash)
            except Exception:
                await self._drop_staging()
                raise
            event = AllowListUpdated(
                kind=AllowListUpdateKind.SNAPSHOT,
                version=version,
                previous_version=previous,
                source=source,
                upserted=len(entries),
                removed=0,
                entries=len(entries),
                content_hash=content_hash.hex(),
            )

            touched = self._touched = set()
            try:
                scanned = await asyncio.to_thread(_consumed_in_file, str(self._log.path))

                def effect(conn: sqlite3.Connection, _seq: int) -> None:
                    # In the writer, after every consumption queued before this event.
                    consumed = scanned | set(touched)
                    store.swap_in_staged(conn, staged, version, updated_at, source, consumed)

                seq = await self._log.append(event, effect=effect)
            except Exception:
                await self._drop_staging()
                raise
            finally:
                self._touched = None
            # Rebuild from what was committed (appointments consumed here stay consumed) and
            # swap in one assignment: lanes keep deciding on the old list, whole, until then.
            self._list = await asyncio.to_thread(load_from_file, str(self._log.path))
            clear = functools.partial(store.clear_retired, rows=self._stage_rows)
            while not await self._log.run_in_writer(clear):
                pass
        log.info(
            "allowlist_replaced", seq=seq, version=version, entries=len(entries), source=source
        )
        return UpdateResult(seq, version, previous, len(entries), len(entries), 0)

    async def _drop_staging(self) -> None:
        """Give back the space of a snapshot that failed (best effort: the next one drops it
        anyway)."""
        try:
            await self._log.run_in_writer(store.drop_staging)
        except Exception as exc:
            log.warning("allowlist_staging_not_dropped", error=repr(exc))

    async def _stage(
        self, prepared: store.PreparedSnapshot, content_hash: bytes
    ) -> store.StagedSnapshot:
        """Write the snapshot's rows into the staging table, a writer transaction per chunk."""
        rows = prepared.rows
        await self._log.run_in_writer(store.start_staging)
        for start in range(0, len(rows), self._stage_rows):
            chunk = rows[start : start + self._stage_rows]
            await self._log.run_in_writer(functools.partial(store.stage_rows, rows=chunk))
        return store.StagedSnapshot(len(rows), content_hash)

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
        with every problem, changes nothing; ``VersionError`` as for ``replace``)."""
        upserts = list(upserts)
        removals = list(removals)
        async with self._changes:
            return await self._apply_delta(upserts, removals, source, version, updated_at)

    async def _apply_delta(
        self,
        upserts: list[Credential],
        removals: list[tuple[CredentialKind, str]],
        source: str,
        version: int | None,
        updated_at: datetime | None,
    ) -> UpdateResult:
        previous = self._list.version
        version = check_version(version, previous)
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

        if self._touched is not None:
            self._touched.add(appointment_id)

        seq = await self._log.append(event, effect=effect)
        if consumed:
            self._list.consume_appointment(appointment_id)
        else:
            self._list.release_appointment(appointment_id)
        return seq


async def _open_tampered(event_log: EventLog, exc: store.AllowListTamperedError) -> AllowList:
    """Log that the stored list failed its check, and return what can still be read of it,
    marked tampered."""
    allowlist, unreadable = await asyncio.to_thread(salvage_file, str(event_log.path))
    allowlist.mark_tampered()
    left_out = len(unreadable)
    found = exc.finding
    seq = await event_log.append(
        AllowListTampered(
            version=exc.version,
            problem=found.problem,
            credential_kind=found.kind,
            credential_id=found.id,
            plate=found.plate,
            entries=len(allowlist),
            left_out=left_out,
        )
    )
    log.error(
        "allowlist_tampered",
        seq=seq,
        version=exc.version,
        first_bad_entry=str(found),
        entries=len(allowlist),
        left_out=left_out,
        consequence="every entry needs a guard until a snapshot replaces the list",
    )
    return allowlist
