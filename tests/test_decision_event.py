"""A decision becomes an ``access.decided`` event that keeps every reason and the version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edgegate.core import events as ev
from edgegate.core.allowlist import AllowList
from edgegate.core.domain import (
    Appointment,
    Direction,
    GateKind,
    PlateColour,
    PlateRead,
    VehicleCategory,
)
from edgegate.core.policy import decide
from edgegate.core.rules import GateRules

NOW = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)


def test_decision_to_event_round_trips() -> None:
    apt = Appointment(
        id="APT-1",
        plate="苏E12345",
        colour=PlateColour.YELLOW,
        category=VehicleCategory.HAZMAT,
        window_start=NOW - timedelta(hours=1),
        window_end=NOW + timedelta(hours=23),
        destination="Yangzi Petrochemical",
        un_number="1203",
        hazard_class="3",
        waybill="EW2026112800017",
        gates=frozenset({"fengxiang-road"}),
    )
    view = AllowList.from_credentials([apt], version=7, updated_at=NOW - timedelta(minutes=5))
    rules = GateRules.for_kind("fengxiang-road", GateKind.COMPREHENSIVE)
    read = PlateRead(plate="苏E 12345", colour=PlateColour.YELLOW, confidence=0.95)
    decision = decide(rules, Direction.ENTRY, read, view, NOW)
    event = decision.to_event(
        direction=Direction.ENTRY, plate_read=read.plate, lane="in-1", read_seq=41
    )
    assert event.verdict == "allow"
    assert "appointment-valid" in event.reasons
    assert event.consumed_appointment == "APT-1"
    assert event.allowlist_version == 7
    assert event.credential_until == apt.window_end
    back = ev.decode(event.TYPE, event.VERSION, ev.encode(event), event.lane)
    assert back == event
