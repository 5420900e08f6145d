"""The whole gate end to end: the real daemon (``Gate``), its real Modbus and serial drivers,
and real peers — pymodbus PLC simulators on 127.0.0.1 (TCP) or a pty pair (RTU), plate-reader
simulators on ptys. Everything is asserted from the outside: on the event log, read with
``LogReader``, and on what the PLC simulators received (``PlcSimulator.commands``, ``frames``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymodbus.constants import ExcCodes

from edgegate.allowlist.service import AllowListService
from edgegate.config import GateConfig, IncidentSettings
from edgegate.core.domain import PlateColour
from edgegate.core.events import (
    AccessDecided,
    BarrierCommand,
    BarrierCommanded,
    BarrierState,
    BarrierStateChanged,
    DaemonStarted,
    DaemonStopped,
    DeviceFault,
    DeviceRecovered,
    Event,
    FrameRejected,
    GateMode,
    Loop,
    LoopChanged,
    ManualAction,
    ManualActionKind,
    ModeChanged,
    ModeSource,
    PlateRead,
    StopReason,
    VehicleBackedOut,
    VehiclePassed,
)
from edgegate.core.lane import IncidentHold, LaneState, Manual
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.profiles import load_profile
from edgegate.devices.reader_profile import ReaderProfile
from edgegate.log import EventLog, LogError, LogWriteError
from edgegate.sim.demo import demo_allowlist
from edgegate.sim.plate_reader import PlateReaderSimulator
from edgegate.sim.plc import FailMode, PlcSimulator, PtyLink
from tests.eventually import eventually
from tests.gate_harness import (
    ALLOWED,
    BLACKLISTED,
    REFUSED,
    CommandTrail,
    Logged,
    LogView,
    Road,
    RunningGate,
    gate_config,
    gate_toml,
    lane,
    one_lane_config,
    rtu_plc,
    serial_reader,
    sim_plc,
    sim_reader,
    tcp_plc,
    wait_position,
)

OPEN, CLOSE = BarrierCommand.OPEN, BarrierCommand.CLOSE
FC_WRITES = (0x05, 0x0F)
TRAVEL_S = 0.3


def plc_profile() -> BarrierPlcProfile:
    return load_profile("barrier-plc-generic", family=BarrierPlcProfile)


def reader_profile() -> ReaderProfile:
    profile = load_profile("plate-reader-generic")
    assert not isinstance(profile, BarrierPlcProfile)
    return profile


def is_open(event: BarrierCommanded) -> bool:
    return event.command is OPEN


def is_close(event: BarrierCommanded) -> bool:
    return event.command is CLOSE


def writes(sim: PlcSimulator) -> list[int]:
    """Function codes of every write request the PLC received."""
    return [f.function for f in sim.frames if f.direction == "request" and f.function in FC_WRITES]


async def assert_entry_cycle(
    g: RunningGate, road: Road, trail: CommandTrail, lane_id: str = "l1", after: int = 0
) -> None:
    """Drive ALLOWED through ``lane_id`` and check the whole cycle, log-then-act included."""
    log = g.log
    opens_before, closes_before = len(trail.of(OPEN)), len(trail.of(CLOSE))
    await road.drive_through(ALLOWED)
    passed = await log.wait_for(VehiclePassed, lane=lane_id, after=after)
    closing = await log.wait_for(BarrierCommanded, lane=lane_id, after=passed.seq, where=is_close)
    await wait_position(road.plc, 0.0)

    read = log.of(PlateRead, lane=lane_id, after=after)[-1]
    (decided,) = log.of(AccessDecided, lane=lane_id, after=after)
    assert decided.event.plate == ALLOWED
    assert decided.event.verdict == "allow"
    assert decided.event.read_seq == read.seq
    (opening,) = log.of(BarrierCommanded, lane=lane_id, after=after, where=is_open)
    assert opening.event.reason == "access-allowed"
    assert opening.event.cause_seq == decided.seq
    # One commit: the read, its decision and the opening it causes are consecutive.
    assert read.seq + 1 == decided.seq == opening.seq - 1
    assert opening.seq < passed.seq < closing.seq
    assert passed.event.plate == ALLOWED
    assert passed.event.decision_seq == decided.seq
    assert closing.event.reason == "vehicle-passed"

    # Log-then-act: when the PLC took each command, its barrier.commanded was committed.
    (i_open, t_open), *more_opens = trail.of(OPEN)[opens_before:]
    (i_close, t_close), *more_closes = trail.of(CLOSE)[closes_before:]
    assert not more_opens
    assert not more_closes
    assert trail.head_at(i_open) >= opening.seq
    assert trail.head_at(i_close) >= closing.seq
    assert opening.mono <= t_open < passed.mono <= closing.mono <= t_close

    # The barrier really moved: up before the vehicle passed, down after the close.
    ups = log.of(BarrierStateChanged, lane=lane_id, after=opening.seq, where=_up)
    assert ups
    assert ups[0].seq < passed.seq
    await log.wait_for(BarrierStateChanged, lane=lane_id, after=closing.seq, where=_down)
    await eventually(lambda: g.gate.lanes[lane_id].state is LaneState.IDLE, "lane idle")


def _up(event: BarrierStateChanged) -> bool:
    return event.state is BarrierState.UP


def _down(event: BarrierStateChanged) -> bool:
    return event.state is BarrierState.DOWN


# --- 1, 3: a normal entry over each transport ---------------------------------------------------


@dataclass
class Peers:
    config: GateConfig
    plc: PlcSimulator | None = None  # started here (None: the gate's own simulated PLC)
    reader: PlateReaderSimulator | None = None


@asynccontextmanager
async def peers(kind: str, tmp_path: Path) -> AsyncIterator[Peers]:
    """A one-lane gate whose PLC and reader are reached as ``kind`` says."""
    if kind == "simulated":
        yield Peers(one_lane_config(tmp_path))
        return
    with PlateReaderSimulator(reader_profile(), directory=tmp_path, name="cam-port") as reader:
        if kind == "tcp":
            plc = PlcSimulator(plc_profile(), travel_time=TRAVEL_S, host="127.0.0.1")
            await plc.start()
            try:
                devices = {"plc": tcp_plc(plc.port), "cam": serial_reader(reader.port)}
                config = gate_config(tmp_path, devices, [lane("l1", "entry", "cam", "plc")])
                yield Peers(config, plc, reader)
            finally:
                await plc.stop()
            return
        link = PtyLink()
        await link.start()
        plc = PlcSimulator(
            plc_profile(), travel_time=TRAVEL_S, serial_port=link.paths[0], baudrate=115200
        )
        try:
            await plc.start()
            devices = {"plc": rtu_plc(link.paths[1]), "cam": serial_reader(reader.port)}
            config = gate_config(tmp_path, devices, [lane("l1", "entry", "cam", "plc")])
            yield Peers(config, plc, reader)
        finally:
            await plc.stop()
            await link.stop()


@pytest.mark.parametrize("kind", ["simulated", "tcp", "rtu"])
async def test_normal_entry(kind: str, tmp_path: Path) -> None:
    """An allowed plate: decided, barrier.commanded open durable before the PLC gets the open,
    arm up, vehicle.passed, close, arm down; the log verifies and ends with daemon.stopped."""
    async with peers(kind, tmp_path) as p, RunningGate(p.config) as g:
        plc = p.plc or g.plc()
        reader = p.reader or g.reader()
        trail = g.trail(plc)
        started = g.log.of(DaemonStarted)
        assert len(started) == 1
        assert started[0].event.config_hash == p.config.config_hash()
        await assert_entry_cycle(g, Road(plc, reader), trail)
        assert [c for _, c in trail] == [OPEN, CLOSE]
    with LogView(p.config.log_file) as log:
        assert log.of(DaemonStopped)[-1].event.reason is StopReason.REQUESTED


async def test_a_lane_without_an_exit_loop_logs_no_exit_loop_changes(tmp_path: Path) -> None:
    """The PLC has an exit-loop input (wired, but not this lane's): its changes are not the
    lane's; the pass is marked by the safety loop."""
    async with RunningGate(one_lane_config(tmp_path, exit_loop=False)) as g:
        await g.road().drive_through(ALLOWED)
        await g.log.wait_for(VehiclePassed, lane="l1")
        await wait_position(g.plc(), 0.0)
        loops = {e.event.loop for e in g.log.of(LoopChanged, lane="l1")}
        assert loops == {Loop.ARMING, Loop.SAFETY}


# --- 2: refused plates ------------------------------------------------------------------------


async def test_refused_plates_never_reach_the_plc(tmp_path: Path) -> None:
    """An unknown and a blacklisted plate: denied with reasons, the vehicles back out, and the
    PLC never receives a single write."""
    async with RunningGate(one_lane_config(tmp_path)) as g:
        plc, road, log = g.plc(), g.road(), g.log
        for plate, reason in ((REFUSED, "no-credential"), (BLACKLISTED, "blacklisted")):
            head = log.head
            await road.arrive(plate)
            decided = await log.wait_for(AccessDecided, lane="l1", after=head)
            assert decided.event.plate == plate
            assert decided.event.verdict == "deny"
            assert reason in decided.event.reasons
            await asyncio.sleep(0.5)  # ten PLC polls: time enough for a wrong open
            await road.set(Loop.ARMING, False)  # the driver gives up
            backed = await log.wait_for(VehicleBackedOut, lane="l1", after=head)
            assert backed.event.decision_seq == decided.seq
            assert g.gate.lanes["l1"].state is LaneState.IDLE
        assert log.of(BarrierCommanded) == []
        assert plc.commands == []
        assert writes(plc) == []
        assert plc.position == 0.0


# --- 4, 5: the safety loop ----------------------------------------------------------------------


async def test_arm_never_closes_on_a_vehicle_stopped_on_the_safety_loop(tmp_path: Path) -> None:
    """The vehicle has passed and the close is due, but a vehicle now stands on the safety loop:
    no close is commanded (none logged, none received) until it has left, and then only after
    the close delay."""
    close_delay = 0.8
    config = one_lane_config(tmp_path, timings={"close_delay": f"{close_delay}s"})
    async with RunningGate(config) as g:
        plc, road, log, trail = g.plc(), g.road(), g.log, g.trail()
        await road.drive_through(ALLOWED)
        passed = await log.wait_for(VehiclePassed, lane="l1")
        plc.set_loop(Loop.SAFETY, True)  # the next one noses in under the arm and stops
        occupied = await log.wait_for(
            LoopChanged, lane="l1", after=passed.seq, where=lambda e: e.loop is Loop.SAFETY
        )
        assert occupied.mono - passed.mono < close_delay  # it was there before the close was due
        await asyncio.sleep(2 * close_delay)  # two close delays: time enough for a wrong close
        assert trail.of(CLOSE) == []
        assert log.of(BarrierCommanded, after=passed.seq) == []
        assert log.of(DeviceFault) == []  # not even tried (the driver would refuse it)
        assert plc.position == 1.0

        plc.set_loop(Loop.SAFETY, False)
        cleared = time.monotonic()
        _, t_close = await trail.wait(CLOSE)
        assert t_close - cleared >= close_delay, "closed before the close delay after clearing"
        closing = await log.wait_for(BarrierCommanded, lane="l1", where=is_close)
        assert closing.mono >= cleared
        await wait_position(plc, 0.0)
        assert [c for _, c in trail] == [OPEN, CLOSE]


async def test_safety_loop_occupied_while_closing_raises_the_arm(tmp_path: Path) -> None:
    """Something enters the safety loop under a closing arm: the arm goes up again before it
    reaches the bottom, and closes once the lane is clear."""
    config = gate_config(
        tmp_path,
        {"plc": sim_plc(travel_time="1500ms"), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc", timings={"open_travel": "3s", "close_travel": "3s"})],
    )
    async with RunningGate(config) as g:
        plc, road, log, trail = g.plc(), g.road(), g.log, g.trail()
        await road.arrive(ALLOWED)
        await wait_position(plc, 1.0, within=4.0)
        await road.cross()
        _, t_close = await trail.wait(CLOSE)
        await eventually(lambda: 0.0 < plc.position < 0.8, "the arm on its way down")
        plc.set_loop(Loop.SAFETY, True)
        _, t_reopen = await trail.wait(OPEN, after=t_close, within=1.0)
        assert plc.position > 0.0  # it turned back before the bottom
        reopen = await log.wait_for(
            BarrierCommanded, lane="l1", where=lambda e: e.reason.startswith("safety-loop")
        )
        assert reopen.event.command is OPEN
        assert reopen.mono <= t_reopen
        await wait_position(plc, 1.0, within=3.0)
        closing = log.of(BarrierCommanded, where=is_close)
        assert len(closing) == 1
        # The arm never reached the bottom between the close and the re-opening.
        downs = log.of(BarrierStateChanged, after=closing[0].seq, where=_down)
        assert downs == []

        plc.set_loop(Loop.SAFETY, False)
        _, t_close_again = await trail.wait(CLOSE, after=t_reopen, within=3.0)
        assert [c for _, c in trail] == [OPEN, CLOSE, OPEN, CLOSE]
        await wait_position(plc, 0.0, within=3.0)
        # Every close went out while the safety loop was last seen clear.
        safety = log.of(LoopChanged, where=lambda e: e.loop is Loop.SAFETY)
        for _, t in trail.of(CLOSE):
            seen = [e for e in safety if e.mono <= t]
            assert seen
            assert not seen[-1].event.occupied
        assert t_close_again > t_reopen


# --- 6: PLC faults ----------------------------------------------------------------------------


async def _fault_within_a_second(
    g: RunningGate, plc: PlcSimulator, mode: FailMode, code: str, *, recover: bool = True
) -> None:
    """Inject ``mode``: one fault event with ``code`` within 1 s, the lane in fault; then
    (``recover``) lift it: device.recovered, and the lane idle again."""
    head = g.log.head
    t0 = time.time_ns()
    await plc.set_fail_mode(mode, exception_code=ExcCodes.DEVICE_FAILURE)
    fault = await g.log.wait_for(DeviceFault, after=head, where=lambda e: e.device == "plc")
    assert fault.event.code == code, fault.event
    assert fault.stored.wall_ns - t0 < 1_000_000_000, "fault logged more than 1 s late"
    await eventually(lambda: g.gate.lanes["l1"].state is LaneState.FAULT, "lane in fault")
    await asyncio.sleep(0.5)  # time enough for a wrong recovery or a second fault
    assert g.gate.lanes["l1"].state is LaneState.FAULT
    assert len(g.log.of(DeviceFault, after=head)) == 1, "one fault per outage"
    if not recover:
        return
    await plc.set_fail_mode(FailMode.NONE)
    recovered = await g.log.wait_for(DeviceRecovered, after=fault.seq, within=4.0)
    assert recovered.event.device == "plc"
    await eventually(lambda: g.gate.lanes["l1"].state is LaneState.IDLE, "lane idle again")


async def test_plc_silent_then_exception_codes_then_back(tmp_path: Path) -> None:
    """A silent PLC is a timeout fault in the log within 1 s, an exception-answering PLC a
    modbus-exception fault; each time the lane is in fault, recovers by itself, and the gate
    then admits a vehicle again."""
    async with RunningGate(one_lane_config(tmp_path)) as g:
        plc = g.plc()
        trail = g.trail()
        await _fault_within_a_second(g, plc, FailMode.SILENT, "timeout")
        await _fault_within_a_second(g, plc, FailMode.EXCEPTION, "modbus-exception")
        assert trail.of(OPEN) == []
        await assert_entry_cycle(g, g.road(), trail, after=g.log.head)
        assert g.task.done() is False


async def test_plc_outage_with_the_arm_up_and_a_vehicle_under_it(tmp_path: Path) -> None:
    """The PLC stops answering while a vehicle stands under the open arm. When it answers
    again the lane takes up the arm's real position: it does not close on the vehicle, and
    closes by itself (never left open unattended) once the lane is clear."""
    async with RunningGate(one_lane_config(tmp_path)) as g:
        plc, road, log, trail = g.plc(), g.road(), g.log, g.trail()
        await road.arrive(ALLOWED)
        await wait_position(plc, 1.0)
        await road.set(Loop.SAFETY, True)
        await road.set(Loop.ARMING, False)
        await _fault_within_a_second(g, plc, FailMode.SILENT, "timeout", recover=False)
        await plc.set_fail_mode(FailMode.NONE)
        recovered = await log.wait_for(DeviceRecovered, within=4.0)
        assert recovered.event.device == "plc"
        await asyncio.sleep(1.0)  # five close delays, the vehicle still under the arm
        assert trail.of(CLOSE) == []
        assert log.of(BarrierCommanded, where=is_close) == []
        assert plc.position == 1.0
        assert g.gate.lanes["l1"].state is not LaneState.FAULT

        await road.set(Loop.EXIT, True)
        await road.set(Loop.SAFETY, False)
        plc.set_loop(Loop.EXIT, False)
        cleared = time.monotonic()
        _, t_close = await trail.wait(CLOSE)
        assert t_close - cleared >= 0.2  # the close delay, counted from the clear lane
        closing = await log.wait_for(BarrierCommanded, where=is_close)
        assert closing.event.reason == "recovered-open"
        assert trail.head_at(trail.of(CLOSE)[0][0]) >= closing.seq
        await wait_position(plc, 0.0)
        await eventually(lambda: g.gate.lanes["l1"].state is LaneState.IDLE, "lane idle")
        assert [c for _, c in trail] == [OPEN, CLOSE]


async def test_plc_absent_at_start_up(tmp_path: Path) -> None:
    """The PLC refuses connections when the daemon starts: fault events, no crash, and the
    lane works once the PLC is up."""
    with PlateReaderSimulator(reader_profile(), directory=tmp_path, name="cam-port") as reader:
        plc = PlcSimulator(plc_profile(), travel_time=TRAVEL_S, host="127.0.0.1")
        await plc.start()  # binds a port...
        await plc.set_fail_mode(FailMode.REFUSE)  # ...and stops listening on it
        try:
            config = gate_config(
                tmp_path,
                {"plc": tcp_plc(plc.port), "cam": serial_reader(reader.port)},
                [lane("l1", "entry", "cam", "plc")],
            )
            async with RunningGate(config) as g:
                fault = await g.log.wait_for(DeviceFault, where=lambda e: e.device == "plc")
                assert fault.event.code == "unavailable"
                assert fault.event.lane == "l1"
                await eventually(lambda: g.gate.lanes["l1"].state is LaneState.FAULT, "fault")
                await asyncio.sleep(1.0)  # several reconnection attempts
                assert not g.task.done()
                assert len(g.log.of(DeviceFault)) == 1
                assert g.log.of(BarrierStateChanged) == []  # nothing was ever read

                await plc.set_fail_mode(FailMode.NONE)
                recovered = await g.log.wait_for(DeviceRecovered, after=fault.seq, within=4.0)
                assert recovered.event.device == "plc"
                await eventually(lambda: g.gate.lanes["l1"].state is LaneState.IDLE, "idle")
                await assert_entry_cycle(g, Road(plc, reader), g.trail(plc), after=g.log.head)
        finally:
            await plc.stop()


# --- 7: the plate reader ------------------------------------------------------------------------


async def test_reader_unplugged_and_replugged(tmp_path: Path) -> None:
    """Pulling the reader's USB adapter is a device.fault, plugging it back a device.recovered,
    and reads flow again."""
    async with RunningGate(one_lane_config(tmp_path)) as g:
        reader, log = g.reader(), g.log
        reader.unplug()
        fault = await log.wait_for(DeviceFault, where=lambda e: e.device == "cam")
        assert fault.event.code == "unavailable"
        assert fault.event.lane == "l1"
        await asyncio.sleep(0.5)  # unplugged a while: the driver retries meanwhile (pacing)
        reader.replug()
        recovered = await log.wait_for(DeviceRecovered, after=fault.seq, within=6.0)
        assert recovered.event.device == "cam"
        assert g.gate.lanes["l1"].state is LaneState.IDLE  # a reader fault is no barrier fault
        await eventually(lambda: g.gate.readers["cam"].connected, "reader connected")
        await assert_entry_cycle(g, g.road(), g.trail(), after=recovered.seq)


async def test_garbage_on_the_reader_line_is_logged_and_valid_reads_still_decided(
    tmp_path: Path,
) -> None:
    """Noise, a frame with a bad checksum and junk around a valid frame: each bad run is a
    device.frame-rejected event carrying exactly its bytes, and the valid read is decided and
    admits the vehicle."""
    async with RunningGate(one_lane_config(tmp_path)) as g:
        reader, road, log = g.reader(), g.road(), g.log
        head = log.head
        noise, broken, junk = b"\x00\xffNOISE", b"$garbled,frame*00\r\n", b"\x13\x37junk"
        await road.set(Loop.ARMING, True)
        frame = reader.encoder.encode(ALLOWED, PlateColour.BLUE, 0.95, "")
        await reader.send_raw(noise + frame + broken + junk)
        decided = await log.wait_for(AccessDecided, lane="l1", after=head)
        assert decided.event.plate == ALLOWED
        assert decided.event.verdict == "allow"
        await wait_position(g.plc(), 1.0)
        await road.cross()
        passed = await log.wait_for(VehiclePassed, lane="l1", after=head)
        assert passed.event.decision_seq == decided.seq
        # the junk is rejected once the next frame starts; rejections within a second of the
        # last report are counted into the next one (at most one event a second)
        await reader.send_read(REFUSED)
        await eventually(
            lambda: sum(r.event.count for r in log.of(FrameRejected, after=head)) == 3,
            "three rejections logged",
        )
        rejected = log.of(FrameRejected, after=head)
        assert {r.event.device for r in rejected} == {"cam"}
        assert b"".join(r.event.data for r in rejected) == noise + broken + junk
        assert sum(r.event.size for r in rejected) == len(noise + broken + junk)
        reads = log.of(PlateRead, after=head)
        assert [r.event.plate for r in reads] == [ALLOWED, REFUSED]
        assert reads[0].event.raw == frame


# --- 8: a failing device does not stop other lanes ----------------------------------------------


async def test_a_silent_plc_does_not_stop_the_other_lane(tmp_path: Path) -> None:
    """Lane A's PLC goes silent: lane A is in fault (its vehicle waits), lane B still admits
    a vehicle through a full cycle; the faults are all lane A's."""
    config = gate_config(
        tmp_path,
        {
            "plc-a": sim_plc(),
            "cam-a": sim_reader(),
            "plc-b": sim_plc(),
            "cam-b": sim_reader(),
        },
        [lane("a", "entry", "cam-a", "plc-a"), lane("b", "entry", "cam-b", "plc-b")],
    )
    async with RunningGate(config) as g:
        plc_a = g.plc("plc-a")
        await plc_a.set_fail_mode(FailMode.SILENT)
        fault = await g.log.wait_for(DeviceFault, where=lambda e: e.device == "plc-a")
        assert fault.event.lane == "a"
        await eventually(lambda: g.gate.lanes["a"].state is LaneState.FAULT, "lane a in fault")
        # Lane A's vehicle waits; lane B admits one meanwhile.
        await g.road("a").arrive(ALLOWED)
        await assert_entry_cycle(g, g.road("b"), g.trail("plc-b"), lane_id="b", after=fault.seq)
        assert g.gate.lanes["a"].state is LaneState.FAULT
        assert plc_a.commands == []
        assert {f.event.lane for f in g.log.of(DeviceFault)} == {"a"}
        plc_a.set_loop(Loop.ARMING, False)  # lane A's driver gives up and turns around
        await plc_a.set_fail_mode(FailMode.NONE)
        await g.log.wait_for(DeviceRecovered, where=lambda e: e.device == "plc-a", within=4.0)
        await eventually(lambda: g.gate.lanes["a"].state is LaneState.IDLE, "lane a idle")
        assert plc_a.commands == []


# --- 9: graceful stop of the real process ---------------------------------------------------------


@asynccontextmanager
async def edgegate_run(
    config: Path, *, env: Mapping[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m edgegate run -c CONFIG`` as a real process (``env`` added to ours), up once
    its PLC answers (a barrier.state in the log); killed if still running at the end. Output
    in files beside."""
    folder = config.parent
    log_path = folder / "gate.db"
    with (folder / "stdout.log").open("wb") as out, (folder / "stderr.log").open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edgegate",
            "run",
            "-c",
            str(config),
            stdout=out,
            stderr=err,
            cwd=folder,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        try:
            await eventually(
                lambda: _logged(log_path, "barrier.state"), "daemon up", within=15, every=0.1
            )
            # A frame sent before the daemon's driver holds the pty is lost (opening a serial
            # port flushes its input), so also wait for the reader to be open.
            stdout = folder / "stdout.log"
            await eventually(
                lambda: b"reader port open" in stdout.read_bytes(),
                "reader open",
                within=15,
                every=0.1,
            )
            assert proc.returncode is None
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def exit_code(proc: asyncio.subprocess.Process, config: Path) -> int:
    async with asyncio.timeout(15):
        code = await proc.wait()
    stderr = (config.parent / "stderr.log").read_text(errors="replace")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    return code


def check_stopped_by_signal(log_path: Path, pid: int) -> list[Logged[Event]]:
    with LogView(log_path) as log:
        log.verify_ok()
        events = log.all()
    (started,) = [e.event for e in events if isinstance(e.event, DaemonStarted)]
    assert started.pid == pid
    stopped = events[-1].event
    assert isinstance(stopped, DaemonStopped)
    assert stopped.reason is StopReason.SIGNAL
    return events


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_edgegate_run_stops_gracefully_on_signal(sig: signal.Signals, tmp_path: Path) -> None:
    """``edgegate run`` as a real process, stopped by a signal once its devices answer: exit
    code 0, ``daemon.stopped`` (reason signal) is the last event, the chain verifies."""
    config = tmp_path / "gate.toml"
    devices = {"plc": sim_plc(), "cam": sim_reader()}
    config.write_text(
        gate_toml(tmp_path / "gate.db", devices, [lane("l1", "entry", "cam", "plc")]),
        encoding="utf-8",
    )
    async with edgegate_run(config) as proc:
        proc.send_signal(sig)
        assert await exit_code(proc, config) == 0
    check_stopped_by_signal(tmp_path / "gate.db", proc.pid)


async def test_sigterm_mid_cycle_finishes_the_cycle_first(tmp_path: Path) -> None:
    """SIGTERM while a vehicle stands under the open arm: the process carries on until the
    vehicle has passed and the arm is down (never left up unattended), then exits 0 with
    ``daemon.stopped`` last. The PLC and the reader are peers outside the process."""
    log_path = tmp_path / "gate.db"
    async with await EventLog.open(log_path, gate_id="e2e-gate") as event_log:
        allowlist = await AllowListService.open(event_log)
        await allowlist.replace(
            demo_allowlist(datetime.now(UTC).replace(microsecond=0)), source="e2e"
        )
    with PlateReaderSimulator(reader_profile(), directory=tmp_path, name="cam-port") as reader:
        plc = PlcSimulator(plc_profile(), travel_time=TRAVEL_S, host="127.0.0.1")
        await plc.start()
        try:
            config = tmp_path / "gate.toml"
            devices = {"plc": tcp_plc(plc.port), "cam": serial_reader(reader.port)}
            config.write_text(
                gate_toml(log_path, devices, [lane("l1", "entry", "cam", "plc")]),
                encoding="utf-8",
            )
            async with edgegate_run(config) as proc:
                road = Road(plc, reader)
                await eventually(lambda: reader.plugged, "reader open")
                await road.arrive(ALLOWED)
                await wait_position(plc, 1.0, within=10.0)
                await road.set(Loop.SAFETY, True)
                await road.set(Loop.ARMING, False)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)  # time enough for a wrong exit
                assert proc.returncode is None, "stopped with the arm up over a vehicle"
                await road.set(Loop.EXIT, True)
                await road.set(Loop.SAFETY, False)
                await road.set(Loop.EXIT, False)
                assert await exit_code(proc, config) == 0
            assert [c for _, c in plc.commands] == [OPEN, CLOSE]
            assert plc.position == 0.0
        finally:
            await plc.stop()
    types = [e.stored.type for e in check_stopped_by_signal(log_path, proc.pid)]
    assert types.index("vehicle.passed") < types.index("daemon.stopped")
    assert types[-4:-1] == ["barrier.commanded", "barrier.state", "barrier.state"]


def _logged(path: Path, type_name: str) -> bool:
    if not path.exists():
        return False
    try:
        with LogView(path) as log:
            return type_name in log.types()
    except LogError:
        return False  # being created


# --- 10: log-then-act when the log cannot be written ---------------------------------------------


async def fill_log(event_log: EventLog) -> None:
    """The disk is full: SQLite may not grow the file, and the last page has no room left."""
    pages = await event_log.run_in_writer(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await event_log.run_in_writer(
        lambda c: c.execute(f"PRAGMA max_page_count = {int(pages)}").fetchone()
    )
    for _ in range(10_000):  # the smallest events there are, until the file is full
        try:
            await event_log.append(DeviceRecovered(device="", down_ms=0))
        except LogWriteError:
            break
    else:
        raise AssertionError("the log never filled up")
    with pytest.raises(LogWriteError):  # nothing a lane writes fits any more
        await event_log.append(
            LoopChanged(lane="x", loop=Loop.ARMING, occupied=True, source="probe")
        )


async def unfill_log(event_log: EventLog) -> None:
    await event_log.run_in_writer(
        lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone()
    )


async def test_unwritable_log_denies_entries_and_lets_exits_out(tmp_path: Path) -> None:
    """With the log full, an entry lane (on_write_failure entry = deny) never sends the open;
    an exit lane (exit = allow) does. Once the log can be written again, entries resume."""
    config = gate_config(
        tmp_path,
        {
            "plc-in": sim_plc(),
            "cam-in": sim_reader(),
            "plc-out": sim_plc(),
            "cam-out": sim_reader(),
        },
        [lane("in", "entry", "cam-in", "plc-in"), lane("out", "exit", "cam-out", "plc-out")],
    )
    async with RunningGate(config) as g:
        plc_in, plc_out = g.plc("plc-in"), g.plc("plc-out")
        trail_in, trail_out = g.trail("plc-in"), g.trail("plc-out")
        road_in, road_out = g.road("in"), g.road("out")
        await fill_log(g.event_log)
        full_at = g.log.head

        await road_in.arrive(ALLOWED)
        await road_out.arrive(ALLOWED)
        await wait_position(plc_out, 1.0)  # the exit opens
        await road_out.cross()
        await wait_position(plc_out, 0.0)
        assert [c for _, c in trail_out] == [OPEN, CLOSE]
        assert trail_out.head_at(0) == full_at  # nothing could be logged first
        await asyncio.sleep(0.5)  # time enough for a wrong open
        assert trail_in == []  # the entry never opened
        assert writes(plc_in) == []
        assert plc_in.position == 0.0
        # The lane knows the arm stays down: the vehicle is refused, no travel timeout ahead.
        assert g.gate.lanes["in"].state is LaneState.PRESENT
        await road_in.set(Loop.ARMING, False)  # that driver turns around
        await eventually(lambda: g.gate.lanes["in"].state is LaneState.IDLE, "entry lane idle")
        assert g.log.head == full_at  # and indeed nothing reached the log

        await unfill_log(g.event_log)
        resumed = g.log.head
        await assert_entry_cycle(g, road_in, trail_in, lane_id="in", after=resumed)


# --- 11: incident mode and manual opening -------------------------------------------------------


async def test_incident_hold_opens_and_automatic_closing_never_overrides(tmp_path: Path) -> None:
    """Incident hold on an (evacuation) exit lane: the open is logged then sent, the arm stays
    up while vehicles stream out (each recorded, read or not) and far beyond the close delay;
    lifting the hold closes it."""
    config = one_lane_config(tmp_path, "exit")
    async with RunningGate(config) as g:
        plc, road, log, trail = g.plc(), g.road(), g.log, g.trail()
        runner = g.gate.lanes["l1"]
        runner.submit(IncidentHold(True))
        held = await log.wait_for(BarrierCommanded, lane="l1", where=is_open)
        assert held.event.reason == "incident"
        i, _ = await trail.wait(OPEN)  # taken by the PLC after it was logged
        assert trail.of(OPEN) == [(i, trail[i][0])]
        assert trail.head_at(i) >= held.seq
        await wait_position(plc, 1.0)
        assert runner.state is LaneState.HELD_OPEN
        # Evacuation: vehicles stream out, read or not; each is recorded, the arm stays up.
        await road.arrive(ALLOWED)
        await road.cross()
        await road.arrive(None)
        await road.cross()
        await asyncio.sleep(1.0)  # five close delays
        passed = log.of(VehiclePassed, lane="l1")
        assert [p.event.plate for p in passed] == [ALLOWED, ""]
        assert trail.of(CLOSE) == []
        assert log.of(BarrierCommanded, where=is_close) == []
        assert plc.position == 1.0
        assert runner.state is LaneState.HELD_OPEN

        runner.submit(IncidentHold(False))
        closing = await log.wait_for(BarrierCommanded, lane="l1", where=is_close)
        assert closing.event.reason == "released"
        await trail.wait(CLOSE)
        await wait_position(plc, 0.0)
        await eventually(lambda: runner.state is LaneState.IDLE, "lane idle")


def _mode_changed(mode: GateMode, previous: GateMode) -> ModeChanged:
    return ModeChanged(
        mode=mode,
        previous=previous,
        source=ModeSource.CENTRAL,
        operator="central:duty-officer-li",
        reason="chlorine leak at unit 4",
        command_id="cmd-1",
    )


@pytest.mark.parametrize("lifted", [False, True])
async def test_incident_mode_survives_a_restart(tmp_path: Path, lifted: bool) -> None:
    """The log's last mode.changed says incident: the restarted gate holds its evacuation
    lane open again (an evacuation goes on); once lifted, a restart leaves it closed."""
    config = one_lane_config(tmp_path, "exit").model_copy(
        update={"incident": IncidentSettings(evacuation_lanes=("l1",))}
    )
    async with await EventLog.open(config.log_file, gate_id=config.gate.id) as event_log:
        await event_log.append(_mode_changed(GateMode.INCIDENT, GateMode.NORMAL))
        if lifted:
            await event_log.append(_mode_changed(GateMode.NORMAL, GateMode.INCIDENT))
    async with RunningGate(config) as g:
        runner = g.gate.lanes["l1"]
        if lifted:
            await asyncio.sleep(0.5)  # time enough for a wrong hold
            assert g.log.of(BarrierCommanded) == []
            assert g.plc().position == 0.0
            assert g.gate.mode is GateMode.NORMAL
            return
        held = await g.log.wait_for(BarrierCommanded, lane="l1", where=is_open)
        assert held.event.reason == "incident"
        await wait_position(g.plc(), 1.0)
        assert runner.state is LaneState.HELD_OPEN
        assert g.gate.mode is GateMode.INCIDENT


async def test_manual_open_is_held_until_released(tmp_path: Path) -> None:
    """A guard's manual open: manual.action, then barrier.commanded open caused by it, then
    the PLC's open. A refused vehicle driving through is recorded with its refusal, and
    automatic closing never takes the arm down until the guard releases the lane."""
    async with RunningGate(one_lane_config(tmp_path)) as g:
        plc, road, log, trail = g.plc(), g.road(), g.log, g.trail()
        runner = g.gate.lanes["l1"]
        runner.submit(Manual(ManualActionKind.OPEN, operator="guard-7", reason="crane escort"))
        action = await log.wait_for(ManualAction, lane="l1")
        assert action.event.operator == "guard-7"
        opening = await log.wait_for(BarrierCommanded, lane="l1", where=is_open)
        assert opening.event.reason == "manual-open"
        assert opening.event.cause_seq == action.seq
        i, _ = await trail.wait(OPEN)  # taken by the PLC after it was logged
        assert trail.of(OPEN) == [(i, trail[i][0])]
        assert trail.head_at(i) >= opening.seq
        await wait_position(plc, 1.0)
        # A refused vehicle follows through the held arm: recorded, and still no closing.
        await road.arrive(REFUSED)
        await road.cross()
        passed = await log.wait_for(VehiclePassed, lane="l1")
        (refusal,) = log.of(AccessDecided, lane="l1")
        assert refusal.event.verdict == "deny"
        assert passed.event.plate == REFUSED
        assert passed.event.decision_seq == refusal.seq
        assert passed.event.unauthorised  # refused, through a held lane: nobody admitted it
        await asyncio.sleep(1.0)  # five close delays: time enough for a wrong close
        assert trail.of(CLOSE) == []
        assert plc.position == 1.0
        assert runner.state is LaneState.HELD_OPEN

        runner.submit(Manual(ManualActionKind.RELEASE, operator="guard-7", reason="done"))
        closing = await log.wait_for(BarrierCommanded, lane="l1", where=is_close)
        assert closing.event.reason == "released"
        await wait_position(plc, 0.0)
        assert [c for _, c in trail] == [OPEN, CLOSE]


async def test_a_plc_gone_and_back_during_a_central_hold(tmp_path: Path) -> None:
    """Central holds the lane open; a vehicle stands on the exit loop when the PLC (a real
    pymodbus server) goes away. It comes back rebooted: arm down, loops clear. No pass is
    made up from the loop seen clear afterwards, the hold is re-applied (logged, then sent),
    and once central releases the lane an allowed vehicle is admitted as usual."""
    with PlateReaderSimulator(reader_profile(), directory=tmp_path, name="cam-port") as reader:
        first = PlcSimulator(plc_profile(), travel_time=TRAVEL_S, host="127.0.0.1")
        await first.start()
        port = first.port
        second = PlcSimulator(plc_profile(), travel_time=TRAVEL_S, host="127.0.0.1", port=port)
        try:
            config = gate_config(
                tmp_path,
                {"plc": tcp_plc(port), "cam": serial_reader(reader.port)},
                [lane("l1", "entry", "cam", "plc")],
            )
            async with RunningGate(config) as g:
                runner, log = g.gate.lanes["l1"], g.log
                await eventually(lambda: runner.state is LaneState.IDLE, "lane idle")
                control = g.gate.control
                assert control is not None
                control.open_lane("l1", "central:duty-officer", "crane escort")
                await wait_position(first, 1.0)
                road = Road(first, reader)
                await road.arrive(None)
                await road.set(Loop.SAFETY, True)
                await road.set(Loop.ARMING, False)
                await road.set(Loop.EXIT, True)
                await road.set(Loop.SAFETY, False)
                await eventually(
                    lambda: bool(log.of(LoopChanged, where=lambda e: e.loop is Loop.EXIT)),
                    "the exit loop seen occupied",
                )

                await first.stop()  # the PLC goes away...
                fault = await log.wait_for(DeviceFault, where=lambda e: e.device == "plc")
                await second.start()  # ...and comes back rebooted: arm down, loops clear
                trail = g.trail(second)
                recovered = await log.wait_for(DeviceRecovered, after=fault.seq, within=4.0)
                reopen = await log.wait_for(
                    BarrierCommanded, after=recovered.seq, where=is_open, within=4.0
                )
                ((i, _),) = await eventually_one(trail, OPEN)
                assert trail.head_at(i) >= reopen.seq
                await wait_position(second, 1.0)
                assert runner.state is LaneState.HELD_OPEN
                assert log.of(VehiclePassed) == []  # nobody was seen passing

                control.release_lane("l1", "central:duty-officer", "escort done")
                closing = await log.wait_for(BarrierCommanded, after=reopen.seq, where=is_close)
                assert closing.event.reason == "released"
                await wait_position(second, 0.0)
                await eventually(lambda: runner.state is LaneState.IDLE, "lane idle")
                await assert_entry_cycle(g, Road(second, reader), trail, after=g.log.head)
                assert log.of(VehiclePassed, where=lambda e: e.decision_seq is None) == []
        finally:
            await first.stop()
            await second.stop()


async def eventually_one(trail: CommandTrail, command: BarrierCommand) -> list[tuple[int, float]]:
    await eventually(lambda: bool(trail.of(command)), f"the PLC took {command}")
    return trail.of(command)


async def test_a_hold_survives_a_restart_until_released(tmp_path: Path) -> None:
    """A lane held open (here by central) is held again by a restarted daemon, logged as a
    manual action naming who held it; once released, a restart leaves it closed."""
    config = one_lane_config(tmp_path)
    async with RunningGate(config) as g:
        assert g.gate.control is not None
        g.gate.control.open_lane("l1", "central:duty-officer", "crane escort")
        held = await g.log.wait_for(ManualAction, lane="l1")
        await wait_position(g.plc(), 1.0)
    async with RunningGate(config) as g:
        started = g.log.of(DaemonStarted)[-1]
        restored = await g.log.wait_for(ManualAction, lane="l1", after=started.seq)
        assert restored.event.action is ManualActionKind.OPEN
        assert restored.event.operator == "central:duty-officer"
        assert f"held since seq {held.seq}" in restored.event.reason
        opening = await g.log.wait_for(BarrierCommanded, after=restored.seq, where=is_open)
        assert opening.event.cause_seq == restored.seq
        await wait_position(g.plc(), 1.0)
        runner = g.gate.lanes["l1"]
        assert runner.state is LaneState.HELD_OPEN
        assert g.gate.control is not None
        g.gate.control.release_lane("l1", "central:duty-officer", "done")
        await g.log.wait_for(BarrierCommanded, after=opening.seq, where=is_close)
        await wait_position(g.plc(), 0.0)
        await eventually(lambda: runner.state is LaneState.IDLE, "lane idle")
    async with RunningGate(config) as g:
        started = g.log.of(DaemonStarted)[-1]
        await g.log.wait_for(BarrierStateChanged, after=started.seq)  # the PLC was read
        await eventually(lambda: g.gate.lanes["l1"].state is LaneState.IDLE, "lane idle")
        assert g.log.of(ManualAction, after=started.seq) == []
        assert g.log.of(BarrierCommanded, after=started.seq) == []
