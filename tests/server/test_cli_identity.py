"""Token lifetimes, host token rotation with a grace period and day-2 user/host
administration, driven through `jit-server` against a real service process.

Expiry is reached without waiting: the test moves a token's expires_at into the
past in its own service's database (the clock is the real one).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from sqlalchemy import select, update

from tests.server.conftest import Admin, World

R = "/api/v1/requests"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def expire(w: World, token: str) -> None:
    """Make ``token`` one second past its end, in the service's own database."""
    from jit_hooks.server.auth import token_hash
    from jit_hooks.server.tables import tokens

    admin = Admin(w.svc)
    try:
        with admin.engine.begin() as conn:
            done = conn.execute(
                update(tokens)
                .where(tokens.c.token_hash == token_hash(token))
                .values(expires_at=int(time.time()) - 1)
            ).rowcount
        assert done == 1
    finally:
        admin.close()


def audit_kinds(w: World) -> list[dict]:
    status, body = w.call("root-admin", "GET", "/api/v1/audit?limit=1000")
    assert status == 200, body
    return body["events"]


def fails(w: World, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(w.svc.data_dir)]
        + w.svc.db_args()
        + list(args),
        capture_output=True,
        text=True,
        timeout=60,
        env=w.svc.env,
    )
    assert r.returncode != 0, r.stdout
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines and lines[-1].startswith("jit-server: error:"), r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


def jit(w: World, token: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIT_")}
    env |= {"JIT_URL": w.svc.url, "JIT_TOKEN": token, "JIT_CONFIG": os.devnull}
    return subprocess.run(
        [sys.executable, "-m", "jit_hooks.cli.jit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


# -- user token lifetimes ---------------------------------------------------


def test_expired_user_token_is_refused_with_token_expired(world):
    w = world
    tok = w.svc.admin("token", "create", "dave", "--name", "ci", "--expires", "1h").strip()
    assert w.svc.call("GET", "/api/v1/me", token=tok)[0] == 200
    listed = json.loads(w.svc.admin("token", "list", "dave", "--json"))
    (row,) = [t for t in listed if t["name"] == "ci"]
    assert row["state"] == "live" and ISO.match(row["expires_at"]) and ISO.match(row["created_at"])

    expire(w, tok)
    status, body = w.svc.call("GET", "/api/v1/me", token=tok)
    assert status == 401
    assert body["error"] == "token_expired"
    # dave's other (never-expiring fixture) token is untouched.
    assert w.call("dave", "GET", "/api/v1/me")[0] == 200
    (row,) = [t for t in json.loads(w.svc.admin("token", "list", "--json")) if t["name"] == "ci"]
    assert row["state"] == "expired"

    r = jit(w, tok, "tokens", "list")
    assert r.returncode == 1
    assert r.stderr.strip() == "jit: error: your session expired, run jit login"
    # Storing an expired token is refused with what to do instead.
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIT_")}
    env |= {"JIT_URL": w.svc.url, "JIT_CONFIG": os.devnull}
    r = subprocess.run(
        [sys.executable, "-m", "jit_hooks.cli.jit", "login", "--token-stdin"],
        input=tok + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 1
    assert "token on standard input has expired" in r.stderr


def test_token_create_expires_options(world):
    w = world
    never = w.svc.admin("token", "create", "dave", "--name", "robot", "--expires", "never")
    assert w.svc.call("GET", "/api/v1/me", token=never.strip())[0] == 200
    rows = json.loads(w.svc.admin("token", "list", "dave", "--json"))
    assert {t["name"]: t["expires_at"] for t in rows}["robot"] is None
    # Default: 90 days for an admin-made named token.
    w.svc.admin("token", "create", "dave", "--name", "bot2")
    rows = json.loads(w.svc.admin("token", "list", "dave", "--json"))
    t = {r["name"]: r for r in rows}["bot2"]
    created = time.mktime(time.strptime(t["created_at"], "%Y-%m-%dT%H:%M:%SZ"))
    expires = time.mktime(time.strptime(t["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert expires - created == 90 * 86400
    assert "duration" in fails(w, "token", "create", "dave", "--expires", "soon")
    assert "at least one second" in fails(w, "token", "create", "dave", "--expires", "0")
    # Refused commands wrote nothing.
    assert len(json.loads(w.svc.admin("token", "list", "dave", "--json"))) == len(rows)


def test_expired_host_token_denies_hooks(world):
    w = world
    old = w.host_tokens["web1"]
    new = w.svc.admin("host", "rotate-token", "web1", "--grace", "1h").strip()
    assert new.startswith("jith_") and new != old
    # Within the grace both work: the host can switch without a refused login.
    assert w.svc.call("GET", "/api/v1/hook/ping", token=old)[1]["host"] == "web1"
    assert w.svc.call("GET", "/api/v1/hook/ping", token=new)[1]["host"] == "web1"
    # After it the old one is refused, the new one still works.
    expire(w, old)
    status, body = w.svc.call("GET", "/api/v1/hook/ping", token=old)
    assert (status, body["error"]) == (401, "token_expired")
    assert w.svc.call("GET", "/api/v1/hook/ping", token=new)[0] == 200
    # --grace 0: refused at once.
    newer = w.svc.admin("host", "rotate-token", "web1", "--grace", "0").strip()
    assert w.svc.call("GET", "/api/v1/hook/ping", token=new)[0] == 401
    assert w.svc.call("GET", "/api/v1/hook/ping", token=newer)[0] == 200
    rotated = [e for e in audit_kinds(w) if e["kind"] == "host.token_rotated"]
    assert [e["data"]["grace_seconds"] for e in rotated] == [3600, 0]
    assert all(e["host"] == "web1" for e in rotated)


def test_rotation_never_extends_an_older_grace(world):
    from jit_hooks.server.auth import token_hash
    from jit_hooks.server.tables import tokens

    w = world
    first = w.host_tokens["web1"]
    w.svc.admin("host", "rotate-token", "web1", "--grace", "10m")
    before_second = int(time.time())
    w.svc.admin("host", "rotate-token", "web1", "--grace", "2h")
    admin = Admin(w.svc)
    try:
        with admin.engine.connect() as conn:
            exp = conn.execute(
                select(tokens.c.expires_at).where(tokens.c.token_hash == token_hash(first))
            ).scalar_one()
    finally:
        admin.close()
    assert exp <= before_second + 600  # the 10 minutes of the first rotation, not 2 h


def test_rotation_audit_records_each_old_tokens_real_end(world):
    """The second rotation keeps the first token's 10-minute end: its audit event says
    so (it said now + 2 h for every old token)."""
    from jit_hooks.server.auth import token_hash
    from jit_hooks.server.tables import tokens

    w = world
    first = w.host_tokens["web1"]
    second = w.svc.admin("host", "rotate-token", "web1", "--grace", "10m").strip()
    w.svc.admin("host", "rotate-token", "web1", "--grace", "2h")
    admin = Admin(w.svc)
    try:
        with admin.engine.connect() as conn:
            ends = [
                conn.execute(
                    select(tokens.c.expires_at).where(tokens.c.token_hash == token_hash(t))
                ).scalar_one()
                for t in (first, second)
            ]
    finally:
        admin.close()
    assert ends[1] - ends[0] > 3600  # the first kept its 10 minutes
    iso = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e)) for e in ends]
    rotated = [e for e in audit_kinds(w) if e["kind"] == "host.token_rotated"]
    assert rotated[-1]["data"]["old_tokens_valid_until"] == iso
    assert rotated[-1]["data"]["old_valid_until"] == iso[1]


def test_password_sign_in_token_gets_the_configured_ttl(tmp_path):
    """A PAM sign-in (real PAM, a throwaway unix user) gets JIT_USER_TOKEN_TTL."""
    import shutil

    import pytest

    from jit_hooks.testing.service import start_service

    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("creating a unix user needs root")
    import secrets

    name = "jitttl" + secrets.token_hex(3)
    password = "pw-" + secrets.token_urlsafe(12)
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    svc = start_service(tmp_path / "server", env={"JIT_USER_TOKEN_TTL": "600"})
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        svc.admin("user", "add", name, "--role", "requester")
        status, body = svc.call(
            "POST", "/api/v1/login", body={"username": name, "password": password}
        )
        assert status == 200, body
        rows = json.loads(svc.admin("token", "list", name, "--json"))
        (row,) = rows
        created = time.mktime(time.strptime(row["created_at"], "%Y-%m-%dT%H:%M:%SZ"))
        expires = time.mktime(time.strptime(row["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
        assert expires - created == 600
    finally:
        svc.stop()
        subprocess.run(["userdel", name], check=False)


# -- day-2 administration -----------------------------------------------------


def test_set_roles_changes_what_a_user_may_do(world):
    w = world
    _, req = w.request()
    # dave is a requester only: he may not approve (nor even see alice's request).
    assert w.call("dave", "POST", f"{R}/{req['id']}/approve")[0] in (403, 404)
    w.svc.admin("user", "set-roles", "dave", "requester,approver")
    assert w.call("dave", "POST", f"{R}/{req['id']}/approve")[1]["state"] == "approved"
    users = {u["name"]: u for u in json.loads(w.svc.admin("user", "list", "--json"))}
    assert users["dave"]["roles"] == ["approver", "requester"]
    (ev,) = [e for e in audit_kinds(w) if e["kind"] == "user.roles_set"]
    assert ev["data"] == {"user": "dave", "roles": ["approver", "requester"], "was": ["requester"]}

    assert "god" in fails(w, "user", "set-roles", "dave", "requester,god")
    assert "unknown user" in fails(w, "user", "set-roles", "nobody", "requester")
    # root-admin is the only admin: taking it away would lock the API out.
    assert "no enabled admin" in fails(w, "user", "set-roles", "root-admin", "requester")
    users = {u["name"]: u for u in json.loads(w.svc.admin("user", "list", "--json"))}
    assert users["dave"]["roles"] == ["approver", "requester"]
    assert users["root-admin"]["roles"] == ["admin"]


def test_disable_then_enable(world):
    w = world
    _, req = w.request()
    w.call("bob", "POST", f"{R}/{req['id']}/approve")
    assert len(w.akc("web1", "alice")[1]["keys"]) == 1
    w.svc.admin("user", "disable", "alice")
    assert w.call("alice", "GET", "/api/v1/me")[0] == 401
    assert w.akc("web1", "alice")[1]["keys"] == []  # refused at check time
    assert "already disabled" in fails(w, "user", "disable", "alice")
    assert "disabled" in fails(w, "token", "create", "alice")
    w.svc.admin("user", "enable", "alice")
    assert w.call("alice", "GET", "/api/v1/me")[0] == 200
    assert len(w.akc("web1", "alice")[1]["keys"]) == 1
    assert "not disabled" in fails(w, "user", "enable", "alice")
    kinds = [e["kind"] for e in audit_kinds(w)]
    assert kinds.count("user.disabled") == 1 and kinds.count("user.enabled") == 1


def test_remove_user_keeps_history(world):
    w = world
    _, req = w.request()
    w.call("bob", "POST", f"{R}/{req['id']}/approve")
    w.svc.admin("user", "remove", "alice")
    assert w.call("alice", "GET", "/api/v1/me")[0] == 401
    assert w.akc("web1", "alice")[1]["keys"] == []
    assert "alice" not in {u["name"] for u in json.loads(w.svc.admin("user", "list", "--json"))}
    everyone = json.loads(w.svc.admin("user", "list", "--all", "--json"))
    (gone,) = [u for u in everyone if u["name"] == "alice"]
    assert gone["disabled"] is True and ISO.match(gone["removed_at"])
    assert [
        t for t in json.loads(w.svc.admin("token", "list", "--json")) if t["user"] == "alice"
    ] == []
    # History still reads: the request and its requester's name are kept.
    status, body = w.call("root-admin", "GET", f"{R}/{req['id']}")
    assert status == 200 and body["requester"] == "alice", body
    (ev,) = [e for e in audit_kinds(w) if e["kind"] == "user.removed"]
    assert ev["data"]["user"] == "alice" and ev["data"]["keys_removed"] == 1
    # The name is not handed to someone else, and a removed user stays removed.
    assert "was removed" in fails(w, "user", "add", "alice", "--role", "requester")
    assert "was removed" in fails(w, "user", "enable", "alice")
    assert "was removed" in fails(w, "user", "remove", "alice")
    assert "no enabled admin" in fails(w, "user", "remove", "root-admin")


def test_host_set_labels(world):
    w = world
    w.svc.admin("host", "set-labels", "web2", "env=staging", "team=db")
    hosts = {h["name"]: h for h in json.loads(w.svc.admin("host", "list", "--json"))}
    assert hosts["web2"]["labels"] == {"env": "staging", "team": "db"}
    assert "KEY=VALUE" in fails(w, "host", "set-labels", "web2", "env=ok", "bad")
    assert "unknown host" in fails(w, "host", "set-labels", "web9", "env=x")
    hosts = {h["name"]: h for h in json.loads(w.svc.admin("host", "list", "--json"))}
    assert hosts["web2"]["labels"] == {"env": "staging", "team": "db"}  # nothing half-written
    (ev,) = [e for e in audit_kinds(w) if e["kind"] == "host.labels_set"]
    assert ev["host"] == "web2"
    assert ev["data"] == {"labels": {"env": "staging", "team": "db"}, "was": {"env": "prod"}}
