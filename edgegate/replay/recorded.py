"""The credentials and rules a v4 decision recorded in its trace, turned back into what the
policy takes (``Credentials`` by plate, ``GateRules``), so that what-if can take the decision
again without the allow-list or the configuration as they were."""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType
from typing import Any

from edgegate.core.domain import (
    AllowListView,
    Appointment,
    BlacklistEntry,
    BlacklistReason,
    Credentials,
    Direction,
    FuzzyMatch,
    HolderType,
    Registration,
    TemporaryPermit,
    VehicleCategory,
    VehicleFields,
)
from edgegate.core.events import DecisionTrace, TracedCredential, TracedRules
from edgegate.core.plates import confusable_variants
from edgegate.core.rules import (
    ColourMismatchAction,
    FuzzyMatching,
    GateRules,
    StaleAction,
)


class TraceError(ValueError):
    """A recorded credential that cannot be taken again (names which and why)."""


def recorded_credential(
    c: TracedCredential,
) -> Registration | TemporaryPermit | Appointment | BlacklistEntry:
    """The credential as the policy saw it (fields the policy never reads left blank)."""
    if c.kind not in ("registration", "permit", "appointment"):
        return BlacklistEntry(
            id=c.id,
            plate=c.plate,
            reason=BlacklistReason.OTHER,
            source="",
            valid_from=c.valid_from,
            valid_until=c.valid_until,
        )
    vehicle = VehicleFields(id=c.id, plate=c.plate, colour=c.colour, gates=frozenset(c.gates))
    category = c.category or VehicleCategory.ORDINARY
    if c.kind == "registration":
        return Registration(
            **vehicle,
            category=category,
            holder=HolderType.COMPANY,
            organisation="",
            valid_from=c.valid_from,
            valid_until=c.valid_until,
        )
    if c.valid_until is None:
        raise TraceError(f"recorded {c.kind} {c.id} has no end to its window")
    if c.kind == "permit":
        return TemporaryPermit(
            **vehicle,
            category=category,
            visitor="",
            host="",
            valid_from=c.valid_from,
            valid_until=c.valid_until,
        )
    return Appointment(
        **vehicle,
        category=category,
        window_start=c.valid_from,
        window_end=c.valid_until,
        destination="",
        un_number="",
        hazard_class="",
        waybill="",
        consumed=c.consumed,
    )


class RecordedView:
    """An allow-list view holding only the credentials a decision recorded, in their order."""

    def __init__(self, trace: DecisionTrace, version: int) -> None:
        self._by_plate = _by_plate(trace.credentials)
        self.version = version
        self.updated_at = trace.allowlist_updated_at
        self.tampered = trace.allowlist_tampered

    def exact(self, plate: str) -> Credentials:
        return self._by_plate.get(plate) or Credentials(plate)

    def fuzzy(self, plate: str) -> list[FuzzyMatch]:
        return [
            FuzzyMatch(self._by_plate[variant], position, read_char, list_char)
            for variant, position, read_char, list_char in confusable_variants(plate)
            if variant in self._by_plate
        ]


_BY_PLATE: dict[tuple[TracedCredential, ...], dict[str, Credentials]] = {}


def _by_plate(credentials: tuple[TracedCredential, ...]) -> dict[str, Credentials]:
    """The recorded credentials grouped by plate, built once per distinct set (a plate's
    credentials recur all week); never changed once built."""
    found = _BY_PLATE.get(credentials)
    if found is None:
        groups: dict[str, list[Any]] = {}
        for c in credentials:
            groups.setdefault(c.plate, []).append(recorded_credential(c))
        if len(_BY_PLATE) >= 65_536:
            _BY_PLATE.clear()
        found = _BY_PLATE[credentials] = {
            plate: _group(plate, creds) for plate, creds in groups.items()
        }
    return found


def _group(plate: str, creds: list[Any]) -> Credentials:
    return Credentials(
        plate,
        tuple(c for c in creds if isinstance(c, Registration)),
        tuple(c for c in creds if isinstance(c, TemporaryPermit)),
        tuple(c for c in creds if isinstance(c, Appointment)),
        tuple(c for c in creds if isinstance(c, BlacklistEntry)),
    )


_RECORDED_RULES: dict[tuple[TracedRules, Direction], GateRules] = {}


def recorded_rules(trace: DecisionTrace, direction: Direction) -> GateRules:
    """The rules a decision recorded (its direction's admitted categories)."""
    key = (trace.rules, direction)
    found = _RECORDED_RULES.get(key)
    if found is None:
        if len(_RECORDED_RULES) >= 256:
            _RECORDED_RULES.clear()
        found = _RECORDED_RULES[key] = _rules_of(trace.rules, direction)
    return found


def _rules_of(r: TracedRules, direction: Direction) -> GateRules:
    return GateRules(
        gate_id=r.gate_id,
        kind=r.gate_kind,
        admits=MappingProxyType({direction: frozenset(r.admits)}),
        allowlist_max_age=r.allowlist_max_age,
        on_stale_allowlist=StaleAction(r.on_stale_allowlist),
        colour_mismatch=ColourMismatchAction(r.colour_mismatch),
        fuzzy_matching=FuzzyMatching(r.fuzzy_matching),
        min_confidence=r.min_confidence,
    )


class Aged:
    """A view of ``base`` with the version, update time and integrity a decision recorded,
    so that staleness and tampering are judged as they were."""

    def __init__(
        self, base: AllowListView, version: int, updated_at: datetime | None, tampered: bool
    ) -> None:
        self._base = base
        self.version = version
        self.updated_at = updated_at
        self.tampered = tampered

    def exact(self, plate: str) -> Credentials:
        return self._base.exact(plate)

    def fuzzy(self, plate: str) -> list[FuzzyMatch]:
        return self._base.fuzzy(plate)
