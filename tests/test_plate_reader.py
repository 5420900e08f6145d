"""Serial plate readers end to end: the driver on the slave side of a real pty, the simulator
on the master side; reads, duplicates, bad frames, unplugging and re-plugging."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgegate.core.domain import PlateColour
from edgegate.core.events import DeviceFault, DeviceRecovered, FrameRejected, PlateRead
from edgegate.devices.base import DeviceSignal
from edgegate.devices.framing import MAX_REPORTED_BYTES
from edgegate.devices.plate_reader import SerialPlateReader
from edgegate.devices.settings import SerialLine
from edgegate.sim.plate_reader import PlateReaderSimulator
from tests.eventually import eventually
from tests.test_framing import BINARY, GENERIC, KV, PROFILES, garbage_for, load_profile, plates

C = PlateColour
S = TypeVar("S", bound=DeviceSignal)
DEVICE = "cam-in-1"


class FakeClock:
    """Seconds, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    sim: PlateReaderSimulator
    reader: SerialPlateReader
    task: asyncio.Task[None]
    signals: asyncio.Queue[DeviceSignal]

    async def expect(self, kind: type[S], within: float = 2.0) -> S:
        signal = await asyncio.wait_for(self.signals.get(), within)
        assert isinstance(signal, kind), f"expected {kind.__name__}, got {signal!r}"
        return signal

    async def quiet(self, seconds: float) -> None:
        """Nothing is reported for ``seconds``."""
        await asyncio.sleep(seconds)  # time enough for a wrong report
        assert self.signals.empty(), f"unexpected {self.signals.get_nowait()!r}"

    async def until_reads(self, count: int, within: float = 5.0) -> list[DeviceSignal]:
        """Every signal up to and including the ``count``-th read."""
        seen: list[DeviceSignal] = []
        async with asyncio.timeout(within):
            while sum(isinstance(s, PlateRead) for s in seen) < count:
                seen.append(await self.signals.get())
        return seen


def make_reader(
    name: str,
    port: str,
    window: timedelta = timedelta(0),
    clock: Callable[[], float] = time.monotonic,
) -> SerialPlateReader:
    return SerialPlateReader(
        DEVICE,
        SerialLine(port),
        load_profile(name),
        window,
        clock,
        reconnect_initial=timedelta(milliseconds=10),
        reconnect_max=timedelta(milliseconds=50),
        watch_interval=timedelta(milliseconds=50),
    )


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def running(
    name: str,
    *,
    window: timedelta = timedelta(0),
    clock: Callable[[], float] = time.monotonic,
    plugged: bool = True,
    failing_sink_calls: int = 0,
) -> AsyncIterator[Rig]:
    """A simulator and a running driver on its port; ``failing_sink_calls`` makes the sink
    raise after queueing the first that many signals."""
    signals: asyncio.Queue[DeviceSignal] = asyncio.Queue()
    calls = 0

    def sink(signal: DeviceSignal) -> None:
        nonlocal calls
        signals.put_nowait(signal)
        calls += 1
        if calls <= failing_sink_calls:
            raise RuntimeError("sink bug")

    with PlateReaderSimulator(load_profile(name), plugged=plugged) as sim:
        reader = make_reader(name, sim.port, window, clock)
        task = asyncio.create_task(reader.run(sink))
        try:
            if plugged:
                await asyncio.wait_for(reader.wait_connected(), 2.0)
            yield Rig(sim, reader, task, signals)
        finally:
            await stop(task)


SENT = {
    GENERIC: ("粤B12345", C.YELLOW, 0.87, "20240501/083015_01.jpg"),
    KV: ("苏EA1234F", C.GREEN, 0.93, "http://10.20.1.31/snap/1.jpg"),
    BINARY: ("京A0001挂", C.YELLOW, 0.6, ""),
}


@pytest.mark.parametrize("name", PROFILES)
async def test_reads_arrive_as_plate_read_events(name: str) -> None:
    plate, colour, confidence, image = SENT[name]
    async with running(name) as rig:
        first = await rig.sim.send_read(plate, colour, confidence, image)
        second = await rig.sim.send_read("鲁Q88888", C.BLUE, 1.0)
        read = await rig.expect(PlateRead)
        assert read == PlateRead(
            plate=plate,
            colour=colour,
            confidence=confidence,  # scaled back exactly: 87 / 100 == 0.87
            reader=DEVICE,
            image_ref=image,
            raw=first,
        )
        again = await rig.expect(PlateRead)
        assert (again.plate, again.colour, again.confidence, again.raw) == (
            "鲁Q88888",
            C.BLUE,
            1.0,
            second,
        )
        assert rig.reader.connected
        await rig.quiet(0.05)


async def test_duplicates_suppressed_within_the_window_and_reported_after_it() -> None:
    clock = FakeClock()
    async with running(GENERIC, window=timedelta(seconds=10), clock=clock) as rig:
        await rig.sim.send_read("粤B10345", C.BLUE, 0.9)
        assert (await rig.expect(PlateRead)).plate == "粤B10345"

        clock.now += 3
        await rig.sim.send_read("粤B1O345", C.BLUE, 0.9)  # the same plate once normalised
        await rig.sim.send_read("粤B10345", C.BLUE, 0.7)
        await rig.sim.send_read("粤A77777", C.BLUE, 0.9)
        assert (await rig.expect(PlateRead)).plate == "粤A77777"

        # 10.5 s after the reported read, though only 7.5 s after the last suppressed one.
        clock.now += 7.5
        await rig.sim.send_read("粤B10345", C.BLUE, 0.9)
        assert (await rig.expect(PlateRead)).plate == "粤B10345"

        clock.now += 1  # 粤A77777 was reported 8.5 s ago
        await rig.sim.send_read("粤A77777", C.BLUE, 0.9)
        await rig.sim.send_read("粤C00001", C.BLUE, 0.9)
        assert (await rig.expect(PlateRead)).plate == "粤C00001"
        await rig.quiet(0.05)


async def test_zero_window_reports_every_read() -> None:
    async with running(BINARY) as rig:
        for _ in range(3):
            await rig.sim.send_read("粤B12345", C.BLUE, 0.9)
        for _ in range(3):
            assert (await rig.expect(PlateRead)).plate == "粤B12345"


@pytest.mark.parametrize(
    ("name", "position", "reason"), [(GENERIC, -3, "bad-checksum"), (BINARY, 4, "bad-crc")]
)
async def test_bad_frame_becomes_frame_rejected_with_its_bytes(
    name: str, position: int, reason: str
) -> None:
    async with running(name) as rig:
        good = rig.sim.encoder.encode("粤B12345", C.BLUE, 0.9)
        bad = bytearray(good)
        bad[position] ^= 0x01
        await rig.sim.send_raw(bytes(bad))
        await rig.sim.send_raw(good)
        rejected = await rig.expect(FrameRejected)
        assert rejected.device == DEVICE
        assert rejected.reason.startswith(f"{reason}: ")
        assert rejected.data == bad
        assert not rejected.truncated
        assert (await rig.expect(PlateRead)).raw == good


async def test_garbage_flood_is_reported_in_bounded_pieces_and_reads_go_on() -> None:
    async with running(GENERIC) as rig:
        await rig.sim.send_raw(b"x" * 20_000)
        await rig.sim.send_read("粤B12345", C.BLUE, 0.9)
        signals = await rig.until_reads(1)
        rejected = [s for s in signals if isinstance(s, FrameRejected)]
        assert rejected and all(len(s.data) <= MAX_REPORTED_BYTES for s in rejected)
        assert any(s.truncated for s in rejected)
        assert isinstance(signals[-1], PlateRead) and signals[-1].plate == "粤B12345"


async def test_unplugged_reader_faults_within_a_second_and_recovers_when_replugged() -> None:
    loop = asyncio.get_running_loop()
    async with running(GENERIC) as rig:
        await rig.sim.send_read("粤B12345", C.BLUE, 0.9)
        await rig.expect(PlateRead)

        pulled = loop.time()
        rig.sim.unplug()
        fault = await rig.expect(DeviceFault, within=1.0)
        assert loop.time() - pulled < 1.0
        assert (fault.device, fault.code) == (DEVICE, "unavailable")
        assert not rig.reader.connected
        await rig.quiet(0.3)  # one fault per outage, however often re-opening fails

        rig.sim.replug()
        recovered = await rig.expect(DeviceRecovered, within=1.0)
        assert recovered.device == DEVICE
        assert recovered.down_ms >= 300
        await rig.sim.send_read("粤B54321", C.YELLOW, 0.8)
        assert (await rig.expect(PlateRead)).plate == "粤B54321"


async def test_unfinished_frame_when_the_port_goes_is_reported_before_the_fault() -> None:
    async with running(BINARY) as rig:
        partial = rig.sim.encoder.encode("粤B12345", C.BLUE, 0.9)[:6]
        await rig.sim.send_raw(partial)
        # The driver has read it before the adapter goes (its receive buffer: no public view).
        await eventually(lambda: rig.reader._buffer == partial, "the partial frame read")
        rig.sim.unplug()
        with pytest.raises(OSError, match="unplugged"):
            await rig.sim.send_raw(b"x")
        rejected = await rig.expect(FrameRejected, within=1.0)
        assert rejected.reason.startswith("incomplete: ")
        assert rejected.data == partial
        await rig.expect(DeviceFault)


async def test_absent_port_at_start_faults_then_recovers_when_it_appears() -> None:
    async with running(BINARY, plugged=False) as rig:
        fault = await rig.expect(DeviceFault, within=1.0)
        assert fault.code == "unavailable"
        assert "cannot open" in fault.message
        await rig.quiet(0.2)

        rig.sim.replug()
        await rig.expect(DeviceRecovered, within=1.0)
        await rig.sim.send_read("粤B12345", C.WHITE, 0.9)
        assert (await rig.expect(PlateRead)).colour is C.WHITE


async def test_port_path_naming_another_device_is_a_fault(tmp_path: Path) -> None:
    """A by-id link re-pointed to a new adapter while the old one stays silent."""
    async with running(KV) as rig:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            link = tmp_path / "new-link"
            link.symlink_to(os.ttyname(slave))
            link.replace(rig.sim.port)
            fault = await rig.expect(DeviceFault, within=1.0)
            assert "another device" in fault.message
            await rig.expect(DeviceRecovered, within=1.0)
            os.write(master, rig.sim.encoder.encode("粤B12345", C.BLUE, 0.5))
            assert (await rig.expect(PlateRead)).plate == "粤B12345"
        finally:
            os.close(master)
            os.close(slave)


async def test_a_second_reader_on_the_same_port_waits_for_the_first() -> None:
    async with running(GENERIC) as rig:
        second_signals: asyncio.Queue[DeviceSignal] = asyncio.Queue()
        second = make_reader(GENERIC, rig.sim.port)
        task = asyncio.create_task(second.run(second_signals.put_nowait))
        try:
            fault = await asyncio.wait_for(second_signals.get(), 1.0)
            assert isinstance(fault, DeviceFault) and "cannot open" in fault.message
            await stop(rig.task)  # the first reader lets go of the port
            assert isinstance(await asyncio.wait_for(second_signals.get(), 1.0), DeviceRecovered)
            await rig.sim.send_read("粤B12345", C.BLUE, 0.5)
            assert isinstance(await asyncio.wait_for(second_signals.get(), 1.0), PlateRead)
        finally:
            await stop(task)


async def test_a_failing_sink_does_not_stop_the_reader() -> None:
    async with running(GENERIC, failing_sink_calls=1) as rig:
        await rig.sim.send_read("粤B12345", C.BLUE, 0.5)
        await rig.sim.send_read("粤B54321", C.BLUE, 0.5)
        assert (await rig.expect(PlateRead)).plate == "粤B12345"
        assert (await rig.expect(PlateRead)).plate == "粤B54321"
        assert not rig.task.done()


def test_backoff_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="5s"):
        SerialPlateReader(
            DEVICE,
            SerialLine("/dev/ttyS1"),
            load_profile(KV),
            timedelta(0),
            reconnect_max=timedelta(seconds=6),
        )


@pytest.mark.parametrize("name", [GENERIC, BINARY])
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_garbage_interleaved_with_valid_frames_over_a_pty(
    name: str, data: st.DataObject
) -> None:
    reads = data.draw(st.lists(plates(), min_size=1, max_size=4))
    garbage = data.draw(st.lists(garbage_for(name), min_size=len(reads), max_size=len(reads)))
    async with running(name) as rig:
        for noise, plate in zip(garbage, reads, strict=True):
            await rig.sim.send_raw(noise)
            await rig.sim.send_read(plate, C.BLUE, 0.5)
        signals = await rig.until_reads(len(reads))
    # Stopping the reader reports the rejections it was still counting.
    while not rig.signals.empty():
        signals.append(rig.signals.get_nowait())
    assert [s.plate for s in signals if isinstance(s, PlateRead)] == reads
    rejected = [s for s in signals if isinstance(s, FrameRejected)]
    assert sum(r.count for r in rejected) >= sum(1 for noise in garbage if noise)
    assert sum(r.size for r in rejected) == sum(len(noise) for noise in garbage)
    assert not any(isinstance(s, DeviceFault) for s in signals)


async def test_a_flood_of_garbage_costs_one_report_a_second_and_loses_no_count() -> None:
    """115,200 baud of ``$`` (each one the start of a frame cut short by the next) for 2.5 s:
    at most one FrameRejected a second (plus the first, at once), every byte counted."""
    sent = 0
    async with running(GENERIC) as rig:
        loop = asyncio.get_running_loop()
        began = loop.time()
        while (elapsed := loop.time() - began) < 2.5:
            due = round(elapsed * 11_520)  # 115,200 baud: 11,520 bytes a second
            await rig.sim.send_raw(b"$" * (due - sent))
            sent = due
            await asyncio.sleep(0.01)  # pacing: the line's baud rate
        await rig.sim.send_read("粤B12345", C.BLUE, 0.9)
        signals = await rig.until_reads(1)
    elapsed = loop.time() - began  # the reader stopped: its last count was reported
    while not rig.signals.empty():
        signals.append(rig.signals.get_nowait())
    rejected = [s for s in signals if isinstance(s, FrameRejected)]
    assert 2 <= len(rejected) <= elapsed + 2
    assert sum(r.size for r in rejected) == sent
    assert sum(r.count for r in rejected) >= sent // 2
    assert all(len(r.data) <= MAX_REPORTED_BYTES for r in rejected)
    assert {k for r in rejected for k in r.kinds} <= {"incomplete", "garbage"}
    assert rejected[-1].truncated
