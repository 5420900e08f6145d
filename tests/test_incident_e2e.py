"""Incident mode at the gate, without the network: the real daemon, PLC simulators speaking
Modbus TCP on 127.0.0.1 with the booth-panel profile (an incident alarm contact, the guard's
buttons), and — where the network matters — ``[sync]`` against a mosquitto broker that has
been stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgegate.config import GateConfig, parse_config
from edgegate.core.events import (
    BarrierCommand,
    BarrierCommanded,
    DaemonStarted,
    GateMode,
    Loop,
    ManualAction,
    ManualActionKind,
    ModeChanged,
    ModeSource,
)
from edgegate.core.lane import LaneState
from edgegate.daemon.control import GateController
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.profiles import load_profile
from edgegate.sim.plc import PlcSimulator
from edgegate.sync.signing import generate_keypair
from tests.eventually import eventually
from tests.gate_harness import (
    REFUSED,
    RunningGate,
    gate_toml,
    lane,
    sim_plc,
    sim_reader,
    tcp_plc,
    wait_position,
)
from tests.services.mosquitto import Broker, BrokerFactory
from tests.test_gate_e2e import fill_log, unfill_log

pytestmark = pytest.mark.timeout(120)

GATE = "e2e-gate"
PANEL = "barrier-plc-guard-panel"
ALARM = "plc:plc-ev:incident_alarm"
WAIT = 20.0
OPEN, CLOSE = BarrierCommand.OPEN, BarrierCommand.CLOSE


def is_open(e: BarrierCommanded) -> bool:
    return e.command is OPEN


def is_close(e: BarrierCommanded) -> bool:
    return e.command is CLOSE


def _config(
    tmp_path: Path,
    *,
    broker: Broker | None = None,
    ev_plc: dict[str, object] | None = None,
) -> GateConfig:
    """Two lanes: ``ev``, an exit and the gate's one evacuation lane, and ``in``, an entry;
    each with its own PLC of the booth-panel profile (the alarm is wired to ``plc-ev``)."""
    text = gate_toml(
        tmp_path / "gate.db",
        {
            "plc-ev": ev_plc if ev_plc is not None else sim_plc(profile=PANEL),
            "cam-ev": sim_reader(),
            "plc-in": sim_plc(profile=PANEL),
            "cam-in": sim_reader(),
        },
        [lane("ev", "exit", "cam-ev", "plc-ev"), lane("in", "entry", "cam-in", "plc-in")],
    )
    text += '\n[incident]\nevacuation_lanes = ["ev"]\n'
    if broker is not None:
        _, public_pem = generate_keypair()
        (tmp_path / "central.pub").write_bytes(public_pem)
        (tmp_path / "mqtt-password").write_text(broker.add_gate(GATE))
        text += (
            f'\n[sync]\nbroker = "mqtt://127.0.0.1:{broker.plain_port}"\n'
            'password_file = "mqtt-password"\ncentral_public_key = "central.pub"\n'
            'reconnect_max = "1s"\n'
        )
    return parse_config(text, base_dir=tmp_path)


def _control(g: RunningGate) -> GateController:
    assert g.gate.control is not None
    return g.gate.control


def _mode(g: RunningGate) -> GateMode:
    return g.gate.mode


async def _alarm_seen(g: RunningGate, active: bool) -> None:
    """The controller has acted on the alarm input reading ``active``."""
    await eventually(
        lambda: _control(g).alarms.get(ALARM) is active,
        lambda: f"the alarm seen {'active' if active else 'clear'} ({_control(g).alarms})",
    )


async def test_fire_alarm_holds_only_the_evacuation_lane_open_with_the_broker_down(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = make_broker(["central", GATE])
    async with RunningGate(_config(tmp_path, broker=broker)) as g:
        uplink = g.gate.uplink
        assert uplink is not None
        async with asyncio.timeout(WAIT):
            await uplink.connected.wait()
        await broker.astop()
        await eventually(lambda: not uplink.connected.is_set(), "the uplink sees the broker gone")
        plc_ev, plc_in = g.plc("plc-ev"), g.plc("plc-in")
        trail_ev, trail_in = g.trail("plc-ev"), g.trail("plc-in")
        ev, entry = g.gate.lanes["ev"], g.gate.lanes["in"]

        plc_ev.set_input("incident_alarm", True)
        on = await g.log.wait_for(ModeChanged)
        assert on.event == ModeChanged(
            mode=GateMode.INCIDENT,
            previous=GateMode.NORMAL,
            source=ModeSource.PLC_INPUT,
            operator=ALARM,
            reason="incident alarm input active",
        )
        held = await g.log.wait_for(BarrierCommanded, lane="ev", where=is_open)
        assert held.seq > on.seq  # logged before the lane was told
        assert held.event.reason == "incident"
        i, _ = await trail_ev.wait(OPEN)
        assert trail_ev.head_at(i) >= held.seq
        await wait_position(plc_ev, 1.0)
        assert ev.state is LaneState.HELD_OPEN
        assert _mode(g) is GateMode.INCIDENT

        # Only the evacuation lane: the entry lane is neither commanded nor held.
        await asyncio.sleep(0.5)  # time enough for a wrong open of the entry lane
        assert g.log.of(BarrierCommanded, lane="in") == []
        assert list(trail_in) == []
        assert plc_in.position == 0.0
        assert entry.state is not LaneState.HELD_OPEN

        plc_ev.set_input("incident_alarm", False)
        off = await g.log.wait_for(ModeChanged, after=on.seq)
        assert (off.event.mode, off.event.previous) == (GateMode.NORMAL, GateMode.INCIDENT)
        assert (off.event.source, off.event.operator) == (ModeSource.PLC_INPUT, ALARM)
        closing = await g.log.wait_for(BarrierCommanded, lane="ev", after=off.seq, where=is_close)
        assert closing.event.reason == "released"
        await wait_position(plc_ev, 0.0)
        await eventually(lambda: ev.state is LaneState.IDLE, "the evacuation lane idle")
        assert _mode(g) is GateMode.NORMAL
        assert not uplink.connected.is_set()  # all of it with the broker down


async def test_a_declared_incident_is_not_ended_by_the_alarm_clearing(tmp_path: Path) -> None:
    async with RunningGate(_config(tmp_path)) as g:
        plc_ev, control = g.plc("plc-ev"), _control(g)
        seq = await control.set_incident(
            True,
            source=ModeSource.LOCAL,
            operator="console:supervisor-wang",
            reason="chlorine smell at unit 4",
        )
        assert seq is not None
        held = await g.log.wait_for(BarrierCommanded, lane="ev", where=is_open)
        assert held.seq > seq
        await wait_position(plc_ev, 1.0)

        # The alarm goes off and is reset: the supervisor's declaration stands.
        plc_ev.set_input("incident_alarm", True)
        await _alarm_seen(g, True)
        plc_ev.set_input("incident_alarm", False)
        await _alarm_seen(g, False)
        await asyncio.sleep(0.5)  # time enough for a wrong release
        assert [c.seq for c in g.log.of(ModeChanged)] == [seq]
        assert _mode(g) is GateMode.INCIDENT
        assert g.log.of(BarrierCommanded, lane="ev", where=is_close) == []
        assert g.gate.lanes["ev"].state is LaneState.HELD_OPEN

        # Only the supervisor ends it.
        off = await control.set_incident(
            False, source=ModeSource.LOCAL, operator="console:supervisor-wang", reason="clear"
        )
        assert off is not None
        await g.log.wait_for(BarrierCommanded, lane="ev", after=off, where=is_close)
        await wait_position(plc_ev, 0.0)
        await eventually(lambda: g.gate.lanes["ev"].state is LaneState.IDLE, "lane idle")


async def test_an_alarm_incident_survives_a_restart_and_ends_with_the_alarm(
    tmp_path: Path,
) -> None:
    """The PLC (and its alarm contact) outlives the daemon: restarted during the alarm, the
    gate holds the evacuation lane again without a new mode change; the alarm clearing then
    ends the incident the alarm began before the restart."""
    profile = load_profile(PANEL, family=BarrierPlcProfile)
    sim = PlcSimulator(profile, travel_time=0.3, host="127.0.0.1")
    await sim.start()
    try:
        config = _config(tmp_path, ev_plc=tcp_plc(sim.port, profile=PANEL))
        async with RunningGate(config) as g:
            sim.set_input("incident_alarm", True)
            on = await g.log.wait_for(ModeChanged)
            assert on.event.source is ModeSource.PLC_INPUT
            await g.log.wait_for(BarrierCommanded, lane="ev", where=is_open)
            await wait_position(sim, 1.0)
        async with RunningGate(config) as g:
            started = g.log.of(DaemonStarted)[-1].seq
            held = await g.log.wait_for(BarrierCommanded, lane="ev", after=started, where=is_open)
            assert held.event.reason == "incident"
            await eventually(
                lambda: g.gate.lanes["ev"].state is LaneState.HELD_OPEN, "evacuation lane held"
            )
            await _alarm_seen(g, True)
            assert _mode(g) is GateMode.INCIDENT
            assert [c.seq for c in g.log.of(ModeChanged)] == [on.seq]
            assert g.log.of(BarrierCommanded, lane="in", after=started) == []

            sim.set_input("incident_alarm", False)
            off = await g.log.wait_for(ModeChanged, after=on.seq)
            assert (off.event.mode, off.event.operator) == (GateMode.NORMAL, ALARM)
            await g.log.wait_for(BarrierCommanded, lane="ev", after=off.seq, where=is_close)
            await wait_position(sim, 0.0)
            await eventually(lambda: g.gate.lanes["ev"].state is LaneState.IDLE, "lane idle")
    finally:
        await sim.stop()


async def test_a_declared_incident_is_restored_on_the_evacuation_lanes_only(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    async with RunningGate(config) as g:
        await _control(g).set_incident(
            True, source=ModeSource.LOCAL, operator="console:supervisor-wang", reason="leak"
        )
        await g.log.wait_for(BarrierCommanded, lane="ev", where=is_open)
        await wait_position(g.plc("plc-ev"), 1.0)
    async with RunningGate(config) as g:
        started = g.log.of(DaemonStarted)[-1].seq
        held = await g.log.wait_for(BarrierCommanded, lane="ev", after=started, where=is_open)
        assert held.event.reason == "incident"
        await wait_position(g.plc("plc-ev"), 1.0)
        assert _mode(g) is GateMode.INCIDENT
        # The restarted simulator reads the alarm clear: not the alarm's incident to end.
        await _alarm_seen(g, False)
        await asyncio.sleep(0.5)  # time enough for a wrong release or a wrong open
        assert g.gate.lanes["ev"].state is LaneState.HELD_OPEN
        assert len(g.log.of(ModeChanged)) == 1
        assert g.log.of(BarrierCommanded, lane="in", after=started) == []
        assert g.plc("plc-in").position == 0.0


async def test_the_alarm_waits_for_the_log_then_acts(tmp_path: Path) -> None:
    """Log-then-act: with the log full nothing is done; once it can be written again the
    alarm still active switches incident mode on, logged before the lane is told."""
    async with RunningGate(_config(tmp_path)) as g:
        plc_ev = g.plc("plc-ev")
        await fill_log(g.event_log)
        plc_ev.set_input("incident_alarm", True)
        driver = g.gate.plcs["plc-ev"]
        await eventually(
            lambda: driver.last_inputs is not None and driver.last_inputs.incident_alarm is True,
            "the alarm read by the driver",
        )
        await asyncio.sleep(1.5)  # past the retry interval: time enough for a wrong open
        assert plc_ev.commands == []
        assert _mode(g) is GateMode.NORMAL

        await unfill_log(g.event_log)
        on = await g.log.wait_for(ModeChanged, within=5.0)
        assert on.event.source is ModeSource.PLC_INPUT
        held = await g.log.wait_for(BarrierCommanded, lane="ev", where=is_open)
        assert held.seq > on.seq
        await wait_position(plc_ev, 1.0)
        plc_ev.set_input("incident_alarm", False)
        off = await g.log.wait_for(ModeChanged, after=on.seq)
        await g.log.wait_for(BarrierCommanded, lane="ev", after=off.seq, where=is_close)
        await wait_position(plc_ev, 0.0)
        await eventually(lambda: g.gate.lanes["ev"].state is LaneState.IDLE, "lane idle")


async def _press(g: RunningGate, plc: str, button: str, after: int) -> ManualAction:
    """Press and let go of ``button``; the manual action it was logged as."""
    sim = g.plc(plc)
    sim.set_input(button, True)
    try:
        action = await g.log.wait_for(ManualAction, after=after)
    finally:
        sim.set_input(button, False)
    return action.event


async def test_guard_buttons_are_logged_manual_actions(tmp_path: Path) -> None:
    async with RunningGate(_config(tmp_path)) as g:
        plc, log = g.plc("plc-ev"), g.log
        ev = g.gate.lanes["ev"]
        await eventually(lambda: ev.state is LaneState.IDLE, "lane idle")
        operator = "button:plc-ev:{}"

        # Open and hold: logged, then the open it causes.
        start = log.head
        hold = await _press(g, "plc-ev", "open_hold_button", start)
        assert (hold.action, hold.operator) == (
            ManualActionKind.OPEN,
            operator.format("open_hold_button"),
        )
        (action,) = log.of(ManualAction, after=start)
        opening = await log.wait_for(BarrierCommanded, lane="ev", after=start, where=is_open)
        assert opening.event.cause_seq == action.seq
        await wait_position(plc, 1.0)
        assert ev.state is LaneState.HELD_OPEN

        release = await _press(g, "plc-ev", "release_button", action.seq)
        assert release.action is ManualActionKind.RELEASE
        await log.wait_for(BarrierCommanded, lane="ev", after=action.seq, where=is_close)
        await wait_position(plc, 0.0)
        await eventually(lambda: ev.state is LaneState.IDLE, "lane idle")

        # Confirm with nobody waiting for a guard: nothing to act on, nothing logged.
        before = log.head
        plc.set_input("confirm_button", True)
        await asyncio.sleep(0.3)  # several polls: time enough for a wrong action
        plc.set_input("confirm_button", False)
        await asyncio.sleep(0.3)
        assert log.of(ManualAction, after=before) == []

        # A vehicle the park has never known wants out: a guard must decide.
        road = g.road("ev")
        await road.arrive(REFUSED)
        await eventually(lambda: ev.state is LaneState.AWAITING_GUARD, "awaiting a guard")
        before = log.head
        confirm = await _press(g, "plc-ev", "confirm_button", before)
        assert (confirm.action, confirm.operator) == (
            ManualActionKind.CONFIRM,
            operator.format("confirm_button"),
        )
        (confirmed,) = log.of(ManualAction, after=before)
        opening = await log.wait_for(BarrierCommanded, lane="ev", after=before, where=is_open)
        assert opening.seq > confirmed.seq
        await wait_position(plc, 1.0)
        await road.cross()
        await log.wait_for(BarrierCommanded, lane="ev", after=opening.seq, where=is_close)
        await wait_position(plc, 0.0)
        await eventually(lambda: ev.state is LaneState.IDLE, "lane idle")

        # The next one is refused at the button: it has to back out.
        await road.arrive(REFUSED)
        await eventually(lambda: ev.state is LaneState.AWAITING_GUARD, "awaiting a guard")
        before = log.head
        refuse = await _press(g, "plc-ev", "refuse_button", before)
        assert (refuse.action, refuse.operator) == (
            ManualActionKind.REFUSE,
            operator.format("refuse_button"),
        )
        await eventually(lambda: ev.state is LaneState.PRESENT, "the vehicle refused")
        await asyncio.sleep(0.3)  # time enough for a wrong open
        assert log.of(BarrierCommanded, lane="ev", after=before) == []
        await road.set(Loop.ARMING, False)  # it backs out
        await eventually(lambda: ev.state is LaneState.IDLE, "lane idle")


async def test_an_alarm_incident_ends_when_the_restarted_gate_reads_the_alarm_clear(
    tmp_path: Path,
) -> None:
    """The alarm cleared while the daemon was down (the restarted simulator reads it clear):
    the restarted gate holds the evacuation lane again, then ends the alarm's incident."""
    config = _config(tmp_path)
    async with RunningGate(config) as g:
        g.plc("plc-ev").set_input("incident_alarm", True)
        on = await g.log.wait_for(ModeChanged)
        await g.log.wait_for(BarrierCommanded, lane="ev", where=is_open)
        await wait_position(g.plc("plc-ev"), 1.0)
    async with RunningGate(config) as g:
        off = await g.log.wait_for(ModeChanged, after=on.seq)
        assert (off.event.mode, off.event.source) == (GateMode.NORMAL, ModeSource.PLC_INPUT)
        await g.log.wait_for(BarrierCommanded, lane="ev", after=off.seq, where=is_close)
        await wait_position(g.plc("plc-ev"), 0.0)
        await eventually(lambda: g.gate.lanes["ev"].state is LaneState.IDLE, "lane idle")
