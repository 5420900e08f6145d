"""The list of command modules; each contributes ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from edgegate.cli import allowlist_cmd, central_cmd, check_config, keys_cmd, log_cmd, run_cmd

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

REGISTRARS: list[Registrar] = [
    allowlist_cmd.register,
    central_cmd.register,
    check_config.register,
    keys_cmd.register,
    log_cmd.register,
    run_cmd.register,
    run_cmd.register_simulate,
]
