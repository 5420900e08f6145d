"""Device profiles: one TOML file per device model under ``drivers/``, validated on load.

A profile's ``type`` names its family (``barrier-plc``, the plate reader families…); the
family's pydantic model validates the rest. :func:`load_profile` reads one profile by name
(its path under the drivers directory without ``.toml``), :func:`load_all` every profile;
both raise :class:`ProfileError` listing every problem as ``drivers/NAME.toml: key: message``.

Families report cross-field problems as one pydantic error of type ``profile_problems``
with ``ctx["problems"]`` = ``[(key_path, message), …]``; the loader expands them.

The drivers directory is ``$EDGEGATE_DRIVERS`` if set, else the repository's ``drivers/``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, overload

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.reader_profile import (
    BinaryFrameReaderProfile,
    ReaderProfile,
    TextLineReaderProfile,
)
from edgegate.validation import EXPECTED, describe_value, unwrap_type

__all__ = [
    "DEFAULT_DRIVERS_DIR",
    "FAMILIES",
    "Profile",
    "ProfileError",
    "default_drivers_dir",
    "load_all",
    "load_profile",
    "load_reader_profile",
    "parse_profile",
]

#: The repository's ``drivers/`` (the package is installed editable from the repository).
DEFAULT_DRIVERS_DIR = Path(__file__).resolve().parents[2] / "drivers"
DRIVERS_ENV = "EDGEGATE_DRIVERS"

Profile = Annotated[
    BarrierPlcProfile | TextLineReaderProfile | BinaryFrameReaderProfile,
    Field(discriminator="type"),
]

#: ``type`` tag -> family model, derived from :data:`Profile` so the two cannot disagree.
FAMILIES: dict[str, type[BaseModel]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(Profile)[0])
}
_ADAPTER: TypeAdapter[Profile] = TypeAdapter(Profile)

P = TypeVar("P", bound=BaseModel)


class ProfileError(ValueError):
    """Invalid or missing profiles: every problem, as ``(source, key_path, message)``."""

    def __init__(self, problems: Iterable[tuple[str, str, str]]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def lines(self) -> list[str]:
        return [
            f"{source}: {key}: {message}" if key else f"{source}: {message}"
            for source, key, message in self.problems
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def default_drivers_dir() -> Path:
    """``$EDGEGATE_DRIVERS`` if set, else :data:`DEFAULT_DRIVERS_DIR`."""
    override = os.environ.get(DRIVERS_ENV)
    return Path(override) if override else DEFAULT_DRIVERS_DIR


# ------------------------------------------------------------------ errors -> key paths


def _key_path(loc: Sequence[int | str], tagged: bool) -> str:
    # The first item of a discriminated union's loc is the family tag, not a key.
    path = ""
    for item in loc[1:] if tagged else loc:
        if isinstance(item, int):
            path += f"[{item}]"
        else:
            path += f".{item}" if path else item
    return path


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model a loc (family tag first) points into, to suggest keys for an unknown one."""
    if not loc or loc[0] not in FAMILIES:
        return None
    tp: Any = FAMILIES[str(loc[0])]
    for item in loc[1:]:
        tp = unwrap_type(tp)
        field = tp.model_fields.get(str(item)) if _is_model(tp) else None
        if field is None:
            return None
        tp = field.annotation
    tp = unwrap_type(tp)
    return tp if _is_model(tp) else None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


_BOUNDS = {
    "greater_than": "greater than",
    "greater_than_equal": "at least",
    "less_than": "less than",
    "less_than_equal": "at most",
}
_EXPECTED = EXPECTED
_describe = describe_value


def _message(error: Any) -> str:
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    loc: tuple[int | str, ...] = error["loc"]
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        name = str(loc[-1])
        parent = _model_at(loc[:-1])
        known = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            return f"unknown key '{name}' (did you mean '{close[0]}'?)"
        if known:
            return f"unknown key '{name}' (expected one of: {', '.join(known)})"
        return f"unknown key '{name}'"
    if kind == "union_tag_invalid":
        return f"unknown profile type {ctx.get('tag')!r}: expected one of {', '.join(FAMILIES)}"
    if kind == "union_tag_not_found":
        return f"missing 'type': expected one of {', '.join(FAMILIES)}"
    value = error.get("input")
    if kind in _BOUNDS:
        limit = next(iter(ctx.values()), "?")
        return f"must be {_BOUNDS[kind]} {limit}, got {_describe(value)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    return f"{error['msg']}, got {_describe(value)}"


def _problems(source: str, error: ValidationError) -> list[tuple[str, str, str]]:
    problems: list[tuple[str, str, str]] = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        tagged = bool(loc) and loc[0] in FAMILIES
        if item["type"] == "profile_problems":
            prefix = _key_path(loc, tagged)
            for key, message in (item.get("ctx") or {}).get("problems", []):
                full = f"{prefix}.{key}" if prefix else key
                problems.append((source, full, message))
            continue
        key = "type" if item["type"] == "union_tag_invalid" else _key_path(loc, tagged)
        problems.append((source, key, _message(item)))
    return problems


# ---------------------------------------------------------------------------------- API


def parse_profile(text: str, source: str = "<string>") -> Profile:
    """Validate a profile given as TOML text; ``source`` prefixes every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError([(source, "", f"TOML syntax error: {exc}")]) from None
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ProfileError(_problems(source, exc)) from None


def _source(drivers_dir: Path, name: str) -> str:
    return f"{drivers_dir.name or drivers_dir}/{name}.toml"


def _read(drivers_dir: Path, name: str) -> Profile:
    source = _source(drivers_dir, name)
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ProfileError([(source, "", f"{name!r} is not a profile name")])
    path = drivers_dir.joinpath(*parts).with_name(f"{parts[-1]}.toml")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        known = ", ".join(sorted(_names(drivers_dir))) or "none"
        raise ProfileError(
            [(source, "", f"no such profile (profiles in {drivers_dir}: {known})")]
        ) from None
    except OSError as exc:
        raise ProfileError([(source, "", f"cannot read the file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ProfileError([(source, "", f"not UTF-8 text (byte {exc.start})")]) from None
    return parse_profile(text, source)


def _names(drivers_dir: Path) -> list[str]:
    return sorted(
        p.relative_to(drivers_dir).with_suffix("").as_posix()
        for p in drivers_dir.rglob("*.toml")
        if p.is_file()
    )


@overload
def load_profile(name: str, drivers_dir: Path | None = None) -> Profile: ...


@overload
def load_profile(name: str, drivers_dir: Path | None = None, *, family: type[P]) -> P: ...


def load_profile(
    name: str, drivers_dir: Path | None = None, *, family: type[BaseModel] | None = None
) -> BaseModel:
    """Read and validate ``drivers/NAME.toml``; with ``family``, insist on that family."""
    directory = drivers_dir if drivers_dir is not None else default_drivers_dir()
    profile = _read(directory, name)
    if family is not None and not isinstance(profile, family):
        wanted = next((tag for tag, cls in FAMILIES.items() if cls is family), family.__name__)
        raise ProfileError(
            [
                (
                    _source(directory, name),
                    "type",
                    f"is a {profile.type!r} profile; a {wanted!r} profile is needed here",
                )
            ]
        )
    return profile


def load_reader_profile(name: str) -> ReaderProfile:
    """The plate-reader profile ``name``; ``ValueError`` if it is of another family."""
    profile = load_profile(name)
    if not isinstance(profile, TextLineReaderProfile | BinaryFrameReaderProfile):
        raise ValueError(f"profile {name!r} is not a plate-reader profile")
    return profile


def load_all(drivers_dir: Path | None = None) -> dict[str, Profile]:
    """Every profile under the drivers directory by name; all problems of all files at once."""
    directory = drivers_dir if drivers_dir is not None else default_drivers_dir()
    profiles: dict[str, Profile] = {}
    problems: list[tuple[str, str, str]] = []
    for name in _names(directory):
        try:
            profiles[name] = _read(directory, name)
        except ProfileError as exc:
            problems += exc.problems
    if problems:
        raise ProfileError(problems)
    return profiles
