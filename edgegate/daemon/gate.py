"""The gate daemon: a supervisor (asyncio TaskGroup) of devices, lanes and the event log.
(About 600 lines as one module: it is the order in which the gate's parts start and stop.)

``Gate.run(stop)`` opens the log and the allow-list, writes ``daemon.started`` with the
config's hash, starts every device driver and lane, checks overstays periodically, and on
``stop`` stops the devices, lets each lane finish its in-flight cycle, writes
``daemon.stopped`` and closes the log. A device that is absent at start-up or fails later is
retried by its driver (fault events, no crash); one failing device never stops other lanes.
Simulated devices (``simulated-plc``, ``simulated-plate-reader``) start an in-process
simulator on 127.0.0.1 or a pty (``edgegate.sim.devices``), driven through the same real
drivers; real devices' configuration becomes the drivers' settings in ``daemon.drivers``.
With ``[sync]`` the uplink (``edgegate.sync.uplink``) sends the log to central over MQTT,
retrying in the background while the broker is unreachable; it stops after
``daemon.stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack

from edgegate import __version__
from edgegate.allowlist.service import AllowListService
from edgegate.clock import SystemClock
from edgegate.config import (
    GateConfig,
    HealthSettings,
    ModbusRtuDevice,
    ModbusTcpDevice,
    SerialPlateReaderDevice,
    SimulatedPlateReaderDevice,
    SimulatedPlcDevice,
    WriteFailureAction,
)
from edgegate.config import (
    Lane as LaneConfig,
)
from edgegate.core.clock import Clock
from edgegate.core.codec import ns_to_datetime
from edgegate.core.domain import CredentialKind, Direction
from edgegate.core.events import (
    DaemonStarted,
    DaemonStopped,
    DeviceFault,
    DeviceRecovered,
    EventDecodeError,
    GateMode,
    ManualAction,
    ManualActionKind,
    ModeChanged,
    OverstayDetected,
    StopReason,
    VehiclePassed,
    decode,
)
from edgegate.core.lane import NS, LaneSetup, LaneTimings, Manual
from edgegate.core.policy import CredentialRef
from edgegate.core.presence import Presence
from edgegate.daemon.clock_watch import ClockWatch
from edgegate.daemon.control import GateController, last_mode_change
from edgegate.daemon.desk import Desk
from edgegate.daemon.drivers import plc_settings, serial_line
from edgegate.daemon.health import GateHealth, HealthProbes
from edgegate.daemon.lane_runner import LaneRunner
from edgegate.daemon.sd_notify import Notifier
from edgegate.daemon.systemd import SystemdReporter
from edgegate.devices.base import DeviceSignal, PlcInputs
from edgegate.devices.modbus import BarrierPlc
from edgegate.devices.plate_reader import SerialPlateReader
from edgegate.devices.plc_profile import BarrierPlcProfile
from edgegate.devices.profiles import load_profile, load_reader_profile
from edgegate.log import EventLog, LogReader
from edgegate.log.retention import Retention, RetentionPolicy

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    # Imported when [sync] is configured: a gate working alone does not carry MQTT, TLS and
    # signature code in memory.
    from edgegate.daemon.metrics import GateMetrics
    from edgegate.daemon.web import GateWeb
    from edgegate.sync.downlink import Downlink
    from edgegate.sync.parklink import ParkLink
    from edgegate.sync.uplink import Uplink
from edgegate.heap import freeze_startup
from edgegate.observability import get_logger
from edgegate.sim.devices import SimulatedDevices

log = get_logger("gate")

DRAIN_TIMEOUT_S = 5.0


def _ns(value: timedelta) -> int:
    return int(value.total_seconds() * NS)


def lane_timings(config: GateConfig, lane_id: str) -> LaneTimings:
    t = config.lane_timings(lane_id)
    return LaneTimings(
        plate_wait=_ns(t.plate_wait),
        plate_early=_ns(t.plate_early),
        open_travel=_ns(t.open_travel),
        close_travel=_ns(t.close_travel),
        pass_timeout=_ns(t.pass_timeout),
        close_delay=_ns(t.close_delay),
        loop_fault_after=_ns(t.loop_fault_after),
        guard_wait=_ns(t.guard_wait),
    )


def lane_setup(config: GateConfig, lane: LaneConfig) -> LaneSetup:
    """A configured lane as the core's lane takes it."""
    return LaneSetup(
        lane_id=lane.id,
        direction=lane.direction,
        barrier_device=lane.barrier,
        loop_device=lane.loops_device,
        has_exit_loop=lane.exit_loop,
        timings=lane_timings(config, lane.id),
    )


@dataclass
class Gate:
    """One gate: its configuration, devices, lanes and log, run by :meth:`run`."""

    config: GateConfig
    config_path: str = ""
    clock: Clock = field(default_factory=SystemClock)
    lanes: dict[str, LaneRunner] = field(default_factory=dict)
    plcs: dict[str, BarrierPlc] = field(default_factory=dict)
    readers: dict[str, SerialPlateReader] = field(default_factory=dict)
    sims: SimulatedDevices = field(default_factory=SimulatedDevices)
    presence: Presence = field(default_factory=Presence)
    event_log: EventLog | None = None
    allowlist: AllowListService | None = None
    uplink: Uplink | None = None
    downlink: Downlink | None = None
    park: ParkLink | None = None
    web: GateWeb | None = None  # the HTTP server of [http] and what is mounted on it
    started: asyncio.Event = field(default_factory=asyncio.Event)
    mode: GateMode = GateMode.NORMAL  # as the log's last mode.changed left it
    #: Lane holds and incident mode, for every source (central, console, PLC inputs).
    control: GateController | None = None
    desk: Desk | None = None  # what the guard's console sees and asks (built with the lanes)
    retention: Retention | None = None  # [log.retention]
    clock_watch: ClockWatch | None = None  # clock steps, and the one decisions carry
    health: GateHealth | None = None  # /readyz; its summary() for a status line
    metrics: GateMetrics | None = None  # with [http]: served at /metrics
    #: How health and the clock watch ask the system (the kernel's word on clock
    #: synchronisation, free disk): tests inject their own.
    probes: HealthProbes = field(default_factory=HealthProbes)
    #: systemd's notify socket (``edgegate run``): READY=1 once the lanes and the HTTP server
    #: run, STATUS=, WATCHDOG=1 while the loop and the log writer answer, STOPPING=1.
    notifier: Notifier | None = None

    async def run(self, stop: asyncio.Event, *, reason: StopReason = StopReason.SIGNAL) -> None:
        config = self.config
        path = config.log_file
        path.parent.mkdir(parents=True, exist_ok=True)
        async with await EventLog.open(path, gate_id=config.gate.id, clock=self.clock) as elog:
            self.event_log = elog
            self.clock_watch = ClockWatch(self.clock, elog, self.probes.clock_synchronised)
            self.allowlist = await AllowListService.open(elog)
            await asyncio.to_thread(self._rebuild_presence, path)
            last_change = await asyncio.to_thread(last_mode_change, path)
            self.mode = GateMode.NORMAL if last_change is None else last_change.mode
            await elog.append(
                DaemonStarted(
                    software_version=__version__,
                    config_hash=config.config_hash(),
                    config_path=self.config_path,
                    pid=os.getpid(),
                    timezone=config.gate.timezone,
                )
            )
            try:
                await self.sims.start(config.devices)
                self._build(elog, self.allowlist)
                self._watch(elog)
                self.control = GateController(
                    self.lanes,
                    elog,
                    config.incident.evacuation_lanes,
                    last_change=last_change,
                )
                self.control.observers.append(self._mode_changed)
                assert self.desk is not None  # built with the lanes
                self.desk.incident = self.control
                # A restart during an evacuation must not close the lanes it held open.
                self.control.restore()
                await self._restore_holds(path)
                await self._start_sync(elog, self.allowlist)
                await self._start_web(elog)
                self._start_retention(elog)
                freeze_startup()  # the allow-list index, profiles, modules: out of full passes
                await self._supervise(stop)
            finally:
                if self.retention is not None:
                    await self.retention.aclose()
                await self.sims.stop()
                with contextlib.suppress(Exception):
                    await elog.append(DaemonStopped(reason=reason))
                # After daemon.stopped, so that a connected uplink can still hand it over;
                # before the log closes (the cursor is written through the log's writer).
                if self.uplink is not None:
                    await self.uplink.aclose()
                if self.web is not None:
                    await self.web.aclose()
                log.info("gate_stopped", gate=config.gate.id)

    async def _restore_holds(self, path: Path) -> None:
        """A lane the log shows held open (its last manual open, release or close was an
        open, by a guard or central) is held again, logged as a manual action naming who
        held it: a restart must not drop a hold silently."""
        held = await asyncio.to_thread(_held_lanes, path)
        for lane_id, (seq, action) in held.items():
            runner = self.lanes.get(lane_id)
            if runner is None:
                log.warning("held_lane_unknown", lane=lane_id, seq=seq)
                continue
            log.warning("hold_restored", lane=lane_id, operator=action.operator, seq=seq)
            runner.manual(
                Manual(
                    ManualActionKind.OPEN,
                    action.operator,
                    f"hold restored after a restart (held since seq {seq}: {action.reason})"[:500],
                )
            )

    # --- sync -----------------------------------------------------------------------------

    async def _start_sync(self, elog: EventLog, allowlist: AllowListService) -> None:
        """With ``[sync]``: start the uplink (the gate's one MQTT connection) with the signed
        downlink on it. The uplink retries in the background
        while the broker is unreachable; the gate decides regardless. A sync part that cannot
        start (unreadable key or token) is logged and left out; the gate runs on.

        After ``_build``: handlers that need the lanes attach before the first connect, which
        may deliver messages queued in the persistent session at once."""
        config = self.config
        sync = config.sync
        if sync is None:
            return
        from edgegate.sync.downlink import Downlink
        from edgegate.sync.protocol import SnapshotRequest, encode_request
        from edgegate.sync.uplink import Uplink, UplinkOptions

        for key, problem in config.file_problems():
            log.error("sync_config_problem", key=key, problem=problem)
        uplink = Uplink(
            elog,
            UplinkOptions.from_config(config),
            clock=self.clock,
            allowlist_version=lambda: allowlist.view.version,
        )
        self.uplink = uplink
        topics = uplink.topics
        central_key = self._sync_key(
            "central_public_key",
            sync.central_public_key,
            disabled="sync_downlink_disabled",
            consequence="allow-lists and commands from central are not taken",
        )
        if central_key is not None:

            async def request_snapshot(request: SnapshotRequest) -> None:
                await uplink.publish(topics.requests, encode_request(request), qos=1)

            assert self.control is not None  # built with the lanes
            downlink = Downlink(
                config.gate.id,
                central_key,
                allowlist,
                elog,
                self.control,
                self.clock,
                request_snapshot,
            )
            await downlink.restore()
            uplink.add_subscription(topics.allowlist, downlink.on_allowlist)
            uplink.add_subscription(topics.commands, downlink.on_command)
            uplink.add_connect_hook(downlink.on_connected)  # a tampered list asks a snapshot
            self.downlink = downlink
        if sync.park_public_key is not None:
            await self._start_park(uplink, allowlist, elog)
        uplink.start()

    async def _start_park(
        self, uplink: Uplink, allowlist: AllowListService, elog: EventLog
    ) -> None:
        """With ``[sync] park_public_key``: apply central's park chain of this gate's site
        (park-wide consumption, vehicles inside elsewhere); an unreadable key is logged and
        the gate runs without it."""
        from edgegate.sync.park import park_topic
        from edgegate.sync.parklink import ParkLink
        from edgegate.sync.protocol import ParkResendRequest, encode_request

        config = self.config
        sync = config.sync
        assert sync is not None and sync.park_public_key is not None
        park_key = self._sync_key(
            "park_public_key",
            sync.park_public_key,
            disabled="sync_park_disabled",
            consequence="appointments consumed at other gates still admit here",
        )
        if park_key is None:
            return

        async def request_resend(request: ParkResendRequest) -> None:
            await uplink.publish(uplink.topics.requests, encode_request(request), qos=1)

        park = ParkLink(
            config.gate.id,
            config.sync_site,
            park_key,
            allowlist,
            elog,
            self.clock,
            request_resend,
            inside_max_age_ns=int(sync.park_inside_max_age.total_seconds() * 10**9),
        )
        await park.restore()
        uplink.add_subscription(park_topic(config.sync_site), park.on_park)
        uplink.add_connect_hook(park.on_connected)
        self.park = park

    def _sync_key(
        self, key: str, path: str, *, disabled: str, consequence: str
    ) -> Ed25519PublicKey | None:
        """The public key at ``[sync] <key>``; None, logged as ``disabled`` with what the gate
        goes without, when it cannot be read."""
        from edgegate.sync.signing import KeyLoadError, load_public_key

        try:
            return load_public_key(self.config.resolve_path(path))
        except (KeyLoadError, OSError) as exc:
            log.error(disabled, key=f"sync.{key}", problem=str(exc), consequence=consequence)
            return None

    async def _start_web(self, elog: EventLog) -> None:
        """With ``[http]``: the HTTP server, with the pull API and the console if configured,
        and the monitoring endpoints."""
        if self.config.http is None:
            return
        from edgegate.daemon.web import GateWeb

        self.web = GateWeb(
            self.config,
            elog,
            self.clock,
            desk=self.desk,
            health=self.health,
            metrics=self.metrics,
        )
        await self.web.start()

    def _start_retention(self, elog: EventLog) -> None:
        """With ``[log.retention]``: roll over, archive and remove in the background; only
        what central acknowledged (the uplink's durable cursor) is archived, unless the gate
        has no ``[sync]`` and says so (check-config refuses anything else)."""
        settings = self.config.log.retention
        if settings is None:
            return
        from edgegate.sync.cursor import CURSOR_NAME

        policy = RetentionPolicy(
            timezone=self.config.gate.timezone,
            max_segment_size=settings.max_segment_size,
            keep=settings.keep,
            archive_budget=settings.archive_budget,
            compression_level=settings.compression_level,
            acked_cursor=None if settings.archive_unacknowledged else CURSOR_NAME,
            check_every=settings.check_every,
        )
        self.retention = Retention(elog, policy, self.clock)
        self.retention.start()

    def _watch(self, elog: EventLog) -> None:
        """Health (always) and, with ``[http]`` to serve them, the metrics."""
        health = GateHealth(self, self.config.health or HealthSettings(), self.probes)
        self.health = health
        if self.config.http is None:
            elog.on_commit = health.committed
            return
        from edgegate.daemon.metrics import GateMetrics

        metrics = self.metrics = GateMetrics(self, health)

        def committed(seconds: float, items: int) -> None:
            health.committed()
            metrics.committed(seconds, items)

        elog.on_commit = committed

    # --- building -------------------------------------------------------------------------

    def _build(self, elog: EventLog, allowlist: AllowListService) -> None:
        config = self.config
        rules = config.rules()
        for name, device in config.devices.items():
            if isinstance(device, ModbusTcpDevice | ModbusRtuDevice):
                profile = load_profile(device.profile, family=BarrierPlcProfile)
                self.plcs[name] = BarrierPlc(name, plc_settings(device), profile)
            elif isinstance(device, SimulatedPlcDevice):
                self.plcs[name] = BarrierPlc(name, *self.sims.plc(name))
            elif isinstance(device, SerialPlateReaderDevice | SimulatedPlateReaderDevice):
                lane = next(x for x in config.lanes if x.plate_reader == name)
                window = (
                    device.duplicate_read_window
                    if isinstance(device, SerialPlateReaderDevice)
                    else None
                )
                window = window or config.lane_timings(lane.id).duplicate_read_window
                if isinstance(device, SimulatedPlateReaderDevice):
                    line, reader_profile = self.sims.reader(name)
                else:
                    line, reader_profile = serial_line(device), load_reader_profile(device.profile)
                self.readers[name] = SerialPlateReader(
                    name,
                    line,
                    reader_profile,
                    window,
                    reconnect_initial=timedelta(milliseconds=100),
                )
        policy = config.log.on_write_failure
        for lane in config.lanes:
            self.lanes[lane.id] = LaneRunner(
                lane_setup(config, lane),
                rules,
                elog,
                allowlist,
                self.plcs[lane.barrier],
                self.clock,
                open_without_log=policy.for_direction(lane.direction) is WriteFailureAction.ALLOW,
                on_pass=self._on_pass,
                clock_step=None if self.clock_watch is None else self.clock_watch.at_decision,
            )
        self.desk = Desk(
            config.gate.id,
            str(config.gate.kind),
            self.lanes,
            self.clock,
            mode=lambda: self.mode,
            evacuation_lanes=config.incident.evacuation_lanes,
        )

    # --- running --------------------------------------------------------------------------

    def _sink_for(self, device: str) -> Callable[[DeviceSignal], None]:
        """A device serves one lane (the configuration allows no sharing per role). A PLC's
        inputs also go to the gate's control (its alarm and button inputs) before the lane's
        inbox."""
        lane = next(
            x.id for x in self.config.lanes if device in (x.barrier, x.loops_device, x.plate_reader)
        )
        submit = self.lanes[lane].submit
        control = self.control
        if device not in self.plcs or control is None:
            return submit

        def sink(signal: DeviceSignal) -> None:
            if isinstance(signal, PlcInputs):
                control.plc_inputs(lane, signal)
            submit(signal)

        return sink

    def _mode_changed(self, event: ModeChanged, _seq: int) -> None:
        self.mode = event.mode
        if self.desk is not None:
            self.desk.changed()

    async def _supervise(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            devices: list[asyncio.Task[None]] = []
            for name, plc in self.plcs.items():
                devices.append(tg.create_task(self._keep(name, plc.run, self._sink_for(name))))
            for name, reader in self.readers.items():
                devices.append(tg.create_task(self._keep(name, reader.run, self._sink_for(name))))
            lanes = [tg.create_task(runner.run()) for runner in self.lanes.values()]
            checker = tg.create_task(self._check_overstays())
            assert self.clock_watch is not None
            watch = tg.create_task(self.clock_watch.run())
            assert self.health is not None
            watcher = tg.create_task(self.health.run())
            assert self.control is not None
            controller = tg.create_task(self.control.run())
            self.started.set()
            log.info("gate_started", gate=self.config.gate.id, lanes=len(self.lanes))
            reporter = SystemdReporter(self.notifier or Notifier(None), self)
            notifying = tg.create_task(reporter.run())
            await stop.wait()
            reporter.stopping()
            # Finish the in-flight cycles while the devices can still be commanded, then stop.
            for runner in self.lanes.values():
                try:
                    async with asyncio.timeout(DRAIN_TIMEOUT_S):
                        await runner.drain()
                except TimeoutError:
                    log.error("lane_drain_timeout", lane=runner.setup.lane_id)
            for task in (*devices, *lanes, checker, watch, watcher, controller, notifying):
                task.cancel()
        for plc in self.plcs.values():
            with contextlib.suppress(Exception):
                await plc.aclose()

    async def _keep(
        self,
        name: str,
        run: Callable[[Callable[[DeviceSignal], None]], Awaitable[None]],
        sink: Callable[[DeviceSignal], None],
    ) -> None:
        """Drivers never raise; if one does anyway (a bug), restart it rather than stop the
        gate."""
        while True:
            try:
                await run(sink)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("driver_crashed", device=name, error=repr(exc))
                sink(DeviceFault(device=name, code="driver-crashed", message=repr(exc)[:200]))
                await asyncio.sleep(1.0)

    # --- presence and overstays -----------------------------------------------------------

    def _rebuild_presence(self, path: Path) -> None:
        with LogReader(path) as reader:
            passes = reader.clocked_of_types((VehiclePassed.TYPE,))
            for seq, wall_ns, mono_ns, boot_id, data in passes:
                fields = msgpack.unpackb(data)
                at = ns_to_datetime(wall_ns)
                if fields.get("direction") == Direction.ENTRY.value:
                    until = fields.get("permit_until")
                    self.presence.enter(
                        fields["plate"],
                        None if fields.get("category") is None else fields["category"],
                        at,
                        None,
                        None if until is None else ns_to_datetime(until),
                        seq,
                        (boot_id, mono_ns),
                    )
                else:
                    self.presence.leave(fields["plate"], at, seq)

    def _on_pass(self, event: VehiclePassed, seq: int) -> None:
        at = datetime.fromtimestamp(self.clock.wall_ns() / 1e9, UTC)
        if not event.plate:
            return
        if event.direction is Direction.ENTRY:
            credential = None
            if event.credential_id is not None:
                credential = CredentialRef(CredentialKind.REGISTRATION, event.credential_id)
            mono = (self.clock.boot_id, self.clock.mono_ns())
            self.presence.enter(
                event.plate, event.category, at, credential, event.permit_until, seq, mono
            )
        else:
            self.presence.leave(event.plate, at, seq)

    async def _check_overstays(self) -> None:
        every = self.config.timings.overstay_check_every.total_seconds()
        limits = self.config.rules().dwell_limits
        assert self.event_log is not None
        while True:
            now = datetime.fromtimestamp(self.clock.wall_ns() / 1e9, UTC)
            mono = (self.clock.boot_id, self.clock.mono_ns())
            for overstay in self.presence.overstays(now, limits, mono=mono):
                stay = overstay.stay
                await self.event_log.append(
                    OverstayDetected(
                        plate=stay.plate,
                        category=stay.category,
                        entered_at=stay.entered_at,
                        limit=str(overstay.limit),
                        deadline=overstay.deadline,
                        entry_seq=stay.entry_seq,
                    )
                )
                self.presence.mark_reported(overstay)
            await asyncio.sleep(every)


__all__ = ["DeviceRecovered", "Gate", "lane_timings"]


def _held_lanes(path: Path) -> dict[str, tuple[int, ManualAction]]:
    """Lanes whose last manual open, release or close in the log is an open (with its seq)."""
    last: dict[str, tuple[int, ManualAction]] = {}
    with LogReader(path) as reader:
        for seq, _, _, lane, version, data in reader.of_types((ManualAction.TYPE,)):
            try:
                event = decode(ManualAction.TYPE, version, data, lane)
            except EventDecodeError:
                continue
            assert isinstance(event, ManualAction)
            if lane is not None and event.action in _HOLD_ACTIONS:
                last[lane] = (seq, event)
    return {lane: held for lane, held in last.items() if held[1].action is ManualActionKind.OPEN}


_HOLD_ACTIONS = frozenset({ManualActionKind.OPEN, ManualActionKind.RELEASE, ManualActionKind.CLOSE})
