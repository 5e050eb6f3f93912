"""The real `jit` against the real service process over HTTP (SQLite, admin CLI set-up)."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess

import pytest

from jit_hooks.testing.service import free_port
from tests.cli.conftest import REPO, Jit, World


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("jit: error: "), stderr
    return lines[0]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def ssh_key(tmp_path, name: str) -> tuple[str, str]:
    """A fresh ed25519 key pair made by ssh-keygen; returns (pub path, fingerprint)."""
    path = tmp_path / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(path)],
        check=True,
    )
    fp = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    return f"{path}.pub", fp


def new_request(j, *extra: str) -> dict:
    # One pending request per person, host and login: withdraw what an earlier
    # test left pending on the shared service before asking again.
    for old in json.loads(j.ok("list", "--state", "pending", "--json")):
        if (old["host"], old["login"]) == ("web1", "deploy"):
            j.ok("cancel", str(old["id"]))
    out = j.ok(
        "request", "web1", "--login", "deploy", "--reason", "INC-1 disk full",
        "--duration", "1h", "--json", *extra,
    )  # fmt: skip
    return json.loads(out)


# -- login / config ------------------------------------------------------------


def test_login_token_stdin_writes_private_config(world: World, tmp_path):
    j = world.jit(tmp_path / "home")
    token = world.tokens["alice"]
    r = j("login", "--url", world.service.url, "--token-stdin", input=token + "\n")
    assert r.returncode == 0, r.stderr
    assert token not in r.stdout + r.stderr
    assert "alice" in r.stderr
    assert mode(j.config) == 0o600
    assert mode(j.config.parent) == 0o700
    text = j.config.read_text()
    assert f'url = "{world.service.url}"' in text and f'token = "{token}"' in text

    # The saved settings are used from now on: no --url/--token needed.
    status = json.loads(j.ok("status", "--json"))
    assert status["user"]["name"] == "alice"
    assert status["service"] == "ok"
    assert token not in json.dumps(status)
    table = j.ok("status")
    assert "alice" in table and world.service.url in table


def test_login_with_a_bad_token_saves_nothing(world: World, tmp_path):
    j = world.jit(tmp_path / "home")
    r = j("login", "--url", world.service.url, "--token-stdin", input="jitu_not-a-real-token\n")
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert "401" in line and "jit login" in line
    assert "jitu_not-a-real-token" not in line
    assert not j.config.exists()


def test_wrong_password_is_refused(world: World, tmp_path):
    j = world.jit(tmp_path / "home")
    r = j(
        "login", "--url", world.service.url, "--user", "alice", "--password-stdin",
        input="certainly-not-the-password\n",
    )  # fmt: skip
    assert r.returncode == 1
    assert "401" in one_error_line(r.stderr)
    assert "certainly-not-the-password" not in r.stderr + r.stdout
    assert not j.config.exists()


@pytest.fixture
def unix_user():
    """A real local account with a password, for the service's PAM check (removed after)."""
    if os.geteuid() != 0:
        pytest.skip("creating a local account with a password needs root")
    name = f"jt{secrets.token_hex(4)}cli"
    password = secrets.token_urlsafe(16)
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", "/nonexistent", "-s", "/usr/sbin/nologin",
         name],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_password_login_through_pam(world: World, tmp_path, unix_user):
    name, password = unix_user
    world.service.admin("user", "add", name, "--role", "requester")
    j = world.jit(tmp_path / "home")
    r = j(
        "login", "--url", world.service.url, "--user", name, "--password-stdin",
        input=password + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # the new token is printed only with --print-token
    assert password not in r.stderr
    assert mode(j.config) == 0o600
    assert json.loads(j.ok("status", "--json"))["user"]["name"] == name

    # --print-token: the new token alone on stdout, and it is the one saved.
    r = j(
        "login", "--url", world.service.url, "--user", name, "--password-stdin", "--print-token",
        input=password + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("jitu_") and r.stdout == token + "\n"
    assert f'token = "{token}"' in j.config.read_text()

    # Right account, wrong password: refused, the saved token untouched.
    r = j("login", "--user", name, "--password-stdin", input="wrong\n")
    assert r.returncode == 1
    assert "401" in one_error_line(r.stderr)
    assert f'token = "{token}"' in j.config.read_text()


def fresh_login(world: World, tmp_path, user: str) -> tuple[Jit, str]:
    """A `jit` logged in with a new token of its own (logout revokes it)."""
    token = world.service.admin("token", "create", user).strip()
    j = world.jit(tmp_path / f"home-{user}-fresh")
    j.ok("login", "--url", world.service.url, "--token-stdin", input=token + "\n")
    return j, token


def test_logout_revokes_and_forgets_the_token(world: World, tmp_path):
    j, token = fresh_login(world, tmp_path, "alice")
    assert world.service.call("GET", "/api/v1/me", token=token)[0] == 200
    r = j("logout")
    assert r.returncode == 0, r.stderr
    assert "Revoked the token on the service" in r.stderr and token not in r.stderr + r.stdout
    text = j.config.read_text()
    assert "token" not in text and world.service.url in text
    # The old token is dead on the service itself, not just forgotten here.
    status, body = world.service.call("GET", "/api/v1/me", token=token)
    assert status == 401 and body["error"] == "unauthorized"
    r = j("list")
    assert r.returncode == 1 and "jit login" in one_error_line(r.stderr)
    # Nothing left to log out of.
    assert j("logout").returncode == 0


def test_logout_with_the_service_down_still_forgets_but_warns(world: World, tmp_path):
    j, token = fresh_login(world, tmp_path, "alice")
    dead = f"http://127.0.0.1:{free_port()}"  # nobody listens: connection refused, for real
    r = j("logout", "--url", dead)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jit: warning: "), r.stderr
    assert "NOT revoked" in lines[0] and dead in lines[0] and token not in r.stderr
    assert "token" not in j.config.read_text()
    # The service never heard of it: the token still works there.
    assert world.service.call("GET", "/api/v1/me", token=token)[0] == 200
    assert world.service.call("POST", "/api/v1/logout", token=token)[0] == 204


def test_tokens_list_and_revoke(world: World, tmp_path):
    j, token = fresh_login(world, tmp_path, "dave")
    other = world.service.admin("token", "create", "dave", "--name", "laptop").strip()
    listed = json.loads(j.ok("tokens", "list", "--json"))
    assert token not in json.dumps(listed) and other not in json.dumps(listed)
    (current,) = [t for t in listed if t["current"]]
    (laptop,) = [t for t in listed if t["name"] == "laptop"]
    assert laptop["last_used_at"] is None and current["last_used_at"] is not None
    table = j.ok("tokens", "list")
    assert "LAST USED" in table and "laptop" in table and "never" in table
    r = j("tokens", "revoke", str(laptop["id"]))
    assert r.returncode == 0 and f"Revoked token {laptop['id']}" in r.stderr
    assert world.service.call("GET", "/api/v1/me", token=other)[0] == 401
    assert laptop["id"] not in {t["id"] for t in json.loads(j.ok("tokens", "list", "--json"))}
    # Another user's token id: the same 404 as an unknown one.
    bobs = world.service.admin("token", "create", "bob").strip()
    bob_id = next(
        t["id"]
        for t in world.service.call("GET", "/api/v1/tokens", token=bobs)[1]["tokens"]
        if t["current"]
    )
    r = j("tokens", "revoke", str(bob_id))
    assert r.returncode == 1 and "(HTTP 404)" in one_error_line(r.stderr)
    assert world.service.call("GET", "/api/v1/me", token=bobs)[0] == 200
    assert world.service.call("POST", "/api/v1/logout", token=bobs)[0] == 204


def test_env_and_flags_override_the_config_file(world: World, tmp_path):
    j = world.logged_in(tmp_path, "alice")
    who = json.loads(j.ok("status", "--json"))["user"]["name"]
    assert who == "alice"
    j.env["JIT_TOKEN"] = world.tokens["bob"]
    assert json.loads(j.ok("status", "--json"))["user"]["name"] == "bob"
    flagged = j.ok("status", "--json", "--token", world.tokens["carol"])
    assert json.loads(flagged)["user"]["name"] == "carol"

    # --config / JIT_CONFIG point at another file (pip-tools style default_map).
    other = tmp_path / "other.toml"
    other.write_text(f'url = "{world.service.url}"\ntoken = "{world.tokens["dave"]}"\n')
    other.chmod(0o600)
    del j.env["JIT_TOKEN"]
    assert json.loads(j.ok("status", "--json", "--config", str(other)))["user"]["name"] == "dave"
    j.env["JIT_CONFIG"] = str(other)
    assert json.loads(j.ok("status", "--json"))["user"]["name"] == "dave"

    # A token file others can read still works, with a warning on stderr.
    other.chmod(0o644)
    r = j("status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["user"]["name"] == "dave"
    assert "readable by others" in r.stderr and world.tokens["dave"] not in r.stderr


def test_verbose_shows_calls_but_never_the_token(world: World, tmp_path):
    j = world.logged_in(tmp_path, "alice")
    r = j("keys", "list", "-vv", "--json")
    assert r.returncode == 0, r.stderr
    assert "GET /api/v1/keys" in r.stderr
    assert world.tokens["alice"] not in r.stderr + r.stdout
    json.loads(r.stdout)  # diagnostics stay on stderr
    quiet = j("keys", "remove", "999999", "-q")
    assert quiet.returncode == 1 and "404" in one_error_line(quiet.stderr)


def test_unknown_token_is_one_line_401(world: World, tmp_path):
    j = world.jit(tmp_path / "home")
    r = j("list", "--url", world.service.url, "--token", "jitu_nope")
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert "401" in line and "jitu_nope" not in line


# -- keys ----------------------------------------------------------------------


def test_keys_add_list_remove(world: World, tmp_path):
    j = world.logged_in(tmp_path, "alice")
    pub1, fp1 = ssh_key(tmp_path, "k1")
    pub2, fp2 = ssh_key(tmp_path, "k2")

    out = j.ok("keys", "add", pub1)
    assert fp1 in out and out.startswith("Added key ")
    added = json.loads(j.ok("keys", "add", "-", "--json", input=open(pub2).read()))
    assert added["fingerprint"] == fp2 and added["key_type"] == "ssh-ed25519"

    # Several keys in one file (comments and blank lines skipped): one line each.
    pub3, fp3 = ssh_key(tmp_path, "k3")
    pub4, fp4 = ssh_key(tmp_path, "k4")
    both = tmp_path / "both.pub"
    both.write_text(f"# laptop and token\n{open(pub3).read()}\n{open(pub4).read()}")
    out = j.ok("keys", "add", str(both))
    assert len(out.splitlines()) == 2 and fp3 in out and fp4 in out

    listed = json.loads(j.ok("keys", "list", "--json"))
    assert {k["fingerprint"] for k in listed} >= {fp1, fp2}
    table = j.ok("keys", "list")
    assert table.splitlines()[0].split()[:3] == ["ID", "TYPE", "FINGERPRINT"]
    assert fp1 in table and fp2 in table

    # The same key again (for anyone) is a conflict, reported on one line.
    r = world.logged_in(tmp_path, "bob")("keys", "add", pub1)
    assert r.returncode == 1
    assert "409" in one_error_line(r.stderr)

    # A private key file is refused before anything is sent.
    r = j("keys", "add", pub1.removesuffix(".pub"))
    assert r.returncode == 1
    assert "PRIVATE" in one_error_line(r.stderr)

    j.ok("keys", "remove", str(added["id"]))
    after = json.loads(j.ok("keys", "list", "--json"))
    assert fp2 not in {k["fingerprint"] for k in after}
    assert fp1 in {k["fingerprint"] for k in after}
    r = j("keys", "remove", str(added["id"]))
    assert r.returncode == 1
    assert "404" in one_error_line(r.stderr)


def test_bad_public_key_is_one_line(world: World, tmp_path):
    j = world.logged_in(tmp_path, "alice")
    r = j("keys", "add", "-", input="ssh-ed25519 AAAAnotbase64!! x\n")
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert "422" in line or "400" in line


# -- requests ------------------------------------------------------------------


def test_request_approved_by_another_user(world: World, tmp_path):
    alice = world.logged_in(tmp_path, "alice")
    bob = world.logged_in(tmp_path, "bob")
    req = new_request(alice)
    assert req["state"] == "pending"
    assert req["host"] == "web1" and req["login"] == "deploy"
    assert req["duration_seconds"] == 3600 and req["requester"] == "alice"

    # bob sees it waiting for his review; alice (no approver role) does not.
    review = json.loads(bob.ok("list", "--review", "--json"))
    assert req["id"] in [r["id"] for r in review]
    assert req["id"] not in [r["id"] for r in json.loads(alice.ok("list", "--review", "--json"))]
    table = bob.ok("list", "--review")
    assert table.splitlines()[0].split()[:3] == ["ID", "STATE", "REQUESTER"]
    assert any(ln.split()[:2] == [str(req["id"]), "pending"] for ln in table.splitlines())

    out = bob.ok("approve", str(req["id"]), "--comment", "ok for INC-1")
    assert f"Request {req['id']}" in out and "approved" in out

    shown = json.loads(alice.ok("show", str(req["id"]), "--json"))
    assert shown["state"] == "approved"
    assert [(r["reviewer"], r["decision"]) for r in shown["reviews"]] == [("bob", "approve")]
    assert shown["ends_at"] - shown["starts_at"] == 3600
    text = alice.ok("show", str(req["id"]))
    assert "approved" in text and "bob" in text and "ok for INC-1" in text

    # It no longer waits for review, and alice's status lists it as active.
    review = json.loads(bob.ok("list", "--review", "--state", "pending", "--json"))
    assert req["id"] not in [r["id"] for r in review]
    status = json.loads(alice.ok("status", "--json"))
    assert req["id"] in [r["id"] for r in status["active"]]
    assert any(
        ln.split()[:3] == [str(req["id"]), "web1", "deploy"]
        for ln in alice.ok("status").splitlines()
    )

    # Approving again: no longer pending -> 409, one line.
    r = world.logged_in(tmp_path, "dave")("approve", str(req["id"]))
    assert r.returncode == 1
    assert "409" in one_error_line(r.stderr)


def test_self_approval_is_refused(world: World, tmp_path):
    dave = world.logged_in(tmp_path, "dave")  # requester AND approver
    req = new_request(dave)
    r = dave("approve", str(req["id"]))
    assert r.returncode == 1
    assert "403" in one_error_line(r.stderr)
    assert r.stdout == ""
    assert json.loads(dave.ok("show", str(req["id"]), "--json"))["state"] == "pending"


def test_deny(world: World, tmp_path):
    alice = world.logged_in(tmp_path, "alice")
    bob = world.logged_in(tmp_path, "bob")
    req = new_request(alice)
    denied = json.loads(bob.ok("deny", str(req["id"]), "--comment", "use staging", "--json"))
    assert denied["state"] == "denied"
    assert json.loads(alice.ok("show", str(req["id"]), "--json"))["state"] == "denied"


def test_revoke(world: World, tmp_path):
    alice = world.logged_in(tmp_path, "alice")
    bob = world.logged_in(tmp_path, "bob")
    req = new_request(alice)
    bob.ok("approve", str(req["id"]))
    out = bob.ok("revoke", str(req["id"]), "--comment", "done")
    assert "revoked" in out
    shown = json.loads(alice.ok("show", str(req["id"]), "--json"))
    assert shown["state"] == "revoked"
    active = json.loads(alice.ok("status", "--json"))["active"]
    assert req["id"] not in [r["id"] for r in active]


def test_cancel(world: World, tmp_path):
    alice = world.logged_in(tmp_path, "alice")
    req = new_request(alice)
    out = alice.ok("cancel", str(req["id"]))
    assert "cancelled" in out
    mine = json.loads(alice.ok("list", "--state", "cancelled", "--json"))
    assert req["id"] in [r["id"] for r in mine]
    assert all(r["state"] == "cancelled" for r in mine)
    r = alice("cancel", str(req["id"]))
    assert r.returncode == 1
    assert "409" in one_error_line(r.stderr)


def test_selector_request_with_later_start(world: World, tmp_path):
    alice = world.logged_in(tmp_path, "alice")
    out = alice.ok(
        "request", "--selector", "env=prod", "-s", "team=db", "--login", "postgres",
        "--duration", "1h30m", "--start", "+30m", "--json",
    )  # fmt: skip
    req = json.loads(out)
    assert req["selector"] == {"env": "prod", "team": "db"} and req["host"] is None
    assert req["duration_seconds"] == 5400
    assert req["start"] > req["created_at"]
    text = alice.ok("show", str(req["id"]))
    assert "env=prod,team=db" in text and "1h30m" in text


def test_request_refused_by_policy_is_one_line(world: World, tmp_path):
    alice = world.logged_in(tmp_path, "alice")
    r = alice("request", "web1", "--login", "root", "--reason", "x", "--duration", "1h")
    assert r.returncode == 1
    one_error_line(r.stderr)
    r = alice("request", "web1", "--login", "deploy", "--reason", "x", "--duration", "5h")
    assert r.returncode == 1
    one_error_line(r.stderr)


def test_unknown_id_is_one_line_404(world: World, tmp_path):
    alice = world.logged_in(tmp_path, "alice")
    for args in (["show", "999999"], ["approve", "999999"], ["cancel", "999999"]):
        r = alice(*args)
        assert r.returncode == 1, args
        assert "404" in one_error_line(r.stderr)
        assert r.stdout == ""


def test_list_json_and_table(world: World, tmp_path):
    alice = world.logged_in(tmp_path, "alice")
    req = new_request(alice)
    mine = json.loads(alice.ok("list", "--json"))
    assert isinstance(mine, list) and req["id"] in [r["id"] for r in mine]
    assert all(r["requester"] == "alice" for r in mine)
    pending = json.loads(alice.ok("list", "--mine", "--state", "pending", "--json"))
    assert all(r["state"] == "pending" for r in pending)
    lines = alice.ok("list").splitlines()
    assert lines[0].split() == [
        "ID", "STATE", "REQUESTER", "TARGET", "LOGIN", "APPROVALS", "WHEN", "REASON",
    ]  # fmt: skip
    row = next(ln for ln in lines if ln.split()[0] == str(req["id"]))
    assert row.split()[1:6] == ["pending", "alice", "web1", "deploy", "0/1"]


def test_list_all_and_audit_are_for_admins(world: World, tmp_path):
    alice = world.logged_in(tmp_path, "alice")
    carol = world.logged_in(tmp_path, "carol")
    new_request(alice)
    everything = json.loads(carol.ok("list", "--all", "--json"))
    assert len(everything) >= 1
    r = alice("list", "--all")
    assert r.returncode == 1 and "403" in one_error_line(r.stderr)

    events = json.loads(carol.ok("audit", "--limit", "5", "--json"))
    assert 1 <= len(events) <= 5
    assert {"id", "at", "kind", "actor", "hash", "prev_hash"} <= set(events[0])
    table = carol.ok("audit", "--limit", "3")
    assert table.splitlines()[0].split() == ["ID", "AT", "KIND", "ACTOR", "HOST", "DATA"]
    r = alice("audit")
    assert r.returncode == 1 and "403" in one_error_line(r.stderr)


@pytest.mark.parametrize("cmd", [["keys", "list"], ["list"], ["show", "1"], ["status"]])
def test_json_output_parses(world: World, tmp_path, cmd):
    alice = world.logged_in(tmp_path, "alice")
    if cmd[0] == "show":
        cmd = ["show", str(new_request(alice)["id"])]
    json.loads(alice.ok(*cmd, "--json"))


def test_runs_on_debian_python3_with_debian_click_and_requests(world: World, tmp_path):
    """Hosts and laptops run `jit` on Debian 12's python3-click 8.1 / python3-requests 2.28."""
    system = "/usr/bin/python3"
    probe = subprocess.run(
        [system, "-c", "import click, requests; print(click.__version__, requests.__version__)"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip("no system python3 with python3-click and python3-requests")
    j = world.jit(tmp_path / "home", PYTHONPATH=str(REPO))
    j.python = system
    j.ok("login", "--url", world.service.url, "--token-stdin", input=world.tokens["dave"] + "\n")
    req = new_request(j)
    assert req["requester"] == "dave"
    assert req["id"] in [r["id"] for r in json.loads(j.ok("list", "--mine", "--json"))]
    r = j("approve", str(req["id"]))
    assert r.returncode == 1 and "403" in one_error_line(r.stderr)
    r = j("request", "web1", "--login", "deploy", "--duration", "1x")
    assert r.returncode == 2 and "not a duration" in one_error_line(r.stderr)
