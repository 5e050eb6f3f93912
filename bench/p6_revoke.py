"""P6: from `jit revoke` returning to the session's sshd gone, through the host agent's stream.

A real sshd (Debian's PAM stack, the hooks) on 127.0.0.1, a real HTTPS service,
``jit-hooks agent`` as a process on the sandbox's config, and N live ``ssh ...
sleep`` sessions, one approval each. The enforce timer does not run. One at a
time, each approval is revoked through the API; the clock starts when the
revoke call returns and stops when the session's sshd monitor process (the
connection id's pid, watched through a pidfd) has exited. Target: p99 <= 2 s
over >= 50 sessions (issue 14).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import cast

from bench.report import value_row
from bench.server import BenchService
from bench.sshd import HookedSshd
from bench.stats import summarize
from bench.world import build_world

AGENT = "jit-hooks-agent"
WAIT = 60.0  # seconds any one step may take before the run fails


def _wait(predicate, what: str, timeout: float = WAIT):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"P6: gave up waiting: {what}")
        time.sleep(0.05)


def _gone_after(pid: int, t0: float, timeout: float) -> float | None:
    """Seconds from ``t0`` (perf_counter) until process ``pid`` exits; None past ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return time.perf_counter() - t0
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)  # readable once the process has exited
        return time.perf_counter() - t0 if poller.poll(int(timeout * 1000)) else None
    finally:
        os.close(fd)


def run(ctx) -> dict:  # noqa: ANN001
    n = 5 if ctx.quick else max(50, ctx.options.get("sessions", 50) or 50)
    box = world = agent = None
    sessions: list[subprocess.Popen] = []
    try:
        box = HookedSshd(max_startups=f"{n + 20}:30:{n + 40}", hooksd=True)
        login = box.add_account("deploy")
        ctx.log(f"P6: seeding {n} people with one approval each")
        world = build_world(ctx.work / "p6", approved=n, login=login, sink=False, tls=True)
        box.use_world(world)
        svc = cast(BenchService, world.svc)
        agent = subprocess.Popen(
            [sys.executable, "-m", "jit_hooks.cli.admin", "agent", "--config",
             str(box.config_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        box.sink.wait_for(r"action=stream state=open", ident=AGENT, timeout=WAIT)

        people = [f"req{i}" for i in range(n)]
        rids = {}
        for who in people:
            mine = world.call(who, "GET", "/api/v1/requests?state=approved")["requests"]
            rids[who] = mine[0]["id"]
        ctx.log(f"P6: opening {n} ssh sessions")
        for who in people:
            argv = box.ssh_args(
                login, "-i", str(world.keys[who].path), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no",
            )  # fmt: skip
            sessions.append(
                subprocess.Popen(
                    [*argv, "sleep 3600"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            )

        def connection(rid: int) -> str | None:
            rows = svc.sql(
                "SELECT connection FROM sessions WHERE request_id = ? AND closed_at IS NULL",
                (rid,),
            )
            return rows[0][0] if rows else None

        conns = {
            who: _wait(lambda r=rids[who]: connection(r), f"session of {who}") for who in people
        }
        ctx.log("P6: revoking one approval at a time")
        latencies, missed = [], 0
        for who in people:
            pid = int(conns[who].split(":")[0])
            world.call("approver", "POST", f"/api/v1/requests/{rids[who]}/revoke", {})
            gone = _gone_after(pid, time.perf_counter(), WAIT)
            if gone is None:
                missed += 1
            else:
                latencies.append(gone)
        ended = sum(1 for p in sessions if p.wait(timeout=WAIT) is not None)
        stats = summarize([x * 1000 for x in latencies]) if latencies else None
        rows = []
        if stats:
            rows.append(
                value_row(
                    f"P6 revoke returned -> sshd gone, p99 over {len(latencies)} sessions",
                    round(stats["p99"], 1),
                    "ms",
                    target=2000,
                    higher_is_better=False,
                )  # fmt: skip
            )
            rows.append(value_row("P6 median", round(stats["median"], 1), "ms"))
        rows.append(
            value_row(
                "P6 sessions not ended within 60 s", missed, "", target=0, higher_is_better=False
            )  # fmt: skip
        )
        return {
            "rows": rows,
            "cases": {"revoke -> sshd gone": {**stats, "unit": "ms"}} if stats else {},
            "sessions": n,
            "ssh_clients_ended": ended,
            "timer": "not running",
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        for p in sessions:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
        if world is not None:
            world.close()
        if box is not None:
            box.close()
