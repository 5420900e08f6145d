"""A trial broker's files: mosquitto's configuration, ACL and password file, a CA with the
broker's certificate and each client's credentials, and where each goes (``trial.txt``).

For trials and tests only: the CA key sits beside what it signs. The policy (global settings,
ACL) is the production example's (``config/mosquitto/``); ``tests/test_central_tools.py``
checks that the two agree. Passwords are hashed as ``mosquitto_passwd`` does (PBKDF2-SHA512,
``$7$``), so mosquitto's tools are not needed to write the files.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgegate.sync.protocol import ProtocolError, check_id

MOSQUITTO_PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default (mosquitto 2.0)
_SALT_BYTES = 12
_CA_DAYS = 3650
_LEAF_DAYS = 825


class TrialError(ValueError):
    """The trial's files cannot be written as asked; the message says why."""


def mosquitto_password_hash(
    password: str, *, salt: bytes | None = None, iterations: int = MOSQUITTO_PBKDF2_ITERATIONS
) -> str:
    """``password`` as a mosquitto 2.0 password file holds it: ``$7$ITER$SALT$HASH``
    (PBKDF2-HMAC-SHA512, base64 salt and 64-byte hash), as ``mosquitto_passwd`` writes it."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def acl_text(central_id: str, gates: Sequence[str] = (), site: str | None = None) -> str:
    """The production ACL (``config/mosquitto/acl``) with ``central_id`` as central's user:
    central reads every gate's uplink and writes every gate's downlink and every site's park
    chain; each gate (user name = gate id) writes only its own uplink and reads only its own
    downlink, and with ``site`` each of ``gates`` reads that site's park topic (only)."""
    root = "edgegate/v1/+"
    lines = [
        "# edgegate trial broker ACL (as config/mosquitto/acl). Topics: edgegate/v1/{site}/{gate}/",
        f"user {central_id}",
        *(f"topic read {root}/+/{t}" for t in ("events", "status", "requests")),
        *(f"topic write {root}/+/{t}" for t in ("ack", "allowlist", "commands")),
        f"topic write {root}/park",
        "",
        "# Every gate: its own topics only (user name = gate id).",
        *(f"pattern write {root}/%u/{t}" for t in ("events", "status", "requests")),
        *(f"pattern read {root}/%u/{t}" for t in ("ack", "allowlist", "commands")),
    ]
    if site is not None:
        lines += ["", f"# Each gate of site {site}: that site's park chain, read only."]
        for gate in gates:
            lines += [f"user {gate}", f"topic read edgegate/v1/{site}/park"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TrialPlan:
    """What to write: the directory, the gates and central's user, the listener, the user
    mosquitto runs as."""

    directory: Path
    gates: tuple[str, ...]
    central_id: str = "central"
    host: str = "127.0.0.1"
    port: int = 8883
    run_as: str = "mosquitto"
    site: str | None = None
    """The gates' site: each may read its park topic (None: no gate reads a park topic)."""

    def __post_init__(self) -> None:
        if not self.gates:
            raise TrialError("--gates: name at least one gate id")
        for gate in (*self.gates, self.central_id):
            try:
                check_id(gate, f"id {gate!r}")
            except ProtocolError as exc:
                raise TrialError(str(exc)) from None
            if ":" in gate or any(c.isspace() for c in gate):
                raise TrialError(f"id {gate!r}: no ':' or spaces in a broker user name")
        dupes = sorted({g for g in self.gates if self.gates.count(g) > 1})
        if dupes:
            raise TrialError(f"--gates: {', '.join(dupes)} named twice")
        if self.site is not None:
            try:
                check_id(self.site, "--site")
            except ProtocolError as exc:
                raise TrialError(str(exc)) from None
        if self.central_id in self.gates:
            raise TrialError(f"--central-id {self.central_id!r} is also a gate id")
        if not 1 <= self.port <= 65535:
            raise TrialError(f"--port {self.port}: must be 1..65535")
        if not self.host or any(c.isspace() for c in self.host):
            raise TrialError(f"--host {self.host!r}: not an address or host name")
        if not self.run_as or any(c.isspace() for c in self.run_as):
            raise TrialError(f"--user {self.run_as!r}: not a user name")

    @property
    def root(self) -> Path:
        return self.directory.absolute()

    def client_dir(self, name: str) -> Path:
        return self.root / "central" if name == self.central_id else self.root / "gates" / name

    def files(self) -> list[Path]:
        """Every file ``write_trial`` writes."""
        broker = self.root / "broker"
        out = [self.root / "ca.crt", self.root / "ca.key", self.root / "trial.txt"]
        out += [broker / n for n in ("mosquitto.conf", "acl", "passwd", "server.crt", "server.key")]
        for name in (self.central_id, *self.gates):
            d = self.client_dir(name)
            out += [d / n for n in ("mqtt-password", "ca.crt", "client.crt", "client.key")]
        return out


def write_trial(plan: TrialPlan, *, force: bool = False) -> list[Path]:
    """Write the trial's files (``TrialPlan.files``); secrets 0600. Refuses (``TrialError``)
    to replace an existing file unless ``force``. Returns the files written."""
    existing = [p for p in plan.files() if p.exists() or p.is_symlink()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise TrialError(f"{len(existing)} file(s) exist already ({shown}): --force replaces them")
    for path in plan.files():
        if path.parent.exists() and not path.parent.is_dir():
            raise TrialError(f"{path.parent} is not a directory")
    root = plan.root
    try:
        for d in (root, root / "broker" / "data", *(plan.client_dir(g) for g in plan.gates)):
            d.mkdir(parents=True, exist_ok=True)
        plan.client_dir(plan.central_id).mkdir(exist_ok=True)
        _write_all(plan)
    except OSError as exc:
        raise TrialError(f"cannot write {exc.filename or root}: {exc.strerror or exc}") from None
    return plan.files()


def _write_all(plan: TrialPlan) -> None:
    root, broker = plan.root, plan.root / "broker"
    ca, ca_key = _make_ca()
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    _write(root / "ca.crt", ca_pem)
    _write(root / "ca.key", _key_pem(ca_key), secret=True)
    server, server_key = _issue(ca, ca_key, plan.host, _server_names(plan.host), server=True)
    _write(broker / "server.crt", server.public_bytes(serialization.Encoding.PEM))
    _write(broker / "server.key", _key_pem(server_key), secret=True)
    passwd: list[str] = []
    for name in (plan.central_id, *plan.gates):
        d = plan.client_dir(name)
        password = secrets.token_hex(24)
        passwd.append(f"{name}:{mosquitto_password_hash(password)}\n")
        _write(d / "mqtt-password", (password + "\n").encode(), secret=True)
        _write(d / "ca.crt", ca_pem)
        cert, key = _issue(ca, ca_key, name, [], server=False)
        _write(d / "client.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write(d / "client.key", _key_pem(key), secret=True)
    _write(broker / "passwd", "".join(passwd).encode(), secret=True)
    _write(broker / "acl", acl_text(plan.central_id, plan.gates, plan.site).encode())
    _write(broker / "mosquitto.conf", mosquitto_conf(plan).encode())
    _write(root / "trial.txt", trial_text(plan).encode())


def mosquitto_conf(plan: TrialPlan) -> str:
    """The broker's configuration: the production example's policy, this trial's paths, one
    TLS listener on ``plan.host:plan.port``."""
    b = plan.root / "broker"
    return f"""\
# edgegate trial broker, written by `edgegate central trial-broker` (trials and tests; the
# production example is config/mosquitto/). Run: mosquitto -c {b / "mosquitto.conf"}
per_listener_settings false
allow_anonymous false
password_file {b / "passwd"}
acl_file {b / "acl"}
persistence true
persistence_location {b / "data"}/
autosave_interval 10
persistent_client_expiration 14d
set_tcp_nodelay true
max_queued_messages 100000
max_inflight_messages 100
max_packet_size 33554432
user {plan.run_as}
pid_file {b / "mosquitto.pid"}
log_dest file {b / "mosquitto.log"}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true

listener {plan.port} {plan.host}
protocol mqtt
cafile {plan.root / "ca.crt"}
certfile {b / "server.crt"}
keyfile {b / "server.key"}
"""


def trial_text(plan: TrialPlan) -> str:
    """What goes where: the broker's command, each gate's ``[sync]``, central's options."""
    root, b = plan.root, plan.root / "broker"
    url = f"mqtts://{_url_host(plan.host)}:{plan.port}"
    c = plan.client_dir(plan.central_id)
    out = [
        "edgegate trial broker (for trials and tests, not production: the CA key is here)",
        "",
        f"Broker: mosquitto -c {b / 'mosquitto.conf'}   (-d to run it in the background)",
        f"  TLS on {plan.host}:{plan.port}, certificate signed by {root / 'ca.crt'},",
        f"  users {plan.central_id} (central) and {', '.join(plan.gates)} (gates),",
        f"  ACL {b / 'acl'} (each gate reads and writes only its own topics).",
        f"  The CA key {root / 'ca.key'} signs more certificates; keep it off gates and broker.",
        "",
        "Central (edgegate central run, publish-allowlist, command):",
        f"  --broker {url} --username {plan.central_id} \\",
        f"  --password-file {c / 'mqtt-password'} --ca-file {c / 'ca.crt'}",
        "",
    ]
    for gate in plan.gates:
        d = plan.client_dir(gate)
        out += [
            f"Gate {gate}: in its configuration ([gate] id = {gate!r}):",
            "  [sync]",
            f'  broker = "{url}"',
            f'  password_file = "{d / "mqtt-password"}"',
            f'  ca_file = "{d / "ca.crt"}"',
            f'  # client_cert = "{d / "client.crt"}"   (only if the listener sets',
            f'  # client_key = "{d / "client.key"}"    require_certificate true)',
            "",
        ]
    return "\n".join(out)


def _url_host(host: str) -> str:
    """How clients name the broker: ``host``, or this machine's name when it listens on every
    address (0.0.0.0, ::)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.is_unspecified:
        return socket.gethostname()
    return f"[{host}]" if ip.version == 6 else host


def _server_names(host: str) -> list[x509.GeneralName]:
    """The names clients may reach the broker by: ``host`` (unless it is 0.0.0.0 or ::),
    localhost, 127.0.0.1 and this machine's name."""
    names: list[x509.GeneralName] = []
    candidates = [host, "localhost", "127.0.0.1", socket.gethostname()]
    for name in candidates:
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            general: x509.GeneralName = x509.DNSName(name)
        else:
            if ip.is_unspecified:
                continue
            general = x509.IPAddress(ip)
        if general not in names:
            names.append(general)
    return names


def _make_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgegate trial CA")])
    cert = (
        certificate_builder(name, name, key, _CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: Sequence[x509.GeneralName],
    *,
    server: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``common_name`` signed by the CA: a TLS server's (with ``names``) or
    a client's."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        certificate_builder(subject, ca.subject, key, _LEAF_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def certificate_builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    """A certificate of ``key`` for ``subject`` by ``issuer``, valid for ``days`` from five
    minutes ago (clocks differ a little), with its subject key identifier."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; an end entity signs and agrees keys (ECDHE, ECDSA)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Replace ``path`` with ``data``; a secret is 0600 from its creation on."""
    mode = 0o600 if secret else 0o644
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)  # whatever the umask
        out.write(data)
    os.replace(tmp, path)
