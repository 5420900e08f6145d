"""A plate reader gone mad: garbage at the line's full speed, valid frames slipped in between.

Used by the flood tests and ``bench/reader_flood.py`` to show that a noisy reader costs only
itself: the lane's loops, decisions and the log go on.
"""

from __future__ import annotations

import asyncio
import time

from edgegate.sim.plate_reader import PlateReaderSimulator

__all__ = ["LineFlood"]


class LineFlood:
    """Writes ``byte`` to a simulated reader's line at ``baud`` (10 bits a byte) while
    :meth:`run` runs; :meth:`send_frame` puts a whole frame on the line between two runs of
    garbage (a frame is never cut by the flood)."""

    def __init__(
        self, sim: PlateReaderSimulator, *, baud: int = 115_200, byte: bytes = b"$"
    ) -> None:
        if len(byte) != 1 or baud <= 0:
            raise ValueError("one flood byte and a positive baud rate")
        self._sim = sim
        self._bytes_per_s = baud / 10
        self._byte = byte
        self._frames: list[tuple[bytes, asyncio.Future[float]]] = []
        #: Garbage bytes written so far.
        self.sent = 0

    def send_frame(self, frame: bytes) -> asyncio.Future[float]:
        """Queue ``frame``; the future gives the monotonic time just after it was written."""
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._frames.append((frame, done))
        return done

    async def run(self) -> None:
        """Flood until cancelled."""
        began = time.monotonic()
        owed_from = 0
        while True:
            due = round((time.monotonic() - began) * self._bytes_per_s)
            if due > owed_from:
                await self._sim.send_raw(self._byte * (due - owed_from))
                self.sent += due - owed_from
                owed_from = due
            while self._frames:
                frame, done = self._frames.pop(0)
                await self._sim.send_raw(frame)
                if not done.done():
                    done.set_result(time.monotonic())
            await asyncio.sleep(0.005)
