"""Central's dashboard over HTTP on SQLite and a real PostgreSQL, through a real aiohttp
client: nothing without a login, the lock-out, viewer and operator roles, CSRF and origin
checks, bad input as clear error pages, the pages in Chinese and English, the live stream
carrying the positions it reflects, the accounts command."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import io
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import structlog.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgegate.central.dashboard import Dashboard, DashboardRole, DashboardSettings, Publishing
from edgegate.central.dashboard import app as dashboard_app
from edgegate.central.dashboard.i18n import LANGS, WORDS
from edgegate.central.sink import BrokerSettings
from edgegate.central.store import CentralStore
from edgegate.central.store.blacklist import DISMISSED, OPEN
from edgegate.cli.main import main
from edgegate.console.accounts import Account, AccountStore, hash_password, write_accounts
from edgegate.core.clock import ManualClock
from edgegate.core.codec import datetime_to_ns
from edgegate.core.domain import Direction
from edgegate.web import HttpServer
from tests.certs import make_pki
from tests.eventually import eventually
from tests.test_central_blacklist import LIMITS, stored_park
from tests.test_central_park import T0, GateLog, dsn, store

__all__ = ["dsn", "store"]  # fixtures

pytestmark = pytest.mark.timeout(120)

PASSWORD = "control-room-42"
NOW = T0 + timedelta(hours=3)
PAGES = ("/", "/gates", "/roll-call", "/events", "/proposals", "/reviews", "/dead-letters")


def write_dashboard_accounts(path: Path) -> None:
    """``li`` the operator and ``zhao`` the viewer, both with ``PASSWORD``."""
    write_accounts(
        path,
        {
            "li": Account("li", DashboardRole.OPERATOR, hash_password(PASSWORD)),
            "zhao": Account("zhao", DashboardRole.VIEWER, hash_password(PASSWORD)),
        },
    )


@dataclass
class Served:
    base: str
    dashboard: Dashboard
    clock: ManualClock


@asynccontextmanager
async def serving(
    dsn: str,
    tmp_path: Path,
    *,
    publishing: Publishing | None = None,
    settings: DashboardSettings | None = None,
    clock: ManualClock | None = None,
) -> AsyncIterator[Served]:
    """The dashboard over ``dsn`` on a real server at 127.0.0.1, accounts li and zhao."""
    path = tmp_path / "dashboard-accounts"
    if not path.exists():
        write_dashboard_accounts(path)
    clock = clock or ManualClock(wall_ns=datetime_to_ns(NOW))
    accounts = AccountStore.open(path, clock.mono_ns, DashboardRole)
    settings = settings or DashboardSettings(poll_s=0.05, heartbeat_s=0.2, dwell_limits=LIMITS)
    dashboard = await Dashboard.open(
        dsn, accounts, settings=settings, clock=clock, publishing=publishing
    )
    server = HttpServer("127.0.0.1", 0, limits=settings.server_limits())
    dashboard.mount(server)
    try:
        async with server:
            yield Served(server.url, dashboard, clock)
    finally:
        await dashboard.aclose()


@asynccontextmanager
async def client(base: str, account: str | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    """A client with a cookie jar (for 127.0.0.1 too), logged in as ``account`` if given."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base, cookie_jar=jar, headers={"Origin": base}) as http:
        if account is not None:
            async with http.post(
                "/login", data={"account": account, "password": PASSWORD}, allow_redirects=False
            ) as resp:
                assert (resp.status, resp.headers["Location"]) == (303, "/")
        yield http


async def csrf(http: aiohttp.ClientSession) -> str:
    async with http.get("/proposals") as resp:
        text = await resp.text()
    marker = 'name="csrf" value="'
    start = text.index(marker) + len(marker)
    return text[start : text.index('"', start)]


@pytest.fixture
async def park(store: CentralStore, dsn: str, tmp_path: Path) -> AsyncIterator[Served]:
    """The dashboard over gates A and B's events, with the two overstays proposed."""
    stored_park(store)
    store.propose_blacklist(datetime_to_ns(NOW), LIMITS)
    async with serving(dsn, tmp_path) as served:
        yield served


async def test_nothing_without_a_login(park: Served) -> None:
    async with client(park.base) as http:
        for path in PAGES:
            async with http.get(path, allow_redirects=False) as resp:
                assert (resp.status, resp.headers["Location"]) == (303, "/login"), path
        async with http.get("/live") as resp:
            assert resp.status == 401
            assert "苏E" not in await resp.text()
        async with http.post("/proposals/1", data={"decision": "dismiss"}) as resp:
            assert resp.status == 401
        async with http.get("/login") as resp:
            page = await resp.text()
            assert resp.status == 200 and "园区监控台登录" in page and "苏E" not in page
            assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
        async with http.get("/nope/../../etc", allow_redirects=False) as resp:
            assert resp.status == 303


async def test_repeated_failures_lock_the_account_out(park: Served) -> None:
    async with client(park.base) as http:
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                async with http.post(
                    "/login", data={"account": "li", "password": "wrong-password-1"}
                ) as resp:
                    assert "账号或密码错误" in await resp.text()
            async with http.post("/login", data={"account": "li", "password": PASSWORD}) as resp:
                assert resp.url.path == "/login" and "登录失败次数过多" in await resp.text()
        refused = [e for e in logs if e["event"] == "dashboard_login_refused"]
        assert [e["reason"] for e in refused] == ["bad-credentials"] * 5 + ["locked-out"]
        assert PASSWORD not in repr(logs)
    park.clock.advance(15 * 60 + 1)
    async with client(park.base, "li") as http, http.get("/") as resp:
        assert resp.status == 200


async def test_a_workstation_that_logged_in_before_keeps_its_account(park: Served) -> None:
    async with client(park.base, "li") as http, http.get("/") as resp:
        assert resp.status == 200
    async with client(park.base) as http:
        for i in range(5):
            async with http.post(
                "/login", data={"account": f"guess{i}", "password": "wrong-password-1"}
            ) as resp:
                assert "账号或密码错误" in await resp.text()
        async with http.post("/login", data={"account": "zhao", "password": PASSWORD}) as resp:
            assert "登录失败次数过多" in await resp.text()  # this address, for other names
    async with client(park.base, "li") as http, http.get("/") as resp:
        assert resp.status == 200  # but not for the name it logged in to before


async def test_a_login_from_another_origin_is_refused(park: Served) -> None:
    async with (
        aiohttp.ClientSession(park.base, headers={"Origin": "http://evil.example"}) as http,
        http.post("/login", data={"account": "li", "password": PASSWORD}) as resp,
    ):
        assert resp.status == 403
        assert "Origin" in await resp.text()


async def test_the_park_pages_in_chinese_then_english(park: Served) -> None:
    async with client(park.base, "zhao") as http:
        async with http.get("/") as resp:
            page = await resp.text()
        assert resp.status == 200 and '<html lang="zh-CN">' in page
        assert 'id="inside-count">2<' in page and "危化品" in page
        assert 'data-plate="苏E00002" class="danger"' in page  # hazmat, inside
        assert 'data-plate="苏E00001"' not in page  # left at gate B
        assert 'id="incident-banner"' in page and "gate-b" in page  # B is in incident mode
        async with http.get("/roll-call?lang=en") as resp:
            page = await resp.text()
        assert resp.url.path == "/roll-call" and '<html lang="en">' in page
        assert "2 inside: 1 hazmat, 0 hazardous waste" in page
        assert page.index("苏E00002") < page.index("苏E00004")  # hazmat first
        assert "past permit end" in page
        async with http.get("/gates") as resp:  # the language is remembered
            page = await resp.text()
        assert "Gates" in page and page.index('data-gate="gate-a"') < page.index(
            'data-gate="gate-b"'
        )
        assert "plc-1 (timeout)" in page and "incident" in page
        async with http.get("/", headers={"X-Fragment": "1"}) as resp:
            fragment = await resp.text()
        assert not fragment.lstrip().startswith("<!doctype") and "inside-count" in fragment
        for path in PAGES:
            async with http.get(path) as resp:
                assert resp.status == 200, path


async def test_the_park_counts_every_vehicle_beyond_the_ones_listed(
    park: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_app, "MAX_INSIDE_SHOWN", 1)  # lists the hazmat one only
    async with client(park.base, "zhao") as http, http.get("/?lang=en") as resp:
        page = await resp.text()
    assert 'id="inside-count">2<' in page and 'id="dangerous-count">1<' in page
    counts = page[page.index('class="counts"') :]
    counts = counts[: counts.index("</table>")]
    assert counts.count("<td>1</td>") == 2  # one hazmat, one of another category
    assert 'data-plate="苏E00002"' in page and 'data-plate="苏E00004"' not in page
    assert "1 more" in page


async def test_event_search_with_confusable_plates_and_bad_input(park: Served) -> None:
    async with client(park.base, "zhao") as http:
        async with http.get("/events", params={"plate": "苏E0000Z", "gate": "gate-a"}) as resp:
            page = await resp.text()  # Z is confusable with 2
        assert resp.status == 200
        assert 'data-gate="gate-a" data-seq="3"' in page and "易混" in page
        assert "&quot;plate&quot;: &quot;苏E00002&quot;" in page  # the decoded payload
        bad = {
            "from": ("yesterday", "from: 'yesterday' is not a date and time"),
            "type": ("vehicle.nope", "type: 'vehicle.nope' names no event type"),
            "gate": ("gate/x", "gate: gate: 'gate/x' contains '/'"),
            "color": ("red", "color: unknown search field"),
        }
        for name, (value, message) in bad.items():
            async with http.get("/events", params={name: value}) as resp:
                page = await resp.text()
            assert resp.status == 400 and resp.content_type == "text/html", name
            assert message in html.unescape(page) and "Traceback" not in page, page
        async with http.get("/?lang=klingon") as resp:
            assert resp.status == 400 and "lang:" in await resp.text()


async def test_a_viewer_sees_proposals_but_cannot_decide(park: Served, store: CentralStore) -> None:
    async with client(park.base, "zhao") as http:
        async with http.get("/proposals") as resp:
            page = await resp.text()
        assert 'data-state="open"' in page and 'id="viewer-note"' in page
        assert "approve-" not in page
        token = await csrf(http)
        first = store.blacklist_proposals()[0].id
        async with http.post(
            f"/proposals/{first}", data={"csrf": token, "decision": "dismiss", "reason": "x"}
        ) as resp:
            assert resp.status == 403 and "viewer" in await resp.text()
    assert all(p.state == OPEN for p in store.blacklist_proposals())


async def test_an_operator_decides_with_csrf_and_a_reason(
    park: Served, store: CentralStore
) -> None:
    _, engineering = sorted(store.blacklist_proposals(), key=lambda p: p.plate != "苏E00002")
    async with client(park.base, "li") as http:
        token = await csrf(http)
        url = f"/proposals/{engineering.id}"
        refusals = [
            ({"decision": "dismiss", "reason": "ok"}, 403, "CSRF"),
            ({"csrf": "forged", "decision": "dismiss", "reason": "ok"}, 403, "CSRF"),
            ({"csrf": token, "decision": "ban", "reason": "ok"}, 400, "decision:"),
            ({"csrf": token, "decision": "dismiss", "reason": "  "}, 400, "reason:"),
            ({"csrf": token, "decision": "dismiss", "reason": "a\x07b"}, 400, "control"),
            ({"csrf": token, "decision": "dismiss", "reason": "x" * 501}, 400, "at most 500"),
            # No key, site or broker: an approval could not be published, so it is refused.
            ({"csrf": token, "decision": "approve", "reason": "ok"}, 503, "cannot publish"),
        ]
        for form, status, message in refusals:
            async with http.post(url, data=form) as resp:
                assert resp.status == status, form
                assert message in await resp.text(), form
        async with http.post("/proposals/abc", data={"csrf": token}) as resp:
            assert resp.status == 400
        async with http.post("/proposals/999", data={"csrf": token, **_dismiss()}) as resp:
            assert resp.status == 409 and "999" in await resp.text()
        async with http.post(
            url, data={"csrf": token, **_dismiss()}, headers={"Origin": "http://evil.example"}
        ) as resp:
            assert resp.status == 403
        assert [p.state for p in store.blacklist_proposals(ids=[engineering.id])] == [OPEN]

        with structlog.testing.capture_logs() as logs:
            async with http.post(url, data={"csrf": token, **_dismiss()}) as resp:
                page = await resp.text()
        assert resp.url.path == "/proposals" and 'id="flash"' in page
        events = [e["event"] for e in logs]
        assert events.index("dashboard_decision") < events.index("blacklist_decided")
        asked = next(e for e in logs if e["event"] == "dashboard_decision")
        assert (asked["account"], asked["proposal"]) == ("li", engineering.id)
        async with http.post(url, data={"csrf": token, **_dismiss()}) as resp:
            assert resp.status == 409  # decided already
    [decided] = store.blacklist_proposals(ids=[engineering.id])
    assert (decided.state, decided.operator, decided.reason) == (
        DISMISSED,
        "dashboard:li",
        "driver had a breakdown, permit extended",
    )


def _dismiss() -> dict[str, str]:
    return {"decision": "dismiss", "reason": "driver had a breakdown, permit extended"}


async def test_logout_ends_the_session(park: Served) -> None:
    async with client(park.base, "li") as http:
        token = await csrf(http)
        async with http.post("/logout", data={"csrf": "wrong"}) as resp:
            assert resp.status == 403
        async with http.post("/logout", data={"csrf": token}) as resp:
            assert resp.url.path == "/login"
        async with http.get("/", allow_redirects=False) as resp:
            assert resp.status == 303


async def test_a_removed_account_is_logged_out(park: Served, tmp_path: Path) -> None:
    async with client(park.base, "zhao") as http:
        write_accounts(
            tmp_path / "dashboard-accounts",
            {"li": Account("li", DashboardRole.OPERATOR, hash_password(PASSWORD))},
        )
        park.clock.advance(2)  # past the accounts file's re-check interval
        async with http.get("/", allow_redirects=False) as resp:
            assert resp.status == 303


async def read_change(stream: aiohttp.StreamReader) -> dict[str, object]:
    """The next ``change`` event of a ``/live`` stream."""
    event = None
    while True:
        line = (await stream.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "change":
            doc: dict[str, object] = json.loads(line.removeprefix("data: "))
            return doc


async def test_the_live_stream_pushes_the_positions_it_reflects(
    park: Served, store: CentralStore
) -> None:
    async with client(park.base, "zhao") as http, http.get("/live") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        first = await read_change(resp.content)
        assert first["positions"] == {"gate-a": 7, "gate-b": 4}
        c = GateLog("gate-c")
        c.passed("苏E00009", Direction.ENTRY, NOW)
        await asyncio.to_thread(store.store_batch, "gate-c", c.rows)
        async with asyncio.timeout(5):
            while (change := await read_change(resp.content))["positions"] == first["positions"]:
                pass
        assert change["positions"] == {"gate-a": 7, "gate-b": 4, "gate-c": 1}
        async with http.get("/") as page:
            assert 'data-plate="苏E00009"' in await page.text()


async def test_the_newest_live_stream_of_a_session_wins(
    store: CentralStore, dsn: str, tmp_path: Path
) -> None:
    """A left page's stream frees its slot at once (no heartbeat needed to notice); a session
    over its cap ends its oldest stream, which is told so; over the total, 503."""
    settings = DashboardSettings(
        poll_s=0.05, heartbeat_s=3600, max_streams=3, max_streams_per_session=2
    )
    async with serving(dsn, tmp_path, settings=settings) as served:
        dashboard = served.dashboard
        async with client(served.base, "zhao") as http, client(served.base, "li") as other:
            first, second = [await http.get("/live") for _ in range(2)]
            for stream in (first, second):
                await read_change(stream.content)
            second.close()  # the page is left
            await eventually(lambda: dashboard.changes.streams == 1, "the left page's slot is free")
            second, third = [await http.get("/live") for _ in range(2)]
            for stream in (second, third):
                assert stream.status == 200
                await read_change(stream.content)
            assert b"event: displaced" in await first.content.read()  # then it ended
            async with other.get("/live") as resp:
                assert resp.status == 200  # the total (3) holds it
                await read_change(resp.content)
                async with other.get("/live") as newer:  # li's newest wins over li's own
                    assert newer.status == 200
                    assert b"event: displaced" in await resp.content.read()
            await eventually(lambda: dashboard.changes.streams == 2, "li's streams ended")
            for stream in (second, third):
                stream.close()
            await eventually(lambda: dashboard.changes.streams == 0, "the streams closed")


async def test_logged_in_users_get_in_while_idle_connections_flood_the_login(
    store: CentralStore, dsn: str, tmp_path: Path
) -> None:
    settings = DashboardSettings(max_connections=12, max_unauthenticated=6, max_streams=6)
    async with serving(dsn, tmp_path, settings=settings) as served:
        host, port = served.base.removeprefix("http://").split(":")
        flood: list[asyncio.StreamWriter] = []

        async def idle_login_page() -> None:
            reader, writer = await asyncio.open_connection(host, int(port))
            flood.append(writer)
            writer.write(f"GET /login HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)  # then the connection stays open, idle

        try:
            async with client(served.base, "li") as operator:
                for _ in range(20):  # more than all connections together
                    await idle_login_page()
                async with client(served.base, "zhao") as viewer, viewer.get("/") as resp:
                    assert resp.status == 200  # a new connection, a new login
                async with operator.get("/live") as resp:
                    assert resp.status == 200
                    await read_change(resp.content)
            assert served.dashboard.sessions.sessions()
        finally:
            for writer in flood:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()


def test_every_word_in_both_languages() -> None:
    assert LANGS == ("zh", "en")
    assert all(len(pair) == 2 and all(pair) for pair in WORDS.values())


def test_the_accounts_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "accounts"
    argv = ["central", "accounts", "add", "ops", "--role", "operator", "--file", str(path)]
    stdin = sys.stdin
    try:
        sys.stdin = io.StringIO("a-long-passphrase\n")
        assert main([*argv, "--password-stdin"]) == 0
    finally:
        sys.stdin = stdin
    with pytest.raises(SystemExit):
        main(["central", "accounts", "add", "g", "--role", "guard", "--file", str(path)])
    assert "invalid choice: 'guard'" in capsys.readouterr().err
    assert path.read_text().split("\n")[1].startswith("ops operator $scrypt$")
    assert main(["central", "accounts", "list", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dashboard accounts" in out and "console" not in out
    assert main(["central", "web", "--accounts", str(path), "--db", "sqlite:///nope.db"]) == 2
    assert "no store at sqlite:///nope.db" in capsys.readouterr().err
    path.write_text("ops guard $scrypt$n=16384,r=8,p=1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==\n")
    assert main(["central", "web", "--accounts", str(path)]) == 2
    assert "role 'guard' is not one of viewer, operator" in capsys.readouterr().err


async def test_crafted_input_gets_an_error_page_naming_the_field(
    park: Served, store: CentralStore
) -> None:
    nested = base64.urlsafe_b64encode(b"[" * 3000).decode()
    huge = base64.urlsafe_b64encode(b'["gate-e",' + b"1" * 24 + b"]").decode()
    bad = [
        ("/login?lang=xx", 400, "lang:"),
        ("/events?from=0001-01-01T00:00", 400, "from:"),
        ("/events?to=9999-12-31T23:59", 400, "to:"),
        (f"/events?cursor={nested}", 400, "cursor:"),
        (f"/events?cursor={huge}", 400, "cursor:"),
    ]
    async with client(park.base, "li") as http:
        for path, status, message in bad:
            async with http.get(path) as resp:
                page = await resp.text()
            assert (resp.status, resp.content_type) == (status, "text/html"), path
            assert message in page and "internal error" not in page, path
        async with http.get("/proposals", params={"done": "9" * 5000}) as resp:
            assert resp.status == 200
        token = await csrf(http)
        first = store.blacklist_proposals()[0].id
        for raw in ("9" * 5000, "%D9%A3", "\u0663", "0", "-1"):
            async with http.post(f"/proposals/{raw}", data={"csrf": token, **_dismiss()}) as resp:
                assert resp.status == 400 and "expected a proposal number" in await resp.text()
        for reason in ("ok \u202egnp.exe", "zero\u200bwidth", "line\u2028sep"):
            form = {"csrf": token, "decision": "dismiss", "reason": reason}
            async with http.post(f"/proposals/{first}", data=form) as resp:
                page = await resp.text()
            assert resp.status == 400 and "reason:" in page, reason  # the English beside
            assert 'id="error-message">原因：含有控制字符' in page  # a Chinese page's words
        async with http.get("/events?lang=en"), http.get("/events?when=now") as resp:
            page = await resp.text()
        assert "when: unknown search field" in page and 'id="error-detail"' not in page
    assert all(p.state == OPEN for p in store.blacklist_proposals())


async def test_logins_of_one_account_do_not_log_another_out(
    store: CentralStore, dsn: str, tmp_path: Path
) -> None:
    settings = DashboardSettings(max_sessions=4, max_sessions_per_account=2)
    async with serving(dsn, tmp_path, settings=settings) as served:
        async with client(served.base, "li") as operator:
            for _ in range(6):
                async with client(served.base, "zhao"):
                    pass
            async with operator.get("/", allow_redirects=False) as resp:
                assert resp.status == 200
        assert sum(s.account == "zhao" for s in served.dashboard.sessions.sessions()) == 2


async def test_a_silent_broker_holds_no_page_back(
    store: CentralStore, dsn: str, tmp_path: Path
) -> None:
    """An approval waits for a broker that accepts but never answers; the pages read on."""
    stored_park(store)
    store.propose_blacklist(datetime_to_ns(NOW), LIMITS)
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    broker = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = broker.sockets[0].getsockname()[1]
    publishing = Publishing(
        "site-1", Ed25519PrivateKey.generate(), BrokerSettings("127.0.0.1", port, False), timeout=3
    )
    first = store.blacklist_proposals()[0].id
    async with (
        broker,
        serving(dsn, tmp_path, publishing=publishing) as served,
        client(served.base, "li") as operator,
        client(served.base, "zhao") as viewer,
    ):
        token = await csrf(operator)
        form = {"csrf": token, "decision": "approve", "reason": "overstayed twice"}
        approving = asyncio.create_task(operator.post(f"/proposals/{first}", data=form))
        await eventually(lambda: bool(held), "the approval reached the broker")
        async with viewer.get("/roll-call") as resp:
            assert resp.status == 200
        assert not approving.done()  # the viewer's page came while the broker said nothing
        async with await approving as resp:  # the broker's time is up: recorded, not published
            assert resp.status == 502 and "approved (recorded)" in await resp.text()
        for writer in held:
            writer.close()
            await writer.wait_closed()
    [approved] = store.blacklist_proposals(ids=[first])
    assert approved.state == "approved" and approved.pending


async def test_only_the_servers_own_names_are_served(
    store: CentralStore, dsn: str, tmp_path: Path
) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to the dashboard sends
    ``Host: evil.example`` and its own Origin; both are refused."""
    settings = DashboardSettings(server_names=("dashboard.park",))
    async with serving(dsn, tmp_path, settings=settings) as served:
        port = served.base.rsplit(":", 1)[1]
        login = {"account": "li", "password": PASSWORD}
        for host in (f"evil.example:{port}", f"127.0.0.1:{int(port) + 1}"):
            origin = {"Host": host, "Origin": f"http://{host}"}
            async with aiohttp.ClientSession(served.base, headers=origin) as http:
                async with http.get("/login") as resp:
                    assert resp.status == 421 and "--server-name" in await resp.text()
                async with http.post("/login", data=login, allow_redirects=False) as resp:
                    assert resp.status == 421
        async with (
            aiohttp.ClientSession(
                served.base, headers={"Origin": f"http://evil.example:{port}"}
            ) as http,
            http.post("/login", data=login) as resp,
        ):
            assert resp.status == 403  # our Host, another Origin
        named = {"Host": f"dashboard.park:{port}", "Origin": f"http://dashboard.park:{port}"}
        async with (
            aiohttp.ClientSession(served.base, headers=named) as http,
            http.post("/login", data=login, allow_redirects=False) as resp,
        ):
            assert resp.status == 303 and resp.headers["Location"] == "/"


def test_unsafe_setups_are_refused_or_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "dashbaord-accounts"  # a typo
    assert main(["central", "web", "--accounts", str(missing), "--db", "sqlite:///nope.db"]) == 2
    err = capsys.readouterr().err
    assert f"--accounts {missing}: no such file" in err and "central accounts add" in err
    path = tmp_path / "dashboard-accounts"
    write_dashboard_accounts(path)
    path.chmod(0o644)
    argv = ["central", "web", "--accounts", str(path), "--bind", "192.0.2.1"]
    assert main([*argv, "--db", "sqlite:///nope.db"]) == 2  # warned, then no store
    err = capsys.readouterr().err
    assert "readable by other users (mode 0644)" in err and f"chmod 600 {path}" in err
    assert "--bind 192.0.2.1 without --tls-cert/--tls-key" in err
    path.chmod(0o600)
    assert main([*argv[:-2], "--db", "sqlite:///nope.db"]) == 2
    assert "warning" not in capsys.readouterr().err


def test_a_bad_tls_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dashboard-accounts"
    write_dashboard_accounts(path)
    pki = make_pki(tmp_path / "pki")
    key = str(pki.server_key_path)
    argv = ["central", "web", "--accounts", str(path), "--tls-cert", key, "--tls-key", key]
    assert main(argv) == 2
    assert f"--tls-cert/--tls-key: {key}: not a PEM certificate" in capsys.readouterr().err


async def test_what_the_pages_show_reads_right(park: Served, store: CentralStore) -> None:
    c = GateLog("gate-c")  # events, but never a status
    c.passed("苏E00009", Direction.ENTRY, NOW)
    await asyncio.to_thread(store.store_batch, "gate-c", c.rows)
    async with client(park.base, "zhao") as http:
        async with http.get("/gates") as resp:
            page = await resp.text()
        row = page[page.index('data-gate="gate-c"') :].split("</tr>")[0]
        assert "未上报状态" in row and "从未上线" not in row
        async with http.get("/events", params={"plate": "苏E00002", "gate": "gate-a"}) as resp:
            page = html.unescape(await resp.text())
        assert '"permit_until": "2026-11-28T18:00:00+08:00"' in page  # the page's zone
        assert 'href="?plate=%E8%8B%8FE00002&gate=gate-a&lang=en"' in page  # the search kept
        async with http.get("/roll-call") as resp:
            page = await resp.text()
        assert '<span class="no-print"> · <a href="/roll-call">' in page  # not printed
