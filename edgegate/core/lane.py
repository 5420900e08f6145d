"""The lane: a pure state machine driven by inputs and a clock that tests control
(docs/design.md §2). One module (over 700 lines) because it is one state machine: its
transitions and invariants are checked against each other, not apart.

The shell feeds it loop and barrier inputs from the PLC, decisions on plate reads, operator
actions, incident mode and PLC availability, plus ``tick(now)`` at ``next_deadline()``; each
call returns the actions to carry out, in order: ``Record`` an event (the shell appends it and
awaits durability) and ``Command`` the barrier (the shell logs ``barrier.commanded`` first,
then sends it). Log-then-act therefore holds by construction.

Invariants, whatever the inputs:
- never command ``close`` while the safety loop is occupied or cannot be trusted (stuck);
- while closing, an occupied safety loop raises the arm again;
- manual open and incident hold are never overridden by automatic closing;
- after an opening the lane re-arms only once the vehicle was seen passing (exit loop occupied
  then cleared; without an exit loop, the safety loop) or backing out;
- the arm is never left up unattended: once the lane is clear it closes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from edgegate.core.domain import Direction
from edgegate.core.events import (
    AdmissionNotOpened,
    BarrierCommand,
    DeviceFault,
    DeviceRecovered,
    Event,
    GuardWaitExpired,
    Loop,
    ManualActionKind,
    PlateNotRead,
    TailgateSuspected,
    VehicleBackedOut,
    VehiclePassed,
)
from edgegate.core.policy import Decision, Verdict

NS = 1_000_000_000


class LaneState(enum.StrEnum):
    IDLE = "idle"
    PRESENT = "present"  # a vehicle on the arming loop, no admitting decision (yet)
    AWAITING_GUARD = "awaiting-guard"  # the decision asks for a guard's confirmation
    OPENING = "opening"
    OPEN = "open"  # up, waiting for the vehicle to move
    PASSING = "passing"  # the vehicle is under or past the arm
    CLOSING = "closing"
    HELD_OPEN = "held-open"  # manual open or incident hold: automatic closing suspended
    FAULT = "fault"  # barrier fault, travel timeout, or PLC offline


@dataclass(frozen=True, slots=True)
class LaneTimings:
    """Timeouts in nanoseconds of monotonic time (see ``[timings]`` of the configuration)."""

    plate_wait: int = 5 * NS
    plate_early: int = 3 * NS
    open_travel: int = 6 * NS
    close_travel: int = 6 * NS
    pass_timeout: int = 60 * NS
    close_delay: int = 1 * NS
    loop_fault_after: int = 600 * NS
    guard_wait: int = 120 * NS


@dataclass(frozen=True, slots=True)
class LaneSetup:
    lane_id: str
    direction: Direction
    barrier_device: str
    loop_device: str
    has_exit_loop: bool = True
    timings: LaneTimings = LaneTimings()


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loops:
    """All loops of the lane at one poll (True = occupied)."""

    arming: bool
    safety: bool
    exit: bool = False


@dataclass(frozen=True, slots=True)
class Barrier:
    """The arm's limit switches and the PLC's fault input at one poll."""

    up: bool
    down: bool
    fault: bool = False


@dataclass(frozen=True, slots=True)
class Decided:
    """A plate read for this lane and the policy's decision, logged at ``seq``."""

    decision: Decision
    seq: int


@dataclass(frozen=True, slots=True)
class Manual:
    """A person's action. ``decision_seq``: the decision a confirm or refuse answers — the
    lane ignores it when that is no longer the pending one (the vehicle changed); ``plate``:
    a correction's typed plate (the shell decides again on it)."""

    action: ManualActionKind
    operator: str
    reason: str
    decision_seq: int | None = None
    plate: str | None = None


@dataclass(frozen=True, slots=True)
class IncidentHold:
    on: bool


@dataclass(frozen=True, slots=True)
class BarrierOnline:
    """The barrier PLC answers (True) or does not (False)."""

    online: bool


LaneInput = Loops | Barrier | Decided | Manual | IncidentHold | BarrierOnline


# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """Append ``event`` to the log; ``consume``: the appointment a pass consumes, in the same
    transaction."""

    event: Event
    consume: str | None = None


@dataclass(frozen=True, slots=True)
class Command:
    command: BarrierCommand
    reason: str
    cause_seq: int | None = None


Action = Record | Command


@dataclass(slots=True)
class _Opening:
    """One opening of the arm: who it is for and what crossed the lane since."""

    decided: Decided | None  # None for manual/incident openings or a re-opened arm
    unauthorised: bool = False  # re-opened by the safety loop, nobody was admitted
    safety_pulses: int = 0
    exit_pulses: int = 0
    passed: bool = False
    tailgate_reported: bool = False


@dataclass(slots=True)
class Lane:
    """One lane's state machine. All times are monotonic nanoseconds supplied by the caller."""

    setup: LaneSetup
    state: LaneState = LaneState.IDLE
    loops: Loops = Loops(False, False, False)
    barrier: Barrier = Barrier(up=False, down=True)
    online: bool = True
    incident: bool = False
    manual_hold: bool = False
    fault_reason: str | None = None
    _deadline: int | None = None
    _backout_at: int | None = None  # when to call an arming-loop clearance a back-out
    _presence: int = 0  # counts arming-loop arrivals, to tie a plate read to one vehicle
    _early: tuple[Decided, int, int] | None = None  # (decided, when, presence at that time)
    _current: Decided | None = None
    _present_since: int | None = None
    awaiting_since: int | None = None  # when the pending decision began waiting for a guard
    _plate_missing_reported: bool = False
    _opening: _Opening | None = None
    _close_since: int | None = None
    _close_blocked: bool = False  # a due close was held back by an occupied loop
    _close_reason: str = "close"
    _loop_since: dict[Loop, int] = field(default_factory=dict)
    _loop_faulty: set[Loop] = field(default_factory=set)

    # --- public ---------------------------------------------------------------------------

    def decision_logged(self, fed: Decided, seq: int) -> None:
        """Give the decision ``fed`` to :meth:`handle` the seq it was then logged at (-1: not
        logged), so what the lane records about it later names the right event.

        Lets the shell log a decision together with the commands it causes, in one commit.
        """
        final = Decided(fed.decision, seq)
        if self._current is fed:
            self._current = final
        if self._early is not None and self._early[0] is fed:
            self._early = (final, self._early[1], self._early[2])
        if self._opening is not None and self._opening.decided is fed:
            self._opening.decided = final

    def open_not_carried_out(self) -> None:
        """The shell did not send the open just asked for (the log could not be written and
        the lane's write-failure rule refuses entries): the arm stays down, so the lane does
        not wait for it to rise (no travel timeout, no fault) and treats the vehicle as
        refused: it has to back out."""
        if self.state is LaneState.OPENING and not self.barrier.up:
            self._opening = None
            self._set(LaneState.PRESENT if self.loops.arming else LaneState.IDLE, None)

    def handle(self, event: LaneInput, now: int) -> list[Action]:
        """Apply one input; return the actions to carry out, in order."""
        out: list[Action] = []
        if isinstance(event, Loops):
            self._on_loops(event, now, out)
        elif isinstance(event, Barrier):
            self._on_barrier(event, now, out)
        elif isinstance(event, Decided):
            self._on_decided(event, now, out)
        elif isinstance(event, Manual):
            self._on_manual(event, now, out)
        elif isinstance(event, IncidentHold):
            self._on_incident(event.on, now, out)
        else:
            self._on_online(event.online)
        self._try_close(now, out)
        return out

    def tick(self, now: int) -> list[Action]:
        """Handle every timeout due at ``now``."""
        out: list[Action] = []
        self._check_loop_faults(now, out)
        if self._backout_at is not None and now >= self._backout_at:
            self._backout_at = None
            opening = self._opening
            moved = opening is not None and (opening.safety_pulses or opening.exit_pulses)
            if (
                not moved
                and not self.loops.arming
                and self.state
                in (
                    LaneState.OPENING,
                    LaneState.OPEN,
                )
            ):
                self._backed_out(now, out)
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            self._on_timeout(now, out)
        self._try_close(now, out)
        return out

    def next_deadline(self) -> int | None:
        """The earliest monotonic time at which ``tick`` has something to do."""
        times = [t for t in (self._deadline, self._backout_at) if t is not None]
        if self._close_since is not None and self._can_close_now:
            times.append(self._close_since + self.setup.timings.close_delay)
        for loop, since in self._loop_since.items():
            if loop not in self._loop_faulty:
                times.append(since + self.setup.timings.loop_fault_after)
        return min(times) if times else None

    @property
    def safety_blocked(self) -> bool:
        """The arm must not close: the safety loop is occupied or cannot be trusted."""
        return self.loops.safety or Loop.SAFETY in self._loop_faulty

    @property
    def held(self) -> bool:
        return self.manual_hold or self.incident

    @property
    def pending(self) -> Decided | None:
        """The decision waiting for a guard's answer, if any."""
        return self._current if self.state is LaneState.AWAITING_GUARD else None

    # --- loops ----------------------------------------------------------------------------

    def _on_loops(self, new: Loops, now: int, out: list[Action]) -> None:
        old = self.loops
        self.loops = new
        self._track_loop_faults(old, new, now, out)
        if new.arming and not old.arming:
            self._presence += 1
        opening = self._opening
        if opening is not None:
            if new.safety and not old.safety:
                opening.safety_pulses += 1
                if opening.passed and not self.setup.has_exit_loop and not self.held:
                    self._tailgate(out, "safety loop occupied again after the pass")
            if new.exit and not old.exit:
                opening.exit_pulses += 1
                if opening.exit_pulses > 1 and not self.held:
                    self._tailgate(out, "exit loop occupied twice on one opening")

        state = self.state
        if state is LaneState.IDLE:
            if new.arming and not old.arming:
                self._vehicle_arrived(now, out)
        elif state in (LaneState.PRESENT, LaneState.AWAITING_GUARD):
            if old.arming and not new.arming and not new.safety:
                self._backed_out(now, out)
        elif state in (LaneState.OPEN, LaneState.OPENING, LaneState.PASSING):
            if opening is not None and (opening.safety_pulses or opening.exit_pulses):
                self._backout_at = None
                if state is LaneState.OPEN:
                    self._set(LaneState.PASSING, now + self.setup.timings.pass_timeout)
            elif old.arming and not new.arming and state is not LaneState.PASSING:
                # Arming cleared with nothing under the arm (the arm may still be rising):
                # backing out, or moving forward between two polls. Decide after the delay.
                self._backout_at = now + self.setup.timings.close_delay
            elif new.arming and self._backout_at is not None:
                self._backout_at = None
            self._check_passed(now, out)
        elif state is LaneState.CLOSING:
            if self.safety_blocked:
                # Something is under a closing arm: raise it again at once, and close once
                # the lane is clear. Whatever passes now was admitted by nobody.
                self._opening = _Opening(decided=None, unauthorised=True, safety_pulses=1)
                self._command(out, BarrierCommand.OPEN, "safety-loop-occupied-while-closing")
                self._set(LaneState.OPENING, now + self.setup.timings.open_travel)
        elif state is LaneState.HELD_OPEN:
            self._check_passed(now, out)

    def _check_passed(self, now: int, out: list[Action]) -> None:
        opening = self._opening
        if opening is None:
            return
        loops = self.loops
        if self.setup.has_exit_loop:
            crossed = opening.exit_pulses >= 1 and not loops.exit and not loops.safety
        else:
            crossed = opening.safety_pulses >= 1 and not loops.safety
        if self.held:
            # Held open (manual, incident): record every vehicle that crosses; one the
            # policy refused went through without anyone admitting it.
            if crossed:
                current = self._current
                refused = current is not None and current.decision.verdict is Verdict.DENY
                out.append(self._pass_record(current, unauthorised=refused))
                self._current = None
                self._opening = _Opening(decided=None)
            return
        if crossed and not opening.passed:
            opening.passed = True
            if opening.unauthorised:
                self._tailgate(out, "a vehicle passed under an arm re-opened by the safety loop")
            else:
                out.append(self._pass_record(opening.decided))
        if opening.passed and not loops.safety and not loops.exit:
            self._schedule_close(now, "vehicle-passed")

    def _pass_record(self, decided: Decided | None, *, unauthorised: bool = False) -> Record:
        decision = None if decided is None else decided.decision
        consume = None
        if decision is not None and self.setup.direction is Direction.ENTRY:
            consume = decision.consume_appointment
        return Record(
            VehiclePassed(
                lane=self.setup.lane_id,
                plate="" if decision is None else decision.matched_plate or decision.plate,
                direction=self.setup.direction,
                category=None if decision is None else decision.category,
                credential_id=None
                if decision is None or decision.credential is None
                else decision.credential.id,
                permit_until=None if decision is None else decision.credential_until,
                decision_seq=None if decided is None else decided.seq,
                unauthorised=unauthorised,
            ),
            consume=consume,
        )

    def _tailgate(self, out: list[Action], detail: str) -> None:
        opening = self._opening
        if opening is None or opening.tailgate_reported:
            return
        opening.tailgate_reported = True
        decided = opening.decided
        plate = None
        if decided is not None:
            plate = decided.decision.matched_plate or decided.decision.plate
        out.append(
            Record(
                TailgateSuspected(
                    lane=self.setup.lane_id,
                    plate=plate,
                    decision_seq=None if decided is None else decided.seq,
                    detail=detail,
                )
            )
        )

    def _track_loop_faults(self, old: Loops, new: Loops, now: int, out: list[Action]) -> None:
        for loop, was, occupied in (
            (Loop.ARMING, old.arming, new.arming),
            (Loop.SAFETY, old.safety, new.safety),
            (Loop.EXIT, old.exit, new.exit),
        ):
            if occupied and not was:
                self._loop_since[loop] = now
            elif was and not occupied:
                since = self._loop_since.pop(loop, now)
                if loop in self._loop_faulty:
                    self._loop_faulty.discard(loop)
                    recovered = DeviceRecovered(
                        lane=self.setup.lane_id,
                        device=self._loop_name(loop),
                        down_ms=(now - since) // 1_000_000,
                    )
                    out.append(Record(recovered))

    def _check_loop_faults(self, now: int, out: list[Action]) -> None:
        limit = self.setup.timings.loop_fault_after
        for loop, since in list(self._loop_since.items()):
            if loop not in self._loop_faulty and now - since >= limit:
                self._loop_faulty.add(loop)
                stuck = DeviceFault(
                    lane=self.setup.lane_id,
                    device=self._loop_name(loop),
                    code="loop-stuck",
                    message=f"{loop} loop occupied for {(now - since) // NS} s",
                )
                out.append(Record(stuck))

    def _loop_name(self, loop: Loop) -> str:
        return f"{self.setup.loop_device}:{loop}-loop"

    # --- arrivals, decisions, guards ------------------------------------------------------

    def _vehicle_arrived(self, now: int, out: list[Action]) -> None:
        self._present_since = now
        self._plate_missing_reported = False
        self._current = None
        self._set(LaneState.PRESENT, now + self.setup.timings.plate_wait)
        early = self._early
        self._early = None
        if early is None:
            return
        decided, at, presence = early
        # A read counts for this vehicle if it came just before the loop, or while this same
        # vehicle was already waiting on the loop (queued behind the previous one).
        if now - at <= self.setup.timings.plate_early or (
            presence == self._presence and self.loops.arming
        ):
            self._apply_decision(decided, now, out)

    def _on_decided(self, decided: Decided, now: int, out: list[Action]) -> None:
        if self.state in (LaneState.PRESENT, LaneState.AWAITING_GUARD):
            self._apply_decision(decided, now, out)
        elif self.state is LaneState.HELD_OPEN:
            self._current = decided  # whoever crosses next, for the record
        else:
            self._early = (decided, now, self._presence if self.loops.arming else -1)

    def _apply_decision(self, decided: Decided, now: int, out: list[Action]) -> None:
        self._current = decided
        verdict = decided.decision.verdict
        if verdict is Verdict.ALLOW:
            self._open_for(decided, now, out, "access-allowed")
        elif verdict is Verdict.CONFIRM:
            self.awaiting_since = now
            self._set(LaneState.AWAITING_GUARD, now + self.setup.timings.guard_wait)
        else:
            self._set(LaneState.PRESENT, None)  # refused: the vehicle has to back out

    def _open_for(
        self,
        decided: Decided | None,
        now: int,
        out: list[Action],
        why: str,
        *,
        by_operator: bool = False,
    ) -> None:
        """Open for one vehicle; the command's cause is ``decided`` unless an operator's
        action caused it (the shell links that)."""
        self._opening = _Opening(decided=decided)
        cause = None if by_operator or decided is None else decided.seq
        self._command(out, BarrierCommand.OPEN, why, cause)
        if not self.online:
            self._set(LaneState.FAULT, None)
        elif self.barrier.up:
            self._set(LaneState.OPEN, now + self.setup.timings.pass_timeout)
        else:
            self._set(LaneState.OPENING, now + self.setup.timings.open_travel)

    def _backed_out(self, now: int, out: list[Action]) -> None:
        decided = self._current
        decision = None if decided is None else decided.decision
        out.append(
            Record(
                VehicleBackedOut(
                    lane=self.setup.lane_id,
                    plate=None if decision is None else decision.matched_plate or decision.plate,
                    decision_seq=None if decided is None else decided.seq,
                )
            )
        )
        self._current = None
        self._opening = None
        self._backout_at = None
        if self.state in (LaneState.PRESENT, LaneState.AWAITING_GUARD):
            self._set(LaneState.IDLE, None)
        else:
            self._schedule_close(now, "backed-out")

    def _on_manual(self, manual: Manual, now: int, out: list[Action]) -> None:
        action = manual.action
        if action is ManualActionKind.OPEN:
            self.manual_hold = True
            self._hold_open(out)
        elif action is ManualActionKind.RELEASE:
            self.manual_hold = False
            self._release(now)
        elif action is ManualActionKind.OPEN_ONCE:
            # One vehicle, as if admitted: the one waiting (its decision, if any, is kept for
            # the record) or the next to come; the arm closes after it as after any pass. A
            # held lane is open already, an opening under way is not doubled.
            if self.state in (
                LaneState.IDLE,
                LaneState.PRESENT,
                LaneState.AWAITING_GUARD,
                LaneState.CLOSING,
            ):
                self._close_since = None
                self._open_for(self._current, now, out, "manual-open-once", by_operator=True)
        elif action is ManualActionKind.CLOSE:
            self.manual_hold = False
            if not self.incident:
                self._opening = None
                self._schedule_close(now, "manual-close")
        elif action in (ManualActionKind.CONFIRM, ManualActionKind.REFUSE):
            pending = self.pending
            if pending is None or manual.decision_seq not in (None, pending.seq):
                return  # answered too late: the lane has moved on to another decision
            if action is ManualActionKind.CONFIRM:
                self._open_for(pending, now, out, "guard-confirmed")
            else:
                self._set(LaneState.PRESENT, None)

    def _on_incident(self, on: bool, now: int, out: list[Action]) -> None:
        self.incident = on
        if on:
            self._hold_open(out)
        else:
            self._release(now)

    def _hold_open(self, out: list[Action]) -> None:
        self._close_since = None
        self._opening = _Opening(decided=None)
        if not self.online:
            # Nothing can be sent: the lane stays in fault and _recover applies the hold once
            # the PLC answers with the arm's real position.
            return
        self._command(out, BarrierCommand.OPEN, "manual-open" if self.manual_hold else "incident")
        self._set(LaneState.HELD_OPEN, None)

    def _release(self, now: int) -> None:
        if self.held:
            return
        self._opening = None
        self._schedule_close(now, "released")

    # --- barrier --------------------------------------------------------------------------

    def _on_barrier(self, new: Barrier, now: int, out: list[Action]) -> None:
        old = self.barrier
        self.barrier = new
        if new.fault and not old.fault:
            self._fault(out, "barrier-fault-input", "the PLC reports a barrier fault")
            return
        if self.state is LaneState.FAULT:
            if not new.fault and self.online and (new.up or new.down):
                self._recover(now, out)
            return
        if new.up and not old.up and self.state is LaneState.OPENING:
            opening = self._opening
            moving = opening is not None and (opening.safety_pulses or opening.exit_pulses)
            self._set(
                LaneState.PASSING if moving else LaneState.OPEN,
                now + self.setup.timings.pass_timeout,
            )
            if opening is not None and opening.unauthorised:
                self._schedule_close(now, "lane-clear-after-reopen")
            self._check_passed(now, out)
        elif new.down and not old.down and self.state is LaneState.CLOSING:
            self._opening = None
            self._set(LaneState.IDLE, None)
            if self.loops.arming:
                self._vehicle_arrived(now, out)

    def _on_online(self, online: bool) -> None:
        was = self.online
        self.online = online
        if was and not online:
            self.fault_reason = "plc-offline"
            self._close_since = None
            # Held lanes too: what the loops and the arm did during the outage is unknown (a
            # loop seen clearing afterwards is no pass), and the arm may have come down.
            self._set(LaneState.FAULT, None)
        # Coming back: recovery waits for the PLC's first barrier input (its real position),
        # then re-applies a hold (_recover).

    def _fault(self, out: list[Action], code: str, message: str) -> None:
        self.fault_reason = code
        self._close_since = None
        self._set(LaneState.FAULT, None)
        out.append(
            Record(
                DeviceFault(
                    lane=self.setup.lane_id,
                    device=self.setup.barrier_device,
                    code=code,
                    message=message,
                )
            )
        )

    def _recover(self, now: int, out: list[Action]) -> None:
        """Back from a fault: take up the barrier's real position again."""
        if self.fault_reason not in (None, "plc-offline"):
            out.append(
                Record(
                    DeviceRecovered(
                        lane=self.setup.lane_id, device=self.setup.barrier_device, down_ms=0
                    )
                )
            )
        self.fault_reason = None
        if self.held:
            self._hold_open(out)
        elif self.barrier.up:
            # Never left open unattended: close once the lane is clear.
            self._opening = None
            self._set(LaneState.OPEN, None)
            self._schedule_close(now, "recovered-open")
        else:
            self._opening = None
            self._set(LaneState.IDLE, None)
            if self.loops.arming:
                self._vehicle_arrived(now, out)

    # --- closing --------------------------------------------------------------------------

    def _schedule_close(self, now: int, why: str) -> None:
        if self._close_since is None:
            self._close_since = now
            self._close_blocked = False
        self._close_reason = why
        if self.state not in (LaneState.FAULT, LaneState.CLOSING, LaneState.OPENING):
            self._set(LaneState.PASSING if self._opening else LaneState.OPEN, None)

    @property
    def _can_close_now(self) -> bool:
        return not self.held and self.online and self.state is not LaneState.FAULT

    def _try_close(self, now: int, out: list[Action]) -> None:
        since = self._close_since
        if since is None or not self._can_close_now:
            return
        if self.safety_blocked or self.loops.exit:
            self._close_since = now  # the delay restarts once the lane is clear
            self._close_blocked = True
            return
        if self._close_blocked:
            # The lane has just cleared: the whole close delay runs from now, not from the
            # last time it was seen occupied.
            self._close_blocked = False
            self._close_since = since = now
        if now - since < self.setup.timings.close_delay:
            return
        self._close_since = None
        self._opening = None
        self._current = None
        if self.barrier.down and not self.barrier.up:
            self._set(LaneState.IDLE, None)
            return
        self._command(out, BarrierCommand.CLOSE, self._close_reason)
        self._set(LaneState.CLOSING, now + self.setup.timings.close_travel)

    # --- timeouts -------------------------------------------------------------------------

    def _on_timeout(self, now: int, out: list[Action]) -> None:
        state = self.state
        if state is LaneState.PRESENT and self._current is None:
            if not self._plate_missing_reported:
                self._plate_missing_reported = True
                waited = 0 if self._present_since is None else now - self._present_since
                out.append(
                    Record(PlateNotRead(lane=self.setup.lane_id, waited_ms=waited // 1_000_000))
                )
        elif state is LaneState.AWAITING_GUARD:
            self._guard_wait_expired(now, out)
        elif state is LaneState.OPENING:
            opening = self._opening
            if opening is not None and opening.decided is not None:
                decision = opening.decided.decision
                out.append(
                    Record(
                        AdmissionNotOpened(
                            lane=self.setup.lane_id,
                            plate=decision.matched_plate or decision.plate,
                            decision_seq=opening.decided.seq,
                            detail="the arm did not rise within the open travel time",
                        )
                    )
                )
            self._fault(
                out, "barrier-open-timeout", "up limit not reached within the open travel time"
            )
        elif state is LaneState.CLOSING:
            self._fault(
                out, "barrier-close-timeout", "down limit not reached within the close travel time"
            )
        elif state in (LaneState.OPEN, LaneState.PASSING):
            if self.loops.arming or self.loops.safety or self.loops.exit:
                # Still in the lane: keep the arm up and look again later.
                self._deadline = now + self.setup.timings.pass_timeout
            else:
                self._opening = None
                self._schedule_close(now, "pass-timeout")

    def _guard_wait_expired(self, now: int, out: list[Action]) -> None:
        """Nobody answered in time: give up on the decision (nothing opens). The vehicle is
        still on the arming loop (it would have backed out otherwise); a new read decides
        again, and no plate.not-read follows: its plate was read."""
        decided = self._current
        since = now if self.awaiting_since is None else self.awaiting_since
        out.append(
            Record(
                GuardWaitExpired(
                    lane=self.setup.lane_id,
                    plate=None if decided is None else decided.decision.plate,
                    decision_seq=None if decided is None else decided.seq,
                    waited_ms=(now - since) // 1_000_000,
                )
            )
        )
        self._current = None
        self._plate_missing_reported = True
        self._set(LaneState.PRESENT, None)

    # --- helpers --------------------------------------------------------------------------

    def _command(
        self, out: list[Action], cmd: BarrierCommand, why: str, cause: int | None = None
    ) -> None:
        if not self.online:
            return
        if cmd is BarrierCommand.CLOSE and self.safety_blocked:  # the invariant, enforced here
            return
        out.append(Command(cmd, why, cause))

    def _set(self, state: LaneState, deadline: int | None) -> None:
        self.state = state
        self._deadline = deadline
        if state is not LaneState.AWAITING_GUARD:
            self.awaiting_since = None
