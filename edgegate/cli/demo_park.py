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
import os
import secrets
import shutil
import ssl
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edgegate.central import publish as pub
from edgegate.central.api import ParkApi
from edgegate.central.dashboard import Dashboard, DashboardRole, Publishing
from edgegate.central.pull import PullError, PullReport, pull
from edgegate.central.sink import Sink, SinkOptions, sink_options
from edgegate.central.store import (
    AsyncStore,
    CentralStore,
    GateState,
    StoreError,
    VehicleInside,
    open_store,
)
from edgegate.central.store.publications import Publication
from edgegate.central.trial import TrialError, TrialPlan, write_trial
from edgegate.central.web import CENTRAL_WEB_PARTS, CentralWeb, CentralWebPart
from edgegate.cli.demo import (
    GUARD,
    SUPERVISOR,
    DemoOptions,
    _console_problem,
    _until,
    _write_demo_accounts,
    new_password,
    start_gate,
)
from edgegate.clock import SystemClock
from edgegate.console.accounts import (
    Account,
    AccountsError,
    AccountStore,
    hash_password,
    write_accounts,
)
from edgegate.core.domain import VehicleCategory
from edgegate.core.events import AccessDecided, Event
from edgegate.daemon.gate import Gate
from edgegate.daemon.lane_runner import LaneRunner
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
from edgegate.sync.signing import generate_keypair
from edgegate.web import HttpServer

CENTRAL_PORT = 9480
CENTRAL_ID = "central"
#: The control room dashboard's demo account (an operator).
CONTROL = "control"
#: Seconds between two pulls of a gate's log when there is no broker.
PULL_EVERY_S = 2.0
#: How long the demo waits for mosquitto to accept TLS, for the sink to subscribe, for the
#: gates to apply central's list and for central to hold the gates' last events.
_BROKER_START_S = 15.0
_CENTRAL_READY_S = 15.0
_LIST_APPLIED_S = 20.0
_CAUGHT_UP_S = 15.0
_LAST_VEHICLES_S = 15.0
#: Where mosquitto is looked for besides PATH (Debian installs it in /usr/sbin).
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class ParkError(Exception):
    """The park could not start; the message names what and what to do."""


@dataclass(frozen=True, slots=True)
class ParkOptions:
    """What ``edgegate demo --park``'s flags set. ``gates``: the demo's options for both
    gates (``port`` is gate-a's console, gate-b's the next; passwords left None are
    generated; no fire alarm)."""

    directory: Path = Path("demo-park")
    central_port: int = CENTRAL_PORT
    mosquitto: str | None = None  # the broker's program; None: found on PATH or in /usr/sbin
    gates: DemoOptions = field(default_factory=DemoOptions)


def find_mosquitto(program: str | None) -> tuple[str | None, str]:
    """(mosquitto's path, None) or (None, why it is not there)."""
    if program is not None:
        found = shutil.which(program)
        return (found, "") if found else (None, f"--mosquitto {program}: no such program")
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    found = shutil.which("mosquitto", path=path)
    return (found, "") if found else (None, "mosquitto is not installed (apt install mosquitto)")


# ------------------------------------------------------------------------------ files


@dataclass(frozen=True, slots=True)
class ParkFiles:
    """Where the demo keeps everything, under ``root``."""

    root: Path

    def log(self, gate: str) -> Path:
        return self.root / f"{gate}.db"

    def accounts(self, gate: str) -> Path:
        return self.root / f"{gate}-accounts.txt"

    @property
    def dsn(self) -> str:
        return f"sqlite:///{self.root / 'central.db'}"

    @property
    def signing_key(self) -> Path:
        return self.root / "central" / "central.key"

    @property
    def public_key(self) -> Path:
        return self.root / "central" / "central.pub"

    @property
    def pull_token(self) -> Path:
        return self.root / "pull-token"

    @property
    def trial(self) -> Path:
        return self.root / "trial"

    @property
    def dashboard_accounts(self) -> Path:
        return self.root / "central" / "dashboard-accounts.txt"


@dataclass(frozen=True, slots=True)
class ParkSecrets:
    """The run's passwords and tokens: the gates' console accounts, the dashboard's
    operator, the gates' pull API, central's park API."""

    passwords: dict[str, str]
    control: str
    pull: str
    api: str


def _prepare(files: ParkFiles, passwords: dict[str, str]) -> ParkSecrets:
    """Make the directory, a new signing key pair, pull token and dashboard account, each
    gate's console accounts (``passwords``)."""
    (files.root / "central").mkdir(parents=True, exist_ok=True)
    private_pem, public_pem = generate_keypair()
    _write_secret(files.signing_key, private_pem)
    files.public_key.write_bytes(public_pem)
    secrets_ = ParkSecrets(passwords, new_password(), _token(), _token())
    _write_secret(files.pull_token, (secrets_.pull + "\n").encode())
    for gate in PARK_GATES:
        problem = _write_demo_accounts(files.accounts(gate), passwords)
        if problem is not None:
            raise ParkError(f"{gate}: {problem}")
    control = Account(CONTROL, DashboardRole.OPERATOR, hash_password(secrets_.control))
    try:
        write_accounts(files.dashboard_accounts, {CONTROL: control})
    except AccountsError as exc:
        raise ParkError(f"the dashboard's accounts: {exc}") from None
    return secrets_


def _token() -> str:
    return secrets.token_urlsafe(24)


def _write_secret(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------------------ broker


class Broker:
    """mosquitto with the trial broker's files (``edgegate central trial-broker``), run by
    the demo and stopped with it."""

    def __init__(self, program: str, plan: TrialPlan) -> None:
        self.program = program
        self.plan = plan
        self.url = f"mqtts://127.0.0.1:{plan.port}"
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def log_file(self) -> Path:
        return self.plan.root / "broker" / "mosquitto.log"

    async def start(self) -> str | None:
        """Start mosquitto and wait until it accepts TLS; None, or why it did not."""
        conf = self.plan.root / "broker" / "mosquitto.conf"
        self._proc = await asyncio.create_subprocess_exec(
            self.program,
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        context = ssl.create_default_context(cafile=str(self.plan.root / "ca.crt"))
        loop = asyncio.get_running_loop()
        end = loop.time() + _BROKER_START_S
        while loop.time() < end:
            if self._proc.returncode is not None:
                return f"mosquitto exited at once ({await self._said()})"
            try:
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", self.plan.port, ssl=context, server_hostname="127.0.0.1"
                )
            except (OSError, ssl.SSLError):
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
            return None
        await self.stop()
        return f"mosquitto did not accept TLS on 127.0.0.1:{self.plan.port} within 15 s"

    async def _said(self) -> str:
        """What mosquitto wrote to stderr and its log, in short."""
        err = b""
        if self._proc is not None and self._proc.stderr is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    err = await self._proc.stderr.read()
        text = err.decode("utf-8", "replace").strip()
        with contextlib.suppress(OSError):
            text = (text + " " + self.log_file.read_text(errors="replace")[-300:]).strip()
        return " ".join(text.split())[-300:] or f"see {self.log_file}"

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        except asyncio.CancelledError:  # the demo cut short: never leave mosquitto running
            proc.kill()
            raise


# ------------------------------------------------------------------------------ central


@dataclass(slots=True)
class GateLink:
    """How central hears of a gate: online, and events the gate holds that central does not."""

    online: bool = False
    lag: int | None = None
    problem: str | None = None


class Central(ABC):
    """Central's side of the park: its store, publishing, and how it hears of the gates."""

    mode = ""
    store: AsyncStore

    @abstractmethod
    async def publish(self, gates: dict[str, Gate], made: list[Publication]) -> None:
        """Deliver central's recorded publications ``made`` to their gates."""

    @abstractmethod
    def link(self, gate: str, state: GateState | None) -> GateLink:
        """How central hears of ``gate`` now (``state``: what its store says of it)."""


class BrokerCentral(Central):
    """The sink in this process, subscribed to the demo's mosquitto."""

    mode = "broker"

    def __init__(self, sink: Sink, broker: Broker) -> None:
        self.sink = sink
        self.store = sink.store
        self.broker = broker

    async def publish(self, gates: dict[str, Gate], made: list[Publication]) -> None:
        """The snapshots, retained: each gate gets its own when it subscribes."""
        out = [pub.Outgoing(PARK_SITE, p.gate, "allowlist", p.payload, True) for p in made]
        await pub.publish(self.sink.options.broker, out)

    def link(self, gate: str, state: GateState | None) -> GateLink:
        if state is None:
            return GateLink()
        return GateLink(state.online, state.lag)


class PullCentral(Central):
    """No broker: a puller per gate (``edgegate central pull --follow``'s code, each on a
    thread with a store connection of its own) every :data:`PULL_EVERY_S` seconds."""

    mode = "pull"

    def __init__(self, store: AsyncStore, dsn: str, token: str) -> None:
        self.store = store
        self.dsn = dsn
        self.token = token
        self.links: dict[str, GateLink] = {}
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads: list[asyncio.Task[None]] = []

    async def publish(self, gates: dict[str, Gate], made: list[Publication]) -> None:
        """Hand each gate its signed snapshot: the downlink checks and applies it as one
        received from the broker."""
        for p in made:
            downlink = gates[p.gate].downlink
            if downlink is None:
                raise ParkError(f"{p.gate}: its downlink did not start (see the log lines above)")
            await downlink.receive_allowlist(p.payload)

    def start(self, urls: dict[str, str]) -> None:
        for gate, url in urls.items():
            self.links[gate] = GateLink()
            self._threads.append(asyncio.create_task(asyncio.to_thread(self._follow, gate, url)))

    def _follow(self, gate: str, url: str) -> None:
        link = self.links[gate]

        def progress(report: PullReport) -> None:
            self._seen[gate] = time.monotonic()
            link.lag = max(0, report.gate_head - report.central_head)
            link.problem = None

        def notice(text: str) -> None:
            if "retrying" in text:
                link.problem = text

        while not self._stop.is_set():
            try:
                with open_store(self.dsn) as store:
                    report = pull(
                        url,
                        self.token,
                        store,
                        follow=True,
                        interval=PULL_EVERY_S,
                        stop=self._stop,
                        on_progress=progress,
                        on_notice=notice,
                    )
                if not report.ok:  # rows dead-lettered: pulling them again refuses them again
                    link.problem = "; ".join(report.faults)
                    return
            except (PullError, StoreError) as exc:
                link.problem = str(exc)
            self._stop.wait(PULL_EVERY_S)

    def link(self, gate: str, state: GateState | None) -> GateLink:
        link = self.links.get(gate, GateLink())
        seen = self._seen.get(gate)
        online = seen is not None and time.monotonic() - seen < 3 * PULL_EVERY_S
        return GateLink(online, link.lag, link.problem)

    async def stop_pulling(self, urls: dict[str, str]) -> None:
        """Stop following; then pull each gate once more, to the head it holds now."""
        self._stop.set()
        await asyncio.gather(*self._threads, return_exceptions=True)
        for gate, url in urls.items():
            try:
                await asyncio.to_thread(self._pull_once, url)
            except (PullError, StoreError) as exc:
                self.links[gate].problem = str(exc)

    def _pull_once(self, url: str) -> None:
        with open_store(self.dsn) as store:
            pull(url, self.token, store)


def _central_mounts(api: ParkApi, dashboard: Dashboard) -> list[Callable[[HttpServer], object]]:
    """What central's HTTP server serves in the demo besides monitoring: the park API at
    ``/api/v1`` and the control room's dashboard at ``/``."""
    return [api.mount, dashboard.mount]


def _part(mount: Callable[[HttpServer], object]) -> CentralWebPart:
    def part(server: HttpServer, _sink: Sink) -> None:
        mount(server)

    return part


def _open_sink(options: SinkOptions, signing_key: Path) -> Sink:
    """The sink, holding central's key of this run: an appointment consumed at one gate is
    at once refused at the other, and a vehicle inside is "already inside" there."""
    return Sink(replace(options, signing_key=pub.load_signing_key(signing_key)))


# ------------------------------------------------------------------------------ view


@dataclass(slots=True)
class CentralSnapshot:
    inside: list[VehicleInside]
    states: dict[str, GateState]
    at: float = field(default_factory=time.monotonic)


class ParkView:
    """What the screen shows: each gate's lanes and last decisions, the trips, and central's
    park view (inside by category, hazmat inside, each gate online and its lag)."""

    def __init__(
        self, gates: dict[str, Gate], central: Central, banner: str, console: Console
    ) -> None:
        self.gates = gates
        self.central = central
        self.banner = banner
        self.console = console
        self.notices = False
        self.decisions: deque[str] = deque(maxlen=8)
        self.trips: deque[str] = deque(maxlen=8)
        self.snapshot: CentralSnapshot | None = None
        for gate_id, gate in gates.items():
            for runner in gate.lanes.values():
                runner.observers.append(self._observer(gate_id))

    def _observer(self, gate_id: str) -> Callable[[LaneRunner, Event | None], None]:
        def observe(runner: LaneRunner, event: Event | None) -> None:
            if isinstance(event, AccessDecided):
                lane = f"{gate_id}/{runner.setup.lane_id}"
                reasons = ", ".join(event.reasons)
                self.note(self.decisions, f"{lane:<12} {event.plate:<9} {event.verdict} {reasons}")

        return observe

    def note(self, where: deque[str], line: str, *, notice: bool = False) -> None:
        text = f"{datetime.now(UTC):%H:%M:%S} {line}"
        where.append(text)
        if notice and self.notices:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)
            self.console.file.flush()

    async def refresh_central(self) -> None:
        def read(store: CentralStore) -> CentralSnapshot:
            return CentralSnapshot(store.presence(), {g.gate: g for g in store.gate_states()})

        self.snapshot = await self.central.store.run(read)

    def render(self) -> Group:
        gates = Table(title="gates", title_justify="left")
        for col in ("gate", "mode", "allow-list", "log head", "in-1", "out-1", "last decision"):
            gates.add_column(col)
        for gate_id, gate in self.gates.items():
            view = gate.allowlist.view if gate.allowlist is not None else None
            head = gate.event_log.head[0] if gate.event_log is not None else 0
            last = [r.last_decision for r in gate.lanes.values() if r.last_decision is not None]
            gates.add_row(
                gate_id,
                str(gate.mode),
                "-" if view is None or not view.version else f"v{view.version}",
                str(head),
                *(str(gate.lanes[lane].state) for lane in ("in-1", "out-1")),
                "-" if not last else f"{last[-1].plate} {last[-1].verdict}",
            )
        parts: list[Table | Text] = [Text(self.banner), gates, *self._central_tables()]
        for title, lines in (("decisions", self.decisions), ("trips", self.trips)):
            table = Table(title=title, title_justify="left", show_header=False)
            table.add_column(title)
            for line in lines:
                table.add_row(Text(line))
            parts.append(table)
        return Group(*parts)

    def _central_tables(self) -> list[Table]:
        snap = self.snapshot
        if snap is None:
            return [Table(title="central: reading its store…", title_justify="left")]
        by_category: dict[str, int] = {}
        for v in snap.inside:
            name = "unknown" if v.category is None else str(v.category)
            by_category[name] = by_category.get(name, 0) + 1
        counts = ", ".join(f"{n} {c}" for c, n in sorted(by_category.items())) or "nobody"
        park = Table(
            title=f"central ({self.central.mode}): {len(snap.inside)} inside — {counts}",
            title_justify="left",
        )
        for col in ("hazardous inside", "category", "entry gate", "inside for"):
            park.add_column(col)
        now = time.time_ns()
        for v in snap.inside:
            if v.category in (VehicleCategory.HAZMAT, VehicleCategory.HAZWASTE):
                since = max(0, now - v.entered_at_ns) // 1_000_000_000
                park.add_row(v.plate, str(v.category), v.entry_gate, f"{since} s")
        if not park.row_count:
            park.add_row("none", "", "", "")
        links = Table(title="central: gates", title_justify="left")
        for col in ("gate", "online", "stored seq", "lag", "allow-list", "mode"):
            links.add_column(col)
        for gate_id in self.gates:
            state = snap.states.get(gate_id)
            link = self.central.link(gate_id, state)
            online = "online" if link.online else "offline"
            if link.problem:
                online += f" ({link.problem[:60]})"
            version = None if state is None else state.allowlist_version
            links.add_row(
                gate_id,
                online,
                "0" if state is None else str(state.stored_seq),
                "-" if link.lag is None else str(link.lag),
                "-" if version is None else f"v{version}",
                "-" if state is None or state.mode is None else state.mode,
            )
        return [park, links]


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
    secret = await asyncio.to_thread(_prepare, files, passwords)
    program, missing = find_mosquitto(options.mosquitto)
    async with contextlib.AsyncExitStack() as stack:
        broker: Broker | None = None
        if program is not None:
            plan = TrialPlan(
                files.trial, PARK_GATES, CENTRAL_ID, port=_free_port(), run_as=getpass.getuser()
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
        await _publish(central, gates, files.signing_key, console)
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
        sink = await stack.enter_async_context(_open_sink(settings, files.signing_key))
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
        key = pub.load_signing_key(files.signing_key)
        publishing = Publishing(PARK_SITE, key, settings.broker, gates=PARK_GATES)
    accounts = AccountStore.open(files.dashboard_accounts, SystemClock().mono_ns, DashboardRole)
    dashboard = await Dashboard.open(files.dsn, accounts, publishing=publishing)
    stack.push_async_callback(dashboard.aclose)
    mounts = _central_mounts(api, dashboard)
    port = options.central_port
    try:
        if sink is not None:
            parts = [*CENTRAL_WEB_PARTS, *map(_part, mounts)]
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
        return ParkSync(f"mqtt://127.0.0.1:{_free_port()}", files.public_key, files.pull_token)
    d = broker.plan.client_dir(gate_id)
    return ParkSync(
        broker.url,
        files.public_key,
        files.pull_token,
        password_file=d / "mqtt-password",
        ca_file=d / "ca.crt",
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
    _say(console, f"Central holds {stored or 'no events'}; {len(inside)} vehicles inside.")
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
