"""Set-oriented hook batches on PostgreSQL (sql.Sets) answer and audit as calls run alone.

A group-commit batch on PostgreSQL reads the tokens of all its calls with one
statement, their keys' approvals with another, and writes all their
authorized-keys allow/miss rows (and each window's first event) with a third.
These tests run real batches in-process on the service's real database (both
backends: on SQLite the batch takes its own path, and must give the same
answers): a batch mixing two hosts' tokens, a revoked host token, a user
token, an unknown token, allows, repeats and misses answers each call as the
same call run alone, and leaves the same audit evidence (rows, their
``evented`` first-of-window flags, events). On PostgreSQL the number of
statements a batch of 12 calls executes is counted (psycopg's own cursor
executes, not a mock): 3, where each call used to execute 3 of its own (36).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from jit_hooks.server import decisions, unit
from jit_hooks.server.audit_settings import miss_window
from jit_hooks.server.context import _HostJob
from jit_hooks.server.db import make_engine
from jit_hooks.server.unit import UnitOfWork

R = "/api/v1/requests"

# (token, key owner, login): one batch's calls, in order.
CALLS = [
    ("web1", "alice", "deploy"),  # allow: alice's approval is for web1
    ("web1", "alice", "deploy"),  # the same again: a repeat, not the window's first
    ("web2", "alice", "deploy"),  # web2's token never sees web1's approval: miss
    ("web1", "mallory", "deploy"),  # no approval: miss
    ("web1", "mallory", "deploy"),  # its repeat
    ("web1", "alice", "root"),  # another login: miss
    ("revoked", "alice", "deploy"),  # web1's rotated-out token: 401
    ("alice", "alice", "deploy"),  # a user token: 403
    ("unknown", "alice", "deploy"),  # no such token: 401
    ("web2", "mallory", "deploy"),  # miss on web2
    ("web1", "alice", "deploy"),  # a third allow
    ("web2", "alice", "deploy"),  # web2's repeat miss
]


def _setup(world) -> tuple[int, dict[str, str]]:  # noqa: ANN001
    """Alice approved for web1; web1's token rotated (the old one revoked); the tokens."""
    code, req = world.request("alice")
    assert code == 201, req
    code, req = world.call("bob", "POST", f"{R}/{req['id']}/approve", {})
    assert (code, req["state"]) == (200, "approved"), req
    old = world.host_tokens["web1"]
    world.host_tokens["web1"] = world.svc.admin("host", "rotate-token", "web1", "--grace", "0")
    world.host_tokens["web1"] = world.host_tokens["web1"].strip()
    tokens = dict(world.host_tokens)
    tokens.update(revoked=old, alice=world.tokens["alice"], unknown="jith_" + "x" * 43)
    return req["id"], tokens


def _job(world, tokens: dict[str, str], call: tuple[str, str, str], now: int) -> _HostJob:  # noqa: ANN001
    """A call as routes/hooks.py makes it (Context.as_host's job)."""
    who, owner, login = call
    k = world.keys[owner]
    return _HostJob(
        tokens[who],
        now,
        lambda conn, host, pre: decisions.authorized_keys(
            conn,
            host=host,
            login=login,
            fingerprint=k.fingerprint,
            key_type=k.key_type,
            key=k.blob,
            now=now,
            pre=pre,
        ),
        lambda conn, digest: decisions.prefetch(
            conn, digest, login=login, fingerprint=k.fingerprint, now=now
        ),
    )


def _outcome(out: Any) -> Any:
    if isinstance(out, BaseException):
        return (type(out).__name__, str(out))
    return out


async def _batch(u: UnitOfWork, jobs: list[_HostJob]) -> list[Any]:
    # Started in one turn of the event loop: one group-commit batch.
    found = await asyncio.gather(*(u.run(j, batch=True) for j in jobs), return_exceptions=True)
    return [_outcome(o) for o in found]


async def _alone(u: UnitOfWork, jobs: list[_HostJob]) -> list[Any]:
    found = []
    for j in jobs:
        try:
            found.append(await u.run(j))
        except Exception as e:  # noqa: BLE001 - compared with the batch's
            found.append(_outcome(e))
    return found


def _evidence(conn, window_start: int, at: int) -> dict[str, list]:  # noqa: ANN001
    """The audit rows one window's calls left: allow/miss rows (summed per key) and events."""
    q = {
        "allows": "SELECT host, login, fingerprint, request_id, actor, sum(count), "
        "sum(CASE WHEN evented THEN 1 ELSE 0 END) FROM audit_key_allows "
        "WHERE window_start = :w GROUP BY host, login, fingerprint, request_id, actor "
        "ORDER BY host, login, fingerprint",
        "misses": "SELECT host, login, fingerprint, reason, sum(count), "
        "sum(CASE WHEN evented THEN 1 ELSE 0 END) FROM audit_miss_rows "
        "WHERE window_start = :w GROUP BY host, login, fingerprint, reason "
        "ORDER BY host, login, fingerprint",
        "events": "SELECT kind, actor, host, data FROM audit_events WHERE at = :at "
        "ORDER BY host, data",
    }
    return {
        name: [tuple(r) for r in conn.execute(text(sql), {"w": window_start, "at": at})]
        for name, sql in q.items()
    }


def _engine(world):  # noqa: ANN001, ANN202
    url = world.svc.database_url or f"sqlite:///{world.svc.data_dir / 'jit.db'}"
    return make_engine(url)


@contextmanager
def _unit(world) -> Iterator[UnitOfWork]:  # noqa: ANN001
    """A unit of work on the service's database, as the service makes one (2 threads)."""
    engine = _engine(world)
    u = UnitOfWork(engine, threads=2)
    try:
        yield u
    finally:
        u.close()
        engine.dispose()


def _last_second(world, rid: int) -> int:  # noqa: ANN001
    """The last second of request ``rid``'s approval: inside it, ahead of the clock."""
    [(now,)] = world.svc.sql("SELECT ends_at - 1 FROM requests WHERE id = ?", (rid,))
    return now


def test_a_mixed_batch_answers_and_audits_as_its_calls_alone(world):
    rid, tokens = _setup(world)
    window = miss_window()
    # Two whole windows inside the approval, ahead of the clock: the service's fold
    # closes no window of them while the test reads them.
    t1 = _last_second(world, rid) + 1 - 3 * window
    t1 -= t1 % window
    t2 = t1 + window
    with _unit(world) as u:
        batched = asyncio.run(_batch(u, [_job(world, tokens, c, t1) for c in CALLS]))
        alone = asyncio.run(_alone(u, [_job(world, tokens, c, t2) for c in CALLS]))
        with u.engine.connect() as conn:
            ev1, ev2 = _evidence(conn, t1, t1), _evidence(conn, t2, t2)
    assert batched == alone
    # The answers themselves, the same on both backends.
    keys = [o["keys"] if isinstance(o, dict) else o for o in batched]
    allowed = [[rid]]
    assert [[k["request_id"] for k in ks] if isinstance(ks, list) else ks[0] for ks in keys] == [
        *allowed * 2,
        [],
        [],
        [],
        [],
        "Unauthorized",
        "Forbidden",
        "Unauthorized",
        [],
        *allowed,
        [],
    ]
    assert [o["host"] for o in batched if isinstance(o, dict)] == [
        "web1", "web1", "web2", "web1", "web1", "web1", "web2", "web1", "web2",
    ]  # fmt: skip
    assert ev1 == ev2
    fp_alice, fp_mallory = world.keys["alice"].fingerprint, world.keys["mallory"].fingerprint
    # One allow key, three allows, one of them the window's first (evented).
    assert ev1["allows"] == [("web1", "deploy", fp_alice, rid, "alice", 3, 1)]
    # Misses per (host, login, key): counted, the window's first evented once.
    assert sorted((h, lg, fp, n, e) for h, lg, fp, _, n, e in ev1["misses"]) == sorted(
        [
            ("web1", "deploy", fp_mallory, 2, 1),
            ("web1", "root", fp_alice, 1, 1),
            ("web2", "deploy", fp_alice, 2, 1),
            ("web2", "deploy", fp_mallory, 1, 1),
        ]
    )
    # Five first-of-window events (1 allow + 4 misses), none for a repeat or a refused token.
    assert len(ev1["events"]) == 5
    assert {(e[2], e[1]) for e in ev1["events"]} == {
        ("web1", "alice"), ("web1", None), ("web2", None),
    }  # fmt: skip


@pytest.fixture
def executes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement psycopg executes in this process, counted at its cursor."""
    seen: list[str] = []
    real = psycopg.Cursor.execute

    def counting(self, query, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(str(query))
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting)
    return seen


def test_a_batch_of_12_calls_runs_3_statements_on_postgresql(world, db_backend, executes):
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL's pipelined batches (SQLite runs each call's statements)")
    rid, tokens = _setup(world)
    now = _last_second(world, rid)
    with _unit(world) as u:
        asyncio.run(_batch(u, [_job(world, tokens, c, now) for c in CALLS]))  # warm up
        executes.clear()
        found = asyncio.run(_batch(u, [_job(world, tokens, c, now) for c in CALLS]))
    assert [len(o["keys"]) for o in found if isinstance(o, dict)] == [1, 1, 0, 0, 0, 0, 0, 1, 0]
    # The tokens, the keys' approvals, the audit rows: one statement each for 12 calls.
    assert len(executes) == 3, executes
    assert unit.SETS  # the deployed setting (False: each call its own statements)
    # The batch's three allows of one key are one row counting 3 (the warm-up's too).
    window_start = now - now % miss_window()
    assert world.svc.sql(
        "SELECT count, evented FROM audit_key_allows WHERE window_start = ? ORDER BY id",
        (window_start,),
    ) == [(3, 1), (3, 0)]


def test_a_failing_batch_write_reruns_its_calls_alone(world, db_backend):
    """A real statement error in the batch's one write: every call again, alone; only the
    call that causes it fails (a trigger that refuses misses for login "boom")."""
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL only (the set-oriented write)")
    world.svc.sql(
        "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
        "IF NEW.login = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; "
        "END $$ LANGUAGE plpgsql"
    )
    world.svc.sql(
        "CREATE TRIGGER boom BEFORE INSERT ON audit_miss_rows FOR EACH ROW EXECUTE FUNCTION boom()"
    )
    rid, tokens = _setup(world)
    now = _last_second(world, rid)
    calls = [("web1", "alice", "deploy"), ("web1", "alice", "boom"), ("web2", "mallory", "x")]
    with _unit(world) as u:
        found = asyncio.run(_batch(u, [_job(world, tokens, c, now) for c in calls]))
    assert [k["request_id"] for k in found[0]["keys"]] == [rid]
    assert isinstance(found[1], tuple) and "boom" in found[1][1]  # its own error, alone
    assert found[2]["keys"] == [] and found[2]["host"] == "web2"
    assert world.svc.sql("SELECT count(*) FROM audit_miss_rows WHERE login = 'boom'") == [(0,)]
    assert world.svc.sql(
        "SELECT count(*) FROM audit_key_allows WHERE login = 'deploy' AND window_start = ?",
        (now - now % miss_window(),),
    ) == [(1,)]


def test_short_reason_fast_path_cleans_as_the_character_loop():
    """decisions.short_reason skips its per-character loop for printable ASCII only."""
    slow = lambda t: "".join(c if " " <= c <= "~" else "?" for c in t)[:200]  # noqa: E731
    samples = [chr(i) for i in range(0x300)] + ["active approval", "a\tb", "x" * 300, "é ok"]
    for t in samples:
        assert decisions.short_reason(t) == slow(t), repr(t)


def test_a_batchs_events_keep_the_calls_order(world):
    """An authorized-keys call's event (handed to the batch's one INSERT) is inserted
    before the event of an account call that follows it in the same batch."""
    rid, tokens = _setup(world)
    now = _last_second(world, rid)
    fp = world.keys["alice"].fingerprint
    account = _HostJob(
        tokens["web1"],
        now,
        lambda conn, host, pre: decisions.account(
            conn, host=host, login="deploy", rhost="127.0.0.1", service="sshd",
            connection=None, fingerprint=fp, now=now, pre=pre,
        ),
        lambda conn, digest: decisions.prefetch(
            conn, digest, login="deploy", fingerprint=fp, now=now
        ),
    )  # fmt: skip
    akc = _job(world, tokens, ("web1", "alice", "deploy"), now)
    with _unit(world) as u:
        found = asyncio.run(_batch(u, [akc, account, _job(world, tokens, CALLS[3], now)]))
    assert found[1]["decision"] == "allow", found
    kinds = world.svc.sql(
        "SELECT kind, actor FROM audit_events WHERE at = ? AND kind LIKE 'hook.%' ORDER BY id",
        (now,),
    )
    assert kinds == [
        ("hook.authorized_keys", "alice"),
        ("hook.account", "alice"),
        ("hook.authorized_keys", None),
    ]


def test_a_write_through_sqlalchemy_comes_after_earlier_calls_rows(world, db_backend):
    """A call that writes through SQLAlchemy (conn.execute, not a Prepared) still sees
    the earlier calls' rows of the batch inserted first: the authorized-keys call's event
    is in the transaction when the next call's INSERT runs (it counts it)."""
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL only (the batch's set-oriented write)")
    world.svc.sql("CREATE TABLE probe (events integer NOT NULL)")
    rid, tokens = _setup(world)
    now = _last_second(world, rid)
    probe = text(
        "INSERT INTO probe (events) SELECT count(*) FROM audit_events "
        "WHERE at = :at AND kind = 'hook.authorized_keys'"
    )
    writer = _HostJob(
        tokens["web1"], now, lambda conn, host: conn.execute(probe, {"at": now}).rowcount, None
    )
    akc = _job(world, tokens, ("web1", "alice", "deploy"), now)
    with _unit(world) as u:
        found = asyncio.run(_batch(u, [akc, writer]))
    assert [k["request_id"] for k in found[0]["keys"]] == [rid], found
    assert world.svc.sql("SELECT events FROM probe") == [(1,)]


def test_a_batch_that_times_out_on_a_lock_answers_503_at_once(world, db_backend, executes):
    """The reviewer's fault: a statement_timeout for the database and another session
    holding ACCESS EXCLUSIVE on audit_key_allows. Every call of the batch answers
    unavailable (503: a CommitFailed, as the app maps it), none is rerun alone to meet
    the same timeout again (counted: transactions of one call, statements sent)."""
    if db_backend != "postgresql":
        pytest.skip("PostgreSQL only (statement_timeout, the shared batch transaction)")
    rid, tokens = _setup(world)
    now = _last_second(world, rid)
    [(db,)] = world.svc.sql("SELECT current_database()")
    world.svc.sql(f'ALTER DATABASE "{db}" SET statement_timeout = 300')
    # Made after the setting: every connection of the engine (batch or alone) has it.
    engine = _engine(world)
    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    locker = psycopg.connect(dsn)
    u = UnitOfWork(engine, threads=2)
    alone: list[Any] = []
    one = u._one
    u._one = lambda work: (alone.append(work), one(work))[1]  # type: ignore[method-assign]
    calls = [_job(world, tokens, ("web1", "alice", "deploy"), now) for _ in range(6)]
    try:
        locker.execute("LOCK TABLE audit_key_allows IN ACCESS EXCLUSIVE MODE")
        executes.clear()
        found = asyncio.run(_batch(u, calls))
        sent = [s for s in executes if "audit_key_allows" in s]
    finally:
        locker.rollback()
        locker.close()
        u.close()
        engine.dispose()
        world.svc.sql(f'ALTER DATABASE "{db}" RESET statement_timeout')
    assert [o[0] for o in found] == ["Unavailable"] * 6, found
    assert issubclass(unit.Unavailable, unit.CommitFailed)  # app.py: 503 "unavailable"
    assert "statement timeout" in found[0][1], found
    assert alone == []  # not rerun call by call
    assert len(sent) == 1, sent  # the batch's one INSERT of allow rows, once


def test_audit_verify_reports_the_open_counted_rows(world):
    """`jit-server audit verify` names the allow/miss rows not yet folded into the chain:
    per table, their number and the calls they count (here: 3 allows and 4 misses)."""
    rid, tokens = _setup(world)
    now = _last_second(world, rid)
    calls = [CALLS[0], CALLS[1], CALLS[2], CALLS[3], CALLS[4], CALLS[9], CALLS[10]]
    with _unit(world) as u:
        asyncio.run(_batch(u, [_job(world, tokens, c, now) for c in calls]))
    rows = {
        t: world.svc.sql(f"SELECT count(*) FROM {t}")[0][0]
        for t in ("audit_key_allows", "audit_miss_rows")
    }
    out = world.svc.admin("audit", "verify", "--no-fold")
    assert "audit chain OK" in out
    allows = f"open (not yet in the chain): audit_key_allows {rows['audit_key_allows']} rows "
    assert allows + "counting 3 calls" in out, out
    misses = f"open (not yet in the chain): audit_miss_rows {rows['audit_miss_rows']} rows "
    assert misses + "counting 4 calls" in out, out
