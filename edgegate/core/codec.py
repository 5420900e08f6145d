"""Field codecs derived from type hints: typed dataclass fields <-> msgpack-friendly values.

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``bytes``, ``None``, ``StrEnum``
subclasses (their value), ``datetime`` (aware, as UTC epoch nanoseconds), ``timedelta``
(nanoseconds), ``tuple[X, ...]`` and ``frozenset[X]`` (lists), ``X | None`` and nested frozen
dataclasses (maps). Anything else is refused when the class is registered, not at run time.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

Encode = Callable[[Any], Any]
Decode = Callable[[Any], Any]

_NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_to_ns(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: instants must be timezone-aware")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1_000


def ns_to_datetime(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value // 1_000)


def _identity(value: Any) -> Any:
    return value


class CodecError(TypeError):
    """A field type the codec cannot encode, or a value that does not fit its type."""


def field_codecs(tp: Any, where: str) -> tuple[Encode | None, Decode | None]:
    """(encode, decode) for a type; None where the value passes through unchanged."""
    if tp in (str, int, bool, bytes, type(None)):
        return None, None
    if tp is float:
        return None, float
    if tp is datetime:
        return datetime_to_ns, ns_to_datetime
    if tp is timedelta:
        return (lambda v: (v.days * 86_400 + v.seconds) * _NS + v.microseconds * 1_000), (
            lambda v: timedelta(microseconds=v // 1_000)
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        enum_type = tp
        # ``_value_`` is a plain attribute; ``.value`` goes through a Python-level descriptor
        # that costs more than the rest of encoding an event.
        return operator.attrgetter("_value_"), enum_type
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        codec = DataclassCodec(tp)
        return codec.to_map, codec.from_map
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) != 1:
            raise CodecError(f"{where}: only 'X | None' unions are supported, got {tp!r}")
        enc, dec = field_codecs(non_none[0], where)
        if enc is None and dec is None:
            return None, None
        e = enc or _identity
        d = dec or _identity
        return (lambda v: None if v is None else e(v)), (lambda v: None if v is None else d(v))
    if origin in (tuple, frozenset) and args:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise CodecError(f"{where}: only variable-length tuple[X, ...] is supported")
        enc, dec = field_codecs(args[0], where)
        e = enc or _identity
        d = dec or _identity
        if origin is tuple:
            return (lambda v: [e(x) for x in v]), (lambda v: tuple(d(x) for x in v))
        return (lambda v: sorted(e(x) for x in v)), (lambda v: frozenset(d(x) for x in v))
    raise CodecError(f"{where}: unsupported field type {tp!r}")


class DataclassCodec:
    """Encodes a dataclass to a ``{field: value}`` map and back, by its type hints."""

    __slots__ = ("_cls", "_decoders", "_encoders", "_names")

    def __init__(self, cls: type[Any], exclude: frozenset[str] = frozenset()) -> None:
        hints = typing.get_type_hints(cls)
        self._cls = cls
        names: list[str] = []
        encoders: list[tuple[str, Encode | None]] = []
        decoders: dict[str, Decode | None] = {}
        for f in dataclasses.fields(cls):
            if f.name in exclude:
                continue
            enc, dec = field_codecs(hints[f.name], f"{cls.__name__}.{f.name}")
            names.append(f.name)
            encoders.append((f.name, enc))
            decoders[f.name] = dec
        self._names = tuple(names)
        self._encoders = tuple(encoders)
        self._decoders = decoders

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def to_map(self, obj: Any) -> dict[str, Any]:
        """The object's fields as a ``{field: value}`` map of msgpack-friendly values, in
        declaration order (the order is part of the stored bytes)."""
        result: dict[str, Any] = {}
        for name, enc in self._encoders:
            value = getattr(obj, name)
            result[name] = value if enc is None else enc(value)
        return result

    def from_map(self, data: dict[str, Any], **extra: Any) -> Any:
        kwargs: dict[str, Any] = dict(extra)
        decoders = self._decoders
        for key, value in data.items():
            if key not in decoders:
                raise CodecError(f"{self._cls.__name__}: unexpected field {key!r}")
            dec = decoders[key]
            kwargs[key] = value if dec is None else dec(value)
        return self._cls(**kwargs)
