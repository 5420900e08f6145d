"""The gate's Prometheus metrics, in a registry of its own (several gates may run in one
process), served at ``/metrics`` by :mod:`edgegate.daemon.web`.

What is state (lane states, incident mode, the allow-list, devices, sync, the log's size,
readiness) is read from the gate when scraped, by :class:`_GateCollector`: nothing on the
lanes' path. What happens (decisions, commands, appends and commits, faults, guard waits)
is counted where it happens, through each lane's :class:`LaneMeter` and the log's commit
hook: a counter increment or a histogram observation. Labels are lanes, devices, verdicts and
the like: never a plate nor any credential. docs/operations.md lists every metric.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgegate import __version__
from edgegate.core.allowlist import AllowList
from edgegate.core.clock import Clock
from edgegate.core.events import Event, GateMode, GuardWaitExpired
from edgegate.core.lane import LaneState
from edgegate.core.policy import Verdict
from edgegate.daemon.lane_runner import LaneMeter, LaneRunner
from edgegate.log import EventLog

if TYPE_CHECKING:
    from edgegate.daemon.gate import Gate
    from edgegate.daemon.health import GateHealth

# No "_created" series: half the scrape, and Prometheus does not need them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_PLC = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_GUARD = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class GateMetrics:
    """The metrics of one gate; :meth:`render` is the ``/metrics`` body."""

    def __init__(self, gate: Gate, health: GateHealth) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=r)

        self.decisions = counter(
            "edgegate_decisions", "Access decisions, by lane and verdict.", "lane", "verdict"
        )
        self.decision_seconds = Histogram(
            "edgegate_decision_seconds",
            "From a lane taking a plate read to its decision and commands durable in the log.",
            ["lane"],
            buckets=_FAST,
            registry=r,
        )
        self.plc_command_seconds = Histogram(
            "edgegate_plc_command_seconds",
            "Barrier command round trips to the PLC (write and read-back), by outcome.",
            ["device", "outcome"],
            buckets=_PLC,
            registry=r,
        )
        self.log_append_seconds = Histogram(
            "edgegate_log_append_seconds",
            "The lanes' appends to the event log, from handing over to durable.",
            buckets=_FAST,
            registry=r,
        )
        self.log_commit_seconds = Histogram(
            "edgegate_log_commit_seconds",
            "The log writer's commits (one or many events each), failed ones included.",
            buckets=_FAST,
            registry=r,
        )
        self.device_faults = counter(
            "edgegate_device_faults",
            "Device faults logged (a device going away, a failed command), by device.",
            "device",
        )
        self.guard_waits = counter(
            "edgegate_guard_waits", "Vehicles that waited for a guard's answer, by lane.", "lane"
        )
        self.guard_waits_expired = counter(
            "edgegate_guard_waits_expired",
            "Guard waits given up unanswered (guard_wait passed), by lane.",
            "lane",
        )
        self.guard_wait_seconds = Histogram(
            "edgegate_guard_wait_seconds",
            "How long vehicles waited for a guard's answer (or the give-up), by lane.",
            ["lane"],
            buckets=_GUARD,
            registry=r,
        )
        r.register(_GateCollector(gate, health))
        self._waiting: dict[str, float | None] = {}
        self._expired: set[str] = set()
        for lane_id, runner in gate.lanes.items():
            # Children exist from the start: a lane with no decision yet shows 0, not nothing.
            self.decision_seconds.labels(lane_id)
            for verdict in Verdict:
                self.decisions.labels(lane_id, verdict.value)
            for outcome in ("ok", "failed"):
                self.plc_command_seconds.labels(runner.setup.barrier_device, outcome)
            self.guard_waits.labels(lane_id)
            self.guard_waits_expired.labels(lane_id)
            self.guard_wait_seconds.labels(lane_id)
            runner.meter = _LaneMeter(self, lane_id)
            runner.observers.append(self._observe)
        for device in (*gate.plcs, *gate.readers):
            self.device_faults.labels(device)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def committed(self, seconds: float, _items: int) -> None:
        """The log's commit hook (in the writer thread)."""
        self.log_commit_seconds.observe(seconds)

    def _observe(self, runner: LaneRunner, event: Event | None) -> None:
        """Guard waits, from the lane's state as its observers see it change."""
        lane_id = runner.setup.lane_id
        waiting = runner.lane.state is LaneState.AWAITING_GUARD
        since = self._waiting.get(lane_id)
        if isinstance(event, GuardWaitExpired):
            self._expired.add(lane_id)
        if waiting and since is None:
            self._waiting[lane_id] = time.monotonic()
            self.guard_waits.labels(lane_id).inc()
        elif not waiting and since is not None:
            self._waiting[lane_id] = None
            self.guard_wait_seconds.labels(lane_id).observe(time.monotonic() - since)
            if lane_id in self._expired:
                self.guard_waits_expired.labels(lane_id).inc()
        if not waiting:
            self._expired.discard(lane_id)


class _LaneMeter(LaneMeter):
    """A lane's meter with its label children bound once (``labels()`` is a dict lookup
    under a lock: done per verdict or device, not per event)."""

    def __init__(self, metrics: GateMetrics, lane_id: str) -> None:
        self._metrics = metrics
        self._lane = lane_id
        self._decided: dict[str, Counter] = {}
        self._latency = metrics.decision_seconds.labels(lane_id)
        self._append = metrics.log_append_seconds
        self._commands: dict[tuple[str, bool], Histogram] = {}

    def decided(self, verdict: str, seconds: float) -> None:
        counter = self._decided.get(verdict)
        if counter is None:
            counter = self._decided[verdict] = self._metrics.decisions.labels(self._lane, verdict)
        counter.inc()
        self._latency.observe(seconds)

    def appended(self, seconds: float) -> None:
        self._append.observe(seconds)

    def commanded(self, device: str, seconds: float, ok: bool) -> None:
        child = self._commands.get((device, ok))
        if child is None:
            outcome = "ok" if ok else "failed"
            child = self._commands[device, ok] = self._metrics.plc_command_seconds.labels(
                device, outcome
            )
        child.observe(seconds)

    def faulted(self, device: str) -> None:
        self._metrics.device_faults.labels(device).inc()


class _GateCollector(Collector):
    """The gate's state, read when scraped."""

    def __init__(self, gate: Gate, health: GateHealth) -> None:
        self._gate = gate
        self._health = health

    def collect(self) -> Iterator[Metric]:
        gate, health = self._gate, self._health
        info = GaugeMetricFamily(
            "edgegate_build_info", "The software's version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield from self._lanes(gate)
        incident = GaugeMetricFamily(
            "edgegate_incident_mode",
            "1 while the gate is in incident mode (evacuation).",
            value=1 if gate.mode is GateMode.INCIDENT else 0,
        )
        yield incident
        if gate.allowlist is not None:
            yield from self._allowlist(gate.allowlist.view, gate.clock)
        yield from self._devices(gate, health)
        if gate.event_log is not None:
            yield from self._log(gate.event_log)
        yield from self._sync(gate, health)
        yield from self._readiness(health)

    @staticmethod
    def _lanes(gate: Gate) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "edgegate_lane_state",
            "1 for the state each lane is in, 0 for the others.",
            labels=["lane", "state"],
        )
        faults = GaugeMetricFamily(
            "edgegate_lane_faults", "Device faults a lane has now.", labels=["lane"]
        )
        losses = CounterMetricFamily(
            "edgegate_lane_inbox_losses",
            "Inputs a full lane inbox cost: reader items dropped, PLC inputs replaced by "
            "newer ones, urgent items lost.",
            labels=["lane", "kind"],
        )
        for lane_id, runner in gate.lanes.items():
            now = runner.state
            for s in LaneState:
                state.add_metric([lane_id, s.value], 1 if s is now else 0)
            faults.add_metric([lane_id], len(runner.faults))
            inbox = runner.inbox
            losses.add_metric([lane_id, "dropped"], inbox.dropped)
            losses.add_metric([lane_id, "replaced"], inbox.replaced)
            losses.add_metric([lane_id, "lost"], inbox.lost)
        yield from (state, faults, losses)

    @staticmethod
    def _allowlist(view: AllowList, clock: Clock) -> Iterator[Metric]:
        version = GaugeMetricFamily(
            "edgegate_allowlist_version", "The allow-list's version.", value=view.version
        )
        entries = GaugeMetricFamily(
            "edgegate_allowlist_entries", "Credentials on the allow-list.", value=len(view)
        )
        tampered = GaugeMetricFamily(
            "edgegate_allowlist_tampered",
            "1 while the stored allow-list failed its integrity check.",
            value=1 if view.tampered else 0,
        )
        yield from (version, entries, tampered)
        if view.updated_at is not None:
            age = GaugeMetricFamily(
                "edgegate_allowlist_age_seconds",
                "Seconds since the allow-list was last updated (by the gate's clock).",
                value=max(0.0, clock.wall_ns() / 1e9 - view.updated_at.timestamp()),
            )
            yield age

    @staticmethod
    def _devices(gate: Gate, health: GateHealth) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "edgegate_device_up",
            "1 while a device answers (a PLC its polls; a plate reader: its port open).",
            labels=["device", "kind"],
        )
        seen = GaugeMetricFamily(
            "edgegate_device_last_seen_age_seconds",
            "Seconds since a device was last seen (0 while it is; see /readyz).",
            labels=["device"],
        )
        rejected = CounterMetricFamily(
            "edgegate_frames_rejected",
            "Bad frames and runs of garbage from a plate reader.",
            labels=["device"],
        )
        for name, plc in gate.plcs.items():
            up.add_metric([name, "plc"], 1 if plc.connected else 0)
            seen.add_metric([name], health.device_seen_age(name))
        for name, reader in gate.readers.items():
            up.add_metric([name, "plate-reader"], 1 if reader.connected else 0)
            seen.add_metric([name], health.device_seen_age(name))
            rejected.add_metric([name], reader.frames_rejected)
        yield from (up, seen, rejected)

    @staticmethod
    def _log(elog: EventLog) -> Iterator[Metric]:
        head = GaugeMetricFamily(
            "edgegate_log_head_seq", "The seq of the log's last event.", value=elog.head[0]
        )
        size = GaugeMetricFamily(
            "edgegate_log_size_bytes",
            "The log on disk, in bytes, by part: the active file with its write-ahead log, "
            "sealed segments, archives ([log.retention]).",
            labels=["part"],
        )
        usage = elog.disk_usage()
        size.add_metric(["active"], usage.active)
        size.add_metric(["segments"], usage.segments)
        size.add_metric(["archives"], usage.archives)
        kept = GaugeMetricFamily(
            "edgegate_log_first_kept_seq",
            "The first seq still on the gate's disk (1 until [log.retention] removes archives).",
            value=elog.first_kept_seq,
        )
        writable = GaugeMetricFamily(
            "edgegate_log_writable",
            "1 while the log's last commit succeeded.",
            value=1 if elog.write_problem is None else 0,
        )
        yield from (head, size, kept, writable)

    @staticmethod
    def _sync(gate: Gate, health: GateHealth) -> Iterator[Metric]:
        uplink, elog = gate.uplink, gate.event_log
        if uplink is None or elog is None:
            return
        connected = GaugeMetricFamily(
            "edgegate_sync_connected",
            "1 while the uplink to central's broker is connected.",
            value=1 if uplink.connected.is_set() else 0,
        )
        backlog = GaugeMetricFamily(
            "edgegate_sync_backlog_events",
            "Events central has not acknowledged yet.",
            value=max(0, elog.head[0] - uplink.acked_seq),
        )
        acked = GaugeMetricFamily(
            "edgegate_sync_acked_seq",
            "The highest seq central acknowledged.",
            value=uplink.acked_seq,
        )
        yield from (connected, backlog, acked)
        if health.sync_lag_s is not None:
            lag = GaugeMetricFamily(
                "edgegate_sync_lag_seconds",
                "Age of the oldest event central has not acknowledged (0: none), as of the "
                "latest health poll.",
                value=health.sync_lag_s,
            )
            yield lag

    @staticmethod
    def _readiness(health: GateHealth) -> Iterator[Metric]:
        ready, body = health.readiness()
        gauge = GaugeMetricFamily(
            "edgegate_ready", "1 while /readyz answers ready.", value=1 if ready else 0
        )
        ok = GaugeMetricFamily(
            "edgegate_health_ok",
            "1 while a readiness component reports ok (see /readyz for its problem).",
            labels=["component"],
        )
        for name, component in body["components"].items():
            ok.add_metric([name], 1 if component["ok"] else 0)
        yield from (gauge, ok)
