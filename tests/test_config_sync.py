"""The ``[sync]`` section of a gate configuration: defaults, the example, file checks, and
invalid sections reported by ``edgegate check-config`` with the key they concern."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from edgegate.config import BrokerAddress, load_config, parse_byte_size, parse_config
from tests.config_cases import (
    CONFIG_DIR,
    Case,
    assert_distinct,
    assert_reported,
    edited,
    params,
)
from tests.config_cli import Runner, problem_lines

BASE = """\
[gate]
id = "test-gate"
name = "Test gate"
kind = "comprehensive"
site = "chem-park"

[log]
path = "gate.db"

[devices.plc-in]
type = "simulated-plc"

[devices.cam-in]
type = "simulated-plate-reader"

[[lanes]]
id = "in-1"
direction = "entry"
plate_reader = "cam-in"
barrier = "plc-in"
"""

SYNC = """
[sync]
broker = "mqtts://127.0.0.1:8883"
password_file = "mqtt-password"
ca_file = "ca.crt"
central_public_key = "central.pub"
"""


def with_sync(*edits: tuple[str, str], append: str = "") -> str:
    """BASE with SYNC, each ``(old, new)`` replaced once, ``append`` added at the end."""
    return edited(BASE + SYNC, *edits, append=append)


# ------------------------------------------------------------------------------ valid


def test_no_sync_section_means_no_sync() -> None:
    config = parse_config(BASE)
    assert config.sync is None
    assert config.file_problems() == []
    assert (config.sync_site, config.sync_username) == ("chem-park", "test-gate")


def test_defaults(tmp_path: Path) -> None:
    config = parse_config(with_sync(), base_dir=tmp_path)
    sync = config.sync
    assert sync is not None
    assert sync.broker_address == BrokerAddress("127.0.0.1", 8883, tls=True)
    assert (config.sync_site, config.sync_username) == ("chem-park", "test-gate")
    assert (sync.batch_max_events, sync.batch_max_bytes) == (5000, 4 * 1024 * 1024)
    assert sync.reconnect_max == timedelta(seconds=30)
    assert sync.keepalive == timedelta(seconds=30)
    assert sync.ack_timeout == timedelta(seconds=10)
    assert sync.pull_api is None
    assert config.resolve_path(sync.ca_file or "") == tmp_path / "ca.crt"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://broker.example", BrokerAddress("broker.example", 1883, tls=False)),
        ("mqtts://broker.example", BrokerAddress("broker.example", 8883, tls=True)),
        ("MQTTS://10.0.0.5:18883/", BrokerAddress("10.0.0.5", 18883, tls=True)),
        ("mqtt://[::1]:1884", BrokerAddress("::1", 1884, tls=False)),
    ],
)
def test_broker_urls(url: str, address: BrokerAddress) -> None:
    edits = [('"mqtts://127.0.0.1:8883"', json.dumps(url))]
    if not address.tls:
        edits.append(('ca_file = "ca.crt"\n', ""))
    config = parse_config(with_sync(*edits))
    assert config.sync is not None
    assert config.sync.broker_address == address
    assert str(address).startswith(("mqtt://", "mqtts://"))


def test_overrides_and_pull_api() -> None:
    config = parse_config(
        with_sync(
            append='site = "central-site"\nusername = "gate-user"\nbatch_max_events = 10000\n'
            'batch_max_bytes = "512KiB"\nreconnect_max = "5min"\n\n'
            '[sync.pull_api]\ntoken_file = "/etc/edgegate/token"\nauth_pause = "5min"\n\n'
            '[http]\nbind = "10.20.7.5"\nport = 9000\nheader_timeout = "2s"\n'
            "max_pending_per_peer = 4\n"
        )
    )
    sync = config.sync
    assert sync is not None
    assert (config.sync_site, config.sync_username) == ("central-site", "gate-user")
    assert (sync.batch_max_events, sync.batch_max_bytes) == (10000, 512 * 1024)
    assert sync.reconnect_max == timedelta(minutes=5)
    assert sync.pull_api is not None
    http = config.http
    assert http is not None
    assert (http.bind, http.port, http.url) == ("10.20.7.5", 9000, "http://10.20.7.5:9000")
    assert sync.files()["sync.pull_api.token_file"] == "/etc/edgegate/token"
    pull = sync.pull_api
    assert (http.header_timeout, http.max_pending_per_peer, pull.auth_pause) == (
        timedelta(seconds=2),
        4,
        timedelta(minutes=5),
    )
    assert (http.max_connections, pull.max_auth_failures) == (32, 10)


def test_inline_password_stays_out_of_the_hash_and_repr() -> None:
    text = with_sync(('password_file = "mqtt-password"', 'password = "s3cret-one"'))
    config = parse_config(text)
    assert config.sync is not None and config.sync.password is not None
    assert config.sync.password.get_secret_value() == "s3cret-one"
    assert "s3cret" not in config.canonical_json()
    assert "s3cret" not in repr(config)
    other = parse_config(text.replace("s3cret-one", "s3cret-two"))
    assert other.config_hash() == config.config_hash()


def test_the_example_with_sync(run_cli: Runner) -> None:
    path = CONFIG_DIR / "gate-with-sync.toml"
    config = load_config(path)
    sync = config.sync
    assert sync is not None
    assert sync.broker_address == BrokerAddress("mqtt.chem-park.example", 8883, tls=True)
    assert config.sync_username == config.gate.id
    assert sync.pull_api is not None
    code, out, err = run_cli(path)
    assert code == 0, err
    assert "mqtts://mqtt.chem-park.example:8883 as huagong-road-north" in out
    # Its files live on the gate, not in the repository: valid, with a warning for each.
    assert config.http is not None
    files = {**sync.files(), **config.http.files()}
    assert {key for key, _ in config.file_problems()} == set(files)
    for key in files:
        assert f"warning: {key}: file not found" in err
    assert "https://10.20.7.5:8480 — pull API /v1" in out


def test_file_problems_name_the_key_and_the_path(tmp_path: Path) -> None:
    config = parse_config(with_sync(), base_dir=tmp_path)
    problems = dict(config.file_problems())
    assert problems == {
        "sync.password_file": f"file not found: {tmp_path / 'mqtt-password'}",
        "sync.ca_file": f"file not found: {tmp_path / 'ca.crt'}",
        "sync.central_public_key": f"file not found: {tmp_path / 'central.pub'}",
    }
    for name in ("mqtt-password", "ca.crt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "central.pub").mkdir()
    assert config.file_problems() == [
        ("sync.central_public_key", f"not a regular file: {tmp_path / 'central.pub'}")
    ]


def test_a_file_name_too_long_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    config = parse_config(with_sync(("ca.crt", "c" * 5000)), base_dir=tmp_path)
    problems = dict(config.file_problems())
    assert problems["sync.ca_file"] == "cannot check the file: File name too long"


def test_a_size_of_thousands_of_digits_is_refused() -> None:
    with pytest.raises(ValueError, match=r"invalid size '9{36}\.\.\.: too large"):
        parse_byte_size("9" * 5000 + "MiB")


@pytest.mark.parametrize(
    ("value", "size"),
    [(65536, 65536), ("4MiB", 4 << 20), ("512 KiB", 512 << 10), ("100B", 100), ("7", 7)],
)
def test_parse_byte_size(value: object, size: int) -> None:
    assert parse_byte_size(value) == size


@pytest.mark.parametrize("value", ["4MB", "1.5MiB", "-1", True, -5, "", "MiB"])
def test_parse_byte_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_byte_size(value)


# ------------------------------------------------------------------------------ invalid

INVALID: list[Case] = [
    (
        "missing-broker",
        with_sync(('broker = "mqtts://127.0.0.1:8883"\n', "")),
        "sync.broker",
        "required key is missing",
    ),
    (
        "broker-wrong-scheme",
        with_sync(('"mqtts://127.0.0.1:8883"', '"https://127.0.0.1:8883"')),
        "sync.broker",
        "unknown scheme 'https'",
    ),
    (
        "broker-not-a-url",
        with_sync(('"mqtts://127.0.0.1:8883"', '"127.0.0.1:8883"')),
        "sync.broker",
        "is not a broker URL: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS)",
    ),
    (
        "broker-credentials-in-url",
        with_sync(('"mqtts://127.0.0.1:8883"', '"mqtts://gate:pw@127.0.0.1:8883"')),
        "sync.broker",
        "credentials go in username/password_file",
    ),
    (
        "broker-port-out-of-range",
        with_sync(('"mqtts://127.0.0.1:8883"', '"mqtts://127.0.0.1:70000"')),
        "sync.broker",
        "port 70000 is out of range 1-65535",
    ),
    (
        "password-and-password-file",
        with_sync(append='password = "x"\n'),
        "sync.password",
        "set either password or password_file, not both",
    ),
    (
        "no-password",
        with_sync(('password_file = "mqtt-password"\n', "")),
        "sync.password_file",
        "set password_file (or password): one is required",
    ),
    (
        "empty-password",
        with_sync(('password_file = "mqtt-password"', 'password = "  "')),
        "sync.password",
        "must not be empty",
    ),
    (
        "mqtts-without-ca",
        with_sync(('ca_file = "ca.crt"\n', "")),
        "sync.ca_file",
        "required for an mqtts:// broker",
    ),
    (
        "ca-with-plain-mqtt",
        with_sync(('"mqtts://127.0.0.1:8883"', '"mqtt://127.0.0.1:1883"')),
        "sync.ca_file",
        "is plain mqtt://; TLS files need mqtts://",
    ),
    (
        "client-cert-without-key",
        with_sync(append='client_cert = "gate.crt"\n'),
        "sync.client_key",
        "client_cert and client_key go together",
    ),
    (
        "missing-central-public-key",
        with_sync(('central_public_key = "central.pub"\n', "")),
        "sync.central_public_key",
        "required key is missing",
    ),
    (
        "batch-too-many-events",
        with_sync(append="batch_max_events = 20000\n"),
        "sync.batch_max_events",
        "must be at most 10000, got number 20000",
    ),
    (
        "batch-bytes-bad-unit",
        with_sync(append='batch_max_bytes = "4GB"\n'),
        "sync.batch_max_bytes",
        "invalid size '4GB'",
    ),
    (
        "batch-bytes-too-small",
        with_sync(append="batch_max_bytes = 1000\n"),
        "sync.batch_max_bytes",
        "must be between 65536 and 16777216 bytes, got 1000",
    ),
    (
        "reconnect-max-zero",
        with_sync(append='reconnect_max = "0s"\n'),
        "sync.reconnect_max",
        "must be between 1s and 10min, got 0s",
    ),
    (
        "keepalive-not-a-duration",
        with_sync(append='keepalive = "soon"\n'),
        "sync.keepalive",
        "invalid duration 'soon'",
    ),
    (
        "allowlist-age-belongs-to-policy",
        with_sync(append='max_allowlist_age = "3d"\n'),
        "sync.max_allowlist_age",
        "set [policy].allowlist_max_age",
    ),
    (
        "unknown-sync-key",
        with_sync(append='pasword = "x"\n'),
        "sync.pasword",
        "unknown key 'pasword' (did you mean 'password'?)",
    ),
    (
        "bad-site",
        with_sync(append='site = "Chem Park"\n'),
        "sync.site",
        "'Chem Park' is not a valid site id",
    ),
    (
        "wrong-type-path",
        with_sync(('password_file = "mqtt-password"', "password_file = 5")),
        "sync.password_file",
        "expected a string, got number 5",
    ),
    (
        "pull-api-listen-moved",
        with_sync(append='\n[sync.pull_api]\nlisten = "127.0.0.1:8480"\ntoken_file = "t"\n'),
        "sync.pull_api.listen",
        "moved to [http] bind and port",
    ),
    (
        "pull-api-tls-moved",
        with_sync(append='\n[sync.pull_api]\ntoken_file = "t"\ntls_cert_file = "c"\n'),
        "sync.pull_api.tls_cert_file",
        "moved to [http] tls_cert_file",
    ),
    (
        "pull-api-without-http",
        with_sync(append='\n[sync.pull_api]\ntoken_file = "t"\n'),
        "sync.pull_api",
        "add an [http] section",
    ),
    (
        "http-port-out-of-range",
        with_sync(append="\n[http]\nport = 70000\n"),
        "http.port",
        "must be at most 65535, got number 70000",
    ),
    (
        "pull-api-without-token",
        with_sync(append="\n[sync.pull_api]\n"),
        "sync.pull_api.token_file",
        "required key is missing",
    ),
    (
        "sync-not-a-table",
        'sync = "mqtt://127.0.0.1"\n' + BASE,
        "sync",
        "expected a table, got string 'mqtt://127.0.0.1'",
    ),
]


@pytest.mark.parametrize(("text", "key", "fragment"), params(INVALID))
def test_invalid_sync_section(
    text: str, key: str, fragment: str, tmp_path: Path, run_cli: Runner
) -> None:
    assert_reported(tmp_path / "gate.toml", text, key, fragment, run_cli)


def test_invalid_kinds_are_many() -> None:
    assert_distinct(INVALID, at_least=20)


def test_sync_problems_are_reported_with_the_others(tmp_path: Path, run_cli: Runner) -> None:
    text = with_sync(
        ('kind = "comprehensive"', 'kind = "harbour"'),
        ('ca_file = "ca.crt"\n', ""),
        append="batch_max_events = 0\n",
    )
    path = tmp_path / "gate.toml"
    path.write_text(text)
    code, _, err = run_cli(path)
    assert code == 2
    keys = [line.split(":", 1)[0] for line in problem_lines(err)]
    assert keys == ["gate.kind", "sync.batch_max_events"]
    # The mqtts/ca_file cross-check needs a valid section; fixing the field shows it.
    path.write_text(text.replace("batch_max_events = 0", "batch_max_events = 1"))
    code, _, err = run_cli(path)
    keys = [line.split(":", 1)[0] for line in problem_lines(err)]
    assert keys == ["gate.kind", "sync.ca_file"]
