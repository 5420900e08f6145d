"""Everything a gate records, as typed, versioned events. One module (about 800 lines): the
event types, their versions and upcasters are checked and read as a whole. How they are
registered, encoded and upcast is :mod:`edgegate.core.event_registry`.

Each event class has a stable ``TYPE`` name and a schema ``VERSION``. Events are stored as a
msgpack map of their fields (``lane`` is a column of its own). When a class's fields change,
its version is bumped and an upcaster turns the stored map of the old version into the map of
the next, so old logs stay readable forever (docs/design.md §4).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from edgegate.core.codec import CodecError
from edgegate.core.domain import (
    Direction,
    GateKind,
    InsideElsewhere,
    MatchKind,
    PlateColour,
    VehicleCategory,
)
from edgegate.core.event_registry import (
    Event,
    EventDecodeError,
    decode,
    encode,
    event_type,
    fields_added,
    registered_types,
    to_map,
    upcast,
    upcaster,
)

# --- vocabularies ---------------------------------------------------------------------------


class Loop(enum.StrEnum):
    ARMING = "arming"  # before the arm: a vehicle is waiting
    SAFETY = "safety"  # under the arm: never close while occupied
    EXIT = "exit"  # after the arm: the vehicle has passed


class BarrierCommand(enum.StrEnum):
    OPEN = "open"
    CLOSE = "close"
    STOP = "stop"


class BarrierState(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    MOVING = "moving"  # neither limit switch made
    FAULT = "fault"
    UNKNOWN = "unknown"


class ManualActionKind(enum.StrEnum):
    OPEN = "open"  # open and hold until released; automatic closing never overrides it
    OPEN_ONCE = "open-once"  # open for one vehicle, then close and go back to normal
    CLOSE = "close"
    RELEASE = "release"  # hand the lane back to automatic control
    CONFIRM = "confirm"  # a guard confirms a decision that asked for confirmation
    REFUSE = "refuse"  # a guard refuses it
    CORRECT = "correct"  # a guard corrects the plate of a pending decision: decided again


class GateMode(enum.StrEnum):
    NORMAL = "normal"
    INCIDENT = "incident"  # evacuation paths opened and held
    MAINTENANCE = "maintenance"


class ModeSource(enum.StrEnum):
    LOCAL = "local"  # declared at the gate by an operator
    CENTRAL = "central"  # a signed central command
    PLC_INPUT = "plc-input"  # an alarm contact wired to a PLC input (the park's fire alarm)


class AllowListUpdateKind(enum.StrEnum):
    SNAPSHOT = "snapshot"
    DELTA = "delta"


#: ``[gate] timezone``'s default, and the zone of logs that did not record one.
DEFAULT_GATE_TIMEZONE = "Asia/Shanghai"


class StopReason(enum.StrEnum):
    SIGNAL = "signal"
    ERROR = "error"
    REQUESTED = "requested"


# --- devices and the road -------------------------------------------------------------------


@event_type("plate.read", version=2)
@dataclass(frozen=True, slots=True, kw_only=True)
class PlateRead(Event):
    """A plate as a reader reported it; ``raw`` is the frame's bytes."""

    plate: str
    colour: PlateColour = PlateColour.UNKNOWN
    confidence: float  # 0..1
    reader: str
    image_ref: str = ""
    raw: bytes = b""


@upcaster("plate.read", from_version=1)
def _plate_read_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 stored confidence as an integer percentage and had no image reference."""
    out = dict(data)
    out["confidence"] = float(out.pop("confidence_pct", 0)) / 100.0
    out.setdefault("image_ref", "")
    return out


@event_type("plate.not-read")
@dataclass(frozen=True, slots=True, kw_only=True)
class PlateNotRead(Event):
    """A vehicle waited on the arming loop and no plate came within the configured time."""

    waited_ms: int


@event_type("loop.changed")
@dataclass(frozen=True, slots=True, kw_only=True)
class LoopChanged(Event):
    loop: Loop
    occupied: bool
    source: str  # the device reporting the loop


@event_type("barrier.commanded")
@dataclass(frozen=True, slots=True, kw_only=True)
class BarrierCommanded(Event):
    """A command about to be sent to the barrier (log-then-act: logged first)."""

    command: BarrierCommand
    reason: str
    device: str
    cause_seq: int | None = None  # the decision or manual action that caused it


@event_type("barrier.state")
@dataclass(frozen=True, slots=True, kw_only=True)
class BarrierStateChanged(Event):
    state: BarrierState
    device: str
    up_limit: bool
    down_limit: bool
    fault: bool = False


@event_type("device.fault")
@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFault(Event):
    device: str
    code: str  # stable kind: "timeout", "connection-refused", "modbus-exception", ...
    message: str
    detail: bytes = b""


@event_type("device.recovered")
@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecovered(Event):
    device: str
    down_ms: int


@event_type("device.frame-rejected", version=2)
@dataclass(frozen=True, slots=True, kw_only=True)
class FrameRejected(Event):
    """Bad frames and garbage from a device, coalesced: at most one event a second per device.

    ``count`` bad frames or runs of garbage of ``size`` bytes in all, their error ``kinds``
    (sorted, distinct), the first one's ``reason``, and a bounded ``data`` sample of their
    bytes (``truncated`` when the sample is not all of them)."""

    device: str
    reason: str
    data: bytes
    truncated: bool = False
    count: int = 1
    kinds: tuple[str, ...] = ()
    size: int = 0


@upcaster("device.frame-rejected", from_version=1)
def _frame_rejected_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 was one event per bad frame, its kind only in the reason."""
    out = dict(data)
    out.setdefault("count", 1)
    out.setdefault("kinds", [])
    out.setdefault("size", len(out.get("data") or b""))
    return out


# --- decisions and vehicles -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TracedCandidate:
    """A listed plate the read was matched to: ``exact``, or ``fuzzy`` with the one
    OCR-confusable substitution (``read_char`` in the read at ``position``, 0-based, where the
    list has ``list_char``)."""

    plate: str
    match: MatchKind
    position: int | None = None
    read_char: str = ""
    list_char: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TracedCredential:
    """A credential the policy looked at, as it was then, and what each check on it found:
    ``checks`` holds reason codes (``registration-valid``, ``permit-expired``,
    ``appointment-consumed`` ...) and, for a blacklist entry, ``blacklisted`` or
    ``blacklist-not-in-force``. ``valid_from``/``valid_until`` are an appointment's window."""

    kind: str
    id: str
    plate: str
    colour: PlateColour = PlateColour.UNKNOWN
    category: VehicleCategory | None = None
    valid_from: datetime
    valid_until: datetime | None = None
    gates: tuple[str, ...] = ()
    consumed: bool = False
    checks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TracedRules:
    """The rules in force for the decision: the gate, the categories its configuration
    admits in the decision's direction (capped by its kind), and the ``[policy]`` settings."""

    gate_id: str
    gate_kind: GateKind
    admits: tuple[VehicleCategory, ...]
    fuzzy_matching: str
    min_confidence: float
    colour_mismatch: str
    on_stale_allowlist: str
    allowlist_max_age: timedelta | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionTrace:
    """What the policy looked at, enough to explain the decision and take it again without
    the allow-list or the configuration as they were: the read's colour and confidence,
    ``normalised`` (what normalisation changed, in order), the ``candidates``, every credential
    of the candidate plates, the rules, the instant decided at and the list's state."""

    colour: PlateColour = PlateColour.UNKNOWN
    confidence: float
    normalised: tuple[str, ...] = ()
    candidates: tuple[TracedCandidate, ...] = ()
    credentials: tuple[TracedCredential, ...] = ()
    rules: TracedRules
    decided_at: datetime
    allowlist_updated_at: datetime | None = None
    allowlist_tampered: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockStepMark:
    """The wall-clock step a decision was taken after, before the clock was next confirmed
    synchronised: the ``clock.stepped`` event's ``seq`` (None: that event could not be
    logged) and its signed ``offset_ns`` (docs/design.md §3)."""

    seq: int | None
    offset_ns: int


@event_type("access.decided", version=6)
@dataclass(frozen=True, slots=True, kw_only=True)
class AccessDecided(Event):
    """A decision with every reason, and the allow-list version it was taken with;
    ``explanation`` says in plain words what the codes cannot (a fuzzy match, on which
    credential), empty otherwise. ``corrected_by``: the operator whose typed plate (a
    correction at the console) this decision is on, instead of the read of the decision
    ``corrects_seq``; None for a reader's read. ``inside_elsewhere``: on an entry, where and
    when central saw the vehicle enter and not leave (reason ``already-inside``), else None."""

    direction: Direction
    plate_read: str  # as read
    plate: str  # normalised
    matched_plate: str | None
    match: MatchKind
    verdict: str  # "allow" | "deny" | "confirm"
    reasons: tuple[str, ...]
    category: VehicleCategory | None
    credential_kind: str | None = None
    credential_id: str | None = None
    credential_until: datetime | None = None  # end of that credential's window
    consumed_appointment: str | None = None  # consumed once the vehicle has passed
    allowlist_version: int
    allowlist_age_s: float | None = None
    allowlist_stale: bool = False
    read_seq: int | None = None
    explanation: str = ""
    corrected_by: str | None = None
    corrects_seq: int | None = None
    trace: DecisionTrace | None = None  # None: not recorded (decisions before v4)
    clock_step: ClockStepMark | None = None  # a step not yet followed by a sync (None: none)
    inside_elsewhere: InsideElsewhere | None = None


# v1 had no explanation.
fields_added("access.decided", 1, explanation="")
# v2 had no corrections: every decision was on a reader's read.
fields_added("access.decided", 2, corrected_by=None, corrects_seq=None)
# v3 did not record what the policy looked at: the trace is marked not recorded.
fields_added("access.decided", 3, trace=None)
# v4 did not watch the clock: no step is known to have preceded the decision.
fields_added("access.decided", 4, clock_step=None)
# v5 knew nothing of central's presence: no vehicle was already inside elsewhere.
fields_added("access.decided", 5, inside_elsewhere=None)


@event_type("vehicle.passed", version=2)
@dataclass(frozen=True, slots=True, kw_only=True)
class VehiclePassed(Event):
    """A vehicle crossed the lane (entered or left the park). ``unauthorised``: the policy
    refused it (``decision_seq`` says why, e.g. a blacklist) and it went through a lane held
    open (manual, central or incident): a passage nobody admitted, for a guard to follow up."""

    plate: str
    direction: Direction
    category: VehicleCategory | None
    credential_id: str | None = None
    permit_until: datetime | None = None
    decision_seq: int | None = None
    unauthorised: bool = False


# v1 had no ``unauthorised``: every pass it recorded counts as a plain one.
fields_added("vehicle.passed", 1, unauthorised=False)


@event_type("vehicle.backed-out")
@dataclass(frozen=True, slots=True, kw_only=True)
class VehicleBackedOut(Event):
    plate: str | None
    decision_seq: int | None = None
    released_appointment: str | None = None


@event_type("vehicle.tailgate-suspected")
@dataclass(frozen=True, slots=True, kw_only=True)
class TailgateSuspected(Event):
    """A second vehicle seems to have passed on one authorisation."""

    plate: str | None
    decision_seq: int | None = None
    detail: str = ""


@event_type("vehicle.not-opened-for")
@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionNotOpened(Event):
    """A vehicle was admitted but the arm never rose for it (the PLC refused the open, or did
    not carry it out, within the open travel time): a guard must attend to it."""

    plate: str
    decision_seq: int | None = None
    detail: str = ""


@event_type("vehicle.overstay")
@dataclass(frozen=True, slots=True, kw_only=True)
class OverstayDetected(Event):
    plate: str
    category: VehicleCategory | None
    entered_at: datetime
    limit: str  # "permit" or "dwell"
    deadline: datetime
    entry_seq: int | None = None


# --- people, modes, data --------------------------------------------------------------------


@event_type("manual.action", version=2)
@dataclass(frozen=True, slots=True, kw_only=True)
class ManualAction(Event):
    """A person's action on a lane (a guard at the console, central's operator), logged before
    it is carried out. ``decision_seq``: the decision a confirm, refuse or correction is
    about; ``plate``: the plate a correction typed."""

    action: ManualActionKind
    operator: str
    reason: str
    decision_seq: int | None = None
    plate: str | None = None


# v1 had no corrections, so no plate.
fields_added("manual.action", 1, plate=None)


@event_type("guard.wait-expired")
@dataclass(frozen=True, slots=True, kw_only=True)
class GuardWaitExpired(Event):
    """A vehicle waited for a guard longer than ``timings.guard_wait``: the lane gave up on
    the decision ``decision_seq`` (nothing opened) and waits for a new read."""

    plate: str | None
    decision_seq: int | None = None
    waited_ms: int


@event_type("mode.changed")
@dataclass(frozen=True, slots=True, kw_only=True)
class ModeChanged(Event):
    mode: GateMode
    previous: GateMode
    source: ModeSource
    operator: str = ""
    reason: str = ""
    command_id: str | None = None


@event_type("allowlist.updated")
@dataclass(frozen=True, slots=True, kw_only=True)
class AllowListUpdated(Event):
    """The allow-list changed. ``content_hash``: a snapshot's entries as received (before this
    gate's own consumption state is kept), hashed order-independently (``store.rows_hash``),
    or the SHA-256 of a delta's change list."""

    kind: AllowListUpdateKind
    version: int
    previous_version: int
    source: str  # "import:<file>", "central", ...
    upserted: int
    removed: int
    entries: int  # size after the update
    content_hash: str


@event_type("park.consumed", version=2)
@dataclass(frozen=True, slots=True, kw_only=True)
class ParkConsumed(Event):
    """Central's park message ``seq`` of ``site`` said these ``appointments`` (held by this
    gate's list, not yet consumed here) were consumed at another gate: they no longer admit
    here. One event per park message that changed admission; inside/left marks are not
    logged (they only send an entry to a guard). ``gates[i]``: the gate that consumed
    ``appointments[i]`` ("" if the message did not say; always "" in v1)."""

    site: str
    seq: int
    appointments: tuple[str, ...]
    gates: tuple[str, ...] = ()

    def gate_of(self, appointment: str) -> str | None:
        """The gate that consumed ``appointment``, if the message named it."""
        for i, gate in zip(self.appointments, self.gates, strict=False):
            if i == appointment and gate:
                return gate
        return None


@upcaster("park.consumed", from_version=1)
def _park_consumed_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 did not record where the appointments were consumed."""
    out = dict(data)
    out.setdefault("gates", [""] * len(out.get("appointments") or ()))
    return out


@event_type("allowlist.tampered")
@dataclass(frozen=True, slots=True, kw_only=True)
class AllowListTampered(Event):
    """The stored allow-list failed its integrity check: it was changed outside edgegate.
    The gate runs on the ``entries`` it can still read (``left_out`` could not be), every
    entry confirmed by a guard, and asks central for a snapshot; a valid snapshot or import
    restores normal operation. ``credential_kind``, ``credential_id`` and ``plate`` (as
    stored) name the first bad entry when one can be named; ``problem`` says what is wrong."""

    version: int
    problem: str
    credential_kind: str | None = None
    credential_id: str | None = None
    plate: str | None = None
    entries: int
    left_out: int


@event_type("daemon.started", version=2)
@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonStarted(Event):
    """The daemon started. ``timezone``: the gate's ``[gate] timezone`` (IANA name), so that a
    replay shows the log's times as the gate's people saw them without its configuration."""

    software_version: str
    config_hash: str
    config_path: str
    pid: int
    timezone: str = DEFAULT_GATE_TIMEZONE


# v1 did not record the time zone: every gate then ran on the default one.
fields_added("daemon.started", 1, timezone=DEFAULT_GATE_TIMEZONE)


@event_type("clock.stepped")
@dataclass(frozen=True, slots=True, kw_only=True)
class ClockStepped(Event):
    """Wall time jumped against monotonic time by more than a second within this run of the
    daemon: ``offset_ns`` (signed: positive, the wall clock jumped forward) beyond what the
    monotonic clock says elapsed between ``wall_before`` and ``wall_after``, the wall times
    seen by the check before the step and the one that noticed it (``noticed_by``: ``check``,
    the periodic one, or the lane whose decision noticed it). ``synchronised``: the kernel's
    verdict then (None: the system does not say). Decisions carry it until the clock is next
    confirmed synchronised (docs/design.md §3)."""

    offset_ns: int
    wall_before: datetime
    wall_after: datetime
    synchronised: bool | None
    noticed_by: str = "check"


@event_type("daemon.stopped")
@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonStopped(Event):
    reason: StopReason
    detail: str = ""


@event_type("log.write-recovered")
@dataclass(frozen=True, slots=True, kw_only=True)
class LogWriteRecovered(Event):
    """The first event the log took after it could not be written from ``failed_since``:
    ``failed_commits`` commits failed meanwhile, the last with ``problem`` (a full or failing
    disk). What happened in between is missing from the log; ``[log.on_write_failure]``
    decided the lanes meanwhile."""

    failed_since: datetime
    failed_commits: int
    problem: str


# --- the log's retention ([log.retention]) ------------------------------------------------


@event_type("log.segment-sealed")
@dataclass(frozen=True, slots=True, kw_only=True)
class LogSegmentSealed(Event):
    """Events ``first_seq..last_seq`` were copied into the segment file ``file`` (beside the
    log, verified) and leave the active file. ``reason``: ``day`` (the gate's day ended) or
    ``size`` (the day's events reached ``max_segment_size``). ``last_hash``: the chain hash
    of ``last_seq`` (hex), where the next segment's first event chains from."""

    first_seq: int
    last_seq: int
    last_hash: str
    file: str
    size: int
    reason: str


@event_type("log.segment-archived")
@dataclass(frozen=True, slots=True, kw_only=True)
class LogSegmentArchived(Event):
    """The segment ``first_seq..last_seq`` was compressed (zstd) into ``file`` and its
    uncompressed file removed. ``acknowledged``: central had acknowledged ``last_seq`` (false
    only on a gate without ``[sync]`` that allows it with ``archive_unacknowledged``)."""

    first_seq: int
    last_seq: int
    file: str
    size: int
    archived_size: int
    acknowledged: bool


@event_type("log.archive-removed")
@dataclass(frozen=True, slots=True, kw_only=True)
class LogArchiveRemoved(Event):
    """The archive of ``first_seq..last_seq`` is removed (logged before the file is deleted)
    because the archives exceeded ``archive_budget`` (``archives_size`` before the removal).
    The kept log then starts at ``last_seq + 1``, chained from ``last_hash`` (hex): the
    anchor ``log verify`` starts from."""

    first_seq: int
    last_seq: int
    last_hash: str
    file: str
    archived_size: int
    archives_size: int
    budget: int
    acknowledged: bool


# --- the central downlink ---------------------------------------------------------------------


@event_type("allowlist.refused")
@dataclass(frozen=True, slots=True, kw_only=True)
class AllowListRefused(Event):
    """An allow-list publication from central that the gate did not apply.

    ``code``: ``unsigned``, ``forged``, ``unknown-key``, ``wrong-kind``, ``malformed`` (the
    envelope or the publication), ``stale`` (not newer than the gate's list), ``gap`` (a delta
    not based on the gate's version: a snapshot is requested), ``invalid`` (entries the
    allow-list refuses). The publication's fields are filled only once its signature verified;
    ``key_id`` is the key the envelope names (unverified when the signature failed).
    """

    code: str
    message: str
    current_version: int
    publication_kind: str | None = None
    version: int | None = None
    base_version: int | None = None
    issued_at: datetime | None = None
    key_id: str | None = None
    payload_size: int
    payload_sha256: str


@event_type("allowlist.snapshot-requested")
@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRequested(Event):
    """The gate asked central for a full allow-list snapshot (logged before it is sent)."""

    have_version: int
    reason: str


@event_type("command.accepted")
@dataclass(frozen=True, slots=True, kw_only=True)
class CommandAccepted(Event):
    """A signed central command that verified and is about to be carried out (log-then-act).
    ``lane`` is the lane it opens (None for gate-wide actions)."""

    command_id: str
    action: str  # "open-lane" | "open-lane-once" | "release-lane" | "incident-on" | ...
    operator: str  # central's operator who issued it
    reason: str
    issued_at: datetime
    expires_at: datetime
    key_id: str


@event_type("command.refused")
@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRefused(Event):
    """A central command the gate will not carry out. ``code``: ``unsigned``, ``forged``,
    ``expired``, ``replayed``, ``wrong-gate``, ``malformed``, ``not-yet-valid``.
    ``command_id`` / ``action`` / ``key_id`` are what the message claims, when readable
    (unverified when the signature failed); ``payload`` the message (bounded)."""

    code: str
    message: str
    command_id: str | None = None
    action: str | None = None
    key_id: str | None = None
    payload: bytes = b""
    truncated: bool = False


@event_type("command.failed")
@dataclass(frozen=True, slots=True, kw_only=True)
class CommandFailed(Event):
    """An accepted command the gate could not carry out. ``code``: ``unknown-lane``,
    ``invalid``, ``error``."""

    command_id: str
    action: str
    code: str
    message: str


@event_type("admission.revoked-credential")
@dataclass(frozen=True, slots=True, kw_only=True)
class RevokedCredentialAdmission(Event):
    """An entry the gate admitted with a credential that central had revoked (or may have:
    ``certain`` False), found when an allow-list publication arrived; for review.

    ``decision_seq`` is the gate seq of the ``access.decided`` event; ``lane`` its lane.
    ``basis``: ``removed``, ``expired``, ``not-yet-valid``, ``gate-withdrawn`` or
    ``blacklisted`` (what the new list says). Central's list said so by ``revoked_at`` (the
    publication's issue time); the revocation happened after ``revoked_after`` (None: the
    publication is the next version after the gate's, revoked at ``revoked_at``).
    ``certain``: the admission was decided at or after ``revoked_at``.
    """

    decision_seq: int
    plate: str
    credential_kind: str
    credential_id: str
    decided_at: datetime
    revoked_at: datetime
    revoked_after: datetime | None = None
    certain: bool
    basis: str
    detail: str = ""
    allowlist_version: int  # the publication that revealed it


# --- the guard's console ----------------------------------------------------------------------


@event_type("console.login")
@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleLogin(Event):
    """A person logged in to the console (logged before the session is granted)."""

    account: str
    role: str  # "guard" | "supervisor"
    address: str  # the client's address


@event_type("console.login-refused")
@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleLoginRefused(Event):
    """A refused login. ``account`` as typed (bounded; it need not exist); ``reason``:
    ``bad-credentials``, ``locked-out`` (too many recent failures for the account name or the
    address) or ``bad-request``. Never the password."""

    account: str
    address: str
    reason: str


@event_type("console.logout")
@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleLogout(Event):
    """A console session ended. ``reason``: ``logout``, ``idle`` (past the idle timeout) or
    ``account-changed`` (removed or its role changed in the accounts file)."""

    account: str
    address: str
    reason: str


__all__ = [
    "DEFAULT_GATE_TIMEZONE",
    "AccessDecided",
    "AdmissionNotOpened",
    "AllowListRefused",
    "AllowListTampered",
    "AllowListUpdateKind",
    "AllowListUpdated",
    "BarrierCommand",
    "BarrierCommanded",
    "BarrierState",
    "BarrierStateChanged",
    "ClockStepMark",
    "ClockStepped",
    "CodecError",
    "CommandAccepted",
    "CommandFailed",
    "CommandRefused",
    "ConsoleLogin",
    "ConsoleLoginRefused",
    "ConsoleLogout",
    "DaemonStarted",
    "DaemonStopped",
    "DecisionTrace",
    "DeviceFault",
    "DeviceRecovered",
    "Event",
    "EventDecodeError",
    "FrameRejected",
    "GateMode",
    "GuardWaitExpired",
    "LogArchiveRemoved",
    "LogSegmentArchived",
    "LogSegmentSealed",
    "LogWriteRecovered",
    "Loop",
    "LoopChanged",
    "ManualAction",
    "ManualActionKind",
    "MatchKind",
    "ModeChanged",
    "ModeSource",
    "OverstayDetected",
    "PlateNotRead",
    "PlateRead",
    "RevokedCredentialAdmission",
    "SnapshotRequested",
    "StopReason",
    "TailgateSuspected",
    "TracedCandidate",
    "TracedCredential",
    "TracedRules",
    "VehicleBackedOut",
    "VehiclePassed",
    "decode",
    "encode",
    "event_type",
    "registered_types",
    "to_map",
    "upcast",
    "upcaster",
]
