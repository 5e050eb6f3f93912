"""P3 service throughput: the authorized-keys hook endpoint ÷ a no-op endpoint.

The no-op is GET /bench/noop, added by bench/server.py to the very same app
as the same kind of route as the hooks (an ``async def`` LeanRoute; same
middleware and uvicorn settings): /healthz is no no-op, it opens a SQLite
transaction (in the thread pool). All are loaded by the same wrk (one thread,
N connections, loopback), in alternating rounds bounded by time and by count,
against one real jit-server process. Every hook call is a real decision for an
approved key (the answer is checked once up front) and is audited in SQLite
like in production.
"""

from __future__ import annotations

import json

from bench.load import Target, interleaved_load, summarize_load
from bench.report import compare, value_row
from bench.server import NOOP_PATH
from bench.world import build_world

TARGET_RATIO = 0.6
TARGET_RPS = 2000.0
MAX_RESPONSES = 200_000  # per round: the count bound next to the time bound


def hook_target(world, user: str = "req0") -> Target:  # noqa: ANN001
    key = world.keys[user]
    body = {
        "login": world.login,
        "fingerprint": key.fingerprint,
        "key_type": key.key_type,
        "key": key.blob,
    }
    status, answer = world.svc.call(
        "POST", "/api/v1/hook/authorized-keys", token=world.host_token, body=body
    )
    if status != 200 or not answer["keys"]:
        raise RuntimeError(f"hook endpoint does not allow the approved key: {status} {answer}")
    return Target("/api/v1/hook/authorized-keys", "POST", json.dumps(body), world.host_token)


def measure(
    ctx,
    world,
    *,
    label: str,
    connections: int | None = None,
    healthz: bool = True,  # noqa: ANN001
) -> tuple[dict[str, dict], list[str]]:
    """Interleaved load rounds of the no-op, /healthz and the hook endpoint; stats per case."""
    opts = ctx.options
    conns = connections or opts.get("connections", 16)
    rounds = 2 if ctx.quick else opts.get("rounds", 5)
    seconds = 1.0 if ctx.quick else opts.get("duration", 3.0)
    targets = {
        f"{label}no-op GET {NOOP_PATH}": Target(NOOP_PATH),
        f"{label}GET /healthz (SELECT 1)": Target("/healthz"),
        f"{label}POST /api/v1/hook/authorized-keys": hook_target(world),
    }
    if not healthz:
        del targets[f"{label}GET /healthz (SELECT 1)"]
    ctx.log(f"P3{label}: {rounds} rounds x {seconds:g} s per endpoint, {conns} connection(s)")
    runs = interleaved_load(
        world.svc.url,
        targets,
        rounds=rounds,
        seconds=seconds,
        connections=conns,
        max_responses=MAX_RESPONSES,
        log=ctx.log,
    )
    return {name: summarize_load(r) for name, r in runs.items()}, list(targets)


def run(ctx) -> dict:  # noqa: ANN001
    workers = ctx.options.get("workers", 1)
    world = build_world(ctx.work / "p3", approved=1, noop_route=True, workers=workers)
    try:
        cases, (noop, health, hook) = measure(ctx, world, label="")
        # One connection: no queueing, so p50 is the service's own time per call.
        single, (noop1, hook1) = measure(
            ctx, world, label="1 connection: ", connections=1, healthz=False
        )
        cases.update(single)
    finally:
        world.close()
    ratio_cases = {n: {"rps": c["rps"]} for n, c in cases.items()}
    rows = [
        compare(
            "hook checks/s / no-op requests/s",
            hook,
            noop,
            ratio_cases,
            key="rps",
            target=TARGET_RATIO,
            higher_is_better=True,
        ),
        value_row("hook checks/s", cases[hook]["rps"], "/s", target=TARGET_RPS),
        value_row("no-op requests/s (same server, same load)", cases[noop]["rps"], "/s"),
        value_row("hook p50 latency", cases[hook]["median"], "ms", higher_is_better=False),
        value_row("hook p99 latency", cases[hook]["p99"], "ms", higher_is_better=False),
        compare("hook p99 / no-op p99", hook, noop, cases, key="p99"),
        compare("hook checks/s / GET /healthz requests/s", hook, health, ratio_cases, key="rps"),
        compare("1 connection: hook p50 / no-op p50", hook1, noop1, cases, key="median"),
        value_row(
            "1 connection: hook p50 latency", cases[hook1]["median"], "ms", higher_is_better=False
        ),  # fmt: skip
    ]
    return {
        "title": "service throughput",
        "rows": rows,
        "cases": cases,
        "workers": workers,
        "notes": [
            "latency percentiles are wrk's per round; the medians across rounds are shown",
            f"service worker processes: {workers} (jit-server serve --workers; "
            "the no-op is served by the same processes)",
        ],
    }
