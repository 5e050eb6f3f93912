"""P2 hook start-up: one jit-authorized-keys run against a live local service ÷ bare python3.

Cases (interleaved): the packaged thin-client wrapper (`#!/usr/bin/python3 -IS`)
with a real jit-hooksd behind it (an installed host's default) on sshd's first
run of a connection (the helper makes a real HTTPS call to a real service);
the same wrapper with no helper listening (it runs the hook in its own
process, the fallback); `python3 -I -c pass`; `python3 -c 'import requests'`;
`python3 -IS -c pass` (the thin client's own floor); the stdlib floor of an
in-process HTTPS + JSON + TOML hook; and sshd's second run of the same
connection (the helper reprints the first answer without asking the service).
Plus `-X importtime` top offenders of both paths.
"""

from __future__ import annotations

import os
import subprocess
import time

from bench.hooks import SYSTEM_PYTHON, install_wrappers, interpreter, start_hooksd
from bench.report import case_stats, compare
from bench.runner import Case, command, interleave
from bench.world import build_world

TARGET = 3.0


def importtime(argv: list[str], *, top: int = 12) -> dict:
    """Parse `-X importtime` output: top modules by self time and top-level by cumulative."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    rows = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:") :].split("|", 2)
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((int(self_us), int(cum_us), name.strip(), depth))
    by_self = sorted(rows, key=lambda x: -x[0])[:top]
    top_level = sorted((x for x in rows if x[3] <= 1), key=lambda x: -x[1])[:top]
    return {
        "total_ms": round(sum(x[0] for x in rows) / 1000, 2),
        "by_self_ms": [[n, round(s / 1000, 2)] for s, _c, n, _d in by_self],
        "top_level_cumulative_ms": [[n, round(c / 1000, 2)] for _s, c, n, _d in top_level],
    }


def run(ctx) -> dict:  # noqa: ANN001
    world = build_world(ctx.work / "p2", approved=1, tls=True)
    daemon = None
    try:
        hooksd_socket = ctx.work / "p2" / "hooksd.sock"
        bins = install_wrappers(ctx.work / "p2" / "bin", hooksd_socket)
        local = install_wrappers(ctx.work / "p2" / "bin-fallback", ctx.work / "p2" / "no.sock")
        assert world.sink is not None
        daemon = start_hooksd(
            hooksd_socket, syslog_socket=world.sink.path, log_path=ctx.work / "p2" / "hooksd.log"
        )
        cfg = world.hook_config()
        key = world.keys["req0"]
        args = ["--config", str(cfg), world.login, key.fingerprint, key.key_type, key.blob]

        def expect_key(r: subprocess.CompletedProcess) -> None:
            # The figure counts only if the hook really let the key in.
            if r.returncode != 0 or key.blob.encode() not in r.stdout:
                raise RuntimeError(f"hook did not print the key: rc={r.returncode} {r.stderr!r}")

        wrapper = bins["jit-authorized-keys"]
        hook = [*interpreter(wrapper), str(wrapper), *args]
        state = cfg.parent / "state"

        def first_run(argv: list[str]) -> Case:
            """sshd's first AKC run of a connection: no record yet, so it asks the service.

            Every run here has the same parent (this process), i.e. the same
            connection id: drop the record the previous run wrote (~0.1 ms).
            """
            run = command(argv, check=expect_key)

            def case() -> None:
                for name in os.listdir(state):
                    os.unlink(state / name)
                run()

            return case

        in_process = [*interpreter(local["jit-authorized-keys"]), str(local["jit-authorized-keys"])]
        cases = {
            "hook via jit-hooksd, first run (asks the service)": first_run(hook),
            "python3 -I -c pass": command([SYSTEM_PYTHON, "-I", "-c", "pass"]),
            "python3 -c 'import requests'": command([SYSTEM_PYTHON, "-c", "import requests"]),
            "python3 -I -c 'import socket, ssl, json, tomllib'": command(
                [SYSTEM_PYTHON, "-I", "-c", "import socket, ssl, json, tomllib"]
            ),
            "hook in-process (no helper), first run": first_run([*in_process, *args]),
            "hook via jit-hooksd, sshd's second run (reprints the first answer)": command(
                hook, check=expect_key
            ),
            "python3 -IS -c pass": command([SYSTEM_PYTHON, "-IS", "-c", "pass"]),
        }
        names = list(cases)
        ctx.log(f"P2: {ctx.runs} interleaved rounds of {len(cases)} cases")
        samples = interleave(cases, runs=ctx.runs, progress=ctx.log)
        stats = case_stats(samples)
        time.sleep(0.5)  # let the sink read the last lines
        lines = world.sink.messages("jit-authorized-keys")
        reused = sum("reused=yes" in m for m in lines)
        asked = sum("decision=allow" in m and "reused=yes" not in m for m in lines)
        via = sum('via="hooksd"' in m or "via=hooksd" in m for m in lines)
        fallback = sum("via=fallback" in m for m in lines)
        if via < ctx.runs or fallback < ctx.runs:
            raise RuntimeError(f"hook runs not where expected: hooksd={via} fallback={fallback}")
        rows = [
            compare(
                "jit-authorized-keys / python3 -I -c pass", names[0], names[1], stats, target=TARGET
            ),  # fmt: skip
            compare(
                "jit-authorized-keys / python3 -I -c pass", names[0], names[1], stats, key="p90"
            ),  # fmt: skip
            compare(
                "jit-authorized-keys / python3 -c 'import requests'", names[0], names[2], stats
            ),  # fmt: skip
            compare("AKC second run (reprint) / python3 -I -c pass", names[5], names[1], stats),
            compare(
                "thin client floor: python3 -IS -c pass / python3 -I -c pass",
                names[6],
                names[1],
                stats,
            ),  # fmt: skip
            compare("no helper (in-process hook) / python3 -I -c pass", names[4], names[1], stats),
            compare(
                "in-process floor: import socket, ssl, json, tomllib / python3 -I -c pass",
                names[3],
                names[1],
                stats,
            ),  # fmt: skip
        ]
        for name in os.listdir(state):
            os.unlink(state / name)
        imports = importtime([*interpreter(wrapper), "-X", "importtime", str(wrapper), *args])
        for name in os.listdir(state):
            os.unlink(state / name)
        imports_local = importtime([*in_process[:-1], "-X", "importtime", in_process[-1], *args])
        return {
            "title": "hook start-up",
            "rows": rows,
            "cases": stats,
            "importtime": imports,
            "importtime_in_process": imports_local,
            "hook_runs": {
                "asked_the_service": asked,
                "reprinted": reused,
                "via_hooksd": via,
                "in_process": fallback,
            },
            "notes": [
                "hook = full run: config, token, HTTPS POST to a real local service "
                "(which audits the call in SQLite), validate, print the key, state record; "
                "via jit-hooksd the helper does that and the wrapper relays its answer",
            ],
        }
    finally:
        if daemon is not None:
            daemon.stop()
        world.close()
