"""``find_incidents``, kind by kind, on small logs written by the real ``EventLog`` with a clock
the test moves: events days apart for the arm travel trend, a wall clock stepped by hand for
clock steps, other boot ids for reboots. Each log holds what the daemon logs in that situation
(core/lane.py, daemon/lane_runner.py, daemon/gate.py); each test checks the finding's kind,
severity, lane, proving seqs and key numbers, and the noisy kinds a case that must stay quiet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edgegate.core.domain import Direction, MatchKind, PlateColour, VehicleCategory
from edgegate.core.events import (
    AccessDecided,
    AdmissionNotOpened,
    AllowListRefused,
    AllowListTampered,
    BarrierCommand,
    BarrierCommanded,
    BarrierState,
    BarrierStateChanged,
    ClockStepMark,
    ClockStepped,
    CommandAccepted,
    CommandFailed,
    CommandRefused,
    DaemonStarted,
    DaemonStopped,
    DeviceFault,
    Event,
    FrameRejected,
    GateMode,
    Loop,
    LoopChanged,
    ManualAction,
    ManualActionKind,
    ModeChanged,
    ModeSource,
    PlateNotRead,
    PlateRead,
    RevokedCredentialAdmission,
    StopReason,
    VehiclePassed,
)
from edgegate.log import EventLog, LogReader
from edgegate.replay.incidents import Finding, Incidents, find_incidents, stored_events
from tests.tamper import tampering

TZ = ZoneInfo("Asia/Shanghai")
# Monday 2 March 2026, 09:00 at the gate.
MORNING = datetime(2026, 3, 2, 9, 0, tzinfo=TZ)
NS = 1_000_000_000
PLC = "plc-1"
READER = "cam-l1"
PLATE = "苏E12345"


class GateClock:
    """The gate's clocks, moved by the test: wall time (which NTP or a person may step), the
    monotonic clock, and the boot the monotonic clock is of."""

    def __init__(self) -> None:
        self._wall = int(MORNING.timestamp()) * NS
        self._mono = 120 * NS  # two minutes after the PC booted
        self._boot = "boot-1"

    @property
    def boot_id(self) -> str:
        return self._boot

    def wall_ns(self) -> int:
        return self._wall

    def mono_ns(self) -> int:
        return self._mono

    def advance(self, seconds: float) -> None:
        step = round(seconds * NS)
        self._wall += step
        self._mono += step

    def step_wall(self, seconds: float) -> None:
        """The wall clock is set (NTP step, a technician): monotonic time does not move."""
        self._wall += round(seconds * NS)

    def reboot(self, down_s: float, boot_id: str) -> None:
        """The PC was off for ``down_s``: a new boot, its monotonic clock from near zero."""
        self._wall += round(down_s * NS)
        self._mono = 15 * NS
        self._boot = boot_id

    def at(self, when: datetime) -> None:
        """Let time run on (both clocks) to ``when``."""
        self.advance((when.timestamp() * NS - self._wall) / NS)


@dataclass
class Gate:
    path: Path
    log: EventLog
    clock: GateClock

    async def add(self, event: Event, after: float = 0.0) -> int:
        """Log ``event`` ``after`` seconds after the previous one; its seq."""
        self.clock.advance(after)
        return await self.log.append(event)


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[Gate]:
    clock = GateClock()
    path = tmp_path / "gate.db"
    async with await EventLog.open(path, gate_id="gate-north", clock=clock) as log:
        yield Gate(path, log, clock)


def scan(path: Path) -> Incidents:
    with LogReader(path) as reader:
        return find_incidents(stored_events(reader.iter_rows()), tz=TZ)


def found(path: Path, kind: str) -> list[Finding]:
    return [f for f in scan(path).findings if f.kind == kind]


# --- what the daemon logs -------------------------------------------------------------------


def started() -> DaemonStarted:
    return DaemonStarted(
        software_version="0.9.0",
        config_hash="5f1c2e",
        config_path="/etc/edgegate/gate.toml",
        pid=812,
    )


def loop(name: Loop, occupied: bool, lane: str = "l1") -> LoopChanged:
    return LoopChanged(lane=lane, loop=name, occupied=occupied, source=PLC)


def arm(state: BarrierState, lane: str = "l1") -> BarrierStateChanged:
    return BarrierStateChanged(
        lane=lane,
        state=state,
        device=PLC,
        up_limit=state is BarrierState.UP,
        down_limit=state is BarrierState.DOWN,
    )


def command(
    what: BarrierCommand, reason: str, cause: int | None = None, lane: str = "l1"
) -> BarrierCommanded:
    return BarrierCommanded(lane=lane, command=what, reason=reason, device=PLC, cause_seq=cause)


def read(plate: str = PLATE, lane: str = "l1", reader: str = READER) -> PlateRead:
    return PlateRead(
        lane=lane,
        plate=plate,
        colour=PlateColour.YELLOW,
        confidence=0.97,
        reader=reader,
        raw=b"PLATE," + plate.encode() + b",97\r\n",
    )


def decided(read_seq: int, verdict: str = "allow", plate: str = PLATE) -> AccessDecided:
    allow = verdict == "allow"
    return AccessDecided(
        lane="l1",
        direction=Direction.ENTRY,
        plate_read=plate,
        plate=plate,
        matched_plate=plate,
        match=MatchKind.EXACT,
        verdict=verdict,
        reasons=("appointment-valid",) if allow else ("blacklisted",),
        category=VehicleCategory.HAZMAT,
        credential_kind="appointment" if allow else "blacklist",
        credential_id="A-1001" if allow else "B-17",
        allowlist_version=41,
        allowlist_age_s=30.0,
        read_seq=read_seq,
    )


async def cycle(g: Gate, open_ms: int = 2000, close_ms: int = 2500) -> dict[str, int]:
    """One admitted vehicle on lane l1 as the lane logs it: arrival, read, decision, open, the
    pass, the close; the arm takes ``open_ms`` to rise and ``close_ms`` to come down."""
    s: dict[str, int] = {}
    await g.add(loop(Loop.ARMING, True))
    s["read"] = await g.add(read(), after=0.8)
    s["decision"] = await g.add(decided(s["read"]), after=0.01)
    s["open"] = await g.add(command(BarrierCommand.OPEN, "access-allowed", s["decision"]))
    await g.add(arm(BarrierState.MOVING), after=0.3)
    s["up"] = await g.add(arm(BarrierState.UP), after=open_ms / 1000 - 0.3)
    await g.add(loop(Loop.SAFETY, True), after=1.5)
    await g.add(loop(Loop.ARMING, False), after=1.0)
    s["cleared"] = await g.add(loop(Loop.SAFETY, False), after=2.0)
    await g.add(
        VehiclePassed(
            lane="l1",
            plate=PLATE,
            direction=Direction.ENTRY,
            category=VehicleCategory.HAZMAT,
            credential_id="A-1001",
            decision_seq=s["decision"],
        )
    )
    s["close"] = await g.add(command(BarrierCommand.CLOSE, "vehicle-passed"), after=3.0)
    await g.add(arm(BarrierState.MOVING), after=0.3)
    s["down"] = await g.add(arm(BarrierState.DOWN), after=close_ms / 1000 - 0.3)
    return s


# --- clocks and boots -----------------------------------------------------------------------


async def test_a_wall_clock_step_within_one_boot_is_found_with_its_size(gate: Gate) -> None:
    await gate.add(started())
    before = await gate.add(loop(Loop.ARMING, True), after=5)
    gate.clock.step_wall(-45.0)  # NTP pulls the clock back 45 s
    after = await gate.add(loop(Loop.ARMING, False), after=1)
    ahead = await gate.add(loop(Loop.ARMING, True), after=10)
    gate.clock.step_wall(600.0)  # someone sets it 10 min ahead
    jumped = await gate.add(loop(Loop.ARMING, False), after=2)

    back, forward = found(gate.path, "clock-step")
    assert back.seqs == (before, after) and back.severity == "warning" and back.lane is None
    assert back.fields["step_s"] == -45.0
    assert forward.seqs == (ahead, jumped) and forward.fields["step_s"] == 600.0


async def test_a_clock_adjustment_under_the_threshold_is_not_a_step(gate: Gate) -> None:
    await gate.add(started())
    await gate.add(loop(Loop.ARMING, True), after=5)
    gate.clock.step_wall(1.0)  # NTP slews and steps by a second: not worth a finding
    await gate.add(loop(Loop.ARMING, False), after=1)
    gate.clock.step_wall(-1.5)
    await gate.add(loop(Loop.ARMING, True), after=1)
    assert found(gate.path, "clock-step") == []


async def test_the_daemons_clock_stepped_replaces_the_jump_and_names_decisions_carrying_it(
    gate: Gate,
) -> None:
    await gate.add(started())
    before = await gate.add(loop(Loop.ARMING, True), after=5)
    gate.clock.step_wall(-7200.0)  # date -s two hours back
    after = await gate.add(loop(Loop.ARMING, False), after=0.4)
    stepped = await gate.add(
        ClockStepped(
            offset_ns=-7200 * NS,
            wall_before=MORNING,
            wall_after=MORNING - timedelta(hours=2),
            synchronised=False,
        ),
        after=0.5,
    )
    mark = ClockStepMark(seq=stepped, offset_ns=-7200 * NS)
    seq_read = await gate.add(read(), after=3)
    carrying = await gate.add(replace(decided(seq_read), clock_step=mark), after=0.01)
    plain = await gate.add(decided(seq_read), after=60)  # after the next sync

    (step,) = found(gate.path, "clock-step")  # one step, not the jump and the event
    assert step.seqs == (before, after, stepped) and step.severity == "warning"
    assert step.fields["step_s"] == -7200.0 and step.fields["synchronised"] is False
    assert step.fields["decisions"] == [carrying] and step.fields["decisions_carrying"] == 1
    assert plain not in step.fields["decisions"]
    assert "stepped back by 120.0 min" in step.summary and "1 decision carried it" in step.summary


async def test_a_start_without_a_stop_is_a_crash_and_a_stop_then_start_a_boot_gap(
    gate: Gate,
) -> None:
    first = await gate.add(started())
    stop = await gate.add(DaemonStopped(reason=StopReason.SIGNAL), after=3600)
    gate.clock.reboot(45, "boot-2")
    second = await gate.add(started())
    last = await gate.add(loop(Loop.ARMING, True), after=20)
    gate.clock.reboot(300, "boot-3")  # power cut: nothing logged on the way down
    third = await gate.add(started())

    (gap,) = found(gate.path, "boot-gap")
    assert gap.seqs == (stop, second) and gap.severity == "notice"
    assert gap.fields["down_s"] == 45.0 and gap.fields["software_version"] == "0.9.0"
    (crash,) = found(gate.path, "crash")
    assert crash.seqs == (last, third) and crash.severity == "warning" and crash.lane is None
    assert crash.fields["down_s"] == 300.0 and crash.fields["same_boot"] is False
    # Wall time against monotonic time across boots is no clock step.
    assert found(gate.path, "clock-step") == []
    assert first == 1


async def test_a_normal_restart_is_not_a_crash(gate: Gate) -> None:
    await gate.add(started())
    await gate.add(DaemonStopped(reason=StopReason.REQUESTED, detail="upgrade"), after=600)
    gate.clock.advance(8)  # same boot: systemd restarts the new version
    await gate.add(started())
    assert found(gate.path, "crash") == []
    (gap,) = found(gate.path, "boot-gap")
    assert gap.fields["down_s"] == 8.0


async def test_a_crash_is_measured_from_the_last_event_before_it_not_from_start_up_events(
    gate: Gate,
) -> None:
    """A restarted daemon opens its allow-list before it logs daemon.started: a tampered
    list is logged first. The time down is from the crashed run's last event."""
    await gate.add(started())
    last = await gate.add(loop(Loop.ARMING, True), after=20)
    gate.clock.reboot(300, "boot-2")
    await gate.add(AllowListTampered(version=41, problem="seal mismatch", entries=120, left_out=1))
    restart = await gate.add(started(), after=0.2)

    (crash,) = found(gate.path, "crash")
    assert crash.seqs == (last, restart)
    assert crash.fields["down_s"] == 300.2 and crash.fields["same_boot"] is False


# --- the arm --------------------------------------------------------------------------------


async def test_an_arm_getting_slower_day_by_day_is_a_trend_and_a_slow_travel_a_finding(
    gate: Gate,
) -> None:
    await gate.add(started())
    # Three vehicles a day for four days; the daily median open travel grows 100 ms a day.
    days = {0: [1950, 2000, 2600], 1: [2100, 2050, 2700], 2: [2150, 2200, 2800], 3: [2250, 2300]}
    days[3].append(4600)  # on the fourth day one opening took 4.6 s
    slow: dict[str, int] = {}
    for day, travels in days.items():
        gate.clock.at(MORNING + timedelta(days=day))
        for ms in travels:
            slow = await cycle(gate, open_ms=ms)
            await gate.add(loop(Loop.ARMING, False), after=60)

    (trend,) = [f for f in found(gate.path, "arm-travel") if f.fields["direction"] == "open"]
    assert trend.severity == "warning" and trend.lane == "l1"
    assert trend.fields["slope_ms_per_day"] == 100.0 and trend.fields["travels"] == 12
    assert [d["median_ms"] for d in trend.fields["daily_median_ms"]] == [2000, 2100, 2200, 2300]
    assert [d["day"] for d in trend.fields["daily_median_ms"]] == [
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
        "2026-03-05",
    ]
    (closing,) = [f for f in found(gate.path, "arm-travel") if f.fields["direction"] == "close"]
    assert closing.severity == "info" and closing.fields["slope_ms_per_day"] == 0.0

    (too_slow,) = found(gate.path, "slow-arm")
    assert too_slow.severity == "warning" and too_slow.lane == "l1"
    assert too_slow.seqs == (slow["open"], slow["up"])
    assert too_slow.fields["direction"] == "open" and too_slow.fields["day"] == "2026-03-05"
    assert too_slow.fields["count"] == 1 and too_slow.fields["worst_ms"] == 4600
    assert too_slow.fields["median_ms"] == 2300


async def test_a_normal_arm_is_not_slow_and_two_days_are_no_trend(gate: Gate) -> None:
    await gate.add(started())
    for day, ms in ((0, 2000), (1, 3000)):  # 1 s slower, but over two days only
        gate.clock.at(MORNING + timedelta(days=day))
        await cycle(gate, open_ms=ms, close_ms=3900)
    assert found(gate.path, "slow-arm") == []
    assert found(gate.path, "arm-left-up") == []
    (opening,) = [f for f in found(gate.path, "arm-travel") if f.fields["direction"] == "open"]
    assert opening.severity == "info" and opening.fields["slope_ms_per_day"] == 1000.0


async def test_a_closing_arm_raised_again_for_the_safety_loop(gate: Gate) -> None:
    await gate.add(started())
    s = await cycle(gate)
    await gate.add(loop(Loop.ARMING, True), after=30)
    close = await gate.add(command(BarrierCommand.CLOSE, "pass-timeout"), after=60)
    await gate.add(arm(BarrierState.MOVING), after=0.3)
    safety = await gate.add(loop(Loop.SAFETY, True), after=0.5)
    reopen = await gate.add(command(BarrierCommand.OPEN, "safety-loop-occupied-while-closing"))

    (reversal,) = found(gate.path, "safety-reversal")
    assert reversal.severity == "warning" and reversal.lane == "l1"
    assert reversal.seqs == (close, safety, reopen)
    assert reversal.fields["close_seq"] == close and reversal.fields["safety_seq"] == safety
    assert s["close"] < close


async def test_an_admitted_vehicle_the_arm_never_rose_for(gate: Gate) -> None:
    await gate.add(started())
    await gate.add(loop(Loop.ARMING, True))
    read_seq = await gate.add(read(), after=0.8)
    decision = await gate.add(decided(read_seq))
    await gate.add(command(BarrierCommand.OPEN, "access-allowed", decision))
    missed = await gate.add(
        AdmissionNotOpened(
            lane="l1",
            plate=PLATE,
            decision_seq=decision,
            detail="the arm did not rise within the open travel time",
        ),
        after=6,
    )
    await gate.add(
        DeviceFault(
            lane="l1",
            device=PLC,
            code="barrier-open-timeout",
            message="up limit not reached within the open travel time",
        )
    )
    (finding,) = found(gate.path, "not-opened-for")
    assert finding.severity == "warning" and finding.lane == "l1"
    assert finding.seqs == (decision, missed) and finding.fields["plate"] == PLATE


async def test_a_refused_vehicle_through_a_lane_held_open(gate: Gate) -> None:
    await gate.add(started())
    hold = await gate.add(
        ManualAction(lane="l1", action=ManualActionKind.OPEN, operator="guard-li", reason="works")
    )
    await gate.add(command(BarrierCommand.OPEN, "manual-open", hold))
    await gate.add(arm(BarrierState.UP), after=2)
    await gate.add(loop(Loop.ARMING, True), after=30)
    read_seq = await gate.add(read("苏E66666"), after=0.8)
    refused = await gate.add(decided(read_seq, "deny", "苏E66666"))
    await gate.add(loop(Loop.SAFETY, True), after=2)
    await gate.add(loop(Loop.ARMING, False), after=1)
    await gate.add(loop(Loop.SAFETY, False), after=2)
    passed = await gate.add(
        VehiclePassed(
            lane="l1",
            plate="苏E66666",
            direction=Direction.ENTRY,
            category=VehicleCategory.HAZMAT,
            credential_id="B-17",
            decision_seq=refused,
            unauthorised=True,
        )
    )
    (finding,) = found(gate.path, "unauthorised-pass")
    assert finding.severity == "warning" and finding.lane == "l1"
    assert finding.seqs == (refused, passed) and finding.fields["plate"] == "苏E66666"
    # Held open by a guard: the arm standing up is no "left up".
    assert found(gate.path, "arm-left-up") == []


async def test_an_arm_left_up_until_the_daemon_stopped_is_found_on_its_lane(gate: Gate) -> None:
    """The stop (a gate-wide event) ends the arm's time up: the finding is the lane's."""
    await gate.add(started())
    s = await cycle(gate)
    reopen = await gate.add(command(BarrierCommand.OPEN, "recovered-open"), after=30)
    up = await gate.add(arm(BarrierState.UP), after=2)
    stop = await gate.add(DaemonStopped(reason=StopReason.SIGNAL), after=400)

    (left,) = found(gate.path, "arm-left-up")
    assert left.lane == "l1" and left.severity == "warning"
    assert left.seqs == (s["cleared"], reopen, up, stop)
    assert left.fields["up_s"] == 400.0


async def test_a_guard_wait_unanswered_at_the_end_of_the_log_is_its_own_lanes(
    gate: Gate,
) -> None:
    await gate.add(started())
    await gate.add(loop(Loop.ARMING, True))
    read_seq = await gate.add(read(), after=0.8)
    pending = await gate.add(decided(read_seq, "confirm"))
    await gate.add(loop(Loop.ARMING, True, lane="l2"), after=20)  # the log ends on lane l2

    (wait,) = found(gate.path, "guard-wait")
    assert wait.lane == "l1" and wait.seqs == (pending,)
    assert wait.fields["outcome"] == "unanswered" and wait.fields["waited_s"] == 20.0


# --- people, central, modes -----------------------------------------------------------------


async def test_incident_mode_on_and_off_with_its_source_and_duration(gate: Gate) -> None:
    await gate.add(started())
    on = await gate.add(
        ModeChanged(
            mode=GateMode.INCIDENT,
            previous=GateMode.NORMAL,
            source=ModeSource.PLC_INPUT,
            reason="incident alarm input active",
        ),
        after=60,
    )
    await gate.add(command(BarrierCommand.OPEN, "incident", on))
    await gate.add(arm(BarrierState.UP), after=2)
    off = await gate.add(
        ModeChanged(
            mode=GateMode.NORMAL,
            previous=GateMode.INCIDENT,
            source=ModeSource.LOCAL,
            operator="sup-zhao",
            reason="drill over",
        ),
        after=1198,
    )
    await gate.add(command(BarrierCommand.CLOSE, "released"), after=3)
    again = await gate.add(
        ModeChanged(
            mode=GateMode.INCIDENT,
            previous=GateMode.NORMAL,
            source=ModeSource.CENTRAL,
            operator="ops-wang",
            reason="chlorine leak",
            command_id="cmd-77",
        ),
        after=600,
    )

    first, still = found(gate.path, "incident-mode")
    assert first.seqs == (on, off) and first.severity == "warning" and first.lane is None
    assert first.fields["duration_s"] == 1200.0
    assert first.fields["source"] == "plc-input" and first.fields["off_source"] == "local"
    assert still.seqs == (again,) and still.fields["duration_s"] is None
    assert still.fields["source"] == "central" and still.fields["operator"] == "ops-wang"
    assert "still on" in still.summary
    assert found(gate.path, "arm-left-up") == []  # held open by the incident


async def test_central_commands_accepted_refused_and_failed(gate: Gate) -> None:
    await gate.add(started())
    issued = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    accepted = await gate.add(
        CommandAccepted(
            lane="l1",
            command_id="cmd-1",
            action="open-lane",
            operator="ops-wang",
            reason="crane delivery",
            issued_at=issued,
            expires_at=issued + timedelta(minutes=5),
            key_id="central-2026",
        )
    )
    refused = await gate.add(
        CommandRefused(
            code="forged",
            message="signature does not verify",
            command_id="cmd-2",
            action="incident-off",
            key_id="central-2026",
            payload=b"{...}",
        ),
        after=30,
    )
    typo = await gate.add(
        CommandAccepted(
            command_id="cmd-3",
            action="open-lane",
            operator="ops-wang",
            reason="typo",
            issued_at=issued,
            expires_at=issued + timedelta(minutes=5),
            key_id="central-2026",
        ),
        after=30,
    )
    failed = await gate.add(
        CommandFailed(
            command_id="cmd-3", action="open-lane", code="unknown-lane", message="no lane l9"
        )
    )

    ok, bad, carried, broken = found(gate.path, "central-command")
    assert ok.seqs == (accepted,) and ok.severity == "notice" and ok.lane == "l1"
    assert ok.fields["outcome"] == "accepted" and ok.fields["action"] == "open-lane"
    assert bad.seqs == (refused,) and bad.severity == "warning"
    assert bad.fields["outcome"] == "refused" and bad.fields["code"] == "forged"
    assert carried.seqs == (typo,) and carried.fields["command_id"] == "cmd-3"
    assert broken.seqs == (typo, failed) and broken.fields["outcome"] == "failed"
    assert broken.fields["code"] == "unknown-lane" and broken.fields["command_id"] == "cmd-3"


async def test_a_guards_manual_actions(gate: Gate) -> None:
    await gate.add(started())
    hold = await gate.add(
        ManualAction(
            lane="l1", action=ManualActionKind.OPEN, operator="guard-li", reason="fire brigade"
        )
    )
    await gate.add(command(BarrierCommand.OPEN, "manual-open", hold))
    await gate.add(arm(BarrierState.UP), after=2)
    release = await gate.add(
        ManualAction(lane="l1", action=ManualActionKind.RELEASE, operator="guard-li", reason=""),
        after=900,
    )
    await gate.add(command(BarrierCommand.CLOSE, "released", release), after=3)
    await gate.add(arm(BarrierState.DOWN), after=2.5)

    opened, released = found(gate.path, "manual-action")
    assert opened.seqs == (hold,) and opened.severity == "notice" and opened.lane == "l1"
    assert opened.fields == {"action": "open", "operator": "guard-li", "reason": "fire brigade"}
    assert released.seqs == (release,) and released.fields["action"] == "release"
    assert found(gate.path, "arm-left-up") == []


# --- devices --------------------------------------------------------------------------------


def rejected(count: int, kinds: tuple[str, ...], device: str = READER) -> FrameRejected:
    return FrameRejected(
        lane="l1",
        device=device,
        reason=f"{kinds[0]}: frame does not parse",
        data=b"\x00\xffPLATE,,\r\n",
        truncated=True,
        count=count,
        kinds=kinds,
        size=count * 12,
    )


async def test_bursts_of_rejected_frames_per_device(gate: Gate) -> None:
    await gate.add(started())
    first = await gate.add(rejected(40, ("bad-checksum",)), after=10)
    second = await gate.add(rejected(50, ("bad-checksum", "garbage")), after=1)
    third = await gate.add(rejected(30, ("bad-checksum",)), after=1)
    other = await gate.add(rejected(3, ("garbage",), device="cam-l2"), after=0.5)
    later = await gate.add(rejected(2, ("too-long",)), after=60)  # another burst

    burst, small, lone = found(gate.path, "rejected-frames")
    assert burst.seqs == (first, second, third) and burst.severity == "warning"
    assert burst.fields["frames"] == 120 and burst.fields["events"] == 3
    assert burst.fields["kinds"] == ["bad-checksum", "garbage"]
    assert burst.fields["duration_s"] == 2.0 and burst.lane == "l1"
    assert small.seqs == (other,) and small.fields["device"] == "cam-l2"
    assert small.severity == "notice" and small.fields["frames"] == 3
    assert lone.seqs == (later,) and lone.fields["frames"] == 2


async def test_plates_not_read_per_reader_and_hour(gate: Gate) -> None:
    await gate.add(started())
    await gate.add(read(), after=60)  # the lane's reader, named in the findings
    await gate.add(read("苏E20000", lane="l2", reader="cam-l2"))
    misses = []
    for minute in (5, 20, 50):
        gate.clock.at(MORNING + timedelta(minutes=minute))
        await gate.add(loop(Loop.ARMING, True))
        misses.append(await gate.add(PlateNotRead(lane="l1", waited_ms=5000), after=5))
        await gate.add(loop(Loop.ARMING, False), after=20)
    gate.clock.at(MORNING + timedelta(minutes=70))
    next_hour = await gate.add(PlateNotRead(lane="l1", waited_ms=5000))
    other_lane = await gate.add(PlateNotRead(lane="l2", waited_ms=5000), after=1)

    nine, ten, l2 = found(gate.path, "plates-not-read")
    assert nine.lane == "l1" and nine.severity == "warning"
    assert nine.seqs == tuple(misses) and nine.fields["count"] == 3
    assert nine.fields["reader"] == READER and nine.fields["hour"] == "2026-03-02T09:00:00+08:00"
    assert ten.seqs == (next_hour,) and ten.severity == "notice" and ten.fields["count"] == 1
    assert ten.fields["hour"] == "2026-03-02T10:00:00+08:00"
    assert l2.seqs == (other_lane,) and l2.lane == "l2" and l2.fields["reader"] == "cam-l2"


# --- allow-lists and credentials ------------------------------------------------------------


async def test_a_tampered_and_a_refused_allowlist(gate: Gate) -> None:
    tampered = await gate.add(
        AllowListTampered(
            version=41,
            problem="entry does not match the seal",
            credential_kind="appointment",
            credential_id="A-1001",
            plate=PLATE,
            entries=119,
            left_out=1,
        )
    )
    await gate.add(started())
    forged = await gate.add(
        AllowListRefused(
            code="forged",
            message="signature does not verify",
            current_version=41,
            key_id="central-2026",
            payload_size=2048,
            payload_sha256="ab" * 32,
        ),
        after=60,
    )
    stale = await gate.add(
        AllowListRefused(
            code="stale",
            message="version 40 is not newer than 41",
            current_version=41,
            publication_kind="snapshot",
            version=40,
            key_id="central-2026",
            payload_size=4096,
            payload_sha256="cd" * 32,
        ),
        after=60,
    )

    (finding,) = found(gate.path, "allowlist-tampered")
    assert finding.seqs == (tampered,) and finding.severity == "critical"
    assert finding.fields["credential_id"] == "A-1001" and finding.fields["version"] == 41
    bad, old = found(gate.path, "allowlist-refused")
    assert bad.seqs == (forged,) and bad.severity == "warning" and bad.fields["code"] == "forged"
    assert old.seqs == (stale,) and old.severity == "notice" and old.fields["version"] == 40


async def test_an_admission_on_a_revoked_credential(gate: Gate) -> None:
    await gate.add(started())
    s = await cycle(gate)
    at = datetime.fromtimestamp(gate.clock.wall_ns() / NS, UTC)
    revoked = await gate.add(
        RevokedCredentialAdmission(
            lane="l1",
            decision_seq=s["decision"],
            plate=PLATE,
            credential_kind="appointment",
            credential_id="A-1001",
            decided_at=at,
            revoked_at=at - timedelta(hours=1),
            certain=True,
            basis="removed",
            allowlist_version=42,
        ),
        after=600,
    )
    (finding,) = found(gate.path, "revoked-admission")
    assert finding.seqs == (s["decision"], revoked) and finding.severity == "critical"
    assert finding.lane == "l1" and finding.fields["credential_id"] == "A-1001"
    assert finding.fields["certain"] is True and finding.fields["basis"] == "removed"


# --- an edited or unreadable log ------------------------------------------------------------


async def test_a_deleted_event_and_a_rewritten_hash_break_the_log(gate: Gate) -> None:
    await gate.add(started())
    s = await cycle(gate)
    await gate.log.aclose()
    with tampering(gate.path) as db:
        db.execute("DELETE FROM events WHERE seq = ?", (s["open"],))  # hide the open command
        db.execute("UPDATE events SET hash = ? WHERE seq = ?", (b"\x01" * 32, s["close"]))

    gap, relinked = found(gate.path, "log-discontinuity")
    assert gap.seqs == (s["decision"], s["open"] + 1) and gap.severity == "critical"
    assert gap.fields["problem"] == f"seq {s['open'] + 1} follows seq {s['decision']}"
    assert relinked.seqs == (s["close"], s["close"] + 1)
    assert "previous hash" in relinked.fields["problem"]


async def test_an_event_this_software_cannot_read(gate: Gate) -> None:
    await gate.add(started())
    s = await cycle(gate)
    await gate.log.aclose()
    # A decision written by a newer version, and one whose payload is damaged.
    with tampering(gate.path) as db:
        db.execute("UPDATE events SET version = 9 WHERE seq = ?", (s["decision"],))
        db.execute("UPDATE events SET data = ? WHERE seq = ?", (b"\x93\x01\x02", s["up"]))

    newer, damaged = found(gate.path, "undecodable")
    assert newer.seqs == (s["decision"],) and newer.severity == "critical"
    assert newer.fields["type"] == "access.decided" and "newer" in newer.fields["problem"]
    assert damaged.seqs == (s["up"],) and damaged.fields["type"] == "barrier.state"
