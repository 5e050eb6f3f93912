"""P2 hook start-up: one jit-authorized-keys run against a live local service ÷ bare python3.

Cases (interleaved): the packaged wrapper (`#!/usr/bin/python3 -IS`) on sshd's
first run of a connection (a real HTTP call to a real service), `python3 -I -c
pass`, `python3 -c 'import requests'`, the stdlib floor of an HTTPS + JSON + TOML
hook, the venv console-script wrapper, and sshd's second run of the same
connection (the hook reprints the first answer without asking the service),
and the same wrapper run by `python3 -I` (site on: what `-S` saves).
Plus `-X importtime` top offenders of the hook.
"""

from __future__ import annotations

import os
import subprocess
import time

from bench.hooks import SYSTEM_PYTHON, install_wrappers, interpreter
from bench.report import case_stats, compare
from bench.runner import Case, command, interleave
from bench.world import REPO, build_world

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
    try:
        bins = install_wrappers(ctx.work / "p2" / "bin")
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

        cases = {
            "hook: jit-authorized-keys, first run (asks the service)": first_run(hook),
            "python3 -I -c pass": command([SYSTEM_PYTHON, "-I", "-c", "pass"]),
            "python3 -c 'import requests'": command([SYSTEM_PYTHON, "-c", "import requests"]),
            "python3 -I -c 'import socket, ssl, json, tomllib'": command(
                [SYSTEM_PYTHON, "-I", "-c", "import socket, ssl, json, tomllib"]
            ),
            "venv console script, first run": first_run(
                [str(REPO / ".venv" / "bin" / "jit-authorized-keys"), *args]
            ),
            "hook: sshd's second run (reprints the first answer)": command(hook, check=expect_key),
            "hook, first run, by python3 -I (site on)": first_run(
                [SYSTEM_PYTHON, "-I", str(wrapper), *args]
            ),
        }
        names = list(cases)
        ctx.log(f"P2: {ctx.runs} interleaved rounds of {len(cases)} cases")
        samples = interleave(cases, runs=ctx.runs, progress=ctx.log)
        stats = case_stats(samples)
        time.sleep(0.5)  # let the sink read the last lines
        assert world.sink is not None
        lines = world.sink.messages("jit-authorized-keys")
        reused = sum("reused=yes" in m for m in lines)
        asked = sum("decision=allow" in m and "reused=yes" not in m for m in lines)
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
            compare(
                "floor: import socket, ssl, json, tomllib / python3 -I -c pass",
                names[3],
                names[1],
                stats,
            ),  # fmt: skip
            compare("AKC second run (reprint) / python3 -I -c pass", names[5], names[1], stats),
            compare("venv console-script wrapper / packaged wrapper", names[4], names[0], stats),
            compare(
                "packaged wrapper / the same by python3 -I (site on)", names[0], names[6], stats
            ),
        ]
        for name in os.listdir(state):
            os.unlink(state / name)
        imports = importtime([*interpreter(wrapper), "-X", "importtime", str(wrapper), *args])
        return {
            "title": "hook start-up",
            "rows": rows,
            "cases": stats,
            "importtime": imports,
            "hook_runs": {"asked_the_service": asked, "reprinted": reused},
            "notes": [
                "hook = full run: config, token, HTTP POST to a real local service "
                "(which audits the call in SQLite), validate, print the key, state record",
            ],
        }
    finally:
        world.close()
