"""Every allow-list publication central made, per gate, and each gate's version counter.

A publication (snapshot or delta) is recorded with the signed bytes exactly as published,
when and by whom, in the store *before* it is sent: what a gate may have received is always
on record. Its version comes from ``allowlist_versions``, the one per-gate counter both
publish paths use (``edgegate central publish-allowlist`` and blacklist approvals), bumped
atomically in the transaction that records the publication, so two publications never give
a gate the same version. The sink answers a gate's snapshot request from these records
(:func:`latest`): the newest snapshot and the deltas after it, republished as stored (no
key is needed to do so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edgegate.central.store import projections
from edgegate.central.store.model import StoreError
from edgegate.central.store.projections import Tx

SNAPSHOT, DELTA = "snapshot", "delta"

_BUMP_VERSION = (
    "INSERT INTO allowlist_versions (gate, version) VALUES (?, ?) ON CONFLICT (gate) DO UPDATE"
    " SET version = CASE WHEN excluded.version > allowlist_versions.version"
    " THEN excluded.version ELSE allowlist_versions.version + 1 END RETURNING version"
)
_COLUMNS = "gate, version, kind, base_version, payload, recorded_at_ns, recorded_by"


class VersionClashError(StoreError):
    """A version asked for that a gate was already given; the message names gate and version."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One signed allow-list publication to one gate, as published."""

    gate: str
    version: int
    kind: str
    """``snapshot`` or ``delta``."""
    base_version: int | None
    """A delta's base; None for a snapshot."""
    payload: bytes
    """The signed envelope, byte for byte as published."""
    recorded_at_ns: int
    recorded_by: str
    """Who or what published it (the operator and command, or the blacklist approval)."""


def reported_versions(tx: Tx) -> dict[str, int]:
    """Each known gate's allow-list version as it reported it (0: none yet)."""
    versions: dict[str, int] = {}
    for g in projections.gate_states(tx):
        known = [v for v in (g.allowlist_version, g.status_allowlist_version) if v is not None]
        versions[g.gate] = max(known, default=0)
    return versions


def next_version(tx: Tx, gate: str, at_least: int) -> int:
    """Bump ``gate``'s counter to ``at_least`` or, if it is there already, by one; the new
    version (atomic: a row lock on PostgreSQL, the write lock on SQLite)."""
    return int(tx._query(_BUMP_VERSION, (gate, at_least))[0][0])


def reserve(tx: Tx, gates: Sequence[str], version: int | None) -> dict[str, int]:
    """Each gate's version for a new publication: ``version`` if given (``VersionClashError``
    if a gate was given it or a later one already), else the next after the newest central
    knows of the gate (the larger of what it reported and its counter)."""
    reported = reported_versions(tx)
    out: dict[str, int] = {}
    for gate in gates:
        wanted = reported.get(gate, 0) + 1 if version is None else version
        got = next_version(tx, gate, wanted)
        if version is not None and got != version:
            raise VersionClashError(
                f"gate {gate} is at allow-list version {got - 1} already (central's"
                f" publications or its own report): version {version} would clash;"
                f" leave out --version to take the next ({got})"
            )
        out[gate] = got
    return out


def record(tx: Tx, publications: Iterable[Publication]) -> None:
    """Keep ``publications``; one published again (same gate and version, e.g. a blacklist
    delta after a broker failure) replaces the bytes recorded for it."""
    for p in publications:
        tx._exec(
            f"INSERT INTO allowlist_publications ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (gate, version) DO UPDATE SET payload = excluded.payload,"
            " recorded_at_ns = excluded.recorded_at_ns, recorded_by = excluded.recorded_by",
            (
                p.gate,
                p.version,
                p.kind,
                p.base_version,
                p.payload,
                p.recorded_at_ns,
                p.recorded_by,
            ),
        )


def publish(
    tx: Tx,
    gates: Sequence[str],
    version: int | None,
    build: Callable[[int], tuple[str, int | None, bytes]],
    recorded_by: str,
    now_ns: int,
) -> list[Publication]:
    """Reserve each gate's version, sign with ``build(version)`` -> (kind, base, signed
    bytes), record; in the caller's transaction."""
    made: dict[int, tuple[str, int | None, bytes]] = {}
    out = []
    for gate, v in reserve(tx, gates, version).items():
        if v not in made:
            made[v] = build(v)
        kind, base, payload = made[v]
        out.append(Publication(gate, v, kind, base, payload, now_ns, recorded_by))
    record(tx, out)
    return out


def latest(tx: Tx, gate: str) -> list[Publication]:
    """What brings ``gate`` up to date: its newest recorded snapshot, then the deltas
    recorded after it in version order; [] if central never published a snapshot to it."""
    rows = tx._query(
        "SELECT MAX(version) FROM allowlist_publications WHERE gate = ? AND kind = ?",
        (gate, SNAPSHOT),
    )
    if not rows or rows[0][0] is None:
        return []
    return history(tx, gate, after=int(rows[0][0]) - 1)


def history(tx: Tx, gate: str | None = None, *, after: int = 0) -> list[Publication]:
    """Recorded publications (of ``gate``) with a version above ``after``, by gate and
    version."""
    where, params = "version > ?", list[object]([after])
    if gate is not None:
        where += " AND gate = ?"
        params.append(gate)
    return [
        Publication(
            str(g), int(v), str(k), None if b is None else int(b), bytes(p), int(at), str(by)
        )
        for g, v, k, b, p, at, by in tx._query(
            f"SELECT {_COLUMNS} FROM allowlist_publications WHERE {where} ORDER BY gate, version",
            params,
        )
    ]
