"""The one way tests wait: for a condition, never for a fixed time before asserting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    what: str = "condition",
    *,
    within: float = 5.0,
    every: float = 0.02,
) -> None:
    """Return as soon as ``predicate()`` is true; fail naming ``what`` after ``within`` s.

    ``predicate`` may be a plain function or a coroutine function."""
    end = time.monotonic() + within
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            raise AssertionError(f"not {what} after {within} s")
        await asyncio.sleep(every)
