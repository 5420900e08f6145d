"""The lane and its guard: how long a vehicle waits for one, and answers naming a decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgegate.config import ConfigError
from edgegate.core.events import (
    BarrierCommand,
    GuardWaitExpired,
    ManualActionKind,
    PlateNotRead,
    VehicleBackedOut,
)
from edgegate.core.lane import NS, LaneState, Manual
from edgegate.core.policy import Verdict
from edgegate.daemon.gate import lane_timings
from tests.gate_harness import gate_config, lane, one_lane_config, sim_plc, sim_reader
from tests.test_lane import Road


def test_a_vehicle_nobody_answers_for_is_given_up_on_after_guard_wait() -> None:
    road = Road()
    road.loops(arming=True)
    seq = road.plate(Verdict.CONFIRM)
    assert road.lane.next_deadline() == road.now + 120 * NS
    road.wait(119)
    assert road.state() is LaneState.AWAITING_GUARD
    assert road.records(GuardWaitExpired) == []
    road.wait(1)
    (expired,) = road.records(GuardWaitExpired)
    assert expired == GuardWaitExpired(
        lane="in-1", plate="苏E12345", decision_seq=seq, waited_ms=120_000
    )
    assert road.state() is LaneState.PRESENT
    assert road.lane.pending is None and road.lane.awaiting_since is None
    assert road.commands() == []
    road.wait(600)  # its plate was read: no plate.not-read, nothing else either
    assert road.records(PlateNotRead) == [] and road.commands() == []
    # A late confirmation of the abandoned decision does nothing...
    road.feed(Manual(ManualActionKind.CONFIRM, "guard-wang", "late", decision_seq=seq))
    assert road.commands() == []
    # ...a new read decides again.
    road.plate(Verdict.ALLOW)
    assert road.commands() == [BarrierCommand.OPEN]


def test_answered_in_time_or_backed_out_nothing_expires() -> None:
    road = Road()
    road.loops(arming=True)
    seq = road.plate(Verdict.CONFIRM)
    road.wait(60)
    road.feed(Manual(ManualActionKind.CONFIRM, "guard-wang", "waybill ok", decision_seq=seq))
    road.open_fully()
    road.drive_through()
    road.wait(300)
    assert road.records(GuardWaitExpired) == []

    road = Road()
    road.loops(arming=True)
    road.plate(Verdict.CONFIRM)
    road.loops()  # it backs out
    assert road.state() is LaneState.IDLE
    road.wait(300)
    assert road.records(GuardWaitExpired) == [] and len(road.records(VehicleBackedOut)) == 1


def test_a_new_read_while_waiting_restarts_the_wait() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate(Verdict.CONFIRM)
    road.wait(100)
    second = road.plate(Verdict.CONFIRM)
    road.wait(100)
    assert road.records(GuardWaitExpired) == []
    road.wait(20)
    (expired,) = road.records(GuardWaitExpired)
    assert isinstance(expired, GuardWaitExpired)
    assert (expired.decision_seq, expired.waited_ms) == (second, 120_000)


def test_an_answer_naming_another_decision_is_ignored() -> None:
    road = Road()
    road.loops(arming=True)
    first = road.plate(Verdict.CONFIRM)
    second = road.plate(Verdict.CONFIRM)  # another read: the guard saw the first one
    road.feed(Manual(ManualActionKind.CONFIRM, "guard-wang", "ok", decision_seq=first))
    road.feed(Manual(ManualActionKind.REFUSE, "guard-wang", "no", decision_seq=first))
    assert road.state() is LaneState.AWAITING_GUARD and road.commands() == []
    assert road.lane.pending is not None and road.lane.pending.seq == second
    road.feed(Manual(ManualActionKind.CONFIRM, "guard-wang", "ok", decision_seq=second))
    assert road.commands() == [BarrierCommand.OPEN]


def test_a_refusal_naming_the_pending_decision_sends_the_vehicle_back() -> None:
    road = Road()
    road.loops(arming=True)
    seq = road.plate(Verdict.CONFIRM)
    road.feed(Manual(ManualActionKind.REFUSE, "guard-wang", "no waybill", decision_seq=seq))
    assert road.state() is LaneState.PRESENT and road.lane.pending is None
    road.wait(300)
    assert road.records(GuardWaitExpired) == [] and road.commands() == []


def test_guard_wait_is_configured_per_gate_and_lane(tmp_path: Path) -> None:
    default = one_lane_config(tmp_path)
    assert lane_timings(default, "l1").guard_wait == 120 * NS
    devices = {"plc": sim_plc(), "cam": sim_reader(), "plc2": sim_plc(), "cam2": sim_reader()}
    lanes = [
        lane("l1", "entry", "cam", "plc"),
        lane("l2", "entry", "cam2", "plc2", timings={"guard_wait": "5min"}),
    ]
    config = gate_config(tmp_path, devices, lanes, timings={"guard_wait": "45s"})
    assert lane_timings(config, "l1").guard_wait == 45 * NS
    assert lane_timings(config, "l2").guard_wait == 300 * NS
    with pytest.raises(ConfigError) as caught:
        gate_config(tmp_path, devices, lanes, timings={"guard_wait": "2s"})
    assert caught.value.problems == [("timings.guard_wait", "must be between 10s and 1h, got 2s")]
