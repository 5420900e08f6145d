"""``edgegate keys generate``: make the Ed25519 key pair central signs its downlink with."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path

from edgegate.cli.commands import Subparsers, action_group
from edgegate.observability import get_logger
from edgegate.sync.signing import generate_keypair, key_id, load_public_key

log = get_logger("cli.keys")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def register(sub: Subparsers) -> None:
    keys_sub = action_group(
        sub, "keys", "central's Ed25519 signing keys (allow-lists, commands, park chain)"
    )

    gen = keys_sub.add_parser(
        "generate",
        help="make an Ed25519 key pair: DIR/NAME.key (private, mode 0600) and DIR/NAME.pub",
        description="The private key stays with central; each gate's config pins NAME.pub.",
    )
    gen.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write")
    gen.add_argument("--name", default="central", help="file name stem (default: central)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    gen.set_defaults(func=cmd_generate)


def _fail(message: str) -> int:
    print(f"edgegate keys: {message}", file=sys.stderr)
    log.error("keys_generate_failed", error=message)
    return 2


def _write(path: Path, data: bytes, mode: int, *, force: bool) -> None:
    """Write ``data`` with ``mode``: exclusively unless ``force``, then through a temporary
    file and a rename, so the final file never holds a partial key or wider permissions."""
    if not force:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        target = path
    else:
        target = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widened
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if target != path:
        os.replace(target, path)


def _write_failed(exc: OSError, out: Path) -> int:
    if isinstance(exc, FileExistsError):
        return _fail(f"{exc.filename} already exists; use --force to overwrite")
    return _fail(f"cannot write {exc.filename or out}: {exc.strerror or exc}")


def cmd_generate(args: argparse.Namespace) -> int:
    name: str = args.name
    if not _NAME.fullmatch(name):
        return _fail(
            f"--name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    out: Path = args.out
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"cannot create {out}: {exc.strerror or exc}")
    if not args.force:
        existing = [str(p) for p in (private_path, public_path) if p.exists()]
        if existing:
            verb = "exists" if len(existing) == 1 else "exist"
            return _fail(f"{' and '.join(existing)} already {verb}; use --force to overwrite")
    private_pem, public_pem = generate_keypair()
    try:
        _write(private_path, private_pem, 0o600, force=args.force)
    except OSError as exc:
        return _write_failed(exc, out)
    try:
        _write(public_path, public_pem, 0o644, force=args.force)
    except OSError as exc:
        # Leave no private key without its public half (nor one a later run would refuse).
        with contextlib.suppress(OSError):
            private_path.unlink()
        return _write_failed(exc, out)
    kid = key_id(load_public_key(public_pem))
    print(f"private key: {private_path} (keep it on central only)")
    print(f"public key:  {public_path} (pin it in each gate's config)")
    print(f"key id:      {kid}")
    log.info("keys_generated", key_id=kid, private=str(private_path), public=str(public_path))
    return 0
