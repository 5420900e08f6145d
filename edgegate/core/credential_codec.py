"""Credential <-> compact msgpack bytes, the form the allow-list keeps in memory and in SQLite.

Each credential is one msgpack array, positional (no field names), first element the kind's
string value::

    registration  [kind, id, plate, colour, category, holder, organisation,
                   valid_from, valid_until|nil, gates]
    permit        [kind, id, plate, colour, category, visitor, host, purpose,
                   valid_from, valid_until, gates]
    appointment   [kind, id, plate, colour, category, window_start, window_end, destination,
                   un_number, hazard_class, waybill, gates, consumed]
    blacklist     [kind, id, plate, reason, detail, source, valid_from, valid_until|nil]

Instants are UTC epoch seconds (int), enums their string values, gate sets sorted lists.
The encoding is canonical (equal credentials give equal bytes), so it can be hashed. Only
timezone-aware instants with whole seconds can be encoded: anything else would not round-trip.
A ``group`` is a msgpack array of encodings (the credentials of one plate). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgpack

from edgegate.core import domain
from edgegate.core.domain import (
    Appointment,
    BlacklistEntry,
    Credential,
    CredentialKind,
    Registration,
    TemporaryPermit,
)

_T = TypeVar("_T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)

_REGISTRATION = CredentialKind.REGISTRATION.value
_PERMIT = CredentialKind.PERMIT.value
_APPOINTMENT = CredentialKind.APPOINTMENT.value
_BLACKLIST = CredentialKind.BLACKLIST.value


class CodecError(ValueError):
    """A credential that cannot be encoded, or bytes that are not an encoded credential."""


def _ts(value: datetime, field: str) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise CodecError(f"{field}: naive datetime {value.isoformat()} (must be timezone-aware)")
    if value.microsecond:
        raise CodecError(f"{field}: {value.isoformat()} has fractional seconds")
    return (value - _EPOCH) // _SECOND


def _opt_ts(value: datetime | None, field: str) -> int | None:
    return None if value is None else _ts(value, field)


# Decoding runs on every lookup at the lane. Instants and gate sets are shared through bounded
# caches: a list holds few distinct ones (whole days, window starts), so decoded credentials
# share them rather than each holding copies.
_COLOURS = {m.value: m for m in domain.PlateColour}
_CATEGORIES = {m.value: m for m in domain.VehicleCategory}
_HOLDERS = {m.value: m for m in domain.HolderType}
_REASONS = {m.value: m for m in domain.BlacklistReason}
_INSTANTS: dict[int, datetime] = {}
_GATE_SETS: dict[tuple[str, ...], frozenset[str]] = {}
_MAX_CACHED_INSTANTS = 1 << 16
_MAX_CACHED_GATE_SETS = 1 << 12


def positional_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A function building a dataclass from all its field values in declaration order: the
    class itself, unless some field is keyword-only."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if not any(f.kw_only for f in fields):
        return cls
    names = [f.name for f in fields]

    def construct(*values: Any) -> _T:
        return cls(**dict(zip(names, values, strict=True)))

    return construct


def _gate_set(gates: tuple[str, ...]) -> frozenset[str]:
    found = _GATE_SETS.get(gates)
    if found is None:
        # Checked before caching: only tuples of strings are keys, so no other value (say
        # ``(1,)`` beside ``(True,)``) can ever find a set it is merely equal to.
        if not isinstance(gates, tuple) or not all(type(g) is str for g in gates):
            raise CodecError(f"not an encoded credential: gates {gates!r} are not strings")
        if len(_GATE_SETS) >= _MAX_CACHED_GATE_SETS:
            _GATE_SETS.clear()
        found = _GATE_SETS[gates] = frozenset(gates)
    return found


def _instant(value: int) -> datetime:
    """The instant of an epoch second."""
    found = _INSTANTS.get(value)
    if found is None:
        if len(_INSTANTS) >= _MAX_CACHED_INSTANTS:
            _INSTANTS.clear()
        found = _INSTANTS[value] = datetime.fromtimestamp(value, UTC)
    return found


def _opt_instant(value: int | None) -> datetime | None:
    return None if value is None else _instant(value)


def _vehicle(tag: str, c: Registration | TemporaryPermit | Appointment) -> list[Any]:
    """The fields a vehicle credential's encoding starts with."""
    return [tag, c.id, c.plate, c.colour, c.category]


def _validity(c: Registration | TemporaryPermit) -> list[Any]:
    """The fields a registration's or a permit's encoding ends with."""
    return [_ts(c.valid_from, "valid_from"), _opt_ts(c.valid_until, "valid_until"), sorted(c.gates)]


def encode(credential: Credential) -> bytes:
    """The canonical bytes of a credential. Raises ``CodecError`` for naive or sub-second
    instants."""
    c = credential
    # Enum members go in as they are: they are str (StrEnum), packed as their value.
    fields: list[Any]
    if isinstance(c, Registration):
        fields = [
            *_vehicle(_REGISTRATION, c),
            c.holder,
            c.organisation,
            *_validity(c),
        ]
    elif isinstance(c, TemporaryPermit):
        fields = [
            *_vehicle(_PERMIT, c),
            c.visitor,
            c.host,
            c.purpose,
            *_validity(c),
        ]
    elif isinstance(c, Appointment):
        fields = [
            *_vehicle(_APPOINTMENT, c),
            _ts(c.window_start, "window_start"),
            _ts(c.window_end, "window_end"),
            c.destination,
            c.un_number,
            c.hazard_class,
            c.waybill,
            sorted(c.gates),
            c.consumed,
        ]
    elif isinstance(c, BlacklistEntry):
        fields = [
            _BLACKLIST,
            c.id,
            c.plate,
            c.reason,
            c.detail,
            c.source,
            _ts(c.valid_from, "valid_from"),
            _opt_ts(c.valid_until, "valid_until"),
        ]
    else:
        raise CodecError(f"not a credential: {type(c).__name__}")
    try:
        return msgpack.packb(fields, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from exc


def decode(data: bytes) -> Credential:
    """The credential ``encode`` made these bytes from. Raises ``CodecError`` otherwise."""
    try:
        fields = msgpack.unpackb(data, use_list=False)
    except ValueError as exc:  # msgpack's format errors
        raise CodecError(f"not an encoded credential: {exc}") from exc
    return _from_fields(fields)


def decode_all(data: bytes) -> list[Credential]:
    """The credentials of one encoding or of a ``group``, in order."""
    try:
        fields = msgpack.unpackb(data, use_list=False)
    except ValueError as exc:
        raise CodecError(f"not an encoded credential: {exc}") from exc
    if isinstance(fields, tuple) and fields and isinstance(fields[0], tuple):
        return [_from_fields(f) for f in fields]
    return [_from_fields(fields)]


def _from_fields(f: Any) -> Credential:
    try:
        if not isinstance(f, tuple) or not f:
            raise CodecError("not an encoded credential")
        tag = f[0]
        # Unpacking checks the field count (ValueError otherwise).
        if tag == _REGISTRATION:
            _, id_, plate, colour, category, holder, organisation, start, until, gates = f
            return Registration(
                id=id_,
                plate=plate,
                colour=_COLOURS[colour],
                category=_CATEGORIES[category],
                holder=_HOLDERS[holder],
                organisation=organisation,
                valid_from=_instant(start),
                valid_until=_opt_instant(until),
                gates=_gate_set(gates),
            )
        if tag == _PERMIT:
            _, id_, plate, colour, category, visitor, host, purpose, start, until, gates = f
            return TemporaryPermit(
                id=id_,
                plate=plate,
                colour=_COLOURS[colour],
                category=_CATEGORIES[category],
                visitor=visitor,
                host=host,
                purpose=purpose,
                valid_from=_instant(start),
                valid_until=_instant(until),
                gates=_gate_set(gates),
            )
        if tag == _APPOINTMENT:
            (
                _,
                id_,
                plate,
                colour,
                category,
                start,
                end,
                destination,
                un_number,
                hazard_class,
                waybill,
                gates,
                consumed,
            ) = f
            return Appointment(
                id=id_,
                plate=plate,
                colour=_COLOURS[colour],
                category=_CATEGORIES[category],
                window_start=_instant(start),
                window_end=_instant(end),
                destination=destination,
                un_number=un_number,
                hazard_class=hazard_class,
                waybill=waybill,
                gates=_gate_set(gates),
                consumed=consumed is True,
            )
        if tag == _BLACKLIST:
            _, id_, plate, reason, detail, source, start, until = f
            return BlacklistEntry(
                id=id_,
                plate=plate,
                reason=_REASONS[reason],
                detail=detail,
                source=source,
                valid_from=_instant(start),
                valid_until=_opt_instant(until),
            )
        raise CodecError(f"unknown credential kind {tag!r}")
    except CodecError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, OSError) as exc:
        # A wrong field count is a ValueError; fromtimestamp raises OverflowError/OSError.
        raise CodecError(f"not an encoded credential: {exc}") from exc


def kind_and_id(data: bytes) -> tuple[str, str]:
    """``(kind value, id)`` of an encoded credential without building the dataclass."""
    try:
        f = msgpack.unpackb(data, use_list=False)
        kind, id_ = f[0], f[1]
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise CodecError(f"not an encoded credential: {exc}") from exc
    if not isinstance(kind, str) or not isinstance(id_, str):
        raise CodecError("not an encoded credential")
    return kind, id_


# Groups: the credentials of one plate as one msgpack array of their encodings, built by
# concatenation (an encoding is a complete msgpack value). The in-memory index keeps a plate's
# credentials as one bytes object this way: no tuples, so the garbage collector never has to
# walk the million-entry dict, and less memory per plate.


def is_group(data: bytes) -> bool:
    """Whether ``data`` is a ``group`` rather than one credential's encoding."""
    # A credential is a fixarray (8-13 fields) whose first element is a short string; a group
    # is an array whose first element is a credential (a fixarray).
    return data[0] in (0xDC, 0xDD) or 0x90 <= data[1] <= 0x9F


def group(encodings: list[bytes]) -> bytes:
    """One value holding several encodings (two or more), in the given order."""
    return _array_header(len(encodings)) + b"".join(encodings)


def grouped_with(data: bytes, encoding: bytes) -> bytes:
    """``data`` (an encoding or a group) with ``encoding`` appended, as a group."""
    if not is_group(data):
        return group([data, encoding])
    count, start = _array_prefix(data)
    return _array_header(count + 1) + data[start:] + encoding


def split(data: bytes) -> list[bytes]:
    """The encodings in ``data`` (an encoding or a group)."""
    if not is_group(data):
        return [data]
    # The encoding is canonical, so packing the unpacked fields gives the same bytes back.
    return [msgpack.packb(fields) for fields in msgpack.unpackb(data)]


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _array_prefix(data: bytes) -> tuple[int, int]:
    """(element count, offset of the first element) of a msgpack array."""
    head = data[0]
    if head == 0xDC:
        return int.from_bytes(data[1:3], "big"), 3
    if head == 0xDD:
        return int.from_bytes(data[1:5], "big"), 5
    return head & 0x0F, 1
