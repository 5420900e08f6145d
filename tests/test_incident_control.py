"""The gate's control on its own (a real event log, lanes that record what they are told),
the booth-panel inputs of a PLC profile (errors naming the key) and of the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgegate.core import events as ev
from edgegate.core.lane import LaneState, Manual
from edgegate.daemon.control import GateController
from edgegate.devices.base import PlcInputs
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.profiles import DEFAULT_DRIVERS_DIR, ProfileError, load_profile
from edgegate.log import EventLog, LogError, LogReader
from edgegate.sim.plc import PlcSimulator

PANEL = "barrier-plc-guard-panel"


@dataclass
class RecordingLane:
    """A lane that records what it is told, with the ``mode.changed`` seqs durable then."""

    log_path: Path
    state: LaneState = LaneState.IDLE
    manual_actions: list[Manual] = field(default_factory=list)
    incidents: list[tuple[bool, list[int]]] = field(default_factory=list)

    def manual(self, action: Manual) -> None:
        self.manual_actions.append(action)

    def incident(self, on: bool) -> None:
        with LogReader(self.log_path) as reader:
            logged = [e.seq for e in reader.read(after=0, limit=1000) if e.type == "mode.changed"]
        self.incidents.append((on, logged))


def _lanes(path: Path) -> dict[str, RecordingLane]:
    return {"ev-1": RecordingLane(path), "ev-2": RecordingLane(path), "in-1": RecordingLane(path)}


async def test_incident_mode_is_logged_then_held_on_the_evacuation_lanes_only(
    event_log: EventLog,
) -> None:
    lanes = _lanes(event_log.path)
    control = GateController(lanes, event_log, ("ev-1", "ev-2"))
    seen: list[tuple[ev.ModeChanged, int]] = []
    control.observers.append(lambda e, s: seen.append((e, s)))

    on = await control.set_incident(
        True, source=ev.ModeSource.LOCAL, operator="console:wang", reason="leak"
    )
    assert on is not None
    assert control.mode is ev.GateMode.INCIDENT
    # Told after mode.changed was durable, and only the evacuation lanes.
    assert lanes["ev-1"].incidents == lanes["ev-2"].incidents == [(True, [on])]
    assert lanes["in-1"].incidents == []
    # Already in incident: nothing logged, nobody told.
    again = await control.set_incident(
        True, source=ev.ModeSource.CENTRAL, operator="central:li", reason="leak", command_id="c1"
    )
    assert again is None
    off = await control.set_incident(
        False, source=ev.ModeSource.CENTRAL, operator="central:li", reason="clear", command_id="c2"
    )
    assert off is not None
    assert lanes["ev-1"].incidents == [(True, [on]), (False, [on, off])]
    assert [s for _, s in seen] == [on, off]
    assert seen[1][0] == ev.ModeChanged(
        mode=ev.GateMode.NORMAL,
        previous=ev.GateMode.INCIDENT,
        source=ev.ModeSource.CENTRAL,
        operator="central:li",
        reason="clear",
        command_id="c2",
    )


async def test_nothing_is_done_when_the_mode_change_cannot_be_logged(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "gate.db", gate_id="g")
    lanes = _lanes(log.path)
    control = GateController(lanes, log, ("ev-1",))
    await log.aclose()
    with pytest.raises(LogError):
        await control.set_incident(True, source=ev.ModeSource.LOCAL, operator="x", reason="y")
    assert control.mode is ev.GateMode.NORMAL
    assert lanes["ev-1"].incidents == []


async def test_a_restart_in_incident_holds_the_evacuation_lanes_again(
    event_log: EventLog,
) -> None:
    lanes = _lanes(event_log.path)
    last = ev.ModeChanged(
        mode=ev.GateMode.INCIDENT, previous=ev.GateMode.NORMAL, source=ev.ModeSource.LOCAL
    )
    control = GateController(lanes, event_log, ("ev-2",), last_change=last)
    control.restore()
    assert control.mode is ev.GateMode.INCIDENT
    assert [on for on, _ in lanes["ev-2"].incidents] == [True]
    assert lanes["ev-1"].incidents == lanes["in-1"].incidents == []


async def test_lane_actions_go_to_the_lane_named(event_log: EventLog) -> None:
    lanes = _lanes(event_log.path)
    control = GateController(lanes, event_log, ("ev-1",))
    control.open_lane("in-1", "central:li", "escort")
    control.release_lane("in-1", "central:li", "done")
    control.open_lane_once("in-1", "central:li", "papers checked")
    with pytest.raises(KeyError, match="no lane 'in-9'"):
        control.open_lane("in-9", "central:li", "escort")
    assert lanes["in-1"].manual_actions == [
        Manual(ev.ManualActionKind.OPEN, "central:li", "escort"),
        Manual(ev.ManualActionKind.RELEASE, "central:li", "done"),
        Manual(ev.ManualActionKind.OPEN_ONCE, "central:li", "papers checked"),
    ]
    assert lanes["ev-1"].manual_actions == []


async def test_buttons_act_on_a_press_not_on_a_level(event_log: EventLog) -> None:
    lanes = _lanes(event_log.path)
    control = GateController(lanes, event_log, ())

    def poll(**buttons: bool) -> None:
        control.plc_inputs(
            "in-1", PlcInputs("plc-in", False, True, False, False, False, None, **buttons)
        )

    poll(open_hold_button=True)  # held at start-up: no press
    poll(open_hold_button=True, confirm_button=False)
    poll(open_hold_button=False, confirm_button=False)
    poll(open_hold_button=True, confirm_button=False)  # a press
    poll(open_hold_button=True, confirm_button=True)  # nobody awaits a guard: nothing
    lanes["in-1"].state = LaneState.AWAITING_GUARD
    poll(open_hold_button=True, confirm_button=False)
    poll(open_hold_button=True, confirm_button=True)  # a press, somebody waits
    assert lanes["in-1"].manual_actions == [
        Manual(
            ev.ManualActionKind.OPEN,
            "button:plc-in:open_hold_button",
            "pressed at the lane's panel",
        ),
        Manual(
            ev.ManualActionKind.CONFIRM,
            "button:plc-in:confirm_button",
            "pressed at the lane's panel",
        ),
    ]


# --------------------------------------------------------------------- the profile


def _problems(tmp_path: Path, old: str, new: str) -> list[str]:
    text = (DEFAULT_DRIVERS_DIR / f"{PANEL}.toml").read_text(encoding="utf-8")
    assert old in text
    drivers = tmp_path / "drivers"
    drivers.mkdir()
    (drivers / "bad.toml").write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile("bad", drivers)
    return [line.removeprefix("drivers/bad.toml: ") for line in caught.value.lines()]


ALARM = "incident_alarm = { address = 6, invert = true }"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            ALARM,
            "incident_alarm = { address = 3 }",
            ["inputs.incident_alarm: address 3 is already used by inputs.arming_loop"],
        ),
        (
            ALARM,
            "incident_alarm = { adress = 6 }",
            [
                "inputs.incident_alarm.address: required key is missing",
                "inputs.incident_alarm.adress: unknown key 'adress' (did you mean 'address'?)",
            ],
        ),
        (
            ALARM,
            'incident_alarm = { address = 6, invert = "yes" }',
            ["inputs.incident_alarm.invert: expected true or false, got string 'yes'"],
        ),
        (
            ALARM,
            "fire_alarm = 6",
            ["inputs.fire_alarm: unknown key 'fire_alarm' (did you mean 'incident_alarm'?)"],
        ),
        (
            "confirm_button = 9",
            "confirm_button = -1",
            ["inputs.confirm_button.address: must be at least 0, got number -1"],
        ),
        (
            "refuse_button = 10",
            "refuse_button = true",
            ["inputs.refuse_button: expected a table, got true"],
        ),
    ],
)
def test_a_bad_panel_input_is_named(
    tmp_path: Path, old: str, new: str, expected: list[str]
) -> None:
    assert _problems(tmp_path, old, new) == expected


def test_the_panel_profile_reads_the_alarm_normally_closed() -> None:
    profile = load_profile(PANEL, family=BarrierPlcProfile)
    quiet = profile.decode_inputs(
        "plc", [False, True, False, False, False, False, True] + [False] * 4
    )
    assert quiet.incident_alarm is False  # the contact closed: no alarm
    cut = profile.decode_inputs("plc", [False, True] + [False] * 9)
    assert cut.incident_alarm is True  # the contact open (or the wire cut): alarm
    assert (cut.open_hold_button, cut.confirm_button, cut.refuse_button) == (False, False, False)
    generic = load_profile("barrier-plc-generic", family=BarrierPlcProfile)
    plain = generic.decode_inputs("plc", [False] * 6)
    assert plain.incident_alarm is None and plain.confirm_button is None


def test_the_simulator_sets_only_inputs_its_profile_wires() -> None:
    sim = PlcSimulator(load_profile("barrier-plc-generic", family=BarrierPlcProfile))
    with pytest.raises(ValueError, match="the profile wires no input 'incident_alarm'"):
        sim.set_input("incident_alarm", True)
    with pytest.raises(ValueError, match="unknown input 'fire_alarm'"):
        sim.set_input("fire_alarm", True)
    panel = PlcSimulator(load_profile(PANEL, family=BarrierPlcProfile))
    panel.set_input("confirm_button", True)
    assert panel.inputs()["confirm_button"] is True
