"""Sync drain: a gate's backlog of events, end to end to central's store, until the gate's
cursor reaches its head.

    python bench/sync_drain.py [--json] [--events N] [--batch N]

Real peers on 127.0.0.1: a mosquitto broker (password file and the production ACL of
``config/mosquitto/acl``, plain listener), ``edgegate central run`` as its own process
storing into SQLite (WAL, ``synchronous=FULL``), and the gate's uplink in this process
reading the backlog from a real event log (``--events`` appended before the clock starts).

- ``seconds``/``eps``: from starting the uplink until its durable cursor equals the log's
  head (every event stored at central, acknowledged by the sink, the cursor committed);
- ``baseline_eps``: the same batch payloads (the bytes the uplink sent) published at QoS 1
  to the broker with the same number in flight and received by a subscriber that stores
  nothing, measured in the same run (the machines are noisy: compare within a run).

Target: ``eps`` >= 100,000 with 1,000,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._broker import Mosquitto
from edgegate.central.store import open_store
from edgegate.core import events as ev
from edgegate.core.domain import PlateColour
from edgegate.log import EventLog, LogReader
from edgegate.sync.protocol import EventBatch, Topics, encode_batch
from edgegate.sync.uplink import Uplink, UplinkOptions

GATE = "gate-bench"
SITE = "bench-site"


def _event(i: int) -> ev.PlateRead:
    return ev.PlateRead(
        lane=f"in-{i % 4}",
        plate="苏E" + f"{i % 100000:05d}",
        colour=PlateColour.YELLOW,
        confidence=0.93,
        reader=f"cam-in-{i % 4}",
        image_ref=f"img/20261128/{i:08d}.jpg",
        raw=b"\x02\x10\xcb\xd5E12345\x01\x5d" + i.to_bytes(4, "big") + b"\x03",
    )


async def make_backlog(path: Path, n: int) -> tuple[int, bytes]:
    async with await EventLog.open(path, gate_id=GATE) as log:
        in_flight: deque[asyncio.Future[int]] = deque()
        for i in range(n):
            if len(in_flight) >= 4096:
                await in_flight.popleft()
            in_flight.append(log.submit(_event(i)))
        for fut in in_flight:
            await fut
        return log.head


def start_sink(mq: Mosquitto, db: Path, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        mq.central_run(f"sqlite:///{db}", "bench-sink"),
        stdout=(workdir / "sink.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


async def drain(path: Path, mq: Mosquitto, batch: int) -> tuple[float, int]:
    options = UplinkOptions(
        gate=GATE,
        site=SITE,
        host="127.0.0.1",
        port=mq.port,
        username=GATE,
        password=mq.users[GATE],
        batch_max_events=batch,
        max_inflight_events=max(40_000, 8 * batch),
        ack_timeout=30.0,
    )
    async with await EventLog.open(path, gate_id=GATE) as log:
        head = log.head[0]
        uplink = Uplink(log, options)
        t = time.perf_counter()
        async with uplink:
            await uplink.wait_synced(head)
            elapsed = time.perf_counter() - t
        return elapsed, uplink.batches_sent


def batch_payloads(path: Path, batch: int) -> list[bytes]:
    with LogReader(path) as reader:
        return [
            encode_batch(EventBatch.of(GATE, rows))
            for rows in reader.iter_rows(after=0, batch=batch)
        ]


async def baseline(payloads: list[bytes], mq: Mosquitto, in_flight: int) -> float:
    """The same bytes at QoS 1 through the broker to a subscriber that stores nothing."""
    topics = Topics(SITE, GATE)
    received = 0
    done = asyncio.Event()
    async with aiomqtt.Client(
        "127.0.0.1", mq.port, username="central", password=mq.users["central"]
    ) as sub:
        await sub.subscribe(topics.events, qos=1)

        async def consume() -> None:
            nonlocal received
            async for _message in sub.messages:
                received += 1
                if received == len(payloads):
                    done.set()
                    return

        consumer = asyncio.create_task(consume())
        async with aiomqtt.Client(
            "127.0.0.1",
            mq.port,
            username=GATE,
            password=mq.users[GATE],
            max_inflight_messages=in_flight,
        ) as pub:
            sem = asyncio.Semaphore(in_flight)

            async def send(payload: bytes) -> None:
                async with sem:
                    await pub.publish(topics.events, payload, qos=1)

            t = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for payload in payloads:
                    await sem.acquire()
                    sem.release()
                    tg.create_task(send(payload))
            await done.wait()
            elapsed = time.perf_counter() - t
        await consumer
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--events", type=int, default=1_000_000, help="backlog size")
    parser.add_argument("--batch", type=int, default=5000, help="events per MQTT batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgegate-drain-") as tmp:
        d = Path(tmp)
        mq = Mosquitto(d, [GATE])
        mq.start()
        sink = start_sink(mq, d / "central.db", d)
        try:
            log_path = d / "gate.db"
            head_seq, head_hash = asyncio.run(make_backlog(log_path, args.events))
            gc.collect()
            seconds, batches = asyncio.run(drain(log_path, mq, args.batch))
            with contextlib.closing(open_store(f"sqlite:///{d / 'central.db'}")) as store:
                stored = store.count(GATE)
                if store.head(GATE) != (head_seq, head_hash) or stored != head_seq:
                    raise SystemExit(f"central holds {stored} events, head {store.head(GATE)}")
            payloads = batch_payloads(log_path, args.batch)
            base_seconds = asyncio.run(baseline(payloads, mq, 4))
        finally:
            sink.send_signal(signal.SIGTERM)
            try:
                sink.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sink.kill()
            mq.stop()
    result = {
        "events": head_seq,
        "seconds": round(seconds, 2),
        "eps": round(head_seq / seconds),
        "baseline_eps": round(head_seq / base_seconds),
        "ratio": round(base_seconds / seconds, 3),
        "batches": batches,
        "batch_events": args.batch,
        "target_eps": 100_000,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
