"""Test PKI made with the real `openssl` CLI: two CAs and server certs, good and bad on purpose.

``make_pki(dir)`` returns paths for:

* ``ca``           -- the CA the hooks are told to trust (their ``ca_file``)
* ``ok``           -- server cert for IP 127.0.0.1 signed by ``ca``, valid now
* ``untrusted``    -- same name, signed by a second CA nobody trusts
* ``wrongname``    -- signed by ``ca``, valid now, but for ``wrong-name.invalid``
* ``expired``      -- signed by ``ca`` for 127.0.0.1, valid only in January 2020

Each server entry is a ``(cert, key)`` pair. ``openssl ca`` is used because it is
the one CLI path in OpenSSL 3.0 that takes an explicit start and end date.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_CA_CONF = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
default_md = sha256
policy = anything
copy_extensions = none
unique_subject = no
x509_extensions = leaf
[ anything ]
commonName = supplied
[ leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _run(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _issue(
    d: Path, name: str, ca: tuple[Path, Path], san: str, dates: tuple[str, str] | None = None
) -> tuple[Path, Path]:
    work = d / f"{name}.ca"
    (work / "issued").mkdir(parents=True)
    (work / "index.txt").write_text("")
    (work / "serial").write_text("1000\n")
    conf = work / "ca.cnf"
    conf.write_text(_CA_CONF.format(dir=work, san=san))
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    _run(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )  # fmt: skip
    validity = ["-startdate", dates[0], "-enddate", dates[1]] if dates else ["-days", "30"]
    _run(
        "ca", "-batch", "-notext", "-config", str(conf), "-cert", str(ca[0]), "-keyfile",
        str(ca[1]), "-in", str(csr), "-out", str(cert), *validity,
    )  # fmt: skip
    return cert, key


def make_pki(d: Path) -> dict[str, object]:
    d.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(d, "trusted-ca")
    evil = _make_ca(d, "untrusted-ca")
    return {
        "ca": ca[0],
        "ok": _issue(d, "ok", ca, "IP:127.0.0.1"),
        "untrusted": _issue(d, "untrusted", evil, "IP:127.0.0.1"),
        "wrongname": _issue(d, "wrongname", ca, "DNS:wrong-name.invalid"),
        "expired": _issue(d, "expired", ca, "IP:127.0.0.1", ("20200101000000Z", "20200102000000Z")),
    }
