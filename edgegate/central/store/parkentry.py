"""One appointment, one entry, park-wide: the outbox of central's park-wide deltas.

A gate that admits a vehicle on an appointment logs the entry (``vehicle.passed``, direction
entry, whose decision ``access.decided`` names the appointment in ``consumed_appointment``).
When such events, or any other pass, are stored, the SAME transaction
(:meth:`CentralStore.store_batches`), after the projections, records for every other gate
central knows one signed delta (more beyond ``MAX_ITEMS`` changes) of what happened
elsewhere: ``consume`` (the appointments consumed), ``inside`` (the plates whose latest
movement is now an entry at another gate: plate, gate, time) and ``left`` (plates that left
at another gate); with its version taken from the gate's one counter
(:mod:`edgegate.central.store.publications`), the publication itself and an outbox row. The
commit holds the events, the versions and the signed bytes together, or none of them: with
several sinks sharing the gates two deltas never get one version, and a change is never
signed twice under different versions (a redelivered batch stores nothing new, so records
nothing).

The sink publishes what its commit recorded right after the commit and marks it published
once the broker acknowledged it; any instance (a restarted one too) publishes outbox rows
left unpublished for a while (:func:`pending`). Publishing one again is harmless: the gate
applies a version once and takes the second copy for a redelivery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgegate.central.store import publications
from edgegate.central.store.projections import Tx
from edgegate.core.domain import Direction
from edgegate.core.events import AccessDecided, EventDecodeError, VehiclePassed
from edgegate.core.events import decode as decode_event
from edgegate.log.chain import Row
from edgegate.sync.signing import (
    KIND_ALLOWLIST,
    AllowListPublication,
    encode_delta_content,
    encode_publication,
    sign,
)

RECORDED_BY = "park-entry"
"""``recorded_by`` of the publications (followed by what was consumed where)."""

_DECISION = (
    "SELECT type, version, data, lane FROM gate_events WHERE gate = ? AND seq = ? AND type = ?"
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
    """A recorded delta for one gate, to publish on ``site``'s ``gate`` allow-list topic."""

    site: str
    gate: str
    version: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Signer:
    """Central's key, with which the store signs consumption deltas in its transaction."""

    key: Ed25519PrivateKey

    def delta(
        self,
        consumed: Sequence[str],
        inside: Sequence[tuple[str, str, int]] = (),
        left: Sequence[str] = (),
        *,
        version: int,
        now_ns: int,
    ) -> bytes:
        content = encode_delta_content((), (), consumed, inside, left)
        body = AllowListPublication("delta", version, version - 1, now_ns, content)
        return sign(KIND_ALLOWLIST, encode_publication(body), self.key)


def consumptions(tx: Tx, gate: str, rows: Sequence[Row]) -> list[Consumption]:
    """The appointment consumptions among ``gate``'s ``rows`` (a pass whose decision, in
    ``rows`` or stored before them, consumed the pass's credential)."""
    return _scan(tx, gate, rows)[0]


def _scan(tx: Tx, gate: str, rows: Sequence[Row]) -> tuple[list[Consumption], set[str]]:
    """The consumptions among ``rows`` and the plates they moved (in or out)."""
    found: list[Consumption] = []
    moved: set[str] = set()
    by_seq = {r[0]: r for r in rows if r[4] == AccessDecided.TYPE}
    for row in rows:
        if row[4] != VehiclePassed.TYPE:
            continue
        passed = _decode(row[4], row[6], row[7], row[5])
        if not isinstance(passed, VehiclePassed):
            continue
        if passed.plate:
            moved.add(passed.plate)
        if (
            passed.direction is not Direction.ENTRY
            or passed.unauthorised
            or passed.credential_id is None
            or passed.decision_seq is None
        ):
            continue
        decided_row = by_seq.get(passed.decision_seq)
        if decided_row is not None:
            decided = _decode(decided_row[4], decided_row[6], decided_row[7], decided_row[5])
        else:
            stored = tx._query(_DECISION, (gate, passed.decision_seq, AccessDecided.TYPE))
            decided = _decode(*stored[0]) if stored else None
        if (
            isinstance(decided, AccessDecided)
            and decided.consumed_appointment is not None
            and decided.consumed_appointment == passed.credential_id
        ):
            found.append(Consumption(gate, row[0], passed.credential_id, passed.plate, row[1]))
    return found, moved


def _decode(type_: Any, version: Any, data: Any, lane: Any) -> object:
    try:
        lane_id = None if lane is None else str(lane)
        return decode_event(str(type_), int(version), bytes(data), lane_id)
    except EventDecodeError:
        return None  # the projection dead-letters a note for it


@dataclass(frozen=True, slots=True)
class _Presence:
    """A moved plate's row in ``park_vehicles`` after the commit's movements."""

    plate: str
    inside: bool
    gate: str
    at_ns: int


def _presence(tx: Tx, plates: set[str]) -> list[_Presence]:
    out: list[_Presence] = []
    chosen = sorted(plates)
    for i in range(0, len(chosen), 500):
        chunk = chosen[i : i + 500]
        marks = ", ".join("?" * len(chunk))
        for plate, inside, gate, at in tx._query(
            f"SELECT plate, inside, gate, at_ns FROM park_vehicles WHERE plate IN ({marks})",
            chunk,
        ):
            out.append(_Presence(str(plate), int(inside) == 1, str(gate), int(at)))
    return out


def record(
    tx: Tx,
    stored: Mapping[str, Sequence[Row]],
    sites: Mapping[str, str | None],
    signer: Signer,
    now_ns: int,
) -> list[Outgoing]:
    """In the transaction storing ``stored`` (gate -> rows), after the projections: for each
    other known gate, deltas of the appointments consumed and the vehicles that entered or
    left elsewhere (``sites``: gate -> site of the topic its batch came on; None: not from
    MQTT, e.g. pulled, which is too late to matter and is not published). At most
    ``MAX_ITEMS`` changes per delta. Returns what to publish after the commit."""
    by_site: dict[str, tuple[list[Consumption], set[str]]] = {}
    for gate in sorted(stored):
        site = sites.get(gate)
        if site is None:
            continue
        found, moved = _scan(tx, gate, stored[gate])
        if found or moved:
            consumed, plates = by_site.setdefault(site, ([], set()))
            consumed.extend(found)
            plates.update(moved)
    if not by_site:
        return []
    reported = publications.reported_versions(tx)
    out: list[Outgoing] = []
    for site, (found, plates) in sorted(by_site.items()):
        presence = _presence(tx, plates)
        for target in sorted(reported):  # versions locked in gate order: no deadlock
            elsewhere = [c for c in found if c.gate != target]
            ids = list(dict.fromkeys(c.appointment for c in elsewhere))
            inside = [(p.plate, p.gate, p.at_ns) for p in presence if p.inside and p.gate != target]
            left = [p.plate for p in presence if not p.inside and p.gate != target]
            source = "; ".join(f"{c.appointment} at {c.gate} seq {c.seq}" for c in elsewhere)
            if inside or left:
                source += f"{'; ' if source else ''}{len(inside)} inside, {len(left)} left"
            for part in _parts(ids, inside, left):
                version = publications.next_version(tx, target, reported[target] + 1)
                payload = signer.delta(*part, version=version, now_ns=now_ns)
                publications.record(
                    tx,
                    [
                        publications.Publication(
                            target,
                            version,
                            publications.DELTA,
                            version - 1,
                            payload,
                            now_ns,
                            f"{RECORDED_BY}: {source}"[:1000],
                        )
                    ],
                )
                tx._exec(
                    "INSERT INTO park_entry_outbox (gate, version, site, source, recorded_at_ns)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (target, version, site, source[:1000], now_ns),
                )
                out.append(Outgoing(site, target, version, payload))
    return out


MAX_ITEMS = 5000
"""Changes (consumed ids, inside marks, left plates) in one delta at most."""

_Part = tuple[list[str], list[tuple[str, str, int]], list[str]]


def _parts(ids: list[str], inside: list[tuple[str, str, int]], left: list[str]) -> list[_Part]:
    """The changes for one gate cut into deltas of at most ``MAX_ITEMS`` (consumptions
    first: they matter most); [] when there is nothing."""
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
    """Outbox rows not yet published, recorded before ``recorded_before_ns``, by gate and
    version (a gate's deltas in the order they apply)."""
    return [
        Outgoing(str(site), str(gate), int(version), bytes(payload))
        for site, gate, version, payload in tx._query(
            "SELECT o.site, o.gate, o.version, p.payload FROM park_entry_outbox o"
            " JOIN allowlist_publications p ON p.gate = o.gate AND p.version = o.version"
            " WHERE o.published_at_ns IS NULL AND o.recorded_at_ns < ?"
            " ORDER BY o.gate, o.version LIMIT ?",
            (recorded_before_ns, limit),
        )
    ]


def mark_published(tx: Tx, made: Sequence[Outgoing], now_ns: int) -> None:
    for o in made:
        tx._exec(
            "UPDATE park_entry_outbox SET published_at_ns = ?"
            " WHERE gate = ? AND version = ? AND published_at_ns IS NULL",
            (now_ns, o.gate, o.version),
        )


def unpublished(tx: Tx) -> int:
    """Outbox rows not yet published (a metric)."""
    return int(
        tx._query("SELECT COUNT(*) FROM park_entry_outbox WHERE published_at_ns IS NULL")[0][0]
    )
