"""Central's Prometheus metrics: the sink's figures, in a registry of its own, read from the
sink when scraped (its counters and heads), plus the store-and-ack latency observed as each
group is acked. Labels are gate ids, never event contents. docs/operations.md lists them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgegate import __version__
from edgegate.central.sink import Sink

disable_created_metrics()  # type: ignore[no-untyped-call]

#: SinkCounters fields exported as counters: (field, metric name, help).
_COUNTERS = (
    ("messages", "messages", "MQTT messages taken from the broker."),
    ("batches", "batches", "Event batches stored, or found stored already."),
    ("duplicates", "duplicate_events", "Events received again that were stored already."),
    ("dead_letters", "dead_letters", "Payloads or batch parts put in dead_letters."),
    ("gaps", "gaps", "Batches parked because events before them were missing."),
    ("resend_requests", "resend_requests", "Requests to a gate to resend from a seq."),
    ("acks", "acks", "Acks sent to gates."),
    ("connects", "connects", "Connections to the broker."),
    ("store_failures", "store_failures", "Times the store failed (the sink reconnects)."),
    ("read_pauses", "read_pauses", "Times reading from the broker paused (too much held)."),
    ("qos0_discarded", "qos0_discarded", "QoS 0 messages discarded (too many waiting)."),
    (
        "park_entry_recorded",
        "park_entry_recorded",
        "Consumption deltas recorded by this instance (one per other gate).",
    ),
    (
        "park_entry_published",
        "park_entry_published",
        "Consumption deltas published and acknowledged by the broker.",
    ),
)


class SinkMetrics:
    """The metrics of one sink instance; :meth:`render` is the ``/metrics`` body."""

    def __init__(self, sink: Sink) -> None:
        self.registry = CollectorRegistry()
        self.ack_seconds = Histogram(
            "edgegate_central_ack_seconds",
            "From a group of batches taken for storing to its acks sent (store commit included).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.registry.register(_SinkCollector(sink))
        sink.on_acked = self.ack_seconds.observe

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SinkCollector(Collector):
    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._behind_since: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        sink = self._sink
        info = GaugeMetricFamily(
            "edgegate_central_build_info", "The software's version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        connected = GaugeMetricFamily(
            "edgegate_central_connected", "1 while connected and subscribed to the broker."
        )
        connected.add_metric([], 1 if sink.ready else 0)
        held = GaugeMetricFamily(
            "edgegate_central_held_bytes", "Payload bytes received and not yet committed."
        )
        held.add_metric([], sink.counters.held_bytes)
        park_entry = GaugeMetricFamily(
            "edgegate_central_park_entry_enabled",
            "1 when park-wide consumption is on (central run --signing-key), else 0.",
        )
        park_entry.add_metric([], 1 if sink.park_entry else 0)
        yield from (info, connected, held, park_entry)
        for field_name, name, help_text in _COUNTERS:
            counter = CounterMetricFamily(f"edgegate_central_{name}", help_text)
            counter.add_metric([], getattr(sink.counters, field_name))
            yield counter
        yield from self._gates(sink)

    def _gates(self, sink: Sink) -> Iterator[Metric]:
        stored = CounterMetricFamily(
            "edgegate_central_events_stored", "New events stored, by gate.", labels=["gate"]
        )
        head = GaugeMetricFamily(
            "edgegate_central_gate_head_seq",
            "The highest seq of a gate stored without a gap.",
            labels=["gate"],
        )
        reported = GaugeMetricFamily(
            "edgegate_central_gate_reported_head_seq",
            "The gate's own head, as its latest status says.",
            labels=["gate"],
        )
        lag = GaugeMetricFamily(
            "edgegate_central_gate_lag_events",
            "Events a gate reported that central has not stored yet.",
            labels=["gate"],
        )
        lag_s = GaugeMetricFamily(
            "edgegate_central_gate_lag_seconds",
            "How long central has been behind a gate's reported head (0: caught up), as seen "
            "at each scrape.",
            labels=["gate"],
        )
        online = GaugeMetricFamily(
            "edgegate_central_gate_online",
            "1 while a gate's status says online (0: offline, its last will).",
            labels=["gate"],
        )
        heads = sink.heads()
        now = time.monotonic()
        for gate in sorted(set(heads) | set(sink.statuses) | set(sink.stored_events)):
            stored.add_metric([gate], sink.stored_events.get(gate, 0))
            ours = heads.get(gate, 0)
            head.add_metric([gate], ours)
            status = sink.statuses.get(gate)
            if status is None:
                continue
            reported.add_metric([gate], status.head_seq)
            online.add_metric([gate], 1 if status.state == "online" else 0)
            behind = max(0, status.head_seq - ours)
            lag.add_metric([gate], behind)
            if behind:
                since = self._behind_since.setdefault(gate, now)
            else:
                self._behind_since.pop(gate, None)
                since = now
            lag_s.add_metric([gate], now - since)
        yield from (stored, head, reported, lag, lag_s, online)
