"""A barrier PLC simulator: a real pymodbus server implementing a ``barrier-plc`` profile.

The arm moves with a travel time when the open/close coil is set, the limit switches follow
(both open while it moves), loops, the fault input and the profile's optional inputs (the
incident alarm, the guard's buttons: :meth:`PlcSimulator.set_input`) are set by hand, and
faults can be injected (:class:`FailMode`). It speaks Modbus TCP on a local port or Modbus
RTU on a serial port path; :class:`PtyLink` provides a pair of connected pseudo-terminals for
the latter.

There is deliberately NO safety interlock here: the software must never command CLOSE on an
occupied safety loop, and :attr:`PlcSimulator.commands` records every command the PLC took,
with its time, so tests can prove it did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import socket
import time
import tty
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.base import ModbusBaseServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgegate.core.events import BarrierCommand, Loop
from edgegate.devices.plc_profile import OPTIONAL_INPUTS, BarrierPlcProfile
from edgegate.observability import get_logger

__all__ = ["FailMode", "Frame", "PlcSimulator", "PtyLink"]

_FC_READ_COILS = 0x01
_FC_WRITES = (0x05, 0x0F)
_STUCK_MARGIN = 0.1  # a stuck arm stops this far (as a fraction of travel) short of a limit


class FailMode(enum.StrEnum):
    NONE = "none"
    SILENT = "silent"  # takes frames, never answers, acts on nothing
    REFUSE = "refuse"  # not listening: TCP connects are refused, RTU frames go unanswered
    EXCEPTION = "exception"  # answers every request with the configured exception code
    STUCK = "stuck"  # the arm moves but never reaches a limit switch
    WRITES_IGNORED = "writes-ignored"  # acknowledges writes, keeps its coils (PLC in STOP)
    WRITES_REFUSED = "writes-refused"  # answers writes with the exception code, reads normally


@dataclass(frozen=True, slots=True)
class Frame:
    """A request the simulator received or a response it sent (monotonic time)."""

    time: float
    direction: Literal["request", "response"]
    unit: int
    function: int  # | 0x80 for an exception response
    address: int  # requests: the first coil/input addressed
    count: int  # requests: how many (1 for FC05)


class _Tracing(TypedDict):
    """The pymodbus server hooks that see every packet and PDU."""

    trace_packet: Callable[[bool, bytes], bytes]
    trace_pdu: Callable[[bool, ModbusPDU], ModbusPDU]


class PlcSimulator:
    """A simulated barrier PLC speaking a profile's register map.

    TCP by default (``host``/``port``; port 0 picks a free one, see :attr:`port`), or RTU on
    ``serial_port``. Coils are levels as the profile describes: stop wins over open, open
    over close (opening is the safe way), all clear holds the arm where it is.
    """

    def __init__(
        self,
        profile: BarrierPlcProfile,
        *,
        unit_id: int | None = None,
        travel_time: float = 3.0,
        host: str = "127.0.0.1",
        port: int = 0,
        serial_port: str | None = None,
        baudrate: int = 9600,
    ) -> None:
        if travel_time <= 0:
            raise ValueError("travel_time must be > 0")
        self.profile = profile
        self.unit_id = unit_id if unit_id is not None else profile.unit_id
        self.travel_time = travel_time
        self._host = host
        #: The TCP port (the bound one once started with port 0).
        self.port = port
        self._serial_port = serial_port
        self._baudrate = baudrate
        self._server: ModbusBaseServer | None = None
        self._running = False  # wanted running (REFUSE keeps the server down meanwhile)
        #: The fault injected (see :meth:`set_fail_mode`).
        self.fail_mode = FailMode.NONE
        self._exception_code = ExcCodes.DEVICE_FAILURE
        self._position = 0.0  # 0 = down, 1 = up
        self._motion = 0  # +1 rising, -1 falling
        self._moved_at = time.monotonic()
        self._coils = dict.fromkeys(BarrierCommand, False)
        self._fault = False
        self._loops = dict.fromkeys(Loop, False)
        self._optional = dict.fromkeys(OPTIONAL_INPUTS, False)
        #: Every command the PLC took (``(monotonic time, command)``), in order.
        self.commands: list[tuple[float, BarrierCommand]] = []
        #: Every request received and response sent, in order.
        self.frames: list[Frame] = []
        self._log = get_logger("sim.plc", unit=self.unit_id)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving (unless in REFUSE mode, which keeps it down until lifted)."""
        self._running = True
        if self.fail_mode is not FailMode.REFUSE:
            await self._listen()

    async def stop(self) -> None:
        """Stop serving and drop every connection."""
        self._running = False
        await self._shutdown()

    async def restart(self) -> None:
        """Drop every connection and listen again (the comms module rebooting)."""
        await self.stop()
        await self.start()

    async def set_fail_mode(
        self, mode: FailMode, *, exception_code: int = ExcCodes.DEVICE_FAILURE
    ) -> None:
        """Inject a fault (or lift it with ``FailMode.NONE``)."""
        self._advance()  # the arm's motion so far happened under the old mode
        self._exception_code = ExcCodes(exception_code)
        previous, self.fail_mode = self.fail_mode, mode
        self._log.info("fail mode", mode=mode.value)
        if mode is FailMode.REFUSE:
            await self._shutdown()
        elif previous is FailMode.REFUSE and self._running:
            await self._listen()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        device = self._device()
        # Either transport: silent mode and ``frames`` work on the wire's packets and PDUs.
        tracing = _Tracing(trace_packet=self._trace_packet, trace_pdu=self._trace_pdu)
        server: ModbusBaseServer
        if self._serial_port is None:
            server = ModbusTcpServer(device, address=(self._host, self.port), **tracing)
        else:
            server = ModbusSerialServer(
                device,
                framer=FramerType.RTU,
                port=self._serial_port,
                baudrate=self._baudrate,
                # Other units on the same RS-485 line are not our business: stay quiet.
                ignore_missing_devices=True,
                **tracing,
            )
        await server.serve_forever(background=True)
        if self._serial_port is None and self.port == 0:
            sockets: Sequence[socket.socket] = getattr(server.transport, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
        self._server = server

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it bare
            # Let requests already handed to the datastore finish, so none outlives us.
            for _ in range(3):
                await asyncio.sleep(0)

    # --- the physical world ---------------------------------------------------------------

    def set_loop(self, loop: Loop | str, occupied: bool) -> None:
        """Occupy or free a loop (``"arming"``, ``"safety"``, ``"exit"``)."""
        self._loops[Loop(loop)] = occupied

    def set_fault_input(self, fault: bool) -> None:
        """Set the PLC's fault input (motor overload, arm knocked off…)."""
        self._fault = fault

    def set_input(self, name: str, active: bool) -> None:
        """Make or break one of the profile's optional inputs (``"incident_alarm"``, a button
        such as ``"confirm_button"``), as the world has it: a normally-closed contact is
        inverted on the wire by the profile. ``ValueError`` if the profile does not wire it."""
        if name not in self._optional:
            known = ", ".join(OPTIONAL_INPUTS)
            raise ValueError(f"unknown input {name!r}: expected one of {known}")
        if getattr(self.profile.inputs, name) is None:
            raise ValueError(f"the profile wires no input {name!r}")
        self._optional[name] = active

    @property
    def position(self) -> float:
        """Arm position: 0.0 down … 1.0 up."""
        self._advance()
        return self._position

    def inputs(self) -> dict[str, bool]:
        """The inputs as the world has them (before any NC inversion on the wire)."""
        self._advance()
        return {
            "up_limit": self._position >= 1.0,
            "down_limit": self._position <= 0.0,
            "fault": self._fault,
            "arming_loop": self._loops[Loop.ARMING],
            "safety_loop": self._loops[Loop.SAFETY],
            "exit_loop": self._loops[Loop.EXIT],
            **self._optional,
        }

    def coils(self) -> dict[BarrierCommand, bool]:
        return dict(self._coils)

    def _advance(self) -> None:
        now = time.monotonic()
        if self._motion:
            stuck = self.fail_mode is FailMode.STUCK
            low, high = (_STUCK_MARGIN, 1.0 - _STUCK_MARGIN) if stuck else (0.0, 1.0)
            step = self._motion * (now - self._moved_at) / self.travel_time
            if self._motion > 0:
                self._position = max(self._position, min(high, self._position + step))
            else:
                self._position = min(self._position, max(low, self._position + step))
            # A limit switch cuts the motor; a stuck arm keeps straining against the fault.
            if not stuck and self._position in (0.0, 1.0):
                self._motion = 0
        self._moved_at = now

    def _apply_coils(self) -> None:
        self._advance()
        if self._coils[BarrierCommand.STOP]:
            self._motion = 0
        elif self._coils[BarrierCommand.OPEN]:
            self._motion = 0 if self._position >= 1.0 else 1
        elif self._coils[BarrierCommand.CLOSE]:
            self._motion = 0 if self._position <= 0.0 else -1
        else:
            self._motion = 0

    # --- the register map -----------------------------------------------------------------

    def _device(self) -> SimDevice:
        p = self.profile
        coils = [SimData(p.coil_start, count=p.coil_count, values=False, datatype=DataType.BITS)]
        inputs = [SimData(p.input_start, count=p.input_count, values=False, datatype=DataType.BITS)]
        # No registers: any register request is answered with ILLEGAL ADDRESS.
        registers = [SimData(0, datatype=DataType.INVALID)]
        return SimDevice(
            id=self.unit_id,
            simdata=(coils, inputs, registers, list(registers)),
            action=self._action,
        )

    async def _action(
        self,
        function: int,
        start_register: int,
        address: int,
        _count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this on every access; the registers are only a scratch copy."""
        mode = self.fail_mode
        if mode is FailMode.EXCEPTION:
            return self._exception_code
        if mode is FailMode.SILENT:
            return None  # the answer is dropped in _trace_packet
        if function in _FC_WRITES and mode is FailMode.WRITES_REFUSED:
            return self._exception_code
        if function in _FC_WRITES and values is not None:
            if mode is not FailMode.WRITES_IGNORED:
                self._write(address, [bool(v) for v in values])
            return None
        if function == _FC_READ_COILS or function in _FC_WRITES:
            by_command = {self.profile.coils.of(c): v for c, v in self._coils.items()}
            self._fill(registers, start_register, by_command)
        else:
            self._fill(registers, start_register, self.profile.encode_inputs(self.inputs()))
        return None

    def _write(self, address: int, values: Sequence[bool]) -> None:
        now = time.monotonic()
        for offset, value in enumerate(values):
            for command in BarrierCommand:
                if self.profile.coils.of(command) == address + offset:
                    self._coils[command] = value
                    if value:
                        self.commands.append((now, command))
        self._apply_coils()

    @staticmethod
    def _fill(registers: list[int], start_register: int, bits: Mapping[int, bool]) -> None:
        for address, value in bits.items():
            index, mask = address // 16 - start_register, 1 << (address % 16)
            registers[index] = registers[index] | mask if value else registers[index] & ~mask

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and self.fail_mode is FailMode.SILENT:
            return b""
        return data

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not (sending and self.fail_mode is FailMode.SILENT):
            direction: Literal["request", "response"] = "response" if sending else "request"
            count = pdu.count or len(pdu.bits)
            self.frames.append(
                Frame(
                    time.monotonic(), direction, pdu.dev_id, pdu.function_code, pdu.address, count
                )
            )
        return pdu


class PtyLink:
    """Two pseudo-terminals wired like a null-modem cable.

    What is written to one end's path is read from the other's: a Modbus RTU server on
    ``paths[0]`` and a client on ``paths[1]`` talk through real tty devices, byte for byte.
    """

    def __init__(self) -> None:
        self._fds: list[tuple[int, int]] = []  # (master, slave) per end
        self._loop: asyncio.AbstractEventLoop | None = None
        self.paths: tuple[str, str] = ("", "")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            # The slave stays open here so the master never sees a hang-up (EIO) while a
            # port user closes and reopens its end.
            self._fds.append((master, slave))
        (a, a_slave), (b, b_slave) = self._fds
        self.paths = (os.ttyname(a_slave), os.ttyname(b_slave))
        self._loop.add_reader(a, self._relay, a, b)
        self._loop.add_reader(b, self._relay, b, a)

    def _relay(self, source: int, target: int) -> None:
        try:
            data = os.read(source, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO: nobody on that end right now
        # When the other end is not draining, bytes are lost, as on a real line.
        with contextlib.suppress(OSError):
            os.write(target, data)

    async def stop(self) -> None:
        if self._loop is not None:
            for master, _ in self._fds:
                self._loop.remove_reader(master)
        for master, slave in self._fds:
            os.close(master)
            os.close(slave)
        self._fds = []
        self._loop = None
