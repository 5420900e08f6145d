"""What a gate's policy is configured with: the pure-core view of a gate configuration."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from edgegate.core.domain import Direction, GateKind, VehicleCategory

C = VehicleCategory

#: The most a gate of each kind may ever admit, per direction (docs/design.md §1). A gate's
#: configuration may narrow this (a park lets hazmat in through gates 1-3 only) but never widen.
KIND_ADMITS: Mapping[GateKind, Mapping[Direction, frozenset[VehicleCategory]]] = MappingProxyType(
    {
        GateKind.COMPREHENSIVE: MappingProxyType(
            {
                Direction.ENTRY: frozenset(
                    {C.HAZMAT, C.HAZWASTE, C.ENGINEERING, C.ORDINARY, C.EMERGENCY}
                ),
                Direction.EXIT: frozenset(
                    {C.HAZMAT, C.HAZWASTE, C.ENGINEERING, C.ORDINARY, C.EMERGENCY}
                ),
            }
        ),
        GateKind.ORDINARY: MappingProxyType(
            {
                Direction.ENTRY: frozenset({C.ENGINEERING, C.ORDINARY, C.EMERGENCY}),
                Direction.EXIT: frozenset({C.ENGINEERING, C.ORDINARY, C.EMERGENCY}),
            }
        ),
        # Normally closed to all but rescue vehicles. In incident mode it is an evacuation exit:
        # incident handling opens and holds the lanes; it does not go through this table.
        GateKind.EMERGENCY: MappingProxyType(
            {
                Direction.ENTRY: frozenset({C.EMERGENCY}),
                Direction.EXIT: frozenset({C.EMERGENCY}),
            }
        ),
    }
)

#: Default longest stay inside the park per category; None means no limit.
DEFAULT_DWELL_LIMITS: Mapping[VehicleCategory, timedelta | None] = MappingProxyType(
    {
        C.HAZMAT: timedelta(hours=6),
        C.HAZWASTE: timedelta(hours=6),
        C.ENGINEERING: timedelta(hours=12),
        C.ORDINARY: None,
        C.EMERGENCY: None,
    }
)


class StaleAction(enum.StrEnum):
    """What the policy does when the allow-list is older than allowed."""

    NOTE = "note"  # decide as usual, record the staleness in the decision
    CONFIRM = "confirm"  # entries that would be allowed need a guard's confirmation
    DENY_ENTRIES = "deny-entries"  # refuse entries; exits decide as usual


class ColourMismatchAction(enum.StrEnum):
    """What the policy does when the read plate colour differs from the registered colour."""

    IGNORE = "ignore"
    NOTE = "note"  # record a reason, decide as usual
    CONFIRM = "confirm"  # an allow becomes a guard confirmation


class FuzzyMatching(enum.StrEnum):
    """What a plate matched only fuzzily (one OCR-confusable character away from a listed
    plate: a well-formed plate that may belong to another vehicle) does at an entry. Exits
    are decided the same way in every mode but ``off``."""

    OFF = "off"  # only an exact match identifies a vehicle
    CONFIRM = "confirm"  # an entry matched only fuzzily needs a guard, whatever the category
    ALLOW = "allow"  # ordinary categories may enter; hazmat, hazwaste, a blacklist never


@dataclass(frozen=True, slots=True, kw_only=True)
class GateRules:
    """The policy-relevant part of a gate's configuration."""

    gate_id: str
    kind: GateKind
    admits: Mapping[Direction, frozenset[VehicleCategory]]
    dwell_limits: Mapping[VehicleCategory, timedelta | None] = field(
        default_factory=lambda: DEFAULT_DWELL_LIMITS
    )
    timezone: str = "Asia/Shanghai"
    allowlist_max_age: timedelta | None = timedelta(hours=72)
    on_stale_allowlist: StaleAction = StaleAction.CONFIRM
    colour_mismatch: ColourMismatchAction = ColourMismatchAction.NOTE
    fuzzy_matching: FuzzyMatching = FuzzyMatching.CONFIRM
    min_confidence: float = 0.0  # reads below this need a guard's confirmation to pass

    @classmethod
    def for_kind(cls, gate_id: str, kind: GateKind, **kwargs: object) -> GateRules:
        """Rules admitting everything the gate kind allows (no narrowing)."""
        return cls(gate_id=gate_id, kind=kind, admits=KIND_ADMITS[kind], **kwargs)  # type: ignore[arg-type]
