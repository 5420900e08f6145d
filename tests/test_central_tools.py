"""``edgegate central events|verify|trial-broker``: central's store read as an operator reads
it (SQLite and PostgreSQL), and a trial broker started by a real mosquitto that a gate and
central then use over TLS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from edgegate.central.store import open_store
from edgegate.central.trial import TrialPlan, acl_text, mosquitto_password_hash
from edgegate.cli.main import main
from edgegate.mqtt.session import BrokerSettings, new_client, publish, subscribe
from edgegate.sync.protocol import Topics
from tests.central_stores import overwrite_event_data, raw_execute
from tests.chains import make_chain
from tests.eventually import eventually_blocking
from tests.replay_logs import central_copy, samples_log
from tests.services.mosquitto import CONFIG_DIR, MOSQUITTO, free_port

pytestmark = pytest.mark.timeout(120)

GATE = "fengxiang-road"  # samples_log's gate


@pytest.fixture
def dsn(central_dsn: str) -> str:
    return central_dsn


@pytest.fixture
def samples(dsn: str, tmp_path: Path) -> str:
    """``dsn`` holding one sample of every event type of GATE, recorded in Asia/Urumqi."""
    db = tmp_path / "gate.db"
    asyncio.run(samples_log(db, "Asia/Urumqi"))
    central_copy(db, tmp_path, dsn)
    return dsn


def events(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["central", "events", *args, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


# ------------------------------------------------------------------------------ events


def test_events_are_decoded_newest_last_in_the_gates_zone(
    samples: str, capsys: pytest.CaptureFixture[str]
) -> None:
    every = events(capsys, GATE, "--store", samples, "-n", "0")
    with open_store(samples) as store:
        assert [e["seq"] for e in every] == list(range(1, store.count(GATE) + 1))
    assert all(e["gate"] == GATE and str(e["ts"]).endswith("+06:00") for e in every)
    decision = next(e for e in every if e["type"] == "access.decided")
    assert decision["plate"] and "decode_error" not in decision

    last = events(capsys, GATE, "--store", samples, "-n", "3")
    assert [e["seq"] for e in last] == [e["seq"] for e in every[-3:]]

    typed = events(capsys, GATE, "--store", samples, "--type", "vehicle.*", "--lane", "in-1")
    assert typed and all(str(e["type"]).startswith("vehicle.") for e in typed)
    assert all(e["lane"] == "in-1" for e in typed)

    assert main(["central", "events", GATE, "--store", samples, "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[-1].startswith(str(every[-1]["seq"]))
    assert "+06:00" in lines[-1]


def test_plate_filter_matches_ocr_confusable_plates(
    samples: str, capsys: pytest.CaptureFixture[str]
) -> None:
    found = events(capsys, GATE, "--store", samples, "--plate", "苏E 12345", "-n", "0")
    matches = {e["plate_match"] for e in found}
    assert matches == {"exact", "fuzzy"}  # 苏E1234S is one OCR confusion (5/S) away
    fuzzy = [e for e in found if e["plate_match"] == "fuzzy"]
    assert all("苏E1234S" in json.dumps(e, ensure_ascii=False) for e in fuzzy)
    other = events(capsys, GATE, "--store", samples, "--plate", "苏E12388", "-n", "0")
    assert other and {e["seq"] for e in other}.isdisjoint({e["seq"] for e in fuzzy})


def test_no_match_is_said_and_db_names_the_store_as_elsewhere(
    samples: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["central", "events", GATE, "--db", samples, "--plate", "京A00000"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and f"no events of gate {GATE} match" in out.err
    assert main(["central", "verify", "--db", samples]) == 0


def test_time_range_is_read_in_the_gates_zone(
    samples: str, capsys: pytest.CaptureFixture[str]
) -> None:
    every = events(capsys, GATE, "--store", samples, "-n", "0")
    middle = str(every[len(every) // 2]["ts"])
    local = middle[:26]  # without the offset: read in the gate's zone (Asia/Urumqi)
    later = events(capsys, GATE, "--store", samples, "--from", local, "-n", "0")
    assert later and all(str(e["ts"]) >= middle for e in later)
    assert len(later) < len(every)


def test_events_read_sqlite_without_writing(tmp_path: Path) -> None:
    db = tmp_path / "gate.db"
    asyncio.run(samples_log(db, "Asia/Shanghai"))
    dsn, _ = central_copy(db, tmp_path)
    store = Path(dsn.removeprefix("sqlite:///"))
    before = (sorted(p.name for p in tmp_path.iterdir()), store.read_bytes())
    assert main(["central", "events", GATE, "--store", dsn, "--json"]) == 0
    assert main(["central", "verify", "--store", dsn]) == 0
    assert (sorted(p.name for p in tmp_path.iterdir()), store.read_bytes()) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([GATE, "--store", "sqlite:///{tmp}/none.db"], "no such file"),
        ([GATE, "--store", "mysql://x/y"], "use sqlite:///PATH"),
        (["nobody", "--store", "{dsn}"], "holds no gate 'nobody'"),
        ([GATE, "--store", "{dsn}", "--type", "vehicle.flew"], "names no event type"),
        ([GATE, "--store", "{dsn}", "--from", "soon"], "is not ISO 8601"),
        ([GATE, "--store", "{dsn}", "--plate", " - "], "empty once normalised"),
    ],
)
def test_bad_events_input_is_one_line_and_exit_2(
    samples: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    argv = [a.format(tmp=tmp_path, dsn=samples) for a in args]
    assert main(["central", "events", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert err.splitlines()[0].startswith("edgegate central events: ")


def test_negative_count_is_refused(samples: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["central", "events", GATE, "--store", samples, "-n", "-1"])
    assert exit_.value.code == 2
    assert "must be 0 or more" in capsys.readouterr().err


# ------------------------------------------------------------------------------ verify


def test_verify_names_each_gate_and_the_first_fault(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(dsn) as store:
        for gate in ("g1", "g2", "g3"):
            assert store.store_batch(gate, make_chain(gate, 12)).stored == 12
    assert main(["central", "verify", "--store", dsn]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"OK gate {g}: 12 events, seq 1..12, chain verified" for g in ("g1", "g2", "g3")]

    overwrite_event_data(dsn, "g2", 5)
    assert main(["central", "verify", "--store", dsn]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("OK gate g1") and out[2].startswith("OK gate g3")
    assert out[1].startswith("FAILED gate g2: first bad seq 5: ")

    assert main(["central", "verify", "--store", dsn, "--gate", "g1", "--gate", "g3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    raw_execute(dsn, "UPDATE gate_heads SET seq = 13 WHERE gate = 'g3'")
    assert main(["central", "verify", "--store", dsn, "--gate", "g3"]) == 1
    assert "the head says seq 13 but the stored chain ends at 12" in capsys.readouterr().out


def test_verify_bad_usage_exits_2(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(dsn) as store:
        store.store_batch("g1", make_chain("g1", 2))
    assert main(["central", "verify", "--store", dsn, "--gate", "g9"]) == 2
    assert "holds no gate 'g9' (gates: g1)" in capsys.readouterr().err
    assert main(["central", "verify", "--store", f"sqlite:///{tmp_path}/x/none.db"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # Without --store: `central run`'s default store, here none.
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["central", "verify"]) == 2
    assert "central.db" in capsys.readouterr().err


# ------------------------------------------------------------------------------ trial-broker


def test_password_hash_is_mosquittos() -> None:
    # Written by mosquitto_passwd 2.0.11 -U for the password "secret".
    line = (
        "$7$101$ClS7/dVJQ3ZyUPVs$AcQDZLuTmMzZJgJWHVCouD8PrshRKtBUeBLZ2c6XbcKocz/gEo5onanjS8DVQO8"
        "uFfgWyIYC9bD+/s5oauhfbQ=="
    )
    salt = base64.b64decode(line.split("$")[3])
    assert mosquitto_password_hash("secret", salt=salt) == line
    assert mosquitto_password_hash("secret") != mosquitto_password_hash("secret")  # salted


def _rules(text: str) -> list[str]:
    return [
        " ".join(line.split())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_trial_acl_is_the_production_acl() -> None:
    assert _rules(acl_text("central")) == _rules((CONFIG_DIR / "acl").read_text())


def test_trial_broker_files_secrets_and_no_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "trial"
    assert main(["central", "trial-broker", str(out), "--gates", "g1,g2"]) == 0
    plan = TrialPlan(out, ("g1", "g2"))
    for path in plan.files():
        mode = stat.S_IMODE(path.stat().st_mode)
        secret = path.name in ("ca.key", "server.key", "client.key", "mqtt-password", "passwd")
        assert mode == (0o600 if secret else 0o644), path
    users = [line.split(":")[0] for line in (out / "broker" / "passwd").read_text().splitlines()]
    assert users == ["central", "g1", "g2"]
    conf = (out / "broker" / "mosquitto.conf").read_text()
    assert "listener 8883 127.0.0.1\n" in conf and "set_tcp_nodelay true\n" in conf
    text = (out / "trial.txt").read_text()
    assert f'password_file = "{out / "gates" / "g2" / "mqtt-password"}"' in text
    capsys.readouterr()

    key = (out / "ca.key").read_bytes()
    assert main(["central", "trial-broker", str(out), "--gates", "g1,g2"]) == 2
    assert "exist already" in capsys.readouterr().err
    assert (out / "ca.key").read_bytes() == key
    assert main(["central", "trial-broker", str(out), "--gates", "g1,g2", "--force"]) == 0
    assert (out / "ca.key").read_bytes() != key


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--gates", "g1,g1"], "g1 named twice"),
        (["--gates", " , "], "name at least one gate"),
        (["--gates", "g1,central"], "is also a gate id"),
        (["--gates", "a/b"], "not allowed in a topic level"),
        (["--gates", "g1", "--port", "70000"], "--port 70000"),
        (["--gates", "g:1"], "no ':'"),
    ],
)
def test_trial_broker_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    assert main(["central", "trial-broker", str(tmp_path / "t"), *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()


@contextlib.contextmanager
def running(conf: Path, port: int, ca: Path) -> Iterator[None]:
    """mosquitto with ``conf`` until the block ends, once its TLS listener answers."""
    log = conf.parent / "mosquitto.log"
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdin=subprocess.DEVNULL)
    context = ssl.create_default_context(cafile=str(ca))

    def up() -> bool:
        assert proc.poll() is None, log.read_text() if log.exists() else "mosquitto exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                context.wrap_socket(sock, server_hostname="127.0.0.1").close()
        except OSError:
            return False
        return True

    try:
        eventually_blocking(up, "the trial broker accepting TLS", within=15.0, every=0.02)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def connected(out: Path, user: str, port: int) -> AsyncIterator[aiomqtt.Client]:
    """``user`` connected with the credentials the trial wrote for it (project session)."""
    d = out / ("central" if user == "central" else f"gates/{user}")
    settings = BrokerSettings.from_url(
        f"mqtts://127.0.0.1:{port}",
        username=user,
        password=(d / "mqtt-password").read_text().strip(),
        ca_file=d / "ca.crt",
    )
    async with await new_client(settings, identifier=f"trial-{user}") as client:
        yield client


async def next_message(client: aiomqtt.Client) -> tuple[str, bytes]:
    async with asyncio.timeout(15):
        message = await anext(aiter(client.messages))
    assert isinstance(message.payload, bytes)
    return str(message.topic), message.payload


async def test_trial_broker_runs_and_confines_each_gate(tmp_path: Path) -> None:
    out, port, site = tmp_path / "trial", free_port(), "site-1"
    assert main(["central", "trial-broker", str(out), "--gates", "g1,g2", "--port", str(port)]) == 0
    g1, g2 = Topics(site, "g1"), Topics(site, "g2")
    with running(out / "broker" / "mosquitto.conf", port, out / "ca.crt"):
        async with (
            connected(out, "central", port) as central,
            connected(out, "g1", port) as gate1,
            connected(out, "g2", port) as gate2,
        ):
            assert await subscribe(central, [(f"edgegate/v1/{site}/+/events", 1)], 10) == []
            assert await subscribe(gate2, [(g2.commands, 1)], 10) == []
            # g1 may not write g2's uplink, nor central's downlink to g2 (dropped silently).
            # Each publish returns once the broker has routed it (PUBACK), so a forged
            # message let through would arrive before the genuine one that follows it.
            await publish(gate1, g2.events, b"forged by g1", 10)
            await publish(gate1, g2.commands, b"forged by g1", 10)
            await publish(gate1, g1.events, b"g1's own", 10)
            assert await next_message(central) == (g1.events, b"g1's own")
            await publish(central, g2.commands, b"from central", 10)
            assert await next_message(gate2) == (g2.commands, b"from central")
        # A gate's password is its own: g1 cannot log in as g2.
        settings = BrokerSettings.from_url(
            f"mqtts://127.0.0.1:{port}",
            username="g2",
            password=(out / "gates" / "g1" / "mqtt-password").read_text().strip(),
            ca_file=out / "ca.crt",
        )
        impostor = await new_client(settings, identifier="trial-impostor")
        with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori[sz]ed"):
            await impostor.__aenter__()


def test_a_terminal_gets_a_table_that_shows_brackets_as_text(
    dsn: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(dsn) as store:  # events of a type this software does not know: raw maps
        store.store_batch("g1", make_chain("g1", 3, salt="[/red] [bold]x"))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["central", "events", "g1", "--store", dsn]) == 0
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert "gate g1: 3 events, times in Asia/Shanghai" in out and "┃ seq" in out
    assert out.count("[/red] [bold]x") == 3  # shown as text, not taken for rich markup
