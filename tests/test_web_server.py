"""The daemon's one HTTP server (edgegate.web) over real sockets on 127.0.0.1: mounting parts,
guards, authenticated connections, body limits, errors without tracebacks; and the daemon
running it from ``[http]`` alone."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edgegate.config import parse_config
from edgegate.web import HttpError, HttpServer, ServerLimits, authenticated
from tests.eventually import eventually
from tests.gate_harness import RunningGate, gate_toml, lane, sim_plc, sim_reader

HOST = "127.0.0.1"


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"path": request.path, "bytes": len(body)})


async def _broken(request: web.Request) -> web.Response:
    raise RuntimeError("a bug with a secret in its message: hunter2")


async def _guard(request: web.Request) -> None:
    if request.headers.get("X-Key") != "k":
        raise HttpError(401, "no key", close=True)
    authenticated(request)


def _console() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _echo)
    app.router.add_post("/form", _echo)
    app.router.add_get("/broken", _broken)
    return app


def _api() -> web.Application:
    app = web.Application()
    app.router.add_get("/thing", _echo)
    return app


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    srv = HttpServer(HOST, 0, limits=ServerLimits(max_pending_per_peer=2, header_timeout=30))
    srv.mount("/", _console())
    srv.mount("/api", _api(), guard=_guard)
    async with srv:
        yield srv


async def _request(
    srv: HttpServer, method: str, path: str, **kwargs: object
) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, srv.url + path, **kwargs) as resp,  # type: ignore[arg-type]
    ):
        return resp.status, dict(resp.headers), await resp.text()


async def test_parts_are_served_under_their_prefixes(server: HttpServer) -> None:
    status, headers, body = await _request(server, "GET", "/")
    assert (status, json.loads(body)["path"]) == (200, "/")
    assert headers["Server"] == "edgegate"  # no software versions advertised
    status, _, body = await _request(server, "GET", "/api/thing", headers={"X-Key": "k"})
    assert (status, json.loads(body)["path"]) == (200, "/api/thing")
    status, headers, body = await _request(server, "GET", "/nowhere")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "no such path '/nowhere'"}


async def test_a_guard_runs_before_routing_under_its_prefix(server: HttpServer) -> None:
    for path in ("/api/thing", "/api/nowhere", "/api"):
        status, headers, body = await _request(server, "GET", path)
        assert (status, json.loads(body)) == (401, {"error": "no key"}), path
        assert headers["Connection"] == "close"


async def test_a_handler_bug_is_a_json_500_without_a_traceback(server: HttpServer) -> None:
    status, _, body = await _request(server, "GET", "/broken")
    assert (status, json.loads(body)) == (500, {"error": "internal error"})
    assert "hunter2" not in body and "Traceback" not in body
    assert (await _request(server, "GET", "/"))[0] == 200


async def test_small_bodies_are_taken_and_large_ones_refused(server: HttpServer) -> None:
    status, _, body = await _request(server, "POST", "/form", data=b"x" * 1000)
    assert (status, json.loads(body)["bytes"]) == (200, 1000)
    status, _, body = await _request(server, "POST", "/form", data=b"x" * (64 * 1024 + 1))
    assert status == 413
    assert "larger than 65536 bytes" in json.loads(body)["error"]


def _open_idle(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=10)


async def test_an_authenticated_connection_no_longer_counts_against_its_peer(
    server: HttpServer,
) -> None:
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        writer.write(b"GET /api/thing HTTP/1.1\r\nHost: x\r\nX-Key: k\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = re.search(rb"Content-Length: (\d+)", head)
        assert length is not None
        await reader.readexactly(int(length.group(1)))
        # Two more pending connections fit beside it (the cap is 2), a third does not.
        idle = [await asyncio.to_thread(_open_idle, server.port) for _ in range(2)]
        try:
            await eventually(lambda: server.connections == 3, "three connections admitted")
            third = await asyncio.to_thread(_open_idle, server.port)
            with third:
                answer = await asyncio.to_thread(third.recv, 4096)
            assert answer.startswith(b"HTTP/1.1 503")
            assert b"too many unauthenticated connections" in answer
        finally:
            for s in idle:
                s.close()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_idle_unauthenticated_connections_make_room_for_new_ones() -> None:
    """``max_pending``: at the cap the oldest unauthenticated connection not answering a
    request is closed; one in the middle of a request, and authenticated ones, are kept."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    app = _console()
    app.router.add_get("/slow", slow)
    srv = HttpServer(HOST, 0, limits=ServerLimits(max_connections=5, max_pending=3))
    srv.mount("/", app)
    srv.mount("/api", _api(), guard=_guard)
    async with srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/api/thing", headers={"X-Key": "k"}) as resp:
            assert resp.status == 200  # authenticated, kept alive
        busy = asyncio.create_task(_request(srv, "GET", "/slow"))
        await eventually(lambda: srv.connections == 2, "the slow request under way")
        idle = await asyncio.to_thread(_open_idle, srv.port)
        await eventually(lambda: srv.connections == 3, "the idle one admitted")
        newer = [await asyncio.to_thread(_open_idle, srv.port) for _ in range(2)]
        try:
            assert await asyncio.to_thread(idle.recv, 4096) == b""  # closed to make room
            await eventually(lambda: srv.connections == 4, "the newest two admitted")
            for s in newer:
                s.settimeout(0.05)
                with pytest.raises(TimeoutError):
                    s.recv(1)  # open and unanswered: waiting for its request
            third = await asyncio.to_thread(_open_idle, srv.port)
            with third:  # the busy one and the authenticated one stay; a pending one goes
                third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await asyncio.to_thread(third.recv, 4096)).startswith(b"HTTP/1.1 200")
            assert not busy.done()
            release.set()
            assert (await busy)[0] == 200
            async with http.get(srv.url + "/api/thing", headers={"X-Key": "k"}) as resp:
                assert resp.status == 200
        finally:
            release.set()
            await asyncio.gather(busy, return_exceptions=True)
            idle.close()
            for s in newer:
                s.close()


async def test_stopping_closes_refused_connections_still_lingering() -> None:
    """A refused connection lingers (half-closed, input discarded) until the client closes;
    stopping the server must not leave it open behind (an unclosed socket on the loop)."""
    srv = HttpServer(HOST, 0, limits=ServerLimits(max_pending_per_peer=1, linger=600))
    srv.mount("/", _console())
    async with srv:
        idle = await asyncio.to_thread(_open_idle, srv.port)
        refused_reader, refused_writer = await asyncio.open_connection(HOST, srv.port)
        try:
            answer = await refused_reader.readuntil(b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503")
            await srv.aclose()

            async def reset() -> bool:
                # Lingering, the server discards what is sent; closed, its kernel answers RST.
                try:
                    refused_writer.write(b"x")
                    await refused_writer.drain()
                except (ConnectionResetError, BrokenPipeError):
                    return True
                return False

            await eventually(reset, "the server's side closed, not left to its 600 s linger")
        finally:
            idle.close()
            refused_writer.close()


# ------------------------------------------------------------------------- the daemon


async def test_the_daemon_serves_http_from_http_alone_and_stops_it(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = int(s.getsockname()[1])
    text = gate_toml(
        tmp_path / "gate.db",
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc")],
    )
    config = parse_config(text + f"\n[http]\nport = {port}\n", base_dir=tmp_path)
    assert config.sync is None
    async with RunningGate(config) as g:
        assert g.gate.web is not None and g.gate.web.server is not None
        assert g.gate.web.pull_api is None  # no [sync.pull_api]: nothing at /v1
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{HOST}:{port}/v1/head") as resp,
        ):
            assert resp.status == 404
            assert "no such path" in (await resp.json())["error"]
    with pytest.raises(ConnectionRefusedError):  # stopped with the daemon
        await asyncio.open_connection(HOST, port)
