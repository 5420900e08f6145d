"""Capped, jittered exponential backoff: the one retry rule of every driver and MQTT client.

Pure: no clock, no sleeping; the random source is injected (tests pass a seeded one).
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based).

    The ceiling is ``initial * 2**attempt``, capped at ``cap``; the delay is drawn uniformly
    from ``[ceiling / 2, ceiling]`` ("equal jitter"): never less than half the ceiling, so a
    recovering peer is not hammered, and never the same for many gates restarting together,
    so they do not retry in lockstep.
    """
    ceiling = min(cap, initial * 2.0 ** min(max(attempt, 0), 60))
    return rng.uniform(ceiling / 2, ceiling)


class Backoff:
    """Successive delays of :func:`backoff_delay`: ``next()`` for each failed attempt,
    ``reset()`` once the peer answers again."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        if not (initial >= 0 and cap >= 0):
            raise ValueError(f"backoff needs initial >= 0 and cap >= 0 (got {initial}, {cap})")
        self.initial = initial
        self.cap = cap
        self.attempts = 0
        """Failed attempts since the last reset."""
        self._rng = rng if rng is not None else random.Random()  # jitter, not security

    def next(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = backoff_delay(self.attempts, self.initial, self.cap, self._rng)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
