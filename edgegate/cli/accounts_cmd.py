"""``edgegate accounts add|list|remove|passwd``: the guard's console accounts (and, with
other roles, ``edgegate central accounts``: the control-room dashboard's).

The file is ``--file``, else ``[console].accounts_file`` of ``--config``. The daemon re-reads
it when it changes: no restart is needed to add a guard.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgegate.cli.commands import Subparsers, action_group
from edgegate.config import ConfigError, load_config
from edgegate.console.accounts import (
    Account,
    AccountsError,
    Roles,
    check_name,
    hash_password,
    read_accounts,
    weak_password,
    write_accounts,
)
from edgegate.console.desk import Role
from edgegate.observability import get_logger

log = get_logger("cli.accounts")


def register(sub: Subparsers) -> None:
    register_accounts(sub, "accounts", "manage the guard's console accounts", Role)


def register_accounts(
    sub: Subparsers,
    command: str,
    what: str,
    roles: Roles,
    *,
    gate_config: bool = True,
    title: str = "console accounts",
) -> None:
    """Add ``COMMAND add|list|remove|passwd`` for an accounts file of ``roles`` (the guard's
    console; central's dashboard, whose file is named with ``--file`` only)."""
    acc_sub = action_group(sub, command, what)

    def common(parser: argparse.ArgumentParser) -> None:
        where = parser.add_mutually_exclusive_group(required=not gate_config)
        if gate_config:
            where.add_argument("-c", "--config", type=Path, help="gate config naming the file")
        where.add_argument("--file", type=Path, help="the accounts file itself")
        parser.set_defaults(roles=roles, config=None, accounts_title=title)

    add = acc_sub.add_parser("add", help="add an account (asks for its password)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in roles])
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    common(add)
    add.set_defaults(func=cmd_add)

    lst = acc_sub.add_parser("list", help="list the accounts and their roles")
    common(lst)
    lst.set_defaults(func=cmd_list)

    rm = acc_sub.add_parser("remove", help="remove an account (its sessions end)")
    rm.add_argument("name")
    common(rm)
    rm.set_defaults(func=cmd_remove)

    pw = acc_sub.add_parser("passwd", help="set an account's password")
    pw.add_argument("name")
    pw.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    common(pw)
    pw.set_defaults(func=cmd_passwd)


def _fail(message: str) -> int:
    print(f"edgegate accounts: {message}", file=sys.stderr)
    log.error("accounts_command_failed", error=message)
    return 2


def _path(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    if args.config is None:
        raise AccountsError("name the accounts file with --file or a gate config with --config")
    config = load_config(args.config)
    if config.console is None:
        raise AccountsError(f"{args.config} has no [console] section naming an accounts_file")
    return config.resolve_path(config.console.accounts_file)


def _password(args: argparse.Namespace, name: str) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise AccountsError("the two passwords differ")
    problem = weak_password(password, name)
    if problem is not None:
        raise AccountsError(f"{problem}; choose another")
    return password


def _run(args: argparse.Namespace, action: str) -> int:
    try:
        path = _path(args)
        accounts = read_accounts(path, args.roles)
        if action == "list":
            table = Table(title=args.accounts_title, caption=str(path))
            table.add_column("account")
            table.add_column("role")
            for account in accounts.values():
                table.add_row(account.name, account.role.value)
            Console().print(table)
            return 0
        name = check_name(args.name)
        if action == "add" and name in accounts:
            raise AccountsError(f"account {name!r} exists: use 'accounts passwd' or 'remove'")
        if action in ("remove", "passwd") and name not in accounts:
            raise AccountsError(f"no account {name!r} in {path}")
        if action == "remove":
            del accounts[name]
        else:
            role = args.roles(args.role) if action == "add" else accounts[name].role
            accounts[name] = Account(name, role, hash_password(_password(args, name)))
        write_accounts(path, accounts)
    except (AccountsError, ConfigError) as exc:
        return _fail(str(exc))
    except EOFError:
        return _fail("no password given")
    done = {"add": "added", "remove": "removed", "passwd": "password changed for"}[action]
    print(f"{done} {name} in {path}")
    log.info("accounts_changed", action=action, account=name, file=str(path))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    return _run(args, "add")


def cmd_list(args: argparse.Namespace) -> int:
    return _run(args, "list")


def cmd_remove(args: argparse.Namespace) -> int:
    return _run(args, "remove")


def cmd_passwd(args: argparse.Namespace) -> int:
    return _run(args, "passwd")
