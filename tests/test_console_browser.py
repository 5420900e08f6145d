"""The console in Debian's Chromium, against a recording desk: log in on the Chinese page,
see the pending vehicle, switch to English, confirm."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from edgegate.config.models import ConsoleSettings
from edgegate.console.accounts import Account, AccountStore, hash_password, write_accounts
from edgegate.console.app import console_app
from edgegate.console.desk import DeskAction, Role
from edgegate.core import events as ev
from edgegate.core.clock import ManualClock
from tests.browser import browser, page, screenshot
from tests.console_desk import RecordingDesk
from tests.eventually import eventually

__all__ = ["browser", "page"]  # fixtures

PASSWORD = "booth-secret-42"


@pytest.fixture
async def served(tmp_path: Path, clock: ManualClock) -> AsyncIterator[tuple[str, RecordingDesk]]:
    path = tmp_path / "accounts"
    write_accounts(path, {"wang": Account("wang", Role.GUARD, hash_password(PASSWORD))})
    desk = RecordingDesk()
    recorded: list[ev.Event] = []

    async def audit(event: ev.Event) -> int:
        recorded.append(event)
        return len(recorded)

    settings = ConsoleSettings(accounts_file=str(path))
    app = console_app(desk, AccountStore.open(path, clock.mono_ns), settings, clock, audit)
    server: TestServer = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", desk
    finally:
        await server.close()


async def test_log_in_see_the_pending_vehicle_switch_to_english_and_confirm(
    page: Page, served: tuple[str, RecordingDesk]
) -> None:
    base, desk = served
    await page.goto(base + "/")
    await expect(page).to_have_url(base + "/login")
    await expect(page.locator("h1")).to_have_text("值守台登录")
    await page.fill("#account", "wang")
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await expect(page).to_have_url(base + "/")

    lane = page.locator('[data-lane="in-1"]')
    pending = lane.locator('[data-pending="42"]')
    await expect(pending.locator('[data-field="plate"]')).to_have_text("苏E1234S")
    await expect(lane.locator('[data-field="state"]')).to_have_text("等待值守确认")
    await expect(pending.locator('[data-reason="fuzzy-match"]')).to_have_text(
        "模糊匹配（一个易混字符）"
    )
    await expect(pending.locator('[data-field="matched-plate"]')).to_have_text("苏E12345")
    await expect(page.locator("#incident-on")).to_be_hidden()  # a guard's page
    await screenshot(page, "console-pending-zh")

    await page.click("#lang-switch")
    await expect(lane.locator('[data-field="state"]')).to_have_text("Awaiting guard")
    await expect(pending.locator('button[data-action="confirm"]')).to_have_text("Confirm")
    await page.reload()  # the choice is remembered
    await expect(lane.locator('[data-field="state"]')).to_have_text("Awaiting guard")

    await pending.locator('button[data-action="confirm"]').click()
    await page.fill("#dialog-reason", "driver known, plate dirty")
    await page.click("#dialog-submit")
    await eventually(lambda: len(desk.requests) == 1, "the confirmation at the desk")
    [request] = desk.requests
    got: dict[str, Any] = {
        "action": request.action,
        "operator": request.operator,
        "lane": request.lane,
        "decision_seq": request.decision_seq,
        "reason": request.reason,
    }
    assert got == {
        "action": DeskAction.CONFIRM,
        "operator": "console:wang",
        "lane": "in-1",
        "decision_seq": 42,
        "reason": "driver known, plate dirty",
    }
    # The desk's next view arrives over the WebSocket: the vehicle is no longer pending.
    await expect(page.locator('[data-lane="in-1"][data-state="opening"]')).to_be_visible()
    await expect(page.locator("#outcome")).to_contain_text("Confirm")
    await screenshot(page, "console-confirmed-en")
