"""The production mosquitto ACL/TLS/password setup, against a real broker on 127.0.0.1.

MQTT 3.1.1 gives a publisher no error when the broker drops an ACL-denied publish, so
"not delivered" is proved with a marker: the forbidden message is sent first and an allowed
marker after it on the same connection; the broker routes one client's messages in order, so
once the marker arrives the forbidden one would already have arrived had it been allowed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from edgegate.mqtt.session import BrokerSettings
from tests.eventually import eventually
from tests.services.mosquitto import (
    CONFIG_DIR,
    MOSQUITTO,
    MOSQUITTO_SUB,
    Broker,
    free_port,
    production_acl,
    production_policy_lines,
)

pytestmark = pytest.mark.timeout(60)

SITE = "site-1"
SHARED_EVENTS = "$share/sinks/edgegate/v1/+/+/events"
ALL_STATUS = "edgegate/v1/+/+/status"
WAIT = 5.0


def topic(gate: str, kind: str, site: str = SITE) -> str:
    return f"edgegate/v1/{site}/{gate}/{kind}"


def marker() -> bytes:
    return b"marker-" + secrets.token_hex(8).encode()


async def receive_until(client: aiomqtt.Client, payload: bytes) -> list[aiomqtt.Message]:
    """Every message ``client`` gets up to and including the first with ``payload``."""
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(WAIT):
        async for message in client.messages:
            got.append(message)
            if message.payload == payload:
                return got
    raise AssertionError("client disconnected")


def seen(messages: list[aiomqtt.Message]) -> list[tuple[str, object]]:
    return [(message.topic.value, message.payload) for message in messages]


# ------------------------------------------------------------------------ allowed traffic


async def test_gate_events_reach_central_over_tls(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    batch = os.urandom(4 * 1024 * 1024)  # event batches are several MB
    async with (
        broker.client("central", tls=True) as central,
        broker.client("gate-a", tls=True) as gate,
    ):
        await central.subscribe(SHARED_EVENTS, qos=1)
        await gate.publish(topic("gate-a", "events"), batch, qos=1)
        [message] = await receive_until(central, batch)
    assert message.topic.value == topic("gate-a", "events")
    assert message.qos == 1


async def test_shared_subscription_splits_events_between_sinks(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    sent = [f"batch-{i}".encode() for i in range(20)]
    async with (
        broker.client("central") as sink1,
        broker.client("central") as sink2,
        broker.client("gate-a") as gate,
    ):
        await sink1.subscribe(SHARED_EVENTS, qos=1)
        await sink2.subscribe(SHARED_EVENTS, qos=1)
        for payload in sent:
            await gate.publish(topic("gate-a", "events"), payload, qos=1)
        got: tuple[list[bytes], list[bytes]] = ([], [])
        all_in = asyncio.Event()

        async def drain(sink: aiomqtt.Client, into: list[bytes]) -> None:
            async for message in sink.messages:
                assert isinstance(message.payload, bytes)
                into.append(message.payload)
                if len(got[0]) + len(got[1]) >= len(sent):
                    all_in.set()

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(drain(sink1, got[0])), tg.create_task(drain(sink2, got[1]))]
            async with asyncio.timeout(WAIT):
                await all_in.wait()
            for task in tasks:
                task.cancel()
    assert sorted(got[0] + got[1]) == sorted(sent)
    assert got[0]  # mosquitto hands out shared-subscription messages round-robin
    assert got[1]


async def test_added_gate_user_works_after_reload(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    broker.add_gate("gate-c")
    mark = marker()
    async with broker.client("central") as central, broker.client("gate-c") as gate:
        await central.subscribe(SHARED_EVENTS, qos=1)
        await gate.publish(topic("gate-a", "events"), b"forged", qos=1)
        await gate.publish(topic("gate-c", "events"), mark, qos=1)
        got = await receive_until(central, mark)
    assert seen(got) == [(topic("gate-c", "events"), mark)]


# ---------------------------------------------------------------------- forbidden writes


async def test_gate_cannot_publish_as_another_gate(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    mark = marker()
    async with broker.client("central") as central, broker.client("gate-a") as gate:
        await central.subscribe(SHARED_EVENTS, qos=1)
        await gate.publish(topic("gate-b", "events"), b"forged", qos=1)
        await gate.publish(topic("gate-a", "events"), mark, qos=1)
        got = await receive_until(central, mark)
    assert seen(got) == [(topic("gate-a", "events"), mark)]


@pytest.mark.parametrize(
    ("user", "forbidden"),
    [
        ("gate-a", topic("gate-b", "events")),
        ("gate-a", topic("gate-b", "status")),
        ("gate-a", topic("gate-b", "requests")),
        ("gate-a", topic("gate-b", "commands")),
        ("gate-a", topic("gate-b", "allowlist")),
        ("gate-a", topic("gate-a", "commands")),
        ("gate-a", topic("gate-a", "allowlist")),
        ("gate-a", topic("gate-a", "ack")),
        ("gate-a", f"edgegate/v1/{SITE}/gate-a"),
        ("gate-a", topic("gate-a", "events") + "/extra"),
        ("gate-a", topic("gate-a", "other")),
        ("central", topic("gate-a", "events")),
        ("central", topic("gate-a", "status")),
        ("central", topic("gate-a", "requests")),
    ],
)
async def test_forbidden_publish_is_dropped(
    mosquitto_broker: Broker, user: str, forbidden: str
) -> None:
    """An observer reading all of edgegate/# sees the marker but never the forbidden publish."""
    broker = mosquitto_broker
    broker.add_user("observer", acl_lines=["topic read edgegate/#"])
    allowed = topic("gate-a", "commands") if user == "central" else topic(user, "events")
    mark = marker()
    async with broker.client("observer") as observer, broker.client(user) as client:
        await observer.subscribe("edgegate/#", qos=1)
        await client.publish(forbidden, b"forbidden", qos=1)
        await client.publish(allowed, mark, qos=1)
        got = await receive_until(observer, mark)
    assert seen(got) == [(allowed, mark)]


# ----------------------------------------------------------------------- forbidden reads


async def test_gate_cannot_read_another_gates_commands(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    mark = marker()
    async with broker.client("central") as central, broker.client("gate-a") as gate:
        await gate.subscribe(topic("gate-b", "commands"), qos=1)
        await gate.subscribe(topic("gate-a", "commands"), qos=1)
        await central.publish(topic("gate-b", "commands"), b"for gate-b", qos=1)
        await central.publish(topic("gate-a", "commands"), mark, qos=1)
        got = await receive_until(gate, mark)
    assert seen(got) == [(topic("gate-a", "commands"), mark)]


async def test_gate_reads_nothing_of_other_gates(mosquitto_broker: Broker) -> None:
    """A ``#`` subscription yields neither live nor retained traffic of another gate."""
    broker = mosquitto_broker
    mark = marker()
    async with (
        broker.client("central") as central,
        broker.client("gate-b") as gate_b,
        broker.client("gate-a") as gate_a,
    ):
        await gate_b.publish(topic("gate-b", "status"), b"online", qos=1, retain=True)
        await gate_a.subscribe("#", qos=1)
        await gate_a.subscribe(topic("gate-a", "commands"), qos=1)
        for kind in ("events", "status", "requests"):
            await gate_b.publish(topic("gate-b", kind), kind.encode(), qos=1)
        for kind in ("ack", "allowlist", "commands"):
            await central.publish(topic("gate-b", kind), kind.encode(), qos=1)
        await central.publish(topic("gate-a", "commands"), mark, qos=1)
        got = await receive_until(gate_a, mark)
        await gate_b.publish(topic("gate-b", "status"), b"", qos=1, retain=True)
    # A broker may deliver overlapping subscriptions twice; only the marker may come.
    assert set(seen(got)) == {(topic("gate-a", "commands"), mark)}


# ----------------------------------------------------------------------- authentication


async def test_client_trusting_the_wrong_ca_cannot_connect(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    settings = BrokerSettings.from_url(
        f"mqtts://{broker.host}:{broker.tls_port}", ca_file=broker.pki.wrong_ca_path
    )
    # The gate's own TLS context: its socket closes itself when the handshake fails.
    context = await asyncio.to_thread(settings.tls_context)
    client = aiomqtt.Client(
        hostname=broker.host,
        port=broker.tls_port,
        username="gate-a",
        password=broker.users["gate-a"],
        tls_context=context,
    )
    with pytest.raises(aiomqtt.MqttError, match="CERTIFICATE_VERIFY_FAILED"):
        async with asyncio.timeout(WAIT), client:
            pass


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("gate-a", "wrong-password"),
        ("gate-a", ""),
        ("gate-z", "unknown-user"),
        (None, None),  # anonymous
    ],
)
async def test_bad_credentials_are_refused(
    mosquitto_broker: Broker, user: str | None, password: str | None
) -> None:
    broker = mosquitto_broker
    client = broker.client(user, tls=True, password=password)
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with asyncio.timeout(WAIT), client:
            pass
    assert refused.value.rc in (134, 135)  # bad user name or password / not authorised


async def test_gate_password_does_not_open_central(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    client = broker.client("central", tls=True, password=broker.users["gate-a"])
    with pytest.raises(aiomqtt.MqttCodeError):
        async with asyncio.timeout(WAIT), client:
            pass


# ---------------------------------------------------------------- status and last will


async def test_killed_gate_leaves_retained_offline_status(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    status = topic("gate-a", "status")
    async with broker.client("central", tls=True) as central:
        await central.subscribe(ALL_STATUS, qos=1)
        async with broker.client("gate-a", tls=True) as gate:
            await gate.publish(status, b"online", qos=1, retain=True)
        await receive_until(central, b"online")

        # The gate process: connected over TLS with its last will, then SIGKILLed.
        gate_proc = await asyncio.create_subprocess_exec(
            MOSQUITTO_SUB,
            *("-h", broker.host, "-p", str(broker.tls_port), "--cafile", str(broker.ca_path)),
            *("-u", "gate-a", "-P", broker.users["gate-a"], "-i", "gate-a-proc"),
            *("-t", topic("gate-a", "commands"), "-q", "1"),
            *("--will-topic", status, "--will-payload", "offline"),
            *("--will-qos", "1", "--will-retain"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(WAIT):
                await broker.wait_for_log("as gate-a-proc (")
        finally:
            gate_proc.kill()
            await gate_proc.wait()
        got = await receive_until(central, b"offline")
    assert seen(got) == [(status, b"offline")]

    async with broker.client("central", tls=True) as late:
        await late.subscribe(ALL_STATUS, qos=1)
        [retained] = await receive_until(late, b"offline")
    assert retained.topic.value == status
    assert retained.retain


# -------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill-after-save"])
async def test_queued_events_survive_broker_restart(mosquitto_broker: Broker, hard: bool) -> None:
    """A persistent sink session keeps its subscription and queued QoS 1 batches."""
    broker = mosquitto_broker
    async with broker.client("central", identifier="sink-1", clean_session=False) as sink:
        await sink.subscribe(SHARED_EVENTS, qos=1)
    async with broker.client("gate-a") as gate:
        await gate.publish(topic("gate-a", "events"), b"queued", qos=1)
    if hard:
        await asyncio.to_thread(broker.save)
    await broker.arestart(hard=hard)
    async with broker.client("central", identifier="sink-1", clean_session=False) as sink:
        got = await receive_until(sink, b"queued")
    assert seen(got) == [(topic("gate-a", "events"), b"queued")]


async def test_broker_restarts_on_the_same_ports(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    ports = (broker.tls_port, broker.plain_port)
    for i in range(5):
        await broker.arestart(hard=i % 2 == 0)
        assert (broker.tls_port, broker.plain_port) == ports
        async with broker.client("gate-a", tls=True) as gate:
            await gate.publish(topic("gate-a", "status"), b"online", qos=1, retain=True)


def test_test_broker_runs_the_production_acl_and_policy(mosquitto_broker: Broker) -> None:
    policy = production_policy_lines()
    assert "allow_anonymous false" in policy
    assert "per_listener_settings false" in policy
    assert "persistence true" in policy
    assert mosquitto_broker.acl_path.read_text().startswith(production_acl())
    config = mosquitto_broker.config_path.read_text().splitlines()
    assert all(line in config for line in policy)


async def test_production_config_example_runs(mosquitto_broker: Broker, tmp_path: Path) -> None:
    """config/mosquitto/mosquitto.conf as shipped, with only paths, port and log redirected."""
    broker = mosquitto_broker
    port = free_port()
    replacements = {
        "/etc/mosquitto/passwd": str(broker.passwd_path),
        "/etc/mosquitto/acl": str(broker.acl_path),
        "/etc/mosquitto/certs/ca.crt": str(broker.pki.ca_path),
        "/etc/mosquitto/certs/server.crt": str(broker.pki.server_cert_path),
        "/etc/mosquitto/certs/server.key": str(broker.pki.server_key_path),
        "/var/lib/mosquitto/": f"{tmp_path}/",
        "log_dest syslog": "log_dest stderr",
        "listener 8883": f"listener {port} {broker.host}",
    }
    text = (CONFIG_DIR / "mosquitto.conf").read_text()
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new)
    config = tmp_path / "mosquitto.conf"
    config.write_text(text + "user root\n")
    log = tmp_path / "mosquitto.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            MOSQUITTO, "-c", str(config), stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        client = aiomqtt.Client(
            broker.host,
            port,
            username="central",
            password=broker.users["central"],
            tls_params=aiomqtt.TLSParameters(ca_certs=str(broker.ca_path)),
        )

        def running() -> bool:
            assert proc.returncode is None, log.read_text()
            return b"running" in log.read_bytes()

        await eventually(running, "mosquitto running", within=WAIT, every=0.01)
        async with asyncio.timeout(WAIT):
            async with client:
                await client.subscribe(SHARED_EVENTS, qos=1)
    finally:
        proc.kill()
        await proc.wait()
