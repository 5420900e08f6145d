"""Shared set-up of the gate benchmarks: lanes of simulators and a gate configuration that
drives them through the real drivers (``modbus-tcp`` to a :class:`PlcSimulator` on
127.0.0.1, ``serial-plate-reader`` on a :class:`PlateReaderSimulator` pty); the guard's
console on the daemon's HTTP server and a logged-in client of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from edgegate.console.accounts import Account, hash_password, write_accounts
from edgegate.console.desk import Role
from edgegate.core.domain import HolderType, PlateColour, Registration, VehicleCategory
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.profiles import load_profile
from edgegate.devices.reader_profile import (
    BinaryFrameReaderProfile,
    TextLineReaderProfile,
)
from edgegate.sim.plate_reader import PlateReaderSimulator
from edgegate.sim.plc import PlcSimulator

PLC_PROFILE = "barrier-plc-generic"
READER_PROFILE = "plate-reader-generic"


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    k = min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))
    return sorted_values[k]


def plate_of(i: int) -> str:
    """The plate of the ``i``-th benchmark vehicle."""
    return f"苏E{i:05d}"


def registrations(count: int) -> list[Registration]:
    """An ordinary commuter's registration for each of the first ``count`` plates."""
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        Registration(
            id=f"REG-{i}",
            plate=plate_of(i),
            colour=PlateColour.BLUE,
            category=VehicleCategory.ORDINARY,
            holder=HolderType.COMMUTER,
            organisation="Benchmark Chemical",
            valid_from=now - timedelta(days=1),
            valid_until=now + timedelta(days=30),
        )
        for i in range(count)
    ]


def plc_profile() -> BarrierPlcProfile:
    return load_profile(PLC_PROFILE, family=BarrierPlcProfile)


def reader_profile() -> TextLineReaderProfile | BinaryFrameReaderProfile:
    profile = load_profile(READER_PROFILE)
    assert isinstance(profile, TextLineReaderProfile | BinaryFrameReaderProfile)
    return profile


@dataclass
class SimLaneDevices:
    """The simulators behind one lane: its barrier PLC and its plate reader."""

    lane: str
    plc: PlcSimulator
    reader: PlateReaderSimulator


async def start_lanes(count: int, directory: Path, *, travel_time: float) -> list[SimLaneDevices]:
    """``count`` lanes (``in-1``, ``in-2``...) of started simulators; ptys linked in
    ``directory``."""
    lanes: list[SimLaneDevices] = []
    for i in range(1, count + 1):
        plc = PlcSimulator(plc_profile(), travel_time=travel_time)
        await plc.start()
        reader = PlateReaderSimulator(reader_profile(), directory=directory, name=f"cam-{i}")
        lanes.append(SimLaneDevices(f"in-{i}", plc, reader))
    return lanes


async def stop_lanes(lanes: list[SimLaneDevices]) -> None:
    for lane in lanes:
        with contextlib.suppress(Exception):
            await lane.plc.stop()
        with contextlib.suppress(Exception):
            lane.reader.close()


def gate_config_toml(
    lanes: list[SimLaneDevices],
    log_path: Path,
    *,
    poll_hz: float = 20.0,
    close_delay: str = "1s",
    min_confidence: float = 0.6,
    gate_id: str = "bench-gate",
    site: str = "bench",
) -> str:
    """A comprehensive gate with one entry lane per simulator pair, real drivers only."""
    parts = [
        "[gate]",
        f'id = "{gate_id}"',
        'name = "Benchmark gate"',
        'kind = "comprehensive"',
        f'site = "{site}"',
        "",
        "[policy]",
        f"min_confidence = {min_confidence}",
        "",
        "[log]",
        f"path = {str(log_path)!r}",
        "",
        "[timings]",
        f'close_delay = "{close_delay}"',
        "",
    ]
    for i, lane in enumerate(lanes, start=1):
        parts += [
            f"[devices.plc-{i}]",
            'type = "modbus-tcp"',
            'host = "127.0.0.1"',
            f"port = {lane.plc.port}",
            f"unit_id = {lane.plc.unit_id}",
            f'profile = "{PLC_PROFILE}"',
            f"poll_hz = {float(poll_hz)}",
            "",
            f"[devices.cam-{i}]",
            'type = "serial-plate-reader"',
            f"port = {lane.reader.port!r}",
            f'profile = "{READER_PROFILE}"',
            "",
            "[[lanes]]",
            f'id = "{lane.lane}"',
            'direction = "entry"',
            f'plate_reader = "cam-{i}"',
            f'barrier = "plc-{i}"',
            "",
        ]
    return "\n".join(parts)


# --- the guard's console ------------------------------------------------------------------

CONSOLE_ACCOUNT = "bench-guard"
CONSOLE_PASSWORD = secrets.token_urlsafe(18)  # a fresh one each run
LOGIN_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the daemon binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_console_accounts(path: Path) -> None:
    """An accounts file holding one guard, :data:`CONSOLE_ACCOUNT`."""
    account = Account(CONSOLE_ACCOUNT, Role.GUARD, hash_password(CONSOLE_PASSWORD))
    write_accounts(path, {account.name: account})


def console_config_toml(port: int, accounts_file: Path) -> str:
    """``[http]`` on 127.0.0.1:``port`` and ``[console]`` with ``accounts_file``, to append
    to :func:`gate_config_toml`."""
    return "\n".join(
        [
            "",
            "[http]",
            'bind = "127.0.0.1"',
            f"port = {port}",
            "",
            "[console]",
            f"accounts_file = {str(accounts_file)!r}",
            "",
        ]
    )


class ConsoleClient:
    """One logged-in console, as a browser at the booth holds it: a session cookie from
    ``POST /login``, then the ``/api/live`` WebSocket."""

    def __init__(self, port: int) -> None:
        self.origin = f"http://127.0.0.1:{port}"
        # unsafe: the cookie jar otherwise keeps no cookie of a server named by its IP.
        self.session = aiohttp.ClientSession(self.origin, cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def login(self) -> None:
        """Log in, retrying while the daemon's server is not up yet."""
        deadline = time.monotonic() + LOGIN_TIMEOUT_S
        while True:
            try:
                response = await self.session.post(
                    "/login",
                    data={"account": CONSOLE_ACCOUNT, "password": CONSOLE_PASSWORD},
                    headers={"Origin": self.origin},
                    allow_redirects=False,
                )
                break
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        location = response.headers.get("Location")
        response.release()
        if response.status != 303 or location != "/":
            raise RuntimeError(f"console login refused: {response.status} -> {location}")
        me = await self.session.get("/api/me")
        if me.status != 200:
            raise RuntimeError(f"console /api/me answered {me.status} after logging in")
        me.release()

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        """The live WebSocket (the page's first message, the view now, is not read)."""
        self.ws = await self.session.ws_connect("/api/live", headers={"Origin": self.origin})
        return self.ws

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.session.close()


async def start_daemon(config: Path, workdir: Path) -> asyncio.subprocess.Process:
    """``edgegate run -c CONFIG`` as a process in ``workdir``, its output in ``daemon.log``."""
    with (workdir / "daemon.log").open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edgegate",
            "run",
            "-c",
            str(config),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
