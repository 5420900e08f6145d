"""The console's routes over real HTTP on 127.0.0.1: sessions, CSRF, lock-out, actions,
the live WebSocket and the assets, with a recording desk in place of the gate."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from edgegate.config.models import ConsoleSettings
from edgegate.console.accounts import Account, AccountStore, hash_password, write_accounts
from edgegate.console.app import console_app, load_assets
from edgegate.console.desk import DeskAction, DeskRequest, Role
from edgegate.core import events as ev
from edgegate.core.clock import ManualClock
from edgegate.web import PAGE_CSP
from tests.console_desk import RecordingDesk, sample_view
from tests.eventually import eventually

PASSWORD = "booth-secret-42"
SUPERVISOR_PASSWORD = "shift-lead-77"
_HASHES = {
    "wang": (Role.GUARD, hash_password(PASSWORD)),
    "li": (Role.SUPERVISOR, hash_password(SUPERVISOR_PASSWORD)),
}


@dataclass
class Booth:
    client: TestClient[Any, Any]
    desk: RecordingDesk
    events: list[ev.Event]
    clock: ManualClock
    accounts_file: Path
    fail_audit: bool = False

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    async def login(self, name: str = "wang", password: str = PASSWORD) -> ClientResponse:
        return await self.client.post(
            "/login",
            data={"account": name, "password": password},
            headers={"Origin": self.origin},
            allow_redirects=False,
        )

    async def csrf(self) -> str:
        response = await self.client.get("/api/me")
        assert response.status == 200
        token: str = (await response.json())["csrf_token"]
        return token

    async def act(self, body: object, *, token: str | None, origin: str | None = None) -> Any:
        headers = {"Origin": origin or self.origin, "Content-Type": "application/json"}
        if token is not None:
            headers["X-CSRF-Token"] = token
        data = body if isinstance(body, str) else json.dumps(body)
        return await self.client.post("/api/actions", data=data, headers=headers)


def write(path: Path, names: tuple[str, ...] = ("wang", "li")) -> None:
    write_accounts(path, {n: Account(n, *_HASHES[n]) for n in names})


@pytest.fixture
async def booth(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Booth]:
    path = tmp_path / "accounts"
    write(path)
    desk = RecordingDesk()
    recorded: list[ev.Event] = []
    holder: list[Booth] = []

    async def audit(event: ev.Event) -> int:
        if holder and holder[0].fail_audit:
            raise OSError("disk full")
        recorded.append(event)
        return len(recorded)

    settings = ConsoleSettings(accounts_file=str(path))
    app = console_app(desk, AccountStore.open(path, clock.mono_ns), settings, clock, audit)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    holder.append(Booth(client, desk, recorded, clock, path))
    try:
        yield holder[0]
    finally:
        await client.close()


def of_type(booth: Booth, cls: type[ev.Event]) -> list[Any]:
    return [e for e in booth.events if isinstance(e, cls)]


# ---------------------------------------------------------------------------------- login


async def test_without_a_session_nothing_but_the_login_page(booth: Booth) -> None:
    page = await booth.client.get("/", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/login"
    for path in ("/api/view", "/api/me", "/api/live"):
        response = await booth.client.get(path)
        assert response.status == 401, path
        assert "苏E" not in await response.text()
    refused = await booth.act({"action": "confirm"}, token="x")
    assert refused.status == 401
    login = await booth.client.get("/login")
    assert login.status == 200 and "login-form" in await login.text()
    assert booth.desk.requests == []


async def test_a_login_is_logged_before_the_session_and_the_cookie_is_strict(
    booth: Booth,
) -> None:
    response = await booth.login()
    assert response.status == 303 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS the cookie is Secure
    assert re.search(r"edgegate_console=[A-Za-z0-9_-]{43}", cookie)
    [login] = of_type(booth, ev.ConsoleLogin)
    assert (login.account, login.role, login.address) == ("wang", "guard", "127.0.0.1")
    view = await booth.client.get("/api/view")
    body = await view.json()
    assert body["type"] == "view" and body["now_ns"] == booth.clock.wall_ns()
    assert body["view"]["lanes"][0]["pending"]["decision"]["plate"] == "苏E1234S"
    assert view.headers["Content-Security-Policy"] == PAGE_CSP


async def test_a_wrong_password_and_an_unknown_name_get_the_same_answer(booth: Booth) -> None:
    wrong = await booth.login(password="not-the-password")
    unknown = await booth.login(name="nobody", password="not-the-password")
    for response in (wrong, unknown):
        assert response.status == 303 and response.headers["Location"] == "/login?error=refused"
        assert "Set-Cookie" not in response.headers
    refusals = of_type(booth, ev.ConsoleLoginRefused)
    assert [(r.account, r.reason) for r in refusals] == [
        ("wang", "bad-credentials"),
        ("nobody", "bad-credentials"),
    ]
    assert all("not-the-password" not in repr(e) for e in booth.events)
    assert (await booth.client.get("/api/view")).status == 401


async def test_a_login_from_another_origin_is_refused(booth: Booth) -> None:
    response = await booth.client.post(
        "/login",
        data={"account": "wang", "password": PASSWORD},
        headers={"Origin": "http://evil.example"},
        allow_redirects=False,
    )
    assert response.status == 403
    assert of_type(booth, ev.ConsoleLogin) == []


async def test_no_session_without_the_log_showing_the_login(booth: Booth) -> None:
    booth.fail_audit = True
    response = await booth.login()
    assert response.headers["Location"] == "/login?error=unavailable"
    assert (await booth.client.get("/api/view")).status == 401


async def test_repeated_failures_lock_the_account_out_then_it_opens_again(
    booth: Booth,
) -> None:
    for _ in range(5):
        await booth.login(password="wrong-password")
    locked = await booth.login()  # the right password, but locked out
    assert locked.headers["Location"] == "/login?error=locked"
    assert of_type(booth, ev.ConsoleLoginRefused)[-1].reason == "locked-out"
    booth.clock.advance(timedelta(minutes=15).total_seconds())
    opened = await booth.login()
    assert opened.headers["Location"] == "/"


async def test_unknown_names_and_one_address_lock_out_too(booth: Booth) -> None:
    for i in range(5):
        await booth.login(name=f"guess{i}", password="wrong-password")
    # The address has failed five times: even the right password for another name waits.
    locked = await booth.login(name="li", password=SUPERVISOR_PASSWORD)
    assert locked.headers["Location"] == "/login?error=locked"


async def test_a_booth_pc_that_logged_in_before_keeps_its_account(booth: Booth) -> None:
    """Failures for other names lock the booth's address for them, not for the account
    that logged in from it before: the lock-out cannot shut the guard out."""
    assert (await booth.login()).headers["Location"] == "/"
    for i in range(5):
        await booth.login(name=f"guess{i}", password="wrong-password")
    locked = await booth.login(name="li", password=SUPERVISOR_PASSWORD)
    assert locked.headers["Location"] == "/login?error=locked"
    assert (await booth.login()).headers["Location"] == "/"


async def test_failures_spread_over_more_than_the_window_do_not_lock(booth: Booth) -> None:
    for _ in range(8):
        await booth.login(password="wrong-password")
        booth.clock.advance(4 * 60)  # 4 failures at most within any 15 minutes
    assert (await booth.login()).headers["Location"] == "/"


async def test_an_idle_session_ends_and_the_log_says_so(booth: Booth) -> None:
    await booth.login()
    booth.clock.advance(timedelta(hours=7).total_seconds())
    assert (await booth.client.get("/api/view")).status == 200  # activity keeps it alive
    booth.clock.advance(timedelta(hours=8).total_seconds())
    assert (await booth.client.get("/api/view")).status == 401
    [logout] = of_type(booth, ev.ConsoleLogout)
    assert (logout.account, logout.reason) == ("wang", "idle")


async def test_logout_needs_the_token_and_ends_the_session(booth: Booth) -> None:
    await booth.login()
    token = await booth.csrf()
    refused = await booth.client.post("/logout", headers={"Origin": booth.origin})
    assert refused.status == 403
    done = await booth.client.post(
        "/logout", headers={"Origin": booth.origin, "X-CSRF-Token": token}
    )
    assert done.status == 200
    assert (await booth.client.get("/api/view")).status == 401
    assert [e.reason for e in of_type(booth, ev.ConsoleLogout)] == ["logout"]


async def test_a_removed_account_loses_its_session_and_a_new_one_logs_in(
    booth: Booth,
) -> None:
    await booth.login()
    write(booth.accounts_file, ("li",))
    booth.clock.advance(2)  # the file is checked at most once a second
    assert (await booth.client.get("/api/view")).status == 401
    assert [e.reason for e in of_type(booth, ev.ConsoleLogout)] == ["account-changed"]
    write(booth.accounts_file, ("li", "wang"))
    booth.clock.advance(2)
    assert (await booth.login()).headers["Location"] == "/"


# -------------------------------------------------------------------------------- actions


async def test_an_action_without_or_with_a_wrong_csrf_token_is_refused(booth: Booth) -> None:
    await booth.login()
    token = await booth.csrf()
    body = {"action": "confirm", "lane": "in-1", "decision_seq": 42}
    missing = await booth.act(body, token=None)
    wrong = await booth.act(body, token=token[:-1] + ("A" if token[-1] != "A" else "B"))
    elsewhere = await booth.act(body, token=token, origin="http://evil.example")
    for response, code in ((missing, "bad-csrf-token"), (wrong, "bad-csrf-token")):
        assert response.status == 403 and (await response.json())["code"] == code
    assert elsewhere.status == 403 and (await elsewhere.json())["code"] == "bad-origin"
    assert booth.desk.requests == []


async def test_confirm_reaches_the_desk_with_the_account(booth: Booth) -> None:
    await booth.login()
    response = await booth.act(
        {"action": "confirm", "lane": "in-1", "decision_seq": 42}, token=await booth.csrf()
    )
    assert response.status == 200
    assert await response.json() == {"ok": True, "code": "ok", "message": "", "seq": 1001}
    assert booth.desk.requests == [
        DeskRequest(
            action=DeskAction.CONFIRM,
            operator="console:wang",
            role=Role.GUARD,
            reason="",
            lane="in-1",
            decision_seq=42,
        )
    ]


async def test_a_guard_cannot_switch_incident_mode_a_supervisor_can(booth: Booth) -> None:
    await booth.login()
    body = {"action": "incident-on", "reason": "chlorine alarm at unit 4"}
    refused = await booth.act(body, token=await booth.csrf())
    assert refused.status == 403 and (await refused.json())["code"] == "forbidden"
    assert booth.desk.requests == []
    booth.client.session.cookie_jar.clear()
    await booth.login("li", SUPERVISOR_PASSWORD)
    allowed = await booth.act(body, token=await booth.csrf())
    assert allowed.status == 200
    [request] = booth.desk.requests
    assert (request.action, request.role, request.lane) == (
        DeskAction.INCIDENT_ON,
        Role.SUPERVISOR,
        None,
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ("[1, 2]", "body"),
        ({"action": "launch", "lane": "in-1"}, "action"),
        ({"action": "confirm", "decision_seq": 42}, "lane"),
        ({"action": "confirm", "lane": "in-1"}, "decision_seq"),
        ({"action": "confirm", "lane": "in-1", "decision_seq": "42"}, "decision_seq"),
        ({"action": "confirm", "lane": "in-1", "decision_seq": True}, "decision_seq"),
        ({"action": "correct", "lane": "in-1", "decision_seq": 42}, "plate"),
        ({"action": "correct", "lane": "in-1", "decision_seq": 42, "plate": "X" * 17}, "plate"),
        ({"action": "refuse", "lane": "in-1", "decision_seq": 42, "reason": "  "}, "reason"),
        ({"action": "open-hold", "lane": "in-1"}, "reason"),
        ({"action": "incident-on", "lane": "in-1", "reason": "fire"}, "lane"),
        ({"action": "release", "lane": "in-1", "reason": "x", "who": "me"}, "who"),
        ({"action": "release", "lane": "in\n1", "reason": "x"}, "lane"),
    ],
)
async def test_a_bad_action_is_a_400_naming_the_field(
    booth: Booth, body: object, field: str
) -> None:
    await booth.login()
    response = await booth.act(body, token=await booth.csrf())
    assert response.status == 400
    answer = await response.json()
    assert answer["code"] == "invalid" and answer["message"].startswith(f"{field}: ")
    assert "Traceback" not in answer["message"]
    assert booth.desk.requests == []


# ----------------------------------------------------------------------------- WebSocket


async def test_the_live_socket_pushes_every_change_and_closes_at_logout(booth: Booth) -> None:
    await booth.login()
    refused = await booth.client.get("/api/live", headers={"Origin": "http://evil.example"})
    assert refused.status == 403
    ws = await booth.client.ws_connect("/api/live", headers={"Origin": booth.origin})
    first = await ws.receive_json(timeout=5)
    assert first["view"]["version"] == 1
    await eventually(lambda: booth.desk.readers == 1, "the socket watching the desk")
    booth.desk.publish(sample_view(pending=False, version=2, mode="incident"))
    second = await ws.receive_json(timeout=5)
    assert second["view"]["version"] == 2 and second["view"]["mode"] == "incident"
    token = await booth.csrf()
    await booth.client.post("/logout", headers={"Origin": booth.origin, "X-CSRF-Token": token})
    closed = await ws.receive(timeout=5)
    assert closed.type is WSMsgType.CLOSE and closed.data == 4401
    await ws.close()
    await eventually(lambda: booth.desk.readers == 0, "the desk's watcher closed")


# -------------------------------------------------------------------------------- assets


async def test_every_asset_is_served_with_its_type_and_the_csp(booth: Booth) -> None:
    assets = load_assets()
    assert {"index.html", "login.html", "console.js", "console.css", "i18n.json"} <= set(assets)
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
    for name in assets:
        response = await booth.client.get(f"/static/{name}")
        assert response.status == 200, name
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        suffix = "." + name.rsplit(".", 1)[-1]
        expected = types.get(suffix, "application/json")
        assert response.headers["Content-Type"].startswith(expected), name
    missing = await booth.client.get("/static/..%2Faccounts.py")
    assert missing.status == 404


def test_no_asset_names_an_external_url_or_holds_inline_script() -> None:
    for name, (body, _) in load_assets().items():
        text = body.decode("utf-8")
        assert "http://" not in text and "https://" not in text, name
        assert not re.search(r"""(src|href)\s*=\s*["']//|url\(\s*["']?//|@import""", text), name
        if name.endswith(".html"):
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"{name}: inline script"
            assert not re.search(r"\son[a-z]+\s*=", text), f"{name}: inline event handler"
            assert "style=" not in text, f"{name}: inline style"
