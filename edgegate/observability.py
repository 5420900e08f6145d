"""structlog set-up: one JSON object per line, UTC timestamps, context bound per lane.

The daemon logs to stdout (journald takes the lines); other commands log to stderr so their
stdout stays theirs. Libraries' stdlib logging (pymodbus, aiomqtt) is rendered the same way.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import FilteringBoundLogger, Processor

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to JSON lines on ``stream`` (default stdout)."""
    out = stream if stream is not None else sys.stdout
    threshold = _LEVELS[level]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(ensure_ascii=False),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries are chatty at INFO; their warnings and errors are what a technician needs.
    root.setLevel(max(threshold, logging.WARNING))


def get_logger(name: str, **context: Any) -> FilteringBoundLogger:
    """A logger with ``component=name`` and any extra context bound."""
    logger: FilteringBoundLogger = structlog.get_logger(component=name, **context)
    return logger
