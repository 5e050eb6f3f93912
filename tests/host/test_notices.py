"""Next-login notices (host/login/notices.py): what is stored, what is shown, and when not."""

from __future__ import annotations

import functools
import json
import os
import pwd
import time

import pytest

from jit_hooks.host.login import notices, spool

FP = "SHA256:" + "a" * 43  # the ended session's key
OTHER = "SHA256:" + "b" * 43  # another person's key on the same login
record = functools.partial(notices.record, fingerprint=FP)


@pytest.fixture
def spool_dir(tmp_path):
    d = tmp_path / "spool"
    d.mkdir(mode=0o700)
    return str(d)


def _notice(**changes: object) -> bytes:
    notice = {"login": "deploy", "request_id": 1, "reason": "revoked", "at": int(time.time())}
    notice["fingerprint"] = FP
    return json.dumps({**notice, **changes}).encode()


def test_recorded_notice_is_shown_once(spool_dir):
    at = int(time.time()) - 3600
    assert record(spool_dir, login="deploy", request_id=42, reason="revoked", at=at)
    path = os.path.join(spool_dir, "notice-deploy.json")
    if os.geteuid() == 0:  # root's notice is root:jit-hooks 0640 (jit-hooksd reads it)
        assert os.stat(path).st_mode & 0o777 in (0o640, 0o600)
    else:
        assert os.stat(path).st_mode & 0o777 == 0o600
    notice = notices.take(spool_dir, "deploy", FP)
    assert notice == {
        "login": "deploy", "request_id": 42, "reason": "revoked", "at": at, "fingerprint": FP,
    }  # fmt: skip
    assert notices.take(spool_dir, "deploy", FP) is None
    assert not os.path.exists(path)


def test_the_notice_says_the_date_and_time_it_was_ended():
    notice = {"login": "deploy", "request_id": 42, "reason": "revoked", "at": 1796060880}
    assert notices.text(notice, "web1") == (  # type: ignore[arg-type]
        "jit: your previous session on web1 as deploy was ended 2026-11-30 17:48 UTC: "
        "approval 42 revoked"
    )


def test_a_notice_older_than_seven_days_is_dropped_unshown(spool_dir):
    now = int(time.time())
    record(spool_dir, login="deploy", request_id=1, reason="revoked", at=now - 8 * 86400)
    assert notices.take(spool_dir, "deploy", FP) is None
    assert not os.listdir(spool_dir)
    record(spool_dir, login="deploy", request_id=2, reason="revoked", at=now - 6 * 86400)
    assert notices.take(spool_dir, "deploy", FP)["request_id"] == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to the hook user)")
def test_a_notice_not_owned_by_root_is_dropped_unshown(spool_dir):
    """jit-hooks owns the spool directory and could plant one; only root writes notices."""
    record(spool_dir, login="deploy", request_id=1, reason="revoked")
    path = os.path.join(spool_dir, "notice-deploy.json")
    hook = pwd.getpwnam("jit-hooks")
    os.chown(path, hook.pw_uid, hook.pw_gid)
    assert notices.take(spool_dir, "deploy", FP) is None
    assert not os.path.exists(path)


def test_a_planted_directory_is_removed_not_shown(spool_dir):
    path = os.path.join(spool_dir, "notice-deploy.json")
    os.mkdir(path)
    assert notices.take(spool_dir, "deploy", FP) is None
    assert not os.path.exists(path)


def test_a_notice_is_shown_only_to_the_ended_sessions_key(spool_dir):
    """On a shared login another person (another key) neither reads the notice nor uses it
    up; it waits for the key whose session was ended."""
    record(spool_dir, login="deploy", request_id=1, reason="revoked")
    assert notices.take(spool_dir, "deploy", OTHER) is None
    assert os.path.exists(os.path.join(spool_dir, "notice-deploy.json"))
    assert notices.take(spool_dir, "deploy", FP)["request_id"] == 1


def test_a_session_without_a_known_key_records_no_notice(spool_dir):
    assert not notices.record(spool_dir, login="deploy", request_id=1, reason="revoked",
                              fingerprint=None)  # fmt: skip
    assert not os.listdir(spool_dir)


def test_no_notice_for_another_login(spool_dir):
    record(spool_dir, login="deploy", request_id=1, reason="expired")
    assert notices.take(spool_dir, "root", FP) is None
    assert notices.take(spool_dir, "deploy", FP)["reason"] == "expired"


def test_a_later_notice_replaces_the_earlier(spool_dir):
    record(spool_dir, login="deploy", request_id=1, reason="expired")
    record(spool_dir, login="deploy", request_id=2, reason="revoked")
    assert notices.take(spool_dir, "deploy", FP)["request_id"] == 2


@pytest.mark.parametrize("reason", ["", "revoked by eve\x1b[2J", "dropped"])
def test_unknown_reasons_are_not_recorded(spool_dir, reason):
    assert not record(spool_dir, login="deploy", request_id=1, reason=reason)
    assert notices.take(spool_dir, "deploy", FP) is None


def test_bad_login_is_refused(spool_dir):
    with pytest.raises(ValueError):
        notices.take(spool_dir, "../etc/passwd", FP)
    assert not record(spool_dir, login="a b", request_id=1, reason="revoked")


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        _notice(reason="pwned"),
        _notice(login="other"),
        _notice(request_id="1"),
        _notice(x=1),
        b"{" + b" " * 600 + b"}",
    ],
)
def test_malformed_or_oversize_notice_is_dropped_unshown(spool_dir, content):
    path = os.path.join(spool_dir, "notice-deploy.json")
    with open(path, "wb") as f:
        f.write(content)
    os.chmod(path, 0o600)
    assert notices.take(spool_dir, "deploy", FP) is None
    assert not os.path.exists(path)


@pytest.mark.parametrize("mode", [0o644, 0o660, 0o602])
def test_notice_readable_or_writable_by_others_is_not_shown(spool_dir, mode):
    record(spool_dir, login="deploy", request_id=1, reason="revoked")
    os.chmod(os.path.join(spool_dir, "notice-deploy.json"), mode)
    assert notices.take(spool_dir, "deploy", FP) is None


def test_symlinked_notice_is_not_followed(spool_dir, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text(
        json.dumps({"login": "deploy", "request_id": 1, "reason": "revoked", "at": 1})
    )
    os.chmod(target, 0o600)
    os.symlink(target, os.path.join(spool_dir, "notice-deploy.json"))
    assert notices.take(spool_dir, "deploy", FP) is None
    assert target.exists()


def test_unsafe_spool_dir_is_refused(spool_dir):
    record(spool_dir, login="deploy", request_id=1, reason="revoked")
    os.chmod(spool_dir, 0o755)
    with pytest.raises(spool.SpoolError):
        notices.take(spool_dir, "deploy", FP)
    with pytest.raises(spool.SpoolError):
        record(spool_dir, login="deploy", request_id=1, reason="revoked")


def _age(spool_dir: str, name: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(os.path.join(spool_dir, name), (then, then))


def test_a_full_spool_drops_expired_then_oldest_notices(spool_dir, monkeypatch):
    monkeypatch.setattr(notices, "MAX_NOTICES", 3)
    for i, login in enumerate(("a1", "a2", "a3")):
        assert record(spool_dir, login=login, request_id=i, reason="revoked")
    _age(spool_dir, "notice-a1.json", 100)
    _age(spool_dir, "notice-a2.json", 8 * 86400)  # expired
    _age(spool_dir, "notice-a3.json", 50)
    assert record(spool_dir, login="a1", request_id=9, reason="expired")  # replaces
    assert record(spool_dir, login="a4", request_id=4, reason="revoked")  # a2 expired
    assert sorted(os.listdir(spool_dir)) == ["notice-a1.json", "notice-a3.json", "notice-a4.json"]
    _age(spool_dir, "notice-a1.json", 10)
    _age(spool_dir, "notice-a4.json", 5)
    assert record(spool_dir, login="a5", request_id=5, reason="revoked")  # a3 oldest
    assert sorted(os.listdir(spool_dir)) == ["notice-a1.json", "notice-a4.json", "notice-a5.json"]
    assert notices.take(spool_dir, "a5", FP)["request_id"] == 5


def test_a_killed_writers_temp_file_is_cleaned(spool_dir):
    stale, fresh = "notice-a1.json.4242.17.tmp", "notice-a2.json.4243.18.tmp"
    for name in (stale, fresh):
        open(os.path.join(spool_dir, name), "wb").close()
    _age(spool_dir, stale, 120)  # a write takes ms: this writer was killed
    assert record(spool_dir, login="deploy", request_id=1, reason="revoked")
    assert sorted(os.listdir(spool_dir)) == [fresh, "notice-deploy.json"]


def test_break_glass_spool_ignores_notices(spool_dir):
    record(spool_dir, login="deploy", request_id=1, reason="revoked")
    assert not spool.pending(spool_dir)


def test_ending_text_says_when_and_how_to_extend():
    text = notices.ending_text(
        login="deploy", host="web1", request_id=42, expires_at=3600 + 480, now=3600
    )
    assert text == (
        "jit: your access as deploy@web1 ends at 01:08 UTC (in about 8 min, request 42). "
        "To keep it: jit extend 42 --for 30m"
    )
    assert "\x1b" not in notices.ending_text(
        login="deploy", host="web1\x1b[2J", request_id=1, expires_at=60, now=0
    )
