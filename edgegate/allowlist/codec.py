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
Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgpack

from edgegate.core.domain import (
    Appointment,
    BlacklistEntry,
    BlacklistReason,
    Credential,
    CredentialKind,
    HolderType,
    PlateColour,
    Registration,
    TemporaryPermit,
    VehicleCategory,
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


# Decoding runs on every lookup at the lane: dict lookups instead of Enum() calls and a
# cache of instants (lists share few distinct ones: whole days, window starts) keep it fast.
_COLOURS = {m.value: m for m in PlateColour}
_CATEGORIES = {m.value: m for m in VehicleCategory}
_HOLDERS = {m.value: m for m in HolderType}
_REASONS = {m.value: m for m in BlacklistReason}
_INSTANTS: dict[int, datetime] = {}
_MAX_CACHED_INSTANTS = 1 << 16


def positional_constructor(cls: type[_T]) -> Callable[..., _T]:
    """Build instances of a slotted dataclass from all its field values in declaration order.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, half the
    cost of decoding a credential; writing the slots directly gives the same object twice as
    fast. Classes this does not fit (no slots, ``__post_init__``, non-init fields) get their
    ``__init__``.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in fields]
    slotted = "__slots__" in vars(cls)
    if not slotted or hasattr(cls, "__post_init__") or not all(f.init for f in fields):

        def construct(*values: Any) -> _T:
            return cls(**dict(zip(names, values, strict=True)))

        return construct
    # Generated like dataclasses' own __init__: one straight-line call per slot (a loop over
    # the setters costs a third more).
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    params = ", ".join(f"v{i}" for i in range(len(names)))
    lines = [f"def build({params}):", "    obj = new(cls)"]
    for i, name in enumerate(names):
        namespace[f"set{i}"] = getattr(cls, name).__set__
        lines.append(f"    set{i}(obj, v{i})")
    lines.append("    return obj")
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from field positions only
    build: Callable[..., _T] = namespace["build"]
    return build


_registration = positional_constructor(Registration)
_permit = positional_constructor(TemporaryPermit)
_appointment = positional_constructor(Appointment)
_blacklist = positional_constructor(BlacklistEntry)


def _dt(value: int) -> datetime:
    instant = _INSTANTS.get(value)
    if instant is None:
        if len(_INSTANTS) >= _MAX_CACHED_INSTANTS:
            _INSTANTS.clear()
        instant = _INSTANTS[value] = datetime.fromtimestamp(value, UTC)
    return instant


def _opt_dt(value: int | None) -> datetime | None:
    return None if value is None else _dt(value)


def encode(credential: Credential) -> bytes:
    """The canonical bytes of a credential. Raises ``CodecError`` for naive or sub-second
    instants."""
    c = credential
    # Enum members go in as they are: they are str (StrEnum), packed as their value.
    fields: list[Any]
    if isinstance(c, Registration):
        fields = [
            _REGISTRATION,
            c.id,
            c.plate,
            c.colour,
            c.category,
            c.holder,
            c.organisation,
            _ts(c.valid_from, "valid_from"),
            _opt_ts(c.valid_until, "valid_until"),
            sorted(c.gates),
        ]
    elif isinstance(c, TemporaryPermit):
        fields = [
            _PERMIT,
            c.id,
            c.plate,
            c.colour,
            c.category,
            c.visitor,
            c.host,
            c.purpose,
            _ts(c.valid_from, "valid_from"),
            _ts(c.valid_until, "valid_until"),
            sorted(c.gates),
        ]
    elif isinstance(c, Appointment):
        fields = [
            _APPOINTMENT,
            c.id,
            c.plate,
            c.colour,
            c.category,
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
        f = msgpack.unpackb(data)
        if not isinstance(f, list) or not f:
            raise CodecError("not an encoded credential")
        tag = f[0]
        if tag == _REGISTRATION and len(f) == 10:
            return _registration(
                f[1],  # id
                f[2],  # plate
                _COLOURS[f[3]],
                _CATEGORIES[f[4]],
                _HOLDERS[f[5]],
                f[6],  # organisation
                _dt(f[7]),  # valid_from
                _opt_dt(f[8]),  # valid_until
                frozenset(f[9]),  # gates
            )
        if tag == _PERMIT and len(f) == 11:
            return _permit(
                f[1],  # id
                f[2],  # plate
                _COLOURS[f[3]],
                _CATEGORIES[f[4]],
                f[5],  # visitor
                f[6],  # host
                f[7],  # purpose
                _dt(f[8]),  # valid_from
                _dt(f[9]),  # valid_until
                frozenset(f[10]),  # gates
            )
        if tag == _APPOINTMENT and len(f) == 13:
            return _appointment(
                f[1],  # id
                f[2],  # plate
                _COLOURS[f[3]],
                _CATEGORIES[f[4]],
                _dt(f[5]),  # window_start
                _dt(f[6]),  # window_end
                f[7],  # destination
                f[8],  # un_number
                f[9],  # hazard_class
                f[10],  # waybill
                frozenset(f[11]),  # gates
                f[12] is True,  # consumed
            )
        if tag == _BLACKLIST and len(f) == 8:
            return _blacklist(
                f[1],  # id
                f[2],  # plate
                _REASONS[f[3]],
                f[4],  # detail
                f[5],  # source
                _dt(f[6]),  # valid_from
                _opt_dt(f[7]),  # valid_until
            )
        raise CodecError(f"unknown credential kind {tag!r} or wrong field count {len(f)}")
    except CodecError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, OSError) as exc:
        # msgpack's format errors are ValueErrors; fromtimestamp raises OverflowError/OSError.
        raise CodecError(f"not an encoded credential: {exc}") from exc


def kind_and_id(data: bytes) -> tuple[str, str]:
    """``(kind value, id)`` of an encoded credential without building the dataclass."""
    try:
        f = msgpack.unpackb(data, raw=False)
        kind, id_ = f[0], f[1]
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise CodecError(f"not an encoded credential: {exc}") from exc
    if not isinstance(kind, str) or not isinstance(id_, str):
        raise CodecError("not an encoded credential")
    return kind, id_
