"""Shared fixtures: leak checks, clocks, temporary logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from edgegate.core.clock import ManualClock
from edgegate.log import EventLog

pytest_plugins = ["tests.config_cli", "tests.services.mosquitto", "tests.services.postgres"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--crash-trials",
        type=int,
        default=20,
        help="number of SIGKILL trials in the event-log crash test (default 20)",
    )


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """``main()`` binds structlog to the current stderr; pytest closes it after each test."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


@pytest.fixture(autouse=True)
async def _no_leaked_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail any async test that leaves tasks running behind it."""
    if request.node.get_closest_marker("asyncio") is None:
        yield
        return
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not current]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test leaked tasks: {leaked}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def event_log(tmp_path: Path, clock: ManualClock) -> AsyncIterator[EventLog]:
    log = await EventLog.open(tmp_path / "gate.db", gate_id="test-gate", clock=clock)
    try:
        yield log
    finally:
        await log.aclose()
