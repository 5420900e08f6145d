"""A machine without the ``central`` extra (no psycopg): SQLite stores work, and a
``postgresql://`` store is one line saying what to install, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# As if psycopg were not installed: importing it raises ModuleNotFoundError (name 'psycopg').
WITHOUT_PSYCOPG = "import sys\nsys.modules['psycopg'] = None\n"
PG_DSN = "postgresql://u:secret@127.0.0.1:1/central"  # never reached


def run_without_psycopg(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PSYCOPG + code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def said(stderr: str) -> list[str]:
    """stderr's lines for a person (not the JSON log records)."""
    return [line for line in stderr.splitlines() if line and not line.startswith("{")]


@pytest.mark.parametrize(
    "argv",
    [
        ["central", "run", "--broker", "mqtt://127.0.0.1:1", "--db", PG_DSN],
        ["central", "pull", "--token", "t", "--db", PG_DSN, "http://127.0.0.1:1"],
    ],
    ids=["run", "pull"],
)
def test_a_postgresql_store_without_psycopg_says_what_to_install(
    argv: list[str], tmp_path: Path
) -> None:
    done = run_without_psycopg(
        f"from edgegate.cli.main import main\nsys.exit(main({argv!r}))\n", tmp_path
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = said(done.stderr)
    assert "pip install 'edgegate[central]'" in line
    assert "postgresql://u:***@127.0.0.1:1/central" in line
    assert "secret" not in done.stderr


def test_open_store_without_psycopg_raises_a_store_error(tmp_path: Path) -> None:
    done = run_without_psycopg(
        "from edgegate.central.store import BackendMissingError, StoreError, open_store\n"
        f"try:\n    open_store({PG_DSN!r})\n"
        "except BackendMissingError as exc:\n    assert isinstance(exc, StoreError)\n"
        "    print('refused:', exc)\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: ")
    assert "edgegate[central]" in done.stdout


def test_sqlite_stores_need_no_psycopg(tmp_path: Path) -> None:
    done = run_without_psycopg(
        "from edgegate.central.store import open_store\n"
        "from edgegate.log.chain import GENESIS_HASH, event_hash\n"
        "h = event_hash(GENESIS_HASH, 'g1', 1, 10, 20, 'b', 't', None, 1, b'd')\n"
        "with open_store('sqlite:///central.db') as s:\n"
        "    row = (1, 10, 20, 'b', 't', None, 1, b'd', GENESIS_HASH, h)\n"
        "    assert s.store_batch('g1', [row]).stored == 1\n"
        "    assert s.verify('g1') is None\n"
        "print('psycopg' in sys.modules and sys.modules['psycopg'] is not None)\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
