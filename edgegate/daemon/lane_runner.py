"""One lane in the shell: feeds the pure lane machine, carries out its actions log-then-act.

(Over 600 lines: inputs, decisions, the guard's actions and the barrier commands run in one
task over one lane machine, inbox, command in flight and set of faults; the log-then-act order
between them is this module's whole point, so it stays in one place.)

Everything for a lane goes through one inbox and one task, so its inputs are handled one at a
time and its actions are carried out in order: an event is durable before the next action, and
``barrier.commanded`` is durable before the command goes to the PLC. The inbox
(:mod:`edgegate.daemon.inbox`) hands over the PLC's inputs, faults and operators' commands
before any plate read or rejected frame, and bounds both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from edgegate.allowlist.service import AllowListService
from edgegate.console.desk import DecisionView, DeskOutcome
from edgegate.core.clock import Clock
from edgegate.core.domain import Direction, PlateColour
from edgegate.core.domain import PlateRead as DomainPlateRead
from edgegate.core.events import (
    AccessDecided,
    BarrierCommand,
    BarrierCommanded,
    BarrierState,
    BarrierStateChanged,
    ClockStepMark,
    DeviceFault,
    DeviceRecovered,
    Event,
    FrameRejected,
    Loop,
    LoopChanged,
    ManualAction,
    ManualActionKind,
    PlateRead,
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
    Loops,
    Manual,
    Record,
)
from edgegate.core.policy import Decision, decide
from edgegate.core.rules import GateRules
from edgegate.daemon.inbox import LaneInbox
from edgegate.devices.base import DeviceError, PlcInputs
from edgegate.devices.modbus import SafetyLoopOccupied
from edgegate.log import EventLog, LogError
from edgegate.observability import get_logger


class BarrierDriver(Protocol):
    async def command(self, cmd: BarrierCommand) -> None: ...


class LaneMeter:
    """What a lane tells the metrics (``edgegate.daemon.metrics``) as it happens: durations
    in seconds. This one does nothing (a gate without ``[http]`` serves no metrics)."""

    def decided(self, verdict: str, seconds: float) -> None:
        """A decision, from taking the read to the decision and its commands durable."""

    def appended(self, seconds: float) -> None:
        """One of the lane's appends, from handing it to the log to durable."""

    def commanded(self, device: str, seconds: float, ok: bool) -> None:
        """One attempt at a barrier command, the PLC's round trip with its read-back."""

    def faulted(self, device: str) -> None:
        """A device fault the lane logs."""


@dataclass(frozen=True, slots=True, eq=False)
class DeskItem:
    """A guard's action from the desk: the runner answers through ``done`` once the
    ``manual.action`` is durable (or why it was not logged), then carries it out. A ``done``
    already finished when the item is taken (the desk stopped waiting) means: do nothing."""

    manual: Manual
    done: asyncio.Future[DeskOutcome]


LaneItem = (
    PlcInputs | PlateRead | FrameRejected | DeviceFault | DeviceRecovered | DeskItem | LaneInput
)
#: Called with each event the lane has logged (or tried to: see the log's state) that a screen
#: shows: loop and barrier changes, decisions, commands, records.
Observer = Callable[["LaneRunner", Event | None], None]

#: A cycle in these states has the arm moving or up for a vehicle: stopping now would leave it
#: so, unattended.
_IN_FLIGHT = frozenset({LaneState.OPENING, LaneState.OPEN, LaneState.PASSING, LaneState.CLOSING})


class LaneRunner:
    """The shell of one lane."""

    def __init__(
        self,
        setup: LaneSetup,
        rules: GateRules,
        log: EventLog,
        allowlist: AllowListService,
        barrier: BarrierDriver,
        clock: Clock,
        *,
        open_without_log: bool,
        on_pass: Callable[[VehiclePassed, int], None] | None = None,
        clock_step: Callable[[str], Awaitable[ClockStepMark | None]] | None = None,
    ) -> None:
        """``open_without_log``: whether an opening may go ahead when the log cannot be
        written (the configuration's ``on_write_failure`` for this lane's direction).
        ``clock_step(lane)``: awaited before each decision, the clock step it carries
        (``ClockWatch.at_decision``)."""
        self.setup = setup
        self.lane = Lane(setup)
        self._rules = rules
        self._log = log
        self._allowlist = allowlist
        self._barrier = barrier
        self._clock = clock
        self._open_without_log = open_without_log
        self._on_pass = on_pass
        self._clock_step = clock_step
        self.inbox: LaneInbox[LaneItem] = LaneInbox()
        self._commanding: asyncio.Task[None] | None = None  # the barrier command in progress
        self._command_generation = 0  # of the newest command; an older one stops retrying
        self._inbox_losses = (0, 0, 0)  # dropped, replaced, lost: as last logged
        self._inbox_logged_ns = 0
        self._inputs: PlcInputs | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_decision: Decision | None = None
        #: The latest decisions, newest first, as the console shows them.
        self.recent: deque[DecisionView] = deque(maxlen=RECENT_DECISIONS)
        #: Current faults by device (a command's failure under "<barrier> command"): the
        #: fault event until the device's recovery (or a command the PLC carried out).
        self.faults: dict[str, DeviceFault] = {}
        self.observers: list[Observer] = []
        self.meter = LaneMeter()
        self.running = False  # run() is on (health's "lanes" check)
        self._shown: tuple[object, ...] = ()  # what observers last saw of the lane's state
        self._logger = get_logger("lane", lane=setup.lane_id)

    @property
    def state(self) -> LaneState:
        return self.lane.state

    def submit(self, item: LaneItem) -> None:
        """Queue an input (from a driver's sink or an operator); never blocks."""
        self._idle.clear()
        self.inbox.put(item)

    async def drain(self) -> None:
        """Wait until every queued input has been handled and the in-flight cycle finished
        (the vehicle through and the arm down); the caller bounds the wait."""
        while True:
            while len(self.inbox) or not self._idle.is_set():
                await self._idle.wait()
                if len(self.inbox):
                    await asyncio.sleep(0)
            commanding = self._commanding
            if commanding is not None and not commanding.done():
                await asyncio.gather(commanding, return_exceptions=True)
                continue
            if self.lane.state not in _IN_FLIGHT:
                return
            await asyncio.sleep(0.05)  # the cycle goes on with the PLC's inputs and the clock

    async def run(self) -> None:
        self.running = True
        try:
            await self._run()
        finally:
            self.running = False
            if self._commanding is not None:
                self._commanding.cancel()
                await asyncio.gather(self._commanding, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            deadline = self.lane.next_deadline()
            item: LaneItem | None = None
            if not len(self.inbox):
                self._idle.set()
            if deadline is None:
                item = await self.inbox.get()
            else:
                delay = max(0.0, (deadline - self._clock.mono_ns()) / 1e9)
                try:
                    async with asyncio.timeout(delay):
                        item = await self.inbox.get()
                except TimeoutError:
                    item = None
            self._idle.clear()
            self._report_inbox_losses()
            try:
                if item is None:
                    await self._execute(self.lane.tick(self._clock.mono_ns()))
                else:
                    await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad input must not stop the lane
                self._logger.exception("lane_input_failed", item=repr(item), error=repr(exc))
                if isinstance(item, DeskItem) and not item.done.done():
                    item.done.set_result(
                        DeskOutcome(False, "log-failed", "the lane failed to take the action")
                    )
            self._notify_state()

    def _notify_state(self) -> None:
        """Tell observers when the lane's state moved without an event of its own (a guard's
        answer, a timeout, the loops and arm as the lane sees them)."""
        lane = self.lane
        shown = (lane.state, lane.loops, lane.barrier, lane.held, lane.online)
        if shown != self._shown:
            self._shown = shown
            self._notify(None)

    def _report_inbox_losses(self) -> None:
        inbox = self.inbox
        losses = (inbox.dropped, inbox.replaced, inbox.lost)
        now = self._clock.mono_ns()
        # At most one line a second, however many items a flood costs.
        if losses != self._inbox_losses and now - self._inbox_logged_ns >= NS:
            self._inbox_losses = losses
            self._inbox_logged_ns = now
            self._logger.warning(
                "lane_inbox_full",
                reader_items_dropped=inbox.dropped,
                plc_inputs_replaced=inbox.replaced,
                urgent_items_lost=inbox.lost,
            )

    # --- inputs ---------------------------------------------------------------------------

    async def _handle(self, item: LaneItem) -> None:
        if isinstance(item, PlcInputs):
            await self._plc_inputs(item)
        elif isinstance(item, PlateRead):
            await self._plate(item)
        elif isinstance(item, FrameRejected | DeviceFault | DeviceRecovered):
            await self._append(dataclasses.replace(item, lane=self.setup.lane_id))
            if item.device == self.setup.barrier_device and not isinstance(item, FrameRejected):
                await self._feed(BarrierOnline(isinstance(item, DeviceRecovered)))
        elif isinstance(item, Manual):
            seq = await self._append(self._manual_event(item))
            await self._carry_out_manual(item, seq)
        elif isinstance(item, DeskItem):
            await self._desk(item)
        else:
            await self._feed(item)

    def _manual_event(self, manual: Manual) -> ManualAction:
        return ManualAction(
            lane=self.setup.lane_id,
            action=manual.action,
            operator=manual.operator,
            reason=manual.reason,
            decision_seq=manual.decision_seq,
            plate=manual.plate,
        )

    async def _carry_out_manual(self, manual: Manual, seq: int | None) -> None:
        # A command the operator caused names the manual.action as its cause.
        actions = self.lane.handle(manual, self._clock.mono_ns())
        await self._execute(
            [
                dataclasses.replace(a, cause_seq=seq)
                if isinstance(a, Command) and a.cause_seq is None
                else a
                for a in actions
            ]
        )

    async def _desk(self, item: DeskItem) -> None:
        """Log-then-act for a guard: checked against the lane as it is now (the desk's own
        check may be out of date), logged, answered, then carried out; nothing is done when
        the log cannot be written."""
        manual, done = item.manual, item.done
        if done.done():
            return  # the desk stopped waiting and answered that nothing was done
        if manual.action in _ANSWERS:
            pending = self.lane.pending
            if pending is None:
                done.set_result(
                    DeskOutcome(False, "not-pending", "no vehicle is waiting for a guard")
                )
                return
            if pending.seq != manual.decision_seq:
                done.set_result(
                    DeskOutcome(
                        False,
                        "stale",
                        f"the lane has moved on: the pending decision is {pending.seq}, "
                        f"not {manual.decision_seq}",
                    )
                )
                return
        event = self._manual_event(manual)
        seq = await self._append(event)
        if done.done():
            # The desk gave up waiting while the log was written and answered that nothing
            # was done: keep that true (the log shows the action, not carried out).
            self._logger.error("desk_action_not_carried_out", seq=seq, action=manual.action)
            return
        if seq is None:
            done.set_result(
                DeskOutcome(False, "log-failed", "the action could not be logged: nothing done")
            )
            return
        done.set_result(DeskOutcome(True, "ok", seq=seq))
        self._notify(event)
        if manual.action is ManualActionKind.CORRECT:
            await self._correct(manual, seq)
        else:
            await self._carry_out_manual(manual, seq)

    async def _correct(self, manual: Manual, seq: int) -> None:
        """Decide again on the plate a guard typed, as on a reader's read of it (the read's
        colour, full confidence): only the read changes, never the rules."""
        assert manual.plate is not None and manual.decision_seq is not None
        shown = next((d for d in self.recent if d.seq == manual.decision_seq), None)
        colour = PlateColour.UNKNOWN
        if shown is not None and shown.colour is not None:
            colour = PlateColour(shown.colour)
        subject = DomainPlateRead(
            plate=manual.plate, colour=colour, confidence=1.0, reader=manual.operator
        )
        await self._decide(subject, None, correction=(manual.operator, manual.decision_seq))

    async def _plc_inputs(self, inputs: PlcInputs) -> None:
        old = self._inputs
        self._inputs = inputs
        lane = self.setup.lane_id
        loops = [
            (Loop.ARMING, inputs.arming_loop, None if old is None else old.arming_loop),
            (Loop.SAFETY, inputs.safety_loop, None if old is None else old.safety_loop),
        ]
        # A lane without an exit loop (none wired in the profile, or none configured for the
        # lane) has no exit-loop changes to report.
        if inputs.exit_loop is not None and self.setup.has_exit_loop:
            loops.append((Loop.EXIT, inputs.exit_loop, None if old is None else old.exit_loop))
        for loop, occupied, was in loops:
            if occupied != was:
                change = LoopChanged(lane=lane, loop=loop, occupied=occupied, source=inputs.device)
                await self._append(change)
                self._notify(change)
        barrier_changed = old is None or (old.up_limit, old.down_limit, old.fault) != (
            inputs.up_limit,
            inputs.down_limit,
            inputs.fault,
        )
        if barrier_changed:
            state = BarrierStateChanged(
                lane=lane,
                state=_barrier_state(inputs),
                device=inputs.device,
                up_limit=inputs.up_limit,
                down_limit=inputs.down_limit,
                fault=inputs.fault,
            )
            await self._append(state)
            self._notify(state)
        await self._feed(Loops(inputs.arming_loop, inputs.safety_loop, bool(inputs.exit_loop)))
        await self._feed(Barrier(inputs.up_limit, inputs.down_limit, inputs.fault))

    async def _plate(self, read: PlateRead) -> None:
        read = dataclasses.replace(read, lane=self.setup.lane_id)
        subject = DomainPlateRead(
            plate=read.plate, colour=read.colour, confidence=read.confidence, reader=read.reader
        )
        await self._decide(subject, read)

    async def _decide(
        self,
        subject: DomainPlateRead,
        read: PlateRead | None,
        correction: tuple[str, int] | None = None,
    ) -> None:
        """Decide, then log the read (if a reader's), the decision and the commands it causes
        in one commit (the writer gives them linked seqs) before any command goes to the PLC.
        ``correction``: (operator, corrected decision's seq) for a plate typed by a guard."""
        started = time.perf_counter()
        lane_id = self.setup.lane_id
        step = None if self._clock_step is None else await self._clock_step(lane_id)
        wall_ns = self._clock.wall_ns()
        now = datetime.fromtimestamp(wall_ns / 1e9, UTC)
        decision = decide(
            self._rules,
            self.setup.direction,
            subject,
            self._allowlist.view,
            now,
            inside=self._allowlist.inside_elsewhere,
        )
        self.last_decision = decision
        fed = Decided(decision, _PROVISIONAL_SEQ)
        actions = self.lane.handle(fed, self._clock.mono_ns())
        # The commands (and plain records) the decision causes at once join its commit.
        n = 0
        while n < len(actions) and _joins_commit(actions[n]):
            n += 1
        joined, rest = actions[:n], actions[n:]
        direction = self.setup.direction
        device = self.setup.barrier_device

        made: list[Event] = []
        k = 0 if read is None else 1  # the decision's index in the commit

        def build(first: int) -> list[Event]:
            made.clear()
            decided_seq = first + k
            decided = decision.to_event(
                direction=direction,
                plate_read=subject.plate,
                lane=lane_id,
                read_seq=None if read is None else first,
                clock_step=step,
            )
            if correction is not None:
                operator, corrects = correction
                decided = dataclasses.replace(decided, corrected_by=operator, corrects_seq=corrects)
            out: list[Event] = [decided] if read is None else [read, decided]
            for action in joined:
                if isinstance(action, Command):
                    out.append(_commanded(lane_id, device, _linked(action, decided_seq)))
                else:
                    out.append(_link_event(action.event, decided_seq))
            made.extend(out)
            return out

        appending = time.perf_counter()
        try:
            seqs: list[int | None] = list(await self._log.append_group(build))
        except Exception as exc:  # the lane goes on by the write-failure policy
            self._logger.error("log_write_failed", type=AccessDecided.TYPE, error=repr(exc))
            seqs = [None] * (k + 1 + len(joined))
        durable = time.perf_counter()
        self.meter.appended(durable - appending)
        self.meter.decided(str(decision.verdict), durable - started)
        decided_seq = seqs[k]
        self.lane.decision_logged(fed, -1 if decided_seq is None else decided_seq)
        built = made if made else build(-1)  # -1: the group never reached the writer
        self.recent.appendleft(
            _decision_view(
                decision,
                subject,
                -1 if decided_seq is None else decided_seq,
                wall_ns,
                None if correction is None else correction[0],
            )
        )
        self._notify(built[k])
        for action, seq, event in zip(joined, seqs[k + 1 :], built[k + 1 :], strict=True):
            if isinstance(action, Command):
                assert isinstance(event, BarrierCommanded)
                await self._send(action, event, seq)
            else:
                self._recorded(event, seq)
        if rest:
            link = -1 if decided_seq is None else decided_seq
            await self._execute([_link_action(a, link) for a in rest])

    async def _feed(self, item: LaneInput) -> None:
        await self._execute(self.lane.handle(item, self._clock.mono_ns()))

    # --- actions --------------------------------------------------------------------------

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Record):
                await self._record(action)
            else:
                await self._command(action)

    async def _record(self, record: Record) -> None:
        event = record.event
        if record.consume is not None:
            try:
                seq: int | None = await self._allowlist.append_with_consumption(
                    event, record.consume, consumed=True
                )
            except Exception as exc:
                self._logger.error("consume_failed", appointment=record.consume, error=repr(exc))
                seq = await self._append(event)
        else:
            seq = await self._append(event)
        self._recorded(event, seq)

    def _recorded(self, event: Event, seq: int | None) -> None:
        if isinstance(event, VehiclePassed):
            self._allowlist.passed_here(event.plate)
        if isinstance(event, VehiclePassed) and seq is not None and self._on_pass is not None:
            self._on_pass(event, seq)
        self._notify(event)

    async def _command(self, command: Command) -> None:
        event = _commanded(self.setup.lane_id, self.setup.barrier_device, command)
        await self._send(command, event, await self._append(event))

    async def _send(self, command: Command, event: BarrierCommanded, seq: int | None) -> None:
        """Carry out a command whose ``barrier.commanded`` was logged at ``seq`` (None: the
        log could not be written), in the background: the lane goes on taking its inputs while
        the PLC is written and, if it fails, retried."""
        if seq is None and command.command is BarrierCommand.OPEN and not self._open_without_log:
            self._logger.error("open_refused_log_unwritable", reason=command.reason)
            self.lane.open_not_carried_out()
            return
        self._command_generation += 1
        self._commanding = asyncio.create_task(
            self._carry_out(command.command, self._command_generation, self._commanding)
        )
        self._notify(event)

    async def _carry_out(
        self, cmd: BarrierCommand, generation: int, previous: asyncio.Task[None] | None
    ) -> None:
        """Write ``cmd`` once the previous command is done with the PLC; when the PLC fails it
        (an exception code, no answer, not confirmed), log one fault and retry until the arm's
        travel time has passed — the lane gives up at that moment too (its travel timeout) —
        or a newer command supersedes it."""
        if previous is not None:
            # The previous one sees it is superseded and stops after its current attempt.
            await asyncio.gather(previous, return_exceptions=True)
        timings = self.setup.timings
        travel = timings.close_travel if cmd is BarrierCommand.CLOSE else timings.open_travel
        give_up = self._clock.mono_ns() + travel
        pause = _RETRY_FIRST_S
        attempts = 0
        while True:
            attempts += 1
            began = time.perf_counter()
            try:
                await self._barrier.command(cmd)
            except SafetyLoopOccupied as exc:
                self._metered_command(began, ok=False)
                # The driver's last check before the wire: the lane closes again once clear.
                await self._command_fault(cmd, exc, "")
                return
            except DeviceError as exc:
                self._metered_command(began, ok=False)
                superseded = generation != self._command_generation
                left_s = (give_up - self._clock.mono_ns()) / NS
                if attempts == 1:
                    retry = "" if superseded or left_s <= 0 else f"; retrying for {left_s:.1f} s"
                    await self._command_fault(cmd, exc, retry)
                if superseded or left_s <= pause:
                    # A newer command taking over is the lane moving on, not a failure.
                    report = self._logger.info if superseded else self._logger.error
                    report(
                        "barrier_command_given_up",
                        command=cmd.value,
                        attempts=attempts,
                        superseded=superseded,
                        error=exc.message,
                    )
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RETRY_MAX_S)
            else:
                self._metered_command(began, ok=True)
                if attempts > 1:
                    self._logger.info(
                        "barrier_command_confirmed_on_retry", command=cmd.value, attempts=attempts
                    )
                if self.faults.pop(self._command_fault_key, None) is not None:
                    self._notify(None)
                return

    def _metered_command(self, began: float, *, ok: bool) -> None:
        self.meter.commanded(self.setup.barrier_device, time.perf_counter() - began, ok)

    async def _command_fault(self, cmd: BarrierCommand, exc: DeviceError, retry: str) -> None:
        await self._append(
            DeviceFault(
                lane=self.setup.lane_id,
                device=self.setup.barrier_device,
                code=exc.code,
                message=f"{cmd} failed: {exc.message}{retry}",
            ),
            fault_key=self._command_fault_key,
        )
        self._notify(None)

    @property
    def _command_fault_key(self) -> str:
        return f"{self.setup.barrier_device} command"

    async def _append(self, event: Event, *, fault_key: str | None = None) -> int | None:
        """Append and return the seq, or None when the log cannot be written (logged).
        Faults and recoveries keep :attr:`faults` current (``fault_key``: other than the
        fault's device)."""
        if isinstance(event, DeviceFault):
            self.faults[fault_key or event.device] = event
            self.meter.faulted(event.device)
        elif isinstance(event, DeviceRecovered):
            self.faults.pop(event.device, None)
        appending = time.perf_counter()
        try:
            seq = await self._log.append(event)
            self.meter.appended(time.perf_counter() - appending)
            return seq
        except LogError as exc:
            self._logger.error("log_write_failed", type=event.TYPE, error=str(exc))
            return None

    def _notify(self, event: Event | None) -> None:
        for observer in self.observers:
            observer(self, event)

    # --- operator -------------------------------------------------------------------------

    def manual(self, action: Manual) -> None:
        self.submit(action)

    def incident(self, on: bool) -> None:
        self.submit(IncidentHold(on))

    @property
    def direction(self) -> Direction:
        return self.setup.direction


#: Decisions a lane keeps for the console.
RECENT_DECISIONS = 10

#: Guards' answers to a pending decision: they name it and are refused once it is not pending.
_ANSWERS = frozenset({ManualActionKind.CONFIRM, ManualActionKind.REFUSE, ManualActionKind.CORRECT})

#: Pauses between attempts at a barrier command the PLC failed (doubling up to the maximum).
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 0.8

#: The seq a decision carries in the lane until its commit gives it the real one; no event
#: has seq 0.
_PROVISIONAL_SEQ = 0


def _decision_view(
    decision: Decision,
    subject: DomainPlateRead,
    seq: int,
    wall_ns: int,
    corrected_by: str | None,
) -> DecisionView:
    credential = decision.credential
    return DecisionView(
        seq=seq,
        at_ns=wall_ns,
        plate=decision.plate,
        verdict=str(decision.verdict),
        reasons=tuple(str(r) for r in decision.reasons),
        explanation=decision.explanation,
        confidence=subject.confidence,
        colour=str(subject.colour),
        matched_plate=decision.matched_plate,
        credential=None if credential is None else f"{credential.kind}:{credential.id}",
        corrected_by=corrected_by,
    )


def _joins_commit(action: Action) -> bool:
    return isinstance(action, Command) or action.consume is None


def _linked(command: Command, decided_seq: int) -> Command:
    if command.cause_seq == _PROVISIONAL_SEQ:
        return dataclasses.replace(command, cause_seq=decided_seq)
    return command


def _link_action(action: Action, decided_seq: int) -> Action:
    if isinstance(action, Command):
        return _linked(action, decided_seq)
    return dataclasses.replace(action, event=_link_event(action.event, decided_seq))


def _link_event(event: Event, decided_seq: int) -> Event:
    if getattr(event, "decision_seq", None) == _PROVISIONAL_SEQ:
        return dataclasses.replace(event, decision_seq=decided_seq)  # type: ignore[call-arg]
    return event


def _commanded(lane: str, device: str, command: Command) -> BarrierCommanded:
    return BarrierCommanded(
        lane=lane,
        command=command.command,
        reason=command.reason,
        device=device,
        cause_seq=command.cause_seq,
    )


def _barrier_state(inputs: PlcInputs) -> BarrierState:
    if inputs.fault:
        return BarrierState.FAULT
    if inputs.up_limit and not inputs.down_limit:
        return BarrierState.UP
    if inputs.down_limit and not inputs.up_limit:
        return BarrierState.DOWN
    if not inputs.up_limit and not inputs.down_limit:
        return BarrierState.MOVING
    return BarrierState.UNKNOWN
