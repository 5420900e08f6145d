"""The running daemon with ``[sync]``: central's signed commands and allow-lists over the real
broker reach the lanes and the allow-list, forgeries and replays are refused with an event,
and the pull API serves the log."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.request
from pathlib import Path

import pytest

from edgegate.central.publish import (
    read_allowlist,
    signed_command,
    signed_publication,
    snapshot_publication,
)
from edgegate.config import GateConfig, parse_config
from edgegate.core.events import (
    AllowListUpdated,
    BarrierCommand,
    BarrierCommanded,
    CommandAccepted,
    CommandRefused,
)
from edgegate.sync.signing import SignedCommand, generate_keypair, load_private_key
from tests.gate_harness import RunningGate, gate_toml, lane, sim_plc, sim_reader
from tests.services.mosquitto import Broker, free_port

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
GATE = "e2e-gate"
WAIT = 20.0


def _config(tmp_path: Path, broker: Broker, pull_port: int, token: str) -> GateConfig:
    private_pem, public_pem = generate_keypair()
    (tmp_path / "central.key").write_bytes(private_pem)
    (tmp_path / "central.pub").write_bytes(public_pem)
    (tmp_path / "mqtt-password").write_text(broker.add_gate(GATE))
    (tmp_path / "pull-token").write_text(token + "\n")
    text = gate_toml(
        tmp_path / "gate.db",
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc")],
    )
    text += (
        f'\n[sync]\nbroker = "mqtt://127.0.0.1:{broker.plain_port}"\n'
        'password_file = "mqtt-password"\ncentral_public_key = "central.pub"\n'
        'reconnect_max = "1s"\n'
        '\n[sync.pull_api]\ntoken_file = "pull-token"\n'
        f"\n[http]\nport = {pull_port}\n"
    )
    return parse_config(text, base_dir=tmp_path)


def _get(url: str, token: str) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return int(response.status), bytes(response.read())


async def test_central_commands_and_allowlists_reach_the_running_gate(
    mosquitto_broker: Broker, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(24)
    pull_port = free_port()
    config = _config(tmp_path, mosquitto_broker, pull_port, token)
    key = load_private_key(tmp_path / "central.key")
    forger_pem, _ = generate_keypair()
    (tmp_path / "forger.key").write_bytes(forger_pem)
    forger = load_private_key(tmp_path / "forger.key")

    async with RunningGate(config) as g:
        uplink = g.gate.uplink
        assert uplink is not None and g.gate.downlink is not None
        topics = uplink.topics
        async with asyncio.timeout(WAIT):
            await uplink.connected.wait()
        async with mosquitto_broker.client("central") as central:
            # A genuine command opens the lane, after its acceptance is logged.
            command = SignedCommand.create(
                GATE,
                "open-lane",
                lane="l1",
                reason="tanker without readable plate, papers checked",
                operator="control-room-2",
                now_ns=time.time_ns(),
            )
            payload = signed_command(command, key)
            await central.publish(topics.commands, payload, qos=1)
            accepted = await g.log.wait_for(CommandAccepted, within=WAIT)
            assert accepted.event.command_id == command.id
            opening = await g.log.wait_for(
                BarrierCommanded,
                lane="l1",
                after=accepted.seq,
                where=lambda e: e.command is BarrierCommand.OPEN,
                within=WAIT,
            )
            assert opening.seq > accepted.seq

            # The same bytes again: a replay; a command signed by another key: a forgery.
            await central.publish(topics.commands, payload, qos=1)
            replayed = await g.log.wait_for(CommandRefused, within=WAIT)
            assert replayed.event.code == "replayed"
            forged = SignedCommand.create(
                GATE, "incident-on", reason="x", operator="mallory", now_ns=time.time_ns()
            )
            await central.publish(topics.commands, signed_command(forged, forger), qos=1)
            refusal = await g.log.wait_for(CommandRefused, after=replayed.seq, within=WAIT)
            assert refusal.event.code == "forged"
            assert not any(r.lane.incident for r in g.gate.lanes.values())

            # A signed snapshot becomes the gate's allow-list, with its version.
            entries = read_allowlist(ROOT / "config" / "allowlist-example.csv")
            publication = snapshot_publication(entries, version=41, now_ns=time.time_ns())
            await central.publish(
                topics.allowlist, signed_publication(publication, key), qos=1, retain=True
            )
            updated = await g.log.wait_for(
                AllowListUpdated, where=lambda e: e.version == 41, within=WAIT
            )
            assert updated.seq > 0
            assert g.gate.allowlist is not None
            assert g.gate.allowlist.view.version == 41
            assert len(g.gate.allowlist.view) == len(entries)
            # Clear the retained snapshot: the broker is shared by this test only, but tidy.
            await central.publish(topics.allowlist, b"", qos=1, retain=True)

        # The pull API serves the same log, behind its token.
        status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{pull_port}/v1/head", token)
        assert status == 200
        head = json.loads(body)
        assert head["gate"] == GATE
        assert head["seq"] >= updated.seq


async def test_central_command_wait_reports_what_the_gate_answered(
    mosquitto_broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``central command --wait`` as a central engineer runs it, with the sink storing the
    gate's log: exit 0 when the gate accepted (and the lane then opens for one vehicle and
    closes after it), 1 naming the reason when it refused or could not carry it out, 3 when
    no answer comes."""
    from edgegate.central.sink import Sink
    from edgegate.cli.main import main
    from edgegate.core.events import ManualAction, ManualActionKind, VehiclePassed
    from edgegate.core.lane import LaneState
    from tests.eventually import eventually
    from tests.gate_harness import wait_position
    from tests.test_central_sink import options
    from tests.test_cli_central import broker_args

    config = _config(tmp_path, mosquitto_broker, free_port(), secrets.token_urlsafe(24))
    dsn = f"sqlite:///{tmp_path / 'central.db'}"
    forger_pem, _ = generate_keypair()
    (tmp_path / "forger.key").write_bytes(forger_pem)

    async def command(gate: str, *argv: str, key: str = "central.key", wait: str = "20") -> int:
        args = [
            "central",
            "command",
            gate,
            *argv,
            "--operator",
            "duty-officer",
            "--key",
            str(tmp_path / key),
            "--site",
            "test",
            "--wait",
            "--wait-timeout",
            wait,
            "--db",
            dsn,
            *broker_args(mosquitto_broker, tmp_path),
        ]
        return await asyncio.to_thread(main, args)

    async with RunningGate(config) as g, Sink(options(mosquitto_broker, dsn)):
        uplink = g.gate.uplink
        assert uplink is not None
        async with asyncio.timeout(WAIT):
            await uplink.connected.wait()
        once = ("open-lane", "--once", "--lane", "l1", "--reason", "tanker, papers checked")
        assert await command(GATE, *once) == 0
        out = capsys.readouterr().out
        assert f"accepted by gate {GATE}" in out
        accepted = g.log.of(CommandAccepted)[-1]
        assert accepted.event.command_id in out
        assert accepted.event.action == "open-lane-once"
        manual = await g.log.wait_for(ManualAction, after=accepted.seq, within=WAIT)
        assert manual.event.action is ManualActionKind.OPEN_ONCE
        assert manual.event.operator == "central:duty-officer"
        opening = await g.log.wait_for(BarrierCommanded, after=manual.seq, within=WAIT)
        assert (opening.event.command, opening.event.reason) == (
            BarrierCommand.OPEN,
            "manual-open-once",
        )
        assert opening.event.cause_seq == manual.seq
        road = g.road()
        await wait_position(road.plc, 1.0)
        await road.arrive(None)
        await road.cross()
        passed = await g.log.wait_for(VehiclePassed, after=opening.seq, within=WAIT)
        assert not passed.event.unauthorised
        await wait_position(road.plc, 0.0)  # one vehicle, then closed: back to normal
        runner = g.gate.lanes["l1"]
        await eventually(lambda: runner.state is LaneState.IDLE, "lane idle")

        assert await command(GATE, "release-lane", "--lane", "l9") == 1
        err = capsys.readouterr().err
        assert "could not carry out" in err and "unknown-lane" in err and "l9" in err, err

        assert await command(GATE, "incident-on", key="forger.key") == 1
        err = capsys.readouterr().err
        assert f"gate {GATE} refused command" in err and "forged" in err, err

        assert await command("gate-b", "incident-off", wait="1") == 3
        err = capsys.readouterr().err
        assert "no answer from gate gate-b" in err, err
        assert "Traceback" not in err


async def test_the_retained_snapshot_again_after_a_restart_or_a_reconnect_is_no_news(
    mosquitto_broker: Broker, tmp_path: Path
) -> None:
    """Central publishes a retained snapshot, then a delta on it. The gate applies both; the
    daemon restarts, then the broker: each time the retained snapshot comes again, and it is
    no news (the README's promise): no allowlist.refused, the list stays at the delta's
    version."""
    from edgegate.allowlist.importer import Delta
    from edgegate.central.publish import delta_publication
    from edgegate.core.events import AllowListRefused
    from edgegate.sync.downlink import AllowListOutcome, Downlink
    from edgegate.sync.protocol import Topics
    from tests.eventually import eventually

    config = _config(tmp_path, mosquitto_broker, free_port(), secrets.token_urlsafe(24))
    key = load_private_key(tmp_path / "central.key")
    topics = Topics("test", GATE)
    entries = read_allowlist(ROOT / "config" / "allowlist-example.csv")
    snapshot = snapshot_publication(entries, version=41, now_ns=time.time_ns())
    delta = delta_publication(
        Delta([], [(entries[0].kind, entries[0].id)]),
        version=42,
        base_version=41,
        now_ns=time.time_ns(),
    )

    async def connected(g: RunningGate) -> Downlink:
        assert g.gate.uplink is not None and g.gate.downlink is not None
        async with asyncio.timeout(WAIT):
            await g.gate.uplink.connected.wait()
        return g.gate.downlink

    async def handled(downlink: Downlink, before: AllowListOutcome | None) -> AllowListOutcome:
        await eventually(
            lambda: downlink.last_allowlist is not before, "a publication handled", within=WAIT
        )
        assert downlink.last_allowlist is not None
        return downlink.last_allowlist

    central_client = mosquitto_broker.client("central")
    async with central_client as central, RunningGate(config, demo_allowlist=False) as g:
        downlink = await connected(g)
        await central.publish(
            topics.allowlist, signed_publication(snapshot, key), qos=1, retain=True
        )
        assert (await handled(downlink, None)).applied
        first = downlink.last_allowlist
        await central.publish(topics.allowlist, signed_publication(delta, key), qos=1)
        assert (await handled(downlink, first)).applied
        assert g.gate.allowlist is not None and g.gate.allowlist.view.version == 42

    async with RunningGate(config, demo_allowlist=False) as g:
        downlink = await connected(g)
        again = await handled(downlink, None)  # the daemon restarted
        assert again.code == "redelivered"
        await mosquitto_broker.arestart()  # the broker restarted: the gate reconnects
        assert (await handled(downlink, again)).code == "redelivered"
        assert g.log.of(AllowListRefused) == []
        assert g.gate.allowlist is not None and g.gate.allowlist.view.version == 42
        async with mosquitto_broker.client("central") as central:
            await central.publish(topics.allowlist, b"", qos=1, retain=True)
