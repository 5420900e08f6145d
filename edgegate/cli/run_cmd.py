"""``edgegate run`` (the gate daemon) and ``edgegate demo`` (a whole simulated gate)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from edgegate.cli.commands import Subparsers
from edgegate.config import ConfigError, load_config
from edgegate.core.events import StopReason
from edgegate.daemon.gate import Gate
from edgegate.daemon.sd_notify import Notifier
from edgegate.log import LogError
from edgegate.log.schema import SchemaError
from edgegate.observability import get_logger

log = get_logger("cli.run")


def register(sub: Subparsers) -> None:
    run = sub.add_parser("run", help="run the gate daemon (JSON logs on stdout)")
    run.add_argument("-c", "--config", type=Path, required=True, help="the gate's TOML file")
    run.set_defaults(func=cmd_run, log_stream=sys.stdout)

    demo = sub.add_parser(
        "demo",
        help="run a whole simulated gate on this machine (no hardware, no network service)",
    )
    demo.add_argument(
        "--duration", type=_duration, default=None, help="seconds (default: until Ctrl-C)"
    )
    demo.add_argument(
        "--log", type=Path, default=Path("demo-gate.db"), help="event log file (demo-gate.db)"
    )
    demo.add_argument(
        "--no-live", action="store_true", help="no live view: guard notices as they come, a summary"
    )
    demo.add_argument(
        "--port", type=_port, default=8480, help="the console's port on 127.0.0.1 (8480)"
    )
    demo.add_argument("--guard-password", help="the demo guard's password (default: random)")
    demo.add_argument(
        "--supervisor-password", help="the demo supervisor's password (default: random)"
    )
    demo.add_argument(
        "--guard-wait",
        type=_guard_wait,
        default=60,
        help="seconds a vehicle waits for a guard before the gate gives up (10-3600, 60)",
    )
    demo.add_argument(
        "--fire-alarm-after",
        type=_duration,
        default=None,
        help="raise the park's fire alarm after this many seconds (incident mode, for 30 s)",
    )
    park = demo.add_argument_group(
        "the whole park (--park)",
        "two simulated gates, a local mosquitto (when installed) and central on this machine",
    )
    park.add_argument(
        "--park", action="store_true", help="run the park: gate-a (--port), gate-b (--port + 1)"
    )
    park.add_argument(
        "--dir", type=Path, default=Path("demo-park"), help="the park's files (demo-park)"
    )
    park.add_argument(
        "--central-port", type=_port, default=9480, help="central's HTTP port on 127.0.0.1 (9480)"
    )
    park.add_argument(
        "--mosquitto", help="the broker's program (default: found on PATH, /usr/sbin)"
    )
    demo.set_defaults(func=cmd_demo)


def _duration(text: str) -> float:
    value = float(text)
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 86400, got {text}")
    return value


def _whole(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {low} to {high}, got {text}")
    return value


def _port(text: str) -> int:
    return _whole(text, 1, 65535)


def _guard_wait(text: str) -> int:
    return _whole(text, 10, 3600)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"edgegate run: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(config, str(args.config)))
    except (LogError, SchemaError, OSError) as exc:
        return _gate_failed("edgegate run", config.log_file, exc)
    return 0


def _gate_failed(command: str, log_file: Path, exc: Exception) -> int:
    """The gate could not start or stopped on its log (unreadable, damaged, disk full)."""
    if isinstance(exc, SchemaError):
        message = f"{log_file}: {exc}"
    elif isinstance(exc, OSError):  # e.g. the log's directory cannot be made
        message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
    else:
        message = str(exc) if str(log_file) in str(exc) else f"{log_file}: {exc}"
    print(f"{command}: {message}", file=sys.stderr)
    log.error("gate_failed", error=message)
    return 1


async def _run(config: object, path: str) -> None:
    from edgegate.config import GateConfig

    assert isinstance(config, GateConfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gate = Gate(config, config_path=path, notifier=Notifier.from_environ())
    await gate.run(stop, reason=StopReason.SIGNAL)


def cmd_demo(args: argparse.Namespace) -> int:
    from edgegate.cli.demo import DemoOptions, run_demo
    from edgegate.console.accounts import weak_password

    for flag, password in (
        ("--guard-password", args.guard_password),
        ("--supervisor-password", args.supervisor_password),
    ):
        if password is not None and (weak := weak_password(password)) is not None:
            print(f"edgegate demo: {flag}: {weak}", file=sys.stderr)
            return 2
    if args.park and args.fire_alarm_after is not None:
        print(
            "edgegate demo: --fire-alarm-after is for the one-gate demo, not --park",
            file=sys.stderr,
        )
        return 2
    options = DemoOptions(
        port=args.port,
        guard_password=args.guard_password,
        supervisor_password=args.supervisor_password,
        guard_wait_s=args.guard_wait,
        fire_alarm_after=args.fire_alarm_after,
    )

    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stop = asyncio.Event()

        def on_signal() -> None:
            # The first stops the demo cleanly (exit 0); a second one cuts it short.
            if stop.is_set():
                task.cancel()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            if args.park:
                from edgegate.cli.demo_park import ParkOptions, run_park

                park = ParkOptions(args.dir, args.central_port, args.mosquitto, options)
                return await run_park(
                    args.duration, park, live=False if args.no_live else None, stop=stop
                )
            return await run_demo(
                args.duration,
                args.log,
                live=False if args.no_live else None,
                options=options,
                stop=stop,
            )
        except asyncio.CancelledError:
            return 130

    try:
        return asyncio.run(main())
    except (LogError, SchemaError, OSError) as exc:
        return _gate_failed("edgegate demo", args.log, exc)


def register_simulate(sub: Subparsers) -> None:
    simulate = sub.add_parser(
        "simulate",
        help="run a gate's simulators alone and play a scenario (for a real daemon)",
        description="Each modbus-tcp PLC of the config (loopback only) gets a PLC simulator "
        "where the daemon connects, each serial-plate-reader a pty linked at its port path. "
        "Start `edgegate run -c CONFIG` beside it.",
    )
    simulate.add_argument("scenario", type=Path, help="scenario JSON file")
    simulate.add_argument("-c", "--config", type=Path, required=True, help="the gate's TOML")
    simulate.add_argument("--speed", type=float, default=1.0, help="play faster (e.g. 2)")
    simulate.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from edgegate.sim.scenario import Scenario
    from edgegate.sim.standalone import SimulationError, simulate

    try:
        config = load_config(args.config)
        scenario = Scenario.load(args.scenario)
    except ConfigError as exc:
        print(f"edgegate simulate: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except RecursionError:
        print(f"edgegate simulate: {args.scenario}: nested too deeply", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError) as exc:
        print(f"edgegate simulate: {args.scenario}: {exc}", file=sys.stderr)
        return 2
    try:
        outcomes = asyncio.run(simulate(config, scenario, speed=args.speed))
    except SimulationError as exc:
        print(f"edgegate simulate: {exc}", file=sys.stderr)
        return 2
    for line in outcomes:
        print(line)
    return 0
