"""A secret `jit-server` prints into a file (`> alice.token`) is private to its owner.

The shell creates the file with its umask (0644 on Debian): the token inside was
readable by everyone on the service machine. The commands that print a secret
(init, token create, host add, host rotate-token) make such a file 0600 before
writing, or refuse, changing nothing, when they cannot or when the file is another
user's (its owner reads it whatever its mode, even when root runs the command).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tests.server.test_cli import ok, one_line_error
from tests.server.test_cli_db_access import OTHER, as_other


@pytest.fixture(autouse=True)
def _sqlite_only(db_backend: str) -> None:
    if db_backend != "sqlite":
        pytest.skip("the data dir's SQLite file; the file handling is the CLI's")


def to_file(data_dir, path, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    """`jit-server ARGS > path` as a shell with umask 022 runs it."""
    old = os.umask(0o022)
    try:
        with open(path, "w") as out:
            return subprocess.run(
                [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(data_dir), *args],
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
            )
    finally:
        os.umask(old)


def mode(p) -> int:  # noqa: ANN001
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize(
    "args",
    [
        ("token", "create", "alice", "--expires", "12h"),
        ("host", "add", "web2"),
        ("host", "rotate-token", "web1", "--grace", "1h"),
    ],
    ids=["token-create", "host-add", "host-rotate-token"],
)
def test_a_token_redirected_to_a_file_is_0600(tmp_path, args):
    d = tmp_path / "data"
    ok(d, "db", "upgrade")
    ok(d, "user", "add", "alice", "--role", "requester")
    ok(d, "host", "add", "web1")
    f = tmp_path / "secret.token"
    r = to_file(d, f, *args)
    assert r.returncode == 0, r.stderr
    assert f.read_text().startswith(("jitu_", "jith_"))
    assert mode(f) == 0o600, oct(mode(f))
    assert f"{f}: was mode 0644, made 0600" in r.stderr
    assert "anyone who opened it before still can read it" in r.stderr  # what 0600 cannot do


def test_init_admin_token_file_is_0600(tmp_path):
    f = tmp_path / "ops.token"
    r = to_file(tmp_path / "data", f, "init", "--name", "localhost", "--admin", "ops")
    assert r.returncode == 0, r.stderr
    assert f.read_text().startswith("jitu_") and mode(f) == 0o600


def test_a_private_file_and_a_pipe_are_left_as_they_are(tmp_path):
    d = tmp_path / "data"
    ok(d, "db", "upgrade")
    ok(d, "user", "add", "alice", "--role", "requester")
    f = tmp_path / "t"
    f.touch(mode=0o600)
    os.chmod(f, 0o400 | 0o200)
    r = to_file(d, f, "token", "create", "alice")
    assert r.returncode == 0 and mode(f) == 0o600 and "made 0600" not in r.stderr
    assert ok(d, "token", "create", "alice").startswith("jitu_")  # stdout a pipe


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_readable_file_not_ours_is_refused_and_nothing_changes(tmp_path):
    d = tmp_path / "data"
    ok(d, "db", "upgrade")
    f = tmp_path / "web2.token"
    f.touch()
    os.chmod(f, 0o644)
    os.chown(f, 65534, 65534)  # nobody's file: root's fchmod works, so drop root
    if subprocess.run(["setpriv", f"--reuid={OTHER}", "--", "true"]).returncode != 0:
        pytest.skip("setpriv cannot switch users here")
    os.chown(d, OTHER, OTHER)
    for p in d.rglob("*"):
        os.chown(p, OTHER, OTHER)
    os.chmod(tmp_path, 0o755)
    with open(f, "a") as out:
        r = as_other(d, "host", "add", "web2", stdout=out)
    assert r.returncode == 1
    line = one_line_error(r)
    assert "belongs to nobody" in line and "not writing a secret there" in line, line
    assert f.read_text() == "" and mode(f) == 0o644
    assert "web2" not in ok(d, "host", "list")  # refused before the host was added


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of another user needs root")
@pytest.mark.parametrize("file_mode", [0o644, 0o600])
def test_root_refuses_a_file_another_user_owns(tmp_path, file_mode):
    # root's fchmod worked on it (old code: 0600, token written), yet its owner
    # still reads it: 0600 is the owner's own mode.
    d = tmp_path / "data"
    ok(d, "db", "upgrade")
    ok(d, "user", "add", "alice", "--role", "requester")
    f = tmp_path / "alice.token"
    f.touch()
    os.chmod(f, file_mode)
    os.chown(f, 65534, 65534)
    r = to_file(d, f, "token", "create", "alice")
    line = one_line_error(r)
    assert r.returncode == 1
    assert line.startswith(f"jit-server: error: {f} (stdout) belongs to nobody, "), line
    assert "not writing a secret there" in line, line
    assert f.read_text() == "" and mode(f) == file_mode and f.stat().st_uid == 65534
    assert ok(d, "token", "list", "alice").count("\n") == 1  # header only: no token made


def test_stdout_and_stderr_in_one_file_start_with_the_secret(tmp_path):
    # `token create alice > t 2>&1`: the 0600 notice was line 1, which
    # `jit login --token-stdin` reads as the token.
    d = tmp_path / "data"
    ok(d, "db", "upgrade")
    ok(d, "user", "add", "alice", "--role", "requester")
    f = tmp_path / "t"
    old = os.umask(0o022)
    try:
        with open(f, "w") as out:
            r = subprocess.run(
                [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(d),
                 "token", "create", "alice"],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
            )  # fmt: skip
    finally:
        os.umask(old)
    assert r.returncode == 0
    assert f.read_text().splitlines()[0].startswith("jitu_"), f.read_text()
    assert mode(f) == 0o600
