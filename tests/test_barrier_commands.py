"""Barrier commands the PLC fails: retried within the arm's travel time while the lane goes on
taking its inputs; an admitted vehicle the arm never rose for is logged for the guard."""

from __future__ import annotations

from pathlib import Path

from edgegate.core.events import (
    AccessDecided,
    AdmissionNotOpened,
    BarrierCommand,
    DeviceFault,
    Loop,
    LoopChanged,
    VehiclePassed,
)
from edgegate.core.lane import LaneState
from edgegate.sim.plc import FailMode
from tests.eventually import eventually
from tests.gate_harness import ALLOWED, RunningGate, one_lane_config, wait_position

OPEN = BarrierCommand.OPEN


async def test_an_open_the_plc_refuses_for_a_moment_is_retried_and_the_vehicle_passes(
    tmp_path: Path,
) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        plc, road, log, trail = g.plc(), g.road(), g.log, g.trail()
        await plc.set_fail_mode(FailMode.WRITES_REFUSED)
        await road.arrive(ALLOWED)
        decided = await log.wait_for(AccessDecided, lane="l1")
        fault = await log.wait_for(DeviceFault, lane="l1", after=decided.seq)
        assert fault.event.code == "modbus-exception"
        assert "retrying for" in fault.event.message
        await plc.set_fail_mode(FailMode.NONE)
        await trail.wait(OPEN)
        await wait_position(plc, 1.0)
        await road.cross()
        passed = await log.wait_for(VehiclePassed, lane="l1", after=decided.seq)
        assert passed.event.decision_seq == decided.seq
        assert len(log.of(DeviceFault, after=decided.seq)) == 1  # one fault, however many tries
        assert log.of(AdmissionNotOpened) == []


async def test_an_admitted_vehicle_the_arm_never_rose_for_is_logged_for_the_guard(
    tmp_path: Path,
) -> None:
    async with RunningGate(one_lane_config(tmp_path)) as g:
        plc, road, log, trail = g.plc(), g.road(), g.log, g.trail()
        await plc.set_fail_mode(FailMode.WRITES_REFUSED)
        await road.arrive(ALLOWED)
        decided = await log.wait_for(AccessDecided, lane="l1")
        await log.wait_for(DeviceFault, lane="l1", after=decided.seq)
        # While the open is being retried the lane still takes its loops at once.
        plc.set_loop(Loop.SAFETY, True)
        await log.wait_for(
            LoopChanged, lane="l1", after=decided.seq, where=lambda e: e.loop is Loop.SAFETY
        )
        not_opened = await log.wait_for(
            AdmissionNotOpened, lane="l1", after=decided.seq, within=3.0
        )
        assert not_opened.event.plate == ALLOWED
        assert not_opened.event.decision_seq == decided.seq
        timeout = await log.wait_for(
            DeviceFault, lane="l1", after=decided.seq, where=lambda e: "timeout" in e.code
        )
        assert timeout.event.code == "barrier-open-timeout"
        await eventually(lambda: g.gate.lanes["l1"].state is LaneState.FAULT, "lane in fault")
        assert trail.of(OPEN) == []
        assert plc.position == 0.0
        plc.set_loop(Loop.SAFETY, False)
        plc.set_loop(Loop.ARMING, False)
        await plc.set_fail_mode(FailMode.NONE)
