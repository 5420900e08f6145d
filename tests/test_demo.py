"""``edgegate demo`` as a newcomer runs it (a process): it serves the guard's console with the
accounts it prints, vehicles needing a guard wait for one there — a guard's confirmation lets
one pass, nobody answering makes the gate give up on it — and Ctrl-C stops it cleanly with
a log that verifies. Its drivers' waiting for a guard, on the simulators alone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgegate.core.domain import PlateColour
from edgegate.core.events import (
    BarrierCommanded,
    ConsoleLogin,
    DaemonStopped,
    GateMode,
    GuardWaitExpired,
    ManualAction,
    ManualActionKind,
    ModeChanged,
    ModeSource,
    VehiclePassed,
)
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.profiles import load_profile, load_reader_profile
from edgegate.sim.plate_reader import PlateReaderSimulator
from edgegate.sim.plc import PlcSimulator
from edgegate.sim.scenario import SimLane, Vehicle
from tests.eventually import eventually
from tests.gate_harness import LogView

EDGEGATE = [sys.executable, "-m", "edgegate"]
BANNER = re.compile(
    r"Console: (?P<url>http://127\.0\.0\.1:\d+/)  guard: guard / (?P<guard>\S+)  "
    r"supervisor: chief / (?P<chief>\S+)"
)
FUZZY = "苏E1234S"  # the demo's second vehicle in: one character off the commuter's 苏E12345
UNKNOWN_LEAVING = "沪A2B468"  # the demo's second vehicle out: not in the allow-list


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Demo:
    """A running ``edgegate demo`` and what it printed so far."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.out.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def printed(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        return next((m for line in self.out if (m := pattern.search(line))), None)

    async def finish(self, within: float = 60.0) -> int:
        async with asyncio.timeout(within):
            code = await self.proc.wait()
            await self._reading
        return code


@contextlib.asynccontextmanager
async def demo(tmp_path: Path, *args: str) -> AsyncIterator[Demo]:
    proc = await asyncio.create_subprocess_exec(
        *EDGEGATE,
        "demo",
        "--no-live",
        "--log",
        str(tmp_path / "demo.db"),
        *args,
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    running = Demo(proc)
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def view_of(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}api/view") as response:
        assert response.status == 200, await response.text()
        view: dict[str, Any] = (await response.json())["view"]
        return view


def pending(view: dict[str, Any], lane: str) -> dict[str, Any] | None:
    (found,) = [x for x in view["lanes"] if x["lane"] == lane]
    result: dict[str, Any] | None = found["pending"]
    return result


async def test_the_demo_serves_the_console_where_a_guard_lets_a_waiting_vehicle_pass(
    tmp_path: Path,
) -> None:
    async with demo(tmp_path, "--port", str(free_port()), "--guard-wait", "10") as run:
        await eventually(lambda: run.printed(BANNER) is not None, "the banner", within=30)
        banner = run.printed(BANNER)
        assert banner is not None
        url = banner["url"]
        origin = url.rstrip("/")
        jar = aiohttp.CookieJar(unsafe=True)  # the session cookie of a 127.0.0.1 server
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.post(
                f"{url}login",
                data={"account": "guard", "password": banner["guard"]},
                headers={"Origin": origin},
                allow_redirects=False,
            ) as login:
                assert login.status == 303 and login.headers["Location"] == "/"
            async with http.get(f"{url}api/me") as me:
                assert me.status == 200
                who = await me.json()
            assert who["account"] == "guard" and who["role"] == "guard"
            first = await view_of(http, url)
            assert first["gate"] == "demo-gate"
            assert {x["lane"] for x in first["lanes"]} == {"in-1", "out-1"}

            seen: dict[str, dict[str, Any]] = {}

            async def waiting(lane: str, plate: str) -> bool:
                found = pending(await view_of(http, url), lane)
                if found is not None and found["decision"]["plate"] == plate:
                    seen[lane] = found
                return lane in seen

            await eventually(lambda: waiting("in-1", FUZZY), "the fuzzy plate pending", within=30)
            decision = seen["in-1"]["decision"]
            assert decision["verdict"] == "confirm" and "fuzzy-match" in decision["reasons"]
            async with http.post(
                f"{url}api/actions",
                json={
                    "action": "confirm",
                    "lane": "in-1",
                    "decision_seq": decision["seq"],
                    "reason": "the commuter's car, mud on the plate",
                },
                headers={"Origin": origin, "X-CSRF-Token": who["csrf_token"]},
            ) as answer:
                assert answer.status == 200, await answer.text()
                assert (await answer.json())["ok"] is True

            # Nobody answers for the unknown vehicle leaving: the gate gives up on it.
            await eventually(
                lambda: waiting("out-1", UNKNOWN_LEAVING), "the unknown leaving", within=30
            )
            out_seq = seen["out-1"]["decision"]["seq"]

            async def given_up() -> bool:
                now = pending(await view_of(http, url), "out-1")
                return now is None or now["decision"]["seq"] != out_seq

            await eventually(given_up, "out-1 given up on", within=30)
        run.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert await run.finish() == 0, "\n".join(run.out)

    printed = "\n".join(run.out)
    assert f"in-1   {FUZZY} waits for a guard (fuzzy-match" in printed
    assert (
        f"out-1  {UNKNOWN_LEAVING} waits for a guard (exit-unknown-vehicle): answer at {url}"
        in (printed)
    )
    assert f"out-1  {UNKNOWN_LEAVING}: no guard answered within 10 s" in printed
    with LogView(tmp_path / "demo.db") as log:
        log.verify_ok()
        assert [e.event.account for e in log.of(ConsoleLogin)] == ["guard"]
        (confirmed,) = log.of(ManualAction)
        assert confirmed.event.action is ManualActionKind.CONFIRM
        assert confirmed.event.operator == "console:guard"
        assert confirmed.event.decision_seq == decision["seq"]
        passed = log.of(VehiclePassed, where=lambda e: e.decision_seq == decision["seq"])
        assert passed and passed[0].seq > confirmed.seq, "the confirmed vehicle did not pass"
        assert log.of(GuardWaitExpired, lane="out-1", where=lambda e: e.decision_seq == out_seq)
        assert not log.of(VehiclePassed, where=lambda e: e.decision_seq == out_seq)
        assert isinstance(log.all()[-1].event, DaemonStopped)


async def test_a_taken_port_is_named_with_the_way_out(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            *EDGEGATE,
            "demo",
            "--no-live",
            "--duration",
            "30",
            "--port",
            str(port),
            "--log",
            str(tmp_path / "demo.db"),
            cwd=tmp_path,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    assert proc.returncode == 1
    said = [line for line in err.decode().splitlines() if line and not line.startswith("{")]
    assert len(said) == 1 and "Traceback" not in err.decode(), err.decode()
    assert said[0].startswith(
        f"edgegate demo: cannot serve the console on http://127.0.0.1:{port}/"
    )
    assert "address already in use" in said[0] and "--port" in said[0], said[0]
    assert b"Console:" not in out
    with LogView(tmp_path / "demo.db") as log:
        log.verify_ok()


@pytest.mark.parametrize("flag", ["--guard-password", "--supervisor-password"])
async def test_a_weak_demo_password_is_refused(flag: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *EDGEGATE,
        "demo",
        flag,
        "short",
        "--log",
        str(tmp_path / "demo.db"),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert err.decode().strip() == (
        f"edgegate demo: {flag}: the password is shorter than 10 characters"
    )
    assert not (tmp_path / "demo.db").exists()


@pytest.fixture
async def road(tmp_path: Path) -> AsyncIterator[tuple[PlcSimulator, PlateReaderSimulator]]:
    plc = PlcSimulator(load_profile("barrier-plc-guard-panel", family=BarrierPlcProfile))
    await plc.start()
    try:
        with PlateReaderSimulator(
            load_reader_profile("plate-reader-generic"), directory=tmp_path, name="cam"
        ) as reader:
            yield plc, reader
    finally:
        await plc.stop()


async def test_a_driver_waits_while_the_lane_waits_for_a_guard_and_turns_back_when_it_stops(
    road: tuple[PlcSimulator, PlateReaderSimulator],
) -> None:
    plc, reader = road
    waiting = {"now": False}
    lane = SimLane(plc, reader, patience=0.5, after_guard=0.2, guard_waiting=lambda: waiting["now"])
    waiting["now"] = True
    driving = asyncio.create_task(lane.drive(Vehicle(FUZZY, "in-1", 0.0, colour=PlateColour.BLUE)))
    await asyncio.sleep(1.5)  # three times its patience: time enough for a wrong turn back
    assert not driving.done() and plc.inputs()["arming_loop"]
    waiting["now"] = False  # the gate gave up on it (or a guard refused it)
    async with asyncio.timeout(10):
        assert await driving == "turned back after waiting for a guard"
    assert not plc.inputs()["arming_loop"]

    waiting["now"] = True
    driving = asyncio.create_task(lane.drive(Vehicle(FUZZY, "in-1", 0.0, colour=PlateColour.BLUE)))
    await eventually(lambda: lane.waited_for_guard, "the driver waiting")
    lane.leave()  # the demo is ending: it turns back at once though the lane still waits
    async with asyncio.timeout(10):
        assert await driving == "turned back after waiting for a guard"
    assert not plc.inputs()["arming_loop"]


async def test_the_fire_alarm_switches_incident_mode_on_and_off_again(tmp_path: Path) -> None:
    args = ("--port", str(free_port()), "--duration", "4", "--fire-alarm-after", "1")
    async with demo(tmp_path, *args) as run:
        assert await run.finish() == 0, "\n".join(run.out)
    printed = "\n".join(run.out)
    assert "fire alarm raised on sim-plc-in's panel" in printed
    assert "gate mode incident (source plc-input)" in printed
    with LogView(tmp_path / "demo.db") as log:
        log.verify_ok()
        changes = [(e.event.mode, e.event.source) for e in log.of(ModeChanged)]
        # The alarm clears as the demo ends: the gate stops (and starts next time) in normal.
        assert changes == [
            (GateMode.INCIDENT, ModeSource.PLC_INPUT),
            (GateMode.NORMAL, ModeSource.PLC_INPUT),
        ]
        held = log.of(BarrierCommanded, lane="out-1", where=lambda e: e.reason == "incident")
        assert held, "the evacuation lane was not opened"
