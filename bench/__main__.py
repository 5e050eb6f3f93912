"""Run the benchmarks: `python -m bench [--only p2,p3] [--runs N] [--quick] [--out FILE]`.

Prints a table of ratios (candidate ÷ baseline, measured interleaved in one
run) and writes the results as JSON (default bench/results/latest.json).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import document, table, write_json
from bench.world import REPO

LATEST = REPO / "bench" / "results" / "latest.json"
# name -> module; run in this order (cheap first, the slow scale run last).
BENCHMARKS = {
    "P2": "bench.p2_startup",
    "P3": "bench.p3_throughput",
    "P3pg": "bench.p3_postgres",
    "P1": "bench.p1_login",
    "P4": "bench.p4_storm",
    "P3s": "bench.p3_scale",
    "P6": "bench.p6_revoke",
    "P7": "bench.p7_streams",
}


@dataclass
class Ctx:
    """What every benchmark gets: how hard to try and where to put its files."""

    runs: int
    quick: bool
    work: Path
    options: dict = field(default_factory=dict)

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)


def _clean(obj):  # noqa: ANN001, ANN202
    """JSON has no NaN/Infinity: report them as null."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated: " + ",".join(BENCHMARKS))
    p.add_argument(
        "--runs", type=int, default=None, help="interleaved rounds per case (default 40; 5 quick)"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness works")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"results file (default: {LATEST.relative_to(REPO)} for a full run of everything, "
        "else a file in /tmp, so a partial or quick run never replaces the committed results)",
    )
    p.add_argument("--duration", type=float, default=3.0, help="P3: seconds per load round")
    p.add_argument("--rounds", type=int, default=5, help="P3: interleaved load rounds")
    p.add_argument("--connections", type=int, default=16, help="P3: concurrent connections")
    p.add_argument(
        "--workers", type=int, default=1, help="P3: service worker processes (serve --workers)"
    )
    p.add_argument("--storm", type=int, default=200, help="P4: concurrent ssh logins")
    p.add_argument("--scale", type=float, default=1.0, help="P3s: fraction of full data size")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [x.strip() for x in args.only.split(",") if x.strip()] or list(BENCHMARKS)
    unknown = [w for w in wanted if w not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r} (known: {', '.join(BENCHMARKS)})", file=sys.stderr)
        return 2
    if args.runs is None:
        args.runs = 5 if args.quick else 40
    if args.runs < 1:
        print("--runs must be >= 1", file=sys.stderr)
        return 2
    if args.out is None:
        full = not args.quick and args.runs >= 30 and wanted == list(BENCHMARKS)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        args.out = LATEST if full else Path(tempfile.gettempdir()) / f"jit-bench-{stamp}.json"
    work = Path(tempfile.mkdtemp(prefix="jit-bench-"))
    work.chmod(0o755)  # sshd's unprivileged AKC user reads config files under it
    ctx = Ctx(runs=args.runs, quick=args.quick, work=work, options=vars(args))
    started = time.time()
    load_start = os.getloadavg()
    results: dict[str, dict] = {}
    try:
        for name in wanted:
            ctx.log(f"== {name}: {BENCHMARKS[name]}")
            t0 = time.time()
            try:
                mod = importlib.import_module(BENCHMARKS[name])
                results[name] = mod.run(ctx)
            except Exception as e:  # one broken benchmark must not hide the others
                traceback.print_exc()
                results[name] = {"error": f"{type(e).__name__}: {e}"}
            results[name]["seconds"] = round(time.time() - t0, 1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            ctx.log(f"work directory kept: {work}")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    # Other work on the machine shows here: interleaving evens it out between a
    # figure and its baseline, but it still widens p90/p99.
    config["loadavg_start"] = [round(x, 2) for x in load_start]
    config["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc = _clean(document(results, config=config, repo=REPO, started=started))
    json.dumps(doc, allow_nan=False)  # fail here rather than write invalid JSON
    write_json(doc, args.out)
    print(table(results))
    print(f"\nwritten: {args.out}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
