"""``edgegate replay export``: a source's events as CSV (for a spreadsheet) or NDJSON (for
scripts), one event per row or line, times in the gate's zone.

CSV is UTF-8 with a byte-order mark, so that a spreadsheet shows Chinese plates intact; its
columns are ``seq, time, type, lane, version``, then every field of the event types exported
(a field no event of a row's type has is empty), then ``decode_error``. Text cells starting
with ``= + - @``, a tab or a carriage return are prefixed with ``'``: a spreadsheet must not
run an event's text (a guard's reason, a plate typed at the console) as a formula.
Lists are joined with ``;``, bytes are hex, times ISO 8601 in the gate's zone.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import IO, Any
from zoneinfo import ZoneInfo

import msgpack

from edgegate.core.codec import ns_to_datetime
from edgegate.core.events import registered_types
from edgegate.log import StoredEvent

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_BASE = ("seq", "time", "type", "lane", "version")


def escape_cell(text: str) -> str:
    """``text`` made inert for a spreadsheet (see the module docstring)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def field_columns(types: Iterable[str] | None = None) -> list[str]:
    """The event fields of ``types`` (all registered types if None), first seen first."""
    known = registered_types()
    names = sorted(known) if types is None else sorted(t for t in types if t in known)
    out: dict[str, None] = {}
    for t in names:
        for f in dataclasses.fields(known[t]):
            if f.name != "lane":
                out.setdefault(f.name)
    return list(out)


def _value(value: Any, tz: ZoneInfo) -> Any:
    """A field value as plain JSON data; times in ``tz``."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, tuple | list):
        return [_value(v, tz) for v in value]
    if isinstance(value, dict):
        return {str(k): _value(v, tz) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # e.g. a decision's trace (access.decided v4): its fields, converted the same way
        return {f.name: _value(getattr(value, f.name), tz) for f in dataclasses.fields(value)}
    return value


def _time(stored: StoredEvent, tz: ZoneInfo) -> str:
    try:
        return ns_to_datetime(stored.wall_ns).astimezone(tz).isoformat()
    except (TypeError, ValueError, OverflowError):
        return f"wall_ns={stored.wall_ns!r}"


def event_record(stored: StoredEvent, tz: ZoneInfo) -> dict[str, Any]:
    """``seq, time, type, lane, version`` and the decoded fields; an event that cannot be
    decoded keeps its raw map (``raw``) or hex payload (``raw_hex``) and a ``decode_error``."""
    out: dict[str, Any] = {
        "seq": stored.seq,
        "time": _time(stored, tz),
        "type": stored.type,
        "lane": stored.lane,
        "version": stored.version,
    }
    try:
        event = stored.event()
    except Exception as exc:  # EventDecodeError, or a damaged column
        out["decode_error"] = str(exc)
        try:
            out["raw"] = _value(msgpack.unpackb(stored.data, raw=False), tz)
        except Exception:
            out["raw_hex"] = bytes(stored.data).hex()
        return out
    for f in dataclasses.fields(event):
        if f.name != "lane":
            out.setdefault(f.name, _value(getattr(event, f.name), tz))
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)  # numbers are not formulas, a negative one included
    if isinstance(value, list):
        return escape_cell(";".join(_cell(v) for v in value))
    if isinstance(value, dict):
        return escape_cell(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return escape_cell(str(value))


def write_csv(
    events: Iterable[StoredEvent], out: IO[str], tz: ZoneInfo, types: Iterable[str] | None = None
) -> int:
    """Write the events as CSV to ``out`` (opened with ``newline=""``); the number written.
    The BOM is written here: open ``out`` as plain ``utf-8``."""
    columns = [*_BASE, *field_columns(types), "decode_error"]
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(columns)
    n = 0
    for stored in events:
        record = event_record(stored, tz)
        if "decode_error" in record:
            raw = record.pop("raw", None) or record.pop("raw_hex", None)
            record["decode_error"] = f"{record['decode_error']} (raw: {raw})"
        writer.writerow([_cell(record.get(c)) for c in columns])
        n += 1
    return n


def write_ndjson(events: Iterable[StoredEvent], out: IO[str], tz: ZoneInfo) -> int:
    """Write one JSON object per event and line (``event_record``); the number written."""
    n = 0
    for stored in events:
        out.write(json.dumps(event_record(stored, tz), ensure_ascii=False))
        out.write("\n")
        n += 1
    return n
