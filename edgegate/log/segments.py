"""The files of a log with ``[log.retention]``: sealed segments and their zstd archives.

Beside the active file ``gate.db`` is the folder ``gate.db.segments/``. A sealed segment
``000000000001-000000150000.db`` is an SQLite file holding the events ``1..150000`` as the
active file held them (same columns, same append-only triggers, the gate id in its
``log_meta``), never written again; its archive is the same file compressed with zstd,
``000000000001-000000150000.db.zst``. A file is written as ``*.tmp``, fsynced, renamed and
its folder fsynced: a name without ``.tmp`` is a complete file.

What is sealed, archived and removed is recorded in the active file's ``log_meta`` (the
*marks*), set in the same transaction as the event that reports the step: a file beyond
its mark is an interrupted step that never happened (readers ignore it, ``recover`` deletes
it); a mark beyond its file's deletion is a step to complete. docs/design.md §4.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edgegate.log.chain import GENESIS_HASH
from edgegate.log.queries import ROW_COLUMNS

SEGMENTS_SUFFIX = ".segments"
_NAME = re.compile(r"^(\d{12})-(\d{12})\.db(\.zst)?$")
_COPY_CHUNK = 1 << 20
_COPY_ROWS = 10_000  # rows per chunk of a segment's copy (a few MB)
_FLUSH_BYTES = 4 << 20  # archive bytes between fsyncs
_PAUSE = 0.005  # between chunks: the lanes' commits get the disk and the CPU first

SEGMENT_TABLES = ("log_meta", "events", "events_no_update", "events_no_delete")
"""What a segment file holds of the log's schema, created from the log's own definitions
(``sqlite_master``): the same columns and the same append-only triggers."""


class SegmentError(RuntimeError):
    """A segment or archive file that is not what its name and the log's marks promise."""


def segments_dir(db: str | Path) -> Path:
    """The folder of ``db``'s segments and archives (it may not exist)."""
    path = Path(db)
    return path.with_name(path.name + SEGMENTS_SUFFIX)


def segment_name(first: int, last: int) -> str:
    return f"{first:012d}-{last:012d}.db"


@dataclass(frozen=True, slots=True)
class Marks:
    """How far the retention went, as the active file's ``log_meta`` records it."""

    sealed_through: int = 0
    sealed_hash: bytes = GENESIS_HASH
    archived_through: int = 0
    removed_through: int = 0
    removed_hash: bytes = GENESIS_HASH

    @property
    def first_kept(self) -> int:
        """The first seq still on disk (in an archive, a segment or the active file)."""
        return self.removed_through + 1


_MARK_KEYS = (
    "sealed_through",
    "sealed_hash",
    "archived_through",
    "removed_through",
    "removed_hash",
)


def read_marks(conn: sqlite3.Connection) -> Marks:
    """The marks in the ``log_meta`` of the log file ``conn`` is open on."""
    marks = ", ".join(f"'{key}'" for key in _MARK_KEYS)
    found = dict(conn.execute(f"SELECT key, value FROM log_meta WHERE key IN ({marks})"))
    return Marks(
        sealed_through=int(found.get("sealed_through", 0)),
        sealed_hash=bytes.fromhex(found.get("sealed_hash", GENESIS_HASH.hex())),
        archived_through=int(found.get("archived_through", 0)),
        removed_through=int(found.get("removed_through", 0)),
        removed_hash=bytes.fromhex(found.get("removed_hash", GENESIS_HASH.hex())),
    )


def write_marks(conn: sqlite3.Connection, **values: int | bytes) -> None:
    """Set marks (inside the writer's transaction, as the effect of the step's event)."""
    for key, value in values.items():
        assert key in _MARK_KEYS, key
        text = value.hex() if isinstance(value, bytes) else str(value)
        conn.execute(
            "INSERT INTO log_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, text),
        )


@dataclass(frozen=True, slots=True)
class Part:
    """One sealed range of the log on disk: a segment file or its archive."""

    first: int
    last: int
    path: Path
    archived: bool

    @property
    def name(self) -> str:
        return self.path.name

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


def list_files(directory: Path) -> list[Part]:
    """Every complete segment and archive file in ``directory`` (both, where a segment has
    been archived and its file not yet removed), by first seq."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    parts = []
    for name in names:
        m = _NAME.match(name)
        if m is not None:
            parts.append(Part(int(m[1]), int(m[2]), directory / name, m[3] is not None))
    parts.sort(key=lambda p: (p.first, p.archived))
    return parts


def kept_parts(directory: Path, marks: Marks) -> list[Part]:
    """The parts that the marks vouch for, one per range (the segment where both are), in
    seq order: sealed, not removed, archives only once archived."""
    out: dict[int, Part] = {}
    for part in list_files(directory):
        if part.last > marks.sealed_through or part.last <= marks.removed_through:
            continue
        if part.archived and part.last > marks.archived_through:
            continue
        if part.first not in out:
            out[part.first] = part
    return [out[k] for k in sorted(out)]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _publish(tmp: Path, final: Path) -> None:
    """Make the complete ``tmp`` durable under its final name."""
    _fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to a sealed file (immutable: it never changes)."""
    conn = sqlite3.connect(
        f"{path.absolute().as_uri()}?mode=ro&immutable=1",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    return conn


def write_segment(
    db: Path, gate_id: str, first: int, last: int, prev_hash: bytes, last_hash: bytes
) -> Part:
    """Copy events ``first..last`` of the log file ``db`` into their segment file, verify it
    (``check_copy``), make it durable and give it its name.

    Runs in a background thread on its own connections (the writer goes on meanwhile).
    ``SegmentError`` if the copy is not sound (the temporary file is then removed)."""
    directory = segments_dir(db)
    directory.mkdir(exist_ok=True)
    final = directory / segment_name(first, last)
    tmp = final.with_name(final.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(str(tmp), isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode = OFF")  # a new file: all or nothing anyway
            conn.execute("PRAGMA synchronous = OFF")  # fsynced by chunks, and whole at the end
            conn.execute("ATTACH DATABASE ? AS src", (f"{db.absolute().as_uri()}?mode=ro",))
            marks = ", ".join("?" * len(SEGMENT_TABLES))
            for (sql,) in conn.execute(
                f"SELECT sql FROM src.sqlite_master WHERE name IN ({marks}) ORDER BY type",
                SEGMENT_TABLES,
            ).fetchall():
                conn.execute(sql)  # tables first ("table" < "trigger"), into the segment
            conn.execute(
                "INSERT INTO log_meta (key, value) VALUES ('gate_id', ?), ('first_seq', ?),"
                " ('last_seq', ?)",
                (gate_id, str(first), str(last)),
            )
            with open(tmp, "rb") as flushed:
                for lo in range(first, last + 1, _COPY_ROWS):
                    # SQLite copies a chunk without the GIL; each chunk is flushed at once,
                    # so that no single fsync of the whole file stalls the lanes' commits.
                    conn.execute(
                        f"INSERT INTO events SELECT {ROW_COLUMNS} FROM src.events"
                        " WHERE seq BETWEEN ? AND ? ORDER BY seq",
                        (lo, min(lo + _COPY_ROWS - 1, last)),
                    )
                    os.fdatasync(flushed.fileno())
                    time.sleep(_PAUSE)
            check_copy(conn, tmp.name, first, last, prev_hash, last_hash)
            conn.execute("DETACH DATABASE src")
        finally:
            conn.close()
        _publish(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Part(first, last, final, archived=False)


_DIFFERENT = " OR ".join(
    f"e.{c} IS NOT {s}"
    for c, s in (
        ("wall_ns", "s.wall_ns"),
        ("mono_ns", "s.mono_ns"),
        ("boot_id", "s.boot_id"),
        ("type", "s.type"),
        ("lane", "s.lane"),
        ("version", "s.version"),
        ("data", "CAST(s.data AS BLOB)"),
        ("prev_hash", "CAST(s.prev_hash AS BLOB)"),
        ("hash", "CAST(s.hash AS BLOB)"),
    )
)


def check_copy(
    conn: sqlite3.Connection, name: str, first: int, last: int, prev_hash: bytes, last_hash: bytes
) -> None:
    """``SegmentError`` unless the segment ``conn`` writes (the log attached as ``src``) holds
    exactly ``first..last``, every row identical to the log's, each linked to the one before,
    the first to ``prev_hash`` (the previous segment's end) and the last being ``last_hash``.

    In SQLite, without the GIL: re-hashing a day's events in Python would hold the GIL away
    from the lanes for seconds. The hashes themselves are the verifier's (``log verify``)."""
    count, low, high = conn.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM events").fetchone()
    if (count, low, high) != (last - first + 1, first, last):
        raise SegmentError(f"{name}: holds {count} events {low}..{high}, not {first}..{last}")
    differ = conn.execute(
        f"SELECT MIN(e.seq) FROM events e JOIN src.events s ON s.seq = e.seq WHERE {_DIFFERENT}"
    ).fetchone()[0]
    if differ is not None:
        raise SegmentError(f"{name}: seq {differ} differs from the log's")
    unlinked = conn.execute(
        "SELECT MIN(b.seq) FROM events a JOIN events b ON b.seq = a.seq + 1"
        " WHERE b.prev_hash IS NOT a.hash"
    ).fetchone()[0]
    if unlinked is not None:
        raise SegmentError(f"{name}: seq {unlinked} does not chain from the one before")
    ends = conn.execute(
        "SELECT (SELECT prev_hash FROM events WHERE seq = ?),"
        " (SELECT hash FROM events WHERE seq = ?)",
        (first, last),
    ).fetchone()
    if ends != (prev_hash, last_hash):
        raise SegmentError(
            f"{name}: does not chain from the sealed log to the log's hash of {last}"
        )


def _sha256_of(stream: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := stream.read(_COPY_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def archive_segment(part: Part, level: int) -> Part:
    """Compress the segment ``part`` into its archive, make it durable and check that it
    decompresses to the very bytes of the segment. The segment file is left in place (it is
    removed once the archiving is logged)."""
    final = part.path.with_name(part.path.name + ".zst")
    tmp = final.with_name(final.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        import zstandard  # here: a gate without [log.retention] never loads it

        # One thread: archiving must leave the other core to the lanes.
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        with (
            open(part.path, "rb") as src,
            open(tmp, "wb") as dst,
            compressor.stream_writer(dst, closefd=False) as packer,
        ):
            flushed = 0
            while chunk := src.read(_COPY_CHUNK):
                packer.write(chunk)
                if dst.tell() - flushed >= _FLUSH_BYTES:  # small fsyncs, as above
                    dst.flush()
                    os.fdatasync(dst.fileno())
                    flushed = dst.tell()
                    time.sleep(_PAUSE)
        with open(part.path, "rb") as src:
            want = _sha256_of(src)
        with open(tmp, "rb") as packed:
            reader = zstandard.ZstdDecompressor().stream_reader(packed, read_size=_COPY_CHUNK)
            got = _sha256_of(reader)
        if got != want:
            raise SegmentError(f"{final.name}: does not decompress to {part.path.name}")
        _publish(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Part(part.first, part.last, final, archived=True)


def decompress(part: Part, into: Path) -> Path:
    """The archive ``part`` decompressed into the folder ``into`` (a reader's temporary
    folder); ``SegmentError`` if it is damaged."""
    import zstandard

    target = into / part.path.name.removesuffix(".zst")
    try:
        # Not copy_stream: it ends quietly where a cut-off archive ends; a frame that never
        # reached its end (and its checksum) is damaged.
        unpacker = zstandard.ZstdDecompressor().decompressobj(write_size=_COPY_CHUNK)
        with open(part.path, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(_COPY_CHUNK):
                dst.write(unpacker.decompress(chunk))
        if not unpacker.eof:
            raise SegmentError(f"{part.path.name}: damaged archive: cut off (empty or truncated)")
    except zstandard.ZstdError as exc:
        target.unlink(missing_ok=True)
        raise SegmentError(f"{part.path.name}: damaged archive: {exc}") from exc
    except SegmentError:
        target.unlink(missing_ok=True)
        raise
    return target


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Bytes on disk of a log: the active file (with its -wal), segments and archives."""

    active: int
    segments: int
    archives: int

    @property
    def total(self) -> int:
        return self.active + self.segments + self.archives


def disk_usage(db: str | Path) -> DiskUsage:
    """What ``db`` and its segments occupy (a few ``stat`` calls: cheap enough to scrape)."""
    path = Path(db)
    active = 0
    for name in (path, Path(f"{path}-wal")):
        with contextlib.suppress(FileNotFoundError):
            active += name.stat().st_size
    segments = archives = 0
    for part in list_files(segments_dir(path)):
        if part.archived:
            archives += part.size()
        else:
            segments += part.size()
    return DiskUsage(active, segments, archives)


def recover(db: Path, marks: Marks) -> list[str]:
    """Undo or complete the file steps a crash interrupted, as the marks say; return what was
    done (one line each). Rows still in the active file at or below ``sealed_through`` are
    the caller's to delete (through the writer)."""
    directory = segments_dir(db)
    done: list[str] = []
    if not directory.is_dir():
        return done
    for name in sorted(os.listdir(directory)):
        if name.endswith(".tmp"):
            (directory / name).unlink(missing_ok=True)
            done.append(f"removed the unfinished {name}")
    files = list_files(directory)
    archived = {p.first for p in files if p.archived and p.last <= marks.archived_through}
    for part in files:
        if part.last <= marks.removed_through:
            why = "its removal was logged"
        elif part.last > marks.sealed_through:
            why = "its sealing was never logged"
        elif part.archived and part.last > marks.archived_through:
            why = "its archiving was never logged"
        elif not part.archived and part.first in archived:
            why = "its archiving was logged"
        else:
            continue
        part.path.unlink(missing_ok=True)
        done.append(f"removed {part.name}: {why}")
    if done:
        fsync_dir(directory)
    return done
