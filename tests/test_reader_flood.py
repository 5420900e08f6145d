"""A plate reader flooding its line costs only itself: the real daemon, a pty reader sent
garbage at 115,200 baud, a PLC simulator whose loops change under it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from edgegate.core.domain import PlateColour
from edgegate.core.events import (
    AccessDecided,
    BarrierCommand,
    FrameRejected,
    Loop,
    LoopChanged,
    VehiclePassed,
)
from edgegate.daemon.inbox import READER_CAPACITY, URGENT_CAPACITY
from edgegate.sim.flood import LineFlood
from tests.eventually import eventually
from tests.gate_harness import ALLOWED, LogView, RunningGate, one_lane_config, wait_position


async def changed(log: LogView, loop: Loop, occupied: bool, after: int) -> int:
    """The seq of the lane's logging that ``loop`` became ``occupied`` (within a second)."""
    found = await log.wait_for(
        LoopChanged,
        lane="l1",
        after=after,
        where=lambda e: e.loop is loop and e.occupied is occupied,
        within=1.0,
    )
    return found.seq


async def test_loops_decisions_and_the_safety_loop_go_on_while_a_reader_floods(
    tmp_path: Path,
) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        plc, reader, log, trail = g.plc(), g.reader(), g.log, g.trail()
        inbox = g.gate.lanes["l1"].inbox
        head = log.head
        flood = LineFlood(reader)
        flooding = asyncio.create_task(flood.run())
        began = time.monotonic()
        try:
            await eventually(lambda: log.of(FrameRejected, after=head) != [], "flood reported")
            # Every change of the arming loop is logged while the line floods.
            seq = head
            for occupied in (True, False, True, False):
                plc.set_loop(Loop.ARMING, occupied)
                seq = await changed(log, Loop.ARMING, occupied, seq)
                assert inbox.urgent_pending <= URGENT_CAPACITY
                assert inbox.reader_pending <= READER_CAPACITY

            # A vehicle arrives; its frame reaches the reader between two runs of garbage.
            plc.set_loop(Loop.ARMING, True)
            seq = await changed(log, Loop.ARMING, True, seq)
            await flood.send_frame(reader.encoder.encode(ALLOWED, PlateColour.BLUE, 0.95, ""))
            decided = await log.wait_for(
                AccessDecided, lane="l1", after=seq, where=lambda e: e.plate == ALLOWED
            )
            assert decided.event.verdict == "allow"
            await wait_position(plc, 1.0)

            # It stops under the arm, on the safety loop, past the close delay: the arm stays up.
            plc.set_loop(Loop.SAFETY, True)
            plc.set_loop(Loop.ARMING, False)
            plc.set_loop(Loop.EXIT, True)
            seq = await changed(log, Loop.SAFETY, True, seq)
            await asyncio.sleep(1.0)  # five close delays: time enough for a wrong close
            assert trail.of(BarrierCommand.CLOSE) == []
            assert plc.position == 1.0

            plc.set_loop(Loop.SAFETY, False)
            seq = await changed(log, Loop.SAFETY, False, seq)
            plc.set_loop(Loop.EXIT, False)
            await log.wait_for(VehiclePassed, lane="l1", after=decided.seq)
            await trail.wait(BarrierCommand.CLOSE)
            await wait_position(plc, 0.0)
            await eventually(lambda: flood.sent > 11_520 * 3, "3 s of flood", within=10.0)
        finally:
            flooding.cancel()
            await asyncio.gather(flooding, return_exceptions=True)
        # The flood cost the log about one event a second, and every byte is counted (the
        # reader reports what it still counted within a second; the last ``$`` may still wait
        # for the end of its frame).
        await eventually(
            lambda: sum(r.event.size for r in log.of(FrameRejected, after=head)) >= flood.sent - 1,
            "every flooded byte counted",
        )
        elapsed = time.monotonic() - began
        assert len(log.of(FrameRejected, after=head)) <= elapsed + 2
