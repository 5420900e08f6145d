"""A lane's events grouped into vehicle cycles, with the time between their steps.

A cycle is one vehicle at one lane: the arming loop occupied (or a plate read before it), the
read, the decision(s), guard actions, barrier commands and limit switches, the loops, and how
it ended: ``passed``, ``backed-out``, ``not-read``, ``guard-wait-expired``, ``not-opened-for``,
or ``open`` (the log ends, or the next vehicle came, before an outcome was recorded). A
``tailgate-suspected`` or an ``unauthorised`` pass is a flag on the cycle.

Grouping (``group``): events that name their decision (``decision_seq``, ``cause_seq``,
``read_seq``) go to the cycle holding it; a rise of the arming loop starts a new cycle once
the current one has an outcome or its vehicle has left the arming loop; a read with no cycle
open starts one; other lane events (loops, limit switches) go to the lane's current cycle.
Events of no cycle (gate-wide events, faults, mode changes, events between cycles) are
``Note``s, kept in place. Durations use the monotonic clock within one boot (a wall-clock
step does not distort them), the wall clock across boots.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edgegate.core import events as ev
from edgegate.core.codec import ns_to_datetime
from edgegate.log import StoredEvent
from edgegate.replay.source import PlateQuery, plates_of

OUTCOMES = ("passed", "backed-out", "not-read", "guard-wait-expired", "not-opened-for", "open")


@dataclass(slots=True)
class Step:
    """One event of a cycle (or a note): where, when, what, and its decoded fields."""

    seq: int
    wall_ns: int
    mono_ns: int
    boot_id: str
    type: str
    lane: str | None
    event: ev.Event | None
    """None when the payload could not be decoded (``error`` says why)."""
    error: str = ""

    @classmethod
    def of(cls, stored: StoredEvent) -> Step:
        try:
            event: ev.Event | None = stored.event()
            error = ""
        except Exception as exc:  # EventDecodeError, or a damaged column
            event, error = None, str(exc)
        return cls(
            stored.seq,
            stored.wall_ns,
            stored.mono_ns,
            stored.boot_id,
            stored.type,
            stored.lane,
            event,
            error,
        )

    def time(self, tz: ZoneInfo) -> datetime:
        return ns_to_datetime(self.wall_ns).astimezone(tz)

    def summary(self) -> str:
        """What happened, in a few words (``plate.read 苏E12345 0.95``)."""
        e = self.event
        if e is None:
            return f"undecodable: {self.error}"
        match e:
            case ev.LoopChanged():
                return f"{e.loop} loop {'occupied' if e.occupied else 'clear'}"
            case ev.PlateRead():
                return f"read {e.plate} ({e.colour}, {e.confidence:.2f}) by {e.reader}"
            case ev.AccessDecided():
                fuzzy = f" ~{e.matched_plate}" if e.match == ev.MatchKind.FUZZY else ""
                step = "" if e.clock_step is None else f" [{clock_step_words(e.clock_step)}]"
                return f"{e.verdict} {e.plate}{fuzzy}: {', '.join(e.reasons)}{step}"
            case ev.BarrierCommanded():
                return f"command {e.command} ({e.reason})"
            case ev.BarrierStateChanged():
                return f"arm {e.state}"
            case ev.ManualAction():
                return f"{e.action} by {e.operator}" + (f": {e.reason}" if e.reason else "")
            case ev.VehiclePassed():
                return f"passed {e.plate}" + (" UNAUTHORISED" if e.unauthorised else "")
            case ev.VehicleBackedOut():
                return f"backed out {e.plate or ''}".rstrip()
            case ev.TailgateSuspected():
                return f"tailgate suspected: {e.detail}"
            case ev.PlateNotRead():
                return f"plate not read after {e.waited_ms} ms"
            case ev.GuardWaitExpired():
                return f"guard wait expired after {e.waited_ms} ms"
            case ev.DeviceFault():
                return f"{e.device} fault {e.code}: {e.message}"
            case ev.DeviceRecovered():
                return f"{e.device} recovered after {e.down_ms} ms"
            case ev.ModeChanged():
                return f"mode {e.previous} -> {e.mode} ({e.source} {e.operator})".rstrip()
            case ev.DaemonStarted():
                return f"daemon started, version {e.software_version}, zone {e.timezone}"
            case ev.DaemonStopped():
                return f"daemon stopped ({e.reason})"
            case ev.ClockStepped():
                return clock_stepped_words(e)
        return self.type

    def to_json(self, tz: ZoneInfo) -> dict[str, Any]:
        """``{"seq", "ts" (ISO in the gate's zone), "type", "lane", "what"}``."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "ts": self.time(tz).isoformat(),
            "type": self.type,
            "lane": self.lane,
            "what": self.summary(),
        }
        if self.error:
            out["decode_error"] = self.error
        return out


def _offset_words(offset_ns: int) -> str:
    """``forward by 2.0 h`` / ``back by 45.0 s``."""
    seconds = abs(offset_ns) / 1e9
    size = (
        f"{seconds:.1f} s"
        if seconds < 120
        else f"{seconds / 60:.1f} min"
        if seconds < 7200
        else f"{seconds / 3600:.1f} h"
    )
    return f"{'forward' if offset_ns > 0 else 'back'} by {size}"


def clock_stepped_words(e: ev.ClockStepped) -> str:
    """A ``clock.stepped`` event in a few words."""
    said = {True: "synchronised", False: "not synchronised", None: "sync unknown"}
    return (
        f"wall clock stepped {_offset_words(e.offset_ns)} "
        f"(clock {said[e.synchronised]}, noticed by {e.noticed_by})"
    )


def clock_step_words(mark: ev.ClockStepMark) -> str:
    """What a decision's ``clock_step`` says, in a few words."""
    where = "not logged" if mark.seq is None else f"seq {mark.seq}"
    return f"after a clock step {_offset_words(mark.offset_ns)} ({where}), before the next sync"


def _ms(a: Step, b: Step) -> float:
    """Milliseconds from ``a`` to ``b``: monotonic within one boot, else wall time."""
    if a.boot_id == b.boot_id:
        return (b.mono_ns - a.mono_ns) / 1e6
    return (b.wall_ns - a.wall_ns) / 1e6


@dataclass(slots=True)
class Cycle:
    """One vehicle at one lane. ``steps`` in seq order; ``timings`` in milliseconds:

    - ``decision_ms``: arming loop (or the read, if earlier) to the first decision;
    - ``read_to_decision_ms``: the read to its decision;
    - ``guard_wait_ms``: a decision asking for a guard to the guard's answer or the expiry;
    - ``arm_rise_ms``: the open command to the up limit switch;
    - ``under_arm_ms``: the safety loop occupied, summed over its occupations;
    - ``arm_fall_ms``: the close command to the down limit switch;
    - ``total_ms``: first step to last.

    A timing is absent when its steps are not in the cycle.
    """

    lane: str
    steps: list[Step] = field(default_factory=list)
    outcome: str = "open"
    flags: list[str] = field(default_factory=list)
    plate: str | None = None
    plate_match: str | None = None
    """``"exact"`` or ``"fuzzy"`` when the timeline was asked for a plate."""
    decisions: list[int] = field(default_factory=list)
    reads: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _arming_left: bool = False

    @property
    def start(self) -> Step:
        return self.steps[0]

    @property
    def end(self) -> Step:
        return self.steps[-1]

    def verdicts(self) -> list[str]:
        return [
            s.event.verdict
            for s in self.steps
            if isinstance(s.event, ev.AccessDecided) and s.seq in self.decisions
        ]

    def plates(self) -> list[str]:
        return [p for s in self.steps if s.event is not None for p in plates_of(s.event)]

    def to_json(self, tz: ZoneInfo) -> dict[str, Any]:
        """Plain data for scripts and the HTML report::

        {"kind": "cycle", "lane", "start", "end" (ISO, gate's zone), "start_seq",
         "end_seq", "plate", "plate_match", "outcome", "flags": [...],
         "verdicts": [...], "decision_seqs": [...], "timings": {name: ms},
         "steps": [Step.to_json, ...]}
        """
        return {
            "kind": "cycle",
            "lane": self.lane,
            "start": self.start.time(tz).isoformat(),
            "end": self.end.time(tz).isoformat(),
            "start_seq": self.start.seq,
            "end_seq": self.end.seq,
            "plate": self.plate,
            "plate_match": self.plate_match,
            "outcome": self.outcome,
            "flags": list(self.flags),
            "verdicts": self.verdicts(),
            "decision_seqs": list(self.decisions),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "steps": [s.to_json(tz) for s in self.steps],
        }

    def _compute_timings(self) -> None:
        t: dict[str, float] = {}
        first_arming = first_read = first_decision = None
        confirm: Step | None = None
        open_cmd = close_cmd = safety_on = None
        under = 0.0
        for s in self.steps:
            e = s.event
            if isinstance(e, ev.LoopChanged):
                if e.loop == ev.Loop.ARMING and e.occupied and first_arming is None:
                    first_arming = s
                if e.loop == ev.Loop.SAFETY:
                    if e.occupied and safety_on is None:
                        safety_on = s
                    elif not e.occupied and safety_on is not None:
                        under += _ms(safety_on, s)
                        safety_on = None
                        t["under_arm_ms"] = under
            elif isinstance(e, ev.PlateRead) and first_read is None:
                first_read = s
            elif isinstance(e, ev.AccessDecided):
                if first_decision is None:
                    first_decision = s
                    begin = min(
                        (x for x in (first_arming, first_read) if x is not None),
                        key=lambda x: x.seq,
                        default=None,
                    )
                    if begin is not None:
                        t["decision_ms"] = _ms(begin, s)
                    if first_read is not None:
                        t["read_to_decision_ms"] = _ms(first_read, s)
                if e.verdict == "confirm" and confirm is None:
                    confirm = s
            elif isinstance(e, ev.ManualAction | ev.GuardWaitExpired) and confirm is not None:
                t.setdefault("guard_wait_ms", _ms(confirm, s))
            elif isinstance(e, ev.BarrierCommanded):
                if e.command == ev.BarrierCommand.OPEN and open_cmd is None:
                    open_cmd = s
                elif e.command == ev.BarrierCommand.CLOSE:
                    close_cmd = s
            elif isinstance(e, ev.BarrierStateChanged):
                if e.up_limit and open_cmd is not None:
                    t.setdefault("arm_rise_ms", _ms(open_cmd, s))
                if e.down_limit and close_cmd is not None:
                    t.setdefault("arm_fall_ms", _ms(close_cmd, s))
        t["total_ms"] = _ms(self.start, self.end)
        self.timings = t


@dataclass(slots=True)
class Note:
    """An event outside any cycle, shown in place (a fault, a mode change, a start...)."""

    step: Step

    def to_json(self, tz: ZoneInfo) -> dict[str, Any]:
        """``{"kind": "event", **Step.to_json}``."""
        return {"kind": "event", **self.step.to_json(tz)}


Item = Cycle | Note

_OUTCOME_OF: dict[type[ev.Event], str] = {
    ev.VehiclePassed: "passed",
    ev.VehicleBackedOut: "backed-out",
    ev.PlateNotRead: "not-read",
    ev.GuardWaitExpired: "guard-wait-expired",
    ev.AdmissionNotOpened: "not-opened-for",
}
# Lane events that belong to a vehicle's cycle; other lane events (faults, device recovery,
# central commands...) are notes.
_CYCLE_TYPES = (
    ev.LoopChanged,
    ev.PlateRead,
    ev.AccessDecided,
    ev.BarrierCommanded,
    ev.BarrierStateChanged,
    ev.ManualAction,
    ev.TailgateSuspected,
    *_OUTCOME_OF,
)


def _link(e: ev.Event) -> int | None:
    for name in ("decision_seq", "cause_seq", "read_seq", "corrects_seq"):
        value = getattr(e, name, None)
        if isinstance(value, int):
            return value
    return None


class _Grouper:
    def __init__(self) -> None:
        self.current: dict[str, Cycle] = {}
        self.by_seq: dict[int, Cycle] = {}  # decision and read seqs -> their cycle
        self.pending: list[Item] = []  # in order of first seq; emitted once closed

    def _new(self, lane: str) -> Cycle:
        cycle = Cycle(lane)
        self.current[lane] = cycle
        self.pending.append(cycle)
        return cycle

    def feed(self, s: Step) -> None:
        e = s.event
        lane = s.lane
        if lane is None or e is None or not isinstance(e, _CYCLE_TYPES):
            self.pending.append(Note(s))
            return
        linked = _link(e)
        cycle = self.by_seq.get(linked) if linked is not None else None
        current = self.current.get(lane)
        if cycle is None:
            if isinstance(e, ev.LoopChanged) and e.loop == ev.Loop.ARMING and e.occupied:
                if current is None or current.outcome != "open" or current._arming_left:
                    current = self._new(lane)
            elif isinstance(e, ev.PlateRead | ev.AccessDecided | ev.PlateNotRead) and (
                current is None or current.outcome != "open"
            ):
                current = self._new(lane)
            if current is None:
                # A loop or the arm moving with no vehicle cycle open (a manual open...).
                self.pending.append(Note(s))
                return
            cycle = current
        cycle.steps.append(s)
        if isinstance(e, ev.LoopChanged) and e.loop == ev.Loop.ARMING and not e.occupied:
            cycle._arming_left = True
        elif isinstance(e, ev.PlateRead):
            cycle.reads.append(s.seq)
            self.by_seq[s.seq] = cycle
        elif isinstance(e, ev.AccessDecided):
            cycle.decisions.append(s.seq)
            self.by_seq[s.seq] = cycle
            cycle.plate = e.plate
        elif isinstance(e, ev.TailgateSuspected):
            cycle.flags.append("tailgate-suspected")
        elif type(e) in _OUTCOME_OF:
            outcome = _OUTCOME_OF[type(e)]
            if isinstance(e, ev.GuardWaitExpired) and cycle.outcome != "open":
                return
            cycle.outcome = outcome
            if isinstance(e, ev.VehiclePassed):
                cycle.plate = cycle.plate or e.plate
                if e.unauthorised:
                    cycle.flags.append("unauthorised")

    def drain(self, final: bool, latest: int = 0) -> Iterator[Item]:
        """Items whose place is settled, in order, up to the first cycle still current or
        with a step within ``_SETTLE`` seqs of ``latest`` (a late event naming its decision,
        a pass after the next vehicle arrived, may still join it)."""
        keep: list[Item] = []
        live = set(map(id, self.current.values()))
        for i, item in enumerate(self.pending):
            if (
                not final
                and isinstance(item, Cycle)
                and (id(item) in live or item.end.seq > latest - _SETTLE)
            ):
                keep = self.pending[i:]
                break
            if isinstance(item, Cycle):
                item._compute_timings()
                for seq in (*item.decisions, *item.reads):
                    self.by_seq.pop(seq, None)
            yield item
        self.pending = keep


_SETTLE = 2000


def group(events: Iterable[StoredEvent]) -> Iterator[Item]:
    """Cycles and notes in the order of their first event, streamed (a cycle is handed out
    once settled, see ``_Grouper.drain``, or at the end)."""
    g = _Grouper()
    for n, stored in enumerate(events, 1):
        g.feed(Step.of(stored))
        if n % 1000 == 0:
            yield from g.drain(final=False, latest=stored.seq)
    yield from g.drain(final=True)


def match_plate(cycle: Cycle, query: PlateQuery) -> str | None:
    """``"exact"`` if any plate of the cycle is the query's, ``"fuzzy"`` if one is a
    confusable neighbour, else None."""
    best = None
    for p in cycle.plates():
        m = query.match(p)
        if m == "exact":
            return m
        best = best or m
    return best
