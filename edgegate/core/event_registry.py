"""How events are registered, stored and read back: the registry of event types (a stable
name and a schema version per class), their msgpack encoding, and the upcasters that bring an
old version's stored map up to the current one (docs/design.md §4). The events themselves are
:mod:`edgegate.core.events`, which registers every type when imported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgpack

from edgegate.core.codec import CodecError, DataclassCodec


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events. ``lane`` is None for gate-wide events."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    lane: str | None = None


E = TypeVar("E", bound=type[Event])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_REGISTRY: dict[str, type[Event]] = {}
_CODECS: dict[type[Event], DataclassCodec] = {}
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class EventDecodeError(ValueError):
    """A stored event that cannot be turned back into its class (names type, version, why)."""


def event_type(name: str, version: int = 1) -> Callable[[E], E]:
    """Register an event class under a stable type name and schema version."""

    def register(cls: E) -> E:
        if name in _REGISTRY:
            raise ValueError(f"event type {name!r} registered twice")
        cls.TYPE = name
        cls.VERSION = version
        _REGISTRY[name] = cls
        _CODECS[cls] = DataclassCodec(cls, exclude=frozenset({"lane"}))
        return cls

    return register


def upcaster(name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function turning the map of ``name`` v``from_version`` into v+1."""

    def register(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(name, from_version)] = fn
        return fn

    return register


def fields_added(name: str, from_version: int, **defaults: Any) -> None:
    """Register the upcaster of a version that only added fields: the map of ``name``
    v``from_version`` gets each of ``defaults`` (immutable values) as v+1."""

    def add(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, **defaults}

    _UPCASTERS[(name, from_version)] = add


def registered_types() -> dict[str, type[Event]]:
    return dict(_REGISTRY)


_packb = msgpack.Packer(use_bin_type=True).pack


def encode(event: Event) -> bytes:
    """The stored payload of an event: a msgpack map of its fields, without ``lane``."""
    return _packb(_CODECS[type(event)].to_map(event))


def to_map(event: Event) -> dict[str, Any]:
    """The event's fields as msgpack/JSON-friendly values (without ``lane``)."""
    return _CODECS[type(event)].to_map(event)


def upcast(type_name: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored map of ``version`` up to the registered class's current version."""
    cls = _REGISTRY.get(type_name)
    if cls is None:
        raise EventDecodeError(f"unknown event type {type_name!r}")
    if version > cls.VERSION:
        raise EventDecodeError(
            f"{type_name} v{version} is newer than this software knows (v{cls.VERSION})"
        )
    while version < cls.VERSION:
        step = _UPCASTERS.get((type_name, version))
        if step is None:
            raise EventDecodeError(f"no upcaster for {type_name} v{version} -> v{version + 1}")
        data = step(data)
        version += 1
    return data


def decode(type_name: str, version: int, payload: bytes, lane: str | None = None) -> Event:
    """Rebuild an event from its stored form, upcasting old versions."""
    try:
        data = msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise EventDecodeError(f"{type_name} v{version}: payload is not msgpack: {exc}") from exc
    if not isinstance(data, dict):
        raise EventDecodeError(f"{type_name} v{version}: payload is not a map")
    data = upcast(type_name, version, data)
    cls = _REGISTRY[type_name]
    try:
        event: Event = _CODECS[cls].from_map(data, lane=lane)
    except (CodecError, TypeError, ValueError) as exc:
        raise EventDecodeError(f"{type_name} v{version}: {exc}") from exc
    return event
