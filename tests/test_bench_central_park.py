"""``bench/central_park.py --quick`` runs end to end (its own PostgreSQL and mosquitto, two
``central run`` processes with the park chain, ``central web``, a real gate B) and reports
every figure it promises."""

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
        "presence_all_p99_ms",
        "baseline_presence_sql_p99_ms",
        "dashboard_update_p99_ms",
    ):
        assert result[key] > 0, key
    assert result["dashboard_updates"] == 3 + 2 * 5  # the live gate's start, list, mode, 2 cars
    # Gate A's 5 timed consumptions (after the first) each reached the real gate B, which
    # logged park.consumed; then B refused a read of the last one's plate.
    assert result["park_entry"] is True and result["consumptions"] == 5
    assert 0 < result["consumption_to_refusal_p50_s"] <= result["consumption_to_refusal_p99_s"]
    refused = result["refused_at_b"]
    assert refused["verdict"] != "allow" and "appointment-consumed" in refused["reasons"]
