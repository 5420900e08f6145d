"""Every command of ``edgegate`` over bad input, run as a technician runs it (a subprocess):
a non-zero exit and a line saying what is wrong, never a Python traceback.

The corpus: missing files, directories instead of files, empty files, binary garbage, bad
TOML and JSON, numbers that overflow, damaged logs, bad arguments, and peers that are not
there (brokers, databases and gates on 127.0.0.1 ports nothing listens on).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgegate.log import EventLog
from edgegate.sync.signing import generate_keypair
from tests.event_samples import all_samples
from tests.tamper import tampering

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "demo.toml"
EDGEGATE = [sys.executable, "-m", "edgegate"]
TIMEOUT = 60.0  # a generous bound for one command on a loaded machine; none should need it


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    @property
    def said(self) -> list[str]:
        """What stderr says to a person: its lines that are not JSON log records."""
        return [line for line in self.err.splitlines() if line and not line.startswith("{")]


def edgegate(*argv: str | Path, cwd: Path, limit_file_size: int | None = None) -> Ran:
    def limit() -> None:
        # A full disk without root: writes past RLIMIT_FSIZE fail with EFBIG (SIGXFSZ
        # ignored, as it would otherwise kill the process before the write returns).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        assert limit_file_size is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    done = subprocess.run(
        [*EDGEGATE, *map(str, argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=None if limit_file_size is None else limit,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def assert_one_clear_failure(ran: Ran, code: int | None = None) -> None:
    """No traceback anywhere, the expected exit (else any non-zero) and a line for a person
    (on stderr, or the verdict or usage on stdout)."""
    assert "Traceback" not in ran.err and "Traceback" not in ran.out, ran.err[-3000:]
    if code is None:
        assert ran.code != 0, (ran.out, ran.err)
    else:
        assert ran.code == code, (ran.out, ran.err)
    assert ran.said or ran.out.strip(), ran.err


# ---------------------------------------------------------------------------- the corpus


def _free_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def _write_log(path: Path, gate_id: str = "demo-gate") -> None:
    async with await EventLog.open(path, gate_id=gate_id) as log:
        for event in all_samples():
            await log.append(event)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of bad inputs, named by what is wrong with them."""
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(10)
    (d / "dir").mkdir()
    (d / "empty").write_bytes(b"")
    (d / "garbage").write_bytes(rng.randbytes(8192))
    (d / "text").write_text("this is not what you were looking for\n")
    (d / "bad.toml").write_text('[gate\nid = "x"\n')
    demo = DEMO_CONFIG.read_text(encoding="utf-8")
    assert demo.count('pass_timeout = "30s"') == 1
    (d / "overflow-duration.toml").write_text(
        demo.replace('pass_timeout = "30s"', 'pass_timeout = "99999999999999999999d"')
    )
    (d / "overflow-number.toml").write_text(
        demo.replace('pass_timeout = "30s"', "pass_timeout = 1e300")
    )
    (d / "deep.toml").write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "bad.json").write_text('{"steps": [')
    (d / "deep.csv").write_text("plate,kind\n" + "[" * 100_000 + ",x\n")
    (d / "garbage.csv").write_bytes(rng.randbytes(4096))
    (d / "garbage.json").write_bytes(rng.randbytes(4096))
    (d / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAAAAAA\n-----END PRIVATE KEY-----\n")
    (d / "central.key").write_bytes(generate_keypair()[0])

    good = d / "good.db"
    asyncio.run(_write_log(good))
    data = good.read_bytes()
    (d / "truncated.db").write_bytes(data[: len(data) // 2])
    (d / "zeroed.db").write_bytes(bytes(len(data)))
    (d / "garbage.db").write_bytes(rng.randbytes(len(data)))
    for name in ("boot-id.db", "foreign.db"):
        shutil.copyfile(good, d / name)
    # A boot_id column whose bytes are not UTF-8 text (sqlite3 refuses to read the row).
    with tampering(d / "boot-id.db", restore=True) as conn:
        conn.execute("UPDATE events SET boot_id = CAST(X'C328FF' AS TEXT) WHERE seq = 4")
    (d / "foreign.db").unlink()
    conn = sqlite3.connect(d / "foreign.db")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()

    # A configuration of the demo gate whose log is each of the damaged files.
    for log in ("truncated", "zeroed", "garbage", "boot-id", "dir", "text", "empty"):
        target = d / (log if log in ("dir", "text", "empty") else f"{log}.db")
        (d / f"log-{log}.toml").write_text(
            demo.replace('path = "demo-gate.db"', f'path = "{target}"')
        )
    (d / "log-under-a-file.toml").write_text(
        demo.replace('path = "demo-gate.db"', f'path = "{d / "text" / "gate.db"}"')
    )
    return d


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    code: int | None = None  # None: any non-zero exit


def _cases() -> dict[str, Case]:
    """``{C}`` is the corpus directory, ``{PORT}`` a 127.0.0.1 port nobody listens on."""
    c: dict[str, Case] = {}

    def add(name: str, *argv: str, code: int | None = None) -> None:
        assert name not in c, name
        c[name] = Case(argv, code)

    add("no-command")
    add("unknown-command", "frobnicate")
    add("bad-log-level", "--log-level", "loud", "log", "verify", "{C}/good.db")

    for name in ("missing", "dir", "empty", "garbage", "text", "bad.toml", "deep.toml"):
        add(f"check-config-{name}", "check-config", f"{{C}}/{name}", code=2)
        add(f"run-config-{name}", "run", "-c", f"{{C}}/{name}", code=2)
    for name in ("overflow-duration", "overflow-number"):
        add(f"check-config-{name}", "check-config", f"{{C}}/{name}.toml", code=2)
        add(f"run-config-{name}", "run", "-c", f"{{C}}/{name}.toml", code=2)
    add("run-no-config", "run")
    for log in ("truncated", "zeroed", "garbage", "dir", "text"):
        add(f"run-log-{log}", "run", "-c", f"{{C}}/log-{log}.toml", code=1)
    add("run-log-under-a-file", "run", "-c", "{C}/log-under-a-file.toml", code=1)

    for name in ("missing", "dir", "empty", "garbage", "text"):
        add(f"log-verify-{name}", "log", "verify", f"{{C}}/{name}", code=2)
        add(f"log-tail-{name}", "log", "tail", f"{{C}}/{name}", code=2)
    for name in ("truncated", "zeroed", "garbage", "foreign"):
        add(f"log-verify-{name}.db", "log", "verify", f"{{C}}/{name}.db", code=2)
        add(f"log-tail-{name}.db", "log", "tail", f"{{C}}/{name}.db", code=2)
        add(f"log-tail-json-{name}.db", "log", "tail", "--json", f"{{C}}/{name}.db", code=2)
    add("log-verify-boot-id", "log", "verify", "{C}/boot-id.db", code=1)
    add(
        "log-tail-n-past-sqlite", "log", "tail", "-n", "99999999999999999999", "{C}/good.db", code=0
    )
    add("log-tail-n-not-a-number", "log", "tail", "-n", "many", "{C}/good.db", code=2)
    add("log-tail-interval-negative", "log", "tail", "-f", "--interval", "-1", "{C}/good.db")
    add("log-tail-interval-nan", "log", "tail", "-f", "--interval", "nan", "{C}/good.db")
    add("log-no-action", "log")

    add("demo-log-dir", "demo", "--duration", "1", "--no-live", "--log", "{C}/dir", code=1)
    add("demo-log-text", "demo", "--duration", "1", "--no-live", "--log", "{C}/text", code=1)
    add("demo-log-garbage", "demo", "--duration", "1", "--no-live", "--log", "{C}/garbage.db")
    add("demo-log-truncated", "demo", "--duration", "1", "--no-live", "--log", "{C}/truncated.db")
    add("demo-log-under-a-file", "demo", "--duration", "1", "--no-live", "--log", "{C}/text/x.db")
    add("demo-duration-negative", "demo", "--duration", "-5", "--no-live", "--log", "{C}/d1.db")
    add("demo-duration-nan", "demo", "--duration", "nan", "--no-live", "--log", "{C}/d2.db")
    add("demo-duration-huge", "demo", "--duration", "1e300", "--no-live", "--log", "{C}/d3.db")
    add("demo-duration-text", "demo", "--duration", "long", code=2)

    for name in ("missing", "dir", "empty", "garbage", "bad.json", "deep.json", "text"):
        add(f"simulate-scenario-{name}", "simulate", f"{{C}}/{name}", "-c", str(DEMO_CONFIG))
    add("simulate-config-deep", "simulate", "{C}/bad.json", "-c", "{C}/deep.toml", code=2)
    add("simulate-config-overflow", "simulate", "{C}/bad.json", "-c", "{C}/overflow-number.toml")

    for name in ("missing", "dir", "empty", "garbage.csv", "garbage.json", "deep.json"):
        add(f"allowlist-import-{name}", "allowlist", "import", "{C}/new.db", f"{{C}}/{name}",
            "--gate", "g1")  # fmt: skip
    add("allowlist-import-deep-csv", "allowlist", "import", "{C}/new.db", "{C}/deep.csv",
        "--gate", "g1")  # fmt: skip
    for log in ("dir", "garbage.db", "truncated.db", "zeroed.db", "text"):
        add(f"allowlist-import-into-{log}", "allowlist", "import", f"{{C}}/{log}",
            str(ROOT / "config" / "allowlist-example.csv"), "--gate", "g1")  # fmt: skip
        add(f"allowlist-lookup-{log}", "allowlist", "lookup", f"{{C}}/{log}", "苏E12345")
    add("allowlist-import-config-deep", "allowlist", "import", "{C}/n2.db",
        str(ROOT / "config" / "allowlist-example.csv"), "-c", "{C}/deep.toml")  # fmt: skip
    add("allowlist-lookup-missing", "allowlist", "lookup", "{C}/missing", "苏E12345")
    add("allowlist-lookup-bad-at", "allowlist", "lookup", "{C}/good.db", "苏E12345",
        "--at", "99999-99-99")  # fmt: skip
    add("allowlist-lookup-huge-year", "allowlist", "lookup", "{C}/good.db", "苏E12345",
        "--at", "9999-12-31T23:59:59-23:59")  # fmt: skip
    add("allowlist-lookup-bad-zone", "allowlist", "lookup", "{C}/good.db", "苏E12345",
        "--timezone", "x" * 5000)  # fmt: skip

    add("keys-generate-out-is-a-file", "keys", "generate", "--out", "{C}/text")
    add("keys-generate-out-under-a-file", "keys", "generate", "--out", "{C}/text/keys")
    add("keys-generate-bad-name", "keys", "generate", "--out", "{C}/keys", "--name", "../x")
    add("keys-generate-name-too-long", "keys", "generate", "--out", "{C}/keys",
        "--name", "k" * 64 + ".pub" * 60)  # fmt: skip

    broker = ("--broker", "mqtt://127.0.0.1:{PORT}")
    add("central-run-bad-broker", "central", "run", "--broker", "http://x", code=2)
    add("central-run-bad-dsn", "central", "run", *broker, "--db", "mysql://x", code=2)
    add("central-run-db-unreachable", "central", "run", *broker,
        "--db", "postgresql://u:p@127.0.0.1:{PORT}/db", code=2)  # fmt: skip
    add("central-run-db-is-a-dir", "central", "run", *broker, "--db", "sqlite:///{C}/dir")
    add("central-run-db-garbage", "central", "run", *broker, "--db", "sqlite:///{C}/garbage.db")
    add("central-run-password-file-missing", "central", "run", *broker,
        "--password-file", "{C}/missing", code=2)  # fmt: skip
    add("central-run-password-file-garbage", "central", "run", *broker,
        "--password-file", "{C}/garbage", code=2)  # fmt: skip
    add("central-run-ca-garbage", "central", "run", "--broker", "mqtts://127.0.0.1:{PORT}",
        "--ca-file", "{C}/garbage", "--db", "sqlite:///{C}/central-ca.db")  # fmt: skip
    publish = ("central", "publish-allowlist", "--site", "s", "--gate", "g1", "--version", "2")
    example = str(ROOT / "config" / "allowlist-example.csv")
    for name in ("missing", "dir", "garbage", "key.pem"):
        add(f"central-publish-key-{name}", *publish, "--key", f"{{C}}/{name}", *broker,
            "--timeout", "1", example)  # fmt: skip
    add("central-publish-file-deep", *publish, "--key", "{C}/central.key", *broker,
        "--timeout", "1", "{C}/deep.json")  # fmt: skip
    command = ("central", "command", "--operator", "o", "--site", "s")
    for name in ("missing", "garbage", "key.pem"):
        add(f"central-command-key-{name}", *command, "--key", f"{{C}}/{name}", *broker,
            "--timeout", "1", "g1", "incident-on")  # fmt: skip
    add("central-command-bad-action", *command, "--key", "{C}/key.pem", *broker, "g1", "fly")
    add("central-command-expires-overflow", *command, "--key", "{C}/central.key", *broker,
        "--expires", "99999999999999999999d", "g1", "incident-on")  # fmt: skip
    add("central-command-timeout-nan", *command, "--key", "{C}/central.key", *broker,
        "--timeout", "nan", "g1", "incident-on")  # fmt: skip
    pull = ("central", "pull", "--token", "t", "--timeout", "2")
    add("central-pull-unreachable", *pull, "--db", "sqlite:///{C}/pull.db",
        "http://127.0.0.1:{PORT}")  # fmt: skip
    add("central-pull-bad-url", *pull, "--db", "sqlite:///{C}/pull.db", "gopher://x")
    add("central-pull-db-garbage", *pull, "--db", "sqlite:///{C}/garbage.db",
        "http://127.0.0.1:{PORT}")  # fmt: skip
    add("central-pull-db-unreachable", *pull, "--db", "postgresql://u:p@127.0.0.1:{PORT}/d",
        "http://127.0.0.1:{PORT}")  # fmt: skip
    add("central-pull-token-file-missing", "central", "pull", "--token-file", "{C}/missing",
        "http://127.0.0.1:{PORT}")  # fmt: skip
    add("central-pull-limit-zero", *pull, "--limit", "0", "http://127.0.0.1:{PORT}")
    add("central-pull-limit-overflows", *pull, "--limit", "99999999999999999999",
        "http://127.0.0.1:{PORT}")  # fmt: skip
    add("central-pull-cafile-garbage", *pull, "--cafile", "{C}/garbage",
        "--db", "sqlite:///{C}/pull2.db", "https://127.0.0.1:{PORT}")  # fmt: skip
    return c


CASES = _cases()


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Ran]]]:
    """The selected cases, started three at a time when the first of them is checked: each
    is a new interpreter, mostly waiting on imports, and a hundred in a row take minutes."""
    selected = [
        str(item.callspec.params["name"])
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == "test_bad_input_never_gives_a_traceback"
    ]

    def run(name: str) -> Ran:
        argv = [
            a.replace("{C}", str(corpus)).replace("{PORT}", str(_free_port()))
            for a in CASES[name].argv
        ]
        return edgegate(*argv, cwd=tmp_path_factory.mktemp(name))

    with ThreadPoolExecutor(max_workers=3) as pool:
        yield {name: pool.submit(run, name) for name in selected}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_never_gives_a_traceback(name: str, outcomes: dict[str, Future[Ran]]) -> None:
    assert_one_clear_failure(outcomes[name].result(), CASES[name].code)


# --------------------------------------------------------------- damaged logs, exactly


@pytest.mark.parametrize(
    ("log", "code", "says"),
    [
        ("truncated.db", 2, "is damaged or not an edgegate log: database disk image is malformed"),
        ("zeroed.db", 2, "is damaged or not an edgegate log: file is not a database"),
        ("garbage.db", 2, "is damaged or not an edgegate log: file is not a database"),
        ("foreign.db", 2, "is damaged or not an edgegate log: no such table: log_meta"),
        ("dir", 2, "is not a log file (a directory or a device)"),
        ("missing", 2, "no log file at"),
        ("boot-id.db", 1, "FAILED gate demo-gate: first bad seq 4: hash does not match"),
    ],
)
def test_log_verify_names_the_file_or_the_seq(
    log: str, code: int, says: str, corpus: Path, tmp_path: Path
) -> None:
    ran = edgegate("log", "verify", corpus / log, cwd=tmp_path)
    assert_one_clear_failure(ran, code)
    if code == 1:
        assert ran.out.splitlines()[0].startswith(says), ran.out
    else:
        [line] = ran.said
        assert line.startswith("edgegate log: ") and str(corpus / log) in line, line
        assert says in line, line


def test_tail_shows_a_row_whose_boot_id_is_not_text(corpus: Path, tmp_path: Path) -> None:
    ran = edgegate("log", "tail", "-n", "100", corpus / "boot-id.db", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert [line.split()[0] for line in ran.out.splitlines()][:5] == ["1", "2", "3", "4", "5"]


async def test_verify_names_the_last_seq_before_a_damaged_page(tmp_path: Path) -> None:
    db = tmp_path / "gate.db"
    async with await EventLog.open(db, gate_id="g1") as log:
        samples = all_samples()
        for _ in range(100):
            await asyncio.gather(*(log.submit(e) for e in samples))
    data = bytearray(db.read_bytes())
    page = 4096
    middle = len(data) // page // 2
    data[middle * page : (middle + 1) * page] = bytes(page)
    db.write_bytes(data)
    ran = await asyncio.to_thread(edgegate, "log", "verify", db, cwd=tmp_path)
    assert_one_clear_failure(ran, 2)
    [line] = ran.said
    assert line.startswith(f"edgegate log: {db} cannot be read after seq "), line
    seq = int(line.split("after seq ")[1].split(":")[0])
    assert 0 < seq < 100 * len(samples), line
    assert line.endswith("database disk image is malformed"), line


@pytest.mark.parametrize("log", ["truncated", "zeroed", "garbage", "dir"])
def test_run_on_a_damaged_log_says_which_file(log: str, corpus: Path, tmp_path: Path) -> None:
    ran = edgegate("run", "-c", corpus / f"log-{log}.toml", cwd=tmp_path)
    assert_one_clear_failure(ran, 1)
    [line] = ran.said
    target = corpus / (log if log == "dir" else f"{log}.db")
    assert line.startswith(f"edgegate run: {target}: cannot open the event log: "), line


# ------------------------------------------------------------- a read-only copy of a log

_CRASHING_WRITER = """
import asyncio, os, sys
from edgegate.core import events as ev
from edgegate.log import EventLog
from edgegate.sync.signing import generate_keypair

async def main() -> None:
    log = await EventLog.open(sys.argv[1], gate_id="crash-gate")
    events = [ev.PlateRead(lane="in-1", plate="苏E12345", confidence=0.9, reader="cam",
                           raw=bytes([i]) * 20) for i in range(int(sys.argv[2]))]
    await asyncio.gather(*(log.submit(e) for e in events))
    os._exit(0)  # as a power cut would: nothing closed, the -wal and -shm stay behind

asyncio.run(main())
"""


def _fingerprint(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in directory.iterdir()
    }


@pytest.fixture
def evidence(tmp_path: Path) -> Iterator[Path]:
    """A directory made read-only as a forensic copy would be; tests run as root, for whom
    the mode stops nothing, so the tests compare the directory's files before and after."""
    d = tmp_path / "evidence"
    d.mkdir()
    yield d
    d.chmod(0o755)


@pytest.mark.parametrize("left", ["closed", "crashed", "crashed-without-shm"])
def test_a_read_only_copy_is_read_without_changing_a_byte(
    left: str, evidence: Path, tmp_path: Path
) -> None:
    db = evidence / "gate.db"
    events = 60
    if left == "closed":
        asyncio.run(_write_log(db, gate_id="crash-gate"))
        events = len(all_samples())
    else:
        subprocess.run(
            [sys.executable, "-c", _CRASHING_WRITER, str(db), str(events)],
            cwd=ROOT,
            check=True,
            timeout=TIMEOUT,
        )
        assert Path(f"{db}-wal").stat().st_size > 0
        if left == "crashed-without-shm":
            Path(f"{db}-shm").unlink()
    names = {"gate.db"} | ({"gate.db-wal"} if left != "closed" else set())
    if left == "crashed":
        names.add("gate.db-shm")
    evidence.chmod(0o555)
    before = _fingerprint(evidence)
    assert set(before) == names

    verified = edgegate("log", "verify", db, cwd=tmp_path)
    assert verified.code == 0, verified.err
    assert f"OK gate crash-gate: {events} events, seq 1..{events}" in verified.out
    tailed = edgegate("log", "tail", "-n", "1", db, cwd=tmp_path)
    assert tailed.code == 0, tailed.err
    assert tailed.out.split()[0] == str(events)
    as_json = edgegate("log", "tail", "--json", db, cwd=tmp_path)
    assert as_json.code == 0, as_json.err

    assert _fingerprint(evidence) == before


# ----------------------------------------------------------------- a full disk at start


@pytest.mark.parametrize("existing", [False, True], ids=["new-log", "existing-log"])
def test_run_on_a_full_disk_says_so_in_one_line(
    existing: bool, corpus: Path, tmp_path: Path
) -> None:
    """The disk is "full" through RLIMIT_FSIZE: every write past 0 bytes fails with EFBIG,
    as ENOSPC would (SQLite reports both as an I/O error on write)."""
    db = tmp_path / "gate.db"
    if existing:
        shutil.copyfile(corpus / "good.db", db)
    config = tmp_path / "gate.toml"
    demo = DEMO_CONFIG.read_text(encoding="utf-8")
    config.write_text(demo.replace('path = "demo-gate.db"', f'path = "{db}"'))
    ran = edgegate("run", "-c", config, cwd=tmp_path, limit_file_size=0)
    assert_one_clear_failure(ran, 1)
    [line] = ran.said
    assert line.startswith(f"edgegate run: {db}: cannot open the event log: disk I/O error"), line
    assert line.endswith("is the disk full or failing?"), line


def test_demo_on_a_full_disk_says_so_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    ran = edgegate(
        "demo", "--duration", "5", "--no-live", "--log", db, cwd=tmp_path, limit_file_size=0
    )
    assert_one_clear_failure(ran, 1)
    [line] = ran.said
    assert line.startswith(f"edgegate demo: {db}: cannot open the event log: disk I/O error")
    assert line.endswith("is the disk full or failing?"), line
