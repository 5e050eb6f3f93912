"""P2 hook start-up: one jit-authorized-keys run against a live local service ÷ bare python3.

Cases (interleaved): the packaged wrapper (`#!/usr/bin/python3 -I`) with a real
HTTP call to a real service, `python3 -I -c pass`, `python3 -c 'import
requests'`, the stdlib imports the hook needs, and the venv console-script
wrapper for comparison. Plus `-X importtime` top offenders of the hook.
"""

from __future__ import annotations

import subprocess

from bench.hooks import SYSTEM_PYTHON, install_wrappers
from bench.report import case_stats, compare
from bench.runner import command, interleave
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
    world = build_world(ctx.work / "p2", approved=1)
    try:
        bins = install_wrappers(ctx.work / "p2" / "bin")
        cfg = world.hook_config()
        key = world.keys["req0"]
        args = ["--config", str(cfg), world.login, key.fingerprint, key.key_type, key.blob]

        def expect_key(r: subprocess.CompletedProcess) -> None:
            # The figure counts only if the hook really let the key in.
            if r.returncode != 0 or key.blob.encode() not in r.stdout:
                raise RuntimeError(f"hook did not print the key: rc={r.returncode} {r.stderr!r}")

        hook = [SYSTEM_PYTHON, "-I", str(bins["jit-authorized-keys"]), *args]
        cases = {
            "hook: jit-authorized-keys (python3 -I wrapper)": command(hook, check=expect_key),
            "python3 -I -c pass": command([SYSTEM_PYTHON, "-I", "-c", "pass"]),
            "python3 -c 'import requests'": command([SYSTEM_PYTHON, "-c", "import requests"]),
            "python3 -I -c 'import http.client, ssl, json'": command(
                [SYSTEM_PYTHON, "-I", "-c", "import http.client, ssl, json"]
            ),
            "venv console script .venv/bin/jit-authorized-keys": command(
                [str(REPO / ".venv" / "bin" / "jit-authorized-keys"), *args], check=expect_key
            ),
        }
        names = list(cases)
        ctx.log(f"P2: {ctx.runs} interleaved rounds of {len(cases)} cases")
        samples = interleave(cases, runs=ctx.runs, progress=ctx.log)
        stats = case_stats(samples)
        rows = [
            compare(
                "jit-authorized-keys / python3 -I -c pass", names[0], names[1], stats, target=TARGET
            ),
            compare(
                "jit-authorized-keys / python3 -I -c pass", names[0], names[1], stats, key="p90"
            ),
            compare(
                "jit-authorized-keys / python3 -c 'import requests'", names[0], names[2], stats
            ),
            compare("stdlib http.client+ssl+json / python3 -I -c pass", names[3], names[1], stats),
            compare("venv console-script wrapper / packaged wrapper", names[4], names[0], stats),
        ]
        imports = importtime([SYSTEM_PYTHON, "-I", "-X", "importtime", *hook[2:]])
        return {
            "title": "hook start-up",
            "rows": rows,
            "cases": stats,
            "importtime": imports,
            "notes": [
                "hook = full run: config, token, HTTP POST to a real local service "
                "(which audits the call in SQLite), validate, print the key, state record",
            ],
        }
    finally:
        world.close()
