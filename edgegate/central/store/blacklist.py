"""Blacklist proposals: overstays an operator approves (published to the gates) or dismisses.

A proposal is one stay past its deadline: the entry event (gate, seq) is its key, so
refreshing the proposals from the projections again and again creates it once. While it is
undecided its dwell is brought up to date; when the vehicle's latest movement is no longer
that entry (it left, at any gate), the proposal is kept and marked as left.

A decision (who, when, why) is stored in one transaction with, for an approval, the
allow-list version each gate's delta will carry: the decision is durable before anything is
published, and a decided proposal cannot be decided again. Publishing then marks each gate's
publication as published; one that failed stays pending and is published again later with
the same versions.

Versions: a gate's delta applies on the newest version central knows of it, the larger of
what the gate reported (its events and status) and the last version central gave it
(``allowlist_versions``, the counter every publish path bumps atomically: see
:mod:`edgegate.central.store.publications`), so two publications never hand a gate the same
version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgegate.central.store import publications
from edgegate.central.store.model import StoreError, Where
from edgegate.central.store.projections import ParkOverstay, Tx
from edgegate.core.domain import VehicleCategory

OPEN, APPROVED, DISMISSED = "open", "approved", "dismissed"
STATES = (OPEN, APPROVED, DISMISSED)
AUTO_OPERATOR = "auto"
"""The operator recorded for an automatic approval."""

_COLUMNS = (
    "id, gate, seq, plate, category, entered_at_ns, limit_kind, deadline_ns, dwell_ns,"
    " proposed_at_ns, refreshed_at_ns, left_at_ns, left_gate, state, operator, reason,"
    " decided_at_ns"
)


class ProposalError(StoreError):
    """A proposal that does not exist, or cannot be decided (again); the message says which."""


@dataclass(frozen=True, slots=True)
class Publication:
    """The delta of an approval for one gate: ``base_version`` -> ``version``."""

    gate: str
    base_version: int
    version: int
    published_at_ns: int | None


@dataclass(frozen=True, slots=True)
class Proposal:
    """A stay past its deadline, with its evidence and, once decided, the decision."""

    id: int
    gate: str
    """Entry gate and the entry event's seq there."""
    seq: int
    plate: str
    category: VehicleCategory | None
    entered_at_ns: int
    limit: str
    """What was exceeded: ``dwell-limit`` (its category's) or ``permit-end``."""
    deadline_ns: int
    dwell_ns: int
    """Inside for this long when last refreshed (until it left, once it left)."""
    proposed_at_ns: int
    refreshed_at_ns: int
    left_at_ns: int | None
    left_gate: str | None
    state: str
    operator: str | None
    reason: str | None
    decided_at_ns: int | None
    publications: tuple[Publication, ...] = ()

    @property
    def left(self) -> bool:
        return self.left_at_ns is not None

    @property
    def entry_id(self) -> str:
        """The id of the blacklist entry an approval publishes."""
        return f"BL-OVERSTAY-{self.id}"

    @property
    def pending(self) -> tuple[Publication, ...]:
        """Publications of an approval not yet published."""
        return tuple(p for p in self.publications if p.published_at_ns is None)


def refresh(
    tx: Tx,
    overdue: Sequence[ParkOverstay],
    now_ns: int,
    auto_approve: Iterable[VehicleCategory] = (),
    gates: Sequence[str] | None = None,
) -> tuple[list[int], int]:
    """Propose each of ``overdue`` not proposed yet, update undecided stays' dwell, mark
    proposals whose vehicle left; approve new proposals of ``auto_approve`` categories
    (operator ``auto``, published to ``gates``, default every gate). Returns (the new
    proposals' ids, the proposals marked as left)."""
    auto = frozenset(auto_approve)
    created: list[int] = []
    for o in overdue:
        v = o.vehicle
        category = None if v.category is None else str(v.category)
        inserted = tx._query(
            "INSERT INTO blacklist_proposals (gate, seq, plate, category, entered_at_ns,"
            " limit_kind, deadline_ns, dwell_ns, proposed_at_ns, refreshed_at_ns, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gate, seq) DO NOTHING"
            " RETURNING id",
            (
                v.entry_gate,
                v.entry_seq,
                v.plate,
                category,
                v.entered_at_ns,
                o.limit,
                o.deadline_ns,
                max(0, now_ns - v.entered_at_ns),
                now_ns,
                now_ns,
                OPEN,
            ),
        )
        if inserted:
            pid = int(inserted[0][0])
            created.append(pid)
            if v.category in auto:
                why = f"automatic approval: {v.category} past its {o.limit}"
                decide(tx, pid, APPROVED, AUTO_OPERATOR, why, now_ns, gates)
        else:
            tx._exec(
                "UPDATE blacklist_proposals SET dwell_ns = ?, refreshed_at_ns = ?"
                " WHERE gate = ? AND seq = ? AND left_at_ns IS NULL",
                (max(0, now_ns - v.entered_at_ns), now_ns, v.entry_gate, v.entry_seq),
            )
    left = 0
    for pid, gate, seq, entered, v_gate, v_seq, v_inside, v_at in tx._query(
        "SELECT p.id, p.gate, p.seq, p.entered_at_ns, v.gate, v.seq, v.inside, v.at_ns"
        " FROM blacklist_proposals p LEFT JOIN park_vehicles v ON v.plate = p.plate"
        " WHERE p.left_at_ns IS NULL ORDER BY p.id"
    ):
        if v_inside == 1 and (v_gate, v_seq) == (gate, seq):
            continue  # still inside on this stay
        # Its latest movement is no longer this entry: an exit (or, an exit missed, a new
        # entry) at that movement's gate and time.
        at = int(v_at) if v_at is not None else now_ns
        tx._exec(
            "UPDATE blacklist_proposals SET left_at_ns = ?, left_gate = ?, dwell_ns = ?,"
            " refreshed_at_ns = ? WHERE id = ?",
            (at, v_gate, max(0, at - int(entered)), now_ns, pid),
        )
        left += 1
    return created, left


def decide(
    tx: Tx,
    proposal_id: int,
    state: str,
    operator: str,
    reason: str,
    now_ns: int,
    gates: Sequence[str] | None = None,
) -> Proposal:
    """Record the decision on an open proposal; for an approval, each gate's delta version
    (``gates``, default every gate central knows). ``ProposalError`` if there is no such
    proposal or it is decided already."""
    if state not in (APPROVED, DISMISSED):
        raise ValueError(f"not a decision: {state!r}")
    rows = tx._query(
        f"SELECT {_COLUMNS} FROM blacklist_proposals WHERE id = ?" + tx.for_update,
        (proposal_id,),
    )
    if not rows:
        raise ProposalError(f"no proposal {proposal_id}")
    found = _proposal(rows[0])
    if found.state != OPEN:
        raise ProposalError(
            f"proposal {proposal_id} was already {found.state} by {found.operator}"
            f" ({found.reason}); a decision cannot be changed"
        )
    tx._exec(
        "UPDATE blacklist_proposals SET state = ?, operator = ?, reason = ?, decided_at_ns = ?"
        " WHERE id = ?",
        (state, operator, reason, now_ns, proposal_id),
    )
    if state == APPROVED:
        reported = publications.reported_versions(tx)
        for gate in sorted(set(reported if gates is None else gates)):
            version = publications.next_version(tx, gate, reported.get(gate, 0) + 1)
            tx._exec(
                "INSERT INTO blacklist_publications (proposal_id, gate, base_version, version)"
                " VALUES (?, ?, ?, ?)",
                (proposal_id, gate, version - 1, version),
            )
    return proposals(tx, ids=[proposal_id])[0]


def mark_published(tx: Tx, proposal_id: int, gates: Iterable[str], now_ns: int) -> None:
    for gate in gates:
        tx._exec(
            "UPDATE blacklist_publications SET published_at_ns = ?"
            " WHERE proposal_id = ? AND gate = ? AND published_at_ns IS NULL",
            (now_ns, proposal_id, gate),
        )


def proposals(
    tx: Tx, *, state: str | None = None, ids: Sequence[int] | None = None
) -> list[Proposal]:
    """Proposals (in ``state``, or with ``ids``) by id, each with its publications."""
    where = Where()
    if state is not None:
        where.add("state = ?", state)
    if ids is not None and not where.among("id", ids):
        return []
    sql = f"SELECT {_COLUMNS} FROM blacklist_proposals{where.sql()} ORDER BY id"
    found = [_proposal(r) for r in tx._query(sql, where.params)]
    if not found:
        return []
    marks = ", ".join("?" * len(found))
    pubs: dict[int, list[Publication]] = {}
    for pid, gate, base, version, at in tx._query(
        "SELECT proposal_id, gate, base_version, version, published_at_ns"
        f" FROM blacklist_publications WHERE proposal_id IN ({marks}) ORDER BY gate",
        [p.id for p in found],
    ):
        pubs.setdefault(int(pid), []).append(
            Publication(str(gate), int(base), int(version), _int(at))
        )
    return [replace(p, publications=tuple(pubs.get(p.id, ()))) for p in found]


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _proposal(r: tuple[Any, ...]) -> Proposal:
    return Proposal(
        id=int(r[0]),
        gate=str(r[1]),
        seq=int(r[2]),
        plate=str(r[3]),
        category=None if r[4] is None else VehicleCategory(r[4]),
        entered_at_ns=int(r[5]),
        limit=str(r[6]),
        deadline_ns=int(r[7]),
        dwell_ns=int(r[8]),
        proposed_at_ns=int(r[9]),
        refreshed_at_ns=int(r[10]),
        left_at_ns=_int(r[11]),
        left_gate=_str(r[12]),
        state=str(r[13]),
        operator=_str(r[14]),
        reason=_str(r[15]),
        decided_at_ns=_int(r[16]),
    )
