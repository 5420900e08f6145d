"""Allow-list files (CSV, JSON) into credentials, all or nothing.

A file with any bad row imports nothing: the error (``AllowListInputError``) lists every
problem, each with where it is (CSV: the physical line, the header being line 1; JSON: the
entry's 1-based position, ``entry 3``), the column and what is wrong.

CSV
---
UTF-8 (with or without BOM); GBK / GB18030, as Chinese park systems often export, is
recognised too. A file valid in both (a GBK file whose only Chinese characters are 鲁 or 豫
is also valid UTF-8) is read the way that yields valid plates; ``encoding`` forces one.
Comma-separated, first line the header; column names are case-insensitive, blank lines are
skipped, cells are trimmed. A ``type`` column says what each row is; the other columns depend
on it. An unknown column is an error; so is a non-empty cell in a column that does not apply
to the row's type (leave it empty). Empty optional cells are fine.

===============  ============  ======  ==========  ===========  ==============================
column           registration  permit  appointment blacklist    value
===============  ============  ======  ==========  ===========  ==============================
type             required      req.    req.        req.         registration, permit,
                                                                appointment or blacklist
id               required      req.    req.        req.         unique per type in the file
plate            required      req.    req.        req.         e.g. 苏E12345, 苏AD12345
colour           optional      opt.    opt.        -            blue, yellow, green,
                                                                yellow-green, white, black,
                                                                unknown (default)
category         required      req.    req.        -            hazmat, hazwaste, engineering,
                                                                ordinary, emergency;
                                                                appointments: hazmat or
                                                                hazwaste only
holder           required      -       -           -            company, department, commuter
organisation     required      -       -           -            company or department
visitor          -             req.    -           -            driver or visiting company
host             -             req.    -           -            who in the park invited it
purpose          -             opt.    -           -            free text
valid_from       required      req.    -           req.         start (see times)
valid_until      optional      req.    -           opt.         end (see times); none: no end
gates            optional      opt.    opt.        -            gate ids separated by ``;`` or
                                                                ``|``; empty: every gate
window_start     -             -       req.        -            start of the appointment
window_end       -             -       req.        -            end of the appointment
destination      -             -       req.        -            destination company
un_number        -             -       req.        -            4 digits (``UN`` prefix
                                                                allowed), e.g. 1203
hazard_class     -             -       req.        -            UN class 1-9 with division:
                                                                3, 8, 2.1, 4.3, 6.1, 1.1D...
waybill          -             -       req.        -            e-waybill number
reason           -             -       -           req.         speeding, illegal-parking,
                                                                overstay, forged-permit,
                                                                safety-violation, other
detail           -             -       -           opt.         free text
source           -             -       -           req.         who listed it (park-security,
                                                                traffic-police, central...)
===============  ============  ======  ==========  ===========  ==============================

Enum values are case-insensitive and ``_`` may stand for ``-``.

Times are ISO 8601 (``2026-12-31T08:00:00+08:00``, ``2026-12-31 08:00``, ``...Z``). Without
an offset a time is local time in the gate's time zone (Asia/Shanghai unless configured). A
date alone means the local midnight starting that day for starts (``valid_from``,
``window_start``) and the local midnight ending it for ends (``valid_until``, ``window_end``):
``valid_until=2026-12-31`` covers all of 31 December. An end must be after its start.
Fractions of a second are rounded outwards (the window never shrinks). Stored in UTC.

Delta files may have an ``op`` column: ``upsert`` (default when empty) or ``remove``; a
``remove`` row gives only ``type`` and ``id``.

JSON
----
Either a list of objects with the same keys as the CSV columns, or ``{"entries": [...]}``.
``gates`` may also be a list of strings, ``un_number`` and ``hazard_class`` numbers; ``null``
means empty. Deltas: ``{"upsert": [...], "remove": [{"type": ..., "id": ...}, ...]}`` (entries
numbered ``upsert entry N`` / ``remove entry N``).

Pure: text or bytes in, credentials or ``AllowListInputError`` out; no I/O.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
from edgegate.core.plates import PlateError, parse

DEFAULT_TIMEZONE = "Asia/Shanghai"

_E = TypeVar("_E", bound=StrEnum)

_REQUIRED: Mapping[CredentialKind, tuple[str, ...]] = {
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
_DELTA_COLUMNS = (*COLUMNS, "op")

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


@dataclass(frozen=True, slots=True)
class Delta:
    """A parsed delta file: credentials to insert or replace, ``(kind, id)`` to remove."""

    upserts: list[Credential] = field(default_factory=list)
    removals: list[tuple[CredentialKind, str]] = field(default_factory=list)


def parse_csv(
    data: bytes | str, tz: str = DEFAULT_TIMEZONE, *, encoding: str | None = None
) -> list[Credential]:
    """Credentials of a CSV file, or ``AllowListInputError`` listing every bad line."""
    return _parse_csv(data, tz, delta=False, encoding=encoding).upserts


def parse_csv_delta(
    data: bytes | str, tz: str = DEFAULT_TIMEZONE, *, encoding: str | None = None
) -> Delta:
    """A CSV delta (optional ``op`` column), or ``AllowListInputError``."""
    return _parse_csv(data, tz, delta=True, encoding=encoding)


def parse_json(
    data: bytes | str, tz: str = DEFAULT_TIMEZONE, *, encoding: str | None = None
) -> list[Credential]:
    """Credentials of a JSON file (a list, or ``{"entries": [...]}``), or
    ``AllowListInputError`` listing every bad entry."""
    zone = _zone(tz)
    errors: list[LineError] = []
    doc = _load_json(data, errors, encoding)
    entries: list[Any] | None = None
    if isinstance(doc, list):
        entries = doc
    elif isinstance(doc, dict) and set(doc) == {"entries"} and isinstance(doc["entries"], list):
        entries = doc["entries"]
    elif not errors:
        errors.append(
            LineError(0, None, 'expected a list of entries or an object {"entries": [...]}')
        )
    if entries is not None and not entries:
        errors.append(LineError(0, None, "no entries"))
    builder = _Builder(zone, errors)
    for number, entry in enumerate(entries or (), start=1):
        builder.json_entry(entry, number, "entry", remove=False)
    if errors:
        raise AllowListInputError(errors)
    return builder.upserts


def parse_json_delta(
    data: bytes | str, tz: str = DEFAULT_TIMEZONE, *, encoding: str | None = None
) -> Delta:
    """A JSON delta ``{"upsert": [...], "remove": [{"type": ..., "id": ...}]}``, or
    ``AllowListInputError``."""
    zone = _zone(tz)
    errors: list[LineError] = []
    doc = _load_json(data, errors, encoding)
    builder = _Builder(zone, errors)
    if isinstance(doc, dict) and doc and set(doc) <= {"upsert", "remove"}:
        for key in ("upsert", "remove"):
            part = doc.get(key, [])
            if not isinstance(part, list):
                errors.append(LineError(0, key, "must be a list"))
                continue
            for number, entry in enumerate(part, start=1):
                builder.json_entry(entry, number, f"{key} entry", remove=key == "remove")
        if not errors and not builder.upserts and not builder.removals:
            errors.append(LineError(0, None, "no entries"))
    elif not errors:
        errors.append(LineError(0, None, 'expected an object {"upsert": [...], "remove": [...]}'))
    if errors:
        raise AllowListInputError(errors)
    return Delta(builder.upserts, builder.removals)


ENCODINGS = ("utf-8", "gbk")
"""What ``encoding`` may force; ``gbk`` is read as GB18030, its superset."""

_CODECS = {"utf-8": "utf-8-sig", "gbk": "gb18030"}
_UTF8_BOM = b"\xef\xbb\xbf"
# Characters an allow-list would hardly hold: neither ASCII, nor CJK ideographs, CJK or
# full-width punctuation, nor dashes, quotes and bullets.
_UNLIKELY = re.compile(
    "[^\x00-\x7f\u2010-\u2027\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]"
)


@dataclass(frozen=True, slots=True)
class DecodedText:
    """An import file's text and how it was read.

    When the file is valid text in both encodings and the readings differ (a GBK file whose
    only non-ASCII characters are 鲁 or 豫 is also valid UTF-8; much UTF-8 Chinese is also
    valid GB18030), ``encoding`` is the reading with more valid plates, then fewer characters
    an allow-list would hardly hold, then UTF-8; ``why`` says which, and ``notable`` is set
    when an operator should hear of it: GBK was chosen over valid UTF-8, or it was a toss-up.
    """

    text: str
    encoding: str
    why: str = ""
    notable: bool = False


def read_text(data: bytes, encoding: str | None = None) -> DecodedText:
    """Text of an import file, read as ``encoding`` (``utf-8`` or ``gbk``) or, if None,
    decided: a UTF-8 byte-order mark means UTF-8; text valid in only one encoding is read
    so; text valid in both is read as the one that yields valid plates (see ``DecodedText``).
    ``AllowListInputError`` names the line of the first byte that is not valid text."""
    if encoding is not None and encoding not in _CODECS:
        raise ValueError(f"unknown encoding {encoding!r} (expected utf-8 or gbk)")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise AllowListInputError(
            [LineError(0, None, "UTF-16 text: save the file as UTF-8 or GBK")]
        )
    if data.startswith(_UTF8_BOM):
        if encoding == "gbk":
            raise AllowListInputError(
                [LineError(0, None, "starts with a UTF-8 byte-order mark: it is not GBK")]
            )
        encoding = "utf-8"  # the mark says so; the rest must agree
    names = ENCODINGS if encoding is None else (encoding,)
    readings: dict[str, str] = {}
    failures: dict[str, UnicodeDecodeError] = {}
    for name in names:
        try:
            readings[name] = data.decode(_CODECS[name]).removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            failures[name] = exc
    if not readings:
        first = failures[names[0]]
        line = data.count(b"\n", 0, first.start) + 1
        what = "UTF-8 or GBK" if encoding is None else "UTF-8" if encoding == "utf-8" else "GBK"
        raise AllowListInputError(
            [LineError(line, None, f"not {what} text (byte 0x{data[first.start]:02x})")]
        )
    if len(readings) == 1:
        ((name, text),) = readings.items()
        return DecodedText(text, name)
    utf8, gbk = readings["utf-8"], readings["gbk"]
    if utf8 == gbk:
        return DecodedText(utf8, "utf-8")
    return _choose(utf8, gbk)


def decode_text(data: bytes, encoding: str | None = None) -> str:
    """The text of ``read_text``."""
    return read_text(data, encoding).text


def _choose(utf8: str, gbk: str) -> DecodedText:
    """The more plausible of two different readings of a file (see ``DecodedText``)."""
    valid = {"utf-8": _valid_plates(utf8), "gbk": _valid_plates(gbk)}
    if valid["utf-8"][0] != valid["gbk"][0]:
        chosen, other = ("utf-8", "gbk") if valid["utf-8"] > valid["gbk"] else ("gbk", "utf-8")
        why = (
            f"{valid[chosen][0]} of its {valid[chosen][1]} plates are valid so, "
            f"{valid[other][0]} if read as {other.upper()}"
        )
        return DecodedText(utf8 if chosen == "utf-8" else gbk, chosen, why, chosen == "gbk")
    utf8_odd, gbk_odd = len(_UNLIKELY.findall(utf8)), len(_UNLIKELY.findall(gbk))
    if utf8_odd != gbk_odd:
        chosen = "utf-8" if utf8_odd < gbk_odd else "gbk"
        why = "as many valid plates either way; fewer unlikely characters so"
        return DecodedText(utf8 if chosen == "utf-8" else gbk, chosen, why, chosen == "gbk")
    return DecodedText(utf8, "utf-8", "neither reading is more plausible: UTF-8 by default", True)


def _valid_plates(text: str) -> tuple[int, int]:
    """How many of the file's plates are valid, of how many."""
    cells = _plate_cells(text)
    valid = 0
    for raw in cells:
        try:
            parse(raw)
        except PlateError:
            continue
        valid += 1
    return valid, len(cells)


def _plate_cells(text: str) -> list[str]:
    """The plate cells of an import file's text, CSV or JSON (nothing if it does not parse)."""
    if text.lstrip().startswith(("[", "{")):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            return []
        plates: list[str] = []
        stack: list[Any] = [doc]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                if isinstance(item.get("plate"), str):
                    plates.append(item["plate"])
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        return plates
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip().lower() for name in next(reader, [])]
        if "plate" not in header:
            return []
        at = header.index("plate")
        return [_cell(cells, at) for cells in reader]
    except csv.Error:
        return []


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


def _text(data: bytes | str, encoding: str | None) -> str:
    return decode_text(data, encoding) if isinstance(data, bytes) else data.removeprefix("\ufeff")


def _load_json(data: bytes | str, errors: list[LineError], encoding: str | None) -> Any:
    text = _text(data, encoding)
    if not text.strip():
        errors.append(LineError(0, None, "empty file"))
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        errors.append(
            LineError(exc.lineno, None, f"malformed JSON: {exc.msg} (column {exc.colno})")
        )
        return None
    except RecursionError:
        errors.append(LineError(0, None, "malformed JSON: nested too deeply"))
        return None


def _parse_csv(data: bytes | str, tz: str, *, delta: bool, encoding: str | None) -> Delta:
    zone = _zone(tz)
    text = _text(data, encoding)
    if not text.strip():
        raise AllowListInputError([LineError(0, None, "empty file")])
    errors: list[LineError] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip().lower() for name in next(reader)]
        rows: list[tuple[int, list[str]]] = []
        end = reader.line_num
        for cells in reader:
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                rows.append((start, cells))
    except csv.Error as exc:
        raise AllowListInputError([LineError(reader.line_num, None, f"bad CSV: {exc}")]) from None

    known = _DELTA_COLUMNS if delta else COLUMNS
    seen: set[str] = set()
    for name in header:
        if name not in known:
            why = "empty column name" if not name else "unknown column"
            errors.append(LineError(1, name or None, why))
        elif name in seen:
            errors.append(LineError(1, name, "column given twice"))
        seen.add(name)
    if "type" not in header:
        errors.append(LineError(1, "type", "missing required column"))
    if "id" not in header:
        errors.append(LineError(1, "id", "missing required column"))
    if errors:
        raise AllowListInputError(errors)
    if not rows:
        raise AllowListInputError([LineError(0, None, "no entries")])

    type_at = header.index("type")
    op_at = header.index("op") if "op" in header else None
    # A required column missing from the header is one error (line 1), not one per row.
    missing_reported: set[str] = set()
    for _, cells in rows:
        kind = _kind_or_none(_cell(cells, type_at))
        if kind is None or (op_at is not None and _cell(cells, op_at).lower() == "remove"):
            continue
        for name in _REQUIRED[kind]:
            if name not in seen and name not in missing_reported:
                missing_reported.add(name)
                errors.append(LineError(1, name, f"missing required column ({kind} rows need it)"))

    builder = _Builder(zone, errors, skip=missing_reported)
    for line, cells in rows:
        if len(cells) > len(header):
            errors.append(
                LineError(line, None, f"{len(cells)} cells but the header has {len(header)}")
            )
            continue
        values = {name: cell.strip() for name, cell in zip(header, cells, strict=False)}
        op = values.pop("op", "").lower() if delta else ""
        if op not in ("", "upsert", "remove"):
            errors.append(LineError(line, "op", f"unknown op {op!r} (expected upsert or remove)"))
            continue
        builder.entry(values, line, "line", remove=op == "remove")
    if errors:
        raise AllowListInputError(sorted(errors, key=lambda e: e.line))
    return Delta(builder.upserts, builder.removals)


def _cell(cells: list[str], at: int) -> str:
    return cells[at].strip() if at < len(cells) else ""


def _kind_or_none(value: str) -> CredentialKind | None:
    try:
        return CredentialKind(value.strip().lower())
    except ValueError:
        return None


class _Builder:
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
        allowed = {"type", *_REQUIRED[kind], *_OPTIONAL[kind]}
        for name in row.values:
            if name not in allowed and row.given(name):
                row.error(name, f"does not apply to {kind} entries (leave it empty)")
        credential = _BUILD[kind](row)
        if credential is not None and first:
            self.upserts.append(credential)


def _column_order(error: LineError) -> int:
    return _DELTA_COLUMNS.index(error.field) if error.field in _DELTA_COLUMNS else 99


class _Row:
    """Typed access to one entry's values; every problem becomes a ``LineError``."""

    def __init__(
        self,
        values: Mapping[str, Any],
        line: int,
        unit: str,
        zone: ZoneInfo,
        skip: frozenset[str],
    ) -> None:
        self.values = values
        self.line = line
        self.unit = unit
        self.zone = zone
        self.skip = skip
        self.problems: list[LineError] = []

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
        kind = _kind_or_none(raw)
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


def _registration(row: _Row) -> Credential | None:
    start, end = row.window("valid_from", "valid_until", end_required=False)
    category = row.choice("category", VehicleCategory)
    holder = row.choice("holder", HolderType)
    values = (
        row.text("id"),
        row.plate(),
        row.choice("colour", PlateColour, default=PlateColour.UNKNOWN),
        row.text("organisation"),
        row.gates(),
    )
    if row.failed:
        return None
    id_, plate, colour, organisation, gates = values
    assert start is not None and category is not None and holder is not None and colour
    return Registration(
        id=id_,
        plate=plate,
        colour=colour,
        category=category,
        holder=holder,
        organisation=organisation,
        valid_from=start,
        valid_until=end,
        gates=gates,
    )


def _permit(row: _Row) -> Credential | None:
    start, end = row.window("valid_from", "valid_until", end_required=True)
    category = row.choice("category", VehicleCategory)
    colour = row.choice("colour", PlateColour, default=PlateColour.UNKNOWN)
    id_, plate = row.text("id"), row.plate()
    visitor, host, purpose = row.text("visitor"), row.text("host"), row.optional_text("purpose")
    gates = row.gates()
    if row.failed:
        return None
    assert start is not None and end is not None and category is not None and colour
    return TemporaryPermit(
        id=id_,
        plate=plate,
        colour=colour,
        category=category,
        visitor=visitor,
        host=host,
        purpose=purpose,
        valid_from=start,
        valid_until=end,
        gates=gates,
    )


def _appointment(row: _Row) -> Credential | None:
    start, end = row.window("window_start", "window_end", end_required=True)
    category = row.choice("category", VehicleCategory)
    if category is not None and not category.dangerous:
        row.error(
            "category",
            f"appointments are for hazmat or hazwaste vehicles, not {category.value}",
        )
    colour = row.choice("colour", PlateColour, default=PlateColour.UNKNOWN)
    id_, plate = row.text("id"), row.plate()
    destination, waybill = row.text("destination"), row.text("waybill")
    un_number, hazard_class = row.un_number(), row.hazard_class()
    gates = row.gates()
    if row.failed:
        return None
    assert start is not None and end is not None and category is not None and colour
    return Appointment(
        id=id_,
        plate=plate,
        colour=colour,
        category=category,
        window_start=start,
        window_end=end,
        destination=destination,
        un_number=un_number,
        hazard_class=hazard_class,
        waybill=waybill,
        gates=gates,
    )


def _blacklist(row: _Row) -> Credential | None:
    start, end = row.window("valid_from", "valid_until", end_required=False)
    reason = row.choice("reason", BlacklistReason)
    id_, plate = row.text("id"), row.plate()
    detail, source = row.optional_text("detail"), row.text("source")
    if row.failed:
        return None
    assert start is not None and reason is not None
    return BlacklistEntry(
        id=id_,
        plate=plate,
        reason=reason,
        detail=detail,
        source=source,
        valid_from=start,
        valid_until=end,
    )


_BUILD: Mapping[CredentialKind, Callable[[_Row], Credential | None]] = {
    CredentialKind.REGISTRATION: _registration,
    CredentialKind.PERMIT: _permit,
    CredentialKind.APPOINTMENT: _appointment,
    CredentialKind.BLACKLIST: _blacklist,
}

__all__ = [
    "COLUMNS",
    "DEFAULT_TIMEZONE",
    "ENCODINGS",
    "AllowListInputError",
    "DecodedText",
    "Delta",
    "LineError",
    "decode_text",
    "parse_csv",
    "parse_csv_delta",
    "parse_json",
    "parse_json_delta",
    "read_text",
]
