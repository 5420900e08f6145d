"""Stored events as JSON-ready dicts and one-line text, for tools and technicians."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime, timedelta
from typing import Any

import msgpack

from edgegate.core.events import Event
from edgegate.log.reader import StoredEvent


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(_jsonable(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def event_fields(event: Event) -> dict[str, Any]:
    return {
        f.name: _jsonable(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if f.name != "lane"
    }


def to_json_dict(stored: StoredEvent) -> dict[str, Any]:
    """``seq``, ``type``, ``lane``, ``ts`` and the event's fields; never raises.

    An event this software cannot decode (unknown type, newer version, damaged payload) is
    shown with its raw map (or hex payload) and a ``decode_error``: a tool must show what is
    there rather than stop.
    """
    out: dict[str, Any] = {
        "seq": stored.seq,
        "type": _jsonable(stored.type),
        "lane": _jsonable(stored.lane),
        "ts": ts.isoformat() if (ts := _ts(stored)) is not None else f"wall_ns={stored.wall_ns!r}",
        "version": _jsonable(stored.version),
    }
    try:
        fields = event_fields(stored.event())
    except Exception as exc:  # EventDecodeError, or a damaged row's column of another type
        out["decode_error"] = str(exc)
        try:
            raw = msgpack.unpackb(stored.data, raw=False)
            out["raw"] = _jsonable(raw)
        except Exception:
            out["raw_hex"] = stored.data.hex()
        return out
    for key, value in fields.items():
        out.setdefault(key, value)
    return out


def _ts(stored: StoredEvent) -> datetime | None:
    """The event's wall time; None if its ``wall_ns`` is damaged (not a time)."""
    try:
        return stored.ts
    except (TypeError, ValueError, OverflowError):
        return None


def to_text(stored: StoredEvent) -> str:
    """One line: seq, time, lane, type and the fields; never raises."""
    d = to_json_dict(stored)
    at = _ts(stored)
    ts = (
        f"wall_ns={stored.wall_ns!r}"
        if at is None
        else at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    )
    skip = {"seq", "type", "lane", "ts", "version"}
    fields = " ".join(f"{k}={_short(v)}" for k, v in d.items() if k not in skip)
    lane, type_name = str(d["lane"] or "-"), str(d["type"])
    return f"{stored.seq:>8}  {ts}  {lane:<8} {type_name:<26} {fields}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
