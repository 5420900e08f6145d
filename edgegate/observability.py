"""structlog set-up: one JSON object per line, UTC timestamps, context bound per lane."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog (and stdlib logging of libraries) to JSON lines on ``stream``."""
    out = stream if stream is not None else sys.stdout
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        logging.Formatter(
            '{"event": "%(message)s", "logger": "%(name)s", "level": "%(levelname)s"}'
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.WARNING))


def get_logger(name: str, **context: Any) -> structlog.stdlib.BoundLogger:
    """A logger with ``component=name`` and any extra context bound."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(component=name, **context)
    return logger
