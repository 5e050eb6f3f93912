"""jit_hooks.host.admin.enforce with real processes: it never signals a process it has not proven is
the session's sshd (same pid, same start time, an sshd binary), and acts only on a
positive, well-formed service answer (the real service here, or a fault server)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jit_hooks.errors import BadResponse, ServiceError
from jit_hooks.host import procfs
from jit_hooks.host.admin import enforce
from jit_hooks.host.login.config import load_config
from jit_hooks.host.login.log import HookLog
from jit_hooks.testing.seed import basic_world


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait(10)


def conn_of(pid: int) -> str:
    st = procfs.stat(pid)
    assert st is not None
    return f"{pid}:{st.start}"


def dead_conn() -> str:
    proc = subprocess.Popen(["true"])
    conn = conn_of(proc.pid)
    proc.wait(10)
    return conn


def test_check_connection_cases(child):
    conn = conn_of(child.pid)
    pid, start = conn.split(":")
    assert enforce.check_connection(conn) == "not_sshd"  # python, not sshd
    assert enforce.check_connection(f"{pid}:{int(start) + 1}") == "recycled"
    assert enforce.check_connection(dead_conn()) == "gone"
    with pytest.raises(ValueError):
        enforce.check_connection("1; rm -rf /")


def test_recycled_or_foreign_pid_is_never_signalled(child):
    pid, start = conn_of(child.pid).split(":")
    assert enforce.end_connection(f"{pid}:{int(start) + 7}", grace=0.2) == "recycled"
    assert enforce.end_connection(f"{pid}:{start}", grace=0.2) == "not_sshd"
    assert child.poll() is None  # still running after both


def test_descendants_lists_the_tree(child):
    import os

    kids = [pid for pid, _ in enforce.descendants(os.getpid())]
    assert child.pid in kids


def _session(svc, token: str, w, conn: str) -> None:
    alice = w.keys["alice"]
    status, answer = svc.call(
        "POST",
        "/api/v1/hook/session",
        token,
        {"event": "open", "login": "deploy", "connection": conn, "key_type": alice.key_type,
         "key": alice.blob},
    )  # fmt: skip
    assert status == 200 and answer["decision"] == "allow", answer


def test_run_once_against_the_service(service, tmp_path, write_config, sink, child):
    w = basic_world(service, tmp_path)
    token = w.host_tokens["web1"]
    rid = service.sqlite("SELECT id FROM requests WHERE state = 'approved'")[0][0]
    foreign = conn_of(child.pid)  # alive, but not an sshd
    pid, start = foreign.split(":")
    recycled = f"{pid}:{int(start) + 1}"  # the pid lives, its start time differs
    gone = dead_conn()
    for conn in (foreign, recycled, gone):
        _session(service, token, w, conn)
    config = load_config(write_config([service.url], token=token))
    log = HookLog(enforce.IDENT, config.syslog_socket)

    # Approval active: nothing to end.
    result = enforce.run_once(config, log)
    assert result == enforce.Result(ended=0, closed=0, refused=0, warned=0)

    status, _ = service.call("POST", f"/api/v1/requests/{rid}/revoke", w.tokens["bob"], {})
    assert status == 200
    result = enforce.run_once(config, log, grace=0.2)
    assert result == enforce.Result(ended=0, closed=2, refused=1, warned=0)
    assert child.poll() is None
    sink.wait_for(rf"action=refused login=deploy connection={foreign} .*why=revoked", enforce.IDENT)
    sink.wait_for(rf"action=close login=deploy connection={recycled} .*result=recycled")
    sink.wait_for(rf"action=close login=deploy connection={gone} .*result=gone")
    rows = dict(service.sqlite("SELECT connection, closed_at IS NOT NULL FROM sessions"))
    assert rows == {foreign: 0, recycled: 1, gone: 1}
    kinds = [
        r[0] for r in service.sqlite("SELECT data FROM audit_events WHERE kind = 'hook.enforce'")
    ]
    assert len(kinds) == 3 and all('"reason":"revoked"' in k for k in kinds)


def test_service_unreachable_ends_nothing(write_config, sink, child):
    config = load_config(write_config(["http://127.0.0.1:9"], total=1.0, connect=0.5))
    with pytest.raises(ServiceError):
        enforce.run_once(config, HookLog(enforce.IDENT, config.syslog_socket))
    sink.wait_for(r"action=none reason=service_unavailable", enforce.IDENT)
    assert child.poll() is None


@pytest.mark.parametrize(
    "answer",
    [
        {"end": [{"connection": "1:2; kill", "login": "deploy", "request_id": 1,
                  "reason": "revoked"}], "active": [], "time": 1764000000},
        {"end": [{"connection": "1:2", "login": "../x", "request_id": 1, "reason": "revoked"}],
         "active": [], "time": 1764000000},
        {"end": [{"connection": "1:2", "login": "deploy", "request_id": 1, "reason": "why"}],
         "active": [], "time": 1764000000},
        {"end": [{"connection": "1:2", "login": "deploy", "request_id": 1, "reason": "revoked",
                  "fingerprint": "SHA256:\x1b[2J"}], "active": [], "time": 1764000000},
        {"end": "all", "active": [], "time": 1764000000},
        {"end": [], "active": [{"connection": "1:2", "login": "deploy"}], "time": 1764000000},
    ],
)  # fmt: skip
def test_malformed_answer_ends_nothing(config, fault, sink, child, answer):
    # The first entry is this child: a bad entry anywhere rejects the whole answer.
    good = {"connection": conn_of(child.pid), "login": "deploy", "request_id": 1,
            "reason": "revoked"}  # fmt: skip
    if isinstance(answer["end"], list):
        answer = {**answer, "end": [good, *answer["end"]]}
    fault.answer = answer
    with pytest.raises(BadResponse):
        enforce.run_once(config, HookLog(enforce.IDENT, config.syslog_socket))
    assert child.poll() is None
    assert fault.requests[0].path == "/api/v1/hook/sessions"


def test_leftover_processes_get_sigterm_then_sigkill(child):
    stubborn = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True);"
         " time.sleep(120)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert stubborn.stdout.readline() == b"1\n"  # its SIGTERM handler is in place
        st, other = procfs.stat(stubborn.pid), procfs.stat(child.pid)
        wrong = other._replace(start=str(int(other.start) + 1))  # "recycled": not signalled
        hit = enforce._end_leftovers([(stubborn.pid, st), (child.pid, wrong)], grace=0.3)
        assert hit == 1
        assert stubborn.wait(10) == -9  # SIGTERM ignored, SIGKILL after the grace
        assert child.poll() is None
    finally:
        stubborn.kill()
        stubborn.wait(10)
