"""What a device driver needs to reach its device, in the drivers' own small types.

The drivers never read the gate's configuration: the daemon converts its configuration
models into these (``edgegate.daemon.drivers``), and the simulators give them for the
devices they stand in for (``edgegate.sim.devices``). Times are in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict


@dataclass(frozen=True, slots=True)
class TcpLine:
    """A Modbus TCP endpoint."""

    host: str
    port: int = 502

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SerialLine:
    """A serial port and its line settings (Modbus RTU, plate readers)."""

    port: str
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    def __str__(self) -> str:
        return f"rtu:{self.port}@{self.baudrate}/{self.bytesize}{self.parity}{self.stopbits}"

    def framing(self) -> SerialFraming:
        """The line settings as pyserial's keyword arguments (pymodbus takes the same)."""
        return SerialFraming(
            baudrate=self.baudrate,
            bytesize=self.bytesize,
            parity=self.parity,
            stopbits=self.stopbits,
        )


class SerialFraming(TypedDict):
    baudrate: int
    bytesize: int
    parity: str
    stopbits: int


@dataclass(frozen=True, slots=True)
class ModbusSettings:
    """A barrier PLC's line and timing.

    ``timeout`` bounds each request and connect; ``reconnect_max`` caps the backoff between
    connection attempts (never above ``modbus.MAX_BACKOFF_S``); ``inter_frame_gap`` is the
    RTU silence between frames. ``unit_id`` and ``poll_hz`` are None where the device's
    profile decides."""

    line: TcpLine | SerialLine
    timeout: float = 0.5
    reconnect_max: float = 5.0
    inter_frame_gap: float = 0.0
    unit_id: int | None = None
    poll_hz: float | None = None
