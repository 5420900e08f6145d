"""What the TOML validators (gate configuration, device profiles) share: their strict base
model, and the wording of what pydantic expected and what the file had, in the file's own
terms (tables, arrays, strings)."""

from __future__ import annotations

import typing
from types import UnionType
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """The base of every model read from a TOML file: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "a table",
    "mapping_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def describe_value(value: object) -> str:
    """A TOML value as an operator reads it: ``string 'x'``, ``number 5``, ``a table``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


def unwrap_type(tp: Any) -> Any:
    """``X`` from ``Annotated[X, …]`` and ``X | None``: the type a field's value must have."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp
