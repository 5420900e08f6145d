"""``edgegate demo``: a whole gate on one machine — simulators, the real daemon and drivers, the
demo allow-list (``edgegate.sim.demo``), vehicles driving through, the guard's console on
127.0.0.1 with a demo guard and supervisor account, and a live view."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edgegate.console.accounts import Account, AccountsError, hash_password, write_accounts
from edgegate.console.desk import Role
from edgegate.core.events import (
    AccessDecided,
    Event,
    GateMode,
    GuardWaitExpired,
    ManualAction,
    ModeChanged,
    StopReason,
)
from edgegate.core.lane import LaneState
from edgegate.daemon.gate import Gate
from edgegate.daemon.lane_runner import LaneRunner
from edgegate.sim.demo import (
    DEMO_GUARD_WAIT_S,
    DEMO_PORT,
    demo_accounts_file,
    demo_allowlist,
    demo_config,
    demo_traffic,
)
from edgegate.sim.scenario import SimLane

#: The demo's console accounts.
GUARD, SUPERVISOR = "guard", "chief"
#: How long the demo's last vehicles get to leave their lanes once its time is up.
_LAST_VEHICLES_S = 15.0
#: How long the fire alarm of ``--fire-alarm-after`` stays raised.
_ALARM_S = 30.0
#: The PLC whose panel the fire alarm of ``--fire-alarm-after`` is wired to.
_ALARM_PLC = "sim-plc-in"
# Passwords a person can read off the screen and type: no 0/O, 1/l/I.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``edgegate demo``'s flags set; passwords left None are generated per run."""

    port: int = DEMO_PORT
    guard_password: str | None = None
    supervisor_password: str | None = None
    guard_wait_s: int = DEMO_GUARD_WAIT_S
    fire_alarm_after: float | None = None  # seconds after the start; None: no alarm


def new_password() -> str:
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(3))


class DemoView:
    """What an operator's screen shows: lanes, loops, barriers, who waits for a guard, recent
    decisions and guards' answers. Without a live screen (``notices``), what concerns a guard
    is printed as it happens."""

    def __init__(
        self, gate: Gate, url: str, console: Console, *, notices: bool, banner: str = ""
    ) -> None:
        self.gate = gate
        self.url = url
        self.banner = banner  # the console's URL and accounts, kept in sight
        self.console = console
        self.notices = notices
        self.decisions: deque[str] = deque(maxlen=8)
        self.outcomes: deque[str] = deque(maxlen=6)
        for runner in gate.lanes.values():
            runner.observers.append(self._observe)
        self.normal = asyncio.Event()  # set while the gate's mode is normal
        self._mode_changed(gate.mode)
        if gate.control is not None:
            gate.control.observers.append(lambda event, _seq: self._mode_changed(event.mode, event))

    def _mode_changed(self, mode: GateMode, event: ModeChanged | None = None) -> None:
        if mode is GateMode.NORMAL:
            self.normal.set()
        else:
            self.normal.clear()
        if event is not None:
            self.note(f"gate mode {event.mode} (source {event.source})", notice=True)

    def note(self, line: str, *, notice: bool = False) -> None:
        when = datetime.now(UTC).strftime("%H:%M:%S")
        self.decisions.append(f"{when} {line}")
        if notice and self.notices:
            self.console.print(f"{when} {line}", highlight=False, markup=False, soft_wrap=True)
            self.console.file.flush()

    def _observe(self, runner: LaneRunner, event: Event | None) -> None:
        lane = f"{runner.setup.lane_id:<6}"
        if isinstance(event, AccessDecided):
            reasons = ", ".join(event.reasons)
            self.note(f"{lane} {event.plate:<9} {event.verdict:<8} {reasons}")
            if event.verdict == "confirm":
                self.note(
                    f"{lane} {event.plate} waits for a guard ({reasons}): answer at {self.url}",
                    notice=True,
                )
        elif isinstance(event, ManualAction):
            said = f" ({event.reason})" if event.reason else ""
            self.note(f"{lane} {event.action} by {event.operator}{said}", notice=True)
        elif isinstance(event, GuardWaitExpired):
            self.note(
                f"{lane} {event.plate or '-'}: no guard answered within "
                f"{event.waited_ms // 1000} s; the lane gave up on it",
                notice=True,
            )

    def render(self) -> Group:
        gate = self.gate
        table = Table(title=f"edgegate demo — gate {gate.config.gate.id} — mode {gate.mode}")
        for col in ("lane", "dir", "state", "arming", "safety", "exit", "arm", "last decision"):
            table.add_column(col)
        for lane_cfg in gate.config.lanes:
            runner = gate.lanes[lane_cfg.id]
            sim = gate.sims.plcs.get(lane_cfg.barrier)
            loops = sim.inputs() if sim else {}
            arm = f"{sim.position:.0%} up" if sim else "?"
            last = runner.last_decision
            table.add_row(
                lane_cfg.id,
                str(lane_cfg.direction),
                str(runner.state),
                "■" if loops.get("arming_loop") else "·",
                "■" if loops.get("safety_loop") else "·",
                "■" if loops.get("exit_loop") else "·",
                arm,
                "-" if last is None else f"{last.plate} {last.verdict}",
            )
        waiting = Table(title=f"waiting for a guard — answer at {self.url}", show_header=False)
        waiting.add_column("vehicle")
        if gate.desk is not None:
            now_ns = gate.clock.wall_ns()
            for lane in gate.desk.view().lanes:
                if lane.pending is None:
                    continue
                decision = lane.pending.decision
                waited = max(0, now_ns - lane.pending.waiting_since_ns) // 1_000_000_000
                left = max(0, lane.pending.give_up_at_ns - now_ns) // 1_000_000_000
                waiting.add_row(
                    f"{lane.lane:<6} {decision.plate:<9} {', '.join(decision.reasons)}"
                    f" — waiting {waited} s, the gate gives up in {left} s"
                )
        if not waiting.row_count:
            waiting.add_row("nobody")
        recent = Table(title="decisions and guards' answers", show_header=False)
        recent.add_column("decision")
        for line in self.decisions:
            recent.add_row(Text(line))
        outcomes = Table(title="vehicles", show_header=False)
        outcomes.add_column("vehicle")
        for line in self.outcomes:
            outcomes.add_row(Text(line))
        return Group(Text(self.banner), table, waiting, recent, outcomes)


async def run_demo(
    duration: float | None,
    log_path: Path,
    *,
    live: bool | None = None,
    options: DemoOptions | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the demo gate for ``duration`` seconds, or until ``stop`` is set (``None``: until
    ``stop``); returns an exit code. The gate's log holds everything and verifies after."""
    options = options or DemoOptions()
    stop = stop or asyncio.Event()
    console = Console(stderr=False)
    passwords = {
        GUARD: options.guard_password or new_password(),
        SUPERVISOR: options.supervisor_password or new_password(),
    }
    accounts_file = demo_accounts_file(log_path)
    # A failure here is told after the gate has opened its log: a log that cannot be opened
    # (a full disk, a damaged file) is what a person must hear of first.
    accounts_problem = await asyncio.to_thread(_write_demo_accounts, accounts_file, passwords)
    config = demo_config(
        log_path, accounts_file=accounts_file, port=options.port, guard_wait_s=options.guard_wait_s
    )
    assert config.http is not None
    url = f"{config.http.url}/"
    gate = Gate(config, config_path="<demo>")
    gate_stop = asyncio.Event()
    runner = await start_gate(gate, gate_stop)
    if runner is None:
        return 1
    problem = accounts_problem or _console_problem(gate)
    if problem is not None:
        print(f"edgegate demo: {problem}", file=sys.stderr)
        gate_stop.set()
        await runner
        return 1
    assert gate.allowlist is not None
    now = datetime.now(UTC).replace(microsecond=0)
    if gate.allowlist.view.version == 0:
        await gate.allowlist.replace(demo_allowlist(now), source="demo")

    def waiting_for_guard(lane_id: str) -> bool:
        return gate.lanes[lane_id].state is LaneState.AWAITING_GUARD

    lanes = {
        lane.id: SimLane(
            gate.sims.plcs[lane.barrier],
            gate.sims.readers[lane.plate_reader],
            guard_waiting=functools.partial(waiting_for_guard, lane.id),
        )
        for lane in config.lanes
    }
    interactive = sys.stdout.isatty() if live is None else live
    banner = (
        f"Console: {url}  guard: {GUARD} / {passwords[GUARD]}  "
        f"supervisor: {SUPERVISOR} / {passwords[SUPERVISOR]}"
    )
    view = DemoView(gate, url, console, notices=not interactive, banner=banner)
    # Frames written before a reader's port is open are lost (opening flushes the input).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await asyncio.gather(*(r.wait_connected() for r in gate.readers.values()))
    until = f"for {duration:g} s" if duration is not None else "until Ctrl-C"
    console.print(
        f"{banner}\n"
        f"Vehicles that need a guard wait up to {options.guard_wait_s} s for an answer there. "
        f"The demo runs {until}; its log is {log_path}.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    console.file.flush()
    ending = asyncio.Event()
    traffic = asyncio.create_task(_traffic(lanes, view, ending))
    alarm = (
        None
        if options.fire_alarm_after is None
        else asyncio.create_task(_fire_alarm(gate, view, options.fire_alarm_after, ending))
    )
    stopping = asyncio.create_task(stop.wait())
    try:
        if interactive:
            with Live(view.render(), console=console, refresh_per_second=4) as screen:
                await _until(runner, stopping, duration, lambda: screen.update(view.render()))
        else:
            await _until(runner, stopping, duration, None)
    finally:
        stopping.cancel()
        if not runner.done():
            console.print("Stopping: the vehicles in the lanes leave first…", highlight=False)
            console.file.flush()
        # No new vehicle; those in a lane drive on out of it (those waiting for a guard turn
        # back), so the gate stops with its lanes at rest rather than waiting out its drain
        # time for a vehicle frozen mid-way.
        ending.set()
        for lane in lanes.values():
            lane.leave()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_LAST_VEHICLES_S):
                await asyncio.shield(asyncio.gather(traffic, *([alarm] if alarm else [])))
        for task in (traffic, alarm):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        gate_stop.set()
        await runner
    for line in view.decisions:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(f"event log: {log_path}", highlight=False, markup=False)
    return 0


async def start_gate(gate: Gate, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """Run ``gate`` until ``stop``: its task once it has started; None if it stopped at once
    without an exception (what stopped it is raised)."""
    runner = asyncio.create_task(gate.run(stop, reason=StopReason.REQUESTED))
    started = asyncio.create_task(gate.started.wait())
    await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        started.cancel()
        runner.result()  # raises what stopped the gate
        return None
    return runner


def _write_demo_accounts(path: Path, passwords: dict[str, str]) -> str | None:
    """Write the demo's accounts file; what went wrong, or None."""
    roles = {GUARD: Role.GUARD, SUPERVISOR: Role.SUPERVISOR}
    accounts = {
        name: Account(name, roles[name], hash_password(password))
        for name, password in passwords.items()
    }
    try:
        write_accounts(path, accounts)
    except AccountsError as exc:
        return f"the console's accounts: {exc}"
    return None


def _console_problem(gate: Gate) -> str | None:
    """Why the gate does not serve the demo's console, or None."""
    http = gate.config.http
    assert http is not None
    web = gate.web
    if web is not None and web.server is not None and web.console is not None:
        return None
    why = web.problem if web is not None and web.problem else "see the log lines above"
    return (
        f"cannot serve the console on {http.url}/ ({why}); is another demo running? "
        f"Choose another port with --port"
    )


async def _until(
    runner: asyncio.Task[None],
    stopping: asyncio.Task[bool],
    duration: float | None,
    refresh: Callable[[], None] | None,
) -> None:
    """Wait for the end: ``duration`` elapsed, ``stopping`` done, or the gate stopped."""
    loop = asyncio.get_running_loop()
    end = None if duration is None else loop.time() + duration
    while not (runner.done() or stopping.done()):
        left = None if end is None else end - loop.time()
        if left is not None and left <= 0:
            return
        if refresh is not None:
            refresh()
            left = 0.25 if left is None else min(left, 0.25)
        await asyncio.wait({runner, stopping}, timeout=left, return_when=asyncio.FIRST_COMPLETED)


async def _fire_alarm(gate: Gate, view: DemoView, after: float, ending: asyncio.Event) -> None:
    """The park's fire alarm, wired to the entry PLC's panel: raised ``after`` seconds, held
    for a while (incident mode: the evacuation lanes open and hold), then cleared."""
    plc = gate.sims.plcs[_ALARM_PLC]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(after):
            await ending.wait()
    if ending.is_set():
        return
    view.note(f"fire alarm raised on {_ALARM_PLC}'s panel for {_ALARM_S:g} s", notice=True)
    plc.set_input("incident_alarm", True)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_ALARM_S):
                await ending.wait()
    finally:
        plc.set_input("incident_alarm", False)
        view.note("fire alarm cleared", notice=True)
    # The alarm switched incident mode on, its clearing switches it off: wait for that, so
    # the gate does not stop (and start again next time) in incident mode.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await view.normal.wait()


async def _traffic(lanes: dict[str, SimLane], view: DemoView, ending: asyncio.Event) -> None:
    """Each lane's traffic, vehicle after vehicle, until ``ending`` (the vehicle in a lane
    then finishes its way)."""

    async def lane_traffic(lane_id: str, lane: SimLane) -> None:
        while not ending.is_set():
            for kind, vehicle in demo_traffic(lane_id):
                if ending.is_set():
                    return
                outcome = await lane.drive(vehicle)
                view.outcomes.append(f"{lane_id:<6} {vehicle.plate:<9} {kind}: {outcome}")
                await asyncio.sleep(0.3)

    async with asyncio.TaskGroup() as tg:
        for lane_id, lane in lanes.items():
            tg.create_task(lane_traffic(lane_id, lane))
