"""The CA file: no symlink through a directory someone else controls, and what was
checked is what ssl trusts (review finding 2).

Real files, real openssl certificates, real ssl contexts.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest

from jit_hooks.errors import ConfigError
from jit_hooks.host.login import client
from jit_hooks.host.login.config import load_config
from jit_hooks.testing.trusted import trusted_dir, write_file, write_token

NOBODY = pwd.getpwnam("nobody")


def make_ca(path: str, cn: str) -> str:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "/dev/null", "-out", path, "-subj", f"/CN={cn}", "-days", "2"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    os.chmod(path, 0o644)
    return path


def subjects(ctx) -> list[str]:
    return [dict(x[0] for x in c["subject"])["commonName"] for c in ctx.get_ca_certs()]


@pytest.fixture
def base():
    with trusted_dir("ca") as d:
        yield d


def config_with_ca(base, ca_file: str) -> str:
    token = write_token(base / "token", "jith_" + "A" * 43)
    return str(
        write_file(
            base / "c.toml",
            f'[service]\nurls = ["https://jit.example:8443"]\nca_file = "{ca_file}"\n'
            f'token_file = "{token}"\n',
        )
    )


def test_symlink_in_a_user_owned_directory_is_refused(base):
    good = make_ca(str(base / "good.pem"), "good-ca")
    drop = base / "drop"
    drop.mkdir(mode=0o755)
    os.chown(drop, NOBODY.pw_uid, NOBODY.pw_gid)
    # nobody's link points at root's good CA: the resolved path passes the rule,
    # but nobody can re-point the link after any check.
    os.symlink(good, drop / "ca.pem")
    os.lchown(drop / "ca.pem", NOBODY.pw_uid, NOBODY.pw_gid)
    with pytest.raises(ConfigError) as e:
        load_config(config_with_ca(base, str(drop / "ca.pem")))
    assert "owned by uid" in str(e.value) and str(drop) in str(e.value)


def test_symlink_in_root_directories_still_works(base):
    good = make_ca(str(base / "good.pem"), "good-ca")
    os.symlink(good, base / "ca.pem")
    cfg = load_config(config_with_ca(base, str(base / "ca.pem")))
    assert subjects(client.tls_context(cfg.ca_file)) == ["good-ca"]


def test_context_is_built_from_the_checked_bytes(base):
    """tls_context applies the rule itself: a CA file made writable after load is refused."""
    ca = make_ca(str(base / "ca.pem"), "first-ca")
    cfg = load_config(config_with_ca(base, ca))
    assert subjects(client.tls_context(cfg.ca_file)) == ["first-ca"]
    os.chmod(ca, 0o666)
    with pytest.raises(ConfigError, match="world-writable"):
        client.tls_context(cfg.ca_file)
    os.chmod(ca, 0o644)
    # A legitimate rotation (root replaces the file) gets the new CA.
    make_ca(str(base / "new.pem"), "second-ca")
    shutil.move(str(base / "new.pem"), ca)
    assert subjects(client.tls_context(cfg.ca_file)) == ["second-ca"]


@pytest.mark.parametrize("content", [b"", b"not a certificate\n"])
def test_a_file_without_a_certificate_is_refused_not_the_system_cas(base, content):
    ca = write_file(base / "ca.pem", content.decode())
    with pytest.raises(ConfigError, match="not a PEM certificate file"):
        client.tls_context(str(ca))
