"""The running gate as systemd sees it (``Type=notify``): ``READY=1``, ``STATUS=``,
``WATCHDOG=1`` and ``STOPPING=1`` through :class:`~edgegate.daemon.sd_notify.Notifier`.

``WATCHDOG=1`` is sent only after a no-op job went through the log writer's queue and came
back within the half period, from a task on the event loop: a blocked loop or a stuck writer
stops the pings, and systemd restarts the daemon. A commit that fails (a full disk while
``[log.on_write_failure]`` holds) still came back: the writer is alive, the gate runs on and
says so in ``STATUS=``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import TYPE_CHECKING

from edgegate.daemon.sd_notify import Notifier
from edgegate.daemon.status import gate_status
from edgegate.log import LogWriteError
from edgegate.observability import get_logger

if TYPE_CHECKING:
    from edgegate.daemon.gate import Gate

log = get_logger("systemd")

#: Seconds between looks at the gate's status; a change is sent at most this often.
STATUS_EVERY_S = 1.0
FIRST_HEALTH_WAIT_S = 2.0  # READY=1 is not held longer for a health poll


def _noop(_conn: sqlite3.Connection) -> None:
    return None


class SystemdReporter:
    """Tells systemd about ``gate``: :meth:`run` from when its lanes and HTTP server run
    until cancelled; :meth:`stopping` when the gate begins to stop."""

    def __init__(self, notifier: Notifier, gate: Gate) -> None:
        self.notifier = notifier
        self.gate = gate
        self.status = ""  # the STATUS= line last sent
        self.pings = 0  # WATCHDOG=1 sent
        self._withheld = False

    async def run(self) -> None:
        if not self.notifier.enabled:
            return
        if self.gate.health is not None:
            # The first STATUS= names what is not ready; a poll takes milliseconds.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_HEALTH_WAIT_S):
                    await self.gate.health.reported.wait()
        self.notifier.send(READY="1", STATUS=self._status_line())
        log.info("sd_notify_ready", status=self.status)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._keep_status())
            interval = self.notifier.watchdog_interval
            if interval is not None:
                tg.create_task(self._watchdog(interval))

    def stopping(self) -> None:
        self.notifier.send(STOPPING="1", STATUS="stopping: finishing the lanes' cycles")

    def _status_line(self) -> str:
        gate, behind_s = self.gate, None
        problems: tuple[str, ...] = ()
        health = gate.health
        if health is not None:
            if health.sync_lag_s is not None:
                behind_s = int(health.sync_lag_s)
            summary = health.summary()
            if not summary.ready:
                problems = (summary.line(),)
        self.status = gate_status(gate, behind_s=behind_s, problems=problems).line()
        return self.status

    async def _keep_status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            sent = self.status
            if self._status_line() != sent:
                self.notifier.send(STATUS=self.status)

    async def _watchdog(self, interval: float) -> None:
        """Ping every ``interval`` s while the writer answers a probe within ``interval``.

        One probe at a time: while the writer is stuck, the same probe is waited for again
        rather than more queued behind it."""
        loop = asyncio.get_running_loop()
        elog = self.gate.event_log
        assert elog is not None
        probe: asyncio.Future[None] | None = None
        try:
            while True:
                began = loop.time()
                if probe is None:
                    probe = asyncio.ensure_future(elog.run_in_writer(_noop))
                done, _ = await asyncio.wait({probe}, timeout=interval)
                if done:
                    exc = probe.exception()
                    probe = None
                    # A failed commit came back through the writer: it is alive (disk full).
                    if exc is None or isinstance(exc, LogWriteError):
                        self._ping()
                    else:
                        self._withhold(f"the log writer failed: {exc!r}")
                else:
                    self._withhold(f"the log writer did not answer within {interval:g} s")
                await asyncio.sleep(max(0.0, interval - (loop.time() - began)))
        finally:
            if probe is not None:
                probe.cancel()

    def _ping(self) -> None:
        if self.notifier.send(WATCHDOG="1"):
            self.pings += 1
        if self._withheld:
            log.info("watchdog_resumed")
        self._withheld = False

    def _withhold(self, why: str) -> None:
        if not self._withheld:  # once per outage
            log.error("watchdog_withheld", reason=why, consequence="systemd restarts the gate")
        self._withheld = True


__all__ = ["SystemdReporter"]
