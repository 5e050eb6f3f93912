"""P7: many idle host streams on one replica: memory, idle CPU, and one event's fan-out.

One real HTTPS service (SQLite). N hosts (10,000; --quick 50) are seeded in one
transaction, each with its own host token and the label fleet=p7. One asyncio
process (not N threads) opens N ``GET /api/v1/hook/stream`` connections, one
per host token, and reads them. Measured on the service process (/proc):

* extra RSS: after all N streams are open minus before the first;
* idle CPU per stream per minute: user+system CPU over an idle minute (heartbeats
  only), divided by N and by the minutes;
* fan-out: one approval covering all N hosts (a label selector request) is
  revoked; the time from the revoke call returning to the last of the N streams
  receiving its event.

Targets (issue 14): extra memory within 1 GiB, fan-out within 2 s.
"""

from __future__ import annotations

import asyncio
import os
import resource
import ssl
import threading
import time
from pathlib import Path
from typing import cast

from bench.report import value_row
from bench.server import BenchService
from bench.world import build_world

FLEET = "p7"
POLICY = """\
[[policy]]
name = "p7-fleet"
labels = {{ fleet = "{fleet}" }}
logins = ["deploy"]
requesters = {{ roles = ["requester"] }}
approvers = {{ roles = ["approver"] }}
approvals_required = 1
max_duration = 14400
reason_required = false
"""
# How long to wait for any one phase before giving up (connecting 10,000 streams
# over TLS takes a while on two cores).
PHASE_TIMEOUT = 600.0


def _raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, need)
    try:  # root may raise the hard limit too
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        want = min(hard, want)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _seed_hosts(svc: BenchService, n: int) -> list[str]:
    """N hosts labelled fleet=p7 with a token each, in one transaction (as `host add` does)."""
    from jit_hooks.server import store
    from jit_hooks.server.db import make_engine

    engine = make_engine(svc.database_url or f"sqlite:///{svc.data_dir / 'jit.db'}")
    try:
        with engine.begin() as conn:
            now = int(time.time())
            return [
                store.add_host(
                    conn, name=f"p7-{i:05d}", labels={"fleet": FLEET}, actor="bench", now=now
                )  # fmt: skip
                for i in range(n)
            ]
    finally:
        engine.dispose()


class Streams:
    """N streams read by one asyncio loop in a thread; records when each saw a change."""

    def __init__(self, host: str, port: int, ca: Path, tokens: list[str]) -> None:
        self.host, self.port, self.tokens = host, port, tokens
        self.context = ssl.create_default_context(cafile=str(ca))
        self.synced = 0
        self.failed = 0
        self.changes: dict[int, float] = {}  # stream index -> perf_counter at the change
        # uvloop (the service's own loop, in the server extra) where present: the
        # reader must not be slower than the service it measures.
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.loop_name = type(self.loop).__module__.split(".")[0]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Future] = []

    async def _one(self, i: int, token: str, sem: asyncio.Semaphore) -> None:
        try:
            async with sem:  # bounded concurrent handshakes
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.context, limit=1 << 16
                )
                self._writers.append(writer)
                writer.write(
                    (
                        f"GET /api/v1/hook/stream HTTP/1.1\r\nHost: {self.host}\r\n"
                        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
                    ).encode()
                )
                await writer.drain()
                status = await reader.readline()
                if b" 200 " not in status:
                    raise RuntimeError(status)
                while (await reader.readline()).strip():
                    pass  # headers
                while b"event: sync" not in await reader.readline():
                    pass
                self.synced += 1
            while True:
                line = await reader.readline()
                if not line:
                    return
                if b"event: change" in line:
                    self.changes[i] = time.perf_counter()
        except (OSError, RuntimeError, ssl.SSLError, asyncio.IncompleteReadError):
            self.failed += 1

    def open(self) -> None:
        async def all_of() -> None:
            sem = asyncio.Semaphore(200)
            self._tasks = [
                asyncio.ensure_future(self._one(i, t, sem)) for i, t in enumerate(self.tokens)
            ]

        asyncio.run_coroutine_threadsafe(all_of(), self.loop).result()

    def close(self) -> None:
        async def shut() -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for w in self._writers:
                w.close()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


def _wait(predicate, what: str, timeout: float = PHASE_TIMEOUT) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"P7: gave up waiting: {what}")
        time.sleep(0.2)


def run(ctx) -> dict:  # noqa: ANN001
    n = 50 if ctx.quick else ctx.options.get("streams", 10_000) or 10_000
    idle = 5.0 if ctx.quick else 60.0
    limit = _raise_nofile(2 * n + 1024)  # the service (a child) inherits it
    world = streams = None
    try:
        world = build_world(ctx.work / "p7", approved=0, denied=1, sink=False, tls=True)
        svc = cast(BenchService, world.svc)
        assert svc.proc is not None
        pid = svc.proc.pid
        policy = ctx.work / "p7" / "policy.toml"
        policy.write_text(POLICY.format(fleet=FLEET))
        svc.admin("policy", "add", str(policy))
        ctx.log(f"P7: seeding {n} hosts with a token each (RLIMIT_NOFILE {limit})")
        tokens = _seed_hosts(svc, n)
        req = world.call(
            "req0", "POST", "/api/v1/requests",
            {"selector": {"fleet": FLEET}, "login": "deploy", "reason": "p7",
             "duration_seconds": 3600},
        )  # fmt: skip
        world.call("approver", "POST", f"/api/v1/requests/{req['id']}/approve", {})

        # Warm the service (imports, pools) before the baseline.
        svc.call("GET", "/api/v1/hook/ping", token=tokens[0])
        time.sleep(1.0)
        rss_before = _rss_kib(pid)
        ctx.log(f"P7: opening {n} streams (service RSS {rss_before / 1024:.0f} MiB)")
        ca = cast("tuple[Path, Path, Path]", svc.tls)[2]
        t0 = time.perf_counter()
        streams = Streams("127.0.0.1", svc.port, ca, tokens)
        streams.open()
        _wait(lambda: streams.synced + streams.failed >= n, f"{n} streams open")
        connect_s = time.perf_counter() - t0
        if streams.failed:
            raise RuntimeError(f"P7: {streams.failed} of {n} streams failed to open")
        time.sleep(2.0)
        rss_after = _rss_kib(pid)
        ctx.log(f"P7: {n} streams open in {connect_s:.1f} s; idle {idle:.0f} s")

        cpu0, w0 = _cpu_seconds(pid), time.perf_counter()
        time.sleep(idle)
        cpu1, w1 = _cpu_seconds(pid), time.perf_counter()
        minutes = (w1 - w0) / 60
        cpu_ms_per_stream_min = (cpu1 - cpu0) * 1000 / n / minutes

        ctx.log("P7: revoking the approval that covers every host")
        world.call("approver", "POST", f"/api/v1/requests/{req['id']}/revoke", {})
        returned = time.perf_counter()
        _wait(lambda: len(streams.changes) >= n, "every stream got the event", timeout=120)
        arrivals = sorted(t - returned for t in streams.changes.values())
        fan_out = max(0.0, arrivals[-1])
        extra_mib = (rss_after - rss_before) / 1024
        return {
            "rows": [
                value_row(
                    f"P7 extra service RSS, {n} idle streams",
                    round(extra_mib, 1),
                    "MiB",
                    target=1024,
                    higher_is_better=False,
                ),  # fmt: skip
                value_row("P7 RSS per stream", round((rss_after - rss_before) / n, 1), "KiB"),
                value_row(
                    "P7 idle CPU per stream per minute", round(cpu_ms_per_stream_min, 4), "ms"
                ),  # fmt: skip
                value_row(
                    f"P7 one event to all {n} streams (last arrival)",
                    round(fan_out * 1000, 1),
                    "ms",
                    target=2000,
                    higher_is_better=False,
                ),  # fmt: skip
            ],
            "streams": n,
            "connect_seconds": round(connect_s, 1),
            "rss_kib": {"before": rss_before, "after": rss_after},
            "idle_seconds": round(w1 - w0, 1),
            "idle_cpu_seconds": round(cpu1 - cpu0, 3),
            "fan_out_ms": {
                "first": round(max(0.0, arrivals[0]) * 1000, 1),
                "median": round(max(0.0, arrivals[len(arrivals) // 2]) * 1000, 1),
                "last": round(fan_out * 1000, 1),
            },
            "client_loop": streams.loop_name,
            "tls": True,
            "database": "sqlite",
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        if streams is not None:
            streams.close()
        if world is not None:
            world.close()
