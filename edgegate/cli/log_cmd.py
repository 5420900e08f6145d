"""``edgegate log verify|tail``: check and read a gate's event log."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgegate.allowlist import store as allowlist_store
from edgegate.log.chain import GENESIS_HASH, ChainVerifier
from edgegate.log.eventlog import LogError
from edgegate.log.reader import LogReader
from edgegate.log.render import to_json_dict, to_text
from edgegate.observability import get_logger

log = get_logger("cli.log")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("log", help="verify and read a gate's event log")
    log_sub = parser.add_subparsers(dest="log_command", metavar="ACTION", required=True)

    verify = log_sub.add_parser(
        "verify",
        help="check seq continuity and the hash chain (exit 1 naming the first bad seq)",
    )
    verify.add_argument("db", type=Path, help="the gate's SQLite log file")
    verify.set_defaults(func=cmd_verify)

    tail = log_sub.add_parser("tail", help="print the last events")
    tail.add_argument("db", type=Path, help="the gate's SQLite log file")
    tail.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument(
        "--interval", type=float, default=0.2, help="poll interval with --follow (seconds)"
    )
    tail.set_defaults(func=cmd_tail)


def _open(db: Path) -> LogReader | None:
    try:
        return LogReader(db)
    except LogError as exc:
        print(f"edgegate log: {exc}", file=sys.stderr)
        log.error("log_open_failed", path=str(db), error=str(exc))
        return None


def cmd_verify(args: argparse.Namespace) -> int:
    reader = _open(args.db)
    if reader is None:
        return 2
    with reader:
        total = reader.count()
        verifier = ChainVerifier(reader.gate_id, 0, GENESIS_HASH)
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
            for rows in reader.iter_rows():
                fault = verifier.feed(rows)
                if fault is not None:
                    break
                progress.advance(task, len(rows))
        missing = reader.missing_triggers()
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
    print(f"OK gate {gate}: {verifier.count} events, seq 1..{verifier.last_seq}, chain verified")
    print(f"OK gate {gate}: {allowlist_ok}")
    log.info("log_verified", gate=gate, events=verifier.count, head=verifier.last_seq)
    return 0


def _verify_allowlist(reader: LogReader) -> tuple[str | None, str]:
    """(what is wrong with the stored allow-list or None, what was verified)."""
    conn = reader._conn  # the reader's read-only connection
    try:
        finding = allowlist_store.verify(conn)
        state = allowlist_store.read_state(conn)
        count = conn.execute("SELECT COUNT(*) FROM allowlist_entry").fetchone()[0]
        legacy = allowlist_store.legacy_sealed(conn)
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


def cmd_tail(args: argparse.Namespace) -> int:
    reader = _open(args.db)
    if reader is None:
        return 2
    render = (lambda s: json.dumps(to_json_dict(s), ensure_ascii=False)) if args.json else to_text
    out = sys.stdout
    with reader:
        events = reader.tail(max(args.n, 0))
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
                else:
                    time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
