"""Logs for the replay tests: copies of the recorded incidents, and a fresh log written by
the real daemon with simulated devices (``edgegate demo``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPLAY = ROOT / "replay"
CASES = sorted(p.parent.name for p in REPLAY.glob("*/gate.db"))
#: the configuration the recorded incidents ran with (their daemon.started names it)
RECORDED_CONFIG = ROOT / "config" / "simulated-gate.toml"


def recorded(case: str, tmp: Path) -> Path:
    """A copy of a recorded incident's log (never touch the files under replay/)."""
    db = tmp / f"{case}.db"
    shutil.copyfile(REPLAY / case / "gate.db", db)
    return db


def fresh_demo_log(tmp: Path, seconds: int = 10) -> Path:
    """A log the real daemon wrote, deciding on the demo's simulated reads."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp / "demo.db"
    subprocess.run(
        [
            *(sys.executable, "-m", "edgegate", "demo", "--no-live"),
            *("--duration", str(seconds), "--port", str(port), "--log", str(db)),
        ],
        cwd=tmp,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=120,
    )
    return db
