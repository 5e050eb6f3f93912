"""HTTP load on loopback with wrk (Debian's package) and bench/wrk/call.lua."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).parent / "wrk" / "call.lua"


@dataclass(frozen=True)
class Target:
    """One endpoint to load: method, path, JSON body, bearer token.

    ``addrs`` ("127.0.0.1:PORT", ...): wrk thread i connects to address i mod n
    instead of the base URL's (several replicas behind one wrk run).
    ``mix``: a file of "token<TAB>body" lines; each request then takes the next
    line (per thread, round robin) instead of ``body`` and ``token`` (many hosts
    and keys in one load: P3pg's fleet shape).
    """

    path: str
    method: str = "GET"
    body: str = ""
    token: str = ""
    addrs: tuple[str, ...] = ()
    mix: str = ""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(
    base_url: str,
    target: Target,
    *,
    seconds: float,
    connections: int,
    max_responses: int = 0,
    threads: int = 1,
) -> dict:
    """One bounded wrk run (time, and responses per thread if ``max_responses``).

    Returns wrk's summary: requests, duration, errors, latency percentiles (µs),
    plus ``rps``. Raises if any request failed: a figure made of errors is no figure.
    """
    if not have_wrk():
        raise RuntimeError("wrk is not installed (./scripts/bench installs it)")
    env = dict(os.environ)
    env.update(
        JB_METHOD=target.method,
        JB_BODY=target.body,
        JB_TOKEN=target.token,
        JB_MAX=str(max_responses),
        JB_ADDRS=",".join(target.addrs),
        JB_MIX=target.mix,
    )
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        base_url + target.path,
    ]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((x for x in r.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({r.returncode}): {r.stderr.strip()[-300:]} {r.stdout[-300:]}"
        )
    out = json.loads(line.split(" ", 1)[1])
    errors = sum(out[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors"))
    if errors or out["timeouts"]:
        raise RuntimeError(f"wrk saw errors on {target.path}: {out}")
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    return out


def interleaved_load(
    base_url: str,
    targets: dict[str, Target],
    *,
    rounds: int,
    seconds: float,
    connections: int,
    max_responses: int = 0,
    log=None,  # noqa: ANN001
) -> dict[str, list[dict]]:
    """``rounds`` wrk runs per target, alternating targets (rotating who goes first)."""
    names = list(targets)
    out: dict[str, list[dict]] = {n: [] for n in names}
    for i in range(rounds):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            res = wrk(
                base_url,
                targets[name],
                seconds=seconds,
                connections=connections,
                max_responses=max_responses,
            )
            out[name].append(res)
            if log:
                log(
                    f"  round {i + 1}/{rounds} {name}: {res['rps']:.0f}/s "
                    f"p50 {res['p50_us'] / 1000:.1f} ms p99 {res['p99_us'] / 1000:.1f} ms"
                )
    return out


def summarize_load(runs: list[dict]) -> dict:
    """Medians across rounds of throughput and of each round's latency percentiles."""
    from bench.stats import percentile

    def med(key: str, scale: float = 1.0) -> float:
        return percentile([r[key] * scale for r in runs], 50)

    return {
        "unit": "ms",
        "n": sum(r["requests"] for r in runs),
        "rounds": len(runs),
        "rps": med("rps"),
        "rps_min": min(r["rps"] for r in runs),
        "median": med("p50_us", 1e-3),
        "p90": med("p90_us", 1e-3),
        "p99": med("p99_us", 1e-3),
        "max": max(r["max_us"] for r in runs) / 1000,
    }
