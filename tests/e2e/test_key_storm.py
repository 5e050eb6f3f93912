"""A stranger's key storm through a real sshd (issue 15 item 3): counted, not written row by row.

20 connections from a real ssh client, each offering the same 5 keys nobody
registered, for the sandbox's valid login. sshd runs the AKC once per offered
key; the service audits the first miss of each (host, login, fingerprint) in
its window and only counts the rest (audit_miss_rows), so the audit grows by 5
rows, not 100, and every offer is still accounted for.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from jit_hooks.testing.keys import make_key
from tests.e2e.conftest import WORLD_ENV

CONNECTIONS, KEYS = 20, 5
WINDOW = 60  # the service's default JIT_AUDIT_MISS_WINDOW


@pytest.fixture
def default_window_world(world):
    """The shared world's service with its default miss window (the other e2e tests run
    it with one-second windows, see WORLD_ENV), restored afterwards."""
    svc = world.svc

    def restart(window: str) -> None:
        svc.stop()
        svc.env["JIT_AUDIT_MISS_WINDOW"] = window
        svc.start()

    restart(str(WINDOW))
    try:
        yield world
    finally:
        restart(WORLD_ENV["JIT_AUDIT_MISS_WINDOW"])


def test_twenty_connections_of_five_stranger_keys(default_window_world, tmp_path):
    w = default_window_world
    keys = [make_key(tmp_path, f"stranger{i}") for i in range(KEYS)]
    fps = {k.fingerprint for k in keys}
    idents = [a for k in keys for a in ("-i", str(tmp_path / f"stranger{keys.index(k)}"))]
    for _ in range(CONNECTIONS):
        args = w.box.ssh_args(
            w.login, *idents, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
        )  # fmt: skip
        r = subprocess.run(
            [*args, "true"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        assert r.returncode == 255 and "Permission denied" in r.stderr, r.stderr

    rows = w.svc.sqlite(
        "SELECT kind, data FROM audit_events WHERE kind LIKE 'hook.authorized_keys%'"
        f" AND id > {w.audit_cursor}"
    )
    firsts = [json.loads(d) for k, d in rows if json.loads(d)["fingerprint"] in fps]
    assert all(e["decision"] == "deny" for e in firsts)
    pending = [
        (fp, ws, n)
        for fp, ws, n in w.svc.sqlite(
            "SELECT fingerprint, window_start, count FROM audit_miss_rows"
        )
        if fp in fps
    ]
    repeats = {fp: 0 for fp in fps}
    for e in firsts:
        repeats[e["fingerprint"]] += e.get("repeats", 1)
    for fp, _, n in pending:
        repeats[fp] += n - 1
    # Every offer is accounted for: sshd asked about each key on every connection.
    assert all(n >= CONNECTIONS for n in repeats.values()), repeats
    # ... and the audit holds a handful of rows for them, not one per offer.
    # ... and the audit holds at most two rows per key and window (the first miss,
    # then the count when the window closes), not one per offer.
    windows = {ws for _, ws, _ in pending} | {e["window_start"] for e in firsts if "repeats" in e}
    assert len(firsts) <= 2 * KEYS * max(1, len(windows)) < CONNECTIONS * KEYS, (firsts, pending)
    assert "audit chain OK" in w.svc.admin("audit", "verify")
