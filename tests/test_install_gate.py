"""The gate PC's unit and ``scripts/install-gate``, on this machine for real: the unit passes
``systemd-analyze verify`` and its exposure in ``systemd-analyze security --offline=true`` is at
most 2.0; the script creates the real system user (idempotently), installs into directories
under ``tmp_path``, and the installed daemon runs as that user and tells its notify socket
READY=1. A second run changes nothing. Needs root (CI and the dev machine run tests as root).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.eventually import eventually_blocking
from tests.test_sd_notify import NotifySocket

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "edgegate.service"
SCRIPT = ROOT / "scripts" / "install-gate"

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze"),
]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user: needs root")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, as on a gate PC


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *map(str, args)], capture_output=True, text=True, check=False
    )


def rendered_unit(folder: Path) -> Path:
    """The unit with its ExecStart= paths on this test's venv (verify wants them to exist)."""
    text = UNIT.read_text().replace(
        "/opt/edgegate/bin/edgegate", f"{Path(sys.executable).parent}/edgegate"
    )
    path = folder / "edgegate.service"
    path.write_text(text)
    return path


def test_the_unit_verifies(tmp_path: Path) -> None:
    ran = analyze("verify", rendered_unit(tmp_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stderr.strip() == "", ran.stderr


def test_the_unit_exposure_is_ok(tmp_path: Path) -> None:
    ran = analyze("security", "--offline=true", "--no-pager", rendered_unit(tmp_path))
    found = re.search(r"Overall exposure level for edgegate\.service: (\d+\.\d+)", ran.stdout)
    assert found is not None, ran.stdout[-2000:] + ran.stderr
    assert float(found.group(1)) <= 2.0, ran.stdout


def test_the_unit_is_ordered_after_time_sync_but_never_waits_for_it() -> None:
    lines = [line.strip() for line in UNIT.read_text().splitlines()]
    after = [line for line in lines if line.startswith("After=")]
    assert any("time-sync.target" in line.split("=", 1)[1].split() for line in after), after
    for key in ("Wants=", "Requires=", "Requisite=", "BindsTo=", "Upholds="):
        assert not [line for line in lines if line.startswith(key)], key
    settings = dict(line.split("=", 1) for line in lines if "=" in line and line[0].isalpha())
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["WatchdogSec"] == "30s"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as a wheel, built once."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("edgegate-*.whl")
    return built


def install(wheel: Path, base: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(SCRIPT),
            *more,
            "--package", str(wheel),
            "--prefix", str(base / "opt"),
            "--config-dir", str(base / "etc"),
            "--state-dir", str(base / "var"),
            "--unit-dir", str(base / "units"),
            # Not this venv's interpreter: it may live where the edgegate user cannot go.
            "--python", SYSTEM_PYTHON,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip


def mode_owner(path: Path) -> tuple[str, str, str]:
    st = path.stat()
    return (
        oct(st.st_mode & 0o777),
        pwd.getpwuid(st.st_uid).pw_name,
        subprocess.run(
            ["stat", "-c", "%G", str(path)], capture_output=True, text=True
        ).stdout.strip(),
    )


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder the edgegate user can reach (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="install-gate-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@needs_root
@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="no Debian python3")
def test_install_gate_installs_a_gate_that_runs_then_changes_nothing(
    tmp_path: Path, base: Path, wheel: Path
) -> None:
    first = install(wheel, base)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installed" in first.stdout

    user = pwd.getpwnam("edgegate")
    groups = subprocess.run(["id", "-nG", "edgegate"], capture_output=True, text=True).stdout
    assert "dialout" in groups.split()
    assert mode_owner(base / "etc") == ("0o750", "root", "edgegate")
    assert mode_owner(base / "var") == ("0o750", "edgegate", "edgegate")
    assert mode_owner(base / "etc" / "gate.toml") == ("0o640", "root", "edgegate")
    version = subprocess.run(
        [str(base / "opt" / "bin" / "edgegate"), "--version"], capture_output=True, text=True
    )
    assert version.stdout.strip() == "edgegate 0.1.0"
    assert "gate.toml is valid" in first.stdout
    assert "systemctl daemon-reload && systemctl enable --now edgegate" in first.stdout
    unit = base / "units" / "edgegate.service"
    text = unit.read_text()
    assert f"ExecStart={base}/opt/bin/edgegate run -c {base}/etc/gate.toml" in text
    assert f"ReadWritePaths={base}/var" in text
    ran = analyze("verify", unit)
    assert ran.returncode == 0, ran.stderr

    second = install(wheel, base)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "changed:" not in second.stdout, second.stdout
    assert "nothing to do" in second.stdout
    assert unit.read_text() == text

    # A bad --config is refused before it replaces the gate's (which a reboot would start).
    installed = (base / "etc" / "gate.toml").read_text()
    bad = base / "bad.toml"
    bad.write_text('[gate]\nid = "X"\n')
    refused = install(wheel, base, "--config", str(bad))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "gate.id: 'X' is not a valid gate id" in refused.stderr
    assert "gate.toml left as it was" in refused.stderr
    assert (base / "etc" / "gate.toml").read_text() == installed
    assert not (base / "etc" / "gate.toml.new").exists()
    missing = install(wheel, base, "--config")
    assert missing.returncode == 2
    assert "install-gate: --config needs a value" in missing.stderr

    # What the unit would start, as the unit's user: the installed daemon, its profiles from
    # EDGEGATE_DRIVERS, its log in the state directory, READY=1 to a notify socket.
    listener = NotifySocket(str(base / "notify"))
    os.chown(listener.address, user.pw_uid, user.pw_gid)
    environment = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in text.splitlines()
        if line.startswith("Environment=")
    )
    daemon = subprocess.Popen(
        [str(base / "opt" / "bin" / "edgegate"), "run", "-c", str(base / "etc" / "gate.toml")],
        user="edgegate",
        group="edgegate",
        extra_groups=["dialout"],
        env={"PATH": os.environ["PATH"], **environment, "NOTIFY_SOCKET": listener.address},
        cwd=base / "var",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        eventually_blocking(lambda: bool(listener.values("READY")), "READY=1", within=30)
        assert "lanes: in-1 " in listener.values("STATUS")[0]
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, stderr
        assert listener.values("STOPPING") == ["1"]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        listener.sock.close()
    assert (base / "var" / "gate.db").stat().st_uid == user.pw_uid
