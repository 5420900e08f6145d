"""Idle cost of the gate daemon: memory and CPU of ``edgegate run`` with four lanes, no traffic.

    python bench/daemon_idle.py [--json] [--seconds 60] [--lanes 4] [--poll-hz 20] [--no-console]
                                [--scrape 5]

This process starts four :class:`PlcSimulator` (pymodbus, 127.0.0.1) and four
:class:`PlateReaderSimulator` (ptys), writes a gate configuration with ``modbus-tcp`` devices
polled at ``--poll-hz`` and ``serial-plate-reader`` devices on the ptys, and runs
``python -m edgegate run -c CONFIG`` as a subprocess (JSON logs at INFO into a file). With
``--console`` (the default: a booth keeps the console open all day) the gate also serves
``[http]`` on 127.0.0.1 with ``[console]`` and one guard account, and a console client in
this process logs in and holds the ``/api/live`` WebSocket from before the warm-up to the end
of the window (``console_connected``; ``console_messages``: the views it received during the
window, which an idle gate should not send). With ``--scrape SECONDS`` a client in this
process also scrapes the gate's ``/metrics`` every SECONDS, as a fleet's Prometheus would,
from before the warm-up to the end (``[http]`` is served for it without the console too):
``scrapes``, ``scrape_p99_ms`` and ``scrape_max_ms`` (each GET, from sending it to the whole
body read, over the window) and ``scrape_bytes`` (the last body's size). With
``--phases shuffled`` (the default) each PLC simulator then refuses connections for a moment,
at staggered times, so that every driver reconnects after its own jittered backoff: the polls
no longer run in the lockstep they start in, as in the field after any PLC outage (four fault
and recovery events in the daemon's log). After ``--warmup`` seconds it watches the daemon
for ``--seconds``:

- ``rss_mb``: the highest VmRSS of ``/proc/PID/status`` (sampled every 0.5 s);
- ``cpu_pct``: utime + stime of ``/proc/PID/stat`` (every thread) over the window, as a
  percentage of one core's wall time; ``main_thread_cpu_pct`` is the event-loop thread's
  share (``/proc/PID/task/PID/stat``).

The floor, measured in the same run right after: a minimal poller subprocess (pymodbus
``AsyncModbusTcpClient``, one ``read_discrete_inputs`` per PLC at the same rate, nothing
else, all started together so they poll in lockstep) for ``--floor-seconds``:
``floor_cpu_pct`` and ``floor_rss_mb``. It is the cost of the polls the daemon cannot avoid
with this Modbus library; the rest is the daemon's.

Targets: RSS <= 80 MB, CPU <= 3 % of one core, and with ``--scrape``: p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
    start_daemon,
    start_lanes,
    stop_lanes,
    write_console_accounts,
)
from edgegate.observability import configure_logging
from edgegate.sim.plc import FailMode

TARGET_RSS_MB = 80.0
TARGET_CPU_PCT = 3.0
TARGET_SCRAPE_P99_MS = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 30.0

# The floor process: one bare pymodbus client per PLC reading its inputs at the poll rate,
# nothing else imported (argv: comma-separated ports, rate in Hz).
POLLER = """
import asyncio, signal, sys, time
from pymodbus.client import AsyncModbusTcpClient

async def poll(port, period, stop):
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
    await client.connect()
    next_tick = time.monotonic()
    while not stop.is_set():
        await client.read_discrete_inputs(0, count=6, device_id=1)
        next_tick = max(next_tick + period, time.monotonic())
        await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    client.close()

async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ports = [int(p) for p in sys.argv[1].split(",")]
    period = 1.0 / float(sys.argv[2])
    await asyncio.gather(*(poll(p, period, stop) for p in ports))

asyncio.run(main())
"""


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a /proc stat file, in seconds."""
    with open(stat_path, encoding="ascii") as f:
        text = f.read()
    # The command name (field 2) may contain spaces; the fields after it are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Usage:
    rss_mb: float
    cpu_pct: float
    main_thread_cpu_pct: float
    seconds: float


async def watch(proc: asyncio.subprocess.Process, seconds: float) -> Usage:
    """Sample the process for ``seconds``: max RSS, CPU over the window."""
    pid = proc.pid
    peak = rss_mb(pid)
    t0 = time.monotonic()
    cpu0 = cpu_seconds(f"/proc/{pid}/stat")
    main0 = cpu_seconds(f"/proc/{pid}/task/{pid}/stat")
    end = t0 + seconds
    while (now := time.monotonic()) < end:
        await asyncio.sleep(min(0.5, end - now))
        if proc.returncode is not None:
            raise RuntimeError(f"process {pid} exited with {proc.returncode}")
        peak = max(peak, rss_mb(pid))
    cpu1 = cpu_seconds(f"/proc/{pid}/stat")
    main1 = cpu_seconds(f"/proc/{pid}/task/{pid}/stat")
    wall = time.monotonic() - t0
    return Usage(peak, 100 * (cpu1 - cpu0) / wall, 100 * (main1 - main0) / wall, wall)


async def stop_process(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


async def wait_polled(lanes: list[SimLaneDevices], proc: asyncio.subprocess.Process) -> None:
    """Until every simulator has answered polls (the daemon is up and running)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while not all(len(lane.plc.frames) >= 4 for lane in lanes):
        if proc.returncode is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode} at start-up")
        if loop.time() > deadline:
            raise TimeoutError("the daemon did not poll every PLC within 30 s")
        await asyncio.sleep(0.1)


async def shuffle_phases(
    lanes: list[SimLaneDevices], proc: asyncio.subprocess.Process, poll_hz: float
) -> None:
    """Take each PLC off the network for a moment, at staggered times: every driver then
    reconnects after its own jittered backoff, so the polls no longer run in the lockstep
    they start in (as in the field, where PLCs drop out and come back at any time)."""
    rng = random.Random(7)
    for lane in lanes:
        await lane.plc.set_fail_mode(FailMode.REFUSE)
        await asyncio.sleep(rng.uniform(2.0, 4.0) / poll_hz)
        await lane.plc.set_fail_mode(FailMode.NONE)
    await asyncio.sleep(1.0)
    for lane in lanes:
        lane.plc.frames.clear()
    await wait_polled(lanes, proc)


class ConsoleWatch:
    """A logged-in console holding the live WebSocket, counting the messages it receives."""

    def __init__(self, port: int) -> None:
        self.client = ConsoleClient(port)
        self.messages = 0
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.login()
        ws = await self.client.connect()
        self._listener = asyncio.create_task(self._listen(ws))

    async def _listen(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            self.messages += 1

    @property
    def connected(self) -> bool:
        ws = self.client.ws
        return ws is not None and not ws.closed and self._listener is not None

    async def stop(self) -> None:
        await self.client.close()
        if self._listener is not None:
            await asyncio.gather(self._listener, return_exceptions=True)


class Scraper:
    """Scrapes ``/metrics`` every ``every`` seconds; keeps the latencies from :meth:`mark`."""

    def __init__(self, port: int, every: float) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.every = every
        self.latencies_ms: list[float] = []
        self.size = 0
        self._counting = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def mark(self) -> None:
        """Count the scrapes from now on (the window)."""
        self.latencies_ms.clear()
        self._counting = True

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                t0 = time.perf_counter()
                async with session.get(self.url) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"/metrics answered {resp.status}")
                ms = (time.perf_counter() - t0) * 1000
                self.size = len(body)
                if self._counting:
                    self.latencies_ms.append(ms)
                await asyncio.sleep(max(0.0, self.every - ms / 1000))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            if not self._task.cancelled() and self._task.exception() is not None:
                raise RuntimeError(f"scraping failed: {self._task.exception()!r}")


@dataclass
class Measured:
    usage: Usage
    lines: list[str]
    console_connected: bool = False
    console_messages: int | None = None
    scrapes_ms: list[float] | None = None
    scrape_bytes: int = 0


async def measure_daemon(args: argparse.Namespace, tmp: Path) -> Measured:
    lanes = await start_lanes(args.lanes, tmp, travel_time=2.0)
    console: ConsoleWatch | None = None
    scraper: Scraper | None = None
    try:
        config = tmp / "gate.toml"
        text = gate_config_toml(lanes, tmp / "gate.db", poll_hz=args.poll_hz)
        port = free_port()
        if args.console:
            write_console_accounts(tmp / "accounts")
            text += console_config_toml(port, tmp / "accounts")
            console = ConsoleWatch(port)
        elif args.scrape:
            text += f'\n[http]\nbind = "127.0.0.1"\nport = {port}\n'
        if args.scrape:
            scraper = Scraper(port, args.scrape)
        config.write_text(text, encoding="utf-8")
        proc = await start_daemon(config, tmp)
        try:
            await wait_polled(lanes, proc)
            if console is not None:
                await console.start()
            if scraper is not None:
                scraper.start()
            if args.phases == "shuffled":
                await shuffle_phases(lanes, proc, args.poll_hz)
            await asyncio.sleep(args.warmup)
            for lane in lanes:  # the simulators' frame records must not grow for nothing
                lane.plc.frames.clear()
            before = 0 if console is None else console.messages
            if scraper is not None:
                scraper.mark()
            usage = await watch(proc, args.seconds)
            measured = Measured(usage, [])
            if console is not None:
                measured.console_connected = console.connected
                measured.console_messages = console.messages - before
            if scraper is not None:
                measured.scrapes_ms = sorted(scraper.latencies_ms)
                measured.scrape_bytes = scraper.size
        finally:
            if scraper is not None:
                await scraper.stop()
            if console is not None:
                await console.stop()
            code = await stop_process(proc)
        lines = (tmp / "daemon.log").read_text(encoding="utf-8", errors="replace").splitlines()
        if code != 0:
            raise RuntimeError(f"the daemon exited with {code}: {lines[-5:]}")
        measured.lines = lines
        return measured
    finally:
        await stop_lanes(lanes)


async def measure_floor(args: argparse.Namespace, tmp: Path) -> Usage:
    lanes = await start_lanes(args.lanes, tmp, travel_time=2.0)
    try:
        ports = ",".join(str(lane.plc.port) for lane in lanes)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            POLLER,
            ports,
            str(args.poll_hz),
            stdout=subprocess.DEVNULL,
        )
        try:
            await wait_polled(lanes, proc)
            await asyncio.sleep(min(args.warmup, 2.0))
            for lane in lanes:
                lane.plc.frames.clear()
            return await watch(proc, args.floor_seconds)
        finally:
            await stop_process(proc)
    finally:
        await stop_lanes(lanes)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgegate-bench-") as d:
        tmp = Path(d)
        (tmp / "daemon").mkdir()
        (tmp / "floor").mkdir()
        measured = await measure_daemon(args, tmp / "daemon")
        floor = await measure_floor(args, tmp / "floor")
    usage, lines = measured.usage, measured.lines
    scraped: dict[str, Any] = {}
    if measured.scrapes_ms:
        ms = measured.scrapes_ms
        scraped = {
            "scrapes": len(ms),
            "scrape_every_s": args.scrape,
            "scrape_p99_ms": round(percentile(ms, 99), 2),
            "scrape_max_ms": round(ms[-1], 2),
            "scrape_bytes": measured.scrape_bytes,
            "target_scrape_p99_ms": TARGET_SCRAPE_P99_MS,
        }
    return {
        "rss_mb": round(usage.rss_mb, 1),
        "cpu_pct": round(usage.cpu_pct, 2),
        "seconds": round(usage.seconds, 1),
        "lanes": args.lanes,
        "main_thread_cpu_pct": round(usage.main_thread_cpu_pct, 2),
        "floor_cpu_pct": round(floor.cpu_pct, 2),
        "floor_rss_mb": round(floor.rss_mb, 1),
        "floor_seconds": round(floor.seconds, 1),
        "poll_hz": args.poll_hz,
        "phases": args.phases,
        "log_lines": len(lines),
        "console_connected": measured.console_connected,
        "console_messages": measured.console_messages,
        "target_rss_mb": TARGET_RSS_MB,
        "target_cpu_pct": TARGET_CPU_PCT,
        **scraped,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--floor-seconds", type=float, default=20.0)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--poll-hz", type=float, default=20.0)
    parser.add_argument(
        "--console",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the console and keep one logged-in client on its live WebSocket "
        "(default); --no-console: the gate without [http]",
    )
    parser.add_argument(
        "--scrape",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="scrape /metrics every SECONDS (5: a fleet's Prometheus); 0 (default): never",
    )
    parser.add_argument(
        "--phases",
        choices=["shuffled", "startup"],
        default="shuffled",
        help="shuffled (default): reconnect each PLC once during the warm-up, so the polls "
        "run at unrelated phases; startup: keep the phases the daemon starts with",
    )
    args = parser.parse_args()
    # The simulators here log through structlog too: keep them off stdout (--json).
    configure_logging("warning", stream=sys.stderr)
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
