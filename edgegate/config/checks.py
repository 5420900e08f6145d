"""Checks across sections: lanes name devices of the right role that no other lane uses,
permissions fit the gate's kind, timings relate sensibly, evacuation lanes exist,
``[sync]`` names the files its broker needs, and ``[health]`` names configured devices.

They run on whatever parts validated on their own (:class:`_Parts`), so a file with a bad
field still gets its cross-section problems reported alongside.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from edgegate.config.models import (
    _DEVICE_ADAPTER,
    _KIND_ADAPTER,
    Device,
    DeviceRole,
    IncidentSettings,
    Lane,
    LogSettings,
    ModbusTcpDevice,
    Permissions,
    SyncSettings,
    Timings,
    _SerialLine,
    _types_for,
)
from edgegate.config.problems import Problem
from edgegate.config.units import format_duration
from edgegate.core.domain import Direction, GateKind, VehicleCategory
from edgegate.core.rules import KIND_ADMITS

if TYPE_CHECKING:
    from edgegate.config.gate_config import GateConfig


@dataclass(frozen=True, slots=True)
class _Parts:
    """Whatever parts of a configuration validated on their own, for the cross checks."""

    kind: GateKind | None
    permissions: Permissions | None
    timings: Timings | None
    device_names: frozenset[str]
    devices: Mapping[str, Device]
    lane_ids: frozenset[str]
    lanes: Sequence[Lane | None] | None  # None: [[lanes]] is not an array at all
    incident: IncidentSettings | None
    sync: SyncSettings | None = None
    http: bool = False  # an [http] section is present
    log: LogSettings | None = None
    has_sync: bool = False  # a [sync] section is present (valid or not)
    silenced: tuple[str, ...] = ()  # the devices [health].device_silence names

    @classmethod
    def from_model(cls, cfg: GateConfig) -> _Parts:
        return cls(
            kind=cfg.gate.kind,
            permissions=cfg.permissions,
            timings=cfg.timings,
            device_names=frozenset(cfg.devices),
            devices=cfg.devices,
            lane_ids=frozenset(lane.id for lane in cfg.lanes),
            lanes=cfg.lanes,
            incident=cfg.incident,
            sync=cfg.sync,
            http=cfg.http is not None,
            log=cfg.log,
            has_sync=cfg.sync is not None,
            silenced=() if cfg.health is None else tuple(cfg.health.device_silence),
        )

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> _Parts:
        raw_devices = raw.get("devices", {})
        raw_devices = raw_devices if isinstance(raw_devices, dict) else {}
        devices: dict[str, Device] = {}
        for name, value in raw_devices.items():
            device = _try(_DEVICE_ADAPTER.validate_python, value)
            if device is not None:
                devices[name] = device
        raw_lanes = raw.get("lanes", [])
        lanes: list[Lane | None] | None = None
        lane_ids: set[str] = set()
        if isinstance(raw_lanes, list):
            lanes = [_try(Lane.model_validate, item) for item in raw_lanes]
            lane_ids = {
                item["id"]
                for item in raw_lanes
                if isinstance(item, dict) and isinstance(item.get("id"), str)
            }
        raw_gate = raw.get("gate")
        raw_kind = raw_gate.get("kind") if isinstance(raw_gate, dict) else None
        return cls(
            kind=_try(_KIND_ADAPTER.validate_python, raw_kind),
            permissions=_try(Permissions.model_validate, raw.get("permissions", {})),
            timings=_try(Timings.model_validate, raw.get("timings", {})),
            device_names=frozenset(raw_devices),
            devices=devices,
            lane_ids=frozenset(lane_ids),
            lanes=lanes,
            incident=_try(IncidentSettings.model_validate, raw.get("incident", {})),
            sync=_try(SyncSettings.model_validate, raw.get("sync")),
            http="http" in raw,
            log=_try(LogSettings.model_validate, raw.get("log")),
            has_sync="sync" in raw,
            silenced=_silenced(raw.get("health")),
        )


_T = TypeVar("_T")


def _silenced(raw_health: object) -> tuple[str, ...]:
    if not isinstance(raw_health, dict):
        return ()
    limits = raw_health.get("device_silence")
    return tuple(str(name) for name in limits) if isinstance(limits, dict) else ()


def _try(validate: Callable[[Any], _T], value: object) -> _T | None:
    try:
        return validate(value)
    except ValidationError:
        return None


def _check_permissions(kind: GateKind, permissions: Permissions) -> list[Problem]:
    problems: list[Problem] = []
    for direction in Direction:
        listed = permissions.listed(direction)
        allowed = KIND_ADMITS[kind][direction]
        for i, category in enumerate(listed or ()):
            key = f"permissions.{direction}[{i}]"
            if category in (listed or ())[:i]:
                problems.append((key, f"'{category}' is listed twice"))
            elif category not in allowed:
                if kind is GateKind.EMERGENCY:
                    message = f"an emergency gate admits only emergency vehicles, not '{category}'"
                else:
                    message = (
                        f"'{category}' vehicles may never pass {kind} gates "
                        f"(they admit at most: {_categories(allowed)})"
                    )
                problems.append((key, message))
    return problems


def _categories(categories: Iterable[VehicleCategory]) -> str:
    wanted = set(categories)
    return ", ".join(c.value for c in VehicleCategory if c in wanted) or "nothing"


def _check_timing_relations(timings: Timings, prefix: str, blame: str) -> list[Problem]:
    if timings.loop_fault_after > timings.pass_timeout:
        return []
    return [
        (
            f"{prefix}.{blame}",
            f"loop_fault_after ({format_duration(timings.loop_fault_after)}) must be longer "
            f"than pass_timeout ({format_duration(timings.pass_timeout)}), or a vehicle "
            "passing slowly is reported as a stuck loop",
        )
    ]


def _check_device_ref(
    parts: _Parts, key: str, name: str, role: DeviceRole, what: str
) -> Problem | None:
    if name not in parts.device_names:
        return key, f"device '{name}' is not defined in [devices]"
    device = parts.devices.get(name)
    if device is not None and device.role is not role:
        return key, (
            f"device '{name}' is a {device.type} ({device.role}); a {what} must be a "
            f"{role} device ({_types_for(role)})"
        )
    return None


def _claim(
    users: dict[tuple[str, str], int], role: str, name: str, lane: int, key: str, what: str
) -> Problem | None:
    """Record that a lane uses a device in a role; a problem if another lane already does."""
    other = users.setdefault((role, name), lane)
    if other == lane:
        return None
    return key, f"{what} '{name}' is already used by lanes[{other}]; each lane needs its own"


def _check_lanes(parts: _Parts) -> list[Problem]:
    if parts.lanes is None:
        return []
    if not parts.lanes:
        return [("lanes", "no lanes are defined: add at least one [[lanes]] table")]
    problems: list[Problem] = []
    first_id: dict[str, int] = {}
    users: dict[tuple[str, str], int] = {}  # (role, device) -> first lane using it
    for i, lane in enumerate(parts.lanes):
        if lane is None:
            continue
        at = f"lanes[{i}]"
        if lane.id in first_id:
            problems.append(
                (f"{at}.id", f"lane id '{lane.id}' is already used by lanes[{first_id[lane.id]}]")
            )
        else:
            first_id[lane.id] = i
        refs = [
            ("plate_reader", lane.plate_reader, DeviceRole.PLATE_READER, "plate reader"),
            ("barrier", lane.barrier, DeviceRole.PLC, "barrier"),
        ]
        if lane.loops is not None:
            refs.append(("loops", lane.loops, DeviceRole.PLC, "loop source"))
        for field, name, role, what in refs:
            key = f"{at}.{field}"
            problem = _check_device_ref(parts, key, name, role, what)
            if problem is None:
                problem = _claim(users, field, name, i, key, what)
            if problem is not None:
                problems.append(problem)
        barrier_ok = not any(key == f"{at}.barrier" for key, _ in problems)
        if lane.loops is None and barrier_ok:
            # By default the barrier PLC also provides the loops, so it may not be another
            # lane's loop source either.
            problem = _claim(users, "loops", lane.barrier, i, f"{at}.barrier", "loop source")
            if problem is not None:
                problems.append(problem)
        if parts.permissions is not None:
            listed = parts.permissions.listed(lane.direction)
            if listed is not None and not listed:
                problems.append(
                    (
                        f"{at}.direction",
                        f"[permissions].{lane.direction} is empty, so this "
                        f"{lane.direction} lane would refuse every vehicle",
                    )
                )
        if (
            parts.timings is not None
            and _check_timing_relations(parts.timings, "timings", "loop_fault_after") == []
        ):
            # Only a lane override can break a relation the gate's timings satisfy.
            blame = "loop_fault_after" if lane.timings.loop_fault_after else "pass_timeout"
            merged = parts.timings.with_overrides(lane.timings)
            problems += _check_timing_relations(merged, f"{at}.timings", blame)
    return problems


def _check_incident(parts: _Parts) -> list[Problem]:
    if parts.incident is None:
        return []
    problems: list[Problem] = []
    lanes = parts.incident.evacuation_lanes
    for i, lane_id in enumerate(lanes):
        key = f"incident.evacuation_lanes[{i}]"
        if lane_id in lanes[:i]:
            problems.append((key, f"lane '{lane_id}' is listed twice"))
        elif parts.lanes is not None and lane_id not in parts.lane_ids:
            problems.append((key, f"lane '{lane_id}' is not defined in [[lanes]]"))
    if parts.kind is GateKind.EMERGENCY and not lanes:
        problems.append(
            (
                "incident.evacuation_lanes",
                "an emergency gate must name the lanes that incident "
                "mode opens as evacuation exits",
            )
        )
    return problems


def _check_devices(parts: _Parts) -> list[Problem]:
    problems: list[Problem] = []
    serial: dict[str, str] = {}
    tcp: dict[tuple[str, int, int], str] = {}
    for name, device in parts.devices.items():
        if isinstance(device, _SerialLine):
            other = serial.setdefault(device.port, name)
            if other != name:
                problems.append(
                    (
                        f"devices.{name}.port",
                        f"serial port '{device.port}' is already used by devices.{other}",
                    )
                )
        elif isinstance(device, ModbusTcpDevice):
            address = (device.host.lower(), device.port, device.unit_id)
            other = tcp.setdefault(address, name)
            if other != name:
                problems.append(
                    (
                        f"devices.{name}.host",
                        f"{device.host}:{device.port} unit {device.unit_id} is already used "
                        f"by devices.{other}",
                    )
                )
    return problems


def _check_sync(sync: SyncSettings | None) -> list[Problem]:
    if sync is None:
        return []
    problems: list[Problem] = []
    if sync.password is None and sync.password_file is None:
        problems.append(("sync.password_file", "set password_file (or password): one is required"))
    elif sync.password is not None and sync.password_file is not None:
        problems.append(("sync.password", "set either password or password_file, not both"))
    address = sync.broker_address
    if address.tls:
        if sync.ca_file is None:
            problems.append(
                (
                    "sync.ca_file",
                    "required for an mqtts:// broker: the CA that signed its certificate",
                )
            )
    else:
        for key in ("ca_file", "client_cert", "client_key"):
            if getattr(sync, key) is not None:
                problems.append(
                    (
                        f"sync.{key}",
                        f"the broker {sync.broker!r} is plain mqtt://; TLS files need mqtts://",
                    )
                )
    if address.tls and (sync.client_cert is None) != (sync.client_key is None):
        missing = "client_key" if sync.client_key is None else "client_cert"
        problems.append((f"sync.{missing}", "client_cert and client_key go together: set both"))
    return problems


def _check_retention(parts: _Parts) -> list[Problem]:
    """Archiving waits for central's acknowledgement; without ``[sync]`` there is none, and
    the operator must say so rather than have the disk fill or evidence go unannounced."""
    retention = None if parts.log is None else parts.log.retention
    if retention is None:
        return []
    key = "log.retention.archive_unacknowledged"
    if not parts.has_sync and not retention.archive_unacknowledged:
        return [
            (
                key,
                "this gate has no [sync]: no central acknowledges its events, so no segment "
                "would ever be archived and the disk would fill; set archive_unacknowledged "
                "= true to archive (and over archive_budget remove) segments no central holds, "
                "or add [sync]",
            )
        ]
    if parts.has_sync and retention.archive_unacknowledged:
        return [
            (
                key,
                "only for a gate without [sync]: with [sync], segments are archived once "
                "central acknowledged them, never before",
            )
        ]
    return []


def _cross_check(parts: _Parts) -> list[Problem]:
    problems: list[Problem] = []
    if parts.kind is not None and parts.permissions is not None:
        problems += _check_permissions(parts.kind, parts.permissions)
    if parts.timings is not None:
        problems += _check_timing_relations(parts.timings, "timings", "loop_fault_after")
    problems += _check_devices(parts)
    problems += _check_lanes(parts)
    problems += _check_incident(parts)
    problems += _check_sync(parts.sync)
    problems += _check_retention(parts)
    for name in parts.silenced:
        if name not in parts.device_names:
            known = ", ".join(sorted(parts.device_names)) or "none"
            problems.append(
                (f"health.device_silence.{name}", f"no device {name!r} (devices: {known})")
            )
    if parts.sync is not None and parts.sync.pull_api is not None and not parts.http:
        problems.append(
            (
                "sync.pull_api",
                "served by the gate's HTTP server: add an [http] section (bind, port)",
            )
        )
    return problems
