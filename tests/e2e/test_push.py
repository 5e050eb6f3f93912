"""`jit-hooks agent` with the real sshd, PAM, ssh and service: sessions end through the stream.

The enforce timer never runs here: whatever ends a session is the agent (a real
process on the sandbox's config), told by the service's event stream, or on
its own at the known end time when the service is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from jit_hooks.testing.sshd import installed
from tests.e2e.test_enforce import (
    WAIT,
    open_session,
    remote_commands,
    session_closed,
    start_session,
    stop,
    wait_until,
)

AGENT = "jit-hooks-agent"


@pytest.fixture
def agent(world):
    """Start the agent on the sandbox's config (call it); stopped with SIGTERM after the test."""
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        cmd = (
            ["/usr/bin/jit-hooks"] if installed() else [sys.executable, "-m", "jit_hooks.cli.admin"]
        )
        proc = subprocess.Popen(
            [*cmd, "agent", "--config", str(world.box.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        world.box.sink.wait_for(r"action=stream state=open", ident=AGENT, timeout=WAIT)
        return proc

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out  # stops cleanly on SIGTERM


def test_revoke_ends_live_session_through_the_stream(world, agent):
    alice_rid = world.request("alice")
    world.approve(alice_rid)
    carol_rid = world.request("carol")
    world.approve(carol_rid)
    agent()
    alice = start_session(world, "alice", 1311)
    carol = start_session(world, "carol", 1312)
    try:
        alice_conn = open_session(world, alice_rid, alice)
        open_session(world, carol_rid, carol)
        wait_until(lambda: remote_commands(1311), "alice's remote command runs")

        world.revoke(alice_rid)
        alice.wait(timeout=WAIT)  # the ssh client ends: sshd closed the connection
        wait_until(lambda: not remote_commands(1311), "alice's remote command ended")
        world.box.sink.wait_for(
            rf"action=end login={world.login} connection={alice_conn} request={alice_rid} "
            r"why=revoked result=terminated source=stream",
            ident=AGENT,
        )
        wait_until(lambda: session_closed(world, alice_conn), "session closed in the service")
        assert carol.poll() is None and remote_commands(1312)  # still approved: untouched
    finally:
        stop(alice, 1311)
        stop(carol, 1312)


def stop_remote(seconds: int) -> None:
    for pid in remote_commands(seconds):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class PtyOutput:
    """Collects what an ``ssh -tt`` client prints (its pty's output), in a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
            self.text += chunk.decode("utf-8", "replace")


def test_warnings_reach_the_pty_and_expiry_holds_without_the_service(world, agent):
    # 150 s: inside the 10-minute mark from the start, and 90 s of margin before the
    # 1-minute mark for the session and the agent to start on a busy machine.
    rid = world.request("alice", duration=150)
    world.approve(rid)
    key = world.person("alice").key_path
    args = world.box.ssh_args(
        world.login, "-tt", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
    )  # fmt: skip
    ssh = subprocess.Popen(
        [*args, "sleep 1313"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    out = PtyOutput(ssh)
    try:
        conn = open_session(world, rid, ssh)
        agent()  # syncs at start: it knows the session and its end time

        # Inside the 10-minute mark at once, then the 1-minute mark: both on the pty.
        # (ssh's stderr is in `out` too: the login's banner names the same command,
        # so the agent's pty lines are counted by their own words.)
        extend = f"jit extend {rid} --for 30m"
        on_pty = "this session will be closed then"
        wait_until(lambda: on_pty in out.text, "first warning on the pty")
        assert f"request {rid}" in out.text and "ends at" in out.text and extend in out.text
        deadline = time.monotonic() + 150 + WAIT
        while out.text.count(on_pty) < 2:
            assert time.monotonic() < deadline, "no 1-minute warning on the pty"
            time.sleep(0.2)
        world.box.sink.wait_for(rf"action=warn login={world.login} connection={conn}", AGENT)

        # The service goes away: the agent still ends the session at its end time.
        world.svc.stop()
        ssh.wait(timeout=150 + WAIT)
        wait_until(lambda: not remote_commands(1313), "the remote command ended")
        world.box.sink.wait_for(
            rf"action=end login={world.login} connection={conn} request={rid} why=expired "
            r"result=terminated source=local",
            ident=AGENT,
        )
    finally:
        if ssh.poll() is None:
            ssh.kill()
        ssh.wait(timeout=30)
        stop_remote(1313)
        if world.svc.proc is None or world.svc.proc.poll() is not None:
            world.svc.start()
