"""docs/operations.md works as written: its ``sh`` blocks, run in order in one bash on
127.0.0.1 in a temporary directory, make a CA and certificates, start a TLS mosquitto with the
production configuration and ACL, a gate with ``[sync]``, central's sink on an absolute SQLite
DSN, publish a list and a delta, send a command, pull over HTTPS and query the store.

Blocks marked ``sh no-test`` (packages, systemd, ``/etc``) are left out; there are few."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services.mosquitto import free_port

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MAX_UNTESTED = 6

pytestmark = pytest.mark.timeout(180)


def shell_blocks(text: str) -> tuple[list[str], list[str]]:
    """(blocks to run, blocks marked no-test) among the ``sh`` fences of ``text``."""
    run: list[str] = []
    skipped: list[str] = []
    for info, body in FENCE.findall(text):
        words = info.split()
        if not words or words[0] not in ("sh", "bash", "shell", "console"):
            continue
        assert words[0] == "sh", f"operations.md: fence {info!r}: use 'sh' or 'sh no-test'"
        assert words[1:] in ([], ["no-test"]), f"operations.md: unknown fence info {info!r}"
        (skipped if words[1:] else run).append(body)
    return run, skipped


def test_the_doc_marks_few_blocks_untested() -> None:
    run, skipped = shell_blocks(DOC.read_text(encoding="utf-8"))
    assert len(run) >= 10
    assert len(skipped) <= MAX_UNTESTED, "operations.md: keep the untested blocks few"


def _kill_started(run_dir: Path) -> None:
    """SIGKILL what the walk-through started and left running (pids it recorded)."""
    for pid_file in run_dir.glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def test_the_walk_through_runs(tmp_path: Path) -> None:
    run, _ = shell_blocks(DOC.read_text(encoding="utf-8"))
    script = "set -euo pipefail\n" + "\n".join(
        f"echo '### block {i + 1}' >&2\n{block}" for i, block in enumerate(run)
    )
    work = tmp_path / "work"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "WORK": str(work),
        "MQTT_PORT": str(free_port()),
        "PULL_PORT": str(free_port()),
    }
    try:
        proc = subprocess.run(
            ["bash", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
    finally:
        _kill_started(work / "run")

    def logs() -> str:
        parts = [proc.stdout[-4000:], proc.stderr[-4000:]]
        for name in ("gate.log", "central.log"):
            path = work / "run" / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    assert proc.returncode == 0, logs()
    out = proc.stdout
    assert '"gate": "huagong-road-north"' in out or '"gate":"huagong-road-north"' in out, logs()
    assert "gate huagong-road-north from https://127.0.0.1" in out and "up to date" in out, logs()
    assert "allowlist.updated" in out and "command.accepted" in out, logs()
