"""The gate's ``/metrics``, ``/healthz`` and ``/readyz`` on its HTTP server, end to end: the
real daemon with simulated devices (pymodbus PLC on 127.0.0.1, a reader on a pty), scraped
with a real HTTP client; every scrape goes through Debian's ``promtool check metrics``.

Health's view of the system (free disk, NTP) is injected (:class:`HealthProbes`): this
container's clock is never synchronised, and its disk cannot be filled for a test.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from edgegate.config import GateConfig, parse_config
from edgegate.core.events import LogWriteRecovered, Loop
from edgegate.core.lane import LaneState
from edgegate.daemon.health import HealthProbes
from edgegate.log import LogReader
from edgegate.sim.demo import demo_allowlist
from tests.eventually import eventually
from tests.gate_harness import (
    ALLOWED,
    REFUSED,
    RunningGate,
    gate_toml,
    lane,
    sim_plc,
    sim_reader,
    wait_position,
)
from tests.services.mosquitto import free_port
from tests.test_gate_e2e import fill_log, unfill_log

pytestmark = pytest.mark.timeout(90)

PERIOD = 0.5  # [health].poll_period
PLC_SILENCE = 0.5
FUZZY = "苏E1234S"  # one OCR-confusable character from ALLOWED: a guard must confirm
TOKEN = "s3cret-monitoring-token"

PROMTOOL = shutil.which("promtool")
OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


# --- scraping -------------------------------------------------------------------------------


def promtool_problems(text: str) -> str:
    """What ``promtool check metrics`` says about an exposition (empty: nothing)."""
    assert PROMTOOL is not None, "promtool is missing: run scripts/install-test-services"
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    return (done.stdout + done.stderr).strip() or ("" if done.returncode == 0 else "failed")


class Samples:
    """One scrape's samples, looked up by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            s for family in text_string_to_metric_families(text) for s in family.samples
        ]

    def get(self, name: str, **labels: str) -> float | None:
        for s in self.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        return None

    def value(self, name: str, **labels: str) -> float:
        found = self.get(name, **labels)
        assert found is not None, f"no {name}{labels} in the scrape"
        return found


@dataclass
class Monitor:
    """The monitoring endpoints of a running gate, as a fleet's Prometheus reaches them."""

    base: str
    session: aiohttp.ClientSession
    token: str | None = None

    def _headers(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    async def metrics(self) -> Samples:
        async with self.session.get(self.base + "/metrics", headers=self._headers()) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
        problems = promtool_problems(text)
        assert problems == "", problems
        for plate in (ALLOWED, REFUSED, FUZZY):
            assert plate not in text
        return Samples(text)

    async def ready(self) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.base + "/readyz", headers=self._headers()) as resp:
            return resp.status, await resp.json()


# --- the gate -------------------------------------------------------------------------------


class FakeSystem:
    """The disk and the clock discipline as health sees them, changed by the tests."""

    def __init__(self) -> None:
        self.free = 10 << 30
        self.synchronised: bool | None = True

    @property
    def f_bavail(self) -> int:
        return self.free // 4096

    f_frsize = 4096

    def statvfs(self, _path: str) -> FakeSystem:
        return self

    def probes(self) -> HealthProbes:
        return HealthProbes(statvfs=self.statvfs, clock_synchronised=lambda: self.synchronised)


def watched_config(
    tmp_path: Path, *, health: Mapping[str, str] | None = None, policy: Mapping[str, str] = {}
) -> GateConfig:
    text = gate_toml(
        tmp_path / "gate.db",
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc")],
        policy=policy,
    )
    text += f'\n[http]\nbind = "127.0.0.1"\nport = {free_port()}\n'
    fields = {
        "poll_period": f"{PERIOD * 1000:.0f}ms",
        "plc_silence": f"{PLC_SILENCE * 1000:.0f}ms",
        "disk_reserve": "1024MiB",
        **(health or {}),
    }
    text += "\n[health]\n" + "".join(f'{k} = "{v}"\n' for k, v in fields.items())
    return parse_config(text, base_dir=tmp_path)


@asynccontextmanager
async def watched_gate(
    config: GateConfig, system: FakeSystem | None = None, token: str | None = None
) -> AsyncIterator[tuple[RunningGate, Monitor]]:
    running = RunningGate(config)
    running.gate.probes = (system or FakeSystem()).probes()
    assert config.http is not None
    async with running as g, aiohttp.ClientSession() as session:
        yield g, Monitor(f"http://127.0.0.1:{config.http.port}", session, token)


async def wait_ready(monitor: Monitor, ready: bool, within: float, *failing: str) -> None:
    """``/readyz`` answers ``ready`` (naming ``failing``) within ``within`` seconds."""
    seen: list[object] = []

    async def answered() -> bool:
        status, body = await monitor.ready()
        seen[:] = [status, body]
        return status == (200 if ready else 503) and tuple(body["failing"]) == failing

    await eventually(
        answered, lambda: f"/readyz ready={ready} failing={failing}: {seen}", within=within
    )


# --- metrics --------------------------------------------------------------------------------


async def test_metrics_pass_promtool_and_move_with_what_happens(tmp_path: Path) -> None:
    async with watched_gate(watched_config(tmp_path)) as (g, monitor):
        before = await monitor.metrics()
        assert before.value("edgegate_decisions_total", lane="l1", verdict="allow") == 0
        assert before.value("edgegate_lane_state", lane="l1", state="idle") == 1
        assert before.value("edgegate_allowlist_entries") > 0
        assert before.value("edgegate_incident_mode") == 0
        assert before.value("edgegate_device_up", device="plc", kind="plc") == 1
        road, plc = g.road(), g.plc()

        # A decision, its commands and its log writes.
        await road.drive_through(ALLOWED)
        await wait_position(plc, 0.0)
        after = await monitor.metrics()
        assert after.value("edgegate_decisions_total", lane="l1", verdict="allow") == 1
        assert after.value("edgegate_decision_seconds_count", lane="l1") == 1
        assert after.value("edgegate_plc_command_seconds_count", device="plc", outcome="ok") == 2
        for name in ("edgegate_log_append_seconds_count", "edgegate_log_commit_seconds_count"):
            assert after.value(name) > before.value(name)
        assert after.value("edgegate_log_head_seq") > before.value("edgegate_log_head_seq")
        assert after.value("edgegate_log_size_bytes", part="active") > 0
        assert after.value("edgegate_log_size_bytes", part="archives") == 0
        assert after.value("edgegate_log_first_kept_seq") == 1

        # A refusal.
        await road.arrive(REFUSED)
        await eventually(
            lambda: (
                g.gate.lanes["l1"].last_decision is not None
                and g.gate.lanes["l1"].last_decision.plate == REFUSED
            ),
            "the refusal decided",
        )
        await road.set(Loop.ARMING, False)
        refused = await monitor.metrics()
        assert refused.value("edgegate_decisions_total", lane="l1", verdict="deny") == 1

        # A guard wait, ended by the driver backing out.
        await road.arrive(FUZZY)
        lane_state = g.gate.lanes["l1"]
        await eventually(lambda: lane_state.state is LaneState.AWAITING_GUARD, "a guard wait")
        waiting = await monitor.metrics()
        assert waiting.value("edgegate_guard_waits_total", lane="l1") == 1
        assert waiting.value("edgegate_lane_state", lane="l1", state="awaiting-guard") == 1
        await road.set(Loop.ARMING, False)
        await eventually(lambda: lane_state.state is LaneState.IDLE, "the lane idle again")
        waited = await monitor.metrics()
        assert waited.value("edgegate_guard_wait_seconds_count", lane="l1") == 1
        assert waited.value("edgegate_guard_waits_expired_total", lane="l1") == 0

        # A rejected frame.
        await g.reader().send_raw(b"\x00\xffNOISE$garbled,frame*00\r\n")
        await eventually(lambda: g.gate.readers["cam"].frames_rejected > 0, "the garbage rejected")
        rejected = await monitor.metrics()
        assert rejected.value("edgegate_frames_rejected_total", device="cam") >= 1

        # A PLC fault.
        await plc.stop()
        try:
            await eventually(lambda: not g.gate.plcs["plc"].connected, "the PLC seen gone")
            await eventually(lambda: "plc" in lane_state.faults, "the fault logged")
            faulted = await monitor.metrics()
            assert faulted.value("edgegate_device_up", device="plc", kind="plc") == 0
            assert faulted.value("edgegate_device_faults_total", device="plc") == 1
            assert faulted.value("edgegate_lane_faults", lane="l1") == 1
        finally:
            await plc.start()
        await eventually(lambda: g.gate.plcs["plc"].connected, "the PLC back")
        back = await monitor.metrics()
        assert back.value("edgegate_device_up", device="plc", kind="plc") == 1
        assert back.value("edgegate_device_last_seen_age_seconds", device="plc") == 0


# --- readiness ------------------------------------------------------------------------------


async def test_readyz_names_each_injected_fault_within_two_poll_periods(tmp_path: Path) -> None:
    system = FakeSystem()
    config = watched_config(tmp_path, policy={"allowlist_max_age": "1h"})
    async with watched_gate(config, system) as (g, monitor):
        health = g.gate.health
        assert health is not None
        flip = 2 * PERIOD
        await wait_ready(monitor, True, flip)
        _, body = await monitor.ready()
        assert set(body["components"]) == {
            "log",
            "lanes",
            "allowlist",
            "clock",
            "disk",
            "device:plc",
            "device:cam",
        }
        assert all(c["ok"] and c["age_s"] <= 3 * PERIOD for c in body["components"].values())
        assert health.summary().ready

        system.synchronised = False
        await wait_ready(monitor, False, flip, "clock")
        assert health.summary().failing == ("clock",)
        assert health.summary().line() == "not ready: clock"
        system.synchronised = None  # the system does not say: no reason to hold the gate
        await wait_ready(monitor, True, flip)

        system.free = 100 << 20
        await wait_ready(monitor, False, flip, "disk")
        _, body = await monitor.ready()
        assert "below the reserve of 1024 MiB" in body["components"]["disk"]["problem"]
        system.free = 10 << 30
        await wait_ready(monitor, True, flip)

        allowlist = g.gate.allowlist
        assert allowlist is not None
        now = datetime.now(UTC).replace(microsecond=0)
        await allowlist.replace(
            demo_allowlist(now), source="test", updated_at=now - timedelta(hours=2)
        )
        await wait_ready(monitor, False, flip, "allowlist")
        await allowlist.replace(demo_allowlist(now), source="test")
        await wait_ready(monitor, True, flip)

        await fill_log(g.event_log)
        await wait_ready(monitor, False, flip, "log")
        _, body = await monitor.ready()
        assert body["components"]["log"]["problem"].startswith("the log cannot be written")
        metrics = await monitor.metrics()
        assert metrics.value("edgegate_ready") == 0
        assert metrics.value("edgegate_health_ok", component="log") == 0
        assert metrics.value("edgegate_log_writable") == 0
        await unfill_log(g.event_log)
        await wait_ready(monitor, True, flip)
        # The idle gate learnt it by logging the outage's end: the gap is on record.
        with LogReader(g.event_log.path) as reader:
            recovered = reader.last(LogWriteRecovered.TYPE)
        assert recovered is not None
        event = recovered.event()
        assert isinstance(event, LogWriteRecovered)
        assert event.failed_commits >= 2 and "full" in event.problem
        assert g.event_log.outage is None

        await g.plc().stop()
        try:
            await wait_ready(monitor, False, PLC_SILENCE + flip, "device:plc")
            _, body = await monitor.ready()
            assert body["components"]["device:plc"]["problem"].startswith("not seen for")
        finally:
            await g.plc().start()
        await wait_ready(monitor, True, flip)
        assert (await monitor.metrics()).value("edgegate_ready") == 1


async def test_a_plate_reader_quiet_for_long_is_seen_while_its_port_is_open(
    tmp_path: Path,
) -> None:
    """Seen means its port is open without a fault: a night with no vehicle is no outage;
    a reader unplugged is, after its silence limit."""
    config = watched_config(tmp_path, health={"plate_reader_silence": "300ms"})
    async with watched_gate(config) as (g, monitor):
        await wait_ready(monitor, True, 2 * PERIOD)
        await asyncio.sleep(4 * 0.3 + PERIOD)  # several silence limits without a read
        status, body = await monitor.ready()
        assert status == 200 and body["components"]["device:cam"]["ok"], body
        g.reader().unplug()
        try:
            await wait_ready(monitor, False, 0.3 + 2 * PERIOD, "device:cam")
        finally:
            g.reader().replug()
        await wait_ready(monitor, True, 2 * PERIOD + 5)


# --- access ---------------------------------------------------------------------------------


async def test_a_token_file_guards_every_endpoint(tmp_path: Path) -> None:
    (tmp_path / "monitoring.token").write_text(TOKEN + "\n")
    config = watched_config(tmp_path, health={"token_file": "monitoring.token"})
    async with watched_gate(config, token=TOKEN) as (_g, monitor):
        await monitor.metrics()
        for path in ("/metrics", "/healthz", "/readyz"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                async with monitor.session.get(monitor.base + path, headers=headers) as resp:
                    assert resp.status == 401, (path, headers)
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                    assert "bearer token" in (await resp.json())["error"]
            # Bytes that are not UTF-8 (an HTTP client may send any): refused, not a 500.
            status, body = await raw_get(monitor.base, path, b"Authorization: Bearer \xff\xfe")
            assert status == 401, body
            assert b"wrong bearer token" in body
        async with monitor.session.get(
            monitor.base + "/healthz", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            assert resp.status == 200
            assert await resp.json() == {"alive": True, "gate": "e2e-gate"}


async def raw_get(base: str, path: str, header: bytes) -> tuple[int, bytes]:
    """``GET path`` with ``header`` as raw bytes (aiohttp's client sends only UTF-8)."""
    url = URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nConnection: close\r\n".encode()
            + header
            + b"\r\n\r\n"
        )
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_an_unreadable_token_file_serves_no_monitoring_at_all(tmp_path: Path) -> None:
    config = watched_config(tmp_path, health={"token_file": "missing.token"})
    async with watched_gate(config) as (_g, monitor):
        for path in ("/metrics", "/healthz", "/readyz"):
            async with monitor.session.get(monitor.base + path) as resp:
                assert resp.status == 404, path


async def test_without_http_the_gate_keeps_its_health_and_carries_no_metrics(
    tmp_path: Path,
) -> None:
    text = gate_toml(
        tmp_path / "gate.db",
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc")],
    )
    config = parse_config(text + '\n[health]\npoll_period = "200ms"\n', base_dir=tmp_path)
    running = RunningGate(config)
    running.gate.probes = FakeSystem().probes()
    async with running as g:
        assert g.gate.metrics is None
        health = g.gate.health
        assert health is not None
        await eventually(lambda: health.summary().ready, lambda: str(health.readiness()))


# --- the documentation ----------------------------------------------------------------------


def _watching_section() -> str:
    text = OPERATIONS.read_text(encoding="utf-8")
    return text[text.index("## 4. Watching a fleet of gates") :]


def test_the_documented_alert_rules_pass_promtool(tmp_path: Path) -> None:
    section = _watching_section()
    rules = section[section.index("```yaml\ngroups:") + len("```yaml\n") :]
    rules = rules[: rules.index("```")]
    (tmp_path / "rules.yml").write_text(rules)
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_the_documented_gate_metrics_are_the_scraped_ones(tmp_path: Path) -> None:
    section = _watching_section()
    gate_table = section[section.index("### The gate's metrics") : section.index("### Central")]
    documented = set(re.findall(r"^\| `(edgegate_[a-z_]+)` \|", gate_table, re.MULTILINE))
    async with watched_gate(watched_config(tmp_path)) as (_g, monitor):
        samples = await monitor.metrics()
    scraped = {
        s.name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        for s in samples.samples
    }
    assert scraped <= documented, f"undocumented: {scraped - documented}"
    without_sync = {n for n in documented if not n.startswith("edgegate_sync_")}
    assert without_sync <= scraped, f"documented, not served: {without_sync - scraped}"


def test_a_gate_without_a_time_source_may_be_ready_by_its_configuration() -> None:
    """``require_clock_sync = false``: the clock check passes whatever the kernel says; by
    default an unsynchronised clock names what to check."""
    from edgegate.config.models import HealthSettings
    from edgegate.daemon.health import GateHealth

    gate = SimpleNamespace(plcs={}, readers={})
    unsynced = HealthProbes(clock_synchronised=lambda: False)
    strict = GateHealth(gate, HealthSettings(), unsynced)  # type: ignore[arg-type]
    ok, problem = strict._clock(0.0)
    assert not ok and problem is not None and "timedatectl" in problem
    lenient = GateHealth(
        gate,  # type: ignore[arg-type]
        HealthSettings.model_validate({"require_clock_sync": False}),
        unsynced,
    )
    assert lenient._clock(0.0) == (True, None)
