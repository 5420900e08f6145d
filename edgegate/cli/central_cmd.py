"""``edgegate central run|publish-allowlist|command``: the central side of sync.

``edgegate central pull`` is ``edgegate.cli.central_pull``. Other modules add actions to
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
from typing import cast

from pydantic import ValidationError

from edgegate.allowlist.importer import DEFAULT_TIMEZONE
from edgegate.central import publish as pub
from edgegate.central.replies import wait_for_reply
from edgegate.central.sink import (
    DEFAULT_DSN,
    DEFAULT_GROUP,
    DEFAULT_USERNAME,
    BrokerSettings,
    BrokerUrlError,
    Sink,
    SinkOptions,
    default_client_id,
)
from edgegate.central.store import CentralStore, StoreError, open_store, redact
from edgegate.cli import (
    central_blacklist,
    central_park,
    central_pull,
    central_tools,
    central_web,
)
from edgegate.cli.central_common import UsageError, fail
from edgegate.cli.commands import action_group
from edgegate.config import parse_duration
from edgegate.config.models import HttpSettings
from edgegate.observability import get_logger
from edgegate.sync.protocol import ProtocolError, check_id
from edgegate.sync.signing import (
    MAX_COMMAND_LIFETIME_NS,
    AllowListPublication,
    CommandAction,
    SignedCommand,
)
from edgegate.web.monitoring import read_token

log = get_logger("cli.central")

CentralRegistrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

CENTRAL_COMMANDS: list[CentralRegistrar] = []
"""Extra ``edgegate central`` actions: each is called with the ``central`` subparsers."""

_ACTIONS: tuple[str, ...] = ("open-lane", "release-lane", "incident-on", "incident-off")
_LANE_ACTIONS = ("open-lane", "release-lane")
WAIT_TIMEOUT_S = 60.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    central = action_group(
        sub, "central", "the central platform: sink, allow-list publication, commands"
    )
    _register_run(central)
    _register_publish_allowlist(central)
    _register_command(central)
    for registrar in (
        *CENTRAL_COMMANDS,
        central_pull.register,
        central_park.register,
        central_tools.register,
        central_blacklist.register,
        central_web.register,
    ):
        registrar(central)


def _broker_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broker")
    group.add_argument(
        "--broker",
        required=True,
        metavar="URL",
        help="mqtts://HOST:PORT (TLS, port 8883 by default) or mqtt://HOST:PORT",
    )
    group.add_argument(
        "--username", default=DEFAULT_USERNAME, help=f"MQTT user (default {DEFAULT_USERNAME})"
    )
    group.add_argument(
        "--password-file", type=Path, metavar="FILE", help="file holding the MQTT password"
    )
    group.add_argument(
        "--ca-file", type=Path, metavar="FILE", help="CA certificate of the broker (mqtts)"
    )


def _register_run(central: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = central.add_parser(
        "run",
        help="run the central sink: store every gate's events, ack them (JSON logs on stdout)",
        description="Runs until SIGTERM or SIGINT. Several instances with the same --group "
        "share the gates' batches (MQTT shared subscription); each needs its own stable "
        "--client-id, and with more than one they must share one database "
        "(PostgreSQL, or one SQLite file on one machine).",
    )
    _broker_args(run)
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
        "--signing-key",
        type=Path,
        metavar="FILE",
        help="central's private key (PEM): an appointment consumed at one gate is then "
        "published at once to the others as a signed delta (default: park-wide consumption "
        "off, said at start)",
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
    run.set_defaults(func=cmd_run, log_stream=sys.stdout)


def _register_publish_allowlist(
    central: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    p = central.add_parser(
        "publish-allowlist",
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
    _broker_args(p)
    p.set_defaults(func=cmd_publish_allowlist)


def _register_command(central: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = central.add_parser(
        "command",
        help="send a signed command to a gate (open or release a lane, incident mode on/off)",
        description="open-lane opens a lane and holds it open until release-lane (or a guard) "
        "releases it; with --once it opens for one vehicle and then closes as after any pass. "
        "With --wait, the gate's answer is read from central's store (the sink of "
        "`edgegate central run --db` must be running): exit 0 when the gate accepted the "
        "command, 1 when it refused it or could not carry it out (the reason is printed), "
        "3 when no answer came in time.",
    )
    p.add_argument("gate", metavar="GATE", help="the gate id")
    p.add_argument("action", metavar="ACTION", choices=_ACTIONS, help=", ".join(_ACTIONS))
    p.add_argument("--lane", help="the lane (open-lane and release-lane only)")
    p.add_argument(
        "--once", action="store_true", help="open-lane: for one vehicle only, then back to normal"
    )
    p.add_argument("--reason", default="", help="why (required for open-lane)")
    p.add_argument("--operator", required=True, help="who gives the command")
    p.add_argument("--key", type=Path, required=True, help="central's private key (PEM)")
    p.add_argument("--site", required=True, help="the gate's site id")
    p.add_argument(
        "--expires",
        default="5min",
        metavar="DURATION",
        help="how long the command stays valid, e.g. 90s, 5min (default 5min, at most 1h)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the gate to accept or refuse the command (read from --db)",
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=WAIT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"with --wait: how long to wait for the gate's answer (default {WAIT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--db",
        default=DEFAULT_DSN,
        metavar="DSN",
        help=f"with --wait: central's store, as given to `central run` (default {DEFAULT_DSN})",
    )
    _broker_args(p)
    p.set_defaults(func=cmd_command)


# ------------------------------------------------------------------------------ helpers


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read password file {path}: {detail}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise UsageError(f"password file {path} is empty")
    return password


def _check_ca_file(path: Path | None) -> None:
    """Refuse an unusable CA file now: the sink would otherwise retry its TLS forever."""
    if path is None:
        return
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--ca-file {path}: {exc.strerror or exc}") from None


def _broker(args: argparse.Namespace) -> BrokerSettings:
    _check_ca_file(args.ca_file)
    try:
        return BrokerSettings.from_url(
            args.broker,
            username=args.username or None,
            password=_password(args.password_file),
            ca_file=args.ca_file,
        )
    except BrokerUrlError as exc:
        raise UsageError(str(exc)) from None


def _check_ids(**ids: str) -> None:
    for what, value in ids.items():
        try:
            check_id(value, what)
        except ProtocolError as exc:
            raise UsageError(f"--{exc}") from None


# ------------------------------------------------------------------------------ run


def cmd_run(args: argparse.Namespace) -> int:
    try:
        _check_ids(group=args.group)
        key = None
        if args.signing_key is not None:
            try:
                key = pub.load_signing_key(args.signing_key)
            except pub.PublishError as exc:
                raise UsageError(f"--signing-key: {exc}") from None
        options = SinkOptions(
            _broker(args),
            dsn=args.db,
            group=args.group,
            client_id=args.client_id or default_client_id(args.group),
            signing_key=key,
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
        _check_ids(site=args.site, **{f"gate {g!r}": g for g in args.gates})
        if args.version is not None and args.version < 1:
            raise UsageError(f"--version {args.version}: must be at least 1")
        if args.previous is not None and args.delta_from is None:
            raise UsageError("--previous only goes with --delta-from (it makes a delta)")
        if args.delta_from is not None and args.delta_from < 0:
            raise UsageError(f"--delta-from {args.delta_from}: must be at least 0")
        broker = _broker(args)
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


def cmd_command(args: argparse.Namespace) -> int:
    name = "command"
    try:
        _check_ids(site=args.site, gate=args.gate)
        try:
            lifetime = parse_duration(args.expires)
        except ValueError as exc:
            raise UsageError(f"--expires: {exc}") from None
        lifetime_ns = int(lifetime.total_seconds() * 1e9)
        if lifetime_ns <= 0 or lifetime_ns > MAX_COMMAND_LIFETIME_NS:
            raise UsageError(
                f"--expires {args.expires}: must be more than 0 and at most "
                f"{MAX_COMMAND_LIFETIME_NS // 10**9 // 60} min"
            )
        if args.action in _LANE_ACTIONS and not args.lane:
            raise UsageError(f"{args.action} needs --lane (the lane it acts on)")
        if args.action == "open-lane" and not args.reason.strip():
            raise UsageError("open-lane needs --reason (it is logged at the gate)")
        if args.action not in _LANE_ACTIONS and args.lane:
            raise UsageError(f"{args.action} applies to the whole gate: drop --lane")
        if args.once and args.action != "open-lane":
            raise UsageError("--once goes with open-lane only")
        if args.wait and not args.wait_timeout > 0:
            raise UsageError(f"--wait-timeout {args.wait_timeout:g}: must be more than 0")
        action = cast(CommandAction, "open-lane-once" if args.once else args.action)
        broker = _broker(args)
        key = pub.load_signing_key(args.key)
        try:
            command = SignedCommand.create(
                args.gate,
                action,
                lane=args.lane,
                reason=args.reason,
                operator=args.operator,
                now_ns=time.time_ns(),
                lifetime_ns=lifetime_ns,
            )
        except ProtocolError as exc:
            raise UsageError(str(exc)) from None
        payload = pub.signed_command(command, key)
    except (UsageError, pub.PublishError) as exc:
        return fail(name, str(exc))
    store: CentralStore | None = None
    since = 0
    if args.wait:
        try:
            store = open_store(args.db)
            since = store.head(args.gate)[0]  # the gate's reply comes after this
        except StoreError as exc:
            if store is not None:
                store.close()
            return fail(name, f"--db: {exc}", db=redact(args.db))
    try:
        message = pub.Outgoing(args.site, args.gate, "commands", payload, retain=False)
        try:
            asyncio.run(pub.publish(broker, [message], timeout=args.timeout))
        except pub.PublishError as exc:
            return fail(name, str(exc), command_id=command.id)
        print(command.id, flush=True)
        _log_published(args, command, pub.signing_key_id(key))
        if store is None:
            return 0
        return _await_reply(args, command, store, since)
    finally:
        if store is not None:
            store.close()


def _log_published(args: argparse.Namespace, command: SignedCommand, key_id: str) -> None:
    log.info(
        "command_published",
        command_id=command.id,
        gate=args.gate,
        site=args.site,
        action=command.action,
        lane=command.lane,
        operator=command.operator,
        expires_at_ns=command.expires_at_ns,
        key_id=key_id,
    )


def _await_reply(
    args: argparse.Namespace, command: SignedCommand, store: CentralStore, since: int
) -> int:
    """Exit 0 when the gate accepted ``command``; 1 when it refused it or could not carry it
    out; 3 when central's store shows no answer within ``--wait-timeout``."""
    gate = args.gate
    try:
        reply = wait_for_reply(store, gate, command.id, after=since, timeout=args.wait_timeout)
    except StoreError as exc:
        return fail("command", f"--db: {exc}", db=redact(args.db), command_id=command.id)
    if reply is None:
        print(
            f"edgegate central command: no answer from gate {gate} to command {command.id} "
            f"within {args.wait_timeout:g} s (is the gate online, and is `edgegate central run "
            f"--db {redact(args.db)}` storing its events?)",
            file=sys.stderr,
        )
        log.error("command_unanswered", command_id=command.id, gate=gate)
        return 3
    if reply.outcome == "accepted":
        print(f"accepted by gate {gate} (seq {reply.seq})")
        log.info("command_accepted", command_id=command.id, gate=gate, seq=reply.seq)
        return 0
    what = "refused" if reply.outcome == "refused" else "accepted but could not carry out"
    print(
        f"edgegate central command: gate {gate} {what} command {command.id}: "
        f"{reply.code}: {reply.message} (seq {reply.seq})",
        file=sys.stderr,
    )
    log.error(
        f"command_{reply.outcome}",
        command_id=command.id,
        gate=gate,
        seq=reply.seq,
        code=reply.code,
        error=reply.message,
    )
    return 1
