"""Console update latency: from a decision's commit to the guard's console receiving it.

    python bench/console_latency.py [--json] [--decisions 2000] [--lanes 4] [--interval 0.1]

``edgegate run`` as a process (JSON logs at INFO into a file), as in ``daemon_idle.py``:
``--lanes`` entry lanes, each a ``modbus-tcp`` driver polling a :class:`PlcSimulator` at 20 Hz
and a ``serial-plate-reader`` driver on a :class:`PlateReaderSimulator` pty (the simulators
in this process), the durable event log, ``[http]`` on 127.0.0.1 and ``[console]`` with one
guard account. One console client in this process logs in (``POST /login``, the session
cookie) and holds the ``/api/live`` WebSocket, as the booth's browser does.

A vehicle stands on every lane's arming loop; each lane's reader then sends a plate every
``--interval`` seconds on average (uniformly 0.5x to 1.5x, lanes out of step), each plate of
its own and none on the allow-list, so every read makes one ``access.decided`` (deny) and
the lane stays as it is. The first ``--warmup`` decisions are not measured.

For each measured decision (its seq and ``wall_ns`` read from the log after the run): from
its ``wall_ns`` to the arrival at the client (``time.time_ns()`` as ``receive`` returns,
before the JSON is parsed) of the first message whose view holds it in a lane's ``recent``.
The log takes ``wall_ns`` in its writer just before the INSERT that commits it (``fsync``
included), so the figure includes the commit and overstates commit-to-screen by it.
``update_p50_ms``, ``update_p99_ms``, ``update_max_ms``; ``server_*_ms`` from ``wall_ns`` to
the message's ``now_ns`` (the daemon's clock as it built the message: commit, the lane telling
the desk, the watcher waking, the view built); ``missed``: decisions no message held. A view
holds a lane's last 10 decisions and the desk hands a slow watcher only the newest view, so
a decision is missed only if 10 newer ones on its lane were committed between two messages
the client received (a stall of about 10 x ``--interval``).

Baseline, same run, after the daemon stopped: a bare aiohttp WebSocket server in a process of
its own pushes the last view the console sent (``json.dumps`` with a fresh ``now_ns`` each
time, as ``send_json`` does) at the console's message rate to the same kind of client:
``baseline_push_p50_ms``/``p99`` from ``now_ns`` to arrival. ``view_encode_ms``: median
``json.dumps`` of that view in this process.

Target: ``update_p99_ms`` <= 300.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bench._gate_fixture import (
    ConsoleClient,
    SimLaneDevices,
    console_config_toml,
    free_port,
    gate_config_toml,
    percentile,
    plate_of,
    start_daemon,
    start_lanes,
    stop_lanes,
    write_console_accounts,
)
from bench.daemon_idle import stop_process, wait_polled
from edgegate.core.domain import PlateColour
from edgegate.core.events import Loop
from edgegate.observability import configure_logging

TARGET_P99_MS = 300.0
SETTLE_S = 2.0  # after the last read: for its decision to reach the client

# The baseline's server: one WebSocket at /, pushing the view in argv[1] (a JSON file) as
# the console's envelope argv[2] times, argv[3] seconds apart; prints its port.
PUSHER = """
import asyncio, json, sys, time
from aiohttp import web

view = json.load(open(sys.argv[1], encoding="utf-8"))
count, period = int(sys.argv[2]), float(sys.argv[3])

async def live(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    next_tick = time.monotonic()
    for _ in range(count):
        await ws.send_json({"type": "view", "now_ns": time.time_ns(), "view": view})
        next_tick += period
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    await ws.close()
    return ws

async def main():
    app = web.Application()
    app.router.add_get("/", live)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@dataclass
class Received:
    """What the console client saw: per seq, the first message holding it."""

    first_seen: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (at, now_ns)
    messages: int = 0
    bytes: int = 0
    last_view: dict[str, Any] | None = None
    first_at: int = 0
    last_at: int = 0


async def listen(ws: aiohttp.ClientWebSocketResponse, seen: Received) -> None:
    async for msg in ws:
        at = time.time_ns()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        data = json.loads(msg.data)
        seen.messages += 1
        seen.bytes += len(msg.data)
        seen.first_at = seen.first_at or at
        seen.last_at = at
        view = data["view"]
        seen.last_view = view
        for lane in view["lanes"]:
            for decision in lane["recent"]:
                seen.first_seen.setdefault(decision["seq"], (at, data["now_ns"]))


async def feed(
    lanes: list[SimLaneDevices], total: int, interval: float, rng: random.Random
) -> float:
    """``total`` plates over the lanes, each lane one every ``interval`` s on average;
    returns the seconds it took."""
    counter = iter(range(total))
    started = time.monotonic()

    async def lane_feed(sims: SimLaneDevices) -> None:
        await asyncio.sleep(rng.uniform(0.0, interval))
        for i in counter:  # shared: the lanes take the plates in turn
            await sims.reader.send_read(plate_of(i), PlateColour.BLUE, 0.95)
            await asyncio.sleep(rng.uniform(0.5 * interval, 1.5 * interval))

    await asyncio.gather(*(lane_feed(s) for s in lanes))
    return time.monotonic() - started


def decisions_in(db: Path) -> list[tuple[int, int]]:
    """(seq, wall_ns) of every ``access.decided`` in the log, in order."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq, wall_ns FROM events WHERE type = 'access.decided' ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [(int(seq), int(wall)) for seq, wall in rows]


async def measure_console(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], Received]:
    rng = random.Random(args.seed)
    lanes = await start_lanes(args.lanes, tmp, travel_time=2.0)
    client: ConsoleClient | None = None
    try:
        port = free_port()
        accounts = tmp / "accounts"
        write_console_accounts(accounts)
        config = tmp / "gate.toml"
        config.write_text(
            gate_config_toml(lanes, tmp / "gate.db") + console_config_toml(port, accounts),
            encoding="utf-8",
        )
        proc = await start_daemon(config, tmp)
        try:
            await wait_polled(lanes, proc)
            for sims in lanes:
                sims.plc.set_loop(Loop.ARMING, True)
            client = ConsoleClient(port)
            await client.login()
            ws = await client.connect()
            seen = Received()
            listener = asyncio.create_task(listen(ws, seen))
            await asyncio.sleep(1.0)  # the vehicles' arrival reaches the console first
            feed_s = await feed(lanes, args.warmup + args.decisions, args.interval, rng)
            await asyncio.sleep(SETTLE_S)
            await client.close()
            await asyncio.wait_for(listener, 5.0)
        finally:
            if client is not None:
                await client.close()
            code = await stop_process(proc)
        if code != 0:
            tail = (tmp / "daemon.log").read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"the daemon exited with {code}: {tail}")
    finally:
        await stop_lanes(lanes)

    decided = decisions_in(tmp / "gate.db")
    expected = args.warmup + args.decisions
    if len(decided) != expected:
        raise RuntimeError(f"{expected} plates sent but {len(decided)} decisions in the log")
    update, server = [], []
    missed = 0
    for seq, wall_ns in decided[args.warmup :]:
        first = seen.first_seen.get(seq)
        if first is None:
            missed += 1
            continue
        at, now_ns = first
        update.append((at - wall_ns) / 1e6)
        server.append((now_ns - wall_ns) / 1e6)
    update.sort()
    server.sort()
    if not update:
        raise RuntimeError("the console received none of the decisions")
    span_s = max(1e-9, (seen.last_at - seen.first_at) / 1e9)
    return {
        "update_p50_ms": round(percentile(update, 50), 2),
        "update_p99_ms": round(percentile(update, 99), 2),
        "update_max_ms": round(update[-1], 2),
        "missed": missed,
        "decisions": args.decisions,
        "server_p50_ms": round(percentile(server, 50), 2),
        "server_p99_ms": round(percentile(server, 99), 2),
        "messages": seen.messages,
        "messages_per_s": round(seen.messages / span_s, 1),
        "message_bytes_mean": round(seen.bytes / max(1, seen.messages)),
        "decisions_per_s": round(expected / feed_s, 1),
    }, seen


async def measure_baseline(
    view: dict[str, Any], count: int, period: float, tmp: Path
) -> dict[str, float]:
    """The bare push (see the module's docstring) and ``json.dumps`` of the view."""
    encode = []
    for _ in range(200):
        t = time.perf_counter()
        json.dumps({"type": "view", "now_ns": time.time_ns(), "view": view})
        encode.append((time.perf_counter() - t) * 1e3)
    encode.sort()

    path = tmp / "view.json"
    path.write_text(json.dumps(view), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUSHER, str(path), str(count), str(period),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 30.0))
        push: list[float] = []
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/") as ws,
        ):
            async for msg in ws:
                at = time.time_ns()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                push.append((at - json.loads(msg.data)["now_ns"]) / 1e6)
    finally:
        await stop_process(proc)
    push.sort()
    return {
        "baseline_push_p50_ms": round(percentile(push, 50), 3),
        "baseline_push_p99_ms": round(percentile(push, 99), 3),
        "baseline_push_max_ms": round(push[-1], 3),
        "view_encode_ms": round(percentile(encode, 50), 3),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgegate-bench-") as d:
        tmp = Path(d)
        (tmp / "daemon").mkdir()
        result, seen = await measure_console(args, tmp / "daemon")
        assert seen.last_view is not None
        period = 1.0 / max(1.0, result["messages_per_s"])
        baseline = await measure_baseline(seen.last_view, args.decisions, period, tmp)
    return {
        **result,
        **baseline,
        "lanes": args.lanes,
        "interval_s": args.interval,
        "target_update_p99_ms": TARGET_P99_MS,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--decisions", type=int, default=2000, help="measured decisions")
    parser.add_argument("--warmup", type=int, default=40, help="decisions before measuring")
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument(
        "--interval", type=float, default=0.1, help="mean seconds between a lane's plates"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    # The simulators here log through structlog too: keep them off stdout (--json).
    configure_logging("warning", stream=sys.stderr)
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
