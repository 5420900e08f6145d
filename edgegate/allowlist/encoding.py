"""The text of an allow-list file: UTF-8, or GBK / GB18030 as Chinese park systems often
export, decided by which reading yields valid plates (see ``DecodedText``). Pure."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from edgegate.allowlist.entries import AllowListInputError, LineError, cell
from edgegate.core.plates import PlateError, parse

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
        return [cell(cells, at) for cells in reader]
    except csv.Error:
        return []
