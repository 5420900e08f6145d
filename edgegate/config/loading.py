"""Reading a configuration: TOML text or a file to a validated :class:`GateConfig`."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from pydantic import ValidationError

from edgegate.config.checks import _cross_check, _Parts
from edgegate.config.gate_config import _DEFER_CROSS_CHECKS, GateConfig
from edgegate.config.problems import ConfigError, Problem
from edgegate.config.rendering import _problems, _section_order, _syntax_problem


def parse_config(
    text: str, source: str = "<string>", *, base_dir: str | os.PathLike[str] | None = None
) -> GateConfig:
    """Validate a configuration given as TOML text. ``base_dir`` anchors relative paths."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([_syntax_problem(e, text)], source) from None
    except RecursionError:
        # tomllib recurses once per level of nested arrays or inline tables.
        raise ConfigError(
            [("", "TOML nested too deeply: arrays or inline tables within each other")], source
        ) from None
    except ValueError:  # an integer past Python's int-from-text digit limit
        raise ConfigError(
            [("", f"TOML integer too long: more than {sys.get_int_max_str_digits()} digits")],
            source,
        ) from None
    problems: list[Problem] = []
    config: GateConfig | None = None
    try:
        config = GateConfig.model_validate(raw, context={_DEFER_CROSS_CHECKS: True})
    except ValidationError as e:
        problems += _problems(e)
    parts = _Parts.from_model(config) if config is not None else _Parts.from_raw(raw)
    for problem in _cross_check(parts):
        if problem not in problems:
            problems.append(problem)
    if problems or config is None:
        raise ConfigError(sorted(problems, key=_section_order), source)
    config._source = source
    config._base_dir = Path(base_dir) if base_dir is not None else None
    return config


def load_config(path: str | os.PathLike[str]) -> GateConfig:
    """Read and validate a configuration file; relative paths in it are anchored at its folder."""
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise ConfigError([("", f"cannot read the file: {e.strerror or e}")], str(file)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            [("", f"not UTF-8 text (byte {e.start}): TOML files must be UTF-8")], str(file)
        ) from None
    return parse_config(text, str(file), base_dir=file.absolute().parent)
