"""Store DSNs: which backend one names, checked before anything is opened; ``open_store``."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from edgegate.central.store.base import CentralStore
from edgegate.central.store.model import BackendMissingError, DeadLetterLimits, DsnError
from edgegate.central.store.sqlite import SqliteStore

_DSN_HELP = "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"


def redact(dsn: str) -> str:
    """``dsn`` without its password, for messages and logs."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable DSN>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rpartition("@")
    userinfo = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[2]}"))


def sqlite_path(dsn: str) -> str:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` DSN."""
    if not dsn.lower().startswith("sqlite:"):
        raise DsnError(f"not a sqlite DSN: {redact(dsn)!r}")
    rest = dsn[len("sqlite:") :]
    if not rest.startswith("///"):
        raise DsnError(
            f"sqlite DSN {dsn!r} must start with sqlite:/// (three slashes, no host): "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = rest[3:]
    if "?" in path or "#" in path:
        raise DsnError(f"sqlite DSN {dsn!r} takes no query or fragment")
    path = unquote(path)
    if not path:
        raise DsnError(f"sqlite DSN {dsn!r} names no file: sqlite:///PATH")
    if "\x00" in path:
        raise DsnError("sqlite DSN path contains a NUL character")
    if path == ":memory:":
        return path
    p = Path(path)
    if p.is_dir():
        raise DsnError(f"sqlite DSN {dsn!r} names a directory, not a database file")
    if not p.parent.is_dir():
        raise DsnError(f"sqlite DSN {dsn!r}: directory {str(p.parent)!r} does not exist")
    return path


def _check_postgres_url(dsn: str) -> None:
    try:
        parts = urlsplit(dsn)
        if "," not in parts.netloc:  # libpq's multi-host form has no single port to check
            parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        raise DsnError(f"postgresql DSN {redact(dsn)!r} is malformed: {exc}") from None
    if not parts.path.strip("/"):
        raise DsnError(
            f"postgresql DSN {redact(dsn)!r} names no database: "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        )


def open_store(dsn: str, *, dead_letters: DeadLetterLimits | None = None) -> CentralStore:
    """Open (creating and migrating if needed) the store named by ``dsn``.

    Raises ``DsnError`` (a ``ValueError``) for a DSN it cannot use, ``BackendMissingError``
    for a PostgreSQL DSN without psycopg installed, ``StoreError`` when the database cannot
    be opened, ``SchemaError`` when it was written by newer software (all ``StoreError``).
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise DsnError(f"empty store DSN: {_DSN_HELP}")
    scheme, sep, _ = dsn.partition(":")
    scheme = scheme.lower()
    if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise DsnError(f"store DSN {redact(dsn)!r} has no scheme: {_DSN_HELP}")
    if scheme == "sqlite":
        return SqliteStore(sqlite_path(dsn), dead_letters=dead_letters)
    if scheme in ("postgresql", "postgres"):
        _check_postgres_url(dsn)
        # Imported here: psycopg is the `central` extra, which a gate PC does not install.
        try:
            from edgegate.central.store.postgres import PostgresStore, check_dsn
        except ImportError as exc:
            if exc.name is None or exc.name.partition(".")[0] != "psycopg":
                raise
            raise BackendMissingError(
                f"store DSN {redact(dsn)!r} needs PostgreSQL support, which is not installed:"
                " pip install 'edgegate[central]'"
            ) from None
        check_dsn(dsn)
        return PostgresStore(dsn, dead_letters=dead_letters)
    raise DsnError(f"unsupported store DSN scheme {scheme!r}: {_DSN_HELP}")
