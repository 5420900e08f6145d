"""Serial plate readers: open the port, decode frames, report reads, survive unplugging.

A reader sends reads unprompted; nothing is written to it. The driver reports through the
sink (``edgegate.devices.base``):

- ``PlateRead`` for each valid frame, unless the same normalised plate was reported less than
  the duplicate window ago (the window runs from the reported read, so a vehicle that backs
  out and returns after the window is read again even if the camera never stopped reading);
- ``FrameRejected`` for bad frames and runs of garbage, coalesced (``edgegate.devices.rejects``):
  the first after a quiet second at once, those that follow counted into one report a second,
  with their kinds and a bounded sample of their bytes — a reader sending garbage costs the
  log one event a second;
- one ``DeviceFault(code="unavailable")`` when the port cannot be opened or goes away (read
  error, end of file, the port path gone or naming another device), then ``DeviceRecovered``
  once it is open again. Re-opening is retried with capped, jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import serial_asyncio_fast

from edgegate.backoff import backoff_delay
from edgegate.core.events import DeviceFault, DeviceRecovered, FrameRejected
from edgegate.core.plates import normalise
from edgegate.devices.base import DeviceSignal, DeviceUnavailable, Sink
from edgegate.devices.framing import (
    Frame,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    decoder_for,
    drain,
)
from edgegate.devices.reader_profile import ReaderProfile
from edgegate.devices.rejects import RejectCoalescer
from edgegate.devices.settings import SerialLine
from edgegate.observability import get_logger

__all__ = ["SerialPlateReader"]


class _LineProtocol(asyncio.Protocol):
    """Hands received bytes on and resolves ``lost`` with why the port went away."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(str(exc) if exc is not None else "port closed")


class SerialPlateReader:
    """One serial plate reader, decoding frames as its profile describes."""

    def __init__(
        self,
        device_name: str,
        line: SerialLine,
        profile: ReaderProfile,
        duplicate_window: timedelta,
        clock: Callable[[], float] = time.monotonic,
        *,
        reconnect_initial: timedelta = timedelta(milliseconds=200),
        reconnect_max: timedelta = timedelta(seconds=5),
        watch_interval: timedelta = timedelta(milliseconds=500),
        rng: random.Random | None = None,
    ) -> None:
        """``clock`` gives seconds (duplicate window, outage length). Re-opening waits
        between ``reconnect_initial`` and ``reconnect_max`` (at most 5 s); the port path is
        checked every ``watch_interval`` for adapters that vanish without a read error."""
        if not timedelta(0) < reconnect_initial <= reconnect_max <= timedelta(seconds=5):
            raise ValueError("need 0 < reconnect_initial <= reconnect_max <= 5s")
        if watch_interval <= timedelta(0):
            raise ValueError("watch_interval must be positive")
        self.name = device_name
        self._line = line
        self._decoder: FrameDecoder = decoder_for(profile)
        self._window = duplicate_window.total_seconds()
        self._clock = clock
        self._initial = reconnect_initial.total_seconds()
        self._max = reconnect_max.total_seconds()
        self._watch = watch_interval.total_seconds()
        self._rng = rng if rng is not None else random.Random()
        self._log = get_logger("plate-reader", device=device_name, port=line.port)
        self._buffer = bytearray()
        self._recent: dict[str, float] = {}  # normalised plate -> when it was last reported
        self._connected = asyncio.Event()
        self._sink: Sink | None = None
        self._rejects = RejectCoalescer(device_name)
        self._reject_timer: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def frames_rejected(self) -> int:
        """Bad frames and runs of garbage since the start (coalesced into fewer events)."""
        return self._rejects.total

    async def wait_connected(self) -> None:
        """Return once the port is open (tests and health checks)."""
        await self._connected.wait()

    async def run(self, sink: Sink) -> None:
        """Read until cancelled. Raises nothing but ``CancelledError``."""
        self._sink = sink
        try:
            await self._run()
        finally:
            self._flush_rejects()  # counted rejections are reported, even at shutdown

    async def _run(self) -> None:
        down_since: float | None = None
        attempt = 0
        while True:
            try:
                transport, protocol, rdev = await self._open()
            except Exception as exc:
                if not isinstance(exc, OSError | ValueError):  # serial errors are OSErrors
                    self._log.exception("unexpected error opening the port")
                if down_since is None:
                    down_since = self._clock()
                    self._fault(f"cannot open {self._line.port}: {exc}")
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            if down_since is not None:
                down_ms = max(0, round((self._clock() - down_since) * 1000))
                self._log.info("reader recovered", down_ms=down_ms)
                self._emit(DeviceRecovered(device=self.name, down_ms=down_ms))
                down_since = None
            opened = self._clock()
            reason = await self._serve(transport, protocol, rdev)
            down_since = self._clock()
            if self._buffer:
                self._reject(
                    FrameError.of(
                        FrameErrorKind.INCOMPLETE,
                        f"{len(self._buffer)} bytes of an unfinished frame when the port went away",
                        self._buffer,
                    )
                )
            self._flush_rejects()
            self._fault(f"{self._line.port} went away: {reason}")
            # A port that opens but fails at once must not be re-opened in a tight loop.
            attempt = 0 if down_since - opened >= self._max else attempt + 1
            await asyncio.sleep(self._backoff(attempt))

    async def _open(self) -> tuple[asyncio.Transport, _LineProtocol, int]:
        line = self._line
        protocol = _LineProtocol(self._on_data)
        transport, _ = await serial_asyncio_fast.create_serial_connection(
            asyncio.get_running_loop(),
            lambda: protocol,
            line.port,
            **line.framing(),
            exclusive=True,  # a second process on the same reader would steal its frames
        )
        serial_port: Any = transport.get_extra_info("serial")
        try:
            rdev = os.fstat(serial_port.fileno()).st_rdev
        except (OSError, ValueError) as exc:
            await self._close(transport, protocol)
            raise OSError(f"opened port has no device: {exc}") from exc
        self._buffer.clear()
        self._connected.set()
        self._log.info("reader port open")
        return transport, protocol, rdev

    async def _serve(self, transport: asyncio.Transport, protocol: _LineProtocol, rdev: int) -> str:
        """Until the port goes away; returns why."""
        try:
            while not protocol.lost.done():
                await asyncio.wait([protocol.lost], timeout=self._watch)
                if protocol.lost.done():
                    break
                gone = self._port_gone(rdev)
                if gone is not None:
                    await self._close(transport, protocol)
                    return gone
            return protocol.lost.result()
        finally:
            self._connected.clear()
            await self._close(transport, protocol)

    def _port_gone(self, rdev: int) -> str | None:
        """Whether the port path vanished or now names another device (a USB adapter
        unplugged without the kernel waking the reader, or re-plugged under a new name)."""
        try:
            now = os.stat(self._line.port).st_rdev
        except OSError as exc:
            return f"port path is gone ({exc.strerror})"
        if now != rdev:
            return "port path now names another device"
        return None

    @staticmethod
    async def _close(transport: asyncio.Transport, protocol: _LineProtocol) -> None:
        """Close without flushing (nothing is ever written) and wait until the transport
        has closed the port in its executor thread."""
        if not protocol.lost.done():
            transport.abort()
            await asyncio.wait([protocol.lost], timeout=2.0)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self._initial, self._max, self._rng)

    def _on_data(self, data: bytes) -> None:
        self._buffer += data
        for result in drain(self._decoder, self._buffer):
            if isinstance(result, Frame):
                self._read(result)
            else:
                self._reject(result)

    def _read(self, frame: Frame) -> None:
        now = self._clock()
        self._recent = {p: t for p, t in self._recent.items() if now - t < self._window}
        key = normalise(frame.plate)
        if key in self._recent:
            self._log.debug("duplicate read suppressed", plate=frame.plate)
            return
        if self._window > 0:
            self._recent[key] = now
        self._log.debug(
            "plate read", plate=frame.plate, colour=str(frame.colour), confidence=frame.confidence
        )
        self._emit(frame.read_by(self.name))

    def _reject(self, error: FrameError) -> None:
        report = self._rejects.add(error, self._clock())
        if report is not None:
            self._cancel_reject_timer()  # it would report what came after this one early
            self._report_rejects(report)
        elif self._reject_timer is None:
            due = self._rejects.due
            assert due is not None
            self._reject_timer = asyncio.get_running_loop().call_later(
                max(0.0, due - self._clock()), self._flush_rejects
            )

    def _cancel_reject_timer(self) -> None:
        if self._reject_timer is not None:
            self._reject_timer.cancel()
            self._reject_timer = None

    def _flush_rejects(self) -> None:
        self._cancel_reject_timer()
        report = self._rejects.flush(self._clock())
        if report is not None:
            self._report_rejects(report)

    def _report_rejects(self, rejected: FrameRejected) -> None:
        self._log.warning(
            "frames rejected",
            count=rejected.count,
            kinds=list(rejected.kinds),
            reason=rejected.reason,
            size=rejected.size,
        )
        self._emit(rejected)

    def _fault(self, message: str) -> None:
        self._log.warning("reader unavailable", message=message)
        self._emit(DeviceFault(device=self.name, code=DeviceUnavailable.code, message=message))

    def _emit(self, signal: DeviceSignal) -> None:
        assert self._sink is not None
        try:
            self._sink(signal)
        except Exception:
            # The sink is the daemon's; its bug must not take the reader down with it.
            self._log.exception("sink failed", signal=type(signal).__name__)
