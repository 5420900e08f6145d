"""How long a full allow-list snapshot holds up the events of a running gate.

    python bench/snapshot_stall.py [--json] [--entries N] [--seed S]

A producer appends one event every 10 ms (a busy lane) to a real event log while
``AllowListService.replace`` applies a snapshot of N realistic credentials (default
1,000,000, the generator of ``bench/allowlist.py``) on an empty list and then again on the
full one. Printed:

- ``staged_append_max_ms``: the longest the producer waited for an append during the two
  snapshots; ``staged_apply_s``: how long the second one took;
- ``one_transaction_append_max_ms`` / ``one_transaction_apply_s``: the same with the whole
  list written in the snapshot event's own transaction (``store.write_snapshot`` as its
  effect, what the service did before), measured in the same run as the baseline;
- ``stall_ratio`` = staged / one-transaction longest wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.allowlist import Generator, counts_for, generate
from edgegate.allowlist import store
from edgegate.allowlist.service import AllowListService
from edgegate.core import events as ev
from edgegate.core.domain import Credential
from edgegate.log import EventLog
from edgegate.observability import configure_logging

Apply = Callable[[AllowListService, EventLog, list[Credential], int], Awaitable[None]]


async def staged(
    service: AllowListService, _log: EventLog, entries: list[Credential], _v: int
) -> None:
    await service.replace(entries, source="bench")


async def one_transaction(
    _service: AllowListService, log: EventLog, entries: list[Credential], version: int
) -> None:
    prepared = await asyncio.to_thread(store.prepare_snapshot, entries)
    event = ev.AllowListUpdated(
        kind=ev.AllowListUpdateKind.SNAPSHOT,
        version=version,
        previous_version=version - 1,
        source="bench",
        upserted=len(entries),
        removed=0,
        entries=len(entries),
        content_hash=store.rows_hash(prepared.rows).hex(),
    )
    now = datetime.now(UTC)

    def effect(conn: sqlite3.Connection, _seq: int) -> None:
        store.write_snapshot(conn, prepared, version, now, "bench")

    await log.append(event, effect=effect)


async def measure(path: Path, entries: list[Credential], apply: Apply) -> tuple[float, float]:
    """(longest append wait in ms over two snapshots, seconds the second one took)."""
    async with await EventLog.open(path, gate_id="bench-gate") as log:
        service = await AllowListService.open(log)
        waits: list[float] = []
        stop = asyncio.Event()

        async def lane() -> None:
            event = ev.LoopChanged(lane="in-1", loop=ev.Loop.ARMING, occupied=True, source="plc")
            while not stop.is_set():
                t = time.perf_counter()
                await log.append(event)
                waits.append(time.perf_counter() - t)
                await asyncio.sleep(0.01)

        producer = asyncio.create_task(lane())
        took = 0.0
        for version in (1, 2):
            t = time.perf_counter()
            await apply(service, log, entries, version)
            took = time.perf_counter() - t
        stop.set()
        await producer
    return max(waits) * 1e3, took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    configure_logging("warning", stream=sys.stderr)
    entries = generate(Generator(args.seed), counts_for(args.entries))
    with tempfile.TemporaryDirectory(prefix="edgegate-bench-") as tmp:
        base_wait, base_s = asyncio.run(measure(Path(tmp) / "one.db", entries, one_transaction))
        wait, took = asyncio.run(measure(Path(tmp) / "staged.db", entries, staged))
    result: dict[str, Any] = {
        "entries": args.entries,
        "staged_append_max_ms": round(wait, 1),
        "staged_apply_s": round(took, 2),
        "one_transaction_append_max_ms": round(base_wait, 1),
        "one_transaction_apply_s": round(base_s, 2),
        "stall_ratio": round(wait / base_wait, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>30}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
