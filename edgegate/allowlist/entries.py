"""One allow-list entry, a CSV row or a JSON object, into a credential: the columns each
credential type takes and the check of every value. Every problem becomes a ``LineError``;
the formats around the entries are read in :mod:`edgegate.allowlist.importer`. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

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
    VehicleFields,
)
from edgegate.core.plates import PlateError, parse

_E = TypeVar("_E", bound=StrEnum)

REQUIRED: Mapping[CredentialKind, tuple[str, ...]] = {
    CredentialKind.REGISTRATION: (
        "id", "plate", "category", "holder", "organisation", "valid_from",
    ),
    CredentialKind.PERMIT: (
        "id", "plate", "category", "visitor", "host", "valid_from", "valid_until",
    ),
    CredentialKind.APPOINTMENT: (
        "id", "plate", "category", "window_start", "window_end", "destination", "un_number",
        "hazard_class", "waybill",
    ),
    CredentialKind.BLACKLIST: ("id", "plate", "reason", "source", "valid_from"),
}  # fmt: skip
_OPTIONAL: Mapping[CredentialKind, tuple[str, ...]] = {
    CredentialKind.REGISTRATION: ("colour", "valid_until", "gates"),
    CredentialKind.PERMIT: ("colour", "purpose", "gates"),
    CredentialKind.APPOINTMENT: ("colour", "gates"),
    CredentialKind.BLACKLIST: ("detail", "valid_until"),
}
#: Every column a file may have, in the order errors are reported.
COLUMNS: tuple[str, ...] = (
    "type", "id", "plate", "colour", "category", "holder", "organisation", "visitor", "host",
    "purpose", "valid_from", "valid_until", "gates", "window_start", "window_end",
    "destination", "un_number", "hazard_class", "waybill", "reason", "detail", "source",
)  # fmt: skip
DELTA_COLUMNS = (*COLUMNS, "op")

_UN_NUMBER = re.compile(r"(?:UN)? ?([0-9]{4})", re.IGNORECASE)
# UN classes: 1.1-1.6 (with an optional compatibility group), 2.1-2.3, 3, 4.1-4.3, 5.1-5.2,
# 6.1-6.2, 7, 8, 9; a bare class number is accepted for every class.
_HAZARD_CLASS = re.compile(
    r"[1-9]|1\.[1-6][A-HJKLNS]?|2\.[1-3]|4\.[1-3]|5\.[12]|6\.[12]", re.IGNORECASE
)
_GATE_SEPARATORS = re.compile(r"[;|]")


@dataclass(frozen=True, slots=True)
class LineError:
    """One problem in an import file.

    ``line``: the CSV physical line (header = 1) or the JSON entry number (1-based), as
    ``unit`` says; 0 for the file as a whole. ``field``: the column or key, if one is at fault.
    """

    line: int
    field: str | None
    message: str
    unit: str = "line"

    def __str__(self) -> str:
        where = "file" if self.line == 0 else f"{self.unit} {self.line}"
        column = f"{self.field}: " if self.field else ""
        return f"{where}: {column}{self.message}"


class AllowListInputError(ValueError):
    """An import file that was refused as a whole; ``errors`` lists every problem found."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.errors)
        head = f"{n} error{'s' if n != 1 else ''} in allow-list file, nothing imported:"
        return "\n".join([head, *(f"  {e}" for e in self.errors)])


def cell(cells: list[str], at: int) -> str:
    return cells[at].strip() if at < len(cells) else ""


def kind_or_none(value: str) -> CredentialKind | None:
    try:
        return CredentialKind(value.strip().lower())
    except ValueError:
        return None


class Builder:
    """Turns entries (column -> value) into credentials, collecting errors."""

    def __init__(self, zone: ZoneInfo, errors: list[LineError], skip: Iterable[str] = ()) -> None:
        self.zone = zone
        self.errors = errors
        self.skip = frozenset(skip)  # required columns already reported missing
        self.upserts: list[Credential] = []
        self.removals: list[tuple[CredentialKind, str]] = []
        self.seen: dict[tuple[CredentialKind, str], str] = {}

    def json_entry(self, entry: Any, number: int, unit: str, *, remove: bool) -> None:
        if not isinstance(entry, dict):
            self.errors.append(LineError(number, None, "must be an object", unit))
            return
        values: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in entry.items():
            name = key.strip().lower()
            if name in COLUMNS:
                values[name] = value
            else:
                unknown.append(key)
        self.entry(values, number, unit, remove=remove, unknown=unknown)

    def entry(
        self,
        values: dict[str, Any],
        line: int,
        unit: str,
        *,
        remove: bool,
        unknown: Iterable[str] = (),
    ) -> None:
        row = _Row(values, line, unit, self.zone, self.skip)
        for key in unknown:
            row.error(key, "unknown key")
        kind = row.kind()
        if kind is not None:
            self._entry(row, kind, remove=remove)
        self.errors.extend(sorted(row.problems, key=_column_order))

    def _entry(self, row: _Row, kind: CredentialKind, *, remove: bool) -> None:
        # Duplicates are found whatever else is wrong with either entry.
        raw_id = row.values.get("id")
        first = True
        if isinstance(raw_id, str) and raw_id.strip():
            id_ = raw_id.strip()
            where = f"{row.unit} {row.line}"
            first_at = self.seen.setdefault((kind, id_), where)
            if first_at != where:
                row.error("id", f"duplicate {kind} id {id_!r} (first at {first_at})")
                first = False
        if remove:
            for name in row.values:
                if name not in ("type", "id") and row.given(name):
                    row.error(name, "remove entries take only type and id")
            id_ = row.text("id")
            if first and not row.failed:
                self.removals.append((kind, id_))
            return
        allowed = {"type", *REQUIRED[kind], *_OPTIONAL[kind]}
        for name in row.values:
            if name not in allowed and row.given(name):
                row.error(name, f"does not apply to {kind} entries (leave it empty)")
        credential_class, read = _BUILD[kind]
        fields = read(row)
        if not row.failed and first:
            self.upserts.append(credential_class(**fields))


def _column_order(error: LineError) -> int:
    return DELTA_COLUMNS.index(error.field) if error.field in DELTA_COLUMNS else 99


@dataclass(slots=True)
class _Row:
    """Typed access to one entry's values; every problem becomes a ``LineError``."""

    values: Mapping[str, Any]
    line: int
    unit: str
    zone: ZoneInfo
    skip: frozenset[str]
    problems: list[LineError] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.problems)

    def error(self, name: str | None, message: str) -> None:
        self.problems.append(LineError(self.line, name, message, self.unit))

    def given(self, name: str) -> bool:
        value = self.values.get(name)
        return value is not None and value != "" and value != []

    def kind(self) -> CredentialKind | None:
        raw = self.text("type")
        if not raw:
            return None
        kind = kind_or_none(raw)
        if kind is None:
            expected = ", ".join(k.value for k in CredentialKind)
            self.error("type", f"unknown type {raw!r} (expected {expected})")
        return kind

    def text(self, name: str, *, required: bool = True) -> str:
        value = self.values.get(name)
        if value is None or value == "":
            if required and name not in self.skip:
                self.error(name, "required, but empty" if name in self.values else "missing")
            return ""
        if not isinstance(value, str):
            self.error(name, f"must be a string, not {_json_type(value)}")
            return ""
        value = value.strip()
        if required and not value:
            self.error(name, "required, but empty")
        return value

    def optional_text(self, name: str) -> str:
        return self.text(name, required=False)

    def choice(self, name: str, enum: type[_E], *, default: _E | None = None) -> _E | None:
        raw = self.text(name, required=default is None)
        if not raw:
            return default
        try:
            return enum(raw.lower().replace("_", "-"))
        except ValueError:
            expected = ", ".join(m.value for m in enum)
            self.error(name, f"unknown {name} {raw!r} (expected {expected})")
            return None

    def plate(self) -> str:
        raw = self.text("plate")
        if not raw:
            return ""
        try:
            return parse(raw)
        except PlateError as exc:
            self.error("plate", str(exc))
            return ""

    def instant(self, name: str, *, end: bool, required: bool = True) -> datetime | None:
        raw = self.text(name, required=required)
        if not raw:
            return None
        try:
            return _instant(raw, self.zone, end=end)
        except ValueError as exc:
            self.error(name, str(exc))
            return None

    def window(
        self, start_name: str, end_name: str, *, end_required: bool
    ) -> tuple[datetime | None, datetime | None]:
        start = self.instant(start_name, end=False)
        end = self.instant(end_name, end=True, required=end_required)
        if start is not None and end is not None and end <= start:
            self.error(
                end_name,
                f"{self.values[end_name]!s} is not after {start_name} {self.values[start_name]!s}",
            )
        return start, end

    def gates(self) -> frozenset[str]:
        value = self.values.get("gates")
        if value is None or value == "":
            return frozenset()
        if isinstance(value, str):
            parts = _GATE_SEPARATORS.split(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            parts = value
        else:
            self.error("gates", "must be gate ids separated by ';' or '|', or a list of strings")
            return frozenset()
        return frozenset(p.strip() for p in parts if p.strip())

    def un_number(self) -> str:
        value = self.values.get("un_number")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9999:
            return f"{value:04d}"
        raw = self.text("un_number")
        if not raw:
            return ""
        match = _UN_NUMBER.fullmatch(raw)
        if match is None:
            self.error("un_number", f"{raw!r} is not a UN number (4 digits, e.g. 1203)")
            return ""
        return match.group(1)

    def hazard_class(self) -> str:
        value = self.values.get("hazard_class")
        if isinstance(value, int | float) and not isinstance(value, bool):
            raw = str(value)
        else:
            raw = self.text("hazard_class")
            if not raw:
                return ""
        if _HAZARD_CLASS.fullmatch(raw) is None:
            self.error(
                "hazard_class",
                f"{raw!r} is not a UN hazard class (1-9 with division, e.g. 3, 2.1, 6.1, 4.3)",
            )
            return ""
        return raw.upper()


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _instant(raw: str, zone: ZoneInfo, *, end: bool) -> datetime:
    hint = "expected ISO 8601, e.g. 2026-12-31 or 2026-12-31T08:00:00+08:00"
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        day = None
    try:
        if day is not None:
            # A date alone: the local midnight starting it, or for an end the one ending it.
            local = datetime.combine(day, time(), tzinfo=zone)
            if end:
                local = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
        else:
            try:
                local = datetime.fromisoformat(raw)
            except ValueError:
                raise ValueError(f"{raw!r} is not a date or time ({hint})") from None
            if local.tzinfo is None:
                local = local.replace(tzinfo=zone)
        instant = local.astimezone(UTC)
        if instant.microsecond:
            # Rounded outwards: a window never loses the fraction of a second it was given.
            instant = instant.replace(microsecond=0)
            if end:
                instant += timedelta(seconds=1)
    except OverflowError:
        raise ValueError(f"{raw!r} is out of range") from None
    return instant


def _vehicle(row: _Row) -> VehicleFields:
    """The row's ``VehicleFields``; to be used only if the row has not ``failed``."""
    colour = row.choice("colour", PlateColour, default=PlateColour.UNKNOWN)
    return VehicleFields(
        id=row.text("id"),
        plate=row.plate(),
        colour=PlateColour.UNKNOWN if colour is None else colour,
        gates=row.gates(),
    )


def _registration(row: _Row) -> dict[str, Any]:
    start, end = row.window("valid_from", "valid_until", end_required=False)
    return {
        **_vehicle(row),
        "category": row.choice("category", VehicleCategory),
        "holder": row.choice("holder", HolderType),
        "organisation": row.text("organisation"),
        "valid_from": start,
        "valid_until": end,
    }


def _permit(row: _Row) -> dict[str, Any]:
    start, end = row.window("valid_from", "valid_until", end_required=True)
    return {
        **_vehicle(row),
        "category": row.choice("category", VehicleCategory),
        "visitor": row.text("visitor"),
        "host": row.text("host"),
        "purpose": row.optional_text("purpose"),
        "valid_from": start,
        "valid_until": end,
    }


def _appointment(row: _Row) -> dict[str, Any]:
    start, end = row.window("window_start", "window_end", end_required=True)
    category = row.choice("category", VehicleCategory)
    if category is not None and not category.dangerous:
        row.error(
            "category",
            f"appointments are for hazmat or hazwaste vehicles, not {category.value}",
        )
    return {
        **_vehicle(row),
        "category": category,
        "window_start": start,
        "window_end": end,
        "destination": row.text("destination"),
        "un_number": row.un_number(),
        "hazard_class": row.hazard_class(),
        "waybill": row.text("waybill"),
    }


def _blacklist(row: _Row) -> dict[str, Any]:
    start, end = row.window("valid_from", "valid_until", end_required=False)
    return {
        "id": row.text("id"),
        "plate": row.plate(),
        "reason": row.choice("reason", BlacklistReason),
        "detail": row.optional_text("detail"),
        "source": row.text("source"),
        "valid_from": start,
        "valid_until": end,
    }


# Each kind's credential class and the reader of its fields. The readers record every problem
# on the row; a value is None only where the row has ``failed``, so the class is built only
# from a row without problems.
_BUILD: Mapping[
    CredentialKind, tuple[Callable[..., Credential], Callable[[_Row], dict[str, Any]]]
] = {
    CredentialKind.REGISTRATION: (Registration, _registration),
    CredentialKind.PERMIT: (TemporaryPermit, _permit),
    CredentialKind.APPOINTMENT: (Appointment, _appointment),
    CredentialKind.BLACKLIST: (BlacklistEntry, _blacklist),
}
