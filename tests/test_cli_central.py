"""``edgegate central run|publish-allowlist|command`` as an operator runs them, against a real
mosquitto; what a gate receives is checked by subscribing as that gate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from edgegate.allowlist import importer
from edgegate.central import publish as pub
from edgegate.central.store import open_store
from edgegate.cli import central_cmd
from edgegate.cli.main import build_parser, main
from edgegate.core.domain import CredentialKind
from edgegate.sync.protocol import Topics, decode_ack
from edgegate.sync.signing import (
    KIND_ALLOWLIST,
    CommandGuard,
    decode_publication,
    delta_changes,
    key_id,
    load_public_key,
    open_signed,
    snapshot_entries,
)
from tests.chains import batch_payload, make_chain
from tests.services.mosquitto import Broker, free_port

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SITE = "site-1"
WAIT = 15.0

HEADER = (
    "type,id,plate,colour,category,holder,organisation,visitor,host,purpose,valid_from,"
    "valid_until,gates,window_start,window_end,destination,un_number,hazard_class,waybill,"
    "reason,detail,source\n"
)
REG = (
    "registration,REG-1,苏E12345,blue,ordinary,commuter,Yangzi Petrochemical,,,,2026-01-01,"
    "2026-12-31,,,,,,,,,,\n"
)
REG_CHANGED = REG.replace("2026-12-31", "2027-06-30")
BLACKLIST = "blacklist,BL-1,苏E99999,,,,,,,,2026-11-01,,,,,,,,,speeding,82 km/h,park-security\n"
PERMIT = (
    "permit,PER-1,皖A12345,blue,ordinary,,,Hefei Valves,Zhang Wei,pumps,2026-11-28,2026-11-28,"
    "gate-a,,,,,,,,,\n"
)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    return tmp_path / "keys" / "central.key", tmp_path / "keys" / "central.pub"


def broker_args(broker: Broker, tmp_path: Path, user: str = "central") -> list[str]:
    pw = tmp_path / f"{user}.password"
    pw.write_text(broker.users[user] + "\n")
    return [
        "--broker",
        f"mqtts://{broker.host}:{broker.tls_port}",
        "--username",
        user,
        "--password-file",
        str(pw),
        "--ca-file",
        str(broker.ca_path),
    ]


async def cli(*argv: str) -> int:
    """``edgegate ARGV`` (it runs its own event loop, so on a thread)."""
    return await asyncio.to_thread(main, list(argv))


@contextlib.asynccontextmanager
async def listening(
    broker: Broker, gate: str, kind: str
) -> AsyncIterator[asyncio.Queue[aiomqtt.Message]]:
    """A queue of what ``gate`` receives on its ``kind`` topic (subscribed on entry)."""
    async with broker.client(gate, tls=True) as client:
        topic = getattr(Topics(SITE, gate), kind)
        await client.subscribe(topic, qos=1)
        queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

        async def pump() -> None:
            async for message in client.messages:
                queue.put_nowait(message)

        task = asyncio.create_task(pump())
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def receive(queue: asyncio.Queue[aiomqtt.Message]) -> aiomqtt.Message:
    async with asyncio.timeout(WAIT):
        return await queue.get()


def body(message: aiomqtt.Message) -> bytes:
    assert isinstance(message.payload, bytes)
    return message.payload


# ------------------------------------------------------------------------------ allow-lists


async def test_snapshot_is_signed_retained_and_reaches_every_named_gate(
    mosquitto_broker: Broker,
    tmp_path: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    private, public = keys
    listfile = tmp_path / "list.csv"
    listfile.write_text(HEADER + REG + BLACKLIST + PERMIT, encoding="utf-8")
    rc = await cli(
        "central",
        "publish-allowlist",
        str(listfile),
        "--key",
        str(private),
        "--site",
        SITE,
        "--gate",
        "gate-a",
        "--gate",
        "gate-b",
        "--version",
        "3",
        "--db",
        f"sqlite:///{tmp_path / 'central.db'}",
        *broker_args(mosquitto_broker, tmp_path),
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "snapshot version 3 (3 entries)" in out and "retained" in out
    # Retained: gates subscribing after the publication still get it.
    expected = importer.parse_csv((HEADER + REG + BLACKLIST + PERMIT).encode())
    for gate in ("gate-a", "gate-b"):
        async with listening(mosquitto_broker, gate, "allowlist") as queue:
            message = await receive(queue)
        assert message.retain
        publication = decode_publication(
            open_signed(body(message), KIND_ALLOWLIST, load_public_key(public))
        )
        assert (publication.kind, publication.version, publication.base_version) == (
            "snapshot",
            3,
            None,
        )
        assert abs(publication.issued_at_ns - time.time_ns()) < 60 * 10**9
        assert snapshot_entries(publication.content) == expected
    assert f"key id {key_id(load_public_key(public))}" in out


async def test_delta_from_a_delta_file_is_signed_and_not_retained(
    mosquitto_broker: Broker, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    full = tmp_path / "full.csv"
    full.write_text(HEADER + REG + BLACKLIST, encoding="utf-8")
    delta = tmp_path / "delta.json"
    delta.write_text(
        json.dumps(
            {
                "upsert": [
                    {
                        "type": "blacklist",
                        "id": "BL-2",
                        "plate": "苏E88888",
                        "reason": "overstay",
                        "source": "central",
                        "valid_from": "2026-11-01",
                    }
                ],
                "remove": [{"type": "registration", "id": "REG-1"}],
            }
        ),
        encoding="utf-8",
    )
    common = [
        "--key",
        str(private),
        "--site",
        SITE,
        "--gate",
        "gate-a",
        "--db",
        f"sqlite:///{tmp_path / 'central.db'}",
        *broker_args(mosquitto_broker, tmp_path),
    ]
    async with listening(mosquitto_broker, "gate-a", "allowlist") as live:
        assert await cli("central", "publish-allowlist", str(full), "--version", "1", *common) == 0
        assert (
            await cli(
                "central",
                "publish-allowlist",
                str(delta),
                "--version",
                "2",
                "--delta-from",
                "1",
                *common,
            )
            == 0
        )
        snapshot, published = await receive(live), await receive(live)
    assert not published.retain
    pub = decode_publication(open_signed(body(published), KIND_ALLOWLIST, load_public_key(public)))
    assert (pub.kind, pub.version, pub.base_version) == ("delta", 2, 1)
    changes = delta_changes(pub.content)
    assert [c.id for c in changes.upserts] == ["BL-2"]
    assert changes.removals == [(CredentialKind.REGISTRATION, "REG-1")]
    # A gate subscribing now gets the retained snapshot, not the delta.
    async with listening(mosquitto_broker, "gate-a", "allowlist") as late:
        retained = await receive(late)
    assert retained.retain and body(retained) == body(snapshot)


async def test_delta_computed_from_the_previous_list(
    mosquitto_broker: Broker,
    tmp_path: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    private, public = keys
    previous, current = tmp_path / "v4.csv", tmp_path / "v5.csv"
    previous.write_text(HEADER + REG + BLACKLIST, encoding="utf-8")
    current.write_text(HEADER + REG_CHANGED + PERMIT, encoding="utf-8")
    async with listening(mosquitto_broker, "gate-a", "allowlist") as live:
        rc = await cli(
            "central",
            "publish-allowlist",
            str(current),
            "--previous",
            str(previous),
            "--delta-from",
            "4",
            "--version",
            "5",
            "--key",
            str(private),
            "--site",
            SITE,
            "--gate",
            "gate-a",
            "--db",
            f"sqlite:///{tmp_path / 'central.db'}",
            *broker_args(mosquitto_broker, tmp_path),
        )
        assert rc == 0
        message = await receive(live)
    assert "delta 4 -> 5 (2 upserts, 1 removals)" in capsys.readouterr().out
    pub = decode_publication(open_signed(body(message), KIND_ALLOWLIST, load_public_key(public)))
    changes = delta_changes(pub.content)
    assert sorted(c.id for c in changes.upserts) == ["PER-1", "REG-1"]
    assert changes.removals == [(CredentialKind.BLACKLIST, "BL-1")]


# ------------------------------------------------------------------------------ commands


@pytest.mark.parametrize(
    ("action", "extra", "lane"),
    [
        ("open-lane", ["--lane", "in-1", "--reason", "barrier test"], "in-1"),
        ("open-lane", ["--lane", "in-1", "--reason", "papers checked", "--once"], "in-1"),
        ("release-lane", ["--lane", "in-1"], "in-1"),
        ("incident-on", [], None),
    ],
)
async def test_command_is_signed_and_accepted_by_the_gate(
    mosquitto_broker: Broker,
    tmp_path: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    action: str,
    extra: list[str],
    lane: str | None,
) -> None:
    private, public = keys
    async with listening(mosquitto_broker, "gate-a", "commands") as live:
        rc = await cli(
            "central",
            "command",
            "gate-a",
            action,
            *extra,
            "--operator",
            "wang.li",
            "--key",
            str(private),
            "--site",
            SITE,
            "--expires",
            "90s",
            *broker_args(mosquitto_broker, tmp_path),
        )
        assert rc == 0
        message = await receive(live)
    out, err = capsys.readouterr()
    command_id = out.strip()
    assert not message.retain
    command = CommandGuard().accept(
        body(message), load_public_key(public), "gate-a", time.time_ns()
    )
    assert (command.id, command.action, command.lane, command.operator) == (
        command_id,
        "open-lane-once" if "--once" in extra else action,
        lane,
        "wang.li",
    )
    assert command.expires_at_ns - command.issued_at_ns == 90 * 10**9
    # The log line is an interface: its keys, their order and values.
    lines = [json.loads(line) for line in err.splitlines() if '"command_published"' in line]
    assert [
        {k: v for k, v in line.items() if k not in ("level", "timestamp")} for line in lines
    ] == [
        {
            "component": "cli.central",
            "command_id": command.id,
            "gate": "gate-a",
            "site": SITE,
            "action": command.action,
            "lane": lane,
            "operator": "wang.li",
            "expires_at_ns": command.expires_at_ns,
            "key_id": pub.signing_key_id(pub.load_signing_key(private)),
            "event": "command_published",
        }
    ]
    assert list(lines[0])[:9] == [
        "component",
        "command_id",
        "gate",
        "site",
        "action",
        "lane",
        "operator",
        "expires_at_ns",
        "key_id",
    ]


# ------------------------------------------------------------------------------ refusals


@pytest.fixture
def listfile(tmp_path: Path) -> Path:
    path = tmp_path / "list.csv"
    path.write_text(HEADER + REG, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("public", "this is a public key"),
        ("missing", "no such file"),
        ("garbage", "not an unencrypted PEM private key"),
    ],
)
def test_bad_signing_key_is_a_clear_error(
    tmp_path: Path,
    keys: tuple[Path, Path],
    listfile: Path,
    capsys: pytest.CaptureFixture[str],
    key: str,
    problem: str,
) -> None:
    path = {"public": keys[1], "missing": tmp_path / "nope.key", "garbage": tmp_path / "g.key"}[key]
    (tmp_path / "g.key").write_text("not a key\n")
    port = free_port()  # nothing listens: the key is checked before any connection
    for argv in (
        ["publish-allowlist", str(listfile), "--version", "1", "--gate", "gate-a"],
        ["command", "gate-a", "incident-off", "--operator", "op"],
    ):
        rc = main(
            [
                "central",
                *argv,
                "--key",
                str(path),
                "--site",
                SITE,
                "--broker",
                f"mqtt://127.0.0.1:{port}",
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2
        assert f"signing key {path}" in err or f"signing key {path}:" in err, err
        assert problem in err, err


def test_bad_allowlist_file_names_the_line(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + REG.replace("ordinary", "tractor"), encoding="utf-8")
    rc = main(
        [
            "central",
            "publish-allowlist",
            str(bad),
            "--version",
            "1",
            "--gate",
            "gate-a",
            "--key",
            str(keys[0]),
            "--site",
            SITE,
            "--broker",
            f"mqtt://127.0.0.1:{free_port()}",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "line 2: category: unknown category 'tractor'" in err, err


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["command", "gate-a", "open-lane", "--operator", "op", "--reason", "r"], "needs --lane"),
        (
            ["command", "gate-a", "open-lane", "--operator", "op", "--lane", "in-1"],
            "needs --reason",
        ),
        (["command", "gate-a", "incident-on", "--operator", "op", "--lane", "in-1"], "drop --lane"),
        (["command", "gate-a", "release-lane", "--operator", "op"], "release-lane needs --lane"),
        (
            ["command", "gate-a", "incident-on", "--operator", "op", "--once"],
            "--once goes with open-lane only",
        ),
        (
            ["command", "gate-a", "incident-on", "--operator", "op", "--wait", "--db", "x:"],
            "--db",
        ),
        (
            ["command", "gate-a", "incident-on", "--operator", "op", "--expires", "2h"],
            "at most 60 min",
        ),
        (
            ["command", "gate-a", "incident-on", "--operator", "op", "--expires", "soon"],
            "--expires",
        ),
        (["command", "gate/a", "incident-on", "--operator", "op"], "gate"),
        (["publish-allowlist", "{list}", "--version", "0", "--gate", "gate-a"], "at least 1"),
        (
            [
                "publish-allowlist",
                "{list}",
                "--version",
                "2",
                "--gate",
                "g",
                "--previous",
                "{list}",
            ],
            "--delta-from",
        ),
        (
            ["publish-allowlist", "{list}", "--version", "2", "--gate", "g", "--delta-from", "2"],
            "greater",
        ),
        (["publish-allowlist", "{dir}/absent.csv", "--version", "1", "--gate", "g"], "cannot read"),
    ],
)
def test_bad_usage_is_refused_before_publishing(
    tmp_path: Path,
    keys: tuple[Path, Path],
    listfile: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    problem: str,
) -> None:
    argv = [a.format(list=listfile, dir=tmp_path) for a in argv]
    if argv[0] == "publish-allowlist" and "--delta-from" in argv and "--previous" not in argv:
        listfile.write_text(HEADER.replace("type,", "op,type,") + "upsert," + REG, encoding="utf-8")
    port = free_port()
    rc = main(
        [
            "central",
            *argv,
            "--key",
            str(keys[0]),
            "--site",
            SITE,
            "--broker",
            f"mqtt://127.0.0.1:{port}",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert problem in err, err


async def test_unreachable_broker_and_wrong_password_are_clear_errors(
    mosquitto_broker: Broker,
    tmp_path: Path,
    keys: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    command = [
        "central",
        "command",
        "gate-a",
        "incident-on",
        "--operator",
        "op",
        "--key",
        str(keys[0]),
        "--site",
        SITE,
    ]
    rc = await cli(*command, "--broker", f"mqtt://127.0.0.1:{free_port()}", "--timeout", "5")
    err = capsys.readouterr().err
    assert rc == 2
    assert "unreachable" in err, err
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    rc = await cli(
        *command,
        "--broker",
        f"mqtts://127.0.0.1:{mosquitto_broker.tls_port}",
        "--ca-file",
        str(mosquitto_broker.ca_path),
        "--password-file",
        str(wrong),
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "refused" in err and "--password-file" in err, err
    rc = await cli(
        *command,
        "--broker",
        f"mqtts://127.0.0.1:{mosquitto_broker.tls_port}",
        "--ca-file",
        str(mosquitto_broker.pki.wrong_ca_path),
        *broker_args(mosquitto_broker, tmp_path)[2:6],
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "TLS" in err or "certificate" in err, err


# ------------------------------------------------------------------------------ central run


async def test_central_run_stores_acks_and_stops_on_sigterm(
    mosquitto_broker: Broker, tmp_path: Path
) -> None:
    db = tmp_path / "central.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgegate",
        "central",
        "run",
        "--db",
        f"sqlite:///{db}",
        "--client-id",
        "cli-sink",
        *broker_args(mosquitto_broker, tmp_path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[dict[str, object]] = []

    async def until(event: str) -> None:
        assert proc.stdout is not None
        async with asyncio.timeout(WAIT):
            while not any(line.get("event") == event for line in lines):
                raw = await proc.stdout.readline()
                assert raw, f"central run exited: {lines}"
                lines.append(json.loads(raw))

    try:
        await until("sink_subscribed")
        rows = make_chain("gate-a", 10)
        async with mosquitto_broker.client("gate-a", tls=True) as gate:
            await gate.subscribe(Topics(SITE, "gate-a").ack, qos=1)
            await gate.publish(Topics(SITE, "gate-a").events, batch_payload("gate-a", rows), qos=1)
            async with asyncio.timeout(WAIT):
                message = await anext(gate.messages)
            assert isinstance(message.payload, bytes)
            assert decode_ack(message.payload).seq == 10
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            rest, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    lines.extend(json.loads(line) for line in rest.decode().splitlines())
    (stopped,) = [line for line in lines if line.get("event") == "sink_stopped"]
    assert stopped["events"] == 10
    with open_store(f"sqlite:///{db}") as store:
        assert store.count("gate-a") == 10


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--broker", "mqtt://127.0.0.1:1", "--db", "mysql://x/y"], "unsupported store DSN scheme"),
        (
            ["--broker", "mqtt://127.0.0.1:1", "--db", "sqlite:///{dir}/no/dir/c.db"],
            "does not exist",
        ),
        (["--broker", "http://127.0.0.1"], "use mqtt://"),
        (
            ["--broker", "mqtt://127.0.0.1:1", "--password-file", "{dir}/nope"],
            "cannot read password file",
        ),
        (["--broker", "mqtt://127.0.0.1:1", "--group", "a/b"], "group"),
    ],
)
def test_central_run_refuses_bad_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    rc = main(["central", "run", *(a.format(dir=tmp_path) for a in argv)])
    assert rc == 2
    assert problem in capsys.readouterr().err


def test_other_modules_can_add_central_actions() -> None:
    def register_extra(central: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        extra = central.add_parser("extra")
        extra.set_defaults(func=lambda args: 0)

    central_cmd.CENTRAL_COMMANDS.append(register_extra)
    try:
        args = build_parser().parse_args(["central", "extra"])
    finally:
        central_cmd.CENTRAL_COMMANDS.remove(register_extra)
    assert args.central_command == "extra"
