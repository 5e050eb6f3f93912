"""Smoke test of the benchmark harness: a tiny run writes well-formed JSON (no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.runner import interleave
from bench.stats import percentile, summarize

REPO = Path(__file__).resolve().parent.parent.parent


def test_percentiles_interpolate_between_ranks():
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 5.0
    assert percentile(xs, 90) == 4.6
    s = summarize(xs)
    assert (s["n"], s["median"], s["min"], s["max"]) == (5, 3.0, 1.0, 5.0)


def test_interleave_alternates_cases_and_rotates_who_goes_first():
    calls: list[str] = []
    cases = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    samples = interleave(cases, runs=3, warmup=1)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls == list("abc" + "abc" + "bca" + "cab")


def test_tiny_p2_run_writes_well_formed_json(tmp_path):
    out = tmp_path / "results.json"
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "P2", "--runs", "3", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["schema"] == 1
    assert doc["machine"]["nproc"] >= 1
    p2 = doc["benchmarks"]["P2"]
    assert "error" not in p2
    assert p2["rows"] and all(row["ratio"] > 0 for row in p2["rows"])
    for case in p2["cases"].values():
        assert case["n"] == 3
        assert 0 < case["min"] <= case["median"] <= case["p90"] <= case["p99"] <= case["max"]
    # The hook cases ran the real hook against a real service, through jit-hooksd and
    # in-process (checked in the bench itself); the import-time profiles name the thin
    # client (helper path) and the hook's own module (in-process path).
    assert p2["hook_runs"]["via_hooksd"] >= 3 and p2["hook_runs"]["in_process"] >= 3
    assert any(name == "jit_hooks.host.login.thin"
               for name, _ms in p2["importtime"]["top_level_cumulative_ms"])  # fmt: skip
    assert any(name == "jit_hooks.host.login.authorized_keys"
               for name, _ms in p2["importtime_in_process"]["top_level_cumulative_ms"])  # fmt: skip
    # The table went to stdout with the figure in it.
    assert "jit-authorized-keys / python3 -I -c pass" in r.stdout


def _quick(name: str, tmp_path) -> dict:  # noqa: ANN001
    out = tmp_path / "results.json"
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--only", name, "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text())["benchmarks"][name]


def test_quick_p6_ends_every_revoked_session(tmp_path):
    """P6 --quick: real sshd, agent and service; every revoked session's sshd went away."""
    if os.geteuid() != 0:
        pytest.skip("P6 starts a real sshd (root)")
    p6 = _quick("P6", tmp_path)
    assert "error" not in p6, p6
    assert p6["cases"]["revoke -> sshd gone"]["n"] == p6["sessions"] == 5
    assert p6["ssh_clients_ended"] == 5 and p6["timer"] == "not running"
    missed = [r for r in p6["rows"] if r["measure"].startswith("P6 sessions not ended")]
    assert missed[0]["value"] == 0


def test_quick_p7_reaches_every_stream(tmp_path):
    """P7 --quick: 50 host streams over TLS; the revoke reached all of them, figures present."""
    p7 = _quick("P7", tmp_path)
    assert "error" not in p7, p7
    assert p7["streams"] == 50
    assert p7["rss_kib"]["after"] > 0 and p7["idle_cpu_seconds"] >= 0
    assert p7["fan_out_ms"]["first"] <= p7["fan_out_ms"]["last"]
    assert {r["unit"] for r in p7["rows"]} == {"MiB", "KiB", "ms"}
