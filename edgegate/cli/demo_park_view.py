"""The park demo's live view (``edgegate.cli.demo_park``): both gates' lanes and decisions,
the trips, and central's park view."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from edgegate.central.store import CentralStore, GateState, VehicleInside
from edgegate.cli.demo_park_central import Central
from edgegate.core.domain import VehicleCategory
from edgegate.core.events import AccessDecided, Event
from edgegate.daemon.gate import Gate
from edgegate.daemon.lane_runner import LaneRunner


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
