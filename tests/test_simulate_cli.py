"""``edgegate simulate`` as a user runs it: a port it cannot take is one line, not a
traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_busy_plc_port_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = (ROOT / "config" / "simulated-gate.toml").read_text(encoding="utf-8")
        config = config.replace("port = 15021", f"port = {port}")
        config = config.replace("/tmp/edgegate-sim", str(tmp_path / "sim"))
        (tmp_path / "gate.toml").write_text(config, encoding="utf-8")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgegate",
                "simulate",
                str(ROOT / "config" / "scenarios" / "morning-shift.json"),
                "-c",
                str(tmp_path / "gate.toml"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("edgegate simulate:")]
    assert lines == [
        f"edgegate simulate: lane in-1: cannot simulate barrier 'plc-in-1' on 127.0.0.1:{port}: "
        "the port is already in use (another simulator, or a PLC, listening there?)"
    ], done.stderr
