"""``edgegate demo --park``: the whole park on one machine — two simulated gates (``gate-a``,
``gate-b``: real daemons, simulated devices, each with its console and log), a local
mosquitto with the trial broker's files (TLS on 127.0.0.1), and central in this process: the
sink storing both gates' events in a SQLite store, its HTTP server with the park API, and the
park's allow-list, signed with a key made for the run and published to both gates, whose
configurations pin its public key. Vehicles enter at one gate and leave at the other (or the
same one); a live view shows both gates and central's park view.

Without mosquitto, central pulls each gate's log over its pull API instead (as ``edgegate
central pull --follow`` does) and the signed allow-list is handed to each gate's downlink
directly: the park works the same, central's view only lags by the pull interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.live import Live

from edgegate.central import publish as pub
from edgegate.central.api import ParkApi
from edgegate.central.dashboard import Dashboard, DashboardRole, Publishing
from edgegate.central.sink import Sink, sink_options
from edgegate.central.store import AsyncStore, StoreError, VehicleInside, open_store
from edgegate.central.trial import TrialError, TrialPlan, write_trial
from edgegate.central.web import CENTRAL_WEB_PARTS, CentralWeb
from edgegate.cli.demo import (
    GUARD,
    SUPERVISOR,
    DemoOptions,
    _console_problem,
    _until,
    new_password,
    start_gate,
)
from edgegate.cli.demo_park_central import (
    PULL_EVERY_S,
    BrokerCentral,
    Central,
    PullCentral,
    central_mounts,
    open_sink,
    web_part,
)
from edgegate.cli.demo_park_setup import (
    CONTROL,
    Broker,
    ParkError,
    ParkFiles,
    ParkSecrets,
    find_mosquitto,
    free_port,
    prepare,
)
from edgegate.cli.demo_park_view import ParkView
from edgegate.clock import SystemClock
from edgegate.console.accounts import AccountStore
from edgegate.daemon.gate import Gate
from edgegate.log import LogError
from edgegate.log.schema import SchemaError
from edgegate.sim.park import (
    PARK_GATES,
    PARK_SITE,
    PARK_TRIPS,
    ROUND_S,
    ParkSync,
    Trip,
    park_allowlist,
    park_gate_config,
)
from edgegate.sim.scenario import SimLane
from edgegate.web import HttpServer

CENTRAL_PORT = 9480
CENTRAL_ID = "central"
#: How long the demo waits for the sink to subscribe, for the gates to apply central's list
#: and for central to hold the gates' last events.
_CENTRAL_READY_S = 15.0
_LIST_APPLIED_S = 20.0
_CAUGHT_UP_S = 15.0
_LAST_VEHICLES_S = 15.0


@dataclass(frozen=True, slots=True)
class ParkOptions:
    """What ``edgegate demo --park``'s flags set. ``gates``: the demo's options for both
    gates (``port`` is gate-a's console, gate-b's the next; passwords left None are
    generated; no fire alarm)."""

    directory: Path = Path("demo-park")
    central_port: int = CENTRAL_PORT
    mosquitto: str | None = None  # the broker's program; None: found on PATH or in /usr/sbin
    gates: DemoOptions = field(default_factory=DemoOptions)


# ------------------------------------------------------------------------------ traffic


async def _sleep_unless(ending: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``; False if ``ending`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await ending.wait()
    return not ending.is_set()


async def _park_traffic(
    lanes: dict[tuple[str, str], SimLane], view: ParkView, ending: asyncio.Event
) -> None:
    """Round after round of :data:`PARK_TRIPS` until ``ending``: a vehicle already inside
    then stays there; one in a lane drives on."""

    async def trip(t: Trip) -> None:
        if not await _sleep_unless(ending, t.start_s):
            return
        entered = await lanes[t.entry, "in-1"].drive(t.vehicle("in-1"))
        view.note(view.trips, f"{t.plate:<9} {t.kind}: in at {t.entry} {entered}")
        if entered != "passed" or t.exit is None:
            return
        if not await _sleep_unless(ending, t.dwell_s):
            return
        left = await lanes[t.exit, "out-1"].drive(t.vehicle("out-1"))
        view.note(view.trips, f"{t.plate:<9} {t.kind}: out at {t.exit} {left}")

    loop = asyncio.get_running_loop()
    while not ending.is_set():
        started = loop.time()
        async with asyncio.TaskGroup() as tg:
            for t in PARK_TRIPS:
                tg.create_task(trip(t))
        await _sleep_unless(ending, started + ROUND_S - loop.time())


# ------------------------------------------------------------------------------ the run


@dataclass(slots=True)
class _RunningGate:
    gate: Gate
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def aclose(self) -> None:
        self.stop.set()
        await self.task


async def _start_gate(gate: Gate) -> _RunningGate:
    stop = asyncio.Event()
    task = await start_gate(gate, stop)
    if task is None:
        raise ParkError(f"{gate.config.gate.id} stopped at once (see the log lines above)")
    running = _RunningGate(gate, stop, task)
    problem = _console_problem(gate)
    if problem is not None:
        await running.aclose()
        raise ParkError(f"{gate.config.gate.id}: {problem}")
    return running


async def run_park(
    duration: float | None,
    options: ParkOptions | None = None,
    *,
    live: bool | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the park for ``duration`` seconds or until ``stop`` is set; an exit code."""
    options = options or ParkOptions()
    stop = stop or asyncio.Event()
    console = Console()
    try:
        return await _run_park(duration, options, live, stop, console)
    except ParkError as exc:
        print(f"edgegate demo --park: {exc}", file=sys.stderr)
    except (LogError, SchemaError) as exc:
        print(f"edgegate demo --park: {exc}", file=sys.stderr)
    except (OSError, TrialError, StoreError, pub.PublishError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f"{exc.filename}: " if isinstance(exc, OSError) and exc.filename else ""
        print(f"edgegate demo --park: {where}{detail}", file=sys.stderr)
    return 1


def _say(console: Console, text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)
    console.file.flush()


async def _run_park(
    duration: float | None,
    options: ParkOptions,
    live: bool | None,
    stop: asyncio.Event,
    console: Console,
) -> int:
    files = ParkFiles(options.directory.absolute())
    passwords = {
        GUARD: options.gates.guard_password or new_password(),
        SUPERVISOR: options.gates.supervisor_password or new_password(),
    }
    secret = await asyncio.to_thread(prepare, files, passwords)
    program, missing = find_mosquitto(options.mosquitto)
    async with contextlib.AsyncExitStack() as stack:
        broker: Broker | None = None
        if program is not None:
            plan = TrialPlan(
                files.trial,
                PARK_GATES,
                CENTRAL_ID,
                port=free_port(),
                run_as=getpass.getuser(),
                site=PARK_SITE,
            )
            await asyncio.to_thread(write_trial, plan, force=True)
            broker = Broker(program, plan)
            stack.push_async_callback(broker.stop)
            if (problem := await broker.start()) is not None:
                missing = problem
                broker = None
        if broker is None:
            _say(
                console,
                f"{missing}: the park runs without a broker; central pulls each gate's log "
                f"over its pull API every {PULL_EVERY_S:g} s and hands it the signed allow-list.",
            )
        central, url = await _start_central(stack, files, options, broker, secret)
        gates: dict[str, Gate] = {}
        running: dict[str, _RunningGate] = {}
        for i, gate_id in enumerate(PARK_GATES):
            sync = _gate_sync(gate_id, files, broker)
            config = park_gate_config(
                gate_id,
                files.log(gate_id),
                files.accounts(gate_id),
                port=options.gates.port + i,
                sync=sync,
                guard_wait_s=options.gates.guard_wait_s,
            )
            gates[gate_id] = Gate(config, config_path=f"<demo {gate_id}>")
            running[gate_id] = await _start_gate(gates[gate_id])
            stack.push_async_callback(running[gate_id].aclose)
        if broker is not None:
            # Once the gates stop (their last events handed to the broker), central keeps
            # them before it stops.
            stack.push_async_callback(_caught_up, central, gates)
        urls = {g: f"{gate.config.http.url}/" for g, gate in gates.items() if gate.config.http}
        if isinstance(central, PullCentral):
            central.start(urls)
            stack.push_async_callback(central.stop_pulling, urls)
        await _publish(central, gates, files.master_keys.private, console)
        banner = _banner(files, broker, url, urls, secret)
        view = ParkView(gates, central, banner, console)
        await _run_traffic(duration, gates, running, view, live, stop)
    await _summary(files, console)
    return 0


async def _start_central(
    stack: contextlib.AsyncExitStack,
    files: ParkFiles,
    options: ParkOptions,
    broker: Broker | None,
    tokens: ParkSecrets,
) -> tuple[Central, str]:
    """Central, stopped by ``stack``, and its HTTP server's URL: the control room's
    dashboard and the park API; with a broker the sink (and its monitoring) too, without
    one its store (the pullers start once the gates run)."""
    sink: Sink | None = None
    if broker is None:
        store = AsyncStore(await asyncio.to_thread(open_store, files.dsn))
        stack.push_async_callback(store.aclose)
        central: Central = PullCentral(store, files.dsn, tokens.pull)
    else:
        c = broker.plan.client_dir(CENTRAL_ID)
        settings = sink_options(
            broker.url,
            dsn=files.dsn,
            username=CENTRAL_ID,
            password=(c / "mqtt-password").read_text().strip(),
            ca_file=c / "ca.crt",
            client_id="edgegate-demo-park-sink",
        )
        sink = await stack.enter_async_context(open_sink(settings, files.park_keys.private))
        try:
            await sink.wait_ready(_CENTRAL_READY_S)
        except TimeoutError:
            raise ParkError(
                f"central's sink did not subscribe to the broker within {_CENTRAL_READY_S:g} s "
                f"(see {broker.log_file})"
            ) from None
        central = BrokerCentral(sink, broker)
    api = await ParkApi.open(files.dsn, {"demo": tokens.api})
    stack.push_async_callback(api.aclose)
    publishing = None
    if broker is not None:  # approvals go to the gates as signed deltas through the broker
        key = pub.load_signing_key(files.master_keys.private)
        publishing = Publishing(PARK_SITE, key, settings.broker, gates=PARK_GATES)
    accounts = AccountStore.open(files.dashboard_accounts, SystemClock().mono_ns, DashboardRole)
    dashboard = await Dashboard.open(files.dsn, accounts, publishing=publishing)
    stack.push_async_callback(dashboard.aclose)
    mounts = central_mounts(api, dashboard)
    port = options.central_port
    try:
        if sink is not None:
            parts = [*CENTRAL_WEB_PARTS, *map(web_part, mounts)]
            web = CentralWeb(sink, port=port, parts=parts)
            await web.start()
            stack.push_async_callback(web.aclose)
            assert web.server is not None
            return central, web.server.url
        server = HttpServer("127.0.0.1", port)  # no sink: no monitoring of one
        for mount in mounts:
            mount(server)
        await server.start()
        stack.push_async_callback(server.aclose)
        return central, server.url
    except OSError as exc:
        raise ParkError(
            f"central's HTTP server cannot listen on 127.0.0.1:{port} "
            f"({exc.strerror or exc}): choose another port with --central-port"
        ) from None


def _gate_sync(gate_id: str, files: ParkFiles, broker: Broker | None) -> ParkSync:
    """A gate's ``[sync]``: the trial broker's credentials for it, or (no broker) a port
    nobody listens on, where the uplink retries in the background."""
    if broker is None:
        return ParkSync(
            f"mqtt://127.0.0.1:{free_port()}",
            files.master_keys.public,
            files.pull_token,
            park_public_key=files.park_keys.public,
        )
    d = broker.plan.client_dir(gate_id)
    return ParkSync(
        broker.url,
        files.master_keys.public,
        files.pull_token,
        password_file=d / "mqtt-password",
        ca_file=d / "ca.crt",
        park_public_key=files.park_keys.public,
    )


def _banner(
    files: ParkFiles, broker: Broker | None, url: str, consoles: dict[str, str], secret: ParkSecrets
) -> str:
    gates = "  ".join(f"{g}: {u}" for g, u in consoles.items())
    lines = [
        f"Consoles: {gates}  guard: {GUARD} / {secret.passwords[GUARD]}  "
        f"supervisor: {SUPERVISOR} / {secret.passwords[SUPERVISOR]}",
        f"Dashboard: {url}/  operator: {CONTROL} / {secret.control}",
        f"Park API: curl -H 'Authorization: Bearer {secret.api}' {url}/api/v1/presence",
    ]
    if broker is not None:
        lines.append(f"Broker: mosquitto on 127.0.0.1:{broker.plan.port} (TLS), {files.trial}")
    else:
        lines.append(
            f"No broker: central pulls the gates every {PULL_EVERY_S:g} s (the dashboard can "
            "dismiss blacklist proposals, not approve them: nothing would carry the delta)"
        )
    lines.append(f"Central's store: {files.dsn}  (edgegate central roll-call --db {files.dsn})")
    return "\n".join(lines)


async def _run_traffic(
    duration: float | None,
    gates: dict[str, Gate],
    running: dict[str, _RunningGate],
    view: ParkView,
    live: bool | None,
    stop: asyncio.Event,
) -> None:
    """The park's traffic and the live view until ``duration``, ``stop`` or a gate stopping;
    then the vehicles in the lanes leave them."""
    lanes = {
        (gate_id, lane.id): SimLane(
            gate.sims.plcs[lane.barrier], gate.sims.readers[lane.plate_reader]
        )
        for gate_id, gate in gates.items()
        for lane in gate.config.lanes
    }
    # Frames written before a reader's port is open are lost (opening flushes the input).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await asyncio.gather(
                *(r.wait_connected() for g in gates.values() for r in g.readers.values())
            )
    interactive = sys.stdout.isatty() if live is None else live
    view.notices = not interactive
    until = f"for {duration:g} s" if duration is not None else "until Ctrl-C"
    _say(view.console, f"{view.banner}\nThe park runs {until}.")
    ending = asyncio.Event()
    traffic = asyncio.create_task(_park_traffic(lanes, view, ending))
    watch = asyncio.create_task(_watch_central(view, ending))
    stopping = asyncio.create_task(stop.wait())
    gate_down = asyncio.create_task(_first_done([r.task for r in running.values()]))
    try:
        if interactive:
            with Live(view.render(), console=view.console, refresh_per_second=4) as screen:
                await _until(gate_down, stopping, duration, lambda: screen.update(view.render()))
        else:
            await _until(gate_down, stopping, duration, None)
    finally:
        stopping.cancel()
        gate_down.cancel()
        _say(view.console, "Stopping: the vehicles in the lanes leave first…")
        ending.set()
        for lane in lanes.values():
            lane.leave()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_LAST_VEHICLES_S):
                await asyncio.shield(asyncio.gather(traffic, watch))
        for task in (traffic, watch):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for line in view.trips:
            _say(view.console, line)


async def _first_done(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)


async def _watch_central(view: ParkView, ending: asyncio.Event) -> None:
    """Central's park view, read again every second (a store that fails is shown, not
    raised)."""
    while True:
        try:
            await view.refresh_central()
        except StoreError as exc:
            view.note(view.decisions, f"central's store: {exc}", notice=True)
        if not await _sleep_unless(ending, 1.0):
            return


async def _summary(files: ParkFiles, console: Console) -> None:
    """What central holds at the end, and where to look further."""

    def read() -> tuple[dict[str, int], list[VehicleInside]]:
        with open_store(files.dsn) as store:
            return {g: h[0] for g, h in store.heads().items()}, store.presence()

    try:
        heads, inside = await asyncio.to_thread(read)
    except StoreError as exc:
        _say(console, f"central's store: {exc}")
        return
    stored = ", ".join(f"{g} up to seq {seq}" for g, seq in sorted(heads.items()))
    count = f"{len(inside)} vehicle{'' if len(inside) == 1 else 's'}"
    _say(console, f"Central holds {stored or 'no events'}; {count} inside.")
    for gate in PARK_GATES:
        _say(console, f"{gate}'s log: {files.log(gate)}  (edgegate log verify {files.log(gate)})")
    _say(console, f"Central: edgegate central gates --db {files.dsn}")


async def _publish(
    central: Central, gates: dict[str, Gate], key_file: Path, console: Console
) -> None:
    """Central signs the park's list and records it (one version per gate), then publishes
    it; the traffic starts once both gates apply it."""
    now = datetime.now(UTC).replace(microsecond=0)
    entries = park_allowlist(now)
    key = pub.load_signing_key(key_file)
    issued = time.time_ns()

    def signed(version: int) -> tuple[str, int | None, bytes]:
        publication = pub.snapshot_publication(entries, version=version, now_ns=issued)
        return publication.kind, None, pub.signed_publication(publication, key)

    made = await central.store.run(
        lambda s: s.publish_allowlist(
            list(gates), signed, recorded_by="demo (edgegate demo --park)"
        )
    )
    await central.publish(gates, made)
    versions = {p.gate: p.version for p in made}

    def applied() -> bool:
        return all(
            g.allowlist is not None and g.allowlist.view.version >= versions[gid]
            for gid, g in gates.items()
        )

    for _ in range(int(_LIST_APPLIED_S * 10)):
        if applied():
            break
        await asyncio.sleep(0.1)
    shown = ", ".join(f"{g} v{v}" for g, v in versions.items())
    if applied():
        _say(
            console,
            f"Central published the park's allow-list ({len(entries)} entries, "
            f"signed with key id {pub.signing_key_id(key)}): {shown}.",
        )
    else:
        _say(
            console,
            f"Central published the park's allow-list ({shown}), but not every gate "
            f"applied it within {_LIST_APPLIED_S:g} s: they refuse until they do.",
        )


async def _caught_up(central: Central, gates: dict[str, Gate]) -> None:
    """Wait (a while) until central holds each gate's log to its head."""
    assert isinstance(central, BrokerCentral)
    for gate_id, gate in gates.items():
        head = gate.event_log.head[0] if gate.event_log is not None else 0
        with contextlib.suppress(TimeoutError):
            await central.sink.wait_head(gate_id, head, _CAUGHT_UP_S)
