"""``edgegate replay ACTION``: technicians' replay of a gate's log, read-only. Each action
module contributes ``register_action(actions)``."""

from __future__ import annotations

import argparse
import importlib

from edgegate.cli.commands import action_group

#: the modules in edgegate.cli adding actions to the group
ACTION_MODULES: tuple[str, ...] = ("replay_why",)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    actions = action_group(sub, "replay", "replay a gate's log (read-only)")
    for name in ACTION_MODULES:
        importlib.import_module(f"edgegate.cli.{name}").register_action(actions)
