"""Event classes: every type round-trips, old versions upcast, bad payloads are named."""

from __future__ import annotations

import msgpack
import pytest

from edgegate.core import events as ev
from tests.event_samples import all_samples


def test_every_registered_type_has_a_sample() -> None:
    sampled = {type(e).TYPE for e in all_samples()}
    assert sampled == set(ev.registered_types())


@pytest.mark.parametrize("event", all_samples(), ids=lambda e: type(e).TYPE)
def test_round_trip(event: ev.Event) -> None:
    cls = type(event)
    back = ev.decode(cls.TYPE, cls.VERSION, ev.encode(event), event.lane)
    assert back == event


def test_plate_read_v1_is_upcast_to_v2() -> None:
    stored_v1 = msgpack.packb(
        {
            "plate": "粤B12345",
            "colour": "blue",
            "confidence_pct": 87,
            "reader": "cam-1",
            "raw": b"\x02x\x03",
        }
    )
    event = ev.decode("plate.read", 1, stored_v1, "in-1")
    assert isinstance(event, ev.PlateRead)
    assert event.confidence == pytest.approx(0.87)
    assert event.image_ref == ""
    assert event.lane == "in-1"


def test_access_decided_v1_is_upcast_to_v2_without_explanation() -> None:
    sample = next(e for e in all_samples() if isinstance(e, ev.AccessDecided))
    stored = msgpack.unpackb(ev.encode(sample))
    del stored["explanation"], stored["corrected_by"], stored["corrects_seq"], stored["trace"]
    event = ev.decode("access.decided", 1, msgpack.packb(stored), sample.lane)
    assert isinstance(event, ev.AccessDecided)
    assert event.explanation == ""
    assert event.plate == sample.plate


def test_access_decided_v2_is_upcast_to_v3_as_a_reader_decision() -> None:
    sample = next(e for e in all_samples() if isinstance(e, ev.AccessDecided))
    stored = msgpack.unpackb(ev.encode(sample))
    del stored["corrected_by"], stored["corrects_seq"], stored["trace"]
    event = ev.decode("access.decided", 2, msgpack.packb(stored), sample.lane)
    assert isinstance(event, ev.AccessDecided)
    assert (event.corrected_by, event.corrects_seq) == (None, None)
    assert event.explanation == sample.explanation


def test_access_decided_v3_is_upcast_to_v4_with_its_trace_not_recorded() -> None:
    sample = next(e for e in all_samples() if isinstance(e, ev.AccessDecided))
    assert sample.trace is not None
    stored = msgpack.unpackb(ev.encode(sample))
    del stored["trace"]
    event = ev.decode("access.decided", 3, msgpack.packb(stored), sample.lane)
    assert isinstance(event, ev.AccessDecided)
    assert event.trace is None
    assert event.reasons == sample.reasons


def test_access_decided_v4_keeps_its_trace() -> None:
    sample = next(e for e in all_samples() if isinstance(e, ev.AccessDecided))
    event = ev.decode("access.decided", 4, ev.encode(sample), sample.lane)
    assert event == sample


def test_manual_action_v1_is_upcast_without_a_plate() -> None:
    stored_v1 = msgpack.packb(
        {"action": "confirm", "operator": "guard-wang", "reason": "known", "decision_seq": 9}
    )
    event = ev.decode("manual.action", 1, stored_v1, "in-1")
    assert isinstance(event, ev.ManualAction)
    assert (event.action, event.decision_seq, event.plate) == (ev.ManualActionKind.CONFIRM, 9, None)


def test_vehicle_passed_v1_is_upcast_to_a_plain_pass() -> None:
    stored_v1 = msgpack.packb(
        {"plate": "苏E12345", "direction": "entry", "category": None, "decision_seq": 7}
    )
    event = ev.decode("vehicle.passed", 1, stored_v1, "in-1")
    assert isinstance(event, ev.VehiclePassed)
    assert (event.decision_seq, event.unauthorised) == (7, False)


def test_park_consumed_v1_is_upcast_without_the_consuming_gates() -> None:
    stored_v1 = msgpack.packb({"site": "s", "seq": 3, "appointments": ["APT-1", "APT-2"]})
    event = ev.decode("park.consumed", 1, stored_v1, None)
    assert isinstance(event, ev.ParkConsumed)
    assert event.gates == ("", "") and event.gate_of("APT-1") is None


def test_newer_version_than_known_is_refused_not_guessed() -> None:
    payload = ev.encode(all_samples()[0])
    with pytest.raises(ev.EventDecodeError, match=r"plate.read v3 is newer"):
        ev.decode("plate.read", 3, payload)


def test_unknown_type_is_named() -> None:
    with pytest.raises(ev.EventDecodeError, match=r"unknown event type 'no\.such'"):
        ev.decode("no.such", 1, msgpack.packb({}))


def test_garbled_payload_is_named() -> None:
    with pytest.raises(ev.EventDecodeError, match=r"loop\.changed v1: payload is not msgpack"):
        ev.decode("loop.changed", 1, b"\xc1")
    with pytest.raises(ev.EventDecodeError, match=r"loop\.changed v1: .*unexpected field 'bogus'"):
        ev.decode("loop.changed", 1, msgpack.packb({"bogus": 1}))


def test_naive_datetimes_are_refused() -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="naive datetime"):
        ev.encode(
            ev.OverstayDetected(
                plate="粤B12345",
                category=None,
                entered_at=datetime(2026, 1, 1),
                limit="dwell",
                deadline=datetime(2026, 1, 1),
            )
        )
