"""The one way tests wait: for a condition, never for a fixed time before asserting.

A fixed sleep is right only before asserting that something did NOT happen (time for a wrong
command, a second fault...) or to pace a simulated peer (a vehicle's moves, a line's baud
rate); say which in a comment beside it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def _failure(what: str | Callable[[], str], within: float) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"not {text} after {within} s")


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    what: str | Callable[[], str] = "condition",
    *,
    within: float = 5.0,
    every: float = 0.02,
) -> None:
    """Return as soon as ``predicate()`` is true; fail naming ``what`` after ``within`` s.

    ``predicate`` may be a plain function or a coroutine function. ``what`` may be a function,
    called on failure only, to describe the state then."""
    end = time.monotonic() + within
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            raise _failure(what, within)
        await asyncio.sleep(every)


def eventually_blocking(
    predicate: Callable[[], bool],
    what: str | Callable[[], str] = "condition",
    *,
    within: float = 5.0,
    every: float = 0.02,
) -> None:
    """:func:`eventually` for code that runs outside the event loop (a thread, a sync test)."""
    end = time.monotonic() + within
    while not predicate():
        if time.monotonic() > end:
            raise _failure(what, within)
        time.sleep(every)
