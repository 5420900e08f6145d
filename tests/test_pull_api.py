"""The pull API over real HTTP on 127.0.0.1: the gate's server, and the central puller into
real SQLite and PostgreSQL stores."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import re
import socket
import sqlite3
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import structlog.testing

from edgegate.central import pull as pull_mod
from edgegate.central.pull import Puller, PullError, PullReport, base_url, pull
from edgegate.central.store import CentralStore, open_store
from edgegate.cli import central_pull as pull_cli
from edgegate.core import events as ev
from edgegate.core.clock import ManualClock
from edgegate.log import EventLog
from edgegate.log.chain import GENESIS_HASH, ChainVerifier, Row
from edgegate.log.eventlog import GateMismatchError, LogError
from edgegate.log.reader import LogReader
from edgegate.log.retention import Retention, RetentionPolicy
from edgegate.sync.bearer_api import AuthThrottle, negotiate
from edgegate.sync.protocol import EventBatch, decode_batch, encode_batch
from edgegate.sync.pull_api import PullApiServer, PullLimits, decode_ndjson
from edgegate.web import ServerLimits
from tests.certs import make_pki
from tests.event_samples import all_samples
from tests.eventually import eventually
from tests.tamper import tamper

GATE = "gate-a"
TOKEN = "s3cret-Token_0123456789abcdef"
HOST = "127.0.0.1"

Reply = tuple[int, dict[str, str], bytes]


# ------------------------------------------------------------------------------- helpers


def _loop_event(i: int) -> ev.Event:
    return ev.LoopChanged(lane="in-1", loop=ev.Loop.SAFETY, occupied=i % 2 == 0, source="plc-1")


async def _append(log: EventLog, n: int) -> None:
    for i in range(n):
        await log.append(_loop_event(i))


@pytest.fixture
def samples() -> list[ev.Event]:
    return all_samples()


@pytest.fixture
async def gate_log(tmp_path: Path, samples: list[ev.Event]) -> AsyncIterator[EventLog]:
    """An open log of gate-a holding every sample event."""
    log = await EventLog.open(tmp_path / "gate.db", gate_id=GATE, clock=ManualClock())
    try:
        for e in samples:
            await log.append(e)
        yield log
    finally:
        await log.aclose()


@pytest.fixture
async def server(gate_log: EventLog, tmp_path: Path) -> AsyncIterator[PullApiServer]:
    async with PullApiServer(tmp_path / "gate.db", GATE, HOST, 0, TOKEN) as srv:
        yield srv


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[CentralStore]:
    with open_store(f"sqlite:///{tmp_path / 'central.db'}") as store:
        yield store


def _url(srv: PullApiServer) -> str:
    return f"http://{HOST}:{srv.port}"


def _following(
    url: str, store: CentralStore, stop: threading.Event, notices: list[str]
) -> asyncio.Task[PullReport]:
    """``pull --follow`` of ``url`` into ``store`` in a thread, polling every 0.05 s."""
    return asyncio.create_task(
        asyncio.to_thread(
            pull,
            url,
            TOKEN,
            store,
            follow=True,
            interval=0.05,
            stop=stop,
            on_notice=notices.append,
        )
    )


def _get_sync(
    url: str, token: str | None, accept: str | None, method: str, cafile: Path | None
) -> Reply:
    req = urllib.request.Request(url, method=method)  # noqa: S310 (http://127.0.0.1 only)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if accept is not None:
        req.add_header("Accept", accept)
    ctx = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:  # noqa: S310
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            return exc.code, dict(exc.headers.items()), exc.read()


async def get(
    srv: PullApiServer,
    path: str,
    *,
    token: str | None = TOKEN,
    accept: str | None = None,
    method: str = "GET",
) -> Reply:
    return await asyncio.to_thread(_get_sync, _url(srv) + path, token, accept, method, None)


def _error(body: bytes) -> str:
    return str(json.loads(body)["error"])


def _raw_sync(port: int, data: bytes, *, shut: bool) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


async def raw(srv: PullApiServer, data: bytes, *, shut: bool = False) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes."""
    return await asyncio.to_thread(_raw_sync, srv.port, data, shut=shut)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _request(target: str = "/v1/head", *extra: str) -> bytes:
    lines = [
        f"GET {target} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {TOKEN}",
        "Connection: close",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _closed_log(path: Path, n: int) -> None:
    async with await EventLog.open(path, gate_id=GATE, clock=ManualClock()) as log:
        await _append(log, n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------- server


async def test_head_names_the_gate_and_its_last_event(
    server: PullApiServer, gate_log: EventLog
) -> None:
    status, headers, body = await get(server, "/v1/head")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Edgegate-Gate"] == GATE
    seq, digest = gate_log.head
    assert headers["X-Edgegate-Head"] == str(seq)
    assert json.loads(body) == {"gate": GATE, "seq": seq, "hash": digest.hex()}


@pytest.mark.parametrize("path", ["/v1/head", "/v1/events"])
async def test_token_missing_or_wrong_is_401_with_a_bearer_challenge(
    server: PullApiServer, path: str
) -> None:
    status, headers, body = await get(server, path, token=None)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    assert "missing bearer token" in _error(body)

    for wrong in ("wrong", TOKEN + "x", TOKEN[:-1]):
        status, headers, body = await get(server, path, token=wrong)
        assert status == 401
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        assert "wrong bearer token" in _error(body)

    basic = _request(path, "Authorization: Basic dXNlcjpwYXNz").replace(
        f"Authorization: Bearer {TOKEN}\r\n".encode(), b""
    )
    response = await raw(server, basic)
    assert _status(response) == 401

    status, _, _ = await get(server, path)
    assert status in (200, 204)


async def test_requests_are_logged_without_the_token(server: PullApiServer) -> None:
    with structlog.testing.capture_logs() as logs:
        await get(server, "/v1/events?after=0&limit=3")
        await get(server, "/v1/head", token="guess-" + TOKEN)
        await raw(server, b"garbage\r\n\r\n")
    requests = [e for e in logs if e["event"] == "pull_api_request"]
    assert [(e["method"], e["path"], e["status"], e["rows"]) for e in requests] == [
        ("GET", "/v1/events", 200, 3),
        ("GET", "/v1/head", 401, 0),
    ]
    # A request too malformed to route is answered (and logged) by the HTTP server itself.
    refused = [e for e in logs if e["event"] == "http_request"]
    assert [(e["method"], e["path"], e["status"]) for e in refused] == [(None, None, 400)]
    assert TOKEN not in repr(logs)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("after=-1", "after"),
        ("after=abc", "after"),
        ("after=", "after"),
        ("after=99999999999999999999", "after"),
        ("after=9223372036854775808", "after"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=1e3", "limit"),
        ("after=1&after=2", "after"),
        ("since=4", "'since'"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    server: PullApiServer, query: str, param: str
) -> None:
    status, headers, body = await get(server, f"/v1/events?{query}")
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert param in _error(body)


async def test_limit_up_to_the_cap_is_served(
    server: PullApiServer, samples: list[ev.Event]
) -> None:
    status, _headers, body = await get(server, "/v1/events?limit=10000")
    assert status == 200
    assert len(decode_batch(body).events) == len(samples)


@pytest.mark.parametrize("path", ["/", "/v1", "/v1/events/", "/v2/events", "/v1/eventsx"])
async def test_unknown_path_is_404(server: PullApiServer, path: str) -> None:
    status, _, body = await get(server, path)
    assert status == 404
    assert "no such path" in _error(body)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
async def test_other_methods_are_405(server: PullApiServer, method: str) -> None:
    status, headers, body = await get(server, "/v1/events", method=method)
    assert status == 405
    assert headers["Allow"] == "GET"
    if method != "HEAD":
        assert method in _error(body)


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, "application/x-msgpack"),
        ("*/*", "application/x-msgpack"),
        ("application/*", "application/x-msgpack"),
        ("application/msgpack", "application/msgpack"),
        ("application/x-ndjson", "application/x-ndjson"),
        ("application/x-msgpack;q=0.5, application/x-ndjson", "application/x-ndjson"),
        ("text/html, application/x-ndjson;q=0.1", "application/x-ndjson"),
        ("text/html", None),
        ("application/json", None),
        ("application/x-msgpack;q=0, application/msgpack;q=0, application/x-ndjson;q=0", None),
    ],
)
async def test_accept_chooses_the_encoding(
    server: PullApiServer, accept: str | None, media: str | None
) -> None:
    status, headers, body = await get(server, "/v1/events?limit=2", accept=accept)
    if media is None:
        assert status == 406
        assert "application/x-ndjson" in _error(body)
        return
    assert status == 200
    assert headers["Content-Type"] == media
    rows = decode_ndjson(body) if "ndjson" in media else list(decode_batch(body).events)
    assert [r[0] for r in rows] == [1, 2]


def test_negotiate_prefers_specific_ranges_and_q() -> None:
    offers = ("application/x-msgpack", "application/x-ndjson")
    assert negotiate("application/*;q=0.2, application/x-ndjson", offers) == offers[1]
    assert negotiate("*/*;q=0.1, application/x-msgpack;q=0", offers) == offers[1]
    assert negotiate("", offers) == offers[0]
    assert negotiate("application/x-ndjson;q=abc", offers) is None


async def test_pages_link_up_and_their_rows_verify(
    server: PullApiServer, gate_log: EventLog
) -> None:
    verifier = ChainVerifier(GATE, 0, GENESIS_HASH)
    after, pages = 0, 0
    head_seq = gate_log.head[0]
    while True:
        status, headers, body = await get(server, f"/v1/events?after={after}&limit=4")
        assert headers["X-Edgegate-Gate"] == GATE
        assert headers["X-Edgegate-Head"] == str(head_seq)
        if status == 204:
            assert body == b""
            break
        assert status == 200
        batch = decode_batch(body)
        assert batch.gate == GATE
        assert batch.from_seq == after + 1
        assert len(batch.events) <= 4
        assert verifier.feed(batch.events) is None
        after, pages = batch.to_seq, pages + 1
    assert after == head_seq
    assert pages == -(-head_seq // 4)
    assert verifier.count == head_seq


async def test_pages_read_across_archives_and_410_below_what_is_kept(
    server: PullApiServer, gate_log: EventLog
) -> None:
    """With [log.retention], the pages run across an archive (decompressed) into the active
    file as one chain; once the archive is removed, asking below it is 410 naming the first
    seq kept, and asking from there chains from the anchor the removal logged."""
    sealed = gate_log.head[0]

    async def retain(max_size: int, budget: int) -> list[str]:
        # keep 0 and no acknowledgement cursor: archived as soon as sealed.
        policy = RetentionPolicy("Asia/Shanghai", max_size, timedelta(0), budget, 3)
        retention = Retention(gate_log, policy, ManualClock())
        try:
            return await retention.step()
        finally:
            await retention.aclose()

    assert await retain(1, 1 << 30) == [
        f"sealed {1:012d}-{sealed:012d}.db (size)",
        f"deleted events 1..{sealed} from the active file",
        f"archived {1:012d}-{sealed:012d}.db.zst",
    ]
    await _append(gate_log, 3)
    verifier = ChainVerifier(GATE, 0, GENESIS_HASH)
    after = 0
    while (reply := await get(server, f"/v1/events?after={after}&limit=1000"))[0] == 200:
        batch = decode_batch(reply[2])
        assert verifier.feed(batch.events) is None
        after = batch.to_seq
    assert reply[0] == 204 and after == gate_log.head[0]

    removed = await retain(1 << 30, 0)
    assert removed == [f"removed {1:012d}-{sealed:012d}.db.zst"]
    status, headers, body = await get(server, "/v1/events?after=0")
    assert (status, json.loads(body)["first_seq"]) == (410, sealed + 1)
    assert headers["X-Edgegate-Gate"] == GATE
    assert "removed from this gate's disk" in _error(body)
    status, _, body = await get(server, f"/v1/events?after={sealed}")
    with LogReader(gate_log.path) as reader:
        anchor = reader.anchor()
    assert status == 200 and anchor[0] == sealed
    assert ChainVerifier(GATE, *anchor).feed(decode_batch(body).events) is None


async def test_ndjson_carries_the_same_rows_as_msgpack(server: PullApiServer) -> None:
    _, _, packed = await get(server, "/v1/events", accept="application/x-msgpack")
    _, _headers, text = await get(server, "/v1/events", accept="application/x-ndjson")
    lines = text.decode().splitlines()
    first = json.loads(lines[0])
    assert set(first) == {
        "seq",
        "wall_ns",
        "mono_ns",
        "boot_id",
        "type",
        "lane",
        "version",
        "data",
        "prev_hash",
        "hash",
    }
    assert first["prev_hash"] == "00" * 32  # hashes in hex, data in base64
    rows = decode_ndjson(text)
    assert rows == list(decode_batch(packed).events)
    assert ChainVerifier(GATE).feed(rows) is None


async def test_no_events_after_is_204_in_both_encodings(
    server: PullApiServer, gate_log: EventLog
) -> None:
    head = gate_log.head[0]
    for accept in ("application/x-msgpack", "application/x-ndjson"):
        for after in (head, head + 100):
            status, headers, body = await get(server, f"/v1/events?after={after}", accept=accept)
            assert (status, body) == (204, b"")
            assert headers["X-Edgegate-Head"] == str(head)
            assert "Content-Type" not in headers


async def test_a_page_stops_at_its_byte_budget(gate_log: EventLog, tmp_path: Path) -> None:
    limits = PullLimits(max_page_bytes=1)  # one event per page, whatever the limit
    async with PullApiServer(tmp_path / "gate.db", GATE, HOST, 0, TOKEN, limits=limits) as srv:
        status, _, body = await get(srv, "/v1/events?after=3&limit=100")
        assert status == 200
        batch = decode_batch(body)
        assert (batch.from_seq, batch.to_seq) == (4, 4)


async def test_events_appended_while_serving_are_served(
    server: PullApiServer, gate_log: EventLog
) -> None:
    before = gate_log.head[0]
    await _append(gate_log, 3)
    status, headers, body = await get(server, f"/v1/events?after={before}")
    assert status == 200
    assert headers["X-Edgegate-Head"] == str(before + 3)
    assert [r[0] for r in decode_batch(body).events] == [before + 1, before + 2, before + 3]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET /v1/head\r\nHost: x\r\n\r\n", 400),
        # aiohttp's parser tolerates a doubled space in the request line: without the
        # token, the request is refused all the same.
        (b"GET  /v1/head HTTP/1.1\r\nHost: x\r\n\r\n", 401),
        (b"G\xc3\x89T /v1/head HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /v1/head HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # aiohttp refuses this target
        (b"GET /v1/head HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /v1/head HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
        (b"GET /v1/head HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET /v1/head HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 413),
        (b"GET /v1/head HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 413),
        (b"GET /v1/head HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /v1/head HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"GET /v1/head HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", 431),
    ],
)
async def test_malformed_requests_are_refused_and_the_server_keeps_serving(
    server: PullApiServer, request_bytes: bytes, status: int
) -> None:
    response = await raw(server, request_bytes)
    assert _status(response) == status
    assert b"Connection: close" in response
    assert b'{"error": ' in response
    ok = await raw(server, _request())
    assert _status(ok) == 200


async def test_a_huge_header_flood_is_431_not_a_reset(server: PullApiServer) -> None:
    """The client is still sending when the server answers: it must read the 431, not an RST."""
    flood = b"GET /v1/head HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n"
    response = await raw(server, flood, shut=True)
    assert _status(response) == 431
    assert _status(await raw(server, _request())) == 200


async def test_keep_alive_serves_several_requests_on_one_connection(
    server: PullApiServer,
) -> None:
    one = _request("/v1/head").replace(b"Connection: close", b"Connection: keep-alive")
    three = one + one + _request("/v1/events?limit=1")
    response = await raw(server, three)
    assert response.count(b"HTTP/1.1 200 OK") == 3
    assert response.count(b"Connection: keep-alive") == 2


async def test_a_silent_client_gets_408_and_is_dropped(gate_log: EventLog, tmp_path: Path) -> None:
    limits = ServerLimits(header_timeout=0.2)
    async with PullApiServer(
        tmp_path / "gate.db", GATE, HOST, 0, TOKEN, server_limits=limits
    ) as srv:
        response = await raw(srv, b"GET /v1/head HTTP/1.1\r\n")
        assert _status(response) == 408
        assert _status(await raw(srv, _request())) == 200


async def test_connections_beyond_the_cap_get_503(gate_log: EventLog, tmp_path: Path) -> None:
    limits = ServerLimits(max_connections=1)
    async with PullApiServer(
        tmp_path / "gate.db", GATE, HOST, 0, TOKEN, server_limits=limits
    ) as srv:
        _, writer = await asyncio.open_connection(HOST, srv.port)
        try:
            await eventually(lambda: srv.http.connections == 1, "the idle connection accepted")
            response = await raw(srv, _request())
            assert _status(response) == 503
        finally:
            writer.close()
            await writer.wait_closed()


# ------------------------------------------------------------------------------- lock-out


async def _open(port: int, source: str = HOST) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from ``source`` (another loopback address stands for another host)."""
    return await asyncio.open_connection(HOST, port, local_addr=(source, 0))


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request; its status and head (the body is read by Content-Length)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    match = re.search(rb"Content-Length: (\d+)", head)
    if match:
        await reader.readexactly(int(match.group(1)))
    return _status(head), head


def _keep_alive(target: str = "/v1/head", token: str | None = TOKEN) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("method", "target"),
    # The pull API owns /v1 on the gate's one HTTP server (the console owns the rest).
    [("GET", "/v1/nowhere"), ("POST", "/v1/events"), ("DELETE", "/v1/admin"), ("GET", "/v1")],
)
async def test_without_the_token_every_path_and_method_is_401(
    server: PullApiServer, method: str, target: str
) -> None:
    request = f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    response = await raw(server, request)
    assert _status(response) == 401
    assert b"WWW-Authenticate: Bearer" in response
    assert b"no such path" not in response and b"not allowed" not in response


async def test_an_unauthenticated_request_closes_its_connection(server: PullApiServer) -> None:
    # Two pipelined keep-alive requests without the token: one 401, then the server closes.
    response = await raw(server, _keep_alive(token=None) * 2)
    assert response.count(b"HTTP/1.1 ") == 1
    assert _status(response) == 401
    assert b"Connection: close" in response
    wrong = await raw(server, _keep_alive(token="wrong") + _keep_alive())
    assert wrong.count(b"HTTP/1.1 ") == 1
    assert _status(wrong) == 401


def test_auth_throttle_pauses_a_peer_after_repeated_failures() -> None:
    clock = ManualClock()
    throttle = AuthThrottle(3, window=60, pause=30, clock=clock, max_peers=2)
    assert not throttle.failed("10.0.0.1")
    assert not throttle.failed("10.0.0.1")
    assert throttle.paused("10.0.0.1") == 0
    assert throttle.failed("10.0.0.1")  # the third within the window starts the pause
    assert throttle.paused("10.0.0.1") == pytest.approx(30)
    assert throttle.paused("10.0.0.2") == 0  # per address
    clock.advance(29)
    assert throttle.paused("10.0.0.1") == pytest.approx(1)
    clock.advance(1)
    assert throttle.paused("10.0.0.1") == 0
    # Failures further apart than the window never add up to a pause.
    for _ in range(5):
        clock.advance(61)
        assert not throttle.failed("10.0.0.2")
    # Only max_peers addresses are remembered: the least recently failed is forgotten.
    throttle.failed("10.0.0.3")
    throttle.failed("10.0.0.3")
    throttle.failed("10.0.0.4")
    throttle.failed("10.0.0.5")
    assert not throttle.failed("10.0.0.3")  # forgotten: counting starts again
    assert not throttle.failed("10.0.0.3")
    assert throttle.failed("10.0.0.3")


async def test_repeated_bad_tokens_get_429_and_a_pause(gate_log: EventLog, tmp_path: Path) -> None:
    clock = ManualClock()
    limits = PullLimits(max_auth_failures=3, auth_pause=60)
    srv = PullApiServer(tmp_path / "gate.db", GATE, HOST, 0, TOKEN, limits=limits, clock=clock)
    async with srv:
        for _ in range(3):
            reader, writer = await _open(srv.port, "127.0.0.2")
            with contextlib.closing(writer):
                assert (await _exchange(reader, writer, _keep_alive(token="guess")))[0] == 401
        # Paused: even the right token gets 429, unread, on every new connection.
        reader, writer = await _open(srv.port, "127.0.0.2")
        with contextlib.closing(writer):
            status, head = await _exchange(reader, writer, _keep_alive())
        assert status == 429
        assert b"Retry-After: 60" in head
        # Another address is not paused.
        reader, writer = await _open(srv.port, HOST)
        with contextlib.closing(writer):
            assert (await _exchange(reader, writer, _keep_alive()))[0] == 200
        clock.advance(60)
        reader, writer = await _open(srv.port, "127.0.0.2")
        with contextlib.closing(writer):
            assert (await _exchange(reader, writer, _keep_alive()))[0] == 200


async def test_follow_waits_out_a_pause_of_its_address(
    gate_log: EventLog, tmp_path: Path, sqlite_store: CentralStore
) -> None:
    """Bad tokens from central's address (another process, a token before its rotation)
    pause it; ``--follow`` retries through the 429s and resumes when the pause ends."""
    clock = ManualClock()
    limits = PullLimits(max_auth_failures=3, auth_pause=60)
    srv = PullApiServer(tmp_path / "gate.db", GATE, HOST, 0, TOKEN, limits=limits, clock=clock)
    async with srv:
        for _ in range(3):
            reader, writer = await _open(srv.port, HOST)
            with contextlib.closing(writer):
                assert (await _exchange(reader, writer, _keep_alive(token="guess")))[0] == 401
        stop = threading.Event()
        notices: list[str] = []
        follower = _following(_url(srv), sqlite_store, stop, notices)
        try:
            await eventually(lambda: bool(notices), "a notice while paused")
            assert "(429: " in notices[0] and "retrying" in notices[0]
            assert sqlite_store.head(GATE)[0] == 0
            clock.advance(60)
            await eventually(
                lambda: sqlite_store.head(GATE) == gate_log.head, "the log pulled", within=10.0
            )
        finally:
            stop.set()
            report = await asyncio.wait_for(follower, 10)
        assert report.ok


async def test_unauthenticated_connections_are_capped_per_peer(
    gate_log: EventLog, tmp_path: Path
) -> None:
    limits = ServerLimits(max_pending_per_peer=2, header_timeout=30)
    async with PullApiServer(
        tmp_path / "gate.db", GATE, HOST, 0, TOKEN, server_limits=limits
    ) as srv:
        idle = [await _open(srv.port, "127.0.0.2") for _ in range(2)]
        try:
            reader, writer = await _open(srv.port, "127.0.0.2")
            with contextlib.closing(writer):
                status, _ = await _exchange(reader, writer, _keep_alive())
            assert status == 503
            # Another address still gets in; and a connection that has shown the token no
            # longer counts against its address, so it keeps serving beside new ones.
            reader, writer = await _open(srv.port, "127.0.0.3")
            with contextlib.closing(writer):
                assert (await _exchange(reader, writer, _keep_alive()))[0] == 200
                more = [await _open(srv.port, "127.0.0.3") for _ in range(2)]
                for r, w in more:
                    with contextlib.closing(w):
                        assert (await _exchange(r, w, _keep_alive()))[0] == 200
                assert (await _exchange(reader, writer, _keep_alive()))[0] == 200
        finally:
            for _, w in idle:
                w.close()


async def test_slowloris_and_unauthenticated_keep_alives_do_not_lock_out_the_puller(
    gate_log: EventLog, tmp_path: Path
) -> None:
    """300 slowloris connections (from 127.0.0.2) and 32 kept-alive connections sending
    requests without the token (from 127.0.0.3): the client with the token keeps getting
    200, on fresh connections and on its kept-alive one."""
    limits = ServerLimits(header_timeout=1.0)
    seen: dict[str, list[int]] = {"slow": [], "unauth": []}
    stop = asyncio.Event()

    async def slowloris(port: int) -> None:
        while not stop.is_set():
            try:
                reader, writer = await _open(port, "127.0.0.2")
            except OSError:
                await asyncio.sleep(0.2)
                continue
            try:
                for byte in b"GET /v1/head HTTP/1.1\r\nHost: x\r\n":
                    writer.write(bytes([byte]))
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.3):
                            answer = await reader.read(64)
                            seen["slow"].append(_status(answer) if answer else 0)
                            break
            except (OSError, ValueError, IndexError):
                pass
            finally:
                writer.close()
            await asyncio.sleep(0.1)

    async def unauthenticated(port: int) -> None:
        while not stop.is_set():
            try:
                reader, writer = await _open(port, "127.0.0.3")
                with contextlib.closing(writer):
                    while not stop.is_set():
                        status, _ = await _exchange(reader, writer, _keep_alive(token=None))
                        seen["unauth"].append(status)
                        await asyncio.sleep(0.1)
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.1)

    async with PullApiServer(
        tmp_path / "gate.db", GATE, HOST, 0, TOKEN, server_limits=limits
    ) as srv:
        attackers = [asyncio.create_task(slowloris(srv.port)) for _ in range(300)]
        attackers += [asyncio.create_task(unauthenticated(srv.port)) for _ in range(32)]
        try:
            await eventually(
                lambda: len(seen["slow"]) >= 300 and 429 in seen["unauth"],
                "the attack in full swing",
                within=30,
            )
            statuses: list[int] = []
            for _ in range(10):
                reader, writer = await _open(srv.port)
                with contextlib.closing(writer):
                    for _ in range(3):  # kept alive
                        statuses.append((await _exchange(reader, writer, _keep_alive()))[0])
                await asyncio.sleep(0.1)
            assert statuses == [200] * 30
            assert set(seen["slow"]) <= {408, 503}
            assert set(seen["unauth"]) <= {401, 429, 503}
        finally:
            stop.set()
            for task in attackers:
                task.cancel()
            await asyncio.gather(*attackers, return_exceptions=True)


async def test_aclose_ends_idle_connections(gate_log: EventLog, tmp_path: Path) -> None:
    srv = PullApiServer(tmp_path / "gate.db", GATE, HOST, 0, TOKEN)
    port = await srv.start()
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET /v1/head HTTP/1.1\r\n")  # half a request, then silence
    await writer.drain()
    await eventually(lambda: srv.http.connections == 1, "the idle connection accepted")
    await asyncio.wait_for(srv.aclose(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await srv.aclose()  # idempotent


async def test_the_server_refuses_another_gates_log_and_empty_tokens(
    gate_log: EventLog, tmp_path: Path
) -> None:
    with pytest.raises(GateMismatchError, match="belongs to gate 'gate-a', not 'gate-b'"):
        await PullApiServer(tmp_path / "gate.db", "gate-b", HOST, 0, TOKEN).start()
    not_a_log = tmp_path / "notes.txt"
    not_a_log.write_text("not a database, just text that is long enough to be read" * 20)
    with pytest.raises(LogError, match="not a database"):
        await PullApiServer(not_a_log, GATE, HOST, 0, TOKEN).start()
    with pytest.raises(LogError, match="no log file"):
        await PullApiServer(tmp_path / "missing.db", GATE, HOST, 0, TOKEN).start()
    for token in ("", "has space", "tab\t"):
        with pytest.raises(ValueError, match="token"):
            PullApiServer(tmp_path / "gate.db", GATE, HOST, 0, token)
    assert TOKEN not in repr(PullApiServer(tmp_path / "gate.db", GATE, HOST, 0, TOKEN))


# ------------------------------------------------------------------------------- client


async def test_pull_into_sqlite_is_idempotent_and_resumes(
    server: PullApiServer, gate_log: EventLog, sqlite_store: CentralStore
) -> None:
    url = _url(server)
    head = gate_log.head[0]
    report = await asyncio.to_thread(pull, url, TOKEN, sqlite_store, 4)
    assert (report.gate, report.stored, report.duplicates) == (GATE, head, 0)
    assert report.caught_up and report.ok
    assert report.pages == -(-head // 4)
    assert sqlite_store.head(GATE) == gate_log.head
    assert sqlite_store.verify(GATE) is None

    again = await asyncio.to_thread(pull, url, TOKEN, sqlite_store, 4)
    assert (again.stored, again.duplicates, again.pages) == (0, 0, 0)
    assert sqlite_store.count(GATE) == head

    await _append(gate_log, 7)
    more = await asyncio.to_thread(pull, url, TOKEN, sqlite_store, 4)
    assert (more.start_head, more.stored, more.central_head) == (head, 7, head + 7)
    assert sqlite_store.count(GATE) == head + 7
    assert sqlite_store.verify(GATE) is None
    with LogReader(gate_log.path) as reader:
        assert list(sqlite_store.events(GATE)) == [s.row() for s in reader.read(0, 10_000)]


async def test_pull_keeps_one_connection_alive_across_pages(
    server: PullApiServer, gate_log: EventLog, sqlite_store: CentralStore
) -> None:
    report = await asyncio.to_thread(pull, _url(server), TOKEN, sqlite_store, 2)
    assert report.pages == -(-gate_log.head[0] // 2) > 3
    assert server.http.accepted == 1  # /v1/head and every page on one connection


async def test_pull_starts_where_the_store_ends(
    server: PullApiServer, gate_log: EventLog, sqlite_store: CentralStore
) -> None:
    """Whatever delivered the first events (MQTT, an earlier pull), the pull asks for the rest."""
    with LogReader(gate_log.path) as reader:
        first: list[Row] = [s.row() for s in reader.read(0, 7)]
    assert sqlite_store.store_batch(GATE, first).stored == 7
    with structlog.testing.capture_logs() as logs:
        report = await asyncio.to_thread(pull, _url(server), TOKEN, sqlite_store)
    assert (report.start_head, report.stored, report.duplicates) == (7, gate_log.head[0] - 7, 0)
    assert sqlite_store.verify(GATE) is None
    served = [e["rows"] for e in logs if e["event"] == "pull_api_request" and e["rows"]]
    assert served == [gate_log.head[0] - 7]


async def test_pull_into_postgresql(
    server: PullApiServer, gate_log: EventLog, postgres_dsn: str
) -> None:
    with open_store(postgres_dsn) as store:
        report = await asyncio.to_thread(pull, _url(server), TOKEN, store, 5)
        assert report.stored == gate_log.head[0]
        again = await asyncio.to_thread(pull, _url(server), TOKEN, store, 5)
        assert again.stored == 0
        assert store.head(GATE) == gate_log.head
        assert store.verify(GATE) is None


async def test_follow_picks_up_new_events_until_stopped(
    server: PullApiServer, gate_log: EventLog, sqlite_store: CentralStore
) -> None:
    stop = threading.Event()
    notices: list[str] = []
    follower = _following(_url(server), sqlite_store, stop, notices)
    try:
        await _append(gate_log, 5)
        target = gate_log.head[0]
        await eventually(
            lambda: sqlite_store.head(GATE)[0] == target, "the new events pulled", within=10.0
        )
        assert sqlite_store.head(GATE) == gate_log.head
    finally:
        stop.set()
        report = await asyncio.wait_for(follower, 10)
    assert report.ok and report.central_head == target
    assert any("up to date" in n for n in notices)
    assert sqlite_store.verify(GATE) is None


async def test_follow_retries_while_the_gate_is_unreachable(
    gate_log: EventLog, tmp_path: Path, sqlite_store: CentralStore
) -> None:
    port = _free_port()
    stop = threading.Event()
    notices: list[str] = []
    follower = _following(f"http://{HOST}:{port}", sqlite_store, stop, notices)
    try:
        await eventually(lambda: bool(notices), "a notice while the gate is unreachable")
        assert "retrying" in notices[0]
        async with PullApiServer(tmp_path / "gate.db", GATE, HOST, port, TOKEN):
            await eventually(
                lambda: sqlite_store.head(GATE) == gate_log.head, "the log pulled", within=10.0
            )
    finally:
        stop.set()
        await asyncio.wait_for(follower, 10)


async def test_pull_over_https_verifies_the_gate_certificate(
    gate_log: EventLog, tmp_path: Path, sqlite_store: CentralStore
) -> None:
    pki = make_pki(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert_path, pki.server_key_path)
    async with PullApiServer(
        tmp_path / "gate.db", GATE, HOST, 0, TOKEN, ssl_context=context
    ) as srv:
        url = f"https://{HOST}:{srv.port}"
        with pytest.raises(PullError, match="TLS") as refused:
            await asyncio.to_thread(pull, url, TOKEN, sqlite_store, cafile=pki.wrong_ca_path)
        assert not refused.value.transient
        report = await asyncio.to_thread(pull, url, TOKEN, sqlite_store, cafile=pki.ca_path)
        assert report.stored == gate_log.head[0]


@pytest.mark.parametrize("edit", ["flipped byte", "spliced into text"])
async def test_a_tampered_row_is_dead_lettered_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str
) -> None:
    log_path = tmp_path / "gate.db"
    await _closed_log(log_path, 12)
    if edit == "flipped byte":
        conn = sqlite3.connect(log_path)
        data = bytearray(conn.execute("SELECT data FROM events WHERE seq = 6").fetchone()[0])
        conn.close()
        data[len(data) // 2] ^= 0x01
        tamper(log_path, "UPDATE events SET data = ? WHERE seq = 6", bytes(data))
    else:  # ``||`` stores text: the gate still serves the bytes, central names the seq
        tamper(log_path, "UPDATE events SET data = X'00' || substr(data, 2) WHERE seq = 6")
    db = tmp_path / "central.db"
    async with PullApiServer(log_path, GATE, HOST, 0, TOKEN) as srv:
        code = await asyncio.to_thread(
            _cli, ["pull", _url(srv), "--token", TOKEN, "--db", _dsn(db)]
        )
    out = capsys.readouterr().out
    assert code == 1
    assert "5 new events stored" in out
    assert "7 dead-lettered" in out
    assert "FAILED gate gate-a: dead-lettered: unverifiable: seq 6: hash does not match" in out
    with open_store(_dsn(db)) as store:
        assert store.head(GATE)[0] == 5
        assert store.verify(GATE) is None
        dead = store.dead_letters(GATE)
        assert len(dead) == 1 and "seq 6" in dead[0].reason
        assert dead[0].source.startswith(f"pull http://{HOST}:")


async def test_a_gap_in_the_gate_log_stops_the_pull_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_path = tmp_path / "gate.db"
    await _closed_log(log_path, 10)
    tamper(log_path, "DELETE FROM events WHERE seq = 4")
    db = tmp_path / "central.db"
    async with PullApiServer(log_path, GATE, HOST, 0, TOKEN) as srv:
        code = await asyncio.to_thread(
            _cli, ["pull", _url(srv), "--token", TOKEN, "--db", _dsn(db)]
        )
    captured = capsys.readouterr()
    assert code == 2
    # The gate refuses to serve past the gap (central's own check of the seqs it is served
    # is tested with a canned server).
    assert "answered 500" in captured.err
    assert "events 4..4 are missing from this gate's log" in captured.err
    assert "3 new events stored" in captured.out
    with open_store(_dsn(db)) as store:
        assert store.head(GATE)[0] == 3


# --------------------------------------------------------------- misbehaving HTTP peers


@contextlib.asynccontextmanager
async def _canned(events_response: bytes, *, gate: str = GATE) -> AsyncIterator[str]:
    """A real HTTP server that answers /v1/head properly and /v1/events with the given bytes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /v1/head"):
                body = json.dumps({"gate": gate, "seq": 3, "hash": "00" * 32}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"X-Edgegate-Gate: {gate}\r\nX-Edgegate-Head: 3\r\n".encode()
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
            else:
                writer.write(events_response)
            await writer.drain()
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, HOST, 0)
    try:
        yield f"http://{HOST}:{srv.sockets[0].getsockname()[1]}"
    finally:
        srv.close()
        await srv.wait_closed()


def _canned_events(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_GOOD = (f"X-Edgegate-Gate: {GATE}", "X-Edgegate-Head: 3")


@pytest.mark.parametrize(
    ("response", "message", "dead"),
    [
        (
            _canned_events("200 OK", b"\x93garbage", "Content-Type: application/x-msgpack", *_GOOD),
            "malformed pull payload: event batch: not valid msgpack",
            True,
        ),
        (
            _canned_events("200 OK", b"{}", "Content-Type: application/json", *_GOOD),
            "expected msgpack, got Content-Type 'application/json'",
            False,
        ),
        (
            _canned_events("204 No Content", b"", "X-Edgegate-Gate: gate-b", "X-Edgegate-Head: 3"),
            "answered as gate 'gate-b'",
            False,
        ),
        (
            _canned_events("302 Found", b"", "Location: http://127.0.0.1:1/steal"),
            "redirects are not followed",
            False,
        ),
        (
            _canned_events("500 Internal Server Error", b'{"error": "disk on fire"}'),
            "the gate answered 500: disk on fire",
            False,
        ),
        (
            _canned_events(
                "200 OK", b"\x81" * 50, "Content-Type: application/x-msgpack", *_GOOD
            ).replace(b"Content-Length: 50", b"Content-Length: 99"),  # the body breaks off
            "the exchange failed: 50 of 99 bytes received",
            False,
        ),
        (
            _canned_events("200 OK", b"\x80", "Content-Type: application/x-msgpack"),
            "X-Edgegate-Gate header: expected a string, got nil (is this an edgegate gate?)",
            False,
        ),
    ],
)
async def test_a_misbehaving_server_is_a_clear_error_and_nothing_is_lost(
    sqlite_store: CentralStore, response: bytes, message: str, dead: bool
) -> None:
    async with _canned(response) as url:
        with pytest.raises(PullError, match=re.escape(message)):
            await asyncio.to_thread(pull, url, TOKEN, sqlite_store)
    assert sqlite_store.count(GATE) == 0
    letters = sqlite_store.dead_letters(GATE)
    assert bool(letters) is dead
    if dead:
        assert letters[0].payload == b"\x93garbage"


def test_base_url_normalises_and_refuses() -> None:
    assert base_url("http://127.0.0.1:8470/") == "http://127.0.0.1:8470"
    assert base_url("http://127.0.0.1:8470/v1/events") == "http://127.0.0.1:8470"
    assert base_url("https://gw.example/edgegate/v1/head") == "https://gw.example/edgegate"
    for bad, why in [
        ("ftp://127.0.0.1/", "expected http"),
        ("127.0.0.1:8470", "expected http"),
        ("http://u:p@127.0.0.1/", "no credentials"),
        ("http://127.0.0.1/?after=3", "no query"),
        ("http://127.0.0.1:99999/", "out of range"),
    ]:
        with pytest.raises(PullError, match=why):
            base_url(bad)


def test_puller_refuses_a_limit_out_of_range(sqlite_store: CentralStore) -> None:
    client = pull_mod.PullClient(f"http://{HOST}:1", TOKEN)
    with pytest.raises(ValueError, match="limit"):
        Puller(client, sqlite_store, limit=0)
    assert isinstance(Puller(client, sqlite_store).report, PullReport)


# ------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgegate")
    sub = parser.add_subparsers(dest="command")
    central = sub.add_parser("central")
    pull_cli.register(central.add_subparsers(dest="central_command", required=True))
    return parser


def _cli(argv: list[str]) -> int:
    args = _parser().parse_args(["central", *argv])
    code: int = args.func(args)
    return code


def _dsn(path: Path) -> str:
    return f"sqlite:///{path}"


def test_cli_arguments_and_defaults() -> None:
    args = _parser().parse_args(["central", "pull", "http://127.0.0.1:1", "--token", "t"])
    assert (args.db, args.limit, args.follow, args.interval) == (
        "sqlite:///central.db",
        1000,
        False,
        5.0,
    )
    assert args.func is pull_cli.run
    for bad in (
        ["pull", "http://x"],  # no token
        ["pull", "http://x", "--token", "t", "--token-file", "f"],
        ["pull", "http://x", "--token", "t", "--limit", "0"],
        ["pull", "http://x", "--token", "t", "--limit", "10001"],
        ["pull", "http://x", "--token", "t", "--interval", "-1"],
    ):
        with pytest.raises(SystemExit) as exited:
            _parser().parse_args(["central", *bad])
        assert exited.value.code == 2


async def test_cli_pulls_then_reports_nothing_new(
    server: PullApiServer,
    gate_log: EventLog,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    db = _dsn(tmp_path / "central.db")
    argv = ["pull", _url(server) + "/", "--token-file", str(token_file), "--db", db]
    head = gate_log.head[0]
    assert await asyncio.to_thread(_cli, [*argv, "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert f"gate {GATE}: seq {head} of {head}" in out  # the plain progress line
    assert f"{head} new events stored, 0 already held, 0 dead-lettered" in out
    assert f"central at seq {head}, gate head seq {head} (up to date)" in out

    with structlog.testing.capture_logs() as logs:
        assert await asyncio.to_thread(_cli, argv) == 0
    assert "0 new events stored" in capsys.readouterr().out
    done = [e for e in logs if e["event"] == "pull_done"]
    assert done == [
        {
            "component": "central.pull",
            "url": _url(server),
            "gate": GATE,
            "stored": 0,
            "duplicates": 0,
            "central_head": head,
            "event": "pull_done",
            "log_level": "info",
        }
    ]
    assert list(done[0])[1:6] == ["url", "gate", "stored", "duplicates", "central_head"]
    with open_store(db) as store:
        assert store.count(GATE) == head and store.verify(GATE) is None


async def test_cli_wrong_token_exits_2_naming_the_refusal(
    server: PullApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _dsn(tmp_path / "central.db")
    code = await asyncio.to_thread(_cli, ["pull", _url(server), "--token", "nope", "--db", db])
    err = capsys.readouterr().err
    assert code == 2
    assert "refused the token (401: wrong bearer token)" in err
    assert "nope" not in err.replace("/v1/head", "")


async def test_cli_unreachable_gate_bad_input_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _dsn(tmp_path / "central.db")
    url = f"http://{HOST}:{_free_port()}"
    cases = [
        (["pull", url, "--token", TOKEN, "--db", db], "cannot reach"),
        (["pull", url, "--token-file", str(tmp_path / "missing"), "--db", db], "token file"),
        (["pull", url, "--token", "white space", "--db", db], "token"),
        (["pull", "gate-a:8470", "--token", TOKEN, "--db", db], "expected http"),
        (["pull", url, "--token", TOKEN, "--db", "mysql://x"], "mysql"),
    ]
    for argv, message in cases:
        assert await asyncio.to_thread(_cli, argv) == 2, argv
        err = capsys.readouterr().err
        assert "edgegate central pull: " in err and message in err, (argv, err)


def test_progress_bar_on_a_terminal_and_plain_lines_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    report = PullReport("http://127.0.0.1:1", GATE, gate_head=10, start_head=0, central_head=4)
    term = Terminal()
    with pull_cli._Display(term) as display:
        display.progress(report)
        report.central_head = report.gate_head = 12
        display.progress(report)
        display.notice("up to date")
    assert "up to date" in term.getvalue()

    plain = io.StringIO()
    with pull_cli._Display(plain) as display:
        report.caught_up = True
        display.progress(report)
        display.progress(report)  # unchanged: not repeated
    assert plain.getvalue() == f"gate {GATE}: seq 12 of 12 (0 new, 0 already held)\n"


async def test_the_real_edgegate_cli_has_central_pull(
    server: PullApiServer, gate_log: EventLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgegate.cli.main import main

    db = _dsn(tmp_path / "central.db")
    argv = ["central", "pull", _url(server), "--token", TOKEN, "--db", db]
    try:
        assert await asyncio.to_thread(main, argv) == 0
    finally:
        # main() bound structlog to capsys' stderr, closed before the server fixture logs.
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = []
    assert f"{gate_log.head[0]} new events stored" in capsys.readouterr().out


async def test_a_missing_archive_is_a_gap_never_skipped(
    server: PullApiServer, gate_log: EventLog
) -> None:
    """An archive deleted by hand: a page asked from inside it is a 500 naming the missing
    events, never the rows after the gap (which a client would take for the next ones); the
    answer does not show the gate's file paths."""
    policy = RetentionPolicy("Asia/Shanghai", 1, timedelta(0), 1 << 30, 3)
    first_last = gate_log.head[0]
    for _ in range(2):
        retention = Retention(gate_log, policy, ManualClock())
        try:
            await retention.step()
        finally:
            await retention.aclose()
        await _append(gate_log, 3)
    archive = gate_log.path.parent / f"{gate_log.path.name}.segments"
    missing = archive / f"{1:012d}-{first_last:012d}.db.zst"
    missing.unlink()

    status, _, body = await get(server, "/v1/events?after=1")
    assert status == 500
    assert f"events 2..{first_last} are missing" in _error(body)
    assert str(gate_log.path.parent) not in body.decode()
    status, _, body = await get(server, f"/v1/events?after={first_last}")
    assert status == 200
    assert decode_batch(body).from_seq == first_last + 1


async def test_central_pull_refuses_a_page_that_skips_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that serves past a gap anyway (not this gate's API, which refuses): central
    stores nothing beyond what it has and says which seq it needs."""
    log_path = tmp_path / "gate.db"
    await _closed_log(log_path, 10)
    with LogReader(log_path) as reader:
        skipping = [row for rows in reader.iter_rows(0) for row in rows if row[0] >= 5]
    body = encode_batch(EventBatch.of(GATE, skipping))
    response = _canned_events(
        "200 OK", body, "Content-Type: application/x-msgpack", f"X-Edgegate-Gate: {GATE}",
        "X-Edgegate-Head: 10",
    )  # fmt: skip
    db = tmp_path / "central.db"
    async with _canned(response) as url:
        code = await asyncio.to_thread(_cli, ["pull", url, "--token", TOKEN, "--db", _dsn(db)])
    assert code == 2
    assert "served seq 5..10 but central needs seq 1 next" in capsys.readouterr().err
    with open_store(_dsn(db)) as store:
        assert store.head(GATE)[0] == 0
