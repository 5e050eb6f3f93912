"""User token revocation: list, revoke (own / admin), logout, audit, CLI, over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.server.conftest import Admin, World

TOKENS = "/api/v1/tokens"


def fresh_token(w: World, user: str, label: str = "") -> str:
    from jit_hooks.server import store

    admin = Admin(w.svc)
    try:
        return admin(store.create_user_token, name=user, label=label)
    finally:
        admin.close()


def token_id(w: World, token: str) -> int:
    status, body = w.svc.call("GET", TOKENS, token=token)
    assert status == 200, body
    (current,) = [t for t in body["tokens"] if t["current"]]
    return current["id"]


def revoked_events(w: World) -> list[dict]:
    status, body = w.call("root-admin", "GET", "/api/v1/audit?limit=1000")
    assert status == 200, body
    return [e for e in body["events"] if e["kind"] == "token.revoked"]


def test_list_shows_own_live_tokens_never_secrets(shared_world):
    w = shared_world
    tok = fresh_token(w, "dave", "laptop")
    status, body = w.svc.call("GET", TOKENS, token=tok)
    assert status == 200, body
    mine = body["tokens"]
    assert {t["name"] for t in mine} >= {"laptop", "cli"}
    assert all(set(t) == {"id", "name", "created_at", "last_used_at", "current"} for t in mine)
    (current,) = [t for t in mine if t["current"]]
    assert current["name"] == "laptop"
    assert current["last_used_at"] is not None  # this very call used it
    text = json.dumps(body)
    assert tok not in text and tok.split("_", 1)[1] not in text
    from jit_hooks.server.auth import token_hash

    assert token_hash(tok) not in text
    # Another user's list does not show dave's tokens.
    _, other = w.call("alice", "GET", TOKENS)
    assert current["id"] not in {t["id"] for t in other["tokens"]}


def test_revoked_token_gets_401(shared_world):
    w = shared_world
    tok, keep = fresh_token(w, "alice"), fresh_token(w, "alice")
    tid = token_id(w, tok)
    assert w.svc.call("DELETE", f"{TOKENS}/{tid}", token=keep) == (204, None)
    status, body = w.svc.call("GET", "/api/v1/me", token=tok)
    assert status == 401 and body["error"] == "unauthorized"
    # Gone from the list; revoking again is a 404.
    _, listed = w.svc.call("GET", TOKENS, token=keep)
    assert tid not in {t["id"] for t in listed["tokens"]}
    assert w.svc.call("DELETE", f"{TOKENS}/{tid}", token=keep)[0] == 404
    assert w.svc.call("GET", "/api/v1/me", token=keep)[0] == 200


def test_other_users_token_is_404_and_stays_valid(shared_world):
    w = shared_world
    victim = fresh_token(w, "bob")
    vid = token_id(w, victim)
    status, body = w.call("alice", "DELETE", f"{TOKENS}/{vid}")
    assert status == 404, body
    assert body["error"] == "not_found" and "bob" not in json.dumps(body)
    # Same answer as an id that does not exist at all.
    assert w.call("alice", "DELETE", f"{TOKENS}/999999")[0] == 404
    # Host tokens are not revocable here either (host rotate-token is).
    host_tid = w.svc.sqlite("SELECT id FROM tokens WHERE kind = 'host' LIMIT 1")[0][0]
    assert w.call("root-admin", "DELETE", f"{TOKENS}/{host_tid}")[0] == 404
    assert w.svc.call("GET", "/api/v1/me", token=victim)[0] == 200


def test_admin_revokes_anyones_token(shared_world):
    w = shared_world
    victim = fresh_token(w, "carol")
    vid = token_id(w, victim)
    assert w.call("root-admin", "DELETE", f"{TOKENS}/{vid}") == (204, None)
    assert w.svc.call("GET", "/api/v1/me", token=victim)[0] == 401
    (ev,) = [e for e in revoked_events(w) if e["data"]["token_id"] == vid]
    assert ev["actor"] == "root-admin"
    assert ev["data"] == {"user": "carol", "token_id": vid, "name": "cli", "via": "api"}


def test_logout_revokes_the_calling_token_only(shared_world):
    w = shared_world
    tok, other = fresh_token(w, "mallory"), fresh_token(w, "mallory")
    tid = token_id(w, tok)
    assert w.svc.call("POST", "/api/v1/logout", token=tok) == (204, None)
    assert w.svc.call("GET", "/api/v1/me", token=tok)[0] == 401
    assert w.svc.call("POST", "/api/v1/logout", token=tok)[0] == 401
    assert w.svc.call("GET", "/api/v1/me", token=other)[0] == 200
    (ev,) = [e for e in revoked_events(w) if e["data"]["token_id"] == tid]
    assert ev["actor"] == "mallory" and ev["data"]["via"] == "logout"


@pytest.mark.parametrize("who", [None, "web1"])
def test_logout_needs_a_user_token(shared_world, who):
    status, body = shared_world.call(who, "POST", "/api/v1/logout")
    assert status == (401 if who is None else 403), body


def test_revocation_events_hold_no_token_material(shared_world):
    w = shared_world
    tok = fresh_token(w, "dave")
    assert w.svc.call("POST", "/api/v1/logout", token=tok)[0] == 204
    from jit_hooks.server.auth import token_hash

    rows = w.svc.sqlite("SELECT data FROM audit_events WHERE kind LIKE 'token.%'")
    assert rows
    for (data,) in rows:
        assert tok.split("_", 1)[1] not in data and token_hash(tok) not in data
        assert set(json.loads(data)) <= {"user", "via", "token_id", "name", "expires_at"}


def test_bad_token_id_is_422(shared_world):
    status, body = shared_world.call("alice", "DELETE", f"{TOKENS}/abc")
    assert status == 422 and body["field"] == "token_id"


def test_admin_cli_lists_and_revokes(shared_world):
    w = shared_world
    tok = w.svc.admin("token", "create", "dave", "--name", "ci-runner").strip()
    rows = json.loads(w.svc.admin("token", "list", "dave", "--json"))
    (row,) = [r for r in rows if r["name"] == "ci-runner"]
    assert row["user"] == "dave" and tok not in json.dumps(rows)
    assert "token_hash" not in row
    table = w.svc.admin("token", "list")
    assert "ci-runner" in table and tok not in table
    w.svc.admin("token", "revoke", str(row["id"]))
    assert w.svc.call("GET", "/api/v1/me", token=tok)[0] == 401
    assert all(r["id"] != row["id"] for r in json.loads(w.svc.admin("token", "list", "--json")))
    again = subprocess.run(
        [sys.executable, "-m", "jit_hooks.server.cli", "--data-dir", str(w.svc.data_dir)]
        + [*w.svc.db_args(), "token", "revoke", str(row["id"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "unknown token id" in again.stderr


def test_last_used_is_written_for_users_never_on_the_hook_path(shared_world):
    w = shared_world
    w.svc.sqlite("UPDATE tokens SET last_used_at = NULL WHERE kind = 'host'")
    assert w.call("web1", "GET", "/api/v1/hook/ping")[0] == 200
    assert w.akc("web1", "alice")[0] == 200
    assert w.svc.sqlite("SELECT last_used_at FROM tokens WHERE kind = 'host'") == [(None,)] * len(
        w.svc.sqlite("SELECT id FROM tokens WHERE kind = 'host'")
    )
    tok = fresh_token(w, "alice")
    tid = token_id(w, tok)
    (first,) = w.svc.sqlite("SELECT last_used_at FROM tokens WHERE id = ?", (tid,))[0]
    assert first is not None


def test_migration_keeps_existing_tokens_working(tmp_path):
    from sqlalchemy import text

    from jit_hooks.server import auth
    from jit_hooks.server.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'jit.db'}")
    try:
        upgrade(engine, "0002")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, name, roles, disabled, created_at)"
                    " VALUES (1, 'alice', 'requester', 0, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO tokens (token_hash, kind, user_id, created_at)"
                    " VALUES (:h, 'user', 1, 1)"
                ),
                {"h": auth.token_hash("jitu_old")},
            )
        upgrade(engine)
        with engine.begin() as conn:
            who = auth.authenticate(conn, "jitu_old")
            assert who.name == "alice" and who.token_id == 1
            from jit_hooks.server import store

            (row,) = store.list_user_tokens(conn, user_id=1)
            assert row["name"] == "" and row["last_used_at"] is None
    finally:
        engine.dispose()
