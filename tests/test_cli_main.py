"""The command line loads only the module of the command it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgegate.cli.main import _command_word, main

HEAVY = ("psycopg", "aiomqtt", "paho", "cryptography")


def _loaded_after_parsing(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from edgegate.cli.main import build_parser, _command_word\n"
        f"build_parser(_command_word({argv!r})).parse_args({argv!r})\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    return set(filter(None, out.split(",")))


def test_the_daemon_does_not_load_central_or_mqtt_code() -> None:
    assert _loaded_after_parsing(["run", "-c", "gate.toml"]) == set()
    assert _loaded_after_parsing(["--log-level", "debug", "log", "verify", "x.db"]) == set()


def test_central_commands_load_what_they_need() -> None:
    loaded = _loaded_after_parsing(["central", "run", "--broker", "x"])
    assert "aiomqtt" in loaded
    assert "psycopg" not in loaded  # only opening a postgresql:// store imports it


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["run", "-c", "x"], "run"),
        (["--log-level", "debug", "central", "run"], "central"),
        (["--version"], None),
        ([], None),
    ],
)
def test_command_word(argv: list[str], word: str | None) -> None:
    assert _command_word(argv) == word


def test_unknown_command_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for command in ("allowlist", "central", "check-config", "keys", "log", "run", "simulate"):
        assert command in err


def test_a_real_gate_does_not_load_the_simulators() -> None:
    code = (
        "import sys\n"
        "import edgegate.daemon.gate\n"
        "print(','.join(m for m in ('pymodbus.server', 'edgegate.sim.plc') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    assert out == ""
