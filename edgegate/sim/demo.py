"""``edgegate demo``: a whole gate on one machine — simulators, the real daemon and drivers, a
demo allow-list covering every credential type, vehicles driving through, a live view."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from edgegate.config import GateConfig, parse_config
from edgegate.core.domain import (
    Appointment,
    BlacklistEntry,
    BlacklistReason,
    Credential,
    HolderType,
    PlateColour,
    Registration,
    TemporaryPermit,
    VehicleCategory,
)
from edgegate.core.events import AccessDecided, Event, StopReason
from edgegate.daemon.gate import Gate
from edgegate.daemon.lane_runner import LaneRunner
from edgegate.sim.scenario import Behaviour, SimLane, Vehicle

DEMO_CONFIG = """
# The demo gate: a comprehensive gate with one entry and one exit lane, simulated devices
# (a pymodbus PLC simulator per lane on 127.0.0.1, plate readers on ptys) driven through the
# real Modbus and serial drivers.
[gate]
id = "demo-gate"
name = "Demo gate (simulated devices)"
kind = "comprehensive"
site = "demo"

[policy]
on_stale_allowlist = "note"
min_confidence = 0.5

[log]
path = "demo-gate.db"

[timings]
plate_wait = "4s"
pass_timeout = "20s"
close_delay = "500ms"
overstay_check_every = "5s"

[devices.sim-plc-in]
type = "simulated-plc"
travel_time = "1s"

[devices.sim-plc-out]
type = "simulated-plc"
travel_time = "1s"

[devices.sim-cam-in]
type = "simulated-plate-reader"

[devices.sim-cam-out]
type = "simulated-plate-reader"

[[lanes]]
id = "in-1"
direction = "entry"
plate_reader = "sim-cam-in"
barrier = "sim-plc-in"

[[lanes]]
id = "out-1"
direction = "exit"
plate_reader = "sim-cam-out"
barrier = "sim-plc-out"

[incident]
evacuation_lanes = ["out-1"]
"""

C = VehicleCategory


def demo_config(log_path: Path) -> GateConfig:
    text = DEMO_CONFIG.replace('path = "demo-gate.db"', f"path = {str(log_path)!r}")
    return parse_config(text, source="<demo>", base_dir=Path.cwd())


def demo_allowlist(now: datetime) -> list[Credential]:
    """Every credential type, valid around ``now``."""
    day = timedelta(days=1)
    return [
        Registration(
            id="REG-1",
            plate="苏E12345",
            colour=PlateColour.BLUE,
            category=C.ORDINARY,
            holder=HolderType.COMMUTER,
            organisation="Yangzi Petrochemical",
            valid_from=now - 30 * day,
            valid_until=now + 300 * day,
        ),
        Registration(
            id="REG-2",
            plate="苏EA7L21",
            colour=PlateColour.YELLOW,
            category=C.ENGINEERING,
            holder=HolderType.COMPANY,
            organisation="Jiangsu Pipeline Works",
            valid_from=now - 30 * day,
        ),
        Registration(
            id="REG-3",
            plate="苏E0119F",
            colour=PlateColour.WHITE,
            category=C.EMERGENCY,
            holder=HolderType.DEPARTMENT,
            organisation="Park Fire Brigade",
            valid_from=now - 300 * day,
        ),
        Registration(
            id="REG-4",
            plate="苏E77321",
            colour=PlateColour.BLUE,
            category=C.ORDINARY,
            holder=HolderType.COMPANY,
            organisation="Juren Chemical",
            valid_from=now - 300 * day,
            valid_until=now - day,
        ),  # expired
        TemporaryPermit(
            id="PER-1",
            plate="皖A8K302",
            colour=PlateColour.BLUE,
            category=C.ORDINARY,
            visitor="Hefei Valve Service",
            host="Li Na (maintenance)",
            purpose="pump seal replacement",
            valid_from=now - timedelta(hours=1),
            valid_until=now + day,
        ),
        Appointment(
            id="APT-1",
            plate="苏E6G789",
            colour=PlateColour.YELLOW,
            category=C.HAZMAT,
            window_start=now - timedelta(hours=2),
            window_end=now + day,
            destination="Yangzi Petrochemical",
            un_number="1203",
            hazard_class="3",
            waybill="EW2026112800007",
        ),
        Appointment(
            id="APT-2",
            plate="鲁C3B270",
            colour=PlateColour.YELLOW,
            category=C.HAZWASTE,
            window_start=now - timedelta(hours=2),
            window_end=now + day,
            destination="Park Hazardous Waste Centre",
            un_number="3264",
            hazard_class="8",
            waybill="EW2026112800008",
        ),
        BlacklistEntry(
            id="BL-1",
            plate="苏E99999",
            reason=BlacklistReason.SPEEDING,
            detail="82 km/h in a 30 km/h zone",
            source="park-security",
            valid_from=now - 10 * day,
        ),
    ]


def demo_traffic(lane: str) -> list[tuple[str, Vehicle]]:
    """One round of arrivals at a demo lane: (what it shows, vehicle)."""
    if lane == "in-1":
        entries: list[tuple[str, str, Behaviour, PlateColour]] = [
            ("commuter", "苏E12345", Behaviour.NORMAL, PlateColour.BLUE),
            ("hazmat appointment", "苏E6G789", Behaviour.NORMAL, PlateColour.YELLOW),
            ("blacklisted", "苏E99999", Behaviour.NORMAL, PlateColour.BLUE),
            ("visitor permit", "皖A8K302", Behaviour.NORMAL, PlateColour.BLUE),
            ("unknown vehicle", "浙B5Z661", Behaviour.NORMAL, PlateColour.BLUE),
            ("contractor backs out", "苏EA7L21", Behaviour.BACKS_OUT, PlateColour.YELLOW),
            ("expired registration", "苏E77321", Behaviour.NORMAL, PlateColour.BLUE),
            ("hazwaste appointment", "鲁C3B270", Behaviour.NORMAL, PlateColour.YELLOW),
            ("fire engine, plate not read", "苏E0119F", Behaviour.UNREADABLE, PlateColour.WHITE),
            ("engineering truck", "苏EA7L21", Behaviour.NORMAL, PlateColour.YELLOW),
        ]
    else:
        entries = [
            ("commuter leaving", "苏E12345", Behaviour.NORMAL, PlateColour.BLUE),
            ("visitor leaving", "皖A8K302", Behaviour.NORMAL, PlateColour.BLUE),
            ("tanker leaving", "苏E6G789", Behaviour.NORMAL, PlateColour.YELLOW),
            ("unknown vehicle leaving", "沪A2B468", Behaviour.NORMAL, PlateColour.BLUE),
            ("engineering truck leaving", "苏EA7L21", Behaviour.NORMAL, PlateColour.YELLOW),
            ("hazwaste truck leaving", "鲁C3B270", Behaviour.NORMAL, PlateColour.YELLOW),
        ]
    return [
        (kind, Vehicle(plate, lane, 0.0, behaviour, colour))
        for kind, plate, behaviour, colour in entries
    ]


class DemoView:
    """What an operator's screen shows: lanes, loops, barriers, recent decisions."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.decisions: deque[str] = deque(maxlen=8)
        self.outcomes: deque[str] = deque(maxlen=6)
        for runner in gate.lanes.values():
            runner.observers.append(self._observe)

    def _observe(self, runner: LaneRunner, event: Event | None) -> None:
        if isinstance(event, AccessDecided):
            when = datetime.now(UTC).strftime("%H:%M:%S")
            reasons = ", ".join(event.reasons)
            self.decisions.append(
                f"{when} {runner.setup.lane_id:<6} {event.plate:<9} {event.verdict:<8} {reasons}"
            )

    def render(self) -> Group:
        table = Table(title=f"edgegate demo — gate {self.gate.config.gate.id}")
        for col in ("lane", "dir", "state", "arming", "safety", "exit", "arm", "last decision"):
            table.add_column(col)
        for lane_cfg in self.gate.config.lanes:
            runner = self.gate.lanes[lane_cfg.id]
            sim = self.gate.plc_sims.get(lane_cfg.barrier)
            loops = sim.inputs() if sim else {}
            arm = f"{sim.position:.0%} up" if sim else "?"
            last = runner.last_decision
            table.add_row(
                lane_cfg.id,
                str(lane_cfg.direction),
                str(runner.state),
                "■" if loops.get("arming_loop") else "·",
                "■" if loops.get("safety_loop") else "·",
                "■" if loops.get("exit_loop") else "·",
                arm,
                "-" if last is None else f"{last.plate} {last.verdict}",
            )
        recent = Table(title="decisions", show_header=False)
        recent.add_column("decision")
        for line in self.decisions:
            recent.add_row(line)
        outcomes = Table(title="vehicles", show_header=False)
        outcomes.add_column("vehicle")
        for line in self.outcomes:
            outcomes.add_row(line)
        return Group(table, recent, outcomes)


async def run_demo(duration: float, log_path: Path, *, live: bool | None = None) -> int:
    """Run the demo gate for ``duration`` seconds; returns an exit code."""
    config = demo_config(log_path)
    gate = Gate(config, config_path="<demo>")
    stop = asyncio.Event()
    console = Console(stderr=False)
    runner = asyncio.create_task(gate.run(stop, reason=StopReason.REQUESTED))
    started = asyncio.create_task(gate.started.wait())
    await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        started.cancel()
        runner.result()  # raises what stopped the gate
        return 1
    assert gate.allowlist is not None
    now = datetime.now(UTC).replace(microsecond=0)
    if gate.allowlist.view.version == 0:
        await gate.allowlist.replace(demo_allowlist(now), source="demo")
    lanes = {
        lane.id: SimLane(gate.plc_sims[lane.barrier], gate.reader_sims[lane.plate_reader])
        for lane in config.lanes
    }
    view = DemoView(gate)
    # Frames written before a reader's port is open are lost (opening flushes the input).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await asyncio.gather(*(r.wait_connected() for r in gate.readers.values()))
    ending = asyncio.Event()
    traffic = asyncio.create_task(_traffic(lanes, view, ending))
    interactive = sys.stdout.isatty() if live is None else live
    try:
        if interactive:
            with Live(view.render(), console=console, refresh_per_second=4) as screen:
                end = asyncio.get_running_loop().time() + duration
                while asyncio.get_running_loop().time() < end and not runner.done():
                    screen.update(view.render())
                    await asyncio.sleep(0.25)
        else:
            await asyncio.wait({runner}, timeout=duration)
    finally:
        # No new vehicle; those in a lane drive on out of it, so the gate stops with its
        # lanes at rest rather than waiting out its drain time for a vehicle frozen mid-way.
        ending.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_LAST_VEHICLES_S):
                await asyncio.shield(traffic)
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
        stop.set()
        await runner
    for line in view.decisions:
        console.print(line, highlight=False)
    console.print(f"event log: {log_path}", highlight=False)
    return 0


#: How long the demo's last vehicles get to leave their lanes once its time is up.
_LAST_VEHICLES_S = 15.0


async def _traffic(lanes: dict[str, SimLane], view: DemoView, ending: asyncio.Event) -> None:
    """Each lane's traffic, vehicle after vehicle, until ``ending`` (the vehicle in a lane
    then finishes its way)."""

    async def lane_traffic(lane_id: str, lane: SimLane) -> None:
        while not ending.is_set():
            for kind, vehicle in demo_traffic(lane_id):
                if ending.is_set():
                    return
                outcome = await lane.drive(vehicle)
                view.outcomes.append(f"{lane_id:<6} {vehicle.plate:<9} {kind}: {outcome}")
                await asyncio.sleep(0.3)

    async with asyncio.TaskGroup() as tg:
        for lane_id, lane in lanes.items():
            tg.create_task(lane_traffic(lane_id, lane))
