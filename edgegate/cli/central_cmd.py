"""``edgegate central run|publish-allowlist``: the central side of sync.

``edgegate central command`` is ``edgegate.cli.central_command``, ``edgegate central pull``
``edgegate.cli.central_pull``. Other modules add actions to
``edgegate central`` without editing this file: append a registrar ``fn(central_subparsers)``
to ``CENTRAL_COMMANDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import signal
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from edgegate.allowlist.importer import DEFAULT_TIMEZONE
from edgegate.central import publish as pub
from edgegate.central.sink import DEFAULT_DSN, DEFAULT_GROUP, Sink, SinkOptions, default_client_id
from edgegate.central.store import StoreError, open_store, redact
from edgegate.cli import (
    central_blacklist,
    central_command,
    central_park,
    central_pull,
    central_tools,
    central_web,
)
from edgegate.cli.central_common import UsageError, broker_args, broker_settings, check_ids, fail
from edgegate.cli.commands import Subparsers, action_group, add_command
from edgegate.config import parse_duration
from edgegate.config.models import HttpSettings
from edgegate.heap import freeze_startup
from edgegate.observability import get_logger
from edgegate.sync.signing import AllowListPublication
from edgegate.web.monitoring import read_token

log = get_logger("cli.central")

CentralRegistrar = Callable[[Subparsers], None]

CENTRAL_COMMANDS: list[CentralRegistrar] = []
"""Extra ``edgegate central`` actions: each is called with the ``central`` subparsers."""


def register(sub: Subparsers) -> None:
    central = action_group(
        sub, "central", "the central platform: sink, publishing, park view, dashboard, tools"
    )
    _register_run(central)
    _register_publish_allowlist(central)
    central_command.register(central)
    for registrar in (
        *CENTRAL_COMMANDS,
        central_pull.register,
        central_park.register,
        central_tools.register,
        central_blacklist.register,
        central_web.register,
    ):
        registrar(central)


def _register_run(central: Subparsers) -> None:
    run = add_command(
        central,
        "run",
        cmd_run,
        help="run the central sink: store every gate's events, ack them (JSON logs on stdout)",
        description="Runs until SIGTERM or SIGINT. Several instances with the same --group "
        "share the gates' batches (MQTT shared subscription); each needs its own stable "
        "--client-id, and with more than one they must share one database "
        "(PostgreSQL, or one SQLite file on one machine).",
    )
    broker_args(run)
    run.add_argument(
        "--db",
        default=DEFAULT_DSN,
        metavar="DSN",
        help=f"sqlite:///PATH or postgresql://USER:PASS@HOST:PORT/DB (default {DEFAULT_DSN})",
    )
    run.add_argument(
        "--group",
        default=DEFAULT_GROUP,
        help=f"shared-subscription group of the instances (default {DEFAULT_GROUP})",
    )
    run.add_argument(
        "--client-id",
        help="stable MQTT client id of this instance (default edgegate-sink-HOSTNAME-GROUP)",
    )
    run.add_argument(
        "--park-key",
        type=Path,
        metavar="FILE",
        help="central's PARK private key (PEM; `edgegate keys generate --name park`), never "
        "the master key: an appointment consumed at one gate is then published at once to "
        "the site's gates on the signed park chain (default: park-wide consumption off, said "
        "at start)",
    )
    run.add_argument(
        "--park-retention",
        default="7d",
        metavar="DURATION",
        help="how long published park messages are kept for gates that missed them (7d)",
    )
    http = run.add_argument_group("HTTP server (/metrics, /healthz, /readyz, the park API)")
    http.add_argument(
        "--http",
        metavar="ADDRESS:PORT",
        help="serve central's HTTP server there, e.g. 127.0.0.1:9480 or [::1]:9480 "
        "(default: no server)",
    )
    http.add_argument("--http-tls-cert", type=Path, metavar="FILE", help="HTTPS certificate")
    http.add_argument("--http-tls-key", type=Path, metavar="FILE", help="HTTPS key")
    http.add_argument(
        "--http-token-file",
        type=Path,
        metavar="FILE",
        help="bearer token the monitoring endpoints then require (one line)",
    )
    http.add_argument(
        "--api-tokens",
        type=Path,
        metavar="FILE",
        help="serve the park API at /api/v1 to these tokens: one 'NAME TOKEN' per line, "
        "mode 0600 (docs/park-api.md)",
    )
    run.set_defaults(log_stream=sys.stdout)


def _register_publish_allowlist(
    central: Subparsers,
) -> None:
    p = add_command(
        central,
        "publish-allowlist",
        cmd_publish_allowlist,
        help="publish a signed allow-list snapshot (retained) or delta to gates",
        description="Without --delta-from, FILE is the whole list and is published as a "
        "retained snapshot. With --delta-from M, the publication is the delta M -> --version: "
        "FILE is a delta file (CSV with an op column, or JSON upsert/remove), or, with "
        "--previous, the whole new list compared with the whole previous one. Deltas are not "
        "retained.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="CSV or JSON file (format by extension)")
    p.add_argument("--key", type=Path, required=True, help="central's private key (PEM)")
    p.add_argument("--site", required=True, help="the gates' site id")
    p.add_argument(
        "--gate",
        action="append",
        required=True,
        dest="gates",
        metavar="GATE",
        help="a gate to publish to (repeat for several)",
    )
    p.add_argument(
        "--version",
        type=int,
        help="the version this publication makes (default: each gate's next, from --db)",
    )
    p.add_argument(
        "--db",
        default=DEFAULT_DSN,
        metavar="DSN",
        help="central's store: takes each gate's version and records the publication before "
        f"it is sent (default {DEFAULT_DSN})",
    )
    p.add_argument("--operator", help="who publishes (recorded; default the login name)")
    p.add_argument(
        "--delta-from", type=int, metavar="M", help="publish a delta applying on version M"
    )
    p.add_argument(
        "--previous", type=Path, metavar="FILE", help="with --delta-from: the previous whole list"
    )
    p.add_argument(
        "--timezone",
        default=DEFAULT_TIMEZONE,
        help=f"zone of times without offset (default {DEFAULT_TIMEZONE})",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    broker_args(p)


# ------------------------------------------------------------------------------ helpers


# ------------------------------------------------------------------------------ run


def cmd_run(args: argparse.Namespace) -> int:
    try:
        check_ids(group=args.group)
        key = None
        if args.park_key is not None:
            try:
                key = pub.load_signing_key(args.park_key)
            except pub.PublishError as exc:
                raise UsageError(f"--park-key: {exc}") from None
        try:
            retention = parse_duration(args.park_retention).total_seconds()
        except ValueError as exc:
            raise UsageError(f"--park-retention: {exc}") from None
        if retention <= 0:
            raise UsageError(f"--park-retention {args.park_retention}: must be more than 0")
        options = SinkOptions(
            broker_settings(args),
            dsn=args.db,
            group=args.group,
            client_id=args.client_id or default_client_id(args.group),
            park_key=key,
            park_retention=retention,
        )
        http = _http_settings(args)
        token = None if args.http_token_file is None else _token(args.http_token_file)
        api_tokens = None if args.api_tokens is None else _api_tokens(args.api_tokens)
    except UsageError as exc:
        return fail("run", str(exc))
    try:
        asyncio.run(_run(options, http, token, api_tokens))
    except StoreError as exc:  # includes DsnError: the store could not be opened
        return fail("run", str(exc), db=redact(args.db))
    except (OSError, ssl.SSLError) as exc:  # the HTTP server could not start
        return fail("run", f"--http {args.http}: {exc.strerror or exc}")
    return 0


def _http_settings(args: argparse.Namespace) -> HttpSettings | None:
    """``--http`` and its files as an ``[http]`` section (None: no server)."""
    if args.http is None:
        for name in ("http_tls_cert", "http_tls_key", "http_token_file", "api_tokens"):
            if getattr(args, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} goes with --http ADDRESS:PORT")
        return None
    host, sep, port = str(args.http).rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--http {args.http!r}: expected ADDRESS:PORT, e.g. 127.0.0.1:9480")
    fields: dict[str, object] = {"bind": host, "port": int(port)}
    for key, value in (("tls_cert_file", args.http_tls_cert), ("tls_key_file", args.http_tls_key)):
        if value is not None:
            fields[key] = str(value)
    try:
        return HttpSettings.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'http'}: {e['msg']}" for e in exc.errors()
        )
        raise UsageError(f"--http: {problems}") from None


def _token(path: Path) -> str:
    try:
        return read_token(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"--http-token-file {path}: {detail}") from None


def _api_tokens(path: Path) -> dict[str, str]:
    from edgegate.central.api import TokenFileError, read_tokens

    try:
        return read_tokens(path)
    except TokenFileError as exc:
        raise UsageError(f"--api-tokens {exc}") from None


async def _run(
    options: SinkOptions,
    http: HttpSettings | None = None,
    token: str | None = None,
    api_tokens: dict[str, str] | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "central_sink_starting",
        broker=options.broker.url,
        db=redact(options.dsn),
        group=options.group,
        client_id=options.client_id,
    )
    async with Sink(options) as sink:
        web = None
        api = None
        try:
            if http is not None:
                from edgegate.central.web import CENTRAL_WEB_PARTS, CentralWeb

                parts = list(CENTRAL_WEB_PARTS)
                if api_tokens is not None:
                    from edgegate.central.api import ParkApi

                    api = await ParkApi.open(options.dsn, api_tokens)
                    parts.append(api.mount)
                    log.info("park_api_tokens", names=sorted(api_tokens))
                files = (http.tls_cert_file, http.tls_key_file)
                cert, key = (None if f is None else Path(f) for f in files)
                web = CentralWeb(sink, http.bind, http.port, cert, key, token, parts=parts)
                await web.start()
            freeze_startup()  # full collections would stall storing and the park API
            await stop.wait()
            log.info("central_sink_stopping")
        finally:
            if web is not None:
                await web.aclose()
            if api is not None:
                await api.aclose()


# ------------------------------------------------------------------------------ publish


def cmd_publish_allowlist(args: argparse.Namespace) -> int:
    name = "publish-allowlist"
    try:
        check_ids(site=args.site, **{f"gate {g!r}": g for g in args.gates})
        if args.version is not None and args.version < 1:
            raise UsageError(f"--version {args.version}: must be at least 1")
        if args.previous is not None and args.delta_from is None:
            raise UsageError("--previous only goes with --delta-from (it makes a delta)")
        if args.delta_from is not None and args.delta_from < 0:
            raise UsageError(f"--delta-from {args.delta_from}: must be at least 0")
        broker = broker_settings(args)
        key = pub.load_signing_key(args.key)
        now = time.time_ns()
        build: Callable[[int], AllowListPublication]
        if args.delta_from is None:
            entries = pub.read_allowlist(args.file, args.timezone)

            def build(version: int) -> AllowListPublication:
                return pub.snapshot_publication(entries, version=version, now_ns=now)

            what = f"snapshot version {{v}} ({len(entries)} entries)"
        else:
            if args.previous is not None:
                delta = pub.diff(
                    pub.read_allowlist(args.previous, args.timezone),
                    pub.read_allowlist(args.file, args.timezone),
                )
                if not delta.upserts and not delta.removals:
                    raise UsageError(
                        f"{args.previous} and {args.file} hold the same entries: no delta"
                    )
            else:
                delta = pub.read_delta(args.file, args.timezone)
            base = args.delta_from

            def build(version: int) -> AllowListPublication:
                return pub.delta_publication(delta, version=version, base_version=base, now_ns=now)

            what = (
                f"delta {base} -> {{v}} ({len(delta.upserts)} upserts,"
                f" {len(delta.removals)} removals)"
            )
            if args.version is not None:
                build(args.version)  # a bad --version is named before the store is touched
        operator = args.operator or _login()
    except (UsageError, pub.PublishError) as exc:
        return fail(name, str(exc))

    def signed(version: int) -> tuple[str, int | None, bytes]:
        publication = build(version)
        return publication.kind, publication.base_version, pub.signed_publication(publication, key)

    try:
        with open_store(args.db) as store:
            made = store.publish_allowlist(
                args.gates,
                signed,
                recorded_by=f"{operator} (publish-allowlist {args.file.name})",
                version=args.version,
            )
    except pub.PublishError as exc:
        return fail(name, str(exc))
    except StoreError as exc:  # includes a version clash: nothing was recorded
        return fail(name, f"--db: {exc}", db=redact(args.db))
    retain = args.delta_from is None
    messages = [pub.Outgoing(args.site, p.gate, "allowlist", p.payload, retain) for p in made]
    taken = {p.version for p in made}
    if len(taken) == 1:  # the usual case: one version for every gate
        shown = f"{what.format(v=made[0].version)} to {', '.join(p.gate for p in made)}"
    else:
        shown = f"{what.format(v='N')} to " + ", ".join(f"{p.gate} (N={p.version})" for p in made)
    try:
        asyncio.run(pub.publish(broker, messages, timeout=args.timeout))
    except pub.PublishError as exc:
        return fail(name, f"{exc} (recorded in --db, not delivered: publish again)")
    kid = pub.signing_key_id(key)
    print(
        f"published allow-list {shown} (site {args.site}), "
        f"{'retained' if retain else 'not retained'}, signed with key id {kid}"
    )
    log.info(
        "allowlist_published",
        kind="snapshot" if retain else "delta",
        versions={p.gate: p.version for p in made},
        base_version=args.delta_from,
        site=args.site,
        operator=operator,
        key_id=kid,
        bytes=len(made[0].payload),
    )
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
