"""``edgegate central web`` (the control room's dashboard) and ``edgegate central accounts``
(its accounts: ``viewer`` and ``operator``). See docs/dashboard.md.

Exit 0 when stopped by SIGTERM/SIGINT, 2 bad input, an unusable store, accounts file or
address, with a message naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import stat
import sys
from pathlib import Path

from edgegate.allowlist.importer import DEFAULT_TIMEZONE
from edgegate.central import publish as pub
from edgegate.central.dashboard import Dashboard, DashboardRole, DashboardSettings, Publishing
from edgegate.central.store import StoreError, redact
from edgegate.cli import central_blacklist, central_park
from edgegate.cli.accounts_cmd import register_accounts
from edgegate.cli.central_common import UsageError, fail, open_existing, store_arg
from edgegate.cli.commands import Subparsers, add_command
from edgegate.clock import SystemClock
from edgegate.console.accounts import AccountsError, AccountStore
from edgegate.heap import freeze_startup
from edgegate.hosts import is_loopback
from edgegate.observability import get_logger
from edgegate.web import HttpServer
from edgegate.web.tls import TlsFileError, server_tls

log = get_logger("cli.central")

DEFAULT_PORT = 9490
DEFAULTS = DashboardSettings()


def register(central: Subparsers) -> None:
    """Add ``web`` and ``accounts`` to ``edgegate central``."""
    web = add_command(
        central,
        "web",
        cmd_web,
        help="serve the control room's dashboard (park, gates, roll call, proposals...)",
        description="Pages in Chinese (English on a click), updated live, for the accounts "
        "of --accounts (`edgegate central accounts add`). With --key, --site and --broker, "
        "operators can approve blacklist proposals (published to the gates as signed "
        "deltas); without them they can only dismiss. Runs until SIGTERM or SIGINT.",
    )
    store_arg(web)
    web.add_argument(
        "--accounts", type=Path, required=True, metavar="FILE", help="the dashboard's accounts"
    )
    web.add_argument("--bind", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    web.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    web.add_argument("--tls-cert", type=Path, metavar="FILE", help="HTTPS certificate (PEM)")
    web.add_argument("--tls-key", type=Path, metavar="FILE", help="HTTPS key (PEM)")
    web.add_argument(
        "--timezone",
        default=DEFAULT_TIMEZONE,
        help=f"zone the pages show times in (default {DEFAULT_TIMEZONE})",
    )
    web.add_argument(
        "--dwell-limit",
        action="append",
        default=[],
        metavar="CATEGORY=DURATION",
        help="central's dwell limit of a category, as for `central roll-call`",
    )
    web.add_argument(
        "--server-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name (or address) browsers use for this server, if not the --bind "
        "address (repeatable); requests naming any other Host are refused",
    )
    web.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULTS.max_connections,
        metavar="N",
        help=f"open connections in all (default {DEFAULTS.max_connections})",
    )
    web.add_argument(
        "--max-unauthenticated",
        type=int,
        default=DEFAULTS.max_unauthenticated,
        metavar="N",
        help="of those, connections not logged in, from all addresses (default "
        f"{DEFAULTS.max_unauthenticated}); the rest is kept for logged-in users",
    )
    central_blacklist._publish_args(web)

    register_accounts(
        central,
        "accounts",
        "manage the control-room dashboard's accounts (viewer, operator)",
        DashboardRole,
        gate_config=False,
        title="dashboard accounts",
    )


def cmd_web(args: argparse.Namespace) -> int:
    try:
        if not 0 <= args.port <= 65535:
            raise UsageError(f"--port {args.port}: expected 0-65535")
        if (args.tls_cert is None) != (args.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together")
        limits = central_park._dwell_limits(args.dwell_limit)
        zone = central_park._zone(args.timezone).key
        publishing = None
        if args.key or args.site or args.broker or args.gates:
            publisher = central_blacklist._Publisher(args)
            publishing = Publishing(
                publisher.site,
                publisher.key,
                publisher.broker,
                publisher.timeout,
                None if publisher.gates is None else tuple(publisher.gates),
            )
        _check_accounts_file(args.accounts)
        accounts = AccountStore.open(args.accounts, SystemClock().mono_ns, DashboardRole)
    except (UsageError, pub.PublishError, AccountsError) as exc:
        return fail("web", str(exc))
    if not accounts.names():
        _warn(f"--accounts {args.accounts}: no accounts: nobody can log in ({_ADD_HINT})")
    if args.tls_cert is None and not is_loopback(args.bind):
        _warn(
            f"--bind {args.bind} without --tls-cert/--tls-key: passwords, session cookies "
            "and plates cross the network unencrypted; serve HTTPS off 127.0.0.1"
        )
    try:
        settings = DashboardSettings(
            timezone=zone,
            dwell_limits=limits,
            server_names=tuple(args.server_name),
            max_connections=args.max_connections,
            max_unauthenticated=args.max_unauthenticated,
            max_streams=min(DEFAULTS.max_streams, args.max_connections - args.max_unauthenticated),
        )
    except ValueError as exc:
        return fail("web", f"--max-connections/--max-unauthenticated: {exc}")
    try:
        asyncio.run(_serve(args, accounts, settings, publishing))
    except StoreError as exc:
        return fail("web", str(exc), db=redact(args.store))
    except TlsFileError as exc:
        return fail("web", f"--tls-cert/--tls-key: {exc}")
    except (OSError, ssl.SSLError) as exc:
        return fail("web", f"{args.bind}:{args.port}: {exc.strerror or exc}")
    return 0


_ADD_HINT = "add one with `edgegate central accounts add NAME --role operator --file FILE`"


def _check_accounts_file(path: Path) -> None:
    """A missing file is refused (a typo would start a dashboard nobody can log into); one
    readable by others is warned about (it holds password hashes; as the gate console, which
    also accepts it, the file `central accounts` writes is 0600)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(
            f"--accounts {path}: no such file ({_ADD_HINT.replace('FILE', str(path))})"
        ) from None
    except OSError as exc:
        raise UsageError(f"--accounts {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"--accounts {path}: not a regular file")
    if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
        _warn(
            f"--accounts {path}: readable by other users (mode {stat.S_IMODE(mode):04o}): "
            f"it holds password hashes; chmod 600 {path}"
        )


def _warn(message: str) -> None:
    print(f"edgegate central web: warning: {message}", file=sys.stderr, flush=True)
    log.warning("dashboard_setup_unsafe", problem=message)


async def _serve(
    args: argparse.Namespace,
    accounts: AccountStore,
    settings: DashboardSettings,
    publishing: Publishing | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tls = await server_tls(args.tls_cert, args.tls_key)
    if args.store.startswith("sqlite:"):
        open_existing(args.store).close()  # an existing store only: reading makes none
    dashboard = await Dashboard.open(args.store, accounts, settings=settings, publishing=publishing)
    try:
        server = HttpServer(args.bind, args.port, ssl_context=tls, limits=settings.server_limits())
        dashboard.mount(server)
        async with server:
            log.info(
                "dashboard_serving",
                url=server.url,
                db=redact(args.store),
                accounts=str(args.accounts),
                publishing=publishing is not None,
            )
            print(f"edgegate central web: serving {server.url}", flush=True)
            freeze_startup()  # full collections would stall the live updates
            await stop.wait()
    finally:
        await dashboard.aclose()
