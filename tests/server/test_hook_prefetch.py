"""The hooks' one-round-trip path on PostgreSQL (decisions.Prefetch) answers as the plain path.

On PostgreSQL the authorized-keys and account hooks send their decision
lookups before the token is checked, naming the host through the token's
hash; on SQLite they take the plain path. The same calls run on both
backends through a real service and must give the same answers: a host's
token only ever finds its own host's approvals, a user token or a dead token
is refused, and a key-less login names the approvals that held it open. The
PostgreSQL-only test runs a real group-commit batch in-process and checks
the prefetched rows are the plain lookups' rows and were really queued.
"""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import text

from jit_hooks.server import auth, decisions
from jit_hooks.server.db import make_engine
from jit_hooks.server.unit import UnitOfWork

R = "/api/v1/requests"
AKC = "/api/v1/hook/authorized-keys"
ACCOUNT = "/api/v1/hook/account"


def _approved(w) -> int:  # noqa: ANN001
    code, req = w.request("alice")
    assert code == 201, req
    code, req = w.call("bob", "POST", f"{R}/{req['id']}/approve", {})
    assert (code, req["state"]) == (200, "approved"), req
    return req["id"]


def _akc(w, who: str):  # noqa: ANN001, ANN202
    k = w.keys["alice"]
    body = {"login": "deploy", "fingerprint": k.fingerprint, "key_type": k.key_type, "key": k.blob}
    token = w.host_tokens.get(who) or w.tokens.get(who) or who
    return w.svc.call("POST", AKC, token=token, body=body)


def _account(w, host: str, fingerprint: str | None):  # noqa: ANN001, ANN202
    body = {"login": "deploy", "connection": "7:7", "fingerprint": fingerprint}
    return w.svc.call("POST", ACCOUNT, token=w.host_tokens[host], body=body)


def test_each_host_token_finds_only_its_own_hosts_approvals(world):
    rid = _approved(world)
    fp = world.keys["alice"].fingerprint
    code, ans = _akc(world, "web1")
    assert code == 200 and [k["request_id"] for k in ans["keys"]] == [rid]
    code, ans = _akc(world, "web2")  # approved for web1 only
    assert code == 200 and ans["keys"] == [] and ans["host"] == "web2"
    assert _account(world, "web1", fp)[1]["decision"] == "allow"
    assert _account(world, "web2", fp)[1]["decision"] == "deny"
    code, ans = _account(world, "web1", None)  # key-less: the login account's approvals
    assert (code, ans["decision"], ans["request_id"]) == (200, "allow", rid)
    assert _account(world, "web2", None)[1]["decision"] == "deny"
    events = world.call("root-admin", "GET", "/api/v1/audit?limit=1000")[1]["events"]
    keyless = [
        e
        for e in events
        if e["kind"] == "hook.account" and e["host"] == "web1" and e["data"]["fingerprint"] is None
    ]
    assert [e["data"]["request_ids"] for e in keyless] == [[rid]]
    # A user token, an unknown token: refused before any decision is read.
    assert _akc(world, "alice")[0] == 403
    assert _akc(world, "jith_" + "x" * 43)[0] == 401


def test_a_rotated_host_token_is_refused_on_the_prefetched_path(world):
    _approved(world)
    old = world.host_tokens["web1"]
    assert len(_akc(world, old)[1]["keys"]) == 1
    new = world.svc.admin("host", "rotate-token", "web1", "--grace", "0").strip()
    world.host_tokens["web1"] = new
    # The old token's row still names web1: only the token check may refuse it.
    assert _akc(world, old)[0] == 401
    code, ans = _akc(world, "web1")
    assert code == 200 and len(ans["keys"]) == 1


def test_prefetched_rows_are_the_plain_lookups_rows(world, db_backend):
    """In-process, one real group-commit batch: queued lookups (PostgreSQL) == plain lookups."""
    rid = _approved(world)
    url = world.svc.database_url or f"sqlite:///{world.svc.data_dir / 'jit.db'}"
    engine = make_engine(url)
    unit = UnitOfWork(engine, threads=2)
    fp = world.keys["alice"].fingerprint
    with engine.connect() as conn:
        now = conn.execute(text("SELECT ends_at - 1 FROM requests WHERE id = :i"), {"i": rid})
        now = now.scalar()

    def job(conn):  # noqa: ANN001, ANN202
        out = {}
        for host in ("web1", "web2"):
            digest = auth.token_hash(world.host_tokens[host])
            pre_key = decisions.prefetch(conn, digest, login="deploy", fingerprint=fp, now=now)
            pre_login = decisions.prefetch(conn, digest, login="deploy", fingerprint=None, now=now)
            principal = auth.authenticate(conn, world.host_tokens[host], now)
            kw = {"host_id": principal.id, "login": "deploy", "now": now}
            out[host] = {
                "queued": (pre_key is not None, pre_login is not None),
                "key": (
                    decisions.approval_for_key(conn, fingerprint=fp, pre=pre_key, **kw),
                    decisions.approval_for_key(conn, fingerprint=fp, **kw),
                ),
                "login": (
                    decisions.approval_for_login(conn, pre=pre_login, **kw),
                    decisions.approval_for_login(conn, **kw),
                ),
                "ids": (
                    decisions._open_requests(conn, pre=pre_login, **kw),
                    decisions._open_requests(conn, **kw),
                ),
            }
        return out

    try:
        out = asyncio.run(unit.run(job, batch=True))
    finally:
        unit.close()
        engine.dispose()
    queued = db_backend == "postgresql"
    for host, found in out.items():
        assert found["queued"] == (queued, queued), host
        for name in ("key", "login", "ids"):
            prefetched, plain = found[name]
            assert prefetched == plain, (host, name)
    assert out["web1"]["key"][0].id == rid and out["web1"]["ids"][0] == [rid]
    assert out["web2"]["key"][0] is None and out["web2"]["ids"][0] == []
    assert json.dumps(out["web1"]["login"][0].id) == str(rid)
