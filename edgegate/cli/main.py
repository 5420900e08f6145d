"""The ``edgegate`` command line: one sub-command module per area.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` to a callable ``(argparse.Namespace) -> int`` returning the exit code.
Exit codes: 0 success, 1 a check failed (e.g. the log does not verify), 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from edgegate import __version__

CommandFunc = Callable[[argparse.Namespace], int]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that command's module is imported (see
    :mod:`edgegate.cli.commands`)."""
    from edgegate.cli import commands

    parser = argparse.ArgumentParser(
        prog="edgegate",
        description="Vehicle checkpoint controller for a closed chemical park.",
    )
    parser.add_argument("--version", action="version", version=f"edgegate {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="threshold of the JSON log lines (default: info)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in commands.registrars(command):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from edgegate.observability import configure_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_word(argv))
    args = parser.parse_args(argv)
    func: CommandFunc | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    # The daemon logs to stdout for journald; other commands keep stdout for their output.
    configure_logging(level=args.log_level, stream=getattr(args, "log_stream", sys.stderr))
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _command_word(argv: Sequence[str]) -> str | None:
    """The sub-command named on the line (the first word after the global options)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


if __name__ == "__main__":
    sys.exit(main())
