"""``edgegate central pull URL``: the command line of ``edgegate.central.pull``.

Exit codes: 0 done, 1 rows were refused as unverifiable (dead-lettered), 2 anything else that
stopped the pull (unreachable gate, bad token, malformed payload, gap, database error), with a
message naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgegate.central.pull import (
    DEFAULT_DSN,
    DEFAULT_INTERVAL,
    DEFAULT_LIMIT,
    DEFAULT_TIMEOUT,
    PullClient,
    Puller,
    PullError,
    PullReport,
)
from edgegate.central.store import StoreError, open_store
from edgegate.cli.commands import Subparsers, add_command
from edgegate.observability import get_logger
from edgegate.sync.pull_api import MAX_LIMIT

log = get_logger("central.pull")

#: What the ``pull_done`` log line says of the report, in this order.
_DONE_FIELDS = ("url", "gate", "stored", "duplicates", "central_head")


def register(central_subparsers: Subparsers) -> None:
    """Add ``pull`` to the ``edgegate central`` sub-commands."""
    p = add_command(
        central_subparsers,
        "pull",
        run,
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
    for flag, default, what in (
        ("--interval", DEFAULT_INTERVAL, "seconds between polls with --follow"),
        ("--timeout", DEFAULT_TIMEOUT, "seconds to wait for the gate per request"),
    ):
        p.add_argument(flag, type=_seconds, default=default, help=f"{what} (default {default:g})")
    p.add_argument(
        "--ca-file",
        "--cafile",
        dest="cafile",
        type=Path,
        help="CA certificate to verify an https gate with",
    )


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
    with client, store, _Display(out) as display:
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
    done = dataclasses.asdict(report)
    log.info("pull_done", **{name: done[name] for name in _DONE_FIELDS})
    return 0
