"""Fetch a gate's events over its pull API into the central store (``edgegate central pull
URL``, whose command line is ``edgegate.cli.central_pull``).

The puller asks ``URL/v1/head`` which gate answers (``X-Edgegate-Gate``), then pages through
``URL/v1/events?after=HEAD`` in msgpack, where HEAD is always the store's own head for that
gate, and hands each page to ``CentralStore.store_batch`` (which proves the chain and
dead-letters what does not verify). So a run is idempotent, resumes wherever the last one
stopped (even if it was killed mid-page: the store commits whole batches), and never trusts
the server for what central already holds.

Blocking (aiohttp's client on a loop of the puller's own, one kept-alive connection for every
page; the synchronous store): call it from a thread in asyncio code. Environment proxies are
ignored and redirects are not followed (the bearer token must not travel anywhere but to the
gate).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

from edgegate.central.store import CentralStore, StoreError
from edgegate.hosts import is_loopback
from edgegate.observability import get_logger
from edgegate.sync.protocol import ProtocolError, check_id, decode_batch
from edgegate.sync.pull_api import (
    EVENTS_PATH,
    GATE_HEADER,
    HEAD_HEADER,
    HEAD_PATH,
    MAX_LIMIT,
    MSGPACK,
    MSGPACK_ALT,
    check_token,
)

log = get_logger("central.pull")
T = TypeVar("T")

DEFAULT_DSN = "sqlite:///central.db"
DEFAULT_LIMIT = 1000
DEFAULT_TIMEOUT = 30.0
DEFAULT_INTERVAL = 5.0
MAX_BODY = 64 << 20
"""Largest response accepted (a gate's page holds ~8 MiB of event data at most)."""


class PullError(Exception):
    """The pull stopped; the message names why. ``transient``: retrying later may help
    (network, timeout, a server error), as ``--follow`` does."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass(frozen=True, slots=True)
class GateHead:
    gate: str
    seq: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """One ``/v1/events`` answer: ``body`` is None for 204 (nothing after ``after``)."""

    url: str
    gate: str
    head_seq: int
    body: bytes | None


@dataclass(slots=True)
class PullReport:
    """What a pull did so far. ``central_head`` is the store's head for the gate."""

    url: str
    gate: str | None = None
    gate_head: int = 0
    start_head: int = 0
    central_head: int = 0
    pages: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    faults: list[str] = field(default_factory=list)
    caught_up: bool = False

    @property
    def ok(self) -> bool:
        return self.dead_lettered == 0 and not self.faults


# --------------------------------------------------------------------------- HTTP client


def base_url(url: str) -> str:
    """The gate's base URL (``http[s]://host[:port][/prefix]``); a trailing ``/v1/events``
    or ``/v1/head`` is dropped. ``PullError`` for anything else."""
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise PullError(f"URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PullError(f"URL {url!r}: expected http://HOST[:PORT] or https://HOST[:PORT]")
    if parts.username is not None or parts.password is not None:
        raise PullError(f"URL {url!r}: no credentials in the URL; use --token or --token-file")
    if parts.query or parts.fragment:
        raise PullError(f"URL {url!r}: no query or fragment, only the gate's base URL")
    path = parts.path.rstrip("/")
    for suffix in (EVENTS_PATH, HEAD_PATH, "/v1"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


Headers = Mapping[str, str]


class PullClient:
    """The HTTP side: a gate's ``/v1/head`` and ``/v1/events`` with its bearer token, on one
    ``aiohttp.ClientSession`` whose kept-alive connection carries every page.

    Blocking: each call runs the session on the client's own event loop, so call it from a
    thread in asyncio code. :meth:`close` (or ``with``) ends the session and its loop."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        cafile: Path | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.url = base_url(url)
        try:
            self._token = check_token(token)
        except ValueError as exc:
            raise PullError(str(exc)) from exc
        self.timeout = timeout
        self.max_body = max_body
        self._tls: ssl.SSLContext | bool = True  # the system's CAs
        if cafile is not None:
            try:
                self._tls = ssl.create_default_context(cafile=str(cafile))
            except (OSError, ssl.SSLError) as exc:
                raise PullError(f"CA file {cafile}: {exc}") from exc
        # Created on the first request: a client that never asks holds nothing to close.
        self._runner: asyncio.Runner | None = None
        self._session: aiohttp.ClientSession | None = None

    def __enter__(self) -> PullClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the session (its connection) and the client's event loop. Idempotent."""
        runner, self._runner = self._runner, None
        session, self._session = self._session, None
        if runner is None:
            return
        if session is not None:
            runner.run(session.close())
        runner.close()

    @property
    def cleartext(self) -> bool:
        """Whether the token would cross a network unencrypted (http to a non-local host)."""
        parts = urlsplit(self.url)
        return parts.scheme == "http" and not is_loopback(parts.hostname or "")

    def head(self) -> GateHead:
        url = self.url + HEAD_PATH
        _, headers, body = self._get(url, "application/json")
        gate = self._gate(url, headers)
        try:
            doc = json.loads(body)
            seq, digest = int(doc["seq"]), bytes.fromhex(doc["hash"])
            if seq < 0 or len(digest) != 32:
                raise ValueError("seq or hash out of range")
        except (ValueError, KeyError, TypeError) as exc:
            raise PullError(f"{url}: malformed head document: {exc}") from exc
        return GateHead(gate, seq, digest)

    def events(self, after: int, limit: int) -> Page:
        url = f"{self.url}{EVENTS_PATH}?{urlencode({'after': after, 'limit': limit})}"
        status, headers, body = self._get(url, f"{MSGPACK}, {MSGPACK_ALT};q=0.9")
        gate = self._gate(url, headers)
        head = headers.get(HEAD_HEADER)
        if head is None or not head.isdigit():
            raise PullError(f"{url}: missing or malformed {HEAD_HEADER} header: {head!r}")
        if status == 204:
            return Page(url, gate, int(head), None)
        ctype = (headers.get("Content-Type") or "").partition(";")[0].strip().lower()
        if ctype not in (MSGPACK, MSGPACK_ALT):
            raise PullError(f"{url}: expected msgpack, got Content-Type {ctype!r}")
        return Page(url, gate, int(head), body)

    def _gate(self, url: str, headers: Headers) -> str:
        value = headers.get(GATE_HEADER)
        try:
            return check_id(value, f"{GATE_HEADER} header")
        except ProtocolError as exc:
            raise PullError(f"{url}: {exc} (is this an edgegate gate?)") from exc

    def _get(self, url: str, accept: str) -> tuple[int, Headers, bytes]:
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(self._fetch(url, accept))

    async def _fetch(self, url: str, accept: str) -> tuple[int, Headers, bytes]:
        if self._session is None:
            # trust_env=False: proxies from the environment are ignored (the token goes
            # nowhere but to the gate); one connection, kept alive across pages.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._tls, limit=1),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                trust_env=False,
            )
        headers = {"Accept": accept, "Authorization": f"Bearer {self._token}"}
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                length = resp.content_length
                if length is not None and length > self.max_body:
                    raise PullError(f"{url}: answer of {length} bytes, at most {self.max_body}")
                body = bytearray()
                try:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        body += chunk
                        if len(body) > self.max_body:
                            raise PullError(f"{url}: answer longer than {self.max_body} bytes")
                except aiohttp.ClientPayloadError as exc:
                    got = f"{len(body)} of {length} bytes received" if length else str(exc)
                    raise PullError(f"{url}: the exchange failed: {got}", transient=True) from exc
                if not 200 <= resp.status < 300:
                    raise _http_error(url, resp.status, resp.headers, bytes(body))
                return resp.status, resp.headers, bytes(body)
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise PullError(f"cannot reach {url}: TLS: {exc}") from exc
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or str(exc.os_error)
            raise PullError(f"cannot reach {url}: {reason}", transient=True) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:  # resets, bad framing
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise PullError(f"{url}: the exchange failed: {problem}", transient=True) from exc


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return f"status {code}"


def _http_error(url: str, code: int, headers: Headers, raw: bytes) -> PullError:
    try:
        message = str(json.loads(raw[:4096])["error"])
    except (ValueError, KeyError, TypeError):
        message = raw[:4096].decode("utf-8", "replace").strip()[:200] or _phrase(code)
    if code == 401:
        return PullError(f"{url}: the gate refused the token (401: {message})")
    if code == 404:
        return PullError(f"{url}: not found (404: {message}); give the gate's base URL")
    if code == 429:  # a pause after bad tokens from this address: it ends by itself
        return PullError(
            f"{url}: the gate pauses this address (429: {message}); too many bad tokens came"
            " from it",
            transient=True,
        )
    if 300 <= code < 400:
        where = headers.get("Location")
        return PullError(f"{url}: redirected ({code}) to {where!r}; redirects are not followed")
    return PullError(f"{url}: the gate answered {code}: {message}", transient=code >= 500)


# --------------------------------------------------------------------------- the puller

ProgressFn = Callable[[PullReport], None]
NoticeFn = Callable[[str], None]


class Puller:
    """Pulls one gate into ``store``; ``report`` holds the running totals (also after an
    exception, for a summary)."""

    def __init__(
        self,
        client: PullClient,
        store: CentralStore,
        *,
        limit: int = DEFAULT_LIMIT,
        on_progress: ProgressFn | None = None,
        on_notice: NoticeFn | None = None,
    ) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit: expected 1..{MAX_LIMIT}, got {limit}")
        self.client = client
        self.store = store
        self.limit = limit
        self.report = PullReport(client.url)
        self._on_progress = on_progress or (lambda r: None)
        self._on_notice = on_notice or (lambda s: None)

    def run(self) -> PullReport:
        """Pull until the store holds the gate's head (or rows were dead-lettered)."""
        r = self.report
        if r.gate is None:
            head = self.client.head()
            r.gate, r.gate_head = head.gate, head.seq
            r.start_head = r.central_head = self._store(lambda s: s.head(head.gate)[0])
            log.info(
                "pull_started",
                url=self.client.url,
                gate=head.gate,
                gate_head=head.seq,
                central_head=r.central_head,
            )
            self._on_progress(r)
        gate = r.gate
        r.caught_up = False
        while True:
            after = self._store(lambda s: s.head(gate)[0])
            r.central_head = after
            page = self.client.events(after, self.limit)
            if page.gate != gate:
                raise PullError(
                    f"{page.url}: answered as gate {page.gate!r}, this pull is of gate {gate!r}"
                )
            r.gate_head = page.head_seq
            if page.body is None:
                if page.head_seq < after:
                    raise PullError(
                        f"central holds gate {gate!r} up to seq {after} but the gate's log ends "
                        f"at seq {page.head_seq}: was the gate's log replaced?"
                    )
                r.caught_up = True
                self._on_progress(r)
                return r
            if not self._store_page(gate, after, page):
                return r  # rows dead-lettered: stop, re-pulling would refuse them again
            r.pages += 1
            # The page ended at the head of its snapshot: no need to ask for an empty page.
            r.caught_up = r.central_head >= page.head_seq
            self._on_progress(r)
            if r.caught_up:
                return r

    def follow(self, interval: float, stop: threading.Event) -> PullReport:
        """``run`` again every ``interval`` seconds until ``stop`` is set or rows are
        dead-lettered; transient failures (gate offline, timeouts) are retried."""
        announced = False
        while not stop.is_set():
            try:
                report = self.run()
            except PullError as exc:
                if not exc.transient:
                    raise
                log.warning("pull_retrying", url=self.client.url, error=exc.message)
                self._on_notice(f"{exc.message}; retrying in {interval:g} s")
                announced = False
            else:
                if not report.ok:
                    return report
                if not announced:
                    self._on_notice(
                        f"up to date at seq {report.central_head}; polling every {interval:g} s"
                    )
                    announced = True
            stop.wait(interval)
        return self.report

    def _store_page(self, gate: str, after: int, page: Page) -> bool:
        r = self.report
        assert page.body is not None
        source = f"pull {page.url}"
        try:
            batch = decode_batch(page.body, max_events=self.limit)
            if batch.gate != gate:
                raise ProtocolError(f"gate: batch of gate {batch.gate!r}, expected {gate!r}")
        except ProtocolError as exc:
            reason = f"malformed pull payload: {exc}"
            dead = self._store(lambda s: s.dead_letter(source, gate, page.body or b"", reason))
            r.faults.append(reason)
            log.error("pull_bad_payload", url=page.url, gate=gate, error=str(exc), dead_letter=dead)
            raise PullError(f"{page.url}: {reason} (kept as dead letter #{dead})") from exc
        result = self._store(lambda s: s.store_batch(gate, batch.events, source=source))
        r.stored += result.stored
        r.duplicates += result.duplicates
        r.central_head = result.acked_seq
        log.info(
            "pull_page",
            gate=gate,
            from_seq=batch.from_seq,
            to_seq=batch.to_seq,
            stored=result.stored,
            duplicates=result.duplicates,
            dead_lettered=result.dead_lettered,
            central_head=result.acked_seq,
        )
        if result.dead_lettered:
            r.dead_lettered += result.dead_lettered
            r.faults.append(result.fault or "rows refused")
            log.error(
                "pull_rows_dead_lettered",
                gate=gate,
                rows=result.dead_lettered,
                fault=result.fault,
                url=page.url,
            )
            return False
        if result.acked_seq <= after:
            raise PullError(
                f"{page.url}: the gate served seq {batch.from_seq}..{batch.to_seq} but central "
                f"needs seq {after + 1} next: the gate no longer holds the events in between "
                "(retention, or a damaged log)"
            )
        return True

    def _store(self, fn: Callable[[CentralStore], T]) -> T:
        try:
            return fn(self.store)
        except StoreError as exc:
            raise PullError(f"central store: {exc}", transient=True) from exc


def pull(
    url: str,
    token: str,
    store: CentralStore,
    limit: int = DEFAULT_LIMIT,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    cafile: Path | None = None,
    follow: bool = False,
    interval: float = DEFAULT_INTERVAL,
    stop: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
    on_notice: NoticeFn | None = None,
) -> PullReport:
    """Pull the gate at ``url`` into ``store`` until caught up (``follow``: until ``stop``).
    Raises ``PullError``; dead-lettered rows are in the report (``report.ok`` is False)."""
    with PullClient(url, token, timeout=timeout, cafile=cafile) as client:
        puller = Puller(client, store, limit=limit, on_progress=on_progress, on_notice=on_notice)
        if follow:
            return puller.follow(interval, stop or threading.Event())
        return puller.run()
