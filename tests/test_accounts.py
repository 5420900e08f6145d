"""Console accounts: hashes, the file, its damaged lines, re-reading, and the CLI."""

from __future__ import annotations

import asyncio
import io
import stat
import sys
from pathlib import Path

import pytest

from edgegate.cli.main import main
from edgegate.console.accounts import (
    Account,
    AccountsError,
    AccountStore,
    hash_password,
    parse_accounts,
    read_accounts,
    verify_password,
    weak_password,
    write_accounts,
)
from edgegate.console.desk import Role
from edgegate.core.clock import ManualClock

PASSWORD = "booth-secret-42"
HASH = hash_password(PASSWORD)


def test_a_hash_is_salted_scrypt_with_its_parameters() -> None:
    again = hash_password(PASSWORD)
    assert HASH.startswith("$scrypt$n=16384,r=8,p=1$") and again != HASH
    assert verify_password(PASSWORD, HASH) and verify_password(PASSWORD, again)
    assert not verify_password(PASSWORD + "x", HASH)
    assert PASSWORD not in HASH


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("wang guard", "expected 'NAME ROLE HASH', got 2 fields"),
        (f"wang admin {HASH}", "role 'admin' is not one of guard, supervisor"),
        ("wang guard $scrypt$n=3,r=8,p=1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==", "n=3"),
        ("wang guard plain-text-password", "not $scrypt$"),
        (f"-wang guard {HASH}", "account name '-wang'"),
    ],
)
def test_a_damaged_line_is_named_with_its_file_and_line(line: str, problem: str) -> None:
    text = f"# accounts\nli supervisor {HASH}\n\n{line}\n"
    with pytest.raises(AccountsError) as caught:
        parse_accounts(text, "/etc/edgegate/accounts")
    assert str(caught.value).startswith("/etc/edgegate/accounts, line 4: ")
    assert problem in str(caught.value)


def test_an_account_listed_twice_is_refused() -> None:
    with pytest.raises(AccountsError, match=r"line 2: account 'li' is listed twice"):
        parse_accounts(f"li guard {HASH}\nli supervisor {HASH}\n", "f")


def test_the_file_is_written_whole_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "accounts"
    accounts = {
        "wang": Account("wang", Role.GUARD, HASH),
        "li": Account("li", Role.SUPERVISOR, HASH),
    }
    write_accounts(path, accounts)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_accounts(path) == accounts
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("", "empty"),
        ("short1", "shorter than 10"),
        ("aaaaaaaaaaaa", "too few different"),
        ("1234567890", "too easy"),
        ("wang-at-gate-7", "too easy"),
    ],
)
def test_weak_passwords_are_named(password: str, why: str) -> None:
    problem = weak_password(password, "wang")
    assert problem is not None and why in problem
    assert weak_password(PASSWORD, "wang") is None


async def test_the_store_re_reads_the_file_and_keeps_the_last_good_one(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "accounts"
    write_accounts(path, {"li": Account("li", Role.SUPERVISOR, HASH)})
    store = AccountStore.open(path, clock.mono_ns)
    assert store.get("wang") is None
    write_accounts(
        path,
        {"li": Account("li", Role.SUPERVISOR, HASH), "wang": Account("wang", Role.GUARD, HASH)},
    )
    clock.advance(2)
    assert store.get("wang") is not None
    assert await store.authenticate("wang", PASSWORD) == store.get("wang")
    assert await store.authenticate("wang", "wrong-password") is None
    assert await store.authenticate("nobody", PASSWORD) is None
    path.write_text(path.read_text() + "broken line\n")
    clock.advance(2)
    assert store.get("wang") is not None  # a typo does not lock every guard out
    assert store.problem is not None and "line 4" in store.problem
    with pytest.raises(AccountsError, match="line 4"):
        AccountStore.open(path, clock.mono_ns)


# -------------------------------------------------------------------------------------- CLI


def run(
    args: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["accounts", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_a_burst_of_logins_leaves_no_scrypt_buffers_behind(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Each check takes scrypt's 16 MiB: concurrent logins must not each keep one in the
    idle daemon (they did, one per worker thread: 64 MB after four)."""
    path = tmp_path / "accounts"
    write_accounts(path, {"wang": Account("wang", Role.GUARD, HASH)})
    store = AccountStore.open(path, clock.mono_ns)
    assert await store.authenticate("wang", PASSWORD) is not None
    before = _rss_bytes()
    answers = await asyncio.gather(
        *(store.authenticate("wang", f"wrong-password-{i}") for i in range(6))
    )
    assert answers == [None] * 6
    assert _rss_bytes() - before < 16 * 1024 * 1024


def test_cli_add_list_passwd_remove(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "accounts"
    f = ["--file", str(path)]
    code, out, _ = run(
        ["add", "wang", "--role", "guard", "--password-stdin", *f],
        capsys,
        monkeypatch,
        f"{PASSWORD}\n",
    )
    assert code == 0 and "added wang" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, out, _ = run(
        ["add", "li", "--role", "supervisor", "--password-stdin", *f],
        capsys,
        monkeypatch,
        "shift-lead-77\n",
    )
    assert code == 0
    code, out, _ = run(["list", *f], capsys, monkeypatch)
    assert code == 0 and "wang" in out and "supervisor" in out and "$scrypt" not in out
    before = read_accounts(path)["wang"].password_hash
    code, _, _ = run(
        ["passwd", "wang", "--password-stdin", *f], capsys, monkeypatch, "new-booth-secret\n"
    )
    assert code == 0 and verify_password(
        "new-booth-secret", read_accounts(path)["wang"].password_hash
    )
    assert read_accounts(path)["wang"].password_hash != before
    code, out, _ = run(["remove", "wang", *f], capsys, monkeypatch)
    assert code == 0 and list(read_accounts(path)) == ["li"]


def test_cli_getpass_asks_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([PASSWORD, PASSWORD + "-typo"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, _, err = run(
        ["add", "wang", "--role", "guard", "--file", str(tmp_path / "a")], capsys, monkeypatch
    )
    assert code == 2 and "the two passwords differ" in err
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["add", "wang", "--role", "guard", "--password-stdin"],
            "short\n",
            "shorter than 10 characters",
        ),
        (["add", "wang", "--role", "guard", "--password-stdin"], "\n", "the password is empty"),
        (
            ["add", "li", "--role", "guard", "--password-stdin"],
            f"{PASSWORD}\n",
            "account 'li' exists",
        ),
        (
            ["add", "bad name", "--role", "guard", "--password-stdin"],
            f"{PASSWORD}\n",
            "account name 'bad name'",
        ),
        (["remove", "nobody"], "", "no account 'nobody'"),
        (["passwd", "nobody", "--password-stdin"], f"{PASSWORD}\n", "no account 'nobody'"),
    ],
)
def test_cli_refuses_with_a_clear_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    stdin: str,
    message: str,
) -> None:
    path = tmp_path / "accounts"
    write_accounts(path, {"li": Account("li", Role.SUPERVISOR, HASH)})
    before = path.read_bytes()
    code, _, err = run([*args, "--file", str(path)], capsys, monkeypatch, stdin)
    assert code == 2 and message in err and "Traceback" not in err
    assert path.read_bytes() == before


def test_cli_damaged_file_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "accounts"
    path.write_text(f"li supervisor {HASH}\nwang guard\n")
    code, _, err = run(["list", "--file", str(path)], capsys, monkeypatch)
    assert code == 2 and f"{path}, line 2: expected 'NAME ROLE HASH'" in err
    assert "Traceback" not in err


def test_cli_finds_the_file_through_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = Path(__file__).resolve().parent.parent / "config" / "simulated-gate.toml"
    config = tmp_path / "gate.toml"
    config.write_text(example.read_text() + '\n[console]\naccounts_file = "accounts"\n')
    code, _, err = run(
        ["add", "wang", "--role", "guard", "--password-stdin", "--config", str(config)],
        capsys,
        monkeypatch,
        f"{PASSWORD}\n",
    )
    assert code == 0, err
    assert list(read_accounts(tmp_path / "accounts")) == ["wang"]
    config.write_text(example.read_text())
    code, _, err = run(["list", "--config", str(config)], capsys, monkeypatch)
    assert code == 2 and "no [console] section" in err
