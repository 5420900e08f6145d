"""The guard's desk: what the console sees of the gate and what it may ask of it.

The daemon implements :class:`GateDesk` over its lanes (``edgegate.daemon.desk``); the console
(``edgegate.console``) only talks to this contract, so it can be served, tested and measured
without knowing how lanes run. Every request names its operator and role: the desk checks the
role, logs the action with who asked and why *before* it is carried out (log-then-act), and
answers once it is logged — or refused, with a code and a message a guard can read.

Snapshots are plain frozen data (JSON-able through :func:`snapshot_to_json`); times are wall
clock nanoseconds since the epoch, for display only.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


class Role(enum.StrEnum):
    GUARD = "guard"  # confirms, refuses, corrects plates, opens and releases lanes
    SUPERVISOR = "supervisor"  # a guard who may also switch incident mode


class DeskAction(enum.StrEnum):
    CONFIRM = "confirm"  # the pending vehicle may pass
    REFUSE = "refuse"  # the pending vehicle may not: it has to back out
    CORRECT = "correct"  # the plate was misread: the policy decides again on ``plate``
    OPEN_HOLD = "open-hold"  # open the lane and hold it until released
    RELEASE = "release"  # hand a held lane back to automatic control
    INCIDENT_ON = "incident-on"  # supervisors only: hold the evacuation lanes open
    INCIDENT_OFF = "incident-off"  # supervisors only


#: Actions only a supervisor may take.
SUPERVISOR_ACTIONS = frozenset({DeskAction.INCIDENT_ON, DeskAction.INCIDENT_OFF})
#: Actions on the vehicle a guard was shown: they name its ``decision_seq``.
PENDING_ACTIONS = frozenset({DeskAction.CONFIRM, DeskAction.REFUSE, DeskAction.CORRECT})
#: Actions a guard may take without a reason (the console's page asks for one on the rest).
REASON_OPTIONAL = frozenset({DeskAction.CONFIRM, DeskAction.CORRECT})


@dataclass(frozen=True, slots=True)
class DeskRequest:
    """One action asked by a person at the console.

    ``operator`` is how the log names them (``console:<account>``); ``decision_seq`` is the
    pending decision the guard was shown (confirm, refuse and correct are refused as
    ``stale`` when the lane has moved on to another vehicle); ``plate`` the corrected plate.
    """

    action: DeskAction
    operator: str
    role: Role
    reason: str
    lane: str | None = None  # None only for incident mode, which is the gate's
    decision_seq: int | None = None
    plate: str | None = None


@dataclass(frozen=True, slots=True)
class DeskOutcome:
    """``ok`` once the action is logged (``seq``) and handed to the lane; otherwise ``code``
    (``forbidden``, ``unknown-lane``, ``not-pending``, ``stale``, ``not-held``, ``invalid``,
    ``log-failed``)
    and a ``message`` naming what is wrong."""

    ok: bool
    code: str
    message: str = ""
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class DecisionView:
    """A decision as the console shows it: the plate as read, what the policy said and why."""

    seq: int
    at_ns: int
    plate: str  # as read (after normalisation)
    verdict: str  # "allow" | "deny" | "confirm"
    reasons: tuple[str, ...]  # reason codes, translated by the page
    explanation: str  # the policy's plain-words explanation (English)
    confidence: float | None = None
    colour: str | None = None
    matched_plate: str | None = None  # the listed plate a fuzzy read matched
    credential: str | None = None  # "<kind>:<id>" of the credential it matched
    corrected_by: str | None = None  # the operator whose correction this decision is


@dataclass(frozen=True, slots=True)
class PendingView:
    """A vehicle waiting for a guard: the decision that asks, since when, and until when."""

    decision: DecisionView
    waiting_since_ns: int
    give_up_at_ns: int  # ``timings.guard_wait`` after it began waiting


@dataclass(frozen=True, slots=True)
class LaneView:
    lane: str
    direction: str  # "entry" | "exit"
    state: str  # edgegate.core.lane.LaneState value
    arming: bool
    safety: bool
    exit: bool
    has_exit_loop: bool
    arm: str  # "up" | "down" | "moving" | "unknown"
    held: bool  # open and held (by a person, central or incident mode)
    evacuation: bool  # an evacuation lane: incident mode holds it open
    faults: tuple[str, ...]  # the current faults in plain words (device, code, message)
    pending: PendingView | None
    recent: tuple[DecisionView, ...]  # the latest decisions, newest first


@dataclass(frozen=True, slots=True)
class GateView:
    gate: str
    kind: str  # the gate's kind (ordinary, comprehensive, emergency, ...)
    mode: str  # "normal" | "incident" | ...
    version: int  # grows with every change the desk publishes
    lanes: tuple[LaneView, ...]


class GateDesk(Protocol):
    """The gate as the console sees it."""

    def view(self) -> GateView:
        """The gate now."""
        ...

    def watch(self) -> AsyncIterator[GateView]:
        """Every change from now on, as a whole view. A slow reader skips to the newest view
        (the desk never queues more than one per reader), so it can delay nobody."""
        ...

    async def act(self, request: DeskRequest) -> DeskOutcome:
        """Check, log, then carry out ``request``; never raises for a bad request."""
        ...


def snapshot_to_json(view: GateView) -> dict[str, Any]:
    """The view as JSON-able data (what the console's page receives)."""
    return dataclasses.asdict(view)
