"""The gate's desk: :class:`~edgegate.console.desk.GateDesk` over the daemon's lane runners.

``act`` checks a guard's request (role, lane, the pending decision it names, reason, plate),
then hands it to the lane's runner, which logs the ``manual.action`` and answers through a
future once it is durable — the lane never waits for the console; the desk bounds its own wait
(:data:`ANSWER_TIMEOUT_S`) and, when it gives up, the runner does nothing. Incident mode goes
through an :class:`IncidentControl`, which logs ``mode.changed`` before any lane is told.

``view`` builds the gate as the console shows it from the runners' state; ``watch`` yields a
new view after each change the runners report through their ``observers`` hook. Observing
costs a counter increment; views are built only when a watcher wakes, and a slow watcher
skips to the newest (one view per watcher at most, never a queue).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Collection, Mapping
from typing import Protocol

from edgegate.console.desk import (
    PENDING_ACTIONS,
    REASON_OPTIONAL,
    SUPERVISOR_ACTIONS,
    DecisionView,
    DeskAction,
    DeskOutcome,
    DeskRequest,
    GateView,
    LaneView,
    PendingView,
    Role,
)
from edgegate.core.clock import Clock
from edgegate.core.events import Event, GateMode, ManualActionKind, ModeSource
from edgegate.core.lane import Barrier, Manual
from edgegate.core.plates import is_valid, normalise
from edgegate.daemon.lane_runner import DeskItem, LaneRunner
from edgegate.log import LogError
from edgegate.observability import get_logger

__all__ = ["ANSWER_TIMEOUT_S", "MAX_REASON", "Desk", "IncidentControl"]

log = get_logger("desk")

#: How long the desk waits for a lane to log an action before answering ``log-failed``.
ANSWER_TIMEOUT_S = 5.0
MAX_REASON = 500

_MANUAL = {
    DeskAction.CONFIRM: ManualActionKind.CONFIRM,
    DeskAction.REFUSE: ManualActionKind.REFUSE,
    DeskAction.CORRECT: ManualActionKind.CORRECT,
    DeskAction.OPEN_HOLD: ManualActionKind.OPEN,
    DeskAction.RELEASE: ManualActionKind.RELEASE,
}


class IncidentControl(Protocol):
    """The gate's incident mode as the desk switches it (``GateController``)."""

    async def set_incident(
        self, on: bool, *, source: ModeSource, operator: str, reason: str
    ) -> int | None:
        """Log ``mode.changed``, then hold or release the evacuation lanes; its seq, or None
        when the gate is in that mode already (nothing logged). ``LogError`` when it could
        not be logged (then nothing is done)."""
        ...


class Desk:
    """The desk of one gate (see the module's docstring)."""

    def __init__(
        self,
        gate_id: str,
        kind: str,
        lanes: Mapping[str, LaneRunner],
        clock: Clock,
        *,
        mode: Callable[[], GateMode],
        evacuation_lanes: Collection[str] = (),
        answer_timeout: float = ANSWER_TIMEOUT_S,
    ) -> None:
        """``mode()``: the gate's mode now. ``evacuation_lanes``: the lanes the views mark as
        evacuation paths. ``answer_timeout``: how long :meth:`act` waits for a lane or the
        incident control to log an action."""
        self.gate_id = gate_id
        self.kind = kind
        self.lanes = lanes
        self._clock = clock
        self._mode = mode
        self._evacuation = frozenset(evacuation_lanes)
        self._answer_timeout = answer_timeout
        #: Switches incident mode; set by the gate once its control exists (until then, and
        #: in a desk without one, switching incident mode is refused).
        self.incident: IncidentControl | None = None
        self._version = 0
        self._watchers = 0
        self._changed = asyncio.Event()
        for runner in lanes.values():
            runner.observers.append(self._observe)

    # --- changes --------------------------------------------------------------------------

    def _observe(self, _runner: LaneRunner, _event: Event | None) -> None:
        self.changed()

    def changed(self) -> None:
        """Something a view shows changed (the runners call this; so may the mode's owner)."""
        self._version += 1
        if self._watchers:
            # Wake every watcher waiting on the current event; later waits take a fresh one.
            woken, self._changed = self._changed, asyncio.Event()
            woken.set()

    async def watch(self) -> AsyncGenerator[GateView, None]:
        """Every change from now on, as a whole view; a slow reader skips to the newest."""
        self._watchers += 1
        try:
            seen = self._version
            while True:
                while self._version == seen:
                    await self._changed.wait()
                seen = self._version
                yield self.view()
        finally:
            self._watchers -= 1

    # --- views ----------------------------------------------------------------------------

    def view(self) -> GateView:
        return GateView(
            gate=self.gate_id,
            kind=self.kind,
            mode=str(self._mode()),
            version=self._version,
            lanes=tuple(self._lane_view(runner) for runner in self.lanes.values()),
        )

    def _lane_view(self, runner: LaneRunner) -> LaneView:
        lane = runner.lane
        setup = runner.setup
        return LaneView(
            lane=setup.lane_id,
            direction=str(setup.direction),
            state=str(lane.state),
            arming=lane.loops.arming,
            safety=lane.loops.safety,
            exit=lane.loops.exit,
            has_exit_loop=setup.has_exit_loop,
            arm=_arm(lane.barrier) if lane.online else "unknown",
            held=lane.held,
            evacuation=setup.lane_id in self._evacuation,
            faults=tuple(
                f"{device}: {fault.code}: {fault.message}"
                for device, fault in runner.faults.items()
            ),
            pending=self._pending_view(runner),
            recent=tuple(runner.recent),
        )

    def _pending_view(self, runner: LaneRunner) -> PendingView | None:
        lane = runner.lane
        pending = lane.pending
        # Until its commit gives it a seq, the decision is not durable (log-then-act) and a
        # guard could not name it in an answer: shown once logged.
        if pending is None or lane.awaiting_since is None or pending.seq < 1:
            return None
        shown = next((d for d in runner.recent if d.seq == pending.seq), None)
        if shown is None:  # pushed out of the recent ones by newer decisions: what is known
            decision = pending.decision
            shown = DecisionView(
                seq=pending.seq,
                at_ns=0,
                plate=decision.plate,
                verdict=str(decision.verdict),
                reasons=tuple(str(r) for r in decision.reasons),
                explanation=decision.explanation,
                matched_plate=decision.matched_plate,
            )
        # Monotonic instants shown as wall-clock ones.
        since = self._clock.wall_ns() - (self._clock.mono_ns() - lane.awaiting_since)
        return PendingView(
            decision=shown,
            waiting_since_ns=since,
            give_up_at_ns=since + runner.setup.timings.guard_wait,
        )

    # --- actions --------------------------------------------------------------------------

    async def act(self, request: DeskRequest) -> DeskOutcome:
        """Check, log, then carry out ``request``; never raises for a bad request."""
        try:
            outcome = await self._act(request)
        except Exception as exc:  # a bug must not reach the console as a traceback
            log.exception("desk_action_failed", action=str(request.action), error=repr(exc))
            outcome = DeskOutcome(False, "log-failed", "the gate failed to take the action")
        log.info(
            "desk_action",
            action=str(request.action),
            operator=request.operator,
            lane=request.lane,
            code=outcome.code,
            seq=outcome.seq,
        )
        return outcome

    async def _act(self, request: DeskRequest) -> DeskOutcome:
        try:
            action = DeskAction(request.action)
        except ValueError:
            return _invalid("action", f"unknown action {request.action!r}")
        try:
            role = Role(request.role)
        except ValueError:
            return DeskOutcome(False, "forbidden", f"unknown role {request.role!r}")
        if action in SUPERVISOR_ACTIONS and role is not Role.SUPERVISOR:
            return DeskOutcome(False, "forbidden", "only a supervisor may switch incident mode")
        if not request.operator.strip():
            return _invalid("operator", "the request names no operator")
        if action in SUPERVISOR_ACTIONS:
            problem = _reason_problem(request.reason)
            if problem is not None:
                return problem
            return await self._incident(action is DeskAction.INCIDENT_ON, request)

        runner = None if request.lane is None else self.lanes.get(request.lane)
        if runner is None:
            known = ", ".join(sorted(self.lanes)) or "none"
            return DeskOutcome(
                False, "unknown-lane", f"this gate has no lane {request.lane!r} (lanes: {known})"
            )
        plate = None
        if action in PENDING_ACTIONS:
            if request.decision_seq is None:
                return _invalid("decision_seq", "name the decision being answered")
            pending = runner.lane.pending
            if pending is None:
                return DeskOutcome(
                    False, "not-pending", f"no vehicle is waiting for a guard on {request.lane}"
                )
            if pending.seq != request.decision_seq:
                return DeskOutcome(
                    False,
                    "stale",
                    f"the vehicle on {request.lane} changed: the pending decision is "
                    f"{pending.seq}, not {request.decision_seq}",
                )
        problem = _reason_problem(request.reason, required=action not in REASON_OPTIONAL)
        if problem is not None:
            return problem
        if action is DeskAction.RELEASE and not runner.lane.manual_hold:
            # Releasing a lane nobody holds would log an action that changes nothing; an
            # evacuation lane held by incident mode is released by ending incident mode.
            why = (
                "it is held by incident mode: a supervisor ends incident mode"
                if runner.lane.incident
                else "it is not held open"
            )
            return DeskOutcome(False, "not-held", f"lane {request.lane} cannot be released: {why}")
        if action is DeskAction.CORRECT:
            typed = (request.plate or "").strip()
            if not typed:
                return _invalid("plate", "type the plate")
            plate = normalise(typed)
            if not is_valid(plate):
                return _invalid("plate", f"{typed!r} is not a plausible plate")
        manual = Manual(
            _MANUAL[action],
            request.operator,
            request.reason.strip(),
            decision_seq=request.decision_seq if action in PENDING_ACTIONS else None,
            plate=plate,
        )
        done: asyncio.Future[DeskOutcome] = asyncio.get_running_loop().create_future()
        runner.submit(DeskItem(manual, done))
        try:
            # wait_for cancels ``done`` on time-out: the runner then does nothing.
            return await asyncio.wait_for(done, self._answer_timeout)
        except TimeoutError:
            return DeskOutcome(
                False,
                "log-failed",
                f"lane {request.lane} did not log the action within "
                f"{self._answer_timeout:g} s: nothing was done",
            )

    async def _incident(self, on: bool, request: DeskRequest) -> DeskOutcome:
        control = self.incident
        if control is None:
            return _invalid("action", "incident mode cannot be switched from this desk")
        try:
            async with asyncio.timeout(self._answer_timeout):
                seq = await control.set_incident(
                    on,
                    source=ModeSource.LOCAL,
                    operator=request.operator,
                    reason=request.reason.strip(),
                )
        except TimeoutError:
            return DeskOutcome(
                False,
                "log-failed",
                f"incident mode was not logged within {self._answer_timeout:g} s",
            )
        except LogError as exc:
            return DeskOutcome(False, "log-failed", f"the mode change could not be logged: {exc}")
        self.changed()
        if seq is None:
            mode = "incident" if on else "normal"
            return DeskOutcome(True, "ok", f"the gate is in {mode} mode already")
        return DeskOutcome(True, "ok", seq=seq)


def _arm(barrier: Barrier) -> str:
    if barrier.fault or (barrier.up and barrier.down):
        return "unknown"
    if barrier.up:
        return "up"
    if barrier.down:
        return "down"
    return "moving"


def _invalid(name: str, message: str) -> DeskOutcome:
    return DeskOutcome(False, "invalid", f"{name}: {message}")


def _reason_problem(reason: str, *, required: bool = True) -> DeskOutcome | None:
    text = reason.strip()
    if not text:
        return _invalid("reason", "give a reason") if required else None
    if len(text) > MAX_REASON:
        return _invalid("reason", f"at most {MAX_REASON} characters, got {len(text)}")
    if not text.isprintable():
        return _invalid("reason", "control characters are not allowed")
    return None
