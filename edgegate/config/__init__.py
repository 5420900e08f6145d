"""Gate configuration: one TOML file per gate, validated completely before anything is opened.

``load_config``/``parse_config`` turn the file into a frozen :class:`GateConfig` or raise
:class:`ConfigError` listing every problem, each with the key path it concerns
(``lanes[0].barrier: device 'plc-9' is not defined in [devices]``).

Durations are TOML numbers (seconds) or strings with units: ``"500ms"``, ``"5s"``,
``"10min"``, ``"6h"``, ``"2d"``, combined as ``"1h30min"``. A relative ``[log].path`` is
resolved against the directory of the configuration file, not the working directory.
Nothing here opens a device or the log.

The package, in layers: :mod:`.problems` (what an error reports), :mod:`.units` (durations,
sizes), :mod:`.fields` (value types: names, hosts, URLs), :mod:`.models` (one model per
section), :mod:`.checks` (across sections), :mod:`.gate_config` (the whole file),
:mod:`.rendering` (pydantic and TOML errors as problems) and :mod:`.loading`. Import from
``edgegate.config``; names with a leading underscore are shared between these modules only.
"""

from edgegate.config.fields import BrokerAddress, parse_broker_url
from edgegate.config.gate_config import GateConfig
from edgegate.config.loading import load_config, parse_config
from edgegate.config.models import (
    Device,
    DeviceRole,
    GateSection,
    HealthSettings,
    IncidentSettings,
    Lane,
    LaneTimings,
    LogSettings,
    ModbusRtuDevice,
    ModbusTcpDevice,
    Permissions,
    Policy,
    PullApiSettings,
    SerialPlateReaderDevice,
    SimulatedPlateReaderDevice,
    SimulatedPlcDevice,
    SyncSettings,
    Timings,
    WriteFailureAction,
    WriteFailurePolicy,
)
from edgegate.config.problems import ConfigError, Problem
from edgegate.config.units import format_duration, parse_byte_size, parse_duration

__all__ = [
    "BrokerAddress",
    "ConfigError",
    "Device",
    "DeviceRole",
    "GateConfig",
    "GateSection",
    "HealthSettings",
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
    "parse_broker_url",
    "parse_byte_size",
    "parse_config",
    "parse_duration",
]
