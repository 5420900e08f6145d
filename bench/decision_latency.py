"""Decision latency: from the last byte of a plate frame on the serial line to the barrier
PLC receiving the open command, through the whole daemon, with durable logging.

    python bench/decision_latency.py [--json] [--vehicles N] [--poll-hz HZ]

One gate (``Gate(config).run(stop)``, in this process) with one entry lane: a real
``serial-plate-reader`` driver reading a :class:`PlateReaderSimulator` pty, a real
``modbus-tcp`` driver polling a :class:`PlcSimulator` on 127.0.0.1, and the real event log
(SQLite, WAL, ``synchronous=FULL``, in a temporary directory on the same disk). Every vehicle
has a plate of its own on the allow-list (no duplicate-read suppression, no re-entry).

For each vehicle: the arming loop is occupied and the benchmark waits until the lane is
PRESENT, waits a random fraction of a poll period (plate reads do not arrive in step with the
PLC poll), writes the frame to the pty and takes ``t0`` right after the write returns. The
latency ends at the simulator's record of the OPEN coil write (``PlcSimulator.commands``,
the same monotonic clock). Before the command goes out, the daemon has made ``plate.read``,
``access.decided`` and ``barrier.commanded`` durable in one commit (log-then-act). Then the
vehicle drives through (exit loop occupied, then cleared) while the next one pulls up on the
arming loop,
the lane closes the arm (travel ``--travel`` s) and the next cycle starts.

Reported, all in milliseconds: ``p50_ms``, ``p99_ms``, ``max_ms`` over ``vehicles``, and
``floor_ms`` measured in the same run = median Modbus write round trip (FC05 to a separate
simulator, pymodbus client, same event loop) + median SQLite single-row commit (WAL + FULL,
same directory), ``--floor-samples`` of each, every sample after a random pause of up to one
poll period like every plate frame (on an idle VM the code that runs after a pause runs
many times slower than back to back: ``floor_hot_ms`` is the same floor measured back to
back). ``breakdown`` gives p50/p99 of each stage (serial + decode; lane queue, policy and lane
machine; the one durable commit of the read, the decision and the command; the Modbus write
up to the simulator);
``poll_contended`` counts the commands that found the PLC's bus busy with a poll.

Target: p99 <= 5 ms. Each vehicle cycle costs about three PLC poll periods (exit loop seen,
exit cleared, arm down seen), so the run takes about N * 3.5 / poll_hz seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymodbus.client import AsyncModbusTcpClient

from bench._gate_fixture import (
    SimLaneDevices,
    gate_config_toml,
    percentile,
    plate_of,
    plc_profile,
    registrations,
    start_lanes,
    stop_lanes,
)
from edgegate.config import parse_config
from edgegate.core.domain import PlateColour
from edgegate.core.events import BarrierCommand, BarrierCommanded, Event, Loop, StopReason
from edgegate.core.lane import LaneState
from edgegate.daemon.gate import Gate
from edgegate.daemon.lane_runner import LaneRunner
from edgegate.devices.base import DeviceSignal
from edgegate.log.eventlog import connect
from edgegate.observability import configure_logging
from edgegate.sim.plc import PlcSimulator

TARGET_P99_MS = 5.0
STEP_TIMEOUT_S = 10.0


@dataclass
class Probe:
    """Timestamps (monotonic seconds) of one vehicle's way through the daemon."""

    emitted: float = 0.0  # the reader driver reported the PlateRead
    appends: dict[str, tuple[float, float]] = field(default_factory=dict)  # type -> (start, end)
    command_at: float = 0.0  # BarrierPlc.command called
    contended: bool = False  # the bus lock was held (a poll in flight) at that moment


def instrument(gate: Gate, runner: LaneRunner, probe_of: Callable[[], Probe | None]) -> None:
    """Wrap the reader's report, the log's append and the PLC's command (instance
    attributes only) to timestamp each stage of the vehicle being measured."""
    elog = gate.event_log
    assert elog is not None
    reader = next(iter(gate.readers.values()))
    plc = next(iter(gate.plcs.values()))
    emit, append, command = reader._emit, elog.append, plc.command
    append_group = elog.append_group

    def timed_emit(signal: DeviceSignal) -> None:
        probe = probe_of()
        if probe is not None and not probe.emitted:
            probe.emitted = time.monotonic()
        emit(signal)

    async def timed_append(event: Event, *, effect: Any = None) -> int:
        start = time.monotonic()
        try:
            return await append(event, effect=effect)
        finally:
            probe = probe_of()
            if probe is not None and event.TYPE not in probe.appends:
                probe.appends[event.TYPE] = (start, time.monotonic())

    async def timed_group(build: Callable[[int], Sequence[Event]]) -> list[int]:
        start = time.monotonic()
        try:
            return await append_group(build)
        finally:
            probe = probe_of()
            if probe is not None and "group" not in probe.appends:
                probe.appends["group"] = (start, time.monotonic())

    async def timed_command(cmd: BarrierCommand) -> None:
        probe = probe_of()
        if probe is not None and cmd is BarrierCommand.OPEN and not probe.command_at:
            probe.command_at = time.monotonic()
            probe.contended = plc.bus._lock.locked()
        await command(cmd)

    vars(reader)["_emit"] = timed_emit
    vars(elog)["append"] = timed_append
    vars(elog)["append_group"] = timed_group
    vars(plc)["command"] = timed_command


async def until(cond: Callable[[], bool], what: str, runner: LaneRunner) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT_S
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"waiting for {what}; lane is {runner.state}")
        await asyncio.sleep(0.002)


@dataclass
class Sample:
    latency: float
    probe: Probe
    t0: float
    received: float


async def drive(
    sims: SimLaneDevices,
    runner: LaneRunner,
    plates: list[str],
    period: float,
    travel: float,
    rng: random.Random,
    probe_box: list[Probe | None],
) -> list[Sample]:
    """Vehicles one after the other; the first must already be on the arming loop."""
    loop = asyncio.get_running_loop()
    plc, reader = sims.plc, sims.reader
    waiter: list[asyncio.Future[None]] = []

    def observe(_runner: LaneRunner, event: Event | None) -> None:
        if (
            isinstance(event, BarrierCommanded)
            and event.command is BarrierCommand.OPEN
            and waiter
            and not waiter[0].done()
        ):
            waiter[0].set_result(None)

    runner.observers.append(observe)
    samples: list[Sample] = []
    try:
        for plate in plates:
            await until(lambda: runner.state is LaneState.PRESENT, "vehicle present", runner)
            await asyncio.sleep(rng.uniform(0.0, period))
            frame = reader.encoder.encode(plate, PlateColour.BLUE, 0.95)
            waiter[:] = [loop.create_future()]
            before = len(plc.commands)
            probe = Probe()
            probe_box[0] = probe
            await reader.send_raw(frame)  # returns right after os.write, without yielding
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(waiter[0], STEP_TIMEOUT_S)
            except TimeoutError:
                raise TimeoutError(
                    f"{plate}: no open command; lane {runner.state}, "
                    f"decision {runner.last_decision}"
                ) from None
            # The command was logged; the lane's commander writes it to the PLC right after.
            await until(partial(command_arrived, plc, before), "the PLC's command", runner)
            probe_box[0] = None
            received, command = plc.commands[before]
            if command is not BarrierCommand.OPEN or received < t0:
                raise RuntimeError(f"{plate}: unexpected command {command} at {received - t0}")
            samples.append(Sample(received - t0, probe, t0, received))
            # The arm rises; the vehicle drives through once it is up, the next pulls up.
            await asyncio.sleep(travel)
            plc.set_loop(Loop.ARMING, False)
            plc.set_loop(Loop.EXIT, True)
            await until(lambda: runner.lane.loops.exit, "exit loop seen", runner)
            plc.set_loop(Loop.EXIT, False)
            plc.set_loop(Loop.ARMING, True)
    finally:
        runner.observers.remove(observe)
    return samples


def breakdown(samples: list[Sample]) -> dict[str, dict[str, float]]:
    stages: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        stages.setdefault(name, []).append(value * 1e3)

    for s in samples:
        p = s.probe
        group = p.appends.get("group")
        if not (p.emitted and group and p.command_at):
            continue
        add("serial_decode", p.emitted - s.t0)
        add("queue_policy_lane", group[0] - p.emitted)
        add("commit_read_decision_command", group[1] - group[0])
        add("to_driver", p.command_at - group[1])
        add("modbus_write", s.received - p.command_at)
    out = {}
    for name, values in stages.items():
        values.sort()
        out[name] = {
            "p50_ms": round(percentile(values, 50), 3),
            "p99_ms": round(percentile(values, 99), 3),
        }
    return out


@dataclass
class Floor:
    """Samples (seconds) of the floor's two parts: paced like the vehicles, and hot."""

    rtt: list[float] = field(default_factory=list)
    commit: list[float] = field(default_factory=list)
    rtt_hot: list[float] = field(default_factory=list)
    commit_hot: list[float] = field(default_factory=list)


async def measure_floor(path: Path, samples: int, period: float, rng: random.Random) -> Floor:
    """FC05 round trips to a simulator of its own (same event loop, pymodbus client), and
    single-row commits with the event log's pragmas (WAL, synchronous=FULL) in the same
    directory. Each paced sample follows a random pause of up to one poll period, as each
    plate frame does (on an idle machine the first instructions after a pause run on cold
    caches); the hot ones run back to back."""
    sim = PlcSimulator(plc_profile(), travel_time=1.0)
    await sim.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=1.0, retries=0)
    conn = connect(path)
    floor = Floor()
    try:
        if not await client.connect():
            raise RuntimeError("floor: cannot connect to the simulator")
        conn.execute("CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY, data BLOB)")
        stop_coil = sim.profile.coils.of(BarrierCommand.STOP)
        payload = bytes(200)

        async def rtt() -> float:
            t = time.perf_counter()
            response = await client.write_coil(stop_coil, False, device_id=sim.unit_id)
            elapsed = time.perf_counter() - t
            if response.isError():
                raise RuntimeError(f"floor: write answered {response}")
            return elapsed

        def commit() -> float:
            t = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO floor (data) VALUES (?)", (payload,))
            conn.execute("COMMIT")
            return time.perf_counter() - t

        for _ in range(20):  # warm up
            await rtt()
            commit()
        for _ in range(samples):
            floor.rtt_hot.append(await rtt())
            floor.commit_hot.append(commit())
        for _ in range(samples):
            await asyncio.sleep(rng.uniform(0.0, period))
            floor.rtt.append(await rtt())
            await asyncio.sleep(rng.uniform(0.0, period))
            floor.commit.append(commit())
        return floor
    finally:
        conn.close()
        client.close()
        await sim.stop()


def command_arrived(plc: PlcSimulator, before: int) -> bool:
    return len(plc.commands) > before


def median_ms(values: list[float]) -> float:
    return percentile(sorted(values), 50) * 1e3


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    period = 1.0 / args.poll_hz
    sims = (await start_lanes(1, tmp, travel_time=args.travel))[0]
    stop = asyncio.Event()
    gate_task: asyncio.Task[None] | None = None
    try:
        text = gate_config_toml([sims], tmp / "gate.db", poll_hz=args.poll_hz, close_delay="0s")
        config = parse_config(text, source="<decision-latency>")
        gate = Gate(config, config_path="<decision-latency>")
        gate_task = asyncio.create_task(gate.run(stop, reason=StopReason.REQUESTED))
        started = asyncio.create_task(gate.started.wait())
        await asyncio.wait({gate_task, started}, return_when=asyncio.FIRST_COMPLETED)
        if gate_task.done():
            gate_task.result()
            raise RuntimeError("the gate stopped at start-up")
        assert gate.allowlist is not None
        total = args.warmup + args.vehicles
        await gate.allowlist.replace(registrations(total), source="bench")
        runner = gate.lanes[sims.lane]
        await next(iter(gate.readers.values())).wait_connected()
        plc_driver = next(iter(gate.plcs.values()))
        await until(lambda: plc_driver.last_inputs is not None, "first PLC poll", runner)

        probe_box: list[Probe | None] = [None]
        instrument(gate, runner, lambda: probe_box[0])
        plates = [plate_of(i) for i in range(total)]
        sims.plc.set_loop(Loop.ARMING, True)
        started_at = time.monotonic()
        samples = await drive(sims, runner, plates, period, args.travel, rng, probe_box)
        elapsed = time.monotonic() - started_at
        await until(lambda: runner.state is LaneState.PRESENT, "last vehicle gone", runner)
        measured = samples[args.warmup :]

        # The floor, in the same run, with the gate still running (idle, polling).
        floor = await measure_floor(tmp / "floor.db", args.floor_samples, period, rng)
    finally:
        stop.set()
        if gate_task is not None:
            await gate_task
        await stop_lanes([sims])

    lat = sorted(s.latency * 1e3 for s in measured)
    floor_modbus, floor_commit = median_ms(floor.rtt), median_ms(floor.commit)
    floor_hot = median_ms(floor.rtt_hot) + median_ms(floor.commit_hot)
    return {
        "p50_ms": round(percentile(lat, 50), 3),
        "p99_ms": round(percentile(lat, 99), 3),
        "max_ms": round(lat[-1], 3),
        "vehicles": len(lat),
        "floor_ms": round(floor_modbus + floor_commit, 3),
        "floor_modbus_rtt_ms": round(floor_modbus, 3),
        "floor_commit_ms": round(floor_commit, 3),
        "floor_p99_ms": round(
            percentile(sorted(a + b for a, b in zip(floor.rtt, floor.commit, strict=True)), 99)
            * 1e3,
            3,
        ),
        "floor_commit_p99_ms": round(percentile(sorted(floor.commit), 99) * 1e3, 3),
        "floor_hot_ms": round(floor_hot, 3),
        "target_p99_ms": TARGET_P99_MS,
        "poll_hz": args.poll_hz,
        "poll_contended": sum(1 for s in measured if s.probe.contended),
        "run_s": round(elapsed, 1),
        "breakdown": breakdown(measured),
        "sqlite": sqlite3.sqlite_version,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--vehicles", type=int, default=2000, help="measured vehicles (>= 2000)")
    parser.add_argument("--warmup", type=int, default=50, help="vehicles before measuring")
    parser.add_argument("--poll-hz", type=float, default=20.0, help="PLC poll rate (config)")
    parser.add_argument("--travel", type=float, default=0.01, help="simulated arm travel, s")
    parser.add_argument("--floor-samples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--allow-short", action="store_true", help="allow fewer than 2000 vehicles (smoke runs)"
    )
    args = parser.parse_args()
    if args.vehicles < 2000 and not args.allow_short:
        parser.error("--vehicles must be at least 2000 (use --allow-short for a smoke run)")
    with tempfile.TemporaryDirectory(prefix="edgegate-bench-") as tmp:
        directory = Path(tmp)
        # The daemon's own JSON log lines, rendered as in production, into a file.
        with (directory / "gate.log").open("w", encoding="utf-8") as stream:
            configure_logging("info", stream=stream)
            result = asyncio.run(run(args, directory))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            if key == "breakdown":
                print(f"{'breakdown':>22}:        p50      p99")
                for stage, figures in value.items():
                    print(f"{stage:>22}: {figures['p50_ms']:8.3f} {figures['p99_ms']:8.3f}")
            else:
                print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
