"""The gate's desk against the real daemon: simulated PLC and plate reader, the real log.

What a guard at the console sees of a vehicle waiting for them, and what their answers do:
each is logged with who and why before the lane acts on it (log-then-act)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edgegate.clock import SystemClock
from edgegate.console.desk import DeskAction, DeskOutcome, DeskRequest, GateView, Role
from edgegate.core.domain import PlateColour
from edgegate.core.events import (
    AccessDecided,
    BarrierCommand,
    BarrierCommanded,
    BarrierStateChanged,
    GateMode,
    GuardWaitExpired,
    Loop,
    ManualAction,
    ManualActionKind,
    ModeChanged,
)
from edgegate.core.lane import BarrierOnline, Manual
from edgegate.daemon.desk import Desk
from edgegate.daemon.lane_runner import DeskItem
from edgegate.log import LogError
from tests.eventually import eventually
from tests.gate_harness import (
    ALLOWED,
    BLACKLISTED,
    Logged,
    RunningGate,
    gate_config,
    lane,
    one_lane_config,
    sim_plc,
    sim_reader,
    wait_position,
)

FUZZY = "苏E1234S"  # one OCR-confusable character from ALLOWED: a guard must confirm
GUARD = "console:wang"


def desk_of(g: RunningGate) -> Desk:
    assert g.gate.desk is not None
    return g.gate.desk


def request(action: DeskAction, decision_seq: int | None = None, **fields: object) -> DeskRequest:
    values: dict[str, object] = {
        "action": action,
        "operator": GUARD,
        "role": Role.GUARD,
        "reason": "checked the driver's papers",
        "lane": "l1",
        "decision_seq": decision_seq,
        **fields,
    }
    return DeskRequest(**values)  # type: ignore[arg-type]


async def pending_vehicle(g: RunningGate, plate: str = FUZZY) -> Logged[AccessDecided]:
    """A vehicle arrives and its read asks for a guard; the desk shows it pending."""
    head = g.log.head
    await g.road().arrive(plate)
    decided = await g.log.wait_for(AccessDecided, lane="l1", after=head)
    assert decided.event.verdict == "confirm", decided.event
    desk = desk_of(g)
    await eventually(lambda: desk.view().lanes[0].pending is not None, "the vehicle pending")
    return decided


async def next_view(views: AsyncIterator[GateView]) -> GateView:
    return await anext(views)


async def back_out(g: RunningGate) -> None:
    await g.road().set(Loop.ARMING, False)


async def test_views_hold_no_vehicle_before_one_comes(tmp_path: Path) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        view = desk_of(g).view()
        assert (view.gate, view.kind, view.mode) == ("e2e-gate", "comprehensive", "normal")
        (l1,) = view.lanes
        assert (l1.lane, l1.direction, l1.state, l1.pending, l1.recent) == (
            "l1",
            "entry",
            "idle",
            None,
            (),
        )
        assert (l1.arm, l1.held, l1.evacuation, l1.faults) == ("down", False, False, ())


async def test_confirm_needs_no_reason(tmp_path: Path) -> None:
    """The console offers the reason as optional to confirm (and correct): a guard waved
    through by a familiar driver does not type one. Logged with who, and an empty reason."""
    async with RunningGate(one_lane_config(tmp_path)) as g:
        desk, log = desk_of(g), g.log
        decided = await pending_vehicle(g)
        outcome = await desk.act(request(DeskAction.CONFIRM, decided.seq, reason=""))
        assert outcome.ok, outcome
        (manual,) = log.of(ManualAction, lane="l1")
        assert (manual.event.operator, manual.event.reason) == (GUARD, "")
        await log.wait_for(BarrierCommanded, lane="l1", after=manual.seq)
        await wait_position(g.plc(), 1.0)
        await g.road().cross()


async def test_a_fuzzy_plate_is_pending_with_its_reasons_and_confirm_opens(
    tmp_path: Path,
) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        desk, log = desk_of(g), g.log
        trail = g.trail()
        decided = await pending_vehicle(g)
        (l1,) = desk.view().lanes
        assert (l1.state, l1.arming, l1.arm) == ("awaiting-guard", True, "down")
        assert l1.pending is not None
        shown = l1.pending.decision
        assert (shown.seq, shown.plate, shown.verdict) == (decided.seq, FUZZY, "confirm")
        assert "fuzzy-match" in shown.reasons and ALLOWED in shown.explanation
        assert (shown.matched_plate, shown.credential) == (ALLOWED, "registration:REG-1")
        assert (shown.confidence, shown.colour, shown.corrected_by) == (0.95, "blue", None)
        assert l1.pending.give_up_at_ns - l1.pending.waiting_since_ns == 120 * 10**9
        assert abs(l1.pending.waiting_since_ns - time.time_ns()) < 10 * 10**9
        assert l1.recent[0] == shown

        outcome = await desk.act(request(DeskAction.CONFIRM, decided.seq))
        assert outcome.ok and outcome.code == "ok", outcome
        (manual,) = log.of(ManualAction, lane="l1")
        assert manual.seq == outcome.seq
        assert manual.event.action is ManualActionKind.CONFIRM
        assert (manual.event.operator, manual.event.decision_seq) == (GUARD, decided.seq)
        assert manual.event.reason == "checked the driver's papers"
        command = await log.wait_for(BarrierCommanded, lane="l1", after=decided.seq)
        assert command.event.command is BarrierCommand.OPEN
        assert command.seq > manual.seq  # logged, then acted on
        index, _ = await trail.wait(BarrierCommand.OPEN)
        assert trail.head_at(index) >= command.seq  # durable before the PLC took it
        await wait_position(g.plc(), 1.0)
        await eventually(lambda: desk.view().lanes[0].arm == "up", "the arm shown up")
        assert desk.view().lanes[0].pending is None
        await g.road().cross()


async def test_a_decision_is_shown_pending_only_once_it_is_logged(tmp_path: Path) -> None:
    """The lane waits for a guard as soon as it decides, but the desk shows the vehicle
    only when the decision's commit gave it the seq a guard's answer names."""
    async with RunningGate(one_lane_config(tmp_path)) as g:
        desk, elog = desk_of(g), g.event_log
        real = elog.append_group
        release = asyncio.Event()

        async def held(*args: Any, **kwargs: Any) -> Any:
            await release.wait()
            return await real(*args, **kwargs)

        elog.append_group = held  # type: ignore[method-assign]
        try:
            await g.road().arrive(FUZZY)
            runner = g.gate.lanes["l1"]
            await eventually(lambda: runner.lane.pending is not None, "the lane awaiting a guard")
            assert desk.view().lanes[0].pending is None
        finally:
            del elog.append_group
            release.set()
        decided = await g.log.wait_for(AccessDecided, lane="l1")
        await eventually(lambda: desk.view().lanes[0].pending is not None, "the vehicle pending")
        shown = desk.view().lanes[0].pending
        assert shown is not None and shown.decision.seq == decided.seq
        await back_out(g)


async def test_refuse_sends_the_vehicle_back_and_nothing_opens(tmp_path: Path) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        desk = desk_of(g)
        decided = await pending_vehicle(g)
        outcome = await desk.act(request(DeskAction.REFUSE, decided.seq, reason="no waybill"))
        assert outcome.ok, outcome
        (manual,) = g.log.of(ManualAction, lane="l1")
        assert manual.event.action is ManualActionKind.REFUSE
        assert (manual.seq, manual.event.decision_seq) == (outcome.seq, decided.seq)
        await eventually(lambda: desk.view().lanes[0].state == "present", "the lane present")
        assert desk.view().lanes[0].pending is None
        # Answering again: nothing is pending any more.
        again = await desk.act(request(DeskAction.CONFIRM, decided.seq))
        assert (again.ok, again.code) == (False, "not-pending")
        await asyncio.sleep(0.5)  # ten PLC polls: time enough for a wrong open
        assert g.log.of(BarrierCommanded) == [] and g.plc().commands == []
        await back_out(g)


async def test_a_corrected_plate_on_the_blacklist_stays_refused(tmp_path: Path) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        desk, log = desk_of(g), g.log
        decided = await pending_vehicle(g)
        outcome = await desk.act(
            request(DeskAction.CORRECT, decided.seq, plate=BLACKLISTED, reason="read 9 as S")
        )
        assert outcome.ok, outcome
        (manual,) = log.of(ManualAction, lane="l1")
        assert manual.event.action is ManualActionKind.CORRECT
        assert (manual.seq, manual.event.plate) == (outcome.seq, BLACKLISTED)
        assert (manual.event.operator, manual.event.decision_seq) == (GUARD, decided.seq)
        corrected = await log.wait_for(AccessDecided, lane="l1", after=manual.seq)
        assert corrected.event.plate == BLACKLISTED and corrected.event.verdict == "deny"
        assert "blacklisted" in corrected.event.reasons
        assert (corrected.event.corrected_by, corrected.event.corrects_seq) == (
            GUARD,
            decided.seq,
        )
        await eventually(
            lambda: desk.view().lanes[0].recent[0].seq == corrected.seq, "the correction shown"
        )
        assert desk.view().lanes[0].state == "present"
        newest = desk.view().lanes[0].recent[0]
        assert (newest.seq, newest.verdict, newest.corrected_by) == (corrected.seq, "deny", GUARD)
        assert (newest.confidence, newest.colour) == (1.0, "blue")
        await asyncio.sleep(0.5)  # ten PLC polls: time enough for a wrong open
        assert log.of(BarrierCommanded) == [] and g.plc().commands == []
        await back_out(g)


async def test_a_corrected_plate_on_the_list_opens(tmp_path: Path) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        desk, log = desk_of(g), g.log
        decided = await pending_vehicle(g)
        outcome = await desk.act(
            request(DeskAction.CORRECT, decided.seq, plate=" 苏e 12345 ", reason="S is a 5")
        )
        assert outcome.ok, outcome
        corrected = await log.wait_for(AccessDecided, lane="l1", after=outcome.seq or 0)
        assert (corrected.event.plate, corrected.event.verdict) == (ALLOWED, "allow")
        assert corrected.event.corrects_seq == decided.seq
        command = await log.wait_for(BarrierCommanded, lane="l1", after=corrected.seq - 1)
        assert command.event.command is BarrierCommand.OPEN
        assert command.event.cause_seq == corrected.seq
        await wait_position(g.plc(), 1.0)
        await g.road().cross()


async def test_requests_the_desk_refuses_change_nothing(tmp_path: Path) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        desk, log = desk_of(g), g.log

        async def refused(req: DeskRequest) -> DeskOutcome:
            outcome = await desk.act(req)
            assert not outcome.ok and outcome.seq is None, outcome
            return outcome

        idle = await refused(request(DeskAction.CONFIRM, 1))
        assert idle.code == "not-pending"
        decided = await pending_vehicle(g)
        stale = await refused(request(DeskAction.CONFIRM, decided.seq - 1))
        assert stale.code == "stale" and str(decided.seq) in stale.message
        unknown = await refused(request(DeskAction.CONFIRM, decided.seq, lane="l9"))
        assert unknown.code == "unknown-lane" and "l1" in unknown.message
        blank = await refused(request(DeskAction.REFUSE, decided.seq, reason="  "))
        assert blank.code == "invalid" and blank.message == "reason: give a reason", blank
        for fields, name in (
            ({"reason": "x" * 501}, "reason"),
            ({"reason": "ok\x1b[2J"}, "reason"),
            ({"decision_seq": None}, "decision_seq"),
        ):
            values: dict[str, object] = {"decision_seq": decided.seq, **fields}
            bad = await refused(request(DeskAction.CONFIRM, **values))  # type: ignore[arg-type]
            assert bad.code == "invalid" and bad.message.startswith(f"{name}:"), bad
        for plate in (None, "", "hello", "苏E1"):
            bad = await refused(request(DeskAction.CORRECT, decided.seq, plate=plate))
            assert bad.code == "invalid" and bad.message.startswith("plate:"), bad
        incident = await refused(request(DeskAction.INCIDENT_ON, lane=None))
        assert incident.code == "forbidden"
        assert log.of(ManualAction) == [] and log.of(ModeChanged) == []
        assert desk.view().lanes[0].state == "awaiting-guard"
        await back_out(g)


async def test_log_failed_when_the_action_cannot_be_written(tmp_path: Path) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        desk = desk_of(g)
        decided = await pending_vehicle(g)
        elog = g.event_log
        real = elog.append

        async def failing(event: object, *args: object, **kwargs: object) -> int:
            if isinstance(event, ManualAction):
                raise LogError("disk full")
            return await real(event, *args, **kwargs)  # type: ignore[arg-type]

        elog.append = failing  # type: ignore[method-assign]
        try:
            outcome = await desk.act(request(DeskAction.CONFIRM, decided.seq))
        finally:
            del elog.append
        assert (outcome.ok, outcome.code) == (False, "log-failed")
        await asyncio.sleep(0.5)  # ten PLC polls: time enough for a wrong open
        assert g.plc().commands == [] and desk.view().lanes[0].state == "awaiting-guard"
        await back_out(g)


async def test_the_lane_checks_again_and_a_desk_that_gave_up_gets_nothing_done(
    tmp_path: Path,
) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        runner = g.gate.lanes["l1"]
        decided = await pending_vehicle(g)
        # The desk checked an older view: the lane, checking as it takes the item, refuses.
        done: asyncio.Future[DeskOutcome] = asyncio.get_running_loop().create_future()
        stale = Manual(ManualActionKind.CONFIRM, GUARD, "ok", decision_seq=decided.seq - 1)
        runner.submit(DeskItem(stale, done))
        assert (await asyncio.wait_for(done, 3)).code == "stale"
        # A desk that stops waiting before the lane takes the action answers log-failed, and
        # the lane then does nothing.
        impatient = Desk(
            "e2e-gate",
            "comprehensive",
            g.gate.lanes,
            g.gate.clock,
            mode=lambda: GateMode.NORMAL,
            answer_timeout=0,
        )
        outcome = await impatient.act(request(DeskAction.CONFIRM, decided.seq))
        assert (outcome.ok, outcome.code) == (False, "log-failed")
        await asyncio.sleep(0.5)  # ten PLC polls: time enough for a wrong open
        assert g.log.of(ManualAction) == [] and g.plc().commands == []
        assert desk_of(g).view().lanes[0].state == "awaiting-guard"
        await back_out(g)


async def test_a_supervisor_switches_incident_mode_and_a_guard_may_not(tmp_path: Path) -> None:
    devices = {"plc": sim_plc(), "cam": sim_reader()}
    config = gate_config(tmp_path, devices, [lane("l1", "exit", "cam", "plc")])
    config = config.model_copy(
        update={"incident": config.incident.model_copy(update={"evacuation_lanes": ("l1",)})}
    )
    async with RunningGate(config) as g:
        desk = desk_of(g)
        assert g.gate.control is not None
        assert desk.view().lanes[0].evacuation
        guard = await desk.act(request(DeskAction.INCIDENT_ON, lane=None))
        assert (guard.ok, guard.code) == (False, "forbidden")
        on = await desk.act(
            request(DeskAction.INCIDENT_ON, lane=None, role=Role.SUPERVISOR, reason="fire drill")
        )
        assert on.ok, on
        (changed,) = g.log.of(ModeChanged)
        assert changed.seq == on.seq and changed.event.operator == GUARD
        await wait_position(g.plc(), 1.0)
        await eventually(lambda: desk.view().lanes[0].held, "the lane shown held")
        assert desk.view().mode == "incident"
        # A guard cannot release what incident mode holds: refused, nothing logged.
        release = await desk.act(request(DeskAction.RELEASE, reason="let them through"))
        assert (release.ok, release.code) == (False, "not-held"), release
        assert "incident mode" in release.message
        assert g.log.of(ManualAction, lane="l1") == []
        off = await desk.act(
            request(DeskAction.INCIDENT_OFF, lane=None, role=Role.SUPERVISOR, reason="drill over")
        )
        assert off.ok, off
        await wait_position(g.plc(), 0.0)


async def test_open_and_hold_then_release(tmp_path: Path) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        desk, log = desk_of(g), g.log
        idle = await desk.act(request(DeskAction.RELEASE, reason="nothing held"))
        assert (idle.ok, idle.code) == (False, "not-held"), idle
        held = await desk.act(request(DeskAction.OPEN_HOLD, reason="escort"))
        assert held.ok, held
        command = await log.wait_for(BarrierCommanded, lane="l1", after=held.seq or 0)
        assert command.event.command is BarrierCommand.OPEN
        assert command.event.cause_seq == held.seq
        await wait_position(g.plc(), 1.0)
        await eventually(lambda: desk.view().lanes[0].held, "the lane shown held")
        released = await desk.act(request(DeskAction.RELEASE, reason="escort through"))
        assert released.ok, released
        actions = [m.event.action for m in log.of(ManualAction, lane="l1")]
        assert actions == [ManualActionKind.OPEN, ManualActionKind.RELEASE]
        await wait_position(g.plc(), 0.0)


class AheadClock(SystemClock):
    """The system clock, moved ahead by hand (the lane's waits run on it)."""

    def __init__(self) -> None:
        super().__init__()
        self.ahead = 0

    def wall_ns(self) -> int:
        return time.time_ns() + self.ahead

    def mono_ns(self) -> int:
        return time.monotonic_ns() + self.ahead


async def test_a_vehicle_nobody_answers_for_is_given_up_on(tmp_path: Path) -> None:
    devices = {"plc": sim_plc(), "cam": sim_reader()}
    config = gate_config(
        tmp_path, devices, [lane("l1", "entry", "cam", "plc")], timings={"guard_wait": "30s"}
    )
    running = RunningGate(config)
    clock = AheadClock()
    running.gate.clock = clock
    async with running as g:
        desk, log = desk_of(g), g.log
        decided = await pending_vehicle(g)
        pending = desk.view().lanes[0].pending
        assert pending is not None
        assert pending.give_up_at_ns - pending.waiting_since_ns == 30 * 10**9
        clock.ahead += 31 * 10**9
        # The lane sleeps until its deadline on the clock as it was: any input wakes it to
        # look at the clock again (this one changes nothing: the PLC is online).
        g.gate.lanes["l1"].submit(BarrierOnline(True))
        expired = await log.wait_for(GuardWaitExpired, lane="l1", after=decided.seq)
        assert (expired.event.decision_seq, expired.event.plate) == (decided.seq, FUZZY)
        assert expired.event.waited_ms >= 30_000
        await eventually(lambda: desk.view().lanes[0].state == "present", "the lane present")
        assert desk.view().lanes[0].pending is None
        late = await desk.act(request(DeskAction.CONFIRM, decided.seq))
        assert late.code == "not-pending"
        assert log.of(BarrierCommanded) == []
        # A new read decides again.
        await g.reader().send_read(ALLOWED, PlateColour.BLUE, 0.95)
        await wait_position(g.plc(), 1.0)
        await g.road().cross()


async def test_watch_delivers_changes_and_a_slow_reader_skips_to_the_newest(
    tmp_path: Path,
) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        desk = desk_of(g)
        await g.log.wait_for(BarrierStateChanged, lane="l1")  # the PLC's first poll
        views = desk.watch()
        first = asyncio.create_task(next_view(views))
        g.plc().set_loop(Loop.ARMING, True)
        view: GateView = await asyncio.wait_for(first, 3)
        while not view.lanes[0].arming:  # the first poll's own changes may come first
            view = await asyncio.wait_for(next_view(views), 3)
        # Not reading while the vehicle's read is decided and it waits for a guard...
        await g.reader().send_read(FUZZY, PlateColour.BLUE, 0.95)
        await eventually(lambda: desk.view().lanes[0].pending is not None, "the vehicle pending")
        newest = desk.view().version
        assert newest > view.version + 1
        # ...gives the newest view at once, not one per change.
        caught_up = await asyncio.wait_for(anext(views), 1)
        assert caught_up.version == newest
        assert caught_up.lanes[0].pending is not None
        nothing = asyncio.create_task(next_view(views))
        await asyncio.sleep(0.3)  # time for a stale view to come: none is queued
        assert not nothing.done()
        nothing.cancel()
        await asyncio.gather(nothing, return_exceptions=True)
        await views.aclose()
        assert desk._watchers == 0
        await back_out(g)
