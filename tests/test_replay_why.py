"""The decision's trace (what the policy looked at) and ``replay why``'s explanation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edgegate.core import events as ev
from edgegate.core.allowlist import AllowList
from edgegate.core.domain import (
    BlacklistEntry,
    BlacklistReason,
    Direction,
    GateKind,
    HolderType,
    MatchKind,
    PlateColour,
    PlateRead,
    Registration,
    TemporaryPermit,
    VehicleCategory,
)
from edgegate.core.policy import decide
from edgegate.core.rules import GateRules

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _list() -> AllowList:
    return AllowList.from_credentials(
        [
            Registration(
                id="REG-1",
                plate="苏E12345",
                colour=PlateColour.BLUE,
                category=VehicleCategory.ORDINARY,
                holder=HolderType.COMPANY,
                organisation="Acme",
                valid_from=NOW - 30 * DAY,
                valid_until=NOW - DAY,
            ),
            TemporaryPermit(
                id="PER-1",
                plate="苏E12345",
                category=VehicleCategory.ORDINARY,
                visitor="v",
                host="h",
                valid_from=NOW - DAY,
                valid_until=NOW + DAY,
                gates=frozenset({"G1"}),
            ),
            BlacklistEntry(
                id="BL-1",
                plate="苏E12345",
                reason=BlacklistReason.SPEEDING,
                source="park-security",
                valid_from=NOW - 60 * DAY,
                valid_until=NOW - 40 * DAY,
            ),
            Registration(
                id="REG-2",
                plate="苏E99999",
                category=VehicleCategory.ORDINARY,
                holder=HolderType.COMPANY,
                organisation="Other",
                valid_from=NOW - DAY,
            ),
        ],
        version=7,
        updated_at=NOW - timedelta(hours=1),
    )


def test_a_decision_traces_the_read_candidates_credentials_and_rules() -> None:
    rules = GateRules.for_kind("G1", GateKind.ORDINARY, min_confidence=0.5)
    read = PlateRead(plate="苏e 1234s", colour=PlateColour.BLUE, confidence=0.9)
    decision = decide(rules, Direction.ENTRY, read, _list(), NOW)
    trace = decision.trace
    assert trace is not None
    assert trace.normalised == ("separators removed", "upper-cased")
    assert trace.candidates == (
        ev.TracedCandidate(
            plate="苏E12345", match=MatchKind.FUZZY, position=6, read_char="S", list_char="5"
        ),
    )
    # Only the candidate plate's credentials, each with the outcome of its checks.
    assert [(c.kind, c.id, c.checks) for c in trace.credentials] == [
        ("registration", "REG-1", ("registration-expired",)),
        ("permit", "PER-1", ("permit-valid",)),
        ("blacklist", "BL-1", ("blacklist-not-in-force",)),
    ]
    assert trace.credentials[1].gates == ("G1",)
    assert (trace.colour, trace.confidence, trace.decided_at) == (PlateColour.BLUE, 0.9, NOW)
    assert trace.rules.gate_kind is GateKind.ORDINARY
    assert trace.rules.admits == (
        VehicleCategory.ENGINEERING,
        VehicleCategory.ORDINARY,
        VehicleCategory.EMERGENCY,
    )
    assert (trace.rules.fuzzy_matching, trace.rules.min_confidence) == ("confirm", 0.5)
    assert trace.allowlist_updated_at == NOW - timedelta(hours=1)
    # The event carries it and it survives the stored form.
    event = decision.to_event(
        direction=Direction.ENTRY, plate_read=read.plate, lane="in-1", read_seq=3
    )
    assert ev.decode(ev.AccessDecided.TYPE, 4, ev.encode(event), "in-1") == event
    assert event.trace == trace
