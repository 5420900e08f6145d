"""The gate's one-line status, as systemd's ``STATUS=`` shows it in ``systemctl status``.

:func:`gate_status` reads what the running gate knows (no I/O); :meth:`GateStatus.line`
formats it, problems first, e.g.::

    INCIDENT | log not writable: disk full | faulted: plc-2 (offline) | lanes: in-1 idle,
    out-1 fault | sync: 120 behind for 45 s (connecting)

Health checks may add their own failing components through ``problems``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgegate.core.events import GateMode

if TYPE_CHECKING:
    from edgegate.daemon.gate import Gate

#: Faults named in full before the rest are only counted: the line stays short.
MAX_FAULTS_SHOWN = 3


@dataclass(frozen=True, slots=True)
class SyncStatus:
    state: str  # the uplink's connection state
    behind: int  # events in the log central has not acknowledged
    behind_s: int | None = None  # age of the oldest event central has not acknowledged


@dataclass(frozen=True, slots=True)
class GateStatus:
    mode: GateMode
    lanes: dict[str, str]  # lane id -> state
    faults: dict[str, str]  # device -> fault code
    sync: SyncStatus | None = None  # None: no [sync]
    log_problem: str | None = None  # EventLog.write_problem
    problems: tuple[str, ...] = field(default=())  # e.g. failing readiness components

    def line(self) -> str:
        parts: list[str] = []
        if self.mode is not GateMode.NORMAL:
            parts.append(self.mode.value.upper())
        if self.log_problem is not None:
            parts.append(f"log not writable: {self.log_problem}")
        parts += self.problems
        if self.faults:
            shown = [f"{d} ({code})" for d, code in sorted(self.faults.items())]
            more = len(shown) - MAX_FAULTS_SHOWN
            text = ", ".join(shown[:MAX_FAULTS_SHOWN]) + (f" and {more} more" if more > 0 else "")
            parts.append(f"faulted: {text}")
        lanes = ", ".join(f"{lane} {state}" for lane, state in self.lanes.items())
        parts.append(f"lanes: {lanes or 'none'}")
        if self.mode is GateMode.NORMAL:
            parts.append("normal")
        if self.sync is not None:
            parts.append(_sync(self.sync))
        return " | ".join(parts)


def _sync(sync: SyncStatus) -> str:
    if sync.behind <= 0:
        text = "sync: up to date"
    elif sync.behind_s is None:
        text = f"sync: {sync.behind} behind"
    else:
        text = f"sync: {sync.behind} behind for {sync.behind_s} s"
    return text if sync.state == "connected" else f"{text} ({sync.state})"


def gate_status(
    gate: Gate, *, behind_s: int | None = None, problems: tuple[str, ...] = ()
) -> GateStatus:
    """What the running ``gate`` shows now (``behind_s``: the caller's measure of sync lag)."""
    faults: dict[str, str] = {}
    for runner in gate.lanes.values():
        for device, fault in runner.faults.items():
            faults[device] = fault.code
    if gate.web is not None and gate.web.problem is not None:
        problems = (*problems, f"http off: {gate.web.problem}")
    elog = gate.event_log
    sync = None
    if gate.uplink is not None and elog is not None:
        behind = max(0, elog.head[0] - gate.uplink.acked_seq)
        sync = SyncStatus(gate.uplink.state, behind, behind_s if behind else None)
    return GateStatus(
        mode=gate.mode,
        lanes={lane: str(runner.state) for lane, runner in gate.lanes.items()},
        faults=faults,
        sync=sync,
        log_problem=None if elog is None else elog.write_problem,
        problems=problems,
    )


__all__ = ["GateStatus", "SyncStatus", "gate_status"]
