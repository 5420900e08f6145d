"""One appointment, one entry, park-wide: central's park chain, one per site.

A gate that admits a vehicle on an appointment logs the entry (``vehicle.passed``, direction
entry, whose decision ``access.decided`` names the appointment in ``consumed_appointment``).
When such events, or any other pass, are stored, the SAME transaction
(:meth:`CentralStore.store_batches`), after the projections, records for each site whose
gates' events it stored ONE signed park message (more only beyond ``MAX_ITEMS`` changes;
:mod:`edgegate.sync.park`): ``consume`` (the appointments consumed), ``inside`` (the plates
whose latest movement is now an entry: plate, gate, time) and ``left`` (plates that left),
each plate to the site of the gate it moved at; a movement older than the plate's latest
stored one changed nothing and is not reported.
Its number comes from the site's sequence (``park_sequences``: one row lock per site, taken
in site order) and it goes into ``park_outbox`` with its signed bytes. The commit holds the
events, the sequence and the signed bytes together, or none of them: with several sinks
sharing the gates two messages never get one number, and a change is never signed twice
(a redelivered batch stores nothing new, so records nothing). Gates' allow-list versions
are not touched: operator deltas chain as before.

The site of a batch is the one in its MQTT topic; a batch that came otherwise (``central
pull``) takes the gate's site as central last saw it (``gate_sites``), else it publishes
nothing and says so in a log line.

Ordered publishing: :func:`record` returns, per site, every unpublished message up to the
new ones (the pending prefix), so an instance publishes a site's messages in sequence even
when another instance left older ones unpublished; a gate dedupes by sequence. Rows are
marked published once the broker acknowledged them and pruned after a retention
(:func:`prune`); a gate that missed some asks for them again (:func:`resend`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgegate.central.store.projections import Moved, Tx
from edgegate.core.domain import Direction
from edgegate.core.events import AccessDecided, EventDecodeError, VehiclePassed, upcast
from edgegate.core.events import decode as decode_event
from edgegate.log.chain import Row
from edgegate.observability import get_logger
from edgegate.sync.park import MAX_ITEMS, ParkMessage, sign_park

log = get_logger("central.park")

PREFIX_LIMIT = 1000
"""Pending messages of a site a commit hands back to publish at most (a backlog beyond is
published by the sweep)."""

_DECISION = (
    "SELECT type, version, data, lane FROM gate_events WHERE gate = ? AND seq = ? AND type = ?"
)
_NEXT_SEQ = (
    "INSERT INTO park_sequences (site, seq) VALUES (?, 1) ON CONFLICT (site) DO UPDATE"
    " SET seq = park_sequences.seq + 1 RETURNING seq"
)


@dataclass(frozen=True, slots=True)
class Consumption:
    """An appointment that admitted its entry at ``gate`` (the pass event's ``seq``)."""

    gate: str
    seq: int
    appointment: str
    plate: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A recorded park message: number ``seq`` of ``site``'s chain, signed."""

    site: str
    seq: int
    payload: bytes
    fresh: bool = False
    """Recorded by the commit that hands it back (not an older one still pending)."""


@dataclass(frozen=True, slots=True)
class Signer:
    """Central's park key (not the master key: it signs park messages only), with which the
    store signs park messages in its transaction."""

    key: Ed25519PrivateKey

    def message(
        self,
        site: str,
        seq: int,
        now_ns: int,
        consumed: Sequence[str] = (),
        inside: Sequence[tuple[str, str, int]] = (),
        left: Sequence[str] = (),
        *,
        consumed_at: Mapping[str, str] | None = None,
    ) -> bytes:
        at = {i: consumed_at[i] for i in consumed if i in consumed_at} if consumed_at else {}
        body = ParkMessage(site, seq, now_ns, tuple(consumed), tuple(inside), tuple(left), at)
        return sign_park(body, self.key)


Decoded = Mapping[tuple[str, int], object]
"""Passes the projections decoded already, by (gate, seq) (None: undecodable)."""


def _scan(tx: Tx, gate: str, rows: Sequence[Row], decoded: Decoded) -> list[Consumption]:
    """The appointment consumptions among ``gate``'s ``rows`` (consecutive, in seq order): a
    pass whose decision, in ``rows`` or stored before them, consumed the pass's credential.
    A pass found in ``decoded`` is not decoded again."""
    found: list[Consumption] = []
    first = rows[0][0] if rows else 0
    for row in [r for r in rows if r[4] == VehiclePassed.TYPE]:
        key = (gate, row[0])
        passed = decoded[key] if key in decoded else _decode(row[4], row[6], row[7], row[5])
        if (
            not isinstance(passed, VehiclePassed)
            or passed.direction is not Direction.ENTRY
            or passed.unauthorised
            or passed.credential_id is None
            or passed.decision_seq is None
        ):
            continue
        at = passed.decision_seq - first  # the decision is usually among the same rows
        decided = rows[at] if 0 <= at < len(rows) else None
        if decided is not None and decided[0] == passed.decision_seq:
            is_decision = decided[4] == AccessDecided.TYPE
            consumed = _consumed(decided[6], decided[7]) if is_decision else None
        else:
            stored = tx._query(_DECISION, (gate, passed.decision_seq, AccessDecided.TYPE))
            consumed = _consumed(stored[0][1], stored[0][2]) if stored else None
        if consumed is not None and consumed == passed.credential_id:
            found.append(Consumption(gate, row[0], passed.credential_id, passed.plate, row[1]))
    return found


def _consumed(version: Any, data: Any) -> str | None:
    """The ``consumed_appointment`` of a stored ``access.decided`` (upcast to the current
    version), without building the whole decision (its trace is most of its cost); None if
    absent or unreadable."""
    try:
        doc = msgpack.unpackb(bytes(data), raw=False)
        if not isinstance(doc, dict):
            return None
        value = upcast(AccessDecided.TYPE, int(version), doc).get("consumed_appointment")
    except (EventDecodeError, ValueError, TypeError, msgpack.UnpackException):
        return None
    return value if type(value) is str else None


def _decode(type_: Any, version: Any, data: Any, lane: Any) -> object:
    try:
        lane_id = None if lane is None else str(lane)
        return decode_event(str(type_), int(version), bytes(data), lane_id)
    except EventDecodeError:
        return None  # the projection dead-letters a note for it


def note_sites(tx: Tx, sites: Mapping[str, str], known: dict[str, str], now_ns: int) -> None:
    """Remember each gate's site (from its batches' topics) for batches that come without
    one; ``known``: what this store instance noted already (written only on a change)."""
    for gate, site in sorted(sites.items()):
        if known.get(gate) == site:
            continue
        tx._exec(
            "INSERT INTO gate_sites (gate, site, noted_at_ns) VALUES (?, ?, ?)"
            " ON CONFLICT (gate) DO UPDATE SET site = excluded.site,"
            " noted_at_ns = excluded.noted_at_ns",
            (gate, site, now_ns),
        )
        known[gate] = site


def sites_of(tx: Tx, gates: Sequence[str]) -> dict[str, str]:
    """The sites central last saw ``gates`` on (those it never saw are left out)."""
    out: dict[str, str] = {}
    for i in range(0, len(gates), 500):
        chunk = list(gates[i : i + 500])
        marks = ", ".join("?" * len(chunk))
        for gate, site in tx._query(
            f"SELECT gate, site FROM gate_sites WHERE gate IN ({marks})", chunk
        ):
            out[str(gate)] = str(site)
    return out


def record(
    tx: Tx,
    stored: Mapping[str, Sequence[Row]],
    sites: Mapping[str, str | None],
    signer: Signer,
    now_ns: int,
    decoded: Decoded,
    moved: Sequence[Moved],
) -> list[Outgoing]:
    """In the transaction storing ``stored`` (gate -> rows), after the projections: one park
    message per site (``sites``: gate -> site; None: unknown, nothing published, logged) of
    the appointments consumed and the plates whose presence changed (``moved``, each to the
    site of the gate it moved at), at most ``MAX_ITEMS`` changes each (``decoded``: the
    passes the projections decoded). Returns each touched site's unpublished messages up to
    the new ones, in sequence (what to publish after the commit)."""
    moved_at: dict[str, list[Moved]] = {}
    for m in moved:
        if m.plate:  # a vehicle that passed unread: nothing to tell (gates refuse "" plates)
            moved_at.setdefault(m.gate, []).append(m)
    by_site: dict[str, tuple[list[Consumption], list[Moved], list[str]]] = {}
    for gate in sorted(stored):
        found = _scan(tx, gate, stored[gate], decoded)
        here = moved_at.get(gate, [])
        if not (found or here):
            continue
        site = sites.get(gate)
        if site is None:
            log.warning(
                "park_site_unknown",
                gate=gate,
                consumed=[c.appointment for c in found],
                moved=len(here),
                consequence="not published to the park chain: central never saw this gate's"
                " site (its batches or status over MQTT)",
            )
            continue
        consumed, plates, gates = by_site.setdefault(site, ([], [], []))
        consumed.extend(found)
        plates.extend(here)
        gates.append(gate)
    out: list[Outgoing] = []
    for site, (found, plates, gates) in sorted(by_site.items()):  # site order: no deadlock
        plates.sort(key=lambda m: m.plate)
        ids = list(dict.fromkeys(c.appointment for c in found))
        where = {c.appointment: c.gate for c in found}  # gates log it: `replay why` names it
        inside = [(m.plate, m.gate, m.at_ns) for m in plates if m.inside]
        left = [m.plate for m in plates if not m.inside]
        # The first few only: the column keeps 1,000 characters.
        source = "; ".join(f"{c.appointment} at {c.gate} seq {c.seq}" for c in found[:50])
        extra = f"{len(inside)} inside, {len(left)} left (from {', '.join(gates)})"
        source = f"{source}; {extra}" if source else extra
        last, new = 0, set()
        for part in _parts(ids, inside, left):
            last = int(tx._query(_NEXT_SEQ, (site,))[0][0])
            payload = signer.message(site, last, now_ns, *part, consumed_at=where)
            tx._exec(
                "INSERT INTO park_outbox (site, seq, payload, source, recorded_at_ns)"
                " VALUES (?, ?, ?, ?, ?)",
                (site, last, payload, source[:1000], now_ns),
            )
            new.add(last)
        out.extend(
            Outgoing(o.site, o.seq, o.payload, o.seq in new)
            for o in _unpublished(tx, site, last, PREFIX_LIMIT)
        )
    return out


def _unpublished(tx: Tx, site: str, through: int, limit: int) -> list[Outgoing]:
    """``site``'s unpublished messages up to ``through``, in sequence, the first ``limit``
    (a longer backlog: the sweep publishes the rest, and gates ask for what they miss)."""
    rows = tx._query(
        "SELECT seq, payload FROM park_outbox WHERE published_at_ns IS NULL AND site = ?"
        " AND seq <= ? ORDER BY seq LIMIT ?",
        (site, through, limit),
    )
    return [Outgoing(site, int(seq), bytes(payload)) for seq, payload in rows]


_Part = tuple[list[str], list[tuple[str, str, int]], list[str]]


def _parts(ids: list[str], inside: list[tuple[str, str, int]], left: list[str]) -> list[_Part]:
    """The changes cut into messages of at most ``MAX_ITEMS`` (consumptions first: they
    matter most); [] when there is nothing."""
    parts: list[_Part] = []
    while ids or inside or left:
        room = MAX_ITEMS
        some_ids, ids = ids[:room], ids[room:]
        room -= len(some_ids)
        some_inside, inside = inside[:room], inside[room:]
        room -= len(some_inside)
        some_left, left = left[:room], left[room:]
        parts.append((some_ids, some_inside, some_left))
    return parts


def pending(tx: Tx, recorded_before_ns: int, limit: int) -> list[Outgoing]:
    """Messages not yet published, recorded before ``recorded_before_ns``, by site and
    sequence (each site's in the order gates apply them)."""
    return [
        Outgoing(str(site), int(seq), bytes(payload))
        for site, seq, payload in tx._query(
            "SELECT site, seq, payload FROM park_outbox"
            " WHERE published_at_ns IS NULL AND recorded_at_ns < ?"
            " ORDER BY site, seq LIMIT ?",
            (recorded_before_ns, limit),
        )
    ]


def mark_published(tx: Tx, made: Sequence[Outgoing], now_ns: int) -> None:
    """Mark ``made`` published: one statement per site (and 500 messages)."""
    by_site: dict[str, set[int]] = {}
    for o in made:
        by_site.setdefault(o.site, set()).add(o.seq)
    for site, seqs in sorted(by_site.items()):
        chosen = sorted(seqs)
        for i in range(0, len(chosen), 500):
            chunk = chosen[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            tx._exec(
                "UPDATE park_outbox SET published_at_ns = ?"
                f" WHERE site = ? AND seq IN ({marks}) AND published_at_ns IS NULL",
                (now_ns, site, *chunk),
            )


def unpublished(tx: Tx) -> int:
    """Messages not yet published (a metric)."""
    return int(tx._query("SELECT COUNT(*) FROM park_outbox WHERE published_at_ns IS NULL")[0][0])


def resend(tx: Tx, site: str, from_seq: int, since_ns: int, limit: int) -> list[Outgoing]:
    """``site``'s kept messages from ``from_seq`` (or from the first recorded at or after
    ``since_ns``, if earlier; 0: not asked), in sequence, at most ``limit``. Pruned ones are
    gone: the answer then starts at the oldest kept, and the gate sees what it missed."""
    start = from_seq
    if since_ns > 0:
        first = tx._query(
            "SELECT MIN(seq) FROM park_outbox WHERE site = ? AND recorded_at_ns >= ?",
            (site, since_ns),
        )[0][0]
        if first is not None:
            start = min(start, int(first))
    rows = tx._query(
        "SELECT seq, payload FROM park_outbox WHERE site = ? AND seq >= ? ORDER BY seq LIMIT ?",
        (site, start, limit),
    )
    return [Outgoing(site, int(seq), bytes(payload)) for seq, payload in rows]


def prune(tx: Tx, recorded_before_ns: int) -> int:
    """Drop published messages recorded before ``recorded_before_ns``; how many."""
    count = int(
        tx._query(
            "SELECT COUNT(*) FROM park_outbox"
            " WHERE published_at_ns IS NOT NULL AND recorded_at_ns < ?",
            (recorded_before_ns,),
        )[0][0]
    )
    if count:
        tx._exec(
            "DELETE FROM park_outbox WHERE published_at_ns IS NOT NULL AND recorded_at_ns < ?",
            (recorded_before_ns,),
        )
    return count
