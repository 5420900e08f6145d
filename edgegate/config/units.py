"""Durations and byte sizes as written in a configuration file, and their field types.

Durations are TOML numbers (seconds) or strings with units: ``"500ms"``, ``"5s"``,
``"10min"``, ``"6h"``, ``"2d"``, combined as ``"1h30min"``. Sizes are integers (bytes) or
strings such as ``"4MiB"``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

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


# ---------------------------------------------------------------------------- byte sizes

_BYTE_UNITS = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_BYTE_SIZE = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")


def parse_byte_size(value: object) -> int:
    """A size in bytes from a TOML value: an integer, or a string such as ``"4MiB"``,
    ``"512KiB"`` or ``"65536B"`` (units B, KiB, MiB, GiB, TiB)."""
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
        "such as '4MiB', '512KiB' (units B, KiB, MiB, GiB, TiB)"
    )


def _byte_bounds(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} bytes, got {value}")
        return value

    return AfterValidator(check)


ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
