"""``bench/central_park.py --quick`` runs end to end (its own PostgreSQL and mosquitto, two
``central run`` processes, ``central web``) and reports every figure it promises, the one it
cannot measure yet as null with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(240)


def test_the_quick_run_reports_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "central_park.py"), "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    # The bench checked the store itself (every event once, the heads, who is inside).
    assert result["events"] > 10 * 500 - 1
    assert result["sinks"] == 2
    assert result["ingest_eps"] > 0 and result["baseline_broker_eps"] > 0
    assert result["inside"] == 300
    for key in (
        "presence_query_p99_ms",
        "presence_page_p99_ms",
        "presence_api_p99_ms",
        "baseline_presence_sql_p99_ms",
        "dashboard_update_p99_ms",
    ):
        assert result[key] > 0, key
    assert result["dashboard_updates"] == 3 + 2 * 5  # the live gate's start, list, mode, 2 cars
    # Both cars' appointments reached another gate as central's signed deltas.
    assert result["park_entry"] is True and result["consumptions"] == 2
    assert result["consumption_to_delta_p99_s"] > 0
    assert result["consumption_to_refusal_p99_s"] is None
    assert result["not_measured"]["consumption_to_refusal_p99_s"].strip()
