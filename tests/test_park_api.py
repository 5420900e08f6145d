"""Central's park API (``/api/v1``) on SQLite and a real PostgreSQL, through a real aiohttp
client: tokens, presence with overstays, events by plate (exact and OCR-confusable), time,
gate and type with a cursor, gates' state, bad input; the real sink behind it over a real
mosquitto; ``central run --api-tokens``'s checks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog.testing

from edgegate.central.api import ApiLimits, ParkApi, TokenFileError, read_tokens
from edgegate.central.store import CentralStore, StoreError
from edgegate.central.web import CentralWeb
from edgegate.cli.main import main
from edgegate.core import events as ev
from edgegate.core.clock import ManualClock
from edgegate.core.codec import datetime_to_ns
from edgegate.core.domain import Direction
from edgegate.core.plates import confusable_variants
from edgegate.web import HttpServer
from tests.eventually import eventually
from tests.services.mosquitto import Broker
from tests.test_central_park import T0, GateLog, dsn, park_logs, store
from tests.test_central_sink import fake_gate, options, running

__all__ = ["dsn", "store"]  # fixtures

pytestmark = pytest.mark.timeout(120)

TOKENS = {"mes": "mes-token-0123456789abcdef", "fire-brigade": "fire-token-0123456789abcdef"}
NOW = T0 + timedelta(hours=3)


@asynccontextmanager
async def serving(dsn: str, limits: ApiLimits | None = None) -> AsyncIterator[str]:
    clock = ManualClock(wall_ns=datetime_to_ns(NOW))
    api = await ParkApi.open(dsn, TOKENS, limits=limits, clock=clock)
    server = HttpServer("127.0.0.1", 0)
    api.mount(server)
    try:
        async with server:
            yield server.url
    finally:
        await api.aclose()


async def get(
    base: str, path: str, token: str | None = TOKENS["mes"], **params: str
) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(base + path, params=params, headers=headers) as resp,
    ):
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


@pytest.fixture
async def park(store: CentralStore, dsn: str) -> AsyncIterator[str]:
    """The API over a store holding gates A and B's events (``park_logs``)."""
    a, b = park_logs()
    store.store_batch("gate-a", a.rows)
    store.store_batch("gate-b", b.rows)
    async with serving(dsn) as base:
        yield base


async def test_nothing_without_a_valid_token(park: str) -> None:
    with structlog.testing.capture_logs() as logs:
        for path in ("/api/v1/presence", "/api/v1/nope"):  # 6 bad tokens: below the pause
            status, body = await get(park, path, token=None)
            assert (status, body) == (401, {"error": "missing bearer token"})
            status, body = await get(park, path, token=TOKENS["mes"] + "x")
            assert (status, body) == (401, {"error": "wrong bearer token"})
            status, body = await get(park, path, token="")
            assert status == 401
        status, body = await get(park, "/api/v1/gates", token=TOKENS["fire-brigade"])
        assert status == 200 and body["gates"]
    requests = [e for e in logs if e["event"] == "park_api_request"]
    assert [(e["token"], e["status"]) for e in requests[-2:]] == [
        (None, 401),
        ("fire-brigade", 200),
    ]
    assert not any(t in repr(logs) for t in TOKENS.values())


async def test_an_address_sending_bad_tokens_is_paused(park: str, dsn: str) -> None:
    async with serving(dsn, ApiLimits(max_auth_failures=3)) as base:
        for _ in range(3):
            status, _ = await get(base, "/api/v1/gates", token="guess-0123456789abcdef")
            assert status == 401
        status, body = await get(base, "/api/v1/gates")  # even with the token, for now
        assert status == 429 and "too many bad tokens" in body["error"]


async def test_presence_hazmat_first_with_overstays(park: str) -> None:
    status, body = await get(park, "/api/v1/presence")
    assert status == 200
    assert body["count"] == 2 and not body["truncated"]
    hazmat, engineering = body["vehicles"]
    assert hazmat["plate"] == "苏E00002" and hazmat["category"] == "hazmat"
    assert hazmat["hazardous"] and not engineering["hazardous"]
    assert (hazmat["entry_gate"], hazmat["entry_seq"], hazmat["lane"]) == ("gate-a", 3, "in-1")
    assert hazmat["entered_at"] == "2026-11-28T08:02:00+00:00"
    # Its permit ended at 10:00; the clock says 11:00.
    assert hazmat["overdue"] == {
        "limit": "permit-end",
        "deadline": "2026-11-28T10:00:00+00:00",
        "exceeded_s": 3600,
    }
    assert engineering["plate"] == "苏E00004" and engineering["overdue"] is None
    assert engineering["inside_s"] == 3 * 3600 - 4 * 60

    _, body = await get(park, "/api/v1/presence", category="hazmat,hazwaste")
    assert [v["plate"] for v in body["vehicles"]] == ["苏E00002"]
    _, body = await get(park, "/api/v1/presence", gate="gate-b")
    assert body["vehicles"] == [] and body["count"] == 0
    _, body = await get(park, "/api/v1/presence", limit="1")
    assert [v["plate"] for v in body["vehicles"]] == ["苏E00002"] and body["truncated"]


async def test_gates_state(park: str) -> None:
    status, body = await get(park, "/api/v1/gates")
    assert status == 200
    gates = {g["gate"]: g for g in body["gates"]}
    assert sorted(gates) == ["gate-a", "gate-b"]
    a, b = gates["gate-a"], gates["gate-b"]
    assert (a["synced_seq"], a["allowlist_version"], a["mode"], a["online"]) == (7, 7, None, False)
    assert [(f["device"], f["code"]) for f in a["faulted_devices"]] == [("plc-1", "timeout")]
    assert (b["mode"], b["faulted_devices"], b["lag"]) == ("incident", [], None)


async def test_events_by_plate_exact_and_confusable(park: str) -> None:
    status, body = await get(park, "/api/v1/events", plate="苏E 00001")
    assert status == 200 and body["next_cursor"] is None
    found = [(e["gate"], e["seq"], e["match"], e["data"]["direction"]) for e in body["events"]]
    assert found == [("gate-a", 2, "exact", "entry"), ("gate-b", 2, "exact", "exit")]
    entry = body["events"][0]
    assert entry["type"] == ev.VehiclePassed.TYPE and entry["lane"] == "in-1"
    assert entry["time"] == "2026-11-28T08:01:00+00:00"
    assert (
        entry["data"]["plate"] == "苏E00001" and entry["data"]["credential_id"] == "cred-苏E00001"
    )

    # One OCR-confusable character away (0/D/Q, 1/I, 8/B…): found, marked fuzzy.
    near = next(v for v, *_ in confusable_variants("苏E00003"))
    _, body = await get(park, "/api/v1/events", plate=near)
    assert [(e["gate"], e["seq"], e["match"]) for e in body["events"]] == [
        ("gate-a", 4, "fuzzy"),
        ("gate-a", 7, "fuzzy"),
    ]
    _, body = await get(park, "/api/v1/events", plate="苏E00003", gate="gate-b")
    assert body["events"] == []
    _, body = await get(park, "/api/v1/events", plate="京A99999")
    assert body == {"events": [], "next_cursor": None, "scanned": 6}  # the passages only


async def test_events_by_time_gate_and_type(park: str) -> None:
    at = (T0 + timedelta(minutes=2)).isoformat()
    until = (T0 + timedelta(minutes=11)).isoformat()
    _, body = await get(park, "/api/v1/events", type="vehicle.*", **{"from": at, "to": until})
    assert [(e["gate"], e["seq"]) for e in body["events"]] == [
        ("gate-a", 3),
        ("gate-a", 4),
        ("gate-a", 6),
        ("gate-b", 2),
    ]
    _, body = await get(park, "/api/v1/events", gate="gate-b", type=ev.ModeChanged.TYPE)
    assert [(e["seq"], e["data"]["mode"]) for e in body["events"]] == [(1, "incident")]


async def _walk(base: str, **params: str) -> tuple[list[tuple[str, int]], int]:
    seen: list[tuple[str, int]] = []
    pages = 0
    cursor: str | None = None
    while True:
        query = dict(params) if cursor is None else {**params, "cursor": cursor}
        status, body = await get(base, "/api/v1/events", **query)
        assert status == 200
        pages += 1
        seen += [(e["gate"], e["seq"]) for e in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, pages


async def test_events_are_paged_with_a_cursor(park: str, dsn: str) -> None:
    everything = [("gate-a", s) for s in range(1, 8)] + [("gate-b", s) for s in range(1, 5)]
    seen, pages = await _walk(park, limit="5")
    assert seen == everything and pages == 3
    # A request reads at most scan_rows events: a rare plate comes back over several
    # (partly empty) pages, each with a cursor, never missed.
    async with serving(dsn, ApiLimits(scan_rows=2, scan_chunk=2)) as small:
        seen, pages = await _walk(small, plate="苏E00001")
        assert seen == [("gate-a", 2), ("gate-b", 2)] and pages >= 4
        _, body = await get(small, "/api/v1/events")
        assert len(body["events"]) == 2 and body["scanned"] == 2 and body["next_cursor"]


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("presence", {"limit": "0"}, "limit"),
        ("presence", {"limit": "5001"}, "limit"),
        ("presence", {"limit": "lots"}, "limit"),
        ("presence", {"category": "tanker"}, "category"),
        ("presence", {"gate": "gate a/../"}, "gate"),
        ("presence", {"plate": "苏E00001"}, "plate"),
        ("events", {"limit": "501"}, "limit"),
        ("events", {"from": "yesterday"}, "from"),
        ("events", {"from": "2026-11-28T08:00:00"}, "from"),
        ("events", {"from": "2026-11-28T09:00Z", "to": "2026-11-28T08:00Z"}, "to"),
        ("events", {"type": "vehicle.flew"}, "type"),
        ("events", {"cursor": "not-a-cursor"}, "cursor"),
        ("events", {"cursor": "WyJhIiwtMV0"}, "cursor"),  # ["a",-1]
        ("events", {"plate": " - "}, "plate"),
        ("gates", {"x": "1"}, "x"),
    ],
)
async def test_bad_parameters_get_400_naming_them(
    park: str, path: str, params: dict[str, str], named: str
) -> None:
    status, body = await get(park, f"/api/v1/{path}", **params)
    assert status == 400, body
    assert named in body["error"] and "Traceback" not in body["error"]


async def test_other_methods_and_paths(park: str) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['mes']}"}
    async with aiohttp.ClientSession() as session:
        async with session.delete(park + "/api/v1/presence", headers=headers) as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "GET"
        async with session.get(park + "/api/v1/people", headers=headers) as resp:
            assert resp.status == 404 and "no such path" in (await resp.json())["error"]
        async with session.get(park + "/api/v1/gates?limit=1&limit=2", headers=headers) as resp:
            assert resp.status == 400


async def test_the_api_connection_is_read_only(store: CentralStore, dsn: str) -> None:
    api = await ParkApi.open(dsn, TOKENS)
    try:
        with pytest.raises(StoreError):
            api.store.store_batch("gate-a", park_logs()[0].rows)
        assert store.heads() == {}
    finally:
        await api.aclose()


async def test_through_the_real_sink(mosquitto_broker: Broker, tmp_path: Path) -> None:
    """Gate A's entry and gate B's exit published over MQTT to the sink; the API sees the
    vehicle inside, then gone."""
    dsn = f"sqlite:///{tmp_path / 'central.db'}"
    a, b = GateLog("gate-a"), GateLog("gate-b")
    a.passed("苏E00077", Direction.ENTRY, T0)
    b.passed("苏E00077", Direction.EXIT, T0 + timedelta(minutes=30))
    async with running(options(mosquitto_broker, dsn)) as sink:
        api = await ParkApi.open(dsn, TOKENS)
        web = CentralWeb(sink, "127.0.0.1", 0, parts=[api.mount])
        await web.start()
        try:
            assert web.server is not None
            base = web.server.url
            async with fake_gate(mosquitto_broker, "gate-a") as gate_a:
                await gate_a.send(a.rows)

                async def inside(*plates: str) -> bool:
                    _, body = await get(base, "/api/v1/presence")
                    return [v["plate"] for v in body["vehicles"]] == list(plates)

                await eventually(lambda: inside("苏E00077"), "the vehicle inside", within=15)
            async with fake_gate(mosquitto_broker, "gate-b") as gate_b:
                await gate_b.send(b.rows)
                await eventually(lambda: inside(), "nobody inside", within=15)
            _, body = await get(base, "/api/v1/events", plate="苏E00077")
            assert [(e["gate"], e["data"]["direction"]) for e in body["events"]] == [
                ("gate-a", "entry"),
                ("gate-b", "exit"),
            ]
        finally:
            await web.aclose()
            await api.aclose()


def _tokens_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "api-tokens"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def test_tokens_file(tmp_path: Path) -> None:
    text = "# who may ask\n\nmes  mes-token-0123456789abcdef\nfire fire-token-0123456789abc\n"
    assert read_tokens(_tokens_file(tmp_path, text)) == {
        "mes": "mes-token-0123456789abcdef",
        "fire": "fire-token-0123456789abc",
    }


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        ("mes mes-token-0123456789abcdef\n", 0o644, "chmod 600"),
        ("mes\n", 0o600, "line 1: expected NAME TOKEN"),
        ("mes short\n", 0o600, "shorter than 16"),
        ("mes bad token here\n", 0o600, "expected NAME TOKEN"),
        ("mes tok€n-0123456789abcdef\n", 0o600, "line 1: token"),
        ("m/s mes-token-0123456789abcdef\n", 0o600, "line 1: name"),
        ("a mes-token-0123456789abcdef\nb mes-token-0123456789abcdef\n", 0o600, "same token"),
        ("a one-token-0123456789abcdef\na two-token-0123456789abcdef\n", 0o600, "twice"),
        ("# nothing\n", 0o600, "no tokens"),
    ],
)
def test_bad_tokens_files(tmp_path: Path, text: str, mode: int, message: str) -> None:
    with pytest.raises(TokenFileError, match=message):
        read_tokens(_tokens_file(tmp_path, text, mode))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--api-tokens", "t"], "--api-tokens goes with --http"),
        (["--http", "127.0.0.1:9480", "--api-tokens", "missing"], "--api-tokens missing"),
        (["--http", "127.0.0.1:9480", "--api-tokens", "open"], "chmod 600"),
    ],
)
def test_central_run_api_tokens_are_checked(
    extra: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _tokens_file(tmp_path, "mes mes-token-0123456789abcdef\n", 0o640).rename(tmp_path / "open")
    monkeypatch.chdir(tmp_path)
    code = main(["central", "run", "--broker", "mqtt://127.0.0.1:1", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
