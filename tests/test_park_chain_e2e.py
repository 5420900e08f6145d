"""The park chain with real gates: two running daemons (``[sync] park_public_key``) of one
site, a real mosquitto, central's sink (one or two instances) on SQLite or PostgreSQL. A
vehicle that enters at one gate on its appointment is refused at the other; through a broker
outage, a gate's restart, operator deltas from the real CLI, a gate on the wrong site; and
``replay why`` on the refusing gate's log names where the appointment was used."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgegate.central.sink import Sink
from edgegate.central.store import open_store
from edgegate.cli.main import main
from edgegate.config import GateConfig, parse_config
from edgegate.core.domain import PlateColour
from edgegate.core.events import AccessDecided, AllowListUpdated, Loop, VehiclePassed
from edgegate.sync.park import ParkMessage, open_park, park_topic, sign_park
from edgegate.sync.parklink import ParkLink, ParkOutcome
from edgegate.sync.signing import generate_keypair, load_private_key
from tests import test_central_store as central_store_tests
from tests import test_cli_central
from tests.eventually import eventually
from tests.gate_harness import RunningGate, gate_toml, lane, sim_plc, sim_reader, wait_position
from tests.services.mosquitto import Broker
from tests.test_central_sink import SITE, options, running
from tests.test_clock_steps_e2e import SetClock

pytestmark = pytest.mark.timeout(120)

dsn = central_store_tests.dsn

WAIT = 15.0
COMMUTER = "苏E12345"  # REG-1 of the demo list
TANKER, APT_TANKER = "苏E6G789", "APT-1"  # hazmat, on an appointment
WASTE, APT_WASTE = "鲁C3B270", "APT-2"  # hazwaste, on an appointment
OTHER_SITE = "other-site"


@dataclass
class Park:
    """One site's material: central's keys (files), the broker, the gates' folders."""

    broker: Broker
    root: Path
    central_key: Ed25519PrivateKey = field(init=False)
    park_key: Ed25519PrivateKey = field(init=False)

    def __post_init__(self) -> None:
        for name in ("central", "park"):
            private_pem, public_pem = generate_keypair()
            (self.root / f"{name}.key").write_bytes(private_pem)
            (self.root / f"{name}.pub").write_bytes(public_pem)
        self.central_key = load_private_key(self.root / "central.key")
        self.park_key = load_private_key(self.root / "park.key")

    def config(self, gate_id: str, *, site: str = SITE, sync: str = "") -> GateConfig:
        """``gate_id`` of ``site``: an entry lane ``in`` and an exit lane ``out``, syncing
        through the broker (allowed to read its site's park topic), the park key pinned."""
        folder = self.root / gate_id
        folder.mkdir(exist_ok=True)
        if not (folder / "mqtt-password").exists():
            password = self.broker.add_user(
                gate_id,
                self.broker.users.get(gate_id),
                acl_lines=[f"topic read {park_topic(site)}"],
            )
            (folder / "mqtt-password").write_text(password)
        text = gate_toml(
            folder / "gate.db",
            {
                "plc-in": sim_plc(),
                "cam-in": sim_reader(),
                "plc-out": sim_plc(),
                "cam-out": sim_reader(),
            },
            [lane("in", "entry", "cam-in", "plc-in"), lane("out", "exit", "cam-out", "plc-out")],
            gate={"id": gate_id, "site": site},
        )
        text += (
            f'\n[sync]\nbroker = "mqtt://127.0.0.1:{self.broker.plain_port}"\n'
            'password_file = "mqtt-password"\n'
            f'central_public_key = "{self.root / "central.pub"}"\n'
            f'park_public_key = "{self.root / "park.pub"}"\n'
            'reconnect_max = "1s"\nstatus_interval = "1s"\n'
            f"{sync}\n"
        )
        return parse_config(text, source=f"<{gate_id}>", base_dir=folder)

    @contextlib.asynccontextmanager
    async def gate(
        self, gate_id: str, *, site: str = SITE, sync: str = "", **kw: Any
    ) -> AsyncIterator[ParkGate]:
        """``gate_id`` running (the demo list unless told), connected, its park link on."""
        async with RunningGate(self.config(gate_id, site=site, sync=sync), **kw) as g:
            gate = ParkGate(g)
            async with asyncio.timeout(WAIT):
                await gate.uplink_connected()
            yield gate

    @contextlib.asynccontextmanager
    async def sink(self, dsn: str, **kw: Any) -> AsyncIterator[Sink]:
        async with running(options(self.broker, dsn, park_key=self.park_key, **kw)) as sink:
            yield sink


class ParkGate:
    """A running park gate and every outcome of its park link, in order."""

    def __init__(self, g: RunningGate) -> None:
        self.g = g
        park = g.gate.park
        assert park is not None, "the park link is not on"
        self.park: ParkLink = park
        self.outcomes: list[ParkOutcome] = []
        receive = park.receive

        async def recording(payload: bytes) -> ParkOutcome:
            outcome = await receive(payload)
            self.outcomes.append(outcome)
            return outcome

        park.receive = recording  # type: ignore[method-assign]

    async def uplink_connected(self) -> None:
        uplink = self.g.gate.uplink
        assert uplink is not None
        await uplink.connected.wait()

    async def wait_stored(self, *sinks: Sink) -> None:
        """Central (any of ``sinks``) has stored every event this gate logged until now."""
        gate, head = self.park.gate_id, self.g.log.head
        await eventually(
            lambda: max(s.stored_until(gate) for s in sinks) >= head,
            f"{gate}'s events through seq {head} stored",
            within=WAIT,
        )

    async def wait_applied(self, last: Callable[[], int]) -> None:
        """The park link applied through number ``last()``, in sequence."""
        await eventually(
            lambda: bool(self.applied()) and max(self.applied()) == last(),
            lambda: f"{self.park.gate_id} applied through {last()}: {self.outcomes}",
            within=WAIT,
        )
        assert in_sequence(self.applied()), self.outcomes

    def updates(self) -> list[tuple[int, int]]:
        """(version, previous version) of each allow-list update this gate logged."""
        return [
            (u.event.version, u.event.previous_version) for u in self.g.log.of(AllowListUpdated)
        ]

    async def wait_version(self, version: int) -> None:
        await eventually(
            lambda: bool(self.updates()) and self.updates()[-1][0] == version,
            lambda: f"{self.park.gate_id} at v{version}: {self.updates()}",
            within=WAIT,
        )

    def applied(self) -> list[int]:
        return [o.seq for o in self.outcomes if o.code == "applied" and o.seq is not None]

    def consumed(self, appointment: str) -> bool:
        """Whether this gate's list holds ``appointment`` as consumed."""
        allowlist = self.g.gate.allowlist
        assert allowlist is not None
        return not allowlist.consumable([appointment])

    async def wait_consumed(self, appointment: str) -> None:
        await eventually(
            lambda: self.consumed(appointment),
            lambda: f"{appointment} consumed at {self.park.gate_id}; outcomes {self.outcomes}",
            within=WAIT,
        )

    async def enter(self, plate: str, colour: PlateColour = PlateColour.BLUE) -> None:
        """``plate`` arrives at the entry lane, is let in and drives through."""
        await self._through("in", plate, colour)

    async def leave(self, plate: str, colour: PlateColour = PlateColour.BLUE) -> None:
        """``plate`` arrives at the exit lane, is let out and drives through."""
        await self._through("out", plate, colour)

    async def _through(self, lane: str, plate: str, colour: PlateColour) -> None:
        head = self.g.log.head
        road = self.g.road(lane)
        await road.arrive(plate, colour)
        await wait_position(road.plc, 1.0, WAIT)
        await road.cross()
        await self.g.log.wait_for(VehiclePassed, lane=lane, after=head, within=WAIT)

    async def refused(self, plate: str, colour: PlateColour = PlateColour.BLUE) -> AccessDecided:
        """``plate`` at the entry lane: the decision (a refused vehicle backs away)."""
        head = self.g.log.head
        road = self.g.road("in")
        await road.arrive(plate, colour)
        decided = await self.g.log.wait_for(AccessDecided, lane="in", after=head, within=WAIT)
        await road.set(Loop.ARMING, False)
        return decided.event


def in_sequence(applied: list[int], first: int = 1) -> bool:
    """Applied numbers are ``first``, +1, +2 … each once (what was missed was asked for, not
    skipped)."""
    return applied == list(range(first, first + len(applied)))


@pytest.fixture
def park(mosquitto_broker: Broker, tmp_path: Path) -> Park:
    return Park(mosquitto_broker, tmp_path)


def now_s() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# ------------------------------------------------------------------------------ 1. outage


async def test_a_broker_outage_delivers_the_backlog_in_sequence_and_b_refuses(
    park: Park, dsn: str
) -> None:
    async with park.sink(dsn) as sink, park.gate("gate-a") as a, park.gate("gate-b") as b:
        await a.enter(COMMUTER)
        await eventually(lambda: b.applied() == [1], lambda: f"B: {b.outcomes}", within=WAIT)

        await park.broker.astop()
        # Both gates work on: movements at both, two consumptions.
        await a.enter(TANKER, PlateColour.YELLOW)
        await b.enter(WASTE, PlateColour.YELLOW)
        await a.leave(COMMUTER)
        assert not b.consumed(APT_TANKER) and not a.consumed(APT_WASTE)
        await park.broker.astart()

        await b.wait_consumed(APT_TANKER)
        await a.wait_consumed(APT_WASTE)
        await a.enter("苏EA7L21", PlateColour.YELLOW)  # a newer movement, after the backlog
        await a.wait_stored(sink)  # with its park message recorded in the same commit
        for g in (a, b):
            await g.wait_applied(lambda: sink.counters.park_entry_recorded)
        assert not [o for o in a.outcomes + b.outcomes if o.code == "refused"]

        decision = await b.refused(TANKER, PlateColour.YELLOW)
        assert decision.verdict == "deny"
        assert "appointment-consumed" in decision.reasons
        # Nothing lost: central has every event either gate logged up to now.
        await a.wait_stored(sink)
        await b.wait_stored(sink)


# ------------------------------------------------------------------------------ 4. restart


async def test_a_restarted_gate_keeps_consumptions_and_relearns_who_is_inside(
    park: Park, tmp_path: Path
) -> None:
    dsn = f"sqlite:///{tmp_path / 'central.db'}"
    async with park.sink(dsn), park.gate("gate-a") as a:
        async with park.gate("gate-b") as b:
            await a.enter(COMMUTER)
            await a.enter(TANKER, PlateColour.YELLOW)
            await b.wait_consumed(APT_TANKER)
        await a.enter(WASTE, PlateColour.YELLOW)  # while B is stopped
        # B again, on the same log and stored allow-list (no list loaded by the test).
        async with park.gate("gate-b", demo_allowlist=False) as b:
            assert b.consumed(APT_TANKER)  # kept across the restart
            await b.wait_consumed(APT_WASTE)  # asked for on connecting
            allowlist = b.g.gate.allowlist
            assert allowlist is not None
            await eventually(
                lambda: allowlist.inside_elsewhere(COMMUTER) is not None,
                lambda: f"{COMMUTER} inside at gate-a, re-learned; outcomes {b.outcomes}",
                within=WAIT,
            )
            assert allowlist.inside_elsewhere(TANKER) is not None
            assert in_sequence(b.applied(), b.applied()[0]), b.outcomes  # from its stored seq
            for plate in (TANKER, WASTE):
                decision = await b.refused(plate, PlateColour.YELLOW)
                assert decision.verdict == "deny", decision
                assert "appointment-consumed" in decision.reasons


# ------------------------------------------------------------------------------ 6. replay


async def test_replay_why_names_the_gate_where_the_appointment_was_used(
    park: Park, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = f"sqlite:///{tmp_path / 'central.db'}"
    async with park.sink(dsn), park.gate("gate-a") as a, park.gate("gate-b") as b:
        await a.enter(TANKER, PlateColour.YELLOW)
        await b.wait_consumed(APT_TANKER)
        decisions = {}
        for g in (b, a):  # refused at B (used at A), then at A itself (used here)
            head = g.g.log.head
            await g.refused(TANKER, PlateColour.YELLOW)
            decided = await g.g.log.wait_for(AccessDecided, lane="in", after=head)
            assert "appointment-consumed" in decided.event.reasons
            decisions[g.park.gate_id] = decided.seq

    async def why(gate: str) -> str:
        capsys.readouterr()
        log_file = str(park.root / gate / "gate.db")
        argv = ["replay", "why", log_file, str(decisions[gate])]
        assert await asyncio.to_thread(main, argv) == 0
        return capsys.readouterr().out

    out = await why("gate-b")
    # Where it was used, in the appointment's step and in rule 3 (not only "consumed").
    assert "consumed: used at gate gate-a (central's park message 1 of site site-1" in out, out
    assert "APT-1: used at gate gate-a" in out, out
    out = await why("gate-a")
    assert f"APT-1: used here: {TANKER} entered on it, lane in (seq" in out, out


# ------------------------------------------------------------------------------ 5. misconfigured


async def test_a_park_message_of_another_site_is_refused_and_admission_is_unchanged(
    park: Park, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gate of ``other-site`` given site-1's genuine message on its park topic (a
    misrouted bridge, a central publishing to the wrong site): refused, said plainly, nothing
    consumed, the vehicle still admitted; its own site's next message still applies."""
    async with (
        park.gate("gate-w", site=OTHER_SITE) as w,
        park.broker.client("central", tls=True) as central,
    ):
        capsys.readouterr()
        wrong = ParkMessage(SITE, 1, time.time_ns(), (APT_TANKER,), consumed_at={APT_TANKER: "x"})
        await central.publish(park_topic(OTHER_SITE), sign_park(wrong, park.park_key), qos=1)
        await eventually(lambda: w.park.refused == 1, "the message refused", within=WAIT)
        assert [o.code for o in w.outcomes] == ["refused"]
        out = capsys.readouterr().out
        assert "park_message_refused" in out
        assert f"park message of site '{SITE}', not '{OTHER_SITE}'" in out
        assert not w.consumed(APT_TANKER) and w.park.last == 0
        await w.enter(TANKER, PlateColour.YELLOW)  # admitted, on its appointment

        right = ParkMessage(OTHER_SITE, 1, time.time_ns(), (APT_WASTE,))
        await central.publish(park_topic(OTHER_SITE), sign_park(right, park.park_key), qos=1)
        await w.wait_consumed(APT_WASTE)


async def test_a_gate_with_its_clock_ahead_still_refuses_and_says_why_marks_are_ignored(
    park: Park, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gate B's wall clock is 2 h ahead, its marks kept 1 h: an appointment consumed at A
    still stops admitting at B; A's entry mark is older than the max age by B's clock, and B
    says so (its clock) instead of dropping the "already inside" check without a word."""
    dsn = f"sqlite:///{tmp_path / 'central.db'}"
    ahead = SetClock()
    ahead.step_wall(2 * 3600)
    async with (
        park.sink(dsn),
        park.gate("gate-a") as a,
        park.gate("gate-b", sync='park_inside_max_age = "1h"', clock=ahead) as b,
    ):
        capsys.readouterr()
        await a.enter(TANKER, PlateColour.YELLOW)
        await b.wait_consumed(APT_TANKER)
        decision = await b.refused(TANKER, PlateColour.YELLOW)
        assert decision.verdict == "deny" and "appointment-consumed" in decision.reasons
        allowlist = b.g.gate.allowlist
        assert allowlist is not None and allowlist.inside_elsewhere(TANKER) is None
        out = capsys.readouterr().out
        assert "park_inside_marks_ignored" in out and "check the gate's clock" in out


# ------------------------------------------------------------------------------ 2. operator deltas

_CSV_HEADER = test_cli_central.HEADER


def _list_csv(path: Path, *extra: tuple[str, str]) -> Path:
    """The park's list as an operator keeps it: the commuter and the two appointments (their
    windows around today), and ``extra`` registrations (plate, id)."""
    today = datetime.now(UTC).date()
    start, end = (today - timedelta(days=1)).isoformat(), (today + timedelta(days=2)).isoformat()
    rows = [
        f"registration,REG-1,{COMMUTER},blue,ordinary,commuter,Yangzi,,,,{start},{end},,,,,,,,,,",
        f"appointment,{APT_TANKER},{TANKER},yellow,hazmat,,,,,,,,,{start},{end},Yangzi,1203,3,"
        "EW1,,,",
        f"appointment,{APT_WASTE},{WASTE},yellow,hazwaste,,,,,,,,,{start},{end},Waste Centre,"
        "3264,8,EW2,,,",
        *(
            f"registration,{id_},{plate},blue,ordinary,commuter,Juren,,,,{start},{end},,,,,,,,,,"
            for id_, plate in extra
        ),
    ]
    path.write_text(_CSV_HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


async def test_operator_deltas_from_the_cli_chain_between_park_messages(
    park: Park, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'central.db'}"
    v1 = _list_csv(tmp_path / "v1.csv")
    v2 = _list_csv(tmp_path / "v2.csv", ("REG-2", "苏ED35826"))
    v3 = _list_csv(tmp_path / "v3.csv", ("REG-2", "苏ED35826"), ("REG-3", "苏E52001"))
    publish = [
        *f"central publish-allowlist --site {SITE} --gate gate-a --gate gate-b".split(),
        *("--key", str(park.root / "central.key"), "--db", db, "--operator", "ops-li"),
        *test_cli_central.broker_args(park.broker, tmp_path),
    ]

    async def delta(new: Path, old: Path, base: int) -> int:
        """``publish-allowlist NEW --previous OLD --delta-from BASE``, no --version: --db's."""
        return await test_cli_central.cli(
            *publish, str(new), "--previous", str(old), "--delta-from", str(base)
        )

    async def at_version(version: int, *gates: ParkGate) -> None:
        for g in gates:
            await g.wait_version(version)

    async with (
        park.sink(db),
        park.gate("gate-a", demo_allowlist=False) as a,
        park.gate("gate-b", demo_allowlist=False) as b,
    ):
        assert await test_cli_central.cli(*publish, str(v1), "--version", "1") == 0
        await at_version(1, a, b)
        await a.enter(TANKER, PlateColour.YELLOW)
        await b.wait_consumed(APT_TANKER)
        # The next version from --db is 2, on 1: the park message moved no list version.
        assert await delta(v2, v1, 1) == 0
        await at_version(2, a, b)
        await b.enter(WASTE, PlateColour.YELLOW)
        await a.wait_consumed(APT_WASTE)
        assert await delta(v3, v2, 2) == 0
        await at_version(3, a, b)
        for g in (a, b):
            assert g.updates() == [(1, 0), (2, 1), (3, 2)]
            assert in_sequence(g.applied()), g.outcomes
        # The deltas re-upserted nothing consumed: B still refuses the tanker, A the truck.
        assert b.consumed(APT_TANKER) and a.consumed(APT_WASTE)
        decision = await b.refused(TANKER, PlateColour.YELLOW)
        assert "appointment-consumed" in decision.reasons
        await a.enter("苏E52001")  # v3's new registration admits


# ------------------------------------------------------------------------------ 3. two sinks


async def test_two_central_instances_share_real_gates_and_publish_each_consumption_once(
    park: Park, postgres_dsn: str
) -> None:
    """Two sinks on one PostgreSQL store, the gates' batches split between them by the
    shared subscription: one chain for the site without gaps, each consumption in it once,
    each gate's site noted once and right, both gates applying it in sequence."""
    async with (
        park.sink(postgres_dsn, client_id="sink-1") as s1,
        park.sink(postgres_dsn, client_id="sink-2") as s2,
        park.gate("gate-a") as a,
        park.gate("gate-b") as b,
    ):
        await a.enter(COMMUTER)
        await b.enter(WASTE, PlateColour.YELLOW)
        await a.enter(TANKER, PlateColour.YELLOW)
        await b.enter("苏EA7L21", PlateColour.YELLOW)
        await a.leave(COMMUTER)
        await b.leave("苏EA7L21", PlateColour.YELLOW)
        await a.wait_consumed(APT_WASTE)
        await b.wait_consumed(APT_TANKER)

        def recorded() -> int:
            return s1.counters.park_entry_recorded + s2.counters.park_entry_recorded

        for g in (a, b):
            await g.wait_stored(s1, s2)
            await g.wait_applied(recorded)
        assert s1.counters.batches > 0 and s2.counters.batches > 0  # both stored some
    with open_store(postgres_dsn) as s:
        kept = [open_park(o.payload, park.park_key.public_key()) for o in s.park_resend(SITE, 1)]
        assert (s.gate_site("gate-a"), s.gate_site("gate-b")) == (SITE, SITE)
    assert [m.seq for m in kept] == list(range(1, len(kept) + 1))
    assert len(kept) == recorded()
    consumed = [(i, m.consumed_at.get(i)) for m in kept for i in m.consume]
    assert sorted(consumed) == [(APT_TANKER, "gate-a"), (APT_WASTE, "gate-b")]
