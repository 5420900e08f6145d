"""The pydantic models of the configuration's sections: ``[gate]``, ``[permissions]``,
``[policy]``, ``[log]``, ``[timings]``, ``[devices]``, ``[[lanes]]``, ``[incident]``,
``[sync]`` and ``[health]``. Each validates on its own; checks across sections live in
:mod:`.checks`."""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    field_validator,
    model_validator,
)

from edgegate.config.fields import (
    Baudrate,
    BrokerAddress,
    BrokerUrl,
    DeviceName,
    FilePath,
    Fraction,
    GateId,
    Hertz,
    Host,
    LaneId,
    NonEmptyStr,
    Password,
    ProfileName,
    SerialPort,
    SiteId,
    TimeZoneName,
    parse_broker_url,
)
from edgegate.config.units import (
    ByteSize,
    Duration,
    DwellLimit,
    _bounds,
    _byte_bounds,
    format_duration,
)
from edgegate.core.domain import Direction, GateKind, VehicleCategory
from edgegate.core.rules import (
    DEFAULT_DWELL_LIMITS,
    ColourMismatchAction,
    FuzzyMatching,
    StaleAction,
)
from edgegate.validation import StrictModel

# ------------------------------------------------------------------------------ sections


class GateSection(StrictModel):
    """``[gate]``: who this gate is."""

    id: GateId  # MQTT topics and the event log's gate id
    name: NonEmptyStr
    kind: GateKind
    site: SiteId
    timezone: TimeZoneName = "Asia/Shanghai"


class Permissions(StrictModel):
    """``[permissions]``: categories admitted per direction; unset = all the kind allows."""

    entry: tuple[VehicleCategory, ...] | None = None
    exit: tuple[VehicleCategory, ...] | None = None

    def listed(self, direction: Direction) -> tuple[VehicleCategory, ...] | None:
        return self.entry if direction is Direction.ENTRY else self.exit


class Policy(StrictModel):
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


class WriteFailurePolicy(StrictModel):
    """``[log.on_write_failure]``: entries are refused, exits let vehicles out of the park."""

    entry: WriteFailureAction = WriteFailureAction.DENY
    exit: WriteFailureAction = WriteFailureAction.ALLOW

    def for_direction(self, direction: Direction) -> WriteFailureAction:
        return self.entry if direction is Direction.ENTRY else self.exit


_MB = 1024 * 1024


class RetentionSettings(StrictModel):
    """``[log.retention]``: roll the log over into segment files by day (the gate's time
    zone) or ``max_segment_size``, whichever comes first; compress segments older than
    ``keep`` that central acknowledged; remove the oldest archives only while the archives
    exceed ``archive_budget``. Absent: one file that grows without bound. A gate without
    ``[sync]`` must say ``archive_unacknowledged = true`` (no central ever acknowledges its
    events). docs/operations.md, "A log that fits its disk"."""

    max_segment_size: Annotated[ByteSize, _byte_bounds(_MB, 64 * 1024 * _MB)] = 1024 * _MB
    keep: Annotated[Duration, _bounds("0s", "3650d")] = timedelta(days=30)
    archive_budget: Annotated[ByteSize, _byte_bounds(_MB, 1024 * 1024 * 1024 * _MB)]
    compression_level: Annotated[StrictInt, Field(ge=1, le=19)] = 9
    archive_unacknowledged: StrictBool = False
    check_every: Annotated[Duration, _bounds("1s", "1h")] = timedelta(minutes=1)


class LogSettings(StrictModel):
    """``[log]``: the gate's SQLite event log (relative paths: against the config's folder)."""

    path: NonEmptyStr
    on_write_failure: WriteFailurePolicy = WriteFailurePolicy()
    retention: RetentionSettings | None = None


PlateWait = Annotated[Duration, _bounds("500ms", "60s")]
PlateEarly = Annotated[Duration, _bounds("0s", "30s")]
Travel = Annotated[Duration, _bounds("1s", "60s")]
PassTimeout = Annotated[Duration, _bounds("5s", "15min")]
CloseDelay = Annotated[Duration, _bounds("0s", "30s")]
DuplicateWindow = Annotated[Duration, _bounds("0s", "10min")]
TailgateWindow = Annotated[Duration, _bounds("0s", "30s")]
LoopFaultAfter = Annotated[Duration, _bounds("1min", "24h")]
OverstayEvery = Annotated[Duration, _bounds("1s", "1h")]
GuardWait = Annotated[Duration, _bounds("10s", "1h")]


class Timings(StrictModel):
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
    # A vehicle waiting for a guard's answer longer than this is given up on: the lane waits
    # for a new read (nothing opens).
    guard_wait: GuardWait = timedelta(seconds=120)

    def with_overrides(self, overrides: LaneTimings) -> Timings:
        return self.model_copy(update=overrides.model_dump(exclude_none=True))


class LaneTimings(StrictModel):
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
    guard_wait: GuardWait | None = None


# ------------------------------------------------------------------------------- devices


class DeviceRole(enum.StrEnum):
    PLC = "PLC"  # drives a barrier and reads its loops
    PLATE_READER = "plate reader"


class _SerialLine(StrictModel):
    port: SerialPort
    baudrate: Baudrate = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    def _line(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


class ModbusTcpDevice(StrictModel):
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


class SimulatedPlcDevice(StrictModel):
    """A simulated barrier with loops, for the demo and tests."""

    role: ClassVar[DeviceRole] = DeviceRole.PLC
    type: Literal["simulated-plc"]
    travel_time: Annotated[Duration, _bounds("100ms", "60s")] = timedelta(seconds=3)
    # The simulator speaks this profile's register map; the real Modbus driver talks to it.
    profile: ProfileName = "barrier-plc-generic"

    def address(self) -> str:
        return f"simulated, arm travel {format_duration(self.travel_time)}"


class SimulatedPlateReaderDevice(StrictModel):
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
_DEVICE_CLASSES: dict[str, type[StrictModel]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(Device)[0])
}
_DEVICE_ADAPTER: TypeAdapter[Device] = TypeAdapter(Device)
_KIND_ADAPTER: TypeAdapter[GateKind] = TypeAdapter(GateKind)


def _types_for(role: DeviceRole) -> str:
    names = [t for t, cls in _DEVICE_CLASSES.items() if getattr(cls, "role", None) is role]
    return ", ".join(names)


# --------------------------------------------------------------------------------- lanes


class Lane(StrictModel):
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


class IncidentSettings(StrictModel):
    """``[incident]``: the lanes incident mode opens and holds as evacuation paths."""

    evacuation_lanes: tuple[LaneId, ...] = ()


# ---------------------------------------------------------------------------------- sync


def _moved_to_policy(value: object) -> None:
    raise ValueError(
        "the allow-list age limit is a decision policy: set [policy].allowlist_max_age "
        "(and [policy].on_stale_allowlist) instead"
    )


def _moved_to_http(new: str) -> Callable[[object], None]:
    def refuse(value: object) -> None:
        raise ValueError(f"moved to [http] {new}: the gate's one HTTP server serves the pull API")

    return refuse


def _moved() -> Any:
    return Field(default=None, exclude=True)


class PullApiSettings(StrictModel):
    """``[sync.pull_api]``: the gate's ``GET /v1/events`` endpoint for central's pullers, on
    the HTTP server of ``[http]`` (which holds its address, TLS and connection limits)."""

    token_file: FilePath  # the bearer token, one line
    # After max_auth_failures 401s within a minute an address gets 429 for auth_pause.
    max_auth_failures: Annotated[StrictInt, Field(ge=1, le=1000)] = 10
    auth_pause: Annotated[Duration, _bounds("1s", "24h")] = timedelta(seconds=60)
    # Moved to [http]: refused with a pointer there.
    listen: Annotated[None, BeforeValidator(_moved_to_http("bind and port"))] = _moved()
    tls_cert_file: Annotated[None, BeforeValidator(_moved_to_http("tls_cert_file"))] = _moved()
    tls_key_file: Annotated[None, BeforeValidator(_moved_to_http("tls_key_file"))] = _moved()
    header_timeout: Annotated[None, BeforeValidator(_moved_to_http("header_timeout"))] = _moved()
    max_connections: Annotated[None, BeforeValidator(_moved_to_http("max_connections"))] = _moved()
    max_pending_per_peer: Annotated[
        None, BeforeValidator(_moved_to_http("max_pending_per_peer"))
    ] = _moved()


class HttpSettings(StrictModel):
    """``[http]``: the gate's one HTTP server (the pull API, the guard's console).

    Absent: no HTTP server. Relative file paths resolve against the configuration's folder.
    """

    bind: Host = "127.0.0.1"  # the address to listen on; 127.0.0.1 serves the PC only
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 8480
    # HTTPS: the gate's certificate (PEM, with any intermediates) and its key; both or
    # neither. Without them the server is plain HTTP: tokens and passwords cross in clear.
    tls_cert_file: FilePath | None = None
    tls_key_file: FilePath | None = None
    # Lock-out limits (see edgegate.web): the first request head within header_timeout;
    # connections in all, and per address before they authenticate.
    header_timeout: Annotated[Duration, _bounds("500ms", "60s")] = timedelta(seconds=5)
    max_connections: Annotated[StrictInt, Field(ge=1, le=1024)] = 32
    max_pending_per_peer: Annotated[StrictInt, Field(ge=1, le=1024)] = 8

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def files(self) -> dict[str, str]:
        """Key path (``http.tls_cert_file``) -> configured path, for the files it names."""
        return {
            f"http.{key}": value
            for key in ("tls_cert_file", "tls_key_file")
            if (value := getattr(self, key)) is not None
        }


class SyncSettings(StrictModel):
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
    # Central's park key (not the central key): park messages of this site only, never
    # allow-lists or commands. Absent: park-wide consumption is off at this gate.
    park_public_key: FilePath | None = None
    # A vehicle central said is inside elsewhere is forgotten after this long.
    park_inside_max_age: Annotated[Duration, _bounds("1min", "30d")] = timedelta(hours=24)
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
        if self.park_public_key is not None:
            out["sync.park_public_key"] = self.park_public_key
        if self.pull_api is not None:
            out["sync.pull_api.token_file"] = self.pull_api.token_file
        return out


# -------------------------------------------------------------------------------- health


class HealthSettings(StrictModel):
    """``[health]``: what ``/readyz`` checks and how often (see docs/operations.md, "Watching
    a fleet of gates"). Absent: these defaults. The allow-list's staleness is
    ``[policy].allowlist_max_age``.

    A PLC is seen when it answers its polls; a plate reader, quiet at night, is seen while its
    serial port is open without a fault. A device not seen for its silence limit makes the
    gate not ready. ``token_file`` (optional, relative: against the configuration's folder)
    holds a bearer token that ``/metrics``, ``/healthz`` and ``/readyz`` then require.
    """

    poll_period: Annotated[Duration, _bounds("100ms", "5min")] = timedelta(seconds=5)
    # Free space the log's file system must keep, below which the gate is not ready.
    disk_reserve: Annotated[ByteSize, _byte_bounds(0, 1 << 50)] = 512 * 1024 * 1024
    plc_silence: Annotated[Duration, _bounds("100ms", "1h")] = timedelta(seconds=10)
    plate_reader_silence: Annotated[Duration, _bounds("100ms", "1h")] = timedelta(seconds=30)
    # Per device, overriding the limit of its kind: { cam-1 = "2min" }.
    device_silence: Mapping[DeviceName, Annotated[Duration, _bounds("100ms", "1h")]] = Field(
        default_factory=dict
    )
    # Events waiting for the log's writer while it has finished no commit for this long:
    # the writer is stuck.
    log_stall: Annotated[Duration, _bounds("1s", "10min")] = timedelta(seconds=10)
    # Whether an unsynchronised clock (the kernel's word, as timedatectl shows it) makes the
    # gate not ready. false only for a gate that has no time source by design: its decisions'
    # times are then only as good as its hardware clock.
    require_clock_sync: bool = True
    token_file: FilePath | None = None

    def files(self) -> dict[str, str]:
        return {} if self.token_file is None else {"health.token_file": self.token_file}


# ------------------------------------------------------------------------------- console


class ConsoleSettings(StrictModel):
    """``[console]``: the guard's console. Cookies are ``Secure`` when the server has TLS.

    ``accounts_file`` (relative: against the configuration's folder) is written by
    ``edgegate accounts`` and re-read by the daemon when it changes. After
    ``max_failed_logins`` refused logins within ``failed_login_window`` for one account name
    (known or not) or one client address, logins for it are refused for ``lockout``; an
    address that logged in to the name before is locked by its own failures for it only.
    """

    accounts_file: FilePath
    session_idle: Annotated[Duration, _bounds("1min", "24h")] = timedelta(hours=8)
    max_failed_logins: Annotated[StrictInt, Field(ge=1, le=100)] = 5
    failed_login_window: Annotated[Duration, _bounds("1min", "24h")] = timedelta(minutes=15)
    lockout: Annotated[Duration, _bounds("10s", "24h")] = timedelta(minutes=15)
