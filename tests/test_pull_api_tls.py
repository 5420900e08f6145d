"""``[http]`` with ``tls_cert_file``/``tls_key_file`` and ``[sync.pull_api]``: the running gate
serves its pull API over HTTPS, and ``edgegate central pull --ca-file`` reads it into central's
store."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from edgegate.central.store import open_store
from edgegate.cli.main import main
from edgegate.config import ConfigError, GateConfig, parse_config
from edgegate.sync.signing import generate_keypair
from tests.certs import PKI, make_pki
from tests.gate_harness import RunningGate, gate_toml, lane, sim_plc, sim_reader
from tests.services.mosquitto import Broker, free_port

pytestmark = pytest.mark.timeout(60)

GATE = "e2e-gate"


def _config(tmp_path: Path, broker: Broker, pki: PKI, pull_port: int, tls: str) -> GateConfig:
    _, public_pem = generate_keypair()
    (tmp_path / "central.pub").write_bytes(public_pem)
    (tmp_path / "mqtt-password").write_text(broker.add_gate(GATE))
    text = gate_toml(
        tmp_path / "gate.db",
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc")],
    )
    text += (
        f'\n[sync]\nbroker = "mqtt://127.0.0.1:{broker.plain_port}"\n'
        'password_file = "mqtt-password"\ncentral_public_key = "central.pub"\n'
        '\n[sync.pull_api]\ntoken_file = "pull-token"\n'
        f"\n[http]\nport = {pull_port}\n{tls}"
    )
    return parse_config(text, base_dir=tmp_path)


async def test_central_pull_with_ca_file_reads_the_gates_pull_api_over_tls(
    mosquitto_broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server certificate names 127.0.0.1 and localhost; the wrong CA signed nothing here.
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "pull-token").write_text(secrets.token_hex(32) + "\n")
    pull_port = free_port()
    tls = f'tls_cert_file = "{pki.server_cert_path}"\ntls_key_file = "pki/server.key"\n'
    config = _config(tmp_path, mosquitto_broker, pki, pull_port, tls)
    db = tmp_path / "central.db"
    dsn = f"sqlite:///{db}"  # an absolute path: sqlite:////...
    assert dsn.startswith("sqlite:////")
    url = f"https://127.0.0.1:{pull_port}"
    token = ["--token-file", str(tmp_path / "pull-token")]

    async with RunningGate(config) as g:
        assert g.gate.web is not None and g.gate.web.pull_api is not None
        head = g.event_log.head[0]
        assert head > 0

        def pull(ca: Path) -> int:
            return main(["central", "pull", url, *token, "--ca-file", str(ca), "--db", dsn])

        # A CA that did not sign the gate's certificate: refused, nothing stored.
        assert await asyncio.to_thread(pull, pki.wrong_ca_path) == 2
        assert "TLS" in capsys.readouterr().err

        assert await asyncio.to_thread(pull, pki.ca_path) == 0
        out = capsys.readouterr().out
        assert f"gate {GATE}" in out and "up to date" in out

    with open_store(dsn) as store:
        stored = store.head(GATE)
    assert stored[0] >= head


def test_the_http_certificate_and_key_go_together(tmp_path: Path) -> None:
    text = gate_toml(
        tmp_path / "gate.db",
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc")],
    )
    text += (
        '\n[sync]\nbroker = "mqtt://127.0.0.1:1883"\npassword = "p"\n'
        'central_public_key = "central.pub"\n'
        '\n[sync.pull_api]\ntoken_file = "pull-token"\n'
        '\n[http]\ntls_cert_file = "gate.crt"\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=tmp_path)
    assert ("http", "tls_cert_file and tls_key_file go together: set both") in (info.value.problems)
    config = parse_config(text + 'tls_key_file = "gate.key"\n', base_dir=tmp_path)
    missing = {key for key, _ in config.file_problems()}
    assert {"http.tls_cert_file", "http.tls_key_file"} <= missing
