"""Replay benchmark: the technicians' replay tools on a realistic 1,000,000-event log.

    python bench/replay.py [--json] [--events 1000000] [--seed 7] [--rebuild]

The log is written by the project's own writer (``edgegate.log.EventLog``, with a clock
injected so that the events spread over a busy week), four lanes (two in, two out), vehicle
cycles built from the real event classes: arming loop, plate read, a decision taken by the
real policy on a real allow-list of 5,000 registrations (so it carries the trace this version
records: what-if re-decides from it), open command,
the arm moving and up, safety and exit loops, passed, close command, the arm down; with
denials that back out, guard confirmations and expired guard waits, tailgates, plates not
read, device faults and recoveries, rejected frames, and a daemon restart each night. The
built log is cached under the temp dir (``edgegate-bench-replay-<events>-<seed>/``), so a
rerun starts measuring at once (``--rebuild`` writes it again; ``built_s`` is null when the
cache was used).

Each figure calls the replay code in-process, exactly as ``edgegate replay`` does (the CLI
is a thin layer over these functions):

- ``verify_s``: ``replay.verify.verify`` — the hash chain of every event;
- ``timeline_s``: ``replay.timeline.timeline`` over one whole day (~143,000 events);
- ``whatif_s``: the what-if over every decision, if ``edgegate.replay.whatif`` exists in this
  tree (null otherwise);
- ``incidents_s``: ``replay.incidents.find_incidents_in_rows`` over every stored row;
- ``report_s``, ``report_mb``: ``replay.report.write_report`` for a busy window of ~50,000
  events (the first ~8.5 hours of the fourth day), the HTML file's size;
- ``baseline_scan_s``: a raw ``sqlite3`` scan of every row (all columns), same run.

Targets: ``verify_s``, ``whatif_s``, ``incidents_s`` each <= 10; ``report_s`` <= 5;
``report_mb`` <= 5; ``ok`` says whether all are met (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import importlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Generator as Gen
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgegate import __version__
from edgegate.core import events as ev
from edgegate.core.allowlist import AllowList
from edgegate.core.codec import datetime_to_ns, ns_to_datetime
from edgegate.core.domain import (
    Direction,
    GateKind,
    HolderType,
    PlateColour,
    Registration,
    VehicleCategory,
)
from edgegate.core.domain import PlateRead as PlateReadInput
from edgegate.core.policy import decide
from edgegate.core.rules import GateRules
from edgegate.log import EventLog
from edgegate.replay.incidents import find_incidents_in_rows
from edgegate.replay.source import EventFilter, open_log
from edgegate.replay.timeline import TimelineQuery, timeline
from edgegate.replay.verify import verify

MAXIMA = {
    "verify_s": 10.0,
    "whatif_s": 10.0,
    "incidents_s": 10.0,
    "report_s": 5.0,
    "report_mb": 5.0,
}

GATE = "bench-gate"
ZONE = "Asia/Shanghai"
# Monday 2026-11-23 00:00 in Shanghai: the week starts at local midnight.
START = datetime(2026, 11, 22, 16, 0, tzinfo=UTC)
DAYS = 7
LANES: tuple[tuple[str, Direction], ...] = (
    ("in-1", Direction.ENTRY),
    ("in-2", Direction.ENTRY),
    ("out-1", Direction.EXIT),
    ("out-2", Direction.EXIT),
)
PROVINCES = "苏浙皖沪鲁豫赣鄂"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


Lane = Gen[tuple[int, ev.Event], int, int]
"""A lane's traffic: yields (wall ns, event), is sent the event's seq."""


class BenchClock:
    """The injected clock: the generator sets the time before each event it submits."""

    def __init__(self) -> None:
        self.wall = datetime_to_ns(START)
        self.mono = 1_000_000_000
        self.boot = "boot-0"

    @property
    def boot_id(self) -> str:
        return self.boot

    def wall_ns(self) -> int:
        return self.wall

    def mono_ns(self) -> int:
        return self.mono


class Generator:
    """Writes vehicle cycles in time order across the lanes; keeps track of seqs itself (one
    producer, so the n-th event submitted gets seq n)."""

    def __init__(self, log: EventLog, clock: BenchClock, seed: int) -> None:
        self.log = log
        self.clock = clock
        self.rng = random.Random(seed)
        self.seq = 0
        self.pending: list[asyncio.Future[int]] = []
        self.plates = [
            self.rng.choice(PROVINCES) + self.rng.choice("ABCEF") + self._tail()
            for _ in range(5000)
        ]
        # Decisions are taken by the real policy on a real allow-list, so that each carries
        # the trace this version records (what-if re-decides from it).
        self.rules = GateRules.for_kind(GATE, GateKind.COMPREHENSIVE)
        self.allowlist = AllowList.from_credentials(
            [
                Registration(
                    id=f"REG-{plate}",
                    plate=plate,
                    colour=PlateColour.BLUE,
                    category=VehicleCategory.ORDINARY,
                    holder=HolderType.COMPANY,
                    organisation="Bench Chemicals",
                    valid_from=START - timedelta(days=30),
                    valid_until=START + timedelta(days=365),
                )
                for plate in self.plates
            ]
        )
        listed = set(self.plates)
        self.unknown = [p for p in (self._unlisted() for _ in range(500)) if p not in listed]

    def _tail(self) -> str:
        return "".join(self.rng.choice(LETTERS) for _ in range(5))

    def _unlisted(self) -> str:
        # Another province letter: never one confusable character from a listed plate.
        return self.rng.choice(PROVINCES) + self.rng.choice("GHJ") + self._tail()

    def _misread(self, plate: str) -> str:
        """``plate`` with one character read as an OCR-confusable one (or as it is)."""
        for i in range(len(plate) - 1, 1, -1):
            twin = {"0": "D", "D": "0", "8": "B", "B": "8", "2": "Z", "Z": "2", "5": "S"}.get(
                plate[i]
            )
            if twin is not None:
                return plate[:i] + twin + plate[i + 1 :]
        return plate

    async def emit(self, wall_ns: int, event: ev.Event) -> int:
        # Monotonic time advances with wall time within one boot.
        self.clock.mono += max(0, wall_ns - self.clock.wall)
        self.clock.wall = wall_ns
        self.pending.append(self.log.submit(event))
        self.seq += 1
        if len(self.pending) >= 20_000:
            await asyncio.gather(*self.pending)
            self.pending.clear()
        return self.seq

    async def restart(self, at: int) -> None:
        """The daemon stopped and started again (a new boot: a new writer, a new clock)."""
        await self.emit(at, ev.DaemonStopped(reason=ev.StopReason.SIGNAL))
        await asyncio.gather(*self.pending)
        self.pending.clear()
        await self.log.aclose()
        self.clock.boot = f"boot-{self.seq}"
        self.log = await EventLog.open(self.log.path, gate_id=GATE, clock=self.clock)
        self.clock.mono = 5_000_000_000
        self.clock.wall = at + 40_000_000_000  # 40 s down
        await self.emit(self.clock.wall, self.started())

    def started(self) -> ev.DaemonStarted:
        return ev.DaemonStarted(
            software_version=__version__,
            config_hash="cd" * 32,
            config_path="/etc/edgegate/gate.toml",
            pid=1000 + self.seq % 30000,
            timezone=ZONE,
        )

    def cycle(self, lane: str, direction: Direction, t: int) -> Lane:
        """One vehicle: yields (time, event), is sent each event's seq; returns when the lane
        is free again (ns)."""
        rng = self.rng
        ms = 1_000_000
        dev, cam = f"plc-{lane}", f"cam-{lane}"
        listed = rng.choice(self.plates)
        plate = listed

        def loop(at: int, which: ev.Loop, occupied: bool) -> tuple[int, ev.Event]:
            return at, ev.LoopChanged(lane=lane, loop=which, occupied=occupied, source=dev)

        def arm(at: int, state: ev.BarrierState) -> tuple[int, ev.Event]:
            up, down = state == ev.BarrierState.UP, state == ev.BarrierState.DOWN
            return at, ev.BarrierStateChanged(
                lane=lane, state=state, device=dev, up_limit=up, down_limit=down
            )

        yield loop(t, ev.Loop.ARMING, True)
        roll = rng.random()
        if roll < 0.01:  # no plate came
            t += 5000 * ms
            yield (t, ev.PlateNotRead(lane=lane, waited_ms=5000))
            t += 2000 * ms
            yield loop(t, ev.Loop.ARMING, False)
            return t
        t += rng.randint(150, 600) * ms
        if roll < 0.05:  # a vehicle the park does not know: refused in, a guard's out
            plate = rng.choice(self.unknown)
        elif roll < 0.08:  # one character misread: a fuzzy match, for a guard
            plate = self._misread(listed)
        confidence = round(rng.uniform(0.8, 0.99), 2)
        read = yield (
            t,
            ev.PlateRead(
                lane=lane,
                plate=plate,
                colour=PlateColour.BLUE,
                confidence=confidence,
                reader=cam,
                image_ref=f"img/{self.seq:08d}.jpg",
            ),
        )
        t += rng.randint(5, 40) * ms
        taken = decide(
            self.rules,
            direction,
            PlateReadInput(plate=plate, colour=PlateColour.BLUE, confidence=confidence),
            self.allowlist,
            ns_to_datetime(t),
        )
        verdict = str(taken.verdict)
        decision = yield (
            t,
            taken.to_event(direction=direction, plate_read=plate, lane=lane, read_seq=read),
        )
        cause = decision
        if verdict == "deny":
            t += rng.randint(3000, 20000) * ms
            yield loop(t, ev.Loop.ARMING, False)
            t += 300 * ms
            yield (t, ev.VehicleBackedOut(lane=lane, plate=plate, decision_seq=decision))
            return t
        if verdict == "confirm":
            t += rng.randint(5, 60) * 1000 * ms
            if rng.random() < 0.2:
                yield (
                    t,
                    ev.GuardWaitExpired(
                        lane=lane, plate=plate, decision_seq=decision, waited_ms=60_000
                    ),
                )
                t += 2000 * ms
                yield loop(t, ev.Loop.ARMING, False)
                return t
            cause = yield (
                t,
                ev.ManualAction(
                    lane=lane,
                    action=ev.ManualActionKind.CONFIRM,
                    operator="console:guard-wang",
                    reason="checked the permit",
                    decision_seq=decision,
                    plate=plate,
                ),
            )
        t += 20 * ms
        yield (
            t,
            ev.BarrierCommanded(
                lane=lane,
                command=ev.BarrierCommand.OPEN,
                reason="access-allowed",
                device=dev,
                cause_seq=cause,
            ),
        )
        t += 80 * ms
        yield arm(t, ev.BarrierState.MOVING)
        t += rng.randint(900, 1300) * ms
        yield arm(t, ev.BarrierState.UP)
        t += rng.randint(300, 1500) * ms
        yield loop(t, ev.Loop.ARMING, False)
        t += 200 * ms
        yield loop(t, ev.Loop.SAFETY, True)
        t += rng.randint(500, 1500) * ms
        yield loop(t, ev.Loop.SAFETY, False)
        t += 100 * ms
        yield loop(t, ev.Loop.EXIT, True)
        if rng.random() < 0.01:
            yield (
                t,
                ev.TailgateSuspected(
                    lane=lane, plate=plate, decision_seq=decision, detail="exit loop twice"
                ),
            )
        t += 300 * ms
        yield (
            t,
            ev.VehiclePassed(
                lane=lane,
                plate=plate,
                direction=direction,
                category=VehicleCategory.ORDINARY,
                credential_id=f"REG-{plate}",
                decision_seq=decision,
            ),
        )
        t += 10 * ms
        yield (
            t,
            ev.BarrierCommanded(
                lane=lane,
                command=ev.BarrierCommand.CLOSE,
                reason="vehicle-passed",
                device=dev,
            ),
        )
        t += 80 * ms
        yield arm(t, ev.BarrierState.MOVING)
        t += rng.randint(900, 1400) * ms
        yield arm(t, ev.BarrierState.DOWN)
        t += 400 * ms
        yield loop(t, ev.Loop.EXIT, False)
        if rng.random() < 0.003:  # a device fault, a burst of bad frames
            yield (t, ev.DeviceFault(lane=lane, device=cam, code="timeout", message="no answer"))
            t += rng.randint(2, 30) * 1000 * ms
            yield (
                t,
                ev.FrameRejected(
                    lane=lane, device=cam, reason="bad checksum", data=b"\x02garbage\x03"
                ),
            )
            yield (t, ev.DeviceRecovered(lane=lane, device=cam, down_ms=5000))
        return t


def lane_traffic(gen: Generator, lane: str, direction: Direction, first: int, gap: float) -> Lane:
    """A lane's vehicles one after another, for ever."""
    t = first
    while True:
        end = yield from gen.cycle(lane, direction, t)
        t = end + int(gen.rng.expovariate(1 / gap)) + 1_000_000_000


async def build(path: Path, events: int, seed: int) -> None:
    """Write the log: the lanes' events merged in time order (each event gets the time it
    happened, so the log's wall clock never steps back), a restart every night at 03:00."""
    clock = BenchClock()
    gen = Generator(await EventLog.open(path, gate_id=GATE, clock=clock), clock, seed)
    try:
        start = datetime_to_ns(START)
        await gen.emit(start, gen.started())
        # ~15 events a vehicle: the mean gap between vehicles of a lane spreads the count
        # asked for over the week (less the ~10 s a cycle takes).
        cycles_per_lane = events / 15 / len(LANES)
        gap = max(DAYS * 86_400e9 / cycles_per_lane - 10e9, 1e9)
        heap: list[tuple[int, int, Lane, ev.Event]] = []
        for i, (lane, direction) in enumerate(LANES):
            traffic = lane_traffic(gen, lane, direction, start + (i + 1) * 10**9, gap)
            t, event = next(traffic)
            heapq.heappush(heap, (t, i, traffic, event))
        restart = start + 3 * 3600 * 10**9  # 03:00 local
        while gen.seq < events:
            t, i, traffic, event = heapq.heappop(heap)
            if t >= restart:
                await gen.restart(restart)
                restart += 86_400 * 10**9
            seq = await gen.emit(max(t, clock.wall), event)
            t, event = traffic.send(seq)
            heapq.heappush(heap, (t, i, traffic, event))
        await asyncio.gather(*gen.pending)
    finally:
        await gen.log.aclose()


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true", help="write the log again")
    args = parser.parse_args()

    cache = Path(tempfile.gettempdir()) / f"edgegate-bench-replay-{args.events}-{args.seed}"
    db = cache / "gate.db"
    built_s: float | None = None
    if args.rebuild or not (cache / "complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("gate.db", "gate.db-wal", "gate.db-shm", "complete"):
            (cache / name).unlink(missing_ok=True)
        built_s, _ = _timed(lambda: asyncio.run(build(db, args.events, args.seed)))
        (cache / "complete").write_text("ok\n")

    def scan() -> int:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        n = sum(1 for _ in conn.execute("SELECT * FROM events ORDER BY seq"))
        conn.close()
        return n

    baseline_s, rows = _timed(scan)
    source = open_log(db)
    tz = source.timezone()
    day = datetime(2026, 11, 26, tzinfo=tz)
    try:
        verify_s, result = _timed(lambda: verify(source))
        timeline_s, items = _timed(
            lambda: list(timeline(source, TimelineQuery(day, day + timedelta(days=1)), tz))
        )
        incidents_s, found = _timed(lambda: find_incidents_in_rows(source.batches(), tz=tz))
        whatif_s = _whatif(source, tz)
        from edgegate.replay.report import write_report

        window = (day, day + timedelta(hours=8, minutes=30))
        out = cache / "report.html"
        report_s, _ = _timed(lambda: write_report(source, out, tz, *window))
        report_mb = out.stat().st_size / 1e6
        window_events = sum(1 for _ in source.events(EventFilter(*window)))
    finally:
        source.close()

    figures: dict[str, Any] = {
        "verify_s": round(verify_s, 2),
        "timeline_s": round(timeline_s, 2),
        "whatif_s": None if whatif_s is None else round(whatif_s, 2),
        "incidents_s": round(incidents_s, 2),
        "report_s": round(report_s, 2),
        "report_mb": round(report_mb, 2),
        "baseline_scan_s": round(baseline_s, 2),
        "events": rows,
        "chain_ok": result.ok,
        "day_items": len(items),
        "findings": len(found.findings),
        "report_events": window_events,
        "built_s": None if built_s is None else round(built_s, 1),
        "cached_log": str(db),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    figures["ok"] = all(figures[k] is None or figures[k] <= v for k, v in MAXIMA.items()) and bool(
        result.ok
    )
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>16}: {value}")
    return 0 if figures["ok"] else 1


def _whatif(source: Any, tz: Any) -> float | None:
    """The what-if over every decision, if this tree has it (another part of the issue)."""
    try:
        whatif = importlib.import_module("edgegate.replay.whatif")
    except ImportError:
        return None
    run = getattr(whatif, "what_if", None) or getattr(whatif, "whatif", None)
    if run is None:
        return None
    stored_of = getattr(whatif, "stored_allowlist_of", None)
    t = time.perf_counter()
    if stored_of is not None:  # what_if(batches, stored_allowlist=...): a Source's rows
        result = run(source.batches(), stored_allowlist=stored_of(source))
    else:
        result = run(source, tz=tz)
    if hasattr(result, "__iter__") and not isinstance(result, dict):
        for _ in result:
            pass
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
