"""Sink memory: central's sink taking a resend storm from many gates while its store is slow.

    python bench/sink_memory.py [--json] [--gates N] [--batches N] [--batch-events N]

Real peers on 127.0.0.1: a mosquitto broker (password file, the production ACL and queue
limits, plain listener) and the sink (``edgegate.central.sink.Sink``) in its own process,
storing into SQLite. The scenario is the end of a long outage: the sink's session exists
in the broker, every gate publishes its backlog (``--gates`` x ``--batches`` batches of
``--batch-events`` events, real hash chains), the broker queues it all, then the sink
connects and gets the whole queue at once. Meanwhile another connection takes the SQLite
write lock for ``--hold-ms`` every ``--hold-ms + --free-ms`` (a slow store, not a stalled one).

- ``rss_growth_mb``: the sink process's peak RSS while draining (sampled every 10 ms) minus
  its RSS just before connecting; the publishers and the lock holder run in this process,
  not in the sink's. The store's checkpoint when the sink closes is not included;
- ``peak_held_mb``: the sink's own count of payload bytes received and not yet committed,
  at its highest (``SinkCounters.peak_held_bytes``);
- ``events_stored``: counted in the store afterwards (each gate's events, stored once);
- ``baseline_*``: the same flood and the same slow store with the pause disabled
  (``max_inflight_bytes`` unbounded), measured in the same run.

Target: ``peak_held_mb`` <= ``budget_mb`` + one batch, and ``rss_growth_mb`` the same
whatever the backlog (the budget, the groups being decoded and committed, up to
``max_group_bytes`` each as Python objects, and SQLite's 64 MiB page cache), while
``baseline_rss_growth_mb`` grows with the backlog. The defaults (282 MB) take about 45 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._broker import Mosquitto
from edgegate.central.sink import DEFAULT_GROUP, Sink, sink_options
from edgegate.central.store import open_store
from edgegate.log.chain import GENESIS_HASH, event_hash
from edgegate.observability import configure_logging
from edgegate.sync.protocol import EventBatch, Topics, encode_batch

SITE = "bench-site"
CLIENT_ID = "bench-sink"
MB = 1 << 20
UNBOUNDED = sys.maxsize


# ------------------------------------------------------------------------------ broker


# ------------------------------------------------------------------------------ the gates


def backlog(gate: str, batches: int, batch_events: int) -> list[bytes]:
    """``batches`` encoded batches of one gate's hash chain from seq 1."""
    out: list[bytes] = []
    prev = GENESIS_HASH
    seq = 0
    for _ in range(batches):
        rows = []
        for _ in range(batch_events):
            seq += 1
            wall, mono = 1_795_000_000_000_000_000 + seq * 1000, 7_000 + seq
            data = msgpack.packb({"lane": "in-1", "plate": f"苏E{seq % 100000:05d}", "c": 0.93})
            h = event_hash(prev, gate, seq, wall, mono, "boot-1", "plate.read", "in-1", 1, data)
            rows.append((seq, wall, mono, "boot-1", "plate.read", "in-1", 1, data, prev, h))
            prev = h
        out.append(encode_batch(EventBatch.of(gate, rows)))
    return out


async def make_session(mq: Mosquitto) -> None:
    """The sink's session in the broker (as left by a sink that went down)."""
    async with aiomqtt.Client(
        "127.0.0.1",
        mq.port,
        username="central",
        password=mq.users["central"],
        identifier=CLIENT_ID,
        clean_session=False,
    ) as client:
        await client.subscribe(Topics.shared_events(DEFAULT_GROUP), qos=1)


async def publish_all(mq: Mosquitto, payloads: dict[str, list[bytes]]) -> None:
    """Every gate publishes its backlog at QoS 1 (the broker queues it for the sink)."""

    async def one(gate: str) -> None:
        async with aiomqtt.Client(
            "127.0.0.1", mq.port, username=gate, password=mq.users[gate], timeout=60
        ) as client:
            for data in payloads[gate]:
                await client.publish(Topics(SITE, gate).events, data, qos=1)

    await asyncio.gather(*(one(g) for g in payloads))


@contextlib.contextmanager
def slow_store(db: Path, hold: float, free: float) -> Iterator[None]:
    """Another writer holds the database's write lock for ``hold`` s every ``hold + free`` s."""
    stop = threading.Event()

    def interfere() -> None:
        conn = sqlite3.connect(db, isolation_level=None, timeout=60)
        try:
            while not stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                stop.wait(hold)
                conn.execute("ROLLBACK")
                stop.wait(free)
        finally:
            conn.close()

    thread = threading.Thread(target=interfere, name="slow-store", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ------------------------------------------------------------------------------ one run


def run_once(
    args: argparse.Namespace, payloads: dict[str, list[bytes]], budget: int, workdir: Path
) -> dict[str, float | int]:
    """A fresh broker and store; the backlog queued; the sink process drains it."""
    workdir.mkdir()
    mq = Mosquitto(workdir, list(payloads))
    mq.start()
    db = workdir / "central.db"
    open_store(f"sqlite:///{db}").close()  # the schema, so the lock holder can start at once
    expected = sum(len(ps) for ps in payloads.values()) * args.batch_events
    try:
        asyncio.run(make_session(mq))
        asyncio.run(publish_all(mq, payloads))
        password_file = workdir / "central.pass"
        password_file.write_text(mq.users["central"])
        cmd = [
            sys.executable,
            __file__,
            "--child",
            f"--port={mq.port}",
            f"--password-file={password_file}",
            f"--db={db}",
            f"--budget={budget}",
            f"--expect={expected}",
            f"--deadline={args.deadline}",
        ]
        with slow_store(db, args.hold_ms / 1000, args.free_ms / 1000):
            child = subprocess.run(cmd, capture_output=True, timeout=args.deadline + 30)
        if child.returncode != 0:
            tail = child.stderr.decode(errors="replace")[-2000:]
            raise SystemExit(f"sink process failed ({child.returncode}):\n{tail}")
        result: dict[str, float | int] = json.loads(child.stdout.decode().splitlines()[-1])
        with contextlib.closing(open_store(f"sqlite:///{db}")) as store:
            per_gate = args.batches * args.batch_events
            short = [g for g in payloads if store.count(g) != per_gate]
            result["events_stored"] = store.count()
        if short:
            raise SystemExit(f"gates {short[:5]} do not have their {per_gate} events stored")
        return result
    finally:
        mq.stop()


# ------------------------------------------------------------------------------ the sink process


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def peak_rss(every: float = 0.01) -> Iterator[list[int]]:
    """``[peak]``: this process's highest RSS, sampled every ``every`` s while inside."""
    peak = [_rss()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            peak[0] = max(peak[0], _rss())

    thread = threading.Thread(target=sample, name="rss", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss())


async def child(args: argparse.Namespace) -> dict[str, float | int]:
    opts = sink_options(
        f"mqtt://127.0.0.1:{args.port}",
        dsn=f"sqlite:///{args.db}",
        password=args.password,
        client_id=CLIENT_ID,
        max_inflight_bytes=args.budget,
    )
    start_rss = _rss()
    t = time.perf_counter()
    async with Sink(opts) as sink:
        with peak_rss() as peak:
            async with asyncio.timeout(args.deadline):
                while sink.counters.events < args.expect:  # noqa: ASYNC110 - a bench poll
                    await asyncio.sleep(0.05)
        seconds = time.perf_counter() - t
        c = sink.counters
    return {
        "rss_growth_mb": round((peak[0] - start_rss) / MB, 1),
        "peak_held_mb": round(c.peak_held_bytes / MB, 1),
        "seconds": round(seconds, 1),
        "read_pauses": c.read_pauses,
        "connects": c.connects,
    }


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--gates", type=int, default=50)
    parser.add_argument("--batches", type=int, default=20, help="batches per gate")
    parser.add_argument("--batch-events", type=int, default=2000, help="events per batch")
    parser.add_argument("--budget-mb", type=int, default=32, help="max_inflight_bytes in MiB")
    parser.add_argument("--hold-ms", type=float, default=40.0, help="write lock held (slow store)")
    parser.add_argument("--free-ms", type=float, default=40.0, help="write lock free")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per sink run")
    # The sink process (started by this script):
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--password-file", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        configure_logging("warning", sys.stderr)
        args.password = Path(args.password_file).read_text()
        print(json.dumps(asyncio.run(child(args))))
        return 0
    if min(args.gates, args.batches, args.batch_events, args.budget_mb) < 1:
        parser.error("--gates, --batches, --batch-events and --budget-mb must be >= 1")

    gates = [f"gate-{i:03d}" for i in range(args.gates)]
    payloads = {g: backlog(g, args.batches, args.batch_events) for g in gates}
    sizes = [len(p) for ps in payloads.values() for p in ps]
    budget = args.budget_mb * MB
    with tempfile.TemporaryDirectory(prefix="edgegate-sink-memory-") as tmp:
        bounded = run_once(args, payloads, budget, Path(tmp) / "bounded")
        baseline = run_once(args, payloads, UNBOUNDED, Path(tmp) / "unbounded")
    result: dict[str, float | int] = {
        "gates": args.gates,
        "messages": len(sizes),
        "payload_mb": round(sum(sizes) / MB, 1),
        "batch_kb": round(max(sizes) / 1024, 1),
        "events": len(sizes) * args.batch_events,
        "budget_mb": args.budget_mb,
        **bounded,
        **{f"baseline_{k}": v for k, v in baseline.items()},
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
