"""The park demo's material (``edgegate demo --park``, run by ``edgegate.cli.demo_park``): two
demo gates syncing with central, the park's allow-list central publishes to them, and the
trips of vehicles that enter at one gate and leave at the other (or the same one)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from edgegate.config import GateConfig, parse_config
from edgegate.core.domain import Appointment, Credential, PlateColour
from edgegate.sim.demo import demo_allowlist, demo_config_text, toml_str
from edgegate.sim.scenario import Behaviour, Vehicle

GATE_A, GATE_B = "gate-a", "gate-b"
PARK_GATES = (GATE_A, GATE_B)
PARK_SITE = "demo-park"
#: Trips each dangerous vehicle may make in a run (a round every 45 s: about an hour): an
#: appointment admits one entry, so the list holds one per trip (the gate consumes the one
#: that lapses first).
APPOINTMENTS_PER_VEHICLE = 80


@dataclass(frozen=True, slots=True)
class ParkSync:
    """How a park gate reaches central: its ``[sync]`` settings (file paths absolute)."""

    broker: str
    central_public_key: Path
    pull_token_file: Path
    password_file: Path | None = None  # None: a placeholder password (no broker to log in to)
    ca_file: Path | None = None


def park_gate_config(
    gate_id: str,
    log_path: Path,
    accounts_file: Path,
    *,
    port: int,
    sync: ParkSync,
    guard_wait_s: int,
) -> GateConfig:
    """The demo gate as ``gate_id`` of the park: its log, console on 127.0.0.1:``port`` (also
    serving the pull API), and ``[sync]`` with central."""
    text = (
        demo_config_text(log_path, accounts_file, port=port, guard_wait_s=guard_wait_s)
        .replace('id = "demo-gate"', f"id = {toml_str(gate_id)}")
        .replace('name = "Demo gate (simulated devices)"', f'name = "Park demo {gate_id}"')
        .replace('site = "demo"', f"site = {toml_str(PARK_SITE)}")
    )
    lines = [
        "",
        "[sync]",
        f"broker = {toml_str(sync.broker)}",
        f"central_public_key = {toml_str(str(sync.central_public_key))}",
        'status_interval = "5s"',  # central's view of each gate's lag stays current
        'reconnect_max = "10s"',
    ]
    if sync.password_file is not None:
        lines.append(f"password_file = {toml_str(str(sync.password_file))}")
    else:
        lines.append('password = "no-broker"')
    if sync.ca_file is not None:
        lines.append(f"ca_file = {toml_str(str(sync.ca_file))}")
    lines += ["", "[sync.pull_api]", f"token_file = {toml_str(str(sync.pull_token_file))}", ""]
    return parse_config(text + "\n".join(lines), source=f"<demo {gate_id}>", base_dir=Path.cwd())


def park_allowlist(now: datetime) -> list[Credential]:
    """The demo allow-list with an appointment per trip for each dangerous vehicle; their ids
    name the run (``now``), so a later run's are new, not consumed by an earlier one."""
    entries = demo_allowlist(now)
    run = f"{now:%m%d%H%M%S}"
    extra: list[Credential] = [
        # Staggered ends: the gate consumes the earliest, so each trip takes the next one.
        replace(a, id=f"{a.id}-{run}-{n}", window_end=a.window_end + timedelta(minutes=n))
        for a in entries
        if isinstance(a, Appointment)
        for n in range(2, APPOINTMENTS_PER_VEHICLE + 1)
    ]
    return entries + extra


@dataclass(frozen=True, slots=True)
class Trip:
    """A vehicle's visit: in at ``entry``'s entry lane, ``dwell_s`` inside, out at
    ``exit``'s exit lane (``exit`` None: it is expected to be refused at the entry)."""

    kind: str
    plate: str
    entry: str
    exit: str | None
    dwell_s: float
    start_s: float  # seconds after the round's start
    colour: PlateColour = PlateColour.BLUE

    def vehicle(self, lane: str) -> Vehicle:
        return Vehicle(self.plate, lane, 0.0, Behaviour.NORMAL, self.colour)


#: One round of park traffic; rounds repeat (a plate comes back to a reader only after the
#: readers' duplicate window of 10 s).
PARK_TRIPS: tuple[Trip, ...] = (
    Trip("commuter", "苏E12345", GATE_A, GATE_B, 6, 0),
    Trip("hazmat tanker", "苏E6G789", GATE_A, GATE_B, 14, 4, PlateColour.YELLOW),
    Trip("hazwaste truck", "鲁C3B270", GATE_B, GATE_A, 10, 1, PlateColour.YELLOW),
    Trip("visitor", "皖A8K302", GATE_B, GATE_B, 8, 6),
    Trip("engineering truck", "苏EA7L21", GATE_A, GATE_A, 18, 10, PlateColour.YELLOW),
    Trip("fire engine", "苏E0119F", GATE_B, GATE_A, 5, 14, PlateColour.WHITE),
    Trip("blacklisted car", "苏E99999", GATE_A, None, 0, 16),
)
#: Seconds between the starts of two rounds.
ROUND_S = 45.0
