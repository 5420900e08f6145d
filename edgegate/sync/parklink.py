"""The gate's side of central's park chain (:mod:`edgegate.sync.park`): park messages of its
site, applied in sequence.

``ParkLink`` takes the payloads on ``edgegate/v1/{site}/park``. A message must be signed by
the pinned park key with the envelope kind ``park`` and name this gate's site; anything else
is refused (a log line; it changes nothing). The park key is trusted for park messages only:
an allow-list or a command it signed is refused by the downlink, which does not know it.

Applied in sequence, each number once:

- ``consume``: appointments this list holds and has not consumed are marked consumed, with
  ONE ``park.consumed`` event per message that changed admission, in the same transaction
  as the last applied number (``park_state``), so a restart resumes after it;
- ``inside``/``left``: the allow-list service's memory of vehicles inside elsewhere
  (bounded, forgotten after ``[sync] park_inside_max_age``, marks naming this gate ignored,
  a vehicle's own pass here clears it). Not logged: they only send an entry to a guard.

A message past the next number (a gap) is dropped and a resend from the next number is asked
on the gate's ``requests`` topic (at most once per ``RESEND_WAIT_NS`` for the same number);
central republishes its kept messages from there, in sequence. If central pruned some, the
first one it has is applied after that wait and the gate logs the numbers it missed. After a
restart the first connect asks from the number after the last stored, and for the messages
of the last ``park_inside_max_age`` too: those not newer than the stored number rebuild the
memory of vehicles inside (their consumptions were applied before the restart).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgegate.allowlist.service import AllowListService
from edgegate.core.clock import Clock
from edgegate.core.events import ParkConsumed
from edgegate.log import EventLog
from edgegate.observability import get_logger
from edgegate.sync.park import ParkMessage, open_park
from edgegate.sync.protocol import ParkResendRequest, ProtocolError

log = get_logger("parklink")

RESEND_WAIT_NS = 5 * 10**9
"""A resend from the same number is not asked again sooner; a gap still there after it is
taken as messages central no longer has."""
REBUILD_WINDOW_NS = 60 * 10**9
"""After the first connect following a start, old messages (not newer than the stored
number) rebuild the memory of vehicles inside for this long."""
SAVE_EVERY = 100
"""Messages without consumptions between two saves of the last applied number."""

_STATE = "CREATE TABLE IF NOT EXISTS park_state (site TEXT PRIMARY KEY, seq INTEGER NOT NULL)"
_SAVE = (
    "INSERT INTO park_state (site, seq) VALUES (?, ?)"
    " ON CONFLICT (site) DO UPDATE SET seq = max(seq, excluded.seq)"
)

ResendRequester = Callable[[ParkResendRequest], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ParkOutcome:
    """What ``receive`` did: ``applied`` (``consumed``: appointments marked), ``duplicate``,
    ``rebuilt`` (an old message's marks, after a restart), ``gap`` (dropped, resend asked)
    or ``refused``."""

    code: str
    seq: int | None = None
    consumed: tuple[str, ...] = ()


class ParkLink:
    """Applies one site's park chain at one gate; see the module docstring."""

    def __init__(
        self,
        gate_id: str,
        site: str,
        park_keys: Ed25519PublicKey | Iterable[Ed25519PublicKey],
        allowlist: AllowListService,
        event_log: EventLog,
        clock: Clock,
        request_resend: ResendRequester,
        *,
        inside_max_age_ns: int,
    ) -> None:
        keys = [park_keys] if isinstance(park_keys, Ed25519PublicKey) else list(park_keys)
        if not keys:
            raise ValueError("no park public key")
        self.gate_id = gate_id
        self.site = site
        self.keys = tuple(keys)
        self.allowlist = allowlist
        self.event_log = event_log
        self.clock = clock
        self.request_resend = request_resend
        self.inside_max_age_ns = inside_max_age_ns
        allowlist.configure_presence(gate_id, inside_max_age_ns, clock.wall_ns)
        self.last = 0
        """The last number applied."""
        self._stored = 0
        self._lock = asyncio.Lock()
        self._asked: tuple[int, int] | None = None  # (from_seq, mono_ns) of the last ask
        self._gap: tuple[int, int] | None = None  # (missing seq, mono_ns first seen)
        self._restored_through: int | None = None  # set by restore, until the first connect
        self._rebuild: tuple[int, int] | None = None  # (through seq, until mono_ns)
        self.refused = 0
        self.last_outcome: ParkOutcome | None = None

    async def restore(self) -> int:
        """Read the last applied number (0: none); call before the first message."""
        site = self.site

        def read(conn: sqlite3.Connection) -> int:
            conn.execute(_STATE)
            row = conn.execute("SELECT seq FROM park_state WHERE site = ?", (site,)).fetchone()
            return 0 if row is None else int(row[0])

        self.last = self._stored = await self.event_log.run_in_writer(read)
        self._restored_through = self.last
        log.info("park_restored", site=site, seq=self.last)
        return self.last

    async def on_connected(self) -> None:
        """After each connect: ask for what came while away (and, the first time after a
        start, the messages that rebuild the memory of vehicles inside)."""
        since = 0
        through = self._restored_through
        if through is not None:
            self._restored_through = None
            since = max(1, self.clock.wall_ns() - self.inside_max_age_ns)
            self._rebuild = (through, self.clock.mono_ns() + REBUILD_WINDOW_NS)
        await self._ask(self.last + 1, since, "connected" if not since else "restarted")

    async def on_park(self, payload: bytes) -> None:
        """The park topic's handler (an uplink ``Handler``): ``receive``."""
        await self.receive(payload)

    async def receive(self, payload: bytes) -> ParkOutcome:
        """Verify and apply (or refuse, logged) one park payload. Never raises for bad
        input; ``LogError`` if the log cannot be written."""
        async with self._lock:
            self.last_outcome = await self._receive(bytes(payload))
            return self.last_outcome

    async def _receive(self, payload: bytes) -> ParkOutcome:
        try:
            message = await asyncio.to_thread(open_park, payload, self.keys)
            if message.site != self.site:
                raise ProtocolError(f"park message of site {message.site!r}, not {self.site!r}")
        except ProtocolError as exc:  # SignatureError included
            self.refused += 1
            log.warning("park_message_refused", site=self.site, error=str(exc))
            return ParkOutcome("refused")
        seq = message.seq
        if seq <= self.last:
            rebuild = self._rebuild
            if rebuild is not None and seq <= rebuild[0]:
                if self.clock.mono_ns() < rebuild[1]:
                    self.allowlist.note_presence(message.inside, message.left)
                    return ParkOutcome("rebuilt", seq)
                self._rebuild = None
            return ParkOutcome("duplicate", seq)
        if seq > self.last + 1:
            now = self.clock.mono_ns()
            gap = self._gap
            if gap is None or gap[0] != self.last + 1 or now - gap[1] < RESEND_WAIT_NS:
                if gap is None or gap[0] != self.last + 1:
                    self._gap = (self.last + 1, now)
                await self._ask(self.last + 1, 0, f"gap: have {self.last}, got {seq}")
                return ParkOutcome("gap", seq)
            log.error(
                "park_messages_missed",
                site=self.site,
                missed_from=self.last + 1,
                missed_to=seq - 1,
                consequence="appointments consumed elsewhere in them may still admit here",
            )
        return await self._apply(message)

    async def _apply(self, message: ParkMessage) -> ParkOutcome:
        seq, site = message.seq, self.site
        ids = self.allowlist.consumable(message.consume)
        if ids:

            def save(conn: sqlite3.Connection) -> None:
                conn.execute(_SAVE, (site, seq))

            gates = tuple(message.consumed_at.get(i, "") for i in ids)
            event = ParkConsumed(site=site, seq=seq, appointments=tuple(ids), gates=gates)
            at = await self.allowlist.consume_elsewhere(ids, event, save)
            self._stored = seq
            log.info("park_consumed", seq=seq, site=site, appointments=ids, event_seq=at)
        elif seq - self._stored >= SAVE_EVERY:
            await self.event_log.run_in_writer(lambda conn: conn.execute(_SAVE, (site, seq)))
            self._stored = seq
        too_old = self.allowlist.note_presence(message.inside, message.left)
        if too_old and self.clock.wall_ns() - message.issued_at_ns > self.inside_max_age_ns:
            # A fresh message's entries older than the max age: this gate's clock is ahead
            # (or the message waited that long). Its vehicles are not "already inside" here:
            # say so, rather than lose the check without a word.
            log.warning(
                "park_inside_marks_ignored",
                seq=seq,
                marks=too_old,
                issued_s_ago=round((self.clock.wall_ns() - message.issued_at_ns) / 1e9),
                problem="entries older than [sync] park_inside_max_age by this gate's clock:"
                " check the gate's clock (timedatectl), or the message was held that long",
            )
        self.last = seq
        self._gap = None
        return ParkOutcome("applied", seq, tuple(ids))

    async def _ask(self, from_seq: int, since_ns: int, reason: str) -> None:
        now = self.clock.mono_ns()
        asked = self._asked
        recent = asked is not None and asked[0] == from_seq and now - asked[1] < RESEND_WAIT_NS
        if recent and not since_ns:
            return
        request = ParkResendRequest(self.gate_id, from_seq, since_ns, reason[:256])
        try:
            await self.request_resend(request)
        except Exception as exc:  # the link may be down: the next connect or gap asks again
            log.error("park_resend_request_failed", from_seq=from_seq, error=repr(exc))
            return
        self._asked = (from_seq, now)
        log.info("park_resend_asked", from_seq=from_seq, since_ns=since_ns, reason=reason)
