"""Result rows, the printed tables and bench/results/*.json."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

from bench.stats import ratio, summarize

SCHEMA = 1


def compare(
    measure: str,
    candidate: str,
    baseline: str,
    cases: dict[str, dict],
    *,
    target: float | None = None,
    higher_is_better: bool = False,
    key: str = "median",
) -> dict:
    """One table row: ``cases[candidate][key] / cases[baseline][key]`` against a target."""
    r = ratio(cases[candidate][key], cases[baseline][key])
    return {
        "measure": measure,
        "candidate": candidate,
        "baseline": baseline,
        "statistic": key,
        "ratio": r,
        **_against(r, target, higher_is_better),
    }


def value_row(
    measure: str,
    value: float,
    unit: str,
    *,
    target: float | None = None,
    higher_is_better: bool = True,
) -> dict:
    """A row holding an absolute figure (checks/s, wrong decisions) instead of a ratio."""
    return {
        "measure": measure,
        "value": value,
        "unit": unit,
        **_against(value, target, higher_is_better),
    }


def _against(x: float, target: float | None, higher_is_better: bool) -> dict:
    """A row's ``target`` (as printed: ">= 2") and ``ok`` (None without a target)."""
    if target is None:
        return {"target": None, "ok": None}
    return {
        "target": (">= " if higher_is_better else "<= ") + f"{target:g}",
        "ok": x >= target if higher_is_better else x <= target,
    }


def case_stats(samples: dict[str, list[float]], scale: float = 1000.0) -> dict[str, dict]:
    """Summaries of wall-time samples (seconds), reported in ms by default."""
    return {name: summarize([s * scale for s in xs]) for name, xs in samples.items()}


def _fmt(x: float) -> str:
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    if float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _verdict(ok: bool | None) -> str:
    return {True: "ok", False: "MISS", None: "-"}[ok]


def table(results: dict[str, dict]) -> str:
    """The summary table (one line per figure) followed by per-case statistics."""
    lines = [f"{'bench':<6} {'figure':<58} {'value':>9} {'target':>8}  {'':4}"]
    for name, res in results.items():
        if "error" in res:
            lines.append(f"{name:<6} {'FAILED: ' + res['error'][:60]:<58}")
            continue
        for row in res.get("rows", []):
            if "ratio" in row:
                fig = f"{row['measure']} ({row['statistic']})"
                val = f"{row['ratio']:.2f}x"
            else:
                fig = row["measure"]
                val = f"{_fmt(row['value'])} {row['unit']}".strip()
            lines.append(
                f"{name:<6} {fig[:58]:<58} {val:>9} {row['target'] or '':>8}  {_verdict(row['ok'])}"
            )
    lines.append("")
    lines.append(
        f"{'bench':<6} {'case':<44} {'unit':>6} {'n':>6} {'median':>9} {'p90':>9} {'p99':>9}"
    )
    for name, res in results.items():
        for case, st in res.get("cases", {}).items():
            lines.append(
                f"{name:<6} {case[:44]:<44} {st.get('unit', 'ms'):>6} {st['n']:>6} "
                f"{_fmt(st['median']):>9} {_fmt(st['p90']):>9} {_fmt(st['p99']):>9}"
            )
    return "\n".join(lines)


def _first_line(argv: list[str]) -> str | None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text else None


def machine() -> dict:
    """Where the figures came from."""
    cpu = None
    try:
        m = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1) if m else None
    except OSError:
        pass
    mem_kb = None
    try:
        found = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_kb = int(found.group(1)) if found else None
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "openssh": _first_line(["ssh", "-V"]),
        "host_python": _first_line(["/usr/bin/python3", "-V"]),
        "bench_python": platform.python_version(),
        "sqlite": _sqlite_version(),
        "wrk": _first_line(["wrk", "--version"]),
    }


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def git_commit(repo: Path) -> str | None:
    out = _first_line(["git", "-C", str(repo), "rev-parse", "HEAD"])
    dirty = _first_line(["git", "-C", str(repo), "status", "--short", "--", "jit_hooks", "bench"])
    return f"{out}{'+dirty' if dirty else ''}" if out else None


def document(results: dict[str, dict], *, config: dict, repo: Path, started: float) -> dict:
    return {
        "schema": SCHEMA,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_seconds": round(time.time() - started, 1),
        "commit": git_commit(repo),
        "machine": machine(),
        "config": config,
        "benchmarks": results,
    }


def write_json(doc: dict, path: Path) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def markdown(doc: dict) -> str:
    """The summary table of a results document as Markdown (for README/docs)."""
    lines = ["| bench | figure | value | target | |", "|---|---|---:|---:|---|"]
    for name, res in doc["benchmarks"].items():
        if "error" in res:
            lines.append(f"| {name} | failed: {res['error']} | | | |")
            continue
        for row in res.get("rows", []):
            if "ratio" in row:
                fig = f"{row['measure']} ({row['statistic']})"
                val = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            else:
                fig = row["measure"].strip()
                val = f"{_fmt(row['value'])} {row['unit']}".strip()
            fig = fig.replace("|", "\\|")
            lines.append(
                f"| {name} | {fig} | {val} | {row['target'] or ''} | {_verdict(row['ok'])} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bench.report [FILE]: the table of a results file
    import sys

    src = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).parent / "results" / "latest.json"
    )
    doc = json.loads(src.read_text())
    m = doc["machine"]
    print(markdown(doc))
    print(
        f"\n{doc['started_at']}, commit {doc['commit']}: {m['nproc']} x {m['cpu']}, "
        f"{m['os']}, {m['openssh']}, {m['host_python']}, SQLite {m['sqlite']}"
    )
