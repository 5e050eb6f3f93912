"""P3pg: hook checks on PostgreSQL with 1 and 2 `jit-server serve` replicas, beside SQLite.

The cases, under the same load, in interleaved rounds (rotating order):

* SQLite: one `jit-server serve` on its SQLite file (the default deployment);
* PostgreSQL, 1 replica: one `jit-server serve` on a PostgreSQL database;
* PostgreSQL, 2 replicas: two `jit-server serve` processes on that same
  database, each taking half of the connections;
* an experiment beside them: 1 replica whose sessions run with
  synchronous_commit=off (no WAL flush at COMMIT, as SQLite's
  synchronous=NORMAL has none): how much of the gap is the disk flush.

The load is one wrk run per round with 2 threads and N connections in all three
cases (for 2 replicas, thread i talks to replica i: one merged latency
histogram). Every call is a real, audited "allow" for an approved key (checked
up front on every replica); `jit-server audit verify` runs on both databases
afterwards.

Two more load shapes, SQLite beside PostgreSQL (1 replica) each:

* fleet: FLEET_HOSTS hosts (a host token each) x FLEET_KEYS people (a key and an
  approval for the whole fleet each); every request is the next (host, key)
  pair, round robin over all of them (wrk's JB_MIX): the audit rows and the
  rows read spread over the fleet as real logins do;
* deny storm: one key with no approval offered to one host over and over (a
  scanner, or a client offering the wrong key): every call a miss on the same
  (host, login, key, window) - the case that waited on one counter row before
  migration 0015. The PostgreSQL cluster is the bench's own (initdb in a temp dir,
a free port: jit_hooks/testing/postgres.py), never the machine's.

Besides checks/s and p99: CPU seconds per 1,000 checks of the service processes
and of the whole PostgreSQL cluster (utime + stime from /proc, before and after
each round; bench/procstat.py), which predicts what more cores would give, and
the lock waits in the cluster during the PostgreSQL rounds, counted two ways
(bench/pglocks.py): PostgreSQL's own log of every wait longer than
deadlock_timeout (5 ms, log_lock_waits), and a sampler of ungranted pg_locks
every 5 ms. The sampler runs through every round, SQLite's included, so all
cases share its cost; its own backend is left out of the CPU figures.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench.load import Target, summarize_load, wrk
from bench.p3_throughput import MAX_RESPONSES, hook_target
from bench.pglocks import DEADLOCK_TIMEOUT_MS, LOCK_LOG_CONF, LockSampler, LockWaitLog
from bench.procstat import tree_cpu_seconds
from bench.report import compare, value_row
from bench.world import build_world, make_key, service_env
from jit_hooks.testing import postgres
from jit_hooks.testing.service import Service, free_port

SQLITE = "SQLite, 1 replica"
PG1 = "PostgreSQL, 1 replica"
PG2 = "PostgreSQL, 2 replicas"
# Experiment, not a deployment setting: replica C's sessions skip the WAL flush
# at COMMIT (synchronous_commit=off), roughly what SQLite's synchronous=NORMAL
# in WAL mode gives up (no fsync per commit). It says how much of the gap to
# SQLite is the disk flush and how much is CPU.
PG1_ASYNC = "PostgreSQL, 1 replica, async commit"
SQLITE_FLEET = "SQLite, fleet"
PG1_FLEET = "PostgreSQL, 1 replica, fleet"
SQLITE_DENY = "SQLite, deny storm"
PG1_DENY = "PostgreSQL, 1 replica, deny storm"
FLEET_HOSTS = 200
FLEET_KEYS = 20
ASYNC_OPTIONS = "?options=-csynchronous_commit%3Doff"
AKC = "/api/v1/hook/authorized-keys"
TARGET_PG1_VS_SQLITE = 0.5
TARGET_PG2_VS_PG1 = 1.0
WRK_THREADS = 2  # one per replica in the 2-replica case; the same in every case


def _verify(svc: Service) -> str | None:
    """None if `jit-server audit verify` passes on the service's database, else why not."""
    try:
        out = svc.admin("audit", "verify")
    except AssertionError as e:
        return str(e)[-300:]
    return None if "OK" in out else out[-300:]


def run(ctx) -> dict:  # noqa: ANN001
    if not postgres.available():
        raise RuntimeError("PostgreSQL 15 server binaries missing (scripts/setup installs them)")
    opts = ctx.options
    conns = opts.get("connections", 16)
    rounds = 2 if ctx.quick else opts.get("rounds", 5)
    seconds = 1.0 if ctx.quick else opts.get("duration", 3.0)
    work = ctx.work / "p3pg"
    work.mkdir(parents=True, exist_ok=True)
    cluster = postgres.make_cluster(work).init(extra_conf=LOCK_LOG_CONF)
    services: list[Service] = []
    worlds = []
    try:
        cluster.start()
        url = cluster.create_database("jitbench")
        # req1: a key and a pending request, no approval (the deny storm's key).
        lite = build_world(work / "sqlite", sink=False, denied=1)
        worlds.append(lite)
        pg = build_world(work / "pg", sink=False, database_url=url, denied=1)
        worlds.append(pg)
        hook_lite = hook_target(lite)
        hook_pg = hook_target(pg)
        hosts, keys = (20, 5) if ctx.quick else (FLEET_HOSTS, FLEET_KEYS)
        (work / "fleet-keys").mkdir()
        fleet_keys = [make_key(work / "fleet-keys", f"fleet{j}") for j in range(keys)]
        fleet_lite = fleet_target(lite, fleet_keys, hosts=hosts, mix=work / "mix-sqlite")
        fleet_pg = fleet_target(pg, fleet_keys, hosts=hosts, mix=work / "mix-pg", url=url)
        deny_lite, deny_pg = deny_target(lite), deny_target(pg)
        replicas = {}
        for name, db_url in (("b", url), ("c", url + ASYNC_OPTIONS)):
            (work / f"pg-{name}").mkdir()
            svc = Service(data_dir=work / f"pg-{name}", port=free_port(), env=service_env(db_url))
            svc.start()
            services.append(svc)
            body = json.loads(hook_pg.body)
            status, answer = svc.call("POST", hook_pg.path, token=pg.host_token, body=body)
            if status != 200 or not answer["keys"]:
                raise RuntimeError(f"replica {name} does not allow the key: {status} {answer}")
            replicas[name] = svc
        b, c = replicas["b"], replicas["c"]
        # Every PostgreSQL replica's CPU counts in every PostgreSQL case: an idle
        # one may be the leader doing background work (the audit fold) for all.
        pg_pids = [_pid(pg.svc), _pid(b), _pid(c)]
        addrs = (f"127.0.0.1:{pg.svc.port}", f"127.0.0.1:{b.port}")
        cases: dict[str, tuple[str, Target, list[int]]] = {
            SQLITE: (lite.svc.url, hook_lite, [_pid(lite.svc)]),
            PG1: (pg.svc.url, hook_pg, pg_pids),
            PG2: (
                pg.svc.url,
                Target(hook_pg.path, hook_pg.method, hook_pg.body, hook_pg.token, addrs),
                pg_pids,
            ),
            PG1_ASYNC: (c.url, hook_pg, pg_pids),
            SQLITE_FLEET: (lite.svc.url, fleet_lite, [_pid(lite.svc)]),
            PG1_FLEET: (pg.svc.url, fleet_pg, pg_pids),
            SQLITE_DENY: (lite.svc.url, deny_lite, [_pid(lite.svc)]),
            PG1_DENY: (pg.svc.url, deny_pg, pg_pids),
        }
        ctx.log(
            f"P3pg: {rounds} rounds x {seconds:g} s per case, {conns} connections, "
            f"{WRK_THREADS} wrk threads; PostgreSQL on 127.0.0.1:{cluster.port}"
        )
        runs, cpu, locks = _load(ctx, cluster, cases, rounds=rounds, seconds=seconds, conns=conns)
        problems = {name: _verify(w.svc) for name, w in (("SQLite", lite), ("PostgreSQL", pg))}
    finally:
        for svc in services:
            svc.stop()
        for w in worlds:
            w.close()
        cluster.destroy()
    return _result(runs, cpu, locks, problems, rounds=rounds, seconds=seconds, conns=conns)


def fleet_target(
    world,  # noqa: ANN001
    fleet_keys: list,
    *,
    hosts: int,
    mix: Path,
    url: str | None = None,
) -> Target:
    """``hosts`` hosts x the keys' owners, each approved for the whole fleet; a JB_MIX file.

    ``url``: the world's database if not its SQLite file. Seeded in-process
    through the store (as `jit-server` does: every change audited), the keys
    and approvals through the API.
    """
    from jit_hooks.server import store
    from jit_hooks.server.db import make_engine
    from jit_hooks.server.policy import parse_policy

    svc = world.svc
    engine = make_engine(url or f"sqlite:///{svc.data_dir / 'jit.db'}")
    now = int(time.time())
    tokens: list[str] = []
    users: dict[str, str] = {}
    try:
        with engine.begin() as conn:
            for i in range(hosts):
                tokens.append(
                    store.add_host(
                        conn, name=f"fleet-{i:03d}", labels={"group": "fleet"}, actor="bench",
                        now=now,
                    )
                )  # fmt: skip
            spec = {
                "name": "fleet",
                "labels": {"group": "fleet"},
                "logins": [world.login],
                "requesters": {"roles": ["requester"]},
                "approvers": {"roles": ["approver"]},
                "approvals_required": 1,
                "max_duration": 14400,
                "options": ["no-agent-forwarding"],
            }
            store.put_policy(conn, policy=parse_policy(spec), actor="bench", now=now)
            for k in fleet_keys:
                name = k.path.name
                store.add_user(conn, name=name, roles=["requester"], actor="bench", now=now)
                users[name] = store.create_user_token(conn, name=name, actor="bench", now=now)
    finally:
        engine.dispose()
    for k in fleet_keys:
        token = users[k.path.name]
        world.user_tokens[k.path.name] = token
        world.call(k.path.name, "POST", "/api/v1/keys", {"public_key": k.line})
        req = world.call(
            k.path.name,
            "POST",
            "/api/v1/requests",
            {"selector": {"group": "fleet"}, "login": world.login, "reason": "bench",
             "duration_seconds": 14400},
        )  # fmt: skip
        world.call("approver", "POST", f"/api/v1/requests/{req['id']}/approve", {})
    bodies = [
        json.dumps(
            {
                "login": world.login,
                "fingerprint": k.fingerprint,
                "key_type": k.key_type,
                "key": k.blob,
            }
        )  # fmt: skip
        for k in fleet_keys
    ]
    lines = [f"{t}\t{b}" for t in tokens for b in bodies]
    mix.write_text("\n".join(lines) + "\n")
    # Spot checks: the first and the last pair are allowed.
    for t, b in ((tokens[0], bodies[0]), (tokens[-1], bodies[-1])):
        status, answer = svc.call("POST", AKC, token=t, body=json.loads(b))
        if status != 200 or not answer["keys"]:
            raise RuntimeError(f"the fleet's key is not allowed: {status} {answer}")
    return Target(AKC, "POST", bodies[0], tokens[0], mix=str(mix))


def deny_target(world) -> Target:  # noqa: ANN001
    """req1's key (a pending request, no approval) offered to the world's host."""
    key = world.keys["req1"]
    body = {"login": world.login, "fingerprint": key.fingerprint, "key_type": key.key_type,
            "key": key.blob}  # fmt: skip
    status, answer = world.svc.call("POST", AKC, token=world.host_token, body=body)
    if status != 200 or answer["keys"]:
        raise RuntimeError(f"the deny storm's key is not denied: {status} {answer}")
    return Target(AKC, "POST", json.dumps(body), world.host_token)


def _pid(svc: Service) -> int:
    assert svc.proc is not None
    return svc.proc.pid


def _load(ctx, cluster, cases, *, rounds: int, seconds: float, conns: int):  # noqa: ANN001, ANN202
    """Interleaved wrk rounds; per case: wrk results, CPU seconds, lock waits."""
    names = list(cases)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    cpu = {n: {"service": 0.0, "postgres": 0.0} for n in names}
    log_waits = {n: 0 for n in names}
    log_kinds: dict[str, Counter[str]] = {n: Counter() for n in names}
    log_errors: dict[str, Counter[str]] = {n: Counter() for n in names}
    conninfo = f"host=127.0.0.1 port={cluster.port} user=postgres dbname=jitbench"
    sampler = LockSampler(conninfo).start()
    waitlog = LockWaitLog(cluster.log_path)
    pg_root = [cluster.proc.pid]
    mine = frozenset({sampler.backend_pid})
    try:
        for i in range(rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                base_url, target, svc_pids = cases[name]
                waitlog.read()  # what happened before this round is not this round's
                svc0 = tree_cpu_seconds(svc_pids)
                pg0 = tree_cpu_seconds(pg_root, exclude=mine)
                sampler.bucket = name
                res = wrk(
                    base_url,
                    target,
                    seconds=seconds,
                    connections=conns,
                    max_responses=MAX_RESPONSES,
                    threads=WRK_THREADS,
                )
                _settle(svc_pids + pg_root, exclude=mine)
                sampler.bucket = None
                cpu[name]["service"] += tree_cpu_seconds(svc_pids) - svc0
                cpu[name]["postgres"] += tree_cpu_seconds(pg_root, exclude=mine) - pg0
                logged = waitlog.read()
                log_waits[name] += logged["waits"]
                log_kinds[name].update(logged["kinds"])
                log_errors[name].update(logged["errors"])
                runs[name].append(res)
                ctx.log(
                    f"  round {i + 1}/{rounds} {name}: {res['rps']:.0f}/s "
                    f"p99 {res['p99_us'] / 1000:.1f} ms, lock waits: "
                    f"{logged['waits']} logged, {sampler.waits[name]} sampled so far"
                )
    finally:
        sampler.stop()
    locks = {
        n: {
            "log": {"waits": log_waits[n], "top": dict(log_kinds[n].most_common(5))},
            "errors": dict(log_errors[n].most_common(5)),
            "error_count": sum(log_errors[n].values()),
            "sampled": sampler.report(n),
        }
        for n in names
    }
    return runs, cpu, locks


def _settle(pids: list[int], *, exclude: frozenset[int], limit: float = 5.0) -> None:
    """Wait until the service and the cluster are idle.

    When wrk stops, up to one request per connection is still being served (and
    may be waiting for a lock): its CPU and its lock waits belong to this round.
    """
    deadline = time.monotonic() + limit
    before = tree_cpu_seconds(pids, exclude=exclude)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = tree_cpu_seconds(pids, exclude=exclude)
        if now - before < 0.02:  # under a fifth of a core: only background work is left
            return
        before = now


def _result(runs, cpu, locks, problems, *, rounds, seconds, conns) -> dict:  # noqa: ANN001
    cases = {}
    for name, rs in runs.items():
        c = summarize_load(rs)
        per_1k = 1000.0 / c["n"]
        c["cpu_s_per_1k_service"] = cpu[name]["service"] * per_1k
        c["cpu_s_per_1k_postgres"] = cpu[name]["postgres"] * per_1k
        c["lock_waits_logged"] = locks[name]["log"]["waits"]
        c["lock_waits_sampled"] = locks[name]["sampled"]["waits"]
        cases[name] = c
    ratio_cases = {n: {"rps": c["rps"]} for n, c in cases.items()}
    pg_cases = (PG1, PG2, PG1_ASYNC, PG1_FLEET, PG1_DENY)
    logged = sum(cases[n]["lock_waits_logged"] for n in pg_cases)
    sampled = sum(cases[n]["lock_waits_sampled"] for n in pg_cases)
    bad_verify = [f"{db}: {why}" for db, why in problems.items() if why]
    # What the waiters were waiting in, so a MISS names its hot spot in the results.
    hot = [
        f"{n}, most common lock wait ({src}): {kind} (x{count})"
        for n in pg_cases
        for src in ("sampled", "log")
        for kind, count in list(locks[n][src]["top"].items())[:1]
    ]
    rows = [
        compare(
            "PostgreSQL 1 replica / SQLite: hook checks/s",
            PG1,
            SQLITE,
            ratio_cases,
            key="rps",
            target=TARGET_PG1_VS_SQLITE,
            higher_is_better=True,
        ),
        compare(
            "PostgreSQL 2 replicas / 1 replica: hook checks/s",
            PG2,
            PG1,
            ratio_cases,
            key="rps",
            target=TARGET_PG2_VS_PG1,
            higher_is_better=True,
        ),
        compare(
            "experiment: PG 1 replica, async commit / SQLite",
            PG1_ASYNC,
            SQLITE,
            ratio_cases,
            key="rps",
            higher_is_better=True,
        ),
        compare(
            "fleet shape: PostgreSQL 1 replica / SQLite",
            PG1_FLEET,
            SQLITE_FLEET,
            ratio_cases,
            key="rps",
            higher_is_better=True,
        ),
        compare(
            "deny storm: PostgreSQL 1 replica / SQLite",
            PG1_DENY,
            SQLITE_DENY,
            ratio_cases,
            key="rps",
            higher_is_better=True,
        ),
    ]
    everything = (SQLITE, PG1, PG2, PG1_ASYNC, SQLITE_FLEET, PG1_FLEET, SQLITE_DENY, PG1_DENY)
    for name in everything:
        rows.append(value_row(f"{name}: hook checks/s", cases[name]["rps"], "/s"))
    for name in everything:
        rows.append(
            value_row(f"{name}: hook p99", cases[name]["p99"], "ms", higher_is_better=False)
        )
    for name in everything:
        rows.append(
            value_row(
                f"{name}: service CPU-s per 1,000 checks",
                cases[name]["cpu_s_per_1k_service"],
                "s",
                higher_is_better=False,
            )
        )
    for name in pg_cases:
        rows.append(
            value_row(
                f"{name}: PostgreSQL CPU-s per 1,000 checks",
                cases[name]["cpu_s_per_1k_postgres"],
                "s",
                higher_is_better=False,
            )
        )
    # The scale-out predictor: with C cores of its own (and nothing serialising
    # the calls), service + database answer at most C times this many checks/s.
    for name in everything:
        c = cases[name]
        # SQLite runs inside the service process; the cluster is idle in its rounds.
        db = 0.0 if name == SQLITE else c["cpu_s_per_1k_postgres"]
        cpu_per_check = (c["cpu_s_per_1k_service"] + db) / 1000
        c["checks_per_cpu_s"] = 1 / cpu_per_check if cpu_per_check else float("inf")
        rows.append(
            value_row(f"{name}: checks per CPU-s (service + DB)",
                      c["checks_per_cpu_s"], "/s")
        )  # fmt: skip
    # Per load shape: the one-key allows (PG1, PG2, async), the fleet, the deny storm.
    for shape, names in (
        ("one key", (PG1, PG2, PG1_ASYNC)),
        ("fleet", (PG1_FLEET,)),
        ("deny storm", (PG1_DENY,)),
    ):
        rows.append(
            value_row(
                f"{shape}: lock waits, logged + sampled (PG rounds)",
                sum(cases[n]["lock_waits_logged"] + cases[n]["lock_waits_sampled"] for n in names),
                "",
                target=0,
                higher_is_better=False,
            )
        )
    rows += [
        value_row(
            f"lock waits > {DEADLOCK_TIMEOUT_MS} ms logged by PostgreSQL (PG rounds)",
            logged,
            "",
            target=0,
            higher_is_better=False,
        ),
        value_row(
            "lock waits seen sampling pg_locks every 5 ms (PG rounds)",
            sampled,
            "",
            target=0,
            higher_is_better=False,
        ),
        value_row(
            "PostgreSQL ERROR lines in its log (PG rounds)",
            sum(locks[n]["error_count"] for n in pg_cases),
            "",
        ),
        value_row(
            "audit verify failures after the run (SQLite + PostgreSQL)",
            len(bad_verify),
            "",
            target=0,
            higher_is_better=False,
        ),
    ]
    return {
        "title": "service throughput on PostgreSQL (1 and 2 replicas) beside SQLite",
        "rows": rows,
        "cases": cases,
        "lock_waits": locks,
        "audit_verify": problems,
        "load": {
            "rounds": rounds,
            "seconds": seconds,
            "connections": conns,
            "wrk_threads": WRK_THREADS,
        },
        "postgres": {
            "version": _pg_version(),
            "conf": LOCK_LOG_CONF.strip().splitlines(),
        },
        "notes": [
            "each case: one `jit-server serve` (1 worker) per replica; 2 replicas share one "
            "database and split the connections (wrk thread i -> replica i)",
            f"fleet: {FLEET_HOSTS} hosts x {FLEET_KEYS} keys (full run), each key approved "
            "for every host, requests round robin over every (host token, key) pair",
            "deny storm: one unapproved key offered to one host, every call an audited miss",
            f"{PG1_ASYNC}: an experiment, replica C with synchronous_commit=off (no WAL "
            "flush at COMMIT, roughly SQLite's synchronous=NORMAL); not a deployment setting",
            "CPU: utime+stime of the service processes (all 3 PG replicas in every PG case) "
            "and of every process of the test cluster, lock sampler's backend excluded",
            "lock waits: PostgreSQL's log_lock_waits lines (deadlock_timeout "
            f"{DEADLOCK_TIMEOUT_MS} ms) and ungranted pg_locks rows sampled every 5 ms",
            *hot,
            *bad_verify,
        ],
    }


def _pg_version() -> str | None:
    try:
        argv = [str(postgres.PG_BIN / "postgres"), "--version"]
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip() or None
    except OSError:
        return None
