"""What a policy's source pinning really pins, and the shortest extension (sessions review M3, L4):
allowed_from requires a pin, over-broad ranges are refused, 1-second extensions are refused.
Real service, SQLite and PostgreSQL; each refusal is a 422 naming the field."""

from __future__ import annotations

import tomllib

from tests.server.conftest import POLICY, Admin, World

R = "/api/v1/requests"


def set_policy(w: World, **extra: object) -> None:
    from jit_hooks.server import store
    from jit_hooks.server.policy import parse_policy

    spec = tomllib.loads(POLICY.format(n=1))["policy"][0]
    spec.update(extra)
    admin = Admin(w.svc)
    try:
        admin(store.put_policy, policy=parse_policy(spec))
    finally:
        admin.close()


def refused(w: World, cidrs: list[str] | None, words: str) -> None:
    code, body = w.request(**({} if cidrs is None else {"from_cidrs": cidrs}))
    assert code == 422 and body["field"] == "from_cidrs" and words in body["detail"], body


def test_allowed_from_requires_a_pin_inside_it(world):
    w = world
    set_policy(w, allowed_from=["10.0.0.0/8"])  # require_from left false
    refused(w, None, "allowed_from")
    refused(w, ["192.0.2.0/24"], "outside")
    code, body = w.request(from_cidrs=["10.1.0.0/16"])
    assert code == 201 and body["from_cidrs"] == ["10.1.0.0/16"], body
    assert w.svc.sql("SELECT COUNT(*) FROM requests")[0][0] == 1


def test_over_broad_ranges_do_not_satisfy_require_from(world):
    w = world
    set_policy(w, require_from=True)
    refused(w, ["0.0.0.0/1", "128.0.0.0/1"], "too wide")
    refused(w, ["::/1", "8000::/1"], "too wide")
    refused(w, ["10.0.0.0/7"], "too wide")
    code, body = w.request(from_cidrs=["10.0.0.0/8", "2001:db8::/32"])
    assert code == 201, body
    # The minimum prefix is the policy's to set.
    set_policy(w, require_from=True, from_min_prefix_v4=16)
    w.call("alice", "POST", f"{R}/{body['id']}/cancel", {})
    refused(w, ["10.0.0.0/8"], "/16 or narrower")
    code, body = w.request(from_cidrs=["10.1.0.0/16"])
    assert code == 201, body


def test_extensions_move_in_steps_of_at_least_a_minute(world):
    w = world
    set_policy(w, max_extension=600, extension_approvals=0)
    code, req = w.request()
    assert code == 201, req
    code, req = w.call("bob", "POST", f"{R}/{req['id']}/approve", {})
    assert code == 200, req
    rid, ends = req["id"], req["ends_at"]
    ext = f"{R}/{rid}/extend"
    code, body = w.call("alice", "POST", ext, {"duration_seconds": 1, "reason": "more"})
    assert code == 422 and body["field"] == "duration_seconds" and "at least 60" in body["detail"]
    code, body = w.call("alice", "POST", ext, {"duration_seconds": 590, "reason": "more"})
    assert code == 200, body
    # 10 s left: less than a minute is what there is, but not less than that.
    code, body = w.call("alice", "POST", ext, {"duration_seconds": 5, "reason": "more"})
    assert code == 422 and body["field"] == "duration_seconds", body
    code, body = w.call("alice", "POST", ext, {"duration_seconds": 10, "reason": "more"})
    assert code == 200, body
    code, req = w.call("alice", "GET", f"{R}/{rid}")
    assert req["ends_at"] == ends + 600, req
