"""Clock steps: wall time jumping against monotonic time, and the step decisions carry until
the clock is next confirmed synchronised (docs/design.md §3). Pure: readings are parameters.

Between two readings of one process, wall time should advance as monotonic time does; NTP's
slewing changes the rate by at most 500 ppm, a fraction of a millisecond per second. A
difference of more than ``STEP_THRESHOLD_NS`` (one second, strictly) is a step. Readings of
another run of the daemon are never compared (another boot's monotonic time means nothing
here), so a ``ClockSteps`` lives as long as one process.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgegate.core.events import ClockStepMark

STEP_THRESHOLD_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Jump:
    """A step seen between two readings: the signed ``offset_ns`` (positive: wall time
    jumped forward) and the wall times of the reading before and of the one that saw it."""

    offset_ns: int
    wall_before_ns: int
    wall_after_ns: int


class ClockSteps:
    """Steps between successive readings, and the mark decisions carry.

    ``observe`` compares a reading with the previous one. The shell logs each ``Jump`` and
    calls ``stepped`` with its seq: from then on ``mark`` is that step (a later step replaces
    it). ``checked`` takes the system's synchronisation verdict at a periodic check that saw
    no step: True clears the mark (the next sync); False keeps it; None (the system does not
    say) keeps it too, as nothing confirms the clock is right again.
    """

    def __init__(self, threshold_ns: int = STEP_THRESHOLD_NS) -> None:
        self.threshold_ns = threshold_ns
        self._last: tuple[int, int] | None = None
        self.mark: ClockStepMark | None = None

    def observe(self, wall_ns: int, mono_ns: int) -> Jump | None:
        """The step since the previous reading, if wall time moved more than the threshold
        beyond (or short of) what monotonic time says elapsed."""
        last, self._last = self._last, (wall_ns, mono_ns)
        if last is None:
            return None
        last_wall, last_mono = last
        offset = (wall_ns - last_wall) - (mono_ns - last_mono)
        if abs(offset) <= self.threshold_ns:
            return None
        return Jump(offset, last_wall, wall_ns)

    def stepped(self, jump: Jump, seq: int | None) -> ClockStepMark:
        """The step was logged as ``seq`` (None: it could not be): decisions carry it."""
        self.mark = ClockStepMark(seq=seq, offset_ns=jump.offset_ns)
        return self.mark

    def checked(self, synchronised: bool | None) -> ClockStepMark | None:
        """A periodic check after the step found the clock ``synchronised``; returns the mark
        it cleared, if any."""
        cleared = self.mark if synchronised is True else None
        if cleared is not None:
            self.mark = None
        return cleared


__all__ = ["STEP_THRESHOLD_NS", "ClockSteps", "Jump"]
