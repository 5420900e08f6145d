"""Field types of the configuration's values: names, time zones, hosts, serial ports,
device profiles, broker URLs, listen addresses, file paths and secrets."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    StrictFloat,
    StrictInt,
    StrictStr,
)

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


# ------------------------------------------------ broker, listen address, files, secrets

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
