"""``edgegate check-config PATH``: validate a gate configuration without touching the gate.

Exit 0 with a one-screen summary on stdout, or exit 2 with every problem on stderr, one per
line, key path first. Never opens a device or the event log.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from edgegate.cli.commands import Subparsers, add_command
from edgegate.config import ConfigError, GateConfig, format_duration, load_config
from edgegate.core.domain import Direction, VehicleCategory
from edgegate.observability import get_logger

# When piped (CI, journald, a ticket), do not squeeze the tables into rich's default 80 columns.
_PIPE_WIDTH = 120


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "check-config",
        run,
        help="validate a gate configuration file",
        description=(
            "Validate a gate configuration and print a summary of it. Opens no device and not "
            "the event log. Exit 0 if valid, 2 with every problem listed if not."
        ),
    )
    parser.add_argument("path", metavar="PATH", type=Path, help="the gate's TOML configuration")


def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    log = get_logger("check-config", path=str(path))
    try:
        config = load_config(path)
    except ConfigError as e:
        count = len(e.problems)
        print(
            f"{e.source}: invalid configuration, {count} problem{'s' * (count != 1)}:",
            file=sys.stderr,
        )
        for line in e.lines():
            print(line, file=sys.stderr)
        log.error("config_invalid", problems=e.lines())
        return 2
    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal:
        console.width = _PIPE_WIDTH
    console.print(summary(config, path))
    # Files live on the gate: an example validates anywhere, but on the gate they must exist.
    for key, problem in config.file_problems():
        print(f"warning: {key}: {problem}", file=sys.stderr)
        log.warning("config_file_missing", key=key, problem=problem)
    log.info(
        "config_valid",
        gate=config.gate.id,
        config_hash=config.config_hash(),
        lanes=len(config.lanes),
        devices=len(config.devices),
    )
    return 0


def _categories(categories: Iterable[VehicleCategory]) -> str:
    wanted = set(categories)
    return ", ".join(c.value for c in VehicleCategory if c in wanted) or "(none)"


def _limit(value: timedelta | None) -> str:
    return "no limit" if value is None else format_duration(value)


def _size(n: int) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def _retention_summary(config: GateConfig) -> str:
    retention = config.log.retention
    if retention is None:
        return "(none: one log file that grows without bound)"
    whose = (
        "unacknowledged too (no [sync])"
        if retention.archive_unacknowledged
        else "once central acknowledged them"
    )
    return (
        f"segments by day or {_size(retention.max_segment_size)}, uncompressed for "
        f"{format_duration(retention.keep)}, then archived (zstd {retention.compression_level}) "
        f"{whose}; oldest archives removed beyond {_size(retention.archive_budget)}"
    )


def _sync_summary(config: GateConfig) -> str:
    sync = config.sync
    if sync is None:
        return "(none: the gate works alone)"
    address = sync.broker_address
    text = (
        f"{'mqtts' if address.tls else 'mqtt'}://{address.host}:{address.port} as "
        f"{config.sync_username}, site {config.sync_site}; central key {sync.central_public_key}"
    )
    if sync.pull_api is not None:
        text += "; pull API at /v1 on the HTTP server"
    return text


def _http_summary(config: GateConfig) -> str:
    http = config.http
    if http is None:
        return "(none: no pull API, no console)"
    parts = ["pull API /v1"] if config.sync is not None and config.sync.pull_api else []
    served = f" — {', '.join(parts)}" if parts else ""
    return f"{http.url}{served}{'' if http.tls else ' (plain HTTP)'}"


def summary(config: GateConfig, path: Path) -> RenderableType:
    """The one-screen overview ``check-config`` prints for a valid configuration."""
    gate, policy = config.gate, config.policy
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    rows: list[tuple[str, str]] = [
        ("Config", f"{path} — valid"),
        ("Gate", f"{gate.id} — {gate.name}"),
        ("Kind", f"{gate.kind}    site {gate.site}    time zone {gate.timezone}"),
        ("Entry admits", _categories(config.admits(Direction.ENTRY))),
        ("Exit admits", _categories(config.admits(Direction.EXIT))),
        (
            "Policy",
            f"allow-list max age {format_duration(policy.allowlist_max_age)} "
            f"(when stale: {policy.on_stale_allowlist}); colour mismatch: "
            f"{policy.colour_mismatch}; fuzzy matching: {policy.fuzzy_matching}"
            f"; min confidence {policy.min_confidence:g}",
        ),
        (
            "Dwell limits",
            ", ".join(f"{c} {_limit(v)}" for c, v in policy.dwell_limits.items()),
        ),
        (
            "Log",
            f"{config.log_file}    if unwritable: entry {config.log.on_write_failure.entry}, "
            f"exit {config.log.on_write_failure.exit}",
        ),
        ("Retention", _retention_summary(config)),
        ("Evacuation", ", ".join(config.incident.evacuation_lanes) or "(no evacuation lanes)"),
        (
            "Timings",
            "  ".join(f"{name} {format_duration(value)}" for name, value in config.timings),
        ),
        ("Sync", _sync_summary(config)),
        ("HTTP", _http_summary(config)),
        ("Config hash", config.config_hash()),
    ]
    for label, value in rows:
        head.add_row(Text(label), Text(value))

    lanes = Table(title="Lanes", title_justify="left", expand=False)
    for column in (
        "lane",
        "direction",
        "plate reader",
        "barrier",
        "loops",
        "exit loop",
        "timing overrides",
    ):
        lanes.add_column(column)
    for lane in config.lanes:
        overrides = lane.timings.model_dump(exclude_none=True)
        lanes.add_row(
            *map(
                Text,
                (
                    lane.id,
                    str(lane.direction),
                    lane.plate_reader,
                    lane.barrier,
                    lane.loops_device,
                    "yes" if lane.exit_loop else "no",
                    " ".join(f"{k} {format_duration(v)}" for k, v in overrides.items()) or "-",
                ),
            )
        )

    users: dict[str, list[str]] = {}
    for lane in config.lanes:
        for name in dict.fromkeys((lane.plate_reader, lane.barrier, lane.loops_device)):
            users.setdefault(name, []).append(lane.id)
    devices = Table(title="Devices", title_justify="left", expand=False)
    for column in ("device", "type", "address", "profile", "lanes"):
        # Fold, never ellipsise: by-id serial paths differ only at their end.
        devices.add_column(column, overflow="fold")
    for name, device in config.devices.items():
        devices.add_row(
            *map(
                Text,
                (
                    name,
                    device.type,
                    device.address(),
                    getattr(device, "profile", "-"),
                    ", ".join(users.get(name, [])) or "(unused)",
                ),
            )
        )
    return Group(head, Text(), lanes, Text(), devices)
