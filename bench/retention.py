"""Retention benchmark: a busy gate's lanes append while a week of its log rolls over,
archives and is trimmed to its budget.

    python bench/retention.py [--json] [--events 1000000] [--seed 7] [--lanes 4] [--rate 50]

The week is bench/replay.py's log (1,000,000 events over seven days, four lanes, written by
the project's own writer), cached under the temp dir (``edgegate-bench-replay-<events>-
<seed>/``, shared with that benchmark) and copied for each run. On the copy, ``--lanes``
lane tasks each append a decision (``access.decided``) and await it, ``--rate`` times a
second, as a lane does, while ``edgegate.log.retention.Retention`` (``[log.retention]``:
``keep`` 0, central having acknowledged everything, a budget of four days of archives)
takes its steps: seals the seven days one by one into segment files (copy, fsync, verify,
``log.segment-sealed``, the rows deleted from the active file in chunks), archives each
(zstd level 9, checked, ``log.segment-archived``) and removes the three oldest archives
(``log.archive-removed``). Then ``edgegate log verify``'s check runs over what is kept.

- ``lane_append_max_ms``, ``lane_append_p99_ms``: the lanes' append latency during all that;
- ``baseline_max_ms``, ``baseline_p99_ms``: the same lanes, at the same rate and for as long,
  on another copy of the week with no retention (same run); ``over_50ms`` and
  ``baseline_over_50ms`` count the appends slower than 50 ms in each (on a shared machine the
  maximum is one hiccup of the machine's, in the baseline as well);
- ``seal_s``, ``archive_s``: per day, the background time to write and verify the segment,
  and to compress and check its archive; ``delete_s``: per day, deleting the sealed rows from
  the active file, one small writer transaction after another;
- ``retention_s``: all of it, from the first step to the budget met;
- sizes in MB: ``log_mb`` (the week in one file), ``segment_mb`` (per day),
  ``archive_mb`` (per day), ``kept_mb`` (active + segments + archives at the end),
  ``active_mb`` (the active file: SQLite reuses the freed pages, it does not shrink).

Target: ``lane_append_max_ms`` <= 50 (archiving never holds a lane); ``ok`` says whether it
is met and the kept log verifies (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._gate_fixture import percentile
from bench.replay import GATE, build
from edgegate.clock import SystemClock
from edgegate.core import events as ev
from edgegate.core.domain import Direction, MatchKind, VehicleCategory
from edgegate.log import EventLog, LogReader, segments
from edgegate.log.retention import Retention, RetentionPolicy
from edgegate.log.segments import Part

MAXIMA = {"lane_append_max_ms": 50.0}
CURSOR = "sync.central"
MB = 1e6


def decision(lane: str, i: int) -> ev.AccessDecided:
    return ev.AccessDecided(
        lane=lane,
        direction=Direction.ENTRY,
        plate_read=f"苏E{i % 100000:05d}",
        plate=f"苏E{i % 100000:05d}",
        matched_plate=f"苏E{i % 100000:05d}",
        match=MatchKind.EXACT,
        verdict="allow",
        reasons=("registered",),
        category=VehicleCategory.ORDINARY,
        credential_kind="registration",
        credential_id=f"REG-{i % 5000}",
        allowlist_version=42,
        allowlist_age_s=120.0,
        allowlist_stale=False,
        read_seq=i,
        explanation="registered commuter",
    )


async def lanes_while(
    log: EventLog, lanes: int, rate: float, done: Callable[[], bool]
) -> list[float]:
    """Each lane appends a decision and awaits it, ``rate`` times a second, until ``done()``;
    every append's latency in seconds."""
    latencies: list[float] = []
    period = 1 / rate

    async def lane(k: int) -> None:
        i = 0
        next_at = time.perf_counter()
        while not done():
            t = time.perf_counter()
            await log.append(decision(f"in-{k}", i))
            latencies.append(time.perf_counter() - t)
            i += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    await asyncio.gather(*(lane(k) for k in range(lanes)))
    return latencies


def _timing(calls: list[tuple[float, int]], fn: Callable[..., Part]) -> Callable[..., Part]:
    """``fn`` recording (seconds, size of the file it wrote) of each call."""

    def timed(*args: Any, **kw: Any) -> Part:
        t = time.perf_counter()
        part = fn(*args, **kw)
        calls.append((time.perf_counter() - t, part.size()))
        return part

    return timed


async def with_retention(db: Path, lanes: int, rate: float) -> dict[str, Any]:
    sealed: list[tuple[float, int]] = []
    archived: list[tuple[float, int]] = []
    delete_s: list[float] = []
    # Timed where the retention calls them: the background thread's work, per day.
    write, archive = segments.write_segment, segments.archive_segment
    segments.write_segment = _timing(sealed, write)
    segments.archive_segment = _timing(archived, archive)
    log = await EventLog.open(db, gate_id=GATE, clock=SystemClock())
    try:
        head = log.head[0]

        def ack(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO projection_position (name, seq) VALUES (?, ?)",
                (CURSOR, head),
            )

        await log.run_in_writer(ack)  # central acknowledged the whole week
        policy = RetentionPolicy(
            timezone="Asia/Shanghai",
            max_segment_size=1 << 30,
            keep=timedelta(0),
            archive_budget=1 << 40,
            compression_level=9,
            acked_cursor=CURSOR,
        )
        finished = False

        async def retain() -> float:
            nonlocal finished
            started = time.perf_counter()
            try:
                # Seal and archive every day of the week ...
                retention = Retention(log, policy, SystemClock())
                delete = retention._delete_sealed

                async def timed_delete() -> list[str]:
                    t = time.perf_counter()
                    out = await delete()
                    if out:
                        delete_s.append(time.perf_counter() - t)
                    return out

                retention._delete_sealed = timed_delete  # type: ignore[method-assign]
                try:
                    await retention.step()
                finally:
                    await retention.aclose()
                # ... then a budget of the four newest archives.
                newest = [a for _, a in archived[-4:]]
                retention = Retention(
                    log, replace(policy, archive_budget=sum(newest)), SystemClock()
                )
                try:
                    await retention.step()
                finally:
                    await retention.aclose()
            finally:
                finished = True
            return time.perf_counter() - started

        lanes_task = asyncio.create_task(lanes_while(log, lanes, rate, lambda: finished))
        retention_s = await retain()
        latencies = await lanes_task
        usage = log.disk_usage()
    finally:
        await log.aclose()
        segments.write_segment, segments.archive_segment = write, archive
    return {
        "latencies": latencies,
        "retention_s": retention_s,
        "sealed": sealed,
        "archived": archived,
        "delete_s": delete_s,
        "usage": usage,
    }


async def without_retention(db: Path, lanes: int, rate: float, seconds: float) -> list[float]:
    log = await EventLog.open(db, gate_id=GATE, clock=SystemClock())
    try:
        end = time.perf_counter() + seconds
        return await lanes_while(log, lanes, rate, lambda: time.perf_counter() >= end)
    finally:
        await log.aclose()


def _ms(latencies: list[float]) -> tuple[float, float]:
    values = sorted(latencies)
    return round(values[-1] * 1e3, 1), round(percentile(values, 99) * 1e3, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lanes", type=int, default=4, help="lanes appending (default 4)")
    parser.add_argument("--rate", type=float, default=50.0, help="decisions/s per lane")
    parser.add_argument("--rebuild", action="store_true", help="write the week again")
    args = parser.parse_args()

    cache = Path(tempfile.gettempdir()) / f"edgegate-bench-replay-{args.events}-{args.seed}"
    week = cache / "gate.db"
    if args.rebuild or not (cache / "complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("gate.db", "gate.db-wal", "gate.db-shm", "complete"):
            (cache / name).unlink(missing_ok=True)
        asyncio.run(build(week, args.events, args.seed))
        (cache / "complete").write_text("ok\n")

    with tempfile.TemporaryDirectory(prefix="edgegate-bench-retention-") as tmp:
        work = Path(tmp)
        rolled, plain = work / "rolled" / "gate.db", work / "plain" / "gate.db"
        for db in (rolled, plain):
            db.parent.mkdir()
            shutil.copyfile(week, db)
        os.sync()  # the copies' dirty pages would otherwise stall the lanes' fsyncs
        log_mb = week.stat().st_size / MB
        run = asyncio.run(with_retention(rolled, args.lanes, args.rate))
        base = asyncio.run(without_retention(plain, args.lanes, args.rate, run["retention_s"]))
        with LogReader(rolled) as reader:
            report = reader.verify()
        lane_max, lane_p99 = _ms(run["latencies"])
        base_max, base_p99 = _ms(base)
        usage = run["usage"]
        figures: dict[str, Any] = {
            "lane_append_max_ms": lane_max,
            "lane_append_p99_ms": lane_p99,
            "baseline_max_ms": base_max,
            "baseline_p99_ms": base_p99,
            "over_50ms": sum(1 for x in run["latencies"] if x > 0.05),
            "baseline_over_50ms": sum(1 for x in base if x > 0.05),
            "appends": len(run["latencies"]),
            "baseline_appends": len(base),
            "days": len(run["sealed"]),
            "seal_s": [round(s, 2) for s, _ in run["sealed"]],
            "archive_s": [round(s, 2) for s, _ in run["archived"]],
            "delete_s": [round(s, 2) for s in run["delete_s"]],
            "retention_s": round(run["retention_s"], 1),
            "log_mb": round(log_mb, 1),
            "segment_mb": [round(b / MB, 1) for _, b in run["sealed"]],
            "archive_mb": [round(b / MB, 1) for _, b in run["archived"]],
            "kept_mb": round(usage.total / MB, 1),
            "active_mb": round(usage.active / MB, 1),
            "kept_from_seq": report.first_seq,
            "kept_events": report.events,
            "chain_ok": report.ok,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
    figures["ok"] = all(figures[k] <= v for k, v in MAXIMA.items()) and report.ok
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>20}: {value}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
