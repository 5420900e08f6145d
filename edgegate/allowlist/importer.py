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
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edgegate.allowlist.encoding import ENCODINGS, DecodedText, decode_text, read_text
from edgegate.allowlist.entries import (
    COLUMNS,
    DELTA_COLUMNS,
    REQUIRED,
    AllowListInputError,
    Builder,
    LineError,
    cell,
    kind_or_none,
)
from edgegate.core.domain import Credential, CredentialKind

DEFAULT_TIMEZONE = "Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class Delta:
    """A parsed delta file: credentials to insert or replace, ``(kind, id)`` to remove.
    Central's park-wide deltas only: ``consumed`` appointments another gate consumed,
    ``inside`` vehicles that entered at another gate ``(plate, gate, entered_at_ns)``,
    ``left`` plates that left (at another gate)."""

    upserts: list[Credential] = field(default_factory=list)
    removals: list[tuple[CredentialKind, str]] = field(default_factory=list)
    consumed: list[str] = field(default_factory=list)
    inside: list[tuple[str, str, int]] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


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
    builder = Builder(zone, errors)
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
    builder = Builder(zone, errors)
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

    known = DELTA_COLUMNS if delta else COLUMNS
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
        kind = kind_or_none(cell(cells, type_at))
        if kind is None or (op_at is not None and cell(cells, op_at).lower() == "remove"):
            continue
        for name in REQUIRED[kind]:
            if name not in seen and name not in missing_reported:
                missing_reported.add(name)
                errors.append(LineError(1, name, f"missing required column ({kind} rows need it)"))

    builder = Builder(zone, errors, skip=missing_reported)
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
