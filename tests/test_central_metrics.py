"""Central's ``/metrics`` and ``/readyz`` (``edgegate central run --http``): the real sink
against a real mosquitto and store, its HTTP server scraped with a real client, every
scrape through ``promtool check metrics``; and the command line's ``--http`` options."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from edgegate.central.sink import Sink
from edgegate.central.web import CentralWeb
from edgegate.cli.main import main
from edgegate.sync.protocol import Status, Topics, encode_status
from tests.eventually import eventually
from tests.services.mosquitto import Broker
from tests.test_central_sink import SITE, WAIT, dsn, fake_gate, make_chain, options, running
from tests.test_monitoring import Samples, promtool_problems

__all__ = ["dsn"]  # fixture

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def served(sink: Sink, token: str | None = None) -> AsyncIterator[str]:
    web = CentralWeb(sink, "127.0.0.1", 0, token=token)
    await web.start()
    try:
        assert web.server is not None
        yield web.server.url
    finally:
        await web.aclose()


async def scrape(session: aiohttp.ClientSession, base: str) -> Samples:
    async with session.get(base + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    problems = promtool_problems(text)
    assert problems == "", problems
    return Samples(text)


async def test_central_metrics_move_with_stored_batches_and_dead_letters(
    mosquitto_broker: Broker, dsn: str
) -> None:
    rows = make_chain("gate-a", 200)
    async with (
        running(options(mosquitto_broker, dsn)) as sink,
        served(sink) as base,
        aiohttp.ClientSession() as session,
        fake_gate(mosquitto_broker) as gate,
    ):
        before = await scrape(session, base)
        assert before.value("edgegate_central_connected") == 1
        assert before.get("edgegate_central_events_stored_total", gate="gate-a") is None
        async with session.get(base + "/readyz") as resp:
            assert resp.status == 200
            readiness = await resp.json()
            assert readiness["ready"] is True
            # No signing key in these options: said, not counted as a failure.
            assert readiness["components"]["park_entry"]["enabled"] is False
            assert "--signing-key" in readiness["components"]["park_entry"]["note"]

        await gate.send(rows[:100])
        await gate.wait_ack(lambda a: a.seq == 100)
        stored = await scrape(session, base)
        assert stored.value("edgegate_central_events_stored_total", gate="gate-a") == 100
        assert stored.value("edgegate_central_gate_head_seq", gate="gate-a") == 100
        assert stored.value("edgegate_central_batches_total") == 1
        assert stored.value("edgegate_central_ack_seconds_count") == 1
        assert stored.value("edgegate_central_acks_total") >= 1

        # The gate says it is ahead: central's lag for it, in events and in time.
        status = Status("gate-a", "online", 200, 100, 1, 1_795_000_000_000_000_000)
        await gate.client.publish(
            Topics(SITE, "gate-a").status, encode_status(status), qos=1, retain=True
        )
        await eventually(lambda: "gate-a" in sink.statuses, "the status taken", within=WAIT)
        behind = await scrape(session, base)
        assert behind.value("edgegate_central_gate_lag_events", gate="gate-a") == 100
        assert behind.value("edgegate_central_gate_online", gate="gate-a") == 1
        later = await scrape(session, base)
        assert later.value("edgegate_central_gate_lag_seconds", gate="gate-a") > 0

        await gate.send(rows[100:])
        await gate.wait_ack(lambda a: a.seq == 200)
        caught_up = await scrape(session, base)
        assert caught_up.value("edgegate_central_events_stored_total", gate="gate-a") == 200
        assert caught_up.value("edgegate_central_gate_lag_events", gate="gate-a") == 0
        assert caught_up.value("edgegate_central_gate_lag_seconds", gate="gate-a") == 0

        await gate.send_raw(b"not a batch")
        await eventually(lambda: sink.counters.dead_letters == 1, "dead-lettered", within=WAIT)
        dead = await scrape(session, base)
        assert dead.value("edgegate_central_dead_letters_total") == 1
        await gate.client.publish(Topics(SITE, "gate-a").status, b"", qos=1, retain=True)


async def test_central_monitoring_token(mosquitto_broker: Broker, dsn: str) -> None:
    async with (
        running(options(mosquitto_broker, dsn)) as sink,
        served(sink, token="central-token") as base,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(base + "/metrics") as resp:
            assert resp.status == 401
        auth = {"Authorization": "Bearer central-token"}
        async with session.get(base + "/readyz", headers=auth) as resp:
            assert resp.status == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http", "9480"], "expected ADDRESS:PORT"),
        (
            ["--http", "127.0.0.1:99999"],
            "--http: port: Input should be less than or equal to 65535",
        ),
        (["--http-token-file", "t"], "--http-token-file goes with --http"),
        (["--http", "127.0.0.1:9480", "--http-tls-cert", "c.pem"], "tls_key_file go together"),
        (["--http", "127.0.0.1:9480", "--http-token-file", "missing"], "--http-token-file"),
    ],
)
def test_central_run_http_options_are_checked(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["central", "run", "--broker", "mqtt://127.0.0.1:1", *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
