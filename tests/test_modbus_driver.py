"""The Modbus barrier PLC driver against the real simulator: TCP, and RTU over a pty pair."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import termios
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pymodbus.client import AsyncModbusTcpClient

from edgegate.config import ModbusRtuDevice, ModbusTcpDevice
from edgegate.core.events import BarrierCommand, DeviceFault, DeviceRecovered, Loop
from edgegate.daemon.drivers import plc_settings
from edgegate.devices.base import (
    CommandNotConfirmed,
    DeviceSignal,
    DeviceUnavailable,
    ModbusExceptionResponse,
    PlcInputs,
)
from edgegate.devices.modbus import (
    MAX_BACKOFF_S,
    BarrierPlc,
    ModbusBus,
    SafetyLoopOccupied,
    SerialLine,
    TcpLine,
)
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.profiles import load_profile
from edgegate.devices.settings import ModbusSettings
from edgegate.sim.plc import FailMode, Frame, PlcSimulator, PtyLink
from tests.eventually import eventually

TRAVEL = 0.3  # simulated arm travel time, seconds
FC_READ_COILS, FC_READ_INPUTS, FC_WRITE_COIL, FC_WRITE_COILS = 0x01, 0x02, 0x05, 0x0F

S = TypeVar("S", bound=DeviceSignal)


def profile(name: str = "barrier-plc-generic") -> BarrierPlcProfile:
    return load_profile(name, family=BarrierPlcProfile)


class Recorder:
    """A sink that keeps every signal and lets a test wait for one."""

    def __init__(self) -> None:
        self.signals: list[tuple[float, DeviceSignal]] = []
        self._changed = asyncio.Event()

    def __call__(self, signal: DeviceSignal) -> None:
        self.signals.append((time.monotonic(), signal))
        self._changed.set()

    def of(self, kind: type[S]) -> list[S]:
        return [s for _, s in self.signals if isinstance(s, kind)]

    async def wait(
        self, kind: type[S], *, after: float = 0.0, within: float = 1.5
    ) -> tuple[float, S]:
        """The first signal of ``kind`` reported at or after ``after``, and its time."""
        async with asyncio.timeout(within):
            while True:
                for at, signal in self.signals:
                    if isinstance(signal, kind) and at >= after:
                        return at, signal
                self._changed.clear()
                await self._changed.wait()

    async def wait_inputs(self, within: float = 1.5, **values: bool) -> PlcInputs:
        """The latest inputs once they have ``values``."""

        def matches(inputs: PlcInputs) -> bool:
            return all(getattr(inputs, k) == v for k, v in values.items())

        async with asyncio.timeout(within):
            while True:
                latest = self.of(PlcInputs)
                if latest and matches(latest[-1]):
                    return latest[-1]
                self._changed.clear()
                await self._changed.wait()


@asynccontextmanager
async def running(plc: BarrierPlc, sink: Recorder) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(plc.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await plc.aclose()


def tcp_device(port: int, **overrides: Any) -> ModbusSettings:
    fields: dict[str, Any] = {
        "type": "modbus-tcp",
        "host": "127.0.0.1",
        "port": port,
        "profile": "barrier-plc-generic",
        "poll_hz": 50.0,
        "timeout": "200ms",
        "reconnect_max": "200ms",
    }
    return plc_settings(ModbusTcpDevice.model_validate(fields | overrides))


def rtu_device(port: str, **overrides: Any) -> ModbusSettings:
    fields: dict[str, Any] = {
        "type": "modbus-rtu",
        "port": port,
        "baudrate": 115200,
        "profile": "barrier-plc-generic",
        "poll_hz": 50.0,
        "timeout": "200ms",
        "reconnect_max": "200ms",
    }
    return plc_settings(ModbusRtuDevice.model_validate(fields | overrides))


@asynccontextmanager
async def tcp_plc(
    prof: BarrierPlcProfile | None = None, **device: Any
) -> AsyncIterator[tuple[PlcSimulator, BarrierPlc]]:
    prof = prof if prof is not None else profile()
    sim = PlcSimulator(prof, travel_time=TRAVEL)
    await sim.start()
    try:
        yield sim, BarrierPlc("plc-1", tcp_device(sim.port, **device), prof)
    finally:
        await sim.stop()


@asynccontextmanager
async def rtu_plc(
    prof: BarrierPlcProfile | None = None, **device: Any
) -> AsyncIterator[tuple[PlcSimulator, BarrierPlc]]:
    prof = prof if prof is not None else profile()
    link = PtyLink()
    await link.start()
    sim = PlcSimulator(prof, travel_time=TRAVEL, serial_port=link.paths[0], baudrate=115200)
    try:
        await sim.start()
        yield sim, BarrierPlc("plc-1", rtu_device(link.paths[1], **device), prof)
    finally:
        await sim.stop()
        await link.stop()


PLCS = {"tcp": tcp_plc, "rtu": rtu_plc}


@pytest.fixture(params=["tcp", "rtu"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def requests(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.direction == "request"]


# ------------------------------------------------------------------------------ polling


async def test_polls_report_changes_in_one_request(transport: str) -> None:
    sink = Recorder()
    async with PLCS[transport]() as (sim, plc), running(plc, sink):
        first = await sink.wait_inputs(down_limit=True)
        assert first == PlcInputs("plc-1", False, True, False, False, False, False)
        # Ten more polls with nothing changed: time enough for a wrong report.
        polled = len(requests(sim.frames))
        await eventually(lambda: len(requests(sim.frames)) >= polled + 10, "ten more polls")
        assert len(sink.of(PlcInputs)) == 1
        sim.set_loop(Loop.ARMING, True)
        await sink.wait_inputs(arming_loop=True)
        sim.set_loop(Loop.EXIT, True)
        await sink.wait_inputs(arming_loop=True, exit_loop=True)
        assert len(sink.of(PlcInputs)) == 3
        assert plc.connected
        assert plc.last_inputs == sink.of(PlcInputs)[-1]
    polls = requests(sim.frames)
    assert len(polls) >= 10
    # Every poll is one FC02 request over the whole input span (inputs 0-5).
    assert {(f.function, f.address, f.count) for f in polls} == {(FC_READ_INPUTS, 0, 6)}
    assert not sink.of(DeviceFault)


async def test_command_open_travels_and_is_confirmed(transport: str) -> None:
    sink = Recorder()
    async with PLCS[transport]() as (sim, plc), running(plc, sink):
        await sink.wait_inputs(down_limit=True)
        commanded = time.monotonic()
        await plc.command(BarrierCommand.OPEN)
        await sink.wait_inputs(down_limit=False, up_limit=False)  # travelling
        await sink.wait_inputs(up_limit=True, down_limit=False)
        assert time.monotonic() - commanded >= TRAVEL * 0.9
        assert [c for _, c in sim.commands] == [BarrierCommand.OPEN]
        assert sim.coils() == {
            BarrierCommand.OPEN: True,
            BarrierCommand.CLOSE: False,
            BarrierCommand.STOP: False,
        }
        await plc.command(BarrierCommand.CLOSE)
        await sink.wait_inputs(down_limit=True)
    # Contiguous coils: one FC15 with the whole pattern, then the FC01 read-back of them.
    writes = [i for i, f in enumerate(sim.frames) if f.function == FC_WRITE_COILS]
    assert len(writes) == 4  # two commands: request and response each
    for i in writes[::2]:
        assert (sim.frames[i].address, sim.frames[i].count) == (0, 3)
        assert sim.frames[i + 2].function == FC_READ_COILS
        assert (sim.frames[i + 2].address, sim.frames[i + 2].count) == (0, 3)


async def test_close_is_refused_while_the_safety_loop_is_occupied() -> None:
    sink = Recorder()
    async with tcp_plc() as (sim, plc), running(plc, sink):
        await plc.command(BarrierCommand.OPEN)
        await sink.wait_inputs(up_limit=True)
        sim.set_loop(Loop.SAFETY, True)
        # Checked on a fresh read, not on the last poll: no waiting for the poll here.
        with pytest.raises(SafetyLoopOccupied) as caught:
            await plc.command(BarrierCommand.CLOSE)
        assert caught.value.code == "safety-loop-occupied"
        assert [c for _, c in sim.commands] == [BarrierCommand.OPEN]
        assert sim.position == 1.0
        sim.set_loop(Loop.SAFETY, False)
        await plc.command(BarrierCommand.CLOSE)
        await sink.wait_inputs(down_limit=True)
    assert [c for _, c in sim.commands] == [BarrierCommand.OPEN, BarrierCommand.CLOSE]


async def test_command_not_taken_is_not_confirmed() -> None:
    async with tcp_plc() as (sim, plc):
        await sim.set_fail_mode(FailMode.WRITES_IGNORED)
        with pytest.raises(CommandNotConfirmed) as caught:
            await plc.command(BarrierCommand.OPEN)
        await plc.aclose()
    assert (
        caught.value.message == "open: wrote open=1 close=0 stop=0, read back open=0 close=0 stop=0"
    )
    assert sim.position == 0.0


async def test_stop_halts_the_arm_midway() -> None:
    sink = Recorder()
    async with tcp_plc() as (sim, plc), running(plc, sink):
        await plc.command(BarrierCommand.OPEN)
        await eventually(lambda: sim.position >= 0.2, "the arm on its way up")
        await plc.command(BarrierCommand.STOP)
        halted = sim.position
        assert 0.0 < halted < 1.0
        await sink.wait_inputs(up_limit=False, down_limit=False)
        await asyncio.sleep(TRAVEL)  # a whole travel time: time enough for a wrong move
        assert sim.position == halted
        assert plc.last_inputs is not None
        assert not plc.last_inputs.up_limit and not plc.last_inputs.down_limit


async def test_stuck_arm_never_reaches_the_limit() -> None:
    sink = Recorder()
    async with tcp_plc() as (sim, plc), running(plc, sink):
        await sim.set_fail_mode(FailMode.STUCK)
        await plc.command(BarrierCommand.OPEN)
        await sink.wait_inputs(up_limit=False, down_limit=False)
        await asyncio.sleep(TRAVEL * 2)  # two travel times: time enough to reach a limit
        assert plc.last_inputs is not None
        assert (plc.last_inputs.up_limit, plc.last_inputs.down_limit) == (False, False)
        assert not sink.of(DeviceFault)  # the PLC answers; the lane times the travel


async def test_normally_closed_inputs_and_single_coil_writes() -> None:
    nc = profile("barrier-plc-nc-contacts")
    sink = Recorder()
    async with tcp_plc(nc) as (sim, plc), running(plc, sink):
        assert plc.unit_id == 2  # the profile's, as the configuration does not set one
        free = await sink.wait_inputs(down_limit=True)
        assert (free.safety_loop, free.fault, free.exit_loop) == (False, False, None)
        # On the wire the NC contacts are closed (1) while all is well.
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, reconnect_delay=0)
        await client.connect()
        try:
            wire = await client.read_discrete_inputs(100, count=6, device_id=2)
            assert list(wire.bits[:6]) == [False, True, True, False, False, True]
            sim.set_loop(Loop.SAFETY, True)
            sim.set_fault_input(True)
            wire = await client.read_discrete_inputs(100, count=6, device_id=2)
            assert list(wire.bits[:6]) == [False, True, False, False, False, False]
        finally:
            client.close()
        await sink.wait_inputs(safety_loop=True, fault=True)
        sim.set_loop(Loop.SAFETY, False)
        await plc.command(BarrierCommand.OPEN)
        await sink.wait_inputs(up_limit=True)
    # Coils 16, 17, 20 are not adjacent: FC05 each, clearing before setting, then FC01.
    writes = [f for f in requests(sim.frames) if f.function == FC_WRITE_COIL]
    assert [f.address for f in writes] == [17, 20, 16]
    last_write = sim.frames.index(writes[-1])
    readback = sim.frames[last_write + 2]
    assert (readback.function, readback.address, readback.count) == (FC_READ_COILS, 16, 5)


# ------------------------------------------------------------------------------- faults


async def test_silent_plc_one_fault_within_a_second_then_recovery(transport: str) -> None:
    sink = Recorder()
    async with PLCS[transport]() as (sim, plc), running(plc, sink):
        await sink.wait_inputs(down_limit=True)
        await sim.set_fail_mode(FailMode.SILENT)
        silenced = time.monotonic()
        at, fault = await sink.wait(DeviceFault)
        assert at - silenced < 1.0
        assert (fault.device, fault.code, fault.lane) == ("plc-1", "timeout", None)
        assert plc.last_inputs is None and not plc.connected
        await asyncio.sleep(0.5)  # several more failed polls and reconnects
        assert len(sink.of(DeviceFault)) == 1
        await sim.set_fail_mode(FailMode.NONE)
        back = time.monotonic()
        at, recovered = await sink.wait(DeviceRecovered)
        assert at - back < 1.0
        assert recovered.down_ms >= 500
        # The first read after the outage is reported even though nothing changed.
        _, inputs = await sink.wait(PlcInputs, after=at)
        assert inputs == sink.of(PlcInputs)[0]
        assert plc.connected
    assert len(sink.of(DeviceFault)) == 1 and len(sink.of(DeviceRecovered)) == 1


async def test_refused_at_start_is_retried_then_recovers() -> None:
    sink = Recorder()
    async with tcp_plc() as (sim, plc):
        await sim.set_fail_mode(FailMode.REFUSE)
        async with running(plc, sink) as task:
            _, fault = await sink.wait(DeviceFault)
            assert fault.code == "unavailable"
            assert "cannot connect to tcp://127.0.0.1:" in fault.message
            with pytest.raises(DeviceUnavailable):
                await plc.command(BarrierCommand.OPEN)
            await asyncio.sleep(0.5)  # several retries: time enough for a crash or a 2nd fault
            assert not task.done()
            assert len(sink.of(DeviceFault)) == 1
            await sim.set_fail_mode(FailMode.NONE)
            await sink.wait(DeviceRecovered)
            await sink.wait_inputs(down_limit=True)
            await plc.command(BarrierCommand.OPEN)
    assert [c for _, c in sim.commands] == [BarrierCommand.OPEN]


async def test_absent_serial_port_is_retried(tmp_path: Path) -> None:
    sink = Recorder()
    plc = BarrierPlc("plc-1", rtu_device(str(tmp_path / "ttyUSB9")), profile())
    async with running(plc, sink) as task:
        _, fault = await sink.wait(DeviceFault)
        assert fault.code == "unavailable"
        await asyncio.sleep(0.3)  # several retries: time enough for a crash or a 2nd fault
        assert not task.done()
        assert len(sink.of(DeviceFault)) == 1


async def test_exception_responses(transport: str) -> None:
    sink = Recorder()
    async with PLCS[transport]() as (sim, plc), running(plc, sink):
        await sink.wait_inputs(down_limit=True)
        await sim.set_fail_mode(FailMode.EXCEPTION, exception_code=4)
        with pytest.raises(ModbusExceptionResponse) as caught:
            await plc.command(BarrierCommand.OPEN)
        assert (caught.value.function, caught.value.exception_code) == (FC_WRITE_COILS, 4)
        _, fault = await sink.wait(DeviceFault)
        assert fault.code == "modbus-exception"
        assert fault.message == "function 0x02 answered exception code 4"
        await asyncio.sleep(0.2)  # ~10 polls answered with exceptions: time for a 2nd fault
        assert len(sink.of(DeviceFault)) == 1
        await sim.set_fail_mode(FailMode.NONE)
        await sink.wait(DeviceRecovered)
    assert not sim.commands


async def test_wrong_profile_is_an_illegal_address_fault() -> None:
    # The PLC has the generic map; the configuration names the NC model's (inputs at 100).
    sim = PlcSimulator(profile(), travel_time=TRAVEL)
    await sim.start()
    sink = Recorder()
    try:
        device = tcp_device(sim.port, unit_id=1)
        plc = BarrierPlc("plc-1", device, profile("barrier-plc-nc-contacts"))
        async with running(plc, sink):
            _, fault = await sink.wait(DeviceFault)
    finally:
        await sim.stop()
    assert fault.message == "function 0x02 answered exception code 2"


async def test_restarted_plc_is_reconnected() -> None:
    sink = Recorder()
    async with tcp_plc() as (sim, plc), running(plc, sink):
        await sink.wait_inputs(down_limit=True)
        await sim.restart()  # every connection dropped
        sim.set_loop(Loop.ARMING, True)
        await sink.wait_inputs(arming_loop=True)
        await plc.command(BarrierCommand.OPEN)


async def test_a_raising_sink_does_not_stop_polling() -> None:
    seen: list[DeviceSignal] = []

    def sink(signal: DeviceSignal) -> None:
        seen.append(signal)
        if len(seen) == 1:
            raise RuntimeError("daemon bug")

    async with tcp_plc() as (sim, plc):
        task = asyncio.create_task(plc.run(sink))
        try:
            await eventually(lambda: bool(seen), "the first report (the sink raises on it)")
            sim.set_loop(Loop.ARMING, True)
            await eventually(
                lambda: any(isinstance(s, PlcInputs) and s.arming_loop for s in seen),
                "the arming loop reported after the sink raised",
            )
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await plc.aclose()
    assert [s.arming_loop for s in seen if isinstance(s, PlcInputs)] == [False, True]


# --------------------------------------------------------------------------------- bus


async def test_backoff_is_capped_and_jittered() -> None:
    # A port nothing listens on: every connect is refused at once. The bus's clock is ours.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    now = [1000.0]
    bus = ModbusBus(
        TcpLine("127.0.0.1", port),
        timeout=0.2,
        reconnect_max=0.8,
        backoff_initial=0.1,
        rng=random.Random(7),
        clock=lambda: now[0],
    )
    waits = []
    for _ in range(7):
        now[0] += bus.retry_in()
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            async with bus.session("plc-1") as session:
                await session.read_coils(1, 0, 1)
        waits.append(bus.retry_in())
        # Within the backoff a request fails at once, without trying to connect.
        now[0] += waits[-1] * 0.99
        with pytest.raises(DeviceUnavailable, match="retry in"):
            async with bus.session("plc-1") as session:
                await session.read_coils(1, 0, 1)
    ceilings = [min(0.8, 0.1 * 2**n) for n in range(7)]
    for wait, ceiling in zip(waits, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling
    assert len({round(w, 6) for w in waits[3:]}) > 1  # jittered, not lockstep
    assert ModbusBus(TcpLine("127.0.0.1"), reconnect_max=60).reconnect_max == MAX_BACKOFF_S
    await bus.aclose()


async def test_rtu_bus_lock_and_inter_frame_gap() -> None:
    gap = 0.015
    sink = Recorder()
    async with (
        rtu_plc(poll_hz=100.0, inter_frame_gap=f"{gap * 1000:g}ms") as (sim, plc),
        running(plc, sink),
    ):
        await sink.wait_inputs(down_limit=True)
        for command in (BarrierCommand.OPEN, BarrierCommand.STOP, BarrierCommand.CLOSE):
            # The poller is always waiting for the bus at 100 Hz: commands compete with it.
            await asyncio.gather(plc.command(command), asyncio.sleep(0.05))  # pacing
    frames = sim.frames
    # Strictly one request, then its response: frames never interleave on the line.
    assert [f.direction for f in frames] == ["request", "response"] * (len(frames) // 2)
    assert all(q.function == r.function for q, r in zip(frames[::2], frames[1::2], strict=True))
    # A command's write and its read-back are adjacent: no poll slips in between.
    for i, frame in enumerate(frames):
        if frame.direction == "request" and frame.function == FC_WRITE_COILS:
            assert frames[i + 2].function == FC_READ_COILS
    # The line is silent for at least the inter-frame gap before every request.
    silences = [q.time - r.time for r, q in zip(frames[1::2], frames[2::2], strict=False)]
    assert min(silences) >= gap - 0.001
    assert len([f for f in frames if f.function == FC_WRITE_COILS]) == 6


async def test_an_adapter_refusing_the_line_settings_is_one_fault_with_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A USB adapter that refuses the configured parity makes termios raise while pyserial
    opens the port (not an OSError): one fault for the outage, the port closed after each
    attempt (nothing keeps it locked), retried with backoff, and the PLC answers once the
    adapter takes the settings."""
    refusing = True
    real_tcsetattr = termios.tcsetattr
    attempts = 0

    def tcsetattr(fd: int, when: int, attributes: list[Any]) -> None:
        nonlocal attempts
        if refusing:
            attempts += 1
            raise termios.error(22, "Invalid argument")
        real_tcsetattr(fd, when, attributes)

    def opened(path: str) -> int:
        fds = os.listdir("/proc/self/fd")
        return sum(1 for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}") == path)

    def realpath(path: str) -> str:
        return os.path.realpath(path)

    sink = Recorder()
    async with rtu_plc() as (sim, plc):
        assert isinstance(plc.bus.line, SerialLine)
        sim_port = realpath(plc.bus.line.port)
        # pyserial's termios: the adapter's refusal as the kernel reports it
        monkeypatch.setattr(termios, "tcsetattr", tcsetattr)
        async with running(plc, sink) as task:
            _, fault = await sink.wait(DeviceFault)
            assert fault.code == "unavailable"
            assert "Invalid argument" in fault.message
            await eventually(lambda: attempts >= 3, "three attempts to open the port")
            assert not task.done()
            assert len(sink.of(DeviceFault)) == 1
            # Every attempt let go of the port: only the link's own end holds it open.
            assert opened(sim_port) == 1
            refusing = False
            await sink.wait(DeviceRecovered, within=3.0)
            await sink.wait_inputs(down_limit=True)
            await plc.command(BarrierCommand.OPEN)
    assert [c for _, c in sim.commands] == [BarrierCommand.OPEN]
