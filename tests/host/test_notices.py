"""Next-login notices (host/login/notices.py): what is stored, what is shown, and when not."""

from __future__ import annotations

import json
import os

import pytest

from jit_hooks.host.login import notices, spool


@pytest.fixture
def spool_dir(tmp_path):
    d = tmp_path / "spool"
    d.mkdir(mode=0o700)
    return str(d)


def _notice(**changes: object) -> bytes:
    notice = {"login": "deploy", "request_id": 1, "reason": "revoked", "at": 1}
    return json.dumps({**notice, **changes}).encode()


def test_recorded_notice_is_shown_once(spool_dir):
    assert notices.record(spool_dir, login="deploy", request_id=42, reason="revoked", at=3600)
    path = os.path.join(spool_dir, "notice-deploy.json")
    if os.geteuid() == 0:  # root's notice is root:jit-hooks 0640 (jit-hooksd reads it)
        assert os.stat(path).st_mode & 0o777 in (0o640, 0o600)
    else:
        assert os.stat(path).st_mode & 0o777 == 0o600
    notice = notices.take(spool_dir, "deploy")
    assert notice == {"login": "deploy", "request_id": 42, "reason": "revoked", "at": 3600}
    assert notices.text(notice, "web1") == (
        "jit: your previous session on web1 as deploy was ended at 01:00 UTC: approval 42 revoked"
    )
    assert notices.take(spool_dir, "deploy") is None
    assert not os.path.exists(path)


def test_no_notice_for_another_login(spool_dir):
    notices.record(spool_dir, login="deploy", request_id=1, reason="expired")
    assert notices.take(spool_dir, "root") is None
    assert notices.take(spool_dir, "deploy")["reason"] == "expired"


def test_a_later_notice_replaces_the_earlier(spool_dir):
    notices.record(spool_dir, login="deploy", request_id=1, reason="expired")
    notices.record(spool_dir, login="deploy", request_id=2, reason="revoked")
    assert notices.take(spool_dir, "deploy")["request_id"] == 2


@pytest.mark.parametrize("reason", ["", "revoked by eve\x1b[2J", "dropped"])
def test_unknown_reasons_are_not_recorded(spool_dir, reason):
    assert not notices.record(spool_dir, login="deploy", request_id=1, reason=reason)
    assert notices.take(spool_dir, "deploy") is None


def test_bad_login_is_refused(spool_dir):
    with pytest.raises(ValueError):
        notices.take(spool_dir, "../etc/passwd")
    assert not notices.record(spool_dir, login="a b", request_id=1, reason="revoked")


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
    assert notices.take(spool_dir, "deploy") is None
    assert not os.path.exists(path)


@pytest.mark.parametrize("mode", [0o644, 0o660, 0o602])
def test_notice_readable_or_writable_by_others_is_not_shown(spool_dir, mode):
    notices.record(spool_dir, login="deploy", request_id=1, reason="revoked")
    os.chmod(os.path.join(spool_dir, "notice-deploy.json"), mode)
    assert notices.take(spool_dir, "deploy") is None


def test_symlinked_notice_is_not_followed(spool_dir, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text(
        json.dumps({"login": "deploy", "request_id": 1, "reason": "revoked", "at": 1})
    )
    os.chmod(target, 0o600)
    os.symlink(target, os.path.join(spool_dir, "notice-deploy.json"))
    assert notices.take(spool_dir, "deploy") is None
    assert target.exists()


def test_unsafe_spool_dir_is_refused(spool_dir):
    notices.record(spool_dir, login="deploy", request_id=1, reason="revoked")
    os.chmod(spool_dir, 0o755)
    with pytest.raises(spool.SpoolError):
        notices.take(spool_dir, "deploy")
    with pytest.raises(spool.SpoolError):
        notices.record(spool_dir, login="deploy", request_id=1, reason="revoked")


def test_bounded_number_of_notices(spool_dir, monkeypatch):
    monkeypatch.setattr(notices, "MAX_NOTICES", 3)
    for i, login in enumerate(("a1", "a2", "a3")):
        assert notices.record(spool_dir, login=login, request_id=i, reason="revoked")
    assert not notices.record(spool_dir, login="a4", request_id=4, reason="revoked")
    assert notices.record(spool_dir, login="a1", request_id=9, reason="expired")  # replaces
    assert sorted(n for n in os.listdir(spool_dir)) == [
        "notice-a1.json", "notice-a2.json", "notice-a3.json",
    ]  # fmt: skip


def test_break_glass_spool_ignores_notices(spool_dir):
    notices.record(spool_dir, login="deploy", request_id=1, reason="revoked")
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
