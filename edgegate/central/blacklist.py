"""An approved blacklist proposal as the signed allow-list deltas central publishes.

Each gate gets its own delta (its own base and version, recorded with the decision by
:mod:`edgegate.central.store.blacklist`), upserting one blacklist entry: the plate, reason
``overstay``, source ``central``, in force from the decision on, with no end. The entry is
built from the stored proposal alone, so publishing it again (after a broker failure) gives
the gates the same entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgegate.allowlist.importer import Delta
from edgegate.central import publish as pub
from edgegate.central.store import CentralStore
from edgegate.central.store import publications as recorded
from edgegate.central.store.blacklist import APPROVED, Proposal, Publication
from edgegate.core.codec import ns_to_datetime
from edgegate.core.domain import BlacklistEntry, BlacklistReason
from edgegate.observability import get_logger

log = get_logger("central.blacklist")

SOURCE = "central"


def _iso(ns: int) -> str:
    return ns_to_datetime(ns).astimezone(UTC).isoformat(timespec="seconds")


def entry(proposal: Proposal) -> BlacklistEntry:
    """The blacklist entry an approved ``proposal`` publishes."""
    if proposal.state != APPROVED or proposal.decided_at_ns is None:
        raise ValueError(f"proposal {proposal.id} is {proposal.state}, not approved")
    detail = (
        f"overstay: entered at {proposal.gate} (seq {proposal.seq}) {_iso(proposal.entered_at_ns)}"
        f", {proposal.limit} {_iso(proposal.deadline_ns)}; approved by {proposal.operator}:"
        f" {proposal.reason}"
    )
    return BlacklistEntry(
        id=proposal.entry_id,
        plate=proposal.plate,
        reason=BlacklistReason.OVERSTAY,
        detail=detail,
        source=SOURCE,
        # Whole seconds (the list's times are): in force from the second of the decision.
        valid_from=ns_to_datetime(proposal.decided_at_ns // 10**9 * 10**9),
    )


def messages(
    proposal: Proposal,
    publications: Sequence[Publication],
    *,
    site: str,
    key: Ed25519PrivateKey,
    now_ns: int,
) -> list[pub.Outgoing]:
    """One signed delta per gate of ``publications`` (not retained, like every delta)."""
    delta = Delta([entry(proposal)], [])
    out = []
    for p in publications:
        publication = pub.delta_publication(
            delta, version=p.version, base_version=p.base_version, now_ns=now_ns
        )
        payload = pub.signed_publication(publication, key)
        out.append(pub.Outgoing(site, p.gate, "allowlist", payload, retain=False))
    return out


def publish_approval(
    store: CentralStore,
    proposal: Proposal,
    *,
    site: str,
    key: Ed25519PrivateKey,
    send: Callable[[list[pub.Outgoing]], None],
    now_ns: int,
) -> tuple[Publication, ...]:
    """Publish an approved ``proposal``'s deltas not yet published: recorded as allow-list
    publications (by its operator), handed to ``send`` (which delivers them or raises
    ``PublishError``, leaving them pending), then noted as published. Returns what was
    published (nothing pending: nothing). The CLI and the dashboard both approve this way
    (the dashboard in the same three steps, sending off the store's thread)."""
    out = record_approval(store, proposal, site=site, key=key, now_ns=now_ns)
    if not out:
        return ()
    send(out)
    store.blacklist_published(proposal.id, [p.gate for p in proposal.pending])
    return proposal.pending


def record_approval(
    store: CentralStore,
    proposal: Proposal,
    *,
    site: str,
    key: Ed25519PrivateKey,
    now_ns: int,
) -> list[pub.Outgoing]:
    """:func:`publish_approval`'s first step: the signed deltas of ``proposal``'s pending
    publications, recorded as allow-list publications before they are sent."""
    pending = proposal.pending
    if not pending:
        return []
    out = messages(proposal, pending, site=site, key=key, now_ns=now_ns)
    by = f"{proposal.operator} (blacklist approval #{proposal.id})"
    store.record_publications(
        recorded.Publication(
            u.gate, u.version, recorded.DELTA, u.base_version, m.payload, now_ns, by
        )
        for u, m in zip(pending, out, strict=True)
    )
    return out


def log_decision(p: Proposal) -> None:
    """Log a recorded decision: who, what, why, about which stay."""
    log.info(
        "blacklist_decided",
        proposal=p.id,
        decision=p.state,
        operator=p.operator,
        reason=p.reason,
        plate=p.plate,
        entry_gate=p.gate,
        entry_seq=p.seq,
    )


def log_published(proposal: Proposal, pending: Sequence[Publication], site: str) -> None:
    """Log that ``proposal``'s ``pending`` deltas went out to the gates of ``site``."""
    log.info(
        "blacklist_published",
        proposal=proposal.id,
        plate=proposal.plate,
        entry=proposal.entry_id,
        versions={p.gate: p.version for p in pending},
        site=site,
    )
