"""``edgegate replay verify``: a gate's log proven on its own (the hash chain, the append-only
triggers) and, given central's copy, against it.

A log verified alone can still have been truncated or rewritten from some seq on and
re-chained (the known limit of local verification). Central's copy closes that gap for what
central acknowledged: every event central holds for the gate must be in the gate's log,
identical (seq, times, boot, type, lane, version, payload, hashes), and the log must reach
central's head.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from edgegate.log.chain import ChainFault, ChainVerifier, Row
from edgegate.replay.source import LogSource, Progress, Source

_FIELDS = (
    "seq",
    "wall_ns",
    "mono_ns",
    "boot_id",
    "type",
    "lane",
    "version",
    "data",
    "prev_hash",
    "hash",
)


@dataclass(frozen=True, slots=True)
class Difference:
    """The first place where the gate's log and central's copy disagree."""

    seq: int
    problem: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    gate_id: str
    events: int
    head_seq: int
    fault: ChainFault | None
    missing_triggers: tuple[str, ...]
    central_head: int | None = None
    """Central's head for the gate (None: not compared)."""
    compared: int = 0
    """Events central holds that were compared."""
    difference: Difference | None = None

    @property
    def ok(self) -> bool:
        return self.fault is None and not self.missing_triggers and self.difference is None

    def to_json(self) -> dict[str, object]:
        """``{"ok", "gate", "events", "head_seq", "chain_fault": {"seq", "problem"} | None,
        "missing_triggers", "central": {"head_seq", "compared", "difference"} | None}``."""
        return {
            "ok": self.ok,
            "gate": self.gate_id,
            "events": self.events,
            "head_seq": self.head_seq,
            "chain_fault": None
            if self.fault is None
            else {"seq": self.fault.seq, "problem": self.fault.problem},
            "missing_triggers": list(self.missing_triggers),
            "central": None
            if self.central_head is None
            else {
                "head_seq": self.central_head,
                "compared": self.compared,
                "difference": None
                if self.difference is None
                else {"seq": self.difference.seq, "problem": self.difference.problem},
            },
        }


def verify(
    log: LogSource, central: Source | None = None, *, progress: Progress | None = None
) -> VerifyResult:
    """The log's chain (``LogReader.verify``) and, with ``central``, the comparison."""
    if central is None:
        report = log.reader.verify()
        if progress is not None:
            progress(report.events)
        return VerifyResult(
            report.gate_id, report.events, report.head_seq, report.fault, report.missing_triggers
        )
    # One pass over the log: the chain (as log.reader.verify) and the comparison.
    verifier = ChainVerifier(log.gate_id, *log.anchor())
    central_head = central.head()[0]
    theirs = _rows(central, central_head)
    pending = next(theirs, None)
    fault: ChainFault | None = None
    difference: Difference | None = None
    compared = 0
    read = last_seq = 0
    for rows in log.batches():
        last_seq = rows[-1][0]
        if fault is None:
            fault = verifier.feed(rows)
        for row in rows:
            if difference is not None or pending is None:
                break
            if row[0] < pending[0]:
                continue  # central holds no copy of it (pruned, or never sent)
            if row[0] > pending[0]:
                difference = Difference(
                    pending[0], f"seq {pending[0]} is in central's copy but not in the gate's log"
                )
                break
            problem = _differs(row, pending)
            if problem is not None:
                difference = Difference(row[0], problem)
                break
            compared += 1
            pending = next(theirs, None)
        read += len(rows)
        if progress is not None:
            progress(read)
        if fault is not None and (difference is not None or pending is None):
            break
    if difference is None and pending is not None:
        difference = Difference(
            pending[0],
            f"the gate's log ends at seq {last_seq} but central holds events up to seq "
            f"{central_head}: truncated",
        )
    return VerifyResult(
        log.gate_id,
        verifier.count,
        verifier.last_seq,
        fault,
        log.reader.missing_triggers(),
        central_head,
        compared,
        difference,
    )


def _rows(source: Source, upto: int) -> Iterator[Row]:
    for rows in source.batches():
        for row in rows:
            if row[0] > upto:
                return
            yield row


def _differs(ours: Row, theirs: Row) -> str | None:
    for name, a, b in zip(_FIELDS, ours, theirs, strict=True):
        if (bytes(a) if isinstance(a, bytes | memoryview) else a) != (
            bytes(b) if isinstance(b, bytes | memoryview) else b
        ):
            return f"seq {ours[0]}: {name} differs between the gate's log and central's copy"
    return None
