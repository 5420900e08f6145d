"""``edgegate demo --park`` as a newcomer runs it (a process): two gates, a real mosquitto the
demo starts and stops, and central in the demo's process. Central stores both gates' events,
the gates run on the allow-list central signed, a vehicle that entered at gate-a and left at
gate-b is not inside at the end; without mosquitto, central pulls the gates' logs instead."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import aiohttp
import pytest

from edgegate.central.store import open_store
from edgegate.cli.main import main
from edgegate.core.domain import Direction
from edgegate.core.events import AllowListUpdated, VehiclePassed
from edgegate.sync.signing import key_id, load_public_key
from tests.eventually import eventually
from tests.gate_harness import LogView
from tests.services.mosquitto import free_port
from tests.test_demo import EDGEGATE, Demo

COMMUTER = "苏E12345"  # the park's first trip: in at gate-a, out at gate-b
PARK_API = re.compile(r"Bearer (?P<token>\S+)' (?P<url>http://127\.0\.0\.1:\d+/api/v1/presence)")
DASHBOARD = re.compile(
    r"Dashboard: (?P<url>http://127\.0\.0\.1:\d+)/  operator: control / (?P<password>\S+)"
)


async def run_park(tmp_path: Path, *args: str, duration: int = 30) -> tuple[Demo, Path]:
    """Start ``edgegate demo --park`` with its files in ``tmp_path/park``."""
    directory = tmp_path / "park"
    console_port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *EDGEGATE,
        "demo",
        "--park",
        "--no-live",
        "--dir",
        str(directory),
        "--duration",
        str(duration),
        "--port",
        str(console_port),
        "--central-port",
        str(free_port()),
        *args,
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return Demo(proc), directory


async def finish(run: Demo) -> str:
    """Wait for the park's clean end; its stderr (no traceback in it)."""
    assert run.proc.stderr is not None
    err_task = asyncio.create_task(run.proc.stderr.read())
    code = await run.finish(within=120)
    err = (await err_task).decode("utf-8", "replace")
    assert code == 0, "\n".join(run.out) + err[-3000:]
    assert "Traceback" not in err
    return err


def check_park(directory: Path, *, whole_logs: bool) -> None:
    """Central holds both gates' logs, verified (``whole_logs``: to their heads; else to
    their last passage at least: a pull misses what a gate logs as it stops); both gates
    applied central's signed list; the commuter that entered at gate-a and left at gate-b
    is not inside."""
    central_key = key_id(load_public_key(directory / "central" / "central.pub"))
    heads: dict[str, int] = {}
    last_passed: dict[str, int] = {}
    for gate in ("gate-a", "gate-b"):
        with LogView(directory / f"{gate}.db") as log:
            heads[gate] = log.stored()[-1].seq
            (update,) = log.of(AllowListUpdated)
            assert update.event.source == f"central:{central_key}"
            passages = log.of(VehiclePassed)
            passed = [(p.event.plate, p.event.direction) for p in passages]
            last_passed[gate] = passages[-1].seq
        if gate == "gate-a":
            assert (COMMUTER, Direction.ENTRY) in passed
        else:
            assert (COMMUTER, Direction.EXIT) in passed
    with open_store(f"sqlite:///{directory / 'central.db'}") as store:
        stored = {g: h[0] for g, h in store.heads().items()}
        assert stored.keys() == heads.keys()
        if whole_logs:
            assert stored == heads
        else:
            assert all(stored[g] >= last_passed[g] for g in heads), (stored, last_passed)
        assert all(store.verify(g) is None for g in heads)
        inside = store.presence()
        assert COMMUTER not in {v.plate for v in inside}
        # The rest of the park's traffic is there too: dangerous vehicles came and went.
        assert store.count("gate-a") > 20 and store.count("gate-b") > 20


async def test_the_park_with_a_broker_stores_both_gates_at_central(tmp_path: Path) -> None:
    run, directory = await run_park(tmp_path)
    try:
        await eventually(lambda: run.printed(DASHBOARD) is not None, "the banner", within=60)
        api, dashboard = run.printed(PARK_API), run.printed(DASHBOARD)
        assert api is not None and dashboard is not None
        base = dashboard["url"]
        jar = aiohttp.CookieJar(unsafe=True)  # the session cookie of a 127.0.0.1 server
        async with aiohttp.ClientSession(cookie_jar=jar, headers={"Origin": base}) as http:
            login = {"account": "control", "password": dashboard["password"]}
            async with http.post(f"{base}/login", data=login, allow_redirects=False) as resp:
                assert (resp.status, resp.headers["Location"]) == (303, "/")
            token = {"Authorization": f"Bearer {api['token']}"}

            async def commuter_inside() -> bool:
                async with http.get(f"{base}/") as page:
                    assert page.status == 200
                    on_dashboard = f'data-plate="{COMMUTER}"' in await page.text()
                async with http.get(api["url"], headers=token) as response:
                    assert response.status == 200, await response.text()
                    return on_dashboard and COMMUTER in await response.text()

            # Central's dashboard and park API show the commuter inside between its entry
            # at gate-a and its exit at gate-b.
            await eventually(
                commuter_inside, "the commuter inside at central", within=20, every=0.2
            )
        await finish(run)
    finally:
        if run.proc.returncode is None:
            run.proc.kill()
            await run.proc.wait()
    assert any("Broker: mosquitto on 127.0.0.1" in line for line in run.out)
    # The demo's mosquitto stopped with it (it removes its pid file when it exits).
    assert not (directory / "trial" / "broker" / "mosquitto.pid").exists()
    check_park(directory, whole_logs=True)


async def test_without_mosquitto_central_pulls_the_gates(tmp_path: Path) -> None:
    run, directory = await run_park(tmp_path, "--mosquitto", str(tmp_path / "no-mosquitto"))
    try:
        await eventually(lambda: run.printed(DASHBOARD) is not None, "the banner", within=60)
        dashboard = run.printed(DASHBOARD)
        assert dashboard is not None
        async with aiohttp.ClientSession() as http, http.get(f"{dashboard['url']}/login") as page:
            assert page.status == 200  # the dashboard serves without a sink too
        await finish(run)
    finally:
        if run.proc.returncode is None:
            run.proc.kill()
            await run.proc.wait()
    assert any(
        "no such program: the park runs without a broker; central pulls" in line for line in run.out
    ), run.out
    assert not (directory / "trial").exists()
    check_park(directory, whole_logs=False)


def test_the_fire_alarm_is_for_the_one_gate_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--park", "--fire-alarm-after", "5"]) == 2
    err = capsys.readouterr().err
    assert "--fire-alarm-after is for the one-gate demo, not --park" in err
