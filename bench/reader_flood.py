"""A plate reader flooding its line: what it costs the lane, the log and the daemon's memory.

    python bench/reader_flood.py [--json] [--flood-seconds S] [--baseline-seconds S]

One gate (``Gate(config).run(stop)``, in this process) with one entry lane: a real
``serial-plate-reader`` driver on a :class:`PlateReaderSimulator` pty and a real ``modbus-tcp``
driver polling a :class:`PlcSimulator` on 127.0.0.1, the real event log. Vehicles drive
through one after the other: each changes the arming, safety and exit loops, and its plate
frame is put on the line. First for ``--baseline-seconds`` on a quiet line (the baseline), then
for ``--flood-seconds`` while the line carries ``$`` at 115,200 baud (each ``$`` the start of a
frame cut short by the next) with every vehicle's frame slipped in whole between two runs of it.

Reported:

- ``loop_p99_ms``: from a loop changing on the simulator to the lane's observer seeing its
  ``loop.changed`` durable, during the flood (``baseline_loop_p99_ms``: on the quiet line);
- ``valid_frame_s``: the slowest vehicle during the flood, from its frame written to the pty to
  its ``access.decided`` durable (``baseline_valid_frame_s`` on the quiet line);
- ``events_per_s_per_reader``: ``device.frame-rejected`` events logged per second of flood;
- ``rss_growth_mb``: the process's resident memory at the end of the flood minus at its start
  (after the first ten seconds' warm-up of the flood: allocator arenas, caches).

Targets: ``loop_p99_ms`` <= 100, ``valid_frame_s`` <= 1, ``events_per_s_per_reader`` <= 5,
``rss_growth_mb`` <= 10 over 60 s of flood.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._gate_fixture import (
    SimLaneDevices,
    gate_config_toml,
    percentile,
    plate_of,
    registrations,
    start_lanes,
    stop_lanes,
)
from edgegate.config import parse_config
from edgegate.core.domain import PlateColour
from edgegate.core.events import AccessDecided, Event, FrameRejected, Loop, LoopChanged, StopReason
from edgegate.core.lane import LaneState
from edgegate.daemon.gate import Gate
from edgegate.daemon.lane_runner import LaneRunner
from edgegate.observability import configure_logging
from edgegate.sim.flood import LineFlood

TARGETS = {
    "loop_p99_ms": 100.0,
    "valid_frame_s": 1.0,
    "events_per_s_per_reader": 5.0,
    "rss_growth_mb": 10.0,
}
STEP_TIMEOUT_S = 10.0
TRAVEL_S = 0.3
WARMUP_S = 10.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Watch:
    """What the lane's observer saw, for the vehicle being driven."""

    loop_waits: dict[tuple[Loop, bool], asyncio.Future[float]] = field(default_factory=dict)
    decided: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    rejected_events: int = 0

    def observe(self, _runner: LaneRunner, event: Event | None) -> None:
        now = time.monotonic()
        if isinstance(event, LoopChanged):
            waiter = self.loop_waits.pop((event.loop, event.occupied), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)
        elif isinstance(event, AccessDecided):
            waiter = self.decided.pop(event.plate, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)

    def expect_loop(self, loop: Loop, occupied: bool) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.loop_waits[(loop, occupied)] = future
        return future

    def expect_decision(self, plate: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.decided[plate] = future
        return future


@dataclass
class Phase:
    loop_ms: list[float] = field(default_factory=list)
    frame_s: list[float] = field(default_factory=list)


async def until(cond: Any, what: str, runner: LaneRunner) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {what}; lane is {runner.state}")
        await asyncio.sleep(0.005)


async def set_loop(sims: SimLaneDevices, watch: Watch, phase: Phase, loop: Loop, on: bool) -> None:
    waiter = watch.expect_loop(loop, on)
    sims.plc.set_loop(loop, on)
    t0 = time.monotonic()
    logged = await asyncio.wait_for(waiter, STEP_TIMEOUT_S)
    phase.loop_ms.append((logged - t0) * 1e3)


async def vehicle(
    sims: SimLaneDevices,
    runner: LaneRunner,
    watch: Watch,
    phase: Phase,
    plate: str,
    flood: LineFlood | None,
) -> None:
    """One vehicle: arrives, is read, drives through once the arm is up, and leaves."""
    await set_loop(sims, watch, phase, Loop.ARMING, True)
    await until(lambda: runner.state is LaneState.PRESENT, "vehicle present", runner)
    frame = sims.reader.encoder.encode(plate, PlateColour.BLUE, 0.95)
    decided = watch.expect_decision(plate)
    if flood is None:
        await sims.reader.send_raw(frame)
        written = time.monotonic()
    else:
        written = await flood.send_frame(frame)
    phase.frame_s.append(await asyncio.wait_for(decided, STEP_TIMEOUT_S) - written)
    await until(lambda: sims.plc.position == 1.0, "arm up", runner)
    await set_loop(sims, watch, phase, Loop.SAFETY, True)
    await set_loop(sims, watch, phase, Loop.ARMING, False)
    await set_loop(sims, watch, phase, Loop.EXIT, True)
    await set_loop(sims, watch, phase, Loop.SAFETY, False)
    await set_loop(sims, watch, phase, Loop.EXIT, False)
    await until(lambda: runner.state is LaneState.IDLE, "lane idle", runner)


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    sims = (await start_lanes(1, tmp, travel_time=TRAVEL_S))[0]
    stop = asyncio.Event()
    gate_task: asyncio.Task[None] | None = None
    flooding: asyncio.Task[None] | None = None
    plates = (plate_of(i) for i in range(100_000))
    try:
        text = gate_config_toml([sims], tmp / "gate.db", close_delay="0s")
        gate = Gate(parse_config(text, source="<reader-flood>"), config_path="<reader-flood>")
        gate_task = asyncio.create_task(gate.run(stop, reason=StopReason.REQUESTED))
        started = asyncio.create_task(gate.started.wait())
        await asyncio.wait({gate_task, started}, return_when=asyncio.FIRST_COMPLETED)
        if gate_task.done():
            gate_task.result()
            raise RuntimeError("the gate stopped at start-up")
        assert gate.allowlist is not None and gate.event_log is not None
        await gate.allowlist.replace(registrations(100_000), source="bench")
        runner = gate.lanes[sims.lane]
        await next(iter(gate.readers.values())).wait_connected()
        plc_driver = next(iter(gate.plcs.values()))
        await until(lambda: plc_driver.last_inputs is not None, "first PLC poll", runner)
        watch = Watch()
        runner.observers.append(watch.observe)

        baseline = Phase()
        end = time.monotonic() + args.baseline_seconds
        while time.monotonic() < end:
            await vehicle(sims, runner, watch, baseline, next(plates), None)

        flood = LineFlood(sims.reader)
        flooding = asyncio.create_task(flood.run())
        head_before = gate.event_log.head[0]
        flood_began = time.monotonic()
        warm = Phase()
        while time.monotonic() < flood_began + min(WARMUP_S, args.flood_seconds / 2):
            await vehicle(sims, runner, watch, warm, next(plates), flood)
        rss_start = rss_mb()
        measured = Phase()
        end = flood_began + args.flood_seconds
        while time.monotonic() < end:
            await vehicle(sims, runner, watch, measured, next(plates), flood)
        rss_end = rss_mb()
        flooding.cancel()
        await asyncio.gather(flooding, return_exceptions=True)
        flood_s = time.monotonic() - flood_began
        path = gate.event_log.path
    finally:
        if flooding is not None:
            flooding.cancel()
            await asyncio.gather(flooding, return_exceptions=True)
        stop.set()
        if gate_task is not None:
            await gate_task
        await stop_lanes([sims])

    rejected = count_rejected(path, head_before)
    flood_phase = Phase(warm.loop_ms + measured.loop_ms, warm.frame_s + measured.frame_s)
    return {
        "loop_p99_ms": round(percentile(sorted(flood_phase.loop_ms), 99), 2),
        "valid_frame_s": round(max(flood_phase.frame_s), 3),
        "events_per_s_per_reader": round(rejected / flood_s, 2),
        "rss_growth_mb": round(rss_end - rss_start, 2),
        "baseline_loop_p99_ms": round(percentile(sorted(baseline.loop_ms), 99), 2),
        "baseline_valid_frame_s": round(max(baseline.frame_s), 3),
        "loop_changes": len(flood_phase.loop_ms),
        "vehicles": len(flood_phase.frame_s),
        "flood_s": round(flood_s, 1),
        "flood_bytes": flood.sent,
        "rejected_events": rejected,
        "rss_start_mb": round(rss_start, 1),
        "targets": TARGETS,
    }


def count_rejected(path: Path, after: int) -> int:
    from edgegate.log import LogReader

    with LogReader(path) as reader:
        count = 0
        while batch := reader.read(after=after, limit=1000):
            count += sum(1 for s in batch if s.type == FrameRejected.TYPE)
            after = batch[-1].seq
        return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--flood-seconds", type=float, default=60.0)
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    configure_logging(level="error")
    with tempfile.TemporaryDirectory(prefix="edgegate-flood-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    met = all(result[k] <= v for k, v in TARGETS.items())
    if args.json:
        print(json.dumps({**result, "targets_met": met}))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")
        print(f"{'targets met':>26}: {met}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
