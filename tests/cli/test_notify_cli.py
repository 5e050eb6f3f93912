"""`jit status` review count, `jit request --wait`, `jit list --review --watch` (real service)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jit_hooks.testing.service import Service, start_service
from tests.cli.conftest import POLICY, USERS, Jit, World


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> World:
    """A service of this module's own: review counts must not see other tests' requests."""
    svc = start_service(tmp_path_factory.mktemp("notify-cli"))
    try:
        tokens = {}
        for name, roles in USERS.items():
            svc.admin("user", "add", name, *[a for r in roles for a in ("--role", r)])
            tokens[name] = svc.admin("token", "create", name).strip()
        svc.admin("host", "add", "web1", "--label", "env=prod")
        (svc.data_dir / "policy.toml").write_text(POLICY)
        svc.admin("policy", "add", str(svc.data_dir / "policy.toml"))
        yield World(service=svc, tokens=tokens)
    finally:
        svc.stop()


def _popen(j: Jit, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jit_hooks.cli.jit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=j.env,
    )


def _pending_of(svc: Service, token: str, timeout: float = 30) -> int:
    """The id of the one pending request the service shows in `token`'s review queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = svc.call("GET", "/api/v1/requests?scope=review", token=token)
        assert status == 200, body
        if body["requests"]:
            return body["requests"][0]["id"]
        time.sleep(0.1)
    raise AssertionError("the request never showed up")


def _request_args() -> list[str]:
    return ["request", "web1", "-l", "deploy", "-r", "INC-9", "-d", "10m"]


def test_status_counts_requests_awaiting_my_review(own: World, tmp_path: Path) -> None:
    alice, bob = own.logged_in(tmp_path, "alice"), own.logged_in(tmp_path, "bob")
    assert json.loads(bob.ok("status", "--json"))["review"] == 0
    assert "await your review" not in bob.ok("status")
    rid = json.loads(alice.ok(*_request_args(), "--json"))["id"]
    try:
        assert json.loads(bob.ok("status", "--json"))["review"] == 1
        assert "1 request awaits your review (`jit list --review`)" in bob.ok("status")
        # The requester never reviews their own request.
        assert json.loads(alice.ok("status", "--json"))["review"] == 0
    finally:
        alice.ok("cancel", str(rid))


@pytest.mark.parametrize(("decision", "code", "word"), [("approve", 0, "approved"),
                                                          ("deny", 1, "denied")])  # fmt: skip
def test_request_wait_returns_when_decided(
    own: World, tmp_path: Path, decision: str, code: int, word: str
) -> None:
    alice = own.logged_in(tmp_path, "alice")
    p = _popen(alice, *_request_args(), "--wait", "--interval", "0.2")
    try:
        rid = _pending_of(own.service, own.tokens["bob"])
        assert p.poll() is None  # still waiting while nobody decided
        status, out = own.service.call(
            "POST", f"/api/v1/requests/{rid}/{decision}", token=own.tokens["bob"],
            body={"comment": ""},
        )  # fmt: skip
        assert status == 200, out
        stdout, stderr = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == code, stderr
    assert f"Request {rid} is {word}." in stderr
    if word == "approved":
        own.service.call("POST", f"/api/v1/requests/{rid}/revoke", token=own.tokens["bob"],
                         body={"comment": ""})  # fmt: skip


def test_request_wait_ctrl_c_says_how_to_check_later(own: World, tmp_path: Path) -> None:
    alice = own.logged_in(tmp_path, "alice")
    p = _popen(alice, *_request_args(), "--wait", "--interval", "0.2")
    try:
        rid = _pending_of(own.service, own.tokens["bob"])
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130
    assert f"request {rid} stays as it is: check it with `jit show {rid}`" in stderr
    assert "Traceback" not in stderr
    assert alice.ok("show", str(rid), "--json").count('"pending"') == 1
    alice.ok("cancel", str(rid))


def test_request_wait_gives_up_after_timeout(own: World, tmp_path: Path) -> None:
    alice = own.logged_in(tmp_path, "alice")
    r = alice(*_request_args(), "--wait", "--timeout", "1", "--interval", "0.2")
    assert r.returncode == 1
    rid = _pending_of(own.service, own.tokens["bob"])
    assert f"Still pending after 1s: check later with `jit show {rid}`." in r.stderr
    alice.ok("cancel", str(rid))


def test_list_review_watch_refreshes_until_ctrl_c(own: World, tmp_path: Path) -> None:
    alice, bob = own.logged_in(tmp_path, "alice"), own.logged_in(tmp_path, "bob")
    p = _popen(bob, "list", "--review", "--watch", "--interval", "0.2")
    try:
        assert p.stdout is not None
        first = p.stdout.readline()
        assert first.startswith("-- ") and first.rstrip().endswith("(0 shown)"), first
        rid = json.loads(alice.ok(*_request_args(), "--json"))["id"]
        # A later refresh shows the new request without restarting the command.
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            seen.append(line)
            if line.split()[:1] == [str(rid)]:
                break
        assert any(line.split()[:1] == [str(rid)] for line in seen), seen
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0 and "Traceback" not in stderr
    alice.ok("cancel", str(rid))


def test_second_pending_request_is_one_readable_line(own: World, tmp_path: Path) -> None:
    alice = own.logged_in(tmp_path, "alice")
    rid = json.loads(alice.ok(*_request_args(), "--json"))["id"]
    r = alice(*_request_args())
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1
    assert f"request {rid} for host 'web1' as 'deploy' is already pending" in r.stderr
    alice.ok("cancel", str(rid))
