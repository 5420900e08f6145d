"""``edgegate log verify|tail``: check and read a gate's event log."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgegate.allowlist import store as allowlist_store
from edgegate.allowlist.store import AllowListState, Tampering
from edgegate.cli.commands import Subparsers, action_group
from edgegate.log.chain import ChainFault, ChainVerifier
from edgegate.log.eventlog import LogError
from edgegate.log.reader import LogReader
from edgegate.log.render import to_json_dict, to_text
from edgegate.observability import get_logger

log = get_logger("cli.log")


def register(sub: Subparsers) -> None:
    log_sub = action_group(sub, "log", "verify and read a gate's event log")

    verify = log_sub.add_parser(
        "verify",
        help="check seq continuity and the hash chain (exit 1 naming the first bad seq)",
        description=(
            "Check seq continuity and the hash chain of the whole kept log: the file and, "
            "with [log.retention], its sealed segments and archives beside it (DB.segments/), "
            "from the genesis or the anchor the last removed archive left."
        ),
    )
    verify.add_argument("db", type=Path, help="the gate's SQLite log file")
    verify.set_defaults(func=cmd_verify)

    tail = log_sub.add_parser("tail", help="print the last events")
    tail.add_argument("db", type=Path, help="the gate's SQLite log file")
    tail.add_argument("-n", type=_count, default=10, metavar="N", help="how many (default 10)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument(
        "--interval", type=_seconds, default=0.2, help="poll interval with --follow (seconds)"
    )
    tail.set_defaults(func=cmd_tail)


def _count(text: str) -> int:
    """A count of events: 0 or more; more than SQLite can count means all of them."""
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return min(n, 2**63 - 1)


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600, got {text}")
    return value


def _reading(db: Path, read: Callable[[LogReader], int]) -> int:
    """``read`` run on the log at ``db``; exit 2 naming the file if it cannot be read."""
    try:
        reader = LogReader(db)
    except LogError as exc:
        return _fail(db, exc)
    with reader:
        try:
            return read(reader)
        except LogError as exc:
            return _fail(db, exc)


def _fail(db: Path, exc: LogError) -> int:
    """The file cannot be read (exit 2): one line naming it and the problem."""
    print(f"edgegate log: {exc}", file=sys.stderr)
    log.error("log_read_failed", path=str(db), error=str(exc))
    return 2


def _changed(reader: LogReader) -> int:
    print(
        f"edgegate log: {reader.path} changed while it was read (a gate opened or closed it); "
        "run the command again",
        file=sys.stderr,
    )
    log.error("log_changed_while_read", path=str(reader.path))
    return 2


def cmd_verify(args: argparse.Namespace) -> int:
    return _reading(args.db, _verify_log)


def _verify_log(reader: LogReader) -> int:
    fault, missing, verifier = _verify(reader)
    if reader.changed():
        return _changed(reader)
    gate = reader.gate_id
    allowlist_problem, allowlist_ok = _verify_allowlist(reader)
    if fault is not None:
        print(f"FAILED gate {gate}: first bad seq {fault.seq}: {fault.problem}")
        log.error("log_verify_failed", gate=gate, seq=fault.seq, problem=fault.problem)
    if missing:
        print(f"FAILED gate {gate}: append-only triggers missing: {', '.join(missing)}")
        log.error("log_verify_failed", gate=gate, missing_triggers=list(missing))
    if allowlist_problem is not None:
        print(f"FAILED gate {gate}: allow-list: {allowlist_problem}")
        log.error("allowlist_verify_failed", gate=gate, problem=allowlist_problem)
    if fault is not None or missing or allowlist_problem is not None:
        return 1
    first = verifier.last_seq - verifier.count + 1
    anchored = "" if first == 1 else " (chained from the anchor the last removed archive left)"
    print(
        f"OK gate {gate}: {verifier.count} events, seq {first}..{verifier.last_seq}, "
        f"chain verified{anchored}"
    )
    print(f"OK gate {gate}: {allowlist_ok}")
    log.info("log_verified", gate=gate, events=verifier.count, head=verifier.last_seq)
    return 0


def _verify_allowlist(reader: LogReader) -> tuple[str | None, str]:
    """(what is wrong with the stored allow-list or None, what was verified)."""

    def read(
        conn: sqlite3.Connection,
    ) -> tuple[Tampering | None, AllowListState | None, int, bool]:
        finding = allowlist_store.verify(conn)
        state = allowlist_store.read_state(conn)
        count = int(conn.execute("SELECT COUNT(*) FROM allowlist_entry").fetchone()[0])
        return finding, state, count, allowlist_store.legacy_sealed(conn)

    try:
        finding, state, count, legacy = reader.read_with(read)
    except sqlite3.Error as exc:
        return f"cannot be read: {exc}", ""
    if finding is not None:
        return finding.described(), ""
    if state is None:
        return None, "no allow-list stored"
    checked = "seal verified"
    if legacy:
        # Stored before the seal: the daemon seals it when it next opens the file.
        checked = (
            "stored before the seal, no content hash recorded (nothing to check)"
            if state.content_hash is None
            else "stored before the seal, its content hash (entries' data) verified"
        )
    return None, f"allow-list version {state.version}, {count} entries, {checked}"


def _verify(reader: LogReader) -> tuple[ChainFault | None, tuple[str, ...], ChainVerifier]:
    try:
        total = reader.count()
    except LogError:
        total = 0  # damaged: reading in seq order names the last seq that could be read
    # From the anchor: the genesis, or the end of the last archive [log.retention] removed.
    anchor_seq, anchor_hash = reader.anchor()
    verifier = ChainVerifier(reader.gate_id, anchor_seq, anchor_hash)
    fault = None
    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=not sys.stderr.isatty() or total < 200_000,
        console=None,
    ) as progress:
        task = progress.add_task("verify", total=total)
        for rows in reader.iter_rows(anchor_seq):
            fault = verifier.feed(rows)
            if fault is not None:
                break
            progress.advance(task, len(rows))
    return fault, reader.missing_triggers(), verifier


def cmd_tail(args: argparse.Namespace) -> int:
    return _reading(args.db, lambda reader: _tail(reader, args))


def _tail(reader: LogReader, args: argparse.Namespace) -> int:
    render = (lambda s: json.dumps(to_json_dict(s), ensure_ascii=False)) if args.json else to_text
    out = sys.stdout
    events = reader.tail(args.n)
    for stored in events:
        out.write(render(stored) + "\n")
    out.flush()
    if not args.follow:
        return 0
    last = events[-1].seq if events else reader.head()[0]
    try:
        while True:
            batch = reader.read(after=last, limit=1000)
            for stored in batch:
                out.write(render(stored) + "\n")
            if batch:
                last = batch[-1].seq
                out.flush()
            elif reader.changed():
                reader.reopen()  # a gate opened the log read as immutable: read through it
            else:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
