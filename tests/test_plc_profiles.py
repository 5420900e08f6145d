"""Barrier PLC profiles: the shipped ones, the wire mapping, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgegate.core.events import BarrierCommand
from edgegate.devices.base import PlcInputs
from edgegate.devices.plc_profile import INPUT_NAMES, BarrierPlcProfile
from edgegate.devices.profiles import (
    DEFAULT_DRIVERS_DIR,
    ProfileError,
    load_all,
    load_profile,
    parse_profile,
)
from edgegate.devices.reader_profile import TextLineReaderProfile

GOOD = """\
type = "barrier-plc"
description = "test"
unit_id = 3
poll_hz = 25

[coils]
open = 10
close = 11
stop = 12

[inputs]
up_limit = 0
down_limit = 1
fault = 2
arming_loop = 3
safety_loop = { address = 4, invert = true }
exit_loop = 5
"""


def write(drivers: Path, name: str, text: str) -> None:
    drivers.mkdir(exist_ok=True)
    (drivers / f"{name}.toml").write_text(text, encoding="utf-8")


def problems_of(text: str, tmp_path: Path, name: str = "bad") -> list[str]:
    drivers = tmp_path / "drivers"
    write(drivers, name, text)
    with pytest.raises(ProfileError) as caught:
        load_profile(name, drivers)
    return caught.value.lines()


# --------------------------------------------------------------------------- shipped


def test_shipped_barrier_profiles_load() -> None:
    profiles = load_all(DEFAULT_DRIVERS_DIR)
    generic = profiles["barrier-plc-generic"]
    nc = profiles["barrier-plc-nc-contacts"]
    assert isinstance(generic, BarrierPlcProfile)
    assert isinstance(nc, BarrierPlcProfile)
    assert (generic.input_start, generic.input_count) == (0, 6)
    assert generic.coils_contiguous
    assert (nc.input_start, nc.input_count) == (100, 6)
    assert (nc.coil_start, nc.coil_count) == (16, 5)
    assert not nc.coils_contiguous
    assert nc.inputs.exit_loop is None
    assert nc.inputs.safety_loop.invert and nc.inputs.fault.invert
    assert not nc.inputs.arming_loop.invert
    assert nc.unit_id == 2


def test_load_profile_narrows_to_a_family() -> None:
    profile = load_profile("barrier-plc-generic", family=BarrierPlcProfile)
    assert profile.coils.of(BarrierCommand.STOP) == 2
    with pytest.raises(ProfileError) as caught:
        load_profile("plate-reader-generic", family=BarrierPlcProfile)
    assert caught.value.lines() == [
        "drivers/plate-reader-generic.toml: type: is a 'text-line' profile; "
        "a 'barrier-plc' profile is needed here"
    ]
    assert isinstance(load_profile("plate-reader-generic"), TextLineReaderProfile)


def test_drivers_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drivers = tmp_path / "elsewhere"
    write(drivers, "barrier-plc-site", GOOD)
    monkeypatch.setenv("EDGEGATE_DRIVERS", str(drivers))
    assert list(load_all()) == ["barrier-plc-site"]
    assert isinstance(load_profile("barrier-plc-site"), BarrierPlcProfile)


# ------------------------------------------------------------------------- the wire


def test_coil_pattern_sets_one_and_clears_the_others() -> None:
    profile = parse_profile(GOOD)
    assert isinstance(profile, BarrierPlcProfile)
    assert profile.coil_pattern(BarrierCommand.OPEN) == {10: True, 11: False, 12: False}
    assert profile.coil_pattern(BarrierCommand.CLOSE) == {10: False, 11: True, 12: False}
    assert profile.coil_pattern(BarrierCommand.STOP) == {10: False, 11: False, 12: True}


def test_normally_closed_input_reads_inverted() -> None:
    profile = parse_profile(GOOD)
    assert isinstance(profile, BarrierPlcProfile)
    # Wire: down limit made, safety contact closed (= free), nothing else.
    inputs = profile.decode_inputs("plc", [False, True, False, False, True, False])
    assert inputs == PlcInputs("plc", False, True, False, False, False, False)
    # Wire: the safety contact open (= occupied, or the wire is cut).
    inputs = profile.decode_inputs("plc", [False, True, False, False, False, False])
    assert inputs.safety_loop is True
    with pytest.raises(ValueError, match="expected 6 input bits"):
        profile.decode_inputs("plc", [False] * 5)


@given(values=st.fixed_dictionaries({name: st.booleans() for name in INPUT_NAMES}))
def test_encode_then_decode_is_identity(values: dict[str, bool]) -> None:
    for name in ("barrier-plc-generic", "barrier-plc-nc-contacts"):
        profile = load_profile(name, family=BarrierPlcProfile)
        wire = profile.encode_inputs(values)
        bits = [wire.get(profile.input_start + i, False) for i in range(profile.input_count)]
        decoded = profile.decode_inputs("plc", bits)
        for field in INPUT_NAMES:
            expected = None if getattr(profile.inputs, field) is None else values[field]
            assert getattr(decoded, field) == expected


# ------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "up_limit = 0",
            "up_limit = -1",
            "drivers/bad.toml: inputs.up_limit.address: must be at least 0, got number -1",
        ),
        (
            "open = 10",
            "open = 70000",
            "drivers/bad.toml: coils.open: must be at most 65535, got number 70000",
        ),
        (
            "down_limit = 1",
            "down_limit = 0",
            "drivers/bad.toml: inputs.down_limit: address 0 is already used by inputs.up_limit",
        ),
        (
            "stop = 12",
            "stop = 10",
            "drivers/bad.toml: coils.stop: address 10 is already used by coils.open",
        ),
        (
            "exit_loop = 5",
            "exit_loop = 2000",
            "drivers/bad.toml: inputs.exit_loop: address 2000 puts the inputs 2001 bits apart "
            "(inputs.up_limit is at 0); one FC02 request reads at most 2000, so keep them closer",
        ),
        (
            "unit_id = 3",
            "unitid = 3",
            "drivers/bad.toml: unitid: unknown key 'unitid' (did you mean 'unit_id'?)",
        ),
        (
            "fault = 2",
            "fault = { address = 2, inverted = true }",
            "drivers/bad.toml: inputs.fault.inverted: unknown key 'inverted' "
            "(did you mean 'invert'?)",
        ),
        ("stop = 12", "", "drivers/bad.toml: coils.stop: required key is missing"),
        (
            "poll_hz = 25",
            'poll_hz = "fast"',
            "drivers/bad.toml: poll_hz: expected a number, got 'fast'",
        ),
        (
            "poll_hz = 25",
            "poll_hz = 0",
            "drivers/bad.toml: poll_hz: must be greater than 0, got number 0",
        ),
        (
            'type = "barrier-plc"',
            'type = "barrier"',
            "drivers/bad.toml: type: unknown profile type 'barrier': expected one of "
            "barrier-plc, text-line, binary-frame",
        ),
        (
            'type = "barrier-plc"',
            "",
            "drivers/bad.toml: missing 'type': expected one of "
            "barrier-plc, text-line, binary-frame",
        ),
    ],
)
def test_profile_errors_name_the_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    assert problems_of(GOOD.replace(old, new), tmp_path) == [expected]


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    lines = problems_of(GOOD.replace("stop = 12", "stop = true"), tmp_path)
    assert lines == ["drivers/bad.toml: coils.stop: expected an integer, got true"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("safety_loop = {", "safty_loop = {").replace("down_limit = 1", "")
    assert problems_of(text, tmp_path) == [
        "drivers/bad.toml: inputs.down_limit: required key is missing",
        "drivers/bad.toml: inputs.safety_loop: required key is missing",
        "drivers/bad.toml: inputs.safty_loop: unknown key 'safty_loop' "
        "(did you mean 'safety_loop'?)",
    ]


def test_toml_syntax_error(tmp_path: Path) -> None:
    (line,) = problems_of("type = \n", tmp_path)
    assert line.startswith("drivers/bad.toml: TOML syntax error: ")
    assert "line 1" in line


def test_absent_profile_lists_what_exists(tmp_path: Path) -> None:
    drivers = tmp_path / "drivers"
    write(drivers, "barrier-plc-a", GOOD)
    with pytest.raises(ProfileError) as caught:
        load_profile("barrier-plc-b", drivers)
    assert caught.value.lines() == [
        f"drivers/barrier-plc-b.toml: no such profile (profiles in {drivers}: barrier-plc-a)"
    ]


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", "a//b", "", "./x"])
def test_names_cannot_leave_the_drivers_dir(tmp_path: Path, name: str) -> None:
    with pytest.raises(ProfileError, match="is not a profile name"):
        load_profile(name, tmp_path)


def test_profiles_in_subdirectories_are_named_by_path(tmp_path: Path) -> None:
    drivers = tmp_path / "drivers"
    (drivers / "vendor").mkdir(parents=True)
    (drivers / "vendor" / "model.toml").write_text(GOOD, encoding="utf-8")
    assert list(load_all(drivers)) == ["vendor/model"]
    assert isinstance(load_profile("vendor/model", drivers), BarrierPlcProfile)


def test_load_all_reports_every_file(tmp_path: Path) -> None:
    drivers = tmp_path / "drivers"
    write(drivers, "good", GOOD)
    write(drivers, "one", GOOD.replace("open = 10", "open = 11"))
    write(drivers, "two", GOOD.replace('type = "barrier-plc"', 'type = "nope"'))
    with pytest.raises(ProfileError) as caught:
        load_all(drivers)
    assert [line.split(":")[0] for line in caught.value.lines()] == [
        "drivers/one.toml",
        "drivers/two.toml",
    ]
