"""The agent asks before a local end, and its stream thread survives any bad answer (review M4, L1).

Real service over HTTP, real agent objects, real syslog sink. The sessions'
connection ids name a process that has exited, so "ending" one is observable
(the agent reports it closed to the service and logs ``action=close``) without
an sshd to signal; the kill path itself is covered in tests/e2e/test_enforce*.py.
"""

from __future__ import annotations

import random
import socket
import subprocess
import threading
import time

from jit_hooks.host.agent.backoff import Backoff
from jit_hooks.host.agent.runner import Agent
from jit_hooks.host.login.config import load_config
from jit_hooks.host.login.log import HookLog
from tests.server.conftest import build_world

IDENT = "jit-hooks-agent"
WAIT = 30  # seconds a bounded wait may take before the test fails (not a timing assert)

EXTENDABLE = """
[[policy]]
name = "web-prod"
hosts = ["web1"]
logins = ["deploy"]
requesters = { roles = ["requester"] }
approvers = { roles = ["approver"] }
approvals_required = 1
max_duration = 14400
max_extension = 3600
extension_approvals = 0
reason_required = true
"""


def _dead_connection() -> str:
    """A connection id whose process has exited: ending it is a report, not a signal."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{proc.pid}:1"


def _session(world, tmp_path) -> tuple[int, int, str]:
    """alice's approved request for deploy@web1 with a recorded session: (id, ends_at, conn)."""
    world.policy(EXTENDABLE)
    status, body = world.request("alice")
    assert status == 201, body
    rid = body["id"]
    status, body = world.call("bob", "POST", f"/api/v1/requests/{rid}/approve", {})
    assert status == 200, body
    conn = _dead_connection()
    query = {
        "host": "web1", "login": "deploy", "rhost": "127.0.0.1", "service": "sshd",
        "connection": conn, "fingerprint": world.keys["alice"].fingerprint, "open_session": True,
    }  # fmt: skip
    status, answer = world.call("web1", "POST", "/api/v1/hook/account", query)
    assert status == 200 and answer["decision"] == "allow", answer
    return rid, body["ends_at"], conn


def _closed(world, conn: str) -> bool:
    rows = world.svc.sql("SELECT closed_at FROM sessions WHERE connection = ?", (conn,))
    return bool(rows) and rows[0][0] is not None


def _agent(world, write_config, sink, offset: list[float]) -> Agent:
    config = load_config(write_config([world.svc.url], token=world.host_tokens["web1"]))
    return Agent(
        config, HookLog(IDENT, config.syslog_socket), clock=lambda: time.time() + offset[0]
    )


def test_extension_missed_by_the_stream_is_not_ended_at_the_old_end(
    service, tmp_path, write_config, sink
):
    world = build_world(service, tmp_path)
    rid, old_end, conn = _session(world, tmp_path)
    offset = [0.0]
    agent = _agent(world, write_config, sink, offset)
    agent.step()  # the sync of a stream connect: the agent learns the old end
    assert agent.live[conn].expires_at == old_end

    # The stream is down: alice extends, no event reaches the agent.
    status, body = world.call(
        "alice", "POST", f"/api/v1/requests/{rid}/extend",
        {"duration_seconds": 1800, "reason": "need more"},
    )  # fmt: skip
    assert status == 200 and body["ends_at"] > old_end, body
    offset[0] = old_end - time.time() + 1  # the agent's clock passes the old end
    agent.step()

    assert not _closed(world, conn)
    assert agent.live[conn].expires_at == body["ends_at"]
    sink.wait_for(rf"action=keep login=deploy connection={conn} request={rid} ", ident=IDENT)
    assert not [m for m in sink.messages(IDENT) if "action=close" in m]


def test_session_is_ended_locally_when_the_service_cannot_confirm(
    service, tmp_path, write_config, sink
):
    world = build_world(service, tmp_path)
    rid, old_end, conn = _session(world, tmp_path)
    offset = [0.0]
    agent = _agent(world, write_config, sink, offset)
    agent.step()
    service.stop()  # no answer at the end time: fail safe, end it
    try:
        offset[0] = old_end - time.time() + 1
        agent.step()
        sink.wait_for(
            rf"action=close login=deploy connection={conn} request={rid} why=expired "
            r"result=gone source=local",
            ident=IDENT,
        )
        assert conn not in agent.live
    finally:
        service.start()


def test_stream_thread_lives_through_a_non_http_answer(write_config, sink):
    """A URL that answers with an SSH banner (wrong port, broken balancer) raises
    http.client.BadStatusLine; the thread logs it and reconnects, again and again."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    answered = []

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                c.recv(65536)
                c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            answered.append(1)

    threading.Thread(target=serve, daemon=True).start()
    config = load_config(write_config([f"http://127.0.0.1:{port}"]))
    agent = Agent(config, HookLog(IDENT, config.syslog_socket), client=object())  # type: ignore[arg-type]
    agent.backoff = Backoff(base=0.05, cap=0.1, rng=random.Random(1))
    thread = threading.Thread(target=agent.hold_stream, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while len(answered) < 3:
            assert thread.is_alive(), "the stream thread died"
            assert time.monotonic() < deadline, answered
            time.sleep(0.05)
        sink.wait_for(r"action=stream state=failed error=BadStatusLine", ident=IDENT)
        assert thread.is_alive()
    finally:
        agent.shutdown()
        srv.close()
        thread.join(WAIT)
