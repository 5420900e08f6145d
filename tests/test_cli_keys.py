"""``edgegate keys generate`` as an operator setting up central uses it."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from edgegate.cli.main import main
from edgegate.sync.signing import key_id, load_private_key, load_public_key, open_signed, sign


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def printed_key_id(out: str) -> str:
    match = re.search(r"key id:\s+([0-9a-f]{16})$", out, re.MULTILINE)
    assert match, out
    return match.group(1)


def test_generate_writes_a_usable_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys" / "central"  # created
    assert main(["keys", "generate", "--out", str(out)]) == 0
    private_path, public_path = out / "central.key", out / "central.pub"
    assert mode(private_path) == 0o600
    assert mode(public_path) & 0o077 in (0o044, 0o004, 0o040, 0)  # readable, never writable
    assert mode(public_path) & 0o022 == 0
    private, public = load_private_key(private_path), load_public_key(public_path)
    assert printed_key_id(capsys.readouterr().out) == key_id(public)
    assert open_signed(sign("command", b"body", private), "command", public) == b"body"
    assert sorted(p.name for p in out.iterdir()) == ["central.key", "central.pub"]


def test_private_key_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert main(["keys", "generate", "--out", str(tmp_path), "--name", "k"]) == 0
    finally:
        os.umask(old)
    assert mode(tmp_path / "k.key") == 0o600
    assert mode(tmp_path / "k.pub") == 0o644


@pytest.mark.parametrize("existing", ["central.key", "central.pub"])
def test_refuses_to_overwrite_without_force(
    tmp_path: Path, existing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / existing).write_bytes(b"precious")
    assert main(["keys", "generate", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / existing} already exist" in err
    assert "--force" in err
    assert (tmp_path / existing).read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == [existing]  # the other half not written


def test_force_replaces_the_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path)]) == 0
    first = printed_key_id(capsys.readouterr().out)
    (tmp_path / "central.key").chmod(0o644)  # a loosened old file must not keep its mode
    assert main(["keys", "generate", "--out", str(tmp_path)]) == 2
    capsys.readouterr()
    assert key_id(load_public_key(tmp_path / "central.pub")) == first
    assert main(["keys", "generate", "--out", str(tmp_path), "--force"]) == 0
    second = printed_key_id(capsys.readouterr().out)
    assert second != first
    assert key_id(load_public_key(tmp_path / "central.pub")) == second
    assert key_id(load_private_key(tmp_path / "central.key").public_key()) == second
    assert mode(tmp_path / "central.key") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["central.key", "central.pub"]


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 65])
def test_refuses_bad_names(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path / "k"), "--name", name]) == 2
    assert "--name" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def test_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["keys", "generate", "--out", str(tmp_path / "f")]) == 2
    assert "cannot create" in capsys.readouterr().err
