"""Fill a jit-server SQLite database with a large, realistic history (for P3 scale).

    .venv/bin/python -m bench.gen_data DB [--hosts 10000] [--users 100000] [--history 1000000]

DB must already hold the schema (`jit-server db upgrade`) and may hold live data
(the benchmark's own people, host and approvals): generated rows get ids after
the existing ones. It writes, with sqlite3 `executemany` in ONE transaction:

* ``--hosts`` hosts (``gen-host-N``, label env=prod|staging) with a host token each;
* ``--users`` requesters (``gen-user-N``), each with one registered ed25519 key
  (random 32-byte public key, real SHA256 fingerprint);
* ``--history`` finished requests (expired, denied, revoked, cancelled; all in the
  past) on random hosts by random users, with their request_hosts row, and two
  audit events each (``request.created`` + the decision), continuing the real
  hash chain so `jit-server audit verify` still passes. One request in a
  thousand belongs to ``--heavy-user`` on ``--heavy-host`` as ``--heavy-login``
  (an old hand's expired approvals: exactly the rows the hook query must skip).

Deterministic for a given --seed. Runs at roughly 100k history rows per second.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import sqlite3
import sys
import time

from jit_hooks.server.audit import GENESIS, canonical, event_hash

DAY = 86400
STATES = ("approved", "denied", "revoked", "cancelled")  # approved + past end = expired
BATCH = 20_000
DECISION_EVENT = {
    "approved": "request.approved",
    "denied": "request.denied",
    "revoked": "request.approved",  # the revocation itself came later; one event is enough
    "cancelled": "request.cancelled",
}


def _ed25519_blob(rng: random.Random) -> tuple[str, str]:
    raw = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + rng.randbytes(32)
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return base64.b64encode(raw).decode(), fp


def _max_id(db: sqlite3.Connection, table: str) -> int:
    return db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]


def _batched(it, size: int = BATCH):  # noqa: ANN001, ANN202
    batch = []
    for item in it:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def generate(
    path: str,
    *,
    hosts: int,
    users: int,
    history: int,
    heavy_user: str | None = None,
    heavy_host: str | None = None,
    heavy_login: str = "deploy",
    seed: int = 7,
    now: int | None = None,
    log=print,  # noqa: ANN001
) -> dict:
    """Generate into the database at ``path``; returns row counts and seconds."""
    rng = random.Random(seed)
    now = int(time.time()) if now is None else now
    t0 = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    # Bulk load: no WAL growth, no fsync per page; back to WAL (the service's mode) after.
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA foreign_keys=OFF")
    db.execute("BEGIN IMMEDIATE")
    try:
        spec = db.execute("SELECT spec FROM policies ORDER BY id LIMIT 1").fetchone()
        policy_spec = spec[0] if spec else canonical({"name": "gen"})
        policy_name = json.loads(policy_spec).get("name", "gen")

        h0, u0, t_0, k0, r0 = (_max_id(db, t) for t in ("hosts", "users", "tokens", "keys",
                                                          "requests"))  # fmt: skip
        host_ids = list(range(h0 + 1, h0 + hosts + 1))
        host_names = {hid: f"gen-host-{hid}" for hid in host_ids}
        db.executemany(
            "INSERT INTO hosts (id, name, labels, removed, created_at) VALUES (?, ?, ?, 0, ?)",
            ((hid, host_names[hid], canonical({"env": rng.choice(["prod", "staging"])}),
              now - 400 * DAY) for hid in host_ids),
        )  # fmt: skip
        db.executemany(
            "INSERT INTO tokens (id, token_hash, kind, user_id, host_id, created_at, revoked_at)"
            " VALUES (?, ?, 'host', NULL, ?, ?, NULL)",
            ((t_0 + i + 1, hashlib.sha256(f"gen-host-token-{seed}-{hid}".encode()).hexdigest(),
              hid, now - 400 * DAY) for i, hid in enumerate(host_ids)),
        )  # fmt: skip
        user_ids = list(range(u0 + 1, u0 + users + 1))
        user_names = {uid: f"gen-user-{uid}" for uid in user_ids}
        db.executemany(
            "INSERT INTO users (id, name, roles, disabled, created_at)"
            " VALUES (?, ?, 'requester', 0, ?)",
            ((uid, user_names[uid], now - 400 * DAY) for uid in user_ids),
        )

        def key_rows():  # noqa: ANN202
            for i, uid in enumerate(user_ids):
                blob, fp = _ed25519_blob(rng)
                yield (k0 + i + 1, uid, "ssh-ed25519", blob, fp, f"gen{uid}", now - 300 * DAY)

        for batch in _batched(key_rows()):
            db.executemany(
                "INSERT INTO keys (id, user_id, key_type, blob, fingerprint, comment, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                batch,
            )
        log(f"  hosts, users, keys: {time.perf_counter() - t0:.1f} s")

        heavy_uid = heavy_hid = None
        if heavy_user:
            row = db.execute("SELECT id FROM users WHERE name = ?", (heavy_user,)).fetchone()
            heavy_uid = row[0] if row else None
        if heavy_host:
            row = db.execute("SELECT id FROM hosts WHERE name = ?", (heavy_host,)).fetchone()
            heavy_hid = row[0] if row else None

        head = db.execute("SELECT last_id, hash FROM audit_head WHERE id = 1").fetchone()
        last_id, prev_hash = head if head else (0, GENESIS)

        req_rows: list[tuple] = []
        rh_rows: list[tuple] = []
        ev_rows: list[tuple] = []

        def flush() -> None:
            db.executemany(
                "INSERT INTO requests (id, requester_id, host_id, selector, login, reason,"
                " duration_seconds, start, state, policy_name, policy_spec, approvals_required,"
                " created_at, starts_at, ends_at, decided_at, closed_at)"
                " VALUES (?, ?, ?, NULL, ?, ?, ?, NULL, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                req_rows,
            )
            db.executemany("INSERT INTO request_hosts (request_id, host_id) VALUES (?, ?)", rh_rows)
            db.executemany(
                "INSERT INTO audit_events (id, seq, at, kind, actor, host, data, prev_hash, hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ev_rows,
            )
            req_rows.clear()
            rh_rows.clear()
            ev_rows.clear()

        def event(at: int, kind: str, actor: str | None, host: str | None, data: dict) -> None:
            nonlocal last_id, prev_hash
            last_id += 1
            text = canonical(data)
            digest = event_hash(
                id=last_id, at=at, kind=kind, actor=actor, host=host, data=text,
                prev_hash=prev_hash,
            )  # fmt: skip
            # Chained as SQLite's own appends are (seq = the chain position; here also the id).
            ev_rows.append((last_id, last_id, at, kind, actor, host, text, prev_hash, digest))
            prev_hash = digest

        logins = ("deploy", "www-data", "postgres", "ubuntu", "admin")
        for i in range(history):
            rid = r0 + i + 1
            heavy = heavy_uid is not None and heavy_hid is not None and i % 1000 == 0
            uid = heavy_uid if heavy else rng.choice(user_ids)
            hid = heavy_hid if heavy else rng.choice(host_ids)
            login = heavy_login if heavy else rng.choice(logins)
            state = "approved" if heavy else rng.choice(STATES)
            duration = rng.choice((900, 3600, 14400))
            created = now - rng.randint(2 * DAY, 365 * DAY)
            decided = created + rng.randint(10, 3600)
            starts = ends = None
            closed = None
            if state in ("approved", "revoked"):
                starts, ends = decided, decided + duration
            if state in ("revoked", "cancelled"):
                closed = decided + rng.randint(1, duration)
            req_rows.append(
                (rid, uid, hid, login, f"INC-{rid} generated", duration, state, policy_name,
                 policy_spec, created, starts, ends, decided if state != "cancelled" else None,
                 closed)
            )  # fmt: skip
            rh_rows.append((rid, hid))
            host_name = heavy_host if heavy else host_names[hid]  # type: ignore[index]
            actor = heavy_user if heavy else user_names[uid]  # type: ignore[index]
            event(created, "request.created", actor, host_name,
                  {"request_id": rid, "login": login, "duration_seconds": duration,
                   "reason": f"INC-{rid} generated", "policy": policy_name, "hosts": 1,
                   "selector": None, "start": None})  # fmt: skip
            event(decided, DECISION_EVENT[state], "gen-approver", host_name, {"request_id": rid})
            if len(req_rows) >= BATCH:
                flush()
        flush()
        if history:
            if head:
                db.execute("UPDATE audit_head SET last_id = ?, hash = ? WHERE id = 1",
                           (last_id, prev_hash))  # fmt: skip
            else:
                db.execute("INSERT INTO audit_head (id, last_id, hash) VALUES (1, ?, ?)",
                           (last_id, prev_hash))  # fmt: skip
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.execute("PRAGMA journal_mode=WAL")
        db.close()
    seconds = time.perf_counter() - t0
    log(f"  history: {history} requests, {2 * history} audit events: {seconds:.1f} s total")
    return {"hosts": hosts, "users": users, "keys": users, "requests": history,
            "audit_events": 2 * history, "seconds": round(seconds, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gen_data", description=__doc__.split("\n")[0])
    p.add_argument("db", help="SQLite file with the jit-server schema")
    p.add_argument("--hosts", type=int, default=10_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--history", type=int, default=1_000_000)
    p.add_argument("--heavy-user")
    p.add_argument("--heavy-host")
    p.add_argument("--heavy-login", default="deploy")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    try:
        generate(a.db, hosts=a.hosts, users=a.users, history=a.history, heavy_user=a.heavy_user,
                 heavy_host=a.heavy_host, heavy_login=a.heavy_login, seed=a.seed)  # fmt: skip
    except sqlite3.Error as e:
        print(f"gen_data: {a.db}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
