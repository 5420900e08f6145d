"""What the central store takes and gives back: batches, results, dead letters, errors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

RowLike = Sequence[Any]
"""A row as received: ``Row`` fields in a list or tuple (msgpack gives lists)."""

DEAD_PAYLOAD_PREFIX = 4096
"""Bytes of a dead payload kept by default (and by migration 2 of older rows)."""


@dataclass(frozen=True, slots=True)
class DeadLetterLimits:
    """What dead letters may cost: ``payload_prefix`` bytes of each payload are kept (with
    its size and SHA-256), and the newest ``per_gate`` dead letters of each gate."""

    payload_prefix: int = DEAD_PAYLOAD_PREFIX
    per_gate: int = 1000

    def __post_init__(self) -> None:
        if self.payload_prefix < 0 or self.per_gate < 1:
            raise ValueError("dead letter limits: payload_prefix >= 0, per_gate >= 1")


class StoreError(RuntimeError):
    """The central database failed; nothing of the failed call was committed."""


class DsnError(StoreError, ValueError):
    """The store DSN cannot be used; the message names the problem."""


class SchemaError(StoreError):
    """The database's schema was written by newer software."""


class StoreClosedError(StoreError):
    """The store is closed."""


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Outcome of one batch; every field is as committed.

    ``acked_seq``: the gate's head after the batch (ack it). ``resend_from``: ask the gate to
    resend from this seq (gap, or rows refused), else None. ``stored``: new rows stored;
    ``duplicates``: rows already held. ``dead_lettered``: rows refused into dead_letters, with
    ``fault`` saying why (also None/0 for a gap, which is not a fault of the payload).
    """

    acked_seq: int
    resend_from: int | None
    stored: int
    duplicates: int
    dead_lettered: int = 0
    fault: str | None = None


class Batch(NamedTuple):
    """One gate's rows as received, and where they came from (e.g. the MQTT topic or URL)."""

    gate: str
    rows: Sequence[RowLike]
    source: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    received_at_ns: int
    source: str
    gate: str | None
    payload: bytes
    """The payload's first ``DeadLetterLimits.payload_prefix`` bytes."""
    reason: str
    payload_size: int
    """The whole payload's size in bytes."""
    payload_sha256: bytes
    """The whole payload's SHA-256."""

    @property
    def truncated(self) -> bool:
        return self.payload_size > len(self.payload)


@dataclass(frozen=True, slots=True)
class DeadLetterDrops:
    """Dead letters of a gate (None: of no known gate) deleted to keep within the cap."""

    gate: str | None
    letters: int
    payload_bytes: int
    """Their payloads' sizes, summed (as received, not as kept)."""
    last_dropped_at_ns: int


@dataclass(frozen=True, slots=True)
class AdmissionReview:
    """An entry admitted offline by a credential central had revoked by then."""

    gate: str
    seq: int
    plate: str
    credential_kind: str
    credential_id: str
    revoked_at_ns: int
    decided_at_ns: int
    noted_at_ns: int


class BackendMissingError(StoreError):
    """The DSN names a backend whose client library is not installed."""


@dataclass
class Where:
    """A query's ``WHERE`` conditions and their parameters, built from optional filters.

    :meth:`among` with no values means nothing can match: the caller returns no rows without
    asking the database."""

    conditions: list[str] = field(default_factory=list)
    params: list[object] = field(default_factory=list)

    def add(self, condition: str, *params: object) -> None:
        self.conditions.append(condition)
        self.params.extend(params)

    def among(self, column: str, values: Iterable[object]) -> bool:
        """``column IN (...)`` the distinct ``values``; False (add nothing) if there are none."""
        wanted = sorted(set(values), key=str)
        if not wanted:
            return False
        self.add(f"{column} IN ({', '.join('?' * len(wanted))})", *wanted)
        return True

    def sql(self) -> str:
        """`` WHERE …`` (with its leading space), or nothing without conditions."""
        return f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""
