"""Child process of the retention crash trials: appends forever (printing each durable seq)
while ``[log.retention]`` seals, archives and removes as fast as it can, and SIGKILLs itself
at one named point of those steps, the n-th time it gets there.

Usage: python -m tests.crash_retention_child DB POINT N

Points (each wraps what the retention calls there, nothing in edgegate knows of them):
``seal-copied`` (segment copied to its .tmp, not yet renamed), ``seal-published`` (segment
file in place, its event not logged), ``seal-deleting`` (event logged, rows half deleted
from the active file), ``archive-published`` (archive in place, its event not logged),
``archive-logged`` (event logged, the segment file not yet removed), ``remove-logged``
(removal logged, the archive not yet deleted).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from edgegate.log import EventLog, segments
from edgegate.log import retention as retention_mod
from edgegate.log.retention import Retention, RetentionPolicy
from tests.crash_child import append_forever

POLICY = RetentionPolicy(
    timezone="Asia/Shanghai",
    max_segment_size=16 * 1024,
    keep=timedelta(0),
    archive_budget=24 * 1024,
    compression_level=3,
    acked_cursor=None,
    check_every=timedelta(milliseconds=20),
    delete_chunk=20,
    delete_pause=0.0,
)


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(point: str, nth: int) -> None:
    """Wrap the function the retention calls at ``point`` to kill this process there."""
    seen = 0

    def due() -> bool:
        nonlocal seen
        seen += 1
        return seen >= nth

    def after(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            out = fn(*args, **kw)
            if due():
                _die()
            return out

        return wrapper

    if point == "seal-copied":
        publish = segments._publish

        def before_publish(tmp: Path, final: Path) -> None:
            if final.suffix == ".db" and due():
                _die()
            publish(tmp, final)

        segments._publish = before_publish
    elif point == "seal-published":
        segments.write_segment = after(segments.write_segment)
    elif point == "archive-published":
        segments.archive_segment = after(segments.archive_segment)
    elif point in ("archive-logged", "remove-logged"):
        unlink = retention_mod._unlink
        suffix = ".db" if point == "archive-logged" else ".zst"

        def before_unlink(path: Path) -> None:
            if path.suffix == suffix and due():
                _die()
            unlink(path)

        retention_mod._unlink = before_unlink
    elif point == "seal-deleting":
        run_in_writer = EventLog.run_in_writer

        async def deleting(self: EventLog, fn: Callable[[sqlite3.Connection], Any]) -> Any:
            out = await run_in_writer(self, fn)
            if getattr(fn, "__name__", "") == "delete" and due():
                _die()
            return out

        EventLog.run_in_writer = deleting  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown point {point!r}")


async def main(path: str, point: str, nth: int) -> None:
    _arm(point, nth)
    log = await EventLog.open(path, gate_id="crash-gate")
    retention = Retention(log, POLICY, log._clock)
    retention.start()
    print("ready", flush=True)
    await append_forever(log, 4)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
