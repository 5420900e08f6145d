"""The HTTP/1.1 framing under the pull API (:mod:`edgegate.sync.pull_api`): reading a
request head within limits, content negotiation, writing a response, closing without a reset.
GET without bodies only; what the API answers is the API's."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

JSON = "application/json"

_TCHAR_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION_RE = re.compile(r"HTTP/(\d)\.(\d)")
_UINT_RE = re.compile(r"[0-9]{1,19}")
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class HttpError(Exception):
    """A request answered with an error status; ``close`` ends the connection after it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)
        self.close = close


class Eof(Exception):
    """The client went away (cleanly between requests, or mid-request)."""


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: tuple[int, int]
    headers: dict[str, list[str]]

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        if values is None:
            return None
        if len(values) > 1:
            raise HttpError(400, f"header {name}: sent {len(values)} times", close=True)
        return values[0]

    @property
    def keep_alive(self) -> bool:
        tokens = {
            t.strip().lower() for v in self.headers.get("connection", ()) for t in v.split(",")
        }
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    rows: int = 0
    error: str | None = None


def error_response(exc: HttpError, extra: Sequence[tuple[str, str]] = ()) -> Response:
    body = json.dumps({"error": exc.message}, ensure_ascii=False).encode() + b"\n"
    return Response(
        exc.status,
        body,
        JSON,
        [*exc.headers, *extra],
        close=exc.close,
        error=exc.message,
    )


def show(value: str, n: int = 40) -> str:
    return repr(value[:n] + ("…" if len(value) > n else ""))


def negotiate(accept: str | None, offers: Sequence[str]) -> str | None:
    """The offer the ``Accept`` value prefers (highest q, then the order of ``offers``), or
    None if it accepts none. An absent or empty ``Accept`` accepts the first offer."""
    if accept is None or not accept.strip():
        return offers[0]
    ranges: list[tuple[str, str, float]] = []
    for part in accept.split(","):
        items = part.split(";")
        media = items[0].strip().lower()
        if "/" not in media:
            continue  # not a media range: ignored
        main, _, sub = media.partition("/")
        q = 1.0
        for param in items[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            ranges.append((main.strip(), sub.strip(), q))
    best: str | None = None
    best_q = 0.0
    for offer in offers:
        o_main, _, o_sub = offer.partition("/")
        specificity, q = -1, 0.0
        for main, sub, rq in ranges:
            if main == o_main and sub == o_sub:
                s = 2
            elif main == o_main and sub == "*":
                s = 1
            elif main == "*" and sub == "*":
                s = 0
            else:
                continue
            if s > specificity:
                specificity, q = s, rq
        if q > best_q:
            best, best_q = offer, q
    return best


async def shut(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, linger: bool, linger_s: float
) -> None:
    """Close the connection; with ``linger``, first half-close and drain what the client still
    sends for up to ``linger_s`` seconds."""
    with contextlib.suppress(OSError, RuntimeError):
        if linger and writer.can_write_eof():
            writer.write_eof()
            # Discard what the client still sends until it closes: closing with unread
            # input makes the kernel send RST, which can destroy our response in flight.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_discard(reader), linger_s)
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), linger_s)


async def send(
    writer: asyncio.StreamWriter, resp: Response, *, keep_alive: bool, write_timeout: float
) -> None:
    """Write ``resp`` with its status line and headers; drain within ``write_timeout`` seconds."""
    reason = HTTPStatus(resp.status).phrase
    lines = [
        f"HTTP/1.1 {resp.status} {reason}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        "Server: edgegate",
        "Cache-Control: no-store",
    ]
    if resp.content_type is not None:
        lines.append(f"Content-Type: {resp.content_type}")
    if resp.status not in (204, 304):
        lines.append(f"Content-Length: {len(resp.body)}")
    lines.extend(f"{k}: {v}" for k, v in resp.headers)
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    writer.write(head + resp.body if resp.status != 204 else head)
    await asyncio.wait_for(writer.drain(), write_timeout)


async def read_request(
    reader: asyncio.StreamReader, max_request_line: int, max_header_bytes: int, max_headers: int
) -> Request:
    """The next request's head (a request body is refused); ``Eof`` when the client went away,
    ``HttpError`` naming what is wrong with the head."""
    line = b""
    for _ in range(4):  # RFC 9112 2.2: ignore empty lines before a request line
        line = await _read_line(reader, max_request_line, 414, "request line")
        if line.strip(b"\r\n"):
            break
    text = _ascii(line, "request line")
    parts = text.split(" ")
    if len(parts) != 3 or not all(parts):
        raise HttpError(400, f"malformed request line {show(text)}", close=True)
    method, target, version = parts
    if not _TCHAR_RE.fullmatch(method):
        raise HttpError(400, f"malformed method {show(method)}", close=True)
    m = _VERSION_RE.fullmatch(version)
    if m is None:
        raise HttpError(400, f"malformed HTTP version {show(version)}", close=True)
    if m.group(1) != "1":
        raise HttpError(505, f"{version} not supported: HTTP/1.1 only", close=True)
    headers: dict[str, list[str]] = {}
    total = 0
    count = 0
    while True:
        left = max_header_bytes - total
        raw = await _read_line(reader, left, 431, "header section")
        total += len(raw)
        if raw in (b"\r\n", b"\n"):
            break
        count += 1
        if count > max_headers:
            raise HttpError(431, f"more than {max_headers} header fields", close=True)
        field_line = _ascii(raw, "header field", latin1=True)
        if field_line[:1] in (" ", "\t"):
            raise HttpError(400, "obsolete header line folding", close=True)
        name, colon, value = field_line.partition(":")
        if not colon or not _TCHAR_RE.fullmatch(name):
            raise HttpError(400, f"malformed header field {show(field_line)}", close=True)
        value = value.strip(" \t")
        if _CTL_RE.search(value):
            raise HttpError(400, f"header {name}: control character in value", close=True)
        headers.setdefault(name.lower(), []).append(value)
    request = Request(method, target, (1, int(m.group(2))), headers)
    if request.version >= (1, 1) and "host" not in headers:
        raise HttpError(400, "missing Host header (required by HTTP/1.1)", close=True)
    request.header("host")
    if "transfer-encoding" in headers:
        raise HttpError(413, "request bodies are not accepted", close=True)
    length = request.header("content-length")
    if length is not None:
        if not _UINT_RE.fullmatch(length):
            raise HttpError(400, f"header Content-Length: {show(length)}", close=True)
        if int(length):
            raise HttpError(413, "request bodies are not accepted", close=True)
    return request


def uint_param(value: str, name: str, lo: int, hi: int) -> int:
    if not _UINT_RE.fullmatch(value) or not lo <= int(value) <= hi:
        raise HttpError(400, f"{name}: expected a whole number {lo}..{hi}, got {show(value)}")
    return int(value)


def _ascii(raw: bytes, what: str, *, latin1: bool = False) -> str:
    text = raw.rstrip(b"\n").removesuffix(b"\r")
    try:
        return text.decode("latin-1" if latin1 else "ascii")
    except UnicodeDecodeError:
        raise HttpError(400, f"{what}: not ASCII", close=True) from None


async def _read_line(reader: asyncio.StreamReader, max_len: int, status: int, what: str) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(status, f"{what} longer than allowed", close=True) from None
    except asyncio.IncompleteReadError as exc:
        if len(exc.partial) > max_len:
            raise HttpError(status, f"{what} longer than allowed", close=True) from None
        raise Eof from None
    except ConnectionError:
        raise Eof from None
    if len(line) > max_len:
        raise HttpError(status, f"{what} longer than allowed", close=True)
    return line


async def _discard(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError, asyncio.LimitOverrunError):
        left = 1 << 20
        while left > 0:
            chunk = await reader.read(65536)
            if not chunk:
                return
            left -= len(chunk)


def peer_host(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    if isinstance(info, tuple) and info:
        return str(info[0])
    return str(info)


def peer_name(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        return f"{info[0]}:{info[1]}"
    return str(info)
