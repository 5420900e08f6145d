"""The dashboard's live updates: one poller reads :meth:`CentralStore.change_marks` every
``poll_s`` on a connection of its own and wakes every open ``/live`` stream (Server-Sent
Events) on a change; a stream with nothing new gets a heartbeat every ``heartbeat_s``.

At most ``max_streams`` streams in all and ``max_streams_per_session`` per session: the
newest stream of a session wins (a page left or a tab too many ends the oldest, which is told
``displaced``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from edgegate.central.dashboard.settings import DashboardSettings
from edgegate.central.store import AsyncStore, StoreError
from edgegate.core.clock import Clock
from edgegate.observability import get_logger

log = get_logger("central.dashboard")


@dataclass(eq=False, slots=True)
class Stream:
    """One open ``/live`` stream: woken on a change, when its client goes, when displaced."""

    session: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    changed: bool = False
    ended: str | None = None  # "gone" (client left), "displaced" (a newer stream of its session)


class LiveChanges:
    """The change poller (:meth:`start`, :meth:`stop`) and the open streams."""

    def __init__(self, watch_store: AsyncStore, settings: DashboardSettings, clock: Clock):
        self.watch_store = watch_store
        self.settings = settings
        self.clock = clock
        self.positions: dict[str, int] = {}
        self.marks: tuple[int, ...] = ()
        self.streams = 0
        self.polls = 0
        """Change-mark reads so far (tests, benchmarks)."""
        self._stopping = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._session_streams: dict[str, list[Stream]] = {}  # oldest first

    async def start(self, _app: Any = None) -> None:
        self._stopping.clear()
        self._poller = asyncio.create_task(self._poll(), name="dashboard-poller")

    async def stop(self, _app: Any = None) -> None:
        """Stop the poller and end the open streams."""
        self._stopping.set()
        self._wake()
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)

    def open(self, session: str) -> Stream | None:
        """A new stream of ``session`` (displacing its oldest ones beyond the limits), or None
        when there is no room."""
        s = self.settings
        mine = self._session_streams.get(session, [])
        while mine and (len(mine) >= s.max_streams_per_session or self.streams >= s.max_streams):
            self.end(mine[0], "displaced")
        if self.streams >= s.max_streams:
            return None
        stream = Stream(session)
        self._session_streams.setdefault(session, []).append(stream)
        self.streams += 1
        return stream

    async def serve(
        self, request: web.Request, stream: Stream, live: Callable[[], bool]
    ) -> web.StreamResponse:
        """Push changes on ``stream`` until it ends, the poller stops or ``live()`` (its
        session) is false; its slot is freed on the way out."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await resp.prepare(request)
            await resp.write(b"retry: 2000\n\n" + self._change())
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.heartbeat_s):
                        await stream.wake.wait()
                stream.wake.clear()
                if stream.ended == "displaced":
                    # The page waits until it is looked at again before reconnecting.
                    await resp.write(b"event: displaced\ndata: {}\n\n")
                    break
                if stream.ended is not None or self._stopping.is_set() or not live():
                    break
                changed, stream.changed = stream.changed, False
                await resp.write(self._change() if changed else b": alive\n\n")
        except ConnectionError:
            pass  # the page went away
        finally:
            self.end(stream, "gone")
        return resp

    def end(self, stream: Stream, reason: str) -> None:
        """Free ``stream``'s slot now (idempotent) and wake it to end."""
        if stream.ended is not None:
            return
        stream.ended = reason
        stream.wake.set()
        self.streams -= 1
        mine = self._session_streams[stream.session]
        mine.remove(stream)
        if not mine:
            del self._session_streams[stream.session]

    def _wake(self) -> None:
        for streams in self._session_streams.values():
            for stream in streams:
                stream.changed = True
                stream.wake.set()

    async def _poll(self) -> None:
        while True:
            try:
                positions, marks = await self.watch_store.run(lambda s: s.change_marks())
            except StoreError as exc:
                log.error("dashboard_watch_failed", error=str(exc))
                await asyncio.sleep(max(1.0, self.settings.poll_s))
                continue
            self.polls += 1
            if (positions, marks) != (self.positions, self.marks):
                self.positions, self.marks = positions, marks
                self._wake()
            await asyncio.sleep(self.settings.poll_s)

    def _change(self) -> bytes:
        doc = {
            "positions": self.positions,
            "marks": list(self.marks),
            "at_ns": self.clock.wall_ns(),
        }
        return b"event: change\ndata: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
