"""`jit-server init` run by root on a data dir the service user owns: the service user
can rename things inside it while init runs, and must not get root's files out of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from jit_hooks.errors import JitError
from jit_hooks.server import init
from jit_hooks.server.settings import Settings
from tests.server.test_cli import one_line_error, run

SERVICE_UID = 65534  # nobody: stands in for the packaged jit-server user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture(autouse=True)
def _sqlite_only(db_backend: str) -> None:
    if db_backend != "sqlite":
        pytest.skip("file ownership: the SQLite data dir is enough")


def _root_only_dir(tmp_path: Path) -> Path:
    """A root-only directory with a key the service user must never read (e.g. /etc/nginx/ssl)."""
    target = tmp_path / "target"
    target.mkdir(mode=0o755)
    (target / "server.key").write_text("ROOT-ONLY PRIVATE KEY\n")
    os.chmod(target / "server.key", 0o600)
    (target / "server.pem").write_text("x\n")
    return target


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A temp dir the service user can reach (pytest's own sit under 0700 parents)."""
    base = Path(tempfile.mkdtemp(prefix="jit-init-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _service_data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    os.chown(d, SERVICE_UID, SERVICE_UID)
    return d


def test_a_tls_dir_swapped_for_a_symlink_is_not_followed(tmp_path):
    """The step that hands files over walks DATA/tls without following a symlink: the
    swapped-in directory's key stays root's and init stops, naming the path."""
    target = _root_only_dir(tmp_path)
    d = _service_data_dir(tmp_path)
    d.joinpath("tls").symlink_to(target)  # what the service user did mid-run
    settings = Settings.from_options(data_dir=str(d))
    tls = d / "tls"
    with pytest.raises(JitError, match="symlink"):
        init._give(
            SERVICE_UID, SERVICE_UID, settings, d, tls, tls / "server.pem", tls / "server.key"
        )
    for name in ("server.key", "server.pem"):
        assert (target / name).stat().st_uid == 0, name


def test_a_tls_swap_during_init_leaves_root_files_alone(tmp_path):
    """The reviewer's race with a real attacker process running as the service user: it
    swaps DATA/tls for a symlink when the database appears (after the TLS files are
    written, before they are handed over). init fails; the root key keeps its owner."""
    target = _root_only_dir(tmp_path)
    d = _service_data_dir(tmp_path)
    attacker = textwrap.dedent(
        """
        import os, sys, time
        data, target = sys.argv[1], sys.argv[2]
        for _ in range(60000):
            if os.path.exists(os.path.join(data, "jit.db")):
                os.rename(os.path.join(data, "tls"), os.path.join(data, "tls.real"))
                os.symlink(target, os.path.join(data, "tls"))
                print("swapped", flush=True)
                break
            time.sleep(0.001)
        """
    )

    def as_service_user() -> None:
        os.setgroups([])
        os.setgid(SERVICE_UID)
        os.setuid(SERVICE_UID)

    proc = subprocess.Popen(
        [sys.executable, "-c", attacker, str(d), str(target)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=as_service_user,  # noqa: PLW1509 (single-threaded test process)
    )
    try:
        r = run(d, "init", "--name", "jit.example.test", "--admin", "root-admin")
    finally:
        out, _ = proc.communicate(timeout=150)
    assert out.strip() == "swapped" and (d / "tls").is_symlink()
    assert (target / "server.key").stat().st_uid == 0
    assert (target / "server.pem").stat().st_uid == 0
    assert r.returncode != 0
    assert "symlink" in one_line_error(r)


def test_a_ca_dir_owned_by_the_service_user_is_refused(tmp_path):
    """DATA/ca must be root's: a service-owned one could be swapped or read. init says
    so and writes no CA key."""
    d = _service_data_dir(tmp_path)
    ca = d / "ca"
    ca.mkdir(mode=0o700)
    os.chown(ca, SERVICE_UID, SERVICE_UID)
    r = run(d, "init", "--name", "jit.example.test")
    assert r.returncode != 0
    assert f"{ca} belongs to uid {SERVICE_UID}" in one_line_error(r)
    assert not (ca / "ca.key").exists()
