"""``replay incidents`` on logs the real gate wrote with simulated devices: a PLC fault, a
tailgate, a back-out and a guard wait that expired are each found with the right seqs."""

from __future__ import annotations

from pathlib import Path

from pymodbus.constants import ExcCodes

from edgegate.core.events import (
    AccessDecided,
    DeviceFault,
    DeviceRecovered,
    GuardWaitExpired,
    Loop,
    TailgateSuspected,
    VehicleBackedOut,
)
from edgegate.log import LogReader
from edgegate.replay.incidents import Finding, find_incidents, stored_events
from edgegate.sim.plc import FailMode
from tests.gate_harness import (
    ALLOWED,
    REFUSED,
    RunningGate,
    gate_config,
    lane,
    one_lane_config,
    sim_plc,
    sim_reader,
    wait_position,
)


def findings(path: Path, kind: str) -> list[Finding]:
    with LogReader(path) as reader:
        result = find_incidents(stored_events(reader.iter_rows()))
    return [f for f in result.findings if f.kind == kind]


async def test_plc_fault_tailgate_and_back_out(tmp_path: Path) -> None:
    config = one_lane_config(tmp_path)
    async with RunningGate(config) as g:
        plc, road, log = g.plc(), g.road(), g.log
        await road.arrive(ALLOWED)
        await wait_position(plc, 1.0)
        await road.set(Loop.SAFETY, True)
        await road.set(Loop.ARMING, False)
        await road.set(Loop.EXIT, True)
        await road.set(Loop.EXIT, False)
        await road.set(Loop.EXIT, True)  # a second vehicle on the same opening
        await road.set(Loop.SAFETY, False)
        await road.set(Loop.EXIT, False)
        tailgate = await log.wait_for(TailgateSuspected, lane="l1")
        await wait_position(plc, 0.0)

        head = log.head
        await road.arrive(REFUSED)
        refused = await log.wait_for(AccessDecided, lane="l1", after=head)
        await road.set(Loop.ARMING, False)
        backed = await log.wait_for(VehicleBackedOut, lane="l1", after=head)

        head = log.head
        await plc.set_fail_mode(FailMode.SILENT, exception_code=ExcCodes.DEVICE_FAILURE)
        fault = await log.wait_for(DeviceFault, after=head, where=lambda e: e.device == "plc")
        await plc.set_fail_mode(FailMode.NONE)
        recovered = await log.wait_for(DeviceRecovered, after=fault.seq, within=4.0)

    (found,) = findings(config.log_file, "tailgate")
    assert found.seqs == (tailgate.event.decision_seq, tailgate.seq)
    assert found.fields["plate"] == ALLOWED and found.lane == "l1"
    (found,) = findings(config.log_file, "back-out")
    assert found.seqs == (refused.seq, backed.seq) and found.fields["plate"] == REFUSED
    (found,) = findings(config.log_file, "barrier-fault")
    assert found.seqs == (fault.seq, recovered.seq)
    assert found.fields["device"] == "plc" and found.fields["ended"] == "recovered"
    assert found.severity == "critical"
    assert findings(config.log_file, "arm-left-up") == []
    travel = findings(config.log_file, "arm-travel")
    assert {f.fields["direction"] for f in travel} == {"open", "close"}


async def test_guard_wait_expired(tmp_path: Path) -> None:
    """An exit by a plate the park never knew asks for a guard; nobody answers."""
    config = gate_config(
        tmp_path,
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "exit", "cam", "plc")],
        timings={"guard_wait": "10s"},
    )
    async with RunningGate(config) as g:
        road, log = g.road(), g.log
        await road.arrive(REFUSED)
        decided = await log.wait_for(AccessDecided, lane="l1")
        assert decided.event.verdict == "confirm"
        expired = await log.wait_for(GuardWaitExpired, lane="l1", within=15.0)
        await road.set(Loop.ARMING, False)
        await log.wait_for(VehicleBackedOut, lane="l1")

    (found,) = findings(config.log_file, "guard-wait")
    assert found.seqs == (decided.seq, expired.seq)
    assert found.fields["outcome"] == "expired" and found.severity == "warning"
    # Measured from the decision's commit, a few ms after the lane began its 10 s wait.
    assert found.fields["waited_s"] >= 9.9
