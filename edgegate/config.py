"""Gate configuration: one TOML file per gate, validated completely before anything is opened.

``load_config``/``parse_config`` turn the file into a frozen :class:`GateConfig` or raise
:class:`ConfigError` listing every problem, each with the key path it concerns
(``lanes[0].barrier: device 'plc-9' is not defined in [devices]``).

Durations are TOML numbers (seconds) or strings with units: ``"500ms"``, ``"5s"``,
``"10min"``, ``"6h"``, ``"2d"``, combined as ``"1h30min"``. A relative ``[log].path`` is
resolved against the directory of the configuration file, not the working directory.
Nothing here opens a device or the log.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import ipaddress
import json
import os
import re
import sys
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType, UnionType
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgegate.core.domain import Direction, GateKind, VehicleCategory
from edgegate.core.rules import (
    DEFAULT_DWELL_LIMITS,
    KIND_ADMITS,
    ColourMismatchAction,
    FuzzyMatching,
    GateRules,
    StaleAction,
)
from edgegate.validation import EXPECTED, describe_value, unwrap_type

__all__ = [
    "BrokerAddress",
    "ConfigError",
    "Device",
    "DeviceRole",
    "GateConfig",
    "GateSection",
    "IncidentSettings",
    "Lane",
    "LaneTimings",
    "LogSettings",
    "ModbusRtuDevice",
    "ModbusTcpDevice",
    "Permissions",
    "Policy",
    "Problem",
    "PullApiSettings",
    "SerialPlateReaderDevice",
    "SimulatedPlateReaderDevice",
    "SimulatedPlcDevice",
    "SyncSettings",
    "Timings",
    "WriteFailureAction",
    "WriteFailurePolicy",
    "format_duration",
    "load_config",
    "parse_byte_size",
    "parse_config",
    "parse_duration",
]

#: ``(key_path, message)``; the key path is ``""`` for problems of the whole file.
Problem = tuple[str, str]


class ConfigError(ValueError):
    """An invalid configuration: every problem found, not just the first."""

    def __init__(self, problems: Iterable[Problem], source: str = "<string>") -> None:
        self.problems: list[Problem] = list(problems)
        self.source = source
        super().__init__(str(self))

    def lines(self) -> list[str]:
        """One line per problem, key path first (the source for whole-file problems)."""
        return [f"{key or self.source}: {message}" for key, message in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.lines())


# --------------------------------------------------------------------------- durations

_UNITS_US: dict[str, int] = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "min": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)\s*")
_DURATION_FORMS = (
    "expected seconds as a number (5, 0.5) or a string with a unit such as "
    "'500ms', '5s', '10min', '6h', '2d' (units us, ms, s, min, h, d; combine as '1h30min')"
)


# The longest duration a ``timedelta`` holds (999,999,999 days): more is a typo, not a timeout.
_MAX_US = (timedelta.max.days * 86_400 + timedelta.max.seconds) * 1_000_000


def _shown(value: object) -> str:
    """A value for a message, cut short: a 5,000-digit typo is not echoed whole."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _to_us(number: Decimal, unit_us: int, shown: object) -> int:
    total = number * unit_us
    if total > _MAX_US:
        raise ValueError(f"duration {_shown(shown)} is too long: at most {timedelta.max.days} days")
    if total != total.to_integral_value():
        raise ValueError(f"duration {_shown(shown)} is finer than a microsecond")
    return int(total)


def parse_duration(value: object) -> timedelta:
    """A duration from a TOML value: a number of seconds or a string with units."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):  # bool is an int in Python; ``true`` is no duration
        raise ValueError(f"invalid duration {value!r}: {_DURATION_FORMS}")
    if isinstance(value, int | float):
        try:
            seconds = Decimal(repr(value))
        except InvalidOperation:
            seconds = Decimal("NaN")
        if not seconds.is_finite() or seconds < 0:
            raise ValueError(f"invalid duration {value!r}: must be a finite number >= 0")
        return timedelta(microseconds=_to_us(seconds, _UNITS_US["s"], value))
    if isinstance(value, str):
        pos, total, seen = 0, 0, set()
        text = value.strip()
        while pos < len(text):
            m = _DURATION_PART.match(text, pos)
            if m is None or m.group(2) in seen:
                break
            seen.add(m.group(2))
            total += _to_us(Decimal(m.group(1)), _UNITS_US[m.group(2)], value)
            pos = m.end()
        if text and pos == len(text):
            return timedelta(microseconds=_to_us(Decimal(total), 1, value))
    raise ValueError(f"invalid duration {_shown(value)}: {_DURATION_FORMS}")


def format_duration(value: timedelta) -> str:
    """Canonical text of a duration (``90s`` -> ``"1min30s"``); ``parse_duration`` inverts it."""
    if value < timedelta(0):
        raise ValueError(f"negative duration {value!r}")
    rest = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    parts: list[str] = []
    for unit, size in sorted(_UNITS_US.items(), key=lambda kv: -kv[1]):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _bounds(low: str, high: str) -> AfterValidator:
    lo, hi = parse_duration(low), parse_duration(high)

    def check(value: timedelta) -> timedelta:
        if not lo <= value <= hi:
            raise ValueError(
                f"must be between {format_duration(lo)} and {format_duration(hi)}, "
                f"got {format_duration(value)}"
            )
        return value

    return AfterValidator(check)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]


def _parse_dwell(value: object) -> timedelta | None:
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    td = parse_duration(value)
    if not timedelta(minutes=1) <= td <= timedelta(days=30):
        raise ValueError(f'must be between 1min and 30d or "none", got {format_duration(td)}')
    return td


def _format_dwell(value: timedelta | None) -> str:
    return "none" if value is None else format_duration(value)


DwellLimit = Annotated[
    timedelta | None,
    BeforeValidator(_parse_dwell),
    PlainSerializer(_format_dwell, return_type=str, when_used="json"),
]

# ------------------------------------------------------------------------ names, hosts

_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PROFILE = re.compile(r"[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*)*")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _slug(what: str, example: str) -> AfterValidator:
    def check(value: str) -> str:
        if not _SLUG.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid {what}: use 1-63 lowercase letters a-z, digits and "
                f"'-', starting and ending with a letter or digit (e.g. '{example}')"
            )
        return value

    return AfterValidator(check)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        raise ValueError(
            f"unknown time zone {value!r}: use an IANA name such as 'Asia/Shanghai'"
        ) from None
    return value


def _check_host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{value!r} is not a valid host name or IP address")
    return value


def _check_serial_port(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError(
            f"{value!r} is not a serial device path: use an absolute path such as "
            "'/dev/ttyS1' or '/dev/serial/by-id/…'"
        )
    return value


def _check_profile(value: str) -> str:
    if not _PROFILE.fullmatch(value) or ".." in value.split("/"):
        raise ValueError(
            f"{value!r} is not a device profile name: use the name of a profile under "
            "drivers/ without extension: lowercase letters, digits, '-', '_', '.', "
            "e.g. 'barrier-plc-generic'"
        )
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


GateId = Annotated[StrictStr, _slug("gate id", "fengxiang-road")]
SiteId = Annotated[StrictStr, _slug("site id", "chem-park")]
DeviceName = Annotated[StrictStr, _slug("device name", "plc-in-1")]
LaneId = Annotated[StrictStr, _slug("lane id", "in-1")]
NonEmptyStr = Annotated[StrictStr, AfterValidator(_non_empty)]
TimeZoneName = Annotated[StrictStr, AfterValidator(_check_timezone)]
Host = Annotated[StrictStr, AfterValidator(_check_host)]
SerialPort = Annotated[StrictStr, AfterValidator(_check_serial_port)]
ProfileName = Annotated[StrictStr, AfterValidator(_check_profile)]

_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


def _check_baudrate(value: int) -> int:
    if value not in _BAUDRATES:
        raise ValueError(
            f"unsupported baud rate {value}: use one of {', '.join(map(str, _BAUDRATES))}"
        )
    return value


Baudrate = Annotated[StrictInt, AfterValidator(_check_baudrate)]
Hertz = Annotated[StrictFloat, Field(gt=0, le=100)]
Fraction = Annotated[StrictFloat, Field(ge=0, le=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------ sections


class GateSection(_Model):
    """``[gate]``: who this gate is."""

    id: GateId  # MQTT topics and the event log's gate id
    name: NonEmptyStr
    kind: GateKind
    site: SiteId
    timezone: TimeZoneName = "Asia/Shanghai"


class Permissions(_Model):
    """``[permissions]``: categories admitted per direction; unset = all the kind allows."""

    entry: tuple[VehicleCategory, ...] | None = None
    exit: tuple[VehicleCategory, ...] | None = None

    def listed(self, direction: Direction) -> tuple[VehicleCategory, ...] | None:
        return self.entry if direction is Direction.ENTRY else self.exit


class Policy(_Model):
    """``[policy]``: how the gate decides when its knowledge is imperfect."""

    allowlist_max_age: Annotated[Duration, _bounds("1min", "30d")] = timedelta(hours=72)
    on_stale_allowlist: StaleAction = StaleAction.CONFIRM
    colour_mismatch: ColourMismatchAction = ColourMismatchAction.NOTE
    # off | confirm | allow (see FuzzyMatching). Before these modes it was a boolean: false
    # is off, and true is read as confirm, the safe default for a chemical park.
    fuzzy_matching: FuzzyMatching = FuzzyMatching.CONFIRM
    min_confidence: Fraction = 0.0
    # Keys override the defaults one by one; "none" means no limit for that category.
    dwell_limits: Mapping[VehicleCategory, DwellLimit] = Field(
        default_factory=lambda: dict(DEFAULT_DWELL_LIMITS)
    )

    @field_validator("fuzzy_matching", mode="before")
    @classmethod
    def _fuzzy_from_boolean(cls, value: object) -> object:
        if isinstance(value, bool):
            return FuzzyMatching.CONFIRM if value else FuzzyMatching.OFF
        return value

    @field_validator("dwell_limits", mode="after")
    @classmethod
    def _merge_defaults(
        cls, value: Mapping[VehicleCategory, timedelta | None]
    ) -> dict[VehicleCategory, timedelta | None]:
        return {c: value.get(c, DEFAULT_DWELL_LIMITS.get(c)) for c in VehicleCategory}


class WriteFailureAction(enum.StrEnum):
    """What a lane does when its decision cannot be written to the event log."""

    DENY = "deny"  # keep the barrier down: nothing passes unrecorded
    ALLOW = "allow"  # decide as usual although the log cannot show it


class WriteFailurePolicy(_Model):
    """``[log.on_write_failure]``: entries are refused, exits let vehicles out of the park."""

    entry: WriteFailureAction = WriteFailureAction.DENY
    exit: WriteFailureAction = WriteFailureAction.ALLOW

    def for_direction(self, direction: Direction) -> WriteFailureAction:
        return self.entry if direction is Direction.ENTRY else self.exit


class LogSettings(_Model):
    """``[log]``: the gate's SQLite event log (relative paths: against the config's folder)."""

    path: NonEmptyStr
    on_write_failure: WriteFailurePolicy = WriteFailurePolicy()


PlateWait = Annotated[Duration, _bounds("500ms", "60s")]
PlateEarly = Annotated[Duration, _bounds("0s", "30s")]
Travel = Annotated[Duration, _bounds("1s", "60s")]
PassTimeout = Annotated[Duration, _bounds("5s", "15min")]
CloseDelay = Annotated[Duration, _bounds("0s", "30s")]
DuplicateWindow = Annotated[Duration, _bounds("0s", "10min")]
TailgateWindow = Annotated[Duration, _bounds("0s", "30s")]
LoopFaultAfter = Annotated[Duration, _bounds("1min", "24h")]
OverstayEvery = Annotated[Duration, _bounds("1s", "1h")]


class Timings(_Model):
    """``[timings]``: the lane state machine's clock."""

    plate_wait: PlateWait = timedelta(seconds=5)  # after the arming loop, wait for a plate
    plate_early: PlateEarly = timedelta(seconds=3)  # a read this long before the loop counts
    open_travel: Travel = timedelta(seconds=6)  # up limit switch expected within
    close_travel: Travel = timedelta(seconds=6)  # down limit switch expected within
    pass_timeout: PassTimeout = timedelta(seconds=60)  # vehicle must clear the lane within
    close_delay: CloseDelay = timedelta(seconds=1)  # after the exit/safety loop clears
    duplicate_read_window: DuplicateWindow = timedelta(seconds=10)  # same plate again: ignored
    # A second vehicle on the loops within this long of a passage, before the arm is down,
    # is a suspected tailgate.
    tailgate_window: TailgateWindow = timedelta(seconds=3)
    loop_fault_after: LoopFaultAfter = timedelta(minutes=10)  # occupied longer: stuck loop
    overstay_check_every: OverstayEvery = timedelta(seconds=60)

    def with_overrides(self, overrides: LaneTimings) -> Timings:
        return self.model_copy(update=overrides.model_dump(exclude_none=True))


class LaneTimings(_Model):
    """``[lanes.timings]``: per-lane overrides of ``[timings]``."""

    plate_wait: PlateWait | None = None
    plate_early: PlateEarly | None = None
    open_travel: Travel | None = None
    close_travel: Travel | None = None
    pass_timeout: PassTimeout | None = None
    close_delay: CloseDelay | None = None
    duplicate_read_window: DuplicateWindow | None = None
    tailgate_window: TailgateWindow | None = None
    loop_fault_after: LoopFaultAfter | None = None
    overstay_check_every: OverstayEvery | None = None


# ------------------------------------------------------------------------------- devices


class DeviceRole(enum.StrEnum):
    PLC = "PLC"  # drives a barrier and reads its loops
    PLATE_READER = "plate reader"


class _SerialLine(_Model):
    port: SerialPort
    baudrate: Baudrate = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    def _line(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


class ModbusTcpDevice(_Model):
    """A barrier PLC over Modbus TCP; ``profile`` names its register map under drivers/."""

    role: ClassVar[DeviceRole] = DeviceRole.PLC
    type: Literal["modbus-tcp"]
    host: Host
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[StrictInt, Field(ge=0, le=247)] = 1
    profile: ProfileName
    poll_hz: Hertz = 20.0
    timeout: Annotated[Duration, _bounds("50ms", "10s")] = timedelta(milliseconds=500)
    reconnect_max: Annotated[Duration, _bounds("100ms", "5s")] = timedelta(seconds=5)

    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port} unit {self.unit_id}, {self.poll_hz:g} Hz"


class ModbusRtuDevice(_SerialLine):
    """A barrier PLC over Modbus RTU (RS-485)."""

    role: ClassVar[DeviceRole] = DeviceRole.PLC
    type: Literal["modbus-rtu"]
    # 0 is the RTU broadcast address, which never answers a read.
    unit_id: Annotated[StrictInt, Field(ge=1, le=247)] = 1
    profile: ProfileName
    poll_hz: Hertz = 10.0
    timeout: Annotated[Duration, _bounds("50ms", "10s")] = timedelta(milliseconds=500)
    reconnect_max: Annotated[Duration, _bounds("100ms", "5s")] = timedelta(seconds=5)
    inter_frame_gap: Annotated[Duration, _bounds("1ms", "100ms")] | None = None

    def effective_inter_frame_gap(self) -> timedelta:
        """The configured gap, else 3.5 character times (1.75 ms above 19200 baud) per spec."""
        if self.inter_frame_gap is not None:
            return self.inter_frame_gap
        if self.baudrate > 19200:
            return timedelta(microseconds=1750)
        bits = 1 + self.bytesize + (self.parity != "N") + self.stopbits
        return timedelta(microseconds=-(-35 * bits * 100_000 // self.baudrate))

    def address(self) -> str:
        return f"{self._line()} unit {self.unit_id}, {self.poll_hz:g} Hz"


class SerialPlateReaderDevice(_SerialLine):
    """A plate reader on a serial line; ``profile`` names its frame format."""

    role: ClassVar[DeviceRole] = DeviceRole.PLATE_READER
    type: Literal["serial-plate-reader"]
    profile: ProfileName
    duplicate_read_window: DuplicateWindow | None = None  # overrides [timings] for this reader

    def address(self) -> str:
        return self._line()


class SimulatedPlcDevice(_Model):
    """A simulated barrier with loops, for the demo and tests."""

    role: ClassVar[DeviceRole] = DeviceRole.PLC
    type: Literal["simulated-plc"]
    travel_time: Annotated[Duration, _bounds("100ms", "60s")] = timedelta(seconds=3)
    # The simulator speaks this profile's register map; the real Modbus driver talks to it.
    profile: ProfileName = "barrier-plc-generic"

    def address(self) -> str:
        return f"simulated, arm travel {format_duration(self.travel_time)}"


class SimulatedPlateReaderDevice(_Model):
    """A simulated plate reader, for the demo and tests."""

    role: ClassVar[DeviceRole] = DeviceRole.PLATE_READER
    type: Literal["simulated-plate-reader"]
    # The simulator writes frames of this profile on a pty; the real serial driver reads them.
    profile: ProfileName = "plate-reader-generic"
    read_delay: Annotated[Duration, _bounds("0s", "10s")] = timedelta(milliseconds=200)
    confidence: Fraction = 0.97

    def address(self) -> str:
        return f"simulated, read delay {format_duration(self.read_delay)}"


Device = Annotated[
    ModbusTcpDevice
    | ModbusRtuDevice
    | SerialPlateReaderDevice
    | SimulatedPlcDevice
    | SimulatedPlateReaderDevice,
    Field(discriminator="type"),
]
_DEVICE_CLASSES: dict[str, type[_Model]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(Device)[0])
}
_DEVICE_ADAPTER: TypeAdapter[Device] = TypeAdapter(Device)
_KIND_ADAPTER: TypeAdapter[GateKind] = TypeAdapter(GateKind)


def _types_for(role: DeviceRole) -> str:
    names = [t for t, cls in _DEVICE_CLASSES.items() if getattr(cls, "role", None) is role]
    return ", ".join(names)


# --------------------------------------------------------------------------------- lanes


class Lane(_Model):
    """``[[lanes]]``: one lane with its reader, barrier and loops."""

    id: LaneId
    name: StrictStr = ""
    direction: Direction
    plate_reader: DeviceName
    barrier: DeviceName
    loops: DeviceName | None = None  # where the loop inputs are read; default: the barrier PLC
    exit_loop: StrictBool = True  # an exit loop after the arm (anti-tailgating)
    timings: LaneTimings = LaneTimings()

    @property
    def loops_device(self) -> str:
        return self.loops if self.loops is not None else self.barrier


class IncidentSettings(_Model):
    """``[incident]``: the lanes incident mode opens and holds as evacuation paths."""

    evacuation_lanes: tuple[LaneId, ...] = ()


# ---------------------------------------------------------------------------------- sync

_BYTE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024 * 1024}
_BYTE_SIZE = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")


def parse_byte_size(value: object) -> int:
    """A size in bytes from a TOML value: an integer, or a string such as ``"4MiB"``,
    ``"512KiB"`` or ``"65536B"`` (units B, KiB, MiB)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"invalid size {value!r}: must be >= 0")
        return value
    if isinstance(value, str):
        m = _BYTE_SIZE.fullmatch(value)
        if m is not None and m.group(2).lower() in _BYTE_UNITS:
            if len(m.group(1)) > 30:  # int() refuses thousands of digits; any bound refuses 30
                raise ValueError(f"invalid size {_shown(value)}: too large")
            return int(m.group(1)) * _BYTE_UNITS[m.group(2).lower()]
    raise ValueError(
        f"invalid size {value!r}: expected bytes as an integer or a string with a unit "
        "such as '4MiB', '512KiB' (units B, KiB, MiB)"
    )


def _byte_bounds(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} bytes, got {value}")
        return value

    return AfterValidator(check)


ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]

_BROKER_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)")
_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:/\[\]]+))(?::(?P<port>\d{1,5}))?"
)
_DEFAULT_MQTT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the MQTT broker is: ``mqtts://`` means TLS."""

    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def _split_host_port(text: str, what: str) -> tuple[str, int | None]:
    m = _HOST_PORT.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not host:port ({what})")
    host = m.group("v6") or m.group("host")
    if m.group("v6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        _check_host(host)
    port = m.group("port")
    if port is None:
        return host, None
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is out of range 1-65535")
    return host, number


def parse_broker_url(value: str) -> BrokerAddress:
    """``mqtt://host[:port]`` (plain, port 1883) or ``mqtts://host[:port]`` (TLS, 8883)."""
    m = _BROKER_URL.fullmatch(value.strip())
    form = "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS)"
    if m is None:
        raise ValueError(f"{value!r} is not a broker URL: {form}")
    scheme = m.group("scheme").lower()
    if scheme not in _DEFAULT_MQTT_PORTS:
        raise ValueError(f"unknown scheme {scheme!r} in {value!r}: {form}")
    rest = m.group("rest").removesuffix("/")
    if not rest or "/" in rest or "@" in rest or "?" in rest:
        raise ValueError(
            f"{value!r} is not a broker URL: {form} (no path, no user:password@ — "
            "credentials go in username/password_file)"
        )
    host, port = _split_host_port(rest, form)
    return BrokerAddress(host, port or _DEFAULT_MQTT_PORTS[scheme], scheme == "mqtts")


def _check_broker_url(value: str) -> str:
    parse_broker_url(value)
    return value


def _check_listen(value: str) -> str:
    host, port = _split_host_port(value, "expected HOST:PORT such as '127.0.0.1:8480'")
    if port is None:
        raise ValueError(f"{value!r} has no port: expected HOST:PORT such as '127.0.0.1:8480'")
    del host
    return value


def _moved_to_policy(value: object) -> None:
    raise ValueError(
        "the allow-list age limit is a decision policy: set [policy].allowlist_max_age "
        "(and [policy].on_stale_allowlist) instead"
    )


BrokerUrl = Annotated[StrictStr, AfterValidator(_check_broker_url)]
ListenAddress = Annotated[StrictStr, AfterValidator(_check_listen)]
FilePath = Annotated[StrictStr, AfterValidator(_non_empty)]


def _non_empty_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("must not be empty")
    return value


# A SecretStr: hidden in repr and in the canonical JSON, so config_hash (logged in every
# daemon.started event) carries nothing derived from the password.
Password = Annotated[SecretStr, AfterValidator(_non_empty_secret)]


class PullApiSettings(_Model):
    """``[sync.pull_api]``: the gate's ``GET /v1/events`` endpoint for central's pullers."""

    listen: ListenAddress = "127.0.0.1:8480"
    token_file: FilePath  # the bearer token, one line
    # HTTPS: the gate's certificate (PEM, with any intermediates) and its key; both or
    # neither. Without them the API is plain HTTP and the token crosses the network in clear.
    tls_cert_file: FilePath | None = None
    tls_key_file: FilePath | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both")
        return self

    @property
    def address(self) -> tuple[str, int]:
        host, port = _split_host_port(self.listen, "")
        assert port is not None
        return host, port


class SyncSettings(_Model):
    """``[sync]``: store-and-forward to central over MQTT. Absent: the gate does not sync.

    Relative file paths are resolved against the configuration's folder
    (:meth:`GateConfig.resolve_path`). Files are read when the gate connects, not here;
    :meth:`GateConfig.file_problems` reports missing ones.
    """

    site: SiteId | None = None  # topic site level; default [gate].site
    broker: BrokerUrl
    username: NonEmptyStr | None = None  # default: the gate id (the broker's ACL expects it)
    password: Password | None = None
    password_file: FilePath | None = None
    ca_file: FilePath | None = None  # required for mqtts://
    client_cert: FilePath | None = None  # mutual TLS (optional, with client_key)
    client_key: FilePath | None = None
    central_public_key: FilePath  # pinned Ed25519 key that signs allow-lists and commands
    batch_max_events: Annotated[StrictInt, Field(ge=1, le=10_000)] = 5000
    batch_max_bytes: Annotated[ByteSize, _byte_bounds(64 * 1024, 16 * 1024 * 1024)] = (
        4 * 1024 * 1024
    )
    reconnect_max: Annotated[Duration, _bounds("1s", "10min")] = timedelta(seconds=30)
    keepalive: Annotated[Duration, _bounds("5s", "10min")] = timedelta(seconds=30)
    ack_timeout: Annotated[Duration, _bounds("1s", "10min")] = timedelta(seconds=10)
    status_interval: Annotated[Duration, _bounds("1s", "1h")] = timedelta(seconds=30)
    pull_api: PullApiSettings | None = None
    # Not a sync setting: refused with a pointer to [policy].allowlist_max_age.
    max_allowlist_age: Annotated[None, BeforeValidator(_moved_to_policy)] = Field(
        default=None, exclude=True
    )

    @property
    def broker_address(self) -> BrokerAddress:
        return parse_broker_url(self.broker)

    def files(self) -> dict[str, str]:
        """Key path (``sync.ca_file``) -> configured path, for every file the section names."""
        out = {
            f"sync.{key}": value
            for key in ("password_file", "ca_file", "client_cert", "client_key")
            if (value := getattr(self, key)) is not None
        }
        out["sync.central_public_key"] = self.central_public_key
        if self.pull_api is not None:
            out["sync.pull_api.token_file"] = self.pull_api.token_file
            for key in ("tls_cert_file", "tls_key_file"):
                if (value := getattr(self.pull_api, key)) is not None:
                    out[f"sync.pull_api.{key}"] = value
        return out


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


# --------------------------------------------------------------------------- the config

_DEFER_CROSS_CHECKS = "edgegate.config.defer_cross_checks"


class GateConfig(_Model):
    """A validated gate configuration. Build it with :func:`load_config`/:func:`parse_config`."""

    gate: GateSection
    permissions: Permissions = Permissions()
    policy: Policy = Policy()
    log: LogSettings
    timings: Timings = Timings()
    devices: Mapping[DeviceName, Device] = Field(default_factory=dict)
    lanes: tuple[Lane, ...] = ()
    incident: IncidentSettings = IncidentSettings()
    sync: SyncSettings | None = None

    _source: str = PrivateAttr(default="<string>")
    _base_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Self:
        # parse_config runs these itself so it can report them alongside field errors.
        if isinstance(info.context, dict) and info.context.get(_DEFER_CROSS_CHECKS):
            return self
        problems = _cross_check(_Parts.from_model(self))
        if problems:
            raise ValueError("; ".join(f"{key}: {message}" for key, message in problems))
        return self

    @property
    def source(self) -> str:
        """Where the configuration was read from (a path, or ``<string>``)."""
        return self._source

    @property
    def log_file(self) -> Path:
        """``[log].path``, a relative one resolved against the configuration's directory."""
        return self.resolve_path(self.log.path)

    def resolve_path(self, path: str) -> Path:
        """A path from the file, a relative one resolved against the configuration's folder."""
        resolved = Path(path).expanduser()
        if resolved.is_absolute() or self._base_dir is None:
            return resolved
        return self._base_dir / resolved

    @property
    def sync_site(self) -> str:
        """The site level of the gate's MQTT topics: ``[sync].site``, else ``[gate].site``."""
        if self.sync is not None and self.sync.site is not None:
            return self.sync.site
        return self.gate.site

    @property
    def sync_username(self) -> str:
        """The MQTT user name: ``[sync].username``, else the gate id."""
        if self.sync is not None and self.sync.username is not None:
            return self.sync.username
        return self.gate.id

    def file_problems(self) -> list[Problem]:
        """Files the configuration names that do not exist (or are not regular files).

        Separate from validation so that the example configurations validate anywhere;
        ``check-config`` on the gate itself and the daemon at start report these.
        """
        problems: list[Problem] = []
        if self.sync is None:
            return problems
        for key, value in self.sync.files().items():
            path = self.resolve_path(value)
            try:
                if not path.exists():
                    problems.append((key, f"file not found: {path}"))
                elif not path.is_file():
                    problems.append((key, f"not a regular file: {path}"))
                elif not os.access(path, os.R_OK):
                    problems.append((key, f"file not readable by this user: {path}"))
            except OSError as e:  # e.g. a name too long for the file system
                problems.append((key, f"cannot check the file: {e.strerror or e}"))
        return problems

    def admits(self, direction: Direction) -> frozenset[VehicleCategory]:
        listed = self.permissions.listed(direction)
        if listed is None:
            return KIND_ADMITS[self.gate.kind][direction]
        return frozenset(listed)

    def device(self, name: str) -> Device:
        return self.devices[name]

    def lane(self, lane_id: str) -> Lane:
        for lane in self.lanes:
            if lane.id == lane_id:
                return lane
        raise KeyError(lane_id)

    def lane_timings(self, lane: Lane | str) -> Timings:
        """The gate's timings with the lane's overrides applied."""
        if isinstance(lane, str):
            lane = self.lane(lane)
        return self.timings.with_overrides(lane.timings)

    def rules(self) -> GateRules:
        """The policy-relevant part, for the pure core."""
        return GateRules(
            gate_id=self.gate.id,
            kind=self.gate.kind,
            admits=MappingProxyType({d: self.admits(d) for d in Direction}),
            dwell_limits=MappingProxyType(dict(self.policy.dwell_limits)),
            timezone=self.gate.timezone,
            allowlist_max_age=self.policy.allowlist_max_age,
            on_stale_allowlist=self.policy.on_stale_allowlist,
            colour_mismatch=self.policy.colour_mismatch,
            fuzzy_matching=self.policy.fuzzy_matching,
            min_confidence=self.policy.min_confidence,
        )

    def canonical_json(self) -> str:
        """The validated model as JSON with sorted keys: what :meth:`config_hash` hashes."""
        return json.dumps(
            self.model_dump(mode="json"),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON; unchanged by comments, layout, key order, spelling
        of durations or explicitly written defaults."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


# -------------------------------------------------------------------------- cross checks


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
        )


_T = TypeVar("_T")


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
    return problems


# ------------------------------------------------------------- pydantic errors -> problems

_EXPECTED = EXPECTED
_describe = describe_value


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _walk(loc: Sequence[int | str]) -> tuple[str, Any]:
    """A pydantic ``loc`` as a TOML key path (``lanes[0].barrier``), and the type there."""
    path = ""
    tp: Any = GateConfig
    for item in loc:
        if item == "[key]":
            continue
        tp = unwrap_type(tp)
        origin = typing.get_origin(tp)
        if isinstance(item, int):
            path += f"[{item}]"
            tp = typing.get_args(tp)[0] if origin in (tuple, list) else None
            continue
        if origin in (typing.Union, UnionType) and item in _DEVICE_CLASSES:
            tp = _DEVICE_CLASSES[item]  # a discriminator tag, not a key
            continue
        key = item if _PLAIN_KEY.fullmatch(item) else json.dumps(item, ensure_ascii=False)
        path += f".{key}" if path else key
        if _is_model(tp):
            field = tp.model_fields.get(item)
            tp = field.annotation if field is not None else None
        elif origin in (dict, Mapping):
            tp = typing.get_args(tp)[1]
        else:
            tp = None
    return path, unwrap_type(tp)


def _message(error: Any, loc: Sequence[int | str]) -> str:
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "extra_forbidden":
        _, parent = _walk(loc[:-1])
        name = str(loc[-1])
        known = list(parent.model_fields) if _is_model(parent) else []
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        if known and not close:
            hint = f" (expected one of: {', '.join(known)})"
        return f"unknown key '{name}'{hint}"
    if kind == "missing":
        _, tp = _walk(loc)
        return "required table is missing" if _is_model(tp) else "required key is missing"
    if kind in ("enum", "literal_error"):
        if loc and loc[-1] == "[key]":
            return f"unknown key {value!r}: expected one of {ctx.get('expected')}"
        return f"must be one of {ctx.get('expected')}, got {_describe(value)}"
    if kind == "union_tag_invalid":
        return (
            f"unknown device type {ctx.get('tag')!r}: expected one of {', '.join(_DEVICE_CLASSES)}"
        )
    if kind == "union_tag_not_found":
        return f"missing 'type': expected one of {', '.join(_DEVICE_CLASSES)}"
    bounds = {
        "greater_than": "greater than",
        "greater_than_equal": "at least",
        "less_than": "less than",
        "less_than_equal": "at most",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        shown = f"{limit:g}" if isinstance(limit, float) else str(limit)
        return f"must be {bounds[kind]} {shown}, got {_describe(value)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    return str(error["msg"])


def _problems(error: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        path, _ = _walk(loc)
        problems.append((path, _message(item, loc)))
    return problems


# ---------------------------------------------------------------------------------- API


def _section_order(problem: Problem) -> int:
    """Report in the order of the file's sections; stable within a section."""
    section = re.split(r"[.\[]", problem[0], maxsplit=1)[0]
    order = list(GateConfig.model_fields)
    return order.index(section) + 1 if section in order else 0


_TOML_POSITION = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$")


def _syntax_problem(error: tomllib.TOMLDecodeError, text: str) -> Problem:
    message = str(error)
    m = _TOML_POSITION.match(message)
    if m is not None:
        what, line, column = m.group(1), m.group(2), m.group(3)
    else:
        what = message.removesuffix(" (at end of document)")
        lines = text.split("\n")
        line, column = str(len(lines)), str(len(lines[-1]) + 1)
    return "", f"TOML syntax error at line {line}, column {column}: {what}"


def parse_config(
    text: str, source: str = "<string>", *, base_dir: str | os.PathLike[str] | None = None
) -> GateConfig:
    """Validate a configuration given as TOML text. ``base_dir`` anchors relative paths."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([_syntax_problem(e, text)], source) from None
    except RecursionError:
        # tomllib recurses once per level of nested arrays or inline tables.
        raise ConfigError(
            [("", "TOML nested too deeply: arrays or inline tables within each other")], source
        ) from None
    except ValueError:  # an integer past Python's int-from-text digit limit
        raise ConfigError(
            [("", f"TOML integer too long: more than {sys.get_int_max_str_digits()} digits")],
            source,
        ) from None
    problems: list[Problem] = []
    config: GateConfig | None = None
    try:
        config = GateConfig.model_validate(raw, context={_DEFER_CROSS_CHECKS: True})
    except ValidationError as e:
        problems += _problems(e)
    parts = _Parts.from_model(config) if config is not None else _Parts.from_raw(raw)
    for problem in _cross_check(parts):
        if problem not in problems:
            problems.append(problem)
    if problems or config is None:
        raise ConfigError(sorted(problems, key=_section_order), source)
    config._source = source
    config._base_dir = Path(base_dir) if base_dir is not None else None
    return config


def load_config(path: str | os.PathLike[str]) -> GateConfig:
    """Read and validate a configuration file; relative paths in it are anchored at its folder."""
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise ConfigError([("", f"cannot read the file: {e.strerror or e}")], str(file)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            [("", f"not UTF-8 text (byte {e.start}): TOML files must be UTF-8")], str(file)
        ) from None
    return parse_config(text, str(file), base_dir=file.absolute().parent)
