"""Console sessions, their CSRF tokens, and the lock-out of repeated failed logins.

Sessions live in the daemon's memory only (a restart logs everyone out): a random 32-byte id
in an ``HttpOnly``, ``SameSite=Strict`` cookie, ended by logout or ``idle`` time without a
request. Each carries a random CSRF token the page sends back on every state-changing request.
All times are the injected clock's monotonic nanoseconds.
"""

from __future__ import annotations

import contextlib
import enum
import hmac
import secrets
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from edgegate.console.accounts import AccountStore

COOKIE = "edgegate_console"


@dataclass(slots=True)
class Session:
    id: str
    account: str
    role: enum.StrEnum  # the accounts file's roles (the console's Role)
    address: str
    csrf: str
    last_seen_ns: int
    credential: str = ""  # the password hash it logged in with: a new password ends it
    on_end: list[Callable[[], None]] = field(default_factory=list)  # e.g. close its sockets

    def csrf_ok(self, token: str | None) -> bool:
        """Whether ``token`` is this session's CSRF token (constant-time compare)."""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


def revoked(session: Session, accounts: AccountStore) -> bool:
    """The session's account was removed, or its role or password changed since."""
    account = accounts.get(session.account)
    return (
        account is None
        or account.role is not session.role
        or account.password_hash != session.credential
    )


@dataclass(frozen=True, slots=True)
class Ended:
    """A session that ended without a request saying so (``idle``, ``displaced``)."""

    session: Session
    reason: str


class SessionStore:
    """At most ``max_sessions`` sessions; the least recently used one makes room. With
    ``max_per_account``, an account's own least recently used session makes room for its
    next one, so logging in again and again under one account ends none of another's."""

    def __init__(
        self,
        mono_ns: Callable[[], int],
        idle_ns: int,
        max_sessions: int = 256,
        *,
        max_per_account: int | None = None,
    ):
        self._mono_ns = mono_ns
        self._idle_ns = idle_ns
        self._max = max_sessions
        self._max_per_account = max_per_account
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._ended: list[Ended] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def create(
        self, account: str, role: enum.StrEnum, address: str, credential: str = ""
    ) -> Session:
        self.sweep()
        if self._max_per_account is not None:
            own = [s for s in self._sessions.values() if s.account == account]
            for oldest in own[: max(0, len(own) - self._max_per_account + 1)]:
                del self._sessions[oldest.id]
                self._end(oldest, "displaced")
        while len(self._sessions) >= self._max:
            _, oldest = self._sessions.popitem(last=False)
            self._end(oldest, "displaced")
        session = Session(
            id=secrets.token_urlsafe(32),
            account=account,
            role=role,
            address=address,
            csrf=secrets.token_urlsafe(32),
            last_seen_ns=self._mono_ns(),
            credential=credential,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        """The live session of ``session_id``; ``touch`` counts this as activity."""
        self.sweep()
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is not None and touch:
            session.last_seen_ns = self._mono_ns()
            self._sessions.move_to_end(session_id)
        return session

    def end(self, session: Session, reason: str = "logout") -> None:
        if self._sessions.pop(session.id, None) is not None:
            self._end(session, reason, record=False)

    def end_account(self, account: str, reason: str) -> None:
        """End every session of ``account`` (removed, or its role changed)."""
        self.end_where(lambda s: s.account == account, reason)

    def end_where(self, stale: Callable[[Session], bool], reason: str) -> None:
        """End every session ``stale`` says is (e.g. its account changed)."""
        for session in [s for s in self._sessions.values() if stale(s)]:
            del self._sessions[session.id]
            self._end(session, reason)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def sweep(self) -> None:
        now = self._mono_ns()
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_seen_ns < self._idle_ns:
                break
            del self._sessions[oldest.id]
            self._end(oldest, "idle")

    def take_ended(self) -> list[Ended]:
        """Sessions that ended by themselves since the last call, for the log."""
        ended, self._ended = self._ended, []
        return ended

    def _end(self, session: Session, reason: str, *, record: bool = True) -> None:
        if record:
            self._ended.append(Ended(session, reason))
        for callback in session.on_end:
            callback()
        session.on_end.clear()


TRUSTED_PER_NAME = 32
"""Addresses remembered per account name as having logged in to it (the oldest go first)."""

_Key = tuple[str, ...]
"""What failures are counted under: ("account", name), ("address", address) or
("pair", name, address)."""


@dataclass(slots=True)
class _Failures:
    times: deque[int]
    locked_until: int | None = None


class LoginThrottle:
    """Lock-out after ``max_failures`` refused logins within ``window_ns``, for ``lockout_ns``,
    counted per account name as typed (known or not, so a locked answer reveals nothing), per
    client address, and per name from one address.

    An address that logged in to a name before (one of its last ``TRUSTED_PER_NAME``, in
    memory) is held to its own count for that name only: failures from elsewhere, which lock
    the name and their addresses for everyone else, do not keep the control room's or the
    booth's own PC out of its account. That client still gets no more than ``max_failures``
    guesses per lock-out, so the lock-out stays a brake on guessing without being a way to
    shut people out. At most ``max_keys`` failure counts are remembered; past that, the ones
    with nothing recent are forgotten first. Checks still under way (:meth:`attempt`) count
    as failures until they end, so guesses sent at once cannot outrun the lock-out."""

    def __init__(
        self,
        mono_ns: Callable[[], int],
        *,
        max_failures: int,
        window_ns: int,
        lockout_ns: int,
        max_keys: int = 10_000,
    ) -> None:
        self._mono_ns = mono_ns
        self._max_failures = max_failures
        self._window_ns = window_ns
        self._lockout_ns = lockout_ns
        self._max_keys = max_keys
        self._keys: OrderedDict[_Key, _Failures] = OrderedDict()
        self._checking: Counter[_Key] = Counter()  # bounded by open connections
        # Per account name (only names that logged in: the accounts'), its addresses, least
        # recently logged in first: one account's logins from many addresses cannot push
        # another account's out.
        self._trusted: dict[str, OrderedDict[str, None]] = {}

    def locked(self, account: str, address: str) -> bool:
        """Whether a login for ``account`` from ``address`` is refused now, unchecked."""
        now = self._mono_ns()
        return any(
            self._locked(key, now) or self._recent(key, now) >= self._max_failures
            for key in self._counted(account, address)
        )

    def trusted(self, account: str, address: str) -> bool:
        """Whether ``address`` logged in to ``account`` before (held to its own count)."""
        return address in self._trusted.get(account, ())

    @contextlib.contextmanager
    def attempt(self, account: str, address: str) -> Iterator[None]:
        """Around a password check: while it runs it counts as a failure for :meth:`locked`."""
        keys = _keys(account, address)
        self._checking.update(keys)
        try:
            yield
        finally:
            self._checking.subtract(keys)
            for key in keys:
                if self._checking[key] <= 0:
                    del self._checking[key]

    def failed(self, account: str, address: str) -> None:
        now = self._mono_ns()
        for key in _keys(account, address):
            entry = self._keys.get(key)
            if entry is None:
                entry = self._keys[key] = _Failures(deque(maxlen=self._max_failures))
            self._keys.move_to_end(key)
            while entry.times and now - entry.times[0] >= self._window_ns:
                entry.times.popleft()
            entry.times.append(now)
            if len(entry.times) >= self._max_failures:
                entry.locked_until = now + self._lockout_ns
                entry.times.clear()
        self._trim(now)

    def succeeded(self, account: str, address: str) -> None:
        """A login of ``account`` from ``address``: its failures from there are forgotten,
        and the address is trusted for the name from now on (the last ``TRUSTED_PER_NAME``
        addresses of each name). A login checked against the name's own count (from an
        address not yet trusted) forgets the name's failures too; a trusted address's does
        not, so it cannot lift a lock-out that others' failures set."""
        if not self.trusted(account, address):
            self._keys.pop(("account", account), None)
        self._keys.pop(_pair(account, address), None)
        addresses = self._trusted.setdefault(account, OrderedDict())
        addresses[address] = None
        addresses.move_to_end(address)
        while len(addresses) > TRUSTED_PER_NAME:
            addresses.popitem(last=False)

    def _counted(self, account: str, address: str) -> tuple[_Key, ...]:
        if self.trusted(account, address):
            return (_pair(account, address),)
        return _keys(account, address)

    def _recent(self, key: _Key, now: int) -> int:
        """Failures within the window plus checks under way."""
        entry = self._keys.get(key)
        times = entry.times if entry is not None else ()
        return sum(1 for t in times if now - t < self._window_ns) + self._checking[key]

    def _locked(self, key: _Key, now: int) -> bool:
        entry = self._keys.get(key)
        return entry is not None and entry.locked_until is not None and now < entry.locked_until

    def _trim(self, now: int) -> None:
        if len(self._keys) <= self._max_keys:
            return
        for key in list(self._keys):
            entry = self._keys[key]
            stale = not entry.times or now - entry.times[-1] >= self._window_ns
            if stale and not self._locked(key, now):
                del self._keys[key]
        while len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)


def _pair(account: str, address: str) -> _Key:
    return "pair", account, address


def _keys(account: str, address: str) -> tuple[_Key, ...]:
    return ("account", account), ("address", address), _pair(account, address)
