"""``edgegate simulate``: the simulators of a gate's configuration, alone, for a real daemon.

Each ``modbus-tcp`` PLC of the configuration gets a PLC simulator listening where the daemon
will connect (loopback addresses only); each ``serial-plate-reader`` gets a reader simulator
whose pty is linked at the configured port path. Then the scenario is played.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from pathlib import Path

from edgegate.config import GateConfig, ModbusTcpDevice, SerialPlateReaderDevice
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.profiles import load_profile
from edgegate.devices.reader_profile import BinaryFrameReaderProfile, TextLineReaderProfile
from edgegate.hosts import is_loopback
from edgegate.observability import get_logger
from edgegate.sim.plate_reader import PlateReaderSimulator
from edgegate.sim.plc import PlcSimulator
from edgegate.sim.scenario import Scenario, SimLane, play

log = get_logger("sim")


class SimulationError(ValueError):
    """The configuration cannot be simulated (names the lane or device)."""


async def simulate(
    config: GateConfig, scenario: Scenario, *, speed: float = 1.0, wait_for_daemon: float = 10.0
) -> list[str]:
    """Start the simulators, wait for the daemon's drivers, play ``scenario``, stop."""
    plcs: dict[str, PlcSimulator] = {}
    readers: dict[str, PlateReaderSimulator] = {}
    lanes: dict[str, SimLane] = {}
    try:
        for lane in config.lanes:
            plc_device = config.device(lane.barrier)
            reader_device = config.device(lane.plate_reader)
            if not isinstance(plc_device, ModbusTcpDevice) or not is_loopback(plc_device.host):
                raise SimulationError(
                    f"lane {lane.id}: barrier {lane.barrier!r} must be a modbus-tcp device on a "
                    "loopback address to be simulated"
                )
            if not isinstance(reader_device, SerialPlateReaderDevice):
                raise SimulationError(
                    f"lane {lane.id}: plate reader {lane.plate_reader!r} must be a "
                    "serial-plate-reader to be simulated"
                )
            profile = load_profile(plc_device.profile, family=BarrierPlcProfile)
            plc = PlcSimulator(
                profile,
                unit_id=plc_device.unit_id,
                host=plc_device.host,
                port=plc_device.port,
                travel_time=1.0,
            )
            try:
                await plc.start()
            except (OSError, RuntimeError) as exc:  # pymodbus: RuntimeError, bind: OSError
                raise SimulationError(
                    f"lane {lane.id}: cannot simulate barrier {lane.barrier!r} on "
                    f"{plc_device.host}:{plc_device.port}: {_listen_problem(plc_device, exc)}"
                ) from None
            plcs[lane.barrier] = plc
            reader_profile = load_profile(reader_device.profile)
            if not isinstance(reader_profile, TextLineReaderProfile | BinaryFrameReaderProfile):
                raise SimulationError(f"{reader_device.profile!r} is not a plate-reader profile")
            port = Path(reader_device.port)
            try:
                port.parent.mkdir(parents=True, exist_ok=True)
                readers[lane.plate_reader] = PlateReaderSimulator(
                    reader_profile, directory=port.parent, name=port.name
                )
            except OSError as exc:
                raise SimulationError(
                    f"lane {lane.id}: cannot link plate reader {lane.plate_reader!r} at {port}: "
                    f"{exc.strerror or exc}"
                ) from None
            lanes[lane.id] = SimLane(plc, readers[lane.plate_reader])
            log.info(
                "simulating_lane",
                lane=lane.id,
                plc=f"{plc_device.host}:{plc.port}",
                reader=str(port),
            )
        # The daemon's drivers need a moment to connect; frames sent before are lost.
        await _wait_for_clients(plcs, wait_for_daemon)
        return await play(scenario, lanes, speed=speed)
    finally:
        for sim in plcs.values():
            with contextlib.suppress(Exception):
                await sim.stop()
        for reader in readers.values():
            reader.close()


def _listen_problem(device: ModbusTcpDevice, exc: BaseException) -> str:
    """Why a PLC simulator could not listen: pymodbus only says it could not, so try the
    address once more to name the cause."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in device.host else socket.AF_INET) as probe:
            probe.bind((device.host, device.port))
    except OSError as bind_error:
        if bind_error.errno == errno.EADDRINUSE:
            return "the port is already in use (another simulator, or a PLC, listening there?)"
        return bind_error.strerror or str(bind_error)
    return str(exc)


async def _wait_for_clients(plcs: dict[str, PlcSimulator], within: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while loop.time() < end:
        if all(sim.frames for sim in plcs.values()):
            await asyncio.sleep(0.5)
            return
        await asyncio.sleep(0.1)
    log.warning("no_daemon_polling", waited_s=within)
