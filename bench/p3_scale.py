"""P3 scale: the hook endpoint's latency with 1,000 vs 1,000,000 historical requests.

Two real services run side by side, each seeded through the API (the bench
person, host web1, an active approval), then filled by bench/gen_data.py with
10,000 hosts, 100,000 users + keys and a history of finished requests and their
audit events: 1,000 in one, 1,000,000 (x --scale) in the other. The same wrk
load alternates between them. Also prints SQLite's EXPLAIN QUERY PLAN of every
query a hook call runs, and checks that none scans a table.
"""

from __future__ import annotations

import json
import sqlite3
import time
from types import SimpleNamespace
from typing import cast

from bench.gen_data import generate
from bench.load import Target, interleaved_load, summarize_load
from bench.p3_throughput import MAX_RESPONSES, hook_target
from bench.report import compare, value_row
from bench.world import build_world

TARGET_P99_GROWTH = 1.3
# Tables that hold one row by design: scanning them is the index.
ONE_ROW_TABLES = {"audit_head"}


class _Capture:
    """Stands in for a Connection: records the statements a query function runs."""

    # Not "sqlite": jit_hooks/server/sql.py's Prepared statements then go through
    # execute(statement, params) as on any other database, and are recorded.
    dialect = SimpleNamespace(name="capture")

    def __init__(self) -> None:
        self.statements: list = []

    def execute(self, statement, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        params = args[0] if args and isinstance(args[0], dict) else {}
        self.statements.append(_with_values(statement, params))
        return self

    def first(self) -> None:
        return None

    rowcount = 0


def _with_values(statement, params: dict):  # noqa: ANN001, ANN202
    """The statement with its named bind parameters replaced by their values."""
    from sqlalchemy import BindParameter, literal
    from sqlalchemy.sql import visitors

    def value(el):  # noqa: ANN001, ANN202
        if isinstance(el, BindParameter) and el.key in params:
            return literal(params[el.key], el.type)
        return None

    return visitors.replacement_traverse(statement, {}, value)


def hook_statements(*, host_id: int, login: str, fingerprint: str, now: int) -> dict[str, str]:
    """The SQL (SQLite dialect, literal values) of every query on the hook hot path."""
    from sqlalchemy import Connection
    from sqlalchemy.dialects import sqlite

    from jit_hooks.server import audit, auth, decisions

    cap = _Capture()
    conn = cast("Connection", cap)  # duck-typed: execute() and first() are all they use
    out: dict[str, str] = {}

    def grab(name: str, fn) -> None:  # noqa: ANN001
        start = len(cap.statements)
        try:
            fn()
        except Exception:  # noqa: S110 - authenticate raises on "no row": we only want its SQL
            pass
        for i, st in enumerate(cap.statements[start:]):
            sql = st.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
            out[f"{name}[{i}]"] = str(sql).replace("\n", " ")

    grab("auth.authenticate", lambda: auth.authenticate(conn, "jith_" + "x" * 43))
    grab("decisions.approval_for_key", lambda: decisions.approval_for_key(
        conn, host_id=host_id, login=login, fingerprint=fingerprint, now=now))  # fmt: skip
    grab("decisions.approval_for_login", lambda: decisions.approval_for_login(
        conn, host_id=host_id, login=login, now=now))  # fmt: skip
    grab("audit.append", lambda: audit.append(conn, at=now, kind="hook.account", data={}))
    return out


def query_plans(db_path: str, statements: dict[str, str]) -> dict[str, dict]:
    """EXPLAIN QUERY PLAN of each statement; ``ok`` unless it scans a real table."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    plans = {}
    try:
        for name, sql in statements.items():
            if sql.lstrip().upper().startswith(("INSERT", "UPDATE")) and " WHERE " not in sql:
                plans[name] = {"sql": sql, "plan": ["(insert)"], "ok": True}
                continue
            rows = db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            lines = [r[3] for r in rows]
            scans = [
                ln for ln in lines
                if ln.startswith("SCAN ") and ln.split()[1] not in ONE_ROW_TABLES
            ]  # fmt: skip
            plans[name] = {"sql": sql, "plan": lines, "ok": not scans}
    finally:
        db.close()
    return plans


def account_target(world) -> Target:  # noqa: ANN001
    """The account check of a login without a key (e.g. a password login)."""
    body = {"login": world.login, "rhost": "127.0.0.1", "service": "sshd",
            "connection": "1:1", "fingerprint": None}  # fmt: skip
    status, answer = world.svc.call("POST", "/api/v1/hook/account", token=world.host_token,
                                    body=body)  # fmt: skip
    if status != 200 or answer["decision"] != "allow":
        raise RuntimeError(f"account endpoint does not allow the approved login: {answer}")
    return Target("/api/v1/hook/account", "POST", json.dumps(body), world.host_token)


def run(ctx) -> dict:  # noqa: ANN001
    opts = ctx.options
    scale = opts.get("scale", 1.0)
    if ctx.quick:
        hosts, users, small, large = 50, 500, 10, 1000
    else:
        hosts, users = 10_000, 100_000
        small, large = 1_000, max(1_000, int(1_000_000 * scale))
    worlds = {}
    try:
        sizes = {"small": small, "large": large}
        for label, history in sizes.items():
            w = build_world(ctx.work / f"p3s-{label}", approved=1, sink=False)
            worlds[label] = w
            w.svc.stop()
            ctx.log(f"P3s: generating {label}: {hosts} hosts, {users} users+keys, "
                    f"{history} requests + {2 * history} audit events")  # fmt: skip
            gen = generate(
                str(w.svc.data_dir / "jit.db"), hosts=hosts, users=users, history=history,
                heavy_user="req0", heavy_host=w.host, heavy_login=w.login, log=ctx.log,
            )  # fmt: skip
            w.generated = gen
            w.svc.start()

        big = worlds["large"]
        key = big.keys["req0"]
        host_id = big.svc.sqlite("SELECT id FROM hosts WHERE name = ?", (big.host,))[0][0]
        statements = hook_statements(
            host_id=host_id, login=big.login, fingerprint=key.fingerprint, now=int(time.time())
        )
        plans = query_plans(str(big.svc.data_dir / "jit.db"), statements)
        for name, p in plans.items():
            ctx.log(f"  EXPLAIN QUERY PLAN {name}: {'ok' if p['ok'] else 'SCAN!'}")
            for line in p["plan"]:
                ctx.log(f"      {line}")

        rounds = 2 if ctx.quick else opts.get("rounds", 5)
        seconds = 1.0 if ctx.quick else opts.get("duration", 3.0)
        # Two services, one load generator: run them one after the other, alternating.
        # Two services, one load generator: alternate between them, round after round.
        # Per service: the AKC call, and the account check of a login without a key
        # (password) which looks for any approval of the login account on the host.
        load = []
        for label, w in worlds.items():
            load.append((label, "akc", f"authorized-keys @ {sizes[label]:,} requests",
                         hook_target(w)))  # fmt: skip
            load.append((label, "acct", f"account, no key @ {sizes[label]:,} requests",
                         account_target(w)))  # fmt: skip
        runs: dict[str, list[dict]] = {name: [] for _l, _k, name, _t in load}
        for i in range(rounds):
            order = load[i % len(load) :] + load[: i % len(load)]
            for label, _kind, name, target in order:
                out = interleaved_load(
                    worlds[label].svc.url, {name: target}, rounds=1, seconds=seconds,
                    connections=opts.get("connections", 16), max_responses=MAX_RESPONSES,
                    log=ctx.log,
                )  # fmt: skip
                runs[name] += out[name]
        cases = {name: summarize_load(r) for name, r in runs.items()}
        names = {(label, kind): name for label, kind, name, _t in load}
    finally:
        for w in worlds.values():
            w.close()
    s, lg = names["small", "akc"], names["large", "akc"]
    sa, la = names["small", "acct"], names["large", "acct"]
    rps = {n: {"rps": c["rps"]} for n, c in cases.items()}
    rows = [
        compare(
            "authorized-keys p99, 1M history / 1k",
            lg,
            s,
            cases,
            key="p99",
            target=TARGET_P99_GROWTH,
        ),  # fmt: skip
        compare("authorized-keys p50, 1M history / 1k", lg, s, cases, key="median"),
        compare("authorized-keys checks/s, 1M history / 1k", lg, s, rps, key="rps"),
        compare(
            "account (no key) p99, 1M history / 1k",
            la,
            sa,
            cases,
            key="p99",
            target=TARGET_P99_GROWTH,
        ),  # fmt: skip
        compare("account (no key) checks/s, 1M history / 1k", la, sa, rps, key="rps"),
        value_row(
            "hook queries using indexes",
            sum(p["ok"] for p in plans.values()),
            f"/ {len(plans)}",
            target=len(plans),
        ),  # fmt: skip
    ]
    return {
        "title": "service scale",
        "rows": rows,
        "cases": cases,
        "data": {label: w.generated for label, w in worlds.items()},
        "query_plans": plans,
        "notes": [json.dumps({"hosts": hosts, "users": users, "history": sizes})],
    }
