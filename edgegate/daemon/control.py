"""The gate's control: lane holds and incident mode, whoever asks.

Central's signed commands (``edgegate.sync.downlink``), the guard's console
(``edgegate.daemon.desk``), the booth's buttons and the incident alarm contact wired to a PLC
(the park's fire alarm) all act through one :class:`GateController`:

- opening, opening once and releasing a lane are manual actions the lane logs
  (``manual.action`` with the operator) before it acts;
- incident mode is the gate's: :meth:`GateController.set_incident` logs ``mode.changed``
  (source, operator, reason) durably before any lane is told, and then holds open — or
  releases — the evacuation lanes (``[incident] evacuation_lanes``), and only them. A lane
  also held by a person stays held when incident mode ends (``edgegate.core.lane``).

The PLC's optional inputs reach the controller from the driver's sink, before the lane's
inbox (:meth:`GateController.plc_inputs`, synchronous and cheap): an alarm change is kept as
the newest state per input (a slot, not a queue) for the controller's own task, which logs
and acts at once, so it never waits behind plate reads nor on the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgegate.core.events import GateMode, ManualActionKind, ModeChanged, ModeSource
from edgegate.core.lane import LaneState, Manual
from edgegate.devices.base import PlcInputs
from edgegate.log import EventLog, LogError, LogReader
from edgegate.observability import get_logger

__all__ = ["BUTTONS", "GateController", "last_mode_change"]

log = get_logger("control")

#: The guard's button inputs (``PlcInputs`` fields) and the manual action a press is.
BUTTONS: dict[str, ManualActionKind] = {
    "open_hold_button": ManualActionKind.OPEN,
    "release_button": ManualActionKind.RELEASE,
    "confirm_button": ManualActionKind.CONFIRM,
    "refuse_button": ManualActionKind.REFUSE,
}
#: Button actions about the vehicle a guard is asked about: nothing to do otherwise.
_PENDING_ONLY = frozenset({ManualActionKind.CONFIRM, ManualActionKind.REFUSE})
#: A mode change the log could not take is tried again after this long (alarm inputs only).
ALARM_RETRY_S = 1.0


class LaneLike(Protocol):
    """What the controller needs of a lane (``LaneRunner``)."""

    @property
    def state(self) -> LaneState: ...

    def manual(self, action: Manual) -> None: ...

    def incident(self, on: bool) -> None: ...


ModeObserver = Callable[[ModeChanged, int], None]


@dataclass(slots=True)
class _Seen:
    """An alarm input's changes since the task last handled it."""

    went_active: bool  # active at some poll (a short alarm still counts)
    active: bool  # at the newest poll


class GateController:
    """The gate's control over its lanes (see the module's docstring).

    ``last_change``: the log's last ``mode.changed`` (the gate restarts in its mode: call
    :meth:`restore` once the lanes exist). Run :meth:`run` for the alarm inputs.
    """

    def __init__(
        self,
        lanes: Mapping[str, LaneLike],
        event_log: EventLog,
        evacuation_lanes: Iterable[str] = (),
        *,
        last_change: ModeChanged | None = None,
        alarm_retry_s: float = ALARM_RETRY_S,
    ) -> None:
        self._lanes = lanes
        self._log = event_log
        self.evacuation_lanes: tuple[str, ...] = tuple(evacuation_lanes)
        self._mode = GateMode.NORMAL if last_change is None else last_change.mode
        # Whether an alarm input switched incident mode on: only then does the alarm clearing
        # switch it off (a supervisor's or central's declaration is not undone by the alarm
        # panel being reset).
        self._by_alarm = (
            last_change is not None
            and last_change.mode is GateMode.INCIDENT
            and last_change.source is ModeSource.PLC_INPUT
        )
        # Alarm inputs (by operator name) as the controller last acted on them. An input not
        # seen yet is taken as active if it switched the mode on before a restart, so that
        # it reading clear at the first poll ends that incident.
        self._alarm_on: dict[str, bool] = {}
        self._restored_owner = last_change.operator if self._by_alarm and last_change else None
        self._seen: dict[str, _Seen] = {}  # one slot per alarm input: bounded
        self._wake = asyncio.Event()
        self._buttons: dict[tuple[str, str], bool] = {}  # (device, input) -> level last seen
        self._lock = asyncio.Lock()
        self._alarm_retry_s = alarm_retry_s
        #: Called with each ``mode.changed`` and its seq, once it is logged.
        self.observers: list[ModeObserver] = []

    @property
    def mode(self) -> GateMode:
        """The gate's mode now (incident while incident mode is on)."""
        return self._mode

    @property
    def alarms(self) -> dict[str, bool]:
        """Each alarm input (``plc:<device>:incident_alarm``) and whether it is active, as the
        controller last acted on it."""
        return dict(self._alarm_on)

    # --- lanes ----------------------------------------------------------------------------

    def open_lane(self, lane_id: str, operator: str, reason: str) -> None:
        """Open and hold ``lane_id`` until released; ``KeyError`` for an unknown lane."""
        self._lane(lane_id).manual(Manual(ManualActionKind.OPEN, operator, reason))

    def open_lane_once(self, lane_id: str, operator: str, reason: str) -> None:
        """Open ``lane_id`` for one vehicle; ``KeyError`` for an unknown lane."""
        self._lane(lane_id).manual(Manual(ManualActionKind.OPEN_ONCE, operator, reason))

    def release_lane(self, lane_id: str, operator: str, reason: str) -> None:
        """End a hold of ``lane_id`` (it closes once clear); ``KeyError`` for an unknown lane."""
        self._lane(lane_id).manual(Manual(ManualActionKind.RELEASE, operator, reason))

    def _lane(self, lane_id: str) -> LaneLike:
        runner = self._lanes.get(lane_id)
        if runner is None:
            known = ", ".join(sorted(self._lanes)) or "none"
            raise KeyError(f"this gate has no lane {lane_id!r} (lanes: {known})")
        return runner

    # --- incident mode --------------------------------------------------------------------

    async def set_incident(
        self,
        on: bool,
        *,
        source: ModeSource,
        operator: str,
        reason: str,
        command_id: str | None = None,
    ) -> int | None:
        """Switch incident mode on or off: ``mode.changed`` is logged durably, then the
        evacuation lanes are told. Returns its seq, or None when the gate is in that mode
        already (nothing logged, nothing done). ``LogError`` when the log cannot take it:
        nothing is done."""
        target = GateMode.INCIDENT if on else GateMode.NORMAL
        async with self._lock:
            previous = self._mode
            if target is previous:
                return None
            event = ModeChanged(
                mode=target,
                previous=previous,
                source=source,
                operator=operator,
                reason=reason,
                command_id=command_id,
            )
            try:
                seq = await self._log.append(event)
            except LogError as exc:
                log.error("mode_change_not_logged", mode=target.value, error=str(exc))
                raise
            self._mode = target
            self._by_alarm = on and source is ModeSource.PLC_INPUT
            log.warning(
                "mode_changed",
                seq=seq,
                mode=target.value,
                previous=previous.value,
                source=source.value,
                operator=operator,
                lanes=list(self.evacuation_lanes),
            )
            self._tell_evacuation_lanes(on)
            for observer in self.observers:
                observer(event, seq)
            return seq

    def restore(self) -> None:
        """A gate restarted in incident mode holds its evacuation lanes again: a restart
        during an evacuation must not close them."""
        if self._mode is GateMode.INCIDENT:
            log.warning("incident_mode_restored", lanes=list(self.evacuation_lanes))
            self._tell_evacuation_lanes(True)

    def _tell_evacuation_lanes(self, on: bool) -> None:
        if not self.evacuation_lanes:
            log.warning("incident_mode_without_evacuation_lanes", on=on)
        for lane_id in self.evacuation_lanes:
            runner = self._lanes.get(lane_id)
            if runner is None:  # the configuration's checks make this impossible
                log.error("evacuation_lane_unknown", lane=lane_id)
                continue
            runner.incident(on)

    # --- the PLC's optional inputs ----------------------------------------------------------

    def plc_inputs(self, lane_id: str, inputs: PlcInputs) -> None:
        """A poll of a PLC serving ``lane_id`` (from the driver's sink: must not block)."""
        if inputs.incident_alarm is not None:
            name = f"plc:{inputs.device}:incident_alarm"
            seen = self._seen.get(name)
            if seen is None:
                self._seen[name] = _Seen(inputs.incident_alarm, inputs.incident_alarm)
            else:
                seen.went_active |= inputs.incident_alarm
                seen.active = inputs.incident_alarm
            self._wake.set()
        for field, action in BUTTONS.items():
            level: bool | None = getattr(inputs, field)
            if level is None:
                continue
            key = (inputs.device, field)
            was = self._buttons.get(key)
            self._buttons[key] = level
            # The first poll only learns the level: a button stuck pressed at start-up, or
            # held while the PLC was away, is no press.
            if was is None or was or not level:
                continue
            self._press(lane_id, inputs.device, field, action)

    def _press(self, lane_id: str, device: str, field: str, action: ManualActionKind) -> None:
        runner = self._lanes.get(lane_id)
        if runner is None:
            return
        operator = f"button:{device}:{field}"
        if action in _PENDING_ONLY and runner.state is not LaneState.AWAITING_GUARD:
            log.info("button_ignored", lane=lane_id, operator=operator, state=str(runner.state))
            return
        # The lane logs the manual.action before it acts on it.
        runner.manual(Manual(action, operator, "pressed at the lane's panel"))

    async def run(self) -> None:
        """Act on the alarm inputs' changes until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            failed = False
            for name in list(self._seen):
                seen = self._seen.pop(name)
                try:
                    await self._alarm(name, seen)
                except LogError:
                    failed = True
                    # Not logged, not done: tried again with whatever the input says by then.
                    newer = self._seen.get(name)
                    if newer is not None:
                        seen = _Seen(seen.went_active or newer.went_active, newer.active)
                    self._seen[name] = seen
            if failed:
                await asyncio.sleep(self._alarm_retry_s)
                self._wake.set()

    async def _alarm(self, name: str, seen: _Seen) -> None:
        was = self._alarm_on.get(name, name == self._restored_owner)
        if seen.went_active and not was:
            if self._mode is not GateMode.INCIDENT:
                await self.set_incident(
                    True,
                    source=ModeSource.PLC_INPUT,
                    operator=name,
                    reason="incident alarm input active",
                )
            self._alarm_on[name] = was = True
        if was and not seen.active:
            others = any(on for other, on in self._alarm_on.items() if other != name)
            # Only an incident the alarm switched on ends when the alarm clears (see
            # __init__); while another alarm input is still active it goes on.
            if self._by_alarm and not others and self._mode is GateMode.INCIDENT:
                await self.set_incident(
                    False,
                    source=ModeSource.PLC_INPUT,
                    operator=name,
                    reason="incident alarm input cleared",
                )
        self._alarm_on[name] = seen.active


def last_mode_change(path: Path) -> ModeChanged | None:
    """The log's last ``mode.changed`` (None when there is none)."""
    with LogReader(path) as reader:
        stored = reader.last(ModeChanged.TYPE)
    if stored is None:
        return None
    event = stored.event()
    assert isinstance(event, ModeChanged)
    return event
