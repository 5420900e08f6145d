"""The simulated devices of a gate's configuration, for the daemon to drive like real ones.

A ``simulated-plc`` gets a PLC simulator serving Modbus TCP on 127.0.0.1 (a free port), a
``simulated-plate-reader`` a reader simulator on a pty. The daemon drives them through the
real drivers, with the settings :meth:`SimulatedDevices.plc` and
:meth:`SimulatedDevices.reader` give.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from edgegate.config import Device, SimulatedPlateReaderDevice, SimulatedPlcDevice
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.profiles import load_profile, load_reader_profile
from edgegate.devices.reader_profile import ReaderProfile
from edgegate.devices.settings import ModbusSettings, SerialLine, TcpLine

if TYPE_CHECKING:
    # Imported by start() only when the configuration has simulated devices: a real gate
    # does not carry pymodbus's server and the simulators in memory (about 12 MB).
    from edgegate.sim.plate_reader import PlateReaderSimulator
    from edgegate.sim.plc import PlcSimulator

# The simulator answers at once: a short timeout and reconnect cap keep a restart quick.
_PLC_TIMEOUT_S = 0.3
_PLC_RECONNECT_MAX_S = 1.0


class SimulatedDevices:
    """The running simulators, by device name."""

    def __init__(self) -> None:
        self.plcs: dict[str, PlcSimulator] = {}
        self.readers: dict[str, PlateReaderSimulator] = {}
        self._reader_profiles: dict[str, ReaderProfile] = {}

    async def start(self, devices: Mapping[str, Device]) -> None:
        """Start a simulator for each simulated device among ``devices`` (other devices are
        left alone). Those started before a failure stay in :attr:`plcs` and
        :attr:`readers`, for :meth:`stop`."""
        for name, device in devices.items():
            if isinstance(device, SimulatedPlcDevice):
                from edgegate.sim.plc import PlcSimulator

                profile = load_profile(device.profile, family=BarrierPlcProfile)
                sim = PlcSimulator(profile, travel_time=device.travel_time.total_seconds())
                await sim.start()
                self.plcs[name] = sim
            elif isinstance(device, SimulatedPlateReaderDevice):
                from edgegate.sim.plate_reader import PlateReaderSimulator

                reader_profile = load_reader_profile(device.profile)
                self.readers[name] = PlateReaderSimulator(reader_profile, name=name)
                self._reader_profiles[name] = reader_profile

    async def stop(self) -> None:
        """Stop every simulator; never raises."""
        for sim in self.plcs.values():
            with contextlib.suppress(Exception):
                await sim.stop()
        for reader in self.readers.values():
            with contextlib.suppress(Exception):
                reader.close()

    def plc(self, name: str) -> tuple[ModbusSettings, BarrierPlcProfile]:
        """The settings and profile by which the Modbus driver reaches the PLC ``name``."""
        sim = self.plcs[name]
        settings = ModbusSettings(
            TcpLine("127.0.0.1", sim.port),
            timeout=_PLC_TIMEOUT_S,
            reconnect_max=_PLC_RECONNECT_MAX_S,
            unit_id=sim.unit_id,
        )
        return settings, sim.profile

    def reader(self, name: str) -> tuple[SerialLine, ReaderProfile]:
        """The line and profile by which the serial driver reads the reader ``name``."""
        return SerialLine(self.readers[name].port), self._reader_profiles[name]
