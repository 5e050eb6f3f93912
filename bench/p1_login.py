"""P1 login overhead: `ssh -p PORT user@127.0.0.1 true` with all hooks ÷ a static authorized_keys.

Real sshd processes from the e2e sandbox (jit_hooks/testing/sshd.py, bench/sshd.py),
all on Debian's full /etc/pam.d/sshd stack, run side by side and logins rotate
between them:

* the hooks as `jit-hooks enable` wires them: the AuthorizedKeysCommand and the
  PAM account hook, which also opens the session (--open-session), served by a
  real jit-hooksd (an installed host's default) talking to a real local service
  over HTTPS; the close_session hook runs after the client has gone;
* the same with the wiring before that ("before": a session-open hook, a fourth
  hook process on every login), so before and after come from one run;
* the same with no helper (each hook runs in its own Python process, the fallback);
* the same config and PAM stack minus the hooks, reading ~/.ssh/authorized_keys.
"""

from __future__ import annotations

import subprocess

from bench.hooks import SYSTEM_PYTHON
from bench.report import case_stats, compare
from bench.runner import command, interleave
from bench.sshd import HookedSshd, StaticSshd
from bench.world import build_world

TARGET = 1.15
HOOK_PROCESSES = 3  # AKC twice (find the key, verify the signature), account (opens the session)
LEGACY_HOOK_PROCESSES = 4  # + the session-open hook of the wiring before --open-session


def ssh_true(box, login: str, key_path) -> list[str]:  # noqa: ANN001
    return [
        *box.ssh_args(
            login, "-i", str(key_path), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "PasswordAuthentication=no",
        ),
        "true",
    ]  # fmt: skip


def hooks_ran(box) -> dict[str, int]:  # noqa: ANN001
    """Decision lines per hook (the proof that the hooks really ran, and which ones)."""
    sink = box.sink
    akc, account = sink.messages("jit-authorized-keys"), sink.messages("jit-pam-account")
    return {
        "jit-authorized-keys": sum("decision=allow" in m for m in akc),
        "jit-pam-account": sum("decision=allow" in m for m in account),
        "jit-pam-account session=open": sum(
            "decision=allow" in m and " session=open " in m
            for m in sink.messages("jit-pam-account")
        ),
        "jit-pam-session open": sum(
            "decision=allow event=open" in m for m in sink.messages("jit-pam-session")
        ),
        "jit-pam-session close": sum(
            "decision=close" in m and "reported=yes" in m
            for m in sink.messages("jit-pam-session")
        ),
    }  # fmt: skip


def run(ctx) -> dict:  # noqa: ANN001
    hooked = legacy = local = static = world = None
    try:
        hooked = HookedSshd(hooksd=True)
        legacy = HookedSshd(hooksd=True, legacy_session=True)
        local = HookedSshd()
        static = StaticSshd()
        login = hooked.add_account("deploy")  # unix accounts are machine-wide: all boxes use it
        world = build_world(ctx.work / "p1", approved=1, login=login, sink=False, tls=True)
        for box in (hooked, legacy, local):
            box.use_world(world)
        key = world.keys["req0"]
        static_login = static.add_account("deploy", keys=[key.line])

        def ok(r: subprocess.CompletedProcess) -> None:
            if r.returncode != 0:
                raise RuntimeError(f"login failed ({r.returncode}): {r.stderr[-300:]!r}")

        cases = {
            "ssh true, sshd with jit hooks (jit-hooksd)": command(
                ssh_true(hooked, login, key.path), check=ok
            ),
            "ssh true, sshd with static authorized_keys": command(
                ssh_true(static, static_login, key.path), check=ok
            ),
            "python3 -I -c pass": command([SYSTEM_PYTHON, "-I", "-c", "pass"]),
            "ssh true, jit hooks with a session-open hook (before, jit-hooksd)": command(
                ssh_true(legacy, login, key.path), check=ok
            ),
            "ssh true, sshd with jit hooks, no helper (in-process)": command(
                ssh_true(local, login, key.path), check=ok
            ),
            "python3 -IS -c pass": command([SYSTEM_PYTHON, "-IS", "-c", "pass"]),
        }
        names = list(cases)
        runs = max(ctx.runs, 3)
        ctx.log(f"P1: {runs} interleaved rounds of {len(cases)} cases")
        samples = interleave(cases, runs=runs, progress=ctx.log)
        stats = case_stats(samples)
        ran = {
            "hooked": hooks_ran(hooked),
            "before": hooks_ran(legacy),
            "no_helper": hooks_ran(local),
        }
        logins = runs + 2  # + warm-up
        for which, counts in ran.items():
            if counts["jit-pam-account"] < logins or counts["jit-authorized-keys"] < logins:
                raise RuntimeError(f"the hooks did not run on every login ({which}): {ran}")
        for which in ("hooked", "no_helper"):
            if (
                ran[which]["jit-pam-account session=open"] < logins
                or ran[which]["jit-pam-session open"]
            ):
                raise RuntimeError(f"the account hook did not open every session ({which}): {ran}")
        if ran["before"]["jit-pam-session open"] < logins:
            raise RuntimeError(f"the session-open hook did not run on every 'before' login: {ran}")
        for box in (hooked, legacy):
            via = sum("via=hooksd" in m for m in box.sink.messages("jit-pam-account"))
            if via < logins:
                raise RuntimeError(f"the helper served {via} of {logins} account checks")
        static_median = stats[names[1]]["median"]
        floor = {
            "floor": {"median": static_median + HOOK_PROCESSES * stats[names[5]]["median"]},
            "floor -I": {"median": static_median + HOOK_PROCESSES * stats[names[2]]["median"]},
            "floor before": {
                "median": static_median + LEGACY_HOOK_PROCESSES * stats[names[5]]["median"]
            },
            names[1]: stats[names[1]],
        }
        rows = [
            compare(
                "login with hooks / static authorized_keys",
                names[0],
                names[1],
                stats,
                target=TARGET,
            ),
            compare(
                "login with hooks / static authorized_keys", names[0], names[1], stats, key="p90"
            ),
            compare(
                "before (session-open hook) / static authorized_keys", names[3], names[1], stats
            ),
            compare("login with hooks / before (session-open hook)", names[0], names[3], stats),
            compare(
                "no helper (in-process hooks) / static authorized_keys", names[4], names[1], stats
            ),
            compare(
                f"floor: static + {HOOK_PROCESSES} python3 -IS starts / static",
                "floor",
                names[1],
                floor,
            ),
            compare(
                f"floor: static + {HOOK_PROCESSES} python3 -I starts / static",
                "floor -I",
                names[1],
                floor,
            ),
            compare(
                f"floor before: static + {LEGACY_HOOK_PROCESSES} python3 -IS starts / static",
                "floor before",
                names[1],
                floor,
            ),
        ]
        return {
            "title": "login overhead",
            "rows": rows,
            "cases": stats,
            "hook_lines": ran,
            "akc_runs_per_login": round(ran["hooked"]["jit-authorized-keys"] / logins, 2),
            "notes": [
                "all sshd: OpenSSH from Debian, own config/host key/PAM service, 127.0.0.1",
                "PAM stack of every sshd = a copy of Debian's /etc/pam.d/sshd; the hooked ones"
                " add the jit-hooks block where `jit-hooks enable` puts it",
                "hooks: AKC x2 + PAM account (opens the session); close_session runs after"
                " the client has gone; 'before' adds the session-open hook",
            ],
        }
    finally:
        for thing in (world, hooked, legacy, local, static):
            if thing is not None:
                thing.close()
