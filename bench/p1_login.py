"""P1 login overhead: `ssh -p PORT user@127.0.0.1 true` with all hooks ÷ a static authorized_keys.

Three real sshd processes from the e2e sandbox (jit_hooks/testing/sshd.py) run side
by side: one with the AuthorizedKeysCommand, PAM account and PAM session hooks
served by a real jit-hooksd (an installed host's default) that talks to a real
local service over HTTPS; the same with no helper (each hook runs in its own
Python process, the fallback); and the same config and PAM stack minus the
hooks, reading ~/.ssh/authorized_keys. Logins rotate between them.
"""

from __future__ import annotations

import subprocess

from bench.hooks import SYSTEM_PYTHON
from bench.report import case_stats, compare
from bench.runner import command, interleave
from bench.sshd import HookedSshd, StaticSshd
from bench.world import build_world

TARGET = 1.25
HOOK_PROCESSES = 4  # AKC twice (find the key, verify the signature), account, session open


def ssh_true(box, login: str, key_path) -> list[str]:  # noqa: ANN001
    return [
        *box.ssh_args(
            login, "-i", str(key_path), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "PasswordAuthentication=no",
        ),
        "true",
    ]  # fmt: skip


def hooks_ran(box) -> dict[str, int]:  # noqa: ANN001
    """Decision lines per hook program (the proof that the hooks really ran)."""
    counts: dict[str, int] = {}
    for ident in ("jit-authorized-keys", "jit-pam-account", "jit-pam-session"):
        counts[ident] = sum("decision=allow" in m for m in box.sink.messages(ident))
    return counts


def run(ctx) -> dict:  # noqa: ANN001
    hooked = local = static = world = None
    try:
        hooked = HookedSshd(hooksd=True)
        local = HookedSshd()
        static = StaticSshd()
        login = hooked.add_account("deploy")  # unix accounts are machine-wide: `local` uses it too
        world = build_world(ctx.work / "p1", approved=1, login=login, sink=False, tls=True)
        for box in (hooked, local):
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
        ran = hooks_ran(hooked)
        ran_local = hooks_ran(local)
        logins = runs + 2  # + warm-up
        for counts in (ran, ran_local):
            if counts["jit-pam-account"] < logins or counts["jit-authorized-keys"] < logins:
                raise RuntimeError(f"the hooks did not run on every login: {ran} {ran_local}")
        via = sum("via=hooksd" in m for m in hooked.sink.messages("jit-pam-account"))
        if via < logins:
            raise RuntimeError(f"the helper served {via} of {logins} account checks")
        floor = {
            "floor": {
                "median": stats[names[1]]["median"] + HOOK_PROCESSES * stats[names[4]]["median"]
            },
            "floor -I": {
                "median": stats[names[1]]["median"] + HOOK_PROCESSES * stats[names[2]]["median"]
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
                "no helper (in-process hooks) / static authorized_keys", names[3], names[1], stats
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
        ]
        return {
            "title": "login overhead",
            "rows": rows,
            "cases": stats,
            "hook_lines": ran,
            "hook_lines_no_helper": ran_local,
            "akc_runs_per_login": round(ran["jit-authorized-keys"] / logins, 2),
            "notes": [
                "both sshd: OpenSSH from Debian, own config/host key/PAM service, 127.0.0.1",
                "baseline PAM stack = the hooked one with pam_permit in place of pam_exec lines",
            ],
        }
    finally:
        for thing in (world, hooked, local, static):
            if thing is not None:
                thing.close()
