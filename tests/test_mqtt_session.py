"""The shared MQTT session: broker URLs, the TLS context, and the reconnect loop."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import aiomqtt
import pytest

from edgegate.backoff import Backoff
from edgegate.mqtt.session import Attempt, BrokerSettings, BrokerUrlError, MqttSession
from tests.eventually import eventually
from tests.services.mosquitto import Broker, free_port

WAIT = 30.0


# ------------------------------------------------------------------------------ broker URLs


def test_default_ports_and_the_url_it_prints() -> None:
    plain = BrokerSettings.from_url("mqtt://127.0.0.1")
    assert (plain.host, plain.port, plain.tls, plain.url) == (
        "127.0.0.1",
        1883,
        False,
        "mqtt://127.0.0.1:1883",
    )
    tls = BrokerSettings.from_url(" MQTTS://127.0.0.1/ ")
    assert (tls.port, tls.tls, tls.url) == (8883, True, "mqtts://127.0.0.1:8883")


def test_ipv6_host_is_bracketed_in_the_url() -> None:
    s = BrokerSettings.from_url("mqtt://[::1]:1884")
    assert (s.host, s.port, s.url) == ("::1", 1884, "mqtt://[::1]:1884")


def test_credentials_and_ca_come_from_settings_not_the_url(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not read here")
    s = BrokerSettings.from_url("mqtts://127.0.0.1", username="central", password="pw", ca_file=ca)
    assert (s.username, s.password, s.ca_file) == ("central", "pw", ca)
    assert s.with_password("new").password == "new"
    assert BrokerSettings.from_url("mqtt://127.0.0.1").username is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1", "use mqtt://"),
        ("127.0.0.1:1883", "use mqtt://"),
        ("mqtt://", "names no host"),
        ("mqtt://127.0.0.1:99999", "out of range"),
        ("mqtt://127.0.0.1:port", "invalid literal|Port could not be cast"),
        ("mqtt://u:p@127.0.0.1", "--password-file"),
        ("mqtt://u@127.0.0.1", "--username"),
        ("mqtt://127.0.0.1/x", "only scheme, host and port"),
        ("mqtt://127.0.0.1?x=1", "only scheme, host and port"),
    ],
)
def test_unusable_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(BrokerUrlError, match=problem) as refused:
        BrokerSettings.from_url(url)
    assert "\n" not in str(refused.value)


def test_a_ca_needs_tls_and_must_exist(tmp_path: Path) -> None:
    with pytest.raises(BrokerUrlError, match="not mqtts"):
        BrokerSettings.from_url("mqtt://127.0.0.1", ca_file=__file__)
    with pytest.raises(BrokerUrlError, match="does not exist"):
        BrokerSettings.from_url("mqtts://127.0.0.1", ca_file=tmp_path / "none.crt")


async def test_an_unreadable_ca_is_an_mqtt_error_naming_it(tmp_path: Path) -> None:
    settings = BrokerSettings("127.0.0.1", free_port(), tls=True, ca_file=tmp_path / "gone.crt")
    with pytest.raises(aiomqtt.MqttError, match="No such file"):
        settings.client(identifier="t")


# ------------------------------------------------------------------------------ TLS


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_the_socket_of_a_failed_handshake_is_closed_at_once(
    mosquitto_broker: Broker,
) -> None:
    """paho leaves it open and the exception's frames keep it alive; ours closes itself."""
    broker = mosquitto_broker
    settings = BrokerSettings(
        broker.host,
        broker.tls_port,
        tls=True,
        username="central",
        password=broker.users["central"],
        ca_file=broker.pki.wrong_ca_path,
    )
    client = settings.client(identifier="wrong-ca")
    before = _open_fds()
    with pytest.raises(aiomqtt.MqttError, match="CERTIFICATE_VERIFY_FAILED") as refused:
        async with asyncio.timeout(WAIT), client:
            pass
    assert refused.value is not None  # still referenced: nothing was collected
    assert _open_fds() == before


async def test_the_right_ca_connects(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    settings = BrokerSettings(
        broker.host,
        broker.tls_port,
        tls=True,
        username="central",
        password=broker.users["central"],
        ca_file=broker.ca_path,
    )
    async with asyncio.timeout(WAIT), settings.client(identifier="right-ca") as client:
        await client.publish("edgegate/v1/site-a/gate-a/allowlist", b"x", qos=1)


# ------------------------------------------------------------------------------ the loop


async def test_the_loop_backs_off_while_unreachable_and_stops_when_asked() -> None:
    settings = BrokerSettings("127.0.0.1", free_port(), tls=False)  # nobody listens there
    stop = asyncio.Event()
    failures: list[tuple[str, bool]] = []
    delays: list[float] = []

    async def body(client: aiomqtt.Client) -> None:
        raise AssertionError("never connected")

    def failed(exc: Exception, attempt: Attempt) -> None:
        failures.append((type(exc).__name__, attempt.connected))

    async def make() -> aiomqtt.Client:
        return settings.client(identifier="nobody", timeout=5.0)

    session = MqttSession(
        make,
        body,
        failed,
        backoff=Backoff(0.01, 0.04, random.Random(5)),
        stop=stop,
        connect_timeout=5.0,
        disconnect_timeout=1.0,
        retrying=delays.append,
    )
    task = asyncio.create_task(session.run())
    await eventually(lambda: len(delays) >= 5, "five retries", within=WAIT)
    stop.set()
    async with asyncio.timeout(WAIT):
        await task
    assert all(f == ("MqttError", False) for f in failures), failures
    assert 0.005 <= delays[0] <= 0.01
    assert all(0.02 <= d <= 0.04 for d in delays[2:])  # capped


async def test_a_held_connection_resets_the_backoff(mosquitto_broker: Broker) -> None:
    broker = mosquitto_broker
    settings = BrokerSettings(
        broker.host,
        broker.plain_port,
        tls=False,
        username="central",
        password=broker.users["central"],
    )
    stop = asyncio.Event()
    backoff = Backoff(0.01, 1.0, random.Random(5))
    backoff.attempts = 6  # as after an outage
    seen: list[int] = []
    session: MqttSession

    async def body(client: aiomqtt.Client) -> None:
        session.held()
        raise aiomqtt.MqttError("dropped")

    def retrying(delay: float) -> None:
        seen.append(backoff.attempts)
        stop.set()

    async def make() -> aiomqtt.Client:
        return settings.client(identifier="held", timeout=5.0)

    session = MqttSession(
        make,
        body,
        lambda exc, attempt: None,
        backoff=backoff,
        stop=stop,
        connect_timeout=WAIT,
        disconnect_timeout=1.0,
        retrying=retrying,
    )
    async with asyncio.timeout(WAIT):
        await session.run()
    assert seen == [1]  # reset, then counted this one failure
