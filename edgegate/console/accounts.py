"""The console's accounts: a plain-text file, one account a line.

    # comments and blank lines are kept out of the accounts
    wang guard $scrypt$n=16384,r=8,p=1$<salt, base64>$<hash, base64>

Passwords are hashed with scrypt (stdlib), salted, the parameters stored with the hash so
they can be raised later without breaking stored accounts. A check takes about 50 ms and runs
in a password-check thread, at most MAX_CHECKS at once; unknown names are checked against a
dummy hash, so the answer for a name that does not exist takes as long as one for a wrong
password. The file is written atomically with mode 0600 (it holds hashes) and re-read when it
changes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import enum
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edgegate.console.desk import Role
from edgegate.observability import get_logger

log = get_logger("console.accounts")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
MIN_PASSWORD = 10
# n=2**14, r=8: 16 MiB and about 50 ms on a gate PC; raise n as hardware allows.
_N, _R, _P = 2**14, 8, 1
_MAXMEM = 128 * 1024 * 1024
_HASH = re.compile(r"\$scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)")
MAX_CHECKS = 2  # password checks at once (each ~50 ms of one core and 16 MiB)
_COMMON = frozenset({"password", "12345678", "123456789", "1234567890", "qwertyuiop", "0123456789"})


class AccountsError(Exception):
    """The accounts file or a request about it is wrong; the message says what and where."""


Roles = type[enum.StrEnum]
"""The roles an accounts file may give: the console's :class:`Role` (guard, supervisor), or
another set (central's dashboard: viewer, operator)."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: enum.StrEnum
    """A member of the file's roles (the console's :class:`Role` by default)."""
    password_hash: str


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise AccountsError(
            f"account name {name!r}: use 1-32 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def weak_password(password: str, name: str = "") -> str | None:
    """Why ``password`` is too weak, or None."""
    if not password:
        return "the password is empty"
    if len(password) < MIN_PASSWORD:
        return f"the password is shorter than {MIN_PASSWORD} characters"
    if len(set(password)) < 4:
        return "the password repeats too few different characters"
    if password.lower() in _COMMON or (name and name.lower() in password.lower()):
        return "the password is too easy to guess (common, or contains the account name)"
    return None


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``, with its parameters."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM, dklen=32
    )
    b64 = base64.b64encode
    return f"$scrypt$n={_N},r={_R},p={_P}${b64(salt).decode()}${b64(digest).decode()}"


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    match = _HASH.fullmatch(stored)
    if match is None:
        raise AccountsError("the password hash is not $scrypt$n=N,r=R,p=P$SALT$HASH")
    n, r, p = (int(match[i]) for i in (1, 2, 3))
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise AccountsError(f"the password hash has unusable parameters n={n}, r={r}, p={p}")
    try:
        salt, digest = base64.b64decode(match[4], validate=True), base64.b64decode(match[5])
    except ValueError as exc:
        raise AccountsError(f"the password hash is not valid base64: {exc}") from exc
    if len(salt) < 8 or len(digest) < 16:
        raise AccountsError("the password hash's salt or hash is too short")
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare); blocks ~50 ms."""
    n, r, p, salt, digest = _parse_hash(stored)
    candidate = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=len(digest)
    )
    return hmac.compare_digest(candidate, digest)


# A hash nobody's password matches, checked for unknown names so they cost the same time.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(24))

# Logins are checked in threads of their own, MAX_CHECKS at most: a burst of logins (a flood
# of wrong ones) takes none of the default executor's threads (the log's reads, the sync) and
# leaves no 16 MiB behind in each of them (measured: four concurrent logins on the default
# executor kept the idle daemon 64 MB bigger for good).
_CHECKER = ThreadPoolExecutor(max_workers=MAX_CHECKS, thread_name_prefix="password-check")
# glibc keeps the freed buffer in the thread's arena (its mmap threshold rises after the first
# large free); malloc_trim hands it back. None where the C library has no such call.
_MALLOC_TRIM: Callable[[int], int] | None = getattr(ctypes.CDLL(None), "malloc_trim", None)


def _check(password: str, stored: str) -> bool:
    try:
        return verify_password(password, stored)
    finally:
        if _MALLOC_TRIM is not None:
            _MALLOC_TRIM(0)


def parse_accounts(text: str, source: str, roles: Roles = Role) -> dict[str, Account]:
    """The accounts in ``text``; :class:`AccountsError` naming ``source`` and the line."""
    accounts: dict[str, Account] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}, line {number}"
        fields = line.split()
        if len(fields) != 3:
            raise AccountsError(f"{where}: expected 'NAME ROLE HASH', got {len(fields)} fields")
        name, role, stored = fields
        try:
            check_name(name)
            _parse_hash(stored)
        except AccountsError as exc:
            raise AccountsError(f"{where}: {exc}") from None
        if role not in {r.value for r in roles}:
            known = ", ".join(r.value for r in roles)
            raise AccountsError(f"{where}: role {role!r} is not one of {known}")
        if name in accounts:
            raise AccountsError(f"{where}: account {name!r} is listed twice")
        accounts[name] = Account(name, roles(role), stored)
    return accounts


def read_accounts(path: Path, roles: Roles = Role) -> dict[str, Account]:
    """The accounts of ``path`` (none if it does not exist yet)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AccountsError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AccountsError(f"{path}: not UTF-8 (byte {exc.start})") from None
    return parse_accounts(text, str(path), roles)


def render_accounts(accounts: Mapping[str, Account]) -> str:
    lines = ["# edgegate console accounts: NAME ROLE HASH (edit with 'edgegate accounts')"]
    lines += [f"{a.name} {a.role.value} {a.password_hash}" for a in accounts.values()]
    return "\n".join(lines) + "\n"


def write_accounts(path: Path, accounts: Mapping[str, Account]) -> None:
    """Replace ``path`` atomically (temporary file, fsync, rename) with mode 0600."""
    target = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, render_accounts(accounts).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(target, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        raise AccountsError(f"cannot write {path}: {exc.strerror or exc}") from None


class AccountStore:
    """The accounts file as the daemon sees it: re-read when it changes (at most once per
    ``recheck_ns`` of the injected monotonic clock). A damaged file is reported in the log
    and the accounts read last stay in force, so a typo does not lock every guard out."""

    def __init__(
        self,
        path: Path,
        mono_ns: Callable[[], int],
        *,
        recheck_ns: int = 1_000_000_000,
        roles: Roles = Role,
    ) -> None:
        self.path = path
        self.roles = roles
        self._mono_ns = mono_ns
        self._recheck_ns = recheck_ns
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at: int | None = None
        self._accounts: dict[str, Account] = {}
        self.problem: str | None = None
        self.refresh(force=True)

    @classmethod
    def open(cls, path: Path, mono_ns: Callable[[], int], roles: Roles = Role) -> AccountStore:
        """Like the constructor, but a damaged file at start raises :class:`AccountsError`."""
        store = cls(path, mono_ns, roles=roles)
        if store.problem is not None:
            raise AccountsError(store.problem)
        return store

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def refresh(self, *, force: bool = False) -> None:
        now = self._mono_ns()
        recent = self._checked_at is not None and now - self._checked_at < self._recheck_ns
        if recent and not force:
            return
        self._checked_at = now
        stamp = self._file_stamp()
        if stamp == self._stamp and not force:
            return
        try:
            accounts = read_accounts(self.path, self.roles)
        except AccountsError as exc:
            if self.problem != str(exc):
                log.error("accounts_file_damaged", error=str(exc), kept=len(self._accounts))
            self.problem = str(exc)
            self._stamp = stamp
            return
        self._accounts, self._stamp, self.problem = accounts, stamp, None

    def get(self, name: str) -> Account | None:
        self.refresh()
        return self._accounts.get(name)

    def names(self) -> list[str]:
        self.refresh()
        return list(self._accounts)

    async def authenticate(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is its password; checked in a password-check thread
        (MAX_CHECKS at once), and as slowly for an unknown name as for a known one."""
        account = self.get(name)
        stored = account.password_hash if account is not None else _DUMMY_HASH
        try:
            ok = await asyncio.get_running_loop().run_in_executor(
                _CHECKER, _check, password, stored
            )
        except AccountsError:  # not reachable for parsed accounts; a refusal all the same
            return None
        return account if ok and account is not None else None
