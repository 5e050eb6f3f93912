"""Notifications end to end: a real service process delivering to real receivers on 127.0.0.1.

Receivers (jit_hooks/testing/receivers.py): a webhook that verifies the HMAC
signature, a Slack-shaped one, one answering 500 before 200, one that hangs,
and an aiosmtpd inbox. Waits are bounded polls on what arrived, never timings.
"""

from __future__ import annotations

import signal
import textwrap
import threading
import urllib.request
from pathlib import Path

import pytest

from jit_hooks.testing.receivers import SmtpInbox, WebhookReceiver
from jit_hooks.testing.service import Service, free_port, start_service
from tests.server.conftest import World, build_world

SECRET = "whsec-test-3f9a1c0d5e"
SMTP_PASSWORD = "smtp-pass-77b2e0"


def _config(*, webhook: str, slack: str | None = None, smtp_port: int | None = None,
            timeout: float = 5, events: str = "") -> str:  # fmt: skip
    text = f"""
    public_url = "https://jit.example.test"
    expiring_seconds = 60
    [retry]
    base_seconds = 0.2
    max_seconds = 1
    poll_seconds = 0.1
    [channels.hook]
    type = "webhook"
    url = "{webhook}"
    secret = "{SECRET}"
    timeout = {timeout}
    {events}
    """
    if slack:
        text += f"""
    [channels.chat]
    type = "slack"
    url = "{slack}"
    """
    if smtp_port:
        text += f"""
    [channels.mail]
    type = "smtp"
    host = "127.0.0.1"
    port = {smtp_port}
    from = "jit@example.test"
    to = ["ops@example.test"]
    user_domain = "example.test"
    secret = "{SMTP_PASSWORD}"
    """
    return textwrap.dedent(text)


def _notified_world(tmp_path: Path, config: str) -> World:
    ddir = tmp_path / "server"
    ddir.mkdir()
    (ddir / "notify.toml").write_text(config)
    return build_world(start_service(ddir), tmp_path)


@pytest.fixture
def receivers():
    made: list = []

    def make(**kw):  # noqa: ANN003, ANN202
        r = WebhookReceiver(**kw).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def _events(got, event: str):  # noqa: ANN001, ANN202
    return [d for d in got if d.json.get("event") == event]


def test_request_reaches_signed_webhook_slack_and_mail(tmp_path: Path, receivers) -> None:
    hook = receivers(secret=SECRET)
    chat = receivers()
    inbox = SmtpInbox().start()
    w = _notified_world(tmp_path, _config(webhook=hook.url, slack=chat.url, smtp_port=inbox.port))
    try:
        status, req = w.request()
        assert status == 201, req
        rid = req["id"]
        got = hook.wait_for(lambda g: len(_events(g, "request.created")) == 1)
        d = _events(got, "request.created")[0]
        assert d.verified  # the receiver's own HMAC check passed
        body = d.json
        assert body["request"]["id"] == rid and body["request"]["requester"] == "alice"
        # Eligible approvers under the policy (role approver), never the requester.
        assert body["recipients"] == ["bob", "carol", "mallory"]
        assert body["url"] == f"https://jit.example.test/ui/requests/{rid}"
        assert d.headers["x-jit-delivery"] == body["id"]

        slack = chat.wait_for(lambda g: len(g) >= 1)[0].json
        assert "alice asks for web1 as deploy" in slack["text"]
        buttons = [b for b in slack["blocks"] if b["type"] == "actions"]
        assert buttons[0]["elements"][0]["url"] == f"https://jit.example.test/ui/requests/{rid}"

        rcpts, mail = inbox.wait_for(1)[0]
        assert set(rcpts) == {"ops@example.test", "bob@example.test", "carol@example.test",
                              "mallory@example.test"}  # fmt: skip
        assert "alice asks for web1 as deploy" in mail["Subject"]
        assert f"/ui/requests/{rid}" in mail.get_content()

        status, out = w.call("bob", "POST", f"/api/v1/requests/{rid}/approve", {"comment": "ok"})
        assert status == 200 and out["state"] == "approved", out
        got = hook.wait_for(lambda g: len(_events(g, "request.approved")) == 1)
        approved = _events(got, "request.approved")[0].json
        assert approved["recipients"] == ["alice"] and approved["actor"] == "bob"

        status, out = w.call("bob", "POST", f"/api/v1/requests/{rid}/revoke", {"comment": "done"})
        assert status == 200, out
        got = hook.wait_for(lambda g: len(_events(g, "request.revoked")) == 1)
        ids = [d.json["id"] for d in got]
        assert len(ids) == len(set(ids))  # each notification once
        assert all(d.verified for d in got)
    finally:
        w.svc.stop()
        inbox.stop()


def test_receiver_500_then_200_is_retried_and_delivered_once(tmp_path: Path, receivers) -> None:
    hook = receivers(secret=SECRET, mode="fail_first", failures=2)
    w = _notified_world(tmp_path, _config(webhook=hook.url))
    try:
        status, req = w.request()
        assert status == 201, req
        got = hook.wait_for(lambda g: len(g) == 1)
        nid = got[0].json["id"]
        tries = [d for d in hook.deliveries if d.headers.get("x-jit-delivery") == nid]
        assert [d.status for d in tries] == [500, 500, 200]  # same id on every attempt
        assert w.svc.sql(
            "SELECT attempts, delivered_at IS NOT NULL, last_error FROM notify_outbox WHERE id = ?",
            (nid,),
        ) == [(3, 1, None)]
        with urllib.request.urlopen(w.svc.url + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'jit_notify_attempts_total{channel="hook",outcome="retry"} 2.0' in metrics
        assert 'jit_notify_attempts_total{channel="hook",outcome="delivered"} 1.0' in metrics
        assert (
            "jit_notify_outbox_depth " in metrics
            and "jit_notify_oldest_undelivered_seconds " in metrics
        )
    finally:
        w.svc.stop()


def test_hanging_receiver_blocks_neither_api_nor_hooks(tmp_path: Path, receivers) -> None:
    hook = receivers(secret=SECRET, mode="hang")
    w = _notified_world(tmp_path, _config(webhook=hook.url, timeout=3))
    try:
        status, req = w.request()
        assert status == 201, req
        # The worker now holds a connection the receiver never answers.
        hook_seen = threading.Event()

        def seen() -> bool:
            return bool(hook.deliveries)

        import time

        deadline = time.monotonic() + 30
        while not seen() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert seen(), "the worker never reached the receiver"
        hook_seen.set()
        # API and hook calls still complete (their answer is asserted, not their speed).
        status, out = w.call(
            "bob", "POST", f"/api/v1/requests/{req['id']}/approve", {"comment": ""}
        )
        assert status == 200 and out["state"] == "approved", out
        status, ans = w.akc("web1", "alice")
        assert status == 200 and ans["keys"], ans
        for login in ("deploy",):
            status, out = w.request(who="dave", login=login)
            assert status == 201, out
        # The hung attempts end by the channel's timeout and are retried, not lost.
        deadline = time.monotonic() + 60
        rows: list = []
        while time.monotonic() < deadline:
            rows = w.svc.sql("SELECT last_error FROM notify_outbox WHERE attempts > 0")
            if rows:
                break
            time.sleep(0.2)
        assert rows and rows[0][0] in ("timeout", "network error: TimeoutError"), rows
        assert w.svc.sql("SELECT count(*) FROM notify_outbox WHERE delivered_at IS NULL")[0][0] >= 3
    finally:
        hook.stop()
        w.svc.stop()


def test_kill9_with_undelivered_rows_loses_nothing(tmp_path: Path, receivers) -> None:
    hook = receivers(secret=SECRET, mode="fail_first", failures=10**9)  # down for now
    w = _notified_world(tmp_path, _config(webhook=hook.url))
    try:
        made = []
        for login, who in (("deploy", "alice"), ("deploy", "mallory")):
            status, req = w.request(who=who, login=login)
            assert status == 201, req
            made.append(req["id"])
        status, out = w.call("bob", "POST", f"/api/v1/requests/{made[0]}/approve", {"comment": ""})
        assert status == 200, out
        expected = {r[0] for r in w.svc.sql("SELECT id FROM notify_outbox")}
        assert len(expected) == 3  # two created, one approved
        hook.wait_for(lambda g: True)
        w.svc.stop(signal.SIGKILL)
        assert w.svc.sql("SELECT count(*) FROM notify_outbox WHERE delivered_at IS NULL") == [(3,)]
        hook.failures = 0  # the receiver is back
        w.svc.start()
        got = hook.wait_for(lambda g: len({d.json["id"] for d in g}) == 3, timeout=60)
        ids = [d.json["id"] for d in got]
        assert set(ids) == expected and len(ids) == len(set(ids))
        assert w.svc.sql("SELECT count(*) FROM notify_outbox WHERE delivered_at IS NULL") == [(0,)]
    finally:
        w.svc.stop()


def test_secrets_are_never_logged_nor_listed(tmp_path: Path, receivers) -> None:
    hook = receivers(secret="not-the-same-secret")  # every delivery is refused (401)
    w = _notified_world(tmp_path, _config(webhook=hook.url, smtp_port=1))
    try:
        status, req = w.request()
        assert status == 201, req
        hook.wait_for(lambda g: True)
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            errs = w.svc.sql("SELECT last_error FROM notify_outbox WHERE attempts > 0")
            if len(errs) >= 2:
                break
            time.sleep(0.1)
        assert sorted(e[0] for e in errs) == ["HTTP 401", "network error: ConnectionRefusedError"]
        listed = w.svc.admin("notify", "channels")
        assert "hook\twebhook" in listed
        log = w.svc.log_path.read_text()
        assert "attempt failed: HTTP 401" in log
        for text in (log, listed, str(errs)):
            assert SECRET not in text and SMTP_PASSWORD not in text
    finally:
        w.svc.stop()


def test_notify_test_command(tmp_path: Path, receivers) -> None:
    hook = receivers(secret=SECRET)
    ddir = tmp_path / "server"
    ddir.mkdir()
    (ddir / "notify.toml").write_text(_config(webhook=hook.url))
    svc = Service(data_dir=ddir, port=0, env=start_env())
    out = svc.admin("notify", "test", "hook")
    assert out.strip() == "sent a test message on hook (webhook)"
    d = hook.wait_for(lambda g: len(g) == 1)[0]
    assert d.verified and d.json["event"] == "test"
    # A receiver that refuses: one line on stderr, exit 1, the secret not in it.
    hook.secret = "other"
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(ddir),
         "notify", "test", "hook"],
        capture_output=True, text=True, env=start_env(), timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip() == "jit-server: error: channel hook (webhook): HTTP 401"
    r = subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(ddir),
         "notify", "test", "nope"],
        capture_output=True, text=True, env=start_env(), timeout=60,
    )  # fmt: skip
    assert r.returncode != 0 and "unknown channel 'nope' (channels: hook)" in r.stderr


def start_env() -> dict:
    import os

    return dict(os.environ)


def test_mail_over_starttls_with_login_and_a_checked_certificate(tmp_path: Path) -> None:
    from jit_hooks.testing.tls_certs import make_pki

    pki = make_pki(tmp_path / "pki")
    good = SmtpInbox(tls=pki["ok"], login=("jit", SMTP_PASSWORD)).start()  # type: ignore[arg-type]
    rogue = SmtpInbox(tls=pki["untrusted"], login=("jit", SMTP_PASSWORD)).start()  # type: ignore[arg-type]
    mail = """
    [channels.{name}]
    type = "smtp"
    host = "127.0.0.1"
    port = {port}
    starttls = true
    ca_file = "{ca}"
    username = "jit"
    secret = "{pw}"
    from = "jit@example.test"
    to = ["ops@example.test"]
    """
    config = "[retry]\nbase_seconds = 0.2\nmax_seconds = 1\npoll_seconds = 0.1\n" + "".join(
        textwrap.dedent(mail.format(name=n, port=i.port, ca=pki["ca"], pw=SMTP_PASSWORD))
        for n, i in (("mail", good), ("rogue", rogue))
    )
    w = _notified_world(tmp_path, config)
    try:
        status, req = w.request()
        assert status == 201, req
        rcpts, msg = good.wait_for(1)[0]
        assert rcpts == ["ops@example.test"] and good.logins == ["jit"]
        assert msg["Message-ID"] == f"<{msg['X-Jit-Delivery']}@jit-hooks>"
        # The rogue server's certificate is not signed by ca_file: nothing is sent there,
        # the password included, and the row waits for a retry.
        import time

        deadline = time.monotonic() + 30
        errs: list = []
        while time.monotonic() < deadline and not errs:
            errs = w.svc.sql("SELECT last_error FROM notify_outbox WHERE channel = 'rogue'"
                             " AND attempts > 0")  # fmt: skip
            time.sleep(0.1)
        assert errs == [("network error: SSLCertVerificationError",)]
        assert rogue.messages == [] and rogue.logins == []
        assert SMTP_PASSWORD not in w.svc.log_path.read_text()
    finally:
        w.svc.stop()
        good.stop()
        rogue.stop()


def test_break_glass_reaches_the_admins_once_per_report(tmp_path: Path, receivers) -> None:
    hook = receivers(secret=SECRET)
    w = _notified_world(tmp_path, _config(webhook=hook.url))
    try:
        report = {"login": "rescue", "rhost": "10.0.0.7", "stage": "account",
                  "report_id": "ab" * 16}  # fmt: skip
        for _ in range(2):  # a host's spool may deliver the same report again
            status, out = w.call("web1", "POST", "/api/v1/hook/break-glass", report)
            assert status == 200, out
        got = hook.wait_for(lambda g: len(g) >= 1)
        # Alice asks meanwhile: proof that the worker went past the duplicate.
        assert w.request()[0] == 201
        got = hook.wait_for(lambda g: any(d.json["event"] == "request.created" for d in g))
        glass = [d.json for d in got if d.json["event"] == "break_glass.used"]
        assert len(glass) == 1, glass
        assert glass[0]["recipients"] == ["root-admin"]
        assert glass[0]["details"] == {"host": "web1", "login": "rescue", "rhost": "10.0.0.7"}
        assert glass[0]["text"] == "break-glass login as rescue on web1"
    finally:
        w.svc.stop()


def test_a_refused_change_notifies_nobody(tmp_path: Path, receivers) -> None:
    hook = receivers(secret=SECRET)
    w = _notified_world(tmp_path, _config(webhook=hook.url))
    try:
        status, req = w.request()
        assert status == 201, req
        rows = w.svc.sql("SELECT id, event FROM notify_outbox")
        assert [e for _, e in rows] == ["request.created"]
        # Refused in the middle of their transactions: nothing of them stays behind.
        assert w.call("mallory", "POST", "/api/v1/requests", {"host": "web1", "login": "deploy",
                      "reason": "x" * 501, "duration_seconds": 60})[0] == 422  # fmt: skip
        assert w.request()[0] == 409  # alice's second pending request
        assert w.call("alice", "POST", f"/api/v1/requests/{req['id']}/approve", {})[0] == 403
        assert w.svc.sql("SELECT id, event FROM notify_outbox") == rows
    finally:
        w.svc.stop()


def test_two_replicas_deliver_each_notification_once(tmp_path: Path, receivers) -> None:
    """Both replicas run a worker; the leader lock and the leases let one send each row."""
    w = None
    hook = receivers(secret=SECRET)
    config = _config(webhook=hook.url)
    w = _notified_world(tmp_path, config)
    if w.svc.database_url is None:
        w.svc.stop()
        pytest.skip("PostgreSQL only: SQLite is one database file on one machine")
    other = Service(data_dir=tmp_path / "b", port=free_port(), env=w.svc.env,
                    database_url=w.svc.database_url)  # fmt: skip
    other.data_dir.mkdir()
    (other.data_dir / "notify.toml").write_text(config)
    other.start()
    try:
        made = []
        for who, svc in (("alice", w.svc), ("dave", other), ("mallory", w.svc)):
            body = {"host": "web1", "login": "deploy", "reason": "INC-7", "duration_seconds": 600}
            status, req = svc.call("POST", "/api/v1/requests", token=w.tokens[who], body=body)
            assert status == 201, req
            made.append(req["id"])
        for rid, svc in zip(made, (other, w.svc, other), strict=True):
            status, out = svc.call("POST", f"/api/v1/requests/{rid}/approve",
                                   token=w.tokens["bob"], body={})  # fmt: skip
            assert status == 200, out
        hook.wait_for(lambda g: len(g) >= 6, timeout=60)
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = w.svc.sql("SELECT attempts FROM notify_outbox WHERE delivered_at IS NOT NULL")
            if len(rows) == 6:
                break
            time.sleep(0.1)
        # Each row was claimed and sent once (a second claim would count a second attempt).
        assert rows == [(1,)] * 6, rows
        got = hook.accepted()
        ids = [d.json["id"] for d in got]
        assert len(ids) == 6 and len(set(ids)) == 6, ids
        assert sorted(d.json["event"] for d in got) == ["request.approved"] * 3 + [
            "request.created"] * 3  # fmt: skip
    finally:
        other.stop()
        w.svc.stop()


def test_a_receiver_that_always_fails_is_given_up_after_max_attempts(
    tmp_path: Path, receivers
) -> None:
    hook = receivers(secret=SECRET, mode="fail_first", failures=10**9)
    config = _config(webhook=hook.url).replace(
        "poll_seconds = 0.1", "poll_seconds = 0.1\nmax_attempts = 2"
    )
    w = _notified_world(tmp_path, config)
    try:
        assert w.request()[0] == 201
        import json as _json
        import time

        deadline = time.monotonic() + 30
        status: dict = {}
        while time.monotonic() < deadline:
            status = _json.loads(w.svc.admin("notify", "status", "--json"))
            if status["failed"]:
                break
            time.sleep(0.2)
        assert status["failed"] == 1 and status["undelivered"] == 0, status
        assert w.svc.sql("SELECT attempts, last_error FROM notify_outbox") == [(2, "HTTP 500")]
        assert [d.status for d in hook.deliveries] == [500, 500]
    finally:
        w.svc.stop()
