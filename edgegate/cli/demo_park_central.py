"""Central in the park demo (``edgegate.cli.demo_park``): the sink subscribed to the demo's
mosquitto, or without a broker a puller per gate, and what its HTTP server serves."""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgegate.central import publish as pub
from edgegate.central.api import ParkApi
from edgegate.central.dashboard import Dashboard
from edgegate.central.pull import PullError, PullReport, pull
from edgegate.central.sink import Sink, SinkOptions
from edgegate.central.store import AsyncStore, GateState, StoreError, open_store
from edgegate.central.store.publications import Publication
from edgegate.central.web import CentralWebPart
from edgegate.cli.demo_park_setup import Broker, ParkError
from edgegate.daemon.gate import Gate
from edgegate.sim.park import PARK_SITE
from edgegate.web import HttpServer

#: Seconds between two pulls of a gate's log when there is no broker.
PULL_EVERY_S = 2.0


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


def central_mounts(api: ParkApi, dashboard: Dashboard) -> list[Callable[[HttpServer], object]]:
    """What central's HTTP server serves in the demo besides monitoring: the park API at
    ``/api/v1`` and the control room's dashboard at ``/``."""
    return [api.mount, dashboard.mount]


def web_part(mount: Callable[[HttpServer], object]) -> CentralWebPart:
    def part(server: HttpServer, _sink: Sink) -> None:
        mount(server)

    return part


def open_sink(options: SinkOptions, park_key: Path) -> Sink:
    """The sink, holding central's park key of this run (not the master key): an
    appointment consumed at one gate is at once refused at the other, and a vehicle inside
    is "already inside" there."""
    return Sink(replace(options, park_key=pub.load_signing_key(park_key)))
