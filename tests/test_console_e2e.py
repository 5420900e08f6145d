"""The guard's console end to end: Debian's Chromium against the real daemon.

Each test runs a :class:`Gate` with ``[http]`` on a free 127.0.0.1 port and ``[console]``
(accounts made by ``edgegate accounts add``), two lanes on simulated PLCs of the guard-panel
profile (Modbus TCP on 127.0.0.1) and simulated plate readers (ptys): ``ev``, an exit and
the gate's evacuation lane, and ``in``, an entry. A guard (or supervisor) uses the console
as a person would — typing, clicking, reading the page — and the test checks what the PLC
simulators did and what the gate's log holds. Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import WSCloseCode, WSMsgType
from playwright.async_api import Browser, Locator, Page, expect

from edgegate.cli.main import main
from edgegate.config import GateConfig, parse_config
from edgegate.console.sessions import COOKIE
from edgegate.core.events import (
    AccessDecided,
    BarrierCommand,
    BarrierCommanded,
    ConsoleLogin,
    ConsoleLoginRefused,
    GateMode,
    GuardWaitExpired,
    Loop,
    ManualAction,
    ManualActionKind,
    ModeChanged,
    ModeSource,
)
from edgegate.core.lane import BarrierOnline
from edgegate.sync.signing import generate_keypair
from tests.browser import module_browser, screenshot
from tests.eventually import eventually
from tests.gate_harness import (
    ALLOWED,
    BLACKLISTED,
    Logged,
    RunningGate,
    gate_toml,
    lane,
    sim_plc,
    sim_reader,
    wait_position,
)
from tests.services.mosquitto import Broker, BrokerFactory, free_port
from tests.test_desk import AheadClock

__all__ = ["module_browser"]  # fixture

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

GATE = "e2e-gate"
PANEL = "barrier-plc-guard-panel"
FUZZY = "苏E1234S"  # one OCR-confusable character (5 read as S) from ALLOWED
GUARD, GUARD_PASSWORD = "wang", "booth-secret-42"
SUPERVISOR, SUPERVISOR_PASSWORD = "li", "shift-lead-77"
MAX_FAILED_LOGINS = 3
NO_PENDING = "无待确认车辆"


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """conftest's leak check, in the module's loop (the conftest one runs in another loop)."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not current]
    for task in leaked:
        task.cancel()
    assert not leaked, f"test leaked tasks: {leaked}"


NewPage = Callable[[], Awaitable[Page]]


@pytest_asyncio.fixture(loop_scope="module")
async def new_page(module_browser: Browser) -> AsyncIterator[NewPage]:
    """Opens a page in a fresh browser context (its own cookies: one person each)."""
    contexts = []

    async def opened() -> Page:
        context = await module_browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        return await context.new_page()

    try:
        yield opened
    finally:
        for context in contexts:
            await context.close()


# --- the gate -------------------------------------------------------------------------------


def add_accounts(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The accounts file, written by ``edgegate accounts add`` as an operator would."""
    for name, role, password in (
        (GUARD, "guard", GUARD_PASSWORD),
        (SUPERVISOR, "supervisor", SUPERVISOR_PASSWORD),
    ):
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        args = ["accounts", "add", name, "--role", role, "--password-stdin"]
        assert main([*args, "--file", str(folder / "accounts")]) == 0


def booth_config(
    tmp_path: Path, *, broker: Broker | None = None, timings: dict[str, str] | None = None
) -> GateConfig:
    text = gate_toml(
        tmp_path / "gate.db",
        {
            "plc-ev": sim_plc(profile=PANEL),
            "cam-ev": sim_reader(),
            "plc-in": sim_plc(profile=PANEL),
            "cam-in": sim_reader(),
        },
        [lane("ev", "exit", "cam-ev", "plc-ev"), lane("in", "entry", "cam-in", "plc-in")],
        timings=timings,
    )
    text += '\n[incident]\nevacuation_lanes = ["ev"]\n'
    text += f'\n[http]\nbind = "127.0.0.1"\nport = {free_port()}\n'
    text += f'\n[console]\naccounts_file = "accounts"\nmax_failed_logins = {MAX_FAILED_LOGINS}\n'
    if broker is not None:
        _, public_pem = generate_keypair()
        (tmp_path / "central.pub").write_bytes(public_pem)
        (tmp_path / "mqtt-password").write_text(broker.add_gate(GATE))
        text += (
            f'\n[sync]\nbroker = "mqtt://127.0.0.1:{broker.plain_port}"\n'
            'password_file = "mqtt-password"\ncentral_public_key = "central.pub"\n'
            'reconnect_max = "1s"\n'
        )
    return parse_config(text, base_dir=tmp_path)


@asynccontextmanager
async def booth_gate(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    broker: Broker | None = None,
    timings: dict[str, str] | None = None,
    clock: AheadClock | None = None,
) -> AsyncIterator[tuple[RunningGate, str]]:
    """The running gate and its console's base URL."""
    add_accounts(tmp_path, monkeypatch)
    config = booth_config(tmp_path, broker=broker, timings=timings)
    running = RunningGate(config)
    if clock is not None:
        running.gate.clock = clock
    async with running as g:
        assert g.gate.web is not None and g.gate.web.console is not None
        assert config.http is not None
        yield g, f"http://127.0.0.1:{config.http.port}"


# --- the guard's moves ----------------------------------------------------------------------


async def type_into(field: Locator, text: str) -> None:
    await field.click()
    await field.press_sequentially(text)


async def log_in(page: Page, base: str, name: str, password: str) -> None:
    """Open the console, get the (Chinese) login page, type name and password, submit."""
    await page.goto(base + "/")
    await expect(page).to_have_url(base + "/login")
    await expect(page.locator("h1")).to_have_text("值守台登录")
    await type_into(page.locator("#account"), name)
    await type_into(page.locator("#password"), password)
    await page.locator("#login-submit").click()


async def logged_in(page: Page, base: str, name: str, password: str) -> None:
    await log_in(page, base, name, password)
    await expect(page).to_have_url(base + "/")
    await expect(page.locator("#gate-mode")).to_have_text("模式: 正常")
    await expect(page.locator("#who")).to_contain_text(name)


def card(page: Page, lane_id: str) -> Locator:
    return page.locator(f'article[data-lane="{lane_id}"]')


async def act(page: Page, button: Locator, *, reason: str = "", plate: str | None = None) -> None:
    """Click an action's button, fill its dialog as asked, submit."""
    await button.click()
    dialog = page.locator("#action-dialog")
    await expect(dialog).to_be_visible()
    if plate is not None:
        await type_into(page.locator("#dialog-plate"), plate)
    if reason:
        await type_into(page.locator("#dialog-reason"), reason)
    await page.locator("#dialog-submit").click()
    await expect(dialog).to_be_hidden()


async def pending_vehicle(g: RunningGate, lane_id: str = "in") -> Logged[AccessDecided]:
    """A vehicle drives onto ``lane_id`` and its fuzzy plate asks for a guard."""
    head = g.log.head
    await g.road(lane_id).arrive(FUZZY)
    decided = await g.log.wait_for(AccessDecided, lane=lane_id, after=head)
    assert decided.event.verdict == "confirm", decided.event
    return decided


async def fetch_json(page: Page, path: str, body: dict[str, Any], token: str | None) -> Any:
    """A POST from the page's own JavaScript: its cookies and Origin, the given CSRF token."""
    return await page.evaluate(
        """async ([path, body, token]) => {
            const headers = {"Content-Type": "application/json"};
            if (token !== null) headers["X-CSRF-Token"] = token;
            const r = await fetch(path, {method: "POST", credentials: "same-origin",
                                         headers: headers, body: JSON.stringify(body)});
            return {status: r.status, body: await r.json()};
        }""",
        [path, body, token],
    )


async def csrf_token(page: Page) -> str:
    token: str = await page.evaluate(
        """async () => (await (await fetch("/api/me")).json()).csrf_token"""
    )
    return token


def is_open(e: BarrierCommanded) -> bool:
    return e.command is BarrierCommand.OPEN


# --- 1. log in; a fuzzy plate is pending ----------------------------------------------------


async def test_log_in_and_a_fuzzy_plate_is_pending_with_its_reasons(
    new_page: NewPage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with booth_gate(tmp_path, monkeypatch) as (g, base):
        page = await new_page()
        await logged_in(page, base, GUARD, GUARD_PASSWORD)
        (login,) = g.log.of(ConsoleLogin)
        assert (login.event.account, login.event.role) == (GUARD, "guard")
        await expect(card(page, "in").locator('[data-field="state"]')).to_have_text("空闲")
        await screenshot(page, "e2e-1-logged-in-zh")

        decided = await pending_vehicle(g)
        lane_in = card(page, "in")
        pending = lane_in.locator(f'[data-pending="{decided.seq}"]')
        await expect(lane_in.locator('[data-field="state"]')).to_have_text("等待值守确认")
        await expect(pending.locator('[data-field="plate"]')).to_have_text(FUZZY)
        await expect(pending.locator('[data-field="confidence"]')).to_have_text("95%")
        await expect(pending.locator('[data-field="colour"]')).to_have_text("蓝牌")
        await expect(pending.locator('[data-field="matched-plate"]')).to_have_text(ALLOWED)
        await expect(pending.locator('[data-reason="fuzzy-match"]')).to_have_text(
            "模糊匹配（一个易混字符）"
        )
        shown = await pending.locator("[data-reason]").evaluate_all(
            "nodes => nodes.map(n => n.dataset.reason)"
        )
        assert shown == list(decided.event.reasons)
        await expect(pending.locator('[data-field="waited"]')).to_contain_text("秒")
        await expect(card(page, "ev").locator("[data-pending]")).to_have_count(0)
        await screenshot(page, "e2e-1-fuzzy-plate-pending-zh")
        await g.road("in").set(Loop.ARMING, False)  # it backs out
        await expect(lane_in.locator(".quiet")).to_have_text(NO_PENDING)


# --- 2. Confirm opens the barrier, logged first ---------------------------------------------


async def test_confirm_opens_the_barrier_and_the_action_is_logged_first(
    new_page: NewPage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with booth_gate(tmp_path, monkeypatch) as (g, base):
        page = await new_page()
        await logged_in(page, base, GUARD, GUARD_PASSWORD)
        trail = g.trail("plc-in")
        decided = await pending_vehicle(g)
        lane_in = card(page, "in")
        pending = lane_in.locator(f'[data-pending="{decided.seq}"]')
        await expect(pending.locator('[data-field="plate"]')).to_have_text(FUZZY)

        await pending.locator('button[data-action="confirm"]').click()
        await expect(page.locator("#dialog-title")).to_have_text("确认放行")
        await expect(page.locator("#dialog-reason-label")).to_have_text("原因说明（可选）")
        await type_into(page.locator("#dialog-reason"), "司机出示证件")
        await screenshot(page, "e2e-2-confirm-dialog")
        await page.locator("#dialog-submit").click()
        await expect(page.locator("#outcome")).to_have_text("确认放行: 已执行")

        await wait_position(g.plc("plc-in"), 1.0)
        (manual,) = g.log.of(ManualAction, lane="in")
        assert manual.event.action is ManualActionKind.CONFIRM
        assert (manual.event.operator, manual.event.decision_seq) == (
            f"console:{GUARD}",
            decided.seq,
        )
        assert manual.event.reason == "司机出示证件"
        command = await g.log.wait_for(BarrierCommanded, lane="in", after=decided.seq)
        assert command.event.command is BarrierCommand.OPEN
        assert command.seq > manual.seq  # logged, then acted on
        index, _ = await trail.wait(BarrierCommand.OPEN)
        assert trail.head_at(index) >= command.seq  # durable before the PLC took it
        await expect(lane_in.locator('[data-field="arm"]')).to_have_text("抬起")
        await expect(lane_in.locator("[data-pending]")).to_have_count(0)
        await screenshot(page, "e2e-2-confirmed-arm-up")
        await g.road("in").cross()
        await wait_position(g.plc("plc-in"), 0.0)


# --- 3. a corrected plate on the blacklist is refused ---------------------------------------


async def test_correcting_to_a_blacklisted_plate_is_refused(
    new_page: NewPage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with booth_gate(tmp_path, monkeypatch) as (g, base):
        page = await new_page()
        await logged_in(page, base, GUARD, GUARD_PASSWORD)
        decided = await pending_vehicle(g)
        lane_in = card(page, "in")
        pending = lane_in.locator(f'[data-pending="{decided.seq}"]')
        await expect(pending.locator('[data-field="plate"]')).to_have_text(FUZZY)

        await act(
            page,
            pending.locator('button[data-action="correct"]'),
            plate=BLACKLISTED,
            reason="S 实为 9",
        )
        # Not "done": the correction's outcome is the new decision, here a refusal.
        sent = "更正车牌: 更正已记录，请看新的判定结果"
        await expect(page.locator("#outcome")).to_have_text(sent)
        (manual,) = g.log.of(ManualAction, lane="in")
        assert manual.event.action is ManualActionKind.CORRECT
        assert (manual.event.plate, manual.event.operator) == (BLACKLISTED, f"console:{GUARD}")
        assert manual.event.decision_seq == decided.seq
        corrected = await g.log.wait_for(AccessDecided, lane="in", after=manual.seq)
        assert (corrected.event.plate, corrected.event.verdict) == (BLACKLISTED, "deny")
        assert "blacklisted" in corrected.event.reasons
        assert (corrected.event.corrected_by, corrected.event.corrects_seq) == (
            f"console:{GUARD}",
            decided.seq,
        )

        newest = lane_in.locator(f'[data-decision="{corrected.seq}"]')
        await expect(newest).to_have_class("decision verdict-deny")
        await expect(newest.locator(".verdict")).to_have_text("拒绝")
        await expect(newest.locator(".plate-small")).to_have_text(BLACKLISTED)
        await expect(newest.locator(".why")).to_contain_text("黑名单车辆")
        await expect(newest.locator(".by")).to_have_text(f"更正人: console:{GUARD}")
        await expect(lane_in.locator('[data-field="state"]')).to_have_text("车辆到达")
        await expect(lane_in.locator(".quiet")).to_have_text(NO_PENDING)
        await screenshot(page, "e2e-3-corrected-to-blacklisted-refused")
        await asyncio.sleep(0.5)  # ten PLC polls: time enough for a wrong open
        assert g.log.of(BarrierCommanded, lane="in") == []
        assert g.plc("plc-in").commands == [] and g.plc("plc-in").position == 0.0
        await expect(lane_in.locator('[data-field="arm"]')).to_have_text("落下")
        await g.road("in").set(Loop.ARMING, False)  # it backs out


# --- 4. wrong passwords are refused, then lock out -------------------------------------------


async def test_wrong_passwords_are_refused_and_lock_the_account_out(
    new_page: NewPage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with booth_gate(tmp_path, monkeypatch) as (g, base):
        page = await new_page()
        error = page.locator("#login-error")
        for attempt in range(MAX_FAILED_LOGINS):
            await log_in(page, base, GUARD, f"not-the-password-{attempt}")
            await expect(page).to_have_url(base + "/login?error=refused")
            await expect(error).to_have_text("账号或密码错误。")
        await screenshot(page, "e2e-4-wrong-password-refused")

        await log_in(page, base, GUARD, GUARD_PASSWORD)  # the right one, too late
        await expect(page).to_have_url(base + "/login?error=locked")
        await expect(error).to_have_text("登录失败次数过多，请稍后再试。")
        await screenshot(page, "e2e-4-locked-out")
        assert [c["name"] for c in await page.context.cookies()] == []
        await page.goto(base + "/")
        await expect(page).to_have_url(base + "/login")

        refusals = [
            (r.event.account, r.event.address, r.event.reason)
            for r in g.log.of(ConsoleLoginRefused)
        ]
        assert refusals == [(GUARD, "127.0.0.1", "bad-credentials")] * MAX_FAILED_LOGINS + [
            (GUARD, "127.0.0.1", "locked-out")
        ]
        assert g.log.of(ConsoleLogin) == []
        logged = "\n".join(repr(e.event) for e in g.log.all())
        assert "not-the-password" not in logged and GUARD_PASSWORD not in logged


# --- 5. no CSRF token, no action --------------------------------------------------------------


async def test_a_state_changing_request_without_the_csrf_token_is_refused(
    new_page: NewPage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with booth_gate(tmp_path, monkeypatch) as (g, base):
        page = await new_page()
        await logged_in(page, base, GUARD, GUARD_PASSWORD)
        decided = await pending_vehicle(g)
        lane_in = card(page, "in")
        await expect(lane_in.locator(f'[data-pending="{decided.seq}"]')).to_be_visible()
        confirm = {"action": "confirm", "lane": "in", "decision_seq": decided.seq}
        head = g.log.head

        # From the page's own context: its session cookie and Origin, but no token.
        answer = await fetch_json(page, "/api/actions", confirm, None)
        refused = {
            "ok": False,
            "code": "bad-csrf-token",
            "message": "missing or wrong X-CSRF-Token",
        }
        assert answer == {"status": 403, "body": refused}
        forged = await fetch_json(page, "/api/actions", confirm, "forged-token")
        assert (forged["status"], forged["body"]["code"]) == (403, "bad-csrf-token")

        # A raw client holding the valid session cookie and sending the right Origin.
        (cookie,) = [c for c in await page.context.cookies() if c["name"] == COOKIE]
        headers = {"Origin": base, "Cookie": f"{COOKIE}={cookie['value']}"}
        async with aiohttp.ClientSession() as client:
            async with client.post(base + "/api/actions", json=confirm, headers=headers) as r:
                assert r.status == 403
                assert (await r.json())["code"] == "bad-csrf-token"
            async with client.post(base + "/logout", headers=headers) as r:
                assert r.status == 403  # nor a logout
            # With the session's token the same client gets past the check (to be refused
            # by the desk: this decision is not the pending one), so the token was what failed.
            async with client.get(base + "/api/me", headers=headers) as r:
                token = (await r.json())["csrf_token"]
            stale = {**confirm, "decision_seq": decided.seq - 1}
            with_token = {**headers, "X-CSRF-Token": token}
            async with client.post(base + "/api/actions", json=stale, headers=with_token) as r:
                assert (r.status, (await r.json())["code"]) == (409, "stale")

        await asyncio.sleep(0.5)  # ten PLC polls: time enough for a wrong open
        # Nothing logged of what was asked (a PLC's fault under load may be, but no action).
        asked = ("manual.action", "barrier.commanded", "access.decided", "console.logout")
        assert [t for t in g.log.types(after=head) if t in asked] == []
        assert g.plc("plc-in").commands == [] and g.plc("plc-in").position == 0.0
        await expect(lane_in.locator('[data-field="state"]')).to_have_text("等待值守确认")
        await expect(lane_in.locator(f'[data-pending="{decided.seq}"]')).to_be_visible()
        await screenshot(page, "e2e-5-csrf-refused-still-pending")
        await g.road("in").set(Loop.ARMING, False)  # it backs out


# --- 6. incident mode: supervisors only -------------------------------------------------------


async def test_a_guard_cannot_switch_incident_mode_and_a_supervisor_can(
    new_page: NewPage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with booth_gate(tmp_path, monkeypatch) as (g, base):
        guard = await new_page()
        await logged_in(guard, base, GUARD, GUARD_PASSWORD)
        await expect(guard.locator("#incident-on")).to_be_hidden()
        await expect(guard.locator("#incident-off")).to_be_hidden()
        await expect(guard.locator('[data-action^="incident"]:visible')).to_have_count(0)

        # Forged from the guard's page, with the guard's own valid token.
        forged = await fetch_json(
            guard,
            "/api/actions",
            {"action": "incident-on", "reason": "I want the gate open"},
            await csrf_token(guard),
        )
        assert (forged["status"], forged["body"]["code"]) == (403, "forbidden")
        await asyncio.sleep(0.5)  # ten PLC polls: time enough for a wrong open
        assert g.gate.mode is GateMode.NORMAL and g.log.of(ModeChanged) == []
        assert g.plc("plc-ev").commands == []
        await expect(guard.locator("#gate-mode")).to_have_text("模式: 正常")
        await screenshot(guard, "e2e-6-guard-has-no-incident-button")

        supervisor = await new_page()
        await logged_in(supervisor, base, SUPERVISOR, SUPERVISOR_PASSWORD)
        incident_on = supervisor.locator("#incident-on")
        await expect(incident_on).to_have_text("启动应急模式")
        await incident_on.click()
        await supervisor.locator("#dialog-submit").click()  # no reason yet: the page asks
        await expect(supervisor.locator("#dialog-error")).to_have_text("请填写原因。")
        await type_into(supervisor.locator("#dialog-reason"), "四号装置氯气泄漏")
        await supervisor.locator("#dialog-submit").click()

        changed = await g.log.wait_for(ModeChanged)
        assert (changed.event.mode, changed.event.previous) == (GateMode.INCIDENT, GateMode.NORMAL)
        assert (changed.event.source, changed.event.operator) == (
            ModeSource.LOCAL,
            f"console:{SUPERVISOR}",
        )
        assert changed.event.reason == "四号装置氯气泄漏"
        held = await g.log.wait_for(BarrierCommanded, lane="ev", where=is_open)
        assert held.seq > changed.seq  # logged, then acted on
        await wait_position(g.plc("plc-ev"), 1.0)
        for page in (supervisor, guard):
            await expect(page.locator("#gate-mode")).to_have_text("模式: 应急")
            await expect(page.locator("#incident-banner")).to_be_visible()
            await expect(card(page, "ev").locator('[data-field="state"]')).to_have_text("保持开启")
            await expect(card(page, "ev").locator('[data-field="held"]')).to_be_visible()
        await expect(supervisor.locator("#incident-off")).to_be_visible()
        await screenshot(supervisor, "e2e-6-supervisor-declared-incident")
        await screenshot(guard, "e2e-6-guard-sees-incident")
        assert g.log.of(BarrierCommanded, lane="in") == []


# --- 7. the fire alarm, with the broker down ---------------------------------------------------


async def test_the_fire_alarm_opens_the_evacuation_lane_with_the_broker_stopped(
    new_page: NewPage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_broker: BrokerFactory,
) -> None:
    broker = make_broker(["central", GATE])
    async with booth_gate(tmp_path, monkeypatch, broker=broker) as (g, base):
        uplink = g.gate.uplink
        assert uplink is not None
        async with asyncio.timeout(20):
            await uplink.connected.wait()
        await broker.astop()
        page = await new_page()
        await logged_in(page, base, GUARD, GUARD_PASSWORD)
        await eventually(lambda: not uplink.connected.is_set(), "the uplink sees the broker gone")

        g.plc("plc-ev").set_input("incident_alarm", True)
        on = await g.log.wait_for(ModeChanged)
        assert (on.event.mode, on.event.source) == (GateMode.INCIDENT, ModeSource.PLC_INPUT)
        assert on.event.operator == "plc:plc-ev:incident_alarm"
        held = await g.log.wait_for(BarrierCommanded, lane="ev", where=is_open)
        assert held.seq > on.seq
        await wait_position(g.plc("plc-ev"), 1.0)
        await expect(page.locator("#gate-mode")).to_have_text("模式: 应急")
        await expect(page.locator("#incident-banner")).to_have_text("应急模式：疏散车道保持开启")
        lane_ev = card(page, "ev")
        await expect(lane_ev.locator('[data-field="state"]')).to_have_text("保持开启")
        await expect(lane_ev.locator('[data-field="held"]')).to_be_visible()
        await expect(lane_ev.locator('[data-field="arm"]')).to_have_text("抬起")
        await expect(lane_ev.locator("h2 .tag")).to_have_text("疏散车道")
        await expect(card(page, "in").locator('[data-field="held"]')).to_have_count(0)
        await screenshot(page, "e2e-7-fire-alarm-incident-broker-down")
        assert g.log.of(BarrierCommanded, lane="in") == []
        assert g.plc("plc-in").position == 0.0
        assert not uplink.connected.is_set()

        g.plc("plc-ev").set_input("incident_alarm", False)
        await g.log.wait_for(ModeChanged, after=on.seq)
        await wait_position(g.plc("plc-ev"), 0.0)
        await expect(page.locator("#gate-mode")).to_have_text("模式: 正常")
        await expect(page.locator("#incident-banner")).to_be_hidden()
        await expect(lane_ev.locator('[data-field="state"]')).to_have_text("空闲")
        await screenshot(page, "e2e-7-fire-alarm-cleared")


# --- 8. open and hold, release; a vehicle nobody answers for ---------------------------------


async def test_open_and_hold_then_release_with_reasons(
    new_page: NewPage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with booth_gate(tmp_path, monkeypatch) as (g, base):
        page = await new_page()
        await logged_in(page, base, GUARD, GUARD_PASSWORD)
        lane_in, plc = card(page, "in"), g.plc("plc-in")
        hold = lane_in.locator('button[data-action="open-hold"]')
        await expect(hold).to_have_text("开闸保持")
        await hold.click()
        await expect(page.locator("#dialog-reason-label")).to_have_text("原因说明")
        await page.locator("#dialog-submit").click()  # no reason: the page asks for one
        await expect(page.locator("#dialog-error")).to_have_text("请填写原因。")
        assert g.log.of(ManualAction) == []
        await type_into(page.locator("#dialog-reason"), "引导消防车进场")
        await page.locator("#dialog-submit").click()
        await expect(page.locator("#outcome")).to_have_text("开闸保持: 已执行")

        (opened,) = g.log.of(ManualAction, lane="in")
        assert (opened.event.action, opened.event.operator, opened.event.reason) == (
            ManualActionKind.OPEN,
            f"console:{GUARD}",
            "引导消防车进场",
        )
        command = await g.log.wait_for(BarrierCommanded, lane="in", where=is_open)
        assert command.seq > opened.seq and command.event.cause_seq == opened.seq
        await wait_position(plc, 1.0)
        await expect(lane_in.locator('[data-field="state"]')).to_have_text("保持开启")
        await expect(lane_in.locator('[data-field="held"]')).to_be_visible()
        await screenshot(page, "e2e-8-open-and-hold")

        await act(page, lane_in.locator('button[data-action="release"]'), reason="消防车已通过")
        await expect(page.locator("#outcome")).to_have_text("恢复自动: 已执行")
        released = await g.log.wait_for(ManualAction, lane="in", after=opened.seq)
        assert (released.event.action, released.event.operator, released.event.reason) == (
            ManualActionKind.RELEASE,
            f"console:{GUARD}",
            "消防车已通过",
        )
        await wait_position(plc, 0.0)
        await expect(lane_in.locator('[data-field="state"]')).to_have_text("空闲")
        await expect(lane_in.locator('[data-field="arm"]')).to_have_text("落下")
        await expect(lane_in.locator('button[data-action="open-hold"]')).to_be_visible()
        await screenshot(page, "e2e-8-released")


async def test_a_vehicle_nobody_answers_for_leaves_the_pending_list(
    new_page: NewPage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = AheadClock()
    timings = {"guard_wait": "10s"}  # the lowest allowed
    async with booth_gate(tmp_path, monkeypatch, timings=timings, clock=clock) as (g, base):
        page = await new_page()
        await logged_in(page, base, GUARD, GUARD_PASSWORD)
        decided = await pending_vehicle(g)
        lane_in = card(page, "in")
        pending = lane_in.locator(f'[data-pending="{decided.seq}"]')
        await expect(pending.locator('[data-field="plate"]')).to_have_text(FUZZY)
        # the 10 s wait, counted down on the page
        await expect(pending.locator('[data-field="gives-up"]')).to_have_text(
            re.compile(r"^\d+ 秒$")
        )
        await screenshot(page, "e2e-8-waiting-for-a-guard")

        clock.ahead += 11 * 10**9
        # The lane sleeps until its deadline on the clock as it was: any input wakes it to
        # look at the clock again (this one changes nothing: the PLC is online).
        g.gate.lanes["in"].submit(BarrierOnline(True))
        expired = await g.log.wait_for(GuardWaitExpired, lane="in", after=decided.seq)
        assert (expired.event.decision_seq, expired.event.plate) == (decided.seq, FUZZY)
        assert expired.event.waited_ms >= 10_000
        await expect(lane_in.locator("[data-pending]")).to_have_count(0)
        await expect(lane_in.locator(".quiet")).to_have_text(NO_PENDING)
        await expect(lane_in.locator('[data-field="state"]')).to_have_text("车辆到达")
        await screenshot(page, "e2e-8-guard-wait-expired")
        assert g.log.of(BarrierCommanded, lane="in") == []
        await g.road("in").set(Loop.ARMING, False)  # it backs out


# --- the gate stopping with a console open ----------------------------------------------------


async def test_stopping_the_gate_tells_the_open_console_it_is_going_away(
    new_page: NewPage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with booth_gate(tmp_path, monkeypatch) as (g, base):
        page = await new_page()
        await logged_in(page, base, GUARD, GUARD_PASSWORD)
        (cookie,) = [c for c in await page.context.cookies() if c["name"] == COOKIE]
        headers = {"Origin": base, "Cookie": f"{COOKIE}={cookie['value']}"}
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(base + "/api/live", headers=headers) as ws,
        ):
            assert (await ws.receive_json(timeout=10))["type"] == "view"
            g.stop.set()
            msg = await ws.receive(timeout=10)
            while msg.type is WSMsgType.TEXT:  # views sent before the stop
                msg = await ws.receive(timeout=10)
            assert (msg.type, msg.data) == (WSMsgType.CLOSE, WSCloseCode.GOING_AWAY)
        await expect(page.locator("#connection-lost")).to_be_visible()
        await screenshot(page, "e2e-9-gate-stopped-connection-lost")
