"""Why: one decision explained step by step as the policy took it, then what followed from
the log (the command it caused, the PLC's confirmation, what the lane did next). Modelled on
automation traces: numbered steps, each with its outcome. Decisions before v4 did not record
what the policy looked at; their steps say so."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edgegate.core.codec import ns_to_datetime
from edgegate.core.domain import Direction
from edgegate.core.events import (
    AccessDecided,
    AdmissionNotOpened,
    BarrierCommanded,
    BarrierState,
    BarrierStateChanged,
    ClockStepped,
    DecisionTrace,
    Event,
    EventDecodeError,
    GuardWaitExpired,
    ManualAction,
    ParkConsumed,
    PlateRead,
    TailgateSuspected,
    TracedCredential,
    VehicleBackedOut,
    VehiclePassed,
)
from edgegate.core.rules import KIND_ADMITS
from edgegate.log.reader import StoredEvent
from edgegate.replay.cycles import clock_step_words, clock_stepped_words

NOT_RECORDED = "not recorded (decisions before v4 did not record it)"

_CHECK_WORDS = {
    "valid": "valid here now: admits",
    "not-yet-valid": "not valid yet",
    "expired": "expired",
    "wrong-gate": "not valid at this gate",
    "consumed": "already used (consumed)",
    "blacklisted": "in force: the vehicle is blacklisted",
    "blacklist-not-in-force": "not in force now",
}

# The policy's rules in order, each with the reason codes that are its findings.
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rule 1, blacklist", ("blacklisted", "blacklisted-on-exit")),
    ("rule 2, category admitted here", ("category-conflict", "category-not-admitted")),
    (
        "rule 3, hazmat/hazwaste appointment",
        (
            "appointment-valid",
            "appointment-missing",
            "appointment-not-yet-valid",
            "appointment-expired",
            "appointment-consumed",
            "appointment-wrong-gate",
        ),
    ),
    (
        "rule 4, registration",
        (
            "registration-valid",
            "registration-not-yet-valid",
            "registration-expired",
            "registration-wrong-gate",
        ),
    ),
    (
        "rule 5, temporary permit",
        ("permit-valid", "permit-not-yet-valid", "permit-expired", "permit-wrong-gate"),
    ),
    ("rule 6, anything else", ("no-credential", "exit-unknown-vehicle")),
    (
        "fuzzy match",
        (
            "fuzzy-match",
            "fuzzy-ambiguous",
            "fuzzy-blacklisted",
            "fuzzy-dangerous-needs-confirmation",
            "fuzzy-match-needs-confirmation",
        ),
    ),
    ("plate colour", ("colour-mismatch",)),
    ("read confidence", ("low-confidence",)),
    ("allow-list staleness", ("allowlist-stale",)),
    ("allow-list integrity", ("allowlist-tampered",)),
    ("park-wide presence", ("already-inside",)),
)


class WhyError(ValueError):
    """The decision asked for is not in the log (names what was asked)."""


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    outcome: str
    details: tuple[str, ...] = ()
    recorded: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "outcome": self.outcome,
            "details": list(self.details),
            "recorded": self.recorded,
        }


@dataclass(slots=True)
class Why:
    seq: int
    lane: str | None
    at: datetime
    version: int
    verdict: str
    steps: list[Step] = field(default_factory=list)
    followed: list[Step] = field(default_factory=list)
    consumed: tuple[str, ...] = ()
    """The appointments the decision found already used (see :func:`where_consumed`)."""

    def note_consumed(self, where: Mapping[str, str]) -> None:
        """Add where each appointment of ``consumed`` was used (:func:`where_consumed`) to
        its credential step and to rule 3."""
        for n, step in enumerate(self.steps):
            for appointment, words in where.items():
                if step.title.startswith(f"credential appointment {appointment} for "):
                    details = tuple(
                        f"consumed: {words}" if d == "consumed" else d for d in step.details
                    )
                    self.steps[n] = Step(step.title, step.outcome, details, step.recorded)
            if step.title.startswith("rule 3,") and "appointment-consumed" in step.outcome:
                extra = tuple(f"{a}: {w}" for a, w in where.items())
                self.steps[n] = Step(step.title, step.outcome, step.details + extra, step.recorded)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "lane": self.lane,
            "at": self.at.isoformat(),
            "event_version": self.version,
            "trace_recorded": self.version >= 4,
            "verdict": self.verdict,
            "steps": [s.to_json() for s in self.steps],
            "followed": [s.to_json() for s in self.followed],
        }


def _decode(stored: StoredEvent) -> Event | None:
    try:
        return stored.event()
    except EventDecodeError:
        return None


def find_decision(events: Iterable[StoredEvent], plate: str, at: datetime) -> int | None:
    """The seq of the last decision on ``plate`` (as read, normalised, or matched) at or
    before ``at``."""
    found: int | None = None
    for stored in events:
        if stored.type != AccessDecided.TYPE:
            continue
        if ns_to_datetime(stored.wall_ns) > at:
            break
        event = _decode(stored)
        if isinstance(event, AccessDecided) and plate in (
            event.plate_read,
            event.plate,
            event.matched_plate,
        ):
            found = stored.seq
    return found


#: How far past the lane's next decision events naming this one are still looked for.
_AFTER_NEXT_DECISION = 500


def explain(events: Iterable[StoredEvent], seq: int, tz: str = "Asia/Shanghai") -> Why:
    """The decision ``seq`` explained; ``events`` from before it (its read) to after it (what
    followed), in seq order. Reading stops at the end of this vehicle's cycle (passed, backed
    out, guard wait expired); past the lane's next decision only events naming this one are
    taken, for at most ``_AFTER_NEXT_DECISION`` seqs."""
    zone = ZoneInfo(tz)
    read: PlateRead | None = None
    reads: dict[int, PlateRead] = {}
    why: Why | None = None
    decision: AccessDecided | None = None
    command_seq: int | None = None
    next_decision: int | None = None
    decided: StoredEvent | None = None
    for stored in events:
        if why is None:
            if stored.seq < seq:
                if stored.type == PlateRead.TYPE:
                    event = _decode(stored)
                    if isinstance(event, PlateRead):
                        reads[stored.seq] = event
                continue
            if stored.seq > seq or stored.type != AccessDecided.TYPE:
                raise WhyError(f"seq {seq} is not an access.decided event")
            event = _decode(stored)
            if not isinstance(event, AccessDecided):
                raise WhyError(f"seq {seq}: the decision cannot be decoded")
            decision, decided = event, stored
            if event.read_seq is not None:
                read = reads.get(event.read_seq)
            why = Why(
                seq, stored.lane, ns_to_datetime(stored.wall_ns), stored.version, event.verdict
            )
            why.steps = _steps(event, read, zone)
            why.consumed = _consumed(event)
            continue
        assert decision is not None and decided is not None
        event = _decode(stored)
        if event is None or (event.lane is not None and event.lane != why.lane):
            continue
        when = _local(ns_to_datetime(stored.wall_ns), zone)
        after = f"{_elapsed_s(decided, stored):+.3f} s"
        if next_decision is not None and getattr(event, "decision_seq", None) != seq:
            # Another vehicle's cycle has begun: only what names this decision is its story.
            if stored.seq - next_decision > _AFTER_NEXT_DECISION:
                break
            continue
        step = _followed(event, seq, command_seq, stored.seq, f"seq {stored.seq}, {when} ({after})")
        if isinstance(event, BarrierCommanded) and event.cause_seq == seq:
            command_seq = stored.seq
        if step is not None:
            why.followed.append(step)
        if isinstance(event, AccessDecided) and event.corrects_seq != seq:
            # The lane decided on the next vehicle before this one's cycle ended (which is
            # itself worth knowing): what follows still naming this decision is shown.
            next_decision = stored.seq
            why.followed.append(
                Step(
                    "the lane",
                    f"decided on the next vehicle ({event.plate_read}, seq {stored.seq}) "
                    "before this vehicle was seen passing or backing out",
                    (f"seq {stored.seq}, {when} ({after})",),
                )
            )
            continue
        if isinstance(event, VehiclePassed | VehicleBackedOut | GuardWaitExpired) and (
            event.decision_seq == seq
        ):
            break
    if why is None:
        raise WhyError(f"no event with seq {seq} in the log")
    if not why.followed:
        why.followed.append(Step("what followed", "nothing in the log refers to this decision"))
    return why


def _elapsed_s(a: StoredEvent, b: StoredEvent) -> float:
    """Seconds from ``a`` to ``b``: on the monotonic clock within one boot (a wall-clock step
    between them does not count), else on the wall clock."""
    if a.boot_id == b.boot_id:
        return (b.mono_ns - a.mono_ns) / 1e9
    return (b.wall_ns - a.wall_ns) / 1e9


def _followed(
    event: Event, seq: int, command_seq: int | None, at_seq: int, when: str
) -> Step | None:
    if isinstance(event, ClockStepped):
        return Step("the clock", clock_stepped_words(event), (when,))
    if isinstance(event, BarrierCommanded) and event.cause_seq == seq:
        return Step("command it caused", f"barrier {event.command} ({event.reason})", (when,))
    if (
        isinstance(event, BarrierStateChanged)
        and command_seq is not None
        and event.state is BarrierState.UP
    ):
        return Step("PLC confirmed", "the arm is up (up limit switch made)", (when,))
    if isinstance(event, BarrierStateChanged) and command_seq is not None and event.fault:
        return Step("PLC reported", "barrier fault", (when,))
    linked = getattr(event, "decision_seq", None) == seq
    if isinstance(event, VehiclePassed) and linked:
        extra = " (unauthorised: through a lane held open)" if event.unauthorised else ""
        return Step("the vehicle", f"passed ({event.direction}){extra}", (when,))
    if isinstance(event, VehicleBackedOut) and linked:
        released = event.released_appointment
        return Step(
            "the vehicle",
            "backed out" + (f", appointment {released} released" if released else ""),
            (when,),
        )
    if isinstance(event, TailgateSuspected) and linked:
        return Step("the lane", f"tailgate suspected: {event.detail}", (when,))
    if isinstance(event, AdmissionNotOpened) and linked:
        return Step("the lane", f"admitted but the arm never rose: {event.detail}", (when,))
    if isinstance(event, GuardWaitExpired) and linked:
        return Step("the lane", f"guard wait expired after {event.waited_ms / 1000:.1f} s", (when,))
    if isinstance(event, ManualAction) and linked:
        typed = f" plate {event.plate}" if event.plate else ""
        return Step("guard", f"{event.action}{typed} by {event.operator}: {event.reason}", (when,))
    if isinstance(event, AccessDecided) and event.corrects_seq == seq:
        return Step(
            "decided again on the corrected plate",
            f"{event.verdict} (seq {at_seq}, {event.plate_read} typed by {event.corrected_by})",
            (when,),
        )
    return None


def _consumed(d: AccessDecided) -> tuple[str, ...]:
    if "appointment-consumed" not in d.reasons:
        return ()
    if d.trace is not None:
        return tuple(c.id for c in d.trace.credentials if c.kind == "appointment" and c.consumed)
    return (d.credential_id,) if d.credential_kind == "appointment" and d.credential_id else ()


def where_consumed(
    events: Iterable[StoredEvent], appointments: Iterable[str], before: int, zone: ZoneInfo
) -> dict[str, str]:
    """Where each of ``appointments`` was used, in words, from the log's events before seq
    ``before``: an entry here on it (``vehicle.passed``) or central's word that another gate
    of the site took it (``park.consumed``); the last one found for each. One pass over the
    log (only those two event types are decoded)."""
    wanted = set(appointments)
    found: dict[str, str] = {}
    types = (VehiclePassed.TYPE, ParkConsumed.TYPE)
    for stored in events:
        if stored.seq >= before:
            break
        if stored.type not in types:
            continue
        event = _decode(stored)
        when = _local(ns_to_datetime(stored.wall_ns), zone)
        if isinstance(event, ParkConsumed):
            for appointment in wanted.intersection(event.appointments):
                gate = event.gate_of(appointment)
                at = f"at gate {gate}" if gate else "at another gate of the site"
                found[appointment] = (
                    f"used {at} (central's park message {event.seq} of site {event.site}"
                    f" said so; logged here at seq {stored.seq}, {when})"
                )
        elif (
            isinstance(event, VehiclePassed)
            and event.credential_id in wanted
            and event.direction is Direction.ENTRY
            and not event.unauthorised
        ):
            found[event.credential_id] = (
                f"used here: {event.plate or 'the vehicle'} entered on it, lane {stored.lane}"
                f" (seq {stored.seq}, {when})"
            )
    return found


def _local(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).isoformat(sep=" ", timespec="milliseconds")


def _window(c: TracedCredential, zone: ZoneInfo) -> str:
    end = "open-ended" if c.valid_until is None else _local(c.valid_until, zone)
    return f"{_local(c.valid_from, zone)} to {end}"


def _check_words(code: str) -> str:
    for suffix, words in _CHECK_WORDS.items():
        if code == suffix or code.endswith("-" + suffix):
            return words
    return code


def _steps(d: AccessDecided, read: PlateRead | None, zone: ZoneInfo) -> list[Step]:
    t = d.trace
    reasons = set(d.reasons)
    steps: list[Step] = []
    # 1. The read.
    details: list[str] = []
    if t is not None:
        details.append(f"colour {t.colour}, confidence {t.confidence:.2f}")
        details.append(
            "normalisation: " + (", ".join(t.normalised) if t.normalised else "nothing to change")
        )
    else:
        if read is not None:
            details.append(
                f"colour {read.colour}, confidence {read.confidence:.2f} (from its read)"
            )
        details.append(f"normalisation steps: {NOT_RECORDED}")
    if d.corrected_by:
        details.append(f"typed by {d.corrected_by}, correcting decision seq {d.corrects_seq}")
    form = (
        "unreadable (empty)"
        if "plate-unreadable" in reasons
        else "not a well-formed plate (looked up anyway)"
        if "plate-invalid-format" in reasons
        else "well formed"
    )
    details.append(f"format: {form}")
    steps.append(
        Step("the read", f"read {d.plate_read!r}, normalised to {d.plate!r}", tuple(details))
    )
    # 2. Candidates.
    if t is not None:
        cands = [
            f"{c.plate} (exact)"
            if c.match == "exact"
            else f"{c.plate} (fuzzy: {c.read_char} read where the list has {c.list_char}, "
            f"character {(c.position or 0) + 1})"
            for c in t.candidates
        ]
        outcome = "; ".join(cands) if cands else "none: the plate is not on the allow-list"
        extra: tuple[str, ...] = ()
        if not cands and t.rules.fuzzy_matching == "off":
            extra = ("fuzzy matching is off: only an exact match identifies a vehicle",)
        steps.append(Step("candidates on the allow-list", outcome, extra))
    else:
        matched = "none" if d.matched_plate is None else f"{d.matched_plate} ({d.match})"
        steps.append(
            Step(
                "candidates on the allow-list",
                f"matched: {matched}",
                (f"other candidates: {NOT_RECORDED}",),
                False,
            )
        )
    # 3. Credentials.
    if t is not None:
        if not t.credentials:
            steps.append(Step("credentials considered", "none"))
        for c in t.credentials:
            steps.append(_credential_step(c, zone))
    else:
        named = (
            f"it rested on {d.credential_kind} {d.credential_id}"
            + (
                ""
                if d.credential_until is None
                else f", valid until {_local(d.credential_until, zone)}"
            )
            if d.credential_id
            else "it rested on no credential"
        )
        steps.append(Step("credentials considered", NOT_RECORDED, (named,), False))
    # 4. Rules in order.
    for title, codes in _RULES:
        found = [code for code in d.reasons if code in codes]
        setting = _setting(title, t, d)
        steps.append(
            Step(
                title,
                ", ".join(found) if found else "nothing found",
                (setting,) if setting else (),
                recorded=t is not None or not setting.endswith(NOT_RECORDED),
            )
        )
    # 5. The verdict.
    verdict_details = [f"reasons: {', '.join(d.reasons) or 'none'}"]
    if d.credential_id:
        verdict_details.append(f"on {d.credential_kind} {d.credential_id}")
    if d.consumed_appointment:
        verdict_details.append(
            f"consumes appointment {d.consumed_appointment} once the vehicle passes"
        )
    if d.explanation:
        verdict_details.append(d.explanation)
    category = "unknown" if d.category is None else str(d.category)
    steps.append(
        Step("verdict", f"{d.verdict} (category {category}, {d.direction})", tuple(verdict_details))
    )
    if d.clock_step is not None:
        steps.append(
            Step(
                "the clock",
                f"decided {clock_step_words(d.clock_step)}",
                (
                    "the wall time it was decided at, and the windows checked against it, "
                    "may be off by the step",
                ),
            )
        )
    return steps


def _credential_step(c: TracedCredential, zone: ZoneInfo) -> Step:
    what = f"{c.kind} {c.id} for {c.plate}"
    details = [("window " if c.kind == "appointment" else "valid ") + _window(c, zone)]
    if c.category is not None:
        details.append(f"category {c.category}, colour {c.colour}")
    if c.kind != "blacklist":
        details.append("gates: " + (", ".join(c.gates) if c.gates else "every gate"))
    if c.kind == "appointment":
        details.append("consumed" if c.consumed else "not consumed")
    outcome = "; ".join(_check_words(code) for code in c.checks) or "not checked"
    return Step(f"credential {what}", outcome, tuple(details))


def _setting(title: str, t: DecisionTrace | None, d: AccessDecided) -> str:
    if title.startswith("rule 2"):
        if t is None:
            return f"admitted categories: {NOT_RECORDED}"
        kind = t.rules.gate_kind
        cap = sorted(str(c) for c in KIND_ADMITS[kind][d.direction])
        admits = ", ".join(str(c) for c in t.rules.admits) or "nothing"
        return (
            f"{kind} gate; configured to admit {admits}"
            f" ({d.direction}); a {kind} gate may admit at most {', '.join(cap)}"
        )
    if t is None:
        if title in ("fuzzy match", "plate colour", "read confidence", "allow-list staleness"):
            age = "" if d.allowlist_age_s is None else f"list age {d.allowlist_age_s:.0f} s; "
            return (age if title == "allow-list staleness" else "") + f"setting: {NOT_RECORDED}"
        return ""
    r = t.rules
    if title == "fuzzy match":
        return f"fuzzy_matching = {r.fuzzy_matching}"
    if title == "plate colour":
        return f"read colour {t.colour}; colour_mismatch = {r.colour_mismatch}"
    if title == "read confidence":
        return f"confidence {t.confidence:.2f}; min_confidence = {r.min_confidence}"
    if title == "allow-list staleness":
        age = "unknown" if d.allowlist_age_s is None else f"{d.allowlist_age_s:.0f} s"
        max_age = (
            "none"
            if r.allowlist_max_age is None
            else f"{r.allowlist_max_age.total_seconds():.0f} s"
        )
        stale = "stale" if d.allowlist_stale else "fresh"
        return (
            f"list v{d.allowlist_version}, age {age}: {stale}; allowlist_max_age = {max_age}, "
            f"on_stale_allowlist = {r.on_stale_allowlist}"
        )
    if title == "allow-list integrity":
        return "the stored list failed its integrity check" if t.allowlist_tampered else "intact"
    return ""
