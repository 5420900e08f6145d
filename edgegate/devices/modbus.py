"""Modbus driver: one owner per bus, and the barrier PLC on it.

:class:`ModbusBus` owns one line (a Modbus TCP connection or an RTU serial port) and every
request on it: an :class:`asyncio.Lock` serialises them (a :meth:`ModbusBus.session` holds
it across a sequence such as write + read-back), RTU frames are kept at least the
inter-frame gap apart, and a lost line is reopened with capped, jittered exponential backoff
done here (pymodbus's own reconnect is switched off). pymodbus errors become the typed
:mod:`edgegate.devices.base` errors.

:class:`BarrierPlc` drives one barrier PLC on a bus from its :class:`BarrierPlcProfile`.
"""

from __future__ import annotations

import asyncio
import math
import random
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypedDict

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from edgegate.backoff import backoff_delay
from edgegate.core.events import BarrierCommand, DeviceFault, DeviceRecovered
from edgegate.devices.base import (
    CommandNotConfirmed,
    DeviceError,
    DeviceSignal,
    DeviceTimeout,
    DeviceUnavailable,
    ModbusExceptionResponse,
    PlcInputs,
    Sink,
)
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.settings import ModbusSettings, SerialLine, TcpLine
from edgegate.observability import get_logger

__all__ = [
    "MAX_BACKOFF_S",
    "BarrierPlc",
    "BusSession",
    "ModbusBus",
    "SafetyLoopOccupied",
    "SerialLine",
    "TcpLine",
]

#: No reconnect waits longer than this, whatever is configured (docs/design.md §6: recover
#: by itself).
MAX_BACKOFF_S = 5.0

FC_READ_COILS = 0x01
FC_READ_DISCRETE_INPUTS = 0x02
FC_WRITE_SINGLE_COIL = 0x05
FC_WRITE_MULTIPLE_COILS = 0x0F


class SafetyLoopOccupied(DeviceError):
    """CLOSE refused: the PLC reports the safety loop under the arm occupied."""

    code = "safety-loop-occupied"


def _describe_error(exc: BaseException) -> str:
    """One line for a fault message: the error's type and words (termios.error's arguments
    are a tuple, which reads badly as it is)."""
    words = " ".join(str(a) for a in exc.args) if exc.args else ""
    return f"{type(exc).__name__}: {words}" if words else type(exc).__name__


def _honour_cancellation() -> None:
    """Re-raise a cancellation that Python 3.11's ``asyncio.wait_for`` (used inside
    pymodbus) dropped because the answer arrived in the same loop iteration; without this a
    cancelled poller could run on forever and hang the daemon's shutdown."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _ClientOptions(TypedDict):
    """What pymodbus's TCP and serial clients are both given."""

    timeout: float
    retries: int
    reconnect_delay: float
    reconnect_delay_max: float


class ModbusBus:
    """The single owner of one Modbus line; every request goes through a session.

    ``timeout`` bounds each request (and each connect), ``reconnect_max`` caps the backoff
    between connection attempts (never above :data:`MAX_BACKOFF_S`), ``inter_frame_gap`` is
    the RTU silence kept between the end of one frame and the next request. ``rng`` and
    ``clock`` (monotonic seconds) are for tests.
    """

    def __init__(
        self,
        line: TcpLine | SerialLine,
        *,
        timeout: float = 0.5,
        reconnect_max: float = MAX_BACKOFF_S,
        inter_frame_gap: float = 0.0,
        backoff_initial: float = 0.1,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0 or reconnect_max <= 0 or inter_frame_gap < 0 or backoff_initial <= 0:
            raise ValueError("timeout, reconnect_max, backoff_initial > 0; inter_frame_gap >= 0")
        self.line = line
        self.timeout = timeout
        self.reconnect_max = min(reconnect_max, MAX_BACKOFF_S)
        self.inter_frame_gap = inter_frame_gap
        self.backoff_initial = min(backoff_initial, self.reconnect_max)
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._lock = asyncio.Lock()
        self._client: ModbusBaseClient | None = None
        self._failures = 0  # consecutive failed connects / unanswered requests
        self._next_attempt = 0.0  # monotonic time before which no connect is tried
        self._last_error = ""
        self._frame_end = 0.0  # monotonic end of the last frame exchange
        self._log = get_logger("modbus", bus=str(line))

    @classmethod
    def for_settings(cls, settings: ModbusSettings) -> ModbusBus:
        """A bus with the line, timeout, backoff cap and RTU gap of ``settings``."""
        return cls(
            settings.line,
            timeout=settings.timeout,
            reconnect_max=settings.reconnect_max,
            inter_frame_gap=settings.inter_frame_gap,
        )

    @property
    def connected(self) -> bool:
        """The line is open (a TCP connection or the serial port); says nothing of answers."""
        return self._client is not None and self._client.connected

    def retry_in(self) -> float:
        """Seconds until the next connection attempt is allowed (0 when connected)."""
        if self.connected:
            return 0.0
        return max(0.0, self._next_attempt - self._clock())

    @asynccontextmanager
    async def session(self, device: str) -> AsyncIterator[BusSession]:
        """Exclusive use of the bus; errors raised inside name ``device``."""
        async with self._lock:
            session = BusSession(self, device)
            try:
                yield session
            finally:
                session._closed = True

    async def aclose(self) -> None:
        """Close the line; a later request reopens it."""
        async with self._lock:
            self._drop()

    # --- internals, called with the lock held -------------------------------------------------

    def _new_client(self) -> ModbusBaseClient:
        # reconnect_delay=0 turns pymodbus's reconnect task off; retries=0 so that a silent
        # device is noticed after one timeout, not four.
        options = _ClientOptions(
            timeout=self.timeout, retries=0, reconnect_delay=0, reconnect_delay_max=0
        )
        line = self.line
        if isinstance(line, TcpLine):
            return AsyncModbusTcpClient(line.host, port=line.port, **options)
        return AsyncModbusSerialClient(
            line.port, framer=FramerType.RTU, **line.framing(), **options
        )

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _failed(self, reason: str) -> None:
        """A connect or request failed: close the line and back off before reopening it."""
        self._drop()
        self._failures += 1
        delay = backoff_delay(
            self._failures - 1, self.backoff_initial, self.reconnect_max, self._rng
        )
        self._next_attempt = self._clock() + delay
        if self._failures == 1 or reason != self._last_error:
            self._log.warning("modbus line failed", error=reason, retry_in_s=round(delay, 3))
        self._last_error = reason

    def _answered(self) -> None:
        if self._failures:
            self._log.info("modbus line answering again", after_failures=self._failures)
        self._failures = 0
        self._next_attempt = 0.0
        self._last_error = ""

    async def _client_for(self, device: str) -> ModbusBaseClient:
        client = self._client
        if client is not None and client.connected:
            return client
        # A line the peer closed is reopened at once; only a failed attempt backs off.
        self._drop()
        wait = self._next_attempt - self._clock()
        if wait > 0:
            raise DeviceUnavailable(
                device, f"{self.line}: not connected ({self._last_error}); retry in {wait:.2f}s"
            )
        client = self._new_client()
        try:
            ok = await client.connect()
        except asyncio.CancelledError:
            client.close()
            raise
        except Exception as exc:
            # Opening can fail in ways pymodbus does not catch, e.g. termios.error (not an
            # OSError) when a USB adapter refuses the configured parity: still an outage of
            # this device, with the half-opened port closed and the same backoff.
            client.close()
            reason = f"cannot open {self.line}: {_describe_error(exc)}"
            self._failed(reason)
            raise DeviceUnavailable(device, reason) from None
        if not ok or not client.connected:
            client.close()
            reason = f"cannot connect to {self.line}"
            self._failed(reason)
            raise DeviceUnavailable(device, reason)
        if self._failures == 0:
            self._log.info("modbus line open")
        else:  # reopened during an outage: "answering again" tells when it is over
            self._log.debug("modbus line reopened", failures=self._failures)
        self._client = client
        _honour_cancellation()
        return client

    async def _request(
        self,
        device: str,
        function: int,
        send: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        client = await self._client_for(device)
        gap = self._frame_end + self.inter_frame_gap - self._clock()
        if gap > 0:
            await asyncio.sleep(gap)
        try:
            response = await send(client)
        except ConnectionException as exc:
            self._failed(f"connection lost: {exc}")
            raise DeviceUnavailable(device, f"{self.line}: connection lost") from None
        except ModbusIOException:
            # pymodbus reports "no (valid) answer within the timeout" this way.
            self._failed("no answer")
            raise DeviceTimeout(
                device, f"no answer to function 0x{function:02x} within {self.timeout:g}s"
            ) from None
        except ModbusException as exc:
            self._failed(str(exc))
            raise DeviceError(device, f"{self.line}: {exc}") from None
        except (OSError, termios.error) as exc:  # the line failed under pymodbus's feet
            self._failed(_describe_error(exc))
            raise DeviceUnavailable(device, f"{self.line}: {_describe_error(exc)}") from None
        except asyncio.CancelledError:
            # An answer may still be on its way; a fresh line cannot mistake it for the
            # answer to the next request (RTU frames carry no transaction id).
            self._drop()
            raise
        finally:
            self._frame_end = self._clock()
        _honour_cancellation()
        self._answered()
        if response.isError():
            raise ModbusExceptionResponse(device, function, response.exception_code)
        return response


class BusSession:
    """Requests on a bus while its lock is held (see :meth:`ModbusBus.session`)."""

    def __init__(self, bus: ModbusBus, device: str) -> None:
        self._bus = bus
        self._device = device
        self._closed = False

    async def _do(
        self, function: int, send: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        if self._closed:
            raise RuntimeError("bus session used after its block ended")
        return await self._bus._request(self._device, function, send)

    async def read_discrete_inputs(self, unit: int, address: int, count: int) -> list[bool]:
        """FC02: ``count`` discrete inputs from ``address``."""
        response = await self._do(
            FC_READ_DISCRETE_INPUTS,
            lambda c: c.read_discrete_inputs(address, count=count, device_id=unit),
        )
        return self._bits(FC_READ_DISCRETE_INPUTS, response, count)

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        """FC01: ``count`` coils from ``address``."""
        response = await self._do(
            FC_READ_COILS, lambda c: c.read_coils(address, count=count, device_id=unit)
        )
        return self._bits(FC_READ_COILS, response, count)

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        """FC05: one coil."""
        await self._do(FC_WRITE_SINGLE_COIL, lambda c: c.write_coil(address, value, device_id=unit))

    async def write_coils(self, unit: int, address: int, values: Sequence[bool]) -> None:
        """FC15: adjacent coils from ``address`` in one request."""
        await self._do(
            FC_WRITE_MULTIPLE_COILS,
            lambda c: c.write_coils(address, list(values), device_id=unit),
        )

    def _bits(self, function: int, response: ModbusPDU, count: int) -> list[bool]:
        bits = list(response.bits)
        if len(bits) < count:
            raise DeviceError(
                self._device, f"function 0x{function:02x}: {len(bits)} bits for {count} asked"
            )
        return [bool(b) for b in bits[:count]]


# ----------------------------------------------------------------------------- the PLC


def _effective(settings: ModbusSettings, profile: BarrierPlcProfile) -> tuple[int, float]:
    """Unit id and poll rate: the settings' where they set them, else the profile's."""
    unit = settings.unit_id if settings.unit_id is not None else profile.unit_id
    hz = settings.poll_hz if settings.poll_hz is not None else profile.poll_hz
    return unit, hz


def _on_grid(earliest: float, period: float) -> float:
    """The first multiple of ``period`` (monotonic seconds) not before ``earliest``.

    PLCs polled at the same rate thus poll on the same ticks whenever they (re)connected, and
    one wake-up of the event loop serves them all: with phases of their own (after any
    outage) four lanes at 20 Hz cost the idle daemon nearly twice the CPU. The tolerance
    keeps float error from skipping a tick.
    """
    return math.ceil(earliest / period - 1e-6) * period


def _off_grid(earliest: float, _period: float) -> float:
    return earliest


def _describe(pattern: dict[int, bool], profile: BarrierPlcProfile) -> str:
    names = {profile.coils.of(c): c.value for c in BarrierCommand}
    return " ".join(f"{names[a]}={int(v)}" for a, v in sorted(pattern.items()))


class BarrierPlc:
    """One barrier PLC on a Modbus bus, as its profile describes it.

    :meth:`run` polls the inputs and reports them; :meth:`command` writes a command and
    confirms it by reading the coils back. Pass ``bus`` to share a line (several unit ids
    behind one TCP gateway); otherwise the PLC owns a bus of its own.
    """

    def __init__(
        self,
        name: str,
        settings: ModbusSettings,
        profile: BarrierPlcProfile,
        *,
        bus: ModbusBus | None = None,
    ) -> None:
        self.name = name
        self.profile = profile
        self.unit_id, self.poll_hz = _effective(settings, profile)
        # The profile is immutable; these are derived on every access, and read on every poll.
        self._input_start, self._input_count = profile.input_start, profile.input_count
        self._owns_bus = bus is None
        self.bus = bus if bus is not None else ModbusBus.for_settings(settings)
        #: The latest poll, or None before the first one and while the PLC is not answering.
        self.last_inputs: PlcInputs | None = None
        #: The PLC answered its latest request normally (not an exception, not a timeout).
        self.connected = False
        self._outage_since: float | None = None
        self._outage_code = ""
        self._log = get_logger("plc", device=name, bus=str(self.bus.line), unit=self.unit_id)

    async def read_inputs(self) -> PlcInputs:
        """Read every input now, in one FC02 request (does not report to the sink)."""
        async with self.bus.session(self.name) as session:
            return await self._read(session)

    async def _read(self, session: BusSession) -> PlcInputs:
        profile = self.profile
        try:
            bits = await session.read_discrete_inputs(
                self.unit_id, self._input_start, self._input_count
            )
        except DeviceError:
            self.connected = False
            raise
        self.connected = True
        return profile.decode_inputs(self.name, bits)

    async def command(self, cmd: BarrierCommand) -> None:
        """Write ``cmd`` and confirm it by reading the coils back.

        CLOSE is refused (:class:`SafetyLoopOccupied`) when a fresh read, made in the same
        bus session, shows the safety loop occupied: the lane must never close on a vehicle,
        and this is the last place to catch it before the wire.
        """
        profile = self.profile
        pattern = profile.coil_pattern(cmd)
        try:
            async with self.bus.session(self.name) as session:
                if cmd is BarrierCommand.CLOSE:
                    inputs = await self._read(session)
                    if inputs.safety_loop:
                        raise SafetyLoopOccupied(
                            self.name, "close refused: the safety loop is occupied"
                        )
                if profile.coils_contiguous:
                    start = profile.coil_start
                    await session.write_coils(
                        self.unit_id, start, [pattern[start + i] for i in range(3)]
                    )
                else:
                    # Clear before set: the PLC never sees two command coils at once.
                    for address, value in sorted(pattern.items(), key=lambda item: item[1]):
                        await session.write_coil(self.unit_id, address, value)
                bits = await session.read_coils(
                    self.unit_id, profile.coil_start, profile.coil_count
                )
        except SafetyLoopOccupied:
            raise
        except DeviceError:
            self.connected = False
            raise
        self.connected = True
        actual = {address: bits[address - profile.coil_start] for address in pattern}
        if actual != pattern:
            raise CommandNotConfirmed(
                self.name,
                f"{cmd}: wrote {_describe(pattern, profile)}, "
                f"read back {_describe(actual, profile)}",
            )
        self._log.info("barrier command confirmed", command=cmd.value)

    async def run(self, sink: Sink) -> None:
        """Poll at ``poll_hz`` until cancelled, reporting to ``sink``.

        Reports inputs on every change and on the first read after an outage; one
        DeviceFault when the PLC stops answering and one DeviceRecovered when it answers
        again. Failures are retried with the bus's backoff; nothing but cancellation ends it.
        """
        period = 1.0 / self.poll_hz
        # PLCs on a line of their own poll on a common grid (see _on_grid); those sharing a
        # line take turns on it anyway, and a grid could idle a busy line.
        grid = _on_grid if self._owns_bus else _off_grid
        next_tick = time.monotonic()
        while True:
            try:
                inputs = await self.read_inputs()
            except DeviceError as exc:
                self._fault(exc, sink)
                next_tick = grid(time.monotonic() + max(period, self.bus.retry_in()), period)
            else:
                self._answer(inputs, sink)
                # After a slow answer, start a new schedule rather than burst to catch up.
                next_tick = grid(max(next_tick + period, time.monotonic()), period)
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))

    async def aclose(self) -> None:
        """Close the line if this PLC owns its bus (after :meth:`run` is cancelled)."""
        if self._owns_bus:
            await self.bus.aclose()

    def _fault(self, exc: DeviceError, sink: Sink) -> None:
        self.last_inputs = None
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self._outage_code = exc.code
            self._log.warning("plc fault", code=exc.code, error=exc.message)
            self._emit(sink, DeviceFault(device=self.name, code=exc.code, message=exc.message))
        elif exc.code != self._outage_code:
            # Same outage, another symptom (e.g. silent, then refusing): log, no new event.
            self._outage_code = exc.code
            self._log.warning("plc fault continues", code=exc.code, error=exc.message)

    def _answer(self, inputs: PlcInputs, sink: Sink) -> None:
        if self._outage_since is not None:
            down_ms = int((time.monotonic() - self._outage_since) * 1000)
            self._outage_since = None
            self._log.info("plc recovered", down_ms=down_ms)
            self._emit(sink, DeviceRecovered(device=self.name, down_ms=down_ms))
        if inputs != self.last_inputs:
            self.last_inputs = inputs
            self._emit(sink, inputs)

    def _emit(self, sink: Sink, signal: DeviceSignal) -> None:
        try:
            sink(signal)
        except Exception:
            # The sink is the daemon's; its bug must not stop the barrier's inputs.
            self._log.exception("sink raised", signal=type(signal).__name__)
