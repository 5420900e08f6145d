"""The demo gate's material: its configuration (simulated devices only), an allow-list covering
every credential type, and the vehicles that drive through. ``edgegate demo``
(``edgegate.cli.demo``) runs it with the real daemon and drivers and a live view."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

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
from edgegate.sim.scenario import Behaviour, Vehicle

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
