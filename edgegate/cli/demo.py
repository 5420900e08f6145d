"""``edgegate demo``: a whole gate on one machine — simulators, the real daemon and drivers, the
demo allow-list (``edgegate.sim.demo``), vehicles driving through, a live view."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from edgegate.core.events import AccessDecided, Event, StopReason
from edgegate.daemon.gate import Gate
from edgegate.daemon.lane_runner import LaneRunner
from edgegate.sim.demo import demo_allowlist, demo_config, demo_traffic
from edgegate.sim.scenario import SimLane


class DemoView:
    """What an operator's screen shows: lanes, loops, barriers, recent decisions."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.decisions: deque[str] = deque(maxlen=8)
        self.outcomes: deque[str] = deque(maxlen=6)
        for runner in gate.lanes.values():
            runner.observers.append(self._observe)

    def _observe(self, runner: LaneRunner, event: Event | None) -> None:
        if isinstance(event, AccessDecided):
            when = datetime.now(UTC).strftime("%H:%M:%S")
            reasons = ", ".join(event.reasons)
            self.decisions.append(
                f"{when} {runner.setup.lane_id:<6} {event.plate:<9} {event.verdict:<8} {reasons}"
            )

    def render(self) -> Group:
        table = Table(title=f"edgegate demo — gate {self.gate.config.gate.id}")
        for col in ("lane", "dir", "state", "arming", "safety", "exit", "arm", "last decision"):
            table.add_column(col)
        for lane_cfg in self.gate.config.lanes:
            runner = self.gate.lanes[lane_cfg.id]
            sim = self.gate.sims.plcs.get(lane_cfg.barrier)
            loops = sim.inputs() if sim else {}
            arm = f"{sim.position:.0%} up" if sim else "?"
            last = runner.last_decision
            table.add_row(
                lane_cfg.id,
                str(lane_cfg.direction),
                str(runner.state),
                "■" if loops.get("arming_loop") else "·",
                "■" if loops.get("safety_loop") else "·",
                "■" if loops.get("exit_loop") else "·",
                arm,
                "-" if last is None else f"{last.plate} {last.verdict}",
            )
        recent = Table(title="decisions", show_header=False)
        recent.add_column("decision")
        for line in self.decisions:
            recent.add_row(line)
        outcomes = Table(title="vehicles", show_header=False)
        outcomes.add_column("vehicle")
        for line in self.outcomes:
            outcomes.add_row(line)
        return Group(table, recent, outcomes)


async def run_demo(duration: float, log_path: Path, *, live: bool | None = None) -> int:
    """Run the demo gate for ``duration`` seconds; returns an exit code."""
    config = demo_config(log_path)
    gate = Gate(config, config_path="<demo>")
    stop = asyncio.Event()
    console = Console(stderr=False)
    runner = asyncio.create_task(gate.run(stop, reason=StopReason.REQUESTED))
    started = asyncio.create_task(gate.started.wait())
    await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        started.cancel()
        runner.result()  # raises what stopped the gate
        return 1
    assert gate.allowlist is not None
    now = datetime.now(UTC).replace(microsecond=0)
    if gate.allowlist.view.version == 0:
        await gate.allowlist.replace(demo_allowlist(now), source="demo")
    lanes = {
        lane.id: SimLane(gate.sims.plcs[lane.barrier], gate.sims.readers[lane.plate_reader])
        for lane in config.lanes
    }
    view = DemoView(gate)
    # Frames written before a reader's port is open are lost (opening flushes the input).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await asyncio.gather(*(r.wait_connected() for r in gate.readers.values()))
    ending = asyncio.Event()
    traffic = asyncio.create_task(_traffic(lanes, view, ending))
    interactive = sys.stdout.isatty() if live is None else live
    try:
        if interactive:
            with Live(view.render(), console=console, refresh_per_second=4) as screen:
                end = asyncio.get_running_loop().time() + duration
                while asyncio.get_running_loop().time() < end and not runner.done():
                    screen.update(view.render())
                    await asyncio.sleep(0.25)
        else:
            await asyncio.wait({runner}, timeout=duration)
    finally:
        # No new vehicle; those in a lane drive on out of it, so the gate stops with its
        # lanes at rest rather than waiting out its drain time for a vehicle frozen mid-way.
        ending.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_LAST_VEHICLES_S):
                await asyncio.shield(traffic)
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
        stop.set()
        await runner
    for line in view.decisions:
        console.print(line, highlight=False)
    console.print(f"event log: {log_path}", highlight=False)
    return 0


#: How long the demo's last vehicles get to leave their lanes once its time is up.
_LAST_VEHICLES_S = 15.0


async def _traffic(lanes: dict[str, SimLane], view: DemoView, ending: asyncio.Event) -> None:
    """Each lane's traffic, vehicle after vehicle, until ``ending`` (the vehicle in a lane
    then finishes its way)."""

    async def lane_traffic(lane_id: str, lane: SimLane) -> None:
        while not ending.is_set():
            for kind, vehicle in demo_traffic(lane_id):
                if ending.is_set():
                    return
                outcome = await lane.drive(vehicle)
                view.outcomes.append(f"{lane_id:<6} {vehicle.plate:<9} {kind}: {outcome}")
                await asyncio.sleep(0.3)

    async with asyncio.TaskGroup() as tg:
        for lane_id, lane in lanes.items():
            tg.create_task(lane_traffic(lane_id, lane))
