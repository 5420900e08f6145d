"""The control room's dashboard in Debian's Chromium, over a real sink fed by simulated
gates through a real mosquitto: log in, see a vehicle entering at one gate appear inside and
disappear when it leaves at another, the incident banner and live roll call, approve a
proposal (its signed delta reaches the gate through the broker), print the roll call."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from edgegate.central import publish as pub
from edgegate.central.dashboard import DashboardSettings, Publishing
from edgegate.central.store import open_store
from edgegate.cli.main import main
from edgegate.core.domain import Direction, VehicleCategory
from edgegate.sync.signing import KIND_ALLOWLIST, decode_publication, delta_changes, open_signed
from tests.browser import SCREENSHOTS, browser, page, screenshot
from tests.services.mosquitto import Broker
from tests.test_central_blacklist import LIMITS
from tests.test_central_park import park_logs
from tests.test_central_sink import SITE, fake_gate, options, running, settings
from tests.test_cli_central import body, listening, receive
from tests.test_dashboard_http import PASSWORD, serving

__all__ = ["browser", "page"]  # fixtures

pytestmark = pytest.mark.timeout(180)


async def log_in(page: Page, base: str, account: str) -> None:
    await page.goto(base + "/")
    await expect(page).to_have_url(base + "/login")
    await expect(page.locator("h1")).to_have_text("园区监控台登录")
    await page.fill("#account", account)
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await expect(page).to_have_url(base + "/")


async def test_a_vehicle_enters_at_one_gate_leaves_at_another_then_approve_and_print(
    page: Page, mosquitto_broker: Broker, tmp_path: Path
) -> None:
    dsn = f"sqlite:///{tmp_path / 'central.db'}"
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    publishing = Publishing(
        SITE,
        pub.load_signing_key(tmp_path / "keys" / "central.key"),
        settings(mosquitto_broker),
        gates=("gate-a",),
    )
    dashboard_settings = DashboardSettings(poll_s=0.1, dwell_limits=LIMITS)
    now = datetime.now().astimezone()
    a, b = park_logs()  # two overstays inside, gate B in incident mode
    plate = "苏E77777"
    async with (
        running(options(mosquitto_broker, dsn)),
        fake_gate(mosquitto_broker, "gate-a") as gate_a,
        fake_gate(mosquitto_broker, "gate-b") as gate_b,
    ):
        await gate_a.send(a.rows)
        await gate_b.send(b.rows)
        await gate_a.wait_ack(lambda ack: ack.seq == len(a.rows))
        await gate_b.wait_ack(lambda ack: ack.seq == len(b.rows))
        with open_store(dsn) as s:
            s.propose_blacklist(time.time_ns(), LIMITS)
        async with serving(
            dsn, tmp_path, publishing=publishing, settings=dashboard_settings
        ) as served:
            base = served.base
            await log_in(page, base, "li")
            inside = page.locator(f'#inside tr[data-plate="{plate}"]')
            await expect(page.locator("#incident-banner")).to_contain_text("gate-b")
            await expect(inside).to_have_count(0)

            a.passed(plate, Direction.ENTRY, now, VehicleCategory.HAZMAT)
            await gate_a.send(a.rows[-1:])
            await expect(inside).to_have_count(1)  # pushed: no reload
            await expect(inside).to_contain_text("gate-a")
            await screenshot(page, "dashboard-park-zh")

            await page.click("#nav-roll-call")
            roll = page.locator(f'tr[data-plate="{plate}"]')
            await expect(roll).to_have_count(1)
            await expect(page.locator("#roll-summary")).to_contain_text("园区内 3 辆")
            b.passed(plate, Direction.EXIT, now + timedelta(seconds=30), VehicleCategory.HAZMAT)
            await gate_b.send(b.rows[-1:])
            await expect(roll).to_have_count(0)  # left through the evacuation lane: gone
            await expect(page.locator("#roll-summary")).to_contain_text("园区内 2 辆")

            # The roll call printed: the print view drops the navigation, keeps the table.
            await expect(page.locator("#print")).to_have_text("打印点名表")
            await page.emulate_media(media="print")
            await expect(page.locator(".topbar")).to_be_hidden()
            await expect(page.locator("#print")).to_be_hidden()
            await expect(page.locator('tr[data-plate="苏E00002"]')).to_be_visible()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            pdf = await page.pdf(path=str(SCREENSHOTS / "dashboard-roll-call.pdf"))
            assert pdf.startswith(b"%PDF")
            await page.emulate_media(media="screen")

            # English, then approve the hazmat overstay: published to gate A through the broker.
            await page.click("#lang-switch")
            await page.click("#nav-proposals")
            hazmat = page.locator('tr[data-state="open"]', has_text="苏E00002")
            await expect(hazmat).to_have_count(1)
            proposal = await hazmat.get_attribute("data-proposal")
            assert proposal is not None
            async with listening(mosquitto_broker, "gate-a", "allowlist") as live:
                await page.fill(f"#reason-{proposal}", "2 h past the permit, driver unreachable")
                await page.click(f"#approve-{proposal}")
                await expect(page.locator("#flash")).to_contain_text(f"Proposal #{proposal}")
                message = await receive(live)
            public = publishing.key.public_key()
            publication = decode_publication(open_signed(body(message), KIND_ALLOWLIST, public))
            [entry] = delta_changes(publication.content).upserts
            assert (entry.id, entry.plate) == (f"BL-OVERSTAY-{proposal}", "苏E00002")
            await expect(page.locator(f'tr[data-proposal="{proposal}"]')).to_contain_text(
                "dashboard:li"
            )
            await screenshot(page, "dashboard-proposals-en")
        with open_store(dsn) as s:
            [decided] = s.blacklist_proposals(ids=[int(proposal)])
            assert decided.operator == "dashboard:li" and not decided.pending
