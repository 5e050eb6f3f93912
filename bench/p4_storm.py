"""P4 login storm: N concurrent real ssh logins against the sshd with hooks (via jit-hooksd).

Half the people hold an active approval, half only a pending request. Every
login is judged from the outside (did the command run?) and explained from the
hooks' syslog lines:

* wrong decision: a login without approval got in, or the service *decided*
  "deny" for a key that holds an approval (must both be 0);
* overload denial: an approved login refused because a hook failed (timeout,
  5xx, ...) or sshd dropped the connection (MaxStartups, LoginGraceTime) -
  fail-closed behaviour under load, counted and reported.

sshd's MaxStartups defaults to 10:30:100 (random early drop of unauthenticated
connections past 10); the storm raises it so the hooks and the service, not
sshd's admission control, take the load. The value used is in the results.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from bench.p1_login import ssh_true
from bench.report import value_row
from bench.server import BenchService
from bench.sshd import HookedSshd
from bench.stats import summarize
from bench.world import build_world

_KV = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
# Hook log reasons that are a decision of the service, as opposed to a failure.
DECISION_REASONS = {"no_approval", "dropped", "service_denied"}
SSHD_DROP = ("kex_exchange_identification", "Connection reset", "Connection closed",
             "banner exchange", "Connection timed out")  # fmt: skip


def fields(message: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _KV.findall(message)}


def metric_totals(text: str, name: str, label: str) -> dict[str, float]:
    """Sum a Prometheus counter by one label (tiny parser for our own /metrics)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            m = re.search(rf'{label}="([^"]*)"', labels)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(value)
    return out


def run(ctx) -> dict:  # noqa: ANN001
    n = 20 if ctx.quick else ctx.options.get("storm", 200)
    people = 4 if ctx.quick else 20
    max_startups = f"{n + 50}:30:{n + 100}"
    box = world = None
    try:
        box = HookedSshd(max_startups=max_startups, hooksd=True)
        login = box.add_account("deploy")
        world = build_world(
            ctx.work / "p4",
            approved=people // 2,
            denied=people - people // 2,
            login=login,
            sink=False,
            tls=True,
        )
        box.use_world(world)
        names = [f"req{i}" for i in range(people)]
        approved = {f"req{i}" for i in range(people // 2)}
        fp_owner = {world.keys[p].fingerprint: p for p in names}
        svc = cast(BenchService, world.svc)  # tls=True: always the bench's service
        before = metric_totals(svc.get_text("/metrics"), "jit_http_responses_total", "status")

        barrier = threading.Barrier(n)

        def login_once(i: int) -> dict:
            who = names[i % people]
            argv = ssh_true(box, login, world.keys[who].path)
            argv[-1] = f"echo jit-ok-{i}"
            barrier.wait()
            t0 = time.perf_counter()
            r = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                               stdin=subprocess.DEVNULL)  # fmt: skip
            return {
                "who": who,
                "approved": who in approved,
                "in": r.returncode == 0 and f"jit-ok-{i}" in r.stdout,
                "seconds": time.perf_counter() - t0,
                "stderr": r.stderr.strip()[-200:],
            }

        ctx.log(
            f"P4: {n} concurrent logins, {people} people ({len(approved)} approved), "
            f"MaxStartups {max_startups}"
        )
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(login_once, range(n)))
        wall = time.perf_counter() - t0
        time.sleep(1.0)  # let the last session-close hooks log

        # What the hooks said, per hook and reason; decisions against approved keys.
        reasons: Counter = Counter()
        wrong_deny_lines = 0
        for _pri, ident, msg in list(box.sink.lines):
            f = fields(msg)
            reasons[
                f"{ident} {f.get('decision', '?')} {f.get('reason', '-')} via={f.get('via', '-')}"
            ] += 1
            owner = fp_owner.get(f.get("fingerprint", ""))
            if f.get("decision") == "deny" and f.get("reason") in DECISION_REASONS:
                if owner in approved:
                    wrong_deny_lines += 1
        wrong_allow = sum(1 for r in results if r["in"] and not r["approved"])
        refused_approved = [r for r in results if r["approved"] and not r["in"]]
        sshd_drops = sum(1 for r in refused_approved if any(s in r["stderr"] for s in SSHD_DROP))
        hook_denials = len(refused_approved) - sshd_drops
        correct = sum(1 for r in results if r["in"] == r["approved"])

        status, _ = world.svc.call("GET", "/healthz")
        metrics_text = svc.get_text("/metrics")
        after = metric_totals(metrics_text, "jit_http_responses_total", "status")
        statuses = {k: v - before.get(k, 0.0) for k, v in after.items()}
        seconds = summarize([r["seconds"] for r in results])
        rows = [
            value_row(
                "wrong decisions (unapproved in + service denied approved)",
                wrong_allow + wrong_deny_lines,
                "",
                target=0,
                higher_is_better=False,
            ),
            value_row(
                "overload denials of approved logins (fail closed)", len(refused_approved), ""
            ),
            value_row("  of which sshd dropped the connection", sshd_drops, ""),
            value_row("  of which a hook failed (timeout/5xx/...)", hook_denials, ""),
            value_row("correct outcomes", correct, f"/ {n}"),
            value_row("storm wall time", wall, "s", higher_is_better=False),
            value_row("login time p50", seconds["median"], "s", higher_is_better=False),
            value_row("login time p99", seconds["p99"], "s", higher_is_better=False),
        ]
        return {
            "title": "login storm",
            "rows": rows,
            "cases": {"storm login (s)": {**seconds, "unit": "s"}},
            "logins": n,
            "people": people,
            "approved_people": len(approved),
            "max_startups": max_startups,
            "wrong_allow": wrong_allow,
            "wrong_deny_lines": wrong_deny_lines,
            "hook_log_reasons": dict(reasons.most_common()),
            "service_http_statuses": {k: v for k, v in statuses.items() if v},
            "service_healthy_after": status == 200,
            "refused_approved_stderr": Counter(
                r["stderr"][-80:] for r in refused_approved
            ).most_common(5),
        }
    finally:
        for thing in (world, box):
            if thing is not None:
                thing.close()
