"""``edgegate central pull URL``: fetch a gate's events over its pull API into the central store.

The puller asks ``URL/v1/head`` which gate answers (``X-Edgegate-Gate``), then pages through
``URL/v1/events?after=HEAD`` in msgpack, where HEAD is always the store's own head for that
gate, and hands each page to ``CentralStore.store_batch`` (which proves the chain and
dead-letters what does not verify). So a run is idempotent, resumes wherever the last one
stopped (even if it was killed mid-page: the store commits whole batches), and never trusts
the server for what central already holds.

Blocking (``urllib`` with a timeout, the synchronous store): call it from a thread in asyncio
code. Environment proxies are ignored and redirects are not followed (the bearer token must
not travel anywhere but to the gate). Exit codes of ``run``: 0 done, 1 rows were refused as
unverifiable (dead-lettered), 2 anything else that stopped the pull (unreachable gate, bad
token, malformed payload, gap, database error), with a message naming it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgegate.central.store import CentralStore, StoreError, open_store
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx surfaces as an HTTPError


class PullClient:
    """The HTTP side: a gate's ``/v1/head`` and ``/v1/events`` with its bearer token."""

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
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.ProxyHandler({}),
            _NoRedirect(),
        ]
        if cafile is not None:
            try:
                context = ssl.create_default_context(cafile=str(cafile))
            except (OSError, ssl.SSLError) as exc:
                raise PullError(f"CA file {cafile}: {exc}") from exc
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    @property
    def cleartext(self) -> bool:
        """Whether the token would cross a network unencrypted (http to a non-local host)."""
        parts = urlsplit(self.url)
        return parts.scheme == "http" and not _is_loopback(parts.hostname or "")

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

    def _gate(self, url: str, headers: http.client.HTTPMessage) -> str:
        value = headers.get(GATE_HEADER)
        try:
            return check_id(value, f"{GATE_HEADER} header")
        except ProtocolError as exc:
            raise PullError(f"{url}: {exc} (is this an edgegate gate?)") from exc

    def _get(self, url: str, accept: str) -> tuple[int, http.client.HTTPMessage, bytes]:
        # S310: base_url() admitted only http and https.
        request = urllib.request.Request(url, method="GET", headers={"Accept": accept})  # noqa: S310
        request.add_unredirected_header("Authorization", f"Bearer {self._token}")
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > self.max_body:
                    raise PullError(f"{url}: answer of {length} bytes, at most {self.max_body}")
                body = resp.read(self.max_body + 1)
                if len(body) > self.max_body:
                    raise PullError(f"{url}: answer longer than {self.max_body} bytes")
                # read(n) returns a short body without complaint when the connection breaks.
                if length is not None and length.isdigit() and len(body) != int(length):
                    raise PullError(
                        f"{url}: the exchange failed: {len(body)} of {length} bytes received",
                        transient=True,
                    )
                return int(resp.status), resp.headers, body
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                raise _http_error(url, exc) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                raise PullError(f"cannot reach {url}: TLS: {exc.reason}") from exc
            raise PullError(f"cannot reach {url}: {exc.reason}", transient=True) from exc
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad framing
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise PullError(f"{url}: the exchange failed: {problem}", transient=True) from exc


def _http_error(url: str, exc: urllib.error.HTTPError) -> PullError:
    try:
        raw = exc.read(4096)
    except (OSError, http.client.HTTPException):
        raw = b""
    try:
        message = str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        message = raw.decode("utf-8", "replace").strip()[:200] or str(exc.reason)
    code = exc.code
    if code == 401:
        return PullError(f"{url}: the gate refused the token (401: {message})")
    if code == 404:
        return PullError(f"{url}: not found (404: {message}); give the gate's base URL")
    if 300 <= code < 400:
        where = exc.headers.get("Location") if exc.headers else None
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
    client = PullClient(url, token, timeout=timeout, cafile=cafile)
    puller = Puller(client, store, limit=limit, on_progress=on_progress, on_notice=on_notice)
    if follow:
        return puller.follow(interval, stop or threading.Event())
    return puller.run()


# --------------------------------------------------------------------------- CLI


def register(central_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``pull`` to the ``edgegate central`` sub-commands."""
    p = central_subparsers.add_parser(
        "pull",
        help="fetch a gate's events over its pull API into the central store",
        description=(
            "Fetch the events of the gate at URL (its base URL, e.g. https://10.20.7.5:8480) "
            "into the central store, from where the store's copy of that gate ends. "
            "Idempotent; exit 0 done, 1 rows refused as unverifiable, 2 other failure."
        ),
    )
    p.add_argument("url", metavar="URL", help="the gate's base URL (http:// or https://)")
    token = p.add_mutually_exclusive_group(required=True)
    token.add_argument(
        "--token", help="the gate's bearer token (visible to other local users: prefer a file)"
    )
    token.add_argument("--token-file", type=Path, help="a file holding the bearer token")
    p.add_argument(
        "--db",
        default=DEFAULT_DSN,
        metavar="DSN",
        help=f"sqlite:///PATH or postgresql://… (default {DEFAULT_DSN})",
    )
    p.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        help=f"events per request, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})",
    )
    p.add_argument("--follow", action="store_true", help="keep polling for new events")
    p.add_argument(
        "--interval",
        type=_seconds,
        default=DEFAULT_INTERVAL,
        help=f"seconds between polls with --follow (default {DEFAULT_INTERVAL:g})",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the gate per request (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--ca-file",
        "--cafile",
        dest="cafile",
        type=Path,
        help="CA certificate to verify an https gate with",
    )
    p.set_defaults(func=run)


register_pull = register
"""The name ``edgegate.cli.central_cmd`` looks for."""


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is outside 1..{MAX_LIMIT}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"{value:g} s is outside (0, 86400]")
    return value


def _read_token(args: argparse.Namespace) -> str:
    if args.token_file is None:
        return str(args.token)
    try:
        return str(args.token_file.read_text(encoding="utf-8")).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PullError(f"token file {args.token_file}: {exc}") from exc


class _Display:
    """A rich progress bar on a terminal, else a plain line per second at most."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_line = 0.0
        self._last_state: tuple[int, int] | None = None
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> _Display:
        if self.tty:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.out),
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the progress bar (before printing a summary); idempotent."""
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.stop()

    def progress(self, r: PullReport) -> None:
        if r.gate is None:
            return
        done, total = r.central_head - r.start_head, max(r.gate_head - r.start_head, 0)
        if self._progress is not None:
            if self._task is None:
                self._task = self._progress.add_task(f"gate {r.gate}", total=total)
            self._progress.update(self._task, completed=done, total=max(total, done))
            return
        now = time.monotonic()
        state = (r.central_head, r.gate_head)
        if state == self._last_state:
            return  # e.g. --follow polling an idle gate
        if now - self._last_line >= 1.0 or r.caught_up:
            self._last_line, self._last_state = now, state
            print(
                f"gate {r.gate}: seq {r.central_head} of {r.gate_head} "
                f"({r.stored} new, {r.duplicates} already held)",
                file=self.out,
                flush=True,
            )

    def notice(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, file=self.out, flush=True)


def _summary(r: PullReport) -> str:
    where = f"gate {r.gate}" if r.gate else r.url
    state = "up to date" if r.caught_up else "stopped"
    return (
        f"{where} from {r.url}: {r.stored} new events stored, {r.duplicates} already held, "
        f"{r.dead_lettered} dead-lettered; central at seq {r.central_head}, gate head seq "
        f"{r.gate_head} ({state})"
    )


def run(args: argparse.Namespace) -> int:
    """``edgegate central pull``; exit code as in the module docstring."""
    out = sys.stdout
    try:
        client = PullClient(args.url, _read_token(args), timeout=args.timeout, cafile=args.cafile)
    except PullError as exc:
        print(f"edgegate central pull: {exc.message}", file=sys.stderr)
        log.error("pull_refused", error=exc.message)
        return 2
    if client.cleartext:
        print(
            f"edgegate central pull: warning: {client.url} is plain http: the token crosses the "
            "network unencrypted (use https)",
            file=sys.stderr,
        )
    try:
        store = open_store(args.db)
    except StoreError as exc:
        print(f"edgegate central pull: {exc}", file=sys.stderr)
        log.error("pull_store_failed", error=str(exc))
        return 2
    with store, _Display(out) as display:
        puller = Puller(
            client,
            store,
            limit=args.limit,
            on_progress=display.progress,
            on_notice=display.notice,
        )
        try:
            if args.follow:
                report = puller.follow(args.interval, threading.Event())
            else:
                report = puller.run()
        except PullError as exc:
            display.close()
            print(f"edgegate central pull: {exc.message}", file=sys.stderr)
            log.error("pull_failed", url=client.url, error=exc.message)
            if puller.report.gate is not None:
                print(_summary(puller.report), file=out)
            return 2
        except KeyboardInterrupt:
            display.close()
            print(_summary(puller.report), file=out)
            return 0 if args.follow else 130
    print(_summary(report), file=out)
    if not report.ok:
        for fault in report.faults:
            print(f"FAILED gate {report.gate}: dead-lettered: {fault}", file=out)
        return 1
    log.info(
        "pull_done",
        url=report.url,
        gate=report.gate,
        stored=report.stored,
        duplicates=report.duplicates,
        central_head=report.central_head,
    )
    return 0
