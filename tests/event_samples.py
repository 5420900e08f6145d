"""One realistic instance of every event type, for round-trip and tool tests."""

from __future__ import annotations

from datetime import UTC, datetime

from edgegate.core import events as ev
from edgegate.core.domain import Direction, PlateColour, VehicleCategory

T0 = datetime(2026, 11, 28, 2, 15, 0, tzinfo=UTC)


def all_samples() -> list[ev.Event]:
    return [
        ev.PlateRead(
            lane="in-1",
            plate="苏E12345",
            colour=PlateColour.YELLOW,
            confidence=0.93,
            reader="cam-in-1",
            image_ref="img/20261128/0001.jpg",
            raw=b"\x02\x10\xcb\xd5E12345\x01\x5d\x12\x34\x03",
        ),
        ev.PlateNotRead(lane="in-1", waited_ms=5000),
        ev.LoopChanged(lane="in-1", loop=ev.Loop.SAFETY, occupied=True, source="plc-1"),
        ev.BarrierCommanded(
            lane="in-1",
            command=ev.BarrierCommand.OPEN,
            reason="access-allowed",
            device="plc-1",
            cause_seq=41,
        ),
        ev.BarrierStateChanged(
            lane="in-1",
            state=ev.BarrierState.UP,
            device="plc-1",
            up_limit=True,
            down_limit=False,
        ),
        ev.DeviceFault(device="plc-1", code="timeout", message="no response in 200 ms"),
        ev.DeviceRecovered(device="plc-1", down_ms=4200),
        ev.FrameRejected(device="cam-in-1", reason="bad checksum", data=b"\x02garbage\x03"),
        ev.AccessDecided(
            lane="in-1",
            direction=Direction.ENTRY,
            plate_read="苏E1234S",
            plate="苏E1234S",
            matched_plate="苏E12345",
            match=ev.MatchKind.FUZZY,
            verdict="confirm",
            reasons=("fuzzy-match", "fuzzy-dangerous-needs-confirmation", "appointment-valid"),
            category=VehicleCategory.HAZMAT,
            credential_kind="appointment",
            credential_id="APT-20261128-0007",
            consumed_appointment=None,
            allowlist_version=17,
            allowlist_age_s=321.5,
            allowlist_stale=False,
            read_seq=40,
            explanation="matched only fuzzily: read 苏E1234S, the allow-list has 苏E12345",
        ),
        ev.VehiclePassed(
            lane="in-1",
            plate="苏E12345",
            direction=Direction.ENTRY,
            category=VehicleCategory.HAZMAT,
            credential_id="APT-20261128-0007",
            permit_until=T0,
            decision_seq=42,
            unauthorised=True,
        ),
        ev.VehicleBackedOut(
            lane="in-1", plate="苏E12345", decision_seq=42, released_appointment="APT-20261128-0007"
        ),
        ev.TailgateSuspected(lane="in-1", plate=None, decision_seq=42, detail="exit loop twice"),
        ev.AdmissionNotOpened(
            lane="in-1", plate="苏E12345", decision_seq=42, detail="arm did not rise"
        ),
        ev.OverstayDetected(
            plate="苏E12345",
            category=VehicleCategory.HAZMAT,
            entered_at=T0,
            limit="dwell",
            deadline=T0,
            entry_seq=43,
        ),
        ev.ManualAction(
            lane="in-1",
            action=ev.ManualActionKind.OPEN,
            operator="guard-wang",
            reason="fire brigade escort",
        ),
        ev.ModeChanged(
            mode=ev.GateMode.INCIDENT,
            previous=ev.GateMode.NORMAL,
            source=ev.ModeSource.CENTRAL,
            reason="chlorine leak at unit 4",
            command_id="cmd-77",
        ),
        ev.AllowListUpdated(
            kind=ev.AllowListUpdateKind.DELTA,
            version=18,
            previous_version=17,
            source="central",
            upserted=12,
            removed=3,
            entries=10542,
            content_hash="ab" * 32,
        ),
        ev.AllowListTampered(
            version=18,
            problem="plate column '苏E1234S' is not the entry's plate '苏E12345'",
            credential_kind="blacklist",
            credential_id="B1",
            plate="苏E1234S",
            entries=10542,
            left_out=0,
        ),
        ev.AllowListRefused(
            code="gap",
            message="delta 20->21 does not apply on version 18",
            current_version=18,
            publication_kind="delta",
            version=21,
            base_version=20,
            issued_at=T0,
            key_id="0123456789abcdef",
            payload_size=812,
            payload_sha256="ef" * 32,
        ),
        ev.SnapshotRequested(have_version=18, reason="version gap: have 18, delta 20->21"),
        ev.CommandAccepted(
            lane="in-1",
            command_id="9f1c2b3a4d5e6f708192a3b4c5d6e7f8",
            action="open-lane",
            operator="duty-officer-li",
            reason="fire engine escort",
            issued_at=T0,
            expires_at=T0,
            key_id="0123456789abcdef",
        ),
        ev.CommandRefused(
            code="replayed",
            message="command 9f1c2b3a4d5e6f708192a3b4c5d6e7f8 was already received",
            command_id="9f1c2b3a4d5e6f708192a3b4c5d6e7f8",
            action="open-lane",
            key_id="0123456789abcdef",
            payload=b"\x85\xa1v\x01",
        ),
        ev.CommandFailed(
            lane="in-9",
            command_id="9f1c2b3a4d5e6f708192a3b4c5d6e7f8",
            action="open-lane",
            code="unknown-lane",
            message="this gate has no lane 'in-9'",
        ),
        ev.RevokedCredentialAdmission(
            lane="in-1",
            decision_seq=42,
            plate="苏E12345",
            credential_kind="permit",
            credential_id="TMP-20261128-0031",
            decided_at=T0,
            revoked_at=T0,
            revoked_after=None,
            certain=True,
            basis="removed",
            allowlist_version=19,
        ),
        ev.DaemonStarted(
            software_version="0.1.0",
            config_hash="cd" * 32,
            config_path="/etc/edgegate/gate.toml",
            pid=4242,
        ),
        ev.DaemonStopped(reason=ev.StopReason.SIGNAL, detail="SIGTERM"),
    ]
