"""The daemon's watch on the wall clock: a step becomes a ``clock.stepped`` event, and
decisions carry it until the clock is next confirmed synchronised (docs/design.md §3).

``run`` checks every ``every`` seconds; ``at_decision`` is awaited by a lane before it decides,
so a step is noticed at a decision even between two checks. Both read the clock under one
lock, so a decision never overtakes the logging of a step another check has just seen. The
lock is only ever held long while a step is being logged (one commit), which is rare.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edgegate.core.clock import Clock
from edgegate.core.clocksteps import ClockSteps, Jump
from edgegate.core.codec import ns_to_datetime
from edgegate.core.events import ClockStepMark, ClockStepped
from edgegate.log import EventLog
from edgegate.observability import get_logger

log = get_logger("clock")

CHECK_EVERY_S = 1.0


class ClockWatch:
    """Watches ``clock`` for steps within this process and logs them to ``event_log``.
    ``synchronised``: the system's verdict (``edgegate.clock.system_clock_synchronised``)."""

    def __init__(
        self,
        clock: Clock,
        event_log: EventLog,
        synchronised: Callable[[], bool | None],
        *,
        every: float = CHECK_EVERY_S,
    ) -> None:
        self._clock = clock
        self._log = event_log
        self._synchronised = synchronised
        self.every = every
        self.steps = ClockSteps()
        self._lock = asyncio.Lock()
        self.steps.observe(clock.wall_ns(), clock.mono_ns())

    @property
    def mark(self) -> ClockStepMark | None:
        """The step decisions carry now (None: no step since the last sync)."""
        return self.steps.mark

    async def run(self) -> None:
        """Check every ``every`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.every)
            await self.check()

    async def check(self) -> None:
        """One periodic check: log a step, or take the system's word on synchronisation."""
        async with self._lock:
            jump = self.steps.observe(self._clock.wall_ns(), self._clock.mono_ns())
            verdict = self._synchronised()
            if jump is not None:
                await self._record(jump, verdict, "check")
            elif (cleared := self.steps.checked(verdict)) is not None:
                log.info("clock_synchronised", step_seq=cleared.seq)

    async def at_decision(self, lane: str) -> ClockStepMark | None:
        """Before a decision on ``lane``: a step since the last reading is logged first; the
        mark the decision carries."""
        async with self._lock:
            jump = self.steps.observe(self._clock.wall_ns(), self._clock.mono_ns())
            if jump is not None:
                await self._record(jump, self._synchronised(), lane)
            return self.steps.mark

    async def _record(self, jump: Jump, synchronised: bool | None, noticed_by: str) -> None:
        event = ClockStepped(
            offset_ns=jump.offset_ns,
            wall_before=ns_to_datetime(jump.wall_before_ns),
            wall_after=ns_to_datetime(jump.wall_after_ns),
            synchronised=synchronised,
            noticed_by=noticed_by,
        )
        seq: int | None
        try:
            seq = await self._log.append(event)
        except Exception as exc:  # the decisions still carry the step, without its seq
            log.error("log_write_failed", type=ClockStepped.TYPE, error=repr(exc))
            seq = None
        self.steps.stepped(jump, seq)
        log.warning(
            "clock_stepped",
            offset_s=jump.offset_ns / 1e9,
            synchronised=synchronised,
            seq=seq,
            noticed_by=noticed_by,
        )
