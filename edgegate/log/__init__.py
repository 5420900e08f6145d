"""The gate's durable memory: the append-only, hash-chained event log in SQLite."""

from edgegate.log.eventlog import (
    Effect,
    EventLog,
    GateMismatchError,
    LogClosedError,
    LogError,
    LogWriteError,
)
from edgegate.log.reader import LogReader, StoredEvent, VerifyReport

__all__ = [
    "Effect",
    "EventLog",
    "GateMismatchError",
    "LogClosedError",
    "LogError",
    "LogReader",
    "LogWriteError",
    "StoredEvent",
    "VerifyReport",
]
