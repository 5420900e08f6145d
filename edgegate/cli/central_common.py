"""What the ``edgegate central`` commands share: the failure message and exit code, the
broker options of those that publish and their checks, the store and output options of
those that read central's store, and opening it."""

from __future__ import annotations

import argparse
import ssl
import sys
from pathlib import Path
from typing import Any

from edgegate.allowlist.importer import DEFAULT_TIMEZONE
from edgegate.central.sink import DEFAULT_DSN, DEFAULT_USERNAME, BrokerSettings, BrokerUrlError
from edgegate.central.store import CentralStore, StoreError, open_store, sqlite_path
from edgegate.observability import get_logger
from edgegate.sync.protocol import ProtocolError, check_id

log = get_logger("cli.central")


class UsageError(Exception):
    """A bad argument, caught by the command and reported with ``fail``."""


def fail(command: str, message: str, **fields: Any) -> int:
    """Say on stderr what went wrong with ``edgegate central COMMAND``, log it; exit code 2."""
    print(f"edgegate central {command}: {message}", file=sys.stderr)
    log.error("central_command_failed", command=command, error=message, **fields)
    return 2


def store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        "--db",
        dest="store",
        default=DEFAULT_DSN,
        metavar="DSN",
        help=f"central's store, as given to `central run --db` (default {DEFAULT_DSN})",
    )


def output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--timezone",
        default=DEFAULT_TIMEZONE,
        help=f"zone the times are shown in (default {DEFAULT_TIMEZONE}; JSON is UTC)",
    )


def open_existing(dsn: str) -> CentralStore:
    """The store at ``dsn``; a SQLite file must exist already (reading makes none)."""
    if dsn.startswith("sqlite:") and not Path(sqlite_path(dsn)).is_file():
        raise StoreError(
            f"no store at {dsn} (the --db of `edgegate central run`; it makes the file)"
        )
    return open_store(dsn)


def broker_args(parser: argparse.ArgumentParser) -> None:
    """The options ``broker_settings`` reads: --broker, --username, --password-file, --ca-file."""
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


def broker_settings(args: argparse.Namespace) -> BrokerSettings:
    """The broker of ``broker_args``' options; ``UsageError`` naming what is wrong."""
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


def check_ids(**ids: str) -> None:
    """``UsageError`` naming the first of ``ids`` (option name: value) that is no valid id."""
    for what, value in ids.items():
        try:
            check_id(value, what)
        except ProtocolError as exc:
            raise UsageError(f"--{exc}") from None
