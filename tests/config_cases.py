"""What the configuration tests share: edited copies of a base file, and the one check that an
invalid file is reported by ``edgegate check-config`` and by the API alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from edgegate.config import ConfigError, load_config
from tests.config_cli import Runner, log_events, problem_lines

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

#: ``(id, file text, key path, message fragment)``; the key path is ``""`` for whole-file
#: problems, which are reported under the file's path.
Case = tuple[str, str, str, str]


def edited(base: str, *replacements: tuple[str, str], append: str = "") -> str:
    """``base`` with each ``(old, new)`` replaced, then ``append`` added at the end.

    Fails if an ``old`` does not occur exactly once, so a case cannot silently test ``base``."""
    text = base
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} must occur once in the base file"
        text = text.replace(old, new)
    return text + append


def params(cases: Sequence[Case]) -> list[Any]:
    """The cases as ``(text, key, fragment)`` parameters, each with its id."""
    return [pytest.param(text, key, fragment, id=name) for name, text, key, fragment in cases]


def assert_distinct(cases: Sequence[Case], at_least: int) -> None:
    assert len({name for name, *_ in cases}) == len(cases) >= at_least


def assert_reported(path: Path, text: str, key: str, fragment: str, run_cli: Runner) -> None:
    """Written to ``path``, ``text`` is refused: ``check-config`` exits 2 with a problem line
    for ``key`` containing ``fragment`` and logs ``config_invalid``; the API raises the same
    problem with the same key path."""
    path.write_text(text, encoding="utf-8")
    code, out, err = run_cli(path)
    assert code == 2
    assert out == ""
    where = key or str(path)
    lines = problem_lines(err)
    assert any(line.startswith(f"{where}: ") and fragment in line for line in lines), lines
    [event] = log_events(err)
    assert event["event"] == "config_invalid"
    assert event["level"] == "error"
    assert any(fragment in problem for problem in event["problems"])
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(k == key and fragment in m for k, m in caught.value.problems)
