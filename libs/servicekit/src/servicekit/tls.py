"""Transport security of the internal gRPC calls: mTLS credentials from files, and a development PKI.

Every participant that has certificates listens with mutual TLS: it presents its own certificate and
refuses any caller without a client certificate signed by a CA in its `ca_file`. A caller with
certificates checks the server's certificate against its own `ca_file` and presents its client
certificate. Without certificates both sides speak plaintext, which is the local default (`make up`
binds every port to 127.0.0.1); a plaintext server on another interface warns at start (`grpc_server`).

The development PKI (`sagaline certs`) is made with the `openssl` command line, because the Python
`cryptography` package is not a dependency of Sagaline, while `openssl` ships with every Debian and
Ubuntu system and image that has `ca-certificates`. It issues ECDSA P-256 keys, a CA limited to
signing certificates, server certificates usable only for `serverAuth` and client certificates only
for `clientAuth`: a participant's certificate cannot be used to call another participant, because a
server checking a client certificate requires `clientAuth` in it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import grpc

from servicekit import settings

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """True when host names only this machine (`127.0.0.0/8`, `::1`, `localhost`), so no one else can connect.

    Anything else, `0.0.0.0` and host names included, counts as reachable from outside: the callers use
    this to warn or refuse, and a false alarm is cheaper than a false calm.
    """
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _read(path: Path | None, what: str) -> bytes:
    if path is None:  # the settings validator makes this unreachable for enabled settings
        raise settings.ConfigError(f"TLS {what} is not configured")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise settings.ConfigError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from exc


def server_credentials(tls: settings.TlsSettings) -> grpc.ServerCredentials:
    """Credentials of a server that presents `cert_file` and admits only clients with a certificate from `ca_file`.

    Raises:
        ConfigError: a file cannot be read.
    """
    pair = (_read(tls.key_file, "key file"), _read(tls.cert_file, "certificate file"))
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read(tls.ca_file, "CA file"), require_client_auth=True
    )


def channel_credentials(tls: settings.TlsSettings) -> grpc.ChannelCredentials:
    """Credentials of a client that trusts servers signed by `ca_file` and presents `cert_file`.

    Raises:
        ConfigError: a file cannot be read.
    """
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "CA file"),
        private_key=_read(tls.key_file, "key file"),
        certificate_chain=_read(tls.cert_file, "certificate file"),
    )


# ------------------------------------------------------------------------------ the development PKI
class PkiError(Exception):
    """A certificate could not be made: `openssl` is missing or refused (its message is included)."""


@dataclass(frozen=True)
class Issued:
    """Where a certificate and its private key were written."""

    cert: Path
    key: Path


_CA_CONFIG: Final = """\
[req]
distinguished_name = dn
x509_extensions = v3
prompt = no
[dn]
O = Sagaline
CN = {common_name}
[v3]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
"""

_CSR_CONFIG: Final = """\
[req]
distinguished_name = dn
prompt = no
[dn]
O = Sagaline
CN = {common_name}
"""

_LEAF_EXTENSIONS: Final = """\
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = {usage}
subjectAltName = {names}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    tool = shutil.which("openssl")
    if tool is None:
        raise PkiError("the openssl command is needed to make certificates (apt-get install openssl)")
    result = subprocess.run([tool, *args], input=stdin, capture_output=True, check=False, timeout=60)  # noqa: S603
    if result.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _write(path: Path, data: bytes, mode: int) -> None:
    # Atomic, with its mode from the start: a reader sees the old file or the new one, never half of
    # one, and a private key is never readable by others, not for a moment and not under a lax umask.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _new_key(path: Path) -> None:
    _write(path, _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"), 0o600)


def create_authority(directory: Path, common_name: str, days: int = 3650) -> Issued:
    """Make a new CA (`ca.crt`, `ca.key`) in directory, replacing one that is there.

    Raises:
        PkiError: openssl is missing or failed.
    """
    issued = Issued(directory / "ca.crt", directory / "ca.key")
    _new_key(issued.key)
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "ca.cnf"
        config.write_text(_CA_CONFIG.format(common_name=common_name))
        cert = _openssl("req", "-x509", "-new", "-config", str(config), "-key", str(issued.key), "-sha256",
                        "-days", str(days))  # fmt: skip
    _write(issued.cert, cert, 0o644)
    return issued


def issue(
    authority: Issued,
    directory: Path,
    name: str,
    usage: Literal["server", "client"],
    hosts: Sequence[str] = (),
    days: int = 365,
) -> Issued:
    """Issue `<name>.crt` and `<name>.key` in directory, signed by authority.

    The certificate names `name` and every entry of hosts in its subject alternative names (IP
    addresses as such, anything else as a DNS name), and serves only the given usage.

    Raises:
        PkiError: openssl is missing or failed.
    """
    issued = Issued(directory / f"{name}.crt", directory / f"{name}.key")
    _new_key(issued.key)
    names = ",".join(_alt_name(host) for host in dict.fromkeys([name, *hosts]))
    with tempfile.TemporaryDirectory() as work:
        config, extensions = Path(work) / "csr.cnf", Path(work) / "ext.cnf"
        config.write_text(_CSR_CONFIG.format(common_name=name))
        extensions.write_text(_LEAF_EXTENSIONS.format(usage=f"{usage}Auth", names=names))
        request = _openssl("req", "-new", "-config", str(config), "-key", str(issued.key))
        cert = _openssl(
            "x509", "-req", "-CA", str(authority.cert), "-CAkey", str(authority.key), "-sha256", "-days", str(days),
            "-set_serial", f"0x{secrets.token_hex(16)}", "-extfile", str(extensions), stdin=request,
        )  # fmt: skip
    _write(issued.cert, cert, 0o644)
    return issued


def publish(cert: Path, target: Path) -> None:
    """Copy a certificate (public, unlike its key) to target, readable by everyone."""
    _write(target, cert.read_bytes(), 0o644)


def _alt_name(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"
