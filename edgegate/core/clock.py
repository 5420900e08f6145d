"""Time as the core sees it: an injected clock, never a global read."""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """Wall time (UTC epoch ns), monotonic time (ns) and the boot the monotonic time is of."""

    @property
    def boot_id(self) -> str: ...

    def wall_ns(self) -> int: ...

    def mono_ns(self) -> int: ...


class ManualClock:
    """A clock tests move by hand."""

    def __init__(
        self,
        wall_ns: int = 1_795_000_000 * 10**9,
        mono_ns: int = 10**9,
        boot_id: str = "00000000-0000-0000-0000-000000000000",
    ) -> None:
        self._wall = wall_ns
        self._mono = mono_ns
        self._boot = boot_id

    @property
    def boot_id(self) -> str:
        return self._boot

    def wall_ns(self) -> int:
        return self._wall

    def mono_ns(self) -> int:
        return self._mono

    def advance(self, seconds: float) -> None:
        step = int(seconds * 1_000_000_000)
        self._wall += step
        self._mono += step

    def step_wall(self, seconds: float) -> None:
        """The wall clock is set (an NTP step, ``date -s``): monotonic time does not move."""
        self._wall += int(seconds * 1_000_000_000)
