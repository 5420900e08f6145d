"""The real daemon, in process, with a wall clock the test sets as it runs (``date -s``): the
step is logged, decisions carry it until the clock is next synchronised, presence does not
turn it into overstays, and replay shows it."""

from __future__ import annotations

import time
from pathlib import Path
from zoneinfo import ZoneInfo

from edgegate.core.domain import PlateColour
from edgegate.core.events import (
    AccessDecided,
    ClockStepMark,
    ClockStepped,
    OverstayDetected,
    VehiclePassed,
)
from edgegate.log import LogReader
from edgegate.replay.cycles import Note, group
from edgegate.replay.incidents import find_incidents, stored_events
from tests.eventually import eventually
from tests.gate_harness import (
    ALLOWED,
    Road,
    RunningGate,
    gate_config,
    lane,
    sim_plc,
    sim_reader,
    wait_position,
)

NS = 1_000_000_000
TRUCK = "苏EA7L21"  # REG-2 of the demo list: an engineering truck, 12 h dwell limit
VISITOR = "皖A8K302"  # PER-1: a visitor's permit, ending a day from now


class SetClock:
    """The PC's clocks, its wall clock set by the test while the daemon runs."""

    boot_id = "e2e-boot"

    def __init__(self) -> None:
        self.offset_ns = 0

    def wall_ns(self) -> int:
        return time.time_ns() + self.offset_ns

    def mono_ns(self) -> int:
        return time.monotonic_ns()

    def step_wall(self, seconds: float) -> None:
        self.offset_ns += round(seconds * NS)


async def _enter(g: RunningGate, road: Road, plate: str, colour: PlateColour) -> None:
    after = g.log.head
    await road.arrive(plate, colour)
    await wait_position(road.plc, 1.0)
    await road.cross()
    await g.log.wait_for(VehiclePassed, lane="l1", after=after)
    await wait_position(road.plc, 0.0)


async def _decision(g: RunningGate, road: Road) -> AccessDecided:
    after = g.log.head
    await _enter(g, road, ALLOWED, PlateColour.BLUE)
    return (await g.log.wait_for(AccessDecided, lane="l1", after=after)).event


async def test_a_step_is_logged_carried_until_the_sync_and_makes_no_false_overstay(
    tmp_path: Path,
) -> None:
    config = gate_config(
        tmp_path,
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc")],
        timings={"overstay_check_every": "1s"},
    )
    clock = SetClock()
    synchronised = [True]
    async with RunningGate(config, clock=clock, clock_synchronised=lambda: synchronised[0]) as g:
        road = g.road()
        await _enter(g, road, TRUCK, PlateColour.YELLOW)
        await _enter(g, road, VISITOR, PlateColour.BLUE)
        assert (await _decision(g, road)).clock_step is None

        synchronised[0] = False  # date -s: the kernel marks the clock unsynchronised
        clock.step_wall(25 * 3600)
        stepped = await g.log.wait_for(ClockStepped)
        assert abs(stepped.event.offset_ns - 25 * 3600 * NS) < NS // 2
        assert (stepped.event.synchronised, stepped.event.noticed_by) == (False, "check")

        # One pass of the overstay check looks at every stay: the visitor's permit end (a
        # calendar instant) has passed on the wall clock; the truck has been inside seconds,
        # not the 12 hours the wall clock now says.
        overstay = await g.log.wait_for(OverstayDetected, within=5.0)
        assert (overstay.event.plate, overstay.event.limit) == (VISITOR, "permit-end")
        assert [o.event.plate for o in g.log.of(OverstayDetected)] == [VISITOR]

        carried = await _decision(g, road)
        mark = ClockStepMark(seq=stepped.seq, offset_ns=stepped.event.offset_ns)
        assert carried.clock_step == mark

        synchronised[0] = True  # NTP has the clock again
        watch = g.gate.clock_watch
        assert watch is not None
        await eventually(lambda: watch.mark is None, "a check after the sync clears the step")
        assert (await _decision(g, road)).clock_step is None

    tz = ZoneInfo("Asia/Shanghai")
    with LogReader(config.log_file) as reader:
        incidents = find_incidents(stored_events(reader.iter_rows()), tz=tz)
        (step,) = [f for f in incidents.findings if f.kind == "clock-step"]
        stored = reader.read(limit=100_000)
    notes = [i for i in group(stored) if isinstance(i, Note)]
    carrying = [s.seq for s in stored if isinstance(e := s.event(), AccessDecided) and e.clock_step]
    assert stepped.seq in step.seqs and step.fields["decisions"] == carrying
    assert step.fields["decisions_carrying"] == 1 and step.fields["synchronised"] is False
    assert "stepped forward by" in step.summary and "1 decision carried it" in step.summary
    (shown,) = [n.step for n in notes if n.step.type == ClockStepped.TYPE]
    assert shown.summary().startswith("wall clock stepped forward by 25.0 h")
