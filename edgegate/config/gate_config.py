"""The whole configuration: :class:`GateConfig`, its derived values and its hash."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

from pydantic import Field, PrivateAttr, ValidationInfo, model_validator

from edgegate.config.checks import _cross_check, _Parts
from edgegate.config.fields import DeviceName
from edgegate.config.models import (
    ConsoleSettings,
    Device,
    GateSection,
    HealthSettings,
    HttpSettings,
    IncidentSettings,
    Lane,
    LogSettings,
    Permissions,
    Policy,
    SyncSettings,
    Timings,
)
from edgegate.config.problems import Problem
from edgegate.core.domain import Direction, VehicleCategory
from edgegate.core.rules import KIND_ADMITS, GateRules
from edgegate.validation import StrictModel

_DEFER_CROSS_CHECKS = "edgegate.config.defer_cross_checks"


#: Optional sections added after configuration hashes were first pinned.
_LATER_SECTIONS = ("http", "console", "health")


class GateConfig(StrictModel):
    """A validated gate configuration. Build it with :func:`load_config`/:func:`parse_config`."""

    gate: GateSection
    permissions: Permissions = Permissions()
    policy: Policy = Policy()
    log: LogSettings
    timings: Timings = Timings()
    devices: Mapping[DeviceName, Device] = Field(default_factory=dict)
    lanes: tuple[Lane, ...] = ()
    incident: IncidentSettings = IncidentSettings()
    sync: SyncSettings | None = None
    http: HttpSettings | None = None  # absent: no HTTP server (no pull API, no console)
    console: ConsoleSettings | None = None  # absent: no guard's console
    health: HealthSettings | None = None  # absent: the defaults

    _source: str = PrivateAttr(default="<string>")
    _base_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Self:
        # parse_config runs these itself so it can report them alongside field errors.
        if isinstance(info.context, dict) and info.context.get(_DEFER_CROSS_CHECKS):
            return self
        problems = _cross_check(_Parts.from_model(self))
        if problems:
            raise ValueError("; ".join(f"{key}: {message}" for key, message in problems))
        return self

    @property
    def source(self) -> str:
        """Where the configuration was read from (a path, or ``<string>``)."""
        return self._source

    @property
    def log_file(self) -> Path:
        """``[log].path``, a relative one resolved against the configuration's directory."""
        return self.resolve_path(self.log.path)

    def resolve_path(self, path: str) -> Path:
        """A path from the file, a relative one resolved against the configuration's folder."""
        resolved = Path(path).expanduser()
        if resolved.is_absolute() or self._base_dir is None:
            return resolved
        return self._base_dir / resolved

    @property
    def sync_site(self) -> str:
        """The site level of the gate's MQTT topics: ``[sync].site``, else ``[gate].site``."""
        if self.sync is not None and self.sync.site is not None:
            return self.sync.site
        return self.gate.site

    @property
    def sync_username(self) -> str:
        """The MQTT user name: ``[sync].username``, else the gate id."""
        if self.sync is not None and self.sync.username is not None:
            return self.sync.username
        return self.gate.id

    def file_problems(self) -> list[Problem]:
        """Files the configuration names that do not exist (or are not regular files).

        Separate from validation so that the example configurations validate anywhere;
        ``check-config`` on the gate itself and the daemon at start report these.
        """
        problems: list[Problem] = []
        files = {} if self.sync is None else self.sync.files()
        if self.http is not None:
            files.update(self.http.files())
        if self.health is not None:
            files.update(self.health.files())
        for key, value in files.items():
            path = self.resolve_path(value)
            try:
                if not path.exists():
                    problems.append((key, f"file not found: {path}"))
                elif not path.is_file():
                    problems.append((key, f"not a regular file: {path}"))
                elif not os.access(path, os.R_OK):
                    problems.append((key, f"file not readable by this user: {path}"))
            except OSError as e:  # e.g. a name too long for the file system
                problems.append((key, f"cannot check the file: {e.strerror or e}"))
        return problems

    def admits(self, direction: Direction) -> frozenset[VehicleCategory]:
        listed = self.permissions.listed(direction)
        if listed is None:
            return KIND_ADMITS[self.gate.kind][direction]
        return frozenset(listed)

    def device(self, name: str) -> Device:
        return self.devices[name]

    def lane(self, lane_id: str) -> Lane:
        for lane in self.lanes:
            if lane.id == lane_id:
                return lane
        raise KeyError(lane_id)

    def lane_timings(self, lane: Lane | str) -> Timings:
        """The gate's timings with the lane's overrides applied."""
        if isinstance(lane, str):
            lane = self.lane(lane)
        return self.timings.with_overrides(lane.timings)

    def rules(self) -> GateRules:
        """The policy-relevant part, for the pure core."""
        return GateRules(
            gate_id=self.gate.id,
            kind=self.gate.kind,
            admits=MappingProxyType({d: self.admits(d) for d in Direction}),
            dwell_limits=MappingProxyType(dict(self.policy.dwell_limits)),
            timezone=self.gate.timezone,
            allowlist_max_age=self.policy.allowlist_max_age,
            on_stale_allowlist=self.policy.on_stale_allowlist,
            colour_mismatch=self.policy.colour_mismatch,
            fuzzy_matching=self.policy.fuzzy_matching,
            min_confidence=self.policy.min_confidence,
        )

    def canonical_json(self) -> str:
        """The validated model as JSON with sorted keys: what :meth:`config_hash` hashes."""
        # Sections added after hashes were pinned count only when present, so a file without
        # them keeps its hash.
        absent: dict[str, Any] = {
            name: True for name in _LATER_SECTIONS if getattr(self, name) is None
        }
        if self.log.retention is None:
            absent["log"] = {"retention": True}
        return json.dumps(
            self.model_dump(mode="json", exclude=absent),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON; unchanged by comments, layout, key order, spelling
        of durations or explicitly written defaults."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()
