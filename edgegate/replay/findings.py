"""What ``replay incidents`` finds: the kinds of finding, their thresholds (``Limits``), one
``Finding`` and the ``Incidents`` of a log. The pass that finds them is
:mod:`edgegate.replay.incidents`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Literal

from edgegate.core.codec import ns_to_datetime

#: Where a finding goes: ``(kind, severity, lane, wall_ns, seqs, summary, **fields)``, the
#: seqs that prove it in any order (None left out).
AddFinding = Callable[..., None]

#: Seqs listed per aggregated finding; the count says how many there were.
CAP = 50

Severity = Literal["info", "notice", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "notice", "warning", "critical")

KINDS: dict[str, str] = {
    "barrier-fault": "a barrier PLC or arm failed (fault input, travel timeout, PLC not "
    "answering), until it recovered: device, code, duration_s",
    "device-outage": "another device (plate reader, loop) failed, until it recovered",
    "not-opened-for": "an admitted vehicle the arm never rose for",
    "slow-arm": "arm travels (command to limit switch) slower than the limit, per lane, "
    "direction and day: count, worst_ms, median_ms",
    "arm-travel": "a lane's arm travel times per day and their trend (least-squares slope of "
    "the daily medians, ms a day): an arm getting slower needs maintenance",
    "tailgate": "a second vehicle seems to have passed on one opening",
    "back-out": "a vehicle reversed away from the arming loop",
    "arm-left-up": "the arm stood up with the lane clear longer than the limit, not held",
    "safety-reversal": "a closing arm was raised again: its safety loop became occupied",
    "unauthorised-pass": "a vehicle the policy refused crossed a lane held open",
    "plates-not-read": "vehicles waited on the arming loop and no plate came, per reader, per hour",
    "rejected-frames": "a burst of bad frames from one device (frames counted, error kinds)",
    "guard-wait": "a decision that waited for a guard: answered (confirm, refuse, correct), "
    "expired, backed out or superseded, and how long",
    "manual-action": "a guard's or central's open, hold, release or close",
    "central-command": "a signed command from central: accepted, refused or failed",
    "incident-mode": "incident mode on (and off), with its source and who",
    "clock-step": "wall time jumped against monotonic time within one boot: the daemon's "
    "clock.stepped (offset, synchronised, the decisions that carried it until the next sync: "
    "decisions, decisions_carrying), or found between two events of a log without it",
    "boot-gap": "the daemon stopped and started again, how long it was down",
    "crash": "the daemon started again without having stopped (crash or power loss)",
    "allowlist-tampered": "the stored allow-list failed its seal at start",
    "allowlist-refused": "an allow-list publication from central that was not applied",
    "revoked-admission": "an entry admitted with a credential central had revoked",
    "log-discontinuity": "seqs or the hash links between consecutive events do not follow: "
    "events missing or inserted (the log may have been edited)",
    "cause-mismatch": "a barrier command names as its cause an event that cannot cause one "
    "(the log may have been edited)",
    "undecodable": "an event whose payload cannot be read",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Thresholds of the findings (defaults suit the default ``[timings]``)."""

    arm_up_clear_s: float = 5.0  # arm up, lane clear, not held: longer is "left up"
    slow_travel_ms: int = 4000  # 2/3 of the default 6 s travel timeout
    trend_ms_per_day: float = 20.0  # an arm slower by this much a day needs maintenance
    clock_step_s: float = 2.0
    burst_gap_s: float = 10.0  # rejected-frame events closer than this are one burst
    not_read_warning: int = 3  # plates not read in one hour of one reader: a warning


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding. ``seqs``: the events that prove it, in seq order; ``wall_ns``: when it
    began; ``fields``: its key facts (JSON values), by kind (see ``KINDS``)."""

    kind: str
    severity: Severity
    lane: str | None
    wall_ns: int
    seqs: tuple[int, ...]
    summary: str
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self, tz: tzinfo | None = None) -> dict[str, Any]:
        """A JSON object; ``at`` in ``tz`` (default UTC)."""
        at = ns_to_datetime(self.wall_ns)
        return {
            "kind": self.kind,
            "severity": self.severity,
            "lane": self.lane,
            "at": (at if tz is None else at.astimezone(tz)).isoformat(),
            "wall_ns": self.wall_ns,
            "seqs": list(self.seqs),
            "summary": self.summary,
            **self.fields,
        }


@dataclass(frozen=True, slots=True)
class Incidents:
    """The findings of a log, in order of time, and what was read."""

    findings: tuple[Finding, ...]
    events: int
    first_seq: int | None
    last_seq: int | None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out

    def to_json(self, tz: tzinfo | None = None) -> dict[str, Any]:
        return {
            "events": self.events,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "findings": [f.to_json(tz) for f in self.findings],
        }
