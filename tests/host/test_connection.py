"""Connection ids and the AKC -> PAM accepted-key records."""

from __future__ import annotations

import os

import pytest

from jit_hooks.host.login import connection

FP = "SHA256:" + "A" * 43


def record(state, conn="1:2", now=1000.0, login="deploy"):
    connection.record_accepted(
        str(state),
        conn,
        login=login,
        key_type="ssh-ed25519",
        fingerprint=FP,
        request_id=7,
        expires_at=1764003600,
        now=now,
    )


def test_connection_id_is_parent_pid_and_start_time():
    conn = connection.connection_id()
    pid, start = conn.split(":")
    assert int(pid) == os.getppid()
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[19] == start
    assert connection.connection_id(os.getppid()) == conn


def test_connection_id_of_a_process_with_spaces_and_parens_in_its_name(tmp_path):
    import subprocess

    exe = tmp_path / "we ird) (name"
    os.symlink("/bin/sleep", exe)
    p = subprocess.Popen([str(exe), "5"])
    try:
        pid, start = connection.connection_id(p.pid).split(":")
        assert int(pid) == p.pid and start.isdigit()
    finally:
        p.kill()
        p.wait()


def test_record_round_trip(tmp_path):
    record(tmp_path)
    got = connection.accepted_key(str(tmp_path), "1:2", now=1010.0)
    assert got["fingerprint"] == FP and got["login"] == "deploy" and got["request_id"] == 7
    assert os.stat(tmp_path / "conn-1-2").st_mode & 0o777 == 0o600


def test_last_record_wins(tmp_path):
    record(tmp_path, login="first")
    record(tmp_path, login="second")
    assert connection.accepted_key(str(tmp_path), "1:2", now=1000.0)["login"] == "second"


def test_other_connection_sees_nothing(tmp_path):
    record(tmp_path)
    assert connection.accepted_key(str(tmp_path), "1:3", now=1000.0) is None


def test_stale_record_ignored_and_purged(tmp_path):
    record(tmp_path, now=1000.0)
    assert connection.accepted_key(str(tmp_path), "1:2", now=1000.0 + 301) is None
    os.utime(tmp_path / "conn-1-2", (0, 0))
    assert connection.purge_stale(str(tmp_path)) == 1
    assert not (tmp_path / "conn-1-2").exists()


@pytest.mark.parametrize("tamper", ["mode", "symlink", "garbage", "owner"])
def test_untrustworthy_record_ignored(tmp_path, tamper):
    record(tmp_path)
    path = tmp_path / "conn-1-2"
    if tamper == "mode":
        os.chmod(path, 0o666)
    elif tamper == "symlink":
        os.rename(path, tmp_path / "real")
        os.symlink(tmp_path / "real", path)
    elif tamper == "garbage":
        path.write_text('{"login": "deploy"}')
    elif tamper == "owner":
        os.chown(path, 12345, 12345)  # neither root nor the state dir's owner
    assert connection.accepted_key(str(tmp_path), "1:2", now=1000.0) is None


def test_invalid_connection_id_refused(tmp_path):
    with pytest.raises(ValueError):
        record(tmp_path, conn="../../etc/passwd")


def test_missing_state_dir_raises(tmp_path):
    with pytest.raises(OSError):
        record(tmp_path / "missing")
