"""What the ``edgegate central`` commands share: the failure message and exit code, the
store and output options of the commands that read central's store, and opening it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgegate.allowlist.importer import DEFAULT_TIMEZONE
from edgegate.central.sink import DEFAULT_DSN
from edgegate.central.store import CentralStore, StoreError, open_store, sqlite_path
from edgegate.observability import get_logger

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
