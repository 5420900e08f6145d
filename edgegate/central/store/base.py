"""The store's contract and all its logic; a backend supplies only dialect hooks.

(Over 600 lines: ``CentralStore`` is the one public face of the store. Each area's SQL is
in its own module (projections, blacklist, publications, parkentry, checks); what stays here
is the write path (chaining onto each gate's head, forks, dead letters), whose transaction
the areas join, and one thin method per operation binding an area to a transaction.)

``CentralStore`` implements every operation the sink, ``central pull``, ``central command
--wait`` (the gate's replies) and the benchmarks use, on top of a few abstract hooks
(transactions, statements, bulk insert, head locking) that ``sqlite.py`` and ``postgres.py``
implement. The guarantees are in the package's docstring (:mod:`edgegate.central.store`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar, TypeVar, cast

from edgegate.central.store import blacklist, parkentry, projections, publications
from edgegate.central.store.checks import (
    check_decoded,
    check_rows,
    clean_text,
    dead_payload,
    gate_problem,
)
from edgegate.central.store.model import (
    AdmissionReview,
    Batch,
    DeadLetter,
    DeadLetterDrops,
    DeadLetterLimits,
    RowLike,
    StoreClosedError,
    StoreError,
    StoreResult,
    Where,
)
from edgegate.core.codec import datetime_to_ns
from edgegate.core.domain import VehicleCategory
from edgegate.core.events import EventDecodeError, RevokedCredentialAdmission
from edgegate.core.events import decode as decode_event
from edgegate.core.rules import DEFAULT_DWELL_LIMITS
from edgegate.log.chain import GENESIS_HASH, ChainFault, ChainVerifier, Row, verify_to_head
from edgegate.sync.protocol import DecodedEvents, ProtocolError, Status, parse_topic

T = TypeVar("T")

_PAGE = 10_000  # rows per read when iterating a gate's events
_IN_CHUNK = 500  # parameters per ``IN (…)`` list
_PG_RETRIES = 5  # deadlock / serialisation failures retried before giving up
_REVIEW_TYPE = RevokedCredentialAdmission.TYPE
_DEAD_TEXT_MAX = 2000  # characters of a dead letter's source and reason
_NO_GATE = ""  # dead_letter_drops key of dead letters without a gate (no gate id is empty)

# SQL of both backends (``?`` placeholders; PostgreSQL gets ``%s``).
EVENT_COLUMNS = (
    "gate, seq, wall_ns, mono_ns, boot_id, type, lane, version, data, prev_hash, hash,"
    " received_at_ns"
)
_ROW_COLUMNS = "seq, wall_ns, mono_ns, boot_id, type, lane, version, data, prev_hash, hash"
_SELECT_EVENTS = (
    f"SELECT {_ROW_COLUMNS} FROM gate_events WHERE gate = ? AND seq > ? ORDER BY seq LIMIT ?"
)
ENSURE_HEAD = (
    "INSERT INTO gate_heads (gate, seq, hash, updated_at_ns) VALUES (?, 0, ?, ?)"
    " ON CONFLICT (gate) DO NOTHING"
)
_UPDATE_HEAD = "UPDATE gate_heads SET seq = ?, hash = ?, updated_at_ns = ? WHERE gate = ?"
_INSERT_DEAD = (
    "INSERT INTO dead_letters"
    " (received_at_ns, source, gate, payload, payload_size, payload_sha256, reason)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
# Keep a gate's newest N dead letters (N: the OFFSET): delete from the (N+1)-th newest down.
_TRIM_DEAD = (
    "DELETE FROM dead_letters WHERE gate = ? AND id <= ("
    "SELECT id FROM dead_letters WHERE gate = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
    " RETURNING payload_size"
)
_TRIM_DEAD_NO_GATE = (
    "DELETE FROM dead_letters WHERE gate IS NULL AND id <= ("
    "SELECT id FROM dead_letters WHERE gate IS NULL ORDER BY id DESC LIMIT 1 OFFSET ?)"
    " RETURNING payload_size"
)
_COUNT_DROPS = (
    "INSERT INTO dead_letter_drops (gate, letters, payload_bytes, last_dropped_at_ns)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (gate) DO UPDATE SET"
    " letters = dead_letter_drops.letters + excluded.letters,"
    " payload_bytes = dead_letter_drops.payload_bytes + excluded.payload_bytes,"
    " last_dropped_at_ns = excluded.last_dropped_at_ns"
)
_DEAD_COLUMNS = "id, received_at_ns, source, gate, payload, reason, payload_size, payload_sha256"


class CentralStore(ABC):
    """Central's copy of gates' logs. Thread-safe; every method is a short blocking call."""

    backend: ClassVar[str]
    for_update: ClassVar[str] = ""
    """Appended to a SELECT that must lock its rows for the transaction (PostgreSQL)."""

    def __init__(self, description: str, dead_letters: DeadLetterLimits | None = None) -> None:
        self.description = description
        self.dead_letter_limits = dead_letters or DeadLetterLimits()
        self._lock = threading.Lock()
        self._closed = False
        self.park_entry: parkentry.Signer | None = None
        """Set (by the sink, with the park key): stored passes record the sites' park
        messages (:mod:`edgegate.central.store.parkentry`)."""
        self._park_entry_made: list[parkentry.Outgoing] = []
        self._gate_sites: dict[str, str] = {}  # gate -> site noted in gate_sites (committed)

    # Dialect hooks -------------------------------------------------------------------------

    @abstractmethod
    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        """A write transaction: committed durably on normal exit, rolled back otherwise."""

    @abstractmethod
    def _exec(self, sql: str, params: Sequence[object] = ()) -> None: ...

    @abstractmethod
    def _exec_many(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        """``sql`` once per parameter row, in order, without a round trip each."""

    @abstractmethod
    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def _insert_events(
        self, batches: Sequence[tuple[str, Sequence[Row]]], received_at_ns: int
    ) -> None:
        """Insert verified rows of one or more gates above their heads (no conflicts
        expected): each gate's consecutive seqs, each row's prev_hash equal to the previous
        row's hash."""

    def _fill_temp(
        self, table: str, columns: str, types: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None:
        """Inside a transaction, PostgreSQL only: the temporary ``table`` (``columns``: its
        column definitions; ``types``: their names for COPY) holds ``rows`` until the commit."""
        raise NotImplementedError(f"{self.backend} has no temporary tables to fill")

    @abstractmethod
    def _lock_heads(self, gates: list[str], now_ns: int) -> dict[str, tuple[int, bytes]]:
        """Inside a transaction: create missing heads at (0, genesis), lock and read them."""

    @abstractmethod
    def _retryable(self, exc: BaseException) -> bool:
        """Whether a failed transaction may simply be run again (deadlock, serialisation)."""

    @abstractmethod
    def _db_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a database failure to report as ``StoreError``."""

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _read_only(self) -> None:
        """Make the connection refuse every write from now on (reconnections too)."""

    # Plumbing ------------------------------------------------------------------------------

    def _run(self, fn: Callable[[], T], *, write: bool) -> T:
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"store {self.description} is closed")
            attempt = 0
            while True:
                try:
                    if not write:
                        return fn()
                    with self._transaction():
                        return fn()
                except Exception as exc:
                    if write and self._retryable(exc) and attempt < _PG_RETRIES:
                        attempt += 1
                        time.sleep(0.005 * attempt)
                        continue
                    if self._db_error(exc):
                        raise StoreError(f"{self.description}: {exc}") from exc
                    raise

    # Writing -------------------------------------------------------------------------------

    def store_batch(self, gate: str, rows: Sequence[RowLike], *, source: str = "") -> StoreResult:
        """Store one batch of ``gate``'s rows (see the module docstring); committed on return."""
        return self.store_batches([Batch(gate, rows, source)])[0]

    def store_batches(
        self, items: Sequence[Batch | tuple[str, Sequence[RowLike]]], *, source: str = ""
    ) -> list[StoreResult]:
        """Store several batches in ONE transaction (one fsync); results in ``items`` order.

        Batches of the same gate are applied in order, so a later one may extend an earlier
        one. ``source`` is the default for items that are plain ``(gate, rows)`` tuples.
        """
        batches = [
            item if isinstance(item, Batch) else Batch(item[0], item[1], source) for item in items
        ]
        if not batches:
            return []
        noted: dict[str, str] = {}
        results = self._run(lambda: self._store_batches_tx(batches, noted), write=True)
        self._gate_sites.update(noted)  # committed
        return results

    def _store_batches_tx(self, batches: list[Batch], noted: dict[str, str]) -> list[StoreResult]:
        now = time.time_ns()
        gates = sorted({b.gate for b in batches if gate_problem(b.gate) is None})
        heads = self._lock_heads(gates, now) if gates else {}
        start = dict(heads)
        stored: dict[str, list[Row]] = {}
        # Verified rows wait here and go to the database together: one COPY per group on
        # PostgreSQL, which stores while the next batch is being verified.
        unwritten: list[tuple[str, Sequence[Row]]] = []
        results = [self._store_one(b, heads, now, stored, unwritten) for b in batches]
        self._write(unwritten, now)
        moved = [(h[0], h[1], now, g) for g, h in heads.items() if h != start[g]]
        if moved:
            self._exec_many(_UPDATE_HEAD, moved)
        # In the same transaction: the projections hold exactly the committed events.
        passes: dict[tuple[str, int], object] = {}
        changed: list[projections.Moved] = []  # for the park chain, if on
        projections.apply(
            self,
            stored,
            self._projection_problem(now),
            passes,
            changed if self.park_entry is not None else None,
        )
        self._park_entry_made = []  # a retried transaction records again
        noted.clear()
        topic_sites = {b.gate: site for b in batches if (site := _topic_site(b.source)) is not None}
        fresh = {g: s for g, s in topic_sites.items() if self._gate_sites.get(g) != s}
        if fresh:
            parkentry.note_sites(self, fresh, noted, now)
        if self.park_entry is not None and stored:
            sites: dict[str, str | None] = dict(topic_sites)
            unknown = sorted(g for g in stored if g not in sites)
            if unknown:
                sites.update(parkentry.sites_of(self, unknown))
            self._park_entry_made = parkentry.record(
                self, stored, sites, self.park_entry, now, passes, changed
            )
        return results

    def take_park_entry(self) -> list[parkentry.Outgoing]:
        """The park messages to publish after the last ``store_batches`` of this thread
        committed (each touched site's pending ones up to the new ones, in sequence);
        cleared."""
        made, self._park_entry_made = self._park_entry_made, []
        return made

    def _projection_problem(self, now: int) -> projections.Problem:
        def dead(gate: str, seq: int, payload: bytes, reason: str) -> None:
            self._dead(now, "projection", gate, payload, reason)

        return dead

    def _store_one(
        self,
        batch: Batch,
        heads: dict[str, tuple[int, bytes]],
        now: int,
        stored: dict[str, list[Row]],
        unwritten: list[tuple[str, Sequence[Row]]],
    ) -> StoreResult:
        gate, raw_rows, source = batch
        source = clean_text(source) if type(source) is str else repr(source)
        bad_gate = gate_problem(gate)
        if bad_gate is not None:
            reason = f"malformed batch: {bad_gate} ({clean_text(repr(gate))[:200]})"
            self._dead(now, source, None, dead_payload(None, raw_rows), reason)
            n = len(raw_rows) if isinstance(raw_rows, list | tuple) else 0
            return StoreResult(0, None, 0, 0, n, reason)
        head_seq, head_hash = heads[gate]
        problem = (
            check_decoded(raw_rows) if type(raw_rows) is DecodedEvents else check_rows(raw_rows)
        )
        if problem is not None:
            n = len(raw_rows) if isinstance(raw_rows, list | tuple) else 0
            self._dead(now, source, gate, dead_payload(gate, raw_rows), problem)
            # A fresh copy may be sound (the gate hashed what it stored); ask for one.
            return StoreResult(head_seq, head_seq + 1, 0, 0, n, problem)
        # Checked: every row has Row's shape and types (lists from msgpack, or tuples).
        rows = cast(Sequence[Row], raw_rows)
        if not rows:
            return StoreResult(head_seq, None, 0, 0)

        dups: Sequence[Row] = ()
        new = rows
        if rows[0][0] <= head_seq or rows[-1][0] <= head_seq:
            dups = [r for r in rows if r[0] <= head_seq]
            new = [r for r in rows if r[0] > head_seq]
        if dups:
            self._write(unwritten, now)  # the fork check reads what is stored
            fork = self._fork(gate, dups)
            if fork is not None:
                self._dead(now, source, gate, dead_payload(gate, raw_rows), fork)
                # Resending cannot help: the gate's history differs from the one we hold.
                return StoreResult(head_seq, None, 0, len(dups), len(rows), fork)
        if not new:
            return StoreResult(head_seq, None, 0, len(dups))
        if new[0][0] > head_seq + 1:
            return StoreResult(head_seq, head_seq + 1, 0, len(dups))

        verifier = ChainVerifier(gate, after_seq=head_seq, after_hash=head_hash)
        chain_fault = verifier.feed(new)
        good = new[: verifier.count]
        if good:
            unwritten.append((gate, good))
            self._note_reviews(gate, source, good, now)
            stored.setdefault(gate, []).extend(good)
            last = good[-1]
            head_seq, head_hash = last[0], last[9]
            heads[gate] = (head_seq, head_hash)
        if chain_fault is None:
            return StoreResult(head_seq, None, len(good), len(dups))
        rest = new[verifier.count :]
        reason = f"unverifiable: {chain_fault}"
        self._dead(now, source, gate, dead_payload(gate, [list(r) for r in rest]), reason)
        return StoreResult(head_seq, head_seq + 1, len(good), len(dups), len(rest), reason)

    def _write(self, unwritten: list[tuple[str, Sequence[Row]]], now: int) -> None:
        if unwritten:
            self._insert_events(unwritten, now)
            unwritten.clear()

    def _note_reviews(self, gate: str, source: str, rows: Sequence[Row], now: int) -> None:
        """A gate's ``admission.revoked-credential`` reports become review rows, in the same
        transaction as the events that carry them."""
        for row in rows:
            if row[4] != _REVIEW_TYPE:
                continue
            try:
                event = decode_event(row[4], row[6], bytes(row[7]), row[5])
            except EventDecodeError as exc:
                # The event is stored (its chain is sound); only its review row is missing.
                reason = f"admission review of seq {row[0]} not recorded: {exc}"
                self._dead(now, source, gate, bytes(row[7]), reason)
                continue
            assert isinstance(event, RevokedCredentialAdmission)
            self._exec(
                "INSERT INTO admission_reviews (gate, seq, plate, credential_kind,"
                " credential_id, revoked_at_ns, decided_at_ns, noted_at_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gate, seq) DO NOTHING",
                (
                    gate,
                    event.decision_seq,
                    event.plate,
                    event.credential_kind,
                    event.credential_id,
                    datetime_to_ns(event.revoked_at),
                    datetime_to_ns(event.decided_at),
                    now,
                ),
            )

    def _fork(self, gate: str, dups: Sequence[Row]) -> str | None:
        """A reason if any duplicate's hash differs from the stored one, else None."""
        stored: dict[int, bytes] = {}
        seqs = sorted({r[0] for r in dups})
        if seqs[-1] - seqs[0] + 1 == len(seqs):  # a contiguous replay: one range query
            for seq, digest in self._query(
                "SELECT seq, hash FROM gate_events WHERE gate = ? AND seq BETWEEN ? AND ?",
                (gate, seqs[0], seqs[-1]),
            ):
                stored[seq] = bytes(digest)
        else:
            for i in range(0, len(seqs), _IN_CHUNK):
                chunk = seqs[i : i + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                for seq, digest in self._query(
                    f"SELECT seq, hash FROM gate_events WHERE gate = ? AND seq IN ({marks})",
                    (gate, *chunk),
                ):
                    stored[seq] = bytes(digest)
        for r in dups:
            held = stored.get(r[0])
            if held is None:
                return f"fork at seq {r[0]}: below the head but not stored"
            if held != r[9]:
                return f"fork at seq {r[0]}: hash differs from the stored event's"
        return None

    def _dead(self, now: int, source: str, gate: str | None, payload: bytes, reason: str) -> int:
        """Keep a bounded dead letter (prefix, size, SHA-256) and trim the gate's to the cap."""
        lim = self.dead_letter_limits
        digest = hashlib.sha256(payload).digest()
        row = (
            now,
            source[:_DEAD_TEXT_MAX],
            gate,
            payload[: lim.payload_prefix],
            len(payload),
            digest,
            clean_text(reason)[:_DEAD_TEXT_MAX],
        )
        dead_id = int(self._query(_INSERT_DEAD, row)[0][0])
        # Oldest dropped, not newest refused: what a gate sends now is what an operator must
        # see; the drops are counted (and a gate can only push out its own dead letters).
        if gate is None:
            dropped = self._query(_TRIM_DEAD_NO_GATE, (lim.per_gate,))
        else:
            dropped = self._query(_TRIM_DEAD, (gate, gate, lim.per_gate))
        if dropped:
            size = sum(int(r[0]) for r in dropped)
            key = _NO_GATE if gate is None else gate
            self._exec(_COUNT_DROPS, (key, len(dropped), size, now))
        return dead_id

    def dead_letter(self, source: str, gate: str | None, payload: bytes, reason: str) -> int:
        """Keep a payload that could not be used, with why; return its id. Committed."""
        now = time.time_ns()
        gate_value = gate if gate is None or gate_problem(gate) is None else None
        if gate is not None and gate_value is None:
            reason = f"{reason} (gate {gate!r})"
        body = bytes(payload)
        return self._run(
            lambda: self._dead(now, clean_text(source), gate_value, body, reason), write=True
        )

    def add_admission_review(
        self,
        gate: str,
        seq: int,
        *,
        plate: str,
        credential_kind: str,
        credential_id: str,
        revoked_at_ns: int,
        decided_at_ns: int,
        noted_at_ns: int | None = None,
    ) -> bool:
        """Record an entry admitted by a credential revoked meanwhile; False if already held."""
        noted = time.time_ns() if noted_at_ns is None else noted_at_ns
        params = (
            gate,
            seq,
            plate,
            credential_kind,
            credential_id,
            revoked_at_ns,
            decided_at_ns,
            noted,
        )

        def add() -> bool:
            inserted = self._query(
                "INSERT INTO admission_reviews (gate, seq, plate, credential_kind,"
                " credential_id, revoked_at_ns, decided_at_ns, noted_at_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gate, seq) DO NOTHING"
                " RETURNING seq",
                params,
            )
            return bool(inserted)

        return self._run(add, write=True)

    # Park projections (:mod:`edgegate.central.store.projections`) ---------------------------

    def note_status(self, status: Status) -> None:
        """Keep a gate's latest reported status (online/offline, its head); committed."""
        now = time.time_ns()
        self._run(lambda: projections.note_status(self, status, now), write=True)

    def rebuild_projections(self) -> int:
        """Drop every projection and apply all stored events again, in one transaction that
        holds every gate's head (sinks wait meanwhile). Returns the events read."""

        def rebuild() -> int:
            now = time.time_ns()
            gates = [str(r[0]) for r in self._query("SELECT gate FROM gate_heads ORDER BY gate")]
            heads = self._lock_heads(gates, now) if gates else {}
            tips = {g: seq for g, (seq, _) in heads.items()}
            return projections.rebuild(self, tips, self._projection_problem(now))

        return self._run(rebuild, write=True)

    def presence(
        self,
        *,
        categories: Iterable[VehicleCategory] | None = None,
        gate: str | None = None,
        plate: str | None = None,
        limit: int | None = None,
    ) -> list[projections.VehicleInside]:
        """Vehicles inside the park (filtered), hazmat first, then hazwaste, then the others;
        each group longest inside first."""
        cats = None if categories is None else tuple(categories)
        return self._run(
            lambda: projections.presence(
                self, categories=cats, gate=gate, plate=plate, limit=limit
            ),
            write=False,
        )

    def inside_counts(self) -> dict[VehicleCategory | None, int]:
        """How many vehicles are inside, by category, without reading them."""
        return self._run(lambda: projections.inside_counts(self), write=False)

    def overstays(
        self,
        now_ns: int,
        dwell_limits: Mapping[VehicleCategory, timedelta | None] = DEFAULT_DWELL_LIMITS,
    ) -> list[projections.ParkOverstay]:
        """Vehicles inside past their permit's end or their category's dwell limit at
        ``now_ns``, longest overdue first. ``dwell_limits``: central's (by default the
        gates' defaults; gates do not log theirs)."""
        return projections.park_overstays(self.presence(), now_ns, dwell_limits)

    def gate_states(self) -> list[projections.GateState]:
        """Each gate central knows of, by gate id (see ``GateState``)."""
        return self._run(lambda: projections.gate_states(self), write=False)

    # Blacklist proposals (:mod:`edgegate.central.store.blacklist`) ---------------------------

    def propose_blacklist(
        self,
        now_ns: int,
        dwell_limits: Mapping[VehicleCategory, timedelta | None] = DEFAULT_DWELL_LIMITS,
        *,
        auto_approve: Iterable[VehicleCategory] = (),
        gates: Sequence[str] | None = None,
    ) -> tuple[list[int], int]:
        """Refresh the proposals from the overstays at ``now_ns`` in one transaction; returns
        (new proposals' ids, proposals marked as left). See ``blacklist.refresh``."""
        auto = tuple(auto_approve)
        chosen = None if gates is None else tuple(gates)

        def refresh() -> tuple[list[int], int]:
            overdue = projections.park_overstays(projections.presence(self), now_ns, dwell_limits)
            return blacklist.refresh(self, overdue, now_ns, auto, chosen)

        return self._run(refresh, write=True)

    def decide_blacklist(
        self,
        proposal_id: int,
        state: str,
        *,
        operator: str,
        reason: str,
        now_ns: int | None = None,
        gates: Sequence[str] | None = None,
    ) -> blacklist.Proposal:
        """Record an operator's decision (``approved`` / ``dismissed``); committed on return,
        before anything is published. ``ProposalError`` if unknown or decided already."""
        at = time.time_ns() if now_ns is None else now_ns
        chosen = None if gates is None else tuple(gates)
        return self._run(
            lambda: blacklist.decide(self, proposal_id, state, operator, reason, at, chosen),
            write=True,
        )

    def blacklist_published(self, proposal_id: int, gates: Iterable[str]) -> None:
        """Note that the approval's deltas to ``gates`` were published."""
        now, chosen = time.time_ns(), tuple(gates)
        self._run(lambda: blacklist.mark_published(self, proposal_id, chosen, now), write=True)

    def blacklist_proposals(
        self, *, state: str | None = None, ids: Sequence[int] | None = None
    ) -> list[blacklist.Proposal]:
        """Proposals (in ``state``, or with ``ids``) by id, with their publications."""
        chosen = None if ids is None else tuple(ids)
        return self._run(lambda: blacklist.proposals(self, state=state, ids=chosen), write=False)

    # Allow-list publications (:mod:`edgegate.central.store.publications`) --------------------

    def publish_allowlist(
        self,
        gates: Sequence[str],
        build: Callable[[int], tuple[str, int | None, bytes]],
        *,
        recorded_by: str,
        version: int | None = None,
    ) -> list[publications.Publication]:
        """Take each gate's next version (or ``version``: ``VersionClashError`` if a gate has
        it or a later one already), sign with ``build(version)`` -> (kind, base version,
        signed bytes) and record the publications; committed before anything is sent."""
        now, chosen = time.time_ns(), tuple(gates)
        return self._run(
            lambda: publications.publish(self, chosen, version, build, recorded_by, now),
            write=True,
        )

    def record_publications(self, made: Iterable[publications.Publication]) -> None:
        """Keep publications whose versions were taken already (a blacklist approval's)."""
        chosen = tuple(made)
        self._run(lambda: publications.record(self, chosen), write=True)

    def latest_publications(self, gate: str) -> list[publications.Publication]:
        """``gate``'s newest recorded snapshot and the deltas after it; [] if no snapshot."""
        return self._run(lambda: publications.latest(self, gate), write=False)

    def allowlist_publications(self, gate: str | None = None) -> list[publications.Publication]:
        """Every recorded publication (to ``gate``), by gate and version."""
        return self._run(lambda: publications.history(self, gate), write=False)

    def park_entry_pending(
        self, recorded_before_ns: int, limit: int = 1000
    ) -> list[parkentry.Outgoing]:
        """Park messages recorded before ``recorded_before_ns`` and not yet published, by
        site and sequence."""
        return self._run(lambda: parkentry.pending(self, recorded_before_ns, limit), write=False)

    def park_entry_published(self, made: Sequence[parkentry.Outgoing]) -> None:
        """Note that ``made`` reached the broker."""
        now, chosen = time.time_ns(), tuple(made)
        self._run(lambda: parkentry.mark_published(self, chosen, now), write=True)

    def park_entry_unpublished(self) -> int:
        return self._run(lambda: parkentry.unpublished(self), write=False)

    def park_resend(
        self, site: str, from_seq: int, since_ns: int = 0, limit: int = 10_000
    ) -> list[parkentry.Outgoing]:
        """``site``'s kept park messages from ``from_seq`` (see ``parkentry.resend``)."""
        return self._run(
            lambda: parkentry.resend(self, site, from_seq, since_ns, limit), write=False
        )

    def park_prune(self, recorded_before_ns: int) -> int:
        """Drop published park messages recorded before ``recorded_before_ns``; how many."""
        return self._run(lambda: parkentry.prune(self, recorded_before_ns), write=True)

    def gate_site(self, gate: str) -> str | None:
        """The site central last saw ``gate``'s batches on, if any."""
        return self._run(lambda: parkentry.sites_of(self, [gate]), write=False).get(gate)

    def projection_positions(self) -> dict[tuple[str, str], int]:
        """(projection, gate) -> the last seq applied."""
        rows = self._run(
            lambda: self._query("SELECT projection, gate, seq FROM projection_positions"),
            write=False,
        )
        return {(str(p), str(g)): int(s) for p, g, s in rows}

    def change_marks(self) -> tuple[dict[str, int], tuple[int, ...]]:
        """Cheap marks of what the park view shows, for watchers polling for changes (the
        dashboard): each gate's seq every projection has applied (all its events up to it
        are reflected), and a tuple that changes when a gate's status, a proposal, its
        decision or publication, a dead letter or an admission review is written. Two reads
        of small tables or indexes, whatever the number of events."""

        def read() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            positions = self._query("SELECT gate, MIN(seq) FROM projection_positions GROUP BY gate")
            marks = self._query(
                "SELECT (SELECT COALESCE(MAX(noted_at_ns), 0) FROM gate_status),"
                " (SELECT COUNT(*) FROM gate_status),"
                " (SELECT COALESCE(MAX(id), 0) FROM blacklist_proposals),"
                " (SELECT COUNT(*) FROM blacklist_proposals WHERE state <> ?),"
                " (SELECT COUNT(*) FROM blacklist_publications"
                " WHERE published_at_ns IS NOT NULL),"
                " (SELECT COALESCE(MAX(id), 0) FROM dead_letters),"
                " (SELECT COUNT(*) FROM admission_reviews)",
                (blacklist.OPEN,),
            )
            return positions, marks

        positions, marks = self._run(read, write=False)
        return {str(g): int(s) for g, s in positions}, tuple(int(v) for v in marks[0])

    # Reading -------------------------------------------------------------------------------

    def head(self, gate: str) -> tuple[int, bytes]:
        """(seq, hash) of the gate's highest contiguous stored event; (0, genesis) if none."""
        rows = self._run(
            lambda: self._query("SELECT seq, hash FROM gate_heads WHERE gate = ?", (gate,)),
            write=False,
        )
        if not rows:
            return 0, GENESIS_HASH
        return int(rows[0][0]), bytes(rows[0][1])

    def heads(self) -> dict[str, tuple[int, bytes]]:
        """Every known gate's head (a gate seen with nothing stored yet is at (0, genesis))."""
        rows = self._run(
            lambda: self._query("SELECT gate, seq, hash FROM gate_heads ORDER BY gate"),
            write=False,
        )
        return {str(g): (int(s), bytes(h)) for g, s, h in rows}

    def count(self, gate: str | None = None) -> int:
        """Events stored for ``gate``, or for all gates."""
        params: tuple[object, ...] = ()
        if gate is None:
            sql = "SELECT COUNT(*) FROM gate_events"
        else:
            sql, params = "SELECT COUNT(*) FROM gate_events WHERE gate = ?", (gate,)
        return int(self._run(lambda: self._query(sql, params), write=False)[0][0])

    def events(self, gate: str, after: int = 0, limit: int | None = None) -> Iterator[Row]:
        """``gate``'s stored rows with seq > ``after`` in seq order, read page by page."""
        remaining = limit
        while remaining is None or remaining > 0:
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            rows = self._run(
                functools.partial(self._query, _SELECT_EVENTS, (gate, after, page)), write=False
            )
            for r in rows:
                yield cast(Row, tuple(r))
            if len(rows) < page:
                return
            after = int(rows[-1][0])
            if remaining is not None:
                remaining -= len(rows)

    def verify(self, gate: str) -> ChainFault | None:
        """Re-prove the whole stored chain of ``gate`` from genesis, and that it ends at the head.

        Returns the first fault, or None when every link and hash holds. Events stored after
        the head was read are not checked.
        """
        # The head first, then the rows up to it: events stored meanwhile are not a fault.
        head = self.head(gate)
        return verify_to_head(gate, self.events(gate), head)

    def dead_letters(self, gate: str | None = None, *, limit: int = 1000) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters kept (of ``gate`` if given), by id."""
        if gate is None:
            sql = f"SELECT {_DEAD_COLUMNS} FROM dead_letters ORDER BY id LIMIT ?"
            params: tuple[object, ...] = (limit,)
        else:
            sql = f"SELECT {_DEAD_COLUMNS} FROM dead_letters WHERE gate = ? ORDER BY id LIMIT ?"
            params = (gate, limit)
        rows = self._run(lambda: self._query(sql, params), write=False)
        return [
            DeadLetter(
                int(i),
                int(at),
                str(src),
                None if g is None else str(g),
                bytes(p),
                str(r),
                int(size),
                bytes(digest),
            )
            for i, at, src, g, p, r, size, digest in rows
        ]

    def dead_letter_drops(self) -> list[DeadLetterDrops]:
        """Per gate (None: no known gate), the dead letters deleted to keep within the cap."""
        rows = self._run(
            lambda: self._query(
                "SELECT gate, letters, payload_bytes, last_dropped_at_ns FROM dead_letter_drops"
                " ORDER BY gate"
            ),
            write=False,
        )
        return [
            DeadLetterDrops(None if g == _NO_GATE else str(g), int(n), int(b), int(at))
            for g, n, b, at in rows
        ]

    def admission_reviews(self, gate: str | None = None) -> list[AdmissionReview]:
        """Recorded admission reviews (of ``gate`` if given), by gate and seq."""
        cols = (
            "gate, seq, plate, credential_kind, credential_id, revoked_at_ns, decided_at_ns,"
            " noted_at_ns"
        )
        params: tuple[object, ...] = ()
        if gate is None:
            sql = f"SELECT {cols} FROM admission_reviews ORDER BY gate, seq"
        else:
            sql = f"SELECT {cols} FROM admission_reviews WHERE gate = ? ORDER BY seq"
            params = (gate,)
        rows = self._run(lambda: self._query(sql, params), write=False)
        return [
            AdmissionReview(str(g), int(s), str(p), str(k), str(c), int(r), int(d), int(n))
            for g, s, p, k, c, r, d, n in rows
        ]

    def find_events(
        self,
        after: tuple[str, int] = ("", 0),
        *,
        gate: str | None = None,
        types: Iterable[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int = 1000,
    ) -> list[tuple[str, Row]]:
        """Up to ``limit`` stored events after the position ``after`` (gate, seq), in (gate,
        seq) order (the primary key's: a page walks the index), of ``gate`` if given, of
        ``types`` if given, with wall time in [``start_ns``, ``end_ns``)."""
        where = Where()
        if gate is None:
            where.add("(gate > ? OR (gate = ? AND seq > ?))", after[0], after[0], after[1])
        elif gate < after[0]:
            return []
        else:
            where.add("gate = ? AND seq > ?", gate, after[1] if gate == after[0] else 0)
        if types is not None and not where.among("type", types):
            return []
        if start_ns is not None:
            where.add("wall_ns >= ?", start_ns)
        if end_ns is not None:
            where.add("wall_ns < ?", end_ns)
        sql = (
            f"SELECT gate, {_ROW_COLUMNS} FROM gate_events{where.sql()} ORDER BY gate, seq LIMIT ?"
        )
        params = [*where.params, limit]
        rows = self._run(lambda: self._query(sql, params), write=False)
        return [
            (str(r[0]), cast(Row, (*r[1:8], bytes(r[8]), bytes(r[9]), bytes(r[10])))) for r in rows
        ]

    def read_only(self) -> CentralStore:
        """Refuse every write on this store's connection from now on (a reader beside the
        sink's store: the API). Returns the store."""
        self._run(self._read_only, write=False)
        return self

    # Lifecycle -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection; idempotent. Waits for a call in progress to finish."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close()

    def __enter__(self) -> CentralStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _topic_site(source: str) -> str | None:
    """The site of a batch that came on an MQTT events topic, else None."""
    try:
        site, _, kind = parse_topic(source)
    except ProtocolError:
        return None
    return site if kind == "events" else None
