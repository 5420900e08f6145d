"""Pydantic and TOML errors as problems: one line each, naming the TOML key path
(``lanes[0].barrier``) and saying what was expected."""

from __future__ import annotations

import difflib
import json
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from types import UnionType
from typing import Any

from pydantic import BaseModel, ValidationError

from edgegate.config.gate_config import GateConfig
from edgegate.config.models import _DEVICE_CLASSES
from edgegate.config.problems import Problem
from edgegate.validation import EXPECTED, describe_value, unwrap_type

# ------------------------------------------------------------- pydantic errors -> problems

_EXPECTED = EXPECTED
_describe = describe_value


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _walk(loc: Sequence[int | str]) -> tuple[str, Any]:
    """A pydantic ``loc`` as a TOML key path (``lanes[0].barrier``), and the type there."""
    path = ""
    tp: Any = GateConfig
    for item in loc:
        if item == "[key]":
            continue
        tp = unwrap_type(tp)
        origin = typing.get_origin(tp)
        if isinstance(item, int):
            path += f"[{item}]"
            tp = typing.get_args(tp)[0] if origin in (tuple, list) else None
            continue
        if origin in (typing.Union, UnionType) and item in _DEVICE_CLASSES:
            tp = _DEVICE_CLASSES[item]  # a discriminator tag, not a key
            continue
        key = item if _PLAIN_KEY.fullmatch(item) else json.dumps(item, ensure_ascii=False)
        path += f".{key}" if path else key
        if _is_model(tp):
            field = tp.model_fields.get(item)
            tp = field.annotation if field is not None else None
        elif origin in (dict, Mapping):
            tp = typing.get_args(tp)[1]
        else:
            tp = None
    return path, unwrap_type(tp)


def _message(error: Any, loc: Sequence[int | str]) -> str:
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "extra_forbidden":
        _, parent = _walk(loc[:-1])
        name = str(loc[-1])
        known = list(parent.model_fields) if _is_model(parent) else []
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        if known and not close:
            hint = f" (expected one of: {', '.join(known)})"
        return f"unknown key '{name}'{hint}"
    if kind == "missing":
        _, tp = _walk(loc)
        return "required table is missing" if _is_model(tp) else "required key is missing"
    if kind in ("enum", "literal_error"):
        if loc and loc[-1] == "[key]":
            return f"unknown key {value!r}: expected one of {ctx.get('expected')}"
        return f"must be one of {ctx.get('expected')}, got {_describe(value)}"
    if kind == "union_tag_invalid":
        return (
            f"unknown device type {ctx.get('tag')!r}: expected one of {', '.join(_DEVICE_CLASSES)}"
        )
    if kind == "union_tag_not_found":
        return f"missing 'type': expected one of {', '.join(_DEVICE_CLASSES)}"
    bounds = {
        "greater_than": "greater than",
        "greater_than_equal": "at least",
        "less_than": "less than",
        "less_than_equal": "at most",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        shown = f"{limit:g}" if isinstance(limit, float) else str(limit)
        return f"must be {bounds[kind]} {shown}, got {_describe(value)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    return str(error["msg"])


def _problems(error: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        path, _ = _walk(loc)
        problems.append((path, _message(item, loc)))
    return problems


# ------------------------------------------------------------ order, TOML syntax errors


def _section_order(problem: Problem) -> int:
    """Report in the order of the file's sections; stable within a section."""
    section = re.split(r"[.\[]", problem[0], maxsplit=1)[0]
    order = list(GateConfig.model_fields)
    return order.index(section) + 1 if section in order else 0


_TOML_POSITION = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$")


def _syntax_problem(error: tomllib.TOMLDecodeError, text: str) -> Problem:
    message = str(error)
    m = _TOML_POSITION.match(message)
    if m is not None:
        what, line, column = m.group(1), m.group(2), m.group(3)
    else:
        what = message.removesuffix(" (at end of document)")
        lines = text.split("\n")
        line, column = str(len(lines)), str(len(lines[-1]) + 1)
    return "", f"TOML syntax error at line {line}, column {column}: {what}"
