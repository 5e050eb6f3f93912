"""The host agent's parts: backoff schedule, SSE parsing, safe terminal writes, reconnect spread.

Terminal writes use a real pty (os.openpty); the reconnect spread uses agents
holding real streams to a real service that is restarted under them.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from jit_hooks.errors import BadResponse
from jit_hooks.host.admin import enforce
from jit_hooks.host.agent.backoff import Backoff
from jit_hooks.host.agent.runner import Agent
from jit_hooks.host.agent.sse import Event, parse
from jit_hooks.host.login.config import load_config
from jit_hooks.host.login.log import HookLog
from jit_hooks.testing.seed import basic_world

WAIT = 60  # seconds a bounded wait may take before the test fails (not a timing assert)


def test_backoff_is_capped_exponential_with_full_jitter():
    b = Backoff(base=5.0, cap=60.0, rng=random.Random(7))
    ceilings, delays = [], []
    for _ in range(8):
        ceilings.append(b.ceiling())
        delays.append(b.next_delay())
    assert ceilings == [5, 10, 20, 40, 60, 60, 60, 60]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    # Full jitter: the same seed gives the same schedule, and draws are spread
    # over the window (not pinned near its top like "equal jitter").
    again = Backoff(base=5.0, cap=60.0, rng=random.Random(7))
    assert [again.next_delay() for _ in range(8)] == delays
    b.reset()
    assert b.ceiling() == 5


def test_backoff_spreads_a_fleet_over_the_window():
    """1,000 hosts that lost the service at once: their first retries do not land together."""
    rng = random.Random(1)
    firsts = sorted(Backoff(base=5.0, cap=300.0, rng=rng).next_delay() for _ in range(1000))
    per_second = [sum(1 for d in firsts if s <= d < s + 1) for s in range(5)]
    assert all(150 <= n <= 250 for n in per_second), per_second  # ~200 each, not 1,000 in one


def test_sse_parse_events_comments_and_junk():
    lines = [
        b"retry: 5000\n",
        b"id: 3\n",
        b"event: sync\n",
        b'data: {"host":"web1"}\n',
        b"\n",
        b": keep-alive\n",
        b"\n",
        b"event: change\n",
        b'data: {"kind":"request.revoked",\n',
        b'data: "request_id":7}\n',
        b"\n",
    ]
    assert list(parse(lines)) == [
        Event("sync", {"host": "web1"}, 3),
        Event("change", {"kind": "request.revoked", "request_id": 7}, None),
    ]
    for junk in ([b"data: nope\n", b"\n"], [b"data: [1]\n", b"\n"], [b"data: " + b"x" * 9000]):
        with pytest.raises(BadResponse):
            list(parse(junk))


@pytest.fixture
def pty():
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield master, path
    os.close(master)
    os.close(slave)


def _read(master: int) -> bytes:
    os.set_blocking(master, False)
    try:
        return os.read(master, 4096)
    except BlockingIOError:
        return b""


def test_write_tty_writes_only_to_the_users_pty(pty, tmp_path):
    master, path = pty
    owner = os.stat(path).st_uid
    assert enforce.write_tty(path, owner, "jit: ends soon \x1b[2J\x07 run: jit extend 4")
    got = _read(master)
    assert b"jit: ends soon ?[2J? run: jit extend 4" in got
    assert b"\x1b" not in got  # no escape sequence reaches the terminal

    assert not enforce.write_tty(path, owner + 4242, "not yours")  # another user's pty
    link = tmp_path / "pts-link"
    link.symlink_to(path)
    assert not enforce.write_tty(str(link), owner, "via a symlink")
    plain = tmp_path / "file"
    plain.write_text("")
    os.chown(plain, owner, -1)
    assert not enforce.write_tty(str(plain), owner, "to a file")
    assert plain.read_text() == ""
    assert not enforce.write_tty("/dev/null", 0, "not a tty")
    assert _read(master) == b""


def test_warning_names_the_end_and_the_extend_command():
    text = enforce.warning_text(
        login="deploy", host="web1", request_id=42, expires_at=1_800_000_000, now=1_799_999_400
    )
    assert "deploy@web1" in text and "in about 10 min" in text
    assert "08:00 UTC" in text  # 1_800_000_000 is 2027-01-15 08:00 UTC
    assert "jit extend 42 --for 30m" in text


def test_service_restart_spreads_agent_reconnects(service, tmp_path, write_config, sink):
    """Agents holding real streams; the service restarts; their returns spread over seconds."""
    w = basic_world(service, tmp_path)
    config = load_config(write_config([service.url], token=w.host_tokens["web1"]))
    agents = []
    for i in range(12):
        a = Agent(config, HookLog("jit-hooks-agent", config.syslog_socket))
        a.backoff = Backoff(base=5.0, cap=60.0, rng=random.Random(i))
        agents.append(a)
    threads = [threading.Thread(target=a.hold_stream, daemon=True) for a in agents]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + WAIT
        while not all(a.connects == 1 for a in agents):
            assert time.monotonic() < deadline, [a.connects for a in agents]
            time.sleep(0.05)
        service.stop()
        service.start()
        back: dict[int, float] = {}
        while len(back) < len(agents):
            assert time.monotonic() < deadline + WAIT, [a.connects for a in agents]
            for i, a in enumerate(agents):
                if a.connects >= 2 and i not in back:
                    back[i] = time.monotonic()
            time.sleep(0.02)
        spread = max(back.values()) - min(back.values())
        seconds = {int(t - min(back.values())) for t in back.values()}
        assert spread > 1.0 and len(seconds) >= 3, sorted(back.values())
    finally:
        for a in agents:
            a.shutdown()
            if a._stream is not None:
                a._stream.close()


def test_enable_offers_session_ending(monkeypatch):
    """`enable --sessions/--no-sessions`: never asks off a terminal; a sandbox root runs nothing."""
    from types import SimpleNamespace

    from jit_hooks.cli import admin

    monkeypatch.setattr(admin.sys.stdin, "isatty", lambda: False)
    root = SimpleNamespace(root="/srv/sandbox")
    off = admin._session_ending(root, None)  # type: ignore[arg-type]
    assert off.startswith("sessions: not ended") and "jit-hooks-agent.service" in off
    assert admin._session_ending(root, False) == off  # type: ignore[arg-type]
    on = admin._session_ending(root, True)  # type: ignore[arg-type]
    assert on.startswith("sessions: not turned on under /srv/sandbox")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_agent_unit_verifies_and_is_hardened(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    name = "jit-hooks-agent.service"
    text = (repo / "packaging/host/lib/systemd/system" / name).read_text()
    assert "ExecStart=/usr/bin/jit-hooks agent\n" in text and "Restart=always" in text
    unit = tmp_path / name
    unit.write_text(text.replace("/usr/bin/jit-hooks", str(repo / ".venv/bin/jit-hooks")))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if str(tmp_path) in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    m = re.search(rf"Overall exposure level for {name}: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 3.5  # root that signals sshd; the rest locked down
    install = (repo / "debian/jit-hooks.install").read_text()
    assert f"packaging/host/lib/systemd/system/{name} lib/systemd/system/" in install
    rules = (repo / "debian/rules").read_text()
    assert re.search(rf"dh_installsystemd --no-enable --no-start .*{name}", rules)
