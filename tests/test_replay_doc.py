"""docs/replay.md works as written: its ``sh`` blocks (the technician's session on a recorded
incident) run in order, from the repository's root, with what they write under /tmp redirected
to a temporary folder; the recorded log is left exactly as it was; the outputs the doc shows
are what the commands print."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.test_operations_doc import FENCE

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "replay.md"
RECORDING = ROOT / "replay" / "arm-left-up-after-back-out"


def _blocks(info: str) -> list[str]:
    return [body for fence, body in FENCE.findall(DOC.read_text(encoding="utf-8")) if fence == info]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_session_runs_and_leaves_the_recording_untouched(tmp_path: Path) -> None:
    blocks = _blocks("sh")
    assert len(blocks) >= 4
    before = _digest(RECORDING)
    script = "set -euo pipefail\n" + "\n".join(blocks).replace("/tmp/", f"{tmp_path}/")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "140",
    }
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _digest(RECORDING) == before, "a replay command changed the recording"
    for shown in _blocks("text"):
        for line in shown.splitlines():
            line = line.strip()
            if line and line != "..." and not line.startswith(("│ time", "(")):
                assert line in proc.stdout, f"docs/replay.md shows {line!r}, not printed"
    assert (tmp_path / "in-1.html").stat().st_size > 0
    csv = (tmp_path / "vehicles.csv").read_bytes()
    assert csv.startswith(b"\xef\xbb\xbf") and "皖A8K302".encode() in csv
