"""The gate's health: whether it is alive and ready, component by component, for ``/readyz``,
the metrics and systemd's ``STATUS=`` line.

Every ``[health].poll_period`` each component reports ``ok`` or a short problem:

- ``log``: the last commit succeeded (``EventLog.write_problem``), the writer thread runs, and
  it has not left events waiting without finishing a commit for ``log_stall``;
- ``lanes``: every lane's runner is running;
- ``device:NAME``: the device was seen within its silence limit. A PLC is seen when it
  answers its polls; a plate reader, quiet at night, is seen while its serial port is open
  without a fault (the driver faults it as soon as the port goes away);
- ``disk``: the log's file system has more than ``disk_reserve`` free;
- ``allowlist``: the allow-list is not older than ``[policy].allowlist_max_age`` (nor
  tampered);
- ``clock``: the system clock is synchronised, where the system says (NTP's verdict in the
  kernel; where it does not say, ok).

The gate is ready when every component's latest report is ok and no older than three poll
periods (a component that stops reporting is failing). Polling costs nothing on the lanes'
path: it reads state the gate keeps anyway; the file-system checks run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from edgegate.clock import system_clock_synchronised
from edgegate.config import HealthSettings
from edgegate.log import LogError, LogReader
from edgegate.observability import get_logger

if TYPE_CHECKING:
    from edgegate.daemon.gate import Gate

log = get_logger("health")

#: A report older than this many poll periods counts as failing.
STALE_PERIODS = 3


class FsStat(Protocol):
    """What health reads of ``os.statvfs``."""

    @property
    def f_bavail(self) -> int: ...
    @property
    def f_frsize(self) -> int: ...


@dataclass(frozen=True, slots=True)
class HealthProbes:
    """How health asks the system (tests inject their own)."""

    statvfs: Callable[[str], FsStat] = os.statvfs
    clock_synchronised: Callable[[], bool | None] = system_clock_synchronised
    monotonic: Callable[[], float] = time.monotonic


@dataclass(frozen=True, slots=True)
class Report:
    """One component's latest report; ``at`` in monotonic seconds."""

    ok: bool
    problem: str | None
    at: float


@dataclass(frozen=True, slots=True)
class HealthSummary:
    """Ready or not, and the failing components by name (for a one-line status)."""

    ready: bool
    failing: tuple[str, ...]

    def line(self) -> str:
        return "ready" if self.ready else "not ready: " + ", ".join(self.failing)


@dataclass
class GateHealth:
    """The health of a running :class:`Gate`; :meth:`run` polls until cancelled."""

    gate: Gate
    settings: HealthSettings = field(default_factory=HealthSettings)
    probes: HealthProbes = field(default_factory=HealthProbes)
    reports: dict[str, Report] = field(default_factory=dict)
    #: Age in seconds of the oldest event central has not acknowledged (0: none), as of the
    #: latest poll; None without ``[sync]``.
    sync_lag_s: float | None = None
    #: Set once the first poll has reported (systemd's first ``STATUS=`` waits for it).
    reported: asyncio.Event = field(default_factory=asyncio.Event)
    _seen: dict[str, float] = field(default_factory=dict)
    _last_commit: float = 0.0
    _reader: LogReader | None = None

    def __post_init__(self) -> None:
        now = self.probes.monotonic()
        # A device gets its silence limit to be seen from the start.
        self._seen = {name: now for name in (*self.gate.plcs, *self.gate.readers)}
        self._last_commit = now

    @property
    def period(self) -> float:
        return self.settings.poll_period.total_seconds()

    def committed(self, _seconds: float = 0.0, _items: int = 0) -> None:
        """The log's writer finished a commit (called in its thread)."""
        self._last_commit = self.probes.monotonic()

    # --- what is read -----------------------------------------------------------------------

    def summary(self) -> HealthSummary:
        now = self.probes.monotonic()
        failing = tuple(name for name, r in self._current(now).items() if not r.ok)
        return HealthSummary(ready=not failing, failing=failing)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/readyz``'s answer: ready or not, and the JSON body, per component."""
        now = self.probes.monotonic()
        current = self._current(now)
        failing = [name for name, r in current.items() if not r.ok]
        body = {
            "gate": self.gate.config.gate.id,
            "ready": not failing,
            "failing": failing,
            "components": {
                name: {"ok": r.ok, "problem": r.problem, "age_s": round(now - r.at, 3)}
                for name, r in current.items()
            },
        }
        return not failing, body

    def device_seen_age(self, name: str) -> float:
        """Seconds since ``name`` was last seen (0 while it is)."""
        if self._device_up(name):
            return 0.0
        return max(0.0, self.probes.monotonic() - self._seen.get(name, 0.0))

    def _current(self, now: float) -> dict[str, Report]:
        if not self.reports:
            return {"health": Report(False, "no report yet", now)}
        limit = STALE_PERIODS * self.period
        return {
            name: r
            if r.ok is False or now - r.at <= limit
            else Report(False, f"no report for {now - r.at:.1f} s", r.at)
            for name, r in self.reports.items()
        }

    # --- polling ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll every period until cancelled; a check that fails unexpectedly is a failing
        report, never the end of polling."""
        try:
            while True:
                await self.poll()
                await asyncio.sleep(self.period)
        finally:
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()

    async def poll(self) -> None:
        await self._probe_log()
        now = self.probes.monotonic()
        checks: dict[str, Callable[[float], tuple[bool, str | None]]] = {
            "log": self._log,
            "lanes": self._lanes,
            "allowlist": self._allowlist,
            "clock": self._clock,
        }
        for name in (*self.gate.plcs, *self.gate.readers):
            checks[f"device:{name}"] = functools.partial(self._device, name)
        reports = {name: self._report(name, check, now) for name, check in checks.items()}
        disk = await self._disk()
        reports["disk"] = Report(disk[0], disk[1], self.probes.monotonic())
        self._changed(reports)
        self.reports = reports
        if self.gate.uplink is not None:
            self.sync_lag_s = await self._sync_lag()
        self.reported.set()

    async def _probe_log(self) -> None:
        """After failed commits, log the outage's end (``log.write-recovered``) as soon as the
        disk takes it: the write that shows an idle gate's log is writable again. While it
        still fails, the ``log`` check reports the problem."""
        elog = self.gate.event_log
        if elog is None or elog.outage is None or not elog.writer_alive:
            return
        with contextlib.suppress(LogError, TimeoutError):
            async with asyncio.timeout(self.period):
                await elog.record_recovery()

    @staticmethod
    def _report(name: str, check: Callable[[float], tuple[bool, str | None]], now: float) -> Report:
        try:
            ok, problem = check(now)
        except Exception as exc:  # a bug in a check: that component fails, the others report
            log.exception("health_check_failed", component=name, error=repr(exc))
            ok, problem = False, f"the check failed: {exc!r}"[:200]
        return Report(ok, problem, now)

    def _changed(self, reports: dict[str, Report]) -> None:
        for name, r in reports.items():
            before = self.reports.get(name)
            if before is None or before.ok != r.ok:
                if r.ok:
                    log.info("health_ok", component=name)
                else:
                    log.warning("health_failing", component=name, problem=r.problem)

    # --- the checks -------------------------------------------------------------------------

    def _log(self, now: float) -> tuple[bool, str | None]:
        elog = self.gate.event_log
        if elog is None or not elog.writer_alive:
            return False, "the log's writer is not running"
        if elog.write_problem is not None:
            return False, f"the log cannot be written: {elog.write_problem}"[:300]
        stalled = now - self._last_commit
        limit = self.settings.log_stall.total_seconds()
        if elog.queued and stalled > limit:
            return False, f"{elog.queued} events wait; no commit for {stalled:.1f} s"
        return True, None

    def _lanes(self, _now: float) -> tuple[bool, str | None]:
        stopped = [lane for lane, runner in self.gate.lanes.items() if not runner.running]
        if stopped:
            return False, "lanes not running: " + ", ".join(stopped)
        return True, None

    def _device_up(self, name: str) -> bool:
        gate = self.gate
        device = gate.plcs.get(name) or gate.readers.get(name)
        return device is not None and device.connected

    def _device(self, name: str, now: float) -> tuple[bool, str | None]:
        if self._device_up(name):
            self._seen[name] = now
            return True, None
        settings = self.settings
        if name in settings.device_silence:
            limit = settings.device_silence[name]
        elif name in self.gate.plcs:
            limit = settings.plc_silence
        else:
            limit = settings.plate_reader_silence
        silent = now - self._seen.get(name, now)
        if silent > limit.total_seconds():
            return False, f"not seen for {silent:.1f} s (limit {_seconds(limit)})"
        return True, None

    def _allowlist(self, _now: float) -> tuple[bool, str | None]:
        service = self.gate.allowlist
        if service is None:
            return False, "the allow-list is not loaded"
        view = service.view
        if view.tampered:
            return False, "the stored allow-list failed its integrity check (tampered)"
        max_age = self.gate.config.policy.allowlist_max_age
        updated = view.updated_at
        if updated is None:
            return False, "no allow-list was ever loaded"
        age = datetime.fromtimestamp(self.gate.clock.wall_ns() / 1e9, UTC) - updated
        if age > max_age:
            return False, f"stale: updated {_seconds(age)} ago (limit {_seconds(max_age)})"
        return True, None

    def _clock(self, _now: float) -> tuple[bool, str | None]:
        if self.settings.require_clock_sync and self.probes.clock_synchronised() is False:
            return False, (
                "the system clock is not synchronised: check `timedatectl` / `chronyc "
                "tracking` ([health] require_clock_sync = false for a gate without a time source)"
            )
        return True, None

    async def _disk(self) -> tuple[bool, str | None]:
        folder = str(self.gate.config.log_file.parent)
        try:
            async with asyncio.timeout(self.period):
                st = await asyncio.to_thread(self.probes.statvfs, folder)
        except TimeoutError:
            return False, f"the file system of {folder} does not answer"
        except OSError as exc:
            return False, f"cannot check {folder}: {exc.strerror or exc}"
        free = st.f_bavail * st.f_frsize
        reserve = self.settings.disk_reserve
        if free < reserve:
            return False, f"{_mib(free)} free on {folder}, below the reserve of {_mib(reserve)}"
        return True, None

    async def _sync_lag(self) -> float | None:
        """How old the oldest event central has not acknowledged is (0: none waits)."""
        uplink, elog = self.gate.uplink, self.gate.event_log
        if uplink is None or elog is None:
            return None
        acked = uplink.acked_seq
        if elog.head[0] <= acked:
            return 0.0
        try:
            wall_ns = await asyncio.to_thread(self._wall_ns_after, acked)
        except LogError as exc:
            log.warning("sync_lag_unknown", error=str(exc))
            return self.sync_lag_s
        if wall_ns is None:
            return 0.0
        return max(0.0, (self.gate.clock.wall_ns() - wall_ns) / 1e9)

    def _wall_ns_after(self, seq: int) -> int | None:
        if self._reader is None:
            self._reader = LogReader(self.gate.config.log_file)
        events = self._reader.read(after=seq, limit=1)
        return events[0].wall_ns if events else None


def _seconds(value: timedelta) -> str:
    s = value.total_seconds()
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.0f} h"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"
