"""Clock steps: the pure detector and mark (edgegate.core.clocksteps) with a clock that steps,
and the daemon's ClockWatch writing ``clock.stepped`` to a real event log."""

from __future__ import annotations

from pathlib import Path

from edgegate.core.clock import ManualClock
from edgegate.core.clocksteps import STEP_THRESHOLD_NS, ClockSteps, Jump
from edgegate.core.codec import ns_to_datetime
from edgegate.core.events import ClockStepMark, ClockStepped
from edgegate.daemon.clock_watch import ClockWatch
from edgegate.log import EventLog, LogReader

NS = 1_000_000_000


def watched(clock: ManualClock) -> ClockSteps:
    steps = ClockSteps()
    assert steps.observe(clock.wall_ns(), clock.mono_ns()) is None  # the first reading
    return steps


def test_a_step_forward_and_one_back_are_found_with_their_signed_offsets() -> None:
    clock = ManualClock()
    steps = watched(clock)
    clock.advance(1.0)
    assert steps.observe(clock.wall_ns(), clock.mono_ns()) is None
    before = clock.wall_ns()
    clock.advance(1.0)
    clock.step_wall(3 * 3600)  # date -s three hours ahead
    assert steps.observe(clock.wall_ns(), clock.mono_ns()) == Jump(
        3 * 3600 * NS, before, before + NS + 3 * 3600 * NS
    )
    clock.advance(1.0)
    clock.step_wall(-45.5)  # NTP pulls it back
    jump = steps.observe(clock.wall_ns(), clock.mono_ns())
    assert jump is not None and jump.offset_ns == -45_500_000_000


def test_slewing_is_never_a_step_even_when_it_adds_up_past_a_second() -> None:
    clock = ManualClock()
    steps = watched(clock)
    for _ in range(4000):  # 500 ppm, NTP's fastest slew: 2 s over the hour
        clock.advance(1.0)
        clock.step_wall(0.0005)
        assert steps.observe(clock.wall_ns(), clock.mono_ns()) is None


def test_the_threshold_is_one_second_exactly_not_a_step() -> None:
    clock = ManualClock()
    steps = watched(clock)
    clock.step_wall(1.0)
    assert steps.observe(clock.wall_ns(), clock.mono_ns()) is None
    clock.step_wall(-1.0)
    assert steps.observe(clock.wall_ns(), clock.mono_ns()) is None
    clock._wall += STEP_THRESHOLD_NS + 1  # one nanosecond more
    jump = steps.observe(clock.wall_ns(), clock.mono_ns())
    assert jump is not None and jump.offset_ns == STEP_THRESHOLD_NS + 1
    clock._wall -= STEP_THRESHOLD_NS + 1
    jump = steps.observe(clock.wall_ns(), clock.mono_ns())
    assert jump is not None and jump.offset_ns == -(STEP_THRESHOLD_NS + 1)


def test_the_mark_stays_until_the_system_says_synchronised() -> None:
    steps = ClockSteps()
    jump = Jump(7200 * NS, 0, 7200 * NS)
    assert steps.mark is None
    assert steps.stepped(jump, 41) == ClockStepMark(seq=41, offset_ns=7200 * NS)
    assert steps.checked(False) is None and steps.mark is not None
    assert steps.checked(None) is None and steps.mark is not None  # nothing confirms it
    later = Jump(-3 * NS, 0, 0)
    steps.stepped(later, None)  # a later step replaces it (this one could not be logged)
    assert steps.mark == ClockStepMark(seq=None, offset_ns=-3 * NS)
    assert steps.checked(True) == ClockStepMark(seq=None, offset_ns=-3 * NS)
    assert steps.mark is None


async def test_the_watch_logs_a_step_noticed_at_a_decision_and_clears_it_at_a_later_sync(
    event_log: EventLog, clock: ManualClock, tmp_path: Path
) -> None:
    synchronised: list[bool | None] = [False]
    watch = ClockWatch(clock, event_log, lambda: synchronised[0])
    clock.advance(0.5)
    assert await watch.at_decision("in-1") is None
    await watch.check()
    before = clock.wall_ns()
    clock.advance(0.3)
    clock.step_wall(-7200)
    mark = await watch.at_decision("in-1")  # before the periodic check saw it
    assert mark is not None and mark.offset_ns == -7200 * NS
    await watch.check()  # no new step; not synchronised: kept
    assert await watch.at_decision("in-2") == mark
    synchronised[0] = True
    clock.advance(1.0)
    await watch.check()
    assert watch.mark is None and await watch.at_decision("in-1") is None
    with LogReader(tmp_path / "gate.db") as reader:
        (stored,) = reader.read()
    assert stored.seq == mark.seq and stored.type == ClockStepped.TYPE
    assert stored.event() == ClockStepped(
        offset_ns=-7200 * NS,
        wall_before=ns_to_datetime(before),
        wall_after=ns_to_datetime(before + 300_000_000 - 7200 * NS),
        synchronised=False,
        noticed_by="in-1",
    )


async def test_the_check_that_sees_an_ntp_step_does_not_clear_it_the_next_one_does(
    event_log: EventLog, clock: ManualClock
) -> None:
    watch = ClockWatch(clock, event_log, lambda: True)  # an NTP step: the kernel says synced
    clock.advance(1.0)
    clock.step_wall(5.0)
    await watch.check()
    assert watch.mark is not None and watch.mark.offset_ns == 5 * NS
    clock.advance(1.0)
    await watch.check()
    assert watch.mark is None
