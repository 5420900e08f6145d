"""Child process of the crash test: appends forever, printing each seq once it is durable.

Usage: python -m tests.crash_child DB PRODUCERS
Every printed seq was returned by ``append``, i.e. promised durable. The parent kills this
process with SIGKILL at a random moment and checks the promise.
"""

from __future__ import annotations

import asyncio
import os
import sys

from edgegate.core import events as ev
from edgegate.log import EventLog


async def main(path: str, producers: int) -> None:
    log = await EventLog.open(path, gate_id="crash-gate")
    print("ready", flush=True)
    await append_forever(log, producers)


async def append_forever(log: EventLog, producers: int) -> None:
    """``producers`` tasks append plate reads for ever, printing each seq once durable."""
    out = sys.stdout

    async def produce(k: int) -> None:
        i = 0
        while True:
            event = ev.PlateRead(
                lane=f"in-{k}",
                plate="苏E12345",
                confidence=0.9,
                reader=f"cam-{k}",
                raw=os.urandom(16 + i % 200),
            )
            seq = await log.append(event)
            out.write(f"{seq}\n")
            out.flush()
            i += 1

    await asyncio.gather(*(produce(k) for k in range(producers)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
