"""Checks of what a gate sent, before the store trusts it: every refusal names its reason."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, cast

import msgpack

from edgegate.sync.protocol import DecodedEvents

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_GATE_MAX = 256  # bytes of UTF-8


def _text_problem(what: str, value: object, *, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if type(value) is not str:
        return f"{what} is {type(value).__name__}, not str"
    if "\x00" in value:
        return f"{what} contains a NUL character"
    try:
        value.encode()
    except UnicodeEncodeError:
        return f"{what} is not valid UTF-8 text"
    return None


def gate_problem(gate: object) -> str | None:
    problem = _text_problem("gate", gate)
    if problem is None and not 0 < len(cast(str, gate).encode()) <= _GATE_MAX:
        # Bounded because it is part of the primary key (PostgreSQL caps index entries).
        problem = f"gate id is empty or longer than {_GATE_MAX} bytes"
    return problem


def _row_problem(row: object) -> str | None:
    """Why ``row`` cannot be a stored event (slow path: only for rows the fast check refused)."""
    if type(row) not in (list, tuple):
        return f"a row is {type(row).__name__}, not a list"
    fields = cast(Sequence[object], row)
    if len(fields) != 10:
        return f"a row has {len(fields)} fields, not 10"
    seq, wall, mono, boot, type_name, lane, version, data, prev, digest = fields
    for name, value, low in (
        ("seq", seq, 1),
        ("wall_ns", wall, _I64_MIN),
        ("mono_ns", mono, _I64_MIN),
        ("version", version, 0),
    ):
        if type(value) is not int:
            return f"{name} is {type(value).__name__}, not int"
        if not low <= value <= _I64_MAX:
            return f"{name} {value} is out of range"
    for name, value, nullable in (
        ("boot_id", boot, False),
        ("type", type_name, False),
        ("lane", lane, True),
    ):
        problem = _text_problem(name, value, nullable=nullable)
        if problem:
            return problem
    if type(data) is not bytes:
        return f"data is {type(data).__name__}, not bytes"
    for name, value in (("prev_hash", prev), ("hash", digest)):
        if type(value) is not bytes or len(value) != 32:
            return f"{name} is not 32 bytes"
    return None


def check_rows(rows: object) -> str | None:
    """The first reason (naming the row's index) why ``rows`` are not a list of ``Row``s."""
    if type(rows) is not list and type(rows) is not tuple:
        return f"rows are {type(rows).__name__}, not a list"
    lo, hi = _I64_MIN, _I64_MAX
    for i, r in enumerate(cast(Sequence[Any], rows)):
        # Fast path for the common, well-formed row; anything unusual (including valid
        # non-ASCII text) goes through _row_problem for an exact verdict.
        if (type(r) is list or type(r) is tuple) and len(r) == 10:
            seq, wall, mono, boot, type_name, lane, version, data, prev, digest = r
            if (
                type(seq) is int
                and 0 < seq <= hi
                and type(wall) is int
                and lo <= wall <= hi
                and type(mono) is int
                and lo <= mono <= hi
                and type(boot) is str
                and boot.isascii()
                and "\x00" not in boot
                and type(type_name) is str
                and type_name.isascii()
                and "\x00" not in type_name
                and (lane is None or (type(lane) is str and lane.isascii() and "\x00" not in lane))
                and type(version) is int
                and 0 <= version <= hi
                and type(data) is bytes
                and type(prev) is bytes
                and len(prev) == 32
                and type(digest) is bytes
                and len(digest) == 32
            ):
                continue
        problem = _row_problem(r)
        if problem is not None:
            return f"malformed row at index {i}: {problem}"
    return None


BOOT_IDS = operator.itemgetter(3)
_TYPES = operator.itemgetter(4)
_LANES = operator.itemgetter(5)


def check_decoded(rows: DecodedEvents) -> str | None:
    """``check_rows`` for rows ``decode_batch`` already checked: only NUL is left to find."""
    # decode_batch proved every type and range (msgpack text is valid UTF-8); what it lets
    # through is NUL in text, which PostgreSQL cannot store. C-speed scans, no Python loop.
    nul = "\x00"
    if (
        nul in "".join(map(BOOT_IDS, rows))
        or nul in "".join(map(_TYPES, rows))
        or nul in "".join(filter(None, map(_LANES, rows)))
    ):
        return check_rows(tuple(rows))
    return None


def clean_text(value: str) -> str:
    """Text safe to store in either backend (no NUL, valid UTF-8)."""
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()


def dead_payload(gate: object, rows: object) -> bytes:
    """What a dead letter keeps of refused rows: msgpack ``{gate, rows}``, else their repr."""
    try:
        packed: bytes = msgpack.packb({"gate": gate, "rows": rows}, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        packed = clean_text(repr({"gate": gate, "rows": rows})).encode()
    return packed
