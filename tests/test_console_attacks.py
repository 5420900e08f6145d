"""Attacks on the console as someone on the booth network would make them, over real sockets
on 127.0.0.1 against the daemon's HTTP server (edgegate.web) with the console mounted at ``/``
(a recording desk in place of the gate). Each test is a way in that is closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from edgegate.config.models import ConsoleSettings
from edgegate.console.accounts import Account, AccountStore, hash_password, write_accounts
from edgegate.console.app import CONSOLE, Console, console_app
from edgegate.console.desk import Role
from edgegate.console.sessions import LoginThrottle
from edgegate.core import events as ev
from edgegate.core.clock import ManualClock
from edgegate.web import HttpServer, ServerLimits
from tests.console_desk import RecordingDesk
from tests.eventually import eventually

HOST = "127.0.0.1"
PASSWORD = "booth-secret-42"
NEW_PASSWORD = "changed-secret-77"
_HASHES = {
    PASSWORD: hash_password(PASSWORD),
    NEW_PASSWORD: hash_password(NEW_PASSWORD),
    "li": hash_password("shift-lead-77"),
}


def write(path: Path, wang_password: str = PASSWORD, *, wang: bool = True) -> None:
    accounts = {"li": Account("li", Role.SUPERVISOR, _HASHES["li"])}
    if wang:
        accounts["wang"] = Account("wang", Role.GUARD, _HASHES[wang_password])
    write_accounts(path, accounts)


@dataclass
class Gate:
    server: HttpServer
    console: Console
    desk: RecordingDesk
    events: list[ev.Event]
    clock: ManualClock
    accounts_file: Path

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> aiohttp.ClientSession:
        """A browser of its own (its own cookies); the cookie jar takes an IP's cookies."""
        return aiohttp.ClientSession(self.url, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def login(
        self, client: aiohttp.ClientSession, name: str = "wang", password: str = PASSWORD
    ) -> str:
        async with client.post(
            "/login",
            data={"account": name, "password": password},
            headers={"Origin": self.url},
            allow_redirects=False,
        ) as response:
            return response.headers.get("Location", "")

    async def csrf(self, client: aiohttp.ClientSession) -> str:
        async with client.get("/api/me") as response:
            assert response.status == 200
            token: str = (await response.json())["csrf_token"]
            return token

    def refusals(self) -> list[str]:
        return [e.reason for e in self.events if isinstance(e, ev.ConsoleLoginRefused)]


@pytest.fixture
async def gate(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Gate]:
    path = tmp_path / "accounts"
    write(path)
    desk = RecordingDesk()
    recorded: list[ev.Event] = []

    async def audit(event: ev.Event) -> int:
        recorded.append(event)
        return len(recorded)

    settings = ConsoleSettings(accounts_file=str(path))
    app = console_app(desk, AccountStore.open(path, clock.mono_ns), settings, clock, audit)
    server = HttpServer(HOST, 0, limits=ServerLimits(max_pending_per_peer=32))
    server.mount("/", app)
    async with server:
        yield Gate(server, app[CONSOLE], desk, recorded, clock, path)


async def _raw(gate: Gate) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, gate.server.port)


# ------------------------------------------------------------------------------ logins


async def test_concurrent_guesses_cannot_outrun_the_lock_out(gate: Gate) -> None:
    """Twenty wrong passwords sent at once: no more are checked than the lock-out allows
    (each check takes ~50 ms, so all would pass the lock-out check before one failed)."""
    async with gate.client() as client:
        answers = await asyncio.gather(
            *(gate.login(client, password=f"guess-{i:04d}") for i in range(20))
        )
    assert gate.refusals().count("bad-credentials") <= 5, gate.refusals()
    assert answers.count("/login?error=locked") >= 15


# ---------------------------------------------------------------------------- sessions


async def test_a_changed_password_ends_the_sessions_logged_in_with_the_old_one(
    gate: Gate,
) -> None:
    """The password leaked and was changed: whoever logged in with it is out, on their next
    request and on their live socket; the guard logs in with the new one and stays in."""
    async with gate.client() as thief, gate.client() as guard:
        assert await gate.login(thief) == "/"
        live = await thief.ws_connect("/api/live", origin=gate.url)
        await live.receive_json()
        write(gate.accounts_file, NEW_PASSWORD)
        gate.clock.advance(2)  # the file is checked at most once a second
        assert await gate.login(guard, password=NEW_PASSWORD) == "/"
        gate.desk.publish(gate.desk.view())  # a change: is it pushed to the thief?
        message = await live.receive(timeout=5)
        assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 4401
        async with thief.get("/api/view") as response:
            assert response.status == 401
        async with guard.get("/api/view") as response:
            assert response.status == 200
    logouts = [e for e in gate.events if isinstance(e, ev.ConsoleLogout)]
    assert [(e.account, e.reason) for e in logouts] == [("wang", "account-changed")]


async def test_a_removed_account_stops_receiving_on_its_live_socket(gate: Gate) -> None:
    async with gate.client() as client:
        assert await gate.login(client) == "/"
        live = await client.ws_connect("/api/live", origin=gate.url)
        await live.receive_json()
        write(gate.accounts_file, wang=False)
        gate.clock.advance(2)
        gate.desk.publish(gate.desk.view())
        message = await live.receive(timeout=5)
        assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 4401
    logouts = [e for e in gate.events if isinstance(e, ev.ConsoleLogout)]
    assert [(e.account, e.reason) for e in logouts] == [("wang", "account-changed")]


async def test_one_session_cannot_take_every_connection_with_live_sockets(gate: Gate) -> None:
    async with gate.client() as client:
        assert await gate.login(client) == "/"
        sockets = [await client.ws_connect("/api/live", origin=gate.url) for _ in range(4)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/api/live", origin=gate.url)
        assert refused.value.status == 503
        await sockets.pop().close()
        await eventually(lambda: gate.server.connections <= 4, "the closed socket released")
        sockets.append(await client.ws_connect("/api/live", origin=gate.url))
        for ws in sockets:
            await ws.close()


# ------------------------------------------------------------------------ slow clients


async def test_a_login_body_trickled_in_does_not_hold_the_connection(gate: Gate) -> None:
    gate.console.body_timeout = 0.5
    reader, writer = await _raw(gate)
    head = (
        f"POST /login HTTP/1.1\r\nHost: {HOST}:{gate.server.port}\r\nOrigin: {gate.url}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n"
    )
    writer.write(head.encode() + b"account=wang&password=")

    async def trickle() -> None:
        while not writer.is_closing():
            writer.write(b"a")
            await asyncio.sleep(0.1)  # pacing the slow client

    trickling = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        trickling.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"Traceback" not in answer
    await eventually(lambda: gate.server.connections == 0, "the slow connection closed")
    assert gate.refusals() == []  # nothing was checked, nothing locked


# ------------------------------------------------------------------------- odd bodies


@pytest.mark.parametrize(
    "body",
    [
        "[" * 5000 + "]" * 5000,
        '{"action": "confirm", "lane": ' + "[" * 3000 + "]" * 3000 + "}",
    ],
    ids=["deep-array", "deep-field"],
)
async def test_deeply_nested_json_is_a_400_not_a_500(gate: Gate, body: str) -> None:
    async with gate.client() as client:
        assert await gate.login(client) == "/"
        token = await gate.csrf(client)
        async with client.post(
            "/api/actions",
            data=body,
            headers={"Origin": gate.url, "X-CSRF-Token": token},
        ) as response:
            answer = json.loads(await response.text())
            assert response.status == 400, answer
    assert answer["code"] == "invalid" and "nested" in answer["message"]
    assert gate.desk.requests == []


async def test_a_flood_of_logins_leaves_the_gates_worker_threads_free(gate: Gate) -> None:
    """Password checks run in the default executor, which the log reads and syncs share: a
    flood of logins (here from addresses the lock-out does not stop yet) must not queue
    them behind every check."""
    gate.console.throttle = LoginThrottle(
        gate.clock.mono_ns, max_failures=100, window_ns=60 * 10**9, lockout_ns=60 * 10**9
    )
    async with gate.client() as client:
        flood = asyncio.gather(
            *(gate.login(client, name=f"n{i}", password="wrong-password") for i in range(60))
        )
        await eventually(lambda: len(gate.refusals()) >= 1, "the first check done")
        await asyncio.to_thread(lambda: None)  # the gate's own work, e.g. reading the log
        checked_meanwhile = len(gate.refusals())
        await flood
    assert checked_meanwhile < 10, checked_meanwhile
