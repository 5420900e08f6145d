"""Running ``edgegate check-config`` in-process and reading what it wrote."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from edgegate.cli.main import main

Runner = Callable[[Path], tuple[int, str, str]]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Runner]:
    """Run ``edgegate check-config PATH``; returns (exit code, stdout, stderr)."""

    def run(path: Path) -> tuple[int, str, str]:
        code = main(["check-config", str(path)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    # main() points structlog and the root logger at this test's captured stderr.
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield run
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def problem_lines(err: str) -> list[str]:
    """The problem lines of stderr (not the header, not the JSON log lines)."""
    return [line for line in err.splitlines()[1:] if not line.startswith("{")]


def log_events(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]
