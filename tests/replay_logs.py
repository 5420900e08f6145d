"""Logs for the replay tests: copies of the recorded incidents, a fresh log written by the
real daemon with simulated devices (``edgegate demo``), and central's copy of a log."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

from edgegate.central.store import open_store
from edgegate.core import events as ev
from edgegate.log import EventLog, LogReader
from tests.event_samples import all_samples

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


def central_copy(db: Path, tmp: Path, dsn: str | None = None) -> tuple[str, str]:
    """(DSN, gate) of a central store (``dsn``, default a SQLite file in ``tmp``) holding every
    event of the log ``db``, stored by central's own ``store_batch`` as the sink stores what a
    gate sends."""
    dsn = dsn or f"sqlite:///{tmp / f'central-{db.stem}.db'}"
    with LogReader(db) as reader, open_store(dsn) as store:
        gate = reader.gate_id
        rows = [list(r) for batch in reader.iter_rows() for r in batch]
        assert store.store_batch(gate, rows).fault is None
    return dsn, gate


async def samples_log(path: Path, zone: str) -> None:
    """A log of one sample of every event type, its ``daemon.started`` recording ``zone``."""
    async with await EventLog.open(path, gate_id="fengxiang-road") as log:
        for e in all_samples():
            if isinstance(e, ev.DaemonStarted):
                e = ev.DaemonStarted(
                    software_version="0.1.0",
                    config_hash="cd",
                    config_path="/x",
                    pid=1,
                    timezone=zone,
                )
            await log.append(e)
