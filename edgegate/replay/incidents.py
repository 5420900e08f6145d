"""Incidents: what a technician looks for in a gate's log, each finding with the seqs that
prove it, a severity and one line in plain words (``edgegate replay incidents``).

One streaming pass over stored events (a gate's file or central's copy alike): per event, only
the types an analysis needs are decoded, to a plain map (upcast, no event object), and the
state kept is per lane or per device, so a long log costs time in proportion and little memory.
What needs the whole log (arm travel trends, plates not read per hour, which devices are
barriers) is settled at the end from small per-event records.

Kinds, and what each finding's fields are, are listed in ``KINDS`` (``replay.findings``, with
``Finding`` and ``Incidents``); the per-day and per-hour aggregates are ``replay.trends``.
One module (over 900 lines) because the pass is one state machine over the log: its
handlers share the per-lane and per-device state and hand findings to each other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import msgpack

from edgegate.core.events import EventDecodeError, registered_types, upcast
from edgegate.log.chain import Row
from edgegate.log.reader import StoredEvent
from edgegate.replay.findings import (
    CAP,
    KINDS,
    SEVERITIES,
    Finding,
    Incidents,
    Limits,
    Severity,
)
from edgegate.replay.trends import not_read_findings, travel_findings

__all__ = [
    "KINDS",
    "SEVERITIES",
    "Finding",
    "Incidents",
    "Limits",
    "Severity",
    "find_incidents",
    "find_incidents_in_rows",
    "stored_events",
]

# --- helpers --------------------------------------------------------------------------------


@dataclass(slots=True)
class _At:
    """Where and when an event was: enough to measure a duration against another."""

    seq: int
    wall_ns: int
    mono_ns: int
    boot_id: str


def _at(ev: StoredEvent) -> _At:
    return _At(ev.seq, ev.wall_ns, ev.mono_ns, ev.boot_id)


def _seconds(a: _At, b: _At) -> float:
    """From ``a`` to ``b``: on the monotonic clock within one boot, else on the wall clock."""
    if a.boot_id == b.boot_id:
        return (b.mono_ns - a.mono_ns) / 1e9
    return (b.wall_ns - a.wall_ns) / 1e9


def _s(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


@dataclass(slots=True)
class _Lane:
    lane_id: str  # findings about the lane name it, whichever event ended them
    arm_up: bool = False
    loops: dict[str, bool] = field(default_factory=dict)
    held: bool = False
    clear_since: _At | None = None  # arm up, lane clear, not held: since when
    clear_seqs: tuple[int | None, ...] = ()  # what raised the arm, what cleared the lane
    raised_by: int | None = None  # the open command the arm last rose for
    pending_cmd: tuple[str, _At] | None = None  # (open|close, when commanded)
    last_close: int | None = None
    last_safety_on: int | None = None
    last_cleared: int | None = None  # the last loop to clear
    waiting: tuple[int, _At, str | None] | None = None  # a confirm decision: seq, when, plate


class _Lanes(dict[str, _Lane]):
    def __missing__(self, lane_id: str) -> _Lane:
        lane = self[lane_id] = _Lane(lane_id)
        return lane


@dataclass(slots=True)
class _Outage:
    device: str
    lane: str | None
    code: str
    message: str
    start: _At


@dataclass(slots=True)
class _ClockStep:
    """A logged ``clock.stepped``, and the decisions that carried it."""

    at: _At
    data: dict[str, Any]
    proof: list[int]
    decisions: list[int] = field(default_factory=list)
    count: int = 0


#: A step found between two events is the one the daemon logged if its clock.stepped follows
#: within this much monotonic time (the daemon checks every second).
_STEP_NOTICED_WITHIN_NS = 10 * 1_000_000_000


@dataclass(slots=True)
class _Burst:
    device: str
    lane: str | None
    start: _At
    last_wall: int
    frames: int
    kinds: set[str]
    seqs: list[int]
    events: int


# --- the pass -------------------------------------------------------------------------------


class _Scan:
    def __init__(self, tz: ZoneInfo, limits: Limits) -> None:
        self.tz = tz
        self.limits = limits
        self.out: list[Finding] = []
        self.lanes = _Lanes()
        self.incident = False
        self.incident_on: tuple[_At, dict[str, Any]] | None = None
        self.outages: dict[str, _Outage] = {}
        self.closed_outages: list[tuple[_Outage, _At | None, str]] = []
        self.barrier_devices: dict[str, str | None] = {}  # device -> its lane
        self.bursts: dict[str, _Burst] = {}
        self.travels: dict[tuple[str, str], list[tuple[int, int, int, int]]] = defaultdict(list)
        self.not_read: list[tuple[str | None, int, int]] = []  # lane, wall_ns, seq
        self.readers: dict[str, str] = {}  # lane -> its reader
        self.causes: set[int] = set()  # seqs of events that may cause a barrier command
        self.commands: dict[str, int] = {}  # central command id -> accepted seq
        self.prev: StoredEvent | None = None  # the event being handled, then the last one
        # The last event of the daemon's run, not counting what a starting daemon logs before
        # daemon.started: where a crash's time down is counted from.
        self.ran_until: StoredEvent | None = None
        self.boot: _At | None = None  # the last daemon.started
        self.stopped: _At | None = None  # the daemon.stopped since it, if any
        self.events = 0
        self.first_seq: int | None = None
        # Wall against monotonic steps this close to the limit are looked at in _continuity
        # (the margin keeps the exact test there, in seconds, the one that decides).
        self.near_step_ns = limits.clock_step_s * 1e9 - 1000
        self.inferred_step: tuple[Finding, _At] | None = None  # the last step found between events
        self.clock_steps: dict[int, _ClockStep] = {}  # clock.stepped seq -> its finding's state
        # Payloads stored at a type's current version need no upcast.
        self.current = {name: cls.VERSION for name, cls in registered_types().items()}

    def add(
        self,
        kind: str,
        severity: Severity,
        lane: str | None,
        wall_ns: int,
        seqs: Iterable[int | None],
        summary: str,
        **fields: Any,
    ) -> None:
        proof = tuple(sorted({s for s in seqs if s is not None}))
        self.out.append(Finding(kind, severity, lane, wall_ns, proof, summary, fields))

    def add_for_event(
        self, kind: str, severity: Severity, ev: StoredEvent, summary: str, **fields: Any
    ) -> None:
        """A finding that ``ev`` alone proves, on its lane at its time."""
        self.add(kind, severity, ev.lane, ev.wall_ns, (ev.seq,), summary, **fields)

    def add_for_decision(
        self,
        kind: str,
        severity: Severity,
        ev: StoredEvent,
        d: dict[str, Any],
        summary: str,
        **fields: Any,
    ) -> None:
        """A finding about the vehicle of the decision ``d`` (an event's payload) names: its
        ``plate`` and ``decision_seq`` come first among the fields, proved by that decision
        and the event."""
        decision = d.get("decision_seq")
        self.add(
            kind,
            severity,
            ev.lane,
            ev.wall_ns,
            (decision, ev.seq),
            summary,
            plate=d.get("plate"),
            decision_seq=decision,
            **fields,
        )

    # -- every event ----------------------------------------------------------------------

    def feed(self, ev: StoredEvent) -> None:
        self.events += 1
        prev = self.prev
        if prev is None:
            self.first_seq = ev.seq
        else:
            if prev.type not in _BEFORE_START:
                self.ran_until = prev
            # The usual case settled with integers; _continuity says what is wrong, if anything.
            if (
                ev.seq != prev.seq + 1
                or ev.prev_hash != prev.hash
                or (
                    ev.boot_id == prev.boot_id
                    and abs((ev.wall_ns - prev.wall_ns) - (ev.mono_ns - prev.mono_ns))
                    >= self.near_step_ns
                )
            ):
                self._continuity(prev, ev)
        self.prev = ev
        handler = _HANDLERS.get(ev.type)
        if handler is None:
            return
        try:
            data = _unpackb(ev.data)
            if ev.version != self.current.get(ev.type):
                data = upcast(ev.type, ev.version, data)
            if not isinstance(data, dict):
                raise EventDecodeError("payload is not a map")
        except (EventDecodeError, ValueError, TypeError, msgpack.ExtraData) as exc:
            self.add_for_event(
                "undecodable",
                "critical",
                ev,
                f"{ev.type} at seq {ev.seq} cannot be read: {exc}",
                type=ev.type,
                problem=str(exc),
            )
            return
        handler(self, ev, data)

    def _continuity(self, prev: StoredEvent, ev: StoredEvent) -> None:
        if ev.seq != prev.seq + 1 or ev.prev_hash != prev.hash:
            problem = (
                f"seq {ev.seq} follows seq {prev.seq}"
                if ev.seq != prev.seq + 1
                else f"seq {ev.seq}'s previous hash is not seq {prev.seq}'s hash"
            )
            self.add(
                "log-discontinuity",
                "critical",
                None,
                ev.wall_ns,
                (prev.seq, ev.seq),
                f"{problem}: events missing or inserted; run replay verify",
                problem=problem,
            )
        if ev.boot_id == prev.boot_id:
            step = ((ev.wall_ns - prev.wall_ns) - (ev.mono_ns - prev.mono_ns)) / 1e9
            if abs(step) >= self.limits.clock_step_s:
                way = "forward" if step > 0 else "back"
                self.add(
                    "clock-step",
                    "warning",
                    None,
                    ev.wall_ns,
                    (prev.seq, ev.seq),
                    f"the wall clock jumped {way} by {_s(abs(step))} against the monotonic "
                    f"clock between seq {prev.seq} and {ev.seq}",
                    step_s=round(step, 3),
                )
                self.inferred_step = (self.out[-1], _at(ev))

    def clock_stepped(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        """The daemon's own record of a step replaces the step found between the events
        around it (the same jump, seen by the daemon a moment later)."""
        proof = [ev.seq]
        found = self.inferred_step
        if found is not None:
            finding, at = found
            if (
                at.boot_id == ev.boot_id
                and 0 <= ev.mono_ns - at.mono_ns <= _STEP_NOTICED_WITHIN_NS
                and (finding.fields["step_s"] > 0) == (int(d.get("offset_ns") or 0) > 0)
            ):
                self.out.remove(finding)
                proof += finding.seqs
            self.inferred_step = None
        self.clock_steps[ev.seq] = _ClockStep(_at(ev), d, proof)

    def _clock_step_findings(self) -> None:
        for seq, step in self.clock_steps.items():
            offset = int(step.data.get("offset_ns") or 0) / 1e9
            way = "forward" if offset > 0 else "back"
            synchronised = step.data.get("synchronised")
            said = {True: "synchronised", False: "not synchronised", None: "sync unknown"}
            carried = (
                f"; {step.count} decision{'s' if step.count != 1 else ''} carried it until the "
                "next sync"
                if step.count
                else ""
            )
            self.add(
                "clock-step",
                "warning",
                None,
                step.at.wall_ns,
                step.proof,
                f"the wall clock was stepped {way} by {_s(abs(offset))} (seq {seq}, clock "
                f"{said.get(synchronised, 'sync unknown')}){carried}",
                step_s=round(offset, 3),
                synchronised=synchronised,
                noticed_by=step.data.get("noticed_by"),
                decisions=step.decisions,
                decisions_carrying=step.count,
            )

    # -- the road -------------------------------------------------------------------------

    def loop_changed(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        if ev.lane is None:
            return
        lane = self.lanes[ev.lane]
        loop, occupied = d.get("loop"), bool(d.get("occupied"))
        lane.loops[str(loop)] = occupied
        if loop == "safety" and occupied:
            lane.last_safety_on = ev.seq
        if not occupied:
            lane.last_cleared = ev.seq
        self._arm_watch(ev, lane)

    def _arm_watch(self, ev: StoredEvent, lane: _Lane, ended_by: str = "") -> None:
        """Track how long the arm stands up over a clear lane nobody holds open."""
        clear = (
            lane.arm_up
            and not lane.held
            and not self.incident
            and not any(lane.loops.values())
            and not ended_by
        )
        if clear and lane.clear_since is None:
            lane.clear_since = _at(ev)
            lane.clear_seqs = (lane.raised_by, lane.last_cleared)
        elif not clear and lane.clear_since is not None:
            since, lane.clear_since = lane.clear_since, None
            up_s = _seconds(since, _at(ev))
            if up_s >= self.limits.arm_up_clear_s:
                why = ended_by or f"{ev.type} at seq {ev.seq}"
                self.add(
                    "arm-left-up",
                    "warning",
                    lane.lane_id,
                    since.wall_ns,
                    (*lane.clear_seqs, since.seq, ev.seq),
                    f"the arm stood up over a clear lane for {_s(up_s)} (from seq {since.seq} "
                    f"until {why}), nobody holding it open",
                    up_s=round(up_s, 3),
                )

    def barrier_commanded(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        lane_id = ev.lane
        command, reason, cause = d.get("command"), str(d.get("reason", "")), d.get("cause_seq")
        device = str(d.get("device", ""))
        self.barrier_devices.setdefault(device, lane_id)
        if cause is not None and cause not in self.causes:
            self.add(
                "cause-mismatch",
                "critical",
                lane_id,
                ev.wall_ns,
                (cause, ev.seq),
                f"the {command} command at seq {ev.seq} names seq {cause} as its cause, which is "
                "no decision, action or command: the log may have been edited; run replay verify",
                command=command,
                cause_seq=cause,
            )
        if lane_id is None:
            return
        lane = self.lanes[lane_id]
        if command in ("open", "close"):
            lane.pending_cmd = (str(command), _at(ev))
        if command == "close":
            lane.last_close = ev.seq
            self._arm_watch(ev, lane, ended_by=f"the close at seq {ev.seq}")
        if command == "open" and reason == "safety-loop-occupied-while-closing":
            self.add(
                "safety-reversal",
                "warning",
                lane_id,
                ev.wall_ns,
                (lane.last_close, lane.last_safety_on, ev.seq),
                "the closing arm was raised again: something was on the safety loop under it",
                close_seq=lane.last_close,
                safety_seq=lane.last_safety_on,
            )

    def barrier_state(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        if ev.lane is None:
            return
        self.barrier_devices.setdefault(str(d.get("device", "")), ev.lane)
        lane = self.lanes[ev.lane]
        up, down = bool(d.get("up_limit")), bool(d.get("down_limit"))
        pending = lane.pending_cmd
        if pending is not None and (
            (pending[0] == "open" and up) or (pending[0] == "close" and down)
        ):
            lane.pending_cmd = None
            ms = round(_seconds(pending[1], _at(ev)) * 1000)
            self.travels[(ev.lane, pending[0])].append((ev.wall_ns, ms, pending[1].seq, ev.seq))
        was_up, lane.arm_up = lane.arm_up, up
        if up and not was_up:
            lane.raised_by = None if pending is None else pending[1].seq
        self._arm_watch(ev, lane)

    # -- devices --------------------------------------------------------------------------

    def device_fault(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        device = str(d.get("device", ""))
        if device in self.outages:
            return
        self.outages[device] = _Outage(
            device, ev.lane, str(d.get("code", "")), str(d.get("message", "")), _at(ev)
        )
        for lane_id, lane in self.lanes.items():
            if self.barrier_devices.get(device) == lane_id:
                self._arm_watch(ev, lane, ended_by=f"the fault at seq {ev.seq}")

    def device_recovered(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        outage = self.outages.pop(str(d.get("device", "")), None)
        if outage is not None:
            self.closed_outages.append((outage, _at(ev), "recovered"))

    def _end_outages(self, at: _At | None, why: str) -> None:
        for outage in self.outages.values():
            self.closed_outages.append((outage, at, why))
        self.outages.clear()

    def frame_rejected(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        device = str(d.get("device", ""))
        frames = int(d.get("count") or 1)
        kinds = {str(k) for k in d.get("kinds") or ()} or {str(d.get("reason", ""))}
        burst = self.bursts.get(device)
        gap_ns = int(self.limits.burst_gap_s * 1e9)
        if burst is not None and ev.wall_ns - burst.last_wall <= gap_ns:
            burst.last_wall = ev.wall_ns
            burst.frames += frames
            burst.kinds |= kinds
            burst.events += 1
            if len(burst.seqs) < CAP:
                burst.seqs.append(ev.seq)
            return
        if burst is not None:
            self._burst(burst)
        self.bursts[device] = _Burst(
            device, ev.lane, _at(ev), ev.wall_ns, frames, kinds, [ev.seq], 1
        )

    def _burst(self, b: _Burst) -> None:
        seconds = (b.last_wall - b.start.wall_ns) / 1e9
        self.add(
            "rejected-frames",
            "warning" if b.frames >= 100 else "notice",
            b.lane,
            b.start.wall_ns,
            b.seqs,
            f"{b.device} sent {b.frames} bad frames over {_s(seconds)} "
            f"({', '.join(sorted(b.kinds))})",
            device=b.device,
            frames=b.frames,
            events=b.events,
            kinds=sorted(b.kinds),
            duration_s=round(seconds, 3),
        )

    # -- plates, decisions, vehicles ------------------------------------------------------

    def plate_read(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        if ev.lane is not None:
            self.readers[ev.lane] = str(d.get("reader", ""))

    def plate_not_read(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        self.not_read.append((ev.lane, ev.wall_ns, ev.seq))

    def access_decided(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        self.causes.add(ev.seq)
        mark = d.get("clock_step")
        if isinstance(mark, dict) and isinstance(step_seq := mark.get("seq"), int):
            step = self.clock_steps.get(step_seq)
            if step is not None:
                step.count += 1
                if len(step.decisions) < CAP:
                    step.decisions.append(ev.seq)
        if ev.lane is None:
            return
        lane = self.lanes[ev.lane]
        if lane.waiting is not None:
            self._guard_done(ev, lane, "superseded", None)
        if d.get("verdict") == "confirm":
            lane.waiting = (ev.seq, _at(ev), d.get("plate"))

    def _guard_done(self, ev: StoredEvent, lane: _Lane, outcome: str, by: str | None) -> None:
        assert lane.waiting is not None
        seq, since, plate = lane.waiting
        lane.waiting = None
        waited = _seconds(since, _at(ev))
        who = f" by {by}" if by else ""
        self.add(
            "guard-wait",
            "warning" if outcome in ("expired", "unanswered") else "notice",
            lane.lane_id,
            since.wall_ns,
            (seq, ev.seq) if outcome != "unanswered" else (seq,),
            f"{plate or 'a vehicle'} waited {_s(waited)} for a guard: {outcome}{who}",
            plate=plate,
            decision_seq=seq,
            outcome=outcome,
            operator=by,
            waited_s=round(waited, 3),
        )

    def _answers(self, ev: StoredEvent, decision_seq: Any) -> _Lane | None:
        if ev.lane is None:
            return None
        lane = self.lanes[ev.lane]
        if lane.waiting is None or lane.waiting[0] != decision_seq:
            return None
        return lane

    def guard_wait_expired(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        lane = self._answers(ev, d.get("decision_seq"))
        if lane is not None:
            self._guard_done(ev, lane, "expired", None)

    def backed_out(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        plate, decision = d.get("plate"), d.get("decision_seq")
        lane = self._answers(ev, decision)
        if lane is not None:
            self._guard_done(ev, lane, "backed-out", None)
        released = d.get("released_appointment")
        self.add_for_decision(
            "back-out",
            "notice",
            ev,
            d,
            f"{plate or 'an unread vehicle'} reversed away from the arming loop"
            + (f"; appointment {released} released" if released else ""),
            released_appointment=released,
        )

    def tailgate(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        self.add_for_decision(
            "tailgate",
            "warning",
            ev,
            d,
            f"suspected tailgate on the opening for {d.get('plate') or 'nobody admitted'}: "
            f"{d.get('detail', '')}",
            detail=d.get("detail", ""),
        )

    def not_opened_for(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        self.add_for_decision(
            "not-opened-for",
            "warning",
            ev,
            d,
            f"{d.get('plate')} was admitted but the arm never rose for it: {d.get('detail', '')}",
        )

    def vehicle_passed(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        if d.get("unauthorised"):
            plate = d.get("plate") or "a vehicle"
            self.add_for_decision(
                "unauthorised-pass",
                "warning",
                ev,
                d,
                f"{plate}, refused by the policy, crossed the lane held open",
            )

    # -- people, central, modes -----------------------------------------------------------

    def manual_action(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        self.causes.add(ev.seq)
        action, operator = str(d.get("action", "")), str(d.get("operator", ""))
        if action in ("confirm", "refuse", "correct"):
            lane = self._answers(ev, d.get("decision_seq"))
            if lane is not None:
                self._guard_done(
                    ev,
                    lane,
                    {"confirm": "confirmed", "refuse": "refused"}.get(action, "corrected"),
                    operator,
                )
            return
        if ev.lane is not None:
            lane = self.lanes[ev.lane]
            lane.held = action == "open"
            self._arm_watch(ev, lane)
        reason = d.get("reason") or ""
        self.add_for_event(
            "manual-action",
            "notice",
            ev,
            f"{operator} did {action}" + (f": {reason}" if reason else ""),
            action=action,
            operator=operator,
            reason=reason,
        )

    def command_accepted(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        self.causes.add(ev.seq)
        command_id, action = str(d.get("command_id", "")), str(d.get("action", ""))
        self.commands[command_id] = ev.seq
        if ev.lane is not None and action in ("open-lane", "release-lane"):
            lane = self.lanes[ev.lane]
            lane.held = action == "open-lane"
            self._arm_watch(ev, lane)
        self.add_for_event(
            "central-command",
            "notice",
            ev,
            f"central's {d.get('operator', '')} commanded {action}: {d.get('reason', '')}",
            outcome="accepted",
            command_id=command_id,
            action=action,
            operator=d.get("operator"),
        )

    def command_refused(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        code = str(d.get("code", ""))
        self.add_for_event(
            "central-command",
            "warning",
            ev,
            f"a command was refused ({code}): {d.get('message', '')}",
            outcome="refused",
            code=code,
            command_id=d.get("command_id"),
            action=d.get("action"),
        )

    def command_failed(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        command_id = str(d.get("command_id", ""))
        self.add(
            "central-command",
            "warning",
            ev.lane,
            ev.wall_ns,
            (self.commands.get(command_id), ev.seq),
            f"command {command_id} ({d.get('action', '')}) failed: {d.get('message', '')}",
            outcome="failed",
            code=d.get("code"),
            command_id=command_id,
            action=d.get("action"),
        )

    def mode_changed(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        self.causes.add(ev.seq)
        mode = d.get("mode")
        if mode == "incident":
            if self.incident_on is None:
                self.incident_on = (_at(ev), d)
            self.incident = True
            for lane in self.lanes.values():
                self._arm_watch(ev, lane)
            return
        self._incident_off(ev, d)

    def _incident_off(self, ev: StoredEvent | None, d: dict[str, Any] | None) -> None:
        if self.incident_on is None:
            return
        on, on_d = self.incident_on
        self.incident_on, self.incident = None, False
        end = None if ev is None else _at(ev)
        lasted = "" if end is None else f" for {_s(_seconds(on, end))}"
        off = "" if d is None else f", ended by {d.get('source')} {d.get('operator', '')}".rstrip()
        self.add(
            "incident-mode",
            "warning",
            None,
            on.wall_ns,
            (on.seq, None if ev is None else ev.seq),
            f"incident mode on{lasted}, from {on_d.get('source')} {on_d.get('operator', '')}"
            f"{': ' + str(on_d['reason']) if on_d.get('reason') else ''}{off}"
            + ("" if end is not None else "; still on at the end of the log"),
            source=on_d.get("source"),
            operator=on_d.get("operator"),
            reason=on_d.get("reason"),
            off_source=None if d is None else d.get("source"),
            duration_s=None if end is None else round(_seconds(on, end), 3),
        )

    # -- the daemon -----------------------------------------------------------------------

    def daemon_started(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        prev_boot, stopped = self.boot, self.stopped
        self.boot, self.stopped = _at(ev), None
        for lane in self.lanes.values():
            lane.held = False  # a hold still in force is re-applied and logged again
            lane.pending_cmd = None
            if lane.waiting is not None:
                self._guard_done(ev, lane, "unanswered", None)
        if stopped is not None:
            gap = (ev.wall_ns - stopped.wall_ns) / 1e9
            self.add(
                "boot-gap",
                "notice",
                None,
                stopped.wall_ns,
                (stopped.seq, ev.seq),
                f"the daemon was stopped for {_s(gap)}",
                down_s=round(gap, 3),
                software_version=d.get("software_version"),
            )
        elif prev_boot is not None and self.ran_until is not None:
            self._end_outages(_at(ev), "restarted")
            last = self.ran_until
            gap = (ev.wall_ns - last.wall_ns) / 1e9
            self.add(
                "crash",
                "warning",
                None,
                last.wall_ns,
                (last.seq, ev.seq),
                f"the daemon started again without having stopped (crash or power loss); "
                f"nothing was logged for {_s(gap)} before",
                down_s=round(gap, 3),
                same_boot=last.boot_id == ev.boot_id,
            )

    def daemon_stopped(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        self.stopped = _at(ev)
        self._end_outages(_at(ev), "daemon stopped")
        for lane in self.lanes.values():
            self._arm_watch(ev, lane, ended_by=f"the daemon stopped at seq {ev.seq}")

    # -- allow-lists, credentials ---------------------------------------------------------

    def allowlist_tampered(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        self.add(
            "allowlist-tampered",
            "critical",
            None,
            ev.wall_ns,
            (ev.seq,),
            f"the stored allow-list (version {d.get('version')}) was changed outside edgegate: "
            f"{d.get('problem', '')}; {d.get('left_out', 0)} entries left out, admissions "
            "needed a guard until a valid list came",
            version=d.get("version"),
            problem=d.get("problem"),
            credential_id=d.get("credential_id"),
        )

    def allowlist_refused(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        code = str(d.get("code", ""))
        self.add(
            "allowlist-refused",
            "notice" if code in ("stale", "gap") else "warning",
            None,
            ev.wall_ns,
            (ev.seq,),
            f"an allow-list publication was refused ({code}): {d.get('message', '')}",
            code=code,
            version=d.get("version"),
            key_id=d.get("key_id"),
        )

    def revoked_admission(self, ev: StoredEvent, d: dict[str, Any]) -> None:
        certain = bool(d.get("certain"))
        self.add_for_decision(
            "revoked-admission",
            "critical" if certain else "warning",
            ev,
            d,
            f"{d.get('plate')} was admitted on {d.get('credential_kind')} "
            f"{d.get('credential_id')}, {d.get('basis')} in allow-list "
            f"{d.get('allowlist_version')}" + ("" if certain else " (maybe before it was revoked)"),
            credential_id=d.get("credential_id"),
            basis=d.get("basis"),
            certain=certain,
        )

    # -- the end --------------------------------------------------------------------------

    def finish(self) -> Incidents:
        last = self.prev
        end = None if last is None else _at(last)
        for lane in self.lanes.values():
            if lane.clear_since is not None and last is not None:
                self._arm_watch(last, lane, ended_by="the end of the log")
            if lane.waiting is not None and last is not None:
                self._guard_done(last, lane, "unanswered", None)
        if self.incident_on is not None:
            self._incident_off(None, None)
        self._end_outages(end, "end of log")
        for burst in self.bursts.values():
            self._burst(burst)
        self._outages()
        travel_findings(self.travels, self.tz, self.limits, self.add)
        not_read_findings(self.not_read, self.readers, self.tz, self.limits, self.add)
        self._clock_step_findings()
        findings = sorted(self.out, key=lambda f: (f.wall_ns, f.seqs[:1], f.kind))
        return Incidents(
            tuple(findings), self.events, self.first_seq, None if last is None else last.seq
        )

    def _outages(self) -> None:
        for o, end, why in self.closed_outages:
            barrier = o.device in self.barrier_devices or o.code.startswith("barrier-")
            lane = o.lane or self.barrier_devices.get(o.device)
            lasted = None if end is None else _seconds(o.start, end)
            if why == "recovered":
                how = f"recovered after {_s(lasted or 0.0)}"
            else:
                how = f"not recovered when the {why.replace('daemon ', 'daemon was ')}"
                if lasted is not None:
                    how += f" {_s(lasted)} later"
            self.add(
                "barrier-fault" if barrier else "device-outage",
                "critical" if barrier else "warning",
                lane,
                o.start.wall_ns,
                (o.start.seq, None if end is None or why == "end of log" else end.seq),
                f"{o.device} failed ({o.code}: {_short(o.message)}); {how}",
                device=o.device,
                code=o.code,
                ended=why,
                duration_s=None if lasted is None else round(lasted, 3),
            )


def _short(text: str, size: int = 80) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


_unpackb = msgpack.unpackb

# What a starting daemon logs before daemon.started (opening its allow-list).
_BEFORE_START = frozenset({"allowlist.tampered"})

_HANDLERS: dict[str, Any] = {
    "loop.changed": _Scan.loop_changed,
    "barrier.commanded": _Scan.barrier_commanded,
    "barrier.state": _Scan.barrier_state,
    "device.fault": _Scan.device_fault,
    "device.recovered": _Scan.device_recovered,
    "device.frame-rejected": _Scan.frame_rejected,
    "plate.read": _Scan.plate_read,
    "plate.not-read": _Scan.plate_not_read,
    "access.decided": _Scan.access_decided,
    "guard.wait-expired": _Scan.guard_wait_expired,
    "vehicle.backed-out": _Scan.backed_out,
    "vehicle.tailgate-suspected": _Scan.tailgate,
    "vehicle.not-opened-for": _Scan.not_opened_for,
    "vehicle.passed": _Scan.vehicle_passed,
    "manual.action": _Scan.manual_action,
    "command.accepted": _Scan.command_accepted,
    "command.refused": _Scan.command_refused,
    "command.failed": _Scan.command_failed,
    "mode.changed": _Scan.mode_changed,
    "daemon.started": _Scan.daemon_started,
    "daemon.stopped": _Scan.daemon_stopped,
    "clock.stepped": _Scan.clock_stepped,
    "allowlist.tampered": _Scan.allowlist_tampered,
    "allowlist.refused": _Scan.allowlist_refused,
    "admission.revoked-credential": _Scan.revoked_admission,
}


def find_incidents(
    events: Iterable[StoredEvent],
    *,
    tz: ZoneInfo | None = None,
    limits: Limits | None = None,
) -> Incidents:
    """The findings of ``events`` (in seq order). ``tz``: the gate's time zone, for the days
    of arm travel trends and the hours of plates not read (default Asia/Shanghai)."""
    scan = _Scan(tz or ZoneInfo("Asia/Shanghai"), limits or Limits())
    feed = scan.feed
    for ev in events:
        feed(ev)
    return scan.finish()


def find_incidents_in_rows(
    batches: Iterable[Iterable[Row]],
    *,
    tz: ZoneInfo | None = None,
    limits: Limits | None = None,
) -> Incidents:
    """``find_incidents`` over batches of stored rows (``Source.batches``, ``LogReader.iter_rows``):
    the same findings, without building a ``StoredEvent`` per row."""
    scan = _Scan(tz or ZoneInfo("Asia/Shanghai"), limits or Limits())
    feed, make = scan.feed, StoredEvent._make
    for batch in batches:
        for ev in map(make, batch):
            feed(ev)
    return scan.finish()


def stored_events(rows: Iterable[list[Any]]) -> Iterator[StoredEvent]:
    """Stored events from ``LogReader.iter_rows`` batches."""
    for batch in rows:
        for row in batch:
            yield StoredEvent(*row)
