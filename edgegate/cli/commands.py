"""The command modules; each contributes ``register(subparsers)``.

A command line imports only the module of its command (``edgegate run`` does not carry the
central sink's MQTT, TLS and database client code in the daemon's memory); ``--help`` or an
unknown command registers every module, so help and errors list every command.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Registrar = Callable[[Subparsers], None]

#: command name -> (module in edgegate.cli, its registrar functions)
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "accounts": ("accounts_cmd", ("register",)),
    "allowlist": ("allowlist_cmd", ("register",)),
    "central": ("central_cmd", ("register",)),
    "check-config": ("check_config", ("register",)),
    "keys": ("keys_cmd", ("register",)),
    "log": ("log_cmd", ("register",)),
    "replay": ("replay_cmd", ("register",)),
    "run": ("run_cmd", ("register",)),
    "demo": ("run_cmd", ("register",)),
    "simulate": ("run_cmd", ("register_simulate",)),
}


def _registrars(entries: Sequence[tuple[str, tuple[str, ...]]]) -> list[Registrar]:
    out: list[Registrar] = []
    for module_name, functions in entries:
        module = importlib.import_module(f"edgegate.cli.{module_name}")
        out.extend(getattr(module, name) for name in functions)
    return out


def registrars(command: str | None = None) -> list[Registrar]:
    """The registrars needed to parse ``command``: all of them unless it is a known one."""
    if command in COMMANDS:
        return _registrars([COMMANDS[command]])
    unique = dict.fromkeys(COMMANDS.values())
    return _registrars(list(unique))


def action_group(sub: Subparsers, name: str, help_text: str) -> Subparsers:
    """Add the command ``edgegate NAME ACTION ...`` and return its (required) actions'
    subparsers; the action chosen is ``args.NAME_command``."""
    parser = sub.add_parser(name, help=help_text)
    return parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


def add_command(
    sub: Subparsers,
    name: str,
    func: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add the command (or action) ``name``, carried out by ``func``; its options go to the
    parser returned."""
    parser = sub.add_parser(name, help=help, description=description)
    parser.set_defaults(func=func)
    return parser
