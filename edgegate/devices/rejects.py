"""Coalescing of a device's rejected frames: at most one report per interval.

A reader sending garbage produces a bad frame for every few bytes; reporting each would flood
the lane, the log, the sync backlog and central. :class:`RejectCoalescer` lets the first
rejection after a quiet interval through at once (a single bad frame is reported with all its
bytes, without delay) and counts the ones that follow into one ``device.frame-rejected`` event
due when the interval has passed. Pure: the caller gives the time and schedules the flush.
"""

from __future__ import annotations

from edgegate.core.events import FrameRejected
from edgegate.devices.framing import MAX_REPORTED_BYTES, FrameError

__all__ = ["RejectCoalescer"]


class _Tally:
    def __init__(self, first: FrameError) -> None:
        self.count = 0
        self.kinds: set[str] = set()
        self.reason = str(first)
        self.sample = bytearray()
        self.size = 0

    def add(self, error: FrameError) -> None:
        self.count += 1
        self.kinds.add(str(error.kind))
        room = MAX_REPORTED_BYTES - len(self.sample)
        if room > 0:
            self.sample += error.data[:room]
        self.size += error.size

    def report(self, device: str) -> FrameRejected:
        # data: at most MAX_REPORTED_BYTES of the rejected bytes, first ones first
        return FrameRejected(
            device=device,
            reason=self.reason,  # the first rejection's
            data=bytes(self.sample),
            truncated=self.size > len(self.sample),
            count=self.count,
            kinds=tuple(sorted(self.kinds)),
            size=self.size,
        )


class RejectCoalescer:
    """Counts ``device``'s rejections into at most one event per ``interval`` seconds."""

    def __init__(self, device: str, interval: float = 1.0) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.device = device
        self.interval = interval
        self._last_report: float | None = None
        self._pending: _Tally | None = None
        #: Rejections counted since the start, reported or not yet (for metrics).
        self.total = 0

    @property
    def due(self) -> float | None:
        """When the counted rejections must be reported (None: nothing pending)."""
        if self._pending is None or self._last_report is None:
            return None
        return self._last_report + self.interval

    def add(self, error: FrameError, now: float) -> FrameRejected | None:
        """Count ``error``; returns an event to send now, or None (then :attr:`due` says
        when :meth:`flush` must be called)."""
        if self._pending is None:
            self._pending = _Tally(error)
        self._pending.add(error)
        self.total += 1
        if self._last_report is None or now - self._last_report >= self.interval:
            return self.flush(now)
        return None

    def flush(self, now: float) -> FrameRejected | None:
        """The pending event, if any, whatever the time (due, or the port went away)."""
        tally, self._pending = self._pending, None
        if tally is None:
            return None
        self._last_report = now
        return tally.report(self.device)
