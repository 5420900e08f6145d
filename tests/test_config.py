"""Gate configuration: the examples, durations, rules, hash, and every kind of invalid file."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edgegate.config import (
    ConfigError,
    GateConfig,
    ModbusRtuDevice,
    WriteFailureAction,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
)
from edgegate.core.domain import Direction, GateKind, VehicleCategory
from edgegate.core.rules import (
    DEFAULT_DWELL_LIMITS,
    KIND_ADMITS,
    ColourMismatchAction,
    FuzzyMatching,
    GateRules,
    StaleAction,
)
from tests.config_cases import (
    CONFIG_DIR,
    Case,
    assert_distinct,
    assert_reported,
    edited,
    params,
)
from tests.config_cli import Runner, log_events, problem_lines

EXAMPLES = sorted(CONFIG_DIR.glob("*.toml"))
C = VehicleCategory

BASE = """\
[gate]
id = "test-gate"
name = "Test gate"
kind = "comprehensive"
site = "chem-park"

[log]
path = "gate.db"

[devices.plc-in]
type = "modbus-tcp"
host = "10.0.0.11"
profile = "barrier-plc-generic"

[devices.plc-out]
type = "modbus-tcp"
host = "10.0.0.12"
profile = "barrier-plc-generic"

[devices.cam-in]
type = "serial-plate-reader"
port = "/dev/ttyS1"
profile = "plate-reader-generic"

[devices.cam-out]
type = "serial-plate-reader"
port = "/dev/ttyS2"
profile = "plate-reader-generic"

[[lanes]]
id = "in-1"
direction = "entry"
plate_reader = "cam-in"
barrier = "plc-in"

[[lanes]]
id = "out-1"
direction = "exit"
plate_reader = "cam-out"
barrier = "plc-out"
"""

# BASE with another layout: sections and keys reordered, comments, other quoting, durations
# spelled differently, defaults written out. Same configuration, so the same hash.
BASE_REFORMATTED = """\
# the same gate, written differently
[[lanes]]
barrier = 'plc-in'
plate_reader = 'cam-in'
direction = 'entry'
id = 'in-1'
exit_loop = true

[[lanes]]
id = "out-1"     # exit
direction = "exit"
plate_reader = "cam-out"
barrier = "plc-out"

[devices]
cam-out = { type = "serial-plate-reader", port = "/dev/ttyS2", profile = "plate-reader-generic" }
cam-in.type = "serial-plate-reader"
cam-in.port = "/dev/ttyS1"
cam-in.profile = "plate-reader-generic"
cam-in.baudrate = 9600
plc-out = { type = "modbus-tcp", host = "10.0.0.12", profile = "barrier-plc-generic" }

[devices.plc-in]
profile = "barrier-plc-generic"
host    = "10.0.0.11"
type    = "modbus-tcp"
port    = 502
timeout = 0.5
reconnect_max = "5000ms"

[timings]
plate_wait = 5
pass_timeout = "1min"
loop_fault_after = "600s"

[policy]
allowlist_max_age = "3d"
dwell_limits = { hazmat = "360min", ordinary = "none" }

[log]
path = "gate.db"

[gate]
site = "chem-park"
kind = "comprehensive"
name = "Test gate"
id = "test-gate"
timezone = "Asia/Shanghai"
"""


def variant(*replacements: tuple[str, str], append: str = "") -> str:
    """BASE with exact replacements; fails if a replaced text is not in BASE."""
    return edited(BASE, *replacements, append=append)


# ------------------------------------------------------------------------------- examples


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {
        "fengxiang-road.toml",
        "petrochemical-avenue-east.toml",
        "liyuan-road-west.toml",
        "juren-chemical-west.toml",
        "demo.toml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path, run_cli: Runner) -> None:
    config = load_config(path)
    directions = {lane.direction for lane in config.lanes}
    assert directions == {Direction.ENTRY, Direction.EXIT}
    assert 2 <= len(config.lanes) <= 4

    code, out, err = run_cli(path)
    assert code == 0, err
    assert config.gate.id in out
    assert config.config_hash() in out
    for lane in config.lanes:
        assert lane.id in out
    for name in config.devices:
        assert name in out
    events = log_events(err)
    # Files a [sync] section names live on the gate: a warning each, not an error.
    assert [e["event"] for e in events[:-1]] == ["config_file_missing"] * len(
        config.file_problems()
    )
    event = events[-1]
    assert event["event"] == "config_valid"
    assert event["config_hash"] == config.config_hash()


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, FuzzyMatching.CONFIRM),  # the default, for a chemical park
        ('"off"', FuzzyMatching.OFF),
        ('"confirm"', FuzzyMatching.CONFIRM),
        ('"allow"', FuzzyMatching.ALLOW),
        # The boolean it was before: false is off, true the safe default.
        ("false", FuzzyMatching.OFF),
        ("true", FuzzyMatching.CONFIRM),
    ],
)
def test_fuzzy_matching_modes(value: str | None, mode: FuzzyMatching) -> None:
    text = variant(append="" if value is None else f"\n[policy]\nfuzzy_matching = {value}\n")
    assert parse_config(text).rules().fuzzy_matching is mode


def test_check_config_shows_the_fuzzy_matching_mode(tmp_path: Path, run_cli: Runner) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(variant(append='\n[policy]\nfuzzy_matching = "off"\n'), encoding="utf-8")
    code, out, err = run_cli(path)
    assert code == 0, err
    assert "fuzzy matching: off" in " ".join(out.split())
    code, out, err = run_cli(CONFIG_DIR / "fengxiang-road.toml")
    assert "fuzzy matching: confirm" in " ".join(out.split())


def test_example_semantics() -> None:
    fengxiang = load_config(CONFIG_DIR / "fengxiang-road.toml")
    assert fengxiang.gate.kind is GateKind.COMPREHENSIVE
    assert fengxiang.lane_timings("in-1").pass_timeout == timedelta(seconds=120)
    assert fengxiang.lane_timings("in-2").pass_timeout == timedelta(seconds=60)

    east = load_config(CONFIG_DIR / "petrochemical-avenue-east.toml")
    assert C.HAZMAT not in east.admits(Direction.ENTRY)
    assert C.HAZWASTE not in east.admits(Direction.ENTRY)
    assert C.HAZMAT in east.admits(Direction.EXIT)
    rtu = east.device("plc-out-2")
    assert isinstance(rtu, ModbusRtuDevice)
    assert rtu.effective_inter_frame_gap() == timedelta(microseconds=2006)  # 3.5 x 11 bits

    liyuan = load_config(CONFIG_DIR / "liyuan-road-west.toml")
    assert liyuan.admits(Direction.ENTRY) == KIND_ADMITS[GateKind.ORDINARY][Direction.ENTRY]

    juren = load_config(CONFIG_DIR / "juren-chemical-west.toml")
    assert juren.gate.kind is GateKind.EMERGENCY
    assert juren.incident.evacuation_lanes == ("out-1", "out-2")
    assert juren.log.on_write_failure.for_direction(Direction.ENTRY) is WriteFailureAction.ALLOW

    demo = load_config(CONFIG_DIR / "demo.toml")
    assert demo.log_file == CONFIG_DIR / "demo-gate.db"
    assert {d.type for d in demo.devices.values()} == {"simulated-plc", "simulated-plate-reader"}


# ------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, timedelta(seconds=5)),
        (0.5, timedelta(milliseconds=500)),
        (0, timedelta(0)),
        ("500ms", timedelta(milliseconds=500)),
        ("5s", timedelta(seconds=5)),
        ("10min", timedelta(minutes=10)),
        ("6h", timedelta(hours=6)),
        ("2d", timedelta(days=2)),
        ("1h30min", timedelta(minutes=90)),
        (" 1h 30min ", timedelta(minutes=90)),
        ("1.5s", timedelta(milliseconds=1500)),
        ("250us", timedelta(microseconds=250)),
    ],
)
def test_parse_duration(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "5",
        "5 seconds",
        "-5s",
        "5m",
        "1h1h",
        "",
        "s",
        "1.5.5s",
        "0.0000001s",
        True,
        -1,
        float("nan"),
        float("inf"),
        [5],
    ],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1min30s"),
        (timedelta(hours=72), "3d"),
        (timedelta(microseconds=1500), "1ms500us"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5), "1d2h3min4s5ms"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)))
def test_duration_round_trip(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


def test_config_durations_round_trip() -> None:
    text = variant(append='\n[timings]\nplate_wait = 7.25\npass_timeout = "1min30s"\n')
    config = parse_config(text)
    assert config.timings.plate_wait == timedelta(seconds=7.25)
    dumped = config.model_dump(mode="json")
    assert dumped["timings"]["plate_wait"] == "7s250ms"
    assert dumped["timings"]["pass_timeout"] == "1min30s"
    assert GateConfig.model_validate(dumped) == config


# ---------------------------------------------------------------------------- rules, hash


def test_rules_match_the_configuration() -> None:
    rules = load_config(CONFIG_DIR / "fengxiang-road.toml").rules()
    assert rules == GateRules(
        gate_id="fengxiang-road",
        kind=GateKind.COMPREHENSIVE,
        admits=KIND_ADMITS[GateKind.COMPREHENSIVE],
        dwell_limits=DEFAULT_DWELL_LIMITS,
        timezone="Asia/Shanghai",
        allowlist_max_age=timedelta(hours=72),
        on_stale_allowlist=StaleAction.CONFIRM,
        colour_mismatch=ColourMismatchAction.CONFIRM,
        fuzzy_matching=FuzzyMatching.CONFIRM,
        min_confidence=0.6,
    )

    east = load_config(CONFIG_DIR / "petrochemical-avenue-east.toml").rules()
    assert east.admits[Direction.ENTRY] == {C.ENGINEERING, C.ORDINARY, C.EMERGENCY}
    assert east.admits[Direction.EXIT] == KIND_ADMITS[GateKind.COMPREHENSIVE][Direction.EXIT]
    assert east.on_stale_allowlist is StaleAction.DENY_ENTRIES
    assert east.allowlist_max_age == timedelta(hours=48)

    liyuan = load_config(CONFIG_DIR / "liyuan-road-west.toml").rules()
    assert liyuan.dwell_limits[C.ENGINEERING] == timedelta(hours=14)
    assert liyuan.dwell_limits[C.HAZMAT] == DEFAULT_DWELL_LIMITS[C.HAZMAT]
    assert liyuan.dwell_limits[C.ORDINARY] is None


def test_config_hash_ignores_formatting(tmp_path: Path) -> None:
    base = parse_config(BASE)
    assert len(base.config_hash()) == 64
    assert parse_config(BASE_REFORMATTED).config_hash() == base.config_hash()
    # The file's location is not part of the configuration.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "gate.toml").write_text(BASE)
    moved = load_config(tmp_path / "a" / "gate.toml")
    assert moved.config_hash() == base.config_hash()
    assert moved.log_file == tmp_path / "a" / "gate.db"


# config_hash is logged in every daemon.started event and compared across versions: the
# same file must keep its hash. Copies of config/*.toml as they were when these were computed
# (so editing an example does not move the target), hashed by the code of that time. The hash
# covers defaults too (the effective configuration): a release that adds a setting to a
# section changes the hash of files with that section, and its pinned value here on purpose
# (gate-with-sync.toml: the pull API's lock-out limits, then its TLS files, then the move of
# its address, TLS and connection limits to [http], which made the old copy invalid, then
# [sync]'s park chain settings; every file: timings.guard_wait).
GOLDEN_DIR = Path(__file__).resolve().parent / "golden" / "config_hash"
GOLDEN_HASHES = {
    "demo.toml": "ca1d55894b7bff1d7e085bb6ac39e14232053931afe7217a22260698cc1879b8",
    "fengxiang-road.toml": "3595e2eedccce4cd24da5323b975a8a93af910f06cfaaf8c7e8aff9d452e0fca",
    "gate-with-sync.toml": "e935fec3db93ab118b27d417136d6196b7a6050314f483b13e28439cb0650e3e",
    "juren-chemical-west.toml": "c0eff0b180c88a5d9a4d26012913b5b85ea35941564ae3c662bbe3a911dc3d15",
    "liyuan-road-west.toml": "b7b227e1ac5749e58380dadaa67a9a1f0fd9d162e7b085bb42f0eae783ebbc11",
    "petrochemical-avenue-east.toml": (
        "2a0622097d7a53e8f72d2f2cdca98d0284bb97ecface618ade809b046e362355"
    ),
    "simulated-gate.toml": "1d4672120e83e6bce5a1756ae31e034ab058de747bbef4d6927a21227d0a693a",
}


def test_golden_copies_are_all_pinned() -> None:
    assert sorted(p.name for p in GOLDEN_DIR.glob("*.toml")) == sorted(GOLDEN_HASHES)


@pytest.mark.parametrize(("name", "digest"), sorted(GOLDEN_HASHES.items()))
def test_config_hash_is_stable(name: str, digest: str) -> None:
    assert load_config(GOLDEN_DIR / name).config_hash() == digest


@pytest.mark.parametrize(
    "change",
    [
        ('host = "10.0.0.11"', 'host = "10.0.0.13"'),
        ('kind = "comprehensive"', 'kind = "ordinary"'),
        ('path = "gate.db"', 'path = "other.db"'),
    ],
)
def test_config_hash_follows_content(change: tuple[str, str]) -> None:
    assert parse_config(variant(change)).config_hash() != parse_config(BASE).config_hash()


# ------------------------------------------------------------------------------------ API


def test_config_is_frozen_and_complete() -> None:
    config = parse_config(BASE)
    with pytest.raises(ValidationError):
        config.gate.id = "other"  # type: ignore[misc]
    assert config.gate.timezone == "Asia/Shanghai"
    assert config.lane("in-1").loops_device == "plc-in"
    assert config.log.on_write_failure.entry is WriteFailureAction.DENY
    assert config.log.on_write_failure.exit is WriteFailureAction.ALLOW
    assert config.policy.dwell_limits == dict(DEFAULT_DWELL_LIMITS)
    assert config.log_file == Path("gate.db")  # no base directory given: as written


def test_config_error_lists_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(variant(('barrier = "plc-in"', 'barrier = "plc-9"')), source="x.toml")
    assert caught.value.problems == [
        ("lanes[0].barrier", "device 'plc-9' is not defined in [devices]")
    ]
    assert str(caught.value) == "lanes[0].barrier: device 'plc-9' is not defined in [devices]"
    assert caught.value.source == "x.toml"


def test_direct_model_validation_runs_cross_checks() -> None:
    import tomllib

    raw = tomllib.loads(variant(('barrier = "plc-in"', 'barrier = "plc-9"')))
    with pytest.raises(ValidationError, match=r"lanes\[0\].barrier: device 'plc-9'"):
        GateConfig.model_validate(raw)


def test_check_config_opens_no_device_and_not_the_log(
    tmp_path: Path, run_cli: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_sockets(*args: object, **kwargs: object) -> None:
        raise AssertionError("check-config must not open a network connection")

    monkeypatch.setattr(socket, "socket", no_sockets)
    path = tmp_path / "gate.toml"
    path.write_text(variant(('port = "/dev/ttyS1"', 'port = "/dev/does-not-exist"')))
    code, out, err = run_cli(path)
    assert code == 0, err
    assert "/dev/does-not-exist" in out
    assert not (tmp_path / "gate.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate.toml"]


# ------------------------------------------------------------------------ invalid configs

EMERGENCY = (('kind = "comprehensive"', 'kind = "emergency"'),)
INVALID: list[Case] = [
    (
        "toml-syntax",
        variant(('name = "Test gate"', 'name = "Test gate')),
        "",
        "TOML syntax error at line 3, column",
    ),
    (
        "toml-duplicate-key",
        variant(('name = "Test gate"', 'name = "Test gate"\nname = "Again"')),
        "",
        "TOML syntax error at line 4, column",
    ),
    (
        "unknown-top-level-key",
        variant(append="\n[gates]\nid = 'x'\n"),
        "gates",
        "unknown key 'gates' (did you mean 'gate'?)",
    ),
    (
        "unknown-nested-key",
        variant(('host = "10.0.0.11"', 'host = "10.0.0.11"\ntmeout = "1s"')),
        "devices.plc-in.tmeout",
        "unknown key 'tmeout' (did you mean 'timeout'?)",
    ),
    (
        "unknown-lane-key",
        variant(('barrier = "plc-out"', 'barrier = "plc-out"\nreader = "cam-out"')),
        "lanes[1].reader",
        "unknown key 'reader'",
    ),
    (
        "wrong-type-bool",
        variant(('barrier = "plc-in"', 'barrier = "plc-in"\nexit_loop = "no"')),
        "lanes[0].exit_loop",
        "expected true or false, got string 'no'",
    ),
    (
        "wrong-type-int",
        variant(('host = "10.0.0.12"', 'host = "10.0.0.12"\nport = "502"')),
        "devices.plc-out.port",
        "expected an integer, got string '502'",
    ),
    (
        "wrong-type-table",
        'incident = "out-1"\n' + BASE,
        "incident",
        "expected a table, got string 'out-1'",
    ),
    (
        "wrong-type-array",
        variant(append='\n[incident]\nevacuation_lanes = "out-1"\n'),
        "incident.evacuation_lanes",
        "expected an array, got string 'out-1'",
    ),
    (
        "missing-required-key",
        variant(('kind = "comprehensive"\n', "")),
        "gate.kind",
        "required key is missing",
    ),
    (
        "missing-required-table",
        variant(('[log]\npath = "gate.db"\n', "")),
        "log",
        "required table is missing",
    ),
    (
        "invalid-enum",
        variant(('direction = "entry"', 'direction = "inbound"')),
        "lanes[0].direction",
        "must be one of 'entry' or 'exit', got string 'inbound'",
    ),
    (
        "invalid-policy-enum",
        variant(append='\n[policy]\non_stale_allowlist = "panic"\n'),
        "policy.on_stale_allowlist",
        "must be one of 'note', 'confirm' or 'deny-entries'",
    ),
    (
        "invalid-fuzzy-matching",
        variant(append='\n[policy]\nfuzzy_matching = "on"\n'),
        "policy.fuzzy_matching",
        "must be one of 'off', 'confirm' or 'allow'",
    ),
    (
        "undefined-device",
        variant(('barrier = "plc-in"', 'barrier = "plc-9"')),
        "lanes[0].barrier",
        "device 'plc-9' is not defined in [devices]",
    ),
    (
        "wrong-device-type-barrier",
        variant(('barrier = "plc-in"', 'barrier = "cam-in"')),
        "lanes[0].barrier",
        "device 'cam-in' is a serial-plate-reader (plate reader); a barrier must be a PLC",
    ),
    (
        "wrong-device-type-reader",
        variant(('plate_reader = "cam-out"', 'plate_reader = "plc-out"')),
        "lanes[1].plate_reader",
        "device 'plc-out' is a modbus-tcp (PLC); a plate reader must be a plate reader device",
    ),
    (
        "wrong-device-type-loops",
        variant(('barrier = "plc-out"', 'barrier = "plc-out"\nloops = "cam-out"')),
        "lanes[1].loops",
        "a loop source must be a PLC device",
    ),
    (
        "duplicate-lane-ids",
        variant(('id = "out-1"', 'id = "in-1"')),
        "lanes[1].id",
        "lane id 'in-1' is already used by lanes[0]",
    ),
    (
        "invalid-time-zone",
        variant(('site = "chem-park"', 'site = "chem-park"\ntimezone = "Asia/Shanghia"')),
        "gate.timezone",
        "unknown time zone 'Asia/Shanghia': use an IANA name",
    ),
    (
        "bad-duration-string",
        variant(append='\n[timings]\nplate_wait = "5 seconds"\n'),
        "timings.plate_wait",
        "invalid duration '5 seconds': expected seconds as a number (5, 0.5) or a string "
        "with a unit such as '500ms', '5s', '10min', '6h', '2d'",
    ),
    (
        "duration-out-of-bounds",
        variant(append='\n[timings]\nopen_travel = "2min"\n'),
        "timings.open_travel",
        "must be between 1s and 1min, got 2min",
    ),
    (
        "port-out-of-range",
        variant(('host = "10.0.0.11"', 'host = "10.0.0.11"\nport = 70000')),
        "devices.plc-in.port",
        "must be at most 65535, got number 70000",
    ),
    (
        "poll-hz-zero",
        variant(('host = "10.0.0.11"', 'host = "10.0.0.11"\npoll_hz = 0')),
        "devices.plc-in.poll_hz",
        "must be greater than 0, got number 0",
    ),
    (
        "min-confidence-above-one",
        variant(append="\n[policy]\nmin_confidence = 1.5\n"),
        "policy.min_confidence",
        "must be at most 1, got number 1.5",
    ),
    (
        "hazmat-at-ordinary-gate",
        variant(
            ('kind = "comprehensive"', 'kind = "ordinary"'),
            append='\n[permissions]\nentry = ["ordinary", "hazmat"]\n',
        ),
        "permissions.entry[1]",
        "'hazmat' vehicles may never pass ordinary gates "
        "(they admit at most: engineering, ordinary, emergency)",
    ),
    (
        "emergency-gate-admits-ordinary",
        variant(
            *EMERGENCY,
            append='\n[permissions]\nexit = ["emergency", "ordinary"]\n'
            '[incident]\nevacuation_lanes = ["out-1"]\n',
        ),
        "permissions.exit[1]",
        "an emergency gate admits only emergency vehicles, not 'ordinary'",
    ),
    (
        "emergency-gate-without-evacuation-lanes",
        variant(*EMERGENCY),
        "incident.evacuation_lanes",
        "an emergency gate must name the lanes that incident mode opens",
    ),
    (
        "evacuation-lane-not-defined",
        variant(append='\n[incident]\nevacuation_lanes = ["out-1", "out-9"]\n'),
        "incident.evacuation_lanes[1]",
        "lane 'out-9' is not defined in [[lanes]]",
    ),
    (
        "unknown-device-type",
        variant(('type = "modbus-tcp"\nhost = "10.0.0.11"', 'type = "modbus-udp"\nhost = "x"')),
        "devices.plc-in",
        "unknown device type 'modbus-udp': expected one of modbus-tcp, modbus-rtu, "
        "serial-plate-reader, simulated-plc, simulated-plate-reader",
    ),
    (
        "device-without-type",
        variant(('type = "modbus-tcp"\nhost = "10.0.0.11"', 'host = "10.0.0.11"')),
        "devices.plc-in",
        "missing 'type'",
    ),
    ("no-lanes", BASE.split("[[lanes]]")[0], "lanes", "no lanes are defined"),
    (
        "two-lanes-share-a-reader",
        variant(('plate_reader = "cam-out"', 'plate_reader = "cam-in"')),
        "lanes[1].plate_reader",
        "plate reader 'cam-in' is already used by lanes[0]; each lane needs its own",
    ),
    (
        "two-lanes-share-a-barrier",
        variant(('barrier = "plc-out"', 'barrier = "plc-in"')),
        "lanes[1].barrier",
        "barrier 'plc-in' is already used by lanes[0]",
    ),
    (
        "bad-gate-id",
        variant(('id = "test-gate"', 'id = "Test_Gate"')),
        "gate.id",
        "'Test_Gate' is not a valid gate id: use 1-63 lowercase letters a-z, digits and '-'",
    ),
    (
        "bad-device-name",
        variant(("[devices.plc-out]", "[devices.PLC_OUT]"), ('"plc-out"', '"PLC_OUT"')),
        "devices.PLC_OUT",
        "'PLC_OUT' is not a valid device name",
    ),
    (
        "dwell-limit-unknown-category",
        variant(append='\n[policy.dwell_limits]\ntanker = "6h"\n'),
        "policy.dwell_limits.tanker",
        "unknown key 'tanker': expected one of 'hazmat', 'hazwaste', 'engineering'",
    ),
    (
        "serial-port-shared",
        variant(('port = "/dev/ttyS2"', 'port = "/dev/ttyS1"')),
        "devices.cam-out.port",
        "serial port '/dev/ttyS1' is already used by devices.cam-in",
    ),
    (
        "modbus-address-shared",
        variant(('host = "10.0.0.12"', 'host = "10.0.0.11"')),
        "devices.plc-out.host",
        "10.0.0.11:502 unit 1 is already used by devices.plc-in",
    ),
    (
        "loop-source-shared",
        variant(('barrier = "plc-out"', 'barrier = "plc-out"\nloops = "plc-in"')),
        "lanes[1].loops",
        "loop source 'plc-in' is already used by lanes[0]; each lane needs its own",
    ),
    (
        "timing-relation",
        variant(append='\n[timings]\npass_timeout = "15min"\n'),
        "timings.loop_fault_after",
        "loop_fault_after (10min) must be longer than pass_timeout (15min)",
    ),
    (
        "lane-timing-override-breaks-relation",
        variant(
            ('barrier = "plc-out"', 'barrier = "plc-out"\n[lanes.timings]\npass_timeout = "15min"')
        ),
        "lanes[1].timings.pass_timeout",
        "loop_fault_after (10min) must be longer than pass_timeout (15min)",
    ),
    (
        "empty-permissions-for-a-lane",
        variant(append="\n[permissions]\nexit = []\n"),
        "lanes[1].direction",
        "[permissions].exit is empty, so this exit lane would refuse every vehicle",
    ),
    (
        "bad-serial-port-path",
        variant(('port = "/dev/ttyS1"', 'port = "COM3"')),
        "devices.cam-in.port",
        "'COM3' is not a serial device path",
    ),
    (
        "bad-baud-rate",
        variant(('port = "/dev/ttyS1"', 'port = "/dev/ttyS1"\nbaudrate = 9601')),
        "devices.cam-in.baudrate",
        "unsupported baud rate 9601",
    ),
    (
        "duration-overflows-as-text",
        variant(append='\n[timings]\npass_timeout = "99999999999999999999d"\n'),
        "timings.pass_timeout",
        "duration '99999999999999999999d' is too long: at most 999999999 days",
    ),
    (
        "duration-overflows-as-number",
        variant(append="\n[timings]\nplate_wait = 1e300\n"),
        "timings.plate_wait",
        "duration 1e+300 is too long",
    ),
    (
        "duration-thousands-of-digits",
        variant(append=f'\n[timings]\npass_timeout = "{"9" * 5000}s"\n'),
        "timings.pass_timeout",
        "duration '" + "9" * 36 + "... is too long",
    ),
    (
        "dwell-limit-overflows",
        variant(append="\n[policy.dwell_limits]\nhazmat = 1e300\n"),
        "policy.dwell_limits.hazmat",
        "duration 1e+300 is too long",
    ),
    (
        "toml-nested-100000-deep",
        variant(append="\nx = " + "[" * 100_000 + "]" * 100_000 + "\n"),
        "",
        "TOML nested too deeply",
    ),
    (
        "toml-inline-tables-nested-deep",
        variant(append="\nx = " + "{a = " * 100_000 + "}" * 100_000 + "\n"),
        "",
        "TOML nested too deeply",
    ),
    (
        "toml-integer-too-long",
        variant(('host = "10.0.0.11"', f'host = "10.0.0.11"\nport = {"9" * 5000}')),
        "",
        "TOML integer too long: more than 4300 digits",
    ),
    (
        "time-zone-name-too-long-for-a-path",
        variant(('site = "chem-park"', f'site = "chem-park"\ntimezone = "{"x" * 5000}"')),
        "gate.timezone",
        "unknown time zone",
    ),
]


@pytest.mark.parametrize(("text", "key", "fragment"), params(INVALID))
def test_invalid_configuration(
    text: str, key: str, fragment: str, tmp_path: Path, run_cli: Runner
) -> None:
    assert_reported(tmp_path / "gate.toml", text, key, fragment, run_cli)


def test_invalid_kinds_are_many() -> None:
    assert_distinct(INVALID, at_least=18)


def test_missing_file(tmp_path: Path, run_cli: Runner) -> None:
    path = tmp_path / "nope.toml"
    code, out, err = run_cli(path)
    assert code == 2
    assert out == ""
    assert f"{path}: cannot read the file: No such file or directory" in problem_lines(err)


def test_not_utf8(tmp_path: Path, run_cli: Runner) -> None:
    path = tmp_path / "gate.toml"
    path.write_bytes(BASE.replace("Test gate", "Test gate \xff").encode("latin-1"))
    code, _, err = run_cli(path)
    assert code == 2
    assert any("not UTF-8 text" in line for line in problem_lines(err))


def test_every_problem_is_reported(tmp_path: Path, run_cli: Runner) -> None:
    text = variant(
        ('id = "test-gate"', 'id = "Test Gate"'),
        ('kind = "comprehensive"', 'kind = "ordinary"'),
        ('host = "10.0.0.11"', 'host = "10.0.0.11"\nport = 70000'),
        ('barrier = "plc-out"', 'barrier = "plc-9"'),
        ('plate_reader = "cam-out"', 'plate_reader = "cam-in"'),
        append='\n[permissions]\nexit = ["hazwaste"]\n'
        '[timings]\nclose_delay = "soon"\n'
        '[incident]\nevacuation_lanes = ["out-2"]\n',
    )
    path = tmp_path / "gate.toml"
    path.write_text(text)
    code, _, err = run_cli(path)
    assert code == 2
    keys = [line.split(": ", 1)[0] for line in problem_lines(err)]
    assert keys == [
        "gate.id",
        "permissions.exit[0]",
        "timings.close_delay",
        "devices.plc-in.port",
        "lanes[1].plate_reader",
        "lanes[1].barrier",
        "incident.evacuation_lanes[0]",
    ]
    assert err.splitlines()[0] == f"{path}: invalid configuration, 7 problems:"


_JUNK = [
    "1",
    "-1",
    "0",
    "1.5",
    "70000",
    "true",
    '""',
    '"x"',
    '"none"',
    '"5s"',
    "[]",
    '["x", 1]',
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
]
_VALUE_LINES = [i for i, line in enumerate(BASE.splitlines()) if " = " in line]


@given(st.lists(st.tuples(st.sampled_from(_VALUE_LINES), st.sampled_from(_JUNK)), max_size=4))
def test_junk_values_give_problems_never_crashes(edits: list[tuple[int, str]]) -> None:
    lines = BASE.splitlines()
    for index, junk in edits:
        lines[index] = f"{lines[index].split(' = ')[0]} = {junk}"
    try:
        parse_config("\n".join(lines))
    except ConfigError as e:
        problems = e.problems
    else:
        return
    assert problems
    assert all(message for _, message in problems)
