"""Fixtures for host hook unit tests: keys, a config, a fault server, a syslog sink."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from jit_hooks import sshkeys
from jit_hooks.host.login.config import load_config
from jit_hooks.testing.syslog_sink import SyslogSink
from jit_hooks.testing.trusted import trusted_dir, write_file, write_token
from tests.utils.fault_server import FaultServer

TOKEN = "jith_" + "t" * 43


@pytest.fixture(scope="session")
def keypair(tmp_path_factory) -> tuple[Path, sshkeys.PublicKey]:
    """(private key path, public key) of a fresh ed25519 key."""
    d = tmp_path_factory.mktemp("keys")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "t", "-f", str(d / "id")],
        check=True,
    )
    return d / "id", sshkeys.parse_public_key((d / "id.pub").read_text())


@pytest.fixture(scope="session")
def other_key(tmp_path_factory) -> sshkeys.PublicKey:
    d = tmp_path_factory.mktemp("keys")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id")], check=True)
    return sshkeys.parse_public_key((d / "id.pub").read_text())


@pytest.fixture
def sink():
    # Short path: unix socket names are limited to 108 bytes.
    d = tempfile.mkdtemp(prefix="jsl")
    s = SyslogSink(Path(d) / "log.sock")
    yield s
    s.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fault():
    server = FaultServer()
    yield server
    server.stop()


@pytest.fixture
def trusted():
    """A root-owned 0755 directory for config, token and CA (the hooks refuse them in /tmp)."""
    with trusted_dir("host") as d:
        yield d


@pytest.fixture
def write_config(tmp_path, trusted, sink):
    """write_config(urls, **settings) -> config path; token file and state dir included.

    Config, token (0640 root:jit-hooks) and the state dir (0700 root) go to ``trusted``.
    """

    def write(urls, *, total=2.0, connect=1.0, break_glass=(), token=TOKEN, extra=""):
        token_file = write_token(trusted / "host-token", token)
        # Under the trusted dir too: the hooks refuse a state dir below /tmp (1777).
        state = trusted / "state"
        state.mkdir(mode=0o700, exist_ok=True)
        url_list = ", ".join(f'"{u}"' for u in urls)
        accounts = ", ".join(f'"{a}"' for a in break_glass)
        path = write_file(
            trusted / "jit-hooks.toml",
            f'[service]\nurls = [{url_list}]\ntoken_file = "{token_file}"\n'
            f"connect_timeout = {connect}\ntotal_timeout = {total}\n{extra}"
            f'[host]\nname = "web1"\n[break_glass]\naccounts = [{accounts}]\n'
            f'[state]\ndir = "{state}"\n[log]\nsyslog_socket = "{sink.path}"\n',
        )
        return str(path)

    return write


@pytest.fixture
def config(write_config, fault):
    return load_config(write_config([fault.url]))
