"""The demo gate's material: its configuration (simulated devices only, the guard's console
on 127.0.0.1), an allow-list covering every credential type, and the vehicles that drive
through — some of them needing a guard. ``edgegate demo`` (``edgegate.cli.demo``) runs it with
the real daemon and drivers and a live view."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
# (a pymodbus PLC simulator per lane on 127.0.0.1, with the guard booth's panel inputs, and
# plate readers on ptys) driven through the real Modbus and serial drivers, and the guard's
# console on 127.0.0.1.
[gate]
id = "demo-gate"
name = "Demo gate (simulated devices)"
kind = "comprehensive"
site = "demo"

[policy]
on_stale_allowlist = "note"
min_confidence = 0.5
colour_mismatch = "confirm"

[log]
path = "demo-gate.db"

[timings]
plate_wait = "4s"
pass_timeout = "20s"
close_delay = "500ms"
overstay_check_every = "5s"
guard_wait = "60s"

[devices.sim-plc-in]
type = "simulated-plc"
profile = "barrier-plc-guard-panel"
travel_time = "1s"

[devices.sim-plc-out]
type = "simulated-plc"
profile = "barrier-plc-guard-panel"
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

[http]
bind = "127.0.0.1"
port = 8480

[console]
accounts_file = "demo-accounts.txt"
"""

#: The console's port unless ``edgegate demo --port`` says otherwise.
DEMO_PORT = 8480
#: How long a vehicle waits for a guard, unless ``--guard-wait`` says otherwise.
DEMO_GUARD_WAIT_S = 60

C = VehicleCategory


def toml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a TOML basic string


def demo_config(
    log_path: Path,
    *,
    accounts_file: Path | None = None,
    port: int = DEMO_PORT,
    guard_wait_s: int = DEMO_GUARD_WAIT_S,
) -> GateConfig:
    """The demo gate with its log at ``log_path``, its console on 127.0.0.1:``port`` with the
    accounts of ``accounts_file`` (default: beside the log, :func:`demo_accounts_file`)."""
    accounts = demo_accounts_file(log_path) if accounts_file is None else accounts_file
    text = demo_config_text(log_path, accounts, port=port, guard_wait_s=guard_wait_s)
    return parse_config(text, source="<demo>", base_dir=Path.cwd())


def demo_config_text(
    log_path: Path, accounts_file: Path, *, port: int, guard_wait_s: int = DEMO_GUARD_WAIT_S
) -> str:
    """The demo gate's TOML with its log, console port, guard wait and accounts file."""
    return (
        DEMO_CONFIG.replace('path = "demo-gate.db"', f"path = {toml_str(str(log_path))}")
        .replace("port = 8480", f"port = {int(port)}")
        .replace('guard_wait = "60s"', f'guard_wait = "{int(guard_wait_s)}s"')
        .replace('"demo-accounts.txt"', toml_str(str(accounts_file)))
    )


def demo_accounts_file(log_path: Path) -> Path:
    """The demo's console accounts, beside its log: ``demo-gate.db`` ->
    ``demo-gate-accounts.txt``."""
    return log_path.with_name(f"{log_path.stem}-accounts.txt")


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


@dataclass(frozen=True, slots=True)
class _Arrival:
    kind: str  # what it shows, for the live view
    plate: str
    behaviour: Behaviour = Behaviour.NORMAL
    colour: PlateColour | None = None  # as read; None: as registered
    confidence: float = 0.95


_A = _Arrival
# A read of the same plate within the readers' duplicate window (10 s) is ignored: the same
# plate comes back only several vehicles later. Those marked "needs a guard" wait for one.
_TRAFFIC: dict[str, list[_Arrival]] = {
    "in-1": [
        _A("commuter", "苏E12345"),
        _A("plate read one character off a commuter's: needs a guard", "苏E1234S"),
        _A("hazmat appointment", "苏E6G789"),
        _A("blacklisted", "苏E99999"),
        _A("contractor backs out", "苏EA7L21", Behaviour.BACKS_OUT),
        _A("visitor permit", "皖A8K302"),
        _A("unknown vehicle", "浙B5Z661"),
        _A("expired registration", "苏E77321"),
        _A("commuter, plate colour read yellow: needs a guard", "苏E12345",
           colour=PlateColour.YELLOW),
        _A("hazwaste appointment", "鲁C3B270"),
        _A("fire engine, plate not read", "苏E0119F", Behaviour.UNREADABLE),
        _A("engineering truck, plate read unsure: needs a guard", "苏EA7L21", confidence=0.42),
    ],
    "out-1": [
        _A("commuter leaving", "苏E12345"),
        _A("unknown vehicle leaving: needs a guard", "沪A2B468"),
        _A("visitor leaving", "皖A8K302"),
        _A("tanker leaving", "苏E6G789"),
        _A("engineering truck leaving", "苏EA7L21"),
        _A("hazwaste truck leaving", "鲁C3B270"),
    ],
}  # fmt: skip


def demo_traffic(lane: str) -> list[tuple[str, Vehicle]]:
    """One round of arrivals at a demo lane: (what it shows, vehicle)."""
    return [
        (
            a.kind,
            Vehicle(
                a.plate,
                lane,
                0.0,
                a.behaviour,
                a.colour or _COLOURS.get(a.plate, PlateColour.BLUE),
                a.confidence,
            ),
        )
        for a in _TRAFFIC["in-1" if lane == "in-1" else "out-1"]
    ]
