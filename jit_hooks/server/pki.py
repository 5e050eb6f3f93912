"""The service's own small PKI for `jit-server init`: a private CA and one server
certificate, or the admin's own certificate and key checked before use.

Keys are EC P-256. The CA key is written 0600 and is only ever read by
`jit-server init` on this machine: hosts and laptops get the CA certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jit_hooks.errors import JitError

CA_DAYS = 10 * 365
# Browsers refuse server certificates valid longer than 398 days even from a
# private CA; `jit-server init --renew-cert` is not there yet, so 397 days.
SERVER_DAYS = 397


class PkiError(JitError):
    """Raised when a certificate or key cannot be made, read or used."""


@dataclass(frozen=True)
class Names:
    dns: tuple[str, ...]
    ips: tuple[str, ...]

    def describe(self) -> str:
        return ", ".join([f"DNS:{n}" for n in self.dns] + [f"IP:{i}" for i in self.ips])


def parse_names(names: list[str], ips: list[str]) -> Names:
    """--name a,b and --ip x (repeatable, comma lists too) -> validated SANs."""
    dns: list[str] = []
    for item in names:
        for n in (p.strip() for p in item.split(",")):
            if not n:
                continue
            label_ok = all(
                0 < len(lab) <= 63 and lab.replace("-", "").isalnum() and lab.isascii()
                for lab in n.removeprefix("*.").split(".")
            )
            if not label_ok or len(n) > 253:
                raise PkiError(f"--name {n[:80]!r}: not a DNS name")
            dns.append(n.lower())
    addrs: list[str] = []
    for item in ips:
        for i in (p.strip() for p in item.split(",")):
            if not i:
                continue
            try:
                addrs.append(str(ipaddress.ip_address(i)))
            except ValueError:
                raise PkiError(f"--ip {i[:80]!r}: not an IP address") from None
    if not dns and not addrs:
        raise PkiError("give the names clients use for the service: --name NAME and/or --ip IP")
    return Names(tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(addrs)))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(common_name: str) -> tuple[bytes, bytes]:
    """A new CA: (certificate PEM, private key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_server_cert(ca_cert_pem: bytes, ca_key_pem: bytes, names: Names) -> tuple[bytes, bytes]:
    """A server certificate for ``names`` signed by the CA: (certificate PEM, key PEM)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise PkiError("the CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names.dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in names.ips]
    cn = (names.dns or names.ips)[0]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def check_pair(cert_path: Path, key_path: Path) -> tuple[bytes, bytes, str]:
    """Read the admin's own certificate and key; refuse a pair that cannot serve.

    Returns (certificate PEM, key PEM, the SANs as text).
    """
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as e:
        raise PkiError(f"{e.filename}: {e.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise PkiError(f"{cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise PkiError(f"{key_path}: not an unencrypted PEM private key") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise PkiError(f"{key_path} is not the key of the certificate {cert_path}")
    if cert.not_valid_after_utc <= _now():
        raise PkiError(f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PkiError(
            f"{cert_path} has no subjectAltName: clients check the name against it"
        ) from None
    names = Names(
        tuple(san.get_values_for_type(x509.DNSName)),
        tuple(str(i) for i in san.get_values_for_type(x509.IPAddress)),
    )
    if not names.dns and not names.ips:
        raise PkiError(f"{cert_path}: its subjectAltName names no DNS name or IP address")
    return cert_pem, key_pem, names.describe()


def write_new(path: Path, data: bytes, mode: int, *, dir_fd: int | None = None) -> None:
    """Create ``path`` (relative to ``dir_fd`` if given) with ``mode``; never replace a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
