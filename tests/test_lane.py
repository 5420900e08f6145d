"""The lane state machine, transition by transition, on a clock the test controls."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegate.core.domain import CredentialKind, Direction, MatchKind, VehicleCategory
from edgegate.core.events import (
    BarrierCommand,
    DeviceFault,
    DeviceRecovered,
    ManualActionKind,
    PlateNotRead,
    TailgateSuspected,
    VehicleBackedOut,
    VehiclePassed,
)
from edgegate.core.lane import (
    NS,
    Action,
    Barrier,
    BarrierOnline,
    Command,
    Decided,
    IncidentHold,
    Lane,
    LaneInput,
    LaneSetup,
    LaneState,
    LaneTimings,
    Loops,
    Manual,
    Record,
)
from edgegate.core.policy import CredentialRef, Decision, Verdict

TIMINGS = LaneTimings(
    plate_wait=5 * NS,
    plate_early=3 * NS,
    open_travel=6 * NS,
    close_travel=6 * NS,
    pass_timeout=60 * NS,
    close_delay=1 * NS,
    loop_fault_after=600 * NS,
)


def decision(
    verdict: Verdict = Verdict.ALLOW, plate: str = "苏E12345", appointment: str | None = None
) -> Decision:
    return Decision(
        verdict=verdict,
        reasons=(),
        plate=plate,
        matched_plate=plate,
        match=MatchKind.EXACT,
        category=VehicleCategory.HAZMAT if appointment else VehicleCategory.ORDINARY,
        credential=CredentialRef(CredentialKind.REGISTRATION, "REG-1"),
        credential_until=None,
        consume_appointment=appointment,
        allowlist_version=1,
        allowlist_age_s=1.0,
        allowlist_stale=False,
    )


@dataclass
class Road:
    """A lane and a clock; records every action for assertions."""

    exit_loop: bool = True
    direction: Direction = Direction.ENTRY
    now: int = 1_000 * NS
    lane: Lane = field(init=False)
    actions: list[Action] = field(default_factory=list)
    seq: int = 100

    def __post_init__(self) -> None:
        self.lane = Lane(
            LaneSetup("in-1", self.direction, "plc-1", "plc-1", self.exit_loop, TIMINGS)
        )

    def state(self) -> LaneState:
        return self.lane.state

    def feed(self, event: LaneInput) -> list[Action]:
        out = self.lane.handle(event, self.now)
        self.actions += out
        return out

    def wait(self, seconds: float) -> list[Action]:
        """Advance the clock, ticking at every deadline on the way, like the shell does."""
        end = self.now + int(seconds * NS)
        out: list[Action] = []
        while True:
            deadline = self.lane.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            out += self.lane.tick(self.now)
        self.now = end
        out += self.lane.tick(self.now)
        self.actions += out
        return out

    def loops(self, arming: bool = False, safety: bool = False, exit: bool = False) -> list[Action]:
        return self.feed(Loops(arming, safety, exit))

    def barrier(self, up: bool, down: bool, fault: bool = False) -> list[Action]:
        return self.feed(Barrier(up, down, fault))

    def plate(self, verdict: Verdict = Verdict.ALLOW, appointment: str | None = None) -> int:
        self.seq += 1
        self.feed(Decided(decision(verdict, appointment=appointment), self.seq))
        return self.seq

    def commands(self) -> list[BarrierCommand]:
        return [a.command for a in self.actions if isinstance(a, Command)]

    def records(self, kind: type) -> list[object]:
        return [
            a.event for a in self.actions if isinstance(a, Record) and isinstance(a.event, kind)
        ]

    def open_fully(self) -> None:
        self.barrier(up=False, down=False)
        self.barrier(up=True, down=False)

    def close_fully(self) -> None:
        self.barrier(up=False, down=False)
        self.barrier(up=False, down=True)

    def drive_through(self) -> None:
        """A vehicle moves from the arming loop over the safety loop and the exit loop."""
        self.loops(arming=True, safety=True)
        self.loops(safety=True)
        self.loops(safety=True, exit=True)
        self.loops(exit=True)
        self.loops()


@pytest.mark.parametrize("plate_first", [False, True])
def test_decision_logged_after_handling_links_later_records(plate_first: bool) -> None:
    """The shell feeds a decision before its commit gives it a seq; what the lane records
    later names the seq it was given."""
    road = Road()
    if not plate_first:
        road.loops(arming=True)
    fed = Decided(decision(Verdict.ALLOW), 0)
    road.feed(fed)
    road.lane.decision_logged(fed, 777)
    if plate_first:
        road.loops(arming=True)
    (cmd,) = [a for a in road.actions if isinstance(a, Command)]
    # Fed while the vehicle waits, the command comes at once and the shell links the one it
    # logs with the decision; fed early, the command comes later and names the logged seq.
    assert cmd.cause_seq == (777 if plate_first else 0)
    road.open_fully()
    road.drive_through()
    (passed,) = road.records(VehiclePassed)
    assert isinstance(passed, VehiclePassed)
    assert passed.decision_seq == 777


def test_loop_then_plate_opens_then_pass_then_close() -> None:
    road = Road()
    road.loops(arming=True)
    assert road.state() is LaneState.PRESENT
    seq = road.plate()
    assert road.commands() == [BarrierCommand.OPEN]
    (cmd,) = [a for a in road.actions if isinstance(a, Command)]
    assert cmd.cause_seq == seq
    assert road.state() is LaneState.OPENING
    road.open_fully()
    assert road.state() is LaneState.OPEN
    road.drive_through()
    (passed,) = road.records(VehiclePassed)
    assert isinstance(passed, VehiclePassed)
    assert passed.decision_seq == seq
    assert passed.plate == "苏E12345"
    assert road.commands() == [BarrierCommand.OPEN]  # not before the close delay
    road.wait(1.0)
    assert road.commands() == [BarrierCommand.OPEN, BarrierCommand.CLOSE]
    assert road.state() is LaneState.CLOSING
    road.close_fully()
    assert road.state() is LaneState.IDLE


def test_plate_before_loop_is_used_when_the_vehicle_arrives() -> None:
    road = Road()
    road.plate()
    assert road.commands() == []
    road.wait(2.0)
    road.loops(arming=True)
    assert road.commands() == [BarrierCommand.OPEN]


def test_plate_long_before_loop_is_not_used() -> None:
    road = Road()
    road.plate()
    road.wait(3.5)
    road.loops(arming=True)
    assert road.commands() == []
    assert road.state() is LaneState.PRESENT


def test_plate_never_read_is_recorded_once() -> None:
    road = Road()
    road.loops(arming=True)
    road.wait(4.9)
    assert road.records(PlateNotRead) == []
    road.wait(0.2)
    (missing,) = road.records(PlateNotRead)
    assert isinstance(missing, PlateNotRead)
    assert missing.waited_ms == 5000
    road.wait(30)
    assert len(road.records(PlateNotRead)) == 1
    assert road.commands() == []


def test_refused_vehicle_backs_out() -> None:
    road = Road()
    road.loops(arming=True)
    seq = road.plate(Verdict.DENY)
    assert road.commands() == []
    road.loops()
    (back,) = road.records(VehicleBackedOut)
    assert isinstance(back, VehicleBackedOut)
    assert back.decision_seq == seq
    assert road.state() is LaneState.IDLE


def test_admitted_vehicle_backs_out_and_arm_closes() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate()
    road.open_fully()
    road.loops()  # arming clears, nothing under the arm
    road.wait(1.0)  # confirmed as a back-out after the close delay
    assert len(road.records(VehicleBackedOut)) == 1
    road.wait(1.0)
    assert road.commands() == [BarrierCommand.OPEN, BarrierCommand.CLOSE]


def test_moving_forward_between_polls_is_not_a_back_out() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate()
    road.open_fully()
    road.loops()  # arming cleared before the safety loop is seen...
    road.wait(0.05)
    road.loops(safety=True)  # ...the next poll shows it under the arm
    road.loops(exit=True)
    road.loops()
    assert road.records(VehicleBackedOut) == []
    assert len(road.records(VehiclePassed)) == 1


def test_guard_confirmation() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate(Verdict.CONFIRM)
    assert road.state() is LaneState.AWAITING_GUARD
    assert road.commands() == []
    road.feed(Manual(ManualActionKind.CONFIRM, "guard-wang", "checked the waybill"))
    assert road.commands() == [BarrierCommand.OPEN]


def test_guard_refusal() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate(Verdict.CONFIRM)
    road.feed(Manual(ManualActionKind.REFUSE, "guard-wang", "no waybill"))
    assert road.state() is LaneState.PRESENT
    assert road.commands() == []


def test_never_closes_on_an_occupied_safety_loop() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate()
    road.open_fully()
    road.loops(safety=True)  # the vehicle stops under the arm
    road.wait(600)
    assert BarrierCommand.CLOSE not in road.commands()
    road.loops(exit=True)
    road.loops()
    road.wait(1.0)
    assert road.commands()[-1] is BarrierCommand.CLOSE


def test_safety_loop_occupied_while_closing_raises_the_arm() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate()
    road.open_fully()
    road.drive_through()
    road.wait(1.0)
    road.barrier(up=False, down=False)  # closing
    road.loops(safety=True)  # someone steps in under the arm
    assert road.commands() == [BarrierCommand.OPEN, BarrierCommand.CLOSE, BarrierCommand.OPEN]
    assert road.state() is LaneState.OPENING
    road.barrier(up=True, down=False)
    road.loops(exit=True)
    road.loops()
    (tailgate,) = road.records(TailgateSuspected)
    assert isinstance(tailgate, TailgateSuspected)
    assert "re-opened" in tailgate.detail
    road.wait(1.0)
    assert road.commands()[-1] is BarrierCommand.CLOSE


def test_two_vehicles_on_one_opening_is_a_suspected_tailgate() -> None:
    road = Road()
    road.loops(arming=True)
    seq = road.plate()
    road.open_fully()
    road.loops(arming=True, safety=True)
    road.loops(safety=True, exit=True)
    road.loops(arming=True, exit=True)  # the second vehicle follows closely
    road.loops(arming=False, safety=True, exit=True)
    road.loops(safety=True, exit=False)
    road.loops(exit=True)
    road.loops()
    (tailgate,) = road.records(TailgateSuspected)
    assert isinstance(tailgate, TailgateSuspected)
    assert tailgate.decision_seq == seq
    assert len(road.records(VehiclePassed)) == 1


def test_without_exit_loop_the_safety_loop_marks_the_pass() -> None:
    road = Road(exit_loop=False)
    road.loops(arming=True)
    road.plate()
    road.open_fully()
    road.loops(arming=True, safety=True)
    road.loops(safety=True)
    road.loops()
    assert len(road.records(VehiclePassed)) == 1
    road.loops(safety=True)  # something else crosses before the arm is down
    assert len(road.records(TailgateSuspected)) == 1


def test_barrier_open_timeout_is_a_fault_and_recovers() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate()
    road.barrier(up=False, down=False)
    road.wait(6.0)
    (fault,) = road.records(DeviceFault)
    assert isinstance(fault, DeviceFault)
    assert fault.code == "barrier-open-timeout"
    assert road.state() is LaneState.FAULT
    road.barrier(up=True, down=False)  # the arm gets there in the end
    assert len(road.records(DeviceRecovered)) == 1
    road.loops()  # the vehicle left without passing: close once clear
    road.wait(1.0)
    assert road.commands()[-1] is BarrierCommand.CLOSE


def test_barrier_close_timeout_is_a_fault() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate()
    road.open_fully()
    road.drive_through()
    road.wait(1.0)
    road.barrier(up=False, down=False)
    road.wait(6.0)
    fault = road.records(DeviceFault)[-1]
    assert isinstance(fault, DeviceFault)
    assert fault.code == "barrier-close-timeout"


def test_fault_input_from_plc() -> None:
    road = Road()
    road.barrier(up=False, down=True, fault=True)
    fault = road.records(DeviceFault)[-1]
    assert isinstance(fault, DeviceFault)
    assert fault.code == "barrier-fault-input"
    road.loops(arming=True)
    road.plate()
    assert road.commands() == []  # a faulty barrier is not commanded
    road.barrier(up=False, down=True, fault=False)
    assert len(road.records(DeviceRecovered)) == 1
    # The vehicle still waiting with its allowed decision gets its opening now.
    assert road.commands() == [BarrierCommand.OPEN]


def test_stuck_safety_loop_is_a_loop_fault_and_blocks_closing() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate()
    road.open_fully()
    road.loops(safety=True)
    road.wait(600)
    fault = road.records(DeviceFault)[-1]
    assert isinstance(fault, DeviceFault)
    assert fault.code == "loop-stuck"
    assert fault.device == "plc-1:safety-loop"
    assert BarrierCommand.CLOSE not in road.commands()
    road.loops()
    assert len(road.records(DeviceRecovered)) == 1


def test_manual_open_is_never_overridden_by_automatic_closing() -> None:
    road = Road()
    road.feed(Manual(ManualActionKind.OPEN, "guard-li", "escort"))
    assert road.commands() == [BarrierCommand.OPEN]
    road.open_fully()
    road.drive_through()
    road.wait(3600)
    assert road.commands() == [BarrierCommand.OPEN]
    assert len(road.records(VehiclePassed)) == 1
    road.feed(Manual(ManualActionKind.RELEASE, "guard-li", "done"))
    road.wait(1.0)
    assert road.commands() == [BarrierCommand.OPEN, BarrierCommand.CLOSE]


def test_manual_release_waits_for_a_clear_lane() -> None:
    road = Road()
    road.feed(Manual(ManualActionKind.OPEN, "guard-li", "escort"))
    road.open_fully()
    road.loops(safety=True)
    road.feed(Manual(ManualActionKind.RELEASE, "guard-li", "done"))
    road.wait(30)
    assert BarrierCommand.CLOSE not in road.commands()
    road.loops()
    road.wait(1.0)
    assert road.commands()[-1] is BarrierCommand.CLOSE


def test_incident_hold_opens_and_records_every_vehicle_leaving() -> None:
    road = Road(direction=Direction.EXIT)
    road.feed(IncidentHold(True))
    assert road.commands() == [BarrierCommand.OPEN]
    road.open_fully()
    for _ in range(3):
        road.plate()
        road.drive_through()
    assert len(road.records(VehiclePassed)) == 3
    assert road.records(TailgateSuspected) == []
    road.feed(Manual(ManualActionKind.CLOSE, "guard", "try to close"))
    road.wait(10)
    assert BarrierCommand.CLOSE not in road.commands()  # incident hold wins
    road.feed(IncidentHold(False))
    road.wait(1.0)
    assert road.commands()[-1] is BarrierCommand.CLOSE


def test_plc_offline_then_back() -> None:
    road = Road()
    road.feed(BarrierOnline(False))
    assert road.state() is LaneState.FAULT
    road.loops(arming=True)
    road.plate()
    assert road.commands() == []  # nothing can be sent
    road.feed(BarrierOnline(True))
    assert road.commands() == []  # not before the PLC's real position is known
    road.barrier(up=False, down=True)
    assert road.commands() == [BarrierCommand.OPEN]
    assert road.state() is LaneState.OPENING


def test_plc_offline_during_a_hold_no_phantom_pass_and_the_hold_is_reapplied() -> None:
    """The PLC drops out while a lane is held open with a vehicle on the exit loop; it comes
    back with the vehicle gone and the arm down. Nobody was seen passing, so nothing is
    recorded; the hold is re-applied (open again), and once released the lane works."""
    road = Road()
    road.feed(Manual(ManualActionKind.OPEN, "central:duty", "escort"))
    road.open_fully()
    road.loops(safety=True)
    road.loops(exit=True)
    road.feed(BarrierOnline(False))
    assert road.state() is LaneState.FAULT
    road.feed(BarrierOnline(True))
    road.loops()  # the vehicle left during the outage
    road.barrier(up=False, down=True)  # and the arm came down
    assert road.records(VehiclePassed) == []
    assert road.commands() == [BarrierCommand.OPEN, BarrierCommand.OPEN]
    assert road.state() is LaneState.HELD_OPEN
    road.open_fully()
    road.wait(3600)
    assert road.commands() == [BarrierCommand.OPEN, BarrierCommand.OPEN]
    road.feed(Manual(ManualActionKind.RELEASE, "central:duty", "done"))
    road.wait(1.0)
    assert road.commands()[-1] is BarrierCommand.CLOSE
    road.close_fully()
    assert road.state() is LaneState.IDLE
    road.loops(arming=True)
    road.plate(Verdict.ALLOW)
    assert road.commands()[-1] is BarrierCommand.OPEN
    assert road.state() is LaneState.OPENING


def test_a_hold_given_while_the_plc_is_offline_is_applied_when_it_answers() -> None:
    road = Road()
    road.feed(BarrierOnline(False))
    road.feed(Manual(ManualActionKind.OPEN, "central:duty", "escort"))
    assert road.state() is LaneState.FAULT
    assert road.commands() == []
    road.feed(BarrierOnline(True))
    road.barrier(up=False, down=True)
    assert road.commands() == [BarrierCommand.OPEN]
    assert road.state() is LaneState.HELD_OPEN


@pytest.mark.parametrize("hold", ["manual", "incident"])
def test_a_refused_vehicle_through_a_held_lane_is_an_unauthorised_passage(hold: str) -> None:
    road = Road()
    if hold == "manual":
        road.feed(Manual(ManualActionKind.OPEN, "central:duty", "escort"))
    else:
        road.feed(IncidentHold(True))
    road.open_fully()
    refused = road.plate(Verdict.DENY)
    road.drive_through()
    road.plate(Verdict.ALLOW)
    road.drive_through()
    road.drive_through()  # not read
    passes = road.records(VehiclePassed)
    assert [(p.decision_seq, p.unauthorised) for p in passes if isinstance(p, VehiclePassed)] == [
        (refused, True),
        (refused + 1, False),
        (None, False),
    ]


def test_open_once_lets_one_vehicle_through_then_the_lane_is_back_to_normal() -> None:
    road = Road()
    road.loops(arming=True)
    refused = road.plate(Verdict.DENY)
    assert road.commands() == []
    road.feed(Manual(ManualActionKind.OPEN_ONCE, "central:duty", "papers checked"))
    (opening,) = [a for a in road.actions if isinstance(a, Command)]
    assert opening.command is BarrierCommand.OPEN
    assert opening.reason == "manual-open-once"
    assert opening.cause_seq is None  # the shell links the manual action
    road.open_fully()
    road.drive_through()
    (passed,) = road.records(VehiclePassed)
    assert isinstance(passed, VehiclePassed)
    assert (passed.decision_seq, passed.unauthorised) == (refused, False)
    road.wait(1.0)
    assert road.commands() == [BarrierCommand.OPEN, BarrierCommand.CLOSE]
    road.close_fully()
    assert road.state() is LaneState.IDLE
    # Back to normal: the next refused vehicle is not let through.
    road.loops(arming=True)
    road.plate(Verdict.DENY)
    road.wait(30)
    assert road.commands() == [BarrierCommand.OPEN, BarrierCommand.CLOSE]
    # A held lane is open already: once changes nothing, and the hold stays.
    road.loops()
    road.feed(Manual(ManualActionKind.OPEN, "central:duty", "escort"))
    road.open_fully()
    road.feed(Manual(ManualActionKind.OPEN_ONCE, "central:duty", "one more"))
    road.wait(3600)
    assert road.commands()[2:] == [BarrierCommand.OPEN]
    assert road.state() is LaneState.HELD_OPEN


def test_pass_consumes_the_appointment_only_on_entry() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate(appointment="APT-1")
    road.open_fully()
    road.drive_through()
    (record,) = [
        a for a in road.actions if isinstance(a, Record) and isinstance(a.event, VehiclePassed)
    ]
    assert record.consume == "APT-1"
    out = Road(direction=Direction.EXIT)
    out.loops(arming=True)
    out.plate(appointment="APT-1")
    out.open_fully()
    out.drive_through()
    (record,) = [
        a for a in out.actions if isinstance(a, Record) and isinstance(a.event, VehiclePassed)
    ]
    assert record.consume is None


def test_queued_vehicle_read_while_the_first_passes_is_used() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate()
    road.open_fully()
    road.loops(safety=True)
    road.loops(arming=True, safety=True, exit=True)  # the next one pulls up
    second = road.plate()  # and is read while the first is still passing
    road.loops(arming=True, exit=True)
    road.loops(arming=True)
    road.wait(1.0)
    assert road.commands()[-1] is BarrierCommand.CLOSE
    road.wait(10)  # the arm takes its time
    road.close_fully()
    assert road.state() is LaneState.OPENING
    cmd = [a for a in road.actions if isinstance(a, Command)][-1]
    assert cmd.command is BarrierCommand.OPEN
    assert cmd.cause_seq == second


@pytest.mark.parametrize("safety", [True, False])
def test_close_is_never_commanded_with_safety_occupied(safety: bool) -> None:
    """Whatever path leads to a close, the command is suppressed on an occupied loop."""
    road = Road()
    road.feed(Manual(ManualActionKind.OPEN, "g", "r"))
    road.open_fully()
    road.loops(safety=safety)
    road.feed(Manual(ManualActionKind.CLOSE, "g", "r"))
    road.wait(5)
    assert (BarrierCommand.CLOSE in road.commands()) is (not safety)


# --- properties ---------------------------------------------------------------------------


_inputs = st.one_of(
    st.builds(Loops, st.booleans(), st.booleans(), st.booleans()),
    st.builds(Barrier, st.booleans(), st.booleans(), st.booleans()),
    st.builds(lambda v: Decided(decision(v), 1), st.sampled_from(list(Verdict))),
    st.builds(Manual, st.sampled_from(list(ManualActionKind)), st.just("g"), st.just("r")),
    st.builds(IncidentHold, st.booleans()),
    st.builds(BarrierOnline, st.booleans()),
    st.floats(min_value=0.01, max_value=700.0),  # time passing
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_inputs, max_size=60), st.booleans())
def test_property_close_is_never_commanded_over_an_occupied_safety_loop(
    steps: list[LaneInput | float], exit_loop: bool
) -> None:
    road = Road(exit_loop=exit_loop)
    for step in steps:
        out = road.wait(step) if isinstance(step, float) else road.feed(step)
        for action in out:
            if isinstance(action, Command) and action.command is BarrierCommand.CLOSE:
                assert not road.lane.loops.safety
                assert not road.lane.held
                assert road.lane.online


def test_back_out_while_the_arm_is_still_rising() -> None:
    """Found in a recorded morning shift: the driver reversed before the arm was up, and the
    arm then stayed up for the next car. The back-out must count while opening too."""
    road = Road()
    road.loops(arming=True)
    seq = road.plate()
    road.barrier(up=False, down=False)  # rising
    road.loops()  # the driver reverses away
    road.wait(0.5)
    road.barrier(up=True, down=False)  # the arm gets up after all
    road.wait(0.6)
    (back,) = road.records(VehicleBackedOut)
    assert isinstance(back, VehicleBackedOut)
    assert back.decision_seq == seq
    road.wait(1.0)
    assert road.commands() == [BarrierCommand.OPEN, BarrierCommand.CLOSE]
    road.close_fully()
    assert road.state() is LaneState.IDLE


def test_close_delay_runs_in_full_after_the_lane_clears() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate()
    road.open_fully()
    road.drive_through()
    road.loops(safety=True)  # someone steps under the arm just as the close is due
    road.wait(5.3)
    road.loops()
    road.wait(0.9)
    assert BarrierCommand.CLOSE not in road.commands()
    road.wait(0.2)
    assert road.commands()[-1] is BarrierCommand.CLOSE


def test_an_open_not_carried_out_leaves_the_vehicle_refused_without_a_fault() -> None:
    """The shell refused to send the open (log unwritable, entries refused): no travel
    timeout turns into a barrier fault; the vehicle backs out as a refused one does."""
    road = Road()
    road.loops(arming=True)
    seq = road.plate()
    assert road.commands() == [BarrierCommand.OPEN]
    road.lane.open_not_carried_out()
    assert road.state() is LaneState.PRESENT
    road.wait(TIMINGS.open_travel / NS * 3)
    assert road.records(DeviceFault) == []
    assert road.state() is LaneState.PRESENT
    road.loops()
    (back,) = road.records(VehicleBackedOut)
    assert isinstance(back, VehicleBackedOut)
    assert back.decision_seq == seq
    assert road.state() is LaneState.IDLE
    assert road.commands() == [BarrierCommand.OPEN]  # nothing to close: the arm never rose


def test_an_open_not_carried_out_changes_nothing_once_the_arm_is_up() -> None:
    road = Road()
    road.loops(arming=True)
    road.plate()
    road.open_fully()
    road.lane.open_not_carried_out()
    assert road.state() is LaneState.OPEN
