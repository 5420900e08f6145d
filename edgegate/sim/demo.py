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

    def registration(
        id_: str,
        plate: str,
        colour: PlateColour,
        category: VehicleCategory,
        holder: HolderType,
        organisation: str,
        since_days: int,
        until: datetime | None = None,
    ) -> Registration:
        return Registration(
            id=id_,
            plate=plate,
            colour=colour,
            category=category,
            holder=holder,
            organisation=organisation,
            valid_from=now - since_days * day,
            valid_until=until,
        )

    def appointment(
        id_: str,
        plate: str,
        category: VehicleCategory,
        destination: str,
        un: str,
        hazard: str,
        waybill: str,
    ) -> Appointment:
        return Appointment(
            id=id_,
            plate=plate,
            colour=PlateColour.YELLOW,
            category=category,
            window_start=now - timedelta(hours=2),
            window_end=now + day,
            destination=destination,
            un_number=un,
            hazard_class=hazard,
            waybill=waybill,
        )

    return [
        registration(
            "REG-1", "苏E12345", PlateColour.BLUE, C.ORDINARY, HolderType.COMMUTER,
            "Yangzi Petrochemical", 30, now + 300 * day,
        ),
        registration(
            "REG-2", "苏EA7L21", PlateColour.YELLOW, C.ENGINEERING, HolderType.COMPANY,
            "Jiangsu Pipeline Works", 30,
        ),
        registration(
            "REG-3", "苏E0119F", PlateColour.WHITE, C.EMERGENCY, HolderType.DEPARTMENT,
            "Park Fire Brigade", 300,
        ),
        registration(
            "REG-4", "苏E77321", PlateColour.BLUE, C.ORDINARY, HolderType.COMPANY,
            "Juren Chemical", 300, now - day,
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
        appointment(
            "APT-1", "苏E6G789", C.HAZMAT, "Yangzi Petrochemical", "1203", "3", "EW2026112800007"
        ),
        appointment(
            "APT-2", "鲁C3B270", C.HAZWASTE, "Park Hazardous Waste Centre", "3264", "8",
            "EW2026112800008",
        ),
        BlacklistEntry(
            id="BL-1",
            plate="苏E99999",
            reason=BlacklistReason.SPEEDING,
            detail="82 km/h in a 30 km/h zone",
            source="park-security",
            valid_from=now - 10 * day,
        ),
    ]  # fmt: skip


# The demo vehicles' plate colours (blue unless listed), as the allow-list registers them.
_COLOURS = {
    "苏E6G789": PlateColour.YELLOW,
    "苏EA7L21": PlateColour.YELLOW,
    "鲁C3B270": PlateColour.YELLOW,
    "苏E0119F": PlateColour.WHITE,
}
_NORMAL = Behaviour.NORMAL
_TRAFFIC: dict[str, list[tuple[str, str, Behaviour]]] = {
    "in-1": [
        ("commuter", "苏E12345", _NORMAL),
        ("hazmat appointment", "苏E6G789", _NORMAL),
        ("blacklisted", "苏E99999", _NORMAL),
        ("visitor permit", "皖A8K302", _NORMAL),
        ("unknown vehicle", "浙B5Z661", _NORMAL),
        ("contractor backs out", "苏EA7L21", Behaviour.BACKS_OUT),
        ("expired registration", "苏E77321", _NORMAL),
        ("hazwaste appointment", "鲁C3B270", _NORMAL),
        ("fire engine, plate not read", "苏E0119F", Behaviour.UNREADABLE),
        ("engineering truck", "苏EA7L21", _NORMAL),
    ],
    "out-1": [
        ("commuter leaving", "苏E12345", _NORMAL),
        ("visitor leaving", "皖A8K302", _NORMAL),
        ("tanker leaving", "苏E6G789", _NORMAL),
        ("unknown vehicle leaving", "沪A2B468", _NORMAL),
        ("engineering truck leaving", "苏EA7L21", _NORMAL),
        ("hazwaste truck leaving", "鲁C3B270", _NORMAL),
    ],
}


def demo_traffic(lane: str) -> list[tuple[str, Vehicle]]:
    """One round of arrivals at a demo lane: (what it shows, vehicle)."""
    return [
        (kind, Vehicle(plate, lane, 0.0, behaviour, _COLOURS.get(plate, PlateColour.BLUE)))
        for kind, plate, behaviour in _TRAFFIC["in-1" if lane == "in-1" else "out-1"]
    ]
